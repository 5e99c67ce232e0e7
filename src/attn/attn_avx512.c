/*
 * attn_avx512.c - the attention kernels of attn_kernels.h for AVX-512
 * F/BW/VL/DQ (+ FMA, F16C), sixteen floats per __m512.
 *
 * Results match attn_ref.c to float rounding: sums run in another order and
 * use fused multiply-adds (explicit _mm512_fmadd_ps; the file is compiled
 * with -ffp-contract=off like the rest of the library).
 *
 * The G query heads that share a KV head are taken in groups (8, 4, 3, 2 or
 * 1 heads; at most 4 where noted), each group size a compile-time instance,
 * so that a token's codes (or fp16 row) are read and decoded once per
 * group and reused from registers for every head of it. Every kernel does
 * G * d multiply-adds per token, as the fp16 ones do; decoding adds about
 * two instructions per 16 codes (a shift and a vpermps), so the compressed
 * kernels run about as fast as the fp16 ones on data in cache and win by
 * reading 3 to 5 times fewer bytes from memory.
 *
 * - score_codes, bits <= 4 ("tokens in lanes"): sixteen tokens at a time.
 *   Each token's codes for a block of 128 dimensions are loaded as sixteen
 *   32-bit slots of 8 codes (4 bits: the 64 bytes as they are; 2 and 1 bits:
 *   zero-extended; 3 bits: a byte shuffle), and the 16 x 16 slot matrix is
 *   transposed: lane i of slot vector k then holds codes 8k..8k+7 of token
 *   i. A shift and one vpermps on a 16-entry register table (entry e =
 *   centroid[e mod 2^bits], so the bits above the code are don't-cares)
 *   give one dimension's centroids for sixteen tokens, multiplied by that
 *   dimension's query element as a broadcast: no horizontal sums at all.
 * - score_codes, bits >= 5, and score_f16 ("dimensions in lanes", groups of
 *   at most 4 heads): sixteen dimensions per vector; a tile of 16 / GH
 *   tokens x GH heads of partial-sum vectors is folded by a
 *   transpose-and-add tree into one vector of sums.
 * - accum_codes and accum_f16: dimensions in lanes; the head group's
 *   accumulators for a slice of the dimensions (16 vectors, e.g. 4 heads x
 *   64 dimensions) stay in registers across a run of tokens, each token's
 *   slice decoded once (broadcast load, variable shift, vpermps; for 2 bits
 *   one shift serves two lookups) or converted once (vcvtph2ps) and
 *   multiplied by the broadcast weight (times the norm).
 * - exp_sum: Cephes' expf polynomial on the reduced argument, 2^k applied by
 *   vscalefps (exact, also for results in the subnormal range).
 *
 * Codebook lookups: bits <= 4 vpermps, 5 vpermt2ps, 6 two vpermt2ps and a
 * blend, 7 and 8 gathers.
 *
 * Memory: record loads may run past a record's codes into the next record
 * or the TQ_ATTN_PAD bytes after the last one, never beyond 64 bytes past a
 * byte inside the record. fp16 rows, weights, queries and outputs are
 * accessed exactly (masked tails). Records and rows are prefetched a little
 * ahead of use (define TQ_ATTN_NO_PREFETCH to leave that out); a chunk
 * streaming from memory then overlaps its loads with the arithmetic.
 */
#include <immintrin.h>
#include <string.h>

#include "attn_kernels.h"

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512DQ__) || !defined(__FMA__) || !defined(__F16C__)
#error "attn_avx512.c must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c"
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

/* Mask of the first n lanes, n <= 16. */
static inline __mmask16 first_lanes(uint32_t n) { return (__mmask16)((1u << n) - 1u); }

static inline uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Heads per group for the r heads still to do: 8, 4, or all of r < 4. */
static inline uint32_t head_group(uint32_t r) { return r >= 8 ? 8 : r >= 4 ? 4 : r; }

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

/* The fp16 norms of records 0 .. nt-1 (stride apart) as floats; lanes from
 * nt on are 0. offsets: lane i = i * stride, or NULL when 15 * stride does
 * not fit in an int32 (then scalar loads). */
static inline __m512 load_norms16(const uint8_t *rec, size_t stride, uint32_t nt,
                                  const __m512i *offsets) {
  if (offsets) {
    __m512i h = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), first_lanes(nt), *offsets,
                                            rec, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h));
  }
  uint16_t h[16] = {0};
  for (uint32_t i = 0; i < nt; i++) memcpy(&h[i], rec + (size_t)i * stride, 2);
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

/* The offsets for load_norms16 into *v; returns v, or NULL if they would
 * not fit. */
static inline const __m512i *norm_offsets(size_t stride, __m512i *v) {
  if (stride > (size_t)INT32_MAX / 16) return NULL;
  *v = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                          _mm512_set1_epi32((int)stride));
  return v;
}

/* Broadcasts of 4 and 8 bytes at p to every lane, written so that GCC
 * emits one broadcast load (no shuffle uop). */
