/*
 * prepare.c - `mpitron prepare`: text files -> byte-level token shards in
 * llm.c's format (data.h), written durably (ckpt_replace: temp name,
 * fsync, rename, fsync the directory).
 */
#include "data.h"

#include "bpe/bpe.h"
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARD_HEADER_BYTES ((size_t)SHARD_HEADER_INTS * 4)

static void le32_put(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Write a then b (either may be empty) to path durably (ckpt_replace).
 * 0 or -1 with err. */
static int durable_write(const char *path, const void *a, size_t na,
                         const void *b, size_t nb, char *err, size_t errlen)
{
    struct ckpt_buf bufs[2] = {{a, na}, {b, nb}};
    char e[1024];
    if (ckpt_replace(path, bufs, 2, e, sizeof e) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, e);
        return -1;
    }
    return 0;
}

/* Tokens are written as little-endian uint16; the header is 256 LE int32. */
int shard_write(const char *path, const uint16_t *tok, int64_t n, char *err,
                size_t errlen)
{
    if (n < 0 || n > INT32_MAX) {
        snprintf(err, errlen, "%s: %" PRId64 " tokens do not fit a shard "
                 "(at most %d)", path, n, INT32_MAX);
        return -1;
    }
    unsigned char hdr[SHARD_HEADER_BYTES];
    memset(hdr, 0, sizeof hdr);
    le32_put(hdr, SHARD_MAGIC);
    le32_put(hdr + 4, SHARD_VERSION);
    le32_put(hdr + 8, (uint32_t)n);
    /* x86/ARM hosts are little-endian, so tokens go out as they are;
     * data.c refuses to build on big-endian hosts anyway. */
    return durable_write(path, hdr, sizeof hdr, tok, (size_t)n * sizeof *tok,
                         err, errlen);
}

int docs_write(const char *path, const int64_t *starts, int64_t n,
               int64_t ntok, char *err, size_t errlen)
{
    if (n < 0 || n > INT32_MAX) {
        snprintf(err, errlen, "%s: %" PRId64 " documents do not fit a "
                 "document index", path, n);
        return -1;
    }
    unsigned char hdr[SHARD_HEADER_BYTES];
    memset(hdr, 0, sizeof hdr);
    le32_put(hdr, DOCS_MAGIC);
    le32_put(hdr + 4, DOCS_VERSION);
    le32_put(hdr + 8, (uint32_t)n);
    le32_put(hdr + 12, (uint32_t)((uint64_t)ntok & 0xffffffffu));
    le32_put(hdr + 16, (uint32_t)((uint64_t)ntok >> 32));
    return durable_write(path, hdr, sizeof hdr, starts,
                         (size_t)n * sizeof *starts, err, errlen);
}

/* Append the whole of file to *buf (length *len, capacity *cap). */
static int file_slurp(const char *path, unsigned char **buf, size_t *len,
                      size_t *cap, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open input file %s: %s", path,
                 strerror(errno));
        return -1;
    }
    for (;;) {
        if (*cap - *len < 65536) {
            size_t nc = *cap ? 2 * *cap : (size_t)1 << 20;
            unsigned char *nb = realloc(*buf, nc);
            if (!nb) {
                snprintf(err, errlen, "out of memory reading %s", path);
                fclose(f);
                return -1;
            }
            *buf = nb;
            *cap = nc;
        }
        size_t r = fread(*buf + *len, 1, *cap - *len, f);
        *len += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    int saved = errno;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "cannot read input file %s: %s", path,
                 strerror(saved));
        return -1;
    }
    return 0;
}

/* Remove what an earlier prepare may have left in dir: train_*.bin,
 * val_*.bin (and their .tmp), the tokenizer and the document indexes. */
static int stale_remove(const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "cannot open directory %s: %s", dir,
                 strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        size_t len = strlen(nm);
        int shard = (!strncmp(nm, "train_", 6) || !strncmp(nm, "val_", 4)) &&
                    ((len > 4 && !strcmp(nm + len - 4, ".bin")) ||
                     (len > 8 && !strcmp(nm + len - 8, ".bin.tmp")));
        int side = !strcmp(nm, BPE_FILE) || !strcmp(nm, "train" DOCS_SUFFIX)
                   || !strcmp(nm, "val" DOCS_SUFFIX);
        if (!shard && !side)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, nm);
        if (unlink(p) != 0) {
            snprintf(err, errlen, "cannot remove stale file %s: %s", p,
                     strerror(errno));
            rc = -1;
            break;
        }
    }
    closedir(d);
    return rc;
}

