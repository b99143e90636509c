/*
 * ckpt_mutate.c - the mutator of tests/ckpt_fuzz.sh: writes a hostile
 * copy of a valid checkpoint whose manifest is re-forged to match, so
 * that it passes the manifest check and reaches HDF5.
 *
 *   ckpt_mutate SEED IN.h5 OUT.h5
 *   ckpt_mutate --forge FILE        (a manifest for FILE as it is)
 *   ckpt_mutate --mini DIR          (a two-tensor checkpoint: a seed)
 *
 * Mutations hit only the HDF5 metadata: the bytes outside every
 * dataset's data range as IN.h5.manifest lists them (superblock, object
 * headers, B-trees, heaps, attributes).  From SEED, 1 to 8 of: flip a
 * bit, set a byte to 0x00, 0xff or a random value, write a boundary
 * 32- or 64-bit integer (0, 1, -1, 2^31, 2^63, a small offset) at an
 * 8-byte aligned position, copy 8..64 metadata bytes over others.  The
 * file keeps its size; OUT.h5.manifest is computed from OUT.h5's bytes
 * with the original piece layout and dataset lines (the data is
 * unchanged), as a hostile writer would.  Prints the mutations to stdout.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

static uint64_t rng;

static uint64_t next(void) /* xorshift64* */
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}

/* The metadata byte ranges of m: [0, size) less the dataset extents. */
static size_t gaps(const struct ckpt_manifest *m, uint64_t (*g)[2])
{
    size_t n = 0;
    uint64_t at = 0;
    for (size_t i = 0; i <= m->ext.n; i++) {
        uint64_t end = i < m->ext.n ? m->ext.e[i].off : m->size;
        if (end > at)
            g[n][0] = at, g[n++][1] = end;
        if (i < m->ext.n)
            at = m->ext.e[i].off + m->ext.e[i].len;
    }
    return n;
}

/* The end of the metadata range holding at. */
static uint64_t gap_end(uint64_t (*g)[2], size_t n, uint64_t at)
{
    for (size_t i = 0; i < n; i++)
        if (at >= g[i][0] && at < g[i][1])
            return g[i][1];
    return at;
}

/* A random metadata offset (uniform over the metadata bytes). */
static uint64_t pick(uint64_t (*g)[2], size_t n, uint64_t total)
{
    uint64_t r = next() % total;
    for (size_t i = 0; i < n; i++) {
        if (r < g[i][1] - g[i][0])
            return g[i][0] + r;
        r -= g[i][1] - g[i][0];
    }
    return g[0][0];
}

/* --forge FILE: a manifest for FILE as it is, without dataset lines (the
 * pieces tile the file), as a hostile writer would forge one for a file
 * it made. */
