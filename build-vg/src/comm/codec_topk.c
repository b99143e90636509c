/*
 * codec_topk.c - topk:RATIO.  Per segment, the k = max(1, ceil(RATIO*len))
 * values of largest magnitude (ties: lower index first) of x = g + r are
 * sent; the residual keeps everything else (and is 0 where a value was
 * sent, exactly).  Every rank then adds all ranks' values into a zeroed
 * buffer in rank order.
 *
 * Message of one rank, per segment with k > 0 in layout order:
 *   1. the k kept indices (local to the segment) in ascending order as
 *      LEB128 varints of their deltas: i_0, then i_j - i_{j-1} >= 1 (7 bits
 *      a byte, low bits first, the high bit set on all but a varint's last
 *      byte);
 *   2. the k fp32 values in the same order (host byte order, unaligned).
 * The receiver knows each k from the layout.  At ratio 0.01 the gaps
 * average ~100: ~1.3 bytes an index, ~5.3 a value instead of 8 for
 * (uint32, float) pairs.  Deltas are < CODEC_MAX_N = 2^28, so a varint
 * takes at most 4 bytes (topk_seg_max bounds a segment's bytes).
 *
 * Exchange.  Messages differ in length between ranks.  start() posts an
 * MPI_Irecv from each of the p-1 other ranks into a slot of the
 * worst-case size (the actual length comes from the status) and an
 * MPI_Isend of its message to each of them, tagged op->tag.  test() never
 * blocks: it adds each rank's values as soon as that message and all
 * those of lower ranks are in (MPI_Test), then completes the sends.
 * Bytes sent: exactly (p-1) * message.  Not a length MPI_Iallgather
 * followed by an MPI_Iallgatherv: the second collective would be posted
 * from test(), at a point that differs between ranks relative to the
 * collectives other operations (the next bucket's start) post on the
 * same communicator, and MPI requires every rank to post a
 * communicator's collectives in the same order (Open MPI fails such a
 * run with MPI_ERR_TRUNCATE).  Point-to-point messages match by (source,
 * tag) instead.
 *
 * Selection: a quickselect (median of three, three-way partition, so
 * equal magnitudes cost nothing extra; for small k only over the values
 * that pass a bar set from a fixed sample) on the magnitudes' bits (as
 * integers they order like the magnitudes; NaN above inf) finds T, the
 * k-th largest, in expected linear time; after 2 log2(len) + 16 rounds it
 * falls back to a sort, bounding the worst case at O(len log len).  One
 * pass in index order then takes every value above T and the first
 * (lowest-index) ones equal to T until k are taken: the k largest by
 * (magnitude, then lower index), in ascending index order.
 *
 * Scratch (topk_carve): own message length | magnitudes, then the kept
 * indices of a segment (4 * longest segment; decoding reuses it) | send (msg_max) | then for
 * a group of p: receive slots ((p-1) * msg_max) | 2(p-1) requests
 * (receives by slot, then sends) | the receives' statuses.  roundtrip uses the
 * magnitudes only, so any group's scratch will do.
 */
#include "codec_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int topk_parse(const char *arg, double *param, char *err,
                      size_t errlen)
{
    char *end = NULL;
    double v;

    if (!arg || !*arg) {
        snprintf(err, errlen, "topk needs a ratio, e.g. topk:0.01");
        return -1;
    }
    errno = 0;
    v = strtod(arg, &end);
    if (errno || end == arg || *end != '\0' || !isfinite(v)) {
        snprintf(err, errlen, "topk ratio '%s' is not a number", arg);
        return -1;
    }
    if (!(v > 0.0 && v <= 1.0)) {
        snprintf(err, errlen, "topk ratio %s must be in (0, 1]", arg);
        return -1;
    }
    *param = v;
    return 0;
}

/* Values kept of a segment of len floats. */
static size_t topk_k(double ratio, size_t len)
{
    if (len == 0)
        return 0;
    size_t k = (size_t)ceil(ratio * (double)len);
    if (k < 1)
        k = 1;
    return k > len ? len : k;
}

static size_t topk_maxlen(const struct codec_ctx *ctx)
{
    size_t m = 0;
    for (int s = 0; s < ctx->nseg; s++) {
        size_t len = codec_seg_len(&ctx->seg[s]);
        m = len > m ? len : m;
    }
    return m;
}

static int mag_cmp_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

static void mag_swap(uint32_t *a, size_t i, size_t j)
{
    uint32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
}

static uint32_t median3(uint32_t x, uint32_t y, uint32_t z)
{
    if ((x < y) == (y < z))
        return y;
    if ((y < x) == (x < z))
        return x;
    return z;
}

