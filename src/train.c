/*
 * train.c - trainer set-up and the optimizer step.  The run loop
 * (resume, logging, validation, checkpoints) is in run.c.
 */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "peak.h"

int agree(MPI_Comm comm, int rc)
{
    int in = rc < 0 ? 1 : 0, any = 0;
    MPI_Allreduce(&in, &any, 1, MPI_INT, MPI_MAX, comm);
    return any ? -1 : 0;
}

static int check_layout(struct trainer *tr, char *err, size_t errlen)
{
    const struct config *c = &tr->c;
    const struct grid *g = &tr->g;
    if (g->pp > 1) {  /* arrives with the pipeline issue */
        snprintf(err, errlen, "pp=%d: pipeline parallelism is not available "
                 "in this version; use pp=1", g->pp);
        return -1;
    }
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
    return 0;
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

static int dp_init(struct trainer *tr, char *err, size_t errlen)
{
    const struct config *c = &tr->c;
    struct gpt *m = &tr->m;
    if (tr->g.dp == 1)
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

int trainer_init(struct trainer *tr, const struct config *c, MPI_Comm world,
                 char *err, size_t errlen)
{
    memset(tr, 0, sizeof(*tr));
    tr->c = *c;
    if (grid_init(&tr->g, world, c->dp, c->tp, c->pp, c->ranks_per_node,
                  err, errlen) < 0)
        return -1;
    tr->has_grid = 1;
    if (check_layout(tr, err, errlen) < 0)
        return -1; /* same decision on every rank */
    struct gpt_config gc;
    gpt_config_from(c, &gc);
    if (gpt_config_check(&gc, tr->g.tp, err, errlen) < 0)
        return -1;
    threads_set(c->threads);
    int rc = gpt_init(&tr->m, &gc, tr->g.tp, tr->g.tp_rank, 0, gc.n_layer,
                      c->seed, err, errlen);
    tr->has_model = rc == 0;
    if (rc == 0) {
        rc = gpt_acts_init(&tr->a, &tr->m, tr->mb, c->seq_len);
        tr->has_acts = rc == 0;
        if (rc < 0)
            snprintf(err, errlen, "out of memory allocating activations for "
                     "micro_batch=%d seq_len=%d", tr->mb, c->seq_len);
    }
    if (agree(world, rc) < 0) {
        if (rc == 0)
            snprintf(err, errlen, "another rank failed to allocate the model");
        return -1;
    }
    if (agree(world, tp_init(tr, err, errlen)) < 0) {
        if (!err[0])
            snprintf(err, errlen, "another rank failed to set up the "
                     "tensor-parallel group");
        return -1;
    }
    if (agree(world, dp_init(tr, err, errlen)) < 0) {
        if (!err[0])
            snprintf(err, errlen, "another rank failed to set up buckets");
        return -1;
    }
    lr_kind_parse(c->lr_schedule, &tr->sched.kind);
    tr->sched.lr = c->lr;
    tr->sched.min_lr = c->min_lr;
    tr->sched.warmup = c->warmup_steps;
    tr->sched.steps = c->steps;
    tr->sched.cycle = c->lr_cycle;
    double peak = sgemm_peak_gflops();
    MPI_Allreduce(&peak, &tr->peak_gflops, 1, MPI_DOUBLE, MPI_SUM, world);
    return 0;
}

void trainer_free(struct trainer *tr)
{
    if (tr->has_dp) {
        bucketer_free(&tr->bk);
        comm_group_free(&tr->dpg);
    }
    if (tr->has_tp)
        tp_ctx_free(&tr->tpc);
    free(tr->ev_first);
    free(tr->ev_count);
    free(tr->st_p);
    free(tr->st_len);
    if (tr->has_acts)
        gpt_acts_free(&tr->a);
    if (tr->has_model)
        gpt_free(&tr->m);
    if (tr->has_grid)
        grid_free(&tr->g);
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
 * counted once; every tp rank gets the same bits. */
static double grad_norm(struct trainer *tr)
{
    const struct gpt *m = &tr->m;
    if (m->tp == 1)
        return sqrt(sumsq(m->grads, m->tt.total));
    double shard = 0.0, rep = 0.0;
    for (int i = 0; i < m->tt.n; i++) {
        const struct tensor_desc *d = &m->tt.t[i];
        double s = sumsq(m->grads + d->off, d->numel);
        if (d->tp_dim >= 0)
            shard += s;
        else
            rep += s;
    }
    double t0 = now_s();
    shard = tp_sum_double(shard, &tr->tpc);
    tr->m.op_time[OPK_TP_COMM] += now_s() - t0;
    return sqrt(shard + rep);
}

static void optimizer_step(struct trainer *tr, float scale, double lr)
{
    struct adamw_hp hp = {
        .lr = (float)lr, .beta1 = tr->c.beta1, .beta2 = tr->c.beta2,
        .eps = tr->c.eps, .weight_decay = tr->c.weight_decay,
        .t = tr->st.step + 1,
    };
    struct gpt *m = &tr->m;
    for (int i = 0; i < m->tt.n; i++) {
        const struct tensor_desc *d = &m->tt.t[i];
        adamw_update(m->params + d->off, m->grads + d->off, m->m + d->off,
                     m->v + d->off, d->numel, &hp, scale, d->decay);
    }
}

double trainer_step(struct trainer *tr, const int32_t *inp,
                    const int32_t *tgt, double *gnorm, double *lr,
                    struct step_times *tm)
{
    const struct config *c = &tr->c;
    size_t T = (size_t)c->seq_len;
    double t0 = now_s();
    gpt_zero_grad(&tr->m);
    float dloss = 1.0f / (float)((double)c->batch_size * (double)T);
    double loss = 0.0;
    if (tr->has_dp)
        bucketer_begin(&tr->bk, tr->st.step);
    for (int k = 0; k < tr->accum; k++) {
        tr->m.hook_final = k == tr->accum - 1;
        struct gpt_pos pos = {
            .step = tr->st.step, .seed = c->seed, .train = 1,
            .seq0 = (int64_t)tr->g.dp_rank * tr->per_rank + (int64_t)k * tr->mb,
        };
        size_t off = (size_t)k * tr->mb * T;
        loss += gpt_forward(&tr->m, &tr->a, inp + off, tgt + off, &pos);
        gpt_backward(&tr->m, &tr->a, dloss, &pos);
    }
    double t1 = now_s();
    if (tr->has_dp && bucketer_wait(&tr->bk) < 0)
        MPI_Abort(tr->g.world, 3); /* an MPI error inside a reduction */
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, tr->g.dp_comm);
    double t2 = now_s();
    double norm = grad_norm(tr);
    float scale = clip_scale(norm, c->grad_clip);
    double rate = lr_at(&tr->sched, tr->st.step);
    optimizer_step(tr, scale, rate);
    double t3 = now_s();
    tr->st.step++;
    tr->st.tokens_seen += (int64_t)c->batch_size * (int64_t)T;
    if (tm) {
        tm->compute = (t1 - t0) + (t3 - t2);
        tm->optim = t3 - t2;
        tm->comm = t2 - t1;
        tm->total = t3 - t0;
        tm->comm_overlapped = 0.0;
        tm->wire_bytes = 0;
        if (tr->has_dp) {
            double hidden = tr->bk.t_comm - tr->bk.t_wait;
            tm->comm_overlapped = hidden > 0 ? hidden : 0.0;
            tm->wire_bytes = tr->bk.wire_bytes;
        }
    }
    *gnorm = norm;
    *lr = rate;
    return loss / ((double)c->batch_size * (double)T);
}

double trainer_validate(struct trainer *tr, const struct dataset *val,
                        int32_t *inp, int32_t *tgt)
{
    const struct config *c = &tr->c;
    int T = c->seq_len;
    double sum = 0.0;
    for (int j = 0; j < c->val_batches; j++)
        for (int k = 0; k < tr->accum; k++) {
            int64_t seq0 = (int64_t)tr->g.dp_rank * tr->per_rank +
                           (int64_t)k * tr->mb;
            dataset_val_batch(val, j, c->batch_size, seq0, tr->mb, T, inp,
                              tgt);
            struct gpt_pos pos = {.step = tr->st.step, .seq0 = seq0,
                                  .seed = c->seed, .train = 0};
            sum += gpt_forward(&tr->m, &tr->a, inp, tgt, &pos);
        }
    MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_DOUBLE, MPI_SUM, tr->g.dp_comm);
    return sum / ((double)c->val_batches * c->batch_size * T);
}
