/*
 * train_balance.c - the trainer's load balance: each rank's speed measured
 * at start-up on the model's kernels (calib.c) and gathered, the pipeline
 * stage boundaries (pp_partition), the data-parallel shares (balance,
 * rebalance_every), stragglers, and the emulated slow rank
 * (debug_slow_rank).  parallel/balance.c turns the figures into
 * decisions; every rank decides the same from the same gathered numbers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"
#include "log.h"
#include "train.h"

#define CALIB_BUDGET_S 2.0 /* the bound on start-up calibration */
#define REBALANCE_MIN_GAIN 0.05

/* Stage boundaries that balance parameter counts: a block's parameters,
 * the first stage also wte and wpe, the last wte's tied copy and lnf. */
static int partition_params(const struct gpt_config *gc, int p, int *bound,
                            char *err, size_t errlen)
{
    struct gpt_config one = *gc;
    one.n_layer = 1;
    double C = gc->n_embd, V = gpt_vocab_padded(gc->vocab_size);
    double T = gc->seq_len;
    double block = (double)(gpt_num_params(&one) - (V + T) * C - 2 * C);
    double *cost = malloc((size_t)gc->n_layer * sizeof(double));
    if (!cost) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int l = 0; l < gc->n_layer; l++)
        cost[l] = block;
    int rc = pp_partition(gc->n_layer, p, cost, (V + T) * C, V * C + 2 * C,
                          bound, err, errlen);
    free(cost);
    return rc;
}

/* The median over ranks of figure k (0 block, 1 embed, 2 head) of
 * cal_all, the block's divided by tp (a block's work is split over the
 * tp ranks; calibration runs it whole). */
static double median_cost(const struct trainer *tr, int k)
{
    int n = tr->g.size;
    double x[n];
    for (int i = 0; i < n; i++)
        x[i] = tr->cal_all[3 * i + k] / (k == 0 ? tr->g.tp : 1);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j] < x[j - 1]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Per-stage calibrated figures: blk[s] the slowest block time among
 * stage s's ranks (divided by tp: a block's work is split over the tp
 * ranks, calibration runs it whole), the embedding's on stage 0 and the
 * head's on the last stage (the slowest of their ranks). */
static void stage_figures(const struct trainer *tr, double *blk, double *emb,
                          double *head)
{
    const struct grid *g = &tr->g;
    *emb = *head = 0.0;
    for (int s = 0; s < g->pp; s++)
        blk[s] = 0.0;
    for (int r = 0; r < g->size; r++) {
        int s = r / (g->tp * g->dp);
        const double *c = tr->cal_all + 3 * r;
        blk[s] = c[0] / g->tp > blk[s] ? c[0] / g->tp : blk[s];
        if (s == 0 && c[1] > *emb)
            *emb = c[1];
        if (s == g->pp - 1 && c[2] > *head)
            *head = c[2];
    }
}

/* The calibrated time of the slowest stage of a partition. */
static double slowest_stage(const struct trainer *tr, const int *bound)
{
    double blk[tr->g.pp], emb, head;
    stage_figures(tr, blk, &emb, &head);
    return balance_stages_slowest(tr->g.pp, bound, blk, emb, head);
}

/* pp_partition=auto: the min-max partition of the calibrated costs, each
 * stage's blocks at the speed of its own ranks, unless it is within
 * AUTO_KEEP_PARAMS of the parameter-balanced one; then that one, which
 * does not depend on timing, so that runs (and resumed runs) keep their
 * partition when the measurement cannot tell them apart. */
#define AUTO_KEEP_PARAMS 0.05

static int partition_auto(struct trainer *tr, const struct gpt_config *gc,
                          char *err, size_t errlen)
{
    int p = tr->g.pp, byp[p + 1];
    double blk[p], emb, head;
    stage_figures(tr, blk, &emb, &head);
    if (partition_params(gc, p, byp, err, errlen) < 0 ||
        balance_stages_speeds(gc->n_layer, p, blk, emb, head, tr->bound,
                              err, errlen) < 0)
        return -1;
    tr->stage_auto_s = slowest_stage(tr, tr->bound);
    tr->stage_params_s = slowest_stage(tr, byp);
    if (tr->stage_auto_s >= (1.0 - AUTO_KEEP_PARAMS) * tr->stage_params_s)
        memcpy(tr->bound, byp, sizeof(byp));
    return 0;
}

static int partition(struct trainer *tr, const struct gpt_config *gc,
                     char *err, size_t errlen)
{
    const char *pp = tr->c.pp_partition;
    int p = tr->g.pp;
    if (!strcmp(pp, "params"))
        return partition_params(gc, p, tr->bound, err, errlen);
    if (!strcmp(pp, "auto"))
        return partition_auto(tr, gc, err, errlen);
    int counts[p];
    config_int_list(pp, counts, p); /* checked by config_finalize */
    balance_stages_from_counts(p, counts, tr->bound);
    return 0;
}

