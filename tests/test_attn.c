/*
 * test_attn.c - the attention variants of ops.h against naive references
 * in double written here from the formulas: causal linear attention
 * (elu + 1 features, running sums in chunks) and block-sparse attention
 * (local and strided blocks), with grouped-query heads and document
 * bounds (lo), which the full kernel takes too, over lengths that span several chunks and blocks; every
 * gradient against central finite differences of the reference; sparse
 * attention whose pattern keeps every block equal to the full kernel.
 * No MPI.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <cmocka.h>
#include <omp.h>

#include "ops/ops.h"
#include "rng.h"

static uint64_t ctr;

static float *frand(size_t n, double scale)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * (2.0 * rng_uniform(77, ctr++) - 1.0));
    return x;
}

static float *fconst(size_t n, float v)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = v;
    return x;
}

struct ref {
    struct attn_shape s;
    double *qkv, *w, *out;
};

static double phi(double x)
{
    return x > 0 ? x + 1 : exp(x);
}

static size_t lo_at(const struct attn_shape *s, size_t b, size_t t)
{
    return s->lo ? (size_t)s->lo[b * s->T + t] : 0;
}

static int sees(const struct attn_shape *s, size_t t, size_t u)
{
    if (s->kind == ATTN_FULL) /* the window */
        return !s->window || t - u < s->window;
    size_t i = t / s->block, j = u / s->block;
    return j + 1 >= i || j % s->stride == 0;
}

/* out from qkv, the formula of ops.h for s.kind */
static void ref_forward(struct ref *r)
{
    const struct attn_shape *s = &r->s;
    size_t T = s->T, hd = s->hd, nh = s->nh, R = (nh + 2 * s->nkv) * hd;
    double *sc = malloc(T * sizeof(double));
    for (size_t b = 0; b < s->B; b++)
        for (size_t h = 0; h < nh; h++)
            for (size_t t = 0; t < T; t++) {
                size_t kvh = h / (nh / s->nkv);
                const double *q = r->qkv + (b * T + t) * R + h * hd;
                double mx = -INFINITY, den = 0;
                for (size_t u = lo_at(s, b, t); u <= t; u++) {
                    const double *k = r->qkv + (b * T + u) * R +
                                      (nh + kvh) * hd;
                    double d = 0;
                    if (s->kind == ATTN_LINEAR) {
                        for (size_t i = 0; i < hd; i++)
                            d += phi(q[i]) * phi(k[i]);
                    } else {
                        if (!sees(s, t, u)) {
                            sc[u] = -INFINITY;
                            continue;
                        }
                        for (size_t i = 0; i < hd; i++)
                            d += q[i] * k[i];
                        d /= sqrt((double)hd);
                        mx = fmax(mx, d);
                    }
                    sc[u] = d;
                }
                for (size_t u = lo_at(s, b, t); u <= t; u++) {
                    if (s->kind != ATTN_LINEAR)
                        sc[u] = sc[u] == -INFINITY ? 0 : exp(sc[u] - mx);
                    den += sc[u];
                }
                if (s->kind == ATTN_LINEAR)
                    den += 1e-6;
                double *o = r->out + (b * T + t) * nh * hd + h * hd;
                for (size_t i = 0; i < hd; i++) {
                    double acc = 0;
                    for (size_t u = lo_at(s, b, t); u <= t; u++)
                        acc += sc[u] * r->qkv[(b * T + u) * R +
                                              (nh + s->nkv + kvh) * hd + i];
                    o[i] = acc / den;
                }
            }
    free(sc);
}

static double ref_loss(struct ref *r)
{
    ref_forward(r);
    double l = 0;
    size_t no = r->s.B * r->s.T * r->s.nh * r->s.hd;
    for (size_t i = 0; i < no; i++)
        l += r->out[i] * r->w[i];
    return l;
}

