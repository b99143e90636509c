#!/bin/sh
# Non-finite steps, through the binary on 2 ranks (tiny model):
#  1. lr=1e4 diverges: every metrics.jsonl line is JSON (jq parses it; a
#     non-finite loss is null), nonfinite=skip stops after
#     nonfinite_patience non-finite steps in a row, exit 1, and every
#     checkpoint written verifies;
#  1b. the same under nonfinite=rollback with a checkpoint every step: it
#     stops after nonfinite_patience rollbacks without a good step between
#     them, exit 1, and metrics.jsonl ends with the failed step;
#  2. skip: a NaN in one rank's gradient at step 4 (debug_nan) is seen by
#     both ranks, step 4 is skipped: its checkpoint's /model and /optim
#     datasets have the checksums of step 3's (nothing updated), steps
#     1-4 log the clean run's loss bits, the run ends 0;
#  3. abort: exit 1 naming the step, no checkpoint of that step;
#  4. rollback: a NaN weight at step 7 (once) poisons steps 7-9; the run
#     reloads step 6, leaves the batches of 7-9 out (step 9's checkpoint
#     holds step 6's tensors), records the rollback in metrics.jsonl and
#     ends 0 with finite losses; metrics.jsonl holds each step once, 7-9
#     skipped with nothing computed or sent, and step 10's loss is bit
#     for bit step 6's weights on batch 10 (a reference resumed from the
#     clean run's step 6 at lr=1e-30), not on any of batches 7-9;
#  5. a save of a NaN weight is refused naming the tensor; `latest` keeps
#     the previous checkpoint;
#  6. spike_zscore (a learning rate so small that the loss only
#     fluctuates, so z > 0.5 happens): each step's loss_z recomputed in awk from the logged
#     losses of the previous good steps (mean and population sd of the
#     last 100, from 20 on), and a step is skipped exactly when its z
#     exceeds the threshold;
#  7. with ZeRO and offload=optimizer: skip at zero = 2 leaves the
#     parameter and gradient shards and the moments (streamed through the
#     offload file's mapping; the checkpoint reads them from it) untouched,
#     step 4's checkpoint holds step 3's /model and /optim bits; rollback
#     at zero = 3 (a NaN in rank 1's parameter shard, gathered by both
#     ranks) reloads step 6 into the shards, forgets the gathered units
#     and trains steps 9-10 finite;
#  8. precision=bf16 with zero = 1, a NaN weight on rank 0 and on rank 1:
#     it reaches the bf16 copy the products read and no all-gather
#     overwrites it, so step 7 is already non-finite and the run rolls
#     back to step 6 as in fp32 (skipped on a CPU without bf16).
set -u
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
# no MFU here: a peak given, not measured (seconds of start-up per run)
export MPITRON_PEAK_GFLOPS=50
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-nf.XXXXXX")
trap 'rm -rf "$W"' EXIT
pass=0 failed=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

awk 'BEGIN { for (i = 0; i < 3000; i++)
             printf "%d: a step that is not finite must not %d-fold\n",
                    i, i % 7 }' > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=32
   --batch_size=8 --warmup_steps=2 --lr=3e-3 --log_every=1 --val_every=0"
train() { $MPIRUN -np 2 --oversubscribe "$MPITRON" train $M "$@"; }
losses() { jq -r 'select(has("loss")) | "\(.step) \(.loss)"' \
               "$1/metrics.jsonl"; }
# "NAME HASH" of the /model and /optim datasets of a checkpoint
tensors() { awk '$1 == "dataset" && $2 !~ /^\/state/ { print $2, $5 }' \
                "$1.manifest"; }
# every file named exists and is not empty (an empty one passes cmp and jq)
nonempty() {
    for f; do [ -s "$f" ] || { echo "empty or missing: $f"; return 1; }; done
}
json_ok() { nonempty "$1/metrics.jsonl" &&
            jq -e . "$1/metrics.jsonl" > /dev/null 2>&1 &&
            ! grep -qiE '[:,[]-?(nan|inf)' "$1/metrics.jsonl"; }

