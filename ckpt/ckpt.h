/*
 * ckpt.h - HDF5 checkpoints, written and read collectively through the
 * MPI-IO driver, committed atomically, verified before they are parsed.
 * This layer knows tensors only as (name, global shape, local hyperslab,
 * pointer); it never includes a header from src/.
 *
 * File format, version 3 (one file per saved step, readable by h5dump/h5py):
 *   1. root attributes:
 *        format      string  "mpitron-ckpt"
 *        version     int64   3 (readers reject others, naming the versions
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
 *      Contiguous layout, no filters: a dataset's data is one byte range
 *      of the file, row-major.  Each dataset carries the attribute
 *        xxh64       uint64  the dataset checksum of its data: cut the
 *                            data bytes into pieces of CKPT_MANIFEST_BLOCK
 *                            (4 MiB) from its first byte (the last piece
 *                            shorter), h_i = XXH64 (seed 0) of piece i,
 *                            checksum = XXH64 of h_0 h_1 ... each as 8
 *                            bytes little-endian (no element: XXH64 of
 *                            nothing, 0xef46db3751d8e999).
 *      Every reader checks, before it reads a dataset, that its byte
 *      range is the one the manifest names for it and that its xxh64
 *      equals the checksum of those bytes as hashed by the manifest check
 *      (so every byte read was hashed against the checksum stored with the
 *      dataset), and fails naming the dataset otherwise.
 *   Every rank passes the same list of tensors in the same order (HDF5
 *   metadata calls are collective); a rank writes or reads only its own
 *   hyperslab (count may be all zero: it holds none of that tensor and
 *   still takes part in the creation and in reads), and replicated
 *   tensors are written by exactly one rank.  Every dataset is created
 *   collectively first; then each rank writes its hyperslabs with
 *   independent I/O, all ranks at once; raw data is read collectively.
 *   (Version 2 stored chunks of <= 1 MiB with HDF5's Fletcher32 filter.
 *   HDF5 1.10's parallel path for them wrote every chunk twice (filled at
 *   creation, then re-read, merged and re-checksummed), and even when
 *   tuned cost twice the CPU and time of version 3 per save and per
 *   read: Fletcher32 runs at about 2 GB/s, XXH64 at about 8.)
 *
 * Manifest, version 2: the sidecar FILE.manifest (step_N.h5.manifest),
 * UTF-8 text, '\n'-terminated lines, in this order:
 *        mpitron-manifest 2
 *        file step_00000012.h5      base name the manifest was written for
 *        size S                     file size in bytes
 *        block B                    CKPT_MANIFEST_BLOCK (4 MiB)
 *        piece OFF LEN H            the pieces, in file order, tile [0, S)
 *                                   (LEN in 1..B): each dataset's data cut
 *                                   as for its xxh64, and every range
 *                                   between (HDF5 metadata) cut likewise
 *                                   from its start; H = XXH64 (seed 0, 16
 *                                   lower-case hex digits) of the piece
 *        dataset NAME OFF LEN H     one per dataset holding data: its byte
 *                                   range [OFF, OFF+LEN), which starts and
 *                                   ends on piece boundaries, and H = its
 *                                   checksum computed from those pieces'
 *                                   hashes (= its xxh64 attribute)
 *        self H                     XXH64 of every byte before this line
 *   The hashes are computed by all ranks in parallel (each hashes a run of
 *   pieces of about S / size bytes): the data pieces once the data is
 *   written and flushed (their checksums then become the xxh64
 *   attributes), the rest after the file is closed.  Every reader checks
 *   the manifest (size, every piece, every dataset line against its
 *   pieces, self hash) BEFORE any HDF5 call touches the file, so that a
 *   damaged or foreign file never reaches the HDF5 parser; a file without
 *   a manifest is not a checkpoint.  Within one process, a file that
 *   passed the check is not hashed again by the next reader while its
 *   device, inode, size, mtime and ctime and its manifest's self hash are
 *   unchanged (and only if its last change came 50 ms, a few timestamp
 *   ticks, before the check); ckpt_check_manifest and ckpt_verify always
 *   hash.
 *
 * Commit.  Files live in RUN_DIR/ckpt/.  A save of step N first checks
 * that the file system has room for the tensor data and reserves a
 * generous bound of the file size (fallocate with FALLOC_FL_KEEP_SIZE,
 * where supported: a write failing half-way is not reported consistently
 * by Open MPI's MPI-IO, and HDF5 1.10 cannot close such a file).  It is
 * written collectively as step_N.h5.partial (N as %08lld): datasets, a
 * flush, the data pieces hashed, the xxh64 attributes, `complete`, a
 * flush, close; rank 0 gives back the unused reservation; every rank
 * fsyncs it and hashes its share of the remaining pieces; rank 0 writes
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
 * Timing: MPITRON_CKPT_TIMING=1 makes rank 0 print the seconds of each
 * phase of every save and read to stderr ("mpitron: ckpt timing: ...").
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
#define CKPT_VERSION 3
#define CKPT_VERSIONS_READ "3"
#define CKPT_MAX_DIMS 4
#define CKPT_MANIFEST_VERSION 2
#define CKPT_MANIFEST_BLOCK ((uint64_t)4 << 20)

struct ckpt_tensor {
    const char *name;               /* dataset path, e.g. "/model/wte" */
    int ndim;
    int64_t gshape[CKPT_MAX_DIMS];  /* global shape */
    int64_t start[CKPT_MAX_DIMS];   /* this rank's hyperslab */
    int64_t count[CKPT_MAX_DIMS];   /* all zero: this rank holds none */
    float *data;                    /* prod(count) floats, row-major, or
                                       flat_len with a flat range */
    /* A flat range (flat_len > 0): this rank holds only the elements
     * [flat_off, flat_off + flat_len) of its hyperslab in row-major order
     * (a ZeRO shard of a tensor), and data has flat_len floats.  In the
     * file that is a union of at most 2 ndim - 1 boxes, selected as one.
     * flat_len = 0: the whole hyperslab. */
    int64_t flat_off, flat_len;
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
 * commit it as described above.  Collective over comm.  A tensor holding
 * a NaN or an infinity is never written: the save fails before anything
 * is written, err naming the dataset and element ("refusing to save a
 * non-finite value: /model/wte[3,17] is nan").  On success the
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
 * manifest first (once per process, see the manifest above).  A dataset
 * that is missing or whose global shape or type differs from t[i] is an
 * error naming the dataset and both shapes, and a dataset whose xxh64 or
 * byte range disagrees with the manifest a checksum error naming it;
 * both are detected before any data is read. */
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
 * manifest exists and hashes to its self line, the size and every piece
 * hash match, and every dataset line agrees with its pieces.  Always
 * hashes the whole file.  Collective over comm (pieces hashed in
 * parallel; pass MPI_COMM_SELF for one process).  Returns 0, or -1 on
 * every rank with err: "no manifest ... not a valid checkpoint", "size X
 * but the manifest says Y", "bytes [A, B) are damaged: DATASET, ..."
 * (datasets from the manifest's dataset lines; "HDF5 metadata" for bytes
 * outside them), or "dataset D: its pieces give the checksum ..." (the
 * manifest was edited).  When
 * report is not NULL, rank 0 also prints one line per damaged range
 * there (err may be truncated, report is not). */
int ckpt_check_manifest(MPI_Comm comm, const char *path, FILE *report,
                        char *err, size_t errlen);

/* `mpitron ckpt verify PATH`: manifest check, then (only if it passes)
 * the root attributes, then every dataset: its xxh64 and byte range
 * against the manifest (as every reader checks them), and read in full
 * through HDF5.  Collective; rank 0 prints to out (may be NULL) one line
 * per dataset ("OK   /model/wte (256,128)" or "BAD  /model/wte: reason")
 * and a summary.  Returns 0 when all is good, else -1 on every rank with
 * err summarising what is bad. */
int ckpt_verify(MPI_Comm comm, const char *path, FILE *out, char *err,
                size_t errlen);

/* `mpitron ckpt list RUN_DIR`: one line per step_*.h5 and *.partial in
 * the ckpt directory (a run directory means its ckpt/), oldest first:
 * step, bytes, status (ok | damaged: reason | unreadable: reason (a
 * format version this build does not read) | incomplete (partial) | no
 * manifest) and "<- latest" on the one `latest` names.  Serial (no MPI),
 * status from the manifest check only.  Returns the number of entries
 * that are not ok (0 when all are), or -1 with err (directory
 * unreadable). */
int ckpt_list(const char *dir, FILE *out, char *err, size_t errlen);

/* The number of committed step_*.h5 under arg (a run directory or its
 * ckpt/ directory; 0 when it does not exist or cannot be read), the path
 * of the newest in newest (may be NULL).  Serial, no checks. */
int ckpt_count(const char *arg, char *newest, size_t len);

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
/* The same among the step_*.h5 whose step is below before (INT64_MAX: all;
 * a caller that could not load the one it was given asks again with
 * before = its step), the chosen file's step in *step (may be NULL; -1
 * when arg is a file).  Returns 1 only when there is no step_*.h5 at all;
 * none older than before is an error (-1). */
int ckpt_find_good_before(MPI_Comm comm, const char *arg, int64_t before,
                          char *path, size_t pathlen, int64_t *step,
                          FILE *warn, char *err, size_t errlen);

/* Retention, after a committed save, on one rank (not collective): in
 * dir, delete every step_N.h5 (then its manifest) that is neither among
 * the keep_last newest (keep_last <= 0: keep all), nor a milestone
 * (keep_every > 0 and N % keep_every == 0), nor keep_path (the file just
 * written, may be NULL), nor the file `latest` names; also delete
 * *.partial, *.manifest.tmp and orphan manifests of steps older than the
 * newest committed one (left by crashes).  Only files whose manifest
 * parses and gives their size count as checkpoints here: any other
 * step_N.h5 (damaged, foreign) is left alone and pushes no good one out
 * of keep_last.  Prints "removed FILE" per file
 * to log (may be NULL).  Returns the number of files removed, or -1 with
 * err naming the first file that could not be removed (it goes on with
 * the others). */
int ckpt_retain(const char *dir, int64_t keep_last, int64_t keep_every,
                const char *keep_path, FILE *log, char *err, size_t errlen);

/* `mpitron ckpt info`: checks the manifest, then prints step, layout,
 * config and every dataset with its shape, layout and checksum to out.
 * Serial (opens the file on one process).  Returns 0 or -1 with err. */
int ckpt_print_info(const char *path, FILE *out, char *err, size_t errlen);

/* ---- durable files (ckpt_file.c) ---------------------------------------
 * The one `mkdir -p` and the one durable replace of the program: ckpt/
 * owns durable files and includes nothing but itself, so src/ (token
 * shards, metrics.jsonl, hang reports) uses these too. */

/* mkdir -p (mode 0777 less the umask).  Returns 0, or -1 with err naming
 * dir and the component that could not be created or is not a directory;
 * a path of CKPT_PATHMAX (4096) bytes or more is an error, never cut. */
int ckpt_mkdir_p(const char *dir, char *err, size_t errlen);

/* A piece of a file's new contents. */
struct ckpt_buf {
    const void *p;
    size_t len;
};

/* Replace path durably with the n pieces b[0..n) in order: write
 * PATH.tmp, fsync, close, rename over path, fsync path's directory.  A
 * crash at any moment leaves the old contents or the new ones.  Returns
 * 0, or -1 with err naming the file and the failing call (PATH.tmp is
 * removed, path untouched, unless only the directory fsync failed). */
int ckpt_replace(const char *path, const struct ckpt_buf *b, int n,
                 char *err, size_t errlen);

/* XXH64 with seed 0 of len bytes: the manifest's hash (and that of the
 * xxh64 dataset checksum), exported for tests and tools. */
uint64_t ckpt_hash64(const void *p, size_t len);

#endif
