/*
 * train.c - trainer set-up and the optimizer step.  The run loop
 * (resume, logging, validation, checkpoints) is in run.c.
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
    tr->m.hook = dp_hook;
    tr->m.hook_ctx = tr;
    return 0;
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
    int rc = comm_group_init(&tr->dpg, tr->g.dp_comm, tr->g.node);
    tr->has_dpg = rc == 0;
    if (rc == 0)
        tr->dpg.pg.name = "dp group";
    struct allreduce_tune tune;
    allreduce_tune_defaults(&tune);
    if (rc == 0 && c->allreduce_tune[0])
        rc = allreduce_tune_load(&tune, c->allreduce_tune, err, errlen);
    if (rc == 0)
        rc = bucketer_init(&tr->bk, &tr->dpg, m->grads, bt, n,
                           (size_t)((double)c->bucket_mb * 1048576.0),
                           c->allreduce, &tune, c->compress,
                           c->compress_warmup, c->seed, err, errlen);
    free(bt);
    if (rc < 0)
        return -1;
    tr->has_dp = 1;
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

/* Pipeline stages (boundaries from trainer_balance_init): build this
 * stage's model and its schedule. */
static int stage_init(struct trainer *tr, const struct gpt_config *gc,
                      char *err, size_t errlen)
{
    const struct grid *g = &tr->g;
    tr->stage_busy = calloc((size_t)g->pp, sizeof(double));
    tr->stage_idle = calloc((size_t)g->pp, sizeof(double));
    if (!tr->stage_busy || !tr->stage_idle) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int l0 = tr->bound[g->pp_rank], l1 = tr->bound[g->pp_rank + 1];
    /* the arenas ZeRO and offload do not replace with shards */
    int z = tr->c.zero, arenas = GPT_ARENA_ALL;
    if (z > 0 || strcmp(tr->c.offload, "optimizer") == 0)
        arenas &= ~GPT_ARENA_MOMENTS;
    if (z >= 2)
        arenas &= ~GPT_ARENA_GRADS;
    if (z >= 3)
        arenas &= ~GPT_ARENA_PARAMS;
    if (gpt_init_arenas(&tr->m, gc, g->tp, g->tp_rank, l0, l1, tr->c.seed,
                        arenas, err, errlen) < 0)
        return -1;
    tr->has_model = 1;
    enum pp_kind kind = PP_1F1B; /* one stage: gpipe would only hold all
                                    micro-batches' activations at once */
    if (g->pp > 1)
        pp_kind_parse(tr->c.pp_schedule, &kind);
    if (pipeline_init(&tr->pl, &tr->m, g->pp_comm, g->pp, g->pp_rank, kind,
                      tr->accum, tr->mb, tr->c.seq_len, err, errlen) < 0)
        return -1;
    for (int k = 1; !tr->balanced && k < tr->accum; k++) /* the batch
                                                  ramp's smaller steps */
        if (batch_plan_uses_accum(&tr->plan, k) &&
            pipeline_add_schedule(&tr->pl, kind, k, err, errlen) < 0)
            return -1;
    tr->has_acts = 1;
    pipeline_set_sizes(&tr->pl, tr->mb_sizes);
    if (pipeline_set_slow(&tr->pl, &tr->m, tr->slow) < 0) {
        snprintf(err, errlen, "out of memory for debug_slow_rank's scratch");
        return -1;
    }
    return 0;
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

/* Global gradient norm.  Under tp, the sharded tensors' squares are summed
 * over the tp group and the replicated ones (identical on every tp rank)
 * counted once; under pp, the stages' sums are added in stage order and
 * the last stage's tied copy of wte is left out (the first stage counts
 * it).  Every rank gets the same bits. */
static double grad_norm(struct trainer *tr)
{
    const struct gpt *m = &tr->m;
    double shard = 0.0, rep = 0.0;
    /* the last stage's tied copy of wte: the first stage counts it */
    int skip = !m->first && m->last ? tensor_table_find(&m->tt, "wte") : -1;
    if (tr->has_zx && tr->zx.stage > 0) /* from the shards, over dp */
        zero_exec_sumsq(&tr->zx, skip, &shard, &rep);
    for (int i = 0; !(tr->has_zx && tr->zx.stage > 0) && i < m->tt.n; i++) {
        const struct tensor_desc *d = &m->tt.t[i];
        if (i == skip)
            continue;
        double s = sumsq(m->grads + d->off, d->numel);
        if (d->tp_dim >= 0)
            shard += s;
        else
            rep += s;
    }
    double t0 = now_s();
    if (m->tp > 1)
        shard = tp_sum_double(shard, &tr->tpc);
    tr->m.op_time[OPK_TP_COMM] += now_s() - t0;
    double mine = shard + rep, total = mine;
    if (tr->g.pp > 1) {
        double all[tr->g.pp];
        phase_enter(PHASE_COLLECTIVE, "gradient-norm sum over the stages", -1,
                    -1, -1, &tr->wpg);
        MPI_Allgather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE,
                      tr->g.pp_comm);
        total = 0.0;
        for (int s = 0; s < tr->g.pp; s++)
            total += all[s];
    }
    return sqrt(total);
}

