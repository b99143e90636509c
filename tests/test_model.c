/*
 * test_model.c - the whole model against independent references:
 *  - every parameter gradient of a tiny GPT (GQA, sliding window, dropout;
 *    label smoothing, z-loss and a padded vocabulary) against central
 *    finite differences of the loss;
 *  - gradient accumulation: a batch of 8 as 4 micro-batches of 2 gives the
 *    same AdamW update as one micro-batch of 8;
 *  - parameter init depends on the global index only: a row shard of a
 *    tensor initialises to the same values as the whole tensor;
 *  - pipeline stages: the model cut into three stages, chained by hand
 *    (activations forward, their gradients back, the tied wte gradient
 *    of the first and last stage summed), gives the whole model's loss
 *    and every gradient, with micro-batches' activations held in slots
 *    that share one scratch; in fp32 and in bf16 mixed precision;
 *  - bf16 mixed precision against fp32: loss and every gradient within
 *    bf16's resolution; the bf16 weight copy is the rounding of the
 *    master weights;
 *  - activation recomputation: selective and full give bitwise the
 *    gradients of none, with two micro-batches' slots sharing one work
 *    layer (both forwards before both backwards), and keep what model.h
 *    says they keep; in fp32 and in bf16.
 * Runs under mpirun -np 1 (the trainer builds a process grid).
 */
#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "gemm.h"
#include "infer.h"
#include "model/model.h"
#include "ops/ops.h"
#include "rng.h"
#include "train/train.h"

static void tokens(int32_t *x, size_t n, int V, uint64_t salt)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (int32_t)(rng_u64(salt, i) % (uint64_t)V);
}

static double loss_of(struct gpt *m, struct gpt_acts *a, const int32_t *inp,
                      const int32_t *tgt, const struct gpt_pos *pos)
{
    return gpt_forward(m, a, inp, tgt, pos) / (double)a->N;
}

/* Every gradient of the whole model (2 sequences of c.seq_len <= 16
 * tokens) against central finite differences; dstart: each token's
 * document start (doc_mask), or NULL. */
static void gradcheck_doc(const struct gpt_config *cp, const int32_t *dstart)
{
    struct gpt_config c = *cp;
    struct gpt m;
    struct gpt_acts a;
    char err[256];
    assert_int_equal(gpt_init(&m, &c, 1, 0, 0, c.n_layer, 7, err,
                              sizeof(err)), 0);
    /* perturb LayerNorm and bias parameters too, so their gradients are
     * not trivially structured */
    for (size_t i = 0; i < m.tt.total; i++)
        m.params[i] += 0.3f * rng_normal(99, i);
    int B = 2, T = c.seq_len;
    assert_true(T <= 16);
    assert_int_equal(gpt_acts_init(&a, &m, B, T), 0);
    int32_t inp[32], tgt[32];
    tokens(inp, (size_t)(B * T), c.vocab_size, 1);
    tokens(tgt, (size_t)(B * T), c.vocab_size, 2);
    struct gpt_pos pos = {.step = 3, .seq0 = 5, .seed = 11, .train = 1,
                          .dstart = dstart};

    /* garbage before: every gradient comes from gpt_zero_grad and
     * backward (a NaN left over fails below) */
    for (size_t i = 0; i < m.tt.total; i++)
        m.grads[i] = NAN;
    gpt_zero_grad(&m);
    loss_of(&m, &a, inp, tgt, &pos);
    gpt_backward(&m, &a, 1.0f / (float)a.N, &pos);
    /* wte's padding rows (vocab_size .. padded): exactly zero gradient */
    int iw = tensor_table_find(&m.tt, "wte");
    assert_true(iw >= 0);
    size_t C = (size_t)c.n_embd, V = (size_t)c.vocab_size;
    size_t Vp = (size_t)gpt_vocab_padded(c.vocab_size);
    for (size_t k = V * C; k < Vp * C; k++)
        if (m.grads[m.tt.t[iw].off + k] != 0.0f)
            fail_msg("wte padding row %zu: gradient %g", k / C,
                     m.grads[m.tt.t[iw].off + k]);

    const float h = 1e-2f;
    for (int t = 0; t < m.tt.n; t++) {
        const struct tensor_desc *d = &m.tt.t[t];
        double num = 0, den = 0, gmax = 0;
        for (size_t k = 0; k < d->numel; k++) {
            float *p = m.params + d->off + k, save = *p;
            *p = save + h;
            double lp = loss_of(&m, &a, inp, tgt, &pos);
            *p = save - h;
            double lm = loss_of(&m, &a, inp, tgt, &pos);
            *p = save;
            double fd = (lp - lm) / (2.0 * h);
            double g = m.grads[d->off + k];
            if (!isfinite(g))
                fail_msg("%s[%zu]: gradient %g", d->name, k, g);
            num += (g - fd) * (g - fd);
            gmax = fmax(gmax, fabs(g));
            den += fd * fd;
        }
        double rel = sqrt(num) / (sqrt(den) + 1e-6);
        if (strstr(d->name, "attn.bk") && c.attn != ATTN_LINEAR) {
            /* softmax is invariant to adding one constant to a query's
             * scores, so the key bias has zero gradient exactly (linear
             * attention has no softmax) */
            if (gmax > 1e-5)
                fail_msg("%s: gradient %.3g, expected 0", d->name, gmax);
        } else if (rel > 5e-3)
            fail_msg("%s: |grad - fd| / |fd| = %.3g", d->name, rel);
    }
    gpt_acts_free(&a);
    gpt_free(&m);
}

static void gradcheck(const struct gpt_config *cp)
{
    gradcheck_doc(cp, NULL);
}

