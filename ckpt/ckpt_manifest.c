/*
 * ckpt_manifest.c - the manifest sidecar (format in ckpt.h): XXH64 and
 * the dataset checksum, the dataset extents and the pieces they are cut
 * into, building the text, writing it durably, and parsing it back.  A
 * manifest read from disk is untrusted input: its self hash is checked
 * before anything in it is believed, and every field and the structure
 * after that.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

/* ---- XXH64 (Yann Collet's xxHash, 64-bit, seed 0) ----------------------- */

#define XP1 11400714785074694791ULL
#define XP2 14029467366897019727ULL
#define XP3 1609587929392839161ULL
#define XP4 9650029242287828579ULL
#define XP5 2870177450012600261ULL

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Little-endian loads, whatever the host order. */
static uint64_t load64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t load32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t xround(uint64_t acc, uint64_t in)
{
    acc += in * XP2;
    return rotl64(acc, 31) * XP1;
}

static uint64_t xmerge(uint64_t h, uint64_t v)
{
    h ^= xround(0, v);
    return h * XP1 + XP4;
}

static uint64_t xavalanche(uint64_t h)
{
    h ^= h >> 33;
    h *= XP2;
    h ^= h >> 29;
    h *= XP3;
    return h ^ (h >> 32);
}

uint64_t ckpt_hash64(const void *data, size_t len)
{
    const unsigned char *p = data, *end = p + len;
    uint64_t h;

    if (len >= 32) {
        uint64_t v1 = XP1 + XP2, v2 = XP2, v3 = 0, v4 = (uint64_t)0 - XP1;
        for (; p + 32 <= end; p += 32) {
            v1 = xround(v1, load64(p));
            v2 = xround(v2, load64(p + 8));
            v3 = xround(v3, load64(p + 16));
            v4 = xround(v4, load64(p + 24));
        }
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xmerge(xmerge(xmerge(xmerge(h, v1), v2), v3), v4);
    } else {
        h = XP5;
    }
    h += (uint64_t)len;
    for (; p + 8 <= end; p += 8)
        h = rotl64(h ^ xround(0, load64(p)), 27) * XP1 + XP4;
    if (p + 4 <= end) {
        h = rotl64(h ^ ((uint64_t)load32(p) * XP1), 23) * XP2 + XP3;
        p += 4;
    }
    for (; p < end; p++)
        h = rotl64(h ^ (*p * XP5), 11) * XP1;
    return xavalanche(h);
}

/* XXH64 of the 8n bytes p[0].hash .. p[n-1].hash, each little-endian,
 * computed from the values: the same steps as ckpt_hash64 for a length
 * that is a multiple of 8. */
uint64_t ckpt_checksum_pieces(const struct ckpt_piece *p, int64_t n)
{
    uint64_t h = XP5;
    int64_t i = 0;

    if (n >= 4) {
        uint64_t v1 = XP1 + XP2, v2 = XP2, v3 = 0, v4 = (uint64_t)0 - XP1;
        for (; i + 4 <= n; i += 4) {
            v1 = xround(v1, p[i].hash);
            v2 = xround(v2, p[i + 1].hash);
            v3 = xround(v3, p[i + 2].hash);
            v4 = xround(v4, p[i + 3].hash);
        }
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xmerge(xmerge(xmerge(xmerge(h, v1), v2), v3), v4);
    }
    h += (uint64_t)(8 * n);
    for (; i < n; i++)
        h = rotl64(h ^ xround(0, p[i].hash), 27) * XP1 + XP4;
    return xavalanche(h);
}

/* ---- extents and pieces ------------------------------------------------ */

int ckpt_extents_add(struct ckpt_extents *x, const char *name, uint64_t off,
                     uint64_t len, uint64_t hash, char *err)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        struct ckpt_extent *e = realloc(x->e, cap * sizeof *e);
        if (!e)
            return ckpt_errf(err, "out of memory for the dataset extents");
        x->e = e;
        x->cap = cap;
    }
    x->e[x->n++] = (struct ckpt_extent){name, off, len, hash};
    return 0;
}

