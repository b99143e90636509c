/*
 * optim.h - AdamW, global-norm clipping and learning-rate schedules.
 */
#ifndef MPITRON_OPTIM_H
#define MPITRON_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "bf16.h"

struct adamw_hp {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t t; /* 1-based step number, for bias correction */
};

/*
 * One AdamW step (decoupled weight decay, Loshchilov & Hutter) over n
 * elements, with gradients pre-scaled by grad_scale (the clip factor):
 *   g = grad * grad_scale
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd_i * p )
 * where wd_i = weight_decay when decay != 0, else 0.
 * Vectorised; split over OpenMP threads.
 */
void adamw_update(float *param, const float *grad, float *m, float *v,
                  size_t n, const struct adamw_hp *hp, float grad_scale,
                  int decay);

/*
 * LAMB (You et al. 2020): AdamW's moments and update direction, scaled
 * per tensor by the trust ratio ||p|| / ||u||:
 *   u = mhat / (sqrt(vhat) + eps) + wd_i p       (mhat, vhat as AdamW)
 *   p -= lr * r * u,   r = ||p|| / ||u||, or 1 when either norm is 0
 * Two passes, so that a tensor split over ranks can sum its squares
 * first: lamb_moments updates m, v and adds sum p^2 and sum u^2 to
 * *pp, *uu (in double, chunked by n alone: the same bits for any thread
 * count); lamb_apply recomputes u from m, v, p and steps.
 */
void lamb_moments(const float *param, const float *grad, float *m, float *v,
                  size_t n, const struct adamw_hp *hp, float grad_scale,
                  int decay, double *pp, double *uu);
void lamb_apply(float *param, const float *m, const float *v, size_t n,
                const struct adamw_hp *hp, int decay, float ratio);
/* The trust ratio from the two (global) sums of squares. */
float lamb_ratio(double pp, double uu);

/*
 * Adam with the second moment frozen (1-bit Adam's compression stage,
 * Tang et al. 2021): v is no longer updated, its bias correction is the
 * one of step t_freeze, and the first moment follows
 *   is_momentum = 0:  m = b1 m + (1 - b1) s g          (in = g)
 *   is_momentum = 1:  m = b1 m + s (in - b1 m)         (in = the new
 *                     momentum b1 m + (1 - b1) g, already formed and
 *                     all-reduced; s scales its gradient part)
 *   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t_freeze)) + eps)
 *               + wd_i p )
 * with s = grad_scale (the clip factor).
 */
void frozen_v_update(float *param, const float *in, float *m, const float *v,
                     size_t n, const struct adamw_hp *hp, float grad_scale,
                     int decay, int64_t t_freeze, int is_momentum);

/* Layer-wise learning-rate decay: the factor of a tensor of block
 * `layer` of L (-1: not in a block; embed: the token/position
 * embedding): decay^(L-1-layer) for blocks, decay^L for the embeddings,
 * 1 for the rest (the final LayerNorm of the head). */
float lr_layer_scale(int layer, int embed, int L, float decay);

/* adamw_update that also refreshes half (n), the bf16 copy of param that
 * mixed precision's products read: half = bf16(param) after the update,
 * written while the chunk is still in cache. */
void adamw_update_bf16(float *param, bf16 *half, const float *grad, float *m,
                       float *v, size_t n, const struct adamw_hp *hp,
                       float grad_scale, int decay);

/* Sum of squares of x (n), accumulated in double. */
double sumsq(const float *x, size_t n);

/* Clip factor for a global gradient norm: min(1, max_norm / norm);
 * max_norm <= 0 disables clipping (returns 1). */
float clip_scale(double norm, float max_norm);

/*
 * Learning rate at 0-based step s (all schedules share the warm-up):
 *   s < warmup:   lr * (s+1) / warmup, except onecycle (below)
 *   then, with p = (s - warmup) / max(1, steps - warmup) in [0,1]:
 *   constant      lr
 *   cosine        min_lr + (lr - min_lr) * (1 + cos(pi p)) / 2
 *   linear        lr + (min_lr - lr) * p
 *   onecycle      Smith's 1cycle with cosine phases: warm-up rises from
 *                 lr/25 to lr by half a cosine; then falls to min_lr by
 *                 half a cosine (the cosine formula above)
 *   cyclic        triangular wave between lr and min_lr: starts at lr,
 *                 reaches min_lr after `cycle` steps, lr again after
 *                 2*cycle, ...
 */
enum lr_kind { LR_CONSTANT, LR_COSINE, LR_LINEAR, LR_ONECYCLE, LR_CYCLIC };

struct lr_sched {
    enum lr_kind kind;
    float lr, min_lr;
    int64_t warmup, steps, cycle;
};

/* Parse a schedule name; returns 0 or -1 for an unknown name. */
int lr_kind_parse(const char *name, enum lr_kind *kind);
float lr_at(const struct lr_sched *s, int64_t step);

#endif
