/*
 * topo_cmd.c - `mpitron topo`: the node's hwloc topology, every rank's
 * binding as the launcher left it (overlaps and idle cores named), the
 * binding plan for N ranks, and with --calibrate each rank's measured
 * speed on the model's kernels after binding as `train` would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "config/config.h"
#include "log.h"
#include "data/mix.h"
#include "peak.h"
#include "place.h"
#include "comm.h"
#include "train/train.h"

#define S 256 /* a set as text */

/* What each rank reports to rank 0. */
struct topo_rec {
    char host[MPI_MAX_PROCESSOR_NAME + 1];
    char binding[S];      /* PUs as the launcher left them, or "unbound" */
    char binding_cores[S];
    char node_shared[S];  /* the node's cores held by several ranks */
    char node_idle[S];    /* and by none */
    char place[S];        /* after bind (with --calibrate), else "" */
    int node_rank, bound, blas, omp;
    struct calib_costs cc;
    int has_cc;
};

struct topo_opts {
    struct config c;
    long np;
    int json, calibrate;
    const char *xml, *export_;
};

static int parse(int argc, char **argv, struct topo_opts *o)
{
    static const char *const extra[] = {"np", "json", "calibrate", "xml",
                                        "export", NULL};
    const char *ev[5] = {"0", "0", "0", "", ""};
    char err[1024];
    config_defaults(&o->c);
    if (config_parse_args(&o->c, argc, argv, extra, ev, err, sizeof(err)) < 0
        || config_finalize(&o->c, err, sizeof(err)) < 0 ||
        cli_int("np", ev[0], &o->np, err, sizeof(err)) < 0 ||
        /* vocab_size = 0: the data's, 256 without a data directory */
        data_spec_vocab(o->c.data, &o->c.vocab_size, 1, err,
                        sizeof(err)) < 0) {
        log_error("%s", err);
        return -1;
    }
    if (o->np < 0 || o->np > 100000) {
        log_error("--np=%ld: must be in [1, 100000]", o->np);
        return -1;
    }
    o->json = strcmp(ev[1], "0") != 0;
    o->calibrate = strcmp(ev[2], "0") != 0;
    o->xml = ev[3];
    o->export_ = ev[4];
    return 0;
}

/* This rank's launcher binding and its node's overlaps and idle cores. */
static int fill_binding(const struct topo *t, MPI_Comm node,
                        struct topo_rec *r, char *err, size_t errlen)
{
    struct topo_plan p;
    int me;
    hwloc_bitmap_t cur = topo_current_binding(t);
    if (!cur)
        return -1;
    struct topo_place pl;
    if (topo_place_of(t, cur, &pl) < 0) {
        hwloc_bitmap_free(cur);
        return -1;
    }
    r->bound = pl.bound_before;
    if (r->bound)
        topo_set_string(cur, r->binding, S);
    else
        snprintf(r->binding, S, "unbound");
    topo_place_string(t, &pl, r->binding_cores, S);
    topo_place_free(&pl);
    hwloc_bitmap_free(cur);
    if (topo_place_node(t, node, TOPO_BIND_LAUNCHER, 0, 0, &p, &me, err,
                        errlen) < 0)
        return -1;
    topo_set_string(p.shared, r->node_shared, S);
    topo_set_string(p.idle, r->node_idle, S);
    r->node_rank = me;
    topo_plan_free(&p);
    return 0;
}

/* Bind as train would, then measure.  Collective over world. */
static int calibrate(const struct topo_opts *o, MPI_Comm world,
                     struct topo_rec *r, char *err, size_t errlen)
{
    struct placement pl;
    int rc = place_init(&pl, world, o->c.bind, o->c.threads, err, errlen);
    if (rc == 0) {
        snprintf(r->place, S, "%s", pl.where);
        r->blas = pl.blas;
        r->omp = pl.omp;
        int size;
        MPI_Comm_size(world, &size);
        int mb = o->c.micro_batch ? o->c.micro_batch
                                  : o->c.batch_size / size;
        struct gpt_config gc;
        gpt_config_from(&o->c, &gc);
        rc = calib_measure(&gc, mb > 0 ? mb : 1, 2.0, &r->cc, err, errlen);
        r->has_cc = rc == 0;
    }
    place_free(&pl);
    return rc;
}

static void print_set_json(hwloc_const_bitmap_t s)
{
    int i, first = 1;
    printf("[");
    hwloc_bitmap_foreach_begin(i, s)
        printf("%s%d", first ? "" : ",", i);
        first = 0;
    hwloc_bitmap_foreach_end();
    printf("]");
}

