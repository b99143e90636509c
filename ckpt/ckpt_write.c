/*
 * ckpt_write.c - ckpt_save: write DIR/step_N.h5.partial collectively, then
 * commit it on rank 0 (fsync, rename, fsync dir, replace `latest`).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "ckpt_internal.h"

/* mkdir -p; returns 0 or -1 with err naming dir and the component that
 * failed. */
static int mkdir_p(const char *dir, char *err)
{
    char p[CKPT_PATHMAX];
    struct stat st;
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof p)
        return ckpt_errf(err, "checkpoint directory '%.200s': bad length",
                         dir);
    memcpy(p, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        const char *why = NULL;
        if (p[i] != '/' && p[i] != '\0')
            continue;
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            why = strerror(errno);
        else if (stat(p, &st) != 0)
            why = strerror(errno);
        else if (!S_ISDIR(st.st_mode))
            why = "exists and is not a directory";
        if (why)
            return ckpt_errf(err, "cannot create checkpoint directory "
                                  "%.400s: %.400s: %s", dir, p, why);
        p[i] = i < len ? '/' : '\0';
    }
    return 0;
}

/* open(path, flags), fsync, close.  Directories take O_RDONLY. */
static int fsync_path(const char *path, int flags, char *err)
{
    int fd = open(path, flags);

    if (fd < 0)
        return ckpt_errf(err, "open(%s) for fsync: %s", path, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return ckpt_errf(err, "fsync(%s): %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return ckpt_errf(err, "close(%s): %s", path, strerror(errno));
    return 0;
}

/* Writes DIR/latest.tmp (name + newline), fsyncs, renames to DIR/latest. */
static int latest_write(const char *dir, const char *name, char *err)
{
    char tmp[CKPT_PATHMAX], dst[CKPT_PATHMAX];
    size_t len = strlen(name);
    int fd;

    ckpt_fmt(tmp, sizeof tmp, "%s/latest.tmp", dir);
    ckpt_fmt(dst, sizeof dst, "%s/latest", dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0)
        return ckpt_errf(err, "open(%s): %s", tmp, strerror(errno));
    if (write(fd, name, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        ckpt_errf(err, "write(%s): %s", tmp, strerror(errno));
        goto fail_close;
    }
    if (fsync(fd) != 0) {
        ckpt_errf(err, "fsync(%s): %s", tmp, strerror(errno));
        goto fail_close;
    }
    if (close(fd) != 0) {
        ckpt_errf(err, "close(%s): %s", tmp, strerror(errno));
        goto fail_unlink;
    }
    if (rename(tmp, dst) != 0) {
        ckpt_errf(err, "rename(%s, %s): %s", tmp, dst, strerror(errno));
        goto fail_unlink;
    }
    return fsync_path(dir, O_RDONLY, err);
fail_close:
    close(fd);
fail_unlink:
    unlink(tmp);
    return -1;
}

/* Rank 0 after every rank closed the file: make it durable and name it. */
static int commit(const char *dir, const char *partial, const char *final,
                  const char *name, char *err)
{
    if (fsync_path(partial, O_RDONLY, err))
        return -1;
    if (rename(partial, final) != 0)
        return ckpt_errf(err, "rename(%s, %s): %s", partial, final,
                         strerror(errno));
    if (fsync_path(dir, O_RDONLY, err))
        return -1;
    if (latest_write(dir, name, err)) {
        char m[CKPT_ERRMAX];
        ckpt_fmt(m, sizeof m, "%.300s is complete but `latest` was not "
                              "updated: %.600s", final, err);
        memcpy(err, m, sizeof m);
        return -1;
    }
    return 0;
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

/* Creates t's dataset (intermediate groups through lcpl) and writes this
 * rank's hyperslab collectively. */
static int write_tensor(hid_t fid, const char *path, const struct ckpt_tensor *t,
                        hid_t lcpl, hid_t dxpl, char *err)
{
    static float dummy;
    char what[CKPT_ERRMAX];
    hsize_t dims[CKPT_MAX_DIMS];
    hid_t fspace, dcpl = -1, dset = -1, mspace = -1;
    int rc = -1;

    ckpt_fmt(what, sizeof what, "%s: %s", path, t->name);
    for (int d = 0; d < t->ndim; d++)
        dims[d] = (hsize_t)t->gshape[d];
    fspace = H5Screate_simple(t->ndim, dims, NULL);
    if (fspace < 0)
        return ckpt_h5_fail(err, what, "H5Screate_simple");
    dcpl = ckpt_dcpl_create(t->ndim, dims, err);
    if (dcpl < 0)
        goto out;
    dset = H5Dcreate2(fid, t->name, H5T_IEEE_F32LE, fspace, lcpl, dcpl,
                      H5P_DEFAULT);
    if (dset < 0) {
        ckpt_h5_fail(err, what, "H5Dcreate2");
        goto out;
    }
    if (ckpt_select(fspace, t, &mspace, err))
        goto out;
    if (H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl,
                 t->data ? t->data : &dummy) < 0) {
        ckpt_h5_fail(err, what, "H5Dwrite");
        goto out;
    }
    rc = 0;
out:
    if (mspace >= 0)
        H5Sclose(mspace);
    if (dset >= 0 && H5Dclose(dset) < 0 && rc == 0)
        rc = ckpt_h5_fail(err, what, "H5Dclose");
    if (dcpl >= 0)
        H5Pclose(dcpl);
    H5Sclose(fspace);
    return rc;
}

/* The body of the file on an open fid: attributes, tensors (agreed one by
 * one so that no rank enters a collective the others skip), a flush so
 * that everything precedes `complete` on disk, then `complete`. */
static int write_body(MPI_Comm comm, hid_t fid, const char *path,
                      const struct ckpt_meta *m, const struct ckpt_tensor *t,
                      int n, char *err)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dxpl = ckpt_dxpl_collective(err);
    int rc = 0;

    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        rc = ckpt_h5_fail(err, path, "H5Pset_create_intermediate_group");
    if (dxpl < 0)
        rc = -1;
    if (!rc)
        rc = write_attrs(fid, path, m, err);
    rc = ckpt_agree(comm, rc, err);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = ckpt_agree(comm, write_tensor(fid, path, &t[i], lcpl, dxpl, err),
                        err);
    if (!rc && H5Fflush(fid, H5F_SCOPE_GLOBAL) < 0)
        rc = ckpt_h5_fail(err, path, "H5Fflush");
    if (!rc)
        rc = ckpt_attr_write_i64(fid, "complete", 1, path, err);
    rc = ckpt_agree(comm, rc, err);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (dxpl >= 0)
        H5Pclose(dxpl);
    return rc;
}

/* Creates, fills and closes the .partial file.  Agreed. */
static int write_file(MPI_Comm comm, const char *path,
                      const struct ckpt_meta *m, const struct ckpt_tensor *t,
                      int n, char *err)
{
    hid_t fapl = ckpt_fapl_mpio(comm, err), fid = -1;
    int rc = fapl < 0 ? -1 : 0;

    if (!rc) {
        fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        if (fid < 0)
            rc = ckpt_h5_fail(err, path, "H5Fcreate");
    }
    if (fapl >= 0)
        H5Pclose(fapl);
    /* If H5Fcreate failed on some ranks only, the id stays open where it
     * succeeded: closing it is collective and would hang. */
    if (ckpt_agree(comm, rc, err))
        return -1;
    rc = write_body(comm, fid, path, m, t, n, err);
    if (H5Fclose(fid) < 0 && rc == 0)
        rc = ckpt_h5_fail(err, path, "H5Fclose");
    return ckpt_agree(comm, rc, err);
}

/* File names for step: DIR/step_%08lld.h5 and its .partial. */
static int save_names(const char *dir, int64_t step, char *name,
                      char *final, char *partial, char *err)
{
    int a, b;

    if (step < 0)
        return ckpt_errf(err, "%s: negative step %lld", dir, (long long)step);
    snprintf(name, 64, "step_%08lld.h5", (long long)step);
    a = snprintf(final, CKPT_PATHMAX, "%s/%s", dir, name);
    b = snprintf(partial, CKPT_PATHMAX, "%s/%s.partial", dir, name);
    if (a < 0 || b < 0 || a >= CKPT_PATHMAX || b >= CKPT_PATHMAX)
        return ckpt_errf(err, "%.200s...: checkpoint path too long", dir);
    return 0;
}

int ckpt_save(MPI_Comm comm, const char *dir, const struct ckpt_meta *meta,
              const struct ckpt_tensor *t, int n, char *path_out,
              size_t pathlen, char *err, size_t errlen)
{
    char e[CKPT_ERRMAX] = "", name[64];
    char final[CKPT_PATHMAX], partial[CKPT_PATHMAX];
    struct ckpt_meta m = {0};
    struct ckpt_h5_quiet q;
    int rank, rc;

    MPI_Comm_rank(comm, &rank);
    ckpt_h5_quiet_begin(&q);
    rc = ckpt_tensors_check(comm, t, n, e);
    if (!rc)
        rc = meta_bcast(comm, meta, &m, e);
    if (!rc)
        rc = ckpt_agree(comm, save_names(dir, m.step, name, final, partial, e),
                        e);
    if (!rc)
        rc = ckpt_agree(comm, rank == 0 ? mkdir_p(dir, e) : 0, e);
    if (!rc) {
        rc = write_file(comm, partial, &m, t, n, e);
        if (!rc && rank == 0)
            rc = commit(dir, partial, final, name, e);
        rc = ckpt_agree(comm, rc, e);
        if (rc && rank == 0)
            unlink(partial); /* may not exist; latest is untouched */
    }
    free(m.config_text);
    ckpt_h5_quiet_end(&q);
    if (!rc && path_out && pathlen > 0)
        snprintf(path_out, pathlen, "%s", final);
    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}