/* forward then backward of the kernel under test; out, dqkv filled */
static void run(const struct attn_shape *s, const float *qkv,
                const float *dout, float *out, float *dqkv)
{
    if (s->kind == ATTN_LINEAR) {
        size_t ns = attention_linear_scratch(s);
        float *den = fconst(s->B * s->nh * s->T, NAN), *scr = fconst(ns, NAN);
        attention_linear_forward(out, den, scr, qkv, s);
        attention_linear_backward(dqkv, scr, dout, qkv, out, den, s);
        free(den);
        free(scr);
    } else if (s->kind == ATTN_FULL) {
        size_t TT = s->B * s->nh * s->T * s->T;
        float *att = fconst(TT, NAN), *scr = fconst(TT, NAN);
        attention_forward(out, att, qkv, s);
        attention_backward(dqkv, scr, dout, qkv, att, s);
        free(att);
        free(scr);
    } else {
        size_t na = attention_sparse_floats(s);
        float *att = fconst(na, NAN), *scr = fconst(na, NAN);
        attention_sparse_forward(out, att, qkv, s);
        attention_sparse_backward(dqkv, scr, dout, qkv, att, s);
        free(att);
        free(scr);
    }
}

/* The kernel against the reference: out within 2e-6 relative to its
 * largest entry; the gradient (added to a random dqkv: it accumulates)
 * against central differences on every entry, or on `sample` entries. */
static void check(struct attn_shape s, size_t sample)
{
    size_t R = (s.nh + 2 * s.nkv) * s.hd, nq = s.B * s.T * R;
    size_t no = s.B * s.T * s.nh * s.hd;
    float *qkv = frand(nq, 1.5), *dout = frand(no, 1.0);
    float *out = fconst(no, NAN), *dq = frand(nq, 1.0);
    float *dq0 = malloc(nq * sizeof(float));
    memcpy(dq0, dq, nq * sizeof(float));
    struct ref r = {s, malloc(nq * sizeof(double)),
                    malloc(no * sizeof(double)), malloc(no * sizeof(double))};
    for (size_t i = 0; i < nq; i++)
        r.qkv[i] = qkv[i];
    for (size_t i = 0; i < no; i++)
        r.w[i] = dout[i];
    run(&s, qkv, dout, out, dq);
    ref_forward(&r);
    double scale = 0, err = 0;
    for (size_t i = 0; i < no; i++) {
        scale = fmax(scale, fabs(r.out[i]));
        err = fmax(err, fabs(out[i] - r.out[i]));
        if (isnan(out[i]))
            fail_msg("out[%zu] is NaN", i);
    }
    if (err > 2e-6 * scale)
        fail_msg("kind %d T %zu: out differs by %.3g (scale %.3g)", s.kind,
                 s.T, err, scale);
    if (sample) { /* and the derivative along 2 random directions */
        double *dir = malloc(nq * sizeof(double));
        for (int d = 0; d < 2; d++) {
            double an = 0, h = 1e-5;
            for (size_t i = 0; i < nq; i++) {
                dir[i] = 2.0 * rng_uniform(9, ctr++) - 1.0;
                an += dir[i] * ((double)dq[i] - dq0[i]);
                r.qkv[i] += h * dir[i];
            }
            double lp = ref_loss(&r);
            for (size_t i = 0; i < nq; i++)
                r.qkv[i] -= 2 * h * dir[i];
            double fd = (lp - ref_loss(&r)) / (2 * h);
            for (size_t i = 0; i < nq; i++)
                r.qkv[i] = qkv[i];
            if (!(fabs(an - fd) <= 1e-4 * fabs(fd) + 1e-5))
                fail_msg("kind %d T %zu: directional derivative %.7g, "
                         "finite differences %.7g", s.kind, s.T, an, fd);
        }
        free(dir);
    }
    size_t n = sample ? sample : nq;
    for (size_t k = 0; k < n; k++) {
        size_t i = sample ? (size_t)(rng_u64(5, k) % nq) : k;
        double x0 = r.qkv[i], h = 1e-5;
        r.qkv[i] = x0 + h;
        double lp = ref_loss(&r);
        r.qkv[i] = x0 - h;
        double lm = ref_loss(&r);
        r.qkv[i] = x0;
        double fd = (lp - lm) / (2 * h), got = (double)dq[i] - dq0[i];
        if (!(fabs(got - fd) <= 2e-4 * fabs(fd) + 2e-5))
            fail_msg("kind %d T %zu: dqkv[%zu] = %.7g, finite differences "
                     "%.7g", s.kind, s.T, i, got, fd);
    }
    free(qkv), free(dout), free(out), free(dq), free(dq0);
    free(r.qkv), free(r.w), free(r.out);
}

