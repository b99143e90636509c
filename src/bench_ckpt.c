/*
 * bench_ckpt.c - `mpitron bench ckpt`: checkpoint save and load of the
 * configured model, against plain sequential I/O of the same number of
 * bytes in the same directory, measured in the same run; and the training
 * stall per save with and without ckpt_async.
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
#include "log.h"
#include "train.h"

#define RAW_CHUNK ((size_t)4 << 20)

/* Each rank writes (or reads) its share of `bytes` to DIR/raw_RANK.bin
 * sequentially, with fsync after writing.  Returns the slowest rank's
 * seconds, or -1. */
static double raw_io(MPI_Comm comm, const char *dir, size_t bytes, int write)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    size_t share = bytes / (size_t)size, done = 0;
    char path[4096];
    snprintf(path, sizeof(path), "%s/raw_%05d.bin", dir, rank);
    char *buf = malloc(RAW_CHUNK);
    memset(buf, rank + 1, RAW_CHUNK);
    MPI_Barrier(comm);
    double t0 = MPI_Wtime();
    int fd = write ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)
                   : open(path, O_RDONLY);
    int ok = fd >= 0;
    while (ok && done < share) {
        size_t n = share - done < RAW_CHUNK ? share - done : RAW_CHUNK;
        ssize_t r = write ? pwrite(fd, buf, n, (off_t)done)
                          : pread(fd, buf, n, (off_t)done);
        ok = r > 0;
        done += ok ? (size_t)r : 0;
    }
    if (ok && write)
        ok = fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    double t = ok ? MPI_Wtime() - t0 : -1e30;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, comm);
    if (!write)
        unlink(path);
    free(buf);
    return t < 0 ? -1 : t;
}

struct ckpt_bench {
    double save_s, load_s, stall_async_s, async_total_s;
    double raw_w_s, raw_r_s;
    size_t bytes;
};

static int measure(struct trainer *tr, int reps, struct ckpt_bench *b,
                   char *err, size_t errlen)
{
    struct rank_state rs;
    char path[4096];
    trainer_rank_state(tr, &rs);
    memset(b, 0, sizeof(*b));
    b->save_s = b->load_s = b->stall_async_s = 1e30;
    for (int i = 0; i < reps; i++) {
        tr->st.step = i + 1;
        MPI_Barrier(tr->g.world);
        double t0 = MPI_Wtime();
        if (model_ckpt_save(&tr->g, &tr->m, &tr->c, &tr->st, &rs, path,
                            sizeof(path), err, errlen) < 0)
            return -1;
        double t1 = MPI_Wtime();
        if (model_ckpt_load(&tr->g, &tr->m, &tr->c, path, 0, &tr->st, &rs,
                            err, errlen) < 0)
            return -1;
        double t2 = MPI_Wtime();
        b->save_s = t1 - t0 < b->save_s ? t1 - t0 : b->save_s;
        b->load_s = t2 - t1 < b->load_s ? t2 - t1 : b->load_s;
    }
    struct stat sb;
    b->bytes = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
    MPI_Bcast(&b->bytes, sizeof(b->bytes), MPI_BYTE, 0, tr->g.world);
    struct ckpt_async *a = NULL;
    if (ckpt_async_init(tr->g.world, &a, err, errlen) == 0) {
        for (int i = 0; i < reps; i++) {
            tr->st.step = reps + i + 1;
            MPI_Barrier(tr->g.world);
            double t0 = MPI_Wtime();
            if (model_ckpt_save_async(&tr->g, &tr->m, &tr->c, &tr->st, &rs,
                                      a, err, errlen) < 0)
                break;
            double t1 = MPI_Wtime();
            ckpt_save_async_wait(a, path, sizeof(path), err, errlen);
            double t2 = MPI_Wtime();
            b->stall_async_s = t1 - t0 < b->stall_async_s ? t1 - t0
                                                          : b->stall_async_s;
            b->async_total_s = t2 - t0;
        }
        ckpt_async_free(a);
    } else {
        b->stall_async_s = -1; /* no MPI_THREAD_MULTIPLE */
    }
    char dir[CONFIG_STR_MAX + 8];
    snprintf(dir, sizeof(dir), "%s/ckpt", tr->c.run_dir);
    b->raw_w_s = raw_io(tr->g.world, dir, b->bytes, 1);
    b->raw_r_s = raw_io(tr->g.world, dir, b->bytes, 0);
    return 0;
}

static void report(const struct trainer *tr, const struct ckpt_bench *b)
{
    if (tr->g.rank != 0)
        return;
    double gb = (double)b->bytes / 1e9;
    printf("checkpoint of %lld parameters: %.1f MB, %d rank(s), in %s/ckpt\n",
           (long long)gpt_num_params(&tr->m.cfg), b->bytes / 1e6, tr->g.size,
           tr->c.run_dir);
    printf("  save %.3f s = %.3f GB/s   (plain write+fsync %.3f GB/s)\n",
           b->save_s, gb / b->save_s, gb / b->raw_w_s);
    printf("  load %.3f s = %.3f GB/s   (plain read %.3f GB/s)\n", b->load_s,
           gb / b->load_s, gb / b->raw_r_s);
    printf("  training stall per save: %.1f ms synchronous, %.1f ms with "
           "ckpt_async=1 (background write %.1f ms)\n", 1e3 * b->save_s,
           1e3 * b->stall_async_s, 1e3 * b->async_total_s);
    printf("{\"bytes\":%zu,\"write_gbps\":%.4f,\"read_gbps\":%.4f,"
           "\"raw_write_gbps\":%.4f,\"raw_read_gbps\":%.4f,"
           "\"write_vs_raw\":%.3f,\"stall_ms\":%.2f,\"stall_ms_async\":%.2f,"
           "\"world\":%d}\n", b->bytes, gb / b->save_s, gb / b->load_s,
           gb / b->raw_w_s, gb / b->raw_r_s, b->raw_w_s / b->save_s,
           1e3 * b->save_s, 1e3 * b->stall_async_s, tr->g.size);
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
