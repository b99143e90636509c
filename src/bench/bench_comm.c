/*
 * bench_comm.c - `mpitron bench allreduce`: every all-reduce algorithm and
 * compression codec against MPI_Allreduce, measured in the same run.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allreduce.h"
#include "cli.h"
#include "codec.h"
#include "comm.h"
#include "grid.h"
#include "log.h"
#include "shm.h"

struct bench_opts {
    char *sizes, *algos, *codecs;
    const char *tune;
    int csv, rpn;
    long iters;
};

/* "4K", "1M", "16M", "300" -> bytes */
static int parse_size(const char *s, size_t *out)
{
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1048576, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1073741824.0, end++;
    if (end == s || *end || v < 0)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

struct row {
    const char *algo, *codec;
    size_t bytes;
    double t;          /* seconds per reduction, max over ranks */
    uint64_t wire;     /* bytes this rank sent */
};

static void fill(float *x, size_t n, int rank)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((i * 7 + (size_t)rank * 13) % 17) * 0.125f - 1.0f;
}

static long iters_for(size_t bytes, long want)
{
    if (want > 0)
        return want;
    long it = (long)(64.0 * 1048576.0 / (double)(bytes + 65536));
    return it < 3 ? 3 : it > 200 ? 200 : it;
}

/* Time one configuration: algo (NULL = blocking MPI_Allreduce) or codec. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Mean seconds per operation (the slowest rank's); *median (may be NULL)
 * the median iteration. */
static double time_op(const struct comm_group *g,
                      const struct allreduce_algo *algo,
                      struct codec_ctx *cc, float *buf, size_t n, long iters,
                      uint64_t *wire, double *median)
{
    size_t sb = cc && cc->codec ? cc->codec->scratch(cc, g)
                : algo ? algo->scratch(g, n) : 0;
    void *scratch = sb ? malloc(sb) : NULL;
    double total = 0, *each = calloc((size_t)iters, sizeof(double));
    *wire = 0;
    for (long it = -1; it < iters; it++) { /* it = -1 warms up */
        fill(buf, n, g->rank);
        MPI_Barrier(g->comm);
        double t0 = MPI_Wtime();
        struct comm_op op;
        if (cc && cc->codec) {
            codec_op_init(&op, cc, g, buf, scratch, sb);
            comm_op_start(&op);
            comm_op_wait(&op);
            *wire = op.wire_bytes;
        } else if (algo) {
            allreduce_op_init(&op, algo, g, buf, n, scratch, sb);
            comm_op_start(&op);
            comm_op_wait(&op);
            *wire = op.wire_bytes;
        } else {
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM,
                          g->comm);
            *wire = (uint64_t)(2.0 * (g->size - 1) / g->size * 4.0 * n);
        }
        double t = MPI_Wtime() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, g->comm);
        if (it >= 0)
            total += t;
        if (it >= 0 && each)
            each[it] = t;
    }
    free(scratch);
    if (median && each) {
        qsort(each, (size_t)iters, sizeof(double), cmp_double);
        *median = iters % 2 ? each[iters / 2]
                            : 0.5 * (each[iters / 2 - 1] + each[iters / 2]);
    }
    free(each);
    return total / (double)iters;
}

static void print_row(const struct row *r, const struct row *ref, int p,
                      int csv)
{
    double algbw = r->bytes / r->t / 1e9;
    double busbw = p > 1 ? algbw * 2.0 * (p - 1) / p : algbw;
    double refbus = ref->bytes / ref->t / 1e9 * (p > 1 ? 2.0 * (p - 1) / p : 1);
    if (csv)
        printf("%s,%s,%zu,%.2f,%.4f,%.4f,%llu,%.3f\n", r->algo, r->codec,
               r->bytes, r->t * 1e6, algbw, busbw,
               (unsigned long long)r->wire, busbw / refbus);
    else
        printf("%-14s %-14s %10zu %11.1f %9.3f %9.3f %12llu %7.2fx\n",
               r->algo, r->codec, r->bytes, r->t * 1e6, algbw, busbw,
               (unsigned long long)r->wire, busbw / refbus);
}

/* Measured thresholds for allreduce=auto: rhd while it beats ring, hier
 * from the first size where it beats ring. */
static void write_tune(const char *path, const size_t *sz, int ns,
                       const double *t_ring, const double *t_rhd,
                       const double *t_hier)
{
    struct allreduce_tune tune;
    allreduce_tune_defaults(&tune);
    size_t small = 0, hier = (size_t)-1;
    for (int i = 0; i < ns; i++) {
        if (t_rhd[i] > 0 && t_ring[i] > 0 && t_rhd[i] < t_ring[i])
            small = sz[i] + 1;
        if (t_hier[i] > 0 && t_ring[i] > 0 && t_hier[i] < t_ring[i] &&
            sz[i] < hier)
            hier = sz[i];
    }
    tune.small_max = small;
    tune.hier_min = hier;
    FILE *f = fopen(path, "w");
    if (!f) {
        log_error("cannot write %s", path);
        return;
    }
    fprintf(f, "# written by mpitron bench allreduce\nsmall_max = %zu\n"
            "hier_min = %zu\n", tune.small_max, tune.hier_min);
    fclose(f);
    printf("wrote %s: small_max = %zu, hier_min = %zu\n", path,
           tune.small_max, tune.hier_min);
}