train --steps=12 --ckpt_every=1 --run_dir="$W/clean" > "$W/clean.log" 2>&1 \
    || { cat "$W/clean.log"; bad "clean run"; }
losses "$W/clean" > "$W/clean.loss"
[ "$(wc -l < "$W/clean.loss")" -eq 12 ] || bad "clean run: 12 losses logged"

# 1. divergence
train --steps=20 --lr=1e4 --warmup_steps=0 --ckpt_every=1 \
    --run_dir="$W/div" > "$W/div.log" 2>&1
rc=$?
nulls=$(jq -r 'select(has("loss")) | select(.loss == null) | .step' \
        "$W/div/metrics.jsonl" | wc -l)
verified=1
for f in "$W"/div/ckpt/step_*.h5; do
    "$MPITRON" ckpt verify "$f" > /dev/null 2>&1 || verified=0
done
if [ $rc -ne 0 ] && json_ok "$W/div" && [ "$nulls" -eq 3 ] &&
   grep -q "3 non-finite steps in a row .*diverged" "$W/div.log" &&
   [ $verified -eq 1 ]; then
    ok "lr=1e4: valid JSON (null losses), stops after 3 in a row, saves verify"
else
    bad "divergence (exit $rc, $nulls null losses, verified $verified)"
    cat "$W/div.log" "$W/div/metrics.jsonl"
fi

# 1b. the same divergence under rollback: checkpoints written while steps
#     fail or are skipped by plan hold the last good weights under newer
#     steps; rolling back to them is no progress, so the run stops after
#     nonfinite_patience such rollbacks (it rolled forward to the end, exit
#     0, before), and its last line is the failed step, after every other
#     (it was the checkpoint's step)
train --steps=20 --lr=1e4 --warmup_steps=0 --ckpt_every=1 \
    --nonfinite=rollback --nonfinite_patience=2 \
    --run_dir="$W/divrb" > "$W/divrb.log" 2>&1
rc=$?
last=$(sed -n 's/.*error: steps [0-9]*-\([0-9]*\) were not finite after 2 rollbacks without a good step between them.*/\1/p' \
       "$W/divrb.log" | head -n 1)
steps=$(jq -r 'select(has("loss")) | .step' "$W/divrb/metrics.jsonl")
if [ $rc -ne 0 ] && [ -n "$last" ] && json_ok "$W/divrb" &&
   [ "$(echo "$steps" | tail -n 1)" = "$last" ] &&
   echo "$steps" | awk 'NR > 1 && $1 <= prev { bad = 1 } { prev = $1 }
                        END { exit bad || NR < 3 }'; then
    ok "lr=1e4, rollback: stops after 2 rollbacks without progress, at step $last, one history"
else
    bad "rollback divergence (exit $rc, last failed step '$last')"
    cat "$W/divrb.log"; echo "$steps" | tr '\n' ' '
fi

# 2. skip one step whose gradient is NaN on rank 1 only
train --steps=12 --ckpt_every=1 --debug_nan=1:4:grad --run_dir="$W/skip" \
    > "$W/skip.log" 2>&1
rc=$?
losses "$W/skip" > "$W/skip.loss"
head -n 4 "$W/clean.loss" > "$W/c4"; head -n 4 "$W/skip.loss" > "$W/s4"
sed -n 5p "$W/clean.loss" > "$W/c5"; sed -n 5p "$W/skip.loss" > "$W/s5"
c="$W/skip/ckpt"
tensors "$c/step_00000003.h5" > "$W/t3"
tensors "$c/step_00000004.h5" > "$W/t4"
tensors "$c/step_00000005.h5" > "$W/t5"
if [ $rc -eq 0 ] && json_ok "$W/skip" && nonempty "$W/skip.loss" &&
   [ "$(jq -r 'select(.step == 4) | .skipped' "$W/skip/metrics.jsonl")" = 1 ] &&
   [ "$(jq -s '[.[].skipped] | add' "$W/skip/metrics.jsonl")" = 1 ] &&
   nonempty "$W/t3" "$W/t4" "$W/t5" "$W/c4" "$W/c5" "$W/s4" "$W/s5" &&
   cmp -s "$W/t3" "$W/t4" && ! cmp -s "$W/t4" "$W/t5" &&
   cmp -s "$W/c4" "$W/s4" && ! cmp -s "$W/c5" "$W/s5" &&
   grep -q "step 4: non-finite gradient norm: update skipped" "$W/skip.log"
