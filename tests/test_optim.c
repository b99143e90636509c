/*
 * test_optim.c - AdamW, LAMB, the frozen-variance Adam of 1-bit Adam,
 * layer-wise LR decay, sumsq, clip_scale and the LR schedules against
 * independent references: literal values computed by hand (or with
 * python3 from the formulas in optim.h, pasted here), and a scalar AdamW
 * written in double inside this file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "peak.h"
#include "offload.h"
#include "optim.h"
#include "zero_exec.h"

#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* |got - want| <= rel * |want| + abs_tol, with a readable failure */
static void check_close(double got, double want, double rel, double abs_tol,
                        const char *what, long long i)
{
    double tol = rel * fabs(want) + abs_tol;
    if (!(fabs(got - want) <= tol))
        fail_msg("%s[%lld]: got %.10g, want %.10g (tol %.3g)", what, i, got,
                 want, tol);
}

/* ---------------------------------------------------------------- AdamW */

/* The formula of optim.h, one element, everything in double. */
static void ref_adamw(double *p, double g, double *m, double *v, double lr,
                      double b1, double b2, double eps, double wd, long t,
                      double scale)
{
    g *= scale;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double mh = *m / (1 - pow(b1, (double)t));
    double vh = *v / (1 - pow(b2, (double)t));
    *p -= lr * (mh / (sqrt(vh) + eps) + wd * *p);
}

/* Step 1 by hand: lr 0.01, b1 0.9, b2 0.999, eps 1e-8, m = v = 0.
 * g = 0.5: m = 0.1 g = 0.05, v = 0.001 g^2 = 0.00025, mhat = 0.5,
 * vhat = 0.25, update = 0.01 * 0.5 / (0.5 + 1e-8) = 0.0099999998,
 * so p: 1 -> 0.99.  With wd = 0.1 and decay on: 1 - 0.01*(1 + 0.1) =
 * 0.989.  g = -2: p -> 1.01 (lr * sign(g)).  g = 1 with grad_scale 0.5
 * is the g = 0.5 case. */
