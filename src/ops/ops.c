/*
 * ops.c - the element-wise and matrix kernels of the GPT model (attention
 * is in ops_attention.c).  Semantics, shapes and argument order: ops.h.
 *
 * Threading and determinism: a kernel whose outputs are independent per
 * row (or per element) splits rows over OpenMP threads; a kernel that sums
 * over rows (parameter gradients of layernorm, bias, embeddings) splits
 * columns, and every column keeps its serial row order.  Reductions along a
 * row use the fixed-lane sums of ops_internal.h.  So every result is
 * bitwise the same for any OMP_NUM_THREADS; only the products (gemm.h)
 * depend on the thread count.  Small tensors (< OPS_PAR_MIN elements) stay
 * serial.
 */
#include "ops.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "gemm.h"
#include "ops_internal.h"
#include "rng.h"

/* ------------------------------------------------------------------------ */
/* encoder */

/* the position of token n of a (B,T) batch */
static inline size_t enc_pos(const int32_t *lo, size_t n, size_t T)
{
    return n % T - (lo ? (size_t)lo[n] : 0);
}

void encoder_forward(float *out, const int32_t *inp, const float *wte,
                     const float *wpe, size_t B, size_t T, size_t C)
{
    encoder_forward_doc(out, inp, NULL, wte, wpe, B, T, C);
}

void encoder_forward_doc(float *out, const int32_t *inp, const int32_t *lo,
                         const float *wte, const float *wpe, size_t B,
                         size_t T, size_t C)
{
    size_t N = B * T;
#pragma omp parallel for schedule(static) if (N * C >= OPS_PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        float *o = out + n * C;
        const float *we = wte + (size_t)inp[n] * C;
        const float *pe = wpe + enc_pos(lo, n, T) * C;
        for (size_t c = 0; c < C; c++)
            o[c] = we[c] + pe[c];
    }
}

/* Tokens in (b, t) order, columns [lo, hi) only. */
static void encoder_backward_cols(float *dwte, float *dwpe, const float *dout,
                                  const int32_t *inp, const int32_t *dl,
                                  size_t N, size_t T, size_t C, size_t lo,
                                  size_t hi)
{
    for (size_t n = 0; n < N; n++) {
        const float *d = dout + n * C;
        float *dte = dwte + (size_t)inp[n] * C;
        float *dpe = dwpe + enc_pos(dl, n, T) * C;
        for (size_t c = lo; c < hi; c++) {
            dte[c] += d[c];
            dpe[c] += d[c];
        }
    }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout,
                      const int32_t *inp, size_t B, size_t T, size_t C)
{
    encoder_backward_doc(dwte, dwpe, dout, inp, NULL, B, T, C);
}

