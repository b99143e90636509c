#include "metrics.h"

#include "ckpt.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The whole of path, malloc'ed and NUL-terminated, in *out (NULL with
 * *len 0 when it does not exist).  0, or -1 with errno set. */
static int slurp(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *out = NULL;
    *len = 0;
    if (!f)
        return errno == ENOENT ? 0 : -1;
    size_t cap = 0;
    char *buf = NULL;
    for (;;) {
        if (cap - *len < 4096) {
            char *nb = realloc(buf, cap = cap ? 2 * cap : 65536);
            if (!nb) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return -1;
            }
            buf = nb;
        }
        size_t r = fread(buf + *len, 1, cap - *len - 1, f);
        *len += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        errno = EIO;
        return -1;
    }
    buf[*len] = '\0';
    *out = buf;
    return 0;
}

/* Keep only the lines of path whose "step" is <= keep_step (and drop a
 * last line without its newline, cut by a crash), replacing the file
 * durably (ckpt_replace) when a line goes.  0 or -1 with err. */
static int truncate_history(const char *path, int64_t keep_step, char *err,
                            size_t errlen)
{
    char *text;
    size_t len, kept = 0;
    if (slurp(path, &text, &len) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        if (!nl)
            break; /* a last line cut by a crash: not a record */
        size_t n = (size_t)(nl - line) + 1;
        char save = line[n - 1];
        line[n - 1] = '\0'; /* strstr stays inside the line */
        const char *s = strstr(line, "\"step\":");
        int drop = s && strtoll(s + 7, NULL, 10) > keep_step;
        line[n - 1] = save;
        if (!drop) {
            memmove(text + kept, line, n);
            kept += n;
        }
        line += n;
    }
    int rc = 0;
    if (kept < len) {
        struct ckpt_buf b = {text, kept};
        rc = ckpt_replace(path, &b, 1, err, errlen);
    }
    free(text);
    return rc;
}

