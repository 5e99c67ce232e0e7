/* model_internal.h - a loaded model's weights, shared by model.c (loading)
 * and forward.c (sessions). */
#ifndef TQ_ENGINE_MODEL_INTERNAL_H
#define TQ_ENGINE_MODEL_INTERNAL_H

#include "tqai_engine.h"

/* A weight matrix (rows, cols) in the file's layout: rows of cols elements,
 * GGUF ne[0] = cols (input features), ne[1] = rows (output features). */
typedef struct tq_weight {
  tq_tensor_type type;
  const void *data;       /* into the mapped file */
  uint64_t rows, cols;
} tq_weight;

typedef struct tq_layer_weights {
  float *attn_norm;       /* (n_embd,) */
  tq_weight wq, wk, wv, wo;
  float *bq, *bk, *bv;    /* qwen2: (n_heads * head_dim,), (n_kv * head_dim,) x2; else NULL */
  float *q_norm, *k_norm; /* qwen3: (head_dim,); else NULL */
  float *ffn_norm;        /* (n_embd,) */
  tq_weight w_gate, w_up, w_down;
} tq_layer_weights;

struct tq_model {
  tq_gguf *gguf;
  tq_tokenizer *tok;
  tq_model_info info;
  tq_weight tok_embd;     /* (n_vocab, n_embd) */
  tq_weight output;       /* (n_vocab, n_embd); the embeddings when tied */
  float *output_norm;     /* (n_embd,) */
  float *rope_factors;    /* (n_rot / 2,) Llama 3 frequency divisors, or NULL */
  tq_layer_weights *layers;
};

/* Sets this thread's engine error message (printf-style) and returns st. */
tq_status tq_engine_fail(tq_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