/* document bounds: starts at the given positions of each sequence */
static int32_t *docs(size_t B, size_t T, const size_t *starts, size_t n)
{
    int32_t *lo = malloc(B * T * sizeof(int32_t));
    for (size_t b = 0; b < B; b++) {
        int32_t cur = 0;
        for (size_t t = 0; t < T; t++) {
            for (size_t k = 0; k < n; k++)
                if (starts[k] + b == t) /* shifted per sequence */
                    cur = (int32_t)t;
            lo[b * T + t] = cur;
        }
    }
    return lo;
}

static void test_linear(void **state)
{
    (void)state;
    struct attn_shape s = {.B = 2, .T = 13, .nh = 2, .nkv = 2, .hd = 4,
                           .kind = ATTN_LINEAR};
    check(s, 0);
    s.nh = 4; /* grouped-query */
    check(s, 0);
    /* several chunks of 64, the last partial; GQA and MQA */
    s = (struct attn_shape){.B = 2, .T = 150, .nh = 4, .nkv = 2, .hd = 8,
                            .kind = ATTN_LINEAR};
    check(s, 40);
    s.nkv = 1;
    check(s, 40);
}

static void test_linear_docs(void **state)
{
    (void)state;
    /* documents starting inside a chunk, exactly at a chunk boundary (64,
     * 128 for sequence 0) and right after one */
    const size_t st[] = {5, 64, 70, 128, 129};
    struct attn_shape s = {.B = 2, .T = 150, .nh = 2, .nkv = 1, .hd = 8,
                           .kind = ATTN_LINEAR};
    int32_t *lo = docs(s.B, s.T, st, 5);
    s.lo = lo;
    check(s, 60);
    /* a document from a chunk's first row on through the next chunk */
    int32_t *lo3 = docs(s.B, s.T, st, 2);
    s.lo = lo3;
    check(s, 60);
    s.T = 20;
    int32_t *lo2 = docs(s.B, s.T, st, 1);
    s.lo = lo2;
    check(s, 0);
    free(lo);
    free(lo2);
    free(lo3);
}

static void test_sparse(void **state)
{
    (void)state;
    struct attn_shape s = {.B = 2, .T = 23, .nh = 2, .nkv = 1, .hd = 4,
                           .kind = ATTN_SPARSE, .block = 4, .stride = 3};
    check(s, 0);
    s = (struct attn_shape){.B = 1, .T = 150, .nh = 4, .nkv = 2, .hd = 8,
                            .kind = ATTN_SPARSE, .block = 16, .stride = 4};
    check(s, 40);
    const size_t st[] = {9, 40, 41};
    int32_t *lo = docs(s.B, s.T, st, 3);
    s.lo = lo;
    check(s, 40);
    free(lo);
}

/* the full kernel's document bounds, with and without a window, over
 * several of its row blocks */
static void test_full_docs(void **state)
{
    (void)state;
    const size_t st[] = {9, 64, 100, 101};
    struct attn_shape s = {.B = 2, .T = 150, .nh = 4, .nkv = 2, .hd = 8,
                           .kind = ATTN_FULL};
    int32_t *lo = docs(s.B, s.T, st, 4);
    s.lo = lo;
    check(s, 40);
    s.window = 20;
    check(s, 40);
    free(lo);
}

/* stride 1 keeps every block: the full causal kernel's output and
 * gradient, and the packed probabilities take T (T + 1) / 2 + the
 * diagonal blocks' upper halves */
