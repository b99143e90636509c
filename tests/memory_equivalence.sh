#!/bin/sh
# The memory techniques train the same model as without them.
# The model (n_embd 42, six heads of 7) makes block units of 19306
# floats: shards of unequal length at dp = 4 (and across tp = 2).
# ZeRO: for zero = 1, 2 and 3 at dp = 2, dp = 4 (two micro-batches per
# rank: stages 2 and 3 reduce each one), dp2xtp2 and dp2xpp2 (two
# micro-batches, one block per stage), dropout 0.1, clipping active
# (grad_clip 1, gnorm about 2), each of 10 steps' loss (and the
# validation losses) is within relative 1e-5 of zero = 0 in the same
# layout; where stages 2 and 3 reduce the same way (one micro-batch per
# step: also stage 1) they give the same bits.  On the way:
#   offload=optimizer (dp2, zero=2): the same bits, the start-up banner
#     reports the file, none is left behind; also under zero = 0 (dp4:
#     every dp rank holds the whole moments, one writes each to the
#     checkpoint)
#   recompute=full (dp4 and dp2xtp2, zero=3: the tp all-reduces
#     replayed) and selective (dp2xpp2, zero=3): the same bits
#   the banner's computed bytes: at dp = 2 zero >= 1 halves the moments,
#     zero >= 2 the gradients, zero = 3 keeps the shard plus working
#     slots instead of the parameter arena
# Checkpoints stay in global shape: zero = 0 at dp = 2 resumes at
# zero = 3, zero = 3 at zero = 0 and at dp = 4 (from the dp2 runs'
# step-5 checkpoints), zero = 2 at dp = 4 at zero = 1 and dp = 2 (step 3),
# each within 1e-5 of the uninterrupted run.
# zero=1 through shared memory (the default on one node) gives the bits
# of zero=1 through the ring (allreduce=ring) at dp = 4.
# An offload_dir that cannot hold the file is refused, naming it.
# (Offload over several streaming blocks: test_optim; recompute in
# detail: test_model; bad values of zero, offload, codec with zero:
# test_config.)
. "$(dirname "$0")/equiv_lib.sh"

STEPS=10
M="--data=$W/data --n_layer=2 --n_embd=42 --n_head=6 --n_kv_head=2
   --seq_len=32 --batch_size=8 --steps=$STEPS --warmup_steps=3 --lr=3e-3
   --dropout=0.1 --log_every=1 --val_every=5 --ckpt_every=0"
pass=0
same() { # a b: the same loss bits
    cmp -s "$W/$1.loss" "$W/$2.loss" || {
        paste "$W/$1.loss" "$W/$2.loss"; fail "$2 is not bitwise $1"; }
    echo "$2 bitwise equal to $1"
}
mem() { # run column: rank 0's bytes of a role in the start-up banner
        # (2 params, 3 grads, 4 optimizer), MiB
    awk -v c="$2" '/^memory per rank/ { on = 1; next }
                   on && $1 == "0" { print $c; exit }' "$W/$1.log"
}
check() { # description awk-condition: on the numbers a, b, c
    awk -v a="$3" -v b="$4" -v c="${5:-0}" "BEGIN { exit !($2) }" \
        || fail "$1 ($3 $4 ${5:-})"
    echo "memory: $1"
}
mkdir -p "$W/off"
for l in "2 dp2 --dp=2" "4 dp4 --dp=4 --micro_batch=1" \
         "4 dp2xtp2 --dp=2 --tp=2" "4 dp2xpp2 --dp=2 --pp=2 --micro_batch=2"
do
    set -- $l
    np=$1 name=$2
    shift 2
    case $name in # what rides along on the zero = 2 and 3 runs
        dp2) x0=--ckpt_every=5
             x2="--offload=optimizer --offload_dir=$W/off" x3=$x0 ;;
        dp4) x0="--offload=optimizer --offload_dir=$W/off"
             x2=--ckpt_every=3 x3="--ckpt_every=3 --recompute=full" ;;
        dp2xtp2) x0= x2= x3=--recompute=full ;;
        dp2xpp2) x0= x2= x3=--recompute=selective ;;
    esac
    train "$np" ${name}_z0 "$@" $x0
    train "$np" ${name}_z1 --zero=1 "$@"
    train "$np" ${name}_z2 --zero=2 "$@" $x2
    train "$np" ${name}_z3 --zero=3 "$@" $x3
    for z in 1 2 3; do
        compare ${name}_z0 ${name}_z$z || fail "${name}_z$z differs"
        pass=$((pass + 1))
    done
    same ${name}_z2 ${name}_z3
    case $name in
        dp4|dp2xpp2) ;; # accumulation: stage 1 sums the micro-batches
                        # before reducing, 2 and 3 reduce each
        *) same ${name}_z1 ${name}_z2 ;;
    esac
    pass=$((pass + 1))
done

