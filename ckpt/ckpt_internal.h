/*
 * ckpt_internal.h - helpers shared by the ckpt/ sources; not part of the
 * public interface (that is ckpt.h).
 *
 * Error convention inside ckpt/: every function that can fail writes a
 * message into a caller buffer of CKPT_ERRMAX bytes and returns -1.  A
 * collective step ends with ckpt_agree(), after which every rank holds the
 * same status and the same message.
 */
#ifndef MPITRON_CKPT_INTERNAL_H
#define MPITRON_CKPT_INTERNAL_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"

#define CKPT_ERRMAX 1024
#define CKPT_PATHMAX 4096

#if defined(__GNUC__)
#define CKPT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CKPT_PRINTF(a, b)
#endif

/* snprintf that returns 0, or -1 when the output was truncated (and
 * keeps GCC's -Wformat-truncation quiet about deliberate truncation). */
int ckpt_fmt(char *buf, size_t len, const char *fmt, ...) CKPT_PRINTF(3, 4);

/* printf into err (CKPT_ERRMAX bytes); always returns -1. */
int ckpt_errf(char *err, const char *fmt, ...) CKPT_PRINTF(2, 3);

/* Message for a failed HDF5 call: "<what>: <call> failed: <innermost HDF5
 * error description>"; clears the HDF5 error stack; returns -1. */
int ckpt_h5_fail(char *err, const char *what, const char *call);

/* Copy an internal message (CKPT_ERRMAX) out to the caller's buffer, which
 * may be NULL or of any length (the message is then truncated). */
void ckpt_err_out(char *err, size_t errlen, const char *msg);

/* HDF5 prints its error stack to stderr by default; the library turns that
 * off for the duration of each public call and restores what it found. */
struct ckpt_h5_quiet {
    H5E_auto2_t func;
    void *data;
};
void ckpt_h5_quiet_begin(struct ckpt_h5_quiet *q);
void ckpt_h5_quiet_end(const struct ckpt_h5_quiet *q);

/* Collective: 0 when rc == 0 on every rank; else -1 on every rank and err
 * (CKPT_ERRMAX) holds the message of the lowest failing rank, prefixed
 * with "rank R: " when R is not 0. */
int ckpt_agree(MPI_Comm comm, int rc, char *err);

/* Collective, agreed: checks the caller's tensor list (ndim, shapes, the
 * hyperslab inside the global shape, data present) and that every rank
 * passes the same names and global shapes in the same order. */
int ckpt_tensors_check(MPI_Comm comm, const struct ckpt_tensor *t, int n,
                       char *err);

/* Property lists; each returns a new id (caller closes) or a negative value
 * with err set.  fapl: MPI-IO on comm, collective metadata.  dxpl:
 * collective transfers.  dcpl: the layout of one tensor's dataset (see
 * the format in ckpt.h: chunks of whole rows up to CKPT_CHUNK_BYTES with
 * Fletcher32; contiguous when it has no element; allocated early, never
 * filled). */
hid_t ckpt_fapl_mpio(MPI_Comm comm, char *err);
hid_t ckpt_dxpl_collective(char *err);
hid_t ckpt_dcpl_create(int ndim, const hsize_t *dims, char *err);

/* Select t's hyperslab in fspace (or nothing when t holds no element) and
 * create the matching memory space in *mspace (caller closes).  Returns 0
 * or -1 with err. */
int ckpt_select(hid_t fspace, const struct ckpt_tensor *t, hid_t *mspace,
                char *err);

/* Number of elements of t held by this rank: prod(count). */
int64_t ckpt_tensor_local_count(const struct ckpt_tensor *t);

/* "(256,128)" into buf; dims as int64_t or hsize_t. */
void ckpt_shape_str(char *buf, size_t len, int ndim, const int64_t *dims);
void ckpt_hshape_str(char *buf, size_t len, int ndim, const hsize_t *dims);

/* Scalar root attributes.  Writes are collective (same value on every
 * rank).  Reads return 0, 1 when the attribute does not exist (err not
 * set), or -1 with err naming file and attribute.  A string read returns a
 * malloc'ed copy in *out (caller frees); variable- and fixed-length
 * strings are both accepted. */
int ckpt_attr_write_i64(hid_t obj, const char *name, int64_t v,
                        const char *file, char *err);
int ckpt_attr_write_u64(hid_t obj, const char *name, uint64_t v,
                        const char *file, char *err);
int ckpt_attr_write_str(hid_t obj, const char *name, const char *s,
                        const char *file, char *err);
int ckpt_attr_read_i64(hid_t obj, const char *name, int64_t *v,
                       const char *file, char *err);
int ckpt_attr_read_u64(hid_t obj, const char *name, uint64_t *v,
                       const char *file, char *err);
int ckpt_attr_read_str(hid_t obj, const char *name, char **out,
                       const char *file, char *err);

