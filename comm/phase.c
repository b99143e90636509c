/*
 * phase.c - the per-process phase record (phase.h): a sequence lock over
 * relaxed atomics.
 */
#include "phase.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static struct {
    atomic_uint_fast64_t seq; /* odd while being written */
    atomic_int kind, peer;
    _Atomic(const char *) what;
    _Atomic(const struct phase_group *) g;
    atomic_int_fast64_t i, n, step;
    _Atomic double since;
} rec;

double phase_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int phase_group_init(struct phase_group *g, const char *name, MPI_Comm comm)
{
    MPI_Group mine, world;
    int n = 0;
    g->name = name;
    g->n = 0;
    g->world = NULL;
    MPI_Comm_size(comm, &n);
    int *idx = malloc((size_t)n * sizeof(int));
    g->world = malloc((size_t)n * sizeof(int));
    if (!idx || !g->world) {
        free(idx);
        free(g->world);
        g->world = NULL;
        return -1;
    }
    for (int r = 0; r < n; r++)
        idx[r] = r;
    MPI_Comm_group(comm, &mine);
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    MPI_Group_translate_ranks(mine, n, idx, world, g->world);
    MPI_Group_free(&mine);
    MPI_Group_free(&world);
    free(idx);
    g->n = n;
    return 0;
}

void phase_group_free(struct phase_group *g)
{
    free(g->world);
    g->world = NULL;
    g->n = 0;
}

void phase_enter(enum phase_kind kind, const char *what, int64_t i,
                 int64_t n, int peer, const struct phase_group *g)
{
    double t = phase_now();
    uint_fast64_t s = atomic_load_explicit(&rec.seq, memory_order_relaxed);
    atomic_store_explicit(&rec.seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&rec.kind, (int)kind, memory_order_relaxed);
    atomic_store_explicit(&rec.what, what, memory_order_relaxed);
    atomic_store_explicit(&rec.i, i, memory_order_relaxed);
    atomic_store_explicit(&rec.n, n, memory_order_relaxed);
    atomic_store_explicit(&rec.peer, peer, memory_order_relaxed);
    atomic_store_explicit(&rec.g, g, memory_order_relaxed);
    atomic_store_explicit(&rec.since, t, memory_order_relaxed);
    atomic_store_explicit(&rec.seq, s + 2, memory_order_release);
}

void phase_step(int64_t step)
{
    atomic_store_explicit(&rec.step, step, memory_order_relaxed);
}

void phase_get(struct phase_rec *out)
{
    for (;;) {
        uint_fast64_t s0 = atomic_load_explicit(&rec.seq,
                                                memory_order_acquire);
        if (s0 & 1)
            continue; /* a writer is in the middle: it takes nanoseconds */
        out->kind = (enum phase_kind)atomic_load_explicit(
            &rec.kind, memory_order_relaxed);
        out->what = atomic_load_explicit(&rec.what, memory_order_relaxed);
        out->i = atomic_load_explicit(&rec.i, memory_order_relaxed);
        out->n = atomic_load_explicit(&rec.n, memory_order_relaxed);
        out->peer = atomic_load_explicit(&rec.peer, memory_order_relaxed);
        out->g = atomic_load_explicit(&rec.g, memory_order_relaxed);
        out->since = atomic_load_explicit(&rec.since, memory_order_relaxed);
        out->step = atomic_load_explicit(&rec.step, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&rec.seq, memory_order_relaxed) == s0) {
            out->seq = s0;
            return;
        }
    }
}

/* ", with world ranks 0,1,3" (self left out), into buf at *at. */
static void group_list(const struct phase_group *g, int self, char *buf,
                       int len, int *at)
{
    int first = 1;
    for (int k = 0; k < g->n && *at < len; k++) {
        if (g->world[k] == self)
            continue;
        *at += snprintf(buf + *at, (size_t)(len - *at), "%s%d",
                        first ? "" : ",", g->world[k]);
        first = 0;
        if (k > 64 && k + 1 < g->n && *at < len) { /* long groups: cut */
            *at += snprintf(buf + *at, (size_t)(len - *at), ",... (%d ranks)",
                            g->n);
            break;
        }
    }
}

void phase_describe(const struct phase_rec *r, int self, char *buf, int len)
{
    static const char *const fmt[PHASE_COUNT] = {
        [PHASE_NONE] = "not started",
        [PHASE_SETUP] = "start-up (%s)",
        [PHASE_COMPUTE] = "computing %s of micro-batch %lld of %lld",
        [PHASE_OPTIM] = "the optimizer update",
        [PHASE_DP_BUCKET] = "waiting for the data-parallel all-reduce (%s) "
                            "of gradient bucket %lld of %lld",
        [PHASE_TP_ALLREDUCE] = "waiting for a tensor-parallel all-reduce "
                               "(%s) of %lld floats",
        [PHASE_PP_RECV] = "waiting to receive the %s of micro-batch %lld",
        [PHASE_PP_SEND] = "waiting for the send of the %s of micro-batch "
                          "%lld",
        [PHASE_COLLECTIVE] = "waiting in the %s",
        [PHASE_DATA] = "waiting for the data loader (%s)",
        [PHASE_VALIDATE] = "validating (%s batch %lld of %lld)",
        [PHASE_CKPT] = "checkpoint I/O (%s)",
        [PHASE_DEBUG_HANG] = "stopped on purpose (%s)",
    };
    int k = r->kind >= 0 && r->kind < PHASE_COUNT ? (int)r->kind : 0;
    const char *what = r->what ? r->what : "";
    int at = snprintf(buf, (size_t)len, fmt[k], what, (long long)r->i,
                      (long long)r->n);
    if (at < 0 || at >= len)
        return;
    if (r->peer >= 0)
        at += snprintf(buf + at, (size_t)(len - at), " %s world rank %d",
                       r->kind == PHASE_PP_SEND ? "to" : "from", r->peer);
    if (r->g && r->g->n > 1 && at < len) {
        at += snprintf(buf + at, (size_t)(len - at), " from the %s (world "
                       "ranks ", r->g->name);
        group_list(r->g, self, buf, len, &at);
        if (at < len)
            at += snprintf(buf + at, (size_t)(len - at), ")");
    }
    if (at < len)
        snprintf(buf + at, (size_t)(len - at), " at step %lld",
                 (long long)r->step);
}
