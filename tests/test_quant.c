/*
 * test_quant.c - ggml tensor types (src/engine/quant.h and the "Tensor types"
 * section of tqai_engine.h): names and block sizes, quantization round trips
 * with per-type error bounds, dequantization of hand-built blocks against
 * values computed by hand (including the 6-bit K-quant scales), the matrix
 * product of every supported type at every SIMD level against a
 * double-precision reference, independence from the thread count, and the
 * error statuses.
 *
 * The hand-built blocks are packed here by code written from the layout
 * descriptions (the inverse of what the library reads), with scales and
 * values chosen so that every expected value is exact in float: the library
 * must reproduce them bit for bit.
 *
 * Matrix products are checked element by element against
 * sum_c double(W[r, c]) * double(x[t, c]), W from tq_tensor_to_float, with
 * a tolerance of REL_TOL * sum_c |W[r, c] x[t, c]|: float sums in another
 * order (and fused multiply-adds in the SIMD dequantization) stay well
 * inside it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "test.h"
#include "tqai.h"
#include "tqai_engine.h"

#define REL_TOL 1e-5
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static tq_test_rng rng = {20240611};

static void *xmalloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static float gauss(void) { return (float)tq_test_gauss(&rng); }
static uint8_t rand_byte(void) { return (uint8_t)(tq_test_next(&rng) >> 56); }

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static uint16_t get16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

static const tq_simd_level levels[] = {TQ_SIMD_SCALAR, TQ_SIMD_AVX2, TQ_SIMD_AVX512};

/* Every type the engine computes with. */
static const tq_tensor_type supported_types[] = {
    TQ_TENSOR_F32,  TQ_TENSOR_F16,  TQ_TENSOR_BF16, TQ_TENSOR_Q8_0, TQ_TENSOR_Q4_0,
    TQ_TENSOR_Q4_1, TQ_TENSOR_Q5_0, TQ_TENSOR_Q5_1, TQ_TENSOR_Q2_K, TQ_TENSOR_Q3_K,
    TQ_TENSOR_Q4_K, TQ_TENSOR_Q5_K, TQ_TENSOR_Q6_K};

/* ------------------------------------------------------------------------ */
/* Type table                                                                */
/* ------------------------------------------------------------------------ */

static void test_type_info(void) {
  static const struct {
    tq_tensor_type t;
    const char *name;
    uint32_t block, bytes;
    int supported;
  } want[] = {
      {TQ_TENSOR_F32, "f32", 1, 4, 1},      {TQ_TENSOR_F16, "f16", 1, 2, 1},
      {TQ_TENSOR_Q4_0, "q4_0", 32, 18, 1},  {TQ_TENSOR_Q4_1, "q4_1", 32, 20, 1},
      {TQ_TENSOR_Q5_0, "q5_0", 32, 22, 1},  {TQ_TENSOR_Q5_1, "q5_1", 32, 24, 1},
      {TQ_TENSOR_Q8_0, "q8_0", 32, 34, 1},  {TQ_TENSOR_Q8_1, "q8_1", 32, 36, 0},
      {TQ_TENSOR_Q2_K, "q2_K", 256, 84, 1}, {TQ_TENSOR_Q3_K, "q3_K", 256, 110, 1},
      {TQ_TENSOR_Q4_K, "q4_K", 256, 144, 1}, {TQ_TENSOR_Q5_K, "q5_K", 256, 176, 1},
      {TQ_TENSOR_Q6_K, "q6_K", 256, 210, 1}, {TQ_TENSOR_Q8_K, "q8_K", 256, 292, 0},
      {TQ_TENSOR_BF16, "bf16", 1, 2, 1},
  };
  for (size_t i = 0; i < COUNT(want); i++) {
    CHECKF(strcmp(tq_tensor_type_name(want[i].t), want[i].name) == 0, "name of %d: %s", (int)want[i].t,
           tq_tensor_type_name(want[i].t));
    CHECKF(tq_tensor_type_block(want[i].t) == want[i].block, "block of %s", want[i].name);
    CHECKF(tq_tensor_type_block_bytes(want[i].t) == want[i].bytes, "bytes of %s", want[i].name);
    CHECKF(tq_tensor_type_supported(want[i].t) == want[i].supported, "supported %s", want[i].name);
  }
  /* Values that are no type of this engine (4, 5: removed ggml types; 16+:
   * IQ types and later). */
  static const int unknown[] = {-1, 4, 5, 16, 29, 31, 1000};
  for (size_t i = 0; i < COUNT(unknown); i++) {
    tq_tensor_type t = (tq_tensor_type)unknown[i];
    CHECK(strcmp(tq_tensor_type_name(t), "unknown") == 0);
    CHECK(tq_tensor_type_block(t) == 0);
    CHECK(tq_tensor_type_block_bytes(t) == 0);
    CHECK(tq_tensor_type_supported(t) == 0);
  }
  CHECK(tq_tensor_row_bytes(TQ_TENSOR_Q4_1, 576) == 18 * 20);
  CHECK(tq_tensor_row_bytes(TQ_TENSOR_Q6_K, 1536) == 6 * 210);
  CHECK(tq_tensor_row_bytes(TQ_TENSOR_F16, 7) == 14);
  CHECK(tq_tensor_row_bytes(TQ_TENSOR_Q4_0, 33) == 0);
  CHECK(tq_tensor_row_bytes((tq_tensor_type)4, 32) == 0);
}

/* ------------------------------------------------------------------------ */
/* Quantization round trips                                                  */
/* ------------------------------------------------------------------------ */

/* n floats: Gaussian, with a few blocks of special content (all zero,
 * constant, one outlier, all negative). */
static float *test_signal(size_t n) {
  float *x = xmalloc(n * sizeof *x);
  for (size_t i = 0; i < n; i++) x[i] = gauss() * 0.7f;
  if (n >= 128) {
    for (size_t i = 0; i < 32; i++) x[i] = 0.0f;
    for (size_t i = 32; i < 64; i++) x[i] = 0.375f;
    x[64 + 5] = 40.0f;
    for (size_t i = 96; i < 128; i++) x[i] = -fabsf(x[i]) - 0.01f;
  }
  return x;
}