static inline __m512i broadcast4(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

static inline __m512i broadcast8(const uint8_t *p) {
  int64_t v;
  memcpy(&v, p, 8);
  return _mm512_set1_epi64(v);
}

/* ------------------------------------------------------------------------ */
/* Codebook lookups                                                          */
/* ------------------------------------------------------------------------ */

/* Register copies of the codebook: bits <= 4: t[0][e] = c[e mod 2^bits];
 * 5 and 6 bits: the 32 or 64 centroids in t[0..3]; 7 and 8 bits: none (the
 * lookups gather from c). For 2 bits also second[e] = c[(e >> 2) & 3]: a
 * 4-bit index holds two codes, t[0] looks up the first, second the other. */
typedef struct {
  uint32_t bits;
  const float *c;
  __m512 t[4], second;
} lut;

static void lut_init(lut *l, const float *c, uint32_t bits) {
  float tab[64];
  uint32_t size = 1u << bits;
  uint32_t count = bits <= 4 ? 16 : bits <= 6 ? size : 0;
  memset(tab, 0, sizeof tab);
  for (uint32_t e = 0; e < count; e++) tab[e] = c[e & (size - 1u)];
  l->bits = bits;
  l->c = c;
  for (uint32_t i = 0; i < 4; i++) l->t[i] = _mm512_loadu_ps(tab + 16 * i);
  if (bits == 2)
    for (uint32_t e = 0; e < 16; e++) tab[e] = c[(e >> 2) & 3u];
  l->second = _mm512_loadu_ps(tab);
}

/* Centroids of the codes in the low bits of the lanes of x (bits above the
 * code are ignored). B: the width if known at compile time, else 0. */
TQ_INLINE __m512 lookup(const lut *l, __m512i x, const uint32_t B) {
  const uint32_t bits = B ? B : l->bits;
  if (bits <= 4) return _mm512_permutexvar_ps(x, l->t[0]);
  if (bits == 5) return _mm512_permutex2var_ps(l->t[0], x, l->t[1]);
  if (bits == 6) {
    __m512 lo = _mm512_permutex2var_ps(l->t[0], x, l->t[1]);
    __m512 hi = _mm512_permutex2var_ps(l->t[2], x, l->t[3]);
    __mmask16 upper = _mm512_test_epi32_mask(x, _mm512_set1_epi32(32));
    return _mm512_mask_blend_ps(upper, lo, hi);
  }
  __m512i k = _mm512_and_si512(x, _mm512_set1_epi32((int)((1u << bits) - 1u)));
  return _mm512_i32gather_ps(k, l->c, 4);
}

/* ------------------------------------------------------------------------ */
/* Sixteen codes of one record, dimensions in lanes                          */
/* ------------------------------------------------------------------------ */

/* For widths without a special case: a byte shuffle and shifts that bring
 * code l of 16 codes (2 * bits bytes, broadcast to the four 128-bit lanes)
 * to the low bits of lane l. */
typedef struct {
  __m512i shuffle, shift;
} spread16;

static void spread16_init(spread16 *s, uint32_t bits) {
  uint8_t ctl[64];
  uint32_t sh[16];
  for (uint32_t l = 0; l < 16; l++) {
    uint32_t bit = l * bits;
    uint32_t byte = bit / 8;
    ctl[4 * l] = (uint8_t)byte;
    ctl[4 * l + 1] = (uint8_t)(bit % 8 + bits > 8 ? byte + 1 : 0x80);
    ctl[4 * l + 2] = 0x80;
    ctl[4 * l + 3] = 0x80;
    sh[l] = bit % 8;
  }
  s->shuffle = _mm512_loadu_si512(ctl);
  s->shift = _mm512_loadu_si512(sh);
}

/* Codes 16v .. 16v+15 of a record (codes: the byte after the norm): lane l
 * holds code 16v + perm(l) in its low bits, perm the identity except for 4
 * bits, where lane 2m holds code m and lane 2m+1 code 8+m (within the 16).
 * B: the width if known at compile time (1, 2, 3 or 4), else 0. */
TQ_INLINE __m512i codes16(const uint8_t *codes, uint32_t v, const uint32_t B, uint32_t bits,
                          const spread16 *sp) {
  if (B == 1) {
    __m512i x = broadcast4(codes + 2 * (size_t)v);
    return _mm512_srlv_epi32(x, _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                  13, 14, 15));
  }
  if (B == 2) {
    __m512i x = broadcast4(codes + 4 * (size_t)v);
    return _mm512_srlv_epi32(x, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22,
                                                  24, 26, 28, 30));
  }
  if (B == 4) {
    __m512i x = broadcast8(codes + 8 * (size_t)v);
    return _mm512_srlv_epi32(x, _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20,
                                                  24, 24, 28, 28));
  }
  if (B) bits = B;
  __m512i x = _mm512_broadcast_i32x4(
      _mm_loadu_si128((const __m128i *)(codes + 2 * (size_t)bits * v)));
  return _mm512_srlv_epi32(_mm512_shuffle_epi8(x, sp->shuffle), sp->shift);
}

/* ------------------------------------------------------------------------ */
/* Horizontal sums                                                           */
/* ------------------------------------------------------------------------ */

/* Lane i of the result = the sum of the 16 lanes of v[i]: 15 adds and 30
 * shuffles or blends in four halving steps. */
