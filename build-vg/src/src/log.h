/*
 * log.h - rank-aware messages.  log_info prints on rank 0 of comm only;
 * log_error prints on every rank that calls it, prefixed with the world
 * rank when the world has more than one rank, to stderr.
 */
#ifndef MPITRON_LOG_H
#define MPITRON_LOG_H

#include <mpi.h>

void log_info(MPI_Comm comm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_warn(MPI_Comm comm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Wall clock in seconds (CLOCK_MONOTONIC). */
double now_s(void);

#endif
