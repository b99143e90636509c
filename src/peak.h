/*
 * peak.h - the sgemm peak that MFU is measured against: square sgemm of
 * size n through the same OpenBLAS, at the thread count in force, best of
 * reps runs after one warm-up.  Returns GFLOP/s.  Allocates and frees its
 * own buffers (64 MB for n = 2048).
 */
#ifndef MPITRON_PEAK_H
#define MPITRON_PEAK_H

double sgemm_gflops(int m, int n, int k, int reps);
double sgemm_peak_gflops(void);
/* A more careful peak for benchmarks: best over sizes 1024, 1536 and 2048
 * with reps runs each (about 1 s per 10 reps at 90 GFLOP/s). */
double sgemm_peak_careful(int reps);

/* Set the BLAS and OpenMP thread counts of this process (n > 0). */
void threads_set(int n);
/* The BLAS pool and the OpenMP pool separately (each only if > 0). */
void threads_set_each(int blas, int omp);
int threads_get(void);

#endif
