#!/bin/bash
# slurm_check.sh - `make check-slurm`: jobs/train.sbatch on a real SLURM.
#
# Starts a one-node SLURM in a temporary directory (this host as
# controller and as the node, its real CPU count from `slurmd -C`; munged,
# slurmctld and slurmd with their own sockets, ports, state and spool
# there), trains a tiny GPT on the fortunes corpus through sbatch, and
# checks:
#   1. a 2-task job preempted by SIGUSR1 to its batch shell (scancel
#      --signal=USR1 --batch) saves, requeues itself, resumes and finishes;
#      its metrics.jsonl losses equal an uninterrupted run's bit for bit;
#   2. a job whose time limit (--time=1 --signal=B:USR1@25) runs out at
#      least twice completes through its chain of requeues; the same job
#      with MPITRON_MAX_REQUEUES=1 stops at the limit (exit 75) with its
#      checkpoint intact; a job with a bad config key fails (exit 2) and
#      is not requeued;
#   3. a job submitted with --dependency=afterok on job 1 starts only after
#      job 1 completed and fine-tunes from its checkpoint (init_from);
#   4. jobs/scaling.sbatch runs a two-point study inside its allocation.
# Every daemon it started, and every process of its jobs, is stopped on
# exit whatever happened (trap), and the test fails if any had to be
# killed.  Cost: 2.5-4 minutes (2-3 of them scenario 2: SLURM checks
# time limits every 30 s and restarts a requeued job after ~10 s), about
# 30 s of it on both cores, the rest on one.  Needs root (slurmd launches
# jobs); installs slurm-wlm and munge through jobs/deps.sh when missing.
# KEEP=1 keeps the temporary directory (kept anyway when a check fails).
set -u
top=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
MPITRON=${MPITRON:-$top/mpitron}
SBATCH_SCRIPT=$top/jobs/train.sbatch
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: a one-node SLURM needs root (slurmd launches the jobs)"
    exit 77
fi
if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    sh "$top/jobs/deps.sh" || exit 1
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MPITRON

T=$(mktemp -d /tmp/mpitron-slurm.XXXXXX)
chmod 755 "$T" # munged wants its socket's directories searchable by all
CONF=$T/etc/slurm.conf
pass=0 failed=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
# Every SLURM/munge process of this test carries MPITRON_SLURM_TEST=$T in
# its environment (the daemons, their step daemons and the jobs inherit
# it), so the cleanup finds exactly them.
sl() { SLURM_CONF=$CONF MPITRON_SLURM_TEST=$T "$@"; }

ours() { # pids of processes started by this test
    grep -lsz "^MPITRON_SLURM_TEST=$T\$" /proc/[0-9]*/environ 2> /dev/null |
        sed 's|/proc/\([0-9]*\)/environ|\1|'
}

cleanup() {
    rc=$? # the script's own status (exit 1 on a fatal set-up error)
    trap - EXIT INT TERM
    if [ -f "$CONF" ]; then
        sl scancel --quiet --user=root 2> /dev/null
        for _ in $(seq 1 60); do # jobs end within KillWait (5 s)
            [ -z "$(sl squeue -h 2> /dev/null)" ] && break
            sleep 0.5
        done
    fi
    for d in slurmd slurmctld munged; do
        [ -f "$T/run/$d.pid" ] && kill "$(cat "$T/run/$d.pid")" 2> /dev/null
    done
    for _ in $(seq 1 40); do
        [ -z "$(ours)" ] && break
        sleep 0.25
    done
    left=$(ours | tr '\n' ' ')
    if [ -n "$left" ]; then
        bad "processes still running after the daemons stopped: $left"
        ps -o pid,args -p "${left// /,}" 2> /dev/null
        kill -9 $left 2> /dev/null
    fi
    unmount_cgroups
    if [ "$failed" -eq 0 ] && [ -z "${KEEP:-}" ]; then
        rm -rf "$T"
    else
        echo "logs kept in $T"
    fi
    echo "$pass passed, $failed failed"
    # an explicit status: a bare `exit` in an EXIT trap exits with the
    # status the script had before the trap, so failures passed as 0
    [ "$failed" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
    exit "$rc"
}
trap cleanup EXIT
trap 'bad "interrupted"; exit 130' INT TERM

# ---- the cluster ---------------------------------------------------------

free_port() { # a TCP port nobody listens on, from /proc/net/tcp{,6}
    used=$(awk 'NR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' \
           /proc/net/tcp /proc/net/tcp6 2> /dev/null)
    while :; do
        p=$((20000 + RANDOM % 20000))
        hex=$(printf '%04X' "$p")
        case " $(echo $used) $2 " in *" $hex "* | *" $p "*) continue ;; esac
        echo "$p"
        return
    done
}