TQ_INLINE __m512 hsum16(const __m512 *v) {
  __m512 u[8], s[4], r[2];
  /* 256-bit halves: u[p] lanes 0-7 from v[p], 8-15 from v[p+8]. */
TQ_UNROLL(8)
  for (int p = 0; p < 8; p++) {
    __m512 x = _mm512_mask_blend_ps(0xff00, v[p], v[p + 8]);
    __m512 y = _mm512_shuffle_f32x4(v[p], v[p + 8], 0x4e);
    u[p] = _mm512_add_ps(x, y);
  }
  /* 128-bit blocks: block m of s[p] from v[p + 4m]. */
  const __m512i cross = _mm512_setr_epi32(4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 24, 25,
                                          26, 27);
TQ_UNROLL(4)
  for (int p = 0; p < 4; p++) {
    __m512 x = _mm512_mask_blend_ps(0xf0f0, u[p], u[p + 4]);
    __m512 y = _mm512_permutex2var_ps(u[p], cross, u[p + 4]);
    s[p] = _mm512_add_ps(x, y);
  }
  /* Pairs within blocks: lanes 0-1 of block m of r[p] from s[2p], 2-3 from
   * s[2p+1]. */
TQ_UNROLL(2)
  for (int p = 0; p < 2; p++) {
    __m512 x = _mm512_mask_blend_ps(0xcccc, s[2 * p], s[2 * p + 1]);
    __m512 y = _mm512_shuffle_ps(s[2 * p], s[2 * p + 1], _MM_SHUFFLE(1, 0, 3, 2));
    r[p] = _mm512_add_ps(x, y);
  }
  /* Lane 4m + p from s[p], block m: v[4m + p]. */
  __m512 x = _mm512_shuffle_ps(r[0], r[1], _MM_SHUFFLE(2, 0, 2, 0));
  __m512 y = _mm512_shuffle_ps(r[0], r[1], _MM_SHUFFLE(3, 1, 3, 1));
  return _mm512_add_ps(x, y);
}

/* ------------------------------------------------------------------------ */
/* score_codes, bits <= 4: tokens in lanes                                   */
/* ------------------------------------------------------------------------ */

/* In place: r[k] lane i = old r[i] lane k. */
TQ_INLINE void transpose16(__m512i *r) {
  __m512i t[16], u[16];
TQ_UNROLL(8)
  for (int j = 0; j < 8; j++) {
    t[2 * j] = _mm512_unpacklo_epi32(r[2 * j], r[2 * j + 1]);
    t[2 * j + 1] = _mm512_unpackhi_epi32(r[2 * j], r[2 * j + 1]);
  }
  /* u[4j + e] block L: rows 4j..4j+3, element 4L + e. */
TQ_UNROLL(4)
  for (int j = 0; j < 4; j++) {
    u[4 * j] = _mm512_unpacklo_epi64(t[4 * j], t[4 * j + 2]);
    u[4 * j + 1] = _mm512_unpackhi_epi64(t[4 * j], t[4 * j + 2]);
    u[4 * j + 2] = _mm512_unpacklo_epi64(t[4 * j + 1], t[4 * j + 3]);
    u[4 * j + 3] = _mm512_unpackhi_epi64(t[4 * j + 1], t[4 * j + 3]);
  }
TQ_UNROLL(4)
  for (int e = 0; e < 4; e++) {
    __m512i a = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x88);
    __m512i b = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xdd);
    __m512i c = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x88);
    __m512i d = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xdd);
    r[e] = _mm512_shuffle_i32x4(a, c, 0x88);
    r[4 + e] = _mm512_shuffle_i32x4(b, d, 0x88);
    r[8 + e] = _mm512_shuffle_i32x4(a, c, 0xdd);
    r[12 + e] = _mm512_shuffle_i32x4(b, d, 0xdd);
  }
}

/* The 16 slots of 8 codes (bits * 8 bits each) that start at p, slot k in
 * the low bits of lane k. Reads 64 bytes at most. */
TQ_INLINE __m512i load_slots(const uint8_t *p, uint32_t bits) {
  switch (bits) {
    case 4: return _mm512_loadu_si512(p);
    case 2: return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    case 1: return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    default: {
      /* 3 bits: slot k is bytes 3k..3k+2; block L needs bytes 12L..12L+11. */
      const __m512i dwords = _mm512_setr_epi32(0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12);
      const __m512i bytes = _mm512_set4_epi32((int)0x800b0a09, (int)0x80080706,
                                              (int)0x80050403, (int)0x80020100);
      return _mm512_shuffle_epi8(_mm512_permutexvar_epi32(dwords, _mm512_loadu_si512(p)), bytes);
    }
  }
}

/* Scores of the GH heads of q (rows d apart) against n records, bits <= 4;
 * scores rows n apart. */
