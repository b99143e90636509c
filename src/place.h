/*
 * place.h - where this rank runs: parallel/topo.c's binding plan applied
 * at start-up (before any arena is allocated, so that pages are first
 * touched on the rank's own NUMA node), the BLAS and OpenMP pools sized,
 * and what the banner and warnings say about it.
 *
 * Threads per pool: `threads` > 0 for both; with threads = 0, an exported
 * OPENBLAS_NUM_THREADS (BLAS pool) or OMP_NUM_THREADS (OpenMP pool) is
 * respected, and a pool without one gets one thread per core the rank
 * holds after binding.  A node whose ranks run more threads (the larger
 * pool of each) than it has cores gets a warning naming the counts.
 */
#ifndef MPITRON_PLACE_H
#define MPITRON_PLACE_H

#include <mpi.h>
#include <stddef.h>
#include <stdio.h>

#include "topo.h"

struct placement {
    struct topo t;
    struct topo_plan plan;      /* this node's ranks */
    int has_topo, has_plan;
    MPI_Comm node;              /* this machine's ranks (owned) */
    int me;                     /* index in plan (node rank) */
    enum topo_bind mode;
    int blas, omp;              /* threads set */
    const char *blas_src, *omp_src; /* "cores", "threads", env name */
    char launcher[160];         /* the binding found: PUs, or "unbound" */
    char where[256];            /* the place now (topo_place_string) */
    char how[320];              /* kept / bound by mpitron, and why */
};

/*
 * Load this machine's topology, plan the node's ranks (bind = auto |
 * launcher | none), bind this rank when the plan says so, and size the
 * thread pools (threads = the `threads` key).  Collective over world.
 * Never fails for want of hwloc or a refused binding: those become
 * warnings and the rank runs where the launcher put it.  Returns 0, or
 * -1 with err only for a bad mode or out of memory.
 */
int place_init(struct placement *p, MPI_Comm world, const char *bind,
               int threads, char *err, size_t errlen);
void place_free(struct placement *p);

/* Warnings about the node (rank 0 of each node prints them): more
 * threads than cores, cores shared by ranks, idle cores, ranks that see
 * different CPUs.  Collective over world. */
void place_warn(const struct placement *p, MPI_Comm world);

/* One line per rank, in rank order, printed by world rank 0: host, cores
 * and PUs, NUMA node, L3 group, threads, how it got there.  Collective. */
void place_print_banner(const struct placement *p, MPI_Comm world,
                        FILE *out);

#endif
