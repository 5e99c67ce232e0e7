/*
 * model.c - loads a GGUF model: hyperparameters from {arch}.* metadata, the
 * weight tensors by their GGUF names (checked for presence, shape and a
 * supported type), small vectors (norms, biases, RoPE factors) converted to
 * float, and the tokenizer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static _Thread_local char last_error[512];

tq_status tq_engine_fail(tq_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return st;
}

const char *tq_engine_last_error(void) { return last_error; }

const char *tq_arch_name(tq_arch arch) {
  switch (arch) {
    case TQ_ARCH_LLAMA: return "llama";
    case TQ_ARCH_QWEN2: return "qwen2";
    case TQ_ARCH_QWEN3: return "qwen3";
  }
  return "unknown";
}

const tq_model_info *tq_model_get_info(const tq_model *m) { return m ? &m->info : NULL; }
const tq_tokenizer *tq_model_tokenizer(const tq_model *m) { return m ? m->tok : NULL; }
const tq_gguf *tq_model_gguf(const tq_model *m) { return m ? m->gguf : NULL; }

/* Reads an unsigned {arch}.name; `fallback` when absent and not required. */
static tq_status arch_uint(const tq_gguf *g, const char *arch, const char *name, int required,
                           uint32_t fallback, uint32_t *out) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", arch, name);
  int64_t i = tq_gguf_find_key(g, key);
  if (i < 0) {
    if (required) return tq_engine_fail(TQ_ERR_CORRUPT, "metadata key '%s' is missing", key);
    *out = fallback;
    return TQ_OK;
  }
  uint64_t v;
  if (tq_gguf_get_uint(g, (uint64_t)i, &v) != TQ_OK || v > UINT32_MAX)
    return tq_engine_fail(TQ_ERR_CORRUPT, "metadata key '%s' is not an unsigned 32-bit integer", key);
  *out = (uint32_t)v;
  return TQ_OK;
}

static tq_status arch_float(const tq_gguf *g, const char *arch, const char *name, float fallback,
                            float *out) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", arch, name);
  int64_t i = tq_gguf_find_key(g, key);
  if (i < 0) {
    *out = fallback;
    return TQ_OK;
  }
  double v;
  if (tq_gguf_get_float(g, (uint64_t)i, &v) != TQ_OK || !(v > 0.0) || v > 1e30)
    return tq_engine_fail(TQ_ERR_CORRUPT, "metadata key '%s' is not a positive float", key);
  *out = (float)v;
  return TQ_OK;
}

/* Finds a tensor and checks its shape: ne0 (and ne1 unless 0). */
static tq_status find(const tq_gguf *g, const char *name, uint64_t ne0, uint64_t ne1, int required,
                      tq_gguf_tensor *t, int *found) {
  *found = 0;
  if (tq_gguf_find_tensor(g, name, t) != TQ_OK) {
    if (required) return tq_engine_fail(TQ_ERR_CORRUPT, "tensor '%s' is missing", name);
    return TQ_OK;
  }
  uint64_t want_dims = ne1 ? 2 : 1;
  if (t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 && t->ne[1] != ne1))
    return tq_engine_fail(TQ_ERR_CORRUPT,
                          "tensor '%s' has shape [%llu, %llu] (%u dims), expected [%llu, %llu]", name,
                          (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], t->n_dims,
                          (unsigned long long)ne0, (unsigned long long)ne1);
  if (!tq_tensor_type_supported(t->type))
    return tq_engine_fail(TQ_ERR_UNSUPPORTED, "tensor '%s' has type %s, which tqai cannot compute with",
                          name, tq_tensor_type_name(t->type));
  *found = 1;
  return TQ_OK;
}

static tq_status load_matrix(const tq_gguf *g, const char *name, uint64_t rows, uint64_t cols,
                             int required, tq_weight *w) {
  tq_gguf_tensor t;
  int found;
  tq_status st = find(g, name, cols, rows, required, &t, &found);
  if (st != TQ_OK) return st;
  memset(w, 0, sizeof *w);
  if (!found) return TQ_OK;
  if (cols % tq_tensor_type_block(t.type))
    return tq_engine_fail(TQ_ERR_CORRUPT, "tensor '%s': %llu columns is not a multiple of the %s block",
                          name, (unsigned long long)cols, tq_tensor_type_name(t.type));
  w->type = t.type;
  w->data = t.data;
  w->rows = rows;
  w->cols = cols;
  return TQ_OK;
}