static void print_plan(const struct topo *t, const struct topo_plan *p,
                       int json)
{
    char line[4 * S];
    for (int i = 0; i < p->n; i++) {
        const struct topo_place *pl = &p->r[i];
        if (json) {
            printf("%s{\"rank\":%d,\"cores\":", i ? "," : "", i);
            print_set_json(pl->cores);
            printf(",\"pus\":");
            print_set_json(pl->cpuset);
            printf(",\"numa\":");
            print_set_json(pl->numa);
            printf(",\"blas_threads\":%d,\"omp_threads\":%d,\"kept\":%s}",
                   pl->threads, pl->threads, pl->kept ? "true" : "false");
            continue;
        }
        topo_place_string(t, pl, line, sizeof(line));
        printf("  rank %d: %s; %d BLAS + %d OpenMP thread(s)%s\n", i, line,
               pl->threads, pl->threads,
               pl->kept && p->mode == TOPO_BIND_AUTO ? "; keeps the "
               "launcher's binding" : "");
    }
}

static void print_ranks_text(const struct topo_rec *r, int n)
{
    printf("bindings as launched:\n");
    for (int i = 0; i < n; i++)
        printf("  rank %d  host %s: %s%s%s\n", i, r[i].host,
               r[i].bound ? "PUs " : "", r[i].binding,
               r[i].bound ? "" : " (every PU of the node)");
    for (int i = 0; i < n; i++) {
        if (i > 0 && !strcmp(r[i].host, r[i - 1].host))
            continue; /* one summary per node (ranks are grouped) */
        printf("  node %s: cores shared by several ranks: %s; idle cores: "
               "%s\n", r[i].host, r[i].node_shared, r[i].node_idle);
    }
    for (int i = 0; i < n; i++) {
        if (!r[i].has_cc)
            continue;
        const struct calib_costs *c = &r[i].cc;
        printf("  rank %d calibration (%s; %d BLAS + %d OpenMP): per "
               "micro-batch of %d: block %.2f ms, embedding %.2f ms, head "
               "%.2f ms (%d of %d sequences timed, %d reps, %.2f s)\n", i,
               r[i].place, r[i].blas, r[i].omp, c->mb, 1e3 * c->block_s,
               1e3 * c->embed_s, 1e3 * c->head_s, c->seqs, c->mb, c->reps,
               c->wall_s);
    }
}

static void print_ranks_json(const struct topo_rec *r, int n)
{
    printf(",\"ranks\":[");
    for (int i = 0; i < n; i++) {
        printf("%s{\"rank\":%d,\"host\":\"%s\",\"bound\":%s,\"binding\":"
               "\"%s\",\"node_shared_cores\":\"%s\",\"node_idle_cores\":"
               "\"%s\"", i ? "," : "", i, r[i].host,
               r[i].bound ? "true" : "false", r[i].binding,
               r[i].node_shared, r[i].node_idle);
        if (r[i].has_cc) {
            const struct calib_costs *c = &r[i].cc;
            printf(",\"calibration\":{\"place\":\"%s\",\"blas_threads\":%d,"
                   "\"omp_threads\":%d,\"mb\":%d,\"block_ms\":%.4f,"
                   "\"embed_ms\":%.4f,\"head_ms\":%.4f,\"block_fwd_ms\":"
                   "%.4f,\"embed_fwd_ms\":%.4f,\"head_fwd_ms\":%.4f,"
                   "\"seqs\":%d,\"reps\":%d}", r[i].place, r[i].blas,
                   r[i].omp, c->mb, 1e3 * c->block_s, 1e3 * c->embed_s,
                   1e3 * c->head_s, 1e3 * c->block_fwd_s,
                   1e3 * c->embed_fwd_s, 1e3 * c->head_fwd_s, c->seqs,
                   c->reps);
        }
        printf("}");
    }
    printf("]");
}

/* Rank 0: the topology, the ranks, the plan for np ranks. */
static void report(const struct topo_opts *o, const struct topo *t,
                   const struct topo_rec *r, int n, struct topo_plan *pp)
{
    struct topo_plan p = *pp;
    int np = p.n;
    if (o->json) {
        printf("{\"source\":\"%s\",\"topology\":{\"packages\":%d,"
               "\"numa_nodes\":%d,\"l3_groups\":%d,\"cores\":%d,\"pus\":%d},"
               "\"world\":%d", o->xml[0] ? o->xml : "this machine",
               t->npackages, t->nnuma, t->nl3, t->ncores, t->npus, n);
        if (r)
            print_ranks_json(r, n);
        printf(",\"plan\":{\"np\":%d,\"bind\":\"%s\",\"threads_total\":%d,"
               "\"oversubscribed\":%s,\"ranks\":[", np, o->c.bind,
               p.threads_total, p.oversubscribed ? "true" : "false");
        print_plan(t, &p, 1);
        printf("]}}\n");
    } else {
        printf("topology of %s: ", o->xml[0] ? o->xml : r ? r[0].host
                                                           : "this node");
        topo_print_tree(t, stdout);
        if (r)
            print_ranks_text(r, n);
        printf("plan for %d rank(s) per node, bind=%s (%s): %d thread(s) "
               "on %d core(s)%s\n", np, o->c.bind, o->np > 0 || o->xml[0]
               ? "unbound ranks" : "this node's ranks as launched",
               p.threads_total, t->ncores,
               p.oversubscribed ? ": OVERSUBSCRIBED" : "");
        print_plan(t, &p, 0);
    }
    fflush(stdout);
}

