/*
 * perf_calib.c - the calibration's figures in memory and as a text file
 * (see perf_model.h).  The measurement is perf_measure.c.
 */
#include "perf_model.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC "mpitron-perf-calib 1"

void perf_calib_init(struct perf_calib *pc)
{
    memset(pc, 0, sizeof(*pc));
}

void perf_calib_free(struct perf_calib *pc)
{
    free(pc->cp);
    free(pc->cm);
    memset(pc, 0, sizeof(*pc));
}

static int grow(void **p, int *cap, int n, size_t size)
{
    if (n < *cap)
        return 0;
    int nc = *cap ? 2 * *cap : 16;
    void *q = realloc(*p, (size_t)nc * size);
    if (!q)
        return -1;
    *p = q;
    *cap = nc;
    return 0;
}

/* The same calibrated point again replaces the old figure. */
static int same_compute(const struct perf_compute *a,
                        const struct perf_compute *b)
{
    return a->n_embd == b->n_embd && a->n_head == b->n_head &&
           a->n_kv_head == b->n_kv_head && a->seq_len == b->seq_len &&
           a->vocab_size == b->vocab_size &&
           a->attn_window == b->attn_window && a->tp == b->tp &&
           a->load == b->load && a->threads == b->threads && a->mb == b->mb;
}

int perf_calib_add_compute(struct perf_calib *pc, const struct perf_compute *e)
{
    for (int i = 0; i < pc->ncp; i++)
        if (same_compute(&pc->cp[i], e)) {
            pc->cp[i] = *e;
            return 0;
        }
    if (grow((void **)&pc->cp, &pc->cpcap, pc->ncp, sizeof(*e)) < 0)
        return -1;
    pc->cp[pc->ncp++] = *e;
    return 0;
}

int perf_calib_add_comm(struct perf_calib *pc, const struct perf_comm *e)
{
    for (int i = 0; i < pc->ncm; i++) {
        struct perf_comm *o = &pc->cm[i];
        if (!strcmp(o->kind, e->kind) && o->level == e->level &&
            o->p == e->p && o->load == e->load) {
            *o = *e;
            return 0;
        }
    }
    if (grow((void **)&pc->cm, &pc->cmcap, pc->ncm, sizeof(*e)) < 0)
        return -1;
    pc->cm[pc->ncm++] = *e;
    return 0;
}

int perf_calib_add_optim(struct perf_calib *pc, int load, double per_param,
                         double cores)
{
    int i = 0;
    while (i < pc->nop && pc->op[i].load != load)
        i++;
    if (i == PERF_MAX_OPTIM)
        return -1;
    pc->op[i].load = load;
    pc->op[i].per_param = per_param;
    pc->op[i].cores = cores;
    if (i == pc->nop)
        pc->nop++;
    return 0;
}

int perf_calib_save(const struct perf_calib *pc, const char *path, char *err,
                    size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%s\n# written by mpitron predict --calibrate; seconds, "
            "bytes\ncores %d\nmem_mb %.0f\n", MAGIC, pc->cores,
            pc->mem_bytes / 1048576.0);
    if (pc->has_net)
        fprintf(f, "net alpha=%.6g beta=%.6g\n", pc->net.alpha, pc->net.beta);
    for (int i = 0; i < pc->ncp; i++) {
        const struct perf_compute *e = &pc->cp[i];
        fprintf(f, "compute n_embd=%d n_head=%d n_kv_head=%d seq_len=%d "
                "vocab_size=%d attn_window=%d tp=%d load=%d threads=%d mb=%d "
                "block=%.6g block_fwd=%.6g embed=%.6g embed_fwd=%.6g "
                "head=%.6g head_fwd=%.6g cores=%.3g\n", e->n_embd, e->n_head,
                e->n_kv_head, e->seq_len, e->vocab_size, e->attn_window,
                e->tp, e->load, e->threads, e->mb, e->block, e->block_fwd,
                e->embed, e->embed_fwd, e->head, e->head_fwd, e->cores);
    }
    for (int i = 0; i < pc->ncm; i++) {
        const struct perf_comm *e = &pc->cm[i];
        fprintf(f, "comm kind=%s level=%d p=%d load=%d a=%.6g b=%.6g "
                "cores=%.3g\n", e->kind, e->level, e->p, e->load, e->a, e->b,
                e->cores);
    }
    for (int i = 0; i < pc->nop; i++)
        fprintf(f, "optim load=%d per_param=%.6g cores=%.3g\n",
                pc->op[i].load, pc->op[i].per_param, pc->op[i].cores);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        snprintf(err, errlen, "cannot write %s", path);
        return -1;
    }
    return 0;
}

/* ---- reading -------------------------------------------------------- */

struct field {
    const char *name;
    char type;   /* 'i' int, 'd' double, 's' string (32) */
    void *p;
    int seen;    /* set to -1 beforehand: optional (keeps its value) */
};

/* key=value tokens of one line into fields; every field required. */
static int parse_fields(char *line, struct field *fl, int nf, char *why,
                        size_t whylen)
{
    for (char *tok = strtok(line, " \t"); tok; tok = strtok(NULL, " \t")) {
        char *eq = strchr(tok, '=');
        int k = -1;
        if (eq) {
            *eq = '\0';
            for (int i = 0; i < nf; i++)
                if (!strcmp(fl[i].name, tok))
                    k = i;
        }
        if (k < 0) {
            snprintf(why, whylen, "unexpected '%s'", tok);
            return -1;
        }
        char *end;
        const char *v = eq + 1;
        errno = 0;
        if (fl[k].type == 'i')
            *(int *)fl[k].p = (int)strtol(v, &end, 10);
        else if (fl[k].type == 'd')
            *(double *)fl[k].p = strtod(v, &end);
        else {
            snprintf((char *)fl[k].p, 32, "%s", v);
            end = (char *)v + strlen(v);
        }
        if (end == v || *end || errno) {
            snprintf(why, whylen, "bad value '%s' for %s", v, fl[k].name);
            return -1;
        }
        fl[k].seen = 1;
    }
    for (int i = 0; i < nf; i++)
        if (fl[i].seen == 0) {
            snprintf(why, whylen, "missing %s=", fl[i].name);
            return -1;
        }
    return 0;
}

