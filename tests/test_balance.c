/*
 * test_balance.c - parallel/balance.c against independent references:
 *  - data-parallel shares against brute force over every split of up to
 *    12 sequences over up to 4 ranks (the least possible makespan, each
 *    split scored here, max of sequences x seconds), with
 *    hand-computed cases (a rank at half speed takes about a third);
 *  - the re-split: a gain just below its threshold keeps the old split,
 *    one just above moves it (the same best split in both);
 *  - micro-batch sizes: whole, at most mb, as equal as they go;
 *  - the straggler against hand-computed medians and ratios, the
 *    imbalance against hand-computed means;
 *  - stage boundaries from costs measured by calib.c on the model's real
 *    kernels (a byte vocabulary and a 32x larger one) against brute force
 *    over every partition (scored here): the same slowest stage; and the
 *    large vocabulary moves blocks off the last stage;
 *  - stages at different speeds: against brute force, and equal to pp.c's
 *    partition (boundaries and ties) when the speeds are equal.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "balance.h"
#include "calib.h"
#include "peak.h"
#include "rng.h"

/* A split's makespan computed here, not by balance.c: the slowest rank's
 * time, max over ranks of its sequences times its seconds per sequence
 * (every t[i] here is valid). */
static double ref_makespan(int n, const double *t, const int *sh)
{
    double m = 0.0;
    for (int i = 0; i < n; i++)
        m = sh[i] * t[i] > m ? sh[i] * t[i] : m;
    return m;
}

/* The least makespan over every split of total into n parts >= 1. */
static double brute_shares(int n, const double *t, int total, int i,
                           int *cur)
{
    if (i == n - 1) {
        cur[i] = total;
        return total >= 1 ? ref_makespan(n, t, cur) : INFINITY;
    }
    double best = INFINITY;
    for (int k = 1; k <= total - (n - 1 - i); k++) {
        cur[i] = k;
        double m = brute_shares(n, t, total - k, i + 1, cur);
        best = m < best ? m : best;
    }
    return best;
}

static void test_shares_brute_force(void **state)
{
    (void)state;
    int cur[4], sh[4];
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + trial % 4;
        double t[4];
        for (int i = 0; i < n; i++)
            t[i] = 0.1 + 3.0 * rng_uniform(77, (uint64_t)(trial * 4 + i));
        for (int total = n; total <= 12; total++) {
            assert_int_equal(balance_shares(n, t, total, sh), 0);
            int sum = 0;
            for (int i = 0; i < n; i++) {
                assert_true(sh[i] >= 1);
                sum += sh[i];
            }
            assert_int_equal(sum, total);
            double want = brute_shares(n, t, total, 0, cur);
            assert_true(fabs(ref_makespan(n, t, sh) - want) <= 1e-12 * want);
            /* and balance.c's own figure of the split agrees */
            assert_true(fabs(balance_makespan(n, t, sh) -
                             ref_makespan(n, t, sh)) <= 1e-12 * want);
        }
    }
    /* rank 1 at half speed: 16 sequences go 11 : 5 (11 t vs 10 t) */
    double half[2] = {1.0, 2.0};
    assert_int_equal(balance_shares(2, half, 16, sh), 0);
    assert_int_equal(sh[0], 11);
    assert_int_equal(sh[1], 5);
    /* equal speeds: the equal split, extras to the lower ranks */
    double eq[3] = {1.0, 1.0, 1.0};
    assert_int_equal(balance_shares(3, eq, 8, sh), 0);
    assert_int_equal(sh[0], 3);
    assert_int_equal(sh[1], 3);
    assert_int_equal(sh[2], 2);
    balance_shares_equal(3, 8, cur);
    assert_memory_equal(cur, sh, 3 * sizeof(int));
    /* a rate that is not usable counts as the slowest usable one */
    double bad[3] = {1.0, NAN, 2.0};
    assert_int_equal(balance_shares(3, bad, 10, sh), 0);
    assert_int_equal(sh[1], sh[2]);
    assert_int_equal(balance_shares(3, eq, 2, sh), -1);
    assert_int_equal(balance_first((int[]){3, 5, 2}, 2), 8);
}

