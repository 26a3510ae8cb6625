#!/bin/sh
# Build reactor's tiny test guest from Debian's packages.
#
#   examples/guest/build-guest.sh            # -> ${REACTOR_GUEST_DIR:-~/.cache/reactor-guest}
#
# Output (in the cache dir):
#   vmlinux        the stock Debian kernel, uncompressed ELF (QEMU boots it via PVH)
#   initramfs.gz   busybox-static + examples/guest/init + the virtio/watchdog/pvpanic modules
#   stamp          kernel package, kernel version and the hashes of the inputs
#
# Idempotent: when the stamp matches (same kernel package, same init, same
# script) it exits at once.  Needs dpkg-deb, xz and busybox-static; installs
# them with apt-get when missing (as root, or through sudo).
#
# Environment:
#   REACTOR_GUEST_DIR          output directory
#   REACTOR_GUEST_KERNEL_PKG   kernel package (default: linux-image-amd64's current dependency)
#   REACTOR_GUEST_FORCE=1      rebuild even when the stamp matches
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
INIT="$HERE/init"
OUT=${REACTOR_GUEST_DIR:-${HOME:-/root}/.cache/reactor-guest}
MODULES="virtio_pci virtio_blk i6300esb pvpanic-pci pvpanic-mmio"

t0=$(date +%s)
log() { echo "build-guest: [$(( $(date +%s) - t0 ))s] $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"
    fi
}

# --- fast path: nothing changed since the last build ----------------------------
# apt-cache is slow (~1 s without a pkgcache), so the warm check keys on the
# apt lists' newest mtime instead of resolving linux-image-amd64 again.
lists_mtime() {
    find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -printf '%T@\n' 2>/dev/null \
        | sort -n | tail -n1 | cut -d. -f1
}
WARM="lists=$(lists_mtime) pkg=${REACTOR_GUEST_KERNEL_PKG:-auto} init=$(sha256sum "$INIT" | cut -c1-16)"
WARM="$WARM script=$(sha256sum "$0" | cut -c1-16)"
fresh() {
    [ "${REACTOR_GUEST_FORCE:-0}" != 1 ] && [ -f "$OUT/stamp" ] && [ -s "$OUT/vmlinux" ] \
        && [ -s "$OUT/initramfs.gz" ] && grep -qxF "inputs: $WARM" "$OUT/stamp"
}
if fresh; then
    echo "$OUT"
    exit 0
fi
mkdir -p "$OUT"
# One builder at a time (parallel test sessions share the cache).
exec 9>"$OUT/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if fresh; then echo "$OUT"; exit 0; fi   # another builder finished while we waited

# --- tools --------------------------------------------------------------------
missing=""
command -v dpkg-deb >/dev/null 2>&1 || missing="$missing dpkg"
command -v xz >/dev/null 2>&1 || missing="$missing xz-utils"
command -v gzip >/dev/null 2>&1 || missing="$missing gzip"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script needs a Debian-like system"
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
    || missing="$missing busybox-static"
if [ -n "$missing" ]; then
    log "installing:$missing"
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2 \
        || { as_root apt-get update >&2 && \
             as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2; } \
        || die "could not install:$missing"
fi
BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
[ -x "$BUSYBOX" ] || die "busybox-static installed but no busybox binary found"

# --- which kernel ---------------------------------------------------------------
kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}
PKG=${REACTOR_GUEST_KERNEL_PKG:-$(kernel_pkg)}
if [ -z "$PKG" ]; then
    log "apt-get update (linux-image-amd64 unknown to apt-cache)"
    as_root apt-get update >&2 || die "apt-get update failed"
    PKG=$(kernel_pkg)
    [ -n "$PKG" ] || die "cannot resolve linux-image-amd64's dependency"
    WARM="lists=$(lists_mtime) ${WARM#lists=* }"
fi
if [ "${REACTOR_GUEST_FORCE:-0}" != 1 ] && [ -f "$OUT/stamp" ] && [ -s "$OUT/vmlinux" ] \
    && [ -s "$OUT/initramfs.gz" ] && grep -qxF "kernel-package: $PKG" "$OUT/stamp" \
    && grep -qF " init=$(sha256sum "$INIT" | cut -c1-16) script=$(sha256sum "$0" | cut -c1-16)" "$OUT/stamp"; then
    # Same kernel after an apt-get update: only refresh the stamp.
    sed -i "s|^inputs: .*|inputs: $WARM|" "$OUT/stamp"
    echo "$OUT"
    exit 0
