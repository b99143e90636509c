/*
 * perf_measure.c - perf_calibrate: the performance model's figures
 * measured on this machine (see perf_model.h).
 *
 * Ranks not taking part in a measurement wait in a barrier that sleeps
 * between tests instead of spinning (Open MPI's blocking calls poll), so
 * that `load` really is the number of busy ranks of the node.
 */
#include "perf_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "calib.h"
#include "cli.h"
#include "comm.h"
#include "grid.h"
#include "log.h"
#include "optim.h"
#include "peak.h"
#include "shm.h"
#include "topo.h"

/* A barrier that does not spin: test, sleep 200 us, test again. */
static void quiet_barrier(MPI_Comm comm)
{
    MPI_Request rq;
    int done = 0;
    MPI_Ibarrier(comm, &rq);
    struct timespec ts = {0, 200000};
    for (;;) {
        MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
        if (done)
            return;
        nanosleep(&ts, NULL);
    }
}

/* The median of x[0..n) (sorts x). */
static double median_of(double *x, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j] < x[j - 1]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return x[n / 2];
}

/* ---- what other processes take ----------------------------------------- */

/* Busy seconds of all the machine's CPUs (/proc/stat: user, nice, system,
 * irq, softirq); 0 when unreadable. */
static double machine_busy(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[7] = {0};
    if (!f)
        return 0.0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]);
    fclose(f);
    if (n < 7)
        return 0.0;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6]) /
           (double)sysconf(_SC_CLK_TCK);
}

/* This process's CPU seconds, every thread. */
static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * ru.ru_stime.tv_usec;
}

struct cpu_mark {
    double busy, own, wall;
};

struct ctx;
static void cpu_mark(struct cpu_mark *m);
static double cpu_free(const struct ctx *x, const struct cpu_mark *m,
                       int cores);

struct ctx {
    MPI_Comm world;
    int rank, size;
    int *node;          /* node index of every world rank */
    int nnodes;
    int idx0;           /* this rank's index among node 0's ranks, or -1 */
    int n0;             /* ranks on node 0 */
    FILE *log;
};

static int ctx_init(struct ctx *x, MPI_Comm world, int rpn, FILE *log,
                    char *err, size_t errlen)
{
    memset(x, 0, sizeof(*x));
    x->world = world;
    x->log = log;
    MPI_Comm_rank(world, &x->rank);
    MPI_Comm_size(world, &x->size);
    struct grid g;
    if (grid_init(&g, world, x->size, 1, 1, rpn, err, errlen) < 0)
        return -1;
    x->nnodes = g.nnodes;
    x->node = malloc((size_t)x->size * sizeof(int));
    if (!x->node) {
        grid_free(&g);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    MPI_Allgather(&g.node, 1, MPI_INT, x->node, 1, MPI_INT, world);
    grid_free(&g);
    x->idx0 = -1;
    for (int r = 0; r < x->size; r++)
        if (x->node[r] == 0) {
            if (r == x->rank)
                x->idx0 = x->n0;
            x->n0++;
        }
    return 0;
}

static void cpu_mark(struct cpu_mark *m)
{
    m->busy = machine_busy();
    m->own = self_cpu();
    m->wall = now_s();
}

/* The cores of node 0 that other processes left free since m: its cores
 * less the machine's busy time not spent by the ranks on node 0, per
 * second (at least a tenth of a core).  Collective over world. */
static double cpu_free(const struct ctx *x, const struct cpu_mark *m,
                       int cores)
{
    double own = x->idx0 >= 0 ? self_cpu() - m->own : 0.0, fr = cores;
    MPI_Allreduce(MPI_IN_PLACE, &own, 1, MPI_DOUBLE, MPI_SUM, x->world);
    if (x->rank == 0) {
        double wall = now_s() - m->wall, busy = machine_busy() - m->busy;
        if (wall > 0.0 && m->busy > 0.0)
            fr = cores - (busy - own) / wall;
        fr = fr > cores ? cores : fr < 0.1 ? 0.1 : fr;
    }
    MPI_Bcast(&fr, 1, MPI_DOUBLE, 0, x->world);
    return fr;
}

/* Cores and memory of this node: hwloc's cores, physical pages. */
static void node_facts(struct perf_calib *pc)
{
    struct topo t;
    char err[256];
    if (topo_load(&t, NULL, err, sizeof(err)) == 0) {
        pc->cores = t.ncores;
        topo_free(&t);
    }
    if (pc->cores < 1)
        pc->cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    pc->mem_bytes = (double)sysconf(_SC_PHYS_PAGES) *
                    (double)sysconf(_SC_PAGESIZE);
}

/* ---- compute ----------------------------------------------------------- */

#define CALIB_BLOCKS 4 /* at most, per compute figure */

/* How many blocks a compute figure times in sequence (calib.h): as many
 * as it takes for their weights and gradients to exceed twice the last
 * level cache, so that each block streams from memory as in a step (one
 * block repeated alone stays in the cache: the step's blocks ran 10-15%
 * slower than its figure with 2 ranks); at most the model's n_layer and
 * CALIB_BLOCKS.  A GPT-2 block is larger than the cache: one. */
static int stage_blocks(const struct gpt_config *gc)
{
    /* sysfs's figure (sysconf's is the host's total in a VM here: 384 MB
     * against the 32 MB the guest's cores share) */
    long l3 = 0;
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
        if (fscanf(f, "%ld", &l3) != 1)
            l3 = 0;
        l3 *= 1024; /* "32768K" */
        fclose(f);
    }
    double C = gc->n_embd, blk = 8.0 * (12.0 * C * C + 13.0 * C);
    int n = l3 > 0 ? (int)(2.0 * (double)l3 / blk) : 1;
    n = n < 1 ? 1 : n > CALIB_BLOCKS ? CALIB_BLOCKS : n;
    return n < gc->n_layer ? n : gc->n_layer;
}

