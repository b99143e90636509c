/*
 * ops_attention.c - causal self-attention with grouped query heads and an
 * optional sliding window (contract in ops.h), in fp32 or with bf16
 * product inputs.
 *
 * Per (batch, head) every product is one call of the GEMM front door
 * (gemm.h) reading Q, K, V straight out of the qkv rows (row stride = the
 * qkv row width) and writing the head's columns of out in place: no
 * copies, no transposes (a transposed operand is a stride).  The T x T
 * score matrix is processed in blocks of ATTN_BLOCK rows; block [r0, r1)
 * only needs the columns [lo(r0), r1) (causal, and with a window only the
 * band), so the masked triangle is mostly skipped: at T = 256 the
 * products cover 62% of the full square instead of 100%.  Entries of that
 * rectangle outside a row's window are written as exact zeros, so the
 * products that read it need no mask.
 *
 * Precision: the type of qkv, att, out (and of dout in backward) is the
 * product input type dt.  Scores, softmax and its backward are always
 * fp32: with bf16, S = scale Q K^T is computed into fp32 scratch, the
 * softmax runs there, and P is rounded to bf16 once into att (what the
 * P V product and the backward read); in backward dP and dS are fp32 and
 * dS is rounded once for the dQ and dK products.  dqkv is fp32 always.
 *
 * Threads: the forward splits (batch, head) pairs, the backward
 * (batch, kv head) groups, since the query heads of a group all accumulate
 * into the same dK, dV.  Each pair or group is computed by the same calls
 * in the same order whatever the thread count.  OpenMP threads are used
 * when the products run on the calling thread alone (oneDNN inside a
 * parallel region, or OpenBLAS at one thread); otherwise the products are
 * parallel themselves and two thread pools would fight over the cores.
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "dpbf16.h"
#include "gemm.h"
#include "log.h"
#include "ops_internal.h"

/* Rows per block of the score matrix.  64 keeps each product near the
 * small-matrix peak (~80% at 64x256x64) while skipping most of the masked
 * triangle. */
#ifndef ATTN_BLOCK
#define ATTN_BLOCK 64
#endif
/* the VDPBF16PS path pairs rows from each block's first: r0 must be even */
_Static_assert(ATTN_BLOCK % 2 == 0, "ATTN_BLOCK must be even");

/* Geometry of one (batch, head) problem: row strides, window, types. */
struct attn_geom {
    size_t T, hd, window;
    const int32_t *lo; /* (T) this sequence's document bounds, or NULL */
    size_t R; /* qkv row width, (nh + 2 nkv) hd */
    size_t C; /* out row width, nh hd */
    float scale;
    enum gemm_type dt; /* type of qkv, att, out, dout */
};

/* first position that row t attends to: the window's, or its
 * document's first token if later (non-decreasing in t) */
static inline size_t attn_lo(size_t t, const struct attn_geom *g)
{
    size_t w = g->window, lo = (w && t + 1 > w) ? t + 1 - w : 0;
    size_t d = g->lo ? (size_t)g->lo[t] : 0;
    return d > lo ? d : lo;
}

/* element i of an array of type t */
static inline void *el(const void *p, size_t i, enum gemm_type t)
{
    return (char *)p + i * (t == GEMM_BF16 ? sizeof(bf16) : sizeof(float));
}

/* C (M,N) (+)= alpha op(A) op(B): inputs of type in, C of type out */
static void prod(int ta, int tb, size_t M, size_t N, size_t K, float alpha,
                 const void *A, size_t lda, const void *B, size_t ldb,
                 int acc, void *C, size_t ldc, enum gemm_type in,
                 enum gemm_type out)
{
    struct gemm_desc d = {
        .ta = ta, .tb = tb, .M = (int64_t)M, .N = (int64_t)N,
        .K = (int64_t)K, .lda = (int64_t)lda, .ldb = (int64_t)ldb,
        .ldc = (int64_t)ldc, .in = in, .out = out, .alpha = alpha,
        .accumulate = acc,
    };
    gemm(&d, A, B, NULL, C);
}

