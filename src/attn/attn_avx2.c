/*
 * attn_avx2.c - the attention kernels of attn_kernels.h for AVX2 + FMA +
 * F16C, eight floats per __m256.
 *
 * Results match attn_ref.c to float rounding: sums run in another order and
 * use fused multiply-adds (explicit _mm256_fmadd_ps; the file is compiled
 * with -ffp-contract=off like the rest of the library).
 *
 * The G query heads that share a KV head are taken in groups of 8, 4, 3, 2
 * or 1 heads (at most 4 where noted), each group size a compile-time
 * instance, so that a token's codes (or fp16 row) are read and decoded
 * once per group. Dimensions are in lanes throughout (sixteen registers
 * leave no room for the transposed layout of the AVX-512 score kernel):
 *
 * - score_codes and score_f16: a tile of 8 / GH tokens x GH heads of
 *   partial-sum vectors, folded by a transpose-and-add tree into one vector.
 * - accum_codes and accum_f16: the head group's accumulators for a slice of
 *   the dimensions (8 to 12 vectors) stay in registers across a run of
 *   tokens; each token's slice is decoded (or converted) once and
 *   multiplied by the broadcast weight (times the norm).
 * - Codes: eight codes are one 32-bit broadcast load (bits <= 4) shifted by
 *   a different amount per lane (vpsrlvd); wider codes go through a byte
 *   shuffle first. Lookups: bits <= 3 one vpermps on an 8-entry table
 *   (entry e = centroid[e mod 2^bits]); 4 bits two vpermps and a blend on
 *   bit 3, except in score_codes (d <= 512), which splits 32 codes into
 *   nibbles and looks up each byte of the floats with vpshufb (groups of at
 *   most 4 heads, queries permuted to match); wider codes a gather.
 * - exp_sum: Cephes' expf polynomial on the reduced argument, 2^k built in
 *   the exponent field (in two steps for results in the subnormal range).
 *
 * Memory: record loads may run past a record's codes into the next record
 * or the TQ_ATTN_PAD bytes after the last one, never beyond 16 bytes past a
 * byte inside the record. fp16 rows, weights, queries and outputs are
 * accessed exactly. Records and rows are prefetched a little ahead of use
 * (define TQ_ATTN_NO_PREFETCH to leave that out).
 */
#include <immintrin.h>
#include <string.h>

#include "attn_kernels.h"

#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__F16C__)
#error "attn_avx2.c must be compiled with -mavx2 -mfma -mf16c"
#endif

#define TQ_INLINE static inline __attribute__((always_inline))

/* Each compile-time instance of a kernel (head group size, code width)
 * becomes one function of its own: one huge function with all of them
 * inlined takes compilers (and sanitizer instrumentation) minutes. */
#define TQ_NOINLINE static __attribute__((noinline))

/* Full unrolling of the small loops over heads, vectors and tokens keeps
 * the accumulators in registers. Sanitizer builds (tests, fuzzing) leave it
 * out: they compile many times faster and test the same arithmetic. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TQ_NO_UNROLL 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(TQ_NO_UNROLL)
#define TQ_UNROLL(n)
#else
#define TQ_PRAGMA(x) _Pragma(#x)
#define TQ_UNROLL(n) TQ_PRAGMA(GCC unroll n)
#endif

static inline uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Heads per group for the r heads still to do: 8, 4, or all of r < 4. */
static inline uint32_t head_group(uint32_t r) { return r >= 8 ? 8 : r >= 4 ? 4 : r; }

static inline float load_norm(const uint8_t *rec) {
  uint16_t h;
  memcpy(&h, rec, 2);
  return _cvtsh_ss(h);
}

/* Prefetches [p, p + bytes) into the cache, one request per 64-byte line:
 * records and rows a little ahead of their use, so that the loads of a
 * chunk streaming from memory overlap the arithmetic. */
static inline void prefetch_range(const void *p, size_t bytes) {
#ifndef TQ_ATTN_NO_PREFETCH
  const char *c = (const char *)p;
  for (size_t i = 0; i < bytes; i += 64) _mm_prefetch(c + i, _MM_HINT_T0);
  if (bytes) _mm_prefetch(c + bytes - 1, _MM_HINT_T0);
#else
  (void)p;
  (void)bytes;
#endif
}

