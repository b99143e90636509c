/*
 * bpe_train.c - training the byte-level BPE tokenizer (rules in bpe.h).
 *
 * The text is counted as distinct pieces ("words") with their counts.
 * Pair counts are kept incrementally: each pair has its count and the
 * list of words it occurs in (possibly stale: a word is checked before it
 * is touched), and a max-heap of (count, pair) holds every pair whose
 * count changed, stale entries skipped when popped.  A merge visits only
 * the words holding the pair and applies the net change of each word's
 * pairs, so a run costs about the text size plus the merges' work, not
 * merges x text.
 */
#include "bpe.h"

#include "bpe_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct word {
    uint32_t off, len;  /* tokens at tok + off */
    int64_t count;
    int32_t stamp;      /* last merge that visited it */
};

struct pair {
    uint64_t key;
    int64_t count;
    int32_t *occ;       /* words holding it (maybe stale, no repeats in a
                           row) */
    int32_t nocc, cocc;
};

struct hent {
    int64_t count;
    int32_t pid;
};

struct delta {
    uint64_t key;
    int64_t d;
};

struct bt {
    int32_t *tok;
    struct word *w;
    int32_t nw;
    size_t cw;
    struct pair *p;
    int32_t np, cp;
    uint64_t *pk;       /* key -> pair id */
    int32_t *pv;
    size_t pcap;
    struct hent *h;
    size_t nh, ch;
    struct delta *dl;   /* one word's pair changes */
    size_t ndl, cdl;
};

/* ---- heap of (count desc, key asc) -------------------------------------- */

static int before(const struct bt *t, struct hent a, struct hent b)
{
    if (a.count != b.count)
        return a.count > b.count;
    return t->p[a.pid].key < t->p[b.pid].key;
}

static int heap_push(struct bt *t, int32_t pid)
{
    if (bpe_fit((void **)&t->h, &t->ch, t->nh + 1, sizeof *t->h) < 0)
        return -1;
    size_t i = t->nh++;
    struct hent e = {t->p[pid].count, pid};
    while (i > 0 && before(t, e, t->h[(i - 1) / 2])) {
        t->h[i] = t->h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->h[i] = e;
    return 0;
}

static void heap_pop(struct bt *t)
{
    struct hent e = t->h[--t->nh];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->nh)
            break;
        if (c + 1 < t->nh && before(t, t->h[c + 1], t->h[c]))
            c++;
        if (!before(t, t->h[c], e))
            break;
        t->h[i] = t->h[c];
        i = c;
    }
    if (t->nh)
        t->h[i] = e;
}

/* The most frequent pair still current, or -1 when none occurs twice. */
static int32_t heap_best(struct bt *t)
{
    while (t->nh) {
        struct hent e = t->h[0];
        if (e.count == t->p[e.pid].count && e.count >= 2)
            return e.pid;
        heap_pop(t);
    }
    return -1;
}

/* ---- pairs --------------------------------------------------------------- */

/* Id of the pair with key k, added with count 0 if new; -1 on no memory. */
static int32_t pair_id(struct bt *t, uint64_t k)
{
    if (2 * ((size_t)t->np + 1) > t->pcap &&
        pmap_grow(&t->pk, &t->pv, &t->pcap, (size_t)t->np + 1) < 0)
        return -1;
    size_t s = pmap_slot(t->pk, t->pcap, k);
    if (t->pk[s] == k)
        return t->pv[s];
    size_t cp = (size_t)t->cp;
    if (bpe_fit((void **)&t->p, &cp, (size_t)t->np + 1, sizeof *t->p) < 0)
        return -1;
    t->cp = (int32_t)cp;
    struct pair *p = &t->p[t->np];
    memset(p, 0, sizeof *p);
    p->key = k;
    t->pk[s] = k;
    t->pv[s] = t->np;
    return t->np++;
}

static int occ_add(struct pair *p, int32_t wid)
{
    if (p->nocc && p->occ[p->nocc - 1] == wid)
        return 0;
    size_t c = (size_t)p->cocc;
    if (bpe_fit((void **)&p->occ, &c, (size_t)p->nocc + 1, sizeof *p->occ) < 0)
        return -1;
    p->cocc = (int32_t)c;
    p->occ[p->nocc++] = wid;
    return 0;
}

/* ---- counting the words ------------------------------------------------ */

struct went {
    uint64_t h;
    uint32_t off, len; /* the first occurrence in the text */
    int32_t wid;
};

static uint64_t bytes_hash(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h | 1;
}

