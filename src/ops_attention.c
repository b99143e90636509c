/*
 * ops_attention.c - causal self-attention with grouped query heads and an
 * optional sliding window (contract in ops.h).
 *
 * Per (batch, head) every product is one cblas_sgemm reading Q, K, V
 * straight out of the qkv rows (leading dimension = the qkv row width) and
 * writing the head's columns of out in place: no copies, no transposes.
 * The T x T score matrix is processed in blocks of ATTN_BLOCK rows; block
 * [r0, r1) only needs the columns [lo(r0), r1) (causal, and with a window
 * only the band), so the masked triangle is mostly skipped: at T = 256
 * the products cover 62% of the full square instead of 100%.  Entries of
 * that rectangle outside a row's window are written as exact zeros, so the
 * products that read it need no mask.
 *
 * Threads: the forward splits (batch, head) pairs, the backward
 * (batch, kv head) groups, since the query heads of a group all accumulate
 * into the same dK, dV.  Each pair or group is computed by the same calls
 * in the same order whatever the thread count; only the sgemm inside may
 * depend on the BLAS thread count.  OpenMP threads are used only when
 * OpenBLAS runs single-threaded (otherwise BLAS parallelises each product
 * and two thread pools would fight over the cores).
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops_internal.h"

/* Rows per block of the score matrix.  64 keeps each product near
 * OpenBLAS's small-matrix peak (~80% at 64x256x64) while skipping most of
 * the masked triangle. */
#ifndef ATTN_BLOCK
#define ATTN_BLOCK 64
#endif

/* Geometry of one (batch, head) problem: row strides and window. */
struct attn_geom {
    size_t T, hd, window;
    const int32_t *lo; /* (T) this sequence's document bounds, or NULL */
    size_t R; /* qkv row width, (nh + 2 nkv) hd */
    size_t C; /* out row width, nh hd */
    float scale;
};

/* first position that row t attends to: the window's, or its
 * document's first token if later (non-decreasing in t) */
static inline size_t attn_lo(size_t t, const struct attn_geom *g)
{
    size_t w = g->window, lo = (w && t + 1 > w) ? t + 1 - w : 0;
    size_t d = g->lo ? (size_t)g->lo[t] : 0;
    return d > lo ? d : lo;
}

static int attn_use_omp(size_t tasks)
{
    return tasks > 1 && omp_get_max_threads() > 1 &&
           openblas_get_num_threads() == 1;
}

/* p (T) is a row of scores whose entries [lo, t] are valid: replace them by
 * their softmax and zero the rest of the row. */
static void attn_softmax_row(float *p, size_t lo, size_t t, size_t T)
{
    size_t n = t + 1 - lo;
    float *x = p + lo;
    memset(p, 0, lo * sizeof(float));
    memset(p + t + 1, 0, (T - t - 1) * sizeof(float));
    float m = ops_max(x, n);
    ops_exp_shift_inplace(x, m, n);
    float inv = 1.0f / ops_sum(x, n);
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

/* One (batch, head): P (T,T) = softmax(scale Q K^T), O = P V. */
static void attn_forward_head(float *O, float *P, const float *Q,
                              const float *K, const float *V,
                              const struct attn_geom *g)
{
    size_t T = g->T;
    for (size_t r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
        size_t r1 = r0 + ATTN_BLOCK < T ? r0 + ATTN_BLOCK : T;
        size_t c0 = attn_lo(r0, g);
        int m = (int)(r1 - r0), n = (int)(r1 - c0);
        float *Pb = P + r0 * T + c0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, (int)g->hd,
                    g->scale, Q + r0 * g->R, (int)g->R, K + c0 * g->R,
                    (int)g->R, 0.0f, Pb, (int)T);
        for (size_t t = r0; t < r1; t++)
            attn_softmax_row(P + t * T, attn_lo(t, g), t, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, (int)g->hd,
                    n, 1.0f, Pb, (int)T, V + c0 * g->R, (int)g->R, 0.0f,
                    O + r0 * g->C, (int)g->C);
    }
}

static struct attn_geom attn_geom_of(const struct attn_shape *s)
{
    struct attn_geom g = {
        .T = s->T,
        .hd = s->hd,
        .window = s->window,
        .R = (s->nh + 2 * s->nkv) * s->hd,
        .C = s->nh * s->hd,
        .scale = 1.0f / sqrtf((float)s->hd),
    };
    return g;
}

