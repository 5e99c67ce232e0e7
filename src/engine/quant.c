/*
 * quant.c - ggml tensor types: names and block sizes, the scalar reference
 * conversions (the truth every SIMD kernel is tested against), quantization
 * of float rows (round to nearest, as ggml's reference quantizers), and the
 * matrix product driver with its scalar kernels.
 *
 * Dequantization formulas follow ggml's, operation for operation in float
 * (e.g. Q4_1: q * d, then + m; Q4_K: (d * sc) * q - dmin * m), so a row
 * converted here equals ggml's conversion bit for bit.
 *
 * Matrix products (tq_matmul_at): W (rows, cols) times n_tok activation
 * vectors. Two paths:
 * - fused (n_tok <= TQ_DOT_MAX_TOKENS and the level has a dot kernel for the
 *   type): tasks of DOT_ROWS rows; each row's blocks are dequantized in
 *   registers and multiplied with the tokens' x as they are read, so the
 *   weights are streamed exactly once (decode is bound by that stream);
 * - batched: tasks of TQ_MM_ROWS rows x TQ_MM_TOKENS tokens; the task
 *   dequantizes its rows by column chunks of at most TQ_MM_KC into a stack
 *   buffer (F32 weights are used in place) and runs the level's float tile
 *   kernel on every token of the tile, so a weight is dequantized once per
 *   TQ_MM_TOKENS tokens.
 * Tiles depend only on the shapes, never on the thread count.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/pool.h"
#include "quant.h"

/* ------------------------------------------------------------------------ */
/* Type table                                                                */
/* ------------------------------------------------------------------------ */

typedef struct type_info {
  const char *name; /* NULL: not a type this engine knows */
  uint32_t block;   /* elements per block */
  uint32_t bytes;   /* bytes per block */
  int supported;    /* conversions and kernels exist */
} type_info;

static const type_info type_table[TQ_QUANT_N_TYPES] = {
    [TQ_TENSOR_F32] = {"f32", 1, 4, 1},
    [TQ_TENSOR_F16] = {"f16", 1, 2, 1},
    [TQ_TENSOR_Q4_0] = {"q4_0", TQ_QK, sizeof(tq_block_q4_0), 1},
    [TQ_TENSOR_Q4_1] = {"q4_1", TQ_QK, sizeof(tq_block_q4_1), 1},
    [TQ_TENSOR_Q5_0] = {"q5_0", TQ_QK, sizeof(tq_block_q5_0), 1},
    [TQ_TENSOR_Q5_1] = {"q5_1", TQ_QK, sizeof(tq_block_q5_1), 1},
    [TQ_TENSOR_Q8_0] = {"q8_0", TQ_QK, sizeof(tq_block_q8_0), 1},
    [TQ_TENSOR_Q8_1] = {"q8_1", TQ_QK, sizeof(tq_block_q8_1), 0},
    [TQ_TENSOR_Q2_K] = {"q2_K", TQ_QK_K, sizeof(tq_block_q2_K), 1},
    [TQ_TENSOR_Q3_K] = {"q3_K", TQ_QK_K, sizeof(tq_block_q3_K), 1},
    [TQ_TENSOR_Q4_K] = {"q4_K", TQ_QK_K, sizeof(tq_block_q4_K), 1},
    [TQ_TENSOR_Q5_K] = {"q5_K", TQ_QK_K, sizeof(tq_block_q5_K), 1},
    [TQ_TENSOR_Q6_K] = {"q6_K", TQ_QK_K, sizeof(tq_block_q6_K), 1},
    [TQ_TENSOR_Q8_K] = {"q8_K", TQ_QK_K, sizeof(tq_block_q8_K), 0},
    [TQ_TENSOR_BF16] = {"bf16", 1, 2, 1},
};

/* The table entry of t, or NULL for a value that is not a known type. */
static const type_info *info_of(tq_tensor_type t) {
  if ((int)t < 0 || (int)t >= TQ_QUANT_N_TYPES) return NULL;
  const type_info *ti = &type_table[t];
  return ti->name ? ti : NULL;
}

