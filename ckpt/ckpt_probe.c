/*
 * ckpt_probe.c - the first parse of a file's HDF5 structure happens in a
 * disposable child process.
 *
 * HDF5 1.10 trusts the structure of the files it opens: a malformed
 * object header, B-tree or heap can crash the library (public CVEs with
 * proof-of-concept files) or loop forever.  The manifest check guards
 * against damage, not against a hostile or broken writer, who can forge
 * a manifest.  So before any process of ours parses a file with HDF5, a
 * fork()ed child opens it read-only (sec2 driver) and walks everything a
 * reader touches: the superblock, every group, every dataset's type, dataspace, layout, offset and
 * storage size, every attribute of every object, and one element of
 * every dataset.  The child then exits (_exit: no atexit handler, no MPI
 * call); the parent goes on only when it exited 0.
 *
 *   killed by a signal  "FILE: HDF5 crashed parsing it (signal 11);
 *                        refusing it"
 *   no answer in time   "FILE: HDF5 hung parsing it (no answer in 30 s);
 *                        refusing it" (the child is killed)
 *   an HDF5 error       the child's message (it goes up a pipe)
 *
 * Fault injection (tests only): MPITRON_CKPT_PROBE_FAULT=segv|hang makes
 * the child raise SIGSEGV or stop before it parses anything ("segv:TEXT":
 * only for paths that hold TEXT);
 * MPITRON_CKPT_PROBE_TIMEOUT=S changes the 30 s.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_internal.h"

#define PROBE_TIMEOUT_S 30.0

/* ---- the child's walk ------------------------------------------------ */

struct walk {
    const char *path;
    char *err;
    int rc;
};

/* Open an attribute and read its value whatever its type (variable-length
 * strings included), as a reader will. */
static herr_t attr_visit(hid_t obj, const char *name, const H5A_info_t *ai,
                         void *data)
{
    struct walk *w = data;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = -1, s = -1, nt = -1;
    hssize_t np;
    void *buf = NULL;
    (void)ai;
    if (a < 0) {
        w->rc = ckpt_h5_fail(w->err, w->path, "H5Aopen");
        return -1;
    }
    t = H5Aget_type(a);
    s = H5Aget_space(a);
    nt = t >= 0 ? H5Tget_native_type(t, H5T_DIR_DEFAULT) : -1;
    np = s >= 0 ? H5Sget_simple_extent_npoints(s) : -1;
    if (nt < 0 || np < 0 || H5Tget_size(nt) == 0)
        w->rc = ckpt_h5_fail(w->err, w->path, "attribute type/space");
    else if ((double)np * (double)H5Tget_size(nt) > (double)(1 << 24))
        w->rc = ckpt_errf(w->err, "%s: attribute '%.100s' claims %lld "
                                  "values: not an mpitron checkpoint",
                          w->path, name, (long long)np);
    else if (!(buf = calloc((size_t)(np ? np : 1), H5Tget_size(nt))))
        w->rc = ckpt_errf(w->err, "%s: out of memory", w->path);
    else if (H5Aread(a, nt, buf) < 0)
        w->rc = ckpt_h5_fail(w->err, w->path, "H5Aread");
    else if (H5Tdetect_class(nt, H5T_VLEN) > 0 || H5Tis_variable_str(nt) > 0)
        H5Dvlen_reclaim(nt, s, H5P_DEFAULT, buf);
    free(buf);
    if (nt >= 0)
        H5Tclose(nt);
    if (t >= 0)
        H5Tclose(t);
    if (s >= 0)
        H5Sclose(s);
    H5Aclose(a);
    return w->rc ? -1 : 0;
}

/* One element of a dataset: the selection and read paths a reader uses. */
static int read_one(hid_t d, hid_t space, int nd, struct walk *w)
{
    hsize_t start[H5S_MAX_RANK] = {0}, one[H5S_MAX_RANK], dims[H5S_MAX_RANK];
    float v;
    int rc = 0;

    if (nd < 1 || nd > H5S_MAX_RANK ||
        H5Sget_simple_extent_dims(space, dims, NULL) != nd)
        return 0; /* scalar or odd: the reader refuses it by shape */
    for (int k = 0; k < nd; k++) {
        if (dims[k] == 0)
            return 0;
        one[k] = 1;
    }
    hid_t m = H5Screate_simple(1, one, NULL);
    if (m < 0 || H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, one,
                                     NULL) < 0 ||
        H5Dread(d, H5T_NATIVE_FLOAT, m, space, H5P_DEFAULT, &v) < 0)
        rc = ckpt_h5_fail(w->err, w->path, "H5Dread of one element");
    if (m >= 0)
        H5Sclose(m);
    return rc;
}

static int dataset_walk(hid_t loc, const char *name, struct walk *w)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT), t = -1, s = -1, p = -1;
    int rc = 0;

    if (d < 0)
        return ckpt_h5_fail(w->err, w->path, "H5Dopen2");
    t = H5Dget_type(d);
    s = H5Dget_space(d);
    p = H5Dget_create_plist(d);
    if (t < 0 || s < 0 || p < 0 || H5Pget_layout(p) < 0)
        rc = ckpt_h5_fail(w->err, w->path, "dataset type/space/layout");
    if (!rc) {
        (void)H5Dget_offset(d); /* HADDR_UNDEF is an answer, not a crash */
        (void)H5Dget_storage_size(d);
        if (H5Aiterate2(d, H5_INDEX_NAME, H5_ITER_INC, NULL, attr_visit,
                        w) < 0 && !w->rc)
            rc = ckpt_h5_fail(w->err, w->path, "H5Aiterate2");
        rc = rc ? rc : w->rc;
    }
    if (!rc && H5Tget_class(t) == H5T_FLOAT)
        rc = read_one(d, s, H5Sget_simple_extent_ndims(s), w);
    if (p >= 0)
        H5Pclose(p);
    if (s >= 0)
        H5Sclose(s);
    if (t >= 0)
        H5Tclose(t);
    H5Dclose(d);
    return rc;
}

