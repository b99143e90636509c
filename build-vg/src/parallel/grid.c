/*
 * grid.c - the dp x pp x tp process grid (layout in grid.h).
 *
 * grid_init works on a duplicate of the caller's communicator, so the
 * grid's own traffic (the banner's point-to-point messages, anything a
 * caller runs on g->world) can never match a message of the caller's.
 */
#include "grid.h"

#include <string.h>

#define GRID_BANNER_TAG 7301

/* Every handle MPI_COMM_NULL, every number 0: safe for grid_free. */
static void grid_reset(struct grid *g)
{
    memset(g, 0, sizeof *g);
    g->world = g->dp_comm = g->tp_comm = g->pp_comm = MPI_COMM_NULL;
    g->node_comm = g->leader_comm = MPI_COMM_NULL;
}

static void grid_set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

/* Check the requested shape against the world size and resolve dp = 0.
 * Depends on the arguments and the size only, so every rank produces the
 * same verdict and the same text.  Returns 0 or -1 with msg set. */
static int grid_check_shape(int size, int *dp, int tp, int pp, int rpn,
                            char *msg, size_t len)
{
    if (tp < 1) {
        snprintf(msg, len, "tp = %d must be >= 1", tp);
        return -1;
    }
    if (pp < 1) {
        snprintf(msg, len, "pp = %d must be >= 1", pp);
        return -1;
    }
    if (*dp < 0) {
        snprintf(msg, len, "dp = %d must be >= 0 (0 = world size / (tp*pp))",
                 *dp);
        return -1;
    }
    if (rpn < 0) {
        snprintf(msg, len, "ranks_per_node = %d must be >= 0", rpn);
        return -1;
    }
    long long tpp = (long long)tp * pp;
    if (*dp == 0) {
        if (size % tpp != 0) {
            snprintf(msg, len,
                     "tp*pp = %d*%d = %lld does not divide the world size %d",
                     tp, pp, tpp, size);
            return -1;
        }
        *dp = (int)(size / tpp);
    }
    long long prod = (long long)*dp * tpp;
    if (prod != size) {
        snprintf(msg, len,
                 "dp*tp*pp = %d*%d*%d = %lld does not match the world size %d",
                 *dp, tp, pp, prod, size);
        return -1;
    }
    return 0;
}

/* Name the failed MPI call and the rank (this error is per rank). */
static int grid_mpi_fail(struct grid *g, int rc, const char *what, char *err,
                         size_t errlen)
{
    char es[MPI_MAX_ERROR_STRING], msg[MPI_MAX_ERROR_STRING + 128];
    int el = 0;
    MPI_Error_string(rc, es, &el);
    snprintf(msg, sizeof msg, "rank %d: %s failed: %s", g->rank, what, es);
    grid_set_err(err, errlen, msg);
    grid_free(g);
    return -1;
}

/* node_comm, leader_comm, node, nnodes, node_rank, node_size.
 * Returns an MPI error code; *what names the failing call. */
static int grid_init_nodes(struct grid *g, int rpn, const char **what)
{
    int rc;
    if (rpn > 0) {
        *what = "MPI_Comm_split(node)";
        rc = MPI_Comm_split(g->world, g->rank / rpn, g->rank, &g->node_comm);
    } else {
        *what = "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)";
        rc = MPI_Comm_split_type(g->world, MPI_COMM_TYPE_SHARED, g->rank,
                                 MPI_INFO_NULL, &g->node_comm);
    }
    if (rc != MPI_SUCCESS)
        return rc;
    MPI_Comm_rank(g->node_comm, &g->node_rank);
    MPI_Comm_size(g->node_comm, &g->node_size);

    *what = "MPI_Comm_split(leaders)";
    int color = g->node_rank == 0 ? 0 : MPI_UNDEFINED;
    rc = MPI_Comm_split(g->world, color, g->rank, &g->leader_comm);
    if (rc != MPI_SUCCESS)
        return rc;
    int nn[2] = {0, 0};
    if (g->leader_comm != MPI_COMM_NULL) {
        MPI_Comm_rank(g->leader_comm, &nn[0]);
        MPI_Comm_size(g->leader_comm, &nn[1]);
    }
    *what = "MPI_Bcast(node index)";
    rc = MPI_Bcast(nn, 2, MPI_INT, 0, g->node_comm);
    g->node = nn[0];
    g->nnodes = nn[1];
    return rc;
}

/*
 * On success g owns every communicator in it (free with grid_free, before
 * MPI_Finalize).  On error returns -1, writes the reason to err (at most
 * errlen bytes, NUL-terminated; err may be NULL) and leaves g with every
 * handle MPI_COMM_NULL: a shape error is decided before any MPI call, so
 * every rank returns -1 with the same text and nothing is allocated.
 */