static void test_adamw_step1_by_hand(void **state)
{
    (void)state;
    float p[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    float g[4] = {0.5f, -2.0f, 0.5f, 0.0f};
    float m[4] = {0}, v[4] = {0};
    struct adamw_hp hp = {0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 1};

    adamw_update(p, g, m, v, 4, &hp, 1.0f, 0);
    check_close(p[0], 0.99, 1e-7, 0, "p no decay", 0);
    check_close(p[1], 1.01, 1e-7, 0, "p no decay", 1);
    /* 1 - 0.999f is 0.00099998713 in float (relative 1.3e-5 off), which
     * the bias correction cancels in p but not in v itself */
    check_close(m[0], 0.05, 2e-5, 0, "m", 0);
    check_close(v[0], 0.00025, 2e-5, 0, "v", 0);
    check_close(m[1], -0.2, 2e-5, 0, "m", 1);
    check_close(v[1], 0.004, 2e-5, 0, "v", 1);
    assert_true(p[3] == 1.0f); /* g = 0, no decay: untouched */

    float q[2] = {1.0f, 1.0f}, gq[2] = {0.5f, 0.0f};
    float mq[2] = {0}, vq[2] = {0};
    adamw_update(q, gq, mq, vq, 2, &hp, 1.0f, 1);
    check_close(q[0], 0.989, 1e-7, 0, "p decay", 0);
    check_close(q[1], 0.999, 1e-7, 0, "p decay only", 1); /* lr*wd*p */

    float s[1] = {1.0f}, gs[1] = {1.0f}, ms[1] = {0}, vs[1] = {0};
    adamw_update(s, gs, ms, vs, 1, &hp, 0.5f, 0);
    check_close(ms[0], 0.05, 2e-5, 0, "m scaled", 0);
    check_close(vs[0], 0.00025, 2e-5, 0, "v scaled", 0);
    check_close(s[0], 0.99, 1e-7, 0, "p scaled", 0);
}

/* Three steps on a few elements against ref_adamw, with decay on and off
 * and a grad_scale != 1; gradients change every step. */
static void run_adamw_vs_ref(int decay, float scale)
{
    enum { N = 11, T = 3 };
    float p[N], m[N], v[N], g[N];
    double rp[N], rm[N], rv[N];
    struct adamw_hp hp = {3e-3f, 0.9f, 0.95f, 1e-6f, 0.05f, 0};
    for (int i = 0; i < N; i++) {
        p[i] = (float)(0.3 * (i - 5)) + 0.1f;
        m[i] = v[i] = 0.0f;
        rp[i] = p[i];
        rm[i] = rv[i] = 0.0;
    }
    for (int t = 1; t <= T; t++) {
        for (int i = 0; i < N; i++)
            g[i] = (float)(0.7 * sin(1.3 * i + 0.9 * t) + 0.05 * (i - 4));
        hp.t = t;
        adamw_update(p, g, m, v, N, &hp, scale, decay);
        for (int i = 0; i < N; i++)
            ref_adamw(&rp[i], g[i], &rm[i], &rv[i], hp.lr, hp.beta1,
                      hp.beta2, hp.eps, decay ? hp.weight_decay : 0.0, t,
                      scale);
        for (int i = 0; i < N; i++) {
            check_close(p[i], rp[i], 2e-6, 1e-7, "p", i);
            check_close(m[i], rm[i], 1e-5, 1e-8, "m", i);
            check_close(v[i], rv[i], 1e-5, 1e-10, "v", i);
        }
    }
}

static void test_adamw_vs_reference(void **state)
{
    (void)state;
    run_adamw_vs_ref(0, 1.0f);
    run_adamw_vs_ref(1, 1.0f);
    run_adamw_vs_ref(1, 0.37f);
    run_adamw_vs_ref(0, 2.5f);
}

/* decay = 0 must ignore weight_decay entirely: same bits as wd = 0. */
static void test_adamw_no_decay(void **state)
{
    (void)state;
    enum { N = 37 };
    float p1[N], p2[N], m1[N] = {0}, m2[N] = {0}, v1[N] = {0}, v2[N] = {0};
    float g[N];
    for (int i = 0; i < N; i++) {
        p1[i] = p2[i] = (float)i - 18.0f;
        g[i] = (float)cos(i);
    }
    struct adamw_hp a = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.5f, 1};
    struct adamw_hp b = a;
    b.weight_decay = 0.0f;
    adamw_update(p1, g, m1, v1, N, &a, 1.0f, 0);
    adamw_update(p2, g, m2, v2, N, &b, 1.0f, 1);
    assert_memory_equal(p1, p2, sizeof p1);
}

/* n = 1e6 + 3 (many chunks plus a ragged tail): same bits for 1, 2 and 3
 * threads; sumsq likewise.  The chunks run on OpenMP threads only while
 * OpenBLAS has one (threads_get() == 1), which is set here rather than
 * left to the environment. */
static void test_adamw_threads_bitwise(void **state)
{
    (void)state;
    const size_t n = 1000003;
    float *g = malloc(n * sizeof *g);
    float *p[3], *m[3], *v[3];
    double ss[3];
    assert_non_null(g);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)sin(0.001 * (double)i) * (float)(1 + i % 7);
    int saved = omp_get_max_threads();
    threads_set_each(1, 0);
    assert_int_equal(threads_get(), 1);
    for (int k = 0; k < 3; k++) {
        p[k] = malloc(n * sizeof(float));
        m[k] = calloc(n, sizeof(float));
        v[k] = calloc(n, sizeof(float));
        assert_true(p[k] && m[k] && v[k]);
        for (size_t i = 0; i < n; i++)
            p[k][i] = (float)cos(0.37 * (double)i);
        omp_set_num_threads(k + 1);
        struct adamw_hp hp = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0};
        for (int t = 1; t <= 2; t++) {
            hp.t = t;
            adamw_update(p[k], g, m[k], v[k], n, &hp, 0.8f, 1);
        }
        ss[k] = sumsq(p[k], n);
    }
    omp_set_num_threads(saved);
    for (int k = 1; k < 3; k++) {
        assert_memory_equal(p[0], p[k], n * sizeof(float));
        assert_memory_equal(m[0], m[k], n * sizeof(float));
        assert_memory_equal(v[0], v[k], n * sizeof(float));
        assert_memory_equal(&ss[0], &ss[k], sizeof(double));
    }
    for (int k = 0; k < 3; k++) {
        free(p[k]);
        free(m[k]);
        free(v[k]);
    }
    free(g);
}

