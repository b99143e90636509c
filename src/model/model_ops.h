/*
 * model_ops.h - the model's view of the ops (internal to model.c and its
 * helpers): one call per op that picks the fp32 or the bf16 kernel by the
 * model's precision (model.h) and adds its time to the op kind it belongs
 * to (gpt.op_time).  A [p] tensor (model.h: read by products only) is
 * float in fp32 and bf16 in bf16 precision, hence void *.
 *
 * This is the one place where precision changes what runs: the model's
 * forward and backward (model.c) are the same code for both, and so will
 * be anything that re-runs them (activation recomputation) or moves the
 * weights (ZeRO: the bf16 copy is gpt.params_h, laid out by the same
 * tensor table as the fp32 arena).
 */
#ifndef MPITRON_MODEL_OPS_H
#define MPITRON_MODEL_OPS_H

#include "gemm.h"
#include "log.h"
#include "model.h"
#include "ops/ops.h"

#define TIMED(m, kind, call)                                                  \
    do {                                                                      \
        double t0_ = now_s();                                                 \
        call;                                                                 \
        (m)->op_time[kind] += now_s() - t0_;                                  \
    } while (0)

/* The type of [p] tensors: GEMM_F32 or GEMM_BF16. */
static inline enum gemm_type gpt_act_type(const struct gpt *m)
{
    return m->cfg.precision == GPT_BF16 ? GEMM_BF16 : GEMM_F32;
}

/* The weight a product reads: w32 in fp32, its bf16 copy w16 in bf16. */
static inline const void *gpt_op_weight(const struct gpt *m, const float *w32,
                                        const bf16 *w16)
{
    return m->cfg.precision == GPT_BF16 ? (const void *)w16
                                        : (const void *)w32;
}

/* Report ev to the model's hook (model.c). */
void gpt_emit(struct gpt *m, enum gpt_event ev, int layer);

/* layernorm_forward; out [p] */
void gpt_op_layernorm(struct gpt *m, void *out, float *mean, float *rstd,
                      const float *x, const float *w, const float *b,
                      size_t N, size_t C);
/* out (N,OC) = inp [p] (N,C) @ w^T (+ bias); out of type out_t (GEMM_BF16
 * only in bf16 precision) */
void gpt_op_matmul(struct gpt *m, void *out, enum gemm_type out_t,
                   const void *inp, const void *w, const float *bias,
                   size_t N, size_t C, size_t OC);
/* out (N,OC) = res + inp [p] (N,C) @ w^T + bias, fp32 (ops.h
 * matmul_forward_residual) */
void gpt_op_matmul_residual(struct gpt *m, float *out, const void *inp,
                            const void *w, const float *bias,
                            const float *res, size_t N, size_t C, size_t OC);
/* An output gradient dout (N,OC) made ready for the backward products:
 * db (OC) += its column sums (the bias gradient; NULL = none), and the
 * operand returned: dout itself in fp32, dout rounded into a->dh in bf16
 * (valid until a->dh is next written). */
const void *gpt_op_grad(struct gpt *m, struct gpt_acts *a, const float *dout,
                        float *db, size_t N, size_t OC);
/* matmul_backward's two products with a chance to progress communication
 * (gpt_emit GPT_PROGRESS for block l) after each: dw (OC,C) += dout^T inp,
 * then dinp (N,C) = dout @ w, added when dinp_acc, else overwritten.
 * dout is an operand from gpt_op_grad or gpt_op_gelu_backward. */
void gpt_op_matmul_backward(struct gpt *m, int l, float *dinp, int dinp_acc,
                            float *dw, const void *dout, const void *inp,
                            const void *w, size_t N, size_t C, size_t OC);
/* The same with dinp written in bf16 (matmul_backward_dinp_bf16): an input
 * gradient only bf16 products read next (attention's d(atty)). */
void gpt_op_matmul_backward_h(struct gpt *m, int l, bf16 *dinp, float *dw,
                              const void *dout, const void *inp,
                              const void *w, size_t N, size_t C, size_t OC);
/* gelu_forward: out, inp [p] (n) */
void gpt_op_gelu(struct gpt *m, void *out, const void *inp, size_t n);
/* GELU's backward into the MLP's first layer: g = gelu'(inp [p]) * dout
 * (N,F), db (F) += column sums of g, and g returned as the operand of the
 * FC products (in a->dF2 for fp32, rounded into a->dh for bf16, in one
 * fused pass). */
const void *gpt_op_gelu_backward(struct gpt *m, struct gpt_acts *a,
                                 const void *inp, const float *dout,
                                 float *db, size_t N, size_t F);
/* attention of the block whose activations are la: la->qkv -> la->atty,
 * la->att saved; a's scratch used (bf16: a->datt holds the scores).  Time
 * split between OPK_ATTENTION (products) and OPK_SOFTMAX. */
void gpt_op_attention(struct gpt *m, struct gpt_acts *a,
                      struct gpt_layer_acts *la, const struct attn_shape *s);
/* a->dqkv += d(qkv) from a->datty: fp32, or in bf16 (full attention) the
 * bf16 gradient gpt_op_matmul_backward_h wrote at its start */
void gpt_op_attention_backward(struct gpt *m, struct gpt_acts *a,
                               const struct gpt_layer_acts *la,
                               const struct attn_shape *s);

/* Attention's shape for a B x T micro-batch (lo: document starts). */
static inline struct attn_shape attn_shape_bt(const struct gpt *m, size_t B,
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

#endif
