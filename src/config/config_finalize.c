/*
 * config_finalize.c - the cross-key checks run once every source (file,
 * command line, checkpoint) has been applied: model shape, pipeline
 * partition, balance, and the per-key checks again for fields set
 * directly.
 */
#include "config_internal.h"

#include "data/batch.h"
#include "codec.h"
#include "gemm.h"
#include "data/mix.h"
#include "pp.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- cross-key checks ------------------------------------------------------ */

static int finalize_model(const struct config *c, char *err, size_t errlen)
{
    if (c->n_embd % c->n_head != 0) {
        seterr(err, errlen, "n_embd=%d is not divisible by n_head=%d",
               c->n_embd, c->n_head);
        return -1;
    }
    if (c->n_kv_head > c->n_head) {
        seterr(err, errlen, "n_kv_head=%d exceeds n_head=%d", c->n_kv_head,
               c->n_head);
        return -1;
    }
    if (c->n_kv_head > 0 && c->n_head % c->n_kv_head != 0) {
        seterr(err, errlen, "n_head=%d is not divisible by n_kv_head=%d",
               c->n_head, c->n_kv_head);
        return -1;
    }
    if (strcmp(c->attn, "full") != 0 && c->attn_window > 0) {
        seterr(err, errlen, "attn_window=%d applies to attn=full only "
               "(attn=%s)", c->attn_window, c->attn);
        return -1;
    }
    if (c->pp > c->n_layer) {
        seterr(err, errlen, "pp=%d exceeds n_layer=%d: every pipeline "
                            "stage needs at least one layer", c->pp,
               c->n_layer);
        return -1;
    }
    return 0;
}

/* An explicit pp_partition: one entry per stage, the blocks adding up. */
static int finalize_partition(const struct config *c, char *err,
                              size_t errlen)
{
    if (!strcmp(c->pp_partition, "auto") ||
        !strcmp(c->pp_partition, "params"))
        return 0;
    int b[1024], n = config_int_list(c->pp_partition, b, 1024), sum = 0;
    for (int i = 0; i < n && i < 1024; i++)
        sum += b[i];
    if (n != c->pp) {
        seterr(err, errlen, "pp_partition=%s has %d entries: it needs one "
               "per pipeline stage (pp=%d)", c->pp_partition, n, c->pp);
        return -1;
    }
    if (sum != c->n_layer) {
        seterr(err, errlen, "pp_partition=%s places %d blocks: it must "
               "place all n_layer=%d", c->pp_partition, sum, c->n_layer);
        return -1;
    }
    return 0;
}

/* Load balance (balance=on, rebalance_every) against the batch plan and
 * micro_batch=auto; the micro-batch divides the batch unless balanced
 * (shares of any size, micro-batches up to micro_batch). */
static int finalize_balance(const struct config *c, char *err, size_t errlen)
{
    int balanced = !strcmp(c->balance, "on") || c->rebalance_every > 0;
    char bkey[48];
    if (!strcmp(c->balance, "on"))
        snprintf(bkey, sizeof bkey, "balance=on");
    else
        snprintf(bkey, sizeof bkey, "rebalance_every=%d", c->rebalance_every);
    int ramp = c->batch_ramp[0] && strcmp(c->batch_ramp, "0") != 0;
    int slw = c->seq_len_warmup[0] && strcmp(c->seq_len_warmup, "0") != 0;
    if (balanced && (ramp || slw)) {
        /* shares by speed are cut from the full batch; the plan's smaller
         * or reshaped steps are cut in equal slices */
        const char *k = ramp ? "batch_ramp" : "seq_len_warmup";
        seterr(err, errlen, "%s=%s with %s: the batch plan's smaller or "
               "reshaped steps are split equally over the data-parallel "
               "ranks, the balanced shares only the full batch; use %s=0 "
               "(or balance=off and rebalance_every=0)", k,
               ramp ? c->batch_ramp : c->seq_len_warmup, bkey, k);
        return -1;
    }
    if (balanced && c->micro_batch == CONFIG_MB_AUTO) {
        seterr(err, errlen, "micro_batch=auto with %s: the shares by speed "
               "are measured at the chosen micro-batch; give micro_batch "
               "(or balance=off and rebalance_every=0)", bkey);
        return -1;
    }
    if (!balanced && c->micro_batch > 0 &&
        c->batch_size % c->micro_batch != 0) {
        seterr(err, errlen, "micro_batch=%d does not divide batch_size=%d",
               c->micro_batch, c->batch_size);
        return -1;
    }
    return 0;
}

