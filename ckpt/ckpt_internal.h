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

/* The agreement of ckpt/ (the layer includes only itself, so not comm/'s
 * comm_agree).  Collective: 0 when rc == 0 on every rank; else -1 on
 * every rank and err (CKPT_ERRMAX) holds the message of the lowest
 * failing rank, prefixed with "rank R: " when R is not 0.  comm ==
 * MPI_COMM_NULL: serial, rc alone decides, no MPI call. */
int ckpt_agree(MPI_Comm comm, int rc, char *err);

/* Collective, agreed: checks the caller's tensor list (ndim, shapes, the
 * hyperslab inside the global shape, data present) and that every rank
 * passes the same names and global shapes in the same order. */
int ckpt_tensors_check(MPI_Comm comm, const struct ckpt_tensor *t, int n,
                       char *err);

/* Collective, agreed: every element of every rank's hyperslabs is
 * finite.  Else -1 with err naming the first dataset and element at fault
 * (global index) on the lowest such rank: "refusing to save a non-finite
 * value: /model/wte[3,17] is nan".  One pass over the data. */
int ckpt_tensors_finite(MPI_Comm comm, const struct ckpt_tensor *t, int n,
                        char *err);

/* Property lists; each returns a new id (caller closes) or a negative value
 * with err set.  fapl: MPI-IO on comm, collective metadata.  dxpl:
 * collective transfers.  dcpl: the layout of a tensor's dataset (the
 * format in ckpt.h): contiguous, no filter, allocated at creation (so its
 * byte range is known before any data is written), never filled. */
hid_t ckpt_fapl_mpio(MPI_Comm comm, char *err);
hid_t ckpt_dxpl_collective(char *err);
hid_t ckpt_dcpl_create(char *err);

/* Select t's hyperslab in fspace (or nothing when t holds no element) and
 * create the matching memory space in *mspace (caller closes): of the
 * hyperslab's shape, which keeps HDF5 on its fast path (ckpt_util.c).
 * Returns 0 or -1 with err. */
int ckpt_select(hid_t fspace, const struct ckpt_tensor *t, hid_t *mspace,
                char *err);

/* Number of elements of t held by this rank: prod(count). */
int64_t ckpt_tensor_local_count(const struct ckpt_tensor *t);

/* MPITRON_CKPT_TIMING (ckpt.h): rank 0 prints the seconds since the
 * previous call, labelled what, to stderr (what NULL: start the clock).
 * Local (MPI_Comm_rank only); a no-op when the variable is unset. */
void ckpt_phase(MPI_Comm comm, const char *what);

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

/* The byte range [off, off+len) of the file holding the data of dataset
 * name (not owned), and its checksum (the xxh64 of ckpt.h). */
struct ckpt_extent {
    const char *name;
    uint64_t off, len, hash;
};

struct ckpt_extents {
    struct ckpt_extent *e;
    size_t n, cap;
};

/* Appends an extent.  0, or -1 with err (out of memory). */
int ckpt_extents_add(struct ckpt_extents *x, const char *name, uint64_t off,
                     uint64_t len, uint64_t hash, char *err);
void ckpt_extents_free(struct ckpt_extents *x);

/* Sorts x by offset and checks that the extents are disjoint and end by
 * size.  0, or -1 with err naming the two datasets
 * (path: the file, for the message). */
int ckpt_extents_sort(struct ckpt_extents *x, uint64_t size,
                      const char *path, char *err);

/* A piece of the file (ckpt.h, manifest) and its XXH64. */
struct ckpt_piece {
    uint64_t off, len, hash;
};

/* The pieces of the extents of x (sorted, see ckpt_extents_sort): each
 * cut into block-sized pieces from its start.  With gaps, also the bytes
 * before, between and after them up to size, cut likewise from the start
 * of each such range: the pieces then tile [0, size).  Hashes zero.
 * *out is malloc'ed (caller frees; may be NULL when *n == 0).  0, or -1
 * with err (out of memory). */
int ckpt_pieces_cut(const struct ckpt_extents *x, uint64_t size, int gaps,
                    uint64_t block, struct ckpt_piece **out, int64_t *n,
                    char *err);

/* Collective over comm (MPI_COMM_NULL: serial, no MPI call): every rank
 * hashes a run of about 1/size of the bytes of p[0..n) from the open fd,
 * then every rank holds every p[i].hash.  Agreed: 0, or -1 on every rank
 * with err naming path and the offset that could not be read. */
int ckpt_pieces_hash(MPI_Comm comm, int fd, const char *path,
                     struct ckpt_piece *p, int64_t n, uint64_t block,
                     char *err);

/* The dataset checksum (xxh64 of ckpt.h) of the n pieces p (those of one
 * dataset's data, in order); n == 0: XXH64 of nothing. */
uint64_t ckpt_checksum_pieces(const struct ckpt_piece *p, int64_t n);

/* A parsed manifest.  Names in ext point into text; everything is owned
 * and released by ckpt_manifest_free.  ext is in file order; by_name
 * indexes it sorted by name (ckpt_manifest_find). */
struct ckpt_manifest {
    char *text;
    const char *file;
    uint64_t size, block, self;  /* self: the self line's hash */
    struct ckpt_piece *piece;
    int64_t npieces;
    struct ckpt_extents ext;
    struct ckpt_extent **by_name;
};

/* Reads and parses PATH.manifest (an untrusted file: every field is
 * checked, the self hash first, and the structure: pieces tiling
 * [0, size), each dataset's range made of its own pieces, names unique).
 * Returns 0, 1 when it does not exist (err says so), or -1 with err.  m
 * is zeroed first and must be freed in every case. */
