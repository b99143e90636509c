#!/bin/sh
# Install the Debian packages mpitron needs to build, test and run its
# main job, when any is missing.  Needs root (or sudo) and Debian's
# package archive.  Every program the build, the tests and the main job
# call comes from a package listed here or from an Essential one
# (coreutils, grep, sed, findutils, diffutils, mawk, mount): procps for
# pgrep/ps/kill in tests/ckpt_faults.sh, jq to parse metrics.jsonl in the
# tests (a JSON parser that is not ours); slurm-wlm and munge for
# `make check-slurm` (a one-node SLURM started by tests/slurm_check.sh);
# gnuplot-nox for the scaling plot.  ../shared/tools/fresh-machine.sh
# checks this in a bare Debian 12 chroot.
set -e
PKGS="build-essential autoconf automake libtool pkg-config
      libopenmpi-dev openmpi-bin libopenblas-dev libdnnl-dev
      libhdf5-openmpi-dev hdf5-tools libhwloc-dev libcmocka-dev
      fortunes fortunes-min procps jq
      slurm-wlm munge gnuplot-nox"
# `sh jobs/deps.sh fuzz`: also the libFuzzer toolchain of `make fuzz`
[ "${1:-}" = fuzz ] && PKGS="$PKGS clang-14 libfuzzer-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# wait for another apt/dpkg run (unattended upgrades, a parallel build)
# instead of failing on its lock
LOCK="-o DPkg::Lock::Timeout=600"
$SUDO apt-get $LOCK update -qq
$SUDO apt-get $LOCK install -y -qq --no-install-recommends $missing