# slurmd 22.05 starts its cgroup plugin whatever the proctrack and task
# plugins, and fails on a machine with no cgroup file system mounted (a
# bare chroot such as fresh-machine.sh's: a fresh sysfs).  There, and only
# there, mount a cgroup v1 tree as systemd would (a tmpfs, the named
# systemd hierarchy, the controllers that mount), and unmount it at the
# end; a machine with cgroups mounted (v1 or v2) is left as it is.
CG_MOUNTED=""
mount_cgroups() {
    grep -q " /sys/fs/cgroup[ /]" /proc/mounts && return 0
    [ -d /sys/fs/cgroup ] || return 0
    mount -t tmpfs cgroup_root /sys/fs/cgroup || return 0
    CG_MOUNTED="/sys/fs/cgroup"
    mkdir -p /sys/fs/cgroup/systemd
    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd &&
        CG_MOUNTED="/sys/fs/cgroup/systemd $CG_MOUNTED"
    for c in freezer cpuset memory devices cpu cpuacct pids; do
        mkdir -p "/sys/fs/cgroup/$c"
        mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" 2> /dev/null &&
            CG_MOUNTED="/sys/fs/cgroup/$c $CG_MOUNTED"
    done
    echo "note: no cgroup file system was mounted; mounted a v1 tree for slurmd"
}
unmount_cgroups() {
    for m in $CG_MOUNTED; do umount "$m" 2> /dev/null; done
}

start_cluster() {
    mount_cgroups
    mkdir -p "$T/etc" "$T/munge" "$T/run" "$T/log" "$T/state" "$T/spool"
    chmod 700 "$T/munge"
    chmod 755 "$T/run"
    dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 2> /dev/null
    chmod 400 "$T/munge/munge.key"
    sl munged --key-file="$T/munge/munge.key" --socket="$T/run/munge.sock" \
        --pid-file="$T/run/munged.pid" --log-file="$T/log/munged.log" \
        --seed-file="$T/munge/seed" || return 1
    host=$(hostname -s)
    node=$(slurmd -C | head -n 1) # NodeName=host CPUs=N ... RealMemory=M
    ctld_port=$(free_port x 0)
    slurmd_port=$(free_port x "$ctld_port")
    cat > "$CONF" << EOF
# written by tests/slurm_check.sh: this host is controller and node
ClusterName=mpitron-check
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (default 120 s)
AuthInfo=socket=$T/run/munge.sock,cred_expire=5
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=3600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    sl slurmctld -c || return 1
    sl slurmd || return 1
    for _ in $(seq 1 120); do
        [ "$(sl sinfo -h -o %t 2> /dev/null)" = idle ] && return 0
        sleep 0.5
    done
    echo "the node did not come up:"
    tail -n 20 "$T/log/slurmctld.log" "$T/log/slurmd.log"
    return 1
}

if start_cluster; then
    ok "munged, slurmctld, slurmd up: $(sl sinfo -h -N -o '%N %c CPUs %t')"
else
    bad "could not start the cluster"
    exit 1
fi

# ---- helpers -------------------------------------------------------------

