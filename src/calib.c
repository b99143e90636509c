/*
 * calib.c - this rank's speed on the model's real kernels (see calib.h).
 *
 * Two stand-alone stages are timed: a middle block, and a stage without
 * blocks that is both first and last (the embedding straight into the
 * head), so that the vocabulary-sized embedding matrix is built once.
 * The embedding's share of the second is what model.c's own timers book
 * under the embedding and element-wise kinds (the embedding's gather,
 * scatter-add and dropout: a stage without blocks runs no other
 * element-wise kernel); the rest is the head.
 */
#include "calib.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "peak.h"
#include "rng.h"

#define CALIB_MAX_REPS 9
#define CALIB_MAX_BYTES ((size_t)1 << 30) /* activations of one part */

enum part_kind { PART_BLOCK, PART_ENDS, PART_COUNT };

/* One part of the model as a stand-alone stage, with its activations and
 * synthetic inputs. */
struct part {
    enum part_kind kind;
    int nblk;          /* PART_BLOCK: blocks in the stage */
    struct gpt m;
    struct gpt_acts a;
    int32_t *tok;      /* (B, T) inputs then (B, T) targets */
    float *dout;       /* (N, C) d(output) for a stage that is not last */
    int has_m, has_a;
    struct gpt_pos pos;
    float dloss;
    double slow;
    int half;          /* PART_ENDS timed below full size: also at half the
                          tokens, to fit a fixed cost (the V x C matrix's
                          traffic) and a cost per token */
};

/* One repetition's seconds: forward, total, and the embedding's part of
 * each (PART_ENDS). */
struct rep_times {
    double fwd, tot, emb_fwd, emb_tot;
};

static int part_init(struct part *p, const struct gpt_config *gc, int tp,
                     int nblk, enum part_kind kind, char *err, size_t errlen)
{
    struct gpt_config c = *gc;
    int l0 = 0, l1 = 0; /* PART_ENDS: no block, first and last */
    c.n_layer = 0;
    if (kind == PART_BLOCK) { /* the middle stage of nblk + 2 blocks */
        c.n_layer = nblk + 2;
        l0 = 1;
        l1 = 1 + nblk;
    }
    p->kind = kind;
    p->nblk = kind == PART_BLOCK ? nblk : 1;
    if (gpt_init(&p->m, &c, tp, 0, l0, l1, 20240520, err, errlen) < 0)
        return -1;
    p->has_m = 1;
    return 0;
}

static void part_free_acts(struct part *p)
{
    if (p->has_a)
        gpt_acts_free(&p->a);
    p->has_a = 0;
    free(p->tok);
    free(p->dout);
    p->tok = NULL;
    p->dout = NULL;
}

static void part_free(struct part *p)
{
    part_free_acts(p);
    if (p->has_m)
        gpt_free(&p->m);
    p->has_m = 0;
}

/* Activations for B sequences of T tokens, synthetic tokens, input
 * activations and output gradients (fixed pseudo-random values).
 * Returns 0 or -1. */
static int part_acts(struct part *p, int B, int T)
{
    part_free_acts(p);
    int V = p->m.cfg.vocab_size;
    size_t N = (size_t)B * T, C = (size_t)p->m.cfg.n_embd;
    if (gpt_acts_init(&p->a, &p->m, B, T) < 0)
        return -1;
    p->has_a = 1;
    p->tok = malloc(2 * N * sizeof(int32_t));
    p->dout = malloc(N * C * sizeof(float));
    if (!p->tok || !p->dout)
        return -1;
    uint64_t key = rng_key(7, RNG_DATA, 1);
    for (size_t i = 0; i < 2 * N; i++)
        p->tok[i] = (int32_t)(rng_u64(key, i) % (uint64_t)V);
    for (size_t i = 0; i < N * C; i++) {
        p->a.emb[i] = rng_normal(key, 2 * N + i);
        p->dout[i] = 1e-3f * rng_normal(key, 2 * N + N * C + i);
    }
    p->dloss = 1.0f / (float)N;
    return 0;
}

static void part_fwd(void *ctx)
{
    struct part *p = ctx;
    size_t N = p->a.N;
    gpt_forward(&p->m, &p->a, p->tok, p->tok + N, &p->pos);
}

static void part_bwd(void *ctx)
{
    struct part *p = ctx;
    if (!p->m.last) /* d(output) as the next stage would send it */
        memcpy(p->a.dres, p->dout,
               p->a.N * (size_t)p->m.cfg.n_embd * sizeof(float));
    gpt_backward(&p->m, &p->a, p->dloss, &p->pos);
}

