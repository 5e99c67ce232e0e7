/*
 * quant_avx512.c - the weight kernels of quant.h for AVX-512 F/BW/VL/DQ
 * (+ FMA, F16C), sixteen floats per __m512.
 *
 * Results match the scalar reference to float rounding: dequantization uses
 * fused multiply-adds where ggml rounds twice (d * q + m, sc * q - m), and
 * dot products run in sixteen lanes folded at the end (explicit
 * _mm512_fmadd_ps; the file is compiled with -ffp-contract=off).
 *
 * Every type is read in units whose elements come out as whole vectors:
 * - 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): two vectors; the
 *   16 quant bytes widened to dwords once (vpmovzxbd from memory). 4-bit
 *   values are looked up (vpermps, which reads only an index's low 4 bits,
 *   so low nibbles need no mask) in a per-block 16-entry table of
 *   i * d + m; 5-bit values are split, get their fifth bits under a mask
 *   register and are converted; a block's fp16 scales come from one
 *   broadcast load of its first 32 bits, converted, and spread by in-lane
 *   permutes;
 * - K-quant super-blocks: per super-block the 8 or 16 sub-block scales
 *   (and mins) are unpacked once into floats, then units of 64 (128 for
 *   Q6_K) consecutive elements, four (eight) vectors each; Q4_K through
 *   per-sub-block tables as above;
 * - the K-quant per-sub-block factors are broadcast from memory (a load, not
 *   a shuffle: the shuffle port is the one the widening and lookups need);
 * - F32 / F16 / BF16: one vector per 16 elements, masked at the row's end.
 * The same unit functions serve the fused dot kernels (dequantized in
 * registers and multiplied with up to TQ_DOT_MAX_TOKENS tokens' x as they
 * are read, for decode) and the dequantize-to-buffer kernels (for the
 * batched path, whose float tile kernel is gemm_avx512: 4 rows x 6 tokens).
 *
 * Loads never leave the blocks of the row or the caller's x and W.
 */
#include <immintrin.h>
#include <string.h>

#include "quant.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512DQ__) || !defined(__FMA__) || !defined(__F16C__)
#error "quant_avx512.c must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c"
#endif

#define TQ_INLINE static inline __attribute__((always_inline))

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

static inline __m128i load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* Bytes (as signed int8) to 16 floats. */
static inline __m512 i8_ps(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)); }

/* Mask of the first n lanes, n <= 16. */
static inline __mmask16 first_lanes(size_t n) { return (__mmask16)((1u << n) - 1u); }

/* ------------------------------------------------------------------------ */
/* Horizontal sums                                                           */
/* ------------------------------------------------------------------------ */

