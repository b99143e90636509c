/*
 * model.c - the GPT parameter table, its arenas and views (fp32 and the
 * bf16 copy), and the activation buffers.  Forward and backward are
 * model_pass.c; the kernels are in ops.c.
 */
#include "model.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model_ops.h"
#include "ops/ops.h"
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
    /* N without the position table: a row of it is added to each token,
     * no product reads it (nanoGPT's estimate_mfu leaves it out too) */
    double n = (double)gpt_num_params(c) - (double)c->seq_len * c->n_embd;
    return 6.0 * n + 12.0 * c->n_layer * (double)c->seq_len * c->n_embd;
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
        rc |= add(m, -1, "wte", gpt_vocab_padded(c->vocab_size), C, -1, 1,
                  std, 0) < 0;
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

int gpt_attach_grads(struct gpt *m, float *grads)
{
    if (m->grads)
        return -1;
    m->grads_ext = grads != NULL;
    m->grads = grads ? grads : tensor_arena_alloc(m->tt.total);
    if (!m->grads)
        return -1;
    for (int l = m->l0; l < m->l1; l++)
        layer_views(m, m->grads, 0, l, &m->lg[l - m->l0]);
    outer_views(m, NULL, m->grads, 0);
    return 0;
}

int gpt_attach_params(struct gpt *m, float *params)
{
    if (!m->params || m->params_ext || !params)
        return -1;
    memcpy(params, m->params, m->tt.total * sizeof(float));
    free(m->params);
    m->params = params;
    m->params_ext = 1;
    for (int l = m->l0; l < m->l1; l++)
        layer_views(m, m->params, 0, l, &m->lw[l - m->l0]);
    outer_views(m, m->params, NULL, 0);
    return 0;
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
    if (!m->params_ext)
        free(m->params);
    if (!m->grads_ext)
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
    if (m->grads) {
        memset(m->grads, 0, m->tt.total * sizeof(float));
        m->dw_fresh = 1;
    }
}

/* ---- activations ------------------------------------------------------- */

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

/* A block's activations, as bits of a mask. */
enum {
    A_LN1, A_LN1_MEAN, A_LN1_RSTD, A_QKV, A_ATT, A_ATTY, A_ATTPROJ, A_RES1,
    A_LN2, A_LN2_MEAN, A_LN2_RSTD, A_FCH, A_FCH_GELU, A_FCPROJ, A_RES2,
    A_ALL = (1u << (A_RES2 + 1)) - 1
};

int gpt_fuses_residual(const struct gpt *m)
{
    return m->tp == 1 && m->cfg.dropout == 0.0f;
}

/* the activations a block has at all: all but the projections' outputs
 * when the residual add is fused into them */
static unsigned exist_mask(const struct gpt *m)
{
    return gpt_fuses_residual(m) ? A_ALL & ~(1u << A_ATTPROJ | 1u << A_FCPROJ)
                                 : A_ALL;
}

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
        return exist_mask(m);
    }
}

static unsigned work_mask(const struct gpt *m)
{
    unsigned w = exist_mask(m) & ~kept_mask(m);
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
 * in the precision's type.  att is [p] for the full kernel; the linear
 * and sparse kernels' state (fp32 only, config.c) stays float. */
static void carve_layer(struct gpt_layer_acts *la, const struct gpt *m,
                        const struct gpt_acts *a, unsigned mask,
                        struct carver *cv)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    size_t Q = (size_t)(m->nh + 2 * m->nkv) * m->hd, A = (size_t)m->nh * m->hd;
    size_t F = (size_t)m->F;
    size_t TT, DTT;
    attn_sizes(m, (size_t)a->B, (size_t)a->T, &TT, &DTT);
    size_t hsz = m->cfg.precision == GPT_BF16 ? sizeof(bf16) : sizeof(float);
    size_t asz = m->cfg.attn == ATTN_FULL ? hsz : sizeof(float);
#define L(bit, ptr, n, sz) \
    ((ptr) = (mask >> (bit)) & 1u ? carve(cv, (n), (sz)) : NULL)
    L(A_LN1, la->ln1, N * C, hsz);
    L(A_LN1_MEAN, la->ln1_mean, N, sizeof(float));
    L(A_LN1_RSTD, la->ln1_rstd, N, sizeof(float));
    L(A_QKV, la->qkv, N * Q, hsz);
    L(A_ATT, la->att, TT, asz);
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
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    size_t V = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
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
        a->lse = CF(N);
    }
}