static int parse_bench_opts(int argc, char **argv, struct bench_opts *o,
                            char *err, size_t errlen)
{
    static const char *const names[] = {"sizes", "algo", "compress", "csv",
        "iters", "ranks_per_node", "tune", NULL};
    const char *v[7] = {"4K,64K,1M,16M", "mpi,ring,rhd,hier,shm", "none", "0",
                        "0", "0", NULL};
    const char *pos[1];
    long csv, rpn;
    for (int i = 0; i < argc; i++) /* bare --csv */
        if (!strcmp(argv[i], "--csv"))
            argv[i] = "--csv=1";
    if (cli_parse(argc, argv, names, v, pos, 0, err, errlen) < 0 ||
        cli_int("csv", v[3], &csv, err, errlen) < 0 ||
        cli_int("iters", v[4], &o->iters, err, errlen) < 0 ||
        cli_int("ranks_per_node", v[5], &rpn, err, errlen) < 0)
        return -1;
    o->sizes = strdup(v[0]);
    o->algos = strdup(v[1]);
    o->codecs = strdup(v[2]);
    o->csv = (int)csv;
    o->rpn = (int)rpn;
    o->tune = v[6];
    return 0;
}

#define MAX_SIZES 32

double bench_comm_time(const struct comm_group *g, const char *kind,
                       size_t bytes, long iters, uint64_t *wire,
                       double *median)
{
    size_t n = bytes / sizeof(float);
    /* shm reduces buffers in the group's shared segments only */
    int shm = !strcmp(kind, "shm");
    float *buf = shm ? NULL : malloc((n ? n : 1) * sizeof(float));
    double t = -1.0;
    uint64_t w = 0;
    long it = iters_for(bytes, iters);
    const struct allreduce_algo *al = NULL;
    if (shm && g->shm && g->shm->n >= n)
        buf = g->shm->buf[g->rank];
    if (!buf)
        return -1.0;
    if (!strcmp(kind, "MPI_Allreduce")) {
        t = time_op(g, NULL, NULL, buf, n, it, &w, median);
    } else if ((al = allreduce_find(kind)) && strcmp(kind, "auto")) {
        t = time_op(g, al, NULL, buf, n, it, &w, median);
    } else {
        struct codec_ctx cc;
        char err[256];
        memset(&cc, 0, sizeof(cc));
        /* one "tensor": a square-ish matrix for PowerSGD */
        struct codec_seg seg = {0, n, 0};
        size_t rows = (size_t)sqrt((double)n);
        if (rows > 1 && rows * rows == n)
            seg.rows = rows, seg.cols = rows;
        if (codec_parse(kind, &cc, err, sizeof(err)) == 0 && cc.codec &&
            codec_ctx_init(&cc, &seg, n ? 1 : 0, n, 1) == 0) {
            t = time_op(g, NULL, &cc, buf, n, it, &w, median);
            codec_ctx_free(&cc);
        }
    }
    if (!shm)
        free(buf);
    if (wire)
        *wire = w;
    return t;
}

/* One size: the reference, then every algorithm, then every codec. */
static void bench_size(const struct comm_group *g, const struct bench_opts *o,
                       size_t bytes, int si, double *t_ring, double *t_rhd,
                       double *t_hier)
{
    size_t n = bytes / sizeof(float);
    struct row ref = {"MPI_Allreduce", "none", n * 4, 0, 0};
    ref.t = bench_comm_time(g, "MPI_Allreduce", bytes, o->iters, &ref.wire,
                            NULL);
    if (g->rank == 0)
        print_row(&ref, &ref, g->size, o->csv);
    char *algos = strdup(o->algos);
    for (char *a = strtok(algos, ","); a; a = strtok(NULL, ",")) {
        const struct allreduce_algo *al = allreduce_find(a);
        if (!al)
            continue; /* validated by the caller */
        struct row r = {al->name, "none", n * 4, 0, 0};
        r.t = bench_comm_time(g, al->name, bytes, o->iters, &r.wire, NULL);
        if (r.t < 0)
            continue; /* shm without segments: said at the start */
        if (!strcmp(al->name, "ring"))
            t_ring[si] = r.t;
        if (!strcmp(al->name, "rhd"))
            t_rhd[si] = r.t;
        if (!strcmp(al->name, "hier"))
            t_hier[si] = r.t;
        if (g->rank == 0)
            print_row(&r, &ref, g->size, o->csv);
    }
    free(algos);
    char *codecs = strdup(o->codecs);
    for (char *c = strtok(codecs, ","); c; c = strtok(NULL, ",")) {
        if (!strcmp(c, "none"))
            continue;
        struct row r = {"-", c, n * 4, 0, 0};
        r.t = bench_comm_time(g, c, bytes, o->iters, &r.wire, NULL);
        if (r.t >= 0 && g->rank == 0)
            print_row(&r, &ref, g->size, o->csv);
    }
    free(codecs);
}

