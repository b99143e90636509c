/*
 * predict_extrap.c - `mpitron predict --extrapolate`: GPT-2 small,
 * medium, large and XL on 1 .. 4096 nodes of the calibrated kind (its
 * cores, one rank each, and its memory), weak scaling (a fixed number of
 * sequences per node), on given networks between the nodes; the fastest
 * layout that fits, and where hier or compression pays.
 */
#include "predict_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NETS 8
#define MAX_N 32

static const char *const names[4] = {"small", "medium", "large", "XL"};

struct ex {
    const struct perf_calib *pc;
    double gbps[MAX_NETS], lat;
    int nnet, nodes[MAX_N], nn, node_batch, rpn;
};

static void base_config(const struct config *c0, const struct gpt_config *g,
                        int batch, struct config *c)
{
    *c = *c0;
    c->n_layer = g->n_layer;
    c->n_embd = g->n_embd;
    c->n_head = g->n_head;
    c->n_kv_head = g->n_kv_head;
    c->seq_len = g->seq_len;
    c->vocab_size = g->vocab_size;
    c->attn_window = 0;
    c->batch_size = batch;
    c->micro_batch = 0;
    c->dp = 0;
    snprintf(c->pp_schedule, sizeof(c->pp_schedule), "1f1b");
}

/* The fastest layout of c on n nodes over network k, with each ZeRO
 * stage 0..3 (*zero: the one it uses; a layout that fits only with its
 * shards is found too) or, zero NULL, with c's: 0, or -1 with the
 * search's error (zero = 0's) when none fits. */
static int best_on(const struct ex *x, const struct config *c, int n, int k,
                   struct perf_layout *ly, struct perf_prediction *pr,
                   int *zero, char *err, size_t errlen)
{
    struct perf_calib pc = *x->pc; /* shares the figures; own network */
    pc.has_net = 1;
    pc.net.alpha = x->lat * 1e-6;
    pc.net.beta = 8.0 / (x->gbps[k] * 1e9);
    if (!zero) /* c's own ZeRO stage */
        return perf_layout_search(&pc, c, n, x->rpn, 1, ly, pr, NULL, NULL,
                                  0, NULL, err, errlen);
    return perf_layout_search_zero(&pc, c, n, x->rpn, 1, ly, pr, zero, err,
                                   errlen);
}

static int table_shape(const struct ex *x, const struct config *c0,
                       const struct gpt_config *g, const char *name,
                       char *err, size_t errlen)
{
    printf("\nGPT-2 %s (%.0fM parameters): %d sequences of %d tokens per "
           "node, %d ranks per node, weak-scaling efficiency = tokens/s per "
           "node against the fewest nodes it fits on\n\n| nodes |", name,
           gpt_num_params(g) / 1e6, x->node_batch, g->seq_len, x->rpn);
    for (int k = 0; k < x->nnet; k++)
        printf(" %.0f Gb/s: layout | ms/step | efficiency |", x->gbps[k]);
    printf("\n|---|");
    for (int k = 0; k < x->nnet; k++)
        printf("---|---|---|");
    printf("\n");
    double base[MAX_NETS] = {0};
    for (int i = 0; i < x->nn; i++) {
        int n = x->nodes[i];
        struct config c;
        base_config(c0, g, x->node_batch * n, &c);
        printf("| %d |", n);
        for (int k = 0; k < x->nnet; k++) {
            struct perf_layout ly;
            struct perf_prediction pr;
            char e[512];
            int z, ring = 0, full = 0;
            /* recompute=full when no layout fits without it (GPT-2 XL's
             * 48 blocks of saved activations at 1024 tokens need more
             * than a rank's share of 512 GB whatever ZeRO shards) */
            struct config cf = c;
            int rc = best_on(x, &c, n, k, &ly, &pr, &z, e, sizeof(e));
            if (rc < 0 && !strstr(e, "calibration has no")) {
                snprintf(cf.recompute, sizeof(cf.recompute), "full");
                full = best_on(x, &cf, n, k, &ly, &pr, &z, e,
                               sizeof(e)) == 0;
                rc = full ? 0 : rc;
            }
            if (rc < 0) {
                if (strstr(e, "calibration has no"))
                    return snprintf(err, errlen, "%s (predict --calibrate "
                                    "... --gpt2)", e), -1;
                printf(" does not fit | | |");
                continue;
            }
            /* the flat ring when the model says it beats auto's choice
             * (auto is comm/allreduce.c's rule: hier across nodes above
             * allreduce_tune's hier_min, whatever the node count) */
            struct config cr = full ? cf : c;
            struct perf_layout lr;
            struct perf_prediction prr;
            int zr;
            snprintf(cr.allreduce, sizeof(cr.allreduce), "ring");
            if (n > 1 && !strcmp(c.allreduce, "auto") &&
                best_on(x, &cr, n, k, &lr, &prr, &zr, e, sizeof(e)) == 0 &&
                prr.o.step < pr.o.step)
                ly = lr, pr = prr, z = zr, ring = 1;
            double per_node = pr.tokens_per_s / n;
            if (base[k] == 0.0)
                base[k] = per_node;
            char zs[48];
            snprintf(zs, sizeof(zs), "%s%s%s", ring ? " ring" : "",
                     z && ly.dp > 1 ? (z == 1 ? " zero1" : z == 2 ? " zero2"
                                                           : " zero3")
                                    : "",
                     full ? " recompute" : "");
            printf(" dp%d tp%d pp%d mb%d%s | %.0f | %.2f |", ly.dp, ly.tp,
                   ly.pp, ly.mb, zs, 1e3 * pr.o.step, per_node / base[k]);
        }
        printf("\n");
    }
    return 0;
}

