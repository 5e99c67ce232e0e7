/*
 * test_attn_kernels.c - the SIMD attention kernels (attn_kernels.h) against
 * the scalar reference tq_attn_kernels_ref, at every level this machine
 * supports (the others are reported as skipped).
 *
 * Data is random: Gaussian queries and centroids, fp16 norms of positive
 * values (some of them fp16 subnormals), random code bytes everywhere in the
 * record buffers (so the kernels must ignore whatever surrounds the codes),
 * strides larger than the record and sub-record offsets as a fractional-rate
 * cache passes them. Every buffer is allocated to its exact size (records:
 * plus TQ_ATTN_PAD bytes), so that a build with AddressSanitizer catches any
 * access beyond what the contract allows.
 *
 * Error criterion: a dot product or sum computed in another order (or with
 * fused multiply-adds) differs from the reference by a small multiple of
 * the float epsilon times the sum of the magnitudes of its terms; each
 * output is checked against 1e-5 times that magnitude (computed in double).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_kernels.h"
#include "test.h"
#include "tqai.h"

#define REL_TOL 1e-5
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const tq_attn_kernels *kern; /* the level under test */
static const char *level_name = "";
static tq_test_rng rng = {12345};

static const uint32_t heads[] = {1, 3, 4, 8};
static const uint32_t dims[] = {2, 3, 8, 17, 64, 96, 100, 128, 256, 1000};
static const uint32_t counts[] = {1, 2, 15, 16, 17, 255, 256};

static void *xmalloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static float gauss(void) { return (float)tq_test_gauss(&rng); }

static float uniform(float lo, float hi) {
  return lo + (hi - lo) * (float)tq_test_uniform(&rng);
}

static float *random_floats(size_t count, float scale) {
  float *x = xmalloc(count * sizeof *x);
  for (size_t i = 0; i < count; i++) x[i] = scale * gauss();
  return x;
}

/* ------------------------------------------------------------------------ */
/* Records                                                                   */
/* ------------------------------------------------------------------------ */

/* n records of d codes at `bits`, record t at rec + t * stride, in a buffer
 * that ends TQ_ATTN_PAD bytes after the last record. Everything is random
 * bytes except the norms. */
typedef struct {
  uint8_t *buf;
  const uint8_t *rec;
  size_t stride;
  float *norms;  /* decoded norms, for the error bounds */
  uint8_t *idx;  /* (n, d) unpacked codes, for the error bounds */
} records;

static void records_make(records *r, uint32_t n, uint32_t d, uint32_t bits, uint32_t variant) {
  size_t rec_size = 2 + ((size_t)d * bits + 7) / 8;
  /* Variants: packed; a larger stride; a sub-record of a larger record
   * (offset into it, as for the channel groups of a fractional rate). */
  size_t offset = 0, stride = rec_size;
  if (variant % 3 == 1) stride = rec_size + 1 + variant % 7;
  if (variant % 3 == 2) {
    offset = 3 + variant % 5;
    stride = offset + rec_size + 2 + variant % 11;
  }
  size_t size = offset + (size_t)(n - 1) * stride + rec_size + TQ_ATTN_PAD;
  r->buf = xmalloc(size);
  for (size_t i = 0; i < size; i++) r->buf[i] = (uint8_t)tq_test_next(&rng);
  r->rec = r->buf + offset;
  r->stride = stride;
  r->norms = xmalloc(n * sizeof *r->norms);
  r->idx = xmalloc((size_t)n * d);
  for (uint32_t t = 0; t < n; t++) {
    uint8_t *p = r->buf + offset + (size_t)t * stride;
    float norm = tq_test_uniform(&rng) < 0.05 ? uniform(1e-7f, 6e-5f) : uniform(0.05f, 40.0f);
    uint16_t h = tq_f32_to_f16(norm);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
    r->norms[t] = tq_f16_to_f32(h);
    for (uint32_t j = 0; j < d; j++) {
      size_t bit = (size_t)j * bits;
      uint32_t word = p[2 + bit / 8] | ((uint32_t)p[2 + bit / 8 + 1] << 8);
      r->idx[(size_t)t * d + j] = (uint8_t)((word >> (bit % 8)) & ((1u << bits) - 1u));
    }
  }
}

static void records_free(records *r) {
  free(r->buf);
  free(r->norms);
  free(r->idx);
}