/* Write tok[0,n) as shards <dir>/<split>_NNN.bin of <= shard_tokens. */
static int split_write(const char *dir, const char *split,
                       const uint16_t *tok, int64_t n, int64_t shard_tokens,
                       int verbose, char *err, size_t errlen)
{
    int64_t nshard = (n + shard_tokens - 1) / shard_tokens;
    int width = 3;   /* wide enough that name order is stream order */
    for (int64_t m = nshard - 1; m >= 1000; m /= 10)
        width++;
    for (int64_t k = 0; k < nshard; k++) {
        int64_t off = k * shard_tokens;
        int64_t cnt = n - off < shard_tokens ? n - off : shard_tokens;
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s_%0*" PRId64 ".bin",
                             dir, split, width, k) >= sizeof path) {
            snprintf(err, errlen, "output path too long: %s", dir);
            return -1;
        }
        if (shard_write(path, tok + off, cnt, err, errlen) != 0)
            return -1;
        if (verbose)
            printf("  wrote %s (%" PRId64 " tokens)\n", path, cnt);
    }
    return 0;
}

/* ---- documents ------------------------------------------------------------ */

/* Append v to the growing array *d (count *nd, capacity *cap). */
static int push64(int64_t **d, size_t *nd, size_t *cap, int64_t v)
{
    if (*nd == *cap) {
        size_t nc = *cap ? 2 * *cap : 1024;
        int64_t *n2 = realloc(*d, nc * sizeof **d);
        if (!n2)
            return -1;
        *d = n2;
        *cap = nc;
    }
    (*d)[(*nd)++] = v;
    return 0;
}

/* Document starts in bytes[0, n) (files at fstart[0..nfiles), the last
 * ending at n): every non-empty file's start and the byte after each line
 * equal to sep, except where that is the file's end (sep "" = file
 * starts only); a separator line that opens a file moves that file's
 * start after it.  Ascending and unique.  *out is malloc'ed (caller
 * frees).  Returns the count, or -1 when out of memory. */
static int64_t docs_find(const unsigned char *bytes, size_t n,
                         const size_t *fstart, int nfiles, const char *sep,
                         int64_t **out)
{
    size_t cap = 0, nd = 0, sl = strlen(sep);
    int64_t *d = NULL;
    for (int f = 0; f < nfiles; f++) {
        size_t fs = fstart[f], fe = f + 1 < nfiles ? fstart[f + 1] : n;
        if (fs < fe && push64(&d, &nd, &cap, (int64_t)fs) < 0)
            goto oom;
        for (size_t i = fs; i < fe;) {
            size_t e = i;
            while (e < fe && bytes[e] != '\n')
                e++;
            size_t next = e < fe ? e + 1 : fe;
            if (sl && e - i == sl && !memcmp(bytes + i, sep, sl) &&
                next < fe) {
                if (i == fs)
                    d[nd - 1] = (int64_t)next; /* the file opens with one */
                else if (push64(&d, &nd, &cap, (int64_t)next) < 0)
                    goto oom;
            }
            i = next;
        }
    }
    if (!d && !(d = malloc(sizeof *d)))
        return -1;
    *out = d;
    return (int64_t)nd;
oom:
    free(d);
    return -1;
}

/* One split: bytes[0, n) with document starts docs[0..nd) (relative to
 * bytes, ascending) -> tokens *tok (caller frees) and the document starts
 * in tokens, tdocs[0..nd).  bpe NULL = byte-level.  0 or -1 (no memory). */
static int split_tokenize(const unsigned char *bytes, int64_t n,
                          const int64_t *docs, int64_t nd, struct bpe *bpe,
                          uint16_t **tok, int64_t *ntok, int64_t *tdocs)
{
    uint16_t *t = malloc((size_t)(n ? n : 1) * sizeof *t);
    if (!t)
        return -1;
    int64_t nt = 0;
    for (int64_t k = 0; k < nd || (nd == 0 && k == 0); k++) {
        int64_t a = nd ? docs[k] : 0, b = k + 1 < nd ? docs[k + 1] : n;
        if (nd)
            tdocs[k] = nt;
        if (!bpe) {
            for (int64_t i = a; i < b; i++)
                t[nt++] = bytes[i];
            continue;
        }
        int64_t m = bpe_encode(bpe, bytes + a, (size_t)(b - a), t + nt);
        if (m < 0) {
            free(t);
            return -1;
        }
        nt += m;
    }
    *tok = t;
    *ntok = nt;
    return 0;
}

