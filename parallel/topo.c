/*
 * topo.c - hwloc topology, binding plans and node-wide placement (see
 * topo.h).
 */
#include "topo.h"

#include <stdlib.h>
#include <string.h>

/* ---- modes ------------------------------------------------------------ */

static const char *const bind_names[] = {"auto", "launcher", "none"};

int topo_bind_parse(const char *s, enum topo_bind *b)
{
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, bind_names[i]) == 0) {
            *b = (enum topo_bind)i;
            return 0;
        }
    return -1;
}

const char *topo_bind_name(enum topo_bind b)
{
    return (unsigned)b < 3 ? bind_names[b] : "?";
}

/* ---- loading ------------------------------------------------------------ */

/* Cores, or PUs on a topology that has no core objects. */
static hwloc_obj_type_t core_type(const struct topo *t)
{
    return hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_CORE) > 0
               ? HWLOC_OBJ_CORE
               : HWLOC_OBJ_PU;
}

static hwloc_obj_t core_obj(const struct topo *t, int i)
{
    return hwloc_get_obj_by_type(t->h, core_type(t), (unsigned)i);
}

int topo_load(struct topo *t, const char *src, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    const char *what = src && *src ? src : "this machine";
    if (hwloc_topology_init(&t->h) < 0) {
        t->h = NULL;
        snprintf(err, errlen, "hwloc: cannot initialise a topology");
        return -1;
    }
    int rc = 0;
    if (src && strncmp(src, "synthetic:", 10) == 0)
        rc = hwloc_topology_set_synthetic(t->h, src + 10);
    else if (src && *src)
        rc = hwloc_topology_set_xml(t->h, src);
    if (rc < 0 || hwloc_topology_load(t->h) < 0) {
        snprintf(err, errlen, "hwloc: cannot load the topology of %s%s",
                 what, src && *src && strncmp(src, "synthetic:", 10)
                           ? " (not a readable hwloc XML file?)" : "");
        topo_free(t);
        return -1;
    }
    t->thissystem = hwloc_topology_is_thissystem(t->h);
    t->npackages = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_PACKAGE);
    t->nnuma = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_NUMANODE);
    t->nl3 = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_L3CACHE);
    t->ncores = hwloc_get_nbobjs_by_type(t->h, core_type(t));
    t->npus = hwloc_get_nbobjs_by_type(t->h, HWLOC_OBJ_PU);
    if (t->ncores < 1 || t->npus < 1) {
        snprintf(err, errlen, "hwloc: the topology of %s has no processing "
                 "units", what);
        topo_free(t);
        return -1;
    }
    return 0;
}

void topo_free(struct topo *t)
{
    if (t->h)
        hwloc_topology_destroy(t->h);
    memset(t, 0, sizeof(*t));
}

int topo_export_xml(const struct topo *t, const char *path, char *err,
                    size_t errlen)
{
    if (hwloc_topology_export_xml(t->h, path, 0) < 0) {
        snprintf(err, errlen, "cannot write the topology to %s", path);
        return -1;
    }
    return 0;
}

/* ---- printing ---------------------------------------------------------- */

void topo_set_string(hwloc_const_bitmap_t s, char *buf, size_t len)
{
    if (!s || hwloc_bitmap_iszero(s)) {
        snprintf(buf, len, "none");
        return;
    }
    if (hwloc_bitmap_list_snprintf(buf, len, s) < 0)
        snprintf(buf, len, "?");
}

/* Logical indexes of the objects of type ty that intersect cpuset s. */
static hwloc_bitmap_t objs_of(const struct topo *t, hwloc_obj_type_t ty,
                              hwloc_const_bitmap_t s)
{
    hwloc_bitmap_t out = hwloc_bitmap_alloc();
    int n = hwloc_get_nbobjs_by_type(t->h, ty);
    for (int i = 0; out && i < n; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t->h, ty, (unsigned)i);
        if (o->cpuset && hwloc_bitmap_intersects(o->cpuset, s))
            hwloc_bitmap_set(out, (unsigned)i);
    }
    return out;
}

static void print_cpus(const struct topo *t, hwloc_obj_t o, FILE *out)
{
    char c[256], p[256];
    hwloc_bitmap_t cores = objs_of(t, core_type(t), o->cpuset);
    topo_set_string(cores, c, sizeof(c));
    topo_set_string(o->cpuset, p, sizeof(p));
    fprintf(out, "cores %s (PUs %s)", c, p);
    hwloc_bitmap_free(cores);
}

