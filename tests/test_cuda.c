/*
 * test_cuda.c - the CUDA library against the CPU reference: encoded bytes
 * identical to tq_codec_encode_*, decode and prefill attention on the device
 * cache within 1e-3 relative of tq_cache_attention on the same data.
 *
 * Built with CUDA (TQ_HAVE_CUDA, by cuda.mk) it runs on the first GPU and
 * reports itself skipped when there is none; built without CUDA (no nvcc, or
 * the sanitizer build) it only reports that it was skipped.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tqai.h"

/* Host-side facts the device layout relies on (checked with or without a
 * GPU): a record is the fp16 norm then tq_packed_size code bytes, and for the
 * attention shapes the code bytes split evenly into the per-lane runs the
 * decode kernel loads (d/4 coordinates of a key, d/8 of a value). */
static void test_layout_assumptions(void) {
  for (uint32_t d = 64; d <= 128; d += 64)
    for (uint32_t b = 2; b <= 4; b++) {
      CHECK(tq_packed_size(d, b) == (size_t)d * b / 8);
      CHECK(tq_record_size(d, b, TQ_NORM_F16) == 2 + (size_t)d * b / 8);
      CHECK((d / 4) * b % 8 == 0 && (d / 8) * b % 8 == 0);
    }
  /* 16 tokens of codes fill whole 32-byte sectors. */
  CHECK(tq_packed_size(128, 4) * 16 % 32 == 0 && tq_packed_size(128, 2) * 16 % 32 == 0);
}

#ifdef TQ_HAVE_CUDA
#include "tqai_cuda.h"

static tq_cuda_ctx *ctx;

