/*
 * test_gemm.c - bf16.h's rounding and casts, and gemm.h's front door,
 * against independent references.
 *
 *  - bf16_from_f32 on hand-worked cases (ties to even, NaN, infinities,
 *    denormals, overflow), then the array casts (AVX512_BF16 and portable
 *    paths) against it on random bit patterns, every length mod 16;
 *  - every backend (OpenBLAS, oneDNN fp32, oneDNN bf16 with fp32 and bf16
 *    output) x every transpose x padded strides x alpha x accumulate x
 *    bias (not with alpha != 1: gemm.h), against a double-precision
 *    product of the same (rounded)
 *    inputs; the padding of C must stay untouched;
 *  - the cache: one primitive per shape, reused; never oneDNN's reference
 *    implementation; one per OpenMP thread count (a primitive runs on the
 *    threads it was made for: the calibration's 2-thread figures were
 *    timed on 1-thread primitives made before threads_set(2)); calls from several OpenMP threads at once give the
 *    serial results bitwise;
 *  - the fp32 mode's choice of library.
 * The bf16 products are skipped (with a message) on a CPU without bf16
 * instructions; the casts are tested everywhere.  No MPI.
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
#include "gemm.h"

static uint64_t rng_state = 2024;

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double urand(void) /* uniform in [-1, 1) */
{
    return (double)(next_u64() >> 11) / 4503599627370496.0 - 1.0;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- rounding ----------------------------------------------------------- */

static void test_bf16_cases(void **state)
{
    (void)state;
    static const struct { uint32_t in; uint16_t out; } t[] = {
        {0x3f800000u, 0x3f80}, /* 1.0 */
        {0x3f808000u, 0x3f80}, /* tie between 0x3f80 and 0x3f81: even */
        {0x3f818000u, 0x3f82}, /* tie between 0x3f81 and 0x3f82: even */
        {0x3f808001u, 0x3f81}, /* just above the tie: up */
        {0x3f807fffu, 0x3f80}, /* just below: down */
        {0xbf808001u, 0xbf81}, /* negative: magnitude rounds the same */
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000}, /* zeros */
        {0x00000001u, 0x0000}, {0x807fffffu, 0x8000}, /* denormals: 0 */
        {0x00800000u, 0x0080}, /* the smallest normal stays */
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, /* infinities */
        {0x7fc00000u, 0x7fc0}, /* quiet NaN */
        {0x7f800001u, 0x7fc0}, /* signalling NaN: quieted, stays NaN */
        {0xffa00000u, 0xffe0}, /* negative NaN with payload */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds up to infinity */
        {0x7f7f7fffu, 0x7f7f}, /* largest that rounds down */
        {0x40490fdbu, 0x4049}, /* pi: 0x4049 0fdb rounds down */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        uint16_t got = bf16_from_f32(from_bits(t[i].in));
        if (got != t[i].out)
            fail_msg("bf16(0x%08x) = 0x%04x, expected 0x%04x", t[i].in, got,
                     t[i].out);
        /* widening is exact: the upper half of the float */
        uint32_t w;
        float f = bf16_to_f32(t[i].out);
        memcpy(&w, &f, sizeof w);
        assert_int_equal(w, (uint32_t)t[i].out << 16);
    }
}

/* random bit patterns, with special exponents mixed in */
static float *random_bits(size_t n)
{
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)next_u64();
        switch (i % 7) {
        case 0: u &= 0x807fffffu; break;             /* denormal or zero */
        case 1: u |= 0x7f800000u; break;             /* inf or NaN */
        case 2: u = (u & 0xffff0000u) | 0x8000u; break; /* exact ties */
        default: break;
        }
        x[i] = from_bits(u);
    }
    return x;
}

