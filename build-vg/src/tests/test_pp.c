/*
 * test_pp.c - pipeline schedules, partitions and the stage link.
 *
 * Schedules: every stage's list for p in 1..8, m in 1..16, against the
 * rules of pp.h (one forward and one backward per micro-batch, moves in
 * place, slot occupancy simulated independently); then all stages at once
 * in a simulation of blocking waits (forward 1, backward 2, rendezvous
 * sends) that proves deadlock freedom and gives the makespan
 * 3 (m + p - 1), i.e. the bubble (p - 1) / (m + p - 1).  Partition: against
 * a brute-force enumeration.  Link: the world as a chain of stages runs
 * real 1F1B / GPipe / forward-only lists with dummy compute and checks
 * what arrives against the closed form.
 *
 * Schedule and partition tests need no communication; the link test
 * passes at mpirun -np 1, 2, 3, 4.
 */
#include <math.h>
#include <mpi.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pp.h"

static int world_rank, world_size;

#define MAXP 8
#define MAXM 16
#define NOPS 6

static int imin(int a, int b)
{
    return a < b ? a : b;
}

/* ---- kinds ------------------------------------------------------------ */

static void test_kind(void **state)
{
    (void)state;
    enum pp_kind k = PP_1F1B;
    assert_int_equal(pp_kind_parse("gpipe", &k), 0);
    assert_int_equal(k, PP_GPIPE);
    assert_int_equal(pp_kind_parse("1f1b", &k), 0);
    assert_int_equal(k, PP_1F1B);
    assert_string_equal(pp_kind_name(PP_GPIPE), "gpipe");
    assert_string_equal(pp_kind_name(PP_1F1B), "1f1b");
    assert_int_equal(pp_kind_parse("1F1B", &k), -1);
    assert_int_equal(pp_kind_parse("", &k), -1);
    assert_int_equal(pp_kind_parse("interleaved", &k), -1);
    assert_int_equal(k, PP_1F1B);
}

/* ---- one stage's list ------------------------------------------------- */

/* pos[op][mb]: index of the action, -1 if absent; asserts uniqueness. */
static void list_positions(const struct pp_schedule *sc, int pos[NOPS][MAXM])
{
    for (int o = 0; o < NOPS; o++)
        for (int i = 0; i < MAXM; i++)
            pos[o][i] = -1;
    for (int j = 0; j < sc->n; j++) {
        int o = sc->a[j].op, i = sc->a[j].mb;
        assert_true(o >= 0 && o < NOPS);
        assert_true(i >= 0 && i < sc->m);
        assert_int_equal(pos[o][i], -1);
        pos[o][i] = j;
    }
}

/* Which actions each micro-batch must have, and where the moves go. */
static void check_presence(const struct pp_schedule *sc, int fo,
                           int pos[NOPS][MAXM])
{
    int first = sc->s == 0, last = sc->s == sc->p - 1, total = 0;
    for (int i = 0; i < sc->m; i++) {
        int want[NOPS] = {!first, 1, !last, !last && !fo, !fo, !first && !fo};
        for (int o = 0; o < NOPS; o++) {
            assert_int_equal(pos[o][i] >= 0, want[o]);
            total += want[o];
        }
        int f = pos[PP_FWD][i], b = pos[PP_BWD][i];
        if (!first)
            assert_true(pos[PP_RECV_ACT][i] < f);
        if (!last)
            assert_int_equal(pos[PP_SEND_ACT][i], f + 1);
        if (fo)
            continue;
        assert_true(f < b);
        if (!last) {
            assert_int_equal(pos[PP_RECV_GRAD][i], f + 2);
            assert_true(pos[PP_RECV_GRAD][i] < b);
        }
        if (!first)
            assert_int_equal(pos[PP_SEND_GRAD][i], b + 1);
    }
    assert_int_equal(sc->n, total);
}

/* Independent slot bookkeeping: a micro-batch takes slot i % nslots at its
 * first action and frees it after its last one (the SEND_GRAD, or the BWD,
 * or in a forward-only list its last move); the slot must be free when
 * taken.  RECV_ACT must come right after the slot's previous holder let
 * go (or at the very start).  Returns the most slots held at once. */