/* Sum the tied embedding's two halves (embedding on the first stage,
 * head on the last) after the data-parallel reduction: a + b == b + a, so
 * both copies get the same bits and stay identical.  Aborts on MPI
 * error. */
static void tie_reduce(struct trainer *tr)
{
    if (!tr->has_tie || tr->tie_comm == MPI_COMM_NULL)
        return;
    size_t n = (size_t)gpt_vocab_padded(tr->m.cfg.vocab_size) *
               (size_t)tr->m.cfg.n_embd;
    phase_enter(PHASE_COLLECTIVE, "tied-embedding gradient sum of the "
                "first and last stage", -1, -1, -1, &tr->wpg);
    float *g = tr->m.dwte;
    if (tr->has_zx && tr->zx.stage > 0) /* this rank's chunk of it: wte is
                             cut alike on both stages, so their chunks match */
        g = zero_exec_grad_of(&tr->zx, tensor_table_find(&tr->m.tt, "wte"),
                              &n);
    for (size_t off = 0; off < n; off += (size_t)1 << 30) { /* int counts */
        size_t k = n - off < (size_t)1 << 30 ? n - off : (size_t)1 << 30;
        if (MPI_Allreduce(MPI_IN_PLACE, g + off, (int)k, MPI_FLOAT,
                          MPI_SUM, tr->tie_comm) != MPI_SUCCESS) {
            fprintf(stderr, "mpitron: rank %d: tied-embedding reduction "
                    "failed\n", tr->g.rank);
            MPI_Abort(tr->g.world, 3);
        }
    }
}

/* The tied embedding as this rank holds it: whole, or its ZeRO chunk;
 * p[0..2]: parameters, m, v; *n floats each. */
static void tied_copy(struct trainer *tr, float **p, size_t *n)
{
    struct gpt *m = &tr->m;
    int t = tensor_table_find(&m->tt, "wte");
    const struct model_shards *sh = m->shards;
    *n = m->tt.t[t].numel; /* the padded vocabulary's rows */
    size_t off = m->tt.t[t].off;
    p[0] = m->params ? m->params + off : NULL;
    p[1] = m->m ? m->m + off : NULL;
    p[2] = m->v ? m->v + off : NULL;
    for (int i = 0; sh && i < sh->nseg; i++)
        if (sh->seg[i].tensor == t) { /* this rank's run of wte */
            size_t so = sh->seg[i].shard_off;
            if (sh->params) {
                p[0] = sh->p + so;
                *n = sh->seg[i].len;
            } else {
                p[0] = m->params + off + sh->seg[i].t_off;
            }
            p[1] = sh->m + so;
            p[2] = sh->v + so;
            *n = sh->seg[i].len;
            return;
        }
    if (sh)
        *n = 0; /* holds none of it */
}

