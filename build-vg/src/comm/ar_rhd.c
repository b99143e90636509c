/*
 * ar_rhd.c - recursive halving (reduce-scatter) then recursive doubling
 * (all-gather), for latency-bound sizes.
 *
 * pof2 = the largest power of two <= p, rem = p - pof2.  Steps, each one
 * exchange that completes before the next is posted:
 *
 *   fold      rank r >= pof2 sends buf to r - pof2 and sits out; rank
 *             r < rem receives it and adds it in
 *   halve d   d = pof2/2, ..., 1: partners r and r^d split their common
 *             range [lo, hi) at lo + (hi - lo)/2; the rank without bit d
 *             keeps the low half; each sends the half it gives away and
 *             adds the partner's copy of the half it keeps
 *   double d  d = 1, ..., pof2/2: each sends its range, receives the
 *             partner's (the other half of their common parent) into buf
 *   unfold    rank r < rem sends the result to r + pof2
 *
 * Element i is summed as T_L where T_0(r) = x_r (+ x_{r+pof2} if r <
 * rem), T_j(r) = T_{j-1}(r) + T_{j-1}(r ^ (pof2 >> j)): an order fixed by
 * (p, n).  Messages are whole ranges, so n must fit an int.
 */
#include <limits.h>

#include "ar_internal.h"

struct rhd {
    int pof2, rem, levels;
    int st, last;          /* current step, last step (see step_of) */
    size_t lo, hi;         /* the range this rank holds reduced */
    size_t klo, klen;      /* halving: the kept half */
    float *tmp;
};

/* Range R_d of `rank` after the halving steps down to distance d. */
static void rhd_range(int rank, int pof2, size_t n, int d, size_t *lo,
                      size_t *hi)
{
    *lo = 0;
    *hi = n;
    for (int e = pof2 / 2; e >= d && e >= 1; e /= 2) {
        size_t mid = *lo + (*hi - *lo) / 2;
        if (rank & e)
            *lo = mid;
        else
            *hi = mid;
    }
}

/* Steps: 0 fold, 1..L halve (d = pof2 >> st), L+1..2L double (d = 1 <<
 * (st - L - 1)), 2L+1 unfold. */
static int rhd_post(struct comm_op *op, struct rhd *s)
{
    const struct comm_group *g = op->g;
    int r = g->rank, L = s->levels, rc = MPI_SUCCESS, tag = op->tag;
    MPI_Comm c = g->comm;
    int n = (int)op->n;
    op->nreq = 0;
    if (s->st == 0 && r >= s->pof2) {
        rc = MPI_Isend(op->buf, n, MPI_FLOAT, r - s->pof2, tag, c, op->req);
        op->wire_bytes += op->n * sizeof(float);
        op->nreq = 1;
    } else if (s->st == 0 && r < s->rem) {
        rc = MPI_Irecv(s->tmp, n, MPI_FLOAT, r + s->pof2, tag, c, op->req);
        op->nreq = 1;
    } else if (s->st >= 1 && s->st <= L && r < s->pof2) {
        int d = s->pof2 >> s->st;
        size_t mid = s->lo + (s->hi - s->lo) / 2, soff, slen;
        int low = !(r & d);
        s->klo = low ? s->lo : mid;
        s->klen = low ? mid - s->lo : s->hi - mid;
        soff = low ? mid : s->lo;
        slen = (s->hi - s->lo) - s->klen;
        rc = MPI_Isend(op->buf + soff, (int)slen, MPI_FLOAT, r ^ d, tag, c,
                       &op->req[0]);
        if (rc == MPI_SUCCESS)
            rc = MPI_Irecv(s->tmp, (int)s->klen, MPI_FLOAT, r ^ d, tag, c,
                           &op->req[1]);
        op->wire_bytes += slen * sizeof(float);
        op->nreq = 2;
    } else if (s->st > L && s->st <= 2 * L && r < s->pof2) {
        int d = 1 << (s->st - L - 1);
        size_t plo, phi;
        rhd_range(r ^ d, s->pof2, op->n, d, &plo, &phi);
        rc = MPI_Isend(op->buf + s->lo, (int)(s->hi - s->lo), MPI_FLOAT,
                       r ^ d, tag, c, &op->req[0]);
        if (rc == MPI_SUCCESS)
            rc = MPI_Irecv(op->buf + plo, (int)(phi - plo), MPI_FLOAT, r ^ d,
                           tag, c, &op->req[1]);
        op->wire_bytes += (s->hi - s->lo) * sizeof(float);
        op->nreq = 2;
        s->lo = s->lo < plo ? s->lo : plo;
        s->hi = s->hi > phi ? s->hi : phi;
    } else if (s->st == 2 * L + 1 && r >= s->pof2) {
        rc = MPI_Irecv(op->buf, n, MPI_FLOAT, r - s->pof2, tag, c, op->req);
        op->nreq = 1;
    } else if (s->st == 2 * L + 1 && r < s->rem) {
        rc = MPI_Isend(op->buf, n, MPI_FLOAT, r + s->pof2, tag, c, op->req);
        op->wire_bytes += op->n * sizeof(float);
        op->nreq = 1;
    }
    return rc == MPI_SUCCESS ? 0 : -1;
}