static inline float hsum(__m512 v) {
  __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

/* Lane i of the result = the sum of the 16 lanes of v[i]: a transpose-and-
 * add tree (15 adds and 30 shuffles for 16 sums). */
TQ_INLINE __m512 reduce16(const __m512 *v) {
  __m512 p[8], s[4];
  /* p[i], per 128-bit lane: v[2i] lanes 0+2, v[2i+1] 0+2, v[2i] 1+3, v[2i+1] 1+3. */
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++)
    p[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  /* s[i], per 128-bit lane L: the lane-L sums of v[4i], ..., v[4i+3]. */
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++)
    s[i] = _mm512_add_ps(_mm512_shuffle_ps(p[2 * i], p[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(p[2 * i], p[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  /* Lanes 0+1 and 2+3 of s[0], s[1] (q0) and of s[2], s[3] (q1); then the
   * 128-bit lane j of the result holds the totals of v[4j..4j+3]. */
  __m512 q0 = _mm512_add_ps(_mm512_shuffle_f32x4(s[0], s[1], 0x88),
                            _mm512_shuffle_f32x4(s[0], s[1], 0xdd));
  __m512 q1 = _mm512_add_ps(_mm512_shuffle_f32x4(s[2], s[3], 0x88),
                            _mm512_shuffle_f32x4(s[2], s[3], 0xdd));
  return _mm512_add_ps(_mm512_shuffle_f32x4(q0, q1, 0x88), _mm512_shuffle_f32x4(q0, q1, 0xdd));
}

/* ------------------------------------------------------------------------ */
/* 32-element blocks: block -> w[0] (elements 0-15), w[1] (16-31)            */
/* ------------------------------------------------------------------------ */

/* Forces the K-quant scale arrays through memory, so that they are
 * broadcast from there (vbroadcastss m32: a pure load) rather than kept in
 * registers and broadcast by shuffles (the shuffle port is the one the
 * widening and table lookups need). */
#define SCALES_IN_MEMORY(p) __asm__ __volatile__("" : : "r"(p) : "memory")

static inline uint32_t load_u32(const uint8_t *p) {
  uint32_t u;
  memcpy(&u, p, 4);
  return u;
}

/* The block's first 32 bits (fp16 d, then fp16 m or quant bytes) broadcast
 * to every dword (a pure load) and converted: lanes alternate d, m. */
static inline __m512 head_dm(const uint8_t *p) {
  return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_set1_epi32((int)load_u32(p))));
}

/* Per-block factors in registers: w = q * d + m for the unsigned 4- or
 * 5-bit q (Q5_0: m = -16 d, one rounding, exactly ggml's (q - 16) * d);
 * Q4_0 and Q8_0 use d only. (Converted per block: a prepass of all scales
 * into an array costs more than it saves on rows of a few dozen blocks.) */
typedef void (*scale32_fn)(const uint8_t *blk, __m512 *d, __m512 *m);
/* One block into w[0..1], given its factors. */
typedef void (*vec32_fn)(const uint8_t *blk, __m512 d, __m512 m, __m512 *w);

TQ_INLINE void scale_d(const uint8_t *p, __m512 *d, __m512 *m) {
  *d = _mm512_permute_ps(head_dm(p), 0x00);
  *m = _mm512_setzero_ps();
}
TQ_INLINE void scale_dm(const uint8_t *p, __m512 *d, __m512 *m) {
  const __m512 dm = head_dm(p);
  *d = _mm512_permute_ps(dm, 0x00);
  *m = _mm512_permute_ps(dm, 0x55);
}
TQ_INLINE void scale_d16(const uint8_t *p, __m512 *d, __m512 *m) {
  *d = _mm512_permute_ps(head_dm(p), 0x00);
  *m = _mm512_mul_ps(*d, _mm512_set1_ps(-16.0f));
}
#define scale_q4_0 scale_d
#define scale_q4_1 scale_dm
#define scale_q5_0 scale_d16
#define scale_q5_1 scale_dm
#define scale_q8_0 scale_d

/* The 16 bytes of qs widened to dwords once; low nibbles (elements 0-15)
 * by a mask, high nibbles (16-31) by a shift. */
static inline void nibbles32(const uint8_t *qs, __m512i *lo, __m512i *hi) {
  const __m512i v = _mm512_cvtepu8_epi32(load128(qs));
  *lo = _mm512_and_si512(v, _mm512_set1_epi32(15));
  *hi = _mm512_srli_epi32(v, 4);
}

/* Adds 16 where bit j of the little-endian qh has element j's fifth bit. */
static inline void fifth_bits(const uint8_t *qh4, __m512i *lo, __m512i *hi) {
  uint32_t qh = load_u32(qh4);
  const __m512i b4 = _mm512_set1_epi32(16);
  *lo = _mm512_mask_or_epi32(*lo, (__mmask16)(qh & 0xffffu), *lo, b4);
  *hi = _mm512_mask_or_epi32(*hi, (__mmask16)(qh >> 16), *hi, b4);
}

TQ_INLINE void affine2(__m512i lo, __m512i hi, __m512 d, __m512 m, __m512 *w) {
  w[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), d, m);
  w[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), d, m);
}

/* 4-bit quants through a 16-entry table `table` (entry i = the weight of
 * quant i), looked up by vpermps, which reads only the low 4 bits of each
 * index lane: the low nibbles need no mask. Per block one widening, one
 * shift, one table and two lookups: fewer uops than converting and scaling
 * each vector, split evenly between the two 512-bit ports. */
TQ_INLINE void lut_q4(const uint8_t *qs, __m512 table, __m512 *w) {
  const __m512i v = _mm512_cvtepu8_epi32(load128(qs));
  w[0] = _mm512_permutexvar_ps(v, table);
  w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table);
}

/* Q4_0: the table (i - 8) * d (exactly ggml's products). */
TQ_INLINE void vec_q4_0(const uint8_t *p, __m512 d, __m512 m, __m512 *w) {
  (void)m;
  const __m512 iota8 = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  lut_q4(((const tq_block_q4_0 *)(const void *)p)->qs, _mm512_mul_ps(iota8, d), w);
}

/* Q4_1: the table i * d + m (one fused rounding, as affine2). */
TQ_INLINE void vec_q4_1(const uint8_t *p, __m512 d, __m512 m, __m512 *w) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  lut_q4(((const tq_block_q4_1 *)(const void *)p)->qs, _mm512_fmadd_ps(iota, d, m), w);
}

TQ_INLINE void vec_q5_0(const uint8_t *p, __m512 d, __m512 m, __m512 *w) {
  const tq_block_q5_0 *b = (const tq_block_q5_0 *)(const void *)p;
  __m512i lo, hi;
  nibbles32(b->qs, &lo, &hi);
  fifth_bits(b->qh, &lo, &hi);
  affine2(lo, hi, d, m, w);
}

TQ_INLINE void vec_q5_1(const uint8_t *p, __m512 d, __m512 m, __m512 *w) {
  const tq_block_q5_1 *b = (const tq_block_q5_1 *)(const void *)p;
  __m512i lo, hi;
  nibbles32(b->qs, &lo, &hi);
  fifth_bits(b->qh, &lo, &hi);
  affine2(lo, hi, d, m, w);
}

TQ_INLINE void vec_q8_0(const uint8_t *p, __m512 d, __m512 m, __m512 *w) {
  (void)m;
  const tq_block_q8_0 *b = (const tq_block_q8_0 *)(const void *)p;
  w[0] = _mm512_mul_ps(i8_ps(load128(b->qs)), d);
  w[1] = _mm512_mul_ps(i8_ps(load128(b->qs + 16)), d);
}

