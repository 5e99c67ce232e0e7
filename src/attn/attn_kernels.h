/*
 * attn_kernels.h - inner loops of attention over one chunk of cached tokens
 * for the G query heads that share one KV head. attn_ref.c defines the
 * results; attn_avx2.c and attn_avx512.c must match them to float rounding
 * (tests/test_attn.c allows 1e-5 relative; summation order may differ).
 *
 * Compressed tokens are codec records (docs/FORMAT.md): an fp16 norm, then
 * the packed codebook indices. Record t of a chunk starts at rec + t * stride;
 * a fractional-rate cache passes each channel group separately (same stride,
 * rec offset to the group's sub-record). Every record buffer has at least
 * TQ_ATTN_PAD readable bytes after the last record, so kernels may load a
 * few bytes past the codes.
 */
#ifndef TQ_ATTN_KERNELS_H
#define TQ_ATTN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tqai.h"

#define TQ_ATTN_PAD 64

typedef struct tq_attn_kernels {
  tq_simd_level level;

  /* Scores against compressed keys, in the key codec's rotated domain:
   * scores[g * n + t] = norm_t * sum_j q[g * d + j] * centroids[idx_t[j]]
   * q: (G, d) rotated, pre-scaled queries; centroids: (2^bits,);
   * scores: (G, n). */
  void (*score_codes)(const float *q, uint32_t G, uint32_t d, const uint8_t *rec,
                      size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                      float *scores);

  /* Value accumulation in the value codec's rotated domain:
   * acc[g * d + j] += sum_t w[g * n + t] * norm_t * centroids[idx_t[j]]
   * w: (G, n) softmax weights; acc: (G, d). */
  void (*accum_codes)(const float *w, uint32_t G, uint32_t d, const uint8_t *rec,
                      size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                      float *acc);

  /* Scores against fp16 keys: scores[g * n + t] = sum_j q[g * d + j] * k[t * stride + j]
   * k: n rows of fp16 (raw bit patterns), row t at k + t * stride. */
  void (*score_f16)(const float *q, uint32_t G, uint32_t d, const uint16_t *k, size_t stride,
                    uint32_t n, float *scores);

  /* acc[g * d + j] += sum_t w[g * n + t] * v[t * stride + j], v fp16 rows. */
  void (*accum_f16)(const float *w, uint32_t G, uint32_t d, const uint16_t *v, size_t stride,
                    uint32_t n, float *acc);

  /* x[i] = exp(x[i] - m) for i < n (x[i] <= m, so results are in [0, 1]);
   * returns the sum of the new x[i]. Accurate to a few float ulps. */
  float (*exp_sum)(float *x, uint32_t n, float m);

  /* The largest of x[0 .. n-1], n >= 1. A NaN element is skipped, except
   * x[0], which is where the search starts (as `x[i] > m ? x[i] : m`). */
  float (*row_max)(const float *x, uint32_t n);
} tq_attn_kernels;

extern const tq_attn_kernels tq_attn_kernels_ref;
#ifdef TQ_HAVE_AVX2
extern const tq_attn_kernels tq_attn_kernels_avx2;
#endif
#ifdef TQ_HAVE_AVX512
extern const tq_attn_kernels tq_attn_kernels_avx512;
#endif

/* Returns the table for a supported, resolved level, or NULL. */
const tq_attn_kernels *tq_attn_kernels_get(tq_simd_level level);

#endif
