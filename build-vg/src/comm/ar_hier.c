/*
 * ar_hier.c - hierarchical all-reduce over the group's nodes.
 *
 *   phase 0  reduce to the node leader along a pipelined chain in node
 *            rank order: node rank m-1 sends to m-2, which adds its own
 *            and forwards, ... to node rank 0, segment by segment; the
 *            node's partial is (((x_{m-1} + x_{m-2}) + ...) + x_0)
 *   phase 1  ring all-reduce of the partials among the leaders
 *            (g->leaders), the ring of ar_ring.c
 *   phase 2  broadcast inside the node along the chain 0 -> 1 -> ... ->
 *            m-1, segment by segment, received straight into buf
 *
 * A chain rather than a binomial tree: hier is picked for large buffers,
 * where a pipelined chain moves each byte over each link once (time ~ n +
 * (m - 1) segments) while a tree moves the whole buffer log2(m) times
 * through the root.
 *
 * The three phases overlap: buf is cut into K pieces (K from n alone, up
 * to AR_HIER_PIECES) and each phase takes the pieces in order, so piece j+1
 * climbs the node chain while piece j is in the leaders' ring and piece
 * j-1 comes down.  Each phase has its own pipe, requests and tmp.  On a
 * node's comm, phase 0 reaches node rank q from q+1 and phase 2 from
 * q-1, so the two never match each other's messages under one tag.
 *
 * The sum order depends only on the node layout and n; every rank
 * receives its leader's bits.  Nodes may differ in size.
 */
#include <string.h>

#include "ar_internal.h"

#define HIER_NREQ (AR_PIPE_NBUF + AR_PIPE_NSEND)

struct hier {
    int k;                /* pieces */
    int started[3], done[3], active[3];
    struct ar_pipe pp[3];
    MPI_Request req[3][HIER_NREQ];
    float *tmp[3];
};

/* Pieces of about one segment each, at most AR_HIER_PIECES. */
static int hier_pieces(size_t n)
{
    size_t k = (n + AR_SEG_FLOATS - 1) / AR_SEG_FLOATS;
    return k < 1 ? 1 : k > AR_HIER_PIECES ? AR_HIER_PIECES : (int)k;
}

static size_t hier_tmp_floats(const struct comm_group *g, size_t n,
                              size_t *chain, size_t *ring)
{
    size_t piece = (n + (size_t)hier_pieces(n) - 1) / (size_t)hier_pieces(n);
    *chain = ar_chain_tmp_floats(piece);
    *ring = ar_ring_tmp_floats(g->nnodes, piece);
    return 2 * *chain + *ring;
}

static size_t hier_scratch(const struct comm_group *g, size_t n)
{
    size_t chain, ring;
    return AR_ALIGN(sizeof(struct hier))
         + hier_tmp_floats(g, n, &chain, &ring) * sizeof(float);
}

/* Start phase ph on piece j. */
static void hier_phase(struct comm_op *op, struct hier *s, int ph, int j)
{
    const struct comm_group *g = op->g;
    int q = g->node_rank, m = g->node_size;
    int up = q > 0 ? q - 1 : MPI_PROC_NULL;
    int down = q + 1 < m ? q + 1 : MPI_PROC_NULL;
    size_t off, len;
    ar_part(op->n, (size_t)s->k, (size_t)j, &off, &len);
    float *b = op->buf + off;
    if (ph == 0)
        ar_pipe_chain(&s->pp[0], g->node, op->tag, down, up, 1, b, len,
                      s->tmp[0], s->req[0]);
    else if (ph == 1 && g->leaders != MPI_COMM_NULL)
        ar_pipe_ring(&s->pp[1], g->leaders, op->tag, b, len, s->tmp[1],
                     s->req[1]);
    else if (ph == 1) /* not a leader: nothing to do */
        ar_pipe_chain(&s->pp[1], g->node, op->tag, MPI_PROC_NULL,
                      MPI_PROC_NULL, 0, b, 0, s->tmp[1], s->req[1]);
    else
        ar_pipe_chain(&s->pp[2], g->node, op->tag, up, down, 0, b, len,
                      s->tmp[2], s->req[2]);
    s->active[ph] = 1;
    s->started[ph]++;
}

static int hier_test(struct comm_op *op)
{
    struct hier *s = op->state;
    for (;;) {
        int moved = 0;
        for (int ph = 0; ph < 3; ph++) {
            if (s->active[ph]) {
                int r = ar_pipe_test(&s->pp[ph]);
                op->wire_bytes += s->pp[ph].wire;
                s->pp[ph].wire = 0;
                if (r < 0)
                    return -1;
                if (r == 1) {
                    s->active[ph] = 0;
                    s->done[ph]++;
                    moved = 1;
                }
            }
            if (!s->active[ph] && s->started[ph] < s->k
                && (ph == 0 || s->done[ph - 1] > s->started[ph])) {
                hier_phase(op, s, ph, s->started[ph]);
                moved = 1;
            }
        }
        if (s->done[2] == s->k)
            return 1;
        if (!moved)
            return 0;
    }
}

static int hier_start(struct comm_op *op)
{
    struct hier *s = op->scratch;
    size_t chain, ring;
    if (!ar_scratch_ok(op, hier_scratch(op->g, op->n)))
        return -1;
    memset(s, 0, sizeof *s);
    s->k = hier_pieces(op->n);
    hier_tmp_floats(op->g, op->n, &chain, &ring);
    s->tmp[0] = (float *)((char *)op->scratch + AR_ALIGN(sizeof *s));
    s->tmp[1] = s->tmp[0] + chain;
    s->tmp[2] = s->tmp[1] + ring;
    op->state = s;
    op->nreq = 0; /* the requests live in the state */
    return hier_test(op) < 0 ? -1 : 0;
}

static const struct comm_op_ops hier_ops = {
    .name = "hier", .start = hier_start, .test = hier_test, .finish = NULL,
};

const struct allreduce_algo ar_hier = {
    .name = "hier", .ops = &hier_ops, .scratch = hier_scratch,
};
