/*
 * bucket.c - gradient buckets that start their reduction as soon as their
 * last tensor is final (contract in bucket.h).
 */
#include "bucket.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm.h"

static double wall(void)
{
    return MPI_Wtime();
}

/* Group consecutive adjacent tensors into buckets of at most cap bytes. */
int bucket_plan(const struct bucket_tensor *t, int nt, size_t cap,
                int *tensor_bucket)
{
    size_t lo = 0, hi = 0;
    int nb = -1;
    for (int i = 0; i < nt; i++) {
        size_t a = t[i].off, z = t[i].off + t[i].numel;
        int adjacent = nb >= 0 && (z == lo || a == hi);
        int fits = nb >= 0 && (hi - lo + t[i].numel) * sizeof(float) <= cap;
        if (!adjacent || !fits) {
            nb++;
            lo = a;
            hi = z;
        } else {
            lo = a < lo ? a : lo;
            hi = z > hi ? z : hi;
        }
        tensor_bucket[i] = nb;
    }
    return nb + 1;
}

static int plan(struct bucketer *bk, const struct bucket_tensor *t, int nt,
                size_t cap)
{
    bk->b = calloc((size_t)(nt ? nt : 1), sizeof(*bk->b));
    bk->tensor_bucket = calloc((size_t)(nt ? nt : 1), sizeof(int));
    if (!bk->b || !bk->tensor_bucket)
        return -1;
    bk->nb = bucket_plan(t, nt, cap, bk->tensor_bucket);
    for (int i = 0; i < nt; i++) {
        struct bucket *b = &bk->b[bk->tensor_bucket[i]];
        size_t a = t[i].off, z = t[i].off + t[i].numel;
        if (b->t1 == 0) { /* its first tensor */
            b->t0 = i;
            b->off = a;
            b->n = z - a;
        } else {
            size_t lo = a < b->off ? a : b->off;
            size_t hi = z > b->off + b->n ? z : b->off + b->n;
            b->off = lo;
            b->n = hi - lo;
        }
        b->t1 = i + 1;
    }
    bk->nt = nt;
    return 0;
}

static int cmp_seg(const void *x, const void *y)
{
    const struct codec_seg *a = x, *b = y;
    return (a->off > b->off) - (a->off < b->off);
}

/* Segments of bucket b (offsets relative to the bucket), ascending. */
static int make_segs(struct bucket *b, const struct bucket_tensor *t)
{
    int ns = b->t1 - b->t0;
    b->seg = calloc((size_t)ns, sizeof(*b->seg));
    if (!b->seg)
        return -1;
    for (int k = 0; k < ns; k++) {
        const struct bucket_tensor *x = &t[b->t0 + k];
        b->seg[k].off = x->off - b->off;
        b->seg[k].rows = x->cols ? x->rows : x->numel;
        b->seg[k].cols = x->cols;
    }
    qsort(b->seg, (size_t)ns, sizeof(*b->seg), cmp_seg);
    return 0;
}

static int setup_bucket(struct bucketer *bk, struct bucket *b,
                        const struct bucket_tensor *t,
                        const struct codec_ctx *proto, uint64_t seed)
{
    /* auto: shm when the gradients live in the group's shared segments
     * (then no message is needed), else by size and topology */
    if (bk->algo)
        b->algo = bk->algo;
    else if (comm_shm_holds(bk->g->shm, bk->grads + b->off, b->n))
        b->algo = allreduce_find("shm");
    else
        b->algo = allreduce_pick(&bk->tune, bk->g, b->n);
    size_t need = b->algo->scratch(bk->g, b->n);
    if (make_segs(b, t) < 0)
        return -1;
    if (bk->compress) {
        b->cctx = *proto;
        if (codec_ctx_init(&b->cctx, b->seg, b->t1 - b->t0, b->n, seed) < 0)
            return -1;
        size_t cs = b->cctx.codec->scratch(&b->cctx, bk->g);
        need = cs > need ? cs : need;
    }
    b->scratch_bytes = need;
    b->scratch = need ? malloc(need) : NULL;
    return need && !b->scratch ? -1 : 0;
}

int bucketer_init(struct bucketer *bk, const struct comm_group *g,
                  float *grads, const struct bucket_tensor *t, int nt,
                  size_t bucket_bytes, const char *algo,
                  const struct allreduce_tune *tune, const char *compress,
                  int compress_warmup, uint64_t seed, char *err,
                  size_t errlen)
{
    memset(bk, 0, sizeof(*bk));
    bk->g = g;
    bk->grads = grads;
    bk->compress_warmup = compress_warmup;
    if (tune)
        bk->tune = *tune;
    else
        allreduce_tune_defaults(&bk->tune);
    if (strcmp(algo, "auto") != 0) {
        bk->algo = allreduce_find(algo);
        if (!bk->algo) {
            snprintf(err, errlen, "allreduce=%s: unknown algorithm (mpi | "
                     "ring | rhd | hier | shm | auto)", algo);
            return -1;
        }
        if (strcmp(algo, "shm") == 0 && !bk->g->shm) {
            snprintf(err, errlen, "allreduce=shm: the gradients are not in "
                     "shared memory (it needs every rank of the "
                     "data-parallel group on one node, zero 0 or 1 "
                     "and compress=none)");
            return -1;
        }
    }
    struct codec_ctx proto;
    memset(&proto, 0, sizeof(proto));
    if (codec_parse(compress ? compress : "none", &proto, err, errlen) < 0)
        return -1;
    bk->compress = proto.codec != NULL;
    if (plan(bk, t, nt, bucket_bytes ? bucket_bytes : 1) < 0)
        goto oom;
    for (int i = 0; i < bk->nb; i++)
        if (setup_bucket(bk, &bk->b[i], t, &proto,
                         seed * 1000003u + (uint64_t)i) < 0)
            goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory planning gradient buckets");
    bucketer_free(bk);
    return -1;
}

