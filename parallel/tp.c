/*
 * tp.c - the collectives of tensor-parallel layers (see tp.h).
 */
#include "tp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TP_MAX_RANKS 1024 /* tp_sum_double's stack of partials */

int tp_ctx_reserve(struct tp_ctx *t, size_t n)
{
    size_t need = t->algo->scratch(&t->g, n);
    if (need > t->scratch_bytes) {
        void *p = realloc(t->scratch, need);
        if (!p)
            return -1;
        t->scratch = p;
        t->scratch_bytes = need;
    }
    if (n > t->cap)
        t->cap = n;
    return 0;
}

int tp_ctx_init(struct tp_ctx *t, MPI_Comm tp_comm, int node_id,
                size_t max_n, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    int size = 0;
    MPI_Comm_size(tp_comm, &size);
    if (size > TP_MAX_RANKS) {
        snprintf(err, errlen, "tp=%d exceeds the supported %d ranks", size,
                 TP_MAX_RANKS);
        return -1;
    }
    if (comm_group_init(&t->g, tp_comm, node_id) < 0) {
        snprintf(err, errlen, "could not build the tensor-parallel group "
                 "(tp=%d): MPI error or no memory", size);
        memset(t, 0, sizeof(*t));
        return -1;
    }
    t->size = t->g.size;
    t->rank = t->g.rank;
    t->g.pg.name = "tp group";
    t->algo = allreduce_find("ring");
    int rc = t->algo ? tp_ctx_reserve(t, max_n) : -1;
    if (comm_agree(tp_comm, rc, NULL, 0) < 0) {
        snprintf(err, errlen, "out of memory for the tensor-parallel "
                 "all-reduce scratch (%zu floats) on this or another tp rank",
                 max_n);
        tp_ctx_free(t);
        return -1;
    }
    return 0;
}

void tp_ctx_free(struct tp_ctx *t)
{
    if (t->g.comm != MPI_COMM_NULL && t->g.size > 0)
        comm_group_free(&t->g);
    free(t->scratch);
    memset(t, 0, sizeof(*t));
}

void tp_allreduce_sum(float *buf, size_t n, struct tp_ctx *t)
{
    if (!t || t->size <= 1 || n == 0)
        return;
    if (tp_ctx_reserve(t, n) < 0) {
        fprintf(stderr, "mpitron: tp rank %d: out of memory for a "
                "tensor-parallel all-reduce of %zu floats\n", t->rank, n);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    allreduce_op_init(&t->op, t->algo, &t->g, buf, n, t->scratch,
                      t->scratch_bytes);
    phase_enter(PHASE_TP_ALLREDUCE, t->op.ops->name, (int64_t)n, 0, -1,
                &t->g.pg);
    if (comm_op_start(&t->op) < 0 || comm_op_wait(&t->op) < 0) {
        fprintf(stderr, "mpitron: tp rank %d: MPI error in a tensor-parallel "
                "all-reduce of %zu floats\n", t->rank, n);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
}

double tp_sum_double(double v, const struct tp_ctx *t)
{
    if (!t || t->size <= 1)
        return v;
    double all[TP_MAX_RANKS];
    phase_enter(PHASE_COLLECTIVE, "tensor-parallel sum of the gradient "
                "norm", -1, -1, -1, &t->g.pg);
    if (MPI_Allgather(&v, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, t->g.comm) !=
        MPI_SUCCESS) {
        fprintf(stderr, "mpitron: tp rank %d: MPI error summing over the "
                "tensor-parallel group\n", t->rank);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    double s = 0.0;
    for (int r = 0; r < t->size; r++)
        s += all[r];
    return s;
}
