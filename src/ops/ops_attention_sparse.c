/*
 * ops_attention_sparse.c - block-sparse causal attention (contract in
 * ops.h): the local blocks plus every stride-th block, the fixed pattern
 * of Child et al. 2019 (Sparse Transformers) on whole blocks, so every
 * product is a (block x block x hd) matrix product.
 *
 * Query block i sees key blocks J_i = { j <= i : j >= i - 1 or
 * j % stride == 0 }; its probabilities are stored packed, an (m_i x W_i)
 * row-major matrix (W_i the visible blocks' widths side by side, m_i the
 * block's rows), the blocks of one (batch, head) one after the other.  A
 * query row sees, inside those blocks, the positions s <= t with
 * s >= lo(t) (documents); the others hold exact zeros, so the products
 * that read the matrix need no mask.  With stride 1 every block is seen:
 * plain causal attention (the tests hold it to the full kernel).
 *
 * Cost per query block: (2 + i / stride) blocks, so T^2 / (2 block
 * stride) + 2 T block score entries per head instead of T^2 / 2; stride
 * about sqrt(T / block) makes it O(T^1.5).
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops_internal.h"

struct sp {
    size_t T, hd, R, C, blk, stride, nb;
    float scale;
    const int32_t *lo; /* (T) or NULL */
};

static struct sp sp_of(const struct attn_shape *s, size_t b)
{
    struct sp g = {
        .T = s->T, .hd = s->hd, .R = (s->nh + 2 * s->nkv) * s->hd,
        .C = s->nh * s->hd, .blk = s->block ? s->block : 1,
        .stride = s->stride ? s->stride : 1,
        .scale = 1.0f / sqrtf((float)s->hd),
        .lo = s->lo ? s->lo + b * s->T : NULL,
    };
    g.nb = (g.T + g.blk - 1) / g.blk;
    return g;
}

static int sees(const struct sp *g, size_t i, size_t j)
{
    return j <= i && (j + 1 >= i || j % g->stride == 0);
}

static size_t rows_of(const struct sp *g, size_t j)
{
    size_t a = j * g->blk;
    return a + g->blk < g->T ? g->blk : g->T - a;
}

/* Packed width of query block i (its visible blocks' widths). */
static size_t width_of(const struct sp *g, size_t i)
{
    size_t w = 0;
    for (size_t j = 0; j <= i; j++)
        if (sees(g, i, j))
            w += rows_of(g, j);
    return w;
}

/* Floats of one (batch, head)'s packed matrix. */
static size_t head_floats(const struct sp *g)
{
    size_t n = 0;
    for (size_t i = 0; i < g->nb; i++)
        n += rows_of(g, i) * width_of(g, i);
    return n;
}

size_t attention_sparse_floats(const struct attn_shape *s)
{
    struct sp g = sp_of(s, 0);
    return s->B * s->nh * head_floats(&g);
}

/* Softmax of row t of block i, packed (W wide, P the row); entries that t
 * does not see become 0. */
static void sp_softmax_row(float *P, size_t W, size_t t, size_t i,
                           const struct sp *g)
{
    size_t lo = g->lo ? (size_t)g->lo[t] : 0, c = 0;
    float mx = -INFINITY;
    for (size_t j = 0; j <= i; j++) {
        if (!sees(g, i, j))
            continue;
        size_t a = j * g->blk, n = rows_of(g, j);
        for (size_t k = 0; k < n; k++, c++) {
            size_t s = a + k;
            if (s > t || s < lo)
                P[c] = -INFINITY;
            else
                mx = P[c] > mx ? P[c] : mx;
        }
    }
    float sum = 0.0f;
    for (c = 0; c < W; c++) {
        P[c] = P[c] == -INFINITY ? 0.0f : expf(P[c] - mx);
        sum += P[c];
    }
    float inv = 1.0f / sum;
    for (c = 0; c < W; c++)
        P[c] *= inv;
}

static void sp_forward_head(float *O, float *P, const float *Q,
                            const float *K, const float *V,
                            const struct sp *g)
{
    for (size_t i = 0; i < g->nb; i++) {
        size_t r0 = i * g->blk, m = rows_of(g, i), W = width_of(g, i);
        size_t c = 0;
        for (size_t j = 0; j <= i; j++) {
            if (!sees(g, i, j))
                continue;
            size_t n = rows_of(g, j);
            ops_sgemm(0, 1, m, n, g->hd, g->scale, Q + r0 * g->R, g->R,
               K + j * g->blk * g->R, g->R, 0.0f, P + c, W);
            c += n;
        }
        for (size_t t = 0; t < m; t++)
            sp_softmax_row(P + t * W, W, r0 + t, i, g);
        c = 0;
        for (size_t j = 0; j <= i; j++) {
            if (!sees(g, i, j))
                continue;
            size_t n = rows_of(g, j);
            ops_sgemm(0, 0, m, g->hd, n, 1.0f, P + c, W, V + j * g->blk * g->R,
               g->R, c ? 1.0f : 0.0f, O + r0 * g->C, g->C);
            c += n;
        }
        P += m * W;
    }
}

