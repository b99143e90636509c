/*
 * run.c - `mpitron train`: set-up, resume, the step loop with logging,
 * validation and checkpoints.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "bpe/bpe.h"
#include "ckpt.h"
#include "comm.h"
#include "phase.h"
#include "log.h"
#include "mem_report.h"
#include "data/mix.h"
#include "train.h"
#include "watchdog.h"

struct run {
    struct trainer tr;
    struct data_spec spec;
    struct mixture train;
    struct dataset val[MIX_MAX];
    int has_val[MIX_MAX], any_val;
    uint32_t *tok_bytes;     /* bytes of each token; NULL: unknown */
    struct loader ld;
    struct metrics mt;
    int32_t *vinp, *vtgt, *vdst;
    int has_train, has_loader;
    double ckpt_s;   /* time spent saving since the last log line */
    struct ckpt_async *async; /* ckpt_async=1 */
    int64_t async_step;
    double stall_s;  /* total time the loop was held up by saves */
    int saves;
    struct nf_state nf; /* non-finite steps: policy and replay list */
};

/* Each token's length in bytes, for bits per byte: 1 for a vocabulary of
 * bytes, the tokenizer's lengths for BPE; NULL (no bits per byte) when
 * the vocabulary has no tokenizer here (llm.c's GPT-2 shards). */
