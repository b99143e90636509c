#!/bin/sh
# Tensor parallelism trains the same model as one rank: each of 10 steps'
# loss (dropout 0.1) is within relative 1e-5 of the serial run for tp = 2,
# tp = 4, dp = 2 x tp = 2 (n_head = n_kv_head = 4), and tp = 2 and
# dp = 2 x tp = 2 with grouped-query attention (n_head = 4, n_kv_head = 2),
# for LAMB with layer-wise learning-rate decay at tp = 2, and for linear and
# block-sparse attention at tp = 2 (grouped-query).
# A checkpoint written at tp = 2 resumes at tp = 1, and one written at
# tp = 1 resumes at tp = 2, both continuing within 1e-5 of the serial run.
. "$(dirname "$0")/equiv_lib.sh"

STEPS=10
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=32
   --batch_size=8 --steps=$STEPS --warmup_steps=3 --lr=3e-3 --dropout=0.1
   --log_every=1 --val_every=0 --ckpt_every=0 --bucket_mb=0.05"
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

# LAMB's trust ratio needs each tensor's norms over all its tp shards
# (summed over the tp group); with layer-wise learning rates too
train 1 lamb_serial --n_kv_head=4 --optimizer=lamb --lr_layer_decay=0.8
train 2 lamb_tp2 --n_kv_head=4 --optimizer=lamb --lr_layer_decay=0.8 --tp=2
compare lamb_serial lamb_tp2 || fail "LAMB at tp=2 differs"
pass=$((pass + 1))

# linear and block-sparse attention: each tp rank computes its own heads
for a in "linear --attn=linear" "sparse --attn=sparse --attn_block=8 --attn_stride=2"; do
    set -- $a
    name=$1
    shift
    train 1 ${name}_serial --n_kv_head=2 "$@"
    train 2 ${name}_tp2 --n_kv_head=2 --tp=2 "$@"
    compare ${name}_serial ${name}_tp2 || fail "attn=$name at tp=2 differs"
    pass=$((pass + 1))
done

# checkpoints do not depend on the tp layout: stop at step 5 under one,
# resume under the other, compare all 10 steps with the serial run
for pair in 2:1 1:2; do
    from=${pair%%:*} to=${pair#*:} run=ckpt_tp${from}to$to
    resume_run $run 5 "$from" "--n_kv_head=4 --tp=$from" \
        "$to" "--n_kv_head=4 --tp=$to"
    compare serial_kv4 $run || fail "$run differs"
    pass=$((pass + 1))
done
echo "$pass passed, 0 failed"