static int load_compute(struct perf_calib *pc, char *rest, char *why,
                        size_t whylen)
{
    struct perf_compute e;
    struct field fl[] = {
        {"n_embd", 'i', &e.n_embd, 0}, {"n_head", 'i', &e.n_head, 0},
        {"n_kv_head", 'i', &e.n_kv_head, 0}, {"seq_len", 'i', &e.seq_len, 0},
        {"vocab_size", 'i', &e.vocab_size, 0},
        {"attn_window", 'i', &e.attn_window, 0}, {"tp", 'i', &e.tp, 0},
        {"load", 'i', &e.load, 0}, {"threads", 'i', &e.threads, 0},
        {"mb", 'i', &e.mb, 0}, {"block", 'd', &e.block, 0},
        {"block_fwd", 'd', &e.block_fwd, 0}, {"embed", 'd', &e.embed, 0},
        {"embed_fwd", 'd', &e.embed_fwd, 0}, {"head", 'd', &e.head, 0},
        {"head_fwd", 'd', &e.head_fwd, 0}, {"cores", 'd', &e.cores, -1},
    };
    e.cores = 0.0;
    if (parse_fields(rest, fl, (int)(sizeof fl / sizeof fl[0]), why,
                     whylen) < 0)
        return -1;
    if (e.tp < 1 || e.load < 1 || e.threads < 1 || e.mb < 1 ||
        !(e.block > 0.0)) {
        snprintf(why, whylen, "tp, load, threads, mb and block must be > 0");
        return -1;
    }
    return perf_calib_add_compute(pc, &e);
}

static int load_comm(struct perf_calib *pc, char *rest, char *why,
                     size_t whylen)
{
    struct perf_comm e;
    memset(&e, 0, sizeof(e));
    struct field fl[] = {
        {"kind", 's', e.kind, 0}, {"level", 'i', &e.level, 0},
        {"p", 'i', &e.p, 0}, {"load", 'i', &e.load, 0},
        {"a", 'd', &e.a, 0}, {"b", 'd', &e.b, 0},
        {"cores", 'd', &e.cores, -1},
    };
    if (parse_fields(rest, fl, 7, why, whylen) < 0)
        return -1;
    if (e.p < 2 || e.load < 1 || e.level < 0 || e.level > 1 || e.a < 0 ||
        e.b < 0) {
        snprintf(why, whylen, "need p >= 2, load >= 1, level 0 or 1, a and "
                 "b >= 0");
        return -1;
    }
    return perf_calib_add_comm(pc, &e);
}

static int load_line(struct perf_calib *pc, char *line, char *why,
                     size_t whylen)
{
    char *sp = line + strcspn(line, " \t");
    char *rest = *sp ? sp + 1 : sp;
    *sp = '\0';
    if (!strcmp(line, "compute"))
        return load_compute(pc, rest, why, whylen);
    if (!strcmp(line, "comm"))
        return load_comm(pc, rest, why, whylen);
    if (!strcmp(line, "optim")) {
        int load;
        double pp, cores = 0.0;
        struct field fl[] = {{"load", 'i', &load, 0},
                             {"per_param", 'd', &pp, 0},
                             {"cores", 'd', &cores, -1}};
        if (parse_fields(rest, fl, 3, why, whylen) < 0)
            return -1;
        return perf_calib_add_optim(pc, load, pp, cores);
    }
    if (!strcmp(line, "net")) {
        struct field fl[] = {{"alpha", 'd', &pc->net.alpha, 0},
                             {"beta", 'd', &pc->net.beta, 0}};
        pc->has_net = 1;
        return parse_fields(rest, fl, 2, why, whylen);
    }
    if (!strcmp(line, "cores") || !strcmp(line, "mem_mb")) {
        char *end;
        double v = strtod(rest, &end);
        if (end == rest || v <= 0) {
            snprintf(why, whylen, "bad %s '%s'", line, rest);
            return -1;
        }
        if (line[0] == 'c')
            pc->cores = (int)v;
        else
            pc->mem_bytes = v * 1048576.0;
        return 0;
    }
    snprintf(why, whylen, "unknown entry '%s'", line);
    return -1;
}

int perf_calib_load(struct perf_calib *pc, const char *path, char *err,
                    size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read calibration %s: %s", path,
                 strerror(errno));
        return -1;
    }
    char line[1024], why[256];
    int ln = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        ln++;
        line[strcspn(line, "\r\n")] = '\0';
        if (ln == 1) {
            if (strcmp(line, MAGIC) != 0) {
                snprintf(err, errlen, "%s: not a calibration file (first "
                         "line '%.40s', expected '%s')", path, line, MAGIC);
                rc = -1;
            }
            continue;
        }
        if (!line[0] || line[0] == '#')
            continue;
        if (load_line(pc, line, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, ln, why);
            rc = -1;
        }
    }
    if (rc == 0 && ln == 0) {
        snprintf(err, errlen, "%s: empty calibration file", path);
        rc = -1;
    }
    if (rc == 0 && pc->cores < 1) {
        snprintf(err, errlen, "%s: no 'cores' line", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}
