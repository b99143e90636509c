/*
 * ckpt_write.c - ckpt_save: create DIR/step_N.h5.partial and all its
 * datasets collectively, let every rank write its hyperslabs
 * independently (in parallel), hash the data (the datasets' xxh64) and
 * then the rest of the file on every rank, then commit it on rank 0
 * (manifest, rename, fsync dir, `latest`).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_internal.h"

/* Replaces DIR/latest (the file name and a newline) durably. */
static int latest_write(const char *dir, const char *name, char *err)
{
    char dst[CKPT_PATHMAX], line[CKPT_PATHMAX];
    struct ckpt_buf b;

    if (ckpt_fmt(dst, sizeof dst, "%s/latest", dir) ||
        ckpt_fmt(line, sizeof line, "%s\n", name))
        return ckpt_errf(err, "%.200s...: path too long", dir);
    b.p = line;
    b.len = strlen(line);
    return ckpt_replace(dst, &b, 1, err, CKPT_ERRMAX);
}

/* Rank 0's meta on every rank (they must agree on attribute values: HDF5
 * metadata writes are collective).  m->config_text is malloc'ed. */
static int meta_bcast(MPI_Comm comm, const struct ckpt_meta *in,
                      struct ckpt_meta *m, char *err)
{
    int rank, rc = 0;
    long long len = 0;

    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        *m = *in;
        m->layout[sizeof m->layout - 1] = '\0';
        len = in->config_text ? (long long)strlen(in->config_text) : 0;
    }
    MPI_Bcast(m, (int)sizeof *m, MPI_BYTE, 0, comm);
    MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, comm);
    m->config_text = malloc((size_t)len + 1);
    if (!m->config_text)
        rc = ckpt_errf(err, "out of memory for the config text (%lld bytes)",
                       len);
    if (ckpt_agree(comm, rc, err))
        return -1;
    if (rank == 0 && len > 0)
        memcpy(m->config_text, in->config_text, (size_t)len);
    m->config_text[len] = '\0';
    if (len > 0)
        MPI_Bcast(m->config_text, (int)len, MPI_CHAR, 0, comm);
    return 0;
}

static int write_attrs(hid_t fid, const char *path, const struct ckpt_meta *m,
                       char *err)
{
    if (ckpt_attr_write_str(fid, "format", CKPT_FORMAT, path, err) ||
        ckpt_attr_write_i64(fid, "version", CKPT_VERSION, path, err) ||
        ckpt_attr_write_i64(fid, "step", m->step, path, err) ||
        ckpt_attr_write_i64(fid, "tokens_seen", m->tokens_seen, path, err) ||
        ckpt_attr_write_str(fid, "config", m->config_text, path, err) ||
        ckpt_attr_write_str(fid, "layout", m->layout, path, err) ||
        ckpt_attr_write_i64(fid, "data_cursor", m->data_cursor, path, err) ||
        ckpt_attr_write_u64(fid, "rng_seed", m->rng_seed, path, err))
        return -1;
    return 0;
}

/* One save in progress: its names, where its data landed and the
 * hashes of its data pieces. */
struct save {
    MPI_Comm comm;
    int rank;
    const char *dir;
    char name[64];
    char final[CKPT_PATHMAX], partial[CKPT_PATHMAX];
    struct ckpt_extents ext; /* datasets with data; by offset once hashed */
    struct ckpt_piece *piece; /* their pieces, hashed */
    int64_t npiece;
    double need;      /* bytes of tensor data: a lower bound of the size */
    double reserve;   /* bytes reserved before writing: an upper bound */
    int manifest_written, renamed;
};

static double free_bytes(const char *dir);

/* Creates t's dataset (intermediate groups through lcpl; collective)
 * into *dset and notes its byte range, allocated at creation. */
