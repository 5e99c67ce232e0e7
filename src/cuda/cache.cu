/*
 * cache.cu - the device KV cache: per (layer, sequence) a list of blocks of
 * block_tokens tokens (all KV heads of that layer), allocated from slabs of
 * device memory as tokens arrive and never moved; a block table per layer
 * that the kernels read; token counts on the host and on the device.
 *
 * Block layout (tq_block_layout): key codes (H, B, kcb), value codes
 * (H, B, vcb), key norms (H, B) fp16, value norms (H, B) fp16. Codes of one
 * KV head sit token after token, so a warp reads them with 16-byte loads that
 * cover whole 32-byte sectors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

struct tq_cuda_cache {
  tq_cuda_ctx *ctx;
  tq_cuda_cache_params p;
  tq_codec *kcpu, *vcpu;          /* the CPU codecs the device codecs copy */
  tq_cuda_codec *kc, *vc;
  tq_block_layout lay;
  uint32_t max_blocks;            /* per (layer, seq) */
  uint8_t **h_table;              /* (n_layers, n_seqs, max_blocks) device block pointers */
  uint8_t **d_table;              /* device copy */
  uint32_t *h_lens, *d_lens;      /* (n_layers, n_seqs) tokens */
  uint32_t *h_nblk;               /* (n_layers, n_seqs) blocks in use */
  void **slabs;                   /* device allocations the blocks come from */
  uint32_t n_slabs;
  uint8_t **free_blk;             /* blocks not in use */
  uint32_t n_free, cap_free;
  float *d_qrot, *d_ml, *d_acc;   /* scratch */
  uint32_t *d_counts;             /* (n_seqs, H) decode's finished splits, zero between calls */
  uint32_t slots[9];              /* decode blocks resident at once, by G; 0 until asked */
  size_t cap_qrot, cap_ml, cap_acc; /* in floats */
  size_t bytes;
};

extern "C" tq_cuda_cache_params tq_cuda_cache_params_default(uint32_t n_layers,
                                                             uint32_t n_kv_heads,
                                                             uint32_t head_dim) {
  tq_cuda_cache_params p;
  memset(&p, 0, sizeof p);
  p.n_layers = n_layers;
  p.n_kv_heads = n_kv_heads;
  p.head_dim = head_dim;
  p.n_seqs = 1;
  p.max_tokens = 131072;
  p.block_tokens = 256;
  p.key_bits = 4;
  p.value_bits = 2;
  p.rotation = TQ_ROTATION_HAAR;
  p.key_seed = TQ_DEFAULT_KEY_SEED;
  p.value_seed = TQ_DEFAULT_VALUE_SEED;
  return p;
}

static tq_status validate(const tq_cuda_cache_params *p) {
  if (p->n_layers < 1 || p->n_layers > 4096 || p->n_kv_heads < 1 || p->n_kv_heads > 4096 ||
      p->n_seqs < 1 || p->n_seqs > 65535 || p->max_tokens < 1)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->block_tokens < 64 || p->block_tokens > 65536 || p->block_tokens % 64)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->head_dim < TQ_MIN_DIM || p->head_dim > TQ_MAX_DIM) return TQ_ERR_UNSUPPORTED_DIM;
  if (p->key_bits < TQ_MIN_BITS || p->key_bits > TQ_MAX_BITS || p->value_bits < TQ_MIN_BITS ||
      p->value_bits > TQ_MAX_BITS)
    return TQ_ERR_UNSUPPORTED_BITS;
  if (p->rotation != TQ_ROTATION_HAAR && p->rotation != TQ_ROTATION_HADAMARD)
    return TQ_ERR_INVALID_ARGUMENT;
  uint32_t d = p->head_dim;
  if (p->rotation == TQ_ROTATION_HADAMARD && (d & (d - 1))) return TQ_ERR_UNSUPPORTED_ROTATION;
  return TQ_OK;
}

/* A codec exactly as tq_cache builds it (kvcache.c, shared_codec). */
static tq_status cpu_codec(const tq_cuda_cache_params *p, uint32_t bits, uint64_t seed,
                           tq_codec **out) {
  tq_codec_params c = tq_codec_params_default(p->head_dim, bits);
  c.rotation = p->rotation;
  c.seed = seed;
  return tq_codec_create(&c, out);
}

