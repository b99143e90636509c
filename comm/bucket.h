/*
 * bucket.h - gradient buckets: gradients are reduced in buckets of about
 * bucket_mb, filled in the order backward produces them; a bucket starts
 * its non-blocking reduction as soon as its last tensor is final, and
 * progresses (bucketer_progress) while earlier layers still compute.
 *
 * Buckets reduce in place on the gradient arena: the tensors of a bucket
 * must be adjacent in memory.  Tensors are given in backward production
 * order, and a bucket is a run of consecutive tensors of that list whose
 * memory ranges abut (in either direction); a non-adjacent tensor or a
 * full bucket closes it.
 */
#ifndef MPITRON_BUCKET_H
#define MPITRON_BUCKET_H

#include <stddef.h>
#include <stdint.h>

#include "allreduce.h"
#include "codec.h"
#include "comm.h"

struct bucket_tensor {
    size_t off, numel;  /* floats into the gradient arena */
    size_t rows, cols;  /* matrix shape, cols 0 for vectors (PowerSGD) */
};

struct bucket {
    size_t off, n;          /* arena range [off, off + n) */
    int t0, t1;             /* tensors [t0, t1) of the list */
    int pending;            /* tensors not yet final this step */
    int started, done;
    const struct allreduce_algo *algo; /* resolved (auto picks by size) */
    struct comm_op op;
    void *scratch;
    size_t scratch_bytes;
    struct codec_seg *seg;  /* tensors as codec segments (offsets local) */
    struct codec_ctx cctx;  /* compression state (residual) if any */
    double t_start, t_done;
};

struct bucketer {
    const struct comm_group *g;
    float *grads;
    const struct allreduce_algo *algo; /* NULL: auto, per bucket size */
    struct allreduce_tune tune;
    struct bucket *b;
    int nb;
    int *tensor_bucket;     /* tensor index -> bucket */
    int nt;
    int compress;           /* a codec is configured */
    int compress_warmup;    /* dense steps before compression starts */
    int compress_now;       /* this step compresses */
    /* 1-bit Adam (bucketer_set_momentum): NULL, or the momentum arena */
    const float *mom;
    float beta1;
    double local_sumsq;     /* sum g^2 of this rank's gradients, of the
                               buckets reduced as momentum this step */
    /* per step accounting, seconds */
    double t_wait;          /* blocked in bucketer_wait: exposed */
    double t_comm;          /* union of the buckets' start..done spans */
    uint64_t wire_bytes;
};

/*
 * The plan alone (pure): tensor_bucket[i] receives the bucket of tensor i
 * of t[0..nt) (backward production order) for buckets of at most
 * bucket_bytes (a tensor larger than that is a bucket of its own); a
 * tensor that does not abut the open bucket, or would overfill it, opens
 * the next.  Returns the number of buckets.  bucketer_init uses it; the
 * performance model too.
 */
int bucket_plan(const struct bucket_tensor *t, int nt, size_t bucket_bytes,
                int *tensor_bucket);

/*
 * Plan buckets over tensors t[0..nt) (backward production order) of the
 * gradient arena grads, for group g.  algo: "mpi" | "ring" | "rhd" |
 * "hier" | "shm" | "auto" (tune may be NULL: built-in thresholds; auto
 * takes shm for every bucket when grads lie in g->shm's segment, and shm
 * needs them there).  compress: a
 * codec spec ("none", "topk:0.01", ...).  Allocates every buffer it will
 * need.  Returns 0, or -1 with err naming the bad algorithm/codec.
 */
int bucketer_init(struct bucketer *bk, const struct comm_group *g,
                  float *grads, const struct bucket_tensor *t, int nt,
                  size_t bucket_bytes, const char *algo,
                  const struct allreduce_tune *tune, const char *compress,
                  int compress_warmup, uint64_t seed, char *err,
                  size_t errlen);
void bucketer_free(struct bucketer *bk);

/* Start of an optimizer step: resets readiness and accounting, and
 * decides whether this step compresses (step >= compress_warmup). */
void bucketer_begin(struct bucketer *bk, int64_t step);
/* Tensor i's gradient is final: when its bucket is complete, start the
 * bucket's reduction. */
int bucketer_ready(struct bucketer *bk, int i);
/* Advance every open reduction without blocking. */
int bucketer_progress(struct bucketer *bk);
/* Block until every bucket is reduced.  0 or -1. */
int bucketer_wait(struct bucketer *bk);

/*
 * 1-bit Adam's compression stage (Tang et al. 2021).  mom is the momentum
 * every rank of the group agrees on, laid out like the gradients (the same
 * offsets).  From then on, a step that compresses reduces, instead of this
 * rank's gradient g, its share of the new momentum,
 *     x = (beta1 / p) m + (1 - beta1) g          (p ranks),
 * with the codec's error feedback, so the sum all ranks receive is the
 * next momentum beta1 m + (1 - beta1) sum g, compressed.  Before that, the
 * bucket adds sum g^2 to local_sumsq (for the gradient norm bound).
 * Steps that do not compress reduce the gradient as always.
 */
void bucketer_set_momentum(struct bucketer *bk, const float *mom,
                           float beta1);

/* Per-rank compression state (residuals, PowerSGD's Q) for checkpoints:
 * bucket i's state is (*p, *n floats); *n is 0 without compression. */
void bucketer_state(const struct bucketer *bk, int i, float **p, size_t *n);
/* Reset every bucket's compression state (codec_ctx_reset): after a
 * skipped step, whose non-finite gradient the residuals may hold.  Not
 * while reductions are in flight (after bucketer_wait). */
void bucketer_state_reset(struct bucketer *bk);

#endif
