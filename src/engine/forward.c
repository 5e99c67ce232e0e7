/*
 * forward.c - sessions: the transformer forward pass over a batch of tokens,
 * with keys and values going into a tq_cache and attention computed by the
 * cache on what it stores (codes or fp16).
 *
 * Per layer, for the n tokens of a step (x: (n, n_embd)):
 *   h = rmsnorm(x) * attn_norm
 *   q, k, v = h Wq (+bq), h Wk (+bk), h Wv (+bv)     (qwen3: per-head rmsnorm on q, k)
 *   rotate q, k by position (RoPE)
 *   cache <- k, v;  a = attention(q) over the cache
 *   x += a Wo
 *   h = rmsnorm(x) * ffn_norm
 *   x += (silu(h Wgate) * h Wup) Wdown
 * then logits = rmsnorm(x) * output_norm @ Wout.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "quant.h"

#define TQ_UBATCH 256 /* tokens per internal step: bounds the scratch memory */

struct tq_session {
  const tq_model *m;
  tq_cache *cache;
  tq_pool *pool;
  uint32_t n_ctx;
  uint32_t pos;
  float *inv_freq;  /* (n_rot / 2,) rotation frequencies per pair */
  /* Scratch for up to TQ_UBATCH tokens. */
  float *x;         /* (ub, n_embd) residual stream */
  float *h;         /* (ub, n_embd) normed input of a block */
  float *q;         /* (ub, n_heads * head_dim) */
  float *k, *v;     /* (ub, n_kv_heads * head_dim) */
  float *att;       /* (ub, n_heads * head_dim) attention output */
  float *gate, *up; /* (ub, n_ff) */
  float *o;         /* (ub, n_embd) projection output */
};

void tq_session_free(tq_session *s) {
  if (!s) return;
  tq_cache_free(s->cache);
  free(s->inv_freq);
  free(s->x), free(s->h), free(s->q), free(s->k), free(s->v), free(s->att);
  free(s->gate), free(s->up), free(s->o);
  free(s);
}