/* ------------------------------------------------------ sumsq, clipping */

static void test_sumsq_vs_naive(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 7, 8, 9, 1000, 32768, 32769, 1000003,
                            9000001};
    size_t nmax = 9000001;
    float *x = malloc(nmax * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < nmax; i++)
        x[i] = (float)sin(0.013 * (double)i) * (float)(1 + i % 5);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        double want = 0.0;
        for (size_t i = 0; i < sizes[k]; i++)
            want += (double)x[i] * (double)x[i];
        check_close(sumsq(x, sizes[k]), want, 1e-12, 0, "sumsq n",
                    (long long)sizes[k]);
    }
    float small[3] = {3.0f, -4.0f, 12.0f};
    assert_true(sumsq(small, 3) == 169.0);
    free(x);
}

static void test_clip_scale(void **state)
{
    (void)state;
    assert_true(clip_scale(0.5, 1.0f) == 1.0f);
    assert_true(clip_scale(1.0, 1.0f) == 1.0f);
    assert_true(clip_scale(4.0, 1.0f) == 0.25f);
    check_close(clip_scale(3.0, 1.0f), 1.0 / 3.0, 1e-7, 0, "clip", 3);
    assert_true(clip_scale(100.0, 0.0f) == 1.0f);
    assert_true(clip_scale(100.0, -1.0f) == 1.0f);
    assert_true(clip_scale(0.0, 1.0f) == 1.0f);
}

/* ------------------------------------------------------- LR schedules */

struct lr_case {
    int64_t step;
    double want;
};

static void check_sched(const struct lr_sched *s, const struct lr_case *c,
                        size_t nc)
{
    for (size_t i = 0; i < nc; i++)
        check_close(lr_at(s, c[i].step), c[i].want, 1e-6, 0, "lr at step",
                    (long long)c[i].step);
}

#define CHECK_SCHED(s, cases) \
    check_sched(&(s), cases, sizeof(cases) / sizeof(cases)[0])

/* lr 1e-3, min_lr 1e-4, warmup 10, steps 110: p = (s - 10) / 100.
 * Values from the formulas of optim.h (python3, lr and min_lr rounded to
 * float first), checked by hand where short: warm-up step 0 is lr/10,
 * step 4 lr/2; the middle (step 60, p = 0.5) of cosine and linear is
 * (lr + min_lr)/2 = 5.5e-4; linear at 109 is 1e-3 - 9e-4 * 0.99 = 1.09e-4;
 * onecycle step 4 is lr/25 + (lr - lr/25)/2 = 5.2e-4. */
