/*
 * data.c - token shards (mmap), the global batch of a step, and the
 * double-buffered prefetching loader.  Formats and formulas: data.h.
 */
#include "data.h"

#include "bpe/bpe.h"
#include "rng.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "data.c maps little-endian uint16 tokens directly; big-endian hosts are unsupported"
#endif

#define SHARD_HEADER_BYTES ((size_t)SHARD_HEADER_INTS * 4)

static int32_t le32_get(const unsigned char *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* ---- opening a split ------------------------------------------------ */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Sorted full paths of <dir>/<split>_*.bin into *out (caller frees with
 * names_free).  Returns the count (> 0) or -1 with err filled. */
static int shard_paths_list(const char *dir, const char *split, char ***out,
                            char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            snprintf(err, errlen,
                     "data directory '%s' does not exist (run `mpitron "
                     "prepare --out %s FILE...`)", dir, dir);
        else
            snprintf(err, errlen, "cannot open data directory '%s': %s", dir,
                     strerror(errno));
        return -1;
    }
    size_t plen = strlen(split);
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < plen + 5 || strncmp(e->d_name, split, plen) != 0 ||
            e->d_name[plen] != '_' || strcmp(e->d_name + len - 4, ".bin"))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, (size_t)cap * sizeof *nn);
            if (!nn)
                goto oom;
            names = nn;
        }
        size_t sz = strlen(dir) + len + 2;
        if (!(names[n] = malloc(sz)))
            goto oom;
        snprintf(names[n++], sz, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (n == 0) {
        free(names);
        snprintf(err, errlen,
                 "no shards matching '%s/%s_*.bin' in data directory '%s'",
                 dir, split, dir);
        return -2;
    }
    qsort(names, (size_t)n, sizeof *names, name_cmp);
    *out = names;
    return n;
oom:
    closedir(d);
    names_free(names, n);
    snprintf(err, errlen, "out of memory listing data directory '%s'", dir);
    return -1;
}

int shard_validate(struct shard *s, int vocab_size, char *err, size_t errlen)
{
    const unsigned char *h = s->map;
    if (s->map_len < SHARD_HEADER_BYTES) {
        snprintf(err, errlen,
                 "%s: file has %zu bytes, shorter than the %zu-byte header",
                 s->path, s->map_len, SHARD_HEADER_BYTES);
        return -1;
    }
    int32_t magic = le32_get(h), version = le32_get(h + 4);
    int32_t count = le32_get(h + 8);
    if (magic != SHARD_MAGIC) {
        snprintf(err, errlen, "bad magic %d in %s, expected %d", magic,
                 s->path, SHARD_MAGIC);
        return -1;
    }
    if (version != SHARD_VERSION) {
        snprintf(err, errlen,
                 "%s: unsupported shard version %d (known versions: %d)",
                 s->path, version, SHARD_VERSION);
        return -1;
    }
    if (count < 0 ||
        SHARD_HEADER_BYTES + 2 * (size_t)count != s->map_len) {
        snprintf(err, errlen,
                 "%s: header says %d tokens (%zu bytes) but file has %zu "
                 "bytes", s->path, count,
                 SHARD_HEADER_BYTES + 2 * (size_t)(count < 0 ? 0 : count),
                 s->map_len);
        return -1;
    }
    s->tok = (const uint16_t *)(h + SHARD_HEADER_BYTES);
    s->ntok = count;
    if (vocab_size <= 0 || vocab_size > 65535)
        return 0;   /* every uint16 is in range (or no check requested) */
    for (int64_t i = 0; i < s->ntok; i++) {
        if (s->tok[i] >= vocab_size) {
            snprintf(err, errlen,
                     "%s: token %u at position %lld is >= vocab_size %d",
                     s->path, (unsigned)s->tok[i], (long long)i, vocab_size);
            return -1;
        }
    }
    return 0;
}

