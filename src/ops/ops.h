/*
 * ops.h - the kernels of the GPT model, each a _forward/_backward pair.
 *
 * Conventions (llm.c's, see STYLE.md):
 *  - argument order: outputs, saved-for-backward, inputs, weights, sizes;
 *  - a weight matrix w is (OC, C) row-major and a linear layer computes
 *    out = inp @ w^T + bias;
 *  - every _backward ACCUMULATES (+=) into the gradients it is given,
 *    parameter gradients and input gradients alike.  The caller zeroes
 *    activation gradients per micro-batch and parameter gradients per step;
 *    this is what makes micro-batch accumulation and residual branches free;
 *  - N = B*T rows; all sizes are size_t;
 *  - matrix products go through the GEMM front door (gemm.h: OpenBLAS or
 *    oneDNN), attention's per-head products too; element-wise kernels are
 *    written so gcc vectorises them and are split over OpenMP threads when
 *    the runtime has more than one;
 *  - the _bf16 variants at the end are the same ops for bf16 mixed
 *    precision (see there).
 *
 * None of these functions allocates or fails: shapes are the caller's
 * contract.
 */
#ifndef MPITRON_OPS_H
#define MPITRON_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "bf16.h"
#include "gemm.h"

/* out (B,T,C) = wte[inp[b,t]] + wpe[t]; inp (B,T); wte (V,C); wpe (>=T,C) */
void encoder_forward(float *out, const int32_t *inp, const float *wte,
                     const float *wpe, size_t B, size_t T, size_t C);
/* dwte (V,C) +=, dwpe (>=T,C) +=; dout (B,T,C); inp (B,T) */
void encoder_backward(float *dwte, float *dwpe, const float *dout,
                      const int32_t *inp, size_t B, size_t T, size_t C);
/* The same with positions counted from each token's document start:
 * wpe[t - lo[b,t]]; lo (B,T) as in attn_shape, NULL = wpe[t] */
void encoder_forward_doc(float *out, const int32_t *inp, const int32_t *lo,
                         const float *wte, const float *wpe, size_t B,
                         size_t T, size_t C);
void encoder_backward_doc(float *dwte, float *dwpe, const float *dout,
                          const int32_t *inp, const int32_t *lo, size_t B,
                          size_t T, size_t C);

/* out (N,C); mean, rstd (N) saved; inp (N,C); w, b (C); eps = 1e-5 */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, size_t N, size_t C);
/* dinp (N,C) +=, dw (C) +=, db (C) +=; dout (N,C); inp (N,C); w (C);
 * mean, rstd (N) from the forward */
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                        const float *inp, const float *w, const float *mean,
                        const float *rstd, size_t N, size_t C);

/* out (N,OC) = inp (N,C) @ w (OC,C)^T + bias (OC); bias may be NULL */
void matmul_forward(float *out, const float *inp, const float *w,
                    const float *bias, size_t N, size_t C, size_t OC);
/* dinp (N,C) += dout @ w; dw (OC,C) += dout^T @ inp; dbias (OC) += column
 * sums of dout.  Any of dinp, dw, dbias may be NULL (not wanted). */
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                     const float *inp, const float *w, size_t N, size_t C,
                     size_t OC);

/*
 * Causal self-attention with grouped query heads and an optional sliding
 * window.  qkv (B,T,(nh+2*nkv)*hd) holds, per token, the nh query heads,
 * then the nkv key heads, then the nkv value heads, each hd wide.  Query
 * head h reads key/value head h / (nh/nkv): nkv == nh is multi-head,
 * 1 < nkv < nh grouped-query, nkv == 1 multi-query.  Token t attends to
 * positions s with s <= t and, when window > 0, t - s < window.
 * Scores are scaled by 1/sqrt(hd).
 */
enum attn_kind {
    ATTN_FULL,   /* softmax attention (with the window, if any) */
    ATTN_LINEAR, /* causal linear attention, elu + 1 features */
    ATTN_SPARSE, /* block-sparse softmax attention */
};

