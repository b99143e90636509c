/*
 * test_predict.c - the performance model's assembly (src/perf/) on a
 * hand-written calibration, against hand computations and the real
 * allocations:
 *  - one rank: the step is m micro-batches of L blocks + embedding + head
 *    plus the optimizer, exactly;
 *  - two data-parallel ranks: the single bucket is ready at the end of
 *    backward, so its whole ring all-reduce is exposed; the loss
 *    all-reduce is an rhd over the link behind the calibrated ring;
 *  - scaling of compute figures by the cores' share (load, threads) and
 *    by the micro-batch, and of compute, communication inside the node
 *    and the optimizer by the cores other processes leave free (when
 *    measured and when predicted); a missing shape is an error naming the
 *    keys;
 *  - a rank's threads: a figure calibrated at that thread count is used
 *    as measured (2 threads are not twice 1), one not calibratable (2
 *    threads x 2 ranks on 2 cores) is scaled from it by the cores'
 *    share, and the file keeps the figures of each thread count apart;
 *  - an oversubscribed pipeline: ranks waiting in the bubble leave their
 *    core to the others; data parallelism keeps every rank busy;
 *  - the memory of a layout equals what gpt_init and gpt_acts_init
 *    allocate for it;
 *  - the search picks the fastest layout (tensor parallelism made cheap)
 *    and, when memory is short, only layouts that fit (a pipeline);
 *  - the calibration file round-trips, and a broken line is refused with
 *    its file and line.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "model/model.h"
#include "perf/perf_model.h"

#define NEAR(a, b) assert_true(fabs((a) - (b)) <= 1e-9 + 1e-9 * fabs(b))

static void base_config(struct config *c)
{
    char err[256];
    config_defaults(c);
    c->n_layer = 2;
    c->n_embd = 64;
    c->n_head = 4;
    c->n_kv_head = 4;
    c->seq_len = 32;
    c->vocab_size = 256; /* the calibration's (0 would be the data's) */
    c->batch_size = 8;
    c->micro_batch = 2;
    assert_int_equal(config_finalize(c, err, sizeof(err)), 0);
}

static struct perf_compute fig(int tp, int load, double block)
{
    struct perf_compute e = {64, 4, 4, 32, 256, 0, tp, load, 1, 2,
                             block, 0.4 * block, 0.001, 0.0004, 0.002,
                             0.001, 0.0};
    return e;
}

static void synthetic(struct perf_calib *pc)
{
    perf_calib_init(pc);
    pc->cores = 2;
    pc->mem_bytes = 1e9;
    struct perf_compute e = fig(1, 1, 0.010);
    assert_int_equal(perf_calib_add_compute(pc, &e), 0);
    struct perf_comm r = {"ring", 0, 2, 2, 1e-5, 1e-9, 0.0};
    assert_int_equal(perf_calib_add_comm(pc, &r), 0);
    struct perf_comm p2p = {"p2p", 0, 2, 2, 1e-6, 5e-10, 0.0};
    assert_int_equal(perf_calib_add_comm(pc, &p2p), 0);
    assert_int_equal(perf_calib_add_optim(pc, 1, 1e-9, 0.0), 0);
    assert_int_equal(perf_calib_add_optim(pc, 2, 2e-9, 0.0), 0);
}

static double params_of(const struct config *c)
{
    struct gpt_config gc = {.n_layer = c->n_layer, .n_embd = c->n_embd,
                            .n_head = c->n_head, .n_kv_head = c->n_kv_head,
                            .seq_len = c->seq_len,
                            .vocab_size = c->vocab_size};
    return (double)gpt_num_params(&gc);
}

static void test_one_rank(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_prediction pr;
    char err[512];
    synthetic(&pc);
    base_config(&c);
    struct perf_layout ly = {1, 1, 1, 1, 1, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    /* m = 8 / 2 = 4 micro-batches of f = 2 x 4 ms + 0.4 + 1 and
     * b = 2 x 6 ms + 0.6 + 1; the optimizer at 1 ns per parameter */
    double f = 2 * 0.004 + 0.0004 + 0.001, b = 2 * 0.006 + 0.0006 + 0.001;
    assert_int_equal(pr.m, 4);
    NEAR(pr.o.pipeline, 4 * (f + b));
    NEAR(pr.o.step, 4 * (f + b) + params_of(&c) * 1e-9);
    NEAR(pr.o.bubble, 0.0);
    NEAR(pr.tokens_per_s, 8 * 32 / pr.o.step);
    /* recompute=full: each block's forward again in backward */
    snprintf(c.recompute, sizeof(c.recompute), "full");
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 4 * (f + b + 2 * 0.004));
    perf_calib_free(&pc);
}