static int create_tensor(hid_t fid, struct save *s,
                         const struct ckpt_tensor *t, hid_t lcpl, hid_t dcpl,
                         hid_t *dset, char *err)
{
    char what[CKPT_ERRMAX];
    hsize_t dims[CKPT_MAX_DIMS], want = sizeof(float);
    hid_t fspace;
    haddr_t addr;
    int rc = -1;

    *dset = -1;
    ckpt_fmt(what, sizeof what, "%s: %s", s->partial, t->name);
    for (int d = 0; d < t->ndim; d++) {
        dims[d] = (hsize_t)t->gshape[d];
        want *= dims[d];
    }
    fspace = H5Screate_simple(t->ndim, dims, NULL);
    if (fspace < 0)
        return ckpt_h5_fail(err, what, "H5Screate_simple");
    *dset = H5Dcreate2(fid, t->name, H5T_IEEE_F32LE, fspace, lcpl, dcpl,
                       H5P_DEFAULT);
    H5Sclose(fspace);
    if (*dset < 0)
        return ckpt_h5_fail(err, what, "H5Dcreate2");
    addr = H5Dget_offset(*dset);
    if (want > 0 && (addr == HADDR_UNDEF ||
                     H5Dget_storage_size(*dset) != want))
        ckpt_errf(err, "%s: no contiguous storage of %llu bytes allocated",
                  what, (unsigned long long)want);
    else if (want == 0 || !ckpt_extents_add(&s->ext, t->name, addr, want, 0,
                                            err))
        rc = 0;
    return rc;
}

/* Writes this rank's hyperslab of t into dset, independently (the
 * dataset is contiguous, unfiltered and allocated: no metadata changes).
 * A rank holding none of t makes no call. */
static int write_tensor(hid_t dset, const char *path,
                        const struct ckpt_tensor *t, char *err)
{
    char what[CKPT_ERRMAX];
    hid_t fspace, mspace = -1;
    int rc;

    if (ckpt_tensor_local_count(t) == 0)
        return 0;
    ckpt_fmt(what, sizeof what, "%s: %s", path, t->name);
    fspace = H5Dget_space(dset);
    if (fspace < 0)
        return ckpt_h5_fail(err, what, "H5Dget_space");
    rc = ckpt_select(fspace, t, &mspace, err);
    if (!rc && H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT,
                        t->data) < 0)
        rc = ckpt_h5_fail(err, what, "H5Dwrite");
    if (mspace >= 0)
        H5Sclose(mspace);
    H5Sclose(fspace);
    return rc;
}

/* Every dataset created first (collective metadata, agreed one by one so
 * that no rank enters a collective the others skip), then every rank
 * writes its hyperslabs with no synchronisation between datasets, so the
 * ranks write in parallel (a collective write per dataset would make the
 * ranks take turns), agreed once at the end.  dset: n ids, closed here. */
static int write_tensors(hid_t fid, struct save *s,
                         const struct ckpt_tensor *t, int n, hid_t lcpl,
                         hid_t dcpl, hid_t *dset, char *err)
{
    int rc = 0, made = 0;

    for (; rc == 0 && made < n; made++)
        rc = ckpt_agree(s->comm, create_tensor(fid, s, &t[made], lcpl, dcpl,
                                               &dset[made], err), err);
    if (rc && dset[made - 1] >= 0)
        H5Dclose(dset[made - 1]);
    if (rc)
        made--;
    ckpt_phase(s->comm, "save: create datasets");
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = write_tensor(dset[i], s->partial, &t[i], err);
        ckpt_fault_point(s->rank, i + 1, n, s->partial);
    }
    for (int i = 0; i < made; i++)
        if (H5Dclose(dset[i]) < 0 && rc == 0)
            rc = ckpt_h5_fail(err, t[i].name, "H5Dclose");
    return ckpt_agree(s->comm, rc, err);
}

/* Every rank, after the data is written and flushed: hash the data
 * pieces of the file and set every extent's checksum (the same on every
 * rank).  Agreed. */
