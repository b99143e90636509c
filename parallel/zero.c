/*
 * zero.c - ZeRO's shard plan, the order of unit uses, and the pools of
 * reduce-scatter / all-gather operations over the dp group (see zero.h).
 */
#include "zero.h"
#include "phase.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the plan ----------------------------------------------------------- */

static int plan_fail(struct zero_plan *zp, char *err, size_t errlen,
                     const char *msg)
{
    snprintf(err, errlen, "ZeRO plan: %s", msg);
    zero_plan_free(zp);
    return -1;
}

/* The pieces of unit spec s; returns the count added at zp->pc[np..]. */
static int add_pieces(struct zero_plan *zp, const struct zero_tensor *t,
                      const struct zero_unit_spec *s, int np)
{
    int cut[3] = {s->t0, s->t1, s->t1}, k = 0;
    if (s->split_first && s->t1 - s->t0 > 1)
        cut[1] = s->t0 + 1;
    for (int i = 0; i < 2 && cut[i] < cut[i + 1]; i++, k++) {
        struct zero_piece *pc = &zp->pc[np + k];
        int a = cut[i], b = cut[i + 1];
        pc->off = t[a].off;
        pc->n = t[b - 1].off + t[b - 1].numel - t[a].off;
        comm_ring_own(pc->n, zp->p, zp->rank, &pc->own_off, &pc->own_len);
        pc->shard_off = zp->shard_n;
        zp->shard_n += pc->own_len;
        if (pc->n > zp->max_piece)
            zp->max_piece = pc->n;
    }
    return k;
}

/* This rank's chunks cut at tensor boundaries (both are in arena order). */
static int make_segs(struct zero_plan *zp, const struct zero_tensor *t,
                     int nt)
{
    int cap = zp->npieces + nt, n = 0, ti = 0;
    zp->seg = calloc((size_t)cap, sizeof(*zp->seg));
    if (!zp->seg)
        return -1;
    for (int k = 0; k < zp->npieces; k++) {
        const struct zero_piece *pc = &zp->pc[k];
        size_t lo = pc->off + pc->own_off, hi = lo + pc->own_len;
        while (ti < nt && t[ti].off + t[ti].numel <= lo)
            ti++;
        for (int j = ti; j < nt && t[j].off < hi; j++) {
            size_t a = t[j].off > lo ? t[j].off : lo;
            size_t z = t[j].off + t[j].numel < hi ? t[j].off + t[j].numel
                                                   : hi;
            if (a >= z)
                continue;
            struct zero_seg *sg = &zp->seg[n++];
            sg->tensor = j;
            sg->t_off = a - t[j].off;
            sg->len = z - a;
            sg->arena_off = a;
            sg->shard_off = pc->shard_off + (a - lo);
        }
    }
    zp->nsegs = n;
    return 0;
}

int zero_plan_build(struct zero_plan *zp, const struct zero_tensor *t, int nt,
                    const struct zero_unit_spec *us, int nu, int p, int rank,
                    char *err, size_t errlen)
{
    memset(zp, 0, sizeof(*zp));
    zp->p = p;
    zp->rank = rank;
    int next = 0;
    for (int i = 0; i < nu; i++) {
        if (us[i].t0 != next || us[i].t1 <= us[i].t0 || us[i].t1 > nt)
            return plan_fail(zp, err, errlen, "units do not tile the "
                             "tensors in order");
        next = us[i].t1;
    }
    for (int i = 1; i < nt; i++)
        if (t[i].off != t[i - 1].off + t[i - 1].numel)
            return plan_fail(zp, err, errlen, "tensors do not abut");
    if (next != nt)
        return plan_fail(zp, err, errlen, "units leave tensors out");
    zp->total = nt ? t[nt - 1].off + t[nt - 1].numel - t[0].off : 0;
    zp->pc = calloc((size_t)(2 * nu + 1), sizeof(*zp->pc));
    zp->u = calloc((size_t)(nu + 1), sizeof(*zp->u));
    if (!zp->pc || !zp->u)
        return plan_fail(zp, err, errlen, "out of memory");
    for (int i = 0; i < nu; i++) {
        struct zero_unit *u = &zp->u[i];
        u->key = us[i].key;
        u->p0 = zp->npieces;
        zp->npieces += add_pieces(zp, t, &us[i], zp->npieces);
        u->p1 = zp->npieces;
        u->off = t[us[i].t0].off;
        u->n = t[us[i].t1 - 1].off + t[us[i].t1 - 1].numel - u->off;
        if (u->key < 0 && u->n > zp->embed_n)
            zp->embed_n = u->n;
        if (u->key >= 0 && u->n > zp->max_block_n)
            zp->max_block_n = u->n;
    }
    zp->nunits = nu;
    if (make_segs(zp, t, nt) < 0)
        return plan_fail(zp, err, errlen, "out of memory");
    return 0;
}

