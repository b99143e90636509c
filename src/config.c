/*
 * config.c - the run configuration.  The table config_keys[] is the single
 * source of truth: defaults, parsing, per-key checks, --help and the INI
 * text stored in checkpoints all walk it.  Adding a key is adding a field
 * to struct config and one row below.
 *
 * Longer than ~800 lines on purpose: the table alone is ~100 lines, and
 * splitting the INI/argv parsers from it would split one concept.
 */
#include "config.h"

#include "batch.h"
#include "codec.h"
#include "gemm.h"
#include "mix.h"
#include "pp.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CMDLINE "command line"

/* ---- small helpers ------------------------------------------------------ */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void *field(struct config *c, const struct config_key *k)
{
    return (char *)c + k->offset;
}

static const void *cfield(const struct config *c, const struct config_key *k)
{
    return (const char *)c + k->offset;
}

static int get_int(const struct config *c, const struct config_key *k)
{
    int v;
    memcpy(&v, cfield(c, k), sizeof v);
    return v;
}

static float get_float(const struct config *c, const struct config_key *k)
{
    float v;
    memcpy(&v, cfield(c, k), sizeof v);
    return v;
}

/* ---- per-key checks (reason only; the caller adds key/value/source) ---- */

static const char *get_str(const struct config *c,
                           const struct config_key *k)
{
    return cfield(c, k);
}

#define CHECK(fn, type, get, ok, why)                                         \
    static int fn(const struct config *c, const struct config_key *k,         \
                  char *err, size_t errlen)                                   \
    {                                                                         \
        type v = get(c, k);                                                   \
        if (ok)                                                               \
            return 0;                                                         \
        seterr(err, errlen, why);                                             \
        return -1;                                                            \
    }
CHECK(check_pos, int, get_int, v > 0, "must be > 0")
CHECK(check_nonneg, int, get_int, v >= 0, "must be >= 0")
CHECK(check_micro_batch, int, get_int, v >= 0 || v == CONFIG_MB_AUTO,
      "must be auto or >= 0")
CHECK(check_fpos, float, get_float, v > 0.0f, "must be > 0")
CHECK(check_fnonneg, float, get_float, v >= 0.0f, "must be >= 0")
CHECK(check_unit, float, get_float, v >= 0.0f && v < 1.0f, /* dropout, betas */
      "must be in [0, 1)")
CHECK(check_nonempty, const char *, get_str, *v != '\0', "must not be empty")
#undef CHECK

static const char *const lr_schedules[] = {"constant", "cosine", "linear",
                                           "onecycle", "cyclic", NULL};

static int check_schedule(const struct config *c, const struct config_key *k,
                          char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    for (int i = 0; lr_schedules[i]; i++)
        if (strcmp(v, lr_schedules[i]) == 0)
            return 0;
    seterr(err, errlen,
           "must be one of constant, cosine, linear, onecycle, cyclic");
    return -1;
}

static int check_batch_spec(const struct config *c,
                            const struct config_key *k, char *err,
                            size_t errlen)
{
    int a, b;
    return batch_spec_parse(cfield(c, k), &a, &b, err, errlen);
}

static int check_data(const struct config *c, const struct config_key *k,
                      char *err, size_t errlen)
{
    struct data_spec sp;
    if (!*(const char *)cfield(c, k)) {
        seterr(err, errlen, "must not be empty");
        return -1;
    }
    return data_spec_parse(cfield(c, k), &sp, err, errlen);
}

static int check_attn(const struct config *c, const struct config_key *k,
                      char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (!strcmp(v, "full") || !strcmp(v, "linear") || !strcmp(v, "sparse"))
        return 0;
    seterr(err, errlen, "must be one of full, linear, sparse");
    return -1;
}

static const char *const optimizer_names[] = {"adamw", "lamb", "onebit_adam",
                                              NULL};

static int check_optimizer(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    for (int i = 0; optimizer_names[i]; i++)
        if (strcmp(v, optimizer_names[i]) == 0)
            return 0;
    seterr(err, errlen, "must be one of adamw, lamb, onebit_adam");
    return -1;
}

static int check_decay(const struct config *c, const struct config_key *k,
                       char *err, size_t errlen)
{
    float v = get_float(c, k);
    if (v > 0.0f && v <= 1.0f)
        return 0;
    seterr(err, errlen, "must be in (0, 1]");
    return -1;
}

static const char *const allreduce_names[] = {"auto", "mpi", "ring", "rhd",
                                              "hier", NULL};

static int check_allreduce(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    for (int i = 0; allreduce_names[i]; i++)
        if (strcmp(v, allreduce_names[i]) == 0)
            return 0;
    seterr(err, errlen, "must be one of auto, mpi, ring, rhd, hier");
    return -1;
}

static int check_layout(const struct config *c, const struct config_key *k,
                        char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (!strcmp(v, "manual") || !strcmp(v, "auto"))
        return 0;
    seterr(err, errlen, "must be manual or auto");
    return -1;
}

static int check_pp_schedule(const struct config *c,
                             const struct config_key *k, char *err,
                             size_t errlen)
{
    enum pp_kind kind;
    if (pp_kind_parse(cfield(c, k), &kind) == 0)
        return 0;
    seterr(err, errlen, "must be gpipe or 1f1b");
    return -1;
}

static int check_nonfinite(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (!strcmp(v, "skip") || !strcmp(v, "rollback") || !strcmp(v, "abort"))
        return 0;
    seterr(err, errlen, "must be one of skip, rollback, abort");
    return -1;
}

/* "" or "R:STEP" (R >= 0, STEP >= 1). */
static int check_debug_hang(const struct config *c,
                            const struct config_key *k, char *err,
                            size_t errlen)
{
    const char *v = cfield(c, k);
    int r, n = 0;
    long long s;
    if (!*v)
        return 0;
    if (sscanf(v, "%d:%lld%n", &r, &s, &n) == 2 && v[n] == '\0' && r >= 0 &&
        s >= 1)
        return 0;
    seterr(err, errlen, "must be RANK:STEP (RANK >= 0, STEP >= 1)");
    return -1;
}

/* "" or "R:STEP:grad" / "R:STEP:weight" (R >= 0, STEP >= 1). */
static int check_debug_nan(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    int r, n = 0;
    long long s;
    char what[8];
    if (!*v)
        return 0;
    if (sscanf(v, "%d:%lld:%7[a-z]%n", &r, &s, what, &n) == 3 &&
        v[n] == '\0' && r >= 0 && s >= 1 &&
        (!strcmp(what, "grad") || !strcmp(what, "weight")))
        return 0;
    seterr(err, errlen, "must be RANK:STEP:grad or RANK:STEP:weight");
    return -1;
}

