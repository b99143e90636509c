/*
 * test_nonfinite.c - the loss window's z-score against a hand
 * computation, and the non-finite policy as a state machine: skip stops
 * after nonfinite_patience in a row, a good step resets the count, abort
 * stops at once, rollback asks for a rollback, records the run for the
 * replay (sorted, no duplicates) and gives up after patience rollbacks
 * to the same checkpoint.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "nonfinite.h"

static void test_window(void **state)
{
    (void)state;
    struct loss_window w;
    memset(&w, 0, sizeof(w));
    for (int i = 0; i < NF_MIN_SAMPLES - 1; i++) {
        loss_window_add(&w, i % 2 ? 3.0 : 1.0);
        assert_true(isnan(loss_window_z(&w, 2.0)));
    }
    loss_window_add(&w, 3.0); /* 20 values: ten 1s, ten 3s: mean 2, sd 1 */
    assert_true(fabs(loss_window_z(&w, 2.0)) < 1e-15);
    assert_true(fabs(loss_window_z(&w, 5.0) - 3.0) < 1e-12);
    assert_true(fabs(loss_window_z(&w, 0.5) + 1.5) < 1e-12);
    assert_true(isnan(loss_window_z(&w, NAN)));
    /* the oldest fall out after NF_WINDOW: all 7s now, sd 0 */
    for (int i = 0; i < NF_WINDOW; i++)
        loss_window_add(&w, 7.0);
    assert_int_equal(w.n, NF_WINDOW);
    assert_true(loss_window_z(&w, 7.0) == 0.0);
    assert_true(isinf(loss_window_z(&w, 7.5)) && loss_window_z(&w, 7.5) > 0);
}

static void test_skip_and_abort(void **state)
{
    (void)state;
    struct nf_state s;
    enum nf_policy p;
    assert_int_equal(nf_policy_parse("skip", &p), 0);
    assert_int_equal(p, NF_SKIP);
    assert_int_equal(nf_policy_parse("rollback", &p), 0);
    assert_int_equal(p, NF_ROLLBACK);
    assert_int_equal(nf_policy_parse("retry", &p), -1);
    nf_init(&s, NF_SKIP, 3);
    assert_int_equal(nf_after_step(&s, 1, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 2, NF_GRAD), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 3, 0), NF_CONTINUE); /* resets */
    assert_int_equal(nf_after_step(&s, 4, NF_SPIKE), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 5, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 6, NF_REPLAY), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 7, NF_LOSS), NF_DO_STOP);
    assert_int_equal(s.run_first, 4);
    assert_int_equal(s.run, 3);
    nf_free(&s);
    nf_init(&s, NF_ABORT, 3);
    assert_int_equal(nf_after_step(&s, 1, 0), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 2, NF_GRAD), NF_DO_STOP);
    nf_free(&s);
}

static void test_rollback(void **state)
{
    (void)state;
    struct nf_state s;
    nf_init(&s, NF_ROLLBACK, 2);
    assert_int_equal(nf_after_step(&s, 7, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 8, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 6), 0);
    assert_true(nf_replay_skip(&s, 7) && nf_replay_skip(&s, 8));
    assert_false(nf_replay_skip(&s, 6) || nf_replay_skip(&s, 9));
    /* replayed: 7, 8 skipped by plan, then 10 and 11 fail */
    assert_int_equal(nf_after_step(&s, 7, NF_REPLAY), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 9, 0), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 10, NF_GRAD), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 11, NF_GRAD), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 6), 0); /* second to step 6 */
    assert_int_equal(s.nskip, 4);
    int64_t want[4] = {7, 8, 10, 11};
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.skip[i], want[i]);
    assert_int_equal(nf_after_step(&s, 12, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 13, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 6), 1); /* a third: give up */
    /* a newer checkpoint after a good step starts the count again */
    assert_int_equal(nf_after_step(&s, 14, 0), NF_CONTINUE);
    assert_int_equal(nf_rolled_back(&s, 9), 0);
    assert_int_equal(s.rb_count, 1);
    nf_free(&s);

    /* no good step between rollbacks: repeats even to newer checkpoints
     * (written while steps failed or were skipped by plan: the same
     * weights); a diverged run stops instead of rolling forward */
    nf_init(&s, NF_ROLLBACK, 2);
    assert_int_equal(nf_after_step(&s, 3, 0), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 4, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 5, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 4), 0);
    assert_int_equal(nf_after_step(&s, 5, NF_REPLAY), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 6, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 7, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 6), 0);
    assert_int_equal(s.rb_count, 2);
    assert_int_equal(nf_after_step(&s, 8, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 9, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 8), 1);
    nf_free(&s);

    /* a run of failures around replayed steps: fail 7 and 8, roll back
     * to 5; then 6 fails, 7 and 8 are skipped by plan (they do not end
     * the run), 9 fails: 6 and 9 are listed, not 6 and 7 */
    nf_init(&s, NF_ROLLBACK, 2);
    assert_int_equal(nf_after_step(&s, 7, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 8, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 5), 0);
    assert_int_equal(nf_after_step(&s, 6, NF_GRAD), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 7, NF_REPLAY), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 8, NF_REPLAY), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 9, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 5), 0);
    int64_t want2[4] = {6, 7, 8, 9};
    assert_int_equal(s.nskip, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.skip[i], want2[i]);
    /* a later run below an earlier one (an older checkpoint), after a
     * good step (else a third rollback in a row gives up): sorted */
    assert_int_equal(nf_after_step(&s, 10, 0), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 2, NF_LOSS), NF_CONTINUE);
    assert_int_equal(nf_after_step(&s, 3, NF_LOSS), NF_DO_ROLLBACK);
    assert_int_equal(nf_rolled_back(&s, 1), 0);
    int64_t want3[6] = {2, 3, 6, 7, 8, 9};
    assert_int_equal(s.nskip, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(s.skip[i], want3[i]);
    assert_true(nf_replay_skip(&s, 3) && !nf_replay_skip(&s, 4));

    char why[128];
    nf_reason(NF_LOSS | NF_SPIKE, why, (int)sizeof(why));
    assert_string_equal(why, "non-finite loss, loss spike");
    nf_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_skip_and_abort),
        cmocka_unit_test(test_rollback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