static int check_slots(const struct pp_schedule *sc, int pos[NOPS][MAXM])
{
    int ns = sc->nslots, holder[MAXM], lastj[MAXM], held = 0, most = 0;
    assert_true(ns >= 1 && ns <= MAXM);
    for (int i = 0; i < MAXM; i++)
        holder[i] = lastj[i] = -1;
    for (int j = 0; j < sc->n; j++)
        lastj[sc->a[j].mb] = j;
    for (int j = 0; j < sc->n; j++) {
        int i = sc->a[j].mb, sl = i % ns;
        if (holder[sl] != i) {
            assert_int_equal(holder[sl], -1);
            holder[sl] = i;
            if (++held > most)
                most = held;
        }
        if (j == lastj[i]) {
            holder[sl] = -1;
            held--;
        }
    }
    assert_int_equal(held, 0);
    for (int i = 0; i < sc->m && sc->s > 0; i++) {
        int want = i < ns ? i : lastj[i - ns] + 1;
        assert_int_equal(pos[PP_RECV_ACT][i], want);
    }
    return most;
}

/* The order of computations: forwards, then backwards in reverse (GPipe);
 * min(p - s, m) forwards, then backward/forward alternating, backwards in
 * order (1F1B). */
static void check_order(const struct pp_schedule *sc)
{
    int seq[2 * MAXM], isf[2 * MAXM], c = 0, m = sc->m;
    for (int j = 0; j < sc->n; j++) {
        if (sc->a[j].op == PP_FWD || sc->a[j].op == PP_BWD) {
            isf[c] = sc->a[j].op == PP_FWD;
            seq[c++] = sc->a[j].mb;
        }
    }
    assert_int_equal(c, 2 * m);
    int warm = sc->kind == PP_GPIPE ? m : imin(sc->p - sc->s, m);
    int nf = 0, nb = 0;
    for (int k = 0; k < c; k++) {
        int want_f;
        if (k < warm)
            want_f = 1;
        else if (nf < m)
            want_f = (k - warm) % 2 == 1;
        else
            want_f = 0;
        assert_int_equal(isf[k], want_f);
        if (isf[k])
            assert_int_equal(seq[k], nf++);
        else
            assert_int_equal(seq[k],
                             sc->kind == PP_GPIPE ? m - 1 - nb++ : nb++);
    }
}

/* Forward-only: [RECV_ACT 0] then per i FWD i, [SEND_ACT i],
 * [RECV_ACT i+1]. */
static void check_forward_only(const struct pp_schedule *sc)
{
    struct pp_action want[3 * MAXM + 1];
    int n = 0, first = sc->s == 0, last = sc->s == sc->p - 1;
    if (!first)
        want[n++] = (struct pp_action){PP_RECV_ACT, 0};
    for (int i = 0; i < sc->m; i++) {
        want[n++] = (struct pp_action){PP_FWD, i};
        if (!last)
            want[n++] = (struct pp_action){PP_SEND_ACT, i};
        if (!first && i + 1 < sc->m)
            want[n++] = (struct pp_action){PP_RECV_ACT, i + 1};
    }
    assert_int_equal(sc->n, n);
    for (int j = 0; j < n; j++) {
        assert_int_equal(sc->a[j].op, want[j].op);
        assert_int_equal(sc->a[j].mb, want[j].mb);
    }
}

static void check_one(enum pp_kind kind, int p, int s, int m, int fo)
{
    struct pp_schedule sc;
    char err[256];
    int pos[NOPS][MAXM];
    assert_int_equal(
        pp_schedule_build(&sc, kind, p, s, m, fo, err, sizeof(err)), 0);
    assert_int_equal(sc.kind, kind);
    assert_true(sc.p == p && sc.s == s && sc.m == m);
    int ns = fo ? 1 : kind == PP_GPIPE ? m : imin(p - s, m);
    assert_int_equal(sc.nslots, ns);
    list_positions(&sc, pos);
    check_presence(&sc, fo, pos);
    int most = check_slots(&sc, pos);
    assert_int_equal(pp_schedule_max_inflight(&sc), most);
    if (fo) {
        check_forward_only(&sc);
        assert_int_equal(most, 1);
    } else {
        check_order(&sc);
        if (kind == PP_GPIPE)
            assert_int_equal(most, m);
        else
            assert_true(most == imin(p - s, m) && most <= p);
    }
    pp_schedule_free(&sc);
    assert_null(sc.a);
}

