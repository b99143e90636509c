/*
 * comm.h - the communication layer's common ground: a reduction group with
 * its node structure, and the non-blocking operation every all-reduce
 * algorithm and every compressed reduction implements.
 *
 * comm/ depends on MPI only: it never includes a header from src/ or
 * parallel/.
 *
 * Progress model.  Open MPI 4.1 progresses non-blocking operations only
 * inside MPI calls.  Every operation here is therefore a state machine:
 * comm_op_start() posts its first messages and returns; comm_op_test()
 * advances it as far as it can without blocking (completing requests,
 * reducing received segments, posting the next ones) and returns 1 once
 * the result is in buf.  The training loop calls comm_op_test on open
 * operations between layer backward calls, so reductions progress while
 * backward computes; comm_op_wait() blocks.  This is the one place that
 * decides how overlap is driven.
 */
#ifndef MPITRON_COMM_H
#define MPITRON_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "phase.h"

/*
 * A reduction group (e.g. the data-parallel ranks) and its split into
 * nodes: `node` holds the group's ranks on this node, `leaders` the rank
 * with node_rank 0 of every node (MPI_COMM_NULL on the others).
 */
struct comm_group {
    MPI_Comm comm, node, leaders;
    int rank, size;
    int node_rank, node_size;
    int node_id, nnodes;
    /* Tag sequence (owned, allocated by comm_group_init): comm_op_start
     * draws op->tag from it, so operations open at the same time on this
     * group never share a tag.  Ranks start operations in the same order,
     * so every rank draws the same tag for the same operation. */
    int tag_ub;          /* MPI_TAG_UB of comm */
    unsigned *tag_seq;
    /* the group's world ranks, for the hang watchdog's reports; its
     * name is "group" unless the owner sets pg.name ("dp group") */
    struct phase_group pg;
    /* segments shared by the group's ranks (shm.h), set by the owner
     * that mapped them (not owned); the shm all-reduce reduces buffers
     * inside them.  NULL: none. */
    struct comm_shm *shm;
};

/* The one agreement on a status for comm/, parallel/ and src/ (ckpt/,
 * which includes only itself, has ckpt_agree).  Collective over comm.
 * Returns 0 when rc == 0 on every rank, else -1 on every rank.  When err
 * is not NULL (on every rank, or on none), every rank's err then holds
 * the message of the lowest failing rank (its err as it was, at most
 * COMM_AGREE_MSG bytes, prefixed "rank R: " when R is not 0 in comm), cut
 * to errlen; a failing rank with an empty err leaves the others' err
 * unchanged.  An MPI error aborts (MPI_ERRORS_ARE_FATAL). */
#define COMM_AGREE_MSG 1024
int comm_agree(MPI_Comm comm, int rc, char *err, size_t errlen);

/* Build from comm and this rank's node id (>= 0; ranks with the same id
 * share a node; the grid computes it, honouring ranks_per_node).
 * Collective over comm.  The group owns the communicators it creates
 * (comm is duplicated; node is split by node_id with key rank, so
 * node_rank 0 is the node's lowest rank; leaders holds the node_rank 0
 * ranks in rank order).  node_id is renumbered 0..nnodes-1 in the order of
 * the leaders' ranks.  Returns 0, or -1 on every rank (negative node_id on
 * some rank, no memory, MPI error) with g left empty. */
int comm_group_init(struct comm_group *g, MPI_Comm comm, int node_id);
/* Free the communicators and the tag sequence; g may be empty. */
void comm_group_free(struct comm_group *g);

struct comm_op;

/* The vtable of one kind of operation. */
struct comm_op_ops {
    const char *name;
    /* post the first messages; 0 or -1 */
    int (*start)(struct comm_op *op);
    /* advance without blocking; 1 when done, 0 if not yet, -1 on error */
    int (*test)(struct comm_op *op);
    /* release what start allocated (called once, after completion) */
    void (*finish)(struct comm_op *op);
};

#define COMM_OP_MAX_REQS 8

/*
 * One in-flight sum all-reduce of buf (n floats) over a group.  On
 * completion every rank holds the same bits in buf.  The scratch buffers
 * are sized by the algorithm's scratch() and owned by the caller (the
 * bucket), so nothing is allocated per step.
 */
struct comm_op {
    const struct comm_op_ops *ops;
    const struct comm_group *g;
    float *buf;
    size_t n;
    void *scratch;        /* algorithm's scratch, caller-owned */
    size_t scratch_bytes;
    /* state machine */
    int phase, step, done;
    MPI_Request req[COMM_OP_MAX_REQS]; /* open requests, if the op keeps
                             them here (hier keeps its own in state): only
                             the op's test may complete them */
    int nreq;
    void *state;          /* algorithm/codec private state, if any */
    int tag;              /* drawn by comm_op_start from g->tag_seq: use
                             it for every point-to-point message of the
                             op (on g->comm, g->node or g->leaders) */
    /* accounting */
    uint64_t wire_bytes;  /* bytes this rank sent */
    double t_start, t_done;
};

/*
 * comm_op_start: reset the state machine (phase, step, done, nreq,
 * wire_bytes), draw op->tag, stamp t_start and call ops->start.  Every
 * rank of the group must start the group's operations in the same order.
 * An op may be started again once it is done (a bucket reuses its op
 * every step).  0, or -1 if start failed.
 *
 * comm_op_test: 1 once done (then t_done is stamped and ops->finish has
 * been called once), 0 if not yet, -1 on error.  Never blocks.
 *
 * comm_op_wait: calls comm_op_test until it returns nonzero; 0 or -1.
 * Only the waited op's state machine advances (MPI progresses the
 * messages of the others), so all ranks must wait on open operations in
 * the same order, or test them until done.
 */
int comm_op_start(struct comm_op *op);
int comm_op_test(struct comm_op *op);
int comm_op_wait(struct comm_op *op);

#endif
