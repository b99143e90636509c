/*
 * batch.c - the batch plan: batch_ramp and seq_len_warmup (formulas in
 * batch.h).
 */
#include "batch.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_pos(const char *s, const char *end, int *out)
{
    if (s == end || *s == '+' || *s == '-')
        return -1;
    char buf[32];
    size_t n = (size_t)(end - s);
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *e;
    errno = 0;
    long v = strtol(buf, &e, 10);
    if (*e || errno || v <= 0 || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

int batch_spec_parse(const char *s, int *start, int *steps, char *err,
                     size_t errlen)
{
    *start = *steps = 0;
    if (!*s || !strcmp(s, "0"))
        return 0;
    const char *colon = strchr(s, ':');
    if (!colon || parse_pos(s, colon, start) < 0 ||
        parse_pos(colon + 1, colon + strlen(colon), steps) < 0) {
        *start = *steps = 0;
        snprintf(err, errlen, "expected START:STEPS, two positive "
                 "integers (or 0 = off)");
        return -1;
    }
    return 0;
}

static int is_pow2(int x)
{
    return x > 0 && (x & (x - 1)) == 0;
}

int batch_plan_check(const struct batch_plan *p, char *err, size_t errlen)
{
    int q = p->dp * p->mb;
    if (p->ramp_steps > 0 && p->ramp_start > p->batch_size) {
        snprintf(err, errlen, "batch_ramp=%d:%d starts above batch_size=%d",
                 p->ramp_start, p->ramp_steps, p->batch_size);
        return -1;
    }
    if (p->ramp_steps > 0 && q >= p->batch_size) {
        snprintf(err, errlen, "batch_ramp=%d:%d: the ramp grows in whole "
                 "micro-batches of dp * micro_batch = %d sequences, but "
                 "batch_size=%d is one of them (set micro_batch smaller)",
                 p->ramp_start, p->ramp_steps, q, p->batch_size);
        return -1;
    }
    if (p->sl_steps > 0 &&
        (p->sl_start >= p->seq_len || p->seq_len % p->sl_start != 0 ||
         !is_pow2(p->seq_len / p->sl_start))) {
        snprintf(err, errlen, "seq_len_warmup=%d:%d: START must be seq_len "
                 "/ 2^K for some K >= 1 (seq_len=%d)", p->sl_start,
                 p->sl_steps, p->seq_len);
        return -1;
    }
    return 0;
}

/* Sequences of full length in step s's batch (the ramp). */
static int ramp_at(const struct batch_plan *p, int64_t s)
{
    if (p->ramp_steps <= 0 || s >= p->ramp_steps)
        return p->batch_size;
    int q = p->dp * p->mb;
    int64_t b = p->ramp_start +
                (int64_t)(p->batch_size - p->ramp_start) * s / p->ramp_steps;
    b = b / q * q;
    return b < q ? q : (int)b;
}

/* 2^k: how many times shorter step s's sequences are. */
static int shrink_at(const struct batch_plan *p, int64_t s)
{
    if (p->sl_steps <= 0 || s >= p->sl_steps)
        return 1;
    int K = 0;
    while ((p->sl_start << K) < p->seq_len)
        K++;
    int k = (int)(s * K / p->sl_steps); /* 0 .. K-1 */
    return 1 << (K - k);
}

void batch_plan_at(const struct batch_plan *p, int64_t step,
                   struct batch_shape *out)
{
    if (step < 0)
        step = 0;
    int b = ramp_at(p, step), f = shrink_at(p, step);
    out->T = p->seq_len / f;
    out->B = b * f;
    out->per_rank = out->B / p->dp;
    out->mb = p->mb * f;
    out->accum = out->per_rank / out->mb;
}

int batch_plan_max_accum(const struct batch_plan *p)
{
    return p->batch_size / (p->dp * p->mb);
}

int batch_plan_uses_accum(const struct batch_plan *p, int accum)
{
    if (accum == batch_plan_max_accum(p))
        return 1;
    if (p->ramp_steps <= 0)
        return 0;
    /* the ramp's batch only grows: find a step with this count by
     * bisection on ramp_at (monotone) */
    int64_t lo = 0, hi = p->ramp_steps;
    int q = p->dp * p->mb;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ramp_at(p, mid) / q < accum)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->ramp_steps && ramp_at(p, lo) / q == accum;
}
