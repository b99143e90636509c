/*
 * test_ops_bf16.c - the bf16 variants of ops.h against double-precision
 * references computed from the same rounded inputs.
 *
 * Every input of a bf16 op is drawn, rounded to bf16, and the reference
 * computes in double from exactly those values, so the only differences
 * left are the op's fp32 accumulation and its own documented roundings:
 *  - an fp32 result: within 2e-6 of the sum of |terms| (fp32 round-off);
 *  - a result the op rounds to bf16: within half a bf16 ulp (|x| / 256)
 *    on top of that;
 *  - where the op rounds an intermediate (attention's P and dS), the
 *    reference rounds the same intermediate (P: the op's saved att is the
 *    reference's input to the next product, so only the rounding of fp32
 *    P is checked against the double P).
 * Also bitwise identities with the fp32 kernels (a bf16 kernel's output is
 * the rounding of its fp32 twin's), fused against unfused kernels, the
 * optimizer's bf16 copy, and the gradients of every bf16 op: matmul (dinp,
 * dw, dbias), GELU and attention (dq, dk, dv with GQA and windows).
 * Needs a CPU with bf16 instructions for the products (skipped without).
 * No MPI.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <omp.h>

#include "bf16.h"
#include "ops/dpbf16.h"
#include "gemm.h"
#include "ops/ops.h"
#include "optim.h"

static uint64_t rng_state = 777;

static double urand(void) /* uniform in [-1, 1) */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 4503599627370496.0 - 1.0;
}

/* n bf16 values scale * U(-1, 1), and their exact doubles */
static bf16 *hrand(size_t n, double scale, double **d)
{
    bf16 *h = malloc(n * sizeof(bf16));
    *d = malloc(n * sizeof(double));
    assert_true(h && *d);
    for (size_t i = 0; i < n; i++) {
        h[i] = bf16_from_f32((float)(scale * urand()));
        (*d)[i] = bf16_to_f32(h[i]);
    }
    return h;
}

static float *frand(size_t n, double scale)
{
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * urand());
    return x;
}

/* |got - want| <= tol_abs + tol_rel |want| for every element */
static void check(const char *what, size_t i, double got, double want,
                  double tol_abs, double tol_rel)
{
    if (!(fabs(got - want) <= tol_abs + tol_rel * fabs(want)))
        fail_msg("%s[%zu]: got %.9g, want %.9g (tolerance %.3g + %.3g rel)",
                 what, i, got, want, tol_abs, tol_rel);
}

static int have_bf16(void)
{
    if (gemm_bf16_supported(NULL, 0))
        return 1;
    printf("no bf16 instructions here: skipped\n");
    return 0;
}

/* ---- LayerNorm ------------------------------------------------------------ */

/* out is the rounding of the fp32 kernel's output, bit for bit */
static void test_layernorm_bf16(void **state)
{
    (void)state;
    size_t N = 7, C = 300; /* C not a multiple of the chunk or vector */
    float *x = frand(N * C, 2), *w = frand(C, 1), *b = frand(C, 1);
    float *o32 = malloc(N * C * 4), m32[7], r32[7], m16[7], r16[7];
    bf16 *o16 = malloc(N * C * 2);
    layernorm_forward(o32, m32, r32, x, w, b, N, C);
    layernorm_forward_bf16(o16, m16, r16, x, w, b, N, C);
    for (size_t i = 0; i < N * C; i++)
        assert_int_equal(o16[i], bf16_from_f32(o32[i]));
    assert_memory_equal(m16, m32, sizeof m32);
    assert_memory_equal(r16, r32, sizeof r32);
    free(x), free(w), free(b), free(o32), free(o16);
}

/* ---- matmul --------------------------------------------------------------- */

