/*
 * train_setup.c - building a trainer: the layout checks, the dp, ZeRO, tp
 * and pipeline-stage set-up, tied embeddings, precision, the measured
 * peak, and tearing it down.  The optimizer step is train.c.
 */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "gemm.h"
#include "log.h"
#include "mem_report.h"
#include "peak.h"

static int check_layout(struct trainer *tr, char *err, size_t errlen)
{
    const struct config *c = &tr->c;
    const struct grid *g = &tr->g;
    if (g->tp > 1 && g->dp > 1 && strcmp(c->compress, "none") != 0 &&
        strcmp(c->compress, "fp16") != 0 && strcmp(c->compress, "bf16") != 0) {
        /* each tp rank buckets a different set of tensors, so a codec that
         * selects or scales per bucket would compress the replicated
         * tensors' gradients differently on each tp rank and their copies
         * would drift apart */
        snprintf(err, errlen, "compress=%s with tp=%d: only none, fp16 and "
                 "bf16 keep the replicated tensors identical across "
                 "tensor-parallel ranks", c->compress, g->tp);
        return -1;
    }
    tr->balanced = !strcmp(c->balance, "on") || c->rebalance_every > 0;
    if (tr->balanced && c->zero >= 2 && g->dp > 1) {
        /* stages 2 and 3 reduce (and 3 gathers) per micro-batch, in
         * lockstep over the dp group; shares by speed give the ranks
         * different micro-batch counts */
        char key[48];
        if (!strcmp(c->balance, "on"))
            snprintf(key, sizeof key, "balance=on");
        else
            snprintf(key, sizeof key, "rebalance_every=%d",
                     c->rebalance_every);
        snprintf(err, errlen, "%s with zero=%d: ZeRO stages 2 and 3 "
                 "reduce every micro-batch over the data-parallel ranks, "
                 "so they must all run the same number of micro-batches, "
                 "and shares by speed differ; use zero=1 (which reduces "
                 "once per step) or balance=off and rebalance_every=0",
                 key, c->zero);
        return -1;
    }
    if (tr->balanced) { /* shares of any size: micro-batches up to mb */
        if (c->batch_size < g->dp) {
            snprintf(err, errlen, "batch_size=%d is less than dp=%d: with "
                     "balance=on or rebalance_every, every data-parallel "
                     "rank still takes at least one sequence",
                     c->batch_size, g->dp);
            return -1;
        }
        tr->mb = c->micro_batch ? c->micro_batch
                                : (c->batch_size + g->dp - 1) / g->dp;
        /* a constant plan (config.c refuses batch_ramp and seq_len_warmup
         * with balance): every step is full-size, run by the shares */
        tr->plan = (struct batch_plan){.batch_size = c->batch_size,
                                       .seq_len = c->seq_len, .dp = g->dp,
                                       .mb = tr->mb};
        return 0;
    }
    if (c->batch_size % g->dp != 0) {
        snprintf(err, errlen, "batch_size=%d is not divisible by dp=%d",
                 c->batch_size, g->dp);
        return -1;
    }
    tr->per_rank = c->batch_size / g->dp;
    tr->mb = c->micro_batch ? c->micro_batch : tr->per_rank;
    if (tr->per_rank % tr->mb != 0) {
        snprintf(err, errlen, "micro_batch=%d does not divide the %d "
                 "sequences per data-parallel rank (batch_size=%d / dp=%d)",
                 tr->mb, tr->per_rank, c->batch_size, g->dp);
        return -1;
    }
    tr->accum = tr->per_rank / tr->mb;
    struct batch_plan *pl = &tr->plan;
    pl->batch_size = c->batch_size;
    pl->seq_len = c->seq_len;
    pl->dp = g->dp;
    pl->mb = tr->mb;
    if (batch_spec_parse(c->batch_ramp, &pl->ramp_start, &pl->ramp_steps,
                         err, errlen) < 0 ||
        batch_spec_parse(c->seq_len_warmup, &pl->sl_start, &pl->sl_steps,
                         err, errlen) < 0)
        return -1; /* config_set checked them */
    return batch_plan_check(pl, err, errlen);
}