static void test_lr_schedules(void **state)
{
    (void)state;
    struct lr_sched s = {LR_CONSTANT, 1e-3f, 1e-4f, 10, 110, 20};
    static const struct lr_case constant[] = {
        {0, 1.000000047e-04}, {4, 5.000000237e-04}, {9, 1.000000047e-03},
        {10, 1.000000047e-03}, {60, 1.000000047e-03},
        {109, 1.000000047e-03}, {200, 1.000000047e-03}};
    static const struct lr_case cosine[] = {
        {0, 1.000000047e-04}, {4, 5.000000237e-04}, {9, 1.000000047e-03},
        {10, 1.000000047e-03}, {60, 5.500000225e-04},
        {109, 1.002220453e-04}, {110, 9.999999747e-05},
        {200, 9.999999747e-05}};
    static const struct lr_case linear[] = {
        {0, 1.000000047e-04}, {4, 5.000000237e-04}, {9, 1.000000047e-03},
        {10, 1.000000047e-03}, {60, 5.500000225e-04},
        {109, 1.089999980e-04}, {110, 9.999999747e-05},
        {200, 9.999999747e-05}};
    static const struct lr_case onecycle[] = {
        {0, 6.349287519e-05}, {4, 5.200000247e-04}, {9, 1.000000047e-03},
        {10, 1.000000047e-03}, {60, 5.500000225e-04},
        {109, 1.002220453e-04}, {110, 9.999999747e-05},
        {200, 9.999999747e-05}};
    /* cycle 20 after warm-up 10: lr at 10, 50, 90; min_lr at 30, 70 */
    static const struct lr_case cyclic[] = {
        {0, 1.000000047e-04}, {9, 1.000000047e-03}, {10, 1.000000047e-03},
        {15, 7.750000350e-04}, {20, 5.500000225e-04},
        {30, 9.999999747e-05}, {40, 5.500000225e-04},
        {50, 1.000000047e-03}, {55, 7.750000350e-04},
        {60, 5.500000225e-04}, {70, 9.999999747e-05},
        {90, 1.000000047e-03}};
    CHECK_SCHED(s, constant);
    s.kind = LR_COSINE;
    CHECK_SCHED(s, cosine);
    s.kind = LR_LINEAR;
    CHECK_SCHED(s, linear);
    s.kind = LR_ONECYCLE;
    CHECK_SCHED(s, onecycle);
    s.kind = LR_CYCLIC;
    CHECK_SCHED(s, cyclic);
}

static void test_lr_edge_cases(void **state)
{
    (void)state;
    /* no warm-up: cosine starts at lr, middle of 100 steps is 5.5e-4 */
    struct lr_sched s = {LR_COSINE, 1e-3f, 1e-4f, 0, 100, 0};
    static const struct lr_case nowarm[] = {
        {0, 1.000000047e-03}, {50, 5.500000225e-04}, {100, 9.999999747e-05}};
    CHECK_SCHED(s, nowarm);
    s.warmup = -3; /* negative warm-up is none */
    CHECK_SCHED(s, nowarm);

    /* steps <= warmup: warm-up as usual, then p jumps to 1 a step later */
    struct lr_sched l = {LR_LINEAR, 1e-3f, 1e-4f, 10, 5, 0};
    static const struct lr_case short_run[] = {
        {9, 1.000000047e-03}, {10, 1.000000047e-03}, {11, 9.999999747e-05},
        {50, 9.999999747e-05}};
    CHECK_SCHED(l, short_run);

    /* cycle <= 0 is 1: lr, min, lr, min, ... */
    struct lr_sched c = {LR_CYCLIC, 1e-3f, 1e-4f, 0, 100, 0};
    static const struct lr_case cyc1[] = {
        {0, 1.000000047e-03}, {1, 9.999999747e-05}, {2, 1.000000047e-03},
        {3, 9.999999747e-05}, {98, 1.000000047e-03}};
    CHECK_SCHED(c, cyc1);
    c.cycle = -4;
    CHECK_SCHED(c, cyc1);

    /* warmup 1: step 0 is lr itself (onecycle: lr/25 + (lr-lr/25)*1) */
    struct lr_sched o = {LR_ONECYCLE, 1e-3f, 1e-4f, 1, 11, 0};
    static const struct lr_case one[] = {
        {0, 1.000000047e-03}, {1, 1.000000047e-03}, {6, 5.500000225e-04},
        {11, 9.999999747e-05}};
    CHECK_SCHED(o, one);
}

static void test_lr_kind_parse(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum lr_kind kind;
    } ok[] = {{"constant", LR_CONSTANT}, {"cosine", LR_COSINE},
              {"linear", LR_LINEAR},     {"onecycle", LR_ONECYCLE},
              {"cyclic", LR_CYCLIC}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        enum lr_kind k = LR_CONSTANT;
        assert_int_equal(lr_kind_parse(ok[i].name, &k), 0);
        assert_int_equal(k, ok[i].kind);
    }
    enum lr_kind k = LR_LINEAR;
    assert_int_equal(lr_kind_parse("cosin", &k), -1);
    assert_int_equal(lr_kind_parse("", &k), -1);
    assert_int_equal(lr_kind_parse("Cosine ", &k), -1);
    assert_int_equal(lr_kind_parse(NULL, &k), -1);
    assert_int_equal(k, LR_LINEAR); /* untouched on error */
}

