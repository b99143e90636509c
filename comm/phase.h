/*
 * phase.h - what this rank is doing, and since when: the record the hang
 * watchdog (src/watchdog.c) reports when a rank stops making progress.
 *
 * Every place that can wait for another rank names its phase before it
 * waits: the gradient bucket being reduced (comm/bucket.c), the
 * tensor-parallel all-reduce (parallel/tp.c), the pipeline transfer with
 * its peer and micro-batch (parallel/pp.c), and in src/ the forward and
 * backward of a micro-batch, the step's small collectives, validation,
 * the data loader and checkpoint I/O.  A phase lasts until the next one
 * starts; the watchdog measures how long the current one has lasted.
 *
 * One record per process (a process is one rank): it is written by the
 * thread that runs the training loop only, read by the watchdog thread
 * through a sequence lock (a consistent copy, never a torn one).  A
 * phase change is a few relaxed atomic stores and a clock read: no
 * allocation, no lock, no system call but clock_gettime (vDSO).  This is
 * the one piece of mutable global state of comm/, like errno: a phase is
 * a property of the process, and the watchdog must find it without a
 * pointer passed through every layer.
 */
#ifndef MPITRON_PHASE_H
#define MPITRON_PHASE_H

#include <mpi.h>
#include <stdint.h>

enum phase_kind {
    PHASE_NONE,        /* not started */
    PHASE_SETUP,       /* start-up: grid, model, data, resume */
    PHASE_COMPUTE,     /* forward/backward of micro-batch i of n */
    PHASE_OPTIM,       /* the optimizer update */
    PHASE_DP_BUCKET,   /* waiting for gradient bucket i of n (what: algo) */
    PHASE_TP_ALLREDUCE,/* a tensor-parallel all-reduce of i floats */
    PHASE_PP_RECV,     /* waiting for micro-batch i from peer */
    PHASE_PP_SEND,     /* waiting for the send of micro-batch i to peer */
    PHASE_COLLECTIVE,  /* a small collective of the step (what: which) */
    PHASE_DATA,        /* waiting for the data loader */
    PHASE_VALIDATE,    /* validation batch i of n */
    PHASE_CKPT,        /* checkpoint I/O (what: save/load/find) */
    PHASE_DEBUG_HANG,  /* debug_hang: stopped on purpose */
    PHASE_COUNT
};

/* The ranks a phase waits on, in world numbering, with a name ("dp
 * group"); built once (phase_group_init) and never freed while a phase
 * may point at it. */
struct phase_group {
    const char *name;
    int n;
    int *world;   /* n world ranks (owned) */
};

/* The world ranks of comm into g (name must be static).  Local (group
 * translation only).  0, or -1 when out of memory (g->n = 0). */
int phase_group_init(struct phase_group *g, const char *name, MPI_Comm comm);
void phase_group_free(struct phase_group *g);

/* Enter a phase: kind, what (a static string or NULL), i of n (meaning
 * by kind, -1 if none), the world rank of the peer waited on (-1 if
 * none), the group waited on (may be NULL). */
void phase_enter(enum phase_kind kind, const char *what, int64_t i,
                 int64_t n, int peer, const struct phase_group *g);
/* The step now running (1-based; 0 before the first). */
void phase_step(int64_t step);

/* A consistent copy of the record (the watchdog's side). */
struct phase_rec {
    enum phase_kind kind;
    const char *what;
    int64_t i, n, step;
    int peer;
    const struct phase_group *g;
    double since;  /* CLOCK_MONOTONIC seconds */
    uint64_t seq;  /* changes at every phase_enter */
};
void phase_get(struct phase_rec *out);

/* One line describing r into buf ("waiting for the dp all-reduce of
 * bucket 2 of 3 (ring) with world ranks 0,1"); self is this world rank
 * (left out of group lists). */
void phase_describe(const struct phase_rec *r, int self, char *buf,
                    int len);

/* CLOCK_MONOTONIC in seconds (the clock of phase_rec.since). */
double phase_now(void);

#endif
