/*
 * kvcache.c - the compressed KV cache: lanes of tokens per (layer, KV head),
 * growing in fixed blocks, with fp16 sinks, an fp16 recent window, frozen
 * per-head means and channel splits (see cache_internal.h for the layout).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_kernels.h"
#include "cache_internal.h"

#define TQ_ALLOC_HEADER 64 /* keeps the user part 64-byte aligned */

void *tq_cache_alloc(tq_cache *c, size_t bytes) {
  if (bytes > SIZE_MAX - TQ_ALLOC_HEADER - 63) return NULL;
  size_t total = (TQ_ALLOC_HEADER + bytes + 63) & ~(size_t)63;
  unsigned char *p = aligned_alloc(64, total);
  if (!p) return NULL;
  memset(p, 0, total);
  memcpy(p, &total, sizeof total);
  c->bytes += total;
  return p + TQ_ALLOC_HEADER;
}

void tq_cache_dealloc(tq_cache *c, void *ptr) {
  if (!ptr) return;
  unsigned char *p = (unsigned char *)ptr - TQ_ALLOC_HEADER;
  size_t total;
  memcpy(&total, p, sizeof total);
  c->bytes -= total;
  free(p);
}

tq_cache_params tq_cache_params_default(uint32_t n_layers, uint32_t n_kv_heads, uint32_t head_dim) {
  tq_cache_params p;
  memset(&p, 0, sizeof p);
  p.n_layers = n_layers;
  p.n_kv_heads = n_kv_heads;
  p.head_dim = head_dim;
  p.max_tokens = 131072;
  p.block_tokens = 256;
  p.mode = TQ_CACHE_TURBOQUANT;
  p.key_bits = 4.0f;
  p.value_bits = 2.0f;
  p.calib_tokens = 64;
  p.rotation = TQ_ROTATION_HAAR;
  p.key_seed = TQ_DEFAULT_KEY_SEED;
  p.value_seed = TQ_DEFAULT_VALUE_SEED;
  p.simd = TQ_SIMD_AUTO;
  return p;
}

/* 1, 1.5, ..., 8 */
static int valid_rate(float b) {
  if (!(b >= TQ_CACHE_MIN_BITS && b <= TQ_CACHE_MAX_BITS)) return 0;
  float twice = b * 2.0f;
  return twice == floorf(twice);
}

static int is_fractional(float b) { return b != floorf(b); }

static float layer_rate(const tq_cache_params *p, uint32_t layer, int key) {
  const float *per_layer = key ? p->layer_key_bits : p->layer_value_bits;
  if (per_layer) return per_layer[layer];
  float edge = key ? p->edge_key_bits : p->edge_value_bits;
  if (p->edge_layers && edge > 0.0f &&
      (layer < p->edge_layers || layer >= p->n_layers - (p->edge_layers < p->n_layers ? p->edge_layers : p->n_layers)))
    return edge;
  return key ? p->key_bits : p->value_bits;
}

