/*
 * kernels.h - the per-vector inner loops of the codec, one table per SIMD
 * level. kernels_ref.c defines the truth; kernels_avx2.c and kernels_avx512.c
 * must produce bit-identical results for every input (same operations in the
 * same order per output element, mul then add, never fused), so that encoded
 * bytes do not depend on the level. tests/test_simd.c checks this.
 */
#ifndef TQ_CODEC_KERNELS_H
#define TQ_CODEC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tqai.h"

typedef struct tq_codec_kernels {
  tq_simd_level level;

  /* Sum of squares of x[0..d-1] in double. Defined order: eight lanes,
   * acc[j % 8] += (double)x[j] * (double)x[j] for ascending j (each lane
   * starting at 0.0), then ((acc0 + acc4) + (acc2 + acc6)) +
   * ((acc1 + acc5) + (acc3 + acc7)). */
  double (*sumsq)(const float *x, uint32_t d);

  /* Dense matrix-vector product with a final scale: for each i < d,
   * y[i] = (sum over ascending j of m[j * d + i] * x[j]) * s, the sum starting
   * from 0.0f, each step a float multiply then a float add (not fused).
   * m: (d, d) row-major; x, y: (d,), not overlapping. */
  void (*matvec)(const float *m, const float *x, float s, float *y, uint32_t d);

  /* Randomized Hadamard, forward: y = H (signs . x) * s, where H is the
   * unnormalized Sylvester Walsh-Hadamard matrix (entries +-1) and signs[j] is
   * +1.0f or -1.0f. Defined order: t = signs[j] * x[j]; then for
   * h = 1, 2, 4, ..., d/2, for every pair (a, a + h) with (a & h) == 0:
   * (t[a], t[a+h]) = (t[a] + t[a+h], t[a] - t[a+h]); finally y[j] = t[j] * s.
   * d is a power of two >= 2. x and y may be the same array. */
  void (*hadamard)(const float *signs, const float *x, float s, float *y, uint32_t d);

  /* Randomized Hadamard, inverse direction: x = signs . (H y) * s, with the
   * same butterfly order as `hadamard` applied to t = y, then
   * x[j] = (t[j] * s) * signs[j]. y and x may be the same array. */
  void (*hadamard_inv)(const float *signs, const float *y, float s, float *x, uint32_t d);

  /* Scalar quantization: idx[j] = number of entries of bounds[0..2^bits-2]
   * (strictly ascending) that are < y[j]. y is finite. */
  void (*quantize)(const float *bounds, uint32_t bits, const float *y,
                   uint8_t *idx, uint32_t d);

  /* Codebook lookup: y[j] = centroids[idx[j]], idx[j] < 2^bits. */
  void (*dequantize)(const float *centroids, const uint8_t *idx, float *y, uint32_t d);

  /* Exact conversions of n values (same rounding as tq_f32_to_f16 etc.). */
  void (*f16_to_f32)(const uint16_t *h, float *x, size_t n);
  void (*f32_to_f16)(const float *x, uint16_t *h, size_t n);
  void (*bf16_to_f32)(const uint16_t *h, float *x, size_t n);
  void (*f32_to_bf16)(const float *x, uint16_t *h, size_t n);
} tq_codec_kernels;

/* Each table is defined in its own file; the AVX ones only where compiled
 * (TQ_HAVE_AVX2 / TQ_HAVE_AVX512 set by the build). */
extern const tq_codec_kernels tq_codec_kernels_ref;
#ifdef TQ_HAVE_AVX2
extern const tq_codec_kernels tq_codec_kernels_avx2;
#endif
#ifdef TQ_HAVE_AVX512
extern const tq_codec_kernels tq_codec_kernels_avx512;
#endif

/* Returns the table for a supported, resolved level (not TQ_SIMD_AUTO), or
 * NULL if that level is not compiled in or not supported by the CPU. */
const tq_codec_kernels *tq_codec_kernels_get(tq_simd_level level);

#endif