static void test_rebalance(void **state)
{
    (void)state;
    /* The threshold 0.05 against two inputs whose best split is the same,
     * 9 : 7, and differs from the current 8 : 8.  Rank 1 at 1.15 s: 8 : 8
     * takes 9.2 s, 9 : 7 takes 9 s (max 9, 8.05), a gain of 2.2% < 5%:
     * the old split is kept.  Rank 1 at 1.2 s: 9.6 s against 9 s (max 9,
     * 8.4), a gain of 6.25% > 5%: the split moves.  Makespans by hand. */
    int cur[2] = {8, 8}, next[2], best[2];
    double below[2] = {1.0, 1.15}, above[2] = {1.0, 1.2};
    assert_int_equal(balance_shares(2, below, 16, best), 0);
    assert_int_equal(best[0], 9); /* so keeping 8 : 8 is the threshold's */
    assert_int_equal(best[1], 7);
    assert_true(1.0 - 9.0 / 9.2 < 0.05 && 1.0 - 9.0 / 9.6 > 0.05);
    next[0] = next[1] = -1;
    assert_int_equal(balance_rebalance(2, below, cur, 16, 0.05, next), 0);
    assert_int_equal(next[0], 8);
    assert_int_equal(next[1], 8);
    assert_int_equal(balance_rebalance(2, above, cur, 16, 0.05, next), 1);
    assert_int_equal(next[0], 9);
    assert_int_equal(next[1], 7);
    /* the same input below the threshold moves once the threshold is
     * lowered under its gain (0.02 < 2.2%) */
    assert_int_equal(balance_rebalance(2, below, cur, 16, 0.02, next), 1);
    assert_int_equal(next[0], 9);
    double slow[2] = {1.0, 3.0};
    assert_int_equal(balance_rebalance(2, slow, cur, 16, 0.05, next), 1);
    assert_int_equal(next[0], 12);
    assert_int_equal(next[1], 4);
    /* already the best split: nothing to do */
    assert_int_equal(balance_rebalance(2, slow, next, 16, 0.05, cur), 0);
    assert_int_equal(cur[0], 12);
}

static void test_micro_batches(void **state)
{
    (void)state;
    int sz[64];
    for (int nseq = 0; nseq <= 40; nseq++)
        for (int mb = 1; mb <= 9; mb++) {
            int k = balance_micro_batches(nseq, mb, sz), sum = 0, lo = 1 << 30,
                hi = 0;
            assert_int_equal(k, (nseq + mb - 1) / mb);
            for (int i = 0; i < k; i++) {
                assert_true(sz[i] >= 1 && sz[i] <= mb);
                sum += sz[i];
                lo = sz[i] < lo ? sz[i] : lo;
                hi = sz[i] > hi ? sz[i] : hi;
            }
            assert_int_equal(sum, nseq);
            if (k)
                assert_true(hi - lo <= 1);
        }
    assert_int_equal(balance_micro_batches(11, 8, sz), 2);
    assert_int_equal(sz[0], 6);
    assert_int_equal(sz[1], 5);
}

static void test_straggler(void **state)
{
    (void)state;
    double r;
    int s;
    assert_int_equal(balance_straggler(4, (double[]){1, 1, 1, 2}, 1.2, &r,
                                       &s), 3);
    assert_true(fabs(r - 2.0) < 1e-12);
    /* two ranks: the median is the mean, 2 / 1.5 */
    assert_int_equal(balance_straggler(2, (double[]){1, 2}, 1.2, &r, &s), 1);
    assert_true(fabs(r - 2.0 / 1.5) < 1e-12);
    assert_int_equal(balance_straggler(2, (double[]){1, 1.1}, 1.2, &r, &s),
                     -1);
    assert_int_equal(s, 1);
    assert_int_equal(balance_straggler(3, (double[]){2, 1, 2}, 1.2, &r, &s),
                     -1);
    assert_int_equal(s, 0); /* ties: the lowest rank */
    assert_int_equal(balance_straggler(1, (double[]){5}, 1.2, &r, &s), -1);
    assert_true(fabs(r - 1.0) < 1e-12);
    assert_int_equal(balance_straggler(2, (double[]){0, 0}, 1.2, &r, &s),
                     -1);
}

