/*
 * metrics.h - the progress line and RUN_DIR/metrics.jsonl.
 *
 * metrics.jsonl: one JSON object per line, per logged step:
 *   step, loss (%.17g: full precision, so runs can be compared bit for
 *   bit; a number that is not finite is null, see json.h), lr, grad_norm, tokens_per_s, mfu, ms_step, ms_compute,
 *   ms_comm (= ms_comm_exposed: time the step waited for gradient
 *   reductions), ms_comm_overlapped (reduction time hidden behind
 *   backward), wire_mb, ms_data, ms_ckpt (saving since the previous line:
 *   a step's line is written before its save), ms_pp_wait (time in the pipeline
 *   schedule spent waiting for neighbouring stages), loss_z (the last
 *   step's loss z-score against the last 100 good steps, null until 20),
 *   skipped (steps of the interval whose update was skipped, nonfinite.h),
 *   and val_loss on the steps where it was measured
 *   (a validation-only line carries step and val_loss; a rollback line
 *   step, rollback_from and skip_steps).  With pp > 1
 *   also: bubble (1 - all stages' compute / (p x the pipeline's span, the
 *   longest stage's schedule), mean over the logged steps), bubble_theory
 *   ((p-1)/(m+p-1)), stage_busy_ms and stage_idle_ms (span - busy; arrays,
 *   one entry per stage, the last step).  With more than one rank also:
 *   straggler_rank (the world rank whose compute time over the interval
 *   exceeds straggler_ratio x the median of all ranks', else -1) and
 *   straggler_ratio (the slowest rank's compute time over the median),
 *   and ms_imbalance (per step, the slowest rank's compute over the
 *   interval minus each rank's, mean over all ranks: the mean idle per
 *   rank at the synchronising all-reduces, as a lower bound; with two
 *   ranks half of what the faster one idles).
 *   Where validation ran, beside val_loss: val_bpb (bits per byte of the
 *   validation text, comparable across tokenizers; when the tokenizer is
 *   known), and with a data mixture val_loss_data and val_bpb_data,
 *   objects keyed by data directory (val_loss and val_bpb are then their
 *   means weighted by the mixture).  tokens (the step's tokens) and
 *   seq_len (its sequence length) when batch_ramp or seq_len_warmup make
 *   them vary.
 */
#ifndef MPITRON_METRICS_H
#define MPITRON_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "json.h"

/* One validation: the loss (weighted mean over the datasets), bits per
 * byte, and per dataset when there are several. */
struct val_stats {
    double loss;
    int has_bpb;
    double bpb;
    int n;                     /* datasets; the arrays only when n > 1 */
    const char *const *names;
    const double *loss_by, *bpb_by;
};

struct step_stats {
    int64_t step, steps;     /* step just completed (1-based), total */
    double loss, lr, grad_norm;
    double tokens_per_s, mfu;
    double ms_step, ms_compute, ms_comm, ms_data, ms_ckpt;
    double ms_comm_overlapped; /* reduction time hidden behind backward;
                                  ms_comm is what was exposed */
    double wire_mb;            /* gradient MB this rank sent per step */
    double ms_pp_wait;         /* in the schedule, not computing */
    int pp;                    /* pipeline stages; the rest only if > 1 */
    double bubble, bubble_theory;
    const double *stage_busy, *stage_idle; /* pp entries, seconds */
    int world;                 /* ranks; the straggler only if > 1 */
    int straggler_rank;        /* -1: none above the threshold */
    double straggler_ratio;    /* slowest compute time / the median */
    double ms_imbalance;       /* balance_imbalance of the ranks' compute
                                  over the interval, per step */
    double eta_s;
    int has_val;
    double val_loss;
    const struct val_stats *val; /* NULL: val_loss alone */
    int64_t tokens;              /* > 0: the last step's tokens, and */
    int seq_len;                 /* its sequence length (varying plans) */
    double loss_z;           /* z-score of loss (NaN: not yet defined) */
    int skipped;             /* steps of the interval skipped */
    const char *skip_reason; /* why (nonfinite.h), when skipped > 0 */
};

struct metrics {
    FILE *jsonl; /* NULL on ranks other than 0 */
    struct json json; /* the line being written */
};

/* Open RUN_DIR/metrics.jsonl for appending (rank 0 passes its run_dir,
 * other ranks NULL).  A resumed run first drops lines whose step is
 * beyond resume_step, so the file describes one consistent history.
 * Returns 0 or -1 with err naming the file. */
int metrics_open(struct metrics *mt, const char *run_dir, int64_t resume_step,
                 char *err, size_t errlen);
void metrics_close(struct metrics *mt);

/* Print the progress line to out and append the JSON object. */
void metrics_log(struct metrics *mt, const struct step_stats *s, FILE *out);
/* Append the record of a rollback (nonfinite=rollback): at step
 * to_step, from step from_step, with the steps whose batches the replay
 * leaves out. */
void metrics_log_rollback(struct metrics *mt, int64_t to_step,
                          int64_t from_step, const int64_t *skip, int n);
/* Append a validation-only record and print it. */
void metrics_log_val(struct metrics *mt, int64_t step, double val_loss,
                     FILE *out);
/* The same with bits per byte and per-dataset figures. */
void metrics_log_val_stats(struct metrics *mt, int64_t step,
                           const struct val_stats *v, FILE *out);

#endif