void topo_print_tree(const struct topo *t, FILE *out)
{
    hwloc_obj_t root = hwloc_get_root_obj(t->h);
    fprintf(out, "%d package(s), %d NUMA node(s), %d L3 group(s), %d "
            "core(s), %d PU(s)\n", t->npackages, t->nnuma, t->nl3,
            t->ncores, t->npus);
    int np = t->npackages > 0 ? t->npackages : 1;
    for (int i = 0; i < np; i++) {
        hwloc_obj_t pk = t->npackages > 0
            ? hwloc_get_obj_by_type(t->h, HWLOC_OBJ_PACKAGE, (unsigned)i)
            : root;
        fprintf(out, "  package %d: ", i);
        print_cpus(t, pk, out);
        fprintf(out, "\n");
        for (int j = 0; j < t->nnuma; j++) {
            hwloc_obj_t nu = hwloc_get_obj_by_type(t->h, HWLOC_OBJ_NUMANODE,
                                                   (unsigned)j);
            if (!hwloc_bitmap_isincluded(nu->cpuset, pk->cpuset))
                continue;
            fprintf(out, "    NUMA node %u (%.1f GiB): ", nu->os_index,
                    (double)nu->attr->numanode.local_memory / (1 << 30));
            print_cpus(t, nu, out);
            fprintf(out, "\n");
        }
        for (int j = 0; j < t->nl3; j++) {
            hwloc_obj_t l3 = hwloc_get_obj_by_type(t->h, HWLOC_OBJ_L3CACHE,
                                                   (unsigned)j);
            if (!hwloc_bitmap_isincluded(l3->cpuset, pk->cpuset))
                continue;
            fprintf(out, "    L3 %d (%llu KiB): ", j,
                    (unsigned long long)l3->attr->cache.size / 1024);
            print_cpus(t, l3, out);
            fprintf(out, "\n");
        }
    }
}

void topo_place_string(const struct topo *t, const struct topo_place *pl,
                       char *buf, size_t len)
{
    char c[256], p[256], nu[128], l3[128] = "";
    topo_set_string(pl->cores, c, sizeof(c));
    topo_set_string(pl->cpuset, p, sizeof(p));
    topo_set_string(pl->numa, nu, sizeof(nu));
    if (t->nl3 > 0) {
        hwloc_bitmap_t s = objs_of(t, HWLOC_OBJ_L3CACHE, pl->cpuset);
        char x[96];
        topo_set_string(s, x, sizeof(x));
        snprintf(l3, sizeof(l3), ", L3 %s", x);
        hwloc_bitmap_free(s);
    }
    snprintf(buf, len, "cores %s (PUs %s), NUMA %s%s", c, p, nu, l3);
}

/* ---- plans --------------------------------------------------------------- */

/* Every PU of the topology. */
static hwloc_const_bitmap_t all_pus(const struct topo *t)
{
    return hwloc_get_root_obj(t->h)->cpuset;
}

static int is_unbound(const struct topo *t, hwloc_const_bitmap_t cur)
{
    return !cur || hwloc_bitmap_isincluded(all_pus(t), cur);
}

/* The PUs of the cores in core set cs. */
static hwloc_bitmap_t pus_of_cores(const struct topo *t,
                                   hwloc_const_bitmap_t cs)
{
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    int i;
    hwloc_bitmap_foreach_begin(i, cs)
        hwloc_bitmap_or(s, s, core_obj(t, i)->cpuset);
    hwloc_bitmap_foreach_end();
    return s;
}

/* The auto plan's working state. */
struct planner {
    const struct topo *t;
    int n, C;
    hwloc_bitmap_t *cur_cores; /* per rank: cores of its launcher binding */
    hwloc_bitmap_t free_;      /* cores no rank holds yet */
    int *load;                 /* per core: ranks holding it */
};

/* Take s cores for rank i: the first free ones in its launcher binding,
 * then the free ones after the last taken (wrapping).  Returns the core
 * set. */
static hwloc_bitmap_t take_cores(struct planner *pn, int i, int s)
{
    hwloc_bitmap_t got = hwloc_bitmap_alloc();
    int taken = 0, last = -1;
    for (int c = 0; c < pn->C && taken < s; c++)
        if (hwloc_bitmap_isset(pn->free_, (unsigned)c) &&
            hwloc_bitmap_isset(pn->cur_cores[i], (unsigned)c)) {
            hwloc_bitmap_set(got, (unsigned)c);
            last = c;
            taken++;
        }
    for (int off = 1; off <= pn->C && taken < s; off++) {
        int c = (last + off) % pn->C;
        if (hwloc_bitmap_isset(pn->free_, (unsigned)c) &&
            !hwloc_bitmap_isset(got, (unsigned)c)) {
            hwloc_bitmap_set(got, (unsigned)c);
            taken++;
        }
    }
    hwloc_bitmap_andnot(pn->free_, pn->free_, got);
    return got;
}

