#!/usr/bin/env bash
# Set up everything the tests need on a Debian machine, then run the whole suite.
# Debian 12 (QEMU 7.2, Python 3.11, libvirt 9) and Debian 13 (QEMU 10.0, Python 3.13, libvirt 11) alike:
# the package names below are the same on both; where a tool moved, both places are looked at.
#   ./tests/run.sh            all tests (real QEMU, the tiny guest, mosquitto, HTTP, a browser)
#   ./tests/run.sh -k mqtt    extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests talk to (installed only when missing).
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v openssl >/dev/null || need+=(openssl)
command -v xz >/dev/null || need+=(xz-utils)
command -v cpio >/dev/null || need+=(cpio)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx insmod || need+=(busybox-static)
command -v chromium >/dev/null || need+=(chromium)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv python3-pip)
# libvirt for the libvirt source tests (a private libvirtd is started by the tests), and its Python binding's build
[ -x /usr/sbin/libvirtd ] || need+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
dpkg -s libvirt-dev >/dev/null 2>&1 || need+=(libvirt-dev pkg-config gcc)
# ... which compiles against the headers of the Python that builds .venv (python3-dev: 3.11 on 12, 3.13 on 13)
"${PYTHON:-python3}" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || need+=(python3-dev)
command -v unshare >/dev/null || need+=(util-linux)
# monitoring: a real Prometheus scrapes the daemon (promtool checks the exposition and the example rules),
# and the alertmanager plugin posts to a real Alertmanager
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
# fleet tests: hosts as network namespaces, faults as nftables rules
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  # (sorted, without duplicates: prometheus is needed for two tools)
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# A virtualenv with reactor, its test tools and the example plugins.
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$py" -m venv .venv
fi
# the distribution was called `reactor` before it became `qemu-reactor` (that name on the package index is
# another project's): an old editable install of ours under the old name would shadow the new one
if .venv/bin/pip show reactor 2>/dev/null | grep -qx "Editable project location: $here"; then
  .venv/bin/pip uninstall -y -q reactor >/dev/null 2>&1 || true
fi
say "installing reactor (distribution qemu-reactor) and test dependencies into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,libvirt]' 2>&1 | grep -v '^WARNING: Location' || true
for p in plugins/*/; do
  [ -f "$p/pyproject.toml" ] && .venv/bin/pip install -q --disable-pip-version-check -e "$p" 2>&1 \
    | grep -v '^WARNING: Location' || true
done

say "building the tiny test guest (cached)"
./examples/guest/build-guest.sh >&2

# the suites that need a real libvirtd or browser fail instead of skipping when these are set
export REACTOR_REQUIRE_LIBVIRT=1
export REACTOR_REQUIRE_BROWSER=1

say "running the tests"
set +e
# each test has a 240 s limit (pytest-timeout, in pyproject.toml); the whole run has 45 minutes
timeout --signal=INT --kill-after=60 2700 .venv/bin/python -m pytest -q -rs "$@"
rc=$?
set -e
if [ $rc -eq 124 ]; then
  echo "the test run took more than 45 minutes and was stopped" >&2
  exit 1
fi
if [ $rc -eq 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit $rc
