/*
 * watchdog.h - the hang watchdog (config hang_timeout): a thread per rank
 * that reads the rank's phase record (comm/phase.h) twice a second.
 *
 * When the current phase has lasted longer than hang_timeout seconds,
 * the rank prints to stderr what it is doing or waiting for, from whom
 * (the peer, or the world ranks of the group) and since when, writes the
 * same to RUN_DIR/hang_rank_R.txt (durably), tells every other rank (a
 * message on the watchdog's own communicator), waits a grace of 3 s so
 * that they can do the same, and calls MPI_Abort(MPI_COMM_WORLD, 75)
 * (EX_TEMPFAIL):
 * the job ends (non-zero), and a batch system can requeue it.  A rank
 * told by another reports its own phase and aborts likewise, so every
 * live rank's state is on record.  The notice needs
 * MPI_THREAD_MULTIPLE; without it each rank reports only when its own
 * timeout passes.
 */
#ifndef MPITRON_WATCHDOG_H
#define MPITRON_WATCHDOG_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

struct watchdog;

/* Collective over world (duplicates it).  timeout_s <= 0: no thread, *out
 * NULL.  Returns 0, or -1 with err (no memory: *out NULL on every rank;
 * no thread: *out set, to be passed to watchdog_stop like a running one).
 * run_dir is where the reports go (created when a report is written). */
int watchdog_start(struct watchdog **out, MPI_Comm world, int timeout_s,
                   const char *run_dir, char *err, size_t errlen);
/* Collective over world: stops the thread, frees everything; NULL is a
 * no-op on every rank (all ranks pass NULL or none does). */
void watchdog_stop(struct watchdog *w);

/* debug_hang=R:STEP (spec "" = off): on world rank R, before step STEP
 * (1-based) runs, stop making progress: enter PHASE_DEBUG_HANG and sleep
 * until the job is killed.  Returns on every other rank and step. */
void watchdog_debug_hang(const char *spec, int rank, int64_t step);

#endif