int grid_init(struct grid *g, MPI_Comm world, int dp, int tp, int pp,
              int ranks_per_node, char *err, size_t errlen)
{
    char msg[256];
    int size, rank, rc;
    grid_reset(g);
    MPI_Comm_size(world, &size);
    MPI_Comm_rank(world, &rank);
    if (grid_check_shape(size, &dp, tp, pp, ranks_per_node, msg,
                         sizeof msg) != 0) {
        grid_set_err(err, errlen, msg);
        return -1;
    }
    g->rank = rank;
    g->size = size;
    g->dp = dp;
    g->tp = tp;
    g->pp = pp;
    g->tp_rank = rank % tp;
    g->dp_rank = (rank / tp) % dp;
    g->pp_rank = rank / (tp * dp);

    rc = MPI_Comm_dup(world, &g->world);
    if (rc != MPI_SUCCESS)
        return grid_mpi_fail(g, rc, "MPI_Comm_dup(world)", err, errlen);
    /* tp group: same (dp, pp), i.e. the same rank / tp */
    rc = MPI_Comm_split(g->world, rank / tp, g->tp_rank, &g->tp_comm);
    if (rc != MPI_SUCCESS)
        return grid_mpi_fail(g, rc, "MPI_Comm_split(tp)", err, errlen);
    /* dp group: same (tp, pp) */
    rc = MPI_Comm_split(g->world, g->tp_rank + tp * g->pp_rank, g->dp_rank,
                        &g->dp_comm);
    if (rc != MPI_SUCCESS)
        return grid_mpi_fail(g, rc, "MPI_Comm_split(dp)", err, errlen);
    /* pp group: same (tp, dp), i.e. the same rank % (tp * dp) */
    rc = MPI_Comm_split(g->world, rank % (tp * dp), g->pp_rank, &g->pp_comm);
    if (rc != MPI_SUCCESS)
        return grid_mpi_fail(g, rc, "MPI_Comm_split(pp)", err, errlen);

    const char *what = "";
    rc = grid_init_nodes(g, ranks_per_node, &what);
    if (rc != MPI_SUCCESS)
        return grid_mpi_fail(g, rc, what, err, errlen);
    return 0;
}

static void grid_comm_free(MPI_Comm *c)
{
    if (*c != MPI_COMM_NULL)
        MPI_Comm_free(c);
    *c = MPI_COMM_NULL;
}

/* Frees every communicator grid_init created (collective over those that
 * exist; safe on a grid that failed to initialise, and twice). */
void grid_free(struct grid *g)
{
    grid_comm_free(&g->leader_comm);
    grid_comm_free(&g->node_comm);
    grid_comm_free(&g->pp_comm);
    grid_comm_free(&g->dp_comm);
    grid_comm_free(&g->tp_comm);
    grid_comm_free(&g->world);
}

/* What each rank sends to rank 0 for the banner. */
struct grid_banner_rec {
    int v[10]; /* rank node nnodes dp_rank dp tp_rank tp pp_rank pp len */
    char host[MPI_MAX_PROCESSOR_NAME + 1];
};

static void grid_banner_rec_fill(const struct grid *g,
                                 struct grid_banner_rec *r)
{
    int len = 0;
    memset(r, 0, sizeof *r);
    MPI_Get_processor_name(r->host, &len);
    r->host[len < 0 ? 0 : len] = '\0';
    int v[10] = {g->rank, g->node, g->nnodes, g->dp_rank, g->dp,
                 g->tp_rank, g->tp, g->pp_rank, g->pp, len};
    memcpy(r->v, v, sizeof v);
}

static void grid_banner_rec_print(const struct grid_banner_rec *r, FILE *out)
{
    fprintf(out, "rank %d  host %s  node %d/%d  dp %d/%d  tp %d/%d  pp %d/%d\n",
            r->v[0], r->host, r->v[1], r->v[2], r->v[3], r->v[4], r->v[5],
            r->v[6], r->v[7], r->v[8]);
}

/* Rank 0 receives one fixed-size record per rank, in rank order, and
 * prints it to out (only rank 0 touches out; others may pass NULL).
 * Nothing is allocated.  Collective over g->world. */
void grid_print_banner(const struct grid *g, FILE *out)
{
    struct grid_banner_rec r;
    grid_banner_rec_fill(g, &r);
    if (g->rank != 0) {
        MPI_Send(&r, (int)sizeof r, MPI_BYTE, 0, GRID_BANNER_TAG, g->world);
        return;
    }
    grid_banner_rec_print(&r, out);
    for (int src = 1; src < g->size; src++) {
        MPI_Recv(&r, (int)sizeof r, MPI_BYTE, src, GRID_BANNER_TAG, g->world,
                 MPI_STATUS_IGNORE);
        r.host[MPI_MAX_PROCESSOR_NAME] = '\0';
        grid_banner_rec_print(&r, out);
    }
    fflush(out);
}

/* "dp=D tp=T pp=P world=W" into buf (len bytes, truncated, NUL-ended). */
void grid_layout_string(const struct grid *g, char *buf, size_t len)
{
    if (buf && len > 0)
        snprintf(buf, len, "dp=%d tp=%d pp=%d world=%d", g->dp, g->tp, g->pp,
                 g->size);
}