/* The value at position k (0-based) of a[0, n) sorted in descending
 * order; reorders a. */
static uint32_t mag_kth(uint32_t *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    int budget = 16;
    for (size_t t = n; t > 1; t >>= 1)
        budget += 2;
    while (hi - lo > 16 && budget-- > 0) {
        uint32_t p = median3(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) { /* [lo,lt) > p, [lt,i) == p, [gt,hi) < p */
            if (a[i] > p)
                mag_swap(a, lt++, i++);
            else if (a[i] < p)
                mag_swap(a, i, --gt);
            else
                i++;
        }
        if (k < lt)
            hi = lt;
        else if (k >= gt)
            lo = gt;
        else
            return p;
    }
    qsort(a + lo, hi - lo, sizeof *a, mag_cmp_desc);
    return a[k];
}

static uint32_t mag_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b & 0x7fffffffu;
}

/* T, the k-th largest magnitude (bits) of x[0, len), and how many
 * values lie above it; mag: len uint32 of scratch.  For small k a
 * deterministic sample of 2048 values sets a bar t that about 2k values
 * pass; a pass collects those (branch-free), and when at least k pass the
 * k largest are among them.  Otherwise: select among all magnitudes. */
static uint32_t topk_threshold(const float *x, size_t len, size_t k,
                               uint32_t *mag, size_t *above)
{
    size_t c = 0, m = 2048;
    uint32_t T;

    if (len >= 4 * m && k <= len / 16) {
        size_t step = len / m;
        double e = (double)k * (double)m / (double)len; /* sample above T */
        size_t r = (size_t)(2.0 * e + 3.0 * sqrt(e) + 16.0);
        for (size_t j = 0; j < m; j++)
            mag[j] = mag_bits(x[j * step]);
        uint32_t t = mag_kth(mag, m, r < m ? r : m - 1);
        for (size_t i = 0; i < len; i++) {
            uint32_t v = mag_bits(x[i]);
            mag[c] = v;
            c += v >= t;
        }
    }
    if (c < k) {
        for (size_t i = 0; i < len; i++)
            mag[i] = mag_bits(x[i]);
        c = len;
    }
    T = mag_kth(mag, c, k - 1);
    *above = 0;
    for (size_t i = 0; i < c; i++)
        *above += mag[i] > T;
    return T;
}

/* Local indices of the top k of x[0, len), ascending, into mag[0, k);
 * mag: len uint32 of scratch (the magnitudes during the selection). */
static void topk_segment(const float *x, size_t len, size_t k, uint32_t *mag)
{
    size_t above, eq, j = 0;
    uint32_t T = topk_threshold(x, len, k, mag, &above);

    eq = k - above; /* values equal to T to take, lowest index first */
    for (size_t i = 0; i < len && j < k; i++) { /* reads x only */
        uint32_t m = mag_bits(x[i]);
        if (m > T || (m == T && eq > 0)) {
            eq -= m == T;
            mag[j++] = (uint32_t)i;
        }
    }
}

/* Most bytes a segment of len floats with k kept adds to a message: 4k
 * of values and k varints.  The deltas (d_0 >= 0, the others >= 1) sum to
 * the last index, <= len - 1; the varint of d takes 1 + #{m >= 1 : d >=
 * 2^7m} bytes, and at most (len - 1) >> 7m of the deltas reach 2^7m.  So
 * this bounds every input; it is attained e.g. for k = 1 (index len - 1). */
static size_t topk_seg_max(size_t len, size_t k)
{
    size_t b = 5 * k;
    if (k == 0)
        return 0;
    for (int m = 7; m <= 28; m += 7) {
        size_t c = (len - 1) >> m;
        b += c < k ? c : k;
    }
    return b;
}

/* Most bytes of one rank's message. */
static size_t topk_msg_max(const struct codec_ctx *ctx)
{
    size_t b = 0;
    for (int s = 0; s < ctx->nseg; s++) {
        size_t len = codec_seg_len(&ctx->seg[s]);
        b += topk_seg_max(len, topk_k(ctx->param, len));
    }
    return b;
}

