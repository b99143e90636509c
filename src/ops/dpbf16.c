/*
 * dpbf16.c - the VDPBF16PS product and its packing (contract in dpbf16.h).
 *
 * The kernel keeps a tile of C in zmm accumulators, 8 rows x 32 columns
 * (16 registers) or, while more than 32 columns remain, 6 x 64 (24: a
 * 64-wide C, GPT-2's head size, is then one pass over A).  Per pair of K
 * it loads the tile's 16-word vectors of packed B and, for each row,
 * broadcasts A's word and issues one VDPBF16PS per vector.  B's block of
 * ceil(K/2) rows stays in L1 while the row tiles pass over it.  Columns
 * past N are masked lanes (loaded as 0, never stored); rows past M are a
 * smaller instance of the same tile: every element of C is computed by
 * the same instructions in the same order whatever the shape around it.
 * Each tile shape is a function of its own: inlined into one, gcc spilled
 * the accumulators.
 */
#include "dpbf16.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DP_X86 1
#define DP_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#endif

int dpbf16_available(void)
{
#ifdef DP_X86
    return bf16_cpu_has_cvt();
#else
    return 0;
#endif
}

#ifdef DP_X86

#define MR_MAX 8 /* rows of a tile */
#define NV_MAX 4 /* 16-column vectors of a tile */

static inline uint32_t word_at(const bf16 *p)
{
    uint32_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

static inline uint32_t half_at(const bf16 *p) /* the low half only */
{
    return *p;
}

static inline __mmask16 lanes(size_t n) /* the first min(n, 16) lanes */
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

/* one pair of K (half: its first element alone, A's upper half taken as
 * 0) into the accumulators of mr rows x nv vectors (c0..c3: vector v of
 * row i in cv[i]; separate arrays, so that gcc keeps them in registers) */
DP_TARGET static inline __attribute__((always_inline)) void
kstep(const int mr, const int nv, __m512 *c0, __m512 *c1, __m512 *c2,
      __m512 *c3, const uint32_t *b, const __mmask16 *m, const bf16 *ak,
      ptrdiff_t sar, const int half)
{
    __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m[0], b);
    __m512bh b1 = (__m512bh)_mm512_maskz_loadu_epi32(m[1], b + 16);
    __m512bh b2 = b0, b3 = b1;
    if (nv > 2) {
        b2 = (__m512bh)_mm512_maskz_loadu_epi32(m[2], b + 32);
        b3 = (__m512bh)_mm512_maskz_loadu_epi32(m[3], b + 48);
    }
    _Pragma("GCC unroll 8")
    for (int i = 0; i < mr; i++) {
        const bf16 *ai = ak + (ptrdiff_t)i * sar;
        __m512bh av = (__m512bh)_mm512_set1_epi32(
            (int)(half ? half_at(ai) : word_at(ai)));
        c0[i] = _mm512_dpbf16_ps(c0[i], av, b0);
        c1[i] = _mm512_dpbf16_ps(c1[i], av, b1);
        if (nv > 2) {
            c2[i] = _mm512_dpbf16_ps(c2[i], av, b2);
            c3[i] = _mm512_dpbf16_ps(c3[i], av, b3);
        }
    }
}

/* one 16-column vector of a row of C (at off) from its accumulator */
DP_TARGET static inline __attribute__((always_inline)) void
store_vec(const struct dp_gemm *g, size_t off, __m512 x, __mmask16 m)
{
    x = _mm512_mul_ps(x, _mm512_set1_ps(g->alpha));
    if (g->c_bf16) {
        _mm256_mask_storeu_epi16((bf16 *)g->C + off, m,
                                 (__m256i)_mm512_cvtneps_pbh(x));
        return;
    }
    float *c = (float *)g->C + off;
    if (g->accumulate)
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, c));
    _mm512_mask_storeu_ps(c, m, x);
}

/* rows [r0, r0 + mr) x columns [n0, n0 + 16 nv) of C; mr and nv constants
 * in each instance */
