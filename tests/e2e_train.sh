#!/bin/sh
# End to end on the fortunes corpus, through the mpitron binary:
#  1. prepare the corpus; train a small model for 200 steps at a fixed
#     seed: the final validation loss must be far below ln 256 = 5.55
#     (< 3.0);
#  2. sample prints text from the checkpoint;
#  3. a run stopped at step 6 (stop_at_step) and resumed with resume=auto
#     logs exactly the same loss bits for steps 7..12 as an uninterrupted
#     run, with dropout on and gradient accumulation.
set -eu
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
FORTUNES=/usr/share/games/fortunes
[ -d "$FORTUNES" ] || { echo "SKIP: $FORTUNES missing (Debian package fortunes)"; exit 77; }
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-e2e.XXXXXX")
trap 'rm -rf "$W"' EXIT
run() { $MPIRUN -np 1 "$MPITRON" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

files=$(find "$FORTUNES" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | sort)
"$MPITRON" prepare --out "$W/data" $files > "$W/prepare.log"
[ -f "$W/data/train_000.bin" ] && [ -f "$W/data/val_000.bin" ] \
    || fail "prepare wrote no shards"

SMALL="--data=$W/data --n_layer=2 --n_embd=128 --n_head=4 --seq_len=64
       --batch_size=16 --lr=3e-3 --min_lr=3e-4 --warmup_steps=30 --seed=7"
run train $SMALL --run_dir="$W/conv" --steps=200 --val_every=100 \
    --log_every=50 > "$W/conv.log"
cat "$W/conv.log"
val=$(grep '"val_loss"' "$W/conv/metrics.jsonl" | tail -n 1 |
      sed 's/.*"val_loss":\([0-9.e+-]*\).*/\1/')
echo "final val_loss $val"
awk -v v="$val" 'BEGIN { exit !(v > 0 && v < 3.0) }' \
    || fail "final val_loss $val is not < 3.0"

run sample --ckpt "$W/conv" --prompt="The " --tokens=120 --seed=3 \
    > "$W/sample.txt"
cat "$W/sample.txt"
n=$(tr -cd 'a-zA-Z' < "$W/sample.txt" | wc -c)
[ "$n" -ge 40 ] || fail "sample printed only $n letters"

RES="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
     --seq_len=32 --batch_size=8 --micro_batch=4 --dropout=0.1 --steps=12
     --warmup_steps=3 --log_every=1 --val_every=4"
run train $RES --run_dir="$W/full" > /dev/null
run train $RES --run_dir="$W/split" --stop_at_step=6 > /dev/null
[ -f "$W/split/ckpt/step_00000006.h5" ] || fail "no checkpoint at step 6"
run train $RES --run_dir="$W/split" --resume=auto > "$W/resume.log"
grep -q "resumed from .*step_00000006.h5 at step 6" "$W/resume.log" \
    || fail "the second run did not resume from step 6"
losses() { grep '"loss"' "$1" | sed 's/.*"step":\([0-9]*\),"loss":\([^,]*\),.*/\1 \2/'; }
losses "$W/full/metrics.jsonl" > "$W/a"
losses "$W/split/metrics.jsonl" > "$W/b"
[ "$(wc -l < "$W/a")" -eq 12 ] || fail "expected 12 logged steps"
diff "$W/a" "$W/b" || fail "resumed run's losses differ from the uninterrupted run"
grep '"val_loss"' "$W/full/metrics.jsonl" | sed 's/.*"val_loss"://' > "$W/va"
grep '"val_loss"' "$W/split/metrics.jsonl" | sed 's/.*"val_loss"://' > "$W/vb"
diff "$W/va" "$W/vb" || fail "validation losses differ after resume"
echo "resume: steps 7..12 bitwise identical"
echo "1 passed, 0 failed"
