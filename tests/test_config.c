/*
 * test_config.c - the configuration table, parser and INI text.
 * Expected values come from the specification (the key list and messages
 * in the design brief), written out by hand here, never from the code's
 * own output.  No MPI.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define ERRLEN 512

/* Fail with both strings shown when sub is not in s. */
#define assert_has(s, sub)                                                    \
    do {                                                                      \
        const char *s_ = (s), *sub_ = (sub);                                  \
        if (!s_ || !strstr(s_, sub_)) {                                       \
            print_error("'%s' not found in '%s'\n", sub_, s_ ? s_ : "(null)"); \
            fail();                                                           \
        }                                                                     \
    } while (0)

/* Write text to a fresh temporary file; returns its malloc'ed path. */
/* n bytes of text into a new temporary file (n = 0: strlen) */
static char *tmp_write_n(const char *text, size_t n)
{
    char *path = strdup("/tmp/test_config_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    n = n ? n : strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static char *tmp_write(const char *text)
{
    return tmp_write_n(text, 0);
}

static void tmp_remove(char *path)
{
    unlink(path);
    free(path);
}

/* ---- defaults ----------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    assert_int_equal(c.n_layer, 4);
    assert_int_equal(c.n_embd, 256);
    assert_int_equal(c.n_head, 4);
    assert_int_equal(c.n_kv_head, 0);
    assert_int_equal(c.seq_len, 128);
    assert_int_equal(c.vocab_size, 0); /* from the data directory */
    assert_int_equal(c.attn_window, 0);
    assert_true(c.dropout == 0.0f);
    assert_int_equal(c.batch_size, 8);
    assert_int_equal(c.micro_batch, 0);
    assert_int_equal(c.steps, 1000);
    assert_true(c.lr == 1e-3f);
    assert_true(c.min_lr == 1e-4f);
    assert_int_equal(c.warmup_steps, 100);
    assert_string_equal(c.lr_schedule, "cosine");
    assert_int_equal(c.lr_cycle, 100);
    assert_true(c.weight_decay == 0.1f);
    assert_true(c.beta1 == 0.9f);
    assert_true(c.beta2 == 0.95f);
    assert_true(c.eps == 1e-8f);
    assert_true(c.grad_clip == 1.0f);
    assert_true(c.seed == 1337);
    assert_string_equal(c.data, "data/fortunes");
    assert_int_equal(c.val_every, 100);
    assert_int_equal(c.val_batches, 8);
    assert_string_equal(c.run_dir, "runs/default");
    assert_int_equal(c.log_every, 10);
    assert_int_equal(c.ckpt_every, 0);
    assert_int_equal(c.stop_at_step, 0);
    assert_int_equal(c.keep_last, 0);
    assert_int_equal(c.keep_every, 0);
    assert_int_equal(c.ckpt_async, 0);
    assert_string_equal(c.resume, "auto");
    assert_string_equal(c.init_from, "");
    assert_int_equal(c.threads, 0);
    assert_string_equal(c.fp32_gemm, "auto");
    assert_string_equal(c.precision, "fp32");
    assert_int_equal(c.dp, 0);
    assert_int_equal(c.tp, 1);
    assert_int_equal(c.pp, 1);
    assert_string_equal(c.pp_schedule, "1f1b");
    assert_int_equal(c.ranks_per_node, 0);
    assert_string_equal(c.allreduce, "auto");
    assert_string_equal(c.allreduce_tune, "");
    assert_string_equal(c.shm_dir, "/dev/shm");
    assert_true(c.bucket_mb == 25.0f);
    assert_string_equal(c.compress, "none");
    assert_int_equal(c.compress_warmup, 0);
    assert_string_equal(c.bind, "auto");
    assert_string_equal(c.pp_partition, "auto");
    assert_string_equal(c.balance, "off");
    assert_true(c.straggler_ratio == 1.2f);
    assert_int_equal(c.rebalance_every, 0);
    assert_string_equal(c.debug_slow_rank, "");
    assert_string_equal(c.layout, "manual");
    assert_string_equal(c.perf_calib, "");

    assert_int_equal(c.zero, 0);
    assert_string_equal(c.recompute, "none");
    assert_string_equal(c.offload, "none");
    assert_string_equal(c.offload_dir, "");

    assert_string_equal(c.nonfinite, "skip");
    assert_int_equal(c.nonfinite_patience, 3);
    assert_true(c.spike_zscore == 0.0f);
    assert_string_equal(c.debug_nan, "");
    assert_int_equal(c.hang_timeout, 600);
    assert_string_equal(c.debug_hang, "");
    assert_int_equal(c.debug_hold_step, 0);

    /* 11 model + 24 optim + 4 data + 20 run + 19 parallel keys */
    assert_int_equal(config_nkeys, 78);
    const char *secs[] = {"model", "optim", "data", "run", "parallel"};
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        int ok = 0;
        for (int s = 0; s < 5; s++)
            ok |= strcmp(k->section, secs[s]) == 0;
        assert_true(ok);
        assert_non_null(k->help);
        assert_true(k->offset + k->size <= sizeof(struct config));
        for (int j = 0; j < i; j++) {
            assert_true(strcmp(k->name, config_keys[j].name) != 0);
            assert_true(k->offset != config_keys[j].offset);
        }
    }

    /* the defaults pass finalize, which resolves n_kv_head */
    char err[ERRLEN] = "";
    assert_int_equal(config_finalize(&c, err, sizeof err), 0);
    assert_int_equal(c.n_kv_head, 4);
}

