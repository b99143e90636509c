/*
 * test_ops.c - every kernel of ops.h against an independent reference.
 *
 * Each op has a naive double-precision reimplementation written from the
 * contract in ops.h.  The float forward is compared to it, and the float
 * backward to central finite differences of it (eps 1e-5 in double, so the
 * FD error is ~1e-10 and the tolerances measure the float kernels only).
 * The scalar loss is sum(out * w) with random w, so every output matters;
 * the backward gets dout = w.  Gradients start from random values so the
 * += semantics are checked too.  Also: attention GQA/MQA against MHA on
 * duplicated heads, window >= T against full causal (bitwise), NaN-filled
 * outputs and scratch (everything must be written before it is read), the
 * dropout mask's independence from sharding, and bitwise equality of the
 * results for 1 and 2 OpenMP threads.
 *
 * This file passes 800 lines: it is one program that loops over all ops
 * (STYLE.md), and splitting it would duplicate the reference helpers.
 *
 * Run with OPENBLAS_NUM_THREADS=1 (main sets it too).  No MPI.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <cmocka.h>
#include <omp.h>

#include "ops/ops.h"
#include "ops/ops_internal.h"
#include "rng.h"

/* The attention shapes below are written positionally up to the window;
 * the later fields (kind, sparse pattern, document bounds: test_attn.c
 * tests those) are zero: full attention. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* ------------------------------------------------------------------------ */
/* helpers */

static uint64_t test_rng_state = 12345;

static double urand(void) /* uniform in [-1, 1) */
{
    uint64_t z = (test_rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 4503599627370496.0 - 1.0;
}

static float *frand(size_t n, double scale)
{
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * urand());
    return x;
}

static float *fnan(size_t n)
{
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
    return x;
}

static float *fdup(const float *x, size_t n)
{
    float *y = malloc(n * sizeof(float));
    assert_non_null(y);
    memcpy(y, x, n * sizeof(float));
    return y;
}

static double *dof(const float *x, size_t n)
{
    double *y = malloc(n * sizeof(double));
    assert_non_null(y);
    for (size_t i = 0; i < n; i++)
        y[i] = x[i];
    return y;
}

static double *dzero(size_t n)
{
    double *y = calloc(n, sizeof(double));
    assert_non_null(y);
    return y;
}

/* max |got - want| <= rtol * max |want| (+1e-30), reported with the index */
static void check_close(const char *what, const float *got, const double *want,
                        size_t n, double rtol)
{
    double scale = 1e-30, err = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= err)) { /* catches NaN */
            err = isnan(e) ? INFINITY : e;
            worst = i;
        }
    }
    if (!(err <= rtol * scale))
        fail_msg("%s: error %.3g at [%zu] (got %.9g want %.9g), "
                 "tolerance %.3g x %.3g",
                 what, err, worst, got[worst], want[worst], rtol, scale);
}

/* gradient expected after +=: g0 (initial float values) + analytic */
static void check_grad(const char *what, const float *got, const float *g0,
                       const double *dg, size_t n, double rtol)
{
    double *want = dzero(n);
    for (size_t i = 0; i < n; i++)
        want[i] = (double)g0[i] + dg[i];
    check_close(what, got, want, n, rtol);
    free(want);
}

typedef double (*loss_fn)(void *ctx);

/* g = dL/dx by central differences; x is an array inside ctx */
static void fd_grad(loss_fn f, void *ctx, double *x, size_t n, double *g)
{
    const double eps = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + eps;
        double lp = f(ctx);
        x[i] = x0 - eps;
        double lm = f(ctx);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * eps);
    }
}

