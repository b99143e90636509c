/*
 * test_perf.c - parallel/perf.c's formulas against hand computations:
 *  - ring, rhd (a power of two and a folded rank count), hier, all-gather
 *    and point-to-point alpha-beta times;
 *  - the least-squares fit and the link behind a ring all-reduce;
 *  - the pipeline simulation: uniform 1F1B and GPipe give (m+p-1)(f+b)
 *    and the bubble (p-1)/(m+p-1) for every p <= 6 and m <= 12; a
 *    two-stage 1F1B with transfer time worked out action by action; a
 *    slow last stage (the head) dominating the steady state;
 *  - bucket overlap: reductions queued behind each other and behind
 *    their gradients, the exposed remainder;
 *  - a whole step assembled from those, and the ZeRO hook.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "perf.h"

#define NEAR(a, b) assert_true(fabs((a) - (b)) <= 1e-12 + 1e-9 * fabs(b))

static const struct perf_link L = {1e-6, 1e-9}; /* 1 us, 1 GB/s */

static void test_collectives(void **state)
{
    (void)state;
    /* 2 (p-1) a + 2 (p-1)/p n b, p = 4, n = 1 MB */
    NEAR(perf_ring_allreduce(4, 1e6, L), 6e-6 + 1.5e-3);
    NEAR(perf_ring_allreduce(1, 1e6, L), 0.0);
    NEAR(perf_ring_allreduce(2, 0.0, L), 2e-6);
    /* rhd, p = 4: 2 log2(4) a + 2 (3/4) n b */
    NEAR(perf_rhd_allreduce(4, 1e6, L), 4e-6 + 1.5e-3);
    /* p = 6: the power-of-two core of 4, plus fold in and out */
    NEAR(perf_rhd_allreduce(6, 1e6, L), 4e-6 + 1.5e-3 + 2e-6 + 2e-3);
    /* hier over 2 nodes of 2: chains (2-1+7)(a + n/8 b) intra, ring
     * inter; 8 pieces: max + (sum - max) / 8 */
    struct perf_link in = {1e-6, 1e-10}, out = {1e-5, 1e-9};
    double chain = 8 * (1e-6 + 1e6 * 1e-10), ring = 2e-5 + 8e6 * 1e-9;
    NEAR(perf_hier_allreduce(2, 2, 8e6, in, out),
         ring + 2 * chain / 8);
    /* one rank per node: the ring among nodes alone */
    NEAR(perf_hier_allreduce(3, 1, 8e6, in, out),
         perf_ring_allreduce(3, 8e6, out));
    NEAR(perf_allgather(5, 1000, L), 4 * (1e-6 + 1e-6));
    NEAR(perf_p2p(2e6, L), 1e-6 + 2e-3);
}

static void test_fit(void **state)
{
    (void)state;
    double n[3] = {1, 2, 3}, t[3] = {3, 5, 7}, a, b;
    assert_int_equal(perf_fit_line(n, t, 3, &a, &b), 0);
    NEAR(a, 1.0);
    NEAR(b, 2.0);
    /* a negative intercept is refitted through the origin */
    double t2[3] = {0.5, 2.5, 4.5};
    assert_int_equal(perf_fit_line(n, t2, 3, &a, &b), 0);
    NEAR(a, 0.0);
    NEAR(b, (0.5 + 5.0 + 13.5) / 14.0);
    double same[2] = {4, 4};
    assert_int_equal(perf_fit_line(same, t, 2, &a, &b), -1);
    assert_int_equal(perf_fit_line(n, t, 1, &a, &b), -1);
    /* the link behind a ring: a = 2 (p-1) alpha, b = 2 (p-1)/p beta */
    struct perf_link l = perf_link_from_ring(4, 6e-6, 1.5e-9);
    NEAR(l.alpha, 1e-6);
    NEAR(l.beta, 1e-9);
}

