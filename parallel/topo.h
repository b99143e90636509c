/*
 * topo.h - the node's hardware (hwloc) and where each rank of a node runs
 * on it: binding plans, thread counts, NUMA nodes.
 *
 * Numbering.  Cores are numbered by hwloc's logical index (0 .. ncores-1
 * in topology order: package, NUMA node, L3 group, core), PUs by their OS
 * index (what taskset, /proc and the launchers print).  A rank's place is
 * a set of PUs; the cores it holds are the cores with at least one of
 * their PUs in it.  Only what the process may use counts (under SLURM,
 * its cgroup): hwloc drops disallowed PUs from the topology.
 *
 * The plan for n ranks of a node (topo_plan_make, a pure function of the
 * topology, the ranks' current bindings, the mode and the thread setting):
 *
 *   bind=auto      A rank keeps its launcher binding when it is bound (not
 *                  to every PU of the node), holds its fair share of cores
 *                  (floor(C/n) or ceil(C/n) of the C cores; exactly one
 *                  when n > C) and shares no core with a rank kept before
 *                  it (rank order).  Every other rank -- unbound, bound to
 *                  more or fewer cores than its share, or overlapping --
 *                  gets a new set of whole cores from those no kept rank
 *                  holds: the free cores are divided as evenly as they go
 *                  (floor or ceil), ranks bound to fewer cores first (the
 *                  most constrained), each taking the first free cores in
 *                  topology order inside its launcher binding, then the
 *                  ones after them.  Consecutive chunks of the topology
 *                  order are whole L3 groups, NUMA nodes and packages
 *                  whenever the share is, so ranks spread over packages,
 *                  NUMA nodes and L3 groups and each stays compact.  With
 *                  more ranks than cores, each rank gets the least loaded
 *                  core (ties: topology order).
 *   bind=launcher  Keep every binding as it is.
 *   bind=none      Keep every binding and do not report on it.
 *
 * Threads (BLAS and OpenMP, each): threads_cfg > 0 is taken as is; 0 sizes
 * both pools to the cores the rank holds (PUs of one core count once).
 * The node is oversubscribed when the ranks' threads add up to more than
 * its cores.
 *
 * parallel/ depends on comm/, MPI and hwloc only (never on src/).
 */
#ifndef MPITRON_TOPO_H
#define MPITRON_TOPO_H

#include <hwloc.h>
#include <mpi.h>
#include <stddef.h>
#include <stdio.h>

enum topo_bind { TOPO_BIND_AUTO, TOPO_BIND_LAUNCHER, TOPO_BIND_NONE };

/* "auto" / "launcher" / "none" -> b.  Returns 0, or -1 for anything
 * else. */
int topo_bind_parse(const char *s, enum topo_bind *b);
const char *topo_bind_name(enum topo_bind b);

struct topo {
    hwloc_topology_t h;
    int thissystem;      /* 1: this machine (binding possible) */
    int npackages, nnuma, nl3, ncores, npus;
};

/* Load this machine's topology (src NULL or ""), an hwloc XML file
 * (a path), or an hwloc synthetic description ("synthetic:pack:2 core:4
 * pu:1").  Returns 0, or -1 with err naming the source.  Free with
 * topo_free (safe on a zeroed or failed topo). */
int topo_load(struct topo *t, const char *src, char *err, size_t errlen);
void topo_free(struct topo *t);

/* Write the topology as hwloc XML (for `lstopo file.xml` or topo_load).
 * Returns 0 or -1 with err. */
int topo_export_xml(const struct topo *t, const char *path, char *err,
                    size_t errlen);

/* The packages, NUMA nodes (with memory), L3 groups (with size), cores
 * and PUs as an indented tree, one line per package / NUMA node / L3
 * group, the cores and PUs under it as ranges. */
void topo_print_tree(const struct topo *t, FILE *out);

/* One rank's place. */
struct topo_place {
    hwloc_bitmap_t cpuset;  /* PUs, OS indexes (owned) */
    hwloc_bitmap_t cores;   /* cores held, logical indexes (owned) */
    hwloc_bitmap_t numa;    /* NUMA nodes of those PUs, OS indexes (owned) */
    int ncores;
    int threads;            /* BLAS threads = OpenMP threads */
    int kept;               /* 1: the current binding stays */
    int bound_before;       /* 1: the launcher had bound it (not to all) */
};

struct topo_plan {
    enum topo_bind mode;
    int n;                  /* ranks on the node */
    struct topo_place *r;   /* n places (owned) */
    hwloc_bitmap_t shared;  /* cores held by more than one rank */
    hwloc_bitmap_t idle;    /* cores held by no rank */
    int threads_total;      /* sum of the ranks' threads */
    int oversubscribed;     /* threads_total > the node's cores */
    int mixed_allowed;      /* topo_place_node: the ranks may use different
                               PUs (per-task cgroups), so auto kept the
                               launcher's bindings */
};

/*
 * The plan for n ranks (see the top of this file).  cur[i] is rank i's
 * binding now (PU set; NULL or every PU = unbound); threads_cfg is the
 * `threads` key.  Pure: depends on its arguments only.  Returns 0, or -1
 * with err (n < 1, out of memory).  Free with topo_plan_free (safe on a
 * zeroed or failed plan).
 */
int topo_plan_make(const struct topo *t, int n, const hwloc_const_bitmap_t *cur,
                   enum topo_bind mode, int threads_cfg, struct topo_plan *p,
                   char *err, size_t errlen);
void topo_plan_free(struct topo_plan *p);

/* The place of PU set s: cpuset (a copy), cores, NUMA nodes, ncores;
 * threads = ncores (at least 1), kept = 1.  Returns 0 or -1 (out of
 * memory).  Free with topo_place_free. */
int topo_place_of(const struct topo *t, hwloc_const_bitmap_t s,
                  struct topo_place *pl);
void topo_place_free(struct topo_place *pl);

/* "cores 0-3 (PUs 0-3,32-35), NUMA 0, L3 0" for place pl of t into buf. */
void topo_place_string(const struct topo *t, const struct topo_place *pl,
                       char *buf, size_t len);
/* A bitmap as a list of ranges ("0-3,8"; "none" when empty) into buf. */
void topo_set_string(hwloc_const_bitmap_t s, char *buf, size_t len);

/* This process's binding now (every PU of t when unbound or when the
 * query fails).  Caller frees with hwloc_bitmap_free; NULL when out of
 * memory. */
hwloc_bitmap_t topo_current_binding(const struct topo *t);

/* Bind this process (every thread it has) to cpuset.  Returns 0, or -1
 * with err (the OS refused; t is not this machine). */
int topo_bind_self(const struct topo *t, hwloc_const_bitmap_t cpuset,
                   char *err, size_t errlen);

/*
 * Node-wide placement, collective over node_comm (the ranks of one
 * machine, MPI_COMM_TYPE_SHARED): gather every rank's current binding,
 * make the same plan on every rank, and (mode auto, apply = 1) bind this
 * rank where the plan says.  *me is this rank's index in the plan (its node_comm
 * rank).  Returns 0, or -1 with err when a rank's binding failed or out
 * of memory (the same verdict on every rank of the node; the caller
 * agrees over the world).  plan is filled on every rank of the node.
 */
int topo_place_node(const struct topo *t, MPI_Comm node_comm,
                    enum topo_bind mode, int threads_cfg, int apply,
                    struct topo_plan *plan, int *me, char *err,
                    size_t errlen);

#endif
