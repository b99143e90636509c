/*
 * main.c - `mpitron CMD ...`: dispatch to the subcommands.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config/config.h"
#include "log.h"
#include "data/mix.h"
#include "perf/perf_model.h"
#include "train/train.h"

static void usage(FILE *f)
{
    fputs("usage: mpitron CMD [options]     (mpitron CMD --help for more)\n"
          "\n"
          "  prepare  --out DIR [--vocab_size=N] [--doc_sep=LINE]\n"
          "           [--val_fraction=F] [--shard_tokens=N] FILE...\n"
          "           text files to token shards (bytes, or a BPE vocabulary\n"
          "           of N)\n"
          "  train    [CONFIG.ini] [--key=value ...]\n"
          "           train a GPT (run under mpirun for several ranks)\n"
          "  sample   --ckpt PATH|RUN_DIR [--prompt=TEXT] [--tokens=N]\n"
          "           [--temperature=T] [--top_k=K] [--top_p=P] [--seed=S]\n"
          "           generate text with a KV cache\n"
          "  ckpt     info|verify PATH|RUN_DIR, list RUN_DIR\n"
          "           a checkpoint's step, config and tensors; verify its\n"
          "           checksums; list a run's checkpoints with status\n"
          "  bench    gemm | step [CONFIG] [--key=value ...] | allreduce\n"
          "           | ckpt: sgemm peak; a training step's speed, MFU,\n"
          "           time split and memory; all-reduce algorithms and\n"
          "           codecs; checkpoint I/O.  Last line: one JSON object\n"
          "  predict  --calibrate=FILE | --calib=FILE [CONFIG] [--key=value]\n"
          "           [--measured=CSV] [--extrapolate] [--layouts]: the\n"
          "           performance model, calibrated here: a layout's step\n"
          "           time, a sweep against it, GPT-2 on 4096 nodes\n"
          "  topo     [CONFIG] [--key=value ...] [--np=N] [--json]\n"
          "           [--calibrate] [--xml=FILE] [--export=FILE]\n"
          "           the node's topology, every rank's binding, the\n"
          "           binding plan, each rank's measured speed\n"
          "\n"
          "mpitron " PACKAGE_VERSION "\n",
          f);
}

static int cmd_train(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: mpitron train [CONFIG.ini] [--key=value ...]\n\n"
               "Trains a GPT on the token shards in `data`.  Run it under\n"
               "mpirun; dp defaults to the number of ranks.  Keys (INI\n"
               "sections optional; the command line overrides the file):\n\n");
        config_print_help(stdout);
        return 0;
    }
    struct config c;
    char err[1024];
    config_defaults(&c);
    if (config_parse_args(&c, argc, argv, NULL, NULL, err, sizeof(err)) < 0 ||
        config_finalize(&c, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 2;
    }
    /* layout=auto sizes the model: vocab_size = 0 is resolved first */
    if (!strcmp(c.layout, "auto") &&
        (data_spec_vocab(c.data, &c.vocab_size, 0, err, sizeof(err)) < 0 ||
         perf_layout_auto(&c, MPI_COMM_WORLD, err, sizeof(err)) < 0)) {
        log_error("%s", err);
        return 1;
    }
    return train_main(&c);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("mpitron %s\n", PACKAGE_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "prepare")) /* no MPI needed */
        return cmd_prepare(argc - 2, argv + 2);
    if (!strcmp(cmd, "train"))
        train_signals_install();
    int provided;
    /* MULTIPLE: ckpt_async=1 writes checkpoints from a second thread */
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int rc;
    if (!strcmp(cmd, "train"))
        rc = cmd_train(argc - 2, argv + 2);
    else if (!strcmp(cmd, "sample"))
        rc = cmd_sample(argc - 2, argv + 2);
    else if (!strcmp(cmd, "ckpt"))
        rc = cmd_ckpt(argc - 2, argv + 2);
    else if (!strcmp(cmd, "bench"))
        rc = cmd_bench(argc - 2, argv + 2);
    else if (!strcmp(cmd, "predict"))
        rc = cmd_predict(argc - 2, argv + 2);
    else if (!strcmp(cmd, "topo"))
        rc = cmd_topo(argc - 2, argv + 2);
    else {
        log_error("unknown command '%s'", cmd);
        usage(stderr);
        rc = 2;
    }
    MPI_Finalize();
    return rc;
}