void attention_forward(float *out, float *att, const float *qkv,
                       const struct attn_shape *s)
{
    struct attn_geom g = attn_geom_of(s);
    size_t T = s->T, nh = s->nh, hd = s->hd, q = s->nh / s->nkv;
    size_t tasks = s->B * nh;
#pragma omp parallel for schedule(static) if (attn_use_omp(tasks))
    for (size_t bh = 0; bh < tasks; bh++) {
        size_t b = bh / nh, h = bh % nh, kvh = h / q;
        const float *base = qkv + b * T * g.R;
        struct attn_geom gb = g;
        gb.lo = s->lo ? s->lo + b * T : NULL;
        attn_forward_head(out + b * T * g.C + h * hd, att + bh * T * T,
                          base + h * hd, base + (nh + kvh) * hd,
                          base + (nh + s->nkv + kvh) * hd, &gb);
    }
}

/* dS rows [r0, r1) over columns [c0, r1): on entry dP = dO V^T; on exit
 * dS = P * (dP - rowsum(P * dP)) inside each row's window, 0 outside. */
static void attn_softmax_backward_rows(float *dS, const float *P, size_t r0,
                                       size_t r1, size_t c0,
                                       const struct attn_geom *g)
{
    for (size_t t = r0; t < r1; t++) {
        size_t lo = attn_lo(t, g), n = t + 1 - lo;
        float *d = dS + t * g->T;
        const float *p = P + t * g->T;
        memset(d + c0, 0, (lo - c0) * sizeof(float));
        memset(d + t + 1, 0, (r1 - t - 1) * sizeof(float));
        float dot = ops_dot(p + lo, d + lo, n);
        for (size_t i = lo; i <= t; i++)
            d[i] = p[i] * (d[i] - dot);
    }
}

/* One query head of a group: dQ, dK, dV += (dK, dV shared by the group).
 * dS (T,T) is scratch. */
static void attn_backward_head(float *dQ, float *dK, float *dV, float *dS,
                               const float *dO, const float *P, const float *Q,
                               const float *K, const float *V,
                               const struct attn_geom *g)
{
    size_t T = g->T;
    int hd = (int)g->hd, R = (int)g->R, C = (int)g->C;
    for (size_t r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
        size_t r1 = r0 + ATTN_BLOCK < T ? r0 + ATTN_BLOCK : T;
        size_t c0 = attn_lo(r0, g);
        int m = (int)(r1 - r0), n = (int)(r1 - c0);
        float *dSb = dS + r0 * T + c0;
        const float *Pb = P + r0 * T + c0;
        /* dP = dO V^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, hd, 1.0f,
                    dO + r0 * g->C, C, V + c0 * g->R, R, 0.0f, dSb, (int)T);
        attn_softmax_backward_rows(dS, P, r0, r1, c0, g);
        /* dQ += scale dS K; dK += scale dS^T Q; dV += P^T dO */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, n,
                    g->scale, dSb, (int)T, K + c0 * g->R, R, 1.0f,
                    dQ + r0 * g->R, R);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, m,
                    g->scale, dSb, (int)T, Q + r0 * g->R, R, 1.0f,
                    dK + c0 * g->R, R);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, m, 1.0f,
                    Pb, (int)T, dO + r0 * g->C, C, 1.0f, dV + c0 * g->R, R);
    }
}

void attention_backward(float *dqkv, float *scratch, const float *dout,
                        const float *qkv, const float *att,
                        const struct attn_shape *s)
{
    struct attn_geom g = attn_geom_of(s);
    size_t T = s->T, nh = s->nh, nkv = s->nkv, hd = s->hd, q = nh / nkv;
    size_t tasks = s->B * nkv;
#pragma omp parallel for schedule(static) if (attn_use_omp(tasks))
    for (size_t bg = 0; bg < tasks; bg++) {
        size_t b = bg / nkv, kvh = bg % nkv;
        const float *base = qkv + b * T * g.R;
        float *dbase = dqkv + b * T * g.R;
        size_t koff = (nh + kvh) * hd, voff = (nh + nkv + kvh) * hd;
        struct attn_geom gb = g;
        gb.lo = s->lo ? s->lo + b * T : NULL;
        for (size_t h = kvh * q; h < (kvh + 1) * q; h++) {
            size_t bh = b * nh + h;
            attn_backward_head(dbase + h * hd, dbase + koff, dbase + voff,
                               scratch + bh * T * T,
                               dout + b * T * g.C + h * hd, att + bh * T * T,
                               base + h * hd, base + koff, base + voff, &gb);
        }
    }
}
