/*
 * bench.c - `mpitron bench gemm | step`: measured figures, human readable,
 * then one JSON object on the last line for scripts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "gemm.h"
#include "json.h"
#include "log.h"
#include "perf/perf_model.h"
#include "mem_report.h"
#include "data/mix.h"
#include "peak.h"
#include "rng.h"
#include "train/train.h"

/* Synthetic tokens for bench step: data loading is not what it measures. */
static void fake_batch(int32_t *inp, int32_t *tgt, size_t n, int V, int r)
{
    uint64_t key = rng_key(42, RNG_DATA, (uint64_t)r);
    for (size_t i = 0; i < n; i++) {
        inp[i] = (int32_t)(rng_u64(key, i) % (uint64_t)V);
        tgt[i] = (int32_t)(rng_u64(key, i + n) % (uint64_t)V);
    }
}

struct bench_result {
    double ms, compute, comm, hidden, optim, op[OPK_COUNT];
    double recompute;  /* rank 0's recomputation in backward */
    double wire_mb;
    double bubble;     /* mean over the steps; pp > 1 */
    double pp_wait;    /* rank 0's wait for its neighbouring stages */
    double busy[64];   /* per stage (up to 64): mean busy ms per step */
    double ms_median;  /* the median step (robust to other jobs) */
    /* per world rank (NULL if out of memory), means over the steps: its
     * compute ms per step, its imbalance (the slowest rank's compute in
     * the same step minus its own: what a synchronising step idles it),
     * its GEMM peak, its exposed communication ms */
    double *rank_compute, *rank_idle, *rank_peak, *rank_comm;
    double idle;       /* rank_idle's mean over the ranks */
};

static void bench_result_free(struct bench_result *r)
{
    free(r->rank_compute);
    free(r->rank_idle);
    free(r->rank_peak);
    free(r->rank_comm);
    r->rank_compute = r->rank_idle = r->rank_peak = r->rank_comm = NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Every rank's mean compute, its imbalance against the slowest rank's
 * compute step by step (cmp: this rank's compute seconds of each of n
 * steps), its GEMM peak and its exposed communication, gathered on every
 * rank (collective). */
static void gather_ranks(struct trainer *tr, const double *cmp, int n,
                         struct bench_result *r)
{
    int p = tr->g.size;
    double *slowest = malloc((size_t)n * sizeof(double));
    double mine[4] = {0.0, 0.0, tr->peak_own_gflops, r->comm};
    double *all = malloc((size_t)p * 4 * sizeof(double));
    int ok = cmp && slowest && all, every;
    MPI_Allreduce(&ok, &every, 1, MPI_INT, MPI_MIN, tr->g.world);
    if (every) {
        MPI_Allreduce(cmp, slowest, n, MPI_DOUBLE, MPI_MAX, tr->g.world);
        for (int i = 0; i < n; i++) {
            mine[0] += cmp[i];
            mine[1] += slowest[i] - cmp[i];
        }
        mine[0] *= 1e3 / n;
        mine[1] *= 1e3 / n;
        mine[3] *= 1e3 / n;
        MPI_Allgather(mine, 4, MPI_DOUBLE, all, 4, MPI_DOUBLE, tr->g.world);
        r->rank_compute = malloc((size_t)p * sizeof(double));
        r->rank_idle = malloc((size_t)p * sizeof(double));
        r->rank_peak = malloc((size_t)p * sizeof(double));
        r->rank_comm = malloc((size_t)p * sizeof(double));
    }
    if (r->rank_compute && r->rank_idle && r->rank_peak && r->rank_comm) {
        for (int q = 0; q < p; q++) {
            r->rank_compute[q] = all[4 * q];
            r->rank_idle[q] = all[4 * q + 1];
            r->rank_peak[q] = all[4 * q + 2];
            r->rank_comm[q] = all[4 * q + 3];
            r->idle += all[4 * q + 1] / p;
        }
    } else {
        bench_result_free(r);
    }
    free(slowest);
    free(all);
}

static void run_steps(struct trainer *tr, int n, const int32_t *inp,
                      const int32_t *tgt, struct bench_result *r)
{
    bench_result_free(r);
    memset(r, 0, sizeof(*r));
    if (n <= 0) /* no warm-up (every rank has the same n) */
        return;
    memset(tr->m.op_time, 0, sizeof(tr->m.op_time));
    tr->m.recompute_time = 0.0;
    /* per-step times, kept only if every rank has room for them: what
     * follows the steps is collective */
    double *each = calloc((size_t)n, sizeof(double));
    double *cmp = calloc((size_t)n, sizeof(double));
    int ok = each && cmp, every;
    MPI_Allreduce(&ok, &every, 1, MPI_INT, MPI_MIN, tr->g.world);
    if (!every) {
        free(each);
        free(cmp);
        each = cmp = NULL;
    }
    MPI_Barrier(tr->g.world);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        double gn, lr, ts = now_s();
        struct step_times tm;
        trainer_step(tr, inp, tgt, &gn, &lr, &tm);
        if (each) { /* the step as the slowest rank saw it */
            each[i] = now_s() - ts;
            cmp[i] = tm.compute;
        }
        r->compute += tm.compute;
        r->comm += tm.comm;
        r->hidden += tm.comm_overlapped;
        r->wire_mb += (double)tm.wire_bytes / 1048576.0;
        r->optim += tm.optim;
        r->bubble += tm.bubble;
        r->pp_wait += tm.pp_wait;
        for (int s = 0; s < tr->g.pp && s < 64; s++)
            r->busy[s] += tr->stage_busy[s];
    }
    MPI_Barrier(tr->g.world);
    double scale = 1e3 / n;
    r->ms = (now_s() - t0) * scale;
    r->ms_median = r->ms; /* without the per-step times: the mean */
    if (each) {
        MPI_Allreduce(MPI_IN_PLACE, each, n, MPI_DOUBLE, MPI_MAX,
                      tr->g.world);
        qsort(each, (size_t)n, sizeof(double), cmp_double);
        r->ms_median = 1e3 * (n % 2 ? each[n / 2]
                                    : 0.5 * (each[n / 2 - 1] + each[n / 2]));
        free(each);
    }
    gather_ranks(tr, cmp, n, r);
    free(cmp);
    r->compute *= scale;
    r->comm *= scale;
    r->hidden *= scale;
    r->wire_mb /= n;
    r->optim *= scale;
    r->bubble /= n;
    r->pp_wait *= scale;
    for (int s = 0; s < tr->g.pp && s < 64; s++)
        r->busy[s] *= scale;
    for (int k = 0; k < OPK_COUNT; k++)
        r->op[k] = tr->m.op_time[k] * scale;
    r->recompute = tr->m.recompute_time * scale;
}