static void test_whole_model_gradcheck(void **state)
{
    (void)state;
    struct gpt_config c = {.n_layer = 2, .n_embd = 8, .n_head = 4,
                           .n_kv_head = 2, .seq_len = 6, .vocab_size = 11,
                           .attn_window = 3, .dropout = 0.2f};
    gradcheck(&c);
}

/* The training loss with label smoothing and z-loss, and a vocabulary
 * padded to a multiple of 128 (300 -> 384 rows of wte, whose padded rows
 * get exactly zero gradient, as finite differences say). */
static void test_gradcheck_loss_options(void **state)
{
    (void)state;
    struct gpt_config c = {.n_layer = 1, .n_embd = 8, .n_head = 2,
                           .n_kv_head = 1, .seq_len = 6, .vocab_size = 300,
                           .label_smoothing = 0.1f, .z_loss = 0.01f};
    assert_int_equal(gpt_vocab_padded(300), 384);
    assert_int_equal(gpt_vocab_padded(50257), 50304);
    assert_int_equal(gpt_vocab_padded(4096), 4096);
    assert_int_equal(gpt_vocab_padded(256), 256);
    gradcheck(&c);
}

/* Validation (train = 0) scores plain cross-entropy whatever the
 * training loss's options: the same bits as a model without them, while
 * the training forward differs. */
static void test_val_loss_is_plain(void **state)
{
    (void)state;
    struct gpt_config c = {.n_layer = 1, .n_embd = 8, .n_head = 2,
                           .n_kv_head = 2, .seq_len = 6, .vocab_size = 19},
                      o = c;
    o.label_smoothing = 0.2f;
    o.z_loss = 0.1f;
    struct gpt a, b;
    struct gpt_acts aa, ab;
    char err[256];
    assert_int_equal(gpt_init(&a, &c, 1, 0, 0, 1, 3, err, sizeof(err)), 0);
    assert_int_equal(gpt_init(&b, &o, 1, 0, 0, 1, 3, err, sizeof(err)), 0);
    assert_int_equal(gpt_acts_init(&aa, &a, 2, 6), 0);
    assert_int_equal(gpt_acts_init(&ab, &b, 2, 6), 0);
    int32_t inp[12], tgt[12];
    tokens(inp, 12, 19, 1);
    tokens(tgt, 12, 19, 2);
    struct gpt_pos pos = {.step = 0, .seq0 = 0, .seed = 1, .train = 0};
    double la = gpt_forward(&a, &aa, inp, tgt, &pos);
    double lb = gpt_forward(&b, &ab, inp, tgt, &pos);
    assert_true(la == lb);
    pos.train = 1;
    double ta = gpt_forward(&a, &aa, inp, tgt, &pos);
    double tb = gpt_forward(&b, &ab, inp, tgt, &pos);
    assert_true(ta == la);
    assert_true(fabs(tb - ta) > 1e-3 * ta);
    gpt_acts_free(&aa);
    gpt_acts_free(&ab);
    gpt_free(&a);
    gpt_free(&b);
}

/* Grad of tensor `name` in m, or NULL when the stage does not hold it. */
static const float *grad_of(const struct gpt *m, const char *name)
{
    int i = tensor_table_find(&m->tt, name);
    return i < 0 ? NULL : m->grads + m->tt.t[i].off;
}

/* Every gradient of whole equals the one of the stage that holds it. */
static void expect_stage_grads(const struct gpt *whole, const struct gpt *st,
                               int S)
{
    for (int t = 0; t < whole->tt.n; t++) {
        const struct tensor_desc *d = &whole->tt.t[t];
        const float *g = NULL;
        for (int s = 0; s < S && !g; s++)
            g = grad_of(&st[s], d->name);
        if (!g)
            fail_msg("no stage holds %s", d->name);
        const float *w = whole->grads + d->off;
        double gmax = 0.0, dmax = 0.0;
        for (size_t i = 0; i < d->numel; i++) {
            gmax = fmax(gmax, fabs(w[i]));
            dmax = fmax(dmax, fabs(w[i] - g[i]));
        }
        if (dmax > 1e-5 * gmax + 1e-9)
            fail_msg("%s: stages differ from the whole model by %.3g "
                     "(max |g| %.3g)", d->name, dmax, gmax);
    }
}

