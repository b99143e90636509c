/*
 * bpe.h - a byte-level BPE tokenizer: trained by `mpitron prepare
 * --vocab_size=N`, saved beside the shards as DIR/merges.txt, read back
 * by train (vocab_size), sample (encode the prompt, decode the output)
 * and validation (bytes per token, for bits per byte).
 *
 * Tokens.  Ids 0..255 are the bytes; id 256 + k is merge k, the
 * concatenation of two earlier tokens (left, right).  Every byte string
 * therefore has an encoding, and decoding is concatenation.
 *
 * Pieces.  Text is first cut into pieces that merges never cross (as
 * GPT-2 does with its regular expression, on bytes): a piece is
 *   - an optional space followed by a run of letters (ASCII letters and
 *     every byte >= 0x80, so UTF-8 characters stay inside words), or
 *   - an optional space followed by a run of digits, or
 *   - an optional space followed by a run of other visible bytes, or
 *   - a run of whitespace; when it is followed by a visible byte and ends
 *     in a space, that last space starts the next piece instead.
 *
 * Training (Sennrich et al. 2016) over the distinct pieces of the text,
 * each weighted by its count: repeatedly the most frequent adjacent pair
 * of tokens becomes a new token, merged left to right, non-overlapping,
 * in every piece; ties go to the smaller left id, then the smaller right
 * id, so the result depends on the text alone.  It stops at vocab_size or
 * when no pair occurs twice.
 *
 * Encoding a piece applies, while any applies, the merge of the lowest
 * id among its adjacent pairs (every occurrence, left to right): the same
 * segmentation training produced.  A piece's encoding is cached.
 *
 * merges.txt (version 1), UTF-8/ASCII text:
 *   line 1   "mpitron-bpe 1"
 *   line 2   "vocab_size N"                 (256 <= N <= 65535)
 *   then N - 256 lines, for k = 0, 1, ...:
 *            "ID LEFT RIGHT \"TEXT\""
 *     ID = 256 + k; LEFT, RIGHT < ID; TEXT is the token's bytes with
 *     \\ \" \n \t \r and \xHH escapes (every byte < 0x20, >= 0x7f): for
 *     reading, and checked against LEFT RIGHT on load.
 *   Lines starting with '#' are comments.
 */
#ifndef MPITRON_BPE_H
#define MPITRON_BPE_H

#include <stddef.h>
#include <stdint.h>

#define BPE_FILE "merges.txt"
#define BPE_MAX_VOCAB 65535

struct bpe_cache;

struct bpe {
    int vocab;            /* 256 + number of merges */
    int32_t (*merge)[2];  /* [vocab - 256]: left, right of token 256 + k */
    uint32_t *off, *len;  /* [vocab]: token bytes at bytes + off[i] */
    unsigned char *bytes; /* every token's bytes, concatenated */
    /* pair -> merge id, open addressing (key = left << 32 | right) */
    uint64_t *pkey;
    int32_t *pval;
    size_t pcap;
    struct bpe_cache *cache; /* piece -> tokens, filled by bpe_encode */
};

/* Train on text[0, n), cut into independent documents at the offsets
 * docs[0..ndocs) (ascending; pieces never cross them; NULL/0 = one
 * document).  vocab_size in [256, 65535].  Returns 0 (b filled: free with
 * bpe_free; b->vocab may be less than vocab_size if the text ran out of
 * pairs occurring twice) or -1 with err (out of memory, bad size). */
int bpe_train(struct bpe *b, const unsigned char *text, size_t n,
              const int64_t *docs, int64_t ndocs, int vocab_size, char *err,
              size_t errlen);
void bpe_free(struct bpe *b);

/* merges.txt text of b; caller frees.  NULL when out of memory. */
char *bpe_to_text(const struct bpe *b, size_t *len);
/* Parse merges.txt text; name labels messages ("DIR/merges.txt").
 * Returns 0 or -1 with err naming name:line and what is wrong. */
int bpe_from_text(struct bpe *b, const char *text, size_t len,
                  const char *name, char *err, size_t errlen);
/* Read and parse a file.  0 or -1 with err. */
int bpe_load(struct bpe *b, const char *path, char *err, size_t errlen);

/* Encode text[0, n) (one document: pieces start at 0) into out, which
 * must hold n tokens (an encoding is never longer than its bytes).
 * Returns the token count, or -1 when out of memory. */
int64_t bpe_encode(struct bpe *b, const unsigned char *text, size_t n,
                   uint16_t *out);

/* Bytes of token id (0 <= id < vocab) and their count. */
static inline const unsigned char *bpe_token(const struct bpe *b, int id,
                                             size_t *len)
{
    *len = b->len[id];
    return b->bytes + b->off[id];
}

/* Exported for the tests: the length of the piece starting at text[0]
 * (n >= 1), by the rules above. */
size_t bpe_piece_len(const unsigned char *text, size_t n);

#endif