static void test_matmul_forward_bf16(void **state)
{
    (void)state;
    if (!have_bf16())
        skip();
    size_t N = 37, C = 70, OC = 45;
    double *dx, *dw;
    bf16 *x = hrand(N * C, 1, &dx), *w = hrand(OC * C, 1, &dw);
    float *bias = frand(OC, 1), *o32 = malloc(N * OC * 4);
    bf16 *o16 = malloc(N * OC * 2);
    matmul_forward_bf16(o32, GEMM_F32, x, w, bias, N, C, OC);
    matmul_forward_bf16(o16, GEMM_BF16, x, w, bias, N, C, OC);
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < OC; o++) {
            double s = bias[o], mag = fabs(bias[o]);
            for (size_t c = 0; c < C; c++) {
                s += dx[n * C + c] * dw[o * C + c];
                mag += fabs(dx[n * C + c] * dw[o * C + c]);
            }
            check("matmul out f32", n * OC + o, o32[n * OC + o], s,
                  2e-6 * mag, 0);
            check("matmul out bf16", n * OC + o,
                  bf16_to_f32(o16[n * OC + o]), s, 2e-6 * mag, 1.0 / 256);
        }
    free(x), free(w), free(dx), free(dw), free(bias), free(o32), free(o16);
}

/* d(out) rounded with its column sums; dinp and dw from the rounded
 * operands; dinp both accumulated and overwritten */
static void test_matmul_backward_bf16(void **state)
{
    (void)state;
    if (!have_bf16())
        skip();
    size_t N = 41, C = 66, OC = 50;
    double *dx, *dw;
    bf16 *x = hrand(N * C, 1, &dx), *w = hrand(OC * C, 1, &dw);
    float *dout = frand(N * OC, 1), *db = frand(OC, 1), *db0 = malloc(OC * 4);
    float *dinp = frand(N * C, 1), *dinp0 = malloc(N * C * 4);
    float *dwt = frand(OC * C, 1), *dwt0 = malloc(OC * C * 4);
    float *dover = malloc(N * C * 4);
    bf16 *dh = malloc(N * OC * 2);
    memcpy(db0, db, OC * 4), memcpy(dinp0, dinp, N * C * 4);
    memcpy(dwt0, dwt, OC * C * 4);
    for (size_t i = 0; i < N * C; i++)
        dover[i] = NAN; /* overwritten, never read */
    bf16_round_colsum(dh, db, dout, N, OC);
    matmul_backward_products(dinp, 1, dwt, 1, dh, x, w, N, C, OC, GEMM_BF16);
    matmul_backward_products(dover, 0, NULL, 0, dh, x, w, N, C, OC,
                             GEMM_BF16);
    /* written in bf16 by the product: the fp32 product's bits, rounded */
    bf16 *dinph = malloc(N * C * 2);
    memset(dinph, 0xff, N * C * 2); /* NaNs: overwritten, never read */
    matmul_backward_dinp_bf16(dinph, dh, w, N, C, OC);
    for (size_t i = 0; i < N * C; i++)
        if (dinph[i] != bf16_from_f32(dover[i]))
            fail_msg("dinp in bf16 [%zu]: %04x, the fp32 product %.9g "
                     "rounds to %04x", i, dinph[i], dover[i],
                     bf16_from_f32(dover[i]));
    free(dinph);
    for (size_t o = 0; o < OC; o++) {
        double s = db0[o], mag = fabs(db0[o]);
        for (size_t n = 0; n < N; n++) {
            assert_int_equal(dh[n * OC + o], bf16_from_f32(dout[n * OC + o]));
            s += dout[n * OC + o];
            mag += fabs(dout[n * OC + o]);
        }
        check("dbias (from fp32 dout)", o, db[o], s, 2e-6 * mag, 0);
    }
    for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++) {
            double s = 0, mag = 0;
            for (size_t o = 0; o < OC; o++) {
                double t = bf16_to_f32(dh[n * OC + o]) * dw[o * C + c];
                s += t, mag += fabs(t);
            }
            size_t i = n * C + c;
            check("dinp +=", i, dinp[i], dinp0[i] + s,
                  2e-6 * (mag + fabs(dinp0[i])), 0);
            check("dinp =", i, dover[i], s, 2e-6 * mag, 0);
        }
    for (size_t o = 0; o < OC; o++)
        for (size_t c = 0; c < C; c++) {
            double s = 0, mag = 0;
            for (size_t n = 0; n < N; n++) {
                double t = bf16_to_f32(dh[n * OC + o]) * dx[n * C + c];
                s += t, mag += fabs(t);
            }
            size_t i = o * C + c;
            check("dw +=", i, dwt[i], dwt0[i] + s,
                  2e-6 * (mag + fabs(dwt0[i])), 0);
        }
    free(x), free(w), free(dx), free(dw), free(dout), free(db), free(db0);
    free(dinp), free(dinp0), free(dwt), free(dwt0), free(dover), free(dh);
}

