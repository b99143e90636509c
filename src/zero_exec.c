/*
 * zero_exec.c - ZeRO's executor: shards, working slots, staging buffers,
 * the model's unit events, and AdamW on shards (see zero_exec.h).
 */
#include "zero_exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_io.h"
#include "log.h"

/* A broken invariant (the model used units out of the planned order, an
 * MPI error in a reduction): no rank can go on alone. */
static void zx_abort(const char *what)
{
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "mpitron: rank %d: ZeRO: %s\n", rank, what);
    MPI_Abort(MPI_COMM_WORLD, 3);
}

/* ---- set-up ------------------------------------------------------------- */

/* Units of this stage's table: the embedding unit (wte, wpe, lnf: they
 * come first in the table; wte a piece of its own) and one per block. */
static int make_plan(struct zero_exec *zx, int p, int rank, char *err,
                     size_t errlen)
{
    const struct tensor_table *tt = &zx->m->tt;
    int nl = zx->m->l1 - zx->m->l0, nu = 0, t = 0, rc = -1;
    struct zero_tensor *zt = calloc((size_t)tt->n + 1, sizeof(*zt));
    struct zero_unit_spec *us = calloc((size_t)nl + 2, sizeof(*us));
    if (!zt || !us) {
        snprintf(err, errlen, "out of memory planning ZeRO");
        goto out;
    }
    for (int i = 0; i < tt->n; i++) {
        zt[i].off = tt->t[i].off;
        zt[i].numel = tt->t[i].numel;
    }
    while (t < tt->n && tt->t[t].layer < 0)
        t++;
    if (t > 0)
        us[nu++] = (struct zero_unit_spec){-1, 0, t, 1};
    for (int l = zx->m->l0; l < zx->m->l1; l++) {
        int t0 = t;
        while (t < tt->n && tt->t[t].layer == l)
            t++;
        us[nu++] = (struct zero_unit_spec){l, t0, t, 0};
    }
    if (t != tt->n) {
        snprintf(err, errlen, "ZeRO: tensor %s is outside the units",
                 tt->t[t].name);
        goto out;
    }
    rc = zero_plan_build(&zx->plan, zt, tt->n, us, nu, p, rank, err,
                         errlen);
out:
    free(zt);
    free(us);
    return rc;
}

/* The orders of unit uses of the two schedules. */
static int build_orders(struct zero_exec *zx, const struct pp_schedule *train,
                        const struct pp_schedule *eval, char *err,
                        size_t errlen)
{
    struct gpt *m = zx->m;
    int nl = m->l1 - m->l0;
    if (zero_order_build(&zx->train, train, zx->embed_unit, zx->block_unit,
                         nl, m->first, m->last, err, errlen) < 0 ||
        zero_order_build(&zx->eval, eval, zx->embed_unit, zx->block_unit,
                         nl, m->first, m->last, err, errlen) < 0)
        return -1;
    return 0;
}

static int make_orders(struct zero_exec *zx, const struct pp_schedule *train,
                       const struct pp_schedule *eval, char *err,
                       size_t errlen)
{
    struct gpt *m = zx->m;
    int nl = m->l1 - m->l0;
    zx->block_unit = calloc((size_t)(nl ? nl : 1), sizeof(int));
    if (!zx->block_unit) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    zx->embed_unit = zero_unit_of(&zx->plan, -1);
    for (int l = 0; l < nl; l++)
        zx->block_unit[l] = zero_unit_of(&zx->plan, m->l0 + l);
    return build_orders(zx, train, eval, err, errlen);
}

int zero_exec_replan(struct zero_exec *zx, const struct pp_schedule *train,
                     const struct pp_schedule *eval, char *err,
                     size_t errlen)
{
    if (!zx->block_unit) /* stage 0 (offload only): no orders */
        return 0;
    zero_order_free(&zx->train);
    zero_order_free(&zx->eval);
    return build_orders(zx, train, eval, err, errlen);
}

/* precision=bf16: stage 3's bf16 twins of the slots, stage 1/2's stale
 * flags; the copy's bytes counted with the parameters (stage 0-2: the
 * model's params_h arena). */