static void test_pipeline_uniform(void **state)
{
    (void)state;
    char err[256];
    double f[6], b[6], end[6], span, bubble;
    for (int kind = 0; kind < 2; kind++)
        for (int p = 1; p <= 6; p++)
            for (int m = 1; m <= 12; m++) {
                for (int s = 0; s < p; s++)
                    f[s] = 1.0, b[s] = 2.0;
                assert_int_equal(perf_pipeline(kind ? PP_1F1B : PP_GPIPE, p,
                                               m, f, b, 0.0, end, &span,
                                               &bubble, err, sizeof(err)),
                                 0);
                NEAR(span, (m + p - 1) * 3.0);
                NEAR(bubble, pp_bubble_theory(p, m));
            }
}

static void test_pipeline_by_hand(void **state)
{
    (void)state;
    char err[256];
    /* 1F1B, p = 2, m = 2, f = 1, b = 2, transfers 0.5 s.  Stage 0 runs
     * F0 F1 B0 B1, stage 1 F0 B0 F1 B1:
     *   s0: F0 [0,1]  F1 [1,2]                 B0 [5,7]      B1 [8,10]
     *   s1:    F0 [1.5,2.5] B0 [2.5,4.5] F1 [4.5,5.5] B1 [5.5,7.5]
     * (B0's gradient reaches s0 at 5, B1's at 8). */
    double f[2] = {1, 1}, b[2] = {2, 2}, end[2], span, bubble;
    assert_int_equal(perf_pipeline(PP_1F1B, 2, 2, f, b, 0.5, end, &span,
                                   &bubble, err, sizeof(err)), 0);
    NEAR(end[0], 10.0);
    NEAR(end[1], 7.5);
    NEAR(span, 10.0);
    NEAR(bubble, 1.0 - 12.0 / 20.0);
    /* a slow last stage (f 1, b 3 against 1, 1): 1F1B's steady state runs
     * at the slow stage's pace; p = 2, m = 4, no transfer cost:
     *   s1: F0 [1,2] B0 [2,5] F1 [5,6] B1 [6,9] F2 [9,10] B2 [10,13]
     *       F3 [13,14] B3 [14,17];  s0's B3 follows at [17,18] */
    double f2[2] = {1, 1}, b2[2] = {1, 3};
    assert_int_equal(perf_pipeline(PP_1F1B, 2, 4, f2, b2, 0.0, end, &span,
                                   &bubble, err, sizeof(err)), 0);
    NEAR(end[1], 17.0);
    NEAR(span, 18.0);
    NEAR(bubble, 1.0 - (4 * 2.0 + 4 * 4.0) / (2 * 18.0));
    assert_int_equal(perf_pipeline(PP_1F1B, 0, 4, f2, b2, 0.0, end, &span,
                                   &bubble, err, sizeof(err)), -1);
}

static void test_buckets(void **state)
{
    (void)state;
    /* ready at 1, 2, 3 taking 1.5, 0.5, 1; backward ends at 3:
     * [1, 2.5] [2.5, 3] [3, 4] -> 1 s exposed, 3 s busy */
    double ready[3] = {1, 2, 3}, cost[3] = {1.5, 0.5, 1}, busy;
    NEAR(perf_buckets_exposed(3, ready, cost, 3.0, &busy), 1.0);
    NEAR(busy, 3.0);
    /* everything hidden */
    double cheap[3] = {0.1, 0.1, 0.1};
    double early[3] = {0.5, 1.0, 1.5};
    NEAR(perf_buckets_exposed(3, early, cheap, 3.0, NULL), 0.0);
    /* one bucket, ready at the end of backward: all of it exposed */
    double last = 3.0, c = 0.7;
    NEAR(perf_buckets_exposed(1, &last, &c, 3.0, NULL), 0.7);
    NEAR(perf_buckets_exposed(0, NULL, NULL, 3.0, NULL), 0.0);
}

