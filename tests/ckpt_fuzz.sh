#!/bin/sh
# Hostile checkpoint files.  First, with the HDF5 probe's child made to
# crash (MPITRON_CKPT_PROBE_FAULT=segv:step_00000002) and to hang, and
# with a real file on which HDF5 1.10 dies (tests/fuzz/hostile): info,
# verify and sample refuse the file with "FILE: HDF5 crashed parsing it
# (signal 11); refusing it" (exit 1), and resume=auto skips it with that
# warning and resumes from step 1.  Then a fuzzer: a valid
# checkpoint's HDF5 metadata (the bytes
# outside every dataset's data) mutated by tests/ckpt_mutate, its
# manifest re-forged to match (as a hostile or broken writer could), then
# `mpitron ckpt info`, `ckpt verify`, `sample` and `train` with
# resume=auto run on it.  Each must end by itself with exit 0 or 1 (a
# refusal with a message): a signal, a sanitizer report or a run past the
# guard counts as a crash or a hang, and fails.  resume=auto must resume
# (from the mutant if it reads, else from the older checkpoint after a
# "skipping" warning) or stop with an error.  Also a checkpoint whose
# stored config names an impossible model (vocab_size = 0, the manifest
# re-forged): sample refuses it.
#
#   CKPT_FUZZ_N=500 sh tests/ckpt_fuzz.sh   # the long form (README)
#
# make check runs CKPT_FUZZ_N=4 (the default), seeds 1..4.
set -u
MPITRON=${MPITRON:-./mpitron}
MPIRUN=${MPIRUN:-mpirun}
# no MFU here: a peak given, not measured (seconds of start-up per run)
export MPITRON_PEAK_GFLOPS=50
MUTATE=${MUTATE:-${top_builddir:-.}/tests/ckpt_mutate}
N=${CKPT_FUZZ_N:-4}
SEED0=${CKPT_FUZZ_SEED:-0}
GUARD=${CKPT_FUZZ_GUARD:-120} # seconds: a run longer than this is a hang
W=$(mktemp -d "${TMPDIR:-/tmp}/mpitron-fuzz.XXXXXX")
trap 'rm -rf "$W"' EXIT
[ -x "$MUTATE" ] || { echo "FAIL: $MUTATE is not built"; exit 1; }
crashed() { # log: a signal or a sanitizer's report that is not our probe's
    grep -av "HDF5 crashed parsing it" "$1" |
        grep -aqE "Segmentation fault|Process received signal|core dumped|Aborted|AddressSanitizer|LeakSanitizer|runtime error:|Bus error"
}
# CKPT_FUZZ_KEEP=DIR keeps the run directory of each mutant that crashed
# or hung a command, or stopped resume=auto
keep() { # the run directory, as $CKPT_FUZZ_KEEP/KIND-SEED/
    [ -n "${CKPT_FUZZ_KEEP:-}" ] || return 0
    mkdir -p "$CKPT_FUZZ_KEEP"
    cp -r "$W/m" "$CKPT_FUZZ_KEEP/$1-$s"
}
# one process each, without mpirun: no daemon to start (faster)
export OMPI_MCA_ess_singleton_isolated=1

awk 'BEGIN { for (i = 0; i < 2000; i++)
             printf "%d: a hostile file must not crash us %d\n", i, i % 3 }' \
    > "$W/text.txt"
"$MPITRON" prepare --out "$W/data" "$W/text.txt" > /dev/null
M="--data=$W/data --n_layer=1 --n_embd=32 --n_head=2 --seq_len=16
   --batch_size=4 --log_every=1 --val_every=0 --hang_timeout=60"
"$MPITRON" train $M --steps=2 --ckpt_every=1 --run_dir="$W/base" \
    > "$W/base.log" 2>&1 || { cat "$W/base.log"; echo "FAIL: base run"; exit 1; }

# HDF5 crashing or hanging in the probe's child
failed=0
cp -r "$W/base" "$W/seg"
f="$W/seg/ckpt/step_00000002.h5"
msg="step_00000002.h5: HDF5 crashed parsing it (signal 11); refusing it"
for cmd in "ckpt info $f" "ckpt verify $f" "sample --ckpt $f --tokens=8"; do
    MPITRON_CKPT_PROBE_FAULT=segv:step_00000002 "$MPITRON" $cmd \
        > "$W/seg.log" 2>&1
    rc=$?
    if [ $rc -eq 1 ] && grep -q "$msg" "$W/seg.log" && ! crashed "$W/seg.log"
    then echo "ok: ${cmd%% /*}: $msg"
    else echo "FAIL: ${cmd%% /*} (exit $rc)"; cat "$W/seg.log"; failed=1; fi
