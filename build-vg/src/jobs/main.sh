#!/bin/sh
# The main job: install what is missing, build, prepare the fortunes corpus,
# train a small GPT under mpirun, stop half-way (as a preempted job would),
# resume from the checkpoint, and print sampled text.
#
#   ./jobs/main.sh                 # everything: 2 ranks, ~5 minutes on 2 cores
#   NP=1 STEPS=600 ./jobs/main.sh  # knobs: ranks, steps (500), run directory
set -e
cd "$(dirname "$0")/.."
sh jobs/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
NP=${NP:-2}
STEPS=${STEPS:-500}
RUN=${RUN:-runs/fortunes}
CORES=$(nproc)
THREADS=$(( CORES / NP )); [ "$THREADS" -ge 1 ] || THREADS=1
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

if [ ! -f data/fortunes/train_000.bin ]; then
    files=$(find /usr/share/games/fortunes -maxdepth 1 -type f \
            ! -name '*.dat' ! -name '*.u8' | sort)
    ./mpitron prepare --out data/fortunes $files
fi
rm -rf "$RUN"
MPIRUN="mpirun -np $NP --oversubscribe --bind-to none"
echo "== training $STEPS steps on $NP rank(s) x $THREADS thread(s); stopping at $((STEPS / 2))"
$MPIRUN ./mpitron train jobs/fortunes.ini --run_dir="$RUN" --steps="$STEPS" \
    --threads="$THREADS" --stop_at_step=$((STEPS / 2))
echo "== resuming from $RUN/ckpt/latest"
$MPIRUN ./mpitron train jobs/fortunes.ini --run_dir="$RUN" --steps="$STEPS" \
    --threads="$THREADS" --resume=auto
echo "== checkpoint"
./mpitron ckpt info "$RUN" | head -n 8
echo "== sample"
./mpitron sample --ckpt "$RUN" --prompt="The meaning of life is " --tokens=400 --temperature=0.7
