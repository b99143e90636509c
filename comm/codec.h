/*
 * codec.h - gradient compression codecs with error feedback, each a
 * reduction of its own (a comm_op) over a group.
 *
 *   fp16          IEEE half on the wire (round to nearest even; finite
 *                 values beyond the fp16 range are clamped to +-65504, not
 *                 sent as inf: the excess stays in the residual); reduced
 *                 around a ring (reduce-scatter then all-gather), every
 *                 hop sends 16-bit values, the receiver accumulates in
 *                 fp32 and re-encodes for the next hop
 *   bf16          bfloat16 on the wire (round to nearest even, clamped to
 *                 the largest finite bf16), the same ring as fp16
 *   topk:RATIO    the max(1, ceil(RATIO*len)) largest-magnitude values of
 *                 each segment (ties: lower index first).  Message, per
 *                 segment: the kept indices in ascending order as LEB128
 *                 varints of their deltas (the first from the segment
 *                 start), then the fp32 values in that order; ~5.3 bytes
 *                 a value at ratio 0.01.  Lengths differ between ranks:
 *                 each rank sends its message to each of the others
 *                 (point-to-point, op->tag) and receives theirs into
 *                 worst-case slots; every rank sums all values in rank
 *                 order
 *   powersgd:RANK rank-r approximation, r = min(RANK, rows, cols), of each
 *                 matrix segment with r*(rows+cols) < rows*cols (Vogels et
 *                 al. 2019: P = sum_i M_i Q, orthonormalise P (modified
 *                 Gram-Schmidt, twice, in double), Q_i = M_i^T P, sum Q,
 *                 M ~ P Q^T; the summed Q is kept as warm start); vector
 *                 segments and matrices too small to gain go dense (x = g + r
 *                 summed in fp32, r' = 0).  Sums of P, Q and the dense part
 *                 go around an fp32 ring: two rounds per step
 *   sign          1 bit per value (x >= 0) plus one fp32 scale (mean |x|)
 *                 per chunk of 256 values (chunks never straddle a
 *                 segment), exchanged by all-gather, summed in rank order
 *
 * Error feedback (every lossy codec): with residual r kept per rank,
 *   x = g + r;  send C(x);  r' = x - D(C(x))
 * so what was sent plus the new residual equals the input plus the old
 * residual, exactly up to fp32 rounding of the subtraction.  On completion
 * buf holds sum over ranks of D(C(x_rank)) on every rank (identical bits);
 * for fp16/bf16 up to the rounding of partial sums to 16 bits along the
 * ring: a rank that re-encodes a partial sum for the next hop (or the
 * final sum of the chunk it owns) adds that error to its own residual at
 * those positions, so it is fed back too.  So for every codec
 *   buf == sum over ranks of (x_rank - r'_rank)
 * up to fp32 rounding, and the running sum of the results over steps
 * tracks the running sum of the gradients with a bounded error.  For
 * PowerSGD, D(C(x_rank)) = P (M_rank^T P)^T, P from the summed P.
 *
 * Summation order depends only on the rank count and the layout, so the
 * result is deterministic and bitwise identical on every rank.
 *
 * Wire bytes (codec->wire_bytes, op->wire_bytes): bytes this rank sends
 * for one reduction, forwarding included.  Ring codecs count their own
 * messages exactly; all-gather codecs count (p-1) * message, what a ring
 * all-gather sends from each rank; topk sends exactly that, its message
 * to each of the p-1 others.  A dense fp32 ring all-reduce of n floats
 * sends about 2(p-1)/p * 4n bytes per rank in this convention.
 * op->wire_bytes is always the actual count of the operation.
 * codec->wire_bytes equals it for every codec but topk, whose message
 * length depends on the data: there it is an upper bound, (p-1) times
 * the longest message the layout allows (the same bound sizes its
 * receive slots).  (All-gather traffic grows with p: topk:0.01 is ~1.3%
 * of the dense payload per message on Gaussian noise, ~0.66 p% of a
 * dense ring all-reduce, 2.6% at p = 4.)
 *
 * Several operations may be in flight on one communicator (one per
 * bucket) if every rank starts them in the same order.  The ring codecs
 * and topk use point-to-point messages tagged with op->tag (drawn by
 * comm_op_start); a codec posts collectives (sign's MPI_Iallgather) only
 * from start, never from test, whose calls interleave with other
 * operations' starts differently on different ranks.
 *
 * comm/ depends on MPI only (and libm; PowerSGD uses cblas_sgemm from
 * OpenBLAS for the local M Q, M^T P and residual products).
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
    uint64_t seed;               /* for PowerSGD's initial Q: the same
                                    on every rank of the group */
};