/* ---- config_set -------------------------------------------------------- */

static void expect_bad(const char *key, const char *value, const char *sub)
{
    struct config c, before;
    char err[ERRLEN] = "";
    config_defaults(&c);
    memcpy(&before, &c, sizeof c);
    if (config_set(&c, key, value, "run.ini:3", err, sizeof err) != -1) {
        print_error("%s = '%s' was accepted\n", key, value);
        fail();
    }
    assert_has(err, sub);
    assert_has(err, key);
    assert_memory_equal(&c, &before, sizeof c); /* unchanged on error */
}

/* micro_batch = auto: parsed, written back as "auto" by config_to_text */
static void test_micro_batch_auto(void **state)
{
    (void)state;
    struct config c;
    char err[ERRLEN] = "";
    config_defaults(&c);
    assert_int_equal(config_set(&c, "micro_batch", "auto", "cli", err,
                                sizeof err), 0);
    assert_int_equal(c.micro_batch, CONFIG_MB_AUTO);
    char *text = config_to_text(&c);
    assert_non_null(text);
    assert_has(text, "micro_batch = auto\n");
    free(text);
}

static void test_set_errors(void **state)
{
    (void)state;
    struct config c;
    char err[ERRLEN] = "";
    config_defaults(&c);

    assert_int_equal(config_set(&c, "n_embed", "256", "command line", err,
                                sizeof err), -1);
    assert_string_equal(err, "unknown key 'n_embed' (command line); did you "
                             "mean 'n_embd'?");
    assert_int_equal(config_set(&c, "lr_shedule", "cosine", "command line",
                                err, sizeof err), -1);
    assert_has(err, "did you mean 'lr_schedule'?");
    assert_int_equal(config_set(&c, "completely_unrelated", "1", "x.ini:1",
                                err, sizeof err), -1);
    assert_has(err, "unknown key 'completely_unrelated' (x.ini:1)");
    assert_null(strstr(err, "did you mean"));

    assert_int_equal(config_set(&c, "n_layer", "abc", "run.ini:3", err,
                                sizeof err), -1);
    assert_string_equal(err, "bad value 'abc' for key 'n_layer' (run.ini:3): "
                             "expected an integer");

    const char *bad_ints[] = {"", "12x", "4.0", "1e3", " 4", "4 ", "0x10",
                              "--4"};
    for (size_t i = 0; i < sizeof bad_ints / sizeof *bad_ints; i++)
        expect_bad("n_layer", bad_ints[i], "expected an integer");
    expect_bad("nonfinite", "retry", "skip, rollback, abort");
    expect_bad("nonfinite_patience", "0", "must be > 0");
    expect_bad("spike_zscore", "-1", "must be >= 0");
    expect_bad("debug_nan", "1:3", "RANK:STEP:grad");
    expect_bad("debug_nan", "1:0:grad", "RANK:STEP:grad");
    expect_bad("debug_nan", "1:3:bias", "RANK:STEP:grad");
    expect_bad("debug_nan", "1:3:gradx", "RANK:STEP:grad");
    expect_bad("hang_timeout", "-1", "must be >= 0");
    expect_bad("debug_hang", "1", "RANK:STEP");
    expect_bad("debug_hang", "1:0", "RANK:STEP");
    expect_bad("debug_hang", "-1:3", "RANK:STEP");
    expect_bad("debug_hang", "1:3x", "RANK:STEP");
    assert_int_equal(config_set(&c, "debug_nan", "2:7:weight", "x", err,
                                sizeof err), 0);
    expect_bad("steps", "99999999999", "out of range");
    expect_bad("steps", "-99999999999", "out of range");
    expect_bad("layout", "fastest", "must be manual or auto");

    const char *bad_floats[] = {"", "abc", "1e-3x", "0.1.2", "nan", "inf",
                                "1e40", " 0.1", "0.1 "};
    for (size_t i = 0; i < sizeof bad_floats / sizeof *bad_floats; i++)
        expect_bad("lr", bad_floats[i], "bad value");
    expect_bad("lr", "abc", "expected a number");

    expect_bad("seed", "-1", "expected a non-negative integer");
    expect_bad("seed", "18446744073709551616", "out of range");
    assert_int_equal(config_set(&c, "seed", "18446744073709551615", "t", err,
                                sizeof err), 0);
    assert_true(c.seed == UINT64_MAX);

    /* per-key range checks */
    expect_bad("n_layer", "0", "must be > 0");
    expect_bad("n_embd", "-8", "must be > 0");
    expect_bad("n_kv_head", "-1", "must be >= 0");
    expect_bad("dropout", "1", "must be in [0, 1)");
    expect_bad("dropout", "-0.1", "must be in [0, 1)");
    expect_bad("beta1", "1.0", "must be in [0, 1)");
    expect_bad("beta2", "1.5", "must be in [0, 1)");
    expect_bad("lr", "0", "must be > 0");
    expect_bad("min_lr", "-1e-5", "must be >= 0");
    expect_bad("eps", "0", "must be > 0");
    expect_bad("grad_clip", "-1", "must be >= 0");
    expect_bad("lr_schedule", "exponential", "must be one of");
    expect_bad("tp", "0", "must be > 0");
    expect_bad("dp", "-2", "must be >= 0");
    expect_bad("data", "", "must not be empty");
    expect_bad("data", "a:0.7,,b", "empty directory");
    expect_bad("data", "a:0", "positive number");
    expect_bad("optimizer", "sgd", "adamw, lamb, onebit_adam");
    expect_bad("lr_layer_decay", "0", "(0, 1]");
    expect_bad("lr_layer_decay", "1.5", "(0, 1]");
    expect_bad("label_smoothing", "1", "[0, 1)");
    expect_bad("z_loss", "-1e-4", ">= 0");
    expect_bad("batch_ramp", "8", "START:STEPS");
    expect_bad("seq_len_warmup", "32:0", "START:STEPS");
    expect_bad("vocab_size", "-1", ">= 0");
    expect_bad("attn", "flash", "full, linear, sparse");
    expect_bad("attn_block", "0", "> 0");
    expect_bad("attn_stride", "-1", "> 0");
    expect_bad("micro_batch", "-2", "auto or >= 0");
    expect_bad("micro_batch", "autox", "integer");
    expect_bad("mem_budget_mb", "-1", ">= 0");
    expect_bad("zero", "4", "must be 0, 1, 2 or 3");
    expect_bad("zero", "-1", "must be 0, 1, 2 or 3");
    expect_bad("recompute", "some", "must be none, selective or full");
    expect_bad("offload", "params", "must be none or optimizer");
    expect_bad("data", "a\nb", "control character");

    char longs[CONFIG_STR_MAX + 8];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    expect_bad("run_dir", longs, "longer than 511 characters");
    expect_bad("lr_schedule", "cosinecosinecosinecosinecosinecosine",
               "longer than 31 characters");

    /* good values, including exponents and the edges of the ranges */
    assert_int_equal(config_set(&c, "lr", "1e-3", "t", err, sizeof err), 0);
    assert_true(c.lr == 0.001f);
    assert_int_equal(config_set(&c, "dropout", "0", "t", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "n_layer", "-0", "t", err, sizeof err),
                     -1);
    assert_int_equal(config_set(&c, "n_layer", "+12", "t", err, sizeof err),
                     0);
    assert_int_equal(c.n_layer, 12);
    assert_int_equal(config_set(&c, "lr_schedule", "onecycle", "t", err,
                                sizeof err), 0);
    assert_string_equal(c.lr_schedule, "onecycle");
}

