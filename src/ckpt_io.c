#include "ckpt_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "comm.h"
#include "log.h"
#include "ops/ops.h"
#include "zero.h"

void gpt_config_from(const struct config *c, struct gpt_config *gc)
{
    gc->n_layer = c->n_layer;
    gc->n_embd = c->n_embd;
    gc->n_head = c->n_head;
    gc->n_kv_head = c->n_kv_head ? c->n_kv_head : c->n_head;
    gc->seq_len = c->seq_len;
    gc->vocab_size = c->vocab_size;
    gc->attn_window = c->attn_window;
    gc->dropout = c->dropout;
    gc->label_smoothing = c->label_smoothing;
    gc->z_loss = c->z_loss;
    gc->attn = !strcmp(c->attn, "linear") ? ATTN_LINEAR
               : !strcmp(c->attn, "sparse") ? ATTN_SPARSE : ATTN_FULL;
    gc->attn_block = c->attn_block;
    gc->attn_stride = c->attn_stride;
    gc->doc_mask = c->doc_mask;
    gc->precision = strcmp(c->precision, "bf16") == 0 ? GPT_BF16 : GPT_FP32;
    gc->recompute = !strcmp(c->recompute, "full") ? GPT_RECOMPUTE_FULL
                    : !strcmp(c->recompute, "selective")
                        ? GPT_RECOMPUTE_SELECTIVE : GPT_RECOMPUTE_NONE;
}

static const char *const group_names[3] = {"/model/", "/optim/m/",
                                           "/optim/v/"};

static void free_list(struct ckpt_tensor *t, int n)
{
    for (int i = 0; i < n; i++)
        free((char *)t[i].name);
    free(t);
}

/* Who writes which tensor.  Every element is written by exactly one of
 * the ranks holding an identical copy of it: the dp ranks of a tp shard,
 * and for a tensor replicated over tp every (dp, tp) rank of the stage.
 * The writes are spread over those ranks by bytes: in list order (the
 * three groups, then the table), each tensor (or tp shard) goes to the
 * candidate with the fewest bytes so far, lowest index on ties, so every
 * rank of the stage computes the same plan from the same global shapes.
 * The tied embedding is written by the first stage only.  load is
 * dp * tp doubles, zeroed; returns whether this rank writes. */
static int writer_pick(const struct grid *g, const struct gpt *m,
                       const struct tensor_desc *ld, double *load)
{
    double bytes = sizeof(float);
    int best = -1;

    if (strcmp(ld->name, "wte") == 0 && !m->first)
        return 0;
    for (int d = 0; d < ld->ndim; d++)
        bytes *= (double)ld->gshape[d];
    if (ld->tp_dim < 0) { /* replicated: any (dp, tp) rank of the stage */
        for (int r = 0; r < g->dp * g->tp; r++)
            if (best < 0 || load[r] < load[best])
                best = r;
        load[best] += bytes;
        return best == g->dp_rank * g->tp + g->tp_rank;
    }
    for (int t = 0; t < g->tp; t++) { /* each shard: one of its dp ranks */
        int d0 = 0;
        for (int d = 1; d < g->dp; d++)
            if (load[d * g->tp + t] < load[d0 * g->tp + t])
                d0 = d;
        load[d0 * g->tp + t] += bytes / g->tp;
        if (t == g->tp_rank)
            best = d0;
    }
    return best == g->dp_rank;
}

/* A tensor that this rank holds as a ZeRO run (sh: the shards): its
 * local hyperslab with the run as a flat range, or nothing when it holds
 * none of it (or, for_write, another rank writes it: a tensor replicated
 * over tp is written by tp rank (its global index mod tp), the tied wte
 * by the first stage). */
static void shard_entry(const struct grid *g, const struct gpt *m,
                        const struct model_shards *sh, float *base, int li,
                        int gi, int for_write, struct ckpt_tensor *c)
{
    const struct tensor_desc *ld = &m->tt.t[li];
    if (for_write && ld->tp_dim < 0 && gi % g->tp != g->tp_rank)
        return;
    if (for_write && strcmp(ld->name, "wte") == 0 && !m->first)
        return;
    for (int i = 0; i < sh->nseg; i++) {
        const struct zero_seg *s = &sh->seg[i];
        if (s->tensor != li || s->len == 0)
            continue;
        for (int d = 0; d < ld->ndim; d++) {
            c->start[d] = ld->start[d];
            c->count[d] = ld->count[d];
        }
        c->flat_off = (int64_t)s->t_off;
        c->flat_len = (int64_t)s->len;
        c->data = base + s->shard_off;
        return;
    }
}

