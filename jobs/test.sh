#!/bin/sh
# The test command: install packages, build, run `make check` (CMocka unit
# tests, mpirun integration tests), the sanitizer pass
# (tests/sanitizer/run.sh), then `make check-slurm` (the job template on a
# one-node SLURM it starts and stops).  Prints the logs of failed tests.
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
# the sanitizer pass: built once more with ASan + UBSan (VPATH, build-san/),
# unit tests and MPI tests at np <= 2
sh tests/sanitizer/run.sh || status=1
echo "---- make check-slurm"
make check-slurm || status=1
exit $status
