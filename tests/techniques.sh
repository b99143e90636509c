#!/bin/sh
# The training techniques of issue 15, end to end through the binary, each
# against an independent reference:
#  1. batch_ramp and seq_len_warmup: a step's data is a function of (seed,
#     step), so dp = 2 and pp = 2 (a pipeline schedule per micro-batch
#     count) train the same model as one rank, every loss within 1e-5;
#     each step's tokens and sequence length are the plan worked out by
#     hand below; a run stopped mid-ramp resumes bit for bit;
#  2. a weighted data mixture reports a validation loss per directory, and
#     val_loss is their mean weighted 0.7 / 0.3;
#  3. byte-level data: val_bpb is val_loss / ln 2 exactly; BPE data
#     (prepare --vocab_size=320): train takes the vocabulary from the
#     directory, val_bpb is val_loss / ln 2 over the bytes per token
#     (within 10% of the corpus' ratio that prepare prints), and sample
#     decodes BPE tokens to text; the same shards without merges.txt are
#     refused (not taken for GPT-2's);
#  4. llm.c-style GPT-2 shards (tokens up to 50256, no tokenizer) train
#     with the vocabulary 50257 padded to 50304 rows of wte, the first loss
#     within 0.05 of ln 50257; sample refuses them, naming --tokenizer;
#  5. doc_mask=1 on two-line documents: dp = 2 and pp = 2
#     train the same model as one rank (losses and validation within
#     1e-5), and the mask changes the run;
#  6. micro_batch=auto at pp = 2: with a budget between the computed
#     totals of micro_batch=2 and 4 (fixed runs' bench step reports) it
#     picks 2 and reaches exactly that total; below micro_batch=1's total
#     it refuses, naming mem_budget_mb; a fixed micro_batch above the
#     budget is refused;
#  7. lr_layer_decay under zero=2 (its sharded update) at dp = 2 trains as
#     zero=0 does, and attn=sparse with doc_mask and recompute=full as
#     recompute=none does (losses within 1e-5).
. "$(dirname "$0")/equiv_lib.sh"

STEPS=12
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
   --seq_len=32 --batch_size=8 --steps=$STEPS --warmup_steps=3 --lr=3e-3
   --dropout=0.1 --log_every=1 --val_every=0 --ckpt_every=0
   --bucket_mb=0.05 --batch_ramp=2:8 --seq_len_warmup=8:6"
pass=0

# 1. The plan (micro-batches of 2 full-length sequences per rank at dp=1):
# ramp 2 + 6 s / 8 down to even: 2 2 2 4 4 4 6 6 then 8; lengths 8 for
# steps 0-2, 16 for 3-5, then 32; tokens = ramp * 32.
train 1 serial --micro_batch=2
train 2 dp2 --micro_batch=1
train 2 pp2 --micro_batch=2 --pp=2
for run in dp2 pp2; do
    compare serial $run || fail "$run differs from one rank"
    pass=$((pass + 1))
done
grep '"loss"' "$W/serial/metrics.jsonl" |
    sed 's/.*"step":\([0-9]*\),.*"tokens":\([0-9]*\),"seq_len":\([0-9]*\).*/\1 \2 \3/' \
    > "$W/plan.got"
awk 'BEGIN { for (s = 0; s < 12; s++) {
        r = s < 8 ? 2 + int(6 * s / 8) : 8; r -= r % 2;
        t = s < 3 ? 8 : s < 6 ? 16 : 32;
        print s + 1, r * 32, t } }' > "$W/plan.want"
diff "$W/plan.want" "$W/plan.got" || fail "tokens and seq_len differ from the plan"
pass=$((pass + 1))
resume_run split 4 1 "--micro_batch=2" 1 "--micro_batch=2"
diff "$W/serial.loss" "$W/split.loss" || fail "the resumed ramp differs"
pass=$((pass + 1))

# 2. A mixture of the corpus and a second one
awk 'BEGIN { for (i = 0; i < 2000; i++)
             printf "%d + %d = %d; ", i % 97, i % 13, i % 97 + i % 13 }' \
    > "$W/sums.txt"