static void test_bf16_array_casts(void **state)
{
    (void)state;
    const size_t n = 4099; /* every tail length is covered below */
    float *x = random_bits(n), *w = malloc(n * sizeof(float));
    bf16 *a = malloc(n * sizeof(bf16)), *b = malloc(n * sizeof(bf16));
    assert_non_null(w);
    for (size_t len = n - 40; len <= n; len++) {
        bf16_force_portable(1);
        bf16_from_f32_n(a, x, len);
        bf16_force_portable(0); /* the CPU's path */
        bf16_from_f32_n(b, x, len);
        for (size_t i = 0; i < len; i++) {
            uint16_t ref = bf16_from_f32(x[i]);
            if (a[i] != ref || b[i] != ref)
                fail_msg("len %zu elem %zu: 0x%08x -> portable 0x%04x, "
                         "cpu 0x%04x, scalar 0x%04x", len, i,
                         *(uint32_t *)&x[i], a[i], b[i], ref);
        }
        bf16_to_f32_n(w, b, len);
        for (size_t i = 0; i < len; i++)
            assert_true(memcmp(&w[i], &(uint32_t){(uint32_t)b[i] << 16}, 4)
                        == 0);
        /* the scaled cast: the fp32 product, then the rounding */
        const float scale = 0.7310586f;
        bf16_force_portable(1);
        bf16_from_f32_scaled_n(a, x, scale, len);
        bf16_force_portable(0);
        bf16_from_f32_scaled_n(b, x, scale, len);
        for (size_t i = 0; i < len; i++) {
            uint16_t ref = bf16_from_f32(x[i] * scale);
            if (a[i] != ref || b[i] != ref)
                fail_msg("scaled len %zu elem %zu: portable 0x%04x, cpu "
                         "0x%04x, scalar 0x%04x", len, i, a[i], b[i], ref);
        }
    }
    printf("casts: AVX512_BF16 path %s\n",
           bf16_cpu_has_cvt() ? "tested against the portable one"
                              : "absent (portable only)");
    free(x), free(w), free(a), free(b);
}

/* ---- products ------------------------------------------------------------ */

struct mat { /* a stored matrix with its padding */
    size_t rows, cols, ld;
    float *f;  /* fp32 values (already rounded when bf16) */
    bf16 *h;
};

static void mat_init(struct mat *m, size_t rows, size_t cols, size_t pad)
{
    m->rows = rows, m->cols = cols, m->ld = cols + pad;
    m->f = malloc(rows * m->ld * sizeof(float));
    m->h = malloc(rows * m->ld * sizeof(bf16));
    assert_true(m->f && m->h);
    for (size_t i = 0; i < rows * m->ld; i++) {
        m->h[i] = bf16_from_f32((float)urand());
        m->f[i] = bf16_to_f32(m->h[i]); /* exactly representable in both */
    }
}

static void mat_free(struct mat *m)
{
    free(m->f);
    free(m->h);
}

/* element (i, k) of op(X): X stored (rows, cols) or, transposed, (cols, rows) */
static double op_at(const struct mat *x, int t, size_t i, size_t k)
{
    return t ? x->f[k * x->ld + i] : x->f[i * x->ld + k];
}

struct case_ {
    size_t M, N, K;
    int ta, tb, acc, bias;
    float alpha;
    enum gemm_type in, out;
    enum gemm_backend be;
};

static void run_case(const struct case_ *c)
{
    struct mat A, B, C;
    mat_init(&A, c->ta ? c->K : c->M, c->ta ? c->M : c->K, 3);
    mat_init(&B, c->tb ? c->N : c->K, c->tb ? c->K : c->N, 5);
    mat_init(&C, c->M, c->N, 2);
    float *bias = malloc(c->N * sizeof(float));
    for (size_t j = 0; j < c->N; j++)
        bias[j] = bf16_to_f32(bf16_from_f32((float)urand()));
    struct gemm_desc d = {
        .ta = c->ta, .tb = c->tb, .M = (int64_t)c->M, .N = (int64_t)c->N,
        .K = (int64_t)c->K, .lda = (int64_t)A.ld, .ldb = (int64_t)B.ld,
        .ldc = (int64_t)C.ld, .in = c->in, .out = c->out, .alpha = c->alpha,
        .accumulate = c->acc, .bias = c->bias, .backend = c->be,
    };
    int hin = c->in == GEMM_BF16, hout = c->out == GEMM_BF16;
    void *out = hout ? (void *)C.h : (void *)C.f;
    float *c0 = malloc(C.rows * C.ld * sizeof(float));
    memcpy(c0, C.f, C.rows * C.ld * sizeof(float));
    bf16 *h0 = malloc(C.rows * C.ld * sizeof(bf16));
    memcpy(h0, C.h, C.rows * C.ld * sizeof(bf16));
    gemm(&d, hin ? (void *)A.h : A.f, hin ? (void *)B.h : B.f,
         c->bias ? bias : NULL, out);
    for (size_t i = 0; i < c->M; i++) {
        for (size_t j = 0; j < c->N; j++) {
            double s = 0.0, mag = 0.0;
            for (size_t k = 0; k < c->K; k++) {
                double p = op_at(&A, c->ta, i, k) * op_at(&B, c->tb, k, j);
                s += p;
                mag += fabs(p);
            }
            double ref = c->alpha * s, scale = fabs(c->alpha) * mag;
            if (c->bias)
                ref += bias[j], scale += fabs(bias[j]);
            if (c->acc)
                ref += c0[i * C.ld + j], scale += fabs(c0[i * C.ld + j]);
            double got = hout ? bf16_to_f32(C.h[i * C.ld + j])
                              : C.f[i * C.ld + j];
            double tol = 2e-6 * scale + 1e-30 + (hout ? fabs(ref) / 256 : 0);
            if (!(fabs(got - ref) <= tol))
                fail_msg("%s backend %d %zux%zux%zu ta %d tb %d acc %d "
                         "bias %d alpha %g: C[%zu,%zu] = %.9g, ref %.9g",
                         hin ? "bf16" : "f32", (int)gemm_backend_of(&d),
                         c->M, c->N, c->K, c->ta, c->tb, c->acc, c->bias,
                         c->alpha, i, j, got, ref);
        }
        for (size_t j = c->N; j < C.ld; j++) /* padding untouched */
            assert_true(hout ? C.h[i * C.ld + j] == h0[i * C.ld + j]
                             : memcmp(&C.f[i * C.ld + j], &c0[i * C.ld + j],
                                      4) == 0);
    }
    free(c0), free(h0), free(bias);
    mat_free(&A), mat_free(&B), mat_free(&C);
}