TQ_INLINE void score_codes_tokens(const float *q, uint32_t d, const uint8_t *rec, size_t stride,
                                  uint32_t n, const lut *l, const __m512i *noff, float *scores,
                                  const uint32_t GH) {
  enum { MAXG = 8 };
  const uint32_t NA = GH <= 2 ? 4 : GH <= 4 ? 2 : 1; /* accumulators per head */
  const uint32_t bits = l->bits;
  const __m512 table = l->t[0];
  __m512i shifts[8];
  for (uint32_t s = 0; s < 8; s++) shifts[s] = _mm512_set1_epi32((int)(bits * s));

  for (uint32_t t0 = 0; t0 < n; t0 += 16) {
    const uint32_t nt = min_u32(16, n - t0);
    const uint8_t *r0 = rec + (size_t)t0 * stride;
    if (t0 + 32 < n) prefetch_range(r0 + 32 * stride, (size_t)min_u32(16, n - t0 - 32) * stride);
    __m512 acc[MAXG][4];
TQ_UNROLL(8)
    for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(4)
      for (uint32_t a = 0; a < NA; a++) acc[g][a] = _mm512_setzero_ps();

    for (uint32_t db = 0; db < d; db += 128) {
      const uint32_t nd = min_u32(128, d - db);
      const uint8_t *p = r0 + 2 + (size_t)(db / 8) * bits;
      __m512i x[16];
TQ_UNROLL(16)
      for (uint32_t i = 0; i < 16; i++)
        x[i] = load_slots(p + (size_t)(i < nt ? i : 0) * stride, bits);
      transpose16(x);
      const float *qb = q + db;
      const uint32_t nslot = nd / 8;
      for (uint32_t k = 0; k < nslot; k++) {
        const __m512i xk = x[k];
        const float *qk = qb + 8 * k;
TQ_UNROLL(8)
        for (uint32_t s = 0; s < 8; s++) {
          __m512i ix = s ? _mm512_srlv_epi32(xk, shifts[s]) : xk;
          __m512 c = _mm512_permutexvar_ps(ix, table);
TQ_UNROLL(8)
          for (uint32_t g = 0; g < GH; g++)
            acc[g][s % NA] =
                _mm512_fmadd_ps(c, _mm512_set1_ps(qk[(size_t)g * d + s]), acc[g][s % NA]);
        }
      }
      const float *qk = qb + 8 * nslot;
      for (uint32_t s = 0; s < nd % 8; s++) {
        __m512 c = _mm512_permutexvar_ps(_mm512_srlv_epi32(x[nslot], shifts[s]), table);
TQ_UNROLL(8)
        for (uint32_t g = 0; g < GH; g++)
          acc[g][0] = _mm512_fmadd_ps(c, _mm512_set1_ps(qk[(size_t)g * d + s]), acc[g][0]);
      }
    }

    const __m512 norms = load_norms16(r0, stride, nt, noff);
    const __mmask16 m = first_lanes(nt);
TQ_UNROLL(8)
    for (uint32_t g = 0; g < GH; g++) {
      __m512 s = acc[g][0];
TQ_UNROLL(4)
      for (uint32_t a = 1; a < NA; a++) s = _mm512_add_ps(s, acc[g][a]);
      _mm512_mask_storeu_ps(scores + (size_t)g * n + t0, m, _mm512_mul_ps(s, norms));
    }
  }
}

/* ------------------------------------------------------------------------ */
/* score_codes, bits >= 5: dimensions in lanes                               */
/* ------------------------------------------------------------------------ */

/* Tiles of T = 16 / GH tokens x GH heads of partial sums (item g * T + i),
 * folded by hsum16 as in score_f16_group. */
TQ_INLINE void score_codes_dims(const float *q, uint32_t d, const uint8_t *rec, size_t stride,
                                uint32_t n, const lut *l, const spread16 *sp,
                                const __m512i *noff, float *scores, const uint32_t GH) {
  enum { MAXG = 4 };
  const uint32_t T = 16 / GH;
  const uint32_t nv = d / 16, tail = d % 16;
  const __mmask16 mt = first_lanes(tail);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (uint32_t t0 = 0; t0 < n; t0 += T) {
    const uint32_t nt = min_u32(T, n - t0);
    const uint8_t *codes[16];
TQ_UNROLL(16)
    for (uint32_t i = 0; i < T; i++) codes[i] = rec + (size_t)(t0 + (i < nt ? i : 0)) * stride + 2;
    if (t0 + 2 * T < n) prefetch_range(rec + (size_t)(t0 + 2 * T) * stride, (size_t)T * stride);
    __m512 acc[16];
TQ_UNROLL(16)
    for (uint32_t i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    for (uint32_t v = 0; v <= nv; v++) {
      if (v == nv && !tail) break;
      __m512 qv[MAXG];
TQ_UNROLL(4)
      for (uint32_t g = 0; g < GH; g++)
        qv[g] = v < nv ? _mm512_loadu_ps(q + (size_t)g * d + 16 * v)
                       : _mm512_maskz_loadu_ps(mt, q + (size_t)g * d + 16 * v);
TQ_UNROLL(16)
      for (uint32_t i = 0; i < T; i++) {
        const __m512 c = lookup(l, codes16(codes[i], v, 0, l->bits, sp), 0);
TQ_UNROLL(4)
        for (uint32_t g = 0; g < GH; g++)
          acc[g * T + i] = _mm512_fmadd_ps(qv[g], c, acc[g * T + i]);
      }
    }
    const __m512 norms = _mm512_permutexvar_ps(
        _mm512_and_si512(lane, _mm512_set1_epi32((int)(T - 1))),
        load_norms16(codes[0] - 2, stride, nt, noff));
    const __m512 sums = _mm512_mul_ps(hsum16(acc), norms);
    const __mmask16 m = first_lanes(nt);
TQ_UNROLL(4)
    for (uint32_t g = 0; g < GH; g++) {
      __m512 x = g ? _mm512_permutexvar_ps(_mm512_add_epi32(lane, _mm512_set1_epi32((int)(g * T))), sums)
                   : sums;
      _mm512_mask_storeu_ps(scores + (size_t)g * n + t0, m, x);
    }
  }
}

/* The instances, one function each. */
#define SCORE_TOKENS(GH)                                                                     \
  TQ_NOINLINE void score_codes_tokens_##GH(const float *q, uint32_t d, const uint8_t *rec,   \
                                           size_t stride, uint32_t n, const lut *l,          \
                                           const __m512i *noff, float *scores) {             \
    score_codes_tokens(q, d, rec, stride, n, l, noff, scores, GH);                          \
  }
SCORE_TOKENS(1)
SCORE_TOKENS(2)
SCORE_TOKENS(3)
SCORE_TOKENS(4)
SCORE_TOKENS(8)
#undef SCORE_TOKENS

#define SCORE_DIMS(GH)                                                                       \
  TQ_NOINLINE void score_codes_dims_##GH(const float *q, uint32_t d, const uint8_t *rec,     \
                                         size_t stride, uint32_t n, const lut *l,            \
                                         const spread16 *sp, const __m512i *noff,            \
                                         float *scores) {                                    \
    score_codes_dims(q, d, rec, stride, n, l, sp, noff, scores, GH);                        \
  }