int trainer_tie_check(struct trainer *tr)
{
    int drift = 0;
    trainer_sync(tr);
    if (tr->has_tie && tr->tie_comm != MPI_COMM_NULL) {
        size_t n, off = 0;
        float *arena[3];
        tied_copy(tr, arena, &n);
        uint64_t h[3], lo[3], hi[3];
        for (int k = 0; k < 3; k++)
            h[k] = ckpt_hash64(arena[k] + off, n * sizeof(float));
        MPI_Allreduce(h, lo, 3, MPI_UINT64_T, MPI_MIN, tr->tie_comm);
        MPI_Allreduce(h, hi, 3, MPI_UINT64_T, MPI_MAX, tr->tie_comm);
        for (int k = 0; k < 3; k++)
            if (lo[k] != hi[k]) {
                drift = 1; /* the first stage (rank 0 here) wins */
                for (size_t o = 0; o < n; o += (size_t)1 << 30) {
                    size_t c = n - o < (size_t)1 << 30 ? n - o
                                                       : (size_t)1 << 30;
                    MPI_Bcast(arena[k] + off + o, (int)c, MPI_FLOAT, 0,
                              tr->tie_comm);
                }
            }
    }
    MPI_Allreduce(MPI_IN_PLACE, &drift, 1, MPI_INT, MPI_MAX, tr->g.world);
    if (drift)
        gpt_refresh_bf16(&tr->m);
    return drift;
}

/* Per-stage busy and idle seconds of the last schedule, gathered to every
 * rank; returns the idle share of all stages' time (the bubble).  The
 * stages start a step nearly together (the previous step ended in
 * collectives over the pp group; only the optimizer's extra wte on the
 * end stages and rank 0's logging come between), so the pipeline's span
 * is taken as the longest stage's schedule, and a stage is idle for the
 * span minus its compute: a stage that finished early counts as idle
 * until the last one is done, as in the theory (p-1)/(m+p-1). */
static double gather_bubble(struct trainer *tr)
{
    int p = tr->g.pp;
    double mine[2] = {tr->pl.t_busy, tr->pl.t_total};
    double all[2 * p], span = 0.0, busy = 0.0;
    phase_enter(PHASE_COLLECTIVE, "stage time gather", -1, -1, -1, &tr->wpg);
    MPI_Allgather(mine, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, tr->g.pp_comm);
    for (int s = 0; s < p; s++)
        span = all[2 * s + 1] > span ? all[2 * s + 1] : span;
    for (int s = 0; s < p; s++) {
        tr->stage_busy[s] = all[2 * s];
        tr->stage_idle[s] = span - all[2 * s];
        busy += all[2 * s];
    }
    return span > 0.0 ? 1.0 - busy / (p * span) : 0.0;
}

/* 1-bit Adam's compression stage: the second moment is frozen; with a
 * codec at dp > 1 the gradient arena holds the all-reduced momentum. */
static int onebit_frozen(const struct trainer *tr)
{
    return tr->optim == OPT_ONEBIT && tr->st.step >= tr->c.compress_warmup;
}

static int onebit_momentum(const struct trainer *tr)
{
    return onebit_frozen(tr) && tr->has_dp && tr->bk.compress;
}

/* The learning rate of tensor d: lr_layer_decay by its block (wte and
 * wpe below block 0, the final LayerNorm at the top). */
static float tensor_lr(const struct trainer *tr, const struct tensor_desc *d,
                       double lr)
{
    int embed = !strcmp(d->name, "wte") || !strcmp(d->name, "wpe");
    return (float)lr * lr_layer_scale(d->layer, embed, tr->c.n_layer,
                                      tr->c.lr_layer_decay);
}

/* LAMB: moments and the sums of squares of every tensor, those of the
 * tensors split over tp summed over the tp group (in table order, the
 * same on every tp rank), then each tensor's step with its trust ratio.
 * A replicated tensor has the same sums on every rank; the tied wte's
 * two pipeline copies too. */