/*
 * Data parallelism.  Backward produces gradients in reverse table order
 * (head, last block, ..., first block, embedding), so the production order
 * is the table reversed and its tensors abut in memory: buckets reduce in
 * place.  Events: index 0 = head, 1 + l = block l, 1 + n_layer = embedding.
 */
static int event_of(const struct gpt *m, const struct tensor_desc *d)
{
    if (d->layer >= 0)
        return 1 + d->layer;
    return strncmp(d->name, "lnf.", 4) == 0 ? 0 : 1 + m->cfg.n_layer;
}

static void dp_hook(void *ctx, enum gpt_event ev, int layer)
{
    struct trainer *tr = ctx;
    if (tr->has_zx)
        zero_exec_event(&tr->zx, ev, layer);
    if (!tr->has_dp || ev > GPT_PROGRESS)
        return;
    if (ev == GPT_PROGRESS) {
        bucketer_progress(&tr->bk);
        return;
    }
    int e = ev == GPT_GRADS_HEAD ? 0 : ev == GPT_GRADS_LAYER ? 1 + layer
                                                            : 1 + tr->m.cfg.n_layer;
    for (int k = 0; k < tr->ev_count[e]; k++)
        bucketer_ready(&tr->bk, tr->ev_first[e] + k);
    bucketer_progress(&tr->bk);
}

/* ZeRO and offload: the shards and the executor of their reductions,
 * over the dp group (built here for zero >= 1 even at dp = 1). */
static int zero_init(struct trainer *tr, char *err, size_t errlen)
{
    const struct config *c = &tr->c;
    int off = strcmp(c->offload, "optimizer") == 0;
    if (c->zero == 0 && !off)
        return 0;
    if (c->zero > 0 && !tr->has_dpg) {
        if (comm_group_init(&tr->dpg, tr->g.dp_comm, tr->g.node) < 0) {
            snprintf(err, errlen, "cannot build the data-parallel group");
            return -1;
        }
        tr->has_dpg = 1;
        tr->dpg.pg.name = "dp group"; /* the hang watchdog's reports */
    }
    if (c->zero >= 2) {
        /* stages 2 and 3 reduce (and 3 gathers) per micro-batch: every dp
         * rank of a stage must run as many micro-batches (stage 1 reduces
         * once per step and takes unequal shares) */
        int mm[2] = {tr->accum, -tr->accum};
        MPI_Allreduce(MPI_IN_PLACE, mm, 2, MPI_INT, MPI_MAX, tr->g.dp_comm);
        if (mm[0] != -mm[1]) {
            snprintf(err, errlen, "zero=%d needs the same number of "
                     "micro-batches on every data-parallel rank (they run "
                     "%d to %d); use zero=1 with unequal batch shares",
                     c->zero, -mm[1], mm[0]);
            return -1;
        }
    }
    if (zero_exec_init(&tr->zx, &tr->m, c->zero, c->zero ? &tr->dpg : NULL,
                       &tr->pl.sc, &tr->pl.ev, off ? c->offload_dir : NULL,
                       tr->g.rank, c->seed, err, errlen) < 0) {
        zero_exec_free(&tr->zx);
        return -1;
    }
    tr->has_zx = 1;
    if (c->zero == 1 && tr->g.dp > 1 && !tr->has_shm &&
        !strcmp(c->allreduce, "shm")) { /* uniform: has_shm is agreed */
        snprintf(err, errlen, "allreduce=shm: the gradients are not in "
                 "shared memory (it needs every rank of the data-parallel "
                 "group on one node, zero 0 or 1 and compress=none)");
        return -1;
    }
    if (tr->has_shm)
        log_info(tr->g.world, "zero=%d: reduce-scatters and gathers in "
                 "memory the dp ranks share (gradients and parameters, "
                 "mapped from %s)", c->zero,
                 c->shm_dir[0] ? c->shm_dir : COMM_SHM_DIR);
    tr->m.hook = dp_hook;
    tr->m.hook_ctx = tr;
    return 0;
}

/* Every rank of the dp group must pick the same algorithm for a bucket:
 * the group's rank 0's thresholds win (a node-local file may differ from
 * node to node); a rank whose own file said otherwise says so. */