static int check_precision(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (strcmp(v, "fp32") == 0 || strcmp(v, "bf16") == 0)
        return 0;
    seterr(err, errlen, "must be fp32 or bf16");
    return -1;
}

static int check_fp32_gemm(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    enum gemm_fp32_mode mode;
    if (gemm_fp32_mode_parse(cfield(c, k), &mode) == 0)
        return 0;
    seterr(err, errlen, "must be auto, openblas or onednn");
    return -1;
}

static int check_compress(const struct config *c, const struct config_key *k,
                          char *err, size_t errlen)
{
    struct codec_ctx ctx;
    char e[256];
    if (codec_parse(cfield(c, k), &ctx, e, sizeof(e)) == 0)
        return 0;
    seterr(err, errlen, "%s", e);
    return -1;
}

static int check_bind(const struct config *c, const struct config_key *k,
                      char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (!strcmp(v, "auto") || !strcmp(v, "launcher") || !strcmp(v, "none"))
        return 0;
    seterr(err, errlen, "must be auto, launcher or none");
    return -1;
}

int config_int_list(const char *s, int *out, int max)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > INT_MAX || errno == ERANGE ||
            isspace((unsigned char)*p) || (*end && *end != ','))
            return -1;
        if (n < max)
            out[n] = (int)x;
        n++;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return -1; /* a trailing comma */
    }
    return n > 0 ? n : -1;
}

static int check_pp_partition(const struct config *c,
                              const struct config_key *k, char *err,
                              size_t errlen)
{
    const char *v = cfield(c, k);
    int dummy;
    if (!strcmp(v, "auto") || !strcmp(v, "params") ||
        config_int_list(v, &dummy, 1) > 0)
        return 0;
    seterr(err, errlen, "must be auto, params, or the blocks of each "
           "stage as positive integers (4,4,3,1)");
    return -1;
}

static int check_balance(const struct config *c, const struct config_key *k,
                         char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (!strcmp(v, "off") || !strcmp(v, "on"))
        return 0;
    seterr(err, errlen, "must be off or on");
    return -1;
}

static int check_ratio(const struct config *c, const struct config_key *k,
                       char *err, size_t errlen)
{
    if (get_float(c, k) > 1.0f)
        return 0;
    seterr(err, errlen, "must be > 1");
    return -1;
}

int config_slow_rank(const char *s, int *rank, double *factor)
{
    *rank = -1;
    *factor = 1.0;
    if (!*s)
        return 0;
    char *end;
    errno = 0;
    long r = strtol(s, &end, 10);
    if (end == s || *end != ':' || r < 0 || r > INT_MAX || errno ||
        isspace((unsigned char)*s))
        return -1;
    const char *f = end + 1;
    double x = strtod(f, &end);
    if (end == f || *end || !(x >= 1.0) || x > 1000.0 ||
        isspace((unsigned char)*f))
        return -1;
    *rank = (int)r;
    *factor = x;
    return 0;
}

static int check_slow_rank(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    int r;
    double f;
    if (config_slow_rank(cfield(c, k), &r, &f) == 0)
        return 0;
    seterr(err, errlen, "must be RANK:FACTOR, a rank >= 0 and a factor in "
           "[1, 1000] (\"\" = off)");
    return -1;
}

static int check_zero(const struct config *c, const struct config_key *k,
                      char *err, size_t errlen)
{
    int v = get_int(c, k);
    if (v >= 0 && v <= 3)
        return 0;
    seterr(err, errlen, "must be 0, 1, 2 or 3");
    return -1;
}

static int check_recompute(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (!strcmp(v, "none") || !strcmp(v, "selective") || !strcmp(v, "full"))
        return 0;
    seterr(err, errlen, "must be none, selective or full");
    return -1;
}

static int check_offload(const struct config *c, const struct config_key *k,
                         char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    if (!strcmp(v, "none") || !strcmp(v, "optimizer"))
        return 0;
    seterr(err, errlen, "must be none or optimizer");
    return -1;
}

/* ---- the table ----------------------------------------------------------- */

#define KEY(sec, f, type, def, help, check)                                   \
    {#f, sec, type, offsetof(struct config, f),                               \
     sizeof(((struct config *)0)->f), def, help, check}

