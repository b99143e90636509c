/*
 * test_grid.c - the dp x pp x tp process grid, under MPI.
 *
 * Run with mpirun -np 1, 2, 4, 6, 8 (--oversubscribe).  Every check is
 * made on every rank; a rank records its failures (printed to stderr with
 * the rank) and the ranks agree on the verdict with an all-reduce before
 * the CMocka assertion (CHECK and verdict() of tests/mpi_check.h), so one
 * failing rank never leaves the others hung in a collective.  Ranks other
 * than 0 send CMocka's stdout chatter to /dev/null; failures still reach
 * stderr.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grid.h"
#include "mpi_check.h"

/* The members of comm, as ranks of `world`, in comm rank order, must be
 * want[0..n).  comm must be a communicator derived from world. */
static void check_members(MPI_Comm comm, MPI_Comm world, const int *want,
                          int n, const char *name)
{
    int csize, wrank;
    MPI_Comm_size(comm, &csize);
    MPI_Comm_rank(world, &wrank);
    CHECK(csize == n, "%s size %d, want %d", name, csize, n);
    if (csize != n)
        return;
    int *got = malloc((size_t)n * sizeof *got);
    MPI_Allgather(&wrank, 1, MPI_INT, got, 1, MPI_INT, comm);
    for (int i = 0; i < n; i++)
        CHECK(got[i] == want[i], "%s member %d is world rank %d, want %d",
              name, i, got[i], want[i]);
    free(got);
}

/* Coordinates, sizes and members of tp/dp/pp against grid.h's formulas. */
static void check_grid(const struct grid *g, MPI_Comm world, int dp, int tp,
                       int pp)
{
    int r, size;
    MPI_Comm_rank(world, &r);
    MPI_Comm_size(world, &size);
    CHECK(g->rank == r && g->size == size, "rank %d size %d", g->rank,
          g->size);
    CHECK(g->dp == dp && g->tp == tp && g->pp == pp, "shape %d %d %d",
          g->dp, g->tp, g->pp);
    int tr = r % tp, dr = (r / tp) % dp, pr = r / (tp * dp);
    CHECK(g->tp_rank == tr && g->dp_rank == dr && g->pp_rank == pr,
          "coords dp %d tp %d pp %d, want %d %d %d", g->dp_rank, g->tp_rank,
          g->pp_rank, dr, tr, pr);
    int cr;
    MPI_Comm_rank(g->tp_comm, &cr);
    CHECK(cr == tr, "rank in tp_comm %d, want %d", cr, tr);
    MPI_Comm_rank(g->dp_comm, &cr);
    CHECK(cr == dr, "rank in dp_comm %d, want %d", cr, dr);
    MPI_Comm_rank(g->pp_comm, &cr);
    CHECK(cr == pr, "rank in pp_comm %d, want %d", cr, pr);

    int *want = malloc((size_t)size * sizeof *want);
    for (int i = 0; i < tp; i++) /* same dp, pp: tp neighbours */
        want[i] = i + tp * dr + tp * dp * pr;
    check_members(g->tp_comm, world, want, tp, "tp_comm");
    for (int i = 0; i < dp; i++) /* same tp, pp */
        want[i] = tr + tp * i + tp * dp * pr;
    check_members(g->dp_comm, world, want, dp, "dp_comm");
    for (int i = 0; i < pp; i++) /* same tp, dp */
        want[i] = tr + tp * dr + tp * dp * i;
    check_members(g->pp_comm, world, want, pp, "pp_comm");
    free(want);
    CHECK(g->world != MPI_COMM_NULL, "world is NULL");

    char buf[128], exp[128];
    grid_layout_string(g, buf, sizeof buf);
    snprintf(exp, sizeof exp, "dp=%d tp=%d pp=%d world=%d", dp, tp, pp, size);
    CHECK(strcmp(buf, exp) == 0, "layout '%s', want '%s'", buf, exp);
}

/* Every factorisation dp*tp*pp of the size of `world`, given explicitly
 * and with dp = 0. */
static void check_all_factorisations(MPI_Comm world)
{
    int size;
    MPI_Comm_size(world, &size);
    for (int tp = 1; tp <= size; tp++) {
        if (size % tp)
            continue;
        for (int pp = 1; pp <= size / tp; pp++) {
            if ((size / tp) % pp)
                continue;
            int dp = size / (tp * pp);
            for (int pass = 0; pass < 2; pass++) {
                struct grid g;
                char err[256] = "";
                int rc = grid_init(&g, world, pass ? 0 : dp, tp, pp, 0, err,
                                   sizeof err);
                CHECK(rc == 0, "grid_init(%d,%d,%d): %s", pass ? 0 : dp, tp,
                      pp, err);
                if (rc == 0) {
                    check_grid(&g, world, dp, tp, pp);
                    grid_free(&g);
                    CHECK(g.tp_comm == MPI_COMM_NULL &&
                              g.world == MPI_COMM_NULL,
                          "grid_free left a handle");
                }
            }
        }
    }
}

