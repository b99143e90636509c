/*
 * rng.h - counter-based random numbers.
 *
 * Every random number in mpitron is a pure function of (key, counter):
 * there is no generator state to carry, split or checkpoint.  The key
 * packs (seed, purpose, tensor or step, ...) through rng_key(); the
 * counter is a *global* index (element index of a parameter in its global
 * shape, token position in the global batch, ...).  A sharded model
 * therefore draws exactly the numbers the serial model draws.
 *
 * The mixer is SplitMix64's finaliser applied twice with the key folded
 * in between; it passes BigCrush when used as a counter-mode generator.
 * The two hot helpers are static inline on purpose: ops.c calls them once
 * per element in dropout, and a call per element would dominate.
 */
#ifndef MPITRON_RNG_H
#define MPITRON_RNG_H

#include <stdint.h>

static inline uint64_t rng_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 64 random bits for (key, counter). */
static inline uint64_t rng_u64(uint64_t key, uint64_t counter)
{
    return rng_mix64(rng_mix64(counter + 0x9e3779b97f4a7c15ULL) ^ key);
}

/* Uniform float in [0, 1) with 24 random bits. */
static inline float rng_uniform(uint64_t key, uint64_t counter)
{
    return (float)(rng_u64(key, counter) >> 40) * (1.0f / 16777216.0f);
}

/* Purposes, so that the same seed never feeds two uses. */
enum rng_purpose {
    RNG_INIT = 1,    /* parameter init: key = rng_key(seed, INIT, hash(name)) */
    RNG_DATA = 2,    /* batch sampling: key = rng_key(seed, DATA, step) */
    RNG_DROPOUT = 3, /* dropout: key = rng_key(seed, DROPOUT, step*64+site) */
    RNG_SAMPLE = 4,  /* token sampling in `mpitron sample` */
    RNG_MIX = 5,     /* which dataset of a mixture: key = rng_key(seed,
                        MIX, step) */
};

/* Key for (seed, purpose, sub): distinct inputs give unrelated keys. */
uint64_t rng_key(uint64_t seed, uint32_t purpose, uint64_t sub);

/* FNV-1a of a string, for keying on tensor names. */
uint64_t rng_hash_str(const char *s);

/* Standard normal for (key, counter), Box-Muller on two uniforms. */
float rng_normal(uint64_t key, uint64_t counter);

#endif
