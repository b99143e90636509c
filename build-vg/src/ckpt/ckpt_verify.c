/*
 * ckpt_verify.c - `mpitron ckpt verify` (manifest, root attributes, then
 * every dataset: its checksum and byte range against the manifest, and
 * read in full through HDF5) and `mpitron ckpt list` (the status of every
 * file of a ckpt directory from its manifest).
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

/* Names of the datasets of a file, in visiting order. */
struct names {
    char **v;
    int n, cap;
};

static herr_t names_visit(hid_t root, const char *name, const H5L_info_t *li,
                          void *arg)
{
    struct names *x = arg;
    H5O_info_t oi;

    if (li->type != H5L_TYPE_HARD ||
        H5Oget_info_by_name(root, name, &oi, H5P_DEFAULT) < 0 ||
        oi.type != H5O_TYPE_DATASET)
        return 0;
    if (x->n == x->cap) {
        int cap = x->cap ? 2 * x->cap : 64;
        char **v = realloc(x->v, sizeof *v * (size_t)cap);
        if (!v)
            return -1;
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n] = malloc(strlen(name) + 2);
    if (!x->v[x->n])
        return -1;
    sprintf(x->v[x->n++], "/%s", name);
    return 0;
}

static void names_free(struct names *x)
{
    for (int i = 0; i < x->n; i++)
        free(x->v[i]);
    free(x->v);
}

/* Rows (of the first dimension) per read block: about one manifest
 * block of data, at least one row. */
static hsize_t block_rows(int nd, const hsize_t *dims)
{
    hsize_t row = 1, fit = CKPT_MANIFEST_BLOCK / sizeof(float);

    for (int d = 1; d < nd; d++)
        row *= dims[d];
    return row > 0 && row < fit ? fit / row : 1;
}

/* Reads dataset dset in blocks of rows, block b by rank b % size; every
 * rank makes the same number of collective H5Dread calls. */
static int read_rows(MPI_Comm comm, hid_t dset, int nd, const hsize_t *dims,
                     hsize_t rows, hid_t dxpl, const char *what, char *err)
{
    hsize_t start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK], row = 1, nblk;
    hid_t fspace = H5Dget_space(dset), mspace;
    float *buf;
    int rank, size, rc = 0;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    for (int d = 1; d < nd; d++)
        row *= dims[d];
    nblk = nd > 0 ? (dims[0] + rows - 1) / rows : 1;
    if (nd > 0 && dims[0] * row == 0)
        nblk = 0; /* no element, no storage: nothing to read */
    buf = malloc(sizeof(float) * (size_t)(rows * row > 0 ? rows * row : 1));
    if (!buf || fspace < 0) {
        free(buf);
        return ckpt_errf(err, "%s: out of memory", what);
    }
    for (hsize_t it = 0; it < (nblk + (hsize_t)size - 1) / (hsize_t)size;
         it++) {
        hsize_t b = it * (hsize_t)size + (hsize_t)rank, n = 1;
        for (int d = 0; d < nd; d++)
            count[d] = dims[d];
        if (nd > 0 && b < nblk) {
            start[0] = b * rows;
            count[0] = dims[0] - start[0] < rows ? dims[0] - start[0] : rows;
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count,
                                NULL);
        } else if (nd > 0 || rank != 0) {
            H5Sselect_none(fspace);
            count[0] = 0;
        } else {
            H5Sselect_all(fspace);
        }
        for (int d = 0; d < nd; d++)
            n *= count[d];
        /* the block's own shape: see ckpt_select */
        mspace = n > 0 && nd > 0 ? H5Screate_simple(nd, count, NULL)
                                 : H5Screate_simple(1, &(hsize_t){1}, NULL);
        if (n == 0)
            H5Sselect_none(mspace);
        if (H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, buf) < 0 &&
            rc == 0)
            rc = ckpt_h5_fail(err, what, "H5Dread");
        H5Sclose(mspace);
    }
    free(buf);
    H5Sclose(fspace);
    return rc;
}

