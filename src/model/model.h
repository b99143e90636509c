/*
 * model.h - the GPT decoder: parameters described by the tensor table,
 * activations per micro-batch, forward and backward of one stage.
 *
 * Architecture (GPT-2): token + learned position embedding (dropout),
 * n_layer pre-LayerNorm blocks
 *     x = x + drop(attn(ln1(x)))      attn: Q,K,V projections with
 *     x = x + drop(mlp(ln2(x)))             n_kv_head kv heads, causal,
 *                                            optional sliding window
 *     mlp = proj(gelu(fc(x))), fc 4x wide
 * final LayerNorm, LM head tied to the token embedding, fused softmax +
 * cross-entropy.
 *
 * Parameters (global shapes; W (out, in), tp split in brackets):
 *   wte (Vp,C), wpe (T,C)                          [replicated]
 *     (Vp = gpt_vocab_padded(V) rows)
 *   h.L.ln1.w, h.L.ln1.b (C)                       [replicated]
 *   h.L.attn.wq (nh*hd,C)  wk, wv (nkv*hd,C)       [dim 0: heads]
 *   h.L.attn.bq (nh*hd)    bk, bv (nkv*hd)         [dim 0]
 *   h.L.attn.wo (C,nh*hd)                          [dim 1]
 *   h.L.attn.bo (C)                                [replicated]
 *   h.L.ln2.w, h.L.ln2.b (C)                       [replicated]
 *   h.L.mlp.wfc (4C,C), h.L.mlp.bfc (4C)           [dim 0]
 *   h.L.mlp.wproj (C,4C)                           [dim 1]
 *   h.L.mlp.bproj (C)                              [replicated]
 *   lnf.w, lnf.b (C)                               [replicated]
 * wq, wk, wv (and bq, bk, bv) are adjacent in the arena, so locally they
 * form one fused QKV matrix and the projection is one sgemm.
 * Tensor parallelism (Megatron): QKV and FC are column-parallel (this
 * rank's heads / FC rows), wo and wproj row-parallel.  Forward all-reduces
 * the row-parallel partial sums in the tp group, then adds the replicated
 * bias once; backward all-reduces the column-parallel layers' input
 * gradient before the LayerNorm backward.  One all-reduce each way per
 * attention and per MLP; everything else is replicated and computed
 * identically on every tp rank.
 * Init: weights N(0, 0.02), the residual projections wo and wproj
 * N(0, 0.02/sqrt(2 n_layer)), biases 0, LayerNorm weights 1.
 *
 * Precision (gpt_config.precision).  GPT_FP32: everything fp32.  GPT_BF16
 * (mixed precision): the parameters, their gradients and the AdamW
 * moments stay fp32 (the master weights); params_h is a bf16 copy of the
 * parameter arena, laid out by the same tensor table (tensor i at
 * params_h + tt.t[i].off), refreshed after every change of the parameters
 * (gpt_refresh_bf16, or adamw_update_bf16 per tensor; with ZeRO the
 * executor refreshes it from the all-gathered fp32 values: zero_exec.h).
 * Every matrix
 * product reads bf16 (weights from params_h, activations and output
 * gradients rounded once) and accumulates in fp32 (ops.h).  The
 * activations that only products read are saved in bf16, the others in
 * fp32: see gpt_layer_acts.
 */
#ifndef MPITRON_MODEL_H
#define MPITRON_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "bf16.h"
#include "tensor.h"

struct tp_ctx; /* parallel/tp.h: the tensor-parallel collectives */
struct model_shards; /* ckpt_io.h: what a ZeRO rank holds instead */

/* Activation recomputation: what a block keeps from forward to backward
 * (see gpt_layer_acts). */
enum gpt_recompute { GPT_RECOMPUTE_NONE, GPT_RECOMPUTE_SELECTIVE,
                     GPT_RECOMPUTE_FULL };

enum gpt_precision { GPT_FP32 = 0, GPT_BF16 = 1 };

struct gpt_config {
    int n_layer, n_embd, n_head, n_kv_head, seq_len, vocab_size;
    int attn_window;
    float dropout;
    float label_smoothing, z_loss; /* training loss only (ops.h xent) */
    int attn;                      /* enum attn_kind (ops.h) */
    int attn_block, attn_stride;   /* ATTN_SPARSE's pattern */
    int doc_mask; /* attention and positions stop at document starts
                     (gpt_pos.dstart) */
    enum gpt_precision precision;
    enum gpt_recompute recompute;
};

