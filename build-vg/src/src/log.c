#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static int comm_rank(MPI_Comm comm)
{
    int init = 0, r = 0;
    MPI_Initialized(&init);
    if (init && comm != MPI_COMM_NULL)
        MPI_Comm_rank(comm, &r);
    return r;
}

void log_info(MPI_Comm comm, const char *fmt, ...)
{
    if (comm_rank(comm) != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

void log_warn(MPI_Comm comm, const char *fmt, ...)
{
    if (comm_rank(comm) != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("mpitron: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void log_error(const char *fmt, ...)
{
    int init = 0, size = 1, rank = 0;
    MPI_Initialized(&init);
    if (init) {
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    }
    va_list ap;
    va_start(ap, fmt);
    if (size > 1)
        fprintf(stderr, "mpitron: rank %d: error: ", rank);
    else
        fputs("mpitron: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
