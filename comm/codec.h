/*
 * codec.h - gradient compression codecs with error feedback, each a
 * reduction of its own (a comm_op) over a group.
 *
 *   fp16          IEEE half on the wire (round to nearest even); reduced
 *                 around a ring, every partial sum accumulated in fp32
 *   bf16          bfloat16 on the wire (round to nearest even), fp32
 *                 accumulation, as fp16
 *   topk:RATIO    the ceil(RATIO*n) largest-magnitude values of each
 *                 segment, sent as (uint32 index, float value) pairs and
 *                 exchanged by all-gather; every rank sums all of them
 *   powersgd:RANK rank-RANK approximation of each matrix-shaped segment
 *                 (Vogels et al. 2019: P = M Q, all-reduce P,
 *                 orthonormalise, Q = M^T P, all-reduce Q, M ~ P Q^T, Q
 *                 kept as warm start); vector segments go dense
 *   sign          1 bit per value plus one fp32 scale (mean |x|) per chunk
 *                 of 256 values, exchanged by all-gather and summed
 *
 * Error feedback (every lossy codec): with residual r kept per rank,
 *   x = g + r;  send C(x);  r' = x - D(C(x))
 * so what was sent plus the new residual equals the input plus the old
 * residual, exactly up to fp32 rounding of the subtraction.  On completion
 * buf holds sum over ranks of D(C(x_rank)) on every rank (identical bits).
 *
 * comm/ depends on MPI only.
 */
#ifndef MPITRON_CODEC_H
#define MPITRON_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"

/* A tensor inside a compressed buffer: floats [off, off + rows*cols);
 * cols == 0 marks a vector (rows values). */
struct codec_seg {
    size_t off, rows, cols;
};

struct codec;

/* Everything a codec operation needs besides the buffer; owned by the
 * caller (the bucket) for the whole run. */
struct codec_ctx {
    const struct codec *codec;
    double param;                /* RATIO or RANK; 0 if none */
    const struct codec_seg *seg; /* segments covering [0, n) in order */
    int nseg;
    size_t n;                    /* floats in the buffer */
    float *state;                /* state_floats(): residual first (n),
                                    then codec state (PowerSGD's Q) */
    size_t state_n;
    uint64_t seed;               /* for PowerSGD's initial Q */
};

struct codec {
    const char *name;
    int lossy;                   /* has error feedback */
    /* parse "RATIO"/"RANK" (arg NULL when none given); 0 or -1 + err */
    int (*parse)(const char *arg, double *param, char *err, size_t errlen);
    /* persistent state floats (residual + codec state) for ctx's layout */
    size_t (*state_floats)(const struct codec_ctx *ctx);
    /* scratch bytes for one operation over group g */
    size_t (*scratch)(const struct codec_ctx *ctx, const struct comm_group *g);
    /* bytes this rank puts on the wire for one reduction */
    uint64_t (*wire_bytes)(const struct codec_ctx *ctx,
                           const struct comm_group *g);
    /* out = D(C(in)) for the whole buffer, locally (no communication, no
     * residual): what the codec would transmit, for tests and bench */
    void (*roundtrip)(const struct codec_ctx *ctx, const float *in,
                      float *out, void *scratch);
    const struct comm_op_ops *ops; /* op->state points at the codec_ctx */
};

/* NULL-terminated: fp16, bf16, topk, powersgd, sign */
extern const struct codec *const codecs[];

/*
 * Parse a spec "none" | "fp16" | "bf16" | "topk:0.01" | "powersgd:4" |
 * "sign" into ctx->codec and ctx->param ("none" gives codec NULL).
 * Returns 0 or -1 with err naming the spec and the known codecs.
 */
int codec_parse(const char *spec, struct codec_ctx *ctx, char *err,
                size_t errlen);

/* Set the layout, allocate and zero ctx->state.  0 or -1 (no memory). */
int codec_ctx_init(struct codec_ctx *ctx, const struct codec_seg *seg,
                   int nseg, size_t n, uint64_t seed);
void codec_ctx_free(struct codec_ctx *ctx);

/* Prepare op for a compressed sum all-reduce of buf (ctx->n floats). */
void codec_op_init(struct comm_op *op, struct codec_ctx *ctx,
                   const struct comm_group *g, float *buf, void *scratch,
                   size_t scratch_bytes);

/* Blocking convenience. 0 or -1. */
int codec_allreduce(struct codec_ctx *ctx, const struct comm_group *g,
                    float *buf);

#endif
