/*
 * prepare.c - `mpitron prepare`: text files -> byte-level token shards in
 * llm.c's format (data.h), written durably (ckpt_replace: temp name,
 * fsync, rename, fsync the directory).
 */
#include "data.h"

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
    struct ckpt_buf b[2] = {{hdr, sizeof hdr},
                            {tok, (size_t)n * sizeof *tok}};
    char e[1024];
    if (ckpt_replace(path, b, 2, e, sizeof e) != 0) {
        snprintf(err, errlen, "cannot write shard %s: %s", path, e);
        return -1;
    }
    return 0;
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

/* Remove <dir>/train_*.bin and <dir>/val_*.bin (and their .tmp). */
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
        if (strncmp(nm, "train_", 6) && strncmp(nm, "val_", 4))
            continue;
        size_t len = strlen(nm);
        if (!(len > 4 && !strcmp(nm + len - 4, ".bin")) &&
            !(len > 8 && !strcmp(nm + len - 8, ".bin.tmp")))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, nm);
        if (unlink(p) != 0) {
            snprintf(err, errlen, "cannot remove stale shard %s: %s", p,
                     strerror(errno));
            rc = -1;
            break;
        }
    }
    closedir(d);
    return rc;
}

/* Write bytes[0,n) as shards <dir>/<split>_NNN.bin of <= shard_tokens. */
static int split_write(const char *dir, const char *split,
                       const unsigned char *bytes, int64_t n,
                       int64_t shard_tokens, uint16_t *tokbuf, int verbose,
                       char *err, size_t errlen)
{
    int64_t nshard = (n + shard_tokens - 1) / shard_tokens;
    int width = 3;   /* wide enough that name order is stream order */
    for (int64_t m = nshard - 1; m >= 1000; m /= 10)
        width++;
    for (int64_t k = 0; k < nshard; k++) {
        int64_t off = k * shard_tokens;
        int64_t cnt = n - off < shard_tokens ? n - off : shard_tokens;
        for (int64_t t = 0; t < cnt; t++)
            tokbuf[t] = bytes[off + t];
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s_%0*" PRId64 ".bin",
                             dir, split, width, k) >= sizeof path) {
            snprintf(err, errlen, "output path too long: %s", dir);
            return -1;
        }
        if (shard_write(path, tokbuf, cnt, err, errlen) != 0)
            return -1;
        if (verbose)
            printf("  wrote %s (%" PRId64 " tokens)\n", path, cnt);
    }
    return 0;
}

/* Reads every file into memory (one copy of the input bytes plus one
 * shard of uint16 tokens), then writes the shards; frees all it took.
 * Old shards in outdir are removed only after every input was read. */
int data_prepare(const char *outdir, const char *const *files, int nfiles,
                 double val_fraction, int64_t shard_tokens, int verbose,
                 char *err, size_t errlen)
{
    if (!(val_fraction >= 0.0 && val_fraction < 1.0)) {
        snprintf(err, errlen, "val_fraction %g must be in [0, 1)",
                 val_fraction);
        return -1;
    }
    if (shard_tokens <= 0 || shard_tokens > INT32_MAX) {
        snprintf(err, errlen, "shard_tokens %" PRId64 " must be in [1, %d]",
                 shard_tokens, INT32_MAX);
        return -1;
    }
    if (nfiles <= 0) {
        snprintf(err, errlen, "prepare: no input files given");
        return -1;
    }
    unsigned char *bytes = NULL;
    uint16_t *tokbuf = NULL;
    size_t len = 0, cap = 0;
    int rc = -1;
    for (int i = 0; i < nfiles; i++) {
        size_t before = len;
        if (file_slurp(files[i], &bytes, &len, &cap, err, errlen) != 0)
            goto out;
        if (verbose)
            printf("read %s: %zu bytes\n", files[i], len - before);
    }
    int64_t total = (int64_t)len;
    int64_t nval = (int64_t)((double)total * val_fraction);
    int64_t ntrain = total - nval;
    if (total == 0) {
        snprintf(err, errlen, "input files hold 0 bytes (first: %s)",
                 files[0]);
        goto out;
    }
    if (val_fraction > 0.0 && nval == 0) {
        snprintf(err, errlen, "val_fraction %g of %" PRId64 " bytes (%s...) "
                 "is 0 tokens: give more input or val_fraction 0",
                 val_fraction, total, files[0]);
        goto out;
    }
    int64_t bufn = shard_tokens < total ? shard_tokens : total;
    if (!(tokbuf = malloc((size_t)bufn * sizeof *tokbuf))) {
        snprintf(err, errlen, "out of memory for a shard of %" PRId64
                 " tokens", bufn);
        goto out;
    }
    if (verbose)
        printf("%d files, %" PRId64 " bytes: %" PRId64 " train tokens, %"
               PRId64 " val tokens (vocab 256, byte-level)\n",
               nfiles, total, ntrain, nval);
    if (!outdir[0]) {
        snprintf(err, errlen, "output directory name is empty");
        goto out;
    }
    if (ckpt_mkdir_p(outdir, err, errlen) != 0 ||
        stale_remove(outdir, err, errlen) != 0 ||
        split_write(outdir, "train", bytes, ntrain, shard_tokens, tokbuf,
                    verbose, err, errlen) != 0 ||
        split_write(outdir, "val", bytes + ntrain, nval, shard_tokens,
                    tokbuf, verbose, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    free(tokbuf);
    free(bytes);
    if (verbose)
        fflush(stdout);
    return rc;
}
