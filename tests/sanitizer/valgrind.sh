#!/bin/sh
# A valgrind memcheck pass over one short training run (not part of make
# check: it takes minutes; its result is in the README).  valgrind 3.19
# does not decode AVX-512, so mpitron is built once more without
# -march=native (build-vg/, a VPATH build of a `make distdir` copy) and
# OpenBLAS is held to its AVX2 kernels (OPENBLAS_CORETYPE=Haswell).  Two
# ranks (dp = 2: the gradient buckets, checkpoints, validation, resume)
# each run under memcheck with Open MPI's suppression file; prints each
# rank's error summary and the errors whose stacks reach mpitron's code.
#   VG_DIR=build-vg (default)
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
B=$top/${VG_DIR:-build-vg}
rm -rf "$B"
mkdir -p "$B/obj"
make distdir distdir="$B/src" > "$B/distdir.log" 2>&1
cd "$B/obj"
../src/configure --disable-native CFLAGS="-g -O1" > configure.log 2>&1
make -j"$(nproc)" mpitron > build.log 2>&1 || { tail -n 30 build.log; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell
# the start-up sgemm peak measurement (for MFU) would take most of the
# run under memcheck: a peak given instead
export MPITRON_PEAK_GFLOPS=50
W=$B/run
mkdir -p "$W"
awk 'BEGIN { for (i = 0; i < 3000; i++)
             printf "%d: valgrind watches every byte %d\n", i, i % 7 }' \
    > "$W/text.txt"
./mpitron prepare --out "$W/data" "$W/text.txt" > /dev/null
SUPP=/usr/share/openmpi/openmpi-valgrind.supp
VG="valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite
    --errors-for-leak-kinds=definite --track-origins=yes --num-callers=40
    --suppressions=$SUPP --log-file=$W/vg.%q{OMPI_COMM_WORLD_RANK}.log"
M="--data=$W/data --n_layer=2 --n_embd=64 --n_head=4 --seq_len=32
   --batch_size=8 --log_every=1 --val_every=3 --ckpt_every=3 --hang_timeout=0"
mpirun -np 2 --oversubscribe $VG ./mpitron train $M --steps=6 \
    --stop_at_step=3 --run_dir="$W/r" > "$W/train1.log" 2>&1
mv "$W/vg.0.log" "$W/vg.first.0.log"; mv "$W/vg.1.log" "$W/vg.first.1.log"
mpirun -np 2 --oversubscribe $VG ./mpitron train $M --steps=6 \
    --run_dir="$W/r" > "$W/train2.log" 2>&1
grep -h "resumed from" "$W/train2.log"
for f in "$W"/vg.*.log; do
    echo "== $(basename "$f"): $(grep 'ERROR SUMMARY' "$f" | sed 's/^==[0-9]*== //')"
    # the error blocks that reach our sources (src/, comm/, parallel/, ckpt/)
    awk '/^==[0-9]+== [A-Z].*(Invalid|uninitialised|definitely lost|Mismatched|overlap|Syscall)/ { blk = $0 "\n"; keep = 0; inb = 1; next }
         inb && /^==[0-9]+== *$/ { if (keep) printf "%s", blk; inb = 0; next }
         inb { blk = blk $0 "\n"; if ($0 ~ /\((src|comm|parallel|ckpt)\/|\/(src|comm|parallel|ckpt)\/[a-z_]+\.c/) keep = 1 }' "$f"
done
