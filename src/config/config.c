/*
 * config.c - reading the run configuration: key lookup with suggestions,
 * typed values, INI files and the command line, and its output (the INI
 * text stored in checkpoints, --help).  The keys themselves are the table
 * in config_keys.c; the cross-key checks are config_finalize.c.
 */
#include "config_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const sections[] = {"model", "optim", "data", "run",
                                       "parallel", NULL};

/* ---- lookup and suggestions --------------------------------------------- */

static const struct config_key *key_find(const char *name)
{
    for (int i = 0; i < config_nkeys; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

int config_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int *row = malloc((lb + 1) * sizeof *row);
    if (!row)
        return INT_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0]; /* d[i-1][j-1] */
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j]; /* d[i-1][j] */
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    int d = row[lb];
    free(row);
    return d;
}

/* Nearest of the config keys and the extra options to name, or NULL when
 * nothing is within max(2, len/3) edits.  Ties go to the first found. */
static const char *name_suggest(const char *name, const char *const *extra)
{
    const char *best = NULL;
    int bestd = INT_MAX, nextra = 0;
    while (extra && extra[nextra])
        nextra++;
    for (int i = 0; i < config_nkeys + nextra; i++) {
        const char *cand = i < config_nkeys ? config_keys[i].name
                                            : extra[i - config_nkeys];
        int d = config_edit_distance(name, cand);
        if (d < bestd) {
            bestd = d;
            best = cand;
        }
    }
    int lim = (int)(strlen(name) / 3);
    if (lim < 2)
        lim = 2;
    return bestd <= lim ? best : NULL;
}

static void unknown_key_err(const char *name, const char *where,
                            const char *const *extra, char *err,
                            size_t errlen)
{
    const char *s = name_suggest(name, extra);
    if (s)
        seterr(err, errlen, "unknown key '%s' (%s); did you mean '%s'?", name,
               where, s);
    else
        seterr(err, errlen, "unknown key '%s' (%s); see --help", name, where);
}

/* ---- values ----------------------------------------------------------- */

/* Parse value into the field of k.  Returns 0, or -1 with the reason. */
static int value_parse(struct config *c, const struct config_key *k,
                       const char *v, char *why, size_t whylen)
{
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case CONFIG_INT: {
        if (strcmp(k->name, "micro_batch") == 0 && strcmp(v, "auto") == 0) {
            int i = CONFIG_MB_AUTO;
            memcpy(field(c, k), &i, sizeof i);
            return 0;
        }
        long x = strtol(v, &end, 10);
        if (end == v || *end || isspace((unsigned char)*v)) {
            seterr(why, whylen, "expected an integer");
            return -1;
        }
        if (errno == ERANGE || x < INT_MIN || x > INT_MAX) {
            seterr(why, whylen, "integer out of range [%d, %d]", INT_MIN,
                   INT_MAX);
            return -1;
        }
        int i = (int)x;
        memcpy(field(c, k), &i, sizeof i);
        return 0;
    }
    case CONFIG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || isspace((unsigned char)*v) || *v == '-') {
            seterr(why, whylen, "expected a non-negative integer");
            return -1;
        }
        if (errno == ERANGE) {
            seterr(why, whylen, "integer out of range [0, %" PRIu64 "]",
                   UINT64_MAX);
            return -1;
        }
        uint64_t u = (uint64_t)x;
        memcpy(field(c, k), &u, sizeof u);
        return 0;
    }
    case CONFIG_FLOAT: {
        float f = strtof(v, &end);
        if (end == v || *end || isspace((unsigned char)*v)) {
            seterr(why, whylen, "expected a number");
            return -1;
        }
        if (!isfinite(f)) {
            seterr(why, whylen, "expected a finite number (float range)");
            return -1;
        }
        memcpy(field(c, k), &f, sizeof f);
        return 0;
    }
    case CONFIG_STR: {
        size_t n = strlen(v);
        if (n >= k->size) {
            seterr(why, whylen, "longer than %zu characters", k->size - 1);
            return -1;
        }
        for (const char *p = v; *p; p++)
            if (iscntrl((unsigned char)*p)) {
                seterr(why, whylen, "contains a control character");
                return -1;
            }
        if (strchr(v, '"') && strchr(v, '\'')) {
            seterr(why, whylen, "contains both ' and \" (not representable "
                                "in the INI text)");
            return -1;
        }
        /* zero the whole field so equal configs are bytewise equal */
        memset(field(c, k), 0, k->size);
        memcpy(field(c, k), v, n);
        return 0;
    }
    }
    seterr(why, whylen, "internal error: bad key type");
    return -1;
}