SCORE_DIMS(1)
SCORE_DIMS(2)
SCORE_DIMS(4)
#undef SCORE_DIMS

static void avx512_score_codes(const float *q, uint32_t G, uint32_t d, const uint8_t *rec,
                               size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                               float *scores) {
  if (n == 0) return;
  lut l;
  lut_init(&l, centroids, bits);
  spread16 sp; /* only the dimensions-in-lanes path (bits >= 5) reads it */
  if (bits > 4) spread16_init(&sp, bits);
  else memset(&sp, 0, sizeof sp);
  __m512i offsets;
  const __m512i *noff = norm_offsets(stride, &offsets);
  for (uint32_t g0 = 0; g0 < G;) {
    const float *qg = q + (size_t)g0 * d;
    float *sg = scores + (size_t)g0 * n;
    uint32_t gh = head_group(G - g0);
    if (bits <= 4) {
      switch (gh) {
        case 8: score_codes_tokens_8(qg, d, rec, stride, n, &l, noff, sg); break;
        case 4: score_codes_tokens_4(qg, d, rec, stride, n, &l, noff, sg); break;
        case 3: score_codes_tokens_3(qg, d, rec, stride, n, &l, noff, sg); break;
        case 2: score_codes_tokens_2(qg, d, rec, stride, n, &l, noff, sg); break;
        default: score_codes_tokens_1(qg, d, rec, stride, n, &l, noff, sg); break;
      }
    } else {
      /* Groups of 4, 2 or 1 heads: tiles of 16 / gh tokens. */
      gh = gh >= 4 ? 4 : gh >= 2 ? 2 : 1;
      switch (gh) {
        case 4: score_codes_dims_4(qg, d, rec, stride, n, &l, &sp, noff, sg); break;
        case 2: score_codes_dims_2(qg, d, rec, stride, n, &l, &sp, noff, sg); break;
        default: score_codes_dims_1(qg, d, rec, stride, n, &l, &sp, noff, sg); break;
      }
    }
    g0 += gh;
  }
}

/* ------------------------------------------------------------------------ */
/* accum_codes                                                               */
/* ------------------------------------------------------------------------ */

/* Vectors of 16 dimensions per pass for a group of GH heads, so that the
 * group's accumulators (at most 16 vectors) stay in registers; at most MAXP
 * (the widths without their own instance take the same time per vector
 * either way and stay smaller). Passes are this wide, or narrower powers of
 * two for the last dimensions. */
#define PASS_VECTORS(GH, MAXP) \
  ((GH) == 1 ? (MAXP) : (GH) == 2 ? ((MAXP) < 8 ? (MAXP) : 8) : (GH) <= 4 ? 4 : 2)

/* Calls PASS(W) for the widths that cover the nv vectors of d, each W a
 * compile-time constant no wider than PASS_VECTORS(GH, MAXP). */
#define FOR_EACH_PASS(GH, MAXP, nv, v0, PASS)                                           \
  for (uint32_t v0 = 0; v0 < (nv);) {                                                   \
    const uint32_t left_ = (nv) - v0;                                                   \
    if (PASS_VECTORS(GH, MAXP) >= 16 && left_ >= 16) { PASS(16); v0 += 16; }             \
    else if (PASS_VECTORS(GH, MAXP) >= 8 && left_ >= 8) { PASS(8); v0 += 8; }            \
    else if (PASS_VECTORS(GH, MAXP) >= 4 && left_ >= 4) { PASS(4); v0 += 4; }            \
    else if (left_ >= 2) { PASS(2); v0 += 2; }                                           \
    else { PASS(1); v0 += 1; }                                                           \
  }

/* Tokens per run: their weight * norm products are computed once, then
 * every pass over the dimensions goes through the run. */
#define RUN 64

/* acc rows (d apart) += wn (GH rows of RUN) times the nt decoded records
 * from rec, for the W vectors of dimensions from 16 * v0 (the last may be
 * d's partial tail: its lanes past d accumulate garbage that is not
 * stored). B: 1..4, or 0 for other widths.
 *
 * Accumulator lanes follow the decoded vectors: for 4 bits, codes16's order
 * within each 16 dimensions; for 2 bits and an even W, pairs of vectors
 * (A, B) for 32 dimensions decoded from one shifted broadcast of 8 bytes:
 * lane 2m of A is dimension 2m, of B 2m+1; lane 2m+1 of A is 16+2m, of B
 * 17+2m (one shift and two vpermps per 32 dimensions). */
