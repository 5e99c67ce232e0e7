/*
 * quant_avx2.c - the weight kernels of quant.h for AVX2 + FMA + F16C, eight
 * floats per __m256.
 *
 * The structure is that of quant_avx512.c (see there), at half the width and
 * with sixteen registers; the 256-bit FMA and convert units (two ports) are
 * the bottleneck here rather than the shuffle port:
 * - every type is read in units of 32 consecutive elements (a 32-element
 *   block, or one of the 8 groups of 32 of a K-quant super-block whose
 *   scales are unpacked once per super-block), four vectors each; a
 *   block's fp16 scales come from one broadcast load of its head, converted
 *   and spread by in-lane permutes; K-quant factors are broadcast from
 *   memory;
 * - symmetric types (Q4_0, Q5_0, Q8_0): q - offset built in 128-bit
 *   registers, each block's dot with x scaled by d once (no per-element
 *   multiply); affine types (Q4_1, Q5_1) and Q4_K / Q5_K: quants widened to
 *   dwords from memory (vpmovzxbd m64), split there, q * d + m fused;
 * - the fused dot kernels keep 4 accumulator chains per token for one or two
 *   tokens, 2 for three or four (8 for the float types at one token);
 * - the float tile kernel works on 4 rows x 3 tokens (12 accumulators);
 * - Q5 fifth bits: by a byte shuffle and a compare (Q5_0) or by variable
 *   shifts (Q5_1).
 * Results match the scalar reference to float rounding (fused multiply-adds,
 * eight-lane sums).
 */
#include <immintrin.h>
#include <string.h>

#include "quant.h"

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "quant_avx2.c must be compiled with -mavx2 -mfma -mf16c"
#endif

#define TQ_INLINE static inline __attribute__((always_inline))

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

static inline __m128i load128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* Bytes 0-7 (as signed int8) of v to 8 floats. */
static inline __m256 i8_lo(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
/* Bytes 8-15 of v to 8 floats. */
static inline __m256 i8_hi(__m128i v) { return i8_lo(_mm_unpackhi_epi64(v, v)); }

/* Lanes i < n all ones (a vmaskmov mask), n <= 8. */
static inline __m256i first_lanes(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ------------------------------------------------------------------------ */
/* Horizontal sums                                                           */
/* ------------------------------------------------------------------------ */

static inline float hsum(__m256 v) {
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}

/* Lane i of the result = the sum of the 8 lanes of v[i]: two rounds of
 * horizontal adds (lanes 0-3 and 4-7 of each vector apart), then the two
 * 128-bit halves added. */
TQ_INLINE __m256 reduce8(const __m256 *v) {
  __m256 h01 = _mm256_hadd_ps(v[0], v[1]), h23 = _mm256_hadd_ps(v[2], v[3]);
  __m256 h45 = _mm256_hadd_ps(v[4], v[5]), h67 = _mm256_hadd_ps(v[6], v[7]);
  __m256 a = _mm256_hadd_ps(h01, h23), b = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* ------------------------------------------------------------------------ */
/* 32-element blocks -> w[0..3]                                              */
/* ------------------------------------------------------------------------ */

/* Forces the K-quant scale arrays through memory, so that they are
 * broadcast from there (vbroadcastss m32: a pure load) rather than kept in
 * registers and broadcast by shuffles. */
#define SCALES_IN_MEMORY(p) __asm__ __volatile__("" : : "r"(p) : "memory")

static inline uint32_t load_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* The block's first 32 bits (fp16 d, then fp16 m or quant bytes) broadcast
 * to every dword (a pure load) and converted: lanes alternate d, m. (Per
 * block: a prepass of all scales into an array costs more than it saves on
 * rows of a few dozen blocks.) */
static inline __m256 head_dm(const uint8_t *p) {
  return _mm256_cvtph_ps(_mm_set1_epi32((int)load_u32(p)));
}

/* The affine types (Q4_1, Q5_1): w = q * d + m for the unsigned 4- or 5-bit
 * q, d and m from the block's head. */
typedef void (*vec32_fn)(const uint8_t *blk, __m256 *w);

/* 8 bytes widened to dwords (one vpmovzxbd from memory). */
static inline __m256i u8x8(const uint8_t *p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
}

/* The 32 nibbles of qs as dwords: q[0] elements 0-7, q[1] 8-15 (low
 * nibbles of bytes 0-15), q[2] 16-23, q[3] 24-31 (high nibbles). */
static inline void nibbles32(const uint8_t *qs, __m256i *q) {
  const __m256i v0 = u8x8(qs), v1 = u8x8(qs + 8), m4 = _mm256_set1_epi32(15);
  q[0] = _mm256_and_si256(v0, m4);
  q[1] = _mm256_and_si256(v1, m4);
  q[2] = _mm256_srli_epi32(v0, 4);
  q[3] = _mm256_srli_epi32(v1, 4);
}

/* Or 16 into the elements whose bit of the little-endian qh is set: vector
 * i holds elements 8 i .. 8 i + 7; qh shifted so that bit 8 i + lane lands
 * on bit 4 of that lane. */
static inline void fifth_bits(const uint8_t *qh4, __m256i *q) {
  uint32_t qh;
  memcpy(&qh, qh4, 4);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), b4 = _mm256_set1_epi32(16);
  const __m256i lo = _mm256_set1_epi32((int)(qh << 4)), hi = _mm256_set1_epi32((int)(qh >> 12));
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    const __m256i src = i < 2 ? lo : hi;
    const __m256i sh = _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * (i & 1)));
    q[i] = _mm256_or_si256(q[i], _mm256_and_si256(_mm256_srlv_epi32(src, sh), b4));
  }
}