int config_set(struct config *c, const char *key, const char *value,
               const char *where, char *err, size_t errlen)
{
    if (!where)
        where = "config";
    const struct config_key *k = key_find(key);
    if (!k) {
        unknown_key_err(key, where, NULL, err, errlen);
        return -1;
    }
    char why[256];
    struct config tmp;
    memcpy(&tmp, c, sizeof tmp);
    if (value_parse(&tmp, k, value, why, sizeof why) != 0 ||
        (k->check && k->check(&tmp, k, why, sizeof why) != 0)) {
        /* a long value is cut so that the reason still fits in err */
        int cut = strlen(value) > 80;
        seterr(err, errlen, "bad value '%.*s%s' for key '%s' (%s): %s",
               cut ? 72 : 80, value, cut ? "..." : "", key, where, why);
        return -1;
    }
    memcpy(field(c, k), cfield(&tmp, k), k->size);
    return 0;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c); /* padding too: equal configs memcmp equal */
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        char why[256];
        if (value_parse(c, k, k->def, why, sizeof why) != 0) {
            /* a broken table is a programming error, not an input error */
            fprintf(stderr, "%s:%d: default '%s' of key '%s': %s\n",
                    __FILE__, __LINE__, k->def, k->name, why);
            abort();
        }
    }
}

/* The value of k in c as text (floats %.9g: exact round trip). */
void config_value_format(const struct config *c, const struct config_key *k,
                         char *buf, size_t len)
{
    switch (k->type) {
    case CONFIG_INT:
        if (strcmp(k->name, "micro_batch") == 0 &&
            get_int(c, k) == CONFIG_MB_AUTO)
            snprintf(buf, len, "auto");
        else
            snprintf(buf, len, "%d", get_int(c, k));
        break;
    case CONFIG_U64: {
        uint64_t u;
        memcpy(&u, cfield(c, k), sizeof u);
        snprintf(buf, len, "%" PRIu64, u);
        break;
    }
    case CONFIG_FLOAT:
        snprintf(buf, len, "%.9g", (double)get_float(c, k));
        break;
    case CONFIG_STR:
        snprintf(buf, len, "%s", (const char *)cfield(c, k));
        break;
    }
}

/* ---- INI ------------------------------------------------------------------ */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* v is trimmed text after '='.  A value in '...' or "..." is taken
 * literally; otherwise '#' or ';' after whitespace starts a comment. */
