/*
 * quant.h - internal interface of the engine's weight formats: the block
 * layouts of ggml's tensor types (as stored in GGUF files), conversions to
 * and from float, and the product of a weight matrix in any supported type
 * with float activations (the engine's hot path).
 *
 * The public half (names, block sizes, tq_tensor_to_float, ...) is declared
 * in tqai_engine.h; quant.c implements both.
 *
 * Layouts: every block is a packed little-endian struct; fp16 fields are IEEE
 * binary16 bit patterns. Element i of a block is the i-th value of the row
 * segment it covers (the comments on each struct say which bits hold it).
 */
#ifndef TQ_ENGINE_QUANT_H
#define TQ_ENGINE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "tqai.h"
#include "tqai_engine.h"

#define TQ_QK 32    /* elements per block of the 32-element types */
#define TQ_QK_K 256 /* elements per super-block of the K-quants */

#define TQ_PACKED __attribute__((packed))

/* Q4_0: w[j] = d * (q[j] - 8), q[j] the low nibble of qs[j] for j < 16 and
 * the high nibble of qs[j - 16] for j >= 16. */
typedef struct TQ_PACKED tq_block_q4_0 {
  uint16_t d;
  uint8_t qs[16];
} tq_block_q4_0;
_Static_assert(sizeof(tq_block_q4_0) == 18, "block_q4_0 is 18 bytes");

/* Q4_1: w[j] = d * q[j] + m, nibbles as Q4_0. */
typedef struct TQ_PACKED tq_block_q4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
} tq_block_q4_1;
_Static_assert(sizeof(tq_block_q4_1) == 20, "block_q4_1 is 20 bytes");

/* Q5_0: w[j] = d * (q[j] - 16), q[j] = nibble (as Q4_0) | bit j of the
 * little-endian 32-bit qh, shifted to bit 4. */
typedef struct TQ_PACKED tq_block_q5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
} tq_block_q5_0;
_Static_assert(sizeof(tq_block_q5_0) == 22, "block_q5_0 is 22 bytes");

/* Q5_1: w[j] = d * q[j] + m, q[j] as Q5_0. */
typedef struct TQ_PACKED tq_block_q5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
} tq_block_q5_1;
_Static_assert(sizeof(tq_block_q5_1) == 24, "block_q5_1 is 24 bytes");

/* Q8_0: w[j] = d * qs[j]. */
typedef struct TQ_PACKED tq_block_q8_0 {
  uint16_t d;
  int8_t qs[32];
} tq_block_q8_0;
_Static_assert(sizeof(tq_block_q8_0) == 34, "block_q8_0 is 34 bytes");

/* Q8_1: as Q8_0 plus s = d * sum(qs) (an activation format; no kernels). */
typedef struct TQ_PACKED tq_block_q8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[32];
} tq_block_q8_1;
_Static_assert(sizeof(tq_block_q8_1) == 36, "block_q8_1 is 36 bytes");

/* Q2_K: 16 sub-blocks of 16. Element e = 128 n + 32 j + l (n < 2, j < 4,
 * l < 32): q = (qs[32 n + l] >> 2 j) & 3; with sc = scales[8 n + 2 j + l / 16],
 * w = (d * (sc & 15)) * q - dmin * (sc >> 4). */
typedef struct TQ_PACKED tq_block_q2_K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d;
  uint16_t dmin;
} tq_block_q2_K;
_Static_assert(sizeof(tq_block_q2_K) == 84, "block_q2_K is 84 bytes");

/* Q3_K: 16 sub-blocks of 16. Element e = 128 n + 32 j + l: low bits
 * (qs[32 n + l] >> 2 j) & 3, minus 4 unless bit 4 n + j of hmask[l] is set;
 * w = (d * (s - 32)) * q, s the 6-bit scale of sub-block 8 n + 2 j + l / 16.
 * Scale s_i (i < 16): low 4 bits from scales[i] (i < 8) or scales[i - 8] >> 4
 * (i >= 8), high 2 bits (scales[8 + i % 4] >> 2 (i / 4)) & 3. */