/* A 1-D tensor of n elements converted to a new float array (*out, owned by
 * the model), or NULL when absent and not required. */
static tq_status load_vector(const tq_gguf *g, const char *name, uint64_t n, int required, float **out) {
  tq_gguf_tensor t;
  int found;
  *out = NULL;
  tq_status st = find(g, name, n, 0, required, &t, &found);
  if (st != TQ_OK || !found) return st;
  float *v = malloc(n * sizeof *v);
  if (!v) return TQ_ERR_OUT_OF_MEMORY;
  if (n % tq_tensor_type_block(t.type) || tq_tensor_to_float(t.type, t.data, v, n) != TQ_OK) {
    free(v);
    return tq_engine_fail(TQ_ERR_UNSUPPORTED, "tensor '%s' of type %s cannot be read as a vector", name,
                          tq_tensor_type_name(t.type));
  }
  *out = v;
  return TQ_OK;
}

void tq_model_free(tq_model *m) {
  if (!m) return;
  if (m->layers) {
    for (uint32_t l = 0; l < m->info.n_layers; l++) {
      tq_layer_weights *L = &m->layers[l];
      free(L->attn_norm), free(L->ffn_norm), free(L->bq), free(L->bk), free(L->bv);
      free(L->q_norm), free(L->k_norm);
    }
    free(m->layers);
  }
  free(m->output_norm);
  free(m->rope_factors);
  tq_tokenizer_free(m->tok);
  tq_gguf_close(m->gguf);
  free(m);
}

static tq_status read_hparams(tq_model *m, const char *arch) {
  const tq_gguf *g = m->gguf;
  tq_model_info *I = &m->info;
  tq_status st;
  if ((st = arch_uint(g, arch, "block_count", 1, 0, &I->n_layers)) != TQ_OK) return st;
  if ((st = arch_uint(g, arch, "embedding_length", 1, 0, &I->n_embd)) != TQ_OK) return st;
  if ((st = arch_uint(g, arch, "attention.head_count", 1, 0, &I->n_heads)) != TQ_OK) return st;
  if ((st = arch_uint(g, arch, "attention.head_count_kv", 0, I->n_heads, &I->n_kv_heads)) != TQ_OK) return st;
  if ((st = arch_uint(g, arch, "feed_forward_length", 1, 0, &I->n_ff)) != TQ_OK) return st;
  if ((st = arch_uint(g, arch, "context_length", 0, 2048, &I->n_ctx_train)) != TQ_OK) return st;
  if (I->n_layers == 0 || I->n_layers > 1024 || I->n_embd == 0 || I->n_embd > 65536 || I->n_heads == 0 ||
      I->n_heads > 1024 || I->n_kv_heads == 0 || I->n_heads % I->n_kv_heads || I->n_ff == 0 ||
      I->n_ff > (1u << 20))
    return tq_engine_fail(TQ_ERR_CORRUPT,
                          "implausible hyperparameters: %u layers, width %u, %u heads, %u KV heads, ffn %u",
                          I->n_layers, I->n_embd, I->n_heads, I->n_kv_heads, I->n_ff);
  uint32_t hd_default = I->n_embd / I->n_heads;
  if ((st = arch_uint(g, arch, "attention.key_length", 0, hd_default, &I->head_dim)) != TQ_OK) return st;
  uint32_t vlen;
  if ((st = arch_uint(g, arch, "attention.value_length", 0, I->head_dim, &vlen)) != TQ_OK) return st;
  if (vlen != I->head_dim)
    return tq_engine_fail(TQ_ERR_UNSUPPORTED, "key length %u differs from value length %u", I->head_dim, vlen);
  if (I->head_dim < TQ_MIN_DIM || I->head_dim > TQ_MAX_DIM || I->head_dim % 2)
    return tq_engine_fail(TQ_ERR_UNSUPPORTED, "head size %u is not supported", I->head_dim);
  if ((st = arch_uint(g, arch, "rope.dimension_count", 0, I->head_dim, &I->n_rot)) != TQ_OK) return st;
  if (I->n_rot > I->head_dim || I->n_rot % 2)
    return tq_engine_fail(TQ_ERR_CORRUPT, "rope dimension %u does not fit head size %u", I->n_rot, I->head_dim);
  if ((st = arch_float(g, arch, "rope.freq_base", 10000.0f, &I->rope_base)) != TQ_OK) return st;
  if ((st = arch_float(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &I->rms_eps)) != TQ_OK) return st;
  /* Llama-style GGUF files store Q and K rows permuted for adjacent-pair
   * rotation; Qwen files keep the half-split (NeoX) order. */
  I->rope_neox = I->arch != TQ_ARCH_LLAMA;
  char key[128];
  snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
  int64_t ki = tq_gguf_find_key(g, key);
  tq_str sv;
  if (ki >= 0 && tq_gguf_get_string(g, (uint64_t)ki, &sv) == TQ_OK && sv.len &&
      !(sv.len == 4 && !memcmp(sv.data, "none", 4)) && !(sv.len == 5 && !memcmp(sv.data, "llama3", 5)))
    return tq_engine_fail(TQ_ERR_UNSUPPORTED, "rope scaling '%.*s' is not supported", (int)sv.len, sv.data);
  return TQ_OK;
}