/* The exchange of step st is complete: add what was received. */
static void rhd_complete(struct comm_op *op, struct rhd *s)
{
    const struct comm_group *g = op->g;
    float *restrict b = NULL;
    const float *restrict t = s->tmp;
    size_t len = 0;
    if (s->st == 0 && g->rank < s->rem) {
        b = op->buf;
        len = op->n;
    } else if (s->st >= 1 && s->st <= s->levels && g->rank < s->pof2) {
        b = op->buf + s->klo;
        len = s->klen;
        s->lo = s->klo;
        s->hi = s->klo + s->klen;
    }
    for (size_t i = 0; i < len; i++)
        b[i] += t[i];
}

static size_t rhd_scratch(const struct comm_group *g, size_t n)
{
    size_t tmp = g->size > 1 ? n : 0; /* the fold receives a whole buf */
    return AR_ALIGN(sizeof(struct rhd)) + tmp * sizeof(float);
}

static int rhd_test(struct comm_op *op)
{
    struct rhd *s = op->state;
    int flag;
    while (s->st <= s->last) {
        if (op->nreq > 0) {
            if (MPI_Testall(op->nreq, op->req, &flag, MPI_STATUSES_IGNORE)
                != MPI_SUCCESS)
                return -1;
            if (!flag)
                return 0;
        }
        rhd_complete(op, s);
        s->st++;
        if (s->st <= s->last && rhd_post(op, s) != 0)
            return -1;
    }
    return 1;
}

static int rhd_start(struct comm_op *op)
{
    const struct comm_group *g = op->g;
    struct rhd *s = op->scratch;
    if (!ar_scratch_ok(op, rhd_scratch(g, op->n)) || op->n > INT_MAX)
        return -1;
    s->pof2 = 1;
    s->levels = 0;
    while (s->pof2 * 2 <= g->size) {
        s->pof2 *= 2;
        s->levels++;
    }
    s->rem = g->size - s->pof2;
    s->st = 0;
    /* nothing to exchange: one rank, or n == 0 (the same on every rank) */
    s->last = g->size > 1 && op->n > 0 ? 2 * s->levels + 1 : -1;
    s->lo = 0;
    s->hi = op->n;
    s->tmp = (float *)((char *)op->scratch + AR_ALIGN(sizeof(struct rhd)));
    op->state = s;
    if (s->last >= 0 && rhd_post(op, s) != 0)
        return -1;
    return rhd_test(op) < 0 ? -1 : 0;
}

static const struct comm_op_ops rhd_ops = {
    .name = "rhd", .start = rhd_start, .test = rhd_test, .finish = NULL,
};

const struct allreduce_algo ar_rhd = {
    .name = "rhd", .ops = &rhd_ops, .scratch = rhd_scratch,
};
