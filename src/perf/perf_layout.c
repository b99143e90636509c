/*
 * perf_layout.c - the fastest predicted layout that fits in memory
 * (perf_layout_search) and layout=auto for train and bench.
 */
#include "perf_model.h"

#include <stdlib.h>
#include <string.h>

#include "ckpt_io.h"
#include "codec.h"
#include "comm.h"
#include "grid.h"
#include "log.h"
#include "topo.h"

/* Micro-batch sizes to try for a per-rank batch of per sequences. */
static int mb_candidates(const struct config *c, int per, int *mbs)
{
    int n = 0;
    if (c->micro_batch > 0) {
        if (per % c->micro_batch == 0)
            mbs[n++] = c->micro_batch;
        return n;
    }
    for (int mb = 1; mb < per && n < 30; mb *= 2)
        if (per % mb == 0)
            mbs[n++] = mb;
    mbs[n++] = per;
    return n;
}

/* The trainer refuses a codec that selects or scales per bucket under
 * tp > 1 with dp > 1 (train.c: check_layout). */
static int codec_allowed(const struct config *c, int dp, int tp)
{
    return tp == 1 || dp == 1 || !strcmp(c->compress, "none") ||
           !strcmp(c->compress, "fp16") || !strcmp(c->compress, "bf16");
}

/* Insert (ly, t) into the ranking sorted by time, keeping nrank. */
static void rank_insert(struct perf_layout *rk, double *rs, int nrank,
                        int *n, const struct perf_layout *ly, double t)
{
    int i = *n < nrank ? (*n)++ : nrank;
    if (i == nrank && (nrank == 0 || t >= rs[nrank - 1]))
        return;
    if (i == nrank)
        i = nrank - 1;
    while (i > 0 && rs[i - 1] > t) {
        rk[i] = rk[i - 1];
        rs[i] = rs[i - 1];
        i--;
    }
    rk[i] = *ly;
    rs[i] = t;
}

int perf_layout_search(const struct perf_calib *pc, const struct config *c,
                       int nodes, int rpn, int threads,
                       struct perf_layout *best, struct perf_prediction *bp,
                       struct perf_layout *ranking, double *rank_s,
                       int nrank, int *nfound, char *err, size_t errlen)
{
    int world = nodes * rpn, found = 0, nr = 0;
    double best_t = 0.0, least_mem = 0.0;
    char first_err[512] = "";
    for (int tp = 1; tp <= rpn; tp++) {
        if (rpn % tp || c->n_head % tp || c->n_kv_head % tp)
            continue;
        for (int pp = 1; pp <= c->n_layer && pp <= 64; pp++) {
            if (world % (tp * pp))
                continue;
            int dp = world / (tp * pp);
            if (c->batch_size % dp || !codec_allowed(c, dp, tp))
                continue;
            int mbs[32], nm = mb_candidates(c, c->batch_size / dp, mbs);
            for (int k = 0; k < nm; k++) {
                struct perf_layout ly = {nodes, rpn, dp, tp, pp, mbs[k],
                                         threads};
                struct perf_prediction pr;
                char e[512];
                if (perf_predict(pc, c, &ly, &pr, e, sizeof(e)) < 0) {
                    if (!first_err[0])
                        snprintf(first_err, sizeof(first_err), "%s", e);
                    continue;
                }
                if (!pr.fits) {
                    if (least_mem == 0.0 || pr.mem_bytes < least_mem)
                        least_mem = pr.mem_bytes;
                    continue;
                }
                if (ranking)
                    rank_insert(ranking, rank_s, nrank, &nr, &ly, pr.o.step);
                if (!found++ || pr.o.step < best_t) {
                    best_t = pr.o.step;
                    *best = ly;
                    if (bp)
                        *bp = pr;
                }
            }
        }
    }
    if (nfound)
        *nfound = found;
    if (found)
        return 0;
    if (least_mem > 0.0)
        snprintf(err, errlen, "no layout of %d node(s) x %d rank(s) fits in "
                 "memory: the smallest needs %.2f GB per rank, a rank has "
                 "%.2f GB (90%% of the node's %.1f GB / %d)", nodes, rpn,
                 least_mem / 1e9, 0.9 * pc->mem_bytes / rpn / 1e9,
                 pc->mem_bytes / 1e9, rpn);
    else
        snprintf(err, errlen, "no layout of %d node(s) x %d rank(s) can be "
                 "predicted: %s", nodes, rpn,
                 first_err[0] ? first_err : "none divides the batch");
    return -1;
}

/* ---- layout=auto -------------------------------------------------------- */

/* A quick calibration of c's model on every rank of world (all busy, as
 * in training): the tp degrees the search may pick, up to three
 * micro-batch sizes (the others scaled from the nearest), the ring and
 * rhd all-reduces (and
 * c's algorithm and codec) in groups of every size. */