static int make_bf16(struct zero_exec *zx, const size_t *cap, char *err,
                     size_t errlen)
{
    int oom = 0;
    for (int k = 0; k < ZERO_SLOTS; k++) {
        zx->hslot_unit[k] = -1;
        if (zx->stage >= 3 && cap[k]) {
            zx->hslot[k] = (bf16 *)tensor_arena_alloc((cap[k] + 1) / 2);
            oom |= !zx->hslot[k];
            zx->bytes_params += cap[k] * sizeof(bf16);
        }
    }
    /* the model's whole bf16 copy (zero < 3) is counted with the model */
    zx->h_stale = calloc((size_t)zx->plan.nunits + 1, 1);
    if (oom || !zx->h_stale) {
        snprintf(err, errlen, "out of memory for ZeRO's bf16 slots");
        return -1;
    }
    return 0;
}

/* Shards, slots and buffers; the stage-3 parameter shard initialised. */
static int make_memory(struct zero_exec *zx, const char *offload_dir,
                       int rank, uint64_t seed, char *err, size_t errlen)
{
    const struct zero_plan *zp = &zx->plan;
    size_t sn = zp->shard_n, F = sizeof(float);
    int oom = 0;
    if (offload_dir) {
        if (offload_init(&zx->off, offload_dir, sn, rank, err, errlen) < 0)
            return -1;
        zx->offloaded = 1;
        zx->m_shard = zx->off.m;
        zx->v_shard = zx->off.v;
        zx->bytes_file = zx->off.map_bytes;
        /* resident while streaming: about two blocks of each moment (at
         * most the moment itself) */
        zx->bytes_optim = 2 * (sn < 2 * OFFLOAD_BLOCK ? sn
                                                     : 2 * OFFLOAD_BLOCK) * F;
    } else {
        zx->m_shard = tensor_arena_alloc(sn);
        zx->v_shard = tensor_arena_alloc(sn);
        oom |= !zx->m_shard || !zx->v_shard;
        zx->bytes_optim = 2 * sn * F;
    }
    if (zx->stage >= 2) {
        zx->g_shard = tensor_arena_alloc(sn);
        oom |= !zx->g_shard;
    }
    size_t cap[ZERO_SLOTS] = {zp->embed_n, zp->max_block_n,
                              zp->max_block_n};
    for (int k = 0; k < ZERO_SLOTS; k++) {
        zx->slot_unit[k] = zx->gbuf_unit[k] = -1;
        zx->slot_n[k] = cap[k];
        if (zx->stage >= 3 && cap[k]) {
            zx->slot[k] = tensor_arena_alloc(cap[k]);
            oom |= !zx->slot[k];
        }
        if (zx->stage >= 2 && cap[k]) {
            zx->gbuf[k] = tensor_arena_alloc(cap[k]);
            oom |= !zx->gbuf[k];
        }
    }
    size_t slots = (cap[0] + cap[1] + cap[2]) * F;
    if (zx->stage >= 3) {
        zx->p_shard = tensor_arena_alloc(sn);
        oom |= !zx->p_shard;
    }
    zx->ag = calloc((size_t)zp->npieces + 1, sizeof(int64_t));
    zx->rs = calloc((size_t)zp->npieces + 1, sizeof(int64_t));
    oom |= !zx->ag || !zx->rs;
    if (oom) {
        snprintf(err, errlen, "out of memory for ZeRO's shards and buffers "
                 "(%zu floats per shard)", sn);
        return -1;
    }
    for (int i = 0; zx->p_shard && i < zp->nsegs; i++) {
        const struct zero_seg *s = &zp->seg[i];
        tensor_desc_init_range(&zx->m->tt.t[s->tensor],
                               zx->p_shard + s->shard_off, s->t_off, s->len,
                               seed);
    }
    /* what this executor allocated (the model's arenas are counted by
     * mem_report from the model itself) */
    zx->bytes_params = zx->p_shard ? sn * F + slots : 0;
    zx->bytes_grads = zx->g_shard ? sn * F : 0;
    if (zx->m->cfg.precision == GPT_BF16 &&
        make_bf16(zx, cap, err, errlen) < 0)
        return -1; /* adds its bf16 slots to bytes_params */
    zx->bytes_comm = zx->stage >= 2 ? slots : 0;
    return 0;
}