const struct config_key config_keys[] = {
    KEY("model", n_layer, CONFIG_INT, "4", "transformer blocks", check_pos),
    KEY("model", n_embd, CONFIG_INT, "256", "embedding width (channels)",
        check_pos),
    KEY("model", n_head, CONFIG_INT, "4", "attention (query) heads",
        check_pos),
    KEY("model", n_kv_head, CONFIG_INT, "0",
        "key/value heads: 0 = n_head, fewer = grouped-query, "
        "1 = multi-query",
        check_nonneg),
    KEY("model", seq_len, CONFIG_INT, "128", "context length in tokens",
        check_pos),
    KEY("model", vocab_size, CONFIG_INT, "0",
        "vocabulary size; 0 = from the data directory (its merges.txt, "
        "256 for byte shards, 50257 for llm.c's GPT-2 shards)",
        check_nonneg),
    KEY("model", attn_window, CONFIG_INT, "0",
        "0 = full causal attention, W = sliding window of W tokens",
        check_nonneg),
    KEY("model", attn, CONFIG_STR, "full",
        "full (softmax over every earlier position, or attn_window of "
        "them) | linear (causal linear attention, elu+1 features, running "
        "sums: O(T)) | sparse (block-sparse: own and previous block plus "
        "every attn_stride-th block); linear and sparse are fp32 only",
        check_attn),
    KEY("model", attn_block, CONFIG_INT, "64",
        "attn=sparse: positions per block", check_pos),
    KEY("model", attn_stride, CONFIG_INT, "4",
        "attn=sparse: every attn_stride-th block (block 0 included) is "
        "seen by all later positions", check_pos),
    KEY("model", dropout, CONFIG_FLOAT, "0.0",
        "dropout probability, in [0, 1)", check_unit),
    KEY("optim", batch_size, CONFIG_INT, "8",
        "global batch: sequences per step over all data-parallel ranks",
        check_pos),
    KEY("optim", micro_batch, CONFIG_INT, "0",
        "sequences per rank per forward/backward; 0 = the whole per-rank "
        "batch (accumulation covers the rest); auto = the largest divisor "
        "of it whose computed memory (the banner's total) fits "
        "mem_budget_mb", check_micro_batch),
    KEY("optim", batch_ramp, CONFIG_STR, "0",
        "START:STEPS: the global batch grows from START sequences to "
        "batch_size over STEPS steps, in whole micro-batches per rank; "
        "0 = off", check_batch_spec),
    KEY("optim", seq_len_warmup, CONFIG_STR, "0",
        "START:STEPS: sequences of START = seq_len/2^K tokens first, "
        "doubling in K equal stages up to seq_len at step STEPS, tokens "
        "per step kept constant; 0 = off", check_batch_spec),
    KEY("optim", steps, CONFIG_INT, "1000", "optimizer steps", check_pos),
    KEY("optim", lr, CONFIG_FLOAT, "1e-3", "peak learning rate", check_fpos),
    KEY("optim", min_lr, CONFIG_FLOAT, "1e-4",
        "final learning rate of the decaying schedules", check_fnonneg),
    KEY("optim", warmup_steps, CONFIG_INT, "100", "steps of warm-up",
        check_nonneg),
    KEY("optim", lr_schedule, CONFIG_STR, "cosine",
        "constant | cosine | linear | onecycle | cyclic", check_schedule),
    KEY("optim", lr_cycle, CONFIG_INT, "100",
        "cyclic schedule: steps per half cycle", check_pos),
    KEY("optim", weight_decay, CONFIG_FLOAT, "0.1",
        "AdamW decoupled weight decay", check_fnonneg),
    KEY("optim", beta1, CONFIG_FLOAT, "0.9",
        "AdamW first-moment decay, in [0, 1)", check_unit),
    KEY("optim", beta2, CONFIG_FLOAT, "0.95",
        "AdamW second-moment decay, in [0, 1)", check_unit),
    KEY("optim", eps, CONFIG_FLOAT, "1e-8", "AdamW denominator epsilon",
        check_fpos),
    KEY("optim", grad_clip, CONFIG_FLOAT, "1.0",
        "clip the global gradient norm to this; 0 = off", check_fnonneg),
    KEY("optim", optimizer, CONFIG_STR, "adamw",
        "adamw | lamb (AdamW's direction scaled per tensor by the trust "
        "ratio ||p||/||u||) | onebit_adam (1-bit Adam: AdamW for "
        "compress_warmup steps, then the second moment frozen and, with "
        "compress at dp > 1, the momentum all-reduced compressed with error "
        "feedback instead of the gradient)", check_optimizer),
    KEY("optim", lr_layer_decay, CONFIG_FLOAT, "1.0",
        "layer-wise learning-rate decay d in (0, 1]: block l of L gets "
        "lr * d^(L-1-l), the embeddings wte and wpe lr * d^L, the final "
        "LayerNorm lr; 1 = off", check_decay),
    KEY("optim", label_smoothing, CONFIG_FLOAT, "0.0",
        "label smoothing s in [0, 1): the training loss mixes s of the "
        "uniform distribution into the target (validation stays plain "
        "cross-entropy)", check_unit),
    KEY("optim", z_loss, CONFIG_FLOAT, "0.0",
        "z-loss coefficient: adds z_loss * logsumexp(logits)^2 per token "
        "to the training loss (PaLM uses 1e-4); 0 = off", check_fnonneg),
    KEY("optim", seed, CONFIG_U64, "1337",
        "seed of every random stream (init, data order, dropout)", NULL),
    KEY("optim", nonfinite, CONFIG_STR, "skip",
        "a step whose loss or gradient norm is not finite: skip (the update; "
        "nonfinite_patience in a row stop the run) | rollback (after "
        "nonfinite_patience in a row, reload the newest good checkpoint and "
        "skip those batches) | abort", check_nonfinite),
    KEY("optim", nonfinite_patience, CONFIG_INT, "3",
        "consecutive non-finite steps before skip stops the run or rollback "
        "rolls back", check_pos),
    KEY("optim", spike_zscore, CONFIG_FLOAT, "0",
        "a loss this many standard deviations above the mean of the last "
        "100 steps counts as non-finite; 0 = off", check_fnonneg),
    KEY("optim", precision, CONFIG_STR, "fp32",
        "fp32 | bf16: bf16 = mixed precision, products on bf16 inputs with "
        "fp32 accumulation, fp32 master weights, gradients and AdamW (needs "
        "AVX512_BF16 or AMX; else trains in fp32 with a warning); attn=full "
        "only", check_precision),
    KEY("data", data, CONFIG_STR, "data/fortunes",
        "directory of train_NNN.bin / val_NNN.bin token shards; or a "
        "weighted mixture DIR:W,DIR:W,... (each sequence drawn from one "
        "with probability W / sum W, a validation loss per directory)",
        check_data),
    KEY("data", val_every, CONFIG_INT, "100",
        "validate every N steps; 0 = only at the end", check_nonneg),
    KEY("data", val_batches, CONFIG_INT, "8", "batches per validation",
        check_pos),
    KEY("data", doc_mask, CONFIG_INT, "0",
        "1 = attention and position embeddings stop at document starts "
        "(the data's train.docs / val.docs, written by prepare)",
        check_nonneg),
    KEY("run", run_dir, CONFIG_STR, "runs/default",
        "directory for checkpoints and metrics.jsonl", check_nonempty),
    KEY("run", log_every, CONFIG_INT, "10", "progress line every N steps",
        check_pos),
    KEY("run", ckpt_every, CONFIG_INT, "0",
        "checkpoint every N steps; 0 = only at the end", check_nonneg),
    KEY("run", stop_at_step, CONFIG_INT, "0",
        "save and exit after this step (0 = run to steps); splits one run "
        "across jobs without changing its schedule", check_nonneg),
    KEY("run", keep_last, CONFIG_INT, "0",
        "keep the newest K checkpoints, delete older ones after a save "
        "commits; 0 = keep all", check_nonneg),
    KEY("run", keep_every, CONFIG_INT, "0",
        "never delete checkpoints whose step is a multiple of M "
        "(milestones); 0 = none", check_nonneg),
    KEY("run", ckpt_async, CONFIG_INT, "0",
        "1 = copy tensors to memory and write the checkpoint while "
        "training continues", check_nonneg),
    KEY("run", resume, CONFIG_STR, "auto",
        "auto (newest good checkpoint in run_dir) | never | PATH",
        check_nonempty),
    KEY("run", init_from, CONFIG_STR, "",
        "checkpoint to load weights from, fresh optimizer; \"\" = none",
        NULL),
    KEY("run", threads, CONFIG_INT, "0",
        "BLAS/OpenMP threads per rank; 0 = one per core the rank holds "
        "(an exported OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is respected)",
        check_nonneg),
    KEY("run", bind, CONFIG_STR, "auto",
        "auto (a rank left unbound, or not bound to its share of the "
        "node's cores, binds itself to disjoint cores) | launcher (keep "
        "the launcher's binding) | none (touch nothing)", check_bind),
    KEY("run", debug_nan, CONFIG_STR, "",
        "testing: R:STEP:grad makes rank R's gradient NaN at step STEP, "
        "R:STEP:weight a weight (once per process); \"\" = off",
        check_debug_nan),
    KEY("run", hang_timeout, CONFIG_INT, "600",
        "seconds a rank may go without progress (stuck in a collective, a "
        "transfer, I/O); then every rank reports what it waits for, writes "
        "run_dir/hang_rank_R.txt and the job aborts; 0 = off", check_nonneg),
    KEY("run", debug_hang, CONFIG_STR, "",
        "testing: R:STEP stops rank R's progress at step STEP; \"\" = off",
        check_debug_hang),
    KEY("run", fp32_gemm, CONFIG_STR, "auto",
        "library of fp32 products: auto (oneDNN where `mpitron bench gemm` "
        "measures it faster: AVX-512 CPUs) | openblas | onednn",
        check_fp32_gemm),
    KEY("run", recompute, CONFIG_STR, "none",
        "activation recomputation: none | selective (keep the matmul "
        "outputs, recompute attention, GELU and LayerNorm outputs in "
        "backward) | full (keep each block's input, recompute the block)",
        check_recompute),
    KEY("run", offload, CONFIG_STR, "none",
        "none | optimizer: AdamW moments (with zero >= 1 this rank's shard) "
        "in a file in offload_dir, streamed through the update", check_offload),
    KEY("run", offload_dir, CONFIG_STR, "",
        "directory for offload=optimizer, on node-local disk; \"\" = $TMPDIR "
        "or /tmp", NULL),
    KEY("run", mem_budget_mb, CONFIG_INT, "0",
        "per-rank memory budget in MiB for the computed total (parameters, "
        "gradients, optimizer, activations, scratch, communication "
        "buffers): micro_batch=auto picks the largest micro-batch within "
        "it, and a layout above it is refused; 0 = none", check_nonneg),
    KEY("parallel", dp, CONFIG_INT, "0",
        "data-parallel ranks; 0 = world / (tp * pp)", check_nonneg),
    KEY("parallel", tp, CONFIG_INT, "1", "tensor-parallel ranks", check_pos),
    KEY("parallel", pp, CONFIG_INT, "1", "pipeline stages", check_pos),
    KEY("parallel", pp_schedule, CONFIG_STR, "1f1b",
        "pipeline schedule: gpipe (all forwards, then all backwards) | 1f1b "
        "(one forward one backward: at most pp micro-batches of "
        "activations held)", check_pp_schedule),
    KEY("parallel", ranks_per_node, CONFIG_INT, "0",
        "group ranks into nodes of N consecutive ranks (emulates several "
        "nodes on one machine); 0 = real shared-memory nodes", check_nonneg),
    KEY("parallel", allreduce, CONFIG_STR, "auto",
        "gradient all-reduce: mpi | ring | rhd | hier | auto", check_allreduce),
    KEY("parallel", allreduce_tune, CONFIG_STR, "",
        "thresholds file for allreduce=auto, written by `mpitron bench "
        "allreduce --tune=FILE`; \"\" = built-in", NULL),
    KEY("parallel", bucket_mb, CONFIG_FLOAT, "25",
        "gradient bucket size in MiB: a bucket's reduction starts as soon "
        "as its last gradient is final", check_fpos),
    KEY("parallel", compress, CONFIG_STR, "none",
        "gradient compression: none | fp16 | bf16 | topk:RATIO | "
        "powersgd:RANK | sign (lossy ones with error feedback)",
        check_compress),
    KEY("parallel", compress_warmup, CONFIG_INT, "0",
        "dense steps before compression starts", check_nonneg),
    KEY("parallel", pp_partition, CONFIG_STR, "auto",
        "pipeline stage boundaries: auto (minimise the slowest stage's "
        "calibrated time) | params (balance parameter counts) | blocks per "
        "stage, e.g. 4,4,3,1", check_pp_partition),
    KEY("parallel", balance, CONFIG_STR, "off",
        "on: each data-parallel rank takes sequences in proportion to its "
        "calibrated speed (whole sequences, at least one) | off: equal "
        "shares", check_balance),
    KEY("parallel", straggler_ratio, CONFIG_FLOAT, "1.2",
        "name a rank whose compute time per step exceeds this times the "
        "median of all ranks (progress line, metrics.jsonl)", check_ratio),
    KEY("parallel", rebalance_every, CONFIG_INT, "0",
        "re-split the data-parallel shares every N steps from the measured "
        "step times; 0 = never", check_nonneg),
    KEY("parallel", debug_slow_rank, CONFIG_STR, "",
        "test knob: R:F makes rank R F times slower by repeating its "
        "kernels (emulated heterogeneity); \"\" = off", check_slow_rank),
    KEY("parallel", layout, CONFIG_STR, "manual",
        "manual: dp, tp, pp and micro_batch as given | auto: the fastest "
        "layout the performance model predicts that fits in memory (sets "
        "dp, tp, pp, and micro_batch when it is 0)", check_layout),
    KEY("parallel", perf_calib, CONFIG_STR, "",
        "calibration file of `mpitron predict --calibrate` for layout=auto; "
        "\"\" = a quick calibration at start-up", NULL),
    KEY("parallel", zero, CONFIG_INT, "0",
        "ZeRO over each stage's dp group: 0 off | 1 AdamW moments sharded | "
        "2 also gradients | 3 also parameters (gathered per block)",
        check_zero),
};

