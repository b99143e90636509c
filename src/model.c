/*
 * model.c - the GPT parameter table, activations, forward and backward.
 * The kernels are in ops.c; this file wires them and times them by kind.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ops.h"
#include "rng.h"
#include "tp.h"

const char *const op_kind_names[OPK_COUNT] = {
    "matmul", "attention", "layernorm", "gelu", "elementwise", "loss",
    "embedding", "tp_comm",
};

#define TIMED(m, kind, call)                                                  \
    do {                                                                      \
        double t0_ = now_s();                                                 \
        call;                                                                 \
        (m)->op_time[kind] += now_s() - t0_;                                  \
    } while (0)

int gpt_config_check(const struct gpt_config *c, int tp, char *err,
                     size_t errlen)
{
    if (c->n_embd % c->n_head != 0) {
        snprintf(err, errlen, "n_embd=%d is not divisible by n_head=%d",
                 c->n_embd, c->n_head);
        return -1;
    }
    if (c->n_kv_head < 1 || c->n_head % c->n_kv_head != 0) {
        snprintf(err, errlen, "n_head=%d is not divisible by n_kv_head=%d",
                 c->n_head, c->n_kv_head);
        return -1;
    }
    if (c->n_head % tp != 0 || c->n_kv_head % tp != 0) {
        snprintf(err, errlen,
                 "n_head=%d and n_kv_head=%d must both be divisible by tp=%d",
                 c->n_head, c->n_kv_head, tp);
        return -1;
    }
    if (c->vocab_size < 2 || c->vocab_size > 65536) {
        snprintf(err, errlen, "vocab_size=%d must be in [2, 65536] (uint16 "
                 "tokens; 0 is resolved from the data directory before "
                 "this)", c->vocab_size);
        return -1;
    }
    return 0;
}

int64_t gpt_num_params(const struct gpt_config *c)
{
    int64_t C = c->n_embd, hd = C / c->n_head;
    int64_t q = c->n_head * hd, kv = c->n_kv_head * hd;
    int64_t per = 4 * C                   /* ln1, ln2 */
                  + (q + 2 * kv) * (C + 1) /* wq wk wv + biases */
                  + C * q + C              /* wo, bo */
                  + 4 * C * C + 4 * C      /* wfc, bfc */
                  + C * 4 * C + C;         /* wproj, bproj */
    return (int64_t)gpt_vocab_padded(c->vocab_size) * C +
           (int64_t)c->seq_len * C +
           c->n_layer * per + 2 * C;
}

double gpt_flops_per_token(const struct gpt_config *c)
{
    return 6.0 * (double)gpt_num_params(c) +
           12.0 * c->n_layer * (double)c->seq_len * c->n_embd;
}

/* Add one tensor; name formatted from layer (-1: no prefix). */
static int add(struct gpt *m, int layer, const char *nm, int64_t d0,
               int64_t d1, int tp_dim, int decay, float std, float cst)
{
    char name[TENSOR_NAME_MAX];
    if (layer >= 0)
        snprintf(name, sizeof(name), "h.%d.%s", layer, nm);
    else
        snprintf(name, sizeof(name), "%s", nm);
    int64_t shape[2] = {d0, d1};
    return tensor_table_add(&m->tt, name, d1 ? 2 : 1, shape, tp_dim,
                            m->tp_rank, m->tp, decay, layer, std, cst);
}