/* Checks format, version and complete on an open file; when meta is not
 * NULL also reads the other root attributes into it (meta->config_text is
 * malloc'ed; freed and NULL on error).  Not collective by itself: every
 * rank calls it on the same file.  Returns 0 or -1 with err. */
int ckpt_root_check(hid_t fid, const char *path, struct ckpt_meta *meta,
                    char *err);

/* ---- manifest (ckpt_manifest.c, ckpt_check.c) ------------------------ */

#define CKPT_MANIFEST_MAX ((size_t)64 << 20) /* larger: not ours */

/* A byte range of the file holding data of dataset name (not owned). */
struct ckpt_extent {
    const char *name;
    uint64_t off, len;
};

struct ckpt_extents {
    struct ckpt_extent *e;
    size_t n, cap;
};

/* Appends [off, off+len) of name, merged with the previous range when it
 * is the same dataset and adjacent.  0, or -1 with err (out of memory). */
int ckpt_extents_add(struct ckpt_extents *x, const char *name, uint64_t off,
                     uint64_t len, char *err);
void ckpt_extents_free(struct ckpt_extents *x);

/* A parsed manifest.  Names in ext point into text; everything is owned
 * and released by ckpt_manifest_free. */
struct ckpt_manifest {
    char *text;
    const char *file;
    uint64_t size, block;
    int64_t nblocks;
    uint64_t *hash;
    struct ckpt_extents ext;
};

/* ceil(size / block) */
int64_t ckpt_manifest_nblocks(uint64_t size, uint64_t block);

/* Reads and parses PATH.manifest (an untrusted file: every field is
 * checked, the self hash first).  Returns 0, 1 when it does not exist
 * (err says so), or -1 with err.  m is zeroed first and must be freed in
 * every case. */
int ckpt_manifest_load(const char *path, struct ckpt_manifest *m, char *err);
void ckpt_manifest_free(struct ckpt_manifest *m);

/* The manifest text for a file of base name fname (malloc'ed, caller
 * frees; NULL when out of memory). */
char *ckpt_manifest_text(const char *fname, uint64_t size, uint64_t block,
                         const uint64_t *hash, int64_t nblocks,
                         const struct ckpt_extents *x);

/* Writes text as FINAL.manifest durably: FINAL.manifest.tmp, fsync,
 * rename (the caller fsyncs the directory).  0 or -1 with err; the .tmp
 * is removed on failure. */
int ckpt_manifest_write(const char *final, const char *text, char *err);

/* XXH64 of blocks i (i % nprocs == rank) of the open fd into hash[i]; the
 * other entries are left alone.  0 or -1 with err naming path and
 * offset. */
int ckpt_hash_blocks(int fd, const char *path, uint64_t size, uint64_t block,
                     int rank, int nprocs, uint64_t *hash, char *err);

/* The manifest check of ckpt_check_manifest on an internal err
 * (CKPT_ERRMAX).  comm == MPI_COMM_NULL: serial, no MPI call at all. */
int ckpt_manifest_check(MPI_Comm comm, const char *path, FILE *report,
                        char *err);

/* ---- shared by the readers (ckpt_read.c) --------------------------------- */

/* Collective, agreed: stat, manifest check, H5Fis_hdf5, then H5Fopen
 * read-only through MPI-IO and the root attribute check (meta as in
 * ckpt_root_check, may be NULL).  On success *fid is open on every rank;
 * on failure nothing is left open. */
int ckpt_open_checked(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                      hid_t *fid, char *err);

/* ckpt_open_checked without the manifest check, for a caller that has
 * just run it. */
int ckpt_open_h5(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                 hid_t *fid, char *err);

/* ---- the checkpoint directory (ckpt_resolve.c) --------------------------- */

/* One step_N.h5 or step_N.h5.partial found in a checkpoint directory. */
struct ckpt_entry {
    int64_t step;
    int partial;
    char name[64];
};

/* The checkpoint directory of arg: arg/ckpt when that is a directory,
 * else arg.  0, or -1 with err when the path is too long. */
int ckpt_dir_of(const char *arg, char *dir, size_t len, char *err);

/* step_N.h5 and step_N.h5.partial entries of dir, sorted by step, .h5
 * before .partial.  *out is malloc'ed (caller frees, may be NULL when
 * *n == 0).  0, or -1 with err (opendir failed, out of memory). */
int ckpt_dir_scan(const char *dir, struct ckpt_entry **out, int *n,
                  char *err);

/* The file name DIR/latest holds (trimmed), or "" when there is none. */
void ckpt_latest_name(const char *dir, char *name, size_t len);

/* ---- write helpers (ckpt_write.c) ---------------------------------------- */

/* open(path, flags), fsync, close.  Directories take O_RDONLY. */
int ckpt_fsync_path(const char *path, int flags, char *err);

/* The fault-injection hook of ckpt.h: called by every rank after each of
 * the n datasets of path (done of them written). */
void ckpt_fault_point(int rank, int done, int n, const char *path);

#endif
