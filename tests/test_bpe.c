/*
 * test_bpe.c - the byte-level BPE tokenizer against independent
 * references: pieces and merges worked out by hand, a naive trainer
 * written here (every pair recounted over every piece at each merge, the
 * textbook algorithm) on a larger text, encode/decode round trips, and
 * merges.txt's round trip and its errors.  No MPI.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe/bpe.h"
#include "rng.h"

#define ERRLEN 512

static void test_pieces(void **state)
{
    (void)state;
    const char *text = "Hello, world!  It's 2024\n\n  ok\tx";
    const char *want[] = {"Hello", ",", " world", "!", " ", " It", "'", "s",
                          " 2024", "\n\n ", " ok", "\t", "x", NULL};
    size_t n = strlen(text), i = 0;
    for (int k = 0; want[k]; k++) {
        size_t len = bpe_piece_len((const unsigned char *)text + i, n - i);
        assert_int_equal(len, strlen(want[k]));
        assert_memory_equal(text + i, want[k], len);
        i += len;
    }
    assert_int_equal(i, n);
    /* UTF-8 bytes stay in the word; a lone trailing space is its own */
    const char *u = "caf\xc3\xa9 ";
    assert_int_equal(bpe_piece_len((const unsigned char *)u, 6), 5);
    assert_int_equal(bpe_piece_len((const unsigned char *)u + 5, 1), 1);
}

/* "ab ab ab": pieces "ab", " ab", " ab".  (a,b) occurs 3 times -> 256;
 * then (' ', 256) twice -> 257; then nothing occurs twice. */