int ckpt_manifest_load(const char *path, struct ckpt_manifest *m, char *err);
/* The parse of ckpt_manifest_load on text (len bytes; text[len] must be
 * NUL), which m takes over (freed by ckpt_manifest_free); name is for
 * the messages.  m must be zeroed.  0, or -1 with err. */
int ckpt_manifest_parse(char *text, size_t len, const char *name,
                        struct ckpt_manifest *m, char *err);
void ckpt_manifest_free(struct ckpt_manifest *m);

/* The extent of dataset name in m, or NULL. */
const struct ckpt_extent *ckpt_manifest_find(const struct ckpt_manifest *m,
                                             const char *name);

/* The index of the piece of m starting at off, or -1. */
int64_t ckpt_manifest_piece_at(const struct ckpt_manifest *m, uint64_t off);

/* The manifest text for a file of base name fname: its n pieces (tiling
 * [0, size)) and the extents x (malloc'ed, caller frees; NULL when out
 * of memory). */
char *ckpt_manifest_text(const char *fname, uint64_t size, uint64_t block,
                         const struct ckpt_piece *p, int64_t n,
                         const struct ckpt_extents *x);

/* Writes text as FINAL.manifest durably (ckpt_replace: through
 * FINAL.manifest.tmp).  0 or -1 with err; the .tmp is removed on
 * failure. */
int ckpt_manifest_write(const char *final, const char *text, char *err);

/* The manifest check of ckpt_check_manifest on an internal err
 * (CKPT_ERRMAX).  comm == MPI_COMM_NULL: serial, no MPI call at all.
 * When keep is not NULL, rank 0's manifest is moved there on success
 * (other ranks get it zeroed; free it in every case). */
int ckpt_manifest_check(MPI_Comm comm, const char *path, FILE *report,
                        struct ckpt_manifest *keep, char *err);

/* The same check for the readers (ckpt_open_checked): a file that passed
 * it earlier in this process is not hashed again while its device,
 * inode, size, mtime, ctime and manifest self hash are unchanged (a pass
 * is remembered only when the file's ctime is older than the check by
 * more than a few timestamp ticks: 0.05 s, 2 s without sub-second times).
 * Collective over comm (not MPI_COMM_NULL); main thread only (the cache
 * is a static of ckpt_check.c; the async save thread never reads). */
int ckpt_manifest_check_once(MPI_Comm comm, const char *path,
                             struct ckpt_manifest *keep, char *err);

/* ---- shared by the readers (ckpt_read.c) --------------------------------- */

/* The first parse of path's HDF5 structure, in a disposable child
 * process (ckpt_probe.c): 0 when the child opened it and walked every
 * object and attribute; else -1 with err ("PATH: HDF5 crashed parsing it
 * (signal 11); refusing it", "... hung ...", or the child's HDF5 error).
 * Local; one process calls it for everyone.  No HDF5 file may be open for
 * writing in this process while it runs (forked HDF5 state). */
int ckpt_probe(const char *path, char *err);
/* The child's walk on an open file (for the fuzzer, which runs it in
 * process on a file image): every group, dataset and attribute as
 * ckpt_probe describes.  0 or -1 with err. */
int ckpt_probe_walk(hid_t fid, const char *path, char *err);
/* `ckpt info`'s listing of an open file (after the checks). */
int ckpt_info_fid(hid_t fid, const char *path, FILE *out, char *err);

/* Collective, agreed: stat, manifest check (ckpt_manifest_check_once;
 * its manifest into keep as there, may be NULL), H5Fis_hdf5, then
 * H5Fopen read-only through MPI-IO and the root attribute check (meta as
 * in ckpt_root_check, may be NULL).  On success *fid is open on every
 * rank; on failure nothing is left open. */
int ckpt_open_checked(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                      hid_t *fid, struct ckpt_manifest *keep, char *err);

/* The tensor reads of ckpt_read_tensors on an open file: every tensor's
 * rank, global shape, type and dataset check (against m, may be NULL:
 * then only the xxh64 attribute's presence), agreed, then the reads.
 * Collective.  Leaves no dataset open.  0 or -1 with err. */
int ckpt_read_fid(MPI_Comm comm, hid_t fid, const char *path,
                  const struct ckpt_tensor *t, int n,
                  const struct ckpt_manifest *m, char *err);

/* ckpt_open_checked without the manifest check, for a caller that has
 * just run it. */
int ckpt_open_h5(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                 hid_t *fid, char *err);

/* The check every reader makes of an open dataset before reading it:
 * its xxh64 attribute and its byte range (H5Dget_offset, storage size)
 * against the extent the checked manifest m names for it (a dataset
 * without data: none, and the checksum of nothing).  Every rank makes
 * the same HDF5 calls (collective metadata reads); only a rank with m
 * (rank 0) compares.  0, or -1 with err: "PATH: NAME: checksum ...". */
int ckpt_dataset_check(hid_t dset, const char *path, const char *name,
                       const struct ckpt_manifest *m, char *err);

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

/* ---- write helpers (ckpt_file.c, ckpt_write.c) -------------------------- */

/* open(path, flags), fsync, close.  Directories take O_RDONLY. */
int ckpt_fsync_path(const char *path, int flags, char *err);
/* The fault-injection hook of ckpt.h: called by every rank after each of
 * the n datasets of path (done of them written). */
void ckpt_fault_point(int rank, int done, int n, const char *path);

#endif
