/*
 * ckpt_info.c - `mpitron ckpt info`: check the manifest, then print a
 * checkpoint's root attributes and every dataset with its shape, layout
 * and checksum.  Serial: one process opens the file with the default
 * (sec2) driver.
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

struct info_walk {
    FILE *out;
    int64_t n_model;   /* elements under /model */
    int64_t n_total;   /* elements in all datasets */
    int n_datasets;
};

static void type_name(hid_t dset, char *buf, size_t len)
{
    hid_t t = H5Dget_type(dset);
    H5T_class_t c = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    size_t bits = t >= 0 ? 8 * H5Tget_size(t) : 0;

    if (c == H5T_FLOAT)
        snprintf(buf, len, "float%zu", bits);
    else if (c == H5T_INTEGER)
        snprintf(buf, len, "int%zu", bits);
    else
        snprintf(buf, len, "other");
    if (t >= 0)
        H5Tclose(t);
}

/* "contiguous xxh64 0123456789abcdef", "chunks (341,768) NO CHECKSUM" */
static void layout_name(hid_t dset, int nd, char *buf, size_t len)
{
    hid_t dcpl = H5Dget_create_plist(dset);
    hsize_t chunk[H5S_MAX_RANK];
    char shape[160] = "", e[CKPT_ERRMAX];
    uint64_t h = 0;
    int sum = ckpt_attr_read_u64(dset, "xxh64", &h, "", e) == 0;
    H5D_layout_t lay = dcpl >= 0 ? H5Pget_layout(dcpl) : H5D_LAYOUT_ERROR;

    if (lay == H5D_CHUNKED && H5Pget_chunk(dcpl, nd, chunk) == nd)
        ckpt_hshape_str(shape, sizeof shape, nd, chunk);
    if (sum)
        snprintf(buf, len, "%s%s xxh64 %016" PRIx64, lay == H5D_CHUNKED
                 ? "chunks " : lay == H5D_CONTIGUOUS ? "contiguous"
                 : "other layout", shape, h);
    else
        snprintf(buf, len, "%s%s NO CHECKSUM", lay == H5D_CHUNKED ? "chunks "
                 : lay == H5D_CONTIGUOUS ? "contiguous" : "other layout",
                 shape);
    if (dcpl >= 0)
        H5Pclose(dcpl);
}

static herr_t info_visit(hid_t root, const char *name, const H5L_info_t *li,
                         void *arg)
{
    struct info_walk *w = arg;
    char shape[160], tname[32], lname[200];
    hsize_t dims[H5S_MAX_RANK];
    int64_t elems = 1;
    hid_t obj, space;
    int nd;

    if (li->type != H5L_TYPE_HARD)
        return 0;
    obj = H5Oopen(root, name, H5P_DEFAULT);
    if (obj < 0)
        return -1;
    if (H5Iget_type(obj) != H5I_DATASET) {
        H5Oclose(obj);
        return 0;
    }
    space = H5Dget_space(obj);
    nd = space >= 0 ? H5Sget_simple_extent_dims(space, dims, NULL) : -1;
    if (space >= 0)
        H5Sclose(space);
    if (nd < 0) {
        H5Oclose(obj);
        return -1;
    }
    for (int d = 0; d < nd; d++)
        elems *= (int64_t)dims[d];
    ckpt_hshape_str(shape, sizeof shape, nd, dims);
    type_name(obj, tname, sizeof tname);
    layout_name(obj, nd, lname, sizeof lname);
    H5Oclose(obj);
    fprintf(w->out, "  /%-40s %-16s %-8s %s\n", name, shape, tname, lname);
    w->n_datasets++;
    w->n_total += elems;
    if (strncmp(name, "model/", 6) == 0)
        w->n_model += elems;
    return 0;
}

static void print_i64(FILE *out, hid_t fid, const char *key, const char *path,
                      char *err)
{
    int64_t v = 0;
    int rc = ckpt_attr_read_i64(fid, key, &v, path, err);

    if (rc == 0)
        fprintf(out, "%-12s %" PRId64 "\n", key, v);
    else
        fprintf(out, "%-12s (%s)\n", key, rc == 1 ? "missing" : "unreadable");
}

