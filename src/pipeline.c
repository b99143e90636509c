/*
 * pipeline.c - executes parallel/pp.c's action lists on the model.
 */
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "log.h"
#include "phase.h"
#include "tensor.h"

int pipeline_init(struct pipeline *pl, const struct gpt *m, MPI_Comm pp_comm,
                  int p, int s, enum pp_kind kind, int nmb, int B, int T,
                  char *err, size_t errlen)
{
    memset(pl, 0, sizeof(*pl));
    pl->p = p;
    pl->s = s;
    pl->m = nmb;
    pl->B = B;
    pl->T = T;
    pl->n = (size_t)B * (size_t)T * (size_t)m->cfg.n_embd;
    if (pp_schedule_build(&pl->sc, kind, p, s, nmb, 0, err, errlen) < 0 ||
        pp_schedule_build(&pl->ev, kind, p, s, nmb, 1, err, errlen) < 0)
        goto fail;
    pl->cur = &pl->sc;
    if (!(pl->alt = calloc((size_t)nmb, sizeof(*pl->alt))))
        goto oom;
    int ns = pl->sc.nslots > pl->ev.nslots ? pl->sc.nslots : pl->ev.nslots;
    if (pp_link_init(&pl->link, pp_comm, ns) < 0) {
        snprintf(err, errlen, "pipeline stage %d of %d: cannot set up the "
                 "point-to-point link (MPI error, or MPI_TAG_UB too small "
                 "for %d micro-batches)", s, p, nmb);
        goto fail;
    }
    pl->slot = calloc((size_t)ns, sizeof(*pl->slot));
    pl->size = malloc((size_t)nmb * sizeof(int));
    pl->first = malloc((size_t)nmb * sizeof(int));
    if (!pl->slot || !pl->size || !pl->first)
        goto oom;
    pipeline_set_sizes(pl, NULL);
    pl->slow = 1.0;
    for (int i = 0; i < ns; i++) {
        if (gpt_acts_init_shared(&pl->slot[i], m, B, T,
                                 i ? &pl->slot[0] : NULL) < 0)
            goto oom;
        pl->act_bytes += pl->slot[i].bytes;
        pl->saved_bytes += pl->slot[i].saved_bytes;
    }
    if (!m->last) { /* d(output) arrives from the next stage */
        if (!(pl->gin = tensor_arena_alloc((size_t)ns * pl->n)))
            goto oom;
        pl->act_bytes += (size_t)ns * pl->n * sizeof(float);
        pl->link_bytes += (size_t)ns * pl->n * sizeof(float);
    }
    if (!m->first) { /* d(input) leaves for the previous stage */
        if (!(pl->gout = tensor_arena_alloc((size_t)ns * pl->n)))
            goto oom;
        pl->act_bytes += (size_t)ns * pl->n * sizeof(float);
        pl->link_bytes += (size_t)ns * pl->n * sizeof(float);
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory allocating %d pipeline slots of "
             "activations (micro_batch=%d seq_len=%d)", pl->sc.nslots, B, T);
fail:
    pipeline_free(pl);
    return -1;
}

size_t pipeline_bytes(const struct gpt *m, int p, int s, enum pp_kind kind,
                      int nmb, int B, int T)
{
    struct pp_schedule sc, ev;
    char err[256];
    if (pp_schedule_build(&sc, kind, p, s, nmb, 0, err, sizeof err) < 0)
        return (size_t)-1;
    if (pp_schedule_build(&ev, kind, p, s, nmb, 1, err, sizeof err) < 0) {
        pp_schedule_free(&sc);
        return (size_t)-1;
    }
    int ns = sc.nslots > ev.nslots ? sc.nslots : ev.nslots;
    pp_schedule_free(&sc);
    pp_schedule_free(&ev);
    size_t saved, own = gpt_acts_bytes(m, B, T, 0, &saved);
    size_t lent = gpt_acts_bytes(m, B, T, 1, &saved);
    if (own == (size_t)-1 || lent == (size_t)-1)
        return (size_t)-1;
    size_t n = (size_t)B * (size_t)T * (size_t)m->cfg.n_embd;
    size_t links = (size_t)(!m->last) + (size_t)(!m->first);
    return own + (size_t)(ns - 1) * lent + links * (size_t)ns * n *
           sizeof(float);
}

int pipeline_add_schedule(struct pipeline *pl, enum pp_kind kind, int k,
                          char *err, size_t errlen)
{
    if (k < 1 || k >= pl->m || pl->alt[k].a)
        return 0;
    if (pp_schedule_build(&pl->alt[k], kind, pl->p, pl->s, k, 0, err,
                          errlen) < 0)
        return -1;
    return 0;
}

