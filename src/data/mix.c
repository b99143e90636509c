/*
 * mix.c - weighted data mixtures (spec and sampling in mix.h).
 */
#include "mix.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe/bpe.h"
#include "rng.h"

/* One item [s, e) of the list: DIR or DIR:WEIGHT. */
static int item_parse(const char *s, const char *e, char *dir, double *w,
                      char *err, size_t errlen)
{
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    *w = 1.0;
    const char *colon = NULL;
    for (const char *p = s; p < e; p++)
        if (*p == ':')
            colon = p;
    if (colon) {
        char num[64];
        size_t n = (size_t)(e - colon - 1);
        if (n > 0 && n < sizeof num) {
            memcpy(num, colon + 1, n);
            num[n] = '\0';
            char *end;
            errno = 0;
            double v = strtod(num, &end);
            if (!*end && !errno && end != num) {
                if (!(v > 0.0) || !isfinite(v)) {
                    snprintf(err, errlen, "weight '%s' must be a positive "
                             "number", num);
                    return -1;
                }
                *w = v;
                e = colon;
            }
        }
    }
    size_t len = (size_t)(e - s);
    if (len == 0) {
        snprintf(err, errlen, "an empty directory in the list");
        return -1;
    }
    if (len >= MIX_PATH_MAX) {
        snprintf(err, errlen, "a directory name longer than %d bytes",
                 MIX_PATH_MAX - 1);
        return -1;
    }
    memcpy(dir, s, len);
    dir[len] = '\0';
    return 0;
}

int data_spec_parse(const char *s, struct data_spec *sp, char *err,
                    size_t errlen)
{
    memset(sp, 0, sizeof *sp);
    double big = 0.0;
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);
        if (sp->n == MIX_MAX) {
            snprintf(err, errlen, "more than %d datasets", MIX_MAX);
            return -1;
        }
        if (item_parse(p, e, sp->dir[sp->n], &sp->w[sp->n], err, errlen) < 0)
            return -1;
        if (sp->w[sp->n] > big)
            big = sp->w[sp->n];
        sp->n++;
        if (!comma)
            break;
        p = comma + 1;
    }
    double sum = 0.0;
    for (int i = 0; i < sp->n; i++)
        sum += sp->w[i];
    /* weights near DBL_MAX: the sum overflows to inf and every share
     * would be 0; relative to the largest first (other sums keep the
     * plain division's bits) */
    if (!isfinite(sum)) {
        sum = 0.0;
        for (int i = 0; i < sp->n; i++)
            sum += sp->w[i] /= big;
    }
    for (int i = 0; i < sp->n; i++) {
        sp->w[i] /= sum;
        if (!(sp->w[i] > 0.0)) { /* a ratio beyond a double's range */
            snprintf(err, errlen, "weight of '%s' rounds to 0 next to the "
                     "largest (%g): give weights within a ratio of 1e300",
                     sp->dir[i], big);
            return -1;
        }
    }
    return 0;
}

/* Whole file into a malloc'ed buffer; NULL when unreadable. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = realloc(b, cap *= 2);
        if (!nb)
            free(b);
        b = nb;
    }
    fclose(f);
    *len = n;
    return b;
}

/* Same tokenizer file in a and b (both absent counts as the same). */
static int same_tokenizer(const char *a, const char *b)
{
    char pa[MIX_PATH_MAX + 16], pb[MIX_PATH_MAX + 16];
    snprintf(pa, sizeof pa, "%s/%s", a, BPE_FILE);
    snprintf(pb, sizeof pb, "%s/%s", b, BPE_FILE);
    size_t la = 0, lb = 0;
    char *x = slurp(pa, &la), *y = slurp(pb, &lb);
    int same = (!x && !y) || (x && y && la == lb && !memcmp(x, y, la));
    free(x);
    free(y);
    return same;
}