/* No free core left: the least loaded one, inside the launcher binding
 * on a tie, then in topology order. */
static hwloc_bitmap_t least_loaded(struct planner *pn, int i)
{
    int best = 0;
    for (int c = 1; c < pn->C; c++) {
        int in = hwloc_bitmap_isset(pn->cur_cores[i], (unsigned)c);
        int bin = hwloc_bitmap_isset(pn->cur_cores[i], (unsigned)best);
        if (pn->load[c] < pn->load[best] ||
            (pn->load[c] == pn->load[best] && in && !bin))
            best = c;
    }
    hwloc_bitmap_t got = hwloc_bitmap_alloc();
    hwloc_bitmap_set(got, (unsigned)best);
    return got;
}

static void add_load(struct planner *pn, hwloc_const_bitmap_t cores)
{
    int c;
    hwloc_bitmap_foreach_begin(c, cores)
        pn->load[c]++;
    hwloc_bitmap_foreach_end();
}

/* Ranks not kept, most constrained (fewest launcher cores) first. */
static int *unkept_order(const struct planner *pn, const struct topo_plan *p,
                         int *nu)
{
    int *ord = malloc((size_t)pn->n * sizeof(int));
    *nu = 0;
    for (int i = 0; ord && i < pn->n; i++)
        if (!p->r[i].kept)
            ord[(*nu)++] = i;
    for (int a = 1; ord && a < *nu; a++) /* stable insertion sort */
        for (int b = a; b > 0; b--) {
            int x = ord[b - 1], y = ord[b];
            if (hwloc_bitmap_weight(pn->cur_cores[y]) >=
                hwloc_bitmap_weight(pn->cur_cores[x]))
                break;
            ord[b - 1] = y;
            ord[b] = x;
        }
    return ord;
}

static int plan_auto(struct planner *pn, const hwloc_const_bitmap_t *cur,
                     struct topo_plan *p)
{
    int n = pn->n, C = pn->C;
    int lo = n <= C ? C / n : 1, hi = n <= C ? (C + n - 1) / n : 1;
    for (int i = 0; i < n; i++) { /* keep what is already right */
        int k = hwloc_bitmap_weight(pn->cur_cores[i]);
        if (p->r[i].bound_before && k >= lo && k <= hi &&
            hwloc_bitmap_isincluded(pn->cur_cores[i], pn->free_)) {
            p->r[i].kept = 1;
            p->r[i].cores = hwloc_bitmap_dup(pn->cur_cores[i]);
            p->r[i].cpuset = hwloc_bitmap_dup(cur[i]);
            hwloc_bitmap_andnot(pn->free_, pn->free_, pn->cur_cores[i]);
            add_load(pn, pn->cur_cores[i]);
        }
    }
    int nu, *ord = unkept_order(pn, p, &nu);
    if (!ord)
        return -1;
    for (int j = 0; j < nu; j++) {
        int i = ord[j], F = hwloc_bitmap_weight(pn->free_), R = nu - j;
        hwloc_bitmap_t got = F >= R ? take_cores(pn, i, (F + R - 1) / R)
                           : F > 0  ? take_cores(pn, i, 1)
                                    : least_loaded(pn, i);
        add_load(pn, got);
        p->r[i].cores = got;
        p->r[i].cpuset = pus_of_cores(pn->t, got);
    }
    free(ord);
    return 0;
}

/* Cores, NUMA nodes, threads of every place; shared and idle cores. */
static int plan_finish(const struct topo *t, struct topo_plan *p,
                       int threads_cfg)
{
    int *count = calloc((size_t)t->ncores, sizeof(int));
    p->shared = hwloc_bitmap_alloc();
    p->idle = hwloc_bitmap_alloc();
    if (!count || !p->shared || !p->idle) {
        free(count);
        return -1;
    }
    for (int i = 0; i < p->n; i++) {
        struct topo_place *pl = &p->r[i];
        if (!pl->cores)
            pl->cores = objs_of(t, core_type(t), pl->cpuset);
        pl->numa = hwloc_bitmap_alloc();
        if (!pl->cores || !pl->cpuset || !pl->numa) {
            free(count);
            return -1;
        }
        hwloc_cpuset_to_nodeset(t->h, pl->cpuset, pl->numa);
        pl->ncores = hwloc_bitmap_weight(pl->cores);
        pl->threads = threads_cfg > 0 ? threads_cfg
                      : pl->ncores > 0 ? pl->ncores : 1;
        p->threads_total += pl->threads;
        int c;
        hwloc_bitmap_foreach_begin(c, pl->cores)
            count[c]++;
        hwloc_bitmap_foreach_end();
    }
    for (int c = 0; c < t->ncores; c++) {
        if (count[c] > 1)
            hwloc_bitmap_set(p->shared, (unsigned)c);
        if (count[c] == 0)
            hwloc_bitmap_set(p->idle, (unsigned)c);
    }
    p->oversubscribed = p->threads_total > t->ncores;
    free(count);
    return 0;
}

