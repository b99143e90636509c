/*
 * optim.c - AdamW, sum of squares for the global gradient norm, clip factor.
 *
 * Determinism: both kernels cut the array into chunks whose boundaries
 * depend on n only, never on the thread count.  Every element of AdamW is
 * independent and sits at the same offset of the same chunk whatever the
 * number of threads, so it is computed by the same instructions (vector
 * body or scalar tail) and the result is bitwise the same for any
 * OMP_NUM_THREADS.  sumsq adds each chunk in double with a fixed
 * accumulator layout and sums the chunk partials in chunk order.  Like
 * the element-wise ops (ops_internal.h), they use OpenMP only while
 * OpenBLAS runs one thread per rank.
 */
#include "optim.h"

#include <math.h>

#include "peak.h"

/* Elements per AdamW chunk: a multiple of every vector width, big enough
 * that the OpenMP scheduling cost is noise. */
#define OPTIM_CHUNK ((size_t)1 << 15)
/* sumsq: at most this many chunks (a stack array of partials), each at
 * least OPTIM_CHUNK elements long. */
#define SUMSQ_MAX_CHUNKS 256
/* Independent double accumulators in sumsq; lets the loop vectorise
 * without reassociating (no -ffast-math needed). */
#define SUMSQ_LANES 8

/* The inner loop over one chunk.  Plain arrays, no aliasing between them
 * (restrict), no calls but sqrtf: gcc -O3 vectorises it, provided the
 * build passes -fno-math-errno.  Without that flag gcc must keep a scalar
 * sqrtf call that can set errno, and the loop stays scalar (still correct;
 * a function-level optimize attribute or pragma does not help, because
 * the const-ness of the sqrtf builtin is fixed from the command line). */
static void adamw_chunk(float *restrict p, const float *restrict g_in,
                        float *restrict m, float *restrict v, size_t n,
                        float lr, float b1, float b2, float eps, float wd,
                        float inv_bc1, float inv_bc2, float grad_scale)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (size_t i = 0; i < n; i++) {
        float g = g_in[i] * grad_scale;
        float mi = b1 * m[i] + c1 * g;
        float vi = b2 * v[i] + c2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        float mhat = mi * inv_bc1;
        float vhat = vi * inv_bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
    }
}

