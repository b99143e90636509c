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
#include "model_ops.h"
#include "ops.h"
#include "rng.h"
#include "tp.h"

const char *const op_kind_names[OPK_COUNT] = {
    "matmul", "attention", "softmax", "layernorm", "gelu", "elementwise",
    "cast", "loss", "embedding", "tp_comm",
};


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
                 "tokens)", c->vocab_size);
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
    return (int64_t)c->vocab_size * C + (int64_t)c->seq_len * C +
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
    /* the embedding unit first, contiguous: wte, wpe, the final LayerNorm
     * (ZeRO gathers and reduces it as one range) */
    if (m->first || m->last)
        rc |= add(m, -1, "wte", c->vocab_size, C, -1, 1, std, 0) < 0;
    if (m->first)
        rc |= add(m, -1, "wpe", c->seq_len, C, -1, 1, std, 0) < 0;
    if (m->last) {
        rc |= add(m, -1, "lnf.w", C, 0, -1, 0, 0, 1) < 0;
        rc |= add(m, -1, "lnf.b", C, 0, -1, 0, 0, 0) < 0;
    }
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

/* Tensor nm of block layer (-1: no prefix) in memory laid out as the
 * arena from arena offset base on (base 0: the arena itself); NULL when
 * the tensor is not on this stage or there is no memory. */
static int find_tensor(const struct gpt *m, int layer, const char *nm)
{
    char name[TENSOR_NAME_MAX];
    if (layer >= 0)
        snprintf(name, sizeof(name), "h.%d.%s", layer, nm);
    else
        snprintf(name, sizeof(name), "%s", nm);
    return tensor_table_find(&m->tt, name);
}

static float *view_at(const struct gpt *m, float *arena, size_t base,
                      int layer, const char *nm)
{
    int i = find_tensor(m, layer, nm);
    return i < 0 || !arena ? NULL : arena + (m->tt.t[i].off - base);
}

/* the bf16 copy of a tensor: same offset in params_h */
static const bf16 *hview(const struct gpt *m, int layer, const char *nm)
{
    const float *p = view_at(m, m->params, 0, layer, nm);
    return p ? m->params_h + (p - m->params) : NULL;
}

static void layer_views(const struct gpt *m, float *arena, size_t base,
                        int l, struct gpt_layer_w *w)
{
    w->ln1w = view_at(m, arena, base, l, "ln1.w");
    w->ln1b = view_at(m, arena, base, l, "ln1.b");
    w->wqkv = view_at(m, arena, base, l, "attn.wq"); /* wq wk wv adjacent */
    w->bqkv = view_at(m, arena, base, l, "attn.bq"); /* bq bk bv adjacent */
    w->wo = view_at(m, arena, base, l, "attn.wo");
    w->bo = view_at(m, arena, base, l, "attn.bo");
    w->ln2w = view_at(m, arena, base, l, "ln2.w");
    w->ln2b = view_at(m, arena, base, l, "ln2.b");
    w->wfc = view_at(m, arena, base, l, "mlp.wfc");
    w->bfc = view_at(m, arena, base, l, "mlp.bfc");
    w->wproj = view_at(m, arena, base, l, "mlp.wproj");
    w->bproj = view_at(m, arena, base, l, "mlp.bproj");
}

/* The embedding unit's views into params / grads (NULL: leave them). */
static void outer_views(struct gpt *m, float *params, float *grads,
                        size_t base)
{
    if (params) {
        m->wte = view_at(m, params, base, -1, "wte");
        m->wpe = view_at(m, params, base, -1, "wpe");
        m->lnfw = view_at(m, params, base, -1, "lnf.w");
        m->lnfb = view_at(m, params, base, -1, "lnf.b");
    }
    if (grads) {
        m->dwte = view_at(m, grads, base, -1, "wte");
        m->dwpe = view_at(m, grads, base, -1, "wpe");
        m->dlnfw = view_at(m, grads, base, -1, "lnf.w");
        m->dlnfb = view_at(m, grads, base, -1, "lnf.b");
    }
}

void gpt_bind_unit(struct gpt *m, int layer, float *params, float *grads)
{
    /* the unit's first tensor */
    int i = find_tensor(m, layer, layer >= 0 ? "ln1.w" : "wte");
    if (i < 0)
        return;
    size_t base = m->tt.t[i].off;
    if (layer < 0) {
        outer_views(m, params, grads, base);
        return;
    }
    if (params)
        layer_views(m, params, base, layer, &m->lw[layer - m->l0]);
    if (grads)
        layer_views(m, grads, base, layer, &m->lg[layer - m->l0]);
}