/* Build the ckpt tensor list (3 per global tensor, or 1 when params_only).
 * Names are malloc'ed dataset paths (free_list).  A tensor of another
 * stage, or (for_write) one another rank writes (writer_pick), is listed
 * with no hyperslab.  Returns the count, or -1 when out of memory. */
static int build_list(const struct grid *g, struct gpt *m, int params_only,
                      int for_write, struct ckpt_tensor **out)
{
    struct tensor_table gt;
    if (gpt_global_table(&m->cfg, &gt) < 0)
        return -1;
    int ng = params_only ? 1 : 3, n = gt.n * ng;
    struct ckpt_tensor *t = calloc((size_t)n, sizeof(*t));
    double *load = calloc((size_t)g->dp * (size_t)g->tp, sizeof(double));
    if (!t || !load) {
        free(t);
        free(load);
        tensor_table_free(&gt);
        return -1;
    }
    float *arena[3] = {m->params, m->m, m->v};
    int oom = 0;
    for (int k = 0; k < ng; k++)
        for (int i = 0; i < gt.n; i++) {
            const struct tensor_desc *gd = &gt.t[i];
            struct ckpt_tensor *c = &t[k * gt.n + i];
            size_t len = strlen(group_names[k]) + strlen(gd->name) + 1;
            char *name = malloc(len);
            if (name)
                snprintf(name, len, "%s%s", group_names[k], gd->name);
            oom |= !name;
            c->name = name;
            c->ndim = gd->ndim;
            for (int d = 0; d < gd->ndim; d++)
                c->gshape[d] = gd->gshape[d];
            int li = tensor_table_find(&m->tt, gd->name);
            if (li < 0)
                continue; /* another stage holds it */
            const struct model_shards *sh = m->shards;
            const struct tensor_desc *ld = &m->tt.t[li];
            if (sh && (k > 0 || sh->params)) { /* ZeRO: this rank's run */
                float *sbase[3] = {sh->p, sh->m, sh->v};
                if (sh->whole && for_write && !writer_pick(g, m, ld, load))
                    continue; /* every dp rank holds it: one writes */
                shard_entry(g, m, sh, sbase[k], li, i,
                            for_write && !sh->whole, c);
                continue;
            }
            if (for_write && !writer_pick(g, m, ld, load))
                continue;
            for (int d = 0; d < ld->ndim; d++) {
                c->start[d] = ld->start[d];
                c->count[d] = ld->count[d];
            }
            c->data = arena[k] + ld->off;
        }
    free(load);
    tensor_table_free(&gt);
    if (oom) {
        free_list(t, n);
        return -1;
    }
    *out = t;
    return n;
}

/* Append /state/rank_R/<kind>_B for every rank R of the world and buffer
 * B (lengths gathered from all ranks); this rank fills only its own. */
static int add_state(const struct grid *g, const struct rank_state *rs,
                     struct ckpt_tensor **t, int n)
{
    int ns = rs ? rs->n : 0, maxns = 0;
    MPI_Allreduce(&ns, &maxns, 1, MPI_INT, MPI_MAX, g->world);
    if (maxns == 0)
        return n;
    long long *mine = calloc((size_t)maxns, sizeof(long long));
    long long *all = calloc((size_t)maxns * g->size, sizeof(long long));
    struct ckpt_tensor *nt = realloc(*t, (size_t)(n + maxns * g->size) *
                                             sizeof(**t));
    if (nt)
        *t = nt;
    if (!mine || !all || !nt) {
        free(mine);
        free(all);
        return -1;
    }
    for (int b = 0; b < ns; b++)
        mine[b] = (long long)rs->len[b];
    MPI_Allgather(mine, maxns, MPI_LONG_LONG, all, maxns, MPI_LONG_LONG,
                  g->world);
    for (int r = 0; r < g->size; r++)
        for (int b = 0; b < maxns; b++) {
            struct ckpt_tensor *c = &nt[n++];
            memset(c, 0, sizeof(*c));
            char *name = malloc(96);
            if (name)
                snprintf(name, 96, "/state/rank_%05d/%s_%03d", r,
                         rs && rs->kind ? rs->kind : "state", b);
            c->name = name;
            c->ndim = 1;
            c->gshape[0] = all[(size_t)r * maxns + b];
            if (r == g->rank && b < ns) {
                c->count[0] = c->gshape[0];
                c->data = rs->p[b];
            }
        }
    free(mine);
    free(all);
    return n;
}

/* Every element of every dataset is written by exactly one rank: the
 * elements the ranks write, summed over the world, must be each dataset's
 * size.  Datasets are never filled, so a hole would read as zeros and
 * still verify, and two writers could mix replicas; this catches a wrong
 * writer rule before anything is written.  Collective over the world (the
 * same verdict everywhere).  Returns 0, or -1 with err naming the first
 * dataset at fault. */