/* ----------------------------------------------------------------- LAMB */

/* A hand-sized case.  Step 1, b1 0.9, b2 0.99, eps 0, wd 0: mhat = g and
 * vhat = g^2, so u = sign(g) = (1, -1, 1, 1): ||u|| = 2.  p = (3, 0, 4,
 * 0): ||p|| = 5, r = 5 / 2 and with lr 0.1 every element moves by
 * 0.1 * 2.5 = 0.25 against its gradient's sign. */
static void test_lamb_by_hand(void **state)
{
    (void)state;
    float p[4] = {3, 0, 4, 0}, g[4] = {0.5f, -7, 2, 1e-3f};
    float m[4] = {0}, v[4] = {0};
    struct adamw_hp hp = {0.1f, 0.9f, 0.99f, 0.0f, 0.0f, 1};
    double pp = 0, uu = 0;
    lamb_moments(p, g, m, v, 4, &hp, 1.0f, 1, &pp, &uu);
    check_close(pp, 25.0, 1e-12, 0, "||p||^2", 0);
    check_close(uu, 4.0, 1e-6, 0, "||u||^2", 0);
    float r = lamb_ratio(pp, uu);
    check_close(r, 2.5, 1e-6, 0, "ratio", 0);
    lamb_apply(p, m, v, 4, &hp, 1, r);
    const double want[4] = {2.75, 0.25, 3.75, -0.25};
    for (int i = 0; i < 4; i++)
        check_close(p[i], want[i], 1e-6, 1e-7, "p", i);
    /* a zero norm gives ratio 1 (plain AdamW step) */
    assert_true(lamb_ratio(0.0, 4.0) == 1.0f);
    assert_true(lamb_ratio(4.0, 0.0) == 1.0f);
}

/* Several steps with weight decay against a double reference, and the
 * sums of squares over two halves adding up to the whole (what the tp
 * split relies on). */
static void test_lamb_vs_reference(void **state)
{
    (void)state;
    enum { N = 37, T = 3 };
    float p[N], m[N] = {0}, v[N] = {0}, g[N];
    double rp[N], rm[N] = {0}, rv[N] = {0};
    struct adamw_hp hp = {2e-2f, 0.9f, 0.95f, 1e-6f, 0.1f, 0};
    for (int i = 0; i < N; i++)
        rp[i] = p[i] = (float)(0.05 * sin(0.7 * i) + 0.01);
    for (int t = 1; t <= T; t++) {
        hp.t = t;
        for (int i = 0; i < N; i++)
            g[i] = (float)(0.3 * cos(1.1 * i + t) - 0.02);
        double pp = 0, uu = 0, pp2 = 0, uu2 = 0;
        float m2[N], v2[N];
        memcpy(m2, m, sizeof m);
        memcpy(v2, v, sizeof v);
        lamb_moments(p, g, m2, v2, 20, &hp, 0.8f, 1, &pp2, &uu2);
        lamb_moments(p + 20, g + 20, m2 + 20, v2 + 20, N - 20, &hp, 0.8f, 1,
                     &pp2, &uu2);
        lamb_moments(p, g, m, v, N, &hp, 0.8f, 1, &pp, &uu);
        check_close(pp2, pp, 1e-12, 0, "split ||p||^2", t);
        check_close(uu2, uu, 1e-12, 0, "split ||u||^2", t);
        lamb_apply(p, m, v, N, &hp, 1, lamb_ratio(pp, uu));
        double u[N], sp = 0, su = 0;
        for (int i = 0; i < N; i++) {
            double gg = g[i] * 0.8;
            rm[i] = 0.9 * rm[i] + 0.1 * gg;
            rv[i] = 0.95 * rv[i] + 0.05 * gg * gg;
            double mh = rm[i] / (1 - pow(0.9, t));
            double vh = rv[i] / (1 - pow(0.95, t));
            u[i] = mh / (sqrt(vh) + 1e-6) + 0.1 * rp[i];
            sp += rp[i] * rp[i];
            su += u[i] * u[i];
        }
        double ratio = sqrt(sp / su);
        for (int i = 0; i < N; i++) {
            rp[i] -= 2e-2 * ratio * u[i];
            check_close(p[i], rp[i], 1e-5, 1e-8, "p", i);
        }
    }
}