static void stages_case(enum gpt_precision prec, float dropout)
{
    struct gpt_config c = {.n_layer = 4, .n_embd = 8, .n_head = 2,
                           .n_kv_head = 2, .seq_len = 6, .vocab_size = 11,
                           .dropout = dropout, .precision = prec};
    enum { S = 3, MB = 2, B = 2, T = 6, N = B * T };
    const int bound[S + 1] = {0, 1, 3, 4};
    char err[256];
    struct gpt whole, st[S];
    struct gpt_acts wa, sa[S][MB];
    assert_int_equal(gpt_init(&whole, &c, 1, 0, 0, 4, 7, err, 256), 0);
    assert_int_equal(gpt_acts_init(&wa, &whole, B, T), 0);
    for (int s = 0; s < S; s++) {
        assert_int_equal(gpt_init(&st[s], &c, 1, 0, bound[s], bound[s + 1],
                                  7, err, 256), 0);
        assert_int_equal(st[s].first, s == 0);
        assert_int_equal(st[s].last, s == S - 1);
        for (int k = 0; k < MB; k++)
            assert_int_equal(gpt_acts_init_shared(&sa[s][k], &st[s], B, T,
                                                  k ? &sa[s][0] : NULL), 0);
        gpt_zero_grad(&st[s]);
    }
    gpt_zero_grad(&whole);
    int32_t inp[MB * N], tgt[MB * N];
    tokens(inp, MB * N, c.vocab_size, 3);
    tokens(tgt, MB * N, c.vocab_size, 4);
    float dloss = 1.0f / (MB * N);
    double lw = 0.0, ls = 0.0;
    for (int k = 0; k < MB; k++) { /* the reference */
        struct gpt_pos pos = {.step = 2, .seq0 = k * B, .seed = 5, .train = 1};
        lw += gpt_forward(&whole, &wa, inp + k * N, tgt + k * N, &pos);
        gpt_backward(&whole, &wa, dloss, &pos);
    }
    /* GPipe order: both forwards through all stages, then backwards in
     * reverse micro-batch order (each slot's activations must survive) */
    size_t nc = (size_t)N * c.n_embd;
    for (int k = 0; k < MB; k++)
        for (int s = 0; s < S; s++) {
            struct gpt_pos pos = {.step = 2, .seq0 = k * B, .seed = 5,
                                  .train = 1};
            if (s > 0)
                memcpy(sa[s][k].emb, gpt_stage_output(&st[s - 1],
                       &sa[s - 1][k]), nc * sizeof(float));
            double l = gpt_forward(&st[s], &sa[s][k], inp + k * N,
                                   tgt + k * N, &pos);
            if (s < S - 1)
                assert_true(l == 0.0);
            ls += l;
        }
    for (int k = MB - 1; k >= 0; k--)
        for (int s = S - 1; s >= 0; s--) {
            struct gpt_pos pos = {.step = 2, .seq0 = k * B, .seed = 5,
                                  .train = 1};
            if (s < S - 1)
                memcpy(sa[s][k].dres, sa[s + 1][k].dres, nc * sizeof(float));
            gpt_backward(&st[s], &sa[s][k], dloss, &pos);
        }
    assert_true(fabs(lw - ls) <= 1e-5 * fabs(lw));
    float *dw0 = (float *)grad_of(&st[0], "wte");
    const float *dw2 = grad_of(&st[S - 1], "wte");
    assert_non_null(dw0);
    assert_non_null(dw2);
    assert_null(grad_of(&st[1], "wte"));
    for (size_t i = 0; i < (size_t)c.vocab_size * c.n_embd; i++)
        dw0[i] += dw2[i]; /* what the trainer's tie reduction does */
    expect_stage_grads(&whole, st, S);
    for (int s = 0; s < S; s++) {
        for (int k = MB - 1; k >= 0; k--)
            gpt_acts_free(&sa[s][k]);
        gpt_free(&st[s]);
    }
    gpt_acts_free(&wa);
    gpt_free(&whole);
}

static void test_stages_equal_whole_model(void **state)
{
    (void)state;
    /* with dropout, and without (the residual adds fused into the
     * projections: gpt_fuses_residual) */
    for (int k = 0; k < 2; k++) {
        stages_case(GPT_FP32, k ? 0.0f : 0.2f);
        if (gemm_bf16_supported(NULL, 0)) /* the same in bf16 */
            stages_case(GPT_BF16, k ? 0.0f : 0.2f);
    }
}

/* The residual adds fused into the output projections (dropout 0) against
 * the separate adds (dropout configured, but off in a train = 0 pass, so
 * both compute the same function): loss and every gradient bitwise, in
 * fp32 and bf16, with each recomputation mode (full recomputes the
 * fused products), and the fused model without the two buffers. */
static void test_fused_residual_bitwise(void **state)
{
    (void)state;
    const int B = 2, T = 8;
    size_t N = (size_t)B * T;
    int32_t inp[16], tgt[16];
    tokens(inp, N, 13, 50);
    tokens(tgt, N, 13, 51);
    char err[256];
    for (int prec = 0; prec < 2; prec++) {
        if (prec && !gemm_bf16_supported(NULL, 0))
            continue;
        for (int rc = 0; rc < 3; rc++) {
            struct gpt m[2];
            struct gpt_acts a[2];
            double loss[2];
            for (int k = 0; k < 2; k++) {
                struct gpt_config c = {
                    .n_layer = 2, .n_embd = 16, .n_head = 4, .n_kv_head = 2,
                    .seq_len = T, .vocab_size = 13,
                    .dropout = k ? 0.2f : 0.0f,
                    .precision = prec ? GPT_BF16 : GPT_FP32,
                    .recompute = (enum gpt_recompute)rc};
                assert_int_equal(gpt_init(&m[k], &c, 1, 0, 0, c.n_layer, 7,
                                          err, sizeof(err)), 0);
                assert_int_equal(gpt_fuses_residual(&m[k]), !k);
                /* biases and LayerNorms away from their 0 and 1 too */
                for (size_t i = 0; i < m[k].tt.total; i++)
                    m[k].params[i] += 0.3f * rng_normal(98, i);
                if (prec)
                    gpt_refresh_bf16(&m[k]);
                assert_int_equal(gpt_acts_init(&a[k], &m[k], B, T), 0);
                struct gpt_pos pos = {.step = 1, .seed = 9, .train = 0};
                gpt_zero_grad(&m[k]);
                loss[k] = gpt_forward(&m[k], &a[k], inp, tgt, &pos);
                gpt_backward(&m[k], &a[k], 1.0f / (float)N, &pos);
            }
            if (memcmp(&loss[0], &loss[1], sizeof(double)))
                fail_msg("precision %d recompute %d: fused loss %.17g, "
                         "separate %.17g", prec, rc, loss[0], loss[1]);
            assert_memory_equal(m[0].grads, m[1].grads,
                                m[0].tt.total * sizeof(float));
            if (rc == 0) { /* kept: attproj and fcproj only when separate */
                assert_null(a[0].la[0].attproj);
                assert_null(a[0].la[0].fcproj);
                assert_non_null(a[1].la[0].attproj);
                assert_true(a[0].saved_bytes < a[1].saved_bytes);
            }
            for (int k = 0; k < 2; k++) {
                gpt_acts_free(&a[k]);
                gpt_free(&m[k]);
            }
        }
    }
}

