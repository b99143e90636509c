/*
 * perf_internal.h - what the performance model's files share (not an
 * interface of mpitron): perf_model.c's lookups for perf_predict.c.
 */
#ifndef MPITRON_PERF_INTERNAL_H
#define MPITRON_PERF_INTERNAL_H

#include "perf_model.h"

/* One micro-batch's compute figures for gc at (tp, load, threads, mb): the
 * calibrated point, or the nearest of the same shape and tp scaled by the
 * cores' share min(threads, cores / load) and linearly in mb.  load may
 * be fractional: the ranks of the node computing at once on average.  -1
 * with err when the calibration has no figure of that shape and tp. */
int perf_compute_costs(const struct perf_calib *pc,
                       const struct gpt_config *gc, int tp, double load,
                       int threads, int mb, struct perf_compute *out,
                       char *err, size_t errlen);

/* Seconds per parameter of the optimizer at load (the nearest calibrated
 * load, scaled by the share of memory bandwidth); 0 without figures. */
double perf_optim_per_param(const struct perf_calib *pc, int load);

/* Nodes spanned by the ranks {k * stride : k < size}, rpn per node. */
int perf_span(int size, int stride, int rpn);

/* The trainer's stage boundaries bound[0..pp] (pp_partition: auto from
 * the compute figures cc, params, or an explicit list).  0 or -1. */
int perf_stage_bounds(const struct config *c, const struct gpt_config *gc,
                      int pp, const struct perf_compute *cc, int *bound,
                      char *err, size_t errlen);

#endif