/* The document starts of bytes [lo, hi) of the whole stream, relative to
 * lo, with lo itself a start: into out (room for nd + 1).  Returns the
 * count. */
static int64_t docs_slice(const int64_t *docs, int64_t nd, int64_t lo,
                          int64_t hi, int64_t *out)
{
    int64_t m = 0;
    if (lo < hi)
        out[m++] = 0;
    for (int64_t k = 0; k < nd; k++)
        if (docs[k] > lo && docs[k] < hi)
            out[m++] = docs[k] - lo;
    return m;
}

struct split_out {
    const char *name;
    uint16_t *tok;
    int64_t ntok, nd;
    int64_t *docs; /* in tokens */
};

/* Write everything: shards, the tokenizer, the document indexes. */
static int outputs_write(const char *outdir, struct split_out *sp,
                         const struct bpe *bpe,
                         const struct prepare_opts *o, char *err,
                         size_t errlen)
{
    char path[4096];
    if (!outdir[0]) {
        snprintf(err, errlen, "output directory name is empty");
        return -1;
    }
    if (ckpt_mkdir_p(outdir, err, errlen) != 0 ||
        stale_remove(outdir, err, errlen) != 0)
        return -1;
    for (int s = 0; s < 2; s++) {
        if (s == 1 && sp[s].ntok == 0)
            continue; /* no val split */
        if (split_write(outdir, sp[s].name, sp[s].tok, sp[s].ntok,
                        o->shard_tokens, o->verbose, err, errlen) != 0)
            return -1;
        snprintf(path, sizeof path, "%s/%s" DOCS_SUFFIX, outdir, sp[s].name);
        if (docs_write(path, sp[s].docs, sp[s].nd, sp[s].ntok, err,
                       errlen) != 0)
            return -1;
    }
    if (bpe) {
        size_t len;
        char *text = bpe_to_text(bpe, &len);
        snprintf(path, sizeof path, "%s/%s", outdir, BPE_FILE);
        int rc = text ? durable_write(path, text, len, NULL, 0, err, errlen)
                      : -1;
        if (!text)
            snprintf(err, errlen, "out of memory writing %s", path);
        free(text);
        if (rc != 0)
            return -1;
        if (o->verbose)
            printf("  wrote %s (%d tokens)\n", path, bpe->vocab);
    }
    return 0;
}

static int opts_check(const struct prepare_opts *o, int nfiles, char *err,
                      size_t errlen)
{
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0)) {
        snprintf(err, errlen, "val_fraction %g must be in [0, 1)",
                 o->val_fraction);
        return -1;
    }
    if (o->shard_tokens <= 0 || o->shard_tokens > INT32_MAX) {
        snprintf(err, errlen, "shard_tokens %" PRId64 " must be in [1, %d]",
                 o->shard_tokens, INT32_MAX);
        return -1;
    }
    if (o->vocab_size < 256 || o->vocab_size > BPE_MAX_VOCAB) {
        snprintf(err, errlen, "vocab_size %d must be in [256, %d] (256 = "
                 "bytes, more = a BPE tokenizer; uint16 tokens)",
                 o->vocab_size, BPE_MAX_VOCAB);
        return -1;
    }
    if (strchr(o->doc_sep, '\n')) {
        snprintf(err, errlen, "doc_sep must be one line (no newline)");
        return -1;
    }
    if (nfiles <= 0) {
        snprintf(err, errlen, "prepare: no input files given");
        return -1;
    }
    return 0;
}

/* The byte streams of the splits are cut as bytes (the last val_fraction
 * of the input); BPE is trained on the train split alone. */