fi

WORK=$(mktemp -d "$OUT/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# --- kernel package -----------------------------------------------------------
log "downloading $PKG"
if ! (cd "$WORK" && apt-get -o APT::Sandbox::User=root download "$PKG" >&2); then
    log "download failed; apt-get update and retry"
    as_root apt-get update >&2 || die "apt-get update failed"
    PKG=${REACTOR_GUEST_KERNEL_PKG:-$(kernel_pkg)}
    WARM="lists=$(lists_mtime) ${WARM#lists=* }"
    (cd "$WORK" && apt-get -o APT::Sandbox::User=root download "$PKG" >&2) || die "apt-get download $PKG failed"
fi
DEB=$(ls "$WORK"/*.deb)
log "extracting $(basename "$DEB")"
dpkg-deb -x "$DEB" "$WORK/root"
rm -f "$DEB"
VERSION=$(ls "$WORK/root/lib/modules")
if [ -z "$VERSION" ] || [ ! -f "$WORK/root/boot/vmlinuz-$VERSION" ]; then die "no kernel in $PKG"; fi

# --- vmlinux: the xz stream inside the bzImage (as the kernel's extract-vmlinux) --
log "extracting vmlinux $VERSION"
BZ="$WORK/root/boot/vmlinuz-$VERSION"
found=""
# shellcheck disable=SC2013  # one offset per word
for off in $(LC_ALL=C grep -obUaP '\xfd\x37\x7a\x58\x5a\x00' "$BZ" | cut -d: -f1); do
    tail -c "+$((off + 1))" "$BZ" | xz -dcq --single-stream >"$WORK/vmlinux" 2>/dev/null || true
    if [ "$(head -c 4 "$WORK/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then found=1; break; fi
done
[ -n "$found" ] || die "no xz-compressed ELF inside $BZ"

# --- modules and their dependencies ---------------------------------------------
log "depmod and module closure"
MDIR="$WORK/root/lib/modules/$VERSION"
"$BUSYBOX" depmod -b "$WORK/root" "$VERSION"
: >"$WORK/order"
add() { grep -qxF "$1" "$WORK/order" || echo "$1" >>"$WORK/order"; }
for m in $MODULES; do
    line=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$MDIR/modules.dep" | head -n1)
    [ -n "$line" ] || die "module $m not in $PKG"
    path=${line%%:*}
    # modules.dep lists the dependencies so that the last must load first.
    for d in $(echo "${line#*:}" | tr ' ' '\n' | sed '/^$/d' | tac); do add "$d"; done
    add "$path"
done

# --- initramfs ----------------------------------------------------------------
log "building initramfs"
R="$WORK/initramfs"
mkdir -p "$R/bin" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/lib/modules"
cp "$BUSYBOX" "$R/bin/busybox"
cp "$INIT" "$R/init"
chmod 755 "$R/init" "$R/bin/busybox"
while read -r p; do
    mkdir -p "$R/lib/modules/$(dirname "$p")"
    cp "$MDIR/$p" "$R/lib/modules/$p"
    case "$p" in
        *.xz) xz -d "$R/lib/modules/$p"; p=${p%.xz} ;;
        *.zst) die "zstd-compressed modules are not supported" ;;
    esac
    echo "$p"
done <"$WORK/order" >"$R/etc/modules.load"
(cd "$R" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) | gzip -9 >"$WORK/initramfs.gz"

# --- install atomically ---------------------------------------------------------
mv -f "$WORK/vmlinux" "$OUT/vmlinux"
mv -f "$WORK/initramfs.gz" "$OUT/initramfs.gz"
{
    echo "kernel-version: $VERSION"
    echo "kernel-package: $PKG"
    echo "modules: $(tr '\n' ' ' <"$R/etc/modules.load")"
    echo "inputs: $WARM"
} >"$OUT/stamp.tmp"
mv -f "$OUT/stamp.tmp" "$OUT/stamp"
log "done: $OUT (kernel $VERSION)"
echo "$OUT"
