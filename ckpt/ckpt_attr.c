/*
 * ckpt_attr.c - scalar root attributes (int64, uint64, UTF-8 strings) and
 * the check of format / version / complete that every reader runs first.
 *
 * Strings are written variable-length UTF-8 so that h5py returns them as
 * str; fixed-length strings are accepted on read.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

static int attr_write(hid_t obj, const char *name, hid_t ftype, hid_t mtype,
                      const void *buf, const char *file, char *err)
{
    char what[CKPT_ERRMAX];
    hid_t space, attr;
    int rc = 0;

    ckpt_fmt(what, sizeof what, "%s: attribute '%s'", file, name);
    space = H5Screate(H5S_SCALAR);
    if (space < 0)
        return ckpt_h5_fail(err, what, "H5Screate");
    attr = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0)
        rc = ckpt_h5_fail(err, what, "H5Acreate2");
    else if (H5Awrite(attr, mtype, buf) < 0)
        rc = ckpt_h5_fail(err, what, "H5Awrite");
    if (attr >= 0 && H5Aclose(attr) < 0 && rc == 0)
        rc = ckpt_h5_fail(err, what, "H5Aclose");
    H5Sclose(space);
    return rc;
}

int ckpt_attr_write_i64(hid_t obj, const char *name, int64_t v,
                        const char *file, char *err)
{
    return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, file,
                      err);
}

int ckpt_attr_write_u64(hid_t obj, const char *name, uint64_t v,
                        const char *file, char *err)
{
    return attr_write(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v, file,
                      err);
}

/* Variable-length UTF-8 C string type (caller closes) or -1. */
static hid_t str_type_vl(H5T_cset_t cset)
{
    hid_t t = H5Tcopy(H5T_C_S1);

    if (t < 0)
        return -1;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, cset) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

int ckpt_attr_write_str(hid_t obj, const char *name, const char *s,
                        const char *file, char *err)
{
    hid_t t = str_type_vl(H5T_CSET_UTF8);
    const char *p = s ? s : "";
    int rc;

    if (t < 0)
        return ckpt_h5_fail(err, file, "H5Tcopy(string type)");
    rc = attr_write(obj, name, t, t, &p, file, err);
    H5Tclose(t);
    return rc;
}

/* Opens attribute name of obj: 0 and *attr, 1 when missing, -1 on error. */
static int attr_open(hid_t obj, const char *name, hid_t *attr,
                     const char *file, char *err)
{
    char what[CKPT_ERRMAX];
    htri_t ex = H5Aexists(obj, name);
    hid_t space;
    hssize_t np;

    ckpt_fmt(what, sizeof what, "%s: attribute '%s'", file, name);
    if (ex < 0)
        return ckpt_h5_fail(err, what, "H5Aexists");
    if (ex == 0)
        return 1;
    *attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (*attr < 0)
        return ckpt_h5_fail(err, what, "H5Aopen");
    space = H5Aget_space(*attr);
    np = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (space >= 0)
        H5Sclose(space);
    if (np != 1) {
        H5Aclose(*attr);
        return ckpt_errf(err, "%s is not a scalar", what);
    }
    return 0;
}

static int attr_read_int(hid_t obj, const char *name, hid_t mtype, void *v,
                         const char *file, char *err)
{
    hid_t attr = -1, ftype;
    H5T_class_t cls;
    int rc = attr_open(obj, name, &attr, file, err);

    if (rc != 0)
        return rc;
    ftype = H5Aget_type(attr);
    cls = ftype >= 0 ? H5Tget_class(ftype) : H5T_NO_CLASS;
    if (ftype >= 0)
        H5Tclose(ftype);
    if (cls != H5T_INTEGER)
        rc = ckpt_errf(err, "%s: attribute '%s' is not an integer", file,
                       name);
    else if (H5Aread(attr, mtype, v) < 0)
        rc = ckpt_h5_fail(err, file, "H5Aread");
    H5Aclose(attr);
    return rc;
}

int ckpt_attr_read_i64(hid_t obj, const char *name, int64_t *v,
                       const char *file, char *err)
{
    return attr_read_int(obj, name, H5T_NATIVE_INT64, v, file, err);
}

int ckpt_attr_read_u64(hid_t obj, const char *name, uint64_t *v,
                       const char *file, char *err)
{
    return attr_read_int(obj, name, H5T_NATIVE_UINT64, v, file, err);
}