static int build_table(struct gpt *m)
{
    const struct gpt_config *c = &m->cfg;
    int64_t C = c->n_embd, hd = C / c->n_head;
    int64_t q = c->n_head * hd, kv = c->n_kv_head * hd, F = 4 * C;
    float std = 0.02f, pstd = 0.02f / sqrtf(2.0f * (float)c->n_layer);
    int rc = 0;
    if (m->first || m->last)
        rc |= add(m, -1, "wte", gpt_vocab_padded(c->vocab_size), C, -1, 1,
                  std, 0) < 0;
    if (m->first)
        rc |= add(m, -1, "wpe", c->seq_len, C, -1, 1, std, 0) < 0;
    for (int l = m->l0; l < m->l1; l++) {
        rc |= add(m, l, "ln1.w", C, 0, -1, 0, 0, 1) < 0;
        rc |= add(m, l, "ln1.b", C, 0, -1, 0, 0, 0) < 0;
        rc |= add(m, l, "attn.wq", q, C, 0, 1, std, 0) < 0;
        rc |= add(m, l, "attn.wk", kv, C, 0, 1, std, 0) < 0;
        rc |= add(m, l, "attn.wv", kv, C, 0, 1, std, 0) < 0;
        rc |= add(m, l, "attn.bq", q, 0, 0, 0, 0, 0) < 0;
        rc |= add(m, l, "attn.bk", kv, 0, 0, 0, 0, 0) < 0;
        rc |= add(m, l, "attn.bv", kv, 0, 0, 0, 0, 0) < 0;
        rc |= add(m, l, "attn.wo", C, q, 1, 1, pstd, 0) < 0;
        rc |= add(m, l, "attn.bo", C, 0, -1, 0, 0, 0) < 0;
        rc |= add(m, l, "ln2.w", C, 0, -1, 0, 0, 1) < 0;
        rc |= add(m, l, "ln2.b", C, 0, -1, 0, 0, 0) < 0;
        rc |= add(m, l, "mlp.wfc", F, C, 0, 1, std, 0) < 0;
        rc |= add(m, l, "mlp.bfc", F, 0, 0, 0, 0, 0) < 0;
        rc |= add(m, l, "mlp.wproj", C, F, 1, 1, pstd, 0) < 0;
        rc |= add(m, l, "mlp.bproj", C, 0, -1, 0, 0, 0) < 0;
    }
    if (m->last) {
        rc |= add(m, -1, "lnf.w", C, 0, -1, 0, 0, 1) < 0;
        rc |= add(m, -1, "lnf.b", C, 0, -1, 0, 0, 0) < 0;
    }
    return rc ? -1 : 0;
}

int gpt_global_table(const struct gpt_config *c, struct tensor_table *tt)
{
    struct gpt g;
    memset(&g, 0, sizeof(g));
    g.cfg = *c;
    g.tp = 1;
    g.l1 = c->n_layer;
    g.first = g.last = 1;
    int rc = build_table(&g);
    *tt = g.tt;
    return rc;
}

static float *view(const struct gpt *m, float *arena, int layer,
                   const char *nm)
{
    char name[TENSOR_NAME_MAX];
    if (layer >= 0)
        snprintf(name, sizeof(name), "h.%d.%s", layer, nm);
    else
        snprintf(name, sizeof(name), "%s", nm);
    int i = tensor_table_find(&m->tt, name);
    return i < 0 ? NULL : arena + m->tt.t[i].off;
}

static void layer_views(const struct gpt *m, float *arena, int l,
                        struct gpt_layer_w *w)
{
    w->ln1w = view(m, arena, l, "ln1.w");
    w->ln1b = view(m, arena, l, "ln1.b");
    w->wqkv = view(m, arena, l, "attn.wq"); /* wq wk wv adjacent */
    w->bqkv = view(m, arena, l, "attn.bq"); /* bq bk bv adjacent */
    w->wo = view(m, arena, l, "attn.wo");
    w->bo = view(m, arena, l, "attn.bo");
    w->ln2w = view(m, arena, l, "ln2.w");
    w->ln2b = view(m, arena, l, "ln2.b");
    w->wfc = view(m, arena, l, "mlp.wfc");
    w->bfc = view(m, arena, l, "mlp.bfc");
    w->wproj = view(m, arena, l, "mlp.wproj");
    w->bproj = view(m, arena, l, "mlp.bproj");
}