TQ_INLINE void block32(const uint8_t *blk, scale32_fn sf, vec32_fn vf, __m512 *w) {
  __m512 d, m;
  sf(blk, &d, &m);
  vf(blk, d, m, w);
}

/* Fused dot of one row of nb blocks with NT tokens: two blocks per step,
 * four accumulator chains per token. */
TQ_INLINE void dot32(const uint8_t *row, size_t nb, size_t bb, scale32_fn sf, vec32_fn vf,
                     const float *x, size_t ldx, float *y, size_t ldy, const uint32_t NT) {
  __m512 acc[TQ_DOT_MAX_TOKENS][4];
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) acc[t][j] = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    __m512 w[4];
    block32(row + i * bb, sf, vf, w);
    block32(row + (i + 1) * bb, sf, vf, w + 2);
#pragma GCC unroll 4
    for (uint32_t t = 0; t < NT; t++) {
      const float *xt = x + t * ldx + 32 * i;
#pragma GCC unroll 4
      for (int j = 0; j < 4; j++)
        acc[t][j] = _mm512_fmadd_ps(w[j], _mm512_loadu_ps(xt + 16 * j), acc[t][j]);
    }
  }
  if (i < nb) {
    __m512 w[2];
    block32(row + i * bb, sf, vf, w);
#pragma GCC unroll 4
    for (uint32_t t = 0; t < NT; t++) {
      const float *xt = x + t * ldx + 32 * i;
#pragma GCC unroll 2
      for (int j = 0; j < 2; j++)
        acc[t][j] = _mm512_fmadd_ps(w[j], _mm512_loadu_ps(xt + 16 * j), acc[t][j]);
    }
  }
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
    y[t * ldy] = hsum(_mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]),
                                    _mm512_add_ps(acc[t][2], acc[t][3])));
}

TQ_INLINE void deq32(const uint8_t *blocks, size_t nb, size_t bb, scale32_fn sf, vec32_fn vf,
                     float *dst) {
  for (size_t i = 0; i < nb; i++) {
    __m512 w[2];
    block32(blocks + i * bb, sf, vf, w);
    _mm512_storeu_ps(dst + 32 * i, w[0]);
    _mm512_storeu_ps(dst + 32 * i + 16, w[1]);
  }
}

/* The per-type entry points: the kernel table's signatures, NT made a
 * compile-time constant. */
#define DEF_BLOCK32(NAME, BLOCK)                                                              \
  static void dot_##NAME(const void *w, size_t nb, const float *x, size_t ldx, uint32_t nt,  \
                         float *y, size_t ldy) {                                              \
    const uint8_t *row = w;                                                                   \
    const size_t bb = sizeof(BLOCK);                                                          \
    switch (nt) {                                                                             \
      case 1: dot32(row, nb, bb, scale_##NAME, vec_##NAME, x, ldx, y, ldy, 1); break;         \
      case 2: dot32(row, nb, bb, scale_##NAME, vec_##NAME, x, ldx, y, ldy, 2); break;         \
      case 3: dot32(row, nb, bb, scale_##NAME, vec_##NAME, x, ldx, y, ldy, 3); break;         \
      default: dot32(row, nb, bb, scale_##NAME, vec_##NAME, x, ldx, y, ldy, 4); break;        \
    }                                                                                         \
  }                                                                                           \
  static void deq_##NAME(const void *blocks, float *dst, size_t nb) {                        \
    deq32(blocks, nb, sizeof(BLOCK), scale_##NAME, vec_##NAME, dst);                          \
  }

DEF_BLOCK32(q4_0, tq_block_q4_0)
DEF_BLOCK32(q4_1, tq_block_q4_1)
DEF_BLOCK32(q5_0, tq_block_q5_0)
DEF_BLOCK32(q5_1, tq_block_q5_1)
DEF_BLOCK32(q8_0, tq_block_q8_0)

/* ------------------------------------------------------------------------ */
/* K-quant super-blocks: scales once, then units of 4 or 8 vectors           */
/* ------------------------------------------------------------------------ */

/* Per super-block factors: w = q * a[s] - b[s] for sub-block s (b unused by
 * the types without mins); for Q5_K also the fifth-bit bytes widened. */
typedef struct kscale {
  float a[16];
  float b[16];
  __m512i h[2];
} kscale;

typedef void (*kprep_fn)(const uint8_t *blk, kscale *ks);
/* Unit u of the super-block (VPU vectors = 16 VPU consecutive elements
 * starting at 16 VPU u) into w[0..VPU-1]. */
typedef void (*kvec_fn)(const uint8_t *blk, uint32_t u, const kscale *ks, __m512 *w);

/* Low and high nibbles of 16 bytes, as bytes. */
static inline void nibbles(__m128i q, __m128i *lo, __m128i *hi) {
  const __m128i m = _mm_set1_epi8(15);
  *lo = _mm_and_si128(q, m);
  *hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
}

/* v shifted so that its bit `bit` lands on bit `to` (compile-time after
 * inlining: one immediate shift). */
TQ_INLINE __m512i move_bit(__m512i v, const uint32_t bit, const uint32_t to) {
  if (bit == to) return v;
  return bit < to ? _mm512_slli_epi32(v, to - bit) : _mm512_srli_epi32(v, bit - to);
}

/* a | (b & c) in one vpternlogd. */
static inline __m512i or_and(__m512i a, __m512i b, __m512i c) {
  return _mm512_ternarylogic_epi32(a, b, c, 0xf8);
}

/* 8 unsigned bytes (two little-endian words) times f into 8 floats. */
static inline void scale8(uint32_t lo, uint32_t hi, float f, float *out) {
  __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)hi, (int)lo)));
  _mm256_storeu_ps(out, _mm256_mul_ps(v, _mm256_set1_ps(f)));
}