static int tok_bytes_init(struct run *r, char *err, size_t errlen)
{
    const struct config *c = &r->tr.c;
    int V = c->vocab_size;
    char path[MIX_PATH_MAX + 16];
    data_spec_tokenizer(c->data, path, sizeof(path));
    if (V > 256 && !path[0])
        return 0;
    if (!(r->tok_bytes = malloc((size_t)V * sizeof(uint32_t)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < V; i++)
        r->tok_bytes[i] = 1;
    if (V <= 256)
        return 0;
    struct bpe b;
    if (bpe_load(&b, path, err, errlen) < 0)
        return -1;
    for (int i = 0; i < V && i < b.vocab; i++)
        r->tok_bytes[i] = b.len[i];
    bpe_free(&b);
    return 0;
}

static int open_data(struct run *r, char *err, size_t errlen)
{
    const struct config *c = &r->tr.c;
    if (data_spec_parse(c->data, &r->spec, err, errlen) < 0)
        return -1;
    int rc = mixture_open(&r->train, &r->spec, "train", c->vocab_size,
                          c->seq_len + 1, err, errlen);
    r->has_train = rc == 0;
    for (int i = 0; rc == 0 && c->doc_mask && i < r->spec.n; i++)
        if (!r->train.ds[i].docs) {
            snprintf(err, errlen, "doc_mask=1, but %s has no train%s: "
                     "prepare it again (mpitron prepare records document "
                     "starts)", r->spec.dir[i], DOCS_SUFFIX);
            rc = -1;
        }
    for (int i = 0; rc == 0 && i < r->spec.n; i++) {
        char verr[512];
        const char *dir = r->spec.dir[i];
        int vrc = dataset_open(&r->val[i], dir, "val", c->vocab_size,
                               verr, sizeof(verr));
        r->has_val[i] = vrc == 0;
        if (vrc == -1) { /* there, but broken: as bad as a train shard */
            snprintf(err, errlen, "val split: %s", verr);
            rc = -1;
        } else if (vrc == -2) {
            log_warn(r->tr.g.world, "%s: no validation for it", verr);
        } else if (r->val[i].ntok <= c->seq_len + 1) {
            log_warn(r->tr.g.world, "the val split of %s has %lld tokens, "
                     "not more than seq_len + 1 = %d: no validation for it",
                     dir, (long long)r->val[i].ntok, c->seq_len + 1);
            dataset_close(&r->val[i]);
            r->has_val[i] = 0;
        }
        r->any_val |= r->has_val[i];
    }
    if (rc == 0)
        rc = tok_bytes_init(r, err, errlen);
    if (rc == 0) {
        /* every micro-batch; any share (rebalance_every) fits */
        size_t n = (size_t)c->batch_size * c->seq_len;
        r->vinp = malloc(3 * n * sizeof(int32_t));
        rc = r->vinp ? 0 : -1;
        r->vtgt = r->vinp + n;
        r->vdst = c->doc_mask ? r->vinp + 2 * n : NULL;
    }
    return rc;
}

/* One validation over every dataset with a val split: the loss and bits
 * per byte of each, and their means weighted by the mixture.  by
 * (2 x MIX_MAX) holds the per-dataset figures v points at.  Collective. */
static void validate(struct run *r, struct val_stats *v, double *by,
                     const char **names)
{
    double w = 0.0;
    memset(v, 0, sizeof(*v));
    v->has_bpb = r->tok_bytes != NULL;
    for (int i = 0, k = 0; i < r->spec.n; i++) {
        if (!r->has_val[i])
            continue;
        double bpb = 0.0;
        double loss = trainer_validate(&r->tr, &r->val[i], r->tok_bytes,
                                       r->vinp, r->vtgt, r->vdst, &bpb);
        v->loss += r->spec.w[i] * loss;
        v->bpb += r->spec.w[i] * bpb;
        w += r->spec.w[i];
        names[k] = r->spec.dir[i];
        by[k] = loss;
        by[MIX_MAX + k] = bpb;
        k++;
        v->n = k;
    }
    if (w > 0) {
        v->loss /= w;
        v->bpb /= w;
    }
    if (v->n == 1 && r->spec.n == 1) { /* exactly the dataset's figures */
        v->loss = by[0];
        v->bpb = by[MIX_MAX];
    }
    v->names = names;
    v->loss_by = by;
    v->bpb_by = by + MIX_MAX;
}

/* resume=auto and rollbacks: load the newest checkpoint of run_dir that
 * verifies and loads; one that passes the file checks but does not load
 * (a broken tensor or config text) is skipped with a warning like a
 * damaged one, one of another model is refused.  Returns 0 (path set),
 * 1 (no step_*.h5 at all) or -1 with err.  Collective. */
static int load_newest(struct run *r, char *path, size_t pathlen, char *err,
                       size_t errlen)
{
    struct trainer *tr = &r->tr;
    const struct config *c = &tr->c;
    struct rank_state rs;
    int64_t before = INT64_MAX, step = -1;
    trainer_rank_state(tr, &rs);
    trainer_sync(tr); /* ZeRO's operations in flight end before the read */
    for (;;) {
        int rc = ckpt_find_good_before(tr->g.world, c->run_dir, before, path,
                                       pathlen, &step,
                                       tr->g.rank ? NULL : stderr, err,
                                       errlen);
        if (rc != 0)
            return rc;
        rc = model_ckpt_load(&tr->g, &tr->m, c, path, 0, &tr->st, &rs, err,
                             errlen);
        if (rc == 0) /* zero = 3 forgets its gathered slots (a rollback
                        changed the shards under them) */
            trainer_after_ckpt(tr);
        if (rc != -1)
            return rc < 0 ? -1 : 0;
        log_warn(tr->g.world, "skipping %s: %s", path, err);
        before = step;
    }
}

/* resume=never in a run_dir that holds checkpoints: its saves would
 * overwrite the earlier run's at the same steps, and a later resume=auto
 * could take that run's newer ones.  Refused (1, err) on every rank when
 * any rank sees one.  Collective. */
static int refuse_overwrite(struct run *r, char *err, size_t errlen)
{
    const struct config *c = &r->tr.c;
    char newest[CONFIG_STR_MAX * 2];
    int n = ckpt_count(c->run_dir, newest, sizeof(newest)), most = n;
    MPI_Allreduce(&n, &most, 1, MPI_INT, MPI_MAX, r->tr.g.world);
    if (most == 0)
        return 0;
    snprintf(err, errlen, "resume=never, but %s/ckpt already holds %d "
             "checkpoint(s) of an earlier run (newest %s): this run would "
             "overwrite them, and a later resume=auto could take that run's "
             "newer ones; use another run_dir, or remove them (resume=auto "
             "continues that run)", c->run_dir, most, n ? newest : "on "
             "another rank's view");
    return 1;
}

/* resume=auto|never|PATH and init_from.  Collective. */
static int restore(struct run *r, char *err, size_t errlen)
{
    struct trainer *tr = &r->tr;
    const struct config *c = &tr->c;
    char path[CONFIG_STR_MAX * 2];
    struct rank_state rs;
    trainer_rank_state(tr, &rs);
    phase_enter(PHASE_CKPT, "resume", -1, -1, -1, &tr->wpg);
    if (strcmp(c->resume, "never") == 0 && refuse_overwrite(r, err, errlen))
        return -1;
    if (strcmp(c->resume, "never") != 0) {
        int auto_ = strcmp(c->resume, "auto") == 0, found;
        if (auto_) {
            /* the newest checkpoint that verifies and loads; newer bad
             * ones are skipped with a warning each */
            found = load_newest(r, path, sizeof(path), err, errlen);
            if (found < 0)
                return -1;
            if (found == 0) {
                log_info(tr->g.world, "resumed from %s at step %" PRId64,
                         path, tr->st.step);
                return 0;
            }
            found = 0;
        } else {
            found = ckpt_resolve(c->resume, path, sizeof(path), err,
                                 errlen) == 0;
            if (!found) {
                char e2[1024];
                snprintf(e2, sizeof(e2), "resume=%s: %s", c->resume, err);
                snprintf(err, errlen, "%s", e2);
                return -1;
            }
        }
        if (found) {
            if (model_ckpt_load(&tr->g, &tr->m, c, path, 0, &tr->st, &rs,
                                err, errlen) < 0)
                return -1;
            trainer_after_ckpt(tr);
            log_info(tr->g.world, "resumed from %s at step %" PRId64, path,
                     tr->st.step);
            return 0;
        }
        log_info(tr->g.world, "no checkpoint under %s/ckpt: starting fresh",
                 c->run_dir);
    }
    if (c->init_from[0]) {
        if (ckpt_resolve(c->init_from, path, sizeof(path), err, errlen) < 0 ||
            model_ckpt_load(&tr->g, &tr->m, c, path, 1, &tr->st, NULL, err,
                            errlen) < 0)
            return -1;
        trainer_after_ckpt(tr);
        log_info(tr->g.world, "initialised weights from %s (fresh optimizer)",
                 path);
    }
    return 0;
}

/* After a committed save: report it and apply retention (rank 0). */
static void committed(struct run *r, const char *path, int64_t step)
{
    const struct config *c = &r->tr.c;
    if (r->tr.g.rank != 0)
        return;
    printf("checkpoint %s (step %" PRId64 ")\n", path, step);
    char dir[CONFIG_STR_MAX + 8], err[512];
    snprintf(dir, sizeof(dir), "%s/ckpt", c->run_dir);
    if ((c->keep_last > 0 || c->keep_every > 0) &&
        ckpt_retain(dir, c->keep_last, c->keep_every, path, stdout, err,
                    sizeof(err)) < 0)
        log_warn(MPI_COMM_SELF, "retention: %s", err);
    fflush(stdout);
}

/* Collect an asynchronous save in flight, if any. */
static int async_collect(struct run *r, char *err, size_t errlen)
{
    if (!r->async || !ckpt_save_async_busy(r->async))
        return 0;
    char path[CONFIG_STR_MAX * 2];
    double t0 = now_s();
    phase_enter(PHASE_CKPT, "waiting for the asynchronous save", -1, -1, -1,
                &r->tr.wpg);
    int rc = ckpt_save_async_wait(r->async, path, sizeof(path), err, errlen);
    r->ckpt_s += now_s() - t0;
    if (rc == 0)
        committed(r, path, r->async_step);
    return rc < 0 ? -1 : 0;
}

/* Save the current step; the time the training loop is held up is the
 * stall (the whole save, or the copy when ckpt_async=1). */
static int save(struct run *r, char *err, size_t errlen)
{
    struct trainer *tr = &r->tr;
    struct rank_state rs;
    trainer_rank_state(tr, &rs);
    double t0 = now_s();
    phase_enter(PHASE_CKPT, "save", tr->st.step, -1, -1, &tr->wpg);
    trainer_sync(tr); /* zero 1/2: the parameters' all-gathers complete */
    if (trainer_tie_check(tr))
        log_warn(tr->g.world, "the tied embedding's copies on the first and "
                 "last pipeline stages had drifted apart (a bug: please "
                 "report it); both now hold the first stage's");
    int rc;
    if (r->async) {
        rc = async_collect(r, err, errlen);
        if (rc == 0)
            rc = model_ckpt_save_async(&tr->g, &tr->m, &tr->c, &tr->st, &rs,
                                       r->async, err, errlen);
        r->async_step = tr->st.step;
    } else {
        char path[CONFIG_STR_MAX * 2];
        rc = model_ckpt_save(&tr->g, &tr->m, &tr->c, &tr->st, &rs, path,
                             sizeof(path), err, errlen);
        if (rc == 0)
            committed(r, path, tr->st.step);
    }
    trainer_after_ckpt(tr);
    double stall = now_s() - t0;
    r->ckpt_s += stall;
    r->stall_s += stall;
    r->saves++;
    return rc;
}

/* ---- signals: a handler only sets a flag; ranks agree at step ends ---- */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    if (sig == SIGINT && got_signal == SIGINT)
        _exit(130); /* a second SIGINT aborts at once */
    got_signal = sig;
}

void train_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* debug_hold_step: wait (at most 300 s) until a stop signal arrives.
 * Ranks wait each for their own: mpirun forwards a signal to all. */
static void hold_for_signal(int64_t step)
{
    phase_enter(PHASE_DEBUG_HANG, "debug_hold_step: waiting for a signal",
                step, -1, -1, NULL);
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 30000 && !got_signal; i++)
        nanosleep(&ts, NULL);
}

