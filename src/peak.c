#include "peak.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "log.h"

double sgemm_gflops(int m, int n, int k, int reps)
{
    float *a = malloc((size_t)m * k * sizeof(float));
    float *b = malloc((size_t)k * n * sizeof(float));
    float *c = malloc((size_t)m * n * sizeof(float));
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0.0;
    }
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = (float)(i % 7) * 0.01f;
    for (size_t i = 0; i < (size_t)k * n; i++)
        b[i] = (float)(i % 5) * 0.01f;
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a,
                    k, b, k, 0.0f, c, n);
        double t = now_s() - t0;
        if (r > 0 && t < best) /* r == 0 warms up */
            best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * m * n * k / best * 1e-9;
}

double sgemm_peak_gflops(void)
{
    return sgemm_gflops(1536, 1536, 1536, 4);
}

double sgemm_peak_careful(int reps)
{
    static const int sizes[] = {1024, 1536, 2048};
    double best = 0.0;
    for (int i = 0; i < 3; i++) {
        double g = sgemm_gflops(sizes[i], sizes[i], sizes[i], reps);
        best = g > best ? g : best;
    }
    return best;
}

void threads_set(int n)
{
    threads_set_each(n, n);
}

void threads_set_each(int blas, int omp)
{
    if (blas > 0)
        openblas_set_num_threads(blas);
    if (omp > 0)
        omp_set_num_threads(omp);
}

int threads_get(void)
{
    return openblas_get_num_threads();
}