done
MPITRON_CKPT_PROBE_FAULT=segv:step_00000002 "$MPITRON" train $M --steps=3 \
    --run_dir="$W/seg" > "$W/seg.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "warning: skipping .*$msg" "$W/seg.log" &&
   grep -q "resumed from .*step_00000001.h5 at step 1" "$W/seg.log"; then
    echo "ok: resume=auto skips it with a warning and resumes from step 1"
else
    echo "FAIL: resume=auto past a file that crashes HDF5 (exit $rc)"
    cat "$W/seg.log"; failed=1
fi
# a real file on which HDF5 1.10 dies with SIGSEGV (tests/fuzz/README.md)
HOSTILE=${top_srcdir:-.}/tests/fuzz/hostile/hdf5_segv.h5
cp -r "$W/base" "$W/real"
cp "$HOSTILE" "$W/real/ckpt/step_00000002.h5"
"$MUTATE" --forge "$W/real/ckpt/step_00000002.h5"
for cmd in "ckpt info" "ckpt verify"; do
    "$MPITRON" $cmd "$W/real/ckpt/step_00000002.h5" > "$W/real.log" 2>&1
    rc=$?
    if [ $rc -eq 1 ] && grep -q "$msg" "$W/real.log" && ! crashed "$W/real.log"
    then echo "ok: $cmd of a file that crashes HDF5: $msg"
    else echo "FAIL: $cmd of a file that crashes HDF5 (exit $rc)"
         cat "$W/real.log"; failed=1; fi
done
"$MPITRON" train $M --steps=3 --run_dir="$W/real" > "$W/real.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "warning: skipping .*$msg" "$W/real.log" &&
   grep -q "resumed from .*step_00000001.h5 at step 1" "$W/real.log"; then
    echo "ok: resume=auto skips the file that crashes HDF5"
else
    echo "FAIL: resume=auto past a file that crashes HDF5 (exit $rc)"
    cat "$W/real.log"; failed=1
fi
# a stored config that describes no valid model (vocab_size = 0), with
# tensors and a manifest that agree with the file: sample refuses it
# naming the file and the key (it divided by the vocabulary: SIGFPE)
cp -r "$W/base" "$W/v0"
f="$W/v0/ckpt/step_00000002.h5"
perl -pi -e 's/vocab_size = 256/vocab_size = 0  /' "$f"
"$MUTATE" --forge "$f"
"$MPITRON" sample --ckpt "$f" --tokens=8 > "$W/v0.log" 2>&1
rc=$?
if [ $rc -eq 1 ] && ! crashed "$W/v0.log" &&
   grep -q "step_00000002.h5: the stored config: vocab_size=0" "$W/v0.log"
then echo "ok: sample refuses a stored config with vocab_size = 0"
else echo "FAIL: sample of a stored vocab_size = 0 (exit $rc)"
     cat "$W/v0.log"; failed=1; fi
# sample on a run directory whose newest checkpoint (the one `latest`
# names) is damaged: it samples from the older one, with a warning naming
# the damaged file (it followed `latest` and failed on the checksum)
cp -r "$W/base" "$W/dmg"
f="$W/dmg/ckpt/step_00000002.h5"
size=$(wc -c < "$f")
printf 'XXXXXXXXXXXXXXXX' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc \
    2> /dev/null
"$MPITRON" sample --ckpt "$W/dmg" --tokens=8 > "$W/dmg.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && ! crashed "$W/dmg.log" &&
   grep -q "warning: skipping $f: " "$W/dmg.log" &&
   grep -q "sampling from $W/dmg/ckpt/step_00000001.h5" "$W/dmg.log"
then echo "ok: sample of a run directory skips its damaged newest checkpoint"
else echo "FAIL: sample past a damaged newest checkpoint (exit $rc)"
     cat "$W/dmg.log"; failed=1; fi
