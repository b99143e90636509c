/*
 * sample.c - `mpitron sample`: load a checkpoint's weights and generate
 * text with temperature, top-k and top-p (nucleus) sampling.  A model of
 * up to 256 tokens reads and writes bytes; a larger vocabulary needs its
 * BPE tokenizer (bpe.h), by default the merges.txt of the data directory
 * the checkpoint was trained on.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bpe/bpe.h"
#include "ckpt.h"
#include "ckpt_io.h"
#include "cli.h"
#include "gemm.h"
#include "infer.h"
#include "log.h"
#include "data/mix.h"
#include "rng.h"

struct sample_opts {
    const char *ckpt, *prompt, *tokenizer;
    long tokens, top_k;
    double temperature, top_p;
    long seed;
};

static int parse_opts(int argc, char **argv, struct sample_opts *o,
                      char *err, size_t errlen)
{
    static const char *const names[] = {"ckpt", "prompt", "tokens",
        "temperature", "top_k", "top_p", "seed", "tokenizer", NULL};
    const char *v[8] = {NULL, "\n", "256", "0.8", "0", "0.95", "1", NULL};
    const char *pos[1];
    if (cli_parse(argc, argv, names, v, pos, 0, err, errlen) < 0)
        return -1;
    o->ckpt = v[0];
    o->prompt = v[1];
    o->tokenizer = v[7];
    if (cli_int("tokens", v[2], &o->tokens, err, errlen) < 0 ||
        cli_double("temperature", v[3], &o->temperature, err, errlen) < 0 ||
        cli_int("top_k", v[4], &o->top_k, err, errlen) < 0 ||
        cli_double("top_p", v[5], &o->top_p, err, errlen) < 0 ||
        cli_int("seed", v[6], &o->seed, err, errlen) < 0)
        return -1;
    if (!o->ckpt) {
        snprintf(err, errlen, "sample needs --ckpt PATH|RUN_DIR");
        return -1;
    }
    if (o->temperature < 0 || o->top_p <= 0 || o->top_p > 1 ||
        o->top_k < 0 || o->tokens < 0 || o->tokens > INT32_MAX) {
        snprintf(err, errlen, "need temperature >= 0, 0 < top_p <= 1, "
                 "top_k >= 0, 0 <= tokens <= %ld", (long)INT32_MAX);
        return -1;
    }
    return 0;
}

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Pick a token from logits (V); scratch (2V).  temperature 0 = argmax. */
static int pick(const float *logits, int V, const struct sample_opts *o,
                float u, float *scratch)
{
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    if (o->temperature == 0.0)
        return best;
    float *p = scratch, *sorted = scratch + V;
    float mx = logits[best], sum = 0.0f;
    for (int i = 0; i < V; i++) {
        p[i] = expf((logits[i] - mx) / (float)o->temperature);
        sum += p[i];
    }
    for (int i = 0; i < V; i++)
        sorted[i] = p[i] /= sum;
    qsort(sorted, (size_t)V, sizeof(float), cmp_desc);
    /* threshold: keep probabilities >= the k-th largest and inside the
     * top_p nucleus */
    float cut = 0.0f, acc = 0.0f;
    for (int i = 0; i < V; i++) {
        acc += sorted[i];
        cut = sorted[i];
        if ((o->top_k > 0 && i + 1 >= o->top_k) || acc >= o->top_p)
            break;
    }
    float kept = 0.0f;
    for (int i = 0; i < V; i++)
        kept += p[i] >= cut ? p[i] : 0.0f;
    float r = u * kept;
    for (int i = 0; i < V; i++) {
        if (p[i] < cut)
            continue;
        r -= p[i];
        if (r <= 0.0f)
            return i;
    }
    return best;
}

static int load(const char *arg, struct config *c, struct gpt *m,
                char *err, size_t errlen)
{
    char path[4096];
    struct ckpt_meta meta;
    memset(&meta, 0, sizeof(meta));
    /* the file, or the one a run directory's `latest` names; when that
     * one fails its manifest check, the directory's newest that passes,
     * past damaged ones with a warning each (it failed on the checksum,
     * though an older good checkpoint was there) */
    char named[4096];
    if (ckpt_resolve(arg, named, sizeof(named), err, errlen) < 0)
        return -1;
    if (ckpt_find_good(MPI_COMM_SELF, named, path, sizeof(path), NULL, err,
                       errlen) != 0) {
        struct stat st;
        if (stat(arg, &st) != 0 || !S_ISDIR(st.st_mode))
            return -1; /* a file given: its own error */
        if (ckpt_find_good(MPI_COMM_SELF, arg, path, sizeof(path), stderr,
                           err, errlen) != 0)
            return -1;
        fprintf(stderr, "mpitron: sampling from %s\n", path);
    }
    if (ckpt_read_meta(MPI_COMM_SELF, path, &meta, err, errlen) < 0)
        return -1;
    config_defaults(c);
    int rc = config_load_text(c, meta.config_text ? meta.config_text : "",
                              path, err, errlen);
    free(meta.config_text);
    if (rc < 0 || config_finalize(c, err, errlen) < 0)
        return -1;
    struct gpt_config gc;
    gpt_config_from(c, &gc);
    if (gpt_config_check(&gc, 1, err, errlen) < 0) { /* a crafted file */
        char why[512];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errlen, "%s: the stored config: %s", path, why);
        return -1;
    }
    gc.precision = GPT_FP32; /* sampling reads the fp32 master weights */
    enum gemm_fp32_mode mode = GEMM_FP32_AUTO;
    gemm_fp32_mode_parse(c->fp32_gemm, &mode);
    gemm_set_fp32_mode(mode);
    struct grid g;
    if (grid_init(&g, MPI_COMM_SELF, 1, 1, 1, 0, err, errlen) < 0)
        return -1;
    rc = gpt_init(m, &gc, 1, 0, 0, gc.n_layer, c->seed, err, errlen);
    if (rc == 0) {
        struct train_state st;
        rc = model_ckpt_load(&g, m, c, path, 1, &st, NULL, err, errlen);
        if (rc < 0)
            gpt_free(m);
    }
    grid_free(&g);
    return rc;
}

