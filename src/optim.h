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
