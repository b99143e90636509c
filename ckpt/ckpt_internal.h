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

/* Datasets of at least CKPT_ALIGN_THRESHOLD bytes start on a multiple of
 * CKPT_ALIGN: one file-system stripe (Lustre's default) so that a rank's
 * hyperslab of a large tensor does not straddle stripes needlessly.  The
 * gaps are never written, so they stay holes on most file systems. */
#define CKPT_ALIGN_THRESHOLD ((hsize_t)1 << 20)
#define CKPT_ALIGN ((hsize_t)1 << 20)

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
 * with err set.  fapl: MPI-IO on comm, collective metadata, alignment.
 * dxpl: collective transfers.  dcpl: the layout of one tensor's dataset
 * (contiguous, no fill; chunking and Fletcher32 go here). */
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

#endif