/* Reads a string attribute of file type ftype into a malloc'ed copy. */
static int str_read(hid_t attr, hid_t ftype, char **out, const char *what,
                    char *err)
{
    hid_t mt;
    int rc = 0;

    if (H5Tis_variable_str(ftype) > 0) {
        char *s = NULL;
        mt = str_type_vl(H5Tget_cset(ftype));
        if (mt < 0 || H5Aread(attr, mt, &s) < 0)
            rc = ckpt_h5_fail(err, what, "H5Aread");
        else if (!(*out = strdup(s ? s : "")))
            rc = ckpt_errf(err, "%s: out of memory", what);
        if (s)
            H5free_memory(s);
    } else {
        size_t size = H5Tget_size(ftype);
        mt = H5Tcopy(ftype);
        *out = calloc(size + 1, 1);
        if (!*out)
            rc = ckpt_errf(err, "%s: out of memory", what);
        else if (mt < 0 || H5Aread(attr, mt, *out) < 0)
            rc = ckpt_h5_fail(err, what, "H5Aread");
    }
    if (mt >= 0)
        H5Tclose(mt);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

int ckpt_attr_read_str(hid_t obj, const char *name, char **out,
                       const char *file, char *err)
{
    char what[CKPT_ERRMAX];
    hid_t attr = -1, ftype;
    int rc = attr_open(obj, name, &attr, file, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    ckpt_fmt(what, sizeof what, "%s: attribute '%s'", file, name);
    ftype = H5Aget_type(attr);
    if (ftype < 0)
        rc = ckpt_h5_fail(err, what, "H5Aget_type");
    else if (H5Tget_class(ftype) != H5T_STRING)
        rc = ckpt_errf(err, "%s is not a string", what);
    else
        rc = str_read(attr, ftype, out, what, err);
    if (ftype >= 0)
        H5Tclose(ftype);
    H5Aclose(attr);
    return rc;
}

/* format, then version, then complete: the order of the messages a user
 * needs (a foreign file is not "incomplete"). */
static int root_identity(hid_t fid, const char *path, char *err)
{
    char *fmt = NULL;
    int64_t version = 0, complete = 0;
    int rc = ckpt_attr_read_str(fid, "format", &fmt, path, err);

    if (rc == 1)
        return ckpt_errf(err, "%s: not an mpitron checkpoint (no 'format' "
                              "attribute)", path);
    if (rc < 0)
        return -1;
    if (strcmp(fmt, CKPT_FORMAT) != 0) {
        ckpt_errf(err, "%s: not an mpitron checkpoint (format is '%.64s', "
                       "expected '%s')", path, fmt, CKPT_FORMAT);
        free(fmt);
        return -1;
    }
    free(fmt);
    rc = ckpt_attr_read_i64(fid, "version", &version, path, err);
    if (rc == 1)
        return ckpt_errf(err, "%s: no 'version' attribute", path);
    if (rc < 0)
        return -1;
    if (version != CKPT_VERSION)
        return ckpt_errf(err, "%s has checkpoint version %lld; this build "
                              "reads versions: " CKPT_VERSIONS_READ, path,
                         (long long)version);
    rc = ckpt_attr_read_i64(fid, "complete", &complete, path, err);
    if (rc < 0)
        return -1;
    if (rc == 1 || complete != 1)
        return ckpt_errf(err, "%s: incomplete checkpoint (no 'complete' = 1 "
                              "attribute): its save did not finish", path);
    return 0;
}

/* A missing attribute (rc 1) becomes an error naming it. */
static int need(int rc, const char *path, const char *name, char *err)
{
    if (rc == 1)
        return ckpt_errf(err, "%s: attribute '%s' missing", path, name);
    return rc;
}

int ckpt_root_check(hid_t fid, const char *path, struct ckpt_meta *meta,
                    char *err)
{
    char *layout = NULL;
    int rc = root_identity(fid, path, err);

    if (rc || !meta)
        return rc;
    meta->config_text = NULL;
    rc = need(ckpt_attr_read_i64(fid, "step", &meta->step, path, err), path,
              "step", err);
    if (!rc)
        rc = need(ckpt_attr_read_i64(fid, "tokens_seen", &meta->tokens_seen,
                                     path, err), path, "tokens_seen", err);
    if (!rc)
        rc = need(ckpt_attr_read_i64(fid, "data_cursor", &meta->data_cursor,
                                     path, err), path, "data_cursor", err);
    if (!rc)
        rc = need(ckpt_attr_read_u64(fid, "rng_seed", &meta->rng_seed, path,
                                     err), path, "rng_seed", err);
    if (!rc)
        rc = need(ckpt_attr_read_str(fid, "layout", &layout, path, err), path,
                  "layout", err);
    if (!rc)
        rc = need(ckpt_attr_read_str(fid, "config", &meta->config_text, path,
                                     err), path, "config", err);
    if (!rc && (meta->step < 0 || meta->tokens_seen < 0 ||
                meta->data_cursor < 0 || meta->step > ((int64_t)1 << 53)))
        rc = ckpt_errf(err, "%s: root attributes out of range (step %lld, "
                            "tokens_seen %lld, data_cursor %lld): not a "
                            "checkpoint this build wrote", path,
                       (long long)meta->step, (long long)meta->tokens_seen,
                       (long long)meta->data_cursor);
    if (layout)
        snprintf(meta->layout, sizeof meta->layout, "%s", layout);
    free(layout);
    if (rc) {
        free(meta->config_text);
        meta->config_text = NULL;
    }
    return rc;
}
