/*
 * perf_model.c - a layout's step time from the calibration (see
 * perf_model.h): compute and communication figures looked up or scaled,
 * stages, buckets, memory, then parallel/perf.c's assembly.
 */
#include "perf_model.h"
#include "perf_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"
#include "bucket.h"
#include "codec.h"
#include "pp.h"
#include "tensor.h"

/* ---- compute ------------------------------------------------------------ */

/* A rank's compute rate is proportional to the cores it gets:
 * min(threads, cores / load). */
static double rate(double load, int threads, double cores)
{
    double share = cores / load;
    return threads < share ? threads : share;
}

/* The cores free when a figure was measured, and for the prediction. */
static double cores_then(const struct perf_calib *pc, double c)
{
    return c > 0.0 ? c : pc->cores;
}

static double cores_now(const struct perf_calib *pc)
{
    return pc->avail > 0.0 ? pc->avail : pc->cores;
}

/* How much longer communication inside a node takes now than when entry
 * e was measured: the ratio of a single-threaded rank's share of the
 * cores (shared-memory transfers are copies by the ranks' cores). */
static double contention(const struct perf_calib *pc,
                         const struct perf_comm *e, int load)
{
    return rate(e->load, 1, cores_then(pc, e->cores)) /
           rate(load, 1, cores_now(pc));
}

static int same_shape(const struct perf_compute *e, const struct gpt_config *g)
{
    return e->n_embd == g->n_embd && e->n_head == g->n_head &&
           e->n_kv_head == g->n_kv_head && e->seq_len == g->seq_len &&
           e->vocab_size == g->vocab_size && e->attn_window == g->attn_window;
}

/* One micro-batch's figures for gc at (tp, load, threads, mb): the exact
 * calibrated point, else the nearest one of the same shape and tp scaled
 * by the cores' share and linearly in mb. */
int perf_compute_costs(const struct perf_calib *pc,
                       const struct gpt_config *gc, int tp, double load,
                       int threads, int mb, struct perf_compute *out,
                       char *err, size_t errlen)
{
    const struct perf_compute *best = NULL;
    double bd = 1e300;
    for (int i = 0; i < pc->ncp; i++) {
        const struct perf_compute *e = &pc->cp[i];
        if (!same_shape(e, gc) || e->tp != tp)
            continue;
        double d = 1000.0 * (e->threads != threads) +
                   10.0 * fabs(e->load - load) +
                   fabs(log2((double)e->mb / mb)); /* nearest mb */
        if (d < bd)
            bd = d, best = e;
    }
    if (!best) {
        snprintf(err, errlen, "the calibration has no compute figures for "
                 "n_embd=%d n_head=%d n_kv_head=%d seq_len=%d vocab_size=%d "
                 "at tp=%d: run mpitron predict --calibrate with this model "
                 "(and --tps=%d)", gc->n_embd, gc->n_head, gc->n_kv_head,
                 gc->seq_len, gc->vocab_size, tp, tp);
        return -1;
    }
    double s = (double)mb / best->mb *
               rate(best->load, best->threads,
                    cores_then(pc, best->cores)) /
               rate(load, threads, cores_now(pc));
    *out = *best;
    out->block *= s, out->block_fwd *= s;
    out->embed *= s, out->embed_fwd *= s;
    out->head *= s, out->head_fwd *= s;
    out->load = (int)ceil(load), out->threads = threads, out->mb = mb;
    return 0;
}

double perf_optim_per_param(const struct perf_calib *pc, int load)
{
    int best = -1;
    for (int i = 0; i < pc->nop; i++)
        if (best < 0 || abs(pc->op[i].load - load) <
                            abs(pc->op[best].load - load))
            best = i;
    if (best < 0)
        return 0.0;
    /* measured with cores / load threads per rank; memory-bound, so the
     * share of the node (its bandwidth) is what counts */
    const struct perf_optim *o = &pc->op[best];
    double then = cores_then(pc, o->cores), now = cores_now(pc);
    return o->per_param * rate(o->load, pc->cores, then) /
           rate(load, pc->cores, now);
}

/* ---- communication ------------------------------------------------------ */