/* Map s->path read-only and validate it. */
static int shard_map(struct shard *s, int vocab_size, char *err,
                     size_t errlen)
{
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open shard %s: %s", s->path,
                 strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a readable regular file", s->path);
        close(fd);
        return -1;
    }
    if ((size_t)st.st_size < SHARD_HEADER_BYTES) {
        snprintf(err, errlen,
                 "%s: file has %lld bytes, shorter than the %zu-byte header",
                 s->path, (long long)st.st_size, SHARD_HEADER_BYTES);
        close(fd);
        return -1;
    }
    s->map_len = (size_t)st.st_size;
    void *m = mmap(NULL, s->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot mmap %s: %s", s->path, strerror(errno));
        return -1;
    }
    s->map = m;
    madvise(m, s->map_len, MADV_WILLNEED);
    return shard_validate(s, vocab_size, err, errlen);
}

/* Read and check <dir>/<split>.docs against a split of ntok tokens; a
 * missing file leaves ds->docs NULL. */
static int docs_load(struct dataset *ds, const char *dir, const char *split,
                     char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s" DOCS_SUFFIX, dir, split);
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "cannot open %s: "
                                      "%s", path, strerror(errno)), -1);
    unsigned char h[SHARD_HEADER_BYTES];
    struct stat st;
    int rc = -1;
    if (fstat(fileno(f), &st) != 0 || fread(h, 1, sizeof h, f) != sizeof h) {
        snprintf(err, errlen, "%s: shorter than the %zu-byte header", path,
                 SHARD_HEADER_BYTES);
        goto out;
    }
    int32_t magic = le32_get(h), version = le32_get(h + 4);
    int64_t n = le32_get(h + 8);
    int64_t ntok = (int64_t)((uint64_t)(uint32_t)le32_get(h + 12) |
                             (uint64_t)(uint32_t)le32_get(h + 16) << 32);
    if (magic != DOCS_MAGIC || version != DOCS_VERSION) {
        snprintf(err, errlen, "%s: not a document index (magic %d version "
                 "%d; expected %d version %d)", path, magic, version,
                 DOCS_MAGIC, DOCS_VERSION);
        goto out;
    }
    if (n < 1 || (uint64_t)st.st_size != SHARD_HEADER_BYTES + 8 * (uint64_t)n
        || ntok != ds->ntok) {
        snprintf(err, errlen, "%s: %lld documents of a %lld-token split in "
                 "%lld bytes, but the shards hold %lld tokens", path,
                 (long long)n, (long long)ntok, (long long)st.st_size,
                 (long long)ds->ntok);
        goto out;
    }
    if (!(ds->docs = malloc((size_t)n * sizeof *ds->docs)) ||
        fread(ds->docs, sizeof *ds->docs, (size_t)n, f) != (size_t)n) {
        snprintf(err, errlen, "cannot read %s", path);
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        if ((i == 0 && ds->docs[0] != 0) ||
            (i > 0 && ds->docs[i] <= ds->docs[i - 1]) ||
            ds->docs[i] >= ds->ntok) {
            snprintf(err, errlen, "%s: document %lld starts at %lld: starts "
                     "must ascend from 0 and stay below %lld", path,
                     (long long)i, (long long)ds->docs[i],
                     (long long)ds->ntok);
            goto out;
        }
    ds->ndocs = n;
    rc = 0;
out:
    fclose(f);
    if (rc < 0) {
        free(ds->docs);
        ds->docs = NULL;
    }
    return rc;
}

