/*
 * test_topo.c - binding plans (parallel/topo.c) on topologies loaded from
 * hwloc XML files in tests/topo/, and on this machine's live topology:
 *
 *   2pkg-2numa-8core.xml  2 packages x 2 NUMA nodes x 2 L3 groups x 4
 *                         cores (32 cores, one PU each)
 *   smt-8core-2pu.xml     1 package, 8 cores x 2 PUs, the PUs numbered
 *                         as on Intel machines (siblings i and i + 8)
 *   this-machine.xml      the development VM: 1 package, 2 cores, one L3
 *
 * (written by hwloc_topology_export_xml from the synthetic descriptions
 * "pack:2 numa:2 l3:2 core:4 pu:1", "pack:1 numa:1 l3:1 core:8
 * pu:2(indexes=0,8,1,9,...,7,15)" and the VM's own discovery).
 *
 * Every plan is checked against properties computed here independently
 * of the planner: the sets are whole cores, pairwise disjoint while there
 * are enough cores, their sizes floor or ceil of the fair share, thread
 * counts equal to the cores held (not PUs), the shared and idle cores and
 * the oversubscription flag recounted; and against hand-written expected
 * sets (a package, a NUMA node, an L3 group) where the spread is known.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "topo.h"

static void load(struct topo *t, const char *name)
{
    char path[1024], err[256];
    const char *top = getenv("top_srcdir");
    snprintf(path, sizeof(path), "%s/tests/topo/%s", top ? top : ".", name);
    int rc = topo_load(t, path, err, sizeof(err));
    if (rc < 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
}

static hwloc_bitmap_t list(const char *s)
{
    hwloc_bitmap_t b = hwloc_bitmap_alloc();
    assert_int_equal(hwloc_bitmap_list_sscanf(b, s), 0);
    return b;
}

static hwloc_const_bitmap_t obj_set(const struct topo *t, hwloc_obj_type_t ty,
                                    int i)
{
    hwloc_obj_t o = hwloc_get_obj_by_type(t->h, ty, (unsigned)i);
    assert_non_null(o);
    return o->cpuset;
}

/* Properties every plan has, recomputed here. */
static void check_plan(const struct topo *t, const struct topo_plan *p,
                       int threads_cfg)
{
    int C = t->ncores, n = p->n, total = 0;
    int *count = calloc((size_t)C, sizeof(int));
    for (int i = 0; i < n; i++) {
        const struct topo_place *pl = &p->r[i];
        int cores = 0;
        for (int c = 0; c < C; c++) {
            hwloc_obj_t core = hwloc_get_obj_by_type(t->h, HWLOC_OBJ_CORE,
                                                     (unsigned)c);
            int in = hwloc_bitmap_intersects(core->cpuset, pl->cpuset);
            assert_int_equal(in, hwloc_bitmap_isset(pl->cores, (unsigned)c));
            if (in) {
                cores++;
                count[c]++;
                if (!pl->kept) /* a planned set is whole cores */
                    assert_true(hwloc_bitmap_isincluded(core->cpuset,
                                                        pl->cpuset));
            }
        }
        assert_int_equal(cores, pl->ncores);
        assert_int_equal(pl->threads, threads_cfg ? threads_cfg : cores);
        total += pl->threads;
        hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
        hwloc_cpuset_to_nodeset(t->h, pl->cpuset, nodes);
        assert_true(hwloc_bitmap_isequal(nodes, pl->numa));
        hwloc_bitmap_free(nodes);
    }
    for (int c = 0; c < C; c++) {
        assert_int_equal(hwloc_bitmap_isset(p->shared, (unsigned)c),
                         count[c] > 1);
        assert_int_equal(hwloc_bitmap_isset(p->idle, (unsigned)c),
                         count[c] == 0);
    }
    assert_int_equal(total, p->threads_total);
    assert_int_equal(p->oversubscribed, total > C);
    free(count);
}

