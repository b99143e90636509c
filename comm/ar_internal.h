/*
 * ar_internal.h - machinery shared by the all-reduce algorithms of comm/
 * (not for use outside comm/ar_*.c and comm/allreduce.c).
 *
 * The pipe is the one non-blocking engine behind ring and hier: a
 * sequence of `units` (one segment each) that this rank receives from
 * `src` and sends to `dst`, in unit order, over (comm, tag).  A received
 * unit is either added into buf (reduce) or lands in buf (copy).  At most
 * AR_PIPE_NBUF receives and AR_PIPE_NSEND sends are in flight, in the
 * op's request array: req[0..NBUF) receives by unit % NBUF, req[NBUF..)
 * sends by unit % NSEND.  Units are processed and sends completed strictly
 * in order, so the messages of one (src, tag) match in order (MPI's
 * non-overtaking rule) and the sum order is fixed.
 *
 *   ring   units = 2 (p - 1) nseg: reduce-scatter steps then all-gather
 *          steps, each step the nseg segments of one chunk.  Unit u may be
 *          sent once unit u - nseg is processed (pipelining: segment s of
 *          step k + 1 leaves while segment s + 1 of step k is reduced).
 *          The halves run alone as units [0, (p-1) nseg) (reduce-scatter:
 *          rank r ends with the full sum of chunk r + 1, in exactly the
 *          bits the whole ring gives it) or [(p-1) nseg, 2 (p-1) nseg)
 *          (all-gather: rank r's chunk r + 1 is final on entry); the unit
 *          counters then start at u0.
 *   chain  units = nseg segments of the whole buffer, received from src,
 *          reduced or copied, then forwarded to dst (MPI_PROC_NULL at the
 *          ends): a pipelined linear reduce or broadcast.
 */
#ifndef MPITRON_AR_INTERNAL_H
#define MPITRON_AR_INTERNAL_H

#include "allreduce.h"
#include "comm.h"

/* Segment length in floats (512 KiB): measured best of 64K..256K floats */
#ifndef AR_SEG_FLOATS
#define AR_SEG_FLOATS 131072
#endif
/* hier cuts buf into min(AR_HIER_PIECES, ceil(n / AR_SEG_FLOATS)) pieces
 * (at least one), split as ar_part does; part of its sum order. */
#define AR_HIER_PIECES 8
#define AR_PIPE_NBUF 4
#define AR_PIPE_NSEND 4
#if AR_PIPE_NBUF + AR_PIPE_NSEND > COMM_OP_MAX_REQS
#error "the pipe's requests must fit in struct comm_op"
#endif

/* Align private state carved out of the caller's scratch. */
#define AR_ALIGN(x) (((x) + (size_t)63) & ~(size_t)63)

struct ar_pipe {
    MPI_Comm comm;
    int tag, src, dst;
    int ring;               /* 1 ring, 0 chain */
    int reduce;             /* chain: add received units (else copy) */
    int p, rank;            /* ring geometry */
    float *buf;
    size_t n;
    float *tmp;             /* AR_PIPE_NBUF * seg_cap floats */
    size_t seg_cap, nseg, units; /* units: one past the last */
    size_t u0;              /* first unit (ring halves) */
    MPI_Request *req;       /* AR_PIPE_NBUF + AR_PIPE_NSEND */
    size_t proc, rposted, sposted, sdone;
    uint64_t wire;          /* bytes sent */
};

/* Elements [off, off + len) of part i of n split into k parts whose
 * lengths differ by at most one (the first n % k are longer). */
static inline void ar_part(size_t n, size_t k, size_t i, size_t *off,
                           size_t *len)
{
    size_t q = n / k, r = n % k;
    *off = i * q + (i < r ? i : r);
    *len = q + (i < r);
}

/* Floats of tmp a pipe needs: AR_PIPE_NBUF segments of at most
 * min(AR_SEG_FLOATS, longest part) floats. */
size_t ar_ring_tmp_floats(int p, size_t n);
size_t ar_chain_tmp_floats(size_t n);

/* Set up a ring all-reduce of buf (n floats) over comm (every rank of
 * comm takes part), or a chain over buf.  req: AR_PIPE_NBUF +
 * AR_PIPE_NSEND requests; tmp: as sized above.  Posts nothing. */
void ar_pipe_ring(struct ar_pipe *pp, MPI_Comm comm, int tag, float *buf,
                  size_t n, float *tmp, MPI_Request *req);
/* One half of the ring: half 0 the reduce-scatter, 1 the all-gather
 * (which needs no tmp: received chunks land in buf). */
void ar_pipe_ring_half(struct ar_pipe *pp, MPI_Comm comm, int tag,
                       float *buf, size_t n, float *tmp, MPI_Request *req,
                       int half);
void ar_pipe_chain(struct ar_pipe *pp, MPI_Comm comm, int tag, int src,
                   int dst, int reduce, float *buf, size_t n, float *tmp,
                   MPI_Request *req);
/* Advance without blocking: 1 when every unit is processed and every send
 * complete, 0 if not yet, -1 on an MPI error. */
int ar_pipe_test(struct ar_pipe *pp);

/* The algorithms, one file each (ar_mpi.c, ar_ring.c, ...). */
extern const struct allreduce_algo ar_mpi, ar_ring, ar_rhd, ar_hier,
    ar_shm;
/* the ring's halves (allreduce.h: comm_reduce_scatter, comm_allgather) */
extern const struct allreduce_algo ar_ring_rs, ar_ring_ag;
/* the same halves on a group's shared segments (ar_shm.c) */
extern const struct allreduce_algo ar_shm_rs, ar_shm_ag;

/* Start-time check shared by the algorithms: the caller's scratch holds
 * at least `need` bytes (the same verdict on every rank, as g and n are
 * the same). */
static inline int ar_scratch_ok(const struct comm_op *op, size_t need)
{
    return op->scratch_bytes >= need && (need == 0 || op->scratch);
}

#endif