/* Seconds per sequence of world rank r's stage, from its calibration. */
static double stage_rate(const struct trainer *tr, int r)
{
    const struct grid *g = &tr->g;
    int s = r / (g->tp * g->dp);
    const double *c = tr->cal_all + 3 * r;
    double t = (tr->bound[s + 1] - tr->bound[s]) * c[0] / g->tp;
    t += (s == 0 ? c[1] : 0.0) + (s == g->pp - 1 ? c[2] : 0.0);
    return t / tr->mb;
}

/* Per dp replica, the slowest of its ranks' rates: rate[r] per world
 * rank in, rep[dp] out. */
static void replica_rates(const struct trainer *tr, const double *rate,
                          double *rep)
{
    const struct grid *g = &tr->g;
    for (int d = 0; d < g->dp; d++)
        rep[d] = 0.0;
    for (int r = 0; r < g->size; r++) {
        int d = (r / g->tp) % g->dp;
        rep[d] = rate[r] > rep[d] ? rate[r] : rep[d];
    }
}

int trainer_apply_shares(struct trainer *tr, const int *shares)
{
    memcpy(tr->shares, shares, (size_t)tr->g.dp * sizeof(int));
    tr->per_rank = shares[tr->g.dp_rank];
    tr->seq0 = balance_first(shares, tr->g.dp_rank);
    tr->accum = balance_micro_batches(tr->per_rank, tr->mb, tr->mb_sizes);
    return tr->accum;
}

/* This rank's slow-down factor (1 unless debug_slow_rank names it). */
static int slow_factor(struct trainer *tr, char *err, size_t errlen)
{
    int r;
    double f;
    config_slow_rank(tr->c.debug_slow_rank, &r, &f); /* checked */
    if (r >= tr->g.size) {
        snprintf(err, errlen, "debug_slow_rank=%s: there is no rank %d "
                 "(world size %d)", tr->c.debug_slow_rank, r, tr->g.size);
        return -1;
    }
    tr->slow = r == tr->g.rank ? f : 1.0;
    return 0;
}

int trainer_balance_init(struct trainer *tr, const struct gpt_config *gc,
                         char *err, size_t errlen)
{
    const struct grid *g = &tr->g;
    tr->bound = malloc((size_t)(g->pp + 1) * sizeof(int));
    tr->cal_all = malloc(3 * (size_t)g->size * sizeof(double));
    tr->shares = malloc((size_t)g->dp * sizeof(int));
    tr->mb_sizes = malloc((size_t)tr->c.batch_size * sizeof(int));
    int ok = tr->bound && tr->cal_all && tr->shares && tr->mb_sizes;
    if (!ok)
        snprintf(err, errlen, "out of memory");
    if (comm_agree(g->world, ok ? 0 : -1, err, errlen) < 0)
        return -1;
    if (slow_factor(tr, err, errlen) < 0)
        return -1; /* the same verdict everywhere: the same config */
    if (comm_agree(g->world, calib_measure_slow(gc, tr->mb, CALIB_BUDGET_S,
                                                tr->slow, &tr->cal, err,
                                                errlen), err, errlen) < 0)
        return -1;
    double mine[3] = {tr->cal.block_s, tr->cal.embed_s, tr->cal.head_s};
    MPI_Allgather(mine, 3, MPI_DOUBLE, tr->cal_all, 3, MPI_DOUBLE,
                  g->world);
    if (partition(tr, gc, err, errlen) < 0)
        return -1; /* the same verdict everywhere: the same numbers */
    int shares[g->dp];
    balance_shares_equal(g->dp, tr->c.batch_size, shares);
    if (!strcmp(tr->c.balance, "on")) {
        double rate[g->size], rep[g->dp];
        for (int r = 0; r < g->size; r++)
            rate[r] = stage_rate(tr, r);
        replica_rates(tr, rate, rep);
        balance_shares(g->dp, rep, tr->c.batch_size, shares);
    }
    trainer_apply_shares(tr, shares);
    return 0;
}

void trainer_balance_free(struct trainer *tr)
{
    free(tr->cal_all);
    free(tr->shares);
    free(tr->mb_sizes);
    tr->cal_all = NULL;
    tr->shares = tr->mb_sizes = NULL;
}

/* Rebuild the pipeline for the new micro-batch count (every stage of a
 * replica gets the same shares, so they agree).  Returns 0 or -1. */
static int rebuild_pipeline(struct trainer *tr, char *err, size_t errlen)
{
    enum pp_kind kind = tr->pl.sc.kind;
    pipeline_free(&tr->pl);
    tr->has_acts = 0;
    if (trainer_pipeline_build(tr, kind, err, errlen) < 0)
        return -1;
    /* ZeRO checks the model's uses against orders built from the
     * schedules (zero=1 takes unequal counts: it reduces once per step) */
    if (tr->has_zx &&
        zero_exec_replan(&tr->zx, &tr->pl.sc, &tr->pl.ev, err, errlen) < 0)
        return -1;
    return 0;
}