/* The barrier of a rank that has finished its compute figures: it keeps
 * running the same kernels (short calibrations, discarded) until every
 * rank has reached the barrier, so that every timed repetition of a
 * slower rank ran while `load` ranks computed -- otherwise the last ones
 * run beside ranks asleep in the barrier, and the fastest repetition is
 * one of them, the speed of an idle node (it made load 2 as fast as
 * load 1 here while a 2-rank step ran 10-15% slower per micro-batch than
 * a 1-rank one).  Matches the others' quiet_barrier. */
static void busy_barrier(MPI_Comm comm, const struct gpt_config *gc, int mb,
                         int tp)
{
    MPI_Request rq;
    int done = 0;
    MPI_Ibarrier(comm, &rq);
    for (;;) {
        MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
        if (done)
            return;
        struct calib_costs cc;
        char e[256];
        if (calib_measure_tp(gc, mb, tp, 0.02, &cc, e, sizeof(e)) < 0) {
            MPI_Wait(&rq, MPI_STATUS_IGNORE);
            return;
        }
    }
}

#define CALIB_RUNS 3

static int compute_point(struct perf_calib *pc, const struct ctx *x,
                         const struct gpt_config *gc, int tp, int mb,
                         int load, int threads, double budget, char *err,
                         size_t errlen)
{
    int active = x->idx0 >= 0 && x->idx0 < load;
    int nblk = stage_blocks(gc);
    double v[7] = {0}; /* six figures and a count */
    int rc = 0;
    struct cpu_mark mk;
    cpu_mark(&mk);
    if (active) {
        /* calib.c reports each part's fastest repetition; a training step
         * runs the kernels back to back, at their typical speed: the
         * median of CALIB_RUNS short calibrations, each the fastest of
         * its few repetitions, is that typical repetition */
        double f[CALIB_RUNS][6];
        threads_set(threads);
        for (int k = 0; k < CALIB_RUNS && rc == 0; k++) {
            struct calib_costs cc;
            rc = calib_measure_blocks(gc, mb, tp, nblk,
                                      nblk * budget / CALIB_RUNS, &cc, err,
                                      errlen);
            double g[6] = {cc.block_s, cc.block_fwd_s, cc.embed_s,
                           cc.embed_fwd_s, cc.head_s, cc.head_fwd_s};
            memcpy(f[k], g, sizeof(g));
        }
        for (int i = 0; rc == 0 && i < 6; i++) {
            double col[CALIB_RUNS];
            for (int k = 0; k < CALIB_RUNS; k++)
                col[k] = f[k][i];
            v[i] = median_of(col, CALIB_RUNS);
        }
        v[6] = rc == 0;
        busy_barrier(x->world, gc, mb, tp);
    } else {
        quiet_barrier(x->world);
    }
    if (comm_agree(x->world, rc, err, errlen) < 0)
        return -1;
    double fr = cpu_free(x, &mk, pc->cores); /* reported */
    MPI_Allreduce(MPI_IN_PLACE, v, 7, MPI_DOUBLE, MPI_SUM, x->world);
    struct perf_compute e = {
        gc->n_embd, gc->n_head, gc->n_kv_head, gc->seq_len, gc->vocab_size,
        gc->attn_window, tp, load, threads, mb,
        v[0] / v[6], v[1] / v[6], v[2] / v[6], v[3] / v[6], v[4] / v[6],
        v[5] / v[6], 0.0};
    if (x->rank == 0 && x->log) {
        fprintf(x->log, "compute C=%d H=%d T=%d V=%d tp=%d load=%d "
                "threads=%d mb=%d: block %.2f ms (fwd %.2f), embed %.2f, "
                "head %.2f; %.2f of %d cores free\n", gc->n_embd,
                gc->n_head, gc->seq_len, gc->vocab_size, tp, load, threads,
                mb, 1e3 * e.block, 1e3 * e.block_fwd, 1e3 * e.embed,
                1e3 * e.head, fr, pc->cores);
        fflush(x->log);
    }
    return perf_calib_add_compute(pc, &e);
}

