/*
 * pp.c - pipeline schedules (GPipe, 1F1B), stage partitions and the
 * point-to-point link between stages (see pp.h).
 *
 * Tags: a message of micro-batch mb in direction grad (0 activation,
 * 1 gradient) carries tag 2 * mb + grad, so every micro-batch in flight
 * between the same pair of stages has its own tag.  MPI guarantees
 * MPI_TAG_UB >= 32767, hence the limit of PP_MAX_MB micro-batches per
 * step; pp_schedule_build rejects more and pp_link_init checks
 * MPI_TAG_UB.  Other point-to-point traffic on the pp
 * communicator must keep out of tags [0, 2 * PP_MAX_MB).
 */
#include "pp.h"

#include "phase.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PP_MAX_MB 16384 /* tags 0 .. 2 * PP_MAX_MB - 1 <= 32767 */

/* ---- kinds ------------------------------------------------------------ */

int pp_kind_parse(const char *s, enum pp_kind *k)
{
    if (!s)
        return -1;
    if (strcmp(s, "gpipe") == 0) {
        *k = PP_GPIPE;
        return 0;
    }
    if (strcmp(s, "1f1b") == 0) {
        *k = PP_1F1B;
        return 0;
    }
    return -1;
}

const char *pp_kind_name(enum pp_kind k)
{
    switch (k) {
    case PP_GPIPE:
        return "gpipe";
    case PP_1F1B:
        return "1f1b";
    }
    return "?";
}

/* ---- schedules -------------------------------------------------------- */

/* The list under construction plus what decides where moves go. */
struct emit {
    struct pp_schedule *sc;
    int first, last, fwd_only;
};

static void emit_op(struct emit *e, enum pp_op op, int mb)
{
    e->sc->a[e->sc->n].op = op;
    e->sc->a[e->sc->n].mb = mb;
    e->sc->n++;
}

/* PP_RECV_ACT of mb, if this stage receives and mb exists. */
static void emit_recv_act(struct emit *e, int mb)
{
    if (!e->first && mb < e->sc->m)
        emit_op(e, PP_RECV_ACT, mb);
}

/* FWD i, its send, the receive of its gradient; forward-only lists then
 * free the single slot and post the next input's receive. */
static void emit_fwd(struct emit *e, int i)
{
    emit_op(e, PP_FWD, i);
    if (!e->last)
        emit_op(e, PP_SEND_ACT, i);
    if (e->fwd_only)
        emit_recv_act(e, i + 1);
    else if (!e->last)
        emit_op(e, PP_RECV_GRAD, i);
}

/* BWD i, its send; slot i % nslots is free now: post the receive of the
 * micro-batch that uses it next (backwards run in order in 1F1B; GPipe
 * has a slot per micro-batch, so nothing follows there). */
static void emit_bwd(struct emit *e, int i)
{
    emit_op(e, PP_BWD, i);
    if (!e->first)
        emit_op(e, PP_SEND_GRAD, i);
    emit_recv_act(e, i + e->sc->nslots);
}

/* The order of computations: forwards, then backwards in reverse
 * (GPipe); w = min(p - s - 1, m) warm-up forwards, pairs of forward
 * w + k and backward k, then the remaining backwards (1F1B); forwards
 * only (forward_only). */
static void schedule_fill(struct emit *e)
{
    struct pp_schedule *sc = e->sc;
    int m = sc->m;
    for (int i = 0; i < sc->nslots; i++) /* slots start out free */
        emit_recv_act(e, i);
    if (e->fwd_only) {
        for (int i = 0; i < m; i++)
            emit_fwd(e, i);
    } else if (sc->kind == PP_GPIPE) {
        for (int i = 0; i < m; i++)
            emit_fwd(e, i);
        for (int i = m - 1; i >= 0; i--)
            emit_bwd(e, i);
    } else {
        int w = sc->p - sc->s - 1 < m ? sc->p - sc->s - 1 : m;
        for (int i = 0; i < w; i++)
            emit_fwd(e, i);
        for (int k = 0; k + w < m; k++) {
            emit_fwd(e, w + k);
            emit_bwd(e, k);
        }
        for (int k = m - w; k < m; k++)
            emit_bwd(e, k);
    }
}