int gpt_init(struct gpt *m, const struct gpt_config *c, int tp, int tp_rank,
             int l0, int l1, uint64_t seed, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->cfg = *c;
    m->tp = tp;
    m->tp_rank = tp_rank;
    m->l0 = l0;
    m->l1 = l1;
    m->first = l0 == 0;
    m->last = l1 == c->n_layer;
    m->nh = c->n_head / tp;
    m->nkv = c->n_kv_head / tp;
    m->hd = c->n_embd / c->n_head;
    m->F = 4 * c->n_embd / tp;
    if (build_table(m) < 0)
        goto oom;
    size_t n = m->tt.total;
    m->params = tensor_arena_alloc(n);
    m->grads = tensor_arena_alloc(n);
    m->m = tensor_arena_alloc(n);
    m->v = tensor_arena_alloc(n);
    int nl = l1 - l0;
    m->lw = calloc((size_t)(nl ? nl : 1), sizeof(*m->lw));
    m->lg = calloc((size_t)(nl ? nl : 1), sizeof(*m->lg));
    if (!m->params || !m->grads || !m->m || !m->v || !m->lw || !m->lg)
        goto oom;
    for (int l = l0; l < l1; l++) {
        layer_views(m, m->params, l, &m->lw[l - l0]);
        layer_views(m, m->grads, l, &m->lg[l - l0]);
    }
    m->wte = view(m, m->params, -1, "wte");
    m->wpe = view(m, m->params, -1, "wpe");
    m->lnfw = view(m, m->params, -1, "lnf.w");
    m->lnfb = view(m, m->params, -1, "lnf.b");
    m->dwte = view(m, m->grads, -1, "wte");
    m->dwpe = view(m, m->grads, -1, "wpe");
    m->dlnfw = view(m, m->grads, -1, "lnf.w");
    m->dlnfb = view(m, m->grads, -1, "lnf.b");
    tensor_table_init_params(&m->tt, m->params, seed);
    return 0;
oom:
    snprintf(err, errlen, "out of memory allocating the model (%zu floats "
             "per arena)", m->tt.total);
    gpt_free(m);
    return -1;
}

void gpt_free(struct gpt *m)
{
    free(m->params);
    free(m->grads);
    free(m->m);
    free(m->v);
    free(m->lw);
    free(m->lg);
    tensor_table_free(&m->tt);
    memset(m, 0, sizeof(*m));
}

void gpt_zero_grad(struct gpt *m)
{
    memset(m->grads, 0, m->tt.total * sizeof(float));
}

/* ---- activations ------------------------------------------------------- */

/* Floats of one micro-batch's saved activations (what must live from its
 * forward to its backward) and of the backward/forward scratch. */
static struct attn_shape attn_shape_bt(const struct gpt *m, size_t B,
                                       size_t T, const int32_t *lo)
{
    struct attn_shape s = {
        .B = B, .T = T, .nh = (size_t)m->nh, .nkv = (size_t)m->nkv,
        .hd = (size_t)m->hd, .window = (size_t)m->cfg.attn_window,
        .kind = (enum attn_kind)m->cfg.attn,
        .block = (size_t)m->cfg.attn_block,
        .stride = (size_t)m->cfg.attn_stride, .lo = lo,
    };
    return s;
}

/* Floats of one block's saved attention state (att) and of attention's
 * share of the scratch (datt), by kind: the T x T probabilities of the
 * full kernel, the denominators of the linear one, the packed blocks of
 * the sparse one. */
static void attn_sizes(const struct gpt *m, size_t B, size_t T,
                       size_t *att, size_t *datt)
{
    struct attn_shape s = attn_shape_bt(m, B, T, NULL);
    switch (s.kind) {
    case ATTN_LINEAR:
        *att = B * s.nh * T;
        *datt = attention_linear_scratch(&s);
        return;
    case ATTN_SPARSE:
        *att = *datt = attention_sparse_floats(&s);
        return;
    case ATTN_FULL:
        break;
    }
    *att = *datt = B * s.nh * T * T;
}

static void acts_sizes(const struct gpt *m, size_t N, size_t B, size_t T,
                       size_t *saved, size_t *scratch)
{
    size_t C = (size_t)m->cfg.n_embd;
    size_t Q = (size_t)(m->nh + 2 * m->nkv) * m->hd, A = (size_t)m->nh * m->hd;
    size_t F = (size_t)m->F, V = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
    size_t TT, DTT;
    attn_sizes(m, B, T, &TT, &DTT);
    size_t nl = (size_t)(m->l1 - m->l0);
    size_t per = 6 * N * C + 4 * N + N * Q + TT + N * A + 2 * N * F;
    size_t head = m->last ? N * C + 3 * N + 2 * N * V : 0; /* lnf.., probs */
    *saved = N * C + nl * per + head;
    *scratch = 3 * N * C + N * Q + N * A + DTT + 2 * N * F +
               (m->last ? 2 * N * V : 0); /* logits, dlogits */
}