const int config_nkeys = (int)(sizeof config_keys / sizeof config_keys[0]);

static const char *const sections[] = {"model", "optim", "data", "run",
                                       "parallel", NULL};

#undef KEY

/* ---- lookup and suggestions --------------------------------------------- */

static const struct config_key *key_find(const char *name)
{
    for (int i = 0; i < config_nkeys; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

int config_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int *row = malloc((lb + 1) * sizeof *row);
    if (!row)
        return INT_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0]; /* d[i-1][j-1] */
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j]; /* d[i-1][j] */
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    int d = row[lb];
    free(row);
    return d;
}

/* Nearest of the config keys and the extra options to name, or NULL when
 * nothing is within max(2, len/3) edits.  Ties go to the first found. */
static const char *name_suggest(const char *name, const char *const *extra)
{
    const char *best = NULL;
    int bestd = INT_MAX, nextra = 0;
    while (extra && extra[nextra])
        nextra++;
    for (int i = 0; i < config_nkeys + nextra; i++) {
        const char *cand = i < config_nkeys ? config_keys[i].name
                                            : extra[i - config_nkeys];
        int d = config_edit_distance(name, cand);
        if (d < bestd) {
            bestd = d;
            best = cand;
        }
    }
    int lim = (int)(strlen(name) / 3);
    if (lim < 2)
        lim = 2;
    return bestd <= lim ? best : NULL;
}