struct codec {
    const char *name;
    int lossy;                   /* has error feedback */
    /* parse "RATIO"/"RANK" (arg NULL when none given); 0 or -1 + err */
    int (*parse)(const char *arg, double *param, char *err, size_t errlen);
    /* persistent state floats (residual + codec state) for ctx's layout */
    size_t (*state_floats)(const struct codec_ctx *ctx);
    /* fill the codec part of the freshly zeroed state (PowerSGD's initial
     * Q, standard normal from (seed, segment, index)); NULL: zeros */
    void (*state_init)(struct codec_ctx *ctx);
    /* scratch bytes for one operation over group g (also enough for
     * roundtrip, for any g) */
    size_t (*scratch)(const struct codec_ctx *ctx, const struct comm_group *g);
    /* bytes this rank puts on the wire for one reduction (convention
     * above); equals op->wire_bytes after the operation, except for
     * topk: an upper bound of it (message lengths depend on the data) */
    uint64_t (*wire_bytes)(const struct codec_ctx *ctx,
                           const struct comm_group *g);
    /* out = D(C(in)) for the whole buffer, locally (no communication, no
     * residual): what the codec would transmit, for tests and bench.
     * PowerSGD uses ctx's current Q (read only) and P = orth(in Q): the
     * distributed result is roundtrip(sum of the ranks' x), not the sum
     * of the roundtrips.  scratch: codec->scratch(ctx, any g) bytes. */
    void (*roundtrip)(const struct codec_ctx *ctx, const float *in,
                      float *out, void *scratch);
    const struct comm_op_ops *ops; /* op->state points at the codec_ctx */
};

/* NULL-terminated: fp16, bf16, topk, powersgd, sign */
extern const struct codec *const codecs[];

/*
 * Parse a spec "none" | "fp16" | "bf16" | "topk:0.01" | "powersgd:4" |
 * "sign" into ctx->codec and ctx->param ("none" gives codec NULL); other
 * fields of ctx are left alone.  RATIO is in (0, 1], RANK an integer in
 * [1, 4096].  Returns 0 or -1 with err naming the spec and the known
 * codecs.
 */
int codec_parse(const char *spec, struct codec_ctx *ctx, char *err,
                size_t errlen);

#define CODEC_MAX_N ((size_t)1 << 28) /* floats per buffer (1 GiB) */

/* Set the layout (seg is borrowed: it must outlive ctx), allocate
 * ctx->state (owned by ctx), zero it and let the codec initialise its
 * part.  ctx->codec and ctx->param come from
 * codec_parse (codec NULL: no state).  Returns 0, or -1 when out of
 * memory, when the segments do not cover [0, n) in order, or when n >
 * CODEC_MAX_N (byte counts of messages are MPI ints); ctx->state is then
 * NULL. */
int codec_ctx_init(struct codec_ctx *ctx, const struct codec_seg *seg,
                   int nseg, size_t n, uint64_t seed);
/* Back to the state codec_ctx_init made: residual zero, the codec part
 * initialised again (PowerSGD's Q from the seed).  For a step whose
 * gradient was not finite (its residual may hold NaNs).  Not while an
 * operation on ctx is in flight. */
void codec_ctx_reset(struct codec_ctx *ctx);
/* Free ctx->state; safe on a zeroed or already freed ctx. */
void codec_ctx_free(struct codec_ctx *ctx);

/* Prepare op for a compressed sum all-reduce of buf (ctx->n floats) with
 * caller-owned scratch of ctx->codec->scratch(ctx, g) bytes; nothing is
 * allocated.  ctx->codec must not be NULL.  Then comm_op_start/test/wait;
 * the operation updates the residual in ctx->state (and PowerSGD's Q)
 * until it completes: leave ctx->state alone in between. */
void codec_op_init(struct comm_op *op, struct codec_ctx *ctx,
                   const struct comm_group *g, float *buf, void *scratch,
                   size_t scratch_bytes);

/* Blocking convenience: allocate scratch, start, wait, free.  0, or -1
 * (codec NULL, no memory, MPI error). */
int codec_allreduce(struct codec_ctx *ctx, const struct comm_group *g,
                    float *buf);

#endif
