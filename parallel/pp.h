/*
 * pp.h - pipeline parallelism without the model: stage partitions,
 * micro-batch schedules as plain lists of actions, and the non-blocking
 * point-to-point moves of activations and their gradients between stages.
 *
 * A schedule for stage s of p with m micro-batches is a list of actions
 * that src/pipeline.c executes in order:
 *   PP_RECV_ACT i   post the receive of micro-batch i's input activation
 *                   from stage s-1 (never on stage 0)
 *   PP_FWD i        wait for that receive, run forward of micro-batch i
 *   PP_SEND_ACT i   start sending i's output activation to stage s+1
 *                   (never on the last stage)
 *   PP_RECV_GRAD i  post the receive of d(output of i) from stage s+1
 *                   (never on the last stage)
 *   PP_BWD i        wait for that receive, run backward of micro-batch i
 *   PP_SEND_GRAD i  start sending d(input of i) to stage s-1 (never on
 *                   stage 0)
 * Every micro-batch's activations live in slot i % nslots from its
 * PP_RECV_ACT (or PP_FWD on stage 0) until its PP_BWD ends; a schedule
 * never starts using a slot still held by another micro-batch.  Receives
 * are posted as early as their slot allows so that transfers overlap
 * compute; sends complete in the background and are waited for only
 * before their buffer is reused.
 *
 * GPipe: all forwards, then all backwards in reverse order (m slots).
 * 1F1B (PipeDream-flush): stage s runs min(p - s - 1, m) warm-up forwards,
 * then alternates one backward and one forward, then drains; it holds at
 * most p - s micro-batches (<= p), so activation memory no longer grows
 * with m.  Both have the bubble (p-1)/(m+p-1) of the step's time.
 *
 * parallel/ depends on comm/ and MPI only (never on src/).
 */
#ifndef MPITRON_PP_H
#define MPITRON_PP_H

#include <mpi.h>
#include <stddef.h>

enum pp_op {
    PP_RECV_ACT, PP_FWD, PP_SEND_ACT, PP_RECV_GRAD, PP_BWD, PP_SEND_GRAD
};

enum pp_kind { PP_GPIPE, PP_1F1B };

struct pp_action {
    enum pp_op op;
    int mb;        /* micro-batch index in [0, m) */
};

struct pp_schedule {
    enum pp_kind kind;
    int p, s, m;              /* stages, this stage, micro-batches */
    int nslots;               /* activation slots this list needs */
    int n;                    /* actions */
    struct pp_action *a;      /* owned */
};

/* "gpipe" / "1f1b" -> kind.  Returns 0, or -1 for any other string. */
int pp_kind_parse(const char *s, enum pp_kind *k);
/* The config name of k (a static string). */
const char *pp_kind_name(enum pp_kind k);

/* Build the action list of stage s (0 <= s < p) for m >= 1 micro-batches.
 * forward_only: forwards and their moves only (validation); nslots is 1
 * then.  m <= 16384 when p > 1 (message tags).  Returns 0, or -1 (bad
 * arguments, out of memory) with err filled.  Free with pp_schedule_free
 * (safe on a zeroed or failed schedule). */
int pp_schedule_build(struct pp_schedule *sc, enum pp_kind kind, int p,
                      int s, int m, int forward_only, char *err,
                      size_t errlen);
void pp_schedule_free(struct pp_schedule *sc);

/* The most micro-batches whose activations the list holds at once
 * (between a micro-batch's first action and the end of its PP_BWD);
 * -1 when out of memory. */
int pp_schedule_max_inflight(const struct pp_schedule *sc);

/* The bubble of a p-stage pipeline with m micro-batches in theory:
 * (p - 1) / (m + p - 1). */
double pp_bubble_theory(int p, int m);

/*
 * Split n_layer blocks into p contiguous stages, each at least one block,
 * minimising the largest stage cost, where a stage costs the sum of
 * block_cost over its blocks, plus first_cost on stage 0 and last_cost on
 * stage p-1 (the embedding and head).  Ties go to the earliest boundary.
 * bound[0..p]: stage s holds blocks [bound[s], bound[s+1]).  Returns 0,
 * or -1 with err (p > n_layer, p < 1).
 */
int pp_partition(int n_layer, int p, const double *block_cost,
                 double first_cost, double last_cost, int *bound, char *err,
                 size_t errlen);

/*
 * The point-to-point link of one stage with its neighbours on the pp
 * communicator (ranks = stage indices).  Messages are tagged by
 * micro-batch and direction, so any number may be in flight.  Every call
 * aborts the job (naming the rank) on MPI error: a failed transfer cannot
 * be recovered in the middle of a step.
 */
struct pp_link {
    MPI_Comm comm;      /* not owned */
    int p, s;
    int nslots;
    MPI_Request *recv;  /* per slot: the receive into that slot (act or */
    MPI_Request *send;  /* grad); per slot: the send from that slot     */
    char *rgrad, *sgrad; /* per slot: that receive / send carries a
                            gradient (1) or an activation (0) */
    int prev_world, next_world; /* the neighbours' world ranks, or -1 */
    double t_wait;      /* seconds spent blocked in pp_link_wait_* */
};

/* Set up the link of this rank's stage (its rank in pp_comm) with nslots
 * request slots.  Returns 0, or -1 (MPI error, no memory, an MPI_TAG_UB
 * too small for the tags, printed naming the stage) with l zeroed. */
int pp_link_init(struct pp_link *l, MPI_Comm pp_comm, int nslots);
/* Wait for outstanding sends, cancel outstanding receives, free the
 * request arrays: call it before freeing the buffers they point into. */
void pp_link_free(struct pp_link *l);
/* Post the receive of n floats into buf for micro-batch mb (slot
 * mb % nslots) from the previous (grad = 0) or next (grad = 1) stage.
 * buf belongs to MPI until pp_link_wait_recv(mb) returns. */
void pp_link_post_recv(struct pp_link *l, float *buf, size_t n, int mb,
                       int grad);
/* Wait for the receive posted for mb; adds the blocked time to t_wait. */
void pp_link_wait_recv(struct pp_link *l, int mb);
/* Start sending n floats from buf for mb to the next (grad = 0) or the
 * previous (grad = 1) stage.  Waits first for the slot's previous send.
 * buf must not change until the send is waited for (pp_link_wait_send of
 * a micro-batch of the same slot, or pp_link_wait_all). */
void pp_link_send(struct pp_link *l, const float *buf, size_t n, int mb,
                  int grad);
/* Wait for mb's slot's send (buffer reuse) / for every send. */
void pp_link_wait_send(struct pp_link *l, int mb);
void pp_link_wait_all(struct pp_link *l);
/* Let MPI progress outstanding transfers (MPI_Testall); cheap. */
void pp_link_progress(struct pp_link *l);

#endif