/* dinp written in bf16 by the product at the model's shapes (K = OC up to
 * 3072, the GPT-2 MLP's) on 1 and 2 OpenMP threads: bitwise the fp32
 * product rounded, so the bf16 path keeps fp32-dst's accumulation */
static void test_dinp_bf16_shapes(void **state)
{
    (void)state;
    if (!have_bf16())
        skip();
    static const size_t sh[][3] = {{1024, 256, 256}, {512, 768, 3072},
                                   {256, 768, 768}};
    int saved = omp_get_max_threads();
    for (int t = 1; t <= 2; t++) {
        omp_set_num_threads(t);
        for (size_t k = 0; k < sizeof sh / sizeof sh[0]; k++) {
            size_t N = sh[k][0], C = sh[k][1], OC = sh[k][2];
            double *dd, *dw;
            bf16 *d = hrand(N * OC, 1, &dd), *w = hrand(OC * C, 1, &dw);
            float *f = malloc(N * C * 4);
            bf16 *h = malloc(N * C * 2);
            assert_true(f && h);
            matmul_backward_products(f, 0, NULL, 0, d, NULL, w, N, C, OC,
                                     GEMM_BF16);
            matmul_backward_dinp_bf16(h, d, w, N, C, OC);
            size_t bad = 0;
            for (size_t i = 0; i < N * C; i++)
                bad += h[i] != bf16_from_f32(f[i]);
            if (bad)
                fail_msg("%zux%zux%zu, %d thread(s): %zu of %zu differ from "
                         "the fp32 product rounded", N, C, OC, t, bad, N * C);
            free(d), free(w), free(dd), free(dw), free(f), free(h);
        }
    }
    omp_set_num_threads(saved);
}

/* ---- GELU ----------------------------------------------------------------- */

static double gelu_d(double x)
{
    double k = sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
}

static double gelu_grad_d(double x)
{
    double k = sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x);
    double th = tanh(u);
    return 0.5 * (1.0 + th) +
           0.5 * x * (1.0 - th * th) * k * (1.0 + 3 * 0.044715 * x * x);
}

/* F = 290 ends the fused backward's columns with the two-vector loop and
 * a tail, F = 306 with its single-vector loop and a tail; +-30 reach
 * GELU's and exp's clamps */
static void gelu_bf16_case(size_t F)
{
    size_t N = 9, n = N * F;
    double *dx;
    bf16 *x = hrand(n, 4, &dx), *out = malloc(n * 2), *gh = malloc(n * 2);
    x[0] = bf16_from_f32(-30.0f), dx[0] = -30.0;
    x[n - 1] = bf16_from_f32(30.0f), dx[n - 1] = 30.0;
    float *xf = malloc(n * 4), *o32 = malloc(n * 4), *dout = frand(n, 1);
    float *dinp = frand(n, 1), *dinp0 = malloc(n * 4), *g32 = calloc(n, 4);
    float *cs = frand(F, 1), *cs0 = malloc(F * 4), *cs2 = malloc(F * 4);
    memcpy(dinp0, dinp, n * 4), memcpy(cs0, cs, F * 4), memcpy(cs2, cs, F * 4);
    bf16_to_f32_n(xf, x, n);
    gelu_forward(o32, xf, n);
    gelu_forward_bf16(out, x, n);
    gelu_backward_bf16(dinp, x, dout, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i], bf16_from_f32(o32[i])); /* its fp32 twin */
        check("gelu", i, bf16_to_f32(out[i]), gelu_d(dx[i]), 1e-6,
              1.0 / 256 + 1e-6);
        check("gelu'", i, dinp[i], dinp0[i] + gelu_grad_d(dx[i]) * dout[i],
              2e-6 * (1 + fabs(dinp0[i])), 0);
    }
    /* fused backward + rounding + bias sums = the three passes it replaces */
    gelu_backward_round_bf16(gh, cs, x, dout, N, F);
    gelu_backward_bf16(g32, x, dout, n);
    bf16_round_colsum(out, cs2, g32, N, F);
    assert_memory_equal(gh, out, n * 2);
    assert_memory_equal(cs, cs2, F * 4);
    for (size_t f = 0; f < F; f++) {
        double s = cs0[f], mag = fabs(cs0[f]);
        for (size_t r = 0; r < N; r++) {
            double g = gelu_grad_d(dx[r * F + f]) * dout[r * F + f];
            s += g, mag += fabs(g);
        }
        check("gelu bias sum", f, cs[f], s, 2e-6 * mag, 0);
    }
    free(x), free(dx), free(out), free(gh), free(xf), free(o32), free(dout);
    free(dinp), free(dinp0), free(g32), free(cs), free(cs0), free(cs2);
}

