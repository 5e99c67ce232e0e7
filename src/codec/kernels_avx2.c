/*
 * kernels_avx2.c - the codec kernels of kernels.h for AVX2 + F16C, eight
 * floats per __m256.
 *
 * Every function returns results bit-identical to kernels_ref.c for every
 * input, so that encoded bytes do not depend on the SIMD level: each output
 * element goes through the same float operations, with the same operands, in
 * the same order as in the reference. Multiplies and adds stay separate
 * instructions; this file must be compiled with -ffp-contract=off (as the
 * Makefile does) or the compiler could fuse them into FMAs.
 *
 * Table lookups (quantizer boundaries, centroids) use register permutes
 * where the table is small enough, gathers otherwise; both copy the exact
 * entry the reference reads. Where a kernel is defined element by element
 * (quantize, dequantize, the conversions), the tail shorter than a vector is
 * handed to the reference kernel itself, as is hadamard for d < 8.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#if !defined(__AVX2__) || !defined(__F16C__)
#error "kernels_avx2.c must be compiled with -mavx2 -mfma -mf16c"
#endif

/* ------------------------------------------------------------------------ */
/* Sum of squares                                                            */
/* ------------------------------------------------------------------------ */

/* The reference keeps eight double lanes, x[j] going to lane j % 8: here lanes
 * 0-3 live in acc_lo and lanes 4-7 in acc_hi, so one aligned block of eight
 * floats adds one term to every lane. */
static double avx2_sumsq(const float *x, uint32_t d) {
  __m256d acc_lo = _mm256_setzero_pd();
  __m256d acc_hi = _mm256_setzero_pd();
  uint32_t j = 0;
  for (; j + 8 <= d; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));  /* x[j .. j+3] */
    __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); /* x[j+4 .. j+7] */
    acc_lo = _mm256_add_pd(acc_lo, _mm256_mul_pd(lo, lo));
    acc_hi = _mm256_add_pd(acc_hi, _mm256_mul_pd(hi, hi));
  }
  double acc[8];
  _mm256_storeu_pd(acc, acc_lo);
  _mm256_storeu_pd(acc + 4, acc_hi);
  for (; j < d; j++) acc[j % 8] += (double)x[j] * (double)x[j];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* ------------------------------------------------------------------------ */
/* Matrix-vector product                                                     */
/* ------------------------------------------------------------------------ */

/* y[i .. i+31] from columns i .. i+31 of m (d, d): four vectors of outputs,
 * each accumulated over ascending j exactly as the reference does. */
static void matvec_cols32(const float *m, const float *x, float s, float *y, uint32_t d,
                          uint32_t i) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (uint32_t j = 0; j < d; j++) {
    const float *row = m + (size_t)j * d + i;
    __m256 xj = _mm256_broadcast_ss(x + j);
    acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(_mm256_loadu_ps(row), xj));
    acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(_mm256_loadu_ps(row + 8), xj));
    acc2 = _mm256_add_ps(acc2, _mm256_mul_ps(_mm256_loadu_ps(row + 16), xj));
    acc3 = _mm256_add_ps(acc3, _mm256_mul_ps(_mm256_loadu_ps(row + 24), xj));
  }
  __m256 vs = _mm256_set1_ps(s);
  _mm256_storeu_ps(y + i, _mm256_mul_ps(acc0, vs));
  _mm256_storeu_ps(y + i + 8, _mm256_mul_ps(acc1, vs));
  _mm256_storeu_ps(y + i + 16, _mm256_mul_ps(acc2, vs));
  _mm256_storeu_ps(y + i + 24, _mm256_mul_ps(acc3, vs));
}

/* y[i .. i+7], one vector of outputs. */
static void matvec_cols8(const float *m, const float *x, float s, float *y, uint32_t d,
                         uint32_t i) {
  __m256 acc = _mm256_setzero_ps();
  for (uint32_t j = 0; j < d; j++) {
    __m256 xj = _mm256_broadcast_ss(x + j);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(m + (size_t)j * d + i), xj));
  }
  _mm256_storeu_ps(y + i, _mm256_mul_ps(acc, _mm256_set1_ps(s)));
}