/* Q4_K / Q5_K: the 12 scale bytes as words u0 (bytes 0-3), u1 (4-7),
 * u2 (8-11): scales 0-3 = u0 & 63 per byte, mins 0-3 = u1 & 63; scales 4-7 =
 * low nibbles of u2 with the top two bits of u0 above; mins 4-7 = high
 * nibbles of u2 with the top two bits of u1 above. */
static inline void k4_prep(const uint8_t *scales, float d, float dmin, kscale *ks) {
  uint32_t u0 = load_u32(scales), u1 = load_u32(scales + 4), u2 = load_u32(scales + 8);
  uint32_t sc_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
  uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4);
  uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4);
  scale8(sc_lo, sc_hi, d, ks->a);
  scale8(m_lo, m_hi, dmin, ks->b);
}

TQ_INLINE void prep_q4_K(const uint8_t *p, kscale *ks) {
  const tq_block_q4_K *b = (const tq_block_q4_K *)(const void *)p;
  k4_prep(b->scales, h2f(b->d), h2f(b->dmin), ks);
}

/* Unit g < 4: qs[32 g .. 32 g + 31] widened to dwords (two halves); low
 * nibbles are sub-block 2 g, high nibbles 2 g + 1, each looked up in its
 * sub-block's 16-entry table i * a - b (vpermps uses the low 4 bits). */
TQ_INLINE void vec_q4_K(const uint8_t *p, uint32_t g, const kscale *ks, __m512 *w) {
  const tq_block_q4_K *b = (const tq_block_q4_K *)(const void *)p;
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 t0 = _mm512_fmsub_ps(iota, _mm512_set1_ps(ks->a[2 * g]), _mm512_set1_ps(ks->b[2 * g]));
  const __m512 t1 =
      _mm512_fmsub_ps(iota, _mm512_set1_ps(ks->a[2 * g + 1]), _mm512_set1_ps(ks->b[2 * g + 1]));
  const __m512i v0 = _mm512_cvtepu8_epi32(load128(b->qs + 32 * g));
  const __m512i v1 = _mm512_cvtepu8_epi32(load128(b->qs + 32 * g + 16));
  w[0] = _mm512_permutexvar_ps(v0, t0);
  w[1] = _mm512_permutexvar_ps(v1, t0);
  w[2] = _mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), t1);
  w[3] = _mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), t1);
}

TQ_INLINE void prep_q5_K(const uint8_t *p, kscale *ks) {
  const tq_block_q5_K *b = (const tq_block_q5_K *)(const void *)p;
  k4_prep(b->scales, h2f(b->d), h2f(b->dmin), ks);
  ks->h[0] = _mm512_cvtepu8_epi32(load128(b->qh));
  ks->h[1] = _mm512_cvtepu8_epi32(load128(b->qh + 16));
}

/* As Q4_K, plus bit 2 g (low nibbles) or 2 g + 1 (high) of qh[l] at bit 4. */
TQ_INLINE void vec_q5_K(const uint8_t *p, uint32_t g, const kscale *ks, __m512 *w) {
  const tq_block_q5_K *b = (const tq_block_q5_K *)(const void *)p;
  const __m512i v0 = _mm512_cvtepu8_epi32(load128(b->qs + 32 * g));
  const __m512i v1 = _mm512_cvtepu8_epi32(load128(b->qs + 32 * g + 16));
  const __m512i m4 = _mm512_set1_epi32(15), b4 = _mm512_set1_epi32(16);
  const __m512i h0 = ks->h[0], h1 = ks->h[1];
  const __m512i q0 = or_and(_mm512_and_si512(v0, m4), move_bit(h0, 2 * g, 4), b4);
  const __m512i q1 = or_and(_mm512_and_si512(v1, m4), move_bit(h1, 2 * g, 4), b4);
  const __m512i q2 = or_and(_mm512_srli_epi32(v0, 4), move_bit(h0, 2 * g + 1, 4), b4);
  const __m512i q3 = or_and(_mm512_srli_epi32(v1, 4), move_bit(h1, 2 * g + 1, 4), b4);
  const __m512 a0 = _mm512_set1_ps(ks->a[2 * g]), m0 = _mm512_set1_ps(ks->b[2 * g]);
  const __m512 a1 = _mm512_set1_ps(ks->a[2 * g + 1]), m1 = _mm512_set1_ps(ks->b[2 * g + 1]);
  w[0] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(q0), a0, m0);
  w[1] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(q1), a0, m0);
  w[2] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(q2), a1, m1);
  w[3] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(q3), a1, m1);
}

