/*
 * perf.h - the performance model's formulas, without the model: measured
 * figures (seconds of compute, latency and bandwidth of links) in, the
 * seconds of a training step out.  src/perf/predict.c measures the
 * figures and assembles the inputs; these functions are pure, so the
 * tests check them against hand computations.
 *
 * Links.  A link is alpha (seconds per message) and beta (seconds per
 * byte).  The collectives are the ones comm/ implements:
 *
 *   ring    reduce-scatter then all-gather around p ranks:
 *           2(p-1) alpha + 2(p-1)/p n beta
 *   rhd     recursive halving-doubling over q = 2^floor(log2 p) ranks,
 *           the p - q others folded into a partner first and served last:
 *           2 log2(q) alpha + 2(q-1)/q n beta  (+ 2 alpha + 2 n beta when
 *           q < p)
 *   hier    reduce inside each node (a pipelined chain), ring among the
 *           node leaders, broadcast inside the node; the buffer flows
 *           through the three phases in k = 8 pieces, so the slowest
 *           phase counts whole and the others by one piece:
 *           max(phase) + (sum(phase) - max(phase)) / k, a chain of r ranks
 *           costing (r - 1 + k - 1)(alpha + n/k beta)
 *   gather  all-gather of an m-byte message from each of p ranks:
 *           (p-1)(alpha + m beta)
 *   p2p     one message: alpha + n beta
 *
 * Pipelines.  perf_pipeline runs the very action lists that parallel/pp.c
 * builds (GPipe or 1F1B) as a discrete-event simulation: stage s spends
 * f[s] on a forward and b[s] on a backward of one micro-batch; a sent
 * activation or gradient arrives xfer seconds later; an action waits for
 * its input.  Uniform stages without transfer cost give the makespan
 * (m + p - 1)(f + b) and the bubble (p - 1)/(m + p - 1).
 *
 * Overlap.  Gradient buckets are reduced one after the other, each
 * starting when its last gradient is final (during the last micro-batch's
 * backward) and the previous reduction has finished; what runs past the
 * end of backward is exposed.  The reductions of earlier micro-batches
 * (ZeRO stages 2 and 3 reduce-scatter a unit after each micro-batch's
 * use) enter the same queue with ready times before the last backward.
 *
 * ZeRO (parallel/zero.c's units, src/zero_exec.c's schedule).  A unit's
 * reduce-scatter and all-gather each cost one half of the ring all-reduce
 * of its bytes: (p-1) alpha + (p-1)/p n beta.  Stage 1 reduce-scatters
 * each unit once, after its last backward of the step (the buckets'
 * queue, with units for buckets), updates 1/p of the parameters, and
 * all-gathers every unit after the update, all queued at once and
 * overtaken by the next forward, which waits for a unit's gather only
 * when it reaches the unit (perf_gather_exposed, ahead = 0).  Stage 2
 * reduce-scatters after every micro-batch's last use of a unit.  Stage 3
 * also gathers each unit before each use, the next one prefetched during
 * the current use (ahead = 1): what a micro-batch's forward and backward
 * wait for is added to them.
 *
 * parallel/ depends on comm/, MPI and hwloc only (never on src/).
 */
#ifndef MPITRON_PERF_H
#define MPITRON_PERF_H

#include <stddef.h>

#include "pp.h"

struct perf_link {
    double alpha; /* seconds per message */
    double beta;  /* seconds per byte */
};

double perf_p2p(double bytes, struct perf_link l);
double perf_ring_allreduce(int p, double bytes, struct perf_link l);
double perf_rhd_allreduce(int p, double bytes, struct perf_link l);
double perf_hier_allreduce(int nodes, int per_node, double bytes,
                           struct perf_link intra, struct perf_link inter);
double perf_allgather(int p, double msg_bytes, struct perf_link l);

/* Least-squares line t = a + b n through k >= 2 points (a, b >= 0: a
 * negative intercept is refitted through the origin).  Returns 0, or -1
 * when k < 2 or all n are equal. */
int perf_fit_line(const double *n, const double *t, int k, double *a,
                  double *b);

/* The link behind a ring all-reduce whose time over p ranks is a + b n:
 * alpha = a / (2(p-1)), beta = b p / (2(p-1)).  p >= 2. */
struct perf_link perf_link_from_ring(int p, double a, double b);

/*
 * Simulate one step's schedule (see the top).  stage_end[s] (may be NULL)
 * receives when stage s finished its list; *makespan the latest of them;
 * *bubble the idle share 1 - sum_s m (f[s] + b[s]) / (p makespan).
 * Returns 0, or -1 with err (bad arguments, out of memory).
 */
int perf_pipeline(enum pp_kind kind, int p, int m, const double *f,
                  const double *b, double xfer, double *stage_end,
                  double *makespan, double *bubble, char *err,
                  size_t errlen);

/*
 * Buckets reduced in order: bucket i becomes ready at ready[i] (may be
 * negative: before the last backward) and takes cost[i]; it starts at
 * max(ready[i], end of bucket i-1).  Returns the
 * time past bwd_end at which the last one ends (0 when all end before);
 * *busy (may be NULL) receives the total reduction time.
 */
double perf_buckets_exposed(int nb, const double *ready, const double *cost,
                            double bwd_end, double *busy);

/* One pipeline stage of a step, as the step assembly needs it. */
struct perf_stage {
    double f, b;         /* one micro-batch's forward / backward, tensor-
                            parallel all-reduces included */
    int nb;              /* gradient buckets (0 without data parallelism) */
    const double *ready; /* bucket i final this many seconds into the
                            stage's last backward */
    const double *cost;  /* seconds to reduce bucket i */
    double optim;        /* the optimizer's update of this stage */
};

struct perf_step_in {
    enum pp_kind kind;
    int p, m;                    /* stages, micro-batches per step */
    const struct perf_stage *st; /* p stages */
    double xfer;   /* one activation (or its gradient) to the next stage */
    double tie;    /* the tied embedding's sum (pp > 1) */
    double small;  /* the step's scalar collectives (loss, norm, bubble) */
    double zero;   /* ZeRO's gathers that the first forward waits for
                      (stage 1; perf_gather_exposed) */
};

struct perf_step_out {
    double step;        /* seconds */
    double pipeline;    /* the schedule's makespan */
    double compute;     /* stage 0's forward, backward and optimizer */
    double comm_exposed; /* data-parallel reduction past backward, and
                            the end-of-step collectives */
    double bubble;
    double optim;       /* the slowest stage's optimizer */
    double zero;        /* ZeRO's collectives */
};

/* One half of a ring all-reduce of `bytes` over p ranks: ZeRO's
 * reduce-scatter, and its all-gather. */
double perf_ring_half(int p, double bytes, struct perf_link l);

/*
 * n units used one after another, unit k's use taking use[k] seconds and
 * waiting for its all-gather (ag[k] seconds; 0: already there).  The
 * gathers run one at a time in order: ahead = 0, each right after the
 * previous one (ZeRO-1's gathers queued after the update); ahead = 1, no
 * earlier than the start of the use before (ZeRO-3's prefetch into the
 * other slot).  The first gather starts at 0.  Returns how much longer
 * than sum(use) the uses take.
 */
double perf_gather_exposed(int n, const double *ag, const double *use,
                           int ahead);

/* The step: the schedule, then each stage's exposed reductions, the tied
 * embedding's sum, the scalar collectives and the optimizer.  Returns 0,
 * or -1 with err. */
int perf_step(const struct perf_step_in *in, struct perf_step_out *out,
              char *err, size_t errlen);

#endif
