/*
 * offload.h - optimizer offload (memory swapping): the AdamW moments in a
 * file-backed mapping on node-local disk, streamed through the update in
 * blocks.
 *
 * The file (in offload_dir, named mpitron-offload-rankRRRRR-XXXXXX) holds
 * m then v, n floats each, each starting on a page; it is reserved in full
 * at start-up (posix_fallocate, so a full disk is an error at start-up
 * and never a SIGBUS in a step), mapped shared, and unlinked at once, so
 * nothing is left behind however the process ends.  offload_stream walks
 * [0, n) in blocks of OFFLOAD_BLOCK floats: before block b it asks the
 * kernel to read block b + 1 of both moments ahead (MADV_WILLNEED), then
 * hands [lo, hi) to the caller, then drops block b from this process
 * (MADV_DONTNEED: the dirty pages stay in the page cache and reach the
 * file; nothing is lost) and starts its write-back (sync_file_range), so
 * the pages become clean and the kernel can reclaim them.  Resident: about
 * two blocks of each moment instead of 8 bytes per element.
 *
 * The values are the same floats as in memory: an update streamed through
 * the mapping gives bitwise the same moments and parameters.
 */
#ifndef MPITRON_OFFLOAD_H
#define MPITRON_OFFLOAD_H

#include <stddef.h>

/* floats per streaming block: 4 MiB, a whole number of pages */
#define OFFLOAD_BLOCK ((size_t)1 << 20)

struct offload {
    char path[1024];   /* the file's name, for messages (unlinked) */
    int fd;
    void *map;
    size_t map_bytes;
    float *m, *v;      /* n floats each, zero on creation */
    size_t n;
};

/* Create, reserve, map and unlink the file for n floats of each moment
 * in dir (created if missing; "" = $TMPDIR or /tmp); rank names the file.
 * Returns 0, or -1 with err naming the directory or file and the reason
 * (no space: the bytes needed and free). */
int offload_init(struct offload *o, const char *dir, size_t n, int rank,
                 char *err, size_t errlen);
/* Unmap and close; o may be zeroed. */
void offload_free(struct offload *o);

/* Call visit(ctx, lo, hi) for consecutive blocks [lo, hi) covering
 * [0, n), reading the next block ahead and releasing each block once
 * visited (see above). */
void offload_stream(struct offload *o,
                    void (*visit)(void *ctx, size_t lo, size_t hi),
                    void *ctx);
/* Release every page of the mapping from this process (after a
 * checkpoint read or write touched them all). */
void offload_release(struct offload *o);

#endif