TQ_INLINE void affine4(const __m256i *q, const uint8_t *blk, __m256 *w) {
  const __m256 dm = head_dm(blk);
  const __m256 dv = _mm256_permute_ps(dm, 0x00), mv = _mm256_permute_ps(dm, 0x55);
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) w[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q[i]), dv, mv);
}

TQ_INLINE void vec_q4_1(const uint8_t *p, __m256 *w) {
  __m256i q[4];
  nibbles32(((const tq_block_q4_1 *)(const void *)p)->qs, q);
  affine4(q, p, w);
}

TQ_INLINE void vec_q5_1(const uint8_t *p, __m256 *w) {
  const tq_block_q5_1 *b = (const tq_block_q5_1 *)(const void *)p;
  __m256i q[4];
  nibbles32(b->qs, q);
  fifth_bits(b->qh, q);
  affine4(q, p, w);
}

/* The symmetric types (Q4_0, Q5_0, Q8_0): a unit as four vectors of the
 * unscaled values q - offset (exact small integers), built in 128-bit
 * registers (the 256-bit FMA and convert ports are the bottleneck here, the
 * shuffle port is not); a block's dot with x is scaled by d once, and the
 * dequantized form (q - offset) * d is exactly ggml's. */
typedef void (*sym32_fn)(const uint8_t *blk, __m256 *q);

/* Four vectors from 32 signed bytes (lo: elements 0-15, hi: 16-31). */
static inline void bytes4(__m128i lo, __m128i hi, __m256 *q) {
  q[0] = i8_lo(lo);
  q[1] = i8_hi(lo);
  q[2] = i8_lo(hi);
  q[3] = i8_hi(hi);
}

/* Low and high nibbles of 16 bytes, as bytes. */
static inline void nibbles(__m128i q, __m128i *lo, __m128i *hi) {
  const __m128i m = _mm_set1_epi8(15);
  *lo = _mm_and_si128(q, m);
  *hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
}

/* Bits 0-15 of u as bytes 0 or 16 (byte j from bit j): each byte gets the
 * qh byte holding its bit, then a compare against the bit pattern. */
static inline __m128i bits_to_16(uint32_t u) {
  const __m128i spread = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m128i bit = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  __m128i v = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)u), spread);
  v = _mm_cmpeq_epi8(_mm_and_si128(v, bit), bit);
  return _mm_and_si128(v, _mm_set1_epi8(16));
}

TQ_INLINE void sym_q4_0(const uint8_t *p, __m256 *q) {
  const tq_block_q4_0 *b = (const tq_block_q4_0 *)(const void *)p;
  const __m128i e = _mm_set1_epi8(8);
  __m128i lo, hi;
  nibbles(load128(b->qs), &lo, &hi);
  bytes4(_mm_sub_epi8(lo, e), _mm_sub_epi8(hi, e), q);
}

TQ_INLINE void sym_q5_0(const uint8_t *p, __m256 *q) {
  const tq_block_q5_0 *b = (const tq_block_q5_0 *)(const void *)p;
  const __m128i e = _mm_set1_epi8(16);
  uint32_t qh;
  memcpy(&qh, b->qh, 4);
  __m128i lo, hi;
  nibbles(load128(b->qs), &lo, &hi);
  lo = _mm_or_si128(lo, bits_to_16(qh & 0xffffu));
  hi = _mm_or_si128(hi, bits_to_16(qh >> 16));
  bytes4(_mm_sub_epi8(lo, e), _mm_sub_epi8(hi, e), q);
}

TQ_INLINE void sym_q8_0(const uint8_t *p, __m256 *q) {
  const tq_block_q8_0 *b = (const tq_block_q8_0 *)(const void *)p;
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++)
    q[i] = _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b->qs + 8 * i))));
}

