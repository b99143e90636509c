/*
 * ckpt_read.c - ckpt_read_meta and ckpt_read_tensors: check the manifest,
 * open a checkpoint collectively, check what it is, check every tensor
 * (shape, type, and its xxh64 and byte range against the manifest), then
 * read.
 *
 * Every check ends in ckpt_agree(), so all ranks fail together and no rank
 * waits in a collective the others have left.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_internal.h"

int ckpt_open_checked(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                      hid_t *fid, struct ckpt_manifest *keep, char *err)
{
    int rc;

    *fid = -1;
    ckpt_phase(comm, NULL);
    rc = ckpt_manifest_check_once(comm, path, keep, err);
    ckpt_phase(comm, "read: manifest check");
    if (!rc)
        rc = ckpt_open_h5(comm, path, meta, fid, err);
    ckpt_phase(comm, "read: open");
    if (rc && keep)
        ckpt_manifest_free(keep);
    return rc;
}

int ckpt_open_h5(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                 hid_t *fid, char *err)
{
    int rank, rc;
    hid_t fapl;

    *fid = -1;
    MPI_Comm_rank(comm, &rank);
    /* rank 0, once the manifest check passed: HDF5's first parse of the
     * file runs in a child process (a forged manifest gets this far) */
    if (ckpt_agree(comm, rank == 0 ? ckpt_probe(path, err) : 0, err))
        return -1;
    fapl = ckpt_fapl_mpio(comm, err);
    rc = fapl < 0 ? -1 : 0;
    if (!rc) {
        *fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        if (*fid < 0)
            rc = ckpt_h5_fail(err, path, "H5Fopen");
    }
    if (fapl >= 0)
        H5Pclose(fapl);
    if (ckpt_agree(comm, rc, err))
        return -1; /* see write_file: a partly opened id cannot be closed */
    rc = ckpt_agree(comm, ckpt_root_check(*fid, path, meta, err), err);
    if (rc) {
        if (meta) {
            free(meta->config_text);
            meta->config_text = NULL;
        }
        H5Fclose(*fid);
        *fid = -1;
    }
    return rc;
}

int ckpt_read_meta(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                   char *err, size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    struct ckpt_h5_quiet q;
    hid_t fid;
    int rc;

    ckpt_h5_quiet_begin(&q);
    meta->config_text = NULL;
    rc = ckpt_open_checked(comm, path, meta, &fid, NULL, e);
    if (!rc && H5Fclose(fid) < 0)
        rc = ckpt_h5_fail(e, path, "H5Fclose");
    rc = ckpt_agree(comm, rc, e);
    if (rc) {
        free(meta->config_text);
        meta->config_text = NULL;
        ckpt_err_out(err, errlen, e);
    }
    ckpt_h5_quiet_end(&q);
    return rc;
}

/* Does every group on the way to name exist?  H5Lexists fails rather than
 * answering "no" when an intermediate group is missing. */
static int path_exists(hid_t fid, const char *name)
{
    char p[CKPT_PATHMAX];
    size_t len = strlen(name);

    if (len >= sizeof p)
        return 0;
    memcpy(p, name, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        p[i] = '\0';
        if (H5Lexists(fid, p, H5P_DEFAULT) <= 0)
            return 0;
        p[i] = i < len ? '/' : '\0';
    }
    return 1;
}

/* Opens t's dataset and checks rank, global shape and type against t,
 * then its checksum and byte range against the manifest m. */
