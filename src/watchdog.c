/*
 * watchdog.c - the hang watchdog (watchdog.h).
 */
#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "comm.h"
#include "phase.h"

#define WATCHDOG_POLL_S 0.5
#define WATCHDOG_GRACE_S 3.0
#define WATCHDOG_TAG 7
#define WATCHDOG_EXIT 75 /* EX_TEMPFAIL: retrying (a requeue) may work */

struct watchdog {
    double timeout;
    int rank, size, notify;
    MPI_Comm comm;         /* duplicate of world: notices only */
    MPI_Request req;       /* the posted receive of a notice */
    int note;              /* its buffer: the sender's rank */
    char run_dir[4096];
    char host[MPI_MAX_PROCESSOR_NAME + 1];
    pthread_t thread;
    int running;           /* the thread was started */
    atomic_int stop;
};

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Local wall-clock time of a CLOCK_MONOTONIC instant, "HH:MM:SS". */
static void wall_of(double mono, char *buf, size_t len)
{
    time_t t = time(NULL) - (time_t)(phase_now() - mono + 0.5);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Print the report, write RUN_DIR/hang_rank_R.txt, tell the others (when
 * this rank found the hang itself), wait the grace, abort. */
static void report(struct watchdog *w, const struct phase_rec *r,
                   double idle, int told_by)
{
    char what[1024], since[32], line[1600], path[4200], err[1024];
    phase_describe(r, w->rank, what, (int)sizeof(what));
    wall_of(r->since, since, sizeof(since));
    if (told_by < 0)
        snprintf(line, sizeof(line), "mpitron: rank %d: hang: no progress "
                 "for %.1f s (hang_timeout=%.0f): %s, since %s (host %s, pid "
                 "%ld)\n", w->rank, idle, w->timeout, what, since, w->host,
                 (long)getpid());
    else
        snprintf(line, sizeof(line), "mpitron: rank %d: hang reported by "
                 "rank %d; this rank: %s, for %.1f s, since %s (host %s, pid "
                 "%ld)\n", w->rank, told_by, what, idle, since, w->host,
                 (long)getpid());
    fputs(line, stderr);
    fflush(stderr);
    snprintf(path, sizeof(path), "%s/hang_rank_%d.txt", w->run_dir, w->rank);
    struct ckpt_buf b = {line, strlen(line)};
    if (ckpt_mkdir_p(w->run_dir, err, sizeof(err)) < 0 ||
        ckpt_replace(path, &b, 1, err, sizeof(err)) < 0)
        fprintf(stderr, "mpitron: rank %d: cannot write the hang report: "
                "%s\n", w->rank, err);
    MPI_Request *sent = told_by < 0 && w->notify
                            ? malloc((size_t)w->size * sizeof(MPI_Request))
                            : NULL; /* never waited for: the job aborts */
    for (int k = 1; sent && k < w->size; k++)
        MPI_Isend(&w->rank, 1, MPI_INT, (w->rank + k) % w->size,
                  WATCHDOG_TAG, w->comm, &sent[k]);
    sleep_s(WATCHDOG_GRACE_S);
    fprintf(stderr, "mpitron: rank %d: aborting the job after a hang\n",
            w->rank);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, WATCHDOG_EXIT);
}

static void *watch(void *arg)
{
    struct watchdog *w = arg;
    while (!atomic_load(&w->stop)) {
        sleep_s(WATCHDOG_POLL_S);
        if (atomic_load(&w->stop))
            break;
        struct phase_rec r;
        phase_get(&r);
        double idle = phase_now() - r.since;
        int told = 0;
        if (w->notify)
            MPI_Test(&w->req, &told, MPI_STATUS_IGNORE);
        if (r.kind != PHASE_NONE && idle > w->timeout)
            report(w, &r, idle, -1);
        else if (told)
            report(w, &r, idle, w->note);
    }
    return NULL;
}

int watchdog_start(struct watchdog **out, MPI_Comm world, int timeout_s,
                   const char *run_dir, char *err, size_t errlen)
{
    *out = NULL;
    if (timeout_s <= 0)
        return 0;
    struct watchdog *w = calloc(1, sizeof(*w));
    if (comm_agree(world, w ? 0 : -1, NULL, 0) < 0) {
        free(w);
        snprintf(err, errlen, "out of memory for the hang watchdog");
        return -1;
    }
    int provided = 0, len = 0;
    w->timeout = timeout_s;
    MPI_Comm_rank(world, &w->rank);
    MPI_Comm_size(world, &w->size);
    MPI_Query_thread(&provided);
    w->notify = provided == MPI_THREAD_MULTIPLE && w->size > 1;
    MPI_Get_processor_name(w->host, &len);
    snprintf(w->run_dir, sizeof(w->run_dir), "%s", run_dir);
    MPI_Comm_dup(world, &w->comm);
    w->req = MPI_REQUEST_NULL;
    if (w->notify)
        MPI_Irecv(&w->note, 1, MPI_INT, MPI_ANY_SOURCE, WATCHDOG_TAG,
                  w->comm, &w->req);
    *out = w; /* from here on, watchdog_stop frees it (collectively) */
    /* the thread takes no signal: they are the training loop's */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, watch, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    w->running = rc == 0;
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the hang watchdog thread: %s",
                 strerror(rc));
        return -1;
    }
    return 0;
}

void watchdog_stop(struct watchdog *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    if (w->running)
        pthread_join(w->thread, NULL);
    if (w->req != MPI_REQUEST_NULL) {
        MPI_Cancel(&w->req);
        MPI_Wait(&w->req, MPI_STATUS_IGNORE);
    }
    MPI_Comm_free(&w->comm);
    free(w);
}

void watchdog_debug_hang(const char *spec, int rank, int64_t step)
{
    int r = -1;
    long long s = 0;
    if (!spec[0] || sscanf(spec, "%d:%lld", &r, &s) != 2 || r != rank ||
        s != step)
        return;
    fprintf(stderr, "mpitron: rank %d: debug_hang: stopping progress before "
            "step %lld\n", rank, s);
    fflush(stderr);
    phase_enter(PHASE_DEBUG_HANG, "debug_hang", step, -1, -1, NULL);
    for (;;)
        sleep_s(1.0);
}