/* ---- config_finalize -------------------------------------------------- */

static void expect_finalize(const char *const *kv, const char *msg)
{
    struct config c;
    char err[ERRLEN] = "";
    config_defaults(&c);
    for (int i = 0; kv[i]; i += 2)
        assert_int_equal(config_set(&c, kv[i], kv[i + 1], "t", err,
                                    sizeof err), 0);
    assert_int_equal(config_finalize(&c, err, sizeof err), -1);
    assert_string_equal(err, msg);
}

static void test_finalize(void **state)
{
    (void)state;
    expect_finalize((const char *[]){"n_embd", "250", NULL},
                    "n_embd=250 is not divisible by n_head=4");
    expect_finalize((const char *[]){"n_head", "6", "n_embd", "384",
                                     "n_kv_head", "4", NULL},
                    "n_head=6 is not divisible by n_kv_head=4");
    expect_finalize((const char *[]){"n_kv_head", "8", NULL},
                    "n_kv_head=8 exceeds n_head=4");
    expect_finalize((const char *[]){"micro_batch", "3", NULL},
                    "micro_batch=3 does not divide batch_size=8");
    expect_finalize((const char *[]){"micro_batch", "16", NULL},
                    "micro_batch=16 does not divide batch_size=8");
    expect_finalize((const char *[]){"pp", "5", NULL},
                    "pp=5 exceeds n_layer=4: every pipeline stage needs at "
                    "least one layer");
    expect_finalize((const char *[]){"lr", "1e-5", NULL},
                    "min_lr=9.99999975e-05 exceeds lr=9.99999975e-06 "
                    "(lr_schedule=cosine)");
    expect_finalize((const char *[]){"attn", "linear", "attn_window", "8",
                                     NULL},
                    "attn_window=8 applies to attn=full only (attn=linear)");
    expect_finalize((const char *[]){"optimizer", "onebit_adam", NULL},
                    "optimizer=onebit_adam needs compress_warmup >= 1: "
                    "AdamW steps that estimate the second moment before it "
                    "is frozen");
    expect_finalize((const char *[]){"optimizer", "onebit_adam",
                                     "compress_warmup", "5", "compress",
                                     "sign", "tp", "2", NULL},
                    "optimizer=onebit_adam with compress=sign needs tp=1 "
                    "and pp=1 (here tp=2 pp=1): it reduces the momentum, "
                    "which the tied embedding's two stages would each add, "
                    "and bounds the gradient norm by ranks' local norms "
                    "that tp ranks do not share");
    expect_finalize((const char *[]){"zero", "2", "compress", "fp16", NULL},
                    "compress=fp16 with zero=2: ZeRO reduce-scatters the "
                    "gradient, and every codec is an all-reduce with a "
                    "residual the size of the whole gradient; use "
                    "compress=none (or zero=0)");
    expect_finalize((const char *[]){"micro_batch", "auto", NULL},
                    "micro_batch=auto needs mem_budget_mb > 0: the per-rank "
                    "memory the micro-batch must fit");
    expect_finalize((const char *[]){"offload", "optimizer", "optimizer",
                                     "lamb", NULL},
                    "optimizer=lamb with zero=0 offload=optimizer: ZeRO and "
                    "offload update their shards with AdamW only; use "
                    "optimizer=adamw (or zero=0 and offload=none)");
    expect_finalize((const char *[]){"zero", "1", "batch_ramp", "4:10",
                                     NULL},
                    "batch_ramp=4:10 with zero=1: ZeRO plans its reductions "
                    "for a fixed number of micro-batches per step; use zero=0 "
                    "(or batch_ramp=0)");
    expect_finalize((const char *[]){"balance", "on", "batch_ramp", "4:10",
                                     NULL},
                    "batch_ramp=4:10 with balance=on: the batch plan's "
                    "smaller or reshaped steps are split equally over the "
                    "data-parallel ranks, the balanced shares only the full "
                    "batch; use batch_ramp=0 (or balance=off and "
                    "rebalance_every=0)");
    expect_finalize((const char *[]){"rebalance_every", "5",
                                     "seq_len_warmup", "16:10", NULL},
                    "seq_len_warmup=16:10 with rebalance_every=5: the batch "
                    "plan's smaller or reshaped steps are split equally over "
                    "the data-parallel ranks, the balanced shares only the "
                    "full batch; use seq_len_warmup=0 (or balance=off and "
                    "rebalance_every=0)");
    expect_finalize((const char *[]){"balance", "on", "micro_batch", "auto",
                                     "mem_budget_mb", "100", NULL},
                    "micro_batch=auto with balance=on: the shares by speed "
                    "are measured at the chosen micro-batch; give micro_batch "
                    "(or balance=off and rebalance_every=0)");

    struct config c;
    char err[ERRLEN] = "";

    /* a field set directly (not through config_set) is still checked */
    config_defaults(&c);
    c.n_layer = 0;
    assert_int_equal(config_finalize(&c, err, sizeof err), -1);
    assert_string_equal(err, "n_layer=0: must be > 0");

    /* n_kv_head: 0 -> n_head; an explicit divisor stays */
    config_defaults(&c);
    assert_int_equal(config_set(&c, "n_head", "8", "t", err, sizeof err), 0);
    assert_int_equal(config_finalize(&c, err, sizeof err), 0);
    assert_int_equal(c.n_kv_head, 8);
    config_defaults(&c);
    assert_int_equal(config_set(&c, "n_head", "8", "t", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "n_kv_head", "2", "t", err, sizeof err),
                     0);
    assert_int_equal(config_finalize(&c, err, sizeof err), 0);
    assert_int_equal(c.n_kv_head, 2);
    config_defaults(&c);
    c.n_kv_head = 1; /* multi-query */
    assert_int_equal(config_finalize(&c, err, sizeof err), 0);
    assert_int_equal(c.n_kv_head, 1);

    /* valid micro-batches; min_lr > lr is fine for a constant schedule */
    config_defaults(&c);
    c.micro_batch = 4;
    c.lr = 1e-5f;
    strcpy(c.lr_schedule, "constant");
    assert_int_equal(config_finalize(&c, err, sizeof err), 0);
}