static void test_roundtrip_float_types(void) {
  const size_t n = 1000;
  float *x = test_signal(n), *y = xmalloc(n * sizeof *y);
  uint8_t *buf = xmalloc(n * 4);
  CHECK_OK(tq_tensor_from_float(TQ_TENSOR_F32, x, buf, n));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_F32, buf, y, n));
  CHECK(memcmp(x, y, n * sizeof *x) == 0);
  CHECK_OK(tq_tensor_from_float(TQ_TENSOR_F16, x, buf, n));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_F16, buf, y, n));
  for (size_t i = 0; i < n; i++) {
    CHECK(get16(buf + 2 * i) == tq_f32_to_f16(x[i]));
    CHECK(y[i] == tq_f16_to_f32(tq_f32_to_f16(x[i])));
  }
  CHECK_OK(tq_tensor_from_float(TQ_TENSOR_BF16, x, buf, n));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_BF16, buf, y, n));
  for (size_t i = 0; i < n; i++) {
    CHECK(get16(buf + 2 * i) == tq_f32_to_bf16(x[i]));
    CHECK(y[i] == tq_bf16_to_f32(tq_f32_to_bf16(x[i])));
  }
  free(x);
  free(y);
  free(buf);
}

/* Q8_0: d = amax / 127 stored in fp16, q = round(x / d): each element within
 * d / 2 of q * d before the fp16 rounding of d, which moves q * d by at most
 * |q| |d| 2^-11 (plus float rounding slack). The element of largest magnitude
 * gets q = +-127. */
static void test_roundtrip_q8_0(void) {
  const size_t n = 32 * 40;
  float *x = test_signal(n), *y = xmalloc(n * sizeof *y);
  tq_block_q8_0 *b = xmalloc(n / 32 * sizeof *b);
  CHECK_OK(tq_tensor_from_float(TQ_TENSOR_Q8_0, x, b, n));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q8_0, b, y, n));
  for (size_t i = 0; i < n / 32; i++) {
    float amax = 0.0f;
    size_t at = 0;
    for (size_t j = 0; j < 32; j++)
      if (fabsf(x[32 * i + j]) > amax) amax = fabsf(x[32 * i + (at = j)]);
    double d = amax / 127.0, d16 = tq_f16_to_f32(b[i].d);
    CHECK(b[i].d == tq_f32_to_f16((float)(amax / 127.0f)));
    if (amax > 0) CHECK(abs(b[i].qs[at]) == 127);
    for (size_t j = 0; j < 32; j++) {
      double err = fabs((double)x[32 * i + j] - y[32 * i + j]);
      double bound = 0.5 * d + fabs((double)b[i].qs[j]) * fabs(d - d16) + 1e-6 * amax;
      CHECKF(err <= bound, "q8_0 block %zu elem %zu: err %g > %g", i, j, err, bound);
    }
  }
  free(x);
  free(y);
  free(b);
}

/* Q4_0: d = max / -8 (max: the signed value of largest magnitude, which maps
 * to q = 0, i.e. -8 d = max), q = min(15, trunc(x / d + 8.5)): within d / 2,
 * except that the clamp at 15 allows up to d at the end opposite to max. */
static void test_roundtrip_q4_0(void) {
  const size_t n = 32 * 40;
  float *x = test_signal(n), *y = xmalloc(n * sizeof *y);
  tq_block_q4_0 *b = xmalloc(n / 32 * sizeof *b);
  CHECK_OK(tq_tensor_from_float(TQ_TENSOR_Q4_0, x, b, n));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q4_0, b, y, n));
  for (size_t i = 0; i < n / 32; i++) {
    float amax = 0.0f, max = 0.0f;
    size_t at = 0;
    for (size_t j = 0; j < 32; j++)
      if (fabsf(x[32 * i + j]) > amax) {
        amax = fabsf(x[32 * i + j]);
        max = x[32 * i + j];
        at = j;
      }
    double d = max / -8.0, d16 = tq_f16_to_f32(b[i].d);
    CHECK(b[i].d == tq_f32_to_f16(max / -8.0f));
    int q_at = at < 16 ? (b[i].qs[at] & 15) : (b[i].qs[at - 16] >> 4);
    if (amax > 0) CHECKF(q_at == 0, "q4_0 block %zu: max maps to %d", i, q_at);
    for (size_t j = 0; j < 32; j++) {
      int q = j < 16 ? (b[i].qs[j] & 15) : (b[i].qs[j - 16] >> 4);
      double err = fabs((double)x[32 * i + j] - y[32 * i + j]);
      double half = q == 15 ? 1.0 : 0.5;
      double bound = half * fabs(d) + 8.0 * fabs(d - d16) + 1e-6 * amax;
      CHECKF(err <= bound, "q4_0 block %zu elem %zu: err %g > %g", i, j, err, bound);
    }
  }
  free(x);
  free(y);
  free(b);
}

/* Q4_1: d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)):
 * within d / 2 plus the fp16 roundings of m and d (times q <= 15). The min
 * maps to 0 and the max to 15. */
