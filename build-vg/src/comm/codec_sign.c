/*
 * codec_sign.c - sign: each segment is cut into chunks of 256 values (the
 * last one shorter); a chunk travels as one fp32 scale, the mean |x| over
 * the chunk, and one bit per value, x >= 0.  D gives +scale or -scale.
 *
 * Message of one rank (MPI_Iallgather, the same size on every rank):
 *   float scale[C]            C = sum over segments of ceil(len / 256)
 *   uint32 bits[ceil(n/32)]   bit i % 32 of word i / 32: x[i] >= 0
 * Every rank adds the ranks' decoded values into a zeroed buffer in rank
 * order.  Scratch: send (message) | receive (p messages).
 */
#include "codec_internal.h"

#include <math.h>
#include <string.h>

#define SIGN_CHUNK 256

static size_t sign_chunks(const struct codec_ctx *ctx)
{
    size_t c = 0;
    for (int s = 0; s < ctx->nseg; s++)
        c += (codec_seg_len(&ctx->seg[s]) + SIGN_CHUNK - 1) / SIGN_CHUNK;
    return c;
}

/* Bytes of one rank's message. */
static size_t sign_msg_bytes(const struct codec_ctx *ctx)
{
    return 4 * sign_chunks(ctx) + 4 * ((ctx->n + 31) / 32);
}

/* mean |x| over [lo, hi) (hi > lo), four partial sums in double: a fixed
 * order, so the same bits wherever it runs. */
static float sign_scale(const float *x, size_t lo, size_t hi)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = lo;
    for (; i + 4 <= hi; i += 4) {
        s0 += fabs((double)x[i]);
        s1 += fabs((double)x[i + 1]);
        s2 += fabs((double)x[i + 2]);
        s3 += fabs((double)x[i + 3]);
    }
    for (; i < hi; i++)
        s0 += fabs((double)x[i]);
    return (float)(((s0 + s1) + (s2 + s3)) / (double)(hi - lo));
}

/* The scales of x's chunks and its sign bits (n values). */
static void sign_encode(const struct codec_ctx *ctx, const float *x,
                        float *scale, uint32_t *bits)
{
    size_t c = 0, n = ctx->n, W = n / 32;
    for (size_t w = 0; w < W; w++) {
        const float *xw = x + 32 * w;
        uint32_t acc = 0;
        for (unsigned j = 0; j < 32; j++)
            acc |= (uint32_t)(xw[j] >= 0.0f) << j;
        bits[w] = acc;
    }
    if (n % 32) {
        uint32_t acc = 0;
        for (size_t i = 32 * W; i < n; i++)
            acc |= (uint32_t)(x[i] >= 0.0f) << (i % 32);
        bits[W] = acc;
    }
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t end = sg->off + codec_seg_len(sg);
        for (size_t lo = sg->off; lo < end; lo += SIGN_CHUNK, c++)
            scale[c] = sign_scale(x, lo, lo + SIGN_CHUNK < end ? lo + SIGN_CHUNK
                                                               : end);
    }
}

/* out[i] = +-scale of the chunk (add: out[i] += it). */
static void sign_decode(const struct codec_ctx *ctx, const float *scale,
                        const uint32_t *bits, float *out, int add)
{
    size_t c = 0;
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t end = sg->off + codec_seg_len(sg);
        for (size_t lo = sg->off; lo < end; lo += SIGN_CHUNK, c++) {
            size_t hi = lo + SIGN_CHUNK < end ? lo + SIGN_CHUNK : end;
            uint32_t sp;
            memcpy(&sp, &scale[c], sizeof sp);
            for (size_t i = lo; i < hi; i++) {
                /* clear bit: flip the sign of +scale */
                uint32_t neg = (~bits[i / 32] >> (i % 32)) & 1u;
                uint32_t vb = sp ^ (neg << 31);
                float v;
                memcpy(&v, &vb, sizeof v);
                if (add)
                    out[i] += v;
                else
                    out[i] = v;
            }
        }
    }
}

static size_t sign_state_floats(const struct codec_ctx *ctx)
{
    return ctx->n;
}

static size_t sign_scratch(const struct codec_ctx *ctx,
                           const struct comm_group *g)
{
    size_t m = sign_msg_bytes(ctx);
    return codec_align(m) + codec_align(m * (size_t)g->size);
}

static uint64_t sign_wire_bytes(const struct codec_ctx *ctx,
                                const struct comm_group *g)
{
    return (uint64_t)(g->size - 1) * sign_msg_bytes(ctx);
}

static int sign_start(struct comm_op *op)
{
    struct codec_ctx *ctx = op->state;
    size_t m = sign_msg_bytes(ctx), C = sign_chunks(ctx);
    char *send = op->scratch, *recv = send + codec_align(m);
    float *x = ctx->state, *scale = (float *)send;
    uint32_t *bits = (uint32_t *)(send + 4 * C);

    for (size_t i = 0; i < ctx->n; i++)
        x[i] += op->buf[i];
    sign_encode(ctx, x, scale, bits);
    /* r' = x - D(C(x)), decoded into buf on the way */
    sign_decode(ctx, scale, bits, op->buf, 0);
    for (size_t i = 0; i < ctx->n; i++)
        x[i] -= op->buf[i];
    memset(op->buf, 0, ctx->n * sizeof(float));
    op->wire_bytes = (uint64_t)(op->g->size - 1) * m;
    op->nreq = 1;
    op->step = 0;
    return MPI_Iallgather(send, (int)m, MPI_BYTE, recv, (int)m, MPI_BYTE,
                          op->g->comm, &op->req[0]) == MPI_SUCCESS
               ? 0
               : -1;
}

static int sign_test(struct comm_op *op)
{
    struct codec_ctx *ctx = op->state;
    size_t m = sign_msg_bytes(ctx), C = sign_chunks(ctx);
    const char *recv = (const char *)op->scratch + codec_align(m);
    int flag = 0;

    if (op->step)
        return 1;
    if (MPI_Test(&op->req[0], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
        return -1;
    if (!flag)
        return 0;
    op->nreq = 0;
    for (int q = 0; q < op->g->size; q++) {
        const char *msg = recv + m * (size_t)q;
        sign_decode(ctx, (const float *)msg, (const uint32_t *)(msg + 4 * C),
                    op->buf, 1);
    }
    op->step = 1;
    return 1;
}

static void sign_finish(struct comm_op *op)
{
    op->nreq = 0;
}

static void sign_roundtrip(const struct codec_ctx *ctx, const float *in,
                           float *out, void *scratch)
{
    float *scale = scratch;
    uint32_t *bits = (uint32_t *)((char *)scratch + 4 * sign_chunks(ctx));
    sign_encode(ctx, in, scale, bits);
    sign_decode(ctx, scale, bits, out, 0);
}

static const struct comm_op_ops sign_ops = {
    .name = "sign", .start = sign_start, .test = sign_test,
    .finish = sign_finish,
};

const struct codec codec_sign = {
    .name = "sign", .lossy = 1, .parse = codec_parse_noarg,
    .state_floats = sign_state_floats, .state_init = NULL,
    .scratch = sign_scratch, .wire_bytes = sign_wire_bytes,
    .roundtrip = sign_roundtrip, .ops = &sign_ops,
};
