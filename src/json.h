/*
 * json.h - the one JSON writer (metrics.jsonl, the last line of every
 * `bench`): builds one value at a time into a growable buffer, so a line
 * is written whole or not at all.
 *
 *   numbers   json_num prints printf's %.*g with the precision given; a
 *             value that is not finite (NaN, +-inf) is written as null,
 *             so the output is always JSON (RFC 8259 has no NaN);
 *   strings   escaped: " and \ get a backslash, the control characters
 *             below 0x20 are \n, \t, ... or \u00XX; other bytes pass as
 *             they are (callers pass UTF-8);
 *   keys      inside an object every value takes a key (escaped like a
 *             string); inside an array key must be NULL.
 * Commas are placed by the writer.  Nesting is limited to JSON_MAX_DEPTH.
 */
#ifndef MPITRON_JSON_H
#define MPITRON_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 8

struct json {
    char *buf;         /* NUL-terminated text so far (owned) */
    size_t len, cap;
    int depth;
    int count[JSON_MAX_DEPTH]; /* values written in each open container */
    char is_obj[JSON_MAX_DEPTH]; /* 1: object, 0: array */
    int bad;           /* out of memory or misuse: json_text is NULL */
};

/* An empty writer; allocates on first use.  json_free releases it;
 * json_reset empties it and keeps the buffer for the next value. */
void json_init(struct json *j);
void json_reset(struct json *j);
void json_free(struct json *j);

void json_obj_begin(struct json *j, const char *key);
void json_obj_end(struct json *j);
void json_arr_begin(struct json *j, const char *key);
void json_arr_end(struct json *j);

void json_num(struct json *j, const char *key, double v, int prec);
void json_int(struct json *j, const char *key, int64_t v);
void json_str(struct json *j, const char *key, const char *s);
void json_null(struct json *j, const char *key);

/* The text so far (owned by j), or NULL when the writer ran out of
 * memory, nesting went deeper than JSON_MAX_DEPTH or a container is still
 * open. */
const char *json_text(const struct json *j);

/* Writes the text and a newline to f and flushes it.  Returns 0, or -1
 * when there is no valid text (see json_text) or the write failed. */
int json_write_line(const struct json *j, FILE *f);

#endif
