/*
 * zero.h - ZeRO without the model: which part of the parameter arena a
 * data-parallel rank owns, the order in which a stage uses its units of
 * parameters (plain data, built from a pipeline schedule), and the
 * reduce-scatter / all-gather operations over the dp group.
 *
 * Arena, pieces, units.  The caller describes its parameter arena as
 * tensors in arena order (offset, element count, abutting) grouped into
 * units: contiguous runs of tensors that are used together (a block, or
 * the embedding unit: wte, wpe and the final LayerNorm of this stage).
 * Each unit is cut into pieces, contiguous ranges that are reduced and
 * gathered as one buffer: the whole unit, or (split_first) its first
 * tensor alone and the rest.  The tied embedding wte is its own piece on
 * the first and the last pipeline stage, so both stages cut it the same
 * way and the two copies stay bitwise equal.
 *
 * Ownership.  Piece k of n floats is cut into p chunks as the ring cuts
 * it (comm_ring_own): rank r owns chunk r + 1 mod p, the chunk the ring's
 * reduce-scatter leaves fully summed on r.  So a reduce-scatter of a piece
 * gives the owner exactly the bits the ring all-reduce of that piece
 * would, and the all-gather after the owner's update is the ring's second
 * half.  The shard arena is this rank's chunks of all pieces in arena
 * order (shard_n floats); segs lists them cut at tensor boundaries, so an
 * optimizer (per-tensor weight decay) and checkpoints (one flat range of
 * each tensor's local block) can walk them.
 *
 * Uses.  A stage running a pipeline schedule uses its units in an order
 * that depends on the schedule alone: forward of micro-batch i is the
 * embedding unit (first stage: the embedding), the blocks in order, the
 * embedding unit again (last stage: the head, tied to wte); backward is
 * the reverse.  zero_order_build lists these uses with what ZeRO does at
 * each (the first and last backward use of a unit in a micro-batch, the
 * last in the step, the next unit to prefetch), and src/ executes it.
 *
 * Operations.  zero_comm keeps a fixed pool of reduce-scatter and
 * all-gather operations (comm/'s halves: shm's for buffers in the group's
 * shared segments, else the ring's) on the dp group, with their
 * scratch allocated once.  Waiting for one operation tests every open
 * one, so ranks that wait in different places still progress each
 * other's; when a pool is full, starting one waits for its oldest.  Every
 * rank of the group must start operations in the same order.
 *
 * parallel/ depends on comm/ and MPI only (never on src/).
 */
#ifndef MPITRON_ZERO_H
#define MPITRON_ZERO_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "allreduce.h"
#include "comm.h"
#include "pp.h"

/* ---- the plan: pieces, units, this rank's shard ----------------------- */

struct zero_tensor {
    size_t off, numel;     /* arena range; tensors abut in arena order */
};

struct zero_unit_spec {
    int key;               /* the caller's name for it: -1 the embedding
                              unit, l >= 0 block l */
    int t0, t1;            /* tensors [t0, t1) */
    int split_first;       /* tensor t0 is a piece of its own */
};

struct zero_piece {
    size_t off, n;         /* arena range */
    size_t own_off, own_len; /* this rank's chunk, relative to off */
    size_t shard_off;      /* where that chunk sits in the shard arena */
};

struct zero_unit {
    int key;
    int p0, p1;            /* pieces [p0, p1) */
    size_t off, n;         /* arena range of all its pieces */
};

/* A run of this rank's shard inside one tensor: elements [t_off, t_off +
 * len) of tensor `tensor`'s local block, row-major, which sit at arena
 * offset arena_off and shard offset shard_off. */
struct zero_seg {
    int tensor;
    size_t t_off, len, arena_off, shard_off;
};

struct zero_plan {
    int p, rank;           /* dp group size, this rank */
    size_t total;          /* arena floats */
    int npieces, nunits, nsegs;
    struct zero_piece *pc;
    struct zero_unit *u;
    struct zero_seg *seg;
    size_t shard_n;        /* floats this rank owns */
    size_t max_piece;      /* longest piece */
    size_t embed_n;        /* the embedding unit's floats (0: none) */
    size_t max_block_n;    /* the longest block unit */
};

/* Build the plan for rank `rank` of p.  Units must cover the tensors in
 * order, each at least one tensor.  Returns 0, or -1 with err (units that
 * do not tile the tensors, out of memory).  Free with zero_plan_free
 * (safe on a zeroed plan). */