static void test_sparse_stride1_is_full(void **state)
{
    (void)state;
    struct attn_shape s = {.B = 2, .T = 70, .nh = 2, .nkv = 2, .hd = 8,
                           .kind = ATTN_SPARSE, .block = 16, .stride = 1};
    struct attn_shape f = s;
    f.kind = ATTN_FULL;
    size_t R = (s.nh + 2 * s.nkv) * s.hd, nq = s.B * s.T * R;
    size_t no = s.B * s.T * s.nh * s.hd, TT = s.B * s.nh * s.T * s.T;
    float *qkv = frand(nq, 1.5), *dout = frand(no, 1.0);
    float *o1 = fconst(no, NAN), *o2 = fconst(no, NAN);
    float *d1 = fconst(nq, 0), *d2 = fconst(nq, 0);
    float *att = fconst(TT, NAN), *scr = fconst(TT, NAN);
    run(&s, qkv, dout, o1, d1);
    attention_forward(o2, att, qkv, &f);
    attention_backward(d2, scr, dout, qkv, att, &f);
    for (size_t i = 0; i < no; i++)
        assert_true(fabs(o1[i] - o2[i]) <= 1e-5);
    for (size_t i = 0; i < nq; i++)
        assert_true(fabs(d1[i] - d2[i]) <= 1e-5);
    /* 70 = 4 x 16 + 6: row block i sees (i + 1) blocks */
    size_t want = 0;
    for (size_t i = 0; i < 5; i++)
        want += (i < 4 ? 16 : 6) * (i * 16 + (i < 4 ? 16 : 6));
    assert_int_equal(attention_sparse_floats(&s), s.B * s.nh * want);
    free(qkv), free(dout), free(o1), free(o2), free(d1), free(d2);
    free(att), free(scr);
}

/* Each kind (full with document bounds, linear, sparse) gives the same
 * bits on 1 and 2 OpenMP threads (B x nh tasks split over them; tests
 * run with OMP_NUM_THREADS=1, so only this one reaches the parallel
 * loops). */
static void test_threads_bitwise(void **state)
{
    (void)state;
    const size_t st[] = {5, 64, 70};
    int32_t *lo = docs(2, 150, st, 3);
    const enum attn_kind kinds[3] = {ATTN_FULL, ATTN_LINEAR, ATTN_SPARSE};
    int saved = omp_get_max_threads();
    for (int k = 0; k < 3; k++) {
        struct attn_shape s = {.B = 2, .T = 150, .nh = 4, .nkv = 2, .hd = 8,
                               .kind = kinds[k], .block = 16, .stride = 3,
                               .lo = k == 0 ? lo : NULL};
        size_t nq = s.B * s.T * (s.nh + 2 * s.nkv) * s.hd;
        size_t no = s.B * s.T * s.nh * s.hd;
        ctr = 4242;
        float *qkv = frand(nq, 1.5), *dout = frand(no, 1.0);
        float *out[2], *dq[2];
        for (int t = 0; t < 2; t++) {
            omp_set_num_threads(t + 1);
            out[t] = fconst(no, NAN);
            dq[t] = fconst(nq, 0.0f);
            run(&s, qkv, dout, out[t], dq[t]);
        }
        omp_set_num_threads(saved);
        if (memcmp(out[0], out[1], no * sizeof(float)) ||
            memcmp(dq[0], dq[1], nq * sizeof(float)))
            fail_msg("attention kind %d differs between 1 and 2 threads",
                     (int)kinds[k]);
        for (int t = 0; t < 2; t++)
            free(out[t]), free(dq[t]);
        free(qkv), free(dout);
    }
    free(lo);
}

int main(void)
{
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_linear_docs),
        cmocka_unit_test(test_sparse),
        cmocka_unit_test(test_sparse_stride1_is_full),
        cmocka_unit_test(test_full_docs),
        cmocka_unit_test(test_threads_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
