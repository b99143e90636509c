/*
 * codec_powersgd.c - powersgd:RANK (Vogels et al. 2019, with their error
 * feedback and warm start).  For each compressible matrix segment M_i
 * (rows x cols, row major) of rank i, with x = g + r:
 *
 *   P_i = M_i Q                       local, cblas_sgemm
 *   P = sum_i P_i                     ring 1 (fp32), with the dense part
 *   P^ = orth(P)                      MGS twice in double, every rank
 *   Q_i = M_i^T P^                    local
 *   r'_i = M_i - P^ Q_i^T             the local projection's error
 *   Q = sum_i Q_i                     ring 2 (fp32)
 *   buf = P^ Q^T                      = sum_i P^ Q_i^T, every rank
 *   Q kept as next step's warm start
 *
 * A segment is compressed with r = min(RANK, rows, cols) when cols > 0
 * and r (rows + cols) < rows cols; the others (vectors, small matrices)
 * are dense: x = g + r is summed exactly and r' = 0.  The final product
 * P^ Q^T is written out here rather than with sgemm, so that it is the
 * same bits on every rank whatever BLAS threading does.
 *
 * State: residual (n) | Q of each compressed segment (cols x r), in
 * segment order.  Scratch: ring header | ring-1 data (P or dense values
 * per segment, in segment order) | ring-2 data (Q) | MGS work (rows x r
 * doubles) | Q^T (r x cols) | ring wire buffer.
 */
#include "codec_internal.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PSGD_MAX_RANK 4096

struct psgd_layout {
    size_t nP, nQ;             /* floats of ring 1 and ring 2 */
    size_t max_pr, max_cr;     /* largest rows*r, cols*r */
    size_t off_P, off_Q, off_gs, off_qt, off_ring, bytes;
};

static int psgd_parse(const char *arg, double *param, char *err,
                      size_t errlen)
{
    char *end = NULL;
    long v;

    if (!arg || !*arg) {
        snprintf(err, errlen, "powersgd needs a rank, e.g. powersgd:4");
        return -1;
    }
    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end != '\0') {
        snprintf(err, errlen, "powersgd rank '%s' is not an integer", arg);
        return -1;
    }
    if (v < 1 || v > PSGD_MAX_RANK) {
        snprintf(err, errlen, "powersgd rank %s must be in [1, %d]", arg,
                 PSGD_MAX_RANK);
        return -1;
    }
    *param = (double)v;
    return 0;
}

/* Rank used for segment s, 0 when it goes dense. */
static size_t psgd_r(const struct codec_ctx *ctx, const struct codec_seg *s)
{
    size_t r = (size_t)ctx->param;
    if (s->cols == 0)
        return 0;
    r = r < s->rows ? r : s->rows;
    r = r < s->cols ? r : s->cols;
    if (r == 0 || r * (s->rows + s->cols) >= s->rows * s->cols)
        return 0;
    return r;
}

static void psgd_layout(const struct codec_ctx *ctx, int p,
                        struct psgd_layout *L)
{
    memset(L, 0, sizeof *L);
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t r = psgd_r(ctx, sg);
        if (r == 0) {
            L->nP += codec_seg_len(sg);
            continue;
        }
        L->nP += sg->rows * r;
        L->nQ += sg->cols * r;
        L->max_pr = sg->rows * r > L->max_pr ? sg->rows * r : L->max_pr;
        L->max_cr = sg->cols * r > L->max_cr ? sg->cols * r : L->max_cr;
    }
    L->off_P = codec_align(sizeof(struct codec_ring));
    L->off_Q = L->off_P + codec_align(4 * L->nP);
    L->off_gs = L->off_Q + codec_align(4 * L->nQ);
    L->off_qt = L->off_gs + codec_align(8 * L->max_pr);
    L->off_ring = L->off_qt + codec_align(4 * L->max_cr);
    L->bytes = L->off_ring +
               codec_ring_buf_bytes(L->nP > L->nQ ? L->nP : L->nQ,
                                    CODEC_WIRE_F32, p);
}