int data_spec_check_len(const char *spec, const char *split,
                        int64_t min_tokens, char *err, size_t errlen)
{
    struct data_spec sp;
    char e[512];
    if (data_spec_parse(spec, &sp, e, sizeof e) < 0) {
        snprintf(err, errlen, "data=%s: %s", spec, e);
        return -1;
    }
    for (int i = 0; i < sp.n; i++) {
        int64_t n = data_split_size_tokens(sp.dir[i], split);
        if (n >= 0 && n <= min_tokens) { /* the message mixture_open gives */
            snprintf(err, errlen, "%s: the %s split has %" PRId64 " tokens, "
                     "not more than %" PRId64, sp.dir[i], split, n,
                     min_tokens);
            return -1;
        }
    }
    return 0;
}

int data_spec_vocab(const char *spec, int *vocab, int optional, char *err,
                    size_t errlen)
{
    struct data_spec sp;
    char e[512];
    if (data_spec_parse(spec, &sp, e, sizeof e) < 0) {
        snprintf(err, errlen, "data=%s: %s", spec, e);
        return -1;
    }
    int want = *vocab, first = 0;
    for (int i = 0; i < sp.n; i++) {
        int v = want;
        if (data_vocab_resolve(sp.dir[i], &v, optional, err, errlen) < 0)
            return -1;
        if (i == 0)
            first = v;
        else if (v != first || !same_tokenizer(sp.dir[0], sp.dir[i])) {
            snprintf(err, errlen, "data: %s and %s hold different "
                     "vocabularies (%d and %d tokens%s): a mixture needs "
                     "one tokenizer", sp.dir[0], sp.dir[i], first, v,
                     v == first ? ", different merges.txt" : "");
            return -1;
        }
    }
    *vocab = first;
    return 0;
}

void data_spec_tokenizer(const char *spec, char *out, size_t outlen)
{
    struct data_spec sp;
    char e[256];
    out[0] = '\0';
    if (data_spec_parse(spec, &sp, e, sizeof e) < 0)
        return;
    snprintf(out, outlen, "%s/%s", sp.dir[0], BPE_FILE);
    FILE *f = fopen(out, "rb");
    if (f)
        fclose(f);
    else
        out[0] = '\0';
}

int mixture_open(struct mixture *mx, const struct data_spec *sp,
                 const char *split, int vocab_size, int64_t min_tokens,
                 char *err, size_t errlen)
{
    memset(mx, 0, sizeof *mx);
    double c = 0.0;
    for (int i = 0; i < sp->n; i++) {
        if (dataset_open(&mx->ds[i], sp->dir[i], split, vocab_size, err,
                         errlen) < 0) {
            mixture_close(mx);
            return -1;
        }
        mx->n = i + 1;
        if (mx->ds[i].ntok <= min_tokens) {
            snprintf(err, errlen, "%s: the %s split has %" PRId64 " tokens, "
                     "not more than %" PRId64, sp->dir[i], split,
                     mx->ds[i].ntok, min_tokens);
            mixture_close(mx);
            return -1;
        }
        c += sp->w[i];
        mx->cum[i] = c;
    }
    mx->cum[mx->n - 1] = 1.0;
    return 0;
}

void mixture_close(struct mixture *mx)
{
    for (int i = 0; i < mx->n; i++)
        dataset_close(&mx->ds[i]);
    mx->n = 0;
}

void mixture_train_batch(const struct mixture *mx, uint64_t seed,
                         int64_t step, int64_t seq0, int nseq, int T,
                         int32_t *inp, int32_t *tgt, int32_t *dstart)
{
    uint64_t key = rng_key(seed, RNG_DATA, (uint64_t)step);
    uint64_t mkey = rng_key(seed, RNG_MIX, (uint64_t)step);
    for (int k = 0; k < nseq; k++) {
        uint64_t i = (uint64_t)(seq0 + k);
        int d = 0;
        if (mx->n > 1) {
            double u = (double)(rng_u64(mkey, i) >> 11) * 0x1.0p-53;
            while (d < mx->n - 1 && u >= mx->cum[d])
                d++;
        }
        const struct dataset *ds = &mx->ds[d];
        uint64_t range = (uint64_t)(ds->ntok - T);
        int64_t pos = (int64_t)(rng_u64(key, i) % range);
        size_t o = (size_t)k * (size_t)T;
        dataset_window(ds, pos, T, inp + o, tgt + o,
                       dstart ? dstart + o : NULL);
    }
}
