/*
 * ckpt_file.c - the one `mkdir -p` and the one durable replace of the
 * program.  They live in ckpt/ because ckpt/ is the layer that owns
 * durable files and may include nothing but itself; src/ uses them for
 * token shards, metrics.jsonl and hang reports (ckpt.h, "Durable files").
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

int ckpt_mkdir_p(const char *dir, char *err, size_t errlen)
{
    char p[CKPT_PATHMAX];
    struct stat st;
    size_t len = strlen(dir);

    if (len == 0) {
        snprintf(err, errlen, "cannot create a directory with an empty name");
        return -1;
    }
    if (len >= sizeof p) {
        snprintf(err, errlen, "cannot create directory %.200s...: the path "
                 "is longer than %zu bytes", dir, sizeof p - 1);
        return -1;
    }
    memcpy(p, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        const char *why = NULL;
        if (p[i] != '/' && p[i] != '\0')
            continue;
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            why = strerror(errno);
        else if (stat(p, &st) != 0)
            why = strerror(errno);
        else if (!S_ISDIR(st.st_mode))
            why = "exists and is not a directory";
        if (why) {
            snprintf(err, errlen, "cannot create directory %.400s: %.400s: "
                     "%s", dir, p, why);
            return -1;
        }
        p[i] = i < len ? '/' : '\0';
    }
    return 0;
}

int ckpt_fsync_path(const char *path, int flags, char *err)
{
    int fd = open(path, flags);

    if (fd < 0)
        return ckpt_errf(err, "open(%s) for fsync: %s", path, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return ckpt_errf(err, "fsync(%s): %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return ckpt_errf(err, "close(%s): %s", path, strerror(errno));
    return 0;
}

/* write(2) all of len bytes; 0 or -1 with errno set. */
static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* The directory holding path into dir ("." for a bare name). */
static void dir_of(const char *path, char *dir, size_t len)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        snprintf(dir, len, ".");
    else if (slash == path)
        snprintf(dir, len, "/");
    else
        snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

int ckpt_replace(const char *path, const struct ckpt_buf *b, int n,
                 char *err, size_t errlen)
{
    char tmp[CKPT_PATHMAX], dir[CKPT_PATHMAX], e[CKPT_ERRMAX];
    int fd;

    if (ckpt_fmt(tmp, sizeof tmp, "%s.tmp", path)) {
        snprintf(err, errlen, "%.200s...: path too long", path);
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        snprintf(err, errlen, "open(%s): %s", tmp, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (write_all(fd, b[i].p, b[i].len) != 0) {
            ckpt_errf(e, "write(%s): %s", tmp, strerror(errno));
            goto fail_close;
        }
    if (fsync(fd) != 0) {
        ckpt_errf(e, "fsync(%s): %s", tmp, strerror(errno));
        goto fail_close;
    }
    if (close(fd) != 0) {
        ckpt_errf(e, "close(%s): %s", tmp, strerror(errno));
        goto fail_unlink;
    }
    if (rename(tmp, path) != 0) {
        ckpt_errf(e, "rename(%s, %s): %s", tmp, path, strerror(errno));
        goto fail_unlink;
    }
    dir_of(path, dir, sizeof dir);
    if (ckpt_fsync_path(dir, O_RDONLY, e) != 0)
        goto fail; /* the new file is in place, maybe not durably */
    return 0;
fail_close:
    close(fd);
fail_unlink:
    unlink(tmp);
fail:
    snprintf(err, errlen, "%s", e);
    return -1;
}