/* Q6_K: a[s] = d * scales[s] (ggml's d * sc, exactly), b[s] = 32 a[s], so
 * that q * a - b rounds once like ggml's (d * sc) * (q - 32). */
TQ_INLINE void prep_q6_K(const uint8_t *p, kscale *ks) {
  const tq_block_q6_K *b = (const tq_block_q6_K *)(const void *)p;
  const __m512 a = _mm512_mul_ps(i8_ps(load128(b->scales)), _mm512_set1_ps(h2f(b->d)));
  _mm512_storeu_ps(ks->a, a);
  _mm512_storeu_ps(ks->b, _mm512_mul_ps(a, _mm512_set1_ps(32.0f)));
}

/* Unit h < 2: elements 128 h + 32 k + l (k < 4, l < 32), eight vectors.
 * ql[64 h + 0..63] and qh[32 h + 0..31] are widened once; element
 * (k, l) takes nibble k / 2 of ql[64 h + 32 (k & 1) + l] and bits 2 k, 2 k + 1
 * of qh[32 h + l] at bits 4-5; sub-block 8 h + 2 k + l / 16. */
TQ_INLINE void vec_q6_K(const uint8_t *p, uint32_t h, const kscale *ks, __m512 *w) {
  const tq_block_q6_K *b = (const tq_block_q6_K *)(const void *)p;
  const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
  const __m512i m4 = _mm512_set1_epi32(15), b45 = _mm512_set1_epi32(0x30);
  __m512i l[4], hb[2];
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) l[i] = _mm512_cvtepu8_epi32(load128(ql + 16 * i));
  hb[0] = _mm512_cvtepu8_epi32(load128(qh));
  hb[1] = _mm512_cvtepu8_epi32(load128(qh + 16));
#pragma GCC unroll 4
  for (uint32_t k = 0; k < 4; k++) {
#pragma GCC unroll 2
    for (uint32_t half = 0; half < 2; half++) {
      const __m512i src = l[2 * (k & 1) + half];
      const __m512i nib = k < 2 ? _mm512_and_si512(src, m4) : _mm512_srli_epi32(src, 4);
      const __m512i q = or_and(nib, move_bit(hb[half], 2 * k, 4), b45);
      const uint32_t s = 8 * h + 2 * k + half;
      w[2 * k + half] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(ks->a[s]),
                                        _mm512_set1_ps(ks->b[s]));
    }
  }
}

/* Q2_K: a[s] = d * (scales[s] & 15), b[s] = dmin * (scales[s] >> 4). */
TQ_INLINE void prep_q2_K(const uint8_t *p, kscale *ks) {
  const tq_block_q2_K *b = (const tq_block_q2_K *)(const void *)p;
  __m128i lo, hi;
  nibbles(load128(b->scales), &lo, &hi);
  _mm512_storeu_ps(ks->a, _mm512_mul_ps(i8_ps(lo), _mm512_set1_ps(h2f(b->d))));
  _mm512_storeu_ps(ks->b, _mm512_mul_ps(i8_ps(hi), _mm512_set1_ps(h2f(b->dmin))));
}

/* Unit g < 4: n = g / 2, j = 2 (g & 1) and j + 1; l < 16 from qs[32 n + l],
 * l >= 16 from qs[32 n + 16 + l - 16]. */
TQ_INLINE void vec_q2_K(const uint8_t *p, uint32_t g, const kscale *ks, __m512 *w) {
  const tq_block_q2_K *b = (const tq_block_q2_K *)(const void *)p;
  const uint32_t n = g >> 1, j0 = 2 * (g & 1);
  const __m128i m2 = _mm_set1_epi8(3);
#pragma GCC unroll 2
  for (int half = 0; half < 2; half++) {
    const __m128i q = load128(b->qs + 32 * n + 16 * half);
#pragma GCC unroll 2
    for (uint32_t jj = 0; jj < 2; jj++) {
      const uint32_t j = j0 + jj, s = 8 * n + 2 * j + (uint32_t)half;
      __m128i v = _mm_and_si128(_mm_srl_epi16(q, _mm_cvtsi32_si128((int)(2 * j))), m2);
      w[2 * jj + (uint32_t)half] =
          _mm512_fmsub_ps(i8_ps(v), _mm512_set1_ps(ks->a[s]), _mm512_set1_ps(ks->b[s]));
    }
  }
}

/* Q3_K: a[s] = d * (s_s - 32), the 6-bit scales unpacked by words: low
 * nibbles of words 0, 1 for scales 0-7, their high nibbles for 8-15, two bits
 * of word 2 (shifted by 0, 2, 4, 6 for scales 0-3, 4-7, 8-11, 12-15) above. */
