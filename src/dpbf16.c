/*
 * dpbf16.c - the VDPBF16PS product and its packing (contract in dpbf16.h).
 *
 * The kernel keeps an MR x 32 block of C in 2 MR zmm accumulators: per
 * pair of K it loads two 16-word vectors of packed B and, for each of the
 * MR rows, broadcasts A's word and issues two VDPBF16PS.  B's block of
 * ceil(K/2) x 32 words stays in L1 while the row blocks pass over it.
 * Columns past N are masked lanes (loaded as 0, never stored); rows past
 * M are a smaller instance of the same tile, so no element of C depends
 * on the shape around it.
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

#define MR 8 /* rows per tile: 16 accumulators, B's 2 vectors, A's word */

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
 * 0) into the accumulators of mr rows */
DP_TARGET static inline __attribute__((always_inline)) void
kstep(const int mr, __m512 *c0, __m512 *c1, const uint32_t *b, __mmask16 m0,
      __mmask16 m1, const bf16 *ak, ptrdiff_t sar, const int half)
{
    __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, b);
    __m512bh b1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, b + 16);
    for (int i = 0; i < mr; i++) {
        const bf16 *ai = ak + (ptrdiff_t)i * sar;
        __m512bh av = (__m512bh)_mm512_set1_epi32(
            (int)(half ? half_at(ai) : word_at(ai)));
        c0[i] = _mm512_dpbf16_ps(c0[i], av, b0);
        c1[i] = _mm512_dpbf16_ps(c1[i], av, b1);
    }
}

/* C's row of the tile (32 columns at off) from its accumulators */
DP_TARGET static inline __attribute__((always_inline)) void
store_row(const struct dp_gemm *g, size_t off, __m512 x0, __m512 x1,
          __mmask16 m0, __mmask16 m1)
{
    __m512 al = _mm512_set1_ps(g->alpha);
    x0 = _mm512_mul_ps(x0, al), x1 = _mm512_mul_ps(x1, al);
    if (g->c_bf16) {
        bf16 *c = (bf16 *)g->C + off;
        _mm256_mask_storeu_epi16(c, m0, (__m256i)_mm512_cvtneps_pbh(x0));
        _mm256_mask_storeu_epi16(c + 16, m1, (__m256i)_mm512_cvtneps_pbh(x1));
        return;
    }
    float *c = (float *)g->C + off;
    if (g->accumulate) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, c));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, x0);
    _mm512_mask_storeu_ps(c + 16, m1, x1);
}

/* rows [r0, r0 + mr) x columns [n0, n0 + 32) of C; mr a constant in each
 * instance so that the accumulators live in registers */
DP_TARGET static inline __attribute__((always_inline)) void
tile(const int mr, const struct dp_gemm *g, size_t r0, size_t n0)
{
    __m512 c0[MR], c1[MR];
    size_t nn = g->N - n0;
    __mmask16 m0 = lanes(nn), m1 = lanes(nn > 16 ? nn - 16 : 0);
    for (int i = 0; i < mr; i++)
        c0[i] = c1[i] = _mm512_setzero_ps();
    /* C's lines, read at the end: fetched while the products run */
    for (int i = 0; g->accumulate && i < mr; i++) {
        const float *c = (const float *)g->C + (r0 + (size_t)i) * g->ldc + n0;
        _mm_prefetch((const char *)c, _MM_HINT_T0);
        _mm_prefetch((const char *)(c + 16), _MM_HINT_T0);
    }
    const bf16 *a = g->A + (ptrdiff_t)r0 * g->sar;
    const uint32_t *b = g->B + n0;
    size_t K2 = g->K / 2;
    for (size_t k = 0; k < K2; k++)
        kstep(mr, c0, c1, b + k * g->ldb, m0, m1, a + (ptrdiff_t)k * g->sak,
              g->sar, 0);
    if (g->K & 1)
        kstep(mr, c0, c1, b + K2 * g->ldb, m0, m1,
              a + (ptrdiff_t)K2 * g->sak, g->sar, 1);
    for (int i = 0; i < mr; i++)
        store_row(g, (r0 + (size_t)i) * g->ldc + n0, c0[i], c1[i], m0, m1);
}

DP_TARGET static void gemm_x86(const struct dp_gemm *g)
{
    for (size_t n0 = 0; n0 < g->N; n0 += 32) {
        size_t r0 = 0;
        for (; r0 + MR <= g->M; r0 += MR)
            tile(MR, g, r0, n0);
        switch (g->M - r0) {
        case 1: tile(1, g, r0, n0); break;
        case 2: tile(2, g, r0, n0); break;
        case 3: tile(3, g, r0, n0); break;
        case 4: tile(4, g, r0, n0); break;
        case 5: tile(5, g, r0, n0); break;
        case 6: tile(6, g, r0, n0); break;
        case 7: tile(7, g, r0, n0); break;
        default: break;
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
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            __m512i a = r[8 * i + j], b = r[8 * i + 4 + j];
            t[8 * i + j] = _mm512_shuffle_i32x4(a, b, 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_i32x4(a, b, 0xdd);
        }
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
            for (size_t i = 0; i < 16; i++)
                r[i] = i < nr ? _mm512_maskz_loadu_epi32(
                                    lanes(nw), src + (r0 + i) * lds + 2 * j0)
                              : _mm512_setzero_si512();
            transpose16(r);
            for (size_t k = 0; k < nw; k++)
                _mm512_mask_storeu_epi32(dst + (j0 + k) * ldd + r0, mr, r[k]);
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