static int hash_data(struct save *s, char *err)
{
    struct stat st;
    int64_t k = 0;
    int rc = 0, fd = open(s->partial, O_RDONLY);

    if (fd < 0 || fstat(fd, &st) != 0)
        rc = ckpt_errf(err, "open(%s): %s", s->partial, strerror(errno));
    if (!rc) /* the data lies inside the file, as flushed */
        rc = ckpt_extents_sort(&s->ext, (uint64_t)st.st_size, s->partial,
                               err);
    if (!rc)
        rc = ckpt_pieces_cut(&s->ext, 0, 0, CKPT_MANIFEST_BLOCK, &s->piece,
                             &s->npiece, err);
    if (ckpt_agree(s->comm, rc, err)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    rc = ckpt_pieces_hash(s->comm, fd, s->partial, s->piece, s->npiece,
                          CKPT_MANIFEST_BLOCK, err);
    close(fd);
    for (size_t i = 0; rc == 0 && i < s->ext.n; i++) {
        struct ckpt_extent *e = &s->ext.e[i];
        int64_t np = (int64_t)((e->len + CKPT_MANIFEST_BLOCK - 1) /
                               CKPT_MANIFEST_BLOCK);
        e->hash = ckpt_checksum_pieces(&s->piece[k], np);
        k += np;
    }
    return rc;
}

/* The xxh64 attribute of dataset name (collective). */
static int write_checksum(hid_t fid, const char *path, const char *name,
                          uint64_t h, char *err)
{
    char what[CKPT_ERRMAX];
    hid_t dset = H5Dopen2(fid, name, H5P_DEFAULT);
    int rc;

    ckpt_fmt(what, sizeof what, "%s: %s", path, name);
    if (dset < 0)
        return ckpt_h5_fail(err, what, "H5Dopen2");
    rc = ckpt_attr_write_u64(dset, "xxh64", h, what, err);
    if (H5Dclose(dset) < 0 && rc == 0)
        rc = ckpt_h5_fail(err, what, "H5Dclose");
    return rc;
}

/* Every dataset's xxh64: from its data pieces, or of nothing.  Agreed
 * dataset by dataset (they are collective). */
static int write_checksums(hid_t fid, struct save *s,
                           const struct ckpt_tensor *t, int n, char *err)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < s->ext.n; i++)
        rc = ckpt_agree(s->comm, write_checksum(fid, s->partial,
                                                s->ext.e[i].name,
                                                s->ext.e[i].hash, err), err);
    for (int i = 0; rc == 0 && i < n; i++) {
        int64_t e = 1;
        for (int d = 0; d < t[i].ndim; d++)
            e *= t[i].gshape[d];
        if (e == 0)
            rc = ckpt_agree(s->comm, write_checksum(fid, s->partial,
                                                    t[i].name,
                                                    ckpt_checksum_pieces(
                                                        NULL, 0), err), err);
    }
    return rc;
}

/* The body of the file on an open fid: attributes, the tensors
 * (write_tensors), a flush, the data hashed and the checksums written, a
 * flush so that everything precedes `complete` on disk, then
 * `complete`. */
