#!/bin/sh
# The test command: install packages, build, run `make check` (CMocka unit
# tests, mpirun integration tests), then `make check-slurm` (the job
# template on a one-node SLURM it starts and stops).  Prints the logs.
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
echo "---- make check-slurm"
make check-slurm || status=$?
exit $status
