/*
 * nonfinite.c - the loss window and the non-finite policy (nonfinite.h).
 */
#include "nonfinite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void loss_window_add(struct loss_window *w, double loss)
{
    w->v[w->head] = loss;
    w->head = (w->head + 1) % NF_WINDOW;
    if (w->n < NF_WINDOW)
        w->n++;
}

double loss_window_z(const struct loss_window *w, double loss)
{
    if (w->n < NF_MIN_SAMPLES || !isfinite(loss))
        return NAN;
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < w->n; i++)
        mean += w->v[i];
    mean /= w->n;
    for (int i = 0; i < w->n; i++)
        var += (w->v[i] - mean) * (w->v[i] - mean);
    double sd = sqrt(var / w->n);
    if (sd == 0.0)
        return loss == mean ? 0.0 : loss > mean ? INFINITY : -INFINITY;
    return (loss - mean) / sd;
}

int nf_policy_parse(const char *s, enum nf_policy *p)
{
    static const char *const names[] = {"skip", "rollback", "abort"};
    for (int i = 0; i < 3; i++)
        if (strcmp(s, names[i]) == 0) {
            *p = (enum nf_policy)i;
            return 0;
        }
    return -1;
}

void nf_init(struct nf_state *s, enum nf_policy policy, int patience)
{
    memset(s, 0, sizeof(*s));
    s->policy = policy;
    s->patience = patience > 0 ? patience : 1;
    s->rb_step = -1;
}

void nf_free(struct nf_state *s)
{
    free(s->skip);
    s->skip = NULL;
    s->nskip = s->cap = 0;
}

enum nf_action nf_after_step(struct nf_state *s, int64_t step, int flags)
{
    if (flags & NF_REPLAY)
        return NF_CONTINUE; /* skipped by plan, not a new failure */
    if (!flags) {
        s->run = 0;
        s->good_since_rb = 1;
        return NF_CONTINUE;
    }
    if (s->policy == NF_ABORT)
        return NF_DO_STOP;
    if (s->run++ == 0)
        s->run_first = step;
    s->run_last = step;
    if (s->run < s->patience)
        return NF_CONTINUE;
    return s->policy == NF_ROLLBACK ? NF_DO_ROLLBACK : NF_DO_STOP;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* step in the sorted list[0, n) */
static int nf_replay_skip_n(const int64_t *list, int n, int64_t step)
{
    return n > 0 && bsearch(&step, list, (size_t)n, sizeof(*list),
                            cmp_i64) != NULL;
}

int nf_rolled_back(struct nf_state *s, int64_t ck)
{
    int repeat = ck == s->rb_step || (s->rb_step >= 0 && !s->good_since_rb);
    if (repeat && s->rb_count >= s->patience)
        return 1;
    s->rb_count = repeat ? s->rb_count + 1 : 1;
    s->rb_step = ck;
    s->good_since_rb = 0;
    if (s->nskip + s->run > s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        while (cap < s->nskip + s->run)
            cap *= 2;
        int64_t *p = realloc(s->skip, (size_t)cap * sizeof(*p));
        if (!p)
            return -1;
        s->skip = p;
        s->cap = cap;
    }
    /* the run's failures: its steps not already listed (the others were
     * replays skipped by plan, which do not end a run); s->run of them.
     * Listed in order, merged after the sorted list, then sorted. */
    int n0 = s->nskip;
    for (int64_t st = s->run_first; s->run > 0 && st <= s->run_last &&
                                    s->nskip < s->cap; st++)
        if (!nf_replay_skip_n(s->skip, n0, st))
            s->skip[s->nskip++] = st;
    qsort(s->skip, (size_t)s->nskip, sizeof(*s->skip), cmp_i64);
    s->run = 0;
    return 0;
}

int nf_replay_skip(const struct nf_state *s, int64_t step)
{
    return nf_replay_skip_n(s->skip, s->nskip, step);
}

void nf_reason(int flags, char *buf, int len)
{
    static const struct { int f; const char *what; } r[] = {
        {NF_LOSS, "non-finite loss"}, {NF_GRAD, "non-finite gradient norm"},
        {NF_STATE, "non-finite compression residual"},
        {NF_SPIKE, "loss spike"}, {NF_REPLAY, "skipped batch (rollback)"},
    };
    int at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++)
        if ((flags & r[i].f) && at < len)
            at += snprintf(buf + at, (size_t)(len - at), "%s%s",
                           at ? ", " : "", r[i].what);
}