static int write_body(struct save *s, hid_t fid, const struct ckpt_meta *m,
                      const struct ckpt_tensor *t, int n, char *err)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = ckpt_dcpl_create(err);
    hid_t *dset = malloc(sizeof *dset * (size_t)(n + 1));
    const char *path = s->partial;
    int rc = 0;

    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        rc = ckpt_h5_fail(err, path, "H5Pset_create_intermediate_group");
    if (dcpl < 0)
        rc = -1;
    if (!dset)
        rc = ckpt_errf(err, "%s: out of memory for %d dataset ids", path, n);
    if (!rc)
        rc = write_attrs(fid, path, m, err);
    rc = ckpt_agree(s->comm, rc, err);
    if (!rc)
        rc = write_tensors(fid, s, t, n, lcpl, dcpl, dset, err);
    ckpt_phase(s->comm, "save: write data");
    if (!rc && H5Fflush(fid, H5F_SCOPE_GLOBAL) < 0)
        rc = ckpt_h5_fail(err, path, "H5Fflush");
    ckpt_phase(s->comm, "save: flush data");
    if (ckpt_agree(s->comm, rc, err) == 0)
        rc = hash_data(s, err);
    ckpt_phase(s->comm, "save: hash data");
    if (!rc)
        rc = write_checksums(fid, s, t, n, err);
    if (!rc)
        rc = ckpt_attr_write_i64(fid, "complete", 1, path, err);
    if (!rc && H5Fflush(fid, H5F_SCOPE_GLOBAL) < 0) /* fail before close */
        rc = ckpt_h5_fail(err, path, "H5Fflush");
    rc = ckpt_agree(s->comm, rc, err);
    ckpt_phase(s->comm, "save: checksums");
    free(dset);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rc;
}

/* Closes fid after a failed write.  HDF5 1.10 frees a file whose close
 * fails but keeps its id, and crashes at exit closing it again; the close
 * flushes metadata, which fails on a full disk.  So rank 0 first empties
 * the .partial (it is deleted anyway): the few metadata writes of the
 * close then find space. */
static void close_failed(struct save *s, hid_t fid, char *err)
{
    if (s->rank == 0 && truncate(s->partial, 0) != 0 && errno != ENOENT)
        fprintf(stderr, "mpitron: truncate(%s): %s\n", s->partial,
                strerror(errno));
    MPI_Barrier(s->comm);
    if (H5Fclose(fid) < 0) {
        size_t len = strlen(err);
        snprintf(err + len, CKPT_ERRMAX - len, "; HDF5 could not close the "
                 "file either (HDF5 1.10 may then crash at exit)");
    }
}

/* Rank 0, on the freshly created .partial: reserve s->reserve bytes of
 * disk without changing the file size, so that the collective writes do
 * not run out of space half-way (Open MPI's MPI-IO does not report such
 * errors consistently on every rank, and HDF5 1.10 cannot then close the
 * file).  Not supported by the file system: nothing is reserved. */
static int reserve_space(struct save *s, char *err)
{
#ifdef FALLOC_FL_KEEP_SIZE
    int fd = open(s->partial, O_WRONLY), rc = 0, e;

    if (fd < 0)
        return ckpt_errf(err, "open(%s): %s", s->partial, strerror(errno));
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)s->reserve) != 0) {
        e = errno;
        if (e == ENOSPC || e == EDQUOT || e == EFBIG)
            rc = ckpt_errf(err, "%s: not enough space: reserving %.0f bytes "
                                "failed: %s (%.0f bytes free)", s->partial,
                           s->reserve, strerror(e), free_bytes(s->dir));
    }
    close(fd);
    return rc;
#else
    (void)s;
    (void)err;
    return 0;
#endif
}