/* Carve the saved activations out of p; returns the end. */
static float *take_saved(struct gpt_acts *a, const struct gpt *m, float *p)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    size_t Q = (size_t)(m->nh + 2 * m->nkv) * m->hd, A = (size_t)m->nh * m->hd;
    size_t F = (size_t)m->F, V = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
    size_t TT, DTT;
    attn_sizes(m, (size_t)a->B, (size_t)a->T, &TT, &DTT);
#define TAKE(ptr, n) do { (ptr) = p; p += (n); } while (0)
    TAKE(a->emb, N * C);
    for (int l = 0; l < m->l1 - m->l0; l++) {
        struct gpt_layer_acts *la = &a->la[l];
        TAKE(la->ln1, N * C);
        TAKE(la->ln1_mean, N);
        TAKE(la->ln1_rstd, N);
        TAKE(la->qkv, N * Q);
        TAKE(la->att, TT);
        TAKE(la->atty, N * A);
        TAKE(la->attproj, N * C);
        TAKE(la->res1, N * C);
        TAKE(la->ln2, N * C);
        TAKE(la->ln2_mean, N);
        TAKE(la->ln2_rstd, N);
        TAKE(la->fch, N * F);
        TAKE(la->fch_gelu, N * F);
        TAKE(la->fcproj, N * C);
        TAKE(la->res2, N * C);
    }
    if (m->last) {
        TAKE(a->lnf, N * C);
        TAKE(a->lnf_mean, N);
        TAKE(a->lnf_rstd, N);
        TAKE(a->probs, N * V);
        TAKE(a->losses, N);
        TAKE(a->lse, N);
    }
    return p;
}

static void take_scratch(struct gpt_acts *a, const struct gpt *m, float *p)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    size_t Q = (size_t)(m->nh + 2 * m->nkv) * m->hd, A = (size_t)m->nh * m->hd;
    size_t F = (size_t)m->F, V = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
    size_t TT, DTT;
    attn_sizes(m, (size_t)a->B, (size_t)a->T, &TT, &DTT);
    TAKE(a->dres, N * C);
    TAKE(a->dC, N * C);
    TAKE(a->dln, N * C);
    TAKE(a->dqkv, N * Q);
    TAKE(a->datty, N * A);
    TAKE(a->datt, DTT);
    TAKE(a->dF1, N * F);
    TAKE(a->dF2, N * F);
    if (m->last) {
        TAKE(a->logits, N * V);
        TAKE(a->dlogits, N * V);
    }
#undef TAKE
}

/* Point every buffer of a into a->mem for its B, T (saved, then the
 * scratch unless owner lends it). */
static void carve(struct gpt_acts *a, const struct gpt *m,
                  const struct gpt_acts *owner)
{
    float *end = take_saved(a, m, a->mem);
    if (owner) {
        a->dres = owner->dres, a->dC = owner->dC, a->dln = owner->dln;
        a->dqkv = owner->dqkv, a->datty = owner->datty;
        a->datt = owner->datt, a->dF1 = owner->dF1, a->dF2 = owner->dF2;
        a->logits = owner->logits, a->dlogits = owner->dlogits;
    } else {
        take_scratch(a, m, end);
    }
}

int gpt_acts_init_shared(struct gpt_acts *a, const struct gpt *m, int B,
                         int T, const struct gpt_acts *owner)
{
    memset(a, 0, sizeof(*a));
    size_t N = (size_t)B * T, saved, scratch;
    acts_sizes(m, N, (size_t)B, (size_t)T, &saved, &scratch);
    size_t nl = (size_t)(m->l1 - m->l0);
    size_t total = saved + (owner ? 0 : scratch);
    a->B = B;
    a->T = T;
    a->N = N;
    a->la = calloc(nl ? nl : 1, sizeof(*a->la));
    a->inp = calloc(3 * N, sizeof(int32_t));
    a->mem = tensor_arena_alloc(total);
    if (!a->la || !a->inp || !a->mem) {
        gpt_acts_free(a);
        return -1;
    }
    a->tgt = a->inp + N;
    a->bytes = total * sizeof(float) + 3 * N * sizeof(int32_t);
    a->cap = total;
    a->ncap = N;
    carve(a, m, owner);
    return 0;
}

