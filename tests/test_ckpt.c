/*
 * test_ckpt.c - HDF5 checkpoint layer.  Run under mpirun -np 1, 2, 3.
 *
 * Tensor values are a function of (tensor id, global flat index), so a
 * read under a different sharding, and a plain serial HDF5 read of the
 * whole dataset (the independent reference for the on-disk layout), can
 * both be checked element by element.  Foreign and broken files are made
 * here with the plain serial HDF5 API and plain POSIX I/O, not with the
 * library under test; manifests are parsed and forged here from the
 * format in ckpt.h, with XXH64 checked against published vectors.
 *
 * Longer than the ~800-line guideline: one test program per module, and
 * the fault cases (damage, truncation, full disk, retention, async) need
 * the helpers of the round-trip cases.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"

static char g_root[256];
static int g_rank, g_size;

/* ---- helpers ---------------------------------------------------------- */

/* snprintf; test paths are short, truncation would fail the test anyway
 * (noinline keeps -Wformat-truncation from guessing at buffer sizes). */
__attribute__((noinline, format(printf, 3, 4))) static void
fmt(char *buf, size_t len, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, len, f, ap);
    va_end(ap);
}

/* g_root/name, created by rank 0 (empty) and visible to all on return. */
static void subdir(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", g_root, name);
    if (g_rank == 0)
        assert_int_equal(mkdir(buf, 0777), 0);
    MPI_Barrier(MPI_COMM_WORLD);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path)
{
    static char buf[4096];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return NULL;
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Every rank's rc is -1 (checked on every rank). */
static void assert_all_failed(int rc)
{
    int sum = 0;
    MPI_Allreduce(&rc, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    assert_int_equal(rc, -1);
    assert_int_equal(sum, -g_size);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("'%s' not found in: %s", needle, hay);
}

/* ---- sharded tensors ---------------------------------------------------- */

enum { SPLIT_ROOT = -1, SPLIT_ALL = -2 };

struct spec {
    const char *name;
    int ndim;
    int64_t gshape[CKPT_MAX_DIMS];
    int wdim, wrev; /* write sharding: dim (or SPLIT_*), reversed ranks */
    int rdim, rrev; /* read sharding */
};

/* Block partition of len over size parts: part r. */
static void block(int64_t len, int size, int r, int64_t *start, int64_t *count)
{
    int64_t base = len / size, rem = len % size;
    *start = r * base + (r < rem ? r : rem);
    *count = base + (r < rem ? 1 : 0);
}

static float value(int id, int64_t g)
{
    return (float)(id * 100000 + g); /* exact in float below 2^24 */
}

/* Global flat index of local element k of t. */
static int64_t gflat(const struct ckpt_tensor *t, int64_t k)
{
    int64_t idx[CKPT_MAX_DIMS], g = 0;

    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->start[d] + k % t->count[d];
        k /= t->count[d];
    }
    for (int d = 0; d < t->ndim; d++)
        g = g * t->gshape[d] + idx[d];
    return g;
}

/* Fills t's shape and this rank's hyperslab; allocates data (caller
 * frees), filled with fill. */
static void tensor_make(struct ckpt_tensor *t, const struct spec *s, int dim,
                        int rev, float fill)
{
    int64_t n = 1;
    int part = rev ? g_size - 1 - g_rank : g_rank;

    memset(t, 0, sizeof *t);
    t->name = s->name;
    t->ndim = s->ndim;
    for (int d = 0; d < s->ndim; d++) {
        t->gshape[d] = s->gshape[d];
        t->start[d] = 0;
        t->count[d] = s->gshape[d];
    }
    if (dim >= 0)
        block(s->gshape[dim], g_size, part, &t->start[dim], &t->count[dim]);
    else if (dim == SPLIT_ROOT && g_rank != 0)
        memset(t->count, 0, sizeof t->count);
    for (int d = 0; d < t->ndim; d++)
        n *= t->count[d];
    t->data = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    assert_non_null(t->data);
    for (int64_t k = 0; k < n; k++)
        t->data[k] = fill;
}

static void tensor_fill(struct ckpt_tensor *t, int id)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->count[d];
    for (int64_t k = 0; k < n; k++)
        t->data[k] = value(id, gflat(t, k));
}

static void tensor_check(const struct ckpt_tensor *t, int id)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->count[d];
    for (int64_t k = 0; k < n; k++)
        if (t->data[k] != value(id, gflat(t, k)))
            fail_msg("rank %d %s local %lld: %g, expected %g", g_rank,
                     t->name, (long long)k, t->data[k],
                     value(id, gflat(t, k)));
}

static int64_t local_count(const struct ckpt_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->count[d];
    return n;
}

static void tensors_free(struct ckpt_tensor *t, int n)
{
    for (int i = 0; i < n; i++)
        free(t[i].data);
}

static struct ckpt_meta meta_make(int64_t step, const char *config)
{
    struct ckpt_meta m;
    memset(&m, 0, sizeof m);
    m.step = step;
    m.tokens_seen = step * 1000;
    m.data_cursor = step;
    m.rng_seed = 1234;
    snprintf(m.layout, sizeof m.layout, "dp=%d tp=1 pp=1 world=%d", g_size,
             g_size);
    m.config_text = (char *)config;
    return m;
}

/* Save s[0..n) sharded by their write split, values filled; returns rc. */
static int save_specs(const char *dir, int64_t step, const struct spec *s,
                      int n, char *path, char *err)
{
    struct ckpt_tensor t[8];
    struct ckpt_meta m = meta_make(step, "n_layer = 1\n");
    int rc;

    for (int i = 0; i < n; i++) {
        tensor_make(&t[i], &s[i], s[i].wdim, s[i].wrev, 0.0f);
        tensor_fill(&t[i], i + 1);
    }
    rc = ckpt_save(MPI_COMM_WORLD, dir, &m, t, n, path, 512, err, 1024);
    tensors_free(t, n);
    return rc;
}

/* ---- files made with the plain serial HDF5 API ------------------------ */

