/*
 * zero_exec.h - executes ZeRO (parallel/zero.h's plan and order of uses)
 * on the model, and the optimizer on shards and offloaded moments.
 *
 * Stages (config `zero`, over this stage's dp group):
 *   1  AdamW moments sharded.  Backward accumulates the whole gradient as
 *      without ZeRO; after a unit's last backward of the step its pieces
 *      are reduce-scattered in place in the gradient arena; each rank
 *      updates the parameters it owns; the parameter pieces are
 *      all-gathered in place, and the next forward waits for a unit's
 *      gather only when it reaches that unit (the gathers progress behind
 *      the forward).
 *   2  also gradients sharded: every backward use of a unit accumulates
 *      into a staging buffer (one for the embedding unit, two alternating
 *      for blocks); after its last use in each micro-batch the buffer is
 *      reduce-scattered and this rank's chunk added into the gradient
 *      shard, while backward goes on with the other buffer.
 *   3  also parameters sharded: before each use (forward or backward) a
 *      unit is all-gathered from the owners' shards into a working slot
 *      (one for the embedding unit, two for blocks) and the model's views
 *      bound to it; the next unit of the order is prefetched into the
 *      other slot during the use; a slot is overwritten once it is not
 *      the current unit's (freed after use).  After the update the first
 *      unit of the next step is prefetched.
 * Stage 0 with offload runs only the optimizer part (the whole arena as
 * one rank's shard).
 *
 * Mixed precision (precision=bf16; model.h): the fp32 master weights are
 * what is sharded, updated and gathered; the bf16 copy the products read
 * is rounded from them on each rank, never communicated:
 *   stage 0  AdamW refreshes the copy as it updates (adamw_update_bf16);
 *   1, 2     AdamW refreshes this rank's own chunks the same way; after
 *            the update every unit's copy is stale, and at the unit's
 *            first use, once its fp32 all-gather has landed, the other
 *            ranks' chunks of its range are rounded from the arena;
 *   3        each working slot has a bf16 twin: after a unit's gather
 *            lands, the slot is rounded into the twin (once per gather)
 *            and the model's bf16 views bound to it (gpt_bind_unit_h).
 * Rounding is elementwise and deterministic, so every stage gives the
 * bf16 bits that stage 0 gives from the same fp32 masters: the stages
 * stay bitwise equal in bf16 as in fp32.  The rounding after a gather is
 * counted as OPK_CAST, AdamW's as the optimizer's.  Gathering bf16 instead (half the bytes) would need the
 * fp32 values anyway for LayerNorm, biases and the embedding's lookup.
 *
 * Equivalence: the reduce-scatter is the ring's first half, so the owner
 * gets the bits the ring all-reduce of that piece gives; the update is
 * elementwise; the all-gather copies.  Stages 1, 2 and 3 give bitwise the
 * same steps when a step has one micro-batch (with accumulation stage 1
 * sums micro-batches before the reduction, 2 and 3 after each: round-off).
 */
#ifndef MPITRON_ZERO_EXEC_H
#define MPITRON_ZERO_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt_io.h"
#include "comm.h"
#include "model/model.h"
#include "offload.h"
#include "optim.h"
#include "pp.h"
#include "zero.h"

#define ZERO_SLOTS 3 /* working slots / staging buffers: 0 the embedding
                        unit's, 1 and 2 for blocks */