tq_status tq_model_load(const char *path, tq_model **out) {
  if (out) *out = NULL;
  last_error[0] = '\0';
  if (!path || !out) return tq_engine_fail(TQ_ERR_INVALID_ARGUMENT, "no model path");
  tq_model *m = calloc(1, sizeof *m);
  if (!m) return TQ_ERR_OUT_OF_MEMORY;
  tq_status st = tq_gguf_open(path, &m->gguf);
  if (st != TQ_OK) {
    tq_engine_fail(st, "%s: %s", path, *tq_gguf_last_error() ? tq_gguf_last_error() : tq_status_message(st));
    free(m);
    return st;
  }
  const tq_gguf *g = m->gguf;
  int64_t ai = tq_gguf_find_key(g, "general.architecture");
  tq_str a;
  if (ai < 0 || tq_gguf_get_string(g, (uint64_t)ai, &a) != TQ_OK) {
    tq_model_free(m);
    return tq_engine_fail(TQ_ERR_CORRUPT, "%s: general.architecture is missing", path);
  }
  char arch[64];
  snprintf(arch, sizeof arch, "%.*s", (int)(a.len < 63 ? a.len : 63), a.data);
  if (!strcmp(arch, "llama")) m->info.arch = TQ_ARCH_LLAMA;
  else if (!strcmp(arch, "qwen2")) m->info.arch = TQ_ARCH_QWEN2;
  else if (!strcmp(arch, "qwen3")) m->info.arch = TQ_ARCH_QWEN3;
  else {
    tq_model_free(m);
    return tq_engine_fail(TQ_ERR_UNSUPPORTED, "architecture '%s' is not supported (llama, qwen2, qwen3 are)", arch);
  }
  tq_model_info *I = &m->info;
  if ((st = read_hparams(m, arch)) != TQ_OK) goto fail;

  tq_gguf_tensor emb;
  if (tq_gguf_find_tensor(g, "token_embd.weight", &emb) != TQ_OK || emb.n_dims != 2 || emb.ne[0] != I->n_embd) {
    st = tq_engine_fail(TQ_ERR_CORRUPT, "tensor 'token_embd.weight' is missing or not [%u, vocab]", I->n_embd);
    goto fail;
  }
  if (emb.ne[1] == 0 || emb.ne[1] > (1u << 24)) {
    st = tq_engine_fail(TQ_ERR_CORRUPT, "vocabulary of %llu tokens", (unsigned long long)emb.ne[1]);
    goto fail;
  }
  I->n_vocab = (uint32_t)emb.ne[1];
  uint64_t E = I->n_embd, V = I->n_vocab, QD = (uint64_t)I->n_heads * I->head_dim,
           KD = (uint64_t)I->n_kv_heads * I->head_dim;
  if ((st = load_matrix(g, "token_embd.weight", V, E, 1, &m->tok_embd)) != TQ_OK) goto fail;
  if ((st = load_matrix(g, "output.weight", V, E, 0, &m->output)) != TQ_OK) goto fail;
  I->tied_embeddings = m->output.data == NULL;
  if (I->tied_embeddings) m->output = m->tok_embd;
  if ((st = load_vector(g, "output_norm.weight", E, 1, &m->output_norm)) != TQ_OK) goto fail;
  if ((st = load_vector(g, "rope_freqs.weight", I->n_rot / 2, 0, &m->rope_factors)) != TQ_OK) goto fail;
  I->has_rope_factors = m->rope_factors != NULL;
  I->weight_type = m->tok_embd.type;
  m->layers = calloc(I->n_layers, sizeof *m->layers);
  if (!m->layers) {
    st = TQ_ERR_OUT_OF_MEMORY;
    goto fail;
  }
  uint64_t params = V * E * (I->tied_embeddings ? 1 : 2) + E;
  for (uint32_t l = 0; l < I->n_layers; l++) {
    tq_layer_weights *L = &m->layers[l];
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%u.%s", l, s), n)
    if ((st = load_vector(g, NAME("attn_norm.weight"), E, 1, &L->attn_norm)) != TQ_OK) goto fail;
    if ((st = load_matrix(g, NAME("attn_q.weight"), QD, E, 1, &L->wq)) != TQ_OK) goto fail;
    if ((st = load_matrix(g, NAME("attn_k.weight"), KD, E, 1, &L->wk)) != TQ_OK) goto fail;
    if ((st = load_matrix(g, NAME("attn_v.weight"), KD, E, 1, &L->wv)) != TQ_OK) goto fail;
    if ((st = load_matrix(g, NAME("attn_output.weight"), E, QD, 1, &L->wo)) != TQ_OK) goto fail;
    int bias = I->arch == TQ_ARCH_QWEN2;
    if ((st = load_vector(g, NAME("attn_q.bias"), QD, bias, &L->bq)) != TQ_OK) goto fail;
    if ((st = load_vector(g, NAME("attn_k.bias"), KD, bias, &L->bk)) != TQ_OK) goto fail;
    if ((st = load_vector(g, NAME("attn_v.bias"), KD, bias, &L->bv)) != TQ_OK) goto fail;
    int qk_norm = I->arch == TQ_ARCH_QWEN3;
    if ((st = load_vector(g, NAME("attn_q_norm.weight"), I->head_dim, qk_norm, &L->q_norm)) != TQ_OK) goto fail;
    if ((st = load_vector(g, NAME("attn_k_norm.weight"), I->head_dim, qk_norm, &L->k_norm)) != TQ_OK) goto fail;
    if ((st = load_vector(g, NAME("ffn_norm.weight"), E, 1, &L->ffn_norm)) != TQ_OK) goto fail;
    if ((st = load_matrix(g, NAME("ffn_gate.weight"), I->n_ff, E, 1, &L->w_gate)) != TQ_OK) goto fail;
    if ((st = load_matrix(g, NAME("ffn_up.weight"), I->n_ff, E, 1, &L->w_up)) != TQ_OK) goto fail;
    if ((st = load_matrix(g, NAME("ffn_down.weight"), E, I->n_ff, 1, &L->w_down)) != TQ_OK) goto fail;
#undef NAME
    params += 2 * E + QD * E * 2 + KD * E * 2 + 3 * E * (uint64_t)I->n_ff;
  }
  I->n_params = params;
  if ((st = tq_tokenizer_from_gguf(g, &m->tok)) != TQ_OK) {
    /* Keep the tokenizer's own explanation, if it left one. */
    char why[sizeof last_error];
    snprintf(why, sizeof why, "%s", last_error);
    tq_engine_fail(st, "%s: tokenizer: %s", path, why[0] ? why : tq_status_message(st));
    goto fail;
  }
  if (tq_tokenizer_n_vocab(m->tok) > I->n_vocab) {
    st = tq_engine_fail(TQ_ERR_CORRUPT, "tokenizer has %u tokens but the embeddings only %u",
                        tq_tokenizer_n_vocab(m->tok), I->n_vocab);
    goto fail;
  }
  *out = m;
  return TQ_OK;
fail:
  tq_model_free(m);
  return st;
}