static void h5_attr_str(hid_t f, const char *name, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR), a;
    H5Tset_size(t, H5T_VARIABLE);
    a = H5Acreate2(f, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, t, &v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void h5_attr_i64(hid_t f, const char *name, int64_t v)
{
    hid_t s = H5Screate(H5S_SCALAR), a;
    a = H5Acreate2(f, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
}

/* Rank 0 writes an HDF5 file holding /model/w (4) and, when format is not
 * NULL, the root attributes format, version and (if complete) complete. */
static void h5_foreign(const char *path, const char *format, int64_t version,
                       int complete)
{
    if (g_rank == 0) {
        hsize_t d = 4;
        float v[4] = {1, 2, 3, 4};
        hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
        hid_t s = H5Screate_simple(1, &d, NULL), ds;
        assert_true(f >= 0);
        H5Pset_create_intermediate_group(lcpl, 1);
        ds = H5Dcreate2(f, "/model/w", H5T_IEEE_F32LE, s, lcpl, H5P_DEFAULT,
                        H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        H5Dclose(ds);
        H5Sclose(s);
        H5Pclose(lcpl);
        if (format) {
            h5_attr_str(f, "format", format);
            h5_attr_i64(f, "version", version);
            if (complete)
                h5_attr_i64(f, "complete", 1);
        }
        H5Fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Rank 0 reads every dataset of s whole with serial HDF5 and checks shape,
 * on-disk type and every value. */
static void h5_serial_check(const char *path, const struct spec *s, int n)
{
    if (g_rank == 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        assert_true(f >= 0);
        for (int i = 0; i < n; i++) {
            hsize_t dims[CKPT_MAX_DIMS];
            int64_t len = 1;
            hid_t ds = H5Dopen2(f, s[i].name, H5P_DEFAULT);
            hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
            assert_int_equal(H5Sget_simple_extent_ndims(sp), s[i].ndim);
            H5Sget_simple_extent_dims(sp, dims, NULL);
            for (int d = 0; d < s[i].ndim; d++) {
                assert_int_equal(dims[d], s[i].gshape[d]);
                len *= s[i].gshape[d];
            }
            assert_true(H5Tequal(ty, H5T_IEEE_F32LE) > 0);
            float *buf = malloc(sizeof(float) * (size_t)len);
            assert_true(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                                H5P_DEFAULT, buf) >= 0);
            for (int64_t g = 0; g < len; g++)
                assert_true(buf[g] == value(i + 1, g));
            free(buf);
            H5Tclose(ty);
            H5Sclose(sp);
            H5Dclose(ds);
        }
        H5Fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* ---- manifests and damage, by hand ---------------------------------------- */

#define MBLOCK ((int64_t)4 << 20)

static int64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (int64_t)st.st_size;
}

/* The whole file, malloc'ed (caller frees). */
static unsigned char *read_all(const char *path, int64_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b;

    assert_non_null(f);
    *len = file_size(path);
    b = malloc((size_t)*len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)*len, f), (size_t)*len);
    fclose(f);
    return b;
}

/* The dataset checksum of ckpt.h, computed here from the bytes: XXH64
 * of each 4 MiB piece, then XXH64 of those hashes as 8 little-endian
 * bytes each. */
static uint64_t tree_sum(const unsigned char *b, int64_t len)
{
    int64_t np = (len + MBLOCK - 1) / MBLOCK;
    unsigned char *h = malloc((size_t)(8 * np + 1));
    uint64_t r;

    assert_non_null(h);
    for (int64_t i = 0; i < np; i++) {
        int64_t n = len - i * MBLOCK < MBLOCK ? len - i * MBLOCK : MBLOCK;
        uint64_t x = ckpt_hash64(b + i * MBLOCK, (size_t)n);
        for (int k = 0; k < 8; k++)
            h[8 * i + k] = (unsigned char)(x >> (8 * k));
    }
    r = ckpt_hash64(h, (size_t)(8 * np));
    free(h);
    return r;
}

/* Appends "piece OFF LEN HASH" lines for [off, off+len) of b, cut into
 * 4 MiB pieces from off. */
static int64_t put_pieces(char *text, const unsigned char *b, int64_t off,
                          int64_t len)
{
    int64_t o = 0;

    for (int64_t d = 0; d < len; d += MBLOCK) {
        int64_t n = len - d < MBLOCK ? len - d : MBLOCK;
        o += sprintf(text + o, "piece %lld %lld %016llx\n",
                     (long long)(off + d), (long long)n,
                     (unsigned long long)ckpt_hash64(b + off + d, (size_t)n));
    }
    return o;
}

/* A dataset line of a manifest. */
struct dline {
    char name[128];
    long long off, len;
    unsigned long long hash;
};

/* The dataset lines of PATH.manifest (at most 16) into d; their count. */
static int manifest_datasets(const char *path, struct dline *d)
{
    char mp[600], line[512];
    FILE *f;
    int n = 0;

    fmt(mp, sizeof mp, "%s.manifest", path);
    f = fopen(mp, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f) && n < 16)
        if (sscanf(line, "dataset %127s %lld %lld %llx", d[n].name,
                   &d[n].off, &d[n].len, &d[n].hash) == 4)
            n++;
    fclose(f);
    return n;
}

/* Rank 0 writes PATH.manifest for whatever PATH holds now, following the
 * format of ckpt.h: with the dataset ranges of the manifest there (nd
 * of them in d, in file order; none for a foreign file), pieces cut from
 * each range and from each range between, all hashed from the bytes now
 * in the file; each dataset line's checksum recomputed from them too,
 * unless stale (then the old one is kept).  Every rank returns after. */
static void forge_manifest_ds(const char *path, const struct dline *d, int nd,
                              int stale)
{
    MPI_Barrier(MPI_COMM_WORLD); /* no rank still reads the old one */
    if (g_rank == 0) {
        char mp[600], *text = malloc(1 << 20);
        int64_t len, off = 0, at = 0;
        unsigned char *b = read_all(path, &len);
        FILE *f;

        assert_non_null(text);
        off += sprintf(text + off, "mpitron-manifest 2\nfile x.h5\nsize %lld"
                       "\nblock %lld\n", (long long)len, (long long)MBLOCK);
        for (int i = 0; i < nd; i++) {
            off += put_pieces(text + off, b, at, d[i].off - at);
            off += put_pieces(text + off, b, d[i].off, d[i].len);
            at = d[i].off + d[i].len;
        }
        off += put_pieces(text + off, b, at, len - at);
        for (int i = 0; i < nd; i++)
            off += sprintf(text + off, "dataset %s %lld %lld %016llx\n",
                           d[i].name, d[i].off, d[i].len, stale ? d[i].hash
                           : (unsigned long long)tree_sum(b + d[i].off,
                                                          d[i].len));
        sprintf(text + off, "self %016llx\n",
                (unsigned long long)ckpt_hash64(text, (size_t)off));
        fmt(mp, sizeof mp, "%s.manifest", path);
        f = fopen(mp, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        free(b);
        free(text);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* A manifest for a file that is not a checkpoint (no dataset lines). */
static void forge_manifest(const char *path)
{
    forge_manifest_ds(path, NULL, 0, 0);
}

/* Rank 0 flips every bit of byte off of path. */
static void flip_byte(const char *path, int64_t off)
{
    MPI_Barrier(MPI_COMM_WORLD); /* no rank still reads the file */
    if (g_rank == 0) {
        unsigned char c;
        int fd = open(path, O_RDWR);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, &c, 1, off), 1);
        c ^= 0xff;
        assert_int_equal(pwrite(fd, &c, 1, off), 1);
        close(fd);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Serial HDF5, on every rank: file address and stored size of the data of
 * dataset name, and its xxh64 attribute (when sum is not NULL). */
static void data_range(const char *path, const char *name, int64_t *addr,
                       int64_t *size, uint64_t *sum)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d, a;

    assert_true(f >= 0);
    d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    *addr = (int64_t)H5Dget_offset(d);
    *size = (int64_t)H5Dget_storage_size(d);
    if (sum) {
        a = H5Aopen(d, "xxh64", H5P_DEFAULT);
        assert_true(a >= 0);
        assert_true(H5Aread(a, H5T_NATIVE_UINT64, sum) >= 0);
        H5Aclose(a);
    }
    H5Dclose(d);
    H5Fclose(f);
}

/* Output of a rank-0 printer into a malloc'ed string (other ranks: ""). */
struct capture {
    char *buf;
    size_t len;
    FILE *f;
};

static FILE *capture_begin(struct capture *c)
{
    memset(c, 0, sizeof *c);
    c->f = open_memstream(&c->buf, &c->len);
    assert_non_null(c->f);
    return c->f;
}

static char *capture_end(struct capture *c)
{
    fclose(c->f);
    return c->buf;
}

/* ---- tests ------------------------------------------------------------- */

static const struct spec g_specs[] = {
    {"/model/wte", 2, {7, 5}, 0, 0, 1, 0},                 /* rows -> cols */
    {"/model/h.0.attn.w", 2, {6, 10}, 1, 0, SPLIT_ALL, 0}, /* cols -> all */
    {"/model/ln_f.b", 1, {13}, SPLIT_ROOT, 0, 0, 1},       /* rank 0 -> rev */
    {"/optim/m/h.0.ln1.w", 1, {11}, 0, 0, SPLIT_ALL, 0},   /* 11 % np != 0 */
    {"/optim/v/tiny", 1, {2}, 0, 0, SPLIT_ROOT, 0},        /* a rank empty */
    {"/state/r.x", 3, {2, 3, 4}, 1, 0, 2, 1},              /* 3-D */
};
#define N_SPECS ((int)(sizeof g_specs / sizeof g_specs[0]))

static void test_roundtrip_resharded(void **state)
{
    char dir[512], path[512], err[1024] = "";
    struct ckpt_tensor t[N_SPECS];
    (void)state;

    subdir(dir, sizeof dir, "rt");
    assert_int_equal(save_specs(dir, 3, g_specs, N_SPECS, path, err), 0);
    h5_serial_check(path, g_specs, N_SPECS);
    for (int i = 0; i < N_SPECS; i++)
        tensor_make(&t[i], &g_specs[i], g_specs[i].rdim, g_specs[i].rrev,
                    -1.0f);
    if (ckpt_read_tensors(MPI_COMM_WORLD, path, t, N_SPECS, err, sizeof err))
        fail_msg("read: %s", err);
    for (int i = 0; i < N_SPECS; i++)
        tensor_check(&t[i], i + 1);
    tensors_free(t, N_SPECS);
}

/* A ZeRO shard: rank r's part of a flat split of its hyperslab (write
 * whole tensors as flat ranges, read sub-boxes as flat ranges, 1-D to
 * 3-D, ranks with nothing, ranges starting and ending inside rows). */
static void flat_make(struct ckpt_tensor *t, const char *name, int ndim,
                      const int64_t *gshape, const int64_t *start,
                      const int64_t *count, int part, int parts)
{
    int64_t box = 1;
    memset(t, 0, sizeof *t);
    t->name = name;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        t->gshape[d] = gshape[d];
        t->start[d] = start[d];
        t->count[d] = count[d];
        box *= count[d];
    }
    block(box, parts, part, &t->flat_off, &t->flat_len);
    if (t->flat_len == 0)
        memset(t->count, 0, sizeof t->count); /* holds nothing */
    t->data = malloc(sizeof(float) * (size_t)(t->flat_len + 1));
    assert_non_null(t->data);
}

static void test_flat_ranges(void **state)
{
    static const struct spec sp[] = {
        {"/model/a", 2, {7, 5}, 0, 0, 0, 0},
        {"/model/b", 3, {3, 4, 6}, 0, 0, 0, 0},
        {"/model/c", 1, {13}, 0, 0, 0, 0},
    };
    const int64_t zero[3] = {0, 0, 0};
    const int64_t sub_s[3][3] = {{2, 1, 0}, {1, 1, 2}, {3, 0, 0}};
    const int64_t sub_c[3][3] = {{4, 3, 0}, {2, 3, 3}, {9, 0, 0}};
    char dir[512], path[512], err[1024] = "";
    struct ckpt_tensor t[3];
    struct ckpt_meta m = meta_make(1, "n_layer = 1\n");
    (void)state;

    /* written as flat ranges of whole tensors, one per rank (ranges
     * start and end inside rows) */
    for (int i = 0; i < 3; i++) {
        flat_make(&t[i], sp[i].name, sp[i].ndim, sp[i].gshape, zero,
                  sp[i].gshape, g_rank, g_size);
        for (int64_t k = 0; k < t[i].flat_len; k++)
            t[i].data[k] = value(i + 1, gflat(&t[i], t[i].flat_off + k));
    }
    subdir(dir, sizeof dir, "flat");
    if (ckpt_save(MPI_COMM_WORLD, dir, &m, t, 3, path, sizeof path, err,
                  sizeof err))
        fail_msg("save: %s", err);
    tensors_free(t, 3);
    h5_serial_check(path, sp, 3);
    /* read back: flat ranges of sub-boxes, split in g_size + 1 parts of
     * which this rank takes part g_rank + 1 (rank 0 also part 0) */
    for (int pass = 0; pass < 2; pass++) {
        int part = pass == 0 ? g_rank + 1 : 0;
        for (int i = 0; i < 3; i++)
            flat_make(&t[i], sp[i].name, sp[i].ndim, sp[i].gshape,
                      sub_s[i], sub_c[i], part, g_size + 1);
        if (pass == 1 && g_rank != 0)
            for (int i = 0; i < 3; i++) {
                memset(t[i].count, 0, sizeof t[i].count);
                t[i].flat_len = 0;
            }
        if (ckpt_read_tensors(MPI_COMM_WORLD, path, t, 3, err, sizeof err))
            fail_msg("read: %s", err);
        for (int i = 0; i < 3; i++)
            for (int64_t k = 0; k < t[i].flat_len; k++)
                if (t[i].data[k] != value(i + 1, gflat(&t[i],
                                                         t[i].flat_off + k)))
                    fail_msg("rank %d %s flat %lld: %g", g_rank, t[i].name,
                             (long long)(t[i].flat_off + k), t[i].data[k]);
        tensors_free(t, 3);
    }
}

static void test_meta_roundtrip(void **state)
{
    char dir[512], path[512], err[1024] = "", cfg[6000];
    struct ckpt_meta m, r;
    size_t off = 0;
    (void)state;

    for (int i = 0; off + 40 < 5000; i++)
        off += (size_t)snprintf(cfg + off, sizeof cfg - off,
                                "key_%03d = value %d ; cafe\n", i, i * 7);
    m = meta_make(42, cfg);
    m.tokens_seen = 123456789012345LL;
    m.data_cursor = 43;
    m.rng_seed = 0xfedcba9876543210ULL;
    subdir(dir, sizeof dir, "meta");
    assert_int_equal(ckpt_save(MPI_COMM_WORLD, dir, &m, NULL, 0, path,
                               sizeof path, err, sizeof err), 0);
    memset(&r, 0, sizeof r);
    if (ckpt_read_meta(MPI_COMM_WORLD, path, &r, err, sizeof err))
        fail_msg("read_meta: %s", err);
    assert_int_equal(r.step, 42);
    assert_int_equal(r.tokens_seen, 123456789012345LL);
    assert_int_equal(r.data_cursor, 43);
    assert_true(r.rng_seed == 0xfedcba9876543210ULL);
    assert_string_equal(r.layout, m.layout);
    assert_non_null(r.config_text);
    assert_true(strlen(cfg) > 4900);
    assert_string_equal(r.config_text, cfg);
    free(r.config_text);
}

/* h5py returns variable-length string attributes as str. */
static void test_string_attrs_variable(void **state)
{
    char dir[512], path[512], err[1024] = "";
    struct ckpt_meta m = meta_make(1, "a = 1\n");
    (void)state;

    subdir(dir, sizeof dir, "vl");
    assert_int_equal(ckpt_save(MPI_COMM_WORLD, dir, &m, NULL, 0, path,
                               sizeof path, err, sizeof err), 0);
    if (g_rank == 0) {
        const char *names[] = {"format", "config", "layout"};
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        assert_true(f >= 0);
        for (int i = 0; i < 3; i++) {
            hid_t a = H5Aopen(f, names[i], H5P_DEFAULT), t = H5Aget_type(a);
            assert_true(H5Tis_variable_str(t) > 0);
            H5Tclose(t);
            H5Aclose(a);
        }
        H5Fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_shape_mismatch(void **state)
{
    static const struct spec s[] = {
        {"/model/a", 2, {4, 3}, 0, 0, 0, 0},
        {"/model/wte", 2, {256, 128}, 0, 0, 0, 0},
    };
    struct spec rs[2] = {s[0], s[1]};
    char dir[512], path[512], err[1024] = "";
    struct ckpt_tensor t[2];
    (void)state;

    subdir(dir, sizeof dir, "shape");
    assert_int_equal(save_specs(dir, 1, s, 2, path, err), 0);
    rs[1].gshape[1] = 64;
    for (int i = 0; i < 2; i++)
        tensor_make(&t[i], &rs[i], 0, 0, -7.0f);
    assert_all_failed(ckpt_read_tensors(MPI_COMM_WORLD, path, t, 2, err,
                                        sizeof err));
    assert_contains(err, "/model/wte");
    assert_contains(err, "(256,128)");
    assert_contains(err, "(256,64)");
    /* checked before any data was read: /model/a is untouched */
    for (int64_t k = 0; k < t[0].count[0] * t[0].count[1]; k++)
        assert_true(t[0].data[k] == -7.0f);
    tensors_free(t, 2);

    rs[0].ndim = 1; /* rank differs: (4,3) in the file, (12) here */
    rs[0].gshape[0] = 12;
    tensor_make(&t[0], &rs[0], 0, 0, 0.0f);
    assert_all_failed(ckpt_read_tensors(MPI_COMM_WORLD, path, t, 1, err,
                                        sizeof err));
    assert_contains(err, "/model/a");
    assert_contains(err, "(4,3)");
    assert_contains(err, "(12)");
    tensors_free(t, 1);
}

static void test_missing_dataset(void **state)
{
    static const struct spec s[] = {{"/model/a", 1, {5}, 0, 0, 0, 0}};
    static const char *missing[] = {"/model/nothere", "/nogroup/x.y"};
    char dir[512], path[512], err[1024] = "";
    (void)state;

    subdir(dir, sizeof dir, "missing");
    assert_int_equal(save_specs(dir, 1, s, 1, path, err), 0);
    for (int i = 0; i < 2; i++) {
        struct spec ms = {missing[i], 1, {5}, 0, 0, 0, 0};
        struct ckpt_tensor t[2];
        tensor_make(&t[0], &s[0], 0, 0, 0.0f);
        tensor_make(&t[1], &ms, 0, 0, 0.0f);
        assert_all_failed(ckpt_read_tensors(MPI_COMM_WORLD, path, t, 2, err,
                                            sizeof err));
        assert_contains(err, missing[i]);
        assert_contains(err, "not found");
        tensors_free(t, 2);
    }
}

static void test_foreign_files(void **state)
{
    char dir[512], p[600], err[1024] = "";
    struct ckpt_meta m;
    (void)state;

    subdir(dir, sizeof dir, "foreign");
    fmt(p, sizeof p, "%s/notes.txt", dir);
    if (g_rank == 0)
        write_text(p, "this is not HDF5\n");
    MPI_Barrier(MPI_COMM_WORLD);
    /* no manifest: refused before anything else looks at it */
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, p);
    assert_contains(err, "no manifest");
    assert_null(m.config_text);
    if (g_rank == 0) {
        assert_int_equal(ckpt_print_info(p, stdout, err, sizeof err), -1);
        assert_contains(err, "no manifest");
    }
    /* a correct manifest for a foreign file: the format check refuses it */
    forge_manifest(p);
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, p, NULL, err,
                                         sizeof err), 0);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, p);
    assert_contains(err, "not an HDF5 file");
    assert_all_failed(ckpt_verify(MPI_COMM_WORLD, p, NULL, err, sizeof err));
    assert_contains(err, "not an HDF5 file");

    fmt(p, sizeof p, "%s/other.h5", dir);
    h5_foreign(p, NULL, 0, 0);
    forge_manifest(p);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, "not an mpitron checkpoint");
    if (g_rank == 0) {
        assert_int_equal(ckpt_print_info(p, stdout, err, sizeof err), -1);
        assert_contains(err, "not an mpitron checkpoint");
    }

    fmt(p, sizeof p, "%s/v7.h5", dir);
    h5_foreign(p, CKPT_FORMAT, 7, 1);
    forge_manifest(p);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, "has checkpoint version 7; this build reads "
                         "versions: " CKPT_VERSIONS_READ);

    fmt(p, sizeof p, "%s/absent.h5", dir);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, p);
    assert_contains(err, strerror(ENOENT));
}