static uint64_t splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Standard normal from (seed, segment, index): Box-Muller on two hashes. */
static float psgd_normal(uint64_t seed, size_t seg, size_t idx)
{
    uint64_t h1 = splitmix64(seed ^ splitmix64(((uint64_t)seg << 40) ^ idx));
    uint64_t h2 = splitmix64(h1);
    double u1 = ((double)(h1 >> 11) + 0.5) * 0x1p-53;
    double u2 = (double)(h2 >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static size_t psgd_state_floats(const struct codec_ctx *ctx)
{
    struct psgd_layout L;
    psgd_layout(ctx, 1, &L);
    return ctx->n + L.nQ;
}

/* Fill column k of Q (cols x r) with its initial values. */
static void psgd_q_column_init(const struct codec_ctx *ctx, int s, float *Q,
                               size_t cols, size_t r, size_t k)
{
    for (size_t j = 0; j < cols; j++)
        Q[j * r + k] = psgd_normal(ctx->seed, (size_t)s, j * r + k);
}

static void psgd_state_init(struct codec_ctx *ctx)
{
    float *Q = ctx->state + ctx->n;
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t r = psgd_r(ctx, sg);
        for (size_t k = 0; k < r; k++)
            psgd_q_column_init(ctx, s, Q, sg->cols, r, k);
        Q += sg->cols * r;
    }
}

static size_t psgd_scratch(const struct codec_ctx *ctx,
                           const struct comm_group *g)
{
    struct psgd_layout L;
    psgd_layout(ctx, g->size, &L);
    return L.bytes;
}

static uint64_t psgd_wire_bytes(const struct codec_ctx *ctx,
                                const struct comm_group *g)
{
    struct psgd_layout L;
    psgd_layout(ctx, g->size, &L);
    return codec_ring_wire_bytes(L.nP, CODEC_WIRE_F32, g->rank, g->size) +
           codec_ring_wire_bytes(L.nQ, CODEC_WIRE_F32, g->rank, g->size);
}

/* Orthonormalise the columns of P (rows x r, row major) in place:
 * modified Gram-Schmidt, two passes, in double (w: rows*r doubles).  A
 * column that vanishes becomes 0. */
static void psgd_orthonormalise(float *P, size_t rows, size_t r, double *w)
{
    for (size_t k = 0; k < r; k++)
        for (size_t i = 0; i < rows; i++)
            w[k * rows + i] = (double)P[i * r + k];
    for (size_t k = 0; k < r; k++) {
        double *v = w + k * rows, nn = 0.0;
        for (int pass = 0; pass < 2; pass++)
            for (size_t j = 0; j < k; j++) {
                const double *u = w + j * rows;
                double d = 0.0;
                for (size_t i = 0; i < rows; i++)
                    d += u[i] * v[i];
                for (size_t i = 0; i < rows; i++)
                    v[i] -= d * u[i];
            }
        for (size_t i = 0; i < rows; i++)
            nn += v[i] * v[i];
        double nrm = sqrt(nn);
        double inv = nrm > 0.0 && isfinite(nrm) ? 1.0 / nrm : 0.0;
        for (size_t i = 0; i < rows; i++)
            v[i] *= inv;
    }
    for (size_t k = 0; k < r; k++)
        for (size_t i = 0; i < rows; i++)
            P[i * r + k] = (float)w[k * rows + i];
}

/* out (rows x cols) = P (rows x r) Q^T, Q (cols x r); qt: r*cols floats.
 * Fixed summation order (k ascending). */
static void psgd_reconstruct(float *out, const float *P, const float *Q,
                             size_t rows, size_t cols, size_t r, float *qt)
{
    for (size_t j = 0; j < cols; j++)
        for (size_t k = 0; k < r; k++)
            qt[k * cols + j] = Q[j * r + k];
    for (size_t i = 0; i < rows; i++) {
        float *o = out + i * cols;
        const float *p = P + i * r;
        for (size_t j = 0; j < cols; j++)
            o[j] = p[0] * qt[j];
        for (size_t k = 1; k < r; k++)
            for (size_t j = 0; j < cols; j++)
                o[j] += p[k] * qt[k * cols + j];
    }
}

/* P (rows x r) = M Q */
static void psgd_mq(float *P, const float *M, const float *Q, size_t rows,
                    size_t cols, size_t r)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)r,
                (int)cols, 1.0f, M, (int)cols, Q, (int)r, 0.0f, P, (int)r);
}

/* Q (cols x r) = M^T P */
static void psgd_mtp(float *Q, const float *M, const float *P, size_t rows,
                     size_t cols, size_t r)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)r,
                (int)rows, 1.0f, M, (int)cols, P, (int)r, 0.0f, Q, (int)r);
}

/* Step 1: x = g + r; P_i = x Q per compressed segment; dense values
 * (with their residual, which becomes 0) into ring 1's data. */
static void psgd_encode_p(const struct codec_ctx *ctx, float *buf, float *Pd)
{
    const float *Q = ctx->state + ctx->n;
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t r = psgd_r(ctx, sg), len = codec_seg_len(sg);
        float *x = ctx->state + sg->off, *g = buf + sg->off;
        for (size_t i = 0; i < len; i++)
            x[i] += g[i];
        if (r == 0) {
            memcpy(Pd, x, len * sizeof(float));
            memset(x, 0, len * sizeof(float));
            Pd += len;
            continue;
        }
        psgd_mq(Pd, x, Q, sg->rows, sg->cols, r);
        Pd += sg->rows * r;
        Q += sg->cols * r;
    }
}

/* Step 2 (P summed): dense sums to buf; P^ = orth(P); Q_i = x^T P^;
 * r' = x - P^ Q_i^T. */
