/*
 * ops_attention_linear.c - causal linear attention (Katharopoulos et al.
 * 2020) with the feature map phi(x) = elu(x) + 1 (contract in ops.h):
 *
 *   out_t = sum_{s<=t} (phi(q_t) . phi(k_s)) v_s
 *           / (sum_{s<=t} phi(q_t) . phi(k_s) + eps)
 *         = phi(q_t) S_t / (phi(q_t) . z_t + eps),
 *   S_t = sum_{s<=t} phi(k_s) v_s^T (hd x hd),  z_t = sum_{s<=t} phi(k_s)
 *
 * O(T hd^2) per head with running sums instead of O(T^2 hd).  Computed
 * in chunks of LIN_CHUNK rows so that every product is a matrix product
 * (the chunkwise form): within a chunk the causal part is the masked
 * (m x m) matrix A = phi(Q_c) phi(K_c)^T, and the chunks before enter
 * through the running state:
 *   num_c = A V_c + phi(Q_c) S,  den_c = rowsum(A) + phi(Q_c) z + eps,
 *   then S += phi(K_c)^T V_c, z += colsum phi(K_c).
 * Backward recomputes the states chunk by chunk, then walks the chunks
 * backwards accumulating G = sum over later rows of phi(q_t) dnum_t^T
 * (and g for the denominator), the gradient of the state, which reaches
 * the keys and values of earlier chunks.
 *
 * Documents (s->lo): row t sees keys s >= lo(t) only: A is masked there,
 * a row whose document starts inside its chunk does not read the state,
 * and the state is reset where a document starts (or restarted from the
 * part of the chunk in the document that continues).
 *
 * Threads as in ops_attention.c: (batch, head) pairs in forward,
 * (batch, kv head) groups in backward, OpenMP only when BLAS is serial.
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops_internal.h"

#define LIN_CHUNK 64
#define LIN_EPS 1e-6f

/* C (M,N) = alpha op(A) op(B) + beta C, row-major, leading dimensions */

static inline float phi(float x)
{
    return x > 0.0f ? x + 1.0f : expf(x);
}

static inline float dphi(float x)
{
    return x > 0.0f ? 1.0f : expf(x);
}

/* f (T, hd) = phi of T rows of x (row stride R) */
static void features(float *f, const float *x, size_t T, size_t hd,
                     size_t R)
{
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < hd; i++)
            f[t * hd + i] = phi(x[t * R + i]);
}

/* The geometry of one (batch, head): rows, strides, document bounds. */
struct lin {
    size_t T, hd, R, C, nch;
    const int32_t *lo; /* (T) first visible key of each row, or NULL */
};

static size_t lo_of(const struct lin *g, size_t t)
{
    return g->lo ? (size_t)g->lo[t] : 0;
}

/* Rows of chunk [r0, r1) that read the state: a prefix, those whose
 * document began before r0. */
static size_t state_rows(const struct lin *g, size_t r0, size_t r1)
{
    size_t n = 0;
    while (r0 + n < r1 && (r0 == 0 || lo_of(g, r0 + n) < r0))
        n++;
    return r0 == 0 ? 0 : n;
}

/* Within chunk r0, whether row i sees key j (both chunk-relative). */
static int visible(const struct lin *g, size_t r0, size_t i, size_t j)
{
    size_t lo = lo_of(g, r0 + i);
    return j <= i && r0 + j >= lo;
}

/* A (m x m) = Qf_c Kf_c^T, masked to each row's visible keys */
static void chunk_scores(float *A, const float *Qf, const float *Kf,
                         size_t r0, size_t m, const struct lin *g)
{
    ops_sgemm(0, 1, m, m, g->hd, 1.0f, Qf + r0 * g->hd, g->hd, Kf + r0 * g->hd,
       g->hd, 0.0f, A, m);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < m; j++)
            if (!visible(g, r0, i, j))
                A[i * m + j] = 0.0f;
}

/* The state after chunk [r0, r1) (S, z hold the state before it): the
 * keys of the document that row r1 continues. */