static const struct perf_comm *find_comm(const struct perf_calib *pc,
                                         const char *kind, int level, int p,
                                         int load)
{
    for (int i = 0; i < pc->ncm; i++) {
        const struct perf_comm *e = &pc->cm[i];
        if (!strcmp(e->kind, kind) && e->level == level && e->p == p &&
            e->load == load)
            return e;
    }
    return NULL;
}

/* The calibrated entry of kind at level closest to (p, load): the same
 * load first, then the largest group. */
static const struct perf_comm *near_comm(const struct perf_calib *pc,
                                         const char *kind, int level,
                                         int load)
{
    const struct perf_comm *best = NULL;
    for (int i = 0; i < pc->ncm; i++) {
        const struct perf_comm *e = &pc->cm[i];
        if (strcmp(e->kind, kind) || e->level != level)
            continue;
        if (!best || abs(e->load - load) < abs(best->load - load) ||
            (e->load == best->load && e->p > best->p))
            best = e;
    }
    return best;
}

/* The links inside a node and between nodes. */
static int links(const struct perf_calib *pc, int load, struct perf_link *in,
                 struct perf_link *out, char *err, size_t errlen)
{
    const struct perf_comm *r = near_comm(pc, "ring", 0, load);
    if (!r) {
        snprintf(err, errlen, "the calibration has no ring all-reduce "
                 "inside a node (run mpitron predict --calibrate on at "
                 "least 2 ranks)");
        return -1;
    }
    double f = contention(pc, r, load);
    *in = perf_link_from_ring(r->p, r->a * f, r->b * f);
    const struct perf_comm *r1 = near_comm(pc, "ring", 1, 1);
    *out = pc->has_net ? pc->net
           : r1        ? perf_link_from_ring(r1->p, r1->a, r1->b)
                       : *in;
    return 0;
}

/* LEB128 bytes of a delta of about d. */
static double leb_bytes(double d)
{
    double b = 1;
    while (d >= 128.0) {
        d /= 128.0;
        b++;
    }
    return b;
}

/* Wire time of a codec's reduction of `bytes` (payload, fp32) over p
 * ranks on link l (codec.h's traffic); compressed: PowerSGD's floats.
 * *gather: 1 for the all-gather codecs (every rank decodes p messages). */
static double codec_wire(const struct codec_ctx *cc, double bytes,
                         double compressed, int p, struct perf_link l,
                         int *gather)
{
    const char *nm = cc->codec->name;
    double n = bytes / 4.0;
    *gather = 0;
    if (!strcmp(nm, "fp16") || !strcmp(nm, "bf16"))
        return perf_ring_allreduce(p, bytes / 2, l);
    if (!strcmp(nm, "sign") || !strcmp(nm, "topk")) {
        double msg = !strcmp(nm, "sign")
                         ? n / 8 + 4 * ceil(n / 256)
                         : ceil(cc->param * n) *
                               (4 + leb_bytes(1 / cc->param));
        *gather = 1;
        return perf_allgather(p, msg, l);
    }
    /* powersgd: the P and the Q round, the dense part with them */
    double c = compressed > 0 ? compressed : n;
    return perf_ring_allreduce(p, 4 * c, l) + 2.0 * (p - 1) * l.alpha;
}

/* A codec: its wire time, plus the compute the calibration measured
 * beyond the wire time of its own run (16 MB, one square matrix for
 * PowerSGD), per byte; the all-gather codecs' decoding grows with p. */
static double codec_time(const struct perf_calib *pc, const char *spec,
                         double bytes, int p, int load, struct perf_link in,
                         struct perf_link l, double compressed)
{
    struct codec_ctx cc;
    char e[256];
    int gather;
    memset(&cc, 0, sizeof(cc));
    if (codec_parse(spec, &cc, e, sizeof(e)) < 0 || !cc.codec)
        return perf_ring_allreduce(p, bytes, l);
    double wire = codec_wire(&cc, bytes, compressed, p, l, &gather);
    const struct perf_comm *ce = near_comm(pc, spec, 0, load);
    if (!ce)
        return wire;
    const double B = 16777216.0;
    double side = sqrt(B / 4), r = cc.param < side ? cc.param : side;
    double w0 = codec_wire(&cc, B, r * 2 * side, ce->p, in, &gather);
    double gamma = (ce->a + ce->b * B - w0) / B;
    if (gamma < 0)
        gamma = 0;
    gamma *= contention(pc, ce, load);
    if (gather)
        gamma *= (double)p / ce->p;
    return wire + gamma * bytes;
}

