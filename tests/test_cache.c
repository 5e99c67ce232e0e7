/*
 * test_cache.c - the compressed KV cache: memory, attention on codes against
 * attention over the decoded vectors, sinks, window, centering, fractional
 * rates, per-layer policy, truncation and errors.
 */
#include <math.h>
#include <stdint.h>

#include "test.h"
#include "tqai.h"

/* ------------------------------------------------------------------------ */
/* A reference model of what the cache stores                                */
/* ------------------------------------------------------------------------ */

static float f16r(float x) { return tq_f16_to_f32(tq_f32_to_f16(x)); }

/* Encodes then decodes x (dim floats) with a codec of these parameters. */
static void roundtrip(uint32_t dim, uint32_t bits, uint64_t seed, tq_rotation rot, const float *x,
                      float *y) {
  tq_codec_params p = tq_codec_params_default(dim, bits);
  p.seed = seed;
  p.rotation = rot;
  tq_codec *c = NULL;
  CHECK_OK(tq_codec_create(&p, &c));
  uint8_t rec[4 + TQ_MAX_DIM];
  CHECK_OK(tq_codec_encode_f32(c, x, 1, rec, sizeof rec));
  CHECK_OK(tq_codec_decode_f32(c, rec, sizeof rec, 1, y));
  tq_codec_free(c);
}

/* The vector a cache of params p holds for x after coding at `rate` bits
 * (fractional rates: channels in `perm` order, first half one bit more). */
static void effective(const tq_cache_params *p, float rate, uint64_t seed, const float *mean,
                      const uint16_t *perm, const float *x, float *out) {
  uint32_t d = p->head_dim;
  float t[TQ_MAX_DIM] = {0}, u[TQ_MAX_DIM] = {0}, y[TQ_MAX_DIM];
  for (uint32_t j = 0; j < d; j++) t[j] = x[j] - (mean ? mean[j] : 0.0f);
  if (rate != floorf(rate)) {
    for (uint32_t j = 0; j < d; j++) u[j] = t[perm[j]];
    roundtrip(d / 2, (uint32_t)rate + 1, seed, p->rotation, u, y);
    roundtrip(d / 2, (uint32_t)rate, seed, p->rotation, u + d / 2, y + d / 2);
    for (uint32_t j = 0; j < d; j++) out[perm[j]] = y[j];
  } else {
    roundtrip(d, (uint32_t)rate, seed, p->rotation, t, out);
  }
  if (mean)
    for (uint32_t j = 0; j < d; j++) out[j] += mean[j];
}

/* Exact attention in double: out (n_q, Hq, d) for queries at the last n_q
 * positions of keys/values (T, H, d). */
static void attention_ref(const float *q, const float *k, const float *v, uint32_t T, uint32_t n_q,
                          uint32_t Hq, uint32_t H, uint32_t d, float scale, double *out) {
  uint32_t G = Hq / H;
  double *w = malloc(T * sizeof *w);
  for (uint32_t i = 0; i < n_q; i++) {
    uint32_t pos = T - n_q + i;
    for (uint32_t hq = 0; hq < Hq; hq++) {
      uint32_t h = hq / G;
      const float *qv = q + ((size_t)i * Hq + hq) * d;
      double mx = -INFINITY, sum = 0.0;
      for (uint32_t t = 0; t <= pos; t++) {
        const float *kv = k + ((size_t)t * H + h) * d;
        double s = 0.0;
        for (uint32_t j = 0; j < d; j++) s += (double)qv[j] * kv[j];
        w[t] = s * scale;
        if (w[t] > mx) mx = w[t];
      }
      for (uint32_t t = 0; t <= pos; t++) sum += (w[t] = exp(w[t] - mx));
      double *o = out + ((size_t)i * Hq + hq) * d;
      for (uint32_t j = 0; j < d; j++) o[j] = 0.0;
      for (uint32_t t = 0; t <= pos; t++) {
        const float *vv = v + ((size_t)t * H + h) * d;
        for (uint32_t j = 0; j < d; j++) o[j] += w[t] / sum * vv[j];
      }
    }
  }
  free(w);
}