/* Accumulator chains per token: 4 for one or two tokens, 2 for more (the
 * sixteen registers hold 8 chains and a unit). */
#define CHAINS(NT) ((NT) <= 2 ? 4u : 2u)

/* Adds the unit w (32 elements at x + off of each token) into acc. */
TQ_INLINE void fma_unit(__m256 (*acc)[4], const __m256 *w, const float *x, size_t ldx, size_t off,
                        const uint32_t NT) {
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++) {
    const float *xt = x + t * ldx + off;
#pragma GCC unroll 4
    for (uint32_t j = 0; j < 4; j++)
      acc[t][j % CHAINS(NT)] =
          _mm256_fmadd_ps(w[j], _mm256_loadu_ps(xt + 8 * j), acc[t][j % CHAINS(NT)]);
  }
}

TQ_INLINE void store_sums(__m256 (*acc)[4], float *y, size_t ldy, const uint32_t NT) {
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++) {
    __m256 s = _mm256_add_ps(acc[t][0], acc[t][1]);
    if (CHAINS(NT) == 4) s = _mm256_add_ps(s, _mm256_add_ps(acc[t][2], acc[t][3]));
    y[t * ldy] = hsum(s);
  }
}

TQ_INLINE void dot32(const uint8_t *row, size_t nb, size_t bb, vec32_fn vf, const float *x,
                     size_t ldx, float *y, size_t ldy, const uint32_t NT) {
  __m256 acc[TQ_DOT_MAX_TOKENS][4];
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) acc[t][j] = _mm256_setzero_ps();
  for (size_t i = 0; i < nb; i++) {
    __m256 w[4];
    vf(row + i * bb, w);
    fma_unit(acc, w, x, ldx, 32 * i, NT);
  }
  store_sums(acc, y, ldy, NT);
}

TQ_INLINE void deq32(const uint8_t *blocks, size_t nb, size_t bb, vec32_fn vf, float *dst) {
  for (size_t i = 0; i < nb; i++) {
    __m256 w[4];
    vf(blocks + i * bb, w);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) _mm256_storeu_ps(dst + 32 * i + 8 * j, w[j]);
  }
}

/* Symmetric types: per block s_t = sum of q . x over the four vectors, then
 * acc_t += s_t * d (two chains per token, alternating blocks). */
TQ_INLINE void dot32s(const uint8_t *row, size_t nb, size_t bb, sym32_fn sf, const float *x,
                      size_t ldx, float *y, size_t ldy, const uint32_t NT) {
  __m256 acc[TQ_DOT_MAX_TOKENS][2];
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (size_t i = 0; i < nb; i++) {
    const uint8_t *blk = row + i * bb;
    __m256 q[4];
    sf(blk, q);
    const __m256 dv = _mm256_permute_ps(head_dm(blk), 0x00);
#pragma GCC unroll 4
    for (uint32_t t = 0; t < NT; t++) {
      const float *xt = x + t * ldx + 32 * i;
      __m256 st = _mm256_mul_ps(q[0], _mm256_loadu_ps(xt));
      st = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xt + 8), st);
      st = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xt + 16), st);
      st = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xt + 24), st);
      acc[t][i & 1] = _mm256_fmadd_ps(st, dv, acc[t][i & 1]);
    }
  }
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++) y[t * ldy] = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
}

TQ_INLINE void deq32s(const uint8_t *blocks, size_t nb, size_t bb, sym32_fn sf, float *dst) {
  for (size_t i = 0; i < nb; i++) {
    const uint8_t *blk = blocks + i * bb;
    __m256 q[4];
    sf(blk, q);
    const __m256 dv = _mm256_permute_ps(head_dm(blk), 0x00);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) _mm256_storeu_ps(dst + 32 * i + 8 * j, _mm256_mul_ps(q[j], dv));
  }
}