/* Lanes i < n all ones (as a vpmaskmov / blend mask), n <= 8. */
static inline __m256i first_lanes(uint32_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ------------------------------------------------------------------------ */
/* Codebook lookups and code extraction                                      */
/* ------------------------------------------------------------------------ */

/* Register copies of the codebook: bits <= 3: t0[e] = c[e mod 2^bits];
 * 4 bits: t0 = c[0..7], t1 = c[8..15]; wider: none (gathers from c).
 * Also the per-lane shifts (and for bits >= 5 the byte shuffle) that bring
 * code l of eight consecutive codes to the low bits of lane l. */
typedef struct {
  uint32_t bits;
  const float *c;
  __m256 t0, t1;
  __m256i shuffle, shift;
  __m256i plane[4]; /* 4 bits: byte k of centroid e at byte e of plane[k] */
} lut;

static void lut_init(lut *l, const float *c, uint32_t bits) {
  float tab[16];
  uint32_t size = 1u << bits;
  uint32_t count = bits <= 4 ? 16 : 0;
  memset(tab, 0, sizeof tab);
  for (uint32_t e = 0; e < count; e++) tab[e] = c[e & (size - 1u)];
  l->bits = bits;
  l->c = c;
  l->t0 = _mm256_loadu_ps(tab);
  l->t1 = _mm256_loadu_ps(tab + 8);
  /* Codes 0-3 in the low 128-bit lane, 4-7 in the high one, each from the
   * same 16 bytes: code l spans bytes bl/8 and (maybe) bl/8 + 1 <= 7. */
  uint8_t ctl[32];
  uint32_t sh[8];
  for (uint32_t i = 0; i < 8; i++) {
    uint32_t bit = i * bits, byte = bit / 8;
    ctl[4 * i] = (uint8_t)byte;
    ctl[4 * i + 1] = (uint8_t)(bit % 8 + bits > 8 ? byte + 1 : 0x80);
    ctl[4 * i + 2] = 0x80;
    ctl[4 * i + 3] = 0x80;
    sh[i] = bits <= 4 ? bit : bit % 8;
  }
  l->shuffle = _mm256_loadu_si256((const __m256i *)ctl);
  l->shift = _mm256_loadu_si256((const __m256i *)sh);
  uint8_t planes[4][16];
  for (uint32_t e = 0; e < 16; e++) {
    uint8_t b[4];
    memcpy(b, &tab[e], 4);
    for (uint32_t k = 0; k < 4; k++) planes[k][e] = b[k];
  }
  for (uint32_t k = 0; k < 4; k++)
    l->plane[k] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)planes[k]));
}

/* 4-bit codes by byte shuffles: the codes as one byte each (low nibbles in
 * the low 128-bit lane, high nibbles in the high one), one vpshufb per byte
 * of the float from the byte planes of the codebook, and the bytes
 * interleaved back into floats. The result for 8 consecutive dimensions
 * 8m .. 8m+7 holds, in lanes 0..7, dimensions 8m + (0, 2, 4, 6, 1, 3, 5, 7)
 * (PERM8 below). */
#define PERM8(i) ((i) < 4 ? 2 * (i) : 2 * (i) - 7)

/* Dimensions 0..31 of the 16 bytes at p into f[0..3] (f[m]: 8m..8m+7). */
TQ_INLINE void nibbles32(const uint8_t *p, const lut *l, __m256 *f) {
  const __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
  const __m256i idx = _mm256_and_si256(
      _mm256_srlv_epi32(x, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0f));
  const __m256i b0 = _mm256_shuffle_epi8(l->plane[0], idx);
  const __m256i b1 = _mm256_shuffle_epi8(l->plane[1], idx);
  const __m256i b2 = _mm256_shuffle_epi8(l->plane[2], idx);
  const __m256i b3 = _mm256_shuffle_epi8(l->plane[3], idx);
  const __m256i lo01 = _mm256_unpacklo_epi8(b0, b1), hi01 = _mm256_unpackhi_epi8(b0, b1);
  const __m256i lo23 = _mm256_unpacklo_epi8(b2, b3), hi23 = _mm256_unpackhi_epi8(b2, b3);
  f[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(lo01, lo23));
  f[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(lo01, lo23));
  f[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(hi01, hi23));
  f[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(hi01, hi23));
}

/* Compile-time code width classes of the instances: SMALL (1 to 3 bits,
 * one vpermps), 4, or ANY (read from the lut, branches per vector). */
enum { ANY = 0, SMALL = 3 };

/* Codes 8v .. 8v+7 of a record (codes: the byte after the norm), code l in
 * the low bits of lane l. */