TQ_INLINE void prep_q3_K(const uint8_t *p, kscale *ks) {
  const tq_block_q3_K *b = (const tq_block_q3_K *)(const void *)p;
  uint32_t a0 = load_u32(b->scales), a1 = load_u32(b->scales + 4), t = load_u32(b->scales + 8);
  const uint32_t m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
  uint32_t s0 = (a0 & m4) | ((t & m2) << 4);
  uint32_t s1 = (a1 & m4) | (((t >> 2) & m2) << 4);
  uint32_t s2 = ((a0 >> 4) & m4) | (((t >> 4) & m2) << 4);
  uint32_t s3 = ((a1 >> 4) & m4) | (((t >> 6) & m2) << 4);
  __m128i s = _mm_sub_epi8(_mm_set_epi32((int)s3, (int)s2, (int)s1, (int)s0), _mm_set1_epi8(32));
  _mm512_storeu_ps(ks->a, _mm512_mul_ps(i8_ps(s), _mm512_set1_ps(h2f(b->d))));
}

/* Unit g: as Q2_K, minus 4 where bit 4 n + j of hmask[l] is clear. */
TQ_INLINE void vec_q3_K(const uint8_t *p, uint32_t g, const kscale *ks, __m512 *w) {
  const tq_block_q3_K *b = (const tq_block_q3_K *)(const void *)p;
  const uint32_t n = g >> 1, j0 = 2 * (g & 1);
  const __m128i m2 = _mm_set1_epi8(3), one = _mm_set1_epi8(1), four = _mm_set1_epi8(4);
#pragma GCC unroll 2
  for (int half = 0; half < 2; half++) {
    const __m128i q = load128(b->qs + 32 * n + 16 * half);
    const __m128i hm = load128(b->hmask + 16 * half);
#pragma GCC unroll 2
    for (uint32_t jj = 0; jj < 2; jj++) {
      const uint32_t j = j0 + jj, s = 8 * n + 2 * j + (uint32_t)half;
      __m128i v = _mm_and_si128(_mm_srl_epi16(q, _mm_cvtsi32_si128((int)(2 * j))), m2);
      __m128i hb = _mm_and_si128(_mm_srl_epi16(hm, _mm_cvtsi32_si128((int)(4 * n + j))), one);
      v = _mm_sub_epi8(_mm_or_si128(v, _mm_slli_epi16(hb, 2)), four);
      w[2 * jj + (uint32_t)half] = _mm512_mul_ps(i8_ps(v), _mm512_set1_ps(ks->a[s]));
    }
  }
}

/* Fused dot over nb super-blocks, NU units of VPU vectors (NU VPU = 16);
 * four chains per token (vector j of a unit into chain j % 4). */
TQ_INLINE void dotk(const uint8_t *row, size_t nb, size_t bb, kprep_fn prep, kvec_fn vf,
                    const uint32_t VPU, const uint32_t NU, const float *x, size_t ldx, float *y,
                    size_t ldy, const uint32_t NT) {
  __m512 acc[TQ_DOT_MAX_TOKENS][4];
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) acc[t][j] = _mm512_setzero_ps();
  for (size_t i = 0; i < nb; i++) {
    const uint8_t *blk = row + i * bb;
    kscale ks;
    prep(blk, &ks);
    SCALES_IN_MEMORY(&ks);
#pragma GCC unroll 4
    for (uint32_t u = 0; u < NU; u++) {
      __m512 w[8];
      vf(blk, u, &ks, w);
#pragma GCC unroll 4
      for (uint32_t t = 0; t < NT; t++) {
        const float *xt = x + t * ldx + TQ_QK_K * i + 16 * VPU * u;
#pragma GCC unroll 8
        for (uint32_t j = 0; j < VPU; j++)
          acc[t][j % 4] = _mm512_fmadd_ps(w[j], _mm512_loadu_ps(xt + 16 * j), acc[t][j % 4]);
      }
    }
  }
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
    y[t * ldy] = hsum(_mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]),
                                    _mm512_add_ps(acc[t][2], acc[t][3])));
}

TQ_INLINE void deqk(const uint8_t *blocks, size_t nb, size_t bb, kprep_fn prep, kvec_fn vf,
                    const uint32_t VPU, const uint32_t NU, float *dst) {
  for (size_t i = 0; i < nb; i++) {
    const uint8_t *blk = blocks + i * bb;
    kscale ks;
    prep(blk, &ks);
    SCALES_IN_MEMORY(&ks);
#pragma GCC unroll 4
    for (uint32_t u = 0; u < NU; u++) {
      __m512 w[8];
      vf(blk, u, &ks, w);
#pragma GCC unroll 8
      for (uint32_t j = 0; j < VPU; j++)
        _mm512_storeu_ps(dst + TQ_QK_K * i + 16 * VPU * u + 16 * j, w[j]);
    }
  }
}

