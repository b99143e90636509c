#!/bin/sh
# Bad input through the mpitron binary: each case must exit non-zero with
# a message naming the key, value, file or path at fault.
set -u
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-cli.XXXXXX")
trap 'rm -rf "$W"' EXIT
pass=0 failed=0

# expect "what" "substring" command...
expect() {
    what=$1 want=$2
    shift 2
    "$@" > "$W/out" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && grep -qF -- "$want" "$W/out"; then
        pass=$((pass + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what: exit $rc, expected a message containing: $want"
        sed 's/^/    /' "$W/out"
    fi
}
# verdict "what" CHECK...: count a case whose output is in $W/out as
# passed when the command CHECK succeeds, else report it with the output
verdict() {
    what=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what"
        sed 's/^/    /' "$W/out"
    fi
}
train() { $MPIRUN -np 1 "$MPITRON" train "$@"; }

# a tiny valid corpus
printf 'hello world, this is a small corpus for mpitron tests.\n%.0s' \
    $(seq 1 200) > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null
T="--data=$W/data --n_layer=1 --n_embd=16 --n_head=2 --seq_len=16 --batch_size=2 --steps=2"

expect "unknown key" "did you mean 'n_embd'" train $T --n_embed=64
expect "bad integer" "'abc'" train $T --n_layer=abc
expect "n_embd % n_head" "n_embd=250 is not divisible by n_head=4" \
    train $T --n_embd=250 --n_head=4
expect "n_head % n_kv_head" "n_head=4 is not divisible by n_kv_head=3" \
    train $T --n_head=4 --n_kv_head=3
expect "n_kv_head > n_head" "n_kv_head=3 exceeds n_head=2" \
    train $T --n_head=2 --n_kv_head=3
expect "bad schedule" "lr_schedule" train $T --lr_schedule=triangle
expect "missing data dir" "$W/nope" train $T --data="$W/nope"
printf '[model]\nn_layer = 2\nn_embdd = 3\n' > "$W/bad.ini"
expect "ini unknown key" "bad.ini:3" train "$W/bad.ini" $T
expect "missing ini" "$W/missing.ini" train "$W/missing.ini" $T
expect "batch vs micro" "micro_batch" train $T --batch_size=4 --micro_batch=3
expect "bad pp schedule" "'pp_schedule' (command line): must be gpipe or 1f1b" \
    train $T --pp_schedule=zigzag
expect "bad precision" "'precision' (command line): must be fp32 or bf16" \
    train $T --precision=fp16
expect "bad fp32_gemm" "fp32_gemm" train $T --fp32_gemm=mkl
expect "bench gemm shape" "bad shape '12x3'" \
    $MPIRUN -np 1 "$MPITRON" bench gemm --sizes= --shapes=12x3
expect "pp > n_layer" "pp=2 exceeds n_layer=1" \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --pp=2
expect "layout vs world" "tp*pp = 1*2 = 2 does not divide the world size 3" \
    $MPIRUN -np 3 --oversubscribe "$MPITRON" train $T --n_layer=2 --pp=2

# placement and load balance
expect "bad bind" "'bind' (command line): must be auto, launcher or none" \
    train $T --bind=core
expect "bad balance" "'balance' (command line): must be off or on" \
    train $T --balance=yes
expect "pp_partition entries" "pp_partition=1,1,1 has 3 entries: it needs one per pipeline stage (pp=2)" \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --n_layer=3 --pp=2 \
    --pp_partition=1,1,1
expect "pp_partition sum" "pp_partition=1,1 places 2 blocks: it must place all n_layer=3" \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --n_layer=3 --pp=2 \
    --pp_partition=1,1
expect "pp_partition syntax" "'pp_partition' (command line): must be auto, params" \
    train $T --pp_partition=2,0
expect "straggler_ratio" "'straggler_ratio' (command line): must be > 1" \
    train $T --straggler_ratio=0.9
expect "debug_slow_rank syntax" "'debug_slow_rank' (command line): must be RANK:FACTOR" \
    train $T --debug_slow_rank=1
expect "debug_slow_rank rank" "debug_slow_rank=3:2: there is no rank 3 (world size 1)" \
    train $T --debug_slow_rank=3:2
expect "zero>=2 with balance=on" "balance=on with zero=2: ZeRO stages 2 and 3" \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --zero=2 --balance=on
expect "zero>=2 with rebalance_every" "rebalance_every=5 with zero=3" \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --zero=3 \
    --rebalance_every=5
expect "batch_ramp with balance=on" "batch_ramp=2:5 with balance=on: the batch plan's smaller or reshaped steps" \
    train $T --batch_ramp=2:5 --balance=on
expect "seq_len_warmup with rebalance_every" "seq_len_warmup=8:10 with rebalance_every=4" \
    train $T --seq_len_warmup=8:10 --rebalance_every=4
expect "micro_batch=auto with balance=on" "micro_batch=auto with balance=on" \
    train $T --micro_batch=auto --mem_budget_mb=100 --balance=on
expect "topo bad xml" "$W/nope.xml" "$MPITRON" topo --xml="$W/nope.xml"

# corrupt shards: bad magic, size that disagrees with the header
mkdir -p "$W/bad1" "$W/bad2"
cp "$W/data/train_000.bin" "$W/bad1/train_000.bin"
printf '\001\002\003\004' | dd of="$W/bad1/train_000.bin" bs=1 seek=0 \
    conv=notrunc 2>/dev/null
expect "bad magic" "bad1/train_000.bin" train $T --data="$W/bad1"
head -c 2000 "$W/data/train_000.bin" > "$W/bad2/train_000.bin"
expect "truncated shard" "bad2/train_000.bin" train $T --data="$W/bad2"

# tokenizers, mixtures, documents, batch plans (issue 15)
"$MPITRON" prepare --out "$W/bpe" --vocab_size=300 "$W/text.txt" > /dev/null
sed 's/^258 .*/258 97 999 "x"/' "$W/bpe/merges.txt" > "$W/m.txt"
mkdir -p "$W/bpe_bad" && cp "$W"/bpe/*.bin "$W/bpe_bad/" &&
    cp "$W/m.txt" "$W/bpe_bad/merges.txt"
expect "corrupt merges.txt" "bpe_bad/merges.txt:7: LEFT and RIGHT must be earlier token ids" \
    train $T --data="$W/bpe_bad"
expect "vocab vs merges.txt" "vocab_size=256, but the tokenizer" \
    train $T --data="$W/bpe" --vocab_size=256
expect "mixture of vocabularies" "hold different vocabularies" \
    train $T --data="$W/data:0.5,$W/bpe:0.5"
expect "mixture weight" "weight '-1' must be a positive number" \
    train $T --data="$W/data:-1"
mkdir -p "$W/nodocs" && cp "$W"/data/*.bin "$W/nodocs/"
expect "doc_mask without an index" "nodocs has no train.docs" \
    train $T --data="$W/nodocs" --doc_mask=1
expect "ramp in one micro-batch" "batch_ramp=1:5" train $T --batch_ramp=1:5
expect "seq_len_warmup start" "seq_len_warmup=5:10: START must be seq_len / 2^K" \
    train $T --seq_len_warmup=5:10
expect "linear with a window" "attn_window=4 applies to attn=full only" \
    train $T --attn=linear --attn_window=4
expect "bf16 with linear attention" "precision=bf16 with attn=linear" \
    train $T --precision=bf16 --attn=linear
expect "bf16 with sparse attention" "precision=bf16 with attn=sparse" \
    train $T --precision=bf16 --attn=sparse
expect "prepare vocab_size" "--vocab_size: must be in [256, 65535]" \
    "$MPITRON" prepare --out "$W/x" --vocab_size=70000 "$W/text.txt"

# resume: a checkpoint of another shape is refused with the keys that differ
train $T --run_dir="$W/run" > /dev/null 2>&1 || echo "setup run failed"
expect "shape mismatch" "n_embd" train $T --run_dir="$W/run" --n_embd=32
expect "resume path" "$W/none.h5" train $T --run_dir="$W/r2" --resume="$W/none.h5"
expect "sample unknown option" "did you mean '--tokens'" \
    $MPIRUN -np 1 "$MPITRON" sample --ckpt "$W/run" --tokenz=3
# a count whose buffer size would wrap around (it corrupted the heap)
expect "sample tokens bound" "0 <= tokens <= 2147483647" \
    $MPIRUN -np 1 "$MPITRON" sample --ckpt "$W/run" \
    --tokens=4611686018427387904
# resume=never over an earlier run's checkpoints (it overwrote them, and
# a later resume=auto took that run's newer ones)
expect "resume=never over checkpoints" "resume=never, but $W/run/ckpt already holds" \
    train $T --run_dir="$W/run" --resume=never
# the attention kind is part of the model, as attn_window is
expect "resume with another attn" "keys that differ (checkpoint -> this run): attn" \
    train $T --run_dir="$W/run" --attn=linear
# a val shard that is there but broken stops the run, naming it (it was
# dropped with a warning that named neither the file nor the reason)
cp -r "$W/data" "$W/badval"
head -c 3000 "$W/data/val_000.bin" > "$W/badval/val_000.bin"
expect "broken val shard" "$W/badval/val_000.bin" \
    train $T --data="$W/badval" --run_dir="$W/rbv"
# the same with the vocabulary given: no detection reads the shards first,
# the val split's own check must stop it
expect "broken val shard, vocab_size given" "val split: $W/badval/val_000.bin" \
    train $T --data="$W/badval" --run_dir="$W/rbv2" --vocab_size=256
# a seq_len beyond the train split fails before the start-up calibration
# (it came after it: at seq_len 20000 on this corpus 71 s and 12 GB of
# activations and scratch allocated before the error)
expect "seq_len beyond the split" "the train split has 9900 tokens, not more than 10001" \
    train $T --seq_len=10000 --run_dir="$W/rsl"
if grep -q "calibration\|memory per rank" "$W/out"; then
    failed=$((failed + 1))
    echo "FAIL: seq_len beyond the split: refused only after the start-up"
    sed 's/^/    /' "$W/out"
else
    pass=$((pass + 1))
fi
# a NUL byte in a config file (the parser stopped there, silently)
printf '[optim]\nsteps = 1\000\nsteps = abc\n' > "$W/nul.ini"
expect "ini NUL byte" "nul.ini:2: a NUL byte" train "$W/nul.ini" $T
# a bad allreduce_tune file at dp = 1 (it was read only at dp > 1)
printf 'small_max = lots\n' > "$W/bad.tune"
expect "allreduce_tune at dp 1" "$W/bad.tune:1" \
    train $T --allreduce_tune="$W/bad.tune"
expect "allreduce_tune missing" "$W/none.tune" \
    train $T --allreduce_tune="$W/none.tune"
# ranks given different allreduce_tune files (node-local files that
# differ): rank 0's thresholds rule, rank 1 says so, and the training is
# the same as with one file (ring on rank 0 and rhd on rank 1 exchanged
# mismatched messages without an error: other gradients, other losses)
printf 'small_max = 0\n' > "$W/ring.tune"
printf 'small_max = 1G\n' > "$W/rhd.tune"
TD="$T --batch_size=4 --steps=4 --ranks_per_node=1 --log_every=1"
$MPIRUN -np 2 --oversubscribe "$MPITRON" train $TD --run_dir="$W/tune1" \
    --allreduce_tune="$W/ring.tune" > "$W/tune1.log" 2>&1
$MPIRUN --oversubscribe -np 1 "$MPITRON" train $TD --run_dir="$W/tune2" \
    --allreduce_tune="$W/ring.tune" : -np 1 "$MPITRON" train $TD \
    --run_dir="$W/tune2" --allreduce_tune="$W/rhd.tune" > "$W/out" 2>&1
rc=$?
l1=$(grep -o '"loss":[^,]*' "$W/tune1/metrics.jsonl" 2>/dev/null)
l2=$(grep -o '"loss":[^,]*' "$W/tune2/metrics.jsonl" 2>/dev/null)
tune_ok() {
    [ $rc -eq 0 ] && [ -n "$l1" ] && [ "$l1" = "$l2" ] &&
    grep -q "rank 1: warning: allreduce_tune=$W/rhd.tune gives small_max 1073741824, hier_min 1048576 here; using the dp group's rank 0's 0, 1048576" "$W/out"
}
verdict "different allreduce_tune files: exit $rc, losses '$l1' / '$l2'" \
    tune_ok
# allreduce=shm with what it cannot serve (it was silently not used)
expect "allreduce=shm with zero" "allreduce=shm with zero=2: shm reduces the whole gradient arena" \
    train $T --allreduce=shm --zero=2
expect "allreduce=shm with compress" "allreduce=shm with compress=fp16" \
    train $T --allreduce=shm --compress=fp16
expect "allreduce=shm across nodes" "allreduce=shm: the gradients are not in shared memory (it needs every rank of the data-parallel group on one node" \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --batch_size=4 \
    --run_dir="$W/rshm0" --allreduce=shm --ranks_per_node=1
expect "allreduce=shm with zero=1 across nodes" "allreduce=shm: the gradients are not in shared memory (it needs every rank of the data-parallel group on one node" \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --batch_size=4 \
    --run_dir="$W/rshm1" --allreduce=shm --ranks_per_node=1 --zero=1
# allreduce=shm without its shared memory (the directory of its file
# missing): an error naming the file; auto warns, names the file and
# trains on with messages (the dp ranks' gradients in private memory)
expect "allreduce=shm without room" "allreduce=shm: shared memory $W/noshm/mpitron." \
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --batch_size=4 \
    --run_dir="$W/rshm" --allreduce=shm --shm_dir="$W/noshm"
$MPIRUN -np 2 --oversubscribe "$MPITRON" train $T --batch_size=4 \
    --run_dir="$W/rshm2" --shm_dir="$W/noshm" > "$W/out" 2>&1
rc=$?
noshm_ok() {
    [ $rc -eq 0 ] &&
    grep -q "warning: allreduce=auto: shared memory $W/noshm/mpitron\..*; reducing the gradients by messages instead" "$W/out" &&
    grep -q "gradient all-reduce: 1 bucket(s): r[a-z]* x1$" "$W/out" &&
    grep -q "step 2/2" "$W/out"
}
verdict "allreduce=auto without shared memory: exit $rc" noshm_ok
# a memory file system too small for the gradients (a container's
# /dev/shm): the reservation fails at start-up on every rank (not a SIGBUS
# mid-step), auto falls back, and the file is gone either way; needs a
# tmpfs mount (root with CAP_SYS_ADMIN), said and left out otherwise
mkdir -p "$W/tiny"
if mount -t tmpfs -o size=1m tmpfs "$W/tiny" 2> /dev/null; then
    G="--n_layer=2 --n_embd=256 --n_head=4" # 6.4 MB of gradients per rank
    expect "allreduce=shm, tmpfs full" "No space left on device" \
        $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T $G --batch_size=4 \
        --run_dir="$W/rtiny" --allreduce=shm --shm_dir="$W/tiny"
    $MPIRUN -np 2 --oversubscribe "$MPITRON" train $T $G --batch_size=4 \
        --run_dir="$W/rtiny2" --shm_dir="$W/tiny" > "$W/out" 2>&1
    rc=$?
    tiny_ok() {
        [ $rc -eq 0 ] && [ -z "$(ls -A "$W/tiny")" ] &&
        grep -q "reserving .* MiB per rank: No space left on device; reducing the gradients by messages" "$W/out"
    }
    verdict "auto with a full tmpfs: exit $rc, left: $(ls -A "$W/tiny")" \
        tiny_ok
    umount "$W/tiny"
else
    echo "note: no tmpfs mount here: the full-tmpfs cases are left out"
fi
expect "ckpt info on non-file" "$W/text.txt" \
    $MPIRUN -np 1 "$MPITRON" ckpt info "$W/text.txt"
expect "unknown command" "unknown command" "$MPITRON" frobnicate

echo "$pass passed, $failed failed"
[ $failed -eq 0 ]