static void unknown_key_err(const char *name, const char *where,
                            const char *const *extra, char *err,
                            size_t errlen)
{
    const char *s = name_suggest(name, extra);
    if (s)
        seterr(err, errlen, "unknown key '%s' (%s); did you mean '%s'?", name,
               where, s);
    else
        seterr(err, errlen, "unknown key '%s' (%s); see --help", name, where);
}

/* ---- values ----------------------------------------------------------- */

/* Parse value into the field of k.  Returns 0, or -1 with the reason. */
static int value_parse(struct config *c, const struct config_key *k,
                       const char *v, char *why, size_t whylen)
{
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case CONFIG_INT: {
        if (strcmp(k->name, "micro_batch") == 0 && strcmp(v, "auto") == 0) {
            int i = CONFIG_MB_AUTO;
            memcpy(field(c, k), &i, sizeof i);
            return 0;
        }
        long x = strtol(v, &end, 10);
        if (end == v || *end || isspace((unsigned char)*v)) {
            seterr(why, whylen, "expected an integer");
            return -1;
        }
        if (errno == ERANGE || x < INT_MIN || x > INT_MAX) {
            seterr(why, whylen, "integer out of range [%d, %d]", INT_MIN,
                   INT_MAX);
            return -1;
        }
        int i = (int)x;
        memcpy(field(c, k), &i, sizeof i);
        return 0;
    }
    case CONFIG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || isspace((unsigned char)*v) || *v == '-') {
            seterr(why, whylen, "expected a non-negative integer");
            return -1;
        }
        if (errno == ERANGE) {
            seterr(why, whylen, "integer out of range [0, %" PRIu64 "]",
                   UINT64_MAX);
            return -1;
        }
        uint64_t u = (uint64_t)x;
        memcpy(field(c, k), &u, sizeof u);
        return 0;
    }
    case CONFIG_FLOAT: {
        float f = strtof(v, &end);
        if (end == v || *end || isspace((unsigned char)*v)) {
            seterr(why, whylen, "expected a number");
            return -1;
        }
        if (!isfinite(f)) {
            seterr(why, whylen, "expected a finite number (float range)");
            return -1;
        }
        memcpy(field(c, k), &f, sizeof f);
        return 0;
    }
    case CONFIG_STR: {
        size_t n = strlen(v);
        if (n >= k->size) {
            seterr(why, whylen, "longer than %zu characters", k->size - 1);
            return -1;
        }
        for (const char *p = v; *p; p++)
            if (iscntrl((unsigned char)*p)) {
                seterr(why, whylen, "contains a control character");
                return -1;
            }
        if (strchr(v, '"') && strchr(v, '\'')) {
            seterr(why, whylen, "contains both ' and \" (not representable "
                                "in the INI text)");
            return -1;
        }
        /* zero the whole field so equal configs are bytewise equal */
        memset(field(c, k), 0, k->size);
        memcpy(field(c, k), v, n);
        return 0;
    }
    }
    seterr(why, whylen, "internal error: bad key type");
    return -1;
}

int config_set(struct config *c, const char *key, const char *value,
               const char *where, char *err, size_t errlen)
{
    if (!where)
        where = "config";
    const struct config_key *k = key_find(key);
    if (!k) {
        unknown_key_err(key, where, NULL, err, errlen);
        return -1;
    }
    char why[256];
    struct config tmp;
    memcpy(&tmp, c, sizeof tmp);
    if (value_parse(&tmp, k, value, why, sizeof why) != 0 ||
        (k->check && k->check(&tmp, k, why, sizeof why) != 0)) {
        /* a long value is cut so that the reason still fits in err */
        int cut = strlen(value) > 80;
        seterr(err, errlen, "bad value '%.*s%s' for key '%s' (%s): %s",
               cut ? 72 : 80, value, cut ? "..." : "", key, where, why);
        return -1;
    }
    memcpy(field(c, k), cfield(&tmp, k), k->size);
    return 0;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c); /* padding too: equal configs memcmp equal */
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        char why[256];
        if (value_parse(c, k, k->def, why, sizeof why) != 0) {
            /* a broken table is a programming error, not an input error */
            fprintf(stderr, "%s:%d: default '%s' of key '%s': %s\n",
                    __FILE__, __LINE__, k->def, k->name, why);
            abort();
        }
    }
}

/* The value of k in c as text (floats %.9g: exact round trip). */
static void value_format(const struct config *c, const struct config_key *k,
                         char *buf, size_t len)
{
    switch (k->type) {
    case CONFIG_INT:
        if (strcmp(k->name, "micro_batch") == 0 &&
            get_int(c, k) == CONFIG_MB_AUTO)
            snprintf(buf, len, "auto");
        else
            snprintf(buf, len, "%d", get_int(c, k));
        break;
    case CONFIG_U64: {
        uint64_t u;
        memcpy(&u, cfield(c, k), sizeof u);
        snprintf(buf, len, "%" PRIu64, u);
        break;
    }
    case CONFIG_FLOAT:
        snprintf(buf, len, "%.9g", (double)get_float(c, k));
        break;
    case CONFIG_STR:
        snprintf(buf, len, "%s", (const char *)cfield(c, k));
        break;
    }
}

/* ---- INI ------------------------------------------------------------------ */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* v is trimmed text after '='.  A value in '...' or "..." is taken
 * literally; otherwise '#' or ';' after whitespace starts a comment. */
