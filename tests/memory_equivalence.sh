#!/bin/sh
# The memory techniques train the same model as without them.
# ZeRO: for zero = 1, 2 and 3 at dp = 2, dp = 4 (four micro-batches per
# rank: stages 2 and 3 reduce each one), dp2xtp2 and dp2xpp2 (two
# micro-batches, one block per stage), dropout 0.1, each of 10 steps' loss
# (and the validation losses) is within relative 1e-5 of zero = 0 in the
# same layout; with one micro-batch per step the three stages give the
# same bits (the reduce-scatter is the ring's first half).  Checkpoints
# stay in global shape: zero = 0 at dp = 2 resumes at zero = 3, zero = 3
# at zero = 0 and at dp = 4, each within 1e-5 of the uninterrupted run.
# offload=optimizer gives the same bits as keeping the moments in memory
# (zero = 2 on two ranks; zero = 0 over several streaming blocks:
# test_optim), the start-up banner reports the file, none is left behind,
# and an offload_dir that cannot hold the file is refused, naming it.
# Activation recomputation gives the same bits: full at dp2xtp2 (the tp
# all-reduces replayed), selective and full at dp2xpp2 with zero = 3.
. "$(dirname "$0")/equiv_lib.sh"

STEPS=10
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
   --seq_len=32 --batch_size=8 --steps=$STEPS --warmup_steps=3 --lr=3e-3
   --dropout=0.1 --log_every=1 --val_every=5 --ckpt_every=0"
pass=0
same() { # a b: the same loss bits
    cmp -s "$W/$1.loss" "$W/$2.loss" || {
        paste "$W/$1.loss" "$W/$2.loss"; fail "$2 is not bitwise $1"; }
    echo "$2 bitwise equal to $1"
}
for l in "2 dp2 --dp=2" "4 dp4 --dp=4 --micro_batch=1" \
         "4 dp2xtp2 --dp=2 --tp=2" "4 dp2xpp2 --dp=2 --pp=2 --micro_batch=2"; do
    set -- $l
    np=$1 name=$2
    shift 2
    train "$np" ${name}_z0 "$@"
    for z in 1 2 3; do
        train "$np" ${name}_z$z --zero=$z "$@"
        compare ${name}_z0 ${name}_z$z || fail "${name}_z$z differs"
        pass=$((pass + 1))
    done
    case $name in
        dp4|dp2xpp2) ;; # accumulation: stage 1 sums the micro-batches
                        # before reducing, 2 and 3 reduce each
        *) same ${name}_z1 ${name}_z2; same ${name}_z1 ${name}_z3 ;;
    esac
done

# checkpoints in global shape, across stages and data-parallel widths
resume_run ckpt_z0_to_z3 5 2 "--dp=2 --zero=0" 2 "--dp=2 --zero=3"
compare dp2_z0 ckpt_z0_to_z3 || fail "zero=0 -> zero=3 differs"
# one zero=3 run stopped at step 5, continued twice from a copy
$MPIRUN -np 2 --oversubscribe "$MPITRON" train $M --dp=2 --zero=3 \
    --stop_at_step=5 --run_dir="$W/ckpt_z3_to_z0" > "$W/z3half.log" 2>&1 \
    || { cat "$W/z3half.log"; fail "zero=3 run to step 5"; }
cp -r "$W/ckpt_z3_to_z0" "$W/ckpt_z3_dp2_to_dp4"
for l in "2 ckpt_z3_to_z0 --dp=2 --zero=0" \
         "4 ckpt_z3_dp2_to_dp4 --dp=4 --zero=3"; do
    set -- $l
    np=$1 run=$2
    shift 2
    train "$np" "$run" "$@"
    grep -q "resumed from .*step_0*5.h5 at step 5" "$W/$run.log" \
        || { cat "$W/$run.log"; fail "$run did not resume at step 5"; }
    compare dp2_z0 "$run" || fail "$run differs"
done
pass=$((pass + 3))

# optimizer offload: the same bits, the moments in a file that is gone
mkdir -p "$W/off"
train 2 dp2_z2_off --dp=2 --zero=2 --offload=optimizer --offload_dir="$W/off"
same dp2_z2 dp2_z2_off
grep -q "MiB of moments in the offload file" "$W/dp2_z2_off.log" \
    || fail "no offload file in the memory report"
[ -z "$(ls "$W/off")" ] || fail "offload files left behind: $(ls "$W/off")"
pass=$((pass + 1))

# recomputation: the same bits as keeping every activation
train 4 dp2xtp2_full --dp=2 --tp=2 --recompute=full
same dp2xtp2_z0 dp2xtp2_full
for r in selective full; do
    train 4 dp2xpp2_z3_$r --dp=2 --pp=2 --micro_batch=2 --zero=3 \
        --recompute=$r
    same dp2xpp2_z3 dp2xpp2_z3_$r
done
pass=$((pass + 3))

# refused at start-up, naming the key: an offload_dir that is a file
# (bad values of zero, offload and a codec with zero: test_config)
if $MPIRUN -np 1 "$MPITRON" train $M --offload=optimizer \
       --offload_dir="$W/text.txt" --run_dir="$W/bad" > "$W/bad.log" 2>&1; then
    fail "accepted offload_dir=$W/text.txt"
fi
grep -q "offload_dir $W/text.txt" "$W/bad.log" \
    || { cat "$W/bad.log"; fail "no error naming offload_dir"; }
pass=$((pass + 1))
echo "$pass passed, 0 failed"