TQ_INLINE void accum_codes_pass(const float (*wn)[RUN], uint32_t d, const uint8_t *rec,
                                size_t stride, uint32_t nt, const lut *l, const spread16 *sp,
                                float *acc, uint32_t v0, const uint32_t B, const uint32_t GH,
                                const uint32_t W) {
  enum { MAXG = 8, MAXW = 16 };
  const uint32_t bits = l->bits;
  const int pairs = B == 2 && W % 2 == 0;
  const __mmask16 ml = first_lanes(min_u32(16, d - 16 * (v0 + W - 1)));
  /* For 4 bits, internal lane 2m is dimension m, 2m+1 is 8+m (codes16). */
  const __m512i to_internal =
      _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  const __m512i to_natural =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  /* 2-bit pairs: (A, B) from the natural (x0, x1) and back (an involution). */
  const __m512i pair_a =
      _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
  const __m512i pair_b =
      _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  const __m512i pair_shift =
      _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);

  __m512 a[MAXG][MAXW];
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++) {
    __m512 x[MAXW];
TQ_UNROLL(16)
    for (uint32_t v = 0; v < W; v++)
      x[v] = _mm512_maskz_loadu_ps(v + 1 < W ? 0xffff : ml, acc + (size_t)g * d + 16 * (v0 + v));
TQ_UNROLL(16)
    for (uint32_t v = 0; v < W; v++) {
      if (pairs)
        a[g][v] = _mm512_permutex2var_ps(x[v & ~1u], v % 2 ? pair_b : pair_a, x[v | 1u]);
      else
        a[g][v] = B == 4 ? _mm512_permutexvar_ps(to_internal, x[v]) : x[v];
    }
  }
  for (uint32_t i = 0; i < nt; i++) {
    const uint8_t *codes = rec + (size_t)i * stride + 2;
    __m512 c[MAXW];
    if (pairs) {
TQ_UNROLL(8)
      for (uint32_t u = 0; u < W / 2; u++) {
        const __m512i x = broadcast8(codes + 4 * (size_t)(v0 + 2 * u));
        const __m512i ix = _mm512_srlv_epi32(x, pair_shift);
        c[2 * u] = _mm512_permutexvar_ps(ix, l->t[0]);
        c[2 * u + 1] = _mm512_permutexvar_ps(ix, l->second);
      }
    } else {
TQ_UNROLL(16)
      for (uint32_t v = 0; v < W; v++) c[v] = lookup(l, codes16(codes, v0 + v, B, bits, sp), B);
    }
TQ_UNROLL(8)
    for (uint32_t g = 0; g < GH; g++) {
      const __m512 s = _mm512_set1_ps(wn[g][i]);
TQ_UNROLL(16)
      for (uint32_t v = 0; v < W; v++) a[g][v] = _mm512_fmadd_ps(s, c[v], a[g][v]);
    }
  }
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(16)
    for (uint32_t v = 0; v < W; v++) {
      __m512 x;
      if (pairs)
        x = _mm512_permutex2var_ps(a[g][v & ~1u], v % 2 ? pair_b : pair_a, a[g][v | 1u]);
      else
        x = B == 4 ? _mm512_permutexvar_ps(to_natural, a[g][v]) : a[g][v];
      _mm512_mask_storeu_ps(acc + (size_t)g * d + 16 * (v0 + v), v + 1 < W ? 0xffff : ml, x);
    }
}

TQ_INLINE void accum_codes_group(const float *w, uint32_t d, const uint8_t *rec, size_t stride,
                                 uint32_t n, const lut *l, const spread16 *sp,
                                 const __m512i *noff, float *acc, const uint32_t B,
                                 const uint32_t GH) {
  const uint32_t nv = (d + 15) / 16;
  float wn[8][RUN];
  for (uint32_t t0 = 0; t0 < n; t0 += RUN) {
    const uint32_t nt = min_u32(RUN, n - t0);
    const uint8_t *r0 = rec + (size_t)t0 * stride;
    if (t0 + RUN < n) prefetch_range(r0 + RUN * stride, (size_t)min_u32(RUN, n - t0 - RUN) * stride);
    for (uint32_t i = 0; i < nt; i += 16) {
      const uint32_t m = min_u32(16, nt - i);
      const __m512 norms = load_norms16(r0 + (size_t)i * stride, stride, m, noff);
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++)
        _mm512_storeu_ps(wn[g] + i, _mm512_mul_ps(_mm512_maskz_loadu_ps(first_lanes(m),
                                                                        w + (size_t)g * n + t0 + i),
                                                  norms));
    }
#define ACCUM_CODES_PASS(W) accum_codes_pass(wn, d, r0, stride, nt, l, sp, acc, v0, B, GH, W)
    FOR_EACH_PASS(GH, B ? 16 : 4, nv, v0, ACCUM_CODES_PASS)
#undef ACCUM_CODES_PASS
  }
}

#define ACCUM_CODES(B, GH)                                                                  \
  TQ_NOINLINE void accum_codes_b##B##_##GH(const float *w, uint32_t d, const uint8_t *rec,   \
                                           size_t stride, uint32_t n, const lut *l,          \
                                           const spread16 *sp, const __m512i *noff,          \
                                           float *acc) {                                     \
    accum_codes_group(w, d, rec, stride, n, l, sp, noff, acc, B, GH);                       \
  }
#define ACCUM_CODES_ALL(B) \
  ACCUM_CODES(B, 1) ACCUM_CODES(B, 2) ACCUM_CODES(B, 3) ACCUM_CODES(B, 4) ACCUM_CODES(B, 8)
ACCUM_CODES_ALL(0)
ACCUM_CODES_ALL(2)
ACCUM_CODES_ALL(4)
#undef ACCUM_CODES_ALL
#undef ACCUM_CODES