static void tune_agree(const struct trainer *tr, struct allreduce_tune *t)
{
    struct allreduce_tune mine = *t;
    MPI_Bcast(t, (int)sizeof *t, MPI_BYTE, 0, tr->dpg.comm);
    if (mine.small_max != t->small_max || mine.hier_min != t->hier_min)
        fprintf(stderr, "mpitron: rank %d: warning: allreduce_tune=%s gives "
                "small_max %zu, hier_min %zu here; using the dp group's "
                "rank 0's %zu, %zu\n", tr->g.rank, tr->c.allreduce_tune,
                mine.small_max, mine.hier_min, t->small_max, t->hier_min);
}

/* One line on world rank 0: how its stage's gradient buckets reduce. */
static void dp_report(const struct trainer *tr)
{
    const struct bucketer *bk = &tr->bk;
    char what[256] = "";
    size_t len = 0;
    for (int i = 0; i < bk->nb && len < sizeof what - 32; i++) {
        const char *nm = bk->b[i].algo->name;
        int seen = 0, k = 0;
        for (int j = 0; j < bk->nb; j++)
            if (!strcmp(bk->b[j].algo->name, nm)) {
                seen |= j < i;
                k++;
            }
        if (!seen)
            len += (size_t)snprintf(what + len, sizeof what - len, "%s%s x%d",
                                    len ? ", " : "", nm, k);
    }
    if (bk->compress)
        log_info(tr->g.world, "gradient all-reduce: %d bucket(s), "
                 "compress=%s", bk->nb, tr->c.compress);
    else
        log_info(tr->g.world, "gradient all-reduce: %d bucket(s): %s%s%s%s",
                 bk->nb, what, tr->has_shm ? " (gradients in memory the dp "
                 "ranks share, mapped from " : "",
                 tr->has_shm ? (tr->c.shm_dir[0] ? tr->c.shm_dir
                                                 : COMM_SHM_DIR) : "",
                 tr->has_shm ? ")" : "");
}

static int dp_init(struct trainer *tr, char *err, size_t errlen)
{
    const struct config *c = &tr->c;
    struct gpt *m = &tr->m;
    if (tr->g.dp == 1 || c->zero > 0)
        return 0;
    int n = m->tt.n, ne = m->cfg.n_layer + 2;
    struct bucket_tensor *bt = calloc((size_t)n, sizeof(*bt));
    tr->ev_first = calloc((size_t)ne, sizeof(int));
    tr->ev_count = calloc((size_t)ne, sizeof(int));
    if (!bt || !tr->ev_first || !tr->ev_count) {
        free(bt);
        snprintf(err, errlen, "out of memory planning buckets");
        return -1;
    }
    for (int p = 0; p < n; p++) {
        const struct tensor_desc *d = &m->tt.t[n - 1 - p];
        int e = event_of(m, d);
        if (tr->ev_count[e]++ == 0)
            tr->ev_first[e] = p;
        bt[p].off = d->off;
        bt[p].numel = d->numel;
        bt[p].rows = d->ndim == 2 ? (size_t)d->count[0] : d->numel;
        bt[p].cols = d->ndim == 2 ? (size_t)d->count[1] : 0;
    }
    int rc = 0;
    if (!tr->has_dpg) { /* grads_shm_init may have built it */
        rc = comm_group_init(&tr->dpg, tr->g.dp_comm, tr->g.node);
        tr->has_dpg = rc == 0;
        if (rc == 0)
            tr->dpg.pg.name = "dp group";
    }
    struct allreduce_tune tune;
    allreduce_tune_defaults(&tune);
    if (rc == 0 && c->allreduce_tune[0]) {
        rc = comm_agree(tr->dpg.comm, allreduce_tune_load(
                            &tune, c->allreduce_tune, err, errlen),
                        err, errlen);
        if (rc == 0)
            tune_agree(tr, &tune);
    }
    if (rc == 0)
        rc = bucketer_init(&tr->bk, &tr->dpg, m->grads, bt, n,
                           (size_t)((double)c->bucket_mb * 1048576.0),
                           c->allreduce, &tune, c->compress,
                           c->compress_warmup, c->seed, err, errlen);
    free(bt);
    if (rc < 0)
        return -1;
    tr->has_dp = 1;
    dp_report(tr);
    tr->st_p = calloc((size_t)tr->bk.nb, sizeof(float *));
    tr->st_len = calloc((size_t)tr->bk.nb, sizeof(size_t));
    if (!tr->st_p || !tr->st_len) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < tr->bk.nb; i++)
        bucketer_state(&tr->bk, i, &tr->st_p[i], &tr->st_len[i]);
    m->hook = dp_hook;
    m->hook_ctx = tr;
    return 0;
}