/* The embedding's seconds booked by model.c's timers so far. */
static double embed_clock(const struct gpt *m)
{
    return m->op_time[OPK_EMBEDDING] + m->op_time[OPK_ELEMENTWISE];
}

/* Forward then backward of p, each padded by the slow-down. */
static void part_run(struct part *p, struct rep_times *rt)
{
    double e0 = embed_clock(&p->m), t0 = now_s();
    part_fwd(p);
    double t1 = now_s();
    calib_slow_pad(p->slow, t1 - t0, part_fwd, p);
    double e1 = embed_clock(&p->m), t2 = now_s();
    part_bwd(p);
    double t3 = now_s();
    calib_slow_pad(p->slow, t3 - t2, part_bwd, p);
    rt->fwd = t2 - t0;
    rt->tot = now_s() - t0;
    rt->emb_fwd = e1 - e0;
    rt->emb_tot = embed_clock(&p->m) - e0;
}

int calib_slow_pad(double slow, double t, void (*again)(void *ctx),
                   void *ctx)
{
    if (!(slow > 1.0) || !(t > 0.0))
        return 0;
    double want = (slow - 1.0) * t, t0 = now_s(), spent = 0.0;
    int n = 0;
    /* stop when one more repetition would overshoot by more than it
     * undershoots now: the extra time is want to the nearest repetition */
    while (spent + 0.5 * (n ? spent / n : t) < want) {
        again(ctx);
        n++;
        spent = now_s() - t0;
    }
    return n;
}

/* The fastest of n repetitions: other processes on the machine only ever
 * slow one down, and on a busy machine most repetitions are. */
static double fastest(const double *x, int n)
{
    double m = x[0];
    for (int i = 1; i < n; i++)
        m = x[i] < m ? x[i] : m;
    return m;
}

static void part_use(struct part *p, int B, int T)
{
    p->a.B = B;
    p->a.T = T;
    p->a.N = (size_t)B * (size_t)T;
}

/* One repetition over both parts into rt[k][rep] (rep >= 0; a warm-up
 * passes -1 and gets each part's total in each[k] if each), and the half
 * size of PART_ENDS into rh[rep] when it is timed.  Returns the wall
 * time. */
static double rep_run(struct part *pt, struct rep_times rt[][CALIB_MAX_REPS],
                      struct rep_times *rh, int rep, double *each)
{
    double t0 = now_s();
    for (int k = 0; k < PART_COUNT; k++) {
        struct rep_times r;
        part_run(&pt[k], &r);
        if (rep >= 0)
            rt[k][rep] = r;
        if (each)
            each[k] = r.tot;
        struct part *p = &pt[k];
        if (rep >= 0 && p->half) {
            int B = p->a.B, T = p->a.T;
            if (B == 1)
                part_use(p, 1, T / 2);
            else
                part_use(p, B / 2, T);
            part_run(p, &rh[rep]);
            part_use(p, B, T);
        }
    }
    return now_s() - t0;
}

/* The shape a part is timed at for `units` units of work: sequences of T
 * tokens for a block (attention is quadratic in T, so T stays), tokens
 * for the embedding and the head (their cost is per token): fewer than T
 * tokens as one shorter sequence (a power of two, at least 16 or T), else
 * whole sequences.  At most mb sequences. */
static void part_shape(enum part_kind k, int T, int mb, double units, int *B,
                       int *Tk)
{
    if (k == PART_BLOCK || units >= T) {
        double seqs = k == PART_BLOCK ? units : units / T;
        *B = seqs < 1.0 ? 1 : seqs > mb ? mb : (int)seqs;
        *Tk = T;
        return;
    }
    int t = T < 16 ? T : 16;
    while (2 * t <= units && 2 * t <= T)
        t *= 2;
    *B = 1;
    *Tk = t;
}

/* After a warm-up that took each[k] seconds per part at the current
 * shapes: the shapes whose repetition (all parts together) fits 6 times
 * (a warm-up and five timed) in what is left of the budget.  Each part's
 * full-size time is estimated from its cost per unit now; when they add
 * up to more than a sixth of what is left, every part is scaled down by
 * the same factor, so the budget goes where the time is.  A shape
 * changes only by more than 1.5x (the estimate from a small warm-up is
 * rough: a product with a V x C matrix costs its weight traffic however
 * few the tokens), and stays within CALIB_MAX_BYTES of activations.
 * Returns 1 when a shape changed, 0 if not, -1 when out of memory. */