/* Largest |a - b| over the largest |b|. */
static double rel_err(const float *a, const double *b, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    if (fabs(a[i] - b[i]) > num) num = fabs(a[i] - b[i]);
    if (fabs(b[i]) > den) den = fabs(b[i]);
  }
  return num / (den > 0 ? den : 1.0);
}

static void fill(tq_test_rng *r, float *x, size_t n, float scale, const float *offset, uint32_t d) {
  for (size_t i = 0; i < n; i++) x[i] = (float)tq_test_gauss(r) * scale + (offset ? offset[i % d] : 0.0f);
}

/* The channel order a lane uses for a fractional rate: RMS over the
 * calibration rows (fp16), largest first, ties by index. */
static void channel_perm(const float *rows, uint32_t n, uint32_t H, uint32_t h, uint32_t d,
                         const float *mean, uint16_t *perm) {
  double ms[TQ_MAX_DIM];
  for (uint32_t j = 0; j < d; j++) {
    ms[j] = 0.0;
    for (uint32_t t = 0; t < n; t++) {
      double x = rows[((size_t)t * H + h) * d + j] - (mean ? mean[j] : 0.0f);
      ms[j] += x * x;
    }
    perm[j] = (uint16_t)j;
  }
  for (uint32_t i = 1; i < d; i++) {
    uint16_t cur = perm[i];
    uint32_t k = i;
    while (k > 0 && ms[perm[k - 1]] < ms[cur]) {
      perm[k] = perm[k - 1];
      k--;
    }
    perm[k] = cur;
  }
}

/* Builds the reference keys/values (T, H, d) a cache of params p holds after
 * receiving k, v (T, H, d) in one layer of rate kb / vb. */