void zero_plan_free(struct zero_plan *zp)
{
    free(zp->pc);
    free(zp->u);
    free(zp->seg);
    memset(zp, 0, sizeof(*zp));
}

int zero_unit_of(const struct zero_plan *zp, int key)
{
    for (int i = 0; i < zp->nunits; i++)
        if (zp->u[i].key == key)
            return i;
    return -1;
}

/* ---- the order of uses -------------------------------------------------- */

static void add_use(struct zero_order *o, int unit, enum zero_dir dir, int mb)
{
    struct zero_use *u = &o->use[o->n++];
    memset(u, 0, sizeof(*u));
    u->unit = unit;
    u->dir = dir;
    u->mb = mb;
    u->next_unit = -1;
}

/* The uses of one forward or backward of micro-batch mb. */
static void add_action(struct zero_order *o, enum zero_dir dir, int mb,
                       int eu, const int *bu, int nb, int first, int last)
{
    int start = o->n;
    int head = dir == ZERO_FWD ? first : last; /* E before the blocks */
    int tail = dir == ZERO_FWD ? last : first; /* E after them */
    if (eu >= 0 && head)
        add_use(o, eu, dir, mb);
    for (int i = 0; i < nb; i++)
        add_use(o, bu[dir == ZERO_FWD ? i : nb - 1 - i], dir, mb);
    if (eu >= 0 && tail)
        add_use(o, eu, dir, mb);
    if (dir != ZERO_BWD)
        return;
    /* a unit appears at most twice in one backward (E on a single stage):
     * its first and last appearance there */
    for (int i = start; i < o->n; i++) {
        o->use[i].grad_first = o->use[i].grad_last = 1;
        for (int j = start; j < o->n; j++) {
            if (j == i || o->use[j].unit != o->use[i].unit)
                continue;
            if (j < i)
                o->use[i].grad_first = 0;
            else
                o->use[i].grad_last = 0;
        }
    }
}

int zero_order_build(struct zero_order *o, const struct pp_schedule *sc,
                     int embed_unit, const int *block_unit, int nblocks,
                     int first, int last, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    int per = nblocks + 2, cap = 0, nu = nblocks + 1;
    for (int i = 0; i < sc->n; i++)
        cap += sc->a[i].op == PP_FWD || sc->a[i].op == PP_BWD ? per : 0;
    o->use = calloc((size_t)(cap ? cap : 1), sizeof(*o->use));
    int maxu = embed_unit;
    for (int i = 0; i < nblocks; i++)
        maxu = block_unit[i] > maxu ? block_unit[i] : maxu;
    nu = maxu + 1 > nu ? maxu + 1 : nu;
    char *seen = calloc((size_t)nu, 1);
    if (!o->use || !seen) {
        free(seen);
        zero_order_free(o);
        snprintf(err, errlen, "out of memory building the ZeRO order");
        return -1;
    }
    for (int i = 0; i < sc->n; i++) {
        if (sc->a[i].op == PP_FWD)
            add_action(o, ZERO_FWD, sc->a[i].mb, embed_unit, block_unit,
                       nblocks, first, last);
        else if (sc->a[i].op == PP_BWD)
            add_action(o, ZERO_BWD, sc->a[i].mb, embed_unit, block_unit,
                       nblocks, first, last);
    }
    /* backwards: the last backward use of each unit, the next other unit */
    int next = -1;
    for (int i = o->n - 1; i >= 0; i--) {
        struct zero_use *u = &o->use[i];
        if (u->dir == ZERO_BWD && !seen[u->unit]) {
            u->step_last = 1;
            seen[u->unit] = 1;
        }
        if (i + 1 < o->n && o->use[i + 1].unit != u->unit)
            next = o->use[i + 1].unit;
        u->next_unit = next;
    }
    free(seen);
    return 0;
}