static void test_gelu_bf16(void **state)
{
    (void)state;
    gelu_bf16_case(290);
    gelu_bf16_case(306);
    gelu_bf16_case(302); /* 9 x 302 = 84 * 32 + 30: the forward's pairs,
                            one vector and a tail for any OPS_VL */
}

/* ---- dpbf16: the VDPBF16PS product ----------------------------------------- */

/* C (M,N) (+)= alpha A B against double: A row-major (lda) or, with
 * a_packed, dp_pack_pairs of A^T read transposed; B packed from B (K,N)
 * by dp_pack_pairs or from B^T (N,K) by dp_pack_words_t; C fp32 with and
 * without accumulation, or bf16.  Sizes cross every tile edge: M around
 * the 8-row tile, N around 16 and 32 lanes, K odd and even. */
static void dp_case(size_t M, size_t N, size_t K, int a_packed, int b_words,
                    int mode)
{
    size_t lda = K + 3, ldbt = K + 4; /* padded rows: strides are honoured */
    double *dA, *dB, *dC;
    bf16 *A = hrand(M * lda, 1, &dA);
    bf16 *Bsrc = b_words ? hrand(N * ldbt, 1, &dB) : hrand(K * N, 1, &dB);
    if (b_words && K % 2) /* words_t packs K + 1 columns: the extra one
                             (1.0, not in the reference) meets A's upper
                             half past K, which must not be read */
        for (size_t n = 0; n < N; n++)
            Bsrc[n * ldbt + K] = bf16_from_f32(1.0f);
    size_t K2 = (K + 1) / 2;
    uint32_t *Bp = malloc(K2 * N * sizeof(uint32_t));
    uint32_t *Ap = malloc(K2 * M * sizeof(uint32_t));
    assert_true(Bp && Ap);
    if (b_words)
        dp_pack_words_t(Bp, N, Bsrc, ldbt, N, 2 * K2);
    else
        dp_pack_pairs(Bp, N, Bsrc, N, K, N);
    /* A^T (K, M) packed by row pairs, read as A through the strides */
    bf16 *At = malloc(K * M * sizeof(bf16));
    assert_non_null(At);
    for (size_t k = 0; k < K; k++)
        for (size_t m = 0; m < M; m++)
            At[k * M + m] = A[m * lda + k];
    dp_pack_pairs(Ap, M, At, M, K, M);
    float *C = frand(M * N, 1);
    dC = malloc(M * N * sizeof(double));
    for (size_t i = 0; i < M * N; i++)
        dC[i] = C[i];
    bf16 *Ch = malloc(M * N * sizeof(bf16));
    float alpha = 0.375f;
    struct dp_gemm g = {
        .M = M, .N = N, .K = K, .A = a_packed ? (const bf16 *)Ap : A,
        .sar = a_packed ? 2 : (ptrdiff_t)lda,
        .sak = a_packed ? 2 * (ptrdiff_t)M : 2, .B = Bp, .ldb = N,
        .C = mode == 2 ? (void *)Ch : (void *)C, .ldc = N, .alpha = alpha,
        .accumulate = mode == 1, .c_bf16 = mode == 2,
    };
    dp_gemm(&g);
    for (size_t m = 0; m < M; m++)
        for (size_t n = 0; n < N; n++) {
            double sum = 0, mag = 0;
            for (size_t k = 0; k < K; k++) {
                double b = b_words ? dB[n * ldbt + k] : dB[k * N + n];
                sum += dA[m * lda + k] * b;
                mag += fabs(dA[m * lda + k] * b);
            }
            double want = alpha * sum + (mode == 1 ? dC[m * N + n] : 0);
            double tol = 2e-6 * (alpha * mag + fabs(dC[m * N + n])) + 1e-30;
            if (mode == 2)
                check("dp_gemm bf16", m * N + n, bf16_to_f32(Ch[m * N + n]),
                      want, tol, 1.0 / 256);
            else
                check("dp_gemm", m * N + n, C[m * N + n], want, tol, 0);
        }
    free(A), free(dA), free(Bsrc), free(dB), free(Bp), free(Ap), free(At);
    free(C), free(dC), free(Ch);
}