/* Backward (and forward) scratch, shared by the slots of a pipeline. */
static void carve_scratch(struct gpt_acts *a, const struct gpt *m,
                          struct carver *cv)
{
    size_t N = a->N, C = (size_t)m->cfg.n_embd;
    size_t Q = (size_t)(m->nh + 2 * m->nkv) * m->hd, A = (size_t)m->nh * m->hd;
    size_t F = (size_t)m->F, V = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
    size_t TT, DTT;
    attn_sizes(m, (size_t)a->B, (size_t)a->T, &TT, &DTT);
    a->dres = CF(N * C);
    a->dC = CF(N * C);
    a->dln = CF(N * C);
    a->dqkv = CF(N * Q);
    a->datty = CF(N * A);
    a->datt = CF(DTT);
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
        a->datt_h = carve(cv, DTT, sizeof(bf16));
        struct attn_shape s = attn_shape_bt(m, (size_t)a->B, (size_t)a->T,
                                            NULL);
        size_t slots = (size_t)omp_get_max_threads();
        size_t words = s.kind == ATTN_FULL
                           ? attention_bf16_ws_words(&s, slots) : 0;
        a->attn_ws = words ? carve(cv, words, sizeof(uint32_t)) : NULL;
        a->attn_ws_slots = words ? slots : 0;
    }
    carve_layer(&a->work, m, a, work_mask(m), cv);
}
#undef CF

/* Point every buffer of a into base (NULL: only count) for its B, T:
 * the saved tensors, then the scratch unless owner lends it.  Returns
 * the bytes of the whole and *saved those of the saved part. */
static size_t carve_acts(struct gpt_acts *a, const struct gpt *m, void *base,
                         const struct gpt_acts *owner, size_t *saved)
{
    struct carver cv = {base, 0};
    carve_saved(a, m, &cv);
    *saved = cv.off;
    if (owner) {
        a->dres = owner->dres, a->dC = owner->dC, a->dln = owner->dln;
        a->dqkv = owner->dqkv, a->datty = owner->datty;
        a->datt = owner->datt, a->dF1 = owner->dF1, a->dF2 = owner->dF2;
        a->logits = owner->logits, a->dlogits = owner->dlogits;
        a->dh = owner->dh, a->datt_h = owner->datt_h;
        a->attn_ws = owner->attn_ws, a->attn_ws_slots = owner->attn_ws_slots;
        a->work = owner->work;
    } else {
        carve_scratch(a, m, &cv);
    }
    return cv.off;
}

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
    size_t saved, total = gpt_acts_bytes(&g, B, c->seq_len, 0, &saved);
    if (total == (size_t)-1)
        return -1;
    *saved_bytes = saved + 3 * (size_t)B * c->seq_len * sizeof(int32_t);
    *scratch_bytes = total - *saved_bytes;
    return rc;
}

int gpt_acts_init_shared(struct gpt_acts *a, const struct gpt *m, int B,
                         int T, const struct gpt_acts *owner)
{
    memset(a, 0, sizeof(*a));
    size_t N = (size_t)B * T, saved;
    size_t nl = (size_t)(m->l1 - m->l0);
    a->B = B;
    a->T = T;
    a->N = N;
    a->la = calloc(nl ? nl : 1, sizeof(*a->la));
    a->inp = calloc(3 * N, sizeof(int32_t)); /* inp, tgt, document starts */
    if (!a->la || !a->inp) {
        gpt_acts_free(a);
        return -1;
    }
    size_t total = carve_acts(a, m, NULL, owner, &saved); /* count first */
    a->mem = tensor_arena_alloc((total + sizeof(float) - 1) / sizeof(float));
    if (!a->mem) {
        gpt_acts_free(a);
        return -1;
    }
    a->tgt = a->inp + N;
    a->bytes = total + 3 * N * sizeof(int32_t);
    a->saved_bytes = saved;
    a->cap = total;
    a->ncap = N;
    carve_acts(a, m, a->mem, owner, &saved);
    return 0;
}

void gpt_acts_reshape(struct gpt_acts *a, const struct gpt *m, int B, int T,
                      const struct gpt_acts *owner)
{
    size_t N = (size_t)B * T, saved;
    a->B = B;
    a->T = T;
    a->N = N;
    size_t total = carve_acts(a, m, NULL, owner, &saved);
    if (N > a->ncap || total > a->cap) {
        fprintf(stderr, "mpitron: activations of %d x %d do not fit those "
                "of %zu tokens\n", B, T, a->ncap);
        abort();
    }
    carve_acts(a, m, a->mem, owner, &saved);
}

size_t gpt_acts_bytes(const struct gpt *m, int B, int T, int shared,
                      size_t *saved)
{
    struct gpt_acts a, owner;
    memset(&a, 0, sizeof(a));
    memset(&owner, 0, sizeof(owner));
    size_t nl = (size_t)(m->l1 - m->l0);
    a.B = B;
    a.T = T;
    a.N = (size_t)B * T;
    a.la = calloc(nl ? nl : 1, sizeof(*a.la));
    if (!a.la)
        return (size_t)-1;
    size_t total = carve_acts(&a, m, NULL, shared ? &owner : NULL, saved);
    free(a.la);
    return total + 3 * a.N * sizeof(int32_t);
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
