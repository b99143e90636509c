/*
 * sched.c - learning-rate schedules (formulas in optim.h).
 *
 * Everything is computed in double and rounded to float once at the end,
 * so the value at a step does not depend on how many steps came before.
 */
#include "optim.h"

#include <math.h>
#include <string.h>

static const double sched_pi = 3.14159265358979323846;

static const struct {
    const char *name;
    enum lr_kind kind;
} sched_names[] = {
    {"constant", LR_CONSTANT}, {"cosine", LR_COSINE},
    {"linear", LR_LINEAR},     {"onecycle", LR_ONECYCLE},
    {"cyclic", LR_CYCLIC},
};

/* Exact, case-sensitive match of the names above.  On an unknown (or
 * NULL) name returns -1 and leaves *kind untouched. */
int lr_kind_parse(const char *name, enum lr_kind *kind)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < sizeof sched_names / sizeof sched_names[0]; i++)
        if (strcmp(name, sched_names[i].name) == 0) {
            *kind = sched_names[i].kind;
            return 0;
        }
    return -1;
}

/* Warm-up value at 0-based step s < warmup. */
static double sched_warmup(const struct lr_sched *s, int64_t step)
{
    double lr = s->lr, frac = (double)(step + 1) / (double)s->warmup;
    if (s->kind == LR_ONECYCLE) {
        double lo = lr / 25.0;
        return lo + (lr - lo) * (1.0 - cos(sched_pi * frac)) / 2.0;
    }
    return lr * frac;
}

/* Triangular wave after warm-up: k = steps since the warm-up ended;
 * lr at k = 0, min_lr at k = cycle, lr at k = 2 cycle, ... */
static double sched_cyclic(const struct lr_sched *s, int64_t k)
{
    int64_t c = s->cycle > 0 ? s->cycle : 1;
    int64_t ph = k % (2 * c);
    double lr = s->lr, lo = s->min_lr;
    if (ph <= c)
        return lr + (lo - lr) * (double)ph / (double)c;
    return lo + (lr - lo) * (double)(ph - c) / (double)c;
}

/*
 * Learning rate at 0-based step `step`; pure function of (*s, step).
 * Edge cases: warmup <= 0 means no warm-up; a negative step is treated as
 * 0; p is clamped to [0, 1], so steps <= warmup (or a step past `steps`)
 * gives min_lr after the warm-up for the decaying schedules; cycle <= 0
 * is treated as 1.
 */
float lr_at(const struct lr_sched *s, int64_t step)
{
    if (step < 0)
        step = 0;
    int64_t warmup = s->warmup > 0 ? s->warmup : 0;
    if (step < warmup)
        return (float)sched_warmup(s, step);

    int64_t span = s->steps - warmup;
    if (span < 1)
        span = 1;
    double p = (double)(step - warmup) / (double)span;
    if (p > 1.0)
        p = 1.0;
    double lr = s->lr, lo = s->min_lr;
    switch (s->kind) {
    case LR_CONSTANT:
        return s->lr;
    case LR_COSINE:
    case LR_ONECYCLE:
        return (float)(lo + (lr - lo) * (1.0 + cos(sched_pi * p)) / 2.0);
    case LR_LINEAR:
        return (float)(lr + (lo - lr) * p);
    case LR_CYCLIC:
        return (float)sched_cyclic(s, step - warmup);
    }
    return s->lr;
}