static void test_dpbf16(void **state)
{
    (void)state;
    if (!dpbf16_available()) {
        printf("no AVX512_BF16 here: the attention products use gemm.h\n");
        skip();
    }
    /* M: around the 8-row tile of 32 columns and the 6-row tile of 64
     * (every remainder of 6 and of 8); N: around 16, 32 and 64 lanes, and
     * a 64-wide tile followed by a 32-wide one (80, 100) */
    static const size_t Ms[] = {1, 5, 7, 8, 9, 11, 64},
                        Ns[] = {1, 15, 16, 17, 32, 33, 64, 80, 100};
    static const size_t Ks[] = {1, 2, 7, 64, 129};
    for (size_t i = 0; i < sizeof(Ms) / sizeof(*Ms); i++)
        for (size_t j = 0; j < sizeof(Ns) / sizeof(*Ns); j++)
            for (size_t k = 0; k < sizeof(Ks) / sizeof(*Ks); k++)
                for (int v = 0; v < 4; v++)
                    dp_case(Ms[i], Ns[j], Ks[k], v & 1, v >> 1,
                            (int)((i + j + k + (size_t)v) % 3));
}

/* ---- attention -------------------------------------------------------------- */

struct att_case {
    struct attn_shape s;
    size_t R, C, TT, nq, no;
    bf16 *qkv, *out, *att, *dout;
    double *dq; /* qkv as doubles */
    float *dqkv, *dqkv0;
};

static int visible(const struct attn_shape *s, size_t b, size_t t, size_t u)
{
    if (s->lo && (int32_t)u < s->lo[b * s->T + t]) /* an earlier document */
        return 0;
    return u <= t && (!s->window || t - u < s->window);
}

static double qkv_at(const struct att_case *c, size_t b, size_t t, size_t col)
{
    return c->dq[(b * c->s.T + t) * c->R + col];
}

/* forward: rounded P against the double softmax of the rounded q, k;
 * out against P (the op's rounded one) times v */