int metrics_open(struct metrics *mt, const char *run_dir, int64_t resume_step,
                 char *err, size_t errlen)
{
    mt->jsonl = NULL;
    json_init(&mt->json);
    if (!run_dir)
        return 0;
    char path[4096];
    snprintf(path, sizeof(path), "%s/metrics.jsonl", run_dir);
    if (truncate_history(path, resume_step, err, errlen) < 0)
        return -1;
    mt->jsonl = fopen(path, "a");
    if (!mt->jsonl) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void metrics_close(struct metrics *mt)
{
    if (mt->jsonl)
        fclose(mt->jsonl);
    mt->jsonl = NULL;
    json_free(&mt->json);
}

static void fmt_eta(char *buf, size_t n, double s)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

/* val_bpb and, with several datasets, the per-dataset objects. */
static void json_val(struct json *j, const struct val_stats *v)
{
    if (v->has_bpb)
        json_num(j, "val_bpb", v->bpb, 9);
    if (v->n < 2)
        return;
    json_obj_begin(j, "val_loss_data");
    for (int i = 0; i < v->n; i++)
        json_num(j, v->names[i], v->loss_by[i], 17);
    json_obj_end(j);
    if (!v->has_bpb)
        return;
    json_obj_begin(j, "val_bpb_data");
    for (int i = 0; i < v->n; i++)
        json_num(j, v->names[i], v->bpb_by[i], 9);
    json_obj_end(j);
}

/* " (bpb B; dirA L, dirB L)" for the progress line. */
static void text_val(char *buf, size_t n, const struct val_stats *v)
{
    size_t o = 0;
    buf[0] = '\0';
    if (!v || (!v->has_bpb && v->n < 2))
        return;
    o += (size_t)snprintf(buf, n, " (");
    if (v->has_bpb)
        o += (size_t)snprintf(buf + o, n - o, "%.3f bpb%s", v->bpb,
                              v->n > 1 ? "; " : "");
    for (int i = 0; v->n > 1 && i < v->n && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s %.4f", i ? ", " : "",
                              v->names[i], v->loss_by[i]);
    if (o < n)
        snprintf(buf + o, n - o, ")");
}

/* The progress line. */
static void text_step(const struct step_stats *s, FILE *out)
{
    char eta[32], val[400] = "", pipe[512] = "", vx[340], strag[128] = "";
    fmt_eta(eta, sizeof(eta), s->eta_s);
    text_val(vx, sizeof(vx), s->val);
    if (isfinite(s->loss_z)) /* val is the tail after the loss */
        snprintf(val, sizeof(val), " (z %.1f)", s->loss_z);
    if (s->has_val) {
        size_t n = strlen(val);
        snprintf(val + n, sizeof(val) - n, " | val %.4f%s", s->val_loss, vx);
    }
    if (s->pp > 1) { /* bubble, then busy/idle ms of each stage */
        int n = snprintf(pipe, sizeof(pipe), " | pp wait %.1f ms, bubble "
                         "%.2f (theory %.2f), stage busy/idle ms",
                         s->ms_pp_wait, s->bubble, s->bubble_theory);
        for (int i = 0; i < s->pp && n < (int)sizeof(pipe) - 24; i++)
            n += snprintf(pipe + n, sizeof(pipe) - (size_t)n, " %.0f/%.0f",
                          1e3 * s->stage_busy[i], 1e3 * s->stage_idle[i]);
    }
    if (s->skipped > 0) { /* pipe is the tail before the ETA */
        size_t n = strlen(pipe);
        snprintf(pipe + n, sizeof(pipe) - n, " | skipped %d (%s)",
                 s->skipped, s->skip_reason ? s->skip_reason : "");
    }
    if (s->world > 1 && s->straggler_rank >= 0)
        snprintf(strag, sizeof(strag), " | straggler rank %d (%.2fx the "
                 "median; imbalance %.1f ms)", s->straggler_rank,
                 s->straggler_ratio, s->ms_imbalance);
    fprintf(out,
            "step %" PRId64 "/%" PRId64 " | loss %.4f%s | lr %.2e | "
            "gnorm %.3f | %.0f tok/s | MFU %.1f%% | ms %.1f: compute %.1f "
            "comm %.1f exposed + %.1f overlapped, data %.1f, ckpt %.1f%s%s"
            " | ETA %s\n",
            s->step, s->steps, s->loss, val, s->lr, s->grad_norm,
            s->tokens_per_s, 100.0 * s->mfu, s->ms_step, s->ms_compute,
            s->ms_comm, s->ms_comm_overlapped, s->ms_data, s->ms_ckpt,
            pipe, strag, eta);
    fflush(out);
}

/* The metrics.jsonl line. */
static void json_step(struct metrics *mt, const struct step_stats *s)
{
    struct json *j = &mt->json;
    json_reset(j);
    json_obj_begin(j, NULL);
    json_int(j, "step", s->step);
    json_num(j, "loss", s->loss, 17);
    json_num(j, "lr", s->lr, 9);
    json_num(j, "grad_norm", s->grad_norm, 9);
    const struct { const char *k; double v; } f[] = {
        {"tokens_per_s", s->tokens_per_s}, {"mfu", s->mfu},
        {"ms_step", s->ms_step}, {"ms_compute", s->ms_compute},
        {"ms_comm", s->ms_comm}, {"ms_comm_exposed", s->ms_comm},
        {"ms_comm_overlapped", s->ms_comm_overlapped},
        {"wire_mb", s->wire_mb}, {"ms_data", s->ms_data},
        {"ms_ckpt", s->ms_ckpt}, {"ms_pp_wait", s->ms_pp_wait},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        json_num(j, f[i].k, f[i].v, 6);
    json_num(j, "loss_z", s->loss_z, 6);
    json_int(j, "skipped", s->skipped);
    if (s->pp > 1) {
        json_num(j, "bubble", s->bubble, 6);
        json_num(j, "bubble_theory", s->bubble_theory, 6);
        const double *arr[2] = {s->stage_busy, s->stage_idle};
        const char *key[2] = {"stage_busy_ms", "stage_idle_ms"};
        for (int k = 0; k < 2; k++) {
            json_arr_begin(j, key[k]);
            for (int i = 0; i < s->pp; i++)
                json_num(j, NULL, 1e3 * arr[k][i], 6);
            json_arr_end(j);
        }
    }
    if (s->world > 1) {
        json_int(j, "straggler_rank", s->straggler_rank);
        json_num(j, "straggler_ratio", s->straggler_ratio, 6);
        json_num(j, "ms_imbalance", s->ms_imbalance, 6);
    }
    if (s->tokens > 0) {
        json_int(j, "tokens", s->tokens);
        json_int(j, "seq_len", s->seq_len);
    }
    if (s->has_val)
        json_num(j, "val_loss", s->val_loss, 17);
    if (s->has_val && s->val)
        json_val(j, s->val);
    json_obj_end(j);
    json_write_line(j, mt->jsonl);
}

void metrics_log(struct metrics *mt, const struct step_stats *s, FILE *out)
{
    if (out)
        text_step(s, out);
    if (mt->jsonl)
        json_step(mt, s);
}

void metrics_log_val_stats(struct metrics *mt, int64_t step,
                           const struct val_stats *v, FILE *out)
{
    if (out) {
        char vx[340];
        text_val(vx, sizeof(vx), v);
        fprintf(out, "step %" PRId64 " | val loss %.4f%s\n", step, v->loss,
                vx);
        fflush(out);
    }
    if (mt->jsonl) {
        struct json *j = &mt->json;
        json_reset(j);
        json_obj_begin(j, NULL);
        json_int(j, "step", step);
        json_num(j, "val_loss", v->loss, 17);
        json_val(j, v);
        json_obj_end(j);
        json_write_line(j, mt->jsonl);
    }
}

void metrics_log_rollback(struct metrics *mt, int64_t to_step,
                          int64_t from_step, const int64_t *skip, int n)
{
    if (!mt->jsonl)
        return;
    struct json *j = &mt->json;
    json_reset(j);
    json_obj_begin(j, NULL);
    json_int(j, "step", to_step);
    json_int(j, "rollback_from", from_step);
    json_arr_begin(j, "skip_steps");
    for (int i = 0; i < n; i++)
        json_int(j, NULL, skip[i]);
    json_arr_end(j);
    json_obj_end(j);
    json_write_line(j, mt->jsonl);
}

void metrics_log_val(struct metrics *mt, int64_t step, double val_loss,
                     FILE *out)
{
    if (out) {
        fprintf(out, "step %" PRId64 " | val loss %.4f\n", step, val_loss);
        fflush(out);
    }
    if (mt->jsonl) {
        struct json *j = &mt->json;
        json_reset(j);
        json_obj_begin(j, NULL);
        json_int(j, "step", step);
        json_num(j, "val_loss", val_loss, 17);
        json_obj_end(j);
        json_write_line(j, mt->jsonl);
    }
}
