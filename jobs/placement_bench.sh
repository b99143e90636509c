#!/bin/sh
# The three figures of README's "Placement and load balancing", each run
# of `mpitron bench step` under the exclusive benchmark lock (one run per
# hold), the settings of a figure interleaved round by round; the median
# of the rounds is reported.
#  1. threads: the issue's command, `mpirun -np 2 --bind-to none` with no
#     thread variables exported (bind=auto, threads=0), against hand-tuned
#     settings measured in the same session: OPENBLAS_NUM_THREADS=1
#     OMP_NUM_THREADS=1 with --bind-to none (bind=none: mpitron touches
#     nothing) and with --bind-to core (bind=launcher); and the issue's
#     slow case for reference (only OPENBLAS_NUM_THREADS=1, bind=none:
#     each rank's OpenMP pool sized to every core).
#  2. balance: 2 ranks, rank 1 at half speed (debug_slow_rank=1:2),
#     balance=on against the equal split (balance=off).
#  3. partition: pp=2 with GPT-2's 50257-token vocabulary, each stage's
#     measured busy time per step with pp_partition=auto and params.
# Prints markdown rows, and the load average before each run.
# Usage: jobs/placement_bench.sh [ROUNDS] [WHICH]
# (WHICH: any of threads balance partition; default all).  LOCKED=none
# runs without the lock (when a long job holds it shared: the figures are
# then taken on a busy machine, and say so).
set -eu
MPITRON=${MPITRON:-./mpitron}
LOCK=${LOCK:-/tmp/mpitron-cpu.lock}
ROUNDS=${1:-3}
WHICH=${2:-threads balance partition}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-pbench.XXXXXX")
trap 'rm -rf "$W"' EXIT
M1="--n_layer=4 --n_embd=256 --n_head=4 --seq_len=128 --batch_size=16
    --micro_batch=8"
M3="--pp=2 --vocab_size=50257 --n_layer=12 --n_embd=512 --n_head=8
    --seq_len=64 --batch_size=8 --micro_batch=1 --bench_steps=2"

field() { # json key: its first value (a number, or an array's contents)
    echo "$1" | grep -o "\"$2\":\(\[[^]]*\]\|[^,}]*\)" | head -n 1 |
        cut -d: -f2 | tr -d '[]'
}
median() { sort -g | awk '{ x[NR] = $1 } END {
    print NR % 2 ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2 }'; }
# run NAME ENV... -- MPIRUN-ARGS... : one bench step, its JSON line kept
run() {
    name=$1
    shift
    echo "$name: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    if [ "${LOCKED:-x}" = none ]; then set -- env "$@"
    else set -- flock -x "$LOCK" env "$@"; fi
    "$@" > "$W/out" 2>&1 \
        || { cat "$W/out"; echo "FAIL: $name" >&2; exit 1; }
    tail -n 1 "$W/out" >> "$W/$name.json"
}

case " $WHICH " in *" threads "*)
for r in $(seq 1 "$ROUNDS"); do
    run auto mpirun -np 2 --bind-to none "$MPITRON" bench step $M1
    run hand_none OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
        mpirun -np 2 --bind-to none "$MPITRON" bench step $M1 --bind=none
    run hand_core OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
        mpirun -np 2 --bind-to core "$MPITRON" bench step $M1 --bind=launcher
    run slow_case OPENBLAS_NUM_THREADS=1 \
        mpirun -np 2 --bind-to none "$MPITRON" bench step $M1 --bind=none
done
echo "| setting | tokens/s (median of $ROUNDS) | rounds | threads per rank (BLAS + OpenMP) |"
echo "|---|---|---|---|"
for s in auto hand_none hand_core slow_case; do
    tps=$(while read -r l; do field "$l" tokens_per_s; done < "$W/$s.json")
    m=$(echo "$tps" | median)
    eval "tps_$s=$m"
    l=$(head -n 1 "$W/$s.json")
    echo "| $s | $m | $(echo $tps) | $(field "$l" blas_threads) + $(field "$l" omp_threads) |"
done
best=$(printf '%s\n%s\n' "$tps_hand_none" "$tps_hand_core" | sort -g | tail -n 1)
echo "auto / best hand-tuned: $(awk -v a="$tps_auto" -v b="$best" 'BEGIN { printf "%.3f", a / b }')"
;; esac

case " $WHICH " in *" balance "*)
for r in $(seq 1 "$ROUNDS"); do
    for b in off on; do
        run bal_$b mpirun -np 2 "$MPITRON" bench step $M1 \
            --debug_slow_rank=1:2 --balance=$b
    done
done
echo "| debug_slow_rank=1:2 | tokens/s (median of $ROUNDS) | rounds | shares |"
echo "|---|---|---|---|"
for b in off on; do
    tps=$(while read -r l; do field "$l" tokens_per_s; done < "$W/bal_$b.json")
    m=$(echo "$tps" | median)
    eval "bal_$b=$m"
    echo "| balance=$b | $m | $(echo $tps) | $(field "$(head -n 1 "$W/bal_$b.json")" dp_shares) |"
done
echo "balance=on / off: $(awk -v a="$bal_on" -v b="$bal_off" 'BEGIN { printf "%.3f", a / b }')"
;; esac

case " $WHICH " in *" partition "*)
for r in $(seq 1 "$ROUNDS"); do
    for p in params auto; do
        run pp_$p mpirun -np 2 "$MPITRON" bench step $M3 --pp_partition=$p
    done
done
echo "| pp=2, vocab 50257 | blocks per stage | stage busy ms per step (each round) | slower / faster stage (median) | tokens/s (median) |"
echo "|---|---|---|---|---|"
for p in params auto; do
    busy="" ratios=""
    while read -r l; do
        b=$(field "$l" stage_busy_ms_mean)
        busy="$busy $(echo "$b" | awk -F, '{ printf "%.0f/%.0f", $1, $2 }')"
        ratios="$ratios $(echo "$b" | awk -F, '{ a = $1; c = $2;
            printf "%.3f", (a > c ? a / c : c / a) }')"
    done < "$W/pp_$p.json"
    tps=$(while read -r l; do field "$l" tokens_per_s; done < "$W/pp_$p.json")
    echo "| $p | $(field "$(head -n 1 "$W/pp_$p.json")" stage_blocks) |$busy | $(echo $ratios | tr ' ' '\n' | median) | $(echo "$tps" | median) |"
done
;; esac
