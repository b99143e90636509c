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

#include <pthread.h>
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
};

/* Map every <dir>/<split>_*.bin.  Returns 0, or -1 with err naming the
 * file at fault (missing directory, no shards, bad magic, bad version,
 * size that disagrees with the header, token >= vocab_size).  On success
 * the caller owns ds and frees it with dataset_close. */
int dataset_open(struct dataset *ds, const char *dir, const char *split,
                 int vocab_size, char *err, size_t errlen);
void dataset_close(struct dataset *ds);

/* Check the header, the size and every token of a shard's bytes
 * s->map[0..map_len) (mapped by dataset_open, or a buffer: tests and the
 * fuzzer) and set s->tok, s->ntok.  s->path names it in messages.  map
 * must be 2-byte aligned.  Returns 0 or -1 with err. */
int shard_validate(struct shard *s, int vocab_size, char *err, size_t errlen);

/* Copy n tokens starting at stream position pos into out (wraps nothing:
 * pos + n <= ntok is the caller's contract). */
void dataset_read(const struct dataset *ds, int64_t pos, int64_t n,
                  int32_t *out);

/* Sequences [seq0, seq0+nseq) of the global train batch of step s:
 * inp, tgt (nseq, T).  Requires ds->ntok > T. */
void dataset_train_batch(const struct dataset *ds, uint64_t seed,
                         int64_t step, int64_t seq0, int nseq, int T,
                         int32_t *inp, int32_t *tgt);
/* Sequences [seq0, seq0+nseq) of validation batch j of val_batch
 * sequences: inp, tgt (nseq, T). */
void dataset_val_batch(const struct dataset *ds, int64_t j, int val_batch,
                       int64_t seq0, int nseq, int T, int32_t *inp,
                       int32_t *tgt);

/*
 * A background thread that prepares this rank's slice of the next step's
 * train batch while the current step computes (double buffered).
 * loader_next blocks until step s is ready and returns pointers valid until
 * the following loader_next; it then starts on step s+1.  The time spent
 * blocked is added to *wait_s.
 */
struct loader {
    const struct dataset *ds;
    uint64_t seed;
    int64_t seq0;   /* first global sequence of this rank */
    int nseq, T;
    int32_t *buf[2][2]; /* [slot][inp|tgt] */
    int64_t slot_step[2];
    int64_t want;   /* step the thread should fill next, -1 = none */
    int stop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};
/* Returns 0 or -1 (allocation or thread failure, err filled).  The loader
 * owns its buffers; free with loader_free. */
int loader_init(struct loader *l, const struct dataset *ds, uint64_t seed,
                int64_t seq0, int nseq, int T, int64_t first_step,
                char *err, size_t errlen);
void loader_next(struct loader *l, int64_t step, const int32_t **inp,
                 const int32_t **tgt, double *wait_s);
void loader_free(struct loader *l);

/*
 * `mpitron prepare`: byte-level tokenisation (token = byte, vocabulary 256)
 * of the concatenation of files, in order.  The last val_fraction of the
 * stream becomes the val split, the rest train; each split is written as
 * shards of at most shard_tokens tokens: <outdir>/train_000.bin, ...,
 * <outdir>/val_000.bin.  Writes go to a temporary name, then rename.
 * Returns 0, or -1 with err naming the file.  Reports totals to stdout
 * when verbose.
 */
int data_prepare(const char *outdir, const char *const *files, int nfiles,
                 double val_fraction, int64_t shard_tokens, int verbose,
                 char *err, size_t errlen);

/* Write one shard (header + tokens) atomically. Returns 0 or -1 + err. */
int shard_write(const char *path, const uint16_t *tok, int64_t n, char *err,
                size_t errlen);

#endif
