/*
 * test_zero.c - parallel/zero.c under MPI (np 1..4): the shard plan, the
 * order of unit uses, and the pools of reduce-scatters and all-gathers.
 *
 *   plan   units of odd sizes, the embedding unit split after its first
 *          tensor: the ranks' own chunks (gathered from every rank) tile
 *          every piece exactly once, chunk r + 1 of the ring's partition
 *          (computed here independently); segs tile the shard in order
 *          and each lies inside its tensor and its chunk
 *   order  every schedule (gpipe, 1f1b; p up to 4, every stage, m up to
 *          5) with and without the embedding unit: forward uses the units
 *          in order, backward in reverse; grad_first / grad_last mark
 *          exactly the first and last backward use of a unit in a
 *          micro-batch, step_last the last in the step; next_unit is the
 *          next different unit
 *   comm   more reduce-scatters and all-gathers in flight than the pools
 *          hold, waited in every order: each result is the ring's bits
 *          (comm_reduce_scatter / comm_allgather alone), every rank's
 *          pieces agree
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

#include "mpi_check.h"
#include "zero.h"

static int wrank, wsize;

/* tensors of lengths len[] in arena order, units [t0, t1) */
static void layout(struct zero_tensor *t, const size_t *len, int nt)
{
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        t[i].off = off;
        t[i].numel = len[i];
        off += len[i];
    }
}

static void test_plan(void **state)
{
    (void)state;
    const size_t len[] = {37, 5, 3, 3, 101, 7, 1, 64, 2, 0 + 9, 250};
    const int nt = (int)(sizeof len / sizeof len[0]);
    struct zero_tensor t[16];
    layout(t, len, nt);
    const struct zero_unit_spec us[] = {
        {-1, 0, 4, 1}, {0, 4, 7, 0}, {1, 7, 8, 0}, {2, 8, 11, 0},
    };
    struct zero_plan zp;
    char err[256];
    CHECK(zero_plan_build(&zp, t, nt, us, 4, wsize, wrank, err, sizeof err)
              == 0, "%s", err);
    CHECK(zp.npieces == 5 && zp.nunits == 4, "pieces %d units %d",
          zp.npieces, zp.nunits);
    CHECK(zp.pc[0].off == 0 && zp.pc[0].n == 37 && zp.pc[1].off == 37 &&
          zp.pc[1].n == 11, "the embedding unit's first tensor alone");
    CHECK(zp.embed_n == 48 && zp.max_block_n == 261, "sizes %zu %zu",
          zp.embed_n, zp.max_block_n);
    /* own chunks: the ring's chunk rank + 1, tiling each piece */
    size_t shard = 0;
    for (int k = 0; k < zp.npieces; k++) {
        const struct zero_piece *pc = &zp.pc[k];
        size_t q = pc->n / (size_t)wsize, r = pc->n % (size_t)wsize;
        size_t c = (size_t)((wrank + 1) % wsize);
        size_t lo = c * q + (c < r ? c : r), l = q + (c < r);
        CHECK(pc->own_off == lo && pc->own_len == l, "piece %d own [%zu,+%zu)",
              k, pc->own_off, pc->own_len);
        CHECK(pc->shard_off == shard, "piece %d shard_off %zu", k,
              pc->shard_off);
        shard += pc->own_len;
        unsigned long long mine[2] = {pc->own_off, pc->own_len}, all[16];
        MPI_Allgather(mine, 2, MPI_UNSIGNED_LONG_LONG, all, 2,
                      MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD);
        int *hit = calloc(pc->n + 1, sizeof(int));
        for (int rr = 0; rr < wsize; rr++)
            for (size_t e = 0; e < all[2 * rr + 1]; e++)
                hit[all[2 * rr] + e]++;
        for (size_t e = 0; e < pc->n; e++)
            CHECK(hit[e] == 1, "piece %d element %zu owned %d times", k, e,
                  hit[e]);
        free(hit);
    }
    CHECK(zp.shard_n == shard, "shard_n %zu", zp.shard_n);
    /* segs tile the shard in order, inside their tensor and chunk */
    size_t at = 0;
    for (int i = 0; i < zp.nsegs; i++) {
        const struct zero_seg *s = &zp.seg[i];
        CHECK(s->shard_off == at && s->len > 0, "seg %d", i);
        CHECK(s->t_off + s->len <= t[s->tensor].numel &&
              s->arena_off == t[s->tensor].off + s->t_off, "seg %d tensor", i);
        at += s->len;
    }
    CHECK(at == zp.shard_n, "segs cover %zu of %zu", at, zp.shard_n);
    CHECK(zero_unit_of(&zp, 2) == 3 && zero_unit_of(&zp, 7) == -1, "keys");
    zero_plan_free(&zp);
    /* units that do not tile the tensors are refused */
    const struct zero_unit_spec bad[] = {{-1, 0, 4, 1}, {0, 5, 11, 0}};
    CHECK(zero_plan_build(&zp, t, nt, bad, 2, wsize, wrank, err, sizeof err)
              == -1 && strstr(err, "tile"), "gap accepted: %s", err);
    verdict();
}

