/*
 * calib.h - this rank's speed on the model's real kernels.
 *
 * calib_measure builds two stand-alone stages (model.c's gpt_init with a
 * block range) and times forward + backward of one micro-batch through
 * each, giving three figures:
 *
 *   block  one transformer block (a middle stage [1, 2) of 3 blocks):
 *          LayerNorms, QKV, attention, projection, MLP, GELU, dropout
 *   embed  token + position embedding (and its dropout), forward and the
 *          scatter-add backward
 *   head   final LayerNorm, the tied LM head (2 N V C FLOPs each way) and
 *          the fused softmax + cross-entropy
 *
 * The embedding and the head are one stage without blocks (so the V x C
 * matrix is built once); the embedding's share of it is what model.c's
 * timers book for the embedding's kernels, the rest is the head.  All on
 * synthetic tokens and activations, at the BLAS/OpenMP thread counts in
 * force (the caller sets them: threads_set), without tensor parallelism.
 *
 * The kernels run for about budget_s seconds: a warm-up of one sequence
 * through the block and 16 tokens through the embedding and head, then
 * warm-ups at larger sizes, each refining the estimate of the next, up to
 * the size whose repetitions fit the budget (all of it: mb sequences of
 * seq_len tokens, when they fit; else every part scaled down alike, a
 * block in whole sequences -- attention is quadratic in the sequence
 * length -- the embedding and head in tokens), then up to 9 timed
 * repetitions.  A figure is the fastest repetition (other processes only
 * ever slow one down) scaled to mb sequences of seq_len tokens: exact
 * when the budget allowed the full size, else an estimate: linear in the
 * sequences for a block; for the embedding and head, which are also
 * timed on half their tokens in every repetition, a fixed cost plus a
 * cost per token fitted to the two when there are at least 3
 * repetitions, else linear too (a product with the V x C matrix
 * costs its weight traffic however few the tokens: scaling a small size
 * in proportion overestimated the head of a 50257-token vocabulary
 * about 2x).  The budget is exceeded only when the first
 * warm-up and one repetition at the smallest sizes take longer.
 * Building the two stages (parameter init of the V x C matrix and one
 * block) comes on top and is part of wall_s.
 *
 * The figures are seconds for ONE micro-batch of mb sequences of
 * gc->seq_len tokens.  A pipeline stage holding blocks [l0, l1) costs
 * (l1 - l0) * block_s, plus embed_s on the first stage and head_s on the
 * last; a step runs that per micro-batch.
 */
#ifndef MPITRON_CALIB_H
#define MPITRON_CALIB_H

#include <stddef.h>

#include "model/model.h"

struct calib_costs {
    double block_s;     /* one block, forward + backward */
    double embed_s;     /* the embedding, forward + backward */
    double head_s;      /* final LayerNorm + LM head + loss, fwd + bwd */
    double block_fwd_s; /* the forward part of each of the above */
    double embed_fwd_s;
    double head_fwd_s;
    int mb;             /* sequences per micro-batch the figures are for */
    int seqs;           /* sequences of a block actually timed (<= mb) */
    int reps;           /* timed repetitions (the fastest is reported) */
    int threads;        /* BLAS threads in force while measuring */
    double wall_s;      /* what the measurement took, set-up included */
    int head_tokens;    /* tokens the embedding and head were timed on */
    int head_fit;       /* 1: the head was also timed on half its tokens
                           and a fixed + per-token cost fitted */
    int nblk;           /* blocks in the timed stage (block_s: per block) */
};

/*
 * Measure this rank's costs for model gc (n_kv_head resolved, as after
 * config_finalize) and micro-batches of mb sequences, in about budget_s
 * seconds (at least one repetition of one sequence whatever the budget).
 * Not collective: every rank measures itself.  Allocates and frees its own
 * models and activations.  Returns 0 with *out filled, or -1 with err
 * (bad arguments, out of memory).
 */
int calib_measure(const struct gpt_config *gc, int mb, double budget_s,
                  struct calib_costs *out, char *err, size_t errlen);

/*
 * The same for one of tp tensor-parallel ranks (the performance model's
 * compute figures): the block holds this rank's heads and FC rows; its
 * all-reduces are skipped (no group: the model times communication
 * apart); the embedding and head are replicated, as in training.  tp = 1
 * is calib_measure.  Returns -1 with err when the shape does not split
 * over tp (gpt_config_check).
 */
int calib_measure_tp(const struct gpt_config *gc, int mb, int tp,
                     double budget_s, struct calib_costs *out, char *err,
                     size_t errlen);

/*
 * calib_measure_tp with the block figures timed on a stage of nblk
 * consecutive blocks (forward through all, backward through all; block_s
 * is the stage's time / nblk): a step streams every block's weights,
 * gradients and saved activations through the caches in turn, so one
 * block repeated on its own -- its working set resident in a cache that
 * the step's is not -- ran faster than the step's blocks do (the
 * performance model uses up to the model's n_layer blocks).
 */
int calib_measure_blocks(const struct gpt_config *gc, int mb, int tp,
                         int nblk, double budget_s, struct calib_costs *out,
                         char *err, size_t errlen);

/*
 * The same with every kernel run `slow` times over in effect
 * (debug_slow_rank=R:F): after each forward and backward that took t
 * seconds, calib_slow_pad repeats it until about (slow - 1) t more seconds
 * have passed.  slow <= 1 is calib_measure.
 */
int calib_measure_slow(const struct gpt_config *gc, int mb, double budget_s,
                       double slow, struct calib_costs *out, char *err,
                       size_t errlen);

/*
 * Emulated heterogeneity (debug_slow_rank): after a kernel that took t
 * seconds, call again(ctx) -- the same kernel, or one of the same model on
 * scratch -- until the extra time is (slow - 1) t to the nearest whole
 * repetition.  The time is really spent computing on this rank's cores,
 * so it is honest for timing.  Returns the number of repetitions (0 when
 * slow <= 1).
 */
int calib_slow_pad(double slow, double t, void (*again)(void *ctx),
                   void *ctx);

#endif