/* Tensor parallelism: the tp group and scratch for the model's
 * all-reduces of (micro_batch * seq_len, n_embd) activations.  Collective
 * over the tp communicator; tp = 1 builds nothing. */
static int tp_init(struct trainer *tr, char *err, size_t errlen)
{
    if (tr->g.tp == 1)
        return 0;
    size_t n = (size_t)tr->mb * (size_t)tr->c.seq_len *
               (size_t)tr->m.cfg.n_embd;
    if (tp_ctx_init(&tr->tpc, tr->g.tp_comm, tr->g.node, n, err, errlen) < 0)
        return -1;
    tr->has_tp = 1;
    tr->m.tpc = &tr->tpc;
    return 0;
}

int trainer_pipeline_build(struct trainer *tr, enum pp_kind kind, char *err,
                           size_t errlen)
{
    const struct grid *g = &tr->g;
    if (pipeline_init(&tr->pl, &tr->m, g->pp_comm, g->pp, g->pp_rank, kind,
                      tr->accum, tr->mb, tr->c.seq_len, err, errlen) < 0)
        return -1; /* pipeline_init freed what it had built */
    tr->has_acts = 1; /* from here trainer_free frees it */
    for (int k = 1; !tr->balanced && k < tr->accum; k++) /* the batch
                                                  ramp's smaller steps */
        if (batch_plan_uses_accum(&tr->plan, k) &&
            pipeline_add_schedule(&tr->pl, kind, k, err, errlen) < 0)
            return -1;
    pipeline_set_sizes(&tr->pl, tr->mb_sizes);
    if (pipeline_set_slow(&tr->pl, &tr->m, tr->slow) < 0) {
        snprintf(err, errlen, "out of memory for debug_slow_rank's scratch");
        return -1;
    }
    return 0;
}

/* The gradient arena in memory the dp ranks share, so that the buckets
 * reduce it without messages (comm/ar_shm.c): asked for with
 * allreduce=shm, taken by auto whenever it can, which needs zero <= 1
 * (zero = 0: the buckets reduce the whole arena; 1: ZeRO reduce-scatters
 * it by unit and gathers the parameter arena, which is shared too; 2 and
 * 3 reduce staging buffers and shards of their own) and no compression
 * (the codecs send their own messages).  Uniform over the ranks (the
 * config is). */
static int grads_shm_wanted(const struct trainer *tr)
{
    const struct config *c = &tr->c;
    return tr->g.dp > 1 && c->zero <= 1 && !strcmp(c->compress, "none") &&
           (!strcmp(c->allreduce, "auto") || !strcmp(c->allreduce, "shm"));
}

/* Build the dp group and map the gradient arena shared over it (zero=1:
 * the parameter arena after it in the same segment); with auto, a
 * failure (no room in /dev/shm) falls back to private arenas with a
 * warning.  Collective over the dp group. */