/* 1-bit Adam's frozen second moment: both forms of the momentum update
 * against a double reference; v is never written. */
static void test_frozen_v(void **state)
{
    (void)state;
    enum { N = 9 };
    float p[N], m[N], v[N], in[N], p2[N], m2[N];
    struct adamw_hp hp = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 50};
    for (int i = 0; i < N; i++) {
        p[i] = p2[i] = (float)(0.2 * i - 0.5);
        m[i] = m2[i] = (float)(0.01 * (i - 4));
        v[i] = (float)(1e-4 * (i + 1));
        in[i] = (float)(0.03 * cos(i));
    }
    float v0[N];
    memcpy(v0, v, sizeof v);
    /* is_momentum = 0: in is the gradient, scaled by 0.5 (clipping) */
    frozen_v_update(p, in, m, v, N, &hp, 0.5f, 1, 20, 0);
    /* is_momentum = 1: in is the new momentum b1 m + (1 - b1) g */
    frozen_v_update(p2, in, m2, v, N, &hp, 0.5f, 0, 20, 1);
    double bc1 = 1 - pow(0.9, 50), bc2 = 1 - pow(0.95, 20);
    for (int i = 0; i < N; i++) {
        double m0 = 0.01 * (i - 4), pi = 0.2 * i - 0.5;
        double ma = 0.9 * m0 + 0.1 * 0.5 * (double)in[i];
        double mb = 0.9 * m0 + 0.5 * ((double)in[i] - 0.9 * m0);
        double den = sqrt(v0[i] / bc2) + 1e-8;
        check_close(m[i], ma, 1e-5, 1e-9, "m (gradient)", i);
        check_close(m2[i], mb, 1e-5, 1e-9, "m (momentum)", i);
        check_close(p[i], pi - 1e-2 * (ma / bc1 / den + 0.1 * pi), 1e-5,
                    1e-7, "p (gradient)", i);
        check_close(p2[i], pi - 1e-2 * (mb / bc1 / den), 1e-5, 1e-7,
                    "p (momentum)", i);
    }
    assert_memory_equal(v, v0, sizeof v);
    /* scale 1: the momentum is taken as it came */
    frozen_v_update(p2, in, m2, v, N, &hp, 1.0f, 0, 20, 1);
    assert_memory_equal(m2, in, sizeof in);
}

/* L = 4, d = 0.5: blocks 3, 2, 1, 0 get 1, 1/2, 1/4, 1/8; the
 * embeddings 1/16; the final LayerNorm 1; d = 1 is always 1. */
static void test_lr_layer_scale(void **state)
{
    (void)state;
    const float want[4] = {0.125f, 0.25f, 0.5f, 1.0f};
    for (int l = 0; l < 4; l++)
        assert_true(lr_layer_scale(l, 0, 4, 0.5f) == want[l]);
    assert_true(lr_layer_scale(-1, 1, 4, 0.5f) == 0.0625f);
    assert_true(lr_layer_scale(-1, 0, 4, 0.5f) == 1.0f);
    assert_true(lr_layer_scale(0, 0, 4, 1.0f) == 1.0f);
    check_close(lr_layer_scale(1, 0, 12, 0.8f), pow(0.8, 10), 1e-6, 0,
                "0.8^10", 0);
}

/* ------------------------------------------------------------- offload */

/* The optimizer with its moments offloaded (zero_exec, stage 0) against
 * plain AdamW over the tensors: a model of 1.7M parameters spans two
 * streaming blocks, with tensors across the block boundary; three steps
 * must give the same bits (parameters and moments).  The offload file is
 * unlinked from the start; a directory that is a file, and one without
 * room for the file, are refused, naming it. */