/* One dataset: agreed status; rank 0 prints its line.  m: the checked
 * manifest (rank 0; NULL elsewhere). */
static int verify_dataset(MPI_Comm comm, hid_t fid, const char *path,
                          const char *name, const struct ckpt_manifest *m,
                          hid_t dxpl, FILE *out, char *err)
{
    char what[CKPT_ERRMAX], shape[160] = "?";
    hsize_t dims[H5S_MAX_RANK], rows;
    hid_t dset = H5Dopen2(fid, name, H5P_DEFAULT), space, type;
    int nd = -1, rank, rc = 0;

    MPI_Comm_rank(comm, &rank);
    ckpt_fmt(what, sizeof what, "%s: %s", path, name);
    if (dset < 0)
        return ckpt_agree(comm, ckpt_h5_fail(err, what, "H5Dopen2"), err);
    space = H5Dget_space(dset);
    type = H5Dget_type(dset);
    if (space >= 0)
        nd = H5Sget_simple_extent_dims(space, dims, NULL);
    if (nd >= 0)
        ckpt_hshape_str(shape, sizeof shape, nd, dims);
    if (nd < 0 || type < 0)
        rc = ckpt_h5_fail(err, what, "H5Dget_space");
    else if (H5Tget_class(type) != H5T_FLOAT)
        rc = ckpt_errf(err, "%s: not a floating-point dataset", what);
    else
        rc = ckpt_dataset_check(dset, path, name, m, err);
    rows = nd > 0 ? block_rows(nd, dims) : 1;
    if (ckpt_agree(comm, rc, err) == 0)
        rc = ckpt_agree(comm, read_rows(comm, dset, nd, dims, rows, dxpl,
                                        what, err), err);
    if (rank == 0 && out) {
        const char *why = strstr(err, what);
        size_t pre = why ? (size_t)(why - err) : 0;
        if (rc && why) /* "rank 1: PATH: NAME: reason" -> "rank 1: reason" */
            fprintf(out, "BAD  %s %s: %.*s%s\n", name, shape, (int)pre, err,
                    why + strlen(what) + strspn(why + strlen(what), ": "));
        else if (rc)
            fprintf(out, "BAD  %s %s: %s\n", name, shape, err);
        else
            fprintf(out, "OK   %s %s\n", name, shape);
    }
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    H5Dclose(dset);
    return rc ? -1 : 0;
}

/* Every dataset of the open file; the names of the bad ones in err. */
static int verify_datasets(MPI_Comm comm, hid_t fid, const char *path,
                           const struct ckpt_manifest *m, FILE *out,
                           char *err)
{
    struct names x = {NULL, 0, 0};
    char e[CKPT_ERRMAX];
    hid_t dxpl = ckpt_dxpl_collective(err);
    int bad = 0, rank, rc = dxpl < 0 ? -1 : 0;
    size_t off = 0;

    MPI_Comm_rank(comm, &rank);
    if (!rc && H5Lvisit(fid, H5_INDEX_NAME, H5_ITER_INC, names_visit, &x) < 0)
        rc = ckpt_h5_fail(err, path, "H5Lvisit");
    if (ckpt_agree(comm, rc, err))
        goto out;
    for (int i = 0; i < x.n; i++) {
        if (verify_dataset(comm, fid, path, x.v[i], rank == 0 ? m : NULL,
                           dxpl, out, e) == 0)
            continue;
        if (bad++ == 0)
            off = (size_t)snprintf(err, CKPT_ERRMAX, "%s: damaged "
                                   "dataset(s):", path);
        if (off < CKPT_ERRMAX)
            off += (size_t)snprintf(err + off, CKPT_ERRMAX - off, " %s",
                                    x.v[i]);
    }
    if (rank == 0 && out)
        fprintf(out, "%d datasets, %d bad\n", x.n, bad);
    rc = bad ? -1 : 0;
out:
    if (dxpl >= 0)
        H5Pclose(dxpl);
    names_free(&x);
    return rc;
}

