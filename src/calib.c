/*
 * calib.c - this rank's speed on the model's real kernels (see calib.h).
 */
#include "calib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "peak.h"
#include "rng.h"

#define CALIB_MAX_REPS 5
#define CALIB_MAX_BYTES ((size_t)1 << 30) /* activations of one part */

enum part_kind { PART_EMBED, PART_BLOCK, PART_HEAD, PART_COUNT };

/* One part of the model as a stand-alone stage, with its activations and
 * synthetic inputs. */
struct part {
    struct gpt m;
    struct gpt_acts a;
    int32_t *tok;      /* (B, T) inputs then (B, T) targets */
    float *dout;       /* (N, C) d(output) for a stage that is not last */
    int has_m, has_a;
    struct gpt_pos pos;
    float dloss;
    double slow;
};

static int part_init(struct part *p, const struct gpt_config *gc, int tp,
                     enum part_kind kind, char *err, size_t errlen)
{
    struct gpt_config c = *gc;
    int l0 = 0, l1 = 0; /* the embedding: first stage of one block, none */
    c.n_layer = 1;
    if (kind == PART_BLOCK) { /* the middle stage of three blocks */
        c.n_layer = 3;
        l0 = 1;
        l1 = 2;
    } else if (kind == PART_HEAD) { /* the last stage, no block */
        l0 = l1 = 1;
    }
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

/* Activations for B sequences, synthetic tokens, input activations and
 * output gradients (fixed pseudo-random values).  Returns 0 or -1. */
static int part_acts(struct part *p, int B)
{
    part_free_acts(p);
    int T = p->m.cfg.seq_len, V = p->m.cfg.vocab_size;
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

/* Forward then backward of p, each padded by the slow-down; the seconds
 * of each into *fwd, *bwd. */
static void part_run(struct part *p, double *fwd, double *bwd)
{
    double t0 = now_s();
    part_fwd(p);
    double t1 = now_s();
    calib_slow_pad(p->slow, t1 - t0, part_fwd, p);
    double t2 = now_s();
    part_bwd(p);
    double t3 = now_s();
    calib_slow_pad(p->slow, t3 - t2, part_bwd, p);
    *fwd = t2 - t0;
    *bwd = now_s() - t2;
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

static double median(double *x, int n)
{
    for (int i = 1; i < n; i++) /* insertion sort: n <= CALIB_MAX_REPS */
        for (int j = i; j > 0 && x[j] < x[j - 1]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* One repetition over every part: seconds into fwd[k][rep], tot[k][rep].
 * Returns the repetition's wall time. */
static double rep_run(struct part *pt, double fwd[][CALIB_MAX_REPS],
                      double tot[][CALIB_MAX_REPS], int rep)
{
    double t0 = now_s();
    for (int k = 0; k < PART_COUNT; k++) {
        double f, b;
        part_run(&pt[k], &f, &b);
        fwd[k][rep] = f;
        tot[k][rep] = f + b;
    }
    return now_s() - t0;
}

static int acts_all(struct part *pt, int B)
{
    for (int k = 0; k < PART_COUNT; k++)
        if (part_acts(&pt[k], B) < 0)
            return -1;
    return 0;
}

/* The sequences per timed micro-batch: as many as fit 4 repetitions (one
 * of them a warm-up) in what is left of the budget, at most mb, and at
 * most CALIB_MAX_BYTES of activations per part. */
static int choose_seqs(const struct part *pt, int mb, double left,
                       double t1)
{
    double fit = t1 > 0.0 ? left / (4.0 * t1) : mb;
    int seqs = fit < 1.0 ? 1 : fit > mb ? mb : (int)fit;
    for (int k = 0; k < PART_COUNT; k++) {
        size_t per = pt[k].a.bytes > 0 ? pt[k].a.bytes : 1;
        size_t most = CALIB_MAX_BYTES / per;
        if ((size_t)seqs > most)
            seqs = most < 1 ? 1 : (int)most;
    }
    return seqs;
}

static void fill_out(struct calib_costs *out, double fwd[][CALIB_MAX_REPS],
                     double tot[][CALIB_MAX_REPS], int reps, int mb,
                     int seqs)
{
    double s = (double)mb / seqs, f[PART_COUNT], t[PART_COUNT];
    for (int k = 0; k < PART_COUNT; k++) {
        f[k] = s * median(fwd[k], reps);
        t[k] = s * median(tot[k], reps);
    }
    out->embed_s = t[PART_EMBED];
    out->block_s = t[PART_BLOCK];
    out->head_s = t[PART_HEAD];
    out->embed_fwd_s = f[PART_EMBED];
    out->block_fwd_s = f[PART_BLOCK];
    out->head_fwd_s = f[PART_HEAD];
    out->mb = mb;
    out->seqs = seqs;
    out->reps = reps;
    out->threads = threads_get();
}

static int measure(const struct gpt_config *gc, int mb, int tp,
                   double budget_s, double slow, struct calib_costs *out,
                   char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (mb < 1 || gc->n_layer < 1 || gc->seq_len < 1) {
        snprintf(err, errlen, "calibration: bad arguments (mb=%d n_layer=%d "
                 "seq_len=%d)", mb, gc->n_layer, gc->seq_len);
        return -1;
    }
    double t_start = now_s();
    struct part pt[PART_COUNT];
    memset(pt, 0, sizeof(pt));
    double fwd[PART_COUNT][CALIB_MAX_REPS], tot[PART_COUNT][CALIB_MAX_REPS];
    int rc = -1, reps = 0, seqs = 1;
    for (int k = 0; k < PART_COUNT; k++) {
        if (part_init(&pt[k], gc, tp, (enum part_kind)k, err, errlen) < 0)
            goto out;
        pt[k].pos = (struct gpt_pos){.seed = 1, .train = 1};
        pt[k].slow = slow;
    }
    if (acts_all(pt, 1) < 0)
        goto oom;
    double t1 = rep_run(pt, fwd, tot, 0); /* warm-up: page faults, pools */
    seqs = choose_seqs(pt, mb, budget_s - (now_s() - t_start), t1);
    double t_rep = t1 * seqs;
    if (seqs > 1) {
        if (acts_all(pt, seqs) < 0)
            goto oom;
        t_rep = rep_run(pt, fwd, tot, 0); /* warm-up at the new size */
    }
    while (reps < CALIB_MAX_REPS &&
           (reps == 0 || now_s() - t_start + t_rep <= budget_s))
        t_rep = rep_run(pt, fwd, tot, reps++);
    fill_out(out, fwd, tot, reps, mb, seqs);
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "calibration: out of memory for micro-batches of "
             "%d sequences of %d tokens", seqs, gc->seq_len);
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
    return measure(gc, mb, 1, budget_s, slow, out, err, errlen);
}

int calib_measure(const struct gpt_config *gc, int mb, double budget_s,
                  struct calib_costs *out, char *err, size_t errlen)
{
    return measure(gc, mb, 1, budget_s, 1.0, out, err, errlen);
}

int calib_measure_tp(const struct gpt_config *gc, int mb, int tp,
                     double budget_s, struct calib_costs *out, char *err,
                     size_t errlen)
{
    if (tp < 1 || gpt_config_check(gc, tp, err, errlen) < 0)
        return -1;
    return measure(gc, mb, tp, budget_s, 1.0, out, err, errlen);
}