static void test_two_dp_ranks(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_prediction pr;
    char err[512];
    synthetic(&pc);
    base_config(&c);
    /* dp = 2: 4 sequences per rank, m = 2; the load-2 figure is the
     * load-1 one at the same share of a core (2 ranks on 2 cores) */
    struct perf_layout ly = {1, 2, 2, 1, 1, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    double f = 2 * 0.004 + 0.0004 + 0.001, b = 2 * 0.006 + 0.0006 + 0.001;
    double n = params_of(&c);
    /* one 25 MB bucket, final when the embedding is: all of it exposed */
    double ring = 1e-5 + 1e-9 * 4 * n;
    /* the loss: rhd of 8 bytes on the ring's link (alpha = a / 2,
     * beta = b): 2 alpha + 8 beta */
    double loss = 1e-5 + 8e-9;
    NEAR(pr.o.pipeline, 2 * (f + b));
    NEAR(pr.dp_busy, ring);
    NEAR(pr.o.step, 2 * (f + b) + ring + loss + n * 2e-9);
    /* 4 ranks on 2 cores: each has half a core, compute takes twice as
     * long as calibrated at one rank per core */
    struct perf_layout l4 = {1, 4, 4, 1, 1, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &l4, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 2 * (f + b));
    /* 2 threads alone: twice as fast; micro-batch 1: half as long */
    struct perf_layout l1 = {1, 1, 1, 1, 1, 1, 2};
    assert_int_equal(perf_predict(&pc, &c, &l1, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 8 * (f + b) / 2 / 2);
    /* other processes take one of the two cores: the two ranks share the
     * other, so compute, the ring inside the node and the optimizer take
     * twice as long as calibrated with the node free */
    pc.avail = 1.0;
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 2 * 2 * (f + b));
    NEAR(pr.dp_busy, 2 * ring);
    NEAR(pr.o.step, 2 * (2 * (f + b) + ring + loss + n * 2e-9));
    /* figures measured with less free are scaled back: the one-rank
     * compute figure had half a core, the two-rank ring one core */
    pc.avail = 0.0;
    pc.cp[0].cores = 0.5;
    pc.cm[0].cores = 1.0;
    pc.op[1].cores = 1.0;
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, (f + b));
    NEAR(pr.dp_busy, ring / 2);
    perf_calib_free(&pc);
}

/* Per-thread-count figures, by hand.  The study's 1-rank threads=2 point
 * was mispredicted by +159% because the calibration timed its 2-thread
 * figure on products made for 1 thread (gemm.c's cache; test_gemm); this
 * pins what the model does with correct figures. */
