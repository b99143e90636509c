#!/bin/bash
# scaling.sh - a strong- and weak-scaling study in one command: calibrate
# the performance model here, run a short `mpitron bench step` per point
# of a spec, and write scaling.csv, scaling.md and scaling.png with the
# measured and the predicted step of every point.
#
#   jobs/scaling.sh [--spec=FILE] [--out=DIR] [--steps=N] [--calib=FILE]
#                   [--quick] [CONFIG.ini] [--key=value ...]
#
# Inside a SLURM allocation (jobs/scaling.sbatch) the points run on the
# allocation's nodes with mpirun (ranks_per_node = ranks / nodes of the
# point); outside, with mpirun on this host (--oversubscribe when the
# ranks outnumber the cores: the model knows how many cores they share).
#
# The spec (default jobs/scaling.spec): one point per line, key=value:
#   mode=strong|weak ranks=N [nodes=N] [dp=N] [tp=N] [pp=N]
#   [micro_batch=N] [compress=SPEC] [allreduce=ALGO] [pp_schedule=S]
#   [threads=N] [zero=0|1|2|3]
# strong keeps CONFIG's batch_size; weak multiplies it by ranks / the
# ranks of the mode's first point.  speedup is tokens/s over the mode's
# first point; efficiency is speedup x (its ranks / ranks).
#
# --calib=FILE reuses a calibration (mpitron predict --calibrate) instead
# of measuring one first; --quick calibrates briefly (tests).
# Environment: MPITRON (the binary, default ./mpitron), MPIRUN_FLAGS
# (extra mpirun flags).
set -u
cd "$(dirname "$0")/.."
SPEC=jobs/scaling.spec
OUT=scaling
STEPS=3
CALIB=
QUICK=
cfg=()
for a in "$@"; do
    case $a in
        --spec=*) SPEC=${a#*=} ;;
        --out=*) OUT=${a#*=} ;;
        --steps=*) STEPS=${a#*=} ;;
        --calib=*) CALIB=${a#*=} ;;
        --quick) QUICK="--quick --budget=0.2" ;;
        --help | -h) sed -n '2,29p' "$0"; exit 0 ;;
        *) cfg+=("$a") ;;
    esac
done
MPITRON=${MPITRON:-./mpitron}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
[ -f "$SPEC" ] || { echo "scaling.sh: no spec $SPEC" >&2; exit 2; }
mkdir -p "$OUT" || exit 1
CSV=$OUT/scaling.csv
LOG=$OUT/scaling.log
: > "$LOG"
if [ -n "${SLURM_JOB_ID:-}" ]; then
    NODES=${SLURM_JOB_NUM_NODES:-1}
    where="SLURM job $SLURM_JOB_ID: $NODES node(s) ${SLURM_JOB_NODELIST:-}"
else
    NODES=1
    where="this host ($(nproc) cores), mpirun"
fi

# Other processes' CPU during a run, in cores: the busy time of all CPUs
# (/proc/stat) minus this script's children's (bash `times`), per second.
# A timing study needs an otherwise idle machine: a point that another
# process disturbed (more than 0.15 cores) is run again, up to ATTEMPTS
# times, and the least disturbed run is kept; its foreign_cpu is in the
# CSV, and the model predicts it with the cores that were left.
CLK=$(getconf CLK_TCK)
ATTEMPTS=${ATTEMPTS:-3}
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# (`times` must run in this shell, not in a $(...) subshell: a forked
# shell starts with no children's time)
kids() { tail -n 1 "$OUT/.times" | awk '{ split($1, a, "m")
         split($2, b, "m"); print a[1] * 60 + a[2] + b[1] * 60 + b[2] }'; }
now() { date +%s.%N; }
mark() { times > "$OUT/.times"; m_b=$(busy); m_k=$(kids); m_w=$(now); }
foreign() { # after `times > "$OUT/.times"` in this shell
    awk -v b0="$m_b" -v b1="$(busy)" -v k0="$m_k" -v k1="$(kids)" \
        -v w0="$m_w" -v w1="$(now)" -v hz="$CLK" 'BEGIN {
        f = ((b1 - b0) / hz - (k1 - k0)) / (w1 - w0)
        printf "%.2f", f < 0 ? 0 : f }'
}