static void test_roundtrip_q4_1(void) {
  const size_t n = 32 * 40;
  float *x = test_signal(n), *y = xmalloc(n * sizeof *y);
  tq_block_q4_1 *b = xmalloc(n / 32 * sizeof *b);
  CHECK_OK(tq_tensor_from_float(TQ_TENSOR_Q4_1, x, b, n));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q4_1, b, y, n));
  for (size_t i = 0; i < n / 32; i++) {
    float mn = x[32 * i], mx = x[32 * i];
    for (size_t j = 0; j < 32; j++) {
      mn = fminf(mn, x[32 * i + j]);
      mx = fmaxf(mx, x[32 * i + j]);
    }
    double d = ((double)mx - mn) / 15.0, d16 = tq_f16_to_f32(b[i].d), m16 = tq_f16_to_f32(b[i].m);
    CHECK(b[i].m == tq_f32_to_f16(mn));
    for (size_t j = 0; j < 32; j++) {
      int q = j < 16 ? (b[i].qs[j] & 15) : (b[i].qs[j - 16] >> 4);
      if (x[32 * i + j] == mn) CHECK(q == 0);
      if (x[32 * i + j] == mx && mx > mn) CHECK(q == 15);
      double err = fabs((double)x[32 * i + j] - y[32 * i + j]);
      double bound = 0.5 * d + fabs(mn - m16) + 15.0 * fabs(d - d16) +
                     1e-6 * (fabs(mn) + fabs(mx));
      CHECKF(err <= bound, "q4_1 block %zu elem %zu: err %g > %g", i, j, err, bound);
    }
  }
  free(x);
  free(y);
  free(b);
}

/* Non-finite and extreme inputs quantize to something without crashing or
 * undefined behaviour (checked by the sanitizer build). */
static void test_quantize_extremes(void) {
  float x[64];
  for (int i = 0; i < 64; i++) x[i] = (float)i;
  x[3] = NAN;
  x[40] = INFINITY;
  x[41] = -INFINITY;
  uint8_t buf[64 * 4];
  float y[64];
  static const tq_tensor_type types[] = {TQ_TENSOR_Q8_0, TQ_TENSOR_Q4_0, TQ_TENSOR_Q4_1,
                                         TQ_TENSOR_F16, TQ_TENSOR_BF16};
  for (size_t i = 0; i < COUNT(types); i++) {
    CHECK_OK(tq_tensor_from_float(types[i], x, buf, 64));
    CHECK_OK(tq_tensor_to_float(types[i], buf, y, 64));
  }
  /* Huge finite values: d overflows fp16 to infinity. */
  for (int i = 0; i < 64; i++) x[i] = (i & 1 ? 1 : -1) * 3e38f;
  for (size_t i = 0; i < COUNT(types); i++) CHECK_OK(tq_tensor_from_float(types[i], x, buf, 64));
}

/* ------------------------------------------------------------------------ */
/* Hand-built blocks                                                         */
/* ------------------------------------------------------------------------ */

static float out[256];

static void test_hand_q4_0(void) {
  tq_block_q4_0 b;
  b.d = 0x3800; /* 0.5 */
  for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | ((15 - j) << 4));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q4_0, &b, out, 32));
  CHECK(out[0] == -4.0f);   /* (0 - 8) * 0.5 */
  CHECK(out[16] == 3.5f);   /* (15 - 8) * 0.5 */
  CHECK(out[15] == 3.5f);   /* (15 - 8) * 0.5 */
  CHECK(out[31] == -4.0f);  /* (0 - 8) * 0.5 */
  for (int j = 0; j < 16; j++) {
    CHECK(out[j] == (float)(j - 8) * 0.5f);
    CHECK(out[16 + j] == (float)(15 - j - 8) * 0.5f);
  }
}

static void test_hand_q4_1(void) {
  tq_block_q4_1 b;
  b.d = 0x3800; /* 0.5 */
  b.m = 0xbc00; /* -1 */
  for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | ((15 - j) << 4));
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q4_1, &b, out, 32));
  CHECK(out[0] == -1.0f);
  CHECK(out[16] == 6.5f); /* 15 * 0.5 - 1 */
  for (int j = 0; j < 16; j++) {
    CHECK(out[j] == (float)j * 0.5f - 1.0f);
    CHECK(out[16 + j] == (float)(15 - j) * 0.5f - 1.0f);
  }
}

/* Fifth bits: element j takes bit j of the little-endian 32-bit qh. */
static int q5_value(const uint8_t *qh, const uint8_t *qs, int j) {
  uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
  int nib = j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4);
  return nib | (int)(((h >> j) & 1u) << 4);
}

static void test_hand_q5(void) {
  tq_block_q5_0 b0;
  b0.d = 0x3400; /* 0.25 */
  const uint8_t qh[4] = {0x0f, 0xf0, 0xa5, 0x81}; /* qh = 0x81a5f00f */
  memcpy(b0.qh, qh, 4);
  for (int j = 0; j < 16; j++) b0.qs[j] = (uint8_t)((j * 7) & 15) | (uint8_t)(((j * 5 + 3) & 15) << 4);
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q5_0, &b0, out, 32));
  /* Element 0: nibble 0, bit 0 of qh set -> 16 -> 0; element 16: nibble 3,
   * bit 16 (qh byte 2 = 0xa5, bit 0) set -> 19 -> 3 * 0.25. */
  CHECK(out[0] == 0.0f);
  CHECK(out[16] == 0.75f);
  /* Element 4: nibble 12, bit 4 (byte 0 = 0x0f) clear -> (12 - 16) / 4. */
  CHECK(out[4] == -1.0f);
  /* Element 31: nibble (15 * 5 + 3) & 15 = 14, bit 31 set -> 30 -> 3.5. */
  CHECK(out[31] == 3.5f);
  for (int j = 0; j < 32; j++) CHECK(out[j] == (float)(q5_value(qh, b0.qs, j) - 16) * 0.25f);

  tq_block_q5_1 b1;
  b1.d = 0x3400; /* 0.25 */
  b1.m = 0x4000; /* 2 */
  memcpy(b1.qh, qh, 4);
  memcpy(b1.qs, b0.qs, 16);
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q5_1, &b1, out, 32));
  CHECK(out[0] == 6.0f); /* 16 * 0.25 + 2 */
  for (int j = 0; j < 32; j++) CHECK(out[j] == (float)q5_value(qh, b1.qs, j) * 0.25f + 2.0f);
}

