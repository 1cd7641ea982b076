#!/bin/sh
# Installs the Debian packages that tandem's build, tests and benchmarks
# need, skipping those already present. Safe to run again.
set -eu
PKGS="build-essential pkg-config clang libclang-rt-14-dev clang-format
libhwloc-dev hwloc libevent-dev libjansson-dev libopenblas-dev libtomlplusplus-dev
libcmocka-dev libglpk-dev liblapacke-dev libstarpu-dev ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libclblast-dev clinfo"
PKGS="$PKGS libsystemd-dev"  # sd_notify: tandemd.service is Type=notify with a watchdog
PKGS="$PKGS systemd"  # systemd-analyze verify checks the unit files (tests/integration/install.sh)
PKGS="$PKGS groff-base man-db"  # the man pages are checked with groff -ww (tests/integration/install.sh)
PKGS="$PKGS python3-numpy python3-pytest"  # the Python binding (python/) and its pytest suite
PKGS="$PKGS prometheus"  # promtool: tests/integration/test_metrics checks the /metrics exposition
PKGS="$PKGS tmux"  # tests/integration/test_top runs tandemctl top in a tmux pane
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "deps: all present"
	exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