/* bf16 mixed precision computes the fp32 model's loss and gradients to
 * within bf16's resolution (the rounding of activations and weights, 2^-9
 * relative each; measured: at most 1.1% for this model): the loss within
 * 1%, every gradient within 3% in norm.  The bf16 weight copy is the
 * rounding of the master weights, after init and after any change
 * (gpt_refresh_bf16). */
static void bf16_case(struct gpt_config c, const int32_t *dst)
{
    struct gpt m32, m16;
    struct gpt_acts a32, a16;
    char err[256];
    assert_int_equal(gpt_init(&m32, &c, 1, 0, 0, 2, 9, err, 256), 0);
    c.precision = GPT_BF16;
    assert_int_equal(gpt_init(&m16, &c, 1, 0, 0, 2, 9, err, 256), 0);
    assert_null(m32.params_h);
    for (size_t i = 0; i < m16.tt.total; i++) {
        assert_int_equal(m16.params_h[i], bf16_from_f32(m16.params[i]));
        m32.params[i] = m16.params[i] += 0.05f * rng_normal(4, i);
    }
    gpt_refresh_bf16(&m16);
    for (size_t i = 0; i < m16.tt.total; i++)
        assert_int_equal(m16.params_h[i], bf16_from_f32(m16.params[i]));
    int B = 4, T = 16;
    assert_int_equal(gpt_acts_init(&a32, &m32, B, T), 0);
    assert_int_equal(gpt_acts_init(&a16, &m16, B, T), 0);
    assert_true(a16.bytes < a32.bytes); /* bf16 activations */
    int32_t inp[64], tgt[64];
    tokens(inp, 64, c.vocab_size, 21);
    tokens(tgt, 64, c.vocab_size, 22);
    struct gpt_pos pos = {.step = 1, .seq0 = 0, .seed = 3, .train = 1,
                          .dstart = dst};
    gpt_zero_grad(&m32);
    gpt_zero_grad(&m16);
    double l32 = loss_of(&m32, &a32, inp, tgt, &pos);
    double l16 = loss_of(&m16, &a16, inp, tgt, &pos);
    gpt_backward(&m32, &a32, 1.0f / 64, &pos);
    gpt_backward(&m16, &a16, 1.0f / 64, &pos);
    if (!(fabs(l16 - l32) <= 1e-2 * l32))
        fail_msg("loss bf16 %.6f, fp32 %.6f", l16, l32);
    for (int t = 0; t < m32.tt.n; t++) {
        const struct tensor_desc *d = &m32.tt.t[t];
        double num = 0, den = 0;
        for (size_t k = 0; k < d->numel; k++) {
            double g = m32.grads[d->off + k], h = m16.grads[d->off + k];
            num += (g - h) * (g - h);
            den += g * g;
        }
        if (strstr(d->name, "attn.bk")) /* 0 in exact arithmetic */
            continue;
        if (!(sqrt(num) <= 3e-2 * sqrt(den)))
            fail_msg("%s: |g_bf16 - g_fp32| / |g_fp32| = %.3g", d->name,
                     sqrt(num / den));
    }
    gpt_acts_free(&a32), gpt_acts_free(&a16);
    gpt_free(&m32), gpt_free(&m16);
}

/* A sliding window; then the techniques bf16 runs with: label smoothing
 * and the z-loss, a vocabulary padded inside the model (300 -> 384
 * rows), and document bounds (doc_mask). */
static void test_bf16_close_to_fp32(void **state)
{
    (void)state;
    if (!gemm_bf16_supported(NULL, 0))
        skip();
    struct gpt_config c = {.n_layer = 2, .n_embd = 32, .n_head = 4,
                           .n_kv_head = 2, .seq_len = 16, .vocab_size = 40,
                           .attn_window = 12, .dropout = 0.1f};
    bf16_case(c, NULL);
    int32_t dst[64];
    for (int t = 0; t < 64; t++) /* documents at 0, 5, 11 of each row */
        dst[t] = t % 16 < 5 ? 0 : t % 16 < 11 ? 5 : 11;
    c.attn_window = 0;
    c.vocab_size = 300;
    c.label_smoothing = 0.1f;
    c.z_loss = 1e-3f;
    c.doc_mask = 1;
    bf16_case(c, dst);
}

static void make_config(struct config *c, int micro)
{
    char err[256];
    config_defaults(c);
    c->n_layer = 2;
    c->n_embd = 32;
    c->n_head = 4;
    c->n_kv_head = 2;
    c->seq_len = 16;
    c->vocab_size = 256;
    c->batch_size = 8;
    c->micro_batch = micro;
    c->dropout = 0.1f;
    c->warmup_steps = 0;
    assert_int_equal(config_finalize(c, err, sizeof(err)), 0);
}

/* max |a - b| over the arena, skipping elements where |g| < gmin */
static double max_diff(const float *a, const float *b, const float *g,
                       size_t n, double gmin)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (g && fabs(g[i]) < gmin)
            continue;
        double x = fabs((double)a[i] - b[i]);
        worst = x > worst ? x : worst;
    }
    return worst;
}