static void print_attrs(FILE *out, hid_t fid, const char *path, char *err)
{
    char *s = NULL;
    uint64_t seed = 0;
    int rc;

    print_i64(out, fid, "step", path, err);
    print_i64(out, fid, "tokens_seen", path, err);
    rc = ckpt_attr_read_str(fid, "layout", &s, path, err);
    fprintf(out, "%-12s %s\n", "layout", rc == 0 ? s : "(missing)");
    free(s);
    print_i64(out, fid, "data_cursor", path, err);
    if (ckpt_attr_read_u64(fid, "rng_seed", &seed, path, err) == 0)
        fprintf(out, "%-12s %" PRIu64 "\n", "rng_seed", seed);
    else
        fprintf(out, "%-12s (missing)\n", "rng_seed");
    rc = ckpt_attr_read_str(fid, "config", &s, path, err);
    fprintf(out, "config:\n%s", rc == 0 ? s : "(missing)\n");
    if (rc == 0 && s[0] && s[strlen(s) - 1] != '\n')
        fputc('\n', out);
    free(s);
}

/* Identity line; -1 (err set) for a foreign file or unknown version.  An
 * incomplete file is still listed, marked as such. */
static int print_identity(FILE *out, hid_t fid, const char *path, char *err)
{
    char *fmt = NULL;
    int64_t version = -1, complete = 0;
    int rc = ckpt_attr_read_str(fid, "format", &fmt, path, err);

    if (rc == 0 && strcmp(fmt, CKPT_FORMAT) != 0)
        rc = 1;
    free(fmt);
    if (rc)
        return ckpt_errf(err, "%s: not an mpitron checkpoint (no 'format' "
                              "attribute '%s')", path, CKPT_FORMAT);
    if (ckpt_attr_read_i64(fid, "version", &version, path, err) != 0 ||
        version != CKPT_VERSION)
        return ckpt_errf(err, "%s has checkpoint version %lld; this build "
                              "reads versions: " CKPT_VERSIONS_READ, path,
                         (long long)version);
    rc = ckpt_attr_read_i64(fid, "complete", &complete, path, err);
    fprintf(out, "%-12s %s\n%-12s %s version %d, %s\n", "file", path,
            "format", CKPT_FORMAT, CKPT_VERSION,
            rc == 0 && complete == 1 ? "complete"
                                     : "INCOMPLETE (the save did not finish)");
    return 0;
}

/* The manifest line: what was checked before the file was opened. */
static void print_manifest(FILE *out, const char *path)
{
    struct ckpt_manifest m;
    char e[CKPT_ERRMAX];

    if (ckpt_manifest_load(path, &m, e) == 0)
        fprintf(out, "%-12s ok: %" PRIu64 " bytes in %" PRId64 " pieces of "
                     "at most %" PRIu64 " bytes, %zu datasets with data\n",
                "manifest", m.size, m.npieces, m.block, m.ext.n);
    ckpt_manifest_free(&m);
}

int ckpt_info_fid(hid_t fid, const char *path, FILE *out, char *err)
{
    char scratch[CKPT_ERRMAX];
    struct info_walk w = {out, 0, 0, 0};
    int rc = print_identity(out, fid, path, err);

    if (!rc) {
        print_manifest(out, path);
        print_attrs(out, fid, path, scratch);
        fprintf(out, "datasets:\n");
        if (H5Lvisit(fid, H5_INDEX_NAME, H5_ITER_INC, info_visit, &w) < 0)
            rc = ckpt_h5_fail(err, path, "H5Lvisit");
    }
    if (!rc)
        fprintf(out, "%-12s %" PRId64 " in /model (%d datasets, %" PRId64
                     " elements in all)\n", "parameters", w.n_model,
                w.n_datasets, w.n_total);
    return rc;
}

int ckpt_print_info(const char *path, FILE *out, char *err, size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    struct ckpt_h5_quiet q;
    hid_t fid = -1;
    int rc = 0;

    ckpt_h5_quiet_begin(&q);
    rc = ckpt_manifest_check(MPI_COMM_NULL, path, NULL, NULL, e);
    if (!rc)
        rc = ckpt_probe(path, e);
    if (!rc && (fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
        rc = ckpt_h5_fail(e, path, "H5Fopen");
    if (!rc)
        rc = ckpt_info_fid(fid, path, out, e);
    if (fid >= 0)
        H5Fclose(fid);
    ckpt_h5_quiet_end(&q);
    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}