static void test_factorisations(void **state)
{
    (void)state;
    check_all_factorisations(MPI_COMM_WORLD);
    verdict();
}

/* The grid only knows the communicator it is given: build it on each
 * half (even and odd world ranks) of the world. */
static void test_factorisations_subcomm(void **state)
{
    (void)state;
    int r;
    MPI_Comm half;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_split(MPI_COMM_WORLD, r % 2, r, &half);
    check_all_factorisations(half);
    MPI_Comm_free(&half);
    verdict();
}

/* Expect -1 with exactly `want`, the same text on every rank, and no
 * communicator left behind. */
static void check_rejected(int dp, int tp, int pp, int rpn, const char *want)
{
    struct grid g;
    char err[256] = "", root[256];
    int rc = grid_init(&g, MPI_COMM_WORLD, dp, tp, pp, rpn, err, sizeof err);
    CHECK(rc == -1, "grid_init(%d,%d,%d,%d) returned %d", dp, tp, pp, rpn,
          rc);
    if (want)
        CHECK(strcmp(err, want) == 0, "message '%s', want '%s'", err, want);
    memcpy(root, err, sizeof root);
    MPI_Bcast(root, (int)sizeof root, MPI_CHAR, 0, MPI_COMM_WORLD);
    CHECK(strcmp(err, root) == 0, "message '%s' differs from rank 0's '%s'",
          err, root);
    CHECK(err[0] != '\0', "empty message");
    CHECK(g.world == MPI_COMM_NULL && g.tp_comm == MPI_COMM_NULL &&
              g.dp_comm == MPI_COMM_NULL && g.pp_comm == MPI_COMM_NULL &&
              g.node_comm == MPI_COMM_NULL && g.leader_comm == MPI_COMM_NULL,
          "a communicator was created");
    grid_free(&g); /* harmless on a failed grid */
}

static void test_rejected(void **state)
{
    (void)state;
    int size;
    char want[256];
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size == 6)
        check_rejected(2, 2, 1, 0,
                       "dp*tp*pp = 2*2*1 = 4 does not match the world size 6");
    snprintf(want, sizeof want,
             "dp*tp*pp = %d*1*1 = %d does not match the world size %d",
             size + 1, size + 1, size);
    check_rejected(size + 1, 1, 1, 0, want);
    snprintf(want, sizeof want,
             "dp*tp*pp = 1*%d*2 = %d does not match the world size %d", size,
             2 * size, size);
    check_rejected(1, size, 2, 0, want);
    snprintf(want, sizeof want,
             "tp*pp = %d*1 = %d does not divide the world size %d", size + 1,
             size + 1, size);
    check_rejected(0, size + 1, 1, 0, want);
    check_rejected(1, 0, 1, 0, NULL);
    check_rejected(1, 1, 0, 0, NULL);
    check_rejected(-1, 1, 1, 0, NULL);
    check_rejected(0, 1, 1, -2, NULL);
    verdict();
}

/* ranks_per_node = rpn: node k is world ranks [k rpn, (k+1) rpn). */
static void check_rpn(int rpn)
{
    int r, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    struct grid g;
    char err[256] = "";
    int rc = grid_init(&g, MPI_COMM_WORLD, 0, 1, 1, rpn, err, sizeof err);
    CHECK(rc == 0, "grid_init rpn %d: %s", rpn, err);
    if (rc != 0)
        return;
    int node = r / rpn, nnodes = (size + rpn - 1) / rpn;
    int first = node * rpn;
    int nsize = size - first < rpn ? size - first : rpn;
    CHECK(g.node == node && g.nnodes == nnodes, "rpn %d: node %d/%d, want "
          "%d/%d", rpn, g.node, g.nnodes, node, nnodes);
    CHECK(g.node_rank == r - first && g.node_size == nsize,
          "rpn %d: node rank %d/%d, want %d/%d", rpn, g.node_rank,
          g.node_size, r - first, nsize);
    int *want = malloc((size_t)size * sizeof *want);
    for (int i = 0; i < nsize; i++)
        want[i] = first + i;
    check_members(g.node_comm, MPI_COMM_WORLD, want, nsize, "node_comm");
    CHECK((g.leader_comm != MPI_COMM_NULL) == (r % rpn == 0),
          "rpn %d: leader_comm presence wrong", rpn);
    if (g.leader_comm != MPI_COMM_NULL) {
        for (int i = 0; i < nnodes; i++)
            want[i] = i * rpn;
        check_members(g.leader_comm, MPI_COMM_WORLD, want, nnodes,
                      "leader_comm");
        int lr;
        MPI_Comm_rank(g.leader_comm, &lr);
        CHECK(lr == node, "rank in leader_comm %d, want %d", lr, node);
    }
    free(want);
    grid_free(&g);
}