static herr_t obj_visit(hid_t loc, const char *name, const H5O_info_t *oi,
                        void *data)
{
    struct walk *w = data;
    if (oi->type == H5O_TYPE_DATASET) {
        w->rc = dataset_walk(loc, name, w);
    } else if (oi->type == H5O_TYPE_GROUP) {
        hid_t g = H5Oopen(loc, name, H5P_DEFAULT);
        if (g < 0)
            w->rc = ckpt_h5_fail(w->err, w->path, "H5Oopen");
        else {
            if (H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, NULL, attr_visit,
                            w) < 0 && !w->rc)
                w->rc = ckpt_h5_fail(w->err, w->path, "H5Aiterate2");
            H5Oclose(g);
        }
    }
    return w->rc ? -1 : 0;
}

/* The walk of the child; 0 or -1 with err. */
static int walk_file(const char *path, char *err)
{
    htri_t h5 = H5Fis_hdf5(path);
    hid_t fid;
    int rc;

    if (h5 < 0)
        return ckpt_h5_fail(err, path, "H5Fis_hdf5");
    if (h5 == 0)
        return ckpt_errf(err, "%s: not an HDF5 file, so not an mpitron "
                              "checkpoint", path);
    fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0)
        return ckpt_h5_fail(err, path, "H5Fopen");
    rc = ckpt_probe_walk(fid, path, err);
    if (H5Fclose(fid) < 0 && !rc)
        rc = ckpt_h5_fail(err, path, "H5Fclose");
    return rc ? -1 : 0;
}

int ckpt_probe_walk(hid_t fid, const char *path, char *err)
{
    struct walk w = {path, err, 0};
    int rc = H5Ovisit(fid, H5_INDEX_NAME, H5_ITER_INC, obj_visit, &w) < 0;

    if (rc && !w.rc)
        ckpt_h5_fail(err, path, "H5Ovisit");
    return rc ? -1 : 0;
}

static void child(const char *path, int fd)
{
    char err[CKPT_ERRMAX] = "";
    const char *f = getenv("MPITRON_CKPT_PROBE_FAULT");
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

    /* die of the signal itself: not through the MPI library's handlers,
     * which print a backtrace and talk to the parent's runtime */
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], SIG_DFL);
    const char *only = f ? strchr(f, ':') : NULL;
    if (f && only && !strstr(path, only + 1))
        f = NULL; /* "segv:SUBSTR": only paths holding SUBSTR */
    if (f && strncmp(f, "segv", 4) == 0 && (!f[4] || f[4] == ':'))
        raise(SIGSEGV);
    if (f && strncmp(f, "hang", 4) == 0 && (!f[4] || f[4] == ':'))
        for (;;)
            pause();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = walk_file(path, err);
    if (rc) {
        size_t n = strlen(err);
        if (write(fd, err, n) != (ssize_t)n)
            rc = 2;
    }
    _exit(rc ? 1 : 0);
}

/* ---- the parent ------------------------------------------------------- */

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Read the child's message until EOF or the deadline: 0, or 1 when the
 * deadline passed first. */
static int collect(int fd, char *msg, size_t cap, double deadline)
{
    size_t got = 0;
    for (;;) {
        double left = deadline - now_mono();
        if (left <= 0)
            return 1;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        char buf[512];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0; /* EOF: the child exited (or closed the pipe) */
        size_t k = (size_t)n < cap - 1 - got ? (size_t)n : cap - 1 - got;
        memcpy(msg + got, buf, k);
        got += k;
        msg[got] = '\0';
    }
}

int ckpt_probe(const char *path, char *err)
{
    char msg[CKPT_ERRMAX] = "";
    const char *t = getenv("MPITRON_CKPT_PROBE_TIMEOUT");
    double timeout = t && atof(t) > 0 ? atof(t) : PROBE_TIMEOUT_S;
    int fds[2], status = 0;

    fflush(NULL); /* the child must not write the parent's buffers again */
    if (pipe(fds) != 0)
        return ckpt_errf(err, "%s: pipe for the HDF5 probe: %s", path,
                         strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return ckpt_errf(err, "%s: fork for the HDF5 probe: %s", path,
                         strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        child(path, fds[1]);
    }
    close(fds[1]);
    int late = collect(fds[0], msg, sizeof msg, now_mono() + timeout);
    close(fds[0]);
    if (late)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (late)
        return ckpt_errf(err, "%s: HDF5 hung parsing it (no answer in %.0f "
                              "s); refusing it", path, timeout);
    if (WIFSIGNALED(status))
        return ckpt_errf(err, "%s: HDF5 crashed parsing it (signal %d); "
                              "refusing it", path, WTERMSIG(status));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return ckpt_errf(err, "%s", msg[0] ? msg
                                  : "the HDF5 probe failed without a message");
    return 0;
}
