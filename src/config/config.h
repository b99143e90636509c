/*
 * config.h - the run configuration: one table drives parsing, --help,
 * validation and the config text saved in checkpoints.
 *
 * Sources, lowest priority first: the table's defaults, an INI file
 * (`[section]` headers optional and only cosmetic; `key = value`; `#` and
 * `;` start comments), then `--key=value` (or `--key value`) arguments.
 * Every error message names the file and line or the argument, the key and
 * the value at fault; an unknown key suggests the nearest known one.
 * A function that applies values and returns -1 leaves c unchanged.
 */
#ifndef MPITRON_CONFIG_H
#define MPITRON_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_STR_MAX 512

/* micro_batch = auto: the largest micro-batch within mem_budget_mb */
#define CONFIG_MB_AUTO (-1)

struct config {
    /* [model] */
    int n_layer, n_embd, n_head;
    int n_kv_head;   /* 0 in the table means "same as n_head"; resolved */
    int seq_len, vocab_size; /* vocab_size 0 = from the data directory */
    int attn_window; /* 0 = full causal */
    char attn[16];   /* full | linear | sparse */
    int attn_block, attn_stride; /* attn=sparse */
    float dropout;
    /* [optim] */
    int batch_size;  /* global sequences per step */
    int micro_batch; /* sequences per rank per forward/backward; 0 = all,
                        CONFIG_MB_AUTO = the largest within mem_budget_mb */
    char batch_ramp[32];     /* START:STEPS | 0 (batch.h) */
    char seq_len_warmup[32]; /* START:STEPS | 0 (batch.h) */
    int steps;
    float lr, min_lr;
    int warmup_steps;
    char lr_schedule[32]; /* constant | cosine | linear | onecycle | cyclic */
    int lr_cycle;         /* cyclic: steps per half cycle */
    float weight_decay, beta1, beta2, eps, grad_clip;
    float label_smoothing, z_loss;
    char optimizer[16];   /* adamw | lamb | onebit_adam */
    float lr_layer_decay; /* 1 = off */
    uint64_t seed;
    char nonfinite[16];     /* skip | rollback | abort */
    int nonfinite_patience; /* consecutive skipped steps tolerated */
    float spike_zscore;     /* loss z-score that counts as non-finite; 0 off */
    char precision[8]; /* fp32 | bf16 (mixed: fp32 master weights) */
    /* [data] */
    char data[CONFIG_STR_MAX]; /* DIR or DIR:W,DIR:W,... (mix.h) */
    int val_every, val_batches;
    int doc_mask;    /* attention and positions stop at document starts */
    /* [run] */
    char run_dir[CONFIG_STR_MAX];
    int log_every, ckpt_every;
    int stop_at_step; /* save and exit after this step; 0 = run to steps */
    int keep_last, keep_every; /* checkpoint retention; 0 = keep all */
    int ckpt_async;
    char resume[CONFIG_STR_MAX];    /* auto | never | PATH */
    char init_from[CONFIG_STR_MAX]; /* weights only; "" = none */
    int threads; /* BLAS/OpenMP threads per rank; 0 = sized to the cores
                    held (or an exported OPENBLAS/OMP_NUM_THREADS) */
    char bind[16]; /* auto | launcher | none */
    char debug_nan[64]; /* tests: "R:STEP:grad|weight" poisons rank R */
    int hang_timeout;   /* seconds without progress before the watchdog
                           aborts the job; 0 = off */
    char debug_hang[32]; /* tests: "R:STEP" stops rank R at step STEP */
    int debug_hold_step; /* tests: every rank waits at the end of this step
                            until a stop signal has arrived; 0 = off */
    char fp32_gemm[16]; /* auto | openblas | onednn: fp32 products' library */
    char recompute[16];   /* none | selective | full */
    char offload[16];     /* none | optimizer */
    char offload_dir[CONFIG_STR_MAX]; /* "" = $TMPDIR or /tmp */
    int mem_budget_mb; /* per-rank computed memory limit, MiB; 0 = none */
    /* [parallel] */
    int dp; /* 0 = world / (tp * pp) */
    int tp, pp;
    char pp_schedule[16]; /* gpipe | 1f1b */
    int ranks_per_node;  /* 0 = shared-memory nodes */
    char allreduce[16];  /* auto | mpi | ring | rhd | hier | shm */
    char allreduce_tune[CONFIG_STR_MAX];
    char shm_dir[CONFIG_STR_MAX]; /* where shm's segments are mapped from */
    float bucket_mb;
    char compress[64];   /* none | fp16 | bf16 | topk:R | powersgd:R | sign */
    int compress_warmup;
    char pp_partition[256]; /* auto | params | blocks per stage "4,4,3,1" */
    char balance[8];        /* off | on: dp shares by calibrated speed */
    float straggler_ratio;  /* name a rank slower than this x the median */
    int rebalance_every;    /* re-split dp shares every N steps; 0 = never */
    char debug_slow_rank[32]; /* "R:F": rank R runs F times slower */
    char layout[8];           /* manual | auto (the performance model) */
    char perf_calib[CONFIG_STR_MAX]; /* predict --calibrate's file; "" */
    int zero;            /* ZeRO stage 0..3 over the dp group */
};

