/*
 * ar_mpi.c - MPI's own all-reduce, non-blocking: MPI_Iallreduce in place,
 * advanced by MPI_Testall.  Its reduction order is MPI's choice.  Counts
 * beyond INT_MAX are cut into up to COMM_OP_MAX_REQS calls.
 */
#include <limits.h>

#include "ar_internal.h"

static size_t mpi_scratch(const struct comm_group *g, size_t n)
{
    (void)g;
    (void)n;
    return 0;
}

static int mpi_start(struct comm_op *op)
{
    const struct comm_group *g = op->g;
    size_t off = 0, piece = INT_MAX;
    op->state = NULL;
    op->nreq = 0;
    if (op->n > piece * COMM_OP_MAX_REQS)
        return -1;
    /* what a ring would send: MPI does not tell us */
    if (g->size > 1)
        op->wire_bytes = 2 * (uint64_t)(g->size - 1) * op->n
                       * sizeof(float) / (uint64_t)g->size;
    do {
        size_t len = op->n - off < piece ? op->n - off : piece;
        if (MPI_Iallreduce(MPI_IN_PLACE, op->buf + off, (int)len, MPI_FLOAT,
                           MPI_SUM, g->comm, &op->req[op->nreq])
            != MPI_SUCCESS)
            return -1;
        op->nreq++;
        off += len;
    } while (off < op->n);
    return 0;
}

static int mpi_test(struct comm_op *op)
{
    int flag;
    if (MPI_Testall(op->nreq, op->req, &flag, MPI_STATUSES_IGNORE)
        != MPI_SUCCESS)
        return -1;
    return flag ? 1 : 0;
}

static const struct comm_op_ops mpi_ops = {
    .name = "mpi", .start = mpi_start, .test = mpi_test, .finish = NULL,
};

const struct allreduce_algo ar_mpi = {
    .name = "mpi", .ops = &mpi_ops, .scratch = mpi_scratch,
};
