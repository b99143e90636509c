#!/bin/sh
# Load balance trains the same model as one rank, and names stragglers:
#  - dp = 2 and dp = 4 with balance=on and one rank slowed down
#    (debug_slow_rank): the calibrated shares are unequal, and each of 20
#    steps' loss (and the validation losses) is within relative 1e-5 of
#    the serial run;
#  - dp = 2 and dp = 4 with rebalance_every=5 from the equal split: the
#    shares are re-split mid-run (at step 5, or a later multiple of 5
#    when load hides the gain; the log says from what to what), and the
#    losses still match the serial run;
#  - the same with zero=1 (ZeRO reduces once per step, so it takes
#    unequal micro-batch counts; a re-split re-plans its order of uses);
#  - the slowed rank is named in metrics.jsonl (straggler_rank) on most
#    logged intervals of an unbalanced run, and no other rank ever is, and
#    its ms_imbalance is what the logged compute and ratio imply;
#    bench step's per-rank compute, imbalance, exposed comm and peaks
#    show the slowed rank and the other's idling (none on one rank);
#  - pipeline stages: pp_partition=5,3 is taken as given, and auto gives
#    the head's stage fewer blocks than params does when the head costs
#    several blocks, and more again when the first stage's rank is slowed
#    down; all train the serial model.
. "$(dirname "$0")/equiv_lib.sh"

STEPS=20
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
   --seq_len=32 --batch_size=8 --steps=$STEPS --warmup_steps=3 --lr=3e-3
   --dropout=0.1 --log_every=1 --val_every=10 --ckpt_every=0
   --bucket_mb=0.05"
pass=0
REF=serial
check() { # run: compare with the serial run
    compare $REF "$1" || fail "$1 differs from the serial run $REF"
    pass=$((pass + 1))
}
shares() { # run: the shares line of its banner
    sed -n 's/^data-parallel shares ([^)]*): \([0-9,]*\) of.*/\1/p' \
        "$W/$1.log"
}
unequal() { # run: fails when the shares are all equal
    s=$(shares "$1")
    [ -n "$s" ] || { cat "$W/$1.log"; fail "$1: no shares line"; }
    echo "$s" | tr ',' '\n' | sort -u | [ "$(wc -l)" -gt 1 ] \
        || { cat "$W/$1.log"; fail "$1: equal shares $s"; }
    echo "$1: shares $s"
}

train 1 serial
train 2 bal2 --balance=on --debug_slow_rank=1:4 --micro_batch=2
unequal bal2
check bal2
train 4 bal4 --balance=on --debug_slow_rank=2:4 --micro_batch=1
unequal bal4
check bal4

for np in 2 4; do
    run=reb$np
    train $np $run --rebalance_every=5 --debug_slow_rank=1:4
    # at step 5 on a quiet machine; a re-split needs a 5% gain measured
    # over the interval, which a loaded machine's noise can hide once
    grep -q "^step [0-9]*: data-parallel shares re-split .*: \([0-9]*,\)*[0-9]* -> " \
        "$W/$run.log" || { cat "$W/$run.log"; fail "$run: no re-split"; }
    grep "re-split" "$W/$run.log" | head -1
    check $run
done

# ZeRO stage 1 reduces once per step: unequal shares (and micro-batch
# counts) from calibration and from a re-split, whose new schedule ZeRO
# re-plans its order of unit uses for
train 2 z1bal --zero=1 --balance=on --debug_slow_rank=1:4 --micro_batch=2
unequal z1bal
check z1bal
train 2 z1reb --zero=1 --rebalance_every=5 --debug_slow_rank=1:4 \
    --micro_batch=1
grep -q "^step [0-9]*: data-parallel shares re-split" "$W/z1reb.log" \
    || { cat "$W/z1reb.log"; fail "z1reb: no re-split"; }
check z1reb

# straggler: rank 1 at a sixth of the speed, equal shares, no re-split
# (at a third, under make -j2 beside another test's ranks, its kernels on
# this tiny model were once only 1.2x rank 0's and it went unnamed on 3
# of 4 intervals)
train 2 strag --debug_slow_rank=1:6 --log_every=5
# With two ranks the median is the mean, so a named rank 1's ratio R
# gives its compute as R c0 / (2 - R) for rank 0's c0 (ms_compute), and
# the imbalance, half the difference, must be c0 (R - 1) / (2 - R).
awk 'function num(k,   v) { v = $0; if (!sub(".*\"" k "\":", "", v))
                                { missing++; return 0 }
                            sub(/[,}].*/, "", v); return v + 0 }
     /"straggler_rank":/ {
         n++; r = num("straggler_rank")
         if (r == 1) {
             one++; R = num("straggler_ratio"); c0 = num("ms_compute")
             w = c0 * (R - 1) / (2 - R); d = num("ms_imbalance") - w
             if (d < 0) d = -d
             if (!(w > 0 && d <= 1e-3 * w)) badimb++
         } else if (r != -1) other++ }
     END { printf "straggler named on %d of %d intervals; imbalance off" \
                  " on %d, keys missing %d\n", one, n, badimb, missing;
           exit !(n >= 4 && one * 2 >= n && other == 0 && !badimb &&
                  !missing) }' \
    "$W/strag/metrics.jsonl" || { cat "$W/strag.log"; fail "straggler"; }