static void state_next(float *S, float *z, const float *Kf, const float *V,
                       size_t r0, size_t r1, const struct lin *g)
{
    size_t hd = g->hd;
    size_t lo1 = r1 < g->T ? lo_of(g, r1) : r0; /* end: any */
    if (lo1 >= r1) { /* a document starts at r1 */
        memset(S, 0, hd * hd * sizeof(float));
        memset(z, 0, hd * sizeof(float));
        return;
    }
    size_t k0 = lo1 > r0 ? lo1 : r0;
    float beta = lo1 >= r0 ? 0.0f : 1.0f; /* the document starts here */
    ops_sgemm(1, 0, hd, hd, r1 - k0, 1.0f, Kf + k0 * hd, hd, V + k0 * g->R, g->R,
       beta, S, hd);
    if (beta == 0.0f)
        memset(z, 0, hd * sizeof(float));
    for (size_t t = k0; t < r1; t++)
        for (size_t i = 0; i < hd; i++)
            z[i] += Kf[t * hd + i];
}

/* One (batch, head).  w: 2 T hd + m^2 + hd^2 + hd floats. */
static void lin_forward_head(float *O, float *den, const float *Q,
                             const float *K, const float *V,
                             const struct lin *g, float *w)
{
    size_t T = g->T, hd = g->hd;
    float *Qf = w, *Kf = Qf + T * hd, *A = Kf + T * hd;
    float *S = A + LIN_CHUNK * LIN_CHUNK, *z = S + hd * hd;
    features(Qf, Q, T, hd, g->R);
    features(Kf, K, T, hd, g->R);
    memset(S, 0, (hd * hd + hd) * sizeof(float));
    for (size_t r0 = 0; r0 < T; r0 += LIN_CHUNK) {
        size_t r1 = r0 + LIN_CHUNK < T ? r0 + LIN_CHUNK : T, m = r1 - r0;
        size_t ns = state_rows(g, r0, r1);
        chunk_scores(A, Qf, Kf, r0, m, g);
        ops_sgemm(0, 0, m, hd, m, 1.0f, A, m, V + r0 * g->R, g->R, 0.0f,
           O + r0 * g->C, g->C);
        ops_sgemm(0, 0, ns, hd, hd, 1.0f, Qf + r0 * hd, hd, S, hd, 1.0f,
           O + r0 * g->C, g->C);
        for (size_t i = 0; i < m; i++) {
            float d = ops_sum(A + i * m, m) + LIN_EPS;
            if (i < ns)
                d += ops_dot(Qf + (r0 + i) * hd, z, hd);
            den[r0 + i] = d;
            float inv = 1.0f / d, *o = O + (r0 + i) * g->C;
            for (size_t j = 0; j < hd; j++)
                o[j] *= inv;
        }
        state_next(S, z, Kf, V, r0, r1, g);
    }
}

static struct lin lin_of(const struct attn_shape *s, size_t b)
{
    struct lin g = {
        .T = s->T, .hd = s->hd, .R = (s->nh + 2 * s->nkv) * s->hd,
        .C = s->nh * s->hd, .nch = (s->T + LIN_CHUNK - 1) / LIN_CHUNK,
        .lo = s->lo ? s->lo + b * s->T : NULL,
    };
    return g;
}

static size_t fwd_work(const struct attn_shape *s)
{
    size_t hd = s->hd;
    return 2 * s->T * hd + LIN_CHUNK * LIN_CHUNK + hd * hd + hd;
}

static size_t bwd_work(const struct attn_shape *s)
{
    size_t hd = s->hd, nch = (s->T + LIN_CHUNK - 1) / LIN_CHUNK;
    return 6 * s->T * hd + 2 * LIN_CHUNK * LIN_CHUNK +
           (nch + 1) * (hd * hd + hd) + s->T;
}

size_t attention_linear_scratch(const struct attn_shape *s)
{
    size_t f = s->B * s->nh * fwd_work(s), b = s->B * s->nkv * bwd_work(s);
    return f > b ? f : b;
}

void attention_linear_forward(float *out, float *den, float *scratch,
                              const float *qkv, const struct attn_shape *s)
{
    size_t T = s->T, nh = s->nh, hd = s->hd, q = nh / s->nkv;
    size_t tasks = s->B * nh, R = (nh + 2 * s->nkv) * hd, C = nh * hd;
    size_t work = fwd_work(s);
#pragma omp parallel for schedule(static) if (ops_omp_tasks(tasks))
    for (size_t bh = 0; bh < tasks; bh++) {
        size_t b = bh / nh, h = bh % nh, kvh = h / q;
        const float *base = qkv + b * T * R;
        struct lin g = lin_of(s, b);
        lin_forward_head(out + b * T * C + h * hd, den + bh * T,
                         base + h * hd, base + (nh + kvh) * hd,
                         base + (nh + s->nkv + kvh) * hd, &g,
                         scratch + bh * work);
    }
}