static void test_threads(void **state)
{
    (void)state;
    struct perf_calib pc, back;
    struct config c;
    struct perf_prediction pr;
    char err[512], path[] = "/tmp/mpitron-test-calib-XXXXXX";
    synthetic(&pc);
    base_config(&c);
    /* 2 threads: 6 ms a block, 1.67x the 10 ms of 1 thread, not 2x */
    struct perf_compute t2 = fig(1, 1, 0.006);
    t2.threads = 2;
    assert_int_equal(perf_calib_add_compute(&pc, &t2), 0);
    double f1 = 2 * 0.004 + 0.0004 + 0.001, b1 = 2 * 0.006 + 0.0006 + 0.001;
    double f2 = 2 * 0.0024 + 0.0004 + 0.001, b2 = 2 * 0.0036 + 0.0006 + 0.001;
    struct perf_layout l1 = {1, 1, 1, 1, 1, 2, 1}, l2 = {1, 1, 1, 1, 1, 2, 2};
    assert_int_equal(perf_predict(&pc, &c, &l1, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 4 * (f1 + b1));
    assert_int_equal(perf_predict(&pc, &c, &l2, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 4 * (f2 + b2)); /* as measured: 15.9 ms, not 12.5 */
    /* dp = 2 ranks of 2 threads on 2 cores (not calibratable): each gets
     * min(2, 2 / 2) = 1 core against the figure's min(2, 2 / 1) = 2 */
    struct perf_layout d2 = {1, 2, 2, 1, 1, 2, 2};
    assert_int_equal(perf_predict(&pc, &c, &d2, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 2 * 2 * (f2 + b2));
    /* the file keeps both */
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(perf_calib_save(&pc, path, err, sizeof(err)), 0);
    perf_calib_init(&back);
    assert_int_equal(perf_calib_load(&back, path, err, sizeof(err)), 0);
    assert_int_equal(back.ncp, 2);
    assert_int_equal(back.cp[1].threads, 2);
    NEAR(back.cp[1].block, 0.006);
    assert_int_equal(perf_predict(&back, &c, &l2, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 4 * (f2 + b2));
    perf_calib_free(&back);
    perf_calib_free(&pc);
    remove(path);
}

/* ZeRO at dp = 2 against hand computations: units are reduce-scattered
 * and gathered at half the calibrated ring's time of their bytes (with
 * a calibrated shm on one node, zero = 1 at half shm's). */
static void test_zero(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_prediction pr, p0;
    char err[512];
    synthetic(&pc);
    base_config(&c);
    struct perf_layout ly = {1, 2, 2, 1, 1, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &ly, &p0, err, sizeof(err)), 0);
    double f = 2 * 0.004 + 0.0004 + 0.001, b = 2 * 0.006 + 0.0006 + 0.001;
    double n = params_of(&c), loss = 1e-5 + 8e-9;
    /* a block: 12 C^2 + 13 C; the embedding unit: wte, wpe, lnf */
    double blk = 12.0 * 64 * 64 + 13 * 64, emb = 256 * 64 + 32 * 64 + 128;
    NEAR(2 * blk + emb, n);
    double rb = 0.5 * (1e-5 + 1e-9 * 4 * blk);
    double re = 0.5 * (1e-5 + 1e-9 * 4 * emb);
    /* zero = 1: the blocks' reduce-scatters end long before backward
     * (ready at 7 and 13 ms, 0.1 ms each); the embedding unit's is ready
     * at the end: re exposed.  The update covers half the parameters.
     * The gathers after it: the embedding unit's (re) delays the first
     * forward, the blocks' (0.1 ms) hide behind the 0.4 ms embedding */
    c.zero = 1;
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 2 * (f + b));
    NEAR(pr.o.zero, re);
    NEAR(pr.o.step, 2 * (f + b) + re + loss + re + n / 2 * 2e-9);
    NEAR(pr.dp_busy, 2 * rb + re);
    /* moments 8 bytes a parameter, halved */
    NEAR(p0.mem_bytes - pr.mem_bytes, 4.0 * n);
    /* zero = 2: a reduce-scatter per micro-batch, the first one's hidden
     * behind the second's compute; the gathers after the update as for
     * zero = 1 (the embedding unit's re delays the first forward) */
    c.zero = 2;
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.step, 2 * (f + b) + re + loss + re + n / 2 * 2e-9);
    NEAR(pr.dp_busy, 2 * (2 * rb + re));
    /* parameters whole, gradients and moments halved, three staging
     * buffers: one of the embedding unit, two of a block (zero_exec.c) */
    double slots = 4 * emb + 2 * 4 * blk;
    NEAR(pr.mem_bytes, p0.mem_bytes - 16 * n + 4 * n + 12 * n / 2 + slots);
    /* zero = 3: each forward waits for the embedding unit's gather (the
     * next unit's is prefetched during the current use); backward finds
     * the two blocks still in their slots */
    c.zero = 3;
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 2 * (f + re + b));
    NEAR(pr.o.step, 2 * (f + re + b) + re + loss + n / 2 * 2e-9);
    /* everything halved; the working slots as many again as the buffers */
    NEAR(pr.mem_bytes, p0.mem_bytes - 16 * n + 16 * n / 2 + 2 * slots);
    /* zero = 1 on one node: the trainer's arenas are in shared memory
     * and its halves shm's (half the calibrated shm all-reduce each);
     * with allreduce=ring the ring's again */
    struct perf_comm sh = {"shm", 0, 2, 2, 2e-6, 2e-10, 0.0};
    assert_int_equal(perf_calib_add_comm(&pc, &sh), 0);
    double rbs = 0.5 * (2e-6 + 2e-10 * 4 * blk);
    double res = 0.5 * (2e-6 + 2e-10 * 4 * emb);
    c.zero = 1;
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.dp_busy, 2 * rbs + res);
    NEAR(pr.o.zero, res);
    snprintf(c.allreduce, sizeof c.allreduce, "ring");
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.dp_busy, 2 * rb + re);
    perf_calib_free(&pc);
}

