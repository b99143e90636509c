/*
 * train.c - one training step: forward and backward over the micro-batches,
 * gradient reduction, clipping, the non-finite verdict and the optimizer
 * update (AdamW, LAMB, 1-bit Adam's phases); validation.  Set-up is
 * train_setup.c; the run loop (resume, logging, validation, checkpoints)
 * is run.c.
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
 * step uses: with ZeRO the gradient is this rank's shard (stage >= 1), at
 * stage 3 so are the weights, and at stages 1 and 2 the weight is the
 * first of its own chunks.  NULL if it holds none. */
static float *first_float(struct trainer *tr, int weight)
{
    int zs = tr->has_zx ? tr->zx.stage : 0;
    if (weight && zs == 3)
        return tr->zx.plan.shard_n ? tr->zx.p_shard : NULL;
    if (weight && zs > 0) /* its own chunk (debug_nan completed the
                             update's all-gathers first) */
        return tr->zx.plan.nsegs ? tr->m.params + tr->zx.plan.seg[0].arena_off
                                 : NULL;
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
    /* zero = 1, 2: the last update's gathers (messages in flight, or in
     * shared memory the other ranks copying this rank's chunk as their
     * forward reaches it) complete first on every rank, so the NaN stays
     * in this rank's copy alone */
    else if (weight && tr->has_zx && tr->zx.stage > 0)
        trainer_sync(tr);
    float *x = first_float(tr, weight);
    if (tr->nan_rank != tr->g.rank || (weight && tr->nan_fired) || !x)
        return;
    x[0] = NAN;
    if (weight && tr->m.params_h && x >= tr->m.params &&
        x < tr->m.params + tr->m.tt.total) /* bf16: the products' copy */
        gpt_refresh_bf16_range(&tr->m, (size_t)(x - tr->m.params), 1);
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

/* After the schedule: the gradients' reductions complete, the tied
 * embedding's copies summed, the loss summed over dp and pp.  Returns the
 * measured bubble (pp > 1), else 0. */
static double finish_reductions(struct trainer *tr, double *loss)
{
    if (tr->has_dp && bucketer_wait(&tr->bk) < 0)
        MPI_Abort(tr->g.world, 3); /* an MPI error inside a reduction */
    if (tr->has_zx && zero_exec_finish(&tr->zx) < 0)
        MPI_Abort(tr->g.world, 3);
    tie_reduce(tr);
    debug_nan(tr, 0);
    phase_enter(PHASE_COLLECTIVE, "loss sum over the dp and pp groups", -1, -1,
                -1, &tr->wpg);
    MPI_Allreduce(MPI_IN_PLACE, loss, 1, MPI_DOUBLE, MPI_SUM, tr->g.dp_comm);
    if (tr->g.pp > 1) /* the loss is the last stage's */
        MPI_Allreduce(MPI_IN_PLACE, loss, 1, MPI_DOUBLE, MPI_SUM,
                      tr->g.pp_comm);
    return tr->g.pp > 1 ? gather_bubble(tr) : 0.0;
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
    double bubble = finish_reductions(tr, &loss);
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
