/*
 * config_internal.h - what the three config sources share: the error
 * setter, a key's field reached through its offset, and the text of a
 * value.  config_keys.c holds the table and the per-key checks,
 * config.c parsing (INI, argv) and output, config_finalize.c the
 * cross-key checks.  Not for use outside src/config/.
 */
#ifndef MPITRON_CONFIG_INTERNAL_H
#define MPITRON_CONFIG_INTERNAL_H

#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define CMDLINE "command line"

static inline void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static inline void *field(struct config *c, const struct config_key *k)
{
    return (char *)c + k->offset;
}

static inline const void *cfield(const struct config *c,
                                 const struct config_key *k)
{
    return (const char *)c + k->offset;
}

static inline int get_int(const struct config *c, const struct config_key *k)
{
    int v;
    memcpy(&v, cfield(c, k), sizeof v);
    return v;
}

static inline float get_float(const struct config *c,
                              const struct config_key *k)
{
    float v;
    memcpy(&v, cfield(c, k), sizeof v);
    return v;
}

static inline const char *get_str(const struct config *c,
                                  const struct config_key *k)
{
    return cfield(c, k);
}

/* The value of k in c as text (floats %.9g: exact round trip). */
void config_value_format(const struct config *c, const struct config_key *k,
                         char *buf, size_t len);

#endif