static void test_hand_q8_0(void) {
  tq_block_q8_0 b;
  b.d = 0x3000; /* 0.125 */
  for (int j = 0; j < 32; j++) b.qs[j] = (int8_t)(j * 8 - 128);
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q8_0, &b, out, 32));
  CHECK(out[0] == -16.0f);
  CHECK(out[31] == 15.0f);
  for (int j = 0; j < 32; j++) CHECK(out[j] == (float)(j * 8 - 128) * 0.125f);
}

/* Q2_K: scales[s] = (s & 15) | (15 - s) << 4, d = 0.5, dmin = 0.25. */
static void test_hand_q2_K(void) {
  tq_block_q2_K b;
  for (int s = 0; s < 16; s++) b.scales[s] = (uint8_t)((s & 15) | ((15 - s) << 4));
  for (int i = 0; i < 64; i++) b.qs[i] = rand_byte();
  b.qs[0] = 0xe4;  /* 2-bit fields 0, 1, 2, 3: elements 0, 32, 64, 96 */
  b.qs[48] = 0x1b; /* fields 3, 2, 1, 0: elements 128 + 16, + 48, + 80, + 112 */
  b.d = 0x3800;
  b.dmin = 0x3400;
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q2_K, &b, out, 256));
  /* Element 0: sub-block 0 (scale 0, min 15): 0.5 * 0 * 0 - 0.25 * 15. */
  CHECK(out[0] == -3.75f);
  /* Element 32: sub-block 2 (2, 13), q = 1: 0.5 * 2 * 1 - 0.25 * 13. */
  CHECK(out[32] == -2.25f);
  /* Element 96: sub-block 6 (6, 9), q = 3: 9 - 2.25. */
  CHECK(out[96] == 6.75f);
  /* Element 144 = 128 + 16: sub-block 9 (9, 6), q = 3: 13.5 - 1.5. */
  CHECK(out[144] == 12.0f);
  /* Element 240 = 128 + 96 + 16: sub-block 15 (15, 0), q = 0. */
  CHECK(out[240] == 0.0f);
  for (int e = 0; e < 256; e++) {
    int n = e / 128, j = (e % 128) / 32, l = e % 32;
    int q = (b.qs[32 * n + l] >> (2 * j)) & 3;
    int s = 8 * n + 2 * j + l / 16;
    float want = 0.5f * (float)(s & 15) * (float)q - 0.25f * (float)(15 - s);
    CHECKF(out[e] == want, "q2_K elem %d: %g, want %g", e, out[e], want);
  }
}

/* Packs 16 signed 6-bit Q3_K scales (-32..31). */
static void pack_q3_scales(uint8_t *scales, const int *s) {
  memset(scales, 0, 12);
  for (int i = 0; i < 16; i++) {
    unsigned v = (unsigned)(s[i] + 32);
    if (i < 8) scales[i] |= (uint8_t)(v & 15);
    else scales[i - 8] |= (uint8_t)((v & 15) << 4);
    scales[8 + i % 4] |= (uint8_t)((v >> 4) << (2 * (i / 4)));
  }
}

static void test_hand_q3_K(void) {
  tq_block_q3_K b;
  int s[16];
  for (int i = 0; i < 16; i++) s[i] = i * 4 - 32 + (i & 1); /* -32, -27, ..., 29 */
  pack_q3_scales(b.scales, s);
  for (int i = 0; i < 64; i++) b.qs[i] = rand_byte();
  for (int i = 0; i < 32; i++) b.hmask[i] = rand_byte();
  b.d = 0x3800;
  /* Literal check of the scale packing: scale 15 = 29 -> 61 = 0b111101:
   * low nibble 13 in the high nibble of byte 7, high bits 3 at bits 6-7 of
   * byte 11. */
  CHECK((b.scales[7] >> 4) == 13);
  CHECK((b.scales[11] >> 6) == 3);
  b.qs[0] = 0x1b;     /* low bits 3, 2, 1, 0 for elements 0, 32, 64, 96 */
  b.hmask[0] = 0x05;  /* high bit set for elements 0 (bit 0) and 64 (bit 2) */
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q3_K, &b, out, 256));
  /* Element 0: q = 3 (high bit set: no -4), scale -32: 0.5 * -32 * 3. */
  CHECK(out[0] == -48.0f);
  /* Element 32: q = 2 - 4, sub-block 2, scale -24: 0.5 * -24 * -2. */
  CHECK(out[32] == 24.0f);
  /* Element 64: q = 1, sub-block 4, scale -16. */
  CHECK(out[64] == -8.0f);
  /* Element 96: q = 0 - 4, sub-block 6, scale -8. */
  CHECK(out[96] == 16.0f);
  for (int e = 0; e < 256; e++) {
    int n = e / 128, j = (e % 128) / 32, l = e % 32;
    int q = ((b.qs[32 * n + l] >> (2 * j)) & 3) - ((b.hmask[l] >> (4 * n + j)) & 1 ? 0 : 4);
    float want = 0.5f * (float)s[8 * n + 2 * j + l / 16] * (float)q;
    CHECKF(out[e] == want, "q3_K elem %d: %g, want %g", e, out[e], want);
  }
}

/* Packs 8 6-bit scales and mins of a Q4_K / Q5_K block: sub-blocks 0-3 in
 * the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 with
 * their low nibbles in bytes 8-11 (scale low, min high) and their top two
 * bits in the top bits of bytes 0-3 (scales) and 4-7 (mins). */