int ckpt_verify(MPI_Comm comm, const char *path, FILE *out, char *err,
                size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    struct ckpt_meta meta = {0};
    struct ckpt_manifest m;
    struct ckpt_h5_quiet q;
    hid_t fid = -1;
    int rank, rc;
    FILE *o;

    memset(&m, 0, sizeof m);
    MPI_Comm_rank(comm, &rank);
    o = rank == 0 ? out : NULL;
    ckpt_h5_quiet_begin(&q);
    rc = ckpt_manifest_check(comm, path, o, &m, e);
    if (o)
        fprintf(o, rc ? "BAD  manifest: %s\n" : "OK   manifest\n", e);
    if (!rc) {
        rc = ckpt_open_h5(comm, path, &meta, &fid, e);
        if (o && rc)
            fprintf(o, "BAD  attributes: %s\n", e);
        else if (o)
            fprintf(o, "OK   attributes: step %" PRId64 ", complete\n",
                    meta.step);
        free(meta.config_text);
    }
    if (!rc) {
        rc = verify_datasets(comm, fid, path, &m, o, e);
        if (H5Fclose(fid) < 0 && !rc)
            rc = ckpt_h5_fail(e, path, "H5Fclose");
        rc = ckpt_agree(comm, rc, e);
    }
    if (o)
        fprintf(o, rc ? "%s: DAMAGED\n" : "%s: OK\n", path);
    ckpt_manifest_free(&m);
    ckpt_h5_quiet_end(&q);
    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}

/* ---- list --------------------------------------------------------------- */

/* The status of one file; 0 when ok. */
static int list_status(const char *dir, const struct ckpt_entry *c,
                       char *status, size_t len)
{
    char path[CKPT_PATHMAX], mp[CKPT_PATHMAX + 16], e[CKPT_ERRMAX];
    const char *why = e;
    struct stat st;
    size_t pl;

    ckpt_fmt(path, sizeof path, "%s/%s", dir, c->name);
    ckpt_fmt(mp, sizeof mp, "%s.manifest", path);
    if (c->partial)
        return snprintf(status, len, "incomplete (partial)"), 1;
    if (stat(mp, &st) != 0)
        return snprintf(status, len, "no manifest"), 1;
    if (ckpt_manifest_check(MPI_COMM_NULL, path, NULL, NULL, e) == 0)
        return snprintf(status, len, "ok"), 0;
    pl = strlen(path);
    if (!strncmp(e, path, pl)) /* drop the path the line already names */
        why = e + pl + strspn(e + pl, ": ");
    if (!strncmp(why, "fails its manifest check: ", 26))
        why += 26;
    ckpt_fmt(status, len, "%s: %s", strstr(why, "this build reads")
             ? "unreadable" : "damaged", why); /* an older format */
    return 1;
}

int ckpt_list(const char *arg, FILE *out, char *err, size_t errlen)
{
    char dir[CKPT_PATHMAX], latest[CKPT_PATHMAX], e[CKPT_ERRMAX] = "";
    char path[CKPT_PATHMAX + 80], status[CKPT_ERRMAX];
    struct ckpt_entry *v = NULL;
    struct stat st;
    int n = 0, bad = 0;

    if (ckpt_dir_of(arg, dir, sizeof dir, e) ||
        ckpt_dir_scan(dir, &v, &n, e)) {
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    ckpt_latest_name(dir, latest, sizeof latest);
    fprintf(out, "%s:\n%10s  %-26s %14s  %s\n", dir, "step", "file", "bytes",
            "status");
    for (int i = 0; i < n; i++) {
        ckpt_fmt(path, sizeof path, "%s/%s", dir, v[i].name);
        bad += list_status(dir, &v[i], status, sizeof status);
        fprintf(out, "%10" PRId64 "  %-26s %14lld  %s%s\n", v[i].step,
                v[i].name, stat(path, &st) == 0 ? (long long)st.st_size : -1LL,
                status, strcmp(latest, v[i].name) ? "" : "  <- latest");
    }
    if (n == 0)
        fprintf(out, "(no checkpoints)\n");
    free(v);
    return bad;
}