static int check_names(const struct bench_opts *o, char *err, size_t errlen)
{
    char *algos = strdup(o->algos);
    int rc = 0;
    for (char *a = strtok(algos, ","); a && !rc; a = strtok(NULL, ","))
        if (!allreduce_find(a) || !strcmp(a, "auto")) {
            snprintf(err, errlen, "--algo: unknown algorithm '%s' (mpi, "
                     "ring, rhd, hier, shm)", a);
            rc = -1;
        }
    free(algos);
    char *codecs = strdup(o->codecs);
    for (char *c = strtok(codecs, ","); c && !rc; c = strtok(NULL, ",")) {
        struct codec_ctx cc;
        rc = codec_parse(c, &cc, err, errlen);
    }
    free(codecs);
    return rc;
}

/* Shared segments as large as the largest size, when --algo names shm:
 * 0, or -1 with a note on rank 0 (the ranks are on several nodes, or
 * /dev/shm has no room) and shm's rows left out. */
static int bench_shm_init(const struct comm_group *g, const struct grid *gr,
                          const struct bench_opts *o, const size_t *sz,
                          int ns, struct comm_shm *shm)
{
    char *algos = strdup(o->algos), why[256] = "on several nodes";
    int want = 0;
    for (char *a = strtok(algos, ","); a; a = strtok(NULL, ","))
        want |= !strcmp(a, "shm");
    free(algos);
    if (!want)
        return -1;
    size_t most = 0;
    for (int i = 0; i < ns; i++)
        most = sz[i] > most ? sz[i] : most;
    if (comm_shm_possible(g->comm, gr->node) &&
        comm_shm_init(shm, g, most / sizeof(float), NULL, why,
                      sizeof why) == 0)
        return 0;
    if (g->rank == 0) /* not into --csv's table */
        fprintf(o->csv ? stderr : stdout, "# shm left out: %s\n", why);
    return -1;
}

int bench_allreduce(int argc, char **argv)
{
    struct bench_opts o;
    char err[512];
    if (parse_bench_opts(argc, argv, &o, err, sizeof(err)) < 0 ||
        check_names(&o, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    size_t sz[MAX_SIZES];
    int ns = 0;
    for (char *t = strtok(o.sizes, ","); t; t = strtok(NULL, ",")) {
        if (ns == MAX_SIZES || parse_size(t, &sz[ns]) < 0) {
            log_error("--sizes: bad size '%s' (e.g. 4K, 1M, 16M)", t);
            return 2;
        }
        ns++;
    }
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    struct grid gr;
    struct comm_group g;
    if (grid_init(&gr, MPI_COMM_WORLD, size, 1, 1, o.rpn, err,
                  sizeof(err)) < 0 ||
        comm_group_init(&g, MPI_COMM_WORLD, gr.node) < 0) {
        log_error("%s", err);
        return 1;
    }
    if (g.rank == 0) {
        printf(o.csv ? "algo,compress,bytes,time_us,algbw_gbps,busbw_gbps,"
                       "wire_bytes,busbw_vs_mpi\n"
                     : "# %d ranks on %d node(s); busbw = 2(p-1)/p bytes/time"
                       "\n%-14s %-14s %10s %11s %9s %9s %12s %8s\n",
               g.size, g.nnodes, "algo", "compress", "bytes", "time_us",
               "algbw_GB/s", "busbw", "wire_bytes", "vs_mpi");
    }
    struct comm_shm shm;
    memset(&shm, 0, sizeof shm);
    if (bench_shm_init(&g, &gr, &o, sz, ns, &shm) == 0)
        g.shm = &shm;
    double t_ring[MAX_SIZES] = {0}, t_rhd[MAX_SIZES] = {0},
           t_hier[MAX_SIZES] = {0};
    for (int i = 0; i < ns; i++)
        bench_size(&g, &o, sz[i], i, t_ring, t_rhd, t_hier);
    if (o.tune && g.rank == 0)
        write_tune(o.tune, sz, ns, t_ring, t_rhd, t_hier);
    comm_group_free(&g);
    comm_shm_free(&shm);
    grid_free(&gr);
    free(o.sizes);
    free(o.algos);
    free(o.codecs);
    return 0;
}
