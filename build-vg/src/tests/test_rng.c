/*
 * test_rng.c - the counter-based generator: published reference values
 * (SplitMix64, FNV-1a), determinism, distinctness, and the moments of the
 * uniform and normal draws.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "rng.h"

#define NDRAW 1000000

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Sort and fail if any two of the n values are equal. */
static void assert_all_distinct(uint64_t *x, size_t n, const char *what)
{
    qsort(x, n, sizeof *x, cmp_u64);
    for (size_t i = 1; i < n; i++)
        if (x[i] == x[i - 1])
            fail_msg("%s: value 0x%016llx repeats", what,
                     (unsigned long long)x[i]);
}

/* The mixer is SplitMix64's: with seed 0 the reference generator outputs
 * mix(k * 0x9e3779b97f4a7c15) for k = 1, 2, 3, which are the published
 * values e220a8397b1dcdaf, 6e789e6aa1b965f4, 06c45d188009454f. */
static void test_mix64_splitmix_reference(void **state)
{
    (void)state;
    const uint64_t gamma = 0x9e3779b97f4a7c15ULL;
    assert_true(rng_mix64(gamma) == 0xe220a8397b1dcdafULL);
    assert_true(rng_mix64(2 * gamma) == 0x6e789e6aa1b965f4ULL);
    assert_true(rng_mix64(3 * gamma) == 0x06c45d188009454fULL);
    assert_true(rng_mix64(0) == 0);
}

/* FNV-1a 64 test vectors (offset basis; "a"; "foobar"). */
static void test_hash_str_fnv1a(void **state)
{
    (void)state;
    assert_true(rng_hash_str("") == 0xcbf29ce484222325ULL);
    assert_true(rng_hash_str("a") == 0xaf63dc4c8601ec8cULL);
    assert_true(rng_hash_str("foobar") == 0x85944171f73967e8ULL);
    assert_true(rng_hash_str("h.0.attn.w") != rng_hash_str("h.0.attn.b"));
}

/* Pure function of (key, counter): calling twice, or in another order,
 * gives the same values. */
static void test_determinism(void **state)
{
    (void)state;
    uint64_t key = rng_key(1234, RNG_INIT, rng_hash_str("wte"));
    assert_true(key == rng_key(1234, RNG_INIT, rng_hash_str("wte")));
    for (uint64_t c = 1000; c-- > 0;) {
        uint64_t a = rng_u64(key, c);
        assert_true(a == rng_u64(key, c));
        assert_true(rng_uniform(key, c) == rng_uniform(key, c));
        float n1 = rng_normal(key, c), n2 = rng_normal(key, c);
        assert_memory_equal(&n1, &n2, sizeof n1);
    }
}

/* Different counters under one key, and one counter under different
 * keys, give different 64-bit values; streams of nearby keys differ. */
static void test_distinct(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint64_t *x = malloc(N * sizeof *x);
    assert_non_null(x);
    uint64_t key = rng_key(42, RNG_DATA, 7);
    for (size_t i = 0; i < N; i++)
        x[i] = rng_u64(key, i);
    assert_all_distinct(x, N, "counters under one key");
    for (size_t i = 0; i < N; i++)
        x[i] = rng_u64(rng_key(42, RNG_DATA, i), 0);
    assert_all_distinct(x, N, "keys at counter 0");
    /* adjacent keys: about half the bits differ on average */
    double flips = 0;
    for (uint64_t i = 0; i < 1000; i++)
        flips += __builtin_popcountll(rng_u64(i, 5) ^ rng_u64(i + 1, 5));
    flips /= 1000;
    assert_true(flips > 30.0 && flips < 34.0);
    free(x);
}

/* rng_key: every (seed, purpose, sub) in a small grid is distinct, in
 * particular the same (seed, sub) under different purposes. */
static void test_key_distinct(void **state)
{
    (void)state;
    enum { NSEED = 8, NPURP = 4, NSUB = 64 };
    uint64_t x[NSEED * NPURP * NSUB];
    size_t k = 0;
    for (uint64_t s = 0; s < NSEED; s++)
        for (uint32_t p = RNG_INIT; p <= RNG_SAMPLE; p++)
            for (uint64_t sub = 0; sub < NSUB; sub++)
                x[k++] = rng_key(s, p, sub);
    assert_int_equal(k, sizeof x / sizeof x[0]);
    assert_all_distinct(x, k, "rng_key");
    assert_true(rng_key(1, RNG_INIT, 0) != rng_key(1, RNG_DROPOUT, 0));
    assert_true(rng_key(0, RNG_DATA, 1) != rng_key(1, RNG_DATA, 0));
}

/* Uniform on [0,1): mean 1/2 (standard error 2.9e-4 over 1e6 draws),
 * variance 1/12 (s.e. 7.5e-5), each tenth of the interval ~1e5 draws
 * (s.e. 300); tolerances are about 7 standard errors. */
static void test_uniform_moments(void **state)
{
    (void)state;
    uint64_t key = rng_key(2024, RNG_DROPOUT, 3);
    double sum = 0, sum2 = 0;
    long bins[10] = {0};
    for (uint64_t i = 0; i < NDRAW; i++) {
        float u = rng_uniform(key, i);
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
        sum2 += (double)u * u;
        bins[(int)((double)u * 10.0)]++;
    }
    double mean = sum / NDRAW, var = sum2 / NDRAW - mean * mean;
    assert_true(fabs(mean - 0.5) < 2e-3);
    assert_true(fabs(var - 1.0 / 12.0) < 5e-4);
    for (int b = 0; b < 10; b++)
        assert_true(labs(bins[b] - NDRAW / 10) < 2100);
}

/* Normal: mean 0 (s.e. 1e-3), variance 1 (s.e. 1.4e-3), P(|z| < 1) =
 * 0.6827 (s.e. 4.7e-4); all finite. */
static void test_normal_moments(void **state)
{
    (void)state;
    uint64_t key = rng_key(7, RNG_INIT, rng_hash_str("h.3.mlp.fc_w"));
    double sum = 0, sum2 = 0;
    long inside = 0;
    for (uint64_t i = 0; i < NDRAW; i++) {
        float z = rng_normal(key, i);
        assert_true(isfinite(z));
        sum += z;
        sum2 += (double)z * z;
        inside += fabsf(z) < 1.0f;
    }
    double mean = sum / NDRAW, var = sum2 / NDRAW - mean * mean;
    assert_true(fabs(mean) < 5e-3);
    assert_true(fabs(var - 1.0) < 1e-2);
    assert_true(fabs((double)inside / NDRAW - 0.682689) < 3e-3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix64_splitmix_reference),
        cmocka_unit_test(test_hash_str_fnv1a),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_distinct),
        cmocka_unit_test(test_key_distinct),
        cmocka_unit_test(test_uniform_moments),
        cmocka_unit_test(test_normal_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