/* The largest signal number any rank received (0 = none).  Collective. */
static int agreed_signal(MPI_Comm world, const struct phase_group *pg)
{
    int mine = got_signal, any = 0;
    phase_enter(PHASE_COLLECTIVE, "step-end signal check", -1, -1, -1, pg);
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, world);
    return any;
}

static const char *signal_name(int sig)
{
    return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM"
           : sig == SIGINT ? "SIGINT" : "a signal";
}

static int setup(struct run *r, const struct config *c0, char *err,
                 size_t errlen)
{
    struct config cv = *c0; /* vocab_size resolved against the data */
    int vrc = data_spec_vocab(cv.data, &cv.vocab_size, 0, err, errlen);
    if (vrc == 0) /* before calibration, which a long seq_len makes slow */
        vrc = data_spec_check_len(cv.data, "train", cv.seq_len + 1, err,
                                  errlen);
    if (comm_agree(MPI_COMM_WORLD, vrc, err, errlen) < 0)
        return -1;
    const struct config *c = &cv;
    if (trainer_init(&r->tr, c, MPI_COMM_WORLD, err, errlen) < 0)
        return -1;
    struct trainer *tr = &r->tr;
    grid_print_banner(&tr->g, stdout);
    place_print_banner(&tr->place, tr->g.world, stdout);
    place_warn(&tr->place, tr->g.world);
    trainer_print_balance(tr, stdout);
    mem_report_banner(tr, stdout);
    if (tr->g.pp > 1 && tr->g.rank == 0) {
        printf("pipeline: %d stages, %s, %d micro-batches per step "
               "(bubble in theory %.3f); pp_partition=%s, blocks per "
               "stage:", tr->g.pp, c->pp_schedule, tr->accum,
               pp_bubble_theory(tr->g.pp, tr->accum), c->pp_partition);
        for (int s = 0; s < tr->g.pp; s++)
            printf(" [%d,%d)", tr->bound[s], tr->bound[s + 1]);
        printf("\n");
        fflush(stdout);
    }
    if (tr->g.pp > 1 && tr->accum < 4 * tr->g.pp)
        log_warn(tr->g.world, "pp=%d with %d micro-batch(es) per step: the "
                 "pipeline idles %.0f%% of the step in theory; a smaller "
                 "micro_batch (or a larger batch_size) gives more "
                 "micro-batches (>= %d keeps it under 20%%)", tr->g.pp,
                 tr->accum, 100 * pp_bubble_theory(tr->g.pp, tr->accum),
                 4 * tr->g.pp);
    int rc = open_data(r, err, errlen);
    if (comm_agree(tr->g.world, rc, NULL, 0) < 0)
        return -1;
    rc = tr->g.rank == 0 ? ckpt_mkdir_p(c->run_dir, err, errlen) : 0;
    if (comm_agree(tr->g.world, rc, NULL, 0) < 0)
        return -1;
    if (restore(r, err, errlen) < 0)
        return -1;
    rc = metrics_open(&r->mt, tr->g.rank == 0 ? c->run_dir : NULL,
                      tr->st.step, err, errlen);
    if (rc == 0) {
        rc = loader_init(&r->ld, &r->train, &tr->plan, tr->g.dp_rank,
                         tr->shares, c->seed, c->doc_mask, tr->st.step, err,
                         errlen);
        r->has_loader = rc == 0;
    }
    if (comm_agree(tr->g.world, rc, NULL, 0) < 0)
        return -1;
    if (c->ckpt_async && ckpt_async_init(tr->g.world, &r->async, err,
                                         errlen) < 0)
        return -1;
    enum nf_policy pol = NF_SKIP;
    nf_policy_parse(c->nonfinite, &pol); /* checked by config */
    nf_init(&r->nf, pol, c->nonfinite_patience);
    train_signals_install(); /* again: main() did before MPI_Init */
    return 0;
}