/* Creates, fills and closes the .partial file.  Agreed. */
static int write_file(struct save *s, const struct ckpt_meta *m,
                      const struct ckpt_tensor *t, int n, char *err)
{
    hid_t fapl = ckpt_fapl_mpio(s->comm, err), fid = -1;
    int rc = fapl < 0 ? -1 : 0;

    if (!rc) {
        fid = H5Fcreate(s->partial, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        if (fid < 0)
            rc = ckpt_h5_fail(err, s->partial, "H5Fcreate");
    }
    if (fapl >= 0)
        H5Pclose(fapl);
    /* If H5Fcreate failed on some ranks only, the id stays open where it
     * succeeded: closing it is collective and would hang. */
    if (ckpt_agree(s->comm, rc, err))
        return -1;
    rc = ckpt_agree(s->comm, s->rank == 0 ? reserve_space(s, err) : 0, err);
    if (!rc)
        rc = write_body(s, fid, m, t, n, err);
    if (rc) {
        close_failed(s, fid, err);
        return -1;
    }
    if (H5Fclose(fid) < 0)
        rc = ckpt_h5_fail(err, s->partial, "H5Fclose");
    ckpt_phase(s->comm, "save: close");
    return ckpt_agree(s->comm, rc, err);
}

/* The pieces tiling [0, size) with the data hashes of s->piece; the
 * others (HDF5 metadata) listed in gap (n_gap of them; same length as
 * *all, malloc'ed).  0 or -1 with err. */
static int pieces_merge(struct save *s, uint64_t size, struct ckpt_piece **all,
                        int64_t *n, struct ckpt_piece **gap, int64_t *n_gap,
                        char *err)
{
    int64_t j = 0;

    *gap = NULL;
    *n_gap = 0;
    if (ckpt_extents_sort(&s->ext, size, s->partial, err) ||
        ckpt_pieces_cut(&s->ext, size, 1, CKPT_MANIFEST_BLOCK, all, n, err))
        return -1;
    *gap = malloc(sizeof **gap * (size_t)(*n + 1));
    if (!*gap)
        return ckpt_errf(err, "%s: out of memory for the pieces", s->partial);
    for (int64_t i = 0; i < *n; i++) {
        struct ckpt_piece *p = &(*all)[i];
        if (j < s->npiece && s->piece[j].off == p->off) /* cut alike */
            p->hash = s->piece[j++].hash;
        else
            (*gap)[(*n_gap)++] = *p;
    }
    return 0;
}

/* Every rank: fsync the closed .partial (on a parallel file system each
 * client flushes its own writes) and hash its share of the pieces not yet
 * hashed; rank 0 first gives back the reserved space past the end of the
 * file.  Returns the size and every piece in *all (malloc'ed, caller
 * frees).  Agreed. */
static int hash_rest(struct save *s, uint64_t *size, struct ckpt_piece **all,
                     int64_t *n, char *err)
{
    struct ckpt_piece *gap = NULL;
    int64_t n_gap = 0, j = 0;
    struct stat st;
    int rc = 0, fd = open(s->partial, O_RDONLY);

    *all = NULL;
    if (fd >= 0 && s->rank == 0 && fstat(fd, &st) == 0)
        (void)!truncate(s->partial, st.st_size);
    if (fd < 0)
        rc = ckpt_errf(err, "open(%s): %s", s->partial, strerror(errno));
    else if (fsync(fd) != 0 || fstat(fd, &st) != 0)
        rc = ckpt_errf(err, "fsync(%s): %s", s->partial, strerror(errno));
    *size = rc ? 0 : (uint64_t)st.st_size;
    ckpt_phase(s->comm, "save: fsync");
    if (ckpt_agree(s->comm, rc, err))
        goto out;
    MPI_Bcast(size, 1, MPI_UINT64_T, 0, s->comm);
    rc = ckpt_agree(s->comm, pieces_merge(s, *size, all, n, &gap, &n_gap,
                                          err), err);
    if (!rc)
        rc = ckpt_pieces_hash(s->comm, fd, s->partial, gap, n_gap,
                              CKPT_MANIFEST_BLOCK, err);
    for (int64_t i = 0; rc == 0 && i < *n; i++)
        if (j < n_gap && gap[j].off == (*all)[i].off)
            (*all)[i].hash = gap[j++].hash;
    ckpt_phase(s->comm, "save: hash metadata");
out:
    if (fd >= 0)
        close(fd);
    free(gap);
    if (rc) {
        free(*all);
        *all = NULL;
    }
    return rc ? -1 : 0;
}

/* Rank 0, once the data is durable: the manifest, the rename, the
 * directory, `latest`. */
static int commit(struct save *s, uint64_t size, const struct ckpt_piece *p,
                  int64_t n, char *err)
{
    char *text = ckpt_manifest_text(s->name, size, CKPT_MANIFEST_BLOCK, p, n,
                                    &s->ext);
    int rc;

    if (!text)
        return ckpt_errf(err, "%s: out of memory for the manifest", s->final);
    rc = ckpt_manifest_write(s->final, text, err);
    free(text);
    if (rc)
        return -1;
    s->manifest_written = 1;
    if (rename(s->partial, s->final) != 0)
        return ckpt_errf(err, "rename(%s, %s): %s", s->partial, s->final,
                         strerror(errno));
    s->renamed = 1;
    if (ckpt_fsync_path(s->dir, O_RDONLY, err))
        return -1;
    if (latest_write(s->dir, s->name, err)) {
        char m[CKPT_ERRMAX];
        ckpt_fmt(m, sizeof m, "%.300s is complete but `latest` was not "
                              "updated: %.600s", s->final, err);
        memcpy(err, m, sizeof m);
        return -1;
    }
    return 0;
}

/* File names for step: DIR/step_%08lld.h5 and its .partial. */
static int save_names(struct save *s, int64_t step, char *err)
{
    int a, b;

    if (step < 0)
        return ckpt_errf(err, "%s: negative step %lld", s->dir,
                         (long long)step);
    snprintf(s->name, sizeof s->name, "step_%08lld.h5", (long long)step);
    a = snprintf(s->final, CKPT_PATHMAX, "%s/%s", s->dir, s->name);
    b = snprintf(s->partial, CKPT_PATHMAX, "%s/%s.partial", s->dir, s->name);
    if (a < 0 || b < 0 || a >= CKPT_PATHMAX - 16 || b >= CKPT_PATHMAX - 16)
        return ckpt_errf(err, "%.200s...: checkpoint path too long", s->dir);
    return 0;
}

/* Bytes of tensor data in t (a lower bound of the file size) into
 * s->need, and a generous upper bound into s->reserve: the data,
 * metadata (object header, attribute, links) per dataset and for the
 * file. */
static void size_bounds(struct save *s, const struct ckpt_tensor *t, int n)
{
    s->need = 0;
    for (int i = 0; i < n; i++) {
        double e = sizeof(float);
        for (int d = 0; d < t[i].ndim; d++)
            e *= (double)t[i].gshape[d];
        s->need += e;
    }
    s->reserve = s->need + 8192.0 * n + 65536;
}

/* Free bytes in dir, or -1. */
static double free_bytes(const char *dir)
{
    struct statvfs v;

    if (statvfs(dir, &v) != 0)
        return -1;
    return (double)v.f_bavail * (double)v.f_frsize;
}

/* Rank 0 before the file is created: a stale .partial of this step goes,
 * and a file system without room for the data fails the save cleanly
 * (a write failing half-way is handled, but is best not reached). */
static int space_check(struct save *s, char *err)
{
    double avail;

    unlink(s->partial);
    avail = free_bytes(s->dir);
    if (avail >= 0 && avail < s->need)
        return ckpt_errf(err, "%s: not enough space: the file system of %s "
                              "has %.0f bytes free, this checkpoint needs at "
                              "least %.0f", s->final, s->dir, avail, s->need);
    return 0;
}

/* Every rank (each writes): a file-size limit (ulimit -f) below the
 * file's upper bound would fail the writes half-way. */
static int fsize_check(struct save *s, char *err)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (double)rl.rlim_cur < s->reserve)
        return ckpt_errf(err, "%s: the file-size limit of this process "
                              "(ulimit -f) is %llu bytes, this checkpoint "
                              "needs up to %.0f", s->final,
                         (unsigned long long)rl.rlim_cur, s->reserve);
    return 0;
}