TQ_INLINE __m256i codes8(const uint8_t *codes, uint32_t v, const uint32_t B, const lut *l) {
  const uint32_t bits = B == 4 ? 4 : l->bits;
  const uint8_t *p = codes + (size_t)v * bits;
  if (B == SMALL || bits <= 4) {
    /* One broadcast load (vbroadcastss does not care what the bits mean). */
    __m256i x = _mm256_castps_si256(_mm256_broadcast_ss((const float *)(const void *)p));
    if (B == 4) return _mm256_srlv_epi32(x, _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
    return _mm256_srlv_epi32(x, l->shift);
  }
  __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
  return _mm256_srlv_epi32(_mm256_shuffle_epi8(x, l->shuffle), l->shift);
}

/* Centroids of the codes in the low bits of the lanes of x (bits above the
 * code are ignored). */
TQ_INLINE __m256 lookup(const lut *l, __m256i x, const uint32_t B) {
  const uint32_t bits = B == SMALL ? 3 : B == 4 ? 4 : l->bits;
  if (bits <= 3) return _mm256_permutevar8x32_ps(l->t0, x);
  if (bits == 4) {
    __m256 lo = _mm256_permutevar8x32_ps(l->t0, x);
    __m256 hi = _mm256_permutevar8x32_ps(l->t1, x);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(x, 28)));
  }
  __m256i k = _mm256_and_si256(x, _mm256_set1_epi32((int)((1u << bits) - 1u)));
  return _mm256_i32gather_ps(l->c, k, 4);
}

/* ------------------------------------------------------------------------ */
/* Horizontal sums                                                           */
/* ------------------------------------------------------------------------ */

/* Lane i of the result = the sum of the 8 lanes of v[i]: 7 adds and 14
 * shuffles or blends in three halving steps. */
TQ_INLINE __m256 hsum8(const __m256 *v) {
  __m256 u[4], r[2];
  /* 128-bit halves: u[p] lanes 0-3 from v[p], 4-7 from v[p+4]. */
  for (int p = 0; p < 4; p++) {
    __m256 x = _mm256_blend_ps(v[p], v[p + 4], 0xf0);
    __m256 y = _mm256_permute2f128_ps(v[p], v[p + 4], 0x21);
    u[p] = _mm256_add_ps(x, y);
  }
  /* Pairs: lanes 0-1 of half m of r[p] from u[2p], 2-3 from u[2p+1]. */
  for (int p = 0; p < 2; p++) {
    __m256 x = _mm256_blend_ps(u[2 * p], u[2 * p + 1], 0xcc);
    __m256 y = _mm256_shuffle_ps(u[2 * p], u[2 * p + 1], _MM_SHUFFLE(1, 0, 3, 2));
    r[p] = _mm256_add_ps(x, y);
  }
  /* Lane 4m + p from u[p], half m: v[4m + p]. */
  __m256 x = _mm256_shuffle_ps(r[0], r[1], _MM_SHUFFLE(2, 0, 2, 0));
  __m256 y = _mm256_shuffle_ps(r[0], r[1], _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_add_ps(x, y);
}

/* ------------------------------------------------------------------------ */
/* score_codes                                                               */
/* ------------------------------------------------------------------------ */

/* Scores of the GH heads of q (rows d apart) against n records; tiles of
 * T = 8 / GH tokens, item g * T + i of the tile's partial sums for head g
 * and token i. qtail: the GH heads' last d % 8 elements, zero-padded to 8. */
TQ_INLINE void score_codes_group(const float *q, const float *qtail, uint32_t d,
                                 const uint8_t *rec, size_t stride, uint32_t n, const lut *l,
                                 float *scores, const uint32_t B, const uint32_t GH) {
  const uint32_t T = 8 / GH;
  const uint32_t nv = d / 8;
  for (uint32_t t0 = 0; t0 < n; t0 += T) {
    const uint32_t nt = min_u32(T, n - t0);
    const uint8_t *codes[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < T; i++) codes[i] = rec + (size_t)(t0 + (i < nt ? i : 0)) * stride + 2;
    if (t0 + 4 * T < n) prefetch_range(rec + (size_t)(t0 + 4 * T) * stride, (size_t)T * stride);
    __m256 acc[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (uint32_t v = 0; v < nv; v++) {
TQ_UNROLL(8)
      for (uint32_t i = 0; i < T; i++) {
        const __m256 c = lookup(l, codes8(codes[i], v, B, l), B);
TQ_UNROLL(8)
        for (uint32_t g = 0; g < GH; g++)
          acc[g * T + i] =
              _mm256_fmadd_ps(c, _mm256_loadu_ps(q + (size_t)g * d + 8 * v), acc[g * T + i]);
      }
    }
    if (d % 8) {
TQ_UNROLL(8)
      for (uint32_t i = 0; i < T; i++) {
        const __m256 c = lookup(l, codes8(codes[i], nv, B, l), B);
TQ_UNROLL(8)
        for (uint32_t g = 0; g < GH; g++)
          acc[g * T + i] = _mm256_fmadd_ps(c, _mm256_loadu_ps(qtail + 8 * g), acc[g * T + i]);
      }
    }
    /* A copy: passing acc itself makes GCC store it on every iteration. */
    __m256 items[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < 8; i++) items[i] = acc[i];
    float out[8];
    _mm256_storeu_ps(out, hsum8(items));
    for (uint32_t i = 0; i < nt; i++) {
      const float norm = load_norm(codes[i] - 2);
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++) scores[(size_t)g * n + t0 + i] = out[g * T + i] * norm;
    }
  }
}

/* score_codes_group for 4 bits through nibbles32: qp holds the GH heads'
 * queries in PERM8 order, rows of dp (d rounded up to 32, zero-padded). */
TQ_INLINE void score_codes4_group(const float *qp, uint32_t dp, const uint8_t *rec, size_t stride,
                                  uint32_t n, const lut *l, float *scores, const uint32_t GH) {
  const uint32_t T = 8 / GH;
  const uint32_t nb = dp / 32;
  for (uint32_t t0 = 0; t0 < n; t0 += T) {
    const uint32_t nt = min_u32(T, n - t0);
    const uint8_t *codes[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < T; i++) codes[i] = rec + (size_t)(t0 + (i < nt ? i : 0)) * stride + 2;
    if (t0 + 4 * T < n) prefetch_range(rec + (size_t)(t0 + 4 * T) * stride, (size_t)T * stride);
    __m256 acc[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (uint32_t b = 0; b < nb; b++) {
TQ_UNROLL(8)
      for (uint32_t i = 0; i < T; i++) {
        __m256 f[4];
        nibbles32(codes[i] + 16 * (size_t)b, l, f);
TQ_UNROLL(4)
        for (uint32_t m = 0; m < 4; m++)
TQ_UNROLL(8)
          for (uint32_t g = 0; g < GH; g++)
            acc[g * T + i] = _mm256_fmadd_ps(
                f[m], _mm256_loadu_ps(qp + (size_t)g * dp + 32 * b + 8 * m), acc[g * T + i]);
      }
    }
    __m256 items[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < 8; i++) items[i] = acc[i];
    float out[8];
    _mm256_storeu_ps(out, hsum8(items));
    for (uint32_t i = 0; i < nt; i++) {
      const float norm = load_norm(codes[i] - 2);
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++) scores[(size_t)g * n + t0 + i] = out[g * T + i] * norm;
    }
  }
}

#define SCORE4(GH)                                                                          \
  TQ_NOINLINE void score_codes4_##GH(const float *qp, uint32_t dp, const uint8_t *rec,       \
                                     size_t stride, uint32_t n, const lut *l, float *scores) { \
    score_codes4_group(qp, dp, rec, stride, n, l, scores, GH);                              \
  }