/* Check one order against its definition. */
static void check_order(const struct zero_order *o, const struct pp_schedule
                        *sc, int eu, int nb, int first, int last)
{
    const int *bu; /* block i is unit 1 + i (unit 0 the embedding unit) */
    int ub[8];
    for (int i = 0; i < nb; i++)
        ub[i] = 1 + i;
    bu = ub;
    int i = 0, nu = nb + 1;
    for (int a = 0; a < sc->n; a++) {
        int f = sc->a[a].op == PP_FWD, b = sc->a[a].op == PP_BWD;
        if (!f && !b)
            continue;
        int want[12], n = 0;
        if (eu >= 0 && (f ? first : last))
            want[n++] = eu;
        for (int k = 0; k < nb; k++)
            want[n++] = bu[f ? k : nb - 1 - k];
        if (eu >= 0 && (f ? last : first))
            want[n++] = eu;
        for (int k = 0; k < n; k++, i++) {
            const struct zero_use *u = &o->use[i];
            CHECK(i < o->n && u->unit == want[k] && u->mb == sc->a[a].mb &&
                  u->dir == (f ? ZERO_FWD : ZERO_BWD), "use %d", i);
        }
    }
    CHECK(i == o->n, "%d uses, want %d", o->n, i);
    for (int k = 0; k < o->n; k++) {
        const struct zero_use *u = &o->use[k];
        int earlier = 0, later = 0, later_step = 0, next = -1;
        for (int j = 0; j < o->n; j++) {
            const struct zero_use *v = &o->use[j];
            if (v->unit != u->unit || v->dir != ZERO_BWD)
                continue;
            earlier |= j < k && v->mb == u->mb;
            later |= j > k && v->mb == u->mb;
            later_step |= j > k;
        }
        for (int j = k + 1; j < o->n && next < 0; j++)
            if (o->use[j].unit != u->unit)
                next = o->use[j].unit;
        int bwd = u->dir == ZERO_BWD;
        CHECK(u->grad_first == (bwd && !earlier) &&
              u->grad_last == (bwd && !later) &&
              u->step_last == (bwd && !later_step) && u->next_unit == next,
              "use %d flags", k);
    }
    (void)nu;
}

static void test_order(void **state)
{
    (void)state;
    char err[256];
    for (int kind = 0; kind < 2; kind++)
        for (int p = 1; p <= 4; p++)
            for (int s = 0; s < p; s++)
                for (int m = 1; m <= 5; m++)
                    for (int fo = 0; fo < 2; fo++) {
                        struct pp_schedule sc;
                        struct zero_order o;
                        int first = s == 0, last = s == p - 1;
                        int eu = first || last ? 0 : -1, nb = 1 + (m + s) % 3;
                        int bu[4] = {1, 2, 3, 4};
                        if (pp_schedule_build(&sc, kind ? PP_1F1B : PP_GPIPE,
                                              p, s, m, fo, err, sizeof err))
                            fail_msg("%s", err);
                        CHECK(zero_order_build(&o, &sc, eu, bu, nb, first,
                                               last, err, sizeof err) == 0,
                              "%s", err);
                        check_order(&o, &sc, eu, nb, first, last);
                        zero_order_free(&o);
                        pp_schedule_free(&sc);
                    }
    verdict();
}