int gpt_init(struct gpt *m, const struct gpt_config *c, int tp, int tp_rank,
             int l0, int l1, uint64_t seed, char *err, size_t errlen)
{
    return gpt_init_arenas(m, c, tp, tp_rank, l0, l1, seed, GPT_ARENA_ALL,
                           err, errlen);
}

int gpt_init_arenas(struct gpt *m, const struct gpt_config *c, int tp,
                    int tp_rank, int l0, int l1, uint64_t seed, int arenas,
                    char *err, size_t errlen)
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
    int ap = arenas & GPT_ARENA_PARAMS, ag = arenas & GPT_ARENA_GRADS;
    int am = arenas & GPT_ARENA_MOMENTS;
    m->params = ap ? tensor_arena_alloc(n) : NULL;
    m->grads = ag ? tensor_arena_alloc(n) : NULL;
    m->m = am ? tensor_arena_alloc(n) : NULL;
    m->v = am ? tensor_arena_alloc(n) : NULL;
    int nl = l1 - l0;
    m->lw = calloc((size_t)(nl ? nl : 1), sizeof(*m->lw));
    m->lg = calloc((size_t)(nl ? nl : 1), sizeof(*m->lg));
    if ((ap && !m->params) || (ag && !m->grads) || (am && (!m->m || !m->v))
        || !m->lw || !m->lg)
        goto oom;
    for (int l = l0; l < l1; l++) {
        layer_views(m, m->params, 0, l, &m->lw[l - l0]);
        layer_views(m, m->grads, 0, l, &m->lg[l - l0]);
    }
    outer_views(m, m->params, m->grads, 0);
    if (m->params)
        tensor_table_init_params(&m->tt, m->params, seed);
    if (c->precision == GPT_BF16) { /* without a params arena (ZeRO-3)
                                       the views come from gpt_bind_unit_h */
        m->lh = calloc((size_t)(nl ? nl : 1), sizeof(*m->lh));
        m->params_h = m->params ? (bf16 *)tensor_arena_alloc((n + 1) / 2)
                                : NULL;
        if (!m->lh || (m->params && !m->params_h))
            goto oom;
        if (m->params_h)
            for (int l = l0; l < l1; l++)
                gpt_bind_unit_h(m, l, hview(m, l, "ln1.w"));
        if (m->params_h)
            gpt_bind_unit_h(m, -1, hview(m, -1, "wte"));
    }
    gpt_refresh_bf16(m);
    return 0;
oom:
    snprintf(err, errlen, "out of memory allocating the model (%zu floats "
             "per arena)", m->tt.total);
    gpt_free(m);
    return -1;
}

void gpt_refresh_bf16(struct gpt *m)
{
    if (m->params_h)
        bf16_from_f32_n(m->params_h, m->params, m->tt.total);
}

void gpt_refresh_bf16_range(struct gpt *m, size_t off, size_t n)
{
    if (m->params_h)
        bf16_from_f32_n(m->params_h + off, m->params + off, n);
}

/* The bf16 copy of a tensor of the unit whose first tensor is at base,
 * in a copy of the unit at h. */
static const bf16 *hview_at(const struct gpt *m, const bf16 *h, size_t base,
                            int layer, const char *nm)
{
    int i = find_tensor(m, layer, nm);
    return i < 0 || !h ? NULL : h + (m->tt.t[i].off - base);
}

void gpt_bind_unit_h(struct gpt *m, int layer, const bf16 *h)
{
    int i = find_tensor(m, layer, layer >= 0 ? "ln1.w" : "wte");
    if (!m->lh || i < 0)
        return;
    size_t base = m->tt.t[i].off;
    if (layer < 0) {
        m->wte_h = hview_at(m, h, base, -1, "wte");
        return;
    }
    struct gpt_layer_h *v = &m->lh[layer - m->l0];
    v->wqkv = hview_at(m, h, base, layer, "attn.wq");
    v->wo = hview_at(m, h, base, layer, "attn.wo");
    v->wfc = hview_at(m, h, base, layer, "mlp.wfc");
    v->wproj = hview_at(m, h, base, layer, "mlp.wproj");
}

