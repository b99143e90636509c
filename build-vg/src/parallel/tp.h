/*
 * tp.h - the collectives of tensor-parallel (Megatron) layers.
 *
 * A column-parallel layer (QKV, FC) splits its weight's output rows over
 * the tp ranks, a row-parallel layer (attention projection, FC2) its input
 * columns.  A column/row pair needs exactly two collectives:
 *   forward   g: all-reduce the row-parallel layer's partial outputs
 *   backward  f: all-reduce the column-parallel layer's input gradients
 * Both are tp_allreduce_sum.  It runs comm/'s ring all-reduce on a
 * comm_group built over the tp communicator, whose summation order depends
 * only on (tp, n): every tp rank ends with the same bits, so the
 * replicated tensors (LayerNorms, biases of row-parallel layers, the
 * embedding) stay identical on all tp ranks without further traffic.
 *
 * parallel/ depends on comm/ and MPI only (never on src/).
 */
#ifndef MPITRON_TP_H
#define MPITRON_TP_H

#include <mpi.h>
#include <stddef.h>

#include "allreduce.h"
#include "comm.h"

struct tp_ctx {
    struct comm_group g;              /* the tp group (owned) */
    const struct allreduce_algo *algo; /* ring */
    struct comm_op op;                 /* reused by every call */
    void *scratch;                     /* owned, grown by tp_ctx_reserve */
    size_t scratch_bytes;
    size_t cap;                        /* floats the scratch is sized for */
    int size, rank;
};

/* Build the context over tp_comm (collective over it).  node_id as for
 * comm_group_init (the grid's node index).  max_n: the largest buffer (in
 * floats) that will be reduced; scratch for it is allocated here so that
 * a training step allocates nothing.  Returns 0, or -1 on every rank with
 * err filled (no memory, MPI error) and t left empty (safe to free). */
int tp_ctx_init(struct tp_ctx *t, MPI_Comm tp_comm, int node_id,
                size_t max_n, char *err, size_t errlen);
/* Grow the scratch to hold reductions of n floats.  0 or -1 (no memory,
 * the old scratch kept). */
int tp_ctx_reserve(struct tp_ctx *t, size_t n);
/* Free the group and the scratch; t may be empty (zeroed). */
void tp_ctx_free(struct tp_ctx *t);

/* buf (n floats) = its sum over the tp group, the same bits on every tp
 * rank.  Blocking, collective over the group: every tp rank calls it with
 * the same n in the same order.  t == NULL or a group of one: no-op.
 * Allocates only if n exceeds the reserved size.  A failed collective
 * cannot be recovered in the middle of a step: on MPI error or no memory
 * it prints the rank and calls MPI_Abort. */
void tp_allreduce_sum(float *buf, size_t n, struct tp_ctx *t);

/* The sum of v over the tp group, added in tp-rank order, so every tp rank
 * gets the same bits.  t == NULL: v.  Collective; aborts on MPI error. */
double tp_sum_double(double v, const struct tp_ctx *t);

#endif
