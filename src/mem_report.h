/*
 * mem_report.h - memory you can see: per rank, the bytes of every role
 * computed from what the trainer allocated, next to the measured RSS.
 *
 * Roles (each counted once):
 *   params       parameters: the whole arena; ZeRO 3: the shard plus the
 *                working slots (the embedding unit's and two blocks')
 *   grads        gradients: the whole arena; ZeRO >= 2: the shard
 *   optim        AdamW moments resident in memory: 2 x the arena; ZeRO
 *                >= 1: 2 x the shard; offloaded: the streaming window
 *                (two blocks of each moment)
 *   acts         saved activations: every pipeline slot's tensors kept
 *                from a micro-batch's forward to its backward
 *   scratch      backward (and recomputation) scratch, token copies
 *   comm         communication buffers: ring scratch of the buckets and
 *                of ZeRO's operations, ZeRO's gradient staging buffers,
 *                error-feedback residuals, the tp all-reduce scratch,
 *                the pipeline's gradient send/receive buffers
 *   offload_file the moments in the offload file (on disk, not counted
 *                in total)
 * rss_peak is getrusage's maximum resident set, rss_now the resident set
 * now (/proc/self/statm); both include what the accounting does not see
 * (MPI, BLAS and HDF5 buffers, code, the start-up GEMM measurement).
 */
#ifndef MPITRON_MEM_REPORT_H
#define MPITRON_MEM_REPORT_H

#include <stdio.h>

#include "train/train.h"

struct mem_report {
    double params, grads, optim, acts, scratch, comm; /* bytes */
    double total;         /* the six above */
    double offload_file;
    double rss_peak, rss_now;
};

/* This rank's report (local). */
void mem_report_rank(const struct trainer *tr, struct mem_report *r);

/* Gather every rank's report into all (world-size entries) on world rank
 * 0; all may be NULL elsewhere.  Collective over the world. */
void mem_report_gather(const struct trainer *tr, struct mem_report *all);
/* Print a header and one line per rank (roles in MiB, total, measured
 * RSS) of the n gathered reports. */
void mem_report_print(FILE *out, const struct config *c,
                      const struct mem_report *all, int n);
/* Into an open JSON object: rank 0's roles as rss_peak_mb, params_mb,
 * grads_mb, optimizer_mb, activations_mb, scratch_mb, comm_mb,
 * computed_mb, offload_file_mb, rss_now_mb (MiB), then
 * activations_mb_per_rank (an array) and memory_per_rank (an array of
 * objects with the roles, computed_mb and rss_peak_mb of every rank). */
struct json;
void mem_report_json(struct json *j, const struct mem_report *all, int n);
/* Both, for the start-up banner: gather and print on rank 0. */
void mem_report_banner(const struct trainer *tr, FILE *out);

/* micro_batch=auto: from tr built with micro-batches of 1, the largest
 * divisor of the per-rank batch (that the batch plan accepts) whose
 * computed total, on every rank, is within mem_budget_mb: the roles that
 * do not depend on it from tr, the activations, scratch and pipeline
 * links from pipeline_bytes, the tp scratch from its algorithm.  Returns
 * 0 with *mb, or -1 with err naming the need when even 1 does not fit.
 * Collective over the world. */
int mem_budget_pick(const struct trainer *tr, int *mb, char *err,
                    size_t errlen);
/* 0 when this rank's computed total is within mem_budget_mb, else -1
 * with err naming the rank, the roles and what lowers them (local). */
int mem_budget_check(const struct trainer *tr, char *err, size_t errlen);

#endif
