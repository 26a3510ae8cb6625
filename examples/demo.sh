#!/bin/sh
# reactor, live: a real QEMU VM hits a disk write error, QEMU pauses it, a
# shipped rule (rules/10-resume-write-error.yaml) resumes it with the guarded
# `resume` action (settle, probe, cont, verify), the guest's write succeeds.  `./examples/demo.sh watchdog` shows the watchdog rule
# instead (internal snapshot, then resume); `all` runs both.
#
# On a fresh Debian/Ubuntu machine it installs what is missing (apt-get, via
# sudo when not root: qemu-system-x86, qemu-utils, python3-venv), creates
# .venv with `pip install -e .`, and builds the tiny guest (cached in
# ~/.cache/reactor-guest).  Warm, a scenario takes about 15 seconds.
# Everything it starts is stopped on exit; its files go to a temporary directory.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SCENARIOS=${1:-ioerror}
case $SCENARIOS in
    ioerror|watchdog) ;;
    all) SCENARIOS="ioerror watchdog" ;;
    *) echo "usage: $0 [ioerror|watchdog|all]" >&2; exit 2 ;;
esac

if [ -t 1 ]; then B=$(printf '\033[1m'); C=$(printf '\033[36m'); Y=$(printf '\033[33m'); N=$(printf '\033[0m')
else B=; C=; Y=; N=; fi
say() { printf '%s==>%s %s\n' "$B" "$N" "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- 1. what the demo needs ----------------------------------------------------------------
missing=
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
command -v qemu-img >/dev/null 2>&1 || missing="$missing qemu-utils"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
if [ -n "$missing" ]; then
    command -v apt-get >/dev/null 2>&1 || die "please install:$missing"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    say "installing$missing (apt-get${SUDO:+ via sudo})"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086  # a list of package names
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "reactor needs Python >= 3.11"

if [ ! -x .venv/bin/reactor ]; then
    say "creating .venv and installing reactor (pip install -e .)"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
REACTOR="$ROOT/.venv/bin/reactor"

say "building the tiny guest (cached after the first time)"
sh examples/guest/build-guest.sh >/dev/null
GUEST=${REACTOR_GUEST_DIR:-$HOME/.cache/reactor-guest}

# --- 2. a scratch directory and cleanup ----------------------------------------------------------
REACTOR_DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/reactor-demo.XXXXXX")
export REACTOR_DEMO_DIR
CONFIG="$ROOT/examples/demo/reactor.yaml"
PIDS=
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$REACTOR_DEMO_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for_line FILE TEXT SECONDS: until TEXT is in FILE
wait_for_line() {
    n=0
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        n=$((n + 1)); [ "$n" -le $(($3 * 10)) ] || return 1
        sleep 0.1
    done
}

# follow FILE PREFIX PID: print FILE's lines as they come, prefixed and shortened, while PID lives
follow() {
    tail -n +1 -F --pid="$3" "$1" 2>/dev/null \
        | sed -u -e 's/^[0-9-]* \([0-9:]*\),[0-9]* *\([A-Z]*\) *[A-Za-z0-9._-]*: /\1 \2 /' \
                 -e 's/ INFO / /; s/ \[vm=[^]]*\]$//; s/^\[ *[0-9.]*\] //' \
        | while IFS= read -r line; do printf '%s %s\n' "$2" "$line"; done &
}

run_scenario() {
    scenario=$1
    dir="$REACTOR_DEMO_DIR"
    rm -rf "$dir/state" "$dir"/*.log "$dir/demo.qmp"
    case $scenario in
        ioerror)
            truncate -s 16M "$dir/disk.raw"
            disk="-blockdev driver=file,filename=$dir/disk.raw,node-name=f0
                  -blockdev driver=blkdebug,image=f0,node-name=d0,inject-error.0.event=pwritev,inject-error.0.iotype=write,inject-error.0.errno=5,inject-error.0.once=on
                  -device virtio-blk-pci,drive=d0,werror=stop,rerror=stop"
            story="the guest writes 4 KiB to a disk whose first write fails (blkdebug); QEMU is told werror=stop"
            ;;
        watchdog)
            rm -f "$dir/disk.qcow2"
            qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M
            disk="-blockdev driver=file,filename=$dir/disk.qcow2,node-name=q0-file
                  -blockdev driver=qcow2,file=q0-file,node-name=q0
                  -device virtio-blk-pci,drive=q0 -device i6300esb -action watchdog=pause"
            story="the guest arms a watchdog and stops feeding it; QEMU is told watchdog=pause"
            ;;
    esac

    echo
    say "${B}scenario: $scenario${N} — $story"
    say "starting reactor with the shipped rules in rules/ (and examples/demo/rules/, which logs every event)"
    : >"$dir/reactor.log"
    "$REACTOR" run -c "$CONFIG" >>"$dir/reactor.log" 2>&1 &
    RPID=$!
    PIDS="$PIDS $RPID"
    follow "$dir/reactor.log" "${C}[reactor]${N}" "$RPID"

    say "booting the VM (TCG, no KVM needed); its QMP socket is $dir/demo.qmp"
    : >"$dir/serial.log"
    # shellcheck disable=SC2086  # $disk is a list of arguments
    qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -no-user-config -display none \
        -name demo -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.gz" \
        -append "console=ttyS0 quiet reactor.scenario=$scenario" $disk \
        -serial "file:$dir/serial.log" -qmp "unix:$dir/demo.qmp,server=on,wait=off" \
        2>"$dir/qemu.log" &
    QPID=$!
    PIDS="$PIDS $QPID"
    follow "$dir/serial.log" "${Y}[guest]  ${N}" "$QPID"

    if [ "$scenario" = ioerror ]; then
        wait_for_line "$dir/serial.log" REACTOR-WRITE-OK 60 || die "no REACTOR-WRITE-OK within 60 s (see $dir)"
        say "the guest's write went through; reactor verifies that the VM stays running (verify: 10s)"
        wait_for_line "$dir/reactor.log" "demo: resumed" 30 || die "the resume was not verified within 30 s"
    else
        wait_for_line "$dir/reactor.log" "got RESUME" 60 || die "the watchdog rule did not finish within 60 s"
    fi
    sleep 0.5
    echo
    say "what reactor's journal recorded (${B}reactor history -c examples/demo/reactor.yaml --rule ...${N}):"
    for rule in resume-after-write-error watchdog-snapshot-then-resume notify-watchdog; do
        "$REACTOR" history -c "$CONFIG" --rule "$rule" | grep -v '^no runs' | sed "s/^/    /"
    done
    if [ "$scenario" = watchdog ]; then
        say "snapshots in the guest's disk (qemu-img snapshot -l):"
        qemu-img snapshot -U -l "$dir/disk.qcow2" | sed "s/^/    /"
    fi
    kill "$RPID" 2>/dev/null || true
    wait "$RPID" 2>/dev/null || true
    kill "$QPID" 2>/dev/null || true
    wait "$QPID" 2>/dev/null || true
    sleep 0.3
}

START=$(date +%s)
for s in $SCENARIOS; do run_scenario "$s"; done
echo
say "done in $(($(date +%s) - START)) s. The rules are plain YAML in rules/; try ${B}.venv/bin/reactor check rules/${N}"
say "and ${B}.venv/bin/reactor replay tests/data/qemu-7.2-events.jsonl --rules rules/ --dry-run${N}."