extern "C" void tq_cuda_cache_free(tq_cuda_cache *cache) {
  if (!cache) return;
  if (cache->ctx) cudaStreamSynchronize(cache->ctx->stream);
  tq_cuda_codec_free(cache->kc);
  tq_cuda_codec_free(cache->vc);
  tq_codec_free(cache->kcpu);
  tq_codec_free(cache->vcpu);
  for (uint32_t i = 0; i < cache->n_slabs; i++) cudaFree(cache->slabs[i]);
  cudaFree(cache->d_table);
  cudaFree(cache->d_lens);
  cudaFree(cache->d_qrot);
  cudaFree(cache->d_ml);
  cudaFree(cache->d_acc);
  cudaFree(cache->d_counts);
  free(cache->slabs);
  free(cache->free_blk);
  free(cache->h_table);
  free(cache->h_lens);
  free(cache->h_nblk);
  free(cache);
}

extern "C" tq_status tq_cuda_cache_create(tq_cuda_ctx *ctx, const tq_cuda_cache_params *params,
                                          tq_cuda_cache **out) {
  if (out) *out = NULL;
  if (!ctx || !params || !out) return TQ_ERR_INVALID_ARGUMENT;
  tq_status st = validate(params);
  if (st != TQ_OK) return st;
  tq_cuda_cache *c = (tq_cuda_cache *)calloc(1, sizeof *c);
  if (!c) return TQ_ERR_OUT_OF_MEMORY;
  c->ctx = ctx;
  c->p = *params;
  const tq_cuda_cache_params *p = params;
  st = cpu_codec(p, p->key_bits, p->key_seed, &c->kcpu);
  if (st == TQ_OK) st = cpu_codec(p, p->value_bits, p->value_seed, &c->vcpu);
  if (st == TQ_OK) st = tq_cuda_codec_create(ctx, c->kcpu, &c->kc);
  if (st == TQ_OK) st = tq_cuda_codec_create(ctx, c->vcpu, &c->vc);
  if (st != TQ_OK) {
    tq_cuda_cache_free(c);
    return st;
  }
  tq_block_layout *L = &c->lay;
  L->B = p->block_tokens;
  L->H = p->n_kv_heads;
  L->kcb = (uint32_t)c->kc->code_bytes;
  L->vcb = (uint32_t)c->vc->code_bytes;
  size_t hb = (size_t)L->H * L->B;
  L->off_vc = hb * L->kcb;
  L->off_kn = L->off_vc + hb * L->vcb;
  L->off_vn = L->off_kn + hb * 2;
  L->bytes = (L->off_vn + hb * 2 + 255) & ~(size_t)255;
  c->max_blocks = (p->max_tokens + p->block_tokens - 1) / p->block_tokens;
  size_t lanes = (size_t)p->n_layers * p->n_seqs;
  size_t tab = lanes * c->max_blocks;
  c->h_table = (uint8_t **)calloc(tab, sizeof *c->h_table);
  c->h_lens = (uint32_t *)calloc(lanes, sizeof *c->h_lens);
  c->h_nblk = (uint32_t *)calloc(lanes, sizeof *c->h_nblk);
  if (!c->h_table || !c->h_lens || !c->h_nblk) st = TQ_ERR_OUT_OF_MEMORY;
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_table, tab * sizeof(uint8_t *)));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_lens, lanes * sizeof(uint32_t)));
  const size_t counts = (size_t)p->n_seqs * p->n_kv_heads;
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_counts, counts * sizeof(uint32_t)));
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMemsetAsync(c->d_table, 0, tab * sizeof(uint8_t *), ctx->stream));
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMemsetAsync(c->d_lens, 0, lanes * sizeof(uint32_t), ctx->stream));
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMemsetAsync(c->d_counts, 0, counts * sizeof(uint32_t), ctx->stream));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaStreamSynchronize(ctx->stream));
  if (st != TQ_OK) {
    tq_cuda_cache_free(c);
    return st;
  }
  c->bytes = tab * sizeof(uint8_t *) + lanes * sizeof(uint32_t) + counts * sizeof(uint32_t) +
             2 * 2 * (size_t)p->head_dim * p->head_dim * sizeof(float);
  *out = c;
  return TQ_OK;
}

extern "C" uint32_t tq_cuda_cache_tokens(const tq_cuda_cache *cache, uint32_t layer, uint32_t seq) {
  if (!cache || layer >= cache->p.n_layers || seq >= cache->p.n_seqs) return 0;
  return cache->h_lens[(size_t)layer * cache->p.n_seqs + seq];
}

extern "C" size_t tq_cuda_cache_bytes(const tq_cuda_cache *cache) { return cache ? cache->bytes : 0; }

