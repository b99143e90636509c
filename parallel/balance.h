/*
 * balance.h - load balance from measured figures, without the model:
 * src/ measures (calib.c: a block's, the embedding's and the head's
 * forward + backward seconds; step times) and these pure functions turn
 * the figures into pipeline stage boundaries, data-parallel shares of the
 * global batch, micro-batch sizes, and the name of a straggler.  Every
 * rank computes the same result from the same gathered numbers, so no
 * decision needs to be broadcast.
 *
 * parallel/ depends on comm/, MPI and hwloc only (never on src/).
 */
#ifndef MPITRON_BALANCE_H
#define MPITRON_BALANCE_H

#include <stddef.h>

/*
 * Stage boundaries from calibrated costs (seconds per micro-batch): every
 * block costs block_s, the first stage also embed_s and the last head_s;
 * pp.c's exact min-max partition minimises the slowest stage.
 * bound[0..p].  Returns 0, or -1 with err (p > n_layer, costs not finite
 * or negative).
 */
int balance_stages(int n_layer, int p, double block_s, double embed_s,
                   double head_s, int *bound, char *err, size_t errlen);

/*
 * The same when the stages run at different speeds (a slower node, a
 * shared core): a block costs blk[s] on stage s (the slowest of that
 * stage's ranks), the embedding embed_s on stage 0 and the head head_s on
 * stage p-1 (measured there).  Exact min-max by dynamic programming over
 * (stage, first block) -- pp.c's pp_partition is the case of equal blk[s]
 * and gives the same boundaries then -- with pp.c's tie rule: each
 * boundary as early as the optimum allows.  Returns 0, or -1 with err.
 */
int balance_stages_speeds(int n_layer, int p, const double *blk,
                          double embed_s, double head_s, int *bound,
                          char *err, size_t errlen);

/* The slowest stage's cost of a partition under the same model. */
double balance_stages_slowest(int p, const int *bound, const double *blk,
                              double embed_s, double head_s);

/* The blocks per stage of an explicit list (counts[0..p), adding up to
 * n_layer) as boundaries bound[0..p]. */
void balance_stages_from_counts(int p, const int *counts, int *bound);

/*
 * Shares of the global batch: total sequences over n ranks, rank i taking
 * t[i] seconds per sequence (> 0 and finite; anything else counts as the
 * slowest valid rate, or 1 when none is valid), each rank at least one
 * whole sequence, minimising the slowest rank's time max_i shares[i] t[i].
 * Greedy: every rank starts with one, and each further sequence goes to the
 * rank that would finish it first (ties: lower rank); for identical unit
 * jobs on machines of different speeds this is optimal.  Returns 0, or -1
 * when total < n.
 */
int balance_shares(int n, const double *t, int total, int *shares);

/* The equal split: total / n each, the first total % n ranks one more. */
void balance_shares_equal(int n, int total, int *shares);

/* The slowest rank's time of a split, max_i shares[i] t[i]. */
double balance_makespan(int n, const double *t, const int *shares);

/*
 * Re-split from measured rates: the split balance_shares gives for t,
 * adopted (copied to next, returning 1) only when its makespan is below
 * (1 - min_gain) times the current split's under the same rates, so that
 * timing noise does not move sequences back and forth; else next = cur
 * and 0.
 */
int balance_rebalance(int n, const double *t, const int *cur, int total,
                      double min_gain, int *next);

/* First sequence of rank r: the sum of the shares before it. */
int balance_first(const int *shares, int r);

/*
 * A rank's nseq sequences as micro-batches of at most mb: k =
 * ceil(nseq / mb) of them, as equal as they go (the first nseq % k one
 * larger), into sizes[0..k).  Returns k (0 when nseq is 0).
 */
int balance_micro_batches(int nseq, int mb, int *sizes);

/*
 * The straggler among n ranks' compute seconds per step: the slowest rank
 * (lowest index on a tie) and its time over the median (the mean of the
 * middle two for even n).  Returns that rank when the ratio exceeds
 * threshold, else -1; *ratio and *slowest are set either way (ratio 1
 * when the median is 0).
 */
int balance_straggler(int n, const double *busy, double threshold,
                      double *ratio, int *slowest);

/*
 * The imbalance among n ranks' compute seconds: the mean over all ranks
 * (the slowest one's zero included) of the slowest rank's time minus each
 * one's; 0 when all are equal, and for n < 1.  Over one synchronising
 * step this is the mean idle per rank (with two ranks, half of what the
 * faster one idles); over an interval of steps it is a lower bound of
 * that (the slowest rank can change from step to step).
 */
double balance_imbalance(int n, const double *busy);

#endif