struct zero_exec {
    int stage;                  /* 0..3 */
    struct gpt *m;              /* not owned */
    struct zero_plan plan;
    struct zero_order train, eval;
    const struct zero_order *cur;
    int pos;                    /* uses of cur done */
    int embed_unit, *block_unit;
    struct zero_comm zc;        /* stage >= 1 */
    int has_comm;
    /* shards, plan.shard_n floats each (NULL where unused) */
    float *p_shard;             /* stage 3 */
    float *g_shard;             /* stage >= 2 */
    float *m_shard, *v_shard;   /* stage >= 1, or the offload mapping */
    struct offload off;
    int offloaded;
    /* stage 1/2: the all-gather of each piece after the update; stage 1:
     * its reduce-scatter (handles, 0 = none) */
    int64_t *ag, *rs;
    /* stage 3: working slots; stage >= 2: gradient staging buffers */
    float *slot[ZERO_SLOTS], *gbuf[ZERO_SLOTS];
    size_t slot_n[ZERO_SLOTS];
    int slot_unit[ZERO_SLOTS], gbuf_unit[ZERO_SLOTS];
    int64_t slot_h[ZERO_SLOTS][2], gbuf_h[ZERO_SLOTS][2];
    int gbuf_pending[ZERO_SLOTS];
    uint64_t slot_used[ZERO_SLOTS], tick;
    int last_gbuf;
    /* precision=bf16: stage 3's slots rounded to bf16 for the products
     * (hslot_unit: the unit rounded there, -1 = none yet); stage 1/2:
     * per unit, 1 = its bf16 copy waits for the gathered fp32 values
     * (AdamW rounded this rank's own chunks as it wrote them, so the
     * gather's wait rounds only the other ranks' chunks) */
    bf16 *hslot[ZERO_SLOTS];
    int hslot_unit[ZERO_SLOTS];
    unsigned char *h_stale;
    struct model_shards shards; /* m->shards points here */
    /* accounting: the bytes this executor allocated (shards, slots,
     * buffers), in addition to the model's arenas */
    size_t bytes_params, bytes_grads, bytes_optim, bytes_comm;
    size_t bytes_file;          /* offloaded moments (on disk) */
};

/*
 * Build for model m (arenas as gpt_init_arenas made them for this stage:
 * stage 0 params + grads, 1 params + grads, 2 params, 3 none) over the dp
 * group g (may be NULL for stage 0), for the pipeline's training and
 * evaluation schedules.  Allocates the shards (stage 3: the parameter
 * shard initialised exactly as the whole arena would be, from seed),
 * slots, buffers and operation pools, and sets m->shards.  offload_dir:
 * NULL for no offload.  rank: the world rank, for file names.  Not
 * collective.  Returns 0, or -1 with err.  Free with zero_exec_free.
 */
int zero_exec_init(struct zero_exec *zx, struct gpt *m, int stage,
                   const struct comm_group *g, const struct pp_schedule *train,
                   const struct pp_schedule *eval, const char *offload_dir,
                   int rank, uint64_t seed, char *err, size_t errlen);
/* The pipeline's schedules changed (a re-split of the data-parallel
 * shares changed this rank's micro-batch count): rebuild the orders of
 * unit uses from them.  Between steps only.  Returns 0, or -1 with err. */
int zero_exec_replan(struct zero_exec *zx, const struct pp_schedule *train,
                     const struct pp_schedule *eval, char *err,
                     size_t errlen);
/* Completes open operations (every dp rank calls it), frees everything. */
void zero_exec_free(struct zero_exec *zx);

/* Before a training step's schedule (train = 1: zeroes the gradients) or
 * an evaluation pass (0). */
void zero_exec_begin(struct zero_exec *zx, int train);
/* The model's events (the trainer's hook forwards them). */
void zero_exec_event(struct zero_exec *zx, enum gpt_event ev, int layer);
/* After the schedule: wait for every reduction; this rank's gradient
 * shard is complete.  0 or -1 (MPI error). */
int zero_exec_finish(struct zero_exec *zx);

/* Sums of squares of this rank's gradient shard, split into tensors split
 * over tp (*split) and replicated ones (*rep), leaving out the tensor
 * skip (-1: none; the tied wte copy on the last stage); then summed over
 * the dp group in rank order (the same bits on every rank).  Collective
 * over the dp group (stage >= 1). */
void zero_exec_sumsq(struct zero_exec *zx, int skip, double *split,
                     double *rep);
/* The gradient of tensor t that this rank holds (its shard's run of it)
 * and its length; NULL when it holds none. */
float *zero_exec_grad_of(struct zero_exec *zx, int t, size_t *len);

/* AdamW on this rank's shard (moments streamed through the mapping when
 * offloaded), then stage 1/2: start the parameter all-gathers; stage 3:
 * prefetch the next step's first unit.  lr: each tensor's learning rate
 * (lr_layer_decay), by table index; NULL: hp->lr for all. */
void zero_exec_update(struct zero_exec *zx, const struct adamw_hp *hp,
                      float scale, const float *lr);
/* Wait for every operation in flight (stage 1/2: the parameters are
 * whole again).  Collective over the dp group.  0 or -1. */
int zero_exec_sync(struct zero_exec *zx);
/* After checkpoint I/O on the shards: stage 3 forgets its slots (a read
 * changed the parameters); offloaded moments leave this process's
 * memory.  Collective over the dp group. */
void zero_exec_after_ckpt(struct zero_exec *zx);

#endif