static int check_plan(const struct grid *g, const struct ckpt_tensor *t,
                      int n, char *err, size_t errlen)
{
    long long *cnt = calloc((size_t)(n ? n : 1), sizeof(*cnt));
    if (comm_agree(g->world, cnt ? 0 : -1, NULL, 0) < 0) {
        free(cnt);
        snprintf(err, errlen, "out of memory checking the checkpoint plan");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        long long k = t[i].data ? 1 : 0;
        for (int d = 0; d < t[i].ndim; d++)
            k *= t[i].count[d];
        cnt[i] = k && t[i].flat_len > 0 ? t[i].flat_len : k;
    }
    MPI_Allreduce(MPI_IN_PLACE, cnt, n, MPI_LONG_LONG, MPI_SUM, g->world);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        long long want = 1;
        for (int d = 0; d < t[i].ndim; d++)
            want *= t[i].gshape[d];
        if (cnt[i] != want) {
            char lay[128];
            grid_layout_string(g, lay, sizeof(lay));
            snprintf(err, errlen, "checkpoint plan: %s would get %lld "
                     "elements written of its %lld at %s (a writer-rule "
                     "bug; nothing was written)", t[i].name, cnt[i], want,
                     lay);
            rc = -1;
        }
    }
    free(cnt);
    return rc;
}

/* Save synchronously (a == NULL) or start an asynchronous save on a. */
static int save_any(const struct grid *g, struct gpt *m,
                    const struct config *c, const struct train_state *st,
                    const struct rank_state *rs, struct ckpt_async *a,
                    char *path_out, size_t pathlen, char *err, size_t errlen)
{
    struct ckpt_tensor *t;
    int n = build_list(g, m, 0, 1, &t);
    int n2 = n < 0 ? -1 : add_state(g, rs, &t, n);
    if (n2 < 0) {
        if (n >= 0)
            free_list(t, n);
        snprintf(err, errlen, "out of memory listing checkpoint tensors");
        return -1;
    }
    if (check_plan(g, t, n2, err, errlen) < 0) {
        free_list(t, n2);
        return -1;
    }
    struct ckpt_meta meta = {
        .step = st->step, .tokens_seen = st->tokens_seen,
        .data_cursor = st->step, .rng_seed = c->seed,
    };
    grid_layout_string(g, meta.layout, sizeof(meta.layout));
    meta.config_text = config_to_text(c);
    char dir[CONFIG_STR_MAX + 8];
    snprintf(dir, sizeof(dir), "%s/ckpt", c->run_dir);
    int rc = a ? ckpt_save_async_start(a, dir, &meta, t, n2, err, errlen)
               : ckpt_save(g->world, dir, &meta, t, n2, path_out, pathlen,
                           err, errlen);
    free(meta.config_text);
    free_list(t, n2);
    return rc;
}

int model_ckpt_save(const struct grid *g, struct gpt *m,
                    const struct config *c, const struct train_state *st,
                    const struct rank_state *rs, char *path_out,
                    size_t pathlen, char *err, size_t errlen)
{
    return save_any(g, m, c, st, rs, NULL, path_out, pathlen, err, errlen);
}

int model_ckpt_save_async(const struct grid *g, struct gpt *m,
                          const struct config *c,
                          const struct train_state *st,
                          const struct rank_state *rs, struct ckpt_async *a,
                          char *err, size_t errlen)
{
    return save_any(g, m, c, st, rs, a, NULL, 0, err, errlen);
}

/* The value of key in INI text ("key = value" lines), into out. */
static void key_value(const char *text, const char *key, char *out,
                      size_t len)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n')) {
        while (*p == '\n')
            p++;
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ') {
            const char *v = strchr(p, '=');
            if (!v)
                return;
            v += 2;
            size_t n = strcspn(v, "\n");
            snprintf(out, len, "%.*s", (int)n, v);
            return;
        }
    }
}