int trainer_rebalance(struct trainer *tr, char *err, size_t errlen)
{
    const struct grid *g = &tr->g;
    double mine = tr->seqs_acc > 0 ? tr->busy_acc / tr->seqs_acc : 0.0;
    double rate[g->size], rep[g->dp];
    int next[g->dp];
    MPI_Allgather(&mine, 1, MPI_DOUBLE, rate, 1, MPI_DOUBLE, g->world);
    tr->busy_acc = 0.0;
    tr->seqs_acc = 0;
    replica_rates(tr, rate, rep);
    if (!balance_rebalance(g->dp, rep, tr->shares, tr->c.batch_size,
                           REBALANCE_MIN_GAIN, next))
        return 0;
    trainer_apply_shares(tr, next);
    if (comm_agree(g->world, rebuild_pipeline(tr, err, errlen), err,
                   errlen) < 0)
        return -1;
    return 1;
}

int trainer_straggler(struct trainer *tr, double busy_s, double *ratio,
                      double *imbalance_s)
{
    const struct grid *g = &tr->g;
    double all[g->size];
    int slowest;
    MPI_Allgather(&busy_s, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, g->world);
    *imbalance_s = balance_imbalance(g->size, all);
    return balance_straggler(g->size, all, tr->c.straggler_ratio, ratio,
                             &slowest);
}

void trainer_shares_string(const struct trainer *tr, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int d = 0; d < tr->g.dp && n < len; d++)
        n += (size_t)snprintf(buf + n, len - n, "%s%d", d ? "," : "",
                              tr->shares[d]);
}

void trainer_print_balance(const struct trainer *tr, FILE *out)
{
    const struct grid *g = &tr->g;
    if (g->rank != 0)
        return;
    fprintf(out, "calibration (forward + backward of one micro-batch of %d "
            "sequences; rank 0 timed a block on %d sequences, the embedding "
            "and head on %d tokens%s, fastest of %d reps, %.2f s):\n",
            tr->cal.mb, tr->cal.seqs, tr->cal.head_tokens,
            tr->cal.head_fit ? " and half of them (fixed + per-token cost "
                               "fitted)" : "",
            tr->cal.reps, tr->cal.wall_s);
    if (g->size <= 16) {
        for (int r = 0; r < g->size; r++)
            fprintf(out, "  rank %d: block %.2f ms, embedding %.2f ms, head "
                    "+ loss %.2f ms\n", r, 1e3 * tr->cal_all[3 * r],
                    1e3 * tr->cal_all[3 * r + 1],
                    1e3 * tr->cal_all[3 * r + 2]);
    } else { /* a summary: the block's spread names the extremes */
        int lo = 0, hi = 0;
        for (int r = 1; r < g->size; r++) {
            lo = tr->cal_all[3 * r] < tr->cal_all[3 * lo] ? r : lo;
            hi = tr->cal_all[3 * r] > tr->cal_all[3 * hi] ? r : hi;
        }
        fprintf(out, "  %d ranks: block %.2f ms (rank %d) .. %.2f ms (rank "
                "%d), median %.2f; embedding median %.2f ms, head + loss "
                "median %.2f ms\n", g->size, 1e3 * tr->cal_all[3 * lo], lo,
                1e3 * tr->cal_all[3 * hi], hi,
                1e3 * median_cost(tr, 0) * g->tp, 1e3 * median_cost(tr, 1),
                1e3 * median_cost(tr, 2));
    }
    if (g->pp > 1 && !strcmp(tr->c.pp_partition, "auto"))
        fprintf(out, "pp_partition=auto: slowest stage %.2f ms per "
                "micro-batch calibrated (the parameter-balanced partition: "
                "%.2f ms)%s\n", 1e3 * slowest_stage(tr, tr->bound),
                1e3 * tr->stage_params_s,
                tr->stage_auto_s >= (1.0 - AUTO_KEEP_PARAMS) *
                tr->stage_params_s ? "; keeps the parameter-balanced one "
                "(within 5%)" : "");
    if (g->dp > 1) {
        char s[512];
        trainer_shares_string(tr, s, sizeof(s));
        fprintf(out, "data-parallel shares (balance=%s): %s of %d "
                "sequences\n", tr->c.balance, s, tr->c.batch_size);
    }
    if (tr->slow > 1.0 || strcmp(tr->c.debug_slow_rank, "") != 0)
        fprintf(out, "debug_slow_rank=%s: that rank repeats its kernels "
                "(test knob)\n", tr->c.debug_slow_rank);
    fflush(out);
}