static void test_schedule_lists(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++)
        for (int p = 1; p <= MAXP; p++)
            for (int s = 0; s < p; s++)
                for (int m = 1; m <= MAXM; m++)
                    for (int fo = 0; fo < 2; fo++)
                        check_one(k ? PP_1F1B : PP_GPIPE, p, s, m, fo);
}

static void expect_error(int p, int s, int m, const char *a, const char *b)
{
    struct pp_schedule sc;
    char err[256] = "";
    assert_int_equal(
        pp_schedule_build(&sc, PP_1F1B, p, s, m, 0, err, sizeof(err)), -1);
    assert_null(sc.a);
    assert_non_null(strstr(err, a));
    assert_non_null(strstr(err, b));
}

static void test_schedule_errors(void **state)
{
    (void)state;
    expect_error(0, 0, 4, "p=0", "m=4");
    expect_error(-2, 0, 4, "p=-2", "s=0");
    expect_error(4, 4, 4, "p=4", "s=4");
    expect_error(4, -1, 4, "s=-1", "p=4");
    expect_error(4, 1, 0, "m=0", "s=1");
    expect_error(2, 1, -3, "m=-3", "p=2");
    assert_true(fabs(pp_bubble_theory(4, 8) - 3.0 / 11.0) < 1e-15);
    assert_true(pp_bubble_theory(1, 5) == 0.0);
}

/* ---- all stages at once ----------------------------------------------- */

/*
 * Stage s executes its list in order with its own clock.  A receive's
 * wait (in FWD / BWD) blocks until the neighbour has sent; a send first
 * waits for the slot's previous send to be matched by its receive on the
 * other stage (rendezvous: the worst case of MPI), and so do RECV_ACT,
 * FWD and BWD (the executors wait before reusing the slot's buffers).
 * Transfers take no time; forward 1, backward 2.
 */
struct sim {
    int p, m;
    struct pp_schedule sc[MAXP];
    int pc[MAXP];
    double clock[MAXP];
    double sent[2][MAXP][MAXM];   /* [grad][stage][mb] send time, -1 */
    double posted[2][MAXP][MAXM]; /* [grad][stage][mb] recv posted, -1 */
    int out_grad[MAXP][MAXM];     /* per slot: outstanding send, -1 */
    int out_mb[MAXP][MAXM];
};

/* Wait for stage s's outstanding send of slot sl: 0 if still unmatched. */
static int sim_send_done(struct sim *x, int s, int sl, double *t)
{
    int g = x->out_grad[s][sl], i = x->out_mb[s][sl];
    if (g < 0)
        return 1;
    double tp = x->posted[g][g ? s - 1 : s + 1][i];
    if (tp < 0)
        return 0;
    if (tp > *t)
        *t = tp;
    x->out_grad[s][sl] = -1;
    return 1;
}

/* Execute stage s's next action if it can go now; 1 if it did. */
static int sim_step(struct sim *x, int s)
{
    struct pp_schedule *sc = &x->sc[s];
    if (x->pc[s] >= sc->n)
        return 0;
    struct pp_action a = sc->a[x->pc[s]];
    int i = a.mb, sl = i % sc->nslots,
        g = a.op == PP_SEND_GRAD || a.op == PP_RECV_GRAD;
    double t = x->clock[s];
    if (a.op == PP_FWD && s > 0 && x->sent[0][s - 1][i] < 0)
        return 0;
    if (a.op == PP_BWD && s < x->p - 1 && x->sent[1][s + 1][i] < 0)
        return 0;
    if (a.op != PP_RECV_GRAD && !sim_send_done(x, s, sl, &t))
        return 0;
    switch (a.op) {
    case PP_RECV_ACT:
    case PP_RECV_GRAD:
        x->posted[g][s][i] = t;
        break;
    case PP_FWD:
        if (s > 0 && x->sent[0][s - 1][i] > t)
            t = x->sent[0][s - 1][i];
        t += 1.0;
        break;
    case PP_BWD:
        if (s < x->p - 1 && x->sent[1][s + 1][i] > t)
            t = x->sent[1][s + 1][i];
        t += 2.0;
        break;
    case PP_SEND_ACT:
    case PP_SEND_GRAD:
        x->sent[g][s][i] = t;
        x->out_grad[s][sl] = g;
        x->out_mb[s][sl] = i;
        break;
    }
    x->clock[s] = t;
    x->pc[s]++;
    return 1;
}

