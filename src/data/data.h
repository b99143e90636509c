/*
 * data.h - token shards, the global batch of a step, and a prefetching
 * loader.
 *
 * Shard file format (llm.c's, so its prepared data works unchanged):
 *   1. header: 256 little-endian int32;
 *        [0] magic 20240520, [1] version 1, [2] token count n;
 *        the rest zero;
 *   2. n tokens, little-endian uint16.
 *   The file size must be exactly 1024 + 2n bytes.
 * A split (train or val) is the set of files <dir>/<split>_NNN.bin in
 * name order, read as one concatenated token stream.
 *
 * Batches.  Sequence i (0 <= i < batch_size) of the global batch of step s
 * is the window of T+1 tokens starting at position
 *   rng_u64(rng_key(seed, RNG_DATA, s), i) % (ntok - T)
 * of the train stream: a function of (seed, s, i) alone, so every layout
 * and every resumed run sees the same batch.  Validation batch j, sequence
 * i reads the window at ((j * val_batch + i) * T) % (ntok - T), in order.
 * inputs are tokens [0,T), targets tokens [1,T+1) of the window.
 */
#ifndef MPITRON_DATA_H
#define MPITRON_DATA_H

#include <stddef.h>
#include <stdint.h>

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1
#define SHARD_HEADER_INTS 256

struct shard {
    char *path;
    void *map;          /* whole file, mmap'ed read-only */
    size_t map_len;
    const uint16_t *tok;
    int64_t ntok;
    int64_t start;      /* position of tok[0] in the split's stream */
};

struct dataset {
    struct shard *shards;
    int nshards;
    int64_t ntok;       /* total tokens in the split */
    int64_t *docs;      /* document starts (<split>.docs), ascending, the
                           first 0; NULL when the directory has none */
    int64_t ndocs;
};

/*
 * Document index <dir>/<split>.docs, written by prepare beside the shards
 * (the shard format itself stays llm.c's):
 *   1. header: 256 little-endian int32; [0] magic 20240523, [1] version 1,
 *      [2] document count n, [3] and [4] the split's token count (low and
 *      high 32 bits); the rest zero;
 *   2. n little-endian int64: the stream position of each document's
 *      first token; ascending, the first 0, each below the token count.
 *   The file size must be exactly 1024 + 8n.
 */
#define DOCS_MAGIC 20240523
#define DOCS_VERSION 1
#define DOCS_SUFFIX ".docs"

/* Map every <dir>/<split>_*.bin.  Returns 0; -2 with err when the
 * directory holds no shard of the split; or -1 with err naming the file
 * at fault (missing directory, bad magic, bad version, size that
 * disagrees with the header, token >= vocab_size, a bad document index).
 * On success the caller owns ds and frees it with dataset_close. */
int dataset_open(struct dataset *ds, const char *dir, const char *split,
                 int vocab_size, char *err, size_t errlen);
void dataset_close(struct dataset *ds);

/* The tokens that <dir>/<split>_*.bin hold by their sizes alone (the
 * header off each; nothing read or checked: dataset_open does that), -1
 * when there is no such shard or directory.  Cheap: for checks that
 * should fail before a long start-up. */
int64_t data_split_size_tokens(const char *dir, const char *split);

/* The start of the document holding stream position pos (0 without a
 * document index). */
int64_t dataset_doc_start(const struct dataset *ds, int64_t pos);

/* The largest token of the split (a pass over every token). */
int dataset_max_token(const struct dataset *ds);

/*
 * The vocabulary of the shards in dir, for vocab_size = 0: the size named
 * by dir/merges.txt (bpe.h) when there is one; else 256 when every train
 * and val token is below 256 (byte-level); else 50257 when every token is
 * below 50257 (llm.c's GPT-2-tokenised shards, which carry no vocabulary
 * file); else -1 with err asking for vocab_size.  Also -1 when the
 * directory or its shards are bad.
 */
int data_vocab_detect(const char *dir, int *vocab, char *err, size_t errlen);

