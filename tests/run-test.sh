#!/bin/sh
# LOG_COMPILER of `make check`: runs one test.
#  - tests/test_grid, tests/test_ckpt, tests/test_allreduce, tests/test_tp,
#    ... (MPI CMocka programs): under mpirun
#    at each rank count listed below (up to MPITRON_MAX_NP), --oversubscribe
#    on 2 cores;
#  - *.sh: with sh (they call mpirun themselves);
#  - other programs: directly.
# Open MPI refuses root unless told; tests set that, the code does not.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
MPIRUN=${MPIRUN:-mpirun}
# Each test gets its own Open MPI session directory.  Under make -j2 two
# mpiruns starting at the same moment raced to create the shared
# /tmp/ompi.HOST.UID ("A call to mkdir was unable to create the desired
# directory ... File exists", orte_init failed: seen once, 4 December).
# (orte_tmpdir_base is Open MPI 4's ORTE parameter: Debian 12 ships
# 4.1; Open MPI 5's PRRTE would ignore it.)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-test.XXXXXX") || exit 99
export OMPI_MCA_orte_tmpdir_base="$tmp"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
finish() { # exit with status $1 (the EXIT trap removes the directory)
    exit "$1"
}
prog=$1
shift
case $(basename "$prog") in
    *.sh) sh "$prog" "$@"; finish $? ;;
    test_grid) nps="1 2 4 6 8" ;;
    test_ckpt) nps="1 2 3" ;;
    test_allreduce) nps="1 2 3 4 5 6 7 8" ;;
    test_codec) nps="1 2 3 4" ;;
    test_model) nps="1" ;;
    test_bucket) nps="1 2 3 4" ;;
    test_tp) nps="1 2 3 4" ;;
    test_pp) nps="1 2 3 4" ;;
    test_zero) nps="1 2 3 4" ;;
    *) "$prog" "$@"; finish $? ;;
esac
# MPITRON_MAX_NP=N: only the rank counts up to N (the sanitizer pass of
# jobs/test.sh runs the MPI tests at np <= 2)
for np in $nps; do
    [ "$np" -le "${MPITRON_MAX_NP:-64}" ] || continue
    echo "== mpirun -np $np $prog"
    $MPIRUN -np "$np" --oversubscribe --bind-to none "$prog" "$@" || finish 1
done
finish 0