static double dsum_prod(const double *a, const double *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* ------------------------------------------------------------------------ */
/* encoder */

struct enc_ctx {
    const int32_t *inp;
    double *wte, *wpe, *w, *out;
    size_t B, T, C;
};

static void ref_encoder(struct enc_ctx *c)
{
    for (size_t n = 0; n < c->B * c->T; n++)
        for (size_t j = 0; j < c->C; j++)
            c->out[n * c->C + j] = c->wte[(size_t)c->inp[n] * c->C + j] +
                                   c->wpe[(n % c->T) * c->C + j];
}

static double enc_loss(void *p)
{
    struct enc_ctx *c = p;
    ref_encoder(c);
    return dsum_prod(c->out, c->w, c->B * c->T * c->C);
}

static void test_encoder(void **state)
{
    (void)state;
    size_t B = 2, T = 5, C = 19, V = 4, maxT = 7, N = B * T;
    int32_t inp[10] = {0, 3, 3, 1, 0, 2, 3, 0, 0, 1};
    float *wte = frand(V * C, 1), *wpe = frand(maxT * C, 1);
    float *w = frand(N * C, 1), *out = fnan(N * C);
    struct enc_ctx c = {inp,
                        dof(wte, V * C),
                        dof(wpe, maxT * C),
                        dof(w, N * C),
                        dzero(N * C),
                        B,
                        T,
                        C};
    encoder_forward(out, inp, wte, wpe, B, T, C);
    ref_encoder(&c);
    check_close("encoder out", out, c.out, N * C, 1e-6);

    float *dwte = frand(V * C, 1), *dwpe = frand(maxT * C, 1);
    float *dwte0 = fdup(dwte, V * C), *dwpe0 = fdup(dwpe, maxT * C);
    encoder_backward(dwte, dwpe, w, inp, B, T, C);
    double *g = dzero(maxT * C);
    fd_grad(enc_loss, &c, c.wte, V * C, g);
    check_grad("encoder dwte", dwte, dwte0, g, V * C, 1e-6);
    fd_grad(enc_loss, &c, c.wpe, maxT * C, g);
    check_grad("encoder dwpe", dwpe, dwpe0, g, maxT * C, 1e-6);
    free(g), free(c.wte), free(c.wpe), free(c.w), free(c.out);
    free(wte), free(wpe), free(w), free(out), free(dwte), free(dwpe);
    free(dwte0), free(dwpe0);
}

/* ------------------------------------------------------------------------ */
/* layernorm */

struct ln_ctx {
    double *inp, *w, *b, *dw, *out, *mean, *rstd;
    size_t N, C;
};

static void ref_layernorm(struct ln_ctx *c)
{
    for (size_t n = 0; n < c->N; n++) {
        const double *x = c->inp + n * c->C;
        double m = 0, v = 0;
        for (size_t j = 0; j < c->C; j++)
            m += x[j];
        m /= (double)c->C;
        for (size_t j = 0; j < c->C; j++)
            v += (x[j] - m) * (x[j] - m);
        double s = 1.0 / sqrt(v / (double)c->C + 1e-5);
        for (size_t j = 0; j < c->C; j++)
            c->out[n * c->C + j] = (x[j] - m) * s * c->w[j] + c->b[j];
        c->mean[n] = m;
        c->rstd[n] = s;
    }
}

static double ln_loss(void *p)
{
    struct ln_ctx *c = p;
    ref_layernorm(c);
    return dsum_prod(c->out, c->dw, c->N * c->C);
}

static void layernorm_case(size_t N, size_t C)
{
    size_t NC = N * C;
    float *inp = frand(NC, 2), *w = frand(C, 1), *b = frand(C, 1);
    for (size_t i = 0; i < NC; i++)
        inp[i] += 3.0f; /* a mean far from 0 */
    float *dout = frand(NC, 1), *out = fnan(NC), *mean = fnan(N),
          *rstd = fnan(N);
    struct ln_ctx c = {dof(inp, NC),  dof(w, C), dof(b, C),
                       dof(dout, NC), dzero(NC), dzero(N),
                       dzero(N),      N,         C};
    layernorm_forward(out, mean, rstd, inp, w, b, N, C);
    ref_layernorm(&c);
    check_close("layernorm out", out, c.out, NC, 1e-5);
    check_close("layernorm mean", mean, c.mean, N, 1e-6);
    check_close("layernorm rstd", rstd, c.rstd, N, 1e-5);

    float *dinp = frand(NC, 1), *dw = frand(C, 1), *db = frand(C, 1);
    float *dinp0 = fdup(dinp, NC), *dw0 = fdup(dw, C), *db0 = fdup(db, C);
    layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
    double *g = dzero(NC);
    fd_grad(ln_loss, &c, c.inp, NC, g);
    check_grad("layernorm dinp", dinp, dinp0, g, NC, 1e-4);
    fd_grad(ln_loss, &c, c.w, C, g);
    check_grad("layernorm dw", dw, dw0, g, C, 1e-5);
    fd_grad(ln_loss, &c, c.b, C, g);
    check_grad("layernorm db", db, db0, g, C, 1e-5);
    free(g), free(c.inp), free(c.w), free(c.b), free(c.dw), free(c.out);
    free(c.mean), free(c.rstd), free(inp), free(w), free(b), free(dout);
    free(out), free(mean), free(rstd), free(dinp), free(dw), free(db);
    free(dinp0), free(dw0), free(db0);
}

static void test_layernorm(void **state)
{
    (void)state;
    layernorm_case(5, 19);
    layernorm_case(3, 64);
    layernorm_case(2, 7);
    layernorm_case(3, 50); /* the 32-float vector loop and a tail */
}

/* ------------------------------------------------------------------------ */
/* matmul */

struct mm_ctx {
    double *inp, *w, *bias, *dout, *out;
    size_t N, C, OC;
};

static double mm_loss(void *p)
{
    struct mm_ctx *c = p;
    for (size_t n = 0; n < c->N; n++)
        for (size_t o = 0; o < c->OC; o++) {
            double s = c->bias ? c->bias[o] : 0.0;
            for (size_t j = 0; j < c->C; j++)
                s += c->inp[n * c->C + j] * c->w[o * c->C + j];
            c->out[n * c->OC + o] = s;
        }
    return dsum_prod(c->out, c->dout, c->N * c->OC);
}

/* mask: bit 0 dinp wanted, bit 1 dw, bit 2 dbias */
static void matmul_case(size_t N, size_t C, size_t OC, int with_bias, int mask)
{
    float *inp = frand(N * C, 1), *w = frand(OC * C, 1);
    float *bias = with_bias ? frand(OC, 1) : NULL;
    float *dout = frand(N * OC, 1), *out = fnan(N * OC);
    struct mm_ctx c = {dof(inp, N * C),
                       dof(w, OC * C),
                       with_bias ? dof(bias, OC) : NULL,
                       dof(dout, N * OC),
                       dzero(N * OC),
                       N,
                       C,
                       OC};
    matmul_forward(out, inp, w, bias, N, C, OC);
    mm_loss(&c);
    check_close("matmul out", out, c.out, N * OC, 1e-5);

    float *dinp = frand(N * C, 1), *dw = frand(OC * C, 1), *db = frand(OC, 1);
    float *dinp0 = fdup(dinp, N * C), *dw0 = fdup(dw, OC * C),
          *db0 = fdup(db, OC);
    matmul_backward(mask & 1 ? dinp : NULL, mask & 2 ? dw : NULL,
                    mask & 4 ? db : NULL, dout, inp, w, N, C, OC);
    double *g = dzero(OC * C + N * C);
    fd_grad(mm_loss, &c, c.inp, N * C, g);
    if (mask & 1)
        check_grad("matmul dinp", dinp, dinp0, g, N * C, 1e-5);
    else
        assert_memory_equal(dinp, dinp0, N * C * sizeof(float));
    fd_grad(mm_loss, &c, c.w, OC * C, g);
    if (mask & 2)
        check_grad("matmul dw", dw, dw0, g, OC * C, 1e-5);
    else
        assert_memory_equal(dw, dw0, OC * C * sizeof(float));
    if (with_bias && (mask & 4)) {
        fd_grad(mm_loss, &c, c.bias, OC, g);
        check_grad("matmul dbias", db, db0, g, OC, 1e-5);
    } else if (!(mask & 4)) {
        assert_memory_equal(db, db0, OC * sizeof(float));
    }
    free(g), free(c.inp), free(c.w), free(c.bias), free(c.dout), free(c.out);
    free(inp), free(w), free(bias), free(dout), free(out), free(dinp);
    free(dw), free(db), free(dinp0), free(dw0), free(db0);
}

static void test_matmul(void **state)
{
    (void)state;
    matmul_case(6, 10, 7, 1, 7);
    matmul_case(6, 10, 7, 0, 3);
    matmul_case(33, 17, 20, 1, 7);
    for (int mask = 0; mask < 7; mask++)
        matmul_case(5, 8, 9, 1, mask);
}

/* ------------------------------------------------------------------------ */
/* attention */

struct at_ctx {
    struct attn_shape s;
    double *qkv, *w, *out, *att;
};

/* naive triple loop straight from the ops.h contract */
static void ref_attention(struct at_ctx *c)
{
    const struct attn_shape *s = &c->s;
    size_t R = (s->nh + 2 * s->nkv) * s->hd, C = s->nh * s->hd, T = s->T;
    size_t q = s->nh / s->nkv;
    double scale = 1.0 / sqrt((double)s->hd);
    for (size_t b = 0; b < s->B; b++)
        for (size_t h = 0; h < s->nh; h++) {
            size_t kh = s->nh + h / q, vh = s->nh + s->nkv + h / q;
            double *P = c->att + (b * s->nh + h) * T * T;
            for (size_t t = 0; t < T; t++) {
                const double *qt = c->qkv + (b * T + t) * R + h * s->hd;
                double m = -INFINITY, sum = 0.0;
                for (size_t u = 0; u < T; u++) {
                    int ok = u <= t && (!s->window || t - u < s->window);
                    double d = 0.0;
                    const double *ku = c->qkv + (b * T + u) * R + kh * s->hd;
                    for (size_t i = 0; ok && i < s->hd; i++)
                        d += qt[i] * ku[i];
                    P[t * T + u] = ok ? d * scale : -INFINITY;
                    m = fmax(m, P[t * T + u]);
                }
                for (size_t u = 0; u < T; u++)
                    sum += (P[t * T + u] = exp(P[t * T + u] - m));
                for (size_t i = 0; i < s->hd; i++) {
                    double o = 0.0;
                    for (size_t u = 0; u <= t; u++)
                        o += (P[t * T + u] / sum) *
                             c->qkv[(b * T + u) * R + vh * s->hd + i];
                    c->out[(b * T + t) * C + h * s->hd + i] = o;
                }
                for (size_t u = 0; u < T; u++)
                    P[t * T + u] /= sum;
            }
        }
}

static double at_loss(void *p)
{
    struct at_ctx *c = p;
    ref_attention(c);
    return dsum_prod(c->out, c->w, c->s.B * c->s.T * c->s.nh * c->s.hd);
}

/* forward and backward on fresh buffers (out/att/scratch NaN-filled) */
static void attention_run(const struct attn_shape *s, const float *qkv,
                          const float *dout, float *out, float *att,
                          float *dqkv)
{
    size_t TT = s->B * s->nh * s->T * s->T;
    float *scratch = fnan(TT);
    for (size_t i = 0; i < TT; i++)
        att[i] = NAN;
    for (size_t i = 0; i < s->B * s->T * s->nh * s->hd; i++)
        out[i] = NAN;
    attention_forward(out, att, qkv, s);
    if (dout)
        attention_backward(dqkv, scratch, dout, qkv, att, s);
    free(scratch);
}

static size_t at_nqkv(const struct attn_shape *s)
{
    return s->B * s->T * (s->nh + 2 * s->nkv) * s->hd;
}

/* full_fd: FD on every qkv entry; else on 60 sampled entries plus the
 * directional derivative along 3 random directions */
static void attention_case(struct attn_shape s, int full_fd)
{
    size_t nq = at_nqkv(&s), no = s.B * s.T * s.nh * s.hd;
    size_t TT = s.B * s.nh * s.T * s.T;
    float *qkv = frand(nq, 1.5), *dout = frand(no, 1), *out = fnan(no);
    float *att = fnan(TT), *dqkv = frand(nq, 1), *dqkv0 = fdup(dqkv, nq);
    struct at_ctx c = {s, dof(qkv, nq), dof(dout, no), dzero(no), dzero(TT)};
    attention_run(&s, qkv, dout, out, att, dqkv);
    ref_attention(&c);
    check_close("attention out", out, c.out, no, 2e-6);
    check_close("attention att", att, c.att, TT, 2e-6);
    for (size_t r = 0; r < s.B * s.nh * s.T; r++) {
        double sum = 0.0;
        for (size_t u = 0; u < s.T; u++) {
            sum += att[r * s.T + u];
            if (c.att[r * s.T + u] == 0.0) /* masked: exactly 0 */
                assert_true(att[r * s.T + u] == 0.0f);
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    double *g = dzero(nq);
    if (full_fd) {
        fd_grad(at_loss, &c, c.qkv, nq, g);
        check_grad("attention dqkv", dqkv, dqkv0, g, nq, 1e-4);
    } else {
        double *dir = dzero(nq), *x0 = dof(qkv, nq);
        for (int k = 0; k < 3; k++) {
            double an = 0.0, eps = 1e-5;
            for (size_t i = 0; i < nq; i++) {
                dir[i] = urand();
                an += dir[i] * ((double)dqkv[i] - dqkv0[i]);
                c.qkv[i] = x0[i] + eps * dir[i];
            }
            double lp = at_loss(&c);
            for (size_t i = 0; i < nq; i++)
                c.qkv[i] = x0[i] - eps * dir[i];
            double fd = (lp - at_loss(&c)) / (2 * eps);
            memcpy(c.qkv, x0, nq * sizeof(double));
            assert_true(fabs(an - fd) <= 1e-4 * fabs(fd) + 1e-6);
        }
        for (int k = 0; k < 60; k++) {
            size_t i = (size_t)((urand() + 1.0) * 0.5 * (double)nq) % nq;
            double gi;
            fd_grad(at_loss, &c, c.qkv + i, 1, &gi);
            assert_true(fabs((double)dqkv[i] - dqkv0[i] - gi) <=
                        2e-4 * fabs(gi) + 1e-5);
        }
        free(dir), free(x0);
    }
    free(g), free(c.qkv), free(c.w), free(c.out), free(c.att);
    free(qkv), free(dout), free(out), free(att), free(dqkv), free(dqkv0);
}

static void test_attention_mha(void **state)
{
    (void)state;
    attention_case((struct attn_shape){2, 13, 3, 3, 4, 0, NULL}, 1);
    attention_case((struct attn_shape){1, 1, 2, 2, 4, 0, NULL}, 1);
}

static void test_attention_gqa(void **state)
{
    (void)state;
    attention_case((struct attn_shape){2, 13, 4, 2, 4, 0, NULL}, 1);
    attention_case((struct attn_shape){1, 37, 4, 2, 8, 0, NULL}, 1);
}

static void test_attention_mqa(void **state)
{
    (void)state;
    attention_case((struct attn_shape){1, 13, 4, 1, 4, 0, NULL}, 1);
}

static void test_attention_window(void **state)
{
    (void)state;
    attention_case((struct attn_shape){2, 8, 2, 2, 4, 3, NULL}, 1);
    attention_case((struct attn_shape){1, 8, 4, 2, 4, 1, NULL}, 1);
    attention_case((struct attn_shape){1, 37, 2, 1, 4, 5, NULL}, 1);
}

/* T spans several row blocks and is not a multiple of any block size */
static void test_attention_long(void **state)
{
    (void)state;
    attention_case((struct attn_shape){1, 150, 2, 1, 8, 0, NULL}, 0);
    attention_case((struct attn_shape){2, 150, 4, 2, 8, 70, NULL}, 0);
    attention_case((struct attn_shape){1, 130, 2, 2, 16, 64, NULL}, 0);
    attention_case((struct attn_shape){1, 129, 2, 2, 8, 1, NULL}, 0);
}

/* GQA (nh=4, nkv=2) == MHA on qkv whose kv heads are duplicated per group;
 * MQA (nkv=1) likewise; the group's dK, dV = sum over its duplicates. */
static void gqa_vs_mha(size_t nkv)
{
    struct attn_shape g = {2, 21, 4, nkv, 8, 0, NULL}, m = g;
    m.nkv = 4;
    size_t hd = g.hd, q = g.nh / nkv, Rg = (4 + 2 * nkv) * hd, Rm = 12 * hd;
    size_t N = g.B * g.T, no = N * 4 * hd, TT = g.B * 4 * g.T * g.T;
    float *qg = frand(N * Rg, 1), *qm = fnan(N * Rm), *dout = frand(no, 1);
    for (size_t n = 0; n < N; n++) {
        memcpy(qm + n * Rm, qg + n * Rg, 4 * hd * sizeof(float));
        for (size_t h = 0; h < 4; h++)
            for (size_t kv = 0; kv < 2; kv++) /* K then V */
                memcpy(qm + n * Rm + (4 + kv * 4 + h) * hd,
                       qg + n * Rg + (4 + kv * nkv + h / q) * hd,
                       hd * sizeof(float));
    }
    float *og = fnan(no), *om = fnan(no), *ag = fnan(TT), *am = fnan(TT);
    float *dg = calloc(N * Rg, sizeof(float)), *dm = calloc(N * Rm, 4);
    attention_run(&g, qg, dout, og, ag, dg);
    attention_run(&m, qm, dout, om, am, dm);
    double *want = dzero(N * Rg);
    for (size_t n = 0; n < N; n++)
        for (size_t h = 0; h < 4; h++)
            for (size_t i = 0; i < hd; i++) {
                want[n * Rg + h * hd + i] = dm[n * Rm + h * hd + i];
                for (size_t kv = 0; kv < 2; kv++)
                    want[n * Rg + (4 + kv * nkv + h / q) * hd + i] +=
                        dm[n * Rm + (4 + kv * 4 + h) * hd + i];
            }
    double *om_d = dof(om, no), *am_d = dof(am, TT);
    check_close("gqa out", og, om_d, no, 1e-6);
    check_close("gqa att", ag, am_d, TT, 1e-6);
    check_close("gqa dqkv", dg, want, N * Rg, 1e-6);
    free(qg), free(qm), free(dout), free(og), free(om), free(ag), free(am);
    free(dg), free(dm), free(want), free(om_d), free(am_d);
}

static void test_attention_gqa_equals_mha(void **state)
{
    (void)state;
    gqa_vs_mha(2);
    gqa_vs_mha(1);
}

/* window >= T is full causal, bitwise; backward accumulates (+=) */
static void test_attention_window_ge_T(void **state)
{
    (void)state;
    struct attn_shape s = {2, 150, 2, 1, 8, 0, NULL};
    size_t nq = at_nqkv(&s), no = s.B * s.T * s.nh * s.hd;
    size_t TT = s.B * s.nh * s.T * s.T;
    float *qkv = frand(nq, 1), *dout = frand(no, 1);
    float *o0 = fnan(no), *a0 = fnan(TT), *d0 = calloc(nq, 4);
    float *o1 = fnan(no), *a1 = fnan(TT), *d1 = calloc(nq, 4);
    attention_run(&s, qkv, dout, o0, a0, d0);
    size_t windows[2] = {150, 1000};
    for (int k = 0; k < 2; k++) {
        s.window = windows[k];
        memset(d1, 0, nq * sizeof(float));
        attention_run(&s, qkv, dout, o1, a1, d1);
        assert_memory_equal(o0, o1, no * sizeof(float));
        assert_memory_equal(a0, a1, TT * sizeof(float));
        assert_memory_equal(d0, d1, nq * sizeof(float));
    }
    /* twice from the same start: the increment doubles */
    float *scratch = fnan(TT);
    attention_backward(d1, scratch, dout, qkv, a1, &s);
    double *want = dzero(nq);
    for (size_t i = 0; i < nq; i++)
        want[i] = 2.0 * d0[i];
    check_close("attention accumulate", d1, want, nq, 1e-6);
    free(qkv), free(dout), free(o0), free(a0), free(d0), free(o1), free(a1);
    free(d1), free(scratch), free(want);
}

/* ------------------------------------------------------------------------ */
/* gelu, residual */

/* GPT-2's 0.5 x (1 + tanh(u)), written as x / (1 + exp(-2u)) (the same
 * function) because 1 + tanh(u) cancels to 0 in double for u < -19 */
static double ref_gelu(double x)
{
    double u = sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x);
    if (x > -5.0)
        return 0.5 * x * (1.0 + tanh(u));
    return x / (1.0 + exp(-2.0 * u));
}

struct gelu_ctx {
    double *x, *w;
    size_t n;
};

static double gelu_loss(void *p)
{
    struct gelu_ctx *c = p;
    double s = 0.0;
    for (size_t i = 0; i < c->n; i++)
        s += ref_gelu(c->x[i]) * c->w[i];
    return s;
}

static void test_gelu(void **state)
{
    (void)state;
    /* pairs of vectors, then one vector and a tail for any OPS_VL of 4,
     * 8 or 16 (2013 = 62 * 32 + 29) */
    size_t n = 2013;
    float *x = frand(n, 6), *w = frand(n, 1), *out = fnan(n);
    x[0] = 0.0f, x[1] = -30.0f, x[2] = 30.0f, x[3] = -9.0f, x[4] = 1e-6f;
    gelu_forward(out, x, n);
    for (size_t i = 0; i < n; i++) {
        double want = ref_gelu(x[i]);
        if (!(fabs(out[i] - want) <= 1e-5 * fabs(want) + 1e-30))
            fail_msg("gelu(%.9g) = %.9g, want %.9g", x[i], out[i], want);
    }
    float *dinp = frand(n, 1), *dinp0 = fdup(dinp, n);
    gelu_backward(dinp, x, w, n);
    struct gelu_ctx c = {dof(x, n), dof(w, n), n};
    double *g = dzero(n);
    fd_grad(gelu_loss, &c, c.x, n, g);
    check_grad("gelu dinp", dinp, dinp0, g, n, 1e-5);
    free(x), free(w), free(out), free(dinp), free(dinp0), free(c.x);
    free(c.w), free(g);
}

static void test_residual(void **state)
{
    (void)state;
    size_t n = 77;
    float *a = frand(n, 1), *b = frand(n, 1), *out = fnan(n);
    float *da = frand(n, 1), *db = frand(n, 1), *d = frand(n, 1);
    float *da0 = fdup(da, n), *db0 = fdup(db, n);
    residual_forward(out, a, b, n);
    residual_backward(da, db, d, n);
    for (size_t i = 0; i < n; i++) {
        assert_true(out[i] == a[i] + b[i]);
        assert_true(da[i] == da0[i] + d[i] && db[i] == db0[i] + d[i]);
    }
    free(a), free(b), free(out), free(da), free(db), free(d), free(da0);
    free(db0);
}

/* ------------------------------------------------------------------------ */
/* cross-entropy */

struct ce_ctx {
    double *logits, *probs, *losses;
    const int32_t *tg;
    double dloss;
    size_t N, V;
};

static double ce_loss(void *p)
{
    struct ce_ctx *c = p;
    double total = 0.0;
    for (size_t n = 0; n < c->N; n++) {
        const double *l = c->logits + n * c->V;
        double m = -INFINITY, s = 0.0;
        for (size_t v = 0; v < c->V; v++)
            m = fmax(m, l[v]);
        for (size_t v = 0; v < c->V; v++)
            s += exp(l[v] - m);
        for (size_t v = 0; v < c->V; v++)
            c->probs[n * c->V + v] = exp(l[v] - m) / s;
        c->losses[n] = log(s) + m - l[c->tg[n]];
        total += c->losses[n] * c->dloss;
    }
    return total;
}

static void test_crossentropy(void **state)
{
    (void)state;
    size_t N = 6, V = 37;
    int32_t tg[6] = {0, 36, 5, 5, 20, 1};
    float *logits = frand(N * V, 4), *probs = fnan(N * V), *loss = fnan(N);
    for (size_t v = 0; v < V; v++) /* extreme rows: no overflow, no NaN */
        logits[4 * V + v] += 1e4f, logits[5 * V + v] = v == 1 ? 60 : -60;
    struct ce_ctx c = {
        dof(logits, N * V), dzero(N * V), dzero(N), tg, 1.0 / 3.0, N, V};
    crossentropy_softmax_forward(loss, probs, logits, tg, N, V);
    ce_loss(&c);
    check_close("ce losses", loss, c.losses, N, 1e-5);
    for (size_t i = 0; i < N * V; i++) /* every probability, to 2e-6 */
        if (!(fabs(probs[i] - c.probs[i]) <= 2e-6 * c.probs[i] + 1e-37))
            fail_msg("ce prob [%zu] %.9g want %.9g", i, probs[i], c.probs[i]);
    float *dl = frand(N * V, 1), *dl0 = fdup(dl, N * V);
    crossentropy_softmax_backward(dl, probs, tg, (float)c.dloss, N, V);
    double *g = dzero(N * V);
    fd_grad(ce_loss, &c, c.logits, N * V, g);
    check_grad("ce dlogits", dl, dl0, g, N * V, 1e-5);
    free(logits), free(probs), free(loss), free(c.logits), free(c.probs);
    free(c.losses), free(dl), free(dl0), free(g);
}

/* Label smoothing and z-loss, with a padded row (ld > V): the reference
 * computes the loss from its definition in double, the mean of -log p_v
 * over the vocabulary and lse^2 included; the gradient is checked by
 * central differences; the padding stays untouched. */
struct xent_ctx {
    double *logits, *losses;
    const int32_t *tg;
    double dloss, s, z;
    size_t N, V, ld;
};

static double xent_ref_loss(void *p)
{
    struct xent_ctx *c = p;
    double total = 0.0;
    for (size_t n = 0; n < c->N; n++) {
        const double *l = c->logits + n * c->ld;
        double m = l[0], sum = 0.0, mean_nlp = 0.0;
        for (size_t v = 1; v < c->V; v++)
            m = fmax(m, l[v]);
        for (size_t v = 0; v < c->V; v++)
            sum += exp(l[v] - m);
        double lse = m + log(sum);
        for (size_t v = 0; v < c->V; v++)
            mean_nlp += (lse - l[v]) / (double)c->V;
        c->losses[n] = (1 - c->s) * (lse - l[c->tg[n]]) + c->s * mean_nlp +
                       c->z * lse * lse;
        total += c->losses[n] * c->dloss;
    }
    return total;
}

static void test_xent_smoothing_zloss(void **state)
{
    (void)state;
    size_t N = 5, V = 29, ld = 32;
    int32_t tg[5] = {0, 28, 7, 7, 13};
    struct xent_opts o = {0.1f, 1e-2f};
    float *logits = frand(N * ld, 3), *probs = fnan(N * ld);
    float *loss = fnan(N), *lse = fnan(N);
    for (size_t v = 0; v < V; v++)
        logits[4 * ld + v] += 30.0f; /* a shifted row: lse^2 matters */
    struct xent_ctx c = {dof(logits, N * ld), dzero(N), tg, 0.25,
                         o.label_smoothing, o.z_loss, N, V, ld};
    xent_forward(loss, probs, lse, logits, tg, N, V, ld, &o);
    xent_ref_loss(&c);
    check_close("xent losses", loss, c.losses, N, 2e-6);
    for (size_t n = 0; n < N; n++)
        for (size_t v = V; v < ld; v++)
            assert_true(probs[n * ld + v] == 0.0f);
    float *dl = frand(N * ld, 1), *dl0 = fdup(dl, N * ld);
    xent_backward(dl, probs, lse, tg, (float)c.dloss, N, V, ld, &o);
    double *g = dzero(N * ld);
    fd_grad(xent_ref_loss, &c, c.logits, N * ld, g);
    for (size_t n = 0; n < N; n++) /* the padding: no gradient at all */
        for (size_t v = V; v < ld; v++) {
            assert_true(g[n * ld + v] == 0.0);
            assert_true(dl[n * ld + v] == dl0[n * ld + v]);
        }
    check_grad("xent dlogits", dl, dl0, g, N * ld, 2e-5);
    /* s = z = 0 is bitwise the plain cross-entropy */
    struct xent_opts zero = {0.0f, 0.0f};
    float *p2 = fnan(N * V), *l2 = fnan(N), *p3 = fnan(N * V), *l3 = fnan(N);
    float *lg = frand(N * V, 3);
    xent_forward(l2, p2, NULL, lg, tg, N, V, V, &zero);
    crossentropy_softmax_forward(l3, p3, lg, tg, N, V);
    assert_memory_equal(l2, l3, N * sizeof(float));
    assert_memory_equal(p2, p3, N * V * sizeof(float));
    free(logits), free(probs), free(loss), free(lse), free(c.logits);
    free(c.losses), free(dl), free(dl0), free(g), free(p2), free(l2);
    free(p3), free(l3), free(lg);
}

/* ops_v_exp against exp() in double over its whole range */
static void test_exp_accuracy(void **state)
{
    (void)state;
    double worst = 0.0;
    size_t n = 400000;
    float buf[8];
    for (size_t i = 0; i < n; i += 8) {
        for (size_t k = 0; k < 8; k++)
            buf[k] = (float)(-87.0 + 175.0 * (double)(i + k) / (double)n);
        ops_exp_shift_inplace(buf, 0.0f, 8);
        for (size_t k = 0; k < 8; k++) {
            float x = (float)(-87.0 + 175.0 * (double)(i + k) / (double)n);
            double want = exp((double)x);
            worst = fmax(worst, fabs(buf[k] - want) / want);
        }
    }
    printf("ops_v_exp: max relative error %.3g on [-87, 88]\n", worst);
    assert_true(worst < 3e-7);
    float sp[5] = {-100.0f, 100.0f, NAN, 0.0f, -INFINITY};
    ops_exp_shift_inplace(sp, 0.0f, 5);
    assert_true(sp[0] == 0.0f && isfinite(sp[1]) && sp[1] > 1e38f);
    assert_true(isnan(sp[2]) && sp[3] == 1.0f && sp[4] == 0.0f);
}

/* The in-register bf16 casts of the element-wise kernels (ops_v_load_h,
 * ops_v_round_h and its integer form) against bf16.h's scalar rules, bit
 * for bit: ties both ways, denormals, NaN, infinities, overflow, random
 * bits, and the _part forms leaving the bytes past n alone. */
static void test_vector_bf16_casts(void **state)
{
    (void)state;
    const uint32_t special[] = {
        0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x3f807fffu, /* ties, near */
        0x00000001u, 0x807fffffu, 0x00800000u, 0x80000000u, /* tiny, -0 */
        0x7fc00000u, 0xff800001u, 0x7f800000u, 0xff800000u, /* NaN, inf */
        0x7f7fffffu, 0x7f7f8000u, 0xff7fc000u, 0x3f800000u, /* overflow */
    };
    uint64_t seed = 7;
    const size_t nspecial = (16 + OPS_VL - 1) / OPS_VL; /* rounds */
    for (size_t round = 0; round < 4096; round++) {
        float f[OPS_VL];
        for (size_t k = 0; k < OPS_VL; k++) {
            uint32_t u = special[(round * OPS_VL + k) % 16];
            if (round >= nspecial) { /* random bits after the specials */
                seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
                u = (uint32_t)(seed >> 32);
            }
            memcpy(&f[k], &u, sizeof u);
        }
        ops_vf v = ops_v_load(f);
        ops_vh a = ops_v_round_h(v), b = ops_v_round_h_int(v);
        for (size_t k = 0; k < OPS_VL; k++) {
            bf16 want = bf16_from_f32(f[k]);
            assert_int_equal(a[k], want);
            assert_int_equal(b[k], want);
        }
        bf16 h[OPS_VL + 1];
        h[OPS_VL] = 0xabcd;
        ops_v_store_h(h, v);
        assert_int_equal(h[OPS_VL], 0xabcd); /* nothing past the vector */
        ops_vf back = ops_v_load_h(h);
        for (size_t k = 0; k < OPS_VL; k++) {
            assert_int_equal(h[k], bf16_from_f32(f[k]));
            float w = bf16_to_f32(h[k]), g = back[k];
            assert_memory_equal(&g, &w, sizeof w);
        }
        size_t part = OPS_VL > 3 ? 3 : OPS_VL - 1;
        bf16 p[OPS_VL];
        memset(p, 0xee, sizeof p);
        ops_v_store_h_part(p, v, part);
        assert_memory_equal(p, h, part * sizeof(bf16));
        for (size_t k = part; k < OPS_VL; k++)
            assert_int_equal(p[k], 0xeeee);
        ops_vf q = ops_v_load_h_part(h, part);
        for (size_t k = 0; k < OPS_VL; k++) {
            float g = q[k], w = k < part ? back[k] : 0.0f;
            assert_memory_equal(&g, &w, sizeof w);
        }
    }
}

/* The partial loads and stores at every length (masked instructions
 * where the build has AVX-512: nothing read or written past n, the other
 * lanes 0), the lane mask, and the horizontal sum and max: the sum in the
 * documented tree order bit for bit (halves, then quarters, ...), which
 * every reduction's result depends on. */
static void test_vector_parts(void **state)
{
    (void)state;
    uint64_t seed = 7;
    for (size_t n = 0; n < OPS_VL; n++) {
        float src[OPS_VL + 1], dst[OPS_VL + 1];
        bf16 hs[OPS_VL + 1], hd[OPS_VL + 1];
        for (size_t k = 0; k <= OPS_VL; k++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            src[k] = (float)(int32_t)(seed >> 40) * 1e-3f;
            hs[k] = bf16_from_f32(src[k]);
        }
        ops_vf v = ops_v_load_part(src, n), w = ops_v_load_h_part(hs, n);
        ops_vi m = ops_v_first(n);
        for (size_t k = 0; k < OPS_VL; k++) {
            float want = k < n ? src[k] : 0.0f, got = v[k];
            assert_memory_equal(&got, &want, sizeof got);
            want = k < n ? bf16_to_f32(hs[k]) : 0.0f, got = w[k];
            assert_memory_equal(&got, &want, sizeof got);
            assert_int_equal(m[k], k < n ? -1 : 0);
        }
        for (size_t k = 0; k <= OPS_VL; k++)
            dst[k] = -1.0f, hd[k] = 0xeeee;
        ops_v_store_part(dst, ops_v_load(src), n);
        ops_v_store_h_part(hd, ops_v_load(src), n);
        for (size_t k = 0; k <= OPS_VL; k++) {
            float want = k < n ? src[k] : -1.0f;
            assert_memory_equal(&dst[k], &want, sizeof want);
            assert_int_equal(hd[k], k < n ? bf16_from_f32(src[k]) : 0xeeee);
        }
        /* sum and max of a full vector */
        ops_vf x = ops_v_load(src);
        float t[OPS_VL], mx = src[0];
        memcpy(t, src, sizeof t);
        for (size_t h = OPS_VL / 2; h >= 1; h /= 2)
            for (size_t k = 0; k < h; k++)
                t[k] += t[k + h];
        for (size_t k = 1; k < OPS_VL; k++)
            mx = src[k] > mx ? src[k] : mx;
        float got = ops_v_hsum(x);
        assert_memory_equal(&got, &t[0], sizeof got);
        assert_true(ops_v_hmax(x) == mx);
    }
    /* cancellation that only the halves-first tree gets exactly: the
     * big values meet (and cancel) in the first step, 1 + 1 then stays */
    float c[OPS_VL];
    for (size_t k = 0; k < OPS_VL; k++)
        c[k] = k == 0 ? 1e8f : k == OPS_VL / 2 ? -1e8f : 1.0f;
    assert_true(ops_v_hsum(ops_v_load(c)) == (float)(OPS_VL - 2));
    ops_vi all = ops_v_first(OPS_VL);
    for (size_t k = 0; k < OPS_VL; k++)
        assert_int_equal(all[k], -1);
}

/* ------------------------------------------------------------------------ */
/* dropout */

static float drop_want(float x, float p, uint64_t key, uint64_t ctr)
{
    return rng_uniform(key, ctr) >= p ? x * (1.0f / (1.0f - p)) : 0.0f;
}

static void test_dropout(void **state)
{
    (void)state;
    const float p = 0.3f;
    const uint64_t key = 0x1234abcdULL, row0 = 11;
    const size_t N = 8, C = 16, ld = 40, col0 = 5;
    float *x = frand(N * C, 1), *out = fnan(N * C), *half = fnan(N * C);
    dropout_forward(out, x, p, key, row0, ld, col0, N, C);
    size_t kept = 0;
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < C; j++) {
            float w =
                drop_want(x[i * C + j], p, key, (row0 + i) * ld + col0 + j);
            assert_true(out[i * C + j] == w);
            kept += w != 0.0f;
        }
    assert_true(kept > 0 && kept < N * C);
    /* two row halves with their row0 */
    dropout_forward(half, x, p, key, row0, ld, col0, N / 2, C);
    dropout_forward(half + N / 2 * C, x + N / 2 * C, p, key, row0 + N / 2, ld,
                    col0, N / 2, C);
    assert_memory_equal(half, out, N * C * sizeof(float));
    /* two column halves, each a contiguous (N, C/2) block with its col0 */
    float *xl = fnan(N * C / 2), *ol = fnan(N * C / 2);
    for (size_t c0 = 0; c0 < C; c0 += C / 2) {
        for (size_t i = 0; i < N; i++)
            memcpy(xl + i * C / 2, x + i * C + c0, C / 2 * sizeof(float));
        dropout_forward(ol, xl, p, key, row0, ld, col0 + c0, N, C / 2);
        for (size_t i = 0; i < N; i++)
            assert_memory_equal(ol + i * C / 2, out + i * C + c0,
                                C / 2 * sizeof(float));
    }
    /* backward: dinp += the forward's mask and scale applied to dout */
    float *dout = frand(N * C, 1), *dinp = frand(N * C, 1);
    float *dinp0 = fdup(dinp, N * C), *fw = fnan(N * C);
    dropout_forward(fw, dout, p, key, row0, ld, col0, N, C);
    dropout_backward(dinp, dout, p, key, row0, ld, col0, N, C);
    for (size_t i = 0; i < N * C; i++) /* 1 rounding apart if gcc fuses */
        assert_true(fabsf(dinp[i] - (dinp0[i] + fw[i])) <= 3e-7f);
    /* p = 0 copies and passes the gradient through */
    dropout_forward(out, x, 0.0f, key, row0, ld, col0, N, C);
    assert_memory_equal(out, x, N * C * sizeof(float));
    memcpy(dinp, dinp0, N * C * sizeof(float));
    dropout_backward(dinp, dout, 0.0f, key, row0, ld, col0, N, C);
    for (size_t i = 0; i < N * C; i++)
        assert_true(dinp[i] == dinp0[i] + dout[i]);
    free(x), free(out), free(half), free(xl), free(ol), free(dout);
    free(dinp), free(dinp0), free(fw);
}

static void test_dropout_rate(void **state)
{
    (void)state;
    size_t N = 100, C = 1000, kept = 0;
    float *x = malloc(N * C * sizeof(float)), *out = fnan(N * C);
    for (size_t i = 0; i < N * C; i++)
        x[i] = 1.0f;
    dropout_forward(out, x, 0.3f, 99, 0, C, 0, N, C);
    for (size_t i = 0; i < N * C; i++) {
        assert_true(out[i] == 0.0f || out[i] == 1.0f / 0.7f);
        kept += out[i] != 0.0f;
    }
    assert_true(fabs((double)kept / (double)(N * C) - 0.7) < 0.005);
    free(x), free(out);
}

/* ------------------------------------------------------------------------ */
/* results do not depend on the OpenMP thread count (bitwise) */

#define THR_ALLOC (2 * 64 * 1100 + 2048)

struct thr_bufs {
    float *o[14];
};

/* runs every threaded kernel at sizes above OPS_PAR_MIN; fills r->o */
static void threaded_run(struct thr_bufs *r, int threads)
{
    const size_t N = 64, C = 1100, V = 7, B = 2, T = 32;
    omp_set_num_threads(threads);
    test_rng_state = 777;
    float *inp = frand(N * C, 2), *w = frand(C, 1), *b = frand(C, 1);
    float *dout = frand(N * C, 1);
    int32_t tok[64];
    for (size_t i = 0; i < N; i++)
        tok[i] = (int32_t)(i * 5 % V);
    for (int k = 0; k < 14; k++)
        r->o[k] = calloc(THR_ALLOC, sizeof(float));
    float *mean = r->o[10], *rstd = r->o[10] + N;
    layernorm_forward(r->o[0], mean, rstd, inp, w, b, N, C);
    layernorm_backward(r->o[1], r->o[2], r->o[2] + C, dout, inp, w, mean, rstd,
                       N, C);
    encoder_forward(r->o[3], tok, inp, dout, B, T, C);
    encoder_backward(r->o[4], r->o[4] + V * C, dout, tok, B, T, C);
    gelu_forward(r->o[5], inp, N * C);
    gelu_backward(r->o[6], inp, dout, N * C);
    matmul_backward(NULL, NULL, r->o[7], dout, NULL, NULL, N, 0, C);
    crossentropy_softmax_forward(r->o[8], r->o[8] + N, inp, tok, N, C);
    crossentropy_softmax_backward(r->o[9], r->o[8] + N, tok, 0.25f, N, C);
    residual_forward(r->o[9] + N * C, inp, dout, N * C);
    struct attn_shape s = {2, 70, 4, 2, 16, 0, NULL};
    float *scr = malloc(s.B * s.nh * s.T * s.T * sizeof(float));
    attention_forward(r->o[11], r->o[10] + 2 * N, inp, &s);
    attention_backward(r->o[11] + 10000, scr, dout, inp, r->o[10] + 2 * N, &s);
    dropout_forward(r->o[7] + C, inp, 0.3f, 5, 3, C, 0, N, C);
    dropout_backward(r->o[7] + C + N * C, inp, 0.3f, 5, 3, C, 0, N, C);
    /* the bf16 element-wise kernels (C = 1100: the thread cuts of
     * gelu_backward_round_bf16's columns fall inside vectors) */
    bf16 *xh = (bf16 *)r->o[12], *gh = xh + N * C;
    bf16_from_f32_n(xh, inp, N * C);
    gelu_forward_bf16((bf16 *)r->o[13], xh, N * C);
    gelu_backward_round_bf16(gh, r->o[13] + N * C, xh, dout, N, C);
    layernorm_forward_bf16((bf16 *)(r->o[13] + N * C + C), r->o[12] + N * C,
                           r->o[12] + N * C + N, inp, w, b, N, C);
    free(inp), free(w), free(b), free(dout), free(scr);
}

static void test_thread_independence(void **state)
{
    (void)state;
    struct thr_bufs r1, r2;
    threaded_run(&r1, 1);
    threaded_run(&r2, 2);
    omp_set_num_threads(1);
    for (int k = 0; k < 14; k++) {
        if (memcmp(r1.o[k], r2.o[k], THR_ALLOC * sizeof(float)))
            fail_msg("output %d differs between 1 and 2 threads", k);
        free(r1.o[k]), free(r2.o[k]);
    }
}

int main(void)
{
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_attention_mha),
        cmocka_unit_test(test_attention_gqa),
        cmocka_unit_test(test_attention_mqa),
        cmocka_unit_test(test_attention_window),
        cmocka_unit_test(test_attention_long),
        cmocka_unit_test(test_attention_gqa_equals_mha),
        cmocka_unit_test(test_attention_window_ge_T),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_xent_smoothing_zloss),
        cmocka_unit_test(test_exp_accuracy),
        cmocka_unit_test(test_vector_bf16_casts),
        cmocka_unit_test(test_vector_parts),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_dropout_rate),
        cmocka_unit_test(test_thread_independence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
