/*
 * ckpt_find.c - policies over a checkpoint directory: the newest good
 * checkpoint (resume=auto) and retention (keep_last / keep_every, stale
 * files of crashed saves).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

/* ---- find_good ---------------------------------------------------------- */

/* Rank 0 lists, every rank receives: *is_file, dir, the entries. */
static int find_scan(MPI_Comm comm, const char *arg, int *is_file, char *dir,
                     struct ckpt_entry **v, int *n, char *err)
{
    struct stat st;
    int rank, hdr[3] = {0, 0, 0}; /* rc, is_file, n */

    MPI_Comm_rank(comm, &rank);
    *v = NULL;
    if (rank == 0) {
        if (stat(arg, &st) == 0 && !S_ISDIR(st.st_mode))
            hdr[1] = 1;
        else if (ckpt_dir_of(arg, dir, CKPT_PATHMAX, err))
            hdr[0] = -1;
        else if (stat(dir, &st) != 0 && errno == ENOENT)
            hdr[0] = 1;
        else if (ckpt_dir_scan(dir, v, n, err))
            hdr[0] = -1;
        hdr[2] = *n;
    }
    MPI_Bcast(hdr, 3, MPI_INT, 0, comm);
    MPI_Bcast(dir, CKPT_PATHMAX, MPI_CHAR, 0, comm);
    *is_file = hdr[1];
    *n = hdr[2];
    if (hdr[0] != 0 || *n == 0)
        return hdr[0];
    if (rank != 0 && !(*v = malloc(sizeof **v * (size_t)*n)))
        MPI_Abort(comm, 1); /* a few bytes: cannot fail in practice */
    MPI_Bcast(*v, (int)(sizeof **v * (size_t)*n), MPI_BYTE, 0, comm);
    return 0;
}

/* Collective: path is a good checkpoint (manifest, root attributes). */
static int good(MPI_Comm comm, const char *path, char *err)
{
    hid_t fid;

    if (ckpt_open_checked(comm, path, NULL, &fid, NULL, err))
        return -1;
    H5Fclose(fid);
    return 0;
}

static int find_newest(MPI_Comm comm, const char *dir,
                       const struct ckpt_entry *v, int n, int64_t before,
                       char *path, size_t pathlen, int64_t *step, FILE *warn,
                       char *err)
{
    char p[CKPT_PATHMAX], e[CKPT_ERRMAX];
    int rank, committed = 0;

    MPI_Comm_rank(comm, &rank);
    for (int i = n - 1; i >= 0; i--) {
        if (v[i].step >= before)
            continue; /* the caller passed over those already */
        if (v[i].partial) {
            if (rank == 0 && warn)
                fprintf(warn, "mpitron: warning: skipping %s/%s: incomplete "
                              "save (the job stopped while writing it)\n",
                        dir, v[i].name);
            continue;
        }
        committed++;
        ckpt_fmt(p, sizeof p, "%s/%s", dir, v[i].name);
        if (good(comm, p, e) == 0) {
            if ((size_t)snprintf(path, pathlen, "%s", p) >= pathlen)
                return ckpt_errf(err, "%s: path longer than %zu bytes", p,
                                 pathlen);
            if (step)
                *step = v[i].step;
            return 0;
        }
        if (rank == 0 && warn)
            fprintf(warn, "mpitron: warning: skipping %s: %s\n", p, e);
    }
    if (committed == 0 && before != INT64_MAX)
        return ckpt_errf(err, "no valid checkpoint in %s older than step "
                              "%lld", dir, (long long)before);
    if (committed == 0)
        return ckpt_errf(err, "no checkpoint in %s (no step_*.h5)", dir), 1;
    return ckpt_errf(err, "no valid checkpoint in %s: all %d step_*.h5 "
                          "files are damaged or incomplete (see the "
                          "warnings)", dir, committed);
}

int ckpt_find_good(MPI_Comm comm, const char *arg, char *path,
                   size_t pathlen, FILE *warn, char *err, size_t errlen)
{
    return ckpt_find_good_before(comm, arg, INT64_MAX, path, pathlen, NULL,
                                 warn, err, errlen);
}

int ckpt_find_good_before(MPI_Comm comm, const char *arg, int64_t before,
                          char *path, size_t pathlen, int64_t *step,
                          FILE *warn, char *err, size_t errlen)
{
    char dir[CKPT_PATHMAX] = "", e[CKPT_ERRMAX] = "";
    struct ckpt_entry *v = NULL;
    struct ckpt_h5_quiet q;
    int is_file = 0, n = 0, rc;

    ckpt_h5_quiet_begin(&q);
    rc = find_scan(comm, arg, &is_file, dir, &v, &n, e);
    if (rc == 1) {
        ckpt_errf(e, "no checkpoint in %s (%s)", dir, "no such directory");
    } else if (rc == 0 && is_file && before != INT64_MAX) {
        rc = ckpt_errf(e, "%s: no older checkpoint to fall back to", arg);
    } else if (rc == 0 && is_file) {
        if (step)
            *step = -1;
        rc = good(comm, arg, e);
        if (!rc && (size_t)snprintf(path, pathlen, "%s", arg) >= pathlen)
            rc = ckpt_errf(e, "%s: path longer than %zu bytes", arg, pathlen);
    } else if (rc == 0) {
        rc = find_newest(comm, dir, v, n, before, path, pathlen, step, warn,
                         e);
    } else {
        MPI_Bcast(e, CKPT_ERRMAX, MPI_CHAR, 0, comm);
    }
    free(v);
    ckpt_h5_quiet_end(&q);
    if (rc)
        ckpt_err_out(err, errlen, e);
    return rc;
}

