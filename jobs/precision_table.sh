#!/bin/sh
# The precision table of the README: `mpitron bench step` on the GPT-2-small
# body (12 x 768, 12 heads, seq_len 256, 4 sequences per rank in one
# micro-batch) and the small config (4 x 256, 4 heads, seq_len 128, 8
# sequences per rank), at one rank with one thread and at two ranks (dp=2,
# one thread each), in precision=fp32 (fp32_gemm=auto: oneDNN's fp32 where
# faster), fp32 with fp32_gemm=openblas (the fp32 of earlier versions) and
# bf16, run back to back in each round so that the ratios compare figures
# of the same minutes.  Every run holds the CPU lock exclusively, alone.
# Prints one line per run: config, ranks, precision, tokens/s, MFU against
# the precision's peak, MFU against the fp32 peak, and ms per step of
# matmul, attention, softmax, layernorm, gelu, cast, optimizer, exposed
# comm (rank 0's) and the imbalance (the slowest rank's compute minus each
# rank's, mean over the ranks: capacity a synchronous step idles).
# WAIT=SECONDS: wait at most that long for the exclusive lock, then run
# unlocked (the row says "unlocked"): shared holders that never pause can
# starve an exclusive request.
# Usage: jobs/precision_table.sh [ROUNDS] [CONFIGS] [RANKS]
set -eu
MPITRON=${MPITRON:-./mpitron}
LOCK=${LOCK:-/tmp/mpitron-cpu.lock}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
field() { # json key: its first value
    echo "$1" | grep -o "\"$2\":[^,}]*" | head -n 1 | cut -d: -f2
}
for round in $(seq 1 "${1:-1}"); do
for cfg in ${2:-gpt2 small}; do
    for np in ${3:-1 2}; do
        case $cfg in
            gpt2) G="--n_layer=12 --n_embd=768 --n_head=12 --seq_len=256
                     --micro_batch=4 --batch_size=$((4 * np)) --bench_steps=2" ;;
            *) G="--n_layer=4 --n_embd=256 --n_head=4 --seq_len=128
                  --micro_batch=8 --batch_size=$((8 * np)) --bench_steps=10" ;;
        esac
        for p in fp32 fp32:openblas bf16; do
            prec=${p%%:*}
            gemm=auto
            [ "$p" = "$prec" ] || gemm=${p#*:}
            run="mpirun -np $np --oversubscribe $MPITRON bench step $G
                 --threads=1 --precision=$prec --fp32_gemm=$gemm"
            lock=locked rc=0
            out=$(flock -x -w "${WAIT:-100000}" -E 75 "$LOCK" $run 2>&1) \
                || rc=$?
            if [ "$rc" = 75 ]; then
                lock=unlocked
                out=$($run 2>&1)
            fi
            out=$(echo "$out" | tail -n 1)
            row="round $round $cfg np=$np $p $lock"
            for k in tokens_per_s mfu mfu_fp32_peak peak_gflops \
                     peak_fp32_gflops ms_per_step ms_matmul ms_attention \
                     ms_softmax ms_layernorm ms_gelu ms_cast ms_optimizer \
                     ms_comm ms_imbalance; do
                row="$row $k=$(field "$out" $k)"
            done
            echo "$row"
        done
    done
done
done
