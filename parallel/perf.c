/*
 * perf.c - the performance model's formulas (see perf.h).
 */
#include "perf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double perf_p2p(double bytes, struct perf_link l)
{
    return l.alpha + bytes * l.beta;
}

double perf_ring_allreduce(int p, double bytes, struct perf_link l)
{
    if (p <= 1)
        return 0.0;
    return 2.0 * (p - 1) * l.alpha + 2.0 * (p - 1) / p * bytes * l.beta;
}

double perf_rhd_allreduce(int p, double bytes, struct perf_link l)
{
    if (p <= 1)
        return 0.0;
    int q = 1, steps = 0;
    while (2 * q <= p) {
        q *= 2;
        steps++;
    }
    double t = 2.0 * steps * l.alpha + 2.0 * (q - 1) / q * bytes * l.beta;
    if (q < p) /* fold in, then hand the result back */
        t += 2.0 * (l.alpha + bytes * l.beta);
    return t;
}

/* A pipelined chain over r ranks in k pieces. */
static double chain(int r, double bytes, int k, struct perf_link l)
{
    if (r <= 1)
        return 0.0;
    return (r - 1 + k - 1) * (l.alpha + bytes / k * l.beta);
}

double perf_hier_allreduce(int nodes, int per_node, double bytes,
                           struct perf_link intra, struct perf_link inter)
{
    const int k = 8;
    double ph[3] = {chain(per_node, bytes, k, intra),
                    perf_ring_allreduce(nodes, bytes, inter),
                    chain(per_node, bytes, k, intra)};
    double mx = 0.0, sum = 0.0;
    for (int i = 0; i < 3; i++) {
        sum += ph[i];
        mx = ph[i] > mx ? ph[i] : mx;
    }
    return mx + (sum - mx) / k;
}

double perf_allgather(int p, double msg_bytes, struct perf_link l)
{
    if (p <= 1)
        return 0.0;
    return (p - 1) * (l.alpha + msg_bytes * l.beta);
}

int perf_fit_line(const double *n, const double *t, int k, double *a,
                  double *b)
{
    if (k < 2)
        return -1;
    double sn = 0, st = 0, snn = 0, snt = 0;
    for (int i = 0; i < k; i++) {
        sn += n[i];
        st += t[i];
        snn += n[i] * n[i];
        snt += n[i] * t[i];
    }
    double den = k * snn - sn * sn;
    if (!(fabs(den) > 0.0))
        return -1;
    *b = (k * snt - sn * st) / den;
    *a = (st - *b * sn) / k;
    if (*a < 0.0) { /* through the origin */
        *a = 0.0;
        *b = snt / snn;
    }
    if (*b < 0.0)
        *b = 0.0;
    return 0;
}

struct perf_link perf_link_from_ring(int p, double a, double b)
{
    struct perf_link l = {0.0, 0.0};
    if (p >= 2) {
        l.alpha = a / (2.0 * (p - 1));
        l.beta = b * p / (2.0 * (p - 1));
    }
    return l;
}

/* ---- the pipeline as a discrete-event simulation ---------------------- */

struct sim {
    int p, m;
    struct pp_schedule *sc;
    int *pc;          /* next action per stage */
    double *t;        /* clock per stage */
    double *act, *grad; /* arrival at stage s of micro-batch i: [s*m + i];
                           < 0 = not sent yet */
};

/* Run stage s as far as its inputs allow; returns actions done. */
static int sim_stage(struct sim *S, int s, const double *f, const double *b,
                     double xfer)
{
    const struct pp_schedule *sc = &S->sc[s];
    int done = 0, m = S->m;
    while (S->pc[s] < sc->n) {
        const struct pp_action *a = &sc->a[S->pc[s]];
        int i = a->mb;
        double in;
        switch (a->op) {
        case PP_FWD:
            in = s > 0 ? S->act[s * m + i] : 0.0;
            if (in < 0.0)
                return done;
            S->t[s] = (in > S->t[s] ? in : S->t[s]) + f[s];
            break;
        case PP_BWD:
            in = s < S->p - 1 ? S->grad[s * m + i] : 0.0;
            if (in < 0.0)
                return done;
            S->t[s] = (in > S->t[s] ? in : S->t[s]) + b[s];
            break;
        case PP_SEND_ACT:
            S->act[(s + 1) * m + i] = S->t[s] + xfer;
            break;
        case PP_SEND_GRAD:
            S->grad[(s - 1) * m + i] = S->t[s] + xfer;
            break;
        case PP_RECV_ACT:
        case PP_RECV_GRAD:
            break;
        }
        S->pc[s]++;
        done++;
    }
    return done;
}

static int sim_run(struct sim *S, const double *f, const double *b,
                   double xfer, char *err, size_t errlen)
{
    for (;;) {
        int progress = 0, left = 0;
        for (int s = 0; s < S->p; s++) {
            progress += sim_stage(S, s, f, b, xfer);
            left += S->pc[s] < S->sc[s].n;
        }
        if (!left)
            return 0;
        if (!progress) {
            snprintf(err, errlen, "pipeline simulation: the schedule "
                     "deadlocks (p=%d m=%d)", S->p, S->m);
            return -1;
        }
    }
}