struct attn_shape {
    size_t B, T;   /* batch, sequence length */
    size_t nh;     /* query heads (on this rank) */
    size_t nkv;    /* key/value heads (on this rank); nh % nkv == 0 */
    size_t hd;     /* head dimension */
    size_t window; /* 0 = full causal */
    double *softmax_s; /* NULL, or += thread-seconds spent in the softmax
                          and its backward (profiling) */
    enum attn_kind kind;
    size_t block, stride; /* ATTN_SPARSE: attn_block, attn_stride */
    const int32_t *lo;    /* (B,T) or NULL: token t sees positions >= lo
                             (its document's first token), on top of the
                             causal (and window, sparse) rule */
    /* bf16 full attention: a workspace of attention_bf16_ws_words(s,
     * ws_slots) words runs the per-head products on VDPBF16PS (dpbf16.h)
     * with at most ws_slots threads; NULL: through gemm.h.  A forward and
     * its backward must both have one or both not (the kernels differ in
     * which masked entries of att they write). */
    uint32_t *ws;
    size_t ws_slots;
};
/* Words of the bf16 attention's workspace for `slots` threads, 0 when the
 * products cannot run on VDPBF16PS here (no AVX512_BF16, an odd hd). */
size_t attention_bf16_ws_words(const struct attn_shape *s, size_t slots);
/* out (B,T,nh*hd); att (B,nh,T,T) softmax probabilities saved for backward
 * (entries outside the causal window are 0); qkv as above */
void attention_forward(float *out, float *att, const float *qkv,
                       const struct attn_shape *s);
/* dqkv (B,T,(nh+2*nkv)*hd) +=; scratch (B,nh,T,T) is overwritten;
 * dout (B,T,nh*hd); qkv, att from the forward */
void attention_backward(float *dqkv, float *scratch, const float *dout,
                        const float *qkv, const float *att,
                        const struct attn_shape *s);

/*
 * Causal linear attention (ops_attention_linear.c): with phi(x) = elu(x)
 * + 1 applied to every query and key element,
 *   out_t = sum_{lo(t)<=s<=t} (phi(q_t).phi(k_s)) v_s
 *           / (sum_{lo(t)<=s<=t} phi(q_t).phi(k_s) + 1e-6),
 * computed with running sums in O(T hd^2) per head (no T x T matrix; no
 * window).  den (B,nh,T) is saved for backward, out is read back there;
 * scratch holds attention_linear_scratch(s) floats.
 */
size_t attention_linear_scratch(const struct attn_shape *s);
void attention_linear_forward(float *out, float *den, float *scratch,
                              const float *qkv, const struct attn_shape *s);
/* dqkv +=; scratch overwritten; dout, out (B,T,nh*hd), den, qkv from the
 * forward */
void attention_linear_backward(float *dqkv, float *scratch, const float *dout,
                               const float *qkv, const float *out,
                               const float *den, const struct attn_shape *s);

/*
 * Block-sparse attention (ops_attention_sparse.c), softmax over the keys
 * a query sees: positions are cut into blocks of s->block; query block i
 * sees key block j <= i when j >= i - 1 (its own block, causally, and the
 * one before: local) or j % s->stride == 0 (every stride-th block, block 0
 * included: global, strided).  Scaled by 1/sqrt(hd).  The probabilities
 * of the visible blocks are saved packed, attention_sparse_floats(s)
 * floats (att); the backward's scratch is as large.
 */
size_t attention_sparse_floats(const struct attn_shape *s);
void attention_sparse_forward(float *out, float *att, const float *qkv,
                              const struct attn_shape *s);
void attention_sparse_backward(float *dqkv, float *scratch, const float *dout,
                               const float *qkv, const float *att,
                               const struct attn_shape *s);

/* GELU, tanh approximation (GPT-2's); out, inp (n) */
void gelu_forward(float *out, const float *inp, size_t n);
/* dinp (n) += gelu'(inp) * dout */
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* out (n) = a + b */
void residual_forward(float *out, const float *a, const float *b, size_t n);
/* da (n) += dout; db (n) += dout */
void residual_backward(float *da, float *db, const float *dout, size_t n);

