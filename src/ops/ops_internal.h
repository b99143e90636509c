/*
 * ops_internal.h - helpers shared by ops.c and ops_attention.c (and
 * included by tests/test_ops.c to check ops_v_exp); not part of the API.
 *
 * Everything here is static inline so that gcc can vectorise the loops that
 * call it without -ffast-math:
 *  - ops_v_exp: exp on OPS_VL lanes (Cephes' reduction and polynomial) in
 *    GCC vector extensions; glibc's expf is a call that only vectorises
 *    under -ffast-math.  Relative error 8e-8 on [-87, 88] (tests/test_ops.c
 *    checks < 3e-7 against exp() in double);
 *  - ops_sum and friends: reductions written on vector types with a fixed
 *    accumulator layout folded in a fixed order (no reassociation by the
 *    compiler needed, so no -ffast-math), so the result depends on n only:
 *    not on the thread count, on the alignment of the pointer, or on
 *    whether the compiler peeled a loop;
 *  - ops_range_split: the column range of one thread when a kernel that
 *    sums over rows is split over columns (each column keeps its row order,
 *    so results are bitwise the same for any thread count).
 */
#ifndef MPITRON_OPS_INTERNAL_H
#define MPITRON_OPS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>
#if defined(__AVX512F__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include "bf16.h"
#include "peak.h"

/* Below this many elements a kernel stays serial (an OpenMP fork costs a
 * few microseconds; 64K floats take about that long to stream); and it
 * always does while OpenBLAS runs more than one thread per rank: OpenBLAS's
 * idle threads spin after every sgemm, and an OpenMP pool started beside
 * them fights them for the cores (measured at threads=2, the 4 x 256
 * model: layernorm 131 ms per step against 2.3 ms, the step 3.8x slower).
 * Evaluated at every call (a thread count can change between steps). */
#define OPS_PAR_MIN (threads_get() == 1 ? ((size_t)1 << 16) : SIZE_MAX)

/* Row-major sgemm on OpenBLAS for the attention kernels' small per-head
 * products (op(A) M x K, op(B) K x N); an empty product is a no-op. */
