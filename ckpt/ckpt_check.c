/*
 * ckpt_check.c - the manifest check: size, every block hash (blocks
 * hashed in parallel over the ranks), and a report naming the datasets a
 * damaged byte range holds.  Runs before any HDF5 call touches the file.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

int ckpt_hash_blocks(int fd, const char *path, uint64_t size, uint64_t block,
                     int rank, int nprocs, uint64_t *hash, char *err)
{
    int64_t nb = ckpt_manifest_nblocks(size, block);
    unsigned char *buf = nb > rank ? malloc((size_t)block) : NULL;

    if (nb > rank && !buf)
        return ckpt_errf(err, "%s: out of memory for a %" PRIu64 "-byte "
                              "hash buffer", path, block);
    for (int64_t i = rank; i < nb; i += nprocs) {
        uint64_t off = (uint64_t)i * block, want = size - off, got = 0;
        if (want > block)
            want = block;
        while (got < want) {
            ssize_t r = pread(fd, buf + got, (size_t)(want - got),
                              (off_t)(off + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                ckpt_errf(err, "%s: read at byte %" PRIu64 ": %s", path,
                          off + got, r < 0 ? strerror(errno)
                                           : "unexpected end of file");
                free(buf);
                return -1;
            }
            got += (uint64_t)r;
        }
        hash[i] = ckpt_hash64(buf, (size_t)want);
    }
    free(buf);
    return 0;
}

/* Rank 0: the file is a regular file, its manifest parses and its size
 * matches. */