static int choose_shapes(struct part *pt, int mb, double left,
                         const double *each)
{
    double full[PART_COUNT], cur[PART_COUNT], est = 0.0;
    for (int k = 0; k < PART_COUNT; k++) {
        int T = pt[k].m.cfg.seq_len;
        cur[k] = k == PART_BLOCK ? pt[k].a.B : (double)pt[k].a.N;
        full[k] = k == PART_BLOCK ? mb : (double)mb * T;
        est += each[k] / cur[k] * full[k];
    }
    double alpha = est > 0.0 && est > left / 6.0 ? left / 6.0 / est : 1.0;
    int changed = 0;
    for (int k = 0; k < PART_COUNT; k++) {
        struct part *p = &pt[k];
        double units = alpha * full[k];
        double bytes_unit = (double)p->a.bytes / cur[k];
        if (units * bytes_unit > (double)CALIB_MAX_BYTES)
            units = (double)CALIB_MAX_BYTES / bytes_unit;
        if (units < 1.5 * cur[k] && units > cur[k] / 1.5)
            continue;
        int B, Tk;
        part_shape((enum part_kind)k, p->m.cfg.seq_len, mb, units, &B, &Tk);
        if (B != p->a.B || Tk != p->a.T) {
            if (part_acts(p, B, Tk) < 0)
                return -1;
            changed = 1;
        }
    }
    return changed;
}

/* Seconds for nf tokens from the fastest times tn at n tokens and th at
 * nh < n: a fixed cost plus a cost per token.  Noise that makes the fit
 * meaningless (a cost per token <= 0, a negative fixed cost) falls back
 * to scaling tn in proportion. */
static double fit_tokens(double tn, double th, double n, double nh, double nf)
{
    double slope = (tn - th) / (n - nh), fixed = tn - slope * n;
    if (!(slope > 0.0) || fixed < 0.0)
        return tn * nf / n;
    return fixed + slope * nf;
}

/* The fastest of field `off` of reps repetitions. */
static double fastest_of(const struct rep_times *r, int reps, size_t off)
{
    double x[CALIB_MAX_REPS];
    for (int i = 0; i < reps; i++)
        x[i] = *(const double *)((const char *)&r[i] + off);
    return fastest(x, reps);
}

/* Part k's field `off` scaled to mb sequences of seq_len tokens. */
static double scaled(const struct part *pt, int k,
                     struct rep_times rt[][CALIB_MAX_REPS],
                     const struct rep_times *rh, int reps, int mb, size_t off)
{
    const struct part *p = &pt[k];
    double n = (double)p->a.N, nf = (double)mb * p->m.cfg.seq_len;
    double tn = fastest_of(rt[k], reps, off);
    if (!p->half || reps < 3) /* a fit to one or two noisy pairs can put
                                 the whole cost in the fixed part */
        return tn * nf / n;
    double nh = p->a.B == 1 ? (double)(p->a.T / 2)
                            : (double)(p->a.B / 2) * p->a.T;
    return fit_tokens(tn, fastest_of(rh, reps, off), n, nh, nf);
}

static void fill_out(struct calib_costs *out, const struct part *pt,
                     struct rep_times rt[][CALIB_MAX_REPS],
                     const struct rep_times *rh, int reps, int mb)
{
    const size_t F = offsetof(struct rep_times, fwd),
                 TOT = offsetof(struct rep_times, tot),
                 EF = offsetof(struct rep_times, emb_fwd),
                 ET = offsetof(struct rep_times, emb_tot);
    double f = scaled(pt, PART_ENDS, rt, rh, reps, mb, F);
    double t = scaled(pt, PART_ENDS, rt, rh, reps, mb, TOT);
    double e_f = scaled(pt, PART_ENDS, rt, rh, reps, mb, EF);
    double e_t = scaled(pt, PART_ENDS, rt, rh, reps, mb, ET);
    int nb = pt[PART_BLOCK].nblk;
    out->block_s = scaled(pt, PART_BLOCK, rt, rh, reps, mb, TOT) / nb;
    out->block_fwd_s = scaled(pt, PART_BLOCK, rt, rh, reps, mb, F) / nb;
    out->nblk = nb;
    out->embed_s = e_t < t ? e_t : t;
    out->embed_fwd_s = e_f < f ? e_f : f;
    out->head_s = t - out->embed_s;
    out->head_fwd_s = f - out->embed_fwd_s;
    out->mb = mb;
    out->seqs = pt[PART_BLOCK].a.B;
    out->head_tokens = (int)pt[PART_ENDS].a.N;
    out->head_fit = pt[PART_ENDS].half && reps >= 3; /* as scaled() uses it */
    out->reps = reps;
    out->threads = threads_get();
}

