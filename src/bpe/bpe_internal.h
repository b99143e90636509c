/*
 * bpe_internal.h - what bpe.c and bpe_train.c share: the (left, right)
 * pair map and the table builder.  Not for use elsewhere.
 */
#ifndef MPITRON_BPE_INTERNAL_H
#define MPITRON_BPE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bpe.h"

/* ids are < 65536, so no pair's key is all ones */
#define PMAP_EMPTY UINT64_MAX
#define PAIR_KEY(l, r) ((uint64_t)(uint32_t)(l) << 32 | (uint32_t)(r))

/* Open addressing (linear probing, power-of-two capacity) of uint64 keys
 * to int32 values: grow to hold want keys at load <= 1/2 (rehashing what
 * is there).  0, or -1 when out of memory (the map unchanged). */
int pmap_grow(uint64_t **key, int32_t **val, size_t *cap, size_t want);
/* *p grown to hold need elements of elem bytes (bpe.c) */
int bpe_fit(void **p, size_t *cap, size_t need, size_t elem);
/* Slot of k: where it is, or the empty slot where it would go. */
size_t pmap_slot(const uint64_t *key, size_t cap, uint64_t k);

/* b->vocab and b->merge set, every merge naming earlier ids: allocate and
 * fill off, len, bytes and the pair map.  0 or -1 (out of memory; the
 * caller frees b). */
int bpe_tables_build(struct bpe *b);

#endif
