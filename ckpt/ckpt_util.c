/*
 * ckpt_util.c - errors, rank agreement, property lists, hyperslab
 * selection and tensor-list checks shared by ckpt_write.c and
 * ckpt_read.c.
 */
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

int ckpt_fmt(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (len == 0)
        return -1;
    va_start(ap, fmt);
    w = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return w < 0 || (size_t)w >= len ? -1 : 0;
}

int ckpt_errf(char *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, CKPT_ERRMAX, fmt, ap);
    va_end(ap);
    return -1;
}

/* H5Ewalk2 upward visits the innermost (most specific) error first. */
static herr_t h5_innermost(unsigned n, const H5E_error2_t *e, void *arg)
{
    char *buf = arg;

    if (n == 0 && e->desc)
        snprintf(buf, 512, "%s", e->desc);
    return 0;
}

int ckpt_h5_fail(char *err, const char *what, const char *call)
{
    char reason[512] = "";

    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_innermost, reason);
    H5Eclear2(H5E_DEFAULT);
    if (reason[0])
        return ckpt_errf(err, "%s: %s failed: %s", what, call, reason);
    return ckpt_errf(err, "%s: %s failed", what, call);
}

void ckpt_err_out(char *err, size_t errlen, const char *msg)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

void ckpt_h5_quiet_begin(struct ckpt_h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void ckpt_h5_quiet_end(const struct ckpt_h5_quiet *q)
{
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

int ckpt_agree(MPI_Comm comm, int rc, char *err)
{
    int rank, key, root;
    char msg[CKPT_ERRMAX];

    if (comm == MPI_COMM_NULL) /* serial: no MPI call at all */
        return rc ? -1 : 0;
    MPI_Comm_rank(comm, &rank);
    key = rc ? rank : INT_MAX;
    MPI_Allreduce(&key, &root, 1, MPI_INT, MPI_MIN, comm);
    if (root == INT_MAX)
        return 0;
    if (rank == root)
        memcpy(msg, err, CKPT_ERRMAX);
    msg[CKPT_ERRMAX - 1] = '\0';
    MPI_Bcast(msg, CKPT_ERRMAX, MPI_CHAR, root, comm);
    if (root == 0)
        memcpy(err, msg, CKPT_ERRMAX);
    else
        snprintf(err, CKPT_ERRMAX, "rank %d: %.*s", root, CKPT_ERRMAX - 32,
                 msg);
    return -1;
}

/* Elements of the hyperslab, flat range or not. */
static int64_t box_count(const struct ckpt_tensor *t)
{
    int64_t c = 1;

    for (int d = 0; d < t->ndim; d++)
        c *= t->count[d];
    return c;
}

int64_t ckpt_tensor_local_count(const struct ckpt_tensor *t)
{
    int64_t c = box_count(t);

    return c > 0 && t->flat_len > 0 ? t->flat_len : c;
}

/* h folded with XXH64 of len bytes at p: XXH64 of (h, XXH64(p)). */
static uint64_t fold(uint64_t h, const void *p, size_t len)
{
    uint64_t two[2] = {h, ckpt_hash64(p, len)};

    return ckpt_hash64(two, sizeof two);
}

static int tensor_check_local(const struct ckpt_tensor *t, int i, char *err)
{
    const char *name = t->name ? t->name : "(null)";

    if (!t->name || !t->name[0])
        return ckpt_errf(err, "tensor %d has no name", i);
    if (strchr(t->name, '\n') || strlen(t->name) > 1024)
        return ckpt_errf(err, "tensor %d: name '%.64s...' holds a newline or "
                              "is longer than 1024 bytes", i, t->name);
    if (t->ndim < 1 || t->ndim > CKPT_MAX_DIMS)
        return ckpt_errf(err, "%s: ndim %d outside 1..%d", name, t->ndim,
                         CKPT_MAX_DIMS);
    for (int d = 0; d < t->ndim; d++) {
        if (t->gshape[d] < 0)
            return ckpt_errf(err, "%s: negative global extent %lld in dim %d",
                             name, (long long)t->gshape[d], d);
        if (t->count[d] < 0 || t->start[d] < 0 ||
            t->start[d] + t->count[d] > t->gshape[d])
            return ckpt_errf(err,
                             "%s: hyperslab start %lld count %lld outside "
                             "extent %lld in dim %d",
                             name, (long long)t->start[d],
                             (long long)t->count[d], (long long)t->gshape[d], d);
    }
    if (t->flat_off < 0 || t->flat_len < 0 ||
        (t->flat_len > 0 && t->flat_off + t->flat_len > box_count(t)))
        return ckpt_errf(err, "%s: flat range [%lld, +%lld) outside the "
                         "hyperslab of %lld elements", name,
                         (long long)t->flat_off, (long long)t->flat_len,
                         (long long)box_count(t));
    if (ckpt_tensor_local_count(t) > 0 && !t->data)
        return ckpt_errf(err, "%s: data is NULL for a non-empty hyperslab",
                         name);
    return 0;
}

/* Index of the first element of x[0..n) that is NaN or infinite, or -1.
 * An all-ones exponent is the test, on the bits (an integer OR that the
 * compiler vectorises); the position is looked for only when it fails. */
static int64_t first_nonfinite(const float *x, int64_t n)
{
    const int64_t chunk = 1 << 16;

    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        int64_t i1 = n - i0 < chunk ? n : i0 + chunk;
        uint32_t bad = 0;
        for (int64_t i = i0; i < i1; i++) {
            uint32_t b;
            memcpy(&b, &x[i], sizeof b);
            bad |= (b & 0x7f800000u) == 0x7f800000u;
        }
        if (!bad)
            continue;
        for (int64_t i = i0; i < i1; i++)
            if (!isfinite(x[i]))
                return i;
    }
    return -1;
}

/* "[3,17]": the global index of element i of t's hyperslab. */
static void global_index(const struct ckpt_tensor *t, int64_t i, char *buf,
                         size_t len)
{
    int64_t idx[CKPT_MAX_DIMS];
    size_t at = 0;

    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->start[d] + (t->count[d] ? i % t->count[d] : 0);
        i = t->count[d] ? i / t->count[d] : 0;
    }
    for (int d = 0; d < t->ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", d ? "," : "[",
                               (long long)idx[d]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
}

int ckpt_tensors_finite(MPI_Comm comm, const struct ckpt_tensor *t, int n,
                        char *err)
{
    int rc = 0;

    for (int i = 0; rc == 0 && i < n; i++) {
        int64_t c = ckpt_tensor_local_count(&t[i]), k;
        char where[160];
        if (c <= 0 || !t[i].data || (k = first_nonfinite(t[i].data, c)) < 0)
            continue;
        global_index(&t[i], k, where, sizeof where);
        rc = ckpt_errf(err, "refusing to save a non-finite value: %s%s is "
                            "%s", t[i].name, where,
                       isnan(t[i].data[k]) ? "nan"
                       : t[i].data[k] > 0 ? "+inf" : "-inf");
    }
    return ckpt_agree(comm, rc, err);
}

int ckpt_tensors_check(MPI_Comm comm, const struct ckpt_tensor *t, int n,
                       char *err)
{
    uint64_t h = 0, v[2], r[2];
    int rc = 0;

    if (n < 0 || (n > 0 && !t))
        rc = ckpt_errf(err, "invalid tensor list (n=%d)", n);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = tensor_check_local(&t[i], i, err);
    if (ckpt_agree(comm, rc, err))
        return -1;
    h = fold(h, &n, sizeof n);
    for (int i = 0; i < n; i++) {
        h = fold(h, t[i].name, strlen(t[i].name) + 1);
        h = fold(h, &t[i].ndim, sizeof t[i].ndim);
        h = fold(h, t[i].gshape, sizeof(int64_t) * (size_t)t[i].ndim);
    }
    /* max(h) and max(~h) == ~min(h): one all-reduce tells min == max */
    v[0] = h;
    v[1] = ~h;
    MPI_Allreduce(v, r, 2, MPI_UINT64_T, MPI_MAX, comm);
    if (r[0] != ~r[1])
        return ckpt_errf(err, "the tensor lists differ across ranks (every "
                              "rank must pass the same names and global "
                              "shapes in the same order)");
    return 0;
}

hid_t ckpt_fapl_mpio(MPI_Comm comm, char *err)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);

    if (fapl < 0)
        return ckpt_h5_fail(err, "file access list", "H5Pcreate");
    if (H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0 ||
        H5Pset_all_coll_metadata_ops(fapl, 1) < 0 ||
        H5Pset_coll_metadata_write(fapl, 1) < 0) {
        ckpt_h5_fail(err, "file access list", "H5Pset_fapl_mpio");
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

hid_t ckpt_dxpl_collective(char *err)
{
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);

    if (dxpl < 0)
        return ckpt_h5_fail(err, "transfer list", "H5Pcreate");
    if (H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0) {
        ckpt_h5_fail(err, "transfer list", "H5Pset_dxpl_mpio");
        H5Pclose(dxpl);
        return -1;
    }
    return dxpl;
}

/* Contiguous and unfiltered (the format of ckpt.h): HDF5 then moves
 * each rank's hyperslab with plain MPI-IO, and the dataset's data is one
 * byte range, whose offset is known as soon as it is created. */
hid_t ckpt_dcpl_create(char *err)
{
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);

    if (dcpl < 0)
        return ckpt_h5_fail(err, "dataset creation list", "H5Pcreate");
    /* allocated at creation (required in parallel), never filled: every
     * element is written by exactly one rank */
    if (H5Pset_layout(dcpl, H5D_CONTIGUOUS) < 0 ||
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0) {
        ckpt_h5_fail(err, "dataset creation list", "H5Pset_layout");
        H5Pclose(dcpl);
        return -1;
    }
    return dcpl;
}

