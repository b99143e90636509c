#!/bin/sh
# Chaos: a run on 2 ranks (dp = 2, dropout, topk compression with its
# per-rank residuals) with a checkpoint every step is killed N times -
# kill -9 of a random rank at a random moment (start-up, a step, a save,
# a metrics write) - and restarted with resume=auto each time, then run
# to its end.  Its per-step losses (metrics.jsonl, one history after the
# resumes) and its final checkpoint's tensors (the dataset checksums of
# the manifest) must equal an uninterrupted run's bit for bit.
#
#   CHAOS_N=50 CHAOS_STEPS=150 sh tests/chaos.sh   # the long form (README)
#
# make check runs the short form: N=3 kills over 40 steps.
set -u
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
# no MFU here: a peak given, not measured (seconds of start-up per run)
export MPITRON_PEAK_GFLOPS=50
N=${CHAOS_N:-3}
STEPS=${CHAOS_STEPS:-40}
MAXDELAY=${CHAOS_MAX_DELAY:-2.5}   # seconds: a kill comes within [0.2, this)
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-chaos.XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

awk 'BEGIN { for (i = 0; i < 3000; i++)
             printf "%d: kill a rank, any rank, %d times\n", i, i % 11 }' \
    > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=32
   --batch_size=8 --steps=$STEPS --warmup_steps=3 --lr=3e-3 --dropout=0.1
   --compress=topk:0.1 --log_every=1 --val_every=0 --ckpt_every=1
   --keep_last=3 --hang_timeout=120"
run() { $MPIRUN -np 2 --oversubscribe "$MPITRON" train $M --run_dir="$1"; }

run "$W/ref" > "$W/ref.log" 2>&1 || { cat "$W/ref.log"; fail "reference run"; }

seed=${CHAOS_SEED:-$$}
kills=0 restarts=0 last_start=0 t0=$(date +%s)
: > "$W/compared.log"
# the compared run must really be interrupted and resumed (a resume=auto
# that silently started from scratch would also end equal): after N kills,
# kills go on until it has resumed from a checkpoint (kills that all land
# before the first save leave nothing to resume from)
resumed() { grep -q "resumed from .* at step [1-9]" "$W/compared.log"; }
while [ $kills -lt "$N" ] || ! resumed; do
    [ $kills -lt $((N + 30)) ] ||
        fail "$kills kills and the compared run never resumed"
    restarts=$((restarts + 1))
    run "$W/chaos" > "$W/run.log" 2>&1 &
    mp=$!
    # a random moment in [0.2, MAXDELAY) s, a random rank, and whether the
    # moment counts from the launch (1 in 5: start-up, on a loaded machine
    # start-up alone can outlast MAXDELAY) or from the first step's start
    # (the "training" line: steps, saves, metrics writes) (awk's rand)
    set -- $(awk -v s=$((seed + restarts)) -v m="$MAXDELAY" \
             'BEGIN { srand(s); printf "%.2f %d %d\n", 0.2 + rand() * (m - 0.2),
                      int(rand() * 2), rand() < 0.2 }')
    if [ "$3" -eq 0 ]; then
        while kill -0 $mp 2>/dev/null &&
              ! grep -q "^training " "$W/run.log"; do
            sleep 0.1
        done
    fi
    sleep "$1"
    # the ranks (their command line starts with the binary; mpirun's and
    # this subshell's do not)
    pids=$(pgrep -f "^[^ ]*mpitron train .*--run_dir=$W/chaos" | sort -n)
    victim=$(echo "$pids" | awk -v k="$2" 'NF { p[n++] = $1 }
             END { if (n) print p[k % n] }')
    if [ -n "$victim" ] && kill -9 "$victim" 2>/dev/null; then
        kills=$((kills + 1))
        echo "kill $kills: rank pid $victim $1 s after the" \
             "$([ "$3" -eq 1 ] && echo launch || echo training line)" \
             >> "$W/kills.log"
    fi
    wait $mp
    cat "$W/run.log" >> "$W/chaos.log"
    cat "$W/run.log" >> "$W/compared.log" # this run_dir's history
    if [ -f "$W/chaos/ckpt/step_$(printf %08d "$STEPS").h5" ] &&
       { [ $kills -lt "$N" ] || ! resumed; }; then
        # it finished before the Nth kill: the kills go on in a new run
        # (only the last run is compared; see "kills in it" below)
        rm -rf "$W/chaos"
        : > "$W/compared.log"
        echo "finished early: a new run" >> "$W/kills.log"
        last_start=$kills
    fi
done
while ! [ -f "$W/chaos/ckpt/step_$(printf %08d "$STEPS").h5" ]; do
    run "$W/chaos" > "$W/run.log" 2>&1 ||
        { tail -n 30 "$W/run.log"; fail "the final restart failed"; }
    cat "$W/run.log" >> "$W/chaos.log"
    cat "$W/run.log" >> "$W/compared.log"
done
echo "$kills kills ($((kills - last_start)) in the compared run," \
     "$(grep -c 'launch$' "$W/kills.log") of them in start-up)," \
     "$restarts restarts in $(( $(date +%s) - t0 )) s"

jq -r 'select(has("loss")) | "\(.step) \(.loss)"' "$W/ref/metrics.jsonl" \
    > "$W/a"
jq -r 'select(has("loss")) | "\(.step) \(.loss)"' "$W/chaos/metrics.jsonl" \
    > "$W/b" || fail "metrics.jsonl of the chaos run is not JSON"
[ "$(wc -l < "$W/a")" -eq "$STEPS" ] || fail "reference: $(wc -l < "$W/a") lines"
cmp -s "$W/a" "$W/b" || { diff "$W/a" "$W/b" | head; fail "losses differ"; }
f=step_$(printf %08d "$STEPS").h5.manifest
awk '$1 == "dataset" { print $2, $5 }' "$W/ref/ckpt/$f" > "$W/ta"
awk '$1 == "dataset" { print $2, $5 }' "$W/chaos/ckpt/$f" > "$W/tb"
[ -s "$W/ta" ] && cmp -s "$W/ta" "$W/tb" ||
    { diff "$W/ta" "$W/tb" | head; fail "final tensors differ"; }
grep -c "resumed from" "$W/chaos.log" | sed 's/^/resumes: /'
resumed || fail "the compared run never resumed from a checkpoint"
echo "ok: $STEPS steps' losses and the final tensors bitwise equal to the uninterrupted run"