static void cache_model(const tq_cache_params *p, float kb, float vb, const float *k, const float *v,
                        uint32_t T, float *ek, float *ev) {
  uint32_t H = p->n_kv_heads, d = p->head_dim;
  size_t n = (size_t)T * H * d;
  if (p->mode == TQ_CACHE_F16) {
    for (size_t i = 0; i < n; i++) ek[i] = f16r(k[i]), ev[i] = f16r(v[i]);
    return;
  }
  if (p->mode == TQ_CACHE_F32) {
    memcpy(ek, k, n * sizeof *ek);
    memcpy(ev, v, n * sizeof *ev);
    return;
  }
  uint32_t S = p->sink_tokens, W = p->window_tokens, C = p->calib_tokens;
  int calib = p->center || kb != floorf(kb) || vb != floorf(vb);
  /* Tokens that pass through fp16 storage before coding are rounded. */
  float *kr = malloc(n * sizeof *kr), *vr = malloc(n * sizeof *vr);
  for (size_t i = 0; i < n; i++) {
    kr[i] = (W > 0 || calib) ? f16r(k[i]) : k[i];
    vr[i] = (W > 0 || calib) ? f16r(v[i]) : v[i];
  }
  uint32_t coded_end = T > S + W ? T - W : S; /* positions [S, coded_end) left the window */
  int calibrated = calib && coded_end >= S + C;
  for (uint32_t h = 0; h < H; h++) {
    float km[TQ_MAX_DIM] = {0}, vm[TQ_MAX_DIM] = {0};
    uint16_t kp[TQ_MAX_DIM], vp[TQ_MAX_DIM];
    if (calibrated && p->center) {
      for (uint32_t j = 0; j < d; j++) {
        double sk = 0, sv = 0;
        for (uint32_t t = S; t < S + C; t++) sk += kr[((size_t)t * H + h) * d + j], sv += vr[((size_t)t * H + h) * d + j];
        km[j] = (float)(sk / C);
        vm[j] = (float)(sv / C);
      }
    }
    if (calibrated) {
      channel_perm(kr + (size_t)S * H * d, C, H, h, d, p->center ? km : NULL, kp);
      channel_perm(vr + (size_t)S * H * d, C, H, h, d, p->center ? vm : NULL, vp);
    }
    for (uint32_t t = 0; t < T; t++) {
      size_t at = ((size_t)t * H + h) * d;
      int coded = t >= S && t < coded_end && (!calib || calibrated);
      if (!coded) {
        for (uint32_t j = 0; j < d; j++) ek[at + j] = f16r(k[at + j]), ev[at + j] = f16r(v[at + j]);
        continue;
      }
      effective(p, kb, p->key_seed, p->center ? km : NULL, kp, kr + at, ek + at);
      effective(p, vb, p->value_seed, p->center ? vm : NULL, vp, vr + at, ev + at);
    }
  }
  free(kr);
  free(vr);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

/* Compares cache attention with exact attention over the modelled contents,
 * for decode and prefill, at every SIMD level and several thread counts;
 * thread counts must not change a single bit. */
static void check_attention(const tq_cache_params *base, uint32_t T, uint32_t Hq, const char *what) {
  uint32_t H = base->n_kv_heads, d = base->head_dim;
  tq_test_rng r = {T * 31u + d};
  size_t n = (size_t)T * H * d;
  float *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
  float *ek = malloc(n * sizeof *ek), *ev = malloc(n * sizeof *ev);
  float off[TQ_MAX_DIM];
  for (uint32_t j = 0; j < d; j++) off[j] = (float)tq_test_gauss(&r) * 2.0f;
  fill(&r, k, n, 1.0f, base->center ? off : NULL, d);
  fill(&r, v, n, 1.0f, base->center ? off : NULL, d);
  cache_model(base, base->key_bits, base->value_bits, k, v, T, ek, ev);
  const uint32_t nq_list[2] = {1, 5};
  for (int qi = 0; qi < 2; qi++) {
    uint32_t n_q = nq_list[qi];
    float *q = malloc((size_t)n_q * Hq * d * sizeof *q);
    float *out = malloc((size_t)n_q * Hq * d * sizeof *out);
    float *first = malloc((size_t)n_q * Hq * d * sizeof *first);
    double *want = malloc((size_t)n_q * Hq * d * sizeof *want);
    fill(&r, q, (size_t)n_q * Hq * d, 1.0f, NULL, d);
    float scale = 1.0f / sqrtf((float)d);
    attention_ref(q, ek, ev, T, n_q, Hq, H, d, scale, want);
    for (int level = TQ_SIMD_SCALAR; level <= TQ_SIMD_AVX512; level++) {
      if (!tq_simd_supported((tq_simd_level)level)) continue;
      tq_cache_params p = *base;
      p.simd = (tq_simd_level)level;
      tq_cache *c = NULL;
      CHECK_OK(tq_cache_create(&p, &c));
      /* Arrive in uneven pieces, as an engine's prefill and decode do. */
      for (uint32_t t = 0; t < T;) {
        uint32_t len = t == 0 ? (T > 37 ? 37 : T) : (T - t > 100 ? 100 : T - t);
        CHECK_OK(tq_cache_append(c, 0, k + (size_t)t * H * d, v + (size_t)t * H * d, len));
        t += len;
      }
      CHECK(tq_cache_tokens(c, 0) == T);
      const uint32_t threads[3] = {1, 2, 3};
      for (int ti = 0; ti < 3; ti++) {
        tq_pool *pool = NULL;
        CHECK_OK(tq_pool_create(threads[ti], &pool));
        CHECK_OK(tq_cache_attention(c, 0, q, n_q, Hq, scale, out, pool));
        double e = rel_err(out, want, (size_t)n_q * Hq * d);
        CHECKF(e <= 1e-5, "%s: level %s, %u threads, n_q %u: relative error %.3g against decoded attention",
               what, tq_simd_name((tq_simd_level)level), threads[ti], n_q, e);
        if (ti == 0) memcpy(first, out, (size_t)n_q * Hq * d * sizeof *out);
        else CHECKF(memcmp(first, out, (size_t)n_q * Hq * d * sizeof *out) == 0,
                    "%s: %u threads changed the result", what, threads[ti]);
        tq_pool_free(pool);
      }
      tq_cache_free(c);
    }
    free(q), free(out), free(first), free(want);
  }
  free(k), free(v), free(ek), free(ev);
}

static void test_attention_plain(void) {
  tq_cache_params p = tq_cache_params_default(1, 2, 64);
  p.block_tokens = 64; /* decode segments of 512 tokens: several of them */
  check_attention(&p, 1500, 8, "K4/V2");
  p.key_bits = 3, p.value_bits = 2;
  check_attention(&p, 700, 2, "K3/V2 no GQA");
  p.key_bits = 8, p.value_bits = 8;
  check_attention(&p, 300, 6, "K8/V8");
  p.key_bits = 1, p.value_bits = 5;
  p.head_dim = 37;
  check_attention(&p, 300, 4, "K1/V5 d=37");
}

static void test_attention_levers(void) {
  tq_cache_params p = tq_cache_params_default(1, 2, 64);
  p.block_tokens = 32;
  p.key_bits = 3.5f, p.value_bits = 2.5f;
  p.center = 1, p.sink_tokens = 3, p.window_tokens = 10, p.calib_tokens = 20;
  check_attention(&p, 900, 4, "K3.5/V2.5 centered, sinks, window");
  p.center = 0, p.rotation = TQ_ROTATION_HADAMARD;
  check_attention(&p, 200, 4, "K3.5/V2.5 Hadamard");
  /* Fewer tokens than sinks + window + calibration: nothing coded yet. */
  p.center = 1;
  check_attention(&p, 25, 4, "uncalibrated");
}

static void test_attention_f16(void) {
  tq_cache_params p = tq_cache_params_default(1, 3, 48);
  p.mode = TQ_CACHE_F16;
  p.block_tokens = 16;
  check_attention(&p, 400, 6, "fp16 mode");
  p.mode = TQ_CACHE_F32;
  check_attention(&p, 300, 3, "f32 mode");
}

/* Bytes counted by the cache's allocator at 32k tokens, against the theory:
 * K4/V2 at d=128 is 100 bytes per token per KV head; fp16 is 512. */
static void test_memory(void) {
  const uint32_t H = 8, d = 128, T = 32768, step = 1024;
  tq_test_rng r = {7};
  float *k = malloc((size_t)step * H * d * sizeof *k), *v = malloc((size_t)step * H * d * sizeof *v);
  fill(&r, k, (size_t)step * H * d, 1.0f, NULL, d);
  fill(&r, v, (size_t)step * H * d, 1.0f, NULL, d);
  size_t bytes[2];
  for (int mode = 0; mode <= 1; mode++) {
    tq_cache_params p = tq_cache_params_default(1, H, d);
    p.mode = mode ? TQ_CACHE_TURBOQUANT : TQ_CACHE_F16;
    p.rotation = TQ_ROTATION_HADAMARD; /* same bytes per token, faster to fill */
    tq_cache *c = NULL;
    CHECK_OK(tq_cache_create(&p, &c));
    size_t empty = tq_cache_bytes(c);
    for (uint32_t t = 0; t < T; t += step) CHECK_OK(tq_cache_append(c, 0, k, v, step));
    bytes[mode] = tq_cache_bytes(c);
    double theory = (double)T * H * (mode ? 100.0 : 512.0);
    double ratio = (double)bytes[mode] / theory;
    CHECKF(ratio >= 1.0 && ratio <= 1.02, "%s: %zu bytes allocated, theory %.0f (ratio %.4f)",
           mode ? "K4/V2" : "fp16", bytes[mode], theory, ratio);
    CHECK_OK(tq_cache_reset(c));
    CHECK(tq_cache_bytes(c) == empty);
    CHECK(tq_cache_tokens(c, 0) == 0);
    tq_cache_free(c);
  }
  double x = (double)bytes[0] / bytes[1];
  CHECKF(x > 5.0 && x < 5.2, "fp16 / K4V2 bytes = %.3f, expected about 5.12", x);
  free(k), free(v);
}

/* Mean relative error of attention outputs against exact fp32 attention. */
static double attention_error(const tq_cache_params *p, const float *k, const float *v, uint32_t T,
                              const float *q, uint32_t Hq) {
  uint32_t H = p->n_kv_heads, d = p->head_dim;
  tq_cache *c = NULL;
  if (tq_cache_create(p, &c) != TQ_OK) return INFINITY;
  CHECK_OK(tq_cache_append(c, 0, k, v, T));
  float *out = malloc((size_t)Hq * d * sizeof *out);
  double *want = malloc((size_t)Hq * d * sizeof *want);
  CHECK_OK(tq_cache_attention(c, 0, q, 1, Hq, 1.0f / sqrtf((float)d), out, NULL));
  attention_ref(q, k, v, T, 1, Hq, H, d, 1.0f / sqrtf((float)d), want);
  double num = 0, den = 0;
  for (size_t i = 0; i < (size_t)Hq * d; i++) num += (out[i] - want[i]) * (out[i] - want[i]), den += want[i] * want[i];
  tq_cache_free(c);
  free(out), free(want);
  return sqrt(num / den);
}

/* Keys with a large shared component: centering removes it before coding,
 * so the relative error applies to what differs between tokens. */
static void test_centering_gain(void) {
  const uint32_t H = 1, d = 64, T = 512, Hq = 4;
  tq_test_rng r = {99};
  float off[64];
  for (uint32_t j = 0; j < d; j++) off[j] = (float)tq_test_gauss(&r) * 4.0f;
  float *k = malloc((size_t)T * d * sizeof *k), *v = malloc((size_t)T * d * sizeof *v);
  float q[4 * 64];
  fill(&r, k, (size_t)T * d, 1.0f, off, d);
  fill(&r, v, (size_t)T * d, 1.0f, off, d);
  fill(&r, q, (size_t)Hq * d, 1.0f, NULL, d);
  tq_cache_params p = tq_cache_params_default(1, H, d);
  p.key_bits = 3, p.value_bits = 3;
  double plain = attention_error(&p, k, v, T, q, Hq);
  p.center = 1;
  p.calib_tokens = 64;
  double centered = attention_error(&p, k, v, T, q, Hq);
  printf("centering on offset data: attention error %.4f without, %.4f with\n", plain, centered);
  CHECKF(centered < plain / 2, "centering did not help: %.4f vs %.4f", centered, plain);
  free(k), free(v);
}

/* 3.5 bits sits between 3 and 4; 2.5 between 2 and 3. */
static void test_fractional_order(void) {
  const uint32_t H = 1, d = 128, T = 400, Hq = 64;
  tq_test_rng r = {5};
  float *k = malloc((size_t)T * d * sizeof *k), *v = malloc((size_t)T * d * sizeof *v);
  float q[64 * 128];
  fill(&r, k, (size_t)T * d, 1.0f, NULL, d);
  fill(&r, v, (size_t)T * d, 1.0f, NULL, d);
  fill(&r, q, (size_t)Hq * d, 2.0f, NULL, d);
  const float rates[5] = {2.0f, 2.5f, 3.0f, 3.5f, 4.0f};
  double err[5];
  for (int i = 0; i < 5; i++) {
    tq_cache_params p = tq_cache_params_default(1, H, d);
    p.key_bits = 8;
    p.value_bits = rates[i];
    p.calib_tokens = 32;
    err[i] = attention_error(&p, k, v, T, q, Hq);
  }
  printf("value rate 2, 2.5, 3, 3.5, 4 bits: attention error %.4f %.4f %.4f %.4f %.4f\n", err[0], err[1],
         err[2], err[3], err[4]);
  for (int i = 1; i < 5; i++) CHECKF(err[i] < err[i - 1], "rate %.1f not better than %.1f", rates[i], rates[i - 1]);
  free(k), free(v);
}

/* Window and sinks: with every token inside them the cache is exact fp16. */
static void test_window_exact(void) {
  const uint32_t H = 2, d = 32, T = 40, Hq = 4;
  tq_test_rng r = {17};
  float *k = malloc((size_t)T * H * d * sizeof *k), *v = malloc((size_t)T * H * d * sizeof *v);
  float q[4 * 32], out[4 * 32];
  double want[4 * 32];
  fill(&r, k, (size_t)T * H * d, 1.0f, NULL, d);
  fill(&r, v, (size_t)T * H * d, 1.0f, NULL, d);
  fill(&r, q, (size_t)Hq * d, 1.0f, NULL, d);
  for (size_t i = 0; i < (size_t)T * H * d; i++) k[i] = f16r(k[i]), v[i] = f16r(v[i]);
  tq_cache_params p = tq_cache_params_default(1, H, d);
  p.key_bits = 1, p.value_bits = 1; /* coarse codes would show */
  p.sink_tokens = 8, p.window_tokens = 32;
  tq_cache *c = NULL;
  CHECK_OK(tq_cache_create(&p, &c));
  CHECK_OK(tq_cache_append(c, 0, k, v, T));
  CHECK_OK(tq_cache_attention(c, 0, q, 1, Hq, 0.2f, out, NULL));
  attention_ref(q, k, v, T, 1, Hq, H, d, 0.2f, want);
  CHECKF(rel_err(out, want, (size_t)Hq * d) < 1e-5, "window+sinks not exact: %.3g", rel_err(out, want, (size_t)Hq * d));
  /* One more token pushes the oldest window token into 1-bit codes. */
  float k1[2 * 32], v1[2 * 32];
  fill(&r, k1, 2 * 32, 1.0f, NULL, d);
  fill(&r, v1, 2 * 32, 1.0f, NULL, d);
  size_t before = tq_cache_bytes(c);
  CHECK_OK(tq_cache_append(c, 0, k1, v1, 1));
  CHECK(tq_cache_tokens(c, 0) == T + 1);
  CHECK(tq_cache_bytes(c) > before); /* the first compressed block */
  tq_cache_free(c);
  free(k), free(v);
}

/* More bits on the first and last layers: those layers' blocks are larger. */
static void test_layer_policy(void) {
  const uint32_t L = 4, H = 1, d = 64, T = 256;
  tq_test_rng r = {3};
  float *k = malloc((size_t)T * d * sizeof *k), *v = malloc((size_t)T * d * sizeof *v);
  fill(&r, k, (size_t)T * d, 1.0f, NULL, d);
  fill(&r, v, (size_t)T * d, 1.0f, NULL, d);
  tq_cache_params p = tq_cache_params_default(L, H, d);
  p.edge_layers = 1, p.edge_key_bits = 8, p.edge_value_bits = 4;
  tq_cache *c = NULL;
  CHECK_OK(tq_cache_create(&p, &c));
  size_t per_layer[4];
  for (uint32_t l = 0; l < L; l++) {
    size_t before = tq_cache_bytes(c);
    CHECK_OK(tq_cache_append(c, l, k, v, T));
    per_layer[l] = tq_cache_bytes(c) - before;
  }
  /* K8/V4 records: 2+64 + 2+32 = 100 bytes; K4/V2: 34 + 18 = 52 bytes. */
  CHECKF(per_layer[0] == per_layer[3] && per_layer[1] == per_layer[2], "edge layers differ");
  CHECKF(per_layer[0] >= (size_t)T * 100 && per_layer[1] >= (size_t)T * 52 && per_layer[1] < (size_t)T * 60,
         "layer bytes %zu %zu", per_layer[0], per_layer[1]);
  tq_cache_free(c);
  /* Explicit per-layer rates win over the edge policy. */
  float kb[4] = {2, 3, 3.5f, 8}, vb[4] = {2, 2, 2, 2};
  p.layer_key_bits = kb, p.layer_value_bits = vb;
  CHECK_OK(tq_cache_create(&p, &c));
  size_t before = tq_cache_bytes(c);
  CHECK_OK(tq_cache_append(c, 0, k, v, T));
  size_t l0 = tq_cache_bytes(c) - before;
  CHECKF(l0 >= (size_t)T * (18 + 18) && l0 < (size_t)T * 40, "layer 0 at K2/V2: %zu bytes", l0);
  tq_cache_free(c);
  kb[1] = 0.5f;
  CHECK_STATUS(tq_cache_create(&p, &c), TQ_ERR_UNSUPPORTED_BITS);
  CHECK(c == NULL);
  free(k), free(v);
}

/* Truncating then appending gives the same state as appending the shorter
 * history directly. */
static void test_truncate(void) {
  const uint32_t H = 2, d = 32, T = 300, Hq = 4;
  tq_test_rng r = {23};
  float *k = malloc((size_t)T * H * d * sizeof *k), *v = malloc((size_t)T * H * d * sizeof *v);
  float *k2 = malloc((size_t)T * H * d * sizeof *k2), *v2 = malloc((size_t)T * H * d * sizeof *v2);
  float q[4 * 32], o1[4 * 32], o2[4 * 32];
  fill(&r, k, (size_t)T * H * d, 1.0f, NULL, d);
  fill(&r, v, (size_t)T * H * d, 1.0f, NULL, d);
  fill(&r, k2, (size_t)T * H * d, 1.0f, NULL, d);
  fill(&r, v2, (size_t)T * H * d, 1.0f, NULL, d);
  fill(&r, q, (size_t)Hq * d, 1.0f, NULL, d);
  const uint32_t cuts[4] = {250, 100, 20, 3};
  for (int ci = 0; ci < 4; ci++) {
    uint32_t cut = cuts[ci];
    tq_cache_params p = tq_cache_params_default(1, H, d);
    p.block_tokens = 16, p.sink_tokens = 4, p.window_tokens = 8;
    tq_cache *a = NULL, *b = NULL;
    CHECK_OK(tq_cache_create(&p, &a));
    CHECK_OK(tq_cache_create(&p, &b));
    CHECK_OK(tq_cache_append(a, 0, k, v, T));
    CHECK_OK(tq_cache_truncate(a, cut));
    CHECK(tq_cache_tokens(a, 0) == cut);
    CHECK_OK(tq_cache_append(a, 0, k2, v2, 50));
    CHECK_OK(tq_cache_append(b, 0, k, v, cut));
    CHECK_OK(tq_cache_append(b, 0, k2, v2, 50));
    CHECK_OK(tq_cache_attention(a, 0, q, 1, Hq, 0.3f, o1, NULL));
    CHECK_OK(tq_cache_attention(b, 0, q, 1, Hq, 0.3f, o2, NULL));
    /* The window holds fewer fp16 tokens right after a truncation, so only
     * cuts inside the first window give identical states; otherwise check
     * closeness. */
    double e = 0, m = 0;
    for (uint32_t i = 0; i < Hq * d; i++) e = fmax(e, fabs(o1[i] - o2[i])), m = fmax(m, fabs(o2[i]));
    CHECKF(e <= 0.05 * m, "cut %u: outputs differ by %.3g of %.3g", cut, e, m);
    if (cut <= p.sink_tokens) CHECKF(memcmp(o1, o2, sizeof o1) == 0, "cut %u: not identical", cut);
    CHECK(tq_cache_tokens(a, 0) == cut + 50);
    tq_cache_free(a);
    tq_cache_free(b);
  }
  free(k), free(v), free(k2), free(v2);
}

static void test_errors(void) {
  tq_cache_params p = tq_cache_params_default(2, 2, 16);
  p.max_tokens = 10;
  tq_cache *c = NULL;
  CHECK_STATUS(tq_cache_create(NULL, &c), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_create(&p, NULL), TQ_ERR_INVALID_ARGUMENT);
  tq_cache_params bad = p;
  bad.head_dim = 1;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_UNSUPPORTED_DIM);
  bad = p, bad.key_bits = 9;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_UNSUPPORTED_BITS);
  bad = p, bad.value_bits = 2.25f;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_UNSUPPORTED_BITS);
  bad = p, bad.head_dim = 24, bad.rotation = TQ_ROTATION_HADAMARD;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_UNSUPPORTED_ROTATION);
  bad = p, bad.n_layers = 0;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_INVALID_ARGUMENT);
  bad = p, bad.block_tokens = 8;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_INVALID_ARGUMENT);
  bad = p, bad.center = 1, bad.calib_tokens = 0;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_INVALID_ARGUMENT);
  bad = p, bad.mode = (tq_cache_mode)7;
  CHECK_STATUS(tq_cache_create(&bad, &c), TQ_ERR_INVALID_ARGUMENT);
  CHECK(c == NULL);
  CHECK_OK(tq_cache_create(&p, &c));
  float k[11 * 2 * 16] = {0}, v[11 * 2 * 16] = {0}, q[4 * 4 * 16] = {0}, out[4 * 4 * 16];
  for (int i = 0; i < 11 * 2 * 16; i++) k[i] = v[i] = (float)(i % 7) - 3.0f;
  CHECK_STATUS(tq_cache_append(c, 2, k, v, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_append(c, 0, NULL, v, 1), TQ_ERR_INVALID_ARGUMENT);
  CHECK_OK(tq_cache_append(c, 0, k, v, 0));
  CHECK_STATUS(tq_cache_append(c, 0, k, v, 11), TQ_ERR_RANGE);
  CHECK(tq_cache_tokens(c, 0) == 0);
  CHECK_OK(tq_cache_append(c, 0, k, v, 4));
  size_t bytes = tq_cache_bytes(c);
  k[2 * 16 + 5] = NAN;
  CHECK_STATUS(tq_cache_append(c, 0, k, v, 3), TQ_ERR_NON_FINITE);
  k[2 * 16 + 5] = 0.0f;
  v[16] = INFINITY;
  CHECK_STATUS(tq_cache_append(c, 0, k, v, 3), TQ_ERR_NON_FINITE);
  v[16] = 40000.0f; /* norm beyond what fp16 norms can hold after centering */
  CHECK_STATUS(tq_cache_append(c, 0, k, v, 3), TQ_ERR_RANGE);
  v[16] = 1.0f;
  CHECK(tq_cache_tokens(c, 0) == 4 && tq_cache_bytes(c) == bytes);
  CHECK_STATUS(tq_cache_attention(c, 0, q, 5, 4, 1.0f, out, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_attention(c, 0, q, 1, 3, 1.0f, out, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_attention(c, 0, q, 0, 4, 1.0f, out, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_attention(c, 1, q, 1, 4, 1.0f, out, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_attention(c, 0, NULL, 1, 4, 1.0f, out, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_attention(c, 0, q, 1, 4, NAN, out, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_OK(tq_cache_attention(c, 0, q, 4, 4, 1.0f, out, NULL));
  CHECK_STATUS(tq_cache_truncate(NULL, 0), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_cache_reset(NULL), TQ_ERR_INVALID_ARGUMENT);
  tq_cache_params got;
  CHECK_OK(tq_cache_get_params(c, &got));
  CHECK(got.max_tokens == 10 && got.simd != TQ_SIMD_AUTO);
  CHECK_STATUS(tq_cache_get_params(c, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK(tq_cache_tokens(NULL, 0) == 0 && tq_cache_tokens(c, 9) == 0 && tq_cache_bytes(NULL) == 0);
  tq_cache_free(c);
  tq_cache_free(NULL);
  tq_pool *pool = NULL;
  CHECK_STATUS(tq_pool_create(1000, &pool), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_pool_create(2, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_OK(tq_pool_create(0, &pool));
  CHECK(tq_pool_size(pool) >= 1 && tq_pool_size(NULL) == 1);
  tq_pool_free(pool);
  tq_pool_free(NULL);
}

int main(void) {
  TQ_RUN(test_attention_plain);
  TQ_RUN(test_attention_levers);
  TQ_RUN(test_attention_f16);
  TQ_RUN(test_memory);
  TQ_RUN(test_centering_gain);
  TQ_RUN(test_fractional_order);
  TQ_RUN(test_window_exact);
  TQ_RUN(test_layer_policy);
  TQ_RUN(test_truncate);
  TQ_RUN(test_errors);
  return tq_test_summary("test_cache");
}