static void test_gemm_all_backends(void **state)
{
    (void)state;
    static const size_t shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {33, 17, 65},
                                       {64, 96, 80}, {130, 64, 257}};
    int bf = gemm_bf16_supported(NULL, 0), n = 0;
    if (!bf)
        printf("no bf16 instructions here: bf16 products not tested\n");
    for (int kind = 0; kind < 4; kind++) {
        if (kind >= 2 && !bf)
            continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (int v = 0; v < 4; v++) {
                    struct case_ c = {
                        .M = shapes[s][0], .N = shapes[s][1],
                        .K = shapes[s][2], .ta = t & 1, .tb = t >> 1,
                        .acc = kind != 3 && (v & 1), .bias = (v >> 1) & 1,
                        .alpha = v == 1 ? 0.375f : 1.0f, /* no bias */
                        .in = kind >= 2 ? GEMM_BF16 : GEMM_F32,
                        .out = kind == 3 ? GEMM_BF16 : GEMM_F32,
                        .be = kind == 0 ? GEMM_OPENBLAS : GEMM_ONEDNN,
                    };
                    run_case(&c);
                    n++;
                }
    }
    printf("%d products checked\n", n);
}

/* gemm_add (the residual in the epilogue) is bitwise the product, bias
 * included, with D added after it in fp32; on every backend, with and
 * without bias, C and D with padded rows (the padding untouched) */
static void test_gemm_add(void **state)
{
    (void)state;
    static const size_t shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {33, 17, 65},
                                       {130, 64, 257}};
    int bf = gemm_bf16_supported(NULL, 0), n = 0;
    for (int kind = 0; kind < 3; kind++) {
        if (kind == 2 && !bf)
            continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int v = 0; v < 2; v++) {
                size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                struct mat A, B, C, D;
                mat_init(&A, M, K, 3);
                mat_init(&B, N, K, 5); /* stored (N,K): x @ w^T */
                mat_init(&C, M, N, 2);
                mat_init(&D, M, N, 2);
                for (size_t i = 0; i < M * D.ld; i++) /* not bf16-exact */
                    D.f[i] = (float)(urand() * 3.0);
                float *bias = malloc(N * sizeof(float));
                for (size_t j = 0; j < N; j++)
                    bias[j] = (float)urand();
                int hb = v & 1;
                struct gemm_desc d = {
                    .tb = 1, .M = (int64_t)M, .N = (int64_t)N,
                    .K = (int64_t)K, .lda = (int64_t)A.ld,
                    .ldb = (int64_t)B.ld, .ldc = (int64_t)C.ld,
                    .in = kind == 2 ? GEMM_BF16 : GEMM_F32, .out = GEMM_F32,
                    .alpha = 1.0f, .bias = hb,
                    .backend = kind == 0 ? GEMM_OPENBLAS : GEMM_ONEDNN,
                };
                const void *a = kind == 2 ? (void *)A.h : (void *)A.f;
                const void *b = kind == 2 ? (void *)B.h : (void *)B.f;
                float *want = malloc(M * C.ld * sizeof(float));
                memcpy(want, C.f, M * C.ld * sizeof(float));
                gemm(&d, a, b, hb ? bias : NULL, want);
                for (size_t i = 0; i < M; i++)
                    for (size_t j = 0; j < N; j++)
                        want[i * C.ld + j] += D.f[i * C.ld + j];
                d.add = 1;
                gemm_add(&d, a, b, hb ? bias : NULL, D.f, C.f);
                if (memcmp(want, C.f, M * C.ld * sizeof(float)))
                    fail_msg("gemm_add %s backend %d %zux%zux%zu bias %d: "
                             "not bitwise the product plus D",
                             kind == 2 ? "bf16" : "f32",
                             (int)gemm_backend_of(&d), M, N, K, hb);
                free(want), free(bias);
                mat_free(&A), mat_free(&B), mat_free(&C), mat_free(&D);
                n++;
            }
    }
    printf("%d products with + D checked\n", n);
    /* and at the model's shapes the post-op keeps oneDNN's kernel (a
     * fallback to a reference kernel would be a silent 100x) */
    static const int64_t model[][3] = {{1024, 256, 1024}, {1024, 768, 3072}};
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 2; s++) {
            if (t && !bf)
                continue;
            struct gemm_desc d = {
                .tb = 1, .M = model[s][0], .N = model[s][1],
                .K = model[s][2], .lda = model[s][2], .ldb = model[s][2],
                .ldc = model[s][1], .in = t ? GEMM_BF16 : GEMM_F32,
                .out = GEMM_F32, .alpha = 1.0f, .bias = 1,
                .backend = GEMM_ONEDNN};
            char plain[64];
            snprintf(plain, sizeof(plain), "%s", gemm_impl(&d));
            d.add = 1;
            assert_string_equal(gemm_impl(&d), plain);
        }
}

