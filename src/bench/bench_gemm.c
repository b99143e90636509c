/*
 * bench_gemm.c - `mpitron bench gemm`: GFLOP/s of each shape on the three
 * ways the GEMM front door (gemm.h) can compute it: OpenBLAS sgemm,
 * oneDNN's fp32 matmul and oneDNN's bf16 matmul (bf16 inputs, fp32
 * output), the fp32 library the fp32_gemm mode picks for it, and the
 * peaks over the square sizes from 1024 up (what MFU is measured
 * against: smaller squares fit in cache and run faster than any layer).
 *
 * The two libraries keep separate thread pools whose idle threads spin
 * for a while after a call (OpenBLAS's for about 0.1 s): with more than
 * one thread, timing one library right after the other measures the
 * fight between the pools, not the library.  So every shape is measured
 * on oneDNN first (fp32, bf16), then, in a second pass, on OpenBLAS, with
 * a pause between the passes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "gemm.h"
#include "log.h"
#include "peak.h"

/* The products of a GPT-2-small layer at 1024 tokens (C = 768, 4C MLP):
 * forward QKV, FC, PROJ, then backward's input and weight gradients. */
#define GPT2_SHAPES "1024x2304x768,1024x3072x768,1024x768x3072," \
                    "1024x3072x768:nn,1024x768x3072:nn,3072x768x1024:tn," \
                    "768x3072x1024:tn"

struct shape {
    struct gemm_desc d;
    double ob, dn, bf; /* GFLOP/s: OpenBLAS, oneDNN fp32, oneDNN bf16 */
};

/* "MxNxK" or "MxNxK:xy", x and y = n or t for op(A) and op(B) (default nt:
 * A B^T, a linear layer's forward). */
static int parse_shape(const char *tok, struct gemm_desc *d)
{
    long long M, N, K;
    char ta = 'n', tb = 't', extra;
    int n = sscanf(tok, "%lldx%lldx%lld:%c%c%c", &M, &N, &K, &ta, &tb,
                   &extra);
    if ((n != 3 && n != 5) || M <= 0 || N <= 0 || K <= 0 ||
        (ta != 'n' && ta != 't') || (tb != 'n' && tb != 't'))
        return -1;
    memset(d, 0, sizeof(*d));
    d->ta = ta == 't', d->tb = tb == 't';
    d->M = M, d->N = N, d->K = K;
    d->lda = d->ta ? M : K;
    d->ldb = d->tb ? K : N;
    d->ldc = N;
    d->alpha = 1.0f;
    return 0;
}

/* The squares of sizes ("N,N,...") then the shapes ("MxNxK[:xy],..."),
 * into *out (malloc'd); returns the count or -1 naming the bad item. */
static int parse_list(const char *sizes, const char *shapes,
                      struct shape **out, char *err, size_t errlen)
{
    size_t cap = strlen(sizes) + strlen(shapes) + 2;
    struct shape *s = calloc(cap, sizeof(*s));
    char *buf = malloc(cap);
    int n = 0;
    for (int pass = 0; s && buf && pass < 2; pass++) {
        snprintf(buf, cap, "%s", pass ? shapes : sizes);
        for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
            char sq[96];
            if (!pass)
                snprintf(sq, sizeof(sq), "%sx%sx%s", t, t, t);
            if (parse_shape(pass ? t : sq, &s[n].d) < 0) {
                snprintf(err, errlen, "bad %s '%s' (want %s)",
                         pass ? "shape" : "size", t,
                         pass ? "MxNxK or MxNxK:nt, n or t per operand"
                              : "a positive integer");
                n = -1;
                goto out;
            }
            n++;
        }
    }
out:
    free(buf);
    if (n <= 0 || !s) {
        free(s);
        if (n == 0)
            snprintf(err, errlen, "no shape to measure");
        return -1;
    }
    *out = s;
    return n;
}