static void test_accumulation_equals_full_batch(void **state)
{
    (void)state;
    struct trainer full, acc;
    struct config c1, c2;
    char err[256];
    make_config(&c1, 8);
    make_config(&c2, 2);
    assert_int_equal(trainer_init(&full, &c1, MPI_COMM_WORLD, err,
                                  sizeof(err)), 0);
    assert_int_equal(trainer_init(&acc, &c2, MPI_COMM_WORLD, err,
                                  sizeof(err)), 0);
    assert_int_equal(full.accum, 1);
    assert_int_equal(acc.accum, 4);
    size_t n = 8 * 16, total = full.m.tt.total;
    int32_t *inp = malloc(2 * n * sizeof(int32_t));
    tokens(inp, 2 * n, 256, 5);
    double g1, g2, lr1, lr2;
    double l1 = trainer_step(&full, inp, inp + n, &g1, &lr1, NULL);
    double l2 = trainer_step(&acc, inp, inp + n, &g2, &lr2, NULL);
    assert_true(fabs(l1 - l2) <= 1e-6 * fabs(l1));
    assert_true(fabs(g1 - g2) <= 1e-6 * fabs(g1));
    /* the accumulated gradient equals the full-batch gradient */
    double gmax = 0;
    for (size_t i = 0; i < total; i++)
        gmax = fmax(gmax, fabs(full.m.grads[i]));
    double gd = max_diff(full.m.grads, acc.m.grads, NULL, total, 0);
    if (gd > 1e-6 * gmax)
        fail_msg("max |gradient difference| = %.3g", gd);
    /* ... and so does the update, wherever AdamW is well-conditioned: the
     * first step moves by lr * g / (|g| + eps), whose slope lr eps / g^2
     * turns round-off in a gradient near eps = 1e-8 into 1e-5 steps */
    double ud = max_diff(full.m.params, acc.m.params, full.m.grads, total,
                         1e-5);
    if (ud > 1e-6)
        fail_msg("max |update difference| = %.3g", ud);
    /* a second step from the (near-)identical states agrees in loss */
    l1 = trainer_step(&full, inp, inp + n, &g1, &lr1, NULL);
    l2 = trainer_step(&acc, inp, inp + n, &g2, &lr2, NULL);
    assert_true(fabs(l1 - l2) <= 1e-6 * fabs(l1));
    free(inp);
    trainer_free(&full);
    trainer_free(&acc);
}

static void test_init_by_global_index(void **state)
{
    (void)state;
    struct tensor_table whole = {0}, half = {0};
    int64_t shape[2] = {6, 4};
    assert_int_equal(tensor_table_add(&whole, "w", 2, shape, -1, 0, 1, 1, 0,
                                      0.02f, 0), 0);
    assert_int_equal(tensor_table_add(&half, "w", 2, shape, 0, 1, 2, 1, 0,
                                      0.02f, 0), 0);
    float *pw = tensor_arena_alloc(whole.total);
    float *ph = tensor_arena_alloc(half.total);
    tensor_table_init_params(&whole, pw, 3);
    tensor_table_init_params(&half, ph, 3);
    assert_int_equal(half.t[0].start[0], 3);
    assert_memory_equal(ph, pw + 12, 12 * sizeof(float));
    /* and a column shard */
    struct tensor_table col = {0};
    assert_int_equal(tensor_table_add(&col, "w", 2, shape, 1, 1, 2, 1, 0,
                                      0.02f, 0), 0);
    float *pc = tensor_arena_alloc(col.total);
    tensor_table_init_params(&col, pc, 3);
    for (int r = 0; r < 6; r++)
        for (int k = 0; k < 2; k++)
            assert_true(pc[r * 2 + k] == pw[r * 4 + 2 + k]);
    free(pw);
    free(ph);
    free(pc);
    tensor_table_free(&whole);
    tensor_table_free(&half);
    tensor_table_free(&col);
}

static void test_param_count_matches_table(void **state)
{
    (void)state;
    struct gpt_config c = {.n_layer = 3, .n_embd = 24, .n_head = 6,
                           .n_kv_head = 2, .seq_len = 10, .vocab_size = 50};
    struct tensor_table tt;
    assert_int_equal(gpt_global_table(&c, &tt), 0);
    assert_int_equal((int64_t)tt.total, gpt_num_params(&c));
    /* hand count: wte 50*24 + wpe 10*24 + lnf 48 + per layer
     * ln 96 + q 24*24+24 + k,v 2*(8*24+8) + wo 24*24+24
     * + fc 96*24+96 + proj 24*96+24 */
    int64_t per = 96 + 600 + 400 + 600 + 2400 + 2328;
    assert_int_equal(gpt_num_params(&c), 1200 + 240 + 48 + 3 * per);
    /* model FLOPs: 6 x (all but wpe's 240) + attention's 12 L T C */
    assert_true(gpt_flops_per_token(&c) ==
                6.0 * (1200 + 48 + 3 * per) + 12.0 * 3 * 10 * 24);
    tensor_table_free(&tt);
}

/* KV-cache generation computes the same logits as the full forward, with
 * grouped-query heads and a sliding window. */
static void kv_cache_case(const struct gpt_config *cp)
{
    struct gpt_config c = *cp;
    struct gpt m;
    struct gpt_acts a;
    struct infer inf;
    char err[256];
    assert_int_equal(gpt_init(&m, &c, 1, 0, 0, c.n_layer, 3, err,
                              sizeof(err)), 0);
    for (size_t i = 0; i < m.tt.total; i++)
        m.params[i] += 0.2f * rng_normal(17, i);
    assert_int_equal(gpt_acts_init(&a, &m, 1, 12), 0);
    assert_int_equal(infer_init(&inf, &m), 0);
    int32_t inp[12], tgt[12];
    tokens(inp, 12, c.vocab_size, 8);
    tokens(tgt, 12, c.vocab_size, 9);
    struct gpt_pos pos = {.seed = 1, .train = 0};
    gpt_forward(&m, &a, inp, tgt, &pos);
    for (int t = 0; t < 12; t++) {
        infer_step(&inf, inp[t], t);
        for (int v = 0; v < c.vocab_size; v++) {
            float want = a.logits[(size_t)t * c.vocab_size + v];
            if (fabsf(inf.logits[v] - want) > 1e-4f * (1 + fabsf(want)))
                fail_msg("position %d token %d: cache %.7g, full %.7g", t, v,
                         inf.logits[v], want);
        }
    }
    infer_free(&inf);
    gpt_acts_free(&a);
    gpt_free(&m);
}