/* Deterministic data: splitmix64 to uniform floats and rough Gaussians. */
static uint64_t rng_state = 0x1234567887654321ull;
static uint64_t rng_next(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static float rng_uniform(void) { return (float)((rng_next() >> 40) * 0x1p-24); }
static float rng_gauss(void) {
  float s = 0.0f;
  for (int i = 0; i < 4; i++) s += rng_uniform();
  return (s - 2.0f) * 1.7320508f;
}

/* Device buffer helpers that fail the current test on error. */
static void *dev_alloc(size_t bytes) {
  void *p = NULL;
  tq_status st = tq_cuda_malloc(ctx, bytes ? bytes : 1, &p);
  CHECKF(st == TQ_OK, "tq_cuda_malloc(%zu): %s (%s)", bytes, tq_status_name(st),
         tq_cuda_ctx_last_error(ctx));
  return p;
}

static void *dev_copy(const void *host, size_t bytes) {
  void *p = dev_alloc(bytes);
  if (p) CHECK_OK(tq_cuda_upload(ctx, p, host, bytes));
  return p;
}

/* ------------------------------------------------------------------------ */
/* Encode: identical bytes                                                   */
/* ------------------------------------------------------------------------ */

/* Fills n vectors of d floats: Gaussian, with special rows (zero, tiny, huge,
 * one-hot, constant) at the front. `big` sets the scale of the huge row. */
static void fill_vectors(float *x, size_t n, uint32_t d, float big) {
  for (size_t i = 0; i < n * d; i++) x[i] = rng_gauss() * (0.01f + 10.0f * rng_uniform());
  if (n > 5) {
    memset(x, 0, d * sizeof *x);                           /* zero vector */
    for (uint32_t j = 0; j < d; j++) x[d + j] = 1e-36f * rng_gauss(); /* tiny: scaled path */
    for (uint32_t j = 0; j < d; j++) x[2 * d + j] = big * rng_gauss() / sqrtf((float)d);
    memset(x + 3 * d, 0, d * sizeof *x);
    x[3 * d + d / 2] = -3.0f;                              /* one-hot */
    for (uint32_t j = 0; j < d; j++) x[4 * d + j] = 0.25f; /* constant */
  }
}

static void check_encode_case(uint32_t d, uint32_t bits, tq_rotation rot, tq_norm_format nf,
                              tq_cuda_dtype dtype, size_t n) {
  tq_codec_params p = tq_codec_params_default(d, bits);
  p.rotation = rot;
  p.norm_format = nf;
  p.seed = 1000 + d * 10 + bits;
  tq_codec *cpu = NULL;
  tq_cuda_codec *gpu = NULL;
  CHECK_OK(tq_codec_create(&p, &cpu));
  CHECK_OK(tq_cuda_codec_create(ctx, cpu, &gpu));
  if (!cpu || !gpu) {
    tq_cuda_codec_free(gpu);
    tq_codec_free(cpu);
    return;
  }
  size_t rs = tq_codec_record_size(cpu);
  CHECK(tq_cuda_codec_record_size(gpu) == rs);
  float *x = malloc(n * d * sizeof *x);
  uint16_t *h = malloc(n * d * sizeof *h);
  uint8_t *want = malloc(n * rs), *got = malloc(n * rs);
  /* Norms up to about 30000 fit an fp16 norm with room for the decoded
   * length; f32 norms take 1e30. */
  fill_vectors(x, n, d, nf == TQ_NORM_F32 ? 1e30f : d < 16 ? 5000.0f : 30000.0f);
  tq_status want_st;
  const void *src;
  size_t esz;
  if (dtype == TQ_CUDA_F32) {
    want_st = tq_codec_encode_f32(cpu, x, n, want, n * rs);
    src = x, esz = 4;
  } else {
    for (size_t i = 0; i < n * d; i++)
      h[i] = dtype == TQ_CUDA_F16 ? tq_f32_to_f16(x[i]) : tq_f32_to_bf16(x[i]);
    /* A row overflowing to infinity in 16 bits is a case of its own. */
    if (dtype == TQ_CUDA_F16)
      for (size_t i = 2 * d; i < 3 * d && n > 5; i++) h[i] = tq_f32_to_f16(x[i] * 1e-3f);
    want_st = dtype == TQ_CUDA_F16 ? tq_codec_encode_f16(cpu, h, n, want, n * rs)
                                   : tq_codec_encode_bf16(cpu, h, n, want, n * rs);
    src = h, esz = 2;
  }
  void *dx = dev_copy(src, n * d * esz);
  void *dr = dev_alloc(n * rs);
  if (dx && dr) {
    tq_cuda_memset(ctx, dr, 0xa5, n * rs);
    tq_status got_st = tq_cuda_encode(ctx, gpu, dx, dtype, n, dr);
    CHECKF(got_st == want_st, "d=%u bits=%u rot=%d nf=%d dtype=%d: status %s, CPU %s", d, bits,
           (int)rot, (int)nf, (int)dtype, tq_status_name(got_st), tq_status_name(want_st));
    if (want_st == TQ_OK && got_st == TQ_OK) {
      CHECK_OK(tq_cuda_download(ctx, got, dr, n * rs));
      size_t bad = 0, first = 0;
      for (size_t i = 0; i < n * rs; i++)
        if (got[i] != want[i] && bad++ == 0) first = i;
      CHECKF(bad == 0,
             "d=%u bits=%u rot=%d nf=%d dtype=%d: %zu bytes differ, first in record %zu byte %zu "
             "(gpu %02x cpu %02x)",
             d, bits, (int)rot, (int)nf, (int)dtype, bad, first / rs, first % rs, got[first],
             want[first]);
    }
  }
  tq_cuda_free(ctx, dx);
  tq_cuda_free(ctx, dr);
  free(x), free(h), free(want), free(got);
  tq_cuda_codec_free(gpu);
  tq_codec_free(cpu);
}

static void test_encode_bytes(void) {
  static const uint32_t dims[] = {2, 3, 64, 96, 128, 130, 256};
  static const tq_cuda_dtype types[] = {TQ_CUDA_F32, TQ_CUDA_F16, TQ_CUDA_BF16};
  for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
    uint32_t d = dims[di];
    for (uint32_t bits = 1; bits <= 8; bits++) {
      /* Every bit width at d = 128; a spread elsewhere keeps the test short. */
      if (d != 128 && bits != 2 && bits != 3 && bits != 4 && bits != 8) continue;
      for (int r = 0; r < 2; r++) {
        tq_rotation rot = r ? TQ_ROTATION_HADAMARD : TQ_ROTATION_HAAR;
        if (rot == TQ_ROTATION_HADAMARD && (d & (d - 1))) continue;
        for (size_t ti = 0; ti < 3; ti++)
          check_encode_case(d, bits, rot, ti == 0 && bits == 4 ? TQ_NORM_F32 : TQ_NORM_F16, types[ti],
                            d <= 3 ? 300 : 257);
      }
    }
  }
  check_encode_case(2048, 4, TQ_ROTATION_HAAR, TQ_NORM_F16, TQ_CUDA_F32, 9);
  check_encode_case(128, 4, TQ_ROTATION_HAAR, TQ_NORM_F32, TQ_CUDA_F16, 1001);
}