enum config_type { CONFIG_INT, CONFIG_U64, CONFIG_FLOAT, CONFIG_STR };

struct config_key {
    const char *name;
    const char *section; /* model, optim, data, run, parallel */
    enum config_type type;
    size_t offset;       /* offsetof(struct config, field) */
    size_t size;         /* sizeof the field (bounds CONFIG_STR values) */
    const char *def;     /* default, as text */
    const char *help;    /* one line for --help and the README table */
    /* extra check of the parsed value alone (range, enum); NULL = none.
     * Returns 0 or -1 with the reason alone in err ("must be > 0"); the
     * caller adds the key, value and source. */
    int (*check)(const struct config *c, const struct config_key *k,
                 char *err, size_t errlen);
};

extern const struct config_key config_keys[];
extern const int config_nkeys;

/* Fill c with the table's defaults. */
void config_defaults(struct config *c);

/* Parse and store one value.  where names the source for messages
 * ("run.ini:12", "command line").  Returns 0, or -1 with err filled:
 * unknown key (with the nearest key suggested) or unparsable value. */
int config_set(struct config *c, const char *key, const char *value,
               const char *where, char *err, size_t errlen);

/* Apply an INI file / INI text.  Returns 0, or -1 with err naming the
 * file (or "config text") and line. */
int config_load_file(struct config *c, const char *path, char *err,
                     size_t errlen);
int config_load_text(struct config *c, const char *text, const char *name,
                     char *err, size_t errlen);

/*
 * Command line of `train` and `bench step`: argv[0] is the first argument
 * after the subcommand.  At most one positional argument, an INI file,
 * applied first whatever its position; then every --key=value / --key value
 * in order.  Options listed in `extra` (NULL-terminated names without
 * dashes, may be NULL) are not config keys: their values are stored in
 * extra_vals[i] (pointers into argv; a bare --flag gives "1").
 * `--extra WORD` takes WORD as the value unless it starts with '-', so a
 * bare flag must not be directly followed by the INI file.  extra_vals[i]
 * is not touched when option i is absent (preset defaults there).
 * Returns 0, or -1 with err filled.
 */
int config_parse_args(struct config *c, int argc, char **argv,
                      const char *const *extra, const char **extra_vals,
                      char *err, size_t errlen);

/* Cross-key checks after all sources are applied (n_embd % n_head,
 * n_head % n_kv_head, batch sizes, ...), and resolution of the 0 = derived
 * defaults that do not need the world size (n_kv_head).  Returns 0 or -1. */
int config_finalize(struct config *c, char *err, size_t errlen);

/* The whole config as INI text with [section] headers, every key, in table
 * order.  Caller frees.  config_load_text of it reproduces c exactly
 * (floats printed with %.9g). */
char *config_to_text(const struct config *c);

/* Names of the keys that define the model (the ints of [model]: n_layer ..
 * vocab_size, attn_window, attn_block, attn_stride; and attn) whose values
 * differ between a and b, comma-separated into out ("" if none).  Returns
 * the number that differ. */
int config_diff_model(const struct config *a, const struct config *b,
                      char *out, size_t outlen);

/* A comma-separated list of positive ints ("4,4,3,1") into out[0..max):
 * returns the number of entries (which may exceed max), or -1 when
 * malformed or empty. */
int config_int_list(const char *s, int *out, int max);

/* debug_slow_rank "R:F" -> *rank = R, *factor = F; "" -> -1 and 1.
 * Returns 0, or -1 when malformed. */
int config_slow_rank(const char *s, int *rank, double *factor);

/* --help text: every key of the table with its section, default and help. */
void config_print_help(FILE *f);

/* Levenshtein distance, used for "did you mean"; exported for reuse by
 * subcommand option parsing. */
int config_edit_distance(const char *a, const char *b);

#endif
