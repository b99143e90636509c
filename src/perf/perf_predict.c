/*
 * perf_predict.c - one layout's step time and memory (perf_predict), the
 * fastest layout that fits (perf_layout_search), and layout=auto.
 */
#include "perf_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "ckpt_io.h"
#include "codec.h"
#include "log.h"

/* Everything about a layout that its stages share. */
struct plan {
    const struct perf_calib *pc;
    const struct config *c;
    const struct perf_layout *ly;
    struct gpt_config gc;
    struct perf_compute cc;      /* one micro-batch, this layout */
    struct allreduce_tune tune;
    double tp_ar;                /* one tensor-parallel all-reduce */
    int dp_nodes, m, lossy;
    const char *kind;            /* the buckets' reduction */
};

/* Floats PowerSGD sends for tensor d (rank r): r (rows + cols) for a
 * matrix that gains, else all of it. */
static double psgd_floats(const struct tensor_desc *d, double r)
{
    if (d->ndim != 2)
        return (double)d->numel;
    double rows = (double)d->count[0], cols = (double)d->count[1];
    double k = r < rows ? r : rows;
    k = k < cols ? k : cols;
    return k * (rows + cols) < rows * cols ? k * (rows + cols) : rows * cols;
}

/* When the last tensor of each bucket is final, seconds into the last
 * backward: the head first, the blocks from the last, the embedding at
 * the end.  ready/cost: nb entries (allocated); returns nb or -1. */
static int stage_buckets(const struct plan *P, const struct tensor_table *tt,
                         int last, double head_b, double blk_b, double b_end,
                         int l1, double **ready, double **cost, char *err,
                         size_t errlen)
{
    int n = tt->n;
    struct bucket_tensor *bt = calloc((size_t)n + 1, sizeof(*bt));
    int *tb = calloc((size_t)n + 1, sizeof(int));
    double *when = calloc((size_t)n + 1, sizeof(double));
    double *cf = calloc((size_t)n + 1, sizeof(double));
    *ready = calloc((size_t)n + 1, sizeof(double));
    *cost = calloc((size_t)n + 1, sizeof(double));
    int nb = -1;
    if (!bt || !tb || !when || !cf || !*ready || !*cost) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    struct codec_ctx cctx;
    memset(&cctx, 0, sizeof(cctx));
    codec_parse(P->c->compress, &cctx, err, errlen);
    for (int p = 0; p < n; p++) { /* production order: the table reversed */
        const struct tensor_desc *d = &tt->t[n - 1 - p];
        bt[p].off = d->off;
        bt[p].numel = d->numel;
        when[p] = d->layer >= 0 ? (last ? head_b : 0.0) + (l1 - d->layer) * blk_b
                  : !strncmp(d->name, "lnf.", 4) ? head_b : b_end;
        cf[p] = cctx.codec && !strcmp(cctx.codec->name, "powersgd")
                    ? psgd_floats(d, cctx.param) : 0.0;
    }
    size_t cap = (size_t)((double)P->c->bucket_mb * 1048576.0);
    nb = bucket_plan(bt, n, cap ? cap : 1, tb);
    double *bytes = calloc((size_t)nb + 1, sizeof(double));
    double *comp = calloc((size_t)nb + 1, sizeof(double));
    if (!bytes || !comp) {
        free(bytes);
        free(comp);
        snprintf(err, errlen, "out of memory");
        nb = -1;
        goto out;
    }
    for (int p = 0; p < n; p++) {
        int k = tb[p];
        bytes[k] += 4.0 * (double)bt[p].numel;
        comp[k] += cf[p];
        (*ready)[k] = when[p] > (*ready)[k] ? when[p] : (*ready)[k];
    }
    for (int k = 0; k < nb && nb > 0; k++) {
        (*cost)[k] = perf_comm_time(P->pc, P->kind, bytes[k], P->ly->dp,
                                    P->dp_nodes, P->ly->rpn, &P->tune,
                                    comp[k], err, errlen);
        if ((*cost)[k] < 0) {
            nb = -1;
            break;
        }
    }
    free(bytes);
    free(comp);
out:
    free(bt);
    free(tb);
    free(when);
    free(cf);
    return nb;
}

/* ---- ZeRO (parallel/perf.h: the formulas) ---------------------------- */

/* A stage's units in forward order as parallel/zero.c cuts them: the
 * embedding unit (every tensor outside a block: wte, wpe, lnf) and each
 * block, with one micro-batch's compute of each use. */