/* Errors: the status of the first failing vector, as on the CPU. */
static void test_encode_errors(void) {
  uint32_t d = 128;
  tq_codec_params p = tq_codec_params_default(d, 4);
  tq_codec *cpu = NULL;
  tq_cuda_codec *gpu = NULL;
  CHECK_OK(tq_codec_create(&p, &cpu));
  CHECK_OK(tq_cuda_codec_create(ctx, cpu, &gpu));
  if (!gpu) {
    tq_codec_free(cpu);
    return;
  }
  size_t n = 8, rs = tq_codec_record_size(cpu);
  float *x = malloc(n * d * sizeof *x);
  uint8_t *rec = malloc(n * rs);
  for (int c = 0; c < 3; c++) {
    fill_vectors(x, n, d, 1.0f);
    if (c == 0) x[5 * d + 7] = NAN;
    if (c == 1) for (uint32_t j = 0; j < d; j++) x[6 * d + j] = 7000.0f; /* norm 79196 */
    if (c == 2) {
      x[3 * d] = INFINITY;
      for (uint32_t j = 0; j < d; j++) x[6 * d + j] = 7000.0f;
    }
    tq_status want = tq_codec_encode_f32(cpu, x, n, rec, n * rs);
    void *dx = dev_copy(x, n * d * sizeof *x), *dr = dev_alloc(n * rs);
    if (dx && dr) CHECK_STATUS(tq_cuda_encode(ctx, gpu, dx, TQ_CUDA_F32, n, dr), want);
    tq_cuda_free(ctx, dx);
    tq_cuda_free(ctx, dr);
  }
  CHECK_STATUS(tq_cuda_encode(ctx, gpu, NULL, TQ_CUDA_F32, 1, rec), TQ_ERR_INVALID_ARGUMENT);
  free(x), free(rec);
  tq_cuda_codec_free(gpu);
  tq_codec_free(cpu);
}

/* ------------------------------------------------------------------------ */
/* Attention against the CPU cache                                           */
/* ------------------------------------------------------------------------ */

typedef struct attn_case {
  uint32_t d, kbits, vbits, H, G, n_seqs, block;
  tq_rotation rot;
  const uint32_t *lens; /* (n_seqs,) tokens per sequence */
} attn_case;

/* max |a - b| / max |b| over n values. */
static double rel_err(const float *a, const float *b, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)a[i] - (double)b[i]);
    if (!(e <= num)) num = e; /* NaN-propagating max */
    if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
  }
  return den > 0.0 ? num / den : num;
}

/* The largest decode error of the run (printed at the end: how much of the
 * 1e-3 bound is used). */
static double worst_decode_err;

