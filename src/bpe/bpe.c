/*
 * bpe.c - the byte-level BPE tokenizer's tables, merges.txt, encoding
 * (rules and format in bpe.h; training is in bpe_train.c).
 */
#include "bpe.h"

#include "bpe_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* ---- pieces ------------------------------------------------------------ */

enum { CL_SPACE, CL_DIGIT, CL_LETTER, CL_OTHER };

static int byte_class(unsigned char c)
{
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
        c == '\f')
        return CL_SPACE;
    if (c >= '0' && c <= '9')
        return CL_DIGIT;
    if (((c | 32) >= 'a' && (c | 32) <= 'z') || c >= 0x80)
        return CL_LETTER;
    return CL_OTHER;
}

size_t bpe_piece_len(const unsigned char *text, size_t n)
{
    size_t i = 0;
    if (text[0] == ' ' && n > 1 && byte_class(text[1]) != CL_SPACE)
        i = 1; /* the word's leading space */
    int k = byte_class(text[i]);
    size_t j = i + 1;
    if (k != CL_SPACE) {
        while (j < n && byte_class(text[j]) == k)
            j++;
        return j;
    }
    while (j < n && byte_class(text[j]) == CL_SPACE)
        j++;
    if (j < n && j >= 2 && text[j - 1] == ' ')
        j--; /* that space starts the next word */
    return j;
}

/* ---- pair map ------------------------------------------------------------ */

int pmap_grow(uint64_t **key, int32_t **val, size_t *cap, size_t want)
{
    size_t nc = *cap ? *cap : 1024;
    while (nc < 2 * want)
        nc *= 2;
    if (nc == *cap)
        return 0;
    uint64_t *nk = malloc(nc * sizeof *nk);
    int32_t *nv = malloc(nc * sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return -1;
    }
    for (size_t i = 0; i < nc; i++)
        nk[i] = PMAP_EMPTY;
    for (size_t i = 0; i < *cap; i++) {
        if ((*key)[i] == PMAP_EMPTY)
            continue;
        size_t h = rng_mix64((*key)[i]) & (nc - 1);
        while (nk[h] != PMAP_EMPTY)
            h = (h + 1) & (nc - 1);
        nk[h] = (*key)[i];
        nv[h] = (*val)[i];
    }
    free(*key);
    free(*val);
    *key = nk;
    *val = nv;
    *cap = nc;
    return 0;
}

/* Slot of k: where it is, or the empty slot where it would go. */
size_t pmap_slot(const uint64_t *key, size_t cap, uint64_t k)
{
    size_t h = rng_mix64(k) & (cap - 1);
    while (key[h] != PMAP_EMPTY && key[h] != k)
        h = (h + 1) & (cap - 1);
    return h;
}

static int32_t merge_of(const struct bpe *b, int32_t l, int32_t r)
{
    uint64_t k = PAIR_KEY(l, r);
    size_t s = pmap_slot(b->pkey, b->pcap, k);
    return b->pkey[s] == k ? b->pval[s] : -1;
}

/* ---- tables -------------------------------------------------------------- */

/* b->vocab and b->merge are set and every merge refers to earlier ids:
 * build token bytes and the pair map. */
int bpe_tables_build(struct bpe *b)
{
    int V = b->vocab;
    b->off = malloc((size_t)V * sizeof *b->off);
    b->len = malloc((size_t)V * sizeof *b->len);
    if (!b->off || !b->len)
        return -1;
    size_t total = 256;
    for (int i = 0; i < 256; i++)
        b->len[i] = 1;
    for (int i = 256; i < V; i++) {
        b->len[i] = b->len[b->merge[i - 256][0]] + b->len[b->merge[i - 256][1]];
        total += b->len[i];
    }
    if (!(b->bytes = malloc(total)))
        return -1;
    size_t o = 0;
    for (int i = 0; i < 256; i++) {
        b->off[i] = (uint32_t)o;
        b->bytes[o++] = (unsigned char)i;
    }
    for (int i = 256; i < V; i++) {
        int32_t l = b->merge[i - 256][0], r = b->merge[i - 256][1];
        b->off[i] = (uint32_t)o;
        memcpy(b->bytes + o, b->bytes + b->off[l], b->len[l]);
        memcpy(b->bytes + o + b->len[l], b->bytes + b->off[r], b->len[r]);
        o += b->len[i];
    }
    if (pmap_grow(&b->pkey, &b->pval, &b->pcap, (size_t)(V - 256) + 1) < 0)
        return -1;
    for (int i = 256; i < V; i++) {
        uint64_t k = PAIR_KEY(b->merge[i - 256][0], b->merge[i - 256][1]);
        size_t s = pmap_slot(b->pkey, b->pcap, k);
        b->pkey[s] = k;
        b->pval[s] = i;
    }
    return 0;
}

