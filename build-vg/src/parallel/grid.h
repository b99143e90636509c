/*
 * grid.h - the dp x pp x tp process grid.
 *
 * World rank r maps to coordinates with tp varying fastest, then dp, then
 * pp (Megatron's order), so the ranks of a tensor-parallel group are
 * neighbours and share a node:
 *     tp_rank = r % tp
 *     dp_rank = (r / tp) % dp
 *     pp_rank = r / (tp * dp)
 * Communicators: tp (same dp, pp), dp (same tp, pp), pp (same dp, tp),
 * node (ranks that share memory, MPI_COMM_TYPE_SHARED, or consecutive
 * groups of ranks_per_node when that override is set, to emulate several
 * nodes on one machine) and leaders (rank 0 of each node).
 */
#ifndef MPITRON_GRID_H
#define MPITRON_GRID_H

#include <mpi.h>
#include <stddef.h>
#include <stdio.h>

struct grid {
    MPI_Comm world, dp_comm, tp_comm, pp_comm, node_comm, leader_comm;
    int rank, size;
    int dp, tp, pp;
    int dp_rank, tp_rank, pp_rank;
    int node, nnodes;          /* this rank's node index, node count */
    int node_rank, node_size;  /* within node_comm */
};

/* Build the grid from world.  dp = 0 means world size / (tp * pp).
 * ranks_per_node = 0 uses MPI_COMM_TYPE_SHARED.  Collective.  Returns 0,
 * or -1 with err saying which product does not match the world size (the
 * same on every rank, nothing allocated). */
int grid_init(struct grid *g, MPI_Comm world, int dp, int tp, int pp,
              int ranks_per_node, char *err, size_t errlen);
void grid_free(struct grid *g);

/* One line per rank, gathered to world rank 0 and printed there in rank
 * order: world rank, host, node, dp/tp/pp coordinates.  Collective. */
void grid_print_banner(const struct grid *g, FILE *out);

/* "dp=D tp=T pp=P world=W" */
void grid_layout_string(const struct grid *g, char *buf, size_t len);

#endif
