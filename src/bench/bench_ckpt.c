/*
 * bench_ckpt.c - `mpitron bench ckpt`: checkpoint save and load of the
 * configured model, against plain sequential I/O of the same bytes in the
 * same directory, measured in the same run; and the training stall per
 * save with and without ckpt_async.
 *
 * What each figure includes (every time is the slowest rank's, from a
 * barrier; each rep runs save, load, raw write, raw read back to back, so
 * the four figures of a rep see the same machine; the JSON gives the best
 * (shortest) time of each over the reps, and write_vs_raw_median the
 * median over the reps of the per-rep ratio):
 *   write_gbps      file bytes / model_ckpt_save: listing the tensors,
 *                   creating DIR/ckpt/step_N.h5.partial, every dataset,
 *                   the data written and fsynced (H5Fflush), hashed, the
 *                   xxh64 attributes, close, fsync, the rest hashed, the
 *                   manifest written and fsynced, both renames, the
 *                   directory fsynced and `latest` replaced (ckpt.h).
 *   read_gbps       file bytes / model_ckpt_load: the manifest check
 *                   (every byte of the file hashed once), the root
 *                   attributes and config, every dataset checked and every
 *                   rank's hyperslabs read into the model (at dp > 1 each
 *                   replica reads its own copy, so more bytes move than
 *                   the file holds).
 *   raw_write_gbps  the same number of bytes written with pwrite in 4 MiB
 *                   pieces, each rank its 1/size share to its own file
 *                   DIR/ckpt/raw_RANK.bin, from the model's own parameter
 *                   and AdamW arenas (the bytes the checkpoint holds), then
 *                   fsync; open, write, fsync and close are timed.
 *   raw_read_gbps   those files read back with pread in 4 MiB pieces into
 *                   the same arena bytes (so the model is unchanged).
 *   stall_ms        1000 x the synchronous save time: what training waits
 *                   for per save; stall_ms_async: the wait for
 *                   ckpt_save_async_start (the copy to the staging buffer).
 * Neither side drops the page cache first: both read a file just written.
 * A rep's checkpoint is deleted after its load, the raw files after their
 * read (see rep_sync); the async saves keep only the newest checkpoint.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "cli.h"
#include "json.h"
#include "log.h"
#include "data/mix.h"
#include "train/train.h"

#define RAW_CHUNK ((size_t)4 << 20)

/* Plain pwrite/pread of bytes [off, off+len) of DIR/raw_RANK.bin from/to
 * the model's arenas (params, m, v) taken as one byte string, starting at
 * byte src (wrapping around its end): the checkpoint's own bytes. */
static int raw_span(int fd, const struct gpt *m, size_t src, size_t len,
                    int write)
{
    char *arena[3] = {(char *)m->params, (char *)m->m, (char *)m->v};
    size_t each = m->tt.total * sizeof(float), done = 0;
    if (each == 0)
        return -1;
    while (done < len) {
        size_t at = (src + done) % (3 * each), k = at / each, o = at % each;
        size_t n = len - done;
        n = n < RAW_CHUNK ? n : RAW_CHUNK;
        n = n < each - o ? n : each - o; /* not across arenas */
        ssize_t r = write ? pwrite(fd, arena[k] + o, n, (off_t)done)
                          : pread(fd, arena[k] + o, n, (off_t)done);
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

/* Each rank writes (fsync included) or reads its share of `bytes` (the
 * last rank also the remainder) in DIR/raw_RANK.bin.  Returns the slowest
 * rank's seconds, or -1 when any rank failed. */
static double raw_io(const struct trainer *tr, const char *dir, size_t bytes,
                     int write)
{
    int rank = tr->g.rank, size = tr->g.size;
    size_t share = bytes / (size_t)size;
    size_t len = rank == size - 1 ? bytes - share * (size_t)(size - 1)
                                  : share;
    char path[4096];
    snprintf(path, sizeof(path), "%s/raw_%05d.bin", dir, rank);
    MPI_Barrier(tr->g.world);
    double t0 = MPI_Wtime();
    int fd = write ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)
                   : open(path, O_RDONLY);
    int ok = fd >= 0 && raw_span(fd, &tr->m, share * (size_t)rank, len,
                                 write) == 0;
    if (ok && write)
        ok = fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    double t = ok ? MPI_Wtime() - t0 : -1e30;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, tr->g.world);
    if (!write)
        unlink(path);
    return t < 0 ? -1 : t;
}