/* The human-readable part of the report (rank 0). */
static void report_text(struct trainer *tr, const struct bench_result *r,
                        double tps, double mfu, const struct mem_report *all)
{
    const struct config *c = &tr->c;
    double mfu32 = tps * gpt_flops_per_token(&tr->m.cfg) /
                   (tr->peak_fp32_gflops * 1e9);
    printf("model: %lld parameters, %.3g GFLOP per token (6N + 12 L T C; "
           "N without the position table)\n",
           (long long)gpt_num_params(&tr->m.cfg),
           gpt_flops_per_token(&tr->m.cfg) * 1e-9);
    printf("precision %s; GEMM peak %.1f GFLOP/s %s (fp32 %.1f; all %d "
           "ranks, %d threads each; fp32 products: %s)\n", tr->precision,
           tr->peak_gflops, tr->precision, tr->peak_fp32_gflops, tr->g.size,
           threads_get(), gemm_fp32_mode_name(gemm_get_fp32_mode()));
    printf("step %.1f ms  %.0f tokens/s  MFU %.1f%% (against the %s peak; "
           "%.1f%% against fp32's)\n", r->ms, tps, 100 * mfu, tr->precision,
           100 * mfu32);
    printf("  compute %.1f ms (optimizer %.1f)  comm %.1f ms exposed "
           "(%.1f%% of the step) + %.1f ms overlapped; %.1f MB sent per "
           "rank; pipeline wait %.1f ms\n", r->compute, r->optim, r->comm,
           100 * r->comm / r->ms, r->hidden, r->wire_mb, r->pp_wait);
    if (r->rank_idle && tr->g.size > 1) {
        printf("  imbalance %.1f ms per step (%.1f%% of the step): the "
               "slowest rank's compute minus\n  each rank's, mean over the "
               "ranks, idled at the step's synchronisation\n", r->idle,
               100 * r->idle / r->ms);
        for (int q = 0; q < tr->g.size && q < 16; q++)
            printf("    rank %d: compute %.1f ms, exposed comm %.1f ms, "
                   "imbalance %.1f ms per step; GEMM peak %.1f GFLOP/s\n", q,
                   r->rank_compute[q], r->rank_comm[q], r->rank_idle[q],
                   r->rank_peak[q]);
    }
    printf("  per op kind (rank 0%s; recomputation %.1f ms of it):\n",
           tr->g.pp > 1 ? ", stage 0" : "", r->recompute);
    for (int k = 0; k < OPK_COUNT; k++)
        printf("  %-12s %8.1f ms  %5.1f%%\n", op_kind_names[k], r->op[k],
               100 * r->op[k] / r->ms);

    mem_report_print(stdout, c, all, tr->g.size);
    if (tr->g.pp > 1) {
        printf("pipeline: pp=%d %s, %d micro-batches: bubble %.3f measured, "
               "%.3f in theory (p-1)/(m+p-1)\n", tr->g.pp, c->pp_schedule,
               tr->accum, r->bubble, pp_bubble_theory(tr->g.pp, tr->accum));
        for (int s = 0; s < tr->g.pp; s++)
            printf("  stage %d: blocks [%d, %d)  busy %.1f ms per step "
                   "(mean)  last step: busy %.1f ms  idle %.1f ms\n", s,
                   tr->bound[s], tr->bound[s + 1], s < 64 ? r->busy[s] : 0.0,
                   1e3 * tr->stage_busy[s], 1e3 * tr->stage_idle[s]);
    }
}

