/*
 * model_ops.c - the fp32 / bf16 dispatch of the model's ops, timed by op
 * kind (contract in model_ops.h).
 */
#include "model_ops.h"

#include <string.h>

static int is_bf16(const struct gpt *m)
{
    return m->cfg.precision == GPT_BF16;
}

void gpt_op_layernorm(struct gpt *m, void *out, float *mean, float *rstd,
                      const float *x, const float *w, const float *b,
                      size_t N, size_t C)
{
    if (is_bf16(m))
        TIMED(m, OPK_LAYERNORM,
              layernorm_forward_bf16(out, mean, rstd, x, w, b, N, C));
    else
        TIMED(m, OPK_LAYERNORM,
              layernorm_forward(out, mean, rstd, x, w, b, N, C));
}

void gpt_op_matmul(struct gpt *m, void *out, enum gemm_type out_t,
                   const void *inp, const void *w, const float *bias,
                   size_t N, size_t C, size_t OC)
{
    if (is_bf16(m))
        TIMED(m, OPK_MATMUL,
              matmul_forward_bf16(out, out_t, inp, w, bias, N, C, OC));
    else
        TIMED(m, OPK_MATMUL, matmul_forward(out, inp, w, bias, N, C, OC));
}

void gpt_op_matmul_residual(struct gpt *m, float *out, const void *inp,
                            const void *w, const float *bias,
                            const float *res, size_t N, size_t C, size_t OC)
{
    TIMED(m, OPK_MATMUL,
          matmul_forward_residual(out, inp, w, bias, res, N, C, OC,
                                  gpt_act_type(m)));
}

const void *gpt_op_grad(struct gpt *m, struct gpt_acts *a, const float *dout,
                        float *db, size_t N, size_t OC)
{
    if (is_bf16(m)) {
        TIMED(m, OPK_CAST, bf16_round_colsum(a->dh, db, dout, N, OC));
        return a->dh;
    }
    if (db) /* the bias gradient, as matmul_backward computes it */
        TIMED(m, OPK_MATMUL,
              matmul_backward(NULL, NULL, db, dout, NULL, NULL, N, 0, OC));
    return dout;
}

/* dw's product of gpt_op_matmul_backward, then a chance to progress */
static void matmul_backward_dw(struct gpt *m, int l, float *dw,
                               const void *dout, const void *inp,
                               const void *w, size_t N, size_t C, size_t OC)
{
    int dw_acc = !(m->dw_fresh && l >= 0);
    TIMED(m, OPK_MATMUL, matmul_backward_products(NULL, 0, dw, dw_acc, dout,
                                                  inp, w, N, C, OC,
                                                  gpt_act_type(m)));
    gpt_emit(m, GPT_PROGRESS, l);
}

void gpt_op_matmul_backward(struct gpt *m, int l, float *dinp, int dinp_acc,
                            float *dw, const void *dout, const void *inp,
                            const void *w, size_t N, size_t C, size_t OC)
{
    matmul_backward_dw(m, l, dw, dout, inp, w, N, C, OC);
    TIMED(m, OPK_MATMUL, matmul_backward_products(dinp, dinp_acc, NULL, 0,
                                                  dout, inp, w, N, C, OC,
                                                  gpt_act_type(m)));
    gpt_emit(m, GPT_PROGRESS, l);
}

void gpt_op_matmul_backward_h(struct gpt *m, int l, bf16 *dinp, float *dw,
                              const void *dout, const void *inp,
                              const void *w, size_t N, size_t C, size_t OC)
{
    matmul_backward_dw(m, l, dw, dout, inp, w, N, C, OC);
    TIMED(m, OPK_MATMUL, matmul_backward_dinp_bf16(dinp, dout, w, N, C, OC));
    gpt_emit(m, GPT_PROGRESS, l);
}

void gpt_op_gelu(struct gpt *m, void *out, const void *inp, size_t n)
{
    if (is_bf16(m))
        TIMED(m, OPK_GELU, gelu_forward_bf16(out, inp, n));
    else
        TIMED(m, OPK_GELU, gelu_forward(out, inp, n));
}

const void *gpt_op_gelu_backward(struct gpt *m, struct gpt_acts *a,
                                 const void *inp, const float *dout,
                                 float *db, size_t N, size_t F)
{
    if (is_bf16(m)) {
        TIMED(m, OPK_GELU,
              gelu_backward_round_bf16(a->dh, db, inp, dout, N, F));
        return a->dh;
    }
    memset(a->dF2, 0, N * F * sizeof(float));
    TIMED(m, OPK_GELU, gelu_backward(a->dF2, inp, dout, N * F));
    return gpt_op_grad(m, a, a->dF2, db, N, F);
}

/* attention's wall time t, of which soft in the softmax */
static void attn_time(struct gpt *m, double t, double soft)
{
    soft = soft < t ? soft : t;
    m->op_time[OPK_SOFTMAX] += soft;
    m->op_time[OPK_ATTENTION] += t - soft;
}

void gpt_op_attention(struct gpt *m, struct gpt_acts *a,
                      struct gpt_layer_acts *la, const struct attn_shape *s)
{
    double soft = 0.0, t0 = now_s();
    struct attn_shape sp = *s;
    sp.softmax_s = &soft;
    sp.ws = a->attn_ws, sp.ws_slots = a->attn_ws_slots;
    /* the linear and sparse kernels are fp32 only (config.c refuses them
     * with precision=bf16) */
    if (s->kind == ATTN_LINEAR)
        attention_linear_forward(la->atty, la->att, a->datt, la->qkv, s);
    else if (s->kind == ATTN_SPARSE)
        attention_sparse_forward(la->atty, la->att, la->qkv, s);
    else if (is_bf16(m))
        attention_forward_bf16(la->atty, la->att, a->datt, la->qkv, &sp);
    else
        attention_forward(la->atty, la->att, la->qkv, &sp);
    attn_time(m, now_s() - t0, soft);
}

void gpt_op_attention_backward(struct gpt *m, struct gpt_acts *a,
                               const struct gpt_layer_acts *la,
                               const struct attn_shape *s)
{
    struct attn_shape sp = *s;
    double soft = 0.0;
    sp.softmax_s = &soft;
    sp.ws = a->attn_ws, sp.ws_slots = a->attn_ws_slots;
    if (s->kind != ATTN_FULL) { /* fp32 only, as in forward */
        double t0 = now_s();
        if (s->kind == ATTN_LINEAR)
            attention_linear_backward(a->dqkv, a->datt, a->datty, la->qkv,
                                      la->atty, la->att, s);
        else
            attention_sparse_backward(a->dqkv, a->datt, a->datty, la->qkv,
                                      la->att, s);
        attn_time(m, now_s() - t0, 0.0);
    } else if (is_bf16(m)) {
        /* the output projection's backward wrote datty in bf16 */
        double t0 = now_s();
        attention_backward_bf16(a->dqkv, a->datt, a->datt_h,
                                (const bf16 *)a->datty, la->qkv, la->att,
                                &sp);
        attn_time(m, now_s() - t0, soft);
    } else {
        double t0 = now_s();
        attention_backward(a->dqkv, a->datt, a->datty, la->qkv, la->att,
                           &sp);
        attn_time(m, now_s() - t0, soft);
    }
}