int pp_schedule_build(struct pp_schedule *sc, enum pp_kind kind, int p, int s,
                      int m, int forward_only, char *err, size_t errlen)
{
    memset(sc, 0, sizeof(*sc));
    if (kind != PP_GPIPE && kind != PP_1F1B) {
        snprintf(err, errlen, "pipeline schedule: unknown kind %d", (int)kind);
        return -1;
    }
    if (p < 1 || s < 0 || s >= p || m < 1 || (p > 1 && m > PP_MAX_MB)) {
        snprintf(err, errlen,
                 "pipeline schedule: bad arguments p=%d s=%d "
                 "m=%d (need p >= 1, 0 <= s < p, 1 <= m <= %d)",
                 p, s, m, PP_MAX_MB);
        return -1;
    }
    sc->kind = kind;
    sc->p = p;
    sc->s = s;
    sc->m = m;
    if (forward_only)
        sc->nslots = 1;
    else if (kind == PP_GPIPE)
        sc->nslots = m;
    else
        sc->nslots = p - s < m ? p - s : m;
    sc->a = malloc((size_t)6 * (size_t)m * sizeof(*sc->a));
    if (!sc->a) {
        snprintf(err, errlen,
                 "pipeline schedule: out of memory for %d "
                 "micro-batches (stage %d of %d)",
                 m, s, p);
        memset(sc, 0, sizeof(*sc));
        return -1;
    }
    struct emit e = {sc, s == 0, s == p - 1, forward_only != 0};
    schedule_fill(&e);
    return 0;
}

void pp_schedule_free(struct pp_schedule *sc)
{
    if (!sc)
        return;
    free(sc->a);
    memset(sc, 0, sizeof(*sc));
}

/* A micro-batch is held from its first action to its PP_BWD (to its last
 * action in a forward-only list).  Sweep with +1 at the first action and
 * -1 after the end.  Returns -1 when out of memory. */
int pp_schedule_max_inflight(const struct pp_schedule *sc)
{
    if (!sc || !sc->a || sc->m < 1 || sc->n < 1)
        return 0;
    int *first = malloc(((size_t)sc->m * 2 + (size_t)sc->n + 1) * sizeof(int));
    if (!first)
        return -1;
    int *end = first + sc->m, *delta = end + sc->m;
    for (int i = 0; i < sc->m; i++)
        first[i] = end[i] = -1;
    for (int j = 0; j <= sc->n; j++)
        delta[j] = 0;
    for (int j = 0; j < sc->n; j++) {
        int k = sc->a[j].mb;
        if (first[k] < 0)
            first[k] = j;
        if (end[k] < 0 || sc->a[end[k]].op != PP_BWD) /* BWD sticks */
            end[k] = j;
    }
    for (int k = 0; k < sc->m; k++) {
        if (first[k] >= 0) {
            delta[first[k]]++;
            delta[end[k] + 1]--;
        }
    }
    int best = 0, cur = 0;
    for (int j = 0; j < sc->n; j++) {
        cur += delta[j];
        if (cur > best)
            best = cur;
    }
    free(first);
    return best;
}

double pp_bubble_theory(int p, int m)
{
    if (p < 1 || m < 1)
        return 0.0;
    return (double)(p - 1) / (double)(m + p - 1);
}

/* ---- partition -------------------------------------------------------- */

/* Cost of stage s of p holding blocks [a, b).  Always summed in the same
 * order, so equal splits give bit-equal costs and the comparisons with
 * the optimum below are exact. */
