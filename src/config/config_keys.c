/*
 * config_keys.c - the table config_keys[], the single source of truth for
 * the run configuration: defaults, parsing, per-key checks, --help and the
 * INI text stored in checkpoints all walk it.  Adding a key is adding a
 * field to struct config and one row below (and, if its values need more
 * than a range, a check above the table).
 */
#include "config_internal.h"

#include "data/batch.h"
#include "codec.h"
#include "gemm.h"
#include "data/mix.h"
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

/* ---- per-key checks (reason only; the caller adds key/value/source) ---- */

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
                                              "hier", "shm", NULL};

static int check_allreduce(const struct config *c, const struct config_key *k,
                           char *err, size_t errlen)
{
    const char *v = cfield(c, k);
    for (int i = 0; allreduce_names[i]; i++)
        if (strcmp(v, allreduce_names[i]) == 0)
            return 0;
    seterr(err, errlen, "must be one of auto, mpi, ring, rhd, hier, shm");
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
        "256 for byte shards, 50257 for llm.c's GPT-2 shards; shards with "
        "document indexes past 255 need their merges.txt)",
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
        "auto (newest good checkpoint in run_dir) | never (fresh; refused "
        "if run_dir holds checkpoints) | PATH",
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
    KEY("run", debug_hold_step, CONFIG_INT, "0",
        "testing: at the end of step N every rank waits (at most 300 s) "
        "until SIGUSR1, SIGTERM or SIGINT has arrived, so a signal sent "
        "after the job started is seen at a step boundary however fast "
        "the steps; 0 = off", check_nonneg),
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
        "gradient all-reduce: mpi | ring | rhd | hier | shm | auto (shm: "
        "the dp ranks of one node reduce in shared memory, also zero=1's "
        "reduce-scatters and gathers; auto takes it when it can)",
        check_allreduce),
    KEY("parallel", shm_dir, CONFIG_STR, "/dev/shm",
        "directory (a memory file system) of the file the dp ranks of one "
        "node map their gradients (zero=1: and parameters) from for "
        "allreduce=shm; it is removed "
        "as soon as every rank has mapped it", NULL),
    KEY("parallel", allreduce_tune, CONFIG_STR, "",
        "thresholds file for allreduce=auto, written by `mpitron bench "
        "allreduce --tune=FILE`; \"\" = built-in; one that cannot be read "
        "or parsed is an error in every layout", NULL),
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

#undef KEY