grep -q "straggler rank 1 (.*imbalance [0-9][0-9.]* ms)" "$W/strag.log" \
    || fail "progress line"
pass=$((pass + 1))

# bench step's per-rank figures on an unbalanced pair (rank 1 at a sixth
# of the speed): the slowed rank computes longer; with two ranks each
# step's idle times differ by exactly the difference of the compute
# times, so i0 - i1 = c1 - c0 (per-rank compute and imbalance come from
# the same steps); the slowed rank hardly idles (only when the other is
# preempted); the other shows its idling as exposed communication; the
# ranks' GEMM peaks add up to the peak MFU is taken against.  One rank
# alone has no imbalance.
B="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=32
   --batch_size=8 --threads=1 --bench_steps=8 --bench_warmup=1"
$MPIRUN -np 2 --oversubscribe "$MPITRON" bench step $B \
    --debug_slow_rank=1:6 > "$W/strag.bench" 2>&1 \
    || { cat "$W/strag.bench"; fail "bench step with a slow rank"; }
$MPIRUN -np 1 "$MPITRON" bench step $B > "$W/one.bench" 2>&1 \
    || { cat "$W/one.bench"; fail "bench step on one rank"; }
json() { # file: its JSON line
    grep '^{' "$1" | tail -n 1
}
arr() { # file key: the JSON array's numbers, space-separated
    json "$1" | sed -n "s/.*\"$2\":\[\([^]]*\)\].*/\1/p" | tr ',' ' '
}
set -- $(arr "$W/strag.bench" ms_compute_per_rank) \
       $(arr "$W/strag.bench" ms_imbalance_per_rank) \
       $(arr "$W/strag.bench" ms_comm_per_rank) \
       $(arr "$W/strag.bench" peak_gflops_per_rank) \
       $(json "$W/strag.bench" | sed -n 's/.*"peak_gflops":\([^,]*\),.*/\1/p')
[ $# = 9 ] || { json "$W/strag.bench"; fail "per-rank arrays"; }
echo "slow rank 1: compute $1 $2 ms, imbalance $3 $4 ms, comm $5 $6 ms," \
     "peaks $7 + $8 = $9 GFLOP/s"
awk -v c0="$1" -v c1="$2" -v i0="$3" -v i1="$4" -v m0="$5" -v m1="$6" \
    -v p0="$7" -v p1="$8" -v p="$9" 'BEGIN {
    e = i0 - i1 - (c1 - c0); if (e < 0) e = -e; q = p0 + p1 - p
    if (q < 0) q = -q
    exit !(c1 > 1.3 * c0 && e <= 1e-4 * (i0 + c1) && i1 <= 0.25 * i0 &&
           m0 > 0.5 * i0 && m1 > 0 && q <= 1e-4 * p) }' \
    || fail "per-rank imbalance figures"
grep -q "^    rank 1: compute .* imbalance" "$W/strag.bench" \
    || fail "bench step's per-rank lines"
set -- $(arr "$W/one.bench" ms_imbalance_per_rank)
[ $# = 1 ] && awk -v i="$1" 'BEGIN { exit !(i == 0) }' \
    || { json "$W/one.bench"; fail "one rank's imbalance is not 0"; }
pass=$((pass + 1))

# pipeline partitions, against a serial run of the same 8-block model
# with an 8192-token vocabulary, whose head costs about ten blocks (its
# softmax and cross-entropy included): the parameter-balanced partition
# gives the head's stage half the blocks, auto fewer. The head must
# dominate by far more than the noise between the two ranks' own
# calibrations: with 4096 tokens (three blocks) a rank timed 1.4x slower
# than the other on a busy CI machine made keeping 4,4 the right answer;
# with 16384 tokens the head outweighs even 7 blocks slowed down 3x.
STEPS=10
M="$M --n_layer=8 --vocab_size=8192 --steps=$STEPS --val_every=5"
REF=serial8
train 1 serial8
train 2 pp53 --pp=2 --micro_batch=2 --pp_partition=5,3
grep -q "blocks per stage: \[0,5) \[5,8)" "$W/pp53.log" \
    || { cat "$W/pp53.log"; fail "pp_partition=5,3 not applied"; }
check pp53
for part in params auto; do
    train 2 pp_$part --pp=2 --micro_batch=2 --pp_partition=$part
    check pp_$part
done
last() { sed -n 's/.*blocks per stage: \[0,[0-9]*) \[\([0-9]*\),8).*/\1/p' \
             "$W/$1.log"; }
echo "head stage starts at block $(last pp_params) (params), $(last pp_auto) (auto)"
grep "^pp_partition=auto" "$W/pp_auto.log"
[ "$(last pp_auto)" -gt "$(last pp_params)" ] \
    || { cat "$W/pp_auto.log"; fail "auto did not move blocks off the head"; }
# the first stage on a rank six times slower: auto moves blocks to the
# head's stage
train 2 pp_slow --pp=2 --micro_batch=2 --debug_slow_rank=0:6
check pp_slow
echo "with the first stage slowed down 6x: head stage starts at block $(last pp_slow)"
[ "$(last pp_slow)" -lt "$(last pp_auto)" ] \
    || { cat "$W/pp_slow.log"; fail "auto ignored the slow stage"; }
echo "$pass passed, 0 failed"