/* Rank 0 after a failed save: say so when the file system is full
 * (before the removal frees space), then remove what the save left. */
static void save_cleanup(struct save *s, char *err)
{
    char mp[CKPT_PATHMAX];
    double avail = free_bytes(s->dir);
    size_t len = strlen(err);

    if (avail >= 0 && avail < s->reserve && !strstr(err, "not enough space"))
        snprintf(err + len, CKPT_ERRMAX - len, " (the file system of %s has "
                 "%.0f bytes free; this checkpoint needs about %.0f)", s->dir,
                 avail, s->need);
    if (s->renamed)
        return; /* a complete checkpoint: only `latest` failed */
    unlink(s->partial); /* may not exist */
    if (s->manifest_written && !ckpt_fmt(mp, sizeof mp, "%s.manifest",
                                         s->final))
        unlink(mp);
}

/* The collective part of a save once names and meta are agreed. */
static int save_run(struct save *s, const struct ckpt_meta *m,
                    const struct ckpt_tensor *t, int n, char *err)
{
    struct ckpt_piece *all = NULL;
    uint64_t size = 0;
    int64_t np = 0;
    int rc = 0;

    ckpt_phase(s->comm, NULL);
    size_bounds(s, t, n);
    rc = fsize_check(s, err);
    if (!rc && s->rank == 0 && (rc = ckpt_mkdir_p(s->dir, err, CKPT_ERRMAX)) == 0)
        rc = space_check(s, err);
    if (ckpt_agree(s->comm, rc, err))
        return -1;
    rc = write_file(s, m, t, n, err);
    if (!rc)
        rc = hash_rest(s, &size, &all, &np, err);
    if (!rc && s->rank == 0)
        rc = commit(s, size, all, np, err);
    free(all);
    ckpt_phase(s->comm, "save: commit");
    if (ckpt_agree(s->comm, rc, err) == 0)
        return 0;
    if (s->rank == 0)
        save_cleanup(s, err);
    MPI_Bcast(err, CKPT_ERRMAX, MPI_CHAR, 0, s->comm);
    return -1;
}

