/*
 * loader.h - a background thread that prepares this rank's slice of the
 * next step's train batch while the current step computes (double
 * buffered).  The batch of step s follows the batch plan (batch.h: its
 * size and sequence length) and the mixture (mix.h: which dataset and
 * where), both functions of (seed, s) alone.
 */
#ifndef MPITRON_LOADER_H
#define MPITRON_LOADER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "mix.h"

/* This rank's part of one step's batch: per_rank sequences of length T,
 * inp, tgt (shape.per_rank, shape.T); dstart the same shape (document
 * starts, mix.h) or NULL when not asked for. */
struct step_batch {
    const int32_t *inp, *tgt, *dstart;
    struct batch_shape shape;
};

struct loader {
    const struct mixture *mx;
    struct batch_plan plan;
    uint64_t seed;
    int dp_rank, want_docs;
    int64_t seq0;           /* with shares: this rank's slice of a */
    int nseq;               /* full-size step (else nseq = 0) */
    int32_t *buf[2][3];     /* [slot][inp | tgt | dstart] */
    struct batch_shape shape[2];
    int64_t slot_step[2];
    int64_t want;           /* step the thread should fill next, -1 = none */
    int stop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Buffers for the plan's largest step (batch_size * seq_len / dp tokens
 * each, or this rank's share).  shares (dp entries, or NULL: equal
 * slices of B / dp) are the sequences of each dp rank in a full-size
 * step (batch_size x seq_len; balance=on gives them by speed): rank d
 * then takes shares[d] sequences from the sum of those before it, and
 * the shape's per_rank and accum say so.  A step the plan shrinks or
 * reshapes always takes the equal slice (config.c refuses a plan with
 * balance).  Returns 0 or -1 (allocation or thread failure, err
 * filled).  The loader owns its buffers; free with loader_free.  mx must
 * outlive it (plan is copied, shares read here). */
int loader_init(struct loader *l, const struct mixture *mx,
                const struct batch_plan *plan, int dp_rank,
                const int *shares, uint64_t seed, int want_docs,
                int64_t first_step, char *err, size_t errlen);
/* Blocks until step s is ready; b's pointers stay valid until the next
 * loader_next.  Then starts on step s + 1.  Time blocked is added to
 * *wait_s (if not NULL).  Allocates nothing. */
void loader_next(struct loader *l, int64_t step, struct step_batch *b,
                 double *wait_s);
/* Stops and joins the thread, frees the buffers; a no-op on a loader
 * whose init failed or that was already freed. */
void loader_free(struct loader *l);

#endif