/* The clipping norm and AdamW over n parameters, seconds per parameter,
 * on the first `load` ranks of node 0 at once; *free: the cores other
 * processes left meanwhile. */
static double optim_point(const struct ctx *x, int load, int threads,
                          int cores, double *fr)
{
    const size_t n = (size_t)1 << 21;
    double v[2] = {0, 0};
    struct cpu_mark mk;
    cpu_mark(&mk);
    if (x->idx0 >= 0 && x->idx0 < load) {
        float *a = malloc(4 * n * sizeof(float));
        if (a) {
            /* every page written, as a trainer's are: calloc's untouched
             * pages all map the one zero page, and the gradients (only
             * read) then came from the cache: 6.4e-10 s a parameter
             * against 1.0e-9 with them in memory */
            for (size_t i = 0; i < 4 * n; i++)
                a[i] = i < 2 * n ? 1e-3f : 0.0f;
            struct adamw_hp hp = {1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
            double t[4];
            threads_set(threads);
            for (int r = 0; r < 4; r++) {
                double t0 = now_s();
                double s = sumsq(a + n, n);
                adamw_update(a, a + n, a + 2 * n, a + 3 * n, n, &hp,
                             clip_scale(s, 1.0f), 1);
                t[r] = now_s() - t0;
            }
            v[0] = t[1] < t[2] ? t[1] : t[2]; /* the fastest, as calib */
            v[0] = (v[0] < t[3] ? v[0] : t[3]) / (double)n;
            v[1] = 1;
            free(a);
        }
    }
    quiet_barrier(x->world);
    *fr = cpu_free(x, &mk, cores);
    MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_SUM, x->world);
    return v[1] > 0 ? v[0] / v[1] : 0.0;
}

/* Compute and the optimizer are measured on loads that do not
 * oversubscribe the node (load x threads <= cores): the model takes an
 * oversubscribed node as time-sliced, a rank getting cores / load of a
 * core (the fastest repetitions of an oversubscribed calibration are the
 * ones a rank ran alone, and the others are not a speed either). */
static int calib_compute(struct perf_calib *pc, const struct ctx *x,
                         const struct perf_calib_req *rq, char *err,
                         size_t errlen)
{
    for (int li = 0; li < rq->nload; li++) {
        int load = rq->loads[li];
        if (load < 1 || load > x->n0 || load > pc->cores)
            continue;
        for (int ti = 0; ti < rq->nthreads; ti++) {
            int th = rq->threads[ti];
            if (th < 1 || th * load > pc->cores)
                continue;
            for (int s = 0; s < rq->nshapes; s++)
                for (int k = 0; k < rq->ntp; k++) {
                    char e2[256];
                    if (gpt_config_check(&rq->shapes[s], rq->tps[k], e2,
                                         sizeof(e2)) < 0)
                        continue;
                    for (int b = 0; b < rq->nmb; b++)
                        if (compute_point(pc, x, &rq->shapes[s], rq->tps[k],
                                          rq->mbs[b], load, th, rq->budget_s,
                                          err, errlen) < 0)
                            return -1;
                }
            if (ti == 0) {
                int ot = pc->cores / load > 1 ? pc->cores / load : 1;
                double fr;
                double per = optim_point(x, load, ot, pc->cores, &fr);
                (void)fr; /* the fastest repetition: as for compute */
                if (per > 0 && perf_calib_add_optim(pc, load, per, 0.0) < 0)
                    return -1;
            }
        }
    }
    return 0;
}