/* ---- backward ------------------------------------------------------------- */

struct lin_bwd {
    const struct lin *g;
    const float *Qf, *Kf, *V, *dnum, *dden;
    float *dQf, *dKf, *dV;   /* (T, hd) */
    float *A, *dA;           /* (m, m) */
    float *Sst;              /* (nch, hd^2 + hd): the state before each */
    float *G, *gz;           /* hd^2, hd */
};

/* The states before each chunk, as the forward had them. */
static void states_record(const struct lin_bwd *w)
{
    const struct lin *g = w->g;
    size_t hd = g->hd, st = hd * hd + hd;
    float *S = w->G, *z = w->gz; /* free until the backward walk */
    memset(S, 0, st * sizeof(float));
    for (size_t c = 0, r0 = 0; r0 < g->T; c++, r0 += LIN_CHUNK) {
        size_t r1 = r0 + LIN_CHUNK < g->T ? r0 + LIN_CHUNK : g->T;
        memcpy(w->Sst + c * st, S, hd * hd * sizeof(float));
        memcpy(w->Sst + c * st + hd * hd, z, hd * sizeof(float));
        state_next(S, z, w->Kf, w->V, r0, r1, g);
    }
}

/* Chunk c of the backward walk; G, gz hold the state's gradient from the
 * chunks after it and leave with that of the chunks from c on. */
static void lin_backward_chunk(const struct lin_bwd *w, size_t c)
{
    const struct lin *g = w->g;
    size_t hd = g->hd, r0 = c * LIN_CHUNK;
    size_t r1 = r0 + LIN_CHUNK < g->T ? r0 + LIN_CHUNK : g->T, m = r1 - r0;
    size_t ns = state_rows(g, r0, r1), R = g->R;
    const float *S = w->Sst + c * (hd * hd + hd), *z = S + hd * hd;
    /* later rows reach this chunk's keys [k0, r1) through the state */
    size_t lo1 = r1 < g->T ? lo_of(g, r1) : r1;
    if (lo1 < r1) {
        size_t k0 = lo1 > r0 ? lo1 : r0;
        ops_sgemm(0, 1, r1 - k0, hd, hd, 1.0f, w->V + k0 * R, R, w->G, hd, 1.0f,
           w->dKf + k0 * hd, hd);
        ops_sgemm(0, 0, r1 - k0, hd, hd, 1.0f, w->Kf + k0 * hd, hd, w->G, hd, 1.0f,
           w->dV + k0 * hd, hd);
        for (size_t t = k0; t < r1; t++)
            for (size_t i = 0; i < hd; i++)
                w->dKf[t * hd + i] += w->gz[i];
    }
    /* within the chunk */
    chunk_scores(w->A, w->Qf, w->Kf, r0, m, g);
    ops_sgemm(0, 1, m, m, hd, 1.0f, w->dnum + r0 * hd, hd, w->V + r0 * R, R, 0.0f,
       w->dA, m);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < m; j++)
            w->dA[i * m + j] = visible(g, r0, i, j)
                                   ? w->dA[i * m + j] + w->dden[r0 + i]
                                   : 0.0f;
    ops_sgemm(1, 0, m, hd, m, 1.0f, w->A, m, w->dnum + r0 * hd, hd, 1.0f,
       w->dV + r0 * hd, hd);
    ops_sgemm(0, 0, m, hd, m, 1.0f, w->dA, m, w->Kf + r0 * hd, hd, 1.0f,
       w->dQf + r0 * hd, hd);
    ops_sgemm(1, 0, m, hd, m, 1.0f, w->dA, m, w->Qf + r0 * hd, hd, 1.0f,
       w->dKf + r0 * hd, hd);
    /* the rows that read the state: their gradient, and the state's */
    ops_sgemm(0, 1, ns, hd, hd, 1.0f, w->dnum + r0 * hd, hd, S, hd, 1.0f,
       w->dQf + r0 * hd, hd);
    for (size_t i = 0; i < ns; i++)
        for (size_t k = 0; k < hd; k++)
            w->dQf[(r0 + i) * hd + k] += w->dden[r0 + i] * z[k];
    int cont = r1 < g->T && lo_of(g, r1) < r0; /* later rows see before */
    ops_sgemm(1, 0, hd, hd, ns, 1.0f, w->Qf + r0 * hd, hd, w->dnum + r0 * hd, hd,
       cont ? 1.0f : 0.0f, w->G, hd);
    if (!cont)
        memset(w->gz, 0, hd * sizeof(float));
    if (ns == 0 && !cont)
        memset(w->G, 0, hd * hd * sizeof(float));
    for (size_t i = 0; i < ns; i++)
        for (size_t k = 0; k < hd; k++)
            w->gz[k] += w->dden[r0 + i] * w->Qf[(r0 + i) * hd + k];
}