int zero_exec_init(struct zero_exec *zx, struct gpt *m, int stage,
                   const struct comm_group *g, const struct pp_schedule *train,
                   const struct pp_schedule *eval, const char *offload_dir,
                   int rank, uint64_t seed, char *err, size_t errlen)
{
    memset(zx, 0, sizeof(*zx));
    zx->stage = stage;
    zx->m = m;
    int p = stage > 0 && g ? g->size : 1, r = stage > 0 && g ? g->rank : 0;
    if (make_plan(zx, p, r, err, errlen) < 0 ||
        make_orders(zx, train, eval, err, errlen) < 0 ||
        make_memory(zx, offload_dir, rank, seed, err, errlen) < 0)
        return -1;
    if (stage > 0) {
        /* reduce-scatters: a few in flight; all-gathers: every piece of a
         * step's parameters at once (stage 1/2) */
        if (zero_comm_init(&zx->zc, g, zx->plan.max_piece, 4,
                           zx->plan.npieces + 4, err, errlen) < 0)
            return -1;
        zx->has_comm = 1;
        zx->bytes_comm += zx->zc.scratch_bytes;
    }
    zx->shards = (struct model_shards){
        .params = stage >= 3, .whole = stage == 0,
        .seg = zx->plan.seg, .nseg = zx->plan.nsegs,
        .p = zx->p_shard, .m = zx->m_shard, .v = zx->v_shard,
    };
    m->shards = &zx->shards;
    return 0;
}

void zero_exec_free(struct zero_exec *zx)
{
    if (zx->has_comm)
        zero_comm_free(&zx->zc);
    if (zx->m && zx->m->shards)
        zx->m->shards = NULL;
    if (zx->offloaded)
        offload_free(&zx->off);
    else {
        free(zx->m_shard);
        free(zx->v_shard);
    }
    free(zx->g_shard);
    free(zx->p_shard);
    for (int k = 0; k < ZERO_SLOTS; k++) {
        free(zx->slot[k]);
        free(zx->hslot[k]);
        free(zx->gbuf[k]);
    }
    free(zx->h_stale);
    free(zx->ag);
    free(zx->rs);
    free(zx->block_unit);
    zero_order_free(&zx->train);
    zero_order_free(&zx->eval);
    zero_plan_free(&zx->plan);
    memset(zx, 0, sizeof(*zx));
}

/* ---- stage 3: working slots of parameters -------------------------------- */

static int slot_of(const struct zero_exec *zx, int unit)
{
    for (int k = 0; k < ZERO_SLOTS; k++)
        if (zx->slot_unit[k] == unit)
            return k;
    return -1;
}

/* Start gathering unit u (if no slot holds it) into a slot that does not
 * hold unit keep: the embedding unit's own slot, or the block slot used
 * least recently.  Returns the slot. */
static int gather_start(struct zero_exec *zx, int u, int keep)
{
    int k = slot_of(zx, u);
    if (k >= 0)
        return k;
    const struct zero_unit *un = &zx->plan.u[u];
    if (un->key < 0)
        k = 0;
    else if (zx->slot_unit[1] == keep)
        k = 2;
    else if (zx->slot_unit[2] == keep)
        k = 1;
    else
        k = zx->slot_used[1] <= zx->slot_used[2] ? 1 : 2;
    for (int j = 0; j < 2; j++) { /* a gather still landing there */
        if (zero_comm_wait(&zx->zc, zx->slot_h[k][j]) < 0)
            zx_abort("an all-gather failed");
        zx->slot_h[k][j] = 0;
    }
    for (int pi = un->p0; pi < un->p1; pi++) {
        const struct zero_piece *pc = &zx->plan.pc[pi];
        float *base = zx->slot[k] + (pc->off - un->off);
        memcpy(base + pc->own_off, zx->p_shard + pc->shard_off,
               pc->own_len * sizeof(float));
        int64_t h = zero_allgather_start(&zx->zc, base, pc->n);
        if (h < 0)
            zx_abort("an all-gather failed to start");
        zx->slot_h[k][pi - un->p0] = h;
    }
    zx->slot_unit[k] = u;
    zx->hslot_unit[k] = -1; /* its bf16 twin is now out of date */
    return k;
}

/* Before a use: the unit gathered and the model's views on it; then the
 * next unit prefetched into another slot. */