static void adamw_any(float *param, bf16 *half, const float *grad, float *m,
                      float *v, size_t n, const struct adamw_hp *hp,
                      float grad_scale, int decay)
{
    /* bias corrections once, in double: 1 - b^t loses digits in float
     * when b is close to 1 and t is small */
    double bc1 = 1.0 - pow((double)hp->beta1, (double)hp->t);
    double bc2 = 1.0 - pow((double)hp->beta2, (double)hp->t);
    const float inv_bc1 = (float)(1.0 / bc1);
    const float inv_bc2 = (float)(1.0 / bc2);
    const float wd = decay ? hp->weight_decay : 0.0f;
    const float lr = hp->lr, b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps;
    const size_t nchunks = (n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    const long long nc = (long long)nchunks;

#pragma omp parallel for schedule(static) if (nc > 1 && threads_get() == 1)
    for (long long c = 0; c < nc; c++) {
        size_t lo = (size_t)c * OPTIM_CHUNK;
        size_t len = n - lo < OPTIM_CHUNK ? n - lo : OPTIM_CHUNK;
        adamw_chunk(param + lo, grad + lo, m + lo, v + lo, len, lr, b1, b2,
                    eps, wd, inv_bc1, inv_bc2, grad_scale);
        if (half) /* the chunk is still in cache */
            bf16_from_f32_n(half + lo, param + lo, len);
    }
}

/* ---- LAMB ------------------------------------------------------------------ */

struct adam_consts {
    float lr, b1, b2, eps, wd, inv_bc1, inv_bc2;
};

static struct adam_consts adam_consts_of(const struct adamw_hp *hp,
                                         int decay, int64_t t2)
{
    struct adam_consts k = {
        .lr = hp->lr, .b1 = hp->beta1, .b2 = hp->beta2, .eps = hp->eps,
        .wd = decay ? hp->weight_decay : 0.0f,
        .inv_bc1 = (float)(1.0 / (1.0 - pow((double)hp->beta1,
                                            (double)hp->t))),
        .inv_bc2 = (float)(1.0 / (1.0 - pow((double)hp->beta2,
                                            (double)t2))),
    };
    return k;
}

/* u of one element */
static inline float lamb_u(float p, float m, float v,
                           const struct adam_consts *k)
{
    return (m * k->inv_bc1) / (sqrtf(v * k->inv_bc2) + k->eps) + k->wd * p;
}

static void lamb_chunk(const float *restrict p, const float *restrict g_in,
                       float *restrict m, float *restrict v, size_t n,
                       const struct adam_consts *k, float grad_scale,
                       double *pp, double *uu)
{
    double sp = 0.0, su = 0.0;
    const float c1 = 1.0f - k->b1, c2 = 1.0f - k->b2;
    for (size_t i = 0; i < n; i++) {
        float g = g_in[i] * grad_scale;
        m[i] = k->b1 * m[i] + c1 * g;
        v[i] = k->b2 * v[i] + c2 * (g * g);
        double u = lamb_u(p[i], m[i], v[i], k);
        sp += (double)p[i] * p[i];
        su += u * u;
    }
    *pp = sp;
    *uu = su;
}

void lamb_moments(const float *param, const float *grad, float *m, float *v,
                  size_t n, const struct adamw_hp *hp, float grad_scale,
                  int decay, double *pp, double *uu)
{
    struct adam_consts k = adam_consts_of(hp, decay, hp->t);
    const long long nc = (long long)((n + OPTIM_CHUNK - 1) / OPTIM_CHUNK);
    double part[2 * SUMSQ_MAX_CHUNKS], sp = 0.0, su = 0.0;
    if (nc <= SUMSQ_MAX_CHUNKS) {
#pragma omp parallel for schedule(static) if (nc > 1)
        for (long long c = 0; c < nc; c++) {
            size_t lo = (size_t)c * OPTIM_CHUNK;
            size_t len = n - lo < OPTIM_CHUNK ? n - lo : OPTIM_CHUNK;
            lamb_chunk(param + lo, grad + lo, m + lo, v + lo, len, &k,
                       grad_scale, &part[2 * c], &part[2 * c + 1]);
        }
        for (long long c = 0; c < nc; c++) {
            sp += part[2 * c];
            su += part[2 * c + 1];
        }
    } else { /* more chunks than partial slots: serially, the same order */
        for (long long c = 0; c < nc; c++) {
            size_t lo = (size_t)c * OPTIM_CHUNK;
            size_t len = n - lo < OPTIM_CHUNK ? n - lo : OPTIM_CHUNK;
            double a, b;
            lamb_chunk(param + lo, grad + lo, m + lo, v + lo, len, &k,
                       grad_scale, &a, &b);
            sp += a;
            su += b;
        }
    }
    *pp += sp;
    *uu += su;
}

void lamb_apply(float *param, const float *m, const float *v, size_t n,
                const struct adamw_hp *hp, int decay, float ratio)
{
    struct adam_consts k = adam_consts_of(hp, decay, hp->t);
    const float step = k.lr * ratio;
    const long long nc = (long long)((n + OPTIM_CHUNK - 1) / OPTIM_CHUNK);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (long long c = 0; c < nc; c++) {
        size_t lo = (size_t)c * OPTIM_CHUNK;
        size_t len = n - lo < OPTIM_CHUNK ? n - lo : OPTIM_CHUNK;
        float *restrict p = param + lo;
        const float *restrict mm = m + lo, *restrict vv = v + lo;
        for (size_t i = 0; i < len; i++)
            p[i] -= step * lamb_u(p[i], mm[i], vv[i], &k);
    }
}

float lamb_ratio(double pp, double uu)
{
    if (!(pp > 0.0) || !(uu > 0.0))
        return 1.0f;
    return (float)sqrt(pp / uu);
}

/* ---- Adam with a frozen second moment (1-bit Adam) ------------------------- */

void frozen_v_update(float *param, const float *in, float *m, const float *v,
                     size_t n, const struct adamw_hp *hp, float grad_scale,
                     int decay, int64_t t_freeze, int is_momentum)
{
    struct adam_consts k = adam_consts_of(hp, decay,
                                          t_freeze > 0 ? t_freeze : 1);
    const float gs = is_momentum ? grad_scale : (1.0f - k.b1) * grad_scale;
    const long long nc = (long long)((n + OPTIM_CHUNK - 1) / OPTIM_CHUNK);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (long long c = 0; c < nc; c++) {
        size_t lo = (size_t)c * OPTIM_CHUNK;
        size_t len = n - lo < OPTIM_CHUNK ? n - lo : OPTIM_CHUNK;
        float *restrict p = param + lo, *restrict mm = m + lo;
        const float *restrict x = in + lo, *restrict vv = v + lo;
        for (size_t i = 0; i < len; i++) {
            float prev = k.b1 * mm[i];
            /* the gradient part: g, or what the new momentum adds */
            float gpart = is_momentum ? x[i] - prev : x[i];
            float mi = prev + gs * gpart;
            if (is_momentum && grad_scale == 1.0f)
                mi = x[i]; /* exactly the all-reduced momentum */
            mm[i] = mi;
            float vhat = vv[i] * k.inv_bc2;
            p[i] -= k.lr * ((mi * k.inv_bc1) / (sqrtf(vhat) + k.eps) +
                            k.wd * p[i]);
        }
    }
}

float lr_layer_scale(int layer, int embed, int L, float decay)
{
    if (decay == 1.0f)
        return 1.0f;
    int depth = layer >= 0 ? L - 1 - layer : embed ? L : 0;
    return (float)pow((double)decay, (double)depth);
}

/*
 * param, m, v are updated in place (caller owns all arrays, n elements
 * each, not overlapping).  hp->t must be >= 1.  No allocation, no errors.
 */
void adamw_update(float *param, const float *grad, float *m, float *v,
                  size_t n, const struct adamw_hp *hp, float grad_scale,
                  int decay)
{
    adamw_any(param, NULL, grad, m, v, n, hp, grad_scale, decay);
}

void adamw_update_bf16(float *param, bf16 *half, const float *grad, float *m,
                       float *v, size_t n, const struct adamw_hp *hp,
                       float grad_scale, int decay)
{
    adamw_any(param, half, grad, m, v, n, hp, grad_scale, decay);
}

/* Sum of squares of one chunk in double, SUMSQ_LANES partial sums added
 * in a fixed order at the end.  Each square is exact in double. */
static double sumsq_chunk(const float *restrict x, size_t n)
{
    double acc[SUMSQ_LANES] = {0};
    size_t i = 0;
    for (; i + SUMSQ_LANES <= n; i += SUMSQ_LANES)
        for (size_t j = 0; j < SUMSQ_LANES; j++) {
            double d = (double)x[i + j];
            acc[j] += d * d;
        }
    for (; i < n; i++) {
        double d = (double)x[i];
        acc[0] += d * d;
    }
    double s = 0.0;
    for (size_t j = 0; j < SUMSQ_LANES; j++)
        s += acc[j];
    return s;
}

/*
 * x (n) is read only.  The chunking depends on n alone (at most
 * SUMSQ_MAX_CHUNKS chunks on the stack), so the result is bitwise the same
 * for any thread count.  No allocation, no errors.
 */
double sumsq(const float *x, size_t n)
{
    double part[SUMSQ_MAX_CHUNKS];
    size_t chunk = (n + SUMSQ_MAX_CHUNKS - 1) / SUMSQ_MAX_CHUNKS;
    if (chunk < OPTIM_CHUNK)
        chunk = OPTIM_CHUNK;
    chunk = (chunk + SUMSQ_LANES - 1) / SUMSQ_LANES * SUMSQ_LANES;
    const long long nc = (long long)((n + chunk - 1) / chunk);

#pragma omp parallel for schedule(static) if (nc > 1 && threads_get() == 1)
    for (long long c = 0; c < nc; c++) {
        size_t lo = (size_t)c * chunk;
        size_t len = n - lo < chunk ? n - lo : chunk;
        part[c] = sumsq_chunk(x + lo, len);
    }
    double s = 0.0;
    for (long long c = 0; c < nc; c++)
        s += part[c];
    return s;
}

/*
 * min(1, max_norm / norm); 1 when max_norm <= 0 (clipping off) or when
 * norm is not above max_norm.  A NaN norm gives 1 (the caller detects a
 * non-finite norm and skips the step); an infinite norm gives 0.
 */
float clip_scale(double norm, float max_norm)
{
    if (max_norm <= 0.0f || !(norm > (double)max_norm))
        return 1.0f;
    return (float)((double)max_norm / norm);
}