static void test_hand_merges(void **state)
{
    (void)state;
    struct bpe b;
    char err[ERRLEN];
    const unsigned char *t = (const unsigned char *)"ab ab ab";
    assert_int_equal(bpe_train(&b, t, 8, NULL, 0, 1000, err, sizeof err), 0);
    assert_int_equal(b.vocab, 258);
    assert_int_equal(b.merge[0][0], 'a');
    assert_int_equal(b.merge[0][1], 'b');
    assert_int_equal(b.merge[1][0], ' ');
    assert_int_equal(b.merge[1][1], 256);
    uint16_t out[8];
    assert_int_equal(bpe_encode(&b, t, 8, out), 3);
    assert_int_equal(out[0], 256);
    assert_int_equal(out[1], 257);
    assert_int_equal(out[2], 257);
    size_t len;
    const unsigned char *p = bpe_token(&b, 257, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(p, " ab", 3);
    bpe_free(&b);
}

/* ---- the naive reference trainer -------------------------------------- */

struct nword {
    int32_t tok[64];
    int len;
    long count;
};

/* Distinct pieces of text with counts (pieces are short here). */
static int naive_words(const unsigned char *text, size_t n, struct nword *w,
                       int maxw)
{
    int nw = 0;
    for (size_t i = 0; i < n;) {
        size_t len = bpe_piece_len(text + i, n - i);
        assert_true(len <= 64);
        int k;
        for (k = 0; k < nw; k++) {
            if (w[k].len != (int)len)
                continue;
            int same = 1;
            for (size_t j = 0; j < len; j++)
                same &= w[k].tok[j] == text[i + j];
            if (same)
                break;
        }
        if (k == nw) {
            assert_true(nw < maxw);
            w[nw].len = (int)len;
            w[nw].count = 0;
            for (size_t j = 0; j < len; j++)
                w[nw].tok[j] = text[i + j];
            nw++;
        }
        w[k].count++;
        i += len;
    }
    return nw;
}

/* One merge: recount every pair, take the most frequent (ties: smaller
 * left, then smaller right), merge it everywhere.  0 when none occurs
 * twice. */
static int naive_merge(struct nword *w, int nw, int32_t z, int32_t *l,
                       int32_t *r)
{
    long best = 1;
    int32_t bl = -1, br = -1;
    for (int k = 0; k < nw; k++)
        for (int j = 0; j + 1 < w[k].len; j++) {
            int32_t a = w[k].tok[j], b = w[k].tok[j + 1];
            long c = 0;
            for (int q = 0; q < nw; q++)
                for (int i = 0; i + 1 < w[q].len; i++)
                    c += (w[q].tok[i] == a && w[q].tok[i + 1] == b) *
                         w[q].count;
            if (c > best || (c == best && bl >= 0 &&
                             (a < bl || (a == bl && b < br)))) {
                best = c;
                bl = a;
                br = b;
            }
        }
    if (bl < 0)
        return 0;
    for (int k = 0; k < nw; k++) {
        int o = 0;
        for (int j = 0; j < w[k].len; j++) {
            if (j + 1 < w[k].len && w[k].tok[j] == bl &&
                w[k].tok[j + 1] == br) {
                w[k].tok[o++] = z;
                j++;
            } else {
                w[k].tok[o++] = w[k].tok[j];
            }
        }
        w[k].len = o;
    }
    *l = bl;
    *r = br;
    return 1;
}

/* Words drawn from a small vocabulary with Zipf-like weights, spaces,
 * punctuation and newlines: many repeated pairs, many ties. */
static size_t make_text(unsigned char *buf, size_t cap)
{
    static const char *const words[] = {
        "the", "then", "there", "other", "another", "brother", "mother",
        "moth", "thermal", "at", "hat", "that", "what", "whatever", "ever",
        "never", "fever", "seven", "eleven", "even", "1984", "42", "3.14"};
    const int nwords = (int)(sizeof words / sizeof words[0]);
    size_t n = 0;
    for (uint64_t i = 0; n + 16 < cap; i++) {
        uint64_t r = rng_u64(99, i);
        int k = (int)((r % 1000) * (r % 1000) / 1000000.0 * nwords);
        const char *w = words[k];
        if (n && (r >> 20) % 7 == 0)
            buf[n++] = (r >> 24) % 2 ? ',' : '.';
        buf[n++] = (r >> 30) % 11 == 0 ? '\n' : ' ';
        memcpy(buf + n, w, strlen(w));
        n += strlen(w);
    }
    return n;
}

static void test_against_naive(void **state)
{
    (void)state;
    enum { CAP = 6000, VOCAB = 256 + 60, MAXW = 2000 };
    unsigned char *text = malloc(CAP);
    struct nword *w = malloc(MAXW * sizeof *w);
    size_t n = make_text(text, CAP);
    int nw = naive_words(text, n, w, MAXW);
    struct bpe b;
    char err[ERRLEN];
    assert_int_equal(bpe_train(&b, text, n, NULL, 0, VOCAB, err, sizeof err),
                     0);
    int nm = 0;
    int32_t l, r;
    while (256 + nm < VOCAB && naive_merge(w, nw, 256 + nm, &l, &r)) {
        assert_true(256 + nm < b.vocab);
        assert_int_equal(b.merge[nm][0], l);
        assert_int_equal(b.merge[nm][1], r);
        nm++;
    }
    assert_int_equal(b.vocab, 256 + nm);
    assert_true(nm > 30); /* the text really needs many merges */
    /* encoding each distinct piece gives the naive trainer's final
     * segmentation of it */
    uint16_t out[64];
    for (int k = 0; k < nw; k++) {
        unsigned char bytes[256];
        size_t len = 0;
        for (int j = 0; j < w[k].len; j++) {
            size_t tl;
            const unsigned char *p = bpe_token(&b, w[k].tok[j], &tl);
            memcpy(bytes + len, p, tl);
            len += tl;
        }
        int64_t m = bpe_encode(&b, bytes, len, out);
        assert_int_equal(m, w[k].len);
        for (int j = 0; j < w[k].len; j++)
            assert_int_equal(out[j], w[k].tok[j]);
    }
    bpe_free(&b);
    free(w);
    free(text);
}

/* Pieces never cross a document start, and any byte string round-trips
 * (bytes 0 and 255, and text the tokenizer never saw). */
static void test_docs_and_roundtrip(void **state)
{
    (void)state;
    const unsigned char *t = (const unsigned char *)"xyxyxy";
    int64_t docs[3] = {0, 2, 4}; /* "xy" "xy" "xy": (x,y) three times */
    struct bpe b;
    char err[ERRLEN];
    assert_int_equal(bpe_train(&b, t, 6, docs, 3, 300, err, sizeof err), 0);
    assert_int_equal(b.vocab, 257); /* "xyxy" never forms across docs */
    bpe_free(&b);

    enum { CAP = 4000 };
    unsigned char *text = malloc(CAP);
    size_t n = make_text(text, CAP);
    assert_int_equal(bpe_train(&b, text, n, NULL, 0, 400, err, sizeof err),
                     0);
    unsigned char odd[300];
    for (int i = 0; i < 300; i++)
        odd[i] = (unsigned char)(i * 37 + (i % 5 == 0 ? 255 : 0));
    memcpy(odd + 100, "the other brother\n\n never", 26);
    const unsigned char *ins[2] = {text, odd};
    size_t lens[2] = {n, sizeof odd};
    for (int c = 0; c < 2; c++) {
        uint16_t *tok = malloc(lens[c] * sizeof *tok);
        int64_t m = bpe_encode(&b, ins[c], lens[c], tok);
        assert_true(m > 0 && (size_t)m <= lens[c]);
        if (c == 0)
            assert_true((size_t)m < lens[c] / 2); /* it compresses */
        size_t o = 0;
        for (int64_t i = 0; i < m; i++) {
            size_t tl;
            const unsigned char *p = bpe_token(&b, tok[i], &tl);
            assert_true(o + tl <= lens[c]);
            assert_memory_equal(p, ins[c] + o, tl);
            o += tl;
        }
        assert_int_equal(o, lens[c]);
        free(tok);
    }
    bpe_free(&b);
    free(text);
}

static void test_file_roundtrip(void **state)
{
    (void)state;
    unsigned char text[3000];
    size_t n = make_text(text, sizeof text);
    text[10] = 0;
    text[11] = '"';
    text[12] = '\\';
    text[13] = 0xff; /* escapes in the file */
    struct bpe a, b;
    char err[ERRLEN];
    assert_int_equal(bpe_train(&a, text, n, NULL, 0, 350, err, sizeof err),
                     0);
    size_t len;
    char *txt = bpe_to_text(&a, &len);
    assert_non_null(txt);
    assert_non_null(strstr(txt, "257 "));
    assert_int_equal(bpe_from_text(&b, txt, len, "m.txt", err, sizeof err),
                     0);
    assert_int_equal(b.vocab, a.vocab);
    assert_memory_equal(b.merge, a.merge,
                        (size_t)(a.vocab - 256) * sizeof *a.merge);
    for (int i = 0; i < a.vocab; i++) {
        size_t la, lb;
        const unsigned char *pa = bpe_token(&a, i, &la);
        const unsigned char *pb = bpe_token(&b, i, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(pa, pb, la);
    }
    bpe_free(&b);
    free(txt);
    bpe_free(&a);
}

static void expect_bad(const char *text, const char *needle)
{
    struct bpe b;
    char err[ERRLEN] = "";
    assert_int_equal(bpe_from_text(&b, text, strlen(text), "d/merges.txt",
                                   err, sizeof err), -1);
    if (!strstr(err, needle)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", err, needle);
        fail();
    }
}

static void test_file_errors(void **state)
{
    (void)state;
    expect_bad("", "d/merges.txt:0: not an mpitron BPE file");
    expect_bad("mpitron-bpe 2\nvocab_size 257\n", "known versions: 1");
    expect_bad("mpitron-bpe 1\nvocab_size 70000\n", "d/merges.txt:2:");
    expect_bad("mpitron-bpe 1\nvocab_size 258\n256 97 98 \"ab\"\n",
               "ends after 1 merges, vocab_size 258 needs 2");
    expect_bad("mpitron-bpe 1\nvocab_size 257\n257 97 98 \"ab\"\n",
               "d/merges.txt:3: expected token id 256, found 257");
    expect_bad("mpitron-bpe 1\nvocab_size 257\n256 97 256 \"ab\"\n",
               "earlier token ids");
    expect_bad("mpitron-bpe 1\nvocab_size 257\n256 97 98 \"ba\"\n",
               "d/merges.txt:3: TEXT is not the bytes of LEFT followed");
    expect_bad("mpitron-bpe 1\nvocab_size 257\n256 97 98 \"a\\qb\"\n",
               "bad quoted TEXT");
    expect_bad("mpitron-bpe 1\nvocab_size 257\n256 97 98 \"ab\"\n"
               "257 97 97 \"aa\"\n", "text after the last merge");
    /* comments and the escapes are fine */
    const char *ok = "mpitron-bpe 1\nvocab_size 258\n# c\n"
                     "256 10 0 \"\\n\\x00\"\n257 256 34 \"\\n\\x00\\\"\"\n";
    struct bpe b;
    char err[ERRLEN];
    assert_int_equal(bpe_from_text(&b, ok, strlen(ok), "x", err, sizeof err),
                     0);
    size_t len;
    assert_memory_equal(bpe_token(&b, 257, &len), "\n\0\"", 3);
    assert_int_equal(len, 3);
    bpe_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_hand_merges),
        cmocka_unit_test(test_against_naive),
        cmocka_unit_test(test_docs_and_roundtrip),
        cmocka_unit_test(test_file_roundtrip),
        cmocka_unit_test(test_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