extern "C" size_t tq_cuda_cache_token_bytes(const tq_cuda_cache *cache) {
  return cache ? cache->kc->record_bytes + cache->vc->record_bytes : 0;
}

/* Takes a free block, allocating a new slab when none is left. */
static tq_status take_block(tq_cuda_cache *c, uint8_t **out) {
  if (c->n_free == 0) {
    size_t per = (size_t)(64u << 20) / c->lay.bytes;
    if (per < 1) per = 1;
    if (per > 1024) per = 1024;
    void **slabs = (void **)realloc(c->slabs, (c->n_slabs + 1) * sizeof *slabs);
    if (!slabs) return TQ_ERR_OUT_OF_MEMORY;
    c->slabs = slabs;
    if (c->cap_free < per) {
      uint8_t **fb = (uint8_t **)realloc(c->free_blk, per * sizeof *fb);
      if (!fb) return TQ_ERR_OUT_OF_MEMORY;
      c->free_blk = fb;
      c->cap_free = (uint32_t)per;
    }
    void *slab = NULL;
    tq_status st = tq_cuda_fail(c->ctx, cudaMalloc(&slab, per * c->lay.bytes));
    if (st != TQ_OK) return st;
    /* Zeroed: the padding slots of a block hold finite norms. */
    st = tq_cuda_fail(c->ctx, cudaMemsetAsync(slab, 0, per * c->lay.bytes, c->ctx->stream));
    if (st != TQ_OK) {
      cudaFree(slab);
      return st;
    }
    c->slabs[c->n_slabs++] = slab;
    c->bytes += per * c->lay.bytes;
    for (size_t i = per; i-- > 0;) c->free_blk[c->n_free++] = (uint8_t *)slab + i * c->lay.bytes;
  }
  *out = c->free_blk[--c->n_free];
  return TQ_OK;
}

/* Gives a block back to the free list. */
static tq_status give_block(tq_cuda_cache *c, uint8_t *blk) {
  if (c->n_free == c->cap_free) {
    uint32_t cap = c->cap_free ? c->cap_free * 2 : 64;
    uint8_t **fb = (uint8_t **)realloc(c->free_blk, cap * sizeof *fb);
    if (!fb) return TQ_ERR_OUT_OF_MEMORY;
    c->free_blk = fb;
    c->cap_free = cap;
  }
  c->free_blk[c->n_free++] = blk;
  return TQ_OK;
}

/* Makes sure (layer, seq) has blocks for `tokens` tokens; uploads the new
 * table entries. */
static tq_status reserve(tq_cuda_cache *c, uint32_t layer, uint32_t seq, uint32_t tokens) {
  size_t lane = (size_t)layer * c->p.n_seqs + seq;
  uint32_t need = (tokens + c->p.block_tokens - 1) / c->p.block_tokens;
  uint32_t have = c->h_nblk[lane];
  if (need <= have) return TQ_OK;
  uint8_t **row = c->h_table + lane * c->max_blocks;
  for (uint32_t b = have; b < need; b++) {
    tq_status st = take_block(c, &row[b]);
    if (st != TQ_OK) {
      need = b;
      break;
    }
  }
  c->h_nblk[lane] = need;
  tq_status st = tq_cuda_fail(c->ctx, cudaMemcpyAsync(c->d_table + lane * c->max_blocks + have,
                                                      row + have, (need - have) * sizeof *row,
                                                      cudaMemcpyHostToDevice, c->ctx->stream));
  if (st != TQ_OK) return st;
  uint32_t want = (tokens + c->p.block_tokens - 1) / c->p.block_tokens;
  return need < want ? TQ_ERR_OUT_OF_MEMORY : TQ_OK;
}

static tq_status set_len(tq_cuda_cache *c, uint32_t layer, uint32_t seq, uint32_t len) {
  size_t lane = (size_t)layer * c->p.n_seqs + seq;
  c->h_lens[lane] = len;
  /* Pageable source: the runtime has copied it when the call returns. */
  return tq_cuda_fail(c->ctx, cudaMemcpyAsync(c->d_lens + lane, c->h_lens + lane, sizeof(uint32_t),
                                              cudaMemcpyHostToDevice, c->ctx->stream));
}

