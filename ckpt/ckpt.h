/*
 * ckpt.h - HDF5 checkpoints, written and read collectively through the
 * MPI-IO driver, committed atomically, verified before they are parsed.
 * This layer knows tensors only as (name, global shape, local hyperslab,
 * pointer); it never includes a header from src/.
 *
 * File format, version 2 (one file per saved step, readable by h5dump/h5py):
 *   1. root attributes:
 *        format      string  "mpitron-ckpt"
 *        version     int64   2 (readers reject others, naming the versions
 *                            they read: CKPT_VERSIONS_READ)
 *        step        int64   optimizer steps completed
 *        tokens_seen int64
 *        config      string  the full config as INI text
 *        layout      string  "dp=D tp=T pp=P world=W" of the writer
 *        data_cursor int64   next train step whose batch is to be read
 *        rng_seed    uint64  seed of the counter-based generators (they
 *                            have no other state)
 *        complete    int64   1, written last (after a flush of everything
 *                            else): a file without it is not a checkpoint
 *   2. datasets, float32 little-endian, in GLOBAL (unsharded) shape, any
 *      group depth:
 *        /model/<tensor>      parameters
 *        /optim/m/<tensor>    AdamW first moments
 *        /optim/v/<tensor>    AdamW second moments
 *        /state/<name>        other state (e.g. compression residuals)
 *      Chunked: a chunk holds whole rows (whole trailing dimensions), at
 *      most CKPT_CHUNK_BYTES (the whole tensor when smaller; a row larger
 *      than that is cut along its last dimensions).  Every chunk carries
 *      HDF5's Fletcher32 checksum, verified by HDF5 on every read.  A
 *      dataset with no element is contiguous and holds no data.
 *   Every rank passes the same list of tensors in the same order (HDF5
 *   metadata calls are collective); a rank writes or reads only its own
 *   hyperslab (count may be all zero: it holds none of that tensor and
 *   still takes part), and replicated tensors are written by exactly one
 *   rank.  Writes are collective (required for filtered datasets).
 *
 * Manifest, version 1: the sidecar FILE.manifest (step_N.h5.manifest),
 * UTF-8 text, '\n'-terminated lines, in this order:
 *        mpitron-manifest 1
 *        file step_00000012.h5      base name the manifest was written for
 *        size S                     file size in bytes
 *        block B                    CKPT_MANIFEST_BLOCK (4 MiB)
 *        hash I H                   I = 0 .. ceil(S/B)-1: H = XXH64 (seed 0,
 *                                   16 lower-case hex digits) of bytes
 *                                   [I*B, min((I+1)*B, S))
 *        dataset NAME OFFSET LENGTH zero or more: a byte range of the file
 *                                   holding data of dataset NAME (adjacent
 *                                   chunks merged); used only to name what
 *                                   a damaged range holds
 *        self H                     XXH64 of every byte before this line
 *   The hashes are computed by all ranks in parallel (block I by rank
 *   I % size) from the closed file.  Every reader checks the manifest
 *   (size, every block, self hash) BEFORE any HDF5 call touches the file,
 *   so that a damaged or foreign file never reaches the HDF5 parser; a
 *   file without a manifest is not a checkpoint.
 *
 * Commit.  Files live in RUN_DIR/ckpt/.  A save of step N first checks
 * that the file system has room for the tensor data and reserves a
 * generous bound of the file size (fallocate with FALLOC_FL_KEEP_SIZE,
 * where supported: a write failing half-way is not reported consistently
 * by Open MPI's MPI-IO, and HDF5 1.10 cannot close such a file).  It is
 * written collectively as step_N.h5.partial (N as %08lld), flushed and
 * closed; rank 0 gives back the unused reservation; every rank fsyncs it
 * and hashes its blocks; rank 0 writes
 * step_N.h5.manifest.tmp, fsyncs it, renames it to step_N.h5.manifest,
 * renames the .partial to step_N.h5, fsyncs the directory, and only then
 * replaces RUN_DIR/ckpt/latest (one line: the file name) by writing
 * latest.tmp, fsync, rename, fsync the directory.  A crash at any moment
 * leaves the previous checkpoint the newest valid one (a re-save of an
 * existing step N that crashes between the two renames leaves the old
 * step_N.h5 with the new manifest, so it reads as damaged and is skipped).
 *
 * Fault injection (tests only): MPITRON_CKPT_FAULT="stall_ms=MS[,at=K]"
 * makes every rank of a save sleep MS milliseconds after writing K of its
 * datasets (default: half of them), with the .partial open; rank 0 first
 * prints "mpitron: MPITRON_CKPT_FAULT: stalling ..." to stderr, so that a
 * test can kill -9 a rank in the middle of a save.
 *
 * Threads: HDF5 (this build) is not thread-safe.  While an asynchronous
 * save is in flight only its thread calls HDF5: the caller may call no
 * ckpt_ function but ckpt_save_async_busy and ckpt_save_async_wait.
 */
