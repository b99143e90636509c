/*
 * ar_ring.c - the pipe engine (ring and chain, see ar_internal.h) and the
 * ring all-reduce built on it.
 *
 * Ring over p ranks: buf is cut into p chunks (lengths differ by at most
 * one), each chunk into nseg segments.  Reduce-scatter step k (0..p-2):
 * send chunk (rank - k) to the right, receive chunk (rank - k - 1) from
 * the left and add it in.  After p - 1 steps this rank holds the full sum
 * of chunk (rank + 1), accumulated as ((x_c + x_{c+1}) + x_{c+2}) + ...
 * starting at the chunk's own rank c: an order that depends on (p, n)
 * only.  All-gather step k: send chunk (rank + 1 - k), receive chunk
 * (rank - k) straight into buf, so every rank ends with the same bits.
 */
#include <string.h>

#include "ar_internal.h"

static int mod(int a, int p)
{
    return ((a % p) + p) % p;
}

/* nseg segments of at most AR_SEG_FLOATS over a part of `longest` floats;
 * *cap: the longest segment. */
static size_t seg_count(size_t longest, size_t *cap)
{
    size_t nseg = (longest + AR_SEG_FLOATS - 1) / AR_SEG_FLOATS;
    if (nseg == 0)
        nseg = 1;
    *cap = (longest + nseg - 1) / nseg;
    return nseg;
}

size_t ar_ring_tmp_floats(int p, size_t n)
{
    size_t cap;
    if (p <= 1 || n == 0)
        return 0;
    seg_count((n + (size_t)p - 1) / (size_t)p, &cap);
    return AR_PIPE_NBUF * cap;
}

size_t ar_chain_tmp_floats(size_t n)
{
    size_t cap;
    if (n == 0)
        return 0;
    seg_count(n, &cap);
    return AR_PIPE_NBUF * cap;
}

static void pipe_clear(struct ar_pipe *pp, MPI_Comm comm, int tag,
                       float *buf, size_t n, float *tmp, MPI_Request *req)
{
    memset(pp, 0, sizeof *pp);
    pp->comm = comm;
    pp->tag = tag;
    pp->buf = buf;
    pp->n = n;
    pp->tmp = tmp;
    pp->req = req;
    for (int i = 0; i < AR_PIPE_NBUF + AR_PIPE_NSEND; i++)
        req[i] = MPI_REQUEST_NULL;
}

void ar_pipe_ring(struct ar_pipe *pp, MPI_Comm comm, int tag, float *buf,
                  size_t n, float *tmp, MPI_Request *req)
{
    pipe_clear(pp, comm, tag, buf, n, tmp, req);
    MPI_Comm_rank(comm, &pp->rank);
    MPI_Comm_size(comm, &pp->p);
    pp->ring = 1;
    pp->src = mod(pp->rank - 1, pp->p);
    pp->dst = mod(pp->rank + 1, pp->p);
    size_t longest = (n + (size_t)pp->p - 1) / (size_t)pp->p;
    pp->nseg = seg_count(longest, &pp->seg_cap);
    pp->units = pp->p > 1 && n > 0 ? 2 * (size_t)(pp->p - 1) * pp->nseg : 0;
}

void ar_pipe_ring_half(struct ar_pipe *pp, MPI_Comm comm, int tag,
                       float *buf, size_t n, float *tmp, MPI_Request *req,
                       int half)
{
    ar_pipe_ring(pp, comm, tag, buf, n, tmp, req);
    size_t step = pp->units / 2; /* (p - 1) nseg, or 0 */
    if (half == 0) {
        pp->units = step;
    } else {
        pp->u0 = step;
        pp->proc = pp->rposted = pp->sposted = pp->sdone = step;
    }
}

void ar_pipe_chain(struct ar_pipe *pp, MPI_Comm comm, int tag, int src,
                   int dst, int reduce, float *buf, size_t n, float *tmp,
                   MPI_Request *req)
{
    pipe_clear(pp, comm, tag, buf, n, tmp, req);
    pp->src = src;
    pp->dst = dst;
    pp->reduce = reduce;
    pp->nseg = seg_count(n, &pp->seg_cap);
    int alone = src == MPI_PROC_NULL && dst == MPI_PROC_NULL;
    pp->units = n > 0 && !alone ? pp->nseg : 0;
}

/* Where unit u is sent from (*soff, *slen), received into (*roff, *rlen)
 * and whether it is added in (1) or copied (0). */
