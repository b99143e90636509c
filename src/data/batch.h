/*
 * batch.h - the shape of each step's global batch: progressive batch
 * size (batch_ramp) and sequence-length warm-up (seq_len_warmup).
 *
 * A plan is a pure function of the step, so every rank, every layout
 * and every resumed run agrees on it, and the data of step s stays a
 * function of (seed, s): sequence i of step s is drawn as always, only
 * the number of sequences and their length change.
 *
 *   batch_ramp = START:STEPS   for s < STEPS the global batch is
 *       START + (batch_size - START) * s / STEPS sequences (integer
 *       division), rounded down to whole micro-batches on every
 *       data-parallel rank (a multiple of dp * micro_batch, at least one
 *       micro-batch per rank); batch_size from step STEPS on.
 *   seq_len_warmup = START:STEPS   short sequences first: START must be
 *       seq_len / 2^K (K >= 1); for s < STEPS the length is
 *       START * 2^floor(s * K / STEPS), so K equal stages of START,
 *       2 START, ..., seq_len / 2; seq_len from step STEPS on.  The
 *       tokens of a step stay those of the full-length step: a length
 *       seq_len / 2^k step has 2^k times the sequences, and so has each
 *       micro-batch (its activations fit the full-length ones' memory).
 * The two compose: tokens per step = ramp(s) * seq_len.
 */
#ifndef MPITRON_BATCH_H
#define MPITRON_BATCH_H

#include <stddef.h>
#include <stdint.h>

struct batch_plan {
    int batch_size, seq_len; /* full sizes (config) */
    int dp, mb;              /* data-parallel ranks, sequences per
                                micro-batch at seq_len */
    int ramp_start, ramp_steps; /* 0:0 = off */
    int sl_start, sl_steps;     /* 0:0 = off */
};

struct batch_shape {
    int T;          /* sequence length */
    int B;          /* sequences in the global batch */
    int per_rank;   /* sequences per data-parallel rank, B / dp */
    int mb;         /* sequences per micro-batch */
    int accum;      /* micro-batches per rank, per_rank / mb */
};

/* Parse "START:STEPS" (or "" / "0" = off: both 0).  START and STEPS
 * positive integers.  Returns 0 or -1 with the reason in err. */
int batch_spec_parse(const char *s, int *start, int *steps, char *err,
                     size_t errlen);

/* Check a plan's numbers against each other (batch_size divisible by
 * dp * mb, START <= batch_size, START = seq_len / 2^K, ...).  Returns 0
 * or -1 with err naming the key and values. */
int batch_plan_check(const struct batch_plan *p, char *err, size_t errlen);

/* The shape of step s (0-based). */
void batch_plan_at(const struct batch_plan *p, int64_t step,
                   struct batch_shape *out);

/* The largest micro-batch count any step of the plan uses, and whether
 * a given count occurs (for building pipeline schedules up front). */
int batch_plan_max_accum(const struct batch_plan *p);
int batch_plan_uses_accum(const struct batch_plan *p, int accum);

#endif
