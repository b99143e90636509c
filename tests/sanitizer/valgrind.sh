#!/bin/sh
# A valgrind memcheck pass over one short training run (not part of make
# check: it takes minutes; its result is in the README).  valgrind 3.19
# does not decode AVX-512, so mpitron is built once more without
# -march=native (build-vg/, a VPATH build of a `make distdir` copy) and
# OpenBLAS is held to its AVX2 kernels (OPENBLAS_CORETYPE=Haswell).  Two
# ranks (dp = 2: the gradient buckets, checkpoints, validation, resume)
# each run under memcheck with Open MPI's suppression file; prints each
# rank's error summary and the errors that are mpitron's own.
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
# mpitron's own sources, by file name (valgrind prints base names)
OURS=$(cd "$top" && ls src/*.c src/*/*.c comm/*.c parallel/*.c ckpt/*.c |
       sed 's|.*/||' | tr '\n' ' ')
for f in "$W"/vg.*.log; do
    # one log per rank; the checkpoint probe's forked children append
    # their own summaries to it
    echo "== $(basename "$f"): $(grep 'ERROR SUMMARY' "$f" |
        sed 's/^==[0-9]*== ERROR SUMMARY: //; s/ (suppressed.*//' |
        tr '\n' ';')"
    # an error is mpitron's when the first frame of its first stack,
    # past valgrind's allocator and the C library's string and I/O
    # functions, is in one of mpitron's sources; print those blocks
    awk -v ours="$OURS" '
        BEGIN { n = split(ours, o, " "); for (i = 1; i <= n; i++) mine[o[i]] = 1 }
        { sub(/^==[0-9]+== ?/, "") }
        /^$/ || /^Thread [0-9]+:/ { if (blk != "" && keep) { printf "%s\n", blk; found++ }
                                   blk = ""; keep = 0; decided = 0; next }
        blk == "" { blk = $0; if ($0 !~ /Invalid|uninitialised|definitely lost|Mismatched|overlap|Conditional jump/) decided = 1; next }
        { blk = blk "\n" $0 }
        !decided && /^ *(at|by) 0x/ {
            if ($0 ~ /vgpreload|\((strdup|malloc|calloc|realloc|vasprintf|writev|write|send|sendmsg|memcpy|memmove|memset|strlen)[a-z0-9_-]*\.[cS]:/) next
            decided = 1
            if (match($0, /\([A-Za-z0-9_-]+\.c:[0-9]+\)/)) {
                file = substr($0, RSTART + 1, RLENGTH - 2); sub(/:.*/, "", file)
                keep = (file in mine)
            }
        }
        END { printf "   errors in mpitron'"'"'s code: %d\n", found + 0 }' "$f"
done