static void avx2_matvec(const float *m, const float *x, float s, float *y, uint32_t d) {
  uint32_t i = 0;
  for (; i + 32 <= d; i += 32) matvec_cols32(m, x, s, y, d, i);
  for (; i + 8 <= d; i += 8) matvec_cols8(m, x, s, y, d, i);
  for (; i < d; i++) {
    float acc = 0.0f;
    for (uint32_t j = 0; j < d; j++) {
      float p = m[(size_t)j * d + i] * x[j];
      acc = acc + p;
    }
    y[i] = acc * s;
  }
}

/* ------------------------------------------------------------------------ */
/* Randomized Hadamard                                                       */
/* ------------------------------------------------------------------------ */

/* The butterflies h = 1, 2, 4 inside one vector t of eight consecutive
 * elements. Each stage pairs lane a (a & h == 0) with lane a + h through the
 * permuted copy p, where p[a] = t[a + h] and p[a + h] = t[a]: lane a keeps
 * t[a] + p[a] = u + v and lane a + h takes p[a + h] - t[a + h] = u - v,
 * the reference's operands in the reference's order. */
static __m256 fwht_in_vector(__m256 t) {
  __m256 p = _mm256_permute_ps(t, 0xb1); /* lanes 1 0 3 2 5 4 7 6 */
  t = _mm256_blend_ps(_mm256_add_ps(t, p), _mm256_sub_ps(p, t), 0xaa);
  p = _mm256_permute_ps(t, 0x4e); /* lanes 2 3 0 1 6 7 4 5 */
  t = _mm256_blend_ps(_mm256_add_ps(t, p), _mm256_sub_ps(p, t), 0xcc);
  p = _mm256_permute2f128_ps(t, t, 0x01); /* lanes 4 5 6 7 0 1 2 3 */
  return _mm256_blend_ps(_mm256_add_ps(t, p), _mm256_sub_ps(p, t), 0xf0);
}

/* One butterfly stage of span h >= 8 over t[0 .. d-1], in place. */
static void fwht_stage(float *t, uint32_t d, uint32_t h) {
  for (uint32_t a = 0; a < d; a += 2 * h) {
    for (uint32_t i = a; i < a + h; i += 8) {
      __m256 u = _mm256_loadu_ps(t + i);
      __m256 v = _mm256_loadu_ps(t + i + h);
      _mm256_storeu_ps(t + i, _mm256_add_ps(u, v));
      _mm256_storeu_ps(t + i + h, _mm256_sub_ps(u, v));
    }
  }
}

/* y = H (signs . x) * s. The first pass applies the signs and the stages
 * h < 8; the stages h = 8 .. d/4 run over memory; the last stage h = d/2 also
 * applies the scale (for d = 8 the first pass does). */
static void avx2_hadamard(const float *signs, const float *x, float s, float *y, uint32_t d) {
  if (d < 8) {
    tq_codec_kernels_ref.hadamard(signs, x, s, y, d);
    return;
  }
  __m256 vs = _mm256_set1_ps(s);
  for (uint32_t j = 0; j < d; j += 8) {
    __m256 t = _mm256_mul_ps(_mm256_loadu_ps(signs + j), _mm256_loadu_ps(x + j));
    t = fwht_in_vector(t);
    if (d == 8) t = _mm256_mul_ps(t, vs);
    _mm256_storeu_ps(y + j, t);
  }
  if (d == 8) return;
  for (uint32_t h = 8; h < d / 2; h <<= 1) fwht_stage(y, d, h);
  uint32_t h = d / 2;
  for (uint32_t i = 0; i < h; i += 8) {
    __m256 u = _mm256_loadu_ps(y + i);
    __m256 v = _mm256_loadu_ps(y + i + h);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_add_ps(u, v), vs));
    _mm256_storeu_ps(y + i + h, _mm256_mul_ps(_mm256_sub_ps(u, v), vs));
  }
}

/* x = signs . (H y) * s, each output computed as (t[j] * s) * signs[j]. Same
 * structure as avx2_hadamard. */