then
    ok "skip: step 4 left weights and moments untouched, others trained"
else
    bad "skip (exit $rc)"; cat "$W/skip.log"; diff "$W/t3" "$W/t4" | head
fi

# 3. abort
train --steps=8 --ckpt_every=1 --debug_nan=0:3:grad --nonfinite=abort \
    --run_dir="$W/abort" > "$W/abort.log" 2>&1
rc=$?
if [ $rc -ne 0 ] &&
   grep -q "step 3: non-finite gradient norm (nonfinite=abort)" "$W/abort.log" &&
   [ ! -e "$W/abort/ckpt/step_00000003.h5" ] &&
   grep -q step_00000002.h5 "$W/abort/ckpt/latest"; then
    ok "abort: exit $rc naming step 3, nothing saved after step 2"
else
    bad "abort (exit $rc)"; cat "$W/abort.log"
fi

# 4. rollback
train --steps=12 --ckpt_every=3 --debug_nan=1:7:weight --nonfinite=rollback \
    --run_dir="$W/rb" > "$W/rb.log" 2>&1
rc=$?
losses "$W/rb" > "$W/rb.loss"
head -n 6 "$W/clean.loss" > "$W/c6"; head -n 6 "$W/rb.loss" > "$W/r6"
c="$W/rb/ckpt"
tensors "$c/step_00000006.h5" > "$W/t6"
tensors "$c/step_00000009.h5" > "$W/t9"
# the batches left out, from the data order: step 10 after the rollback
# trains step 6's weights on batch 10 -- its loss (taken before the
# update) is bit for bit that of a reference resumed from the clean run's
# step 6 at lr=1e-30 (steps 7-9 leave every weight as it was) at step 10,
# and none of batches 7-9's
train --steps=10 --resume="$W/clean/ckpt/step_00000006.h5" --lr=1e-30 \
    --lr_schedule=constant --warmup_steps=0 --run_dir="$W/ref" \
    > "$W/ref.log" 2>&1 || { cat "$W/ref.log"; bad "reference from step 6"; }