void gpt_free(struct gpt *m)
{
    free(m->params_h);
    free(m->lh);
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
    if (m->grads)
        memset(m->grads, 0, m->tt.total * sizeof(float));
}

/* ---- activations ------------------------------------------------------- */

/* A block's activations, as bits of a mask. */
enum {
    A_LN1, A_LN1_MEAN, A_LN1_RSTD, A_QKV, A_ATT, A_ATTY, A_ATTPROJ, A_RES1,
    A_LN2, A_LN2_MEAN, A_LN2_RSTD, A_FCH, A_FCH_GELU, A_FCPROJ, A_RES2,
    A_ALL = (1u << (A_RES2 + 1)) - 1
};

/* What a slot keeps of a block (model.h: recomputation), and what the
 * shared work layer holds: the rest, and under full also a res2 for the
 * recomputation to write. */
static unsigned kept_mask(const struct gpt *m)
{
    switch (m->cfg.recompute) {
    case GPT_RECOMPUTE_SELECTIVE:
        return 1u << A_QKV | 1u << A_RES1 | 1u << A_FCH | 1u << A_RES2;
    case GPT_RECOMPUTE_FULL:
        return 1u << A_RES2;
    default:
        return A_ALL;
    }
}

static unsigned work_mask(const struct gpt *m)
{
    unsigned w = A_ALL & ~kept_mask(m);
    return m->cfg.recompute == GPT_RECOMPUTE_FULL ? w | 1u << A_RES2 : w;
}

/* Carves the one allocation behind a gpt_acts into its tensors: a byte
 * offset that every piece advances, rounded up to 64 bytes.  With a NULL
 * base it only counts, so sizes and pointers come from the same code. */
struct carver {
    char *base;
    size_t off;
};

static void *carve(struct carver *cv, size_t n, size_t esize)
{
    void *p = cv->base ? cv->base + cv->off : NULL;
    cv->off += (n * esize + 63) & ~(size_t)63;
    return p;
}

#define CF(n) carve(cv, (n), sizeof(float))

/* The tensors of one block named in mask (the others NULL); [p] tensors
 * in the precision's type. */
static void carve_layer(struct gpt_layer_acts *la, const struct gpt *m,
                        const struct gpt_acts *a, unsigned mask,
                        struct carver *cv)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    size_t Q = (size_t)(m->nh + 2 * m->nkv) * m->hd, A = (size_t)m->nh * m->hd;
    size_t F = (size_t)m->F;
    size_t TT = (size_t)a->B * m->nh * a->T * a->T;
    size_t hsz = m->cfg.precision == GPT_BF16 ? sizeof(bf16) : sizeof(float);
#define L(bit, ptr, n, sz) \
    ((ptr) = (mask >> (bit)) & 1u ? carve(cv, (n), (sz)) : NULL)
    L(A_LN1, la->ln1, N * C, hsz);
    L(A_LN1_MEAN, la->ln1_mean, N, sizeof(float));
    L(A_LN1_RSTD, la->ln1_rstd, N, sizeof(float));
    L(A_QKV, la->qkv, N * Q, hsz);
    L(A_ATT, la->att, TT, hsz);
    L(A_ATTY, la->atty, N * A, hsz);
    L(A_ATTPROJ, la->attproj, N * C, sizeof(float));
    L(A_RES1, la->res1, N * C, sizeof(float));
    L(A_LN2, la->ln2, N * C, hsz);
    L(A_LN2_MEAN, la->ln2_mean, N, sizeof(float));
    L(A_LN2_RSTD, la->ln2_rstd, N, sizeof(float));
    L(A_FCH, la->fch, N * F, hsz);
    L(A_FCH_GELU, la->fch_gelu, N * F, hsz);
    L(A_FCPROJ, la->fcproj, N * C, sizeof(float));
    L(A_RES2, la->res2, N * C, sizeof(float));
#undef L
}

/* What must live from a micro-batch's forward to its backward. */
static void carve_saved(struct gpt_acts *a, const struct gpt *m,
                        struct carver *cv)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    size_t hsz = m->cfg.precision == GPT_BF16 ? sizeof(bf16) : sizeof(float);
    a->emb = CF(N * C);
    for (int l = 0; l < m->l1 - m->l0; l++)
        carve_layer(&a->la[l], m, a, kept_mask(m), cv);
    if (m->last) {
        a->lnf = carve(cv, N * C, hsz);
        a->lnf_mean = CF(N);
        a->lnf_rstd = CF(N);
        a->probs = CF(N * V);
        a->losses = CF(N);
    }
}

