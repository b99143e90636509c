/*
 * model_pass.c - the GPT forward and backward: wires the kernels (ops.c,
 * through model_ops.h, which times them by kind), tensor-parallel
 * reductions, dropout, activation recomputation and the events ZeRO and
 * the gradient buckets listen to.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model_ops.h"
#include "ops/ops.h"
#include "rng.h"
#include "tp.h"

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
    if (gpt_fuses_residual(m))
        gpt_op_matmul_residual(m, la->res1, la->atty, W(wo), w->bo, x, N,
                               A, C);
    else {
        row_parallel_forward(m, la->attproj, la->atty, W(wo), w->bo, N, A,
                             C);
        residual_dropout(m, a, la->res1, x, la->attproj, a->dC, pos,
                         1 + 2 * l);
    }

    gpt_op_layernorm(m, la->ln2, la->ln2_mean, la->ln2_rstd, la->res1,
                     w->ln2w, w->ln2b, N, C);
    gpt_op_matmul(m, la->fch, pt, la->ln2, W(wfc), w->bfc, N, C, F);
    gpt_op_gelu(m, la->fch_gelu, la->fch, N * F);
    if (gpt_fuses_residual(m))
        gpt_op_matmul_residual(m, la->res2, la->fch_gelu, W(wproj),
                               w->bproj, la->res1, N, F, C);
    else {
        row_parallel_forward(m, la->fcproj, la->fch_gelu, W(wproj),
                             w->bproj, N, F, C);
        residual_dropout(m, a, la->res2, la->res1, la->fcproj, a->dC, pos,
                         2 + 2 * l);
    }
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
                  gpt_op_weight(m, m->wte, m->wte_h), NULL, N, C, Vp);
    struct xent_opts xo = {m->cfg.label_smoothing, m->cfg.z_loss};
    TIMED(m, OPK_LOSS, xent_forward(a->losses, a->probs, a->lse, a->logits,
          a->tgt, N, V, Vp, pos->train ? &xo : NULL));
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
    if (m->cfg.precision == GPT_BF16 && s.kind == ATTN_FULL)
        /* attention's bf16 products read d(atty) rounded: rounded as the
         * product writes it, in datty's first half */
        gpt_op_matmul_backward_h(m, l, (bf16 *)a->datty, g->wo, d, la->atty,
                                 W(wo), N, A, C);
    else
        gpt_op_matmul_backward(m, l, a->datty, 0, g->wo, d, la->atty, W(wo),
                               N, A, C);
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
    size_t Vp = (size_t)gpt_vocab_padded(m->cfg.vocab_size);
    struct xent_opts xo = {m->cfg.label_smoothing, m->cfg.z_loss};
    memset(a->dlogits, 0, N * Vp * sizeof(float));
    TIMED(m, OPK_LOSS, xent_backward(a->dlogits, a->probs, a->lse, a->tgt,
          dloss, N, V, Vp, &xo));
    const void *d = gpt_op_grad(m, a, a->dlogits, NULL, N, Vp);
    gpt_op_matmul_backward(m, -1, a->dln, 0, m->dwte, d, a->lnf,
                           gpt_op_weight(m, m->wte, m->wte_h), N, C, Vp);
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
        TIMED(m, OPK_EMBEDDING, encoder_backward_doc(m->dwte, m->dwpe, de,
              a->inp, a->lo, (size_t)a->B, (size_t)a->T, C));
        gpt_emit(m, GPT_USE_DONE, -1);
    }
    if (m->first || m->last)
        gpt_emit(m, GPT_GRADS_EMBED, -1); /* wte (and wpe) final */
    m->dw_fresh = 0;
}
