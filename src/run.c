/*
 * run.c - `mpitron train`: set-up, resume, the step loop with logging,
 * validation and checkpoints.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt.h"
#include "log.h"
#include "train.h"

struct run {
    struct trainer tr;
    struct dataset train, val;
    struct loader ld;
    struct metrics mt;
    int32_t *vinp, *vtgt;
    int has_train, has_val, has_loader;
    double ckpt_s;   /* time spent saving since the last log line */
};

static int mkdir_p(const char *path)
{
    char buf[CONFIG_STR_MAX * 2];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static int open_data(struct run *r, char *err, size_t errlen)
{
    const struct config *c = &r->tr.c;
    int rc = dataset_open(&r->train, c->data, "train", c->vocab_size, err,
                          errlen);
    r->has_train = rc == 0;
    if (rc == 0 && r->train.ntok <= c->seq_len + 1) {
        snprintf(err, errlen, "%s: the train split has %" PRId64 " tokens, "
                 "fewer than seq_len+2 = %d", c->data, r->train.ntok,
                 c->seq_len + 2);
        rc = -1;
    }
    if (rc == 0) {
        char verr[512];
        r->has_val = dataset_open(&r->val, c->data, "val", c->vocab_size,
                                  verr, sizeof(verr)) == 0 &&
                     r->val.ntok > c->seq_len + 1;
        if (!r->has_val)
            log_warn(r->tr.g.world, "no usable val split in %s: validation "
                     "is off", c->data);
    }
    if (rc == 0) {
        size_t n = (size_t)r->tr.mb * c->seq_len;
        r->vinp = malloc(2 * n * sizeof(int32_t));
        rc = r->vinp ? 0 : -1;
        r->vtgt = r->vinp + n;
    }
    return rc;
}

/* resume=auto|never|PATH and init_from.  Collective. */
static int restore(struct run *r, char *err, size_t errlen)
{
    struct trainer *tr = &r->tr;
    const struct config *c = &tr->c;
    char path[CONFIG_STR_MAX * 2];
    if (strcmp(c->resume, "never") != 0) {
        int auto_ = strcmp(c->resume, "auto") == 0;
        char rerr[512];
        int found = ckpt_resolve(auto_ ? c->run_dir : c->resume, path,
                                 sizeof(path), rerr, sizeof(rerr)) == 0;
        if (!found && !auto_) {
            snprintf(err, errlen, "resume=%s: %s", c->resume, rerr);
            return -1;
        }
        if (found) {
            if (model_ckpt_load(&tr->g, &tr->m, c, path, 0, &tr->st, err,
                                errlen) < 0)
                return -1;
            log_info(tr->g.world, "resumed from %s at step %" PRId64, path,
                     tr->st.step);
            return 0;
        }
        log_info(tr->g.world, "no checkpoint under %s/ckpt: starting fresh",
                 c->run_dir);
    }
    if (c->init_from[0]) {
        if (ckpt_resolve(c->init_from, path, sizeof(path), err, errlen) < 0 ||
            model_ckpt_load(&tr->g, &tr->m, c, path, 1, &tr->st, err,
                            errlen) < 0)
            return -1;
        log_info(tr->g.world, "initialised weights from %s", path);
    }
    return 0;
}

static int save(struct run *r, char *err, size_t errlen)
{
    char path[CONFIG_STR_MAX * 2];
    double t0 = now_s();
    int rc = model_ckpt_save(&r->tr.g, &r->tr.m, &r->tr.c, &r->tr.st, path,
                             sizeof(path), err, errlen);
    r->ckpt_s += now_s() - t0;
    if (rc == 0)
        log_info(r->tr.g.world, "checkpoint %s (step %" PRId64 ", %.2f s)",
                 path, r->tr.st.step, now_s() - t0);
    return rc;
}

static int setup(struct run *r, const struct config *c, char *err,
                 size_t errlen)
{
    if (trainer_init(&r->tr, c, MPI_COMM_WORLD, err, errlen) < 0)
        return -1;
    struct trainer *tr = &r->tr;
    grid_print_banner(&tr->g, stdout);
    int rc = open_data(r, err, errlen);
    if (agree(tr->g.world, rc) < 0)
        return -1;
    rc = tr->g.rank == 0 && mkdir_p(c->run_dir) < 0 ? -1 : 0;
    if (rc < 0)
        snprintf(err, errlen, "cannot create run_dir %s: %s", c->run_dir,
                 strerror(errno));
    if (agree(tr->g.world, rc) < 0)
        return -1;
    if (restore(r, err, errlen) < 0)
        return -1;
    rc = metrics_open(&r->mt, tr->g.rank == 0 ? c->run_dir : NULL,
                      tr->st.step, err, errlen);
    if (rc == 0) {
        rc = loader_init(&r->ld, &r->train, c->seed,
                         (int64_t)tr->g.dp_rank * tr->per_rank, tr->per_rank,
                         c->seq_len, tr->st.step, err, errlen);
        r->has_loader = rc == 0;
    }
    return agree(tr->g.world, rc);
}

static void teardown(struct run *r)
{
    if (r->has_loader)
        loader_free(&r->ld);
    metrics_close(&r->mt);
    if (r->has_val)
        dataset_close(&r->val);
    if (r->has_train)
        dataset_close(&r->train);
    free(r->vinp);
    trainer_free(&r->tr);
}

/* Accumulated over a log interval. */
struct interval {
    double t_start, compute, comm, data;
    int steps;
    double loss_last;
};

static void log_step(struct run *r, struct interval *iv, double gnorm,
                     double lr, int has_val, double val)
{
    struct trainer *tr = &r->tr;
    const struct config *c = &tr->c;
    double wall = now_s() - iv->t_start;
    double ms = 1e3 / iv->steps;
    double tokens = (double)iv->steps * c->batch_size * c->seq_len;
    struct step_stats s = {
        .step = tr->st.step, .steps = c->steps, .loss = iv->loss_last,
        .lr = lr, .grad_norm = gnorm, .tokens_per_s = tokens / wall,
        .ms_step = wall * ms, .ms_compute = iv->compute * ms,
        .ms_comm = iv->comm * ms, .ms_data = iv->data * ms,
        .ms_ckpt = r->ckpt_s * ms, .has_val = has_val, .val_loss = val,
    };
    s.mfu = s.tokens_per_s * gpt_flops_per_token(&tr->m.cfg) /
            (tr->peak_gflops * 1e9);
    s.eta_s = (double)(c->steps - tr->st.step) * wall / iv->steps;
    metrics_log(&r->mt, &s, tr->g.rank == 0 ? stdout : NULL);
    memset(iv, 0, sizeof(*iv));
    iv->t_start = now_s();
    r->ckpt_s = 0;
}

static int loop(struct run *r, char *err, size_t errlen)
{
    struct trainer *tr = &r->tr;
    const struct config *c = &tr->c;
    struct interval iv = {.t_start = now_s()};
    int64_t stop = c->steps;
    if (c->stop_at_step > 0 && c->stop_at_step < stop)
        stop = c->stop_at_step;
    while (tr->st.step < stop) {
        const int32_t *inp, *tgt;
        double wait = 0.0, gnorm, lr;
        struct step_times tm;
        loader_next(&r->ld, tr->st.step, &inp, &tgt, &wait);
        iv.loss_last = trainer_step(tr, inp, tgt, &gnorm, &lr, &tm);
        iv.compute += tm.compute;
        iv.comm += tm.comm;
        iv.data += wait;
        iv.steps++;
        int64_t s = tr->st.step;
        int last = s == stop;
        int do_val = r->has_val && ((c->val_every > 0 && s % c->val_every == 0)
                                    || s == c->steps);
        double val = do_val ? trainer_validate(tr, &r->val, r->vinp, r->vtgt)
                            : 0.0;
        int do_save = last || (c->ckpt_every > 0 && s % c->ckpt_every == 0);
        if (do_save && save(r, err, errlen) < 0)
            return -1;
        if (s % c->log_every == 0 || last)
            log_step(r, &iv, gnorm, lr, do_val, val);
        else if (do_val)
            metrics_log_val(&r->mt, s, val, tr->g.rank == 0 ? stdout : NULL);
    }
    return 0;
}

int train_main(const struct config *c)
{
    struct run r;
    memset(&r, 0, sizeof(r));
    char err[1024] = "";
    int rc = setup(&r, c, err, sizeof(err));
    if (rc == 0) {
        log_info(MPI_COMM_WORLD, "training %" PRId64 " parameters, "
                 "%d steps of %d x %d tokens (micro_batch %d x %d)",
                 gpt_num_params(&r.tr.m.cfg), c->steps, c->batch_size,
                 c->seq_len, r.tr.mb, r.tr.accum);
        rc = loop(&r, err, sizeof(err));
    }
    if (rc < 0 && err[0])
        log_error("%s", err);
    teardown(&r);
    return rc < 0 ? 1 : 0;
}