static void run_attn_case(const attn_case *c, int prefill_too) {
  const uint32_t d = c->d, H = c->H, Hq = c->H * c->G, S = c->n_seqs;
  const uint32_t layer = 1, n_layers = 2;
  uint32_t max_len = 0;
  for (uint32_t s = 0; s < S; s++) max_len = c->lens[s] > max_len ? c->lens[s] : max_len;
  tq_cuda_cache_params gp = tq_cuda_cache_params_default(n_layers, H, d);
  gp.n_seqs = S;
  gp.max_tokens = max_len + 8;
  gp.block_tokens = c->block;
  gp.key_bits = c->kbits;
  gp.value_bits = c->vbits;
  gp.rotation = c->rot;
  tq_cuda_cache *gc = NULL;
  CHECK_OK(tq_cuda_cache_create(ctx, &gp, &gc));
  if (!gc) return;
  tq_cache_params cp = tq_cache_params_default(n_layers, H, d);
  cp.max_tokens = max_len + 8;
  cp.block_tokens = 64;
  cp.key_bits = (float)c->kbits;
  cp.value_bits = (float)c->vbits;
  cp.rotation = c->rot;
  float scale = 1.0f / sqrtf((float)d);
  size_t qn = (size_t)S * Hq * d;
  float *q = malloc(qn * sizeof *q), *ref = malloc(qn * sizeof *ref), *got = malloc(qn * sizeof *got);
  for (size_t i = 0; i < qn; i++) q[i] = rng_gauss() * 1.5f;
  tq_codec *kcod = NULL;
  tq_codec_params kp = tq_codec_params_default(d, c->kbits);
  kp.rotation = c->rot;
  CHECK_OK(tq_codec_create(&kp, &kcod));
  for (uint32_t s = 0; s < S; s++) {
    uint32_t T = c->lens[s];
    size_t kvn = (size_t)T * H * d;
    float *k = malloc((kvn + 1) * sizeof *k), *v = malloc((kvn + 1) * sizeof *v);
    /* Keys with a per-token scale so that softmax is neither flat nor one-hot. */
    for (size_t i = 0; i < kvn; i++) {
      k[i] = rng_gauss() * (0.5f + rng_uniform());
      v[i] = rng_gauss();
    }
    tq_cache *cc = NULL;
    CHECK_OK(tq_cache_create(&cp, &cc));
    if (T) {
      CHECK_OK(tq_cache_append(cc, layer, k, v, T));
      /* The GPU cache gets the same tokens in two appends (block crossing). */
      uint32_t first = T / 3;
      void *dk = dev_copy(k, kvn * sizeof *k), *dv = dev_copy(v, kvn * sizeof *v);
      if (dk && dv) {
        CHECK_OK(tq_cuda_cache_append(gc, layer, s, dk, dv, TQ_CUDA_F32, first));
        CHECK_OK(tq_cuda_cache_append(gc, layer, s, (float *)dk + (size_t)first * H * d,
                                      (float *)dv + (size_t)first * H * d, TQ_CUDA_F32, T - first));
      }
      tq_cuda_free(ctx, dk);
      tq_cuda_free(ctx, dv);
      CHECK(tq_cuda_cache_tokens(gc, layer, s) == T);
      /* Stored key records are the CPU codec's records. */
      size_t kr = tq_codec_record_size(kcod);
      size_t vr = tq_cuda_cache_token_bytes(gc) - kr;
      uint8_t *gk = malloc((size_t)T * H * kr), *gv = malloc((size_t)T * H * vr);
      uint8_t *ck = malloc((size_t)T * H * kr);
      CHECK_OK(tq_cuda_cache_read_records(gc, layer, s, 0, T, gk, gv));
      CHECK_OK(tq_codec_encode_f32(kcod, k, (size_t)T * H, ck, (size_t)T * H * kr));
      CHECKF(memcmp(gk, ck, (size_t)T * H * kr) == 0, "seq %u: cache key records differ", s);
      free(gk), free(gv), free(ck);
      /* Reference: one decode query on the CPU cache. */
      CHECK_OK(tq_cache_attention(cc, layer, q + (size_t)s * Hq * d, 1, Hq, scale,
                                  ref + (size_t)s * Hq * d, NULL));
    } else {
      memset(ref + (size_t)s * Hq * d, 0, (size_t)Hq * d * sizeof *ref);
    }
    if (prefill_too && T >= 2 && s == 0) {
      /* Causal prefill of the last n_q tokens. */
      uint32_t nq = T < 37 ? T : 37;
      size_t pn = (size_t)nq * Hq * d;
      float *pq = malloc(pn * sizeof *pq), *pref = malloc(pn * sizeof *pref), *pgot = malloc(pn * sizeof *pgot);
      for (size_t i = 0; i < pn; i++) pq[i] = rng_gauss();
      CHECK_OK(tq_cache_attention(cc, layer, pq, nq, Hq, scale, pref, NULL));
      float *dq = dev_copy(pq, pn * sizeof *pq), *dout = dev_alloc(pn * sizeof *dout);
      if (dq && dout) {
        tq_cuda_memset(ctx, dout, 0xff, pn * sizeof *dout); /* NaN poison */
        CHECK_OK(tq_cuda_cache_attention_prefill(gc, layer, s, dq, nq, Hq, scale, dout));
        CHECK_OK(tq_cuda_ctx_sync(ctx));
        CHECK_OK(tq_cuda_download(ctx, pgot, dout, pn * sizeof *pgot));
        double e = rel_err(pgot, pref, pn);
        CHECKF(e <= 1e-3, "prefill d=%u K%u/V%u G=%u T=%u n_q=%u: relative error %.3g", d, c->kbits,
               c->vbits, c->G, T, nq, e);
      }
      tq_cuda_free(ctx, dq);
      tq_cuda_free(ctx, dout);
      free(pq), free(pref), free(pgot);
    }
    tq_cache_free(cc);
    free(k), free(v);
  }
  float *dq = dev_copy(q, qn * sizeof *q), *dout = dev_alloc(qn * sizeof *dout);
  if (dq && dout) {
    for (int rep = 0; rep < 2; rep++) {
      tq_cuda_memset(ctx, dout, 0xff, qn * sizeof *dout);
      CHECK_OK(tq_cuda_cache_attention_decode(gc, layer, dq, Hq, scale, dout));
      CHECK_OK(tq_cuda_ctx_sync(ctx));
      CHECK_OK(tq_cuda_download(ctx, got, dout, qn * sizeof *got));
      for (uint32_t s = 0; s < S; s++) {
        double e = rel_err(got + (size_t)s * Hq * d, ref + (size_t)s * Hq * d, (size_t)Hq * d);
        if (!(e <= worst_decode_err)) worst_decode_err = e;
        CHECKF(e <= 1e-3, "decode d=%u K%u/V%u H=%u G=%u seqs=%u block=%u seq %u T=%u: relative error %.3g",
               d, c->kbits, c->vbits, H, c->G, S, c->block, s, c->lens[s], e);
      }
    }
  }
  tq_cuda_free(ctx, dq);
  tq_cuda_free(ctx, dout);
  tq_codec_free(kcod);
  free(q), free(ref), free(got);
  tq_cuda_cache_free(gc);
}

