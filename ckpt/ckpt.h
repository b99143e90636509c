/*
 * ckpt.h - HDF5 checkpoints, written and read collectively through the
 * MPI-IO driver.  This layer knows tensors only as (name, global shape,
 * local hyperslab, pointer); it never includes a header from src/.
 *
 * File format, version 1 (one file per saved step, readable by h5dump/h5py):
 *   1. root attributes:
 *        format      string  "mpitron-ckpt"
 *        version     int64   1
 *        step        int64   optimizer steps completed
 *        tokens_seen int64
 *        config      string  the full config as INI text
 *        layout      string  "dp=D tp=T pp=P world=W" of the writer
 *        data_cursor int64   next train step whose batch is to be read
 *        rng_seed    uint64  seed of the counter-based generators (they
 *                            have no other state)
 *        complete    int64   1, written last: a file without it is not a
 *                            checkpoint
 *   2. datasets, float32, in GLOBAL (unsharded) shape, any group depth:
 *        /model/<tensor>      parameters
 *        /optim/m/<tensor>    AdamW first moments
 *        /optim/v/<tensor>    AdamW second moments
 *        /state/<name>        other state (e.g. compression residuals)
 *   Every rank passes the same list of tensors in the same order (HDF5
 *   metadata calls are collective); a rank writes or reads only its own
 *   hyperslab (count may be all zero: it holds none of that tensor), and
 *   replicated tensors are written by exactly one rank.
 *
 * Files live in RUN_DIR/ckpt/ as step_NNNNNNNN.h5; a save is written as
 * step_NNNNNNNN.h5.partial, closed, fsynced, renamed, the directory
 * fsynced, and only then is RUN_DIR/ckpt/latest (one line: the file name)
 * replaced by rename.
 */
#ifndef MPITRON_CKPT_H
#define MPITRON_CKPT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CKPT_FORMAT "mpitron-ckpt"
#define CKPT_VERSION 1
#define CKPT_MAX_DIMS 4

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

/*
 * Write a checkpoint of step meta->step into dir (created if missing) and
 * commit it as described above.  Collective over comm.  On success the
 * file path is copied into path_out (may be NULL).  Returns 0, or -1 on
 * every rank with err naming the file and the failing HDF5/POSIX call;
 * the previous checkpoint and `latest` are then untouched.
 */
int ckpt_save(MPI_Comm comm, const char *dir, const struct ckpt_meta *meta,
              const struct ckpt_tensor *t, int n, char *path_out,
              size_t pathlen, char *err, size_t errlen);

/* Read the root attributes.  Collective.  Returns 0, or -1 with err (not
 * a file, not an mpitron checkpoint, unknown version: the message lists
 * the versions this build reads, incomplete file). */
int ckpt_read_meta(MPI_Comm comm, const char *path, struct ckpt_meta *meta,
                   char *err, size_t errlen);

/* Read every tensor's hyperslab into its data.  Collective.  A dataset that
 * is missing or whose global shape or type differs from t[i] is an error
 * naming the dataset and both shapes, detected before any data is read. */
int ckpt_read_tensors(MPI_Comm comm, const char *path,
                      const struct ckpt_tensor *t, int n, char *err,
                      size_t errlen);

/* Resolve a checkpoint argument: a file path is returned as is; a run
 * directory or its ckpt/ directory resolves to the file named in
 * ckpt/latest, else to the highest-numbered step_*.h5.  Returns 0, or -1
 * when nothing is found (err says where it looked).  Not collective. */
int ckpt_resolve(const char *arg, char *path, size_t pathlen, char *err,
                 size_t errlen);

/* `mpitron ckpt info`: print step, layout, config and every dataset with
 * its shape to out.  Serial (opens the file on one process).  Returns 0 or
 * -1 with err. */
int ckpt_print_info(const char *path, FILE *out, char *err, size_t errlen);

#endif