double perf_comm_time(const struct perf_calib *pc, const char *kind,
                      double bytes, int p, int nn, int load,
                      const struct allreduce_tune *tune, double compressed,
                      char *err, size_t errlen)
{
    if (p <= 1)
        return 0.0;
    int level = nn > 1;
    struct allreduce_tune def;
    if (!tune) {
        allreduce_tune_defaults(&def);
        tune = &def;
    }
    /* auto as the gradient buckets resolve it: shm on one node (when
     * it was calibrated, i.e. the machine can map it), else by size */
    if (!strcmp(kind, "auto"))
        kind = nn == 1 && near_comm(pc, "shm", 0, load) ? "shm"
               : bytes < (double)tune->small_max ? "rhd"
               : nn > 1 && nn < p && bytes >= (double)tune->hier_min
                   ? "hier" : "ring";
    const struct perf_comm *e = find_comm(pc, kind, level, p, load);
    if (e)
        return (e->a + e->b * bytes) *
               (level ? 1.0 : contention(pc, e, load));
    struct perf_link in, out;
    if (links(pc, load, &in, &out, err, errlen) < 0)
        return -1.0;
    struct perf_link l = level ? out : in;
    if (!strcmp(kind, "ring") || !strcmp(kind, "mpi") ||
        !strcmp(kind, "shm")) /* shm uncalibrated: the ring bounds it */
        return perf_ring_allreduce(p, bytes, l);
    if (!strcmp(kind, "rhd"))
        return perf_rhd_allreduce(p, bytes, l);
    if (!strcmp(kind, "hier"))
        return perf_hier_allreduce(nn, p / nn, bytes, in, out);
    if (!strcmp(kind, "p2p")) {
        const struct perf_comm *pe = level ? NULL : near_comm(pc, "p2p", 0,
                                                              load);
        return pe ? (pe->a + pe->b * bytes) * contention(pc, pe, load)
                  : perf_p2p(bytes, l);
    }
    return codec_time(pc, kind, bytes, p, load, in, l, compressed);
}

/* ---- the layout's geometry ---------------------------------------------- */

/* Nodes spanned by the group {k * stride : k < size} (ranks per node rpn). */
int perf_span(int size, int stride, int rpn)
{
    int n = 0, last = -1;
    for (int k = 0; k < size; k++) {
        int node = k * stride / rpn;
        if (node != last)
            n++, last = node;
    }
    return n;
}

/* Stage boundaries as the trainer draws them (pp_partition). */
int perf_stage_bounds(const struct config *c, const struct gpt_config *gc,
                      int pp, const struct perf_compute *cc, int *bound,
                      char *err, size_t errlen)
{
    int L = gc->n_layer;
    if (!strcmp(c->pp_partition, "auto"))
        return balance_stages(L, pp, cc->block, cc->embed, cc->head, bound,
                              err, errlen);
    if (!strcmp(c->pp_partition, "params")) {
        double C = gc->n_embd, V = gc->vocab_size, T = gc->seq_len;
        struct gpt_config one = *gc;
        one.n_layer = 1;
        double blk = (double)gpt_num_params(&one) - (V + T) * C - 2 * C;
        double *cost = malloc((size_t)L * sizeof(double));
        if (!cost)
            return -1;
        for (int l = 0; l < L; l++)
            cost[l] = blk;
        int rc = pp_partition(L, pp, cost, (V + T) * C, V * C + 2 * C, bound,
                              err, errlen);
        free(cost);
        return rc;
    }
    int counts[64];
    int n = config_int_list(c->pp_partition, counts, 64);
    int sum = 0;
    for (int s = 0; s < n && s < 64; s++)
        sum += counts[s];
    if (n != pp || sum != L) {
        snprintf(err, errlen, "pp_partition=%s does not give %d stages of "
                 "%d blocks", c->pp_partition, pp, L);
        return -1;
    }
    balance_stages_from_counts(pp, counts, bound);
    return 0;
}