static uint8_t *varint_put(uint8_t *p, uint32_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Encode x (n floats, the residual) into msg (topk_msg_max bytes) and
 * zero what was sent: the residual becomes x - D(C(x)) exactly.  Returns
 * the message's length. */
static size_t topk_encode(const struct codec_ctx *ctx, float *x,
                          uint8_t *msg, uint32_t *mag)
{
    uint8_t *p = msg;
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t len = codec_seg_len(sg), k = topk_k(ctx->param, len);
        float *xs = x + sg->off;
        uint32_t prev = 0;
        if (k == 0)
            continue;
        topk_segment(xs, len, k, mag);
        for (size_t j = 0; j < k; j++) {
            p = varint_put(p, mag[j] - prev);
            prev = mag[j];
        }
        for (size_t j = 0; j < k; j++) {
            memcpy(p, &xs[mag[j]], sizeof(float));
            p += sizeof(float);
            xs[mag[j]] = 0.0f;
        }
    }
    return (size_t)(p - msg);
}

/* The next varint of [*p, end) (at most 5 bytes: a uint32), or -1. */
static int64_t varint_get(const uint8_t **p, const uint8_t *end)
{
    uint64_t v = 0;
    for (int sh = 0; sh < 35 && *p < end; sh += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80))
            return v <= UINT32_MAX ? (int64_t)v : -1;
    }
    return -1;
}

/* out[seg off + index] += value for every kept value of one rank's
 * message msg[0, len); idx: scratch of the longest segment's k uint32.
 * 0, or -1 when msg is not a message for ctx's layout (truncated,
 * trailing bytes, indices not ascending or out of their segment); out may
 * then be partly updated.  The varints are decoded first, then added in
 * a loop of independent iterations: the cache misses on out overlap
 * instead of waiting behind the varints' branches. */
static int topk_decode_add(const struct codec_ctx *ctx, float *out,
                           const uint8_t *msg, size_t len, uint32_t *idx)
{
    const uint8_t *p = msg, *end = msg + len;
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t slen = codec_seg_len(sg), k = topk_k(ctx->param, slen);
        const uint8_t *val = p;
        size_t last = 0, i = 0;
        float *os = out + sg->off;
        if (k == 0)
            continue;
        while (last < k && val < end) /* values follow the k-th varint */
            last += *val++ < 0x80;
        if (last < k || (size_t)(end - val) < 4 * k)
            return -1;
        for (size_t j = 0; j < k; j++) {
            int64_t d = varint_get(&p, val);
            if (d < 0 || (j > 0 && d == 0) || (size_t)d >= slen - i)
                return -1;
            i += (size_t)d;
            idx[j] = (uint32_t)i;
        }
        for (size_t j = 0; j < k; j++) {
            float v;
            memcpy(&v, val + 4 * j, sizeof v);
            os[idx[j]] += v;
        }
        p = val + 4 * k;
    }
    return p == end ? 0 : -1;
}

static size_t topk_state_floats(const struct codec_ctx *ctx)
{
    return ctx->n;
}

/* The scratch regions of one operation (layout at the top). */
struct topk_scratch {
    size_t *own_len;
    uint32_t *mag;
    uint8_t *send, *recv;
    MPI_Request *req;
    MPI_Status *st;
};

/* Point sc at the regions of scratch base for a group of p (base NULL:
 * sizes only, sc untouched).  Returns the scratch bytes. */
static size_t topk_carve(const struct codec_ctx *ctx, int p, void *base,
                         struct topk_scratch *sc)
{
    size_t m = topk_msg_max(ctx), np = (size_t)(p - 1), o = 0;
    size_t off[6];
    off[0] = o;
    o += codec_align(sizeof(size_t));
    off[1] = o;
    o += codec_align(4 * topk_maxlen(ctx));
    off[2] = o;
    o += codec_align(m);
    off[3] = o;
    o += codec_align(m * np);
    off[4] = o;
    o += codec_align(2 * np * sizeof(MPI_Request));
    off[5] = o;
    o += codec_align(np * sizeof(MPI_Status));
    if (base) {
        char *b = base;
        sc->own_len = (size_t *)(void *)(b + off[0]);
        sc->mag = (uint32_t *)(void *)(b + off[1]);
        sc->send = (uint8_t *)(b + off[2]);
        sc->recv = (uint8_t *)(b + off[3]);
        sc->req = (MPI_Request *)(void *)(b + off[4]);
        sc->st = (MPI_Status *)(void *)(b + off[5]);
    }
    return o;
}

static size_t topk_scratch(const struct codec_ctx *ctx,
                           const struct comm_group *g)
{
    return topk_carve(ctx, g->size, NULL, NULL);
}

/* An upper bound (the messages vary in length): (p-1) * topk_msg_max. */
static uint64_t topk_wire_bytes(const struct codec_ctx *ctx,
                                const struct comm_group *g)
{
    return (uint64_t)(g->size - 1) * topk_msg_max(ctx);
}

