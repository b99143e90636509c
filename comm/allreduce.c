/*
 * allreduce.c - the table of all-reduce algorithms, the auto choice and
 * its thresholds, op set-up and the blocking convenience call.
 */
#include "allreduce.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ar_internal.h"
#include "shm.h"

const struct allreduce_algo *const allreduce_algos[] = {
    &ar_mpi, &ar_ring, &ar_rhd, &ar_hier, &ar_shm, NULL,
};

/* Built-in thresholds, measured on one 2-core machine (np 2; np 3 and 4
 * oversubscribed): rhd's 2 log2(p) exchanges match or beat the ring's
 * 2(p-1) steps up to 256 KiB (at np 3 and 4 it is 1.0-1.4x MPI_Allreduce
 * there, the ring 0.7-1.1x); from 512 KiB on they are equal within the
 * noise and the ring's pipelined neighbour traffic is preferred.  hier
 * cannot win on one shared-memory box (its node chain moves the whole
 * buffer twice); 1 MiB is where its fewer inter-node steps should matter
 * on a cluster: re-measure there with `mpitron bench allreduce --tune`. */
#define AR_SMALL_MAX ((size_t)256 << 10)
#define AR_HIER_MIN ((size_t)1 << 20)

void allreduce_tune_defaults(struct allreduce_tune *t)
{
    t->small_max = AR_SMALL_MAX;
    t->hier_min = AR_HIER_MIN;
}

const struct allreduce_algo *allreduce_pick(const struct allreduce_tune *t,
                                            const struct comm_group *g,
                                            size_t n)
{
    struct allreduce_tune def;
    size_t bytes = n * sizeof(float);
    if (!t) {
        allreduce_tune_defaults(&def);
        t = &def;
    }
    if (bytes < t->small_max)
        return &ar_rhd;
    /* several nodes, and some node holds more than one rank */
    if (g->nnodes > 1 && g->nnodes < g->size && bytes >= t->hier_min)
        return &ar_hier;
    return &ar_ring;
}

static int in_shm(const struct comm_group *g, const float *buf, size_t n)
{
    return g->shm && g->shm->size == g->size && n &&
           comm_shm_holds(g->shm, buf, n);
}

const struct allreduce_algo *comm_reduce_scatter_for(
    const struct comm_group *g, const float *buf, size_t n)
{
    return in_shm(g, buf, n) ? &ar_shm_rs : comm_reduce_scatter;
}

const struct allreduce_algo *comm_allgather_for(const struct comm_group *g,
                                                const float *buf, size_t n)
{
    return in_shm(g, buf, n) ? &ar_shm_ag : comm_allgather;
}

/* auto as a table entry: scratch for whichever it may pick, and a start
 * that resolves with the built-in thresholds and hands the op over. */
static size_t auto_scratch(const struct comm_group *g, size_t n)
{
    size_t most = 0;
    for (int i = 0; allreduce_algos[i]; i++) {
        size_t b = allreduce_algos[i]->scratch(g, n);
        most = b > most ? b : most;
    }
    return most;
}

static int auto_start(struct comm_op *op)
{
    op->ops = allreduce_pick(NULL, op->g, op->n)->ops;
    return op->ops->start(op);
}

static int auto_test(struct comm_op *op)
{
    (void)op;
    return -1; /* unreachable: start replaced op->ops */
}

static const struct comm_op_ops auto_ops = {
    .name = "auto", .start = auto_start, .test = auto_test, .finish = NULL,
};

static const struct allreduce_algo ar_auto = {
    .name = "auto", .ops = &auto_ops, .scratch = auto_scratch,
};

const struct allreduce_algo *allreduce_find(const char *name)
{
    if (!name)
        return NULL;
    if (strcmp(name, ar_auto.name) == 0)
        return &ar_auto;
    for (int i = 0; allreduce_algos[i]; i++)
        if (strcmp(name, allreduce_algos[i]->name) == 0)
            return allreduce_algos[i];
    return NULL;
}

void allreduce_op_init(struct comm_op *op, const struct allreduce_algo *algo,
                       const struct comm_group *g, float *buf, size_t n,
                       void *scratch, size_t scratch_bytes)
{
    if (algo == &ar_auto)
        algo = allreduce_pick(NULL, g, n);
    memset(op, 0, sizeof *op);
    op->ops = algo->ops;
    op->g = g;
    op->buf = buf;
    op->n = n;
    op->scratch = scratch;
    op->scratch_bytes = scratch_bytes;
    for (int i = 0; i < COMM_OP_MAX_REQS; i++)
        op->req[i] = MPI_REQUEST_NULL;
}

int allreduce(const struct allreduce_algo *algo, const struct comm_group *g,
              float *buf, size_t n)
{
    struct comm_op op;
    size_t bytes;
    void *scratch;
    int rc;
    if (algo == &ar_auto)
        algo = allreduce_pick(NULL, g, n);
    bytes = algo->scratch(g, n);
    scratch = bytes ? malloc(bytes) : NULL;
    if (bytes && !scratch)
        return -1;
    allreduce_op_init(&op, algo, g, buf, n, scratch, bytes);
    rc = comm_op_start(&op);
    if (rc == 0)
        rc = comm_op_wait(&op);
    free(scratch);
    return rc;
}

/* ---- tuning file ------------------------------------------------------- */

/* A byte count: decimal digits, optionally followed by K, M or G (powers
 * of 1024).  0 or -1. */
static int parse_bytes(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    default: break;
    }
    while (isspace((unsigned char)*end))
        end++;
    if (*end || v > (SIZE_MAX >> shift))
        return -1;
    *out = (size_t)v << shift;
    return 0;
}

static char *trim(char *s)
{
    char *e;
    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* One line (comment stripped): blank, or "key = value".  0 or -1 + err. */
static int tune_line(struct allreduce_tune *t, char *line, const char *path,
                     int lineno, char *err, size_t errlen)
{
    char *eq, *key, *val;
    size_t *dst, v;
    line = trim(line);
    if (!*line)
        return 0;
    eq = strchr(line, '=');
    if (!eq) {
        snprintf(err, errlen, "%s:%d: expected 'key = value', got '%s'",
                 path, lineno, line);
        return -1;
    }
    *eq = '\0';
    key = trim(line);
    val = trim(eq + 1);
    if (strcmp(key, "small_max") == 0)
        dst = &t->small_max;
    else if (strcmp(key, "hier_min") == 0)
        dst = &t->hier_min;
    else {
        snprintf(err, errlen, "%s:%d: unknown key '%s' (known: small_max, "
                 "hier_min)", path, lineno, key);
        return -1;
    }
    if (parse_bytes(val, &v) != 0) {
        snprintf(err, errlen, "%s:%d: %s = '%s' is not a byte count", path,
                 lineno, key, val);
        return -1;
    }
    *dst = v;
    return 0;
}

int allreduce_tune_load(struct allreduce_tune *t, const char *path,
                        char *err, size_t errlen)
{
    char line[512];
    int lineno = 0, rc = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        rc = tune_line(t, line, path, lineno, err, errlen);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}
