/*
 * ckpt_resolve.c - turn a checkpoint argument (file, run directory or
 * ckpt directory) into a file path.  POSIX only, not collective.
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

/* The file named by DIR/latest when it exists: 0, else 1. */
static int from_latest(const char *dir, char *path, size_t pathlen, char *err)
{
    char lp[CKPT_PATHMAX], name[CKPT_PATHMAX], full[CKPT_PATHMAX];
    FILE *f;
    size_t len;

    ckpt_fmt(lp, sizeof lp, "%s/latest", dir);
    f = fopen(lp, "r");
    if (!f)
        return 1;
    if (!fgets(name, sizeof name, f))
        name[0] = '\0';
    fclose(f);
    len = strlen(name);
    while (len > 0 && (name[len - 1] == '\n' || name[len - 1] == '\r' ||
                       name[len - 1] == ' '))
        name[--len] = '\0';
    if (len == 0)
        return 1;
    if (name[0] == '/')
        ckpt_fmt(full, sizeof full, "%s", name);
    else
        ckpt_fmt(full, sizeof full, "%s/%s", dir, name);
    if (!is_file(full))
        return 1; /* stale pointer: fall back to scanning */
    return out_path(path, pathlen, dir, name, err) ? -1 : 0;
}

/* Step number of "step_<digits>.h5", or -1. */
static long long step_of(const char *name)
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
    return strcmp(p, ".h5") == 0 ? s : -1;
}

/* Highest step_*.h5 in dir: 0, 1 when there is none, -1 on error. */
static int from_scan(const char *dir, char *path, size_t pathlen, char *err)
{
    char best[256] = "";
    long long best_step = -1;
    struct dirent *de;
    DIR *d = opendir(dir);

    if (!d)
        return ckpt_errf(err, "opendir(%s): %s", dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        long long s = step_of(de->d_name);
        if (s > best_step && strlen(de->d_name) < sizeof best) {
            best_step = s;
            ckpt_fmt(best, sizeof best, "%s", de->d_name);
        }
    }
    closedir(d);
    if (best_step < 0)
        return 1;
    return out_path(path, pathlen, dir, best, err) ? -1 : 0;
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
    if (ckpt_fmt(dir, sizeof dir, "%s/ckpt", arg) ||
        !is_dir(dir))
        ckpt_fmt(dir, sizeof dir, "%s", arg);
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