extern "C" tq_status tq_cuda_cache_append(tq_cuda_cache *cache, uint32_t layer, uint32_t seq,
                                          const void *k, const void *v, tq_cuda_dtype dtype,
                                          uint32_t n) {
  if (!cache || layer >= cache->p.n_layers || seq >= cache->p.n_seqs || (n && (!k || !v)))
    return TQ_ERR_INVALID_ARGUMENT;
  if (dtype != TQ_CUDA_F32 && dtype != TQ_CUDA_F16 && dtype != TQ_CUDA_BF16)
    return TQ_ERR_INVALID_ARGUMENT;
  if (n == 0) return TQ_OK;
  tq_cuda_ctx *ctx = cache->ctx;
  uint32_t T = tq_cuda_cache_tokens(cache, layer, seq);
  if (n > cache->p.max_tokens - T) return TQ_ERR_RANGE;
  tq_status st = reserve(cache, layer, seq, T + n);
  if (st != TQ_OK) return st;
  size_t lane = (size_t)layer * cache->p.n_seqs + seq;
  tq_enc_out o;
  memset(&o, 0, sizeof o);
  o.to_cache = 1;
  o.table = cache->d_table + lane * cache->max_blocks;
  o.block_tokens = cache->lay.B;
  o.n_heads = cache->lay.H;
  o.first = T;
  size_t nv = (size_t)n * cache->lay.H;
  st = tq_cuda_err_reset(ctx);
  o.codes_off = 0;
  o.norms_off = cache->lay.off_kn;
  if (st == TQ_OK) st = tq_cuda_encode_launch(ctx, cache->kc, k, dtype, nv, &o, TQ_CACHE_MAX_NORM, 0);
  o.codes_off = cache->lay.off_vc;
  o.norms_off = cache->lay.off_vn;
  if (st == TQ_OK) st = tq_cuda_encode_launch(ctx, cache->vc, v, dtype, nv, &o, TQ_CACHE_MAX_NORM, 1);
  if (st == TQ_OK) st = tq_cuda_err_read(ctx);
  if (st == TQ_OK) st = set_len(cache, layer, seq, T + (uint32_t)n);
  return st;
}

extern "C" tq_status tq_cuda_cache_append_records(tq_cuda_cache *cache, uint32_t layer,
                                                  uint32_t seq, const void *k_records,
                                                  const void *v_records, uint32_t n) {
  if (!cache || layer >= cache->p.n_layers || seq >= cache->p.n_seqs ||
      (n && (!k_records || !v_records)))
    return TQ_ERR_INVALID_ARGUMENT;
  if (n == 0) return TQ_OK;
  uint32_t T = tq_cuda_cache_tokens(cache, layer, seq);
  if (n > cache->p.max_tokens - T) return TQ_ERR_RANGE;
  tq_status st = reserve(cache, layer, seq, T + n);
  if (st != TQ_OK) return st;
  size_t lane = (size_t)layer * cache->p.n_seqs + seq;
  st = tq_cuda_copy_records(cache->ctx, &cache->lay, cache->d_table + lane * cache->max_blocks, T,
                            n, (uint8_t *)k_records, (uint8_t *)v_records, 1);
  if (st == TQ_OK) st = set_len(cache, layer, seq, T + n);
  return st;
}

extern "C" tq_status tq_cuda_cache_read_records(tq_cuda_cache *cache, uint32_t layer, uint32_t seq,
                                                uint32_t first, uint32_t n, void *k_records,
                                                void *v_records) {
  if (!cache || layer >= cache->p.n_layers || seq >= cache->p.n_seqs ||
      (n && (!k_records || !v_records)))
    return TQ_ERR_INVALID_ARGUMENT;
  uint32_t T = tq_cuda_cache_tokens(cache, layer, seq);
  if (first > T || n > T - first) return TQ_ERR_INVALID_ARGUMENT;
  if (n == 0) return TQ_OK;
  tq_cuda_ctx *ctx = cache->ctx;
  size_t kb = (size_t)n * cache->lay.H * cache->kc->record_bytes;
  size_t vb = (size_t)n * cache->lay.H * cache->vc->record_bytes;
  uint8_t *tmp = NULL;
  tq_status st = tq_cuda_fail(ctx, cudaMalloc((void **)&tmp, kb + vb));
  if (st != TQ_OK) return st;
  size_t lane = (size_t)layer * cache->p.n_seqs + seq;
  st = tq_cuda_copy_records(ctx, &cache->lay, cache->d_table + lane * cache->max_blocks, first, n,
                            tmp, tmp + kb, 0);
  if (st == TQ_OK) st = tq_cuda_download(ctx, k_records, tmp, kb);
  if (st == TQ_OK) st = tq_cuda_download(ctx, v_records, tmp + kb, vb);
  cudaFree(tmp);
  return st;
}