/* ---- retention ---------------------------------------------------------- */

/* unlink dir/name, logging; counts into *removed, first error into err. */
static void drop(const char *dir, const char *name, FILE *log, int *removed,
                 int *failed, char *err)
{
    char p[CKPT_PATHMAX];

    if (ckpt_fmt(p, sizeof p, "%s/%s", dir, name))
        return;
    if (unlink(p) == 0) {
        (*removed)++;
        if (log)
            fprintf(log, "removed %s\n", p);
    } else if (errno != ENOENT && (*failed)++ == 0) {
        ckpt_errf(err, "unlink(%s): %s", p, strerror(errno));
    }
}

/* Is the committed entry i (of v, sorted) kept?  r: its rank from the
 * newest committed one (0 = newest). */
static int kept(const struct ckpt_entry *c, int r, int64_t keep_last,
                int64_t keep_every, const char *keep, const char *latest)
{
    return keep_last <= 0 || r < keep_last ||
           (keep_every > 0 && c->step % keep_every == 0) ||
           !strcmp(c->name, keep) || !strcmp(c->name, latest);
}

/* Does dir/name look like one of ours, cheaply: its manifest parses and
 * gives the file's size.  Retention ranks and deletes only these: a file
 * without one (damaged, foreign, copied in half) neither pushes a good
 * checkpoint out of keep_last nor is deleted. */
static int retainable(const char *dir, const char *name)
{
    char p[CKPT_PATHMAX], e[CKPT_ERRMAX];
    struct ckpt_manifest m;
    struct stat st;
    int ok = 0;

    if (ckpt_fmt(p, sizeof p, "%s/%s", dir, name) || stat(p, &st) != 0)
        return 0;
    if (ckpt_manifest_load(p, &m, e) == 0)
        ok = m.size == (uint64_t)st.st_size;
    ckpt_manifest_free(&m);
    return ok;
}

/* Leftovers of crashed saves older than newest: *.manifest.tmp, and
 * manifests whose step_N.h5 is gone. */
static void drop_orphans(const char *dir, int64_t newest, FILE *log,
                         int *removed, int *failed, char *err)
{
    char p[CKPT_PATHMAX];
    struct dirent *de;
    struct stat st;
    DIR *d = opendir(dir);

    while (d && (de = readdir(d)) != NULL) {
        long long s = -1;
        int end = 0;
        size_t len = strlen(de->d_name);
        if (sscanf(de->d_name, "step_%lld.h5.manifest%n", &s, &end) != 1 ||
            end == 0 || s < 0 || s >= newest)
            continue;
        if (!strcmp(de->d_name + end, ".tmp"))
            drop(dir, de->d_name, log, removed, failed, err);
        else if (de->d_name[end] == '\0' &&
                 !ckpt_fmt(p, sizeof p, "%s/%.*s", dir, (int)(len - 9),
                           de->d_name) &&
                 stat(p, &st) != 0 && errno == ENOENT)
            drop(dir, de->d_name, log, removed, failed, err);
    }
    if (d)
        closedir(d);
}

int ckpt_retain(const char *dir, int64_t keep_last, int64_t keep_every,
                const char *keep_path, FILE *log, char *err, size_t errlen)
{
    char e[CKPT_ERRMAX] = "", latest[CKPT_PATHMAX], mname[96];
    const char *keep = "";
    struct ckpt_entry *v;
    int n, r = 0, removed = 0, failed = 0;
    int64_t newest = -1;

    if (ckpt_dir_scan(dir, &v, &n, e)) {
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    if (keep_path)
        keep = strrchr(keep_path, '/') ? strrchr(keep_path, '/') + 1
                                       : keep_path;
    ckpt_latest_name(dir, latest, sizeof latest);
    unsigned char *good = calloc((size_t)n + 1, 1);
    if (!good) {
        free(v);
        snprintf(err, errlen, "%s: out of memory for retention", dir);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (!v[i].partial && (good[i] = (unsigned char)retainable(
                                  dir, v[i].name)))
            newest = v[i].step;
    for (int i = n - 1; i >= 0; i--) {
        if (v[i].partial) {
            /* a save in flight has a step above the newest committed */
            int has_h5 = i > 0 && v[i - 1].step == v[i].step;
            if (v[i].step < newest) {
                drop(dir, v[i].name, log, &removed, &failed, e);
                snprintf(mname, sizeof mname, "%.*s.manifest",
                         (int)strlen(v[i].name) - 8, v[i].name);
                if (!has_h5)
                    drop(dir, mname, log, &removed, &failed, e);
            }
            continue;
        }
        if (!good[i])
            continue;
        if (!kept(&v[i], r++, keep_last, keep_every, keep, latest)) {
            drop(dir, v[i].name, log, &removed, &failed, e);
            snprintf(mname, sizeof mname, "%s.manifest", v[i].name);
            drop(dir, mname, log, &removed, &failed, e);
        }
    }
    drop_orphans(dir, newest, log, &removed, &failed, e);
    free(good);
    free(v);
    if (failed) {
        ckpt_err_out(err, errlen, e);
        return -1;
    }
    return removed;
}
