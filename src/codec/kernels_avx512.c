/*
 * kernels_avx512.c - the codec kernels of kernels.h for AVX-512 F/BW/VL/DQ,
 * sixteen floats per __m512.
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
 * entry the reference reads. Tails shorter than a vector use masked loads,
 * arithmetic and stores, which neither touch nor compute on the lanes past
 * the end.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512DQ__)
#error "kernels_avx512.c must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq"
#endif

/* Mask of the first n lanes, n <= 16. */
static __mmask16 first_lanes(size_t n) { return (__mmask16)((1u << n) - 1u); }

/* ------------------------------------------------------------------------ */
/* Sum of squares                                                            */
/* ------------------------------------------------------------------------ */

/* The reference's eight double lanes, x[j] going to lane j % 8, are the eight
 * lanes of acc: one aligned block of eight floats adds one term to each. */
static double avx512_sumsq(const float *x, uint32_t d) {
  __m512d acc = _mm512_setzero_pd();
  uint32_t j = 0;
  for (; j + 8 <= d; j += 8) {
    __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + j));
    acc = _mm512_add_pd(acc, _mm512_mul_pd(v, v));
  }
  if (j < d) {
    __mmask8 m = (__mmask8)first_lanes(d - j);
    __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + j));
    acc = _mm512_mask_add_pd(acc, m, acc, _mm512_maskz_mul_pd(m, v, v));
  }
  double a[8];
  _mm512_storeu_pd(a, acc);
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* ------------------------------------------------------------------------ */
/* Matrix-vector product                                                     */
/* ------------------------------------------------------------------------ */

/* y[i .. i+63] from columns i .. i+63 of m (d, d): four vectors of outputs,
 * each accumulated over ascending j exactly as the reference does. */
static void matvec_cols64(const float *m, const float *x, float s, float *y, uint32_t d,
                          uint32_t i) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  for (uint32_t j = 0; j < d; j++) {
    const float *row = m + (size_t)j * d + i;
    __m512 xj = _mm512_set1_ps(x[j]);
    acc0 = _mm512_add_ps(acc0, _mm512_mul_ps(_mm512_loadu_ps(row), xj));
    acc1 = _mm512_add_ps(acc1, _mm512_mul_ps(_mm512_loadu_ps(row + 16), xj));
    acc2 = _mm512_add_ps(acc2, _mm512_mul_ps(_mm512_loadu_ps(row + 32), xj));
    acc3 = _mm512_add_ps(acc3, _mm512_mul_ps(_mm512_loadu_ps(row + 48), xj));
  }
  __m512 vs = _mm512_set1_ps(s);
  _mm512_storeu_ps(y + i, _mm512_mul_ps(acc0, vs));
  _mm512_storeu_ps(y + i + 16, _mm512_mul_ps(acc1, vs));
  _mm512_storeu_ps(y + i + 32, _mm512_mul_ps(acc2, vs));
  _mm512_storeu_ps(y + i + 48, _mm512_mul_ps(acc3, vs));
}

/* y[i .. i+15], or only its lanes in `lanes` (the last, partial columns). */
static void matvec_cols16(const float *m, const float *x, float s, float *y, uint32_t d,
                          uint32_t i, __mmask16 lanes) {
  __m512 acc = _mm512_setzero_ps();
  for (uint32_t j = 0; j < d; j++) {
    __m512 row = _mm512_maskz_loadu_ps(lanes, m + (size_t)j * d + i);
    __m512 p = _mm512_maskz_mul_ps(lanes, row, _mm512_set1_ps(x[j]));
    acc = _mm512_mask_add_ps(acc, lanes, acc, p);
  }
  _mm512_mask_storeu_ps(y + i, lanes, _mm512_maskz_mul_ps(lanes, acc, _mm512_set1_ps(s)));
}

static void avx512_matvec(const float *m, const float *x, float s, float *y, uint32_t d) {
  uint32_t i = 0;
  for (; i + 64 <= d; i += 64) matvec_cols64(m, x, s, y, d, i);
  for (; i + 16 <= d; i += 16) matvec_cols16(m, x, s, y, d, i, 0xffff);
  if (i < d) matvec_cols16(m, x, s, y, d, i, first_lanes(d - i));
}

/* ------------------------------------------------------------------------ */
/* Randomized Hadamard                                                       */
/* ------------------------------------------------------------------------ */

/* The butterflies h = 1, 2, 4, 8 (those below d) inside one vector t of
 * sixteen consecutive elements. Each stage pairs lane a (a & h == 0) with
 * lane a + h through the permuted copy p, where p[a] = t[a + h] and
 * p[a + h] = t[a]: lane a keeps t[a] + p[a] = u + v and lane a + h takes
 * p[a + h] - t[a + h] = u - v, the reference's operands in its order. */