static void test_decode_shapes(void) {
  static const uint32_t one[] = {1000};
  static const uint32_t several[] = {1, 4097, 300, 0, 2500};
  static const uint32_t bits[][2] = {{4, 2}, {3, 2}, {2, 2}, {4, 4}, {3, 3}, {2, 4}};
  for (size_t b = 0; b < sizeof bits / sizeof *bits; b++) {
    for (uint32_t d = 64; d <= 128; d += 64) {
      attn_case c = {d, bits[b][0], bits[b][1], 2, 4, 1, 64, TQ_ROTATION_HAAR, one};
      run_attn_case(&c, b < 2);
    }
  }
  static const uint32_t gs[] = {1, 2, 3, 4, 7, 8};
  for (size_t g = 0; g < sizeof gs / sizeof *gs; g++) {
    attn_case c = {128, 4, 2, 2, gs[g], 5, 128, TQ_ROTATION_HAAR, several};
    run_attn_case(&c, g == 0);
  }
  attn_case had = {128, 3, 2, 3, 4, 2, 256, TQ_ROTATION_HADAMARD, several};
  run_attn_case(&had, 1);
}

/* A long context that takes many splits, with the default block size. */
static void test_decode_long(void) {
  static const uint32_t lens[] = {40000, 17};
  attn_case c = {128, 4, 2, 8, 4, 2, 256, TQ_ROTATION_HAAR, lens};
  run_attn_case(&c, 0);
}

