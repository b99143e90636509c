/*
 * codec_ring.c - the ring sum all-reduce under fp16, bf16 and PowerSGD:
 * fp32 accumulation, fp32 or 16-bit values on the wire (codec_internal.h).
 *
 * Chunk c of p covers [lo(c), lo(c) + len(c)), the first n % p chunks one
 * float longer.  Reduce-scatter step s (0 <= s < p-1): rank r sends chunk
 * r-s and receives chunk r-s-1, adding it to its own values; after p-1
 * steps rank r holds the full sum of chunk r+1, summed in the order
 * r+2, r+3, ..., r+1 (mod p).  All-gather step s: send chunk r+1-s,
 * receive chunk r-s.  The order depends on p and n only: deterministic.
 */
#include "codec_internal.h"

#include <string.h>

static int ring_mod(int a, int p)
{
    return ((a % p) + p) % p;
}

static size_t ring_lo(size_t n, int p, int c)
{
    size_t q = n / (size_t)p, rem = n % (size_t)p, cc = (size_t)c;
    return cc * q + (cc < rem ? cc : rem);
}

static size_t ring_len(size_t n, int p, int c)
{
    return n / (size_t)p + ((size_t)c < n % (size_t)p ? 1 : 0);
}

static size_t wire_size(enum codec_wire w)
{
    return w == CODEC_WIRE_F32 ? 4 : 2;
}

size_t codec_ring_buf_bytes(size_t n, enum codec_wire w, int p)
{
    size_t chunk = n / (size_t)p + 1;
    if (w == CODEC_WIRE_F32) /* sends straight from data */
        return codec_align(chunk * 4);
    return 2 * codec_align(chunk * 2);
}

uint64_t codec_ring_wire_bytes(size_t n, enum codec_wire w, int rank, int p)
{
    if (p < 2 || n == 0)
        return 0;
    /* every chunk but r+1 in the reduce-scatter, every chunk but r+2 in
     * the all-gather */
    size_t elems = 2 * n - ring_len(n, p, ring_mod(rank + 1, p)) -
                   ring_len(n, p, ring_mod(rank + 2, p));
    return (uint64_t)elems * wire_size(w);
}

/* The owner's chunk is complete: round it to the wire format, so that
 * the owner keeps exactly the bits it will send. */
static void ring_finalize_own(struct codec_ring *rg, const struct comm_group *g)
{
    if (rg->wire == CODEC_WIRE_F32)
        return;
    int c = ring_mod(g->rank + 1, g->size);
    size_t lo = ring_lo(rg->n, g->size, c), len = ring_len(rg->n, g->size, c);
    codec_half_round(rg->wire, rg->data + lo, rg->resid ? rg->resid + lo : NULL,
                     len);
}

/* Post exchange rg->step: Irecv from the left, Isend to the right. */
static int ring_post(struct codec_ring *rg, struct comm_op *op)
{
    const struct comm_group *g = op->g;
    int p = g->size, r = g->rank, s = rg->step, rs = s < p - 1;
    int t = rs ? s : s - (p - 1);
    int sc = rs ? ring_mod(r - t, p) : ring_mod(r + 1 - t, p);
    int rc = rs ? ring_mod(r - t - 1, p) : ring_mod(r - t, p);
    size_t slo = ring_lo(rg->n, p, sc), slen = ring_len(rg->n, p, sc);
    size_t rlo = ring_lo(rg->n, p, rc), rlen = ring_len(rg->n, p, rc);
    size_t es = wire_size(rg->wire);
    const void *sp;
    void *rp;

    if (rg->wire == CODEC_WIRE_F32) {
        sp = rg->data + slo;
        rp = rs ? rg->rbuf : (void *)(rg->data + rlo);
    } else {
        /* in the all-gather the values are exact in the wire format */
        codec_half_encode(rg->wire, rg->data + slo, rg->sbuf,
                          rs && rg->resid ? rg->resid + slo : NULL, slen);
        sp = rg->sbuf;
        rp = rg->rbuf;
    }
    rg->rchunk = rc;
    if (MPI_Irecv(rp, (int)(rlen * es), MPI_BYTE, ring_mod(r - 1, p), rg->tag,
                  g->comm, &op->req[0]) != MPI_SUCCESS)
        return -1;
    if (MPI_Isend(sp, (int)(slen * es), MPI_BYTE, ring_mod(r + 1, p), rg->tag,
                  g->comm, &op->req[1]) != MPI_SUCCESS)
        return -1;
    op->nreq = 2;
    op->wire_bytes += (uint64_t)(slen * es);
    return 0;
}

/* The exchange in flight completed: fold in what arrived. */
static void ring_absorb(struct codec_ring *rg, const struct comm_group *g)
{
    int p = g->size, rs = rg->step < p - 1;
    size_t lo = ring_lo(rg->n, p, rg->rchunk);
    size_t len = ring_len(rg->n, p, rg->rchunk);
    float *d = rg->data + lo;

    if (rg->wire == CODEC_WIRE_F32) {
        const float *in = rg->rbuf;
        if (rs)
            for (size_t i = 0; i < len; i++)
                d[i] += in[i];
    } else {
        codec_half_decode(rg->wire, rg->rbuf, d, len, rs);
    }
    rg->step++;
    if (rg->step == p - 1)
        ring_finalize_own(rg, g);
}

int codec_ring_start(struct codec_ring *rg, struct comm_op *op, float *data,
                     float *resid, size_t n, enum codec_wire w, void *bufs)
{
    const struct comm_group *g = op->g;
    size_t half = codec_align((n / (size_t)g->size + 1) * 2);

    rg->data = data;
    rg->resid = resid;
    rg->n = n;
    rg->wire = w;
    rg->rbuf = bufs;
    rg->sbuf = (char *)bufs + half;
    rg->tag = op->tag;
    rg->step = 0;
    rg->rchunk = 0;
    op->nreq = 0;
    if (n == 0) { /* the same on every rank: nothing to exchange */
        rg->step = 2 * (g->size - 1);
        return 0;
    }
    if (g->size == 1) {
        ring_finalize_own(rg, g);
        return 0;
    }
    return ring_post(rg, op);
}

int codec_ring_test(struct codec_ring *rg, struct comm_op *op)
{
    const struct comm_group *g = op->g;
    int last = 2 * (g->size - 1);

    while (rg->step < last) {
        int flag = 0;
        if (MPI_Testall(2, op->req, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            return -1;
        if (!flag)
            return 0;
        op->nreq = 0;
        ring_absorb(rg, g);
        if (rg->step < last && ring_post(rg, op) != 0)
            return -1;
    }
    return 1;
}