/* ---- INI -------------------------------------------------------------- */

static void test_ini(void **state)
{
    (void)state;
    const char *text =
        "\xEF\xBB\xBF# a run\n"
        "; another comment style\n"
        "\n"
        "[model]\n"
        "  n_layer   =   6   \n"
        "n_embd=384 # inline comment\n"
        "n_head = 6 ; inline comment\n"
        "[ optim ]   # section with spaces\r\n"
        "lr = 3e-4\r\n"
        "lr_schedule = 'linear'\n"
        "seed = 42\n"
        "[data]\n"
        "data = \"my data/with # hash\"   # comment after quotes\n"
        "[run]\n"
        "run_dir = runs/a#b\n"       /* '#' not after whitespace: kept */
        "init_from = \"\"\n"
        "n_kv_head = 2\n"            /* a model key under [run]: accepted */
        "[parallel]\n"
        "tp=2\n";
    struct config c, ref;
    char err[ERRLEN] = "";
    config_defaults(&c);
    assert_int_equal(config_set(&c, "init_from", "x", "t", err, sizeof err),
                     0);
    assert_int_equal(config_load_text(&c, text, "run.ini", err, sizeof err),
                     0);

    config_defaults(&ref); /* the same values, set one by one */
    ref.n_layer = 6;
    ref.n_embd = 384;
    ref.n_head = 6;
    ref.lr = 3e-4f;
    strcpy(ref.lr_schedule, "linear");
    ref.seed = 42;
    memset(ref.data, 0, sizeof ref.data);
    strcpy(ref.data, "my data/with # hash");
    memset(ref.run_dir, 0, sizeof ref.run_dir);
    strcpy(ref.run_dir, "runs/a#b");
    ref.n_kv_head = 2;
    ref.tp = 2;
    assert_memory_equal(&c, &ref, sizeof c);

    /* errors name the file and line; the config is left unchanged */
    struct {
        const char *text, *msg;
    } bad[] = {
        {"[model]\nn_layer = 2\n[modle]\n",
         "unknown section '[modle]' (run.ini:3)"},
        {"n_layer = 2\n\nn_layer = abc\n",
         "bad value 'abc' for key 'n_layer' (run.ini:3): expected an "
         "integer"},
        {"# c\nn_embed = 3\n",
         "unknown key 'n_embed' (run.ini:2); did you mean 'n_embd'?"},
        {"n_layer 4\n", "expected 'key = value' or '[section]'"},
        {"= 4\n", "missing key before '=' (run.ini:1)"},
        {"[model\n", "malformed section header '[model' (run.ini:1)"},
        {"data = \"abc\n", "unterminated \" quote"},
        {"data = \"abc\" def\n", "text after the closing quote"},
        {"n_layer = \n", "bad value '' for key 'n_layer' (run.ini:1)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct config d, before;
        config_defaults(&d);
        memcpy(&before, &d, sizeof d);
        assert_int_equal(config_load_text(&d, bad[i].text, "run.ini", err,
                                          sizeof err), -1);
        assert_has(err, bad[i].msg);
        assert_memory_equal(&d, &before, sizeof d);
    }
}

static void test_load_file(void **state)
{
    (void)state;
    struct config c;
    char err[ERRLEN] = "";
    char *path = tmp_write("[optim]\nsteps = 77\nbatch_size = x\n");
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof err), -1);
    char where[64];
    snprintf(where, sizeof where, "(%s:3)", path);
    assert_has(err, where);
    assert_int_equal(c.steps, 1000);
    tmp_remove(path);

    path = tmp_write("steps = 77\n");
    assert_int_equal(config_load_file(&c, path, err, sizeof err), 0);
    assert_int_equal(c.steps, 77);
    tmp_remove(path);

    assert_int_equal(config_load_file(&c, "/nonexistent/dir/run.ini", err,
                                      sizeof err), -1);
    assert_has(err, "/nonexistent/dir/run.ini");

    /* a NUL byte: refused with its line, not read as the end of the
     * text (the bad value and the unknown key after it would pass) */
    static const char nul[] = "[optim]\nsteps = 5\0\nsteps = abc\nbogus = 7\n";
    path = tmp_write_n(nul, sizeof nul - 1);
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof err), -1);
    snprintf(where, sizeof where, "%s:2: a NUL byte", path);
    assert_has(err, where);
    assert_int_equal(c.steps, 1000);
    tmp_remove(path);
}