int topo_plan_make(const struct topo *t, int n, const hwloc_const_bitmap_t *cur,
                   enum topo_bind mode, int threads_cfg, struct topo_plan *p,
                   char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->mode = mode;
    if (n < 1) {
        snprintf(err, errlen, "a plan needs at least one rank (n=%d)", n);
        return -1;
    }
    struct planner pn = {.t = t, .n = n, .C = t->ncores};
    p->n = n;
    p->r = calloc((size_t)n, sizeof(*p->r));
    pn.cur_cores = calloc((size_t)n, sizeof(*pn.cur_cores));
    pn.load = calloc((size_t)t->ncores, sizeof(int));
    pn.free_ = hwloc_bitmap_alloc();
    int rc = p->r && pn.cur_cores && pn.load && pn.free_ ? 0 : -1;
    if (rc == 0)
        hwloc_bitmap_set_range(pn.free_, 0, t->ncores - 1);
    for (int i = 0; rc == 0 && i < n; i++) {
        hwloc_const_bitmap_t c = cur && cur[i] ? cur[i] : all_pus(t);
        p->r[i].bound_before = !is_unbound(t, c);
        pn.cur_cores[i] = objs_of(t, core_type(t), c);
        if (!pn.cur_cores[i])
            rc = -1;
        if (mode != TOPO_BIND_AUTO) {
            p->r[i].kept = 1;
            p->r[i].cpuset = hwloc_bitmap_dup(c);
        }
    }
    if (rc == 0 && mode == TOPO_BIND_AUTO) {
        hwloc_const_bitmap_t tmp[n];
        for (int i = 0; i < n; i++)
            tmp[i] = cur && cur[i] ? cur[i] : all_pus(t);
        rc = plan_auto(&pn, tmp, p);
    }
    if (rc == 0)
        rc = plan_finish(t, p, threads_cfg);
    for (int i = 0; pn.cur_cores && i < n; i++)
        hwloc_bitmap_free(pn.cur_cores[i]);
    free(pn.cur_cores);
    free(pn.load);
    hwloc_bitmap_free(pn.free_);
    if (rc < 0) {
        snprintf(err, errlen, "out of memory making a binding plan for %d "
                 "ranks", n);
        topo_plan_free(p);
    }
    return rc;
}

int topo_place_of(const struct topo *t, hwloc_const_bitmap_t s,
                  struct topo_place *pl)
{
    memset(pl, 0, sizeof(*pl));
    pl->cpuset = hwloc_bitmap_dup(s);
    pl->cores = objs_of(t, core_type(t), s);
    pl->numa = hwloc_bitmap_alloc();
    if (!pl->cpuset || !pl->cores || !pl->numa) {
        topo_place_free(pl);
        return -1;
    }
    hwloc_cpuset_to_nodeset(t->h, s, pl->numa);
    pl->ncores = hwloc_bitmap_weight(pl->cores);
    pl->threads = pl->ncores > 0 ? pl->ncores : 1;
    pl->kept = 1;
    pl->bound_before = !is_unbound(t, s);
    return 0;
}

void topo_place_free(struct topo_place *pl)
{
    hwloc_bitmap_free(pl->cpuset);
    hwloc_bitmap_free(pl->cores);
    hwloc_bitmap_free(pl->numa);
    memset(pl, 0, sizeof(*pl));
}

void topo_plan_free(struct topo_plan *p)
{
    for (int i = 0; p->r && i < p->n; i++)
        topo_place_free(&p->r[i]);
    free(p->r);
    hwloc_bitmap_free(p->shared);
    hwloc_bitmap_free(p->idle);
    memset(p, 0, sizeof(*p));
}

/* ---- this process ---------------------------------------------------- */

hwloc_bitmap_t topo_current_binding(const struct topo *t)
{
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    if (!s)
        return NULL;
    if (!t->thissystem ||
        hwloc_get_cpubind(t->h, s, HWLOC_CPUBIND_PROCESS) < 0)
        hwloc_bitmap_copy(s, all_pus(t));
    hwloc_bitmap_and(s, s, all_pus(t));
    if (hwloc_bitmap_iszero(s))
        hwloc_bitmap_copy(s, all_pus(t));
    return s;
}