/* GPT-2 small: the fastest layout's step with each all-reduce and codec,
 * against a plain ring without compression. */
static int table_pays(const struct ex *x, const struct config *c0,
                      const struct gpt_config *g, char *err, size_t errlen)
{
    static const char *const ar[4] = {"ring", "auto", "auto", "auto"};
    static const char *const cm[4] = {"none", "none", "fp16", "powersgd:4"};
    printf("\nWhere hier or compression pays, GPT-2 small: ms per step of "
           "the fastest layout with allreduce=ring (no compression), "
           "allreduce=auto (hier across nodes), and auto with fp16 and "
           "powersgd:4 compression\n\n| network | nodes | ring | auto/hier "
           "| fp16 | powersgd:4 | best |\n|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < x->nnet; k++)
        for (int i = 0; i < x->nn; i += 2) {
            int n = x->nodes[i];
            double t[4];
            int bi = 0;
            printf("| %.0f Gb/s | %d |", x->gbps[k], n);
            for (int v = 0; v < 4; v++) {
                struct config c;
                struct perf_layout ly;
                struct perf_prediction pr;
                base_config(c0, g, x->node_batch * n, &c);
                snprintf(c.allreduce, sizeof(c.allreduce), "%s", ar[v]);
                snprintf(c.compress, sizeof(c.compress), "%s", cm[v]);
                /* the config's ZeRO stage (0): ZeRO's reduce-scatters
                 * are rings whatever allreduce says */
                if (best_on(x, &c, n, k, &ly, &pr, NULL, err, errlen) < 0)
                    return -1;
                t[v] = pr.o.step;
                bi = t[v] < t[bi] ? v : bi;
                printf(" %.0f |", 1e3 * t[v]);
            }
            printf(" %s%s (%.2fx ring) |\n", cm[bi],
                   bi == 1 ? " hier/auto" : "", t[0] / t[bi]);
        }
    return 0;
}

int predict_extrapolate(const struct perf_calib *pc0, const struct config *c,
                        const struct extrap_opts *o, char *err,
                        size_t errlen)
{
    struct ex x;
    struct perf_calib node = *pc0; /* the figures shared; the node's own */
    const struct perf_calib *pc = &node;
    memset(&x, 0, sizeof(x));
    x.pc = pc;
    x.lat = o->latency_us ? atof(o->latency_us) : 2.0;
    x.node_batch = o->node_batch ? atoi(o->node_batch) : 8;
    if (o->node_cores)
        node.cores = atoi(o->node_cores);
    if (o->node_mem_gb)
        node.mem_bytes = atof(o->node_mem_gb) * 1e9;
    x.rpn = node.cores;
    int maxn = o->max_nodes ? atoi(o->max_nodes) : 4096;
    int g[MAX_NETS];
    int ng = config_int_list(o->nets ? o->nets : "100,400", g, MAX_NETS);
    if (ng < 1 || ng > MAX_NETS || !(x.lat >= 0) || x.node_batch < 1 ||
        maxn < 1 || node.cores < 1 || !(node.mem_bytes > 0)) {
        snprintf(err, errlen, "--nets (Gb/s, comma-separated, at most %d), "
                 "--latency_us, --max_nodes, --node_batch, --node_cores, "
                 "--node_mem_gb must be positive", MAX_NETS);
        return -1;
    }
    for (int k = 0; k < ng; k++)
        x.gbps[k] = g[k];
    x.nnet = ng;
    for (int n = 1; n <= maxn && x.nn < MAX_N; n *= 2)
        x.nodes[x.nn++] = n;
    printf("Extrapolation from this machine's calibration (%d cores): "
           "nodes of %d cores at its per-core speed (one rank each, 1 "
           "thread) and %.1f GB; networks of", pc0->cores, pc->cores,
           pc->mem_bytes / 1e9);
    for (int k = 0; k < ng; k++)
        printf(" %.0f", x.gbps[k]);
    printf(" Gb/s, %.1f us latency between nodes; inside a node the "
           "calibrated links\n", x.lat);
    struct gpt_config shapes[4];
    predict_gpt2_shapes(shapes);
    for (int s = 0; s < 4; s++)
        if (table_shape(&x, c, &shapes[s], names[s], err, errlen) < 0)
            return -1;
    return table_pays(&x, c, &shapes[0], err, errlen);
}