/* An auto plan of n unbound (or rebound) ranks: fair and disjoint. */
static void check_fair(const struct topo *t, const struct topo_plan *p)
{
    int C = t->ncores, n = p->n;
    if (n <= C) {
        assert_true(hwloc_bitmap_iszero(p->shared));
        assert_true(hwloc_bitmap_iszero(p->idle));
        for (int i = 0; i < n; i++)
            assert_true(p->r[i].ncores == C / n ||
                        p->r[i].ncores == (C + n - 1) / n);
    } else { /* every core carries floor or ceil of n / C ranks */
        for (int c = 0; c < C; c++) {
            int k = 0;
            for (int i = 0; i < n; i++)
                k += hwloc_bitmap_isset(p->r[i].cores, (unsigned)c);
            assert_true(k == n / C || k == (n + C - 1) / C);
        }
        for (int i = 0; i < n; i++)
            assert_int_equal(p->r[i].ncores, 1);
    }
}

static void plan(const struct topo *t, int n, hwloc_bitmap_t *cur,
                 enum topo_bind mode, int threads, struct topo_plan *p)
{
    char err[256];
    assert_int_equal(topo_plan_make(t, n, (const hwloc_const_bitmap_t *)cur,
                                    mode, threads, p, err, sizeof(err)), 0);
    check_plan(t, p, threads);
}

static void test_spread_2pkg(void **state)
{
    (void)state;
    struct topo t;
    struct topo_plan p;
    load(&t, "2pkg-2numa-8core.xml");
    assert_int_equal(t.npackages, 2);
    assert_int_equal(t.nnuma, 4);
    assert_int_equal(t.nl3, 8);
    assert_int_equal(t.ncores, 32);
    struct { int n; hwloc_obj_type_t ty; } cases[] = {
        {2, HWLOC_OBJ_PACKAGE}, {4, HWLOC_OBJ_NUMANODE},
        {8, HWLOC_OBJ_L3CACHE}, {32, HWLOC_OBJ_CORE}};
    for (int k = 0; k < 4; k++) { /* each rank: exactly one whole object */
        plan(&t, cases[k].n, NULL, TOPO_BIND_AUTO, 0, &p);
        check_fair(&t, &p);
        for (int i = 0; i < cases[k].n; i++) {
            assert_true(hwloc_bitmap_isequal(p.r[i].cpuset,
                                             obj_set(&t, cases[k].ty, i)));
            assert_int_equal(p.r[i].threads, 32 / cases[k].n);
            assert_int_equal(hwloc_bitmap_weight(p.r[i].numa),
                             cases[k].n == 2 ? 2 : 1);
            assert_false(p.r[i].kept);
        }
        assert_false(p.oversubscribed);
        topo_plan_free(&p);
    }
    for (int n = 1; n <= 70; n++) { /* any count: fair, disjoint or even */
        plan(&t, n, NULL, TOPO_BIND_AUTO, 0, &p);
        check_fair(&t, &p);
        assert_int_equal(p.oversubscribed, n > 32);
        topo_plan_free(&p);
    }
    topo_free(&t);
}