void ckpt_extents_free(struct ckpt_extents *x)
{
    free(x->e);
    memset(x, 0, sizeof *x);
}

static int ext_cmp(const void *a, const void *b)
{
    const struct ckpt_extent *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

int ckpt_extents_sort(struct ckpt_extents *x, uint64_t size,
                      const char *path, char *err)
{
    if (x->n > 1)
        qsort(x->e, x->n, sizeof *x->e, ext_cmp);
    for (size_t i = 0; i < x->n; i++) {
        const struct ckpt_extent *e = &x->e[i];
        if (e->len == 0 || (i > 0 && x->e[i - 1].off + x->e[i - 1].len >
                                         e->off))
            return ckpt_errf(err, "%s: the data of %s overlaps that of %s "
                                  "or is empty", path, e->name,
                             i > 0 ? x->e[i - 1].name : "(none)");
        if (e->off > size || e->len > size - e->off)
            return ckpt_errf(err, "%s: the data of %s ends past the end of "
                                  "the file", path, e->name);
    }
    return 0;
}

/* Appends the pieces of [off, off+len) cut from off. */
static void cut(struct ckpt_piece *p, int64_t *n, uint64_t off, uint64_t len,
                uint64_t block)
{
    for (uint64_t d = 0; d < len; d += block)
        p[(*n)++] = (struct ckpt_piece){off + d, len - d < block ? len - d
                                                                  : block, 0};
}

int ckpt_pieces_cut(const struct ckpt_extents *x, uint64_t size, int gaps,
                    uint64_t block, struct ckpt_piece **out, int64_t *n,
                    char *err)
{
    uint64_t cap = 1, at = 0;

    for (size_t i = 0; i < x->n; i++)
        cap += x->e[i].len / block + 2; /* its pieces and the gap before */
    if (gaps)
        cap += size / block + 1;
    *n = 0;
    *out = malloc(sizeof **out * (size_t)cap);
    if (!*out)
        return ckpt_errf(err, "out of memory for %llu file pieces",
                         (unsigned long long)cap);
    for (size_t i = 0; i < x->n; i++) {
        if (gaps)
            cut(*out, n, at, x->e[i].off - at, block);
        cut(*out, n, x->e[i].off, x->e[i].len, block);
        at = x->e[i].off + x->e[i].len;
    }
    if (gaps)
        cut(*out, n, at, size - at, block);
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

char *ckpt_manifest_text(const char *fname, uint64_t size, uint64_t block,
                         const struct ckpt_piece *p, int64_t n,
                         const struct ckpt_extents *x)
{
    size_t cap = 256 + strlen(fname) + (size_t)n * 64, off = 0;
    char *s;

    for (size_t i = 0; i < x->n; i++)
        cap += strlen(x->e[i].name) + 72;
    s = malloc(cap);
    if (!s)
        return NULL;
    off += (size_t)snprintf(s + off, cap - off,
                            "mpitron-manifest %d\nfile %s\nsize %" PRIu64
                            "\nblock %" PRIu64 "\n",
                            CKPT_MANIFEST_VERSION, fname, size, block);
    for (int64_t i = 0; i < n; i++)
        off += (size_t)snprintf(s + off, cap - off,
                                "piece %" PRIu64 " %" PRIu64 " %016" PRIx64
                                "\n", p[i].off, p[i].len, p[i].hash);
    for (size_t i = 0; i < x->n; i++)
        off += (size_t)snprintf(s + off, cap - off,
                                "dataset %s %" PRIu64 " %" PRIu64 " %016"
                                PRIx64 "\n", x->e[i].name, x->e[i].off,
                                x->e[i].len, x->e[i].hash);
    snprintf(s + off, cap - off, "self %016" PRIx64 "\n",
             ckpt_hash64(s, off));
    return s;
}

int ckpt_manifest_write(const char *final, const char *text, char *err)
{
    char dst[CKPT_PATHMAX];
    struct ckpt_buf b = {text, strlen(text)};

    if (ckpt_fmt(dst, sizeof dst, "%s.manifest", final))
        return ckpt_errf(err, "%.200s...: manifest path too long", final);
    return ckpt_replace(dst, &b, 1, err, CKPT_ERRMAX);
}

/* ---- parsing ------------------------------------------------------------ */

/* Whole string s as a decimal uint64 (no sign, no blanks): 0 or -1. */
static int parse_u64(const char *s, uint64_t *v)
{
    uint64_t x = 0;

    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    return 0;
}

/* Exactly 16 hex digits: 0 or -1. */
static int parse_hex64(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    int i;

    for (i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        x = x << 4 | (uint64_t)d;
    }
    if (s[i] != '\0')
        return -1;
    *v = x;
    return 0;
}

/* The self line ends the text; its hash covers everything before it.
 * Returns the length of the body (the bytes before the self line). */
static int check_self(const char *t, size_t len, const char *mp, size_t *body,
                      uint64_t *self, char *err)
{
    size_t b;
    uint64_t want;
    char line[40];

    if (len == 0 || t[len - 1] != '\n')
        return ckpt_errf(err, "manifest %s is truncated (it does not end "
                              "with a newline)", mp);
    if (memchr(t, '\0', len))
        return ckpt_errf(err, "manifest %s is damaged or not a manifest "
                              "(it holds a NUL byte)", mp);
    for (b = len - 1; b > 0 && t[b - 1] != '\n'; b--)
        ;
    if (len - b > sizeof line - 1 || strncmp(t + b, "self ", 5) != 0)
        return ckpt_errf(err, "manifest %s is truncated or not a manifest "
                              "(its last line is not 'self HASH')", mp);
    memcpy(line, t + b + 5, len - b - 6);
    line[len - b - 6] = '\0';
    if (parse_hex64(line, &want) != 0)
        return ckpt_errf(err, "manifest %s: malformed self line", mp);
    if (ckpt_hash64(t, b) != want)
        return ckpt_errf(err, "manifest %s fails its self hash: it is "
                              "damaged or was edited", mp);
    *body = b;
    *self = want;
    return 0;
}

/* "dataset NAME OFF LEN HASH", NAME possibly holding blanks. */
static int parse_dataset(char *rest, struct ckpt_manifest *m, char *err)
{
    char *f[3];
    uint64_t off, len, h;

    for (int i = 2; i >= 0; i--) { /* the three fields from the right */
        f[i] = strrchr(rest, ' ');
        if (!f[i] || f[i] == rest)
            return -1;
        *f[i]++ = '\0';
    }
    if (parse_u64(f[0], &off) || parse_u64(f[1], &len) ||
        parse_hex64(f[2], &h) || len == 0 || off > m->size ||
        len > m->size - off)
        return -1;
    return ckpt_extents_add(&m->ext, rest, off, len, h, err) ? -2 : 0;
}

/* "piece OFF LEN HASH": the next piece of the tiling. */
static int parse_piece(char *rest, struct ckpt_manifest *m, int64_t *cap,
                       char *err)
{
    char *a = strchr(rest, ' '), *b = a ? strchr(a + 1, ' ') : NULL;
    uint64_t at = m->npieces ? m->piece[m->npieces - 1].off +
                                   m->piece[m->npieces - 1].len : 0;
    struct ckpt_piece pc;

    if (!b)
        return -1;
    *a = *b = '\0';
    if (parse_u64(rest, &pc.off) || parse_u64(a + 1, &pc.len) ||
        parse_hex64(b + 1, &pc.hash) || pc.off != at || pc.len == 0 ||
        pc.len > m->block || pc.len > m->size - at)
        return -1;
    if (m->npieces == *cap) {
        int64_t c = *cap ? 2 * *cap : 256;
        struct ckpt_piece *p = realloc(m->piece, sizeof *p * (size_t)c);
        if (!p)
            return ckpt_errf(err, "out of memory"), -2;
        m->piece = p;
        *cap = c;
    }
    m->piece[m->npieces++] = pc;
    return 0;
}

struct parse_state {
    int64_t cap; /* of m->piece */
    int have_size;
};

/* One line of the body (NUL-terminated, no newline).  0, -1 malformed,
 * -2 with err set.  Order: file, size, block, piece..., dataset... */
static int parse_line(char *l, struct ckpt_manifest *m, struct parse_state *ps,
                      char *err)
{
    char *sp = strchr(l, ' ');

    if (!sp)
        return -1;
    *sp = '\0';
    if (!strcmp(l, "file") && !m->file) {
        m->file = sp + 1;
        return 0;
    }
    if (!strcmp(l, "size") && m->file && !ps->have_size) {
        ps->have_size = 1;
        return parse_u64(sp + 1, &m->size);
    }
    if (!strcmp(l, "block") && ps->have_size && !m->block)
        return parse_u64(sp + 1, &m->block) || m->block == 0 ||
               m->block > ((uint64_t)1 << 30) ? -1 : 0;
    if (!strcmp(l, "piece") && m->block && m->ext.n == 0)
        return parse_piece(sp + 1, m, &ps->cap, err);
    if (!strcmp(l, "dataset") && m->block)
        return parse_dataset(sp + 1, m, err);
    return -1;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((*(struct ckpt_extent *const *)a)->name,
                  (*(struct ckpt_extent *const *)b)->name);
}

/* Names unique (sorted index by_name), each dataset's range made of its
 * own pieces: full blocks but the last. */
static int check_structure(struct ckpt_manifest *m, const char *mp,
                           char *err)
{
    m->by_name = malloc(sizeof *m->by_name * (m->ext.n + 1));
    if (!m->by_name)
        return ckpt_errf(err, "%s: out of memory", mp);
    for (size_t i = 0; i < m->ext.n; i++)
        m->by_name[i] = &m->ext.e[i];
    qsort(m->by_name, m->ext.n, sizeof *m->by_name, name_cmp);
    for (size_t i = 0; i < m->ext.n; i++) {
        const struct ckpt_extent *e = m->by_name[i];
        int64_t k = ckpt_manifest_piece_at(m, e->off);
        uint64_t got = 0;
        if (i > 0 && !strcmp(e->name, m->by_name[i - 1]->name))
            return ckpt_errf(err, "manifest %s names dataset %s twice", mp,
                             e->name);
        if (e > m->ext.e && e[-1].off + e[-1].len > e->off)
            return ckpt_errf(err, "manifest %s: dataset %s overlaps or "
                                  "precedes the one before it", mp, e->name);
        for (; k >= 0 && k < m->npieces && got < e->len; k++) {
            if (got + m->piece[k].len < e->len && m->piece[k].len != m->block)
                break;
            got += m->piece[k].len;
        }
        if (k < 0 || got != e->len)
            return ckpt_errf(err, "manifest %s: the range of dataset %s is "
                                  "not cut into pieces as the format says",
                             mp, e->name);
    }
    return 0;
}

static int parse_body(char *t, size_t body, struct ckpt_manifest *m,
                      const char *mp, char *err)
{
    static const char head[] = "mpitron-manifest ";
    struct parse_state ps = {0, 0};
    char *l = t, *end = t + body;
    int lineno = 1;
    uint64_t at;

    if (strncmp(t, head, sizeof head - 1) != 0)
        return ckpt_errf(err, "%s is not an mpitron manifest (no "
                              "'mpitron-manifest' line)", mp);
    if (strncmp(t + sizeof head - 1, "2\n", 2) != 0)
        return ckpt_errf(err, "manifest %s has version %.*s; this build "
                              "reads manifest version %d (checkpoint "
                              "versions " CKPT_VERSIONS_READ ")", mp,
                         (int)strcspn(t + sizeof head - 1, "\n") < 10
                             ? (int)strcspn(t + sizeof head - 1, "\n") : 10,
                         t + sizeof head - 1, CKPT_MANIFEST_VERSION);
    l = strchr(t, '\n') + 1;
    for (char *nl; l < end; l = nl + 1) {
        int rc;
        nl = strchr(l, '\n');
        *nl = '\0';
        lineno++;
        rc = parse_line(l, m, &ps, err);
        if (rc == -2)
            return -1;
        if (rc)
            return ckpt_errf(err, "manifest %s line %d: malformed", mp,
                             lineno);
    }
    if (!m->file || !m->block)
        return ckpt_errf(err, "manifest %s: 'file', 'size' or 'block' "
                              "missing", mp);
    at = m->npieces ? m->piece[m->npieces - 1].off +
                          m->piece[m->npieces - 1].len : 0;
    if (at != m->size)
        return ckpt_errf(err, "manifest %s: its pieces cover %" PRIu64
                              " bytes, its size is %" PRIu64, mp, at,
                         m->size);
    return check_structure(m, mp, err);
}

/* Reads path (at most CKPT_MANIFEST_MAX bytes) into a malloc'ed,
 * NUL-terminated buffer.  0, 1 when it does not exist, -1 with err. */
static int read_text(const char *mp, char **text, size_t *len, char *err)
{
    struct stat st;
    size_t got = 0;
    int fd = open(mp, O_RDONLY);

    if (fd < 0)
        return errno == ENOENT ? 1 : ckpt_errf(err, "open(%s): %s", mp,
                                               strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size > CKPT_MANIFEST_MAX) {
        close(fd);
        return ckpt_errf(err, "manifest %s is not a regular file of at most "
                              "%zu bytes", mp, CKPT_MANIFEST_MAX);
    }
    *text = malloc((size_t)st.st_size + 1);
    if (!*text) {
        close(fd);
        return ckpt_errf(err, "%s: out of memory", mp);
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, *text + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    (*text)[got] = '\0';
    *len = got;
    return 0;
}

int ckpt_manifest_load(const char *path, struct ckpt_manifest *m, char *err)
{
    char mp[CKPT_PATHMAX];
    size_t len = 0;
    int rc;

    memset(m, 0, sizeof *m);
    if (ckpt_fmt(mp, sizeof mp, "%s.manifest", path))
        return ckpt_errf(err, "%.200s...: path too long", path);
    rc = read_text(mp, &m->text, &len, err);
    if (rc == 1)
        return ckpt_errf(err, "%s: no manifest %s: not a valid checkpoint "
                              "(its save did not finish, or it was written "
                              "before checkpoint format version 2)",
                         path, mp), 1;
    if (rc)
        return -1;
    return ckpt_manifest_parse(m->text, len, mp, m, err);
}

int ckpt_manifest_parse(char *text, size_t len, const char *name,
                        struct ckpt_manifest *m, char *err)
{
    size_t body = 0;

    m->text = text;
    if (check_self(text, len, name, &body, &m->self, err) ||
        parse_body(text, body, m, name, err))
        return -1;
    return 0;
}

void ckpt_manifest_free(struct ckpt_manifest *m)
{
    free(m->text);
    free(m->piece);
    free(m->by_name);
    ckpt_extents_free(&m->ext);
    memset(m, 0, sizeof *m);
}

const struct ckpt_extent *ckpt_manifest_find(const struct ckpt_manifest *m,
                                             const char *name)
{
    size_t lo = 0, hi = m->by_name ? m->ext.n : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct ckpt_extent *e = m->by_name[mid];
        int c = strcmp(name, e->name);
        if (c == 0)
            return e;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int64_t ckpt_manifest_piece_at(const struct ckpt_manifest *m, uint64_t off)
{
    int64_t lo = 0, hi = m->npieces;

    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (m->piece[mid].off == off)
            return mid;
        if (m->piece[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}
