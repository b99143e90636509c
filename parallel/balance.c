/*
 * balance.c - stage boundaries, batch shares and stragglers from measured
 * figures (see balance.h).
 */
#include "balance.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp.h"

int balance_stages(int n_layer, int p, double block_s, double embed_s,
                   double head_s, int *bound, char *err, size_t errlen)
{
    if (!(block_s >= 0.0) || !(embed_s >= 0.0) || !(head_s >= 0.0) ||
        !isfinite(block_s + embed_s + head_s)) {
        snprintf(err, errlen, "pipeline partition: calibrated costs must be "
                 "finite and >= 0 (block %g s, embedding %g s, head %g s)",
                 block_s, embed_s, head_s);
        return -1;
    }
    double *cost = malloc((size_t)(n_layer > 0 ? n_layer : 1) *
                          sizeof(double));
    if (!cost) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int l = 0; l < n_layer; l++)
        cost[l] = block_s;
    int rc = pp_partition(n_layer, p, cost, embed_s, head_s, bound, err,
                          errlen);
    free(cost);
    return rc;
}

/* Stage s on blocks [a, b), summed in one fixed order so that equal
 * splits give bit-equal costs (the comparisons with the optimum are
 * exact). */
static double stage_cost(const double *blk, int s, int p, int a, int b,
                         double embed_s, double head_s)
{
    double c = (b - a) * blk[s];
    if (s == 0)
        c += embed_s;
    if (s == p - 1)
        c += head_s;
    return c;
}

double balance_stages_slowest(int p, const int *bound, const double *blk,
                              double embed_s, double head_s)
{
    double m = 0.0;
    for (int s = 0; s < p; s++) {
        double c = stage_cost(blk, s, p, bound[s], bound[s + 1], embed_s,
                              head_s);
        m = c > m ? c : m;
    }
    return m;
}

/* f[s (n + 1) + j]: the least slowest stage of blocks [j, n) over stages
 * s..p-1, each at least one block (INFINITY where impossible). */
static void speeds_table(int n, int p, const double *blk, double e,
                         double h, double *f)
{
    for (int s = p - 1; s >= 0; s--)
        for (int j = 0; j <= n; j++) {
            double best = INFINITY;
            if (s == p - 1 && n - j >= 1)
                best = stage_cost(blk, s, p, j, n, e, h);
            for (int b = j + 1; s < p - 1 && n - b >= p - 1 - s; b++) {
                double x = stage_cost(blk, s, p, j, b, e, h);
                double y = f[(size_t)(s + 1) * (n + 1) + b];
                double v = x > y ? x : y;
                best = v < best ? v : best;
            }
            f[(size_t)s * (n + 1) + j] = best;
        }
}

int balance_stages_speeds(int n_layer, int p, const double *blk,
                          double embed_s, double head_s, int *bound,
                          char *err, size_t errlen)
{
    int n = n_layer, ok = embed_s >= 0.0 && head_s >= 0.0 &&
                           isfinite(embed_s + head_s);
    for (int s = 0; ok && s < p; s++)
        ok = blk[s] >= 0.0 && isfinite(blk[s]);
    if (p < 1 || n < p || !ok) {
        snprintf(err, errlen, "pipeline partition: cannot split %d blocks "
                 "into %d stages by calibrated costs (at least one block "
                 "each; costs finite and >= 0)", n, p);
        return -1;
    }
    double *f = malloc((size_t)p * (size_t)(n + 1) * sizeof(double));
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    speeds_table(n, p, blk, embed_s, head_s, f);
    double opt = f[0];
    bound[0] = 0;
    for (int s = 0; s < p - 1; s++) { /* each boundary as early as it can */
        int b = bound[s] + 1;
        while (stage_cost(blk, s, p, bound[s], b, embed_s, head_s) > opt ||
               f[(size_t)(s + 1) * (n + 1) + b] > opt)
            b++; /* terminates: the optimum's own split qualifies */
        bound[s + 1] = b;
    }
    bound[p] = n;
    free(f);
    return 0;
}

void balance_stages_from_counts(int p, const int *counts, int *bound)
{
    bound[0] = 0;
    for (int s = 0; s < p; s++)
        bound[s + 1] = bound[s] + counts[s];
}

/* t[i] if usable, else the slowest usable rate (1 when there is none). */
static double rate(int n, const double *t, int i)
{
    if (t[i] > 0.0 && isfinite(t[i]))
        return t[i];
    double worst = 0.0;
    for (int j = 0; j < n; j++)
        if (t[j] > 0.0 && isfinite(t[j]) && t[j] > worst)
            worst = t[j];
    return worst > 0.0 ? worst : 1.0;
}

int balance_shares(int n, const double *t, int total, int *shares)
{
    if (n < 1 || total < n)
        return -1;
    for (int i = 0; i < n; i++)
        shares[i] = 1;
    for (int k = n; k < total; k++) {
        int best = 0;
        double bt = (shares[0] + 1) * rate(n, t, 0);
        for (int i = 1; i < n; i++) {
            double ti = (shares[i] + 1) * rate(n, t, i);
            if (ti < bt) {
                bt = ti;
                best = i;
            }
        }
        shares[best]++;
    }
    return 0;
}

void balance_shares_equal(int n, int total, int *shares)
{
    for (int i = 0; i < n; i++)
        shares[i] = total / n + (i < total % n);
}

double balance_makespan(int n, const double *t, const int *shares)
{
    double m = 0.0;
    for (int i = 0; i < n; i++) {
        double x = shares[i] * rate(n, t, i);
        m = x > m ? x : m;
    }
    return m;
}

int balance_rebalance(int n, const double *t, const int *cur, int total,
                      double min_gain, int *next)
{
    if (balance_shares(n, t, total, next) < 0) {
        memcpy(next, cur, (size_t)n * sizeof(int));
        return 0;
    }
    if (balance_makespan(n, t, next) <
        (1.0 - min_gain) * balance_makespan(n, t, cur))
        return memcmp(next, cur, (size_t)n * sizeof(int)) != 0;
    memcpy(next, cur, (size_t)n * sizeof(int));
    return 0;
}

int balance_first(const int *shares, int r)
{
    int s = 0;
    for (int i = 0; i < r; i++)
        s += shares[i];
    return s;
}

int balance_micro_batches(int nseq, int mb, int *sizes)
{
    if (nseq <= 0 || mb <= 0)
        return 0;
    int k = (nseq + mb - 1) / mb;
    for (int i = 0; i < k; i++)
        sizes[i] = nseq / k + (i < nseq % k);
    return k;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double balance_imbalance(int n, const double *busy)
{
    double most = 0.0, sum = 0.0;
    if (n < 1)
        return 0.0;
    most = busy[0];
    for (int i = 1; i < n; i++)
        most = busy[i] > most ? busy[i] : most;
    for (int i = 0; i < n; i++)
        sum += most - busy[i];
    return sum / n;
}

int balance_straggler(int n, const double *busy, double threshold,
                      double *ratio, int *slowest)
{
    *ratio = 1.0;
    *slowest = 0;
    if (n < 1)
        return -1;
    double *s = malloc((size_t)n * sizeof(double));
    if (!s)
        return -1;
    memcpy(s, busy, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    for (int i = 1; i < n; i++)
        if (busy[i] > busy[*slowest])
            *slowest = i;
    *ratio = med > 0.0 ? busy[*slowest] / med : 1.0;
    return *ratio > threshold ? *slowest : -1;
}