"$MPITRON" prepare --out "$W/sums" "$W/sums.txt" > /dev/null
MIX="--data=$W/data:0.7,$W/sums:0.3 --n_layer=1 --n_embd=32 --n_head=2
     --seq_len=32 --batch_size=8 --steps=6 --log_every=6 --val_batches=2"
$MPIRUN -np 1 "$MPITRON" train $MIX --run_dir="$W/mix" > "$W/mix.log" 2>&1 \
    || { cat "$W/mix.log"; fail "mixture run"; }
line=$(grep '"val_loss_data"' "$W/mix/metrics.jsonl" | tail -n 1)
echo "$line" | awk -v a="$W/data" -v b="$W/sums" '{
    v = $0; sub(/.*"val_loss":/, "", v); sub(/,.*/, "", v);
    o = $0; sub(/.*"val_loss_data":[{]/, "", o); sub(/[}].*/, "", o);
    x = o; sub(".*\"" a "\":", "", x); sub(/,.*/, "", x);
    y = o; sub(".*\"" b "\":", "", y); sub(/,.*/, "", y);
    w = 0.7 * x + 0.3 * y; d = v - w; if (d < 0) d = -d;
    printf "mixture: val_loss %s = 0.7 x %s + 0.3 x %s\n", v, x, y;
    exit !(x > 0 && y > 0 && x != y && d <= 1e-12 * v) }' \
    || fail "val_loss is not the weighted mean of val_loss_data: $line"
pass=$((pass + 1))

# 3. Bits per byte: bytes, then BPE
SMALL="--n_layer=1 --n_embd=32 --n_head=2 --seq_len=32 --batch_size=8
       --steps=6 --log_every=6 --val_batches=2"
bpb() { # run dir: prints "val_loss val_bpb"
    grep '"val_bpb"' "$1/metrics.jsonl" | tail -n 1 | sed \
        's/.*"val_loss":\([^,]*\),"val_bpb":\([^,}]*\).*/\1 \2/'
}
$MPIRUN -np 1 "$MPITRON" train $SMALL --data="$W/data" --run_dir="$W/bytes" \
    > "$W/bytes.log" 2>&1 || { cat "$W/bytes.log"; fail "bytes run"; }
# (each check in END: no line at all fails too)
bpb "$W/bytes" | awk '{ d = $2 - $1 / log(2); if (d < 0) d = -d;
    ok = NF == 2 && d <= 1e-6 * $2 }
    END { exit !(NR == 1 && ok) }' || fail "byte-level val_bpb"
"$MPITRON" prepare --out "$W/bpe" --vocab_size=320 "$W/text.txt" \
    > "$W/bpe_prep.log" || fail "prepare --vocab_size=320"
ratio=$(sed -n 's/.*, \([0-9.]*\) bytes per token.*/\1/p' "$W/bpe_prep.log")
$MPIRUN -np 1 "$MPITRON" train $SMALL --data="$W/bpe" --run_dir="$W/bpe_run" \
    > "$W/bpe.log" 2>&1 || { cat "$W/bpe.log"; fail "BPE run"; }
grep -q "vocabulary 320" "$W/bpe.log" || fail "BPE vocabulary not taken from the data"
# the same shards without their merges.txt are not taken for GPT-2's
# (they were: vocabulary 50257 and a model 150x too wide for them)
cp -r "$W/bpe" "$W/bpe_lost" && rm "$W/bpe_lost/merges.txt"
! $MPIRUN -np 1 "$MPITRON" train $SMALL --data="$W/bpe_lost" \
    --run_dir="$W/bpe_lost_run" > "$W/bpe_lost.log" 2>&1 \
    || fail "BPE shards without merges.txt trained"
grep -q "$W/bpe_lost: tokens up to [0-9]* and no merges.txt, which .mpitron prepare. writes" \
    "$W/bpe_lost.log" || { cat "$W/bpe_lost.log"; fail "lost merges.txt: message"; }