void gpt_acts_reshape(struct gpt_acts *a, const struct gpt *m, int B, int T,
                      const struct gpt_acts *owner)
{
    size_t N = (size_t)B * T, saved, scratch;
    acts_sizes(m, N, (size_t)B, (size_t)T, &saved, &scratch);
    if (N > a->ncap || saved + (owner ? 0 : scratch) > a->cap) {
        fprintf(stderr, "mpitron: activations of %d x %d do not fit those "
                "of %zu tokens\n", B, T, a->ncap);
        abort();
    }
    a->B = B;
    a->T = T;
    a->N = N;
    carve(a, m, owner);
}

int gpt_acts_init(struct gpt_acts *a, const struct gpt *m, int B, int T)
{
    return gpt_acts_init_shared(a, m, B, T, NULL);
}

void gpt_acts_free(struct gpt_acts *a)
{
    free(a->la);
    free(a->inp);
    free(a->mem);
    memset(a, 0, sizeof(*a));
}

static void emit(struct gpt *m, enum gpt_event ev, int layer);

/* ---- forward ------------------------------------------------------------ */

/* Dropout site s of step: 0 the embedding, 1 + 2l attention of block l,
 * 2 + 2l the MLP of block l. */
static uint64_t drop_key(const struct gpt_pos *pos, int site)
{
    return rng_key(pos->seed ^ ((uint64_t)(site + 1) * 0x9e3779b97f4a7c15ULL),
                   RNG_DROPOUT, (uint64_t)pos->step);
}

/* out = a + dropout(x) for the residual branch x (N,C) of the micro-batch
 * in acts; tmp (N,C) is scratch. */
static void residual_dropout(struct gpt *m, const struct gpt_acts *ac,
                             float *out, const float *a, const float *x,
                             float *tmp, const struct gpt_pos *pos, int site)
{
    size_t C = (size_t)m->cfg.n_embd, N = ac->N;
    float p = pos->train ? m->cfg.dropout : 0.0f;
    if (p > 0.0f) {
        uint64_t row0 = (uint64_t)pos->seq0 * (uint64_t)ac->T;
        TIMED(m, OPK_ELEMENTWISE,
              dropout_forward(tmp, x, p, drop_key(pos, site), row0, C, 0, N,
                              C));
        x = tmp;
    }
    TIMED(m, OPK_ELEMENTWISE, residual_forward(out, a, x, N * C));
}

/* d(branch) for a residual branch: dres itself without dropout, else the
 * masked copy in tmp. */
static const float *branch_grad(struct gpt *m, const struct gpt_acts *ac,
                                const float *dres, float *tmp,
                                const struct gpt_pos *pos, int site)
{
    size_t C = (size_t)m->cfg.n_embd, N = ac->N;
    float p = pos->train ? m->cfg.dropout : 0.0f;
    if (p == 0.0f)
        return dres;
    uint64_t row0 = (uint64_t)pos->seq0 * (uint64_t)ac->T;
    memset(tmp, 0, N * C * sizeof(float));
    TIMED(m, OPK_ELEMENTWISE,
          dropout_backward(tmp, dres, p, drop_key(pos, site), row0, C, 0, N,
                           C));
    return tmp;
}

static struct attn_shape attn_shape_of(const struct gpt *m,
                                       const struct gpt_acts *a)
{
    return attn_shape_bt(m, (size_t)a->B, (size_t)a->T, a->lo);
}

static void attn_forward(struct gpt *m, struct gpt_acts *a,
                         struct gpt_layer_acts *la,
                         const struct attn_shape *s)
{
    switch (s->kind) {
    case ATTN_LINEAR:
        attention_linear_forward(la->atty, la->att, a->datt, la->qkv, s);
        return;
    case ATTN_SPARSE:
        attention_sparse_forward(la->atty, la->att, la->qkv, s);
        return;
    case ATTN_FULL:
        break;
    }
    attention_forward(la->atty, la->att, la->qkv, s);
}

