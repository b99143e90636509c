/*
 * ckpt_async.c - asynchronous saves: copy every tensor's hyperslab into a
 * staging buffer owned by the object, then run ckpt_save on it in a
 * background thread over a communicator of its own, while training goes
 * on.  Needs MPI_THREAD_MULTIPLE.  Only that thread calls HDF5 while a
 * save is in flight (HDF5 here is not thread-safe).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

struct ckpt_async {
    MPI_Comm comm;      /* duplicated: used by the save thread only */
    pthread_t thread;
    int busy;           /* started and not waited for */
    int threaded;       /* 0: pthread_create failed, the save ran inline */
    float *stage;       /* staged hyperslabs, stage_cap floats */
    size_t stage_cap;
    char *names;        /* staged tensor names, names_cap bytes */
    size_t names_cap;
    struct ckpt_tensor *t;
    int n, t_cap;
    struct ckpt_meta meta;
    size_t config_cap;  /* bytes at meta.config_text */
    char dir[CKPT_PATHMAX];
    int rc;             /* of the save, agreed by ckpt_save */
    char path[CKPT_PATHMAX];
    char err[CKPT_ERRMAX];
};

static const char *level_name(int l)
{
    return l == MPI_THREAD_SINGLE ? "MPI_THREAD_SINGLE"
           : l == MPI_THREAD_FUNNELED ? "MPI_THREAD_FUNNELED"
           : l == MPI_THREAD_SERIALIZED ? "MPI_THREAD_SERIALIZED"
                                        : "MPI_THREAD_MULTIPLE";
}

int ckpt_async_init(MPI_Comm comm, struct ckpt_async **out, char *err,
                    size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    struct ckpt_async *a;
    int provided = MPI_THREAD_SINGLE, lowest;

    *out = NULL;
    MPI_Query_thread(&provided);
    MPI_Allreduce(&provided, &lowest, 1, MPI_INT, MPI_MIN, comm);
    if (lowest < MPI_THREAD_MULTIPLE) {
        ckpt_errf(e, "asynchronous checkpoints (ckpt_async=1) need MPI "
                     "initialised with MPI_THREAD_MULTIPLE, but it provides "
                     "%s: start it with MPI_Init_thread(..., "
                     "MPI_THREAD_MULTIPLE, ...), or set ckpt_async=0",
                  level_name(lowest));
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    a = calloc(1, sizeof *a);
    if (ckpt_agree(comm, a ? 0 : ckpt_errf(e, "out of memory"), e)) {
        free(a);
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    MPI_Comm_dup(comm, &a->comm);
    *out = a;
    return 0;
}

/* Grows *p to at least need elements of size sz; 0 or -1. */
static int grow(void **p, size_t *cap, size_t need, size_t sz)
{
    void *q;

    if (need <= *cap)
        return 0;
    q = realloc(*p, need * sz);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

/* Copies t, its names and data, meta and dir into a's buffers. */
static int stage(struct ckpt_async *a, const char *dir,
                 const struct ckpt_meta *meta, const struct ckpt_tensor *t,
                 int n, char *err)
{
    size_t nf = 0, nb = 0, cfg = meta->config_text
                                     ? strlen(meta->config_text) + 1 : 1;
    size_t tcap = (size_t)a->t_cap;
    char *name;
    float *data;

    if (n < 0 || (n > 0 && !t) || ckpt_fmt(a->dir, sizeof a->dir, "%s", dir))
        return ckpt_errf(err, "invalid tensor list or directory");
    for (int i = 0; i < n; i++) {
        int64_t c = ckpt_tensor_local_count(&t[i]);
        nf += c > 0 ? (size_t)c : 0;
        nb += t[i].name ? strlen(t[i].name) + 1 : 1;
    }
    if (grow((void **)&a->stage, &a->stage_cap, nf, sizeof(float)) ||
        grow((void **)&a->names, &a->names_cap, nb, 1) ||
        grow((void **)&a->t, &tcap, (size_t)n, sizeof *a->t) ||
        grow((void **)&a->meta.config_text, &a->config_cap, cfg, 1))
        return ckpt_errf(err, "out of memory staging a checkpoint (%zu "
                              "floats)", nf);
    a->t_cap = (int)tcap;
    a->n = n;
    name = a->names;
    data = a->stage;
    for (int i = 0; i < n; i++) {
        int64_t c = ckpt_tensor_local_count(&t[i]);
        const char *s = t[i].name ? t[i].name : "";
        a->t[i] = t[i];
        a->t[i].name = strcpy(name, s);
        name += strlen(s) + 1;
        a->t[i].data = NULL;
        if (c > 0 && t[i].data) {
            memcpy(data, t[i].data, sizeof(float) * (size_t)c);
            a->t[i].data = data;
            data += c;
        }
    }
    memcpy(a->meta.layout, meta->layout, sizeof a->meta.layout);
    a->meta.step = meta->step;
    a->meta.tokens_seen = meta->tokens_seen;
    a->meta.data_cursor = meta->data_cursor;
    a->meta.rng_seed = meta->rng_seed;
    memcpy(a->meta.config_text, meta->config_text ? meta->config_text : "",
           cfg);
    return 0;
}

static void *async_main(void *arg)
{
    struct ckpt_async *a = arg;

    a->rc = ckpt_save(a->comm, a->dir, &a->meta, a->t, a->n, a->path,
                      sizeof a->path, a->err, sizeof a->err);
    return NULL;
}

int ckpt_save_async_start(struct ckpt_async *a, const char *dir,
                          const struct ckpt_meta *meta,
                          const struct ckpt_tensor *t, int n, char *err,
                          size_t errlen)
{
    char e[CKPT_ERRMAX] = "";
    int rc;

    if (a->busy) {
        ckpt_err_out(err, errlen, "ckpt_save_async_start: a save is still "
                                  "in flight (call ckpt_save_async_wait "
                                  "first)");
        return -1;
    }
    /* no thread runs: the main thread may use a->comm */
    rc = ckpt_agree(a->comm, stage(a, dir, meta, t, n, e), e);
    if (rc) {
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    a->busy = 1;
    a->rc = -1;
    a->path[0] = a->err[0] = '\0';
    a->threaded = pthread_create(&a->thread, NULL, async_main, a) == 0;
    if (!a->threaded)
        async_main(a); /* same collectives on a->comm, just blocking */
    return 0;
}

int ckpt_save_async_busy(const struct ckpt_async *a)
{
    return a && a->busy;
}

int ckpt_save_async_wait(struct ckpt_async *a, char *path_out,
                         size_t pathlen, char *err, size_t errlen)
{
    if (!a || !a->busy)
        return 1;
    if (a->threaded)
        pthread_join(a->thread, NULL);
    a->busy = 0;
    a->threaded = 0;
    if (a->rc == 0 && path_out && pathlen > 0)
        snprintf(path_out, pathlen, "%s", a->path);
    if (a->rc)
        ckpt_err_out(err, errlen, a->err);
    return a->rc ? -1 : 0;
}

void ckpt_async_free(struct ckpt_async *a)
{
    if (!a)
        return;
    ckpt_save_async_wait(a, NULL, 0, NULL, 0);
    MPI_Comm_free(&a->comm);
    free(a->stage);
    free(a->names);
    free(a->t);
    free(a->meta.config_text);
    free(a);
}