int64_t dataset_doc_start(const struct dataset *ds, int64_t pos)
{
    if (!ds->docs)
        return 0;
    int64_t lo = 0, hi = ds->ndocs - 1; /* last start <= pos */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (ds->docs[mid] <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    return ds->docs[lo];
}

int dataset_max_token(const struct dataset *ds)
{
    int mx = 0;
    for (int k = 0; k < ds->nshards; k++) {
        const struct shard *s = &ds->shards[k];
        for (int64_t i = 0; i < s->ntok; i++)
            mx = s->tok[i] > mx ? s->tok[i] : mx;
    }
    return mx;
}

int data_vocab_detect(const char *dir, int *vocab, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, BPE_FILE);
    if (access(path, F_OK) == 0) {
        struct bpe b;
        if (bpe_load(&b, path, err, errlen) < 0)
            return -1;
        *vocab = b.vocab;
        bpe_free(&b);
        return 0;
    }
    int mx = 0, docs = 0;
    const char *splits[2] = {"train", "val"};
    for (int s = 0; s < 2; s++) {
        struct dataset ds;
        char e2[512];
        int rc = dataset_open(&ds, dir, splits[s], 0, s ? e2 : err,
                              s ? sizeof e2 : errlen);
        if (rc == -2 && s == 1)
            continue; /* no val split: fine */
        if (rc < 0) {
            if (s == 1) /* a broken one is not */
                snprintf(err, errlen, "%s", e2);
            return -1;
        }
        int m = dataset_max_token(&ds);
        mx = m > mx ? m : mx;
        docs |= ds.docs != NULL;
        dataset_close(&ds);
    }
    if (mx >= 256 && docs) {
        /* document indexes: `mpitron prepare` wrote these shards, and its
         * shards pass 255 only with its own BPE, whose merges.txt is
         * gone (llm.c's GPT-2 shards come without indexes) */
        snprintf(err, errlen, "%s: tokens up to %d and no %s, which "
                 "`mpitron prepare` writes next to the shards of its BPE "
                 "tokenizer: restore it, or set vocab_size (> %d; 50257 "
                 "for llm.c's GPT-2 shards given document indexes)", dir,
                 mx, BPE_FILE, mx);
        return -1;
    }
    if (mx < 256)
        *vocab = 256;
    else if (mx < 50257)
        *vocab = 50257;
    else {
        snprintf(err, errlen, "%s: tokens up to %d and no %s: set "
                 "vocab_size (> %d)", dir, mx, BPE_FILE, mx);
        return -1;
    }
    return 0;
}

int data_vocab_resolve(const char *dir, int *vocab, int optional, char *err,
                       size_t errlen)
{
    struct stat st;
    if (optional && stat(dir, &st) != 0) {
        if (*vocab == 0)
            *vocab = 256;
        return 0;
    }
    if (*vocab == 0)
        return data_vocab_detect(dir, vocab, err, errlen);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, BPE_FILE);
    if (access(path, F_OK) != 0)
        return 0;
    int v;
    if (data_vocab_detect(dir, &v, err, errlen) < 0)
        return -1;
    if (v != *vocab) {
        snprintf(err, errlen, "vocab_size=%d, but the tokenizer %s has %d "
                 "tokens (vocab_size=0 takes it from the data)", *vocab,
                 path, v);
        return -1;
    }
    return 0;
}

/* vocab_size <= 0 (or > 65535) skips the token range check. */
int64_t data_split_size_tokens(const char *dir, const char *split)
{
    char **paths, e[256];
    int n = shard_paths_list(dir, split, &paths, e, sizeof e);
    if (n < 0)
        return -1;
    int64_t tok = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st) == 0 &&
            st.st_size > SHARD_HEADER_INTS * 4)
            tok += (int64_t)(st.st_size - SHARD_HEADER_INTS * 4) / 2;
    }
    names_free(paths, n);
    return tok;
}

int dataset_open(struct dataset *ds, const char *dir, const char *split,
                 int vocab_size, char *err, size_t errlen)
{
    memset(ds, 0, sizeof *ds);
    char **paths;
    int n = shard_paths_list(dir, split, &paths, err, errlen);
    if (n < 0)
        return n; /* -2: no shards of the split */
    ds->shards = calloc((size_t)n, sizeof *ds->shards);
    if (!ds->shards) {
        names_free(paths, n);
        snprintf(err, errlen, "out of memory opening %d shards in '%s'", n,
                 dir);
        return -1;
    }
    ds->nshards = n;
    for (int i = 0; i < n; i++)
        ds->shards[i].path = paths[i];   /* ownership moves to ds */
    free(paths);
    for (int i = 0; i < n; i++) {
        struct shard *s = &ds->shards[i];
        if (shard_map(s, vocab_size, err, errlen) != 0) {
            dataset_close(ds);
            return -1;
        }
        s->start = ds->ntok;
        ds->ntok += s->ntok;
    }
    if (docs_load(ds, dir, split, err, errlen) < 0) {
        dataset_close(ds);
        return -1;
    }
    return 0;
}