/* The checkpoint's config must describe the same model shape. */
static int check_shape(const struct config *c, const char *text,
                       const char *path, char *err, size_t errlen)
{
    struct config ck;
    char e[256];
    config_defaults(&ck);
    if (config_load_text(&ck, text, path, e, sizeof(e)) < 0 ||
        config_finalize(&ck, e, sizeof(e)) < 0) {
        snprintf(err, errlen, "%s: unreadable config text: %s", path, e);
        return -1;
    }
    char diff[512];
    if (config_diff_model(c, &ck, diff, sizeof(diff)) > 0) {
        /* name each differing key with both values */
        char *cur = config_to_text(c), *old = config_to_text(&ck);
        size_t len = (size_t)snprintf(err, errlen, "%s holds a different "
                                      "model; keys that differ (checkpoint "
                                      "-> this run):", path);
        const char *sep = "";
        for (char *k = strtok(diff, ", "); k && len < errlen;
             k = strtok(NULL, ", ")) {
            char a[64] = "?", b[64] = "?";
            key_value(old, k, a, sizeof(a));
            key_value(cur, k, b, sizeof(b));
            len += (size_t)snprintf(err + len, errlen - len, "%s %s %s -> %s",
                                    sep, k, a, b);
            sep = ",";
        }
        free(cur);
        free(old);
        return -2;
    }
    return 0;
}

/* Same layout, compression and buckets (bucket_mb cuts the residuals)
 * as this run: per-rank state can be read. */
static int state_compatible(const struct grid *g, const struct config *c,
                            const struct ckpt_meta *meta)
{
    char layout[128], comp[64] = "", mb[64] = "";
    const char *text = meta->config_text ? meta->config_text : "";
    grid_layout_string(g, layout, sizeof(layout));
    key_value(text, "compress", comp, sizeof(comp));
    key_value(text, "bucket_mb", mb, sizeof(mb));
    size_t l = strlen(comp); /* strip the quotes of the INI text */
    if (l >= 2 && comp[0] == '"') {
        memmove(comp, comp + 1, l - 2);
        comp[l - 2] = 0;
    }
    char *end;
    float stored = strtof(mb, &end); /* written with %.9g: exact */
    return strcmp(layout, meta->layout) == 0 &&
           strcmp(comp, c->compress) == 0 && end != mb &&
           stored == c->bucket_mb;
}

/* Per-rank compression residuals that cannot be read start from zero. */
static void state_zero(const struct rank_state *rs)
{
    for (int b = 0; b < rs->n; b++)
        memset(rs->p[b], 0, rs->len[b] * sizeof(float));
}

static int load_state(const struct grid *g, const struct config *c,
                      const char *path, const struct ckpt_meta *meta,
                      const struct rank_state *rs, char *err, size_t errlen)
{
    int n = rs ? rs->n : 0;
    if (n == 0)
        return 0;
    if (!state_compatible(g, c, meta)) {
        log_warn(g->world, "%s was written with layout '%s' (or another "
                 "compress or bucket_mb): per-rank compression state "
                 "(error-feedback residuals) cannot be resharded and "
                 "starts from zero", path, meta->layout);
        state_zero(rs);
        return 0;
    }
    struct ckpt_tensor *t = NULL;
    int nt = add_state(g, rs, &t, 0);
    if (nt < 0) {
        snprintf(err, errlen, "out of memory listing state tensors");
        return -1;
    }
    int rc = ckpt_read_tensors(g->world, path, t, nt, err, errlen);
    free_list(t, nt);
    if (rc < 0) {
        /* the weights and moments are read; residuals cut otherwise (a
         * new stage partition under the same layout, say) are optional
         * state: dropped, not a reason to pass over the checkpoint */
        log_warn(MPI_COMM_SELF, "rank %d: %s: per-rank compression state "
                 "(error-feedback residuals) not read (%s): it starts from "
                 "zero", g->rank, path, err);
        state_zero(rs);
    }
    return 0;
}

int model_ckpt_load(const struct grid *g, struct gpt *m,
                    const struct config *c, const char *path,
                    int weights_only, struct train_state *st,
                    const struct rank_state *rs, char *err, size_t errlen)
{
    struct ckpt_meta meta;
    memset(&meta, 0, sizeof(meta));
    if (ckpt_read_meta(g->world, path, &meta, err, errlen) < 0)
        return -1;
    int rc = check_shape(c, meta.config_text ? meta.config_text : "", path,
                         err, errlen);
    int other_model = rc == -2;
    struct ckpt_tensor *t = NULL;
    int n = rc < 0 ? 0 : build_list(g, m, weights_only, 0, &t);
    if (n < 0) {
        snprintf(err, errlen, "out of memory listing checkpoint tensors");
        rc = -1;
    }
    if (rc == 0)
        rc = ckpt_read_tensors(g->world, path, t, n, err, errlen);
    if (t)
        free_list(t, n);
    if (rc == 0)
        gpt_refresh_bf16(m); /* the weights changed */
    if (rc == 0 && !weights_only) {
        rc = load_state(g, c, path, &meta, rs, err, errlen);
        st->step = meta.step;
        st->tokens_seen = meta.tokens_seen;
    }
    free(meta.config_text);
    return other_model ? -2 : rc < 0 ? -1 : 0;
}