static int ini_value(char *v, char **out, char *why, size_t whylen)
{
    if (*v == '"' || *v == '\'') {
        char *close = strchr(v + 1, *v);
        if (!close) {
            seterr(why, whylen, "unterminated %c quote", *v);
            return -1;
        }
        *close = '\0';
        char *rest = trim(close + 1);
        if (*rest && *rest != '#' && *rest != ';') {
            seterr(why, whylen, "text after the closing quote: '%s'", rest);
            return -1;
        }
        *out = v + 1;
        return 0;
    }
    for (char *p = v; *p; p++)
        if ((*p == '#' || *p == ';') &&
            (p == v || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    *out = trim(v);
    return 0;
}

static int ini_section(char *line, const char *where, char *err,
                       size_t errlen)
{
    char *close = strchr(line, ']');
    char *rest = close ? trim(close + 1) : NULL;
    if (!close || (*rest && *rest != '#' && *rest != ';')) {
        seterr(err, errlen, "malformed section header '%s' (%s)", line,
               where);
        return -1;
    }
    *close = '\0';
    char *name = trim(line + 1);
    for (int i = 0; sections[i]; i++)
        if (strcmp(name, sections[i]) == 0)
            return 0;
    seterr(err, errlen,
           "unknown section '[%s]' (%s); sections are model, optim, data, "
           "run, parallel",
           name, where);
    return -1;
}

/* One trimmed, non-empty, non-comment line. */
static int ini_line(struct config *c, char *line, const char *where,
                    char *err, size_t errlen)
{
    if (*line == '[')
        return ini_section(line, where, err, errlen);
    char *eq = strchr(line, '=');
    if (!eq) {
        seterr(err, errlen, "expected 'key = value' or '[section]', got "
                            "'%s' (%s)", line, where);
        return -1;
    }
    *eq = '\0';
    char *key = trim(line), *value, why[256];
    if (!*key) {
        seterr(err, errlen, "missing key before '=' (%s)", where);
        return -1;
    }
    if (ini_value(trim(eq + 1), &value, why, sizeof why) != 0) {
        seterr(err, errlen, "bad value for key '%s' (%s): %s", key, where,
               why);
        return -1;
    }
    return config_set(c, key, value, where, err, errlen);
}

int config_load_text(struct config *c, const char *text, const char *name,
                     char *err, size_t errlen)
{
    if (!name)
        name = "config text";
    char *buf = strdup(text);
    if (!buf) {
        seterr(err, errlen, "%s: out of memory", name);
        return -1;
    }
    struct config tmp;
    memcpy(&tmp, c, sizeof tmp); /* memcpy, not =: padding is copied too */
    int rc = 0, lineno = 0;
    char *line = buf;
    if ((unsigned char)line[0] == 0xEF && (unsigned char)line[1] == 0xBB &&
        (unsigned char)line[2] == 0xBF)
        line += 3; /* UTF-8 byte order mark */
    while (line && rc == 0) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        char *t = trim(line);
        if (*t && *t != '#' && *t != ';') {
            char where[CONFIG_STR_MAX + 32];
            snprintf(where, sizeof where, "%s:%d", name, lineno);
            rc = ini_line(&tmp, t, where, err, errlen);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
    if (rc == 0)
        memcpy(c, &tmp, sizeof *c);
    return rc;
}

int config_load_file(struct config *c, const char *path, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, errlen, "cannot open config file '%s': %s", path,
               strerror(errno));
        return -1;
    }
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    int rc = -1;
    while (text) {
        len += fread(text + len, 1, cap - 1 - len, f);
        if (len < cap - 1)
            break;
        char *bigger = realloc(text, cap *= 2);
        if (!bigger)
            free(text);
        text = bigger;
    }
    if (!text)
        seterr(err, errlen, "config file '%s': out of memory", path);
    else if (ferror(f))
        seterr(err, errlen, "cannot read config file '%s': %s", path,
               strerror(errno));
    else {
        text[len] = '\0';
        rc = config_load_text(c, text, path, err, errlen);
    }
    free(text);
    fclose(f);
    return rc;
}

/* ---- command line --------------------------------------------------------- */

struct arg {
    char name[128]; /* without dashes, before any '=' */
    const char *value; /* NULL for a positional */
    int extra;         /* index into extra, or -1 for a config key */
};

static int extra_find(const char *const *extra, const char *name)
{
    for (int i = 0; extra && extra[i]; i++)
        if (strcmp(extra[i], name) == 0)
            return i;
    return -1;
}

/* Classify argv[*i] into a, advancing *i past a separate value.  Returns
 * 0 (a->value == NULL for a positional) or -1 with err filled. */
static int arg_take(int argc, char **argv, int *i, const char *const *extra,
                    struct arg *a, char *err, size_t errlen)
{
    const char *s = argv[*i];
    a->value = NULL;
    a->extra = -1;
    if (s[0] != '-' || s[1] == '\0')
        return 0; /* positional ("-" alone included) */
    if (s[1] != '-' || s[2] == '\0') {
        seterr(err, errlen, "unexpected argument '%s' (%s): options are "
                            "--key=value or --key value", s, CMDLINE);
        return -1;
    }
    const char *eq = strchr(s + 2, '=');
    size_t n = eq ? (size_t)(eq - (s + 2)) : strlen(s + 2);
    if (n >= sizeof a->name)
        n = sizeof a->name - 1;
    memcpy(a->name, s + 2, n);
    a->name[n] = '\0';
    a->extra = extra_find(extra, a->name);
    if (a->extra < 0 && !key_find(a->name)) {
        unknown_key_err(a->name, CMDLINE, extra, err, errlen);
        return -1;
    }
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (eq) {
        a->value = eq + 1;
    } else if (a->extra >= 0) {
        /* a bare flag, unless a non-option word follows */
        if (next && next[0] != '-') {
            a->value = next;
            (*i)++;
        } else {
            a->value = "1";
        }
    } else if (next && !(next[0] == '-' && next[1] == '-')) {
        a->value = next; /* "-1" is a value, "--x" is not */
        (*i)++;
    } else {
        seterr(err, errlen, "missing value for key '%s' (%s): use --%s=VALUE",
               a->name, CMDLINE, a->name);
        return -1;
    }
    return 0;
}

/* Pass 1: check every argument and find the one positional INI file. */
static int args_scan(int argc, char **argv, const char *const *extra,
                     const char **ini, char *err, size_t errlen)
{
    struct arg a;
    *ini = NULL;
    for (int i = 0; i < argc; i++) {
        if (arg_take(argc, argv, &i, extra, &a, err, errlen) != 0)
            return -1;
        if (a.value)
            continue;
        if (*ini) {
            seterr(err, errlen, "more than one config file on the %s: "
                                "'%s' and '%s'", CMDLINE, *ini, argv[i]);
            return -1;
        }
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            seterr(err, errlen, "config file '%s' (%s): %s", argv[i],
                   CMDLINE, strerror(errno));
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            seterr(err, errlen, "config file '%s' (%s): not a regular file",
                   argv[i], CMDLINE);
            return -1;
        }
        *ini = argv[i];
    }
    return 0;
}

