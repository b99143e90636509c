#!/bin/sh
# The hang watchdog, through the binary (debug_hang=R:STEP stops rank R's
# progress before step STEP; the test waits for the job to end, with a
# generous guard so that a broken watchdog fails instead of hanging
# `make check`; it asserts no duration):
#  1. dp=2, hang_timeout=10, rank 1 stopped at step 3: the job ends
#     non-zero; rank 1 reports that it stopped, rank 0 that it waits for
#     gradient bucket 1 from world rank 1; both hang_rank_R.txt files;
#  2. tp=2 x pp=2, rank 3 stopped, rank 0 with hang_timeout=10 and the
#     others with 60 (two mpirun app contexts): rank 0 times out first
#     waiting to receive a gradient from world rank 2 and tells the
#     others, which report at once: rank 1 waits for a gradient from
#     world rank 3, rank 2 in a tensor-parallel all-reduce with world
#     rank 3, rank 3 stopped on purpose;
#  3. zero=3, dp=2, rank 1 stopped: rank 0 waits in ZeRO's all-gather of
#     parameters from the dp group (world rank 1).
set -u
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
# no MFU here: a peak given, not measured (on a loaded machine the
# measurement alone outlasted hang_timeout=10 in start-up)
export MPITRON_PEAK_GFLOPS=50
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-hang.XXXXXX")
trap 'rm -rf "$W"' EXIT
pass=0 failed=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

awk 'BEGIN { for (i = 0; i < 2000; i++)
             printf "%d: a rank that stops must be named %d\n", i, i % 5 }' \
    > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=32
   --batch_size=8 --steps=50 --log_every=1 --val_every=0"
GUARD=180  # seconds: only so that a broken watchdog cannot hang the suite

# 1. the issue's case
t0=$(date +%s)
timeout $GUARD $MPIRUN -np 2 --oversubscribe "$MPITRON" train $M \
    --hang_timeout=10 --debug_hang=1:3 --run_dir="$W/dp" > "$W/dp.log" 2>&1
rc=$?
echo "dp=2: the job ended after $(($(date +%s) - t0)) s with exit $rc"
if [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
   grep -q "rank 1: hang: no progress for .* stopped on purpose (debug_hang) at step 3" "$W/dp.log" &&
   grep -q "rank 0: hang: no progress for .* gradient bucket 1 of 1 from the dp group (world ranks 1) at step 3" "$W/dp.log" &&
   grep -q "debug_hang" "$W/dp/hang_rank_1.txt" &&
   grep -q "world ranks 1" "$W/dp/hang_rank_0.txt"; then
    ok "dp=2: job aborted, rank 1 named by itself and by rank 0"
else
    bad "dp=2 hang (exit $rc)"; cat "$W/dp.log"
fi

# 2. tp=2 x pp=2, rank 3 stopped; rank 0 has hang_timeout=10, the others
#    60 (two mpirun app contexts): rank 0 times out first and tells the
#    others, which report their own phase at once
timeout $GUARD $MPIRUN --oversubscribe \
    -np 1 "$MPITRON" train $M --tp=2 --pp=2 --micro_batch=2 \
    --hang_timeout=10 --debug_hang=3:3 --run_dir="$W/tpp" : \
    -np 3 "$MPITRON" train $M --tp=2 --pp=2 --micro_batch=2 \
    --hang_timeout=60 --debug_hang=3:3 --run_dir="$W/tpp" \
    > "$W/tpp.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
   grep -q "rank 0: hang: no progress .*(hang_timeout=10): waiting to receive the gradient of micro-batch [0-9]* from world rank 2" "$W/tpp.log" &&
   grep -q "rank 1: hang reported by rank 0; this rank: waiting to receive the gradient of micro-batch [0-9]* from world rank 3" "$W/tpp.log" &&
   grep -q "rank 2: hang reported by rank 0; this rank: waiting for a tensor-parallel all-reduce .* from the tp group (world ranks 3)" "$W/tpp.log" &&
   grep -q "rank 3: hang reported by rank 0; this rank: stopped on purpose" "$W/tpp.log" &&
   [ "$(ls "$W/tpp" | grep -c '^hang_rank_[0-3].txt$')" -eq 4 ]; then
    ok "tp2 x pp2: transfers and tp all-reduce named; the others told at once"
else
    bad "tp x pp hang (exit $rc)"; cat "$W/tpp.log"
fi

# 3. ZeRO (zero = 3, dp = 2): rank 0 waits in the all-gather of a unit's
#    parameters from the dp group
timeout $GUARD $MPIRUN -np 2 --oversubscribe "$MPITRON" train $M --zero=3 \
    --hang_timeout=10 --debug_hang=1:3 --run_dir="$W/zero" \
    > "$W/zero.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
   grep -q "rank 1: hang: no progress for .* stopped on purpose (debug_hang) at step 3" "$W/zero.log" &&
   grep -q "rank 0: hang: no progress for .* waiting in the ZeRO all-gather of parameters from the dp group (world ranks 1) at step 3" "$W/zero.log"
then
    ok "zero=3: rank 0 names the ZeRO all-gather and world rank 1"
else
    bad "zero=3 hang (exit $rc)"; cat "$W/zero.log"
fi

echo "$pass passed, $failed failed"
[ $failed -eq 0 ]