static void test_incomplete_rejected(void **state)
{
    static const struct spec s = {"/model/w", 1, {4}, 0, 0, 0, 0};
    char dir[512], p[600], err[1024] = "";
    struct ckpt_tensor t;
    struct ckpt_meta m;
    (void)state;

    subdir(dir, sizeof dir, "incomplete");
    fmt(p, sizeof p, "%s/step_00000001.h5", dir);
    h5_foreign(p, CKPT_FORMAT, CKPT_VERSION, 0);
    forge_manifest(p);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, "incomplete");
    tensor_make(&t, &s, 0, 0, 0.0f);
    assert_all_failed(ckpt_read_tensors(MPI_COMM_WORLD, p, &t, 1, err,
                                        sizeof err));
    assert_contains(err, "incomplete");
    free(t.data);
}

/* No *.partial / latest.tmp left in dir. */
static void assert_no_leftovers(const char *dir)
{
    struct dirent *de;
    DIR *d = opendir(dir);

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n >= 8 && strcmp(de->d_name + n - 8, ".partial") == 0)
            fail_msg("leftover %s/%s", dir, de->d_name);
        if (strcmp(de->d_name, "latest.tmp") == 0)
            fail_msg("leftover %s/latest.tmp", dir);
        if (strstr(de->d_name, ".manifest.tmp"))
            fail_msg("leftover %s/%s", dir, de->d_name);
    }
    closedir(d);
}

static void test_latest_after_two_saves(void **state)
{
    static const struct spec s[] = {{"/model/a", 1, {5}, 0, 0, 0, 0}};
    char dir[512], p1[512], p2[512], exp[600], res[512], err[1024] = "";
    struct ckpt_meta r;
    (void)state;

    subdir(dir, sizeof dir, "two");
    assert_int_equal(save_specs(dir, 1, s, 1, p1, err), 0);
    assert_int_equal(save_specs(dir, 2, s, 1, p2, err), 0);
    fmt(exp, sizeof exp, "%s/step_00000002.h5", dir);
    assert_string_equal(p2, exp);
    assert_true(exists(p1) && exists(p2));
    fmt(exp, sizeof exp, "%s/latest", dir);
    assert_string_equal(slurp(exp), "step_00000002.h5\n");
    assert_no_leftovers(dir);
    assert_int_equal(ckpt_resolve(dir, res, sizeof res, err, sizeof err), 0);
    assert_string_equal(res, p2);
    assert_int_equal(ckpt_read_meta(MPI_COMM_WORLD, res, &r, err, sizeof err),
                     0);
    assert_int_equal(r.step, 2);
    free(r.config_text);
}