static void attn_backward(struct gpt *m, struct gpt_acts *a,
                          struct gpt_layer_acts *la,
                          const struct attn_shape *s)
{
    switch (s->kind) {
    case ATTN_LINEAR:
        attention_linear_backward(a->dqkv, a->datt, a->datty, la->qkv,
                                  la->atty, la->att, s);
        return;
    case ATTN_SPARSE:
        attention_sparse_backward(a->dqkv, a->datt, a->datty, la->qkv,
                                  la->att, s);
        return;
    case ATTN_FULL:
        break;
    }
    attention_backward(a->dqkv, a->datt, a->datty, la->qkv, la->att, s);
}

/* out (N,OC) = inp (N,IC) @ w (OC,IC)^T + bias (OC) for a row-parallel
 * layer: IC is this rank's slice of the input width, so the local product
 * is a partial sum; it is all-reduced in the tp group (Megatron's g) and
 * the replicated bias added once.  tp = 1: the plain matmul. */
static void row_parallel_forward(struct gpt *m, float *out, const float *inp,
                                 const float *w, const float *bias, size_t N,
                                 size_t IC, size_t OC)
{
    if (m->tp == 1) {
        TIMED(m, OPK_MATMUL, matmul_forward(out, inp, w, bias, N, IC, OC));
        return;
    }
    TIMED(m, OPK_MATMUL, matmul_forward(out, inp, w, NULL, N, IC, OC));
    TIMED(m, OPK_TP_COMM, tp_allreduce_sum(out, N * OC, m->tpc));
    double t0 = now_s();
    for (size_t i = 0; i < N; i++) {
        float *o = out + i * OC;
        for (size_t j = 0; j < OC; j++)
            o[j] += bias[j];
    }
    m->op_time[OPK_ELEMENTWISE] += now_s() - t0;
}

/* The input gradient dinp (N,C) of a column-parallel layer holds this
 * rank's heads' (or FC rows') part: sum it over the tp group (Megatron's
 * f in backward) before the replicated LayerNorm backward. */
static void column_parallel_dinp(struct gpt *m, float *dinp, size_t n)
{
    if (m->tp > 1)
        TIMED(m, OPK_TP_COMM, tp_allreduce_sum(dinp, n, m->tpc));
}

/* One block forward: x (N,C) -> la->res2. */
static void block_forward(struct gpt *m, struct gpt_acts *a, int l,
                          const float *x, const struct gpt_pos *pos)
{
    const struct gpt_layer_w *w = &m->lw[l - m->l0];
    struct gpt_layer_acts *la = &a->la[l - m->l0];
    size_t N = a->N, C = (size_t)m->cfg.n_embd, F = (size_t)m->F;
    size_t A = (size_t)m->nh * m->hd, Q = A + 2 * (size_t)m->nkv * m->hd;
    struct attn_shape s = attn_shape_of(m, a);

    TIMED(m, OPK_LAYERNORM, layernorm_forward(la->ln1, la->ln1_mean,
          la->ln1_rstd, x, w->ln1w, w->ln1b, N, C));
    TIMED(m, OPK_MATMUL, matmul_forward(la->qkv, la->ln1, w->wqkv, w->bqkv,
                                        N, C, Q));
    TIMED(m, OPK_ATTENTION, attn_forward(m, a, la, &s));
    row_parallel_forward(m, la->attproj, la->atty, w->wo, w->bo, N, A, C);
    residual_dropout(m, a, la->res1, x, la->attproj, a->dC, pos, 1 + 2 * l);

    TIMED(m, OPK_LAYERNORM, layernorm_forward(la->ln2, la->ln2_mean,
          la->ln2_rstd, la->res1, w->ln2w, w->ln2b, N, C));
    TIMED(m, OPK_MATMUL, matmul_forward(la->fch, la->ln2, w->wfc, w->bfc, N,
                                        C, F));
    TIMED(m, OPK_GELU, gelu_forward(la->fch_gelu, la->fch, N * F));
    row_parallel_forward(m, la->fcproj, la->fch_gelu, w->wproj, w->bproj, N,
                         F, C);
    residual_dropout(m, a, la->res2, la->res1, la->fcproj, a->dC, pos,
                     2 + 2 * l);
}

/* The first stage's input: token + position embedding, then dropout, into
 * a->emb. */