/* GFLOP/s of d with inputs of type in on backend be, summed over ranks */
static double measure(struct gemm_desc d, enum gemm_type in,
                      enum gemm_backend be, int reps)
{
    d.in = in;
    d.out = GEMM_F32;
    d.backend = be;
    double g = in == GEMM_BF16 && !gemm_bf16_supported(NULL, 0)
                   ? 0.0
                   : gemm_measure(&d, reps);
    MPI_Allreduce(MPI_IN_PLACE, &g, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return g;
}

static void measure_all(struct shape *s, int n, int reps)
{
    for (int i = 0; i < n; i++) {
        s[i].dn = measure(s[i].d, GEMM_F32, GEMM_ONEDNN, reps);
        s[i].bf = measure(s[i].d, GEMM_BF16, GEMM_ANY, reps);
    }
    nanosleep(&(struct timespec){0, 300000000}, NULL); /* pools go idle */
    for (int i = 0; i < n; i++)
        s[i].ob = measure(s[i].d, GEMM_F32, GEMM_OPENBLAS, reps);
}

static void shape_name(const struct gemm_desc *d, char *name, size_t len)
{
    snprintf(name, len, "%lldx%lldx%lld:%c%c", (long long)d->M,
             (long long)d->N, (long long)d->K, d->ta ? 't' : 'n',
             d->tb ? 't' : 'n');
}

/* rank 0: the table, then the JSON line */
static void report(const struct shape *s, int n)
{
    double pk_ob = 0, pk_dn = 0, pk_32 = 0, pk_bf = 0;
    char name[80];
    printf("%-20s %9s %10s %10s %9s %9s\n", "shape MxNxK:op", "openblas",
           "onednn_f32", "fp32_used", "bf16", "bf16/fp32");
    for (int i = 0; i < n; i++) {
        int dn = gemm_backend_of(&s[i].d) == GEMM_ONEDNN;
        double f32 = dn ? s[i].dn : s[i].ob;
        const struct gemm_desc *d = &s[i].d;
        if (d->M == d->N && d->N == d->K && d->M >= 1024 && !d->ta &&
            d->tb) { /* the squares MFU's peak is taken over */
            pk_ob = s[i].ob > pk_ob ? s[i].ob : pk_ob;
            pk_dn = s[i].dn > pk_dn ? s[i].dn : pk_dn;
            pk_32 = f32 > pk_32 ? f32 : pk_32;
            pk_bf = s[i].bf > pk_bf ? s[i].bf : pk_bf;
        }
        shape_name(d, name, sizeof(name));
        printf("%-20s %9.1f %10.1f %10s %9.1f %8.2fx\n", name, s[i].ob,
               s[i].dn, dn ? "onednn" : "openblas", s[i].bf,
               f32 > 0 ? s[i].bf / f32 : 0.0);
    }
    printf("peaks (squares >= 1024, as MFU takes them): openblas %.1f, "
           "onednn_f32 %.1f, fp32 as used %.1f, bf16 %.1f GFLOP/s: bf16 %.2fx "
           "fp32\n", pk_ob, pk_dn,
           pk_32, pk_bf, pk_32 > 0 ? pk_bf / pk_32 : 0.0);
    printf("{\"threads\":%d,\"gemm\":[", threads_get());
    for (int i = 0; i < n; i++) {
        int dn = gemm_backend_of(&s[i].d) == GEMM_ONEDNN;
        shape_name(&s[i].d, name, sizeof(name));
        printf("%s{\"shape\":\"%s\",\"openblas\":%.2f,\"onednn_f32\":%.2f,"
               "\"fp32_used\":\"%s\",\"fp32\":%.2f,\"bf16\":%.2f}",
               i ? "," : "", name, s[i].ob, s[i].dn,
               dn ? "onednn" : "openblas", dn ? s[i].dn : s[i].ob, s[i].bf);
    }
    printf("],\"peak_gflops\":%.2f,\"peak_openblas\":%.2f,"
           "\"peak_onednn_f32\":%.2f,\"peak_bf16\":%.2f,\"fp32_gemm\":"
           "\"%s\",\"onednn_isa\":\"%s\"}\n", pk_32, pk_ob, pk_dn, pk_bf,
           gemm_fp32_mode_name(gemm_get_fp32_mode()), gemm_onednn_isa());
    fflush(stdout);
}

int bench_gemm(int argc, char **argv)
{
    static const char *const names[] = {"sizes", "shapes", "threads", "reps",
                                        "fp32_gemm", NULL};
    const char *v[5] = {"256,512,1024,1536,2048", GPT2_SHAPES, "0", "5",
                        "auto"};
    const char *pos[1];
    char err[512];
    long threads, reps;
    enum gemm_fp32_mode mode;
    if (cli_parse(argc, argv, names, v, pos, 0, err, sizeof(err)) < 0 ||
        cli_int("threads", v[2], &threads, err, sizeof(err)) < 0 ||
        cli_int("reps", v[3], &reps, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    if (gemm_fp32_mode_parse(v[4], &mode) < 0) {
        log_error("--fp32_gemm=%s: must be auto, openblas or onednn", v[4]);
        return 2;
    }
    struct shape *s;
    int n = parse_list(v[0], v[1], &s, err, sizeof(err));
    if (n < 0) {
        log_error("%s", err);
        return 2;
    }
    threads_set((int)threads);
    gemm_set_fp32_mode(mode);
    char why[256];
    int bf_ok = gemm_bf16_supported(why, sizeof(why));
    log_info(MPI_COMM_WORLD, "GFLOP/s summed over ranks, %d thread(s) per "
             "rank; oneDNN ISA %s; fp32_gemm=%s%s%s", threads_get(),
             gemm_onednn_isa(), gemm_fp32_mode_name(mode),
             bf_ok ? "" : "; no bf16: ", bf_ok ? "" : why);
    measure_all(s, n, reps > 0 ? (int)reps : 1);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0)
        report(s, n);
    free(s);
    return 0;
}
