/*
 * ckpt_check.c - hashing the pieces of a file in parallel, and the
 * manifest check: size, every piece hash, every dataset line against its
 * pieces, and a report naming the datasets a damaged byte range holds.
 * Runs before any HDF5 call touches the file.  Also the per-process
 * record of files that passed it (ckpt_manifest_check_once).
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
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_internal.h"

#ifndef MAP_POPULATE /* Linux: fault the window in with one call */
#define MAP_POPULATE 0
#endif

/* pread all of [off, off+len) into buf: 0, or -1 with err. */
static int read_range(int fd, const char *path, unsigned char *buf,
                      uint64_t off, uint64_t len, char *err)
{
    uint64_t got = 0;

    while (got < len) {
        ssize_t r = pread(fd, buf + got, (size_t)(len - got),
                          (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return ckpt_errf(err, "%s: read at byte %" PRIu64 ": %s", path,
                             off + got, r < 0 ? strerror(errno)
                                              : "unexpected end of file");
        got += (uint64_t)r;
    }
    return 0;
}

/* [base, base+len) of fd mapped read-only (populated), or NULL when the
 * file system cannot map it; *map and *maplen: what to munmap. */
static const unsigned char *map_window(int fd, uint64_t base, uint64_t len,
                                       void **map, size_t *maplen)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), lead = base % page;

    *maplen = (size_t)(len + lead);
    *map = mmap(NULL, *maplen, PROT_READ, MAP_SHARED | MAP_POPULATE, fd,
                (off_t)(base - lead));
    if (*map == MAP_FAILED) {
        *map = NULL;
        return NULL;
    }
    return (const unsigned char *)*map + lead;
}

/* Hashes p[k0..k1) in windows of up to block bytes, each holding as many
 * whole pieces as fit (small pieces are hashed together).  A window is
 * mapped (hashing the page cache in place is four times faster than
 * copying it out with pread on some machines), else read.  The file is
 * not truncated under us: committed checkpoints are replaced by rename,
 * never rewritten, and the size was checked just before. */
static int hash_run(int fd, const char *path, struct ckpt_piece *p,
                    int64_t k0, int64_t k1, uint64_t block, char *err)
{
    unsigned char *buf = NULL;

    for (int64_t k = k0, j; k < k1; k = j) {
        uint64_t base = p[k].off, len;
        const unsigned char *w;
        void *map;
        size_t maplen;
        for (j = k + 1; j < k1 && p[j].off >= base &&
                        p[j].off + p[j].len - base <= block; j++)
            ;
        len = p[j - 1].off + p[j - 1].len - base;
        w = map_window(fd, base, len, &map, &maplen);
        if (!w && !buf && !(buf = malloc((size_t)block)))
            return ckpt_errf(err, "%s: out of memory for a %" PRIu64
                                  "-byte read buffer", path, block);
        if (!w && read_range(fd, path, buf, base, len, err)) {
            free(buf);
            return -1;
        }
        for (int64_t i = k; i < j; i++)
            p[i].hash = ckpt_hash64((w ? w : buf) + (p[i].off - base),
                                    (size_t)p[i].len);
        if (map)
            munmap(map, maplen);
    }
    free(buf);
    return 0;
}

int ckpt_pieces_hash(MPI_Comm comm, int fd, const char *path,
                     struct ckpt_piece *p, int64_t n, uint64_t block,
                     char *err)
{
    uint64_t total = 0, share, before = 0, *h = NULL;
    int rank = 0, nprocs = 1, rc = 0;
    int64_t k0 = -1, k1 = -1;

    if (comm != MPI_COMM_NULL) {
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &nprocs);
    }
    for (int64_t i = 0; i < n; i++)
        total += p[i].len;
    share = total / (uint64_t)nprocs + 1;
    /* rank r takes the pieces that start within its r-th share of the
     * bytes: a run of consecutive pieces, the same split on every rank */
    for (int64_t i = 0; i < n; i++) {
        if ((int)(before / share) == rank) {
            if (k0 < 0)
                k0 = i;
            k1 = i + 1;
        }
        before += p[i].len;
        p[i].hash = 0;
    }
    if (k0 >= 0)
        rc = hash_run(fd, path, p, k0, k1, block, err);
    if (comm == MPI_COMM_NULL || n == 0)
        return rc;
    if (ckpt_agree(comm, rc, err))
        return -1;
    h = malloc(sizeof *h * (size_t)n);
    if (ckpt_agree(comm, h ? 0 : ckpt_errf(err, "%s: out of memory", path),
                   err)) {
        free(h);
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        h[i] = p[i].hash;
    /* every hash is set on one rank only: OR-ing gathers them */
    MPI_Allreduce(MPI_IN_PLACE, h, (int)n, MPI_UINT64_T, MPI_BOR, comm);
    for (int64_t i = 0; i < n; i++)
        p[i].hash = h[i];
    free(h);
    return 0;
}