static void test_ranks_per_node(void **state)
{
    (void)state;
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    check_rpn(1);
    check_rpn(2);
    check_rpn(3);
    check_rpn(size + 5); /* one node holds everyone */
    verdict();
}

/* ranks_per_node = 0 (shared memory): the ranks of a node share a
 * processor name, the node count is the number of distinct names, and
 * the node index is consistent across each node and numbered in order of
 * the lowest world rank (the leader). */
static void test_shared_node(void **state)
{
    (void)state;
    int r, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    struct grid g;
    char err[256] = "";
    int rc = grid_init(&g, MPI_COMM_WORLD, 0, 1, 1, 0, err, sizeof err);
    CHECK(rc == 0, "grid_init shared: %s", err);
    verdict(); /* every rank stops here together if any failed */

    enum { H = MPI_MAX_PROCESSOR_NAME };
    char host[H] = "";
    int len, *info = malloc(3 * (size_t)size * sizeof *info);
    char *hosts = malloc((size_t)size * H);
    MPI_Get_processor_name(host, &len);
    MPI_Allgather(host, H, MPI_CHAR, hosts, H, MPI_CHAR, MPI_COMM_WORLD);
    int mine[3] = {g.node, g.node_rank, g.node_size};
    MPI_Allgather(mine, 3, MPI_INT, info, 3, MPI_INT, MPI_COMM_WORLD);
    int nnames = 0, first = -1, before = 0, same = 0;
    for (int i = 0; i < size; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(hosts + (size_t)i * H, hosts + (size_t)j * H) == 0;
        nnames += !seen;
        if (!seen && i < r)
            before++; /* nodes whose leader precedes mine */
        if (strcmp(hosts + (size_t)i * H, host) == 0) {
            if (first < 0)
                first = i;
            same++;
            CHECK(info[3 * i] == g.node, "rank %d on my host has node %d, "
                  "mine %d", i, info[3 * i], g.node);
        }
    }
    CHECK(g.nnodes == nnames, "nnodes %d, want %d", g.nnodes, nnames);
    CHECK(g.node_size == same, "node_size %d, want %d", g.node_size, same);
    CHECK(g.node_rank == 0 ? r == first : r != first, "leader is rank %d",
          first);
    if (r == first)
        CHECK(g.node == before, "node %d, want %d", g.node, before);
    CHECK((g.leader_comm != MPI_COMM_NULL) == (g.node_rank == 0),
          "leader_comm presence wrong");
    free(info);
    free(hosts);
    grid_free(&g);
    verdict();
}

/* The banner on rank 0: one line per rank, in rank order, with that
 * rank's coordinates (dp=0 resolved; tp = 2 when the size allows). */
static void test_banner(void **state)
{
    (void)state;
    int r, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int tp = size % 2 == 0 ? 2 : 1, dp = size / tp;
    struct grid g;
    char err[256] = "";
    int rc = grid_init(&g, MPI_COMM_WORLD, 0, tp, 1, 1, err, sizeof err);
    CHECK(rc == 0, "grid_init: %s", err);
    verdict(); /* every rank stops here together if any failed */
    char *text = NULL;
    size_t tlen = 0;
    FILE *out = r == 0 ? open_memstream(&text, &tlen) : NULL;
    grid_print_banner(&g, out);
    if (r == 0) {
        fclose(out);
        char host[MPI_MAX_PROCESSOR_NAME];
        int hl;
        MPI_Get_processor_name(host, &hl);
        char *line = text;
        for (int i = 0; i < size; i++) {
            char want[512];
            snprintf(want, sizeof want,
                     "rank %d  host %s  node %d/%d  dp %d/%d  tp %d/%d  "
                     "pp 0/1\n",
                     i, host, i, size, (i / tp) % dp, dp, i % tp, tp);
            CHECK(line && strncmp(line, want, strlen(want)) == 0,
                  "line %d is '%.80s', want '%s'", i, line ? line : "", want);
            line = line ? strchr(line, '\n') : NULL;
            line = line ? line + 1 : NULL;
        }
        CHECK(line && *line == '\0', "extra output after %d lines", size);
        free(text);
    }
    grid_free(&g);
    verdict();
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    if (r != 0 && !freopen("/dev/null", "w", stdout))
        fprintf(stderr, "rank %d: cannot silence stdout\n", r);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_factorisations),
        cmocka_unit_test(test_factorisations_subcomm),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_ranks_per_node),
        cmocka_unit_test(test_shared_node),
        cmocka_unit_test(test_banner),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