tq_status tq_session_create(const tq_model *m, const tq_cache_params *cache, uint32_t n_ctx,
                            tq_pool *pool, tq_session **out) {
  if (out) *out = NULL;
  if (!m || !out || n_ctx == 0) return TQ_ERR_INVALID_ARGUMENT;
  const tq_model_info *I = &m->info;
  tq_session *s = calloc(1, sizeof *s);
  if (!s) return TQ_ERR_OUT_OF_MEMORY;
  s->m = m;
  s->pool = pool;
  s->n_ctx = n_ctx;
  tq_cache_params p = cache ? *cache : tq_cache_params_default(I->n_layers, I->n_kv_heads, I->head_dim);
  p.n_layers = I->n_layers;
  p.n_kv_heads = I->n_kv_heads;
  p.head_dim = I->head_dim;
  p.max_tokens = n_ctx;
  tq_status st = tq_cache_create(&p, &s->cache);
  if (st != TQ_OK) {
    tq_engine_fail(st, "KV cache: %s", tq_status_message(st));
    tq_session_free(s);
    return st;
  }
  size_t ub = TQ_UBATCH, E = I->n_embd, QD = (size_t)I->n_heads * I->head_dim,
         KD = (size_t)I->n_kv_heads * I->head_dim;
  s->inv_freq = malloc(I->n_rot / 2 * sizeof *s->inv_freq);
  s->x = malloc(ub * E * sizeof(float));
  s->h = malloc(ub * E * sizeof(float));
  s->o = malloc(ub * E * sizeof(float));
  s->q = malloc(ub * QD * sizeof(float));
  s->att = malloc(ub * QD * sizeof(float));
  s->k = malloc(ub * KD * sizeof(float));
  s->v = malloc(ub * KD * sizeof(float));
  s->gate = malloc(ub * I->n_ff * sizeof(float));
  s->up = malloc(ub * I->n_ff * sizeof(float));
  if (!s->inv_freq || !s->x || !s->h || !s->o || !s->q || !s->att || !s->k || !s->v || !s->gate || !s->up) {
    tq_session_free(s);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  for (uint32_t i = 0; i < I->n_rot / 2; i++) {
    double f = pow((double)I->rope_base, -2.0 * i / (double)I->n_rot);
    if (m->rope_factors) f /= m->rope_factors[i];
    s->inv_freq[i] = (float)f;
  }
  *out = s;
  return TQ_OK;
}

uint32_t tq_session_position(const tq_session *s) { return s ? s->pos : 0; }
const tq_cache *tq_session_cache(const tq_session *s) { return s ? s->cache : NULL; }

tq_status tq_session_truncate(tq_session *s, uint32_t n) {
  if (!s) return TQ_ERR_INVALID_ARGUMENT;
  if (n >= s->pos) return TQ_OK;
  tq_status st = tq_cache_truncate(s->cache, n);
  if (st == TQ_OK) s->pos = n;
  return st;
}

/* out[t] = x[t] / rms(x[t]) * w for n rows of d. */
static void rmsnorm(const float *x, const float *w, float *out, uint32_t n, uint32_t d, float eps) {
  for (uint32_t t = 0; t < n; t++) {
    const float *xr = x + (size_t)t * d;
    float *o = out + (size_t)t * d;
    double ss = 0.0;
    for (uint32_t j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
    float inv = (float)(1.0 / sqrt(ss / d + eps));
    for (uint32_t j = 0; j < d; j++) o[j] = xr[j] * inv * w[j];
  }
}

/* Rotates the first n_rot dims of each head of n tokens at positions
 * pos0.. (x: (n, heads, head_dim)). */
static void rope(const tq_session *s, float *x, uint32_t n, uint32_t heads, uint32_t pos0) {
  const tq_model_info *I = &s->m->info;
  uint32_t hd = I->head_dim, half = I->n_rot / 2;
  for (uint32_t t = 0; t < n; t++) {
    float p = (float)(pos0 + t);
    for (uint32_t i = 0; i < half; i++) {
      float angle = p * s->inv_freq[i];
      float c = cosf(angle), sn = sinf(angle);
      for (uint32_t h = 0; h < heads; h++) {
        float *v = x + ((size_t)t * heads + h) * hd;
        uint32_t a = I->rope_neox ? i : 2 * i, b = I->rope_neox ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * sn;
        v[b] = x0 * sn + x1 * c;
      }
    }
  }
}

static void add_bias(float *x, const float *b, uint32_t n, uint32_t d) {
  if (!b) return;
  for (uint32_t t = 0; t < n; t++)
    for (uint32_t j = 0; j < d; j++) x[(size_t)t * d + j] += b[j];
}

static tq_status matmul(const tq_session *s, const tq_weight *w, const float *x, uint32_t n, float *y) {
  return tq_matmul(w->type, w->data, w->rows, w->cols, x, n, y, s->pool);
}

/* One step of n <= TQ_UBATCH tokens; logits for the rows asked for. */
static tq_status step(tq_session *s, const int32_t *tokens, uint32_t n, float *logits, int all_logits) {
  const tq_model *m = s->m;
  const tq_model_info *I = &m->info;
  uint32_t E = I->n_embd, hd = I->head_dim, QD = I->n_heads * hd, KD = I->n_kv_heads * hd;
  tq_status st;
  for (uint32_t t = 0; t < n; t++) {
    st = tq_row_to_float(m->tok_embd.type, m->tok_embd.data, E, (uint64_t)tokens[t], s->x + (size_t)t * E);
    if (st != TQ_OK) return st;
  }
  float scale = 1.0f / sqrtf((float)hd);
  for (uint32_t l = 0; l < I->n_layers; l++) {
    const tq_layer_weights *L = &m->layers[l];
    rmsnorm(s->x, L->attn_norm, s->h, n, E, I->rms_eps);
    if ((st = matmul(s, &L->wq, s->h, n, s->q)) != TQ_OK) return st;
    if ((st = matmul(s, &L->wk, s->h, n, s->k)) != TQ_OK) return st;
    if ((st = matmul(s, &L->wv, s->h, n, s->v)) != TQ_OK) return st;
    add_bias(s->q, L->bq, n, QD);
    add_bias(s->k, L->bk, n, KD);
    add_bias(s->v, L->bv, n, KD);
    if (L->q_norm) {
      rmsnorm(s->q, L->q_norm, s->q, n * I->n_heads, hd, I->rms_eps);
      rmsnorm(s->k, L->k_norm, s->k, n * I->n_kv_heads, hd, I->rms_eps);
    }
    rope(s, s->q, n, I->n_heads, s->pos);
    rope(s, s->k, n, I->n_kv_heads, s->pos);
    if ((st = tq_cache_append(s->cache, l, s->k, s->v, n)) != TQ_OK)
      return tq_engine_fail(st, "layer %u: storing keys and values: %s", l, tq_status_message(st));
    if ((st = tq_cache_attention(s->cache, l, s->q, n, I->n_heads, scale, s->att, s->pool)) != TQ_OK)
      return tq_engine_fail(st, "layer %u: attention: %s", l, tq_status_message(st));
    if ((st = matmul(s, &L->wo, s->att, n, s->o)) != TQ_OK) return st;
    for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] += s->o[i];
    rmsnorm(s->x, L->ffn_norm, s->h, n, E, I->rms_eps);
    if ((st = matmul(s, &L->w_gate, s->h, n, s->gate)) != TQ_OK) return st;
    if ((st = matmul(s, &L->w_up, s->h, n, s->up)) != TQ_OK) return st;
    for (size_t i = 0; i < (size_t)n * I->n_ff; i++) {
      float g = s->gate[i];
      s->gate[i] = g / (1.0f + expf(-g)) * s->up[i];
    }
    if ((st = matmul(s, &L->w_down, s->gate, n, s->o)) != TQ_OK) return st;
    for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] += s->o[i];
  }
  if (logits) {
    uint32_t first = all_logits ? 0 : n - 1, rows = all_logits ? n : 1;
    rmsnorm(s->x + (size_t)first * E, m->output_norm, s->h, rows, E, I->rms_eps);
    if ((st = matmul(s, &m->output, s->h, rows, logits)) != TQ_OK) return st;
  }
  return TQ_OK;
}

