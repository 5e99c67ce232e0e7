/*
 * test_simd.c - every SIMD kernel table (kernels.h) against the scalar
 * reference, bit for bit: the encoded bytes must not depend on the SIMD level.
 * Each kernel runs on random and adversarial data (huge, tiny, subnormal and
 * infinite values, inputs equal to quantizer boundaries, every f16/bf16
 * pattern, NaN payloads) for head sizes that exercise the vector tails, at
 * every level the CPU supports.
 */
#include <stdint.h>

#include "codec/kernels.h"
#include "test.h"

static const tq_codec_kernels *const ref = &tq_codec_kernels_ref;
static tq_simd_level level;          /* the level under test, */
static const tq_codec_kernels *simd; /* its table */
static const char *level_name = "";

static const uint32_t dims[] = {2,  3,  5,   7,   8,   9,   15,  16,   17,   31,   33,
                                64, 80, 96,  100, 112, 128, 192, 256, 1000, 1024, 2048};
#define N_DIMS (sizeof dims / sizeof dims[0])

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "test_simd: out of memory\n");
    exit(2);
  }
  return p;
}

/* Index of the first of n elements of `size` bytes where a and b differ, or
 * -1 if they are bitwise equal. */
static long first_diff(const void *a, const void *b, size_t n, size_t size) {
  const unsigned char *pa = a, *pb = b;
  for (size_t i = 0; i < n; i++)
    if (memcmp(pa + i * size, pb + i * size, size) != 0) return (long)i;
  return -1;
}

