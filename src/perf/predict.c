/*
 * predict.c - `mpitron predict`: calibrate the performance model on this
 * machine, predict a layout's step time, rank layouts.  The comparison
 * with a measured sweep and the extrapolation are predict_report.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_io.h"
#include "cli.h"
#include "config/config.h"
#include "gemm.h"
#include "json.h"
#include "log.h"
#include "data/mix.h"
#include "perf_model.h"
#include "predict_report.h"

static const char *const extra[] = {
    "calibrate", "calib", "nodes", "ranks", "tps", "loads", "mbs",
    "threads_list", "kinds", "budget", "gpt2", "measured", "write",
    "extrapolate", "nets", "net_gbps", "latency_us", "max_nodes",
    "node_batch", "layouts", "json", "quick", "node_cores", "node_mem_gb",
    "cores", NULL};
enum {
    X_CALIBRATE, X_CALIB, X_NODES, X_RANKS, X_TPS, X_LOADS, X_MBS,
    X_THREADS, X_KINDS, X_BUDGET, X_GPT2, X_MEASURED, X_WRITE, X_EXTRAP,
    X_NETS, X_NET_GBPS, X_LATENCY, X_MAX_NODES, X_NODE_BATCH, X_LAYOUTS,
    X_JSON, X_QUICK, X_NODE_CORES, X_NODE_MEM, X_CORES, X_COUNT
};

static void help(void)
{
    printf(
        "usage: mpirun -np P mpitron predict --calibrate=FILE [CONFIG] "
        "[--key=value ...]\n"
        "           [--tps=1,2] [--loads=1,2,P] [--mbs=N,...] "
        "[--threads_list=1,...]\n"
        "           [--kinds=ring,rhd,mpi,shm,CODEC,...] [--budget=S] [--gpt2] "
        "[--quick]\n"
        "       mpitron predict --calib=FILE [CONFIG] [--key=value ...] "
        "[--nodes=N] [--ranks=R]\n"
        "           [--net_gbps=G --latency_us=U] [--cores=C] [--json] "
        "[--layouts]\n"
        "       mpitron predict --calib=FILE [CONFIG] --measured=scaling.csv "
        "[--write]\n"
        "       mpitron predict --calib=FILE --extrapolate [--nets=100,400] "
        "[--latency_us=2]\n"
        "           [--max_nodes=4096] [--node_batch=8] [--node_cores=N] "
        "[--node_mem_gb=G]\n\n"
        "The performance model of a training step (README: Scaling "
        "studies).\n\n"
        "--calibrate=FILE  measure on the ranks of this launch (run it under "
        "mpirun\n"
        "    --bind-to none, one rank per core or more): forward+backward of "
        "a block,\n"
        "    the embedding and the head of CONFIG's model for every tp in "
        "--tps,\n"
        "    micro-batch in --mbs and thread count in --threads_list while "
        "`load'\n"
        "    ranks compute at once, for every load in --loads (default: "
        "powers of\n"
        "    two up to the ranks); ping-pong and all-reduce lines t = a + b "
        "n for\n"
        "    every kind in --kinds (algorithms and codecs) in groups of each "
        "size\n"
        "    inside a node and between nodes; the optimizer per parameter.  "
        "--gpt2\n"
        "    adds GPT-2 small/medium/large/XL (vocabulary 50257, 1024 "
        "tokens) at\n"
        "    micro-batch 1 for --extrapolate.  --budget: seconds per compute "
        "figure.\n"
        "    --quick: two message sizes and few repetitions (tests).\n"
        "--calib=FILE  predict CONFIG's layout (dp, tp, pp, micro_batch, "
        "pp_schedule,\n"
        "    allreduce, compress, bucket_mb, threads, zero keys) on --nodes x "
        "--ranks/--nodes\n"
        "    ranks: the step, its compute, exposed communication, bubble, "
        "memory.\n"
        "    --net_gbps, --latency_us: a target network between nodes "
        "instead of the\n"
        "    calibrated one.  --cores: the cores per node other processes "
        "leave to the\n"
        "    job (default all; figures measured with fewer free are scaled "
        "up).\n"
        "    --layouts: rank every layout that fits (what "
        "layout=auto\n"
        "    picks from).  --json: one JSON object.\n"
        "--measured=CSV  predicted next to measured for each point of a "
        "sweep (jobs/\n"
        "    scaling.sh's scaling.csv), the error of each and the mean "
        "absolute error;\n"
        "    --write fills its predicted_ms_step and model_error columns.\n"
        "--extrapolate  weak scaling of GPT-2 small, medium, large and XL "
        "from 1 to\n"
        "    --max_nodes nodes of this machine (the calibrated cores and "
        "memory) on\n"
        "    networks of --nets Gb/s: the fastest layout that fits (any "
        "zero 0-3;\n"
        "    recompute=full when nothing fits without; the flat ring when "
        "it beats\n"
        "    auto), its efficiency, and where hier or compression pays.  "
        "--node_cores,\n"
        "    --node_mem_gb: bigger\n"
        "    nodes of the calibrated per-core speed.\n\n"
        "Model and training keys:\n\n");
    config_print_help(stdout);
}

/* "1,2,4" -> ints (positive); n or -1. */
static int int_list(const char *s, int *out, int max)
{
    int n = config_int_list(s, out, max);
    return n > max ? -1 : n;
}