static inline void ops_sgemm(int ta, int tb, size_t M, size_t N, size_t K,
                             float alpha, const float *A, size_t lda,
                             const float *B, size_t ldb, float beta, float *C,
                             size_t ldc)
{
    if (M == 0 || N == 0)
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* Whether tasks independent loop iterations (heads) go to OpenMP: more
 * than one, a pool of more than one thread, and OpenBLAS at one thread
 * (see OPS_PAR_MIN for why the two pools must not run at once). */
static inline int ops_omp_tasks(size_t tasks)
{
    return tasks > 1 && omp_get_max_threads() > 1 &&
           openblas_get_num_threads() == 1;
}

/* OPS_VL floats in a GCC vector: 8 (one AVX register) when the build
 * targets AVX, else 4 (SSE, NEON), so that no function takes a vector
 * wider than the target's ABI knows.  The exp-based loops are written on
 * it because gcc will not if-convert (hence not vectorise) a float
 * comparison in a scalar loop unless -fno-trapping-math is given. */
#if defined(__AVX512F__)
#define OPS_VBYTES 64
#elif defined(__AVX__)
#define OPS_VBYTES 32
#else
#define OPS_VBYTES 16
#endif
#define OPS_VL (OPS_VBYTES / 4)
typedef float ops_vf __attribute__((vector_size(OPS_VBYTES)));
typedef int32_t ops_vi __attribute__((vector_size(OPS_VBYTES)));
typedef uint32_t ops_vu __attribute__((vector_size(OPS_VBYTES)));

/* c in every lane */
#define OPS_VSET(c) ((ops_vf){0} + (c))

static inline ops_vf ops_v_load(const float *p)
{
    ops_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void ops_v_store(float *p, ops_vf v)
{
    memcpy(p, &v, sizeof v);
}

/* AVX-512 masked loads and stores for the partial vectors below (a
 * memcpy of a variable length is a call into libc, as long as the rest of
 * a short row's work) */
#if defined(__AVX512F__) && OPS_VBYTES == 64
#define OPS_MASKED 1
#if defined(__AVX512BW__) && defined(__AVX512VL__)
#define OPS_MASKED_H 1 /* 16-bit lanes */
#endif
#endif

/* first n < OPS_VL floats of p, the other lanes 0 */
static inline ops_vf ops_v_load_part(const float *p, size_t n)
{
#ifdef OPS_MASKED
    return (ops_vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#else
    ops_vf v = {0};
    memcpy(&v, p, n * sizeof(float));
    return v;
#endif
}

static inline void ops_v_store_part(float *p, ops_vf v, size_t n)
{
#ifdef OPS_MASKED
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
    memcpy(p, &v, n * sizeof(float));
#endif
}

/* m ? a : b, lane by lane (m from a vector comparison: all ones or 0) */
static inline ops_vf ops_v_select(ops_vi m, ops_vf a, ops_vf b)
{
    return (ops_vf)((m & (ops_vi)a) | (~m & (ops_vi)b));
}

/* x > c ? c : x, lane by lane (NaN stays NaN): one vminps with
 * AVX-512 (which returns its second operand, x, when either is NaN)
 * instead of a compare and a blend */
static inline ops_vf ops_v_cap(ops_vf x, float c)
{
#ifdef OPS_MASKED
    return (ops_vf)_mm512_min_ps(_mm512_set1_ps(c), (__m512)x);
#else
    return ops_v_select(x > OPS_VSET(c), OPS_VSET(c), x);
#endif
}

/* x < c ? 0 : y, lane by lane (a NaN x keeps y) */
static inline ops_vf ops_v_zero_below(ops_vf x, float c, ops_vf y)
{
#ifdef OPS_MASKED
    __mmask16 keep =
        _mm512_cmp_ps_mask((__m512)x, _mm512_set1_ps(c), _CMP_NLT_UQ);
    return (ops_vf)_mm512_maskz_mov_ps(keep, (__m512)y);
#else
    return ops_v_select(x < OPS_VSET(c), OPS_VSET(0.0f), y);
#endif
}

/* exp(x) lane by lane for x in [-87, 88]; 0 below -87.3 (where expf is
 * denormal or 0); saturates at exp(88) = 1.65e38 above 88 instead of
 * overflowing to inf.  NaN in, NaN out. */
static inline ops_vf ops_v_exp(ops_vf x)
{
    /* only the upper end is clamped: below -87.3 the lanes compute garbage
     * (never a trap or undefined behaviour) that the last line replaces */
    ops_vf xc = ops_v_cap(x, 88.0f);
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick (exact in round to
     * nearest; gcc does not fold it without -ffast-math) */
    ops_vf t = xc * 1.44269504088896341f + 12582912.0f;
    ops_vf n = t - 12582912.0f;
    /* r = x - n ln2 in two parts; n * 0.693359375 is exact */
    ops_vf r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    /* Cephes' polynomial, evaluated by Estrin's scheme (a shorter
     * dependency chain than Horner's, which bounds gelu's speed) */
    ops_vf r2 = r * r, r4 = r2 * r2;
    ops_vf q01 = 5.0000001201e-1f + 1.6666665459e-1f * r;
    ops_vf q23 = 4.1665795894e-2f + 8.3334519073e-3f * r;
    ops_vf q45 = 1.3981999507e-3f + 1.9875691500e-4f * r;
    ops_vf p = (q01 + q23 * r2) + q45 * r4;
    p = p * r2 + r + 1.0f;
    /* 2^n from the bits of t, whose low mantissa bits hold n */
    ops_vu bits = (((ops_vu)t - 0x4b400000u) + 127u) << 23;
    ops_vf y = p * (ops_vf)bits;
    return ops_v_zero_below(x, -87.3f, y);
}

/* x[i] = exp(x[i] - m) for i < n, every element through ops_v_exp (the
 * tail too, zero-padded), so an element's value does not depend on where
 * the vector boundaries fall */
static inline void ops_exp_shift_inplace(float *x, float m, size_t n)
{
    size_t i = 0;
    for (; i + OPS_VL <= n; i += OPS_VL)
        ops_v_store(x + i, ops_v_exp(ops_v_load(x + i) - m));
    if (i < n)
        ops_v_store_part(x + i, ops_v_exp(ops_v_load_part(x + i, n - i) - m),
                         n - i);
}

/* Sum of the lanes of v in a fixed tree order. */
static inline float ops_v_hsum(ops_vf v)
{
#ifdef OPS_MASKED /* the same tree in registers: halves, then quarters... */
    __m512 z = (__m512)v;
    __m256 hi = _mm256_castpd_ps( /* AVX512F only (no DQ needed) */
        _mm512_extractf64x4_pd(_mm512_castps_pd(z), 1));
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(z), hi);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a),
                          _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
#endif
    float t[OPS_VL];
    memcpy(t, &v, sizeof v);
    for (size_t w = OPS_VL / 2; w >= 1; w /= 2)
        for (size_t k = 0; k < w; k++)
            t[k] += t[k + w];
    return t[0];
}

/* Maximum of the lanes of v, which must hold no NaN (then any order
 * gives the same value). */
static inline float ops_v_hmax(ops_vf v)
{
#ifdef OPS_MASKED
    return _mm512_reduce_max_ps((__m512)v);
#endif
    float t[OPS_VL];
    memcpy(t, &v, sizeof v);
    float m = t[0];
    for (size_t k = 1; k < OPS_VL; k++)
        m = t[k] > m ? t[k] : m;
    return m;
}

/* lanes [0, n) set (all ones), the others 0; n <= OPS_VL */
static inline ops_vi ops_v_first(size_t n)
{
    ops_vi idx;
    for (size_t k = 0; k < OPS_VL; k++)
        idx[k] = (int32_t)k;
    return idx < (ops_vi){0} + (int32_t)n;
}

/* sum of x[0..n): two vector accumulators, then a scalar tail */
static inline float ops_sum(const float *x, size_t n)
{
    ops_vf a0 = {0}, a1 = {0};
    size_t i = 0;
    for (; i + 2 * OPS_VL <= n; i += 2 * OPS_VL) {
        a0 += ops_v_load(x + i);
        a1 += ops_v_load(x + i + OPS_VL);
    }
    float tail = 0.0f;
    for (; i < n; i++)
        tail += x[i];
    return ops_v_hsum(a0 + a1) + tail;
}

/* sum of a[i] * b[i], same layout as ops_sum */
static inline float ops_dot(const float *a, const float *b, size_t n)
{
    ops_vf a0 = {0}, a1 = {0};
    size_t i = 0;
    for (; i + 2 * OPS_VL <= n; i += 2 * OPS_VL) {
        a0 += ops_v_load(a + i) * ops_v_load(b + i);
        a1 += ops_v_load(a + i + OPS_VL) * ops_v_load(b + i + OPS_VL);
    }
    float tail = 0.0f;
    for (; i < n; i++)
        tail += a[i] * b[i];
    return ops_v_hsum(a0 + a1) + tail;
}

/* sum of (x[i] - m)^2, same layout as ops_sum */
static inline float ops_sumsq_dev(const float *x, float m, size_t n)
{
    ops_vf a0 = {0}, a1 = {0};
    size_t i = 0;
    for (; i + 2 * OPS_VL <= n; i += 2 * OPS_VL) {
        ops_vf d0 = ops_v_load(x + i) - m, d1 = ops_v_load(x + i + OPS_VL) - m;
        a0 += d0 * d0;
        a1 += d1 * d1;
    }
    float tail = 0.0f;
    for (; i < n; i++)
        tail += (x[i] - m) * (x[i] - m);
    return ops_v_hsum(a0 + a1) + tail;
}

/* ops_exp_shift_inplace(x, m, n) and then ops_sum(x, n) in one pass over
 * the vector pairs: the same values, the same sum bit for bit (ops_sum's
 * accumulators and tail) */
static inline float ops_exp_shift_sum(float *x, float m, size_t n)
{
    ops_vf a0 = {0}, a1 = {0};
    size_t i = 0;
    for (; i + 2 * OPS_VL <= n; i += 2 * OPS_VL) {
        ops_vf e0 = ops_v_exp(ops_v_load(x + i) - m);
        ops_vf e1 = ops_v_exp(ops_v_load(x + i + OPS_VL) - m);
        ops_v_store(x + i, e0);
        ops_v_store(x + i + OPS_VL, e1);
        a0 += e0;
        a1 += e1;
    }
    ops_exp_shift_inplace(x + i, m, n - i);
    float tail = 0.0f;
    for (; i < n; i++)
        tail += x[i];
    return ops_v_hsum(a0 + a1) + tail;
}

/* max of x[0..n), n >= 1 (order-independent, so any vectorisation is exact) */
static inline float ops_max(const float *x, size_t n)
{
    float m = x[0];
#pragma omp simd reduction(max : m)
    for (size_t i = 1; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* Columns [*lo, *hi) of thread tid out of nt, for n columns cut at
 * multiples of 16 (whole vectors; the cut points do not change any
 * column's arithmetic, only who computes it). */
static inline void ops_range_split(size_t n, int tid, int nt, size_t *lo,
                                   size_t *hi)
{
    size_t blocks = (n + 15) / 16;
    size_t b0 = blocks * (size_t)tid / (size_t)nt;
    size_t b1 = blocks * (size_t)(tid + 1) / (size_t)nt;
    *lo = b0 * 16 < n ? b0 * 16 : n;
    *hi = b1 * 16 < n ? b1 * 16 : n;
}

/* OPS_VL bf16 values <-> one vector, in registers, bitwise as
 * bf16_to_f32_n and bf16_from_f32_n (bf16.h's rules: round to nearest
 * even, zero and denormals to a zero of the same sign, NaN kept quiet):
 * the element-wise kernels read and write bf16 arrays without a float
 * buffer in between.  VCVTNEPS2BF16 when the build targets AVX512_BF16,
 * else the same rounding in vector integer arithmetic.  The _part forms
 * take n < OPS_VL elements (the other lanes read as 0). */
typedef uint16_t ops_vh __attribute__((vector_size(OPS_VBYTES / 2)));

static inline ops_vf ops_vh_widen(ops_vh h)
{
#ifdef OPS_MASKED /* one vpmovzxwd (gcc splits the generic form in two) */
    return (ops_vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16);
#else
    return (ops_vf)(__builtin_convertvector(h, ops_vu) << 16);
#endif
}

static inline ops_vf ops_v_load_h(const bf16 *p)
{
    ops_vh h;
    memcpy(&h, p, sizeof h);
    return ops_vh_widen(h);
}

static inline ops_vf ops_v_load_h_part(const bf16 *p, size_t n)
{
#ifdef OPS_MASKED_H
    __m256i h = _mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1), p);
    return ops_vh_widen((ops_vh)h);
#else
    ops_vh h = {0};
    memcpy(&h, p, n * sizeof(bf16));
    return ops_vh_widen(h);
#endif
}

/* the rounding in integer arithmetic (any target; tests/test_ops.c
 * checks it against bf16_from_f32 where the build uses the instruction) */
static inline ops_vh ops_v_round_h_int(ops_vf v)
{
    ops_vu u = (ops_vu)v, zero = {0};
    ops_vu sign = (u >> 16) & 0x8000u;
    ops_vu nan = (u >> 16) | 0x40u;
    ops_vu rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    ops_vu is_tiny = (ops_vu)((u & 0x7f800000u) == zero);
    ops_vu is_nan = (ops_vu)((u & 0x7fffffffu) > 0x7f800000u);
    ops_vu r = (rne & ~is_nan) | (nan & is_nan);
    r = (r & ~is_tiny) | (sign & is_tiny);
    return __builtin_convertvector(r, ops_vh);
}

static inline ops_vh ops_v_round_h(ops_vf v)
{
#if defined(__AVX512BF16__) && OPS_VBYTES == 64
    __m256bh b = _mm512_cvtneps_pbh((__m512)v);
    ops_vh h;
    memcpy(&h, &b, sizeof h);
    return h;
#else
    return ops_v_round_h_int(v);
#endif
}

static inline void ops_v_store_h(bf16 *p, ops_vf v)
{
    ops_vh h = ops_v_round_h(v);
    memcpy(p, &h, sizeof h);
}

static inline void ops_v_store_h_part(bf16 *p, ops_vf v, size_t n)
{
    ops_vh h = ops_v_round_h(v);
#ifdef OPS_MASKED_H
    _mm256_mask_storeu_epi16(p, (__mmask16)((1u << n) - 1), (__m256i)h);
#else
    memcpy(p, &h, n * sizeof(bf16));
#endif
}

#endif
