/*
 * test_data.c - shards, batches and the loader against independent
 * references: the input bytes themselves, a hand-written llm.c shard, and
 * the batch formulas of data.h recomputed here with rng_u64.  No MPI.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpe/bpe.h"
#include "data/data.h"
#include "data/loader.h"
#include "data/mix.h"
#include "rng.h"

#define ERRLEN 512

/* ---- helpers ---------------------------------------------------------- */

/* The length of a batch shape (before the T macro below hides .T). */
static int shape_len(const struct batch_shape *sh)
{
    return sh->T;
}

static char *tmpdir_make(void)
{
    char *d = strdup("/tmp/mpitron_test_data_XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

/* rm -r of a directory holding files and one level of subdirectories. */
static void tree_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            tree_remove(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void bytes_write(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* An independent llm.c-style writer: header of 256 int32, then uint16. */
static void shard_hand_write(const char *path, int32_t magic,
                             int32_t version, int32_t count,
                             const uint16_t *tok, size_t ntok)
{
    int32_t hdr[256] = {0};
    hdr[0] = magic;
    hdr[1] = version;
    hdr[2] = count;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, sizeof(int32_t), 256, f), 256);
    assert_int_equal(fwrite(tok, sizeof(uint16_t), ntok, f), ntok);
    assert_int_equal(fclose(f), 0);
}

static int file_exists(const char *dir, const char *name)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

/* Fixture: three input files of pseudo-random bytes prepared into
 * shards of 100 tokens, with val_fraction 0.1. */
#define NA 250
#define NB 333
#define NC 417
#define NTOTAL (NA + NB + NC)
#define NVAL 100 /* floor(1000 * 0.1) */
#define NTRAIN (NTOTAL - NVAL)

struct fix {
    char *dir;
    char out[1024];
    unsigned char bytes[NTOTAL];
    struct dataset train, val;
};

static int fix_setup(void **state)
{
    struct fix *f = calloc(1, sizeof *f);
    f->dir = tmpdir_make();
    for (int i = 0; i < NTOTAL; i++)
        f->bytes[i] = (unsigned char)(rng_u64(77, (uint64_t)i) >> 56);
    char pa[1024], pb[1024], pc[1024];
    snprintf(pa, sizeof pa, "%s/a.txt", f->dir);
    snprintf(pb, sizeof pb, "%s/b.txt", f->dir);
    snprintf(pc, sizeof pc, "%s/c.txt", f->dir);
    bytes_write(pa, f->bytes, NA);
    bytes_write(pb, f->bytes + NA, NB);
    bytes_write(pc, f->bytes + NA + NB, NC);
    snprintf(f->out, sizeof f->out, "%s/deep/out", f->dir);
    const char *files[3] = {pa, pb, pc};
    char err[ERRLEN];
    int rc = data_prepare(f->out, files, 3, 0.1, 100, 0, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "prepare: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(dataset_open(&f->train, f->out, "train", 256, err,
                                  sizeof err), 0);
    assert_int_equal(dataset_open(&f->val, f->out, "val", 256, err,
                                  sizeof err), 0);
    *state = f;
    return 0;
}

static int fix_teardown(void **state)
{
    struct fix *f = *state;
    dataset_close(&f->train);
    dataset_close(&f->val);
    tree_remove(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* ---- prepare + open + read ------------------------------------------ */

static void test_prepare_roundtrip(void **state)
{
    struct fix *f = *state;
    assert_int_equal(f->train.ntok, NTRAIN);
    assert_int_equal(f->val.ntok, NVAL);
    assert_int_equal(f->train.nshards, 9);   /* ceil(900 / 100) */
    assert_int_equal(f->val.nshards, 1);
    assert_true(file_exists(f->out, "train_000.bin"));
    assert_true(file_exists(f->out, "train_008.bin"));
    assert_false(file_exists(f->out, "train_009.bin"));
    assert_true(file_exists(f->out, "val_000.bin"));
    assert_false(file_exists(f->out, "train_000.bin.tmp"));

    int32_t *buf = malloc(NTOTAL * sizeof *buf);
    dataset_read(&f->train, 0, NTRAIN, buf);
    for (int i = 0; i < NTRAIN; i++)
        assert_int_equal(buf[i], f->bytes[i]);
    dataset_read(&f->val, 0, NVAL, buf);
    for (int i = 0; i < NVAL; i++)
        assert_int_equal(buf[i], f->bytes[NTRAIN + i]);
    /* every window that crosses or touches a shard boundary */
    for (int64_t pos = 0; pos < NTRAIN; pos += 7)
        for (int64_t n = 0; pos + n <= NTRAIN && n < 260; n += 13) {
            dataset_read(&f->train, pos, n, buf);
            for (int64_t t = 0; t < n; t++)
                assert_int_equal(buf[t], f->bytes[pos + t]);
        }
    free(buf);
}

static void test_prepare_rerun_and_no_val(void **state)
{
    struct fix *f = *state;
    char in[1024], out[1024], err[ERRLEN];
    snprintf(in, sizeof in, "%s/a.txt", f->dir);
    snprintf(out, sizeof out, "%s/rerun", f->dir);
    const char *files[1] = {in};
    /* many small shards first, then few big ones and no val split: the
     * stale shards of the first run must be gone */
    assert_int_equal(data_prepare(out, files, 1, 0.2, 10, 0, err, sizeof err),
                     0);
    assert_true(file_exists(out, "train_019.bin"));
    assert_true(file_exists(out, "val_004.bin"));
    assert_int_equal(data_prepare(out, files, 1, 0.0, 1000, 0, err,
                                  sizeof err), 0);
    struct dataset ds;
    assert_int_equal(dataset_open(&ds, out, "train", 256, err, sizeof err), 0);
    assert_int_equal(ds.nshards, 1);
    assert_int_equal(ds.ntok, NA);
    int32_t buf[NA];
    dataset_read(&ds, 0, NA, buf);
    for (int i = 0; i < NA; i++)
        assert_int_equal(buf[i], f->bytes[i]);
    dataset_close(&ds);
    /* no val split at all: -2, told apart from a broken one (-1) */
    assert_int_equal(dataset_open(&ds, out, "val", 256, err, sizeof err), -2);
    assert_non_null(strstr(err, out));
    assert_false(file_exists(out, "val_000.bin"));
}

static void test_prepare_errors(void **state)
{
    struct fix *f = *state;
    char in[1024], missing[1024], out[1024], err[ERRLEN];
    snprintf(in, sizeof in, "%s/a.txt", f->dir);
    snprintf(missing, sizeof missing, "%s/no_such_input.txt", f->dir);
    snprintf(out, sizeof out, "%s/errs", f->dir);
    const char *files[2] = {in, missing};
    assert_int_equal(data_prepare(out, files, 2, 0.1, 100, 0, err,
                                  sizeof err), -1);
    assert_non_null(strstr(err, "no_such_input.txt"));
    assert_int_equal(data_prepare(out, files, 1, 1.0, 100, 0, err,
                                  sizeof err), -1);
    assert_non_null(strstr(err, "val_fraction"));
    assert_int_equal(data_prepare(out, files, 1, -0.1, 100, 0, err,
                                  sizeof err), -1);
    assert_int_equal(data_prepare(out, files, 1, 0.1, 0, 0, err,
                                  sizeof err), -1);
    assert_non_null(strstr(err, "shard_tokens"));
}

/* ---- batches ---------------------------------------------------------- */

#define T 16
#define B 8
#define SEED 1234u

static void test_train_batch_formula(void **state)
{
    struct fix *f = *state;
    int32_t inp[B * T], tgt[B * T];
    for (int64_t step = 0; step < 5; step++) {
        dataset_train_batch(&f->train, SEED, step, 0, B, T, inp, tgt);
        uint64_t key = rng_key(SEED, RNG_DATA, (uint64_t)step);
        for (int i = 0; i < B; i++) {
            uint64_t pos = rng_u64(key, (uint64_t)i) % (NTRAIN - T);
            for (int t = 0; t < T; t++) {
                assert_int_equal(inp[i * T + t], f->bytes[pos + t]);
                assert_int_equal(tgt[i * T + t], f->bytes[pos + t + 1]);
            }
            /* targets are the inputs shifted by one */
            for (int t = 0; t + 1 < T; t++)
                assert_int_equal(tgt[i * T + t], inp[i * T + t + 1]);
        }
    }
}

static void test_train_batch_determinism(void **state)
{
    struct fix *f = *state;
    int32_t a[B * T], at[B * T], b[B * T], bt[B * T];
    dataset_train_batch(&f->train, SEED, 3, 0, B, T, a, at);
    dataset_train_batch(&f->train, SEED, 3, 0, B, T, b, bt);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(at, bt, sizeof at);
    dataset_train_batch(&f->train, SEED, 4, 0, B, T, b, bt);
    assert_memory_not_equal(a, b, sizeof a);
    dataset_train_batch(&f->train, SEED + 1, 3, 0, B, T, b, bt);
    assert_memory_not_equal(a, b, sizeof a);
    /* any slice [seq0, seq0+n) equals those rows of the full batch */
    for (int seq0 = 0; seq0 < B; seq0++)
        for (int n = 0; seq0 + n <= B; n++) {
            int32_t s[B * T], st[B * T];
            dataset_train_batch(&f->train, SEED, 3, seq0, n, T, s, st);
            if (n == 0)
                continue;
            assert_memory_equal(s, a + seq0 * T, (size_t)n * T * sizeof *s);
            assert_memory_equal(st, at + seq0 * T,
                                (size_t)n * T * sizeof *st);
        }
}

static void test_val_batch(void **state)
{
    struct fix *f = *state;
    const int vb = 4;
    int32_t inp[4 * T], tgt[4 * T];
    /* j large enough that the windows wrap modulo (ntok - T) */
    for (int64_t j = 0; j < 6; j++) {
        dataset_val_batch(&f->val, j, vb, 0, vb, T, inp, tgt, NULL);
        for (int i = 0; i < vb; i++) {
            int64_t pos = ((j * vb + i) * T) % (NVAL - T);
            for (int t = 0; t < T; t++) {
                assert_int_equal(inp[i * T + t], f->bytes[NTRAIN + pos + t]);
                assert_int_equal(tgt[i * T + t],
                                 f->bytes[NTRAIN + pos + t + 1]);
            }
        }
        int32_t s[2 * T], st[2 * T];
        dataset_val_batch(&f->val, j, vb, 1, 2, T, s, st, NULL);
        assert_memory_equal(s, inp + T, sizeof s);
        assert_memory_equal(st, tgt + T, sizeof st);
    }
}

/* ---- loader ----------------------------------------------------------- */

/* A one-dataset mixture over the fixture's train split (borrowed). */
static struct mixture mix_of(const struct dataset *ds)
{
    struct mixture mx;
    memset(&mx, 0, sizeof mx);
    mx.n = 1;
    mx.ds[0] = *ds;
    mx.cum[0] = 1.0;
    return mx;
}

/* The loader's step equals the plan's shape and dataset_train_batch's
 * rows [dp_rank * per_rank, ...) at that length. */
static void loader_check(struct loader *l, const struct dataset *ds,
                         const struct batch_plan *p, int dp_rank,
                         int64_t step, double *wait)
{
    struct step_batch b;
    struct batch_shape sh;
    loader_next(l, step, &b, wait);
    batch_plan_at(p, step, &sh);
    assert_memory_equal(&b.shape, &sh, sizeof sh);
    int n = sh.per_rank, t = shape_len(&sh);
    int32_t *ref = malloc(2 * (size_t)n * t * sizeof *ref);
    dataset_train_batch(ds, SEED, step, (int64_t)dp_rank * n, n, t, ref,
                        ref + (size_t)n * t);
    assert_memory_equal(b.inp, ref, (size_t)n * t * sizeof *ref);
    assert_memory_equal(b.tgt, ref + (size_t)n * t,
                        (size_t)n * t * sizeof *ref);
    assert_null(b.dstart);
    free(ref);
}

static void test_loader(void **state)
{
    struct fix *f = *state;
    struct loader l;
    char err[ERRLEN];
    struct mixture mx = mix_of(&f->train);
    /* dp rank 1 of 2, micro-batches of 2; then with a ramp 2:8 and a
     * sequence-length warm-up 4:12 (T = 4, 8 then 16) */
    struct batch_plan p = {.batch_size = B, .seq_len = T, .dp = 2, .mb = 2};
    struct batch_plan q = p;
    q.ramp_start = 2;
    q.ramp_steps = 8;
    q.sl_start = 4;
    q.sl_steps = 12;
    for (int v = 0; v < 2; v++) {
        const struct batch_plan *pl = v ? &q : &p;
        const int s = 5;
        assert_int_equal(loader_init(&l, &mx, pl, 1, NULL, SEED, 0, s, err,
                                     sizeof err), 0);
        double wait = 0.0;
        const int64_t steps[] = {s, s + 1, s + 2, s + 10, s + 11, s + 13,
                                 s + 1, 0};
        for (size_t k = 0; k < sizeof steps / sizeof *steps; k++)
            loader_check(&l, &f->train, pl, 1, steps[k], &wait);
        for (int64_t k = 100; k < 120; k++)
            loader_check(&l, &f->train, pl, 1, k, NULL);
        assert_true(wait >= 0.0);
        loader_free(&l);
        loader_free(&l);   /* second free is a no-op */
    }
    /* unequal shares (balance=on): dp rank 1 takes sequences [3, B) of
     * every full-size step, the shape says B - 3 of them */
    const int shares[2] = {3, B - 3};
    assert_int_equal(loader_init(&l, &mx, &p, 1, shares, SEED, 0, 2, err,
                                 sizeof err), 0);
    for (int64_t s = 2; s < 5; s++) {
        struct step_batch b;
        loader_next(&l, s, &b, NULL);
        assert_int_equal(b.shape.per_rank, B - 3);
        assert_int_equal(shape_len(&b.shape), T);
        int32_t ref[2 * B * T];
        dataset_train_batch(&f->train, SEED, s, 3, B - 3, T, ref,
                            ref + (B - 3) * T);
        assert_memory_equal(b.inp, ref, (size_t)(B - 3) * T * sizeof *ref);
        assert_memory_equal(b.tgt, ref + (B - 3) * T,
                            (size_t)(B - 3) * T * sizeof *ref);
    }
    loader_free(&l);
    /* a loader that is freed before its first step is ever requested */
    assert_int_equal(loader_init(&l, &mx, &p, 0, NULL, SEED, 0, 0, err,
                                 sizeof err), 0);
    loader_free(&l);
}

/* ---- mixtures --------------------------------------------------------- */

static void test_data_spec(void **state)
{
    (void)state;
    struct data_spec sp;
    char err[ERRLEN];
    assert_int_equal(data_spec_parse("data/x", &sp, err, sizeof err), 0);
    assert_int_equal(sp.n, 1);
    assert_string_equal(sp.dir[0], "data/x");
    assert_true(sp.w[0] == 1.0);
    assert_int_equal(data_spec_parse("a:0.7, b:0.3", &sp, err, sizeof err),
                     0);
    assert_int_equal(sp.n, 2);
    assert_string_equal(sp.dir[1], "b");
    assert_true(fabs(sp.w[0] - 0.7) < 1e-12 && fabs(sp.w[1] - 0.3) < 1e-12);
    assert_int_equal(data_spec_parse("a:3,c:d,e:f:1", &sp, err, sizeof err),
                     0);
    assert_int_equal(sp.n, 3);
    assert_string_equal(sp.dir[1], "c:d"); /* not a number: a path */
    assert_string_equal(sp.dir[2], "e:f");
    assert_true(fabs(sp.w[0] - 0.6) < 1e-12 && fabs(sp.w[1] - 0.2) < 1e-12);
    /* weights whose sum overflows a double: shares as given, not 0 */
    assert_int_equal(data_spec_parse("a:1e308,b:1e308,c:5e307", &sp, err,
                                     sizeof err), 0);
    assert_true(fabs(sp.w[0] - 0.4) < 1e-12 && fabs(sp.w[2] - 0.2) < 1e-12);
    /* a ratio no double holds: refused, naming the dataset */
    assert_int_equal(data_spec_parse("a:1e308,b:1e-300", &sp, err,
                                     sizeof err), -1);
    assert_non_null(strstr(err, "'b'"));
    const char *bad[] = {"", "a,,b", "a:0", "a:-1", ":2", "a:inf"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(data_spec_parse(bad[i], &sp, err, sizeof err), -1);
    char many[256] = "";
    for (int i = 0; i < MIX_MAX + 1; i++)
        strcat(many, i ? ",d" : "d");
    assert_int_equal(data_spec_parse(many, &sp, err, sizeof err), -1);
    assert_non_null(strstr(err, "more than"));
}

/* A second dataset of different bytes; sequence i of step s comes from
 * the dataset the formula of mix.h picks, at the usual position; the
 * picks follow the weights; one dataset is exactly dataset_train_batch. */
static void test_mixture(void **state)
{
    struct fix *f = *state;
    char in[1024], out[1024], err[ERRLEN];
    unsigned char other[600];
    for (int i = 0; i < 600; i++)
        other[i] = (unsigned char)(200 + i % 50);
    snprintf(in, sizeof in, "%s/other.txt", f->dir);
    snprintf(out, sizeof out, "%s/other", f->dir);
    bytes_write(in, other, sizeof other);
    const char *files[1] = {in};
    assert_int_equal(data_prepare(out, files, 1, 0.0, 1000, 0, err,
                                  sizeof err), 0);
    char spec[2200];
    snprintf(spec, sizeof spec, "%s:0.7,%s:0.3", f->out, out);
    struct data_spec sp;
    struct mixture mx;
    assert_int_equal(data_spec_parse(spec, &sp, err, sizeof err), 0);
    assert_int_equal(mixture_open(&mx, &sp, "train", 256, T, err,
                                  sizeof err), 0);
    enum { NS = 2000 };
    int32_t *inp = malloc(2 * NS * T * sizeof *inp), *tgt = inp + NS * T;
    int picks[2] = {0, 0};
    for (int64_t step = 0; step < 2; step++) {
        mixture_train_batch(&mx, SEED, step, 0, NS, T, inp, tgt, NULL);
        uint64_t key = rng_key(SEED, RNG_DATA, (uint64_t)step);
        uint64_t mkey = rng_key(SEED, RNG_MIX, (uint64_t)step);
        for (int i = 0; i < NS; i++) {
            double u = (double)(rng_u64(mkey, (uint64_t)i) >> 11) *
                       0x1.0p-53;
            int d = u < 0.7 ? 0 : 1;
            picks[d]++;
            const struct dataset *ds = &mx.ds[d];
            int64_t pos = (int64_t)(rng_u64(key, (uint64_t)i) %
                                    (uint64_t)(ds->ntok - T));
            for (int t = 0; t < T; t++) {
                int want = d ? other[pos + t] : f->bytes[pos + t];
                assert_int_equal(inp[i * T + t], want);
            }
        }
    }
    double frac = (double)picks[0] / (picks[0] + picks[1]);
    assert_true(fabs(frac - 0.7) < 0.02);
    mixture_close(&mx);
    /* one dataset: dataset_train_batch's bits */
    struct mixture one = mix_of(&f->train);
    int32_t *ref = malloc(2 * B * T * sizeof *ref);
    mixture_train_batch(&one, SEED, 7, 1, B - 1, T, inp, tgt, NULL);
    dataset_train_batch(&f->train, SEED, 7, 1, B - 1, T, ref, ref + B * T);
    assert_memory_equal(inp, ref, (size_t)(B - 1) * T * sizeof *ref);
    assert_memory_equal(tgt, ref + B * T, (size_t)(B - 1) * T * sizeof *ref);
    /* a mixture of different vocabularies is refused */
    int v = 0;
    assert_int_equal(data_spec_vocab(spec, &v, 0, err, sizeof err), 0);
    assert_int_equal(v, 256);
    free(ref);
    free(inp);
}

/* ---- errors and foreign shards ---------------------------------------- */

static void dir_fresh(char *d, size_t n, const struct fix *f,
                      const char *name)
{
    snprintf(d, n, "%s/%s", f->dir, name);
    assert_int_equal(mkdir(d, 0755), 0);
}

/* dataset_open fails with code (-1: broken, -2: no shards) and an error
 * holding needle and needle2 */
static void expect_open_code(const char *dir, int vocab, int code,
                             const char *needle, const char *needle2)
{
    struct dataset ds;
    char err[ERRLEN];
    assert_int_equal(dataset_open(&ds, dir, "train", vocab, err, sizeof err),
                     code);
    if (!strstr(err, needle) || (needle2 && !strstr(err, needle2)))
        fail_msg("error '%s' lacks '%s' / '%s'", err, needle,
                 needle2 ? needle2 : "");
    assert_null(ds.shards);
    assert_int_equal(ds.nshards, 0);
}

static void expect_open_error(const char *dir, int vocab, const char *needle,
                              const char *needle2)
{
    expect_open_code(dir, vocab, -1, needle, needle2);
}

static void test_open_errors(void **state)
{
    struct fix *f = *state;
    uint16_t tok[50];
    for (int i = 0; i < 50; i++)
        tok[i] = (uint16_t)(i * 5);
    char d[1024], p[1100], good[1100];

    dir_fresh(d, sizeof d, f, "magic");
    snprintf(good, sizeof good, "%s/train_000.bin", d);
    shard_hand_write(good, SHARD_MAGIC, 1, 50, tok, 50);
    snprintf(p, sizeof p, "%s/train_001.bin", d);
    shard_hand_write(p, 12345, 1, 50, tok, 50);
    expect_open_error(d, 256, "train_001.bin", "bad magic 12345");

    dir_fresh(d, sizeof d, f, "version");
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    shard_hand_write(p, SHARD_MAGIC, 2, 50, tok, 50);
    expect_open_error(d, 256, "train_000.bin", "version 2");

    dir_fresh(d, sizeof d, f, "trunc");
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    shard_hand_write(p, SHARD_MAGIC, 1, 50, tok, 49);
    expect_open_error(d, 256, "train_000.bin", "header says 50 tokens");

    dir_fresh(d, sizeof d, f, "tiny");
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    bytes_write(p, (const unsigned char *)"abc", 3);
    expect_open_error(d, 256, "train_000.bin", NULL);

    dir_fresh(d, sizeof d, f, "vocab");
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    shard_hand_write(p, SHARD_MAGIC, 1, 50, tok, 50);   /* max token 245 */
    expect_open_error(d, 200, "train_000.bin", "position 40");

    snprintf(d, sizeof d, "%s/no_such_dir", f->dir);
    expect_open_error(d, 256, "no_such_dir", "does not exist");

    dir_fresh(d, sizeof d, f, "empty");
    snprintf(p, sizeof p, "%s/notes.txt", d);
    bytes_write(p, (const unsigned char *)"x", 1);
    expect_open_code(d, 256, -2, d, "train_*.bin"); /* none: not broken */
}

static void test_hand_written_shards(void **state)
{
    struct fix *f = *state;
    char d[1024], p[1100], err[ERRLEN];
    dir_fresh(d, sizeof d, f, "llmc");
    /* two shards and an empty one between them, tokens beyond 256 */
    uint16_t a[70], b[40];
    for (int i = 0; i < 70; i++)
        a[i] = (uint16_t)(50000 + i);
    for (int i = 0; i < 40; i++)
        b[i] = (uint16_t)(3 * i);
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    shard_hand_write(p, SHARD_MAGIC, SHARD_VERSION, 70, a, 70);
    snprintf(p, sizeof p, "%s/train_001.bin", d);
    shard_hand_write(p, SHARD_MAGIC, SHARD_VERSION, 0, a, 0);
    snprintf(p, sizeof p, "%s/train_002.bin", d);
    shard_hand_write(p, SHARD_MAGIC, SHARD_VERSION, 40, b, 40);
    snprintf(p, sizeof p, "%s/train_002.bin.tmp", d);   /* ignored */
    bytes_write(p, (const unsigned char *)"junk", 4);
    struct dataset ds;
    assert_int_equal(dataset_open(&ds, d, "train", 50257, err, sizeof err),
                     0);
    assert_int_equal(ds.nshards, 3);
    assert_int_equal(ds.ntok, 110);
    int32_t out[110];
    dataset_read(&ds, 0, 110, out);
    for (int i = 0; i < 70; i++)
        assert_int_equal(out[i], 50000 + i);
    for (int i = 0; i < 40; i++)
        assert_int_equal(out[70 + i], 3 * i);
    dataset_read(&ds, 69, 2, out);
    assert_int_equal(out[0], 50069);
    assert_int_equal(out[1], 0);
    dataset_close(&ds);

    /* and a shard from shard_write is byte-identical to the hand-written */
    char q[1100];
    snprintf(q, sizeof q, "%s/train_000.bin", d);
    snprintf(p, sizeof p, "%s/copy.bin", d);
    assert_int_equal(shard_write(p, a, 70, err, sizeof err), 0);
    FILE *x = fopen(p, "rb"), *y = fopen(q, "rb");
    assert_non_null(x);
    assert_non_null(y);
    int cx, cy;
    do {
        cx = fgetc(x);
        cy = fgetc(y);
        assert_int_equal(cx, cy);
    } while (cx != EOF);
    fclose(x);
    fclose(y);
}

/* ---- documents, BPE, the vocabulary ---------------------------------- */

/* Two files: three fortunes separated by "%" lines, then one more file.
 * Documents start at 0, after each "%\n", and at the second file. */
static const char DOC_A[] = "first one\nline two\n%\nsecond\n%\nthird doc "
                            "that is a bit longer than the others\n";
static const char DOC_B[] = "fourth, the second file\n%\n";

static void write_docs_inputs(const struct fix *f, char *pa, char *pb,
                              size_t n)
{
    snprintf(pa, n, "%s/docs_a.txt", f->dir);
    snprintf(pb, n, "%s/docs_b.txt", f->dir);
    bytes_write(pa, (const unsigned char *)DOC_A, strlen(DOC_A));
    bytes_write(pb, (const unsigned char *)DOC_B, strlen(DOC_B));
}

static void test_prepare_docs(void **state)
{
    struct fix *f = *state;
    char pa[1024], pb[1024], out[1024], err[ERRLEN];
    write_docs_inputs(f, pa, pb, sizeof pa);
    snprintf(out, sizeof out, "%s/docs", f->dir);
    const char *files[2] = {pa, pb};
    struct prepare_opts o = {.val_fraction = 0.0, .shard_tokens = 1000,
                             .vocab_size = 256, .doc_sep = "%"};
    assert_int_equal(data_prepare_ex(out, files, 2, &o, err, sizeof err), 0);
    struct dataset ds;
    assert_int_equal(dataset_open(&ds, out, "train", 256, err, sizeof err), 0);
    int64_t a = (int64_t)strlen(DOC_A);
    int64_t want[4] = {0, 21, 30, a}; /* the trailing "%" of B ends it */
    assert_int_equal(ds.ndocs, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ds.docs[i], want[i]);
    assert_int_equal(dataset_doc_start(&ds, 0), 0);
    assert_int_equal(dataset_doc_start(&ds, 20), 0);
    assert_int_equal(dataset_doc_start(&ds, 21), 21);
    assert_int_equal(dataset_doc_start(&ds, a + 3), a);
    /* a window from 15: documents start at 21 and 30 inside it */
    int32_t wi[20], wt[20], wd[20];
    dataset_window(&ds, 15, 20, wi, wt, wd);
    for (int t = 0; t < 20; t++) {
        assert_int_equal(wd[t], t < 6 ? 0 : t < 15 ? 6 : 15);
        assert_int_equal(wi[t], (unsigned char)DOC_A[15 + t]);
    }
    dataset_window(&ds, 21, 5, wi, wt, wd); /* starts on a start */
    for (int t = 0; t < 5; t++)
        assert_int_equal(wd[t], 0);
    dataset_close(&ds);
    /* doc_sep "" = file boundaries only */
    o.doc_sep = "";
    assert_int_equal(data_prepare_ex(out, files, 2, &o, err, sizeof err), 0);
    assert_int_equal(dataset_open(&ds, out, "train", 256, err, sizeof err), 0);
    assert_int_equal(ds.ndocs, 2);
    assert_int_equal(ds.docs[1], a);
    dataset_close(&ds);
}

/* BPE: merges.txt beside the shards, every document's tokens decode to
 * its bytes, train and val; the vocabulary comes from the directory. */
static void test_prepare_bpe(void **state)
{
    struct fix *f = *state;
    char pa[1024], pb[1024], out[1024], mp[1100], err[ERRLEN];
    write_docs_inputs(f, pa, pb, sizeof pa);
    snprintf(out, sizeof out, "%s/bpe", f->dir);
    const char *files[3] = {pa, pb, pa};
    struct prepare_opts o = {.val_fraction = 0.3, .shard_tokens = 7,
                             .vocab_size = 290, .doc_sep = "%"};
    assert_int_equal(data_prepare_ex(out, files, 3, &o, err, sizeof err), 0);
    snprintf(mp, sizeof mp, "%s/merges.txt", out);
    struct bpe b;
    assert_int_equal(bpe_load(&b, mp, err, sizeof err), 0);
    assert_true(b.vocab > 256 && b.vocab <= 290);
    int v = 0;
    assert_int_equal(data_vocab_detect(out, &v, err, sizeof err), 0);
    assert_int_equal(v, b.vocab);
    /* the input bytes, as one stream, cut where prepare cuts */
    size_t la = strlen(DOC_A), lb = strlen(DOC_B), n = 2 * la + lb;
    char *all = malloc(n);
    memcpy(all, DOC_A, la);
    memcpy(all + la, DOC_B, lb);
    memcpy(all + la + lb, DOC_A, la);
    size_t ntrain = n - (size_t)((double)n * 0.3), off = 0;
    const char *splits[2] = {"train", "val"};
    for (int s = 0; s < 2; s++) {
        struct dataset ds;
        assert_int_equal(dataset_open(&ds, out, splits[s], b.vocab, err,
                                      sizeof err), 0);
        assert_true(ds.nshards > 1);
        int32_t *tok = malloc((size_t)ds.ntok * sizeof *tok);
        dataset_read(&ds, 0, ds.ntok, tok);
        for (int64_t d = 0, t = 0; d < ds.ndocs; d++) {
            int64_t end = d + 1 < ds.ndocs ? ds.docs[d + 1] : ds.ntok;
            assert_int_equal(ds.docs[d], t);
            for (; t < end; t++) {
                size_t len;
                const unsigned char *p = bpe_token(&b, tok[t], &len);
                assert_memory_equal(p, all + off, len);
                off += len;
            }
        }
        assert_int_equal(off, s ? n : ntrain);
        free(tok);
        dataset_close(&ds);
    }
    /* vocab_size against the directory */
    v = b.vocab;
    assert_int_equal(data_vocab_resolve(out, &v, 0, err, sizeof err), 0);
    v = 256;
    assert_int_equal(data_vocab_resolve(out, &v, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "merges.txt"));
    assert_non_null(strstr(err, "vocab_size=256"));
    /* a byte-level prepare in the same directory removes the tokenizer */
    o.vocab_size = 256;
    assert_int_equal(data_prepare_ex(out, files, 3, &o, err, sizeof err), 0);
    assert_false(file_exists(out, "merges.txt"));
    v = 0;
    assert_int_equal(data_vocab_resolve(out, &v, 0, err, sizeof err), 0);
    assert_int_equal(v, 256);
    bpe_free(&b);
    free(all);
}

static void test_vocab_detect_llmc(void **state)
{
    struct fix *f = *state;
    char d[1024], p[1100], err[ERRLEN];
    uint16_t tok[3] = {10, 50256, 300};
    dir_fresh(d, sizeof d, f, "gpt2");
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    shard_hand_write(p, SHARD_MAGIC, 1, 3, tok, 3);
    int v = 0;
    assert_int_equal(data_vocab_detect(d, &v, err, sizeof err), 0);
    assert_int_equal(v, 50257);
    tok[1] = 60000;
    dir_fresh(d, sizeof d, f, "big");
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    shard_hand_write(p, SHARD_MAGIC, 1, 3, tok, 3);
    assert_int_equal(data_vocab_detect(d, &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "set vocab_size"));
    snprintf(d, sizeof d, "%s/absent", f->dir);
    v = 0;
    assert_int_equal(data_vocab_resolve(d, &v, 1, err, sizeof err), 0);
    assert_int_equal(v, 256); /* bench without data: bytes */
    assert_int_equal(data_vocab_resolve(d, &v, 0, err, sizeof err), 0);
    v = 0;
    assert_int_equal(data_vocab_resolve(d, &v, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not exist"));
}

static void test_docs_errors(void **state)
{
    struct fix *f = *state;
    char d[1024], p[1100], err[ERRLEN];
    uint16_t tok[20] = {0};
    int64_t good[3] = {0, 5, 9};
    dir_fresh(d, sizeof d, f, "docerr");
    snprintf(p, sizeof p, "%s/train_000.bin", d);
    shard_hand_write(p, SHARD_MAGIC, 1, 20, tok, 20);
    snprintf(p, sizeof p, "%s/train.docs", d);
    assert_int_equal(docs_write(p, good, 3, 20, err, sizeof err), 0);
    struct dataset ds;
    assert_int_equal(dataset_open(&ds, d, "train", 256, err, sizeof err), 0);
    assert_int_equal(ds.ndocs, 3);
    dataset_close(&ds);
    int64_t bad1[3] = {0, 9, 5}, bad2[2] = {1, 5}, bad3[2] = {0, 20};
    assert_int_equal(docs_write(p, bad1, 3, 20, err, sizeof err), 0);
    expect_open_error(d, 256, "train.docs", "must ascend");
    assert_int_equal(docs_write(p, bad2, 2, 20, err, sizeof err), 0);
    expect_open_error(d, 256, "train.docs", "must ascend from 0");
    assert_int_equal(docs_write(p, bad3, 2, 20, err, sizeof err), 0);
    expect_open_error(d, 256, "train.docs", "below 20");
    assert_int_equal(docs_write(p, good, 3, 21, err, sizeof err), 0);
    expect_open_error(d, 256, "train.docs", "the shards hold 20 tokens");
    bytes_write(p, (const unsigned char *)"short", 5);
    expect_open_error(d, 256, "train.docs", "header");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepare_roundtrip),
        cmocka_unit_test(test_prepare_rerun_and_no_val),
        cmocka_unit_test(test_prepare_errors),
        cmocka_unit_test(test_train_batch_formula),
        cmocka_unit_test(test_train_batch_determinism),
        cmocka_unit_test(test_val_batch),
        cmocka_unit_test(test_loader),
        cmocka_unit_test(test_data_spec),
        cmocka_unit_test(test_mixture),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_prepare_docs),
        cmocka_unit_test(test_prepare_bpe),
        cmocka_unit_test(test_vocab_detect_llmc),
        cmocka_unit_test(test_docs_errors),
        cmocka_unit_test(test_hand_written_shards),
    };
    return cmocka_run_group_tests(tests, fix_setup, fix_teardown);
}