int perf_pipeline(enum pp_kind kind, int p, int m, const double *f,
                  const double *b, double xfer, double *stage_end,
                  double *makespan, double *bubble, char *err,
                  size_t errlen)
{
    struct sim S = {.p = p, .m = m};
    int rc = -1;
    if (p < 1 || m < 1) {
        snprintf(err, errlen, "pipeline model: bad p=%d m=%d", p, m);
        return -1;
    }
    S.sc = calloc((size_t)p, sizeof(*S.sc));
    S.pc = calloc((size_t)p, sizeof(int));
    S.t = calloc((size_t)p, sizeof(double));
    S.act = malloc((size_t)p * m * sizeof(double));
    S.grad = malloc((size_t)p * m * sizeof(double));
    if (!S.sc || !S.pc || !S.t || !S.act || !S.grad) {
        snprintf(err, errlen, "pipeline model: out of memory");
        goto out;
    }
    for (size_t i = 0; i < (size_t)p * m; i++)
        S.act[i] = S.grad[i] = -1.0;
    for (int s = 0; s < p; s++)
        if (pp_schedule_build(&S.sc[s], kind, p, s, m, 0, err, errlen) < 0)
            goto out;
    if (sim_run(&S, f, b, xfer, err, errlen) < 0)
        goto out;
    double span = 0.0, busy = 0.0;
    for (int s = 0; s < p; s++) {
        span = S.t[s] > span ? S.t[s] : span;
        busy += m * (f[s] + b[s]);
        if (stage_end)
            stage_end[s] = S.t[s];
    }
    *makespan = span;
    *bubble = span > 0.0 ? 1.0 - busy / (p * span) : 0.0;
    if (*bubble < 1e-12) /* round-off of a pipeline without idle time */
        *bubble = 0.0;
    rc = 0;
out:
    for (int s = 0; S.sc && s < p; s++)
        pp_schedule_free(&S.sc[s]);
    free(S.sc);
    free(S.pc);
    free(S.t);
    free(S.act);
    free(S.grad);
    return rc;
}

double perf_buckets_exposed(int nb, const double *ready, const double *cost,
                            double bwd_end, double *busy)
{
    double t = -HUGE_VAL, sum = 0.0;
    for (int i = 0; i < nb; i++) {
        double start = ready[i] > t ? ready[i] : t;
        t = start + cost[i];
        sum += cost[i];
    }
    if (busy)
        *busy = sum;
    return nb > 0 && t > bwd_end ? t - bwd_end : 0.0;
}

double perf_ring_half(int p, double bytes, struct perf_link l)
{
    return 0.5 * perf_ring_allreduce(p, bytes, l);
}

double perf_gather_exposed(int n, const double *ag, const double *use,
                           int ahead)
{
    double g_end = 0.0, u_end = 0.0, u_start = 0.0, sum = 0.0;
    for (int k = 0; k < n; k++) {
        double g0 = ahead && k > 0 && u_start > g_end ? u_start : g_end;
        g_end = g0 + ag[k];
        u_start = u_end > g_end ? u_end : g_end;
        u_end = u_start + use[k];
        sum += use[k];
    }
    return u_end - sum;
}

int perf_step(const struct perf_step_in *in, struct perf_step_out *out,
              char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int p = in->p;
    double *f = calloc((size_t)(p > 0 ? p : 1) * 3, sizeof(double));
    if (!f) {
        snprintf(err, errlen, "step model: out of memory");
        return -1;
    }
    double *b = f + p, *end = f + 2 * p;
    for (int s = 0; s < p; s++) {
        f[s] = in->st[s].f;
        b[s] = in->st[s].b;
    }
    int rc = perf_pipeline(in->kind, p, in->m, f, b, in->xfer, end,
                           &out->pipeline, &out->bubble, err, errlen);
    out->zero = in->zero;
    if (rc < 0) {
        free(f);
        return -1;
    }
    double dp_end = 0.0;
    for (int s = 0; s < p; s++) {
        const struct perf_stage *st = &in->st[s];
        /* the last backward of stage s spans [end - b, end] */
        double ex = perf_buckets_exposed(st->nb, st->ready, st->cost, st->b,
                                         NULL);
        double e = end[s] + ex;
        dp_end = e > dp_end ? e : dp_end;
        out->optim = st->optim > out->optim ? st->optim : out->optim;
    }
    free(f);
    out->comm_exposed = dp_end - out->pipeline + in->tie + in->small +
                        out->zero;
    out->step = dp_end + in->tie + in->small + out->zero + out->optim;
    out->compute = in->m * (in->st[0].f + in->st[0].b) + in->st[0].optim;
    return 0;
}