struct ckpt_bench {
    double save_s, load_s, raw_w_s, raw_r_s; /* best of the reps */
    double stall_async_s, async_total_s;
    double ratio_median;                     /* of raw_w / save per rep */
    size_t bytes;
    int reps;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double best(double a, double b)
{
    return b < a ? b : a;
}

/* Rank 0 keeps only the newest checkpoint in dir (bounded disk use). */
static void keep_newest(const struct trainer *tr, const char *dir,
                        const char *path)
{
    char err[1024];
    if (tr->g.rank == 0 && ckpt_retain(dir, 1, 0, path, NULL, err,
                                       sizeof(err)) < 0)
        log_warn(MPI_COMM_SELF, "%s", err);
    MPI_Barrier(tr->g.world);
}

/* Rank 0 deletes the checkpoint path and its manifest. */
static void remove_ckpt(const struct trainer *tr, const char *path)
{
    char mp[4096 + 16];
    snprintf(mp, sizeof(mp), "%s.manifest", path);
    if (tr->g.rank == 0 && (unlink(path) != 0 || unlink(mp) != 0))
        log_warn(MPI_COMM_SELF, "cannot remove %s: %s", path,
                 strerror(errno));
    MPI_Barrier(tr->g.world);
}

/* One rep: save, load, raw write, raw read; *ratio = raw write / save.
 * Each write starts right after a file as large was deleted (the
 * checkpoint before the raw write, the raw files before the next save),
 * so that both find the page cache and free memory alike: on a virtual
 * machine, pages freed a moment ago are much cheaper to fill than pages
 * the host has taken back. */
static int rep_sync(struct trainer *tr, struct rank_state *rs,
                    const char *dir, int i, struct ckpt_bench *b,
                    double *ratio, char *err, size_t errlen)
{
    char path[4096];
    tr->st.step = i + 1;
    MPI_Barrier(tr->g.world);
    double t0 = MPI_Wtime();
    if (model_ckpt_save(&tr->g, &tr->m, &tr->c, &tr->st, rs, path,
                        sizeof(path), err, errlen) < 0)
        return -1;
    double t1 = MPI_Wtime();
    if (model_ckpt_load(&tr->g, &tr->m, &tr->c, path, 0, &tr->st, rs, err,
                        errlen) < 0)
        return -1;
    double t2 = MPI_Wtime();
    if (i == 0) {
        struct stat sb;
        b->bytes = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
        MPI_Bcast(&b->bytes, sizeof(b->bytes), MPI_BYTE, 0, tr->g.world);
    }
    remove_ckpt(tr, path);
    double w = raw_io(tr, dir, b->bytes, 1);
    double r = w < 0 ? -1 : raw_io(tr, dir, b->bytes, 0);
    if (w < 0 || r < 0) {
        snprintf(err, errlen, "plain %s of %s/raw_*.bin failed on some "
                 "rank", w < 0 ? "write" : "read", dir);
        return -1;
    }
    b->save_s = best(b->save_s, t1 - t0);
    b->load_s = best(b->load_s, t2 - t1);
    b->raw_w_s = best(b->raw_w_s, w);
    b->raw_r_s = best(b->raw_r_s, r);
    *ratio = w / (t1 - t0);
    return 0;
}

/* The stall of ckpt_async saves (best of reps), and the last one's total
 * time; stall_async_s -1 without MPI_THREAD_MULTIPLE. */
static void reps_async(struct trainer *tr, struct rank_state *rs,
                       const char *dir, struct ckpt_bench *b)
{
    struct ckpt_async *a = NULL;
    char err[1024], path[4096];
    if (ckpt_async_init(tr->g.world, &a, err, sizeof(err)) != 0) {
        b->stall_async_s = -1;
        return;
    }
    for (int i = 0; i < b->reps; i++) {
        tr->st.step = b->reps + i + 1;
        MPI_Barrier(tr->g.world);
        double t0 = MPI_Wtime();
        if (model_ckpt_save_async(&tr->g, &tr->m, &tr->c, &tr->st, rs, a,
                                  err, sizeof(err)) < 0)
            break;
        double t1 = MPI_Wtime();
        int rc = ckpt_save_async_wait(a, path, sizeof(path), err,
                                      sizeof(err));
        double t2 = MPI_Wtime();
        b->stall_async_s = best(b->stall_async_s, t1 - t0);
        b->async_total_s = t2 - t0;
        if (rc == 0)
            keep_newest(tr, dir, path);
    }
    ckpt_async_free(a);
}

static int measure(struct trainer *tr, int reps, struct ckpt_bench *b,
                   char *err, size_t errlen)
{
    struct rank_state rs;
    char dir[CONFIG_STR_MAX + 8];
    double *ratio = calloc((size_t)reps, sizeof(double));
    trainer_rank_state(tr, &rs);
    snprintf(dir, sizeof(dir), "%s/ckpt", tr->c.run_dir);
    memset(b, 0, sizeof(*b));
    b->reps = reps;
    b->save_s = b->load_s = b->raw_w_s = b->raw_r_s = 1e30;
    b->stall_async_s = 1e30;
    if (!ratio) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < reps; i++)
        if (rep_sync(tr, &rs, dir, i, b, &ratio[i], err, errlen) < 0) {
            free(ratio);
            return -1;
        }
    qsort(ratio, (size_t)reps, sizeof(double), cmp_double);
    b->ratio_median = reps % 2 ? ratio[reps / 2]
                               : (ratio[reps / 2 - 1] + ratio[reps / 2]) / 2;
    free(ratio);
    reps_async(tr, &rs, dir, b);
    return 0;
}

