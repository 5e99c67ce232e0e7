/*
 * attn_ref.c - scalar reference of the attention inner loops (see
 * attn_kernels.h). Plain loops that read like the definitions.
 */
#include <math.h>

#include "attn_kernels.h"

/* Unpacks the d indices of one record's codes (stream layout of FORMAT.md). */
static void unpack(const uint8_t *codes, uint32_t d, uint32_t bits, uint8_t *idx) {
  uint32_t mask = (1u << bits) - 1u;
  for (uint32_t j = 0; j < d; j++) {
    size_t bit = (size_t)j * bits;
    uint32_t word = codes[bit / 8] | ((uint32_t)codes[bit / 8 + 1] << 8);
    idx[j] = (uint8_t)((word >> (bit % 8)) & mask);
  }
}

static float record_norm(const uint8_t *rec) {
  return tq_f16_to_f32((uint16_t)(rec[0] | (rec[1] << 8)));
}

static void ref_score_codes(const float *q, uint32_t G, uint32_t d, const uint8_t *rec,
                            size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                            float *scores) {
  uint8_t idx[TQ_MAX_DIM];
  for (uint32_t t = 0; t < n; t++) {
    const uint8_t *r = rec + (size_t)t * stride;
    unpack(r + 2, d, bits, idx);
    float norm = record_norm(r);
    for (uint32_t g = 0; g < G; g++) {
      float s = 0.0f;
      for (uint32_t j = 0; j < d; j++) s += q[(size_t)g * d + j] * centroids[idx[j]];
      scores[(size_t)g * n + t] = s * norm;
    }
  }
}

static void ref_accum_codes(const float *w, uint32_t G, uint32_t d, const uint8_t *rec,
                            size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                            float *acc) {
  uint8_t idx[TQ_MAX_DIM];
  for (uint32_t t = 0; t < n; t++) {
    const uint8_t *r = rec + (size_t)t * stride;
    unpack(r + 2, d, bits, idx);
    float norm = record_norm(r);
    for (uint32_t g = 0; g < G; g++) {
      float wt = w[(size_t)g * n + t] * norm;
      for (uint32_t j = 0; j < d; j++) acc[(size_t)g * d + j] += wt * centroids[idx[j]];
    }
  }
}

static void ref_score_f16(const float *q, uint32_t G, uint32_t d, const uint16_t *k,
                          size_t stride, uint32_t n, float *scores) {
  for (uint32_t t = 0; t < n; t++) {
    const uint16_t *row = k + (size_t)t * stride;
    for (uint32_t g = 0; g < G; g++) {
      float s = 0.0f;
      for (uint32_t j = 0; j < d; j++) s += q[(size_t)g * d + j] * tq_f16_to_f32(row[j]);
      scores[(size_t)g * n + t] = s;
    }
  }
}

static void ref_accum_f16(const float *w, uint32_t G, uint32_t d, const uint16_t *v,
                          size_t stride, uint32_t n, float *acc) {
  for (uint32_t t = 0; t < n; t++) {
    const uint16_t *row = v + (size_t)t * stride;
    for (uint32_t g = 0; g < G; g++) {
      float wt = w[(size_t)g * n + t];
      for (uint32_t j = 0; j < d; j++) acc[(size_t)g * d + j] += wt * tq_f16_to_f32(row[j]);
    }
  }
}

static float ref_exp_sum(float *x, uint32_t n, float m) {
  float sum = 0.0f;
  for (uint32_t i = 0; i < n; i++) {
    x[i] = expf(x[i] - m);
    sum += x[i];
  }
  return sum;
}

static float ref_row_max(const float *x, uint32_t n) {
  float m = x[0];
  for (uint32_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

const tq_attn_kernels tq_attn_kernels_ref = {
    .level = TQ_SIMD_SCALAR,
    .score_codes = ref_score_codes,
    .accum_codes = ref_accum_codes,
    .score_f16 = ref_score_f16,
    .accum_f16 = ref_accum_f16,
    .exp_sum = ref_exp_sum,
    .row_max = ref_row_max,
};

const tq_attn_kernels *tq_attn_kernels_get(tq_simd_level level) {
  if (level == TQ_SIMD_AUTO || !tq_simd_supported(level)) return NULL;
  switch (level) {
    case TQ_SIMD_SCALAR: return &tq_attn_kernels_ref;
#ifdef TQ_HAVE_AVX2
    case TQ_SIMD_AVX2: return &tq_attn_kernels_avx2;
#endif
#ifdef TQ_HAVE_AVX512
    case TQ_SIMD_AVX512: return &tq_attn_kernels_avx512;
#endif
    default: return NULL;
  }
}