#define DEF_BLOCKK(NAME, BLOCK, VPU)                                                          \
  static void dot_##NAME(const void *w, size_t nb, const float *x, size_t ldx, uint32_t nt,  \
                         float *y, size_t ldy) {                                              \
    const uint8_t *row = w;                                                                   \
    const size_t bb = sizeof(BLOCK);                                                          \
    switch (nt) {                                                                             \
      case 1: dotk(row, nb, bb, prep_##NAME, vec_##NAME, VPU, 16 / VPU, x, ldx, y, ldy, 1); break;      \
      case 2: dotk(row, nb, bb, prep_##NAME, vec_##NAME, VPU, 16 / VPU, x, ldx, y, ldy, 2); break;      \
      case 3: dotk(row, nb, bb, prep_##NAME, vec_##NAME, VPU, 16 / VPU, x, ldx, y, ldy, 3); break;      \
      default: dotk(row, nb, bb, prep_##NAME, vec_##NAME, VPU, 16 / VPU, x, ldx, y, ldy, 4); break;     \
    }                                                                                         \
  }                                                                                           \
  static void deq_##NAME(const void *blocks, float *dst, size_t nb) {                        \
    deqk(blocks, nb, sizeof(BLOCK), prep_##NAME, vec_##NAME, VPU, 16 / VPU, dst);                       \
  }

DEF_BLOCKK(q2_K, tq_block_q2_K, 4)
DEF_BLOCKK(q3_K, tq_block_q3_K, 4)
DEF_BLOCKK(q4_K, tq_block_q4_K, 4)
DEF_BLOCKK(q5_K, tq_block_q5_K, 4)
DEF_BLOCKK(q6_K, tq_block_q6_K, 8)

/* ------------------------------------------------------------------------ */
/* F32, F16, BF16: one vector per 16 elements, masked tail                   */
/* ------------------------------------------------------------------------ */

typedef __m512 (*vecf_fn)(const uint8_t *row, size_t i, __mmask16 m);

TQ_INLINE __m512 vec_f32(const uint8_t *row, size_t i, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, row + 4 * i);
}

TQ_INLINE __m512 vec_f16(const uint8_t *row, size_t i, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * i));
}

TQ_INLINE __m512 vec_bf16(const uint8_t *row, size_t i, __mmask16 m) {
  __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + 2 * i));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* Fused dot over n elements: VS vectors per step in VS chains per token
 * (eight for one token, so that the FMA latency is hidden; four for more),
 * then whole vectors, then a masked tail. (The all-ones masks compile to
 * plain loads.) */
TQ_INLINE void dotf(const uint8_t *row, size_t n, vecf_fn vf, const float *x, size_t ldx,
                    float *y, size_t ldy, const uint32_t NT) {
  const uint32_t VS = NT == 1 ? 8 : 4;
  __m512 acc[TQ_DOT_MAX_TOKENS][8];
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
#pragma GCC unroll 8
    for (uint32_t j = 0; j < VS; j++) acc[t][j] = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 * VS <= n; i += 16 * VS) {
    __m512 w[8];
#pragma GCC unroll 8
    for (uint32_t j = 0; j < VS; j++) w[j] = vf(row, i + 16 * (size_t)j, 0xffff);
#pragma GCC unroll 4
    for (uint32_t t = 0; t < NT; t++)
#pragma GCC unroll 8
      for (uint32_t j = 0; j < VS; j++)
        acc[t][j] = _mm512_fmadd_ps(w[j], _mm512_loadu_ps(x + t * ldx + i + 16 * j), acc[t][j]);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : first_lanes(n - i);
    const __m512 wv = vf(row, i, m);
#pragma GCC unroll 4
    for (uint32_t t = 0; t < NT; t++)
      acc[t][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * ldx + i), acc[t][0]);
  }
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++) {
    __m512 s = _mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]), _mm512_add_ps(acc[t][2], acc[t][3]));
    if (VS == 8)
      s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(acc[t][4], acc[t][5]),
                                         _mm512_add_ps(acc[t][6], acc[t][7])));
    y[t * ldy] = hsum(s);
  }
}

