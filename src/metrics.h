/*
 * metrics.h - the progress line and RUN_DIR/metrics.jsonl.
 *
 * metrics.jsonl: one JSON object per line, per logged step:
 *   step, loss (%.17g: full precision, so runs can be compared bit for
 *   bit; a number that is not finite is null, see json.h), lr, grad_norm, tokens_per_s, mfu, ms_step, ms_compute,
 *   ms_comm (= ms_comm_exposed: time the step waited for gradient
 *   reductions), ms_comm_overlapped (reduction time hidden behind
 *   backward), wire_mb, ms_data, ms_ckpt, ms_pp_wait (time in the pipeline
 *   schedule spent waiting for neighbouring stages), and val_loss on the steps where it was measured
 *   (a validation-only line carries step and val_loss).  With pp > 1
 *   also: bubble (1 - all stages' compute / (p x the pipeline's span, the
 *   longest stage's schedule), mean over the logged steps), bubble_theory
 *   ((p-1)/(m+p-1)), stage_busy_ms and stage_idle_ms (span - busy; arrays,
 *   one entry per stage, the last step).
 */
#ifndef MPITRON_METRICS_H
#define MPITRON_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "json.h"

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
    double eta_s;
    int has_val;
    double val_loss;
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
/* Append a validation-only record and print it. */
void metrics_log_val(struct metrics *mt, int64_t step, double val_loss,
                     FILE *out);

#endif