field() { # field JOBID Name: a field of scontrol show job
    sl scontrol show job "$1" 2> /dev/null |
        tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
wait_done() { # until JOBID is in a final state; hang guard, not a timing test
    for _ in $(seq 1 1800); do
        case $(field "$1" JobState) in
            COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY)
                return 0 ;;
        esac
        sleep 0.5
    done
    echo "job $1 did not end in 15 minutes"
    return 1
}
losses() { # "step loss" per logged step of a metrics.jsonl
    sed -n 's/^{"step":\([0-9]*\),"loss":\([^,]*\),.*/\1 \2/p' "$1"
}
submit() { # submit NAME [sbatch options] -- [train arguments]
    name=$1
    shift
    opts=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        opts+=("$1")
        shift
    done
    shift
    sl sbatch --parsable --job-name="$name" --output="$T/$name.out" \
        --chdir="$T" "${opts[@]}" "$SBATCH_SCRIPT" "$T/tiny.ini" \
        --run_dir="$T/$name" "$@"
}
show() { echo "---- $1"; tail -n "${2:-25}" "$1"; }

# ---- data and the tiny model --------------------------------------------

files=$(find /usr/share/games/fortunes -maxdepth 1 -type f \
        ! -name '*.dat' ! -name '*.u8' | sort)
"$MPITRON" prepare --out "$T/data" $files > "$T/prepare.log" 2>&1 ||
    { bad "prepare"; cat "$T/prepare.log"; exit 1; }
cat > "$T/tiny.ini" << EOF
n_layer = 2
n_embd = 64
n_head = 4
seq_len = 64
batch_size = 8
lr = 3e-3
min_lr = 3e-4
warmup_steps = 10
data = $T/data
val_every = 0
val_batches = 2
log_every = 1
EOF
# steps of scenario 1: 12-25 s on 2 ranks.  The job must outlast the
# signal's way through slurmctld and slurmd, which takes seconds when the
# two ranks keep both cores busy: with 2000 steps at 2.4 ms each a job
# once finished before SIGUSR1 reached it, and with 5000 at 1.9 ms once
# more.  So job 1 holds at the end of step HOLD until the signal has
# arrived (debug_hold_step), and the test sends it once step HOLD - 1 is
# logged: the save is at step HOLD, however fast the machine, and the
# requeued job resumes after it (it never holds again)
S1=5000
HOLD=50

# ---- 1 + 3: preempted, requeued, resumed; a dependent fine-tune ----------

mpirun -np 2 --bind-to none "$MPITRON" train "$T/tiny.ini" \
    --run_dir="$T/ref" --steps=$S1 --threads=1 > "$T/ref.log" 2>&1 ||
    { bad "uninterrupted reference run"; show "$T/ref.log"; }
j1=$(submit s1 --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=10 \
     -- --steps=$S1 --debug_hold_step=$HOLD)
j3=$(submit s3 --dependency=afterok:"$j1" --nodes=1 --ntasks-per-node=2 \
     --time=10 -- --init_from="$T/s1" --steps=20 --lr_schedule=constant \
     --lr=3e-4 --warmup_steps=0)
echo "submitted job $j1 (train $S1 steps) and job $j3 (afterok:$j1)"
for _ in $(seq 1 1200); do # until job 1 has logged step HOLD - 1
    [ -f "$T/s1/metrics.jsonl" ] &&
        [ "$(losses "$T/s1/metrics.jsonl" | tail -n 1 | cut -d' ' -f1)" \
            -ge $((HOLD - 1)) ] 2> /dev/null && break
    sleep 0.1
done
state3=$(field "$j3" JobState)
sl scancel --signal=USR1 --batch "$j1"
wait_done "$j1"
if [ "$(field "$j1" JobState)" = COMPLETED ] &&
   [ "$(field "$j1" Restarts)" = 1 ] &&
   saved=$(sed -n 's/.*checkpoint saved at step \([0-9]*\) after SIGUSR1.*/\1/p' \
           "$T/s1.out" | head -n 1) && [ "$saved" = $HOLD ] &&
   grep -q "requeueing job $j1" "$T/s1.out" &&
   grep -q "resumed from .*step_0*$saved.h5 at step $saved" "$T/s1.out"; then
    ok "1: job $j1 saved at step $saved of $S1 on SIGUSR1, requeued" \
       "itself, resumed at step $saved and completed"