#ifndef MPITRON_CKPT_H
#define MPITRON_CKPT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CKPT_FORMAT "mpitron-ckpt"
#define CKPT_VERSION 2
#define CKPT_VERSIONS_READ "2"
#define CKPT_MAX_DIMS 4
#define CKPT_CHUNK_BYTES ((size_t)1 << 20)
#define CKPT_MANIFEST_VERSION 1
#define CKPT_MANIFEST_BLOCK ((uint64_t)4 << 20)

struct ckpt_tensor {
    const char *name;               /* dataset path, e.g. "/model/wte" */
    int ndim;
    int64_t gshape[CKPT_MAX_DIMS];  /* global shape */
    int64_t start[CKPT_MAX_DIMS];   /* this rank's hyperslab */
    int64_t count[CKPT_MAX_DIMS];   /* all zero: this rank holds none */
    float *data;                    /* prod(count) floats, row-major */
};

struct ckpt_meta {
    int64_t step;
    int64_t tokens_seen;
    int64_t data_cursor;
    uint64_t rng_seed;
    char layout[128];
    char *config_text; /* on read: malloc'ed, caller frees */
};

/* ---- save --------------------------------------------------------------- */

/*
 * Write a checkpoint of step meta->step into dir (created if missing) and
 * commit it as described above.  Collective over comm.  On success the
 * file path is copied into path_out (may be NULL).  Returns 0, or -1 on
 * every rank with err naming the file and the failing HDF5/POSIX call; a
 * file system without room, or a file-size limit (ulimit -f) too small,
 * is reported as such before anything is written.  The .partial and any
 * manifest of this save are removed, and the previous checkpoint and
 * `latest` are untouched.  Does not apply retention: see ckpt_retain.
 */
int ckpt_save(MPI_Comm comm, const char *dir, const struct ckpt_meta *meta,
              const struct ckpt_tensor *t, int n, char *path_out,
              size_t pathlen, char *err, size_t errlen);

/* Asynchronous saves.  The object owns a communicator duplicated from the
 * caller's, a staging buffer (grown on demand, reused by later saves) and
 * the background thread.  Requires MPI_THREAD_MULTIPLE. */
struct ckpt_async;

/* Collective.  Returns 0 and a new object in *out (free with
 * ckpt_async_free), or -1 on every rank with err (MPI not initialised with
 * MPI_THREAD_MULTIPLE: the message names the level provided). */
int ckpt_async_init(MPI_Comm comm, struct ckpt_async **out, char *err,
                    size_t errlen);

/* Collective.  Copies every tensor's local hyperslab, its name, meta and
 * dir into the object, then returns while a thread writes and commits the
 * checkpoint exactly as ckpt_save would; t, meta and their buffers may be
 * reused as soon as this returns.  Returns 0, or -1 on every rank with err
 * (a save still in flight, out of memory); nothing is written then. */
int ckpt_save_async_start(struct ckpt_async *a, const char *dir,
                          const struct ckpt_meta *meta,
                          const struct ckpt_tensor *t, int n, char *err,
                          size_t errlen);

/* 1 while a started save has not been waited for, else 0.  Local. */
int ckpt_save_async_busy(const struct ckpt_async *a);

/* Collective.  Joins the save in flight and returns its status, identical
 * on every rank: 0 (path_out set, may be NULL) or -1 with err as
 * ckpt_save's.  Returns 1 when no save was in flight. */
int ckpt_save_async_wait(struct ckpt_async *a, char *path_out,
                         size_t pathlen, char *err, size_t errlen);

/* Collective (frees the communicator).  Waits for a save in flight (its
 * status is lost: wait first to see it) and frees everything.  Call
 * before MPI_Finalize.  NULL is a no-op. */
void ckpt_async_free(struct ckpt_async *a);

/* ---- read --------------------------------------------------------------- */

/* Read the root attributes.  Collective.  Checks the manifest first.
 * Returns 0, or -1 with err (no manifest, damaged or truncated file, not
 * an HDF5 file, not an mpitron checkpoint, unknown version: the message
 * lists the versions this build reads, incomplete file). */
int ckpt_read_meta(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                   char *err, size_t errlen);