void bucketer_free(struct bucketer *bk)
{
    for (int i = 0; bk->b && i < bk->nb; i++) {
        if (bk->b[i].cctx.codec)
            codec_ctx_free(&bk->b[i].cctx);
        free(bk->b[i].scratch);
        free(bk->b[i].seg);
    }
    free(bk->b);
    free(bk->tensor_bucket);
    memset(bk, 0, sizeof(*bk));
}

void bucketer_begin(struct bucketer *bk, int64_t step)
{
    for (int i = 0; i < bk->nb; i++) {
        struct bucket *b = &bk->b[i];
        b->pending = b->t1 - b->t0;
        b->started = b->done = 0;
        b->t_start = b->t_done = 0;
    }
    bk->compress_now = bk->compress && step >= bk->compress_warmup;
    bk->t_wait = bk->t_comm = 0;
    bk->wire_bytes = 0;
    bk->local_sumsq = 0.0;
}

void bucketer_set_momentum(struct bucketer *bk, const float *mom,
                           float beta1)
{
    bk->mom = mom;
    bk->beta1 = beta1;
}

/* buf (n) = (beta1 / p) m + (1 - beta1) buf; returns sum buf^2 before. */
static double to_momentum(float *restrict buf, const float *restrict m,
                          size_t n, float beta1, int p)
{
    const float c1 = beta1 / (float)p, c2 = 1.0f - beta1;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += (double)buf[i] * buf[i];
        buf[i] = c1 * m[i] + c2 * buf[i];
    }
    return s;
}

static int start(struct bucketer *bk, struct bucket *b)
{
    float *buf = bk->grads + b->off;
    if (bk->compress_now && bk->mom)
        bk->local_sumsq += to_momentum(buf, bk->mom + b->off, b->n,
                                       bk->beta1, bk->g->size);
    if (bk->compress_now)
        codec_op_init(&b->op, &b->cctx, bk->g, buf, b->scratch,
                      b->scratch_bytes);
    else
        allreduce_op_init(&b->op, b->algo, bk->g, buf, b->n, b->scratch,
                          b->scratch_bytes);
    b->started = 1;
    b->t_start = wall();
    return comm_op_start(&b->op);
}

int bucketer_ready(struct bucketer *bk, int i)
{
    struct bucket *b = &bk->b[bk->tensor_bucket[i]];
    if (--b->pending > 0)
        return 0;
    return start(bk, b);
}

static void finish(struct bucketer *bk, struct bucket *b)
{
    b->done = 1;
    b->t_done = wall();
    bk->wire_bytes += b->op.wire_bytes;
}

int bucketer_progress(struct bucketer *bk)
{
    for (int i = 0; i < bk->nb; i++) {
        struct bucket *b = &bk->b[i];
        if (!b->started || b->done)
            continue;
        int r = comm_op_test(&b->op);
        if (r < 0)
            return -1;
        if (r == 1)
            finish(bk, b);
    }
    return 0;
}

int bucketer_wait(struct bucketer *bk)
{
    double t0 = wall();
    int rc = 0;
    for (int i = 0; i < bk->nb; i++) {
        struct bucket *b = &bk->b[i];
        if (!b->started)
            rc |= start(bk, b); /* a tensor never reported: still reduce */
        if (!b->done) {
            phase_enter(PHASE_DP_BUCKET, b->op.ops->name, i + 1, bk->nb, -1,
                        &bk->g->pg);
            rc |= comm_op_wait(&b->op);
            finish(bk, b);
        }
    }
    double t1 = wall();
    bk->t_wait = t1 - t0;
    /* union of the [start, done] spans, which begin in bucket order */
    double lo = 0, hi = -1;
    for (int i = 0; i < bk->nb; i++) {
        struct bucket *b = &bk->b[i];
        if (b->t_start > hi) {
            if (hi > lo)
                bk->t_comm += hi - lo;
            lo = b->t_start;
            hi = b->t_done;
        } else if (b->t_done > hi)
            hi = b->t_done;
    }
    if (hi > lo)
        bk->t_comm += hi - lo;
    return rc ? -1 : 0;
}

void bucketer_state(const struct bucketer *bk, int i, float **p, size_t *n)
{
    const struct bucket *b = &bk->b[i];
    *p = b->cctx.codec ? b->cctx.state : NULL;
    *n = b->cctx.codec ? b->cctx.state_n : 0;
}

void bucketer_state_reset(struct bucketer *bk)
{
    for (int i = 0; i < bk->nb; i++)
        codec_ctx_reset(&bk->b[i].cctx);
}
