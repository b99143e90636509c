/*
 * cli.h - the subcommands other than train, and the small option parser
 * they share.  Each cmd_* takes the arguments after its name and returns
 * the process exit status (0 ok, 1 failure, 2 usage error).
 */
#ifndef MPITRON_CLI_H
#define MPITRON_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "mpitron_config.h"

int cmd_prepare(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_ckpt(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* `mpitron predict`, in perf/predict.c */
int cmd_predict(int argc, char **argv);
/* `mpitron topo`, in topo_cmd.c */
int cmd_topo(int argc, char **argv);
/* `bench gemm`, in bench_gemm.c */
int bench_gemm(int argc, char **argv);
/* `bench allreduce`, in bench_comm.c */
int bench_allreduce(int argc, char **argv);
/* Seconds per sum all-reduce of `bytes` over g (the slowest rank's, mean
 * of iters after a warm-up; iters 0 = by size), by kind: an algorithm
 * (mpi, ring, rhd, hier), "MPI_Allreduce" (blocking), or a codec spec.
 * *wire (may be NULL): bytes this rank sent; *median (may be NULL): the
 * median iteration.  -1 for an unknown kind or out of memory.
 * Collective over g.  In bench_comm.c; predict --calibrate uses it too. */
struct comm_group;
double bench_comm_time(const struct comm_group *g, const char *kind,
                       size_t bytes, long iters, uint64_t *wire,
                       double *median);
/* `bench ckpt`, in bench_ckpt.c */
int bench_ckpt(int argc, char **argv);

/* 1 if --help or -h is among the arguments. */
int cli_wants_help(int argc, char **argv);

/*
 * Options of a subcommand: names (without dashes, NULL-terminated) and
 * their values (filled with pointers into argv, or left as set by the
 * caller as defaults).  Accepts --name=value and --name value; arguments
 * not starting with "--" are collected in pos[] (at most maxpos).
 * Returns the number of positionals, or -1 with err naming the unknown
 * option and the nearest known one.
 */
int cli_parse(int argc, char **argv, const char *const *names,
              const char **vals, const char **pos, int maxpos, char *err,
              size_t errlen);

/* Strict numeric parsing of an option value; -1 with err on garbage. */
int cli_int(const char *name, const char *s, long *out, char *err,
            size_t errlen);
int cli_double(const char *name, const char *s, double *out, char *err,
               size_t errlen);

#endif