static int quick_calibrate(struct perf_calib *pc, const struct config *c,
                           MPI_Comm world, int rpn, int threads, int cores,
                           char *err, size_t errlen)
{
    int size, tps[16], nt = 0;
    /* compute is measured without oversubscribing (perf_calibrate) */
    int cload = rpn * threads <= cores ? rpn
                : cores / threads > 0 ? cores / threads : 1;
    int loads[2] = {cload, rpn}, nload = cload == rpn ? 1 : 2;
    MPI_Comm_size(world, &size);
    for (int tp = 1; tp <= rpn && nt < 16; tp++)
        if (rpn % tp == 0 && c->n_head % tp == 0 && c->n_kv_head % tp == 0)
            tps[nt++] = tp;
    /* the micro-batches the search may pick: the given one, or 1, the
     * whole per-rank batch at dp = world, and one between (others are
     * scaled from the nearest) */
    int top = c->batch_size / size > 0 ? c->batch_size / size : 1;
    int mbs[3] = {c->micro_batch, 0, 0}, nmb = 1;
    if (c->micro_batch == 0) {
        int mid = 1;
        while (mid * mid < top)
            mid *= 2;
        mbs[0] = 1;
        if (mid > 1 && mid < top && top % mid == 0)
            mbs[nmb++] = mid;
        if (top > 1)
            mbs[nmb++] = top;
    }
    const char *kinds[5] = {"ring", "rhd", "shm"};
    int nk = 3;
    if (strcmp(c->allreduce, "auto") && strcmp(c->allreduce, "ring") &&
        strcmp(c->allreduce, "rhd") && strcmp(c->allreduce, "shm"))
        kinds[nk++] = c->allreduce;
    if (strcmp(c->compress, "none"))
        kinds[nk++] = c->compress;
    struct gpt_config gc;
    gpt_config_from(c, &gc);
    struct perf_calib_req rq = {
        .shapes = &gc, .nshapes = 1, .mbs = mbs, .nmb = nmb, .tps = tps,
        .ntp = nt, .loads = loads, .nload = nload, .threads = &threads,
        .nthreads = 1, .kinds = kinds, .nkinds = nk, .budget_s = 0.5,
        .ranks_per_node = c->ranks_per_node, .quick = 1};
    return perf_calibrate(pc, &rq, world, NULL, err, errlen);
}

static void print_choice(const struct perf_calib *pc, const struct config *c,
                         const struct perf_layout *rk, const double *rs,
                         int nr, int nfound, const char *src)
{
    printf("layout=auto: %d layout(s) fit in memory (calibration: %s); "
           "fastest predicted:\n", nfound, src);
    for (int i = 0; i < nr; i++) {
        struct perf_prediction pr;
        char e[256];
        if (perf_predict(pc, c, &rk[i], &pr, e, sizeof(e)) < 0) {
            printf("  dp=%d tp=%d pp=%d: %s\n", rk[i].dp, rk[i].tp,
                   rk[i].pp, e);
            continue;
        }
        printf("  %s dp=%d tp=%d pp=%d micro_batch=%d: %.1f ms per step "
               "(compute %.1f, comm exposed %.1f, bubble %.3f), %.0f MB "
               "per rank\n", i ? " " : "*", rk[i].dp, rk[i].tp, rk[i].pp,
               rk[i].mb, 1e3 * rs[i], 1e3 * pr.o.compute,
               1e3 * pr.o.comm_exposed, pr.o.bubble, pr.mem_bytes / 1048576);
    }
    fflush(stdout);
}

int perf_layout_auto(struct config *c, MPI_Comm world, char *err,
                     size_t errlen)
{
    struct grid g;
    int size;
    MPI_Comm_size(world, &size);
    if (grid_init(&g, world, size, 1, 1, c->ranks_per_node, err, errlen) < 0)
        return -1;
    int nodes = g.nnodes, rank = g.rank;
    grid_free(&g);
    if (size % nodes) {
        snprintf(err, errlen, "layout=auto: %d ranks on %d nodes are not the "
                 "same number per node", size, nodes);
        return -1;
    }
    int rpn = size / nodes;
    /* threads = 0: the placement sizes pools to the cores a rank holds */
    struct topo t;
    int cores = 1;
    if (topo_load(&t, NULL, err, errlen) == 0) {
        cores = t.ncores;
        topo_free(&t);
    }
    int threads = c->threads > 0 ? c->threads
                  : cores / rpn > 1 ? cores / rpn : 1;
    struct perf_calib pc;
    perf_calib_init(&pc);
    int rc;
    if (c->perf_calib[0])
        rc = perf_calib_load(&pc, c->perf_calib, err, errlen);
    else
        rc = quick_calibrate(&pc, c, world, rpn, threads, cores, err,
                             errlen);
    struct perf_layout best, rk[5];
    double rs[5];
    int nfound = 0;
    rc = comm_agree(world, rc, err, errlen);
    if (rc == 0)
        rc = perf_layout_search(&pc, c, nodes, rpn, threads, &best, NULL, rk,
                                rs, 5, &nfound, err, errlen);
    if (rc == 0) {
        if (rank == 0)
            print_choice(&pc, c, rk, rs, nfound < 5 ? nfound : 5, nfound,
                         c->perf_calib[0] ? c->perf_calib
                                          : "measured at start-up");
        c->dp = best.dp;
        c->tp = best.tp;
        c->pp = best.pp;
        c->micro_batch = best.mb;
    }
    perf_calib_free(&pc);
    return comm_agree(world, rc, err, errlen);
}

int perf_layout_search_zero(const struct perf_calib *pc,
                            const struct config *c, int nodes, int rpn,
                            int threads, struct perf_layout *best,
                            struct perf_prediction *bp, int *zero,
                            char *err, size_t errlen)
{
    int found = 0;
    for (int z = 0; z <= 3; z++) {
        struct config cz = *c;
        struct perf_layout l;
        struct perf_prediction p;
        char e[512];
        cz.zero = z;
        if (perf_layout_search(pc, &cz, nodes, rpn, threads, &l, &p, NULL,
                               NULL, 0, NULL, e, sizeof(e)) < 0) {
            if (z == 0 || strstr(e, "calibration has no"))
                snprintf(err, errlen, "%s", e);
            if (strstr(e, "calibration has no"))
                return -1;
            continue;
        }
        if (!found || p.o.step < bp->o.step) {
            *best = l, *bp = p, *zero = z;
            found = 1;
        }
    }
    return found ? 0 : -1;
}
