#!/bin/sh
# Data parallelism trains the same model as one rank: for dp = 2 and 4,
# every all-reduce algorithm, with and without gradient accumulation, each
# of 20 steps' loss is within relative 1e-5 of the dp = 1 run (the global
# batch of a step is the same in every layout).  hier runs with
# ranks_per_node = 2, so dp = 4 is two emulated nodes of two ranks; shm
# with every rank on one node, and gives the ring's losses exactly; auto
# takes shm when the dp ranks are on one node.
. "$(dirname "$0")/equiv_lib.sh"

STEPS=20
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
   --seq_len=32 --batch_size=8 --steps=$STEPS --warmup_steps=3 --lr=3e-3
   --dropout=0.1 --log_every=1 --val_every=0 --ckpt_every=0
   --bucket_mb=0.05"
pass=0
for mb in 0 2; do
    ref=dp1_mb$mb
    train 1 $ref --micro_batch=$mb
    for np in 2 4; do
        # with accumulation: micro_batch 2 of batch 8 over np ranks
        [ "$mb" -ne 0 ] && [ $((8 / np)) -le "$mb" ] && amb=1 || amb=$mb
        for algo in mpi ring rhd hier auto shm; do
            run=dp${np}_mb${mb}_$algo
            # shm needs one node: every rank on it
            rpn=2
            [ $algo = shm ] && rpn=$np
            train $np $run --micro_batch=$amb --allreduce=$algo \
                --ranks_per_node=$rpn
            compare "$ref" "$run" || fail "$run differs from $ref"
            # the algorithm asked for is the one that reduced (auto: below)
            [ $algo = auto ] || grep -q "gradient all-reduce: [0-9]* \
bucket(s): $algo x" "$W/$run.log" || fail "$run: $algo not used"
            pass=$((pass + 1))
        done
        # shm sums in the ring's order: the same losses, digit for digit
        cmp "$W/dp${np}_mb${mb}_ring.loss" "$W/dp${np}_mb${mb}_shm.loss" \
            || fail "dp$np mb$mb: shm's losses differ from the ring's"
        grep -q "gradient all-reduce: [0-9]* bucket(s): shm x" \
            "$W/dp${np}_mb${mb}_shm.log" || fail "dp$np: shm not used"
        # auto takes shm on one node (np 2 with ranks_per_node 2), not
        # across emulated nodes (np 4)
        if grep -q "bucket(s): shm x" "$W/dp${np}_mb${mb}_auto.log"; then
            [ $np = 2 ] || fail "dp$np: auto took shm across nodes"
        else
            [ $np != 2 ] || fail "dp$np: auto did not take shm on one node"
        fi
        pass=$((pass + 1))
    done
done
echo "$pass passed, 0 failed"
