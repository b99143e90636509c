/*
 * ckpt_io.h - the model's side of checkpoints: maps the tensor table and
 * the training state onto ckpt/'s (name, global shape, hyperslab, pointer)
 * tensors and root attributes.
 *
 * Datasets: /model/<tensor>, /optim/m/<tensor>, /optim/v/<tensor> for every
 * tensor of the global model.  Writers: each tensor (or tp shard) is
 * written by one of the ranks holding a copy, spread by bytes over the dp
 * ranks (and the tp ranks for replicated tensors; writer_pick in
 * ckpt_io.c); the tied embedding by the first pipeline stage only.  Every
 * rank reads the hyperslab it holds.
 */
#ifndef MPITRON_CKPT_IO_H
#define MPITRON_CKPT_IO_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "grid.h"
#include "model/model.h"

struct train_state {
    int64_t step;        /* optimizer steps completed */
    int64_t tokens_seen;
};

/* Per-rank state that cannot be resharded (compression residuals): n
 * buffers of this rank, saved as /state/rank_RRRRR/<kind>_BBB.  Every rank
 * of the world passes the same n (possibly 0). */
struct rank_state {
    const char *kind;   /* e.g. "residual" */
    int n;
    float **p;
    size_t *len;
};

struct ckpt_async;
struct zero_seg;

/* What a rank holds instead of whole arenas (ZeRO, offload): runs of
 * tensors (parallel/zero.h's segs, in shard order) in shard arenas.  The
 * moments always come from m and v; the parameters from p when params is
 * set (zero = 3), else from the model's whole arena.  A tensor
 * replicated over tp is written by one tp rank; every rank reads its
 * runs. */
struct model_shards {
    int params;
    int whole;             /* the runs are whole tensors, the same on every
                              dp rank (offload without ZeRO): one dp rank
                              writes each, as for the arenas */
    const struct zero_seg *seg;
    int nseg;
    float *p, *m, *v;
};

/* Save parameters, moments and state as step st->step under
 * c->run_dir/ckpt.  Collective over g->world.  Returns 0 (path_out set) or
 * -1 with err. */
int model_ckpt_save(const struct grid *g, struct gpt *m,
                    const struct config *c, const struct train_state *st,
                    const struct rank_state *rs, char *path_out,
                    size_t pathlen, char *err, size_t errlen);

/* The same, started on the asynchronous saver a (ckpt_save_async_start):
 * returns once every tensor is copied; the caller collects the status
 * with ckpt_save_async_wait. */
int model_ckpt_save_async(const struct grid *g, struct gpt *m,
                          const struct config *c,
                          const struct train_state *st,
                          const struct rank_state *rs, struct ckpt_async *a,
                          char *err, size_t errlen);

/* Load from path.  The checkpoint's model keys must equal c's (else an
 * error listing the keys that differ).  weights_only: parameters only
 * (init_from), state untouched; else moments too and *st from the file,
 * and the per-rank state rs (may be NULL) when the checkpoint was written
 * with the same layout and compression; otherwise that state is dropped
 * with a warning (it cannot be resharded) and rs is zeroed.
 * Collective.  Returns 0, -2 with err when the checkpoint holds another
 * model (a refusal: its keys differ), or -1 with err when it cannot be
 * read; on error m may be partly overwritten (the caller loads another
 * checkpoint or exits). */
int model_ckpt_load(const struct grid *g, struct gpt *m,
                    const struct config *c, const char *path,
                    int weights_only, struct train_state *st,
                    const struct rank_state *rs, char *err, size_t errlen);

/* gpt_config from the run config. */
void gpt_config_from(const struct config *c, struct gpt_config *gc);

#endif