#define DEF_SYM32(NAME, BLOCK)                                                                \
  static void dot_##NAME(const void *w, size_t nb, const float *x, size_t ldx, uint32_t nt,  \
                         float *y, size_t ldy) {                                              \
    const uint8_t *row = w;                                                                   \
    const size_t bb = sizeof(BLOCK);                                                          \
    switch (nt) {                                                                             \
      case 1: dot32s(row, nb, bb, sym_##NAME, x, ldx, y, ldy, 1); break;                      \
      case 2: dot32s(row, nb, bb, sym_##NAME, x, ldx, y, ldy, 2); break;                      \
      case 3: dot32s(row, nb, bb, sym_##NAME, x, ldx, y, ldy, 3); break;                      \
      default: dot32s(row, nb, bb, sym_##NAME, x, ldx, y, ldy, 4); break;                     \
    }                                                                                         \
  }                                                                                           \
  static void deq_##NAME(const void *blocks, float *dst, size_t nb) {                        \
    deq32s(blocks, nb, sizeof(BLOCK), sym_##NAME, dst);                                       \
  }

DEF_SYM32(q4_0, tq_block_q4_0)
DEF_SYM32(q5_0, tq_block_q5_0)
DEF_SYM32(q8_0, tq_block_q8_0)

#define DEF_BLOCK32(NAME, BLOCK)                                                              \
  static void dot_##NAME(const void *w, size_t nb, const float *x, size_t ldx, uint32_t nt,  \
                         float *y, size_t ldy) {                                              \
    const uint8_t *row = w;                                                                   \
    const size_t bb = sizeof(BLOCK);                                                          \
    switch (nt) {                                                                             \
      case 1: dot32(row, nb, bb, vec_##NAME, x, ldx, y, ldy, 1); break;                              \
      case 2: dot32(row, nb, bb, vec_##NAME, x, ldx, y, ldy, 2); break;                              \
      case 3: dot32(row, nb, bb, vec_##NAME, x, ldx, y, ldy, 3); break;                              \
      default: dot32(row, nb, bb, vec_##NAME, x, ldx, y, ldy, 4); break;                              \
    }                                                                                         \
  }                                                                                           \
  static void deq_##NAME(const void *blocks, float *dst, size_t nb) {                        \
    deq32(blocks, nb, sizeof(BLOCK), vec_##NAME, dst);                                     \
  }

DEF_BLOCK32(q4_1, tq_block_q4_1)
DEF_BLOCK32(q5_1, tq_block_q5_1)

/* ------------------------------------------------------------------------ */
/* K-quant super-blocks: scales once, then 8 units of 32                     */
/* ------------------------------------------------------------------------ */

/* w = q * a[s] - b[s] for sub-block s (b unused by the types without mins). */
typedef struct kscale {
  float a[16];
  float b[16];
} kscale;

typedef void (*kprep_fn)(const uint8_t *blk, kscale *ks);
/* Elements 32 u .. 32 u + 31 of the super-block, u < 8, into w[0..3]. */
typedef void (*kvec_fn)(const uint8_t *blk, uint32_t u, const kscale *ks, __m256 *w);

/* 8 unsigned bytes (two little-endian words) times f into 8 floats. */
static inline void scale8(uint32_t lo, uint32_t hi, float f, float *out) {
  __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)hi, (int)lo)));
  _mm256_storeu_ps(out, _mm256_mul_ps(v, _mm256_set1_ps(f)));
}

/* 16 signed bytes times f into 16 floats. */
static inline void scale16(__m128i v, float f, float *out) {
  const __m256 fv = _mm256_set1_ps(f);
  _mm256_storeu_ps(out, _mm256_mul_ps(i8_lo(v), fv));
  _mm256_storeu_ps(out + 8, _mm256_mul_ps(i8_hi(v), fv));
}

/* Q4_K / Q5_K scales and mins, unpacked by words as in quant_avx512.c. */
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

/* Four vectors q * a - m from dwords. */
static inline void affine_sub4(const __m256i *q, float a, float m, __m256 *w) {
  const __m256 av = _mm256_set1_ps(a), mv = _mm256_set1_ps(m);
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) w[i] = _mm256_fmsub_ps(_mm256_cvtepi32_ps(q[i]), av, mv);
}

/* Nibble u & 1 of qs[32 (u / 2) + l], l < 32, as four vectors of dwords. */
static inline void k4_nibbles(const uint8_t *qs, uint32_t u, __m256i *q) {
  const uint8_t *p = qs + 32 * (u >> 1);
  const __m256i m4 = _mm256_set1_epi32(15);
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    const __m256i v = u8x8(p + 8 * i);
    q[i] = (u & 1) ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, m4);
  }
}

/* Unit u = sub-block u. */
TQ_INLINE void vec_q4_K(const uint8_t *p, uint32_t u, const kscale *ks, __m256 *w) {
  const tq_block_q4_K *b = (const tq_block_q4_K *)(const void *)p;
  __m256i q[4];
  k4_nibbles(b->qs, u, q);
  affine_sub4(q, ks->a[u], ks->b[u], w);
}

TQ_INLINE void prep_q5_K(const uint8_t *p, kscale *ks) {
  const tq_block_q5_K *b = (const tq_block_q5_K *)(const void *)p;
  k4_prep(b->scales, h2f(b->d), h2f(b->dmin), ks);
}