/* Runs all stages to the end; returns the makespan, or -1 on deadlock. */
static double sim_run(struct sim *x)
{
    for (;;) {
        int moved = 0, done = 1;
        for (int s = 0; s < x->p; s++) {
            while (sim_step(x, s))
                moved = 1;
            done &= x->pc[s] == x->sc[s].n;
        }
        if (done)
            break;
        if (!moved)
            return -1.0;
    }
    for (int s = 0; s < x->p; s++) /* the final pp_link_wait_all */
        for (int sl = 0; sl < x->sc[s].nslots; sl++) {
            double t = x->clock[s];
            if (!sim_send_done(x, s, sl, &t))
                return -1.0;
        }
    double span = 0.0;
    for (int s = 0; s < x->p; s++)
        span = x->clock[s] > span ? x->clock[s] : span;
    return span;
}

static double simulate(enum pp_kind kind, int p, int m, int fo)
{
    static struct sim x;
    char err[256];
    memset(&x, 0, sizeof(x));
    x.p = p;
    x.m = m;
    for (int g = 0; g < 2; g++)
        for (int s = 0; s < MAXP; s++)
            for (int i = 0; i < MAXM; i++) {
                x.sent[g][s][i] = x.posted[g][s][i] = -1.0;
                x.out_grad[s][i] = -1;
            }
    for (int s = 0; s < p; s++)
        assert_int_equal(
            pp_schedule_build(&x.sc[s], kind, p, s, m, fo, err, sizeof(err)),
            0);
    double span = sim_run(&x);
    for (int s = 0; s < p; s++)
        pp_schedule_free(&x.sc[s]);
    return span;
}

static void test_cross_stage(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++)
        for (int p = 1; p <= MAXP; p++)
            for (int m = 1; m <= MAXM; m++) {
                enum pp_kind kind = k ? PP_1F1B : PP_GPIPE;
                double span = simulate(kind, p, m, 0);
                assert_true(span > 0.0); /* no deadlock */
                assert_true(span == 3.0 * (m + p - 1));
                double idle = 1.0 - (3.0 * m * p) / (p * span);
                assert_true(fabs(idle - pp_bubble_theory(p, m)) < 1e-12);
                assert_true(simulate(kind, p, m, 1) == (double)(m + p - 1));
            }
}

/* ---- partition -------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double split_max(const double *c, int n, int p, const int *b, double fc,
                        double lc)
{
    double worst = -1e300;
    for (int s = 0; s < p; s++) {
        double v = (s == 0 ? fc : 0.0) + (s == p - 1 ? lc : 0.0);
        for (int j = b[s]; j < b[s + 1]; j++)
            v += c[j];
        worst = v > worst ? v : worst;
    }
    (void)n;
    return worst;
}

/* Enumerates bounds in lexicographic order; keeps the first strict best. */
static void brute(const double *c, int n, int p, double fc, double lc,
                  int *cur, int s, double *best, int *bb)
{
    if (s == p) {
        double v = split_max(c, n, p, cur, fc, lc);
        if (v < *best) {
            *best = v;
            memcpy(bb, cur, (size_t)(p + 1) * sizeof(int));
        }
        return;
    }
    for (int b = cur[s - 1] + 1; n - b >= p - s; b++) {
        cur[s] = b;
        brute(c, n, p, fc, lc, cur, s + 1, best, bb);
    }
}