/* ---- files that passed the check in this process ------------------------ */

/* A passed check is remembered by the file's identity and timestamps and
 * its manifest's self hash; any write to the file changes its ctime. */
struct verified {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
    uint64_t self;
};

#define VERIFIED_MAX 8
static struct verified verified[VERIFIED_MAX]; /* main thread only */
static int verified_n, verified_next;

static int ts_eq(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static int verified_find(const struct verified *v)
{
    for (int i = 0; i < verified_n; i++) {
        const struct verified *c = &verified[i];
        if (c->dev == v->dev && c->ino == v->ino && c->size == v->size &&
            ts_eq(&c->mtim, &v->mtim) && ts_eq(&c->ctim, &v->ctim) &&
            c->self == v->self)
            return 1;
    }
    return 0;
}

/* Remembers v, unless the file changed too shortly before the check
 * began: a change right after the check could then carry the same
 * timestamp (file times come from a clock that ticks every few ms, every
 * second on file systems without sub-second times). */
static void verified_add(const struct verified *v, const struct timespec *t0)
{
    double margin = v->mtim.tv_nsec == 0 && v->ctim.tv_nsec == 0 ? 2.0 : 0.05;
    double age = (double)(t0->tv_sec - v->ctim.tv_sec) +
                 1e-9 * (double)(t0->tv_nsec - v->ctim.tv_nsec);

    if (age <= margin || verified_find(v))
        return;
    verified[verified_next] = *v;
    verified_next = (verified_next + 1) % VERIFIED_MAX;
    if (verified_n < VERIFIED_MAX)
        verified_n++;
}

/* Rank 0: the file is a regular file, its manifest parses and its size
 * matches; its identity into *id. */
static int check_head(const char *path, struct ckpt_manifest *m,
                      struct verified *id, char *err)
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
    id->dev = st.st_dev;
    id->ino = st.st_ino;
    id->size = st.st_size;
    id->mtim = st.st_mtim;
    id->ctim = st.st_ctim;
    id->self = m->self;
    return 0;
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
 * NULL).  x is sorted by offset (ckpt_manifest_load checks it). */
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
        if (e->off + e->len <= a)
            continue;
        if (e->off > cursor)
            meta = 1;
        cursor = e->off + e->len;
        cat(&s, &len, &cap, named++ ? ", " : "");
        cat(&s, &len, &cap, e->name);
    }
    if (cursor < b)
        meta = 1;
    if (meta)
        cat(&s, &len, &cap, len > first ? ", HDF5 metadata" : "HDF5 metadata");
    return s;
}

/* Rank 0 with every piece hash in got: names the damaged ranges in err
 * (as much as fits) and report (all of them). */