static __m512 fwht_in_vector(__m512 t, uint32_t d) {
  __m512 p = _mm512_permute_ps(t, 0xb1); /* h = 1: lanes 1 0 3 2 ... */
  t = _mm512_mask_sub_ps(_mm512_add_ps(t, p), 0xaaaa, p, t);
  if (d > 2) {
    p = _mm512_permute_ps(t, 0x4e); /* h = 2: lanes 2 3 0 1 ... */
    t = _mm512_mask_sub_ps(_mm512_add_ps(t, p), 0xcccc, p, t);
  }
  if (d > 4) {
    p = _mm512_shuffle_f32x4(t, t, 0xb1); /* h = 4: 128-bit blocks 1 0 3 2 */
    t = _mm512_mask_sub_ps(_mm512_add_ps(t, p), 0xf0f0, p, t);
  }
  if (d > 8) {
    p = _mm512_shuffle_f32x4(t, t, 0x4e); /* h = 8: 128-bit blocks 2 3 0 1 */
    t = _mm512_mask_sub_ps(_mm512_add_ps(t, p), 0xff00, p, t);
  }
  return t;
}

/* One butterfly stage of span h >= 16 over t[0 .. d-1], in place. */
static void fwht_stage(float *t, uint32_t d, uint32_t h) {
  for (uint32_t a = 0; a < d; a += 2 * h) {
    for (uint32_t i = a; i < a + h; i += 16) {
      __m512 u = _mm512_loadu_ps(t + i);
      __m512 v = _mm512_loadu_ps(t + i + h);
      _mm512_storeu_ps(t + i, _mm512_add_ps(u, v));
      _mm512_storeu_ps(t + i + h, _mm512_sub_ps(u, v));
    }
  }
}

/* y = H (signs . x) * s. The first pass applies the signs and the stages
 * h < 16 (for d <= 16 all of them, and the scale, on one masked vector); the
 * stages h = 16 .. d/4 run over memory; the last stage h = d/2 also applies
 * the scale. */
static void avx512_hadamard(const float *signs, const float *x, float s, float *y,
                            uint32_t d) {
  __m512 vs = _mm512_set1_ps(s);
  if (d <= 16) {
    __mmask16 lanes = first_lanes(d);
    __m512 t = _mm512_maskz_mul_ps(lanes, _mm512_maskz_loadu_ps(lanes, signs),
                                   _mm512_maskz_loadu_ps(lanes, x));
    t = _mm512_maskz_mul_ps(lanes, fwht_in_vector(t, d), vs);
    _mm512_mask_storeu_ps(y, lanes, t);
    return;
  }
  for (uint32_t j = 0; j < d; j += 16) {
    __m512 t = _mm512_mul_ps(_mm512_loadu_ps(signs + j), _mm512_loadu_ps(x + j));
    _mm512_storeu_ps(y + j, fwht_in_vector(t, d));
  }
  for (uint32_t h = 16; h < d / 2; h <<= 1) fwht_stage(y, d, h);
  uint32_t h = d / 2;
  for (uint32_t i = 0; i < h; i += 16) {
    __m512 u = _mm512_loadu_ps(y + i);
    __m512 v = _mm512_loadu_ps(y + i + h);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_add_ps(u, v), vs));
    _mm512_storeu_ps(y + i + h, _mm512_mul_ps(_mm512_sub_ps(u, v), vs));
  }
}

/* x = signs . (H y) * s, each output computed as (t[j] * s) * signs[j]. Same
 * structure as avx512_hadamard. */
static void avx512_hadamard_inv(const float *signs, const float *y, float s, float *x,
                                uint32_t d) {
  __m512 vs = _mm512_set1_ps(s);
  if (d <= 16) {
    __mmask16 lanes = first_lanes(d);
    __m512 t = fwht_in_vector(_mm512_maskz_loadu_ps(lanes, y), d);
    t = _mm512_maskz_mul_ps(lanes, _mm512_maskz_mul_ps(lanes, t, vs),
                            _mm512_maskz_loadu_ps(lanes, signs));
    _mm512_mask_storeu_ps(x, lanes, t);
    return;
  }
  for (uint32_t j = 0; j < d; j += 16)
    _mm512_storeu_ps(x + j, fwht_in_vector(_mm512_loadu_ps(y + j), d));
  for (uint32_t h = 16; h < d / 2; h <<= 1) fwht_stage(x, d, h);
  uint32_t h = d / 2;
  for (uint32_t i = 0; i < h; i += 16) {
    __m512 u = _mm512_loadu_ps(x + i);
    __m512 v = _mm512_loadu_ps(x + i + h);
    __m512 sum = _mm512_mul_ps(_mm512_mul_ps(_mm512_add_ps(u, v), vs),
                               _mm512_loadu_ps(signs + i));
    __m512 diff = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(u, v), vs),
                                _mm512_loadu_ps(signs + i + h));
    _mm512_storeu_ps(x + i, sum);
    _mm512_storeu_ps(x + i + h, diff);
  }
}

