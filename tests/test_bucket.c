/*
 * test_bucket.c - gradient buckets: the plan (adjacent tensors, size cap,
 * production order), and reductions that start as tensors become final
 * and progress while "backward" continues, against MPI_Allreduce.
 * Runs under mpirun at 1..4 ranks.
 */
#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bucket.h"
#include "shm.h"

static int rank, size;

/* Tensors of a fake model in arena order; production order is reversed. */
#define NT 7
static const size_t sizes[NT] = {1000, 24, 4096, 4096, 24, 70000, 13};

static void layout(struct bucket_tensor *t)
{
    size_t off[NT], o = 0;
    for (int i = 0; i < NT; i++) {
        off[i] = o;
        o += sizes[i];
    }
    for (int p = 0; p < NT; p++) { /* production = reverse arena order */
        int i = NT - 1 - p;
        t[p].off = off[i];
        t[p].numel = sizes[i];
        t[p].rows = sizes[i] == 4096 ? 64 : sizes[i];
        t[p].cols = sizes[i] == 4096 ? 64 : 0;
    }
}

static size_t total(void)
{
    size_t n = 0;
    for (int i = 0; i < NT; i++)
        n += sizes[i];
    return n;
}

static void test_plan(void **state)
{
    (void)state;
    struct comm_group g;
    struct bucketer bk;
    struct bucket_tensor t[NT];
    char err[256];
    layout(t);
    float *grads = calloc(total(), sizeof(float));
    assert_int_equal(comm_group_init(&g, MPI_COMM_WORLD, 0), 0);
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 40000, "ring",
                                   NULL, "none", 0, 1, err, sizeof(err)), 0);
    /* every tensor in exactly one bucket; buckets cover contiguous ranges
     * of consecutive tensors and respect the cap unless a single tensor
     * is larger */
    size_t covered = 0;
    for (int b = 0; b < bk.nb; b++) {
        size_t sum = 0;
        for (int p = bk.b[b].t0; p < bk.b[b].t1; p++) {
            assert_int_equal(bk.tensor_bucket[p], b);
            sum += t[p].numel;
            assert_true(t[p].off >= bk.b[b].off &&
                        t[p].off + t[p].numel <= bk.b[b].off + bk.b[b].n);
        }
        assert_int_equal(sum, bk.b[b].n);
        if (bk.b[b].t1 - bk.b[b].t0 > 1)
            assert_true(bk.b[b].n * sizeof(float) <= 40000);
        covered += sum;
    }
    assert_int_equal(covered, total());
    /* production order 13, 70000, 24, 4096, 4096, 24, 1000 floats with a
     * 10000-float cap: [13] [70000] [24 4096 4096 24 1000] */
    assert_int_equal(bk.nb, 3);
    assert_int_equal(bk.b[2].n, 9240);
    bucketer_free(&bk);
    /* a huge cap: one bucket */
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 1 << 30, "ring",
                                   NULL, "none", 0, 1, err, sizeof(err)), 0);
    assert_int_equal(bk.nb, 1);
    bucketer_free(&bk);
    /* bad names */
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 1 << 20, "tree",
                                   NULL, "none", 0, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "tree"));
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 1 << 20, "ring",
                                   NULL, "zip", 0, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "zip"));
    comm_group_free(&g);
    free(grads);
}

static void fill(float *x, size_t n, int r, int step)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((int)((i * 31 + (size_t)r * 7 + (size_t)step) % 64) -
                       32) * 0.25f;
}

/* Mark tensors ready in production order with progress in between, as
 * backward does; the result must equal MPI_Allreduce (exact: the inputs
 * are small multiples of 1/4). */