static int check_tensor(hid_t fid, const char *path,
                        const struct ckpt_tensor *t,
                        const struct ckpt_manifest *m, hid_t *dset, char *err)
{
    char what[CKPT_ERRMAX], fs[160], ms[160];
    hsize_t dims[CKPT_MAX_DIMS] = {0};
    hid_t space, type;
    int nd, same;
    H5T_class_t cls;
    size_t size;

    ckpt_fmt(what, sizeof what, "%s: %s", path, t->name);
    if (!path_exists(fid, t->name))
        return ckpt_errf(err, "%s: dataset %s not found", path, t->name);
    *dset = H5Dopen2(fid, t->name, H5P_DEFAULT);
    if (*dset < 0)
        return ckpt_h5_fail(err, what, "H5Dopen2 (is it a dataset?)");
    space = H5Dget_space(*dset);
    nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (nd > CKPT_MAX_DIMS || nd < 0 ||
        H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        nd = -1;
    if (space >= 0)
        H5Sclose(space);
    same = nd == t->ndim;
    for (int d = 0; same && d < nd; d++)
        same = dims[d] == (hsize_t)t->gshape[d];
    if (!same) {
        if (nd < 0)
            ckpt_fmt(fs, sizeof fs, "(rank > %d)", CKPT_MAX_DIMS);
        else
            ckpt_hshape_str(fs, sizeof fs, nd, dims);
        ckpt_shape_str(ms, sizeof ms, t->ndim, t->gshape);
        return ckpt_errf(err, "%s: shape in file %s differs from the model's "
                              "%s", what, fs, ms);
    }
    type = H5Dget_type(*dset);
    cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    size = type >= 0 ? H5Tget_size(type) : 0;
    if (type >= 0)
        H5Tclose(type);
    if (cls != H5T_FLOAT || size != 4)
        return ckpt_errf(err, "%s: type in file is %s of %zu bytes, expected "
                              "float32", what,
                         cls == H5T_FLOAT ? "float" :
                         cls == H5T_INTEGER ? "integer" : "non-numeric", size);
    return ckpt_dataset_check(*dset, path, t->name, m, err);
}

static int read_tensor(hid_t dset, const char *path,
                       const struct ckpt_tensor *t, hid_t dxpl, char *err)
{
    static float dummy;
    char what[CKPT_ERRMAX];
    hid_t fspace = H5Dget_space(dset), mspace = -1;
    int rc = 0;

    ckpt_fmt(what, sizeof what, "%s: %s", path, t->name);
    if (fspace < 0)
        return ckpt_h5_fail(err, what, "H5Dget_space");
    if (H5Sget_simple_extent_npoints(fspace) == 0) { /* nothing stored */
        H5Sclose(fspace);
        return 0;
    }
    rc = ckpt_select(fspace, t, &mspace, err);
    if (!rc && H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl,
                       t->data ? t->data : &dummy) < 0)
        rc = ckpt_h5_fail(err, what, "H5Dread");
    if (mspace >= 0)
        H5Sclose(mspace);
    H5Sclose(fspace);
    return rc;
}

/* A dataset's shape and type must account for its storage byte for byte
 * (contiguous, allocated at creation: ckpt.h): otherwise a reader would
 * trust a dataspace that claims more (or fewer) elements than the bytes
 * the checksum covers. */
static int shape_matches_storage(hid_t dset, hsize_t len, const char *what,
                                 char *err)
{
    hid_t sp = H5Dget_space(dset), ty = H5Dget_type(dset);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    size_t ts = ty >= 0 ? H5Tget_size(ty) : 0;
    int rc = 0;

    if (np < 0 || ts == 0)
        rc = ckpt_h5_fail(err, what, "H5Dget_space/H5Dget_type");
    else if ((uint64_t)np > UINT64_MAX / ts || (uint64_t)np * ts != len)
        rc = ckpt_errf(err, "%s: its shape holds %lld elements of %zu bytes "
                            "but its storage is %llu bytes", what,
                       (long long)np, ts, (unsigned long long)len);
    if (sp >= 0)
        H5Sclose(sp);
    if (ty >= 0)
        H5Tclose(ty);
    return rc;
}