typedef struct TQ_PACKED tq_block_q3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
} tq_block_q3_K;
_Static_assert(sizeof(tq_block_q3_K) == 110, "block_q3_K is 110 bytes");

/* Q4_K: 8 sub-blocks of 32, each with a 6-bit scale sc_i and min m_i
 * (tq_k4_scale_min). Element 64 p + l (p < 4, l < 32) is the low nibble of
 * qs[32 p + l] in sub-block 2 p; element 64 p + 32 + l its high nibble in
 * sub-block 2 p + 1; w = (d * sc_i) * q - dmin * m_i. */
typedef struct TQ_PACKED tq_block_q4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
} tq_block_q4_K;
_Static_assert(sizeof(tq_block_q4_K) == 144, "block_q4_K is 144 bytes");

/* Q5_K: as Q4_K, plus 16 to q where bit 2 p (low nibbles) or 2 p + 1 (high
 * nibbles) of qh[l] is set. */
typedef struct TQ_PACKED tq_block_q5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
} tq_block_q5_K;
_Static_assert(sizeof(tq_block_q5_K) == 176, "block_q5_K is 176 bytes");

/* Q6_K: 16 sub-blocks of 16 with signed 8-bit scales. Element
 * 128 h + 32 k + l (h < 2, k < 4, l < 32): low 4 bits from ql[64 h + l + 32 (k & 1)]
 * (low nibble for k < 2, high for k >= 2), high 2 bits (qh[32 h + l] >> 2 k) & 3;
 * w = (d * scales[8 h + 2 k + l / 16]) * (q - 32). */
typedef struct TQ_PACKED tq_block_q6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
} tq_block_q6_K;
_Static_assert(sizeof(tq_block_q6_K) == 210, "block_q6_K is 210 bytes");

/* Q8_K: an activation format (float scale, block sums); no kernels. */
typedef struct TQ_PACKED tq_block_q8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
} tq_block_q8_K;
_Static_assert(sizeof(tq_block_q8_K) == 292, "block_q8_K is 292 bytes");

/* The 6-bit scale and min of sub-block j < 8 of a Q4_K / Q5_K block: for
 * j < 4 the low 6 bits of scales[j] and scales[j + 4]; for j >= 4 the low
 * (high) nibble of scales[j + 4] with the top 2 bits of scales[j - 4]
 * (scales[j]) above it. */