static void pack_k4_scales(uint8_t *scales, const int *sc, const int *m) {
  for (int j = 0; j < 4; j++) {
    scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
    scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
    scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

static void test_hand_q4_K(void) {
  /* Literal block: d = 1, dmin = 0.5. Byte 0 = 0xc5: scale 0 = 5, top bits
   * 3 for scale 4; byte 8 = 0x21: scale 4 low nibble 1, min 4 low nibble 2;
   * byte 4 = 0x87: min 0 = 7, top bits 2 for min 4. So scale 4 = 49 and
   * min 4 = 34. Bytes 1, 5: scale 1 = 2, min 1 = 4. */
  tq_block_q4_K b;
  memset(&b, 0, sizeof b);
  b.d = 0x3c00;
  b.dmin = 0x3800;
  b.scales[0] = 0xc5;
  b.scales[8] = 0x21;
  b.scales[4] = 0x87;
  b.scales[1] = 0x02;
  b.scales[5] = 0x04;
  b.qs[0] = 0x3a;  /* element 0: 10 (sub-block 0), element 32: 3 (sub-block 1) */
  b.qs[64] = 0x0f; /* element 128: 15 (sub-block 4) */
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q4_K, &b, out, 256));
  CHECK(out[0] == 46.5f);   /* 5 * 10 - 0.5 * 7 */
  CHECK(out[1] == -3.5f);   /* 5 * 0 - 0.5 * 7 */
  CHECK(out[32] == 4.0f);   /* 2 * 3 - 0.5 * 4 */
  CHECK(out[128] == 718.0f); /* 49 * 15 - 0.5 * 34 */
  CHECK(out[129] == -17.0f);

  /* Full block from packed parameters. */
  int sc[8], m[8];
  for (int j = 0; j < 8; j++) {
    sc[j] = 10 + 7 * j;
    m[j] = 63 - 5 * j;
  }
  pack_k4_scales(b.scales, sc, m);
  for (int i = 0; i < 128; i++) b.qs[i] = rand_byte();
  b.d = 0x3800;
  b.dmin = 0x3400;
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q4_K, &b, out, 256));
  for (int e = 0; e < 256; e++) {
    int p = e / 64, hi = (e % 64) / 32, l = e % 32, s = 2 * p + hi;
    int q = (b.qs[32 * p + l] >> (4 * hi)) & 15;
    float want = 0.5f * (float)sc[s] * (float)q - 0.25f * (float)m[s];
    CHECKF(out[e] == want, "q4_K elem %d: %g, want %g", e, out[e], want);
  }
}

static void test_hand_q5_K(void) {
  tq_block_q5_K b;
  int sc[8], m[8];
  for (int j = 0; j < 8; j++) {
    sc[j] = 63 - 6 * j;
    m[j] = 3 + 8 * j;
  }
  pack_k4_scales(b.scales, sc, m);
  for (int i = 0; i < 128; i++) b.qs[i] = rand_byte();
  for (int i = 0; i < 32; i++) b.qh[i] = rand_byte();
  b.qs[0] = 0x00;
  b.qh[0] = 0x02; /* element 0: 0; element 32: 0 + 16 (bit 1) */
  b.d = 0x3800;
  b.dmin = 0x3400;
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q5_K, &b, out, 256));
  CHECK(out[0] == -0.75f);             /* 0 - 0.25 * 3 */
  CHECK(out[32] == 0.5f * 57 * 16 - 0.25f * 11);
  for (int e = 0; e < 256; e++) {
    int p = e / 64, hi = (e % 64) / 32, l = e % 32, s = 2 * p + hi;
    int q = ((b.qs[32 * p + l] >> (4 * hi)) & 15) + (((b.qh[l] >> s) & 1) << 4);
    float want = 0.5f * (float)sc[s] * (float)q - 0.25f * (float)m[s];
    CHECKF(out[e] == want, "q5_K elem %d: %g, want %g", e, out[e], want);
  }
}

static void test_hand_q6_K(void) {
  tq_block_q6_K b;
  for (int i = 0; i < 16; i++) b.scales[i] = (int8_t)(i * 16 - 120);
  for (int i = 0; i < 128; i++) b.ql[i] = rand_byte();
  for (int i = 0; i < 64; i++) b.qh[i] = rand_byte();
  b.d = 0x3800;
  /* Element 0: low nibble of ql[0], bits 0-1 of qh[0]; element 96: high
   * nibble of ql[32], bits 6-7 of qh[0]; element 128 + 64 + 17: high nibble
   * of ql[64 + 17], bits 4-5 of qh[32 + 17]. */
  b.ql[0] = 0x05;
  b.ql[32] = 0xa0;
  b.qh[0] = 0x82; /* bits 0-1: 2, bits 6-7: 2 */
  b.ql[81] = 0xf0;
  b.qh[49] = 0x10; /* bits 4-5: 1 */
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q6_K, &b, out, 256));
  CHECK(out[0] == 0.5f * -120 * ((5 | 2 << 4) - 32));       /* scale 0 */
  CHECK(out[96] == 0.5f * -24 * ((10 | 2 << 4) - 32));      /* scale 6 */
  CHECK(out[209] == 0.5f * 88 * ((15 | 1 << 4) - 32));     /* scale 8 + 4 + 1 */
  for (int e = 0; e < 256; e++) {
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    int lo4 = (b.ql[64 * h + 32 * (k & 1) + l] >> (4 * (k / 2))) & 15;
    int hi2 = (b.qh[32 * h + l] >> (2 * k)) & 3;
    float want = 0.5f * (float)b.scales[8 * h + 2 * k + l / 16] * (float)((lo4 | hi2 << 4) - 32);
    CHECKF(out[e] == want, "q6_K elem %d: %g, want %g", e, out[e], want);
  }
}

/* ------------------------------------------------------------------------ */
/* Random weights                                                            */
/* ------------------------------------------------------------------------ */

/* An fp16 scale of random size around `scale`, sign random if `sign`. */
static uint16_t rand_scale(float scale, int sign) {
  float v = scale * (0.25f + (float)tq_test_uniform(&rng));
  if (sign && (tq_test_next(&rng) & 1)) v = -v;
  return tq_f32_to_f16(v);
}

/* A (rows, cols) matrix in `type`: quantized from Gaussian data where the
 * library has a quantizer, otherwise random bytes with sane fp16 scales. */
