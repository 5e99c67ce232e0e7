/*
 * test_codec.c - the codec's public API (tqai.h) end to end: distortion
 * against the paper's bounds and the solver, attention computed on decoded
 * vectors, the statistics of the rotation, edge cases of magnitude and
 * format, determinism across instances and SIMD levels (with golden bytes),
 * the f16/bf16 entry points, and every error path.
 *
 * Test data are deterministic (tq_test_rng), so every statistical check
 * gives the same answer on every run; the thresholds still carry margins so
 * that a different but valid seed would pass too. Set TQ_TEST_VERBOSE=1 to
 * print the measured values behind the thresholds.
 */
#include <float.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "test.h"
#include "tqai.h"

static int verbose = 0;

#define INFO(...)                   \
  do {                              \
    if (verbose) printf(__VA_ARGS__); \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "test_codec: out of memory\n");
    exit(2);
  }
  return p;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) {
    fprintf(stderr, "test_codec: out of memory\n");
    exit(2);
  }
  return p;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_pow2(uint32_t d) { return d && !(d & (d - 1)); }

static const char *rot_name(tq_rotation r) {
  return r == TQ_ROTATION_HAAR ? "haar" : r == TQ_ROTATION_HADAMARD ? "hadamard" : "?";
}

/* Default parameters with the rotation set. */
static tq_codec_params params_of(uint32_t dim, uint32_t bits, tq_rotation rot) {
  tq_codec_params p = tq_codec_params_default(dim, bits);
  p.rotation = rot;
  return p;
}

/* Creates a codec or fails the current test (returns NULL then). */
static tq_codec *make_codec(const tq_codec_params *p) {
  tq_codec *c = NULL;
  tq_status st = tq_codec_create(p, &c);
  CHECKF(st == TQ_OK && c, "tq_codec_create(dim %u, bits %u, %s, norm %d, simd %d) = %s",
         p->dim, p->bits, rot_name(p->rotation), (int)p->norm_format, (int)p->simd,
         tq_status_name(st));
  return st == TQ_OK ? c : NULL;
}

/* n vectors of dim i.i.d. N(0, scale^2) values. */
static float *gauss_vectors(tq_test_rng *r, size_t n, uint32_t dim, double scale) {
  float *x = xmalloc(n * dim * sizeof *x);
  for (size_t i = 0; i < n * dim; i++) x[i] = (float)(scale * tq_test_gauss(r));
  return x;
}

/* Scales each of n vectors to unit norm (in double). */
static void normalize_rows(float *x, size_t n, uint32_t dim) {
  for (size_t i = 0; i < n; i++) {
    double ss = 0.0;
    for (uint32_t j = 0; j < dim; j++) ss += (double)x[i * dim + j] * x[i * dim + j];
    double inv = ss > 0.0 ? 1.0 / sqrt(ss) : 0.0;
    for (uint32_t j = 0; j < dim; j++) x[i * dim + j] = (float)(x[i * dim + j] * inv);
  }
}

/* Encodes then decodes n vectors; xh receives n * dim floats. */
static tq_status roundtrip(const tq_codec *c, const float *x, size_t n, float *xh) {
  size_t bytes = n * tq_codec_record_size(c);
  uint8_t *rec = xmalloc(bytes);
  tq_status st = tq_codec_encode_f32(c, x, n, rec, bytes);
  if (st == TQ_OK) st = tq_codec_decode_f32(c, rec, bytes, n, xh);
  free(rec);
  return st;
}

/* NMSE = sum_i ||x_i - xh_i||^2 / sum_i ||x_i||^2 accumulated vector by
 * vector, with the standard error of that ratio estimator. */
typedef struct {
  double e, s, ee, ss, es; /* sums of e_i, s_i and their products */
  size_t n;
} nmse_acc;

static void nmse_add(nmse_acc *a, const float *x, const float *xh, size_t n, uint32_t dim) {
  for (size_t i = 0; i < n; i++) {
    double e = 0.0, s = 0.0;
    for (uint32_t j = 0; j < dim; j++) {
      double xv = x[i * dim + j], dv = xv - (double)xh[i * dim + j];
      e += dv * dv;
      s += xv * xv;
    }
    a->e += e, a->s += s, a->ee += e * e, a->ss += s * s, a->es += e * s;
    a->n++;
  }
}

static double nmse_value(const nmse_acc *a) { return a->s > 0.0 ? a->e / a->s : 0.0; }

/* Standard error of nmse_value (delta method for a ratio of sums). */
static double nmse_stderr(const nmse_acc *a) {
  if (a->n < 2 || a->s <= 0.0) return 0.0;
  double r = a->e / a->s;
  double resid = a->ee - 2.0 * r * a->es + r * r * a->ss; /* sum (e_i - r s_i)^2 */
  if (resid < 0.0) resid = 0.0;
  double mean_s = a->s / (double)a->n;
  return sqrt(resid / (double)(a->n - 1) / (double)a->n) / mean_s;
}

/* NMSE of a round trip of n Gaussian vectors through codec c. */
static nmse_acc measure_nmse(const tq_codec *c, uint32_t dim, size_t n, uint64_t seed) {
  nmse_acc a;
  memset(&a, 0, sizeof a);
  tq_test_rng r = {seed};
  float *x = gauss_vectors(&r, n, dim, 1.0);
  float *xh = xmalloc(n * dim * sizeof *xh);
  CHECK_OK(roundtrip(c, x, n, xh));
  nmse_add(&a, x, xh, n, dim);
  free(x);
  free(xh);
  return a;
}

static double dot(const float *a, const float *b, uint32_t dim) {
  double s = 0.0;
  for (uint32_t j = 0; j < dim; j++) s += (double)a[j] * b[j];
  return s;
}

static int all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

static const tq_simd_level all_levels[] = {TQ_SIMD_SCALAR, TQ_SIMD_AVX2, TQ_SIMD_AVX512};
#define N_LEVELS (sizeof all_levels / sizeof all_levels[0])
static const tq_rotation both_rotations[] = {TQ_ROTATION_HAAR, TQ_ROTATION_HADAMARD};

/* ------------------------------------------------------------------------ */
/* 1. Distortion                                                             */
/* ------------------------------------------------------------------------ */

/* For Gaussian vectors the NMSE estimates D(b) = E||u - Q(u)||^2 (any
 * orthogonal P maps them to uniformly random directions). It must stay under
 * the paper's upper bound sqrt(3)*pi/2 * 4^-b at every width and head size,
 * over its lower bound 4^-b (for d >= 4: at d = 3 one coordinate is uniform
 * and D is exactly 4^-b; at d = 2 it is arcsine-distributed and D is about
 * 0.6 * 4^-b, so the paper's lower bound does not apply there), and agree
 * with the solver's D for the exact codebook within 5 standard errors. */
static void test_distortion_within_paper_bounds(void) {
  static const uint32_t dims[] = {2, 3, 7, 64, 96, 100, 128, 129, 256, 1000, 1024};
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
    uint32_t d = dims[di];
    for (uint32_t b = 1; b <= 8; b++) {
      /* d = 1000: 1, 4 and 8 bits only (a Haar build and a codebook solve
       * take about 0.7 s each there). */
      if (d == 1000 && b != 1 && b != 4 && b != 8) continue;
      /* About 2^18 coordinates per case (relative standard error 0.2-0.7%),
       * 2^20 from 5 bits up at d = 64..256, where D is within 1-8% of the upper
       * bound and heavy tails (rare outer-cell coordinates) widen the error
       * bars. */
      size_t coords = (b >= 5 && d >= 64 && d <= 256) ? (1u << 20) : (1u << 18);
      size_t n = coords / d;
      double c[256], D = 0.0;
      CHECK_OK(tq_codebook_solve(d, b, TQ_CODEBOOK_EXACT, c, &D));
      double ub = tq_distortion_upper_bound(b), lb = tq_distortion_lower_bound(b);
      for (int ri = 0; ri < 2; ri++) {
        tq_rotation rot = both_rotations[ri];
        if (rot == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
        if (rot == TQ_ROTATION_HAAR && d == 1024) continue; /* d = 1024: Hadamard only */
        double t0 = now_s();
        tq_codec_params p = params_of(d, b, rot);
        tq_codec *codec = make_codec(&p);
        if (!codec) continue;
        nmse_acc a = measure_nmse(codec, d, n, 1000u * d + 10u * b + (uint64_t)ri);
        double m = nmse_value(&a), se = nmse_stderr(&a);
        INFO("  distortion d=%4u b=%u %-8s n=%6zu nmse=%.6g solver=%.6g (x%.4f, se %.2g) "
             "ub=%.4g (x%.3f, %.1f se below) [%.2f s]\n",
             d, b, rot_name(rot), n, m, D, m / D, se / D, ub, m / ub, (ub - m) / se,
             now_s() - t0);
        /* The sample certifies the bound where the gap ub - D is 5+ standard
         * errors. At 7-8 bits and d >= 96, D is within 1-4% of the bound and
         * rare outer-cell coordinates give error bars of 0.4-1.8%: there D
         * itself is held under the bound and the NMSE to D. */
        CHECKF(D < ub, "d=%u b=%u: solver D %.6g not below the upper bound %.6g", d, b, D, ub);
        if (ub - D > 5.0 * se)
          CHECKF(m < ub, "d=%u b=%u %s: NMSE %.6g not below the upper bound %.6g", d, b,
                 rot_name(rot), m, ub);
        else
          INFO("  (d=%u b=%u: bound within 5 standard errors of D, checked through D)\n", d, b);
        if (d >= 4)
          CHECKF(m > lb, "d=%u b=%u %s: NMSE %.6g not above the lower bound %.6g", d, b,
                 rot_name(rot), m, lb);
        else if (d == 3)
          CHECKF(fabs(m / lb - 1.0) < 0.02, "d=3 b=%u %s: NMSE %.6g, expected 4^-b = %.6g", b,
                 rot_name(rot), m, lb);
        CHECKF(fabs(m - D) <= 5.0 * se + 0.003 * D,
               "d=%u b=%u %s: NMSE %.6g vs solver %.6g: %.2f standard errors apart", d, b,
               rot_name(rot), m, D, (m - D) / se);
        tq_codec_free(codec);
      }
    }
  }
}

/* Tight agreement with the solver and with docs/turboquant.md: with 20000
 * vectors the standard error is about 0.1%, so 1% (the doc's "outside 1% is
 * a bug") leaves room for a different seed, and still fails on a codebook or
 * rotation that is off by 1%. d = 128: 4 bits 0.00932, 3 bits 0.0340 and
 * 2 bits 0.1160 (doc table) within 1.5%. */