static int words_grow(struct went **e, size_t *cap)
{
    size_t nc = *cap ? 2 * *cap : 1 << 16;
    struct went *ne = calloc(nc, sizeof *ne);
    if (!ne)
        return -1;
    for (size_t i = 0; i < *cap; i++) {
        if (!(*e)[i].h)
            continue;
        size_t s = (*e)[i].h & (nc - 1);
        while (ne[s].h)
            s = (s + 1) & (nc - 1);
        ne[s] = (*e)[i];
    }
    free(*e);
    *e = ne;
    *cap = nc;
    return 0;
}

/* Count one piece text[off, off + len). */
static int word_count(struct bt *t, struct went **e, size_t *ecap,
                      const unsigned char *text, size_t off, size_t len)
{
    if (2 * ((size_t)t->nw + 1) > *ecap && words_grow(e, ecap) < 0)
        return -1;
    uint64_t h = bytes_hash(text + off, len);
    size_t s = h & (*ecap - 1);
    for (; (*e)[s].h; s = (s + 1) & (*ecap - 1)) {
        struct went *x = &(*e)[s];
        if (x->h == h && x->len == len && !memcmp(text + x->off, text + off,
                                                   len)) {
            t->w[x->wid].count++;
            return 0;
        }
    }
    if (bpe_fit((void **)&t->w, &t->cw, (size_t)t->nw + 1, sizeof *t->w) < 0)
        return -1;
    (*e)[s] = (struct went){h, (uint32_t)off, (uint32_t)len, t->nw};
    t->w[t->nw++] = (struct word){(uint32_t)off, (uint32_t)len, 1, -1};
    return 0;
}

/* Distinct pieces of every document, then their tokens (the bytes). */
static int words_build(struct bt *t, const unsigned char *text, size_t n,
                       const int64_t *docs, int64_t ndocs)
{
    struct went *e = NULL;
    size_t ecap = 0;
    int64_t d = 0;
    for (size_t i = 0; i < n;) {
        while (d < ndocs && (size_t)docs[d] <= i)
            d++;
        size_t end = d < ndocs ? (size_t)docs[d] : n;
        size_t len = bpe_piece_len(text + i, end - i);
        if (word_count(t, &e, &ecap, text, i, len) < 0) {
            free(e);
            return -1;
        }
        i += len;
    }
    free(e);
    size_t total = 0;
    for (int32_t i = 0; i < t->nw; i++)
        total += t->w[i].len;
    if (!(t->tok = malloc((total ? total : 1) * sizeof *t->tok)))
        return -1;
    size_t o = 0;
    for (int32_t i = 0; i < t->nw; i++) {
        struct word *w = &t->w[i];
        for (uint32_t j = 0; j < w->len; j++)
            t->tok[o + j] = text[w->off + j];
        w->off = (uint32_t)o;
        o += w->len;
    }
    return 0;
}

static int pairs_build(struct bt *t)
{
    for (int32_t i = 0; i < t->nw; i++) {
        const struct word *w = &t->w[i];
        const int32_t *s = t->tok + w->off;
        for (uint32_t j = 0; j + 1 < w->len; j++) {
            int32_t pid = pair_id(t, PAIR_KEY(s[j], s[j + 1]));
            if (pid < 0 || occ_add(&t->p[pid], i) < 0)
                return -1;
            t->p[pid].count += w->count;
        }
    }
    for (int32_t i = 0; i < t->np; i++)
        if (t->p[i].count >= 2 && heap_push(t, i) < 0)
            return -1;
    return 0;
}

/* ---- one merge ------------------------------------------------------------ */

static int delta_add(struct bt *t, uint64_t key, int64_t d)
{
    if (bpe_fit((void **)&t->dl, &t->cdl, t->ndl + 1, sizeof *t->dl) < 0)
        return -1;
    t->dl[t->ndl++] = (struct delta){key, d};
    return 0;
}

static int delta_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct delta *)a)->key;
    uint64_t y = ((const struct delta *)b)->key;
    return (x > y) - (x < y);
}

/* Apply the word's summed pair changes; a pair that holds z lists it. */
static int delta_apply(struct bt *t, int32_t wid, int32_t z)
{
    qsort(t->dl, t->ndl, sizeof *t->dl, delta_cmp);
    for (size_t i = 0; i < t->ndl;) {
        uint64_t k = t->dl[i].key;
        int64_t d = 0;
        for (; i < t->ndl && t->dl[i].key == k; i++)
            d += t->dl[i].d;
        int holds_z = (int32_t)(k >> 32) == z || (int32_t)(k & 0xffffffffu)
                                                     == z;
        if (d == 0 && !holds_z)
            continue;
        int32_t pid = pair_id(t, k);
        if (pid < 0 || (holds_z && occ_add(&t->p[pid], wid) < 0))
            return -1;
        t->p[pid].count += d;
        if (d && t->p[pid].count >= 2 && heap_push(t, pid) < 0)
            return -1;
    }
    return 0;
}

