#!/bin/sh
# The memory table of the README: per-rank bytes of every role, computed,
# and the measured peak RSS, for ZeRO stages 0-3 x dp 1, 2, 4 x the
# recomputation modes, on the GPT-2-small body (12 x 768, 12 heads,
# seq_len 256, byte vocabulary), two sequences per rank in one
# micro-batch, `mpitron bench step` with one warm-up and one timed step
# (memory does not depend on timing; the steps touch every buffer).
# Prints one markdown row per run: dp, zero, recompute, then MiB of
# parameters, gradients, optimizer state, saved activations, scratch,
# communication buffers, their total, and rank 0's peak RSS.
# Usage: jobs/memory_table.sh [DP_LIST] [ZERO_LIST] [RECOMPUTE_LIST]
set -eu
MPITRON=${MPITRON:-./mpitron}
LOCK=${LOCK:-/tmp/mpitron-cpu.lock}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
G="--n_layer=12 --n_embd=768 --n_head=12 --seq_len=256"
field() { # json key: its first value (rank 0's; memory_per_rank follows)
    echo "$1" | grep -o "\"$2\":[^,}]*" | head -n 1 | cut -d: -f2
}
echo "| dp | zero | recompute | params | grads | optimizer | activations | scratch | comm | total | peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for dp in ${1:-1 2 4}; do
    for z in ${2:-0 1 2 3}; do
        for r in ${3:-none selective full}; do
            out=$(flock -s "$LOCK" mpirun -np "$dp" --oversubscribe \
                  "$MPITRON" bench step $G --dp="$dp" --micro_batch=2 \
                  --batch_size=$((2 * dp)) --zero="$z" --recompute="$r" \
                  --bench_steps=1 --bench_warmup=1 2>&1 | tail -n 1)
            row="| $dp | $z | $r"
            for k in params_mb grads_mb optimizer_mb activations_mb \
                     scratch_mb comm_mb computed_mb rss_peak_mb; do
                row="$row | $(printf '%.0f' "$(field "$out" $k)")"
            done
            echo "$row |"
        done
    done
done