static void test_imbalance(void **state)
{
    (void)state;
    /* the slowest (3) minus each, averaged: (2 + 0 + 1 + 3) / 4 */
    assert_true(fabs(balance_imbalance(4, (double[]){1, 3, 2, 0}) - 1.5) <
                1e-12);
    /* two ranks: half the difference, whichever is slower */
    assert_true(fabs(balance_imbalance(2, (double[]){5, 2}) - 1.5) < 1e-12);
    assert_true(fabs(balance_imbalance(2, (double[]){2, 5}) - 1.5) < 1e-12);
    assert_true(balance_imbalance(3, (double[]){4, 4, 4}) == 0.0);
    assert_true(balance_imbalance(1, (double[]){7}) == 0.0);
    assert_true(balance_imbalance(0, NULL) == 0.0);
}

/* The least slowest-stage cost over every partition (recursive). */
static double brute_stages(int n, int p, double blk, double emb, double head,
                           int s, int l0)
{
    if (s == p - 1) {
        double c = (n - l0) * blk + head + (s == 0 ? emb : 0.0);
        return n - l0 >= 1 ? c : INFINITY;
    }
    double best = INFINITY;
    for (int l1 = l0 + 1; l1 <= n - (p - 1 - s); l1++) {
        double c = (l1 - l0) * blk + (s == 0 ? emb : 0.0);
        double rest = brute_stages(n, p, blk, emb, head, s + 1, l1);
        double m = c > rest ? c : rest;
        best = m < best ? m : best;
    }
    return best;
}

static double slowest(int p, const int *b, double blk, double emb,
                      double head)
{
    double m = 0.0;
    for (int s = 0; s < p; s++) {
        double c = (b[s + 1] - b[s]) * blk + (s == 0 ? emb : 0.0) +
                   (s == p - 1 ? head : 0.0);
        m = c > m ? c : m;
    }
    return m;
}

static void test_stages_from_calibration(void **state)
{
    (void)state;
    struct gpt_config gc = {.n_layer = 8, .n_embd = 64, .n_head = 4,
                            .n_kv_head = 4, .seq_len = 32,
                            .vocab_size = 256};
    char err[256];
    int b[9], last_blocks[2];
    for (int v = 0; v < 2; v++) {
        struct calib_costs cc;
        gc.vocab_size = v ? 8192 : 256;
        assert_int_equal(calib_measure(&gc, 2, 0.3, &cc, err, sizeof(err)),
                         0);
        for (int p = 1; p <= 4; p++)
            for (int n = p; n <= 8; n++) {
                assert_int_equal(balance_stages(n, p, cc.block_s, cc.embed_s,
                                                cc.head_s, b, err,
                                                sizeof(err)), 0);
                assert_int_equal(b[0], 0);
                assert_int_equal(b[p], n);
                for (int s = 0; s < p; s++)
                    assert_true(b[s + 1] > b[s]);
                double want = brute_stages(n, p, cc.block_s, cc.embed_s,
                                           cc.head_s, 0, 0);
                assert_true(fabs(slowest(p, b, cc.block_s, cc.embed_s,
                                         cc.head_s) - want) <= 1e-12 * want);
            }
        assert_int_equal(balance_stages(8, 2, cc.block_s, cc.embed_s,
                                        cc.head_s, b, err, sizeof(err)), 0);
        last_blocks[v] = b[2] - b[1];
    }
    /* the head of a 8192-token vocabulary costs several blocks */
    assert_true(last_blocks[1] < last_blocks[0]);
    assert_int_equal(balance_stages(4, 2, -1.0, 0, 0, b, err, sizeof(err)),
                     -1);
    assert_int_equal(balance_stages(2, 3, 1.0, 0, 0, b, err, sizeof(err)),
                     -1);
    balance_stages_from_counts(4, (int[]){4, 4, 3, 1}, b);
    assert_int_equal(b[2], 8);
    assert_int_equal(b[4], 12);
}

