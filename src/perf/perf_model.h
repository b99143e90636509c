/*
 * perf_model.h - the performance model of a training step, calibrated on
 * the machine it runs on: `mpitron predict`, the scaling studies'
 * predictions and layout=auto.
 *
 * Calibration (perf_calibrate, collective over the ranks of one launch;
 * a text file with perf_calib_save / perf_calib_load):
 *
 *   compute   for a model shape, tensor-parallel degree tp, micro-batch
 *             mb and thread count: forward + backward seconds of one block
 *             (this rank's tp shard, without its all-reduces; timed on a
 *             stage of up to 4 consecutive blocks, enough to pass twice
 *             the L3, as a step streams them: calib_measure_blocks), of
 *             the embedding and of the head + loss (calib.h), measured
 *             while `load` ranks of the node compute at once (the first
 *             done keep computing until all are) -- so the figures
 *             include what ranks sharing cores, memory bandwidth or an
 *             oversubscribed node cost each other;
 *   comm      per collective kind (p2p ping-pong; the all-reduce
 *             algorithms ring, rhd, hier, mpi; every codec spec), level
 *             (0 inside a node, 1 between nodes), group size p and load:
 *             a line t = a + b n fitted to measured times of n-byte
 *             payloads, with load/p groups of p ranks reducing at once;
 *   optim     seconds per parameter of the optimizer step (the clipping
 *             norm and AdamW, on written pages) at each load;
 *   net       optionally a target network between nodes (latency,
 *             bandwidth) that replaces the measured level 1.
 *
 * Prediction (perf_predict) of one layout (nodes, ranks per node, dp, tp,
 * pp, micro-batch, schedule, all-reduce, compression, buckets): every rank
 * of a node computes, so a layout's compute figures are the ones
 * calibrated at load = ranks per node; when that load (or thread count or
 * micro-batch) was not calibrated, the nearest calibrated one is scaled by
 * each rank's share of the cores, min(threads, cores / load), and
 * linearly in the micro-batch.  Cores are the ones other processes leave
 * free: a prediction may give fewer (avail), and compute, communication
 * inside a node and the optimizer are scaled by the change of a rank's
 * share.  Compute and optimizer figures are fastest repetitions (as if
 * the node were free); communication figures are medians, so each
 * records the cores others left while it was measured (the machine's
 * busy time not spent by the ranks), and is scaled from those.  A communication of a calibrated (kind, level, p, load) is
 * its fitted line; any other is parallel/perf.c's formula over the links
 * behind the calibrated ring all-reduces (or the target network), codecs
 * by their bytes on the wire plus their calibrated per-value compute.
 * The step is perf.c's assembly: stages from the pipeline partition,
 * each block's tensor-parallel all-reduces on the critical path, the
 * schedule simulated, the gradient buckets (comm/bucket.c's plan over the
 * stage's tensors) overlapping the last backward, the tied embedding's
 * sum, the scalar collectives and the optimizer.
 */
#ifndef MPITRON_PERF_MODEL_H
#define MPITRON_PERF_MODEL_H

#include <mpi.h>
#include <stddef.h>
#include <stdio.h>

#include "allreduce.h"
#include "config/config.h"
#include "model/model.h"
#include "perf.h"

struct perf_compute {
    int n_embd, n_head, n_kv_head, seq_len, vocab_size, attn_window;
    int tp, load, threads, mb;
    /* seconds per micro-batch of mb sequences, forward + backward, and
     * the forward part */
    double block, block_fwd, embed, embed_fwd, head, head_fwd;
    double cores; /* the node's cores free of other processes meanwhile
                     (0: all of them) */
};

struct perf_comm {
    char kind[32];  /* p2p | mpi | ring | rhd | hier | a codec spec */
    int level;      /* 0: inside a node; 1: between nodes */
    int p, load;    /* group size; ranks of the node busy meanwhile */
    double a, b;    /* t = a + b n: seconds, seconds per payload byte */
    double cores;   /* as in perf_compute */
};

struct perf_optim {
    int load;
    double per_param; /* seconds per parameter: norm + AdamW */
    double cores;     /* as in perf_compute */
};

#define PERF_MAX_OPTIM 32

struct perf_calib {
    int cores;         /* per node */
    double mem_bytes;  /* per node */
    struct perf_compute *cp;
    int ncp, cpcap;
    struct perf_comm *cm;
    int ncm, cmcap;
    struct perf_optim op[PERF_MAX_OPTIM];
    int nop;
    int has_net;       /* a target network between nodes is given */
    struct perf_link net;
    double avail;      /* predictions: cores per node left to the job by
                          other processes (0: all); every figure is scaled
                          from the cores free when it was measured */
};

void perf_calib_init(struct perf_calib *pc);
void perf_calib_free(struct perf_calib *pc);
/* Append entries (copies); -1 when out of memory. */
int perf_calib_add_compute(struct perf_calib *pc, const struct perf_compute *e);
int perf_calib_add_comm(struct perf_calib *pc, const struct perf_comm *e);
int perf_calib_add_optim(struct perf_calib *pc, int load, double per_param,
                         double cores);

/* The text file: a "mpitron-perf-calib 1" line, then one entry per line
 * ("compute key=value ...", "comm ...", "optim ...", "net ...",
 * "cores N", "mem_mb M").  save returns 0 or -1 with err; load appends to
 * pc (call perf_calib_init first) and returns 0, or -1 with err naming
 * the file, line and token. */