/* One query head of a group: dQ += ; dKf, dV (T, hd) += this head's
 * share.  ws: 2 T hd + T + the walk's buffers. */
static void lin_backward_head(float *dQ, float *dKf, float *dV,
                              const float *dO, const float *O,
                              const float *den, const float *Q,
                              const float *Kf, const float *V,
                              const struct lin *g, float *ws)
{
    size_t T = g->T, hd = g->hd, st = hd * hd + hd;
    struct lin_bwd w = {.g = g, .Kf = Kf, .V = V, .dKf = dKf, .dV = dV};
    float *Qf = ws, *dnum = Qf + T * hd, *dQf = dnum + T * hd;
    float *dden = dQf + T * hd;
    w.A = dden + T;
    w.dA = w.A + LIN_CHUNK * LIN_CHUNK;
    w.Sst = w.dA + LIN_CHUNK * LIN_CHUNK;
    w.G = w.Sst + g->nch * st;
    w.gz = w.G + hd * hd;
    w.Qf = Qf;
    w.dnum = dnum;
    w.dden = dden;
    w.dQf = dQf;
    features(Qf, Q, T, hd, g->R);
    for (size_t t = 0; t < T; t++) {
        const float *o = O + t * g->C, *d = dO + t * g->C;
        float inv = 1.0f / den[t];
        dden[t] = -ops_dot(d, o, hd) * inv;
        for (size_t i = 0; i < hd; i++)
            dnum[t * hd + i] = d[i] * inv;
    }
    memset(dQf, 0, T * hd * sizeof(float));
    states_record(&w);
    memset(w.G, 0, st * sizeof(float));
    for (size_t c = g->nch; c-- > 0;)
        lin_backward_chunk(&w, c);
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < hd; i++)
            dQ[t * g->R + i] += dQf[t * hd + i] * dphi(Q[t * g->R + i]);
}

void attention_linear_backward(float *dqkv, float *scratch, const float *dout,
                               const float *qkv, const float *out,
                               const float *den, const struct attn_shape *s)
{
    size_t T = s->T, nh = s->nh, nkv = s->nkv, hd = s->hd, q = nh / nkv;
    size_t tasks = s->B * nkv, R = (nh + 2 * nkv) * hd, C = nh * hd;
    size_t work = bwd_work(s);
#pragma omp parallel for schedule(static) if (ops_omp_tasks(tasks))
    for (size_t bg = 0; bg < tasks; bg++) {
        size_t b = bg / nkv, kvh = bg % nkv;
        const float *base = qkv + b * T * R;
        float *dbase = dqkv + b * T * R, *w = scratch + bg * work;
        const float *K = base + (nh + kvh) * hd;
        const float *V = base + (nh + nkv + kvh) * hd;
        float *Kf = w, *dKf = Kf + T * hd, *ws = dKf + T * hd;
        struct lin g = lin_of(s, b);
        features(Kf, K, T, hd, R);
        memset(dKf, 0, T * hd * sizeof(float));
        /* dV accumulates straight into dqkv (row stride R) */
        float *dVc = ws, *wh = dVc + T * hd;
        memset(dVc, 0, T * hd * sizeof(float));
        for (size_t h = kvh * q; h < (kvh + 1) * q; h++) {
            size_t bh = b * nh + h;
            lin_backward_head(dbase + h * hd, dKf, dVc,
                              dout + b * T * C + h * hd,
                              out + b * T * C + h * hd, den + bh * T,
                              base + h * hd, Kf, V, &g, wh);
        }
        for (size_t t = 0; t < T; t++)
            for (size_t i = 0; i < hd; i++) {
                dbase[t * R + (nh + kvh) * hd + i] +=
                    dKf[t * hd + i] * dphi(K[t * R + i]);
                dbase[t * R + (nh + nkv + kvh) * hd + i] += dVc[t * hd + i];
            }
    }
}