/* ---- communication ----------------------------------------------------- */

/* Ping-pong between pairs (2i, 2i+1) of group g: seconds one way, the
 * median round trip halved (the slowest pair's). */
static double pingpong(const struct comm_group *g, size_t bytes, int iters)
{
    char *buf = malloc(bytes ? bytes : 1);
    double *rt = calloc((size_t)iters, sizeof(double));
    int peer = g->rank ^ 1;
    double t = 0.0;
    if (peer < g->size && buf && rt) {
        memset(buf, 1, bytes);
        for (int it = -1; it < iters; it++) {
            double t0 = MPI_Wtime();
            if (g->rank % 2 == 0) {
                MPI_Send(buf, (int)bytes, MPI_BYTE, peer, 7, g->comm);
                MPI_Recv(buf, (int)bytes, MPI_BYTE, peer, 7, g->comm,
                         MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(buf, (int)bytes, MPI_BYTE, peer, 7, g->comm,
                         MPI_STATUS_IGNORE);
                MPI_Send(buf, (int)bytes, MPI_BYTE, peer, 7, g->comm);
            }
            if (it >= 0)
                rt[it] = MPI_Wtime() - t0;
        }
        t = median_of(rt, iters) / 2.0;
    }
    free(buf);
    free(rt);
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, g->comm);
    return t;
}

static const size_t sizes_full[] = {4096, 65536, 1 << 20, 4 << 20, 16 << 20};
static const size_t sizes_quick[] = {65536, 4 << 20};

/* Fit one kind on group g (this rank in it: g != NULL); every rank of
 * world gets the line.  Returns 0, or -1 when the kind is unknown. */
static int comm_kind(struct perf_calib *pc, const struct ctx *x,
                     const struct comm_group *g, const char *kind, int level,
                     int p, int load, int quick)
{
    const size_t *sz = quick ? sizes_quick : sizes_full;
    int ns = quick ? 2 : 5;
    double n[5], t[5];
    int bad = 0;
    struct cpu_mark mk;
    cpu_mark(&mk);
    for (int i = 0; i < ns; i++) {
        n[i] = (double)sz[i];
        t[i] = 0.0;
        if (!g)
            continue;
        if (!strcmp(kind, "p2p"))
            t[i] = pingpong(g, sz[i], quick ? 5 : sz[i] > (1 << 20) ? 10 : 50);
        else if (bench_comm_time(g, kind, sz[i], quick ? 3 : 0, NULL,
                                 &t[i]) < 0)
            t[i] = -1.0;
        bad |= t[i] < 0;
    }
    quiet_barrier(x->world); /* idle ranks sleep until all are done */
    double fr = cpu_free(x, &mk, pc->cores);
    /* the slowest group counts (they ran at once) */
    MPI_Allreduce(MPI_IN_PLACE, t, ns, MPI_DOUBLE, MPI_MAX, x->world);
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, x->world);
    if (bad)
        return -1;
    struct perf_comm e;
    memset(&e, 0, sizeof(e));
    snprintf(e.kind, sizeof(e.kind), "%s", kind);
    e.level = level;
    e.p = p;
    e.load = load;
    e.cores = fr;
    if (perf_fit_line(n, t, ns, &e.a, &e.b) < 0)
        return -1;
    if (x->rank == 0 && x->log) {
        fprintf(x->log, "comm %-12s level %d p=%d load=%d: %.1f us + "
                "%.3f GB/s (16 MB: %.2f ms); %.2f cores free\n", kind, level,
                p, load, 1e6 * e.a, e.b > 0 ? 1e-9 / e.b : 0.0,
                1e3 * (e.a + e.b * 16777216.0), fr);
        fflush(x->log);
    }
    return perf_calib_add_comm(pc, &e);
}

/* shm's segments for group g (this rank in it: g != NULL), as large as
 * the largest size timed; 1 on every rank of world when every group has
 * them (level 0 only: shm never crosses nodes), else 0.  Mapped once per
 * group and kept in *shm (freed by the caller). */