static void lamb_step(struct trainer *tr, const struct adamw_hp *hp0,
                      float scale, double lr)
{
    struct gpt *m = &tr->m;
    double *ss = tr->lamb_ss;
    int nsplit = 0;
    for (int i = 0; i < m->tt.n; i++) {
        const struct tensor_desc *d = &m->tt.t[i];
        struct adamw_hp hp = *hp0;
        hp.lr = tensor_lr(tr, d, lr);
        ss[2 * i] = ss[2 * i + 1] = 0.0;
        lamb_moments(m->params + d->off, m->grads + d->off, m->m + d->off,
                     m->v + d->off, d->numel, &hp, scale, d->decay,
                     &ss[2 * i], &ss[2 * i + 1]);
        nsplit += d->tp_dim >= 0;
    }
    if (m->tp > 1 && nsplit > 0) {
        double buf[2 * nsplit];
        for (int i = 0, k = 0; i < m->tt.n; i++)
            if (m->tt.t[i].tp_dim >= 0) {
                buf[k++] = ss[2 * i];
                buf[k++] = ss[2 * i + 1];
            }
        double t0 = now_s();
        MPI_Allreduce(MPI_IN_PLACE, buf, 2 * nsplit, MPI_DOUBLE, MPI_SUM,
                      tr->g.tp_comm);
        m->op_time[OPK_TP_COMM] += now_s() - t0;
        for (int i = 0, k = 0; i < m->tt.n; i++)
            if (m->tt.t[i].tp_dim >= 0) {
                ss[2 * i] = buf[k++];
                ss[2 * i + 1] = buf[k++];
            }
    }
    for (int i = 0; i < m->tt.n; i++) {
        const struct tensor_desc *d = &m->tt.t[i];
        struct adamw_hp hp = *hp0;
        hp.lr = tensor_lr(tr, d, lr);
        lamb_apply(m->params + d->off, m->m + d->off, m->v + d->off,
                   d->numel, &hp, d->decay,
                   lamb_ratio(ss[2 * i], ss[2 * i + 1]));
        if (m->params_h) /* the bf16 weight copy the products read */
            bf16_from_f32_n(m->params_h + d->off, m->params + d->off,
                            d->numel);
    }
}

/* The first float of this rank's weights (weight) or gradient that the
 * step uses: with ZeRO the gradient is this rank's shard (stage >= 1) and
 * at stage 3 so are the weights.  NULL if it holds none. */
static float *first_float(struct trainer *tr, int weight)
{
    int zs = tr->has_zx ? tr->zx.stage : 0;
    if (weight && zs == 3)
        return tr->zx.plan.shard_n ? tr->zx.p_shard : NULL;
    if (weight || zs == 0)
        return weight ? tr->m.params : tr->m.grads;
    for (int t = 0; t < tr->m.tt.n; t++) {
        size_t len;
        float *g = zero_exec_grad_of(&tr->zx, t, &len);
        if (g && len)
            return g;
    }
    return NULL;
}

/* debug_nan: at its step on its rank, a NaN in this rank's first
 * weight (before forward, once per process: a transient corruption) or
 * gradient (after the reductions: only this rank sees it). */
static void debug_nan(struct trainer *tr, int weight)
{
    if (tr->nan_rank < 0 || tr->st.step + 1 != tr->nan_step ||
        tr->nan_weight != weight)
        return;
    /* zero = 3 keeps gathered units in slots (and the next step's first
     * unit prefetched): every rank forgets them, so the NaN in a shard
     * reaches the forward of this step, as without ZeRO */
    if (weight && tr->has_zx && tr->zx.stage == 3)
        zero_exec_after_ckpt(&tr->zx);
    float *x = first_float(tr, weight);
    if (tr->nan_rank != tr->g.rank || (weight && tr->nan_fired) || !x)
        return;
    x[0] = NAN;
    tr->nan_fired = 1;
    fprintf(stderr, "mpitron: rank %d: debug_nan: a NaN %s at step %lld\n",
            tr->g.rank, weight ? "weight" : "gradient",
            (long long)tr->nan_step);
}