int perf_calib_save(const struct perf_calib *pc, const char *path, char *err,
                    size_t errlen);
int perf_calib_load(struct perf_calib *pc, const char *path, char *err,
                    size_t errlen);

/* What to measure.  Lists are borrowed. */
struct perf_calib_req {
    const struct gpt_config *shapes;
    int nshapes;
    const int *mbs, *tps, *loads, *threads;
    int nmb, ntp, nload, nthreads;
    const char *const *kinds; /* all-reduce algorithms and codec specs;
                                 none: no communication figures at all */
    int nkinds;
    double budget_s;    /* per compute figure */
    int ranks_per_node; /* emulated nodes (0: real ones) for level 1 */
    int quick;          /* fewer sizes and repetitions (layout=auto) */
};

/*
 * Measure everything rq asks for on the ranks of world (see the top),
 * appending to pc; progress lines to log on rank 0 (may be NULL).  Compute
 * runs on the first `load` ranks of node 0 while the others sleep in a
 * non-spinning barrier; a tp that the shape does not split over, a load
 * larger than node 0's ranks, or threads x load beyond the cores when
 * threads > 1 are skipped.  Collective; every rank ends with the same pc.
 * Returns 0, or -1 with err (the same on every rank).
 */
int perf_calibrate(struct perf_calib *pc, const struct perf_calib_req *rq,
                   MPI_Comm world, FILE *log, char *err, size_t errlen);

/* One layout. */
struct perf_layout {
    int nodes, rpn;     /* nodes, ranks per node (world = nodes x rpn) */
    int dp, tp, pp, mb; /* mb: sequences per micro-batch */
    int threads;        /* per rank (the ZeRO stage is the config's) */
};

struct perf_prediction {
    struct perf_step_out o; /* seconds */
    double tokens_per_s;
    double tp_comm;     /* stage 0's tensor-parallel all-reduces per step */
    double dp_busy;     /* stage 0's bucket reductions, hidden or not */
    double mem_bytes;   /* the largest rank's memory */
    int fits;           /* mem_bytes <= the node's memory / rpn x 0.9 */
    int m;              /* micro-batches per step */
    int bound[65];      /* stage boundaries (pp <= 64) */
};

/* Predict c's model and training keys (batch_size, pp_schedule,
 * pp_partition, allreduce, allreduce_tune, compress, compress_warmup,
 * bucket_mb, zero) on layout ly.  Returns 0, or -1 with err naming what the
 * calibration lacks or why the layout is impossible. */
int perf_predict(const struct perf_calib *pc, const struct config *c,
                 const struct perf_layout *ly, struct perf_prediction *pr,
                 char *err, size_t errlen);

/* Seconds of one collective of `bytes` over a group of p ranks on nn
 * nodes (p / nn per node) while `load` ranks per node run (kind as in
 * struct perf_comm, or "auto" resolved as comm/allreduce.c does).
 * powersgd needs the payload's compressed floats: pass them in
 * compressed (0 for any other kind).  Returns -1 with err when the
 * calibration has no figure to build it from. */
double perf_comm_time(const struct perf_calib *pc, const char *kind,
                      double bytes, int p, int nn, int load,
                      const struct allreduce_tune *tune, double compressed,
                      char *err, size_t errlen);

/*
 * The fastest predicted layout of c's model on nodes x rpn ranks that
 * fits in memory: every dp x tp x pp = world with tp dividing the heads
 * and the kv heads and at most rpn (tensor parallelism stays inside a
 * node), pp <= n_layer, and micro-batch c->micro_batch (or, when it is 0,
 * every power of two dividing the per-rank batch, and the whole of it).
 * best receives it; ranking (may be NULL) up to nrank of the best
 * candidates in order, *nfound the number that fit.  Returns 0, or -1
 * with err when none fits (naming the smallest memory need).
 */
int perf_layout_search(const struct perf_calib *pc, const struct config *c,
                       int nodes, int rpn, int threads,
                       struct perf_layout *best, struct perf_prediction *bp,
                       struct perf_layout *ranking, double *rank_s,
                       int nrank, int *nfound, char *err, size_t errlen);

/* perf_layout_search with each ZeRO stage 0..3 as well (c->zero
 * ignored; *zero: the stage of the fastest layout that fits, the lowest
 * such stage on a tie -- at dp = 1 every stage is zero = 0): what fits
 * only with ZeRO's shards is found too.  Returns 0, or -1 with zero =
 * 0's error when no stage fits (or at once when the calibration lacks
 * figures). */
int perf_layout_search_zero(const struct perf_calib *pc,
                            const struct config *c, int nodes, int rpn,
                            int threads, struct perf_layout *best,
                            struct perf_prediction *bp, int *zero,
                            char *err, size_t errlen);

/* layout=auto for train and bench: calibrate quickly on the ranks of
 * world (or read c->perf_calib), search, and set c->dp, tp, pp (and
 * micro_batch when it was 0), printing the choice and the runners-up on
 * rank 0.  Collective.  Returns 0 or -1 with err. */
int perf_layout_auto(struct config *c, MPI_Comm world, char *err,
                     size_t errlen);

#endif
