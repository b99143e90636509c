/*
 * place.c - this rank's binding and thread pools at start-up (see
 * place.h).
 */
#include "place.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "peak.h"

#define PLACE_LINE 1024

/* A positive count exported in name, else 0. */
static int env_threads(const char *name)
{
    const char *v = getenv(name);
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    return v && end != v && n > 0 && n < 100000 ? (int)n : 0;
}

/* Why the plan's place for this rank is what it is. */
static void explain(struct placement *p, hwloc_const_bitmap_t before,
                    int bound_ok, const char *bind_err)
{
    const struct topo_place *pl = &p->plan.r[p->me];
    int n = p->plan.n, C = p->t.ncores;
    if (p->mode == TOPO_BIND_NONE) {
        snprintf(p->how, sizeof(p->how), "bind=none: not touched");
        return;
    }
    if (pl->kept) {
        snprintf(p->how, sizeof(p->how), "%s",
                 !pl->bound_before ? "the launcher left it unbound"
                 : p->mode == TOPO_BIND_AUTO ? "kept the launcher's binding"
                                             : "the launcher's binding");
        return;
    }
    if (!bound_ok) {
        snprintf(p->how, sizeof(p->how), "could not bind (%s): runs where "
                 "the launcher put it", bind_err);
        return;
    }
    struct topo_place b;
    int lo = n <= C ? C / n : 1, hi = n <= C ? (C + n - 1) / n : 1;
    if (!pl->bound_before || topo_place_of(&p->t, before, &b) < 0) {
        snprintf(p->how, sizeof(p->how), "bound by mpitron (the launcher "
                 "left it unbound)");
        return;
    }
    snprintf(p->how, sizeof(p->how), "bound by mpitron (the launcher's %d "
             "core(s), PUs %s, %s)", b.ncores, p->launcher,
             b.ncores > hi   ? "are more than its share"
             : b.ncores < lo ? "are fewer than its share"
                             : "overlap another rank's");
    topo_place_free(&b);
}

/* Size the pools: threads > 0, else the environment, else the cores. */
static void size_threads(struct placement *p, int threads, int cores)
{
    int eb = env_threads("OPENBLAS_NUM_THREADS");
    int eo = env_threads("OMP_NUM_THREADS");
    p->blas = threads > 0 ? threads : eb ? eb : cores;
    p->omp = threads > 0 ? threads : eo ? eo : cores;
    p->blas_src = threads > 0 ? "threads" : eb ? "OPENBLAS_NUM_THREADS"
                                               : "cores";
    p->omp_src = threads > 0 ? "threads" : eo ? "OMP_NUM_THREADS" : "cores";
    threads_set_each(p->blas, p->omp);
}

/* Plan, bind, describe.  Returns 0, or -1 with err (out of memory). */
static int place_node(struct placement *p, int threads, char *err,
                      size_t errlen)
{
    hwloc_bitmap_t before = topo_current_binding(&p->t);
    if (!before) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct topo_place now;
    char berr[256] = "";
    int rc = topo_place_node(&p->t, p->node, p->mode, threads, 1,
                             &p->plan, &p->me, berr, sizeof(berr));
    p->has_plan = p->plan.r != NULL;
    if (!p->has_plan) {
        snprintf(err, errlen, "%s", berr);
        hwloc_bitmap_free(before);
        return -1;
    }
    int mine_ok = rc == 0 || hwloc_bitmap_isequal(before,
                                                  p->plan.r[p->me].cpuset);
    hwloc_bitmap_t after = topo_current_binding(&p->t);
    if (!after || topo_place_of(&p->t, after, &now) < 0) {
        hwloc_bitmap_free(before);
        hwloc_bitmap_free(after);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (hwloc_bitmap_isincluded(hwloc_get_root_obj(p->t.h)->cpuset, before))
        snprintf(p->launcher, sizeof(p->launcher), "unbound");
    else
        topo_set_string(before, p->launcher, sizeof(p->launcher));
    topo_place_string(&p->t, &now, p->where, sizeof(p->where));
    explain(p, before, mine_ok, berr);
    size_threads(p, threads, now.ncores > 0 ? now.ncores : 1);
    topo_place_free(&now);
    hwloc_bitmap_free(before);
    hwloc_bitmap_free(after);
    return 0;
}

int place_init(struct placement *p, MPI_Comm world, const char *bind,
               int threads, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->node = MPI_COMM_NULL;
    if (topo_bind_parse(bind, &p->mode) < 0) {
        snprintf(err, errlen, "bind=%s: must be auto, launcher or none",
                 bind);
        return -1;
    }
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL,
                        &p->node);
    char terr[256];
    int ok = topo_load(&p->t, NULL, terr, sizeof(terr)) == 0, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, p->node);
    p->has_topo = ok;
    if (!all) { /* no plan without every rank's topology */
        if (ok)
            snprintf(terr, sizeof(terr), "another rank of this node could "
                     "not read its topology");
        int rank;
        MPI_Comm_rank(world, &rank);
        log_warn(MPI_COMM_SELF, "rank %d: %s: binding and thread sizing "
                 "are off", rank, terr);
        snprintf(p->where, sizeof(p->where), "unknown (no topology)");
        snprintf(p->how, sizeof(p->how), "%s", terr);
        size_threads(p, threads, 1);
        return 0;
    }
    return place_node(p, threads, err, errlen);
}