static void check_attention_forward(const struct att_case *c)
{
    const struct attn_shape *s = &c->s;
    size_t T = s->T, hd = s->hd, q = s->nh / s->nkv;
    double scale = 1.0 / sqrt((double)hd);
    double *p = malloc(T * sizeof(double));
    for (size_t b = 0; b < s->B; b++)
        for (size_t h = 0; h < s->nh; h++) {
            size_t ko = (s->nh + h / q) * hd, vo = (s->nh + s->nkv + h / q) * hd;
            const bf16 *P = c->att + (b * s->nh + h) * T * T;
            for (size_t t = 0; t < T; t++) {
                double m = -INFINITY, sum = 0;
                for (size_t u = 0; u < T; u++) {
                    double d = 0;
                    for (size_t i = 0; visible(s, b, t, u) && i < hd; i++)
                        d += qkv_at(c, b, t, h * hd + i) *
                             qkv_at(c, b, u, ko + i);
                    p[u] = visible(s, b, t, u) ? d * scale : -INFINITY;
                    m = fmax(m, p[u]);
                }
                for (size_t u = 0; u < T; u++)
                    sum += (p[u] = exp(p[u] - m));
                for (size_t u = 0; u < T; u++) {
                    if (!visible(s, b, t, u))
                        continue;
                    check("att P", t * T + u, bf16_to_f32(P[t * T + u]),
                          p[u] / sum, 1e-7, 1.0 / 256 + 1e-5);
                }
                for (size_t i = 0; i < hd; i++) {
                    double o = 0, mag = 0;
                    for (size_t u = 0; u <= t; u++) {
                        if (!visible(s, b, t, u))
                            continue;
                        double x = bf16_to_f32(P[t * T + u]) *
                                   qkv_at(c, b, u, vo + i);
                        o += x, mag += fabs(x);
                    }
                    size_t k = (b * T + t) * c->C + h * hd + i;
                    check("att out", k, bf16_to_f32(c->out[k]), o, 2e-6 * mag,
                          1.0 / 256);
                }
            }
        }
    free(p);
}

/* backward of one head in double from the op's own P and the rounded dO:
 * dS = P (dP - rowsum(P dP)), rounded as the op rounds it; adds into
 * want (dq, dk, dv), the sum of |terms| into mag and the largest |term|
 * into big */
static void ref_head_backward(const struct att_case *c, size_t b, size_t h,
                              double *want, double *mag, double *big)
{
    const struct attn_shape *s = &c->s;
    size_t T = s->T, hd = s->hd, q = s->nh / s->nkv;
    size_t ko = (s->nh + h / q) * hd, vo = (s->nh + s->nkv + h / q) * hd;
    double scale = 1.0 / sqrt((double)hd);
    const bf16 *P = c->att + (b * s->nh + h) * T * T;
    double *dS = calloc(T * T, sizeof(double));
    for (size_t t = 0; t < T; t++) {
        double dot = 0;
        for (size_t u = 0; u <= t; u++) {
            if (!visible(s, b, t, u))
                continue;
            double dp = 0;
            for (size_t i = 0; i < hd; i++)
                dp += bf16_to_f32(c->dout[(b * T + t) * c->C + h * hd + i]) *
                      qkv_at(c, b, u, vo + i);
            dS[t * T + u] = dp;
            dot += bf16_to_f32(P[t * T + u]) * dp;
        }
        for (size_t u = 0; u <= t; u++)
            if (visible(s, b, t, u))
                dS[t * T + u] = bf16_to_f32(bf16_from_f32((float)(
                    bf16_to_f32(P[t * T + u]) * (dS[t * T + u] - dot))));
    }
    for (size_t t = 0; t < T; t++)
        for (size_t u = 0; u <= t; u++) {
            if (!visible(s, b, t, u))
                continue;
            double ds = dS[t * T + u], p = bf16_to_f32(P[t * T + u]);
            for (size_t i = 0; i < hd; i++) {
                size_t iq = (b * T + t) * c->R + h * hd + i;
                size_t ik = (b * T + u) * c->R + ko + i;
                size_t iv = (b * T + u) * c->R + vo + i;
                double dq = scale * ds * qkv_at(c, b, u, ko + i);
                double dk = scale * ds * qkv_at(c, b, t, h * hd + i);
                double dv = p * bf16_to_f32(c->dout[(b * T + t) * c->C +
                                                    h * hd + i]);
                want[iq] += dq, mag[iq] += fabs(dq);
                want[ik] += dk, mag[ik] += fabs(dk);
                want[iv] += dv, mag[iv] += fabs(dv);
                big[iq] = fmax(big[iq], fabs(dq));
                big[ik] = fmax(big[ik], fabs(dk));
            }
        }
    free(dS);
}