int ckpt_save(MPI_Comm comm, const char *dir, const struct ckpt_meta *meta,
              const struct ckpt_tensor *t, int n, char *path_out,
              size_t pathlen, char *err, size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    struct save s;
    struct ckpt_meta m = {0};
    struct ckpt_h5_quiet q;
    int rc;

    memset(&s, 0, sizeof s);
    s.comm = comm;
    s.dir = dir;
    MPI_Comm_rank(comm, &s.rank);
    ckpt_h5_quiet_begin(&q);
    rc = ckpt_tensors_check(comm, t, n, e);
    if (!rc)
        rc = ckpt_tensors_finite(comm, t, n, e);
    if (!rc)
        rc = meta_bcast(comm, meta, &m, e);
    if (!rc)
        rc = ckpt_agree(comm, save_names(&s, m.step, e), e);
    if (!rc)
        rc = save_run(&s, &m, t, n, e);
    free(m.config_text);
    ckpt_extents_free(&s.ext);
    free(s.piece);
    ckpt_h5_quiet_end(&q);
    if (!rc && path_out && pathlen > 0)
        snprintf(path_out, pathlen, "%s", s.final);
    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}

void ckpt_fault_point(int rank, int done, int n, const char *path)
{
    const char *f = getenv("MPITRON_CKPT_FAULT"), *p;
    long ms = 0, at = n / 2 > 0 ? n / 2 : 1;
    struct timespec ts;

    if (!f || !(p = strstr(f, "stall_ms=")))
        return;
    ms = strtol(p + 9, NULL, 10);
    if ((p = strstr(f, "at=")) != NULL)
        at = strtol(p + 3, NULL, 10);
    if (ms <= 0 || done != (at < 1 ? 1 : at > n ? n : at))
        return;
    if (rank == 0) {
        fprintf(stderr, "mpitron: MPITRON_CKPT_FAULT: stalling %ld ms after "
                        "%d of %d datasets of %s\n", ms, done, n, path);
        fflush(stderr);
    }
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}