static void avx2_hadamard_inv(const float *signs, const float *y, float s, float *x,
                              uint32_t d) {
  if (d < 8) {
    tq_codec_kernels_ref.hadamard_inv(signs, y, s, x, d);
    return;
  }
  __m256 vs = _mm256_set1_ps(s);
  for (uint32_t j = 0; j < d; j += 8) {
    __m256 t = fwht_in_vector(_mm256_loadu_ps(y + j));
    if (d == 8) t = _mm256_mul_ps(_mm256_mul_ps(t, vs), _mm256_loadu_ps(signs + j));
    _mm256_storeu_ps(x + j, t);
  }
  if (d == 8) return;
  for (uint32_t h = 8; h < d / 2; h <<= 1) fwht_stage(x, d, h);
  uint32_t h = d / 2;
  for (uint32_t i = 0; i < h; i += 8) {
    __m256 u = _mm256_loadu_ps(x + i);
    __m256 v = _mm256_loadu_ps(x + i + h);
    __m256 sum = _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(u, v), vs),
                               _mm256_loadu_ps(signs + i));
    __m256 diff = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(u, v), vs),
                                _mm256_loadu_ps(signs + i + h));
    _mm256_storeu_ps(x + i, sum);
    _mm256_storeu_ps(x + i + h, diff);
  }
}

/* ------------------------------------------------------------------------ */
/* Scalar quantization and codebook lookup                                   */
/* ------------------------------------------------------------------------ */

/* table[m] for m < 16 (the low four bits of each lane of m), with table[0..7]
 * in lo and table[8..15] in hi: a bit-exact copy of the entry. */
static __m256 lookup16(__m256 lo, __m256 hi, __m256i m) {
  __m256 from_lo = _mm256_permutevar8x32_ps(lo, m);
  __m256 from_hi = _mm256_permutevar8x32_ps(hi, m);
  __m256 use_hi = _mm256_castsi256_ps(_mm256_slli_epi32(m, 28)); /* bit 3 -> sign */
  return _mm256_blendv_ps(from_lo, from_hi, use_hi);
}

/* The reference's branch-free binary search, eight elements at a time: after
 * the steps 2^(bits-1), ..., 2, 1, k counts the boundaries below y.
 *
 * At the step 2^t, k is a multiple of 2^(t+1), so the search probes one of
 * the 2^(bits-1-t) boundaries probes_t[m] = bounds[m * 2^(t+1) + 2^t - 1],
 * m = k >> (t+1). The levels of at most 16 probes (t >= bits - 5) are held
 * in registers and read with permutes; the others are gathered from bounds
 * at k + 2^t - 1 <= 2^bits - 2. Either way the value compared is the one the
 * reference compares. */
static void avx2_quantize(const float *bounds, uint32_t bits, const float *y, uint8_t *idx,
                          uint32_t d) {
  uint32_t in_registers = bits > 5 ? bits - 5 : 0; /* lowest level held in registers */
  __m256 probes_lo[8], probes_hi[8];
  for (uint32_t t = in_registers; t < bits; t++) {
    float probes[16] = {0};
    for (uint32_t m = 0; m < 1u << (bits - 1 - t); m++)
      probes[m] = bounds[(m << (t + 1)) + (1u << t) - 1];
    probes_lo[t] = _mm256_loadu_ps(probes);
    probes_hi[t] = _mm256_loadu_ps(probes + 8);
  }
  uint32_t j = 0;
  for (; j + 8 <= d; j += 8) {
    __m256 v = _mm256_loadu_ps(y + j);
    __m256i k = _mm256_setzero_si256();
    for (uint32_t t = bits; t-- > 0;) {
      __m256 b;
      if (t >= in_registers) {
        __m256i m = _mm256_srl_epi32(k, _mm_cvtsi32_si128((int)t + 1));
        b = lookup16(probes_lo[t], probes_hi[t], m);
      } else {
        __m256i at = _mm256_add_epi32(k, _mm256_set1_epi32((1 << t) - 1));
        b = _mm256_i32gather_ps(bounds, at, 4);
      }
      __m256i below = _mm256_castps_si256(_mm256_cmp_ps(b, v, _CMP_LT_OQ));
      k = _mm256_add_epi32(k, _mm256_and_si256(below, _mm256_set1_epi32(1 << t)));
    }
    /* k < 256: narrow eight int32 to eight bytes. */
    __m128i k16 = _mm_packus_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
    _mm_storel_epi64((__m128i *)(idx + j), _mm_packus_epi16(k16, k16));
  }
  if (j < d) tq_codec_kernels_ref.quantize(bounds, bits, y + j, idx + j, d - j);
}