static int unit_region(const struct ar_pipe *pp, size_t u, size_t *soff,
                       size_t *slen, size_t *roff, size_t *rlen)
{
    size_t s = u % pp->nseg, coff, clen, off, len;
    int sc, rc, reduce;
    if (!pp->ring) {
        ar_part(pp->n, pp->nseg, u, soff, slen);
        *roff = *soff;
        *rlen = *slen;
        return pp->reduce;
    }
    int k = (int)(u / pp->nseg);
    if (k < pp->p - 1) { /* reduce-scatter */
        sc = mod(pp->rank - k, pp->p);
        rc = mod(pp->rank - k - 1, pp->p);
        reduce = 1;
    } else { /* all-gather */
        k -= pp->p - 1;
        sc = mod(pp->rank + 1 - k, pp->p);
        rc = mod(pp->rank - k, pp->p);
        reduce = 0;
    }
    ar_part(pp->n, (size_t)pp->p, (size_t)sc, &coff, &clen);
    ar_part(clen, pp->nseg, s, &off, &len);
    *soff = coff + off;
    *slen = len;
    ar_part(pp->n, (size_t)pp->p, (size_t)rc, &coff, &clen);
    ar_part(clen, pp->nseg, s, &off, &len);
    *roff = coff + off;
    *rlen = len;
    return reduce;
}

/* The data of send u is final: ring, unit u - nseg processed (or u is in
 * the first step); chain, unit u itself received. */
static int send_ready(const struct ar_pipe *pp, size_t u)
{
    return pp->ring ? pp->proc + pp->nseg >= u + 1 : pp->proc >= u + 1;
}

/* A ring all-gather unit lands in buf where reduce-scatter unit
 * u - (p - 1) nseg was sent from: that send must be complete. */
static int recv_ready(const struct ar_pipe *pp, size_t u)
{
    if (!pp->ring)
        return 1;
    return pp->sdone + (size_t)(pp->p - 1) * pp->nseg >= u + 1;
}

static int pipe_post_send(struct ar_pipe *pp, size_t u)
{
    size_t soff, slen, roff, rlen;
    MPI_Request *r = &pp->req[AR_PIPE_NBUF + u % AR_PIPE_NSEND];
    if (pp->dst == MPI_PROC_NULL) {
        *r = MPI_REQUEST_NULL;
        return 0;
    }
    unit_region(pp, u, &soff, &slen, &roff, &rlen);
    pp->wire += slen * sizeof(float);
    return MPI_Isend(pp->buf + soff, (int)slen, MPI_FLOAT, pp->dst, pp->tag,
                     pp->comm, r) == MPI_SUCCESS ? 0 : -1;
}

static int pipe_post_recv(struct ar_pipe *pp, size_t u)
{
    size_t soff, slen, roff, rlen;
    MPI_Request *r = &pp->req[u % AR_PIPE_NBUF];
    float *dst;
    if (pp->src == MPI_PROC_NULL) {
        *r = MPI_REQUEST_NULL;
        return 0;
    }
    int reduce = unit_region(pp, u, &soff, &slen, &roff, &rlen);
    dst = reduce ? pp->tmp + (u % AR_PIPE_NBUF) * pp->seg_cap
                 : pp->buf + roff;
    return MPI_Irecv(dst, (int)rlen, MPI_FLOAT, pp->src, pp->tag, pp->comm,
                     r) == MPI_SUCCESS ? 0 : -1;
}

/* Test the receive of the next unit; add it in once arrived. */
static int pipe_process(struct ar_pipe *pp, int *moved)
{
    size_t u = pp->proc, soff, slen, roff, rlen;
    int flag;
    if (MPI_Test(&pp->req[u % AR_PIPE_NBUF], &flag, MPI_STATUS_IGNORE)
        != MPI_SUCCESS)
        return -1;
    if (!flag)
        return 0;
    if (unit_region(pp, u, &soff, &slen, &roff, &rlen)
        && pp->src != MPI_PROC_NULL) {
        float *restrict b = pp->buf + roff;
        const float *restrict t = pp->tmp + (u % AR_PIPE_NBUF) * pp->seg_cap;
        for (size_t i = 0; i < rlen; i++)
            b[i] += t[i];
    }
    pp->proc++;
    *moved = 1;
    return 0;
}

