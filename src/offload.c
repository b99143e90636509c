/*
 * offload.c - the AdamW moments in a file-backed mapping (offload.h).
 */
#include "offload.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ckpt.h"

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static size_t round_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

int offload_init(struct offload *o, const char *dir, size_t n, int rank,
                 char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    o->fd = -1;
    o->n = n;
    const char *d = dir && dir[0] ? dir : getenv("TMPDIR");
    if (!d || !d[0])
        d = "/tmp";
    char why[1024];
    if (ckpt_mkdir_p(d, why, sizeof why) != 0) { /* the program's one */
        snprintf(err, errlen, "offload_dir %s: %s", d, why);
        return -1;
    }
    snprintf(o->path, sizeof(o->path), "%s/mpitron-offload-rank%05d-XXXXXX",
             d, rank);
    o->fd = mkstemp(o->path);
    if (o->fd < 0) {
        snprintf(err, errlen, "offload_dir %s: cannot create a file: %s", d,
                 strerror(errno));
        return -1;
    }
    unlink(o->path); /* the mapping keeps it; nothing is left behind */
    size_t half = round_up(n * sizeof(float), page_size());
    o->map_bytes = half ? 2 * half : page_size();
    int rc = posix_fallocate(o->fd, 0, (off_t)o->map_bytes);
    if (rc != 0) {
        struct statvfs sv;
        double freeb = fstatvfs(o->fd, &sv) == 0
                           ? (double)sv.f_bavail * (double)sv.f_frsize : -1;
        snprintf(err, errlen, "offload_dir %s: cannot reserve %.1f MB for "
                 "rank %d's optimizer moments (%.1f MB free): %s", d,
                 (double)o->map_bytes / 1e6, rank, freeb / 1e6,
                 strerror(rc));
        offload_free(o);
        return -1;
    }
    o->map = mmap(NULL, o->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                  o->fd, 0);
    if (o->map == MAP_FAILED) {
        o->map = NULL;
        snprintf(err, errlen, "offload_dir %s: cannot map %.1f MB: %s", d,
                 (double)o->map_bytes / 1e6, strerror(errno));
        offload_free(o);
        return -1;
    }
    o->m = o->map;
    o->v = (float *)((char *)o->map + half);
    return 0;
}

void offload_free(struct offload *o)
{
    if (o->map)
        munmap(o->map, o->map_bytes);
    if (o->fd >= 0)
        close(o->fd);
    memset(o, 0, sizeof(*o));
    o->fd = -1;
}

/* The pages of floats [lo, hi) of moment x, widened to whole pages. */
static void span(const struct offload *o, const float *x, size_t lo,
                 size_t hi, char **p, size_t *len)
{
    size_t pg = page_size();
    uintptr_t a = (uintptr_t)(x + lo) / pg * pg;
    uintptr_t z = round_up((uintptr_t)(x + hi), pg);
    uintptr_t end = (uintptr_t)o->map + o->map_bytes;
    *p = (char *)a;
    *len = (z < end ? z : end) - a;
}

static void advise(const struct offload *o, size_t lo, size_t hi, int adv)
{
    const float *x[2] = {o->m, o->v};
    for (int k = 0; k < 2; k++) {
        char *p;
        size_t len;
        span(o, x[k], lo, hi, &p, &len);
        if (len == 0)
            continue;
        madvise(p, len, adv); /* advice: a failure changes nothing */
        if (adv == MADV_DONTNEED)
            sync_file_range(o->fd, p - (char *)o->map, (off_t)len,
                            SYNC_FILE_RANGE_WRITE);
    }
}

void offload_stream(struct offload *o,
                    void (*visit)(void *ctx, size_t lo, size_t hi),
                    void *ctx)
{
    if (o->n)
        advise(o, 0, o->n < OFFLOAD_BLOCK ? o->n : OFFLOAD_BLOCK,
               MADV_WILLNEED);
    for (size_t lo = 0; lo < o->n; lo += OFFLOAD_BLOCK) {
        size_t hi = o->n - lo < OFFLOAD_BLOCK ? o->n : lo + OFFLOAD_BLOCK;
        if (hi < o->n) /* read the next block ahead */
            advise(o, hi, o->n - hi < OFFLOAD_BLOCK ? o->n
                                                    : hi + OFFLOAD_BLOCK,
                   MADV_WILLNEED);
        visit(ctx, lo, hi);
        advise(o, lo, hi, MADV_DONTNEED); /* blocks are whole pages */
    }
}

void offload_release(struct offload *o)
{
    if (o->map) {
        madvise(o->map, o->map_bytes, MADV_DONTNEED);
        sync_file_range(o->fd, 0, (off_t)o->map_bytes, SYNC_FILE_RANGE_WRITE);
    }
}