static void use_params(struct zero_exec *zx, const struct zero_use *us)
{
    int k = gather_start(zx, us->unit, -1);
    for (int j = 0; j < 2; j++) {
        if (zero_comm_wait(&zx->zc, zx->slot_h[k][j]) < 0)
            zx_abort("an all-gather failed");
        zx->slot_h[k][j] = 0;
    }
    zx->slot_used[k] = ++zx->tick;
    const struct zero_unit *un = &zx->plan.u[us->unit];
    gpt_bind_unit(zx->m, un->key, zx->slot[k], NULL);
    if (zx->hslot[k]) { /* bf16: the products read the rounded slot */
        if (zx->hslot_unit[k] != us->unit) {
            double t0 = now_s();
            bf16_from_f32_n(zx->hslot[k], zx->slot[k], un->n);
            zx->m->op_time[OPK_CAST] += now_s() - t0;
            zx->hslot_unit[k] = us->unit;
        }
        gpt_bind_unit_h(zx->m, un->key, zx->hslot[k]);
    }
    if (us->next_unit >= 0)
        gather_start(zx, us->next_unit, us->unit);
}

/* ---- stage 1/2: the update's all-gathers in the parameter arena ---------- */

static void wait_gathered(struct zero_exec *zx, int u)
{
    const struct zero_unit *un = &zx->plan.u[u];
    for (int pi = un->p0; pi < un->p1; pi++) {
        if (zero_comm_wait(&zx->zc, zx->ag[pi]) < 0)
            zx_abort("an all-gather failed");
        zx->ag[pi] = 0;
    }
    if (zx->h_stale && zx->h_stale[u]) { /* bf16: round what was gathered */
        double t0 = now_s();
        for (int pi = un->p0; pi < un->p1; pi++) { /* AdamW rounded ours */
            const struct zero_piece *pc = &zx->plan.pc[pi];
            size_t end = pc->own_off + pc->own_len;
            gpt_refresh_bf16_range(zx->m, pc->off, pc->own_off);
            gpt_refresh_bf16_range(zx->m, pc->off + end, pc->n - end);
        }
        zx->m->op_time[OPK_CAST] += now_s() - t0;
        zx->h_stale[u] = 0;
    }
}

/* ---- gradients ---------------------------------------------------------- */

/* Stage 1: the unit's gradient of the whole step is in the arena. */
static void reduce_arena(struct zero_exec *zx, int u)
{
    const struct zero_unit *un = &zx->plan.u[u];
    for (int pi = un->p0; pi < un->p1; pi++) {
        const struct zero_piece *pc = &zx->plan.pc[pi];
        zx->rs[pi] = zero_reduce_scatter_start(&zx->zc,
                                               zx->m->grads + pc->off, pc->n);
        if (zx->rs[pi] < 0)
            zx_abort("a reduce-scatter failed to start");
    }
}

/* Stage >= 2: add staging buffer k's reduced chunks into the shard. */
static void collect(struct zero_exec *zx, int k)
{
    if (!zx->gbuf_pending[k])
        return;
    const struct zero_unit *un = &zx->plan.u[zx->gbuf_unit[k]];
    for (int pi = un->p0; pi < un->p1; pi++) {
        int j = pi - un->p0;
        if (zero_comm_wait(&zx->zc, zx->gbuf_h[k][j]) < 0)
            zx_abort("a reduce-scatter failed");
        zx->gbuf_h[k][j] = 0;
        const struct zero_piece *pc = &zx->plan.pc[pi];
        const float *src = zx->gbuf[k] + (pc->off - un->off) + pc->own_off;
        float *dst = zx->g_shard + pc->shard_off;
        for (size_t e = 0; e < pc->own_len; e++)
            dst[e] += src[e];
    }
    zx->gbuf_pending[k] = 0;
    zx->gbuf_unit[k] = -1; /* consumed: holds no unit's gradient now */
}

/* A unit's first backward use in a micro-batch: a zeroed staging buffer
 * (the embedding unit's own; blocks alternate between two). */
static void grad_begin(struct zero_exec *zx, int u)
{
    const struct zero_unit *un = &zx->plan.u[u];
    int k = 0;
    if (un->key >= 0)
        k = zx->last_gbuf = zx->last_gbuf == 1 ? 2 : 1;
    collect(zx, k);
    memset(zx->gbuf[k], 0, un->n * sizeof(float));
    zx->gbuf_unit[k] = u;
    gpt_bind_unit(zx->m, un->key, NULL, zx->gbuf[k]);
}

