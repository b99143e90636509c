#!/bin/sh
# Tensor parallelism trains the same model as one rank: each of 10 steps'
# loss (dropout 0.1) is within relative 1e-5 of the serial run for tp = 2,
# tp = 4, dp = 2 x tp = 2 (n_head = n_kv_head = 4), and tp = 2 and
# dp = 2 x tp = 2 with grouped-query attention (n_head = 4, n_kv_head = 2).
# A checkpoint written at tp = 2 resumes at tp = 1, and one written at
# tp = 1 resumes at tp = 2, both continuing within 1e-5 of the serial run.
set -eu
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-tp.XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

awk 'BEGIN { for (i = 0; i < 3000; i++)
             printf "line %d: the quick brown fox %d jumps over %d lazy dogs\n",
                    i, i * 7 % 13, i % 5 }' > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null

M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=32
   --batch_size=8 --steps=10 --warmup_steps=3 --lr=3e-3 --dropout=0.1
   --log_every=1 --val_every=0 --ckpt_every=0 --bucket_mb=0.05"
losses() { grep '"loss"' "$1/metrics.jsonl" | sed 's/.*"step":\([0-9]*\),"loss":\([^,]*\),.*/\1 \2/'; }
train() { # np name options...
    np=$1 run=$2; shift 2
    $MPIRUN -np "$np" --oversubscribe "$MPITRON" train $M "$@" \
        --run_dir="$W/$run" > "$W/$run.log" 2>&1 \
        || { cat "$W/$run.log"; fail "$run"; }
    losses "$W/$run" > "$W/$run.loss"
}
compare() { # ref run: same steps, every loss within relative 1e-5
    paste "$W/$1.loss" "$W/$2.loss" | awk -v name="$2" '
        { n++; if ($1 != $3) bad = 1;
          d = $2 - $4; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2);
          if (r > worst) worst = r }
        END { printf "%-22s %d steps, max relative difference %.2e\n",
                     name, n, worst;
              exit !(n == 10 && !bad && worst <= 1e-5) }'
}
pass=0
for kv in 4 2; do
    train 1 serial_kv$kv --n_kv_head=$kv
    if [ "$kv" -eq 4 ]; then
        layouts="2:tp2 4:tp4 4:dp2xtp2"
    else
        layouts="2:tp2 4:dp2xtp2"
    fi
    for l in $layouts; do
        np=${l%%:*} name=${l#*:}
        case $name in
            dp2xtp2) opt="--tp=2 --dp=2" ;;
            *) opt="--tp=${name#tp}" ;;
        esac
        train "$np" ${name}_kv$kv --n_kv_head=$kv $opt
        compare serial_kv$kv ${name}_kv$kv || fail "${name}_kv$kv differs"
        pass=$((pass + 1))
    done
done

# checkpoints do not depend on the tp layout: stop at step 5 under one,
# resume under the other, compare all 10 steps with the serial run
for pair in 2:1 1:2; do
    from=${pair%%:*} to=${pair#*:} run=ckpt_tp${from}to$to
    $MPIRUN -np "$from" --oversubscribe "$MPITRON" train $M --n_kv_head=4 \
        --tp="$from" --stop_at_step=5 --run_dir="$W/$run" \
        > "$W/$run.1.log" 2>&1 || { cat "$W/$run.1.log"; fail "$run part 1"; }
    train "$to" $run --n_kv_head=4 --tp="$to"
    grep -q "resumed from .*step_00000005.h5 at step 5" "$W/$run.log" \
        || { cat "$W/$run.log"; fail "$run did not resume at step 5"; }
    compare serial_kv4 $run || fail "$run differs"
    pass=$((pass + 1))
done
echo "$pass passed, 0 failed"
