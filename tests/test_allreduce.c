/*
 * test_allreduce.c - the reduction group and the all-reduce algorithms of
 * comm/ (mpi, ring, rhd, hier, shm, auto), under MPI.
 *
 * Run with mpirun -np 1..8 (--oversubscribe).  Inputs are functions of
 * (rank, index), so every rank can compute every other rank's input:
 *   - small integers: the exact sum is known, every algorithm must hit it;
 *   - dyadic values in [-1, 1) with 24 significant bits: sums round, so
 *     the bits depend on the order.  For ring, rhd and hier the test sums
 *     in the documented order with a naive loop (an independent
 *     reimplementation of the order, not of the state machine) and wants
 *     identical bits; every algorithm is compared with MPI_Allreduce
 *     within round-off, and every rank must hold rank 0's bits.
 * The build compiles comm/'s sources into this program with
 * AR_SEG_FLOATS = 4096 (16 KiB segments) so the lengths below span many
 * segments, receive windows and hier pieces; the reference orders read
 * the same constants.
 * Every check runs on every rank; the ranks agree on the verdict with an
 * all-reduce before the CMocka assertion (CHECK and verdict() of
 * tests/mpi_check.h), so a failure never leaves the others hung in a
 * collective.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allreduce.h"
#include "ar_internal.h" /* AR_SEG_FLOATS, AR_HIER_PIECES: hier's order */
#include "comm.h"
#include "mpi_check.h"
#include "shm.h"

static int wrank, wsize;

/* ---- inputs -------------------------------------------------------------- */

static const size_t lengths[] = {0, 1, 2, 7, 13, 97, 1000, 65537, 300001};
#define NLEN (sizeof lengths / sizeof lengths[0])

/* salt 0: integers in [-8, 8]; below SALT_WIDE dyadic values in [-1, 1);
 * from SALT_WIDE on, 24-bit mantissas times 2^-12 .. 2^12 with either
 * sign, so that every order of three terms or more rounds differently
 * somewhere (the sum orders are what the tests check). */
#define SALT_WIDE 100u
static float input(int r, size_t i, unsigned salt)
{
    if (salt == 0)
        return (float)((int)(((uint64_t)r * 7 + i * 13) % 17) - 8);
    uint64_t h = ((uint64_t)r << 40) ^ i ^ ((uint64_t)salt << 56);
    h += 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    if (salt >= SALT_WIDE)
        return ldexpf((float)((h >> 40) | (1u << 23)) / 16777216.0f,
                      (int)((h >> 8) % 25) - 12) * (h & 1 ? -1.0f : 1.0f);
    return (float)((double)(int64_t)(h >> 40) / 8388608.0 - 1.0);
}

static void fill(float *buf, size_t n, int r, unsigned salt)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = input(r, i, salt);
}

/* ---- the documented sum orders, element by element ----------------------- */

/* node layouts: rank r is on node r / rpn (rpn >= size: one node) */
struct layout {
    int rpn;
};

/* Ring over p contributors v[0..p): element i lies in chunk c (the first
 * n % p chunks one longer); sum from v[c] upwards, cyclically. */
static float ring_order(const float *v, int p, size_t n, size_t i)
{
    size_t q = n / (size_t)p, r = n % (size_t)p, c;
    c = i < r * (q + 1) ? i / (q + 1) : r + (i - r * (q + 1)) / q;
    float s = v[c];
    for (int k = 1; k < p; k++)
        s += v[(c + (size_t)k) % (size_t)p];
    return s;
}

static float rhd_order(const float *v, int p)
{
    float t[8];
    int pof2 = 1;
    while (pof2 * 2 <= p)
        pof2 *= 2;
    for (int r = 0; r < pof2; r++)
        t[r] = r + pof2 < p ? v[r] + v[r + pof2] : v[r];
    for (int d = pof2 / 2; d >= 1; d /= 2) {
        float u[8];
        for (int r = 0; r < pof2; r++)
            u[r] = t[r] + t[r ^ d];
        memcpy(t, u, sizeof t);
    }
    return t[0];
}

/* Chain inside each node (last node rank first), ring over the nodes
 * inside each of hier's pieces (ar_internal.h: min(AR_HIER_PIECES,
 * ceil(n / AR_SEG_FLOATS)) pieces, the first n % K one longer). */
