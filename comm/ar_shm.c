/*
 * ar_shm.c - the all-reduce of a group whose ranks share one node's
 * memory, on buffers inside their shared segments (shm.h): no message,
 * no receive buffer, no copy in or out of MPI.
 *
 * buf is cut into p chunks as the ring cuts it.  Rank c sums chunk c
 * straight out of every rank's segment, x_c + x_{c+1} + ... cyclically
 * (the ring's order, so both give the same bits for any p), into its own
 * buffer, then copies every other rank's summed chunk from that rank's
 * segment.  Per rank the memory traffic is reading n floats and writing
 * n, where the ring over MPI moves each chunk into a receive buffer (a
 * copy), adds it, and copies the all-gather's chunks in: at 2 ranks on a
 * 2-core machine 2.2-3.6x the ring's bus bandwidth from 64 KiB to 128 MiB
 * (`mpitron bench allreduce`).
 *
 * Coordination through each rank's counters in its segment, one writer
 * each, release stores and acquire loads (C11 atomics, lock-free, valid
 * between processes):
 *   start:    ready = seq          my data of this op is final
 *   phase 0:  every ready >= seq  -> sum my chunk; reduced = seq
 *   phase 1:  each other rank's reduced >= seq -> copy its chunk (in rank
 *             order from mine, as far as they are ready); done = seq
 *   phase 2:  every done >= seq   -> complete: nobody reads my buffer any
 *             more, the caller may overwrite it
 * Operations advance in start order on every rank (testing one first
 * advances the older open ones), so one counter per kind suffices.  Tests
 * only poll the counters (and yield the core when they find nothing to
 * do): a rank never blocks another's progress.
 *
 * The ring's halves (allreduce.h, for ZeRO) on the same counters, in the
 * same queue:
 *   reduce-scatter  phase 0 sums chunk q = me + 1, the ring's owner's
 *                   chunk, in the ring's order x_q + x_{q+1} + ... + x_me
 *                   (its bits), into this rank's buffer; no phase 1
 *   all-gather      this rank's chunk q is final on entry: phase 0 does
 *                   nothing; phase 1 copies each other rank r's chunk
 *                   r + 1 from r's segment
 * and phase 2 as above (nobody reads this rank's buffer any more).
 */
#include <sched.h>
#include <string.h>

#include "ar_internal.h"
#include "shm.h"

enum shm_kind { SHM_ALLREDUCE, SHM_REDUCE_SCATTER, SHM_ALLGATHER };

struct shm_state {
    uint64_t seq;
    enum shm_kind kind;
    struct comm_op *next;   /* the next open op of the group */
    int complete;
};

static size_t shm_scratch(const struct comm_group *g, size_t n)
{
    (void)g;
    (void)n;
    return sizeof(struct shm_state);
}

static int shm_start_kind(struct comm_op *op, enum shm_kind kind)
{
    const struct comm_group *g = op->g;
    struct comm_shm *s = g->shm;
    struct shm_state *st = op->scratch;
    if (!ar_scratch_ok(op, sizeof *st) || !s || s->size != g->size ||
        (op->n && !comm_shm_holds(s, op->buf, op->n)))
        return -1;
    st->seq = ++s->started;
    st->kind = kind;
    st->next = NULL;
    st->complete = 0;
    if (s->tail)
        ((struct shm_state *)s->tail->scratch)->next = op;
    else
        s->head = op;
    s->tail = op;
    atomic_store_explicit(&s->ctl[s->rank]->ready, st->seq,
                          memory_order_release);
    return 0;
}

static int shm_start(struct comm_op *op)
{
    return shm_start_kind(op, SHM_ALLREDUCE);
}

static int shm_rs_start(struct comm_op *op)
{
    return shm_start_kind(op, SHM_REDUCE_SCATTER);
}

static int shm_ag_start(struct comm_op *op)
{
    return shm_start_kind(op, SHM_ALLGATHER);
}

/* The chunk a rank owns after the reduce-scatter: the ring's (r + 1). */
static int ring_owner_chunk(int r, int p)
{
    return (r + 1) % p;
}

/* 1 when every rank's counter (one of ready, reduced, done) is at seq */
static int all_at(const struct comm_shm *s, size_t field, uint64_t seq)
{
    for (int r = 0; r < s->size; r++) {
        _Atomic uint64_t *c =
            (_Atomic uint64_t *)((char *)s->ctl[r] + field);
        if (atomic_load_explicit(c, memory_order_acquire) < seq)
            return 0;
    }
    return 1;
}

/* Polls that find nothing to do before each further one yields the core:
 * about 2 us of spinning, the latency of a small op on idle cores. */
#define SHM_SPIN 64

/* Floats per block of sum_chunk: the partial sums stay in L1 while the
 * other ranks' terms are added. */
#define SHM_BLOCK 2048

/* Chunk c summed in the ring's order into this rank's buffer (c is this
 * rank: its own contribution is the first term). */
static void sum_chunk(struct comm_shm *s, size_t off, size_t len,
                      size_t base)
{
    int p = s->size, c = s->rank;
    for (size_t b = 0; b < len; b += SHM_BLOCK) {
        size_t m = len - b < SHM_BLOCK ? len - b : SHM_BLOCK;
        float *restrict o = s->buf[c] + base + off + b;
        for (int k = 1; k < p; k++) {
            const float *restrict x = s->buf[(c + k) % p] + base + off + b;
            for (size_t i = 0; i < m; i++)
                o[i] += x[i];
        }
    }
}