const char *tq_tensor_type_name(tq_tensor_type t) {
  const type_info *ti = info_of(t);
  return ti ? ti->name : "unknown";
}

uint32_t tq_tensor_type_block(tq_tensor_type t) {
  const type_info *ti = info_of(t);
  return ti ? ti->block : 0;
}

uint32_t tq_tensor_type_block_bytes(tq_tensor_type t) {
  const type_info *ti = info_of(t);
  return ti ? ti->bytes : 0;
}

int tq_tensor_type_supported(tq_tensor_type t) {
  const type_info *ti = info_of(t);
  return ti ? ti->supported : 0;
}

uint64_t tq_tensor_row_bytes(tq_tensor_type type, uint64_t cols) {
  const type_info *ti = info_of(type);
  if (!ti || cols % ti->block) return 0;
  uint64_t nb = cols / ti->block;
  if (nb > UINT64_MAX / ti->bytes) return 0;
  return nb * ti->bytes;
}

/* ------------------------------------------------------------------------ */
/* Scalar dequantization (the reference)                                     */
/* ------------------------------------------------------------------------ */

static float h2f(uint16_t h) { return tq_f16_to_f32(h); }

static void deq_f32(const void *src, float *dst, size_t n) {
  memcpy(dst, src, n * sizeof(float));
}

static void deq_f16(const void *src, float *dst, size_t n) {
  const uint8_t *p = src;
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    dst[i] = tq_f16_to_f32(h);
  }
}

static void deq_bf16(const void *src, float *dst, size_t n) {
  const uint8_t *p = src;
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    dst[i] = tq_bf16_to_f32(h);
  }
}

static void deq_q4_0(const void *src, float *dst, size_t nb) {
  const tq_block_q4_0 *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK) {
    float d = h2f(b[i].d);
    for (int j = 0; j < 16; j++) {
      dst[j] = (float)((b[i].qs[j] & 15) - 8) * d;
      dst[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

static void deq_q4_1(const void *src, float *dst, size_t nb) {
  const tq_block_q4_1 *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK) {
    float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < 16; j++) {
      dst[j] = (float)(b[i].qs[j] & 15) * d + m;
      dst[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
    }
  }
}

/* The 32 five-bit values of a Q5_0 / Q5_1 block (0..31). */
static void q5_values(const uint8_t *qh4, const uint8_t *qs, int *q) {
  uint32_t qh = (uint32_t)qh4[0] | (uint32_t)qh4[1] << 8 | (uint32_t)qh4[2] << 16 |
                (uint32_t)qh4[3] << 24;
  for (int j = 0; j < 16; j++) {
    q[j] = (int)((qs[j] & 15u) | (((qh >> j) & 1u) << 4));
    q[j + 16] = (int)((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
  }
}

static void deq_q5_0(const void *src, float *dst, size_t nb) {
  const tq_block_q5_0 *b = src;
  int q[TQ_QK];
  for (size_t i = 0; i < nb; i++, dst += TQ_QK) {
    float d = h2f(b[i].d);
    q5_values(b[i].qh, b[i].qs, q);
    for (int j = 0; j < TQ_QK; j++) dst[j] = (float)(q[j] - 16) * d;
  }
}

static void deq_q5_1(const void *src, float *dst, size_t nb) {
  const tq_block_q5_1 *b = src;
  int q[TQ_QK];
  for (size_t i = 0; i < nb; i++, dst += TQ_QK) {
    float d = h2f(b[i].d), m = h2f(b[i].m);
    q5_values(b[i].qh, b[i].qs, q);
    for (int j = 0; j < TQ_QK; j++) dst[j] = (float)q[j] * d + m;
  }
}

static void deq_q8_0(const void *src, float *dst, size_t nb) {
  const tq_block_q8_0 *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK) {
    float d = h2f(b[i].d);
    for (int j = 0; j < TQ_QK; j++) dst[j] = (float)b[i].qs[j] * d;
  }
}

static void deq_q2_K(const void *src, float *dst, size_t nb) {
  const tq_block_q2_K *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK_K) {
    float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int n = 0; n < 2; n++) {
      for (int j = 0; j < 4; j++) {
        for (int g = 0; g < 2; g++) {
          uint8_t sc = b[i].scales[8 * n + 2 * j + g];
          float dl = d * (float)(sc & 15), ml = dmin * (float)(sc >> 4);
          for (int l = 16 * g; l < 16 * g + 16; l++) {
            int q = (b[i].qs[32 * n + l] >> (2 * j)) & 3;
            dst[128 * n + 32 * j + l] = dl * (float)q - ml;
          }
        }
      }
    }
  }
}

static void deq_q3_K(const void *src, float *dst, size_t nb) {
  const tq_block_q3_K *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK_K) {
    float d = h2f(b[i].d);
    for (int n = 0; n < 2; n++) {
      for (int j = 0; j < 4; j++) {
        uint8_t hbit = (uint8_t)(1u << (4 * n + j));
        for (int g = 0; g < 2; g++) {
          float dl = d * (float)tq_k3_scale(b[i].scales, (uint32_t)(8 * n + 2 * j + g));
          for (int l = 16 * g; l < 16 * g + 16; l++) {
            int q = (b[i].qs[32 * n + l] >> (2 * j)) & 3;
            if (!(b[i].hmask[l] & hbit)) q -= 4;
            dst[128 * n + 32 * j + l] = dl * (float)q;
          }
        }
      }
    }
  }
}