/* Backward (and forward) scratch, shared by the slots of a pipeline. */
static void carve_scratch(struct gpt_acts *a, const struct gpt *m,
                          struct carver *cv)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    size_t Q = (size_t)(m->nh + 2 * m->nkv) * m->hd, A = (size_t)m->nh * m->hd;
    size_t F = (size_t)m->F, V = (size_t)m->cfg.vocab_size;
    size_t TT = (size_t)a->B * m->nh * a->T * a->T;
    a->dres = CF(N * C);
    a->dC = CF(N * C);
    a->dln = CF(N * C);
    a->dqkv = CF(N * Q);
    a->datty = CF(N * A);
    a->datt = CF(TT);
    a->dF1 = CF(N * F);
    a->dF2 = CF(N * F);
    if (m->last) {
        a->logits = CF(N * V);
        a->dlogits = CF(N * V);
    }
    if (m->cfg.precision == GPT_BF16) {
        size_t w = C > F ? C : F;
        w = w > Q ? w : Q;
        w = w > A ? w : A;
        w = m->last && V > w ? V : w;
        a->dh = carve(cv, N * w, sizeof(bf16));
        a->datt_h = carve(cv, TT, sizeof(bf16));
    }
    carve_layer(&a->work, m, a, work_mask(m), cv);
}
#undef CF

int gpt_stage_plan(const struct gpt_config *c, int tp, int l0, int l1, int B,
                   struct tensor_table *tt, size_t *saved_bytes,
                   size_t *scratch_bytes)
{
    struct gpt g;
    memset(&g, 0, sizeof(g));
    g.cfg = *c;
    g.tp = tp;
    g.l0 = l0;
    g.l1 = l1;
    g.first = l0 == 0;
    g.last = l1 == c->n_layer;
    g.nh = c->n_head / tp;
    g.nkv = c->n_kv_head / tp;
    g.hd = c->n_embd / c->n_head;
    g.F = 4 * c->n_embd / tp;
    int rc = build_table(&g);
    *tt = g.tt;
    /* the same carving as gpt_acts_init_shared, counting only */
    struct gpt_acts a;
    memset(&a, 0, sizeof(a));
    size_t nl = (size_t)(l1 - l0), N = (size_t)B * c->seq_len;
    a.B = B, a.T = c->seq_len, a.N = N;
    a.la = calloc(nl ? nl : 1, sizeof(*a.la));
    if (!a.la)
        return -1;
    struct carver cv = {NULL, 0};
    carve_saved(&a, &g, &cv); /* the carver counts bytes */
    size_t saved = cv.off;
    carve_scratch(&a, &g, &cv);
    free(a.la);
    *saved_bytes = saved + 2 * N * sizeof(int32_t);
    *scratch_bytes = cv.off - saved;
    return rc;
}

int gpt_acts_init_shared(struct gpt_acts *a, const struct gpt *m, int B,
                         int T, const struct gpt_acts *owner)
{
    memset(a, 0, sizeof(*a));
    size_t N = (size_t)B * T;
    size_t nl = (size_t)(m->l1 - m->l0);
    a->B = B;
    a->T = T;
    a->N = N;
    a->la = calloc(nl ? nl : 1, sizeof(*a->la));
    a->inp = calloc(2 * N, sizeof(int32_t));
    if (!a->la || !a->inp) {
        gpt_acts_free(a);
        return -1;
    }
    struct carver cv = {NULL, 0}; /* count first */
    carve_saved(a, m, &cv);
    size_t saved = cv.off;
    if (!owner)
        carve_scratch(a, m, &cv);
    size_t total = cv.off;
    a->mem = tensor_arena_alloc((total + sizeof(float) - 1) / sizeof(float));
    if (!a->mem) {
        gpt_acts_free(a);
        return -1;
    }
    a->tgt = a->inp + N;
    a->bytes = total + 2 * N * sizeof(int32_t);
    a->saved_bytes = saved;
    cv = (struct carver){(char *)a->mem, 0};
    carve_saved(a, m, &cv);
    if (owner) {
        a->dres = owner->dres, a->dC = owner->dC, a->dln = owner->dln;
        a->dqkv = owner->dqkv, a->datty = owner->datty;
        a->datt = owner->datt, a->dF1 = owner->dF1, a->dF2 = owner->dF2;
        a->logits = owner->logits, a->dlogits = owner->dlogits;
        a->dh = owner->dh, a->datt_h = owner->datt_h;
        a->work = owner->work;
    } else {
        carve_scratch(a, m, &cv);
    }
    return 0;
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
    struct attn_shape s = {
        .B = (size_t)a->B, .T = (size_t)a->T, .nh = (size_t)m->nh,
        .nkv = (size_t)m->nkv, .hd = (size_t)m->hd,
        .window = (size_t)m->cfg.attn_window,
    };
    return s;
}

