#!/bin/sh
# scaling_sweep.sh - jobs/scaling.sh end to end on a tiny model (no timing
# asserts), and layout=auto:
#  - five points (1 rank; 2 ranks dp with ZeRO-1, tp; weak 1 and 2 ranks)
#    with a quick calibration: scaling.csv has the issue's columns in order, one row
#    per point; speedup, efficiency and model_error are what their
#    definitions give from the row's own numbers; the weak point's batch
#    doubled; a PNG (by its signature), the markdown table, a progress
#    line per point, and `predict --measured`'s mean absolute error equal
#    to the mean of the rows' |model_error|;
#  - layout=auto in train with a hand-written calibration in which tensor
#    parallelism is by far the fastest picks tp=2 (the banner says so);
#  - predict's errors: no calibration option, a missing file.
# About 20 s on 2 cores.
set -u
top=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
MPITRON=${MPITRON:-$top/mpitron}
MPIRUN=${MPIRUN:-mpirun}
export MPITRON
W=$(mktemp -d /tmp/mpitron-scaling.XXXXXX)
trap 'rm -rf "$W"' EXIT
pass=0 failed=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

cat > "$W/spec" << 'SPEC'
mode=strong ranks=1 micro_batch=2
mode=strong ranks=2 dp=2 micro_batch=2 zero=1
mode=strong ranks=2 tp=2 micro_batch=2
mode=weak ranks=1 micro_batch=2
mode=weak ranks=2 dp=2 micro_batch=2
SPEC
M="--n_layer=2 --n_embd=32 --n_head=2 --seq_len=16 --batch_size=4"
# shellcheck disable=SC2086
ATTEMPTS=1 bash "$top/jobs/scaling.sh" --spec="$W/spec" --out="$W/out" --steps=1 \
    --quick $M > "$W/log" 2>&1
rc=$?
CSV=$W/out/scaling.csv
cols="ranks,nodes,ranks_per_node,dp,tp,pp,micro_batch,global_batch,compress,allreduce,tokens_per_s,mfu,ms_step,ms_compute,ms_comm_exposed,bubble,speedup,efficiency,predicted_ms_step,model_error"
if [ $rc -eq 0 ] && [ "$(head -n 1 "$CSV" | cut -d, -f1-20)" = "$cols" ] &&
   [ "$(tail -n +2 "$CSV" | wc -l)" -eq 5 ]; then
    ok "scaling.csv: the issue's columns, 5 points"
else
    bad "scaling.sh (exit $rc)"; cat "$W/log"; head -n 3 "$CSV"
fi
# every row: numbers where numbers belong, the definitions hold
if tail -n +2 "$CSV" | awk -F, '
    NR == 1 { bt = $11; br = $1 }
    $21 == "weak" && !wb { wt = $11; wr = $1; wb = $8 }
    { t0 = $21 == "weak" ? wt : bt; r0 = $21 == "weak" ? wr : br
      s = $11 / t0; e = s * r0 / $1; me = ($19 - $13) / $13
      if ($13 <= 0 || $19 <= 0 || $11 <= 0) bad = bad " nonpositive@" NR
      # the CSV holds 4 decimals
      if (abs($17 - s) > 1e-3 * s + 1e-4) bad = bad " speedup@" NR
      if (abs($18 - e) > 1e-3 * e + 1e-4) bad = bad " efficiency@" NR
      if (abs($20 - me) > 1e-3 * (abs(me) + 1)) bad = bad " error@" NR
      if ($1 != $4 * $5 * $6) bad = bad " layout@" NR }
    function abs(x) { return x < 0 ? -x : x }
    END { if (bad || NR != 5) { print bad, NR; exit 1 } }'; then
    ok "speedup, efficiency and model_error follow from each row"
else
    bad "row arithmetic"; cat "$CSV"
fi
[ "$(sed -n 4p "$CSV" | cut -d, -f8)" = 4 ] &&
    [ "$(sed -n 5p "$CSV" | cut -d, -f8)" = 4 ] &&
    [ "$(sed -n 6p "$CSV" | cut -d, -f8,21)" = 8,weak ] &&
    ok "global batch: 4 for strong points, doubled by the weak 2 ranks" ||
    bad "global batch column"