/* ---- the piece cache -------------------------------------------------- */

struct cache_ent {
    uint64_t h;
    uint32_t kofs, klen; /* piece bytes in keys */
    uint32_t tofs, tlen; /* tokens in toks */
};

struct bpe_cache {
    struct cache_ent *e;
    size_t cap, n;
    unsigned char *keys;
    size_t nkeys, ckeys;
    uint16_t *toks;
    size_t ntoks, ctoks;
    int32_t *work; /* a piece's tokens while merging */
    size_t cwork;
};

static uint64_t bytes_hash(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h | 1; /* 0 marks an empty entry */
}

/* *p holds at least need elements of elem bytes (capacity doubling from
 * 4096); 0, or -1 out of memory with *p untouched. */
int bpe_fit(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 4096;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static int cache_grow(struct bpe_cache *c)
{
    size_t nc = c->cap ? 2 * c->cap : 4096;
    struct cache_ent *ne = calloc(nc, sizeof *ne);
    if (!ne)
        return -1;
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->e[i].h)
            continue;
        size_t s = c->e[i].h & (nc - 1);
        while (ne[s].h)
            s = (s + 1) & (nc - 1);
        ne[s] = c->e[i];
    }
    free(c->e);
    c->e = ne;
    c->cap = nc;
    return 0;
}

static void cache_free(struct bpe_cache *c)
{
    if (!c)
        return;
    free(c->e);
    free(c->keys);
    free(c->toks);
    free(c->work);
    free(c);
}

/* Merge the piece p[0, n) into c->work; returns its token count. */
static size_t piece_merge(const struct bpe *b, int32_t *w,
                          const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        w[i] = p[i];
    for (;;) {
        int32_t best = -1;
        for (size_t i = 0; i + 1 < n; i++) {
            int32_t z = merge_of(b, w[i], w[i + 1]);
            if (z >= 0 && (best < 0 || z < best))
                best = z;
        }
        if (best < 0)
            return n;
        int32_t l = b->merge[best - 256][0], r = b->merge[best - 256][1];
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && w[i] == l && w[i + 1] == r) {
                w[o++] = best;
                i++;
            } else {
                w[o++] = w[i];
            }
        }
        n = o;
    }
}

/* Tokens of one piece, from the cache or merged and cached: appended at
 * out.  Returns the count, or -1 when out of memory. */
static int64_t piece_encode(struct bpe *b, const unsigned char *p, size_t n,
                            uint16_t *out)
{
    struct bpe_cache *c = b->cache;
    uint64_t h = bytes_hash(p, n);
    if (2 * (c->n + 1) > c->cap && cache_grow(c) < 0)
        return -1;
    size_t s = h & (c->cap - 1);
    for (; c->e[s].h; s = (s + 1) & (c->cap - 1)) {
        struct cache_ent *e = &c->e[s];
        if (e->h == h && e->klen == n && !memcmp(c->keys + e->kofs, p, n)) {
            memcpy(out, c->toks + e->tofs, e->tlen * sizeof *out);
            return e->tlen;
        }
    }
    if (bpe_fit((void **)&c->work, &c->cwork, n, sizeof *c->work) < 0)
        return -1;
    size_t nt = piece_merge(b, c->work, p, n);
    for (size_t i = 0; i < nt; i++)
        out[i] = (uint16_t)c->work[i];
    if (n > UINT32_MAX / 4 ||
        bpe_fit((void **)&c->keys, &c->ckeys, c->nkeys + n, 1) < 0 ||
        bpe_fit((void **)&c->toks, &c->ctoks, c->ntoks + nt,
                  sizeof *c->toks) < 0)
        return (int64_t)nt; /* not cached: still correct */
    struct cache_ent *e = &c->e[s];
    e->h = h;
    e->kofs = (uint32_t)c->nkeys;
    e->klen = (uint32_t)n;
    e->tofs = (uint32_t)c->ntoks;
    e->tlen = (uint32_t)nt;
    memcpy(c->keys + c->nkeys, p, n);
    memcpy(c->toks + c->ntoks, out, nt * sizeof *out);
    c->nkeys += n;
    c->ntoks += nt;
    c->n++;
    return (int64_t)nt;
}

int64_t bpe_encode(struct bpe *b, const unsigned char *text, size_t n,
                   uint16_t *out)
{
    if (!b->cache && !(b->cache = calloc(1, sizeof *b->cache)))
        return -1;
    int64_t nt = 0;
    for (size_t i = 0; i < n;) {
        size_t len = bpe_piece_len(text + i, n - i);
        int64_t k = piece_encode(b, text + i, len, out + nt);
        if (k < 0)
            return -1;
        nt += k;
        i += len;
    }
    return nt;
}