/* 1 if any of the n floats is NaN or infinite. */
static int any_nonfinite(const float *x, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof(b));
        bad |= (b & 0x7f800000u) == 0x7f800000u;
    }
    return bad != 0;
}

/* The step's verdict (nonfinite.h), agreed over the world: every rank
 * takes the same branch even if only one saw a problem. */
static int step_verdict(struct trainer *tr, double loss, double norm,
                        double z)
{
    int flags = 0;
    if (!isfinite(loss))
        flags |= NF_LOSS;
    if (!isfinite(norm))
        flags |= NF_GRAD;
    for (int b = 0; tr->has_dp && tr->bk.compress && b < tr->bk.nb; b++)
        if (any_nonfinite(tr->st_p[b], tr->st_len[b]))
            flags |= NF_STATE;
    if (tr->c.spike_zscore > 0.0f && z > tr->c.spike_zscore)
        flags |= NF_SPIKE;
    phase_enter(PHASE_COLLECTIVE, "step verdict (non-finite check)", -1, -1,
                -1, &tr->wpg);
    MPI_Allreduce(MPI_IN_PLACE, &flags, 1, MPI_INT, MPI_BOR, tr->g.world);
    return flags;
}

static void optimizer_step(struct trainer *tr, float scale, double lr)
{
    struct adamw_hp hp = {
        .lr = (float)lr, .beta1 = tr->c.beta1, .beta2 = tr->c.beta2,
        .eps = tr->c.eps, .weight_decay = tr->c.weight_decay,
        .t = tr->st.step + 1,
    };
    if (tr->optim == OPT_LAMB) {
        lamb_step(tr, &hp, scale, lr);
        return;
    }
    int frozen = onebit_frozen(tr), mom = onebit_momentum(tr);
    struct gpt *m = &tr->m;
    if (tr->has_zx) { /* shards, offloaded moments (AdamW: config.c) */
        float rates[m->tt.n > 0 ? m->tt.n : 1];
        for (int i = 0; i < m->tt.n; i++)
            rates[i] = tensor_lr(tr, &m->tt.t[i], lr);
        zero_exec_update(&tr->zx, &hp, scale, rates);
        return;
    }
    for (int i = 0; i < m->tt.n; i++) {
        const struct tensor_desc *d = &m->tt.t[i];
        hp.lr = tensor_lr(tr, d, lr);
        if (frozen) {
            frozen_v_update(m->params + d->off, m->grads + d->off,
                            m->m + d->off, m->v + d->off, d->numel, &hp,
                            scale, d->decay, tr->c.compress_warmup, mom);
            if (m->params_h) /* the bf16 weight copy the products read */
                bf16_from_f32_n(m->params_h + d->off, m->params + d->off,
                                d->numel);
        } else if (m->params_h) /* refreshes the bf16 weight copy too */
            adamw_update_bf16(m->params + d->off, m->params_h + d->off,
                              m->grads + d->off, m->m + d->off,
                              m->v + d->off, d->numel, &hp, scale, d->decay);
        else
            adamw_update(m->params + d->off, m->grads + d->off,
                         m->m + d->off, m->v + d->off, d->numel, &hp, scale,
                         d->decay);
    }
}

/* The gradient norm that clipping uses.  In 1-bit Adam's momentum mode
 * the arena holds the momentum, not the gradient, and the global
 * gradient never exists uncompressed: the ranks' local gradient norms
 * bound it, ||sum_r g_r|| <= sqrt(p sum_r ||g_r||^2) (Cauchy-Schwarz),
 * so clipping with the bound never clips less than dense would. */
static double clip_norm(struct trainer *tr)
{
    if (!onebit_momentum(tr))
        return grad_norm(tr);
    double s = tr->bk.local_sumsq;
    MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_SUM, tr->g.dp_comm);
    return sqrt((double)tr->g.dp * s);
}

