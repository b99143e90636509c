/*
 * dpbf16.h - a small bf16 matrix product on AVX512_BF16's VDPBF16PS, for
 * the per-head products of attention (ops_attention.c).
 *
 * Why not oneDNN: attention's products are small (64 x 64 x 64 to
 * 64 x T x 64 per block and head) and strided, and oneDNN 2.6 runs them as
 * `gemm:jit`, which packs both operands at every call: measured on this
 * project's machine at 30-105 GFLOP/s for those shapes inside the
 * attention kernel, against 370-400 for this kernel on the same shapes
 * (tests/test_ops_bf16.c checks the values; `mpitron bench step` shows the
 * attention time).  The operands here are packed once per head instead.
 *
 * The product: C (M, N) = alpha A B, or C += alpha A B, fp32 accumulation,
 * C fp32 or bf16.  VDPBF16PS multiplies PAIRS of bf16 along K, so:
 *  - A is read as 32-bit words, the pair (A[r][2j], A[r][2j+1]) at element
 *    offset r * sar + j * sak from A: a row-major matrix is sar = lda,
 *    sak = 2; a matrix packed by dp_pack_pairs read transposed is sar = 2,
 *    sak = 2 * its ldd.  With K odd the last word's upper half is not read
 *    (it may lie past the end of the row or of the buffer);
 *  - B is packed: word (j, n) = (B[2j][n], B[2j+1][n]) at B + j * ldb + n
 *    (dp_pack_pairs of B, or dp_pack_words_t of B^T), ceil(K/2) rows.
 * Every element of C is the same sequence of instructions whatever M, N
 * and its position (masked lanes do not change the others), so results
 * are deterministic and independent of the thread count.
 *
 * Available when the compiler can target AVX512_BF16 (x86-64 gcc) and the
 * CPU has it (dpbf16_available()); callers fall back to gemm.h otherwise.
 */
#ifndef MPITRON_DPBF16_H
#define MPITRON_DPBF16_H

#include <stddef.h>
#include <stdint.h>

#include "bf16.h"

struct dp_gemm {
    size_t M, N, K;
    const bf16 *A;
    ptrdiff_t sar, sak;  /* A's word strides, in bf16 elements */
    const uint32_t *B;
    size_t ldb;          /* words */
    void *C;
    size_t ldc;          /* elements of C's type */
    float alpha;
    int accumulate;      /* C += alpha A B (fp32 C only) */
    int c_bf16;          /* C is bf16 (rounded once), else fp32 */
};

/* whether dp_gemm runs here (compiled in and the CPU has AVX512_BF16,
 * AVX512BW and AVX512VL) */
int dpbf16_available(void);

void dp_gemm(const struct dp_gemm *g);

/* dst (ceil(rows/2), cols) words, row stride ldd: word (j, c) = (src[2j][c],
 * src[2j+1][c]), a missing last odd row as 0.  src rows of lds elements. */
void dp_pack_pairs(uint32_t *dst, size_t ldd, const bf16 *src, size_t lds,
                   size_t rows, size_t cols);

/* dst (cols/2, rows) words, row stride ldd: word (j, r) = (src[r][2j],
 * src[r][2j+1]), the words of src transposed; cols even, src and lds
 * word-aligned (even) */
void dp_pack_words_t(uint32_t *dst, size_t ldd, const bf16 *src, size_t lds,
                     size_t rows, size_t cols);

#endif