struct zunits {
    int nblk, has_e;
    double e_bytes, *b_bytes; /* nblk entries, block l0 + i */
    double e_rs, *b_rs;       /* a reduce-scatter (= an all-gather) */
};

static int zunits_init(const struct plan *P, const struct tensor_table *tt,
                       int l0, int l1, struct zunits *u, char *err,
                       size_t errlen)
{
    memset(u, 0, sizeof(*u));
    u->nblk = l1 - l0;
    u->b_bytes = calloc((size_t)u->nblk + 1, sizeof(double));
    u->b_rs = calloc((size_t)u->nblk + 1, sizeof(double));
    if (!u->b_bytes || !u->b_rs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < tt->n; i++) {
        const struct tensor_desc *d = &tt->t[i];
        double *to = d->layer >= 0 ? &u->b_bytes[d->layer - l0]
                                   : &u->e_bytes;
        *to += 4.0 * (double)d->numel;
    }
    u->has_e = u->e_bytes > 0;
    /* the trainer's halves: shm's on one node with zero=1 (the arenas in
     * shared memory; an uncalibrated shm is bounded by the ring), else
     * the ring's */
    const struct config *c = P->c;
    const char *kind = c->zero == 1 && P->dp_nodes == 1 &&
                               !strcmp(c->compress, "none") &&
                               (!strcmp(c->allreduce, "auto") ||
                                !strcmp(c->allreduce, "shm"))
                           ? "shm" : "ring";
    for (int i = 0; i <= u->nblk; i++) {
        double bytes = i < u->nblk ? u->b_bytes[i] : u->e_bytes;
        double t = bytes > 0 ? perf_comm_time(P->pc, kind, bytes, P->ly->dp,
                                              P->dp_nodes, P->ly->rpn, NULL,
                                              0, err, errlen)
                             : 0.0;
        if (t < 0)
            return -1;
        *(i < u->nblk ? &u->b_rs[i] : &u->e_rs) = 0.5 * t; /* one half */
    }
    return 0;
}

static void zunits_free(struct zunits *u)
{
    free(u->b_bytes);
    free(u->b_rs);
}

/* ZeRO-3: what a micro-batch's forward and backward wait for their
 * units' gathers (the next prefetched during each use; the embedding
 * unit keeps its own slot; the last two blocks of the forward are still
 * in the two block slots when backward starts). */
static int zero3_waits(const struct zunits *u, int first, int last,
                       const double *use_f, const double *use_b,
                       double *wf, double *wb)
{
    int n = u->nblk + 2, k = 0;
    double *ag = calloc((size_t)n, sizeof(double));
    double *use = calloc((size_t)n, sizeof(double));
    if (!ag || !use) {
        free(ag);
        free(use);
        return -1;
    }
    if (first)
        ag[k] = u->e_rs, use[k++] = use_f[0];
    for (int i = 0; i < u->nblk; i++)
        ag[k] = u->b_rs[i], use[k++] = use_f[1];
    if (last)
        ag[k] = first ? 0.0 : u->e_rs, use[k++] = use_f[2];
    *wf = perf_gather_exposed(k, ag, use, 1);
    k = 0;
    if (last)
        ag[k] = 0.0, use[k++] = use_b[2];
    for (int i = u->nblk - 1; i >= 0; i--)
        ag[k] = u->nblk - i <= 2 ? 0.0 : u->b_rs[i], use[k++] = use_b[1];
    if (first)
        ag[k] = 0.0, use[k++] = use_b[0];
    *wb = perf_gather_exposed(k, ag, use, 1);
    free(ag);
    free(use);
    return 0;
}

/* ZeRO-1: what the first forward waits for the gathers after the
 * update (all queued at once; stage 0's, the others start later). */
static double zero1_wait(const struct zunits *u, int first, int last,
                         const double *use_f)
{
    int n = u->nblk + 2, k = 0;
    double ag[n], use[n];
    if (first || last)
        ag[k] = u->e_rs, use[k++] = first ? use_f[0] : 0.0;
    for (int i = 0; i < u->nblk; i++)
        ag[k] = u->b_rs[i], use[k++] = use_f[1];
    return perf_gather_exposed(k, ag, use, 0);
}

/* The reduce-scatters as the step's queue: units in the order of their
 * last backward use (blocks from the last, the embedding unit at the
 * end), once (stage 1) or after every micro-batch (stages 2, 3: micro-
 * batch i's backward `period` x (m - 1 - i) before the last one). */