TQ_INLINE void accum_codes_bits(const float *w, uint32_t G, uint32_t d, const uint8_t *rec,
                                size_t stride, uint32_t n, const lut *l, const spread16 *sp,
                                const __m512i *noff, float *acc, const uint32_t B) {
  for (uint32_t g0 = 0; g0 < G;) {
    const uint32_t gh = head_group(G - g0);
    const float *wg = w + (size_t)g0 * n;
    float *ag = acc + (size_t)g0 * d;
#define CALL(GH)                                                               \
  (B == 2   ? accum_codes_b2_##GH(wg, d, rec, stride, n, l, sp, noff, ag)      \
   : B == 4 ? accum_codes_b4_##GH(wg, d, rec, stride, n, l, sp, noff, ag)      \
            : accum_codes_b0_##GH(wg, d, rec, stride, n, l, sp, noff, ag))
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

/* Widths 2 and 4 have their own instances; the others share one that reads
 * the width at run time (spread16 and lookup's switch). */
static void avx512_accum_codes(const float *w, uint32_t G, uint32_t d, const uint8_t *rec,
                               size_t stride, uint32_t n, uint32_t bits, const float *centroids,
                               float *acc) {
  if (n == 0) return;
  lut l;
  lut_init(&l, centroids, bits);
  spread16 sp; /* only the instance for other widths reads it */
  if (bits != 2 && bits != 4) spread16_init(&sp, bits);
  else memset(&sp, 0, sizeof sp);
  __m512i offsets;
  const __m512i *noff = norm_offsets(stride, &offsets);
  switch (bits) {
    case 2: accum_codes_bits(w, G, d, rec, stride, n, &l, &sp, noff, acc, 2); break;
    case 4: accum_codes_bits(w, G, d, rec, stride, n, &l, &sp, noff, acc, 4); break;
    default: accum_codes_bits(w, G, d, rec, stride, n, &l, &sp, noff, acc, 0); break;
  }
}

/* ------------------------------------------------------------------------ */
/* fp16 rows                                                                 */
/* ------------------------------------------------------------------------ */

static inline __m512 load_f16x16(const uint16_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static inline __m512 load_f16_lanes(const uint16_t *p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

/* Scores of GH heads against n fp16 rows: tiles of T tokens x GH heads of
 * partial sums (T * GH <= 16), folded by hsum16 into one vector whose lanes
 * g * T .. g * T + T-1 are head g's scores, moved to lane 0 and stored. */
TQ_INLINE void score_f16_group(const float *q, uint32_t d, const uint16_t *k, size_t stride,
                               uint32_t n, float *scores, const uint32_t GH) {
  enum { MAXG = 8 };
  const uint32_t T = 16 / GH;
  const uint32_t nv = d / 16, tail = d % 16;
  const __mmask16 mt = first_lanes(tail);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (uint32_t t0 = 0; t0 < n; t0 += T) {
    const uint32_t nt = min_u32(T, n - t0);
    const uint16_t *row[16];
TQ_UNROLL(16)
    for (uint32_t i = 0; i < T; i++) row[i] = k + (size_t)(t0 + (i < nt ? i : 0)) * stride;
    for (uint32_t i = t0 + 2 * T; i < min_u32(t0 + 3 * T, n); i++)
      prefetch_range(k + (size_t)i * stride, (size_t)d * 2);
    __m512 acc[16];
TQ_UNROLL(16)
    for (uint32_t i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    for (uint32_t v = 0; v < nv; v++) {
      __m512 qv[MAXG];
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++) qv[g] = _mm512_loadu_ps(q + (size_t)g * d + 16 * v);
TQ_UNROLL(16)
      for (uint32_t i = 0; i < T; i++) {
        const __m512 kv = load_f16x16(row[i] + 16 * v);
TQ_UNROLL(8)
        for (uint32_t g = 0; g < GH; g++)
          acc[g * T + i] = _mm512_fmadd_ps(qv[g], kv, acc[g * T + i]);
      }
    }
    if (tail) {
      __m512 qv[MAXG];
TQ_UNROLL(8)
      for (uint32_t g = 0; g < GH; g++)
        qv[g] = _mm512_maskz_loadu_ps(mt, q + (size_t)g * d + 16 * nv);
TQ_UNROLL(16)
      for (uint32_t i = 0; i < T; i++) {
        const __m512 kv = load_f16_lanes(row[i] + 16 * nv, mt);
TQ_UNROLL(8)
        for (uint32_t g = 0; g < GH; g++)
          acc[g * T + i] = _mm512_fmadd_ps(qv[g], kv, acc[g * T + i]);
      }
    }
    const __m512 sums = hsum16(acc);
    const __mmask16 m = first_lanes(nt);
TQ_UNROLL(8)
    for (uint32_t g = 0; g < GH; g++) {
      __m512 x = g ? _mm512_permutexvar_ps(_mm512_add_epi32(lane, _mm512_set1_epi32((int)(g * T))), sums)
                   : sums;
      _mm512_mask_storeu_ps(scores + (size_t)g * n + t0, m, x);
    }
  }
}

#define SCORE_F16(GH)                                                                       \
  TQ_NOINLINE void score_f16_##GH(const float *q, uint32_t d, const uint16_t *k, size_t stride, \
                                  uint32_t n, float *scores) {                              \
    score_f16_group(q, d, k, stride, n, scores, GH);                                        \
  }
SCORE_F16(1)
SCORE_F16(2)
SCORE_F16(3)
SCORE_F16(4)
#undef SCORE_F16

static void avx512_score_f16(const float *q, uint32_t G, uint32_t d, const uint16_t *k,
                             size_t stride, uint32_t n, float *scores) {
  if (n == 0) return;
  for (uint32_t g0 = 0; g0 < G;) {
    /* At most 4 heads: with 8, a tile is 2 tokens and the horizontal sums
     * and stores per token cost more than converting the rows twice. */
    const uint32_t gh = min_u32(head_group(G - g0), 4);
    const float *qg = q + (size_t)g0 * d;
    float *sg = scores + (size_t)g0 * n;
    switch (gh) {
      case 4: score_f16_4(qg, d, k, stride, n, sg); break;
      case 3: score_f16_3(qg, d, k, stride, n, sg); break;
      case 2: score_f16_2(qg, d, k, stride, n, sg); break;
      default: score_f16_1(qg, d, k, stride, n, sg); break;
    }
    g0 += gh;
  }
}

/* The token loop of accum_f16_pass; PARTIAL: the last vector is d's tail
 * (masked loads of its row elements). */
TQ_INLINE void accum_f16_tokens(const float *w, uint32_t d, const uint16_t *vrows, size_t stride,
                                uint32_t n, uint32_t v0, __mmask16 ml, __m512 (*a)[16],
                                const uint32_t GH, const uint32_t W, const int PARTIAL) {
  enum { MAXW = 16 };
  for (uint32_t t = 0; t < n; t++) {
    const uint16_t *row = vrows + (size_t)t * stride + 16 * v0;
    /* The first pass prefetches whole rows, for the later passes too. */
    if (v0 == 0 && t + 8 < n) prefetch_range(row + 8 * stride, (size_t)d * 2);
    __m512 x[MAXW];
TQ_UNROLL(16)
    for (uint32_t v = 0; v < W; v++)
      x[v] = PARTIAL && v + 1 == W ? load_f16_lanes(row + 16 * v, ml) : load_f16x16(row + 16 * v);
TQ_UNROLL(8)
    for (uint32_t g = 0; g < GH; g++) {
      const __m512 s = _mm512_set1_ps(w[(size_t)g * n + t]);
TQ_UNROLL(16)
      for (uint32_t v = 0; v < W; v++) a[g][v] = _mm512_fmadd_ps(s, x[v], a[g][v]);
    }
  }
}

/* acc rows += the GH heads' weights times the fp16 rows, for the W vectors
 * of dimensions from 16 * v0 (the last may be d's partial tail). */
TQ_INLINE void accum_f16_pass(const float *w, uint32_t d, const uint16_t *vrows, size_t stride,
                              uint32_t n, float *acc, uint32_t v0, const uint32_t GH,
                              const uint32_t W) {
  enum { MAXG = 8, MAXW = 16 };
  const uint32_t last = min_u32(16, d - 16 * (v0 + W - 1));
  const __mmask16 ml = first_lanes(last);
  __m512 a[MAXG][MAXW];
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(16)
    for (uint32_t v = 0; v < W; v++)
      a[g][v] = _mm512_maskz_loadu_ps(v + 1 < W ? 0xffff : ml, acc + (size_t)g * d + 16 * (v0 + v));
  if (last == 16) accum_f16_tokens(w, d, vrows, stride, n, v0, ml, a, GH, W, 0);
  else accum_f16_tokens(w, d, vrows, stride, n, v0, ml, a, GH, W, 1);
TQ_UNROLL(8)
  for (uint32_t g = 0; g < GH; g++)
TQ_UNROLL(16)
    for (uint32_t v = 0; v < W; v++)
      _mm512_mask_storeu_ps(acc + (size_t)g * d + 16 * (v0 + v), v + 1 < W ? 0xffff : ml, a[g][v]);
}

TQ_INLINE void accum_f16_group(const float *w, uint32_t d, const uint16_t *vrows, size_t stride,
                               uint32_t n, float *acc, const uint32_t GH) {
  const uint32_t nv = (d + 15) / 16;
#define ACCUM_F16_PASS(W) accum_f16_pass(w, d, vrows, stride, n, acc, v0, GH, W)
  FOR_EACH_PASS(GH, 16, nv, v0, ACCUM_F16_PASS)
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

static void avx512_accum_f16(const float *w, uint32_t G, uint32_t d, const uint16_t *v,
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

/* exp(x) to about one ulp: x = k ln2 + r, |r| <= ln2/2 (ln2 in two parts),
 * exp(r) by Cephes' expf polynomial, times 2^k by vscalefps. Below -104 the
 * result is 0 (as expf's); NaN stays NaN. */
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x); /* NaN: returns x */
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

static float avx512_exp_sum(float *x, uint32_t n, float m) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  uint32_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    __m512 e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vm));
    _mm512_storeu_ps(x + i, e0);
    _mm512_storeu_ps(x + i + 16, e1);
    s0 = _mm512_add_ps(s0, e0);
    s1 = _mm512_add_ps(s1, e1);
  }
  for (; i < n; i += 16) {
    const __mmask16 mk = first_lanes(min_u32(16, n - i));
    __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), vm));
    _mm512_mask_storeu_ps(x + i, mk, e);
    s0 = _mm512_mask_add_ps(s0, mk, s0, e);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* vmaxps(a, b) returns b when either is NaN: with the running maximum as b,
 * a NaN element is skipped. Two running maxima; the order does not matter. */
static float avx512_row_max(const float *x, uint32_t n) {
  __m512 m0 = _mm512_set1_ps(x[0]), m1 = m0;
  uint32_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
    m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
  }
  for (; i < n; i += 16) {
    const __mmask16 mk = first_lanes(min_u32(16, n - i));
    m0 = _mm512_mask_max_ps(m0, mk, _mm512_maskz_loadu_ps(mk, x + i), m0);
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(m1, m0));
}

const tq_attn_kernels tq_attn_kernels_avx512 = {
    .level = TQ_SIMD_AVX512,
    .score_codes = avx512_score_codes,
    .accum_codes = avx512_accum_codes,
    .score_f16 = avx512_score_f16,
    .accum_f16 = avx512_accum_f16,
    .exp_sum = avx512_exp_sum,
    .row_max = avx512_row_max,
};
