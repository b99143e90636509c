/*
 * shm.c - the shared segments of a one-node group (contract in shm.h).
 */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "comm.h"

int comm_shm_possible(MPI_Comm comm, int node_id)
{
    MPI_Comm sh;
    int size, shsize = 0, v[2] = {node_id, -node_id}, ok;
    MPI_Comm_size(comm, &size);
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL,
                            &sh) == MPI_SUCCESS) {
        MPI_Comm_size(sh, &shsize);
        MPI_Comm_free(&sh);
    }
    MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT, MPI_MAX, comm);
    _Atomic uint64_t probe = 0;
    ok = shsize == size && v[0] == -v[1] && atomic_is_lock_free(&probe);
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm);
    return ok;
}

static size_t round_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

/* Rank 0: create the file (sparse: its name is this process's and unique
 * among its groups); the others: open it.  Map the whole; the descriptor
 * stays open in *fd for shm_reserve.  0 or -1 with err. */
static int shm_map(struct comm_shm *s, const char *name, int create, int *fd,
                   char *err, size_t errlen)
{
    *fd = create ? open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600)
                 : open(name, O_RDWR | O_CLOEXEC);
    if (*fd < 0 || (create && ftruncate(*fd, (off_t)s->map_bytes) != 0)) {
        snprintf(err, errlen, "shared memory %s: %s", name, strerror(errno));
        return -1;
    }
    s->map = mmap(NULL, s->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                  *fd, 0);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        snprintf(err, errlen, "shared memory %s: mmap of %.1f MiB: %s", name,
                 (double)s->map_bytes / 1048576.0, strerror(errno));
        return -1;
    }
    return 0;
}

/* Reserve this rank's segment (the file is unlinked by now, so a kill
 * from here on leaves nothing behind): a full tmpfs is an error now, not
 * a SIGBUS when a page is first written.  0 or -1 with err. */
static int shm_reserve(const struct comm_shm *s, int fd, const char *name,
                       char *err, size_t errlen)
{
    int e = posix_fallocate(fd, (off_t)s->seg_bytes * s->rank,
                            (off_t)s->seg_bytes); /* an error number */
    if (e)
        snprintf(err, errlen, "shared memory %s: reserving %.1f MiB per "
                 "rank: %s", name, (double)s->seg_bytes / 1048576.0,
                 strerror(e));
    return e ? -1 : 0;
}

int comm_shm_init(struct comm_shm *s, const struct comm_group *g, size_t n,
                  const char *dir, char *err, size_t errlen)
{
    static unsigned serial;
    char name[4096] = "";
    int rc = 0, fd = -1;
    memset(s, 0, sizeof *s);
    s->size = g->size;
    s->rank = g->rank;
    s->n = n;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = round_up(n ? n * sizeof(float) : 1, page);
    s->seg_bytes = round_up(sizeof(struct comm_shm_ctl), page) + data;
    s->map_bytes = s->seg_bytes * (size_t)g->size;
    s->buf = calloc((size_t)g->size, sizeof *s->buf);
    s->ctl = calloc((size_t)g->size, sizeof *s->ctl);
    if (!s->buf || !s->ctl || n > SIZE_MAX / sizeof(float) / 2 / g->size) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    if (g->rank == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(name, sizeof name, "%s/mpitron.%ld.%u.%lx",
                 dir && *dir ? dir : COMM_SHM_DIR, (long)getpid(), serial++,
                 (unsigned long)ts.tv_nsec);
        if (rc == 0)
            rc = shm_map(s, name, 1, &fd, err, errlen);
    }
    MPI_Bcast(name, (int)sizeof name, MPI_CHAR, 0, g->comm);
    rc = comm_agree(g->comm, rc, err, errlen);
    if (rc == 0) {
        if (g->rank != 0)
            rc = shm_map(s, name, 0, &fd, err, errlen);
        rc = comm_agree(g->comm, rc, err, errlen);
    }
    if (g->rank == 0 && name[0]) /* every rank has it mapped, or gave up */
        unlink(name);
    if (rc == 0)
        rc = comm_agree(g->comm, shm_reserve(s, fd, name, err, errlen), err,
                        errlen);
    if (fd >= 0)
        close(fd);
    if (rc < 0) {
        comm_shm_free(s);
        return -1;
    }
    for (int r = 0; r < g->size; r++) {
        char *seg = (char *)s->map + s->seg_bytes * (size_t)r;
        s->ctl[r] = (struct comm_shm_ctl *)seg;
        s->buf[r] = (float *)(seg + s->seg_bytes - data);
    }
    return 0;
}

void comm_shm_free(struct comm_shm *s)
{
    if (s->map)
        munmap(s->map, s->map_bytes);
    free(s->buf);
    free(s->ctl);
    memset(s, 0, sizeof *s);
}

int comm_shm_holds(const struct comm_shm *s, const float *buf, size_t n)
{
    if (!s || !s->map || !buf)
        return 0;
    const float *b = s->buf[s->rank];
    return buf >= b && n <= s->n && (size_t)(buf - b) <= s->n - n;
}