/* Its last one: reduce-scatter the buffer while backward goes on. */
static void grad_end(struct zero_exec *zx, int u)
{
    const struct zero_unit *un = &zx->plan.u[u];
    int k = -1; /* the buffer holding u that is not being reduced */
    for (int j = 0; j < ZERO_SLOTS; j++)
        if (zx->gbuf_unit[j] == u && !zx->gbuf_pending[j])
            k = j;
    if (k < 0)
        zx_abort("a gradient buffer was lost");
    for (int pi = un->p0; pi < un->p1; pi++) {
        const struct zero_piece *pc = &zx->plan.pc[pi];
        int64_t h = zero_reduce_scatter_start(
            &zx->zc, zx->gbuf[k] + (pc->off - un->off), pc->n);
        if (h < 0)
            zx_abort("a reduce-scatter failed to start");
        zx->gbuf_h[k][pi - un->p0] = h;
    }
    zx->gbuf_pending[k] = 1;
}

/* ---- the model's events -------------------------------------------------- */

void zero_exec_begin(struct zero_exec *zx, int train)
{
    zx->cur = train ? &zx->train : &zx->eval;
    zx->pos = 0;
    if (train && zx->g_shard)
        memset(zx->g_shard, 0, zx->plan.shard_n * sizeof(float));
    if (zx->has_comm && train)
        zero_comm_clear(&zx->zc);
}

static void use_done(struct zero_exec *zx, int u)
{
    const struct zero_use *us = zx->pos > 0 ? &zx->cur->use[zx->pos - 1]
                                            : NULL;
    if (!us || us->unit != u || us->dir != ZERO_BWD)
        zx_abort("a backward use ended out of the planned order");
    if (zx->stage >= 2 && us->grad_last)
        grad_end(zx, u);
    if (zx->stage == 1 && us->step_last)
        reduce_arena(zx, u);
}

void zero_exec_event(struct zero_exec *zx, enum gpt_event ev, int layer)
{
    if (zx->stage == 0 || !zx->cur)
        return;
    if (ev == GPT_PROGRESS) {
        if (zero_comm_progress(&zx->zc) < 0)
            zx_abort("an MPI error in a reduction");
        return;
    }
    if (ev != GPT_USE_FWD && ev != GPT_USE_BWD && ev != GPT_USE_DONE)
        return;
    int u = layer < 0 ? zx->embed_unit : zx->block_unit[layer - zx->m->l0];
    if (ev == GPT_USE_DONE) {
        use_done(zx, u);
        return;
    }
    enum zero_dir dir = ev == GPT_USE_FWD ? ZERO_FWD : ZERO_BWD;
    if (zx->pos >= zx->cur->n || zx->cur->use[zx->pos].unit != u ||
        zx->cur->use[zx->pos].dir != dir)
        zx_abort("the model used a unit out of the planned order");
    const struct zero_use *us = &zx->cur->use[zx->pos++];
    if (zx->stage >= 3)
        use_params(zx, us);
    else
        wait_gathered(zx, u);
    if (zx->stage >= 2 && dir == ZERO_BWD && us->grad_first)
        grad_begin(zx, u);
}

int zero_exec_finish(struct zero_exec *zx)
{
    if (zx->stage == 0)
        return 0;
    for (int k = 0; k < ZERO_SLOTS; k++)
        collect(zx, k);
    int rc = zero_comm_wait_all(&zx->zc);
    memset(zx->rs, 0, (size_t)zx->plan.npieces * sizeof(int64_t));
    zx->cur = NULL;
    return rc;
}

/* ---- norm, update ---------------------------------------------------------- */

static float *grad_ptr(struct zero_exec *zx, const struct zero_seg *s)
{
    return zx->g_shard ? zx->g_shard + s->shard_off
                       : zx->m->grads + s->arena_off;
}

static float *param_ptr(struct zero_exec *zx, const struct zero_seg *s)
{
    return zx->p_shard ? zx->p_shard + s->shard_off
                       : zx->m->params + s->arena_off;
}

float *zero_exec_grad_of(struct zero_exec *zx, int t, size_t *len)
{
    for (int i = 0; i < zx->plan.nsegs; i++)
        if (zx->plan.seg[i].tensor == t) {
            *len = zx->plan.seg[i].len;
            return grad_ptr(zx, &zx->plan.seg[i]);
        }
    *len = 0;
    return NULL;
}

