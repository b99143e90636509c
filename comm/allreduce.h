/*
 * allreduce.h - sum all-reduce algorithms behind one interface.
 *
 *   mpi   MPI_Iallreduce (MPI's own; its reduction order is MPI's choice)
 *   ring  reduce-scatter then all-gather around a ring, each rank's chunk
 *         cut into segments that are pipelined (send segment s+1 while
 *         reducing segment s)
 *   rhd   recursive halving (reduce-scatter) then doubling (all-gather);
 *         any rank count: the ranks beyond the largest power of two first
 *         fold into a partner and receive the result at the end
 *   hier  reduce inside each node (to the node leader), all-reduce among
 *         node leaders with a flat algorithm (ring), broadcast inside the
 *         node
 *   shm   the ranks of one node sum and copy each other's chunks
 *         straight out of shared memory (ar_shm.c): only for buffers in
 *         the group's shared segments (g->shm, shm.h); start fails on
 *         any other buffer
 *   auto  picks one of mpi, ring, rhd, hier by message size and topology
 *         from thresholds measured by `mpitron bench allreduce` (shm is
 *         chosen by the owner of the buffer: the gradient buckets take
 *         it when the gradients live in the group's segments)
 *
 * Our algorithms (ring, rhd, hier, shm) are deterministic: the order in
 * which contributions are summed depends only on the rank count and n, so
 * the same inputs give the same bits on every run, and every rank ends
 * with identical bits (shm and ring: the same bits).  n may be 0, 1,
 * prime, or not divisible by the size.
 */
#ifndef MPITRON_ALLREDUCE_H
#define MPITRON_ALLREDUCE_H

#include "comm.h"

struct allreduce_algo {
    const char *name;
    const struct comm_op_ops *ops;
    /* scratch bytes needed for n floats on group g */
    size_t (*scratch)(const struct comm_group *g, size_t n);
};

/* NULL-terminated table of the concrete algorithms (mpi, ring, rhd, hier,
 * shm). */
extern const struct allreduce_algo *const allreduce_algos[];

/* Thresholds for auto, in bytes.  Defaults are built in; a tuning file
 * written by `mpitron bench allreduce --tune=FILE` overrides them. */
struct allreduce_tune {
    size_t small_max;  /* below: rhd (latency bound) */
    size_t hier_min;   /* at or above, with several nodes of >1 rank: hier */
};
void allreduce_tune_defaults(struct allreduce_tune *t);
/* Read "small_max = N" / "hier_min = N" lines (N in bytes, optionally
 * with a K, M or G suffix, powers of 1024; '#' starts a comment; keys the
 * file does not name keep their value in t).  0, or -1 with err naming the
 * file and line. */
int allreduce_tune_load(struct allreduce_tune *t, const char *path,
                        char *err, size_t errlen);

/* Look up by name ("mpi", "ring", "rhd", "hier", "auto"); NULL if
 * unknown.  auto resolves per call through allreduce_pick with the
 * built-in thresholds (allreduce_op_init and allreduce resolve it; its
 * scratch() is the largest of all algorithms').  A caller with a tuning
 * file calls allreduce_pick itself.  pick: t may be NULL (built-in). */
const struct allreduce_algo *allreduce_find(const char *name);
const struct allreduce_algo *allreduce_pick(const struct allreduce_tune *t,
                                            const struct comm_group *g,
                                            size_t n);

/* Prepare op for algo on (g, buf, n) with caller-owned scratch of at least
 * algo->scratch(g, n) bytes. */
void allreduce_op_init(struct comm_op *op, const struct allreduce_algo *algo,
                       const struct comm_group *g, float *buf, size_t n,
                       void *scratch, size_t scratch_bytes);

/* Blocking convenience: allocate scratch, start, wait, free.  0 or -1. */
int allreduce(const struct allreduce_algo *algo, const struct comm_group *g,
              float *buf, size_t n);

/*
 * The two halves of the ring, for data sharded over the group (ZeRO).
 * Both run through allreduce_op_init / comm_op_start / test / wait like
 * an all-reduce of buf (n floats, every rank the same n):
 *   comm_reduce_scatter  on completion rank r's chunk comm_ring_own(r)
 *                        of buf holds the sum over the group, in exactly
 *                        the bits that `ring` gives those elements (the
 *                        same order: the ring's first half); the rest of
 *                        buf holds partial sums (garbage to the caller)
 *   comm_allgather       on entry rank r's own chunk holds its final
 *                        values; on completion buf holds every rank's
 *                        chunk, the same bits everywhere (the ring's
 *                        second half: received chunks land in buf)
 * So reduce-scatter then all-gather of the same buffer is bitwise `ring`.
 * Their scratch() is the ring's (reduce-scatter) or a few hundred bytes
 * (all-gather).  Bytes on the wire: (p-1)/p * 4n each, half the ring's.
 */
extern const struct allreduce_algo *const comm_reduce_scatter;
extern const struct allreduce_algo *const comm_allgather;
/* The halves for buf on g: the shm ones when buf lies in g's shared
 * segments (comm/ar_shm.c: no message, the same chunks and the same bits
 * as the ring's), else the ring's.  Uniform over the ranks when every
 * rank's buf is at the same place (all in their segments, or none).
 * Their scratch() is at most the ring's. */
const struct allreduce_algo *comm_reduce_scatter_for(
    const struct comm_group *g, const float *buf, size_t n);
const struct allreduce_algo *comm_allgather_for(const struct comm_group *g,
                                                const float *buf, size_t n);
/* The chunk [*off, *off + *len) of n floats that rank `rank` of p owns
 * after comm_reduce_scatter: chunk (rank + 1) mod p of p chunks whose
 * lengths differ by at most one, the first n % p longer (p = 1: all). */
void comm_ring_own(size_t n, int p, int rank, size_t *off, size_t *len);

#endif