static void embed_forward(struct gpt *m, struct gpt_acts *a,
                          const struct gpt_pos *pos)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    float p = pos->train ? m->cfg.dropout : 0.0f;
    float *e = p > 0.0f ? a->dres : a->emb; /* pre-dropout embedding */
    TIMED(m, OPK_EMBEDDING, encoder_forward_doc(e, a->inp, a->lo, m->wte,
          m->wpe, (size_t)a->B, (size_t)a->T, C));
    if (p > 0.0f) {
        uint64_t row0 = (uint64_t)pos->seq0 * (uint64_t)a->T;
        TIMED(m, OPK_ELEMENTWISE, dropout_forward(a->emb, e, p,
              drop_key(pos, 0), row0, C, 0, N, C));
    }
}

const float *gpt_stage_output(const struct gpt *m, const struct gpt_acts *a)
{
    int nl = m->l1 - m->l0;
    return nl ? a->la[nl - 1].res2 : a->emb;
}

double gpt_forward(struct gpt *m, struct gpt_acts *a, const int32_t *inp,
                   const int32_t *tgt, const struct gpt_pos *pos)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    size_t Vp = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
    /* document bounds, for every stage's attention (and the first's
     * positions) in forward and backward */
    a->lo = NULL;
    if (m->cfg.doc_mask && pos->dstart) {
        a->lo = a->inp + 2 * a->ncap;
        memcpy(a->lo, pos->dstart, N * sizeof(int32_t));
    }
    if (m->first) {
        memcpy(a->inp, inp, N * sizeof(int32_t));
        embed_forward(m, a, pos);
    }
    const float *x = a->emb;
    for (int l = m->l0; l < m->l1; l++) {
        block_forward(m, a, l, x, pos);
        x = a->la[l - m->l0].res2;
        emit(m, GPT_PROGRESS, l); /* pipeline sends in flight move on */
    }
    if (!m->last)
        return 0.0;
    memcpy(a->tgt, tgt, N * sizeof(int32_t));
    TIMED(m, OPK_LAYERNORM, layernorm_forward(a->lnf, a->lnf_mean,
          a->lnf_rstd, x, m->lnfw, m->lnfb, N, C));
    TIMED(m, OPK_MATMUL, matmul_forward(a->logits, a->lnf, m->wte, NULL, N,
                                        C, Vp));
    struct xent_opts xo = {m->cfg.label_smoothing, m->cfg.z_loss};
    TIMED(m, OPK_LOSS, xent_forward(a->losses, a->probs, a->lse, a->logits,
          a->tgt, N, V, Vp, pos->train ? &xo : NULL));
    double sum = 0.0;
    for (size_t i = 0; i < N; i++)
        sum += a->losses[i];
    return sum;
}

/* ---- backward ----------------------------------------------------------- */

static void emit(struct gpt *m, enum gpt_event ev, int layer)
{
    if (m->hook && (m->hook_final || ev == GPT_PROGRESS))
        m->hook(m->hook_ctx, ev, layer);
}

/* matmul_backward split in its two products with a chance to progress
 * communication after each: the weight gradient, then the input's. */
static void mm_backward(struct gpt *m, int l, float *dinp, float *dw,
                        float *db, const float *dout, const float *inp,
                        const float *w, size_t N, size_t C, size_t OC)
{
    TIMED(m, OPK_MATMUL, matmul_backward(NULL, dw, db, dout, inp, w, N, C,
                                         OC));
    emit(m, GPT_PROGRESS, l);
    TIMED(m, OPK_MATMUL, matmul_backward(dinp, NULL, NULL, dout, inp, w, N,
                                         C, OC));
    emit(m, GPT_PROGRESS, l);
}