/* Blocks of 192 and 320 tokens: the warps' stride (256 tokens) is not a
 * whole number of blocks, so the next tile's slot wraps unevenly; splits long
 * enough for every warp to walk several tiles. */
static void test_decode_odd_blocks(void) {
  static const uint32_t lens[] = {9000, 3001};
  static const uint32_t blocks[] = {192, 320};
  for (size_t i = 0; i < 2; i++) {
    attn_case c = {128, 4, 2, 8, 4, 2, blocks[i], TQ_ROTATION_HAAR, lens};
    run_attn_case(&c, 0);
  }
}

/* append_records copies records verbatim: the attention over a copy of a
 * sequence equals the attention over the original; truncate drops tokens. */
static void test_records_and_truncate(void) {
  uint32_t d = 128, H = 2, G = 4, Hq = H * G, T = 700;
  tq_cuda_cache_params gp = tq_cuda_cache_params_default(1, H, d);
  gp.n_seqs = 2;
  gp.max_tokens = 1024;
  gp.block_tokens = 128;
  tq_cuda_cache *gc = NULL;
  CHECK_OK(tq_cuda_cache_create(ctx, &gp, &gc));
  if (!gc) return;
  size_t kvn = (size_t)T * H * d;
  float *k = malloc(kvn * sizeof *k), *v = malloc(kvn * sizeof *v);
  for (size_t i = 0; i < kvn; i++) k[i] = rng_gauss(), v[i] = rng_gauss();
  void *dk = dev_copy(k, kvn * sizeof *k), *dv = dev_copy(v, kvn * sizeof *v);
  size_t tb = tq_cuda_cache_token_bytes(gc);
  size_t kr = 2 + d * gp.key_bits / 8, vr = tb - kr;
  uint8_t *hk = malloc((size_t)T * H * kr), *hv = malloc((size_t)T * H * vr);
  float *q = malloc((size_t)2 * Hq * d * sizeof *q), *out = malloc((size_t)2 * Hq * d * sizeof *out);
  for (size_t i = 0; i < (size_t)Hq * d; i++) q[i] = q[i + (size_t)Hq * d] = rng_gauss();
  if (dk && dv) {
    CHECK_OK(tq_cuda_cache_append(gc, 0, 0, dk, dv, TQ_CUDA_F32, T));
    CHECK_OK(tq_cuda_cache_read_records(gc, 0, 0, 0, T, hk, hv));
    void *rk = dev_copy(hk, (size_t)T * H * kr), *rv = dev_copy(hv, (size_t)T * H * vr);
    CHECK_OK(tq_cuda_cache_append_records(gc, 0, 1, rk, rv, T));
    float *dq = dev_copy(q, (size_t)2 * Hq * d * sizeof *q), *dout = dev_alloc((size_t)2 * Hq * d * sizeof *out);
    if (dq && dout) {
      tq_cuda_memset(ctx, dout, 0xff, (size_t)2 * Hq * d * sizeof *out);
      CHECK_OK(tq_cuda_cache_attention_decode(gc, 0, dq, Hq, 0.1f, dout));
      CHECK_OK(tq_cuda_download(ctx, out, dout, (size_t)2 * Hq * d * sizeof *out));
      CHECK(memcmp(out, out + (size_t)Hq * d, (size_t)Hq * d * sizeof *out) == 0);
      CHECK_OK(tq_cuda_cache_truncate(gc, 300));
      CHECK(tq_cuda_cache_tokens(gc, 0, 0) == 300 && tq_cuda_cache_tokens(gc, 0, 1) == 300);
      CHECK_STATUS(tq_cuda_cache_append(gc, 0, 0, dk, dv, TQ_CUDA_F32, 800), TQ_ERR_RANGE);
      CHECK_OK(tq_cuda_cache_attention_decode(gc, 0, dq, Hq, 0.1f, dout));
      CHECK_OK(tq_cuda_ctx_sync(ctx));
    }
    /* A vector longer than TQ_CACHE_MAX_NORM is refused; the count stays. */
    for (uint32_t j = 0; j < d; j++) k[j] = 2000.0f;
    CHECK_OK(tq_cuda_upload(ctx, dk, k, d * sizeof *k));
    CHECK_STATUS(tq_cuda_cache_append(gc, 0, 0, dk, dv, TQ_CUDA_F32, 1), TQ_ERR_RANGE);
    CHECK(tq_cuda_cache_tokens(gc, 0, 0) == 300);
    tq_cuda_free(ctx, rk);
    tq_cuda_free(ctx, rv);
    tq_cuda_free(ctx, dq);
    tq_cuda_free(ctx, dout);
  }
  tq_cuda_free(ctx, dk);
  tq_cuda_free(ctx, dv);
  free(k), free(v), free(hk), free(hv), free(q), free(out);
  tq_cuda_cache_free(gc);
}