static void psgd_encode_q(const struct codec_ctx *ctx, float *buf, float *Pd,
                          float *Qd, double *gs)
{
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t r = psgd_r(ctx, sg), len = codec_seg_len(sg);
        float *x = ctx->state + sg->off;
        if (r == 0) {
            memcpy(buf + sg->off, Pd, len * sizeof(float));
            Pd += len;
            continue;
        }
        psgd_orthonormalise(Pd, sg->rows, r, gs);
        psgd_mtp(Qd, x, Pd, sg->rows, sg->cols, r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)sg->rows,
                    (int)sg->cols, (int)r, -1.0f, Pd, (int)r, Qd, (int)r,
                    1.0f, x, (int)sg->cols);
        Pd += sg->rows * r;
        Qd += sg->cols * r;
    }
}

/* Step 3 (Q summed): buf = P^ Q^T; keep Q as warm start (a column that
 * vanished or overflowed restarts from its initial values). */
static void psgd_decode(struct codec_ctx *ctx, float *buf, const float *Pd,
                        const float *Qd, float *qt)
{
    float *Qs = ctx->state + ctx->n;
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t r = psgd_r(ctx, sg);
        if (r == 0) {
            Pd += codec_seg_len(sg);
            continue;
        }
        psgd_reconstruct(buf + sg->off, Pd, Qd, sg->rows, sg->cols, r, qt);
        memcpy(Qs, Qd, sg->cols * r * sizeof(float));
        for (size_t k = 0; k < r; k++) {
            double nn = 0.0;
            for (size_t j = 0; j < sg->cols; j++)
                nn += (double)Qs[j * r + k] * Qs[j * r + k];
            if (!(nn > 0.0) || !isfinite(nn))
                psgd_q_column_init(ctx, s, Qs, sg->cols, r, k);
        }
        Pd += sg->rows * r;
        Qd += sg->cols * r;
        Qs += sg->cols * r;
    }
}

static int psgd_start(struct comm_op *op)
{
    struct codec_ctx *ctx = op->state;
    struct psgd_layout L;
    char *sc = op->scratch;

    psgd_layout(ctx, op->g->size, &L);
    op->wire_bytes = 0;
    psgd_encode_p(ctx, op->buf, (float *)(sc + L.off_P));
    op->phase = 1;
    return codec_ring_start((struct codec_ring *)sc, op,
                            (float *)(sc + L.off_P), NULL, L.nP,
                            CODEC_WIRE_F32, sc + L.off_ring);
}

static int psgd_test(struct comm_op *op)
{
    struct codec_ctx *ctx = op->state;
    struct psgd_layout L;
    char *sc = op->scratch;
    struct codec_ring *rg = (struct codec_ring *)sc;
    float *Pd, *Qd;
    int rc;

    if (op->phase == 3)
        return 1;
    psgd_layout(ctx, op->g->size, &L);
    Pd = (float *)(sc + L.off_P);
    Qd = (float *)(sc + L.off_Q);
    if (op->phase == 1) {
        if ((rc = codec_ring_test(rg, op)) != 1)
            return rc;
        psgd_encode_q(ctx, op->buf, Pd, Qd, (double *)(sc + L.off_gs));
        op->phase = 2;
        if (codec_ring_start(rg, op, Qd, NULL, L.nQ, CODEC_WIRE_F32,
                             sc + L.off_ring) != 0)
            return -1;
    }
    if ((rc = codec_ring_test(rg, op)) != 1)
        return rc;
    psgd_decode(ctx, op->buf, Pd, Qd, (float *)(sc + L.off_qt));
    op->phase = 3;
    return 1;
}

static void psgd_finish(struct comm_op *op)
{
    op->nreq = 0;
}

static void psgd_roundtrip(const struct codec_ctx *ctx, const float *in,
                           float *out, void *scratch)
{
    struct psgd_layout L;
    char *sc = scratch;
    float *P, *Q2;
    const float *Q = ctx->state + ctx->n;

    psgd_layout(ctx, 1, &L);
    P = (float *)(sc + L.off_P);
    Q2 = (float *)(sc + L.off_Q);
    for (int s = 0; s < ctx->nseg; s++) {
        const struct codec_seg *sg = &ctx->seg[s];
        size_t r = psgd_r(ctx, sg), rows = sg->rows, cols = sg->cols;
        const float *m = in + sg->off;
        if (r == 0) {
            memcpy(out + sg->off, m, codec_seg_len(sg) * sizeof(float));
            continue;
        }
        psgd_mq(P, m, Q, rows, cols, r);
        psgd_orthonormalise(P, rows, r, (double *)(sc + L.off_gs));
        psgd_mtp(Q2, m, P, rows, cols, r);
        psgd_reconstruct(out + sg->off, P, Q2, rows, cols, r,
                         (float *)(sc + L.off_qt));
        Q += cols * r;
    }
}

static const struct comm_op_ops psgd_ops = {
    .name = "powersgd", .start = psgd_start, .test = psgd_test,
    .finish = psgd_finish,
};

const struct codec codec_powersgd = {
    .name = "powersgd", .lossy = 1, .parse = psgd_parse,
    .state_floats = psgd_state_floats, .state_init = psgd_state_init,
    .scratch = psgd_scratch, .wire_bytes = psgd_wire_bytes,
    .roundtrip = psgd_roundtrip, .ops = &psgd_ops,
};