SCORE4(1)
SCORE4(2)
SCORE4(3)
SCORE4(4)
#undef SCORE4

/* Largest d rounded up to 32 for the 4-bit path's permuted query copy. */
#define NIBBLE_MAX_DIM 512

/* 4 bits, d <= NIBBLE_MAX_DIM: head groups of at most 4 through
 * score_codes4_group. */
static void score_codes4(const float *q, uint32_t G, uint32_t d, const uint8_t *rec,
                         size_t stride, uint32_t n, const lut *l, float *scores) {
  float qp[4 * NIBBLE_MAX_DIM];
  const uint32_t dp = (d + 31) / 32 * 32;
  for (uint32_t g0 = 0; g0 < G;) {
    const uint32_t gh = min_u32(head_group(G - g0), 4);
    for (uint32_t g = 0; g < gh; g++)
      for (uint32_t j = 0; j < dp; j++) {
        uint32_t dim = j / 8 * 8 + PERM8(j % 8);
        qp[g * dp + j] = dim < d ? q[(size_t)(g0 + g) * d + dim] : 0.0f;
      }
    float *sg = scores + (size_t)g0 * n;
    switch (gh) {
      case 4: score_codes4_4(qp, dp, rec, stride, n, l, sg); break;
      case 3: score_codes4_3(qp, dp, rec, stride, n, l, sg); break;
      case 2: score_codes4_2(qp, dp, rec, stride, n, l, sg); break;
      default: score_codes4_1(qp, dp, rec, stride, n, l, sg); break;
    }
    g0 += gh;
  }
}

#define SCORE_CODES(B, GH)                                                                  \
  TQ_NOINLINE void score_codes_b##B##_##GH(const float *q, const float *qtail, uint32_t d,   \
                                           const uint8_t *rec, size_t stride, uint32_t n,    \
                                           const lut *l, float *scores) {                    \
    score_codes_group(q, qtail, d, rec, stride, n, l, scores, B, GH);                       \
  }
#define SCORE_CODES_ALL(B) \
  SCORE_CODES(B, 1) SCORE_CODES(B, 2) SCORE_CODES(B, 3) SCORE_CODES(B, 4) SCORE_CODES(B, 8)
SCORE_CODES_ALL(0)
SCORE_CODES_ALL(3)
#undef SCORE_CODES_ALL
#undef SCORE_CODES

