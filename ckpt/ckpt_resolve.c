/*
 * ckpt_resolve.c - turn a checkpoint argument (file, run directory or
 * ckpt directory) into a file path; list a checkpoint directory.  POSIX
 * only, not collective.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_internal.h"

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int out_path(char *path, size_t pathlen, const char *dir,
                    const char *name, char *err)
{
    int w = name[0] == '/' ? snprintf(path, pathlen, "%s", name)
                           : snprintf(path, pathlen, "%s/%s", dir, name);

    if (w < 0 || (size_t)w >= pathlen)
        return ckpt_errf(err, "%s/%s: path longer than %zu bytes", dir, name,
                         pathlen);
    return 0;
}

void ckpt_latest_name(const char *dir, char *name, size_t len)
{
    char lp[CKPT_PATHMAX];
    FILE *f;
    size_t n;

    name[0] = '\0';
    if (ckpt_fmt(lp, sizeof lp, "%s/latest", dir) || !(f = fopen(lp, "r")))
        return;
    if (!fgets(name, (int)len, f))
        name[0] = '\0';
    fclose(f);
    n = strlen(name);
    while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == '\r' ||
                     name[n - 1] == ' '))
        name[--n] = '\0';
}

static long long step_of(const char *name, int *partial);

/* The file named by DIR/latest when it names a committed checkpoint of
 * DIR that exists: 0, else 1. */
static int from_latest(const char *dir, char *path, size_t pathlen, char *err)
{
    char name[CKPT_PATHMAX], full[CKPT_PATHMAX];
    int partial = 1;

    ckpt_latest_name(dir, name, sizeof name);
    /* only a committed checkpoint of this directory, as saves write it:
     * an absolute path or one through '..' would load another run's file
     * without a word */
    if (!name[0] || step_of(name, &partial) < 0 || partial)
        return 1;
    ckpt_fmt(full, sizeof full, "%s/%s", dir, name);
    if (!is_file(full))
        return 1; /* stale pointer: fall back to scanning */
    return out_path(path, pathlen, dir, name, err) ? -1 : 0;
}

/* Step number of "step_<digits>.h5" (*partial = 0) or
 * "step_<digits>.h5.partial" (*partial = 1), else -1. */
static long long step_of(const char *name, int *partial)
{
    const char *p = name + 5;
    long long s = 0;

    if (strncmp(name, "step_", 5) != 0 || *p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (s > (LLONG_MAX - 9) / 10)
            return -1;
        s = s * 10 + (*p - '0');
    }
    *partial = strcmp(p, ".h5.partial") == 0;
    return *partial || strcmp(p, ".h5") == 0 ? s : -1;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct ckpt_entry *x = a, *y = b;

    if (x->step != y->step)
        return x->step < y->step ? -1 : 1;
    return x->partial - y->partial;
}

int ckpt_dir_scan(const char *dir, struct ckpt_entry **out, int *n,
                  char *err)
{
    struct ckpt_entry *v = NULL;
    struct dirent *de;
    int cap = 0, partial;
    DIR *d = opendir(dir);

    *out = NULL;
    *n = 0;
    if (!d)
        return ckpt_errf(err, "opendir(%s): %s", dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        long long s = step_of(de->d_name, &partial);
        if (s < 0 || strlen(de->d_name) >= sizeof v->name)
            continue;
        if (*n == cap) {
            struct ckpt_entry *p;
            cap = cap ? 2 * cap : 32;
            p = realloc(v, sizeof *v * (size_t)cap);
            if (!p) {
                closedir(d);
                free(v);
                *n = 0;
                return ckpt_errf(err, "%s: out of memory", dir);
            }
            v = p;
        }
        v[*n].step = s;
        v[*n].partial = partial;
        ckpt_fmt(v[*n].name, sizeof v->name, "%s", de->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n > 0)
        qsort(v, (size_t)*n, sizeof *v, entry_cmp);
    *out = v;
    return 0;
}

/* Highest step_*.h5 in dir: 0, 1 when there is none, -1 on error. */
static int from_scan(const char *dir, char *path, size_t pathlen, char *err)
{
    struct ckpt_entry *v;
    int n, rc = 1;

    if (ckpt_dir_scan(dir, &v, &n, err))
        return -1;
    for (int i = n - 1; i >= 0 && rc == 1; i--)
        if (!v[i].partial)
            rc = out_path(path, pathlen, dir, v[i].name, err) ? -1 : 0;
    free(v);
    return rc;
}

int ckpt_count(const char *arg, char *newest, size_t len)
{
    char dir[CKPT_PATHMAX], e[CKPT_ERRMAX];
    struct ckpt_entry *v;
    int n, count = 0;

    if (newest && len)
        newest[0] = '\0';
    if (ckpt_dir_of(arg, dir, sizeof dir, e) || ckpt_dir_scan(dir, &v, &n, e))
        return 0; /* no directory: none */
    for (int i = 0; i < n; i++)
        if (!v[i].partial) {
            count++;
            if (newest && len)
                snprintf(newest, len, "%s/%s", dir, v[i].name);
        }
    free(v);
    return count;
}

int ckpt_dir_of(const char *arg, char *dir, size_t len, char *err)
{
    if (ckpt_fmt(dir, len, "%s/ckpt", arg))
        return ckpt_errf(err, "%.200s...: path too long", arg);
    if (!is_dir(dir) && ckpt_fmt(dir, len, "%s", arg))
        return ckpt_errf(err, "%.200s...: path too long", arg);
    return 0;
}

int ckpt_resolve(const char *arg, char *path, size_t pathlen, char *err,
                 size_t errlen)
{
    char e[CKPT_ERRMAX] = "", dir[CKPT_PATHMAX];
    struct stat st;
    int rc;

    if (!arg || !arg[0] || !path || pathlen == 0) {
        ckpt_err_out(err, errlen, "ckpt_resolve: empty checkpoint argument");
        return -1;
    }
    if (strlen(arg) >= CKPT_PATHMAX - 64) {
        ckpt_errf(e, "%.200s...: path too long", arg);
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    if (stat(arg, &st) != 0) {
        ckpt_errf(e, "%s: %s", arg, strerror(errno));
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        if ((size_t)snprintf(path, pathlen, "%s", arg) < pathlen)
            return 0;
        ckpt_errf(e, "%s: path longer than %zu bytes", arg, pathlen);
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    /* a run directory holds ckpt/; otherwise arg is the ckpt directory */
    ckpt_dir_of(arg, dir, sizeof dir, e);
    rc = from_latest(dir, path, pathlen, e);
    if (rc == 1)
        rc = from_scan(dir, path, pathlen, e);
    if (rc == 1)
        rc = ckpt_errf(e, "no checkpoint found in %s: no usable %s/latest "
                          "and no step_*.h5", dir, dir);
    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}