static void deq_q4_K(const void *src, float *dst, size_t nb) {
  const tq_block_q4_K *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK_K) {
    float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (uint32_t p = 0; p < 4; p++) {
      uint8_t sc, m;
      tq_k4_scale_min(b[i].scales, 2 * p, &sc, &m);
      float d1 = d * (float)sc, m1 = dmin * (float)m;
      tq_k4_scale_min(b[i].scales, 2 * p + 1, &sc, &m);
      float d2 = d * (float)sc, m2 = dmin * (float)m;
      const uint8_t *q = b[i].qs + 32 * p;
      for (int l = 0; l < 32; l++) {
        dst[64 * p + l] = d1 * (float)(q[l] & 15) - m1;
        dst[64 * p + 32 + l] = d2 * (float)(q[l] >> 4) - m2;
      }
    }
  }
}

static void deq_q5_K(const void *src, float *dst, size_t nb) {
  const tq_block_q5_K *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK_K) {
    float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (uint32_t p = 0; p < 4; p++) {
      uint8_t sc, m;
      tq_k4_scale_min(b[i].scales, 2 * p, &sc, &m);
      float d1 = d * (float)sc, m1 = dmin * (float)m;
      tq_k4_scale_min(b[i].scales, 2 * p + 1, &sc, &m);
      float d2 = d * (float)sc, m2 = dmin * (float)m;
      const uint8_t *q = b[i].qs + 32 * p;
      uint8_t u1 = (uint8_t)(1u << (2 * p)), u2 = (uint8_t)(2u << (2 * p));
      for (int l = 0; l < 32; l++) {
        int lo = (q[l] & 15) + ((b[i].qh[l] & u1) ? 16 : 0);
        int hi = (q[l] >> 4) + ((b[i].qh[l] & u2) ? 16 : 0);
        dst[64 * p + l] = d1 * (float)lo - m1;
        dst[64 * p + 32 + l] = d2 * (float)hi - m2;
      }
    }
  }
}