static double stage_cost(const double *c, int a, int b, int s, int p,
                         double first_cost, double last_cost)
{
    double sum = 0.0;
    for (int j = a; j < b; j++)
        sum += c[j];
    if (s == 0)
        sum += first_cost;
    if (s == p - 1)
        sum += last_cost;
    return sum;
}

/* f[s * (n + 1) + j]: the least largest stage cost of blocks [j, n) over
 * stages s..p-1 (each >= 1 block). */
static void partition_table(int n, int p, const double *c, double fc,
                            double lc, double *f)
{
    for (int s = p - 1; s >= 0; s--) {
        for (int j = 0; j <= n; j++) {
            double best = DBL_MAX; /* infeasible; never read */
            int left = p - s;      /* stages still to fill, blocks >= left */
            if (n - j >= left) {
                if (s == p - 1) {
                    best = stage_cost(c, j, n, s, p, fc, lc);
                } else {
                    for (int b = j + 1; n - b >= left - 1; b++) {
                        double x = stage_cost(c, j, b, s, p, fc, lc);
                        double y = f[(size_t)(s + 1) * (n + 1) + b];
                        double v = x > y ? x : y;
                        if (v < best)
                            best = v;
                    }
                }
            }
            f[(size_t)s * (n + 1) + j] = best;
        }
    }
}

/*
 * Tie rule: among all splits whose largest stage cost is the optimum,
 * the lexicographically smallest (bound[1], ..., bound[p-1]) - each
 * boundary as early as the optimum allows, given the earlier ones.  It
 * is found greedily: bound[s+1] is the least b such that stage s on
 * [bound[s], b) and the best split of [b, n) over the stages after it
 * both stay within the optimum.
 */
int pp_partition(int n_layer, int p, const double *block_cost,
                 double first_cost, double last_cost, int *bound, char *err,
                 size_t errlen)
{
    if (p < 1 || n_layer < 1 || p > n_layer || !block_cost || !bound) {
        snprintf(err, errlen,
                 "pipeline partition: cannot split %d blocks "
                 "into %d stages of at least one block each",
                 n_layer, p);
        return -1;
    }
    int n = n_layer;
    double bad = first_cost + last_cost;
    for (int j = 0; j < n; j++)
        bad += block_cost[j];
    if (!isfinite(bad)) {
        snprintf(err, errlen,
                 "pipeline partition: the costs of the %d "
                 "blocks (or of the embedding/head) are not finite",
                 n);
        return -1;
    }
    double *f = malloc((size_t)p * (size_t)(n + 1) * sizeof(double));
    if (!f) {
        snprintf(err, errlen,
                 "pipeline partition: out of memory (%d "
                 "blocks, %d stages)",
                 n_layer, p);
        return -1;
    }
    partition_table(n, p, block_cost, first_cost, last_cost, f);
    double opt = f[0];
    bound[0] = 0;
    for (int s = 0; s < p - 1; s++) {
        int b = bound[s] + 1;
        while (stage_cost(block_cost, bound[s], b, s, p, first_cost,
                          last_cost) > opt ||
               f[(size_t)(s + 1) * (n + 1) + b] > opt)
            b++; /* terminates: the optimum's own split qualifies */
        bound[s + 1] = b;
    }
    bound[p] = n;
    free(f);
    return 0;
}

/* ---- link ------------------------------------------------------------- */

static void link_fail(const struct pp_link *l, int rc, const char *what,
                      int mb)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0, wr = -1;
    msg[0] = '\0';
    MPI_Error_string(rc, msg, &len);
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    fprintf(stderr,
            "mpitron: rank %d: pipeline transfer failed: %s "
            "(stage %d of %d, %s of micro-batch %d)\n",
            wr, msg, l->s, l->p, what, mb);
    MPI_Abort(MPI_COMM_WORLD, 3);
}