/* Rows of wte and columns of the logits: the vocabulary padded as llm.c
 * pads it (GPT-2's 50257 -> 50304), to a multiple of 128 when it is above
 * 256; smaller vocabularies (bytes, the tests') are not padded.  The
 * padded tokens never occur: the loss and sampling read the first
 * vocab_size logits only, and their wte rows get no gradient. */
static inline int gpt_vocab_padded(int V)
{
    return V > 256 ? (V + 127) / 128 * 128 : V;
}

/* Time spent per kind of op, seconds (what bench step splits by). */
enum op_kind {
    OPK_MATMUL,     /* linear layers and the LM head */
    OPK_ATTENTION,  /* attention's products (the rest of attention ...) */
    OPK_SOFTMAX,    /* ... its softmax and softmax backward */
    OPK_LAYERNORM, OPK_GELU,
    OPK_ELEMENTWISE,  /* residual adds, dropout, bias adds */
    OPK_CAST,       /* rounding output gradients to bf16 (with the bias
                       gradient's column sums); other roundings are fused
                       into the kernel that produces the tensor */
    OPK_LOSS, OPK_EMBEDDING, OPK_TP_COMM, OPK_COUNT
};
extern const char *const op_kind_names[OPK_COUNT];

struct gpt_layer_w { /* views into an arena (params or grads) */
    float *ln1w, *ln1b, *wqkv, *bqkv, *wo, *bo;
    float *ln2w, *ln2b, *wfc, *bfc, *wproj, *bproj;
};

struct gpt_layer_h { /* the matrices' views into params_h (bf16) */
    const bf16 *wqkv, *wo, *wfc, *wproj;
};

/* Events a backward pass reports, so that gradient reduction can start on
 * what is final and progress while the rest computes.  The GRADS events
 * come only from the step's last backward (hook_final); the others always.
 * The USE events bracket every use of a unit of parameters (ZeRO gathers
 * a unit before its use and reduces its gradient after): `layer` is the
 * block, or -1 for the embedding (wte, wpe) and -2 for the head (wte,
 * lnf), which share the embedding unit. */
enum gpt_event {
    GPT_GRADS_HEAD,   /* lnf.w, lnf.b final (wte is not: it is tied) */
    GPT_GRADS_LAYER,  /* every tensor of block `layer` final */
    GPT_GRADS_EMBED,  /* wpe and wte final */
    GPT_PROGRESS,     /* between kernels: a chance to progress comm */
    GPT_USE_FWD,      /* forward is about to read `layer`'s parameters */
    GPT_USE_BWD,      /* backward is about to read them and accumulate
                         into their gradients */
    GPT_USE_DONE,     /* that backward use is over */
};
typedef void (*gpt_hook_fn)(void *ctx, enum gpt_event ev, int layer);

struct gpt {
    struct gpt_config cfg;
    gpt_hook_fn hook;   /* NULL = none; called by gpt_backward when */
    void *hook_ctx;     /* hook_final is set (last micro-batch) */
    int hook_final;
    int tp, tp_rank;    /* tensor-parallel degree and index */
    struct tp_ctx *tpc; /* tp group (not owned; the trainer's); must be set
                           before forward/backward when tp > 1 */
    int l0, l1;         /* blocks [l0, l1) live on this stage */
    int first, last;    /* stage holds the embedding / the head */
    int nh, nkv, hd;    /* local heads, head dim */
    int F;              /* local MLP width */
    struct tensor_table tt;
    float *params, *grads, *m, *v; /* arenas, tt.total floats each (NULL
                                      where the owner keeps shards) */
    int grads_ext; /* grads is the owner's memory (gpt_attach_grads) */
    int params_ext; /* params is the owner's memory (gpt_attach_params) */
    int dw_fresh; /* the grads arena is zero (gpt_zero_grad ran) and no
                     backward has run since: the blocks' weight-gradient
                     products write instead of adding (oneDNN's sum
                     post-op costs them 5-7%); the same bits, 0 + x = x */
    const struct model_shards *shards; /* NULL: whole arenas; else the
                           ZeRO shards of the moments (and parameters) */
    struct gpt_layer_w *lw, *lg;   /* per local layer: param / grad views */
    float *wte, *wpe, *lnfw, *lnfb;     /* NULL when not on this stage */
    float *dwte, *dwpe, *dlnfw, *dlnfb;
    /* GPT_BF16 only (else NULL): the bf16 weight copy, tt.total values
     * laid out by the table (NULL too without a params arena: ZeRO-3
     * binds lh and wte_h to its bf16 working slots), and its views */
    bf16 *params_h;
    struct gpt_layer_h *lh;
    const bf16 *wte_h;
    double op_time[OPK_COUNT];
    double recompute_time; /* seconds recomputing activations in backward
                              (also counted in op_time by kind) */
};