bpb "$W/bpe_run" | awk -v r="$ratio" '{ e = $1 / log(2) / r;
    printf "BPE: val_loss %s, %s bits per byte (%.3f at %s bytes/token)\n",
        $1, $2, e, r;
    ok = r > 1.5 && $2 < $1 / log(2) && $2 > 0.9 * e && $2 < 1.1 * e }
    END { exit !(NR == 1 && ok) }' || fail "BPE val_bpb"
$MPIRUN -np 1 "$MPITRON" sample --ckpt "$W/bpe_run" --prompt="the quick" \
    --tokens=30 --seed=2 > "$W/bpe_sample.txt" 2>&1 \
    || { cat "$W/bpe_sample.txt"; fail "sample with BPE"; }
head -c 9 "$W/bpe_sample.txt" | grep -q "the quick" || fail "sample prompt"
[ "$(tr -cd 'a-z ' < "$W/bpe_sample.txt" | wc -c)" -ge 20 ] \
    || fail "BPE sample decoded to little text: $(cat "$W/bpe_sample.txt")"
pass=$((pass + 1))

# 4. GPT-2 shards as llm.c writes them: header of 256 int32, uint16 tokens
shard() { # file ntok seed
    awk -v n="$2" -v s="$3" 'function b(x) { printf "\\%03o", x % 256 }
        function i32(x) { b(x); b(int(x / 256)); b(int(x / 65536));
                          b(int(x / 16777216)) }
        BEGIN { i32(20240520); i32(1); i32(n); for (k = 3; k < 256; k++) i32(0);
                srand(s);
                for (k = 0; k < n; k++) {
                    t = k % 50 == 0 ? 50256 : int(rand() * 50257);
                    b(t); b(int(t / 256)) } }' > "$W/esc"
    printf "$(cat "$W/esc")" > "$1"
}
mkdir -p "$W/gpt2"
shard "$W/gpt2/train_000.bin" 3000 1
shard "$W/gpt2/val_000.bin" 600 2
G="--data=$W/gpt2 --n_layer=1 --n_embd=32 --n_head=2 --seq_len=16
   --batch_size=4 --steps=3 --log_every=1 --val_batches=1"
$MPIRUN -np 1 "$MPITRON" train $G --run_dir="$W/g2" > "$W/g2.log" 2>&1 \
    || { cat "$W/g2.log"; fail "GPT-2 shards"; }
grep -q "vocabulary 50257" "$W/g2.log" || fail "GPT-2 vocabulary"
"$MPITRON" ckpt info "$W/g2" | grep -q '/model/wte *(50304,32)' \
    || fail "wte is not padded to 50304 rows"
grep '"step":1,' "$W/g2/metrics.jsonl" | sed 's/.*"loss":\([^,]*\),.*/\1/' |
    awk '{ d = $1 - log(50257); if (d < 0) d = -d;
           printf "GPT-2 shards: first loss %s, ln 50257 = %.4f\n", $1,
                  log(50257); ok = d < 0.05 }
         END { exit !(NR == 1 && ok) }' || fail "GPT-2 first loss"
! $MPIRUN -np 1 "$MPITRON" sample --ckpt "$W/g2" > "$W/g2s.log" 2>&1 \
    || fail "sample decoded a vocabulary it has no tokenizer for"
grep -q -- "--tokenizer" "$W/g2s.log" || { cat "$W/g2s.log"; fail "sample's message"; }
pass=$((pass + 1))

# 5. doc_mask over two-line documents between "%" lines (fortunes'
# format): dp = 2 and pp = 2 train as one rank does with the mask on, and
# the mask changes the run
awk '{ print } NR % 2 == 0 { print "%" }' "$W/text.txt" > "$W/docs.txt"
"$MPITRON" prepare --out "$W/docs" "$W/docs.txt" > /dev/null
M="--data=$W/docs --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
   --seq_len=32 --batch_size=8 --micro_batch=2 --steps=6 --warmup_steps=2
   --lr=3e-3 --log_every=1 --val_every=3 --ckpt_every=0 --bucket_mb=0.05"