# ... and of a good one says nothing about it: the one `latest` names
"$MPITRON" sample --ckpt "$W/base" --tokens=8 > "$W/good.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && ! grep -q "sampling from\|warning" "$W/good.log"
then echo "ok: sample of a good run directory reads what latest names"
else echo "FAIL: sample of a good run directory (exit $rc)"
     cat "$W/good.log"; failed=1; fi
MPITRON_CKPT_PROBE_FAULT=hang MPITRON_CKPT_PROBE_TIMEOUT=2 \
    timeout 60 "$MPITRON" ckpt info "$W/base" > "$W/hang.log" 2>&1
rc=$?
if [ $rc -eq 1 ] &&
   grep -q "HDF5 hung parsing it (no answer in 2 s); refusing it" "$W/hang.log"
then echo "ok: a probe that hangs is killed and the file refused"
else echo "FAIL: probe hang (exit $rc)"; cat "$W/hang.log"; failed=1; fi

crashes=0 hangs=0 runs=0 probe=0 refused=0 read=0 resumed_mutant=0
skipped=0 stopped=0
for i in $(seq 1 "$N"); do
    s=$((SEED0 + i))
    rm -rf "$W/m"
    cp -r "$W/base" "$W/m"
    f="$W/m/ckpt/step_00000002.h5"
    "$MUTATE" "$s" "$W/base/ckpt/step_00000002.h5" "$f" > "$W/mut.txt" ||
        { echo "FAIL: mutate $s"; exit 1; }
    for cmd in info verify sample train; do
        case $cmd in
        info) set -- "$MPITRON" ckpt info "$f" ;;
        verify) set -- "$MPITRON" ckpt verify "$f" ;;
        sample) set -- "$MPITRON" sample --ckpt "$f" --tokens=8 ;;
        train) set -- "$MPITRON" train $M --steps=3 --run_dir="$W/m" ;;
        esac
        timeout "$GUARD" "$@" > "$W/out.log" 2>&1
        rc=$?
        runs=$((runs + 1))
        if [ $rc -eq 124 ]; then
            hangs=$((hangs + 1))
            echo "HANG: seed $s $cmd"; cat "$W/mut.txt"
            keep hang
        elif [ $rc -gt 2 ] || crashed "$W/out.log"; then
            crashes=$((crashes + 1))
            echo "CRASH: seed $s $cmd (exit $rc)"; cat "$W/mut.txt"
            tail -n 20 "$W/out.log"
            keep crash
        fi
        grep -q "HDF5 crashed parsing it\|HDF5 hung parsing it" "$W/out.log" &&
            probe=$((probe + 1))
        if [ $cmd = verify ]; then
            [ $rc -eq 0 ] && read=$((read + 1)) || refused=$((refused + 1))
            # the mutant's manifest is re-forged: a refusal by the manifest
            # check means the forging broke and HDF5 was never reached
            if grep -aq "fails its manifest check\|but the manifest says" \
                    "$W/out.log"; then
                echo "FAIL: seed $s: the re-forged manifest was refused" \
                     "(the mutant never reached HDF5)"
                grep -a "manifest" "$W/out.log" | head -n 2
                failed=1
            fi
        fi
        if [ $cmd = train ]; then
            if grep -aq "resumed from .*step_00000002.h5" "$W/out.log"; then
                resumed_mutant=$((resumed_mutant + 1))
            elif grep -aq "skipping .*step_00000002.h5" "$W/out.log" &&
                 grep -aq "resumed from .*step_00000001.h5" "$W/out.log"; then
                skipped=$((skipped + 1))
            elif [ $rc -eq 1 ]; then
                stopped=$((stopped + 1))
                keep stopped
                [ -n "${CKPT_FUZZ_VERBOSE:-}" ] &&
                    echo "seed $s: train stopped: $(grep -a 'error' "$W/out.log" | head -n 1)"
            else
                crashes=$((crashes + 1))
                echo "FAIL: seed $s: train neither resumed nor stopped"
                tail -n 20 "$W/out.log"
            fi
        fi
    done
done
echo "$N mutants, $runs runs: $crashes crashes, $hangs hangs;" \
     "verify read $read and refused $refused;" \
     "$probe refusals by the HDF5 probe (crash/hang in its child);" \
     "resume=auto resumed from the mutant $resumed_mutant, skipped it" \
     "$skipped, stopped with an error $stopped"
[ $crashes -eq 0 ] && [ $hangs -eq 0 ] && [ $failed -eq 0 ]