void bpe_free(struct bpe *b)
{
    free(b->merge);
    free(b->off);
    free(b->len);
    free(b->bytes);
    free(b->pkey);
    free(b->pval);
    cache_free(b->cache);
    memset(b, 0, sizeof *b);
}

/* ---- merges.txt ---------------------------------------------------------- */

/* Escaped bytes of p[0, n) into out (4n + 1 bytes); returns its length. */
static size_t escape(char *out, const unsigned char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        const char *e = c == '\\' ? "\\\\" : c == '"' ? "\\\"" :
                        c == '\n' ? "\\n" : c == '\t' ? "\\t" :
                        c == '\r' ? "\\r" : NULL;
        if (e) {
            memcpy(out + o, e, 2);
            o += 2;
        } else if (c < 0x20 || c >= 0x7f) {
            o += (size_t)sprintf(out + o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return o;
}

char *bpe_to_text(const struct bpe *b, size_t *lenp)
{
    size_t cap = 256, maxlen = 1;
    for (int i = 256; i < b->vocab; i++) {
        cap += 40 + 4 * (size_t)b->len[i];
        maxlen = b->len[i] > maxlen ? b->len[i] : maxlen;
    }
    char *out = malloc(cap), *esc = malloc(4 * maxlen + 1);
    if (!out || !esc) {
        free(out);
        free(esc);
        return NULL;
    }
    size_t o = (size_t)snprintf(out, cap,
        "mpitron-bpe 1\nvocab_size %d\n"
        "# byte-level BPE: ids 0..255 are the bytes; each line below makes\n"
        "# token ID from LEFT RIGHT (\"its bytes\", escaped, for reading)\n",
        b->vocab);
    for (int i = 256; i < b->vocab; i++) {
        size_t len;
        const unsigned char *p = bpe_token(b, i, &len);
        escape(esc, p, len);
        o += (size_t)snprintf(out + o, cap - o, "%d %d %d \"%s\"\n", i,
                              b->merge[i - 256][0], b->merge[i - 256][1],
                              esc);
    }
    free(esc);
    *lenp = o;
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 32) >= 'a' && (c | 32) <= 'f')
        return (c | 32) - 'a' + 10;
    return -1;
}

/* Unescape the quoted text starting after '"' at s; *n its length.
 * Returns the position after the closing quote, or NULL. */
static const char *unescape(const char *s, const char *end,
                            unsigned char *out, size_t *n)
{
    size_t o = 0;
    while (s < end && *s != '"') {
        unsigned char c = (unsigned char)*s++;
        if (c == '\\') {
            if (s >= end)
                return NULL;
            char e = *s++;
            if (e == 'x') {
                int hi = end - s < 2 ? -1 : hexval(s[0]);
                int lo = end - s < 2 ? -1 : hexval(s[1]);
                if (hi < 0 || lo < 0)
                    return NULL;
                c = (unsigned char)(hi * 16 + lo);
                s += 2;
            } else if (e == '\\' || e == '"') {
                c = (unsigned char)e;
            } else if (e == 'n' || e == 't' || e == 'r') {
                c = e == 'n' ? '\n' : e == 't' ? '\t' : '\r';
            } else {
                return NULL;
            }
        }
        out[o++] = c;
    }
    *n = o;
    return s < end ? s + 1 : NULL;
}

struct parse {
    const char *p, *end, *name;
    int line;
    char *err;
    size_t errlen;
};

/* Next non-comment line into [*l, *le); 0 at the end of the text. */
static int next_line(struct parse *ps, const char **l, const char **le)
{
    while (ps->p < ps->end) {
        const char *nl = memchr(ps->p, '\n', (size_t)(ps->end - ps->p));
        *l = ps->p;
        *le = nl ? nl : ps->end;
        ps->p = nl ? nl + 1 : ps->end;
        ps->line++;
        if (*le > *l && **l != '#')
            return 1;
    }
    return 0;
}

static int bad(struct parse *ps, const char *what)
{
    snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->name, ps->line, what);
    return -1;
}