static int grads_shm_init(struct trainer *tr, char *err, size_t errlen)
{
    struct gpt *m = &tr->m;
    if (comm_group_init(&tr->dpg, tr->g.dp_comm, tr->g.node) < 0) {
        snprintf(err, errlen, "cannot build the data-parallel group");
        return -1;
    }
    tr->has_dpg = 1;
    tr->dpg.pg.name = "dp group";
    char why[256] = "";
    /* zero=1: the parameters from the first 4 KiB boundary after the
     * gradients (a page on most systems) */
    size_t n = m->tt.total, pofs = (n + 1023) & ~(size_t)1023;
    size_t need = tr->c.zero == 1 ? pofs + n : n;
    if (comm_shm_init(&tr->shm, &tr->dpg, need, tr->c.shm_dir, why,
                      sizeof why) == 0) {
        float *seg = tr->shm.buf[tr->shm.rank];
        tr->has_shm = 1;
        tr->dpg.shm = &tr->shm;
        if (tr->c.zero == 1 && gpt_attach_params(m, seg + pofs) < 0)
            return -1;
        return gpt_attach_grads(m, seg);
    }
    if (!strcmp(tr->c.allreduce, "shm")) {
        snprintf(err, errlen, "allreduce=shm: %s", why);
        return -1;
    }
    log_warn(tr->dpg.comm, "allreduce=auto: %s; reducing the gradients by "
             "messages instead", why);
    return gpt_attach_grads(m, NULL);
}

/* Pipeline stages (boundaries from trainer_balance_init): build this
 * stage's model and its schedule. */
static int stage_init(struct trainer *tr, const struct gpt_config *gc,
                      char *err, size_t errlen)
{
    const struct grid *g = &tr->g;
    /* collective over the dp group: before anything here can fail */
    int shm = grads_shm_wanted(tr) && comm_shm_possible(g->dp_comm, g->node);
    tr->stage_busy = calloc((size_t)g->pp, sizeof(double));
    tr->stage_idle = calloc((size_t)g->pp, sizeof(double));
    int rc = tr->stage_busy && tr->stage_idle ? 0 : -1;
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    int l0 = tr->bound[g->pp_rank], l1 = tr->bound[g->pp_rank + 1];
    /* the arenas ZeRO and offload do not replace with shards, nor shm */
    int z = tr->c.zero, arenas = GPT_ARENA_ALL;
    if (z > 0 || strcmp(tr->c.offload, "optimizer") == 0)
        arenas &= ~GPT_ARENA_MOMENTS;
    if (z >= 2 || shm)
        arenas &= ~GPT_ARENA_GRADS;
    if (z >= 3)
        arenas &= ~GPT_ARENA_PARAMS;
    if (rc == 0)
        rc = gpt_init_arenas(&tr->m, gc, g->tp, g->tp_rank, l0, l1,
                             tr->c.seed, arenas, err, errlen);
    tr->has_model = rc == 0;
    if (shm) { /* every dp rank fails with the failing rank's message */
        rc = comm_agree(g->dp_comm, rc, err, errlen);
        if (rc == 0)
            rc = grads_shm_init(tr, err, errlen);
    }
    if (rc < 0) {
        if (!err[0])
            snprintf(err, errlen, "out of memory allocating the gradients");
        return -1;
    }
    enum pp_kind kind = PP_1F1B; /* one stage: gpipe would only hold all
                                    micro-batches' activations at once */
    if (g->pp > 1)
        pp_kind_parse(tr->c.pp_schedule, &kind);
    return trainer_pipeline_build(tr, kind, err, errlen);
}

/* The tied embedding: wte lives on the first stage (embedding) and the
 * last (LM head); their gradients are summed over this pair after the
 * data-parallel reduction.  Collective over world. */
static int tie_init(struct trainer *tr)
{
    const struct grid *g = &tr->g;
    tr->tie_comm = MPI_COMM_NULL;
    if (g->pp == 1)
        return 0;
    int in = tr->m.first || tr->m.last;
    int color = in ? g->dp_rank * g->tp + g->tp_rank : MPI_UNDEFINED;
    if (MPI_Comm_split(g->world, color, g->pp_rank, &tr->tie_comm) !=
        MPI_SUCCESS)
        return -1;
    tr->has_tie = 1;
    return 0;
}

/* Precision: the fp32 products' library, and bf16 only where every rank
 * has bf16 instructions (else fp32 everywhere, with the reason).
 * Collective over world. */