void encoder_backward_doc(float *dwte, float *dwpe, const float *dout,
                          const int32_t *inp, const int32_t *dl, size_t B,
                          size_t T, size_t C)
{
    size_t N = B * T;
    /* tokens that repeat collide in dwte: split columns, not tokens */
#pragma omp parallel if (N * C >= OPS_PAR_MIN)
    {
        size_t lo, hi;
        ops_range_split(C, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        encoder_backward_cols(dwte, dwpe, dout, inp, dl, N, T, C, lo, hi);
    }
}

/* ------------------------------------------------------------------------ */
/* layernorm */

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, size_t N, size_t C)
{
#pragma omp parallel for schedule(static) if (N * C >= OPS_PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *o = out + n * C;
        float m = ops_sum(x, C) / (float)C;
        /* variance from the deviations (two passes: no cancellation) */
        float var = ops_sumsq_dev(x, m, C) / (float)C;
        float s = 1.0f / sqrtf(var + 1e-5f);
        for (size_t c = 0; c < C; c++)
            o[c] = (x[c] - m) * s * w[c] + b[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

/* dinp of one row: with g = w * dout and xhat = (x - mean) * rstd,
 * dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)). */
static void layernorm_backward_row(float *dinp, const float *dout,
                                   const float *x, const float *w, float m,
                                   float s, size_t C)
{
    ops_vf a1 = {0}, a2 = {0};
    size_t i = 0;
    for (; i + OPS_VL <= C; i += OPS_VL) {
        ops_vf g = ops_v_load(w + i) * ops_v_load(dout + i);
        a1 += g;
        a2 += g * ((ops_v_load(x + i) - m) * s);
    }
    float t1 = 0.0f, t2 = 0.0f;
    for (; i < C; i++) {
        float g = w[i] * dout[i];
        t1 += g;
        t2 += g * ((x[i] - m) * s);
    }
    float gmean = (ops_v_hsum(a1) + t1) / (float)C;
    float gxmean = (ops_v_hsum(a2) + t2) / (float)C;
    for (size_t c = 0; c < C; c++) {
        float xhat = (x[c] - m) * s;
        float g = w[c] * dout[c];
        dinp[c] += s * (g - gmean - xhat * gxmean);
    }
}

/* dw, db (C) += one row's xhat * dout and dout: the same expressions, in
 * the same row order, as the column pass of layernorm_backward */
static void layernorm_backward_wb(float *dw, float *db, const float *x,
                                  const float *d, float m, float s,
                                  size_t lo, size_t hi)
{
    for (size_t c = lo; c < hi; c++) {
        dw[c] += ((x[c] - m) * s) * d[c];
        db[c] += d[c];
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                        const float *inp, const float *w, const float *mean,
                        const float *rstd, size_t N, size_t C)
{
    int par = N * C >= OPS_PAR_MIN;
    if (!par || omp_get_max_threads() == 1) {
        /* one thread: dw and db take each row while it is in L1, in row
         * order, so the sums are bitwise those of the column pass */
        for (size_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *d = dout + n * C;
            layernorm_backward_row(dinp + n * C, d, x, w, mean[n], rstd[n],
                                   C);
            layernorm_backward_wb(dw, db, x, d, mean[n], rstd[n], 0, C);
        }
        return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (size_t n = 0; n < N; n++)
            layernorm_backward_row(dinp + n * C, dout + n * C, inp + n * C, w,
                                   mean[n], rstd[n], C);
        /* dw, db sum over rows: each thread owns a column range */
        size_t lo, hi;
        ops_range_split(C, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        for (size_t n = 0; n < N; n++)
            layernorm_backward_wb(dw, db, inp + n * C, dout + n * C, mean[n],
                                  rstd[n], lo, hi);
    }
}

/* ------------------------------------------------------------------------ */
/* matmul */

void matmul_forward(float *out, const float *inp, const float *w,
                    const float *bias, size_t N, size_t C, size_t OC)
{
    struct gemm_desc d = {
        .tb = 1, .M = (int64_t)N, .N = (int64_t)OC, .K = (int64_t)C,
        .lda = (int64_t)C, .ldb = (int64_t)C, .ldc = (int64_t)OC,
        .in = GEMM_F32, .out = GEMM_F32, .alpha = 1.0f, .bias = bias != NULL,
    };
    gemm(&d, inp, w, bias, out);
}

void matmul_backward_products(float *dinp, int dinp_acc, float *dw,
                              int dw_acc,
                              const void *dout, const void *inp,
                              const void *w, size_t N, size_t C, size_t OC,
                              enum gemm_type t)
{
    if (dw) {
        struct gemm_desc d = {
            .ta = 1, .M = (int64_t)OC, .N = (int64_t)C, .K = (int64_t)N,
            .lda = (int64_t)OC, .ldb = (int64_t)C, .ldc = (int64_t)C,
            .in = t, .out = GEMM_F32, .alpha = 1.0f, .accumulate = dw_acc,
        };
        gemm(&d, dout, inp, NULL, dw);
    }
    if (dinp) {
        struct gemm_desc d = {
            .M = (int64_t)N, .N = (int64_t)C, .K = (int64_t)OC,
            .lda = (int64_t)OC, .ldb = (int64_t)C, .ldc = (int64_t)C,
            .in = t, .out = GEMM_F32, .alpha = 1.0f, .accumulate = dinp_acc,
        };
        gemm(&d, dout, w, NULL, dinp);
    }
}

void matmul_backward_dinp_bf16(bf16 *dinp, const void *dout, const void *w,
                               size_t N, size_t C, size_t OC)
{
    struct gemm_desc d = {
        .M = (int64_t)N, .N = (int64_t)C, .K = (int64_t)OC,
        .lda = (int64_t)OC, .ldb = (int64_t)C, .ldc = (int64_t)C,
        .in = GEMM_BF16, .out = GEMM_BF16, .alpha = 1.0f,
    };
    gemm(&d, dout, w, NULL, dinp);
}

/* dbias[lo, hi) += column sums of dout, rows in order */
static void bias_backward_cols(float *dbias, const float *dout, size_t N,
                               size_t OC, size_t lo, size_t hi)
{
    for (size_t n = 0; n < N; n++) {
        const float *d = dout + n * OC;
        for (size_t o = lo; o < hi; o++)
            dbias[o] += d[o];
    }
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                     const float *inp, const float *w, size_t N, size_t C,
                     size_t OC)
{
    matmul_backward_products(dinp, 1, dw, 1, dout, inp, w, N, C, OC,
                             GEMM_F32);
    if (dbias) {
#pragma omp parallel if (N * OC >= OPS_PAR_MIN)
        {
            size_t lo, hi;
            ops_range_split(OC, omp_get_thread_num(), omp_get_num_threads(),
                            &lo, &hi);
            bias_backward_cols(dbias, dout, N, OC, lo, hi);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* GELU, tanh approximation: 0.5 x (1 + tanh(u)), u = k (x + 0.044715 x^3).
 * Computed as x * sg(x), sg = sigmoid(2u) = 1 / (1 + exp(-2u)): the same
 * function without tanh's cancellation.  -2u is capped at 80 so that no
 * denormal appears (gelu(x) for x < -10 is then about x * 2e-35 instead of
 * an even smaller number).  gelu'(x) = sg + x * 2 sg (1 - sg) * u'(x),
 * since 0.5 sech^2(u) = 2 sg (1 - sg).  Every element, the tail too, goes
 * through the vector code, so its value does not depend on its position. */

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f

static inline ops_vf gelu_sigmoid_v(ops_vf x)
{
    ops_vf z = -2.0f * GELU_K * (x + GELU_C * x * x * x);
    z = ops_v_cap(z, 80.0f);
    return 1.0f / (1.0f + ops_v_exp(z));
}

static inline ops_vf gelu_grad_v(ops_vf x, ops_vf dout)
{
    ops_vf sg = gelu_sigmoid_v(x);
    ops_vf du = GELU_K * (1.0f + 3.0f * GELU_C * x * x);
    return (sg + x * 2.0f * sg * (1.0f - sg) * du) * dout;
}

/* Elements [lo, hi) of a GELU forward call on elements of type T (lo a
 * multiple of OPS_VL), loaded and stored as fp32 vectors by LD and ST (LDP
 * and STP: the partial tail).  Two vectors per iteration: GELU is one long
 * dependency chain per vector (exp, then the division), so two
 * independent chains in the scheduler keep the FP pipes busier.  Every
 * element goes through gelu_sigmoid_v alone: the loop it falls in does not
 * change its value. */
#define GELU_FORWARD_RANGE(name, T, LD, ST, LDP, STP)                         \
    static void name(T *out, const T *inp, size_t lo, size_t hi)              \
    {                                                                         \
        size_t i = lo;                                                        \
        for (; i + 2 * OPS_VL <= hi; i += 2 * OPS_VL) {                       \
            ops_vf x0 = LD(inp + i), x1 = LD(inp + i + OPS_VL);               \
            ops_vf s0 = gelu_sigmoid_v(x0), s1 = gelu_sigmoid_v(x1);          \
            ST(out + i, x0 * s0);                                             \
            ST(out + i + OPS_VL, x1 * s1);                                    \
        }                                                                     \
        for (; i + OPS_VL <= hi; i += OPS_VL) {                               \
            ops_vf x = LD(inp + i);                                           \
            ST(out + i, x * gelu_sigmoid_v(x));                               \
        }                                                                     \
        if (i < hi) {                                                         \
            ops_vf x = LDP(inp + i, hi - i);                                  \
            STP(out + i, x * gelu_sigmoid_v(x), hi - i);                      \
        }                                                                     \
    }

GELU_FORWARD_RANGE(gelu_forward_range, float, ops_v_load, ops_v_store,
                   ops_v_load_part, ops_v_store_part)

static void gelu_backward_range(float *dinp, const float *inp,
                                const float *dout, size_t lo, size_t hi)
{
    size_t i = lo;
    for (; i + OPS_VL <= hi; i += OPS_VL) {
        ops_vf g = gelu_grad_v(ops_v_load(inp + i), ops_v_load(dout + i));
        ops_v_store(dinp + i, ops_v_load(dinp + i) + g);
    }
    if (i < hi) {
        size_t r = hi - i;
        ops_vf g = gelu_grad_v(ops_v_load_part(inp + i, r),
                               ops_v_load_part(dout + i, r));
        ops_v_store_part(dinp + i, ops_v_load_part(dinp + i, r) + g, r);
    }
}

void gelu_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel if (n >= OPS_PAR_MIN)
    {
        size_t lo, hi;
        ops_range_split(n, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        gelu_forward_range(out, inp, lo, hi);
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel if (n >= OPS_PAR_MIN)
    {
        size_t lo, hi;
        ops_range_split(n, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        gelu_backward_range(dinp, inp, dout, lo, hi);
    }
}

/* ------------------------------------------------------------------------ */
/* residual */

void residual_forward(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

/* ------------------------------------------------------------------------ */
/* fused softmax + cross-entropy */

static int xent_plain(const struct xent_opts *o)
{
    return !o || (o->label_smoothing == 0.0f && o->z_loss == 0.0f);
}

void xent_forward(float *losses, float *probs, float *lse,
                  const float *logits, const int32_t *targets, size_t N,
                  size_t V, size_t ld, const struct xent_opts *o)
{
    int plain = xent_plain(o);
    float s = plain ? 0.0f : o->label_smoothing;
    float z = plain ? 0.0f : o->z_loss;
#pragma omp parallel for schedule(static) if (N * V >= OPS_PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *l = logits + n * ld;
        float *p = probs + n * ld;
        float m = ops_max(l, V);
        memcpy(p, l, V * sizeof(float));
        memset(p + V, 0, (ld - V) * sizeof(float));
        ops_exp_shift_inplace(p, m, V);
        float sum = ops_sum(p, V);
        float inv = 1.0f / sum;
        for (size_t v = 0; v < V; v++)
            p[v] *= inv;
        /* log softmax directly, not log(p): exact for tiny probabilities */
        float ls = logf(sum); /* lse - m */
        float loss = ls - (l[targets[n]] - m);
        if (!plain) {
            float mean = ops_sum(l, V) / (float)V;
            float full = m + ls;
            loss = (1.0f - s) * loss + s * (ls - (mean - m)) + z * full * full;
            if (lse)
                lse[n] = full;
        }
        losses[n] = loss;
    }
}

void xent_backward(float *dlogits, const float *probs, const float *lse,
                   const int32_t *targets, float dloss, size_t N, size_t V,
                   size_t ld, const struct xent_opts *o)
{
    int plain = xent_plain(o);
#pragma omp parallel for schedule(static) if (N * V >= OPS_PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        float *d = dlogits + n * ld;
        const float *p = probs + n * ld;
        size_t t = (size_t)targets[n];
        if (plain) {
            float dt = d[t] + (p[t] - 1.0f) * dloss;
            for (size_t v = 0; v < V; v++)
                d[v] += p[v] * dloss;
            d[t] = dt;
            continue;
        }
        float s = o->label_smoothing;
        float gp = (1.0f + 2.0f * o->z_loss * (lse ? lse[n] : 0.0f)) * dloss;
        float gu = s / (float)V * dloss;
        for (size_t v = 0; v < V; v++)
            d[v] += p[v] * gp - gu;
        d[t] -= (1.0f - s) * dloss;
    }
}

void crossentropy_softmax_forward(float *losses, float *probs,
                                  const float *logits, const int32_t *targets,
                                  size_t N, size_t V)
{
    xent_forward(losses, probs, NULL, logits, targets, N, V, V, NULL);
}

void crossentropy_softmax_backward(float *dlogits, const float *probs,
                                   const int32_t *targets, float dloss,
                                   size_t N, size_t V)
{
    xent_backward(dlogits, probs, NULL, targets, dloss, N, V, V, NULL);
}

/* ------------------------------------------------------------------------ */
/* dropout */

/* Element j of a row whose first element has global counter ctr is kept
 * when rng_uniform(key, ctr + j) >= p.  rng_uniform is k / 2^24 with
 * k = rng_u64 >> 40 (exact in float), so the test is k >= ceil(p 2^24) in
 * integers; the result is selected by a bit mask.  Both keep the loop free
 * of float comparisons and branches, so gcc vectorises it (a branch on a
 * random mask also mispredicts): about 4x faster, same values. */
static inline void dropout_row(float *out, const float *x, float scale,
                               uint64_t thr, uint64_t key, uint64_t ctr,
                               size_t C, int accum)
{
    for (size_t j = 0; j < C; j++) {
        uint32_t keep = -(uint32_t)((rng_u64(key, ctr + j) >> 40) >= thr);
        float v = x[j] * scale;
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= keep;
        memcpy(&v, &bits, sizeof v);
        if (accum)
            out[j] += v;
        else
            out[j] = v;
    }
}

static void dropout_apply(float *out, const float *inp, float p, uint64_t key,
                          uint64_t row0, size_t ld, size_t col0, size_t N,
                          size_t C, int accum)
{
    float scale = 1.0f / (1.0f - p);
    uint64_t thr = (uint64_t)ceilf(p * 16777216.0f); /* p in (0, 1] */
#pragma omp parallel for schedule(static) if (N * C >= OPS_PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        uint64_t ctr = (row0 + i) * (uint64_t)ld + col0;
        if (accum)
            dropout_row(out + i * C, inp + i * C, scale, thr, key, ctr, C, 1);
        else
            dropout_row(out + i * C, inp + i * C, scale, thr, key, ctr, C, 0);
    }
}

void dropout_forward(float *out, const float *inp, float p, uint64_t key,
                     uint64_t row0, size_t ld, size_t col0, size_t N, size_t C)
{
    if (p <= 0.0f) {
        if (out != inp)
            memcpy(out, inp, N * C * sizeof(float));
        return;
    }
    dropout_apply(out, inp, p, key, row0, ld, col0, N, C, 0);
}

void dropout_backward(float *dinp, const float *dout, float p, uint64_t key,
                      uint64_t row0, size_t ld, size_t col0, size_t N,
                      size_t C)
{
    if (p <= 0.0f) {
#pragma omp parallel for simd schedule(static) if (N * C >= OPS_PAR_MIN)
        for (size_t i = 0; i < N * C; i++)
            dinp[i] += dout[i];
        return;
    }
    dropout_apply(dinp, dout, p, key, row0, ld, col0, N, C, 1);
}

/* ------------------------------------------------------------------------ */
/* bf16 mixed precision (ops.h): fp32 arithmetic, rounding where a product
 * reads the result.  Each kernel computes a chunk in fp32 exactly as its
 * fp32 twin does, then rounds it, so its output is bitwise the rounding
 * of the fp32 kernel's output. */

#define CHUNK 256 /* floats per stack chunk; a multiple of 2 OPS_VL */

void layernorm_forward_bf16(bf16 *out, float *mean, float *rstd,
                            const float *inp, const float *w, const float *b,
                            size_t N, size_t C)
{
#pragma omp parallel for schedule(static) if (N * C >= OPS_PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float m = ops_sum(x, C) / (float)C;
        float var = ops_sumsq_dev(x, m, C) / (float)C;
        float s = 1.0f / sqrtf(var + 1e-5f);
        bf16 *o = out + n * C;
        size_t c = 0;
        for (; c + OPS_VL <= C; c += OPS_VL)
            ops_v_store_h(o + c, (ops_v_load(x + c) - m) * s *
                                         ops_v_load(w + c) +
                                     ops_v_load(b + c));
        for (; c < C; c++)
            o[c] = bf16_from_f32((x[c] - m) * s * w[c] + b[c]);
        mean[n] = m;
        rstd[n] = s;
    }
}

void matmul_forward_bf16(void *out, int out_type, const bf16 *inp,
                         const bf16 *w, const float *bias, size_t N, size_t C,
                         size_t OC)
{
    struct gemm_desc d = {
        .tb = 1, .M = (int64_t)N, .N = (int64_t)OC, .K = (int64_t)C,
        .lda = (int64_t)C, .ldb = (int64_t)C, .ldc = (int64_t)OC,
        .in = GEMM_BF16, .out = out_type, .alpha = 1.0f,
        .bias = bias != NULL,
    };
    gemm(&d, inp, w, bias, out);
}

void matmul_forward_residual(float *out, const void *inp, const void *w,
                             const float *bias, const float *res, size_t N,
                             size_t C, size_t OC, enum gemm_type t)
{
    struct gemm_desc d = {
        .tb = 1, .M = (int64_t)N, .N = (int64_t)OC, .K = (int64_t)C,
        .lda = (int64_t)C, .ldb = (int64_t)C, .ldc = (int64_t)OC,
        .in = t, .out = GEMM_F32, .alpha = 1.0f, .bias = bias != NULL,
        .add = 1,
    };
    gemm_add(&d, inp, w, bias, res, out);
}

/* columns [lo, hi) of bf16_round_colsum, rows in order */
static void round_colsum_cols(bf16 *out, float *colsum, const float *x,
                              size_t N, size_t C, size_t lo, size_t hi)
{
    for (size_t n = 0; n < N; n++) {
        const float *r = x + n * C;
        bf16_from_f32_n(out + n * C + lo, r + lo, hi - lo);
        if (colsum)
            for (size_t c = lo; c < hi; c++)
                colsum[c] += r[c];
    }
}

void bf16_round_colsum(bf16 *out, float *colsum, const float *x, size_t N,
                       size_t C)
{
#pragma omp parallel if (N * C >= OPS_PAR_MIN)
    {
        size_t lo, hi;
        ops_range_split(C, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        round_colsum_cols(out, colsum, x, N, C, lo, hi);
    }
}

GELU_FORWARD_RANGE(gelu_forward_bf16_range, bf16, ops_v_load_h,
                   ops_v_store_h, ops_v_load_h_part, ops_v_store_h_part)

void gelu_forward_bf16(bf16 *out, const bf16 *inp, size_t n)
{
#pragma omp parallel if (n >= OPS_PAR_MIN)
    {
        size_t lo, hi;
        ops_range_split(n, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        gelu_forward_bf16_range(out, inp, lo, hi);
    }
}

static void gelu_backward_bf16_range(float *dinp, const bf16 *inp,
                                     const float *dout, size_t lo, size_t hi)
{
    float buf[CHUNK];
    for (size_t i = lo; i < hi; i += CHUNK) {
        size_t k = hi - i < CHUNK ? hi - i : CHUNK;
        bf16_to_f32_n(buf, inp + i, k);
        gelu_backward_range(dinp + i, buf, dout + i, 0, k);
    }
}

void gelu_backward_bf16(float *dinp, const bf16 *inp, const float *dout,
                        size_t n)
{
#pragma omp parallel if (n >= OPS_PAR_MIN)
    {
        size_t lo, hi;
        ops_range_split(n, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        gelu_backward_bf16_range(dinp, inp, dout, lo, hi);
    }
}

/* columns [lo, hi) of gelu_backward_round_bf16, rows in order */
static void gelu_round_cols(bf16 *out, float *colsum, const bf16 *inp,
                            const float *dout, size_t N, size_t F, size_t lo,
                            size_t hi)
{
    for (size_t n = 0; n < N; n++) {
        size_t c = lo, i = n * F + lo;
        for (; c + 2 * OPS_VL <= hi; c += 2 * OPS_VL, i += 2 * OPS_VL) {
            /* two independent chains, as in the forward */
            ops_vf g0 = gelu_grad_v(ops_v_load_h(inp + i),
                                    ops_v_load(dout + i));
            ops_vf g1 = gelu_grad_v(ops_v_load_h(inp + i + OPS_VL),
                                    ops_v_load(dout + i + OPS_VL));
            ops_v_store_h(out + i, g0);
            ops_v_store_h(out + i + OPS_VL, g1);
            ops_v_store(colsum + c, ops_v_load(colsum + c) + g0);
            ops_v_store(colsum + c + OPS_VL,
                        ops_v_load(colsum + c + OPS_VL) + g1);
        }
        for (; c + OPS_VL <= hi; c += OPS_VL, i += OPS_VL) {
            ops_vf g = gelu_grad_v(ops_v_load_h(inp + i),
                                   ops_v_load(dout + i));
            ops_v_store_h(out + i, g);
            ops_v_store(colsum + c, ops_v_load(colsum + c) + g);
        }
        if (c < hi) {
            size_t r = hi - c;
            ops_vf g = gelu_grad_v(ops_v_load_h_part(inp + i, r),
                                   ops_v_load_part(dout + i, r));
            ops_v_store_h_part(out + i, g, r);
            ops_v_store_part(colsum + c, ops_v_load_part(colsum + c, r) + g,
                             r);
        }
    }
}

void gelu_backward_round_bf16(bf16 *out, float *colsum, const bf16 *inp,
                              const float *dout, size_t N, size_t F)
{
#pragma omp parallel if (N * F >= OPS_PAR_MIN)
    {
        size_t lo, hi;
        ops_range_split(F, omp_get_thread_num(), omp_get_num_threads(), &lo,
                        &hi);
        gelu_round_cols(out, colsum, inp, dout, N, F, lo, hi);
    }
}
