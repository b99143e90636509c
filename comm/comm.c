/*
 * comm.c - reduction groups and the generic driver of non-blocking
 * operations (start / test / wait around an ops vtable).
 */
#include "comm.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int comm_agree(MPI_Comm comm, int rc, char *err, size_t errlen)
{
    int rank, key, root, any_msg, has;
    char msg[COMM_AGREE_MSG];

    MPI_Comm_rank(comm, &rank);
    key = rc ? rank : INT_MAX;
    MPI_Allreduce(&key, &root, 1, MPI_INT, MPI_MIN, comm);
    if (root == INT_MAX)
        return 0;
    has = err != NULL;
    MPI_Allreduce(&has, &any_msg, 1, MPI_INT, MPI_MAX, comm);
    if (!any_msg)
        return -1;
    if (rank == root)
        snprintf(msg, sizeof msg, "%s", err ? err : "");
    MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, root, comm);
    if (err && errlen > 0 && msg[0] && rank != root) {
        if (root == 0)
            snprintf(err, errlen, "%s", msg);
        else
            snprintf(err, errlen, "rank %d: %s", root, msg);
    }
    return -1;
}

static void group_clear(struct comm_group *g)
{
    memset(g, 0, sizeof *g);
    g->comm = g->node = g->leaders = MPI_COMM_NULL;
}

void comm_group_free(struct comm_group *g)
{
    if (g->leaders != MPI_COMM_NULL)
        MPI_Comm_free(&g->leaders);
    if (g->node != MPI_COMM_NULL)
        MPI_Comm_free(&g->node);
    if (g->comm != MPI_COMM_NULL)
        MPI_Comm_free(&g->comm);
    free(g->tag_seq);
    phase_group_free(&g->pg);
    group_clear(g);
}

/* The split into nodes and leaders, and the renumbered node id.  Every
 * rank makes the same calls in the same order (an MPI error is fatal
 * under the default handler; a returned one is returned here). */
static int group_split(struct comm_group *g, int node_id)
{
    int is_leader, nid = 0;
    if (MPI_Comm_split(g->comm, node_id, g->rank, &g->node) != MPI_SUCCESS)
        return -1;
    MPI_Comm_rank(g->node, &g->node_rank);
    MPI_Comm_size(g->node, &g->node_size);
    is_leader = g->node_rank == 0;
    if (MPI_Comm_split(g->comm, is_leader ? 0 : MPI_UNDEFINED, g->rank,
                       &g->leaders) != MPI_SUCCESS)
        return -1;
    if (MPI_Allreduce(&is_leader, &g->nnodes, 1, MPI_INT, MPI_SUM, g->comm)
        != MPI_SUCCESS)
        return -1;
    /* node id = the leader's rank among the leaders (split kept rank
     * order), broadcast inside the node */
    if (is_leader)
        MPI_Comm_rank(g->leaders, &nid);
    if (MPI_Bcast(&nid, 1, MPI_INT, 0, g->node) != MPI_SUCCESS)
        return -1;
    g->node_id = nid;
    return 0;
}

int comm_group_init(struct comm_group *g, MPI_Comm comm, int node_id)
{
    int bad, flag = 0, *ub = NULL;
    group_clear(g);
    if (MPI_Comm_dup(comm, &g->comm) != MPI_SUCCESS)
        goto fail;
    MPI_Comm_rank(g->comm, &g->rank);
    MPI_Comm_size(g->comm, &g->size);
    g->tag_seq = calloc(1, sizeof *g->tag_seq);
    bad = node_id < 0 || !g->tag_seq ||
          phase_group_init(&g->pg, "group", g->comm) < 0;
    /* agree before splitting, so a bad rank never leaves others hung */
    if (comm_agree(g->comm, bad ? -1 : 0, NULL, 0) < 0)
        goto fail;
    MPI_Comm_get_attr(g->comm, MPI_TAG_UB, &ub, &flag);
    g->tag_ub = flag && ub ? *ub : 32767; /* 32767: the standard's floor */
    if (group_split(g, node_id) != 0)
        goto fail;
    return 0;
fail:
    comm_group_free(g);
    return -1;
}

int comm_op_start(struct comm_op *op)
{
    const struct comm_group *g = op->g;
    op->phase = op->step = op->done = 0;
    op->nreq = 0;
    op->wire_bytes = 0;
    op->tag = 0;
    if (g->tag_seq) {
        /* tags 0..tag_ub, cycling: a clash needs tag_ub + 1 ops open */
        op->tag = (int)(*g->tag_seq % ((unsigned)g->tag_ub + 1u));
        ++*g->tag_seq;
    }
    op->t_start = MPI_Wtime();
    op->t_done = 0;
    if (op->ops->start(op) != 0)
        return -1;
    return 0;
}

int comm_op_test(struct comm_op *op)
{
    int r;
    if (op->done)
        return 1;
    r = op->ops->test(op);
    if (r == 1) {
        op->done = 1;
        op->t_done = MPI_Wtime();
        if (op->ops->finish)
            op->ops->finish(op);
    }
    return r;
}

int comm_op_wait(struct comm_op *op)
{
    int r;
    /* each test makes MPI calls, which is what progresses the messages
     * (Open MPI yields the core inside them when oversubscribed) */
    while ((r = comm_op_test(op)) == 0)
        ;
    return r == 1 ? 0 : -1;
}
