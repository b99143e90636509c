#!/bin/sh
# Measures the training techniques of the README's "Techniques" table on
# fortunes: each row trains the jobs/fortunes.ini model for STEPS steps
# (warm-up STEPS/10) with the row's keys and reports the final validation
# loss (and bits per byte) against the baseline's, and the tokens/s of
# `mpitron bench step` with the same keys against the baseline's, both
# measured in this session.  Validation losses do not depend on the load
# (fixed seed, one BLAS thread): the runs go two at a time without a
# lock; every bench step holds the exclusive CPU lock.  Then the
# compression block: 1-bit Adam against dense and AdamW with compressed
# gradients at dp = 2 on a small model for 400 steps.
#
#   ./jobs/techniques.sh [ROW ...]        default: every row, then onebit
#   ./jobs/techniques.sh onebit           the compression block alone
#   ./jobs/techniques.sh onebit_speed     its tokens/s against dense
#   ./jobs/techniques.sh train_speed ROW  whole-run train tokens/s
#   ./jobs/techniques.sh attn_sweep       tokens/s of full, sliding-window,
#                                         linear and sparse attention,
#                                         seq_len 256..4096, and a plot
#   SWEEP_T="2048 4096" SWEEP_APPEND=1: some lengths only, added to the
#                                         plot's data (one lock per length)
#   STEPS=300 OUT=runs/techniques ./jobs/techniques.sh
#   SKIP_TRAIN=1 ...: only the tokens/s, over the runs already in OUT
#   BENCH_REPS=4 BENCH_STEPS=8: baseline/row alternations per row, steps
#                                         timed per bench step
set -e
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
STEPS=${STEPS:-300}
OUT=${OUT:-runs/techniques}
LOCK=${LOCK:-/tmp/mpitron-cpu.lock}
TURN=${TURN:-/tmp/mpitron-bench.turn}
MPITRON=${MPITRON:-./mpitron}
BENCH_REPS=${BENCH_REPS:-4} BENCH_STEPS=${BENCH_STEPS:-8}
mkdir -p "$OUT"

files=$(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' \
        ! -name '*.u8' | sort)
[ -f data/fortunes/train_000.bin ] ||
    $MPITRON prepare --out data/fortunes $files > /dev/null
[ -f data/fortunes_bpe4096/merges.txt ] ||
    $MPITRON prepare --out data/fortunes_bpe4096 --vocab_size=4096 $files \
        > /dev/null
[ -f data/licenses/train_000.bin ] ||
    $MPITRON prepare --out data/licenses --doc_sep= \
        $(find /usr/share/common-licenses -type f | sort) > /dev/null

BASE="jobs/fortunes.ini --steps=$STEPS --warmup_steps=$((STEPS / 10))
      --val_every=0 --log_every=50 --val_batches=16 --threads=1"

# name | keys (the baseline is `base`)
ROWS="base|
window|--attn_window=32
mqa|--n_kv_head=1
linear|--attn=linear
sparse|--attn=sparse --attn_block=16 --attn_stride=4
layer_decay|--lr_layer_decay=0.8
lamb|--optimizer=lamb --lr=2e-2 --min_lr=2e-3
batch_ramp|--batch_ramp=4:100 --micro_batch=4
seq_warmup|--seq_len_warmup=32:100
doc_mask|--doc_mask=1
label_smoothing|--label_smoothing=0.1
z_loss|--z_loss=1e-4
micro_auto|--micro_batch=auto --mem_budget_mb=200
mixture|--data=data/fortunes:0.7,data/licenses:0.3
bpe4096|--data=data/fortunes_bpe4096"

lock_x() { # CMD...: under the exclusive CPU lock, holding the benchmark
           # turn while waiting for it (so shared holders cannot starve it)
    flock -x "$TURN" flock -x "$LOCK" "$@"
}
want() { # is row $1 asked for?
    [ $# -le 1 ] && return 0
    r=$1; shift
    for w in "$@"; do [ "$w" = "$r" ] && return 0; done
    return 1
}
last() { # run_dir key: the key's value on the last line that has it
    grep "\"$2\"" "$1/metrics.jsonl" | tail -n 1 |
        sed "s/.*\"$2\":\([^,}]*\).*/\1/"
}
field() { tail -n 1 "$1" | sed "s/.*\"$2\":\([^,]*\).*/\1/"; }
bench() { # name keys...: "tokens/s ratio": the row's tokens/s and its
          # ratio to the baseline's, each per GFLOP/s of the sgemm peak
          # that bench step measures just before timing (the machine's
          # speed drifts by 10-20% between minutes); baseline and row
          # alternate BENCH_REPS times under one exclusive lock, the
          # best of each
    n=$1; shift
    rm -f "$OUT/$n".*.bench
    lock_x sh -c 'k=1; while [ $k -le $4 ]; do
            mpirun -np 1 $0 bench step $1 --bench_steps=$5 \
                < /dev/null > "$2.base$k.bench" 2>&1 &&
            mpirun -np 1 $0 bench step $1 $3 --bench_steps=$5 \
                < /dev/null > "$2.$k.bench" 2>&1 || exit 1
            k=$((k + 1))
        done' "$MPITRON" "$BASE" "$OUT/$n" "$*" "$BENCH_REPS" "$BENCH_STEPS" ||
        { cat "$OUT/$n.1.bench"; exit 1; }
    for f in $(cd "$OUT" && ls "$n".*.bench | sed "s/^$n\.\(.*\)\.bench$/\1/"); do
        echo "$f $(field "$OUT/$n.$f.bench" tokens_per_s) \
              $(field "$OUT/$n.$f.bench" peak_gflops)"
    done | awk '{ r = $2 / $3; if ($1 ~ /base/) { if (r > b) b = r }
                  else { if (r > x) { x = r; t = $2 } } }
                END { printf "%.0f %.3f\n", t, x / b }'
}
nparams() { # keys...: the model's parameter count (one untimed step)
    mpirun -np 1 $MPITRON bench step $BASE "$@" --bench_steps=1 \
        --bench_warmup=0 < /dev/null 2>&1 | tail -n 1 |
        sed 's/.*"n_params":\([0-9]*\).*/\1/'
}

# equal FLOPs for BPE: steps x (6N + 12 L T C) the same as the bytes run
steps_for() { # name
    if [ "$1" = bpe4096 ]; then
        awk -v s="$STEPS" -v a="$NP_BYTES" -v b="$NP_BPE" \
            'BEGIN { c = 12 * 4 * 128 * 256; # 12 L T C of fortunes.ini
                     printf "%d", s * (6 * a + c) / (6 * b + c) + 0.5 }'
    else
        echo "$STEPS"
    fi
}