void attention_sparse_forward(float *out, float *att, const float *qkv,
                              const struct attn_shape *s)
{
    size_t T = s->T, nh = s->nh, hd = s->hd, q = nh / s->nkv;
    size_t tasks = s->B * nh, R = (nh + 2 * s->nkv) * hd, C = nh * hd;
    struct sp g0 = sp_of(s, 0);
    size_t per = head_floats(&g0);
#pragma omp parallel for schedule(static) if (ops_omp_tasks(tasks))
    for (size_t bh = 0; bh < tasks; bh++) {
        size_t b = bh / nh, h = bh % nh, kvh = h / q;
        const float *base = qkv + b * T * R;
        struct sp g = sp_of(s, b);
        sp_forward_head(out + b * T * C + h * hd, att + bh * per,
                        base + h * hd, base + (nh + kvh) * hd,
                        base + (nh + s->nkv + kvh) * hd, &g);
    }
}

/* One query head: dQ +=, dK, dV += (shared by the group); dS scratch of
 * the packed size. */
static void sp_backward_head(float *dQ, float *dK, float *dV, float *dS,
                             const float *dO, const float *P,
                             const float *Q, const float *K, const float *V,
                             const struct sp *g)
{
    for (size_t i = 0; i < g->nb; i++) {
        size_t r0 = i * g->blk, m = rows_of(g, i), W = width_of(g, i);
        size_t c = 0;
        for (size_t j = 0; j <= i; j++) { /* dP = dO V^T */
            if (!sees(g, i, j))
                continue;
            size_t n = rows_of(g, j);
            ops_sgemm(0, 1, m, n, g->hd, 1.0f, dO + r0 * g->C, g->C,
               V + j * g->blk * g->R, g->R, 0.0f, dS + c, W);
            c += n;
        }
        for (size_t t = 0; t < m; t++) { /* dS = P (dP - <P, dP>) */
            const float *p = P + t * W;
            float *d = dS + t * W, dot = ops_dot(p, d, W);
            for (size_t k = 0; k < W; k++)
                d[k] = p[k] * (d[k] - dot);
        }
        c = 0;
        for (size_t j = 0; j <= i; j++) {
            if (!sees(g, i, j))
                continue;
            size_t n = rows_of(g, j), a = j * g->blk;
            ops_sgemm(0, 0, m, g->hd, n, g->scale, dS + c, W, K + a * g->R, g->R,
               1.0f, dQ + r0 * g->R, g->R);
            ops_sgemm(1, 0, n, g->hd, m, g->scale, dS + c, W, Q + r0 * g->R, g->R,
               1.0f, dK + a * g->R, g->R);
            ops_sgemm(1, 0, n, g->hd, m, 1.0f, P + c, W, dO + r0 * g->C, g->C, 1.0f,
               dV + a * g->R, g->R);
            c += n;
        }
        P += m * W;
        dS += m * W;
    }
}

void attention_sparse_backward(float *dqkv, float *scratch, const float *dout,
                               const float *qkv, const float *att,
                               const struct attn_shape *s)
{
    size_t T = s->T, nh = s->nh, nkv = s->nkv, hd = s->hd, q = nh / nkv;
    size_t tasks = s->B * nkv, R = (nh + 2 * nkv) * hd, C = nh * hd;
    struct sp g0 = sp_of(s, 0);
    size_t per = head_floats(&g0);
#pragma omp parallel for schedule(static) if (ops_omp_tasks(tasks))
    for (size_t bg = 0; bg < tasks; bg++) {
        size_t b = bg / nkv, kvh = bg % nkv;
        const float *base = qkv + b * T * R;
        float *dbase = dqkv + b * T * R;
        size_t koff = (nh + kvh) * hd, voff = (nh + nkv + kvh) * hd;
        struct sp g = sp_of(s, b);
        for (size_t h = kvh * q; h < (kvh + 1) * q; h++) {
            size_t bh = b * nh + h;
            sp_backward_head(dbase + h * hd, dbase + koff, dbase + voff,
                             scratch + bh * per, dout + b * T * C + h * hd,
                             att + bh * per, base + h * hd, base + koff,
                             base + voff, &g);
        }
    }
}