/* ---- command line --------------------------------------------------- */

static int parse(struct config *c, char **argv, const char *const *extra,
                 const char **vals, char *err)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return config_parse_args(c, argc, argv, extra, vals, err, ERRLEN);
}

static void test_args(void **state)
{
    (void)state;
    char *ini = tmp_write("[model]\nn_layer = 6\nn_embd = 384\nn_head = 6\n"
                          "[optim]\nlr = 0.01\n");
    struct config c;
    char err[ERRLEN] = "";

    /* options override the file whether they come before or after it */
    config_defaults(&c);
    char *a1[] = {"--n_layer=8", ini, "--lr", "0.02", "--steps", "5",
                  "--steps=6", NULL};
    assert_int_equal(parse(&c, a1, NULL, NULL, err), 0);
    assert_int_equal(c.n_layer, 8);
    assert_int_equal(c.n_embd, 384);
    assert_int_equal(c.n_head, 6);
    assert_true(c.lr == 0.02f);
    assert_int_equal(c.steps, 6); /* later wins */

    config_defaults(&c);
    char *a2[] = {"--lr=0.5", "--min_lr", "-1", NULL};
    assert_int_equal(parse(&c, a2, NULL, NULL, err), -1);
    assert_string_equal(err, "bad value '-1' for key 'min_lr' (command "
                             "line): must be >= 0");
    assert_true(c.lr == 1e-3f); /* unchanged on error */

    /* extra options */
    const char *const extra[] = {"iters", "json", "out", NULL};
    const char *vals[3] = {NULL, NULL, "default.txt"};
    config_defaults(&c);
    char *a3[] = {"--iters", "7", "--json", "--seed=9", ini, NULL};
    assert_int_equal(parse(&c, a3, extra, vals, err), 0);
    assert_string_equal(vals[0], "7");
    assert_string_equal(vals[1], "1");
    assert_string_equal(vals[2], "default.txt");
    assert_true(c.seed == 9);
    assert_int_equal(c.n_layer, 6);
    char *a4[] = {"--iters=3", "--json", NULL};
    assert_int_equal(parse(&c, a4, extra, vals, err), 0);
    assert_string_equal(vals[0], "3");
    assert_string_equal(vals[1], "1");

    /* errors */
    struct {
        char *argv[6];
        const char *msg;
    } bad[] = {
        {{"--n_embed=3"}, "unknown key 'n_embed' (command line); did you "
                          "mean 'n_embd'?"},
        {{"--lr_shedule", "cyclic"}, "did you mean 'lr_schedule'?"},
        {{"--itres=3"}, "did you mean 'iters'?"},
        {{"/nonexistent/run.ini"}, "'/nonexistent/run.ini'"},
        {{ini, ini}, "more than one config file"},
        {{"--lr"}, "missing value for key 'lr'"},
        {{"--lr", "--steps=3"}, "missing value for key 'lr'"},
        {{"-x"}, "unexpected argument '-x'"},
        {{"--"}, "unexpected argument '--'"},
        {{"--n_layer", "x"}, "bad value 'x' for key 'n_layer' (command "
                             "line): expected an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct config before;
        config_defaults(&c);
        memcpy(&before, &c, sizeof c);
        assert_int_equal(parse(&c, bad[i].argv, extra, NULL, err), -1);
        assert_has(err, bad[i].msg);
        assert_memory_equal(&c, &before, sizeof c);
    }
    tmp_remove(ini);
}

/* ---- text round trip -------------------------------------------------- */

static void roundtrip(const struct config *a)
{
    char err[ERRLEN] = "";
    char *text = config_to_text(a);
    assert_non_null(text);
    struct config b;
    config_defaults(&b);
    if (config_load_text(&b, text, "ckpt", err, sizeof err) != 0) {
        print_error("%s\n%s\n", err, text);
        fail();
    }
    assert_memory_equal(a, &b, sizeof b);
    free(text);
}

static void test_roundtrip(void **state)
{
    (void)state;
    struct config a;
    char err[ERRLEN] = "";
    config_defaults(&a);
    const char *kv[] = {
        "lr", "3e-4", "weight_decay", "0.1", "beta2", "0.999", "eps",
        "1e-10", "dropout", "0.1", "grad_clip", "0.333333333",
        "min_lr", "1.17549435e-38", "seed", "18446744073709551557",
        "n_kv_head", "2", "lr_schedule", "cyclic", "n_layer", "12",
        "data", "  data dir # with ; odd chars ", "run_dir",
        "runs/\"quoted\"", "resume", "runs/x/step_00001000.h5",
        "init_from", "", "dp", "3", NULL};
    for (int i = 0; kv[i]; i += 2)
        assert_int_equal(config_set(&a, kv[i], kv[i + 1], "t", err,
                                    sizeof err), 0);
    a.beta1 = nextafterf(0.9f, 1.0f); /* one ulp above 0.9 */
    roundtrip(&a);

    /* the text layout: sections in order, every key once */
    char *text = config_to_text(&a);
    assert_non_null(text);
    assert_true(strncmp(text, "[model]\nn_layer = 12\n", 21) == 0);
    const char *p = text;
    const char *secs[] = {"[model]", "[optim]", "[data]", "[run]",
                          "[parallel]"};
    for (int s = 0; s < 5; s++) {
        const char *q = strstr(p, secs[s]);
        assert_non_null(q);
        p = q;
    }
    for (int i = 0; i < config_nkeys; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n%s = ", config_keys[i].name);
        const char *q = strstr(text, line);
        assert_non_null(q);
        assert_null(strstr(q + 1, line));
    }
    free(text);

    /* many random floats: %.9g must reproduce every bit */
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < 2000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t bits = (uint32_t)s & 0x7fffffffu; /* positive */
        float f;
        memcpy(&f, &bits, sizeof f);
        if (!isfinite(f) || f == 0.0f)
            continue;
        a.lr = f;
        a.weight_decay = f;
        roundtrip(&a);
    }
}