/* out (N,OC) = inp (N,IC) @ w (OC,IC)^T + bias (OC) for a row-parallel
 * layer: IC is this rank's slice of the input width, so the local product
 * is a partial sum; it is all-reduced in the tp group (Megatron's g) and
 * the replicated bias added once.  tp = 1: the plain matmul. */
static void row_parallel_forward(struct gpt *m, float *out, const void *inp,
                                 const void *w, const float *bias, size_t N,
                                 size_t IC, size_t OC)
{
    if (m->tp == 1) {
        gpt_op_matmul(m, out, GEMM_F32, inp, w, bias, N, IC, OC);
        return;
    }
    gpt_op_matmul(m, out, GEMM_F32, inp, w, NULL, N, IC, OC);
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

/* A layer's weight matrix as the products read it (h: its bf16 views) */
#define W(name) gpt_op_weight(m, w->name, h ? h->name : NULL)
/* Block l's activations as forward writes them (model.h: the slot's
 * kept tensors, the work layer's others); res2_work: res2 in the work
 * layer too, for a recomputation that must not touch the kept copy. */
static struct gpt_layer_acts layer_acts(const struct gpt *m,
                                        const struct gpt_acts *a, int l,
                                        int res2_work)
{
    const struct gpt_layer_acts *k = &a->la[l - m->l0], *w = &a->work;
    struct gpt_layer_acts r;
#define PICK(f) r.f = k->f ? k->f : w->f
    PICK(ln1); PICK(ln1_mean); PICK(ln1_rstd); PICK(qkv); PICK(att);
    PICK(atty); PICK(attproj); PICK(res1); PICK(ln2); PICK(ln2_mean);
    PICK(ln2_rstd); PICK(fch); PICK(fch_gelu); PICK(fcproj); PICK(res2);
#undef PICK
    if (res2_work)
        r.res2 = w->res2;
    return r;
}

/* One block forward: x (N,C) -> la->res2. */
static void block_forward(struct gpt *m, struct gpt_acts *a,
                          struct gpt_layer_acts *la, int l, const float *x,
                          const struct gpt_pos *pos)
{
    const struct gpt_layer_w *w = &m->lw[l - m->l0];
    const struct gpt_layer_h *h = m->lh ? &m->lh[l - m->l0] : NULL;
    size_t N = a->N, C = (size_t)m->cfg.n_embd, F = (size_t)m->F;
    size_t A = (size_t)m->nh * m->hd, Q = A + 2 * (size_t)m->nkv * m->hd;
    struct attn_shape s = attn_shape_of(m, a);
    enum gemm_type pt = gpt_act_type(m);

    gpt_op_layernorm(m, la->ln1, la->ln1_mean, la->ln1_rstd, x, w->ln1w,
                     w->ln1b, N, C);
    gpt_op_matmul(m, la->qkv, pt, la->ln1, W(wqkv), w->bqkv, N, C, Q);
    gpt_op_attention(m, a, la, &s);
    row_parallel_forward(m, la->attproj, la->atty, W(wo), w->bo, N, A, C);
    residual_dropout(m, a, la->res1, x, la->attproj, a->dC, pos, 1 + 2 * l);

    gpt_op_layernorm(m, la->ln2, la->ln2_mean, la->ln2_rstd, la->res1,
                     w->ln2w, w->ln2b, N, C);
    gpt_op_matmul(m, la->fch, pt, la->ln2, W(wfc), w->bfc, N, C, F);
    gpt_op_gelu(m, la->fch_gelu, la->fch, N * F);
    row_parallel_forward(m, la->fcproj, la->fch_gelu, W(wproj), w->bproj, N,
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
    TIMED(m, OPK_EMBEDDING, encoder_forward(e, a->inp, m->wte, m->wpe,
                                            (size_t)a->B, (size_t)a->T, C));
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
    if (m->first) {
        memcpy(a->inp, inp, N * sizeof(int32_t));
        gpt_emit(m, GPT_USE_FWD, -1);
        embed_forward(m, a, pos);
    }
    const float *x = a->emb;
    for (int l = m->l0; l < m->l1; l++) {
        struct gpt_layer_acts la = layer_acts(m, a, l, 0);
        gpt_emit(m, GPT_USE_FWD, l);
        block_forward(m, a, &la, l, x, pos);
        x = a->la[l - m->l0].res2;
        gpt_emit(m, GPT_PROGRESS, l); /* pipeline sends in flight move on */
    }
    if (!m->last)
        return 0.0;
    memcpy(a->tgt, tgt, N * sizeof(int32_t));
    gpt_emit(m, GPT_USE_FWD, -2);
    gpt_op_layernorm(m, a->lnf, a->lnf_mean, a->lnf_rstd, x, m->lnfw,
                     m->lnfb, N, C);
    gpt_op_matmul(m, a->logits, GEMM_F32, a->lnf,
                  gpt_op_weight(m, m->wte, m->wte_h), NULL, N, C, V);
    TIMED(m, OPK_LOSS, crossentropy_softmax_forward(a->losses, a->probs,
          a->logits, a->tgt, N, V));
    double sum = 0.0;
    for (size_t i = 0; i < N; i++)
        sum += a->losses[i];
    return sum;
}

/* ---- backward ----------------------------------------------------------- */

void gpt_emit(struct gpt *m, enum gpt_event ev, int layer)
{
    if (m->hook && (m->hook_final || ev >= GPT_PROGRESS))
        m->hook(m->hook_ctx, ev, layer);
}

/* Before block l's backward: the activations its slot did not keep, as
 * forward computed them (model.h: recomputation).  Selective: the
 * LayerNorms (outputs and statistics), attention and GELU from the kept
 * input, qkv, res1 and fch; full: the whole block from its input x. */
static void recompute(struct gpt *m, struct gpt_acts *a,
                      struct gpt_layer_acts *la, int l, const float *x,
                      const struct gpt_pos *pos)
{
    if (m->cfg.recompute == GPT_RECOMPUTE_NONE)
        return;
    double t0 = now_s();
    if (m->cfg.recompute == GPT_RECOMPUTE_FULL) {
        block_forward(m, a, la, l, x, pos);
    } else {
        const struct gpt_layer_w *w = &m->lw[l - m->l0];
        size_t N = a->N, C = (size_t)m->cfg.n_embd, F = (size_t)m->F;
        struct attn_shape s = attn_shape_of(m, a);
        gpt_op_layernorm(m, la->ln1, la->ln1_mean, la->ln1_rstd, x, w->ln1w,
                         w->ln1b, N, C);
        gpt_op_attention(m, a, la, &s);
        gpt_op_layernorm(m, la->ln2, la->ln2_mean, la->ln2_rstd, la->res1,
                         w->ln2w, w->ln2b, N, C);
        gpt_op_gelu(m, la->fch_gelu, la->fch, N * F);
    }
    m->recompute_time += now_s() - t0;
}

/* One block backward: a->dres holds d(res2) on entry, d(x) on exit. */
static void block_backward(struct gpt *m, struct gpt_acts *a,
                           const struct gpt_layer_acts *la, int l,
                           const float *x, const struct gpt_pos *pos)
{
    const struct gpt_layer_w *w = &m->lw[l - m->l0];
    const struct gpt_layer_h *h = m->lh ? &m->lh[l - m->l0] : NULL;
    const struct gpt_layer_w *g = &m->lg[l - m->l0];
    size_t N = a->N, C = (size_t)m->cfg.n_embd, F = (size_t)m->F;
    size_t A = (size_t)m->nh * m->hd, Q = A + 2 * (size_t)m->nkv * m->hd;
    struct attn_shape s = attn_shape_of(m, a);
    const float *dout;
    const void *d; /* an output gradient as the products read it */

    /* MLP branch */
    dout = branch_grad(m, a, a->dres, a->dC, pos, 2 + 2 * l);
    d = gpt_op_grad(m, a, dout, g->bproj, N, C);
    gpt_op_matmul_backward(m, l, a->dF1, 0, g->wproj, d, la->fch_gelu,
                           W(wproj), N, F, C);
    d = gpt_op_gelu_backward(m, a, la->fch, a->dF1, g->bfc, N, F);
    gpt_op_matmul_backward(m, l, a->dln, 0, g->wfc, d, la->ln2, W(wfc), N, C,
                           F);
    column_parallel_dinp(m, a->dln, N * C);
    TIMED(m, OPK_LAYERNORM, layernorm_backward(a->dres, g->ln2w, g->ln2b,
          a->dln, la->res1, w->ln2w, la->ln2_mean, la->ln2_rstd, N, C));

    /* attention branch */
    dout = branch_grad(m, a, a->dres, a->dC, pos, 1 + 2 * l);
    d = gpt_op_grad(m, a, dout, g->bo, N, C);
    gpt_op_matmul_backward(m, l, a->datty, 0, g->wo, d, la->atty, W(wo), N,
                           A, C);
    memset(a->dqkv, 0, N * Q * sizeof(float));
    gpt_op_attention_backward(m, a, la, &s);
    gpt_emit(m, GPT_PROGRESS, l);
    d = gpt_op_grad(m, a, a->dqkv, g->bqkv, N, Q);
    gpt_op_matmul_backward(m, l, a->dln, 0, g->wqkv, d, la->ln1, W(wqkv), N,
                           C, Q);
    column_parallel_dinp(m, a->dln, N * C);
    TIMED(m, OPK_LAYERNORM, layernorm_backward(a->dres, g->ln1w, g->ln1b,
          a->dln, x, w->ln1w, la->ln1_mean, la->ln1_rstd, N, C));
}

#undef W

/* The last stage's head: loss, LM head (tied wte), final LayerNorm;
 * leaves d(last block output) in a->dres. */
static void head_backward(struct gpt *m, struct gpt_acts *a, float dloss)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.vocab_size;
    memset(a->dlogits, 0, N * V * sizeof(float));
    TIMED(m, OPK_LOSS, crossentropy_softmax_backward(a->dlogits, a->probs,
          a->tgt, dloss, N, V));
    const void *d = gpt_op_grad(m, a, a->dlogits, NULL, N, V);
    gpt_op_matmul_backward(m, -1, a->dln, 0, m->dwte, d, a->lnf,
                           gpt_op_weight(m, m->wte, m->wte_h), N, C, V);
    memset(a->dres, 0, N * C * sizeof(float));
    TIMED(m, OPK_LAYERNORM, layernorm_backward(a->dres, m->dlnfw, m->dlnfb,
          a->dln, gpt_stage_output(m, a), m->lnfw, a->lnf_mean, a->lnf_rstd,
          N, C));
    gpt_emit(m, GPT_GRADS_HEAD, -1);
}

void gpt_backward(struct gpt *m, struct gpt_acts *a, float dloss,
                  const struct gpt_pos *pos)
{
    size_t C = (size_t)m->cfg.n_embd;
    if (m->last) {
        gpt_emit(m, GPT_USE_BWD, -2);
        head_backward(m, a, dloss);
        gpt_emit(m, GPT_USE_DONE, -2);
    }
    for (int l = m->l1 - 1; l >= m->l0; l--) {
        const float *x = l > m->l0 ? a->la[l - 1 - m->l0].res2 : a->emb;
        struct gpt_layer_acts la =
            layer_acts(m, a, l, m->cfg.recompute == GPT_RECOMPUTE_FULL);
        gpt_emit(m, GPT_USE_BWD, l);
        recompute(m, a, &la, l, x, pos);
        block_backward(m, a, &la, l, x, pos);
        gpt_emit(m, GPT_USE_DONE, l);
        gpt_emit(m, GPT_GRADS_LAYER, l);
    }
    if (m->first) {
        const float *de = branch_grad(m, a, a->dres, a->dC, pos, 0);
        gpt_emit(m, GPT_USE_BWD, -1);
        TIMED(m, OPK_EMBEDDING, encoder_backward(m->dwte, m->dwpe, de,
              a->inp, (size_t)a->B, (size_t)a->T, C));
        gpt_emit(m, GPT_USE_DONE, -1);
    }
    if (m->first || m->last)
        gpt_emit(m, GPT_GRADS_EMBED, -1); /* wte (and wpe) final */
}
