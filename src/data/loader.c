/*
 * loader.c - the double-buffered prefetching loader (loader.h).
 *
 * Step s always lives in slot s & 1.  The caller holds slot s&1 between
 * loader_next(s) and its next call; the thread only ever fills slot
 * want&1, and loader_next sets want = s+1 (the other slot) once step s is
 * ready, so the two never touch the same buffer.  A jump (resume, or any
 * step other than the prefetched one) re-targets the thread and waits.
 */
#include "loader.h"

#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void fill(struct loader *l, int64_t step, int slot)
{
    struct batch_shape *sh = &l->shape[slot];
    batch_plan_at(&l->plan, step, sh);
    int64_t seq0 = (int64_t)l->dp_rank * sh->per_rank;
    if (l->nseq > 0 && sh->B == l->plan.batch_size &&
        sh->T == l->plan.seq_len) { /* a full-size step: the share */
        seq0 = l->seq0;
        sh->per_rank = l->nseq;
        sh->accum = (l->nseq + sh->mb - 1) / sh->mb;
    }
    mixture_train_batch(l->mx, l->seed, step, seq0, sh->per_rank, sh->T,
                        l->buf[slot][0], l->buf[slot][1],
                        l->want_docs ? l->buf[slot][2] : NULL);
}

static void *loader_main(void *arg)
{
    struct loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop &&
               (l->want < 0 || l->slot_step[l->want & 1] == l->want))
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop)
            break;
        int64_t w = l->want;
        int slot = (int)(w & 1);
        l->slot_step[slot] = -1;   /* being overwritten */
        pthread_mutex_unlock(&l->mu);
        fill(l, w, slot);
        pthread_mutex_lock(&l->mu);
        l->slot_step[slot] = w;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void loader_buffers_free(struct loader *l)
{
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < 3; b++) {
            free(l->buf[s][b]);
            l->buf[s][b] = NULL;
        }
}

int loader_init(struct loader *l, const struct mixture *mx,
                const struct batch_plan *plan, int dp_rank,
                const int *shares, uint64_t seed, int want_docs,
                int64_t first_step, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    assert(first_step >= 0);
    l->mx = mx;
    l->plan = *plan;
    l->seed = seed;
    l->dp_rank = dp_rank;
    l->want_docs = want_docs;
    l->slot_step[0] = l->slot_step[1] = -1;
    l->want = first_step;
    /* tokens per rank are at most the full step's in every plan */
    size_t per = (size_t)plan->batch_size / (size_t)plan->dp;
    for (int d = 0; shares && d < plan->dp; d++) {
        if (d < dp_rank)
            l->seq0 += shares[d];
        if (d == dp_rank)
            l->nseq = shares[d];
    }
    per = (size_t)l->nseq > per ? (size_t)l->nseq : per;
    size_t n = per * (size_t)plan->seq_len;
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < 3; b++)
            if (!(l->buf[s][b] = malloc((n ? n : 1) * sizeof(int32_t)))) {
                loader_buffers_free(l);
                snprintf(err, errlen,
                         "loader: out of memory for 6 x %zu tokens", n);
                return -1;
            }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    /* the thread inherits a full signal mask: signals go to the main
     * thread, whose handler sets the stop flag the step loop reads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, loader_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        loader_buffers_free(l);
        snprintf(err, errlen, "loader: cannot start thread: %s",
                 strerror(rc));
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void loader_next(struct loader *l, int64_t step, struct step_batch *b,
                 double *wait_s)
{
    assert(step >= 0);
    int slot = (int)(step & 1);
    pthread_mutex_lock(&l->mu);
    if (l->slot_step[slot] != step) {
        double t0 = now_s();
        if (l->want != step) {   /* jump: re-target the thread */
            l->want = step;
            pthread_cond_broadcast(&l->cv);
        }
        while (l->slot_step[slot] != step)
            pthread_cond_wait(&l->cv, &l->mu);
        if (wait_s)
            *wait_s += now_s() - t0;
    }
    l->want = step + 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    b->inp = l->buf[slot][0];
    b->tgt = l->buf[slot][1];
    b->dstart = l->want_docs ? l->buf[slot][2] : NULL;
    b->shape = l->shape[slot];
}

void loader_free(struct loader *l)
{
    if (!l->buf[0][0])
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    loader_buffers_free(l);
}
