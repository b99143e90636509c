/*
 * bf16.c - array casts between float and bf16 (rules in bf16.h): an
 * AVX512_BF16 path picked at run time, and a portable one written on
 * 16-lane GCC vectors (gcc turns them into whatever vectors the target
 * has).
 */
#include "bf16.h"

#include <stdatomic.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BF16_HAVE_X86 1
#endif

typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

/* 16 floats (as bits) -> 16 bf16, by bf16_from_f32's rules, branch-free.
 * The vector is passed by address: passed by value, a 64-byte vector's
 * ABI depends on whether AVX-512 is enabled (clang warns where not). */
static inline void narrow16(bf16 *dst, const v16u *src)
{
    v16u u = *src;
    v16u zero = {0};
    v16u sign = (u >> 16) & 0x8000u;
    v16u nan = (u >> 16) | 0x40u;
    v16u rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    v16i is_tiny = (v16i)((u & 0x7f800000u) == zero);
    v16i is_nan = (v16i)((u & 0x7fffffffu) > 0x7f800000u);
    v16u r = (rne & (v16u)~is_nan) | (nan & (v16u)is_nan);
    r = (r & (v16u)~is_tiny) | (sign & (v16u)is_tiny);
    bf16 out[16];
    for (int k = 0; k < 16; k++)
        out[k] = (bf16)r[k];
    memcpy(dst, out, sizeof out);
}

static void from_f32_portable(bf16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v16u u;
        memcpy(&u, src + i, sizeof u);
        narrow16(dst + i, &u);
    }
    for (; i < n; i++)
        dst[i] = bf16_from_f32(src[i]);
}

static void from_f32_scaled_portable(bf16 *dst, const float *src,
                                     float scale, size_t n)
{
    float t[16];
    for (size_t i = 0; i < n; i += 16) {
        size_t k = n - i < 16 ? n - i : 16;
        for (size_t j = 0; j < k; j++)
            t[j] = src[i + j] * scale;
        from_f32_portable(dst + i, t, k);
    }
}

static void to_f32_portable(float *dst, const bf16 *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, sizeof u);
    }
}

#ifdef BF16_HAVE_X86
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void from_f32_avx512(bf16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)h);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, src + i));
        _mm256_mask_storeu_epi16(dst + i, k, (__m256i)h);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void from_f32_scaled_avx512(bf16 *dst, const float *src, float scale,
                                   size_t n)
{
    __m512 s = _mm512_set1_ps(scale);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_mul_ps(_mm512_loadu_ps(src + i), s);
        __m256bh h = _mm512_cvtneps_pbh(x);
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)h);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, src + i), s);
        _mm256_mask_storeu_epi16(dst + i, k, (__m256i)_mm512_cvtneps_pbh(x));
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static void to_f32_avx512(float *dst, const bf16 *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(
            _mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
    }
    for (; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}
#endif

/* -1 unknown, 0 portable, 1 AVX512_BF16 */
static atomic_int use_hw = -1;
static atomic_int forced_portable = 0;

int bf16_cpu_has_cvt(void)
{
#ifdef BF16_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

static int hw(void)
{
    int h = atomic_load_explicit(&use_hw, memory_order_relaxed);
    if (h < 0) {
        h = bf16_cpu_has_cvt();
        atomic_store(&use_hw, h);
    }
    return h && !atomic_load_explicit(&forced_portable, memory_order_relaxed);
}

void bf16_force_portable(int on)
{
    atomic_store(&forced_portable, on);
}

void bf16_from_f32_n(bf16 *dst, const float *src, size_t n)
{
#ifdef BF16_HAVE_X86
    if (hw()) {
        from_f32_avx512(dst, src, n);
        return;
    }
#endif
    from_f32_portable(dst, src, n);
}

void bf16_from_f32_scaled_n(bf16 *dst, const float *src, float scale,
                            size_t n)
{
#ifdef BF16_HAVE_X86
    if (hw()) {
        from_f32_scaled_avx512(dst, src, scale, n);
        return;
    }
#endif
    from_f32_scaled_portable(dst, src, scale, n);
}

void bf16_to_f32_n(float *dst, const bf16 *src, size_t n)
{
#ifdef BF16_HAVE_X86
    if (hw()) {
        to_f32_avx512(dst, src, n);
        return;
    }
#endif
    to_f32_portable(dst, src, n);
}