static void test_failed_saves(void **state)
{
    static const struct spec s[] = {{"/model/a", 1, {5}, 0, 0, 0, 0}};
    struct spec dup[2] = {s[0], s[0]};
    char dir[512], p[600], bad[600], latest[600], err[1024] = "";
    (void)state;

    /* the parent of the checkpoint directory is a regular file */
    subdir(dir, sizeof dir, "fail");
    fmt(p, sizeof p, "%s/afile", dir);
    if (g_rank == 0)
        write_text(p, "x\n");
    MPI_Barrier(MPI_COMM_WORLD);
    fmt(bad, sizeof bad, "%s/ckpt", p);
    assert_all_failed(save_specs(bad, 1, s, 1, p, err));
    assert_contains(err, "afile");

    /* a good save, then one whose rename fails (the target is a non-empty
     * directory), then one whose HDF5 dataset creation fails */
    assert_int_equal(save_specs(dir, 1, s, 1, p, err), 0);
    fmt(bad, sizeof bad, "%s/step_00000002.h5", dir);
    fmt(p, sizeof p, "%s/keep", bad);
    if (g_rank == 0) {
        assert_int_equal(mkdir(bad, 0777), 0);
        write_text(p, "x\n");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    assert_all_failed(save_specs(dir, 2, s, 1, p, err));
    assert_contains(err, "rename");
    assert_contains(err, "step_00000002.h5");
    fmt(p, sizeof p, "%s/step_00000002.h5.manifest", dir);
    assert_false(exists(p));
    fmt(latest, sizeof latest, "%s/latest", dir);
    assert_string_equal(slurp(latest), "step_00000001.h5\n");
    assert_no_leftovers(dir);

    assert_all_failed(save_specs(dir, 3, dup, 2, p, err));
    assert_contains(err, "H5Dcreate2");
    assert_contains(err, "/model/a");
    assert_string_equal(slurp(latest), "step_00000001.h5\n");
    assert_no_leftovers(dir);
    fmt(p, sizeof p, "%s/step_00000003.h5", dir);
    assert_false(exists(p));
    fmt(p, sizeof p, "%s/step_00000003.h5.manifest", dir);
    assert_false(exists(p));
}

static void test_list_mismatch(void **state)
{
    struct spec s = {"/model/a", 1, {6}, 0, 0, 0, 0};
    char dir[512], path[512], err[1024] = "";
    struct ckpt_tensor t;
    struct ckpt_meta m = meta_make(1, "");
    (void)state;

    if (g_size < 2)
        return; /* nothing can differ */
    subdir(dir, sizeof dir, "mismatch");
    if (g_rank == 1)
        s.gshape[0] = 7;
    tensor_make(&t, &s, 0, 0, 0.0f);
    assert_all_failed(ckpt_save(MPI_COMM_WORLD, dir, &m, &t, 1, path,
                                sizeof path, err, sizeof err));
    assert_contains(err, "differ across ranks");
    free(t.data);
}

static void test_resolve(void **state)
{
    static const struct spec s[] = {{"/model/a", 1, {5}, 0, 0, 0, 0}};
    static const char *files[] = {"step_00000003.h5", "step_00000010.h5",
                                  "step_9.h5", "step_00000020.h5.partial",
                                  "step_00000030.h5.tmp", "latest.tmp"};
    char dir[512], run[600], ck[700], path[512], exp[800], res[512];
    char err[1024] = "";
    (void)state;

    subdir(dir, sizeof dir, "resolve");
    fmt(run, sizeof run, "%s/run", dir);
    fmt(ck, sizeof ck, "%s/ckpt", run);
    assert_int_equal(save_specs(ck, 5, s, 1, path, err), 0);
    fmt(exp, sizeof exp, "%s/step_00000005.h5", ck);
    assert_int_equal(ckpt_resolve(run, res, sizeof res, err, sizeof err), 0);
    assert_string_equal(res, exp);
    assert_int_equal(ckpt_resolve(ck, res, sizeof res, err, sizeof err), 0);
    assert_string_equal(res, exp);
    assert_int_equal(ckpt_resolve(exp, res, sizeof res, err, sizeof err), 0);
    assert_string_equal(res, exp);

    /* fallback: no latest, then a stale latest; numeric order, not text */
    fmt(ck, sizeof ck, "%s/fallback", dir);
    if (g_rank == 0) {
        assert_int_equal(mkdir(ck, 0777), 0);
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            fmt(exp, sizeof exp, "%s/%s", ck, files[i]);
            write_text(exp, "");
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    fmt(exp, sizeof exp, "%s/step_00000010.h5", ck);
    assert_int_equal(ckpt_resolve(ck, res, sizeof res, err, sizeof err), 0);
    assert_string_equal(res, exp);
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) {
        fmt(path, sizeof path, "%s/latest", ck);
        write_text(path, "step_00000040.h5\n");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(ckpt_resolve(ck, res, sizeof res, err, sizeof err), 0);
    assert_string_equal(res, exp);
    /* a latest that leaves the directory (absolute, or through '..') is
     * not followed, even to a file that exists: another run's */
    static const char *const away[] = {"%s/run/ckpt/step_00000005.h5\n",
                                       "../run/ckpt/step_00000005.h5\n"};
    for (int k = 0; k < 2; k++) {
        if (g_rank == 0) {
            char text[700];
            fmt(text, sizeof text, away[k], dir);
            fmt(path, sizeof path, "%s/latest", ck);
            write_text(path, text);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        assert_int_equal(ckpt_resolve(ck, res, sizeof res, err, sizeof err),
                         0);
        assert_string_equal(res, exp);
        MPI_Barrier(MPI_COMM_WORLD);
    }

    fmt(ck, sizeof ck, "%s/empty", dir);
    if (g_rank == 0)
        assert_int_equal(mkdir(ck, 0777), 0);
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(ckpt_resolve(ck, res, sizeof res, err, sizeof err), -1);
    assert_contains(err, ck);
    fmt(ck, sizeof ck, "%s/nonexistent", dir);
    assert_int_equal(ckpt_resolve(ck, res, sizeof res, err, sizeof err), -1);
    assert_contains(err, ck);
}

static void test_print_info(void **state)
{
    static const struct spec s[] = {
        {"/model/wte", 2, {256, 128}, 0, 0, 0, 0},
        {"/model/h.0.b", 1, {10}, SPLIT_ROOT, 0, 0, 0},
        {"/optim/m/wte", 2, {256, 128}, 1, 0, 0, 0},
    };
    char dir[512], path[512], err[1024] = "", *buf = NULL, *line;
    size_t len = 0;
    FILE *out;
    (void)state;

    subdir(dir, sizeof dir, "info");
    assert_int_equal(save_specs(dir, 7, s, 3, path, err), 0);
    if (g_rank == 0) {
        out = open_memstream(&buf, &len);
        assert_non_null(out);
        if (ckpt_print_info(path, out, err, sizeof err))
            fail_msg("print_info: %s", err);
        fclose(out);
        assert_contains(buf, "n_layer = 1"); /* the config text */
        assert_contains(buf, "/model/wte");
        assert_contains(buf, "(256,128)");
        assert_contains(buf, "/model/h.0.b");
        assert_contains(buf, "(10)");
        assert_contains(buf, "/optim/m/wte");
        assert_contains(buf, "7000"); /* tokens_seen */
        assert_contains(buf, "contiguous xxh64 ");
        assert_null(strstr(buf, "NO CHECKSUM"));
        assert_contains(buf, "manifest");
        assert_contains(buf, "version 3");
        line = strstr(buf, "parameters");
        assert_non_null(line);
        assert_contains(line, "32778"); /* 256*128 + 10 */
        free(buf);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* ---- format version 3: checksums and the manifest ---------------------- */

/* Published XXH64 (seed 0) vectors; the 39- and 43-byte ones run the
 * 32-byte stripe loop, the 100-byte one the tail of 8/4/1-byte steps. */
static void test_hash64_vectors(void **state)
{
    unsigned char hundred[100];
    (void)state;

    for (int i = 0; i < 100; i++)
        hundred[i] = (unsigned char)i;
    assert_true(ckpt_hash64("", 0) == 0xEF46DB3751D8E999ULL);
    assert_true(ckpt_hash64("a", 1) == 0xD24EC4F1A98C6E5BULL);
    assert_true(ckpt_hash64("abc", 3) == 0x44BC2CF5AD770999ULL);
    assert_true(ckpt_hash64("Nobody inspects the spammish repetition", 39) ==
                0xFBCEA83C8A378BF1ULL);
    assert_true(ckpt_hash64("The quick brown fox jumps over the lazy dog",
                            43) == 0x0B242D361FDA71BCULL);
    assert_true(ckpt_hash64(hundred, 100) == 0x6AC1E58032166597ULL);
}

/* Two 4 MiB tensors (the file spans three 4 MiB blocks), one small one
 * split unevenly, one a rank holds none of. */
static const struct spec g_big[] = {
    {"/model/a", 2, {1024, 1024}, 0, 0, 0, 0},
    {"/model/b", 2, {1024, 1024}, 1, 0, 0, 0},
    {"/optim/m/c", 1, {11}, 0, 0, 0, 0},
    {"/optim/v/d", 2, {3, 5}, SPLIT_ROOT, 0, 0, 0},
};
#define N_BIG ((int)(sizeof g_big / sizeof g_big[0]))

/* The bytes dataset id of spec s holds: float32 little-endian, row-major
 * (malloc'ed, *len bytes). */
static unsigned char *expected_bytes(const struct spec *s, int id,
                                     int64_t *len)
{
    int64_t n = 1;
    unsigned char *b;

    for (int d = 0; d < s->ndim; d++)
        n *= s->gshape[d];
    *len = 4 * n;
    b = malloc((size_t)(4 * n + 1));
    assert_non_null(b);
    for (int64_t g = 0; g < n; g++) {
        float v = value(id, g);
        uint32_t u;
        memcpy(&u, &v, 4);
        for (int k = 0; k < 4; k++)
            b[4 * g + k] = (unsigned char)(u >> (8 * k));
    }
    return b;
}

/* Contiguous, unfiltered, and an xxh64 that is the checksum of the values
 * (1, 2, 5 and 6 pieces: the checksum's short form, its 32-byte stripes
 * and their tail), also for a tensor without elements. */
static void test_layout_checksums(void **state)
{
    static const struct spec s[] = {
        {"/model/small", 2, {7, 5}, 1, 0, 0, 0},
        {"/model/two", 2, {1100, 1000}, 0, 0, 0, 0},     /* 4.4 MB */
        {"/model/five", 2, {1100, 4000}, 1, 0, 0, 0},    /* 17.6 MB */
        {"/model/six", 1, {5500000}, SPLIT_ROOT, 0, 0, 0}, /* 22 MB */
        {"/state/none", 1, {0}, 0, 0, 0, 0},
    };
    char dir[512], path[512], err[1024] = "";
    struct ckpt_tensor t[5];
    (void)state;

    subdir(dir, sizeof dir, "layout");
    if (save_specs(dir, 1, s, 5, path, err))
        fail_msg("save: %s", err);
    h5_serial_check(path, s, 4);
    if (g_rank == 0) {
        int64_t flen;
        unsigned char *file = read_all(path, &flen);
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        for (int i = 0; i < 5; i++) {
            hid_t d = H5Dopen2(f, s[i].name, H5P_DEFAULT);
            hid_t p = H5Dget_create_plist(d);
            int64_t off, len, elen;
            uint64_t sum;
            unsigned char *e = expected_bytes(&s[i], i + 1, &elen);
            assert_int_equal(H5Pget_layout(p), H5D_CONTIGUOUS);
            assert_int_equal(H5Pget_nfilters(p), 0);
            H5Pclose(p);
            H5Dclose(d);
            data_range(path, s[i].name, &off, &len, &sum);
            assert_int_equal(len, elen);
            if (len > 0)
                assert_memory_equal(file + off, e, (size_t)len);
            assert_true(sum == tree_sum(e, elen));
            free(e);
        }
        H5Fclose(f);
        free(file);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    for (int i = 0; i < 5; i++)
        tensor_make(&t[i], &s[i], 0, 1, -1.0f);
    if (ckpt_read_tensors(MPI_COMM_WORLD, path, t, 5, err, sizeof err))
        fail_msg("read: %s", err);
    for (int i = 0; i < 5; i++)
        tensor_check(&t[i], i + 1);
    tensors_free(t, 5);
}

/* The manifest, parsed here: size, pieces tiling the file (hashes
 * recomputed here from the bytes), each dataset line the range serial
 * HDF5 reports, cut into its own pieces, with the checksum of its bytes
 * and of its xxh64 attribute, and the self hash. */
static void test_manifest_roundtrip(void **state)
{
    char dir[512], path[512], mp[600], err[1024] = "";
    (void)state;

    subdir(dir, sizeof dir, "manifest");
    assert_int_equal(save_specs(dir, 4, g_big, N_BIG, path, err), 0);
    h5_serial_check(path, g_big, N_BIG);
    if (g_rank == 0) {
        int64_t len, mlen, size = -1, block = -1, at = 0, nds = 0;
        int64_t starts[4096], ns = 0;
        unsigned char *b = read_all(path, &len);
        char *m, *line, *save = NULL, *self;
        fmt(mp, sizeof mp, "%s.manifest", path);
        m = (char *)read_all(mp, &mlen);
        m[mlen] = '\0';
        assert_contains(m, "mpitron-manifest 2\nfile step_00000004.h5\n");
        self = strstr(m, "self ");
        assert_non_null(self);
        assert_true(strtoull(self + 5, NULL, 16) ==
                    ckpt_hash64(m, (size_t)(self - m)));
        assert_int_equal(strlen(self), 22); /* last line */
        for (line = strtok_r(m, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            long long o, l;
            unsigned long long h;
            char name[64];
            if (sscanf(line, "size %lld", &o) == 1)
                size = o;
            else if (sscanf(line, "block %lld", &o) == 1)
                block = o;
            else if (sscanf(line, "piece %lld %lld %llx", &o, &l, &h) == 3) {
                assert_int_equal(o, at); /* in order, no gap */
                assert_true(l > 0 && l <= MBLOCK);
                assert_true(h == ckpt_hash64(b + o, (size_t)l));
                assert_true(ns < 4096);
                starts[ns++] = o;
                at = o + l;
            } else if (sscanf(line, "dataset %63s %lld %lld %llx", name, &o,
                              &l, &h) == 4) {
                int64_t a, sz, k = 0;
                uint64_t sum;
                data_range(path, name, &a, &sz, &sum);
                assert_int_equal(o, a);
                assert_int_equal(l, sz);
                assert_true(h == tree_sum(b + o, l));
                assert_true(h == sum);
                while (k < ns && starts[k] < o)
                    k++;
                for (int64_t c = o; c < o + l; c += MBLOCK, k++)
                    assert_true(k < ns && starts[k] == c);
                assert_true(k == ns || starts[k] == o + l);
                nds++;
            }
        }
        assert_int_equal(size, len);
        assert_int_equal(at, len);
        assert_int_equal(block, MBLOCK);
        assert_int_equal(nds, N_BIG);
        free(m);
        free(b);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                         sizeof err), 0);
}

/* Rank 0 rewrites PATH.manifest with its first `from` replaced by `to`
 * (from "" : to appended), then the self line recomputed; back up the
 * text first with keep (restored by passing it as to with from NULL). */
static void edit_manifest(const char *path, const char *from, const char *to,
                          char *keep)
{
    MPI_Barrier(MPI_COMM_WORLD); /* no rank still reads the old one */
    if (g_rank == 0) {
        char mp[600], *m, *body = malloc(1 << 20), *at, *self;
        int64_t mlen, n;
        FILE *f;
        fmt(mp, sizeof mp, "%s.manifest", path);
        m = (char *)read_all(mp, &mlen);
        m[mlen] = '\0';
        if (keep)
            strcpy(keep, m);
        if (!from) {
            strcpy(body, to);
        } else {
            self = strstr(m, "self ");
            assert_non_null(self);
            *self = '\0';
            at = from[0] ? strstr(m, from) : m + strlen(m);
            assert_non_null(at);
            n = at - m;
            memcpy(body, m, (size_t)n);
            sprintf(body + n, "%s%s", to, at + strlen(from));
            n = (int64_t)strlen(body);
            sprintf(body + n, "self %016llx\n",
                    (unsigned long long)ckpt_hash64(body, (size_t)n));
        }
        f = fopen(mp, "w");
        assert_non_null(f);
        fputs(body, f);
        fclose(f);
        free(m);
        free(body);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* A manifest is untrusted input: with a correct self hash, a wrong
 * version, pieces that leave a gap, a dataset named twice, or a dataset
 * range not cut into its own pieces are each refused, naming the
 * problem. */
static void test_manifest_malformed(void **state)
{
    char dir[512], path[512], line[256], bad[256], err[1024] = "";
    char *orig = malloc(1 << 20);
    struct dline d[16];
    int64_t a, sz;
    (void)state;

    assert_non_null(orig);
    subdir(dir, sizeof dir, "malformed");
    assert_int_equal(save_specs(dir, 1, g_big, N_BIG, path, err), 0);
    assert_int_equal(manifest_datasets(path, d), N_BIG);
    data_range(path, "/model/a", &a, &sz, NULL);
    fmt(line, sizeof line, "dataset /model/a %lld %lld ", (long long)a,
        (long long)sz);

    edit_manifest(path, "mpitron-manifest 2\n", "mpitron-manifest 1\n", orig);
    assert_all_failed(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                          sizeof err));
    assert_contains(err, "reads manifest version 2");

    edit_manifest(path, NULL, orig, NULL);
    fmt(bad, sizeof bad, "piece %lld ", (long long)a);
    edit_manifest(path, bad, "piece 1 ", NULL); /* a gap before it */
    assert_all_failed(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                          sizeof err));
    assert_contains(err, "malformed");

    edit_manifest(path, NULL, orig, NULL);
    fmt(bad, sizeof bad, "dataset /model/a %lld %lld %016llx\n",
        (long long)a, (long long)sz, d[0].hash);
    edit_manifest(path, "", bad, NULL);
    assert_all_failed(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                          sizeof err));
    assert_contains(err, "names dataset /model/a twice");

    edit_manifest(path, NULL, orig, NULL);
    fmt(bad, sizeof bad, "dataset /model/a %lld %lld ", (long long)a + 4,
        (long long)sz - 4);
    edit_manifest(path, line, bad, NULL);
    assert_all_failed(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                          sizeof err));
    assert_contains(err, "/model/a");
    assert_contains(err, "not cut into pieces");

    edit_manifest(path, NULL, orig, NULL);
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                         sizeof err), 0);
    free(orig);
}

/* A byte flipped in /model/b's data: the manifest check names the range
 * and /model/b, every reader refuses the file, verify says so. */
static void test_damage_named(void **state)
{
    char dir[512], path[512], good[512], res[512], want[160];
    char err[1024] = "";
    struct ckpt_tensor t[N_BIG];
    struct capture c;
    int64_t a, sz;
    (void)state;

    subdir(dir, sizeof dir, "damage");
    assert_int_equal(save_specs(dir, 1, g_big, N_BIG, good, err), 0);
    assert_int_equal(save_specs(dir, 2, g_big, N_BIG, path, err), 0);
    data_range(path, "/model/b", &a, &sz, NULL);
    flip_byte(path, a + sz / 2);
    /* /model/b is one 4 MiB piece of its own: exactly its bytes */
    fmt(want, sizeof want, "bytes [%lld, %lld) are damaged: /model/b",
        (long long)a, (long long)(a + sz));

    assert_all_failed(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                          sizeof err));
    print_message("      %s\n", err);
    assert_contains(err, want);
    assert_null(strstr(err, "metadata"));
    for (int i = 0; i < N_BIG; i++)
        tensor_make(&t[i], &g_big[i], 0, 0, -1.0f);
    assert_all_failed(ckpt_read_tensors(MPI_COMM_WORLD, path, t, N_BIG, err,
                                        sizeof err));
    assert_contains(err, want);
    assert_null(strstr(err, "H5")); /* refused before HDF5 saw it */
    tensors_free(t, N_BIG);

    assert_all_failed(ckpt_verify(MPI_COMM_WORLD, path,
                                  capture_begin(&c), err, sizeof err));
    capture_end(&c);
    if (g_rank == 0) {
        assert_contains(c.buf, want);
        assert_contains(c.buf, "/model/b");
        assert_contains(c.buf, "BAD  manifest");
        assert_contains(c.buf, "DAMAGED");
    }
    free(c.buf);

    /* resume=auto falls back to step 1 and says why it skipped step 2 */
    assert_int_equal(ckpt_find_good(MPI_COMM_WORLD, dir, res, sizeof res,
                                    capture_begin(&c), err, sizeof err), 0);
    capture_end(&c);
    assert_string_equal(res, good);
    if (g_rank == 0) {
        assert_contains(c.buf, "skipping");
        assert_contains(c.buf, path);
        assert_contains(c.buf, want);
    }
    free(c.buf);
}

/* The superblock damaged: the error comes from the manifest check, not
 * from HDF5 (which never opens the file). */
static void test_superblock_damage(void **state)
{
    static const struct spec s[] = {{"/model/a", 1, {5}, 0, 0, 0, 0}};
    char dir[512], path[512], err[1024] = "";
    struct ckpt_meta m;
    (void)state;

    subdir(dir, sizeof dir, "super");
    assert_int_equal(save_specs(dir, 1, s, 1, path, err), 0);
    flip_byte(path, 1); /* inside the "\211HDF\r\n\032\n" signature */
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, path, &m, err,
                                     sizeof err));
    assert_contains(err, "fails its manifest check");
    assert_contains(err, "bytes [0, ");
    assert_null(strstr(err, "H5F"));
    assert_null(strstr(err, "not an HDF5 file"));
    if (g_rank == 0) {
        assert_int_equal(ckpt_print_info(path, stdout, err, sizeof err), -1);
        assert_contains(err, "fails its manifest check");
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Truncated file and missing manifest. */
static void test_truncated_and_missing(void **state)
{
    static const struct spec s[] = {{"/model/a", 2, {64, 64}, 0, 0, 0, 0}};
    char dir[512], path[512], mp[600], want[160], err[1024] = "";
    struct ckpt_meta m;
    int64_t len;
    (void)state;

    subdir(dir, sizeof dir, "trunc");
    assert_int_equal(save_specs(dir, 1, s, 1, path, err), 0);
    len = file_size(path);
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0)
        assert_int_equal(truncate(path, 123), 0);
    MPI_Barrier(MPI_COMM_WORLD);
    fmt(want, sizeof want, "size 123 but the manifest says %lld",
        (long long)len);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, path, &m, err,
                                     sizeof err));
    assert_contains(err, want);
    assert_all_failed(ckpt_verify(MPI_COMM_WORLD, path, NULL, err,
                                  sizeof err));
    assert_contains(err, want);

    assert_int_equal(save_specs(dir, 2, s, 1, path, err), 0);
    fmt(mp, sizeof mp, "%s.manifest", path);
    if (g_rank == 0)
        assert_int_equal(unlink(mp), 0);
    MPI_Barrier(MPI_COMM_WORLD);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, path, &m, err,
                                     sizeof err));
    assert_contains(err, "no manifest");
    assert_contains(err, "not a valid checkpoint");
}