static int zero_queue(const struct plan *P, const struct zunits *u,
                      int last, double head_b, double blk_b, double b_end,
                      double period, struct perf_stage *st)
{
    int per = u->nblk + u->has_e, reps = P->c->zero >= 2 ? P->m : 1;
    double *ready = calloc((size_t)(per * reps) + 1, sizeof(double));
    double *cost = calloc((size_t)(per * reps) + 1, sizeof(double));
    if (!ready || !cost) {
        free(ready);
        free(cost);
        return -1;
    }
    int k = 0;
    for (int r = 0; r < reps; r++) {
        double off = -(double)(reps - 1 - r) * period;
        for (int i = u->nblk - 1; i >= 0; i--) {
            ready[k] = off + (last ? head_b : 0.0) + (u->nblk - i) * blk_b;
            cost[k++] = u->b_rs[i];
        }
        if (u->has_e)
            ready[k] = off + b_end, cost[k++] = u->e_rs;
    }
    st->nb = k;
    st->ready = ready;
    st->cost = cost;
    return 0;
}

/* Stage s under ZeRO: figures (stage 3's waits), the queue, memory;
 * *wait1: ZeRO-1's gather wait of the first forward (stage 0). */
static int zero_fill(const struct plan *P, const struct tensor_table *tt,
                     int l0, int l1, double blk_f, double blk_b,
                     double head_b, struct perf_stage *st, double *mem,
                     double *wait1, char *err, size_t errlen)
{
    const struct perf_compute *cc = &P->cc;
    int first = l0 == 0, last = l1 == P->gc.n_layer, z = P->c->zero;
    struct zunits u;
    if (zunits_init(P, tt, l0, l1, &u, err, errlen) < 0) {
        zunits_free(&u);
        return -1;
    }
    double use_f[3] = {cc->embed_fwd, blk_f, cc->head_fwd};
    double use_b[3] = {cc->embed - cc->embed_fwd, blk_b, head_b};
    double wf = 0.0, wb = 0.0, big = 0.0, params = (double)tt->total;
    int rc = 0;
    if (z == 3)
        rc = zero3_waits(&u, first, last, use_f, use_b, &wf, &wb);
    st->f += wf;
    st->b += wb;
    /* stage 2 gathers the updated shards as stage 1 does (zero_exec.c:
     * the update's all-gathers in the parameter arena, stage 1/2) */
    if ((z == 1 || z == 2) && first)
        *wait1 = zero1_wait(&u, first, last, use_f);
    int gpipe = P->ly->pp > 1 && !strcmp(P->c->pp_schedule, "gpipe");
    if (rc == 0)
        rc = zero_queue(P, &u, last, head_b, blk_b + wb / (u.nblk + 1),
                        st->b, gpipe ? st->b : st->f + st->b, st);
    for (int i = 0; i < u.nblk; i++)
        big = u.b_bytes[i] > big ? u.b_bytes[i] : big;
    /* parameters, gradients, moments: zero_exec.c's shards; stage 2's
     * three staging buffers, stage 3's three working slots too -- one
     * the size of the embedding unit, two of the largest block (the
     * embedding unit, V x C, is larger than a block in every GPT-2) */
    double dp = P->ly->dp, w = 4.0 * params, slots = u.e_bytes + 2 * big;
    *mem += z == 1 ? 2 * w + 2 * w / dp
            : z == 2 ? w + 3 * w / dp + slots
                     : 4 * w / dp + 2 * slots;
    zunits_free(&u);
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

/* Stage s: its figures, buckets and memory. */
static int stage_fill(const struct plan *P, int s, int l0, int l1,
                      struct perf_stage *st, double *mem, double *wait1,
                      char *err, size_t errlen)
{
    const struct perf_layout *ly = P->ly;
    const struct perf_compute *cc = &P->cc;
    int first = l0 == 0, last = l1 == P->gc.n_layer, nblk = l1 - l0;
    double blk_f = cc->block_fwd + 2 * P->tp_ar;
    double blk_b = cc->block - cc->block_fwd + 2 * P->tp_ar;
    /* recompute=full runs each block's forward again in backward
     * (selective's recomputed attention, GELU and LayerNorm outputs are
     * not separated in the calibration: not modelled) */
    if (P->gc.recompute == GPT_RECOMPUTE_FULL)
        blk_b += blk_f;
    double head_b = last ? cc->head - cc->head_fwd : 0.0;
    st->f = nblk * blk_f + (first ? cc->embed_fwd : 0) +
            (last ? cc->head_fwd : 0);
    st->b = nblk * blk_b + (first ? cc->embed - cc->embed_fwd : 0) + head_b;
    struct tensor_table tt;
    size_t saved, scratch;
    if (gpt_stage_plan(&P->gc, ly->tp, l0, l1, ly->mb, &tt, &saved,
                       &scratch) < 0) {
        tensor_table_free(&tt);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    double params = (double)tt.total;
    int slots = ly->pp == 1 ? 1
                : strcmp(P->c->pp_schedule, "gpipe") == 0 ? P->m
                : ly->pp - s < P->m ? ly->pp - s : P->m;
    int z = ly->dp > 1 ? P->c->zero : 0;
    *mem = (z ? 0.0 : 16.0 * params) + (P->lossy ? 4.0 * params : 0.0) +
           slots * (double)saved + (double)scratch;
    /* ZeRO updates this rank's 1/dp of the parameters */
    st->optim = params / (z ? ly->dp : 1) *
                perf_optim_per_param(P->pc, ly->rpn);
    st->nb = 0;
    st->ready = st->cost = NULL;
    int rc = 0;
    if (z) {
        rc = zero_fill(P, &tt, l0, l1, blk_f, blk_b, head_b, st, mem, wait1,
                       err, errlen);
    } else if (ly->dp > 1) {
        double *ready, *cost;
        st->nb = stage_buckets(P, &tt, last, head_b, blk_b, st->b, l1,
                               &ready, &cost, err, errlen);
        st->ready = ready;
        st->cost = cost;
        rc = st->nb < 0 ? -1 : 0;
    }
    tensor_table_free(&tt);
    return rc;
}

static int plan_init(struct plan *P, const struct perf_calib *pc,
                     const struct config *c, const struct perf_layout *ly,
                     double cload, char *err, size_t errlen)
{
    memset(P, 0, sizeof(*P));
    P->pc = pc, P->c = c, P->ly = ly;
    gpt_config_from(c, &P->gc);
    int world = ly->nodes * ly->rpn;
    if (ly->dp * ly->tp * ly->pp != world || ly->mb < 1 ||
        c->batch_size % (ly->dp * ly->mb) != 0 || ly->pp > 64 ||
        ly->pp > P->gc.n_layer) {
        snprintf(err, errlen, "layout dp=%d tp=%d pp=%d micro_batch=%d does "
                 "not fit %d x %d ranks and batch_size=%d", ly->dp, ly->tp,
                 ly->pp, ly->mb, ly->nodes, ly->rpn, c->batch_size);
        return -1;
    }
    if (gpt_config_check(&P->gc, ly->tp, err, errlen) < 0 ||
        perf_compute_costs(pc, &P->gc, ly->tp, cload, ly->threads, ly->mb,
                           &P->cc, err, errlen) < 0)
        return -1;
    P->m = c->batch_size / (ly->dp * ly->mb);
    allreduce_tune_defaults(&P->tune);
    if (c->allreduce_tune[0] &&
        allreduce_tune_load(&P->tune, c->allreduce_tune, err, errlen) < 0)
        return -1;
    struct codec_ctx cctx;
    codec_parse(c->compress, &cctx, err, errlen);
    P->lossy = cctx.codec && cctx.codec->lossy;
    P->kind = cctx.codec ? c->compress : c->allreduce;
    P->dp_nodes = perf_span(ly->dp, ly->tp, ly->rpn);
    double act = 4.0 * ly->mb * (double)P->gc.seq_len * P->gc.n_embd;
    P->tp_ar = perf_comm_time(pc, "ring", act, ly->tp,
                              perf_span(ly->tp, 1, ly->rpn), ly->rpn, NULL, 0,
                              err, errlen);
    return P->tp_ar < 0 ? -1 : 0;
}

/* The step's scalar collectives (loss, norm, bubble) and the tied
 * embedding's sum; the transfer between stages. */
static int step_extras(const struct plan *P, struct perf_step_in *in,
                       char *err, size_t errlen)
{
    const struct perf_layout *ly = P->ly;
    const struct perf_calib *pc = P->pc;
    int stride = ly->tp * ly->dp, rpn = ly->rpn;
    double act = 4.0 * ly->mb * (double)P->gc.seq_len * P->gc.n_embd;
    double t[6] = {0};
    if (ly->pp > 1) {
        int far = perf_span(2, stride, rpn);
        t[0] = perf_comm_time(pc, "p2p", act, 2, far, rpn, NULL, 0, err,
                              errlen);
        double wte = 4.0 * P->gc.vocab_size * P->gc.n_embd;
        t[1] = perf_comm_time(pc, "ring", wte, 2,
                              perf_span(2, (ly->pp - 1) * stride, rpn), rpn,
                              NULL, 0, err, errlen);
        t[2] = 3 * perf_comm_time(pc, "rhd", 16, ly->pp,
                                  perf_span(ly->pp, stride, rpn), rpn, NULL,
                                  0, err, errlen);
    }
    t[3] = perf_comm_time(pc, "rhd", 8, ly->dp, P->dp_nodes, rpn, NULL, 0,
                          err, errlen);
    t[4] = perf_comm_time(pc, "rhd", 8, ly->tp, perf_span(ly->tp, 1, rpn),
                          rpn, NULL, 0, err, errlen);
    for (int i = 0; i < 5; i++)
        if (t[i] < 0)
            return -1;
    in->xfer = t[0];
    in->tie = t[1];
    in->small = t[2] + t[3] + t[4];
    return 0;
}

/* The prediction with compute figures at cload ranks computing at once
 * per node. */
static int predict_at(const struct perf_calib *pc, const struct config *c,
                      const struct perf_layout *ly, double cload,
                      struct perf_prediction *pr, char *err, size_t errlen)
{
    memset(pr, 0, sizeof(*pr));
    struct plan P;
    if (plan_init(&P, pc, c, ly, cload, err, errlen) < 0)
        return -1;
    int p = ly->pp, rc = -1;
    struct perf_stage *st = calloc((size_t)p, sizeof(*st));
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (perf_stage_bounds(c, &P.gc, p, &P.cc, pr->bound, err, errlen) < 0)
        goto out;
    double wait1 = 0.0;
    for (int s = 0; s < p; s++) {
        double mem;
        if (stage_fill(&P, s, pr->bound[s], pr->bound[s + 1], &st[s], &mem,
                       &wait1, err, errlen) < 0)
            goto out;
        pr->mem_bytes = mem > pr->mem_bytes ? mem : pr->mem_bytes;
    }
    struct perf_step_in in = {PP_1F1B, p, P.m, st, 0, 0, 0, wait1};
    pp_kind_parse(c->pp_schedule, &in.kind);
    if (p == 1)
        in.kind = PP_1F1B; /* the trainer runs one stage as 1F1B */
    if (step_extras(&P, &in, err, errlen) < 0 ||
        perf_step(&in, &pr->o, err, errlen) < 0)
        goto out;
    pr->m = P.m;
    pr->tokens_per_s = (double)c->batch_size * c->seq_len / pr->o.step;
    pr->tp_comm = 4.0 * P.tp_ar * (pr->bound[1] - pr->bound[0]) * P.m;
    for (int k = 0; k < st[0].nb; k++)
        pr->dp_busy += st[0].cost[k];
    pr->fits = pc->mem_bytes <= 0 ||
               pr->mem_bytes <= 0.9 * pc->mem_bytes / ly->rpn;
    rc = 0;
out:
    for (int s = 0; s < p; s++) {
        free((void *)st[s].ready);
        free((void *)st[s].cost);
    }
    free(st);
    return rc;
}

/* On an oversubscribed node a rank that waits yields its core (Open MPI
 * yields when oversubscribed), so the cores serve the ranks that compute:
 * with a pipeline's bubble b, load x (1 - b) ranks compute at once on
 * average, and a rank's share of the cores is that much larger. */
int perf_predict(const struct perf_calib *pc, const struct config *c,
                 const struct perf_layout *ly, struct perf_prediction *pr,
                 char *err, size_t errlen)
{
    if (predict_at(pc, c, ly, ly->rpn, pr, err, errlen) < 0)
        return -1;
    double cores = pc->avail > 0.0 ? pc->avail : pc->cores;
    double busy = ly->rpn * (1.0 - pr->o.bubble) * ly->threads;
    if ((double)ly->rpn * ly->threads <= cores || pr->o.bubble <= 0.0)
        return 0;
    double cload = (busy > cores ? busy : cores) / ly->threads;
    return predict_at(pc, c, ly, cload, pr, err, errlen);
}