static void test_step(void **state)
{
    (void)state;
    char err[256];
    /* one stage, two micro-batches of f 1, b 2: the schedule ends at 6;
     * the last backward spans [4, 6]; buckets ready 0.5 and 2 s into it
     * take 1 s each: [4.5, 5.5] and [6, 7], 1 s exposed; then 0.1 s of
     * scalar collectives and the 0.5 s optimizer */
    double ready[2] = {0.5, 2.0}, cost[2] = {1.0, 1.0};
    struct perf_stage st = {1.0, 2.0, 2, ready, cost, 0.5};
    struct perf_step_in in = {PP_1F1B, 1, 2, &st, 0.0, 0.0, 0.1, 0};
    struct perf_step_out out;
    assert_int_equal(perf_step(&in, &out, err, sizeof(err)), 0);
    NEAR(out.pipeline, 6.0);
    NEAR(out.step, 7.6);
    NEAR(out.comm_exposed, 1.1);
    NEAR(out.compute, 6.5);
    NEAR(out.bubble, 0.0);
    /* two stages, the tie and the slower stage's optimizer */
    struct perf_stage st2[2] = {{1, 2, 0, NULL, NULL, 0.2},
                                {1, 2, 0, NULL, NULL, 0.3}};
    struct perf_step_in in2 = {PP_1F1B, 2, 4, st2, 0.0, 0.05, 0.0, 0};
    assert_int_equal(perf_step(&in2, &out, err, sizeof(err)), 0);
    NEAR(out.pipeline, 15.0);
    NEAR(out.step, 15.0 + 0.05 + 0.3);
    NEAR(out.bubble, 1.0 / 5.0);
    /* ZeRO-1's gathers that the first forward waits for add to the step
     * and to the exposed communication */
    in.zero = 0.25;
    assert_int_equal(perf_step(&in, &out, err, sizeof(err)), 0);
    NEAR(out.step, 7.6 + 0.25);
    NEAR(out.comm_exposed, 1.1 + 0.25);
    NEAR(out.zero, 0.25);
}

/* ZeRO's formulas by hand: the ring's half, gathers queued (ZeRO-1) and
 * prefetched one ahead (ZeRO-3), and reductions of earlier micro-batches
 * in the buckets' queue. */
static void test_zero(void **state)
{
    (void)state;
    struct perf_link l = {1e-5, 1e-9};
    /* p = 4: 3 alpha + 3/4 n beta */
    NEAR(perf_ring_half(4, 4e6, l), 3e-5 + 0.75 * 4e6 * 1e-9);
    NEAR(perf_ring_half(1, 4e6, l), 0.0);
    /* gathers 1, 1, 1 s before uses 3, 0, 0 s.  Queued: gathers end at
     * 1, 2, 3; uses run [1, 4], [4, 4], [4, 4]: 1 s past the 3 s of
     * compute.  One ahead: the third gather starts with the second use
     * at 4 and ends at 5: 2 s */
    double ag[3] = {1, 1, 1}, use[3] = {3, 0, 0};
    NEAR(perf_gather_exposed(3, ag, use, 0), 1.0);
    NEAR(perf_gather_exposed(3, ag, use, 1), 2.0);
    /* gathers 3 s before uses 2 s: [0,3] use [3,5]; [3,6] use [6,8];
     * [6,9] use [9,11]: 11 - 6 = 5 s either way */
    double slow[3] = {3, 3, 3}, two[3] = {2, 2, 2};
    NEAR(perf_gather_exposed(3, slow, two, 0), 5.0);
    NEAR(perf_gather_exposed(3, slow, two, 1), 5.0);
    /* gathers already there cost nothing */
    double none[3] = {0, 0, 0};
    NEAR(perf_gather_exposed(3, none, two, 1), 0.0);
    /* a reduction ready 2 s before the last backward (an earlier
     * micro-batch) taking 3 s delays one ready at 0.5 to 1; 1 s more
     * runs to 2, past a 1.5 s backward by 0.5 */
    double ready[2] = {-2.0, 0.5}, cost[2] = {3.0, 1.0};
    NEAR(perf_buckets_exposed(2, ready, cost, 1.5, NULL), 0.5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_collectives),
        cmocka_unit_test(test_fit),
        cmocka_unit_test(test_pipeline_uniform),
        cmocka_unit_test(test_pipeline_by_hand),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_zero),
        cmocka_unit_test(test_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