int config_parse_args(struct config *c, int argc, char **argv,
                      const char *const *extra, const char **extra_vals,
                      char *err, size_t errlen)
{
    const char *ini;
    if (args_scan(argc, argv, extra, &ini, err, errlen) != 0)
        return -1;
    struct config tmp;
    memcpy(&tmp, c, sizeof tmp);
    if (ini && config_load_file(&tmp, ini, err, errlen) != 0)
        return -1;
    struct arg a;
    for (int i = 0; i < argc; i++) {
        if (arg_take(argc, argv, &i, extra, &a, err, errlen) != 0)
            return -1;
        if (!a.value)
            continue;
        if (a.extra >= 0) {
            if (extra_vals)
                extra_vals[a.extra] = a.value;
        } else if (config_set(&tmp, a.name, a.value, CMDLINE, err,
                              errlen) != 0) {
            return -1;
        }
    }
    memcpy(c, &tmp, sizeof *c);
    return 0;
}

/* ---- cross-key checks ------------------------------------------------------ */

static int finalize_model(const struct config *c, char *err, size_t errlen)
{
    if (c->n_embd % c->n_head != 0) {
        seterr(err, errlen, "n_embd=%d is not divisible by n_head=%d",
               c->n_embd, c->n_head);
        return -1;
    }
    if (c->n_kv_head > c->n_head) {
        seterr(err, errlen, "n_kv_head=%d exceeds n_head=%d", c->n_kv_head,
               c->n_head);
        return -1;
    }
    if (c->n_kv_head > 0 && c->n_head % c->n_kv_head != 0) {
        seterr(err, errlen, "n_head=%d is not divisible by n_kv_head=%d",
               c->n_head, c->n_kv_head);
        return -1;
    }
    if (strcmp(c->attn, "full") != 0 && c->attn_window > 0) {
        seterr(err, errlen, "attn_window=%d applies to attn=full only "
               "(attn=%s)", c->attn_window, c->attn);
        return -1;
    }
    if (c->pp > c->n_layer) {
        seterr(err, errlen, "pp=%d exceeds n_layer=%d: every pipeline "
                            "stage needs at least one layer", c->pp,
               c->n_layer);
        return -1;
    }
    return 0;
}

/* An explicit pp_partition: one entry per stage, the blocks adding up. */
static int finalize_partition(const struct config *c, char *err,
                              size_t errlen)
{
    if (!strcmp(c->pp_partition, "auto") ||
        !strcmp(c->pp_partition, "params"))
        return 0;
    int b[1024], n = config_int_list(c->pp_partition, b, 1024), sum = 0;
    for (int i = 0; i < n && i < 1024; i++)
        sum += b[i];
    if (n != c->pp) {
        seterr(err, errlen, "pp_partition=%s has %d entries: it needs one "
               "per pipeline stage (pp=%d)", c->pp_partition, n, c->pp);
        return -1;
    }
    if (sum != c->n_layer) {
        seterr(err, errlen, "pp_partition=%s places %d blocks: it must "
               "place all n_layer=%d", c->pp_partition, sum, c->n_layer);
        return -1;
    }
    return 0;
}

/* Load balance (balance=on, rebalance_every) against the batch plan and
 * micro_batch=auto; the micro-batch divides the batch unless balanced
 * (shares of any size, micro-batches up to micro_batch). */
static int finalize_balance(const struct config *c, char *err, size_t errlen)
{
    int balanced = !strcmp(c->balance, "on") || c->rebalance_every > 0;
    char bkey[48];
    if (!strcmp(c->balance, "on"))
        snprintf(bkey, sizeof bkey, "balance=on");
    else
        snprintf(bkey, sizeof bkey, "rebalance_every=%d", c->rebalance_every);
    int ramp = c->batch_ramp[0] && strcmp(c->batch_ramp, "0") != 0;
    int slw = c->seq_len_warmup[0] && strcmp(c->seq_len_warmup, "0") != 0;
    if (balanced && (ramp || slw)) {
        /* shares by speed are cut from the full batch; the plan's smaller
         * or reshaped steps are cut in equal slices */
        const char *k = ramp ? "batch_ramp" : "seq_len_warmup";
        seterr(err, errlen, "%s=%s with %s: the batch plan's smaller or "
               "reshaped steps are split equally over the data-parallel "
               "ranks, the balanced shares only the full batch; use %s=0 "
               "(or balance=off and rebalance_every=0)", k,
               ramp ? c->batch_ramp : c->seq_len_warmup, bkey, k);
        return -1;
    }
    if (balanced && c->micro_batch == CONFIG_MB_AUTO) {
        seterr(err, errlen, "micro_batch=auto with %s: the shares by speed "
               "are measured at the chosen micro-batch; give micro_batch "
               "(or balance=off and rebalance_every=0)", bkey);
        return -1;
    }
    if (!balanced && c->micro_batch > 0 &&
        c->batch_size % c->micro_batch != 0) {
        seterr(err, errlen, "micro_batch=%d does not divide batch_size=%d",
               c->micro_batch, c->batch_size);
        return -1;
    }
    return 0;
}