/* As Q4_K, plus 16 where bit u of qh[l] is set. */
TQ_INLINE void vec_q5_K(const uint8_t *p, uint32_t u, const kscale *ks, __m256 *w) {
  const tq_block_q5_K *b = (const tq_block_q5_K *)(const void *)p;
  __m256i q[4];
  k4_nibbles(b->qs, u, q);
  const __m128i sh = _mm_cvtsi32_si128((int)u);
  const __m256i b4 = _mm256_set1_epi32(16);
#pragma GCC unroll 4
  for (int i = 0; i < 4; i++) {
    const __m256i h = _mm256_slli_epi32(_mm256_srl_epi32(u8x8(b->qh + 8 * i), sh), 4);
    q[i] = _mm256_or_si256(q[i], _mm256_and_si256(h, b4));
  }
  affine_sub4(q, ks->a[u], ks->b[u], w);
}

TQ_INLINE void prep_q6_K(const uint8_t *p, kscale *ks) {
  const tq_block_q6_K *b = (const tq_block_q6_K *)(const void *)p;
  scale16(load128(b->scales), h2f(b->d), ks->a);
}

/* Unit u: h = u / 4, k = u % 4; low 4 bits from ql[64 h + 32 (k & 1) + l]
 * (nibble k / 2), high 2 bits (qh[32 h + l] >> 2 k) & 3; sub-blocks
 * 8 h + 2 k (l < 16) and 8 h + 2 k + 1. Bytes assembled in 128-bit
 * registers (q - 32 fits a signed byte), then widened. */
TQ_INLINE void vec_q6_K(const uint8_t *p, uint32_t u, const kscale *ks, __m256 *w) {
  const tq_block_q6_K *b = (const tq_block_q6_K *)(const void *)p;
  const uint32_t h = u >> 2, k = u & 3;
  const uint8_t *ql = b->ql + 64 * h + 32 * (k & 1), *qh = b->qh + 32 * h;
  const __m128i m4 = _mm_set1_epi8(15), m2 = _mm_set1_epi8(3), e = _mm_set1_epi8(32);
  const __m128i sl = _mm_cvtsi32_si128((int)(4 * (k >> 1))), sh = _mm_cvtsi32_si128((int)(2 * k));
  __m128i q[2];
#pragma GCC unroll 2
  for (int i = 0; i < 2; i++) {
    __m128i lo = _mm_and_si128(_mm_srl_epi16(load128(ql + 16 * i), sl), m4);
    __m128i hb = _mm_and_si128(_mm_srl_epi16(load128(qh + 16 * i), sh), m2);
    q[i] = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hb, 4)), e);
  }
  const __m256 a0 = _mm256_set1_ps(ks->a[8 * h + 2 * k]), a1 = _mm256_set1_ps(ks->a[8 * h + 2 * k + 1]);
  w[0] = _mm256_mul_ps(i8_lo(q[0]), a0);
  w[1] = _mm256_mul_ps(i8_hi(q[0]), a0);
  w[2] = _mm256_mul_ps(i8_lo(q[1]), a1);
  w[3] = _mm256_mul_ps(i8_hi(q[1]), a1);
}

TQ_INLINE void prep_q2_K(const uint8_t *p, kscale *ks) {
  const tq_block_q2_K *b = (const tq_block_q2_K *)(const void *)p;
  __m128i lo, hi;
  nibbles(load128(b->scales), &lo, &hi);
  scale16(lo, h2f(b->d), ks->a);
  scale16(hi, h2f(b->dmin), ks->b);
}

/* Unit u: n = u / 4, j = u % 4: (qs[32 n + l] >> 2 j) & 3, sub-blocks
 * 8 n + 2 j (l < 16) and 8 n + 2 j + 1. */
TQ_INLINE void vec_q2_K(const uint8_t *p, uint32_t u, const kscale *ks, __m256 *w) {
  const tq_block_q2_K *b = (const tq_block_q2_K *)(const void *)p;
  const uint32_t n = u >> 2, j = u & 3, s = 8 * n + 2 * j;
  const __m128i sh = _mm_cvtsi32_si128((int)(2 * j)), m2 = _mm_set1_epi8(3);
  __m128i q0 = _mm_and_si128(_mm_srl_epi16(load128(b->qs + 32 * n), sh), m2);
  __m128i q1 = _mm_and_si128(_mm_srl_epi16(load128(b->qs + 32 * n + 16), sh), m2);
  const __m256 a0 = _mm256_set1_ps(ks->a[s]), m0 = _mm256_set1_ps(ks->b[s]);
  const __m256 a1 = _mm256_set1_ps(ks->a[s + 1]), m1 = _mm256_set1_ps(ks->b[s + 1]);
  w[0] = _mm256_fmsub_ps(i8_lo(q0), a0, m0);
  w[1] = _mm256_fmsub_ps(i8_hi(q0), a0, m0);
  w[2] = _mm256_fmsub_ps(i8_lo(q1), a1, m1);
  w[3] = _mm256_fmsub_ps(i8_hi(q1), a1, m1);
}

