/*
 * test_durable.c - the one mkdir -p and the one durable replace
 * (ckpt/ckpt_file.c), used by checkpoints, token shards, metrics.jsonl
 * and hang reports: nested creation, errors that name the component at
 * fault (a file in the way, a path too long to hold, never cut), and a
 * replace that leaves exactly the new bytes and no temporary, or on
 * failure the old file untouched.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"

static char base[256];

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "%s/mpitron-durable.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(base) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *slurp(const char *p)
{
    static char buf[256];
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_mkdir_p(void **state)
{
    (void)state;
    char p[512], err[1024];
    snprintf(p, sizeof p, "%s/a/b//c/", base);
    assert_int_equal(ckpt_mkdir_p(p, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/a/b/c", base);
    assert_true(is_dir(p));
    assert_int_equal(ckpt_mkdir_p(p, err, sizeof err), 0); /* exists */

    /* a regular file in the way: named in the message */
    snprintf(p, sizeof p, "%s/file", base);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(p, sizeof p, "%s/file/sub", base);
    assert_int_equal(ckpt_mkdir_p(p, err, sizeof err), -1);
    assert_non_null(strstr(err, "/file"));

    /* longer than a path can be here: an error, not a cut path */
    char *lng = malloc(5000);
    assert_non_null(lng);
    snprintf(lng, 5000, "%s/", base);
    for (size_t i = strlen(lng); i < 4999; i++)
        lng[i] = i % 100 == 0 ? '/' : 'x';
    lng[4999] = '\0';
    assert_int_equal(ckpt_mkdir_p(lng, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than"));
    free(lng);
    assert_int_equal(ckpt_mkdir_p("", err, sizeof err), -1);
}

static void test_replace(void **state)
{
    (void)state;
    char p[512], tmp[600], err[1024];
    snprintf(p, sizeof p, "%s/f.txt", base);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    struct ckpt_buf b[3] = {{"one ", 4}, {"two", 3}, {"\n", 1}};
    assert_int_equal(ckpt_replace(p, b, 3, err, sizeof err), 0);
    assert_string_equal(slurp(p), "one two\n");
    assert_int_equal(access(tmp, F_OK), -1);
    struct ckpt_buf c = {"short\n", 6};
    assert_int_equal(ckpt_replace(p, &c, 1, err, sizeof err), 0);
    assert_string_equal(slurp(p), "short\n"); /* not "short\nwo\n" */

    /* the target is a non-empty directory: rename fails, named, and the
     * temporary is gone */
    snprintf(p, sizeof p, "%s/d", base);
    assert_int_equal(ckpt_mkdir_p(p, err, sizeof err), 0);
    snprintf(tmp, sizeof tmp, "%s/d/keep", base);
    assert_int_equal(ckpt_replace(tmp, &c, 1, err, sizeof err), 0);
    assert_int_equal(ckpt_replace(p, &c, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "rename"));
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    assert_int_equal(access(tmp, F_OK), -1);
    /* the old target untouched: still the directory, its file intact */
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    snprintf(tmp, sizeof tmp, "%s/d/keep", base);
    assert_string_equal(slurp(tmp), "short\n");

    /* a directory that does not exist: open fails, named */
    snprintf(p, sizeof p, "%s/none/f", base);
    assert_int_equal(ckpt_replace(p, &c, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "none/f.tmp"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mkdir_p),
        cmocka_unit_test(test_replace),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
