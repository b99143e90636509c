#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

/* prefix, message and newline in one write: under mpirun, stdout and
 * stderr travel through separate pipes and are merged line by line only
 * if a line leaves in one piece (a prefix written apart from its message
 * came out with another line of stdout between them) */
static void emit(const char *prefix, const char *fmt, va_list ap)
{
    char line[8192];
    int n = snprintf(line, sizeof line, "%s", prefix);
    if (n >= 0 && (size_t)n < sizeof line - 1)
        vsnprintf(line + n, sizeof line - 1 - (size_t)n, fmt, ap);
    size_t len = strlen(line);
    line[len] = '\n';
    fwrite(line, 1, len + 1, stderr);
    fflush(stderr);
}

void log_warn(MPI_Comm comm, const char *fmt, ...)
{
    if (comm_rank(comm) != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit("mpitron: warning: ", fmt, ap);
    va_end(ap);
}

void log_error(const char *fmt, ...)
{
    int init = 0, size = 1, rank = 0;
    MPI_Initialized(&init);
    if (init) {
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    }
    char prefix[64] = "mpitron: error: ";
    if (size > 1)
        snprintf(prefix, sizeof prefix, "mpitron: rank %d: error: ", rank);
    va_list ap;
    va_start(ap, fmt);
    emit(prefix, fmt, ap);
    va_end(ap);
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