step_loss() { jq -r --argjson s "$2" 'select(.step == $s and has("loss")) |
              .loss' "$1/metrics.jsonl" 2>/dev/null | tail -n 1; }
rb10=$(step_loss "$W/rb" 10)
if [ $rc -eq 0 ] && json_ok "$W/rb" && nonempty "$W/c6" "$W/r6" &&
   [ "$(wc -l < "$W/r6")" -eq 6 ] && cmp -s "$W/c6" "$W/r6" &&
   [ "$(jq -c 'select(has("rollback_from"))' "$W/rb/metrics.jsonl")" = \
     '{"step":6,"rollback_from":9,"skip_steps":[7,8,9]}' ] &&
   [ "$(jq -r 'select(has("loss")) | select(.loss == null) | .step' \
        "$W/rb/metrics.jsonl" | tr '\n' ' ')" = "7 8 9 " ] &&
   [ "$(jq -r 'select(.step > 9 and has("loss")) | .loss' \
        "$W/rb/metrics.jsonl" | grep -c '^[0-9]')" -eq 3 ] &&
   nonempty "$W/t6" "$W/t9" && cmp -s "$W/t6" "$W/t9" &&
   [ "$(jq -r 'select(has("loss")) | .step' "$W/rb/metrics.jsonl" |
        tr '\n' ' ')" = "1 2 3 4 5 6 7 8 9 10 11 12 " ] &&
   [ "$(jq -c 'select(.step >= 7 and .step <= 9) |
              [.skipped, .grad_norm, .tokens_per_s, .wire_mb]' \
        "$W/rb/metrics.jsonl" | sort -u)" = '[1,null,0,0]' ] &&
   [ "$(jq -r 'select(has("loss")) | .step' "$W/ref/metrics.jsonl" |
        tr '\n' ' ')" = "7 8 9 10 " ] &&
   [ -n "$rb10" ] && [ "$rb10" = "$(step_loss "$W/ref" 10)" ] &&
   [ "$rb10" != "$(step_loss "$W/ref" 7)" ] &&
   [ "$rb10" != "$(step_loss "$W/ref" 8)" ] &&
   [ "$rb10" != "$(step_loss "$W/ref" 9)" ] &&
   grep -q "steps 7-9 were not finite: rolled back to .*step_00000006.h5" \
       "$W/rb.log" &&
   "$MPITRON" ckpt verify "$W/rb" > /dev/null 2>&1
then
    ok "rollback: reloaded step 6, left out steps 7-9, finished finite"
else
    bad "rollback (exit $rc)"; cat "$W/rb.log" "$W/rb/metrics.jsonl"
fi

# 5. a NaN weight is never saved (one rank: it writes every tensor)
$MPIRUN -np 1 "$MPITRON" train $M --steps=8 --ckpt_every=1 \
    --debug_nan=0:3:weight \
    --nonfinite_patience=10 --run_dir="$W/save" > "$W/save.log" 2>&1
rc=$?
if [ $rc -ne 0 ] &&
   grep -q "refusing to save a non-finite value: /model/[a-z.0-9]*\[[0-9,]*\] is nan" \
       "$W/save.log" &&
   ! ls "$W/save/ckpt" | grep -q "step_00000003" &&
   grep -q step_00000002.h5 "$W/save/ckpt/latest"; then
    ok "a save of a NaN weight is refused naming it; latest is step 2"
else
    bad "save of a NaN (exit $rc)"; cat "$W/save.log"; ls "$W/save/ckpt"
fi

# 6. loss spikes against the running window
train --steps=60 --spike_zscore=0.5 --nonfinite_patience=100 \
    --lr=1e-9 --lr_schedule=constant --warmup_steps=0 \
    --run_dir="$W/spike" > "$W/spike.log" 2>&1
rc=$?
jq -r 'select(has("loss")) | "\(.step) \(.loss) \(.loss_z) \(.skipped)"' \
    "$W/spike/metrics.jsonl" > "$W/spike.txt"
if [ $rc -eq 0 ] && nonempty "$W/spike.txt" && awk -v thr=0.5 '
    { loss = $2; z = "null"
      if (n >= 20) {
          m = 0; for (i = 0; i < n; i++) m += w[i]; m /= n
          v = 0; for (i = 0; i < n; i++) v += (w[i] - m) ^ 2
          z = (loss - m) / sqrt(v / n)
      }
      if (z == "null") { if ($3 != "null") bad = 1 }
      else { d = z - $3; if (d < 0) d = -d; if (d > 1e-4) bad = 1 }
      skip = (z != "null" && z > thr)
      if (skip != $4) bad = 1
      nskip += skip
      if (!skip) { if (n == 100) { for (i = 1; i < 100; i++) w[i-1] = w[i]; n = 99 }
                   w[n++] = loss }
    }
    END { printf "%d spikes skipped\n", nskip; exit bad || nskip == 0 }' \
    "$W/spike.txt" && grep -q "loss spike: update skipped" "$W/spike.log"; then
    ok "spike_zscore: z recomputed from the logged losses, spikes skipped"
else
    bad "spike_zscore (exit $rc)"; cat "$W/spike.txt"
fi

# 7. ZeRO: skip at zero = 2, rollback at zero = 3, moments offloaded
Z="--zero=2 --offload=optimizer --offload_dir=$W/off"
train --steps=6 --ckpt_every=1 --debug_nan=1:4:grad $Z --run_dir="$W/zskip" \
    > "$W/zskip.log" 2>&1
rc=$?
c="$W/zskip/ckpt"
tensors "$c/step_00000003.h5" > "$W/z3"
tensors "$c/step_00000004.h5" > "$W/z4"
tensors "$c/step_00000005.h5" > "$W/z5"
if [ $rc -eq 0 ] && json_ok "$W/zskip" &&
   [ "$(jq -s '[.[].skipped] | add' "$W/zskip/metrics.jsonl")" = 1 ] &&
   [ "$(jq -r 'select(.step == 4) | .skipped' "$W/zskip/metrics.jsonl")" = 1 ] &&
   nonempty "$W/z4" "$W/z5" &&
   grep -q '/optim/' "$W/z3" && cmp -s "$W/z3" "$W/z4" &&
   ! cmp -s "$W/z4" "$W/z5" &&
   grep -q "step 4: non-finite gradient norm: update skipped" "$W/zskip.log"
then
    ok "zero=2 + offload: the skipped step 4 left shards and moments untouched"
else
    bad "zero=2 skip (exit $rc)"; cat "$W/zskip.log"; diff "$W/z3" "$W/z4" | head
fi
Z="--zero=3 --offload=optimizer --offload_dir=$W/off"
train --steps=10 --ckpt_every=3 --debug_nan=1:7:weight --nonfinite=rollback \
    --nonfinite_patience=2 $Z --run_dir="$W/zrb" > "$W/zrb.log" 2>&1
rc=$?
# step 9 runs right after the rollback, before any save: with the
# gathered units of the NaN steps still in the slots it is NaN
if [ $rc -eq 0 ] && json_ok "$W/zrb" &&
   [ "$(jq -c 'select(has("rollback_from"))' "$W/zrb/metrics.jsonl")" = \
     '{"step":6,"rollback_from":8,"skip_steps":[7,8]}' ] &&
   [ "$(jq -r 'select(.step > 8 and has("loss")) | .loss' \
        "$W/zrb/metrics.jsonl" | grep -c '^[0-9]')" -eq 2 ] &&
   [ "$(jq -s '[.[] | select(.step > 8) | .skipped // 0] | add' \
        "$W/zrb/metrics.jsonl")" = 0 ] &&
   "$MPITRON" ckpt verify "$W/zrb" > /dev/null 2>&1
then
    ok "zero=3 + offload: rollback to step 6 reloaded the shards, 9-10 finite"
else
    bad "zero=3 rollback (exit $rc)"; cat "$W/zrb.log" "$W/zrb/metrics.jsonl"
fi

# 8. precision=bf16: the products read the bf16 copy of the weights, so
# the injected NaN must reach it as a corruption of the weights would;
# with zero=1 the copy of a rank's own chunk is rounded by AdamW, not
# after the gather, and the NaN was first seen a step late (step 7 ran
# finite on the stale copy, the save at step 9 refused the NaN, exit 1).
# On rank 0 the NaN went into rank 1's chunk, where the update's
# all-gather overwrote it: it is now put into the rank's own chunk.
for r in 0 1; do
    train --steps=10 --ckpt_every=3 --debug_nan=$r:7:weight \
        --nonfinite=rollback --nonfinite_patience=2 --zero=1 \
        --precision=bf16 --run_dir="$W/hrb$r" > "$W/hrb$r.log" 2>&1
    rc=$?
    if ! grep -q "precision bf16" "$W/hrb$r.log"; then
        ok "SKIP bf16 + zero=1 rank $r: no bf16 on this CPU (trained in fp32)"
    elif [ $rc -eq 0 ] && json_ok "$W/hrb$r" &&
       [ "$(jq -c 'select(has("rollback_from"))' "$W/hrb$r/metrics.jsonl")" \
         = '{"step":6,"rollback_from":8,"skip_steps":[7,8]}' ] &&
       [ "$(jq -r 'select(.step > 8 and has("loss")) | .loss' \
            "$W/hrb$r/metrics.jsonl" | grep -c '^[0-9]')" -eq 2 ] &&
       "$MPITRON" ckpt verify "$W/hrb$r" > /dev/null 2>&1
    then
        ok "bf16 + zero=1, rank $r's weight: step 7 poisoned, rollback to 6"
    else
        bad "bf16 zero=1 rollback, rank $r (exit $rc)"
        cat "$W/hrb$r.log" "$W/hrb$r/metrics.jsonl"
    fi
done

echo "$pass passed, $failed failed"
[ $failed -eq 0 ]