static void test_offload_update_bitwise(void **state)
{
    (void)state;
    char dir[] = "/tmp/mpitron-test-offload-XXXXXX", err[512] = "";
    assert_non_null(mkdtemp(dir));
    struct gpt_config c = {.n_layer = 2, .n_embd = 256, .n_head = 4,
                           .n_kv_head = 4, .seq_len = 16, .vocab_size = 256};
    struct gpt ref, off;
    assert_int_equal(gpt_init(&ref, &c, 1, 0, 0, 2, 5, err, sizeof err), 0);
    assert_int_equal(gpt_init_arenas(&off, &c, 1, 0, 0, 2, 5,
                                     GPT_ARENA_PARAMS | GPT_ARENA_GRADS, err,
                                     sizeof err), 0);
    assert_null(off.m);
    assert_true(ref.tt.total > OFFLOAD_BLOCK + 1000);
    struct pp_schedule sc;
    assert_int_equal(pp_schedule_build(&sc, PP_1F1B, 1, 0, 1, 0, err,
                                       sizeof err), 0);
    struct zero_exec zx;
    if (zero_exec_init(&zx, &off, 0, NULL, &sc, &sc, dir, 0, 5, err,
                       sizeof err) != 0)
        fail_msg("%s", err);
    /* the file is already unlinked */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", dir);
    assert_int_equal(system(cmd), 0);
    struct adamw_hp hp = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f,
                          .eps = 1e-8f, .weight_decay = 0.1f};
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < ref.tt.total; i++)
            ref.grads[i] = off.grads[i] =
                (float)((int)((i * 7919 + (size_t)step * 13) % 2001) - 1000) *
                1e-3f;
        hp.t = step;
        for (int t = 0; t < ref.tt.n; t++) {
            const struct tensor_desc *d = &ref.tt.t[t];
            adamw_update(ref.params + d->off, ref.grads + d->off,
                         ref.m + d->off, ref.v + d->off, d->numel, &hp, 0.5f,
                         d->decay);
        }
        zero_exec_update(&zx, &hp, 0.5f, NULL);
    }
    size_t n = ref.tt.total * sizeof(float);
    assert_memory_equal(ref.params, off.params, n);
    assert_memory_equal(ref.m, zx.m_shard, n);
    assert_memory_equal(ref.v, zx.v_shard, n);
    zero_exec_free(&zx);
    assert_null(off.shards);
    /* a directory that is a file */
    char file[600];
    snprintf(file, sizeof file, "%s/f", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    struct offload o;
    assert_int_equal(offload_init(&o, file, 10, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, file));
    unlink(file);
    /* a disk too full for the file: RLIMIT_FSIZE makes the reservation
     * fail (EFBIG) as ENOSPC would; refused at once, naming offload_dir,
     * and the unlinked file is gone */
    struct rlimit lim0, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &lim0), 0);
    lim = lim0;
    lim.rlim_cur = (rlim_t)1 << 20;
    void (*sig0)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = offload_init(&o, dir, (size_t)1 << 20, 3, err, sizeof err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim0), 0);
    signal(SIGXFSZ, sig0);
    assert_int_equal(rc, -1);
    if (!strstr(err, dir) || !strstr(err, "cannot reserve") ||
        !strstr(err, "rank 3"))
        fail_msg("the error does not name offload_dir: %s", err);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(rmdir(dir), 0);
    pp_schedule_free(&sc);
    gpt_free(&ref);
    gpt_free(&off);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_step1_by_hand),
        cmocka_unit_test(test_adamw_vs_reference),
        cmocka_unit_test(test_adamw_no_decay),
        cmocka_unit_test(test_adamw_threads_bitwise),
        cmocka_unit_test(test_sumsq_vs_naive),
        cmocka_unit_test(test_clip_scale),
        cmocka_unit_test(test_lr_schedules),
        cmocka_unit_test(test_lr_edge_cases),
        cmocka_unit_test(test_lr_kind_parse),
        cmocka_unit_test(test_lamb_by_hand),
        cmocka_unit_test(test_lamb_vs_reference),
        cmocka_unit_test(test_frozen_v),
        cmocka_unit_test(test_lr_layer_scale),
        cmocka_unit_test(test_offload_update_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