static tq_status validate(const tq_cache_params *p) {
  if (p->n_layers < 1 || p->n_layers > 4096 || p->n_kv_heads < 1 || p->n_kv_heads > 4096)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->head_dim < TQ_MIN_DIM || p->head_dim > TQ_MAX_DIM) return TQ_ERR_UNSUPPORTED_DIM;
  if (p->max_tokens < 1 || p->block_tokens < 16 || p->block_tokens > 65536)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->mode != TQ_CACHE_F16 && p->mode != TQ_CACHE_TURBOQUANT && p->mode != TQ_CACHE_F32)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->simd < TQ_SIMD_AUTO || p->simd > TQ_SIMD_AVX512) return TQ_ERR_INVALID_ARGUMENT;
  if (!tq_simd_supported(p->simd)) return TQ_ERR_UNSUPPORTED_SIMD;
  if (p->mode != TQ_CACHE_TURBOQUANT) return TQ_OK;
  if (p->rotation != TQ_ROTATION_HAAR && p->rotation != TQ_ROTATION_HADAMARD)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->window_tokens > p->max_tokens || p->sink_tokens > p->max_tokens) return TQ_ERR_INVALID_ARGUMENT;
  int any_fractional = 0;
  for (uint32_t l = 0; l < p->n_layers; l++) {
    for (int key = 0; key <= 1; key++) {
      float b = layer_rate(p, l, key);
      if (!valid_rate(b)) return TQ_ERR_UNSUPPORTED_BITS;
      if (is_fractional(b)) {
        any_fractional = 1;
        if (p->head_dim % 2 || p->head_dim / 2 < TQ_MIN_DIM) return TQ_ERR_UNSUPPORTED_DIM;
      }
    }
  }
  uint32_t d = p->head_dim;
  if (p->rotation == TQ_ROTATION_HADAMARD && ((d & (d - 1)) || (any_fractional && d < 4)))
    return TQ_ERR_UNSUPPORTED_ROTATION;
  if ((p->center || any_fractional) && p->calib_tokens < 1) return TQ_ERR_INVALID_ARGUMENT;
  return TQ_OK;
}

/* Returns a codec from the cache's shared set, creating it if needed. */
static tq_status shared_codec(tq_cache *c, uint32_t dim, uint32_t bits, uint64_t seed,
                              const tq_codec **out) {
  for (uint32_t i = 0; i < c->n_codecs; i++) {
    tq_codec_params q;
    tq_codec_get_params(c->codecs[i], &q);
    if (q.dim == dim && q.bits == bits && q.seed == seed) {
      *out = c->codecs[i];
      return TQ_OK;
    }
  }
  tq_codec_params p = tq_codec_params_default(dim, bits);
  p.rotation = c->p.rotation;
  p.seed = seed;
  p.simd = c->p.simd;
  tq_codec **grown = realloc(c->codecs, (c->n_codecs + 1) * sizeof *grown);
  if (!grown) return TQ_ERR_OUT_OF_MEMORY;
  c->codecs = grown;
  tq_status st = tq_codec_create(&p, &c->codecs[c->n_codecs]);
  if (st != TQ_OK) return st;
  *out = c->codecs[c->n_codecs++];
  return TQ_OK;
}

static tq_status side_init(tq_cache *c, tq_side_codec *s, float rate, uint64_t seed) {
  uint32_t d = c->p.head_dim;
  memset(s, 0, sizeof *s);
  s->bits = rate;
  if (c->p.mode != TQ_CACHE_TURBOQUANT) {
    /* Plain rows: fp16 or float32. */
    s->n_groups = 0;
    s->rec_bytes = (size_t)d * (c->p.mode == TQ_CACHE_F32 ? 4 : 2);
    return TQ_OK;
  }
  if (is_fractional(rate)) {
    s->n_groups = 2;
    s->dim[0] = s->dim[1] = d / 2;
    s->gbits[0] = (uint32_t)rate + 1;
    s->gbits[1] = (uint32_t)rate;
  } else {
    s->n_groups = 1;
    s->dim[0] = d;
    s->gbits[0] = (uint32_t)rate;
  }
  for (uint32_t g = 0; g < s->n_groups; g++) {
    tq_status st = shared_codec(c, s->dim[g], s->gbits[g], seed, &s->codec[g]);
    if (st != TQ_OK) return st;
    tq_codec_centroids(s->codec[g], s->centroids[g], 256);
    s->offset[g] = s->rec_bytes;
    s->rec_bytes += tq_codec_record_size(s->codec[g]);
  }
  return TQ_OK;
}

