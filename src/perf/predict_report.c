/*
 * predict_report.c - `mpitron predict --measured`: a sweep against the
 * model.  `--extrapolate` is predict_extrap.c.
 */
#include "predict_report.h"

#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void predict_gpt2_shapes(struct gpt_config *s)
{
    static const int dims[4][3] = {{12, 768, 12}, {24, 1024, 16},
                                   {36, 1280, 20}, {48, 1600, 25}};
    for (int i = 0; i < 4; i++) {
        memset(&s[i], 0, sizeof(s[i]));
        s[i].n_layer = dims[i][0];
        s[i].n_embd = dims[i][1];
        s[i].n_head = s[i].n_kv_head = dims[i][2];
        s[i].seq_len = 1024;
        s[i].vocab_size = 50257;
    }
}

/* ---- the measured sweep ------------------------------------------------- */

#define MAX_COLS 64
#define MAX_ROWS 1024

struct csv {
    char *hdr[MAX_COLS];
    int ncol;
    char *cell[MAX_ROWS][MAX_COLS];
    int nrow;
    char *text;
};

static int split(char *line, char **out, int max)
{
    int n = 0;
    for (char *p = line;; p++) {
        char *q = p + strcspn(p, ",\r\n");
        int end = *q != ',';
        *q = '\0';
        if (n < max)
            out[n] = p;
        n++;
        p = q;
        if (end)
            return n;
    }
}