/* Generation one token at a time equals the full forward: with the KV
 * cache (window; the sparse blocks) and with linear attention's running
 * sums. */
static void test_kv_cache_matches_forward(void **state)
{
    (void)state;
    struct gpt_config c = {.n_layer = 2, .n_embd = 16, .n_head = 4,
                           .n_kv_head = 2, .seq_len = 12, .vocab_size = 19,
                           .attn_window = 5, .dropout = 0.3f};
    kv_cache_case(&c);
    c.attn_window = 0;
    c.attn = ATTN_LINEAR;
    kv_cache_case(&c);
    c.attn = ATTN_SPARSE;
    c.attn_block = 2;
    c.attn_stride = 3;
    kv_cache_case(&c);
}

/* Documents: with doc_mask, a token's loss does not depend on the tokens
 * of earlier documents (attention stops at its document's start and its
 * position counts from there), for every attention kind; and a document
 * in the middle of a sequence gives the same losses as the same tokens at
 * the start of one. */
static void doc_case(int kind)
{
    struct gpt_config c = {.n_layer = 2, .n_embd = 16, .n_head = 4,
                           .n_kv_head = 2, .seq_len = 16, .vocab_size = 23,
                           .attn = kind, .attn_block = 4, .attn_stride = 2,
                           .doc_mask = 1};
    struct gpt m;
    struct gpt_acts a;
    char err[256];
    assert_int_equal(gpt_init(&m, &c, 1, 0, 0, c.n_layer, 5, err,
                              sizeof(err)), 0);
    for (size_t i = 0; i < m.tt.total; i++)
        m.params[i] += 0.2f * rng_normal(21, i);
    assert_int_equal(gpt_acts_init(&a, &m, 2, 16), 0);
    int32_t inp[32], tgt[32], dst[32];
    tokens(inp, 32, c.vocab_size, 3);
    tokens(tgt, 32, c.vocab_size, 4);
    /* sequence 0: documents at 0, 6, 11; sequence 1 starts with the
     * tokens of sequence 0's document at 6 */
    for (int t = 0; t < 16; t++) {
        dst[t] = t < 6 ? 0 : t < 11 ? 6 : 11;
        dst[16 + t] = t < 5 ? 0 : 5;
    }
    for (int t = 0; t < 5; t++) {
        inp[16 + t] = inp[6 + t];
        tgt[16 + t] = tgt[6 + t];
    }
    struct gpt_pos pos = {.seed = 1, .train = 0, .dstart = dst};
    gpt_forward(&m, &a, inp, tgt, &pos);
    float l0[32];
    memcpy(l0, a.losses, sizeof l0);
    for (int t = 0; t < 5; t++)
        if (fabsf(l0[6 + t] - l0[16 + t]) > 1e-5f * fabsf(l0[6 + t]))
            fail_msg("kind %d: token %d of a document: %.7g mid-sequence, "
                     "%.7g at its start", kind, t, l0[6 + t], l0[16 + t]);
    for (int t = 0; t < 6; t++) /* another first document */
        inp[t] = (inp[t] + 7) % c.vocab_size;
    gpt_forward(&m, &a, inp, tgt, &pos);
    for (int t = 6; t < 16; t++)
        if (a.losses[t] != l0[t])
            fail_msg("kind %d: position %d changed with the document "
                     "before it", kind, t);
    assert_true(a.losses[0] != l0[0] || a.losses[3] != l0[3]);
    /* without the mask it would have changed */
    pos.dstart = NULL;
    gpt_forward(&m, &a, inp, tgt, &pos);
    assert_true(a.losses[8] != l0[8]);
    gpt_acts_free(&a);
    gpt_free(&m);
}

static void test_doc_mask(void **state)
{
    (void)state;
    doc_case(ATTN_FULL);
    doc_case(ATTN_LINEAR);
    doc_case(ATTN_SPARSE);
}

/* The attention kinds and document bounds through the whole model:
 * every gradient against finite differences.  Sparse: 4 blocks of 2 with
 * stride 3, so block 3 skips block 1 (with 3 blocks every block would
 * see every earlier one: full attention); block and stride differ, so
 * swapping them shows.  Documents: sequence 0 at 0 and 3, sequence 1 at
 * 0 and 5 (positions count from the document start: wpe's gradient). */
static void test_gradcheck_attention_kinds(void **state)
{
    (void)state;
    struct gpt_config c = {.n_layer = 1, .n_embd = 8, .n_head = 2,
                           .n_kv_head = 1, .seq_len = 8, .vocab_size = 11,
                           .attn = ATTN_LINEAR};
    gradcheck(&c);
    c.attn = ATTN_SPARSE;
    c.attn_block = 2;
    c.attn_stride = 3;
    gradcheck(&c);
    int32_t dst[16];
    for (int t = 0; t < 8; t++) {
        dst[t] = t < 3 ? 0 : 3;
        dst[8 + t] = t < 5 ? 0 : 5;
    }
    c.doc_mask = 1;
    for (int k = 0; k < 3; k++) {
        c.attn = k == 0 ? ATTN_FULL : k == 1 ? ATTN_LINEAR : ATTN_SPARSE;
        gradcheck_doc(&c, dst);
    }
}

