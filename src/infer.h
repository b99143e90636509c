/*
 * infer.h - incremental (one token at a time) forward with a KV cache,
 * for generation.  The cache holds keys and values of positions
 * [0, pos) for every layer: a step costs O(pos) attention instead of
 * recomputing the whole prefix.
 */
#ifndef MPITRON_INFER_H
#define MPITRON_INFER_H

#include "model/model.h"

struct infer {
    const struct gpt *m;
    int T;          /* cache capacity = seq_len */
    float *k, *v;   /* (L, T, nkv*hd) */
    float *x, *ln, *qkv, *atty, *tmp, *fch, *fcg, *att, *mean, *rstd;
    float *logits;  /* (V) */
    float *S, *z;   /* attn=linear: per layer and kv head, the running
                       sums phi(k) v^T (hd, hd) and phi(k) (hd) */
};

/* For a whole single-stage model (tp = 1).  Returns 0 or -1 (no memory).
 * Free with infer_free. */
int infer_init(struct infer *s, const struct gpt *m);
void infer_free(struct infer *s);

/* Forward token at position pos (0 <= pos < seq_len), reading the cache
 * for positions < pos and adding pos to it (pos 0 starts it afresh);
 * s->logits receives the next token's logits.  Every attention kind of
 * the model: full (and its window), linear (the running sums instead of
 * the cache: O(hd^2) per token), sparse (the visible blocks). */
void infer_step(struct infer *s, int token, int pos);

#endif