/* The memory space has the shape of the hyperslab (the buffer is the same
 * row-major block either way): with equal shapes HDF5 never maps memory
 * element by element (for a chunked dataset, 1.10 maps every element of
 * a 1-D memory space against an N-D file selection through
 * H5S_select_iterate). */
/* The box of fs: dims < d fixed at fix[], dim d [st[d] + r0, + nr),
 * dims > d whole; SET when *first, else OR. */
static int sel_box(hid_t fs, int nd, int d, const hsize_t *fix,
                   const hsize_t *st, const hsize_t *ct, hsize_t r0,
                   hsize_t nr, int *first)
{
    hsize_t s[CKPT_MAX_DIMS], c[CKPT_MAX_DIMS];

    for (int k = 0; k < nd; k++) {
        s[k] = k < d ? fix[k] : st[k];
        c[k] = k < d ? 1 : ct[k];
    }
    s[d] = st[d] + r0;
    c[d] = nr;
    herr_t rc = H5Sselect_hyperslab(fs, *first ? H5S_SELECT_SET
                                                : H5S_SELECT_OR, s, NULL, c,
                                    NULL);
    *first = 0;
    return rc < 0 ? -1 : 0;
}

/* Select the row-major elements [a, b) of the box (st, ct) restricted to
 * dims >= d (dims < d fixed at fix[]): a partial first row, whole rows,
 * a partial last row, the partial rows recursively. */