static int attn_use_omp(size_t tasks, const struct attn_geom *g)
{
    if (tasks < 2 || omp_get_max_threads() < 2)
        return 0;
    /* a representative product decides which backend runs the calls */
    struct gemm_desc d = {
        .tb = 1, .M = ATTN_BLOCK, .N = (int64_t)g->T, .K = (int64_t)g->hd,
        .lda = (int64_t)g->R, .ldb = (int64_t)g->R, .ldc = (int64_t)g->T,
        .in = g->dt, .out = GEMM_F32, .alpha = g->scale,
    };
    return gemm_backend_of(&d) == GEMM_ONEDNN ||
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
    float inv = 1.0f / ops_exp_shift_sum(x, m, n);
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

/* The same for bf16: the scores x = S[lo..t] (exponentiated in place),
 * P (row of att) [c0, r1) written: the softmax rounded on [lo, t], exact
 * zeros on the rest (no other entry of either row is touched: only this
 * rectangle of P is read).  One kernel for the row's max, exponentials
 * and sum, and the scaled rounding: rows are short (64 on average at
 * T = 128), so the calls and passes of the fp32 row above cost as much as
 * its arithmetic.  The tail's lanes past the row are masked (-inf for the
 * max, 0 in the sum), so every element's exp is the same as in a full
 * vector. */
static void attn_softmax_row_bf16(bf16 *P, float *x, size_t c0, size_t lo,
                                  size_t t, size_t r1)
{
    size_t n = t + 1 - lo, full = n / OPS_VL * OPS_VL, r = n - full;
    ops_vi tail = ops_v_first(r);
    ops_vf mv = OPS_VSET(-INFINITY);
    for (size_t i = 0; i < full; i += OPS_VL) {
        ops_vf v = ops_v_load(x + i);
        mv = ops_v_select(v > mv, v, mv);
    }
    if (r) {
        ops_vf v = ops_v_select(tail, ops_v_load_part(x + full, r),
                                OPS_VSET(-INFINITY));
        mv = ops_v_select(v > mv, v, mv);
    }
    float m = ops_v_hmax(mv);
    ops_vf acc = {0};
    for (size_t i = 0; i < full; i += OPS_VL) {
        ops_vf e = ops_v_exp(ops_v_load(x + i) - m);
        ops_v_store(x + i, e);
        acc += e;
    }
    if (r) {
        ops_vf e = ops_v_exp(ops_v_load_part(x + full, r) - m);
        ops_v_store_part(x + full, e, r);
        acc += ops_v_select(tail, e, OPS_VSET(0.0f));
    }
    float inv = 1.0f / ops_v_hsum(acc);
    bf16 *p = P + lo;
    memset(P + c0, 0, (lo - c0) * sizeof(bf16));
    for (size_t i = 0; i < full; i += OPS_VL)
        ops_v_store_h(p + i, ops_v_load(x + i) * inv);
    if (r)
        ops_v_store_h_part(p + full, ops_v_load_part(x + full, r) * inv, r);
    memset(P + t + 1, 0, (r1 - t - 1) * sizeof(bf16));
}

/* One (batch, head): P (T,T) = softmax(scale Q K^T), O = P V.  S is fp32
 * scratch (T,T) for bf16 (the scores, then P before rounding); with fp32
 * it is P itself.  *soft += seconds in the softmax. */
static void attn_forward_head(void *O, void *P, float *S, const void *Q,
                              const void *K, const void *V,
                              const struct attn_geom *g, double *soft)
{
    size_t T = g->T;
    enum gemm_type dt = g->dt;
    if (dt == GEMM_F32)
        S = P;
    for (size_t r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
        size_t r1 = r0 + ATTN_BLOCK < T ? r0 + ATTN_BLOCK : T;
        size_t c0 = attn_lo(r0, g), m = r1 - r0, n = r1 - c0;
        prod(0, 1, m, n, g->hd, g->scale, el(Q, r0 * g->R, dt), g->R,
             el(K, c0 * g->R, dt), g->R, 0, S + r0 * T + c0, T, dt,
             GEMM_F32);
        double t0 = now_s();
        for (size_t t = r0; t < r1; t++) {
            size_t lo = attn_lo(t, g);
            if (dt == GEMM_BF16)
                attn_softmax_row_bf16((bf16 *)P + t * T, S + t * T + lo, c0,
                                      lo, t, r1);
            else
                attn_softmax_row(S + t * T, lo, t, T);
        }
        *soft += now_s() - t0;
        prod(0, 0, m, g->hd, n, 1.0f, el(P, r0 * T + c0, dt), T,
             el(V, c0 * g->R, dt), g->R, 0, el(O, r0 * g->C, dt), g->C, dt,
             dt);
    }
}

/* ---- bf16 on VDPBF16PS (dpbf16.h) ------------------------------------------
 * The same blocks, softmax and roundings, with each product on dp_gemm and
 * its operands packed once per head into the thread's workspace slot: K's
 * words transposed and V's row pairs for the forward; V's words
 * transposed, K's, Q's and dO's row pairs, and per block dS's and P's row
 * pairs (dK and dV read them transposed) for the backward.  A block's
 * first column is rounded down to even so that its column pairs are the
 * packs' row pairs; the extra column lies before every row's first
 * visible position, so it is written as 0 in att like the rest of the
 * masked rectangle. */

static size_t dp_round16(size_t w)
{
    return (w + 15) / 16 * 16;
}

/* words of a row-pair pack of T rows of hd (>= a transposed-word pack) */
static size_t dp_pairs_words(size_t T, size_t hd)
{
    return dp_round16((T + 1) / 2 * hd);
}

/* words of a block's row-pair pack: ATTN_BLOCK rows of at most T */
static size_t dp_block_words(size_t T)
{
    return dp_round16((ATTN_BLOCK + 1) / 2 * T);
}

static size_t dp_slot_words(size_t T, size_t hd)
{
    return 4 * dp_pairs_words(T, hd) + 2 * dp_block_words(T);
}

size_t attention_bf16_ws_words(const struct attn_shape *s, size_t slots)
{
    if (s->hd % 2 || !dpbf16_available())
        return 0;
    return slots * dp_slot_words(s->T, s->hd);
}

static int attn_dp(const struct attn_shape *s, enum gemm_type dt)
{
    return dt == GEMM_BF16 && s->ws && s->ws_slots > 0 && s->hd % 2 == 0 &&
           dpbf16_available();
}

/* the threads of a parallel loop: the workspace has ws_slots slots */
static int attn_threads(const struct attn_shape *s, int dp)
{
    int n = omp_get_max_threads();
    return dp && (size_t)n > s->ws_slots ? (int)s->ws_slots : n;
}

static void dp_prod(size_t M, size_t N, size_t K, const bf16 *A,
                    size_t sar, size_t sak, const uint32_t *B, size_t ldb,
                    void *C, size_t ldc, float alpha, int acc, int c_bf16)
{
    struct dp_gemm g = {
        .M = M, .N = N, .K = K, .A = A, .sar = (ptrdiff_t)sar,
        .sak = (ptrdiff_t)sak, .B = B, .ldb = ldb, .C = C, .ldc = ldc,
        .alpha = alpha, .accumulate = acc, .c_bf16 = c_bf16,
    };
    dp_gemm(&g);
}

static void attn_forward_head_dp(bf16 *O, bf16 *P, float *S, const bf16 *Q,
                                 const bf16 *K, const bf16 *V,
                                 const struct attn_geom *g, uint32_t *ws,
                                 double *soft)
{
    size_t T = g->T, hd = g->hd, R = g->R;
    uint32_t *Kt = ws, *Vv = ws + dp_pairs_words(T, hd);
    dp_pack_words_t(Kt, T, K, R, T, hd);
    dp_pack_pairs(Vv, hd, V, R, T, hd);
    for (size_t r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
        size_t r1 = r0 + ATTN_BLOCK < T ? r0 + ATTN_BLOCK : T;
        size_t c0 = attn_lo(r0, g) & ~(size_t)1, m = r1 - r0, n = r1 - c0;
        /* S = scale Q K^T */
        dp_prod(m, n, hd, Q + r0 * R, R, 2, Kt + c0, T, S + r0 * T + c0, T,
                g->scale, 0, 0);
        double t0 = now_s();
        for (size_t t = r0; t < r1; t++) {
            size_t lo = attn_lo(t, g);
            attn_softmax_row_bf16(P + t * T, S + t * T + lo, c0, lo, t, r1);
        }
        *soft += now_s() - t0;
        /* O = P V */
        dp_prod(m, hd, n, P + r0 * T + c0, T, 2, Vv + c0 / 2 * hd, hd,
                O + r0 * g->C, g->C, 1.0f, 0, 1);
    }
}

static struct attn_geom attn_geom_of(const struct attn_shape *s,
                                     enum gemm_type dt)
{
    struct attn_geom g = {
        .T = s->T,
        .hd = s->hd,
        .window = s->window,
        .R = (s->nh + 2 * s->nkv) * s->hd,
        .C = s->nh * s->hd,
        .scale = 1.0f / sqrtf((float)s->hd),
        .dt = dt,
    };
    return g;
}

static void attn_forward_any(void *out, void *att, float *scratch,
                             const void *qkv, const struct attn_shape *s,
                             enum gemm_type dt)
{
    struct attn_geom g = attn_geom_of(s, dt);
    size_t T = s->T, nh = s->nh, hd = s->hd, q = s->nh / s->nkv;
    size_t tasks = s->B * nh;
    double soft = 0.0;
    int dp = attn_dp(s, dt), nthr = attn_threads(s, dp);
    size_t slot = dp ? dp_slot_words(T, hd) : 0;
#pragma omp parallel for schedule(static) reduction(+ : soft) \
    num_threads(nthr) if (attn_use_omp(tasks, &g))
    for (size_t bh = 0; bh < tasks; bh++) {
        size_t b = bh / nh, h = bh % nh, kvh = h / q;
        const void *base = el(qkv, b * T * g.R, dt);
        struct attn_geom gb = g;
        gb.lo = s->lo ? s->lo + b * T : NULL;
        if (dp) {
            const bf16 *hb = base;
            attn_forward_head_dp(
                (bf16 *)out + b * T * g.C + h * hd, (bf16 *)att + bh * T * T,
                scratch + bh * T * T, hb + h * hd, hb + (nh + kvh) * hd,
                hb + (nh + s->nkv + kvh) * hd, &gb,
                s->ws + (size_t)omp_get_thread_num() * slot, &soft);
            continue;
        }
        attn_forward_head(el(out, b * T * g.C + h * hd, dt),
                          el(att, bh * T * T, dt),
                          scratch ? scratch + bh * T * T : NULL,
                          el(base, h * hd, dt), el(base, (nh + kvh) * hd, dt),
                          el(base, (nh + s->nkv + kvh) * hd, dt), &gb, &soft);
    }
    if (s->softmax_s)
        *s->softmax_s += soft;
}

void attention_forward(float *out, float *att, const float *qkv,
                       const struct attn_shape *s)
{
    attn_forward_any(out, att, NULL, qkv, s, GEMM_F32);
}

void attention_forward_bf16(bf16 *out, bf16 *att, float *scratch,
                            const bf16 *qkv, const struct attn_shape *s)
{
    attn_forward_any(out, att, scratch, qkv, s, GEMM_BF16);
}

/* dS rows [r0, r1) over columns [c0, r1): on entry dP = dO V^T; on exit
 * dS = P * (dP - rowsum(P * dP)) inside each row's window, 0 outside.
 * P of type g->dt; with bf16, dS goes rounded into dSh only (the products
 * read dSh; dS keeps dP). */
static void attn_softmax_backward_rows(float *dS, bf16 *dSh, const void *P,
                                       size_t r0, size_t r1, size_t c0,
                                       const struct attn_geom *g)
{
    for (size_t t = r0; t < r1; t++) {
        size_t lo = attn_lo(t, g), n = t + 1 - lo;
        float *d = dS + t * g->T;
        if (g->dt == GEMM_F32) {
            const float *p = (const float *)P + t * g->T;
            memset(d + c0, 0, (lo - c0) * sizeof(float));
            memset(d + t + 1, 0, (r1 - t - 1) * sizeof(float));
            float dot = ops_dot(p + lo, d + lo, n);
            for (size_t i = lo; i <= t; i++)
                d[i] = p[i] * (d[i] - dot);
            continue;
        }
        /* bf16: P read and dS written in registers, one pass each */
        const bf16 *p = (const bf16 *)P + t * g->T + lo;
        bf16 *h = dSh + t * g->T;
        const float *dp = d + lo;
        size_t full = n / OPS_VL * OPS_VL, r = n - full;
        ops_vf acc = {0};
        for (size_t i = 0; i < full; i += OPS_VL)
            acc += ops_v_load_h(p + i) * ops_v_load(dp + i);
        if (r) /* both tails read as 0 past the row */
            acc += ops_v_load_h_part(p + full, r) *
                   ops_v_load_part(dp + full, r);
        float dot = ops_v_hsum(acc);
        memset(h + c0, 0, (lo - c0) * sizeof(bf16));
        for (size_t i = 0; i < full; i += OPS_VL)
            ops_v_store_h(h + lo + i, ops_v_load_h(p + i) *
                                          (ops_v_load(dp + i) - dot));
        if (r)
            ops_v_store_h_part(h + lo + full,
                               ops_v_load_h_part(p + full, r) *
                                   (ops_v_load_part(dp + full, r) - dot),
                               r);
        memset(h + t + 1, 0, (r1 - t - 1) * sizeof(bf16));
    }
}

/* One query head of a group: dQ, dK, dV += (dK, dV shared by the group).
 * dS (T,T) is fp32 scratch, dSh (T,T) bf16 scratch (bf16 only). */
static void attn_backward_head(float *dQ, float *dK, float *dV, float *dS,
                               bf16 *dSh, const void *dO, const void *P,
                               const void *Q, const void *K, const void *V,
                               const struct attn_geom *g, double *soft)
{
    size_t T = g->T, hd = g->hd, R = g->R, C = g->C;
    enum gemm_type dt = g->dt;
    const void *dSt = dt == GEMM_F32 ? (const void *)dS : (const void *)dSh;
    for (size_t r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
        size_t r1 = r0 + ATTN_BLOCK < T ? r0 + ATTN_BLOCK : T;
        size_t c0 = attn_lo(r0, g), m = r1 - r0, n = r1 - c0;
        /* dP = dO V^T */
        prod(0, 1, m, n, hd, 1.0f, el(dO, r0 * C, dt), C,
             el(V, c0 * R, dt), R, 0, dS + r0 * T + c0, T, dt, GEMM_F32);
        double t0 = now_s();
        attn_softmax_backward_rows(dS, dSh, P, r0, r1, c0, g);
        *soft += now_s() - t0;
        /* dQ += scale dS K; dK += scale dS^T Q; dV += P^T dO */
        const void *dSb = el(dSt, r0 * T + c0, dt);
        prod(0, 0, m, hd, n, g->scale, dSb, T, el(K, c0 * R, dt), R, 1,
             dQ + r0 * R, R, dt, GEMM_F32);
        prod(1, 0, n, hd, m, g->scale, dSb, T, el(Q, r0 * R, dt), R, 1,
             dK + c0 * R, R, dt, GEMM_F32);
        prod(1, 0, n, hd, m, 1.0f, el(P, r0 * T + c0, dt), T,
             el(dO, r0 * C, dt), C, 1, dV + c0 * R, R, dt, GEMM_F32);
    }
}

/* One query head of a group on VDPBF16PS: as attn_backward_head, with the
 * group's packs Vt (V's words transposed) and Kv (K's row pairs) and the
 * rest of the slot ws for this head's and its blocks' packs. */
static void attn_backward_head_dp(float *dQ, float *dK, float *dV, float *dS,
                                  bf16 *dSh, const bf16 *dO, const bf16 *P,
                                  const bf16 *Q, const uint32_t *Vt,
                                  const uint32_t *Kv, uint32_t *ws,
                                  const struct attn_geom *g, double *soft)
{
    size_t T = g->T, hd = g->hd, R = g->R, C = g->C;
    size_t pw = dp_pairs_words(T, hd);
    uint32_t *Qv = ws, *dOv = ws + pw, *Sv = ws + 2 * pw;
    uint32_t *Pv = Sv + dp_block_words(T);
    dp_pack_pairs(Qv, hd, Q, R, T, hd);
    dp_pack_pairs(dOv, hd, dO, C, T, hd);
    for (size_t r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
        size_t r1 = r0 + ATTN_BLOCK < T ? r0 + ATTN_BLOCK : T;
        size_t c0 = attn_lo(r0, g) & ~(size_t)1, m = r1 - r0, n = r1 - c0;
        /* dP = dO V^T */
        dp_prod(m, n, hd, dO + r0 * C, C, 2, Vt + c0, T, dS + r0 * T + c0,
                T, 1.0f, 0, 0);
        double t0 = now_s();
        attn_softmax_backward_rows(dS, dSh, P, r0, r1, c0, g);
        *soft += now_s() - t0;
        /* dQ += scale dS K */
        dp_prod(m, hd, n, dSh + r0 * T + c0, T, 2, Kv + c0 / 2 * hd, hd,
                dQ + r0 * R, R, g->scale, 1, 0);
        /* dK += scale dS^T Q; dV += P^T dO */
        dp_pack_pairs(Sv, n, dSh + r0 * T + c0, T, m, n);
        dp_prod(n, hd, m, (const bf16 *)Sv, 2, 2 * n, Qv + r0 / 2 * hd, hd,
                dK + c0 * R, R, g->scale, 1, 0);
        dp_pack_pairs(Pv, n, P + r0 * T + c0, T, m, n);
        dp_prod(n, hd, m, (const bf16 *)Pv, 2, 2 * n, dOv + r0 / 2 * hd, hd,
                dV + c0 * R, R, 1.0f, 1, 0);
    }
}

static void attn_backward_any(float *dqkv, float *scratch, bf16 *scratch_h,
                              const void *dout, const void *qkv,
                              const void *att, const struct attn_shape *s,
                              enum gemm_type dt)
{
    struct attn_geom g = attn_geom_of(s, dt);
    size_t T = s->T, nh = s->nh, nkv = s->nkv, hd = s->hd, q = nh / nkv;
    size_t tasks = s->B * nkv;
    double soft = 0.0;
    int dp = attn_dp(s, dt), nthr = attn_threads(s, dp);
    size_t slot = dp ? dp_slot_words(T, hd) : 0, pw = dp_pairs_words(T, hd);
#pragma omp parallel for schedule(static) reduction(+ : soft) \
    num_threads(nthr) if (attn_use_omp(tasks, &g))
    for (size_t bg = 0; bg < tasks; bg++) {
        size_t b = bg / nkv, kvh = bg % nkv;
        const void *base = el(qkv, b * T * g.R, dt);
        float *dbase = dqkv + b * T * g.R;
        size_t koff = (nh + kvh) * hd, voff = (nh + nkv + kvh) * hd;
        struct attn_geom gb = g;
        gb.lo = s->lo ? s->lo + b * T : NULL;
        if (dp) {
            const bf16 *hb = base;
            uint32_t *ws = s->ws + (size_t)omp_get_thread_num() * slot;
            uint32_t *Vt = ws, *Kv = ws + pw;
            dp_pack_words_t(Vt, T, hb + voff, g.R, T, hd);
            dp_pack_pairs(Kv, hd, hb + koff, g.R, T, hd);
            for (size_t h = kvh * q; h < (kvh + 1) * q; h++) {
                size_t bh = b * nh + h;
                attn_backward_head_dp(
                    dbase + h * hd, dbase + koff, dbase + voff,
                    scratch + bh * T * T, scratch_h + bh * T * T,
                    (const bf16 *)dout + b * T * g.C + h * hd,
                    (const bf16 *)att + bh * T * T, hb + h * hd, Vt, Kv,
                    ws + 2 * pw, &gb, &soft);
            }
            continue;
        }
        for (size_t h = kvh * q; h < (kvh + 1) * q; h++) {
            size_t bh = b * nh + h;
            attn_backward_head(dbase + h * hd, dbase + koff, dbase + voff,
                               scratch + bh * T * T,
                               scratch_h ? scratch_h + bh * T * T : NULL,
                               el(dout, b * T * g.C + h * hd, dt),
                               el(att, bh * T * T, dt), el(base, h * hd, dt),
                               el(base, koff, dt), el(base, voff, dt), &gb,
                               &soft);
        }
    }
    if (s->softmax_s)
        *s->softmax_s += soft;
}

void attention_backward(float *dqkv, float *scratch, const float *dout,
                        const float *qkv, const float *att,
                        const struct attn_shape *s)
{
    attn_backward_any(dqkv, scratch, NULL, dout, qkv, att, s, GEMM_F32);
}

void attention_backward_bf16(float *dqkv, float *scratch, bf16 *scratch_h,
                             const bf16 *dout, const bf16 *qkv,
                             const bf16 *att, const struct attn_shape *s)
{
    attn_backward_any(dqkv, scratch, scratch_h, dout, qkv, att, s,
                      GEMM_BF16);
}