/* ------------------------------------------------------------------------ */
/* Scalar quantization and codebook lookup                                   */
/* ------------------------------------------------------------------------ */

/* Register copies of the boundaries the binary search can probe at each of
 * its steps. At the step 2^t, k is a multiple of 2^(t+1), so the search
 * probes one of the 2^(bits-1-t) boundaries
 * probes_t[m] = bounds[m * 2^(t+1) + 2^t - 1], m = k >> (t+1). The levels of
 * at most 32 probes (t >= in_registers) are held in two registers each
 * (lo = probes_t[0..15], hi = probes_t[16..31]); the others are gathered. */
typedef struct {
  uint32_t bits, in_registers;
  __m512 lo[8], hi[8];
} probe_tables;

static void probe_tables_init(probe_tables *p, const float *bounds, uint32_t bits) {
  p->bits = bits;
  p->in_registers = bits > 6 ? bits - 6 : 0;
  for (uint32_t t = p->in_registers; t < bits; t++) {
    float probes[32] = {0};
    for (uint32_t m = 0; m < 1u << (bits - 1 - t); m++)
      probes[m] = bounds[(m << (t + 1)) + (1u << t) - 1];
    p->lo[t] = _mm512_loadu_ps(probes);
    p->hi[t] = _mm512_loadu_ps(probes + 16);
  }
}

/* Codes of sixteen values v (lanes past the end hold 0.0f and are
 * discarded): the reference's branch-free binary search, after which k
 * counts the boundaries below v. Each step compares the same boundary as the
 * reference, read from a register table or gathered from bounds at
 * k + 2^t - 1 <= 2^bits - 2. */
static __m512i quantize16(const float *bounds, const probe_tables *p, __m512 v) {
  __m512i k = _mm512_setzero_si512();
  for (uint32_t t = p->bits; t-- > 0;) {
    __m512 b;
    if (t >= p->in_registers) {
      __m512i m = _mm512_srl_epi32(k, _mm_cvtsi32_si128((int)t + 1));
      b = _mm512_permutex2var_ps(p->lo[t], m, p->hi[t]);
    } else {
      __m512i at = _mm512_add_epi32(k, _mm512_set1_epi32((1 << t) - 1));
      b = _mm512_i32gather_ps(at, bounds, 4);
    }
    __mmask16 below = _mm512_cmp_ps_mask(b, v, _CMP_LT_OQ);
    k = _mm512_mask_add_epi32(k, below, k, _mm512_set1_epi32(1 << t));
  }
  return k;
}

static void avx512_quantize(const float *bounds, uint32_t bits, const float *y, uint8_t *idx,
                            uint32_t d) {
  probe_tables p;
  probe_tables_init(&p, bounds, bits);
  uint32_t j = 0;
  for (; j + 16 <= d; j += 16) {
    __m512i k = quantize16(bounds, &p, _mm512_loadu_ps(y + j));
    _mm_storeu_si128((__m128i *)(idx + j), _mm512_cvtepi32_epi8(k)); /* k < 256 */
  }
  if (j < d) {
    __mmask16 lanes = first_lanes(d - j);
    __m512i k = quantize16(bounds, &p, _mm512_maskz_loadu_ps(lanes, y + j));
    _mm512_mask_cvtepi32_storeu_epi8(idx + j, lanes, k);
  }
}

/* The largest of idx[0 .. d-1]. */
static uint32_t max_code(const uint8_t *idx, uint32_t d) {
  __m512i m = _mm512_setzero_si512();
  for (uint32_t j = 0; j < d; j += 64) {
    __mmask64 lanes = d - j >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (d - j)) - 1;
    m = _mm512_max_epu8(m, _mm512_maskz_loadu_epi8(lanes, idx + j));
  }
  __m128i q = _mm_max_epu8(_mm_max_epu8(_mm512_extracti32x4_epi32(m, 0),
                                        _mm512_extracti32x4_epi32(m, 1)),
                           _mm_max_epu8(_mm512_extracti32x4_epi32(m, 2),
                                        _mm512_extracti32x4_epi32(m, 3)));
  return (uint32_t)_mm512_reduce_max_epu32(_mm512_cvtepu8_epi32(q));
}

/* Sixteen codes (lanes past the end are 0 and discarded) looked up either in
 * the register copy lo, hi of the first 32 centroids or by a gather. */