static void test_launcher_bindings_2pkg(void **state)
{
    (void)state;
    struct topo t;
    struct topo_plan p;
    load(&t, "2pkg-2numa-8core.xml");
    /* --bind-to socket, ranks round-robin over packages: each rank stays
     * in its package, the two of a package take one NUMA node each */
    hwloc_bitmap_t cur[4];
    for (int i = 0; i < 4; i++)
        cur[i] = hwloc_bitmap_dup(obj_set(&t, HWLOC_OBJ_PACKAGE, i % 2));
    plan(&t, 4, cur, TOPO_BIND_AUTO, 0, &p);
    check_fair(&t, &p);
    for (int i = 0; i < 4; i++) {
        assert_true(hwloc_bitmap_isincluded(p.r[i].cpuset, cur[i]));
        assert_true(p.r[i].bound_before);
        assert_false(p.r[i].kept);
        assert_int_equal(hwloc_bitmap_weight(p.r[i].numa), 1);
    }
    topo_plan_free(&p);
    /* launcher mode keeps the overlap and reports it */
    plan(&t, 4, cur, TOPO_BIND_LAUNCHER, 0, &p);
    for (int i = 0; i < 4; i++) {
        assert_true(hwloc_bitmap_isequal(p.r[i].cpuset, cur[i]));
        assert_int_equal(p.r[i].threads, 16);
    }
    assert_int_equal(hwloc_bitmap_weight(p.shared), 32);
    assert_true(p.oversubscribed);
    topo_plan_free(&p);
    /* good bindings in any order are kept as they are */
    for (int i = 0; i < 4; i++)
        hwloc_bitmap_copy(cur[i], obj_set(&t, HWLOC_OBJ_NUMANODE, 3 - i));
    plan(&t, 4, cur, TOPO_BIND_AUTO, 0, &p);
    for (int i = 0; i < 4; i++) {
        assert_true(p.r[i].kept);
        assert_true(hwloc_bitmap_isequal(p.r[i].cpuset, cur[i]));
    }
    topo_plan_free(&p);
    /* one good binding kept, the unbound others fill the other NUMA
     * nodes around it */
    hwloc_bitmap_copy(cur[0], obj_set(&t, HWLOC_OBJ_NUMANODE, 1));
    for (int i = 1; i < 4; i++)
        hwloc_bitmap_fill(cur[i]);
    plan(&t, 4, cur, TOPO_BIND_AUTO, 0, &p);
    check_fair(&t, &p);
    assert_true(p.r[0].kept);
    int want[4] = {1, 0, 2, 3};
    for (int i = 0; i < 4; i++)
        assert_true(hwloc_bitmap_isequal(p.r[i].cpuset,
                    obj_set(&t, HWLOC_OBJ_NUMANODE, want[i])));
    topo_plan_free(&p);
    /* mpirun -np 1 binds to one core: auto takes the whole node, the
     * launcher's core leaves 31 idle */
    hwloc_bitmap_t one = list("5");
    plan(&t, 1, &one, TOPO_BIND_AUTO, 0, &p);
    assert_int_equal(p.r[0].ncores, 32);
    assert_int_equal(p.r[0].threads, 32);
    topo_plan_free(&p);
    plan(&t, 1, &one, TOPO_BIND_LAUNCHER, 0, &p);
    assert_int_equal(p.r[0].threads, 1);
    assert_int_equal(hwloc_bitmap_weight(p.idle), 31);
    topo_plan_free(&p);
    /* threads=2 on 32 unbound ranks: 64 threads on 32 cores */
    plan(&t, 32, NULL, TOPO_BIND_AUTO, 2, &p);
    assert_true(p.oversubscribed);
    topo_plan_free(&p);
    hwloc_bitmap_free(one);
    for (int i = 0; i < 4; i++)
        hwloc_bitmap_free(cur[i]);
    topo_free(&t);
}