void zero_order_free(struct zero_order *o)
{
    free(o->use);
    memset(o, 0, sizeof(*o));
}

/* ---- operations --------------------------------------------------------- */

static int pool_init(struct zero_op **pool, int n, size_t bytes)
{
    *pool = calloc((size_t)(n ? n : 1), sizeof(**pool));
    if (!*pool)
        return -1;
    for (int i = 0; i < n; i++) {
        (*pool)[i].scratch_bytes = bytes;
        (*pool)[i].scratch = bytes ? malloc(bytes) : NULL;
        if (bytes && !(*pool)[i].scratch)
            return -1;
    }
    return 0;
}

int zero_comm_init(struct zero_comm *zc, const struct comm_group *g,
                   size_t max_n, int nrs, int nag, char *err, size_t errlen)
{
    memset(zc, 0, sizeof(*zc));
    zc->g = g;
    zc->nrs = nrs;
    zc->nag = nag;
    size_t rb = comm_reduce_scatter->scratch(g, max_n);
    size_t ab = comm_allgather->scratch(g, max_n);
    zc->scratch_bytes = (size_t)nrs * rb + (size_t)nag * ab;
    zc->capspan = 256;
    zc->span = malloc((size_t)zc->capspan * 2 * sizeof(double));
    if (pool_init(&zc->rs, nrs, rb) < 0 || pool_init(&zc->ag, nag, ab) < 0 ||
        !zc->span) {
        zero_comm_free(zc);
        snprintf(err, errlen, "out of memory for ZeRO's communication "
                 "buffers (%zu bytes)", zc->scratch_bytes);
        return -1;
    }
    return 0;
}

static void pool_free(struct zero_op *pool, int n)
{
    for (int i = 0; pool && i < n; i++)
        free(pool[i].scratch);
    free(pool);
}

void zero_comm_free(struct zero_comm *zc)
{
    if (zc->rs && zc->ag)
        zero_comm_wait_all(zc);
    pool_free(zc->rs, zc->nrs);
    pool_free(zc->ag, zc->nag);
    free(zc->span);
    memset(zc, 0, sizeof(*zc));
}

/* Record a completed operation and free its slot. */
static void reap(struct zero_comm *zc, struct zero_op *o)
{
    o->open = 0;
    zc->wire_bytes += o->op.wire_bytes;
    if (zc->nspan == zc->capspan) {
        double *s = realloc(zc->span, (size_t)zc->capspan * 4 *
                                          sizeof(double));
        if (!s)
            return; /* accounting only: drop the span */
        zc->span = s;
        zc->capspan *= 2;
    }
    /* an operation started before the clear counts from the clear */
    zc->span[2 * zc->nspan] = o->op.t_start > zc->t_clear ? o->op.t_start
                                                          : zc->t_clear;
    zc->span[2 * zc->nspan + 1] = o->op.t_done;
    zc->nspan++;
}

static int test_pool(struct zero_comm *zc, struct zero_op *pool, int n)
{
    for (int i = 0; i < n; i++) {
        if (!pool[i].open)
            continue;
        int r = comm_op_test(&pool[i].op);
        if (r < 0)
            return -1;
        if (r == 1)
            reap(zc, &pool[i]);
    }
    return 0;
}

int zero_comm_progress(struct zero_comm *zc)
{
    return test_pool(zc, zc->rs, zc->nrs) | test_pool(zc, zc->ag, zc->nag);
}

static struct zero_op *find(const struct zero_comm *zc, int64_t h)
{
    for (int i = 0; i < zc->nrs; i++)
        if (zc->rs[i].open && (int64_t)zc->rs[i].seq == h)
            return &zc->rs[i];
    for (int i = 0; i < zc->nag; i++)
        if (zc->ag[i].open && (int64_t)zc->ag[i].seq == h)
            return &zc->ag[i];
    return NULL;
}

