/*
 * codec_internal.h - what the codec files share: the codec objects, the
 * 16-bit conversions, and the ring reduction (fp32 accumulation with an
 * fp32, fp16 or bf16 wire) that fp16, bf16 and PowerSGD run on.
 * Not for use outside comm/codec*.c.
 */
#ifndef MPITRON_CODEC_INTERNAL_H
#define MPITRON_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

extern const struct codec codec_fp16, codec_bf16, codec_topk,
    codec_powersgd, codec_sign;

/* Floats of segment s (rows * cols, or rows for a vector). */
size_t codec_seg_len(const struct codec_seg *s);
/* A byte count rounded up to a cache line (scratch regions are aligned). */
size_t codec_align(size_t bytes);

/* Parse helper of the codecs without an argument. */
int codec_parse_noarg(const char *arg, double *param, char *err,
                      size_t errlen);

/* ---- ring reduction (codec_ring.c) ------------------------------------ */

enum codec_wire { CODEC_WIRE_F32, CODEC_WIRE_F16, CODEC_WIRE_BF16 };

/* ---- 16-bit arrays (codec_half.c), round to nearest even --------------
 * fp16: finite values beyond the range clamp to +-65504; inf stays inf,
 * NaN a quiet NaN; subnormals are kept.  bf16: finite values that would
 * round to inf clamp to +-0x1.fep127.  w is F16 or BF16. */

/* dst = C(src); with resid, resid += src - D(dst). */
void codec_half_encode(enum codec_wire w, const float *src, uint16_t *dst,
                       float *resid, size_t n);
/* dst = D(src), or dst += D(src) when add. */
void codec_half_decode(enum codec_wire w, const uint16_t *src, float *dst,
                       size_t n, int add);
/* data = D(C(data)); with resid, resid += the rounding error. */
void codec_half_round(enum codec_wire w, float *data, float *resid, size_t n);

/*
 * Sum all-reduce of data (n floats) in place around the ring of op->g:
 * p-1 reduce-scatter steps (chunk c is summed in the order c+1, c+2, ...,
 * c), then p-1 all-gather steps.  Every step is one Irecv from the left
 * and one Isend to the right (op->req[0..1], op->tag), so the operation
 * advances one step per completed exchange, never blocking.  With a
 * 16-bit wire a rank encodes its fp32 partial sum for the next hop and,
 * when resid is not NULL, adds the encoding error to resid; the owner of
 * a chunk rounds the chunk's final sum to the wire format (error to
 * resid) so that every rank ends with the same bits.
 */
struct codec_ring {
    float *data;
    float *resid;         /* NULL: errors dropped */
    size_t n;
    enum codec_wire wire;
    void *sbuf, *rbuf;    /* codec_ring_buf_bytes() from the scratch */
    int tag;              /* op->tag */
    int step;             /* exchanges completed, 0 .. 2(p-1) */
    int rchunk;           /* chunk of the exchange in flight */
};

/* Scratch bytes for the wire buffers of a ring over n floats, p ranks. */
size_t codec_ring_buf_bytes(size_t n, enum codec_wire w, int p);
/* Exact bytes rank `rank` of p sends for a ring over n floats. */
uint64_t codec_ring_wire_bytes(size_t n, enum codec_wire w, int rank, int p);
/* Post the first exchange (or complete at once: p == 1 or n == 0).
 * 0 or -1 (MPI error).  Adds the bytes sent to op->wire_bytes. */
int codec_ring_start(struct codec_ring *rg, struct comm_op *op, float *data,
                     float *resid, size_t n, enum codec_wire w, void *bufs);
/* Advance without blocking: 1 when every rank's data holds the sum, 0 if
 * not yet, -1 on an MPI error. */
int codec_ring_test(struct codec_ring *rg, struct comm_op *op);

#endif
