/*
 * codec_half.c - fp16 and bf16: each rank rounds x = g + r to 16 bits
 * (error to the residual), then the 16-bit ring of codec_ring.c sums the
 * rounded values with fp32 accumulation at every hop.
 *
 * The conversions are written out bit by bit (round to nearest even) so
 * that they do not depend on compiler support for _Float16 or on F16C;
 * codec_ring.c uses them through the array functions of
 * codec_internal.h.
 */
#include "codec_internal.h"

#include <string.h>

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/*
 * The conversions are branch-free (selects), so that the array loops
 * below vectorise.  fp16 normal values: the rebiased bits shifted right
 * by 13 with round to nearest even; subnormal values (|x| < 2^-14):
 * |x| + 0.5f rounds |x| to a multiple of 2^-24 (the ulp of 0.5f) in the
 * default rounding mode, to nearest even, and the bits above 0.5f's are
 * the half's mantissa (0x400, the smallest normal, when it rounds up).
 */
/* c ? x : y, as masks (GCC keeps some ternaries as branches, which stops
 * vectorisation). */
static inline uint32_t sel(int c, uint32_t x, uint32_t y)
{
    uint32_t m = 0u - (uint32_t)c;
    return (x & m) | (y & ~m);
}

static inline uint32_t f16_encode(float f)
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu, n = a - 0x38000000u;
    uint32_t hn = (n + 0xfffu + ((n >> 13) & 1u)) >> 13;
    uint32_t hs = f32_bits(bits_f32(a) + 0.5f) - 0x3f000000u;
    uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
    uint32_t h = sel(a < 0x38800000u, hs, hn); /* below 2^-14: subnormal */
    h = sel(a >= 0x477ff000u, 0x7bffu, h);     /* >= 65520: clamp */
    h = sel(a == 0x7f800000u, 0x7c00u, h);     /* inf */
    h = sel(a > 0x7f800000u, nan, h);          /* NaN stays quiet */
    return sign | h;
}

static inline float f16_decode(uint32_t h)
{
    uint32_t s = (h & 0x8000u) << 16, em = h & 0x7fffu;
    uint32_t nrm = (em << 13) + 0x38000000u;   /* rebias 15 -> 127 */
    uint32_t inf = (em << 13) + 0x70000000u;   /* exponent 31 -> 255 */
    /* subnormal: 2^-14 (1 + m/1024) - 2^-14 = m 2^-24, exact */
    uint32_t sub = f32_bits(bits_f32((em << 13) + 0x38800000u) - 0x1p-14f);
    uint32_t r = sel(em >= 0x7c00u, inf, nrm);
    r = sel(em < 0x0400u, sub, r);
    return bits_f32(s | r);
}

static inline uint32_t bf16_encode(float f)
{
    uint32_t x = f32_bits(f), a = x & 0x7fffffffu;
    uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    /* a finite value rounded to inf: clamp to the largest finite */
    r = sel((r & 0x7fffu) == 0x7f80u && a < 0x7f800000u,
            (r & 0x8000u) | 0x7f7fu, r);
    return sel(a > 0x7f800000u, (x >> 16) | 0x40u, r); /* NaN stays quiet */
}

static inline float bf16_decode(uint32_t h)
{
    return bits_f32(h << 16);
}

void codec_half_encode(enum codec_wire w, const float *src, uint16_t *dst,
                       float *resid, size_t n)
{
    if (w == CODEC_WIRE_F16) {
        for (size_t i = 0; i < n; i++)
            dst[i] = (uint16_t)f16_encode(src[i]);
        if (resid)
            for (size_t i = 0; i < n; i++)
                resid[i] += src[i] - f16_decode(dst[i]);
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = (uint16_t)bf16_encode(src[i]);
        if (resid)
            for (size_t i = 0; i < n; i++)
                resid[i] += src[i] - bf16_decode(dst[i]);
    }
}

void codec_half_decode(enum codec_wire w, const uint16_t *src, float *dst,
                       size_t n, int add)
{
    if (w == CODEC_WIRE_F16 && add)
        for (size_t i = 0; i < n; i++)
            dst[i] += f16_decode(src[i]);
    else if (w == CODEC_WIRE_F16)
        for (size_t i = 0; i < n; i++)
            dst[i] = f16_decode(src[i]);
    else if (add)
        for (size_t i = 0; i < n; i++)
            dst[i] += bf16_decode(src[i]);
    else
        for (size_t i = 0; i < n; i++)
            dst[i] = bf16_decode(src[i]);
}