/* Two pipeline stages on one core: a waiting rank yields it, so the
 * ranks compute at the core's pace divided by the ranks busy on average,
 * 2 x (1 - bubble), not by all 2. */
static void test_oversubscribed_pipeline(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_prediction pr;
    char err[512];
    perf_calib_init(&pc);
    pc.cores = 1;
    pc.mem_bytes = 1e9;
    struct perf_compute e = {64, 4, 4, 32, 256, 0, 1, 1, 1, 2,
                             0.010, 0.004, 0, 0, 0, 0, 0.0};
    struct perf_comm free_link = {"p2p", 0, 2, 2, 0.0, 0.0, 0.0};
    struct perf_comm ring = {"ring", 0, 2, 2, 0.0, 0.0, 0.0};
    assert_int_equal(perf_calib_add_compute(&pc, &e), 0);
    assert_int_equal(perf_calib_add_comm(&pc, &free_link), 0);
    assert_int_equal(perf_calib_add_comm(&pc, &ring), 0);
    base_config(&c);
    /* pp = 2 of one block each, m = 4: bubble 1/5; 2 x 4/5 = 1.6 ranks
     * compute at once, each at 1 / 1.6 of the core */
    struct perf_layout ly = {1, 2, 1, 1, 2, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.bubble, 0.2);
    NEAR(pr.o.pipeline, (4 + 2 - 1) * 0.010 * 1.6);
    /* data parallelism has no bubble: both ranks compute all the time */
    struct perf_layout dp = {1, 2, 2, 1, 1, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &dp, &pr, err, sizeof(err)), 0);
    NEAR(pr.o.pipeline, 2 * 2 * 0.010 * 2);
    perf_calib_free(&pc);
}

static void test_missing(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_prediction pr;
    char err[512];
    synthetic(&pc);
    base_config(&c);
    c.n_embd = 128;
    struct perf_layout ly = {1, 1, 1, 1, 1, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "n_embd=128"));
    base_config(&c);
    struct perf_layout l2 = {1, 2, 1, 2, 1, 2, 1}; /* no tp=2 figure */
    assert_int_equal(perf_predict(&pc, &c, &l2, &pr, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "tp=2"));
    struct perf_layout bad = {1, 2, 2, 1, 1, 3, 1}; /* 3 does not */
    assert_int_equal(perf_predict(&pc, &c, &bad, &pr, err, sizeof(err)), -1);
    perf_calib_free(&pc);
}

static void test_memory(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_prediction pr;
    char err[512];
    synthetic(&pc);
    base_config(&c);
    struct perf_layout ly = {1, 1, 1, 1, 1, 2, 1};
    assert_int_equal(perf_predict(&pc, &c, &ly, &pr, err, sizeof(err)), 0);
    struct gpt_config gc = {.n_layer = 2, .n_embd = 64, .n_head = 4,
                            .n_kv_head = 4, .seq_len = 32,
                            .vocab_size = 256};
    struct gpt m;
    struct gpt_acts a;
    assert_int_equal(gpt_init(&m, &gc, 1, 0, 0, 2, 1, err, sizeof(err)), 0);
    assert_int_equal(gpt_acts_init(&a, &m, 2, 32), 0);
    double real = 16.0 * (double)m.tt.total + (double)a.bytes;
    NEAR(pr.mem_bytes, real);
    gpt_acts_free(&a);
    gpt_free(&m);
    perf_calib_free(&pc);
}