/* Check the shape against the layout: n_embd % n_head, head and kv-head
 * counts divisible by tp, ...  Returns 0 or -1 with err naming the keys. */
int gpt_config_check(const struct gpt_config *c, int tp, char *err,
                     size_t errlen);

/* Build the table for this rank (tp shard, blocks [l0,l1)), allocate the
 * four arenas and initialise the parameters from seed.  Returns 0 or -1
 * (out of memory, err filled).  Free with gpt_free. */
int gpt_init(struct gpt *m, const struct gpt_config *c, int tp, int tp_rank,
             int l0, int l1, uint64_t seed, char *err, size_t errlen);
/* gpt_init allocating only the arenas named in `arenas` (GPT_ARENA_*);
 * the others stay NULL, with NULL views, for an owner that holds them in
 * another form (ZeRO's shards) and binds views with gpt_bind_unit.
 * Parameters are initialised only when their arena is allocated. */
enum { GPT_ARENA_PARAMS = 1, GPT_ARENA_GRADS = 2, GPT_ARENA_MOMENTS = 4,
       GPT_ARENA_ALL = 7 };
int gpt_init_arenas(struct gpt *m, const struct gpt_config *c, int tp,
                    int tp_rank, int l0, int l1, uint64_t seed, int arenas,
                    char *err, size_t errlen);
void gpt_free(struct gpt *m);
/* For a model built without GPT_ARENA_GRADS: the gradient arena is grads
 * (tt.total floats, zeroed, the caller's: gpt_free leaves it), or with
 * grads NULL a new arena of its own; every gradient view points into it.
 * 0, or -1 (out of memory, or the model has one already). */
int gpt_attach_grads(struct gpt *m, float *grads);
/* Move the parameter arena into params (tt.total floats, the caller's:
 * gpt_free leaves it): the values are copied, the model's own arena is
 * freed and every parameter view points into params.  For memory the dp
 * ranks share (ZeRO's gathers without messages).  0, or -1 (the model has
 * no parameter arena, or one attached already). */
int gpt_attach_params(struct gpt *m, float *params);

/* Refresh the bf16 weight copy from the fp32 parameters after they
 * changed (a checkpoint load, a broadcast); no-op in fp32.  The optimizer
 * refreshes per tensor as it updates (adamw_update_bf16). */
void gpt_refresh_bf16(struct gpt *m);
/* The same for the n values from arena offset off (a ZeRO unit whose fp32
 * parameters were just all-gathered). */
void gpt_refresh_bf16_range(struct gpt *m, size_t off, size_t n);
/* gpt_bind_unit for the bf16 copy: the products of block `layer` (or -1:
 * the LM head's wte) read their weights from h, the unit's bf16 values
 * laid out as the arena from the unit's first tensor on (ZeRO-3's
 * working slots).  No-op in fp32. */
void gpt_bind_unit_h(struct gpt *m, int layer, const bf16 *h);
/* Point the views of one unit at other memory: block `layer`, or -1 for
 * the embedding unit (wte, wpe, lnf of this stage).  params / grads are
 * laid out as the arena from the unit's first tensor on (NULL: leave
 * those views alone).  The arenas are not touched; gpt_free frees only
 * the arenas. */
void gpt_bind_unit(struct gpt *m, int layer, float *params, float *grads);

/* Parameters in the global model (all stages, unsharded). */
int64_t gpt_num_params(const struct gpt_config *c);
/* Model FLOPs per token for training: 6 N + 12 n_layer seq_len n_embd,
 * N the parameters the products read (all but the position table). */
double gpt_flops_per_token(const struct gpt_config *c);