static int check_head(const char *path, struct ckpt_manifest *m, char *err)
{
    struct stat st;

    if (stat(path, &st) != 0)
        return ckpt_errf(err, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return ckpt_errf(err, "%s: is a directory, not a checkpoint file",
                         path);
    if (!S_ISREG(st.st_mode))
        return ckpt_errf(err, "%s: not a regular file, so not a checkpoint",
                         path);
    if (ckpt_manifest_load(path, m, err) != 0)
        return -1;
    if ((uint64_t)st.st_size != m->size)
        return ckpt_errf(err, "%s: size %lld but the manifest says %" PRIu64
                              " (%s)", path, (long long)st.st_size, m->size,
                         (uint64_t)st.st_size < m->size
                             ? "truncated" : "data appended");
    return 0;
}

static int ext_cmp(const void *a, const void *b)
{
    const struct ckpt_extent *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Appends s to the growing string *d (malloc'ed); keeps going quietly
 * when memory runs out (the report is then shorter). */
static void cat(char **d, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);

    if (*len + n + 1 > *cap) {
        size_t c = 2 * (*len + n + 1);
        char *p = realloc(*d, c);
        if (!p)
            return;
        *d = p;
        *cap = c;
    }
    memcpy(*d + *len, s, n + 1);
    *len += n;
}

/* "bytes [a, b) are damaged: NAME, NAME, HDF5 metadata" (malloc'ed or
 * NULL).  x is sorted by offset. */
static char *range_text(uint64_t a, uint64_t b, const struct ckpt_extents *x)
{
    char head[96], *s = NULL;
    size_t len = 0, cap = 0, first = 0;
    uint64_t cursor = a;
    int named = 0, meta = 0;

    snprintf(head, sizeof head, "bytes [%" PRIu64 ", %" PRIu64 ") are "
             "damaged: ", a, b);
    cat(&s, &len, &cap, head);
    first = len;
    for (size_t i = 0; i < x->n && x->e[i].off < b; i++) {
        const struct ckpt_extent *e = &x->e[i];
        int dup = 0;
        if (e->off + e->len <= a)
            continue;
        if (e->off > cursor)
            meta = 1;
        if (e->off + e->len > cursor)
            cursor = e->off + e->len;
        for (size_t j = 0; j < i && !dup; j++)
            dup = x->e[j].off + x->e[j].len > a &&
                  (x->e[j].name == e->name || !strcmp(x->e[j].name, e->name));
        if (dup)
            continue;
        cat(&s, &len, &cap, named++ ? ", " : "");
        cat(&s, &len, &cap, e->name);
    }
    if (cursor < b)
        meta = 1;
    if (meta)
        cat(&s, &len, &cap, len > first ? ", HDF5 metadata" : "HDF5 metadata");
    return s;
}

/* Rank 0 with every block hash: names the damaged ranges in err (as much
 * as fits) and report (all of them). */
static int compare(const char *path, struct ckpt_manifest *m,
                   const uint64_t *got, FILE *report, char *err)
{
    size_t off;
    int nbad = 0;

    if (m->ext.n > 0)
        qsort(m->ext.e, m->ext.n, sizeof *m->ext.e, ext_cmp);
    off = (size_t)snprintf(err, CKPT_ERRMAX, "%s fails its manifest check: ",
                           path);
    for (int64_t i = 0; i < m->nblocks; i++) {
        int64_t j = i;
        char *s;
        if (got[i] == m->hash[i])
            continue;
        while (j + 1 < m->nblocks && got[j + 1] != m->hash[j + 1])
            j++;
        s = range_text((uint64_t)i * m->block,
                       (uint64_t)(j + 1) * m->block < m->size
                           ? (uint64_t)(j + 1) * m->block : m->size,
                       &m->ext);
        if (report)
            fprintf(report, "  %s: %s\n", path, s ? s : "(out of memory)");
        if (off < CKPT_ERRMAX)
            off += (size_t)snprintf(err + off, CKPT_ERRMAX - off, "%s%s",
                                    nbad ? "; " : "", s ? s : "bytes damaged");
        free(s);
        nbad++;
        i = j;
    }
    if (nbad && off >= CKPT_ERRMAX)
        memcpy(err + CKPT_ERRMAX - 5, "...", 4);
    return nbad ? -1 : 0;
}

/* Every rank hashes its blocks of path into a zeroed local array. */
static int hash_local(const char *path, uint64_t size, uint64_t block,
                      int rank, int nprocs, uint64_t *hash, char *err)
{
    int fd = open(path, O_RDONLY), rc;

    if (fd < 0)
        return ckpt_errf(err, "open(%s): %s", path, strerror(errno));
    rc = ckpt_hash_blocks(fd, path, size, block, rank, nprocs, hash, err);
    close(fd);
    return rc;
}

static int agree(MPI_Comm comm, int rc, char *err)
{
    return comm == MPI_COMM_NULL ? rc : ckpt_agree(comm, rc, err);
}

int ckpt_manifest_check(MPI_Comm comm, const char *path, FILE *report,
                        char *err)
{
    struct ckpt_manifest m;
    uint64_t hdr[2] = {0, 0}, *mine = NULL, *all = NULL;
    int64_t nb = 0;
    int rank = 0, nprocs = 1, rc = 0;

    memset(&m, 0, sizeof m);
    if (comm != MPI_COMM_NULL) {
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &nprocs);
    }
    if (rank == 0) {
        rc = check_head(path, &m, err);
        hdr[0] = m.size;
        hdr[1] = m.block;
    }
    if ((rc = agree(comm, rc, err)) != 0)
        goto out;
    if (comm != MPI_COMM_NULL)
        MPI_Bcast(hdr, 2, MPI_UINT64_T, 0, comm);
    nb = ckpt_manifest_nblocks(hdr[0], hdr[1]);
    mine = calloc((size_t)nb + 1, sizeof *mine);
    all = rank == 0 && nprocs > 1 ? calloc((size_t)nb + 1, sizeof *all) : mine;
    rc = mine && all ? 0 : ckpt_errf(err, "%s: out of memory", path);
    if (!rc)
        rc = hash_local(path, hdr[0], hdr[1], rank, nprocs, mine, err);
    if ((rc = agree(comm, rc, err)) != 0)
        goto out;
    if (nprocs > 1)
        MPI_Reduce(mine, all, (int)nb, MPI_UINT64_T, MPI_BOR, 0, comm);
    if (rank == 0)
        rc = compare(path, &m, all, report, err);
    rc = agree(comm, rc, err);
out:
    if (all != mine)
        free(all);
    free(mine);
    ckpt_manifest_free(&m);
    return rc ? -1 : 0;
}

int ckpt_check_manifest(MPI_Comm comm, const char *path, FILE *report,
                        char *err, size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    int rc = ckpt_manifest_check(comm, path, report, e);

    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}