/* Q3_K scales unpacked by words as in quant_avx512.c. */
TQ_INLINE void prep_q3_K(const uint8_t *p, kscale *ks) {
  const tq_block_q3_K *b = (const tq_block_q3_K *)(const void *)p;
  uint32_t a0 = load_u32(b->scales), a1 = load_u32(b->scales + 4), t = load_u32(b->scales + 8);
  const uint32_t m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
  uint32_t s0 = (a0 & m4) | ((t & m2) << 4);
  uint32_t s1 = (a1 & m4) | (((t >> 2) & m2) << 4);
  uint32_t s2 = ((a0 >> 4) & m4) | (((t >> 4) & m2) << 4);
  uint32_t s3 = ((a1 >> 4) & m4) | (((t >> 6) & m2) << 4);
  __m128i s = _mm_sub_epi8(_mm_set_epi32((int)s3, (int)s2, (int)s1, (int)s0), _mm_set1_epi8(32));
  scale16(s, h2f(b->d), ks->a);
}

/* Unit u: as Q2_K, minus 4 where bit u (= 4 n + j) of hmask[l] is clear. */
TQ_INLINE void vec_q3_K(const uint8_t *p, uint32_t u, const kscale *ks, __m256 *w) {
  const tq_block_q3_K *b = (const tq_block_q3_K *)(const void *)p;
  const uint32_t n = u >> 2, j = u & 3, s = 8 * n + 2 * j;
  const __m128i sh = _mm_cvtsi32_si128((int)(2 * j)), shm = _mm_cvtsi32_si128((int)u);
  const __m128i m2 = _mm_set1_epi8(3), one = _mm_set1_epi8(1), four = _mm_set1_epi8(4);
  __m128i q[2];
#pragma GCC unroll 2
  for (int i = 0; i < 2; i++) {
    __m128i v = _mm_and_si128(_mm_srl_epi16(load128(b->qs + 32 * n + 16 * i), sh), m2);
    __m128i hb = _mm_and_si128(_mm_srl_epi16(load128(b->hmask + 16 * i), shm), one);
    q[i] = _mm_sub_epi8(_mm_or_si128(v, _mm_slli_epi16(hb, 2)), four);
  }
  const __m256 a0 = _mm256_set1_ps(ks->a[s]), a1 = _mm256_set1_ps(ks->a[s + 1]);
  w[0] = _mm256_mul_ps(i8_lo(q[0]), a0);
  w[1] = _mm256_mul_ps(i8_hi(q[0]), a0);
  w[2] = _mm256_mul_ps(i8_lo(q[1]), a1);
  w[3] = _mm256_mul_ps(i8_hi(q[1]), a1);
}

TQ_INLINE void dotk(const uint8_t *row, size_t nb, size_t bb, kprep_fn prep, kvec_fn vf,
                    const float *x, size_t ldx, float *y, size_t ldy, const uint32_t NT) {
  __m256 acc[TQ_DOT_MAX_TOKENS][4];
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) acc[t][j] = _mm256_setzero_ps();
  for (size_t i = 0; i < nb; i++) {
    const uint8_t *blk = row + i * bb;
    kscale ks;
    prep(blk, &ks);
    SCALES_IN_MEMORY(&ks);
#pragma GCC unroll 8
    for (uint32_t u = 0; u < 8; u++) {
      __m256 w[4];
      vf(blk, u, &ks, w);
      fma_unit(acc, w, x, ldx, TQ_QK_K * i + 32 * u, NT);
    }
  }
  store_sums(acc, y, ldy, NT);
}

TQ_INLINE void deqk(const uint8_t *blocks, size_t nb, size_t bb, kprep_fn prep, kvec_fn vf,
                    float *dst) {
  for (size_t i = 0; i < nb; i++) {
    const uint8_t *blk = blocks + i * bb;
    kscale ks;
    prep(blk, &ks);
    SCALES_IN_MEMORY(&ks);
#pragma GCC unroll 8
    for (uint32_t u = 0; u < 8; u++) {
      __m256 w[4];
      vf(blk, u, &ks, w);
#pragma GCC unroll 4
      for (int j = 0; j < 4; j++) _mm256_storeu_ps(dst + TQ_QK_K * i + 32 * u + 8 * j, w[j]);
    }
  }
}