/* The JSON report's layout part: world, the parallel and memory keys, the
 * pipeline's stages, the balance and placement keys. */
static void report_json_layout(struct json *j, const struct trainer *tr,
                               const struct bench_result *r)
{
    const struct config *c = &tr->c;
    json_int(j, "world", tr->g.size);
    json_int(j, "threads", threads_get());
    json_int(j, "n_params", gpt_num_params(&tr->m.cfg));
    json_int(j, "dp", tr->g.dp);
    json_int(j, "tp", tr->g.tp);
    json_int(j, "pp", tr->g.pp);
    json_str(j, "pp_schedule", c->pp_schedule);
    json_int(j, "micro_batches", tr->accum);
    json_str(j, "allreduce", c->allreduce);
    json_str(j, "compress", c->compress);
    json_int(j, "zero", c->zero);
    json_str(j, "recompute", c->recompute);
    json_str(j, "offload", c->offload);
    json_num(j, "bubble", r->bubble, 6);
    json_num(j, "bubble_theory", pp_bubble_theory(tr->g.pp, tr->accum), 6);
    const double *arr[2] = {tr->stage_busy, tr->stage_idle};
    const char *key[2] = {"stage_busy_ms", "stage_idle_ms"};
    for (int k = 0; k < 2; k++) {
        json_arr_begin(j, key[k]);
        for (int s = 0; s < tr->g.pp; s++)
            json_num(j, NULL, 1e3 * arr[k][s], 6);
        json_arr_end(j);
    }
    json_arr_begin(j, "stage_busy_ms_mean");
    for (int s = 0; s < tr->g.pp && s < 64; s++)
        json_num(j, NULL, r->busy[s], 6);
    json_arr_end(j);
    json_arr_begin(j, "stage_blocks");
    for (int s = 0; s < tr->g.pp; s++)
        json_int(j, NULL, tr->bound[s + 1] - tr->bound[s]);
    json_arr_end(j);
    json_str(j, "pp_partition", c->pp_partition);
    json_str(j, "balance", c->balance);
    json_arr_begin(j, "dp_shares");
    for (int d = 0; d < tr->g.dp; d++)
        json_int(j, NULL, tr->shares[d]);
    json_arr_end(j);
    json_str(j, "debug_slow_rank", c->debug_slow_rank);
    json_str(j, "bind", c->bind);
    json_int(j, "blas_threads", tr->place.blas);
    json_int(j, "omp_threads", tr->place.omp);
}