static float hier_order(const float *v, int p, int rpn, size_t n, size_t i)
{
    size_t k = (n + AR_SEG_FLOATS - 1) / AR_SEG_FLOATS, q, r, j, off, len;
    k = k < 1 ? 1 : k > AR_HIER_PIECES ? AR_HIER_PIECES : k;
    q = n / k;
    r = n % k;
    j = i < r * (q + 1) ? i / (q + 1) : r + (i - r * (q + 1)) / q;
    off = j * q + (j < r ? j : r);
    len = q + (j < r);
    float part[8];
    int nn = (p + rpn - 1) / rpn;
    for (int k = 0; k < nn; k++) {
        int lo = k * rpn, hi = lo + rpn < p ? lo + rpn : p;
        float s = v[hi - 1];
        for (int r = hi - 2; r >= lo; r--)
            s += v[r];
        part[k] = s;
    }
    return ring_order(part, nn, len, i - off);
}

/* want[i] in the order of algo ("ring" and "shm", "rhd", "hier"). */
static void expected(const char *algo, int p, int rpn, size_t n,
                     unsigned salt, float *want)
{
    float v[8] = {0}; /* p >= 1; zeroed for gcc -Werror=maybe-uninitialized */
    for (size_t i = 0; i < n; i++) {
        for (int r = 0; r < p; r++)
            v[r] = input(r, i, salt);
        if (strcmp(algo, "ring") == 0 || strcmp(algo, "shm") == 0)
            want[i] = ring_order(v, p, n, i);
        else if (strcmp(algo, "rhd") == 0)
            want[i] = rhd_order(v, p);
        else
            want[i] = hier_order(v, p, rpn, n, i);
    }
}

/* ---- groups -------------------------------------------------------------- */

static int group_make(struct comm_group *g, int rpn)
{
    return comm_group_init(g, MPI_COMM_WORLD, wrank / rpn);
}

static void test_group(void **state)
{
    (void)state;
    const int rpns[] = {1, 2, 3, 64};
    for (size_t t = 0; t < sizeof rpns / sizeof rpns[0]; t++) {
        struct comm_group g;
        int rpn = rpns[t], nn = (wsize + rpn - 1) / rpn, node = wrank / rpn;
        int want_size = (node + 1) * rpn <= wsize ? rpn : wsize - node * rpn;
        /* node ids given in reverse and sparse: renumbered by leader rank */
        int rc = comm_group_init(&g, MPI_COMM_WORLD, 1000 - 10 * node);
        CHECK(rc == 0, "init rpn %d", rpn);
        if (rc != 0)
            continue;
        CHECK(g.rank == wrank && g.size == wsize, "rank %d size %d", g.rank,
              g.size);
        CHECK(g.node_rank == wrank % rpn, "rpn %d node_rank %d", rpn,
              g.node_rank);
        CHECK(g.node_size == want_size, "rpn %d node_size %d want %d", rpn,
              g.node_size, want_size);
        CHECK(g.node_id == node, "rpn %d node_id %d want %d", rpn, g.node_id,
              node);
        CHECK(g.nnodes == nn, "rpn %d nnodes %d want %d", rpn, g.nnodes, nn);
        CHECK((g.leaders != MPI_COMM_NULL) == (wrank % rpn == 0),
              "rpn %d leaders", rpn);
        if (g.leaders != MPI_COMM_NULL) {
            int lr, ls;
            MPI_Comm_rank(g.leaders, &lr);
            MPI_Comm_size(g.leaders, &ls);
            CHECK(lr == node && ls == nn, "leaders rank %d size %d", lr, ls);
        }
        CHECK(g.tag_ub >= 32767, "tag_ub %d", g.tag_ub);
        comm_group_free(&g);
        CHECK(g.comm == MPI_COMM_NULL && g.tag_seq == NULL, "freed");
    }
    /* a negative node id on one rank fails everywhere */
    struct comm_group g;
    int rc = comm_group_init(&g, MPI_COMM_WORLD, wrank == wsize - 1 ? -1 : 0);
    CHECK(rc == -1, "negative node id accepted");
    verdict();
}

/* ---- every algorithm, every length --------------------------------------- */

struct bufs {
    float *buf, *first, *want, *tmp;
};

/* Mismatches of got against want (bits), reporting the first. */
static void check_bits(const float *got, const float *want, size_t n,
                       const char *what, const char *algo, int rpn)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ == 0)
            first = i;
    CHECK(bad == 0, "%s rpn %d n %zu: %s: %zu mismatches, first [%zu] %a "
          "want %a", algo, rpn, n, what, bad, first, got[first], want[first]);
}

