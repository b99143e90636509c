/*
 * train.h - the training driver: one trainer per rank owns the grid, the
 * model, its activations, the data and the optimizer state, and runs
 * steps.  `mpitron train` loops trainer_step; `mpitron bench step` runs the
 * same steps on synthetic tokens.
 */
#ifndef MPITRON_TRAIN_H
#define MPITRON_TRAIN_H

#include <stdint.h>

#include "bucket.h"
#include "calib.h"
#include "ckpt_io.h"
#include "comm.h"
#include "config/config.h"
#include "data/data.h"
#include "grid.h"
#include "data/loader.h"
#include "metrics.h"
#include "model/model.h"
#include "nonfinite.h"
#include "optim.h"
#include "pipeline.h"
#include "place.h"
#include "shm.h"
#include "tp.h"
#include "zero_exec.h"

struct step_times {      /* seconds, this rank, one step; total =
                            compute + comm + pp_wait (+ data outside) */
    double compute, comm, data, optim, total;
    double comm_overlapped;  /* reduction time hidden behind backward */
    uint64_t wire_bytes;     /* gradient bytes this rank sent */
    double bubble;           /* idle share of the pipeline schedule, all
                                stages (0 without pipeline parallelism) */
    double pp_wait;          /* this rank's time in the schedule not
                                computing: waiting for its neighbours */
    int skipped;             /* NF_* verdict (nonfinite.h), the same on
                                every rank; 0: the update was applied */
    double loss_z;           /* the loss's z-score against the window
                                (NaN until it holds NF_MIN_SAMPLES) */
};

struct trainer {
    struct config c;
    struct grid g;
    struct placement place; /* binding and thread pools of this rank */
    struct gpt m;
    struct pipeline pl;  /* this stage's micro-batch schedule and slots */
    struct lr_sched sched;
    struct train_state st;
    struct batch_plan plan; /* batch_ramp, seq_len_warmup */
    int per_rank;        /* this dp rank's sequences per step (its share) */
    int seq0;            /* its first sequence in the global batch */
    int mb, accum;       /* largest micro-batch, micro-batches per step */
    int *mb_sizes;       /* accum entries: sequences of each micro-batch */
    /* load balance (train_balance.c) */
    int balanced;        /* balance=on or rebalance_every > 0 */
    int *shares;         /* dp entries: sequences of each dp rank */
    struct calib_costs cal; /* this rank's speed at start-up */
    double *cal_all;     /* 3 per world rank: block, embed, head seconds */
    double slow;         /* debug_slow_rank's factor on this rank (1) */
    double stage_auto_s, stage_params_s; /* pp_partition=auto: calibrated
                            slowest stage of both partitions, seconds */
    double busy_acc;     /* forward + backward seconds since the last */
    int64_t seqs_acc;    /* re-split, and the sequences they covered */
    double peak_gflops;  /* GEMM peak of the precision used (gemm.h),
                            summed over all ranks: MFU's reference */
    double peak_fp32_gflops; /* the fp32 peak, likewise (= peak_gflops in
                                fp32) */
    double peak_own_gflops;  /* this rank's share of peak_gflops */
    char precision[8];   /* the precision in force: fp32 | bf16 (bf16
                            asked for on a CPU without bf16 runs fp32) */
    /* data parallelism: the dp group and its gradient buckets */
    struct comm_group dpg;   /* built when dp > 1 or zero >= 1 */
    struct comm_shm shm;     /* the gradient arena, when the dp ranks
                                share it (allreduce=shm, or auto when it
                                can: dpg.shm points here) */
    struct bucketer bk;      /* zero = 0, dp > 1 */
    int *ev_first, *ev_count; /* per backward event: production-order
                                 range of tensors made final */
    float **st_p;        /* per-rank compression state, by bucket */
    size_t *st_len;
    /* tensor parallelism: the tp group the model's collectives run on */
    struct tp_ctx tpc;
    /* pipeline parallelism: first and last stage of one (dp, tp) pair
     * share the tied embedding; per-stage figures of the last step */
    MPI_Comm tie_comm;   /* MPI_COMM_NULL unless pp > 1 and first/last */
    int *bound;          /* pp + 1 stage boundaries (blocks) */
    double *stage_busy, *stage_idle; /* pp entries, seconds */
    /* optimizer: kind, and LAMB's per-tensor sums of squares (2 per
     * tensor: ||p||^2, ||u||^2) */
    enum optim_kind { OPT_ADAMW, OPT_LAMB, OPT_ONEBIT } optim;
    double *lamb_ss;
    /* non-finite steps: the running loss window (nonfinite.h) and the
     * debug_nan fault (rank, 1-based step, weight or grad, fired) */
    struct loss_window win;
    struct phase_group wpg; /* all ranks, for the watchdog's reports */
    int nan_rank, nan_weight, nan_fired;
    int64_t nan_step;
    /* ZeRO (zero >= 1) and optimizer offload: shards, their reductions
     * and the update */
    struct zero_exec zx;
    int has_place, has_grid, has_model, has_acts, has_dp, has_tp, has_tie;
    int has_dpg, has_zx, has_shm;
};

/* This rank's state that checkpoints save per rank (compression
 * residuals; n = 0 without compression).  Points into tr. */
void trainer_rank_state(struct trainer *tr, struct rank_state *rs);

/* Build grid, model and activations from a finalized config (no data, no
 * checkpoint).  Collective over world; every rank returns the same status.
 * Returns 0 or -1 with err (layout or shape errors name the keys). */
int trainer_init(struct trainer *tr, const struct config *c, MPI_Comm world,
                 char *err, size_t errlen);
void trainer_free(struct trainer *tr);