/* The config's vocab_size against dir: *vocab 0 is detected
 * (data_vocab_detect; when optional and dir does not exist, 256); a
 * positive *vocab must equal merges.txt's size when dir has one.  0, or
 * -1 with err naming the directory and both sizes. */
int data_vocab_resolve(const char *dir, int *vocab, int optional, char *err,
                       size_t errlen);

/* Check the header, the size and every token of a shard's bytes
 * s->map[0..map_len) (mapped by dataset_open, or a buffer: tests and the
 * fuzzer) and set s->tok, s->ntok.  s->path names it in messages.  map
 * must be 2-byte aligned.  Returns 0 or -1 with err. */
int shard_validate(struct shard *s, int vocab_size, char *err, size_t errlen);

/* Copy n tokens starting at stream position pos into out (wraps nothing:
 * pos + n <= ntok is the caller's contract). */
void dataset_read(const struct dataset *ds, int64_t pos, int64_t n,
                  int32_t *out);

/* The window of T + 1 tokens at pos (pos + T < ntok): inputs inp (T)
 * are tokens [pos, pos + T), targets tgt (T) tokens [pos + 1, pos + T];
 * dstart (T, may be NULL) the index in the window of the first token of
 * each input token's document (0 when it began before the window; all 0
 * without a document index). */
void dataset_window(const struct dataset *ds, int64_t pos, int T,
                    int32_t *inp, int32_t *tgt, int32_t *dstart);

/* Sequences [seq0, seq0+nseq) of the global train batch of step s:
 * inp, tgt (nseq, T).  Requires ds->ntok > T. */
void dataset_train_batch(const struct dataset *ds, uint64_t seed,
                         int64_t step, int64_t seq0, int nseq, int T,
                         int32_t *inp, int32_t *tgt);
/* Sequences [seq0, seq0+nseq) of validation batch j of val_batch
 * sequences: inp, tgt, dstart (nseq, T; dstart may be NULL). */
void dataset_val_batch(const struct dataset *ds, int64_t j, int val_batch,
                       int64_t seq0, int nseq, int T, int32_t *inp,
                       int32_t *tgt, int32_t *dstart);

/*
 * `mpitron prepare`: tokenisation of the concatenation of files, in order.
 * The last val_fraction of the bytes becomes the val split, the rest
 * train.  vocab_size 256: token = byte.  More: a byte-level BPE tokenizer
 * (bpe.h) is trained on the train split, saved as <outdir>/merges.txt, and
 * both splits are encoded with it.  Documents: every file starts one, and
 * so does the line after each line equal to doc_sep (fortunes' "%"; ""
 * = files only); the separator lines stay in the text, and no BPE piece
 * crosses a document start.  Each split is written as shards of at most
 * shard_tokens tokens (<outdir>/train_000.bin, ..., <outdir>/val_000.bin)
 * and its document starts as <outdir>/<split>.docs.  Earlier outputs in
 * outdir are removed first (after every input was read).  Writes go to a
 * temporary name, then rename.  Returns 0, or -1 with err naming the file
 * or option.  Reports totals to stdout when verbose.
 */
struct prepare_opts {
    double val_fraction;
    int64_t shard_tokens;
    int vocab_size;      /* 256 = bytes, up to 65535 = BPE */
    const char *doc_sep; /* a line equal to it separates documents */
    int verbose;
};
int data_prepare_ex(const char *outdir, const char *const *files, int nfiles,
                    const struct prepare_opts *o, char *err, size_t errlen);
/* data_prepare_ex with vocab_size 256 and doc_sep "%". */
int data_prepare(const char *outdir, const char *const *files, int nfiles,
                 double val_fraction, int64_t shard_tokens, int verbose,
                 char *err, size_t errlen);

/* Write one shard (header + tokens) atomically. Returns 0 or -1 + err. */
int shard_write(const char *path, const uint16_t *tok, int64_t n, char *err,
                size_t errlen);
/* Write a document index (starts[0..n), of a split of ntok tokens)
 * atomically.  Returns 0 or -1 + err. */
int docs_write(const char *path, const int64_t *starts, int64_t n,
               int64_t ntok, char *err, size_t errlen);

#endif