/* resid += data - D(C(data)); data = D(C(data)). */
static void codec_half_encode_round(enum codec_wire w, float *data,
                                    float *resid, size_t n)
{
    if (w == CODEC_WIRE_F16) {
        for (size_t i = 0; i < n; i++) {
            float q = f16_decode(f16_encode(data[i]));
            resid[i] += data[i] - q;
            data[i] = q;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float q = bf16_decode(bf16_encode(data[i]));
            resid[i] += data[i] - q;
            data[i] = q;
        }
    }
}

void codec_half_round(enum codec_wire w, float *data, float *resid, size_t n)
{
    if (resid)
        codec_half_encode_round(w, data, resid, n);
    else if (w == CODEC_WIRE_F16)
        for (size_t i = 0; i < n; i++)
            data[i] = f16_decode(f16_encode(data[i]));
    else
        for (size_t i = 0; i < n; i++)
            data[i] = bf16_decode(bf16_encode(data[i]));
}

/* ---- the codecs --------------------------------------------------------- */

/* x = buf + r; buf = D(C(x)); r = x - buf. */
static void half_quantize(enum codec_wire w, float *buf, float *resid,
                          size_t n)
{
    if (w == CODEC_WIRE_F16) {
        for (size_t i = 0; i < n; i++) {
            float x = buf[i] + resid[i];
            float q = f16_decode(f16_encode(x));
            resid[i] = x - q;
            buf[i] = q;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float x = buf[i] + resid[i];
            float q = bf16_decode(bf16_encode(x));
            resid[i] = x - q;
            buf[i] = q;
        }
    }
}

static size_t half_state_floats(const struct codec_ctx *ctx)
{
    return ctx->n;
}

static size_t half_scratch(const struct codec_ctx *ctx,
                           const struct comm_group *g)
{
    return codec_align(sizeof(struct codec_ring)) +
           codec_ring_buf_bytes(ctx->n, CODEC_WIRE_F16, g->size);
}

static uint64_t half_wire_bytes(const struct codec_ctx *ctx,
                                const struct comm_group *g)
{
    return codec_ring_wire_bytes(ctx->n, CODEC_WIRE_F16, g->rank, g->size);
}

static int half_start(struct comm_op *op, enum codec_wire w)
{
    struct codec_ctx *ctx = op->state;
    struct codec_ring *rg = op->scratch;
    char *bufs = (char *)op->scratch + codec_align(sizeof *rg);

    op->wire_bytes = 0;
    half_quantize(w, op->buf, ctx->state, ctx->n);
    return codec_ring_start(rg, op, op->buf, ctx->state, ctx->n, w, bufs);
}

static int fp16_start(struct comm_op *op)
{
    return half_start(op, CODEC_WIRE_F16);
}

static int bf16_start(struct comm_op *op)
{
    return half_start(op, CODEC_WIRE_BF16);
}

static int half_test(struct comm_op *op)
{
    return codec_ring_test(op->scratch, op);
}

static void half_finish(struct comm_op *op)
{
    op->nreq = 0;
}

static void fp16_roundtrip(const struct codec_ctx *ctx, const float *in,
                           float *out, void *scratch)
{
    (void)scratch;
    for (size_t i = 0; i < ctx->n; i++)
        out[i] = f16_decode(f16_encode(in[i]));
}

static void bf16_roundtrip(const struct codec_ctx *ctx, const float *in,
                           float *out, void *scratch)
{
    (void)scratch;
    for (size_t i = 0; i < ctx->n; i++)
        out[i] = bf16_decode(bf16_encode(in[i]));
}

static const struct comm_op_ops fp16_ops = {
    .name = "fp16", .start = fp16_start, .test = half_test,
    .finish = half_finish,
};

static const struct comm_op_ops bf16_ops = {
    .name = "bf16", .start = bf16_start, .test = half_test,
    .finish = half_finish,
};

const struct codec codec_fp16 = {
    .name = "fp16", .lossy = 1, .parse = codec_parse_noarg,
    .state_floats = half_state_floats, .state_init = NULL,
    .scratch = half_scratch, .wire_bytes = half_wire_bytes,
    .roundtrip = fp16_roundtrip, .ops = &fp16_ops,
};

const struct codec codec_bf16 = {
    .name = "bf16", .lossy = 1, .parse = codec_parse_noarg,
    .state_floats = half_state_floats, .state_init = NULL,
    .scratch = half_scratch, .wire_bytes = half_wire_bytes,
    .roundtrip = bf16_roundtrip, .ops = &bf16_ops,
};