/* Widths 1 to 3 (small) or any width. */
static void score_codes_bits(const float *q, uint32_t G, uint32_t d, const uint8_t *rec,
                             size_t stride, uint32_t n, const lut *l, float *scores, int small) {
  float qtail[8 * 8];
  for (uint32_t g0 = 0; g0 < G;) {
    const uint32_t gh = head_group(G - g0);
    const float *qg = q + (size_t)g0 * d;
    float *sg = scores + (size_t)g0 * n;
    memset(qtail, 0, sizeof qtail);
    for (uint32_t g = 0; g < gh; g++)
      memcpy(qtail + 8 * g, qg + (size_t)g * d + d / 8 * 8, d % 8 * sizeof(float));
#define CALL(GH)                                                        \
  (small ? score_codes_b3_##GH(qg, qtail, d, rec, stride, n, l, sg)     \
         : score_codes_b0_##GH(qg, qtail, d, rec, stride, n, l, sg))
    switch (gh) {
      case 8: CALL(8); break;
      case 4: CALL(4); break;
      case 3: CALL(3); break;
      case 2: CALL(2); break;
      default: CALL(1); break;
    }
#undef CALL
    g0 += gh;
  }
}

/* 4 bits (d <= NIBBLE_MAX_DIM) by nibbles32, 1 to 3 bits by one vpermps,
 * other widths by one instance that reads the width at run time. */
static void avx2_score_codes(const float *q, uint32_t G, uint32_t d, const uint8_t *rec,
                             size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                             float *scores) {
  if (n == 0) return;
  lut l;
  lut_init(&l, centroids, bits);
  if (bits == 4 && d <= NIBBLE_MAX_DIM) score_codes4(q, G, d, rec, stride, n, &l, scores);
  else score_codes_bits(q, G, d, rec, stride, n, &l, scores, bits <= 3);
}

/* ------------------------------------------------------------------------ */
/* accum_codes                                                               */
/* ------------------------------------------------------------------------ */

/* Vectors of 8 dimensions per pass for a group of GH heads (at most 8 or
 * 12 accumulators); passes are this wide, or narrower powers of two. */
#define PASS_VECTORS(GH) ((GH) == 1 ? 8 : (GH) <= 3 ? 4 : (GH) == 4 ? 2 : 1)

/* Calls PASS(W) for the widths that cover nv vectors, each W a compile-time
 * constant no wider than PASS_VECTORS(GH). */
#define FOR_EACH_PASS(GH, nv, v0, PASS)                                  \
  for (uint32_t v0 = 0; v0 < (nv);) {                                    \
    const uint32_t left_ = (nv) - v0;                                    \
    if (PASS_VECTORS(GH) >= 8 && left_ >= 8) { PASS(8); v0 += 8; }       \
    else if (PASS_VECTORS(GH) >= 4 && left_ >= 4) { PASS(4); v0 += 4; }  \
    else if (PASS_VECTORS(GH) >= 2 && left_ >= 2) { PASS(2); v0 += 2; }  \
    else { PASS(1); v0 += 1; }                                            \
  }

/* Tokens per run: their weight * norm products are computed once, then
 * every pass over the dimensions goes through the run. */
#define RUN 64

/* acc rows (d apart) += wn (GH rows of RUN) times the nt decoded records
 * from rec, for the W vectors of dimensions from 8 * v0. The last vector
 * may be d's partial tail: its lanes past d accumulate garbage that is not
 * stored. */
TQ_INLINE void accum_codes_pass(const float (*wn)[RUN], uint32_t d, const uint8_t *rec,
                                size_t stride, uint32_t nt, const lut *l, float *acc, uint32_t v0,
                                const uint32_t B, const uint32_t GH, const uint32_t W) {
  enum { MAXG = 8, MAXW = 8 };
  const uint32_t last = min_u32(8, d - 8 * (v0 + W - 1));
  const __m256i ml = first_lanes(last);
  __m256 a[MAXG][MAXW];
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(8)
    for (uint32_t v = 0; v < W; v++) {
      float *p = acc + (size_t)g * d + 8 * (v0 + v);
      a[g][v] = v + 1 < W || last == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, ml);
    }
  for (uint32_t i = 0; i < nt; i++) {
    const uint8_t *codes = rec + (size_t)i * stride + 2;
    __m256 c[MAXW];
TQ_UNROLL(8)
    for (uint32_t v = 0; v < W; v++) c[v] = lookup(l, codes8(codes, v0 + v, B, l), B);
TQ_UNROLL(8)
    for (uint32_t g = 0; g < GH; g++) {
      const __m256 s = _mm256_broadcast_ss(&wn[g][i]);
TQ_UNROLL(8)
      for (uint32_t v = 0; v < W; v++) a[g][v] = _mm256_fmadd_ps(s, c[v], a[g][v]);
    }
  }
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(8)
    for (uint32_t v = 0; v < W; v++) {
      float *p = acc + (size_t)g * d + 8 * (v0 + v);
      if (v + 1 < W || last == 8) _mm256_storeu_ps(p, a[g][v]);
      else _mm256_maskstore_ps(p, ml, a[g][v]);
    }
}