tq_status tq_session_eval(tq_session *s, const int32_t *tokens, uint32_t n, float *logits, int all_logits) {
  if (!s || (!tokens && n)) return TQ_ERR_INVALID_ARGUMENT;
  if (n == 0) return TQ_OK;
  const tq_model_info *I = &s->m->info;
  for (uint32_t t = 0; t < n; t++)
    if (tokens[t] < 0 || (uint32_t)tokens[t] >= I->n_vocab)
      return tq_engine_fail(TQ_ERR_INVALID_ARGUMENT, "token id %d is outside the vocabulary (%u)", tokens[t],
                            I->n_vocab);
  if (n > s->n_ctx - s->pos)
    return tq_engine_fail(TQ_ERR_RANGE, "context overflow: %u tokens at position %u exceed the context of %u",
                          n, s->pos, s->n_ctx);
  uint32_t start = s->pos;
  for (uint32_t done = 0; done < n;) {
    uint32_t len = n - done < TQ_UBATCH ? n - done : TQ_UBATCH;
    int last = done + len == n;
    float *lg = NULL;
    if (logits && all_logits) lg = logits + (size_t)done * I->n_vocab;
    else if (logits && last) lg = logits;
    tq_status st = step(s, tokens + done, len, lg, all_logits);
    if (st != TQ_OK) {
      /* Put the cache back where this call found it. */
      tq_cache_truncate(s->cache, start);
      s->pos = start;
      return st;
    }
    s->pos += len;
    done += len;
  }
  return TQ_OK;
}