/*
 * Activations of one micro-batch of B sequences of length T on this
 * stage, plus backward scratch.  Owned by the caller; allocate once.
 *
 * The tensors marked [p] are read by matrix products only (and fch by
 * GELU, which rounds its input the same way in forward and backward):
 * they are float in fp32 and bf16 in bf16 precision, hence void *.
 * Saving them in bf16 is safe because the bf16 value IS the value the
 * forward computed with: the products read exactly these bits, and
 * backward differentiates that computation.  Everything else stays fp32:
 * the residual stream (res1, res2, emb: LayerNorm's input, whose
 * statistics and backward need full precision), LayerNorm's mean and rstd,
 * the row-parallel outputs that the tp all-reduce sums (attproj, fcproj),
 * and the loss's probabilities.
 */
/*
 * Recomputation (gpt_config.recompute) decides which of a block's
 * activations a slot keeps; the others live in one shared work layer
 * (scratch) that forward writes and backward recomputes:
 *   none       everything is kept
 *   selective  qkv and fch (the products' outputs backward reads), res1
 *              and res2 (the residual stream) are kept; LayerNorm outputs
 *              and statistics, the attention probabilities and output and
 *              GELU's output are recomputed from them before the block's
 *              backward (no products but attention's own, no tp traffic)
 *   full       only res2 (the next block's input) is kept: the whole
 *              block is recomputed from its input (its products, dropout
 *              masks and tp all-reduces again) before its backward
 * The recomputation runs the same kernels on the same inputs, so the
 * gradients are bitwise those of none.  attproj and fcproj are read by
 * no backward: kept only under none.  Without tensor parallelism and
 * dropout (gpt_fuses_residual) they do not exist: the output projections
 * add the residual stream in their epilogue and write res1 and res2
 * directly (gemm.h, gemm_add), bitwise the separate add.
 */
struct gpt_layer_acts { /* one block's saved activations */
    void *ln1;                        /* [p] (N,C) */
    float *ln1_mean, *ln1_rstd;       /* (N) (N) */
    void *qkv;                        /* [p] (N,(nh+2nkv)*hd) */
    void *att;                        /* [p] (B,nh,T,T) probabilities; the
                                         linear and sparse kernels' fp32
                                         state (model.c attn_sizes) */
    void *atty;                       /* [p] (N,nh*hd) */
    float *attproj, *res1;            /* (N,C) */
    void *ln2;                        /* [p] (N,C) */
    float *ln2_mean, *ln2_rstd;       /* (N) (N) */
    void *fch, *fch_gelu;             /* [p] (N,F) */
    float *fcproj, *res2;             /* (N,C) */
};

struct gpt_acts {
    int B, T;
    size_t N;            /* B*T */
    int32_t *inp, *tgt;  /* (B,T) copies of the micro-batch tokens */
    int32_t *lo;         /* (B,T) copy of gpt_pos.dstart; NULL: none */
    float *emb;          /* (N,C) embedding output, after dropout */
    struct gpt_layer_acts *la; /* per local layer */
    void *lnf;                        /* [p] (N,C) */
    float *lnf_mean, *lnf_rstd;       /* (N) (N) */
    float *logits, *probs, *losses;   /* (N,Vp) (N,Vp) (N) */
    float *lse;                       /* (N) log-sum-exp, for the z-loss */
    /* backward scratch, shared by all layers */
    float *dres, *dC, *dln;  /* (N,C) */
    float *dqkv, *datty;     /* (N,Q) (N,nh*hd) */
    float *datt;             /* (B,nh,T,T); also the bf16 forward's scores */
    float *dF1, *dF2;        /* (N,F) */
    float *dlogits;          /* (N,Vp) */
    /* bf16 only: an output gradient rounded for the products, (N, max of
     * C, F, Q, nh*hd, Vp), and attention's rounded dS (B,nh,T,T) */
    bf16 *dh, *datt_h;
    /* bf16 only: the workspace of attention's products on VDPBF16PS
     * (attn_shape.ws), attn_ws_slots threads' worth; NULL where they
     * cannot run there */
    uint32_t *attn_ws;
    size_t attn_ws_slots;
    struct gpt_layer_acts work; /* recompute: the tensors slots do not
                                   keep (scratch, shared) */
    float *mem;              /* the one allocation behind all of these */
    size_t bytes;            /* its size, for the memory report */
    size_t saved_bytes;      /* of which saved activations (the rest is
                                scratch and the token copies) */
    size_t cap, ncap;        /* bytes of mem, tokens of inp (and tgt) */
};
/* Allocate activations for micro-batches of B sequences of length T
 * (T <= seq_len), with their own backward scratch.  Head buffers (lnf,
 * probs, logits) only on the last stage.  Returns 0 or -1 (out of
 * memory).  Free with gpt_acts_free. */
