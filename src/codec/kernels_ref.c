/*
 * kernels_ref.c - scalar reference kernels of the codec. These define the
 * results every SIMD level must reproduce bit for bit (see kernels.h).
 * Compiled with -ffp-contract=off so that no multiply-add is fused.
 */
#include "kernels.h"

static double ref_sumsq(const float *x, uint32_t d) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (uint32_t j = 0; j < d; j++) acc[j % 8] += (double)x[j] * (double)x[j];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

static void ref_matvec(const float *m, const float *x, float s, float *y, uint32_t d) {
  for (uint32_t i = 0; i < d; i++) y[i] = 0.0f;
  for (uint32_t j = 0; j < d; j++) {
    const float *row = m + (size_t)j * d;
    float xj = x[j];
    for (uint32_t i = 0; i < d; i++) {
      float p = row[i] * xj;
      y[i] = y[i] + p;
    }
  }
  for (uint32_t i = 0; i < d; i++) y[i] = y[i] * s;
}

static void fwht_ref(float *t, uint32_t d) {
  for (uint32_t h = 1; h < d; h <<= 1) {
    for (uint32_t a = 0; a < d; a++) {
      if (a & h) continue;
      float u = t[a], v = t[a + h];
      t[a] = u + v;
      t[a + h] = u - v;
    }
  }
}

static void ref_hadamard(const float *signs, const float *x, float s, float *y, uint32_t d) {
  for (uint32_t j = 0; j < d; j++) y[j] = signs[j] * x[j];
  fwht_ref(y, d);
  for (uint32_t j = 0; j < d; j++) y[j] = y[j] * s;
}

static void ref_hadamard_inv(const float *signs, const float *y, float s, float *x, uint32_t d) {
  if (x != y)
    for (uint32_t j = 0; j < d; j++) x[j] = y[j];
  fwht_ref(x, d);
  for (uint32_t j = 0; j < d; j++) x[j] = (x[j] * s) * signs[j];
}

static void ref_quantize(const float *bounds, uint32_t bits, const float *y, uint8_t *idx,
                         uint32_t d) {
  for (uint32_t j = 0; j < d; j++) {
    /* Branch-free binary search over the 2^bits - 1 sorted boundaries; the
     * result is the count of boundaries below y[j]. */
    uint32_t k = 0;
    for (uint32_t step = 1u << (bits - 1); step; step >>= 1)
      if (bounds[k + step - 1] < y[j]) k += step;
    idx[j] = (uint8_t)k;
  }
}

static void ref_dequantize(const float *centroids, const uint8_t *idx, float *y, uint32_t d) {
  for (uint32_t j = 0; j < d; j++) y[j] = centroids[idx[j]];
}

static void ref_f16_to_f32(const uint16_t *h, float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = tq_f16_to_f32(h[i]);
}
static void ref_f32_to_f16(const float *x, uint16_t *h, size_t n) {
  for (size_t i = 0; i < n; i++) h[i] = tq_f32_to_f16(x[i]);
}
static void ref_bf16_to_f32(const uint16_t *h, float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = tq_bf16_to_f32(h[i]);
}
static void ref_f32_to_bf16(const float *x, uint16_t *h, size_t n) {
  for (size_t i = 0; i < n; i++) h[i] = tq_f32_to_bf16(x[i]);
}

const tq_codec_kernels tq_codec_kernels_ref = {
    .level = TQ_SIMD_SCALAR,
    .sumsq = ref_sumsq,
    .matvec = ref_matvec,
    .hadamard = ref_hadamard,
    .hadamard_inv = ref_hadamard_inv,
    .quantize = ref_quantize,
    .dequantize = ref_dequantize,
    .f16_to_f32 = ref_f16_to_f32,
    .f32_to_f16 = ref_f32_to_f16,
    .bf16_to_f32 = ref_bf16_to_f32,
    .f32_to_bf16 = ref_f32_to_bf16,
};