double trainer_step_batch(struct trainer *tr, const struct step_batch *b,
                          double *gnorm, double *lr, struct step_times *tm)
{
    const struct config *c = &tr->c;
    const struct batch_shape *sh = &b->shape;
    double tokens = (double)sh->B * (double)sh->T;
    double t0 = now_s();
    /* a full-size step runs this rank's share (balance: unequal shares,
     * tr->mb_sizes); a step the plan shrinks or reshapes runs the plan's
     * equal slice (config.c refuses a plan with balance) */
    int full = sh->B == c->batch_size && sh->T == c->seq_len;
    int64_t seq0 = full ? tr->seq0 : (int64_t)tr->g.dp_rank * sh->per_rank;
    int per_rank = full ? tr->per_rank : sh->per_rank;
    if (full) {
        pipeline_set_shape(&tr->pl, &tr->m, tr->accum, tr->mb, sh->T);
        pipeline_set_sizes(&tr->pl, tr->mb_sizes);
    } else
        pipeline_set_shape(&tr->pl, &tr->m, sh->accum, sh->mb, sh->T);
    gpt_zero_grad(&tr->m);
    debug_nan(tr, 1);
    float dloss = (float)(1.0 / tokens);
    double loss = 0.0;
    if (tr->has_dp)
        bucketer_begin(&tr->bk, tr->st.step);
    if (tr->has_zx)
        zero_exec_begin(&tr->zx, 1);
    struct gpt_pos pos = {
        .step = tr->st.step, .seed = c->seed, .train = 1,
        .seq0 = seq0, .dstart = b->dstart,
    };
    loss = pipeline_train(&tr->pl, &tr->m, b->inp, b->tgt, dloss, &pos);
    tr->busy_acc += tr->pl.t_busy;
    tr->seqs_acc += per_rank;
    double t1 = now_s();
    /* ZeRO's waits inside the schedule: exposed communication */
    double zwait = tr->has_zx && tr->zx.has_comm ? tr->zx.zc.t_wait : 0.0;
    if (tr->has_dp && bucketer_wait(&tr->bk) < 0)
        MPI_Abort(tr->g.world, 3); /* an MPI error inside a reduction */
    if (tr->has_zx && zero_exec_finish(&tr->zx) < 0)
        MPI_Abort(tr->g.world, 3);
    tie_reduce(tr);
    debug_nan(tr, 0);
    phase_enter(PHASE_COLLECTIVE, "loss sum over the dp and pp groups", -1, -1,
                -1, &tr->wpg);
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, tr->g.dp_comm);
    if (tr->g.pp > 1) /* the loss is the last stage's */
        MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM,
                      tr->g.pp_comm);
    double bubble = tr->g.pp > 1 ? gather_bubble(tr) : 0.0;
    double t2 = now_s();
    double norm = clip_norm(tr);
    float scale = clip_scale(norm, c->grad_clip);
    double rate = lr_at(&tr->sched, tr->st.step);
    double mean = loss / tokens;
    double z = loss_window_z(&tr->win, mean);
    int verdict = step_verdict(tr, mean, norm, z);
    phase_enter(PHASE_OPTIM, NULL, -1, -1, -1, NULL);
    if (!verdict) {
        optimizer_step(tr, scale, rate);
        loss_window_add(&tr->win, mean);
    } else if (tr->has_dp && tr->bk.compress) {
        bucketer_state_reset(&tr->bk);
    }
    double t3 = now_s();
    tr->st.step++;
    tr->st.tokens_seen += (int64_t)sh->B * (int64_t)sh->T;
    if (tm) {
        tm->skipped = verdict;
        tm->loss_z = z;
        tm->pp_wait = tr->pl.t_total - tr->pl.t_busy;
        tm->compute = (t1 - t0) - tm->pp_wait - zwait + (t3 - t2);
        tm->optim = t3 - t2;
        tm->comm = t2 - t1 + zwait;
        tm->total = t3 - t0;
        tm->comm_overlapped = 0.0;
        tm->wire_bytes = 0;
        tm->bubble = bubble;
        if (tr->has_dp) {
            double hidden = tr->bk.t_comm - tr->bk.t_wait;
            tm->comm_overlapped = hidden > 0 ? hidden : 0.0;
            tm->wire_bytes = tr->bk.wire_bytes;
        }
        if (tr->has_zx && tr->zx.has_comm) {
            double hidden = zero_comm_busy(&tr->zx.zc) - tr->zx.zc.t_wait;
            tm->comm_overlapped = hidden > 0 ? hidden : 0.0;
            tm->wire_bytes = tr->zx.zc.wire_bytes;
        }
    }
    *gnorm = norm;
    *lr = rate;
    return mean;
}