static int compare(const char *path, const struct ckpt_manifest *m,
                   const struct ckpt_piece *got, FILE *report, char *err)
{
    size_t off;
    int nbad = 0;

    off = (size_t)snprintf(err, CKPT_ERRMAX, "%s fails its manifest check: ",
                           path);
    for (int64_t i = 0; i < m->npieces; i++) {
        int64_t j = i;
        char *s;
        if (got[i].hash == m->piece[i].hash)
            continue;
        while (j + 1 < m->npieces && got[j + 1].hash != m->piece[j + 1].hash)
            j++;
        s = range_text(m->piece[i].off, m->piece[j].off + m->piece[j].len,
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

/* Rank 0, once the pieces match: every dataset line's checksum is that
 * of its pieces (else the manifest was edited or written wrongly). */
static int check_datasets(const char *path, const struct ckpt_manifest *m,
                          char *err)
{
    for (size_t i = 0; i < m->ext.n; i++) {
        const struct ckpt_extent *e = &m->ext.e[i];
        int64_t k = ckpt_manifest_piece_at(m, e->off), j = k;
        uint64_t h;
        while (m->piece[j].off + m->piece[j].len < e->off + e->len)
            j++; /* ckpt_manifest_load checked that the pieces end there */
        h = ckpt_checksum_pieces(&m->piece[k], j + 1 - k);
        if (h != e->hash)
            return ckpt_errf(err, "%s fails its manifest check: dataset %s: "
                                  "its pieces give the checksum %016" PRIx64
                                  ", the manifest says %016" PRIx64 " (the "
                                  "manifest was edited or written wrongly)",
                             path, e->name, h, e->hash);
    }
    return 0;
}

/* Every rank hashes its share of the pieces of path into got (a copy of
 * the manifest's pieces). */
static int hash_file(MPI_Comm comm, const char *path, struct ckpt_piece *got,
                     int64_t n, uint64_t block, char *err)
{
    int fd = open(path, O_RDONLY), rc;

    rc = fd < 0 ? ckpt_errf(err, "open(%s): %s", path, strerror(errno)) : 0;
    if (comm != MPI_COMM_NULL && ckpt_agree(comm, rc, err)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (rc)
        return -1;
    rc = ckpt_pieces_hash(comm, fd, path, got, n, block, err);
    close(fd);
    return rc;
}

/* Rank 0's pieces (and block size) on every rank into *got (malloc'ed). */
static int share_pieces(MPI_Comm comm, int rank, const struct ckpt_manifest *m,
                        struct ckpt_piece **got, int64_t *n, uint64_t *block,
                        char *err)
{
    uint64_t hdr[2] = {(uint64_t)m->npieces, m->block};

    if (comm != MPI_COMM_NULL)
        MPI_Bcast(hdr, 2, MPI_UINT64_T, 0, comm);
    *n = (int64_t)hdr[0];
    *block = hdr[1];
    *got = malloc(sizeof **got * (size_t)(*n + 1));
    if (ckpt_agree(comm, *got ? 0 : ckpt_errf(err, "out of memory"), err))
        return -1;
    if (rank == 0 && *n > 0)
        memcpy(*got, m->piece, sizeof **got * (size_t)*n);
    if (comm != MPI_COMM_NULL && *n > 0)
        MPI_Bcast(*got, (int)(sizeof **got * (size_t)*n), MPI_BYTE, 0, comm);
    return 0;
}

/* The check; with once, a file remembered as passed (verified_find) is
 * not hashed again, and a pass is remembered. */
static int check_run(MPI_Comm comm, const char *path, FILE *report, int once,
                     struct ckpt_manifest *keep, char *err)
{
    struct ckpt_manifest m;
    struct ckpt_piece *got = NULL;
    struct verified id;
    struct timespec t0 = {0, 0};
    uint64_t block = 0;
    int64_t n = 0;
    int rank = 0, rc = 0, hit = 0;

    memset(&m, 0, sizeof m);
    if (comm != MPI_COMM_NULL)
        MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        clock_gettime(CLOCK_REALTIME, &t0); /* before the stat */
        rc = check_head(path, &m, &id, err);
        hit = !rc && once && verified_find(&id);
    }
    if ((rc = ckpt_agree(comm, rc, err)) != 0)
        goto out;
    if (comm != MPI_COMM_NULL)
        MPI_Bcast(&hit, 1, MPI_INT, 0, comm);
    if (hit) /* passed before, unchanged since */
        goto out;
    rc = share_pieces(comm, rank, &m, &got, &n, &block, err);
    if (!rc)
        rc = hash_file(comm, path, got, n, block, err);
    if (!rc && rank == 0) {
        rc = compare(path, &m, got, report, err);
        if (!rc)
            rc = check_datasets(path, &m, err);
    }
    rc = ckpt_agree(comm, rc, err);
    if (rc == 0 && rank == 0 && once)
        verified_add(&id, &t0);
out:
    free(got);
    if (rc == 0 && keep)
        *keep = m;
    else
        ckpt_manifest_free(&m);
    return rc ? -1 : 0;
}

int ckpt_manifest_check(MPI_Comm comm, const char *path, FILE *report,
                        struct ckpt_manifest *keep, char *err)
{
    return check_run(comm, path, report, 0, keep, err);
}

int ckpt_manifest_check_once(MPI_Comm comm, const char *path,
                             struct ckpt_manifest *keep, char *err)
{
    return check_run(comm, path, NULL, 1, keep, err);
}

int ckpt_check_manifest(MPI_Comm comm, const char *path, FILE *report,
                        char *err, size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    int rc = ckpt_manifest_check(comm, path, report, NULL, e);

    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}