/* Damage that the manifest cannot see (the manifest re-forged after the
 * flip): the dataset's xxh64 catches it on every read, naming it; with
 * the old dataset checksums kept, the manifest fails its own check. */
static void test_checksum_detects(void **state)
{
    char dir[512], path[512], err[1024] = "";
    struct ckpt_tensor t[N_BIG];
    struct capture c;
    struct dline d[16];
    int64_t a, sz;
    int nd;
    (void)state;

    subdir(dir, sizeof dir, "xxh64");
    assert_int_equal(save_specs(dir, 1, g_big, N_BIG, path, err), 0);
    nd = g_rank == 0 ? manifest_datasets(path, d) : 0;
    data_range(path, "/model/b", &a, &sz, NULL);
    flip_byte(path, a + 1000);
    forge_manifest_ds(path, d, nd, 0);
    if (ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err, sizeof err))
        fail_msg("check: %s", err);
    for (int i = 0; i < N_BIG; i++)
        tensor_make(&t[i], &g_big[i], g_big[i].rdim, 0, -1.0f);
    assert_all_failed(ckpt_read_tensors(MPI_COMM_WORLD, path, t, N_BIG, err,
                                        sizeof err));
    print_message("      %s\n", err);
    assert_contains(err, "/model/b");
    assert_contains(err, "checksum");
    for (int64_t k = 0; k < local_count(&t[0]); k++) /* none was read */
        assert_true(t[0].data[k] == -1.0f);
    tensors_free(t, N_BIG);
    assert_all_failed(ckpt_verify(MPI_COMM_WORLD, path, capture_begin(&c),
                                  err, sizeof err));
    capture_end(&c);
    assert_contains(err, "/model/b");
    assert_null(strstr(err, "/model/a"));
    if (g_rank == 0) {
        print_message("%s", c.buf);
        assert_contains(c.buf, "OK   manifest");
        assert_contains(c.buf, "OK   /model/a");
        assert_contains(c.buf, "BAD  /model/b");
        assert_contains(c.buf, "OK   /optim/v/d");
    }
    free(c.buf);

    forge_manifest_ds(path, d, nd, 1);
    assert_all_failed(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                          sizeof err));
    assert_contains(err, "/model/b");
    assert_contains(err, "edited or written wrongly");
}