TQ_INLINE void accum_codes_group(const float *w, uint32_t d, const uint8_t *rec, size_t stride,
                                 uint32_t n, const lut *l, float *acc, const uint32_t B,
                                 const uint32_t GH) {
  const uint32_t nv = (d + 7) / 8;
  float wn[8][RUN];
  for (uint32_t t0 = 0; t0 < n; t0 += RUN) {
    const uint32_t nt = min_u32(RUN, n - t0);
    const uint8_t *r0 = rec + (size_t)t0 * stride;
    if (t0 + RUN < n) prefetch_range(r0 + RUN * stride, (size_t)min_u32(RUN, n - t0 - RUN) * stride);
    for (uint32_t i = 0; i < nt; i++) {
      const float norm = load_norm(r0 + (size_t)i * stride);
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++) wn[g][i] = w[(size_t)g * n + t0 + i] * norm;
    }
#define ACCUM_CODES_PASS(W) accum_codes_pass(wn, d, r0, stride, nt, l, acc, v0, B, GH, W)
    FOR_EACH_PASS(GH, nv, v0, ACCUM_CODES_PASS)
#undef ACCUM_CODES_PASS
  }
}

#define ACCUM_CODES(B, GH)                                                                  \
  TQ_NOINLINE void accum_codes_b##B##_##GH(const float *w, uint32_t d, const uint8_t *rec,   \
                                           size_t stride, uint32_t n, const lut *l,          \
                                           float *acc) {                                     \
    accum_codes_group(w, d, rec, stride, n, l, acc, B, GH);                                 \
  }
#define ACCUM_CODES_ALL(B) \
  ACCUM_CODES(B, 1) ACCUM_CODES(B, 2) ACCUM_CODES(B, 3) ACCUM_CODES(B, 4) ACCUM_CODES(B, 8)
ACCUM_CODES_ALL(0)
ACCUM_CODES_ALL(3)
ACCUM_CODES_ALL(4)
#undef ACCUM_CODES_ALL
#undef ACCUM_CODES

/* Widths 1 to 3 (SMALL) and 4 have their own instances; the others share
 * one that reads the width at run time. */