/* The reduce-scatter's sum: chunk q = me + 1 in the ring's order, whose
 * last term is this rank's own (x_q + ... + x_{me-1}, then + x_me in
 * place).  p > 2 sums the other terms in an L1 block first. */
static void sum_owned_chunk(struct comm_shm *s, size_t off, size_t len,
                            size_t base)
{
    int p = s->size, me = s->rank, q = ring_owner_chunk(me, p);
    float acc[SHM_BLOCK];
    if (p < 2) /* the chunk is this rank's whole buffer, summed */
        return;
    for (size_t b = 0; b < len; b += SHM_BLOCK) {
        size_t m = len - b < SHM_BLOCK ? len - b : SHM_BLOCK;
        float *restrict o = s->buf[me] + base + off + b;
        const float *a = s->buf[q] + base + off + b; /* or acc */
        if (p > 2) {
            const float *restrict x = s->buf[(q + 1) % p] + base + off + b;
            for (size_t i = 0; i < m; i++)
                acc[i] = a[i] + x[i];
            for (int k = 2; k < p - 1; k++) {
                x = s->buf[(q + k) % p] + base + off + b;
                for (size_t i = 0; i < m; i++)
                    acc[i] += x[i];
            }
            a = acc;
        }
        for (size_t i = 0; i < m; i++)
            o[i] = a[i] + o[i];
    }
}

/* Advance the group's oldest open op: 1 when it is complete. */
static int shm_advance(struct comm_op *op)
{
    struct comm_shm *s = op->g->shm;
    struct shm_state *st = op->scratch;
    int p = s->size, me = s->rank;
    size_t base = op->n ? (size_t)(op->buf - s->buf[me]) : 0, off, len;
    if (op->phase == 0) {
        if (st->kind != SHM_ALLGATHER) { /* the all-gather's chunk is
                                            final on entry */
            if (!all_at(s, offsetof(struct comm_shm_ctl, ready), st->seq))
                return 0;
            if (st->kind == SHM_ALLREDUCE) {
                ar_part(op->n, (size_t)p, (size_t)me, &off, &len);
                sum_chunk(s, off, len, base);
            } else {
                ar_part(op->n, (size_t)p,
                        (size_t)ring_owner_chunk(me, p), &off, &len);
                sum_owned_chunk(s, off, len, base);
            }
            op->wire_bytes += (uint64_t)(p - 1) * len * sizeof(float);
        }
        atomic_store_explicit(&s->ctl[me]->reduced, st->seq,
                              memory_order_release);
        op->phase = 1;
        op->step = st->kind == SHM_REDUCE_SCATTER ? p : 1;
    }
    if (op->phase == 1) {
        for (; op->step < p; op->step++) {
            int r = (me + op->step) % p;
            if (atomic_load_explicit(&s->ctl[r]->reduced,
                                     memory_order_acquire) < st->seq)
                return 0;
            int c = st->kind == SHM_ALLGATHER ? ring_owner_chunk(r, p) : r;
            ar_part(op->n, (size_t)p, (size_t)c, &off, &len);
            memcpy(s->buf[me] + base + off, s->buf[r] + base + off,
                   len * sizeof(float));
            op->wire_bytes += len * sizeof(float);
        }
        atomic_store_explicit(&s->ctl[me]->done, st->seq,
                              memory_order_release);
        op->phase = 2;
    }
    return all_at(s, offsetof(struct comm_shm_ctl, done), st->seq);
}

/* The group's open ops advance in start order (the counters are
 * monotonic), whichever of them is tested: an op tested or waited for
 * out of order first completes the older ones, which report completion
 * when they are tested next. */
static int shm_test(struct comm_op *op)
{
    struct comm_shm *s = op->g->shm;
    struct shm_state *st = op->scratch;
    while (!st->complete) {
        struct comm_op *h = s->head;
        if (!h)
            return -1;
        if (!shm_advance(h)) {
            /* waiting on another rank: after a short spin, give the core
             * away in case that rank shares it (more ranks than cores), as
             * MPI's progress does when oversubscribed */
            if (++s->idle > SHM_SPIN)
                sched_yield();
            return 0;
        }
        s->idle = 0;
        struct shm_state *hs = h->scratch;
        hs->complete = 1;
        s->head = hs->next;
        if (!s->head)
            s->tail = NULL;
    }
    return 1;
}

static const struct comm_op_ops shm_ops = {
    .name = "shm", .start = shm_start, .test = shm_test, .finish = NULL,
};

const struct allreduce_algo ar_shm = {
    .name = "shm", .ops = &shm_ops, .scratch = shm_scratch,
};

static const struct comm_op_ops shm_rs_ops = {
    .name = "shm_reduce_scatter", .start = shm_rs_start, .test = shm_test,
    .finish = NULL,
};

static const struct comm_op_ops shm_ag_ops = {
    .name = "shm_allgather", .start = shm_ag_start, .test = shm_test,
    .finish = NULL,
};

const struct allreduce_algo ar_shm_rs = {
    .name = "shm_reduce_scatter", .ops = &shm_rs_ops, .scratch = shm_scratch,
};

const struct allreduce_algo ar_shm_ag = {
    .name = "shm_allgather", .ops = &shm_ag_ops, .scratch = shm_scratch,
};