static inline void tq_k4_scale_min(const uint8_t *scales, uint32_t j, uint8_t *sc, uint8_t *m) {
  if (j < 4) {
    *sc = scales[j] & 63u;
    *m = scales[j + 4] & 63u;
  } else {
    *sc = (uint8_t)((scales[j + 4] & 15u) | ((scales[j - 4] >> 6) << 4));
    *m = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

/* The 6-bit scale of sub-block i < 16 of a Q3_K block, minus 32. */
static inline int tq_k3_scale(const uint8_t *scales, uint32_t i) {
  uint32_t lo = i < 8 ? (scales[i] & 15u) : (uint32_t)(scales[i - 8] >> 4);
  uint32_t hi = (scales[8 + i % 4] >> (2 * (i / 4))) & 3u;
  return (int)(lo | (hi << 4)) - 32;
}

/* ------------------------------------------------------------------------ */
/* Matrix products                                                           */
/* ------------------------------------------------------------------------ */

/* y[t * rows + r] = sum over c < cols of W[r, c] * x[t * cols + c], for
 * t < n_tok and r < rows. W is (rows, cols) in `type`, row-major: row r
 * starts at byte r * tq_tensor_row_bytes(type, cols) of w. x: (n_tok, cols)
 * floats, y: (n_tok, rows) floats, y overlapping neither. cols must be a
 * multiple of the type's block; cols 0 gives zeros. F32 weights must be
 * 4-byte aligned (they are read as floats in place); the other types may
 * sit at any address (GGUF aligns tensor data anyway).
 *
 * The sums run in float with fused multiply-adds, activations kept in float.
 * Work is split into tasks of fixed rows x tokens tiles run on `pool` (NULL:
 * the calling thread), so the result does not depend on the thread count;
 * it does depend on the SIMD level (summation order: levels agree well
 * within 1e-5 of sum |W| |x|, tests/test_quant.c) and on n_tok (batches of
 * up to TQ_DOT_MAX_TOKENS take the fused path).
 *
 * `level` TQ_SIMD_AUTO means tq_simd_default() (TQAI_SIMD is read on every
 * call; the CPU is probed once per process).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (NULL pointer, unknown type, cols
 * not a multiple of the block, sizes overflowing), TQ_ERR_UNSUPPORTED (a type
 * without kernels) or TQ_ERR_UNSUPPORTED_SIMD (level not available here). */
tq_status tq_matmul_at(tq_simd_level level, tq_tensor_type type, const void *w, uint64_t rows,
                       uint64_t cols, const float *x, uint32_t n_tok, float *y, tq_pool *pool);

/* tq_matmul_at at TQ_SIMD_AUTO. */
tq_status tq_matmul(tq_tensor_type type, const void *w, uint64_t rows, uint64_t cols,
                    const float *x, uint32_t n_tok, float *y, tq_pool *pool);

/* Row `row` of a (row + 1 or more, cols) matrix in `type` to cols floats
 * (an embedding lookup). Same statuses as tq_tensor_to_float. */
tq_status tq_row_to_float(tq_tensor_type type, const void *w, uint64_t cols, uint64_t row,
                          float *dst);

/* Bytes of one row of cols elements (cols a multiple of the block), or 0
 * for an unknown type, a cols that is not, or an overflow. */
uint64_t tq_tensor_row_bytes(tq_tensor_type type, uint64_t cols);

/* ------------------------------------------------------------------------ */
/* Kernel tables (one per SIMD level)                                        */
/* ------------------------------------------------------------------------ */

/* Types are indexed by their tq_tensor_type value. */
#define TQ_QUANT_N_TYPES ((int)TQ_TENSOR_BF16 + 1)

/* Rows x tokens x columns of one task of the batched path: the gemm kernel
 * is called with nr <= TQ_MM_ROWS, nt <= TQ_MM_TOKENS, k <= TQ_MM_KC. */
#define TQ_MM_ROWS 16
#define TQ_MM_TOKENS 64
#define TQ_MM_KC 1024
/* Most tokens one call of a fused dot kernel handles. */
#define TQ_DOT_MAX_TOKENS 4

/* Converts n_blocks consecutive blocks to n_blocks * block floats. */
typedef void (*tq_dequant_fn)(const void *blocks, float *dst, size_t n_blocks);

/* Fused dequantize-and-dot of one row of n_blocks blocks with nt tokens
 * (1 <= nt <= TQ_DOT_MAX_TOKENS): y[t * ldy] = sum over the row's elements
 * of w[c] * x[t * ldx + c]. */
typedef void (*tq_dot_fn)(const void *w, size_t n_blocks, const float *x, size_t ldx,
                          uint32_t nt, float *y, size_t ldy);

/* Float tile product accumulated into c: for r < nr, t < nt,
 * c[t * ldc + r] += sum over i < k of w[r * ldw + i] * x[t * ldx + i]. */
typedef void (*tq_gemm_fn)(const float *w, size_t ldw, uint32_t nr, const float *x,
                           size_t ldx, uint32_t nt, size_t k, float *c, size_t ldc);

typedef struct tq_quant_kernels {
  tq_simd_level level;
  /* NULL entries fall back to the scalar table's dequant; a NULL dot makes
   * every batch take the dequantize-and-gemm path. */
  tq_dequant_fn dequant[TQ_QUANT_N_TYPES];
  tq_dot_fn dot[TQ_QUANT_N_TYPES];
  tq_gemm_fn gemm;
} tq_quant_kernels;

extern const tq_quant_kernels tq_quant_kernels_ref;
#ifdef TQ_HAVE_AVX2
extern const tq_quant_kernels tq_quant_kernels_avx2;
#endif
#ifdef TQ_HAVE_AVX512
extern const tq_quant_kernels tq_quant_kernels_avx512;
#endif

/* The table of a supported, resolved level, or NULL. */
const tq_quant_kernels *tq_quant_kernels_get(tq_simd_level level);

#endif