static uint32_t float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float bits_float(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

static uint32_t rand_below(tq_test_rng *r, uint32_t n) {
  return (uint32_t)(tq_test_next(r) % n);
}

/* Kinds of float test data. */
enum {
  DATA_GAUSS,    /* N(0, 1) */
  DATA_WIDE,     /* N(0, 1) times 2^e, e in [-150, 127]: subnormal to infinite */
  DATA_MIXED,    /* mostly N(0, 1), with some huge, tiny and zero values */
  DATA_KINDS
};

static float rand_data(tq_test_rng *r, int kind) {
  float g = (float)tq_test_gauss(r);
  switch (kind) {
    case DATA_WIDE: return ldexpf(g, (int)rand_below(r, 278) - 150);
    case DATA_MIXED:
      switch (rand_below(r, 16)) {
        case 0: return g * 1e30f;
        case 1: return g * 1e-30f;
        case 2: return g * 1e-40f; /* subnormal */
        case 3: return 0.0f;
        case 4: return -0.0f;
        default: return g;
      }
    default: return g;
  }
}

static void fill_data(tq_test_rng *r, float *x, size_t n, int kind) {
  for (size_t i = 0; i < n; i++) x[i] = rand_data(r, kind);
}

/* Reports the first differing float of a SIMD result. */
static void check_floats(const float *want, const float *got, size_t n, const char *what,
                         uint32_t d) {
  long i = first_diff(want, got, n, sizeof(float));
  CHECKF(i < 0, "%s %s d=%u: element %ld is 0x%08x, reference 0x%08x", level_name, what, d, i,
         i < 0 ? 0u : float_bits(got[i]), i < 0 ? 0u : float_bits(want[i]));
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static void test_table(void) {
  CHECKF(simd != NULL, "%s: supported but tq_codec_kernels_get gives NULL", level_name);
  if (!simd) return;
  CHECK(simd->level == level);
  CHECK(simd->sumsq && simd->matvec && simd->hadamard && simd->hadamard_inv &&
        simd->quantize && simd->dequantize && simd->f16_to_f32 && simd->f32_to_f16 &&
        simd->bf16_to_f32 && simd->f32_to_bf16);
}

static void test_sumsq(void) {
  tq_test_rng rng = {101};
  for (size_t t = 0; t < N_DIMS; t++) {
    uint32_t d = dims[t];
    /* One spare element in front: the kernel also runs on x + 1, unaligned. */
    float *x = xmalloc(((size_t)d + 1) * sizeof *x);
    for (int trial = 0; trial < 8; trial++) {
      int kind = trial % DATA_KINDS;
      fill_data(&rng, x, (size_t)d + 1, kind);
      if (trial == 7) x[1 + rand_below(&rng, d)] = INFINITY;
      for (int off = 0; off < 2; off++) {
        double want = ref->sumsq(x + off, d), got = simd->sumsq(x + off, d);
        CHECKF(memcmp(&want, &got, sizeof want) == 0,
               "%s sumsq d=%u trial=%d off=%d: %.17g, reference %.17g", level_name, d, trial,
               off, got, want);
      }
    }
    free(x);
  }
}

static void test_matvec(void) {
  tq_test_rng rng = {202};
  for (size_t t = 0; t < N_DIMS; t++) {
    uint32_t d = dims[t];
    size_t dd = (size_t)d * d;
    float *m = xmalloc(dd * sizeof *m);
    float *x = xmalloc(d * sizeof *x);
    float *want = xmalloc(d * sizeof *want);
    float *got = xmalloc(d * sizeof *got);
    int trials = d >= 1000 ? 1 : 4;
    for (int trial = 0; trial < trials; trial++) {
      int kind = trial % 2 ? DATA_MIXED : DATA_GAUSS;
      fill_data(&rng, m, dd, kind);
      fill_data(&rng, x, d, kind);
      if (trial == 3) {
        /* Overflow to infinity and inf - inf in some sums. */
        m[rand_below(&rng, (uint32_t)dd)] = 3e38f;
        m[rand_below(&rng, (uint32_t)dd)] = -3e38f;
        x[rand_below(&rng, d)] = 1e10f;
      }
      float s = trial == 2 ? 1.0f : (float)(1.0 / sqrt((double)d)) * (1.0f + (float)trial);
      ref->matvec(m, x, s, want, d);
      simd->matvec(m, x, s, got, d);
      check_floats(want, got, d, "matvec", d);
    }
    free(m);
    free(x);
    free(want);
    free(got);
  }
}

/* hadamard and hadamard_inv, out of place (also on unaligned pointers) and in
 * place. */
static void test_hadamard(void) {
  tq_test_rng rng = {303};
  for (uint32_t d = 2; d <= TQ_MAX_DIM; d *= 2) {
    size_t n = (size_t)d + 1; /* spare element in front for the unaligned runs */
    float *signs = xmalloc(n * sizeof(float));
    float *x = xmalloc(n * sizeof(float));
    float *want = xmalloc(d * sizeof(float));
    float *got = xmalloc(d * sizeof(float));
    for (int trial = 0; trial < 6; trial++) {
      for (size_t j = 0; j < n; j++) signs[j] = (tq_test_next(&rng) & 1) ? 1.0f : -1.0f;
      fill_data(&rng, x, n, trial % DATA_KINDS);
      float s = trial == 1 ? 1.0f : (float)(1.0 / sqrt((double)d)) * (float)(1 + trial);
      for (int inv = 0; inv < 2; inv++) {
        const char *name = inv ? "hadamard_inv" : "hadamard";
        void (*fr)(const float *, const float *, float, float *, uint32_t) =
            inv ? ref->hadamard_inv : ref->hadamard;
        void (*fs)(const float *, const float *, float, float *, uint32_t) =
            inv ? simd->hadamard_inv : simd->hadamard;
        for (int off = 0; off < 2; off++) {
          fr(signs + off, x + off, s, want, d);
          fs(signs + off, x + off, s, got, d);
          check_floats(want, got, d, name, d);
        }
        /* In place: both start from a copy of x. */
        memcpy(want, x, d * sizeof(float));
        memcpy(got, x, d * sizeof(float));
        fr(signs, want, s, want, d);
        fs(signs, got, s, got, d);
        check_floats(want, got, d, inv ? "hadamard_inv in place" : "hadamard in place", d);
      }
    }
    free(signs);
    free(x);
    free(want);
    free(got);
  }
}

/* nb strictly ascending boundaries. Kind 0: spread over [-2, 2]; kind 1:
 * about the size of a unit vector's coordinate at d = 128, with one boundary
 * exactly 0.0f; kind 2: huge and tiny magnitudes. */
static void make_bounds(tq_test_rng *r, float *b, uint32_t nb, int kind) {
  double v = -2.0, scale = 4.0 / nb;
  for (uint32_t i = 0; i < nb; i++) {
    v += scale * (0.2 + tq_test_uniform(r));
    b[i] = (float)v;
  }
  if (kind == 1) {
    float mid = b[nb / 2];
    for (uint32_t i = 0; i < nb; i++) b[i] = (b[i] - mid) * 0.088f;
  } else if (kind == 2) {
    for (uint32_t i = 0; i < nb; i++) b[i] = b[i] * (i % 2 ? 1e30f : 1e-30f);
    /* Re-sort into strictly ascending order; magnitudes differ wildly. */
    for (uint32_t i = 1; i < nb; i++)
      for (uint32_t k = i; k > 0 && b[k - 1] > b[k]; k--) {
        float tmp = b[k];
        b[k] = b[k - 1];
        b[k - 1] = tmp;
      }
  }
}

static int strictly_ascending(const float *b, uint32_t nb) {
  for (uint32_t i = 1; i < nb; i++)
    if (!(b[i - 1] < b[i])) return 0;
  return 1;
}

/* A value to quantize: a boundary exactly, a neighbour of one, beyond the
 * extremes, or anywhere in between. */
static float quantize_input(tq_test_rng *r, const float *b, uint32_t nb) {
  float bk = b[rand_below(r, nb)];
  switch (rand_below(r, 10)) {
    case 0:
    case 1: return bk;
    case 2: return nextafterf(bk, INFINITY);
    case 3: return nextafterf(bk, -INFINITY);
    case 4: return b[0] - (float)fabs(tq_test_gauss(r));
    case 5: return b[nb - 1] + (float)fabs(tq_test_gauss(r));
    case 6: return (tq_test_next(r) & 1) ? 1e30f : -1e30f;
    case 7: return (tq_test_next(r) & 1) ? 0.0f : -0.0f;
    default: return b[0] + (b[nb - 1] - b[0]) * (float)tq_test_uniform(r);
  }
}

static void test_quantize(void) {
  tq_test_rng rng = {404};
  for (uint32_t bits = TQ_MIN_BITS; bits <= TQ_MAX_BITS; bits++) {
    uint32_t nb = (1u << bits) - 1u;
    float *b = xmalloc(nb * sizeof *b);
    for (int kind = 0; kind < 3; kind++) {
      make_bounds(&rng, b, nb, kind);
      CHECKF(strictly_ascending(b, nb), "test data: bounds not ascending (bits=%u)", bits);
      for (size_t t = 0; t < N_DIMS; t++) {
        uint32_t d = dims[t];
        float *y = xmalloc(d * sizeof *y);
        uint8_t *want = xmalloc(d), *got = xmalloc(d);
        for (uint32_t j = 0; j < d; j++) y[j] = quantize_input(&rng, b, nb);
        memset(want, 0xa5, d);
        memset(got, 0x5a, d);
        ref->quantize(b, bits, y, want, d);
        simd->quantize(b, bits, y, got, d);
        long i = first_diff(want, got, d, 1);
        CHECKF(i < 0, "%s quantize bits=%u kind=%d d=%u: y[%ld]=%.9g gives %d, reference %d",
               level_name, bits, kind, d, i, i < 0 ? 0.0 : (double)y[i], i < 0 ? 0 : got[i],
               i < 0 ? 0 : want[i]);
        free(y);
        free(want);
        free(got);
      }
    }
    free(b);
  }
}

static void test_dequantize(void) {
  tq_test_rng rng = {505};
  for (uint32_t bits = TQ_MIN_BITS; bits <= TQ_MAX_BITS; bits++) {
    uint32_t nc = 1u << bits;
    float *c = xmalloc(nc * sizeof *c);
    /* Arbitrary bit patterns, NaNs included: the lookup must copy bits. */
    for (uint32_t k = 0; k < nc; k++) c[k] = bits_float((uint32_t)tq_test_next(&rng));
    for (size_t t = 0; t < N_DIMS; t++) {
      uint32_t d = dims[t];
      uint8_t *idx = xmalloc(d);
      float *want = xmalloc(d * sizeof *want), *got = xmalloc(d * sizeof *got);
      /* Codes up to `top`, which occurs once, anywhere or last: the largest
       * code present may choose how a kernel looks codes up. */
      static const uint32_t tops[] = {255, 127, 64, 63, 32, 31, 16, 15, 8, 7, 1};
      for (size_t k = 0; k < sizeof tops / sizeof tops[0]; k++) {
        uint32_t top = tops[k];
        if (top >= nc) continue;
        for (int last = 0; last < 2; last++) {
          for (uint32_t j = 0; j < d; j++) idx[j] = (uint8_t)rand_below(&rng, top + 1);
          idx[last ? d - 1 : rand_below(&rng, d)] = (uint8_t)top;
          ref->dequantize(c, idx, want, d);
          simd->dequantize(c, idx, got, d);
          check_floats(want, got, d, "dequantize", d);
        }
      }
      free(idx);
      free(want);
      free(got);
    }
    free(c);
  }
}

/* Runs a half -> float conversion over h[0 .. n-1], then over short runs of
 * it (to cover the tails), and compares. */
static void check_widen(void (*fr)(const uint16_t *, float *, size_t),
                        void (*fs)(const uint16_t *, float *, size_t), const uint16_t *h,
                        size_t n, const char *what) {
  float *want = xmalloc(n * sizeof *want), *got = xmalloc(n * sizeof *got);
  fr(h, want, n);
  fs(h, got, n);
  long i = first_diff(want, got, n, sizeof(float));
  CHECKF(i < 0, "%s %s: 0x%04x gives 0x%08x, reference 0x%08x", level_name, what,
         i < 0 ? 0u : h[i], i < 0 ? 0u : float_bits(got[i]), i < 0 ? 0u : float_bits(want[i]));
  free(want);
  free(got);
  /* Short runs in buffers of exactly their size, so that the sanitizer sees
   * any access past the end. */
  for (size_t len = 0; len <= 40 && len <= n; len++) {
    size_t start = len * 7 % (n - len + 1);
    uint16_t *in = xmalloc(len * sizeof *in);
    want = xmalloc(len * sizeof *want);
    got = xmalloc(len * sizeof *got);
    memcpy(in, h + start, len * sizeof *in);
    fr(in, want, len);
    fs(in, got, len);
    CHECKF(first_diff(want, got, len, sizeof(float)) < 0, "%s %s: n=%zu from %zu", level_name,
           what, len, start);
    free(in);
    free(want);
    free(got);
  }
}

/* The same for float -> half. */
static void check_narrow(void (*fr)(const float *, uint16_t *, size_t),
                         void (*fs)(const float *, uint16_t *, size_t), const float *x,
                         size_t n, const char *what) {
  uint16_t *want = xmalloc(n * sizeof *want), *got = xmalloc(n * sizeof *got);
  fr(x, want, n);
  fs(x, got, n);
  long i = first_diff(want, got, n, sizeof(uint16_t));
  CHECKF(i < 0, "%s %s: 0x%08x gives 0x%04x, reference 0x%04x", level_name, what,
         i < 0 ? 0u : float_bits(x[i]), i < 0 ? 0u : got[i], i < 0 ? 0u : want[i]);
  free(want);
  free(got);
  for (size_t len = 0; len <= 40 && len <= n; len++) {
    size_t start = len * 7 % (n - len + 1);
    float *in = xmalloc(len * sizeof *in);
    want = xmalloc(len * sizeof *want);
    got = xmalloc(len * sizeof *got);
    memcpy(in, x + start, len * sizeof *in);
    fr(in, want, len);
    fs(in, got, len);
    CHECKF(first_diff(want, got, len, sizeof(uint16_t)) < 0, "%s %s: n=%zu from %zu",
           level_name, what, len, start);
    free(in);
    free(want);
    free(got);
  }
}

static void test_widen_all_patterns(void) {
  uint16_t *h = xmalloc(65536 * sizeof *h);
  for (uint32_t k = 0; k < 65536; k++) h[k] = (uint16_t)k;
  check_widen(ref->f16_to_f32, simd->f16_to_f32, h, 65536, "f16_to_f32");
  check_widen(ref->bf16_to_f32, simd->bf16_to_f32, h, 65536, "bf16_to_f32");
  free(h);
}

/* Float bit patterns around which narrowing conversions change behaviour:
 * zeros, subnormals, overflow thresholds, infinities, NaNs with assorted
 * payloads (signalling and quiet), f16 subnormal thresholds and ties. */
static const uint32_t special_floats[] = {
    0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00800000,
    0x80800000, 0x3f800000, 0xbf800000, 0x3f7fffff, 0x3f800001, 0x3f801000, 0x3f803000,
    0x3f808000, 0x3f818000, 0x3f7f8000, 0x477fe000, /* 65504 */
    0x477fefff, 0x477ff000, /* 65520: ties to infinity */
    0x477fffff, 0x47800000, 0xc77ff000, 0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff,
    0x7f800000, 0xff800000, 0x7f800001, 0xff800001, 0x7f801fff, 0x7f802000, 0x7f807fff,
    0x7f808000, 0x7fa00000, 0x7fbfffff, 0x7fc00000, 0xffc00000, 0x7fc00001, 0x7fffffff,
    0xffffffff, 0x7fe00000, 0xff80ffff, 0x33000000, /* 2^-25 */
    0x33000001, 0x33400000, 0x33800000, /* 2^-24 */
    0x33c00000, 0x38800000, /* 2^-14 */
    0x387fc000, 0x387fe000, 0x387fffff, 0xb87fe000};
#define N_SPECIAL (sizeof special_floats / sizeof special_floats[0])

/* Fills x with the special floats; then, for every float pattern u that is a
 * multiple of 2^shift (shift = the bits the conversion drops from a normal
 * float: 13 for f16, 16 for bf16), u itself, the rounding tie u + 2^(shift-1)
 * and its two neighbours; then random bit patterns. Returns the count. */
static size_t narrowing_inputs(tq_test_rng *r, float *x, uint32_t shift) {
  size_t n = 0;
  for (size_t k = 0; k < N_SPECIAL; k++) x[n++] = bits_float(special_floats[k]);
  for (uint32_t k = 0; k < (1u << (32 - shift)); k++) {
    uint32_t u = k << shift;
    uint32_t tie = u + (1u << (shift - 1));
    x[n++] = bits_float(u);
    x[n++] = bits_float(tie);
    x[n++] = bits_float(tie - 1);
    x[n++] = bits_float(tie + 1);
  }
  for (uint32_t k = 0; k < (1u << 18); k++) x[n++] = bits_float((uint32_t)tq_test_next(r));
  return n;
}

static size_t narrowing_capacity(uint32_t shift) {
  return N_SPECIAL + ((size_t)4 << (32 - shift)) + (1u << 18);
}

static void test_f32_to_bf16(void) {
  tq_test_rng rng = {606};
  float *x = xmalloc(narrowing_capacity(16) * sizeof *x);
  size_t n = narrowing_inputs(&rng, x, 16);
  check_narrow(ref->f32_to_bf16, simd->f32_to_bf16, x, n, "f32_to_bf16");
  free(x);
}

static void test_f32_to_f16(void) {
  tq_test_rng rng = {707};
  float *x = xmalloc(narrowing_capacity(13) * sizeof *x);
  size_t n = narrowing_inputs(&rng, x, 13);
  check_narrow(ref->f32_to_f16, simd->f32_to_f16, x, n, "f32_to_f16 (sweep)");

  /* Every finite f16 value and the exact midpoints to its successor, which
   * are the rounding ties also where f16 is subnormal, with their neighbours. */
  n = 0;
  for (uint32_t sign = 0; sign < 2; sign++) {
    for (uint32_t k = 0; k < 0x7bff; k++) {
      uint16_t h0 = (uint16_t)(k | sign << 15), h1 = (uint16_t)((k + 1) | sign << 15);
      float a = tq_f16_to_f32(h0), b = tq_f16_to_f32(h1);
      float mid = (float)(((double)a + (double)b) / 2); /* exact in float */
      x[n++] = a;
      x[n++] = mid;
      x[n++] = nextafterf(mid, 0.0f);
      x[n++] = nextafterf(mid, sign ? -INFINITY : INFINITY);
    }
  }
  check_narrow(ref->f32_to_f16, simd->f32_to_f16, x, n, "f32_to_f16 (midpoints)");
  free(x);
}

/* ------------------------------------------------------------------------ */

int main(void) {
  static const tq_simd_level levels[] = {TQ_SIMD_AVX2, TQ_SIMD_AVX512};
  for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
    level = levels[l];
    level_name = tq_simd_name(level);
    if (!tq_simd_supported(level)) {
      TQ_SKIP(level_name, "SIMD level not compiled in or not supported by this CPU");
      continue;
    }
    simd = tq_codec_kernels_get(level);
    TQ_RUN(test_table);
    if (!simd) continue;
    TQ_RUN(test_sumsq);
    TQ_RUN(test_matvec);
    TQ_RUN(test_hadamard);
    TQ_RUN(test_quantize);
    TQ_RUN(test_dequantize);
    TQ_RUN(test_widen_all_patterns);
    TQ_RUN(test_f32_to_f16);
    TQ_RUN(test_f32_to_bf16);
  }
  return tq_test_summary("test_simd");
}