static int forge(const char *path)
{
    char err[CKPT_ERRMAX];
    struct ckpt_extents none = {NULL, 0, 0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    unsigned char *b = malloc(size > 0 ? (size_t)size : 1);
    if (!b || fread(b, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    fclose(f);
    int64_t n = (int64_t)((size + CKPT_MANIFEST_BLOCK - 1) /
                          CKPT_MANIFEST_BLOCK);
    struct ckpt_piece *p = calloc((size_t)(n ? n : 1), sizeof(*p));
    for (int64_t i = 0; p && i < n; i++) {
        p[i].off = (uint64_t)i * CKPT_MANIFEST_BLOCK;
        p[i].len = (uint64_t)size - p[i].off < CKPT_MANIFEST_BLOCK
                       ? (uint64_t)size - p[i].off : CKPT_MANIFEST_BLOCK;
        p[i].hash = ckpt_hash64(b + p[i].off, (size_t)p[i].len);
    }
    const char *base = strrchr(path, '/');
    char *text = p ? ckpt_manifest_text(base ? base + 1 : path,
                                        (uint64_t)size, CKPT_MANIFEST_BLOCK,
                                        p, n, &none) : NULL;
    if (!text || ckpt_manifest_write(path, text, err) != 0) {
        fprintf(stderr, "cannot write the manifest of %s: %s\n", path,
                text ? err : "out of memory");
        return 1;
    }
    free(text);
    free(p);
    free(b);
    return 0;
}

/* --mini DIR: the smallest checkpoint ckpt_save writes (one 2x3 tensor
 * and its moment), the fuzzer's seed of the checkpoint reader. */
static int mini(int argc, char **argv)
{
    char err[CKPT_ERRMAX], cfg[] = "[model]\nn_layer = 1\n";
    float w[6] = {1, 2, 3, 4, 5, 6}, m[6] = {0};
    struct ckpt_tensor t[2] = {
        {"/model/w", 2, {2, 3}, {0, 0}, {2, 3}, w, 0, 0},
        {"/optim/m/w", 2, {2, 3}, {0, 0}, {2, 3}, m, 0, 0},
    };
    struct ckpt_meta meta = {1, 6, 1, 7, "dp=1 tp=1 pp=1 world=1", cfg};
    MPI_Init(&argc, &argv);
    int rc = ckpt_save(MPI_COMM_SELF, argv[2], &meta, t, 2, NULL, 0, err,
                       sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    MPI_Finalize();
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    char err[CKPT_ERRMAX];
    struct ckpt_manifest m;
    if (argc == 3 && strcmp(argv[1], "--forge") == 0)
        return forge(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--mini") == 0)
        return mini(argc, argv);
    if (argc != 4) {
        fprintf(stderr, "usage: ckpt_mutate SEED IN.h5 OUT.h5 | "
                        "ckpt_mutate --forge FILE\n");
        return 2;
    }
    rng = strtoull(argv[1], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    if (ckpt_manifest_load(argv[2], &m, err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    FILE *f = fopen(argv[2], "rb");
    unsigned char *b = malloc(m.size);
    uint64_t (*g)[2] = malloc((m.ext.n + 1) * sizeof(*g));
    if (!f || !b || !g || fread(b, 1, m.size, f) != m.size) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);
    /* extents in file order (the parse keeps them so) */
    size_t ng = gaps(&m, g);
    uint64_t total = 0;
    for (size_t i = 0; i < ng; i++)
        total += g[i][1] - g[i][0];
    static const uint64_t special[] = {0, 1, UINT64_MAX, 0x80000000ULL,
                                       0x8000000000000000ULL, 0x7fffffffULL,
                                       8, 4096, 0xffffffffULL};
    int nm = 1 + (int)(next() % 8);
    for (int k = 0; k < nm; k++) {
        uint64_t at = pick(g, ng, total), v;
        switch (next() % 6) {
        case 0:
            b[at] ^= (unsigned char)(1u << (next() % 8));
            printf("flip bit at %llu\n", (unsigned long long)at);
            break;
        case 1:
            b[at] = next() % 2 ? 0x00 : 0xff;
            printf("byte %u at %llu\n", b[at], (unsigned long long)at);
            break;
        case 2:
            b[at] = (unsigned char)next();
            printf("random byte at %llu\n", (unsigned long long)at);
            break;
        case 3:
        case 4:
            /* aligned down when that stays in the metadata gap, and
             * never past its end: metadata only, as the copy below */
            if (gap_end(g, ng, at & ~(uint64_t)7) > (at & ~(uint64_t)7))
                at &= ~(uint64_t)7;
            v = special[next() % (sizeof special / sizeof special[0])];
            int w = next() % 2 ? 8 : 4;
            for (int i = 0; i < w && at + (uint64_t)i < gap_end(g, ng, at);
                 i++)
                b[at + (uint64_t)i] = (unsigned char)(v >> (8 * i));
            printf("%d-byte 0x%llx at %llu\n", w, (unsigned long long)v,
                   (unsigned long long)at);
            break;
        default: {
            uint64_t from = pick(g, ng, total), len = 8 + next() % 57;
            if (from + len > m.size)
                len = m.size - from;
            if (at + len > gap_end(g, ng, at)) /* metadata only */
                len = gap_end(g, ng, at) - at;
            memmove(b + at, b + from, len);
            printf("copy %llu bytes from %llu to %llu\n",
                   (unsigned long long)len, (unsigned long long)from,
                   (unsigned long long)at);
        }
        }
    }
    FILE *o = fopen(argv[3], "wb");
    if (!o || fwrite(b, 1, m.size, o) != m.size || fclose(o) != 0) {
        fprintf(stderr, "cannot write %s\n", argv[3]);
        return 1;
    }
    for (int64_t i = 0; i < m.npieces; i++)
        m.piece[i].hash = ckpt_hash64(b + m.piece[i].off,
                                      (size_t)m.piece[i].len);
    const char *base = strrchr(argv[3], '/');
    char *text = ckpt_manifest_text(base ? base + 1 : argv[3], m.size,
                                    m.block, m.piece, m.npieces, &m.ext);
    if (!text || ckpt_manifest_write(argv[3], text, err) != 0) {
        fprintf(stderr, "cannot write the manifest: %s\n", text ? err : "");
        return 1;
    }
    free(text);
    free(b);
    free(g);
    ckpt_manifest_free(&m);
    return 0;
}