int config_finalize(struct config *c, char *err, size_t errlen)
{
    /* per-key checks again: fields may have been set directly */
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        char why[256], val[CONFIG_STR_MAX];
        if (k->check && k->check(c, k, why, sizeof why) != 0) {
            value_format(c, k, val, sizeof val);
            seterr(err, errlen, "%s=%s: %s", k->name, val, why);
            return -1;
        }
    }
    if (finalize_model(c, err, errlen) != 0 ||
        finalize_partition(c, err, errlen) != 0)
        return -1;
    if (c->zero > 0 && strcmp(c->compress, "none") != 0) {
        /* every codec keeps an error-feedback residual as large as the
         * whole gradient and ends with the whole decoded sum on every
         * rank: the memory and the reduce-scatter ZeRO is for */
        seterr(err, errlen, "compress=%s with zero=%d: ZeRO reduce-scatters "
               "the gradient, and every codec is an all-reduce with a "
               "residual the size of the whole gradient; use compress=none "
               "(or zero=0)", c->compress, c->zero);
        return -1;
    }
    int sharded = c->zero > 0 || strcmp(c->offload, "optimizer") == 0;
    if (sharded && strcmp(c->optimizer, "adamw") != 0) {
        /* the shards' update is AdamW's, element by element; LAMB needs
         * whole-tensor norms and 1-bit Adam the bucketer's momentum */
        seterr(err, errlen, "optimizer=%s with zero=%d offload=%s: ZeRO and "
               "offload update their shards with AdamW only; use "
               "optimizer=adamw (or zero=0 and offload=none)", c->optimizer,
               c->zero, c->offload);
        return -1;
    }
    if (strcmp(c->precision, "bf16") == 0 && strcmp(c->attn, "full") != 0) {
        /* bf16 kernels exist for full attention (window, doc_mask) only */
        seterr(err, errlen, "precision=bf16 with attn=%s: the linear and "
               "sparse attention kernels are fp32 only; use attn=full (or "
               "precision=fp32)", c->attn);
        return -1;
    }
    if (c->zero > 0 && strcmp(c->batch_ramp, "0") != 0) {
        seterr(err, errlen, "batch_ramp=%s with zero=%d: ZeRO plans its "
               "reductions for a fixed number of micro-batches per step; "
               "use zero=0 (or batch_ramp=0)", c->batch_ramp, c->zero);
        return -1;
    }
    if (c->micro_batch == CONFIG_MB_AUTO && c->mem_budget_mb == 0) {
        seterr(err, errlen, "micro_batch=auto needs mem_budget_mb > 0: the "
               "per-rank memory the micro-batch must fit");
        return -1;
    }
    if (finalize_balance(c, err, errlen) != 0)
        return -1;
    if (strcmp(c->lr_schedule, "constant") != 0 && c->min_lr > c->lr) {
        seterr(err, errlen, "min_lr=%.9g exceeds lr=%.9g (lr_schedule=%s)",
               (double)c->min_lr, (double)c->lr, c->lr_schedule);
        return -1;
    }
    if (strcmp(c->optimizer, "onebit_adam") == 0) {
        if (c->compress_warmup < 1) {
            seterr(err, errlen, "optimizer=onebit_adam needs "
                   "compress_warmup >= 1: AdamW steps that estimate the "
                   "second moment before it is frozen");
            return -1;
        }
        if ((c->pp > 1 || c->tp > 1) && strcmp(c->compress, "none") != 0) {
            seterr(err, errlen, "optimizer=onebit_adam with compress=%s "
                   "needs tp=1 and pp=1 (here tp=%d pp=%d): it reduces "
                   "the momentum, which the tied embedding's two stages "
                   "would each add, and bounds the gradient norm by "
                   "ranks' local norms that tp ranks do not share",
                   c->compress, c->tp, c->pp);
            return -1;
        }
    }
    if (c->n_kv_head == 0)
        c->n_kv_head = c->n_head;
    return 0;
}

/* ---- output ------------------------------------------------------------- */

char *config_to_text(const struct config *c)
{
    size_t cap = 1;
    for (int i = 0; i < config_nkeys; i++) /* "\n[section]\n" + line */
        cap += strlen(config_keys[i].section) + 4 +
               strlen(config_keys[i].name) + 6 + CONFIG_STR_MAX + 32;
    char *out = malloc(cap), val[CONFIG_STR_MAX];
    if (!out)
        return NULL;
    size_t n = 0;
    const char *sec = NULL;
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        if (!sec || strcmp(sec, k->section) != 0) {
            n += (size_t)snprintf(out + n, cap - n, "%s[%s]\n",
                                  sec ? "\n" : "", k->section);
            sec = k->section;
        }
        value_format(c, k, val, sizeof val);
        if (k->type == CONFIG_STR) {
            char q = strchr(val, '"') ? '\'' : '"';
            n += (size_t)snprintf(out + n, cap - n, "%s = %c%s%c\n", k->name,
                                  q, val, q);
        } else {
            n += (size_t)snprintf(out + n, cap - n, "%s = %s\n", k->name,
                                  val);
        }
    }
    return out;
}

int config_diff_model(const struct config *a, const struct config *b,
                      char *out, size_t outlen)
{
    int ndiff = 0;
    size_t n = 0;
    if (out && outlen)
        out[0] = '\0';
    for (int i = 0; i < config_nkeys; i++) {
        const struct config_key *k = &config_keys[i];
        /* the shape keys: every int of [model] (dropout is the float) */
        if (strcmp(k->section, "model") != 0 || k->type != CONFIG_INT)
            continue;
        int va = get_int(a, k), vb = get_int(b, k);
        if (k->offset == offsetof(struct config, n_kv_head)) {
            va = va ? va : a->n_head; /* compare resolved values */
            vb = vb ? vb : b->n_head;
        }
        if (va == vb)
            continue;
        if (out && n < outlen) {
            int w = snprintf(out + n, outlen - n, "%s%s", ndiff ? ", " : "",
                             k->name);
            n += w > 0 ? (size_t)w : 0;
        }
        ndiff++;
    }
    return ndiff;
}

static const char *const type_names[] = {
    [CONFIG_INT] = "<int>", [CONFIG_U64] = "<int>",
    [CONFIG_FLOAT] = "<float>", [CONFIG_STR] = "<str>"};

void config_print_help(FILE *f)
{
    int w1 = 0, w2 = 0;
    char opt[160], def[CONFIG_STR_MAX + 16];
    for (int pass = 0; pass < 2; pass++) {
        const char *sec = NULL;
        for (int i = 0; i < config_nkeys; i++) {
            const struct config_key *k = &config_keys[i];
            int l1 = snprintf(opt, sizeof opt, "--%s=%s", k->name,
                              type_names[k->type]);
            int l2 = snprintf(def, sizeof def, *k->def ? "(default %s)"
                                                       : "(default \"%s\")",
                              k->def);
            if (pass == 0) {
                w1 = l1 > w1 ? l1 : w1;
                w2 = l2 > w2 ? l2 : w2;
                continue;
            }
            if (!sec || strcmp(sec, k->section) != 0) {
                fprintf(f, "%s[%s]\n", sec ? "\n" : "", k->section);
                sec = k->section;
            }
            fprintf(f, "  %-*s  %-*s  %s\n", w1, opt, w2, def, k->help);
        }
    }
}
