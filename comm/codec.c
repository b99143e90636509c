/*
 * codec.c - the codec table, spec parsing, contexts (layout + residual
 * state), and the glue that turns a context into a comm_op.
 */
#include "codec_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CODEC_KNOWN "none, fp16, bf16, topk:RATIO, powersgd:RANK, sign"

const struct codec *const codecs[] = {
    &codec_fp16, &codec_bf16, &codec_topk, &codec_powersgd, &codec_sign,
    NULL,
};

size_t codec_seg_len(const struct codec_seg *s)
{
    return s->cols ? s->rows * s->cols : s->rows;
}

size_t codec_align(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

int codec_parse_noarg(const char *arg, double *param, char *err,
                      size_t errlen)
{
    if (arg) {
        snprintf(err, errlen, "this codec takes no argument (got ':%s')",
                 arg);
        return -1;
    }
    *param = 0.0;
    return 0;
}

int codec_parse(const char *spec, struct codec_ctx *ctx, char *err,
                size_t errlen)
{
    char msg[256];
    const char *colon, *arg;
    size_t len;

    if (!spec)
        spec = "";
    colon = strchr(spec, ':');
    len = colon ? (size_t)(colon - spec) : strlen(spec);
    arg = colon ? colon + 1 : NULL;
    if (len == 4 && strncmp(spec, "none", 4) == 0 && !arg) {
        ctx->codec = NULL;
        ctx->param = 0.0;
        return 0;
    }
    for (int i = 0; codecs[i]; i++) {
        const struct codec *c = codecs[i];
        double param = 0.0;
        if (strlen(c->name) != len || strncmp(spec, c->name, len) != 0)
            continue;
        if (c->parse(arg, &param, msg, sizeof msg) != 0) {
            snprintf(err, errlen,
                     "compress spec '%s': %s (known codecs: " CODEC_KNOWN
                     ")", spec, msg);
            return -1;
        }
        ctx->codec = c;
        ctx->param = param;
        return 0;
    }
    snprintf(err, errlen,
             "compress spec '%s': unknown codec '%.*s' (known codecs: "
             CODEC_KNOWN ")", spec, (int)len, spec);
    return -1;
}

/* Segments cover [0, n) in order, without gaps. */
static int codec_layout_ok(const struct codec_seg *seg, int nseg, size_t n)
{
    size_t off = 0;
    if (nseg < 0 || (nseg > 0 && !seg))
        return 0;
    for (int s = 0; s < nseg; s++) {
        if (seg[s].off != off)
            return 0;
        off += codec_seg_len(&seg[s]);
    }
    return off == n;
}

int codec_ctx_init(struct codec_ctx *ctx, const struct codec_seg *seg,
                   int nseg, size_t n, uint64_t seed)
{
    ctx->seg = seg;
    ctx->nseg = nseg;
    ctx->n = n;
    ctx->seed = seed;
    ctx->state = NULL;
    ctx->state_n = 0;
    if (!codec_layout_ok(seg, nseg, n))
        return -1;
    if (!ctx->codec)
        return 0;
    if (n > CODEC_MAX_N) /* MPI int byte counts, topk's uint32 indices */
        return -1;
    ctx->state_n = ctx->codec->state_floats(ctx);
    ctx->state = calloc(ctx->state_n ? ctx->state_n : 1, sizeof(float));
    if (!ctx->state) {
        ctx->state_n = 0;
        return -1;
    }
    if (ctx->codec->state_init)
        ctx->codec->state_init(ctx);
    return 0;
}

void codec_ctx_reset(struct codec_ctx *ctx)
{
    if (!ctx->codec || !ctx->state)
        return;
    memset(ctx->state, 0, ctx->state_n * sizeof(float));
    if (ctx->codec->state_init)
        ctx->codec->state_init(ctx);
}

void codec_ctx_free(struct codec_ctx *ctx)
{
    free(ctx->state);
    ctx->state = NULL;
    ctx->state_n = 0;
}

void codec_op_init(struct comm_op *op, struct codec_ctx *ctx,
                   const struct comm_group *g, float *buf, void *scratch,
                   size_t scratch_bytes)
{
    memset(op, 0, sizeof *op);
    op->ops = ctx->codec->ops;
    op->g = g;
    op->buf = buf;
    op->n = ctx->n;
    op->scratch = scratch;
    op->scratch_bytes = scratch_bytes;
    for (int i = 0; i < COMM_OP_MAX_REQS; i++)
        op->req[i] = MPI_REQUEST_NULL;
    op->state = ctx;
}

int codec_allreduce(struct codec_ctx *ctx, const struct comm_group *g,
                    float *buf)
{
    struct comm_op op;
    size_t bytes;
    void *scratch;
    int rc;

    if (!ctx->codec)
        return -1;
    bytes = ctx->codec->scratch(ctx, g);
    scratch = malloc(bytes ? bytes : 1);
    if (!scratch)
        return -1;
    codec_op_init(&op, ctx, g, buf, scratch, bytes);
    rc = comm_op_start(&op);
    if (rc == 0)
        rc = comm_op_wait(&op);
    free(scratch);
    return rc < 0 ? -1 : 0;
}