/* Slot (and receive request) of rank q's message on rank r. */
static size_t topk_slot(int q, int r)
{
    return (size_t)(q - (q > r));
}

/* Post the receives from and the sends to the p-1 others (see the top). */
static int topk_post(struct comm_op *op, const struct topk_scratch *sc,
                     size_t max, size_t len)
{
    const struct comm_group *g = op->g;
    int p = g->size, r = g->rank;
    for (int t = 1; t < p; t++) {
        int q = (r - t + p) % p;
        size_t slot = topk_slot(q, r);
        if (MPI_Irecv(sc->recv + slot * max, (int)max, MPI_BYTE, q, op->tag,
                      g->comm, &sc->req[slot]) != MPI_SUCCESS)
            return -1;
    }
    for (int t = 1; t < p; t++)
        if (MPI_Isend(sc->send, (int)len, MPI_BYTE, (r + t) % p, op->tag,
                      g->comm, &sc->req[p - 2 + t]) != MPI_SUCCESS)
            return -1;
    return 0;
}

static int topk_start(struct comm_op *op)
{
    struct codec_ctx *ctx = op->state;
    struct topk_scratch sc;
    size_t max = topk_msg_max(ctx), len;
    float *x = ctx->state;

    op->nreq = 0; /* the requests live in the scratch */
    op->step = 0;
    op->phase = 0;
    if (max > INT_MAX) /* MPI counts (n <= CODEC_MAX_N keeps max below
                          ~5.01 n bytes, so this never fires) */
        return -1;
    topk_carve(ctx, op->g->size, op->scratch, &sc);
    for (size_t i = 0; i < ctx->n; i++)
        x[i] += op->buf[i];
    len = topk_encode(ctx, x, sc.send, sc.mag);
    *sc.own_len = len;
    memset(op->buf, 0, ctx->n * sizeof(float));
    op->wire_bytes = (uint64_t)(op->g->size - 1) * len;
    return topk_post(op, &sc, max, len);
}

/* Decode the messages in rank order as they arrive (op->phase: the next
 * rank to add), then complete the sends. */
static int topk_test(struct comm_op *op)
{
    struct codec_ctx *ctx = op->state;
    struct topk_scratch sc;
    size_t max = topk_msg_max(ctx);
    int p = op->g->size, r = op->g->rank, flag = 1;

    if (op->step)
        return 1;
    topk_carve(ctx, p, op->scratch, &sc);
    for (; op->phase < p; op->phase++) { /* in rank order: the same bits */
        int q = op->phase, cnt = 0;
        size_t slot = topk_slot(q, r), len = *sc.own_len;
        const uint8_t *msg = sc.send;
        if (q != r) {
            if (MPI_Test(&sc.req[slot], &flag, &sc.st[slot]) != MPI_SUCCESS)
                return -1;
            if (!flag)
                return 0;
            if (MPI_Get_count(&sc.st[slot], MPI_BYTE, &cnt) != MPI_SUCCESS
                || cnt < 0)
                return -1;
            msg = sc.recv + slot * max;
            len = (size_t)cnt;
        }
        if (topk_decode_add(ctx, op->buf, msg, len, sc.mag) != 0)
            return -1;
    }
    if (p > 1 && MPI_Testall(p - 1, sc.req + p - 1, &flag,
                             MPI_STATUSES_IGNORE) != MPI_SUCCESS)
        return -1;
    if (!flag)
        return 0;
    op->step = 1;
    return 1;
}

static void topk_finish(struct comm_op *op)
{
    op->nreq = 0;
}

static void topk_roundtrip(const struct codec_ctx *ctx, const float *in,
                           float *out, void *scratch)
{
    struct topk_scratch sc;
    topk_carve(ctx, 1, scratch, &sc);
    memset(out, 0, ctx->n * sizeof(float));
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t len = codec_seg_len(sg), k = topk_k(ctx->param, len);
        if (k == 0)
            continue;
        topk_segment(in + sg->off, len, k, sc.mag);
        for (size_t j = 0; j < k; j++)
            out[sg->off + sc.mag[j]] = in[sg->off + sc.mag[j]];
    }
}

static const struct comm_op_ops topk_ops = {
    .name = "topk", .start = topk_start, .test = topk_test,
    .finish = topk_finish,
};

const struct codec codec_topk = {
    .name = "topk", .lossy = 1, .parse = topk_parse,
    .state_floats = topk_state_floats, .state_init = NULL,
    .scratch = topk_scratch, .wire_bytes = topk_wire_bytes,
    .roundtrip = topk_roundtrip, .ops = &topk_ops,
};