static void check_partition(int n, int p, const double *c, double fc,
                            double lc, int exact)
{
    int bound[10], cur[10], bb[10];
    char err[256];
    assert_int_equal(pp_partition(n, p, c, fc, lc, bound, err, sizeof(err)),
                     0);
    cur[0] = 0;
    cur[p] = n;
    double best = 1e300;
    brute(c, n, p, fc, lc, cur, 1, &best, bb);
    assert_int_equal(bound[0], 0);
    assert_int_equal(bound[p], n);
    for (int s = 0; s < p; s++)
        assert_true(bound[s + 1] > bound[s]);
    double got = split_max(c, n, p, bound, fc, lc);
    assert_true(fabs(got - best) <= 1e-12 * fabs(best));
    for (int s = 0; exact && s <= p; s++)
        assert_int_equal(bound[s], bb[s]);
}

static void test_partition(void **state)
{
    (void)state;
    double ones[4] = {1, 1, 1, 1};
    int b[5];
    char err[256];
    assert_int_equal(pp_partition(3, 2, ones, 0, 0, b, err, 256), 0);
    assert_true(b[0] == 0 && b[1] == 1 && b[2] == 3); /* tie: earliest */
    assert_int_equal(pp_partition(4, 2, ones, 2, 0, b, err, 256), 0);
    assert_true(b[1] == 1); /* embedding cost 2 + 1 block vs 3 blocks */
    for (int t = 0; t < 400; t++) {
        int n = 1 + (int)(rng_next() % 8), p = 1 + (int)(rng_next() % n);
        double c[8], fc, lc;
        int exact = t % 2 == 0; /* small integers: many exact ties */
        for (int j = 0; j < n; j++)
            c[j] = exact ? (double)(1 + rng_next() % 4)
                         : (double)(rng_next() % 100000) / 997.0;
        fc = exact ? (double)(rng_next() % 4) : (rng_next() % 1000) / 97.0;
        lc = exact ? (double)(rng_next() % 4) : (rng_next() % 1000) / 89.0;
        check_partition(n, p, c, fc, lc, exact);
    }
    assert_int_equal(pp_partition(3, 4, ones, 0, 0, b, err, 256), -1);
    assert_non_null(strstr(err, "3 blocks"));
    assert_non_null(strstr(err, "4 stages"));
    assert_int_equal(pp_partition(3, 0, ones, 0, 0, b, err, 256), -1);
    assert_non_null(strstr(err, "0 stages"));
}

/* ---- link ------------------------------------------------------------- */

/* Varying lengths, some above the eager limits (rendezvous). */
static size_t mb_len(int i)
{
    return i % 3 == 0 ? (size_t)(3 + i) : (size_t)(5000 + 97 * i);
}
#define MAXLEN (5000 + 97 * MAXM)

static float x0(int i, size_t k)
{
    return (float)((i * 31 + (int)k) % 101);
}

struct exec {
    struct pp_link l;
    float *in, *out, *gin, *gout; /* nslots x MAXLEN each */
    int bad, checked;
};

/* Forward y = x + (s + 1); the last stage checks y = x0 + p(p+1)/2. */
static void exec_fwd(struct exec *e, const struct pp_schedule *sc, int i)
{
    size_t n = mb_len(i), o = (size_t)(i % sc->nslots) * MAXLEN;
    if (sc->s > 0)
        pp_link_wait_recv(&e->l, i);
    else
        for (size_t k = 0; k < n; k++)
            e->in[o + k] = x0(i, k);
    pp_link_wait_send(&e->l, i); /* out may still be on its way */
    for (size_t k = 0; k < n; k++)
        e->out[o + k] = e->in[o + k] + (float)(sc->s + 1);
    pp_link_progress(&e->l);
    if (sc->s == sc->p - 1) {
        for (size_t k = 0; k < n; k++)
            e->bad += e->out[o + k] != x0(i, k) + sc->p * (sc->p + 1) / 2;
        e->checked++;
    }
}

/* Backward dx = dy + x (the saved input), dy = y on the last stage;
 * stage 0 checks dx = (p+1) x0 + p(p+1)/2 + (p-1)p(p+1)/6. */