static void deq_q6_K(const void *src, float *dst, size_t nb) {
  const tq_block_q6_K *b = src;
  for (size_t i = 0; i < nb; i++, dst += TQ_QK_K) {
    float d = h2f(b[i].d);
    for (int h = 0; h < 2; h++) {
      const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
      const int8_t *sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; l++) {
        int g = l / 16;
        int q0 = (int)((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
        int q1 = (int)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
        int q2 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        int q3 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        float *o = dst + 128 * h + l;
        o[0] = d * (float)sc[g] * (float)q0;
        o[32] = d * (float)sc[g + 2] * (float)q1;
        o[64] = d * (float)sc[g + 4] * (float)q2;
        o[96] = d * (float)sc[g + 6] * (float)q3;
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Quantization (round to nearest, ggml's reference semantics)               */
/* ------------------------------------------------------------------------ */

/* (int) of v clamped to [0, hi] (NaN gives 0), without undefined casts. */
static int clamp_trunc(float v, int hi) {
  if (!(v >= 0.0f)) return 0;
  if (v >= (float)hi) return hi;
  return (int)v;
}

/* Q8_0: d = amax / 127, q = round(x / d) (half away from zero). */
static void quant_q8_0(const float *x, void *dst, size_t nb) {
  tq_block_q8_0 *b = dst;
  for (size_t i = 0; i < nb; i++, x += TQ_QK) {
    float amax = 0.0f;
    for (int j = 0; j < TQ_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = tq_f32_to_f16(d);
    for (int j = 0; j < TQ_QK; j++) {
      float v = roundf(x[j] * id);
      if (!(v >= -127.0f)) v = v != v ? 0.0f : -127.0f; /* NaN -> 0 */
      if (v > 127.0f) v = 127.0f;
      b[i].qs[j] = (int8_t)v;
    }
  }
}

/* Q4_0: d = max / -8 with max the signed value of largest magnitude (so it
 * maps to q = 0), q = min(15, trunc(x / d + 8.5)). */
static void quant_q4_0(const float *x, void *dst, size_t nb) {
  tq_block_q4_0 *b = dst;
  for (size_t i = 0; i < nb; i++, x += TQ_QK) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < TQ_QK; j++) {
      if (amax < fabsf(x[j])) {
        amax = fabsf(x[j]);
        max = x[j];
      }
    }
    float d = max / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = tq_f32_to_f16(d);
    for (int j = 0; j < 16; j++) {
      int q0 = clamp_trunc(x[j] * id + 8.5f, 15);
      int q1 = clamp_trunc(x[j + 16] * id + 8.5f, 15);
      b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
  }
}

/* Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)). */
static void quant_q4_1(const float *x, void *dst, size_t nb) {
  tq_block_q4_1 *b = dst;
  for (size_t i = 0; i < nb; i++, x += TQ_QK) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < TQ_QK; j++) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    float d = (max - min) / 15.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = tq_f32_to_f16(d);
    b[i].m = tq_f32_to_f16(min);
    for (int j = 0; j < 16; j++) {
      int q0 = clamp_trunc((x[j] - min) * id + 0.5f, 15);
      int q1 = clamp_trunc((x[j + 16] - min) * id + 0.5f, 15);
      b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
  }
}

static void quant_f32(const float *x, void *dst, size_t n) { memcpy(dst, x, n * sizeof(float)); }

static void quant_f16(const float *x, void *dst, size_t n) {
  uint8_t *p = dst;
  for (size_t i = 0; i < n; i++) {
    uint16_t h = tq_f32_to_f16(x[i]);
    memcpy(p + 2 * i, &h, 2);
  }
}

static void quant_bf16(const float *x, void *dst, size_t n) {
  uint8_t *p = dst;
  for (size_t i = 0; i < n; i++) {
    uint16_t h = tq_f32_to_bf16(x[i]);
    memcpy(p + 2 * i, &h, 2);
  }
}

typedef void (*quant_fn)(const float *x, void *dst, size_t n_blocks);

static quant_fn quantizer(tq_tensor_type t) {
  switch (t) {
    case TQ_TENSOR_F32: return quant_f32;
    case TQ_TENSOR_F16: return quant_f16;
    case TQ_TENSOR_BF16: return quant_bf16;
    case TQ_TENSOR_Q8_0: return quant_q8_0;
    case TQ_TENSOR_Q4_0: return quant_q4_0;
    case TQ_TENSOR_Q4_1: return quant_q4_1;
    default: return NULL;
  }
}

/* ------------------------------------------------------------------------ */
/* Public conversions                                                        */
/* ------------------------------------------------------------------------ */

tq_status tq_tensor_to_float(tq_tensor_type t, const void *src, float *dst, uint64_t n) {
  const type_info *ti = info_of(t);
  if (!ti || !src || !dst || n % ti->block) return TQ_ERR_INVALID_ARGUMENT;
  if (n / ti->block > SIZE_MAX / ti->bytes || n > SIZE_MAX / sizeof(float))
    return TQ_ERR_INVALID_ARGUMENT;
  if (!ti->supported) return TQ_ERR_UNSUPPORTED;
  if (n) tq_quant_kernels_ref.dequant[t](src, dst, (size_t)(n / ti->block));
  return TQ_OK;
}

tq_status tq_tensor_from_float(tq_tensor_type t, const float *src, void *dst, uint64_t n) {
  const type_info *ti = info_of(t);
  if (!ti || !src || !dst || n % ti->block) return TQ_ERR_INVALID_ARGUMENT;
  if (n / ti->block > SIZE_MAX / ti->bytes || n > SIZE_MAX / sizeof(float))
    return TQ_ERR_INVALID_ARGUMENT;
  quant_fn q = quantizer(t);
  if (!q) return TQ_ERR_UNSUPPORTED;
  if (n) q(src, dst, (size_t)(n / ti->block));
  return TQ_OK;
}

tq_status tq_row_to_float(tq_tensor_type type, const void *w, uint64_t cols, uint64_t row,
                          float *dst) {
  const type_info *ti = info_of(type);
  if (!ti || !w || !dst || cols % ti->block) return TQ_ERR_INVALID_ARGUMENT;
  uint64_t rb = tq_tensor_row_bytes(type, cols);
  if (cols && (rb == 0 || row > (uint64_t)SIZE_MAX / rb)) return TQ_ERR_INVALID_ARGUMENT;
  return tq_tensor_to_float(type, (const uint8_t *)w + row * rb, dst, cols);
}

/* ------------------------------------------------------------------------ */
/* Scalar kernels                                                            */
/* ------------------------------------------------------------------------ */

/* Dot product of n floats in eight interleaved partial sums (lane i % 8),
 * folded pairwise: the same rounding on every platform. */
static float dot_ref(const float *a, const float *b, size_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) s[l] += a[i + l] * b[i + l];
  for (int l = 0; i < n; i++, l++) s[l] += a[i] * b[i];
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

static void gemm_ref(const float *w, size_t ldw, uint32_t nr, const float *x, size_t ldx,
                     uint32_t nt, size_t k, float *c, size_t ldc) {
  for (uint32_t t = 0; t < nt; t++)
    for (uint32_t r = 0; r < nr; r++) c[t * ldc + r] += dot_ref(w + r * ldw, x + t * ldx, k);
}

const tq_quant_kernels tq_quant_kernels_ref = {
    .level = TQ_SIMD_SCALAR,
    .dequant =
        {
            [TQ_TENSOR_F32] = deq_f32,
            [TQ_TENSOR_F16] = deq_f16,
            [TQ_TENSOR_BF16] = deq_bf16,
            [TQ_TENSOR_Q4_0] = deq_q4_0,
            [TQ_TENSOR_Q4_1] = deq_q4_1,
            [TQ_TENSOR_Q5_0] = deq_q5_0,
            [TQ_TENSOR_Q5_1] = deq_q5_1,
            [TQ_TENSOR_Q8_0] = deq_q8_0,
            [TQ_TENSOR_Q2_K] = deq_q2_K,
            [TQ_TENSOR_Q3_K] = deq_q3_K,
            [TQ_TENSOR_Q4_K] = deq_q4_K,
            [TQ_TENSOR_Q5_K] = deq_q5_K,
            [TQ_TENSOR_Q6_K] = deq_q6_K,
        },
    .dot = {0},
    .gemm = gemm_ref,
};

const tq_quant_kernels *tq_quant_kernels_get(tq_simd_level level) {
  if (level == TQ_SIMD_AUTO || !tq_simd_supported(level)) return NULL;
  switch (level) {
    case TQ_SIMD_SCALAR: return &tq_quant_kernels_ref;
#ifdef TQ_HAVE_AVX2
    case TQ_SIMD_AVX2: return &tq_quant_kernels_avx2;
#endif
#ifdef TQ_HAVE_AVX512
    case TQ_SIMD_AVX512: return &tq_quant_kernels_avx512;
#endif
    default: return NULL;
  }
}

/* ------------------------------------------------------------------------ */
/* Matrix product driver                                                     */
/* ------------------------------------------------------------------------ */

/* Rows per task of the fused path. */
#define DOT_ROWS 16

typedef struct mm_ctx {
  const tq_quant_kernels *k;
  tq_dequant_fn deq;
  tq_dot_fn dot;
  int in_place;        /* F32: the gemm kernel reads W directly */
  const uint8_t *w;
  size_t row_bytes;    /* bytes per row of W */
  size_t block, block_bytes;
  size_t rows, cols;
  const float *x;
  uint32_t n_tok;
  float *y;
  size_t kc;           /* columns per chunk (a multiple of the block) */
  uint32_t n_row_tiles;
} mm_ctx;

static void dot_task(void *arg, uint32_t index) {
  const mm_ctx *m = arg;
  size_t r0 = (size_t)index * DOT_ROWS;
  size_t r1 = r0 + DOT_ROWS < m->rows ? r0 + DOT_ROWS : m->rows;
  size_t nb = m->cols / m->block;
  for (size_t r = r0; r < r1; r++) {
    for (uint32_t t0 = 0; t0 < m->n_tok; t0 += TQ_DOT_MAX_TOKENS) {
      uint32_t nt = m->n_tok - t0 < TQ_DOT_MAX_TOKENS ? m->n_tok - t0 : TQ_DOT_MAX_TOKENS;
      m->dot(m->w + r * m->row_bytes, nb, m->x + (size_t)t0 * m->cols, m->cols, nt,
             m->y + (size_t)t0 * m->rows + r, m->rows);
    }
  }
}

static void gemm_task(void *arg, uint32_t index) {
  const mm_ctx *m = arg;
  size_t r0 = (size_t)(index % m->n_row_tiles) * TQ_MM_ROWS;
  size_t t0 = (size_t)(index / m->n_row_tiles) * TQ_MM_TOKENS;
  uint32_t nr = (uint32_t)(m->rows - r0 < TQ_MM_ROWS ? m->rows - r0 : TQ_MM_ROWS);
  uint32_t nt = (uint32_t)(m->n_tok - t0 < TQ_MM_TOKENS ? m->n_tok - t0 : TQ_MM_TOKENS);
  /* acc: (nt, TQ_MM_ROWS) partial sums; buf: (nr, kc) dequantized weights.
   * 68 KiB of stack, a small share of a thread's. */
  float acc[TQ_MM_TOKENS * TQ_MM_ROWS];
  float buf[TQ_MM_ROWS * TQ_MM_KC];
  memset(acc, 0, sizeof acc);
  for (size_t c0 = 0; c0 < m->cols; c0 += m->kc) {
    size_t kk = m->cols - c0 < m->kc ? m->cols - c0 : m->kc;
    const float *wp;
    size_t ldw;
    if (m->in_place) {
      wp = (const float *)(const void *)(m->w + r0 * m->row_bytes) + c0;
      ldw = m->cols;
    } else {
      size_t b0 = c0 / m->block, nb = kk / m->block;
      for (uint32_t r = 0; r < nr; r++)
        m->deq(m->w + (r0 + r) * m->row_bytes + b0 * m->block_bytes, buf + (size_t)r * m->kc, nb);
      wp = buf;
      ldw = m->kc;
    }
    m->k->gemm(wp, ldw, nr, m->x + t0 * m->cols + c0, m->cols, nt, kk, acc, TQ_MM_ROWS);
  }
  for (uint32_t t = 0; t < nt; t++)
    memcpy(m->y + (t0 + t) * m->rows + r0, acc + (size_t)t * TQ_MM_ROWS, nr * sizeof(float));
}

tq_status tq_matmul_at(tq_simd_level level, tq_tensor_type type, const void *w, uint64_t rows,
                       uint64_t cols, const float *x, uint32_t n_tok, float *y, tq_pool *pool) {
  const type_info *ti = info_of(type);
  if (!ti || !w || !x || !y || cols % ti->block) return TQ_ERR_INVALID_ARGUMENT;
  if (!ti->supported) return TQ_ERR_UNSUPPORTED;
  if (level == TQ_SIMD_AUTO) level = tq_simd_default();
  const tq_quant_kernels *k = tq_quant_kernels_get(level);
  if (!k) return TQ_ERR_UNSUPPORTED_SIMD;
  uint64_t rb = tq_tensor_row_bytes(type, cols);
  /* Every index below is a size_t: W, x and y must be addressable. */
  if (rows > SIZE_MAX / (rb ? rb : 1) || cols > SIZE_MAX / sizeof(float) / (n_tok ? n_tok : 1) ||
      rows > SIZE_MAX / sizeof(float) / (n_tok ? n_tok : 1))
    return TQ_ERR_INVALID_ARGUMENT;
  if (rows == 0 || n_tok == 0) return TQ_OK;
  if (cols == 0) {
    memset(y, 0, (size_t)rows * n_tok * sizeof(float));
    return TQ_OK;
  }

  mm_ctx m = {
      .k = k,
      .deq = k->dequant[type] ? k->dequant[type] : tq_quant_kernels_ref.dequant[type],
      .dot = k->dot[type],
      .in_place = type == TQ_TENSOR_F32,
      .w = w,
      .row_bytes = (size_t)rb,
      .block = ti->block,
      .block_bytes = ti->bytes,
      .rows = (size_t)rows,
      .cols = (size_t)cols,
      .x = x,
      .n_tok = n_tok,
      .y = y,
  };
  if (m.dot && n_tok <= TQ_DOT_MAX_TOKENS) {
    uint64_t n_tasks = (rows + DOT_ROWS - 1) / DOT_ROWS;
    if (n_tasks > UINT32_MAX) return TQ_ERR_INVALID_ARGUMENT;
    tq_pool_run(pool, (uint32_t)n_tasks, dot_task, &m);
    return TQ_OK;
  }
  /* Equal column chunks of at most TQ_MM_KC, each a multiple of the block
   * and of 16 (whole vectors except at the end of a row). */
  size_t unit = ti->block > 16 ? ti->block : 16;
  size_t n_chunks = (m.cols + TQ_MM_KC - 1) / TQ_MM_KC;
  size_t kc = (m.cols + n_chunks - 1) / n_chunks;
  m.kc = (kc + unit - 1) / unit * unit;
  uint64_t n_row_tiles = (rows + TQ_MM_ROWS - 1) / TQ_MM_ROWS;
  uint64_t n_tok_tiles = ((uint64_t)n_tok + TQ_MM_TOKENS - 1) / TQ_MM_TOKENS;
  if (n_row_tiles > UINT32_MAX / n_tok_tiles) return TQ_ERR_INVALID_ARGUMENT;
  m.n_row_tiles = (uint32_t)n_row_tiles;
  tq_pool_run(pool, (uint32_t)(n_row_tiles * n_tok_tiles), gemm_task, &m);
  return TQ_OK;
}

tq_status tq_matmul(tq_tensor_type type, const void *w, uint64_t rows, uint64_t cols,
                    const float *x, uint32_t n_tok, float *y, tq_pool *pool) {
  return tq_matmul_at(TQ_SIMD_AUTO, type, w, rows, cols, x, n_tok, y, pool);
}
