/*
 * test_batch.c - the batch plan (batch_ramp, seq_len_warmup) against
 * values worked out by hand from the formulas of batch.h.  No MPI.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "data/batch.h"

static void expect(const struct batch_plan *p, int64_t step, int T, int B,
                   int per_rank, int mb, int accum)
{
    struct batch_shape s;
    batch_plan_at(p, step, &s);
    if (s.T != T || s.B != B || s.per_rank != per_rank || s.mb != mb ||
        s.accum != accum)
        fail_msg("step %lld: T %d B %d per_rank %d mb %d accum %d; want "
                 "%d %d %d %d %d", (long long)step, s.T, s.B, s.per_rank,
                 s.mb, s.accum, T, B, per_rank, mb, accum);
    /* tokens: the ramp's sequences at full length */
    assert_int_equal((int64_t)s.B * s.T % p->seq_len, 0);
}

/* batch 32 on dp 2 with micro-batches of 4 (q = 8); ramp 8:100:
 * 8 + 24 s / 100, down to a multiple of 8. */
static void test_ramp(void **state)
{
    (void)state;
    struct batch_plan p = {.batch_size = 32, .seq_len = 128, .dp = 2,
                           .mb = 4, .ramp_start = 8, .ramp_steps = 100};
    char err[256];
    assert_int_equal(batch_plan_check(&p, err, sizeof err), 0);
    expect(&p, 0, 128, 8, 4, 4, 1);
    expect(&p, 33, 128, 8, 4, 4, 1);   /* 8 + 7.92 = 15 -> 8 */
    expect(&p, 34, 128, 16, 8, 4, 2);  /* 8 + 8.16 = 16 */
    expect(&p, 50, 128, 16, 8, 4, 2);  /* 20 -> 16 */
    expect(&p, 99, 128, 24, 12, 4, 3); /* 31 -> 24 */
    expect(&p, 100, 128, 32, 16, 4, 4);
    expect(&p, 5000, 128, 32, 16, 4, 4);
    assert_int_equal(batch_plan_max_accum(&p), 4);
    for (int k = 1; k <= 4; k++)
        assert_true(batch_plan_uses_accum(&p, k));
    /* a start of 3 rounds up to one micro-batch per rank */
    p.ramp_start = 3;
    expect(&p, 0, 128, 8, 4, 4, 1);
    /* from 24: counts 1 and 2 never occur */
    p.ramp_start = 24;
    assert_false(batch_plan_uses_accum(&p, 1));
    assert_false(batch_plan_uses_accum(&p, 2));
    assert_true(batch_plan_uses_accum(&p, 3));
    assert_true(batch_plan_uses_accum(&p, 4));
    /* no ramp: only the full count */
    p.ramp_steps = 0;
    assert_false(batch_plan_uses_accum(&p, 3));
    assert_true(batch_plan_uses_accum(&p, 4));
}

/* seq_len 128, warm-up 32:100: K = 2 stages, 32 then 64, 128 from step
 * 100; tokens per step constant, and so per micro-batch. */
static void test_seq_len_warmup(void **state)
{
    (void)state;
    struct batch_plan p = {.batch_size = 32, .seq_len = 128, .dp = 2,
                           .mb = 4, .sl_start = 32, .sl_steps = 100};
    char err[256];
    assert_int_equal(batch_plan_check(&p, err, sizeof err), 0);
    expect(&p, 0, 32, 128, 64, 16, 4);
    expect(&p, 49, 32, 128, 64, 16, 4);
    expect(&p, 50, 64, 64, 32, 8, 4);
    expect(&p, 99, 64, 64, 32, 8, 4);
    expect(&p, 100, 128, 32, 16, 4, 4);
    /* with the ramp: step 50 is 16 full-length sequences, as 32 of 64 */
    p.ramp_start = 8;
    p.ramp_steps = 100;
    expect(&p, 50, 64, 32, 16, 8, 2);
    expect(&p, 0, 32, 32, 16, 16, 1);
}

static void test_parse_and_check(void **state)
{
    (void)state;
    int a, b;
    char err[256];
    assert_int_equal(batch_spec_parse("8:100", &a, &b, err, sizeof err), 0);
    assert_int_equal(a, 8);
    assert_int_equal(b, 100);
    assert_int_equal(batch_spec_parse("0", &a, &b, err, sizeof err), 0);
    assert_int_equal(a + b, 0);
    assert_int_equal(batch_spec_parse("", &a, &b, err, sizeof err), 0);
    const char *bad[] = {"8", "8:", ":5", "8:0", "-8:5", "8:5x", "a:b",
                         "8:5:3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(batch_spec_parse(bad[i], &a, &b, err, sizeof err),
                         -1);
        assert_non_null(strstr(err, "START:STEPS"));
    }
    struct batch_plan p = {.batch_size = 32, .seq_len = 128, .dp = 2,
                           .mb = 4, .ramp_start = 40, .ramp_steps = 10};
    assert_int_equal(batch_plan_check(&p, err, sizeof err), -1);
    assert_non_null(strstr(err, "starts above batch_size=32"));
    p.ramp_start = 8;
    p.mb = 16; /* one micro-batch per rank: nothing to ramp */
    assert_int_equal(batch_plan_check(&p, err, sizeof err), -1);
    assert_non_null(strstr(err, "micro_batch"));
    p.mb = 4;
    p.sl_start = 48;
    p.sl_steps = 10;
    assert_int_equal(batch_plan_check(&p, err, sizeof err), -1);
    assert_non_null(strstr(err, "seq_len / 2^K"));
    p.sl_start = 128;
    assert_int_equal(batch_plan_check(&p, err, sizeof err), -1);
    p.sl_start = 16;
    assert_int_equal(batch_plan_check(&p, err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ramp),
        cmocka_unit_test(test_seq_len_warmup),
        cmocka_unit_test(test_parse_and_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