static int sel_flat(hid_t fs, int nd, int d, hsize_t *fix, const hsize_t *st,
                    const hsize_t *ct, hsize_t a, hsize_t b, int *first)
{
    hsize_t inner = 1;

    if (a >= b)
        return 0;
    for (int k = d + 1; k < nd; k++)
        inner *= ct[k];
    if (a % inner) {
        hsize_t r = a / inner, end = (r + 1) * inner < b ? (r + 1) * inner
                                                           : b;
        fix[d] = st[d] + r;
        if (sel_flat(fs, nd, d + 1, fix, st, ct, a - r * inner,
                     end - r * inner, first))
            return -1;
        a = end;
    }
    if (b / inner > a / inner) {
        if (sel_box(fs, nd, d, fix, st, ct, a / inner, b / inner - a / inner,
                    first))
            return -1;
        a = b / inner * inner;
    }
    if (a < b) {
        hsize_t r = a / inner;
        fix[d] = st[d] + r;
        return sel_flat(fs, nd, d + 1, fix, st, ct, 0, b - r * inner, first);
    }
    return 0;
}

int ckpt_select(hid_t fspace, const struct ckpt_tensor *t, hid_t *mspace,
                char *err)
{
    hsize_t start[CKPT_MAX_DIMS], count[CKPT_MAX_DIMS], one = 1;
    hsize_t fix[CKPT_MAX_DIMS] = {0}, flat = (hsize_t)t->flat_len;
    int64_t c = ckpt_tensor_local_count(t);
    int first = 1;

    for (int d = 0; d < t->ndim; d++) {
        start[d] = (hsize_t)t->start[d];
        count[d] = (hsize_t)t->count[d];
    }
    if (c > 0 && t->flat_len > 0) { /* a flat range: 1-D memory */
        *mspace = H5Screate_simple(1, &flat, NULL);
        if (*mspace < 0)
            return ckpt_h5_fail(err, t->name, "H5Screate_simple");
        if (sel_flat(fspace, t->ndim, 0, fix, start, count,
                     (hsize_t)t->flat_off,
                     (hsize_t)(t->flat_off + t->flat_len), &first) == 0)
            return 0;
        goto fail;
    }
    *mspace = c > 0 ? H5Screate_simple(t->ndim, count, NULL)
                    : H5Screate_simple(1, &one, NULL);
    if (*mspace < 0)
        return ckpt_h5_fail(err, t->name, "H5Screate_simple");
    if (c == 0) {
        if (H5Sselect_none(fspace) < 0 || H5Sselect_none(*mspace) < 0)
            goto fail;
        return 0;
    }
    if (H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count,
                            NULL) < 0)
        goto fail;
    return 0;
