/*
 * json.c - the one JSON writer (json.h).
 */
#include "json.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void json_init(struct json *j)
{
    memset(j, 0, sizeof(*j));
}

void json_reset(struct json *j)
{
    char *buf = j->buf;
    size_t cap = j->cap;
    memset(j, 0, sizeof(*j));
    j->buf = buf;
    j->cap = cap;
    if (buf)
        buf[0] = '\0';
}

void json_free(struct json *j)
{
    free(j->buf);
    memset(j, 0, sizeof(*j));
}

/* Room for n more bytes and the NUL. */
static int reserve(struct json *j, size_t n)
{
    if (j->bad)
        return -1;
    if (j->len + n + 1 <= j->cap)
        return 0;
    size_t cap = j->cap ? j->cap : 256;
    while (cap < j->len + n + 1)
        cap *= 2;
    char *nb = realloc(j->buf, cap);
    if (!nb) {
        j->bad = 1;
        return -1;
    }
    j->buf = nb;
    j->cap = cap;
    return 0;
}

static void put(struct json *j, const char *s, size_t n)
{
    if (reserve(j, n) < 0)
        return;
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

static void putf(struct json *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void putf(struct json *j, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        j->bad = 1; /* numbers only: never this long */
        return;
    }
    put(j, tmp, (size_t)n);
}

static void put_string(struct json *j, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(j, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = NULL;
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: break;
        }
        if (esc) {
            put(j, esc, 2);
        } else if (*p < 0x20) {
            char u[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            put(j, u, 6);
        } else {
            put(j, (const char *)p, 1);
        }
    }
    put(j, "\"", 1);
}

/* The comma and key before a value; checks key against the container. */
static void value_start(struct json *j, const char *key)
{
    if (j->bad)
        return;
    if (j->depth == 0) {
        if (j->len > 0 || key)
            j->bad = 1; /* one value per json_reset, without a key */
        return;
    }
    int d = j->depth - 1;
    if (j->is_obj[d] != (key != NULL)) {
        j->bad = 1;
        return;
    }
    if (j->count[d]++ > 0)
        put(j, ",", 1);
    if (key) {
        put_string(j, key);
        put(j, ":", 1);
    }
}

static void open_container(struct json *j, const char *key, int obj)
{
    value_start(j, key);
    if (j->bad)
        return;
    if (j->depth == JSON_MAX_DEPTH) {
        j->bad = 1;
        return;
    }
    j->is_obj[j->depth] = (char)obj;
    j->count[j->depth++] = 0;
    put(j, obj ? "{" : "[", 1);
}

static void close_container(struct json *j, int obj)
{
    if (j->bad)
        return;
    if (j->depth == 0 || j->is_obj[j->depth - 1] != obj) {
        j->bad = 1;
        return;
    }
    j->depth--;
    put(j, obj ? "}" : "]", 1);
}

void json_obj_begin(struct json *j, const char *key)
{
    open_container(j, key, 1);
}

void json_obj_end(struct json *j)
{
    close_container(j, 1);
}

void json_arr_begin(struct json *j, const char *key)
{
    open_container(j, key, 0);
}

void json_arr_end(struct json *j)
{
    close_container(j, 0);
}

void json_num(struct json *j, const char *key, double v, int prec)
{
    value_start(j, key);
    if (!isfinite(v))
        put(j, "null", 4);
    else
        putf(j, "%.*g", prec, v);
}

void json_int(struct json *j, const char *key, int64_t v)
{
    value_start(j, key);
    putf(j, "%" PRId64, v);
}

void json_str(struct json *j, const char *key, const char *s)
{
    value_start(j, key);
    put_string(j, s ? s : "");
}

void json_null(struct json *j, const char *key)
{
    value_start(j, key);
    put(j, "null", 4);
}

const char *json_text(const struct json *j)
{
    if (j->bad || j->depth != 0 || !j->buf)
        return NULL;
    return j->buf;
}

int json_write_line(const struct json *j, FILE *f)
{
    const char *t = json_text(j);
    if (!t)
        return -1;
    if (fputs(t, f) == EOF || fputc('\n', f) == EOF || fflush(f) != 0)
        return -1;
    return 0;
}