int topo_bind_self(const struct topo *t, hwloc_const_bitmap_t cpuset,
                   char *err, size_t errlen)
{
    char s[256];
    topo_set_string(cpuset, s, sizeof(s));
    if (!t->thissystem) {
        snprintf(err, errlen, "cannot bind to PUs %s: the topology is not "
                 "this machine's", s);
        return -1;
    }
    if (hwloc_set_cpubind(t->h, cpuset, HWLOC_CPUBIND_PROCESS) < 0 &&
        hwloc_set_cpubind(t->h, cpuset, 0) < 0) {
        snprintf(err, errlen, "cannot bind to PUs %s (hwloc_set_cpubind "
                 "failed)", s);
        return -1;
    }
    return 0;
}

/* ---- the node's ranks together ----------------------------------------- */

/* s as bytes over PU OS indexes [0, len). */
static void set_to_bytes(hwloc_const_bitmap_t s, unsigned char *b, int len)
{
    memset(b, 0, (size_t)len);
    int i;
    hwloc_bitmap_foreach_begin(i, s)
        if (i < len)
            b[i] = 1;
    hwloc_bitmap_foreach_end();
}

static hwloc_bitmap_t bytes_to_set(const unsigned char *b, int len)
{
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    for (int i = 0; s && i < len; i++)
        if (b[i])
            hwloc_bitmap_set(s, (unsigned)i);
    return s;
}

/* Gather every node rank's current binding; 1 in *mixed when the ranks
 * see different sets of allowed PUs (per-task confinement).  Returns the
 * n sets (caller frees) or NULL. */
static hwloc_bitmap_t *gather_bindings(const struct topo *t, MPI_Comm comm,
                                       int n, int *mixed)
{
    int len = hwloc_bitmap_last(all_pus(t)) + 1;
    MPI_Allreduce(MPI_IN_PLACE, &len, 1, MPI_INT, MPI_MAX, comm);
    unsigned char *mine = malloc(2 * (size_t)len);
    unsigned char *all = malloc(2 * (size_t)len * (size_t)n);
    hwloc_bitmap_t cur = topo_current_binding(t);
    hwloc_bitmap_t *sets = calloc((size_t)n, sizeof(*sets));
    int ok = mine && all && cur && sets;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm);
    if (ok) {
        set_to_bytes(cur, mine, len);
        set_to_bytes(all_pus(t), mine + len, len);
        MPI_Allgather(mine, 2 * len, MPI_UNSIGNED_CHAR, all, 2 * len,
                      MPI_UNSIGNED_CHAR, comm);
        *mixed = 0;
        for (int i = 0; i < n; i++) {
            sets[i] = bytes_to_set(all + (size_t)i * 2 * len, len);
            if (memcmp(all + (size_t)i * 2 * len + len, all + len,
                       (size_t)len) != 0)
                *mixed = 1;
        }
    }
    free(mine);
    free(all);
    hwloc_bitmap_free(cur);
    if (!ok && sets) {
        free(sets);
        sets = NULL;
    }
    return sets;
}

int topo_place_node(const struct topo *t, MPI_Comm node_comm,
                    enum topo_bind mode, int threads_cfg, int apply,
                    struct topo_plan *plan, int *me, char *err,
                    size_t errlen)
{
    int n, mixed = 0, rc;
    memset(plan, 0, sizeof(*plan));
    MPI_Comm_size(node_comm, &n);
    MPI_Comm_rank(node_comm, me);
    hwloc_bitmap_t *cur = gather_bindings(t, node_comm, n, &mixed);
    if (!cur) {
        snprintf(err, errlen, "out of memory gathering the node's bindings");
        return -1;
    }
    if (mixed && mode == TOPO_BIND_AUTO)
        mode = TOPO_BIND_LAUNCHER; /* plans would not agree: keep them */
    rc = topo_plan_make(t, n, (const hwloc_const_bitmap_t *)cur, mode,
                        threads_cfg, plan, err, errlen);
    plan->mixed_allowed = mixed;
    if (rc == 0 && apply && mode == TOPO_BIND_AUTO && !plan->r[*me].kept &&
        !hwloc_bitmap_isequal(plan->r[*me].cpuset, cur[*me]))
        rc = topo_bind_self(t, plan->r[*me].cpuset, err, errlen);
    for (int i = 0; i < n; i++)
        hwloc_bitmap_free(cur[i]);
    free(cur);
    int bad = rc < 0, any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, node_comm);
    if (any && rc == 0)
        snprintf(err, errlen, "another rank of this node could not bind "
                 "itself");
    return any ? -1 : 0;
}