static void teardown(struct run *r)
{
    nf_free(&r->nf);
    ckpt_async_free(r->async);
    if (r->has_loader)
        loader_free(&r->ld);
    metrics_close(&r->mt);
    for (int i = 0; i < r->spec.n; i++)
        if (r->has_val[i])
            dataset_close(&r->val[i]);
    if (r->has_train)
        mixture_close(&r->train);
    free(r->tok_bytes);
    free(r->vinp);
    trainer_free(&r->tr);
}

/* Accumulated over a log interval. */
struct interval {
    double t_start, compute, comm, comm_hidden, data, wire, bubble, pp_wait;
    int steps;
    double loss_last, loss_z, tokens;
    struct batch_shape last; /* the last step's shape */
    int skipped, skip_flags; /* steps skipped, their NF_* reasons */
};

static void log_step(struct run *r, struct interval *iv, double gnorm,
                     double lr, const struct val_stats *val)
{
    struct trainer *tr = &r->tr;
    const struct config *c = &tr->c;
    double wall = now_s() - iv->t_start;
    double ms = 1e3 / iv->steps;
    double tokens = iv->tokens;
    struct step_stats s = {
        .step = tr->st.step, .steps = c->steps, .loss = iv->loss_last,
        .lr = lr, .grad_norm = gnorm, .tokens_per_s = tokens / wall,
        .ms_step = wall * ms, .ms_compute = iv->compute * ms,
        .ms_comm = iv->comm * ms, .ms_data = iv->data * ms,
        .ms_comm_overlapped = iv->comm_hidden * ms,
        .wire_mb = iv->wire / iv->steps / 1048576.0,
        .ms_ckpt = r->ckpt_s * ms, .has_val = val != NULL,
        .val_loss = val ? val->loss : 0.0, .val = val,
        .ms_pp_wait = iv->pp_wait * ms,
        .pp = tr->g.pp, .bubble = iv->bubble / iv->steps,
        .bubble_theory = pp_bubble_theory(tr->g.pp, tr->accum),
        .stage_busy = tr->stage_busy, .stage_idle = tr->stage_idle,
        .loss_z = iv->loss_z, .skipped = iv->skipped,
    };
    char why[160];
    nf_reason(iv->skip_flags, why, (int)sizeof(why));
    s.skip_reason = why;
    s.mfu = s.tokens_per_s * gpt_flops_per_token(&tr->m.cfg) /
            (tr->peak_gflops * 1e9);
    if (tr->plan.ramp_steps > 0 || tr->plan.sl_steps > 0) {
        s.tokens = (int64_t)iv->last.B * iv->last.T;
        s.seq_len = iv->last.T;
    }
    s.world = tr->g.size;
    double idle;
    s.straggler_rank = trainer_straggler(tr, iv->compute, &s.straggler_ratio,
                                         &idle);
    s.ms_imbalance = idle * ms;
    s.eta_s = (double)(c->steps - tr->st.step) * wall / iv->steps;
    metrics_log(&r->mt, &s, tr->g.rank == 0 ? stdout : NULL);
    memset(iv, 0, sizeof(*iv));
    iv->t_start = now_s();
    r->ckpt_s = 0;
}