static void test_search(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_layout best, rk[8];
    struct perf_prediction bp;
    double rs[8];
    int nf;
    char err[512];
    synthetic(&pc);
    base_config(&c);
    /* tensor parallelism made much cheaper than anything else */
    struct perf_compute t2 = fig(2, 2, 0.001);
    assert_int_equal(perf_calib_add_compute(&pc, &t2), 0);
    assert_int_equal(perf_layout_search(&pc, &c, 1, 2, 1, &best, &bp, rk,
                                         rs, 8, &nf, err, sizeof(err)), 0);
    assert_int_equal(best.tp, 2);
    assert_true(nf >= 3); /* dp2, tp2, pp2 at least */
    for (int i = 1; i < nf && i < 8; i++)
        assert_true(rs[i] >= rs[i - 1]);
    NEAR(rs[0], bp.o.step);
    /* memory for a pipeline stage only: pp = 2 holds half the blocks and
     * one copy of the embedding, a replica does not fit */
    perf_calib_free(&pc);
    synthetic(&pc);
    c.micro_batch = 0;
    struct perf_layout pl = {1, 2, 1, 1, 2, 1, 1};
    struct perf_prediction pr;
    assert_int_equal(perf_predict(&pc, &c, &pl, &pr, err, sizeof(err)), 0);
    pc.mem_bytes = 2 * pr.mem_bytes / 0.9 * 1.0000001;
    assert_int_equal(perf_layout_search(&pc, &c, 1, 2, 1, &best, &bp, rk,
                                         rs, 8, &nf, err, sizeof(err)), 0);
    assert_int_equal(best.pp, 2);
    assert_true(bp.fits && bp.mem_bytes <= 0.9 * pc.mem_bytes / 2);
    /* nothing fits: the error names the smallest need */
    pc.mem_bytes = 1e3;
    assert_int_equal(perf_layout_search(&pc, &c, 1, 2, 1, &best, &bp, rk,
                                         rs, 8, &nf, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "fits in memory"));
    perf_calib_free(&pc);
}

/* ZeRO in the search: a one-block model (no pipeline to split it) on 2
 * ranks with memory for zero = 1's replica (moments halved: 12 bytes a
 * parameter) but not a plain one (16): only the ZeRO search finds it.
 * With room for all, each stage's step by hand (perf.h's formulas) and
 * the stage the search must pick. */
