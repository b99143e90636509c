/*
 * pipeline.h - runs parallel/pp.c's schedules on the model: the
 * micro-batches of one step through this rank's stage, activations and
 * their gradients exchanged with the neighbouring stages.
 *
 * Every layout runs through here; pp = 1 is a one-stage pipeline whose
 * 1F1B list is forward 0, backward 0, forward 1, ... with one activation
 * slot, which is plain gradient accumulation.
 *
 * Memory: one gpt_acts per slot (saved activations), the backward scratch
 * once (slot 0's, shared), and per slot an (N, n_embd) buffer for the
 * gradient received (all but the last stage) and one for the gradient
 * sent (all but the first).  Nothing is allocated in a step.
 */
#ifndef MPITRON_PIPELINE_H
#define MPITRON_PIPELINE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "pp.h"

struct pipeline {
    struct pp_schedule sc;    /* the training step's actions, m
                                 micro-batches */
    struct pp_schedule *alt;  /* [m]: schedules of fewer micro-batches
                                 (batch_ramp), built where used (.a set) */
    const struct pp_schedule *cur; /* what pipeline_train runs */
    struct pp_schedule ev;    /* forward only (validation) */
    struct pp_link link;
    int p, s, m;              /* stages, this stage, micro-batches */
    int B, T;                 /* micro-batch shape (B: the largest) */
    int *size;                /* m entries: sequences of micro-batch k */
    int *first;               /* m entries: its first sequence (offset) */
    size_t n;                 /* floats per message: B * T * n_embd */
    struct gpt_acts *slot;    /* sc.nslots; slot[0] owns the scratch */
    float *gin, *gout;        /* nslots * n: d(output) in, d(input) out */
    size_t act_bytes;         /* activations and buffers, this rank */
    double slow;              /* debug_slow_rank: kernels padded to slow
                                 times their time (1 = off) */
    struct gpt_acts pad;      /* scratch the padding forwards run on */
    int has_pad;
    int padding;              /* inside a padding forward: the model's
                                 events other than progress are not
                                 passed on */
    size_t saved_bytes;       /* of which saved activations (all slots) */
    size_t link_bytes;        /* of which gin/gout (communication) */
    /* the last step, this rank, seconds */
    double t_busy;            /* forward + backward compute */
    double t_total;           /* the whole schedule, first action to the
                                 last send completed */
};

/* Build the schedules and slots for stage s = pp_rank of p on pp_comm
 * (not owned), m micro-batches of B sequences of length T.  m->l0/l1
 * must already be this stage's.  Returns 0 or -1 with err (no memory,
 * bad schedule).  Not collective. */
int pipeline_init(struct pipeline *pl, const struct gpt *m, MPI_Comm pp_comm,
                  int p, int s, enum pp_kind kind, int nmb, int B, int T,
                  char *err, size_t errlen);
/* Also build the schedule of k < m micro-batches (the batch ramp's
 * smaller steps); its slots fit those of m.  0 or -1 with err. */
int pipeline_add_schedule(struct pipeline *pl, enum pp_kind kind, int k,
                          char *err, size_t errlen);
/* The next training steps run k micro-batches (a schedule built before)
 * of B sequences of length T, B * T being the tokens the slots were
 * built for (sequence-length warm-up trades T for B): the slots'
 * activations are re-cut when the shape changes, and every micro-batch
 * then holds B sequences (the sizes pipeline_set_sizes gave are kept
 * only while the shape stays that of pipeline_init: unequal shares and a
 * varying plan do not combine, config.c refuses it).  Allocates nothing. */
void pipeline_set_shape(struct pipeline *pl, const struct gpt *m, int k,
                        int B, int T);

/* Micro-batch k holds size[k] <= B sequences (default: B each), in
 * order: the step's inp/tgt rows and dropout positions follow.  Not
 * collective, but every stage of a pipeline must get the same sizes. */
void pipeline_set_sizes(struct pipeline *pl, const int *size);
/* debug_slow_rank: after every forward and backward that took t seconds,
 * run forwards of the same micro-batch on scratch activations (so the
 * real ones are untouched) for (slow - 1) t more (calib_slow_pad).
 * Returns 0, or -1 when out of memory for the scratch. */
int pipeline_set_slow(struct pipeline *pl, const struct gpt *m, double slow);
/* Release the link (outstanding transfers cancelled or completed), then
 * the slots and buffers; pl may be zeroed or half built. */
void pipeline_free(struct pipeline *pl);
/* The act_bytes pipeline_init would reach for these arguments (slots and
 * their scratch, the gradient links), computed without allocating them;
 * (size_t)-1 on a bad schedule or no memory for the count. */
size_t pipeline_bytes(const struct gpt *m, int p, int s, enum pp_kind kind,
                      int nmb, int B, int T);

/*
 * One training step's forward and backward: micro-batch k is
 * inp/tgt + first[k] * T, at pos with seq0 = pos->seq0 + first[k].  Gradients
 * accumulate into m->grads; m->hook_final is raised for this stage's last
 * backward.  Returns the sum of the token losses on the last stage, 0
 * elsewhere.  Collective over the pp communicator.
 */
double pipeline_train(struct pipeline *pl, struct gpt *m, const int32_t *inp,
                      const int32_t *tgt, float dloss,
                      const struct gpt_pos *pos);

/* Forward only over the same m micro-batches (validation: no dropout
 * when pos->train is 0); the loss sum as for pipeline_train.  Collective
 * over the pp communicator. */
double pipeline_eval(struct pipeline *pl, struct gpt *m, const int32_t *inp,
                     const int32_t *tgt, const struct gpt_pos *pos);

#endif