#define DEF_FLOAT(NAME)                                                                     \
  static void dot_##NAME(const void *w, size_t n, const float *x, size_t ldx, uint32_t nt, \
                         float *y, size_t ldy) {                                            \
    const uint8_t *row = w;                                                                 \
    switch (nt) {                                                                           \
      case 1: dotf(row, n, vec_##NAME, x, ldx, y, ldy, 1); break;                           \
      case 2: dotf(row, n, vec_##NAME, x, ldx, y, ldy, 2); break;                           \
      case 3: dotf(row, n, vec_##NAME, x, ldx, y, ldy, 3); break;                           \
      default: dotf(row, n, vec_##NAME, x, ldx, y, ldy, 4); break;                          \
    }                                                                                       \
  }                                                                                         \
  static void deq_##NAME(const void *src, float *dst, size_t n) {                          \
    const uint8_t *row = src;                                                               \
    size_t i = 0;                                                                           \
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, vec_##NAME(row, i, 0xffff));     \
    if (i < n) {                                                                            \
      const __mmask16 m = first_lanes(n - i);                                               \
      _mm512_mask_storeu_ps(dst + i, m, vec_##NAME(row, i, m));                             \
    }                                                                                       \
  }

DEF_FLOAT(f32)
DEF_FLOAT(f16)
DEF_FLOAT(bf16)

/* ------------------------------------------------------------------------ */
/* Float tile kernel                                                         */
/* ------------------------------------------------------------------------ */

/* One R x T micro-tile (R <= 4 rows, T <= 6 tokens) over k columns: R * T
 * accumulator vectors (each step loads the R rows' vectors once and each
 * token's once: 10 loads per 24 FMAs), then reduce16 per 16 sums. (4 x 6
 * measured clearly faster than 4 x 4, 8 x 3 or rows outside on a Xeon with
 * 48 KiB L1.) */
TQ_INLINE void tile(const float *w, size_t ldw, const float *x, size_t ldx, size_t k, float *c,
                    size_t ldc, const uint32_t R, const uint32_t T) {
  __m512 acc[32];
#pragma GCC unroll 32
  for (uint32_t i = 0; i < 32; i++) acc[i] = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m512 wv[4];
#pragma GCC unroll 4
    for (uint32_t r = 0; r < R; r++) wv[r] = _mm512_loadu_ps(w + r * ldw + i);
#pragma GCC unroll 6
    for (uint32_t t = 0; t < T; t++) {
      const __m512 xv = _mm512_loadu_ps(x + t * ldx + i);
#pragma GCC unroll 4
      for (uint32_t r = 0; r < R; r++) acc[t * R + r] = _mm512_fmadd_ps(wv[r], xv, acc[t * R + r]);
    }
  }
  if (i < k) {
    const __mmask16 m = first_lanes(k - i);
    __m512 wv[4];
#pragma GCC unroll 4
    for (uint32_t r = 0; r < R; r++) wv[r] = _mm512_maskz_loadu_ps(m, w + r * ldw + i);
#pragma GCC unroll 6
    for (uint32_t t = 0; t < T; t++) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + i);
#pragma GCC unroll 4
      for (uint32_t r = 0; r < R; r++) acc[t * R + r] = _mm512_fmadd_ps(wv[r], xv, acc[t * R + r]);
    }
  }
  float out[32];
  _mm512_storeu_ps(out, reduce16(acc));
  if (R * T > 16) _mm512_storeu_ps(out + 16, reduce16(acc + 16));
#pragma GCC unroll 6
  for (uint32_t t = 0; t < T; t++)
#pragma GCC unroll 4
    for (uint32_t r = 0; r < R; r++) c[t * ldc + r] += out[t * R + r];
}

#define TILE_T(R, T) \
  case T: tile(w, ldw, x, ldx, k, c, ldc, R, T); return;
#define TILE_R(R)                                                        \
  case R:                                                                \
    switch (T) {                                                         \
      TILE_T(R, 1) TILE_T(R, 2) TILE_T(R, 3) TILE_T(R, 4) TILE_T(R, 5) \
      default: tile(w, ldw, x, ldx, k, c, ldc, R, 6); return;           \
    }

/* The micro-tile for R <= 4 rows and T <= 6 tokens, each shape a
 * compile-time instance. */
static void tile_any(const float *w, size_t ldw, uint32_t R, const float *x, size_t ldx,
                     uint32_t T, size_t k, float *c, size_t ldc) {
  switch (R) {
    TILE_R(1)
    TILE_R(2)
    TILE_R(3)
    default:
      switch (T) {
        TILE_T(4, 1) TILE_T(4, 2) TILE_T(4, 3) TILE_T(4, 4) TILE_T(4, 5)
        default: tile(w, ldw, x, ldx, k, c, ldc, 4, 6); return;
      }
  }
}

/* Token groups of 6 outside, row groups of 4 inside: a group's x rows stay
 * in L1 while the tile's weights (at most TQ_MM_ROWS x TQ_MM_KC) come from
 * L1/L2. */
static void gemm_avx512(const float *w, size_t ldw, uint32_t nr, const float *x, size_t ldx,
                        uint32_t nt, size_t k, float *c, size_t ldc) {
  for (uint32_t t0 = 0; t0 < nt; t0 += 6) {
    uint32_t T = nt - t0 < 6 ? nt - t0 : 6;
    for (uint32_t r0 = 0; r0 < nr; r0 += 4) {
      uint32_t R = nr - r0 < 4 ? nr - r0 : 4;
      tile_any(w + r0 * ldw, ldw, R, x + t0 * ldx, ldx, T, k, c + t0 * ldc + r0, ldc);
    }
  }
}

const tq_quant_kernels tq_quant_kernels_avx512 = {
    .level = TQ_SIMD_AVX512,
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
    .dot =
        {
            [TQ_TENSOR_F32] = dot_f32,
            [TQ_TENSOR_F16] = dot_f16,
            [TQ_TENSOR_BF16] = dot_bf16,
            [TQ_TENSOR_Q4_0] = dot_q4_0,
            [TQ_TENSOR_Q4_1] = dot_q4_1,
            [TQ_TENSOR_Q5_0] = dot_q5_0,
            [TQ_TENSOR_Q5_1] = dot_q5_1,
            [TQ_TENSOR_Q8_0] = dot_q8_0,
            [TQ_TENSOR_Q2_K] = dot_q2_K,
            [TQ_TENSOR_Q3_K] = dot_q3_K,
            [TQ_TENSOR_Q4_K] = dot_q4_K,
            [TQ_TENSOR_Q5_K] = dot_q5_K,
            [TQ_TENSOR_Q6_K] = dot_q6_K,
        },
    .gemm = gemm_avx512,
};