void pipeline_set_shape(struct pipeline *pl, const struct gpt *m, int k,
                        int B, int T)
{
    pl->cur = k == pl->m ? &pl->sc : &pl->alt[k];
    if (!pl->cur->a || (size_t)B * (size_t)T * (size_t)m->cfg.n_embd !=
                           pl->n) {
        fprintf(stderr, "mpitron: pipeline shape %d x %d x %d not "
                "prepared\n", k, B, T);
        abort(); /* a broken invariant of the batch plan */
    }
    if (B == pl->B && T == pl->T)
        return;
    int ns = pl->sc.nslots > pl->ev.nslots ? pl->sc.nslots : pl->ev.nslots;
    for (int i = 0; i < ns; i++)
        gpt_acts_reshape(&pl->slot[i], m, B, T, i ? &pl->slot[0] : NULL);
    if (pl->has_pad) /* debug_slow_rank's scratch, built at the full shape */
        gpt_acts_reshape(&pl->pad, m, B, T, NULL);
    pl->B = B;
    pl->T = T;
    pipeline_set_sizes(pl, NULL);
}

void pipeline_free(struct pipeline *pl)
{
    int ns = pl->sc.nslots > pl->ev.nslots ? pl->sc.nslots : pl->ev.nslots;
    if (pl->link.recv) /* first: requests may still point into buffers */
        pp_link_free(&pl->link);
    if (pl->slot)
        for (int i = ns - 1; i >= 0; i--)
            gpt_acts_free(&pl->slot[i]);
    free(pl->slot);
    free(pl->size);
    free(pl->first);
    if (pl->has_pad)
        gpt_acts_free(&pl->pad);
    free(pl->gin);
    free(pl->gout);
    for (int k = 0; pl->alt && k < pl->m; k++)
        if (pl->alt[k].a)
            pp_schedule_free(&pl->alt[k]);
    free(pl->alt);
    pp_schedule_free(&pl->sc);
    pp_schedule_free(&pl->ev);
    memset(pl, 0, sizeof(*pl));
}

void pipeline_set_sizes(struct pipeline *pl, const int *size)
{
    for (int k = 0, at = 0; k < pl->m; k++) {
        pl->size[k] = size ? size[k] : pl->B;
        pl->first[k] = at;
        at += pl->size[k];
    }
}

int pipeline_set_slow(struct pipeline *pl, const struct gpt *m, double slow)
{
    pl->slow = slow > 1.0 ? slow : 1.0;
    if (pl->slow == 1.0 || pl->has_pad)
        return 0;
    if (gpt_acts_init(&pl->pad, m, pl->B, pl->T) < 0)
        return -1;
    pl->has_pad = 1;
    return 0;
}

/* The activations of a slot hold B sequences; micro-batch k uses the
 * first size[k] of every buffer (each is laid out (B, ...) from its
 * start), so shrinking B and N is all a smaller micro-batch needs. */
static void use_size(struct gpt_acts *a, int b)
{
    a->B = b;
    a->N = (size_t)b * (size_t)a->T;
}

/* One padding forward of the current micro-batch on the scratch. */
struct pad_ctx {
    struct pipeline *pl;
    struct gpt *m;
    const int32_t *inp, *tgt;
    const struct gpt_pos *pos;
};

static void pad_forward(void *ctx)
{
    struct pad_ctx *pc = ctx;
    gpt_forward(pc->m, &pc->pl->pad, pc->inp, pc->tgt, pc->pos);
}

/* debug_slow_rank: pad a kernel of t seconds on micro-batch a's input. */
static void slow_down(struct pipeline *pl, struct gpt *m,
                      const struct gpt_acts *a, const int32_t *inp,
                      const int32_t *tgt, const struct gpt_pos *pos, double t)
{
    if (pl->slow <= 1.0)
        return;
    use_size(&pl->pad, a->B);
    if (!m->first)
        memcpy(pl->pad.emb, a->emb,
               a->N * (size_t)m->cfg.n_embd * sizeof(float));
    struct pad_ctx pc = {pl, m, inp, tgt, pos};
    pl->padding = 1; /* its uses are not the schedule's (ZeRO) */
    calib_slow_pad(pl->slow, t, pad_forward, &pc);
    pl->padding = 0;
}

/* Progress the pipeline's transfers between kernels, then whatever hook
 * the model had (the data-parallel buckets). */
struct progress_ctx {
    struct pipeline *pl;
    gpt_hook_fn inner;
    void *inner_ctx;
};