static void check_attention_backward(const struct att_case *c)
{
    double *want = calloc(c->nq, sizeof(double));
    double *mag = calloc(c->nq, sizeof(double));
    double *big = calloc(c->nq, sizeof(double));
    for (size_t i = 0; i < c->nq; i++)
        want[i] = c->dqkv0[i], mag[i] = fabs(c->dqkv0[i]);
    for (size_t b = 0; b < c->s.B; b++)
        for (size_t h = 0; h < c->s.nh; h++)
            ref_head_backward(c, b, h, want, mag, big);
    /* fp32 accumulation, and a dS that fp32 and double (rarely) round to
     * neighbouring bf16 values: one dq or dk term off by a bf16 ulp */
    for (size_t i = 0; i < c->nq; i++)
        check("dqkv", i, c->dqkv[i], want[i],
              2e-6 * mag[i] + big[i] / 128 + 1e-9, 0);
    free(want), free(mag), free(big);
}

/* FNV-1a of n bytes, continuing h */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

/* Runs and checks one case; returns a hash of its outputs (out, att,
 * dqkv) for bitwise comparisons between runs on the same inputs. */
static uint64_t attention_bf16_case(struct attn_shape s)
{
    struct att_case c = {.s = s};
    c.R = (s.nh + 2 * s.nkv) * s.hd, c.C = s.nh * s.hd;
    c.TT = s.B * s.nh * s.T * s.T, c.nq = s.B * s.T * c.R;
    c.no = s.B * s.T * c.C;
    double *ddo;
    c.qkv = hrand(c.nq, 1.5, &c.dq);
    c.dout = hrand(c.no, 1, &ddo);
    c.out = malloc(c.no * 2), c.att = malloc(c.TT * 2);
    memset(c.out, 0xff, c.no * 2); /* NaN: must be written */
    memset(c.att, 0xff, c.TT * 2);
    float *scr = malloc(c.TT * 4);
    bf16 *scr_h = malloc(c.TT * 2);
    memset(scr, 0xff, c.TT * 4), memset(scr_h, 0xff, c.TT * 2);
    c.dqkv = frand(c.nq, 1), c.dqkv0 = malloc(c.nq * 4);
    memcpy(c.dqkv0, c.dqkv, c.nq * 4);
    attention_forward_bf16(c.out, c.att, scr, c.qkv, &s);
    check_attention_forward(&c);
    memset(scr, 0xff, c.TT * 4);
    attention_backward_bf16(c.dqkv, scr, scr_h, c.dout, c.qkv, c.att, &s);
    check_attention_backward(&c);
    uint64_t h = fnv(1469598103934665603ULL, c.out, c.no * 2);
    h = fnv(fnv(h, c.att, c.TT * 2), c.dqkv, c.nq * 4);
    free(c.qkv), free(c.dq), free(c.dout), free(ddo), free(c.out);
    free(c.att), free(scr), free(scr_h), free(c.dqkv), free(c.dqkv0);
    return h;
}

/* The case through gemm.h (no workspace) and, where the CPU can, on
 * VDPBF16PS with a workspace of 1 slot at one thread and of 3 slots at 3
 * OpenMP threads (make check runs OMP_NUM_THREADS=1): each against the
 * double reference, and the two VDPBF16PS runs bit for bit alike on the
 * same inputs (the slots and the thread count change nothing). */
static void attention_bf16_both(struct attn_shape s)
{
    attention_bf16_case(s);
    uint64_t seed = rng_state, h1 = 0;
    int threads = omp_get_max_threads();
    for (size_t slots = 1; slots <= 3; slots += 2) {
        size_t words = attention_bf16_ws_words(&s, slots);
        if (!words) {
            assert_true(!dpbf16_available() || s.hd % 2);
            return;
        }
        s.ws = malloc(words * sizeof(uint32_t));
        assert_non_null(s.ws);
        memset(s.ws, 0xff, words * sizeof(uint32_t)); /* NaN bits */
        s.ws_slots = slots;
        rng_state = seed;
        omp_set_num_threads((int)slots);
        uint64_t h = attention_bf16_case(s);
        omp_set_num_threads(threads);
        if (slots == 1)
            h1 = h;
        else if (h != h1)
            fail_msg("attention T=%zu nh=%zu hd=%zu: 3 slots at 3 threads "
                     "differ from 1 at 1", s.T, s.nh, s.hd);
        free(s.ws);
        s.ws = NULL, s.ws_slots = 0;
    }
}