static int calib_shm(const struct ctx *x, struct comm_group *g, int level,
                     struct comm_shm *shm)
{
    int ok = 1;
    if (g && !shm->map) {
        char err[256] = "the group spans several nodes";
        ok = level == 0 && comm_shm_possible(g->comm, g->node_id) &&
             comm_shm_init(shm, g, sizes_full[4] / sizeof(float), NULL,
                           err, sizeof err) == 0;
        g->shm = ok ? shm : NULL;
        if (!ok && level == 0 && x->rank == 0)
            printf("comm shm left out: %s\n", err);
    }
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, x->world);
    return ok;
}

/* Groups of p consecutive ranks among the `load` first of node 0 (level
 * 0), or the node leaders (level 1); every kind, then the ping-pong. */
static int comm_groups(struct perf_calib *pc, const struct ctx *x,
                       const struct perf_calib_req *rq, int level, int p,
                       int load, int color, char *err, size_t errlen)
{
    MPI_Comm sub;
    MPI_Comm_split(x->world, color, x->rank, &sub);
    struct comm_group g;
    int in = sub != MPI_COMM_NULL;
    if (in && comm_group_init(&g, sub, x->node[x->rank]) < 0)
        in = 0; /* reported through the agreement below */
    int rc = 0;
    struct comm_shm shm;
    memset(&shm, 0, sizeof shm);
    for (int k = 0; k <= rq->nkinds && rc == 0; k++) {
        const char *kind = k < rq->nkinds ? rq->kinds[k] : "p2p";
        if (!strcmp(kind, "hier") && level == 0)
            continue; /* one node: auto never picks it */
        if (!strcmp(kind, "shm") && !calib_shm(x, in ? &g : NULL, level,
                                               &shm))
            continue; /* several nodes, or no room: train never takes it */
        if (comm_kind(pc, x, in ? &g : NULL, kind, level, p, load,
                      rq->quick) < 0) {
            snprintf(err, errlen, "calibration: cannot time '%s' (unknown "
                     "algorithm or codec, or out of memory)", kind);
            rc = -1;
        }
    }
    if (in)
        comm_group_free(&g);
    comm_shm_free(&shm);
    if (sub != MPI_COMM_NULL)
        MPI_Comm_free(&sub);
    return rc;
}

static int calib_comm(struct perf_calib *pc, const struct ctx *x,
                      const struct perf_calib_req *rq, char *err,
                      size_t errlen)
{
    if (rq->nkinds == 0)
        return 0; /* compute only */
    for (int li = 0; li < rq->nload; li++) {
        int load = rq->loads[li];
        if (load < 2 || load > x->n0)
            continue;
        for (int p = 2; p <= load; p++) {
            if (load % p || ((p & (p - 1)) && p != load))
                continue;
            int color = x->idx0 >= 0 && x->idx0 < load ? x->idx0 / p
                                                       : MPI_UNDEFINED;
            if (comm_groups(pc, x, rq, 0, p, load, color, err, errlen) < 0)
                return -1;
        }
    }
    if (x->nnodes < 2)
        return 0;
    /* between nodes: the leaders alone, then every rank at once */
    int leader = x->rank == 0 || x->node[x->rank - 1] != x->node[x->rank];
    if (comm_groups(pc, x, rq, 1, x->nnodes, 1, leader ? 0 : MPI_UNDEFINED,
                    err, errlen) < 0)
        return -1;
    int rpn = x->size / x->nnodes;
    if (rpn > 1 && x->size % x->nnodes == 0)
        return comm_groups(pc, x, rq, 1, x->size, rpn, 0, err, errlen);
    return 0;
}

int perf_calibrate(struct perf_calib *pc, const struct perf_calib_req *rq,
                   MPI_Comm world, FILE *log, char *err, size_t errlen)
{
    struct ctx x;
    if (ctx_init(&x, world, rq->ranks_per_node, log, err, errlen) < 0)
        return -1;
    node_facts(pc);
    MPI_Bcast(&pc->cores, 1, MPI_INT, 0, world);
    MPI_Bcast(&pc->mem_bytes, 1, MPI_DOUBLE, 0, world);
    if (x.rank == 0 && log)
        fprintf(log, "calibrating on %d rank(s), %d node(s); node 0: %d "
                "rank(s), %d cores, %.1f GB\n", x.size, x.nnodes, x.n0,
                pc->cores, pc->mem_bytes / 1e9);
    int rc = calib_compute(pc, &x, rq, err, errlen);
    if (rc == 0)
        rc = calib_comm(pc, &x, rq, err, errlen);
    free(x.node);
    return rc;
}