static void run_algo_on(const char *algo, int shm)
{
    struct comm_group g;
    struct comm_shm sh;
    struct bucketer bk;
    struct bucket_tensor t[NT];
    char err[256];
    size_t n = total();
    layout(t);
    float *own = malloc(n * sizeof(float)), *grads = own;
    float *want = malloc(n * sizeof(float));
    /* shm: one node, the gradients in the group's shared segments */
    assert_int_equal(comm_group_init(&g, MPI_COMM_WORLD, shm ? 0 : rank / 2),
                     0);
    if (shm) {
        assert_int_equal(comm_shm_init(&sh, &g, n, NULL, err, sizeof err), 0);
        g.shm = &sh;
        grads = sh.buf[rank];
    }
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 20000, algo, NULL,
                                   "none", 0, 1, err, sizeof(err)), 0);
    /* auto takes shm for every bucket exactly when the gradients are in
     * the segments */
    for (int i = 0; i < bk.nb; i++)
        assert_int_equal(strcmp(bk.b[i].algo->name, "shm") == 0,
                         shm || strcmp(algo, "shm") == 0);
    for (int step = 0; step < 3; step++) {
        fill(grads, n, rank, step);
        memcpy(want, grads, n * sizeof(float));
        MPI_Allreduce(MPI_IN_PLACE, want, (int)n, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        bucketer_begin(&bk, step);
        int early = 0; /* buckets started while "backward" still runs */
        for (int p = 0; p < NT; p++) {
            if (p == NT - 1)
                for (int i = 0; i < bk.nb; i++)
                    early += bk.b[i].started;
            assert_int_equal(bucketer_ready(&bk, p), 0);
            assert_int_equal(bucketer_progress(&bk), 0);
        }
        /* every bucket but the one the last tensor completes started
         * before backward's end: the reduction overlaps it */
        assert_true(bk.nb > 1);
        assert_int_equal(early, bk.nb - 1);
        assert_int_equal(bucketer_wait(&bk), 0);
        assert_memory_equal(grads, want, n * sizeof(float));
        if (size > 1)
            assert_true(bk.wire_bytes > 0);
    }
    bucketer_free(&bk);
    if (shm)
        comm_shm_free(&sh);
    comm_group_free(&g);
    free(own);
    free(want);
}

static void run_algo(const char *algo)
{
    run_algo_on(algo, 0);
}

/* auto over gradients in shared segments: shm for every bucket, the
 * same sums; shm without segments refused at init */
static void test_reduce_shm(void **state)
{
    (void)state;
    run_algo_on("auto", 1);
    run_algo_on("shm", 1);
    struct comm_group g;
    struct bucketer bk;
    struct bucket_tensor t[NT];
    char err[256] = "";
    float *grads = calloc(total(), sizeof(float));
    layout(t);
    assert_int_equal(comm_group_init(&g, MPI_COMM_WORLD, 0), 0);
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 20000, "shm", NULL,
                                   "none", 0, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "allreduce=shm: the gradients are not in "
                                "shared memory"));
    comm_group_free(&g);
    free(grads);
}

static void test_reduce_mpi(void **s) { (void)s; run_algo("mpi"); }
static void test_reduce_ring(void **s) { (void)s; run_algo("ring"); }
static void test_reduce_rhd(void **s) { (void)s; run_algo("rhd"); }
static void test_reduce_hier(void **s) { (void)s; run_algo("hier"); }
static void test_reduce_auto(void **s) { (void)s; run_algo("auto"); }

/* Compression starts after compress_warmup dense steps; with error
 * feedback the residual is the per-rank state the checkpoint saves. */
static void test_compress_warmup(void **state)
{
    (void)state;
    struct comm_group g;
    struct bucketer bk;
    struct bucket_tensor t[NT];
    char err[256];
    size_t n = total();
    layout(t);
    float *grads = malloc(n * sizeof(float));
    float *want = malloc(n * sizeof(float));
    assert_int_equal(comm_group_init(&g, MPI_COMM_WORLD, 0), 0);
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 1 << 20, "ring",
                                   NULL, "topk:0.1", 2, 1, err, sizeof(err)),
                     0);
    for (int step = 0; step < 3; step++) {
        fill(grads, n, rank, step);
        memcpy(want, grads, n * sizeof(float));
        MPI_Allreduce(MPI_IN_PLACE, want, (int)n, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        bucketer_begin(&bk, step);
        for (int p = 0; p < NT; p++)
            bucketer_ready(&bk, p);
        assert_int_equal(bucketer_wait(&bk), 0);
        int dense = memcmp(grads, want, n * sizeof(float)) == 0;
        assert_int_equal(bk.compress_now, step >= 2);
        if (step < 2)
            assert_true(dense); /* warm-up: exact */
        else
            assert_false(dense); /* top 10%: not the dense sum */
    }
    float *p;
    size_t sn;
    bucketer_state(&bk, 0, &p, &sn);
    assert_true(sn >= bk.b[0].n && p != NULL);
    bucketer_free(&bk);
    comm_group_free(&g);
    free(grads);
    free(want);
}