static void test_attention_bf16(void **state)
{
    (void)state;
    if (!have_bf16())
        skip();
    attention_bf16_both((struct attn_shape){.B = 2, .T = 70, .nh = 4,
                                            .nkv = 2, .hd = 16, .window = 0});
    attention_bf16_both((struct attn_shape){.B = 1, .T = 130, .nh = 2,
                                            .nkv = 2, .hd = 16, .window = 40});
    attention_bf16_both((struct attn_shape){.B = 1, .T = 37, .nh = 4,
                                            .nkv = 1, .hd = 8, .window = 0});
    /* the model's head size: full 32-column tiles, several of them in
     * the scores; an hd that ends in a partial tile; an odd one (gemm.h
     * only) */
    attention_bf16_both((struct attn_shape){.B = 2, .T = 128, .nh = 2,
                                            .nkv = 1, .hd = 64});
    attention_bf16_both((struct attn_shape){.B = 1, .T = 67, .nh = 2,
                                            .nkv = 2, .hd = 40});
    attention_bf16_both((struct attn_shape){.B = 1, .T = 20, .nh = 2,
                                            .nkv = 1, .hd = 7});
    attention_bf16_both((struct attn_shape){.B = 2, .T = 9, .nh = 3,
                                            .nkv = 3, .hd = 4, .window = 3});
    /* document bounds: sequence b's documents start at 5 + b, 64 + b
     * (across a row block) and 100 + b; with and without a window */
    size_t T = 130;
    int32_t *lo = malloc(2 * T * sizeof(int32_t));
    for (size_t b = 0; b < 2; b++)
        for (size_t t = 0, cur = 0; t < T; t++) {
            if (t == 5 + b || t == 64 + b || t == 100 + b)
                cur = t;
            lo[b * T + t] = (int32_t)cur;
        }
    struct attn_shape d = {.B = 2, .T = T, .nh = 4, .nkv = 2, .hd = 16,
                           .lo = lo};
    attention_bf16_both(d);
    d.window = 20;
    attention_bf16_both(d);
    free(lo);
}

/* ---- the optimizer's bf16 copy ---------------------------------------------- */

static void test_adamw_bf16_copy(void **state)
{
    (void)state;
    size_t n = 70000; /* more than one chunk */
    float *p1 = frand(n, 1), *g = frand(n, 1), *m1 = frand(n, 0.1);
    float *v1 = malloc(n * 4), *p2 = malloc(n * 4), *m2 = malloc(n * 4);
    float *v2 = malloc(n * 4);
    bf16 *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        v1[i] = (float)fabs(urand());
    memcpy(p2, p1, n * 4), memcpy(m2, m1, n * 4), memcpy(v2, v1, n * 4);
    struct adamw_hp hp = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f,
                          .eps = 1e-8f, .weight_decay = 0.1f, .t = 3};
    adamw_update(p1, g, m1, v1, n, &hp, 0.5f, 1);
    adamw_update_bf16(p2, h, g, m2, v2, n, &hp, 0.5f, 1);
    assert_memory_equal(p1, p2, n * 4); /* the same update */
    assert_memory_equal(m1, m2, n * 4);
    assert_memory_equal(v1, v2, n * 4);
    for (size_t i = 0; i < n; i++) /* and the copy is its rounding */
        assert_int_equal(h[i], bf16_from_f32(p2[i]));
    free(p1), free(g), free(m1), free(v1), free(p2), free(m2), free(v2);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm_bf16),
        cmocka_unit_test(test_matmul_forward_bf16),
        cmocka_unit_test(test_matmul_backward_bf16),
        cmocka_unit_test(test_dinp_bf16_shapes),
        cmocka_unit_test(test_gelu_bf16),
        cmocka_unit_test(test_dpbf16),
        cmocka_unit_test(test_attention_bf16),
        cmocka_unit_test(test_adamw_bf16_copy),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    gemm_cache_clear();
    /* without bf16 instructions the bf16 tests were skipped: tell
     * Automake (77), so that such a runner does not count a full pass */
    return rc == 0 && !gemm_bf16_supported(NULL, 0) ? 77 : rc;
}