/* n rows of d fp16 values, row t at k + t * stride (stride >= d), in an
 * exactly sized buffer. */
static uint16_t *f16_rows(uint32_t n, uint32_t d, size_t stride) {
  size_t count = (size_t)(n - 1) * stride + d;
  uint16_t *k = xmalloc(count * sizeof *k);
  for (size_t i = 0; i < count; i++) k[i] = tq_f32_to_f16(gauss());
  return k;
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */
/* ------------------------------------------------------------------------ */

/* got vs want (count values), each against REL_TOL * mag[i]; reports the
 * first failure of a case only. */
static int check_close(const char *what, const float *got, const float *want, const double *mag,
                       size_t count, uint32_t G, uint32_t d, uint32_t n, uint32_t bits) {
  for (size_t i = 0; i < count; i++) {
    double err = fabs((double)got[i] - (double)want[i]);
    double tol = REL_TOL * mag[i] + 1e-30;
    if (!(err <= tol)) {
      TQ_FAIL_("%s %s: G=%u d=%u n=%u bits=%u: element %zu = %.9g, reference %.9g "
               "(error %.3g > %.3g)",
               level_name, what, G, d, n, bits, i, got[i], want[i], err, tol);
      return 0;
    }
  }
  return 1;
}

static void check_codes_case(uint32_t G, uint32_t d, uint32_t n, uint32_t bits, uint32_t variant) {
  records r;
  records_make(&r, n, d, bits, variant);
  uint32_t size = 1u << bits;
  float *centroids = random_floats(size, 1.0f / sqrtf((float)d));
  float *q = random_floats((size_t)G * d, 1.0f);
  float *w = xmalloc((size_t)G * n * sizeof *w);
  for (size_t i = 0; i < (size_t)G * n; i++) w[i] = uniform(0.0f, 1.0f);

  /* Scores. */
  float *got = xmalloc((size_t)G * n * sizeof *got);
  float *want = xmalloc((size_t)G * n * sizeof *want);
  double *mag = xmalloc((size_t)G * n * sizeof *mag);
  kern->score_codes(q, G, d, r.rec, r.stride, n, bits, centroids, got);
  tq_attn_kernels_ref.score_codes(q, G, d, r.rec, r.stride, n, bits, centroids, want);
  for (uint32_t g = 0; g < G; g++)
    for (uint32_t t = 0; t < n; t++) {
      double m = 0.0;
      for (uint32_t j = 0; j < d; j++)
        m += fabs((double)q[(size_t)g * d + j] * centroids[r.idx[(size_t)t * d + j]]);
      mag[(size_t)g * n + t] = m * r.norms[t];
    }
  check_close("score_codes", got, want, mag, (size_t)G * n, G, d, n, bits);
  free(got);
  free(want);
  free(mag);

  /* Accumulation onto random accumulators. */
  float *acc0 = random_floats((size_t)G * d, 0.1f);
  got = xmalloc((size_t)G * d * sizeof *got);
  want = xmalloc((size_t)G * d * sizeof *want);
  mag = xmalloc((size_t)G * d * sizeof *mag);
  memcpy(got, acc0, (size_t)G * d * sizeof *got);
  memcpy(want, acc0, (size_t)G * d * sizeof *want);
  kern->accum_codes(w, G, d, r.rec, r.stride, n, bits, centroids, got);
  tq_attn_kernels_ref.accum_codes(w, G, d, r.rec, r.stride, n, bits, centroids, want);
  for (uint32_t g = 0; g < G; g++)
    for (uint32_t j = 0; j < d; j++) {
      double m = fabs((double)acc0[(size_t)g * d + j]);
      for (uint32_t t = 0; t < n; t++)
        m += fabs((double)w[(size_t)g * n + t] * r.norms[t] *
                  centroids[r.idx[(size_t)t * d + j]]);
      mag[(size_t)g * d + j] = m;
    }
  check_close("accum_codes", got, want, mag, (size_t)G * d, G, d, n, bits);
  free(got);
  free(want);
  free(mag);
  free(acc0);

  free(centroids);
  free(q);
  free(w);
  records_free(&r);
}

static void check_f16_case(uint32_t G, uint32_t d, uint32_t n, size_t stride) {
  uint16_t *k = f16_rows(n, d, stride);
  float *q = random_floats((size_t)G * d, 1.0f);
  float *w = xmalloc((size_t)G * n * sizeof *w);
  for (size_t i = 0; i < (size_t)G * n; i++) w[i] = uniform(0.0f, 1.0f);

  float *got = xmalloc((size_t)G * n * sizeof *got);
  float *want = xmalloc((size_t)G * n * sizeof *want);
  double *mag = xmalloc((size_t)G * n * sizeof *mag);
  kern->score_f16(q, G, d, k, stride, n, got);
  tq_attn_kernels_ref.score_f16(q, G, d, k, stride, n, want);
  for (uint32_t g = 0; g < G; g++)
    for (uint32_t t = 0; t < n; t++) {
      double m = 0.0;
      for (uint32_t j = 0; j < d; j++)
        m += fabs((double)q[(size_t)g * d + j] * tq_f16_to_f32(k[(size_t)t * stride + j]));
      mag[(size_t)g * n + t] = m;
    }
  check_close("score_f16", got, want, mag, (size_t)G * n, G, d, n, 16);
  free(got);
  free(want);
  free(mag);

  float *acc0 = random_floats((size_t)G * d, 0.1f);
  got = xmalloc((size_t)G * d * sizeof *got);
  want = xmalloc((size_t)G * d * sizeof *want);
  mag = xmalloc((size_t)G * d * sizeof *mag);
  memcpy(got, acc0, (size_t)G * d * sizeof *got);
  memcpy(want, acc0, (size_t)G * d * sizeof *want);
  kern->accum_f16(w, G, d, k, stride, n, got);
  tq_attn_kernels_ref.accum_f16(w, G, d, k, stride, n, want);
  for (uint32_t g = 0; g < G; g++)
    for (uint32_t j = 0; j < d; j++) {
      double m = fabs((double)acc0[(size_t)g * d + j]);
      for (uint32_t t = 0; t < n; t++)
        m += fabs((double)w[(size_t)g * n + t] * tq_f16_to_f32(k[(size_t)t * stride + j]));
      mag[(size_t)g * d + j] = m;
    }
  check_close("accum_f16", got, want, mag, (size_t)G * d, G, d, n, 16);
  free(got);
  free(want);
  free(mag);
  free(acc0);

  free(k);
  free(q);
  free(w);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static void test_codes_all_shapes(void) {
  uint32_t variant = 0;
  for (uint32_t bits = 1; bits <= 8; bits++)
    for (size_t a = 0; a < COUNT(heads); a++)
      for (size_t b = 0; b < COUNT(dims); b++)
        for (size_t c = 0; c < COUNT(counts); c++)
          check_codes_case(heads[a], dims[b], counts[c], bits, variant++);
}

/* Head counts that need several head groups or odd group sizes, every
 * dimension from 2 to 130 (all tails of the 16-lane and 128-dim blocks),
 * and the largest dimension. */
static void test_codes_more_shapes(void) {
  static const uint32_t more_heads[] = {2, 5, 6, 7, 12, 17};
  uint32_t variant = 1;
  for (uint32_t bits = 1; bits <= 8; bits++) {
    for (size_t a = 0; a < COUNT(more_heads); a++)
      check_codes_case(more_heads[a], 128, 33, bits, variant++);
    for (uint32_t d = 2; d <= 130; d++) check_codes_case(1 + d % 5, d, 1 + d % 19, bits, variant++);
    check_codes_case(4, TQ_MAX_DIM, 20, bits, variant++);
  }
}

static void test_f16_all_shapes(void) {
  uint32_t variant = 0;
  for (size_t a = 0; a < COUNT(heads); a++)
    for (size_t b = 0; b < COUNT(dims); b++)
      for (size_t c = 0; c < COUNT(counts); c++) {
        uint32_t d = dims[b];
        size_t stride = variant % 3 == 0 ? d : d + 1 + variant % 13;
        check_f16_case(heads[a], d, counts[c], stride);
        variant++;
      }
}

static void test_f16_more_shapes(void) {
  static const uint32_t more_heads[] = {2, 5, 6, 7, 12, 17};
  for (size_t a = 0; a < COUNT(more_heads); a++) check_f16_case(more_heads[a], 128, 33, 136);
  for (uint32_t d = 2; d <= 130; d++) check_f16_case(1 + d % 5, d, 1 + d % 19, d + d % 3);
  check_f16_case(4, TQ_MAX_DIM, 20, TQ_MAX_DIM);
}

/* n == 0 writes nothing. */
static void test_empty(void) {
  float q[8] = {1, 2, 3, 4, 5, 6, 7, 8}, c[4] = {-1, -0.5f, 0.5f, 1};
  float out[8] = {42, 42, 42, 42, 42, 42, 42, 42};
  uint8_t rec[2 + 2 + TQ_ATTN_PAD] = {0};
  uint16_t k[8] = {0};
  kern->score_codes(q, 1, 8, rec, 4, 0, 2, c, out);
  kern->accum_codes(q, 1, 8, rec, 4, 0, 2, c, out);
  kern->score_f16(q, 1, 8, k, 8, 0, out);
  kern->accum_f16(q, 1, 8, k, 8, 0, out);
  for (int i = 0; i < 8; i++) CHECKF(out[i] == 42.0f, "%s: n = 0 wrote out[%d]", level_name, i);
  float x[1] = {-3.0f};
  CHECKF(kern->exp_sum(x, 0, 0.0f) == 0.0f && x[0] == -3.0f, "%s: exp_sum n = 0", level_name);
}

/* exp_sum on values in [m - 100, m] (and a few exact edge values), n over
 * the vector tails: each x[i] within 4e-7 relative (absolute 1e-44 for
 * subnormal results) of expf, the sum within 1e-6 of the double sum. */
static void test_exp_sum(void) {
  static const uint32_t sizes[] = {0, 1, 7, 8, 16, 33, 1000};
  static const float maxima[] = {0.0f, 3.5f, -20.0f, 1000.0f};
  for (size_t a = 0; a < COUNT(sizes); a++)
    for (size_t b = 0; b < COUNT(maxima); b++) {
      uint32_t n = sizes[a];
      float m = maxima[b];
      float *x = xmalloc(n * sizeof *x);
      float *want = xmalloc(n * sizeof *want);
      for (uint32_t i = 0; i < n; i++) {
        float v = m - uniform(0.0f, 100.0f);
        if (i % 17 == 3) v = m;
        if (i % 23 == 5) v = m - 87.5f;
        if (i % 29 == 7) v = m - 103.9f;
        x[i] = v;
      }
      memcpy(want, x, n * sizeof *x);
      float got_sum = kern->exp_sum(x, n, m);
      tq_attn_kernels_ref.exp_sum(want, n, m);
      double sum = 0.0;
      for (uint32_t i = 0; i < n; i++) {
        sum += want[i];
        double tol = 4e-7 * want[i] + 1e-44;
        if (!(fabs((double)x[i] - want[i]) <= tol)) {
          TQ_FAIL_("%s exp_sum: n=%u m=%g element %u = %.9g, expf %.9g", level_name, n, m, i,
                   x[i], want[i]);
          break;
        }
      }
      CHECKF(fabs(got_sum - sum) <= 1e-6 * sum, "%s exp_sum: n=%u m=%g sum %.9g, expected %.9g",
             level_name, n, m, got_sum, sum);
      free(x);
      free(want);
    }
}

/* row_max equals the scalar definition exactly, over the vector tails, with
 * NaN elements skipped and a NaN first element kept. */
static void test_row_max(void) {
  static const uint32_t sizes[] = {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 100, 256, 1000};
  for (size_t a = 0; a < COUNT(sizes); a++)
    for (int variant = 0; variant < 4; variant++) {
      uint32_t n = sizes[a];
      float *x = xmalloc(n * sizeof *x);
      for (uint32_t i = 0; i < n; i++) x[i] = uniform(-50.0f, 50.0f) - (variant == 1 ? 1e4f : 0.0f);
      /* The largest at every position in turn across variants and sizes. */
      x[(a * 7 + (size_t)variant * 13) % n] = 60.0f + (float)variant;
      if (variant == 2)
        for (uint32_t i = 1; i < n; i += 3) x[i] = NAN;
      if (variant == 3) x[0] = NAN;
      float got = kern->row_max(x, n), want = tq_attn_kernels_ref.row_max(x, n);
      if (variant == 3)
        CHECKF(isnan(got) && isnan(want), "%s row_max: n=%u NaN first gives %g", level_name, n, got);
      else
        CHECKF(got == want && !isnan(got), "%s row_max: n=%u variant %d %.9g, expected %.9g",
               level_name, n, variant, got, want);
      free(x);
    }
  float inf[3] = {-INFINITY, -INFINITY, -INFINITY};
  CHECKF(kern->row_max(inf, 3) == -INFINITY, "%s row_max: all -inf", level_name);
}

/* Exact small cases: every code of every width against a known value. */
static void test_exact_codes(void) {
  for (uint32_t bits = 1; bits <= 8; bits++) {
    const uint32_t d = 256, size = 1u << bits;
    size_t rec_size = 2 + (size_t)d * bits / 8;
    uint8_t *buf = xmalloc(rec_size + TQ_ATTN_PAD);
    memset(buf, 0, rec_size + TQ_ATTN_PAD);
    uint16_t one = tq_f32_to_f16(1.0f);
    buf[0] = (uint8_t)(one & 0xff);
    buf[1] = (uint8_t)(one >> 8);
    for (uint32_t j = 0; j < d; j++) { /* code of dimension j: j mod 2^bits */
      uint32_t code = j % size;
      for (uint32_t b = 0; b < bits; b++)
        if (code >> b & 1u) buf[2 + (j * bits + b) / 8] |= (uint8_t)(1u << ((j * bits + b) % 8));
    }
    float *c = xmalloc(size * sizeof *c);
    for (uint32_t e = 0; e < size; e++) c[e] = (float)e + 1.0f;
    float *q = xmalloc(d * sizeof *q);
    for (uint32_t j = 0; j < d; j++) q[j] = 0.0f;
    for (uint32_t j = 0; j < d; j++) {
      q[j] = 1.0f;
      float s = -1.0f;
      kern->score_codes(q, 1, d, buf, rec_size, 1, bits, c, &s);
      if (s != (float)(j % size) + 1.0f) {
        TQ_FAIL_("%s: bits %u dimension %u decodes to %g, expected %g", level_name, bits, j, s,
                 (float)(j % size) + 1.0f);
        break;
      }
      q[j] = 0.0f;
    }
    float wt = 1.0f;
    float *acc = xmalloc(d * sizeof *acc);
    memset(acc, 0, d * sizeof *acc);
    kern->accum_codes(&wt, 1, d, buf, rec_size, 1, bits, c, acc);
    for (uint32_t j = 0; j < d; j++)
      if (acc[j] != (float)(j % size) + 1.0f) {
        TQ_FAIL_("%s: bits %u dimension %u accumulates %g, expected %g", level_name, bits, j,
                 acc[j], (float)(j % size) + 1.0f);
        break;
      }
    free(acc);
    free(q);
    free(c);
    free(buf);
  }
}

static void run_level(tq_simd_level level) {
  char name[64];
  snprintf(name, sizeof name, "test_attn_kernels[%s]", tq_simd_name(level));
  if (!tq_simd_supported(level)) {
    TQ_SKIP(name, "SIMD level not supported on this CPU or not compiled in");
    return;
  }
  kern = tq_attn_kernels_get(level);
  level_name = tq_simd_name(level);
  if (!kern) {
    tq_test_name_ = name;
    tq_test_cur_failed_ = 0;
    TQ_FAIL_("tq_attn_kernels_get(%s) returned NULL", level_name);
    tq_test_failed_++;
    return;
  }
  TQ_RUN(test_empty);
  TQ_RUN(test_exact_codes);
  TQ_RUN(test_exp_sum);
  TQ_RUN(test_row_max);
  TQ_RUN(test_codes_all_shapes);
  TQ_RUN(test_codes_more_shapes);
  TQ_RUN(test_f16_all_shapes);
  TQ_RUN(test_f16_more_shapes);
}

static void test_level_table(void) {
  const tq_attn_kernels *k = tq_attn_kernels_get(TQ_SIMD_SCALAR);
  CHECK(k == &tq_attn_kernels_ref);
  CHECK(tq_attn_kernels_get(TQ_SIMD_AUTO) == NULL);
  static const tq_simd_level levels[] = {TQ_SIMD_AVX2, TQ_SIMD_AVX512};
  for (size_t i = 0; i < COUNT(levels); i++) {
    k = tq_attn_kernels_get(levels[i]);
    if (tq_simd_supported(levels[i])) CHECK(k != NULL && k->level == levels[i]);
    else CHECK(k == NULL);
  }
}

int main(void) {
  TQ_RUN(test_level_table);
  run_level(TQ_SIMD_AVX2);
  run_level(TQ_SIMD_AVX512);
  return tq_test_summary("test_attn_kernels");
}