/* 1-bit Adam's momentum mode: after the dense warm-up step, each rank
 * reduces x = (beta1 / p) m + (1 - beta1) g compressed, so the result is
 * the sum over ranks of the codec's round trip of each rank's x (the
 * residual starts at 0), and local_sumsq is this rank's sum g^2.  The
 * reference: x formed here, the codec's local round trip per bucket,
 * MPI_Allreduce. */
static void test_momentum_mode(void **state)
{
    (void)state;
    struct comm_group g;
    struct bucketer bk;
    struct bucket_tensor t[NT];
    char err[256];
    size_t n = total();
    layout(t);
    float *grads = malloc(n * sizeof(float)), *mom = malloc(n * sizeof(float));
    float *want = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float));
    assert_int_equal(comm_group_init(&g, MPI_COMM_WORLD, 0), 0);
    assert_int_equal(bucketer_init(&bk, &g, grads, t, NT, 1 << 16, "ring",
                                   NULL, "sign", 1, 1, err, sizeof(err)), 0);
    const float b1 = 0.9f;
    bucketer_set_momentum(&bk, mom, b1);
    for (size_t i = 0; i < n; i++)
        mom[i] = (float)sin(0.01 * (double)i); /* the same on every rank */
    for (int step = 0; step < 2; step++) {
        fill(grads, n, rank, step);
        double sq = 0.0;
        for (size_t i = 0; i < n; i++) {
            sq += (double)grads[i] * grads[i];
            x[i] = b1 / (float)size * mom[i] + (1.0f - b1) * grads[i];
        }
        if (step == 0) { /* warm-up: the gradient, dense */
            memcpy(want, grads, n * sizeof(float));
        } else {
            for (int i = 0; i < bk.nb; i++) {
                const struct bucket *b = &bk.b[i];
                void *scr = malloc(b->scratch_bytes);
                b->cctx.codec->roundtrip(&b->cctx, x + b->off,
                                         want + b->off, scr);
                free(scr);
            }
        }
        MPI_Allreduce(MPI_IN_PLACE, want, (int)n, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        bucketer_begin(&bk, step);
        for (int p = 0; p < NT; p++)
            bucketer_ready(&bk, p);
        assert_int_equal(bucketer_wait(&bk), 0);
        double worst = 0.0, scale = 0.0;
        for (size_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs((double)grads[i] - want[i]));
            scale = fmax(scale, fabs((double)want[i]));
        }
        if (!(worst <= 1e-6 * scale))
            fail_msg("step %d: differs by %.3g (scale %.3g)", step, worst,
                     scale);
        if (step == 0)
            assert_true(bk.local_sumsq == 0.0);
        else
            assert_true(fabs(bk.local_sumsq - sq) <= 1e-12 * sq);
    }
    bucketer_free(&bk);
    comm_group_free(&g);
    free(grads);
    free(mom);
    free(want);
    free(x);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_reduce_mpi),
        cmocka_unit_test(test_reduce_ring),
        cmocka_unit_test(test_reduce_rhd),
        cmocka_unit_test(test_reduce_hier),
        cmocka_unit_test(test_reduce_auto),
        cmocka_unit_test(test_reduce_shm),
        cmocka_unit_test(test_compress_warmup),
        cmocka_unit_test(test_momentum_mode),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return rc;
}
