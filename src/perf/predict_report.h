/*
 * predict_report.h - `mpitron predict`'s reports (predict_report.c): a
 * measured sweep against the model, and the extrapolation to GPT-2 on
 * thousands of nodes.  Each returns 0 or -1 with err.
 */
#ifndef MPITRON_PREDICT_REPORT_H
#define MPITRON_PREDICT_REPORT_H

#include <stddef.h>

#include "config/config.h"
#include "model/model.h"
#include "perf_model.h"

/* GPT-2 small, medium, large and XL (vocabulary 50257, 1024 tokens). */
void predict_gpt2_shapes(struct gpt_config *shapes);

/* Every row of csv (jobs/scaling.sh's columns) predicted with c's model
 * and that row's layout; a markdown table with the error of each and the
 * mean absolute error.  write: fill the predicted_ms_step and model_error
 * columns of csv (rewritten through a temporary file). */
int predict_measured(const struct perf_calib *pc, const struct config *c,
                     const char *csv, int write, char *err, size_t errlen);

/* Options of the extrapolation, as given (NULL: the default). */
struct extrap_opts {
    const char *nets;       /* Gb/s, comma-separated (100,400) */
    const char *latency_us; /* between nodes (2) */
    const char *max_nodes;  /* (4096) */
    const char *node_batch; /* sequences per node and step (8) */
    const char *node_cores; /* ranks per node, one per core (calibrated) */
    const char *node_mem_gb; /* memory per node (calibrated) */
};

/* Weak scaling of the GPT-2 shapes (node_batch sequences per node) on
 * 1 .. max_nodes nodes (node_cores ranks of the calibrated per-core
 * speed, node_mem_gb) for every network: the fastest layout that fits and
 * its efficiency, then where hier or compression pays. */
int predict_extrapolate(const struct perf_calib *pc, const struct config *c,
                        const struct extrap_opts *o, char *err,
                        size_t errlen);

#endif