# zero=1 reduce-scatters and gathers in memory the dp ranks share
# (allreduce=auto, one node): the same bits as the ring's messages, at
# dp = 4 too (p - 1 terms per chunk, shards of unequal length)
zops() { # run: rank 0's "N reduce-scatters and all-gathers, M of them in
         # shared memory" as "N M"
    sed -n 's/.*zero=1: \([0-9]*\) reduce-scatters and all-gathers, \([0-9]*\) of them in shared memory.*/\1 \2/p' \
        "$W/$1.log" | head -n 1
}
for name in dp2 dp4 dp2xtp2 dp2xpp2; do
    set -- $(zops ${name}_z1)
    [ "${1:-0}" -gt 0 ] && [ "$1" = "${2:-}" ] \
        || fail "${name}_z1: not every ZeRO operation in shared memory: '$*'"
    echo "${name}_z1: $1 of $1 operations in shared memory"
done
train 4 dp4_z1_ring --dp=4 --micro_batch=1 --zero=1 --allreduce=ring
set -- $(zops dp4_z1_ring)
[ "${1:-0}" -gt 0 ] && [ "${2:-}" = 0 ] \
    || fail "allreduce=ring with zero=1: '$*' (want none in shared memory)"
same dp4_z1 dp4_z1_ring
pass=$((pass + 1))

# offload rode along on dp2_z2: a file reported, none left behind
grep -q "MiB of moments in the offload file" "$W/dp2_z2.log" \
    || fail "no offload file in the memory report"
[ -z "$(ls "$W/off")" ] || fail "offload files left behind: $(ls "$W/off")"
# the computed bytes at dp = 2 (the shard: half of every piece)
check "zero=1 halves the moments" "b <= 0.51 * a && b >= 0.49 * a" \
    "$(mem dp2_z0 4)" "$(mem dp2_z1 4)"
check "zero=2 halves the gradients" "b <= 0.51 * a && b >= 0.49 * a" \
    "$(mem dp2_z0 3)" "$(mem dp2_z2 3)"
check "zero=3: gradients the shard, parameters the shard plus slots" \
    "b == c && a - b <= $(mem dp2_z0 2) + 0.002" \
    "$(mem dp2_z3 2)" "$(mem dp2_z3 3)" "$(mem dp2_z2 3)"
pass=$((pass + 2))

# checkpoints in global shape, across stages and data-parallel widths:
# continue the dp2 runs from their step-5 checkpoints in another layout
resume_from() { # ref step np name options...: ref's first steps, then
               # the run's from ref's checkpoint at step, against ref's z0
    ref=$1 at=$2 np=$3 run=$4
    shift 4
    train "$np" "$run" --resume="$W/$ref/ckpt/step_0000000$at.h5" "$@"
    grep -q "resumed from .*step_0*$at.h5 at step $at" "$W/$run.log" \
        || { cat "$W/$run.log"; fail "$run did not resume at step $at"; }
    head -n "$at" "$W/$ref.loss" > "$W/$run.tmp"
    cat "$W/$run.loss" >> "$W/$run.tmp"
    mv "$W/$run.tmp" "$W/$run.loss"
    compare "${ref%_z*}_z0" "$run" || fail "$run differs"
    pass=$((pass + 1))
}
resume_from dp2_z0 5 2 ckpt_z0_to_z3 --dp=2 --zero=3
resume_from dp2_z3 5 2 ckpt_z3_to_z0 --dp=2 --zero=0
resume_from dp2_z3 5 4 ckpt_z3_dp2_to_dp4 --dp=4 --zero=3
# saved at step 3 (no validation before it) while zero=2's parameter
# all-gathers run behind the next forward, three ring steps at dp = 4:
# the save must complete them first, so it holds the bits of zero=3's
# (whose parameters come from the shards; a save of half-gathered
# parameters changes the loss by less than 1e-5)
for g in model optim; do
    h5diff -q "$W/dp4_z2/ckpt/step_00000003.h5" \
        "$W/dp4_z3/ckpt/step_00000003.h5" /$g /$g \
        || fail "zero=2's step-3 checkpoint differs from zero=3's in /$g"
done
echo "dp4_z2 checkpoint bitwise equal to dp4_z3's"
resume_from dp4_z2 3 2 ckpt_z2_dp4_to_dp2_z1 --dp=2 --zero=1

# refused at start-up, naming the key: an offload_dir that is a file
if $MPIRUN -np 1 "$MPITRON" train $M --offload=optimizer \
       --offload_dir="$W/text.txt" --run_dir="$W/bad" > "$W/bad.log" 2>&1; then
    fail "accepted offload_dir=$W/text.txt"
fi
grep -q "offload_dir $W/text.txt" "$W/bad.log" \
    || { cat "$W/bad.log"; fail "no error naming offload_dir"; }
pass=$((pass + 1))
echo "$pass passed, 0 failed"