static void test_gemm_cache(void **state)
{
    (void)state;
    if (!gemm_bf16_supported(NULL, 0))
        skip();
    gemm_cache_clear();
    assert_int_equal(gemm_cache_size(), 0);
    struct case_ c = {.M = 48, .N = 40, .K = 72, .tb = 1, .alpha = 1.0f,
                      .in = GEMM_BF16, .out = GEMM_F32, .be = GEMM_ANY};
    run_case(&c);
    assert_int_equal(gemm_cache_size(), 1);
    run_case(&c); /* same shape: reused */
    run_case(&c);
    assert_int_equal(gemm_cache_size(), 1);
    c.acc = 1; /* another attribute: another primitive */
    run_case(&c);
    assert_int_equal(gemm_cache_size(), 2);
    struct gemm_desc d = {.tb = 1, .M = 1024, .N = 768, .K = 768,
                          .lda = 768, .ldb = 768, .ldc = 768,
                          .in = GEMM_BF16, .out = GEMM_F32, .alpha = 1.0f};
    const char *impl = gemm_impl(&d);
    printf("1024x768x768 bf16: %s\n", impl);
    assert_true(strncmp(impl, "ref", 3) != 0); /* a real kernel */
    assert_int_equal(gemm_cache_size(), 3);
}

/* A product made at 1 OpenMP thread is not reused at 2 (oneDNN sizes a
 * primitive for the threads there are when it is made); back at 1, the
 * first is found again; the two give the same product to rounding. */
static void test_gemm_cache_threads(void **state)
{
    (void)state;
    enum { M = 96, N = 80, K = 72 };
    int saved = omp_get_max_threads();
    float *a = malloc(M * K * sizeof(float)), *b = malloc(K * N * sizeof(float));
    float *c1 = calloc(M * N, sizeof(float)), *c2 = calloc(M * N, sizeof(float));
    for (int i = 0; i < M * K; i++)
        a[i] = (float)urand();
    for (int i = 0; i < K * N; i++)
        b[i] = (float)urand();
    struct gemm_desc d = {.M = M, .N = N, .K = K, .lda = K, .ldb = N,
                          .ldc = N, .in = GEMM_F32, .out = GEMM_F32,
                          .alpha = 1.0f, .backend = GEMM_ONEDNN};
    gemm_cache_clear();
    omp_set_num_threads(1);
    gemm(&d, a, b, NULL, c1);
    assert_int_equal(gemm_cache_size(), 1);
    omp_set_num_threads(2);
    gemm(&d, a, b, NULL, c2);
    assert_int_equal(gemm_cache_size(), 2);
    omp_set_num_threads(1);
    gemm(&d, a, b, NULL, c2);
    assert_int_equal(gemm_cache_size(), 2);
    for (int i = 0; i < M * N; i++)
        assert_true(fabsf(c1[i] - c2[i]) <= 1e-5f * (1.0f + fabsf(c1[i])));
    omp_set_num_threads(saved);
    free(a), free(b), free(c1), free(c2);
}