static void precision_init(struct trainer *tr, struct gpt_config *gc)
{
    enum gemm_fp32_mode mode = GEMM_FP32_AUTO;
    gemm_fp32_mode_parse(tr->c.fp32_gemm, &mode); /* checked by config */
    gemm_set_fp32_mode(mode);
    char why[256] = "";
    int ok = gc->precision != GPT_BF16 || gemm_bf16_supported(why, sizeof(why));
    int all = ok;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, tr->g.world);
    if (!all) {
        if (!ok)
            fprintf(stderr, "mpitron: rank %d: %s\n", tr->g.rank, why);
        log_warn(tr->g.world, "precision=bf16: a rank's CPU has no bf16 "
                 "instructions (oneDNN would emulate them, slower than "
                 "fp32): training in fp32 (fp32_gemm=%s)",
                 gemm_fp32_mode_name(mode));
        gc->precision = GPT_FP32;
    }
    snprintf(tr->precision, sizeof(tr->precision), "%s",
             gc->precision == GPT_BF16 ? "bf16" : "fp32");
}

static int trainer_build(struct trainer *tr, const struct config *c,
                         MPI_Comm world, char *err, size_t errlen)
{
    memset(tr, 0, sizeof(*tr));
    tr->c = *c;
    if (grid_init(&tr->g, world, c->dp, c->tp, c->pp, c->ranks_per_node,
                  err, errlen) < 0)
        return -1;
    tr->has_grid = 1;
    if (comm_agree(world, phase_group_init(&tr->wpg, "job", world), NULL,
                   0) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (check_layout(tr, err, errlen) < 0)
        return -1; /* same decision on every rank */
    /* the tuning file is read again where buckets are planned (dp > 1,
     * zero = 0); a bad one is an error whatever the layout */
    struct allreduce_tune tune;
    if (c->allreduce_tune[0] &&
        comm_agree(world, allreduce_tune_load(&tune, c->allreduce_tune, err,
                                              errlen), err, errlen) < 0)
        return -1;
    struct gpt_config gc;
    gpt_config_from(c, &gc);
    if (gpt_config_check(&gc, tr->g.tp, err, errlen) < 0)
        return -1;
    /* bind and size the thread pools before any arena is allocated, so
     * that its pages are first touched on this rank's NUMA node */
    tr->has_place = 1; /* place_free is safe on a failed placement */
    if (comm_agree(world, place_init(&tr->place, world, c->bind, c->threads,
                                     err, errlen), err, errlen) < 0)
        return -1;
    precision_init(tr, &gc); /* before calibration: it times these kernels */
    if (trainer_balance_init(tr, &gc, err, errlen) < 0)
        return -1; /* every rank agrees inside */
    if (comm_agree(world, stage_init(tr, &gc, err, errlen), err, errlen) < 0)
        return -1;
    if (comm_agree(world, tie_init(tr), NULL, 0) < 0) {
        snprintf(err, errlen, "could not build the tied-embedding group");
        return -1;
    }
    if (comm_agree(world, tp_init(tr, err, errlen), err, errlen) < 0)
        return -1;
    if (comm_agree(world, dp_init(tr, err, errlen), err, errlen) < 0)
        return -1;
    if (comm_agree(world, zero_init(tr, err, errlen), err, errlen) < 0)
        return -1;
    tr->optim = !strcmp(c->optimizer, "lamb") ? OPT_LAMB
                : !strcmp(c->optimizer, "onebit_adam") ? OPT_ONEBIT
                                                       : OPT_ADAMW;
    tr->lamb_ss = calloc(2 * (size_t)(tr->m.tt.n ? tr->m.tt.n : 1),
                         sizeof(double));
    if (!tr->lamb_ss) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (tr->optim == OPT_ONEBIT && tr->has_dp && tr->bk.compress)
        bucketer_set_momentum(&tr->bk, tr->m.m, c->beta1);
    tr->nan_rank = -1;
    if (c->debug_nan[0]) { /* checked by config: R:STEP:grad|weight */
        long long st = 0;
        char what[8] = "";
        sscanf(c->debug_nan, "%d:%lld:%7[a-z]", &tr->nan_rank, &st, what);
        tr->nan_step = st;
        tr->nan_weight = strcmp(what, "weight") == 0;
    }
    lr_kind_parse(c->lr_schedule, &tr->sched.kind);
    tr->sched.lr = c->lr;
    tr->sched.min_lr = c->min_lr;
    tr->sched.warmup = c->warmup_steps;
    tr->sched.steps = c->steps;
    tr->sched.cycle = c->lr_cycle;
    return 0;
}

int trainer_init(struct trainer *tr, const struct config *c, MPI_Comm world,
                 char *err, size_t errlen)
{
    struct config cc = *c;
    if (c->micro_batch == CONFIG_MB_AUTO) {
        /* the layout at micro-batches of 1 gives every role that does not
         * depend on the micro-batch; mem_report computes the rest */
        cc.micro_batch = 1;
        int mb = 0, rc = trainer_build(tr, &cc, world, err, errlen);
        if (rc == 0)
            rc = mem_budget_pick(tr, &mb, err, errlen);
        trainer_free(tr);
        if (rc < 0)
            return -1;
        cc.micro_batch = mb;
    }
    if (trainer_build(tr, &cc, world, err, errlen) < 0)
        return -1;
    if (c->mem_budget_mb > 0 &&
        comm_agree(world, mem_budget_check(tr, err, errlen), err, errlen) < 0)
        return -1;
    trainer_measure_peak(tr, 0);
    return 0;
}

void trainer_measure_peak(struct trainer *tr, int careful)
{
    int bf = tr->m.cfg.precision == GPT_BF16;
    double p[2] = {0.0, 0.0}; /* the precision used, fp32 */
    /* phases of their own: the watchdog's clock restarts at each (the
     * measurement is seconds of compute on a loaded machine) */
    phase_enter(PHASE_SETUP, "measuring the GEMM peak for MFU", -1, -1, -1,
                NULL);
    /* MPITRON_PEAK_GFLOPS: this rank's peak (both precisions) given, not
     * measured (valgrind runs the measurement some 50x slower) */
    const char *given = getenv("MPITRON_PEAK_GFLOPS");
    if (given && atof(given) > 0.0) {
        p[0] = p[1] = atof(given);
    } else {
        p[0] = careful ? gemm_peak_gflops(bf ? GEMM_BF16 : GEMM_F32, 6)
                       : gemm_peak_quick(bf ? GEMM_BF16 : GEMM_F32);
        p[1] = !bf ? p[0]
                   : careful ? gemm_peak_gflops(GEMM_F32, 6)
                             : gemm_peak_quick(GEMM_F32);
    }
    double sum[2];
    phase_enter(PHASE_COLLECTIVE, "GEMM peak sum", -1, -1, -1, &tr->wpg);
    MPI_Allreduce(p, sum, 2, MPI_DOUBLE, MPI_SUM, tr->g.world);
    phase_enter(PHASE_SETUP, "set-up", -1, -1, -1, NULL);
    tr->peak_gflops = sum[0];
    tr->peak_fp32_gflops = sum[1];
    tr->peak_own_gflops = p[0];
}

void trainer_free(struct trainer *tr)
{
    if (tr->has_zx)
        zero_exec_free(&tr->zx);
    if (tr->has_dp)
        bucketer_free(&tr->bk);
    if (tr->has_dpg)
        comm_group_free(&tr->dpg);
    if (tr->has_tp)
        tp_ctx_free(&tr->tpc);
    free(tr->ev_first);
    free(tr->ev_count);
    free(tr->st_p);
    free(tr->st_len);
    if (tr->has_acts)
        pipeline_free(&tr->pl);
    if (tr->has_tie && tr->tie_comm != MPI_COMM_NULL)
        MPI_Comm_free(&tr->tie_comm);
    free(tr->bound);
    trainer_balance_free(tr);
    free(tr->stage_busy);
    free(tr->stage_idle);
    free(tr->lamb_ss);
    if (tr->has_model)
        gpt_free(&tr->m);
    if (tr->has_shm)
        comm_shm_free(&tr->shm);
    phase_group_free(&tr->wpg);
    if (tr->has_grid)
        grid_free(&tr->g);
    if (tr->has_place)
        place_free(&tr->place);
    memset(tr, 0, sizeof(*tr));
}

void trainer_rank_state(struct trainer *tr, struct rank_state *rs)
{
    rs->kind = "residual";
    rs->n = tr->has_dp && tr->bk.compress ? tr->bk.nb : 0;
    rs->p = tr->st_p;
    rs->len = tr->st_len;
}