STEPS=6
train 1 doc_serial --doc_mask=1
train 2 doc_dp2 --doc_mask=1 --micro_batch=1
train 2 doc_pp2 --doc_mask=1 --pp=2
for run in doc_dp2 doc_pp2; do
    compare doc_serial $run || fail "doc_mask: $run differs"
    pass=$((pass + 1))
done
train 1 doc_off
! cmp -s "$W/doc_serial.loss" "$W/doc_off.loss" || fail "doc_mask changed nothing"

# 6. micro_batch=auto against the computed totals of fixed micro-batches
A="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=64
   --batch_size=16 --pp=2 --threads=1 --bench_steps=1 --bench_warmup=0"
bench_mem() { # name keys...: the largest computed_mb over the ranks
    n=$1; shift
    $MPIRUN -np 2 --oversubscribe "$MPITRON" bench step $A "$@" \
        > "$W/$n.bench" 2>&1 || { cat "$W/$n.bench"; fail "bench $n"; }
    tail -n 1 "$W/$n.bench" | tr ',' '\n' |
        sed -n 's/.*"computed_mb":\([0-9.]*\).*/\1/p' | sort -g | tail -n 1
}
c1=$(bench_mem mb1 --micro_batch=1)
c2=$(bench_mem mb2 --micro_batch=2)
c4=$(bench_mem mb4 --micro_batch=4)
budget=$(awk -v a="$c2" -v b="$c4" 'BEGIN { x = int(b); if (x == b) x--;
    exit !(x >= a) } END { print x }' < /dev/null) \
    || fail "no whole MiB between $c2 and $c4"
ca=$(bench_mem auto --micro_batch=auto --mem_budget_mb="$budget")
echo "micro_batch=auto: budget $budget MiB, picked $ca MiB" \
     "(micro_batch 1, 2, 4: $c1, $c2, $c4 MiB)"
grep -q '"micro_batches":8' "$W/auto.bench" || fail "auto did not pick 2"
[ "$ca" = "$c2" ] || fail "auto's total $ca is not micro_batch=2's $c2"
low=$(awk -v a="$c1" 'BEGIN { print int(a) - (int(a) == a) }')
! $MPIRUN -np 2 --oversubscribe "$MPITRON" bench step $A --micro_batch=auto \
    --mem_budget_mb="$low" > "$W/low.log" 2>&1 || fail "auto under budget"
grep -q "even micro_batch=1 needs .* above mem_budget_mb=$low" "$W/low.log" \
    || { cat "$W/low.log"; fail "auto's refusal"; }
! $MPIRUN -np 2 --oversubscribe "$MPITRON" bench step $A --micro_batch=4 \
    --mem_budget_mb="$budget" > "$W/over.log" 2>&1 || fail "mb=4 over budget"
grep -q "exceeds mem_budget_mb=$budget" "$W/over.log" \
    || { cat "$W/over.log"; fail "the budget's refusal"; }
pass=$((pass + 1))

# 7. lr_layer_decay through ZeRO's sharded update; recomputation of
# block-sparse attention over documents
M="--data=$W/docs --n_layer=2 --n_embd=64 --n_head=4 --n_kv_head=2
   --seq_len=32 --batch_size=8 --steps=6 --warmup_steps=2 --lr=3e-3
   --log_every=1 --val_every=3 --ckpt_every=0 --lr_layer_decay=0.7"
train 2 decay_dp2
train 2 decay_zero2 --zero=2
compare decay_dp2 decay_zero2 || fail "lr_layer_decay under zero=2 differs"
pass=$((pass + 1))
M="$M --attn=sparse --attn_block=8 --attn_stride=2 --doc_mask=1"
train 1 sparse_none
train 1 sparse_full --recompute=full
compare sparse_none sparse_full || fail "recompute=full with attn=sparse differs"
pass=$((pass + 1))
echo "$pass passed, 0 failed"