tq_status tq_cache_create(const tq_cache_params *params, tq_cache **out) {
  if (out) *out = NULL;
  if (!params || !out) return TQ_ERR_INVALID_ARGUMENT;
  tq_status st = validate(params);
  if (st != TQ_OK) return st;
  tq_cache *c = calloc(1, sizeof *c);
  if (!c) return TQ_ERR_OUT_OF_MEMORY;
  c->p = *params;
  c->p.layer_key_bits = c->p.layer_value_bits = NULL;
  c->bytes = sizeof *c;
  if (c->p.simd == TQ_SIMD_AUTO) c->p.simd = tq_simd_default();
  c->layers = tq_cache_alloc(c, (size_t)params->n_layers * sizeof *c->layers);
  if (!c->layers) {
    tq_cache_free(c);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  for (uint32_t l = 0; l < params->n_layers; l++) {
    tq_layer *L = &c->layers[l];
    st = side_init(c, &L->k, layer_rate(params, l, 1), params->key_seed);
    if (st == TQ_OK) st = side_init(c, &L->v, layer_rate(params, l, 0), params->value_seed);
    if (st != TQ_OK) {
      tq_cache_free(c);
      return st;
    }
    L->needs_calib = params->mode == TQ_CACHE_TURBOQUANT &&
                     (params->center || L->k.n_groups == 2 || L->v.n_groups == 2);
    L->k_block_bytes = (size_t)params->block_tokens * L->k.rec_bytes;
    L->block_bytes = L->k_block_bytes + (size_t)params->block_tokens * L->v.rec_bytes + TQ_ATTN_PAD;
    L->lanes = tq_cache_alloc(c, (size_t)params->n_kv_heads * sizeof *L->lanes);
    if (!L->lanes) {
      tq_cache_free(c);
      return TQ_ERR_OUT_OF_MEMORY;
    }
  }
  *out = c;
  return TQ_OK;
}

void tq_lane_free(tq_cache *c, tq_lane *ln) {
  for (uint32_t b = 0; b < ln->n_blocks; b++) tq_cache_dealloc(c, ln->blocks[b]);
  tq_cache_dealloc(c, ln->blocks);
  tq_cache_dealloc(c, ln->sink_k);
  tq_cache_dealloc(c, ln->sink_v);
  tq_cache_dealloc(c, ln->pend_k);
  tq_cache_dealloc(c, ln->pend_v);
  tq_cache_dealloc(c, ln->ring_k);
  tq_cache_dealloc(c, ln->ring_v);
  tq_cache_dealloc(c, ln->k_mean);
  tq_cache_dealloc(c, ln->v_mean);
  tq_cache_dealloc(c, ln->k_perm);
  tq_cache_dealloc(c, ln->v_perm);
  memset(ln, 0, sizeof *ln);
}

void tq_cache_free(tq_cache *cache) {
  if (!cache) return;
  if (cache->layers) {
    for (uint32_t l = 0; l < cache->p.n_layers; l++) {
      tq_layer *L = &cache->layers[l];
      if (!L->lanes) continue;
      for (uint32_t h = 0; h < cache->p.n_kv_heads; h++) tq_lane_free(cache, &L->lanes[h]);
      tq_cache_dealloc(cache, L->lanes);
    }
    tq_cache_dealloc(cache, cache->layers);
  }
  for (uint32_t i = 0; i < cache->n_codecs; i++) tq_codec_free(cache->codecs[i]);
  free(cache->codecs);
  free(cache);
}

tq_status tq_cache_get_params(const tq_cache *cache, tq_cache_params *out) {
  if (!cache || !out) return TQ_ERR_INVALID_ARGUMENT;
  *out = cache->p;
  return TQ_OK;
}

uint32_t tq_cache_tokens(const tq_cache *cache, uint32_t layer) {
  if (!cache || layer >= cache->p.n_layers) return 0;
  return tq_lane_tokens(&cache->layers[layer].lanes[0]);
}

size_t tq_cache_bytes(const tq_cache *cache) { return cache ? cache->bytes : 0; }

/* ------------------------------------------------------------------------ */
/* Token flow                                                                */
/* ------------------------------------------------------------------------ */

/* The counters of a lane, advanced without touching data, to know before an
 * append how many blocks it will need. */
typedef struct flow {
  uint32_t n_sink, n_comp, n_pend, n_ring;
  int calibrated;
} flow;

static void flow_retire(const tq_cache *c, const tq_layer *L, flow *f) {
  if (L->needs_calib && !f->calibrated) {
    if (++f->n_pend == c->p.calib_tokens) {
      f->calibrated = 1;
      f->n_comp += f->n_pend;
      f->n_pend = 0;
    }
  } else {
    f->n_comp++;
  }
}

static void flow_push(const tq_cache *c, const tq_layer *L, flow *f) {
  const tq_cache_params *p = &c->p;
  if (p->mode == TQ_CACHE_TURBOQUANT && f->n_sink < p->sink_tokens) {
    f->n_sink++;
  } else if (p->mode == TQ_CACHE_TURBOQUANT && p->window_tokens > 0) {
    if (f->n_ring < p->window_tokens) f->n_ring++;
    else flow_retire(c, L, f);
  } else {
    flow_retire(c, L, f);
  }
}

static void to_f16(const float *x, uint16_t *h, uint32_t d) {
  for (uint32_t j = 0; j < d; j++) h[j] = tq_f32_to_f16(x[j]);
}

static void from_f16(const uint16_t *h, float *x, uint32_t d) {
  for (uint32_t j = 0; j < d; j++) x[j] = tq_f16_to_f32(h[j]);
}

/* Codes one vector x (d floats) for one side into rec: subtract the mean,
 * permute the channels, encode each group. */
static void encode_side(const tq_cache *c, const tq_side_codec *s, const float *mean,
                        const uint16_t *perm, const float *x, uint8_t *rec) {
  uint32_t d = c->p.head_dim;
  if (s->n_groups == 0) {
    if (c->p.mode == TQ_CACHE_F32) memcpy(rec, x, (size_t)d * sizeof(float));
    else to_f16(x, (uint16_t *)(void *)rec, d);
    return;
  }
  _Alignas(64) float t[TQ_MAX_DIM];
  for (uint32_t j = 0; j < d; j++) t[j] = mean ? x[j] - mean[j] : x[j];
  _Alignas(64) float u[TQ_MAX_DIM];
  const float *src = t;
  if (s->n_groups == 2) {
    for (uint32_t j = 0; j < d; j++) u[j] = t[perm[j]];
    src = u;
  }
  const float *part = src;
  for (uint32_t g = 0; g < s->n_groups; g++) {
    size_t size = tq_codec_record_size(s->codec[g]);
    /* Inputs were checked finite and in range before any change. */
    (void)tq_codec_encode_f32(s->codec[g], part, 1, rec + s->offset[g], size);
    part += s->dim[g];
  }
}

/* Stores one token in the lane's next compressed slot (its block exists). */
static void store_comp(tq_cache *c, const tq_layer *L, tq_lane *ln, const float *k,
                       const float *v) {
  uint32_t B = c->p.block_tokens;
  uint32_t b = ln->n_comp / B, slot = ln->n_comp % B;
  uint8_t *blk = ln->blocks[b];
  encode_side(c, &L->k, ln->k_mean, ln->k_perm, k, blk + (size_t)slot * L->k.rec_bytes);
  encode_side(c, &L->v, ln->v_mean, ln->v_perm, v,
              blk + L->k_block_bytes + (size_t)slot * L->v.rec_bytes);
  ln->n_comp++;
}

/* Channels sorted by RMS over the calibration rows, largest first (ties by
 * index): the first half gets the extra bit of a fractional rate. */
static void channel_order(const uint16_t *rows, uint32_t n, uint32_t d, const float *mean,
                          uint16_t *perm) {
  double ms[TQ_MAX_DIM];
  for (uint32_t j = 0; j < d; j++) ms[j] = 0.0;
  for (uint32_t t = 0; t < n; t++)
    for (uint32_t j = 0; j < d; j++) {
      double x = tq_f16_to_f32(rows[(size_t)t * d + j]) - (mean ? mean[j] : 0.0f);
      ms[j] += x * x;
    }
  for (uint32_t j = 0; j < d; j++) perm[j] = (uint16_t)j;
  /* Insertion sort: d <= 2048 once per lane. */
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

static void column_mean(const uint16_t *rows, uint32_t n, uint32_t d, float *mean) {
  for (uint32_t j = 0; j < d; j++) {
    double s = 0.0;
    for (uint32_t t = 0; t < n; t++) s += tq_f16_to_f32(rows[(size_t)t * d + j]);
    mean[j] = (float)(s / n);
  }
}

/* Freezes the lane's means and channel orders from its pending rows, then
 * codes those rows into the blocks. */
static void calibrate(tq_cache *c, const tq_layer *L, tq_lane *ln) {
  uint32_t d = c->p.head_dim, n = ln->n_pend;
  if (c->p.center) {
    column_mean(ln->pend_k, n, d, ln->k_mean);
    column_mean(ln->pend_v, n, d, ln->v_mean);
  }
  if (L->k.n_groups == 2) channel_order(ln->pend_k, n, d, c->p.center ? ln->k_mean : NULL, ln->k_perm);
  if (L->v.n_groups == 2) channel_order(ln->pend_v, n, d, c->p.center ? ln->v_mean : NULL, ln->v_perm);
  ln->calibrated = 1;
  _Alignas(64) float k[TQ_MAX_DIM], v[TQ_MAX_DIM];
  for (uint32_t t = 0; t < n; t++) {
    from_f16(ln->pend_k + (size_t)t * d, k, d);
    from_f16(ln->pend_v + (size_t)t * d, v, d);
    store_comp(c, L, ln, k, v);
  }
  ln->n_pend = 0;
  /* The pending rows are only needed again if a truncation undoes this. */
  tq_cache_dealloc(c, ln->pend_k);
  tq_cache_dealloc(c, ln->pend_v);
  ln->pend_k = ln->pend_v = NULL;
}

/* A token leaves the window (or arrives with no window): to the pending rows
 * while the lane is uncalibrated, else into the blocks. */
static void retire(tq_cache *c, const tq_layer *L, tq_lane *ln, const float *k,
                   const float *v) {
  uint32_t d = c->p.head_dim;
  if (L->needs_calib && !ln->calibrated) {
    to_f16(k, ln->pend_k + (size_t)ln->n_pend * d, d);
    to_f16(v, ln->pend_v + (size_t)ln->n_pend * d, d);
    if (++ln->n_pend == c->p.calib_tokens) calibrate(c, L, ln);
  } else {
    store_comp(c, L, ln, k, v);
  }
}

static void push(tq_cache *c, const tq_layer *L, tq_lane *ln, const float *k,
                 const float *v) {
  const tq_cache_params *p = &c->p;
  uint32_t d = p->head_dim;
  if (p->mode == TQ_CACHE_TURBOQUANT && ln->n_sink < p->sink_tokens) {
    to_f16(k, ln->sink_k + (size_t)ln->n_sink * d, d);
    to_f16(v, ln->sink_v + (size_t)ln->n_sink * d, d);
    ln->n_sink++;
  } else if (p->mode == TQ_CACHE_TURBOQUANT && p->window_tokens > 0) {
    uint32_t W = p->window_tokens;
    if (ln->n_ring == W) {
      _Alignas(64) float ok[TQ_MAX_DIM], ov[TQ_MAX_DIM];
      from_f16(ln->ring_k + (size_t)ln->ring_head * d, ok, d);
      from_f16(ln->ring_v + (size_t)ln->ring_head * d, ov, d);
      ln->ring_head = ln->ring_head + 1 == W ? 0 : ln->ring_head + 1;
      ln->n_ring--;
      retire(c, L, ln, ok, ov);
    }
    uint32_t slot = tq_ring_slot(ln, W, ln->n_ring);
    to_f16(k, ln->ring_k + (size_t)slot * d, d);
    to_f16(v, ln->ring_v + (size_t)slot * d, d);
    ln->n_ring++;
  } else {
    retire(c, L, ln, k, v);
  }
}

/* Allocates what the lane needs for n more tokens (first-use buffers and
 * new blocks). On failure the lane's contents are unchanged (buffers
 * allocated here may stay allocated; blocks allocated here are freed). */
static tq_status lane_reserve(tq_cache *c, const tq_layer *L, tq_lane *ln, uint32_t n) {
  const tq_cache_params *p = &c->p;
  size_t row = (size_t)p->head_dim * sizeof(uint16_t);
  if (p->mode == TQ_CACHE_TURBOQUANT) {
    if (p->sink_tokens && !ln->sink_k) {
      ln->sink_k = tq_cache_alloc(c, row * p->sink_tokens);
      ln->sink_v = tq_cache_alloc(c, row * p->sink_tokens);
    }
    if (p->window_tokens && !ln->ring_k) {
      ln->ring_k = tq_cache_alloc(c, row * p->window_tokens);
      ln->ring_v = tq_cache_alloc(c, row * p->window_tokens);
    }
    if (L->needs_calib && !ln->k_mean) {
      ln->k_mean = tq_cache_alloc(c, p->head_dim * sizeof(float));
      ln->v_mean = tq_cache_alloc(c, p->head_dim * sizeof(float));
      ln->k_perm = tq_cache_alloc(c, p->head_dim * sizeof(uint16_t));
      ln->v_perm = tq_cache_alloc(c, p->head_dim * sizeof(uint16_t));
    }
    if (L->needs_calib && !ln->calibrated && !ln->pend_k) {
      ln->pend_k = tq_cache_alloc(c, row * p->calib_tokens);
      ln->pend_v = tq_cache_alloc(c, row * p->calib_tokens);
    }
    if ((p->sink_tokens && (!ln->sink_k || !ln->sink_v)) ||
        (p->window_tokens && (!ln->ring_k || !ln->ring_v)) ||
        (L->needs_calib && (!ln->k_mean || !ln->v_mean || !ln->k_perm || !ln->v_perm)) ||
        (L->needs_calib && !ln->calibrated && (!ln->pend_k || !ln->pend_v)))
      return TQ_ERR_OUT_OF_MEMORY;
  }
  flow f = {ln->n_sink, ln->n_comp, ln->n_pend, ln->n_ring, ln->calibrated};
  for (uint32_t i = 0; i < n; i++) flow_push(c, L, &f);
  uint32_t B = p->block_tokens;
  uint32_t need = (f.n_comp + B - 1) / B;
  if (need <= ln->n_blocks) return TQ_OK;
  if (need > ln->cap_blocks) {
    uint32_t cap = ln->cap_blocks ? ln->cap_blocks : 4;
    while (cap < need) cap *= 2;
    uint8_t **grown = tq_cache_alloc(c, cap * sizeof *grown);
    if (!grown) return TQ_ERR_OUT_OF_MEMORY;
    if (ln->n_blocks) memcpy(grown, ln->blocks, ln->n_blocks * sizeof *grown);
    tq_cache_dealloc(c, ln->blocks);
    ln->blocks = grown;
    ln->cap_blocks = cap;
  }
  uint32_t had = ln->n_blocks;
  for (uint32_t b = had; b < need; b++) {
    ln->blocks[b] = tq_cache_alloc(c, L->block_bytes);
    if (!ln->blocks[b]) {
      for (uint32_t k = had; k < b; k++) tq_cache_dealloc(c, ln->blocks[k]);
      return TQ_ERR_OUT_OF_MEMORY;
    }
  }
  ln->n_blocks = need;
  return TQ_OK;
}

/* TQ_CACHE_MAX_NORM: centering can at most double a norm, a decoded vector
 * can be up to about 1.5 times longer than its input, and the codes keep
 * norms in fp16 (65504), so 16000 leaves room for both. */

tq_status tq_cache_append(tq_cache *cache, uint32_t layer, const float *k, const float *v,
                          uint32_t n) {
  if (!cache || layer >= cache->p.n_layers || (n && (!k || !v))) return TQ_ERR_INVALID_ARGUMENT;
  if (n == 0) return TQ_OK;
  const tq_cache_params *p = &cache->p;
  tq_layer *L = &cache->layers[layer];
  uint32_t d = p->head_dim, H = p->n_kv_heads;
  if (n > p->max_tokens - tq_lane_tokens(&L->lanes[0])) return TQ_ERR_RANGE;
  for (size_t i = 0; i < (size_t)n * H; i++) {
    for (int side = 0; side < 2; side++) {
      const float *x = (side ? v : k) + i * d;
      double ss = 0.0;
      for (uint32_t j = 0; j < d; j++) ss += (double)x[j] * x[j];
      if (!isfinite(ss)) return TQ_ERR_NON_FINITE;
      if (ss > TQ_CACHE_MAX_NORM * TQ_CACHE_MAX_NORM) return TQ_ERR_RANGE;
    }
  }
  uint32_t blocks_before[4096];
  for (uint32_t h = 0; h < H; h++) {
    blocks_before[h] = L->lanes[h].n_blocks;
    tq_status st = lane_reserve(cache, L, &L->lanes[h], n);
    if (st != TQ_OK) {
      /* Give back the blocks this call added to earlier lanes. */
      for (uint32_t g = 0; g < h; g++) {
        tq_lane *ln = &L->lanes[g];
        while (ln->n_blocks > blocks_before[g]) tq_cache_dealloc(cache, ln->blocks[--ln->n_blocks]);
      }
      return st;
    }
  }
  for (uint32_t t = 0; t < n; t++)
    for (uint32_t h = 0; h < H; h++)
      push(cache, L, &L->lanes[h], k + ((size_t)t * H + h) * d, v + ((size_t)t * H + h) * d);
  return TQ_OK;
}

/* ------------------------------------------------------------------------ */
/* Truncate and reset                                                        */
/* ------------------------------------------------------------------------ */

static void lane_truncate(tq_cache *c, tq_lane *ln, uint32_t n) {
  if (n >= tq_lane_tokens(ln)) return;
  uint32_t keep_sink = n < ln->n_sink ? n : ln->n_sink;
  uint32_t rem = n - keep_sink;
  uint32_t keep_comp = rem < ln->n_comp ? rem : ln->n_comp;
  rem -= keep_comp;
  uint32_t keep_pend = rem < ln->n_pend ? rem : ln->n_pend;
  rem -= keep_pend;
  ln->n_sink = keep_sink;
  ln->n_comp = keep_comp;
  ln->n_pend = keep_pend;
  ln->n_ring = rem < ln->n_ring ? rem : ln->n_ring; /* keeps the oldest entries */
  uint32_t B = c->p.block_tokens;
  uint32_t used = (keep_comp + B - 1) / B;
  while (ln->n_blocks > used) tq_cache_dealloc(c, ln->blocks[--ln->n_blocks]);
  if (ln->calibrated && keep_comp == 0) {
    /* No coded token is left: the next tokens calibrate afresh. */
    ln->calibrated = 0;
  }
  if (ln->n_ring == 0) ln->ring_head = 0;
}

tq_status tq_cache_truncate(tq_cache *cache, uint32_t n_tokens) {
  if (!cache) return TQ_ERR_INVALID_ARGUMENT;
  for (uint32_t l = 0; l < cache->p.n_layers; l++)
    for (uint32_t h = 0; h < cache->p.n_kv_heads; h++)
      lane_truncate(cache, &cache->layers[l].lanes[h], n_tokens);
  return TQ_OK;
}

tq_status tq_cache_reset(tq_cache *cache) {
  if (!cache) return TQ_ERR_INVALID_ARGUMENT;
  for (uint32_t l = 0; l < cache->p.n_layers; l++)
    for (uint32_t h = 0; h < cache->p.n_kv_heads; h++) tq_lane_free(cache, &cache->layers[l].lanes[h]);
  return TQ_OK;
}