extern "C" tq_status tq_cuda_cache_truncate(tq_cuda_cache *cache, uint32_t n_tokens) {
  if (!cache) return TQ_ERR_INVALID_ARGUMENT;
  tq_status st = TQ_OK;
  for (uint32_t l = 0; l < cache->p.n_layers; l++) {
    for (uint32_t s = 0; s < cache->p.n_seqs; s++) {
      size_t lane = (size_t)l * cache->p.n_seqs + s;
      if (cache->h_lens[lane] <= n_tokens) continue;
      uint32_t keep = (n_tokens + cache->p.block_tokens - 1) / cache->p.block_tokens;
      uint8_t **row = cache->h_table + lane * cache->max_blocks;
      /* Blocks stay in the table until reused; the kernels never read past
       * the token count. */
      while (cache->h_nblk[lane] > keep && st == TQ_OK) {
        st = give_block(cache, row[cache->h_nblk[lane] - 1]);
        if (st == TQ_OK) cache->h_nblk[lane]--;
      }
      tq_status s2 = set_len(cache, l, s, n_tokens);
      if (st == TQ_OK) st = s2;
    }
  }
  if (st == TQ_OK) st = tq_cuda_fail(cache->ctx, cudaStreamSynchronize(cache->ctx->stream));
  return st == TQ_OK ? TQ_OK : st;
}

/* Grows a scratch array to at least n floats. */
static tq_status scratch(tq_cuda_cache *c, float **p, size_t *cap, size_t n) {
  if (*cap >= n) return TQ_OK;
  cudaStreamSynchronize(c->ctx->stream);
  cudaFree(*p);
  *p = NULL;
  c->bytes -= *cap * sizeof(float);
  *cap = 0;
  tq_status st = tq_cuda_fail(c->ctx, cudaMalloc((void **)p, n * sizeof(float)));
  if (st != TQ_OK) return st;
  *cap = n;
  c->bytes += n * sizeof(float);
  return TQ_OK;
}

/* Splits per (sequence, KV head): as many as make the grid one wave of
 * resident blocks (`slots`), each a multiple of 64 tokens and at least 256
 * (one tile per warp), at most TQ_CUDA_MAX_SPLITS, and one or an even
 * number. With more (sequence, KV head) lanes than slots every lane is one
 * split. */
static void choose_splits(const tq_cuda_cache *c, uint32_t slots, uint32_t max_len,
                          uint32_t *split_tokens, uint32_t *n_splits) {
  uint64_t lanes = (uint64_t)c->p.n_seqs * c->p.n_kv_heads;
  uint64_t want = slots / lanes;
  if (want < 1) want = 1;
  if (want > TQ_CUDA_MAX_SPLITS) want = TQ_CUDA_MAX_SPLITS;
  uint64_t per = ((uint64_t)max_len + want - 1) / want;
  if (per < 256) per = 256;
  per = (per + 63) / 64 * 64;
  uint64_t n = max_len ? ((uint64_t)max_len + per - 1) / per : 1;
  /* One split or an even number: the kernel runs splits in pairs of blocks.
   * Below `want` one more (the last shorter or empty), else one fewer. */
  if (n > 1 && n % 2) {
    if (n < want) {
      n++;
    } else {
      per = ((uint64_t)max_len + n - 2) / (n - 1);
      if (per < 256) per = 256;
      per = (per + 63) / 64 * 64;
      n = ((uint64_t)max_len + per - 1) / per;
      if (n > 1 && n % 2) n++;
    }
  }
  *split_tokens = (uint32_t)per;
  *n_splits = (uint32_t)n;
}