int zero_plan_build(struct zero_plan *zp, const struct zero_tensor *t, int nt,
                    const struct zero_unit_spec *us, int nu, int p, int rank,
                    char *err, size_t errlen);
void zero_plan_free(struct zero_plan *zp);
/* The unit whose key is key, or -1. */
int zero_unit_of(const struct zero_plan *zp, int key);

/* ---- the order of uses ------------------------------------------------ */

enum zero_dir { ZERO_FWD, ZERO_BWD };

struct zero_use {
    int unit;              /* index into the plan's units */
    enum zero_dir dir;
    int mb;                /* micro-batch */
    int grad_first;        /* BWD: the unit's first backward use in this
                              micro-batch (its gradient starts at zero) */
    int grad_last;         /* BWD: its last one in this micro-batch (its
                              gradient of the micro-batch is complete) */
    int step_last;         /* BWD: its last one in the step */
    int next_unit;         /* the unit of the next use with another unit
                              (what to prefetch), -1 at the end */
};

struct zero_order {
    int n;
    struct zero_use *use;  /* owned */
};

/* The uses of a stage running schedule sc: embed_unit is the embedding
 * unit's index (-1: this stage has none), block_unit[i] the unit of the
 * stage's i-th block (nblocks of them); first / last: the stage holds the
 * embedding / the head.  Returns 0, or -1 (out of memory) with err.
 * Free with zero_order_free (safe on a zeroed order). */
int zero_order_build(struct zero_order *o, const struct pp_schedule *sc,
                     int embed_unit, const int *block_unit, int nblocks,
                     int first, int last, char *err, size_t errlen);
void zero_order_free(struct zero_order *o);

/* ---- operations on the dp group --------------------------------------- */

struct zero_op {
    struct comm_op op;
    void *scratch;
    size_t scratch_bytes;
    int open;              /* started, not yet reaped */
    uint64_t seq;          /* start order */
};

struct zero_comm {
    const struct comm_group *g;   /* the dp group (not owned) */
    struct zero_op *rs, *ag;      /* pools (owned) */
    int nrs, nag;
    uint64_t seq;
    uint64_t nstarted, nshm;      /* operations started, of them through
                                     shared segments (never cleared) */
    /* accounting since zero_comm_clear */
    uint64_t wire_bytes;
    double t_wait;                /* blocked in zero_comm_wait */
    double *span;                 /* (start, done) of completed ops */
    double t_clear;               /* time of the last clear */
    int nspan, capspan;
    size_t scratch_bytes;         /* all pools' scratch, for the memory
                                     report */
};

/* Pools of nrs reduce-scatters (each with the ring's scratch for pieces
 * of up to max_n floats) and nag all-gathers over g.  Not collective.
 * Returns 0, or -1 (out of memory) with err; free with zero_comm_free. */
int zero_comm_init(struct zero_comm *zc, const struct comm_group *g,
                   size_t max_n, int nrs, int nag, char *err, size_t errlen);
/* Completes every open operation first (all ranks must call it). */
void zero_comm_free(struct zero_comm *zc);

/* Start a reduce-scatter / all-gather of buf (n floats, n <= max_n for
 * reduce-scatters) in place: through g's shared segments when buf lies
 * in them (no message, the ring's bits), else the ring's; returns a handle >= 1 (the start order, never
 * reused), or -1 on MPI error.  A full pool first waits for its oldest
 * operation. */
int64_t zero_reduce_scatter_start(struct zero_comm *zc, float *buf,
                                  size_t n);
int64_t zero_allgather_start(struct zero_comm *zc, float *buf, size_t n);
/* Block until handle h is complete (testing every open operation);
 * h <= 0 or an operation already complete returns at once.  0 or -1. */
int zero_comm_wait(struct zero_comm *zc, int64_t h);
/* 1 when h is complete (or h <= 0), else 0; never blocks. */
int zero_comm_done(const struct zero_comm *zc, int64_t h);
/* Test every open operation once.  0 or -1. */
int zero_comm_progress(struct zero_comm *zc);
/* Wait for every open operation.  0 or -1. */
int zero_comm_wait_all(struct zero_comm *zc);
/* Reset the accounting (wire bytes, waits, spans). */
void zero_comm_clear(struct zero_comm *zc);
/* Seconds covered by the union of the completed operations' spans since
 * the last clear (reorders the recorded spans). */
double zero_comm_busy(struct zero_comm *zc);

#endif