/* nonfinite=rollback: reload the newest good checkpoint of run_dir (the
 * run of non-finite steps that ended at step s is then left out on
 * replay), and make metrics.jsonl one history again.  Collective. */
static int rollback(struct run *r, int64_t s, char *err, size_t errlen)
{
    struct trainer *tr = &r->tr;
    const struct config *c = &tr->c;
    char path[CONFIG_STR_MAX * 2];
    int64_t first = r->nf.run_first;
    struct train_state at_s = tr->st; /* the run's last line, on failure */
    if (async_collect(r, err, errlen) < 0)
        return -1;
    phase_enter(PHASE_CKPT, "rollback", first, s, -1, &tr->wpg);
    int found = load_newest(r, path, sizeof(path), err, errlen);
    if (found != 0) {
        if (found > 0)
            snprintf(err, errlen, "steps %" PRId64 "-%" PRId64 " were not "
                     "finite and there is no checkpoint in %s/ckpt to roll "
                     "back to", first, s, c->run_dir);
        tr->st = at_s;
        return -1;
    }
    int rc = nf_rolled_back(&r->nf, tr->st.step);
    if (rc != 0) {
        snprintf(err, errlen, rc > 0 ? "steps %" PRId64 "-%" PRId64 " were "
                 "not finite after %d rollbacks without a good step between "
                 "them (the last to step %" PRId64 "): stopping "
                 "(nonfinite_patience=%d)" : "out of memory",
                 first, s, r->nf.rb_count, tr->st.step, c->nonfinite_patience);
        /* the caller logs the failed step s last: metrics.jsonl stays one
         * history (not a line for the checkpoint's step after s) */
        tr->st = at_s;
        return -1;
    }
    memset(&tr->win, 0, sizeof(tr->win)); /* as after a resume */
    log_warn(tr->g.world, "steps %" PRId64 "-%" PRId64 " were not finite: "
             "rolled back to %s (step %" PRId64 "); their batches are left "
             "out", first, s, path, tr->st.step);
    metrics_close(&r->mt);
    rc = metrics_open(&r->mt, tr->g.rank == 0 ? c->run_dir : NULL,
                      tr->st.step, err, errlen);
    if (comm_agree(tr->g.world, rc, NULL, 0) < 0)
        return -1;
    metrics_log_rollback(&r->mt, tr->st.step, s, r->nf.skip, r->nf.nskip);
    return 0;
}