/* The least slowest stage over every partition, stage s's blocks at
 * blk[s] (recursive). */
static double brute_speeds(int n, int p, const double *blk, double emb,
                           double head, int s, int l0)
{
    if (s == p - 1)
        return n - l0 >= 1 ? (n - l0) * blk[s] + head + (s == 0 ? emb : 0)
                           : INFINITY;
    double best = INFINITY;
    for (int l1 = l0 + 1; l1 <= n - (p - 1 - s); l1++) {
        double c = (l1 - l0) * blk[s] + (s == 0 ? emb : 0.0);
        double rest = brute_speeds(n, p, blk, emb, head, s + 1, l1);
        double m = c > rest ? c : rest;
        best = m < best ? m : best;
    }
    return best;
}

/* A partition's slowest stage computed here: stage s costs its blocks
 * times blk[s], plus emb on stage 0 and head on stage p-1; the max. */
static double ref_slowest_speeds(int p, const int *b, const double *blk,
                                 double emb, double head)
{
    double m = 0.0;
    for (int s = 0; s < p; s++) {
        double c = (b[s + 1] - b[s]) * blk[s] + (s == 0 ? emb : 0.0) +
                   (s == p - 1 ? head : 0.0);
        m = c > m ? c : m;
    }
    return m;
}

static void test_stages_speeds(void **state)
{
    (void)state;
    char err[256];
    int b[9], u[9];
    for (int trial = 0; trial < 300; trial++) {
        int p = 1 + trial % 4, n = p + (trial / 4) % (9 - p);
        double blk[4], emb = rng_uniform(5, (uint64_t)trial),
                       head = 6.0 * rng_uniform(6, (uint64_t)trial);
        for (int s = 0; s < p; s++)
            blk[s] = 0.2 + 2.0 * rng_uniform(7, (uint64_t)(4 * trial + s));
        assert_int_equal(balance_stages_speeds(n, p, blk, emb, head, b, err,
                                               sizeof(err)), 0);
        assert_int_equal(b[0], 0);
        assert_int_equal(b[p], n);
        for (int s = 0; s < p; s++)
            assert_true(b[s + 1] > b[s]);
        double want = brute_speeds(n, p, blk, emb, head, 0, 0);
        assert_true(fabs(ref_slowest_speeds(p, b, blk, emb, head) - want) <=
                    1e-12 * want);
        assert_true(fabs(balance_stages_slowest(p, b, blk, emb, head) -
                         ref_slowest_speeds(p, b, blk, emb, head)) <=
                    1e-12 * want);
        /* equal speeds: pp.c's partition, boundaries and ties alike */
        for (int s = 1; s < p; s++)
            blk[s] = blk[0];
        assert_int_equal(balance_stages_speeds(n, p, blk, emb, head, b, err,
                                               sizeof(err)), 0);
        assert_int_equal(balance_stages(n, p, blk[0], emb, head, u, err,
                                        sizeof(err)), 0);
        assert_memory_equal(b, u, (size_t)(p + 1) * sizeof(int));
    }
    /* the second of two stages at half speed takes a third of the blocks */
    assert_int_equal(balance_stages_speeds(9, 2, (double[]){1.0, 2.0}, 0.0,
                                           0.0, b, err, sizeof(err)), 0);
    assert_int_equal(b[1], 6);
    assert_int_equal(balance_stages_speeds(2, 3, (double[]){1, 1, 1}, 0, 0,
                                           b, err, sizeof(err)), -1);
}

int main(void)
{
    threads_set(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shares_brute_force),
        cmocka_unit_test(test_rebalance),
        cmocka_unit_test(test_micro_batches),
        cmocka_unit_test(test_straggler),
        cmocka_unit_test(test_imbalance),
        cmocka_unit_test(test_stages_from_calibration),
        cmocka_unit_test(test_stages_speeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