static int tokenize_all(const unsigned char *bytes, int64_t total,
                        int64_t ntrain, const int64_t *docs, int64_t nd,
                        struct bpe *bpe, int use_bpe,
                        const struct prepare_opts *o, struct split_out *sp,
                        char *err, size_t errlen)
{
    int64_t *tmp = malloc((size_t)(nd + 1) * sizeof *tmp);
    if (!tmp)
        goto oom;
    if (use_bpe) {
        int64_t m = docs_slice(docs, nd, 0, ntrain, tmp);
        if (bpe_train(bpe, bytes, (size_t)ntrain, tmp, m, o->vocab_size, err,
                      errlen) != 0) {
            free(tmp);
            return -1;
        }
        if (bpe->vocab < o->vocab_size)
            printf("note: the train split has no more pairs that occur "
                   "twice: vocabulary %d, not %d\n", bpe->vocab,
                   o->vocab_size);
    }
    int64_t lo[2] = {0, ntrain}, hi[2] = {ntrain, total};
    for (int s = 0; s < 2; s++) {
        int64_t m = docs_slice(docs, nd, lo[s], hi[s], tmp);
        sp[s].docs = malloc((size_t)(m ? m : 1) * sizeof *sp[s].docs);
        sp[s].nd = m;
        if (!sp[s].docs ||
            split_tokenize(bytes + lo[s], hi[s] - lo[s], tmp, m,
                           use_bpe ? bpe : NULL, &sp[s].tok, &sp[s].ntok,
                           sp[s].docs) != 0)
            goto oom;
    }
    free(tmp);
    return 0;
oom:
    free(tmp);
    snprintf(err, errlen, "out of memory tokenising %" PRId64 " bytes",
             total);
    return -1;
}

/* Reads every file into memory (the input bytes, then its tokens), then
 * writes the outputs; frees all it took.  Old outputs in outdir are
 * removed only after every input was read and tokenised. */
int data_prepare_ex(const char *outdir, const char *const *files, int nfiles,
                    const struct prepare_opts *o, char *err, size_t errlen)
{
    if (opts_check(o, nfiles, err, errlen) != 0)
        return -1;
    unsigned char *bytes = NULL;
    size_t len = 0, cap = 0, *fstart = malloc((size_t)nfiles * sizeof(size_t));
    int64_t *docs = NULL;
    struct bpe bpe;
    memset(&bpe, 0, sizeof bpe);
    struct split_out sp[2] = {{.name = "train"}, {.name = "val"}};
    int rc = -1, use_bpe = o->vocab_size > 256;
    if (!fstart) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int i = 0; i < nfiles; i++) {
        fstart[i] = len;
        if (file_slurp(files[i], &bytes, &len, &cap, err, errlen) != 0)
            goto out;
        if (o->verbose)
            printf("read %s: %zu bytes\n", files[i], len - fstart[i]);
    }
    int64_t total = (int64_t)len;
    int64_t nval = (int64_t)((double)total * o->val_fraction);
    int64_t ntrain = total - nval;
    if (total == 0) {
        snprintf(err, errlen, "input files hold 0 bytes (first: %s)",
                 files[0]);
        goto out;
    }
    if (o->val_fraction > 0.0 && nval == 0) {
        snprintf(err, errlen, "val_fraction %g of %" PRId64 " bytes (%s...) "
                 "is 0 tokens: give more input or val_fraction 0",
                 o->val_fraction, total, files[0]);
        goto out;
    }
    int64_t nd = docs_find(bytes, len, fstart, nfiles, o->doc_sep, &docs);
    if (nd < 0) {
        snprintf(err, errlen, "out of memory finding documents");
        goto out;
    }
    if (tokenize_all(bytes, total, ntrain, docs, nd, &bpe, use_bpe, o, sp,
                     err, errlen) != 0)
        goto out;
    if (o->verbose)
        printf("%d files, %" PRId64 " bytes, %" PRId64 " documents: %" PRId64
               " train tokens, %" PRId64 " val tokens (vocab %d, %s, %.2f "
               "bytes per token)\n", nfiles, total, sp[0].nd + sp[1].nd,
               sp[0].ntok, sp[1].ntok, use_bpe ? bpe.vocab : 256,
               use_bpe ? "byte-level BPE" : "byte-level",
               (double)total / (double)(sp[0].ntok + sp[1].ntok));
    rc = outputs_write(outdir, sp, use_bpe ? &bpe : NULL, o, err, errlen);
out:
    for (int s = 0; s < 2; s++) {
        free(sp[s].tok);
        free(sp[s].docs);
    }
    bpe_free(&bpe);
    free(docs);
    free(fstart);
    free(bytes);
    if (o->verbose)
        fflush(stdout);
    return rc;
}

int data_prepare(const char *outdir, const char *const *files, int nfiles,
                 double val_fraction, int64_t shard_tokens, int verbose,
                 char *err, size_t errlen)
{
    struct prepare_opts o = {
        .val_fraction = val_fraction, .shard_tokens = shard_tokens,
        .vocab_size = 256, .doc_sep = "%", .verbose = verbose,
    };
    return data_prepare_ex(outdir, files, nfiles, &o, err, errlen);
}
