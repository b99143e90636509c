#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Keep only lines of path whose "step" is <= keep_step. */
static int truncate_history(const char *path, int64_t keep_step)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *o = fopen(tmp, "w");
    if (!o) {
        fclose(f);
        return -1;
    }
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        const char *s = strstr(line, "\"step\":");
        if (s && strtoll(s + 7, NULL, 10) > keep_step)
            continue;
        fputs(line, o);
    }
    fclose(f);
    int rc = fclose(o);
    return rc == 0 ? rename(tmp, path) : -1;
}

int metrics_open(struct metrics *mt, const char *run_dir, int64_t resume_step,
                 char *err, size_t errlen)
{
    mt->jsonl = NULL;
    if (!run_dir)
        return 0;
    char path[4096];
    snprintf(path, sizeof(path), "%s/metrics.jsonl", run_dir);
    if (truncate_history(path, resume_step) < 0) {
        snprintf(err, errlen, "cannot rewrite %s: %s", path, strerror(errno));
        return -1;
    }
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

void metrics_log(struct metrics *mt, const struct step_stats *s, FILE *out)
{
    char eta[32], val[48] = "", pipe[512] = "", strag[64] = "";
    fmt_eta(eta, sizeof(eta), s->eta_s);
    if (s->has_val)
        snprintf(val, sizeof(val), " | val %.4f", s->val_loss);
    if (s->pp > 1) { /* bubble, then busy/idle ms of each stage */
        int n = snprintf(pipe, sizeof(pipe), " | pp wait %.1f ms, bubble "
                         "%.2f (theory %.2f), stage busy/idle ms",
                         s->ms_pp_wait, s->bubble, s->bubble_theory);
        for (int i = 0; i < s->pp && n < (int)sizeof(pipe) - 24; i++)
            n += snprintf(pipe + n, sizeof(pipe) - (size_t)n, " %.0f/%.0f",
                          1e3 * s->stage_busy[i], 1e3 * s->stage_idle[i]);
    }
    if (s->world > 1 && s->straggler_rank >= 0)
        snprintf(strag, sizeof(strag), " | straggler rank %d (%.2fx the "
                 "median)", s->straggler_rank, s->straggler_ratio);
    if (out) {
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
    if (!mt->jsonl)
        return;
    fprintf(mt->jsonl,
            "{\"step\":%" PRId64 ",\"loss\":%.17g,\"lr\":%.9g,"
            "\"grad_norm\":%.9g,\"tokens_per_s\":%.6g,\"mfu\":%.6g,"
            "\"ms_step\":%.6g,\"ms_compute\":%.6g,\"ms_comm\":%.6g,"
            "\"ms_comm_exposed\":%.6g,\"ms_comm_overlapped\":%.6g,"
            "\"wire_mb\":%.6g,\"ms_data\":%.6g,\"ms_ckpt\":%.6g,"
            "\"ms_pp_wait\":%.6g",
            s->step, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->mfu,
            s->ms_step, s->ms_compute, s->ms_comm, s->ms_comm,
            s->ms_comm_overlapped, s->wire_mb, s->ms_data, s->ms_ckpt,
            s->ms_pp_wait);
    if (s->pp > 1) {
        fprintf(mt->jsonl, ",\"bubble\":%.6g,\"bubble_theory\":%.6g",
                s->bubble, s->bubble_theory);
        const double *arr[2] = {s->stage_busy, s->stage_idle};
        const char *key[2] = {"stage_busy_ms", "stage_idle_ms"};
        for (int k = 0; k < 2; k++) {
            fprintf(mt->jsonl, ",\"%s\":[", key[k]);
            for (int i = 0; i < s->pp; i++)
                fprintf(mt->jsonl, "%s%.6g", i ? "," : "", 1e3 * arr[k][i]);
            fputc(']', mt->jsonl);
        }
    }
    if (s->world > 1)
        fprintf(mt->jsonl, ",\"straggler_rank\":%d,\"straggler_ratio\":%.6g",
                s->straggler_rank, s->straggler_ratio);
    if (s->has_val)
        fprintf(mt->jsonl, ",\"val_loss\":%.17g", s->val_loss);
    fputs("}\n", mt->jsonl);
    fflush(mt->jsonl);
}

void metrics_log_val(struct metrics *mt, int64_t step, double val_loss,
                     FILE *out)
{
    if (out) {
        fprintf(out, "step %" PRId64 " | val loss %.4f\n", step, val_loss);
        fflush(out);
    }
    if (mt->jsonl) {
        fprintf(mt->jsonl, "{\"step\":%" PRId64 ",\"val_loss\":%.17g}\n",
                step, val_loss);
        fflush(mt->jsonl);
    }
}