[ "$(sed -n 3p "$CSV" | cut -d, -f27)" = 1 ] &&
    grep -q '^| 2 | 1 | 2 | 1 | 1 | 2 | none | auto | 1 |' "$W/out/model.md" &&
    ok "the ZeRO-1 point: zero=1 in the CSV, predicted as such" ||
    { bad "zero column"; sed -n 3p "$CSV"; cat "$W/out/model.md"; }
sig=$(od -An -tx1 -N8 "$W/out/scaling.png" 2> /dev/null | tr -d ' \n')
[ "$sig" = 89504e470d0a1a0a ] && ok "scaling.png is a PNG" ||
    bad "scaling.png ($sig)"
[ "$(grep -c '^| strong \|^| weak ' "$W/out/scaling.md")" -eq 5 ] &&
    grep -q "Mean absolute error" "$W/out/scaling.md" &&
    ok "scaling.md: a row per point and the model's error" ||
    { bad "scaling.md"; cat "$W/out/scaling.md"; }
[ "$(grep -c '^\[[1-5]/5\] ' "$W/log")" -eq 5 ] &&
    ok "a progress line per point" || bad "progress lines"
mae=$(sed -n 's/.*"mean_abs_error":\([0-9.]*\).*/\1/p' "$W/out/model.md")
awk -F, -v m="${mae:-x}" 'NR > 1 { s += $20 < 0 ? -$20 : $20; n++ }
    END { exit !(m != "x" && (s / n - m < 1e-3 && m - s / n < 1e-3)) }' \
    "$CSV" && ok "predict --measured: mean absolute error $mae" ||
    bad "mean absolute error '$mae'"

# layout=auto with a calibration in which tp=2 is by far the fastest
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
shape="n_embd=32 n_head=2 n_kv_head=2 seq_len=16 vocab_size=256 attn_window=0"
cat > "$W/cal" << CAL
mpitron-perf-calib 1
cores 2
mem_mb 16000
compute $shape tp=1 load=2 threads=1 mb=1 block=0.1 block_fwd=0.04 embed=0.001 embed_fwd=0.0004 head=0.002 head_fwd=0.001
compute $shape tp=2 load=2 threads=1 mb=1 block=0.001 block_fwd=0.0004 embed=0.001 embed_fwd=0.0004 head=0.002 head_fwd=0.001
comm kind=ring level=0 p=2 load=2 a=1e-5 b=1e-9
optim load=2 per_param=1e-9
CAL
"$MPITRON" prepare --out "$W/data" "$top/README.md" > /dev/null 2>&1
# shellcheck disable=SC2086
$MPIRUN -np 2 --oversubscribe "$MPITRON" train $M --data="$W/data" \
    --steps=2 --val_every=0 --run_dir="$W/run" --layout=auto \
    --perf_calib="$W/cal" > "$W/auto.log" 2>&1
if grep -q '^  \* dp=1 tp=2 pp=1' "$W/auto.log" &&
   grep -q 'tp 1/2' "$W/auto.log" && grep -q '^step 2/2' "$W/auto.log"; then
    ok "layout=auto picks the fastest predicted layout (tp=2) and trains"
else
    bad "layout=auto"; cat "$W/auto.log"
fi
"$MPITRON" predict $M > "$W/e1.log" 2>&1
r1=$?
"$MPITRON" predict --calib="$W/none" $M > "$W/e2.log" 2>&1
r2=$?
if [ $r1 -eq 2 ] && grep -q "exactly one of --calibrate" "$W/e1.log" &&
   [ $r2 -eq 1 ] && grep -q "$W/none" "$W/e2.log"; then
    ok "predict: usage error, a missing calibration named"
else
    bad "predict errors ($r1, $r2)"; cat "$W/e1.log" "$W/e2.log"
fi
echo "$pass passed, $failed failed"
[ $failed -eq 0 ]