static int measure(const struct gpt_config *gc, int mb, int tp, int nblk,
                   double budget_s, double slow, struct calib_costs *out,
                   char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (mb < 1 || gc->n_layer < 1 || gc->seq_len < 1 || nblk < 1) {
        snprintf(err, errlen, "calibration: bad arguments (mb=%d n_layer=%d "
                 "seq_len=%d blocks=%d)", mb, gc->n_layer, gc->seq_len,
                 nblk);
        return -1;
    }
    double t_start = now_s();
    struct part pt[PART_COUNT];
    memset(pt, 0, sizeof(pt));
    struct rep_times rt[PART_COUNT][CALIB_MAX_REPS], rh[CALIB_MAX_REPS];
    double each[PART_COUNT];
    int rc = -1, reps = 0, T = gc->seq_len;
    for (int k = 0; k < PART_COUNT; k++) {
        if (part_init(&pt[k], gc, tp, nblk, (enum part_kind)k, err,
                      errlen) < 0)
            goto out;
        pt[k].pos = (struct gpt_pos){.seed = 1, .train = 1};
        pt[k].slow = slow;
        int B, Tk; /* the warm-up: one sequence, or 16 tokens */
        part_shape((enum part_kind)k, T, mb, k == PART_BLOCK ? 1 : 16, &B,
                   &Tk);
        if (part_acts(&pt[k], B, Tk) < 0)
            goto oom;
    }
    /* the budget is for the kernels: building the parts is not timed */
    double t_kern = now_s();
    double t_rep = rep_run(pt, rt, rh, -1, each); /* page faults, pools */
    for (int it = 0; it < 3; it++) { /* a warm-up at each new size refines
                                        the estimate of the next */
        int changed = choose_shapes(pt, mb, budget_s - (now_s() - t_kern),
                                    each);
        if (changed < 0)
            goto oom;
        if (!changed)
            break;
        t_rep = rep_run(pt, rt, rh, -1, each);
    }
    /* a head timed on fewer tokens than a micro-batch's: fit its fixed
     * cost too (from 32 tokens, so that the half has 16) */
    pt[PART_ENDS].half = pt[PART_ENDS].a.N < (size_t)mb * T &&
                         pt[PART_ENDS].a.N >= 32;
    while (reps < CALIB_MAX_REPS &&
           (reps == 0 || now_s() - t_kern + t_rep <= budget_s))
        t_rep = rep_run(pt, rt, rh, reps++, NULL);
    fill_out(out, pt, rt, rh, reps, mb);
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "calibration: out of memory for activations of "
             "up to %d sequences of %d tokens", mb, T);
out:
    for (int k = 0; k < PART_COUNT; k++)
        part_free(&pt[k]);
    out->wall_s = now_s() - t_start;
    return rc;
}

int calib_measure_slow(const struct gpt_config *gc, int mb, double budget_s,
                       double slow, struct calib_costs *out, char *err,
                       size_t errlen)
{
    return measure(gc, mb, 1, 1, budget_s, slow, out, err, errlen);
}

int calib_measure(const struct gpt_config *gc, int mb, double budget_s,
                  struct calib_costs *out, char *err, size_t errlen)
{
    return measure(gc, mb, 1, 1, budget_s, 1.0, out, err, errlen);
}

int calib_measure_tp(const struct gpt_config *gc, int mb, int tp,
                     double budget_s, struct calib_costs *out, char *err,
                     size_t errlen)
{
    return calib_measure_blocks(gc, mb, tp, 1, budget_s, out, err, errlen);
}

int calib_measure_blocks(const struct gpt_config *gc, int mb, int tp,
                         int nblk, double budget_s, struct calib_costs *out,
                         char *err, size_t errlen)
{
    if (tp < 1 || gpt_config_check(gc, tp, err, errlen) < 0)
        return -1;
    return measure(gc, mb, tp, nblk, budget_s, 1.0, out, err, errlen);
}