static void avx2_accum_codes(const float *w, uint32_t G, uint32_t d, const uint8_t *rec,
                             size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                             float *acc) {
  if (n == 0) return;
  lut l;
  lut_init(&l, centroids, bits);
  for (uint32_t g0 = 0; g0 < G;) {
    const uint32_t gh = head_group(G - g0);
    const float *wg = w + (size_t)g0 * n;
    float *ag = acc + (size_t)g0 * d;
#define CALL(GH)                                                    \
  (bits <= 3   ? accum_codes_b3_##GH(wg, d, rec, stride, n, &l, ag) \
   : bits == 4 ? accum_codes_b4_##GH(wg, d, rec, stride, n, &l, ag) \
               : accum_codes_b0_##GH(wg, d, rec, stride, n, &l, ag))
    switch (gh) {
      case 8: CALL(8); break;
      case 4: CALL(4); break;
      case 3: CALL(3); break;
      case 2: CALL(2); break;
      default: CALL(1); break;
    }
#undef CALL
    g0 += gh;
  }
}

/* ------------------------------------------------------------------------ */
/* fp16 rows                                                                 */
/* ------------------------------------------------------------------------ */

static inline __m256 load_f16x8(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The first n < 8 halves at p, zero-extended. */
static inline __m256 load_f16_part(const uint16_t *p, uint32_t n) {
  uint16_t h[8] = {0};
  memcpy(h, p, n * sizeof *h);
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

TQ_INLINE void score_f16_group(const float *q, const float *qtail, uint32_t d, const uint16_t *k,
                               size_t stride, uint32_t n, float *scores, const uint32_t GH) {
  enum { MAXG = 8 };
  const uint32_t T = 8 / GH;
  const uint32_t nv = d / 8, tail = d % 8;
  for (uint32_t t0 = 0; t0 < n; t0 += T) {
    const uint32_t nt = min_u32(T, n - t0);
    const uint16_t *row[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < T; i++) row[i] = k + (size_t)(t0 + (i < nt ? i : 0)) * stride;
    for (uint32_t i = t0 + 4 * T; i < min_u32(t0 + 5 * T, n); i++)
      prefetch_range(k + (size_t)i * stride, (size_t)d * 2);
    __m256 acc[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (uint32_t v = 0; v < nv; v++) {
      __m256 qv[MAXG];
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++) qv[g] = _mm256_loadu_ps(q + (size_t)g * d + 8 * v);
TQ_UNROLL(8)
      for (uint32_t i = 0; i < T; i++) {
        const __m256 kv = load_f16x8(row[i] + 8 * v);
TQ_UNROLL(8)
        for (uint32_t g = 0; g < GH; g++)
          acc[i * GH + g] = _mm256_fmadd_ps(qv[g], kv, acc[i * GH + g]);
      }
    }
    if (tail) {
TQ_UNROLL(8)
      for (uint32_t i = 0; i < T; i++) {
        const __m256 kv = load_f16_part(row[i] + 8 * nv, tail);
TQ_UNROLL(8)
        for (uint32_t g = 0; g < GH; g++)
          acc[i * GH + g] = _mm256_fmadd_ps(_mm256_loadu_ps(qtail + 8 * g), kv, acc[i * GH + g]);
      }
    }
    /* A copy: passing acc itself makes GCC store it on every iteration. */
    __m256 items[8];
TQ_UNROLL(8)
    for (uint32_t i = 0; i < 8; i++) items[i] = acc[i];
    float out[8];
    _mm256_storeu_ps(out, hsum8(items));
    for (uint32_t i = 0; i < nt; i++)
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++) scores[(size_t)g * n + t0 + i] = out[i * GH + g];
  }
}

#define SCORE_F16(GH)                                                                       \
  TQ_NOINLINE void score_f16_##GH(const float *q, const float *qtail, uint32_t d,            \
                                  const uint16_t *k, size_t stride, uint32_t n, float *scores) { \
    score_f16_group(q, qtail, d, k, stride, n, scores, GH);                                 \
  }
SCORE_F16(1)
SCORE_F16(2)
SCORE_F16(3)
SCORE_F16(4)
SCORE_F16(8)
#undef SCORE_F16

static void avx2_score_f16(const float *q, uint32_t G, uint32_t d, const uint16_t *k,
                           size_t stride, uint32_t n, float *scores) {
  if (n == 0) return;
  float qtail[8 * 8];
  for (uint32_t g0 = 0; g0 < G;) {
    const uint32_t gh = head_group(G - g0);
    const float *qg = q + (size_t)g0 * d;
    float *sg = scores + (size_t)g0 * n;
    memset(qtail, 0, sizeof qtail);
    for (uint32_t g = 0; g < gh; g++)
      memcpy(qtail + 8 * g, qg + (size_t)g * d + d / 8 * 8, d % 8 * sizeof(float));
    switch (gh) {
      case 8: score_f16_8(qg, qtail, d, k, stride, n, sg); break;
      case 4: score_f16_4(qg, qtail, d, k, stride, n, sg); break;
      case 3: score_f16_3(qg, qtail, d, k, stride, n, sg); break;
      case 2: score_f16_2(qg, qtail, d, k, stride, n, sg); break;
      default: score_f16_1(qg, qtail, d, k, stride, n, sg); break;
    }
    g0 += gh;
  }
}

/* acc rows += the GH heads' weights times the fp16 rows, for the W vectors
 * of dimensions from 8 * v0 (the last may be d's partial tail). */
TQ_INLINE void accum_f16_pass(const float *w, uint32_t d, const uint16_t *vrows, size_t stride,
                              uint32_t n, float *acc, uint32_t v0, const uint32_t GH,
                              const uint32_t W) {
  enum { MAXG = 8, MAXW = 8 };
  const uint32_t last = min_u32(8, d - 8 * (v0 + W - 1));
  const __m256i ml = first_lanes(last);
  __m256 a[MAXG][MAXW];
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(8)
    for (uint32_t v = 0; v < W; v++) {
      float *p = acc + (size_t)g * d + 8 * (v0 + v);
      a[g][v] = v + 1 < W || last == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, ml);
    }
  for (uint32_t t = 0; t < n; t++) {
    const uint16_t *row = vrows + (size_t)t * stride + 8 * v0;
    if (v0 == 0 && t + 8 < n) prefetch_range(vrows + (size_t)(t + 8) * stride, (size_t)d * 2);
    __m256 x[MAXW];
TQ_UNROLL(8)
    for (uint32_t v = 0; v + 1 < W; v++) x[v] = load_f16x8(row + 8 * v);
    x[W - 1] = last == 8 ? load_f16x8(row + 8 * (W - 1)) : load_f16_part(row + 8 * (W - 1), last);
TQ_UNROLL(8)
    for (uint32_t g = 0; g < GH; g++) {
      const __m256 s = _mm256_broadcast_ss(w + (size_t)g * n + t);
TQ_UNROLL(8)
      for (uint32_t v = 0; v < W; v++) a[g][v] = _mm256_fmadd_ps(s, x[v], a[g][v]);
    }
  }
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(8)
    for (uint32_t v = 0; v < W; v++) {
      float *p = acc + (size_t)g * d + 8 * (v0 + v);
      if (v + 1 < W || last == 8) _mm256_storeu_ps(p, a[g][v]);
      else _mm256_maskstore_ps(p, ml, a[g][v]);
    }
}

