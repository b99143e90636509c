#!/bin/sh
# `mpitron topo` through the binary:
#  - a saved 2-package x 2-NUMA x 8-core topology (tests/topo/): the
#    tree's counts, and the plan for 4 ranks as JSON, one NUMA node each;
#  - this machine under mpirun -np 2 --bind-to none: both ranks reported
#    unbound, the cores they share named, and a plan of disjoint cores;
#    with --bind-to core (on a machine of at least 2 cores) no core shared;
#  - --calibrate: every rank's figures after binding;
#  - --export writes XML that --xml reads back to the same report: the
#    whole text and JSON documents compared (but the source and this
#    launch's bindings).
set -eu
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
top=${top_srcdir:-.}
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-topo.XXXXXX")
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; sed 's/^/    /' "$W/out"; exit 1; }
has() { grep -qF -- "$1" "$W/out" || fail "no '$1'"; }

X="$top/tests/topo/2pkg-2numa-8core.xml"
"$MPITRON" topo --xml="$X" --np=4 > "$W/out"
has "2 package(s), 4 NUMA node(s), 8 L3 group(s), 32 core(s), 32 PU(s)"
has "rank 3: cores 24-31 (PUs 24-31), NUMA 3, L3 6-7; 8 BLAS + 8 OpenMP"
"$MPITRON" topo --xml="$X" --np=4 --json > "$W/out"
has '"np":4,"bind":"auto","threads_total":32,"oversubscribed":false'
has '{"rank":1,"cores":[8,9,10,11,12,13,14,15],"pus":[8,9,10,11,12,13,14,15],"numa":[1]'
"$MPITRON" topo --xml="$X" --np=64 > "$W/out"
has "64 thread(s) on 32 core(s): OVERSUBSCRIBED"

$MPIRUN -np 2 --oversubscribe --bind-to none "$MPITRON" topo > "$W/out"
has "rank 0  host "
has "rank 1  host "
[ "$(grep -c 'unbound (every PU of the node)' "$W/out")" -eq 2 ] \
    || fail "both ranks should be unbound"
grep -q "cores shared by several ranks: none" "$W/out" \
    && fail "unbound ranks share every core"
has "this node's ranks as launched"
ncores=$(sed -n 's/.* \([0-9]*\) core(s), [0-9]* PU(s)$/\1/p' "$W/out")
[ -n "$ncores" ] || fail "no core count in topo's output"
if [ "$ncores" -ge 2 ]; then
    c0=$(sed -n 's/^  rank 0: cores \([0-9,-]*\) .*/\1/p' "$W/out")
    c1=$(sed -n 's/^  rank 1: cores \([0-9,-]*\) .*/\1/p' "$W/out")
    [ -n "$c0" ] && [ "$c0" != "$c1" ] || fail "plan: $c0 and $c1"
    $MPIRUN -np 2 --bind-to core "$MPITRON" topo > "$W/out"
    has "cores shared by several ranks: none"
    has "keeps the launcher's binding"
fi

$MPIRUN -np 2 --oversubscribe "$MPITRON" topo --calibrate --n_layer=2 \
    --n_embd=32 --n_head=2 --seq_len=16 --micro_batch=2 > "$W/out"
[ "$(grep -c 'calibration (' "$W/out")" -eq 2 ] || fail "calibration"
has "per micro-batch of 2: block "

# train itself, launched as the issue's new user would (--bind-to none, no
# thread variable exported; run-test.sh exports both): each rank binds
# itself to cores no other rank holds and sizes both pools to them
awk 'BEGIN { for (i = 0; i < 400; i++) printf "%d: bind me %d\n", i, i % 7 }' \
    > "$W/t.txt"
"$MPITRON" prepare --out "$W/data" "$W/t.txt" > /dev/null
env -u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS MPITRON_PEAK_GFLOPS=50 \
    $MPIRUN -np 2 --oversubscribe --bind-to none "$MPITRON" train \
    --data="$W/data" --n_layer=1 --n_embd=32 --n_head=2 --seq_len=16 \
    --batch_size=4 --steps=1 --val_every=0 --run_dir="$W/run" > "$W/out" 2>&1 \
    || fail "train under --bind-to none"
[ "$(grep -c '; bound by mpitron (the launcher left it unbound)' "$W/out")" \
    -eq 2 ] || fail "train: both ranks should bind themselves"
# cores of each rank, expanded ("0-2,5" -> 0 1 2 5), and its pool sizes
grep '^rank [01]  host .*: cores ' "$W/out" | awk -v ncores="$ncores" '
    { r = $2; sub(/.*: cores /, ""); list = $1; n = split(list, part, ",")
      k = 0
      for (i = 1; i <= n; i++) {
          if (split(part[i], ab, "-") == 2) for (c = ab[1]; c <= ab[2]; c++) { k++; own[c]++ }
          else { k++; own[part[i]]++ }
      }
      match($0, /threads [0-9]+ BLAS/); b = substr($0, RSTART + 8, RLENGTH - 13)
      match($0, /\+ [0-9]+ OpenMP/); o = substr($0, RSTART + 2, RLENGTH - 9)
      if (b + 0 != k || o + 0 != k) { print "rank " r ": " k " cores but " b " BLAS + " o " OpenMP"; bad = 1 }
      ranks++ }
    END { for (c in own) if (own[c] > 1 && ncores >= 2) { print "core " c " held by " own[c] " ranks"; bad = 1 }
          if (ranks != 2) { print ranks " banner lines"; bad = 1 }
          exit bad }' || fail "train: cores and thread pools"

# --export's XML read back with --xml: the whole report, as text and as
# JSON, for a 2-rank plan, is the live machine's but for the source's name
# and the live-only "bindings as launched" section (ranks of this launch)
"$MPITRON" topo --export="$W/node.xml" --np=2 > "$W/a"
[ -s "$W/node.xml" ] || { : > "$W/out"; fail "export wrote nothing"; }
"$MPITRON" topo --xml="$W/node.xml" --np=2 > "$W/b"
live_only() { sed '1s/^topology of [^:]*://' "$1" |
              awk '/^bindings as launched:/ { skip = 1; next }
                   skip && /^  / { next } { skip = 0; print }'; }
live_only "$W/a" > "$W/a1"
live_only "$W/b" > "$W/b1"
[ "$(grep -c '^  rank [01]: cores ' "$W/a1")" -eq 2 ] &&
    [ "$(wc -l < "$W/a1")" -ge 5 ] && cmp -s "$W/a1" "$W/b1" ||
    { diff "$W/a1" "$W/b1" > "$W/out" || :; fail "export (text)"; }
"$MPITRON" topo --export="$W/node2.xml" --np=2 --json > "$W/a"
"$MPITRON" topo --xml="$W/node2.xml" --np=2 --json > "$W/b"
# the live document's "ranks" (this launch's bindings) holds no array
live_json() {
    sed 's/^{"source":"[^"]*",/{/; s/"ranks":\[[^]]*\],"plan"/"plan"/' "$1"
}
live_json "$W/a" > "$W/a1"
live_json "$W/b" > "$W/b1"
grep -q '"topology":{"packages":[1-9]' "$W/a1" &&
    grep -q '"plan":{"np":2,' "$W/a1" && cmp -s "$W/a1" "$W/b1" ||
    { cat "$W/a1" "$W/b1" > "$W/out"; fail "export (JSON)"; }
echo "topo: all passed"