/* The plan to show: for this node's ranks as launched (collective over
 * node), or for np unbound ranks. */
static int make_plan(const struct topo_opts *o, const struct topo *t,
                     MPI_Comm node, struct topo_plan *p, char *err,
                     size_t errlen)
{
    enum topo_bind mode;
    int me;
    topo_bind_parse(o->c.bind, &mode);
    if (o->np == 0 && !o->xml[0])
        return topo_place_node(t, node, mode, o->c.threads, 0, p, &me, err,
                               errlen);
    int nsize;
    MPI_Comm_size(node, &nsize);
    return topo_plan_make(t, o->np > 0 ? (int)o->np : nsize, NULL, mode,
                          o->c.threads, p, err, errlen);
}

static int run(const struct topo_opts *o)
{
    int rank, size, len = 0, rc = 0;
    char err[1024] = "";
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    struct topo t;
    if (topo_load(&t, o->xml, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    if (rank == 0 && o->export_[0] &&
        topo_export_xml(&t, o->export_, err, sizeof(err)) < 0) {
        log_error("--export: %s", err);
        rc = 1;
    }
    struct topo_rec mine, *all = NULL;
    memset(&mine, 0, sizeof(mine));
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0,
                        MPI_INFO_NULL, &node);
    MPI_Get_processor_name(mine.host, &len);
    if (!o->xml[0] &&
        comm_agree(MPI_COMM_WORLD, fill_binding(&t, node, &mine, err,
                                                sizeof(err)), err,
                   sizeof(err)) < 0)
        rc = 1;
    struct topo_plan plan;
    memset(&plan, 0, sizeof(plan));
    if (rc == 0 &&
        comm_agree(MPI_COMM_WORLD, make_plan(o, &t, node, &plan, err,
                                             sizeof(err)), err,
                   sizeof(err)) < 0)
        rc = 1;
    if (rc == 0 && o->calibrate && !o->xml[0] &&
        comm_agree(MPI_COMM_WORLD, calibrate(o, MPI_COMM_WORLD, &mine, err,
                                             sizeof(err)), err,
                   sizeof(err)) < 0)
        rc = 1;
    if (rank == 0)
        all = calloc((size_t)size, sizeof(*all));
    MPI_Gather(&mine, (int)sizeof(mine), MPI_BYTE, all, (int)sizeof(mine),
               MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rc == 0 && rank == 0)
        report(o, &t, o->xml[0] ? NULL : all, size, &plan);
    topo_plan_free(&plan);
    if (rc && err[0])
        log_error("%s", err);
    free(all);
    MPI_Comm_free(&node);
    topo_free(&t);
    return rc;
}

int cmd_topo(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: mpitron topo [CONFIG.ini] [--key=value ...] "
               "[--np=N] [--json] [--calibrate]\n"
               "                    [--xml=FILE] [--export=FILE]\n\n"
               "The node's hwloc topology (packages, NUMA nodes, L3 groups, "
               "cores, PUs); under\nmpirun or srun, every rank's binding as "
               "the launcher left it, naming cores\nshared by several ranks "
               "and idle cores; and the plan of `bind` (auto | launcher\n| "
               "none) for N unbound ranks per node (default: the ranks on "
               "this node): each\nrank's cores, PUs, NUMA node and "
               "threads.  Cores are numbered by hwloc's logical\nindex, PUs "
               "by the OS's.\n"
               "  --calibrate  bind as `train` would, then measure each "
               "rank's forward+backward\n               time of one block, "
               "the embedding and the head on the model's\n               "
               "kernels (model keys apply; micro_batch sequences, <= 2 s)\n"
               "  --json       one JSON object instead of text\n"
               "  --xml=FILE   plan on a saved topology (hwloc XML, e.g. "
               "from lstopo or --export)\n"
               "  --export=FILE  save this node's topology as hwloc XML\n");
        return 0;
    }
    struct topo_opts o;
    if (parse(argc, argv, &o) < 0)
        return 2;
    return run(&o);
}
