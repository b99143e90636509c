#!/bin/sh
# The sanitizer pass of the test command (jobs/test.sh): mpitron built once
# more, with AddressSanitizer and UndefinedBehaviorSanitizer
# (./configure --enable-sanitizers), in a separate build directory - a
# VPATH build of a clean copy of the sources (`make distdir`: the top
# directory is itself configured and built in place, which autotools
# does not let a VPATH build share) - then its unit tests and its MPI
# tests at np <= 2.  Open MPI's, hwloc's and HDF5's own leaks are
# suppressed (lsan.supp; nodlclose.so keeps Open MPI's components mapped
# so that they can be named); any report about mpitron's code fails.
#   SAN_DIR=build-san (default)   CFLAGS: -g -O1 (fast to build and run)
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
B=$top/${SAN_DIR:-build-san}
rm -rf "$B"
mkdir -p "$B"
echo "== sanitizer build in $B"
make distdir distdir="$B/src" > "$B/distdir.log" 2>&1 ||
    { tail -n 20 "$B/distdir.log"; exit 1; }
mkdir "$B/obj"
cd "$B/obj"
../src/configure --enable-sanitizers ${CI:+--enable-werror} \
    CFLAGS="${SAN_CFLAGS_OPT:--g -O1}" > configure.log 2>&1 ||
    { tail -n 30 configure.log; exit 1; }
status=0
make -j"$(nproc)" > build.log 2>&1 || { tail -n 40 build.log; exit 1; }
UNIT=$(make -s -f Makefile -f - print-unit <<'MK'
print-unit: ; @echo $(UNIT_TESTS) $(MPI_TESTS)
MK
)
make -j"$(nproc)" check TESTS= > build-tests.log 2>&1 ||
    { tail -n 40 build-tests.log; exit 1; }
cc -shared -fPIC -O2 -o nodlclose.so ../src/tests/sanitizer/nodlclose.c
# fast_unwind_on_malloc=0: a leak's stack unwound through the frame
# pointers stops in libc (built without them) at a garbage address, so
# lsan.supp cannot name the library that leaked (seen in a bare Debian 12:
# 37 bytes from Open MPI's start-up, "<unknown module>"); the DWARF
# unwinder gives the real stack
export ASAN_OPTIONS=detect_leaks=1:verify_asan_link_order=0:detect_stack_use_after_return=0:fast_unwind_on_malloc=0
export LSAN_OPTIONS=suppressions=$top/tests/sanitizer/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LD_PRELOAD=$B/obj/nodlclose.so
export MPITRON_MAX_NP=2
make -j"$(nproc)" check TESTS="$UNIT" > check.log 2>&1 || status=$?
unset LD_PRELOAD
grep -E '^(PASS|FAIL|ERROR|SKIP):|^# [A-Z]' check.log || true
# a sanitizer's report anywhere in a log is a failure, whatever the exit
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' tests/*.log \
        2>/dev/null; then
    echo "sanitizer findings in the logs above"
    status=1
fi
if [ $status -ne 0 ]; then
    for log in tests/*.log; do
        grep -q 'FAIL\|ERROR\|Sanitizer\|runtime error' "$log" || continue
        echo "---- $log"; tail -n 60 "$log"
    done
fi
exit $status