fail:
    ckpt_h5_fail(err, t->name, "H5Sselect_hyperslab");
    H5Sclose(*mspace);
    *mspace = -1;
    return -1;
}

static void shape_fmt(char *buf, size_t len, int ndim, const int64_t *d64,
                      const hsize_t *dh)
{
    size_t off = 0;

    if (len == 0)
        return;
    buf[0] = '\0';
    off += (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < ndim && off < len; d++)
        off += (size_t)snprintf(buf + off, len - off, "%s%lld", d ? "," : "",
                                d64 ? (long long)d64[d] : (long long)dh[d]);
    if (off < len)
        snprintf(buf + off, len - off, ")");
}

void ckpt_shape_str(char *buf, size_t len, int ndim, const int64_t *dims)
{
    shape_fmt(buf, len, ndim, dims, NULL);
}

void ckpt_hshape_str(char *buf, size_t len, int ndim, const hsize_t *dims)
{
    shape_fmt(buf, len, ndim, NULL, dims);
}

void ckpt_phase(MPI_Comm comm, const char *what)
{
    static double last;
    static int on = -1;
    double now;
    int rank;

    if (on < 0) {
        const char *e = getenv("MPITRON_CKPT_TIMING");
        on = e && e[0] && strcmp(e, "0") != 0;
    }
    if (!on)
        return;
    MPI_Comm_rank(comm, &rank);
    now = MPI_Wtime();
    if (rank == 0 && what)
        fprintf(stderr, "mpitron: ckpt timing: %-22s %8.3f s\n", what,
                now - last);
    last = now;
}