static void report(struct trainer *tr, const struct bench_result *r)
{
    const struct config *c = &tr->c;
    double tokens = (double)c->batch_size * c->seq_len;
    double tps = tokens / (r->ms * 1e-3);
    double mfu = tps * gpt_flops_per_token(&tr->m.cfg) /
                 (tr->peak_gflops * 1e9);
    struct mem_report *all = tr->g.rank == 0
        ? calloc((size_t)tr->g.size, sizeof(*all)) : NULL;
    if (comm_agree(tr->g.world, tr->g.rank == 0 && !all ? -1 : 0, NULL,
                   0) < 0)
        return; /* rank 0 has no memory for the report */
    mem_report_gather(tr, all); /* collective */
    if (tr->g.rank != 0)
        return;
    report_text(tr, r, tps, mfu, all);
    struct json j;
    json_init(&j);
    json_obj_begin(&j, NULL);
    json_str(&j, "precision", tr->precision);
    json_num(&j, "mfu_fp32_peak",
             tps * gpt_flops_per_token(&tr->m.cfg) /
                 (tr->peak_fp32_gflops * 1e9), 6);
    json_num(&j, "peak_fp32_gflops", tr->peak_fp32_gflops, 6);
    json_str(&j, "fp32_gemm", gemm_fp32_mode_name(gemm_get_fp32_mode()));
    const struct { const char *k; double v; } f[] = {
        {"tokens_per_s", tps}, {"mfu", mfu}, {"peak_gflops", tr->peak_gflops},
        {"ms_per_step", r->ms}, {"ms_per_step_median", r->ms_median},
        {"ms_compute", r->compute},
        {"ms_comm", r->comm}, {"ms_comm_exposed", r->comm},
        {"ms_comm_overlapped", r->hidden},
        {"comm_exposed_frac", r->comm / r->ms}, {"wire_mb", r->wire_mb},
        {"ms_optimizer", r->optim}, {"ms_data", 0.0},
        {"ms_pp_wait", r->pp_wait}, {"ms_recompute", r->recompute},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        json_num(&j, f[i].k, f[i].v, 6);
    for (int k = 0; k < OPK_COUNT; k++) {
        char key[64];
        snprintf(key, sizeof(key), "ms_%s", op_kind_names[k]);
        json_num(&j, key, r->op[k], 6);
    }
    if (r->rank_idle) {
        const double *per[4] = {r->rank_compute, r->rank_comm,
                                r->rank_idle, r->rank_peak};
        const char *name[4] = {"ms_compute_per_rank", "ms_comm_per_rank",
                               "ms_imbalance_per_rank",
                               "peak_gflops_per_rank"};
        json_num(&j, "ms_imbalance", r->idle, 6);
        for (int k = 0; k < 4; k++) {
            json_arr_begin(&j, name[k]);
            for (int q = 0; q < tr->g.size; q++)
                json_num(&j, NULL, per[k][q], 6);
            json_arr_end(&j);
        }
    }
    mem_report_json(&j, all, tr->g.size); /* rank 0's, every rank's */
    report_json_layout(&j, tr, r);
    json_obj_end(&j);
    json_write_line(&j, stdout);
    json_free(&j);
    free(all);
}

static int bench_step(int argc, char **argv)
{
    static const char *const extra[] = {"bench_steps", "bench_warmup", NULL};
    const char *ev[2] = {"5", "1"};
    struct config c;
    char err[1024];
    long ns, nw;
    config_defaults(&c);
    if (config_parse_args(&c, argc, argv, extra, ev, err, sizeof(err)) < 0 ||
        config_finalize(&c, err, sizeof(err)) < 0 ||
        cli_int("bench_steps", ev[0], &ns, err, sizeof(err)) < 0 ||
        cli_int("bench_warmup", ev[1], &nw, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    if (data_spec_vocab(c.data, &c.vocab_size, 1, err, sizeof(err)) < 0 ||
        (!strcmp(c.layout, "auto") &&
         perf_layout_auto(&c, MPI_COMM_WORLD, err, sizeof(err)) < 0)) {
        log_error("%s", err);
        return 1;
    }
    struct trainer tr;
    if (trainer_init(&tr, &c, MPI_COMM_WORLD, err, sizeof(err)) < 0) {
        log_error("%s", err);
        trainer_free(&tr);
        return 1;
    }
    place_print_banner(&tr.place, tr.g.world, stdout);
    place_warn(&tr.place, tr.g.world);
    trainer_print_balance(&tr, stdout);
    size_t n = (size_t)tr.per_rank * c.seq_len;
    int32_t *inp = malloc(2 * n * sizeof(int32_t));
    fake_batch(inp, inp + n, n, c.vocab_size, tr.g.rank);
    struct bench_result r = {0};
    run_steps(&tr, (int)nw, inp, inp + n, &r);
    /* the reference: the GEMM peaks measured again, carefully, just before
     * the timed steps, at the same thread count, on every rank at once */
    trainer_measure_peak(&tr, 1);
    run_steps(&tr, (int)(ns > 0 ? ns : 1), inp, inp + n, &r);
    report(&tr, &r);
    bench_result_free(&r);
    free(inp);
    trainer_free(&tr);
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 1 || cli_wants_help(argc, argv)) {
        printf("usage: mpitron bench gemm [--sizes=N,N,...] "
               "[--shapes=MxNxK[:nt],...] [--threads=N]\n"
               "                [--reps=N] [--fp32_gemm=auto|openblas|onednn]\n"
               "       mpitron bench step [CONFIG.ini] [--key=value ...] "
               "[--bench_steps=N] [--bench_warmup=N]\n"
               "       mpitron bench allreduce [--sizes=4K,1M,16M,...] "
               "[--algo=mpi,ring,rhd,hier,shm]\n"
               "                [--compress=none,topk:0.01,...] [--csv] "
               "[--iters=N] [--ranks_per_node=N]\n"
               "                [--tune=FILE]\n"
               "       mpitron bench ckpt [CONFIG.ini] [--key=value ...] "
               "[--dir=DIR] [--reps=N]\n\n"
               "gemm: GFLOP/s (summed over ranks) of each square size and "
               "shape (MxNxK:nt,\n... with n/t for op(A), op(B)), on "
               "OpenBLAS, oneDNN fp32 and oneDNN bf16\n(bf16 inputs, fp32 "
               "output), the fp32 library the fp32_gemm mode picks, and\n"
               "the peaks over the squares; the default shapes are a "
               "GPT-2-small layer's.\n"
               "\nstep: times training steps of the configured model on "
               "synthetic tokens\n(every train key applies); prints the "
               "time split per op kind, MFU against\nthe GEMM peak of the "
               "precision in use measured in the same process (and\n"
               "mfu_fp32_peak against fp32's), and memory.  The last line is"
               "\none JSON object: precision, tokens_per_s, mfu, mfu_fp32_peak, "
               "peak_gflops,\npeak_fp32_gflops, ms_per_step, ms_* "
               "split,\nrss_peak_mb, params_mb, grads_mb, optimizer_mb, "
               "activations_mb, activations_mb_per_rank;\nper rank: "
               "ms_compute_per_rank, ms_comm_per_rank, peak_gflops_per_rank "
               "and\nms_imbalance_per_rank (the slowest rank's compute minus "
               "its own, per step;\nms_imbalance: their mean); the layout keys "
               "dp, tp, pp, pp_schedule apply:\nwith pp > 1 also bubble "
               "(measured), bubble_theory, stage_busy_ms,\nstage_idle_ms (last "
               "step), stage_busy_ms_mean, stage_blocks; and pp_partition,\n"
               "balance, dp_shares, bind, blas_threads, omp_threads.\n"
               "Each rank is bound and calibrated first, as for train."
               "\nallreduce: per size, algorithm and codec: "
               "time, algorithm and bus bandwidth\n(2(p-1)/p bytes/time), "
               "bytes this rank sent, and the ratio to MPI_Allreduce\nin the "
               "same run; --tune=FILE writes the thresholds of "
               "allreduce=auto.\nshm runs on buffers in memory the ranks "
               "share (bytes: read from the others);\nit is left out when "
               "they span several nodes.\nckpt: saves and loads the model's "
               "checkpoint in DIR/ckpt (default bench_ckpt),\nand writes and "
               "reads as many bytes with plain sequential I/O there (fsync "
               "on both sides);\nthe best of --reps for each of "
               "write_gbps, read_gbps, raw_write_gbps, raw_read_gbps,\n"
               "stall_ms (sync), stall_ms_async, and write_vs_raw, "
               "write_vs_raw_median.\n\n");
        if (argc >= 1 && !strcmp(argv[0], "step"))
            config_print_help(stdout);
        return argc < 1 ? 2 : 0;
    }
    if (!strcmp(argv[0], "gemm"))
        return bench_gemm(argc - 1, argv + 1);
    if (!strcmp(argv[0], "step"))
        return bench_step(argc - 1, argv + 1);
    if (!strcmp(argv[0], "allreduce"))
        return bench_allreduce(argc - 1, argv + 1);
    if (!strcmp(argv[0], "ckpt"))
        return bench_ckpt(argc - 1, argv + 1);
    log_error("unknown benchmark '%s' (gemm | step | allreduce | ckpt)",
              argv[0]);
    return 2;
}