# one value of key k from a spec line (default d)
get() { v=$(echo " $1 " | sed -n "s/.* $2=\([^ ]*\) .*/\1/p"); echo "${v:-$3}"; }
# one JSON number field of the last line of a file
jnum() { sed -n "\$s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" "$1"; }

points=()
while IFS= read -r line; do
    line=${line%%#*}
    [ -n "${line// /}" ] && points+=("$line")
done < "$SPEC"
n=${#points[@]}
[ "$n" -gt 0 ] || { echo "scaling.sh: $SPEC has no points" >&2; exit 2; }

# what the calibration must cover: every tp, ranks per node, micro-batch,
# thread count, all-reduce and codec of the spec
uniq() { tr ' ' '\n' | grep -v '^$' | sort -u | paste -sd, -; }
max_rpn=1 tps="" loads="" mbs="" ths="" kinds="ring rhd mpi shm"
for p in "${points[@]}"; do
    r=$(get "$p" ranks 1)
    nd=$(get "$p" nodes 1)
    rpn=$((r / nd))
    [ "$rpn" -gt "$max_rpn" ] && max_rpn=$rpn
    tps="$tps $(get "$p" tp 1)"
    loads="$loads $rpn"
    mbs="$mbs $(get "$p" micro_batch 1)"
    ths="$ths $(get "$p" threads 1)"
    c=$(get "$p" compress none)
    a=$(get "$p" allreduce auto)
    [ "$c" != none ] && kinds="$kinds $c"
    [ "$a" != auto ] && kinds="$kinds $a"
done
if [ -z "$CALIB" ]; then
    CALIB=$OUT/calib.txt
    np=$((max_rpn * NODES))
    echo "== calibrating on $where with $np rank(s) (log: $LOG)"
    mark
    # shellcheck disable=SC2086
    mpirun -np "$np" --oversubscribe --bind-to none ${MPIRUN_FLAGS:-} \
        "$MPITRON" predict --calibrate="$CALIB" "${cfg[@]}" \
        --tps="$(echo $tps | uniq)" --loads="$(echo $loads | uniq)" \
        --mbs="$(echo $mbs | uniq)" --threads_list="$(echo $ths | uniq)" \
        --kinds="$(echo $kinds | uniq)" --budget=1 $QUICK >> "$LOG" 2>&1 ||
        { echo "calibration failed:"; tail -n 20 "$LOG"; exit 1; }
    times > "$OUT/.times"
    f=$(foreign)
    echo "   other processes used $f core(s) meanwhile"
    awk -v f="$f" 'BEGIN { exit !(f > 0.15) }' &&
        echo "   warning: the calibration was disturbed; predictions will" \
             "be off by as much"
fi

echo "ranks,nodes,ranks_per_node,dp,tp,pp,micro_batch,global_batch,compress,\
allreduce,tokens_per_s,mfu,ms_step,ms_compute,ms_comm_exposed,bubble,\
speedup,efficiency,predicted_ms_step,model_error,mode,threads,pp_schedule,\
predicted_speedup,predicted_efficiency,foreign_cpu,zero" > "$CSV"
base_batch=$(printf '%s\n' "${cfg[@]}" | sed -n 's/^--batch_size=//p' |
             tail -n 1)
if [ -z "$base_batch" ]; then
    ini=$(printf '%s\n' "${cfg[@]}" | grep -v '^--' | head -n 1)
    [ -n "$ini" ] && base_batch=$(sed -n 's/^ *batch_size *= *\([0-9]*\).*/\1/p' \
                                  "$ini" | tail -n 1)
fi
base_batch=${base_batch:-8}
declare -A b_tps b_ranks b_pred
i=0
status=0
for p in "${points[@]}"; do
    i=$((i + 1))
    mode=$(get "$p" mode strong)
    r=$(get "$p" ranks 1)
    nd=$(get "$p" nodes 1)
    rpn=$((r / nd))
    tp=$(get "$p" tp 1)
    pp=$(get "$p" pp 1)
    dp=$(get "$p" dp $((r / (tp * pp))))
    mb=$(get "$p" micro_batch 1)
    comp=$(get "$p" compress none)
    ar=$(get "$p" allreduce auto)
    sch=$(get "$p" pp_schedule 1f1b)
    th=$(get "$p" threads 1)
    z=$(get "$p" zero 0)
    if [ -z "${SLURM_JOB_ID:-}" ] && [ "$nd" -gt 1 ]; then
        echo "[$i/$n] $p: nodes=$nd needs a SLURM allocation; skipped"
        status=1
        continue
    fi
    [ -z "${b_ranks[$mode]:-}" ] && b_ranks[$mode]=$r
    gb=$base_batch
    [ "$mode" = weak ] && gb=$((base_batch * r / b_ranks[$mode]))
    keys=(--dp="$dp" --tp="$tp" --pp="$pp" --micro_batch="$mb"
          --compress="$comp" --allreduce="$ar" --pp_schedule="$sch"
          --threads="$th" --batch_size="$gb" --zero="$z")
    if [ -n "${SLURM_JOB_ID:-}" ]; then
        launch=(mpirun -np "$r" --map-by "ppr:$rpn:node" --bind-to none)
    else
        launch=(mpirun -np "$r" --oversubscribe --bind-to none)
    fi
    out=$OUT/point_$i.log
    least=
    for try in $(seq 1 "$ATTEMPTS"); do
        mark
        # shellcheck disable=SC2086
        "${launch[@]}" ${MPIRUN_FLAGS:-} "$MPITRON" bench step "${cfg[@]}" \
            "${keys[@]}" --bench_steps="$STEPS" > "$out.$try" 2>&1
        times > "$OUT/.times"
        f=$(foreign)
        if [ -z "$least" ] || awk -v a="$f" -v b="$least" \
               'BEGIN { exit !(a < b) }'; then
            least=$f
            cp "$out.$try" "$out"
        fi
        awk -v f="$f" 'BEGIN { exit !(f > 0.15) }' || break
    done
    # the model gets the cores the other processes left to the point
    cores=$(sed -n 's/^cores //p' "$CALIB")
    avail=$(awk -v c="${cores:-1}" -v f="$least" \
            'BEGIN { a = c - f; printf "%.2f", a < 0.1 ? 0.1 : a }')
    "$MPITRON" predict --calib="$CALIB" "${cfg[@]}" "${keys[@]}" \
        --nodes="$nd" --ranks="$r" --cores="$avail" --json > "$out.pred" 2>&1
    # the median step, and throughput from it: robust to a slow step
    ms=$(jnum "$out" ms_per_step_median)
    mean=$(jnum "$out" ms_per_step)
    pred=$(jnum "$out.pred" predicted_ms_step)
    ptps=$(jnum "$out.pred" tokens_per_s)
    if [ -z "$ms" ] || [ -z "$pred" ]; then
        echo "[$i/$n] $mode ranks=$r $p: FAILED (see $out)"
        tail -n 3 "$out" "$out.pred"
        status=1
        continue
    fi
    tps_m=$(awk -v t="$(jnum "$out" tokens_per_s)" -v a="$mean" -v m="$ms" \
            'BEGIN { printf "%.2f", t * a / m }')
    mfu=$(awk -v u="$(jnum "$out" mfu)" -v a="$mean" -v m="$ms" \
          'BEGIN { printf "%.4f", u * a / m }')
    [ -z "${b_tps[$mode]:-}" ] && b_tps[$mode]=$tps_m b_pred[$mode]=$ptps
    row=$(awk -v t="$tps_m" -v bt="${b_tps[$mode]}" -v br="${b_ranks[$mode]}" \
        -v r="$r" -v ms="$ms" -v pr="$pred" -v pt="$ptps" \
        -v bp="${b_pred[$mode]}" 'BEGIN {
            s = t / bt; ps = pt / bp
            printf "%.4f,%.4f,%.3f,%.4f,%.4f,%.4f", s, s * br / r, pr,
                (pr - ms) / ms, ps, ps * br / r }')
    IFS=, read -r speedup eff pred err psp peff <<< "$row"
    echo "$r,$nd,$rpn,$dp,$tp,$pp,$mb,$gb,$comp,$ar,$tps_m,\
$mfu,$ms,$(jnum "$out" ms_compute),\
$(jnum "$out" ms_comm_exposed),$(jnum "$out" bubble),$speedup,$eff,$pred,\
$err,$mode,$(jnum "$out" threads),$sch,$psp,$peff,$least,$z" >> "$CSV"
    awk -v i="$i" -v n="$n" -v m="$mode" -v r="$r" -v nd="$nd" -v dp="$dp" \
        -v tp="$tp" -v pp="$pp" -v mb="$mb" -v c="$comp" -v a="$ar" \
        -v ms="$ms" -v t="$tps_m" -v pr="$pred" -v e="$err" -v s="$speedup" \
        -v f="$least" \
        'BEGIN { printf "[%d/%d] %s ranks=%d (%d node) dp=%d tp=%d pp=%d " \
            "mb=%d %s/%s: %.1f ms/step, %.0f tokens/s, speedup %.2f | " \
            "predicted %.1f ms (%+.1f%%)%s\n", i, n, m, r, nd, dp, tp, pp,
            mb, c, a, ms, t, s, pr, 100 * e,
            (f > 0.15 ? sprintf(" [other processes: %.2f cores]", f) : "") }'
done

# predicted next to measured, and the mean absolute error
"$MPITRON" predict --calib="$CALIB" "${cfg[@]}" --measured="$CSV" \
    > "$OUT/model.md" 2>&1 || status=1
mae=$(sed -n 's/^mean absolute error: //p' "$OUT/model.md")
{
    echo "# Scaling study"
    echo
    echo "$where; spec $SPEC; $STEPS timed steps per point;" \
         "model: ${cfg[*]:-defaults}; calibration: $CALIB."
    echo
    echo "| mode | ranks | nodes | dp | tp | pp | micro_batch | global_batch" \
         "| compress | allreduce | zero | tokens/s | MFU | ms/step | compute" \
         "| comm exposed | bubble | speedup | efficiency | predicted ms" \
         "| error |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$CSV" | awk -F, '{ printf "| %s | %s | %s | %s | %s | %s | " \
        "%s | %s | %s | %s | %s | %.0f | %.3f | %.1f | %.1f | %.1f | %.3f | " \
        "%.2f | %.2f | %.1f | %+.1f%% |\n", $21, $1, $2, $4, $5, $6, $7, \
        $8, $9, $10, $27, $11, $12, $13, $14, $15, $16, $17, $18, $19, 100 * $20 }'
    echo
    echo "Mean absolute error of the model: ${mae:-n/a}."
} > "$OUT/scaling.md"

gnuplot << EOF >> "$LOG" 2>&1 || status=1
set terminal pngcairo size 1200,500 font ",10"
set output "$OUT/scaling.png"
set datafile separator ","
set key top left autotitle columnhead
set multiplot layout 1,2 title "mpitron scaling: measured (filled) and predicted (open)"
set xlabel "ranks"
set logscale xy 2
set xrange [0.8:*]
set ylabel "speedup (tokens/s over the first point)"
sel(m, c) = strcol("mode") eq m ? column(c) : NaN
plot x title "ideal" dt 2 lc "gray", \
  "$CSV" using "ranks":(sel("strong","speedup")) title "strong" pt 7 lc 1, \
  "" using "ranks":(sel("strong","predicted_speedup")) title "strong, model" pt 6 ps 1.6 lc 1, \
  "" using "ranks":(sel("weak","speedup")) title "weak" pt 5 lc 2, \
  "" using "ranks":(sel("weak","predicted_speedup")) title "weak, model" pt 4 ps 1.6 lc 2
set ylabel "efficiency (speedup / ranks)"
unset logscale y
set yrange [0:1.2]
plot 1 title "ideal" dt 2 lc "gray", \
  "$CSV" using "ranks":(sel("strong","efficiency")) title "strong" pt 7 lc 1, \
  "" using "ranks":(sel("strong","predicted_efficiency")) title "strong, model" pt 6 ps 1.6 lc 1, \
  "" using "ranks":(sel("weak","efficiency")) title "weak" pt 5 lc 2, \
  "" using "ranks":(sel("weak","predicted_efficiency")) title "weak, model" pt 4 ps 1.6 lc 2
unset multiplot
EOF
echo "== wrote $CSV, $OUT/scaling.md, $OUT/scaling.png; model error: ${mae:-n/a}"
exit $status