/* Merge (a, b) -> z in word wid, if it holds the pair. */
static int word_merge(struct bt *t, int32_t wid, int32_t a, int32_t b,
                      int32_t z)
{
    struct word *w = &t->w[wid];
    int32_t *s = t->tok + w->off;
    uint32_t n = w->len, j;
    for (j = 0; j + 1 < n; j++)
        if (s[j] == a && s[j + 1] == b)
            break;
    if (j + 1 >= n)
        return 0; /* a stale entry of the list */
    t->ndl = 0;
    for (j = 0; j + 1 < n; j++)
        if (delta_add(t, PAIR_KEY(s[j], s[j + 1]), -w->count) < 0)
            return -1;
    uint32_t o = 0;
    for (j = 0; j < n; j++) {
        if (j + 1 < n && s[j] == a && s[j + 1] == b) {
            s[o++] = z;
            j++;
        } else {
            s[o++] = s[j];
        }
    }
    w->len = o;
    for (j = 0; j + 1 < o; j++)
        if (delta_add(t, PAIR_KEY(s[j], s[j + 1]), w->count) < 0)
            return -1;
    return delta_apply(t, wid, z);
}

static int merge_one(struct bt *t, int32_t pid, int32_t z)
{
    int32_t a = (int32_t)(t->p[pid].key >> 32);
    int32_t b = (int32_t)(t->p[pid].key & 0xffffffffu);
    /* the list may grow while we walk it (a pair (z, z) is new, never
     * this one), so walk a snapshot of its length */
    int32_t nocc = t->p[pid].nocc;
    for (int32_t i = 0; i < nocc; i++) {
        int32_t wid = t->p[pid].occ[i];
        if (t->w[wid].stamp == z)
            continue;
        t->w[wid].stamp = z;
        if (word_merge(t, wid, a, b, z) < 0)
            return -1;
    }
    struct pair *p = &t->p[pid];
    p->count = 0;
    free(p->occ);
    p->occ = NULL;
    p->nocc = p->cocc = 0;
    return 0;
}

static void bt_free(struct bt *t)
{
    for (int32_t i = 0; i < t->np; i++)
        free(t->p[i].occ);
    free(t->p);
    free(t->pk);
    free(t->pv);
    free(t->h);
    free(t->dl);
    free(t->tok);
    free(t->w);
}

int bpe_train(struct bpe *b, const unsigned char *text, size_t n,
              const int64_t *docs, int64_t ndocs, int vocab_size, char *err,
              size_t errlen)
{
    memset(b, 0, sizeof *b);
    if (vocab_size < 256 || vocab_size > BPE_MAX_VOCAB) {
        snprintf(err, errlen, "vocab_size %d must be in [256, %d]",
                 vocab_size, BPE_MAX_VOCAB);
        return -1;
    }
    if (n >= UINT32_MAX) {
        snprintf(err, errlen, "BPE training text of %zu bytes is too long "
                 "(at most 4 GiB)", n);
        return -1;
    }
    struct bt t;
    memset(&t, 0, sizeof t);
    int nm = 0, rc = -1;
    b->merge = malloc((size_t)(vocab_size - 256 + 1) * sizeof *b->merge);
    if (!b->merge || words_build(&t, text, n, docs, ndocs) < 0 ||
        pairs_build(&t) < 0)
        goto out;
    for (; 256 + nm < vocab_size; nm++) {
        int32_t pid = heap_best(&t);
        if (pid < 0)
            break; /* no pair occurs twice */
        b->merge[nm][0] = (int32_t)(t.p[pid].key >> 32);
        b->merge[nm][1] = (int32_t)(t.p[pid].key & 0xffffffffu);
        if (merge_one(&t, pid, 256 + nm) < 0)
            goto out;
    }
    b->vocab = 256 + nm;
    rc = bpe_tables_build(b);
out:
    bt_free(&t);
    if (rc < 0) {
        bpe_free(b);
        snprintf(err, errlen, "out of memory training the BPE tokenizer on "
                 "%zu bytes", n);
    }
    return rc;
}
