/*
 * nonfinite.h - non-finite steps and loss spikes.
 *
 * Verdict of a step (trainer_step computes it from values every rank
 * holds, then agrees on it with one all-reduce, so every rank takes the
 * same branch): NF_LOSS (the global mean loss is NaN or infinite),
 * NF_GRAD (the global gradient norm is), NF_STATE (a rank's compression
 * residual is: a codec may have kept a NaN out of the reduced gradient),
 * NF_SPIKE (spike_zscore > 0 and the loss's z-score against the running
 * window is above it).  A step with a verdict is skipped: no update,
 * weights and AdamW moments untouched; the error-feedback state is reset
 * (it may hold the non-finite values).
 *
 * Loss window: the losses of the last NF_WINDOW steps that were not
 * skipped; z = (loss - mean) / sd (population sd) once it holds at least
 * NF_MIN_SAMPLES, NaN before.  It restarts empty when a run resumes.
 *
 * Policy (config `nonfinite`, `nonfinite_patience` = P):
 *   skip      skip each such step; P in a row mean the run has diverged:
 *             it stops with an error naming the steps (exit 1);
 *   rollback  skip; after P in a row, reload the newest good checkpoint
 *             of run_dir and, replaying from it, skip the batches of
 *             those P steps (the batch of step s is a function of s, so
 *             the others are unchanged); at most P rollbacks to the same
 *             checkpoint, then stop as skip does;
 *   abort     stop at the first, naming the step (exit 1).
 */
#ifndef MPITRON_NONFINITE_H
#define MPITRON_NONFINITE_H

#include <stdint.h>

#define NF_WINDOW 100
#define NF_MIN_SAMPLES 20

enum {
    NF_LOSS = 1,
    NF_GRAD = 2,
    NF_STATE = 4,
    NF_SPIKE = 8,
    NF_REPLAY = 16, /* not computed: skipped on replay after a rollback */
};

enum nf_policy { NF_SKIP, NF_ROLLBACK, NF_ABORT };

struct loss_window {
    double v[NF_WINDOW];
    int n, head;
};

void loss_window_add(struct loss_window *w, double loss);
/* z-score of loss against the window; NaN below NF_MIN_SAMPLES (or sd 0
 * with loss equal to the mean: 0). */
double loss_window_z(const struct loss_window *w, double loss);

/* What the run loop does after a step. */
enum nf_action { NF_CONTINUE, NF_DO_ROLLBACK, NF_DO_STOP };

struct nf_state {
    enum nf_policy policy;
    int patience;
    int run;              /* skipped steps in a row (computed ones) */
    int64_t run_first;    /* first step of that run (1-based step number) */
    int64_t run_last;     /* its last; the steps between are failures or
                             replays skipped by plan (already listed) */
    int64_t *skip;        /* steps (1-based) to skip when replayed, sorted */
    int nskip, cap;
    int64_t rb_step;      /* checkpoint step of the last rollback, -1 */
    int rb_count;         /* rollbacks in a row that made no progress: to
                             rb_step, or with no good step in between */
    int good_since_rb;    /* a step computed finite since that rollback */
};

/* policy: "skip" | "rollback" | "abort".  0, or -1 on another word. */
int nf_policy_parse(const char *s, enum nf_policy *p);
/* Zeroed state for the policy.  Allocation happens on the first
 * rollback (nf_free releases it). */
void nf_init(struct nf_state *s, enum nf_policy policy, int patience);
void nf_free(struct nf_state *s);

/* After step `step` (1-based: the step just completed) with verdict
 * flags (0 = a good step).  Returns the action; on NF_DO_ROLLBACK the
 * caller reloads and calls nf_rolled_back. */
enum nf_action nf_after_step(struct nf_state *s, int64_t step, int flags);

/* The caller rolled back to checkpoint step ck: the current run of
 * skipped steps is added to the replay list.  A rollback repeats the last
 * one when it goes to the same checkpoint or no step was computed finite
 * since (checkpoints written while steps fail or are skipped by plan hold
 * the same weights under a newer step).  Returns 0, -1 when out of
 * memory, or 1 when this was one repeat too many (patience rollbacks in
 * a row already): the caller stops. */
int nf_rolled_back(struct nf_state *s, int64_t ck);

/* 1 if step `step` (1-based, the step about to be computed is step) is
 * on the replay list. */
int nf_replay_skip(const struct nf_state *s, int64_t step);

/* "non-finite loss, non-finite gradient norm" etc. for flags, into buf. */
void nf_reason(int flags, char *buf, int len);

#endif