int ar_pipe_test(struct ar_pipe *pp)
{
    int flag;
    for (;;) {
        int moved = 0;
        while (pp->sdone < pp->sposted) { /* sends complete in order */
            MPI_Request *r =
                &pp->req[AR_PIPE_NBUF + pp->sdone % AR_PIPE_NSEND];
            if (MPI_Test(r, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                return -1;
            if (!flag)
                break;
            pp->sdone++;
            moved = 1;
        }
        while (pp->sposted < pp->units
               && pp->sposted - pp->sdone < AR_PIPE_NSEND
               && send_ready(pp, pp->sposted)) {
            if (pipe_post_send(pp, pp->sposted) != 0)
                return -1;
            pp->sposted++;
            moved = 1;
        }
        while (pp->rposted < pp->units
               && pp->rposted - pp->proc < AR_PIPE_NBUF
               && recv_ready(pp, pp->rposted)) {
            if (pipe_post_recv(pp, pp->rposted) != 0)
                return -1;
            pp->rposted++;
            moved = 1;
        }
        if (pp->proc < pp->rposted && pipe_process(pp, &moved) != 0)
            return -1;
        if (pp->proc == pp->units && pp->sdone == pp->units)
            return 1;
        if (!moved)
            return 0;
    }
}

/* ---- the ring algorithm ------------------------------------------------ */

static size_t ring_scratch(const struct comm_group *g, size_t n)
{
    return AR_ALIGN(sizeof(struct ar_pipe))
         + ar_ring_tmp_floats(g->size, n) * sizeof(float);
}

static int ring_start(struct comm_op *op)
{
    struct ar_pipe *pp = op->scratch;
    if (!ar_scratch_ok(op, ring_scratch(op->g, op->n)))
        return -1;
    ar_pipe_ring(pp, op->g->comm, op->tag, op->buf, op->n,
                 (float *)((char *)op->scratch
                           + AR_ALIGN(sizeof(struct ar_pipe))),
                 op->req);
    op->state = pp;
    op->nreq = AR_PIPE_NBUF + AR_PIPE_NSEND;
    int r = ar_pipe_test(pp);
    op->wire_bytes = pp->wire;
    return r < 0 ? -1 : 0;
}

static int ring_test(struct comm_op *op)
{
    struct ar_pipe *pp = op->state;
    int r = ar_pipe_test(pp);
    op->wire_bytes = pp->wire;
    return r;
}

static const struct comm_op_ops ring_ops = {
    .name = "ring", .start = ring_start, .test = ring_test, .finish = NULL,
};

const struct allreduce_algo ar_ring = {
    .name = "ring", .ops = &ring_ops, .scratch = ring_scratch,
};

/* ---- the ring's halves: reduce-scatter, all-gather --------------------- */

static size_t rs_scratch(const struct comm_group *g, size_t n)
{
    return ring_scratch(g, n);
}

static size_t ag_scratch(const struct comm_group *g, size_t n)
{
    (void)g;
    (void)n;
    return AR_ALIGN(sizeof(struct ar_pipe));
}

static int half_start(struct comm_op *op, int half)
{
    struct ar_pipe *pp = op->scratch;
    size_t need = half ? ag_scratch(op->g, op->n) : rs_scratch(op->g, op->n);
    if (!ar_scratch_ok(op, need))
        return -1;
    float *tmp = half ? NULL
                      : (float *)((char *)op->scratch
                                  + AR_ALIGN(sizeof(struct ar_pipe)));
    ar_pipe_ring_half(pp, op->g->comm, op->tag, op->buf, op->n, tmp, op->req,
                      half);
    op->state = pp;
    op->nreq = AR_PIPE_NBUF + AR_PIPE_NSEND;
    int r = ar_pipe_test(pp);
    op->wire_bytes = pp->wire;
    return r < 0 ? -1 : 0;
}

static int rs_start(struct comm_op *op)
{
    return half_start(op, 0);
}

static int ag_start(struct comm_op *op)
{
    return half_start(op, 1);
}

static const struct comm_op_ops rs_ops = {
    .name = "reduce_scatter", .start = rs_start, .test = ring_test,
    .finish = NULL,
};

static const struct comm_op_ops ag_ops = {
    .name = "allgather", .start = ag_start, .test = ring_test,
    .finish = NULL,
};

const struct allreduce_algo ar_ring_rs = {
    .name = "reduce_scatter", .ops = &rs_ops, .scratch = rs_scratch,
};

const struct allreduce_algo ar_ring_ag = {
    .name = "allgather", .ops = &ag_ops, .scratch = ag_scratch,
};

const struct allreduce_algo *const comm_reduce_scatter = &ar_ring_rs;
const struct allreduce_algo *const comm_allgather = &ar_ring_ag;

void comm_ring_own(size_t n, int p, int rank, size_t *off, size_t *len)
{
    if (p <= 1) {
        *off = 0;
        *len = n;
        return;
    }
    ar_part(n, (size_t)p, (size_t)mod(rank + 1, p), off, len);
}