static int ini_value(char *v, char **out, char *why, size_t whylen)
{
    if (*v == '"' || *v == '\'') {
        char *close = strchr(v + 1, *v);
        if (!close) {
            seterr(why, whylen, "unterminated %c quote", *v);
            return -1;
        }
        *close = '\0';
        char *rest = trim(close + 1);
        if (*rest && *rest != '#' && *rest != ';') {
            seterr(why, whylen, "text after the closing quote: '%s'", rest);
            return -1;
        }
        *out = v + 1;
        return 0;
    }
    for (char *p = v; *p; p++)
        if ((*p == '#' || *p == ';') &&
            (p == v || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    *out = trim(v);
    return 0;
}

static int ini_section(char *line, const char *where, char *err,
                       size_t errlen)
{
    char *close = strchr(line, ']');
    char *rest = close ? trim(close + 1) : NULL;
    if (!close || (*rest && *rest != '#' && *rest != ';')) {
        seterr(err, errlen, "malformed section header '%s' (%s)", line,
               where);
        return -1;
    }
    *close = '\0';
    char *name = trim(line + 1);
    for (int i = 0; sections[i]; i++)
        if (strcmp(name, sections[i]) == 0)
            return 0;
    seterr(err, errlen,
           "unknown section '[%s]' (%s); sections are model, optim, data, "
           "run, parallel",
           name, where);
    return -1;
}

/* One trimmed, non-empty, non-comment line. */
static int ini_line(struct config *c, char *line, const char *where,
                    char *err, size_t errlen)
{
    if (*line == '[')
        return ini_section(line, where, err, errlen);
    char *eq = strchr(line, '=');
    if (!eq) {
        seterr(err, errlen, "expected 'key = value' or '[section]', got "
                            "'%s' (%s)", line, where);
        return -1;
    }
    *eq = '\0';
    char *key = trim(line), *value, why[256];
    if (!*key) {
        seterr(err, errlen, "missing key before '=' (%s)", where);
        return -1;
    }
    if (ini_value(trim(eq + 1), &value, why, sizeof why) != 0) {
        seterr(err, errlen, "bad value for key '%s' (%s): %s", key, where,
               why);
        return -1;
    }
    return config_set(c, key, value, where, err, errlen);
}

int config_load_text(struct config *c, const char *text, const char *name,
                     char *err, size_t errlen)
{
    if (!name)
        name = "config text";
    char *buf = strdup(text);
    if (!buf) {
        seterr(err, errlen, "%s: out of memory", name);
        return -1;
    }
    struct config tmp;
    memcpy(&tmp, c, sizeof tmp); /* memcpy, not =: padding is copied too */
    int rc = 0, lineno = 0;
    char *line = buf;
    if ((unsigned char)line[0] == 0xEF && (unsigned char)line[1] == 0xBB &&
        (unsigned char)line[2] == 0xBF)
        line += 3; /* UTF-8 byte order mark */
    while (line && rc == 0) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        char *t = trim(line);
        if (*t && *t != '#' && *t != ';') {
            char where[CONFIG_STR_MAX + 32];
            snprintf(where, sizeof where, "%s:%d", name, lineno);
            rc = ini_line(&tmp, t, where, err, errlen);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
    if (rc == 0)
        memcpy(c, &tmp, sizeof *c);
    return rc;
}

int config_load_file(struct config *c, const char *path, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, errlen, "cannot open config file '%s': %s", path,
               strerror(errno));
        return -1;
    }
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    int rc = -1;
    while (text) {
        len += fread(text + len, 1, cap - 1 - len, f);
        if (len < cap - 1)
            break;
        char *bigger = realloc(text, cap *= 2);
        if (!bigger)
            free(text);
        text = bigger;
    }
    if (!text)
        seterr(err, errlen, "config file '%s': out of memory", path);
    else if (ferror(f))
        seterr(err, errlen, "cannot read config file '%s': %s", path,
               strerror(errno));
    else if (memchr(text, '\0', len)) { /* the parser would stop there */
        const char *nul = memchr(text, '\0', len);
        int line = 1;
        for (const char *p = text; p < nul; p++)
            line += *p == '\n';
        seterr(err, errlen, "%s:%d: a NUL byte (not a text file?)", path,
               line);
    } else {
        text[len] = '\0';
        rc = config_load_text(c, text, path, err, errlen);
    }
    free(text);
    fclose(f);
    return rc;
}

/* ---- command line --------------------------------------------------------- */

struct arg {
    char name[128]; /* without dashes, before any '=' */
    const char *value; /* NULL for a positional */
    int extra;         /* index into extra, or -1 for a config key */
};

static int extra_find(const char *const *extra, const char *name)
{
    for (int i = 0; extra && extra[i]; i++)
        if (strcmp(extra[i], name) == 0)
            return i;
    return -1;
}

/* Classify argv[*i] into a, advancing *i past a separate value.  Returns
 * 0 (a->value == NULL for a positional) or -1 with err filled. */
static int arg_take(int argc, char **argv, int *i, const char *const *extra,
                    struct arg *a, char *err, size_t errlen)
{
    const char *s = argv[*i];
    a->value = NULL;
    a->extra = -1;
    if (s[0] != '-' || s[1] == '\0')
        return 0; /* positional ("-" alone included) */
    if (s[1] != '-' || s[2] == '\0') {
        seterr(err, errlen, "unexpected argument '%s' (%s): options are "
                            "--key=value or --key value", s, CMDLINE);
        return -1;
    }
    const char *eq = strchr(s + 2, '=');
    size_t n = eq ? (size_t)(eq - (s + 2)) : strlen(s + 2);
    if (n >= sizeof a->name)
        n = sizeof a->name - 1;
    memcpy(a->name, s + 2, n);
    a->name[n] = '\0';
    a->extra = extra_find(extra, a->name);
    if (a->extra < 0 && !key_find(a->name)) {
        unknown_key_err(a->name, CMDLINE, extra, err, errlen);
        return -1;
    }
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (eq) {
        a->value = eq + 1;
    } else if (a->extra >= 0) {
        /* a bare flag, unless a non-option word follows */
        if (next && next[0] != '-') {
            a->value = next;
            (*i)++;
        } else {
            a->value = "1";
        }
    } else if (next && !(next[0] == '-' && next[1] == '-')) {
        a->value = next; /* "-1" is a value, "--x" is not */
        (*i)++;
    } else {
        seterr(err, errlen, "missing value for key '%s' (%s): use --%s=VALUE",
               a->name, CMDLINE, a->name);
        return -1;
    }
    return 0;
}

/* Pass 1: check every argument and find the one positional INI file. */
static int args_scan(int argc, char **argv, const char *const *extra,
                     const char **ini, char *err, size_t errlen)
{
    struct arg a;
    *ini = NULL;
    for (int i = 0; i < argc; i++) {
        if (arg_take(argc, argv, &i, extra, &a, err, errlen) != 0)
            return -1;
        if (a.value)
            continue;
        if (*ini) {
            seterr(err, errlen, "more than one config file on the %s: "
                                "'%s' and '%s'", CMDLINE, *ini, argv[i]);
            return -1;
        }
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            seterr(err, errlen, "config file '%s' (%s): %s", argv[i],
                   CMDLINE, strerror(errno));
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            seterr(err, errlen, "config file '%s' (%s): not a regular file",
                   argv[i], CMDLINE);
            return -1;
        }
        *ini = argv[i];
    }
    return 0;
}