else
    late=
    sed -n "/^step $S1\/$S1 /,\$p" "$T/s1.out" | grep -q "== SIGUSR1" &&
        late=" (SIGUSR1 reached the job after its last step)"
    bad "1: preempt, save, requeue, resume (state $(field "$j1" JobState)," \
        "restarts $(field "$j1" Restarts))$late"
    show "$T/s1.out" 40
fi
losses "$T/ref/metrics.jsonl" > "$T/ref.loss"
losses "$T/s1/metrics.jsonl" > "$T/s1.loss"
if [ "$(wc -l < "$T/ref.loss")" -eq $S1 ] && cmp -s "$T/ref.loss" "$T/s1.loss"
then
    ok "1: all $S1 losses of the requeued job equal the uninterrupted" \
       "run's bit for bit"
else
    bad "1: losses differ from the uninterrupted run"
    diff "$T/ref.loss" "$T/s1.loss" | head -n 5
fi

wait_done "$j3"
end1=$(field "$j1" EndTime)
start3=$(field "$j3" StartTime)
first3=$(losses "$T/s3/metrics.jsonl" 2> /dev/null | head -n 1 | cut -d' ' -f2)
fresh=$(head -n 1 "$T/ref.loss" | cut -d' ' -f2)
last1=$(tail -n 1 "$T/ref.loss" | cut -d' ' -f2)
if [ "$state3" = PENDING ] && [ "$(field "$j3" JobState)" = COMPLETED ] &&
   [ -n "$start3" ] && [ -n "$end1" ] && [ ! "$start3" \< "$end1" ] &&
   grep -q "initialised weights from $T/s1/ckpt/step_0*$S1.h5" "$T/s3.out" &&
   awk -v a="$first3" -v f="$fresh" -v l="$last1" \
       'BEGIN { exit !(a != "" && a < l + 0.3 && a < f - 1.0) }'; then
    ok "3: job $j3 waited (afterok) until $end1, started $start3, and" \
       "fine-tuned from step $S1: first loss $first3 (job 1 ended at" \
       "$last1, a fresh model starts at $fresh)"
else
    bad "3: dependent fine-tune (state before: $state3, now" \
        "$(field "$j3" JobState); job 1 ended $end1, job 3 started $start3;" \
        "first loss '$first3', fresh $fresh, job 1's last $last1)"
    show "$T/s3.out"
fi

# ---- 4: a scaling study in one allocation (jobs/scaling.sbatch) ---------

cat > "$T/spec" << EOF
mode=strong ranks=1 micro_batch=2
mode=strong ranks=2 dp=2 micro_batch=2
EOF
j6=$(ATTEMPTS=1 sl sbatch --parsable --job-name=scaling \
     --output="$T/scaling.out" \
     --chdir="$top" --nodes=1 --ntasks-per-node=2 --time=10 \
     "$top/jobs/scaling.sbatch" --out="$T/scaling" --spec="$T/spec" \
     --steps=1 --quick --n_layer=2 --n_embd=32 --n_head=2 --seq_len=16 \
     --batch_size=4)
wait_done "$j6"
if [ "$(field "$j6" JobState)" = COMPLETED ] &&
   grep -q "calibrating on SLURM job $j6: 1 node" "$T/scaling.out" &&
   [ "$(tail -n +2 "$T/scaling/scaling.csv" | cut -d, -f1-3 | tr '\n' ' ')" \
       = "1,1,1 2,1,2 " ] && [ -s "$T/scaling/scaling.png" ]; then
    ok "4: jobs/scaling.sbatch ran the study inside its allocation"
else
    bad "4: scaling.sbatch (state $(field "$j6" JobState))"
    show "$T/scaling.out"
fi

# ---- 2: out of time twice; the requeue limit; a real error --------------