/* One block backward: a->dres holds d(res2) on entry, d(x) on exit. */
static void block_backward(struct gpt *m, struct gpt_acts *a, int l,
                           const float *x, const struct gpt_pos *pos)
{
    const struct gpt_layer_w *w = &m->lw[l - m->l0];
    const struct gpt_layer_w *g = &m->lg[l - m->l0];
    struct gpt_layer_acts *la = &a->la[l - m->l0];
    size_t N = a->N, C = (size_t)m->cfg.n_embd, F = (size_t)m->F;
    size_t A = (size_t)m->nh * m->hd, Q = A + 2 * (size_t)m->nkv * m->hd;
    struct attn_shape s = attn_shape_of(m, a);
    const float *dout;

    /* MLP branch */
    dout = branch_grad(m, a, a->dres, a->dC, pos, 2 + 2 * l);
    memset(a->dF1, 0, N * F * sizeof(float));
    mm_backward(m, l, a->dF1, g->wproj, g->bproj, dout, la->fch_gelu,
                w->wproj, N, F, C);
    memset(a->dF2, 0, N * F * sizeof(float));
    TIMED(m, OPK_GELU, gelu_backward(a->dF2, la->fch, a->dF1, N * F));
    memset(a->dln, 0, N * C * sizeof(float));
    mm_backward(m, l, a->dln, g->wfc, g->bfc, a->dF2, la->ln2, w->wfc, N, C,
                F);
    column_parallel_dinp(m, a->dln, N * C);
    TIMED(m, OPK_LAYERNORM, layernorm_backward(a->dres, g->ln2w, g->ln2b,
          a->dln, la->res1, w->ln2w, la->ln2_mean, la->ln2_rstd, N, C));

    /* attention branch */
    dout = branch_grad(m, a, a->dres, a->dC, pos, 1 + 2 * l);
    memset(a->datty, 0, N * A * sizeof(float));
    mm_backward(m, l, a->datty, g->wo, g->bo, dout, la->atty, w->wo, N, A,
                C);
    memset(a->dqkv, 0, N * Q * sizeof(float));
    TIMED(m, OPK_ATTENTION, attn_backward(m, a, la, &s));
    emit(m, GPT_PROGRESS, l);
    memset(a->dln, 0, N * C * sizeof(float));
    mm_backward(m, l, a->dln, g->wqkv, g->bqkv, a->dqkv, la->ln1, w->wqkv,
                N, C, Q);
    column_parallel_dinp(m, a->dln, N * C);
    TIMED(m, OPK_LAYERNORM, layernorm_backward(a->dres, g->ln1w, g->ln1b,
          a->dln, x, w->ln1w, la->ln1_mean, la->ln1_rstd, N, C));
}

/* The last stage's head: loss, LM head (tied wte), final LayerNorm;
 * leaves d(last block output) in a->dres. */
static void head_backward(struct gpt *m, struct gpt_acts *a, float dloss)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    size_t Vp = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
    struct xent_opts xo = {m->cfg.label_smoothing, m->cfg.z_loss};
    memset(a->dlogits, 0, N * Vp * sizeof(float));
    TIMED(m, OPK_LOSS, xent_backward(a->dlogits, a->probs, a->lse, a->tgt,
          dloss, N, V, Vp, &xo));
    memset(a->dln, 0, N * C * sizeof(float));
    TIMED(m, OPK_MATMUL, matmul_backward(a->dln, m->dwte, NULL, a->dlogits,
                                         a->lnf, m->wte, N, C, Vp));
    memset(a->dres, 0, N * C * sizeof(float));
    TIMED(m, OPK_LAYERNORM, layernorm_backward(a->dres, m->dlnfw, m->dlnfb,
          a->dln, gpt_stage_output(m, a), m->lnfw, a->lnf_mean, a->lnf_rstd,
          N, C));
    emit(m, GPT_GRADS_HEAD, -1);
}

void gpt_backward(struct gpt *m, struct gpt_acts *a, float dloss,
                  const struct gpt_pos *pos)
{
    size_t C = (size_t)m->cfg.n_embd;
    if (m->last)
        head_backward(m, a, dloss);
    for (int l = m->l1 - 1; l >= m->l0; l--) {
        const float *x = l > m->l0 ? a->la[l - 1 - m->l0].res2 : a->emb;
        block_backward(m, a, l, x, pos);
        emit(m, GPT_GRADS_LAYER, l);
    }
    if (m->first) {
        const float *de = branch_grad(m, a, a->dres, a->dC, pos, 0);
        TIMED(m, OPK_EMBEDDING, encoder_backward_doc(m->dwte, m->dwpe, de,
              a->inp, a->lo, (size_t)a->B, (size_t)a->T, C));
    }
    if (m->first || m->last)
        emit(m, GPT_GRADS_EMBED, -1); /* wte (and wpe) final */
}
