#!/bin/sh
# Install missing packages, then configure and build in place (once).
set -e
cd "$(dirname "$0")/.."
sh jobs/deps.sh
[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure ${CI:+--enable-werror}
make -j"$(nproc)"