# ---- compression that converges with Adam (dp = 2, 400 steps) ----------
C="--data=data/fortunes --n_layer=2 --n_embd=128 --n_head=4 --seq_len=64
   --batch_size=16 --lr=3e-3 --min_lr=3e-4 --warmup_steps=30 --seed=7
   --steps=400 --log_every=100 --val_every=0 --val_batches=16"
compression() {
echo "== compression at dp = 2, 400 steps, warm-up 40 (10%)"
for r in "dense|" \
         "topk_adamw|--compress=topk:0.01 --compress_warmup=40" \
         "sign_adamw|--compress=sign --compress_warmup=40" \
         "onebit_sign|--optimizer=onebit_adam --compress=sign --compress_warmup=40" \
         "onebit_topk|--optimizer=onebit_adam --compress=topk:0.01 --compress_warmup=40"; do
    name=${r%%|*} keys=${r#*|}
    rm -rf "$OUT/c_$name"
    mpirun -np 2 --oversubscribe $MPITRON train $C $keys \
        --run_dir="$OUT/c_$name" < /dev/null > "$OUT/c_$name.log" 2>&1
    v=$(last "$OUT/c_$name" val_loss)
    w=$(last "$OUT/c_$name" wire_mb)
    [ "$name" = dense ] && { dv=$v; dw=$w; }
    awk -v n="$name" -v k="$keys" -v v="$v" -v dv="$dv" -v w="$w" -v dw="$dw" \
        'BEGIN { printf "| %s | `%s` | %.4f | %+.1f%% | %.3f MB (%.1f%%) |\n",
                 n, k, v, 100 * (v / dv - 1), w, 100 * w / dw }'
done
}
# tokens/s of each compression row against dense at dp = 2 (bench step,
# 2 ranks, one per core): the codec and 1-bit Adam act from the first
# timed step (compress_warmup 1, two untimed steps); dense and the row
# alternate BENCH_REPS times under one exclusive lock, best of each, per
# GFLOP/s of the sgemm peak the run measured (the slower rank's)
compression_speed() {
echo "== compression tokens/s at dp = 2 against dense (bench step)"
for r in "topk_adamw|--compress=topk:0.01" "sign_adamw|--compress=sign" \
         "onebit_sign|--optimizer=onebit_adam --compress=sign" \
         "onebit_topk|--optimizer=onebit_adam --compress=topk:0.01"; do
    name=${r%%|*} keys=${r#*|}
    rm -f "$OUT/cs_$name".*.bench
    lock_x sh -c 'k=1; while [ $k -le $4 ]; do
            mpirun -np 2 --oversubscribe $0 bench step $1 --bench_steps=$5 \
                --bench_warmup=2 < /dev/null > "$2.base$k.bench" 2>&1 &&
            mpirun -np 2 --oversubscribe $0 bench step $1 $3 \
                --compress_warmup=1 --bench_steps=$5 --bench_warmup=2 \
                < /dev/null > "$2.$k.bench" 2>&1 || exit 1
            k=$((k + 1))
        done' "$MPITRON" "$C" "$OUT/cs_$name" "$keys" "$BENCH_REPS" \
        "$BENCH_STEPS" || { cat "$OUT/cs_$name.1.bench"; exit 1; }
    for f in $(cd "$OUT" && ls "cs_$name".*.bench |
               sed "s/^cs_$name\.\(.*\)\.bench$/\1/"); do
        echo "$f $(field "$OUT/cs_$name.$f.bench" tokens_per_s) \
              $(field "$OUT/cs_$name.$f.bench" peak_gflops)"
    done | awk -v n="$name" '{ r = $2 / $3; if ($1 ~ /base/) { if (r > b) { b = r; bt = $2 } }
                else { if (r > x) { x = r; t = $2 } } }
                END { printf "%s %.0f (dense %.0f) %.3f\n", n, t, bt, x / b }' |
        tee -a "$OUT/compression_speed"
done
}
if [ "${1:-}" = onebit ]; then
    compression
    exit 0