/* Measure the GEMM peaks MFU is measured against (peak_gflops of the
 * precision in force, peak_fp32_gflops), every rank at once, summed over
 * ranks: quick (one size, at start-up) or careful (three sizes, for
 * benchmarks).  Collective over world. */
void trainer_measure_peak(struct trainer *tr, int careful);

/* One optimizer step on this rank's slice of the global batch of the
 * shape b->shape (the batch plan's, batch.h): inp, tgt (per_rank, T).
 * Returns the global mean loss (same on all ranks); *gnorm and *lr
 * receive the pre-clip gradient norm and the rate used.
 * A step whose loss or gradient norm is not finite (or a spike, see
 * nonfinite.h) is skipped: every rank agrees, nothing is updated (the
 * weights, AdamW/LAMB/1-bit Adam moments), tm->skipped says why (tm must
 * not be NULL); the step still counts. */
double trainer_step_batch(struct trainer *tr, const struct step_batch *b,
                          double *gnorm, double *lr, struct step_times *tm);
/* trainer_step_batch of the full batch (batch_size x seq_len): inp, tgt
 * (per_rank, seq_len). */
double trainer_step(struct trainer *tr, const int32_t *inp,
                    const int32_t *tgt, double *gnorm, double *lr,
                    struct step_times *tm);

/* Skip the step without computing it (a batch left out on replay after a
 * rollback): the step advances and tokens_seen by tokens, the step's
 * (batch plan) size, as if it had run. */
void trainer_skip_step(struct trainer *tr, int64_t tokens);

/* Mean validation loss over c.val_batches batches of val; inp, tgt (and
 * dstart, for doc_mask; else NULL) are scratch of per_rank * seq_len
 * tokens each.  With tok_bytes (vocab_size
 * entries: each token's length in bytes), *bpb receives the bits per
 * byte of the text predicted (the summed loss over ln 2 and over the
 * targets' bytes), else 0.  Collective. */
double trainer_validate(struct trainer *tr, const struct dataset *val,
                        const uint32_t *tok_bytes, int32_t *inp, int32_t *tgt,
                        int32_t *dstart, double *bpb);

/* The tied embedding's copies on the first and last pipeline stage
 * (parameters and both AdamW moments) must stay bitwise equal: compare
 * their hashes; where they differ, the last stage takes the first stage's
 * copy.  Returns 1 on every rank if any pair had drifted, else 0 (always
 * 0 without pipeline parallelism).  Collective over world. */
int trainer_tie_check(struct trainer *tr);

/* SIGUSR1, SIGTERM and SIGINT set a flag that the step loop reads (a
 * second SIGINT exits at once).  main() calls this before MPI_Init, so a
 * signal that a batch script forwards while the ranks start up is not
 * fatal; train_main installs it again. */
void train_signals_install(void);

/* ---- set-up shared by train_setup.c and train_balance.c ---- */

/* Build tr->pl, this stage's pipeline of kind for tr->accum micro-batches
 * of up to tr->mb sequences (sizes tr->mb_sizes): the schedules of the
 * batch ramp's smaller steps (none when balanced: config refuses balance
 * with a batch ramp), and debug_slow_rank's scratch.  tr->pl must be free
 * (never built, or pipeline_free'd with has_acts 0).  Sets has_acts once
 * the pipeline exists, so trainer_free frees it, also after a failure
 * here.  Returns 0 or -1 with err. */
int trainer_pipeline_build(struct trainer *tr, enum pp_kind kind, char *err,
                           size_t errlen);

/* ---- load balance (train_balance.c) ---- */

/* Calibrate this rank (debug_slow_rank's factor applied), gather every
 * rank's figures, choose the stage boundaries (pp_partition) and the
 * data-parallel shares (balance).  Before the stage's model exists.
 * Collective over world; returns 0 or -1 with err (the same verdict on
 * every rank). */
int trainer_balance_init(struct trainer *tr, const struct gpt_config *gc,
                         char *err, size_t errlen);
void trainer_balance_free(struct trainer *tr);
/* Take shares[dp] as the split: this rank's share, first sequence and
 * micro-batches.  Returns the micro-batch count. */
int trainer_apply_shares(struct trainer *tr, const int *shares);
/* rebalance_every: re-split the shares from the forward + backward time
 * per sequence measured since the last call (the slowest rank of each
 * replica counts).  Collective over world.  Returns 1 when the split
 * changed (the pipeline is rebuilt; the caller re-cuts its data), 0 when
 * not, -1 with err on failure. */
int trainer_rebalance(struct trainer *tr, char *err, size_t errlen);
/* Gather every rank's compute seconds (busy_s); returns the straggler's
 * world rank, or -1, with the slowest rank's ratio to the median in
 * *ratio and balance_imbalance of the seconds in *imbalance_s.
 * Collective over world. */
int trainer_straggler(struct trainer *tr, double busy_s, double *ratio,
                      double *imbalance_s);
/* The shares as "11,5". */
void trainer_shares_string(const struct trainer *tr, char *buf, size_t len);
/* Rank 0: every rank's calibration, the shares, the slow rank. */
void trainer_print_balance(const struct trainer *tr, FILE *out);

/* Parameters whole and no ZeRO operation in flight (the all-gathers
 * after an update run behind the next forward): call before reading the
 * parameters outside a step (checkpoint, validation, tie check).
 * Collective over the dp group; a no-op without ZeRO. */
void trainer_sync(struct trainer *tr);
/* After a checkpoint was read into the model (and its shards) or written
 * from it: ZeRO stage 3 forgets its gathered units, offloaded moments
 * that the checkpoint I/O paged in leave this process's memory. */
void trainer_after_ckpt(struct trainer *tr);

/* `mpitron train`: the whole run.  Returns the process exit status. */
int train_main(const struct config *c);

#endif