/* Fused softmax + cross-entropy.  losses (N) = -log softmax(logits)[target];
 * probs (N,V) saved; logits (N,V); targets (N), each in [0,V). */
void crossentropy_softmax_forward(float *losses, float *probs,
                                  const float *logits, const int32_t *targets,
                                  size_t N, size_t V);
/* dlogits (N,V) += (probs - onehot(target)) * dloss, dloss being d(total
 * loss)/d(loss of one row), e.g. 1 / (tokens in the global batch) */
void crossentropy_softmax_backward(float *dlogits, const float *probs,
                                   const int32_t *targets, float dloss,
                                   size_t N, size_t V);

/*
 * The training loss: softmax cross-entropy with label smoothing and
 * z-loss.  A row of logits is ld >= V floats wide; columns [V, ld) are
 * vocabulary padding, ignored (their probabilities are 0, their gradients
 * untouched).  With p = softmax(logits[0, V)), lse = log sum_v exp(l_v),
 * target t, smoothing s and z-loss coefficient z:
 *   loss = (1 - s) (-log p_t) + s mean_v(-log p_v) + z lse^2
 *        = lse - (1 - s) l_t - s mean_v(l_v) + z lse^2
 *   dloss/dl_v = p_v (1 + 2 z lse) - (1 - s) [v == t] - s / V
 * (label smoothing: Szegedy et al. 2016; z-loss: PaLM, Chowdhery et al.
 * 2022).  s = z = 0 is plain cross-entropy, computed exactly as
 * crossentropy_softmax_*.
 */
struct xent_opts {
    float label_smoothing; /* s in [0, 1) */
    float z_loss;          /* z >= 0 */
};
/* losses (N); probs (N,ld) saved (0 in the padding); lse (N) saved (may
 * be NULL when z = 0); logits (N,ld); targets (N) in [0,V); o NULL =
 * plain cross-entropy */
void xent_forward(float *losses, float *probs, float *lse,
                  const float *logits, const int32_t *targets, size_t N,
                  size_t V, size_t ld, const struct xent_opts *o);
/* dlogits (N,ld) += dloss/dlogits * dloss, columns [0,V) only */
void xent_backward(float *dlogits, const float *probs, const float *lse,
                   const int32_t *targets, float dloss, size_t N, size_t V,
                   size_t ld, const struct xent_opts *o);

/*
 * Inverted dropout with a counter-based mask: element (i, j) of the (N,C)
 * block is kept when rng_uniform(key, (row0 + i) * ld + col0 + j) >= p and
 * then scaled by 1/(1-p).  row0 is the global row (token) index of the first
 * row, ld the global row width, col0 the global column of column 0, so the
 * mask does not depend on how the batch or the columns are sharded.  The
 * backward regenerates the mask; nothing is stored.  p == 0 copies.
 */
void dropout_forward(float *out, const float *inp, float p, uint64_t key,
                     uint64_t row0, size_t ld, size_t col0, size_t N,
                     size_t C);
/* dinp (N,C) += mask * dout / (1-p) */
void dropout_backward(float *dinp, const float *dout, float p, uint64_t key,
                      uint64_t row0, size_t ld, size_t col0, size_t N,
                      size_t C);

/*
 * bf16 mixed precision.  The same ops where a matrix product reads the
 * result: that tensor is stored in bf16, rounded once where it is produced
 * (bf16.h's rules), and the products accumulate in fp32 (gemm.h).  Every
 * other computation is fp32: LayerNorm statistics, GELU's and softmax's
 * arithmetic, the loss, every sum and every parameter gradient.  Backward
 * treats a rounding as the identity (the gradient of a rounded tensor is
 * passed on unchanged) and reads the saved bf16 tensors, so the gradients
 * are those of the computation the forward really did.
 */