fi
if [ "${1:-}" = onebit_speed ]; then
    compression_speed
    exit 0
fi

# ---- attention kinds against the sequence length ------------------------
# bench step of the fortunes.ini model at 4096 tokens per step (batch
# 4096 / T sequences), so only attention's share changes with T; the
# kinds of one T run back to back under one exclusive lock, and the
# ratios are of tokens/s per GFLOP/s of the sgemm peak each bench step
# measures just before timing (the machine's speed drifts)
SWEEP_KINDS="full|full
window|full --attn_window=256
linear|linear
sparse|sparse --attn_block=64 --attn_stride=8"
if [ "${1:-}" = attn_sweep ]; then
    echo "== tokens/s by attention kind and seq_len (bench step, 4096 tokens a step)"
    echo "| seq_len | full | window 256 | linear | sparse (block 64, stride 8) | window / full | linear / full | sparse / full |"
    echo "|---|---|---|---|---|---|---|---|"
    [ -n "${SWEEP_APPEND:-}" ] || rm -f "$OUT/sweep.dat"
    for T in ${SWEEP_T:-256 512 768 1024 2048 4096}; do
        B=$((4096 / T))
        echo "$SWEEP_KINDS" | lock_x sh -c 'm=$0 T=$1 B=$2 O=$3 S=$4
        while IFS="|" read -r n a; do
            set -- $a; k=$1; shift
            mpirun -np 1 $m bench step jobs/fortunes.ini --threads=1 \
                --seq_len=$T --batch_size=$B --micro_batch=$B --attn=$k "$@" \
                --bench_steps=$S --bench_warmup=1 < /dev/null \
                > "$O/sweep_${n}_$T.bench" 2>&1 || exit 1
        done' "$MPITRON" "$T" "$B" "$OUT" "${SWEEP_STEPS:-2}" ||
            { echo "sweep failed at $T"; exit 1; }
        f="$OUT/sweep_full_$T.bench"
        tf=$(field "$f" tokens_per_s) pf=$(field "$f" peak_gflops)
        line="| $T" ratios=""
        for n in full window linear sparse; do
            f="$OUT/sweep_${n}_$T.bench"
            t=$(field "$f" tokens_per_s) p=$(field "$f" peak_gflops)
            line="$line | $(printf %.0f "$t")"
            [ $n = full ] || ratios="$ratios | $(awk -v a="$t" -v pa="$p" \
                -v f="$tf" -v pf="$pf" 'BEGIN { printf "%.2fx", (a / pa) / (f / pf) }')"
            echo "$T $n $t $p" >> "$OUT/sweep.dat"
        done
        echo "$line$ratios |"
    done
    # tokens/s against seq_len, one line per kind (gnuplot-nox, deps.sh)
    gnuplot << EOF > /dev/null 2>&1 || echo "no plot (gnuplot failed)"
set terminal pngcairo size 800,500 font ",10" noenhanced
set output "$OUT/attn_sweep.png"
set title "bench step, fortunes.ini model, 4096 tokens a step, 1 thread"
set xlabel "seq_len"
set ylabel "tokens/s"
set logscale x 2
set yrange [0:*]
set key bottom left
set xrange [200:5200]
set xtics (256, 512, 768, 1024, 2048, 4096)
plot for [k in "full window linear sparse"] \
    "< awk '\$2 == \"".k."\"' $OUT/sweep.dat | sort -n" \
    using 1:3 with linespoints lw 2 title k
EOF
    echo "plot: $OUT/attn_sweep.png (data: $OUT/sweep.dat)"
    exit 0