extern "C" tq_status tq_cuda_cache_attention_decode(tq_cuda_cache *cache, uint32_t layer,
                                                    const float *q, uint32_t n_q_heads,
                                                    float scale, float *out) {
  if (!cache || !q || !out || layer >= cache->p.n_layers || !isfinite(scale))
    return TQ_ERR_INVALID_ARGUMENT;
  uint32_t H = cache->p.n_kv_heads, d = cache->p.head_dim, S = cache->p.n_seqs;
  if (n_q_heads == 0 || n_q_heads % H || n_q_heads / H > 8) return TQ_ERR_INVALID_ARGUMENT;
  if (!tq_cuda_attention_supported(d, cache->p.key_bits, cache->p.value_bits))
    return TQ_ERR_UNSUPPORTED;
  uint32_t max_len = 0;
  for (uint32_t s = 0; s < S; s++) {
    uint32_t t = cache->h_lens[(size_t)layer * S + s];
    max_len = t > max_len ? t : max_len;
  }
  tq_decode_call call;
  memset(&call, 0, sizeof call);
  call.G = n_q_heads / H;
  tq_status st = TQ_OK;
  if (!cache->slots[call.G])
    st = tq_cuda_decode_slots(cache->ctx, cache->kc, cache->vc, &cache->lay, call.G,
                              &cache->slots[call.G]);
  if (st != TQ_OK) return st;
  choose_splits(cache, cache->slots[call.G], max_len, &call.split_tokens, &call.n_splits);
  /* Partials: one per pair of splits, none with one or two splits. */
  size_t rows = (size_t)S * n_q_heads, parts = call.n_splits > 2 ? call.n_splits / 2 : 0;
  st = scratch(cache, &cache->d_ml, &cache->cap_ml, rows * parts * 2);
  if (st == TQ_OK) st = scratch(cache, &cache->d_acc, &cache->cap_acc, rows * parts * d);
  if (st != TQ_OK) return st;
  call.table = cache->d_table + (size_t)layer * S * cache->max_blocks;
  call.max_blocks = cache->max_blocks;
  call.lens = cache->d_lens + (size_t)layer * S;
  call.n_seqs = S;
  call.q = q;
  call.scale = scale;
  call.out = out;
  call.part_ml = cache->d_ml;
  call.part_acc = cache->d_acc;
  call.counts = cache->d_counts;
  return tq_cuda_decode(cache->ctx, cache->kc, cache->vc, &cache->lay, &call);
}

extern "C" tq_status tq_cuda_cache_attention_prefill(tq_cuda_cache *cache, uint32_t layer,
                                                     uint32_t seq, const float *q, uint32_t n_q,
                                                     uint32_t n_q_heads, float scale, float *out) {
  if (!cache || !q || !out || layer >= cache->p.n_layers || seq >= cache->p.n_seqs ||
      !isfinite(scale) || n_q == 0 || n_q > 65535)
    return TQ_ERR_INVALID_ARGUMENT;
  uint32_t H = cache->p.n_kv_heads, d = cache->p.head_dim;
  if (n_q_heads == 0 || n_q_heads % H || n_q_heads > 65535) return TQ_ERR_INVALID_ARGUMENT;
  uint32_t T = tq_cuda_cache_tokens(cache, layer, seq);
  if (n_q > T) return TQ_ERR_INVALID_ARGUMENT;
  if (!tq_cuda_attention_supported(d, cache->p.key_bits, cache->p.value_bits))
    return TQ_ERR_UNSUPPORTED;
  size_t rows = (size_t)n_q * n_q_heads;
  tq_status st = scratch(cache, &cache->d_qrot, &cache->cap_qrot, rows * d);
  if (st == TQ_OK) st = scratch(cache, &cache->d_ml, &cache->cap_ml, rows * 2);
  if (st == TQ_OK) st = scratch(cache, &cache->d_acc, &cache->cap_acc, rows * d);
  if (st != TQ_OK) return st;
  size_t lane = (size_t)layer * cache->p.n_seqs + seq;
  st = tq_cuda_rotate_queries(cache->ctx, cache->kc, q, n_q, n_q_heads, scale, cache->d_qrot);
  if (st == TQ_OK)
    st = tq_cuda_prefill_partials(cache->ctx, cache->kc, cache->vc, &cache->lay,
                                  cache->d_table + lane * cache->max_blocks, T, n_q, n_q_heads,
                                  cache->d_qrot, cache->d_ml, cache->d_acc);
  if (st == TQ_OK)
    st = tq_cuda_reduce(cache->ctx, cache->vc, n_q, n_q_heads, 1, cache->d_ml, cache->d_acc, out);
  return st;
}

extern "C" size_t tq_cuda_cache_decode_bytes(const tq_cuda_cache *cache, uint32_t layer,
                                             uint32_t n_q_heads) {
  if (!cache || layer >= cache->p.n_layers) return 0;
  size_t tokens = 0;
  for (uint32_t s = 0; s < cache->p.n_seqs; s++)
    tokens += cache->h_lens[(size_t)layer * cache->p.n_seqs + s];
  size_t d = cache->p.head_dim;
  size_t io = (size_t)cache->p.n_seqs * n_q_heads * d * sizeof(float) * 2;
  return tokens * cache->p.n_kv_heads * tq_cuda_cache_token_bytes(cache) + io +
         2 * d * d * sizeof(float);
}