/* A file that passed a reader's check is not hashed again while unchanged
 * (ckpt.h); a change to it, even of one byte with the size kept, is seen
 * by the next reader, and undoing it makes the file good again. */
static void test_reread_after_change(void **state)
{
    char dir[512], path[512], err[1024] = "";
    struct ckpt_tensor t[N_SPECS];
    struct ckpt_meta m;
    int64_t a, sz;
    (void)state;

    subdir(dir, sizeof dir, "reread");
    assert_int_equal(save_specs(dir, 1, g_specs, N_SPECS, path, err), 0);
    /* older than a few timestamp ticks: the pass is remembered */
    nanosleep(&(struct timespec){0, 300000000L}, NULL);
    for (int i = 0; i < N_SPECS; i++)
        tensor_make(&t[i], &g_specs[i], g_specs[i].rdim, 0, -1.0f);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(ckpt_read_meta(MPI_COMM_WORLD, path, &m, err,
                                        sizeof err), 0);
        free(m.config_text);
        if (ckpt_read_tensors(MPI_COMM_WORLD, path, t, N_SPECS, err,
                              sizeof err))
            fail_msg("read: %s", err);
    }
    data_range(path, "/model/h.0.attn.w", &a, &sz, NULL);
    flip_byte(path, a + 5);
    assert_all_failed(ckpt_read_tensors(MPI_COMM_WORLD, path, t, N_SPECS,
                                        err, sizeof err));
    assert_contains(err, "fails its manifest check");
    assert_contains(err, "/model/h.0.attn.w");
    flip_byte(path, a + 5);
    if (ckpt_read_tensors(MPI_COMM_WORLD, path, t, N_SPECS, err, sizeof err))
        fail_msg("read after the undo: %s", err);
    for (int i = 0; i < N_SPECS; i++)
        tensor_check(&t[i], i + 1);
    tensors_free(t, N_SPECS);
}

static void test_verify_good(void **state)
{
    char dir[512], path[512], err[1024] = "";
    struct capture c;
    (void)state;

    subdir(dir, sizeof dir, "verify");
    assert_int_equal(save_specs(dir, 1, g_specs, N_SPECS, path, err), 0);
    if (ckpt_verify(MPI_COMM_WORLD, path, capture_begin(&c), err, sizeof err))
        fail_msg("verify: %s", err);
    capture_end(&c);
    if (g_rank == 0) {
        for (int i = 0; i < N_SPECS; i++) {
            char want[128];
            fmt(want, sizeof want, "OK   %s", g_specs[i].name);
            assert_contains(c.buf, want);
        }
        assert_contains(c.buf, "6 datasets, 0 bad");
        assert_null(strstr(c.buf, "BAD"));
    }
    free(c.buf);
}

/* ---- the checkpoint directory ----------------------------------------- */