void zero_exec_sumsq(struct zero_exec *zx, int skip, double *split,
                     double *rep)
{
    double mine[2] = {0.0, 0.0};
    for (int i = 0; i < zx->plan.nsegs; i++) {
        const struct zero_seg *s = &zx->plan.seg[i];
        if (s->tensor == skip)
            continue;
        double q = sumsq(grad_ptr(zx, s), s->len);
        mine[zx->m->tt.t[s->tensor].tp_dim >= 0 ? 0 : 1] += q;
    }
    int p = zx->plan.p;
    double all[2 * p];
    if (p > 1)
        MPI_Allgather(mine, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE,
                      zx->zc.g->comm);
    else
        memcpy(all, mine, sizeof(mine));
    *split = *rep = 0.0;
    for (int r = 0; r < p; r++) { /* rank order: the same bits everywhere */
        *split += all[2 * r];
        *rep += all[2 * r + 1];
    }
}

struct update_ctx {
    struct zero_exec *zx;
    const struct adamw_hp *hp;
    float scale;
    const float *lr; /* per tensor, or NULL */
    int seg; /* first seg not yet fully updated */
};

/* AdamW over shard elements [lo, hi), seg by seg. */
static void update_range(void *ctx, size_t lo, size_t hi)
{
    struct update_ctx *c = ctx;
    struct zero_exec *zx = c->zx;
    for (int i = c->seg; i < zx->plan.nsegs; i++) {
        const struct zero_seg *s = &zx->plan.seg[i];
        size_t a = s->shard_off > lo ? s->shard_off : lo;
        size_t b = s->shard_off + s->len < hi ? s->shard_off + s->len : hi;
        if (s->shard_off >= hi)
            break;
        if (a < b) {
            size_t k = a - s->shard_off;
            struct adamw_hp hp = *c->hp;
            if (c->lr)
                hp.lr = c->lr[s->tensor];
            int decay = zx->m->tt.t[s->tensor].decay;
            if (zx->stage <= 2 && zx->m->params_h) /* the copy too */
                adamw_update_bf16(param_ptr(zx, s) + k,
                                  zx->m->params_h + s->arena_off + k,
                                  grad_ptr(zx, s) + k, zx->m_shard + a,
                                  zx->v_shard + a, b - a, &hp, c->scale,
                                  decay);
            else /* stage 3: the slots are rounded after each gather */
                adamw_update(param_ptr(zx, s) + k, grad_ptr(zx, s) + k,
                             zx->m_shard + a, zx->v_shard + a, b - a, &hp,
                             c->scale, decay);
        }
        if (s->shard_off + s->len <= hi)
            c->seg = i + 1;
    }
}

void zero_exec_update(struct zero_exec *zx, const struct adamw_hp *hp,
                      float scale, const float *lr)
{
    struct update_ctx c = {zx, hp, scale, lr, 0};
    if (zx->offloaded)
        offload_stream(&zx->off, update_range, &c);
    else
        update_range(&c, 0, zx->plan.shard_n);
    if (zx->stage == 1 || zx->stage == 2) {
        if (zx->h_stale)
            memset(zx->h_stale, 1, (size_t)zx->plan.nunits);
        for (int pi = 0; pi < zx->plan.npieces; pi++) {
            const struct zero_piece *pc = &zx->plan.pc[pi];
            zx->ag[pi] = zero_allgather_start(&zx->zc,
                                              zx->m->params + pc->off, pc->n);
            if (zx->ag[pi] < 0)
                zx_abort("an all-gather failed to start");
        }
    } else if (zx->stage == 3) {
        for (int k = 0; k < ZERO_SLOTS; k++)
            zx->slot_unit[k] = -1; /* the parameters changed */
        if (zx->train.n > 0) /* the next step's first unit */
            gather_start(zx, zx->train.use[0].unit, -1);
    }
}

int zero_exec_sync(struct zero_exec *zx)
{
    if (!zx->has_comm)
        return 0;
    int rc = zero_comm_wait_all(&zx->zc);
    memset(zx->ag, 0, (size_t)zx->plan.npieces * sizeof(int64_t));
    for (int k = 0; k < ZERO_SLOTS; k++)
        zx->slot_h[k][0] = zx->slot_h[k][1] = 0;
    return rc;
}

void zero_exec_after_ckpt(struct zero_exec *zx)
{
    zero_exec_sync(zx);
    for (int k = 0; k < ZERO_SLOTS; k++)
        zx->slot_unit[k] = -1;
    if (zx->offloaded)
        offload_release(&zx->off);
}