double trainer_step(struct trainer *tr, const int32_t *inp,
                    const int32_t *tgt, double *gnorm, double *lr,
                    struct step_times *tm)
{
    struct step_batch b = {.inp = inp, .tgt = tgt};
    b.shape.T = tr->c.seq_len;
    b.shape.B = tr->c.batch_size;
    b.shape.per_rank = tr->per_rank;
    b.shape.mb = tr->mb;
    b.shape.accum = tr->accum;
    return trainer_step_batch(tr, &b, gnorm, lr, tm);
}

void trainer_skip_step(struct trainer *tr, int64_t tokens)
{
    tr->st.step++;
    tr->st.tokens_seen += tokens;
}

double trainer_validate(struct trainer *tr, const struct dataset *val,
                        const uint32_t *tok_bytes, int32_t *inp, int32_t *tgt,
                        int32_t *dstart, double *bpb)
{
    const struct config *c = &tr->c;
    int T = c->seq_len;
    double sum[2] = {0.0, 0.0}; /* loss, bytes of the targets */
    pipeline_set_shape(&tr->pl, &tr->m, tr->accum, tr->mb, T);
    pipeline_set_sizes(&tr->pl, tr->mb_sizes);
    for (int j = 0; j < c->val_batches; j++) {
        if (tr->has_zx)
            zero_exec_begin(&tr->zx, 0);
        int64_t seq0 = tr->seq0;
        for (int k = 0; k < tr->accum; k++) {
            int first = tr->pl.first[k];
            size_t off = (size_t)first * T;
            dataset_val_batch(val, j, c->batch_size, seq0 + first,
                              tr->pl.size[k], T, inp + off, tgt + off,
                              dstart ? dstart + off : NULL);
        }
        struct gpt_pos pos = {.step = tr->st.step, .seq0 = seq0,
                              .seed = c->seed, .train = 0, .dstart = dstart};
        phase_enter(PHASE_VALIDATE, "validation", j + 1, c->val_batches, -1,
                    NULL);
        sum[0] += pipeline_eval(&tr->pl, &tr->m, inp, tgt, &pos);
        /* every stage has the same targets: count them on the first,
         * as the loss is on the last */
        if (tok_bytes && tr->g.pp_rank == 0)
            for (size_t i = 0; i < (size_t)tr->per_rank * T; i++)
                sum[1] += tok_bytes[tgt[i]];
    }
    phase_enter(PHASE_COLLECTIVE, "validation loss sum", -1, -1, -1,
                &tr->wpg);
    if (tr->g.pp > 1)
        MPI_Allreduce(MPI_IN_PLACE, sum, 2, MPI_DOUBLE, MPI_SUM,
                      tr->g.pp_comm);
    MPI_Allreduce(MPI_IN_PLACE, sum, 2, MPI_DOUBLE, MPI_SUM, tr->g.dp_comm);
    if (bpb)
        *bpb = tok_bytes && sum[1] > 0 ? sum[0] / sum[1] / log(2.0) : 0.0;
    return sum[0] / ((double)c->val_batches * c->batch_size * T);
}

void trainer_sync(struct trainer *tr)
{
    if (tr->has_zx && zero_exec_sync(&tr->zx) < 0)
        MPI_Abort(tr->g.world, 3);
}

void trainer_after_ckpt(struct trainer *tr)
{
    if (tr->has_zx)
        zero_exec_after_ckpt(&tr->zx);
}
