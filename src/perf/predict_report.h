/*
 * predict_report.h - `mpitron predict`'s reports (predict_report.c): a
 * measured sweep against the model, and the extrapolation to GPT-2 on
 * thousands of nodes.  Each returns 0 or -1 with err.
 */
#ifndef MPITRON_PREDICT_REPORT_H
#define MPITRON_PREDICT_REPORT_H

#include <stddef.h>

#include "config.h"
#include "model.h"
#include "perf_model.h"

/* GPT-2 small, medium, large and XL (vocabulary 50257, 1024 tokens). */
void predict_gpt2_shapes(struct gpt_config *shapes);

/* Every row of csv (jobs/scaling.sh's columns) predicted with c's model
 * and that row's layout; a markdown table with the error of each and the
 * mean absolute error.  write: fill the predicted_ms_step and model_error
 * columns of csv (rewritten through a temporary file). */
int predict_measured(const struct perf_calib *pc, const struct config *c,
                     const char *csv, int write, char *err, size_t errlen);

/* Weak scaling of the GPT-2 shapes (node_batch sequences per node) on
 * 1 .. max_nodes nodes of the calibrated kind for every network in nets
 * (Gb/s, comma-separated; latency_us each): the fastest layout that fits
 * and its efficiency, then where hier or compression pays.  NULL
 * arguments take the defaults (100,400; 2; 4096; 8). */
int predict_extrapolate(const struct perf_calib *pc, const struct config *c,
                        const char *nets, const char *latency_us,
                        const char *max_nodes, const char *node_batch,
                        char *err, size_t errlen);

#endif