/* A broken invariant of the caller (no neighbour, bad mb, slot busy). */
static void link_misuse(const struct pp_link *l, const char *file, int line,
                        const char *why, int mb)
{
    int wr = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    fprintf(stderr,
            "mpitron: rank %d: %s:%d: pipeline link misuse on stage "
            "%d of %d, micro-batch %d: %s\n",
            wr, file, line, l->s, l->p, mb, why);
    MPI_Abort(MPI_COMM_WORLD, 3);
}

/* Wait for *r, adding the blocked time to t_wait; abort on error.  The
 * phase (phase.h) names the transfer: slot's direction, mb, the peer. */
static void link_wait(struct pp_link *l, MPI_Request *r, int recv, int mb)
{
    if (*r == MPI_REQUEST_NULL)
        return;
    const char *what = recv ? "receive" : "send";
    int slot = (int)(r - (recv ? l->recv : l->send));
    int grad = recv ? l->rgrad[slot] : l->sgrad[slot];
    /* a gradient comes from the next stage and goes to the previous */
    int peer = grad == recv ? l->next_world : l->prev_world;
    phase_enter(recv ? PHASE_PP_RECV : PHASE_PP_SEND,
                grad ? "gradient" : "activation", mb + 1, -1, peer, NULL);
    double t = MPI_Wtime();
    int rc = MPI_Wait(r, MPI_STATUS_IGNORE);
    l->t_wait += MPI_Wtime() - t;
    if (rc != MPI_SUCCESS)
        link_fail(l, rc, what, mb);
}

/* Returns the peer rank for a transfer of mb in direction dir (+1 next,
 * -1 previous); aborts when there is none or mb cannot be tagged. */
static int link_peer(const struct pp_link *l, int mb, int dir, size_t n)
{
    int peer = l->s + dir;
    if (peer < 0 || peer >= l->p)
        link_misuse(l, __FILE__, __LINE__, "no stage in that direction", mb);
    if (mb < 0 || mb >= PP_MAX_MB)
        link_misuse(l, __FILE__, __LINE__,
                    "micro-batch outside the taggable range [0, PP_MAX_MB)",
                    mb);
    if (n > (size_t)INT_MAX)
        link_misuse(l, __FILE__, __LINE__, "message over INT_MAX floats", mb);
    return peer;
}

/* The world ranks of stages s - 1 and s + 1 (-1 where there is none),
 * for the hang watchdog's reports. */
static void link_neighbours(struct pp_link *l, MPI_Comm pp_comm)
{
    MPI_Group mine, world;
    int idx[2] = {l->s - 1, l->s + 1}, out[2] = {-1, -1};
    MPI_Comm_group(pp_comm, &mine);
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    for (int k = 0; k < 2; k++)
        if (idx[k] >= 0 && idx[k] < l->p)
            MPI_Group_translate_ranks(mine, 1, &idx[k], world, &out[k]);
    MPI_Group_free(&mine);
    MPI_Group_free(&world);
    l->prev_world = out[0];
    l->next_world = out[1];
}

/* Returns -1 for nslots < 1, an MPI error, no memory (l zeroed), or a
 * too small MPI_TAG_UB (also printed to stderr, naming the stage). */
int pp_link_init(struct pp_link *l, MPI_Comm pp_comm, int nslots)
{
    memset(l, 0, sizeof(*l));
    if (nslots < 1)
        return -1;
    int *ub = NULL, flag = 0;
    /* MPI_TAG_UB is cached on MPI_COMM_WORLD; it is the same for all. */
    if (MPI_Comm_rank(pp_comm, &l->s) != MPI_SUCCESS ||
        MPI_Comm_size(pp_comm, &l->p) != MPI_SUCCESS ||
        MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag) !=
            MPI_SUCCESS)
        return -1;
    if (l->p > 1 && (!flag || *ub < 2 * PP_MAX_MB - 1)) {
        fprintf(stderr,
                "mpitron: pp stage %d: MPI_TAG_UB=%d is below %d, "
                "needed for %d micro-batches\n",
                l->s, flag ? *ub : -1, 2 * PP_MAX_MB - 1, PP_MAX_MB);
        return -1;
    }
    l->recv = malloc((size_t)nslots * sizeof(MPI_Request));
    l->send = malloc((size_t)nslots * sizeof(MPI_Request));
    l->rgrad = calloc((size_t)nslots, 1);
    l->sgrad = calloc((size_t)nslots, 1);
    if (!l->recv || !l->send || !l->rgrad || !l->sgrad) {
        free(l->recv);
        free(l->send);
        free(l->rgrad);
        free(l->sgrad);
        memset(l, 0, sizeof(*l));
        return -1;
    }
    link_neighbours(l, pp_comm);
    for (int i = 0; i < nslots; i++)
        l->recv[i] = l->send[i] = MPI_REQUEST_NULL;
    l->comm = pp_comm;
    l->nslots = nslots;
    return 0;
}

