/*
 * bf16.h - bfloat16 numbers: the storage type, rounding, array casts and
 * the runtime check for bf16 instructions.
 *
 * A bf16 is the upper half of an IEEE float32: sign, 8 exponent bits, 7
 * mantissa bits.  Rounding float -> bf16 is exactly what the x86
 * instruction VCVTNEPS2BF16 (AVX512_BF16, and oneDNN's kernels that use it)
 * does, so a value cast here and a value cast by oneDNN have the same bits:
 *   - round to nearest, ties to even;
 *   - zero and denormal inputs give a zero of the same sign;
 *   - NaN stays NaN (quiet: mantissa bit 6 set), infinities stay;
 *   - finite values beyond the largest bf16 round to infinity.
 * Widening bf16 -> float is exact.
 *
 * Two implementations of the array casts, bitwise equal: AVX512_BF16
 * instructions, chosen at run time when the CPU has them (whatever the
 * compiler flags), and portable C that gcc vectorises.  tests/test_ops.c
 * checks them against each other and against the scalar definition.
 */
#ifndef MPITRON_BF16_H
#define MPITRON_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

/* float -> bf16 by the rules above */
static inline bf16 bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0) /* zero or denormal */
        return (bf16)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
        return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

static inline float bf16_to_f32(bf16 h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* dst (n) = bf16(src (n)); dst and src do not overlap */
void bf16_from_f32_n(bf16 *dst, const float *src, size_t n);
/* dst (n) = bf16(src (n) * scale), the product rounded to fp32 first
 * (the bits of scaling in place, then bf16_from_f32_n) */
void bf16_from_f32_scaled_n(bf16 *dst, const float *src, float scale,
                            size_t n);
/* dst (n) = float(src (n)) */
void bf16_to_f32_n(float *dst, const bf16 *src, size_t n);

/* 1 when this CPU has the AVX512_BF16 instructions the casts use (then
 * the fast path is in use), else 0. */
int bf16_cpu_has_cvt(void);
/* Tests only: 1 forces the portable casts, 0 restores the choice by CPU. */
void bf16_force_portable(int on);

#endif