/* One step, or its skip when the replay leaves its batch out. */
static void run_step(struct run *r, struct interval *iv, double *gnorm,
                     double *lr, struct step_times *tm)
{
    struct trainer *tr = &r->tr;
    memset(tm, 0, sizeof(*tm));
    if (nf_replay_skip(&r->nf, tr->st.step + 1)) {
        struct batch_shape sh; /* the plan's size of the step left out */
        batch_plan_at(&tr->plan, tr->st.step, &sh);
        *lr = lr_at(&tr->sched, tr->st.step);
        *gnorm = NAN;
        iv->loss_last = iv->loss_z = NAN;
        iv->last = sh;
        tm->skipped = NF_REPLAY;
        trainer_skip_step(tr, (int64_t)sh.B * sh.T);
        return;
    }
    struct step_batch b;
    double wait = 0.0;
    phase_enter(PHASE_DATA, "next batch", -1, -1, -1, NULL);
    loader_next(&r->ld, tr->st.step, &b, &wait);
    iv->loss_last = trainer_step_batch(tr, &b, gnorm, lr, tm);
    iv->loss_z = tm->loss_z;
    iv->tokens += (double)b.shape.B * b.shape.T;
    iv->last = b.shape;
    iv->data += wait;
}

/* After step s with verdict flags: warn, and stop or roll back as the
 * policy says.  Returns 0 (go on), 1 (rolled back: start the interval
 * again) or -1 with err (stop). */