void place_free(struct placement *p)
{
    if (p->has_plan)
        topo_plan_free(&p->plan);
    if (p->has_topo)
        topo_free(&p->t);
    if (p->node != MPI_COMM_NULL)
        MPI_Comm_free(&p->node);
    memset(p, 0, sizeof(*p));
    p->node = MPI_COMM_NULL;
}

/* This rank's banner line. */
static void line_of(const struct placement *p, int rank, char *buf)
{
    char host[MPI_MAX_PROCESSOR_NAME + 1];
    int len = 0;
    MPI_Get_processor_name(host, &len);
    host[len < 0 ? 0 : len] = '\0';
    snprintf(buf, PLACE_LINE, "rank %d  host %s: %s; threads %d BLAS (%s) "
             "+ %d OpenMP (%s); %s", rank, host, p->where, p->blas,
             p->blas_src, p->omp, p->omp_src, p->how);
}

void place_print_banner(const struct placement *p, MPI_Comm world,
                        FILE *out)
{
    int rank, size;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    char mine[PLACE_LINE];
    line_of(p, rank, mine);
    char *all = rank == 0 ? malloc((size_t)size * PLACE_LINE) : NULL;
    MPI_Gather(mine, PLACE_LINE, MPI_CHAR, all, PLACE_LINE, MPI_CHAR, 0,
               world);
    if (rank != 0)
        return;
    for (int i = 0; all && i < size; i++) {
        all[(size_t)i * PLACE_LINE + PLACE_LINE - 1] = '\0';
        fprintf(out, "%s\n", all + (size_t)i * PLACE_LINE);
    }
    if (!all)
        fprintf(out, "%s\n", mine);
    fflush(out);
    free(all);
}

void place_warn(const struct placement *p, MPI_Comm world)
{
    (void)world;
    if (!p->has_plan)
        return;
    const struct topo_plan *pl = &p->plan;
    char host[MPI_MAX_PROCESSOR_NAME + 1], s[256];
    int len = 0, mine = p->blas > p->omp ? p->blas : p->omp, total = 0;
    MPI_Get_processor_name(host, &len);
    host[len < 0 ? 0 : len] = '\0';
    MPI_Allreduce(&mine, &total, 1, MPI_INT, MPI_SUM, p->node);
    if (pl->n > p->t.ncores)
        log_warn(p->node, "node %s is oversubscribed: %d ranks on %d cores "
                 "(%d threads in all), so ranks take turns on a core",
                 host, pl->n, p->t.ncores, total);
    else if (total > p->t.ncores)
        log_warn(p->node, "node %s is oversubscribed: its %d rank(s) run "
                 "%d threads (the larger of each rank's BLAS and OpenMP "
                 "pools) on %d cores; expect every rank to run slower "
                 "(bind=auto and threads=0 give one thread per core held)",
                 host, pl->n, total, p->t.ncores);
    if (p->mode != TOPO_BIND_NONE && !hwloc_bitmap_iszero(pl->shared)) {
        topo_set_string(pl->shared, s, sizeof(s));
        log_warn(p->node, "node %s: ranks share core(s) %s (see the "
                 "placement lines)", host, s);
    }
    if (p->mode != TOPO_BIND_NONE && !hwloc_bitmap_iszero(pl->idle)) {
        topo_set_string(pl->idle, s, sizeof(s));
        log_warn(p->node, "node %s: no rank runs on core(s) %s", host, s);
    }
    if (pl->mixed_allowed)
        log_warn(p->node, "node %s: its ranks may use different CPUs (per-"
                 "task confinement), so bind=auto kept the launcher's "
                 "bindings", host);
}
