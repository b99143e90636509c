/*
 * tensor.h - the parameter descriptor table and its arenas.
 *
 * Every parameter tensor of this rank is one row of the table: its name,
 * its GLOBAL shape, the hyperslab of it that this rank holds, the dimension
 * split over tensor-parallel ranks (-1 = replicated), whether weight decay
 * applies, and its offset in the arenas.  Parameters, gradients and the two
 * AdamW moments are each one allocation of `total` floats laid out by the
 * table, so bucketing, clipping, sharding and checkpoint I/O all walk the
 * same table instead of hard-coded lists.
 */
#ifndef MPITRON_TENSOR_H
#define MPITRON_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define TENSOR_NAME_MAX 48
#define TENSOR_MAX_DIMS 2

struct tensor_desc {
    char name[TENSOR_NAME_MAX]; /* e.g. "h.3.attn.wq" */
    int ndim;                   /* 1 or 2 */
    int64_t gshape[TENSOR_MAX_DIMS];
    int64_t start[TENSOR_MAX_DIMS]; /* local hyperslab in the global tensor */
    int64_t count[TENSOR_MAX_DIMS];
    int tp_dim;   /* -1 replicated over tp, else the split dimension */
    int decay;    /* AdamW weight decay applies */
    int layer;    /* block index, -1 for embeddings and the final LayerNorm */
    float init_std; /* N(0, init_std) init; 0 = constant init_const */
    float init_const;
    size_t off;   /* offset of the local block in the arena, in floats */
    size_t numel; /* local element count */
};

struct tensor_table {
    struct tensor_desc *t;
    int n, cap;
    size_t total; /* floats in each arena */
};

/* Append a tensor split over tp ranks along tp_dim (-1 = replicated):
 * the local block is the tp_rank-th of tp equal parts (the caller checks
 * divisibility).  Returns its index, or -1 when out of memory. */
int tensor_table_add(struct tensor_table *tt, const char *name, int ndim,
                     const int64_t *gshape, int tp_dim, int tp_rank, int tp,
                     int decay, int layer, float init_std, float init_const);
/* Index of the tensor called name, or -1. */
int tensor_table_find(const struct tensor_table *tt, const char *name);
void tensor_table_free(struct tensor_table *tt);

/* Fill params (the arena) by the table: N(0, std) from the counter RNG keyed
 * on (seed, tensor name) and indexed by GLOBAL element index, or the
 * constant.  Any sharding therefore initialises the same global tensor. */
void tensor_table_init_params(const struct tensor_table *tt, float *params,
                              uint64_t seed);
/* The same values for elements [lo, lo + n) of d's local block
 * (row-major) only, into out (n floats): a shard of a tensor. */
void tensor_desc_init_range(const struct tensor_desc *d, float *out,
                            size_t lo, size_t n, uint64_t seed);

/* 64-byte aligned zeroed arena of n floats, or NULL. Free with free().
 * Zeroed by the OpenMP threads in static chunks (NUMA first touch). */
float *tensor_arena_alloc(size_t n);

#endif