/* lr_layer_decay: from the same state and batch, every tensor's first
 * AdamW step (weight decay off) is the decay-1 step times the tensor's
 * factor: d^(L-1-l) in block l, d^L for wte and wpe, 1 for the final
 * LayerNorm. */
static void test_lr_layer_decay(void **state)
{
    (void)state;
    struct trainer a, b;
    struct config c1, c2;
    char err[256];
    make_config(&c1, 8);
    c1.dropout = 0.0f;
    c1.weight_decay = 0.0f;
    c2 = c1;
    c2.lr_layer_decay = 0.5f;
    assert_int_equal(trainer_init(&a, &c1, MPI_COMM_WORLD, err,
                                  sizeof(err)), 0);
    assert_int_equal(trainer_init(&b, &c2, MPI_COMM_WORLD, err,
                                  sizeof(err)), 0);
    size_t n = 8 * 16, total = a.m.tt.total;
    float *p0 = malloc(total * sizeof(float));
    memcpy(p0, a.m.params, total * sizeof(float));
    int32_t *inp = malloc(2 * n * sizeof(int32_t));
    tokens(inp, 2 * n, 256, 5);
    double g, lr;
    trainer_step(&a, inp, inp + n, &g, &lr, NULL);
    trainer_step(&b, inp, inp + n, &g, &lr, NULL);
    for (int t = 0; t < a.m.tt.n; t++) {
        const struct tensor_desc *d = &a.m.tt.t[t];
        double da = 0, db = 0;
        for (size_t i = d->off; i < d->off + d->numel; i++) {
            da += fabs((double)a.m.params[i] - p0[i]);
            db += fabs((double)b.m.params[i] - p0[i]);
        }
        int L = c1.n_layer;
        double want = d->layer >= 0 ? pow(0.5, L - 1 - d->layer)
                      : strncmp(d->name, "lnf", 3) ? pow(0.5, L) : 1.0;
        if (!(fabs(db / da - want) <= 1e-3 * want))
            fail_msg("%s: step ratio %.6g, want %.6g", d->name, db / da,
                     want);
    }
    free(inp);
    free(p0);
    trainer_free(&a);
    trainer_free(&b);
}

/* A step skipped as non-finite (debug_nan: a NaN in the gradient at
 * step 3) leaves the weights and every optimizer state as they were:
 * LAMB's moments, and 1-bit Adam's momentum and frozen second moment
 * (frozen from step 2 on); the next step updates again. */
static void skip_case(const char *optimizer)
{
    struct trainer tr;
    struct config c;
    char err[256];
    make_config(&c, 8);
    snprintf(c.optimizer, sizeof(c.optimizer), "%s", optimizer);
    c.compress_warmup = 1;
    snprintf(c.debug_nan, sizeof(c.debug_nan), "0:3:grad");
    assert_int_equal(config_finalize(&c, err, sizeof(err)), 0);
    assert_int_equal(trainer_init(&tr, &c, MPI_COMM_WORLD, err,
                                  sizeof(err)), 0);
    size_t n = 8 * 16, total = tr.m.tt.total, bytes = total * sizeof(float);
    int32_t *inp = malloc(2 * n * sizeof(int32_t));
    float *keep = malloc(3 * bytes);
    tokens(inp, 2 * n, 256, 6);
    double g, lr;
    struct step_times tm;
    for (int s = 0; s < 2; s++) {
        trainer_step(&tr, inp, inp + n, &g, &lr, &tm);
        assert_int_equal(tm.skipped, 0);
    }
    memcpy(keep, tr.m.params, bytes);
    memcpy(keep + total, tr.m.m, bytes);
    memcpy(keep + 2 * total, tr.m.v, bytes);
    trainer_step(&tr, inp, inp + n, &g, &lr, &tm);
    assert_true(tm.skipped & NF_GRAD);
    assert_int_equal(tr.st.step, 3);
    assert_memory_equal(keep, tr.m.params, bytes);
    assert_memory_equal(keep + total, tr.m.m, bytes);
    assert_memory_equal(keep + 2 * total, tr.m.v, bytes);
    trainer_step(&tr, inp, inp + n, &g, &lr, &tm);
    assert_int_equal(tm.skipped, 0);
    assert_true(memcmp(keep, tr.m.params, bytes) != 0);
    assert_true(memcmp(keep + total, tr.m.m, bytes) != 0);
    free(keep);
    free(inp);
    trainer_free(&tr);
}

static void test_skip_keeps_optimizer_state(void **state)
{
    (void)state;
    skip_case("adamw");
    skip_case("lamb");
    skip_case("onebit_adam");
}

/* none, selective and full on the same two micro-batches: both
 * forwards, then both backwards in reverse, the second slot sharing the
 * first's scratch and work layer; the losses and every gradient bit must
 * agree.  Returns each mode's saved bytes.  dst: document starts (both
 * micro-batches), or NULL. */