int config_parse_args(struct config *c, int argc, char **argv,
                      const char *const *extra, const char **extra_vals,
                      char *err, size_t errlen)
{
    const char *ini;
    if (args_scan(argc, argv, extra, &ini, err, errlen) != 0)
        return -1;
    struct config tmp;
    memcpy(&tmp, c, sizeof tmp);
    if (ini && config_load_file(&tmp, ini, err, errlen) != 0)
        return -1;
    struct arg a;
    for (int i = 0; i < argc; i++) {
        if (arg_take(argc, argv, &i, extra, &a, err, errlen) != 0)
            return -1;
        if (!a.value)
            continue;
        if (a.extra >= 0) {
            if (extra_vals)
                extra_vals[a.extra] = a.value;
        } else if (config_set(&tmp, a.name, a.value, CMDLINE, err,
                              errlen) != 0) {
            return -1;
        }
    }
    memcpy(c, &tmp, sizeof *c);
    return 0;
}

/* ---- output ------------------------------------------------------------- */

char *config_to_text(const struct config *c)
{
    size_t cap = 1;
    for (int i = 0; i < config_nkeys; i++) /* "\n[section]\n" + line */
        cap += strlen(config_keys[i].section) + 4 +
               strlen(config_keys[i].name) + 6 + CONFIG_STR_MAX + 32;
    char *out = malloc(cap), val[CONFIG_STR_MAX];
    if (!out)
        return NULL;
    size_t n = 0;
    const char *sec = NULL;
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        if (!sec || strcmp(sec, k->section) != 0) {
            n += (size_t)snprintf(out + n, cap - n, "%s[%s]\n",
                                  sec ? "\n" : "", k->section);
            sec = k->section;
        }
        config_value_format(c, k, val, sizeof val);
        if (k->type == CONFIG_STR) {
            char q = strchr(val, '"') ? '\'' : '"';
            n += (size_t)snprintf(out + n, cap - n, "%s = %c%s%c\n", k->name,
                                  q, val, q);
        } else {
            n += (size_t)snprintf(out + n, cap - n, "%s = %s\n", k->name,
                                  val);
        }
    }
    return out;
}

int config_diff_model(const struct config *a, const struct config *b,
                      char *out, size_t outlen)
{
    int ndiff = 0;
    size_t n = 0;
    if (out && outlen)
        out[0] = '\0';
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        /* what defines the model: every int of [model] and its string
         * (attn: the same weights compute another function); dropout,
         * the float, is training only */
        if (strcmp(k->section, "model") != 0 || k->type == CONFIG_FLOAT)
            continue;
        if (k->type == CONFIG_STR) {
            if (strcmp(get_str(a, k), get_str(b, k)) == 0)
                continue;
        } else {
            int va = get_int(a, k), vb = get_int(b, k);
            if (k->offset == offsetof(struct config, n_kv_head)) {
                va = va ? va : a->n_head; /* compare resolved values */
                vb = vb ? vb : b->n_head;
            }
            if (va == vb)
                continue;
        }
        if (out && n < outlen) {
            int w = snprintf(out + n, outlen - n, "%s%s", ndiff ? ", " : "",
                             k->name);
            n += w > 0 ? (size_t)w : 0;
        }
        ndiff++;
    }
    return ndiff;
}

static const char *const type_names[] = {
    [CONFIG_INT] = "<int>", [CONFIG_U64] = "<int>",
    [CONFIG_FLOAT] = "<float>", [CONFIG_STR] = "<str>"};

void config_print_help(FILE *f)
{
    int w1 = 0, w2 = 0;
    char opt[160], def[CONFIG_STR_MAX + 16];
    for (int pass = 0; pass < 2; pass++) {
        const char *sec = NULL;
        for (int i = 0; i < config_nkeys; i++) {
            const struct config_key *k = &config_keys[i];
            int l1 = snprintf(opt, sizeof opt, "--%s=%s", k->name,
                              type_names[k->type]);
            int l2 = snprintf(def, sizeof def, *k->def ? "(default %s)"
                                                       : "(default \"%s\")",
                              k->def);
            if (pass == 0) {
                w1 = l1 > w1 ? l1 : w1;
                w2 = l2 > w2 ? l2 : w2;
                continue;
            }
            if (!sec || strcmp(sec, k->section) != 0) {
                fprintf(f, "%s[%s]\n", sec ? "\n" : "", k->section);
                sec = k->section;
            }
            fprintf(f, "  %-*s  %-*s  %s\n", w1, opt, w2, def, k->help);
        }
    }
}
