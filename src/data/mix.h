/*
 * mix.h - weighted data mixtures: `data = dirA:0.7,dirB:0.3` trains on
 * several prepared directories at once (several corpora, or several
 * tasks), each sequence drawn from one of them with the given
 * probabilities; validation reports a loss per dataset.
 *
 * Spec.  A comma-separated list of DIR or DIR:WEIGHT (WEIGHT a positive
 * number; the text after the last ':' is a weight only when it parses as
 * one, so a path with ':' in it still works without a weight).  Weights
 * default to 1 and are normalised to sum 1.  One directory without a
 * weight is the plain single-dataset run.
 *
 * Sampling.  Sequence i of step s comes from dataset d, the first with
 *   u < w_0 + ... + w_d,   u = (rng_u64(rng_key(seed, RNG_MIX, s), i)
 *                               >> 11) * 2^-53,
 * and starts, within d's train stream, at
 *   rng_u64(rng_key(seed, RNG_DATA, s), i) % (ntok_d - T)
 * exactly as with one dataset (data.h): a function of (seed, s, i) alone,
 * and a single dataset draws the same windows as before mixtures existed.
 *
 * Every directory must hold the same vocabulary: the same vocab_size
 * once resolved, and identical merges.txt files when they have one.
 */
#ifndef MPITRON_MIX_H
#define MPITRON_MIX_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"

#define MIX_MAX 16
#define MIX_PATH_MAX 512

struct data_spec {
    int n;
    char dir[MIX_MAX][MIX_PATH_MAX];
    double w[MIX_MAX]; /* normalised */
};

/* Parse the `data` key.  Returns 0 or -1 with the reason in err. */
int data_spec_parse(const char *s, struct data_spec *sp, char *err,
                    size_t errlen);

/* Every directory of the spec holds more than min_tokens tokens in its
 * split, by the shards' sizes (data_split_size_tokens; a directory without
 * the split passes: opening it says so).  0, or -1 with err naming the
 * directory and the count, as mixture_open would after its full check:
 * for failing before a long start-up. */
int data_spec_check_len(const char *spec, const char *split,
                        int64_t min_tokens, char *err, size_t errlen);

/* data_vocab_resolve (data.h) over every directory of the spec; they must
 * agree (and have byte-identical merges.txt, if any).  0 or -1 + err. */
int data_spec_vocab(const char *spec, int *vocab, int optional, char *err,
                    size_t errlen);

/* The merges.txt that decodes the spec's tokens: "" when the first
 * directory has none.  out holds MIX_PATH_MAX + 16 bytes. */
void data_spec_tokenizer(const char *spec, char *out, size_t outlen);

struct mixture {
    int n;
    struct dataset ds[MIX_MAX];
    double cum[MIX_MAX]; /* cumulative weights, cum[n-1] = 1 */
};

/* Open split ("train" or "val") of every directory.  Each needs more
 * than min_tokens tokens.  Returns 0 or -1 with err naming the directory.
 * Free with mixture_close. */
int mixture_open(struct mixture *mx, const struct data_spec *sp,
                 const char *split, int vocab_size, int64_t min_tokens,
                 char *err, size_t errlen);
void mixture_close(struct mixture *mx);

/* Sequences [seq0, seq0 + nseq) of the global train batch of step s,
 * length T: inp, tgt (nseq, T); dstart (nseq, T) or NULL: for each
 * input token, the index in its sequence of the first token of its
 * document (0 when the document began before the window). */
void mixture_train_batch(const struct mixture *mx, uint64_t seed,
                         int64_t step, int64_t seq0, int nseq, int T,
                         int32_t *inp, int32_t *tgt, int32_t *dstart);

#endif