/* layernorm_forward with out (N,C) rounded to bf16 */
void layernorm_forward_bf16(bf16 *out, float *mean, float *rstd,
                            const float *inp, const float *w, const float *b,
                            size_t N, size_t C);

/* out (N,OC) = inp (N,C) @ w (OC,C)^T + bias (OC, may be NULL); inp and w
 * bf16; out fp32 (out_type GEMM_F32) or rounded to bf16 (GEMM_BF16) */
void matmul_forward_bf16(void *out, int out_type, const bf16 *inp,
                         const bf16 *w, const float *bias, size_t N, size_t C,
                         size_t OC);
/* out (N,OC) = res (N,OC) + (inp (N,C) @ w (OC,C)^T + bias (OC)): a
 * residual connection added in the product's epilogue, bitwise
 * residual_forward(out, res, product + bias); inp and w of type t, out
 * and res fp32 and distinct */
void matmul_forward_residual(float *out, const void *inp, const void *w,
                             const float *bias, const float *res, size_t N,
                             size_t C, size_t OC, enum gemm_type t);
/* The two products of matmul_backward alone, operands (dout, inp, w) of
 * type t, fp32 accumulators: dw (OC,C) += dout^T @ inp (dw_acc; else =,
 * no zeroing needed), then dinp (N,C) = dout @ w, added (dinp_acc) or
 * overwriting dinp.  dinp or dw may be NULL (not wanted). */
void matmul_backward_products(float *dinp, int dinp_acc, float *dw,
                              int dw_acc,
                              const void *dout, const void *inp,
                              const void *w, size_t N, size_t C, size_t OC,
                              enum gemm_type t);
/* dinp (N,C) = bf16(dout @ w), dout and w bf16: matmul_backward_products'
 * dinp rounded to nearest even as the product writes it (the same bits as
 * writing fp32 and rounding with bf16_round_colsum), for an input gradient
 * that only bf16 products read next. */
void matmul_backward_dinp_bf16(bf16 *dinp, const void *dout, const void *w,
                               size_t N, size_t C, size_t OC);
/* out (N,C) = bf16(x); colsum (C) += column sums of x in fp32, rows in
 * order (a bias gradient; NULL = not wanted).  The rounding of an output
 * gradient for the products of matmul_backward_products. */
void bf16_round_colsum(bf16 *out, float *colsum, const float *x, size_t N,
                       size_t C);

/* out (n) = bf16(gelu(inp)), inp (n) bf16, arithmetic in fp32 */
void gelu_forward_bf16(bf16 *out, const bf16 *inp, size_t n);
/* dinp (n) += gelu'(inp) * dout, inp bf16 */
void gelu_backward_bf16(float *dinp, const bf16 *inp, const float *dout,
                        size_t n);
/* GELU's backward fused with the rounding of its result for the products
 * that follow (the MLP's first layer): g = gelu'(inp) * dout in fp32, out
 * (N,F) = bf16(g), colsum (F) += column sums of g, rows in order (the FC
 * bias gradient).  inp (N,F) bf16, dout (N,F).  One pass instead of three
 * (gelu_backward_bf16 into a zeroed buffer, then bf16_round_colsum). */
void gelu_backward_round_bf16(bf16 *out, float *colsum, const bf16 *inp,
                              const float *dout, size_t N, size_t F);

/* attention_forward with qkv, out and the saved probabilities att (all
 * shapes as there) in bf16; scratch (B,nh,T,T) fp32 holds the scores and
 * the softmax before att is rounded. */
void attention_forward_bf16(bf16 *out, bf16 *att, float *scratch,
                            const bf16 *qkv, const struct attn_shape *s);
/* attention_backward with bf16 dout (rounded), qkv and att; dqkv fp32 +=;
 * scratch (B,nh,T,T) fp32 and scratch_h (B,nh,T,T) bf16 are
 * overwritten. */
void attention_backward_bf16(float *dqkv, float *scratch, bf16 *scratch_h,
                             const bf16 *dout, const bf16 *qkv,
                             const bf16 *att, const struct attn_shape *s);

#endif