static uint8_t *random_weights(tq_tensor_type type, size_t rows, size_t cols) {
  size_t rb = (size_t)tq_tensor_row_bytes(type, cols), bb = tq_tensor_type_block_bytes(type);
  size_t nb = rows * cols / tq_tensor_type_block(type);
  uint8_t *w = xmalloc(rows * rb);
  if (type == TQ_TENSOR_F32 || type == TQ_TENSOR_F16 || type == TQ_TENSOR_BF16 ||
      type == TQ_TENSOR_Q8_0 || type == TQ_TENSOR_Q4_0 || type == TQ_TENSOR_Q4_1) {
    float *f = xmalloc(rows * cols * sizeof *f);
    for (size_t i = 0; i < rows * cols; i++) f[i] = gauss() * 0.1f;
    CHECK_OK(tq_tensor_from_float(type, f, w, rows * cols));
    free(f);
    return w;
  }
  for (size_t i = 0; i < rows * rb; i++) w[i] = rand_byte();
  for (size_t i = 0; i < nb; i++) {
    uint8_t *b = w + i * bb;
    switch (type) {
      case TQ_TENSOR_Q5_0: put16(b, rand_scale(0.01f, 1)); break;
      case TQ_TENSOR_Q5_1:
        put16(b, rand_scale(0.005f, 0));
        put16(b + 2, rand_scale(0.08f, 1));
        break;
      case TQ_TENSOR_Q2_K:
        put16(b + 80, rand_scale(0.01f, 0));
        put16(b + 82, rand_scale(0.005f, 0));
        break;
      case TQ_TENSOR_Q3_K: put16(b + 108, rand_scale(0.001f, 1)); break;
      case TQ_TENSOR_Q4_K:
      case TQ_TENSOR_Q5_K:
        put16(b, rand_scale(0.002f, 0));
        put16(b + 2, rand_scale(0.002f, 0));
        break;
      case TQ_TENSOR_Q6_K: put16(b + 208, rand_scale(0.0002f, 1)); break;
      default: break;
    }
  }
  return w;
}

/* Column counts to test for a type: multiples of its block from 32 to 1024,
 * one beyond TQ_MM_KC (two column chunks), and for the float types some that
 * are not multiples of the vector width. */
static size_t cols_for(tq_tensor_type type, size_t *cols) {
  uint32_t block = tq_tensor_type_block(type);
  if (block == 256) {
    static const size_t c[] = {256, 512, 1024, 1536};
    memcpy(cols, c, sizeof c);
    return COUNT(c);
  }
  if (block == 32) {
    static const size_t c[] = {32, 96, 576, 1024, 1120};
    memcpy(cols, c, sizeof c);
    return COUNT(c);
  }
  static const size_t c[] = {1, 7, 32, 100, 576, 1030};
  memcpy(cols, c, sizeof c);
  return COUNT(c);
}

/* ------------------------------------------------------------------------ */
/* Dequantization kernels of each level against the reference               */
/* ------------------------------------------------------------------------ */