int gpt_acts_init(struct gpt_acts *a, const struct gpt *m, int B, int T);
/* The same, but the scratch (dres ... dlogits, logits) is owner's: for
 * the several micro-batches a pipeline holds at once, of which only one
 * runs at a time.  owner must outlive a.  bytes counts a's own memory. */
int gpt_acts_init_shared(struct gpt_acts *a, const struct gpt *m, int B,
                         int T, const struct gpt_acts *owner);
void gpt_acts_free(struct gpt_acts *a);
/* The bytes gpt_acts_init_shared would allocate for B x T (with an owner
 * lending the scratch when shared), and *saved of them the saved
 * activations; allocates nothing of that size.  -1 (SIZE_MAX): out of
 * memory for the count itself. */
size_t gpt_acts_bytes(const struct gpt *m, int B, int T, int shared,
                      size_t *saved);
/* Re-cut a's memory for micro-batches of B sequences of length T with
 * B * T no more than it was built for (sequence-length warm-up: shorter
 * sequences, more of them; the T x T attention buffers shrink).  owner
 * as for gpt_acts_init_shared (its scratch must be re-cut first).
 * Allocates nothing; aborts if the shape does not fit (a caller bug). */
void gpt_acts_reshape(struct gpt_acts *a, const struct gpt *m, int B, int T,
                      const struct gpt_acts *owner);

/* Where a micro-batch sits, for counter-based dropout. */
struct gpt_pos {
    int64_t step;   /* optimizer step */
    int64_t seq0;   /* global index of the first sequence in the batch */
    uint64_t seed;
    int train;      /* 0: no dropout (validation, sampling) */
    const int32_t *dstart; /* (B,T): each token's document start within
                              its sequence (doc_mask), or NULL */
};

/* Forward of this stage's part of the model on one micro-batch.  The
 * first stage embeds inp (B,T); any other stage reads its input from
 * a->emb (N,C), where the caller has put the previous stage's output.
 * The last stage computes the loss against tgt (B,T) and returns the SUM
 * of the per-token losses; other stages return 0 and leave their output
 * at gpt_stage_output.  inp / tgt may be NULL where unused. */
double gpt_forward(struct gpt *m, struct gpt_acts *a, const int32_t *inp,
                   const int32_t *tgt, const struct gpt_pos *pos);
/* Backward of the micro-batch last run through gpt_forward with the same
 * acts; accumulates into m->grads.  dloss = d(loss)/d(one token's loss),
 * 1 / (tokens in the global batch) for the mean.  A stage that is not the
 * last reads d(its output) from a->dres; a stage that is not the first
 * leaves d(its input) in a->dres (scratch: copy it before the next
 * backward). */
void gpt_backward(struct gpt *m, struct gpt_acts *a, float dloss,
                  const struct gpt_pos *pos);
/* This stage's output activation (N,C) after gpt_forward (the last
 * block's residual stream; the input itself on a stage without blocks):
 * a pointer into a, valid until a's next forward. */
const float *gpt_stage_output(const struct gpt *m, const struct gpt_acts *a);

void gpt_zero_grad(struct gpt *m);

/* 1 when the blocks' output projections add the residual in their
 * epilogue (no tp all-reduce and no dropout between the product and the
 * add), so attproj and fcproj are not allocated */
int gpt_fuses_residual(const struct gpt *m);

/* The table of the whole unsharded model (all blocks, tp = 1), without
 * arenas: the list of names and global shapes a checkpoint holds.
 * Returns 0 or -1 (out of memory).  Free with tensor_table_free. */
int gpt_global_table(const struct gpt_config *c, struct tensor_table *tt);

/* One stage's plan without allocating anything: the tensor table of tp
 * rank 0's shard of blocks [l0, l1) (the first stage holds the embedding,
 * the last the head), and the bytes of one micro-batch of B sequences'
 * saved activations and of the backward scratch, as gpt_init and
 * gpt_acts_init lay them out.  For the performance model and layout=auto.
 * Returns 0 or -1 (out of memory); free tt with tensor_table_free. */
int gpt_stage_plan(const struct gpt_config *c, int tp, int l0, int l1, int B,
                   struct tensor_table *tt, size_t *saved_bytes,
                   size_t *scratch_bytes);

#endif