int ckpt_dataset_check(hid_t dset, const char *path, const char *name,
                       const struct ckpt_manifest *m, char *err)
{
    char what[CKPT_ERRMAX];
    const struct ckpt_extent *e = m ? ckpt_manifest_find(m, name) : NULL;
    haddr_t addr = H5Dget_offset(dset);
    hsize_t len = H5Dget_storage_size(dset);
    uint64_t h = 0;
    int rc;

    ckpt_fmt(what, sizeof what, "%s: %s", path, name);
    rc = ckpt_attr_read_u64(dset, "xxh64", &h, what, err);
    if (rc == 1)
        return ckpt_errf(err, "%s: no checksum (no xxh64 attribute)", what);
    if (!rc)
        rc = shape_matches_storage(dset, len, what, err);
    if (rc || !m)
        return rc;
    if (len > 0 && (addr == HADDR_UNDEF || !e || e->off != addr ||
                    e->len != len))
        return ckpt_errf(err, "%s: checksum not verifiable: its data (%llu "
                              "bytes, contiguous: %s) is not the range the "
                              "manifest names", what, (unsigned long long)len,
                         addr == HADDR_UNDEF ? "no" : "yes");
    if (len == 0 && e)
        return ckpt_errf(err, "%s: holds no data but the manifest names "
                              "data for it", what);
    if (h != (e ? e->hash : ckpt_checksum_pieces(NULL, 0)))
        return ckpt_errf(err, "%s: checksum mismatch: its data hashes to "
                              "%016" PRIx64 " (as checked against the file), "
                              "its xxh64 attribute says %016" PRIx64, what,
                         e ? e->hash : ckpt_checksum_pieces(NULL, 0), h);
    return 0;
}

/* Check all, agree, then read all (agreed tensor by tensor). */
static int read_all(MPI_Comm comm, hid_t fid, const char *path,
                    const struct ckpt_tensor *t, int n,
                    const struct ckpt_manifest *m, hid_t *dsets, char *err)
{
    int rank, rc = 0;
    hid_t dxpl;

    MPI_Comm_rank(comm, &rank);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = check_tensor(fid, path, &t[i], rank == 0 ? m : NULL, &dsets[i],
                          err);
    ckpt_phase(comm, "read: check datasets");
    if (ckpt_agree(comm, rc, err))
        return -1;
    dxpl = ckpt_dxpl_collective(err);
    if (ckpt_agree(comm, dxpl < 0 ? -1 : 0, err)) {
        if (dxpl >= 0)
            H5Pclose(dxpl);
        return -1;
    }
    for (int i = 0; rc == 0 && i < n; i++)
        rc = ckpt_agree(comm, read_tensor(dsets[i], path, &t[i], dxpl, err),
                        err);
    H5Pclose(dxpl);
    ckpt_phase(comm, "read: data");
    return rc;
}

int ckpt_read_fid(MPI_Comm comm, hid_t fid, const char *path,
                  const struct ckpt_tensor *t, int n,
                  const struct ckpt_manifest *m, char *err)
{
    hid_t *dsets = malloc(sizeof *dsets * (size_t)(n > 0 ? n : 1));
    int rc;

    if (ckpt_agree(comm, dsets ? 0 : ckpt_errf(err, "out of memory"), err)) {
        free(dsets);
        return -1;
    }
    for (int i = 0; i < n; i++)
        dsets[i] = -1;
    rc = read_all(comm, fid, path, t, n, m, dsets, err);
    for (int i = 0; i < n; i++)
        if (dsets[i] >= 0)
            H5Dclose(dsets[i]);
    free(dsets);
    return rc;
}

int ckpt_read_tensors(MPI_Comm comm, const char *path,
                      const struct ckpt_tensor *t, int n, char *err,
                      size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    struct ckpt_manifest m;
    struct ckpt_h5_quiet q;
    hid_t fid = -1;
    int rc;

    memset(&m, 0, sizeof m);
    ckpt_h5_quiet_begin(&q);
    rc = ckpt_tensors_check(comm, t, n, e);
    if (!rc)
        rc = ckpt_open_checked(comm, path, NULL, &fid, &m, e);
    if (!rc) {
        rc = ckpt_read_fid(comm, fid, path, t, n, &m, e);
        if (H5Fclose(fid) < 0 && rc == 0)
            rc = ckpt_h5_fail(e, path, "H5Fclose");
        rc = ckpt_agree(comm, rc, e);
    }
    ckpt_manifest_free(&m);
    if (rc)
        ckpt_err_out(err, errlen, e);
    ckpt_h5_quiet_end(&q);
    return rc;
}
