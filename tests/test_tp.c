/*
 * test_tp.c - tensor parallelism against independent references:
 *  - tp_allreduce_sum: the sum of every rank's buffer (computed here in
 *    double from the same generator) for n = 0, 1, 7, 1000, 100003, and
 *    the same bits on every rank;
 *  - tp_sum_double: the same bits on every rank;
 *  - the GPT sharded over all ranks (GQA, sliding window, dropout) against
 *    the unsharded model on the same parameters: the loss, and every
 *    gradient equal to its hyperslab of the unsharded gradient; the
 *    replicated gradients identical bit for bit on every tp rank.
 * Runs under mpirun -np 1, 2, 3, 4 (the world is the tp group).
 */
#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/model.h"
#include "rng.h"
#include "tp.h"

static int world_rank, world_size;

static float value_of(int rank, size_t i)
{
    return rng_normal(1234 + (uint64_t)rank, i);
}

/* 1 if buf (bytes) has the same bits as rank 0's copy. */
static int same_bits_everywhere(const void *buf, size_t bytes)
{
    char *ref = malloc(bytes ? bytes : 1);
    assert_non_null(ref);
    memcpy(ref, buf, bytes);
    MPI_Bcast(ref, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    int same = memcmp(ref, buf, bytes) == 0, all = 0;
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    free(ref);
    return all;
}

static void test_allreduce_sum(void **state)
{
    (void)state;
    struct tp_ctx t;
    char err[256];
    /* reserve little, so that the large case grows the scratch */
    assert_int_equal(tp_ctx_init(&t, MPI_COMM_WORLD, 0, 16, err,
                                 sizeof(err)), 0);
    const size_t ns[] = {0, 1, 7, 1000, 100003};
    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        size_t n = ns[k];
        float *buf = malloc((n ? n : 1) * sizeof(float));
        assert_non_null(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = value_of(world_rank, i);
        tp_allreduce_sum(buf, n, &t);
        for (size_t i = 0; i < n; i++) {
            double ref = 0.0;
            for (int r = 0; r < world_size; r++)
                ref += value_of(r, i);
            assert_true(fabs(buf[i] - ref) <= 1e-5 * (1.0 + fabs(ref)));
        }
        assert_true(same_bits_everywhere(buf, n * sizeof(float)));
        free(buf);
    }
    double v = 0.1 * (world_rank + 1) + 1e-9 * world_rank, ref = 0.0;
    for (int r = 0; r < world_size; r++)
        ref += 0.1 * (r + 1) + 1e-9 * r;
    double s = tp_sum_double(v, &t);
    assert_true(fabs(s - ref) <= 1e-12);
    assert_true(same_bits_everywhere(&s, sizeof(s)));
    tp_ctx_free(&t);
}

/* Copy the hyperslab of tensor d (of the sharded table) between the full
 * arena (global layout) and the shard arena. */
static void slab_copy(const struct tensor_table *ft, const float *full,
                      const struct tensor_desc *d, float *shard)
{
    int fi = tensor_table_find(ft, d->name);
    assert_true(fi >= 0);
    const float *src = full + ft->t[fi].off;
    int64_t rows = d->ndim == 2 ? d->count[0] : 1;
    int64_t cols = d->ndim == 2 ? d->count[1] : d->count[0];
    int64_t r0 = d->ndim == 2 ? d->start[0] : 0;
    int64_t c0 = d->ndim == 2 ? d->start[1] : d->start[0];
    int64_t gcols = d->ndim == 2 ? d->gshape[1] : d->gshape[0];
    for (int64_t r = 0; r < rows; r++)
        memcpy(shard + d->off + r * cols, src + (r0 + r) * gcols + c0,
               (size_t)cols * sizeof(float));
}

static void test_sharded_model(void **state)
{
    (void)state;
    int P = world_size;
    struct gpt_config c = {.n_layer = 2, .n_embd = 24, .n_head = 12,
                           .n_kv_head = P == 4 ? 4 : 6, .seq_len = 6,
                           .vocab_size = 11, .attn_window = 3,
                           .dropout = 0.2f};
    struct gpt full, sh;
    struct gpt_acts af, as;
    struct tp_ctx t;
    char err[256];
    int B = 2, T = 6;
    assert_int_equal(gpt_config_check(&c, P, err, sizeof(err)), 0);
    assert_int_equal(gpt_init(&full, &c, 1, 0, 0, c.n_layer, 7, err,
                              sizeof(err)), 0);
    assert_int_equal(gpt_init(&sh, &c, P, world_rank, 0, c.n_layer, 7, err,
                              sizeof(err)), 0);
    assert_int_equal(tp_ctx_init(&t, MPI_COMM_WORLD, 0,
                                 (size_t)B * T * c.n_embd, err, sizeof(err)),
                     0);
    sh.tpc = &t;
    /* non-trivial LayerNorms and biases: perturb the full model and give
     * the shard its hyperslabs */
    for (size_t i = 0; i < full.tt.total; i++)
        full.params[i] += 0.3f * rng_normal(99, i);
    for (int i = 0; i < sh.tt.n; i++)
        slab_copy(&full.tt, full.params, &sh.tt.t[i], sh.params);
    assert_int_equal(gpt_acts_init(&af, &full, B, T), 0);
    assert_int_equal(gpt_acts_init(&as, &sh, B, T), 0);
    int32_t inp[12], tgt[12];
    for (size_t i = 0; i < 12; i++) {
        inp[i] = (int32_t)(rng_u64(1, i) % (uint64_t)c.vocab_size);
        tgt[i] = (int32_t)(rng_u64(2, i) % (uint64_t)c.vocab_size);
    }
    struct gpt_pos pos = {.step = 3, .seq0 = 5, .seed = 11, .train = 1};
    gpt_zero_grad(&full);
    gpt_zero_grad(&sh);
    double lf = gpt_forward(&full, &af, inp, tgt, &pos);
    double ls = gpt_forward(&sh, &as, inp, tgt, &pos);
    assert_true(fabs(lf - ls) <= 1e-5 * fabs(lf));
    gpt_backward(&full, &af, 1.0f / 12.0f, &pos);
    gpt_backward(&sh, &as, 1.0f / 12.0f, &pos);

    /* every shard gradient against its slab of the full gradient */
    float *want = tensor_arena_alloc(sh.tt.total);
    assert_non_null(want);
    for (int i = 0; i < sh.tt.n; i++) {
        const struct tensor_desc *d = &sh.tt.t[i];
        slab_copy(&full.tt, full.grads, d, want);
        float gmax = 0.0f;
        for (size_t j = 0; j < d->numel; j++)
            gmax = fmaxf(gmax, fabsf(want[d->off + j]));
        for (size_t j = 0; j < d->numel; j++) {
            float diff = fabsf(sh.grads[d->off + j] - want[d->off + j]);
            if (diff > 1e-5f * (1.0f + gmax))
                fail_msg("%s[%zu]: tp %g, serial %g (tp rank %d of %d)",
                         d->name, j, sh.grads[d->off + j], want[d->off + j],
                         world_rank, P);
        }
        if (d->tp_dim < 0)
            assert_true(same_bits_everywhere(sh.grads + d->off,
                                             d->numel * sizeof(float)));
    }
    assert_true(sh.op_time[OPK_TP_COMM] >= 0.0);
    free(want);
    gpt_acts_free(&af);
    gpt_acts_free(&as);
    gpt_free(&full);
    gpt_free(&sh);
    tp_ctx_free(&t);
}

int main(void)
{
    MPI_Init(NULL, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allreduce_sum),
        cmocka_unit_test(test_sharded_model),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return rc;
}