static void test_arguments(void) {
  tq_cuda_cache_params gp = tq_cuda_cache_params_default(1, 2, 128);
  tq_cuda_cache *gc = NULL;
  gp.block_tokens = 100;
  CHECK_STATUS(tq_cuda_cache_create(ctx, &gp, &gc), TQ_ERR_INVALID_ARGUMENT);
  CHECK(gc == NULL);
  gp = tq_cuda_cache_params_default(1, 2, 128);
  gp.key_bits = 9;
  CHECK_STATUS(tq_cuda_cache_create(ctx, &gp, &gc), TQ_ERR_UNSUPPORTED_BITS);
  gp = tq_cuda_cache_params_default(1, 2, 96);
  CHECK_OK(tq_cuda_cache_create(ctx, &gp, &gc));
  float *dq = dev_alloc(2 * 96 * sizeof(float));
  if (gc && dq) CHECK_STATUS(tq_cuda_cache_attention_decode(gc, 0, dq, 2, 1.0f, dq), TQ_ERR_UNSUPPORTED);
  if (gc && dq) CHECK_STATUS(tq_cuda_cache_attention_decode(gc, 0, dq, 3, 1.0f, dq), TQ_ERR_INVALID_ARGUMENT);
  tq_cuda_free(ctx, dq);
  tq_cuda_cache_free(gc);
  tq_cuda_cache_free(NULL);
  tq_cuda_codec_free(NULL);
}
#endif /* TQ_HAVE_CUDA */

int main(void) {
  TQ_RUN(test_layout_assumptions);
#ifndef TQ_HAVE_CUDA
  printf("test_cuda: skipped: built without CUDA\n");
#else
  int n = 0;
  tq_cuda_device_count(&n);
  if (n == 0) {
    printf("test_cuda: skipped: no CUDA GPU\n");
    return tq_test_summary("test_cuda");
  }
  tq_status st = tq_cuda_ctx_create(0, NULL, &ctx);
  if (st != TQ_OK) {
    printf("test_cuda: skipped: no usable CUDA GPU (%s)\n", tq_status_name(st));
    return tq_test_summary("test_cuda");
  }
  TQ_RUN(test_encode_bytes);
  TQ_RUN(test_encode_errors);
  TQ_RUN(test_decode_shapes);
  TQ_RUN(test_decode_long);
  TQ_RUN(test_decode_odd_blocks);
  TQ_RUN(test_records_and_truncate);
  TQ_RUN(test_arguments);
  printf("test_cuda: largest decode error %.3g (bound 1e-3)\n", worst_decode_err);
  tq_cuda_ctx_free(ctx);
#endif
  return tq_test_summary("test_cuda");
}