/* ---- diff, help, edit distance ------------------------------------ */

static void test_diff_model(void **state)
{
    (void)state;
    struct config a, b;
    char out[256] = "junk";
    config_defaults(&a);
    config_defaults(&b);
    assert_int_equal(config_diff_model(&a, &b, out, sizeof out), 0);
    assert_string_equal(out, "");

    b.n_embd = 512;
    b.attn_window = 64;
    b.dropout = 0.5f; /* not a shape key */
    b.lr = 0.5f;      /* not a model key */
    b.tp = 2;
    assert_int_equal(config_diff_model(&a, &b, out, sizeof out), 2);
    assert_string_equal(out, "n_embd, attn_window");

    /* n_kv_head compares resolved: 0 (= n_head) equals n_head */
    config_defaults(&b);
    b.n_kv_head = b.n_head;
    assert_int_equal(config_diff_model(&a, &b, out, sizeof out), 0);
    b.n_kv_head = 2;
    b.n_layer = 1;
    b.vocab_size = 50257;
    b.seq_len = 1024;
    b.n_head = 8;
    assert_int_equal(config_diff_model(&a, &b, out, sizeof out), 5);
    assert_string_equal(out, "n_layer, n_head, n_kv_head, seq_len, "
                             "vocab_size");

    char small[8];
    assert_int_equal(config_diff_model(&a, &b, small, sizeof small), 5);
    assert_true(strlen(small) < sizeof small);

    /* attn: the same weights, another function */
    config_defaults(&b);
    snprintf(b.attn, sizeof b.attn, "linear");
    assert_int_equal(config_diff_model(&a, &b, out, sizeof out), 1);
    assert_string_equal(out, "attn");
}