/* Every rank holds rank 0's bits. */
static void check_same_everywhere(const float *buf, float *tmp, size_t n,
                                  const char *algo, int rpn)
{
    memcpy(tmp, buf, n * sizeof(float));
    MPI_Bcast(tmp, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    check_bits(buf, tmp, n, "differs from rank 0", algo, rpn);
}

static void run_one(const char *name, const struct comm_group *g, int rpn,
                    size_t n, struct bufs *b)
{
    const struct allreduce_algo *algo = allreduce_find(name);
    int ours = strcmp(name, "mpi") != 0;
    /* integers: the exact sum */
    fill(b->buf, n, wrank, 0);
    CHECK(allreduce(algo, g, b->buf, n) == 0, "%s n %zu", name, n);
    for (size_t i = 0; i < n; i++) {
        float s = 0;
        for (int r = 0; r < wsize; r++)
            s += input(r, i, 0);
        b->want[i] = s;
    }
    check_bits(b->buf, b->want, n, "exact integer sum", name, rpn);
    /* dyadic values: MPI_Allreduce within round-off, our order exactly */
    fill(b->buf, n, wrank, 1);
    CHECK(allreduce(algo, g, b->buf, n) == 0, "%s n %zu", name, n);
    check_same_everywhere(b->buf, b->tmp, n, name, rpn);
    fill(b->tmp, n, wrank, 1);
    MPI_Allreduce(MPI_IN_PLACE, b->tmp, (int)n, MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
    size_t far = 0;
    for (size_t i = 0; i < n; i++)
        far += fabsf(b->buf[i] - b->tmp[i]) > 1e-5f;
    CHECK(far == 0, "%s rpn %d n %zu: %zu values differ from MPI_Allreduce",
          name, rpn, n, far);
    if (!ours)
        return;
    /* wide exponents: every order of the sum gives other bits (with the
     * dyadic values above, any order is exact up to 3 ranks) */
    fill(b->buf, n, wrank, SALT_WIDE + 4);
    CHECK(allreduce(algo, g, b->buf, n) == 0, "%s n %zu", name, n);
    expected(name, wsize, rpn, n, SALT_WIDE + 4, b->want);
    check_bits(b->buf, b->want, n, "documented sum order", name, rpn);
    /* deterministic: a second run gives the same bits */
    memcpy(b->first, b->buf, n * sizeof(float));
    fill(b->buf, n, wrank, SALT_WIDE + 4);
    CHECK(allreduce(algo, g, b->buf, n) == 0, "%s n %zu", name, n);
    check_bits(b->buf, b->first, n, "second run", name, rpn);
}

static void bufs_alloc(struct bufs *b, size_t n)
{
    b->buf = malloc(n * sizeof(float));
    b->first = malloc(n * sizeof(float));
    b->want = malloc(n * sizeof(float));
    b->tmp = malloc(n * sizeof(float));
    assert_non_null(b->buf && b->first && b->want && b->tmp);
}

static void bufs_free(struct bufs *b)
{
    free(b->buf);
    free(b->first);
    free(b->want);
    free(b->tmp);
}

/* mpi, ring, rhd: node layout irrelevant (rpn 2 to show it is ignored) */
static void test_flat_algorithms(void **state)
{
    (void)state;
    struct comm_group g;
    struct bufs b;
    bufs_alloc(&b, lengths[NLEN - 1]);
    assert_int_equal(group_make(&g, 2), 0);
    const char *names[] = {"mpi", "ring", "rhd"};
    for (size_t a = 0; a < 3; a++)
        for (size_t k = 0; k < NLEN; k++)
            run_one(names[a], &g, 2, lengths[k], &b);
    comm_group_free(&g);
    bufs_free(&b);
    verdict();
}

/* hier with ranks_per_node 1 (nodes of one rank), 2, 3 (uneven last node
 * when 3 does not divide p) and all ranks on one node */
static void test_hier_layouts(void **state)
{
    (void)state;
    const int rpns[] = {1, 2, 3, 64};
    struct bufs b;
    bufs_alloc(&b, lengths[NLEN - 1]);
    for (size_t t = 0; t < sizeof rpns / sizeof rpns[0]; t++) {
        struct comm_group g;
        assert_int_equal(group_make(&g, rpns[t]), 0);
        for (size_t k = 0; k < NLEN; k++)
            run_one("hier", &g, rpns[t], lengths[k], &b);
        comm_group_free(&g);
    }
    bufs_free(&b);
    verdict();
}

/* ---- the ring's halves: reduce-scatter, all-gather ---------------------- */

/* Runs one half to completion; *wire: the bytes this rank sent. */
static int run_half(const struct allreduce_algo *a, const struct comm_group *g,
                    float *buf, size_t n, uint64_t *wire)
{
    struct comm_op op;
    size_t bytes = a->scratch(g, n);
    void *scratch = malloc(bytes ? bytes : 1);
    allreduce_op_init(&op, a, g, buf, n, scratch, bytes);
    int rc = comm_op_start(&op);
    if (rc == 0)
        rc = comm_op_wait(&op);
    *wire = op.wire_bytes;
    free(scratch);
    return rc;
}

/* One length through a pair of halves on buf (in g's segments for shm),
 * as ZeRO uses them: reduce-scatter leaves this rank's own chunk (chunk
 * rank + 1, by the test's own partition arithmetic) with the ring's bits
 * (inputs of wide range: any other order differs); each rank poisons the
 * rest and "updates" its chunk (doubles it, exactly), rank 0 only after
 * a pause, so that the others' gathers must wait for it; the all-gather
 * then gives twice the ring result, on every rank.  Bytes: the ring
 * sends every chunk but its own (reduce-scatter) and every chunk but
 * rank + 2's (all-gather); shm reads p - 1 terms of its own chunk, then
 * copies every chunk but its own. */
static void halves_one(const struct comm_group *g, const struct bufs *b,
                       float *buf, size_t n, int shm)
{
    const struct allreduce_algo *rs = comm_reduce_scatter_for(g, buf, n);
    const struct allreduce_algo *ag = comm_allgather_for(g, buf, n);
    const char *name = shm ? "shm halves" : "ring halves";
    size_t q = n / (size_t)wsize, r = n % (size_t)wsize;
    size_t c = (size_t)((wrank + 1) % wsize);
    size_t lo = c * q + (c < r ? c : r), len = q + (c < r);
    size_t off, l2, c2 = (size_t)((wrank + 2) % wsize);
    size_t len2 = q + (c2 < r); /* chunk rank + 2: never sent by AG */
    uint64_t wire, rs_wire = shm ? (size_t)(wsize - 1) * len * 4
                                 : (n - len) * 4;
    uint64_t ag_wire = shm ? (n - len) * 4 : (n - len2) * 4;
    /* shm only where the buffer is in the segments (n = 0: the ring's) */
    CHECK(!strcmp(rs->name, shm && n ? "shm_reduce_scatter"
                                     : "reduce_scatter") &&
              !strcmp(ag->name, shm && n ? "shm_allgather" : "allgather"),
          "%s n %zu: picked %s and %s", name, n, rs->name, ag->name);
    comm_ring_own(n, wsize, wrank, &off, &l2);
    CHECK(off == lo && l2 == len, "n %zu own [%zu,+%zu) want [%zu,+%zu)",
          n, off, l2, lo, len);
    expected("ring", wsize, 1, n, SALT_WIDE + 1, b->want);
    fill(buf, n, wrank, SALT_WIDE + 1);
    CHECK(run_half(rs, g, buf, n, &wire) == 0, "%s rs %zu", name, n);
    CHECK(wire == (wsize > 1 && n ? rs_wire : 0), "%s rs %zu wire %llu",
          name, n, (unsigned long long)wire);
    check_bits(buf + lo, b->want + lo, len, "own chunk after "
               "reduce-scatter", name, 1);
    /* no barrier: once a reduce-scatter is complete nobody reads this
     * rank's buffer for it any more */
    for (size_t i = 0; i < n; i++)
        if (i < lo || i >= lo + len)
            buf[i] = NAN;
    if (wrank == 0)
        usleep(20000);
    for (size_t i = 0; i < n; i++) {
        if (i >= lo && i < lo + len)
            buf[i] *= 2.0f;
        b->want[i] *= 2.0f;
    }
    CHECK(run_half(ag, g, buf, n, &wire) == 0, "%s ag %zu", name, n);
    CHECK(wire == (wsize > 1 && n ? ag_wire : 0), "%s ag %zu wire %llu",
          name, n, (unsigned long long)wire);
    check_bits(buf, b->want, n, "all-gathered", name, 1);
    check_same_everywhere(buf, b->tmp, n, name, 1);
}

/* Three ops open at once: tested in a rank-dependent rotation, then
 * waited for oldest first on even ranks and newest first on odd ones
 * (shm's ops advance in start order whichever is waited for). */
static void test_and_wait_three(struct comm_op op[3], int tests,
                                const char *what)
{
    for (int t = 0; t < tests; t++)
        CHECK(comm_op_test(&op[(t + wrank) % 3]) >= 0, "%s: test", what);
    for (int j = 0; j < 3; j++) {
        int k = wrank % 2 ? 2 - j : j;
        CHECK(comm_op_wait(&op[k]) == 0, "%s: wait %d", what, k);
    }
}

/* shm's three kinds open at once in one queue, in disjoint parts of the
 * segments: an all-reduce, a reduce-scatter, an all-gather (each rank's
 * own chunk preset, the rest NaN), started in that order, tested and
 * waited for in rank-dependent orders. */
static void shm_mixed(const struct comm_group *g, struct comm_shm *s,
                      size_t n)
{
    float *part[3], *want = malloc(3 * n * sizeof(float));
    struct comm_op op[3];
    struct shm_op_scratch { _Alignas(64) char x[64]; } sc[3];
    const struct allreduce_algo *a[3];
    size_t lo, len;
    assert_non_null(want);
    comm_ring_own(n, wsize, wrank, &lo, &len);
    for (int j = 0; j < 3; j++)
        part[j] = s->buf[wrank] + (size_t)j * n;
    a[0] = allreduce_find("shm");
    a[1] = comm_reduce_scatter_for(g, part[1], n);
    a[2] = comm_allgather_for(g, part[2], n);
    CHECK(!strcmp(a[1]->name, "shm_reduce_scatter") &&
              !strcmp(a[2]->name, "shm_allgather"),
          "mixed: picked %s and %s", a[1]->name, a[2]->name);
    fill(part[0], n, wrank, SALT_WIDE + 2);
    expected("ring", wsize, 1, n, SALT_WIDE + 2, want);
    fill(part[1], n, wrank, SALT_WIDE + 3);
    expected("ring", wsize, 1, n, SALT_WIDE + 3, want + n);
    for (size_t i = 0; i < n; i++) { /* chunk c's values from its owner */
        want[2 * n + i] = (float)i * 0.25f;
        part[2][i] = i >= lo && i < lo + len ? want[2 * n + i] : NAN;
    }
    for (int j = 0; j < 3; j++) {
        CHECK(a[j]->scratch(g, n) <= sizeof sc[j], "scratch");
        allreduce_op_init(&op[j], a[j], g, part[j], n, &sc[j],
                          sizeof sc[j]);
        CHECK(comm_op_start(&op[j]) == 0, "mixed start %d", j);
    }
    test_and_wait_three(op, 30, "mixed");
    check_bits(part[0], want, n, "mixed: all-reduced", "shm", 1);
    check_bits(part[1] + lo, want + n + lo, len, "mixed: reduce-scattered",
               "shm", 1);
    check_bits(part[2], want + 2 * n, n, "mixed: all-gathered", "shm", 1);
    free(want);
}

/* The ring's halves on private buffers, then the same halves on buffers
 * in the group's shared segments (ar_shm.c): the same chunks and bits;
 * with segments present a private buffer still takes the ring's; shm's
 * three kinds in one queue. */
static void test_halves(void **state)
{
    (void)state;
    struct comm_group g;
    struct comm_shm s;
    struct bufs b;
    char err[256] = "";
    size_t big = lengths[NLEN - 1];
    bufs_alloc(&b, big);
    assert_int_equal(group_make(&g, 1), 0);
    for (size_t k = 0; k < NLEN; k++)
        halves_one(&g, &b, b.buf, lengths[k], 0);
    comm_group_free(&g);
    assert_int_equal(group_make(&g, 64), 0); /* one node */
    int rc = comm_shm_init(&s, &g, 3 * big + 5, NULL, err, sizeof err);
    CHECK(rc == 0, "comm_shm_init: %s", err);
    if (rc == 0) {
        g.shm = &s;
        for (size_t k = 0; k < NLEN; k++)
            halves_one(&g, &b, s.buf[wrank] + 5, lengths[k], 1);
        halves_one(&g, &b, b.buf, 1000, 0); /* private: the ring's */
        for (size_t k = 1; k < NLEN; k++)
            shm_mixed(&g, &s, lengths[k]);
        g.shm = NULL;
        comm_shm_free(&s);
    }
    comm_group_free(&g);
    bufs_free(&b);
    verdict();
}

/* ---- several operations in flight on one group --------------------------- */

#define NOPS 5
struct flight {
    const char *algo;
    size_t n;
    struct comm_op op;
    void *scratch;
    float *buf, *want;
};

/* Bytes a ring rank sends: every chunk but (rank + 1)'s in the
 * reduce-scatter (it ends there), every chunk but (rank + 2)'s in the
 * all-gather (the last one it receives). */
static uint64_t ring_wire(int p, int r, size_t n)
{
    size_t q = n / (size_t)p, m = n % (size_t)p;
    size_t c1 = (size_t)(r + 1) % (size_t)p, c2 = (size_t)(r + 2) % (size_t)p;
    size_t l1 = q + (c1 < m), l2 = q + (c2 < m);
    return p == 1 || n == 0 ? 0 : (2 * n - l1 - l2) * sizeof(float);
}

static void flight_start(struct flight *f, unsigned salt)
{
    for (int j = 0; j < NOPS; j++) {
        unsigned s = strcmp(f[j].algo, "mpi") == 0 ? 0 : salt + (unsigned)j;
        fill(f[j].buf, f[j].n, wrank, s);
        if (s == 0)
            for (size_t i = 0; i < f[j].n; i++) {
                f[j].want[i] = 0;
                for (int r = 0; r < wsize; r++)
                    f[j].want[i] += input(r, i, 0);
            }
        else
            expected(f[j].algo, wsize, 2, f[j].n, s, f[j].want);
        CHECK(comm_op_start(&f[j].op) == 0, "start %d (%s)", j, f[j].algo);
    }
    for (int j = 0; j < NOPS; j++)
        for (int k = j + 1; k < NOPS; k++)
            CHECK(f[j].op.tag != f[k].op.tag, "ops %d and %d share tag %d",
                  j, k, f[j].op.tag);
}

/* Test in a rank-dependent interleaved order for a while, then wait in
 * the order `order` (the same on every rank), and check. */
static void flight_finish(struct flight *f, const int *order)
{
    for (int round = 0; round < 40; round++)
        for (int j = 0; j < NOPS; j++) {
            int k = wrank % 2 ? NOPS - 1 - j : (j + round) % NOPS;
            CHECK(comm_op_test(&f[k].op) >= 0, "test %d", k);
        }
    for (int j = 0; j < NOPS; j++)
        CHECK(comm_op_wait(&f[order[j]].op) == 0, "wait %d", order[j]);
    for (int j = 0; j < NOPS; j++) {
        check_bits(f[j].buf, f[j].want, f[j].n, "in flight", f[j].algo, 2);
        CHECK(f[j].op.done && f[j].op.t_done >= f[j].op.t_start, "op %d", j);
    }
    CHECK(f[0].op.wire_bytes == ring_wire(wsize, wrank, f[0].n),
          "ring wire bytes %llu want %llu",
          (unsigned long long)f[0].op.wire_bytes,
          (unsigned long long)ring_wire(wsize, wrank, f[0].n));
}

static void test_in_flight(void **state)
{
    (void)state;
    struct comm_group g;
    struct flight f[NOPS] = {
        {.algo = "ring", .n = 65537},  {.algo = "hier", .n = 300001},
        {.algo = "rhd", .n = 1000},    {.algo = "ring", .n = 65537},
        {.algo = "mpi", .n = 13},
    };
    const int forward[NOPS] = {0, 1, 2, 3, 4}, backward[NOPS] = {4, 3, 2, 1, 0};
    assert_int_equal(group_make(&g, 2), 0);
    for (int j = 0; j < NOPS; j++) {
        const struct allreduce_algo *a = allreduce_find(f[j].algo);
        size_t sb = a->scratch(&g, f[j].n);
        f[j].scratch = malloc(sb ? sb : 1);
        f[j].buf = malloc(f[j].n * sizeof(float));
        f[j].want = malloc(f[j].n * sizeof(float));
        assert_non_null(f[j].scratch && f[j].buf && f[j].want);
        allreduce_op_init(&f[j].op, a, &g, f[j].buf, f[j].n, f[j].scratch,
                          sb);
    }
    flight_start(f, SALT_WIDE + 10); /* wide: the order shows */
    flight_finish(f, forward);
    /* the same ops again (a bucket reuses its op every step) */
    flight_start(f, SALT_WIDE + 20);
    flight_finish(f, backward);
    for (int j = 0; j < NOPS; j++) {
        free(f[j].scratch);
        free(f[j].buf);
        free(f[j].want);
    }
    comm_group_free(&g);
    verdict();
}

/* ---- shm: buffers in the group's shared segments ------------------------ */

/* shm on every length, its buffer 37 floats into this rank's segment:
 * exact integer sums, the ring's bits, the same bits twice; several ops
 * open at once in disjoint parts of the segment, tested and waited for in
 * rank-dependent orders (an op waited for completes the older ones); a
 * buffer outside the segments refused. */
static void test_shm(void **state)
{
    (void)state;
    struct comm_group g;
    struct comm_shm s;
    struct bufs b;
    char err[256] = "";
    size_t big = lengths[NLEN - 1];
    assert_int_equal(group_make(&g, 64), 0);
    CHECK(comm_shm_possible(g.comm, 0) == 1, "one node: shm possible");
    /* another node id per rank (ranks_per_node 1): not one node */
    CHECK(comm_shm_possible(g.comm, wrank) == (wsize == 1), "rpn 1");
    int rc = comm_shm_init(&s, &g, 3 * big + 37, NULL, err, sizeof err);
    CHECK(rc == 0, "comm_shm_init: %s", err);
    if (rc != 0) {
        comm_group_free(&g);
        verdict();
        return;
    }
    g.shm = &s;
    bufs_alloc(&b, big);
    float *own = b.buf;
    b.buf = s.buf[wrank] + 37;
    for (size_t k = 0; k < NLEN; k++)
        run_one("shm", &g, 64, lengths[k], &b);
    b.buf = own;
    /* three ops open at once */
    const struct allreduce_algo *a = allreduce_find("shm");
    struct comm_op op[3];
    struct shm_op_scratch { _Alignas(64) char x[64]; } sc[3];
    float *want = malloc(3 * big * sizeof(float));
    assert_non_null(want);
    for (int round = 0; round < 2; round++) {
        for (int j = 0; j < 3; j++) {
            float *buf = s.buf[wrank] + 37 + (size_t)j * big;
            size_t n = big - (size_t)j * 1000;
            CHECK(a->scratch(&g, n) <= sizeof sc[j], "scratch");
            unsigned salt = SALT_WIDE + 30 + (unsigned)(round * 3 + j);
            fill(buf, n, wrank, salt);
            expected("shm", wsize, 64, n, salt, want + (size_t)j * big);
            allreduce_op_init(&op[j], a, &g, buf, n, &sc[j], sizeof sc[j]);
            CHECK(comm_op_start(&op[j]) == 0, "start %d", j);
        }
        test_and_wait_three(op, 20, "open at once");
        for (int j = 0; j < 3; j++)
            check_bits(s.buf[wrank] + 37 + (size_t)j * big,
                       want + (size_t)j * big, big - (size_t)j * 1000,
                       "open at once", "shm", 64);
    }
    free(want);
    /* outside the segments: start fails on every rank */
    CHECK(allreduce(a, &g, b.tmp, 1000) == -1, "private buffer accepted");
    g.shm = NULL;
    CHECK(allreduce(a, &g, s.buf[wrank], 1000) == -1, "no segments");
    comm_shm_free(&s);
    bufs_free(&b);
    comm_group_free(&g);
    verdict();
}

/* ---- auto, the table, the tuning file ------------------------------------ */

static void test_find_and_pick(void **state)
{
    (void)state;
    const char *names[] = {"mpi", "ring", "rhd", "hier", "shm"};
    int i = 0;
    for (; allreduce_algos[i]; i++)
        CHECK(i < 5 && strcmp(allreduce_algos[i]->name, names[i]) == 0 &&
                  allreduce_find(names[i]) == allreduce_algos[i],
              "table entry %d", i);
    CHECK(i == 5, "%d algorithms", i);
    CHECK(allreduce_find("auto") != NULL, "auto");
    CHECK(allreduce_find("nope") == NULL && allreduce_find(NULL) == NULL,
          "unknown");

    struct allreduce_tune t = {.small_max = 4096, .hier_min = 65536};
    const struct allreduce_algo *rhd = allreduce_find("rhd"),
                                *ring = allreduce_find("ring"),
                                *hier = allreduce_find("hier");
    const int rpns[] = {1, 2, 64};
    for (int k = 0; k < 3; k++) {
        struct comm_group g;
        assert_int_equal(group_make(&g, rpns[k]), 0);
        /* hier needs >1 node with some node of >1 rank: rpn 2 and p >= 3 */
        int multi = rpns[k] == 2 && wsize >= 3;
        CHECK(allreduce_pick(&t, &g, 1023) == rhd, "4092 B");
        CHECK(allreduce_pick(&t, &g, 1024) == ring, "4096 B");
        CHECK(allreduce_pick(&t, &g, 16383) == ring, "65532 B");
        CHECK(allreduce_pick(&t, &g, 16384) == (multi ? hier : ring),
              "65536 B rpn %d", rpns[k]);
        CHECK(allreduce_pick(&t, &g, 1 << 24) == (multi ? hier : ring),
              "64 MiB rpn %d", rpns[k]);
        /* auto through the blocking call: right sum at a few sizes */
        for (size_t n = 1; n <= 300001; n *= 13) {
            float *buf = malloc(n * sizeof(float));
            assert_non_null(buf);
            fill(buf, n, wrank, 0);
            CHECK(allreduce(allreduce_find("auto"), &g, buf, n) == 0, "auto");
            for (size_t e = 0; e < n; e++) {
                float s = 0;
                for (int r = 0; r < wsize; r++)
                    s += input(r, e, 0);
                CHECK(buf[e] == s, "auto n %zu [%zu] %g want %g", n, e,
                      buf[e], s);
                if (buf[e] != s)
                    break;
            }
            free(buf);
        }
        comm_group_free(&g);
    }
    struct allreduce_tune d;
    allreduce_tune_defaults(&d);
    CHECK(d.small_max > 0 && d.hier_min >= d.small_max, "defaults");
    verdict();
}

/* Write text to a per-rank temporary file; returns its path. */
static void write_file(char *path, size_t len, const char *text)
{
    snprintf(path, len, "/tmp/test_allreduce.%d.%d.tune", (int)getpid(),
             wrank);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_tune_load(void **state)
{
    (void)state;
    char path[128], err[256];
    struct allreduce_tune t;
    allreduce_tune_defaults(&t);
    size_t hier0 = t.hier_min;
    write_file(path, sizeof path,
               "# measured\n\n  small_max = 32768  # bytes\n");
    CHECK(allreduce_tune_load(&t, path, err, sizeof err) == 0, "%s", err);
    CHECK(t.small_max == 32768 && t.hier_min == hier0, "small_max %zu",
          t.small_max);
    write_file(path, sizeof path, "hier_min=2M\nsmall_max = 8k\n");
    CHECK(allreduce_tune_load(&t, path, err, sizeof err) == 0, "%s", err);
    CHECK(t.hier_min == (2u << 20) && t.small_max == 8192, "%zu %zu",
          t.hier_min, t.small_max);
    write_file(path, sizeof path, "small_max = 1\nbogus = 3\n");
    CHECK(allreduce_tune_load(&t, path, err, sizeof err) == -1, "bad key");
    CHECK(strstr(err, path) && strstr(err, ":2:") && strstr(err, "bogus"),
          "err '%s'", err);
    write_file(path, sizeof path, "hier_min = -4\n");
    CHECK(allreduce_tune_load(&t, path, err, sizeof err) == -1, "bad value");
    CHECK(strstr(err, ":1:") && strstr(err, "-4"), "err '%s'", err);
    write_file(path, sizeof path, "hier_min 4\n");
    CHECK(allreduce_tune_load(&t, path, err, sizeof err) == -1, "no '='");
    unlink(path);
    CHECK(allreduce_tune_load(&t, path, err, sizeof err) == -1, "missing");
    CHECK(strstr(err, path) != NULL, "err '%s'", err);
    verdict();
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    if (wsize > 8) {
        if (wrank == 0)
            fprintf(stderr, "test_allreduce: at most 8 ranks\n");
        MPI_Finalize();
        return 77;
    }
    if (wrank != 0 && !freopen("/dev/null", "w", stdout))
        fprintf(stderr, "rank %d: cannot silence stdout\n", wrank);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group),
        cmocka_unit_test(test_flat_algorithms),
        cmocka_unit_test(test_hier_layouts),
        cmocka_unit_test(test_in_flight),
        cmocka_unit_test(test_halves),
        cmocka_unit_test(test_shm),
        cmocka_unit_test(test_find_and_pick),
        cmocka_unit_test(test_tune_load),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