/* value of rank r's buffer i in test round k: 24-bit mantissas times
 * 2^-12 .. 2^12, either sign, so that another order of a sum gives other
 * bits (small integers would add exactly in any order) */
static float val(int r, size_t i, int k)
{
    uint64_t h = ((uint64_t)r << 40) ^ i ^ ((uint64_t)k << 56);
    h += 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    return ldexpf((float)((h >> 40) | (1u << 23)) / 16777216.0f,
                  (int)((h >> 8) % 25) - 12) * (h & 1 ? -1.0f : 1.0f);
}

/* The ring's sum of element i of n over the ranks: i lies in chunk c of
 * p (the first n % p one longer), summed from rank c upwards, cyclically
 * (the ring all-reduce's order, which ZeRO's reduce-scatter keeps). */
static float ring_sum(size_t n, size_t i, int k)
{
    size_t p = (size_t)wsize, q = n / p, r = n % p, c;
    c = i < r * (q + 1) ? i / (q + 1) : r + (i - r * (q + 1)) / q;
    float s = val((int)c, i, k);
    for (size_t j = 1; j < p; j++)
        s += val((int)((c + j) % p), i, k);
    return s;
}

static void test_comm(void **state)
{
    (void)state;
    struct comm_group g;
    struct zero_comm zc;
    char err[256];
    const size_t n[5] = {1, 10, 333, 4097, 70000};
    assert_int_equal(comm_group_init(&g, MPI_COMM_WORLD, 0), 0);
    /* pools of 2: the third start waits for the oldest */
    CHECK(zero_comm_init(&zc, &g, 70000, 2, 2, err, sizeof err) == 0, "%s",
          err);
    float *rs[5], *ag[5];
    int64_t hr[5], ha[5];
    for (int k = 0; k < 5; k++) {
        rs[k] = malloc(n[k] * sizeof(float));
        ag[k] = malloc(n[k] * sizeof(float));
        for (size_t i = 0; i < n[k]; i++) {
            rs[k][i] = val(wrank, i, k);
            ag[k][i] = -1000.0f; /* poison outside the own chunk */
        }
        size_t off, len;
        comm_ring_own(n[k], wsize, wrank, &off, &len);
        for (size_t i = off; i < off + len; i++)
            ag[k][i] = (float)i;
        hr[k] = zero_reduce_scatter_start(&zc, rs[k], n[k]);
        ha[k] = zero_allgather_start(&zc, ag[k], n[k]);
        CHECK(hr[k] > 0 && ha[k] > 0, "start %d", k);
    }
    for (int k = 4; k >= 0; k--) { /* waited newest first */
        CHECK(zero_comm_wait(&zc, ha[k]) == 0 && zero_comm_done(&zc, ha[k]),
              "ag %d", k);
        CHECK(zero_comm_wait(&zc, hr[k]) == 0, "rs %d", k);
    }
    CHECK(zero_comm_wait_all(&zc) == 0, "wait all");
    for (int k = 0; k < 5; k++) {
        size_t off, len, bad = 0;
        comm_ring_own(n[k], wsize, wrank, &off, &len);
        for (size_t i = off; i < off + len; i++)
            bad += rs[k][i] != ring_sum(n[k], i, k);
        for (size_t i = 0; i < n[k]; i++)
            bad += ag[k][i] != (float)i;
        CHECK(bad == 0, "buffer %d: %zu wrong", k, bad);
        free(rs[k]);
        free(ag[k]);
    }
    CHECK(zc.wire_bytes > 0 || wsize == 1, "wire bytes counted");
    CHECK(zero_comm_busy(&zc) >= 0.0, "busy");
    zero_comm_free(&zc);
    comm_group_free(&g);
    verdict();
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    if (wrank != 0 && !freopen("/dev/null", "w", stdout))
        fprintf(stderr, "rank %d: cannot silence stdout\n", wrank);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_comm),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