DP_TARGET static inline __attribute__((always_inline)) void
tile(const int mr, const int nv, const struct dp_gemm *g, size_t r0,
     size_t n0)
{
    __m512 c0[MR_MAX], c1[MR_MAX], c2[MR_MAX], c3[MR_MAX];
    __mmask16 m[NV_MAX];
    _Pragma("GCC unroll 8")
    for (int v = 0; v < NV_MAX; v++)
        m[v] = lanes(g->N - n0 > 16 * (size_t)v ? g->N - n0 - 16 * (size_t)v
                                                : 0);
    _Pragma("GCC unroll 8")
    for (int i = 0; i < mr; i++)
        c0[i] = c1[i] = c2[i] = c3[i] = _mm512_setzero_ps();
    /* C's lines, read at the end: fetched while the products run */
    for (int i = 0; g->accumulate && i < mr; i++)
        for (int v = 0; v < nv; v++)
            _mm_prefetch((const char *)((const float *)g->C +
                                        (r0 + (size_t)i) * g->ldc + n0 +
                                        16 * (size_t)v),
                         _MM_HINT_T0);
    const bf16 *a = g->A + (ptrdiff_t)r0 * g->sar;
    const uint32_t *b = g->B + n0;
    size_t K2 = g->K / 2;
    for (size_t k = 0; k < K2; k++)
        kstep(mr, nv, c0, c1, c2, c3, b + k * g->ldb, m,
              a + (ptrdiff_t)k * g->sak, g->sar, 0);
    if (g->K & 1)
        kstep(mr, nv, c0, c1, c2, c3, b + K2 * g->ldb, m,
              a + (ptrdiff_t)K2 * g->sak, g->sar, 1);
    _Pragma("GCC unroll 8")
    for (int i = 0; i < mr; i++) {
        size_t off = (r0 + (size_t)i) * g->ldc + n0;
        store_vec(g, off, c0[i], m[0]);
        store_vec(g, off + 16, c1[i], m[1]);
        if (nv > 2) {
            store_vec(g, off + 32, c2[i], m[2]);
            store_vec(g, off + 48, c3[i], m[3]);
        }
    }
}

/* one function per tile shape, so that each keeps its accumulators in
 * registers (inlined together they spill) */
#define TILE_FN(mr, nv)                                                       \
    DP_TARGET static __attribute__((noinline)) void tile_##mr##_##nv(        \
        const struct dp_gemm *g, size_t r0, size_t n0)                        \
    {                                                                         \
        tile(mr, nv, g, r0, n0);                                              \
    }
TILE_FN(1, 2) TILE_FN(2, 2) TILE_FN(3, 2) TILE_FN(4, 2) TILE_FN(5, 2)
TILE_FN(6, 2) TILE_FN(7, 2) TILE_FN(8, 2)
TILE_FN(1, 4) TILE_FN(2, 4) TILE_FN(3, 4) TILE_FN(4, 4) TILE_FN(5, 4)
TILE_FN(6, 4)

typedef void tile_fn(const struct dp_gemm *, size_t, size_t);
static tile_fn *const tiles2[9] = {NULL, tile_1_2, tile_2_2, tile_3_2,
                                   tile_4_2, tile_5_2, tile_6_2, tile_7_2,
                                   tile_8_2};
static tile_fn *const tiles4[7] = {NULL, tile_1_4, tile_2_4, tile_3_4,
                                   tile_4_4, tile_5_4, tile_6_4};

/* every row of C's columns [n0, n0 + 16 nv): tiles of mr rows, then one
 * of the rest */
static void rows(tile_fn *const *fn, size_t mr, const struct dp_gemm *g,
                 size_t n0)
{
    size_t r0 = 0;
    for (; r0 + mr <= g->M; r0 += mr)
        fn[mr](g, r0, n0);
    if (g->M > r0)
        fn[g->M - r0](g, r0, n0);
}

/* Column blocks of 64 (4 vectors x 6 rows: 24 accumulators) while more
 * than 32 columns remain, else of 32 (2 x 8: 16): a 64-wide C (the head
 * size of GPT-2) is one pass over A. */
static void gemm_x86(const struct dp_gemm *g)
{
    for (size_t n0 = 0; n0 < g->N;) {
        if (g->N - n0 > 32) {
            rows(tiles4, 6, g, n0);
            n0 += 64;
        } else {
            rows(tiles2, 8, g, n0);
            n0 += 32;
        }
    }
}

