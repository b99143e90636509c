#include "tensor.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "rng.h"

int tensor_table_add(struct tensor_table *tt, const char *name, int ndim,
                     const int64_t *gshape, int tp_dim, int tp_rank, int tp,
                     int decay, int layer, float init_std, float init_const)
{
    if (tt->n == tt->cap) {
        int cap = tt->cap ? 2 * tt->cap : 64;
        struct tensor_desc *t = realloc(tt->t, (size_t)cap * sizeof(*t));
        if (!t)
            return -1;
        tt->t = t;
        tt->cap = cap;
    }
    struct tensor_desc *d = &tt->t[tt->n];
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->ndim = ndim;
    d->numel = 1;
    for (int i = 0; i < ndim; i++) {
        d->gshape[i] = gshape[i];
        d->start[i] = 0;
        d->count[i] = gshape[i];
        if (i == tp_dim) {
            d->count[i] = gshape[i] / tp;
            d->start[i] = d->count[i] * tp_rank;
        }
        d->numel *= (size_t)d->count[i];
    }
    d->tp_dim = tp_dim;
    d->decay = decay;
    d->layer = layer;
    d->init_std = init_std;
    d->init_const = init_const;
    d->off = tt->total;
    tt->total += d->numel;
    return tt->n++;
}

int tensor_table_find(const struct tensor_table *tt, const char *name)
{
    for (int i = 0; i < tt->n; i++)
        if (strcmp(tt->t[i].name, name) == 0)
            return i;
    return -1;
}

void tensor_table_free(struct tensor_table *tt)
{
    free(tt->t);
    memset(tt, 0, sizeof(*tt));
}

void tensor_desc_init_range(const struct tensor_desc *d, float *out,
                            size_t lo, size_t n, uint64_t seed)
{
    if (d->init_std == 0.0f) {
        for (size_t k = 0; k < n; k++)
            out[k] = d->init_const;
        return;
    }
    uint64_t key = rng_key(seed, RNG_INIT, rng_hash_str(d->name));
    size_t cols = (size_t)(d->ndim == 2 ? d->count[1] : d->count[0]);
    int64_t gcols = d->ndim == 2 ? d->gshape[1] : d->gshape[0];
    int64_t r0 = d->ndim == 2 ? d->start[0] : 0;
    int64_t c0 = d->ndim == 2 ? d->start[1] : d->start[0];
    for (size_t k = 0; k < n; k++) {
        size_t e = lo + k, r = e / cols, c = e % cols;
        uint64_t g = (uint64_t)((r0 + (int64_t)r) * gcols + c0 + (int64_t)c);
        out[k] = d->init_std * rng_normal(key, g);
    }
}

void tensor_table_init_params(const struct tensor_table *tt, float *params,
                              uint64_t seed)
{
    for (int i = 0; i < tt->n; i++)
        tensor_desc_init_range(&tt->t[i], params + tt->t[i].off, 0,
                               tt->t[i].numel, seed);
}

/* Below this, one thread zeroes (a fork costs more than it saves). */
#define ARENA_PAR_MIN ((size_t)1 << 22)

float *tensor_arena_alloc(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p)
        return NULL;
    /* First touch: Linux puts a page on the NUMA node of the thread that
     * writes it first.  The rank is bound before anything is allocated
     * (src/place.c), and the kernels split arenas over the OpenMP threads
     * in static chunks, so zeroing in the same static chunks puts each
     * chunk's pages next to the thread that will compute on it. */
    size_t nchunk = bytes / 64;
#pragma omp parallel for schedule(static) if (bytes >= ARENA_PAR_MIN)
    for (size_t i = 0; i < nchunk; i++)
        memset((char *)p + 64 * i, 0, 64);
    return p;
}