static void test_help(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print_help(f);
    fclose(f);

    assert_has(buf, "[model]\n");
    assert_has(buf, "[parallel]\n");
    assert_has(buf, "--n_layer=<int>");
    assert_has(buf, "--lr=<float>");
    assert_has(buf, "--data=<str>");
    assert_has(buf, "(default 4)");
    assert_has(buf, "(default 1e-3)");
    assert_has(buf, "(default \"\")");
    assert_has(buf, "constant | cosine | linear | onecycle | cyclic");

    /* one line per key; "(default" and the help text start in one column */
    int nopt = 0;
    long col_def = -1, col_help = -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "  --", 4) != 0)
            continue;
        nopt++;
        char *d = strstr(line, "(default");
        assert_non_null(d);
        char *h = strchr(d, ')') + 1;
        while (*h == ' ')
            h++;
        if (col_def < 0) {
            col_def = d - line;
            col_help = h - line;
        }
        assert_int_equal(d - line, col_def);
        assert_int_equal(h - line, col_help);
    }
    assert_int_equal(nopt, config_nkeys);
    free(buf);
}

static void test_edit_distance(void **state)
{
    (void)state;
    assert_int_equal(config_edit_distance("kitten", "sitting"), 3);
    assert_int_equal(config_edit_distance("flaw", "lawn"), 2);
    assert_int_equal(config_edit_distance("", "abc"), 3);
    assert_int_equal(config_edit_distance("abc", ""), 3);
    assert_int_equal(config_edit_distance("n_embd", "n_embd"), 0);
    assert_int_equal(config_edit_distance("n_embed", "n_embd"), 1);
    assert_int_equal(config_edit_distance("lr_shedule", "lr_schedule"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_micro_batch_auto),
        cmocka_unit_test(test_finalize),
        cmocka_unit_test(test_ini),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_diff_model),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_edit_distance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