int zero_comm_done(const struct zero_comm *zc, int64_t h)
{
    return h <= 0 || find(zc, h) == NULL;
}

int zero_comm_wait(struct zero_comm *zc, int64_t h)
{
    if (zero_comm_done(zc, h))
        return 0;
    /* the hang watchdog sees the wait, then the phase it interrupted */
    const struct zero_op *op = find(zc, h);
    struct phase_rec was;
    phase_get(&was);
    phase_enter(PHASE_COLLECTIVE, op >= zc->rs && op < zc->rs + zc->nrs
                ? "ZeRO reduce-scatter of gradients"
                : "ZeRO all-gather of parameters", -1, -1, -1, &zc->g->pg);
    double t0 = MPI_Wtime();
    int rc = 0;
    while (rc == 0 && !zero_comm_done(zc, h))
        rc = zero_comm_progress(zc);
    zc->t_wait += MPI_Wtime() - t0;
    phase_enter(was.kind, was.what, was.i, was.n, was.peer, was.g);
    return rc;
}

int zero_comm_wait_all(struct zero_comm *zc)
{
    int rc = 0;
    for (;;) {
        uint64_t oldest = 0;
        for (int i = 0; i < zc->nrs; i++)
            if (zc->rs[i].open && (!oldest || zc->rs[i].seq < oldest))
                oldest = zc->rs[i].seq;
        for (int i = 0; i < zc->nag; i++)
            if (zc->ag[i].open && (!oldest || zc->ag[i].seq < oldest))
                oldest = zc->ag[i].seq;
        if (!oldest)
            return rc;
        if (zero_comm_wait(zc, (int64_t)oldest) < 0)
            return -1;
    }
}

/* A free slot of pool, after waiting for its oldest operation if none. */
static struct zero_op *slot(struct zero_comm *zc, struct zero_op *pool, int n)
{
    struct zero_op *oldest = NULL;
    for (int i = 0; i < n; i++) {
        if (!pool[i].open)
            return &pool[i];
        if (!oldest || pool[i].seq < oldest->seq)
            oldest = &pool[i];
    }
    if (!oldest || zero_comm_wait(zc, (int64_t)oldest->seq) < 0)
        return NULL;
    return oldest;
}

static int64_t start(struct zero_comm *zc, struct zero_op *pool, int n,
                     const struct allreduce_algo *a, float *buf, size_t len)
{
    struct zero_op *o = slot(zc, pool, n);
    if (!o)
        return -1;
    allreduce_op_init(&o->op, a, zc->g, buf, len, o->scratch,
                      o->scratch_bytes);
    if (comm_op_start(&o->op) != 0)
        return -1;
    o->open = 1;
    o->seq = ++zc->seq;
    zc->nstarted++;
    zc->nshm += strncmp(a->name, "shm", 3) == 0;
    return (int64_t)o->seq;
}

int64_t zero_reduce_scatter_start(struct zero_comm *zc, float *buf, size_t n)
{
    return start(zc, zc->rs, zc->nrs, comm_reduce_scatter_for(zc->g, buf, n),
                 buf, n);
}

int64_t zero_allgather_start(struct zero_comm *zc, float *buf, size_t n)
{
    return start(zc, zc->ag, zc->nag, comm_allgather_for(zc->g, buf, n),
                 buf, n);
}

void zero_comm_clear(struct zero_comm *zc)
{
    zc->t_clear = MPI_Wtime();
    zc->wire_bytes = 0;
    zc->t_wait = 0.0;
    zc->nspan = 0;
}

static int cmp_start(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double zero_comm_busy(struct zero_comm *zc)
{
    double *s = zc->span; /* sorted in place: the order is not needed */
    qsort(s, (size_t)zc->nspan, 2 * sizeof(double), cmp_start);
    double busy = 0.0, lo = 0.0, hi = -1.0;
    for (int i = 0; i < zc->nspan; i++) {
        if (s[2 * i] > hi) {
            busy += hi > lo ? hi - lo : 0.0;
            lo = s[2 * i];
            hi = s[2 * i + 1];
        } else if (s[2 * i + 1] > hi) {
            hi = s[2 * i + 1];
        }
    }
    return busy + (hi > lo ? hi - lo : 0.0);
}