/* One merge line for token id. */
static int parse_merge(struct parse *ps, struct bpe *b, int id,
                       const char *l, const char *le, unsigned char *tmp)
{
    char num[64];
    size_t n = (size_t)(le - l) < sizeof num - 1 ? (size_t)(le - l)
                                                 : sizeof num - 1;
    memcpy(num, l, n);
    num[n] = '\0';
    int got, left, right, used = 0;
    if (sscanf(num, "%d %d %d %n", &got, &left, &right, &used) != 3 ||
        l[used] != '"')
        return bad(ps, "expected 'ID LEFT RIGHT \"TEXT\"'");
    if (got != id) {
        char w[96];
        snprintf(w, sizeof w, "expected token id %d, found %d", id, got);
        return bad(ps, w);
    }
    if (left < 0 || right < 0 || left >= id || right >= id)
        return bad(ps, "LEFT and RIGHT must be earlier token ids");
    size_t tl;
    const char *after = unescape(l + used + 1, le, tmp, &tl);
    if (!after || after != le)
        return bad(ps, "bad quoted TEXT (escapes: \\\\ \\\" \\n \\t \\r "
                       "\\xHH)");
    size_t ll = b->len[left], rl = b->len[right];
    if (tl != ll + rl || memcmp(tmp, b->bytes + b->off[left], ll) ||
        memcmp(tmp + ll, b->bytes + b->off[right], rl))
        return bad(ps, "TEXT is not the bytes of LEFT followed by RIGHT");
    b->merge[id - 256][0] = left;
    b->merge[id - 256][1] = right;
    return 0;
}

/* Header: version and vocab_size. */
static int parse_header(struct parse *ps, int *vocab)
{
    const char *l, *le;
    if (!next_line(ps, &l, &le) || le - l != 13 ||
        memcmp(l, "mpitron-bpe 1", 13))
        return bad(ps, "not an mpitron BPE file (expected 'mpitron-bpe 1'; "
                       "known versions: 1)");
    char buf[64] = "";
    if (next_line(ps, &l, &le) && (size_t)(le - l) < sizeof buf)
        memcpy(buf, l, (size_t)(le - l));
    int v, used = 0;
    if (sscanf(buf, "vocab_size %d%n", &v, &used) != 1 || buf[used] ||
        v < 256 || v > BPE_MAX_VOCAB)
        return bad(ps, "expected 'vocab_size N' with 256 <= N <= 65535");
    *vocab = v;
    return 0;
}

int bpe_from_text(struct bpe *b, const char *text, size_t len,
                  const char *name, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    struct parse ps = {text, text + len, name, 0, err, errlen};
    int V;
    if (parse_header(&ps, &V) < 0)
        return -1;
    b->vocab = V;
    b->merge = malloc((size_t)(V - 256 + 1) * sizeof *b->merge);
    b->off = calloc((size_t)V, sizeof *b->off);
    b->len = calloc((size_t)V, sizeof *b->len);
    /* token bytes grow as merges are read: at most the text's length */
    b->bytes = malloc(len + 256);
    unsigned char *tmp = malloc(len + 1);
    int rc = -1;
    if (!b->merge || !b->off || !b->len || !b->bytes || !tmp) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto out;
    }
    for (int i = 0; i < 256; i++) {
        b->off[i] = (uint32_t)i;
        b->len[i] = 1;
        b->bytes[i] = (unsigned char)i;
    }
    size_t o = 256;
    for (int id = 256; id < V; id++) {
        const char *l, *le;
        if (!next_line(&ps, &l, &le)) {
            char w[96];
            snprintf(w, sizeof w, "ends after %d merges, vocab_size %d "
                     "needs %d", id - 256, V, V - 256);
            bad(&ps, w);
            goto out;
        }
        if (parse_merge(&ps, b, id, l, le, tmp) < 0)
            goto out;
        b->off[id] = (uint32_t)o;
        b->len[id] = b->len[b->merge[id - 256][0]] +
                     b->len[b->merge[id - 256][1]];
        memcpy(b->bytes + o, tmp, b->len[id]);
        o += b->len[id];
    }
    const char *l, *le;
    if (next_line(&ps, &l, &le)) {
        bad(&ps, "text after the last merge that vocab_size allows");
        goto out;
    }
    free(b->off);
    free(b->len);
    free(b->bytes);
    b->off = NULL;
    b->len = NULL;
    b->bytes = NULL;
    if (bpe_tables_build(b) < 0) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    if (rc < 0)
        bpe_free(b);
    return rc;
}

int bpe_load(struct bpe *b, const char *path, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open tokenizer %s: %s", path,
                 strerror(errno));
        return -1;
    }
    size_t len = 0, cap = 1 << 16;
    char *text = malloc(cap);
    while (text) {
        len += fread(text + len, 1, cap - len, f);
        if (len < cap)
            break;
        char *nt = realloc(text, cap *= 2);
        if (!nt)
            free(text);
        text = nt;
    }
    int rd = ferror(f);
    fclose(f);
    if (!text || rd) {
        free(text);
        snprintf(err, errlen, "cannot read tokenizer %s%s", path,
                 rd ? "" : ": out of memory");
        return -1;
    }
    int rc = bpe_from_text(b, text, len, path, err, errlen);
    free(text);
    return rc;
}
