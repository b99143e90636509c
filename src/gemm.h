/*
 * gemm.h - the one front door for matrix products: every product of the
 * model (linear layers, attention, the LM head) comes through gemm(),
 * which picks OpenBLAS sgemm or a cached oneDNN matmul primitive.
 *
 *   C (M,N) = alpha * op(A) (M,K) * op(B) (K,N)  [+ bias]  [+ C]
 *
 * All matrices row-major.  op(A) is A stored (M,K) with row stride lda,
 * or with ta, A stored (K,M) with row stride lda and read transposed;
 * likewise op(B) is B (K,N) with row stride ldb, or with tb B stored
 * (N,K).  C has row stride ldc.  bias (N floats, NULL = none) is added to
 * every row of C (only with alpha = 1: oneDNN would scale the bias too).
 * accumulate adds the product to C (beta = 1), else C is overwritten
 * (beta = 0).  With add (gemm_add), an fp32 matrix D (M,N), row stride
 * ldc, is added after the bias: C = op(A) op(B) + bias + D, each sum
 * rounded to fp32 in that order, bitwise what a separate pass adding D
 * to the product computes (a residual connection in the product's
 * epilogue: oneDNN's binary-add post-op).
 *
 * Types: A and B are both fp32 or both bf16 (bf16.h); C is fp32, or bf16
 * when not accumulating.  Every backend accumulates in fp32; a bf16 C is
 * the fp32 result rounded once by bf16.h's rules.
 *
 * Backends:
 *  - bf16 inputs: a oneDNN matmul primitive (brgemm or jit gemm kernels on
 *    AVX512_BF16 / AMX).  Primitives are created on the first call with a
 *    shape (everything in struct gemm_desc but the pointers) and kept in a
 *    cache, so a training step creates none after the first.  Needs
 *    gemm_bf16_supported().
 *  - fp32 inputs: OpenBLAS sgemm, or oneDNN's fp32 matmul where the fp32
 *    mode says so (gemm_set_fp32_mode; the default, auto, takes oneDNN
 *    where it was measured faster: see gemm.c).  A desc may force one.
 *
 * Threads: sgemm runs on OpenBLAS's thread count, oneDNN on OpenMP's
 * (omp_get_max_threads()); a call made inside an OpenMP parallel region
 * runs on its calling thread alone.  gemm() may be called from several
 * threads at once (each OS thread has its own oneDNN stream and
 * scratchpad).  Results depend on the shape, the backend and the thread
 * count, never on the data's address or on which thread runs the call.
 *
 * A oneDNN failure (no memory for a primitive, an unsupported shape) is a
 * broken invariant: the message names the shape and the process aborts
 * (MPI_Abort when MPI is up).
 */
#ifndef MPITRON_GEMM_H
#define MPITRON_GEMM_H

#include <stddef.h>
#include <stdint.h>

enum gemm_type { GEMM_F32 = 0, GEMM_BF16 = 1 };
enum gemm_backend { GEMM_ANY = 0, GEMM_OPENBLAS = 1, GEMM_ONEDNN = 2 };

struct gemm_desc {
    int ta, tb;                /* A stored (K,M) / B stored (N,K) */
    int64_t M, N, K;
    int64_t lda, ldb, ldc;     /* row strides, in elements */
    enum gemm_type in, out;    /* type of A and B; type of C */
    float alpha;
    int accumulate;            /* C += product (fp32 C only) */
    int bias;                  /* a bias (N) is passed */
    int add;                   /* gemm_add: + D (fp32 C, no accumulate) */
    enum gemm_backend backend; /* GEMM_ANY: by type and the fp32 mode */
};

/* C = alpha op(A) op(B) (+ bias) (+ C), as described above.  bias must be
 * non-NULL exactly when d->bias.  Never fails (see the abort above). */
void gemm(const struct gemm_desc *d, const void *A, const void *B,
          const float *bias, void *C);
/* The same with d->add: C = op(A) op(B) (+ bias) + D; D (M,N) fp32 with
 * row stride d->ldc, not overlapping C. */
void gemm_add(const struct gemm_desc *d, const void *A, const void *B,
              const float *bias, const float *D, void *C);

/* How fp32 products are computed. */
enum gemm_fp32_mode { GEMM_FP32_AUTO, GEMM_FP32_OPENBLAS, GEMM_FP32_ONEDNN };
/* "auto" | "openblas" | "onednn"; returns 0 or -1 */
int gemm_fp32_mode_parse(const char *name, enum gemm_fp32_mode *mode);
const char *gemm_fp32_mode_name(enum gemm_fp32_mode mode);
/* Process-wide, like the BLAS thread count; set before the first product
 * (changing it later changes which backend later products use). */
void gemm_set_fp32_mode(enum gemm_fp32_mode mode);
enum gemm_fp32_mode gemm_get_fp32_mode(void);

/* The backend gemm() would use for d (GEMM_OPENBLAS or GEMM_ONEDNN). */
enum gemm_backend gemm_backend_of(const struct gemm_desc *d);

/* 1 when oneDNN can run bf16 products with bf16 instructions on this CPU
 * (its effective ISA has AVX512_BF16 or AMX; ONEDNN_MAX_CPU_ISA can
 * lower it), else 0 with the reason in why (may be NULL). */
int gemm_bf16_supported(char *why, size_t whylen);
/* oneDNN's effective ISA as text, e.g. "avx512_core_bf16". */
const char *gemm_onednn_isa(void);

/* oneDNN's implementation name for d (creates its primitive if needed),
 * e.g. "brg:avx512_core_bf16"; "openblas" for the OpenBLAS backend.
 * The string lives as long as the cache. */
const char *gemm_impl(const struct gemm_desc *d);
/* Primitives in the cache (tests: a shape is created once per OpenMP
 * thread count, omp_get_max_threads() when it is first used: a primitive
 * runs on the threads it was made for, so a product after threads_set()
 * to another count gets its own). */
size_t gemm_cache_size(void);
/* Destroy every cached primitive and per-thread state (at exit; no gemm()
 * may run meanwhile). */
void gemm_cache_clear(void);

/* GFLOP/s of d on fresh buffers (filled with small values), best of reps
 * runs after one warm-up.  Allocates and frees its buffers; 0 when out of
 * memory. */
double gemm_measure(const struct gemm_desc *d, int reps);
/* The peak a precision is measured against: the best GFLOP/s over square
 * products of 1024, 1536 and 2048 (reps runs each).  GEMM_F32: the fp32
 * backend that the fp32 mode uses for such a product; GEMM_BF16: oneDNN
 * bf16 inputs with fp32 output (0 when unsupported). */
double gemm_peak_gflops(enum gemm_type in, int reps);
/* The same on one size (1536, best of 4 runs): a quick figure for
 * start-up. */
double gemm_peak_quick(enum gemm_type in);

#endif
