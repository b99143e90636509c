#!/bin/sh
# The test command: install packages, build, run `make check` (CMocka unit
# tests, mpirun integration tests).  Prints the logs of failed tests.
set -e
cd "$(dirname "$0")/.."
sh jobs/build.sh
status=0
make -j"$(nproc)" check || status=$?
for log in tests/*.log; do
    case $log in */test-suite.log) continue ;; esac
    echo "---- $log"; tail -n 40 "$log"
done
[ -f test-suite.log ] && sed -n '1,12p' test-suite.log
exit $status