static void test_smt(void **state)
{
    (void)state;
    struct topo t;
    struct topo_plan p;
    load(&t, "smt-8core-2pu.xml");
    assert_int_equal(t.ncores, 8);
    assert_int_equal(t.npus, 16);
    plan(&t, 2, NULL, TOPO_BIND_AUTO, 0, &p);
    check_fair(&t, &p);
    hwloc_bitmap_t want0 = list("0-3,8-11"), want1 = list("4-7,12-15");
    assert_true(hwloc_bitmap_isequal(p.r[0].cpuset, want0));
    assert_true(hwloc_bitmap_isequal(p.r[1].cpuset, want1));
    assert_int_equal(p.r[0].threads, 4); /* cores, not PUs */
    topo_plan_free(&p);
    /* --bind-to hwthread put both ranks on the two PUs of core 0 */
    hwloc_bitmap_t cur[2] = {list("0"), list("8")};
    plan(&t, 2, cur, TOPO_BIND_LAUNCHER, 0, &p);
    assert_int_equal(hwloc_bitmap_weight(p.shared), 1);
    assert_true(hwloc_bitmap_isset(p.shared, 0));
    assert_int_equal(hwloc_bitmap_weight(p.idle), 7);
    assert_int_equal(p.r[0].threads, 1);
    topo_plan_free(&p);
    plan(&t, 2, cur, TOPO_BIND_AUTO, 0, &p); /* auto: whole cores, apart */
    check_fair(&t, &p);
    assert_true(hwloc_bitmap_isset(p.r[0].cpuset, 0));
    assert_true(hwloc_bitmap_isset(p.r[0].cpuset, 8));
    topo_plan_free(&p);
    for (int n = 1; n <= 20; n++) {
        plan(&t, n, NULL, TOPO_BIND_AUTO, 0, &p);
        check_fair(&t, &p);
        topo_plan_free(&p);
    }
    hwloc_bitmap_free(cur[0]);
    hwloc_bitmap_free(cur[1]);
    hwloc_bitmap_free(want0);
    hwloc_bitmap_free(want1);
    topo_free(&t);
}

/* The dev VM, and whatever machine runs the test. */
static void test_this_machine(void **state)
{
    (void)state;
    struct topo t;
    struct topo_plan p;
    load(&t, "this-machine.xml");
    assert_int_equal(t.ncores, 2);
    plan(&t, 2, NULL, TOPO_BIND_AUTO, 0, &p);
    check_fair(&t, &p);
    assert_int_equal(p.r[0].threads, 1);
    assert_true(hwloc_bitmap_isset(p.r[0].cpuset, 0));
    assert_true(hwloc_bitmap_isset(p.r[1].cpuset, 1));
    topo_plan_free(&p);
    for (int n = 1; n <= 5; n++) {
        plan(&t, n, NULL, TOPO_BIND_AUTO, 0, &p);
        check_fair(&t, &p);
        topo_plan_free(&p);
    }
    topo_free(&t);
    char err[256], path[] = "/tmp/test_topo_XXXXXX";
    assert_int_equal(topo_load(&t, NULL, err, sizeof(err)), 0);
    assert_true(t.thissystem);
    for (int n = 1; n <= 2 * t.ncores + 1; n++) {
        plan(&t, n, NULL, TOPO_BIND_AUTO, 0, &p);
        check_fair(&t, &p);
        topo_plan_free(&p);
    }
    int fd = mkstemp(path); /* export and load back */
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(topo_export_xml(&t, path, err, sizeof(err)), 0);
    struct topo u;
    assert_int_equal(topo_load(&u, path, err, sizeof(err)), 0);
    assert_int_equal(u.ncores, t.ncores);
    assert_int_equal(u.npus, t.npus);
    assert_false(u.thissystem);
    topo_free(&u);
    unlink(path);
    topo_free(&t);
}

static void test_bad_input(void **state)
{
    (void)state;
    struct topo t;
    char err[256];
    assert_int_equal(topo_load(&t, "/nonexistent/node.xml", err,
                               sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/node.xml"));
    assert_int_equal(topo_load(&t, "synthetic:pack:2 banana:3", err,
                               sizeof(err)), -1);
    assert_int_equal(topo_load(&t, "synthetic:pack:2 core:3 pu:1", err,
                               sizeof(err)), 0);
    assert_int_equal(t.ncores, 6);
    struct topo_plan p;
    assert_int_equal(topo_plan_make(&t, 0, NULL, TOPO_BIND_AUTO, 0, &p, err,
                                    sizeof(err)), -1);
    enum topo_bind b;
    assert_int_equal(topo_bind_parse("launcher", &b), 0);
    assert_int_equal(b, TOPO_BIND_LAUNCHER);
    assert_int_equal(topo_bind_parse("core", &b), -1);
    topo_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spread_2pkg),
        cmocka_unit_test(test_launcher_bindings_2pkg),
        cmocka_unit_test(test_smt),
        cmocka_unit_test(test_this_machine),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