static int nonfinite_step(struct run *r, struct interval *iv, int64_t s,
                          int flags, char *err, size_t errlen)
{
    struct trainer *tr = &r->tr;
    char why[160];
    if (!flags) {
        nf_after_step(&r->nf, s, 0);
        return 0;
    }
    nf_reason(flags, why, (int)sizeof(why));
    enum nf_action act = nf_after_step(&r->nf, s, flags);
    if (!(flags & NF_REPLAY))
        log_warn(tr->g.world, "step %" PRId64 ": %s: update skipped (%d in "
                 "a row, nonfinite=%s)", s, why, r->nf.run,
                 tr->c.nonfinite);
    if (act == NF_CONTINUE)
        return 0;
    if (act == NF_DO_STOP) {
        if (r->nf.policy == NF_ABORT)
            snprintf(err, errlen, "step %" PRId64 ": %s (nonfinite=abort)",
                     s, why);
        else
            snprintf(err, errlen, "steps %" PRId64 "-%" PRId64 ": %d "
                     "non-finite steps in a row (%s): the run has diverged "
                     "(nonfinite=skip, nonfinite_patience=%d)",
                     r->nf.run_first, s, r->nf.run, why,
                     tr->c.nonfinite_patience);
        return -1;
    }
    if (rollback(r, s, err, errlen) < 0)
        return -1;
    memset(iv, 0, sizeof(*iv));
    iv->t_start = now_s();
    return 1;
}

/* rebalance_every: re-split the shares from the last interval's times;
 * when they change, cut this rank's new slice from the next step on. */
