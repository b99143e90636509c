# equiv_lib.sh - sourced by the layout equivalence tests (tp_equivalence.sh,
# pp_equivalence.sh): a scratch directory with a small prepared corpus,
# `train NP NAME OPTIONS...` (runs $MPITRON train with $M plus OPTIONS into
# $W/NAME and keeps each step's loss in $W/NAME.loss; fails if the run
# reports that the tied embedding's pipeline copies drifted apart, which
# every checkpoint save checks, or if rank 0's banner shows another dp x
# tp x pp layout, or pp > 1 another schedule, than the options ask for), `resume_run` and
# `compare REF RUN` (same steps; every loss within relative TOL, default
# 1e-5; exits non-zero otherwise).  The caller sets M (the model and run
# keys) and STEPS before calling train/compare.
set -eu
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-equiv.XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

awk 'BEGIN { for (i = 0; i < 3000; i++)
             printf "line %d: the quick brown fox %d jumps over %d lazy dogs\n",
                    i, i * 7 % 13, i % 5 }' > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null

# "step loss" per logged step, "step loss val_loss" where validation ran
losses() {
    grep '"loss"' "$1/metrics.jsonl" | sed \
        -e 's/.*"step":\([0-9]*\),"loss":\([^,]*\),.*"val_loss":\([^,}]*\).*/\1 \2 \3/' \
        -e 's/.*"step":\([0-9]*\),"loss":\([^,]*\),.*/\1 \2/'
}
# The value of --KEY=V in the arguments (the last one wins), else $2
opt_val() { # key default args...
    _ok=$1 _ov=$2; shift 2
    for _oa in "$@"; do
        case $_oa in --$_ok=*) _ov=${_oa#--$_ok=} ;; esac
    done
    echo "$_ov"
}
# The layout the options ask for is the one that ran (a silent fallback
# to dp = world would log the serial losses too): rank 0's banner, and
# with pp > 1 the schedule.  check_layout NP LOG OPTIONS...
check_layout() {
    _cn=$1 _cl=$2; shift 2
    _ct=$(opt_val tp 1 $M "$@") _cp=$(opt_val pp 1 $M "$@")
    _cd=$((_cn / (_ct * _cp)))
    grep -q "^rank 0  host .*  dp 0/$_cd  tp 0/$_ct  pp 0/$_cp\$" "$_cl" \
        || { cat "$_cl"; fail "$_cl: not run as dp $_cd tp $_ct pp $_cp"; }
    if [ "$_cp" -gt 1 ]; then
        _cs=$(opt_val pp_schedule 1f1b $M "$@")
        grep -q "^pipeline: $_cp stages, $_cs," "$_cl" \
            || { cat "$_cl"; fail "$_cl: not the $_cs schedule"; }
    fi
}
train() { # np name options...
    np=$1 run=$2; shift 2
    $MPIRUN -np "$np" --oversubscribe "$MPITRON" train $M "$@" \
        --run_dir="$W/$run" > "$W/$run.log" 2>&1 \
        || { cat "$W/$run.log"; fail "$run"; }
    ! grep -q "drifted apart" "$W/$run.log" \
        || { cat "$W/$run.log"; fail "$run: tied embedding copies differ"; }
    check_layout "$np" "$W/$run.log" "$@"
    losses "$W/$run" > "$W/$run.loss"
}
# Stop a run at step STOP under one layout, then train the rest under
# another (train appends to the same run dir, metrics included):
# resume_run NAME STOP NP1 "OPTS1" NP2 "OPTS2"
resume_run() {
    run=$1 stop=$2
    $MPIRUN -np "$3" --oversubscribe "$MPITRON" train $M $4 \
        --stop_at_step="$stop" --run_dir="$W/$run" > "$W/$run.1.log" 2>&1 \
        || { cat "$W/$run.1.log"; fail "$run part 1"; }
    check_layout "$3" "$W/$run.1.log" $4
    train "$5" "$run" $6
    grep -q "resumed from .*step_0*$stop.h5 at step $stop" "$W/$run.log" \
        || { cat "$W/$run.log"; fail "$run did not resume at step $stop"; }
}
compare() { # ref run: same steps, every loss (and val_loss) within TOL
    awk -v name="$2" -v steps="$STEPS" -v tol="${TOL:-1e-5}" '
        function rel(a, b) { d = a - b; if (d < 0) d = -d;
                             return d / (a < 0 ? -a : a) }
        NR == FNR { ref[FNR] = $0; next }
        { n++; split(ref[FNR], a, " ");
          if (a[1] != $1 || (a[3] != "") != ($3 != "")) bad = 1;
          r = rel(a[2], $2); if (r > worst) worst = r;
          if ($3 != "") { r = rel(a[3], $3); if (r > worst) worst = r } }
        END { printf "%-22s %d steps, max relative difference %.2e\n",
                     name, n, worst;
              exit !(n == steps && !bad && worst <= tol) }' \
        "$W/$1.loss" "$W/$2.loss"
}