/* Outstanding sends are waited for (their receives are always posted by
 * a schedule); outstanding receives can only be left by an aborted step
 * and are cancelled. */
void pp_link_free(struct pp_link *l)
{
    if (!l || !l->recv) {
        if (l)
            memset(l, 0, sizeof(*l));
        return;
    }
    for (int i = 0; i < l->nslots; i++) {
        if (l->recv[i] != MPI_REQUEST_NULL) {
            MPI_Cancel(&l->recv[i]);
            MPI_Wait(&l->recv[i], MPI_STATUS_IGNORE);
        }
        link_wait(l, &l->send[i], 0, -1);
    }
    free(l->recv);
    free(l->send);
    free(l->rgrad);
    free(l->sgrad);
    memset(l, 0, sizeof(*l));
}

void pp_link_post_recv(struct pp_link *l, float *buf, size_t n, int mb,
                       int grad)
{
    int peer = link_peer(l, mb, grad ? 1 : -1, n);
    MPI_Request *r = &l->recv[mb % l->nslots];
    if (*r != MPI_REQUEST_NULL)
        link_misuse(l, __FILE__, __LINE__,
                    "the slot's previous receive "
                    "was never waited for",
                    mb);
    l->rgrad[mb % l->nslots] = grad != 0;
    int rc = MPI_Irecv(buf, (int)n, MPI_FLOAT, peer, 2 * mb + (grad != 0),
                       l->comm, r);
    if (rc != MPI_SUCCESS)
        link_fail(l, rc,
                  grad ? "receive of the gradient"
                       : "receive of the activation",
                  mb);
}

void pp_link_wait_recv(struct pp_link *l, int mb)
{
    link_wait(l, &l->recv[mb % l->nslots], 1, mb);
}

/* The wait for the slot's previous send also counts into t_wait. */
void pp_link_send(struct pp_link *l, const float *buf, size_t n, int mb,
                  int grad)
{
    int peer = link_peer(l, mb, grad ? -1 : 1, n);
    MPI_Request *r = &l->send[mb % l->nslots];
    link_wait(l, r, 0, mb);
    l->sgrad[mb % l->nslots] = grad != 0;
    int rc = MPI_Isend(buf, (int)n, MPI_FLOAT, peer, 2 * mb + (grad != 0),
                       l->comm, r);
    if (rc != MPI_SUCCESS)
        link_fail(l, rc,
                  grad ? "send of the gradient" : "send of the activation",
                  mb);
}

void pp_link_wait_send(struct pp_link *l, int mb)
{
    link_wait(l, &l->send[mb % l->nslots], 0, mb);
}

void pp_link_wait_all(struct pp_link *l)
{
    for (int i = 0; i < l->nslots; i++)
        link_wait(l, &l->send[i], 0, -1);
}

void pp_link_progress(struct pp_link *l)
{
    int flag = 0,
        rc = MPI_Testall(l->nslots, l->recv, &flag, MPI_STATUSES_IGNORE);
    if (rc == MPI_SUCCESS)
        rc = MPI_Testall(l->nslots, l->send, &flag, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS)
        link_fail(l, rc, "progress", -1);
}