static int resplit(struct run *r, char *err, size_t errlen)
{
    struct trainer *tr = &r->tr;
    char before[512], after[512];
    trainer_shares_string(tr, before, sizeof(before));
    int rc = trainer_rebalance(tr, err, errlen);
    if (rc <= 0)
        return rc;
    trainer_shares_string(tr, after, sizeof(after));
    loader_free(&r->ld);
    r->has_loader = 0;
    rc = loader_init(&r->ld, &r->train, &tr->plan, tr->g.dp_rank, tr->shares,
                     tr->c.seed, tr->c.doc_mask, tr->st.step, err, errlen);
    r->has_loader = rc == 0;
    if (comm_agree(tr->g.world, rc, err, errlen) < 0)
        return -1;
    log_info(tr->g.world, "step %" PRId64 ": data-parallel shares re-split "
             "from the last %d steps' times: %s -> %s sequences",
             tr->st.step, tr->c.rebalance_every, before, after);
    return 0;
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
        double gnorm, lr;
        struct step_times tm;
        phase_step(tr->st.step + 1);
        watchdog_debug_hang(c->debug_hang, tr->g.rank, tr->st.step + 1);
        run_step(r, &iv, &gnorm, &lr, &tm);
        iv.compute += tm.compute;
        iv.comm += tm.comm;
        iv.comm_hidden += tm.comm_overlapped;
        iv.wire += (double)tm.wire_bytes;
        iv.bubble += tm.bubble;
        iv.pp_wait += tm.pp_wait;
        iv.steps++;
        iv.skipped += tm.skipped != 0;
        iv.skip_flags |= tm.skipped;
        int64_t s = tr->st.step;
        int nf = nonfinite_step(r, &iv, s, tm.skipped, err, errlen);
        if (nf < 0) {
            log_step(r, &iv, gnorm, lr, NULL); /* the last line */
            return -1;
        }
        if (nf > 0)
            continue;
        if (c->debug_hold_step > 0 && s == c->debug_hold_step)
            hold_for_signal(s);
        int sig = agreed_signal(tr->g.world, &tr->wpg);
        int last = s == stop || sig;
        int do_val = r->any_val && ((c->val_every > 0 && s % c->val_every == 0)
                                    || s == c->steps);
        struct val_stats vs;
        double vby[2 * MIX_MAX];
        const char *vnames[MIX_MAX];
        if (do_val)
            validate(r, &vs, vby, vnames);
        /* the step's line before its save: a job killed in between
         * resumes from the previous checkpoint and drops the line (the
         * other order would lose it), so metrics.jsonl stays one history;
         * the save's time goes into the next line's ms_ckpt */
        if (s % c->log_every == 0 || last)
            log_step(r, &iv, gnorm, lr, do_val ? &vs : NULL);
        else if (do_val)
            metrics_log_val_stats(&r->mt, s, &vs,
                                  tr->g.rank == 0 ? stdout : NULL);
        int do_save = last || (c->ckpt_every > 0 && s % c->ckpt_every == 0);
        if (c->rebalance_every > 0 && s % c->rebalance_every == 0 && !last &&
            resplit(r, err, errlen) < 0)
            return -1;
        if (do_save && save(r, err, errlen) < 0)
            return -1;
        if (last && async_collect(r, err, errlen) < 0)
            return -1;
        if (sig && s < stop) {
            /* a batch script requeues the job on this line (and exit 0);
             * a signal during the last step changes nothing: the run is
             * done and says nothing of the signal */
            log_info(tr->g.world, "checkpoint saved at step %" PRId64
                     " after %s", s, signal_name(sig));
            break;
        }
    }
    if (r->saves > 0)
        log_info(tr->g.world, "checkpoint stall: %.1f ms per save over %d "
                 "save(s)%s", 1e3 * r->stall_s / r->saves, r->saves,
                 r->async ? " (asynchronous)" : "");
    if (tr->has_zx && tr->zx.has_comm) { /* every dp group's, summed */
        uint64_t n[2] = {tr->zx.zc.nstarted, tr->zx.zc.nshm};
        MPI_Allreduce(MPI_IN_PLACE, n, 2, MPI_UINT64_T, MPI_SUM,
                      tr->g.world);
        log_info(tr->g.world, "zero=%d: %" PRIu64 " reduce-scatters and "
                 "all-gathers, %" PRIu64 " of them in shared memory (all "
                 "ranks)", tr->zx.stage, n[0], n[1]);
    }
    return 0;
}

int train_main(const struct config *c)
{
    struct run r;
    struct watchdog *wd = NULL;
    memset(&r, 0, sizeof(r));
    char err[1024] = "";
    phase_enter(PHASE_SETUP, "set-up", -1, -1, -1, NULL);
    int rc = watchdog_start(&wd, MPI_COMM_WORLD, c->hang_timeout, c->run_dir,
                            err, sizeof(err));
    if (comm_agree(MPI_COMM_WORLD, rc, NULL, 0) < 0) {
        if (err[0])
            log_error("%s", err);
        watchdog_stop(wd);
        return 1;
    }
    rc = setup(&r, c, err, sizeof(err));
    if (rc == 0) {
        log_info(MPI_COMM_WORLD, "training %" PRId64 " parameters, "
                 "%d steps of %d x %d tokens (micro_batch %d x %d), "
                 "vocabulary %d, precision %s", gpt_num_params(&r.tr.m.cfg),
                 c->steps, c->batch_size, c->seq_len, r.tr.mb, r.tr.accum,
                 r.tr.c.vocab_size, r.tr.precision);
        rc = loop(&r, err, sizeof(err));
    }
    if (rc < 0 && err[0])
        log_error("%s", err);
    phase_enter(PHASE_SETUP, "shutdown", -1, -1, -1, NULL);
    teardown(&r);
    watchdog_stop(wd);
    return rc < 0 ? 1 : 0;
}