int config_finalize(struct config *c, char *err, size_t errlen)
{
    /* per-key checks again: fields may have been set directly */
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        char why[256], val[CONFIG_STR_MAX];
        if (k->check && k->check(c, k, why, sizeof why) != 0) {
            config_value_format(c, k, val, sizeof val);
            seterr(err, errlen, "%s=%s: %s", k->name, val, why);
            return -1;
        }
    }
    if (finalize_model(c, err, errlen) != 0 ||
        finalize_partition(c, err, errlen) != 0)
        return -1;
    if (c->zero > 0 && strcmp(c->compress, "none") != 0) {
        /* every codec keeps an error-feedback residual as large as the
         * whole gradient and ends with the whole decoded sum on every
         * rank: the memory and the reduce-scatter ZeRO is for */
        seterr(err, errlen, "compress=%s with zero=%d: ZeRO reduce-scatters "
               "the gradient, and every codec is an all-reduce with a "
               "residual the size of the whole gradient; use compress=none "
               "(or zero=0)", c->compress, c->zero);
        return -1;
    }
    if (!strcmp(c->allreduce, "shm") &&
        (c->zero > 1 || strcmp(c->compress, "none") != 0)) {
        /* shm reduces the whole gradient arena in place (zero=1: its
         * halves, piece by piece); zero >= 2 reduces staging buffers of
         * its own and the codecs send their own messages */
        char what[CONFIG_STR_MAX + 16];
        if (c->zero > 1)
            snprintf(what, sizeof what, "zero=%d", c->zero);
        else
            snprintf(what, sizeof what, "compress=%s", c->compress);
        seterr(err, errlen, "allreduce=shm with %s: shm reduces the whole "
               "gradient arena in shared memory; use zero=0 or 1 and "
               "compress=none (or allreduce=auto)", what);
        return -1;
    }
    int sharded = c->zero > 0 || strcmp(c->offload, "optimizer") == 0;
    if (sharded && strcmp(c->optimizer, "adamw") != 0) {
        /* the shards' update is AdamW's, element by element; LAMB needs
         * whole-tensor norms and 1-bit Adam the bucketer's momentum */
        seterr(err, errlen, "optimizer=%s with zero=%d offload=%s: ZeRO and "
               "offload update their shards with AdamW only; use "
               "optimizer=adamw (or zero=0 and offload=none)", c->optimizer,
               c->zero, c->offload);
        return -1;
    }
    if (strcmp(c->precision, "bf16") == 0 && strcmp(c->attn, "full") != 0) {
        /* bf16 kernels exist for full attention (window, doc_mask) only */
        seterr(err, errlen, "precision=bf16 with attn=%s: the linear and "
               "sparse attention kernels are fp32 only; use attn=full (or "
               "precision=fp32)", c->attn);
        return -1;
    }
    if (c->zero > 0 && strcmp(c->batch_ramp, "0") != 0) {
        seterr(err, errlen, "batch_ramp=%s with zero=%d: ZeRO plans its "
               "reductions for a fixed number of micro-batches per step; "
               "use zero=0 (or batch_ramp=0)", c->batch_ramp, c->zero);
        return -1;
    }
    if (c->micro_batch == CONFIG_MB_AUTO && c->mem_budget_mb == 0) {
        seterr(err, errlen, "micro_batch=auto needs mem_budget_mb > 0: the "
               "per-rank memory the micro-batch must fit");
        return -1;
    }
    if (finalize_balance(c, err, errlen) != 0)
        return -1;
    if (strcmp(c->lr_schedule, "constant") != 0 && c->min_lr > c->lr) {
        seterr(err, errlen, "min_lr=%.9g exceeds lr=%.9g (lr_schedule=%s)",
               (double)c->min_lr, (double)c->lr, c->lr_schedule);
        return -1;
    }
    if (strcmp(c->optimizer, "onebit_adam") == 0) {
        if (c->compress_warmup < 1) {
            seterr(err, errlen, "optimizer=onebit_adam needs "
                   "compress_warmup >= 1: AdamW steps that estimate the "
                   "second moment before it is frozen");
            return -1;
        }
        if ((c->pp > 1 || c->tp > 1) && strcmp(c->compress, "none") != 0) {
            seterr(err, errlen, "optimizer=onebit_adam with compress=%s "
                   "needs tp=1 and pp=1 (here tp=%d pp=%d): it reduces "
                   "the momentum, which the tied embedding's two stages "
                   "would each add, and bounds the gradient norm by "
                   "ranks' local norms that tp ranks do not share",
                   c->compress, c->tp, c->pp);
            return -1;
        }
    }
    if (c->n_kv_head == 0)
        c->n_kv_head = c->n_head;
    return 0;
}