static void test_dequant_levels(void) {
  for (size_t li = 0; li < COUNT(levels); li++) {
    const tq_quant_kernels *k = tq_quant_kernels_get(levels[li]);
    if (!k) {
      TQ_SKIP("test_dequant_levels", tq_simd_name(levels[li]));
      continue;
    }
    for (size_t ti = 0; ti < COUNT(supported_types); ti++) {
      tq_tensor_type type = supported_types[ti];
      if (!k->dequant[type]) continue;
      size_t cols = tq_tensor_type_block(type) == 1 ? 1003 : 1024;
      uint8_t *w = random_weights(type, 1, cols);
      float *ref = xmalloc(cols * sizeof *ref), *got = xmalloc(cols * sizeof *got);
      CHECK_OK(tq_tensor_to_float(type, w, ref, cols));
      k->dequant[type](w, got, cols / tq_tensor_type_block(type));
      /* Within a few float roundings of the block's largest magnitude (the
       * kernels fuse q * d + m). */
      size_t blk = tq_tensor_type_block(type) > 1 ? tq_tensor_type_block(type) : 1;
      for (size_t b0 = 0; b0 < cols; b0 += blk) {
        float amax = 0.0f;
        for (size_t j = b0; j < b0 + blk; j++) amax = fmaxf(amax, fabsf(ref[j]));
        for (size_t j = b0; j < b0 + blk; j++)
          CHECKF(fabsf(got[j] - ref[j]) <= 1e-6f * amax, "%s %s elem %zu: %.9g vs %.9g",
                 tq_simd_name(levels[li]), tq_tensor_type_name(type), j, got[j], ref[j]);
      }
      free(w);
      free(ref);
      free(got);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Matrix products                                                           */
/* ------------------------------------------------------------------------ */

static void test_matmul_levels(void) {
  static const size_t rows_list[] = {1, 7, 33, 70};
  static const uint32_t tok_list[] = {1, 3, 5, 17, 70};
  int ran[COUNT(levels)] = {0};
  for (size_t ti = 0; ti < COUNT(supported_types); ti++) {
    tq_tensor_type type = supported_types[ti];
    size_t cols_list[8];
    size_t n_cols = cols_for(type, cols_list);
    for (size_t ri = 0; ri < COUNT(rows_list); ri++) {
      for (size_t ci = 0; ci < n_cols; ci++) {
        size_t rows = rows_list[ri], cols = cols_list[ci];
        uint8_t *w = random_weights(type, rows, cols);
        float *wf = xmalloc(rows * cols * sizeof *wf);
        CHECK_OK(tq_tensor_to_float(type, w, wf, rows * cols));
        for (size_t ni = 0; ni < COUNT(tok_list); ni++) {
          uint32_t n_tok = tok_list[ni];
          /* Keep the largest shapes to a few token counts. */
          if (rows * cols * n_tok > 3000000) continue;
          float *x = xmalloc(n_tok * cols * sizeof *x);
          for (size_t i = 0; i < n_tok * cols; i++) x[i] = gauss();
          double *ref = xmalloc(n_tok * rows * sizeof *ref), *mag = xmalloc(n_tok * rows * sizeof *mag);
          for (size_t t = 0; t < n_tok; t++)
            for (size_t r = 0; r < rows; r++) {
              double s = 0.0, a = 0.0;
              for (size_t c = 0; c < cols; c++) {
                double p = (double)wf[r * cols + c] * (double)x[t * cols + c];
                s += p;
                a += fabs(p);
              }
              ref[t * rows + r] = s;
              mag[t * rows + r] = a;
            }
          float *y = xmalloc(n_tok * rows * sizeof *y);
          for (size_t li = 0; li < COUNT(levels); li++) {
            if (!tq_simd_supported(levels[li])) continue;
            ran[li] = 1;
            for (size_t i = 0; i < n_tok * rows; i++) y[i] = NAN;
            CHECK_OK(tq_matmul_at(levels[li], type, w, rows, cols, x, n_tok, y, NULL));
            int bad = 0;
            for (size_t i = 0; i < n_tok * rows && bad < 3; i++) {
              double err = fabs((double)y[i] - ref[i]);
              if (!(err <= REL_TOL * mag[i] + 1e-30)) {
                bad++;
                TQ_FAIL_("%s %s rows %zu cols %zu n_tok %u: y[%zu] = %.9g, ref %.9g (mag %.3g)",
                         tq_simd_name(levels[li]), tq_tensor_type_name(type), rows, cols, n_tok,
                         i, y[i], ref[i], mag[i]);
              }
            }
          }
          free(x);
          free(ref);
          free(mag);
          free(y);
        }
        free(w);
        free(wf);
      }
    }
  }
  for (size_t li = 0; li < COUNT(levels); li++)
    if (!ran[li]) TQ_SKIP("test_matmul_levels", tq_simd_name(levels[li]));
}

/* The same product with pools of 1, 2 and 3 threads (and none) gives the
 * same bits, on both paths (1 token: fused; 70: batched over two token
 * tiles). */
static void test_matmul_threads(void) {
  static const tq_tensor_type types[] = {TQ_TENSOR_Q4_1, TQ_TENSOR_F32, TQ_TENSOR_Q6_K};
  static const uint32_t toks[] = {1, 3, 70};
  tq_pool *pools[3] = {NULL, NULL, NULL};
  for (uint32_t i = 0; i < 3; i++) CHECK_OK(tq_pool_create(i + 1, &pools[i]));
  for (size_t ti = 0; ti < COUNT(types); ti++) {
    size_t rows = 101, cols = 512;
    uint8_t *w = random_weights(types[ti], rows, cols);
    for (size_t ni = 0; ni < COUNT(toks); ni++) {
      uint32_t n_tok = toks[ni];
      float *x = xmalloc(n_tok * cols * sizeof *x);
      for (size_t i = 0; i < n_tok * cols; i++) x[i] = gauss();
      float *y0 = xmalloc(n_tok * rows * sizeof *y0), *y1 = xmalloc(n_tok * rows * sizeof *y1);
      for (size_t li = 0; li < COUNT(levels); li++) {
        if (!tq_simd_supported(levels[li])) continue;
        CHECK_OK(tq_matmul_at(levels[li], types[ti], w, rows, cols, x, n_tok, y0, NULL));
        for (int p = 0; p < 3; p++) {
          memset(y1, 0xff, n_tok * rows * sizeof *y1);
          CHECK_OK(tq_matmul_at(levels[li], types[ti], w, rows, cols, x, n_tok, y1, pools[p]));
          CHECKF(memcmp(y0, y1, n_tok * rows * sizeof *y0) == 0, "%s %s n_tok %u: %d threads differ",
                 tq_simd_name(levels[li]), tq_tensor_type_name(types[ti]), n_tok, p + 1);
        }
      }
      free(x);
      free(y0);
      free(y1);
    }
    free(w);
  }
  for (int i = 0; i < 3; i++) tq_pool_free(pools[i]);
}

/* TQ_SIMD_AUTO is tq_simd_default(): the same bits as that level. */
static void test_matmul_auto(void) {
  size_t rows = 20, cols = 64;
  uint8_t *w = random_weights(TQ_TENSOR_Q8_0, rows, cols);
  float x[64 * 2], y0[40], y1[40];
  for (size_t i = 0; i < COUNT(x); i++) x[i] = gauss();
  CHECK_OK(tq_matmul(TQ_TENSOR_Q8_0, w, rows, cols, x, 2, y0, NULL));
  CHECK_OK(tq_matmul_at(tq_simd_default(), TQ_TENSOR_Q8_0, w, rows, cols, x, 2, y1, NULL));
  CHECK(memcmp(y0, y1, sizeof y0) == 0);
  free(w);
}

static void test_row_to_float(void) {
  size_t rows = 5, cols = 512;
  for (size_t ti = 0; ti < COUNT(supported_types); ti++) {
    tq_tensor_type type = supported_types[ti];
    uint8_t *w = random_weights(type, rows, cols);
    float *all = xmalloc(rows * cols * sizeof *all), row[512];
    CHECK_OK(tq_tensor_to_float(type, w, all, rows * cols));
    for (size_t r = 0; r < rows; r++) {
      CHECK_OK(tq_row_to_float(type, w, cols, r, row));
      CHECK(memcmp(row, all + r * cols, sizeof row) == 0);
    }
    free(w);
    free(all);
  }
}

/* ------------------------------------------------------------------------ */
/* Errors and edge cases                                                     */
/* ------------------------------------------------------------------------ */

static void test_errors(void) {
  float x[512], y[512];
  uint8_t w[4096];
  memset(w, 0, sizeof w);
  for (size_t i = 0; i < COUNT(x); i++) x[i] = 1.0f;
  const tq_tensor_type bad_type = (tq_tensor_type)4;

  /* Types without kernels, and values that are no type. */
  CHECK_STATUS(tq_matmul(TQ_TENSOR_Q8_1, w, 2, 32, x, 1, y, NULL), TQ_ERR_UNSUPPORTED);
  CHECK_STATUS(tq_matmul(TQ_TENSOR_Q8_K, w, 2, 256, x, 1, y, NULL), TQ_ERR_UNSUPPORTED);
  CHECK_STATUS(tq_matmul(bad_type, w, 2, 32, x, 1, y, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_to_float(TQ_TENSOR_Q8_1, w, y, 32), TQ_ERR_UNSUPPORTED);
  CHECK_STATUS(tq_tensor_to_float(TQ_TENSOR_Q8_K, w, y, 256), TQ_ERR_UNSUPPORTED);
  CHECK_STATUS(tq_tensor_to_float(bad_type, w, y, 32), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_from_float(TQ_TENSOR_Q5_0, x, w, 32), TQ_ERR_UNSUPPORTED);
  CHECK_STATUS(tq_tensor_from_float(TQ_TENSOR_Q4_K, x, w, 256), TQ_ERR_UNSUPPORTED);
  CHECK_STATUS(tq_tensor_from_float(bad_type, x, w, 32), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_row_to_float(TQ_TENSOR_Q8_1, w, 32, 0, y), TQ_ERR_UNSUPPORTED);

  /* NULL arguments. */
  CHECK_STATUS(tq_matmul(TQ_TENSOR_F32, NULL, 2, 32, x, 1, y, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_matmul(TQ_TENSOR_F32, w, 2, 32, NULL, 1, y, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_matmul(TQ_TENSOR_F32, w, 2, 32, x, 1, NULL, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_to_float(TQ_TENSOR_Q4_0, NULL, y, 32), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_to_float(TQ_TENSOR_Q4_0, w, NULL, 32), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_from_float(TQ_TENSOR_Q4_0, NULL, w, 32), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_from_float(TQ_TENSOR_Q4_0, x, NULL, 32), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_row_to_float(TQ_TENSOR_Q4_0, NULL, 32, 0, y), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_row_to_float(TQ_TENSOR_Q4_0, w, 32, 0, NULL), TQ_ERR_INVALID_ARGUMENT);

  /* Lengths that are not a multiple of the block. */
  CHECK_STATUS(tq_matmul(TQ_TENSOR_Q4_0, w, 2, 48, x, 1, y, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_matmul(TQ_TENSOR_Q4_K, w, 2, 288, x, 1, y, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_to_float(TQ_TENSOR_Q8_0, w, y, 31), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_from_float(TQ_TENSOR_Q4_1, x, w, 33), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_row_to_float(TQ_TENSOR_Q6_K, w, 100, 0, y), TQ_ERR_INVALID_ARGUMENT);

  /* Levels that are not levels. */
  CHECK_STATUS(tq_matmul_at((tq_simd_level)99, TQ_TENSOR_F32, w, 2, 32, x, 1, y, NULL),
               TQ_ERR_UNSUPPORTED_SIMD);
  for (size_t li = 0; li < COUNT(levels); li++)
    if (!tq_simd_supported(levels[li]))
      CHECK_STATUS(tq_matmul_at(levels[li], TQ_TENSOR_F32, w, 2, 32, x, 1, y, NULL),
                   TQ_ERR_UNSUPPORTED_SIMD);

  /* Sizes whose products overflow. */
  CHECK_STATUS(tq_matmul(TQ_TENSOR_F32, w, UINT64_MAX / 2, 64, x, 1, y, NULL),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_matmul(TQ_TENSOR_F32, w, 2, UINT64_MAX / 2, x, 3, y, NULL),
               TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_tensor_to_float(TQ_TENSOR_F32, w, y, UINT64_MAX - 15), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_row_to_float(TQ_TENSOR_F32, w, 64, UINT64_MAX / 8, y), TQ_ERR_INVALID_ARGUMENT);

  /* Empty shapes: nothing to do, or sums of nothing. */
  y[0] = 5.0f;
  CHECK_OK(tq_matmul(TQ_TENSOR_Q4_0, w, 0, 32, x, 1, y, NULL));
  CHECK_OK(tq_matmul(TQ_TENSOR_Q4_0, w, 2, 32, x, 0, y, NULL));
  CHECK(y[0] == 5.0f);
  for (int i = 0; i < 6; i++) y[i] = 5.0f;
  CHECK_OK(tq_matmul(TQ_TENSOR_Q4_0, w, 3, 0, x, 2, y, NULL));
  for (int i = 0; i < 6; i++) CHECK(y[i] == 0.0f);
  CHECK_OK(tq_tensor_to_float(TQ_TENSOR_Q4_0, w, y, 0));
  CHECK_OK(tq_tensor_from_float(TQ_TENSOR_Q4_0, x, w, 0));
}

int main(void) {
  printf("test_quant: simd default %s\n", tq_simd_name(tq_simd_default()));
  TQ_RUN(test_type_info);
  TQ_RUN(test_roundtrip_float_types);
  TQ_RUN(test_roundtrip_q8_0);
  TQ_RUN(test_roundtrip_q4_0);
  TQ_RUN(test_roundtrip_q4_1);
  TQ_RUN(test_quantize_extremes);
  TQ_RUN(test_hand_q4_0);
  TQ_RUN(test_hand_q4_1);
  TQ_RUN(test_hand_q5);
  TQ_RUN(test_hand_q8_0);
  TQ_RUN(test_hand_q2_K);
  TQ_RUN(test_hand_q3_K);
  TQ_RUN(test_hand_q4_K);
  TQ_RUN(test_hand_q5_K);
  TQ_RUN(test_hand_q6_K);
  TQ_RUN(test_dequant_levels);
  TQ_RUN(test_matmul_levels);
  TQ_RUN(test_matmul_threads);
  TQ_RUN(test_matmul_auto);
  TQ_RUN(test_row_to_float);
  TQ_RUN(test_errors);
  return tq_test_summary("test_quant");
}
