/*
 * gemm.c - the GEMM front door (contract in gemm.h): OpenBLAS sgemm, or a
 * oneDNN 2.x matmul primitive from a cache keyed by shape and thread count.
 *
 * oneDNN side (C API of oneDNN 2.6, dnnl.h):
 *  - one CPU engine for the process;
 *  - per shape and OpenMP thread count (omp_get_max_threads(): oneDNN
 *    sizes a primitive's work split for the threads there are when it is
 *    created and runs on that many ever after, so a primitive made at 1
 *    thread and reused after threads_set(2) ran on one core -- the
 *    calibration of `mpitron predict` at threads_list=1,2 timed its
 *    2-thread figures at 1 thread, and the one made at 2 threads ran
 *    slower than a 1-thread primitive after threads_set(1)): memory
 *    descriptors by strides (a transposed operand is
 *    the same buffer with its two strides swapped, so backward's A^T B
 *    and A B^T need no copies), a matmul descriptor, attributes (alpha as
 *    a common output scale, accumulation as a sum post-op, scratchpad in
 *    user mode), the primitive descriptor (asked for its implementation
 *    name and scratchpad size) and the primitive, created once;
 *  - per call: the entry's memory objects for the calling thread pointed
 *    at the caller's buffers, the primitive executed on the calling
 *    thread's stream with the calling thread's scratchpad.
 * The cache is a hash table under one mutex; entries never move or die
 * before gemm_cache_clear, so the lock is held only for the lookup, and
 * each thread remembers its last few entries and finds them without the
 * lock.  The memory objects of a call are kept per entry and thread and
 * only re-pointed at the next call's buffers: a 64 x 64 x 64 product
 * takes about 2 us, and creating and destroying five memory objects with
 * their allocations around it cost about as much (measured with perf).
 *
 * fp32 mode auto: oneDNN's fp32 matmul where bench gemm measured it faster
 * than OpenBLAS.  On the AVX-512 machine this was developed on (OpenBLAS
 * 0.3.21 runs its Haswell kernels there), oneDNN's f32 brgemm was 1.4-2x
 * faster than sgemm for every product of a GPT layer from 64 x 64 x 64 up
 * (README, "Mixed precision"), and slower only for products too small to
 * matter (below AUTO_MIN_FLOP), so auto picks oneDNN on CPUs where oneDNN
 * runs AVX-512 and the product is at least AUTO_MIN_FLOP, OpenBLAS
 * elsewhere.  The rule depends only on the shape and the CPU, never on a
 * timing taken at run time, so a resumed run makes the same choices and
 * continues bit for bit.
 */
#include "gemm.h"

#include <cblas.h>
#include <dnnl.h>
#include <mpi.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "log.h"

/* products below this many multiply-adds stay on OpenBLAS in auto mode */
#define AUTO_MIN_FLOP ((int64_t)64 * 64 * 64)

/* ---- errors ---------------------------------------------------------- */

static _Noreturn void fatal_at(const char *file, int line, const char *fmt,
                               ...) __attribute__((format(printf, 3, 4)));

static _Noreturn void fatal_at(const char *file, int line, const char *fmt,
                               ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mpitron: %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        MPI_Abort(MPI_COMM_WORLD, 3);
    abort();
}
#define FATAL(...) fatal_at(__FILE__, __LINE__, __VA_ARGS__)

static void desc_text(const struct gemm_desc *d, char *s, size_t n)
{
    snprintf(s, n, "%s%s %lldx%lldx%lld ld %lld,%lld,%lld %s->%s%s%s%s",
             d->ta ? "A^T" : "A", d->tb ? "B^T" : "B", (long long)d->M,
             (long long)d->N, (long long)d->K, (long long)d->lda,
             (long long)d->ldb, (long long)d->ldc,
             d->in == GEMM_BF16 ? "bf16" : "f32",
             d->out == GEMM_BF16 ? "bf16" : "f32",
             d->accumulate ? " +=" : "", d->bias ? " +bias" : "",
             d->add ? " +D" : "");
}

/* ---- engine, fp32 mode, ISA ---------------------------------------------- */

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;
static dnnl_status_t engine_status;

static void engine_init(void)
{
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
}