/* Rank 0: an empty file dir/name. */
static void touch(const char *dir, const char *name)
{
    char p[700];
    if (g_rank == 0) {
        fmt(p, sizeof p, "%s/%s", dir, name);
        write_text(p, "");
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Steps 1..4 good, 5 truncated, 6 without manifest, 7 a .partial. */
static void make_mixed_dir(char *dir, size_t len, const char *name,
                           char paths[8][512])
{
    static const struct spec s[] = {{"/model/a", 2, {16, 8}, 0, 0, 0, 0}};
    char err[1024] = "", p[600];

    subdir(dir, len, name);
    for (int k = 1; k <= 6; k++)
        assert_int_equal(save_specs(dir, k, s, 1, paths[k], err), 0);
    if (g_rank == 0) {
        assert_int_equal(truncate(paths[5], 100), 0);
        fmt(p, sizeof p, "%s.manifest", paths[6]);
        assert_int_equal(unlink(p), 0);
    }
    touch(dir, "step_00000007.h5.partial");
}

static void test_list_statuses(void **state)
{
    char dir[512], paths[8][512], run[600], err[1024] = "";
    char *line;
    struct capture c;
    (void)state;

    make_mixed_dir(dir, sizeof dir, "list", paths);
    if (g_rank == 0) {
        assert_int_equal(ckpt_list(dir, capture_begin(&c), err, sizeof err),
                         3);
        capture_end(&c);
        line = strstr(c.buf, "step_00000004.h5 ");
        assert_non_null(line);
        assert_true(strncmp(strstr(line, "  ok"), "  ok", 4) == 0);
        line = strstr(c.buf, "step_00000005.h5 ");
        assert_non_null(line);
        assert_contains(line, "damaged: size 100 but the manifest says");
        line = strstr(c.buf, "step_00000006.h5 ");
        assert_non_null(line);
        assert_contains(line, "no manifest  <- latest");
        line = strstr(c.buf, "step_00000006.h5 ");
        assert_contains(line, "<- latest"); /* the last committed save */
        line = strstr(c.buf, "step_00000007.h5.partial");
        assert_non_null(line);
        assert_contains(line, "incomplete (partial)");
        free(c.buf);
        /* a run directory means its ckpt/ */
        fmt(run, sizeof run, "%s/run", dir);
        assert_int_equal(mkdir(run, 0777), 0);
        assert_int_equal(ckpt_list(run, capture_begin(&c), err, sizeof err),
                         0);
        capture_end(&c);
        assert_contains(c.buf, "(no checkpoints)");
        free(c.buf);
        fmt(run, sizeof run, "%s/nope", dir);
        assert_int_equal(ckpt_list(run, stdout, err, sizeof err), -1);
        assert_contains(err, run);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_find_good(void **state)
{
    char dir[512], paths[8][512], res[512], p[600], err[1024] = "";
    struct capture c;
    (void)state;

    make_mixed_dir(dir, sizeof dir, "find", paths);
    assert_int_equal(ckpt_find_good(MPI_COMM_WORLD, dir, res, sizeof res,
                                    capture_begin(&c), err, sizeof err), 0);
    capture_end(&c);
    assert_string_equal(res, paths[4]);
    if (g_rank == 0) {
        char *l7 = strstr(c.buf, "step_00000007.h5.partial");
        char *l6 = strstr(c.buf, "step_00000006.h5:");
        char *l5 = strstr(c.buf, "step_00000005.h5:");
        assert_true(l7 && l6 && l5 && l7 < l6 && l6 < l5); /* newest first */
        assert_contains(l7, "incomplete");
        assert_contains(l6, "no manifest");
        assert_contains(l5, "size 100 but the manifest says");
        assert_null(strstr(c.buf, "step_00000004"));
    } else {
        assert_true(c.len == 0); /* warnings come from rank 0 only */
    }
    free(c.buf);

    /* a file argument is checked alone: resume=PATH fails loudly */
    assert_all_failed(ckpt_find_good(MPI_COMM_WORLD, paths[5], res,
                                     sizeof res, NULL, err, sizeof err));
    assert_contains(err, "size 100");
    assert_int_equal(ckpt_find_good(MPI_COMM_WORLD, paths[3], res, sizeof res,
                                    NULL, err, sizeof err), 0);
    assert_string_equal(res, paths[3]);

    /* all damaged: -1; nothing at all: 1 */
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0)
        for (int k = 1; k <= 4; k++)
            assert_int_equal(truncate(paths[k], 10), 0);
    MPI_Barrier(MPI_COMM_WORLD);
    assert_all_failed(ckpt_find_good(MPI_COMM_WORLD, dir, res, sizeof res,
                                     NULL, err, sizeof err));
    assert_contains(err, "no valid checkpoint");
    fmt(p, sizeof p, "%s/fresh", dir);
    assert_int_equal(ckpt_find_good(MPI_COMM_WORLD, p, res, sizeof res, NULL,
                                    err, sizeof err), 1);
    assert_contains(err, p);
}

/* keep_last=2, keep_every=5 over saves 1..12 keeps 5, 10, 11, 12. */
static void test_retention(void **state)
{
    static const struct spec s[] = {{"/model/a", 1, {5}, 0, 0, 0, 0}};
    char dir[512], path[512], err[1024] = "";
    struct ckpt_entry_names { const char *name; int present; } want[] = {
        {"step_00000005.h5", 1}, {"step_00000005.h5.manifest", 1},
        {"step_00000010.h5", 1}, {"step_00000010.h5.manifest", 1},
        {"step_00000011.h5", 1}, {"step_00000012.h5.manifest", 1},
        {"step_00000012.h5", 1}, {"latest", 1},
        {"step_00000020.h5.partial", 1}, /* newer than any commit: kept */
        {"step_00000009.h5", 0}, {"step_00000009.h5.manifest", 0},
        {"step_00000001.h5", 0}, {"step_00000003.h5.partial", 0},
        {"step_00000004.h5.manifest", 0}, {"step_00000002.h5.manifest.tmp", 0},
    };
    int total = 0;
    (void)state;

    subdir(dir, sizeof dir, "retain");
    for (int k = 1; k <= 12; k++) {
        if (k == 12) { /* leftovers of crashed saves */
            touch(dir, "step_00000003.h5.partial");
            touch(dir, "step_00000004.h5.manifest");
            touch(dir, "step_00000002.h5.manifest.tmp");
            touch(dir, "step_00000020.h5.partial");
        }
        assert_int_equal(save_specs(dir, k, s, 1, path, err), 0);
        if (g_rank == 0) {
            int r = ckpt_retain(dir, 2, 5, path, NULL, err, sizeof err);
            if (r < 0)
                fail_msg("retain: %s", err);
            total += r;
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char p[700];
        fmt(p, sizeof p, "%s/%s", dir, want[i].name);
        if (exists(p) != want[i].present)
            fail_msg("%s: expected %s", p, want[i].present ? "kept"
                                                           : "removed");
    }
    if (g_rank == 0) /* 8 checkpoints x 2 files, 3 leftovers */
        assert_int_equal(total, 8 * 2 + 3);
    for (int k = 1; k <= 12; k++) {
        char p[700];
        fmt(p, sizeof p, "%s/step_%08d.h5", dir, k);
        assert_int_equal(exists(p), k == 5 || k >= 10);
    }
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                         sizeof err), 0);
    if (g_rank == 0) { /* keep_last 0: keep all (but not stale leftovers) */
        assert_int_equal(ckpt_retain(dir, 0, 0, NULL, NULL, err, sizeof err),
                         0);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    /* A step_N.h5 that is not one of ours (no manifest: damaged, foreign,
     * copied in half) with a higher step: it is neither counted among the
     * keep_last newest (it pushed step 12 out) nor deleted, and a save in
     * flight below its step is no leftover. */
    touch(dir, "step_00000050.h5.partial");
    if (g_rank == 0) {
        char p[700];
        fmt(p, sizeof p, "%s/step_00000099.h5", dir);
        write_text(p, "garbage\n");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    assert_int_equal(save_specs(dir, 13, s, 1, path, err), 0);
    if (g_rank == 0) {
        assert_int_equal(ckpt_retain(dir, 2, 5, path, NULL, err, sizeof err),
                         2); /* step 11 and its manifest */
        static const char *const after[] = {
            "step_00000012.h5", "step_00000013.h5", "step_00000099.h5",
            "step_00000050.h5.partial", "step_00000010.h5"};
        for (size_t i = 0; i < sizeof after / sizeof *after; i++) {
            char p[700];
            fmt(p, sizeof p, "%s/%s", dir, after[i]);
            if (!exists(p))
                fail_msg("%s: expected kept", p);
        }
        char p[700];
        fmt(p, sizeof p, "%s/step_00000011.h5", dir);
        assert_false(exists(p));
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* ---- async, full disk, fault hook -------------------------------------- */

/* Rank 0: every dataset of s in a and b holds the same bytes. */
static void same_datasets(const char *a, const char *b, const struct spec *s,
                          int n)
{
    if (g_rank == 0) {
        hid_t fa = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t fb = H5Fopen(b, H5F_ACC_RDONLY, H5P_DEFAULT);
        assert_true(fa >= 0 && fb >= 0);
        for (int i = 0; i < n; i++) {
            int64_t len = 1;
            for (int d = 0; d < s[i].ndim; d++)
                len *= s[i].gshape[d];
            float *x = malloc(sizeof(float) * (size_t)len);
            float *y = malloc(sizeof(float) * (size_t)len);
            hid_t da = H5Dopen2(fa, s[i].name, H5P_DEFAULT);
            hid_t db = H5Dopen2(fb, s[i].name, H5P_DEFAULT);
            assert_true(H5Dread(da, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                                H5P_DEFAULT, x) >= 0);
            assert_true(H5Dread(db, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                                H5P_DEFAULT, y) >= 0);
            assert_memory_equal(x, y, sizeof(float) * (size_t)len);
            H5Dclose(da);
            H5Dclose(db);
            free(x);
            free(y);
        }
        H5Fclose(fa);
        H5Fclose(fb);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_async_equals_sync(void **state)
{
    char d1[512], d2[512], p1[512], p2[512], err[1024] = "";
    struct ckpt_tensor t[N_SPECS];
    struct ckpt_meta m = meta_make(9, "n_layer = 1\n");
    struct ckpt_async *a = NULL;
    int provided;
    (void)state;

    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE) {
        assert_all_failed(ckpt_async_init(MPI_COMM_WORLD, &a, err,
                                          sizeof err));
        assert_contains(err, "MPI_THREAD_MULTIPLE");
        return;
    }
    subdir(d1, sizeof d1, "sync");
    subdir(d2, sizeof d2, "async");
    assert_int_equal(save_specs(d1, 9, g_specs, N_SPECS, p1, err), 0);
    assert_int_equal(ckpt_async_init(MPI_COMM_WORLD, &a, err, sizeof err), 0);
    for (int round = 0; round < 2; round++) { /* the staging is reused */
        for (int i = 0; i < N_SPECS; i++) {
            tensor_make(&t[i], &g_specs[i], g_specs[i].wdim,
                        g_specs[i].wrev, 0.0f);
            tensor_fill(&t[i], i + 1);
        }
        m.step = 9 + round;
        assert_int_equal(ckpt_save_async_start(a, d2, &m, t, N_SPECS, err,
                                               sizeof err), 0);
        assert_int_equal(ckpt_save_async_busy(a), 1);
        assert_all_failed(ckpt_save_async_start(a, d2, &m, t, N_SPECS, err,
                                                sizeof err));
        assert_contains(err, "in flight");
        for (int i = 0; i < N_SPECS; i++) /* training goes on */
            for (int64_t k = 0; k < local_count(&t[i]); k++)
                t[i].data[k] = -5.0f;
        tensors_free(t, N_SPECS);
        if (ckpt_save_async_wait(a, p2, sizeof p2, err, sizeof err))
            fail_msg("async save: %s", err);
        assert_int_equal(ckpt_save_async_busy(a), 0);
        assert_int_equal(ckpt_save_async_wait(a, p2, sizeof p2, err,
                                              sizeof err), 1);
    }
    assert_contains(p2, "step_00000010.h5");
    same_datasets(p1, p2, g_specs, N_SPECS);
    h5_serial_check(p2, g_specs, N_SPECS);
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, p2, NULL, err,
                                         sizeof err), 0);
    /* a failing async save reports on every rank */
    assert_int_equal(ckpt_save_async_start(a, "/proc/nope/ckpt", &m, NULL, 0,
                                           err, sizeof err), 0);
    assert_all_failed(ckpt_save_async_wait(a, p2, sizeof p2, err,
                                           sizeof err));
    assert_contains(err, "/proc/nope");
    ckpt_async_free(a);
}

/* The failed save of step 2 left nothing, and step 1 is intact. */
static void assert_only_step1(const char *dir, const char *p1)
{
    char p[700], err[1024] = "";

    fmt(p, sizeof p, "%s/step_00000002.h5", dir);
    assert_false(exists(p));
    fmt(p, sizeof p, "%s/step_00000002.h5.manifest", dir);
    assert_false(exists(p));
    assert_no_leftovers(dir);
    fmt(p, sizeof p, "%s/latest", dir);
    assert_string_equal(slurp(p), "step_00000001.h5\n");
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, p1, NULL, err,
                                         sizeof err), 0);
}

/* A file-size limit (ulimit -f) below the checkpoint's size, on every
 * rank: refused cleanly before anything is written. */
static void test_fsize_limit(void **state)
{
    static const struct spec small[] = {{"/model/a", 1, {100}, 0, 0, 0, 0}};
    static const struct spec big[] = {{"/model/b", 1, {1 << 20}, 0, 0, 0, 0}};
    char dir[512], p1[512], p[512], err[1024] = "";
    struct rlimit old, lim;
    (void)state;

    subdir(dir, sizeof dir, "fsize");
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 2 << 20;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_equal(save_specs(dir, 1, small, 1, p1, err), 0);
    assert_all_failed(save_specs(dir, 2, big, 1, p, err));
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_contains(err, "step_00000002.h5");
    assert_contains(err, "file-size limit");
    assert_only_step1(dir, p1);
}

/* A full disk on a 2 MiB tmpfs: -1 on every rank with a message naming
 * the file and the free space, nothing of the failed save left, the
 * previous checkpoint and `latest` intact, and the next save works.
 * Skipped when tmpfs cannot be mounted (not root). */
static void test_disk_full(void **state)
{
    static const struct spec small[] = {{"/model/a", 1, {100}, 0, 0, 0, 0}};
    struct spec big = {"/model/b", 1, {1 << 20}, 0, 0, 0, 0}; /* 4 MiB */
    char dir[512], p1[512], p[512], err[1024] = "";
    struct statvfs v;
    int ok = 0;
    (void)state;

    subdir(dir, sizeof dir, "full");
    if (g_rank == 0)
        ok = mount("tmpfs", dir, "tmpfs", 0, "size=2m") == 0;
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok) { /* every rank takes this branch (the Bcast above) */
        print_message("      (skipped: cannot mount a tmpfs here)\n");
        skip();
    }
    assert_int_equal(save_specs(dir, 1, small, 1, p1, err), 0);
    if (g_rank == 0) { /* the space reserved for the save was given back */
        struct stat st;
        assert_int_equal(stat(p1, &st), 0);
        assert_true((int64_t)st.st_blocks * 512 <=
                    (st.st_size + 4095) / 4096 * 4096);
    }

    /* more than the free space: refused before HDF5 creates the file */
    assert_all_failed(save_specs(dir, 2, &big, 1, p, err));
    assert_contains(err, "step_00000002.h5");
    assert_contains(err, "not enough space");
    assert_only_step1(dir, p1);

    /* a little less data than the free space: the space reserved for
     * data and metadata before writing is not there */
    assert_int_equal(statvfs(dir, &v), 0);
    big.gshape[0] = ((int64_t)(v.f_bavail * v.f_frsize) - 512) / 4;
    assert_all_failed(save_specs(dir, 2, &big, 1, p, err));
    print_message("      %s\n", err);
    assert_contains(err, "step_00000002.h5");
    assert_contains(err, "bytes free");
    assert_null(strstr(err, "could not close"));
    assert_only_step1(dir, p1);

    assert_int_equal(save_specs(dir, 3, small, 1, p, err), 0);
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, p, NULL, err,
                                         sizeof err), 0);
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0)
        assert_int_equal(umount(dir), 0);
    MPI_Barrier(MPI_COMM_WORLD);
}