# steps for ~80 s of training on one rank: SLURM checks limits every 30 s
# and, with --time=1 --signal=B:USR1@25, signals a job 5-35 s into each
# start, so two starts cannot finish it; measured here, not assumed
mpirun -np 1 "$MPITRON" train "$T/tiny.ini" --run_dir="$T/cal" \
    --steps=600 --log_every=100 --threads=1 > "$T/cal.log" 2>&1
ms=$(sed -n 's/.*"ms_step":\([0-9.]*\).*/\1/p' "$T/cal/metrics.jsonl" |
     tail -n 3 | sort -n | head -n 1)
S2=$(awk -v ms="${ms:-5}" 'BEGIN { printf "%d", 80000 / ms }')
echo "one rank: $ms ms per step; scenario 2 trains $S2 steps"
lim="--nodes=1 --ntasks-per-node=1 --cpus-per-task=1 --time=1 --signal=B:USR1@25"
# two 1-task jobs at once: no core binding (task/none gives no cpuset)
j2=$(MPITRON_MAX_REQUEUES=12 MPIRUN_FLAGS="--bind-to none" \
     submit s2 $lim -- --steps="$S2" --log_every=100 --lr_schedule=constant)
j4=$(MPITRON_MAX_REQUEUES=1 MPIRUN_FLAGS="--bind-to none" \
     submit s4 $lim -- --steps="$S2" --log_every=100 --lr_schedule=constant)
j5=$(submit s5 --nodes=1 --ntasks-per-node=1 --time=5 -- --n_embed=64)
echo "submitted jobs $j2 (limit 12), $j4 (limit 1), $j5 (a bad key)"
wait_done "$j5"
if [ "$(field "$j5" JobState)" = FAILED ] &&
   [ "$(field "$j5" ExitCode)" = 2:0 ] && [ "$(field "$j5" Restarts)" = 0 ] &&
   grep -q "unknown key 'n_embed'" "$T/s5.out" &&
   grep -q "not requeueing" "$T/s5.out"; then
    ok "2: a bad config key fails the job (exit 2), no requeue"
else
    bad "2: bad config key (state $(field "$j5" JobState), exit" \
        "$(field "$j5" ExitCode), restarts $(field "$j5" Restarts))"
    show "$T/s5.out"
fi
wait_done "$j4"
n4=$(grep -c "after SIGUSR1" "$T/s4.out")
if [ "$(field "$j4" JobState)" = FAILED ] &&
   [ "$(field "$j4" ExitCode)" = 75:0 ] &&
   [ "$(field "$j4" Restarts)" = 1 ] && [ "$n4" -eq 2 ] &&
   grep -q "MPITRON_MAX_REQUEUES=1): not requeueing" "$T/s4.out" &&
   "$MPITRON" ckpt verify "$T/s4" > "$T/s4.verify" 2>&1; then
    ok "2: with MPITRON_MAX_REQUEUES=1 job $j4 ran out of time twice," \
       "requeued once, stopped (exit 75), its checkpoint verifies"
else
    bad "2: requeue limit (state $(field "$j4" JobState), exit" \
        "$(field "$j4" ExitCode), restarts $(field "$j4" Restarts), $n4 saves)"
    show "$T/s4.out" 40
fi
wait_done "$j2"
n2=$(grep -c "after SIGUSR1" "$T/s2.out")
r2=$(field "$j2" Restarts)
if [ "$(field "$j2" JobState)" = COMPLETED ] && [ "$r2" -ge 2 ] &&
   [ "$n2" -eq "$r2" ] &&
   grep -q "checkpoint $T/s2/ckpt/step_0*$S2.h5 (step $S2)" "$T/s2.out"; then
    ok "2: job $j2 ran out of time $r2 times and completed all $S2 steps" \
       "through $r2 requeues"
else
    bad "2: out of time twice (state $(field "$j2" JobState), restarts $r2," \
        "$n2 saves)"
    show "$T/s2.out" 40
fi
exit 0 # the checks above count failures; the EXIT trap reports them