TQ_INLINE void accum_f16_group(const float *w, uint32_t d, const uint16_t *vrows, size_t stride,
                               uint32_t n, float *acc, const uint32_t GH) {
  const uint32_t nv = (d + 7) / 8;
#define ACCUM_F16_PASS(W) accum_f16_pass(w, d, vrows, stride, n, acc, v0, GH, W)
  FOR_EACH_PASS(GH, nv, v0, ACCUM_F16_PASS)
#undef ACCUM_F16_PASS
}

#define ACCUM_F16(GH)                                                                       \
  TQ_NOINLINE void accum_f16_##GH(const float *w, uint32_t d, const uint16_t *v, size_t stride, \
                                  uint32_t n, float *acc) {                                 \
    accum_f16_group(w, d, v, stride, n, acc, GH);                                           \
  }
ACCUM_F16(1)
ACCUM_F16(2)
ACCUM_F16(3)
ACCUM_F16(4)
ACCUM_F16(8)
#undef ACCUM_F16

static void avx2_accum_f16(const float *w, uint32_t G, uint32_t d, const uint16_t *v,
                           size_t stride, uint32_t n, float *acc) {
  if (n == 0) return;
  for (uint32_t g0 = 0; g0 < G;) {
    const uint32_t gh = head_group(G - g0);
    const float *wg = w + (size_t)g0 * n;
    float *ag = acc + (size_t)g0 * d;
    switch (gh) {
      case 8: accum_f16_8(wg, d, v, stride, n, ag); break;
      case 4: accum_f16_4(wg, d, v, stride, n, ag); break;
      case 3: accum_f16_3(wg, d, v, stride, n, ag); break;
      case 2: accum_f16_2(wg, d, v, stride, n, ag); break;
      default: accum_f16_1(wg, d, v, stride, n, ag); break;
    }
    g0 += gh;
  }
}

/* ------------------------------------------------------------------------ */
/* exp_sum                                                                   */
/* ------------------------------------------------------------------------ */

/* exp(x) to about one ulp for x <= 88 (the contract's x - m <= 0): x = k ln2
 * + r, |r| <= ln2/2, exp(r) by Cephes' expf polynomial, times 2^k built in
 * the exponent field; for k < -125 (results near or in the subnormal range)
 * as 2^(k+64) and then 2^-64, so that the only rounding is the last one.
 * Below -104 the result is 0 (as expf's); NaN stays NaN. */
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x); /* NaN: returns x */
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
  p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
  __m256i ki = _mm256_cvtps_epi32(k);
  const __m256i tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32(-125), ki);
  ki = _mm256_add_epi32(ki, _mm256_and_si256(tiny, _mm256_set1_epi32(64)));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ki, _mm256_set1_epi32(127)), 23));
  p = _mm256_mul_ps(p, scale);
  const __m256 down = _mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_set1_ps(0x1p-64f),
                                       _mm256_castsi256_ps(tiny));
  return _mm256_mul_ps(p, down);
}

static float avx2_exp_sum(float *x, uint32_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  uint32_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm));
    _mm256_storeu_ps(x + i, e0);
    _mm256_storeu_ps(x + i + 8, e1);
    s0 = _mm256_add_ps(s0, e0);
    s1 = _mm256_add_ps(s1, e1);
  }
  for (; i < n; i += 8) {
    const __m256i mk = first_lanes(min_u32(8, n - i));
    __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, mk), vm));
    _mm256_maskstore_ps(x + i, mk, e);
    s0 = _mm256_add_ps(s0, _mm256_and_ps(e, _mm256_castsi256_ps(mk)));
  }
  __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

/* vmaxps(a, b) returns b when either is NaN: with the running maximum as b,
 * a NaN element is skipped. Two running maxima; the order does not matter. */
static float avx2_row_max(const float *x, uint32_t n) {
  __m256 m0 = _mm256_set1_ps(x[0]), m1 = m0;
  uint32_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
  }
  for (; i < n; i++) m0 = _mm256_max_ps(_mm256_set1_ps(x[i]), m0);
  m0 = _mm256_max_ps(m1, m0);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

const tq_attn_kernels tq_attn_kernels_avx2 = {
    .level = TQ_SIMD_AVX2,
    .score_codes = avx2_score_codes,
    .accum_codes = avx2_accum_codes,
    .score_f16 = avx2_score_f16,
    .accum_f16 = avx2_accum_f16,
    .exp_sum = avx2_exp_sum,
    .row_max = avx2_row_max,
};