void dataset_close(struct dataset *ds)
{
    for (int i = 0; i < ds->nshards; i++) {
        if (ds->shards[i].map)
            munmap(ds->shards[i].map, ds->shards[i].map_len);
        free(ds->shards[i].path);
    }
    free(ds->shards);
    free(ds->docs);
    memset(ds, 0, sizeof *ds);
}

/* ---- reading and batches -------------------------------------------- */

/* Index of the shard holding stream position pos (0 <= pos < ntok). */
static int shard_find(const struct dataset *ds, int64_t pos)
{
    int lo = 0, hi = ds->nshards - 1;
    while (lo < hi) {   /* last shard with start <= pos */
        int mid = lo + (hi - lo + 1) / 2;
        if (ds->shards[mid].start <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    while (lo < ds->nshards - 1 && pos >= ds->shards[lo].start +
                                          ds->shards[lo].ntok)
        lo++;   /* skip empty shards that share a start */
    return lo;
}

void dataset_read(const struct dataset *ds, int64_t pos, int64_t n,
                  int32_t *out)
{
    assert(pos >= 0 && n >= 0 && pos + n <= ds->ntok);
    if (n == 0)
        return;
    int k = shard_find(ds, pos);
    while (n > 0) {
        const struct shard *s = &ds->shards[k++];
        int64_t off = pos - s->start;
        int64_t m = s->ntok - off < n ? s->ntok - off : n;
        for (int64_t t = 0; t < m; t++)
            out[t] = s->tok[off + t];
        out += m;
        pos += m;
        n -= m;
    }
}

void dataset_window(const struct dataset *ds, int64_t pos, int T,
                    int32_t *inp, int32_t *tgt, int32_t *dstart)
{
    dataset_read(ds, pos, T, inp);
    for (int t = 0; t + 1 < T; t++)
        tgt[t] = inp[t + 1];
    dataset_read(ds, pos + T, 1, tgt + T - 1);
    if (!dstart)
        return;
    int32_t lo = 0;
    if (ds->docs) {
        /* the next document start after pos */
        int64_t a = 0, b = ds->ndocs; /* first start > pos */
        while (a < b) {
            int64_t mid = a + (b - a) / 2;
            if (ds->docs[mid] <= pos)
                a = mid + 1;
            else
                b = mid;
        }
        for (int t = 0; t < T; t++) {
            if (a < ds->ndocs && ds->docs[a] == pos + t) {
                lo = t;
                a++;
            }
            dstart[t] = lo;
        }
        return;
    }
    for (int t = 0; t < T; t++)
        dstart[t] = 0;
}

void dataset_train_batch(const struct dataset *ds, uint64_t seed,
                         int64_t step, int64_t seq0, int nseq, int T,
                         int32_t *inp, int32_t *tgt)
{
    assert(T > 0 && ds->ntok > T);
    uint64_t key = rng_key(seed, RNG_DATA, (uint64_t)step);
    uint64_t range = (uint64_t)(ds->ntok - T);
    for (int k = 0; k < nseq; k++) {
        uint64_t i = (uint64_t)(seq0 + k);
        int64_t pos = (int64_t)(rng_u64(key, i) % range);
        dataset_window(ds, pos, T, inp + (size_t)k * T, tgt + (size_t)k * T,
                       NULL);
    }
}

void dataset_val_batch(const struct dataset *ds, int64_t j, int val_batch,
                       int64_t seq0, int nseq, int T, int32_t *inp,
                       int32_t *tgt, int32_t *dstart)
{
    assert(T > 0 && ds->ntok > T && j >= 0);
    uint64_t range = (uint64_t)(ds->ntok - T);
    for (int k = 0; k < nseq; k++) {
        uint64_t i = (uint64_t)(seq0 + k);
        uint64_t w = ((uint64_t)j * (uint64_t)val_batch + i) * (uint64_t)T;
        dataset_window(ds, (int64_t)(w % range), T, inp + (size_t)k * T,
                       tgt + (size_t)k * T,
                       dstart ? dstart + (size_t)k * T : NULL);
    }
}