static void exec_bwd(struct exec *e, const struct pp_schedule *sc, int i)
{
    size_t n = mb_len(i), o = (size_t)(i % sc->nslots) * MAXLEN;
    int p = sc->p, last = sc->s == p - 1;
    if (!last)
        pp_link_wait_recv(&e->l, i);
    pp_link_wait_send(&e->l, i); /* gout may still be on its way */
    const float *dy = last ? e->out + o : e->gin + o;
    for (size_t k = 0; k < n; k++)
        e->gout[o + k] = dy[k] + e->in[o + k];
    if (sc->s == 0) {
        float c = (float)(p * (p + 1) / 2 + (p - 1) * p * (p + 1) / 6);
        for (size_t k = 0; k < n; k++)
            e->bad += e->gout[o + k] != (float)(p + 1) * x0(i, k) + c;
        e->checked++;
    }
}

static void exec_list(struct exec *e, const struct pp_schedule *sc)
{
    for (int j = 0; j < sc->n; j++) {
        int i = sc->a[j].mb;
        size_t o = (size_t)(i % sc->nslots) * MAXLEN;
        switch (sc->a[j].op) {
        case PP_RECV_ACT:
            pp_link_post_recv(&e->l, e->in + o, mb_len(i), i, 0);
            break;
        case PP_FWD:
            exec_fwd(e, sc, i);
            break;
        case PP_SEND_ACT:
            pp_link_send(&e->l, e->out + o, mb_len(i), i, 0);
            break;
        case PP_RECV_GRAD:
            pp_link_post_recv(&e->l, e->gin + o, mb_len(i), i, 1);
            break;
        case PP_BWD:
            exec_bwd(e, sc, i);
            break;
        case PP_SEND_GRAD:
            pp_link_send(&e->l, e->gout + o, mb_len(i), i, 1);
            break;
        }
    }
    pp_link_wait_all(&e->l);
}

/* Two steps of one list on one link; returns this rank's problems. */
static int run_link(enum pp_kind kind, int m, int fo)
{
    struct pp_schedule sc;
    struct exec e;
    char err[256];
    int p = world_size, s = world_rank, bad = 0;
    memset(&e, 0, sizeof(e));
    assert_int_equal(
        pp_schedule_build(&sc, kind, p, s, m, fo, err, sizeof(err)), 0);
    assert_int_equal(pp_link_init(&e.l, MPI_COMM_WORLD, sc.nslots), 0);
    assert_true(e.l.p == p && e.l.s == s && e.l.nslots == sc.nslots);
    size_t sz = (size_t)sc.nslots * MAXLEN * sizeof(float);
    e.in = calloc(1, sz);
    e.out = calloc(1, sz);
    e.gin = calloc(1, sz);
    e.gout = calloc(1, sz);
    assert_true(e.in && e.out && e.gin && e.gout);
    for (int step = 0; step < 2; step++) {
        e.checked = 0;
        exec_list(&e, &sc);
        int want = fo ? (s == p - 1 ? m : 0) : (s == 0) * m + (s == p - 1) * m;
        bad += e.checked != want;
        for (int i = 0; i < sc.nslots; i++)
            bad += e.l.recv[i] != MPI_REQUEST_NULL ||
                   e.l.send[i] != MPI_REQUEST_NULL;
    }
    bad += e.bad + !(e.l.t_wait >= 0.0);
    pp_link_free(&e.l);
    assert_null(e.l.recv);
    free(e.in);
    free(e.out);
    free(e.gin);
    free(e.gout);
    pp_schedule_free(&sc);
    return bad;
}

static void test_link(void **state)
{
    (void)state;
    static const int ms[] = {1, 2, 3, 5, 8};
    struct pp_link l;
    assert_int_equal(pp_link_init(&l, MPI_COMM_WORLD, 0), -1);
    for (int k = 0; k < 2; k++)
        for (size_t j = 0; j < sizeof(ms) / sizeof(ms[0]); j++)
            for (int fo = 0; fo < 2; fo++) {
                int bad = run_link(k ? PP_1F1B : PP_GPIPE, ms[j], fo), any;
                MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
                if (any && world_rank == 0)
                    fprintf(stderr, "link: kind %d m=%d fo=%d: %d bad\n", k,
                            ms[j], fo, any);
                assert_int_equal(any, 0);
            }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind),
        cmocka_unit_test(test_schedule_lists),
        cmocka_unit_test(test_schedule_errors),
        cmocka_unit_test(test_cross_stage),
        cmocka_unit_test(test_partition),
        cmocka_unit_test(test_link),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Finalize();
    return rc;
}