fi

# ---- whole-run training speed ------------------------------------------
# bench step times full-size steps on synthetic tokens, so it cannot see
# what changes the steps over a run (batch_ramp, seq_len_warmup) or the
# data (doc_mask's boundaries, a mixture's loader).  This trains the rows
# given (and the baseline) one at a time, each under the exclusive lock,
# and reports tokens/s over the run: the tokens of all logged intervals
# over their summed wall time (metrics.jsonl: tokens_per_s x ms_step of
# each interval of log_every steps; start-up and validation excluded).
if [ "${1:-}" = train_speed ]; then
    shift
    for name in base "$@"; do
        keys=$(echo "$ROWS" | awk -F'|' -v n="$name" '$1 == n { print $2 }')
        rm -rf "$OUT/ts_$name"
        lock_x mpirun -np 1 $MPITRON train $BASE $keys \
            --run_dir="$OUT/ts_$name" < /dev/null > "$OUT/ts_$name.log" 2>&1 ||
            { echo "FAILED: $name (see $OUT/ts_$name.log)"; exit 1; }
        grep '"tokens_per_s"' "$OUT/ts_$name/metrics.jsonl" |
            sed 's/.*"tokens_per_s":\([^,]*\).*"ms_step":\([^,]*\).*/\1 \2/' |
            awk -v n="$name" -v v="$(last "$OUT/ts_$name" val_loss)" \
                '{ tok += $1 * $2; ms += $2 }
                 END { printf "%s %.0f %.4f\n", n, tok / ms, v }' |
            tee -a "$OUT/train_speed"
    done
    exit 0
fi

if want bpe4096 "$@"; then
    NP_BYTES=$(nparams)
    NP_BPE=$(nparams --data=data/fortunes_bpe4096)
fi

echo "== training $STEPS steps each, two at a time"
[ -n "${SKIP_TRAIN:-}" ] || echo "$ROWS" | { n=0; while IFS='|' read -r name keys; do
    want "$name" "$@" || [ "$name" = base ] || continue
    st=$(steps_for "$name")
    (rm -rf "$OUT/$name"
     mpirun -np 1 $MPITRON train $BASE $keys --steps="$st" \
         --warmup_steps=$((st / 10)) --run_dir="$OUT/$name" < /dev/null \
         > "$OUT/$name.log" 2>&1 || echo "FAILED: $name (see $OUT/$name.log)") &
    n=$((n + 1))
    [ $((n % 2)) -eq 0 ] && wait
done; wait; }

echo "== tokens/s (bench step, exclusive lock)"
echo "$ROWS" | while IFS='|' read -r name keys; do
    want "$name" "$@" || [ "$name" = base ] || continue
    printf "%s %s\n" "$name" "$(bench "$name" $keys)" | tee -a "$OUT/speed"
done

echo "== table"
bl=$(if [ -f "$OUT/base/metrics.jsonl" ]; then last "$OUT/base" val_loss; fi)

echo "| technique | keys | val loss | vs baseline | val bpb | tokens/s | speed vs baseline |"
echo "|---|---|---|---|---|---|---|"
echo "$ROWS" | while IFS='|' read -r name keys; do
    want "$name" "$@" || [ "$name" = base ] || continue
    t=$(awk -v n="$name" '$1 == n { print $2 }' "$OUT/speed" | tail -n 1)
    tr=$(awk -v n="$name" '$1 == n { print $3 }' "$OUT/speed" | tail -n 1)
    if [ ! -f "$OUT/$name/metrics.jsonl" ] || [ -z "$bl" ]; then
        # SKIP_TRAIN without earlier runs: the speed columns alone
        [ -n "$t" ] && printf '| %s | `%s` | - | - | - | %.0f | %.2fx |\n' \
            "$name" "$keys" "$t" "$tr"
        continue
    fi
    v=$(last "$OUT/$name" val_loss)
    b=$(last "$OUT/$name" val_bpb)
    awk -v n="$name" -v k="$keys" -v v="$v" -v bl="$bl" -v b="$b" \
        -v t="$t" -v tr="$tr" -v st="$(steps_for "$name")" -v s="$STEPS" \
        'BEGIN {
        printf "| %s | `%s`%s | %.4f | %+.1f%% | %.3f | %.0f | %.2fx |\n",
            n, k, st != s ? " (" st " steps)" : "", v,
            100 * (v / bl - 1), b, t, tr }'
    if [ "$name" = mixture ]; then
        grep '"val_loss_data"' "$OUT/mixture/metrics.jsonl" | tail -n 1 |
            sed 's/.*"val_loss_data":\({[^}]*}\).*/  per dataset: \1/'
    fi
done

[ $# -eq 0 ] && compression
exit 0