/* Read every tensor's hyperslab into its data.  Collective.  Checks the
 * manifest first.  A dataset that is missing or whose global shape or
 * type differs from t[i] is an error naming the dataset and both shapes,
 * detected before any data is read; a checksum error names the dataset. */
int ckpt_read_tensors(MPI_Comm comm, const char *path,
                      const struct ckpt_tensor *t, int n, char *err,
                      size_t errlen);

/* Resolve a checkpoint argument: a file path is returned as is; a run
 * directory or its ckpt/ directory resolves to the file named in
 * ckpt/latest, else to the highest-numbered step_*.h5.  Returns 0, or -1
 * when nothing is found (err says where it looked).  Not collective, no
 * validity check (see ckpt_find_good). */
int ckpt_resolve(const char *arg, char *path, size_t pathlen, char *err,
                 size_t errlen);

/* ---- verify ------------------------------------------------------------- */

/* The manifest check every reader runs first: path is a regular file, its
 * manifest exists and hashes to its self line, the size and every block
 * hash match.  Collective over comm (blocks hashed in parallel; pass
 * MPI_COMM_SELF for one process).  Returns 0, or -1 on every rank with
 * err: "no manifest ... not a valid checkpoint", "size X but the manifest
 * says Y", or "bytes [A, B) are damaged: DATASET, ..." (datasets from the
 * manifest's extents; "HDF5 metadata" for bytes outside them).  When
 * report is not NULL, rank 0 also prints one line per damaged range
 * there (err may be truncated, report is not). */
int ckpt_check_manifest(MPI_Comm comm, const char *path, FILE *report,
                        char *err, size_t errlen);

/* `mpitron ckpt verify PATH`: manifest check, then (only if it passes)
 * the root attributes, then every dataset read in full (Fletcher32 checks
 * every chunk).  Collective; rank 0 prints to out (may be NULL) one line
 * per dataset ("OK   /model/wte (256,128)" or "BAD  /model/wte: reason")
 * and a summary.  Returns 0 when all is good, else -1 on every rank with
 * err summarising what is bad. */
int ckpt_verify(MPI_Comm comm, const char *path, FILE *out, char *err,
                size_t errlen);

/* `mpitron ckpt list RUN_DIR`: one line per step_*.h5 and *.partial in
 * the ckpt directory (a run directory means its ckpt/), oldest first:
 * step, bytes, status (ok | damaged: reason | incomplete (partial) | no
 * manifest) and "<- latest" on the one `latest` names.  Serial (no MPI),
 * status from the manifest check only.  Returns the number of entries
 * that are not ok (0 when all are), or -1 with err (directory
 * unreadable). */
int ckpt_list(const char *dir, FILE *out, char *err, size_t errlen);

/* resume=auto: the newest step_*.h5 under arg (a run directory or its
 * ckpt/ directory; a file path is checked alone) whose manifest and root
 * attributes check out.  Collective; rank 0 prints to warn (may be NULL)
 * one "mpitron: warning: skipping FILE: reason" line per newer file
 * skipped, .partial files included.  Returns 0 with the path in path,
 * 1 when there is no step_*.h5 at all (err says where it looked), or -1
 * on every rank with err when some exist but none is valid (or arg is a
 * file that is not). */
int ckpt_find_good(MPI_Comm comm, const char *arg, char *path,
                   size_t pathlen, FILE *warn, char *err, size_t errlen);

/* Retention, after a committed save, on one rank (not collective): in
 * dir, delete every step_N.h5 (then its manifest) that is neither among
 * the keep_last newest (keep_last <= 0: keep all), nor a milestone
 * (keep_every > 0 and N % keep_every == 0), nor keep_path (the file just
 * written, may be NULL), nor the file `latest` names; also delete
 * *.partial, *.manifest.tmp and orphan manifests of steps older than the
 * newest committed one (left by crashes).  Prints "removed FILE" per file
 * to log (may be NULL).  Returns the number of files removed, or -1 with
 * err naming the first file that could not be removed (it goes on with
 * the others). */
int ckpt_retain(const char *dir, int64_t keep_last, int64_t keep_every,
                const char *keep_path, FILE *log, char *err, size_t errlen);

/* `mpitron ckpt info`: checks the manifest, then prints step, layout,
 * config and every dataset with its shape, chunking and checksum to out.
 * Serial (opens the file on one process).  Returns 0 or -1 with err. */
int ckpt_print_info(const char *path, FILE *out, char *err, size_t errlen);

/* XXH64 with seed 0 of len bytes: the manifest's hash, exported for tests
 * and tools. */
uint64_t ckpt_hash64(const void *p, size_t len);

#endif