static void recompute_case(struct gpt_config c, const int32_t *dst,
                           size_t saved[3])
{
    const int B = 2, T = 8;
    size_t N = (size_t)B * T;
    int32_t tok[4][16];
    for (int k = 0; k < 4; k++)
        tokens(tok[k], N, c.vocab_size, 40 + (uint64_t)k);
    struct gpt m[3];
    double loss[3];
    char err[256];
    for (int mode = 0; mode < 3; mode++) {
        c.recompute = (enum gpt_recompute)mode;
        struct gpt_acts a0, a1;
        assert_int_equal(gpt_init(&m[mode], &c, 1, 0, 0, c.n_layer, 7, err,
                                  sizeof(err)), 0);
        assert_int_equal(gpt_acts_init_shared(&a0, &m[mode], B, T, NULL), 0);
        assert_int_equal(gpt_acts_init_shared(&a1, &m[mode], B, T, &a0), 0);
        struct gpt_pos p0 = {.step = 3, .seq0 = 0, .seed = 11, .train = 1,
                             .dstart = dst};
        struct gpt_pos p1 = p0;
        p1.seq0 = B;
        gpt_zero_grad(&m[mode]);
        loss[mode] = gpt_forward(&m[mode], &a0, tok[0], tok[1], &p0);
        loss[mode] += gpt_forward(&m[mode], &a1, tok[2], tok[3], &p1);
        gpt_backward(&m[mode], &a1, 0.5f / (float)N, &p1);
        gpt_backward(&m[mode], &a0, 0.5f / (float)N, &p0);
        saved[mode] = a0.saved_bytes;
        if (mode == 0)
            assert_true(m[mode].recompute_time == 0.0);
        else
            assert_true(m[mode].recompute_time > 0.0);
        gpt_acts_free(&a1);
        gpt_acts_free(&a0);
    }
    for (int mode = 1; mode < 3; mode++) {
        if (memcmp(&loss[0], &loss[mode], sizeof(double)) != 0)
            fail_msg("attn %d: loss %.17g with recompute %d, %.17g "
                     "without", c.attn, loss[mode], mode, loss[0]);
        assert_memory_equal(m[0].grads, m[mode].grads,
                            m[0].tt.total * sizeof(float));
    }
    for (int mode = 0; mode < 3; mode++)
        gpt_free(&m[mode]);
}

/* full keeps res2 per block, selective res1, res2, qkv and fch; the
 * embedding output and the head's tensors (lnf, its statistics, probs,
 * losses, lse) stay.  [p] tensors (lnf, qkv, fch) have hsz bytes; every
 * piece here is a multiple of the 64-byte alignment. */
static void check_saved(const size_t saved[3], size_t hsz)
{
    size_t N = 16, C = 16, Q = (4 + 2 * 2) * 4, F = 64, V = 13, L = 3;
    size_t head = hsz * N * C + 4 * (2 * N + N * V + 2 * N), emb = 4 * N * C;
    assert_int_equal(saved[2], emb + 4 * L * N * C + head);
    assert_int_equal(saved[1],
                     emb + L * (4 * 2 * N * C + hsz * (N * Q + N * F)) +
                         head);
    assert_true(saved[0] > saved[1]);
}

/* The recomputation of every attention kind (GQA, dropout; a sliding
 * window for full, document bounds for linear and sparse), and the saved
 * activations shrinking as model.h says. */
static void test_recompute_bitwise(void **state)
{
    (void)state;
    struct gpt_config c = {.n_layer = 3, .n_embd = 16, .n_head = 4,
                           .n_kv_head = 2, .seq_len = 8, .vocab_size = 13,
                           .attn_window = 5, .dropout = 0.2f};
    size_t saved[3];
    recompute_case(c, NULL, saved);
    check_saved(saved, 4);
    int32_t dst[16];
    for (int t = 0; t < 16; t++) /* documents at 0, 3 | 0, 5 */
        dst[t] = t < 8 ? (t < 3 ? 0 : 3) : (t < 13 ? 0 : 5);
    c.attn_window = 0;
    c.doc_mask = 1;
    c.attn = ATTN_LINEAR;
    recompute_case(c, dst, saved);
    c.attn = ATTN_SPARSE;
    c.attn_block = 2;
    c.attn_stride = 3;
    recompute_case(c, dst, saved);
}

/* In bf16 too: the recomputed bf16 tensors are the saved ones' bits (a
 * sliding window; then document bounds, full attention being the kind
 * bf16 runs). */
static void test_recompute_bitwise_bf16(void **state)
{
    (void)state;
    if (!gemm_bf16_supported(NULL, 0))
        skip();
    struct gpt_config c = {.n_layer = 3, .n_embd = 16, .n_head = 4,
                           .n_kv_head = 2, .seq_len = 8, .vocab_size = 13,
                           .attn_window = 5, .dropout = 0.2f,
                           .precision = GPT_BF16};
    size_t saved[3];
    recompute_case(c, NULL, saved);
    check_saved(saved, 2);
    int32_t dst[16];
    for (int t = 0; t < 16; t++)
        dst[t] = t < 8 ? (t < 3 ? 0 : 3) : (t < 13 ? 0 : 5);
    c.attn_window = 0;
    c.doc_mask = 1;
    recompute_case(c, dst, saved);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_model_gradcheck),
        cmocka_unit_test(test_gradcheck_loss_options),
        cmocka_unit_test(test_val_loss_is_plain),
        cmocka_unit_test(test_accumulation_equals_full_batch),
        cmocka_unit_test(test_lr_layer_decay),
        cmocka_unit_test(test_skip_keeps_optimizer_state),
        cmocka_unit_test(test_init_by_global_index),
        cmocka_unit_test(test_stages_equal_whole_model),
        cmocka_unit_test(test_fused_residual_bitwise),
        cmocka_unit_test(test_bf16_close_to_fp32),
        cmocka_unit_test(test_param_count_matches_table),
        cmocka_unit_test(test_kv_cache_matches_forward),
        cmocka_unit_test(test_doc_mask),
        cmocka_unit_test(test_gradcheck_attention_kinds),
        cmocka_unit_test(test_recompute_bitwise),
        cmocka_unit_test(test_recompute_bitwise_bf16),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return rc;
}