static void report(const struct trainer *tr, const struct ckpt_bench *b)
{
    if (tr->g.rank != 0)
        return;
    double gb = (double)b->bytes / 1e9;
    printf("checkpoint of %lld parameters: %.1f MB, %d rank(s), in %s/ckpt, "
           "best of %d\n", (long long)gpt_num_params(&tr->m.cfg),
           b->bytes / 1e6, tr->g.size, tr->c.run_dir, b->reps);
    printf("  save %.3f s = %.3f GB/s   (plain write+fsync %.3f s = %.3f "
           "GB/s; ratio %.2f, median of reps %.2f)\n", b->save_s,
           gb / b->save_s, b->raw_w_s, gb / b->raw_w_s,
           b->raw_w_s / b->save_s, b->ratio_median);
    printf("  load %.3f s = %.3f GB/s   (plain read %.3f s = %.3f GB/s)\n",
           b->load_s, gb / b->load_s, b->raw_r_s, gb / b->raw_r_s);
    printf("  training stall per save: %.1f ms synchronous, %.1f ms with "
           "ckpt_async=1 (background write %.1f ms)\n", 1e3 * b->save_s,
           1e3 * b->stall_async_s, 1e3 * b->async_total_s);
    struct json j;
    json_init(&j);
    json_obj_begin(&j, NULL);
    json_int(&j, "bytes", (int64_t)b->bytes);
    json_int(&j, "reps", b->reps);
    const struct { const char *k; double v; } f[] = {
        {"write_gbps", gb / b->save_s}, {"read_gbps", gb / b->load_s},
        {"raw_write_gbps", gb / b->raw_w_s}, {"raw_read_gbps", gb / b->raw_r_s},
        {"write_vs_raw", b->raw_w_s / b->save_s},
        {"write_vs_raw_median", b->ratio_median},
        {"stall_ms", 1e3 * b->save_s}, {"stall_ms_async", 1e3 * b->stall_async_s},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        json_num(&j, f[i].k, f[i].v, 6);
    json_int(&j, "world", tr->g.size);
    json_obj_end(&j);
    json_write_line(&j, stdout);
    json_free(&j);
    fflush(stdout);
}

int bench_ckpt(int argc, char **argv)
{
    static const char *const extra[] = {"dir", "reps", NULL};
    const char *ev[2] = {"bench_ckpt", "3"};
    struct config c;
    char err[1024];
    long reps;
    config_defaults(&c);
    if (config_parse_args(&c, argc, argv, extra, ev, err, sizeof(err)) < 0 ||
        config_finalize(&c, err, sizeof(err)) < 0 ||
        cli_int("reps", ev[1], &reps, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    snprintf(c.run_dir, sizeof(c.run_dir), "%s", ev[0]);
    if (data_spec_vocab(c.data, &c.vocab_size, 1, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    struct trainer tr;
    struct ckpt_bench b;
    int rc = trainer_init(&tr, &c, MPI_COMM_WORLD, err, sizeof(err));
    if (rc == 0)
        rc = measure(&tr, reps > 0 ? (int)reps : 1, &b, err, sizeof(err));
    if (rc == 0)
        report(&tr, &b);
    else
        log_error("%s", err);
    trainer_free(&tr);
    return rc < 0;
}