static void test_search_zero(void **state)
{
    (void)state;
    struct perf_calib pc;
    struct config c;
    struct perf_layout best, ly = {1, 2, 2, 1, 1, 2, 1};
    struct perf_prediction bp, p0, p1, pz[4];
    int z = -1;
    char err[512];
    synthetic(&pc);
    base_config(&c);
    c.n_layer = 1;
    c.micro_batch = 2;
    assert_int_equal(perf_predict(&pc, &c, &ly, &p0, err, sizeof(err)), 0);
    c.zero = 1;
    assert_int_equal(perf_predict(&pc, &c, &ly, &p1, err, sizeof(err)), 0);
    NEAR(p0.mem_bytes - p1.mem_bytes, 4.0 * params_of(&c));
    pc.mem_bytes = 2 * p1.mem_bytes / 0.9 * 1.0000001;
    c.zero = 0;
    assert_int_equal(perf_layout_search(&pc, &c, 1, 2, 1, &best, &bp, NULL,
                                         NULL, 0, NULL, err, sizeof(err)),
                     -1);
    assert_int_equal(perf_layout_search_zero(&pc, &c, 1, 2, 1, &best, &bp,
                                             &z, err, sizeof(err)), 0);
    assert_int_equal(z, 1);
    assert_int_equal(best.dp, 2);
    assert_true(bp.fits);
    NEAR(bp.mem_bytes, p1.mem_bytes);
    /* With room for all.  The only layout the calibration predicts is
     * dp = 2 (tp = 2 has no compute figures, one block allows no pp = 2):
     * m = 2 micro-batches of f = 4 + 0.4 + 1 ms and b = 6 + 0.6 + 1 ms,
     * the loss's rhd 1e-5 + 8e-9, the ring's link 1e-5 + 1e-9 n for n
     * bytes.  ZeRO's units: the embedding (wte 256 x 64, wpe 32 x 64,
     * lnf 2 x 64) and the block; a unit's reduce-scatter or all-gather
     * is half the ring's time for its bytes. */
    double n = params_of(&c), f = 0.004 + 0.0004 + 0.001;
    double b = 0.006 + 0.0006 + 0.001, loss = 1e-5 + 8e-9;
    double e = 4.0 * (256 + 32 + 2) * 64, e_rs = 0.5 * (1e-5 + 1e-9 * e);
    double want[4] = {
        /* one bucket of all 4n bytes, final at the end of backward: the
         * whole ring exposed; the optimizer over all n at 2 ns */
        2 * (f + b) + (1e-5 + 4e-9 * n) + loss + 2e-9 * n,
        /* the block's reduce-scatter hides behind the last backward's
         * embedding, the embedding's own runs past it; the first forward
         * waits for the embedding's gather (the block's arrives while the
         * embedding computes); the optimizer over n / 2 */
        2 * (f + b) + e_rs + loss + e_rs + 1e-9 * n,
        /* as stage 1: the first micro-batch's reduce-scatters end during
         * the second's forward */
        2 * (f + b) + e_rs + loss + e_rs + 1e-9 * n,
        /* every forward waits for the embedding's gather (the block's is
         * prefetched while the embedding computes; backward reuses both),
         * the last reduce-scatter as in stage 1, no gathers after the
         * update */
        2 * (f + e_rs + b) + e_rs + loss + 1e-9 * n};
    /* bytes a rank holds beyond the activations: 16 n plain; ZeRO as
     * zero_exec.c shards it (12 n; 10 n + three staging buffers; 8 n +
     * six working slots), each slot the embedding unit or the block */
    double blk = 4.0 * n - e;
    double extra[4] = {16 * n, 12 * n, 10 * n + e + 2 * blk,
                       8 * n + 2 * (e + 2 * blk)};
    for (int k = 0; k <= 3; k++) {
        c.zero = k;
        assert_int_equal(perf_predict(&pc, &c, &ly, &pz[k], err,
                                      sizeof(err)), 0);
        NEAR(pz[k].o.step, want[k]);
        NEAR(pz[k].mem_bytes - p0.mem_bytes, extra[k] - 16 * n);
    }
    c.zero = 0;
    /* stages 1 and 2 tie exactly (the same exposed queue end, the same
     * update): the search keeps the lowest stage (perf_model.h) */
    NEAR(pz[1].o.step, pz[2].o.step);
    pc.mem_bytes = 1e9;
    assert_int_equal(perf_layout_search_zero(&pc, &c, 1, 2, 1, &best, &bp,
                                             &z, err, sizeof(err)), 0);
    assert_int_equal(z, 1);
    assert_int_equal(best.dp, 2);
    assert_int_equal(best.tp, 1);
    assert_int_equal(best.pp, 1);
    assert_int_equal(best.mb, 2);
    NEAR(bp.o.step, want[1]);
    NEAR(bp.mem_bytes, p1.mem_bytes);
    /* nothing fits at any stage: zero = 0's error */
    pc.mem_bytes = 1e3;
    assert_int_equal(perf_layout_search_zero(&pc, &c, 1, 2, 1, &best, &bp,
                                             &z, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "fits in memory"));
    perf_calib_free(&pc);
}

static void test_file(void **state)
{
    (void)state;
    struct perf_calib pc, back;
    char err[512], path[] = "/tmp/mpitron-test-calib-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    synthetic(&pc);
    assert_int_equal(perf_calib_save(&pc, path, err, sizeof(err)), 0);
    perf_calib_init(&back);
    assert_int_equal(perf_calib_load(&back, path, err, sizeof(err)), 0);
    assert_int_equal(back.cores, 2);
    assert_int_equal(back.ncp, 1);
    assert_int_equal(back.ncm, 2);
    assert_int_equal(back.nop, 2);
    NEAR(back.cp[0].block, 0.010);
    NEAR(back.cm[0].b, 1e-9);
    perf_calib_free(&back);
    FILE *f = fopen(path, "a");
    fprintf(f, "comm kind=ring level=0 p=1 load=2 a=0 b=0\n");
    fclose(f);
    perf_calib_init(&back);
    assert_int_equal(perf_calib_load(&back, path, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, ":10:")); /* after 9 lines */
    perf_calib_free(&back);
    perf_calib_free(&pc);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_rank), cmocka_unit_test(test_two_dp_ranks),
        cmocka_unit_test(test_oversubscribed_pipeline),
        cmocka_unit_test(test_zero),   cmocka_unit_test(test_threads),
        cmocka_unit_test(test_missing),  cmocka_unit_test(test_memory),
        cmocka_unit_test(test_search),
        cmocka_unit_test(test_search_zero),   cmocka_unit_test(test_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