#define DEF_BLOCKK(NAME, BLOCK)                                                                \
  static void dot_##NAME(const void *w, size_t nb, const float *x, size_t ldx, uint32_t nt,   \
                         float *y, size_t ldy) {                                               \
    const uint8_t *row = w;                                                                    \
    switch (nt) {                                                                              \
      case 1: dotk(row, nb, sizeof(BLOCK), prep_##NAME, vec_##NAME, x, ldx, y, ldy, 1); break; \
      case 2: dotk(row, nb, sizeof(BLOCK), prep_##NAME, vec_##NAME, x, ldx, y, ldy, 2); break; \
      case 3: dotk(row, nb, sizeof(BLOCK), prep_##NAME, vec_##NAME, x, ldx, y, ldy, 3); break; \
      default: dotk(row, nb, sizeof(BLOCK), prep_##NAME, vec_##NAME, x, ldx, y, ldy, 4); break;\
    }                                                                                          \
  }                                                                                            \
  static void deq_##NAME(const void *blocks, float *dst, size_t nb) {                         \
    deqk(blocks, nb, sizeof(BLOCK), prep_##NAME, vec_##NAME, dst);                             \
  }

DEF_BLOCKK(q2_K, tq_block_q2_K)
DEF_BLOCKK(q3_K, tq_block_q3_K)
DEF_BLOCKK(q4_K, tq_block_q4_K)
DEF_BLOCKK(q5_K, tq_block_q5_K)
DEF_BLOCKK(q6_K, tq_block_q6_K)

/* ------------------------------------------------------------------------ */
/* F32, F16, BF16: 32 elements per step, then 8, then a scalar tail          */
/* ------------------------------------------------------------------------ */

typedef __m256 (*vecf_fn)(const uint8_t *row, size_t i);
typedef float (*scalarf_fn)(const uint8_t *row, size_t i);

TQ_INLINE __m256 vec_f32(const uint8_t *row, size_t i) { return _mm256_loadu_ps((const float *)(const void *)row + i); }
TQ_INLINE float one_f32(const uint8_t *row, size_t i) { return ((const float *)(const void *)row)[i]; }

TQ_INLINE __m256 vec_f16(const uint8_t *row, size_t i) { return _mm256_cvtph_ps(load128(row + 2 * i)); }
TQ_INLINE float one_f16(const uint8_t *row, size_t i) {
  uint16_t h;
  memcpy(&h, row + 2 * i, 2);
  return _cvtsh_ss(h);
}

TQ_INLINE __m256 vec_bf16(const uint8_t *row, size_t i) {
  __m256i v = _mm256_cvtepu16_epi32(load128(row + 2 * i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
TQ_INLINE float one_bf16(const uint8_t *row, size_t i) {
  uint16_t h;
  memcpy(&h, row + 2 * i, 2);
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Fused dot over n elements: eight vectors per step, in eight chains for one
 * token (hiding the FMA latency), in CHAINS(NT) per token otherwise; then
 * whole vectors, then a scalar tail added to the folded sums. */
TQ_INLINE void dotf(const uint8_t *row, size_t n, vecf_fn vf, scalarf_fn sf, const float *x,
                    size_t ldx, float *y, size_t ldy, const uint32_t NT) {
  const uint32_t NC = NT == 1 ? 8u : CHAINS(NT);
  __m256 acc[TQ_DOT_MAX_TOKENS][8];
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++)
#pragma GCC unroll 8
    for (uint32_t j = 0; j < 8; j++) acc[t][j] = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
#pragma GCC unroll 8
    for (uint32_t j = 0; j < 8; j++) {
      const __m256 wv = vf(row, i + 8 * (size_t)j);
#pragma GCC unroll 4
      for (uint32_t t = 0; t < NT; t++)
        acc[t][j % NC] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * ldx + i + 8 * j), acc[t][j % NC]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 wv = vf(row, i);
#pragma GCC unroll 4
    for (uint32_t t = 0; t < NT; t++)
      acc[t][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * ldx + i), acc[t][0]);
  }
#pragma GCC unroll 4
  for (uint32_t t = 0; t < NT; t++) {
    __m256 s = _mm256_add_ps(acc[t][0], acc[t][1]);
    if (NC >= 4) s = _mm256_add_ps(s, _mm256_add_ps(acc[t][2], acc[t][3]));
    if (NC == 8)
      s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(acc[t][4], acc[t][5]),
                                         _mm256_add_ps(acc[t][6], acc[t][7])));
    y[t * ldy] = hsum(s);
  }
  for (; i < n; i++) {
    const float wi = sf(row, i);
#pragma GCC unroll 4
    for (uint32_t t = 0; t < NT; t++) y[t * ldy] += wi * x[t * ldx + i];
  }
}

#define DEF_FLOAT(NAME)                                                                     \
  static void dot_##NAME(const void *w, size_t n, const float *x, size_t ldx, uint32_t nt, \
                         float *y, size_t ldy) {                                            \
    const uint8_t *row = w;                                                                 \
    switch (nt) {                                                                           \
      case 1: dotf(row, n, vec_##NAME, one_##NAME, x, ldx, y, ldy, 1); break;               \
      case 2: dotf(row, n, vec_##NAME, one_##NAME, x, ldx, y, ldy, 2); break;               \
      case 3: dotf(row, n, vec_##NAME, one_##NAME, x, ldx, y, ldy, 3); break;               \
      default: dotf(row, n, vec_##NAME, one_##NAME, x, ldx, y, ldy, 4); break;              \
    }                                                                                       \
  }                                                                                         \
  static void deq_##NAME(const void *src, float *dst, size_t n) {                          \
    const uint8_t *row = src;                                                               \
    size_t i = 0;                                                                           \
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, vec_##NAME(row, i));               \
    for (; i < n; i++) dst[i] = one_##NAME(row, i);                                         \
  }

DEF_FLOAT(f32)
DEF_FLOAT(f16)
DEF_FLOAT(bf16)

/* ------------------------------------------------------------------------ */
/* Float tile kernel                                                         */
/* ------------------------------------------------------------------------ */

/* One R x T micro-tile (R <= 4, T <= 3) over k columns; the k % 8 tail with
 * masked loads. */
TQ_INLINE void tile(const float *w, size_t ldw, const float *x, size_t ldx, size_t k, float *c,
                    size_t ldc, const uint32_t R, const uint32_t T) {
  __m256 acc[16];
#pragma GCC unroll 16
  for (uint32_t i = 0; i < 16; i++) acc[i] = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 xv[3];
#pragma GCC unroll 3
    for (uint32_t t = 0; t < T; t++) xv[t] = _mm256_loadu_ps(x + t * ldx + i);
#pragma GCC unroll 4
    for (uint32_t r = 0; r < R; r++) {
      const __m256 wv = _mm256_loadu_ps(w + r * ldw + i);
#pragma GCC unroll 3
      for (uint32_t t = 0; t < T; t++) acc[t * R + r] = _mm256_fmadd_ps(wv, xv[t], acc[t * R + r]);
    }
  }
  if (i < k) {
    const __m256i m = first_lanes(k - i);
    __m256 xv[3];
#pragma GCC unroll 3
    for (uint32_t t = 0; t < T; t++) xv[t] = _mm256_maskload_ps(x + t * ldx + i, m);
#pragma GCC unroll 4
    for (uint32_t r = 0; r < R; r++) {
      const __m256 wv = _mm256_maskload_ps(w + r * ldw + i, m);
#pragma GCC unroll 3
      for (uint32_t t = 0; t < T; t++) acc[t * R + r] = _mm256_fmadd_ps(wv, xv[t], acc[t * R + r]);
    }
  }
  float out[16];
  _mm256_storeu_ps(out, reduce8(acc));
  if (R * T > 8) _mm256_storeu_ps(out + 8, reduce8(acc + 8));
#pragma GCC unroll 3
  for (uint32_t t = 0; t < T; t++)
#pragma GCC unroll 4
    for (uint32_t r = 0; r < R; r++) c[t * ldc + r] += out[t * R + r];
}

#define TILE_CASE(R, T) \
  case (R) * 8 + (T): tile(w, ldw, x, ldx, k, c, ldc, R, T); break;

static void tile_any(const float *w, size_t ldw, uint32_t R, const float *x, size_t ldx,
                     uint32_t T, size_t k, float *c, size_t ldc) {
  switch (R * 8 + T) {
    TILE_CASE(1, 1) TILE_CASE(1, 2) TILE_CASE(1, 3)
    TILE_CASE(2, 1) TILE_CASE(2, 2) TILE_CASE(2, 3)
    TILE_CASE(3, 1) TILE_CASE(3, 2) TILE_CASE(3, 3)
    TILE_CASE(4, 1) TILE_CASE(4, 2)
    default: tile(w, ldw, x, ldx, k, c, ldc, 4, 3); break;
  }
}

static void gemm_avx2(const float *w, size_t ldw, uint32_t nr, const float *x, size_t ldx,
                      uint32_t nt, size_t k, float *c, size_t ldc) {
  for (uint32_t t0 = 0; t0 < nt; t0 += 3) {
    uint32_t T = nt - t0 < 3 ? nt - t0 : 3;
    for (uint32_t r0 = 0; r0 < nr; r0 += 4) {
      uint32_t R = nr - r0 < 4 ? nr - r0 : 4;
      tile_any(w + r0 * ldw, ldw, R, x + t0 * ldx, ldx, T, k, c + t0 * ldc + r0, ldc);
    }
  }
}

const tq_quant_kernels tq_quant_kernels_avx2 = {
    .level = TQ_SIMD_AVX2,
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
    .gemm = gemm_avx2,
};
