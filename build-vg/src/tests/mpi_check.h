/*
 * mpi_check.h - checks for CMocka tests under MPI that do not stop the
 * test, and a verdict that every rank of MPI_COMM_WORLD agrees on.
 *
 * Why: a failed CMocka assertion leaves the test on that rank alone, and
 * the other ranks hang in the next collective.  So a test records its
 * failures with CHECK and asserts once, on every rank, in verdict():
 *
 *   CHECK(cond, fmt, ...)  cond is evaluated once.  When it is false, one
 *       whole line (ranks write concurrently)
 *         rank R: FILE:LINE: check failed: COND: MESSAGE
 *       goes to stderr, R being MPI_Comm_rank(MPI_COMM_WORLD) at the time
 *       of the failure, FILE:LINE the CHECK's own, MESSAGE printf(fmt, ...);
 *       the failure is counted on this rank and the test goes on.
 *   verdict()  sums the ranks' failure counts with MPI_Allreduce over
 *       MPI_COMM_WORLD, sets this rank's count back to 0 and asserts
 *       (assert_int_equal) that the sum is 0: all ranks pass or fail the
 *       test together, and every rank's failures are in its stderr.
 *
 * verdict() is collective: every rank must call it the same number of
 * times, in the same order, and must not leave a test by a CMocka
 * assertion of its own while another rank goes on to a verdict.
 *
 * Report cap: a rank prints at most 20 failures (MPI_CHECK_MAX_REPORTS)
 * between two verdicts, so a CHECK in a loop cannot flood stderr; later
 * failures are still counted, so the verdict is unchanged.
 *
 * Header-only (static functions and a static counter, so each test program
 * has its own) because it serves tests alone and is one small concept.
 * It includes <cmocka.h> with the headers CMocka needs before it, and
 * <mpi.h>; MPI must be initialised when CHECK fails or verdict() runs.
 */
#ifndef MPITRON_TESTS_MPI_CHECK_H
#define MPITRON_TESTS_MPI_CHECK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mpi.h>
#include <stdio.h>

#define MPI_CHECK_MAX_REPORTS 20

/* failed checks on this rank since the last verdict() */
static int mpi_check_n_bad;

/* Count one failure; print it (one line) unless the cap is reached. */
__attribute__((format(printf, 4, 5), unused))
static void mpi_check_failed(const char *file, int line, const char *cond,
                             const char *fmt, ...)
{
    char msg[768];
    int wr, k;
    va_list ap;
    if (mpi_check_n_bad++ >= MPI_CHECK_MAX_REPORTS)
        return;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    k = snprintf(msg, sizeof msg, "rank %d: %s:%d: check failed: %s: ", wr,
                 file, line, cond);
    if (k < 0 || (size_t)k >= sizeof msg)
        k = 0;
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", msg);
}

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond))                                                        \
            mpi_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);       \
    } while (0)

/* Collective over MPI_COMM_WORLD: no rank had a failed check since the
 * last verdict (a CMocka assertion on every rank otherwise). */
__attribute__((unused))
static void verdict(void)
{
    int total = 0;
    MPI_Allreduce(&mpi_check_n_bad, &total, 1, MPI_INT, MPI_SUM,
                  MPI_COMM_WORLD);
    mpi_check_n_bad = 0;
    assert_int_equal(total, 0);
}

#endif /* MPITRON_TESTS_MPI_CHECK_H */