/* MPITRON_CKPT_FAULT stalls a save without changing what it writes. */
static void test_fault_hook(void **state)
{
    char dir[512], path[512], err[1024] = "";
    (void)state;

    subdir(dir, sizeof dir, "fault");
    setenv("MPITRON_CKPT_FAULT", "stall_ms=20,at=2", 1);
    assert_int_equal(save_specs(dir, 1, g_specs, N_SPECS, path, err), 0);
    unsetenv("MPITRON_CKPT_FAULT");
    h5_serial_check(path, g_specs, N_SPECS);
    assert_int_equal(ckpt_check_manifest(MPI_COMM_WORLD, path, NULL, err,
                                         sizeof err), 0);
}

/* ---- main -------------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int group_setup(void **state)
{
    (void)state;
    if (g_rank == 0) {
        const char *tmp = getenv("TMPDIR");
        fmt(g_root, sizeof g_root, "%s/test_ckpt.XXXXXX",
                 tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(g_root))
            return -1;
    }
    MPI_Bcast(g_root, sizeof g_root, MPI_CHAR, 0, MPI_COMM_WORLD);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) {
        char full[300];
        fmt(full, sizeof full, "%s/full", g_root);
        umount(full); /* still mounted if test_disk_full failed */
        nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_resharded),
        cmocka_unit_test(test_flat_ranges),
        cmocka_unit_test(test_meta_roundtrip),
        cmocka_unit_test(test_string_attrs_variable),
        cmocka_unit_test(test_shape_mismatch),
        cmocka_unit_test(test_missing_dataset),
        cmocka_unit_test(test_foreign_files),
        cmocka_unit_test(test_incomplete_rejected),
        cmocka_unit_test(test_latest_after_two_saves),
        cmocka_unit_test(test_failed_saves),
        cmocka_unit_test(test_list_mismatch),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_print_info),
        cmocka_unit_test(test_hash64_vectors),
        cmocka_unit_test(test_layout_checksums),
        cmocka_unit_test(test_manifest_roundtrip),
        cmocka_unit_test(test_manifest_malformed),
        cmocka_unit_test(test_damage_named),
        cmocka_unit_test(test_superblock_damage),
        cmocka_unit_test(test_truncated_and_missing),
        cmocka_unit_test(test_checksum_detects),
        cmocka_unit_test(test_reread_after_change),
        cmocka_unit_test(test_verify_good),
        cmocka_unit_test(test_list_statuses),
        cmocka_unit_test(test_find_good),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_async_equals_sync),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_fsize_limit),
        cmocka_unit_test(test_fault_hook),
    };
    int failed, any, provided;

    /* MPI_THREAD_MULTIPLE for the asynchronous saves */
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_rank != 0) /* one summary; failures still reach stderr */
        (void)!freopen("/dev/null", "w", stdout);
    failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
