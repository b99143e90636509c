/*
 * shm.h - memory that the ranks of a one-node group map into every one of
 * them: each rank owns a segment of n floats (the data-parallel gradient
 * arena) and can read the others' segments directly.  The `shm'
 * all-reduce (comm/ar_shm.c) reduces buffers that lie in the segments
 * without passing a message: each rank sums its chunk straight out of
 * the other ranks' segments, then copies the other ranks' summed chunks,
 * coordinated by counters in the segments themselves.
 *
 * One file per group in a memory file system (COMM_SHM_DIR, /dev/shm,
 * where shm_open puts its objects on Linux, unless the caller names
 * another directory), created sparse by the group's rank 0 and unlinked
 * as soon as every rank has mapped it, before any page is reserved: a
 * kill leaves at most an empty file behind, and freeing is local
 * (munmap), never a collective.  Then each rank reserves its own
 * segment's pages (posix_fallocate on its range), so a tmpfs too small
 * for them (a container's 64 MiB /dev/shm) is a clear error at start-up
 * instead of a SIGBUS in the middle of a step, and on a multi-socket node
 * each segment's pages are on its owner's NUMA node.
 */
#ifndef MPITRON_SHM_H
#define MPITRON_SHM_H

#include <mpi.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct comm_group;
struct comm_op;

/* A rank's counters, at the start of its segment: the sequence number of
 * the last operation (all-reduce, reduce-scatter or all-gather: one
 * sequence) it started (its data final), whose own chunk it summed, and
 * whose other chunks it copied.  Each on its own cache line: one writer
 * (the owner), any readers. */
struct comm_shm_ctl {
    _Alignas(64) _Atomic uint64_t ready;
    _Alignas(64) _Atomic uint64_t reduced;
    _Alignas(64) _Atomic uint64_t done;
};

struct comm_shm {
    int size, rank;
    size_t n;                   /* floats per rank */
    void *map;                  /* the whole object, mapped here */
    size_t map_bytes, seg_bytes;
    float **buf;                /* buf[r]: rank r's n floats */
    struct comm_shm_ctl **ctl;  /* ctl[r]: rank r's counters */
    uint64_t started;           /* this rank's all-reduces so far */
    unsigned idle;              /* polls in a row that found nothing */
    struct comm_op *head, *tail; /* the open ones, in start order */
};

/*
 * 1 on every rank when every rank of comm can map the others' memory
 * (MPI_COMM_TYPE_SHARED gives one piece) and all give the same node_id
 * (the grid's node map, which ranks_per_node may split on one machine),
 * else 0 on every rank.  Collective over comm.
 */
int comm_shm_possible(MPI_Comm comm, int node_id);

#define COMM_SHM_DIR "/dev/shm"

/*
 * Map size(g) segments of n floats (zeroed) shared by the ranks of g,
 * from a file in dir (NULL or "": COMM_SHM_DIR).  Collective over
 * g->comm; g must pass comm_shm_possible.  0, or -1 on every rank with
 * err saying why (the file, and e.g. no room: how many MiB it wanted).
 * An empty s (zeroed) is safe to free.
 */
int comm_shm_init(struct comm_shm *s, const struct comm_group *g, size_t n,
                  const char *dir, char *err, size_t errlen);
/* Unmap (local). */
void comm_shm_free(struct comm_shm *s);

/* 1 when buf[0..n) lies inside this rank's segment of s. */
int comm_shm_holds(const struct comm_shm *s, const float *buf, size_t n);

#endif