/* The largest of idx[0 .. d-1]. */
static uint32_t max_code(const uint8_t *idx, uint32_t d) {
  __m256i m = _mm256_setzero_si256();
  uint32_t j = 0;
  for (; j + 32 <= d; j += 32)
    m = _mm256_max_epu8(m, _mm256_loadu_si256((const __m256i *)(idx + j)));
  __m128i q = _mm_max_epu8(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  q = _mm_max_epu8(q, _mm_srli_si128(q, 8));
  q = _mm_max_epu8(q, _mm_srli_si128(q, 4));
  q = _mm_max_epu8(q, _mm_srli_si128(q, 2));
  q = _mm_max_epu8(q, _mm_srli_si128(q, 1));
  uint32_t top = (uint32_t)_mm_cvtsi128_si32(q) & 0xffu;
  for (; j < d; j++)
    if (idx[j] > top) top = idx[j];
  return top;
}

/* y[j] = centroids[idx[j]]: a permute of a register copy of the codebook when
 * every code is below 16 (the codebook may be that short: only the entries up
 * to the largest code are read), else a gather. */
static void avx2_dequantize(const float *centroids, const uint8_t *idx, float *y, uint32_t d) {
  uint32_t top = max_code(idx, d);
  uint32_t j = 0;
  if (top < 16) {
    float table[16] = {0};
    memcpy(table, centroids, (top + 1) * sizeof(float));
    __m256 lo = _mm256_loadu_ps(table), hi = _mm256_loadu_ps(table + 8);
    for (; j + 8 <= d; j += 8) {
      __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(idx + j)));
      _mm256_storeu_ps(y + j, lookup16(lo, hi, k));
    }
  } else {
    for (; j + 8 <= d; j += 8) {
      __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(idx + j)));
      _mm256_storeu_ps(y + j, _mm256_i32gather_ps(centroids, k, 4));
    }
  }
  if (j < d) tq_codec_kernels_ref.dequantize(centroids, idx + j, y + j, d - j);
}

/* ------------------------------------------------------------------------ */
/* Half-precision conversions                                                */
/* ------------------------------------------------------------------------ */

/* F16C widens exactly and quiets NaNs, as the reference does. */
static void avx2_f16_to_f32(const uint16_t *h, float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
  if (i < n) tq_codec_kernels_ref.f16_to_f32(h + i, x + i, n - i);
}

/* Round to nearest even; NaN -> sign | 0x7e00 | top payload bits, as the
 * reference. */
static void avx2_f32_to_f16(const float *x, uint16_t *h, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h8 = _mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128((__m128i *)(h + i), h8);
  }
  if (i < n) tq_codec_kernels_ref.f32_to_f16(x + i, h + i, n - i);
}

static void avx2_bf16_to_f32(const uint16_t *h, float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
    _mm256_storeu_si256((__m256i *)(x + i), _mm256_slli_epi32(w, 16));
  }
  if (i < n) tq_codec_kernels_ref.bf16_to_f32(h + i, x + i, n - i);
}

/* The reference's integer rounding: (u + 0x7fff + lsb) >> 16 with lsb bit 16
 * of u, and NaN -> (u >> 16) | 0x40. */
static void avx2_f32_to_bf16(const float *x, uint16_t *h, size_t n) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i bias = _mm256_set1_epi32(0x7fff);
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(0x7f800000);
  const __m256i quiet = _mm256_set1_epi32(0x40);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
    __m256i top = _mm256_srli_epi32(u, 16);
    __m256i rounding = _mm256_add_epi32(bias, _mm256_and_si256(top, one));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, rounding), 16);
    __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(top, quiet), is_nan);
    /* Every lane is < 0x10000: the unsigned-saturating pack is exact. */
    __m128i r16 = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128((__m128i *)(h + i), r16);
  }
  if (i < n) tq_codec_kernels_ref.f32_to_bf16(x + i, h + i, n - i);
}

const tq_codec_kernels tq_codec_kernels_avx2 = {
    .level = TQ_SIMD_AVX2,
    .sumsq = avx2_sumsq,
    .matvec = avx2_matvec,
    .hadamard = avx2_hadamard,
    .hadamard_inv = avx2_hadamard_inv,
    .quantize = avx2_quantize,
    .dequantize = avx2_dequantize,
    .f16_to_f32 = avx2_f16_to_f32,
    .f32_to_f16 = avx2_f32_to_f16,
    .bf16_to_f32 = avx2_bf16_to_f32,
    .f32_to_bf16 = avx2_f32_to_bf16,
};