static int csv_read(struct csv *t, const char *path, char *err,
                    size_t errlen)
{
    memset(t, 0, sizeof(*t));
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    t->text = malloc((size_t)n + 1);
    if (!t->text || fread(t->text, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        snprintf(err, errlen, "cannot read %s", path);
        return -1;
    }
    fclose(f);
    t->text[n] = '\0';
    char *save, *line = strtok_r(t->text, "\n", &save);
    if (!line || (t->ncol = split(line, t->hdr, MAX_COLS)) > MAX_COLS) {
        snprintf(err, errlen, "%s: no header line (or more than %d "
                 "columns)", path, MAX_COLS);
        return -1;
    }
    while ((line = strtok_r(NULL, "\n", &save)) && t->nrow < MAX_ROWS) {
        if (!*line)
            continue;
        if (split(line, t->cell[t->nrow], MAX_COLS) != t->ncol) {
            snprintf(err, errlen, "%s: row %d has not %d fields", path,
                     t->nrow + 2, t->ncol);
            return -1;
        }
        t->nrow++;
    }
    return 0;
}

static int col(const struct csv *t, const char *name)
{
    for (int i = 0; i < t->ncol; i++)
        if (!strcmp(t->hdr[i], name))
            return i;
    return -1;
}

static const char *const need[] = {
    "ranks", "nodes", "ranks_per_node", "dp", "tp", "pp", "micro_batch",
    "global_batch", "compress", "allreduce", "ms_step", "predicted_ms_step",
    "model_error", NULL};
enum { C_RANKS, C_NODES, C_RPN, C_DP, C_TP, C_PP, C_MB, C_GB, C_COMP, C_AR,
       C_MS, C_PRED, C_ERR, C_N };

/* Row r's config and layout. */
static int row_layout(const struct csv *t, const int *ci, int r,
                      struct perf_calib *pc, const struct config *c0,
                      struct config *c, struct perf_layout *ly, char *err,
                      size_t errlen)
{
    char *const *v = t->cell[r];
    *c = *c0;
    int th = col(t, "threads"), sch = col(t, "pp_schedule");
    int fc = col(t, "foreign_cpu"), zc = col(t, "zero");
    const char *keys[] = {"batch_size", "compress", "allreduce"};
    const int cols[] = {ci[C_GB], ci[C_COMP], ci[C_AR]};
    for (int k = 0; k < 3; k++)
        if (config_set(c, keys[k], v[cols[k]], "scaling.csv", err,
                       errlen) < 0)
            return -1;
    if ((sch >= 0 && config_set(c, "pp_schedule", v[sch], "scaling.csv",
                                err, errlen) < 0) ||
        (zc >= 0 && config_set(c, "zero", v[zc], "scaling.csv", err,
                               errlen) < 0))
        return -1;
    memset(ly, 0, sizeof(*ly));
    ly->nodes = atoi(v[ci[C_NODES]]);
    ly->rpn = atoi(v[ci[C_RPN]]);
    ly->dp = atoi(v[ci[C_DP]]);
    ly->tp = atoi(v[ci[C_TP]]);
    ly->pp = atoi(v[ci[C_PP]]);
    ly->mb = atoi(v[ci[C_MB]]);
    ly->threads = th >= 0 ? atoi(v[th]) : 0;
    if (ly->threads < 1)
        ly->threads = pc->cores / ly->rpn > 1 ? pc->cores / ly->rpn : 1;
    c->tp = ly->tp;
    c->pp = ly->pp;
    c->dp = ly->dp;
    c->micro_batch = ly->mb;
    /* the cores other processes left during the run */
    double f = fc >= 0 ? atof(v[fc]) : 0.0;
    pc->avail = f > 0.0 ? pc->cores - f : 0.0;
    if (pc->avail != 0.0 && pc->avail < 0.1)
        pc->avail = 0.1;
    return 0;
}

static int csv_write(const struct csv *t, const char *path, char *const *pred,
                     char *const *merr, const int *ci, char *err,
                     size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    for (int i = 0; i < t->ncol; i++)
        fprintf(f, "%s%s", i ? "," : "", t->hdr[i]);
    fputc('\n', f);
    for (int r = 0; r < t->nrow; r++) {
        for (int i = 0; i < t->ncol; i++)
            fprintf(f, "%s%s", i ? "," : "",
                    i == ci[C_PRED] ? pred[r] : i == ci[C_ERR] ? merr[r]
                                                             : t->cell[r][i]);
        fputc('\n', f);
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s", path);
        return -1;
    }
    return 0;
}

int predict_measured(const struct perf_calib *pc, const struct config *c,
                     const char *csv, int write, char *err, size_t errlen)
{
    static struct csv t; /* large: not on the stack */
    int ci[C_N], rc = csv_read(&t, csv, err, errlen), n = 0;
    for (int k = 0; rc == 0 && need[k]; k++)
        if ((ci[k] = col(&t, need[k])) < 0) {
            snprintf(err, errlen, "%s: no column '%s'", csv, need[k]);
            rc = -1;
        }
    static char pbuf[MAX_ROWS][32], ebuf[MAX_ROWS][32];
    char *pred[MAX_ROWS], *merr[MAX_ROWS];
    double sum = 0.0;
    if (rc == 0)
        printf("| ranks | nodes | dp | tp | pp | micro_batch | compress | "
               "allreduce | zero | measured ms | predicted ms | error |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    int zc = col(&t, "zero");
    struct perf_calib rowpc = *pc; /* the figures shared; own cores */
    for (int r = 0; rc == 0 && r < t.nrow; r++) {
        struct config cr;
        struct perf_layout ly;
        struct perf_prediction pr;
        char *const *v = t.cell[r];
        pred[r] = pbuf[r], merr[r] = ebuf[r];
        rc = row_layout(&t, ci, r, &rowpc, c, &cr, &ly, err, errlen);
        if (rc == 0)
            rc = perf_predict(&rowpc, &cr, &ly, &pr, err, errlen);
        if (rc < 0)
            break;
        double meas = atof(v[ci[C_MS]]), p = 1e3 * pr.o.step;
        double e = meas > 0 ? (p - meas) / meas : 0.0;
        snprintf(pbuf[r], 32, "%.3f", p);
        snprintf(ebuf[r], 32, "%.4f", e);
        sum += fabs(e);
        n++;
        printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %.1f "
               "| %+.1f%% |\n", v[ci[C_RANKS]], v[ci[C_NODES]], v[ci[C_DP]],
               v[ci[C_TP]], v[ci[C_PP]], v[ci[C_MB]], v[ci[C_COMP]],
               v[ci[C_AR]], zc >= 0 ? v[zc] : "0", meas, p, 100 * e);
    }
    if (rc == 0) {
        printf("mean absolute error: %.1f%% over %d point(s)\n",
               n ? 100 * sum / n : 0.0, n);
        struct json j;
        json_init(&j);
        json_obj_begin(&j, NULL);
        json_num(&j, "mean_abs_error", n ? sum / n : 0.0, 6);
        json_int(&j, "points", n);
        json_obj_end(&j);
        json_write_line(&j, stdout);
        json_free(&j);
    }
    if (rc == 0 && write)
        rc = csv_write(&t, csv, pred, merr, ci, err, errlen);
    free(t.text);
    return rc;
}