static __m512 lookup16(const float *centroids, int in_registers, __m512 lo, __m512 hi,
                       __m512i k) {
  return in_registers ? _mm512_permutex2var_ps(lo, k, hi) : _mm512_i32gather_ps(k, centroids, 4);
}

/* y[j] = centroids[idx[j]]: a permute of a register copy of the codebook when
 * every code is below 32 (the codebook may be that short: only the entries up
 * to the largest code are read), else a gather. */
static void avx512_dequantize(const float *centroids, const uint8_t *idx, float *y,
                              uint32_t d) {
  uint32_t top = max_code(idx, d);
  int in_registers = top < 32;
  float table[32] = {0};
  if (in_registers) memcpy(table, centroids, (top + 1) * sizeof(float));
  __m512 lo = _mm512_loadu_ps(table), hi = _mm512_loadu_ps(table + 16);
  uint32_t j = 0;
  for (; j + 16 <= d; j += 16) {
    __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(idx + j)));
    _mm512_storeu_ps(y + j, lookup16(centroids, in_registers, lo, hi, k));
  }
  if (j < d) {
    __mmask16 lanes = first_lanes(d - j);
    __m512i k = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes, idx + j));
    _mm512_mask_storeu_ps(y + j, lanes, lookup16(centroids, in_registers, lo, hi, k));
  }
}

/* ------------------------------------------------------------------------ */
/* Half-precision conversions                                                */
/* ------------------------------------------------------------------------ */

/* Sixteen halves to floats: exact, NaNs quieted, as the reference does. */
static __m512 f16x16_to_f32(__m256i h16) { return _mm512_cvtph_ps(h16); }

static void avx512_f16_to_f32(const uint16_t *h, float *x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, f16x16_to_f32(_mm256_loadu_si256((const __m256i *)(h + i))));
  if (i < n) {
    __mmask16 lanes = first_lanes(n - i);
    _mm512_mask_storeu_ps(x + i, lanes, f16x16_to_f32(_mm256_maskz_loadu_epi16(lanes, h + i)));
  }
}

/* Round to nearest even; NaN -> sign | 0x7e00 | top payload bits, as the
 * reference. */
static void avx512_f32_to_f16(const float *x, uint16_t *h, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i h16 = _mm512_cvtps_ph(_mm512_loadu_ps(x + i),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256((__m256i *)(h + i), h16);
  }
  if (i < n) {
    __mmask16 lanes = first_lanes(n - i);
    __m256i h16 = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(lanes, x + i),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_mask_storeu_epi16(h + i, lanes, h16);
  }
}

static void avx512_bf16_to_f32(const uint16_t *h, float *x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(h + i)));
    _mm512_storeu_si512(x + i, _mm512_slli_epi32(w, 16));
  }
  if (i < n) {
    __mmask16 lanes = first_lanes(n - i);
    __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, h + i));
    _mm512_mask_storeu_epi32(x + i, lanes, _mm512_slli_epi32(w, 16));
  }
}

/* Sixteen floats, as bits, to bf16 (in the low half of each lane): the
 * reference's integer rounding (u + 0x7fff + lsb) >> 16 with lsb bit 16 of u,
 * and NaN -> (u >> 16) | 0x40. */
static __m512i f32x16_to_bf16(__m512i u) {
  __m512i top = _mm512_srli_epi32(u, 16);
  __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                      _mm512_and_si512(top, _mm512_set1_epi32(1)));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, rounding), 16);
  __mmask16 is_nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                             _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_or_epi32(rounded, is_nan, top, _mm512_set1_epi32(0x40));
}

static void avx512_f32_to_bf16(const float *x, uint16_t *h, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i r = f32x16_to_bf16(_mm512_loadu_si512(x + i));
    _mm256_storeu_si256((__m256i *)(h + i), _mm512_cvtepi32_epi16(r));
  }
  if (i < n) {
    __mmask16 lanes = first_lanes(n - i);
    __m512i r = f32x16_to_bf16(_mm512_maskz_loadu_epi32(lanes, x + i));
    _mm512_mask_cvtepi32_storeu_epi16(h + i, lanes, r);
  }
}

const tq_codec_kernels tq_codec_kernels_avx512 = {
    .level = TQ_SIMD_AVX512,
    .sumsq = avx512_sumsq,
    .matvec = avx512_matvec,
    .hadamard = avx512_hadamard,
    .hadamard_inv = avx512_hadamard_inv,
    .quantize = avx512_quantize,
    .dequantize = avx512_dequantize,
    .f16_to_f32 = avx512_f16_to_f32,
    .f32_to_f16 = avx512_f32_to_f16,
    .bf16_to_f32 = avx512_bf16_to_f32,
    .f32_to_bf16 = avx512_f32_to_bf16,
};
