/*
 * test_ckpt.c - HDF5 checkpoint layer.  Run under mpirun -np 1, 2, 3.
 *
 * Tensor values are a function of (tensor id, global flat index), so a
 * read under a different sharding, and a plain serial HDF5 read of the
 * whole dataset (the independent reference for the on-disk layout), can
 * both be checked element by element.  Foreign and broken files are made
 * here with the plain serial HDF5 API, not with the library under test.
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
#include <sys/stat.h>
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
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, p);
    assert_contains(err, "not an HDF5 file");
    assert_null(m.config_text);

    fmt(p, sizeof p, "%s/other.h5", dir);
    h5_foreign(p, NULL, 0, 0);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, "not an mpitron checkpoint");
    if (g_rank == 0) {
        assert_int_equal(ckpt_print_info(p, stdout, err, sizeof err), -1);
        assert_contains(err, "not an mpitron checkpoint");
    }

    fmt(p, sizeof p, "%s/v7.h5", dir);
    h5_foreign(p, CKPT_FORMAT, 7, 1);
    assert_all_failed(ckpt_read_meta(MPI_COMM_WORLD, p, &m, err, sizeof err));
    assert_contains(err, "has checkpoint version 7; this build reads "
                         "version 1");

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
    h5_foreign(p, CKPT_FORMAT, 1, 0);
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
        line = strstr(buf, "parameters");
        assert_non_null(line);
        assert_contains(line, "32778"); /* 256*128 + 10 */
        free(buf);
    }
    MPI_Barrier(MPI_COMM_WORLD);
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
    if (g_rank == 0)
        nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_resharded),
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
    };
    int failed, any;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_rank != 0) /* one summary; failures still reach stderr */
        (void)!freopen("/dev/null", "w", stdout);
    failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any ? 1 : 0;
}