static void progress_hook(void *ctx, enum gpt_event ev, int layer)
{
    struct progress_ctx *pc = ctx;
    if (ev == GPT_PROGRESS && pc->pl->p > 1)
        pp_link_progress(&pc->pl->link);
    if (pc->pl->padding && ev != GPT_PROGRESS)
        return;
    if (pc->inner)
        pc->inner(pc->inner_ctx, ev, layer);
}

/* Run one action list.  Micro-batch k's activations are in slot k % ns
 * of this list; the link numbers its slots by k % link.nslots, which can
 * be larger (the forward-only list has one slot): so before a slot is
 * overwritten, the send of its previous holder k - ns is waited for. */
static double run(struct pipeline *pl, const struct pp_schedule *sc,
                  struct gpt *m, const int32_t *inp, const int32_t *tgt,
                  float dloss, const struct gpt_pos *pos0)
{
    struct pp_link *l = &pl->link;
    size_t T = (size_t)pl->T, C = (size_t)m->cfg.n_embd;
    int ns = sc->nslots, last_bwd = -1;
    for (int i = 0; i < sc->n; i++)
        if (sc->a[i].op == PP_BWD)
            last_bwd = i;
    struct progress_ctx pc = {pl, m->hook, m->hook_ctx};
    m->hook = progress_hook;
    m->hook_ctx = &pc;
    int final = m->hook_final;
    double loss = 0.0, t0 = now_s();
    l->t_wait = 0.0;
    pl->t_busy = 0.0;
    for (int i = 0; i < sc->n; i++) {
        int k = sc->a[i].mb, sl = k % ns;
        struct gpt_acts *a = &pl->slot[sl];
        struct gpt_pos pos = *pos0;
        pos.seq0 = pos0->seq0 + pl->first[k];
        if (pos0->dstart)
            pos.dstart = pos0->dstart + (size_t)pl->first[k] * T;
        size_t n = (size_t)pl->size[k] * T * C, gn = pl->n;
        const int32_t *ik = inp + (size_t)pl->first[k] * T;
        const int32_t *tk = tgt + (size_t)pl->first[k] * T;
        use_size(a, pl->size[k]);
        double t;
        switch (sc->a[i].op) {
        case PP_RECV_ACT:
            pp_link_post_recv(l, a->emb, n, k, 0);
            break;
        case PP_FWD:
            if (!m->first)
                pp_link_wait_recv(l, k);
            if (k >= ns) /* the slot's previous holder's output is sent */
                pp_link_wait_send(l, k - ns);
            phase_enter(PHASE_COMPUTE, "forward", k + 1, sc->m, -1, NULL);
            t = now_s();
            loss += gpt_forward(m, a, ik, tk, &pos);
            slow_down(pl, m, a, ik, tk, &pos, now_s() - t);
            pl->t_busy += now_s() - t;
            break;
        case PP_SEND_ACT:
            pp_link_send(l, gpt_stage_output(m, a), n, k, 0);
            break;
        case PP_RECV_GRAD:
            pp_link_post_recv(l, pl->gin + (size_t)sl * gn, n, k, 1);
            break;
        case PP_BWD:
            if (!m->last) {
                pp_link_wait_recv(l, k);
                memcpy(a->dres, pl->gin + (size_t)sl * gn, n * sizeof(float));
            }
            m->hook_final = final && i == last_bwd;
            phase_enter(PHASE_COMPUTE, "backward", k + 1, sc->m, -1, NULL);
            t = now_s();
            gpt_backward(m, a, dloss, &pos);
            slow_down(pl, m, a, ik, tk, &pos, now_s() - t);
            pl->t_busy += now_s() - t;
            break;
        case PP_SEND_GRAD:
            pp_link_wait_send(l, k);
            memcpy(pl->gout + (size_t)sl * gn, a->dres, n * sizeof(float));
            pp_link_send(l, pl->gout + (size_t)sl * gn, n, k, 1);
            break;
        }
    }
    pp_link_wait_all(l);
    pl->t_total = now_s() - t0;
    m->hook = pc.inner;
    m->hook_ctx = pc.inner_ctx;
    m->hook_final = final;
    return loss;
}

double pipeline_train(struct pipeline *pl, struct gpt *m, const int32_t *inp,
                      const int32_t *tgt, float dloss,
                      const struct gpt_pos *pos)
{
    m->hook_final = 1;
    return run(pl, pl->cur, m, inp, tgt, dloss, pos);
}

double pipeline_eval(struct pipeline *pl, struct gpt *m, const int32_t *inp,
                     const int32_t *tgt, const struct gpt_pos *pos)
{
    double busy = pl->t_busy, total = pl->t_total;
    double loss = run(pl, &pl->ev, m, inp, tgt, 0.0f, pos);
    pl->t_busy = busy; /* keep the training step's figures */
    pl->t_total = total;
    return loss;
}