static dnnl_engine_t get_engine(void)
{
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success)
        FATAL("oneDNN: no CPU engine (status %d)", (int)engine_status);
    return engine;
}

static enum gemm_fp32_mode fp32_mode = GEMM_FP32_AUTO;
static const char *const mode_names[] = {"auto", "openblas", "onednn"};

int gemm_fp32_mode_parse(const char *name, enum gemm_fp32_mode *mode)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, mode_names[i]) == 0) {
            *mode = (enum gemm_fp32_mode)i;
            return 0;
        }
    return -1;
}

const char *gemm_fp32_mode_name(enum gemm_fp32_mode mode)
{
    return mode_names[mode];
}

void gemm_set_fp32_mode(enum gemm_fp32_mode mode)
{
    fp32_mode = mode;
}

enum gemm_fp32_mode gemm_get_fp32_mode(void)
{
    return fp32_mode;
}

static int isa_has(unsigned bits)
{
    return ((unsigned)dnnl_get_effective_cpu_isa() & bits) == bits;
}

const char *gemm_onednn_isa(void)
{
    static const struct { unsigned isa; const char *name; } t[] = {
        {dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"},
        {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"},
        {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"},
        {dnnl_cpu_isa_avx512_core, "avx512_core"},
        {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"},
        {dnnl_cpu_isa_avx2, "avx2"},
        {dnnl_cpu_isa_avx, "avx"},
        {dnnl_cpu_isa_sse41, "sse41"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (isa_has(t[i].isa))
            return t[i].name;
    return "none";
}

int gemm_bf16_supported(char *why, size_t whylen)
{
    if (isa_has(dnnl_cpu_isa_avx512_core_bf16))
        return 1;
    if (why)
        snprintf(why, whylen, "oneDNN's CPU ISA here is %s: no AVX512_BF16 "
                 "or AMX instructions for bf16 products",
                 gemm_onednn_isa());
    return 0;
}

enum gemm_backend gemm_backend_of(const struct gemm_desc *d)
{
    if (d->in == GEMM_BF16 || d->out == GEMM_BF16)
        return GEMM_ONEDNN;
    if (d->backend != GEMM_ANY)
        return d->backend;
    switch (fp32_mode) {
    case GEMM_FP32_OPENBLAS:
        return GEMM_OPENBLAS;
    case GEMM_FP32_ONEDNN:
        return GEMM_ONEDNN;
    default:
        return isa_has(dnnl_cpu_isa_avx512_core) &&
                       d->M * d->N * d->K >= AUTO_MIN_FLOP
                   ? GEMM_ONEDNN
                   : GEMM_OPENBLAS;
    }
}

/* ---- per-thread state ------------------------------------------------------ */

/* Threads with their own slot in every cache entry (memory objects kept
 * between calls); further threads still work, creating them per call. */
#define MAX_SLOTS 64
/* Entries a thread remembers without taking the lock. */
#define RECENT 8
/* Arguments of a product: A, B, C, scratchpad, bias, D (gemm_add). */
#define NARG 6

struct entry;

struct gemm_thread {
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_bytes;
    int slot;                     /* index into entry.mem, or -1 */
    unsigned gen;                 /* cache generation recent[] belongs to */
    struct entry *recent[RECENT]; /* the last entries used, newest first */
    struct gemm_thread *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct gemm_thread *threads; /* every thread's state, under mu */
static int nslots;                  /* slots handed out, under mu */
static unsigned generation = 1;     /* bumped by gemm_cache_clear */
static _Thread_local struct gemm_thread *self;

static struct gemm_thread *thread_state(void)
{
    struct gemm_thread *t = self;
    if (!t) {
        t = calloc(1, sizeof(*t));
        if (!t)
            FATAL("out of memory for a thread's oneDNN state");
        pthread_mutex_lock(&mu);
        t->next = threads;
        threads = t;
        t->slot = nslots < MAX_SLOTS ? nslots++ : -1;
        pthread_mutex_unlock(&mu);
        self = t;
    }
    if (!t->stream && dnnl_stream_create(&t->stream, get_engine(),
                                         dnnl_stream_default_flags) !=
                          dnnl_success)
        FATAL("oneDNN: cannot create a stream");
    return t;
}

static void *thread_scratch(struct gemm_thread *t, size_t bytes)
{
    if (bytes > t->scratch_bytes) {
        free(t->scratch);
        t->scratch = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!t->scratch)
            FATAL("out of memory for a %zu-byte oneDNN scratchpad", bytes);
        t->scratch_bytes = bytes;
    }
    return t->scratch;
}

/* ---- the primitive cache ------------------------------------------------- */

/* What a primitive is made for: the product (padding zeroed, backend
 * resolved, so that keys compare with memcmp) and the OpenMP threads. */
struct gemm_key {
    struct gemm_desc d;
    int nthr;
};

struct entry {
    struct gemm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t md[NARG]; /* A, B, C, scratchpad, bias, D */
    size_t scratch_bytes;
    char impl[64];
    dnnl_memory_t mem[MAX_SLOTS][NARG]; /* per thread slot, made on use */
};

static struct entry **table; /* open addressing, cap a power of two */
static size_t cap, count;

/* d's key at the current OpenMP thread count, every byte defined */
static void key_of(const struct gemm_desc *d, struct gemm_key *key)
{
    memset(key, 0, sizeof(*key));
    key->nthr = omp_get_max_threads();
    struct gemm_desc *k = &key->d;
    k->ta = !!d->ta;
    k->tb = !!d->tb;
    k->M = d->M, k->N = d->N, k->K = d->K;
    k->lda = d->lda, k->ldb = d->ldb, k->ldc = d->ldc;
    k->in = d->in, k->out = d->out;
    k->alpha = d->alpha;
    k->accumulate = !!d->accumulate;
    k->bias = !!d->bias;
    k->add = !!d->add;
    k->backend = GEMM_ONEDNN;
}

static size_t key_hash(const struct gemm_key *k)
{
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < sizeof(*k); i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return (size_t)(h ^ (h >> 29));
}

static void md_strided(dnnl_memory_desc_t *md, int64_t rows, int64_t cols,
                       int trans, int64_t ld, enum gemm_type t)
{
    /* logical (rows, cols); stored row-major with row stride ld, or
     * stored transposed (cols, rows) with row stride ld */
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    if (dnnl_memory_desc_init_by_strides(md, 2, dims,
                                         t == GEMM_BF16 ? dnnl_bf16
                                                        : dnnl_f32,
                                         strides) != dnnl_success)
        FATAL("oneDNN: bad memory descriptor %lldx%lld ld %lld",
              (long long)rows, (long long)cols, (long long)ld);
}

static dnnl_primitive_attr_t make_attr(const struct gemm_desc *k,
                                       const dnnl_memory_desc_t *dmd)
{
    dnnl_primitive_attr_t attr;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    int ok = dnnl_primitive_attr_set_scratchpad_mode(
                 attr, dnnl_scratchpad_mode_user) == dnnl_success;
    if (ok && k->alpha != 1.0f)
        ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha) ==
             dnnl_success;
    if (ok && (k->accumulate || k->add)) {
        dnnl_post_ops_t po;
        ok = dnnl_post_ops_create(&po) == dnnl_success;
        if (ok) {
            ok = (k->accumulate
                      ? dnnl_post_ops_append_sum(po, 1.0f)
                      : dnnl_post_ops_append_binary(po, dnnl_binary_add,
                                                    dmd)) == dnnl_success &&
                 dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
            dnnl_post_ops_destroy(po);
        }
    }
    if (!ok) {
        dnnl_primitive_attr_destroy(attr);
        return NULL;
    }
    return attr;
}

static struct entry *entry_create(const struct gemm_key *key)
{
    const struct gemm_desc *k = &key->d;
    char what[160];
    desc_text(k, what, sizeof(what));
    if ((k->accumulate || k->add) && k->out == GEMM_BF16)
        FATAL("gemm %s: accumulation and + D need an fp32 C", what);
    if (k->accumulate && k->add)
        FATAL("gemm %s: += and + D together", what);
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        FATAL("out of memory creating the product %s", what);
    e->key = *key;
    md_strided(&e->md[0], k->M, k->K, k->ta, k->lda, k->in);
    md_strided(&e->md[1], k->K, k->N, k->tb, k->ldb, k->in);
    md_strided(&e->md[2], k->M, k->N, 0, k->ldc, k->out);
    md_strided(&e->md[4], 1, k->N, 0, k->N, GEMM_F32);
    md_strided(&e->md[5], k->M, k->N, 0, k->ldc, GEMM_F32);
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = make_attr(k, &e->md[5]);
    dnnl_primitive_desc_t pd = NULL;
    if (!attr ||
        dnnl_matmul_desc_init(&md, &e->md[0], &e->md[1],
                              k->bias ? &e->md[4] : NULL,
                              &e->md[2]) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &md, attr, get_engine(), NULL) !=
            dnnl_success)
        FATAL("oneDNN has no matmul for %s", what);
    dnnl_primitive_attr_destroy(attr);
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(e->impl, sizeof(e->impl), "%s", impl);
    const dnnl_memory_desc_t *smd =
        dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (smd) {
        e->md[3] = *smd;
        e->scratch_bytes = dnnl_memory_desc_get_size(smd);
    }
    if (dnnl_primitive_create(&e->prim, pd) != dnnl_success)
        FATAL("oneDNN cannot create the matmul %s (%s)", what, e->impl);
    dnnl_primitive_desc_destroy(pd);
    return e;
}

static void entry_destroy(struct entry *e)
{
    for (int s = 0; s < MAX_SLOTS; s++)
        for (int i = 0; i < NARG; i++)
            if (e->mem[s][i])
                dnnl_memory_destroy(e->mem[s][i]);
    dnnl_primitive_destroy(e->prim);
    free(e);
}

static int table_grow(void)
{
    size_t ncap = cap ? 2 * cap : 256;
    struct entry **nt = calloc(ncap, sizeof(*nt));
    if (!nt)
        return -1;
    for (size_t i = 0; i < cap; i++) {
        if (!table[i])
            continue;
        size_t h = key_hash(&table[i]->key) & (ncap - 1);
        while (nt[h])
            h = (h + 1) & (ncap - 1);
        nt[h] = table[i];
    }
    free(table);
    table = nt;
    cap = ncap;
    return 0;
}

/* The entry for key k, created on first use: first from the thread's
 * recent entries (no lock), else from the table. */
static struct entry *entry_get(struct gemm_thread *t, const struct gemm_key *k)
{
    if (t->gen == __atomic_load_n(&generation, __ATOMIC_ACQUIRE))
        for (int i = 0; i < RECENT && t->recent[i]; i++)
            if (memcmp(&t->recent[i]->key, k, sizeof(*k)) == 0) {
                struct entry *e = t->recent[i];
                memmove(&t->recent[1], &t->recent[0], i * sizeof(e));
                t->recent[0] = e;
                return e;
            }
    size_t hash = key_hash(k);
    pthread_mutex_lock(&mu);
    if (t->gen != generation) {
        memset(t->recent, 0, sizeof(t->recent));
        t->gen = generation;
    }
    if (2 * (count + 1) > cap && table_grow() < 0)
        FATAL("out of memory growing the gemm cache");
    size_t h = hash & (cap - 1);
    while (table[h] && memcmp(&table[h]->key, k, sizeof(*k)) != 0)
        h = (h + 1) & (cap - 1);
    if (!table[h]) {
        table[h] = entry_create(k); /* under the lock: rare, and creation
                                       must not race with itself */
        count++;
    }
    struct entry *e = table[h];
    pthread_mutex_unlock(&mu);
    memmove(&t->recent[1], &t->recent[0], (RECENT - 1) * sizeof(e));
    t->recent[0] = e;
    return e;
}

size_t gemm_cache_size(void)
{
    pthread_mutex_lock(&mu);
    size_t n = count;
    pthread_mutex_unlock(&mu);
    return n;
}

void gemm_cache_clear(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < cap; i++)
        if (table[i])
            entry_destroy(table[i]);
    free(table);
    table = NULL;
    cap = count = 0;
    __atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
    /* thread states stay allocated (their threads point at them) but lose
     * their stream and scratchpad; the next call recreates them */
    for (struct gemm_thread *t = threads; t; t = t->next) {
        if (t->stream)
            dnnl_stream_destroy(t->stream);
        free(t->scratch);
        t->stream = NULL;
        t->scratch = NULL;
        t->scratch_bytes = 0;
    }
    pthread_mutex_unlock(&mu);
}

const char *gemm_impl(const struct gemm_desc *d)
{
    if (gemm_backend_of(d) == GEMM_OPENBLAS)
        return "openblas";
    struct gemm_key k;
    key_of(d, &k);
    return entry_get(thread_state(), &k)->impl;
}

/* ---- execution ------------------------------------------------------------ */

/* A memory object of e for argument i wrapping p: the thread slot's, kept
 * between calls (only its pointer changes), or a new one (*own set: the
 * caller destroys it). */
static dnnl_memory_t wrap(struct entry *e, int slot, int i, const void *p,
                          int *own)
{
    dnnl_memory_t *m = slot >= 0 ? &e->mem[slot][i] : NULL;
    *own = !m;
    if (m && *m) {
        if (dnnl_memory_set_data_handle(*m, (void *)p) != dnnl_success)
            FATAL("oneDNN: cannot point a memory object at a buffer");
        return *m;
    }
    dnnl_memory_t n;
    if (dnnl_memory_create(&n, &e->md[i], get_engine(), (void *)p) !=
        dnnl_success)
        FATAL("oneDNN: cannot wrap a buffer");
    if (m)
        *m = n;
    return n;
}

static void onednn_run(const struct gemm_desc *d, const void *A,
                       const void *B, const float *bias, const float *D,
                       void *C)
{
    static const int arg_of[NARG] = {
        DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD,
        DNNL_ARG_BIAS, DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1};
    struct gemm_key k;
    key_of(d, &k);
    struct gemm_thread *t = thread_state();
    struct entry *e = entry_get(t, &k);
    const void *ptr[NARG] = {A, B, C, thread_scratch(t, e->scratch_bytes),
                             bias, D};
    dnnl_exec_arg_t args[NARG];
    int own[NARG], n = 0;
    for (int i = 0; i < NARG; i++) {
        if ((i == 4 && !k.d.bias) || (i == 5 && !k.d.add))
            continue;
        args[n].arg = arg_of[i];
        args[n].memory = wrap(e, t->slot, i, ptr[i], &own[n]);
        n++;
    }
    dnnl_status_t s = dnnl_primitive_execute(e->prim, t->stream, n, args);
    if (s == dnnl_success)
        s = dnnl_stream_wait(t->stream);
    for (int i = 0; i < n; i++)
        if (own[i])
            dnnl_memory_destroy(args[i].memory);
    if (s != dnnl_success) {
        char what[160];
        desc_text(d, what, sizeof(what));
        FATAL("oneDNN matmul %s (%s) failed with status %d", what, e->impl,
              (int)s);
    }
}

/* C (M,N) += D, D with C's row stride: the order of oneDNN's binary
 * post-op (product + bias first, then D).  OpenMP only while OpenBLAS
 * runs one thread, as the element-wise ops (ops_internal.h: two thread
 * pools taking turns on the same cores cost 50x the work). */
static void add_rows(const struct gemm_desc *d, const float *D, float *C)
{
    int64_t M = d->M, N = d->N, ldc = d->ldc;
#pragma omp parallel for schedule(static) \
    if (M * N >= (1 << 16) && openblas_get_num_threads() == 1)
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
            C[i * ldc + j] += D[i * ldc + j];
}

/* OpenBLAS: the bias goes into C first and sgemm adds to it */
static void openblas_run(const struct gemm_desc *d, const float *A,
                         const float *B, const float *bias, float *C)
{
    float beta = d->accumulate ? 1.0f : 0.0f;
    if (bias) {
        int64_t M = d->M, N = d->N, ldc = d->ldc;
        int acc = d->accumulate;
#pragma omp parallel for schedule(static) if (M * N >= (1 << 16))
        for (int64_t i = 0; i < M; i++) {
            float *c = C + i * ldc;
            if (acc)
                for (int64_t j = 0; j < N; j++)
                    c[j] += bias[j];
            else
                memcpy(c, bias, (size_t)N * sizeof(float));
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, d->ta ? CblasTrans : CblasNoTrans,
                d->tb ? CblasTrans : CblasNoTrans, (int)d->M, (int)d->N,
                (int)d->K, d->alpha, A, (int)d->lda, B, (int)d->ldb, beta, C,
                (int)d->ldc);
}

void gemm_add(const struct gemm_desc *d, const void *A, const void *B,
              const float *bias, const float *D, void *C)
{
    if ((bias != NULL) != (d->bias != 0) || (d->bias && d->alpha != 1.0f) ||
        (D != NULL) != (d->add != 0) ||
        (d->add && (d->accumulate || d->out != GEMM_F32))) {
        char what[160];
        desc_text(d, what, sizeof(what));
        FATAL("gemm %s alpha %g: bias or D pointer and desc disagree, a "
              "bias with alpha != 1, or + D with += or a bf16 C", what,
              d->alpha);
    }
    if (d->M == 0 || d->N == 0)
        return;
    if (gemm_backend_of(d) == GEMM_OPENBLAS) {
        openblas_run(d, A, B, bias, C);
        if (D)
            add_rows(d, D, C);
    } else
        onednn_run(d, A, B, bias, D, C);
}

void gemm(const struct gemm_desc *d, const void *A, const void *B,
          const float *bias, void *C)
{
    gemm_add(d, A, B, bias, NULL, C);
}

/* ---- measurement ------------------------------------------------------------ */

double gemm_measure(const struct gemm_desc *d, int reps)
{
    size_t na = (size_t)((d->ta ? d->K : d->M) * d->lda);
    size_t nb = (size_t)((d->tb ? d->N : d->K) * d->ldb);
    size_t nc = (size_t)(d->M * d->ldc);
    size_t ein = d->in == GEMM_BF16 ? 2 : 4, eout = d->out == GEMM_BF16 ? 2 : 4;
    void *A = malloc(na * ein), *B = malloc(nb * ein), *C = calloc(nc, eout);
    float *bias = d->bias ? calloc((size_t)d->N, sizeof(float)) : NULL;
    double gf = 0.0;
    if (!A || !B || !C || (d->bias && !bias))
        goto out;
    for (size_t i = 0; i < na; i++) {
        float v = (float)(i % 7) * 0.01f;
        if (d->in == GEMM_BF16)
            ((bf16 *)A)[i] = bf16_from_f32(v);
        else
            ((float *)A)[i] = v;
    }
    for (size_t i = 0; i < nb; i++) {
        float v = (float)(i % 5) * 0.01f;
        if (d->in == GEMM_BF16)
            ((bf16 *)B)[i] = bf16_from_f32(v);
        else
            ((float *)B)[i] = v;
    }
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = now_s();
        gemm(d, A, B, bias, C);
        double t = now_s() - t0;
        if (r > 0 && t < best) /* r == 0 warms up (and creates) */
            best = t;
    }
    gf = 2.0 * (double)d->M * (double)d->N * (double)d->K / best * 1e-9;
out:
    free(A);
    free(B);
    free(C);
    free(bias);
    return gf;
}

double gemm_peak_gflops(enum gemm_type in, int reps)
{
    static const int sizes[] = {1024, 1536, 2048};
    if (in == GEMM_BF16 && !gemm_bf16_supported(NULL, 0))
        return 0.0;
    double best = 0.0;
    for (int i = 0; i < 3; i++) {
        int64_t n = sizes[i];
        struct gemm_desc d = {
            .tb = 1, .M = n, .N = n, .K = n, .lda = n, .ldb = n, .ldc = n,
            .in = in, .out = GEMM_F32, .alpha = 1.0f,
        };
        double g = gemm_measure(&d, reps);
        best = g > best ? g : best;
    }
    return best;
}

double gemm_peak_quick(enum gemm_type in)
{
    if (in == GEMM_BF16 && !gemm_bf16_supported(NULL, 0))
        return 0.0;
    struct gemm_desc d = {
        .tb = 1, .M = 1536, .N = 1536, .K = 1536, .lda = 1536, .ldb = 1536,
        .ldc = 1536, .in = in, .out = GEMM_F32, .alpha = 1.0f,
    };
    return gemm_measure(&d, 4);
}