static int default_loads(int ranks, int *loads)
{
    int n = 0;
    for (int l = 1; l < ranks && n < 15; l *= 2)
        loads[n++] = l;
    loads[n++] = ranks;
    return n;
}

static int do_calibrate(const struct config *c, const char **xv, char *err,
                        size_t errlen)
{
    int size, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int tps[16] = {1}, loads[16], mbs[16], th[16] = {1}, nt = 1, nth = 1;
    int nl = default_loads(size, loads);
    int nm = 1;
    mbs[0] = c->micro_batch > 0 ? c->micro_batch : c->batch_size;
    if ((xv[X_TPS] && (nt = int_list(xv[X_TPS], tps, 16)) < 1) ||
        (xv[X_LOADS] && (nl = int_list(xv[X_LOADS], loads, 16)) < 1) ||
        (xv[X_MBS] && (nm = int_list(xv[X_MBS], mbs, 16)) < 1) ||
        (xv[X_THREADS] && (nth = int_list(xv[X_THREADS], th, 16)) < 1)) {
        snprintf(err, errlen, "--tps, --loads, --mbs, --threads_list: "
                 "comma-separated positive integers (at most 16)");
        return -2;
    }
    char *kl = strdup(xv[X_KINDS] ? xv[X_KINDS] : "ring,rhd,mpi,shm");
    const char *kinds[32];
    int nk = 0;
    for (char *t = strtok(kl, ","); t && nk < 32; t = strtok(NULL, ","))
        if (strcmp(t, "none"))
            kinds[nk++] = t;
    double budget = xv[X_BUDGET] ? atof(xv[X_BUDGET]) : 2.0;
    /* the products' library as train and bench set it (fp32_gemm) */
    enum gemm_fp32_mode mode = GEMM_FP32_AUTO;
    gemm_fp32_mode_parse(c->fp32_gemm, &mode); /* checked by config */
    gemm_set_fp32_mode(mode);
    struct gpt_config gc;
    gpt_config_from(c, &gc);
    struct perf_calib pc;
    perf_calib_init(&pc);
    struct perf_calib_req rq = {
        .shapes = &gc, .nshapes = 1, .mbs = mbs, .nmb = nm, .tps = tps,
        .ntp = nt, .loads = loads, .nload = nl, .threads = th,
        .nthreads = nth, .kinds = kinds, .nkinds = nk, .budget_s = budget,
        .ranks_per_node = c->ranks_per_node, .quick = xv[X_QUICK] != NULL};
    int rc = perf_calibrate(&pc, &rq, MPI_COMM_WORLD, stdout, err, errlen);
    if (rc == 0 && xv[X_GPT2]) {
        struct gpt_config g2[4];
        int one = 1, top = loads[nl - 1];
        predict_gpt2_shapes(g2);
        struct perf_calib_req r2 = {
            .shapes = g2, .nshapes = 4, .mbs = &one, .nmb = 1, .tps = tps,
            .ntp = nt, .loads = &top, .nload = 1, .threads = &one,
            .nthreads = 1, .kinds = kinds, .nkinds = 0,
            .budget_s = budget, .ranks_per_node = c->ranks_per_node};
        rc = perf_calibrate(&pc, &r2, MPI_COMM_WORLD, stdout, err, errlen);
    }
    if (rc == 0 && rank == 0) {
        rc = perf_calib_save(&pc, xv[X_CALIBRATE], err, errlen);
        if (rc == 0)
            printf("wrote %s: %d compute, %d communication figures\n",
                   xv[X_CALIBRATE], pc.ncp, pc.ncm);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    perf_calib_free(&pc);
    free(kl);
    return rc;
}

/* --net_gbps / --latency_us and --cores into the calibration. */
static int apply_net(struct perf_calib *pc, const char **xv, char *err,
                     size_t errlen)
{
    if (xv[X_CORES]) {
        pc->avail = atof(xv[X_CORES]);
        if (!(pc->avail > 0) || pc->avail > pc->cores) {
            snprintf(err, errlen, "--cores=%s: must be in (0, %d], the "
                     "calibrated node's cores", xv[X_CORES], pc->cores);
            return -1;
        }
    }
    if (!xv[X_NET_GBPS])
        return 0;
    double g = atof(xv[X_NET_GBPS]);
    double us = xv[X_LATENCY] ? atof(xv[X_LATENCY]) : 2.0;
    if (!(g > 0) || !(us >= 0)) {
        snprintf(err, errlen, "--net_gbps must be > 0 and --latency_us >= 0");
        return -1;
    }
    pc->has_net = 1;
    pc->net.alpha = us * 1e-6;
    pc->net.beta = 8.0 / (g * 1e9);
    return 0;
}

static void print_prediction(const struct config *c,
                             const struct perf_layout *ly,
                             const struct perf_prediction *pr, int json)
{
    const struct perf_step_out *o = &pr->o;
    if (!json) {
        printf("layout: %d node(s) x %d rank(s), dp=%d tp=%d pp=%d "
               "micro_batch=%d (%d per step, %s), %d thread(s) per rank, "
               "allreduce=%s compress=%s\n", ly->nodes, ly->rpn, ly->dp,
               ly->tp, ly->pp, ly->mb, pr->m, c->pp_schedule, ly->threads,
               c->allreduce, c->compress);
        printf("predicted step %.1f ms (%.0f tokens/s): pipeline %.1f, "
               "compute %.1f (stage 0, optimizer %.1f), tp all-reduces %.1f, "
               "dp reductions %.1f of which exposed %.1f, bubble %.3f\n",
               1e3 * o->step, pr->tokens_per_s, 1e3 * o->pipeline,
               1e3 * o->compute, 1e3 * o->optim, 1e3 * pr->tp_comm,
               1e3 * pr->dp_busy, 1e3 * o->comm_exposed, o->bubble);
        printf("memory %.1f MB on the largest rank (%s)\n",
               pr->mem_bytes / 1048576.0, pr->fits ? "fits" : "DOES NOT FIT");
    }
    struct json j;
    json_init(&j);
    json_obj_begin(&j, NULL);
    const struct { const char *k; double v; } f[] = {
        {"predicted_ms_step", 1e3 * o->step}, {"ms_pipeline", 1e3 * o->pipeline},
        {"ms_compute", 1e3 * o->compute},
        {"ms_comm_exposed", 1e3 * o->comm_exposed}, {"bubble", o->bubble},
        {"ms_optimizer", 1e3 * o->optim}, {"ms_tp_comm", 1e3 * pr->tp_comm},
        {"ms_dp_comm", 1e3 * pr->dp_busy}, {"tokens_per_s", pr->tokens_per_s},
        {"mem_mb_per_rank", pr->mem_bytes / 1048576.0},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        json_num(&j, f[i].k, f[i].v, 6);
    const struct { const char *k; int v; } n[] = {
        {"fits", pr->fits}, {"nodes", ly->nodes}, {"ranks_per_node", ly->rpn},
        {"dp", ly->dp}, {"tp", ly->tp}, {"pp", ly->pp},
        {"micro_batch", ly->mb}, {"micro_batches", pr->m},
    };
    for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++)
        json_int(&j, n[i].k, n[i].v);
    json_obj_end(&j);
    json_write_line(&j, stdout);
    json_free(&j);
}

/* The layout of c on --nodes x --ranks. */
static int layout_of(const struct config *c, const struct perf_calib *pc,
                     const char **xv, struct perf_layout *ly, char *err,
                     size_t errlen)
{
    int nodes = xv[X_NODES] ? atoi(xv[X_NODES]) : 1;
    int ranks = xv[X_RANKS] ? atoi(xv[X_RANKS]) : c->dp * c->tp * c->pp;
    if (ranks < 1)
        ranks = c->tp * c->pp;
    if (nodes < 1 || ranks % nodes) {
        snprintf(err, errlen, "--ranks=%d is not a multiple of --nodes=%d",
                 ranks, nodes);
        return -1;
    }
    memset(ly, 0, sizeof(*ly));
    ly->nodes = nodes;
    ly->rpn = ranks / nodes;
    ly->tp = c->tp;
    ly->pp = c->pp;
    ly->dp = c->dp ? c->dp : ranks / (c->tp * c->pp);
    int per = ly->dp > 0 ? c->batch_size / ly->dp : 0;
    ly->mb = c->micro_batch ? c->micro_batch : per;
    ly->threads = c->threads ? c->threads
                  : pc->cores / ly->rpn > 1 ? pc->cores / ly->rpn : 1;
    return 0;
}

static int do_layouts(const struct config *c, const struct perf_calib *pc,
                      const struct perf_layout *ly, char *err, size_t errlen)
{
    struct perf_layout best, rk[10];
    double rs[10];
    int nf;
    if (perf_layout_search(pc, c, ly->nodes, ly->rpn, ly->threads, &best,
                           NULL, rk, rs, 10, &nf, err, errlen) < 0)
        return -1;
    printf("%d layout(s) of %d node(s) x %d rank(s) fit; the fastest "
           "predicted:\n| dp | tp | pp | micro_batch | ms/step | tokens/s "
           "|\n|---|---|---|---|---|---|\n", nf, ly->nodes, ly->rpn);
    for (int i = 0; i < nf && i < 10; i++)
        printf("| %d | %d | %d | %d | %.1f | %.0f |\n", rk[i].dp, rk[i].tp,
               rk[i].pp, rk[i].mb, 1e3 * rs[i],
               (double)c->batch_size * c->seq_len / rs[i]);
    return 0;
}

static int do_predict(const struct config *c, const char **xv, char *err,
                      size_t errlen)
{
    struct perf_calib pc;
    perf_calib_init(&pc);
    int rc = perf_calib_load(&pc, xv[X_CALIB], err, errlen);
    if (rc == 0)
        rc = apply_net(&pc, xv, err, errlen);
    if (rc == 0 && xv[X_EXTRAP]) {
        struct extrap_opts eo = {xv[X_NETS], xv[X_LATENCY], xv[X_MAX_NODES],
                                 xv[X_NODE_BATCH], xv[X_NODE_CORES],
                                 xv[X_NODE_MEM]};
        rc = predict_extrapolate(&pc, c, &eo, err, errlen);
    }
    else if (rc == 0 && xv[X_MEASURED])
        rc = predict_measured(&pc, c, xv[X_MEASURED], xv[X_WRITE] != NULL,
                              err, errlen);
    else if (rc == 0) {
        struct perf_layout ly;
        struct perf_prediction pr;
        rc = layout_of(c, &pc, xv, &ly, err, errlen);
        if (rc == 0 && xv[X_LAYOUTS])
            rc = do_layouts(c, &pc, &ly, err, errlen);
        else if (rc == 0 &&
                 (rc = perf_predict(&pc, c, &ly, &pr, err, errlen)) == 0)
            print_prediction(c, &ly, &pr, xv[X_JSON] != NULL);
    }
    perf_calib_free(&pc);
    return rc;
}

int cmd_predict(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        help();
        return 0;
    }
    struct config c;
    char err[1024];
    const char *xv[X_COUNT] = {NULL};
    config_defaults(&c);
    if (config_parse_args(&c, argc, argv, extra, xv, err, sizeof(err)) < 0 ||
        config_finalize(&c, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    /* vocab_size = 0: the data's vocabulary, 256 without a data directory */
    if (data_spec_vocab(c.data, &c.vocab_size, 1, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    if (!xv[X_CALIBRATE] == !xv[X_CALIB]) {
        log_error("predict needs exactly one of --calibrate=FILE (measure) "
                  "and --calib=FILE (predict); see --help");
        return 2;
    }
    int rank, rc;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (xv[X_CALIBRATE])
        rc = do_calibrate(&c, xv, err, sizeof(err));
    else
        rc = rank == 0 ? do_predict(&c, xv, err, sizeof(err)) : 0;
    if (rc < 0 && rank == 0)
        log_error("%s", err);
    return rc == -2 ? 2 : rc < 0 ? 1 : 0;
}