/* Several threads at once, each its own products: the serial bits. */
static void test_gemm_threads(void **state)
{
    (void)state;
    enum { P = 8, M = 37, N = 53, K = 61 };
    int bf = gemm_bf16_supported(NULL, 0);
    enum gemm_type in = bf ? GEMM_BF16 : GEMM_F32;
    size_t esz = bf ? sizeof(bf16) : sizeof(float);
    char *a = malloc(P * M * K * esz), *b = malloc(P * K * N * esz);
    float *c1 = calloc(P * M * N, sizeof(float));
    float *c2 = calloc(P * M * N, sizeof(float));
    for (size_t i = 0; i < (size_t)P * M * K; i++) {
        float v = (float)urand();
        bf ? (void)(((bf16 *)a)[i] = bf16_from_f32(v))
           : (void)(((float *)a)[i] = v);
    }
    for (size_t i = 0; i < (size_t)P * K * N; i++) {
        float v = (float)urand();
        bf ? (void)(((bf16 *)b)[i] = bf16_from_f32(v))
           : (void)(((float *)b)[i] = v);
    }
    struct gemm_desc d = {.M = M, .N = N, .K = K, .lda = K, .ldb = N,
                          .ldc = N, .in = in, .out = GEMM_F32, .alpha = 1.0f,
                          .backend = GEMM_ONEDNN};
    for (int p = 0; p < P; p++)
        gemm(&d, a + (size_t)p * M * K * esz, b + (size_t)p * K * N * esz,
             NULL, c1 + (size_t)p * M * N);
#pragma omp parallel for num_threads(4) schedule(dynamic)
    for (int p = 0; p < P; p++)
        gemm(&d, a + (size_t)p * M * K * esz, b + (size_t)p * K * N * esz,
             NULL, c2 + (size_t)p * M * N);
    assert_memory_equal(c1, c2, (size_t)P * M * N * sizeof(float));
    free(a), free(b), free(c1), free(c2);
}

static void test_gemm_fp32_modes(void **state)
{
    (void)state;
    struct gemm_desc big = {.tb = 1, .M = 256, .N = 256, .K = 256,
                            .lda = 256, .ldb = 256, .ldc = 256,
                            .in = GEMM_F32, .out = GEMM_F32, .alpha = 1.0f};
    struct gemm_desc tiny = big;
    tiny.M = tiny.N = tiny.K = 4;
    enum gemm_fp32_mode m;
    assert_int_equal(gemm_fp32_mode_parse("openblas", &m), 0);
    assert_int_equal(m, GEMM_FP32_OPENBLAS);
    assert_int_equal(gemm_fp32_mode_parse("mkl", &m), -1);
    gemm_set_fp32_mode(GEMM_FP32_OPENBLAS);
    assert_int_equal(gemm_backend_of(&big), GEMM_OPENBLAS);
    gemm_set_fp32_mode(GEMM_FP32_ONEDNN);
    assert_int_equal(gemm_backend_of(&tiny), GEMM_ONEDNN);
    gemm_set_fp32_mode(GEMM_FP32_AUTO);
    assert_int_equal(gemm_backend_of(&tiny), GEMM_OPENBLAS);
    int avx512 = strncmp(gemm_onednn_isa(), "avx512", 6) == 0;
    assert_int_equal(gemm_backend_of(&big),
                     avx512 ? GEMM_ONEDNN : GEMM_OPENBLAS);
    big.backend = GEMM_OPENBLAS; /* a desc may force one */
    assert_int_equal(gemm_backend_of(&big), GEMM_OPENBLAS);
    big.in = GEMM_BF16; /* bf16 is always oneDNN */
    assert_int_equal(gemm_backend_of(&big), GEMM_ONEDNN);
    /* bf16 support follows the CPU (unless ONEDNN_MAX_CPU_ISA lowers it) */
    char why[256] = "";
    int sup = gemm_bf16_supported(why, sizeof(why));
    if (!getenv("ONEDNN_MAX_CPU_ISA") && !getenv("DNNL_MAX_CPU_ISA"))
        assert_int_equal(sup, bf16_cpu_has_cvt());
    if (!sup)
        assert_non_null(strstr(why, "bf16"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_cases),
        cmocka_unit_test(test_bf16_array_casts),
        cmocka_unit_test(test_gemm_all_backends),
        cmocka_unit_test(test_gemm_add),
        cmocka_unit_test(test_gemm_cache),
        cmocka_unit_test(test_gemm_cache_threads),
        cmocka_unit_test(test_gemm_threads),
        cmocka_unit_test(test_gemm_fp32_modes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    gemm_cache_clear();
    return rc;
}
