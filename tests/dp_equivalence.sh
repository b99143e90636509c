#!/bin/sh
# Data parallelism trains the same model as one rank: for dp = 2 and 4,
# every all-reduce algorithm, with and without gradient accumulation, each
# of 20 steps' loss is within relative 1e-5 of the dp = 1 run (the global
# batch of a step is the same in every layout).  hier runs with
# ranks_per_node = 2, so dp = 4 is two emulated nodes of two ranks.
set -eu
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-dp.XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

awk 'BEGIN { for (i = 0; i < 3000; i++)
             printf "line %d: the quick brown fox %d jumps over %d lazy dogs\n",
                    i, i * 7 % 13, i % 5 }' > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null

M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
   --seq_len=32 --batch_size=8 --steps=20 --warmup_steps=3 --lr=3e-3
   --dropout=0.1 --log_every=1 --val_every=0 --ckpt_every=0
   --bucket_mb=0.05"
losses() { grep '"loss"' "$1/metrics.jsonl" | sed 's/.*"loss":\([^,]*\),.*/\1/'; }
compare() { # ref run
    paste "$W/$1.loss" "$W/$2.loss" | awk -v name="$2" '
        { n++; d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1);
          if (r > worst) worst = r }
        END { printf "%-22s %d steps, max relative difference %.2e\n",
                     name, n, worst;
              exit !(n == 20 && worst <= 1e-5) }'
}
pass=0
for mb in 0 2; do
    ref=dp1_mb$mb
    $MPIRUN -np 1 "$MPITRON" train $M --micro_batch=$mb --run_dir="$W/$ref" \
        > "$W/$ref.log" 2>&1 || { cat "$W/$ref.log"; fail "$ref"; }
    losses "$W/$ref" > "$W/$ref.loss"
    for np in 2 4; do
        # with accumulation: micro_batch 2 of batch 8 over np ranks
        [ "$mb" -ne 0 ] && [ $((8 / np)) -le "$mb" ] && amb=1 || amb=$mb
        for algo in mpi ring rhd hier auto; do
            run=dp${np}_mb${mb}_$algo
            $MPIRUN -np $np --oversubscribe "$MPITRON" train $M \
                --micro_batch=$amb --allreduce=$algo --ranks_per_node=2 \
                --run_dir="$W/$run" > "$W/$run.log" 2>&1 \
                || { cat "$W/$run.log"; fail "$run"; }
            losses "$W/$run" > "$W/$run.loss"
            compare "$ref" "$run" || fail "$run differs from $ref"
            pass=$((pass + 1))
        done
    done
done
echo "$pass passed, 0 failed"