DP_TARGET static void pack_pairs_x86(uint32_t *dst, size_t ldd,
                                     const bf16 *src, size_t lds,
                                     size_t rows, size_t cols)
{
    for (size_t j = 0; 2 * j < rows; j++) {
        const bf16 *a = src + 2 * j * lds;
        const bf16 *b = 2 * j + 1 < rows ? a + lds : NULL;
        uint32_t *d = dst + j * ldd;
        for (size_t c = 0; c < cols; c += 16) {
            __mmask16 m = lanes(cols - c);
            __m512i lo = _mm512_cvtepu16_epi32(
                _mm256_maskz_loadu_epi16(m, a + c));
            __m512i hi = b ? _mm512_cvtepu16_epi32(
                                 _mm256_maskz_loadu_epi16(m, b + c))
                           : _mm512_setzero_si512();
            _mm512_mask_storeu_epi32(
                d + c, m, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

/* r[k] = column k of the 16 x 16 words in r (r[i] = row i) */
DP_TARGET static inline __attribute__((always_inline)) void
transpose16(__m512i r[16])
{
    __m512i t[16];
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 2; i++)
        _Pragma("GCC unroll 16")
        for (int j = 0; j < 4; j++) {
            __m512i a = r[8 * i + j], b = r[8 * i + 4 + j];
            t[8 * i + j] = _mm512_shuffle_i32x4(a, b, 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_i32x4(a, b, 0xdd);
        }
    _Pragma("GCC unroll 16")
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
    }
}

DP_TARGET static void pack_words_t_x86(uint32_t *dst, size_t ldd,
                                       const bf16 *src, size_t lds,
                                       size_t rows, size_t cols)
{
    size_t words = cols / 2;
    /* 16 rows x 16 words at a time, transposed in registers; the edges
     * by masks (missing rows and words load as 0 and are not stored) */
    for (size_t r0 = 0; r0 < rows; r0 += 16) {
        size_t nr = rows - r0 < 16 ? rows - r0 : 16;
        __mmask16 mr = lanes(nr);
        for (size_t j0 = 0; j0 < words; j0 += 16) {
            size_t nw = words - j0 < 16 ? words - j0 : 16;
            __m512i r[16];
            _Pragma("GCC unroll 16")
            for (size_t i = 0; i < 16; i++)
                r[i] = i < nr ? _mm512_maskz_loadu_epi32(
                                    lanes(nw), src + (r0 + i) * lds + 2 * j0)
                              : _mm512_setzero_si512();
            transpose16(r);
            _Pragma("GCC unroll 16")
            for (size_t k = 0; k < 16; k++) /* constant indices into r */
                if (k < nw)
                    _mm512_mask_storeu_epi32(dst + (j0 + k) * ldd + r0, mr,
                                             r[k]);
        }
    }
}

void dp_gemm(const struct dp_gemm *g)
{
    gemm_x86(g);
}

void dp_pack_pairs(uint32_t *dst, size_t ldd, const bf16 *src, size_t lds,
                   size_t rows, size_t cols)
{
    pack_pairs_x86(dst, ldd, src, lds, rows, cols);
}

void dp_pack_words_t(uint32_t *dst, size_t ldd, const bf16 *src, size_t lds,
                     size_t rows, size_t cols)
{
    pack_words_t_x86(dst, ldd, src, lds, rows, cols);
}

#else /* no x86 AVX-512 target: never called (dpbf16_available() is 0) */

void dp_gemm(const struct dp_gemm *g)
{
    (void)g;
}

void dp_pack_pairs(uint32_t *dst, size_t ldd, const bf16 *src, size_t lds,
                   size_t rows, size_t cols)
{
    (void)dst, (void)ldd, (void)src, (void)lds, (void)rows, (void)cols;
}

void dp_pack_words_t(uint32_t *dst, size_t ldd, const bf16 *src, size_t lds,
                     size_t rows, size_t cols)
{
    (void)dst, (void)ldd, (void)src, (void)lds, (void)rows, (void)cols;
}

#endif
