/*
 * cli.c - option parsing shared by the subcommands, and the two small
 * ones: prepare and ckpt.
 */
#include "cli.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "config/config.h"
#include "data/data.h"
#include "log.h"

int cli_wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

static int find_name(const char *const *names, const char *s, size_t len)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && !strncmp(names[i], s, len))
            return i;
    return -1;
}

static void suggest(const char *const *names, const char *s, char *err,
                    size_t errlen)
{
    int best = -1, bd = 1 << 30;
    for (int i = 0; names[i]; i++) {
        int d = config_edit_distance(names[i], s);
        if (d < bd) {
            bd = d;
            best = i;
        }
    }
    if (best >= 0 && bd <= 3)
        snprintf(err, errlen, "unknown option '--%s'; did you mean '--%s'?",
                 s, names[best]);
    else
        snprintf(err, errlen, "unknown option '--%s'", s);
}

int cli_parse(int argc, char **argv, const char *const *names,
              const char **vals, const char **pos, int maxpos, char *err,
              size_t errlen)
{
    int np = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (np >= maxpos) {
                snprintf(err, errlen, "unexpected argument '%s'", a);
                return -1;
            }
            pos[np++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int k = find_name(names, name, len);
        if (k < 0) {
            char tmp[128];
            snprintf(tmp, sizeof(tmp), "%.*s", (int)len, name);
            suggest(names, tmp, err, errlen);
            return -1;
        }
        if (eq)
            vals[k] = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            vals[k] = argv[++i];
        else {
            snprintf(err, errlen, "option '--%s' needs a value", names[k]);
            return -1;
        }
    }
    return np;
}

int cli_int(const char *name, const char *s, long *out, char *err,
            size_t errlen)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) {
        snprintf(err, errlen, "bad value '%s' for --%s: expected an integer",
                 s, name);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_double(const char *name, const char *s, double *out, char *err,
               size_t errlen)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) {
        snprintf(err, errlen, "bad value '%s' for --%s: expected a number", s,
                 name);
        return -1;
    }
    *out = v;
    return 0;
}

int cmd_prepare(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: mpitron prepare --out DIR [--vocab_size=N] "
               "[--doc_sep=LINE]\n"
               "       [--val_fraction=F] [--shard_tokens=N] FILE...\n\n"
               "Tokenises the files, in order, into llm.c-format shards\n"
               "DIR/train_NNN.bin and DIR/val_NNN.bin (uint16 tokens).  The\n"
               "last F of the bytes (default 0.1) is the validation split;\n"
               "shards hold at most N tokens (default 100000000).\n"
               "--vocab_size=256 (default): one token per byte.  Larger (up\n"
               "to 65535): trains a byte-level BPE tokenizer on the train\n"
               "split and saves its merges, readable, as DIR/merges.txt;\n"
               "train takes vocab_size from it and sample decodes with it.\n"
               "Documents: each file starts one, and so does the line after\n"
               "each line equal to LINE (default \"%%\", fortunes' separator;\n"
               "\"\" = files only).  Their starts go to DIR/train.docs and\n"
               "DIR/val.docs (for doc_mask=1); no BPE token crosses one.\n");
        return 0;
    }
    static const char *const names[] = {"out", "val_fraction",
                                        "shard_tokens", "vocab_size",
                                        "doc_sep", NULL};
    const char *vals[5] = {NULL, "0.1", "100000000", "256", "%"};
    const char **files = calloc((size_t)argc + 1, sizeof(char *));
    char err[1024];
    struct prepare_opts o = {.verbose = 1};
    long st, vs;
    int rc = 2;
    int nf = cli_parse(argc, argv, names, vals, files, argc, err, sizeof(err));
    if (nf < 0 || cli_double("val_fraction", vals[1], &o.val_fraction, err,
                             sizeof(err)) < 0 ||
        cli_int("shard_tokens", vals[2], &st, err, sizeof(err)) < 0 ||
        cli_int("vocab_size", vals[3], &vs, err, sizeof(err)) < 0)
        goto out;
    if (!vals[0] || nf == 0) {
        snprintf(err, sizeof(err), "prepare needs --out DIR and at least one "
                 "input FILE");
        goto out;
    }
    if (vs < 256 || vs > 65535) {
        snprintf(err, sizeof(err), "bad value '%s' for --vocab_size: must be "
                 "in [256, 65535] (256 = bytes)", vals[3]);
        goto out;
    }
    o.shard_tokens = st;
    o.vocab_size = (int)vs;
    o.doc_sep = vals[4];
    rc = data_prepare_ex(vals[0], files, nf, &o, err, sizeof(err)) < 0;
out:
    if (rc)
        log_error("%s", err);
    free(files);
    return rc;
}

int cmd_ckpt(int argc, char **argv)
{
    if (argc < 1 || cli_wants_help(argc, argv)) {
        printf("usage: mpitron ckpt info PATH|RUN_DIR\n"
               "       mpitron ckpt verify PATH|RUN_DIR\n"
               "       mpitron ckpt list RUN_DIR\n\n"
               "info    step, layout, config and every tensor with its "
               "global shape, storage\n        layout and xxh64 checksum\n"
               "verify  checks the manifest (file size, the XXH64 of every "
               "piece, every\n        dataset's checksum), then every "
               "dataset's xxh64 attribute and byte\n        range against it, "
               "and reads every tensor; names the bad ones, exits 1\n"
               "        if any\n"
               "list    every checkpoint of the run with its step, size "
               "and status\n\n"
               "A run directory resolves to its newest checkpoint "
               "(ckpt/latest).  verify\nmay run under mpirun: the ranks "
               "hash and read in parallel.\n");
        return argc < 1 ? 2 : 0;
    }
    char err[1024], path[4096];
    const char *sub = argv[0];
    if (argc != 2 || (strcmp(sub, "info") && strcmp(sub, "verify") &&
                      strcmp(sub, "list"))) {
        log_error("usage: mpitron ckpt info|verify PATH|RUN_DIR, or "
                  "mpitron ckpt list RUN_DIR");
        return 2;
    }
    int rc;
    if (!strcmp(sub, "list")) {
        rc = ckpt_list(argv[1], stdout, err, sizeof(err));
        if (rc < 0)
            log_error("%s", err);
        return rc != 0;
    }
    if (ckpt_resolve(argv[1], path, sizeof(path), err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    if (!strcmp(sub, "info"))
        rc = ckpt_print_info(path, stdout, err, sizeof(err));
    else
        rc = ckpt_verify(MPI_COMM_WORLD, path, stdout, err, sizeof(err));
    if (rc < 0)
        log_error("%s", err);
    return rc < 0;
}