static void test_nmse_matches_solver_and_doc(void) {
  static const uint32_t dims[] = {64, 128};
  const size_t n = 20000;
  for (size_t di = 0; di < 2; di++) {
    uint32_t d = dims[di];
    for (uint32_t b = 2; b <= 4; b++) {
      double c[16], D = 0.0;
      CHECK_OK(tq_codebook_solve(d, b, TQ_CODEBOOK_EXACT, c, &D));
      tq_codec_params p = params_of(d, b, TQ_ROTATION_HAAR);
      tq_codec *codec = make_codec(&p);
      if (!codec) continue;
      nmse_acc a = measure_nmse(codec, d, n, 77u + d + b);
      double m = nmse_value(&a);
      INFO("  solver match d=%u b=%u nmse=%.6g solver=%.6g ratio=%.5f se=%.2g\n", d, b, m,
           D, m / D, nmse_stderr(&a) / D);
      CHECKF(fabs(m / D - 1.0) <= 0.01, "d=%u b=%u: NMSE %.6g vs solver %.6g (%.2f%%)", d, b,
             m, D, 100.0 * (m / D - 1.0));
      if (d == 128) {
        double doc = b == 4 ? 0.00932 : b == 3 ? 0.0340 : 0.1160;
        CHECKF(fabs(m / doc - 1.0) <= 0.015, "d=128 b=%u: NMSE %.6g vs doc %.6g (%.2f%%)", b,
               m, doc, 100.0 * (m / doc - 1.0));
      }
      tq_codec_free(codec);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* 2. Attention on decoded vectors                                           */
/* ------------------------------------------------------------------------ */

/* out (n_q, d) = softmax(q k^T / sqrt(d)) v, in double. */
static void attention(const float *q, const float *k, const float *v, uint32_t n_q,
                      uint32_t t_len, uint32_t d, double *out) {
  double *w = xmalloc(t_len * sizeof *w);
  for (uint32_t i = 0; i < n_q; i++) {
    double mx = -INFINITY, sum = 0.0;
    for (uint32_t t = 0; t < t_len; t++) {
      w[t] = dot(q + (size_t)i * d, k + (size_t)t * d, d) / sqrt((double)d);
      if (w[t] > mx) mx = w[t];
    }
    for (uint32_t t = 0; t < t_len; t++) sum += (w[t] = exp(w[t] - mx));
    for (uint32_t j = 0; j < d; j++) {
      double o = 0.0;
      for (uint32_t t = 0; t < t_len; t++) o += w[t] * v[(size_t)t * d + j];
      out[(size_t)i * d + j] = o / sum;
    }
  }
  free(w);
}

/* Attention output with exact K, V against decoded K (key codec) and decoded
 * V (value codec), relative Frobenius error, per K/V bit pair. Measured
 * (d = 64 / 128, seeds fixed below): K8/V8 0.0096 / 0.0092, K4/V4 0.133 /
 * 0.141, K4/V2 0.364 / 0.354, K3/V2 0.397 / 0.384, K2/V2 0.466 / 0.473 (V2
 * alone contributes about sqrt(D(2)) = 0.34). The thresholds are 1.35-1.5x
 * the larger of the two, so each fails if the error grows by half. */
static void test_attention_on_decoded_vectors(void) {
  static const struct {
    uint32_t kb, vb;
    double max_err;
  } cases[] = {{8, 8, 0.014}, {4, 4, 0.20}, {4, 2, 0.50}, {3, 2, 0.55}, {2, 2, 0.65}};
  static const uint32_t dims[] = {64, 128};
  const uint32_t n_q = 8, t_len = 256;
  for (size_t di = 0; di < 2; di++) {
    uint32_t d = dims[di];
    tq_test_rng r = {4242u + d};
    float *q = gauss_vectors(&r, n_q, d, 1.0);
    float *k = gauss_vectors(&r, t_len, d, 1.0);
    float *v = gauss_vectors(&r, t_len, d, 1.0);
    float *kh = xmalloc((size_t)t_len * d * sizeof *kh);
    float *vh = xmalloc((size_t)t_len * d * sizeof *vh);
    double *o = xmalloc((size_t)n_q * d * sizeof *o);
    double *oh = xmalloc((size_t)n_q * d * sizeof *oh);
    attention(q, k, v, n_q, t_len, d, o);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
      tq_kv_params kv = tq_kv_params_default(d);
      kv.key.bits = cases[ci].kb;
      kv.value.bits = cases[ci].vb;
      tq_codec *kc = make_codec(&kv.key), *vc = make_codec(&kv.value);
      if (kc && vc) {
        CHECK_OK(roundtrip(kc, k, t_len, kh));
        CHECK_OK(roundtrip(vc, v, t_len, vh));
        attention(q, kh, vh, n_q, t_len, d, oh);
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < (size_t)n_q * d; i++) {
          num += (o[i] - oh[i]) * (o[i] - oh[i]);
          den += o[i] * o[i];
        }
        double err = sqrt(num / den);
        INFO("  attention d=%u K%u/V%u rel err %.4g (limit %.3g)\n", d, cases[ci].kb,
             cases[ci].vb, err, cases[ci].max_err);
        CHECKF(err < cases[ci].max_err, "d=%u K%u/V%u: attention relative error %.4g >= %.3g",
               d, cases[ci].kb, cases[ci].vb, err, cases[ci].max_err);
      }
      tq_codec_free(kc);
      tq_codec_free(vc);
    }
    free(q), free(k), free(v), free(kh), free(vh), free(o), free(oh);
  }
}

/* Inner products q . k_hat against q . k: the mean absolute error relative
 * to the mean |q . k| falls by at least a quarter at every extra bit
 * (measured at d = 128 it halves: 0.61, 0.34, 0.19, 0.093, 0.049, 0.025,
 * 0.0126, 0.0063 at 1..8 bits; step ratios 0.50-0.56), and is under 0.01 at
 * 8 bits. */
static void test_inner_product_error_falls_with_bits(void) {
  const uint32_t d = 128, n_q = 8, t_len = 256;
  tq_test_rng r = {99};
  float *q = gauss_vectors(&r, n_q, d, 1.0);
  float *k = gauss_vectors(&r, t_len, d, 1.0);
  float *kh = xmalloc((size_t)t_len * d * sizeof *kh);
  double prev = INFINITY;
  for (uint32_t b = 1; b <= 8; b++) {
    tq_codec_params p = params_of(d, b, TQ_ROTATION_HAAR);
    tq_codec *c = make_codec(&p);
    if (!c) continue;
    CHECK_OK(roundtrip(c, k, t_len, kh));
    double err = 0.0, mag = 0.0;
    for (uint32_t i = 0; i < n_q; i++)
      for (uint32_t t = 0; t < t_len; t++) {
        double exact = dot(q + (size_t)i * d, k + (size_t)t * d, d);
        double approx = dot(q + (size_t)i * d, kh + (size_t)t * d, d);
        err += fabs(approx - exact);
        mag += fabs(exact);
      }
    double rel = err / mag;
    INFO("  inner product b=%u mean rel err %.4g (ratio to b-1: %.3f)\n", b, rel, rel / prev);
    CHECKF(rel < 0.75 * prev, "bits %u: inner-product error %.4g not below 0.75 x %.4g", b,
           rel, prev);
    prev = rel;
    tq_codec_free(c);
  }
  CHECKF(prev < 0.01, "8-bit inner-product error %.4g", prev);
  free(q), free(k), free(kh);
}

/* ------------------------------------------------------------------------ */
/* 3. Rotation statistics                                                    */
/* ------------------------------------------------------------------------ */

/* Rotated coordinates of random unit vectors (4000 per case) have mean 0 and
 * variance 1/d: every single coordinate within 6 standard errors (measured
 * worst: 3.1 for the variance, 3.4 for the mean), and pooled over all
 * coordinates within 2% (a unit vector's squares sum to 1, so this one only
 * catches gross errors such as a wrong scale). */
static void test_rotated_coordinates_mean0_var1overd(void) {
  static const uint32_t dims[] = {64, 100, 128};
  for (size_t di = 0; di < 3; di++) {
    uint32_t d = dims[di];
    size_t n = 4000;
    for (int ri = 0; ri < 2; ri++) {
      tq_rotation rot = both_rotations[ri];
      if (rot == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
      tq_codec_params p = params_of(d, 4, rot);
      tq_codec *c = make_codec(&p);
      if (!c) continue;
      tq_test_rng r = {555u + d};
      float *x = gauss_vectors(&r, n, d, 1.0);
      normalize_rows(x, n, d);
      float *y = xmalloc(d * sizeof *y);
      double *sum = xcalloc(d, sizeof *sum), *sum2 = xcalloc(d, sizeof *sum2);
      for (size_t i = 0; i < n; i++) {
        CHECK_OK(tq_codec_rotate(c, x + i * d, y));
        for (uint32_t j = 0; j < d; j++) sum[j] += y[j], sum2[j] += (double)y[j] * y[j];
      }
      double pooled = 0.0, worst_var = 0.0, worst_mean = 0.0;
      double se_var = sqrt(2.0 / (double)n);           /* relative, per coordinate */
      double se_mean = sqrt(1.0 / (double)d / (double)n); /* absolute, per coordinate */
      for (uint32_t j = 0; j < d; j++) {
        double mean = sum[j] / (double)n;
        double var = sum2[j] / (double)n - mean * mean;
        pooled += var;
        if (fabs(var * d - 1.0) > worst_var) worst_var = fabs(var * d - 1.0);
        if (fabs(mean) / se_mean > worst_mean) worst_mean = fabs(mean) / se_mean;
      }
      pooled /= d;
      INFO("  rotated coords d=%u %s: pooled var*d=%.5f worst coord |var*d-1|=%.3f (%.1f se) "
           "worst |mean|=%.1f se\n",
           d, rot_name(rot), pooled * d, worst_var, worst_var / se_var, worst_mean);
      CHECKF(fabs(pooled * d - 1.0) < 0.02, "d=%u %s: pooled variance * d = %.5f", d,
             rot_name(rot), pooled * d);
      CHECKF(worst_var < 6.0 * se_var, "d=%u %s: a coordinate's variance * d is off by %.4f",
             d, rot_name(rot), worst_var);
      CHECKF(worst_mean < 6.0, "d=%u %s: a coordinate's mean is %.1f standard errors from 0",
             d, rot_name(rot), worst_mean);
      free(x), free(y), free(sum), free(sum2);
      tq_codec_free(c);
    }
  }
}

/* Different seeds give independent rotations: for a fixed input x, the
 * average of P_s x over S seeds has squared norm about ||x||^2 / S (a fixed
 * P would give ||x||^2), and the first coordinate of P_s x has variance 1/d
 * across seeds. */
static void test_rotation_varies_with_seed(void) {
  const uint32_t d = 64, seeds = 256;
  for (int ri = 0; ri < 2; ri++) {
    tq_rotation rot = both_rotations[ri];
    for (int input = 0; input < 2; input++) {
      float x[64], y[64];
      double mean[64] = {0}, first2 = 0.0;
      for (uint32_t j = 0; j < d; j++)
        x[j] = input == 0 ? (j == 0 ? 1.0f : 0.0f) : (float)(1.0 / sqrt((double)d));
      for (uint32_t s = 0; s < seeds; s++) {
        tq_codec_params p = params_of(d, 2, rot);
        p.seed = 0x1234567ull * (s + 1);
        tq_codec *c = make_codec(&p);
        if (!c) break;
        CHECK_OK(tq_codec_rotate(c, x, y));
        for (uint32_t j = 0; j < d; j++) mean[j] += y[j] / (double)seeds;
        first2 += (double)y[0] * y[0] / (double)seeds;
        tq_codec_free(c);
      }
      double m2 = 0.0;
      for (uint32_t j = 0; j < d; j++) m2 += mean[j] * mean[j];
      INFO("  seeds %s input %d: ||mean||^2 * S = %.3f, var(y0) * d = %.3f\n", rot_name(rot),
           input, m2 * seeds, first2 * d);
      CHECKF(m2 * seeds < 3.0, "%s input %d: ||mean over seeds||^2 * S = %.3f", rot_name(rot),
             input, m2 * seeds);
      CHECKF(fabs(first2 * d - 1.0) < 0.35, "%s input %d: var of y0 across seeds * d = %.3f",
             rot_name(rot), input, first2 * d);
    }
  }
}

/* The rotation is orthogonal: with P e_j built by rotating basis vectors,
 * |<P e_i, P e_j> - delta_ij| <= 1e-6 for every pair. */
static void test_rotation_orthogonal(void) {
  static const uint32_t dims[] = {2, 3, 64, 100, 128, 256};
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
    uint32_t d = dims[di];
    for (int ri = 0; ri < 2; ri++) {
      tq_rotation rot = both_rotations[ri];
      if (rot == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
      tq_codec_params p = params_of(d, 3, rot);
      tq_codec *c = make_codec(&p);
      if (!c) continue;
      float *cols = xmalloc((size_t)d * d * sizeof *cols); /* row j = P e_j */
      float *e = xcalloc(d, sizeof *e);
      for (uint32_t j = 0; j < d; j++) {
        e[j] = 1.0f;
        CHECK_OK(tq_codec_rotate(c, e, cols + (size_t)j * d));
        e[j] = 0.0f;
      }
      double worst = 0.0;
      for (uint32_t i = 0; i < d; i++)
        for (uint32_t j = i; j < d; j++) {
          double g = dot(cols + (size_t)i * d, cols + (size_t)j * d, d) - (i == j ? 1.0 : 0.0);
          if (fabs(g) > worst) worst = fabs(g);
        }
      INFO("  orthogonality d=%u %s: max |P^T P - I| = %.3g\n", d, rot_name(rot), worst);
      CHECKF(worst <= 1e-6, "d=%u %s: max |<Pe_i, Pe_j> - delta_ij| = %.3g", d, rot_name(rot),
             worst);
      free(cols), free(e);
      tq_codec_free(c);
    }
  }
}

/* unrotate(rotate(x)) == x to 1e-6 relative (measured up to 4.5e-7, Haar
 * d = 256), ||P x|| == ||x|| to 1e-6 (measured <= 1e-7), and rotating (or
 * unrotating) in place gives the bits of the out-of-place call. (tqai.h says
 * x and y "must not overlap"; the implementation handles x == y, which the
 * encoder itself relies on, and this pins it.) */
static void test_rotate_unrotate_inverse_and_in_place(void) {
  static const uint32_t dims[] = {2, 3, 64, 100, 128, 256, 1024};
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
    uint32_t d = dims[di];
    for (int ri = 0; ri < 2; ri++) {
      tq_rotation rot = both_rotations[ri];
      if (rot == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
      if (rot == TQ_ROTATION_HAAR && d == 1024) continue;
      tq_codec_params p = params_of(d, 2, rot);
      tq_codec *c = make_codec(&p);
      if (!c) continue;
      tq_test_rng r = {31u * d + (uint64_t)ri};
      double worst_inv = 0.0, worst_norm = 0.0;
      int inplace_ok = 1;
      float *y = xmalloc(d * sizeof *y), *z = xmalloc(d * sizeof *z), *w = xmalloc(d * sizeof *w);
      for (int it = 0; it < 20; it++) {
        float *x = gauss_vectors(&r, 1, d, it % 2 ? 1e3 : 1.0);
        CHECK_OK(tq_codec_rotate(c, x, y));
        CHECK_OK(tq_codec_unrotate(c, y, z));
        double nx = sqrt(dot(x, x, d)), ny = sqrt(dot(y, y, d)), diff = 0.0;
        for (uint32_t j = 0; j < d; j++) diff += ((double)z[j] - x[j]) * ((double)z[j] - x[j]);
        if (sqrt(diff) / nx > worst_inv) worst_inv = sqrt(diff) / nx;
        if (fabs(ny / nx - 1.0) > worst_norm) worst_norm = fabs(ny / nx - 1.0);
        memcpy(w, x, d * sizeof *w);
        CHECK_OK(tq_codec_rotate(c, w, w));
        if (memcmp(w, y, d * sizeof *w) != 0) inplace_ok = 0;
        CHECK_OK(tq_codec_unrotate(c, w, w));
        if (memcmp(w, z, d * sizeof *w) != 0) inplace_ok = 0;
        free(x);
      }
      INFO("  inverse d=%u %s: max rel |unrot(rot(x)) - x| = %.3g, max | |Px|/|x| - 1 | = %.3g\n",
           d, rot_name(rot), worst_inv, worst_norm);
      CHECKF(worst_inv <= 1e-6, "d=%u %s: unrotate(rotate(x)) off by %.3g relative", d,
             rot_name(rot), worst_inv);
      CHECKF(worst_norm <= 1e-6, "d=%u %s: ||Px|| / ||x|| off by %.3g", d, rot_name(rot),
             worst_norm);
      CHECKF(inplace_ok, "d=%u %s: in-place rotate/unrotate differs from out-of-place", d,
             rot_name(rot));
      free(y), free(z), free(w);
      tq_codec_free(c);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* 4. Edge cases                                                             */
/* ------------------------------------------------------------------------ */

/* A zero vector (with +0 and -0 entries) in the middle of a batch encodes
 * and decodes to exact zeros (norm 0), for every width, rotation and norm
 * format. */
static void test_zero_vector(void) {
  static const uint32_t dims[] = {2, 3, 64, 100};
  for (size_t di = 0; di < 4; di++)
    for (uint32_t b = 1; b <= 8; b++)
      for (int ri = 0; ri < 2; ri++)
        for (int nf = 0; nf < 2; nf++) {
          uint32_t d = dims[di];
          if (both_rotations[ri] == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
          tq_codec_params p = params_of(d, b, both_rotations[ri]);
          p.norm_format = nf ? TQ_NORM_F32 : TQ_NORM_F16;
          tq_codec *c = make_codec(&p);
          if (!c) continue;
          tq_test_rng r = {d + b};
          float *x = gauss_vectors(&r, 3, d, 1.0);
          for (uint32_t j = 0; j < d; j++) x[d + j] = (j % 2) ? -0.0f : 0.0f;
          float *xh = xmalloc(3 * d * sizeof *xh);
          CHECK_OK(roundtrip(c, x, 3, xh));
          int zeros = 1;
          for (uint32_t j = 0; j < d; j++) zeros &= xh[d + j] == 0.0f;
          CHECKF(zeros, "d=%u b=%u %s: zero vector did not decode to zeros", d, b,
                 rot_name(p.rotation));
          free(x), free(xh);
          tq_codec_free(c);
        }
}

/* A single non-zero coordinate s * e_j.
 * Haar: P e_j is a uniformly random direction, so over the one-hot inputs of
 * 4 seeds the error averages the solver's D (within 5 standard errors), is
 * under the paper's bound where D has room below it (b <= 4), and no single
 * vector exceeds 10x the bound (single errors are heavy-tailed: a coordinate
 * in a wide outer cell; measured worst 4.0x, d = 128 b = 6).
 * Hadamard: every coordinate of P e_j is exactly +-1/sqrt(d), so the error
 * is deterministic: (1 - sqrt(d) c*)^2 with c* the centroid nearest to
 * 1/sqrt(d). It is checked to equal that. It exceeds the paper's bound (a
 * mean over random directions) at d = 64 and 128 for 2 bits (1.47x, 1.50x)
 * and 3 bits (1.46x, 1.43x), and at d = 64 for 8 bits (1.07x): one random
 * sign layer does not make spiky inputs look random. */
static void test_single_nonzero_coordinate(void) {
  static const uint32_t dims[] = {64, 100, 128};
  for (size_t di = 0; di < 3; di++)
    for (uint32_t b = 1; b <= 8; b++)
      for (int ri = 0; ri < 2; ri++) {
        uint32_t d = dims[di];
        tq_rotation rot = both_rotations[ri];
        if (rot == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
        double ub = tq_distortion_upper_bound(b), D = 0.0, cb[256];
        CHECK_OK(tq_codebook_solve(d, b, TQ_CODEBOOK_EXACT, cb, &D));
        float *x = xcalloc((size_t)d * d, sizeof *x), *xh = xmalloc((size_t)d * d * sizeof *xh);
        for (uint32_t j = 0; j < d; j++) x[(size_t)j * d + j] = (j % 3 == 0) ? -3.5f : 0.25f;
        nmse_acc all;
        memset(&all, 0, sizeof all);
        double worst = 0.0, best = INFINITY, predicted = 0.0;
        int seeds = rot == TQ_ROTATION_HAAR ? 4 : 1;
        for (int s = 0; s < seeds; s++) {
          tq_codec_params p = params_of(d, b, rot);
          p.seed += (uint64_t)s;
          tq_codec *c = make_codec(&p);
          if (!c) continue;
          CHECK_OK(roundtrip(c, x, d, xh));
          CHECKF(all_finite(xh, (size_t)d * d), "d=%u b=%u: non-finite output", d, b);
          for (uint32_t j = 0; j < d; j++) {
            nmse_acc one;
            memset(&one, 0, sizeof one);
            nmse_add(&one, x + (size_t)j * d, xh + (size_t)j * d, 1, d);
            if (nmse_value(&one) > worst) worst = nmse_value(&one);
            if (nmse_value(&one) < best) best = nmse_value(&one);
            nmse_add(&all, x + (size_t)j * d, xh + (size_t)j * d, 1, d);
          }
          if (rot == TQ_ROTATION_HADAMARD) {
            float cent[256], y = (float)(1.0 / sqrt((double)d));
            CHECK_OK(tq_codec_centroids(c, cent, 256));
            float near = cent[0];
            for (uint32_t k = 0; k < (1u << b); k++)
              if (fabsf(cent[k] - y) < fabsf(near - y)) near = cent[k];
            predicted = (1.0 - sqrt((double)d) * near) * (1.0 - sqrt((double)d) * near);
          }
          tq_codec_free(c);
        }
        double m = nmse_value(&all), se = nmse_stderr(&all);
        INFO("  one-hot d=%u b=%u %-8s: mean err %.4g (%.3f of bound, %.3f of D), worst %.4g "
             "(%.3f of bound)\n",
             d, b, rot_name(rot), m, m / ub, m / D, worst, worst / ub);
        if (rot == TQ_ROTATION_HAAR) {
          CHECKF(fabs(m - D) <= 5.0 * se + 0.003 * D,
                 "d=%u b=%u haar: one-hot mean error %.4g vs D %.4g (%.1f standard errors)", d,
                 b, m, D, (m - D) / se);
          if (b <= 4)
            CHECKF(m < ub, "d=%u b=%u haar: one-hot mean error %.4g >= bound %.4g", d, b, m, ub);
          CHECKF(worst < 10.0 * ub, "d=%u b=%u haar: one-hot worst error %.4g >= 10 x bound",
                 d, b, worst);
        } else {
          CHECKF(fabs(worst - predicted) <= 2e-3 * predicted + 1e-10 &&
                     fabs(best - predicted) <= 2e-3 * predicted + 1e-10,
                 "d=%u b=%u hadamard: one-hot errors %.6g .. %.6g, predicted %.6g", d, b, best,
                 worst, predicted);
        }
        free(x), free(xh);
      }
}

/* Scale invariance. Power-of-two scales are exact in every step (norm,
 * 1/norm, the tiny-input rescue, f32 norm storage), so encode(2^k x) has the
 * codes of encode(x), and decode gives exactly 2^k decode(x) (wherever that
 * is a normal float), from 2^-118 (3e-36) up to 2^120 (1.3e36) with an f32
 * norm and 2^-10 .. 2^14 with an f16 one (measured: all 200 vectors, every
 * case). Other scales (1e-35, 1e-20, 1e-3, 1e4, 1e30; f16 norm where the norm
 * fits, f32 otherwise) keep the NMSE within 1% of unit-scale data (measured
 * within 0.005%). */
static void test_scale_invariance(void) {
  const uint32_t d = 128;
  const size_t n = 200;
  for (int ri = 0; ri < 2; ri++) {
    tq_rotation rot = both_rotations[ri];
    for (int nf = 0; nf < 2; nf++) {
      tq_codec_params p = params_of(d, 4, rot);
      p.norm_format = nf ? TQ_NORM_F32 : TQ_NORM_F16;
      tq_codec *c = make_codec(&p);
      if (!c) continue;
      size_t rs = tq_codec_record_size(c), nb = nf ? 4 : 2;
      tq_test_rng r = {8080};
      float *x = gauss_vectors(&r, n, d, 1.0 / sqrt((double)d)); /* norms near 1 */
      /* no element below 2^-8 in magnitude, so 2^-118 x has only normal floats */
      for (size_t i = 0; i < n * d; i++)
        if (fabsf(x[i]) < 0x1p-8f) x[i] = 0.0f;
      float *xs = xmalloc(n * d * sizeof *xs), *xh = xmalloc(n * d * sizeof *xh);
      float *xsh = xmalloc(n * d * sizeof *xsh);
      uint8_t *rec = xmalloc(n * rs), *recs = xmalloc(n * rs);
      CHECK_OK(tq_codec_encode_f32(c, x, n, rec, n * rs));
      CHECK_OK(tq_codec_decode_f32(c, rec, n * rs, n, xh));
      nmse_acc base;
      memset(&base, 0, sizeof base);
      nmse_add(&base, x, xh, n, d);

      /* Exact powers of two: f16 norms only where the norm stays a normal
       * half (2^-14 .. 65504); f32 down to elements of 2^-126. */
      static const int f32_exps[] = {-118, -100, -70, -20, 13, 60, 100, 120};
      static const int f16_exps[] = {-10, -4, 8, 14};
      const int *exps = nf ? f32_exps : f16_exps;
      int n_exps = nf ? 8 : 4;
      for (int ei = 0; ei < n_exps; ei++) {
        int e = exps[ei];
        for (size_t i = 0; i < n * d; i++) xs[i] = ldexpf(x[i], e);
        CHECK_OK(tq_codec_encode_f32(c, xs, n, recs, n * rs));
        CHECK_OK(tq_codec_decode_f32(c, recs, n * rs, n, xsh));
        size_t same_codes = 0, exact_out = 0, checked = 0;
        for (size_t i = 0; i < n; i++) {
          int normal = 1;
          for (uint32_t j = 0; j < d; j++)
            if (xs[i * d + j] != 0.0f && fabsf(xs[i * d + j]) < FLT_MIN) normal = 0;
          if (!normal) continue;
          checked++;
          same_codes += memcmp(rec + i * rs + nb, recs + i * rs + nb, rs - nb) == 0;
          int ok = 1;
          for (uint32_t j = 0; j < d; j++) {
            float want = ldexpf(xh[i * d + j], e);
            /* the decoded value itself may fall below FLT_MIN */
            if (fabsf(want) >= FLT_MIN && xsh[i * d + j] != want) ok = 0;
          }
          exact_out += ok;
        }
        INFO("  scale 2^%d %s %s: %zu/%zu same codes, %zu exact outputs\n", e, rot_name(rot),
             nf ? "f32" : "f16", same_codes, checked, exact_out);
        CHECKF(checked == n, "2^%d: only %zu of %zu vectors all normal", e, checked, n);
        CHECKF(same_codes == checked, "%s %s: scale 2^%d changed the codes of %zu of %zu vectors",
               rot_name(rot), nf ? "f32" : "f16", e, checked - same_codes, checked);
        CHECKF(exact_out == checked,
               "%s %s: scale 2^%d: decode not exactly 2^%d decode(x) for %zu of %zu vectors",
               rot_name(rot), nf ? "f32" : "f16", e, e, checked - exact_out, checked);
      }

      /* Other scales: relative error at the unit-scale level. */
      static const double f32_scales[] = {1e-35, 1e-20, 1e-3, 1e4, 1e30};
      static const double f16_scales[] = {1e-3, 1e4};
      const double *scales = nf ? f32_scales : f16_scales;
      int n_scales = nf ? 5 : 2;
      for (int si = 0; si < n_scales; si++) {
        for (size_t i = 0; i < n * d; i++) xs[i] = (float)(x[i] * scales[si]);
        CHECK_OK(tq_codec_encode_f32(c, xs, n, recs, n * rs));
        CHECK_OK(tq_codec_decode_f32(c, recs, n * rs, n, xsh));
        CHECKF(all_finite(xsh, n * d), "scale %g: non-finite output", scales[si]);
        nmse_acc a;
        memset(&a, 0, sizeof a);
        nmse_add(&a, xs, xsh, n, d);
        double ratio = nmse_value(&a) / nmse_value(&base);
        INFO("  scale %g %s %s: nmse %.6g (x%.5f of unit scale)\n", scales[si], rot_name(rot),
             nf ? "f32" : "f16", nmse_value(&a), ratio);
        CHECKF(fabs(ratio - 1.0) < 0.01, "%s %s: scale %g: NMSE %.6g vs %.6g at unit scale",
               rot_name(rot), nf ? "f32" : "f16", scales[si], nmse_value(&a),
               nmse_value(&base));
      }
      free(x), free(xs), free(xh), free(xsh), free(rec), free(recs);
      tq_codec_free(c);
    }
  }
}

/* The f16 norm's range: a norm of exactly 65504 encodes, a norm above it is
 * TQ_ERR_RANGE with TQ_NORM_F16 (also when it would round down to 65504),
 * and the earlier records of the batch are written; TQ_NORM_F32 takes it.
 * f32 rejects norms above FLT_MAX. Elements up to 1e30 decode finite. */
static void test_norm_range(void) {
  const uint32_t d = 64;
  tq_codec_params p16 = params_of(d, 4, TQ_ROTATION_HAAR), p32 = p16;
  p32.norm_format = TQ_NORM_F32;
  tq_codec *c16 = make_codec(&p16), *c32 = make_codec(&p32);
  if (!c16 || !c32) {
    tq_codec_free(c16);
    tq_codec_free(c32);
    return;
  }
  size_t rs16 = tq_codec_record_size(c16), rs32 = tq_codec_record_size(c32);
  float x[3 * 64];
  uint8_t rec[3 * (4 + 32)], one[4 + 32];
  float xh[3 * 64];
  tq_test_rng r = {12};
  for (uint32_t j = 0; j < 3 * d; j++) x[j] = (float)tq_test_gauss(&r);
  static const float norms[] = {65504.0f, 65505.0f, 65519.0f, 70000.0f, 1e6f, 3e38f};
  for (size_t k = 0; k < sizeof norms / sizeof norms[0]; k++) {
    /* vector 1 is a spike of that norm; vectors 0 and 2 are ordinary */
    memset(x + d, 0, d * sizeof *x);
    x[d + 5] = norms[k];
    tq_status want16 = norms[k] > TQ_F16_MAX ? TQ_ERR_RANGE : TQ_OK;
    memset(rec, 0xAB, sizeof rec);
    CHECK_STATUS(tq_codec_encode_f32(c16, x, 3, rec, sizeof rec), want16);
    CHECK_OK(tq_codec_encode_f32(c16, x, 1, one, rs16));
    CHECKF(memcmp(rec, one, rs16) == 0, "norm %g: record before the failing one not written",
           norms[k]);
    CHECK_OK(tq_codec_encode_f32(c32, x, 3, rec, sizeof rec));
    CHECK_OK(tq_codec_decode_f32(c32, rec, sizeof rec, 3, xh));
    CHECKF(all_finite(xh, 3 * d), "norm %g: f32 decode not finite", norms[k]);
    CHECK_NEAR(sqrt(dot(xh + d, xh + d, d)) / norms[k], 1.0, 0.05);
  }
  /* f32: a norm above FLT_MAX (each element finite) is out of range. */
  for (uint32_t j = 0; j < d; j++) x[d + j] = 1e38f;
  CHECK_STATUS(tq_codec_encode_f32(c32, x + d, 1, rec, rs32), TQ_ERR_RANGE);
  CHECK_STATUS(tq_codec_encode_f32(c16, x + d, 1, rec, rs16), TQ_ERR_RANGE);
  /* Elements of 1e30 with an f32 norm: fine, and finite on decode. */
  for (uint32_t j = 0; j < d; j++) x[d + j] = (float)(1e30 * tq_test_gauss(&r));
  CHECK_OK(tq_codec_encode_f32(c32, x + d, 1, rec, rs32));
  CHECK_OK(tq_codec_decode_f32(c32, rec, rs32, 1, xh));
  CHECKF(all_finite(xh, d), "1e30 elements: decode not finite");
  tq_codec_free(c16);
  tq_codec_free(c32);
}

/* Norms in the f16 subnormal range (below 6.1e-5) keep fewer significant
 * bits, and below about 3e-8 round to 0: no crash, finite output, the
 * decoded norm within 10% down to 1e-6 (measured: 2.2% off at 6e-5, where
 * the 4-bit quantizer's own shrinkage dominates, 1.0% at 1e-6, 16.5% at
 * 1e-7), never more than 1.5x the input's, and exact zeros once the stored
 * norm underflows. */
static void test_subnormal_f16_norm(void) {
  const uint32_t d = 64;
  tq_codec_params p = params_of(d, 4, TQ_ROTATION_HAAR);
  tq_codec *c = make_codec(&p);
  if (!c) return;
  tq_test_rng r = {3};
  float *x = gauss_vectors(&r, 1, d, 1.0);
  normalize_rows(x, 1, d);
  float xs[64], xh[64];
  uint8_t rec[2 + 32];
  static const double norms[] = {6e-5, 1e-5, 1e-6, 1e-7, 2e-8, 1e-9, 1e-30, 1e-40};
  for (size_t k = 0; k < sizeof norms / sizeof norms[0]; k++) {
    for (uint32_t j = 0; j < d; j++) xs[j] = (float)(x[j] * norms[k]);
    CHECK_OK(tq_codec_encode_f32(c, xs, 1, rec, sizeof rec));
    CHECK_OK(tq_codec_decode_f32(c, rec, sizeof rec, 1, xh));
    CHECKF(all_finite(xh, d), "norm %g: non-finite output", norms[k]);
    double nh = sqrt(dot(xh, xh, d));
    INFO("  f16 subnormal norm %g -> decoded norm %.6g (ratio %.4f)\n", norms[k], nh,
         nh / norms[k]);
    if (norms[k] >= 1e-6) CHECK_NEAR(nh / norms[k], 1.0, 0.1);
    if (norms[k] < 2.9e-8) CHECK(nh == 0.0);
    CHECK(nh <= norms[k] * 1.5);
  }
  free(x);
  tq_codec_free(c);
}

/* NaN and +-Inf anywhere in the input -> TQ_ERR_NON_FINITE, from the f32,
 * f16 and bf16 entry points, with the records before the bad vector written. */
static void test_non_finite_input(void) {
  static const uint32_t dims[] = {3, 64, 100};
  for (size_t di = 0; di < 3; di++) {
    uint32_t d = dims[di];
    tq_codec_params p = params_of(d, 3, TQ_ROTATION_HAAR);
    tq_codec *c = make_codec(&p);
    if (!c) continue;
    size_t rs = tq_codec_record_size(c);
    tq_test_rng r = {d};
    float *x = gauss_vectors(&r, 2, d, 1.0);
    uint16_t *h = xmalloc(2 * d * sizeof *h), *hb = xmalloc(2 * d * sizeof *hb);
    for (uint32_t j = 0; j < 2 * d; j++) {
      h[j] = tq_f32_to_f16(x[j]);
      hb[j] = tq_f32_to_bf16(x[j]);
    }
    uint8_t *rec = xmalloc(2 * rs), *first = xmalloc(rs);
    CHECK_OK(tq_codec_encode_f32(c, x, 1, first, rs));
    static const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    const uint32_t where[] = {0, d / 2, d - 1};
    for (int bi = 0; bi < 4; bi++)
      for (int wi = 0; wi < 3; wi++) {
        uint32_t j = d + where[wi]; /* in the second vector */
        float keep = x[j];
        uint16_t keep_h = h[j], keep_b = hb[j];
        x[j] = bad[bi];
        h[j] = tq_f32_to_f16(bad[bi]);
        hb[j] = tq_f32_to_bf16(bad[bi]);
        memset(rec, 0, 2 * rs);
        CHECK_STATUS(tq_codec_encode_f32(c, x, 2, rec, 2 * rs), TQ_ERR_NON_FINITE);
        CHECKF(memcmp(rec, first, rs) == 0, "d=%u: record before the bad vector not written", d);
        CHECK_STATUS(tq_codec_encode_f32(c, x + d, 1, rec, rs), TQ_ERR_NON_FINITE);
        CHECK_STATUS(tq_codec_encode_f16(c, h, 2, rec, 2 * rs), TQ_ERR_NON_FINITE);
        CHECK_STATUS(tq_codec_encode_bf16(c, hb, 2, rec, 2 * rs), TQ_ERR_NON_FINITE);
        x[j] = keep, h[j] = keep_h, hb[j] = keep_b;
      }
    /* Every element finite but the norm beyond FLT_MAX (bf16 3e38 per
     * element): TQ_ERR_RANGE, not TQ_ERR_NON_FINITE. */
    for (uint32_t j = 0; j < d; j++) hb[j] = tq_f32_to_bf16(3e38f);
    CHECK_STATUS(tq_codec_encode_bf16(c, hb, 1, rec, rs), TQ_ERR_RANGE);
    free(x), free(h), free(hb), free(rec), free(first);
    tq_codec_free(c);
  }
}

/* tq_codec_create's statuses: dims 0, 1, 2049 -> UNSUPPORTED_DIM; bits 0, 9
 * -> UNSUPPORTED_BITS; Hadamard with a dim that is not a power of two ->
 * UNSUPPORTED_ROTATION; the extreme valid dims 2 and 2048 are accepted; a
 * SIMD level the CPU lacks -> UNSUPPORTED_SIMD. *out is NULL on failure. */
static void test_create_unsupported(void) {
  tq_codec *c = (tq_codec *)&c; /* not NULL: create must clear it */
  static const uint32_t bad_dims[] = {0, 1, 2049, 4096, UINT32_MAX};
  for (size_t i = 0; i < sizeof bad_dims / sizeof bad_dims[0]; i++) {
    tq_codec_params p = tq_codec_params_default(bad_dims[i], 4);
    c = (tq_codec *)&c;
    CHECK_STATUS(tq_codec_create(&p, &c), TQ_ERR_UNSUPPORTED_DIM);
    CHECK(c == NULL);
  }
  static const uint32_t bad_bits[] = {0, 9, 16, UINT32_MAX};
  for (size_t i = 0; i < sizeof bad_bits / sizeof bad_bits[0]; i++) {
    tq_codec_params p = tq_codec_params_default(64, bad_bits[i]);
    c = (tq_codec *)&c;
    CHECK_STATUS(tq_codec_create(&p, &c), TQ_ERR_UNSUPPORTED_BITS);
    CHECK(c == NULL);
  }
  static const uint32_t odd_dims[] = {3, 6, 96, 100, 129, 1000, 2047};
  for (size_t i = 0; i < sizeof odd_dims / sizeof odd_dims[0]; i++) {
    tq_codec_params p = params_of(odd_dims[i], 4, TQ_ROTATION_HADAMARD);
    c = (tq_codec *)&c;
    CHECK_STATUS(tq_codec_create(&p, &c), TQ_ERR_UNSUPPORTED_ROTATION);
    CHECK(c == NULL);
  }
  /* Valid extremes (2048 with Hadamard: a Haar build at 2048 takes seconds). */
  tq_codec_params p = params_of(2, 1, TQ_ROTATION_HAAR);
  c = make_codec(&p);
  CHECK(tq_codec_record_size(c) == 3);
  tq_codec_free(c);
  p = params_of(2, 8, TQ_ROTATION_HADAMARD);
  c = make_codec(&p);
  tq_codec_free(c);
  p = params_of(2048, 4, TQ_ROTATION_HADAMARD);
  p.codebook = TQ_CODEBOOK_GAUSSIAN;
  c = make_codec(&p);
  CHECK(tq_codec_record_size(c) == 2 + 1024);
  if (c) {
    tq_test_rng r = {2048};
    float *x = gauss_vectors(&r, 4, 2048, 1.0), *xh = xmalloc(4 * 2048 * sizeof *xh);
    CHECK_OK(roundtrip(c, x, 4, xh));
    nmse_acc a;
    memset(&a, 0, sizeof a);
    nmse_add(&a, x, xh, 4, 2048);
    CHECKF(nmse_value(&a) < tq_distortion_upper_bound(4), "d=2048: NMSE %.4g",
           nmse_value(&a));
    free(x), free(xh);
  }
  tq_codec_free(c);
  for (size_t i = 0; i < N_LEVELS; i++) {
    if (tq_simd_supported(all_levels[i])) continue;
    p = tq_codec_params_default(64, 4);
    p.simd = all_levels[i];
    c = (tq_codec *)&c;
    CHECK_STATUS(tq_codec_create(&p, &c), TQ_ERR_UNSUPPORTED_SIMD);
    CHECK(c == NULL);
  }
}

/* Decoding a record whose stored norm is negative, NaN or infinite is
 * TQ_ERR_CORRUPT in every decode entry point; the vectors before the bad
 * record are written. Record layout: norm first (little-endian f16 or f32),
 * then the packed codes. */
static void test_decode_corrupt_norm(void) {
  const uint32_t d = 64;
  for (int nf = 0; nf < 2; nf++) {
    tq_codec_params p = params_of(d, 4, TQ_ROTATION_HAAR);
    p.norm_format = nf ? TQ_NORM_F32 : TQ_NORM_F16;
    tq_codec *c = make_codec(&p);
    if (!c) continue;
    size_t rs = tq_codec_record_size(c);
    tq_test_rng r = {5};
    float *x = gauss_vectors(&r, 2, d, 1.0);
    float xh[2 * 64], first[64];
    uint16_t h[2 * 64];
    uint8_t rec[2 * (4 + 32)];
    CHECK_OK(tq_codec_encode_f32(c, x, 2, rec, 2 * rs));
    CHECK_OK(tq_codec_decode_f32(c, rec, 2 * rs, 1, first));
    /* little-endian patterns: -1, -65504, NaN, -NaN, +Inf, -Inf, sNaN */
    static const uint32_t f16_bad[] = {0xBC00, 0xFBFF, 0x7E00, 0xFE00, 0x7C00, 0xFC00, 0x7C01};
    static const uint32_t f32_bad[] = {0xBF800000u, 0xFF7FFFFFu, 0x7FC00000u, 0xFFC00000u,
                                       0x7F800000u, 0xFF800000u, 0x7F800001u};
    for (int k = 0; k < 7; k++) {
      uint8_t bad[2 * (4 + 32)];
      memcpy(bad, rec, 2 * rs);
      uint32_t u = nf ? f32_bad[k] : f16_bad[k];
      for (size_t i = 0; i < (nf ? 4u : 2u); i++) bad[rs + i] = (uint8_t)(u >> (8 * i));
      memset(xh, 0, sizeof xh);
      CHECK_STATUS(tq_codec_decode_f32(c, bad, 2 * rs, 2, xh), TQ_ERR_CORRUPT);
      CHECKF(memcmp(xh, first, d * sizeof *xh) == 0,
             "%s norm 0x%x: vector before the bad record not written", nf ? "f32" : "f16", u);
      CHECK_STATUS(tq_codec_decode_f32(c, bad + rs, rs, 1, xh), TQ_ERR_CORRUPT);
      CHECK_STATUS(tq_codec_decode_f16(c, bad, 2 * rs, 2, h), TQ_ERR_CORRUPT);
      CHECK_STATUS(tq_codec_decode_bf16(c, bad, 2 * rs, 2, h), TQ_ERR_CORRUPT);
    }
    /* The largest finite norms decode finite, or (f32 norm near FLT_MAX with
     * a codeword longer than 1, which no encoder writes) are refused as
     * corrupt; never a success with infinities. */
    uint8_t big[4 + 32];
    memcpy(big, rec, rs);
    uint32_t u = nf ? 0x7F7FFFFFu : 0x7BFFu;
    for (size_t i = 0; i < (nf ? 4u : 2u); i++) big[i] = (uint8_t)(u >> (8 * i));
    tq_status bst = tq_codec_decode_f32(c, big, rs, 1, xh);
    if (nf) CHECKF(bst == TQ_OK || bst == TQ_ERR_CORRUPT, "f32 largest norm: %s", tq_status_name(bst));
    else CHECK_OK(bst);
    if (bst == TQ_OK) CHECKF(all_finite(xh, d), "%s: largest norm decodes non-finite", nf ? "f32" : "f16");
    free(x);
    tq_codec_free(c);
  }
}

/* A record the encoder accepted decodes to finite values in the format it
 * came from. The reconstruction can overshoot the input's largest element
 * (by the factor sqrt(d) c* = 1.13 for a one-hot input at d = 8, 4 bits,
 * Hadamard; up to about 1.5 at 2 bits), so near the top of a format's range
 * either encode must refuse the vector (TQ_ERR_RANGE) or decode must not
 * return TQ_OK with infinities. Cases, d = 2, 4, 8, bits 1..8, both
 * rotations, every one-hot position: f32 input 3.2e38 with an f32 norm
 * (e.g. d = 8, 4 bits, Hadamard: decodes to 3.62e38 > FLT_MAX, i.e. inf);
 * f16 input 60000 through encode_f16 / decode_f16 (decodes to 67900 >
 * 65504, i.e. inf). Norms near FLT_MAX overflow the same way for Gaussian
 * directions at small d, and at d = 69 and 130 too. */
static void test_decode_finite_near_format_limits(void) {
  int cases = 0, bad32 = 0, bad16 = 0;
  char first32[96] = "", first16[96] = "";
  for (int ri = 0; ri < 2; ri++) {
    tq_rotation rot = both_rotations[ri];
    for (uint32_t d = 2; d <= 8; d *= 2)
      for (uint32_t b = 1; b <= 8; b++) {
        tq_codec_params p = params_of(d, b, rot);
        p.norm_format = TQ_NORM_F32;
        tq_codec *c32 = make_codec(&p);
        p.norm_format = TQ_NORM_F16;
        tq_codec *c16 = make_codec(&p);
        for (uint32_t j = 0; c32 && c16 && j < d; j++) {
          float x[8] = {0}, xh[8];
          uint16_t h[8] = {0}, hh[8];
          uint8_t rec[4 + 8];
          x[j] = 3.2e38f;
          h[j] = tq_f32_to_f16(60000.0f);
          cases++;
          if (tq_codec_encode_f32(c32, x, 1, rec, sizeof rec) == TQ_OK &&
              tq_codec_decode_f32(c32, rec, sizeof rec, 1, xh) == TQ_OK && !all_finite(xh, d)) {
            if (!bad32++)
              snprintf(first32, sizeof first32, "d=%u b=%u %s, x = 3.2e38 e_%u", d, b,
                       rot_name(rot), j);
          }
          if (tq_codec_encode_f16(c16, h, 1, rec, sizeof rec) == TQ_OK &&
              tq_codec_decode_f16(c16, rec, sizeof rec, 1, hh) == TQ_OK) {
            int inf = 0;
            for (uint32_t k = 0; k < d; k++) inf |= (hh[k] & 0x7c00u) == 0x7c00u;
            if (inf && !bad16++)
              snprintf(first16, sizeof first16, "d=%u b=%u %s, x = 60000 e_%u", d, b,
                       rot_name(rot), j);
          }
        }
        tq_codec_free(c32);
        tq_codec_free(c16);
      }
  }
  CHECKF(bad32 == 0,
         "%d of %d one-hot f32 inputs (f32 norm 3.2e38 <= FLT_MAX) encode OK and decode_f32 OK "
         "to +-inf; first: %s",
         bad32, cases, first32);
  CHECKF(bad16 == 0,
         "%d of %d one-hot f16 inputs (norm 60000 <= 65504) encode_f16 OK and decode_f16 OK "
         "to +-inf; first: %s",
         bad16, cases, first16);
}

/* Buffer sizes and batch counts: one byte short -> BUFFER_TOO_SMALL for
 * every entry point; n = 0 is OK (and touches nothing); n such that
 * n * record_size overflows size_t -> INVALID_ARGUMENT. */
static void test_buffer_sizes_and_counts(void) {
  const uint32_t d = 100;
  tq_codec_params p = params_of(d, 3, TQ_ROTATION_HAAR);
  tq_codec *c = make_codec(&p);
  if (!c) return;
  size_t rs = tq_codec_record_size(c);
  CHECK(rs == tq_record_size(d, 3, TQ_NORM_F16));
  CHECK(rs == 2 + 38);
  const size_t n = 3;
  tq_test_rng r = {1};
  float *x = gauss_vectors(&r, n, d, 1.0), *xh = xmalloc(n * d * sizeof *xh);
  uint16_t *h = xmalloc(n * d * sizeof *h);
  for (size_t i = 0; i < n * d; i++) h[i] = tq_f32_to_f16(x[i]);
  uint8_t *rec = xmalloc(n * rs);
  CHECK_OK(tq_codec_encode_f32(c, x, n, rec, n * rs));
  CHECK_STATUS(tq_codec_encode_f32(c, x, n, rec, n * rs - 1), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_encode_f16(c, h, n, rec, n * rs - 1), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_encode_bf16(c, h, n, rec, n * rs - 1), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_encode_f32(c, x, 1, rec, 0), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_decode_f32(c, rec, n * rs - 1, n, xh), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_decode_f16(c, rec, n * rs - 1, n, h), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_decode_bf16(c, rec, n * rs - 1, n, h), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_decode_f32(c, rec, 0, 1, xh), TQ_ERR_BUFFER_TOO_SMALL);
  /* A larger buffer than needed is fine. */
  CHECK_OK(tq_codec_decode_f32(c, rec, n * rs, n - 1, xh));

  /* n = 0: OK with any capacity, nothing written. */
  uint8_t canary = 0x5A;
  float fcanary = 1234.5f;
  uint16_t hcanary = 0x1234;
  CHECK_OK(tq_codec_encode_f32(c, x, 0, &canary, 0));
  CHECK_OK(tq_codec_encode_f16(c, h, 0, &canary, 0));
  CHECK_OK(tq_codec_encode_bf16(c, h, 0, &canary, 0));
  CHECK_OK(tq_codec_decode_f32(c, &canary, 0, 0, &fcanary));
  CHECK_OK(tq_codec_decode_f16(c, &canary, 0, 0, &hcanary));
  CHECK_OK(tq_codec_decode_bf16(c, &canary, 0, 0, &hcanary));
  CHECK(canary == 0x5A && fcanary == 1234.5f && hcanary == 0x1234);

  /* n * record_size overflowing size_t, whatever capacity is claimed. */
  const size_t huge[] = {SIZE_MAX / rs + 1, SIZE_MAX / 2, SIZE_MAX};
  for (size_t i = 0; i < 3; i++) {
    CHECK_STATUS(tq_codec_encode_f32(c, x, huge[i], rec, SIZE_MAX), TQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tq_codec_encode_f16(c, h, huge[i], rec, SIZE_MAX), TQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tq_codec_encode_bf16(c, h, huge[i], rec, SIZE_MAX), TQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tq_codec_decode_f32(c, rec, SIZE_MAX, huge[i], xh), TQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tq_codec_decode_f16(c, rec, SIZE_MAX, huge[i], h), TQ_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tq_codec_decode_bf16(c, rec, SIZE_MAX, huge[i], h), TQ_ERR_INVALID_ARGUMENT);
  }
  free(x), free(xh), free(h), free(rec);
  tq_codec_free(c);
}

/* ------------------------------------------------------------------------ */
/* 5. Determinism                                                            */
/* ------------------------------------------------------------------------ */

/* Same parameters and seed: identical bytes from two codec instances and
 * from two calls; another seed gives other bytes (and other rotations). */
static void test_same_seed_same_bytes(void) {
  static const uint32_t dims[] = {3, 64, 100, 128};
  for (size_t di = 0; di < 4; di++)
    for (int ri = 0; ri < 2; ri++) {
      uint32_t d = dims[di];
      tq_rotation rot = both_rotations[ri];
      if (rot == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
      tq_codec_params p = params_of(d, 4, rot), q = p;
      q.seed = p.seed + 1;
      tq_codec *a = make_codec(&p), *b = make_codec(&p), *o = make_codec(&q);
      if (a && b && o) {
        const size_t n = 50;
        size_t rs = tq_codec_record_size(a);
        tq_test_rng r = {d};
        float *x = gauss_vectors(&r, n, d, 1.0);
        uint8_t *ra = xmalloc(n * rs), *ra2 = xmalloc(n * rs), *rb = xmalloc(n * rs);
        uint8_t *ro = xmalloc(n * rs);
        CHECK_OK(tq_codec_encode_f32(a, x, n, ra, n * rs));
        CHECK_OK(tq_codec_encode_f32(a, x, n, ra2, n * rs));
        CHECK_OK(tq_codec_encode_f32(b, x, n, rb, n * rs));
        CHECK_OK(tq_codec_encode_f32(o, x, n, ro, n * rs));
        CHECKF(memcmp(ra, ra2, n * rs) == 0, "d=%u %s: two calls differ", d, rot_name(rot));
        CHECKF(memcmp(ra, rb, n * rs) == 0, "d=%u %s: two instances differ", d, rot_name(rot));
        CHECKF(memcmp(ra, ro, n * rs) != 0, "d=%u %s: another seed gives the same bytes", d,
               rot_name(rot));
        /* And the rotations differ, not just by chance in the bytes. */
        float y1[128], y2[128];
        CHECK_OK(tq_codec_rotate(a, x, y1));
        CHECK_OK(tq_codec_rotate(o, x, y2));
        CHECKF(memcmp(y1, y2, d * sizeof *y1) != 0, "d=%u %s: seed ignored by the rotation", d,
               rot_name(rot));
        free(x), free(ra), free(ra2), free(rb), free(ro);
      }
      tq_codec_free(a), tq_codec_free(b), tq_codec_free(o);
    }
}

/* Encoded bytes and decoded floats are identical at every SIMD level the CPU
 * supports (scalar is the reference), for both rotations, dims with and
 * without vector tails, and every width; tq_codec_get_params reports the
 * level in use (TQ_SIMD_AUTO resolves to tq_simd_default()). */
static void test_identical_across_simd_levels(void) {
  tq_simd_level levels[N_LEVELS];
  size_t n_levels = 0;
  for (size_t i = 0; i < N_LEVELS; i++)
    if (tq_simd_supported(all_levels[i])) levels[n_levels++] = all_levels[i];
  INFO("  simd levels: %zu supported, default %s\n", n_levels, tq_simd_name(tq_simd_default()));
  {
    tq_codec_params p = tq_codec_params_default(64, 4), got;
    tq_codec *c = make_codec(&p);
    if (c) {
      CHECK_OK(tq_codec_get_params(c, &got));
      CHECK(got.simd == tq_simd_default());
      CHECK(got.simd != TQ_SIMD_AUTO);
      CHECK(got.dim == 64 && got.bits == 4 && got.seed == p.seed);
      CHECK(got.rotation == p.rotation && got.codebook == p.codebook);
      CHECK(got.norm_format == p.norm_format);
    }
    tq_codec_free(c);
  }
  /* TQAI_SIMD=scalar makes TQ_SIMD_AUTO resolve to scalar (restored after). */
  {
    const char *old = getenv("TQAI_SIMD");
    char *saved = old ? strcpy(xmalloc(strlen(old) + 1), old) : NULL;
    setenv("TQAI_SIMD", "scalar", 1);
    tq_codec_params p = tq_codec_params_default(64, 4), got;
    tq_codec *c = make_codec(&p);
    if (c) {
      CHECK_OK(tq_codec_get_params(c, &got));
      CHECK(got.simd == TQ_SIMD_SCALAR);
    }
    tq_codec_free(c);
    if (saved) setenv("TQAI_SIMD", saved, 1);
    else unsetenv("TQAI_SIMD");
    free(saved);
  }
  if (n_levels < 2) TQ_SKIP("test_identical_across_simd_levels", "only one SIMD level here");
  static const uint32_t dims[] = {2, 3, 8, 17, 64, 100, 128, 256};
  const size_t n = 24;
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
    for (int ri = 0; ri < 2; ri++)
      for (uint32_t b = 1; b <= 8; b++) {
        uint32_t d = dims[di];
        tq_rotation rot = both_rotations[ri];
        if (rot == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
        tq_test_rng r = {d * 16u + b};
        float *x = gauss_vectors(&r, n, d, 1.0);
        /* a few awkward vectors: a spike, a tiny one, a huge-ish one, zeros */
        memset(x, 0, d * sizeof *x);
        x[d / 2] = 3.0f;
        for (uint32_t j = 0; j < d; j++) x[d + j] *= 1e-33f;
        for (uint32_t j = 0; j < d; j++) x[2 * d + j] *= 1e3f;
        memset(x + 3 * d, 0, d * sizeof *x);
        size_t rs = tq_record_size(d, b, TQ_NORM_F16);
        uint8_t *ref_rec = xmalloc(n * rs), *rec = xmalloc(n * rs);
        float *ref_out = xmalloc(n * d * sizeof *ref_out), *out = xmalloc(n * d * sizeof *out);
        float *ref_rot = xmalloc(d * sizeof *ref_rot), *yrot = xmalloc(d * sizeof *yrot);
        for (size_t li = 0; li < n_levels; li++) {
          tq_codec_params p = params_of(d, b, rot), got;
          p.simd = levels[li];
          tq_codec *c = make_codec(&p);
          if (!c) continue;
          CHECK_OK(tq_codec_get_params(c, &got));
          CHECK(got.simd == levels[li]);
          uint8_t *dst = li == 0 ? ref_rec : rec;
          float *dout = li == 0 ? ref_out : out, *drot = li == 0 ? ref_rot : yrot;
          CHECK_OK(tq_codec_encode_f32(c, x, n, dst, n * rs));
          CHECK_OK(tq_codec_decode_f32(c, ref_rec, n * rs, n, dout));
          CHECK_OK(tq_codec_rotate(c, x + 4 * d, drot));
          if (li > 0) {
            CHECKF(memcmp(rec, ref_rec, n * rs) == 0, "d=%u b=%u %s: %s bytes differ from %s",
                   d, b, rot_name(rot), tq_simd_name(levels[li]), tq_simd_name(levels[0]));
            CHECKF(memcmp(out, ref_out, n * d * sizeof *out) == 0,
                   "d=%u b=%u %s: %s decoded floats differ from %s", d, b, rot_name(rot),
                   tq_simd_name(levels[li]), tq_simd_name(levels[0]));
            CHECKF(memcmp(yrot, ref_rot, d * sizeof *yrot) == 0,
                   "d=%u b=%u %s: %s rotate differs from %s", d, b, rot_name(rot),
                   tq_simd_name(levels[li]), tq_simd_name(levels[0]));
          }
          tq_codec_free(c);
        }
        free(x), free(ref_rec), free(rec), free(ref_out), free(out), free(ref_rot), free(yrot);
      }
}

/* Golden records. They pin TQ_CODE_FORMAT_VERSION 1 (docs/FORMAT.md): the
 * bytes for these parameters and inputs must change only together with a
 * format version bump (then print the new bytes with TQ_TEST_VERBOSE=1 and
 * paste them here). Seed TQ_DEFAULT_KEY_SEED throughout.
 * - dim 8, 4 bits, Haar, f16 norm, x_j = j - 3.5 (norm sqrt(42)): the
 *   solver's codebook (8 is not tabulated), nibble packing;
 * - dim 8, 3 bits, Hadamard, f32 norm, same x: 3-bit stream packing;
 * - dim 128, 4 bits, Haar, f16 norm (the default key codec), x_j = (37 j mod
 *   17) - 8: the built-in table. */
static const uint8_t golden_d8_haar_b4_f16[2 + 4] = {0x7B, 0x46, 0x67, 0xD9, 0xF7, 0x97};
static const uint8_t golden_d8_hadamard_b3_f32[4 + 3] = {0x3A, 0x62, 0xCF, 0x40,
                                                         0x1B, 0x0A, 0x71};
static const uint8_t golden_d128_haar_b4_f16[2 + 64] = {
    0xF0, 0x52, /* f16 norm 0x52F0 = 55.5 */
    0x87, 0xC8, 0x7A, 0x95, 0x6F, 0x6B, 0x45, 0xB7, 0xC7, 0x98, 0xC4, 0x46,
    0x19, 0x49, 0x81, 0x54, 0x96, 0x57, 0x99, 0xEB, 0xD3, 0x73, 0x73, 0xB8,
    0xB3, 0x67, 0x97, 0x79, 0x49, 0xAB, 0x67, 0x72, 0x69, 0xBB, 0x74, 0x79,
    0x6A, 0xB8, 0x76, 0xC5, 0xA8, 0x2A, 0x2C, 0xC5, 0x65, 0x42, 0xB8, 0xC0,
    0x46, 0xA9, 0xDA, 0x55, 0xE8, 0xB9, 0x48, 0x60, 0x42, 0x65, 0x17, 0x59,
    0x2D, 0xBC, 0x6C, 0x3B};

static void test_golden_bytes(void) {
  static const struct {
    const char *name;
    uint32_t dim, bits;
    tq_rotation rot;
    tq_norm_format norm;
    const uint8_t *bytes;
    size_t size;
  } cases[] = {
      {"golden_d8_haar_b4_f16", 8, 4, TQ_ROTATION_HAAR, TQ_NORM_F16, golden_d8_haar_b4_f16,
       sizeof golden_d8_haar_b4_f16},
      {"golden_d8_hadamard_b3_f32", 8, 3, TQ_ROTATION_HADAMARD, TQ_NORM_F32,
       golden_d8_hadamard_b3_f32, sizeof golden_d8_hadamard_b3_f32},
      {"golden_d128_haar_b4_f16", 128, 4, TQ_ROTATION_HAAR, TQ_NORM_F16,
       golden_d128_haar_b4_f16, sizeof golden_d128_haar_b4_f16},
  };
  CHECK(TQ_CODE_FORMAT_VERSION == 1);
  for (size_t g = 0; g < sizeof cases / sizeof cases[0]; g++) {
    uint32_t d = cases[g].dim;
    float x[128];
    for (uint32_t j = 0; j < d; j++)
      x[j] = d == 8 ? (float)j - 3.5f : (float)((int)((37u * j) % 17u) - 8);
    tq_codec_params p = params_of(d, cases[g].bits, cases[g].rot);
    p.norm_format = cases[g].norm;
    p.seed = TQ_DEFAULT_KEY_SEED;
    tq_codec *c = make_codec(&p);
    if (!c) continue;
    uint8_t rec[2 + 64];
    CHECK(tq_codec_record_size(c) == cases[g].size);
    CHECK_OK(tq_codec_encode_f32(c, x, 1, rec, sizeof rec));
    int same = memcmp(rec, cases[g].bytes, cases[g].size) == 0;
    if (!same || verbose) {
      FILE *f = same ? stdout : stderr;
      fprintf(f, "  %s (%zu bytes): {", cases[g].name, cases[g].size);
      for (size_t i = 0; i < cases[g].size; i++)
        fprintf(f, "0x%02X%s", rec[i], i + 1 < cases[g].size ? ", " : "}\n");
    }
    CHECKF(same, "%s differs: the code format changed without a version bump", cases[g].name);
    tq_codec_free(c);
  }
}

/* Concurrent use of one codec (tqai.h: immutable once created): four
 * threads encoding and decoding the same data give the serial bytes. */
typedef struct {
  const tq_codec *c;
  const float *x;
  size_t n;
  uint8_t *rec;
  float *out;
  tq_status st;
} worker_job;

static void *worker(void *arg) {
  worker_job *j = arg;
  size_t bytes = j->n * tq_codec_record_size(j->c);
  for (int rep = 0; rep < 4 && j->st == TQ_OK; rep++) {
    j->st = tq_codec_encode_f32(j->c, j->x, j->n, j->rec, bytes);
    if (j->st == TQ_OK) j->st = tq_codec_decode_f32(j->c, j->rec, bytes, j->n, j->out);
  }
  return NULL;
}

static void test_concurrent_use(void) {
  const uint32_t d = 128;
  const size_t n = 200;
  for (int ri = 0; ri < 2; ri++) {
    tq_codec_params p = params_of(d, 3, both_rotations[ri]);
    tq_codec *c = make_codec(&p);
    if (!c) continue;
    size_t rs = tq_codec_record_size(c);
    tq_test_rng r = {17};
    float *x = gauss_vectors(&r, n, d, 1.0);
    uint8_t *serial = xmalloc(n * rs);
    float *serial_out = xmalloc(n * d * sizeof *serial_out);
    CHECK_OK(tq_codec_encode_f32(c, x, n, serial, n * rs));
    CHECK_OK(tq_codec_decode_f32(c, serial, n * rs, n, serial_out));
    pthread_t th[4];
    worker_job jobs[4];
    int started[4];
    for (int t = 0; t < 4; t++) {
      jobs[t].c = c, jobs[t].x = x, jobs[t].n = n, jobs[t].st = TQ_OK;
      jobs[t].rec = xmalloc(n * rs);
      jobs[t].out = xmalloc(n * d * sizeof(float));
      started[t] = pthread_create(&th[t], NULL, worker, &jobs[t]) == 0;
      CHECK(started[t]);
    }
    for (int t = 0; t < 4; t++) {
      if (started[t]) pthread_join(th[t], NULL);
      CHECK_OK(jobs[t].st);
      CHECK(memcmp(jobs[t].rec, serial, n * rs) == 0);
      CHECK(memcmp(jobs[t].out, serial_out, n * d * sizeof(float)) == 0);
      free(jobs[t].rec), free(jobs[t].out);
    }
    free(x), free(serial), free(serial_out);
    tq_codec_free(c);
  }
}

/* ------------------------------------------------------------------------ */
/* 6. f16 / bf16 entry points                                                */
/* ------------------------------------------------------------------------ */

/* encode_f16(h) gives the records of encode_f32 on the widened floats (and
 * the same for bf16); decode_f16/decode_bf16 give exactly the rounding of
 * decode_f32's output, element by element. Dims with vector tails. */
static void test_half_precision_paths(void) {
  static const uint32_t dims[] = {3, 17, 64, 100};
  const size_t n = 40;
  for (size_t di = 0; di < 4; di++)
    for (int ri = 0; ri < 2; ri++) {
      uint32_t d = dims[di];
      if (both_rotations[ri] == TQ_ROTATION_HADAMARD && !is_pow2(d)) continue;
      tq_codec_params p = params_of(d, 5, both_rotations[ri]);
      tq_codec *c = make_codec(&p);
      if (!c) continue;
      size_t rs = tq_codec_record_size(c);
      tq_test_rng r = {d * 3u};
      float *x = gauss_vectors(&r, n, d, 2.0);
      for (uint32_t j = 0; j < d; j++) x[j] *= 1e-4f; /* f16 subnormal elements */
      uint16_t *h = xmalloc(n * d * sizeof *h), *hb = xmalloc(n * d * sizeof *hb);
      float *xf = xmalloc(n * d * sizeof *xf), *xbf = xmalloc(n * d * sizeof *xbf);
      for (size_t i = 0; i < n * d; i++) {
        h[i] = tq_f32_to_f16(x[i]);
        hb[i] = tq_f32_to_bf16(x[i]);
        xf[i] = tq_f16_to_f32(h[i]);
        xbf[i] = tq_bf16_to_f32(hb[i]);
      }
      uint8_t *r16 = xmalloc(n * rs), *r32 = xmalloc(n * rs);
      CHECK_OK(tq_codec_encode_f16(c, h, n, r16, n * rs));
      CHECK_OK(tq_codec_encode_f32(c, xf, n, r32, n * rs));
      CHECKF(memcmp(r16, r32, n * rs) == 0, "d=%u %s: encode_f16 != encode_f32(f16 values)", d,
             rot_name(p.rotation));
      CHECK_OK(tq_codec_encode_bf16(c, hb, n, r16, n * rs));
      CHECK_OK(tq_codec_encode_f32(c, xbf, n, r32, n * rs));
      CHECKF(memcmp(r16, r32, n * rs) == 0, "d=%u %s: encode_bf16 != encode_f32(bf16 values)",
             d, rot_name(p.rotation));
      /* decode: r32 holds the bf16-encoded records, any records will do */
      float *out = xmalloc(n * d * sizeof *out);
      uint16_t *o16 = xmalloc(n * d * sizeof *o16), *obf = xmalloc(n * d * sizeof *obf);
      CHECK_OK(tq_codec_decode_f32(c, r32, n * rs, n, out));
      CHECK_OK(tq_codec_decode_f16(c, r32, n * rs, n, o16));
      CHECK_OK(tq_codec_decode_bf16(c, r32, n * rs, n, obf));
      size_t bad16 = 0, badbf = 0;
      for (size_t i = 0; i < n * d; i++) {
        bad16 += o16[i] != tq_f32_to_f16(out[i]);
        badbf += obf[i] != tq_f32_to_bf16(out[i]);
      }
      CHECKF(bad16 == 0, "d=%u %s: decode_f16 differs from rounding decode_f32 at %zu values", d,
             rot_name(p.rotation), bad16);
      CHECKF(badbf == 0, "d=%u %s: decode_bf16 differs from rounding decode_f32 at %zu values",
             d, rot_name(p.rotation), badbf);
      free(x), free(h), free(hb), free(xf), free(xbf), free(r16), free(r32), free(out);
      free(o16), free(obf);
      tq_codec_free(c);
    }
}

/* ------------------------------------------------------------------------ */
/* 7. Error paths of every public codec function                             */
/* ------------------------------------------------------------------------ */

/* NULL arguments -> TQ_ERR_INVALID_ARGUMENT everywhere (and *out NULL after a
 * failed create); tq_codec_free(NULL) is a no-op; tq_codec_record_size(NULL)
 * is 0; tq_codec_centroids with too small a count -> BUFFER_TOO_SMALL and
 * with enough -> the ascending codebook of tq_codebook_get. */
static void test_null_arguments_and_queries(void) {
  tq_codec_params p = tq_codec_params_default(64, 4);
  tq_codec *c = (tq_codec *)&p;
  CHECK_STATUS(tq_codec_create(NULL, &c), TQ_ERR_INVALID_ARGUMENT);
  CHECK(c == NULL);
  CHECK_STATUS(tq_codec_create(&p, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_create(NULL, NULL), TQ_ERR_INVALID_ARGUMENT);
  tq_codec_free(NULL);
  CHECK(tq_codec_record_size(NULL) == 0);
  c = make_codec(&p);
  if (!c) return;
  const size_t rs = tq_codec_record_size(c);
  float x[64] = {1.0f}, y[64];
  uint16_t h[64] = {0};
  uint8_t rec[2 + 32];
  CHECK_OK(tq_codec_encode_f32(c, x, 1, rec, rs));

  CHECK_STATUS(tq_codec_encode_f32(NULL, x, 1, rec, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_f32(c, NULL, 1, rec, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_f32(c, x, 1, NULL, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_f16(NULL, h, 1, rec, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_f16(c, NULL, 1, rec, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_f16(c, h, 1, NULL, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_bf16(NULL, h, 1, rec, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_bf16(c, NULL, 1, rec, rs), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_encode_bf16(c, h, 1, NULL, rs), TQ_ERR_INVALID_ARGUMENT);

  CHECK_STATUS(tq_codec_decode_f32(NULL, rec, rs, 1, y), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_f32(c, NULL, rs, 1, y), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_f32(c, rec, rs, 1, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_f16(NULL, rec, rs, 1, h), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_f16(c, NULL, rs, 1, h), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_f16(c, rec, rs, 1, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_bf16(NULL, rec, rs, 1, h), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_bf16(c, NULL, rs, 1, h), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_decode_bf16(c, rec, rs, 1, NULL), TQ_ERR_INVALID_ARGUMENT);

  CHECK_STATUS(tq_codec_rotate(NULL, x, y), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_rotate(c, NULL, y), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_rotate(c, x, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_unrotate(NULL, x, y), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_unrotate(c, NULL, y), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_unrotate(c, x, NULL), TQ_ERR_INVALID_ARGUMENT);

  tq_codec_params got;
  CHECK_STATUS(tq_codec_get_params(NULL, &got), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_get_params(c, NULL), TQ_ERR_INVALID_ARGUMENT);

  float cent[256], want[16];
  CHECK_STATUS(tq_codec_centroids(NULL, cent, 16), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_centroids(c, NULL, 16), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_codec_centroids(c, cent, 15), TQ_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(tq_codec_centroids(c, cent, 0), TQ_ERR_BUFFER_TOO_SMALL);
  cent[16] = 42.0f;
  CHECK_OK(tq_codec_centroids(c, cent, 16));
  CHECK(cent[16] == 42.0f); /* writes exactly 2^bits */
  CHECK_OK(tq_codec_centroids(c, cent, 256));
  CHECK_OK(tq_codebook_get(64, 4, TQ_CODEBOOK_EXACT, want));
  CHECK(memcmp(cent, want, sizeof want) == 0);
  for (int i = 0; i + 1 < 16; i++) CHECK(cent[i] < cent[i + 1]);
  tq_codec_free(c);

  /* Gaussian codebook and 8 bits: centroids are the Gaussian kind's. */
  p = tq_codec_params_default(100, 8);
  p.codebook = TQ_CODEBOOK_GAUSSIAN;
  c = make_codec(&p);
  if (c) {
    float want8[256];
    CHECK_STATUS(tq_codec_centroids(c, cent, 255), TQ_ERR_BUFFER_TOO_SMALL);
    CHECK_OK(tq_codec_centroids(c, cent, 256));
    CHECK_OK(tq_codebook_get(100, 8, TQ_CODEBOOK_GAUSSIAN, want8));
    CHECK(memcmp(cent, want8, sizeof want8) == 0);
  }
  tq_codec_free(c);
}

/* Enum values outside their types -> TQ_ERR_INVALID_ARGUMENT with *out set
 * to NULL; tq_record_size's edges; the documented defaults. */
static void test_invalid_enums_record_size_defaults(void) {
  tq_codec *c;
  for (int field = 0; field < 4; field++)
    for (int v = 0; v < 3; v++) {
      static const int bad_values[] = {7, -1, 1000};
      tq_codec_params p = tq_codec_params_default(64, 4);
      if (field == 0) p.rotation = (tq_rotation)bad_values[v];
      if (field == 1) p.codebook = (tq_codebook_kind)bad_values[v];
      if (field == 2) p.norm_format = (tq_norm_format)bad_values[v];
      if (field == 3) p.simd = (tq_simd_level)bad_values[v];
      c = (tq_codec *)&p;
      CHECKF(tq_codec_create(&p, &c) == TQ_ERR_INVALID_ARGUMENT,
             "field %d value %d not rejected as invalid", field, bad_values[v]);
      CHECK(c == NULL);
    }

  CHECK(tq_record_size(2, 1, TQ_NORM_F16) == 3);
  CHECK(tq_record_size(3, 3, TQ_NORM_F16) == 4);
  CHECK(tq_record_size(3, 3, TQ_NORM_F32) == 6);
  CHECK(tq_record_size(128, 4, TQ_NORM_F16) == 66);
  CHECK(tq_record_size(128, 2, TQ_NORM_F16) == 34);
  CHECK(tq_record_size(100, 7, TQ_NORM_F32) == 4 + 88);
  CHECK(tq_record_size(2048, 8, TQ_NORM_F32) == 4 + 2048);
  CHECK(tq_record_size(2047, 7, TQ_NORM_F16) == 2 + 1792);
  CHECK(tq_record_size(0, 4, TQ_NORM_F16) == 0);
  CHECK(tq_record_size(1, 4, TQ_NORM_F16) == 0);
  CHECK(tq_record_size(2049, 4, TQ_NORM_F16) == 0);
  CHECK(tq_record_size(UINT32_MAX, 8, TQ_NORM_F32) == 0);
  CHECK(tq_record_size(64, 0, TQ_NORM_F16) == 0);
  CHECK(tq_record_size(64, 9, TQ_NORM_F16) == 0);
  CHECK(tq_record_size(64, 4, (tq_norm_format)2) == 0);
  CHECK(tq_record_size(64, 4, (tq_norm_format)-1) == 0);

  tq_codec_params p = tq_codec_params_default(96, 3);
  CHECK(p.dim == 96 && p.bits == 3 && p.rotation == TQ_ROTATION_HAAR);
  CHECK(p.codebook == TQ_CODEBOOK_EXACT && p.norm_format == TQ_NORM_F16);
  CHECK(p.simd == TQ_SIMD_AUTO && p.seed == TQ_DEFAULT_KEY_SEED);
  tq_kv_params kv = tq_kv_params_default(128);
  CHECK(kv.key.dim == 128 && kv.key.bits == 4 && kv.key.seed == TQ_DEFAULT_KEY_SEED);
  CHECK(kv.value.dim == 128 && kv.value.bits == 2 && kv.value.seed == TQ_DEFAULT_VALUE_SEED);
  CHECK(kv.value.rotation == TQ_ROTATION_HAAR && kv.value.norm_format == TQ_NORM_F16);
}

/* TQ_RUN, and in verbose mode the time each test took. */
#define RUN(fn)                                    \
  do {                                             \
    double t0_ = now_s();                          \
    TQ_RUN(fn);                                    \
    INFO("[%s: %.2f s]\n", #fn, now_s() - t0_);    \
  } while (0)

int main(void) {
  const char *v = getenv("TQ_TEST_VERBOSE");
  verbose = v && *v && strcmp(v, "0") != 0;
  /* 1. distortion */
  RUN(test_distortion_within_paper_bounds);
  RUN(test_nmse_matches_solver_and_doc);
  /* 2. attention */
  RUN(test_attention_on_decoded_vectors);
  RUN(test_inner_product_error_falls_with_bits);
  /* 3. rotation statistics */
  RUN(test_rotated_coordinates_mean0_var1overd);
  RUN(test_rotation_varies_with_seed);
  RUN(test_rotation_orthogonal);
  RUN(test_rotate_unrotate_inverse_and_in_place);
  /* 4. edge cases */
  RUN(test_zero_vector);
  RUN(test_single_nonzero_coordinate);
  RUN(test_scale_invariance);
  RUN(test_norm_range);
  RUN(test_subnormal_f16_norm);
  RUN(test_non_finite_input);
  RUN(test_create_unsupported);
  RUN(test_decode_corrupt_norm);
  RUN(test_decode_finite_near_format_limits);
  RUN(test_buffer_sizes_and_counts);
  /* 5. determinism */
  RUN(test_same_seed_same_bytes);
  RUN(test_identical_across_simd_levels);
  RUN(test_golden_bytes);
  RUN(test_concurrent_use);
  /* 6. f16 / bf16 */
  RUN(test_half_precision_paths);
  /* 7. error paths */
  RUN(test_null_arguments_and_queries);
  RUN(test_invalid_enums_record_size_defaults);
  return tq_test_summary("test_codec");
}