/* The tokenizer of a model of V tokens: none (bytes) when V <= 256;
 * else --tokenizer (a merges.txt or a directory holding one), by default
 * the checkpoint's data directory.  0 or -1 with err. */
static int tokenizer_load(const struct config *c, const char *opt, int V,
                          struct bpe *b, int *have, char *err, size_t errlen)
{
    *have = 0;
    if (V <= 256)
        return 0;
    char path[4096];
    struct stat st;
    if (!opt) {
        data_spec_tokenizer(c->data, path, sizeof path);
        if (!path[0]) {
            snprintf(err, errlen, "the model has %d tokens and its data "
                     "(%s) has no %s (llm.c's GPT-2 shards carry no "
                     "tokenizer): give --tokenizer=PATH", V, c->data,
                     BPE_FILE);
            return -1;
        }
    } else if (stat(opt, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof path, "%s/%s", opt, BPE_FILE);
    } else {
        snprintf(path, sizeof path, "%s", opt);
    }
    if (bpe_load(b, path, err, errlen) < 0)
        return -1;
    if (b->vocab != V) {
        snprintf(err, errlen, "tokenizer %s has %d tokens, the model %d",
                 path, b->vocab, V);
        bpe_free(b);
        return -1;
    }
    *have = 1;
    return 0;
}

static void put_token(const struct bpe *b, int have, int tok)
{
    if (!have) {
        putchar(tok < 256 ? tok : '?');
        return;
    }
    size_t len;
    const unsigned char *p = bpe_token(b, tok, &len);
    fwrite(p, 1, len, stdout);
}

/* Returns 0, or -1 (out of memory, said). */
static int generate(struct gpt *m, const struct sample_opts *o,
                    struct bpe *b, int have)
{
    struct infer s;
    int T = m->cfg.seq_len, V = m->cfg.vocab_size;
    size_t np = strlen(o->prompt), cap = np + (size_t)o->tokens + 1;
    int *hist = malloc(cap * sizeof(int));
    uint16_t *ptok = malloc((np + 1) * sizeof(uint16_t));
    float *scratch = malloc(2 * (size_t)V * sizeof(float));
    int64_t nt = np;
    if (hist && ptok && have)
        nt = bpe_encode(b, (const unsigned char *)o->prompt, np, ptok);
    if (!hist || !ptok || !scratch || nt < 0 || infer_init(&s, m) < 0) {
        log_error("out of memory for generating %ld tokens", o->tokens);
        free(hist);
        free(ptok);
        free(scratch);
        return -1;
    }
    size_t n = 0;
    for (int64_t i = 0; i < nt; i++)
        hist[n++] = have ? ptok[i] : (unsigned char)o->prompt[i] % V;
    if (n == 0)
        hist[n++] = '\n';
    fwrite(o->prompt, 1, np, stdout);
    uint64_t key = rng_key((uint64_t)o->seed, RNG_SAMPLE, 0);
    int pos = 0;
    size_t fed = n > (size_t)T ? n - (size_t)T / 2 : 0; /* context start */
    for (long t = 0; t < o->tokens; t++) {
        /* feed what the cache has not seen; when it is full, restart it
         * on the last T/2 tokens (positions are learned: the window
         * slides) */
        if (pos == T) {
            fed = n - (size_t)T / 2;
            pos = 0;
        }
        while (fed + (size_t)pos < n) {
            infer_step(&s, hist[fed + (size_t)pos], pos);
            pos++;
        }
        int next = pick(s.logits, V, o, rng_uniform(key, (uint64_t)t),
                        scratch);
        hist[n++] = next;
        put_token(b, have, next);
    }
    putchar('\n');
    fflush(stdout);
    infer_free(&s);
    free(hist);
    free(ptok);
    free(scratch);
    return 0;
}

int cmd_sample(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: mpitron sample --ckpt PATH|RUN_DIR [--prompt=TEXT] "
               "[--tokens=N]\n       [--temperature=T] [--top_k=K] "
               "[--top_p=P] [--seed=S]\n"
               "       [--tokenizer=PATH]\n\n"
               "Generates N tokens (default 256) after the prompt (default a\n"
               "newline) with a KV cache.  temperature 0 is greedy (default\n"
               "0.8); top_k 0 = off (default); top_p nucleus (default 0.95).\n"
               "The same seed gives the same text.  A model of more than 256\n"
               "tokens encodes and decodes with its BPE tokenizer: PATH (a\n"
               "merges.txt or its directory), by default the checkpoint's\n"
               "data directory.  RUN_DIR: the checkpoint ckpt/latest names,\n"
               "or if that one is damaged the newest that passes the\n"
               "manifest check (the others skipped with a warning).\n");
        return 0;
    }
    struct sample_opts o;
    struct config c;
    struct gpt m;
    char err[1024];
    if (parse_opts(argc, argv, &o, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    if (load(o.ckpt, &c, &m, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    struct bpe b;
    int have;
    if (tokenizer_load(&c, o.tokenizer, m.cfg.vocab_size, &b, &have, err,
                       sizeof(err)) < 0) {
        log_error("%s", err);
        gpt_free(&m);
        return 1;
    }
    int rc = generate(&m, &o, &b, have);
    if (have)
        bpe_free(&b);
    gpt_free(&m);
    return rc < 0 ? 1 : 0;
}
