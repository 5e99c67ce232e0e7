/*
 * tqai_engine.h - public API of the tqai model engine: GGUF files, weight
 * formats, tokenizers, models running with a tq_cache, and sampling.
 *
 * Conventions are those of tqai.h: tq_status returns, opaque handles with
 * create/free pairs (free accepts NULL), no printing, no exits, the caller
 * owns what it passes in.
 */
#ifndef TQAI_ENGINE_H
#define TQAI_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "tqai.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* GGUF files                                                                */
/* ------------------------------------------------------------------------ */

/* Metadata value types, numbered as in the GGUF specification. */
typedef enum tq_gguf_type {
  TQ_GGUF_UINT8 = 0,
  TQ_GGUF_INT8 = 1,
  TQ_GGUF_UINT16 = 2,
  TQ_GGUF_INT16 = 3,
  TQ_GGUF_UINT32 = 4,
  TQ_GGUF_INT32 = 5,
  TQ_GGUF_FLOAT32 = 6,
  TQ_GGUF_BOOL = 7,
  TQ_GGUF_STRING = 8,
  TQ_GGUF_ARRAY = 9,
  TQ_GGUF_UINT64 = 10,
  TQ_GGUF_INT64 = 11,
  TQ_GGUF_FLOAT64 = 12
} tq_gguf_type;

/* Tensor element types, numbered as in GGUF (ggml_type). Only some are
 * supported by the engine's matrix kernels: tq_tensor_type_supported(). */
typedef enum tq_tensor_type {
  TQ_TENSOR_F32 = 0,
  TQ_TENSOR_F16 = 1,
  TQ_TENSOR_Q4_0 = 2,
  TQ_TENSOR_Q4_1 = 3,
  TQ_TENSOR_Q5_0 = 6,
  TQ_TENSOR_Q5_1 = 7,
  TQ_TENSOR_Q8_0 = 8,
  TQ_TENSOR_Q8_1 = 9,
  TQ_TENSOR_Q2_K = 10,
  TQ_TENSOR_Q3_K = 11,
  TQ_TENSOR_Q4_K = 12,
  TQ_TENSOR_Q5_K = 13,
  TQ_TENSOR_Q6_K = 14,
  TQ_TENSOR_Q8_K = 15,
  TQ_TENSOR_BF16 = 30
} tq_tensor_type;

/* A string inside a GGUF file: not NUL-terminated, points into the file. */
typedef struct tq_str {
  const char *data;
  uint64_t len;
} tq_str;

typedef struct tq_gguf_tensor {
  tq_str name;
  tq_tensor_type type;
  uint32_t n_dims;        /* 1..4 */
  uint64_t ne[4];         /* elements per dimension, ne[0] fastest; unused = 1 */
  uint64_t n_elements;
  uint64_t n_bytes;
  const void *data;       /* points into the mapped file */
} tq_gguf_tensor;

typedef struct tq_gguf tq_gguf;

/* Memory-maps and parses a GGUF v2 or v3 file, checking every count, offset
 * and size. *out receives the handle (owned by the caller; tensor data and
 * strings point into the mapping and live until tq_gguf_close).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_IO, TQ_ERR_FORMAT_VERSION,
 * TQ_ERR_CORRUPT or TQ_ERR_OUT_OF_MEMORY. On TQ_ERR_CORRUPT,
 * tq_gguf_last_error() says what was malformed. */
TQ_API tq_status tq_gguf_open(const char *path, tq_gguf **out);

/* As tq_gguf_open over a caller-owned buffer, which must outlive the handle. */
TQ_API tq_status tq_gguf_open_buffer(const void *data, size_t size, tq_gguf **out);

/* Unmaps and frees. NULL is accepted. */
TQ_API void tq_gguf_close(tq_gguf *g);

/* A description of why the last open on this thread failed ("" if none):
 * a thread-local static string, valid until the next open on that thread. */
TQ_API const char *tq_gguf_last_error(void);

TQ_API uint32_t tq_gguf_version(const tq_gguf *g);
TQ_API uint64_t tq_gguf_n_kv(const tq_gguf *g);
TQ_API uint64_t tq_gguf_n_tensors(const tq_gguf *g);

/* Index of the metadata key, or -1. */
TQ_API int64_t tq_gguf_find_key(const tq_gguf *g, const char *key);
/* Key name and value type of entry i (i < tq_gguf_n_kv). */
TQ_API tq_str tq_gguf_key(const tq_gguf *g, uint64_t i);
TQ_API tq_gguf_type tq_gguf_kv_type(const tq_gguf *g, uint64_t i);

/* Typed getters: TQ_OK, TQ_ERR_INVALID_ARGUMENT (bad index) or
 * TQ_ERR_MISMATCH (the value has another type). get_uint converts any
 * unsigned or non-negative signed integer type; get_float any float type. */
TQ_API tq_status tq_gguf_get_uint(const tq_gguf *g, uint64_t i, uint64_t *out);
TQ_API tq_status tq_gguf_get_int(const tq_gguf *g, uint64_t i, int64_t *out);
TQ_API tq_status tq_gguf_get_float(const tq_gguf *g, uint64_t i, double *out);
TQ_API tq_status tq_gguf_get_bool(const tq_gguf *g, uint64_t i, int *out);
TQ_API tq_status tq_gguf_get_string(const tq_gguf *g, uint64_t i, tq_str *out);

/* Arrays: element type and count; elements by index (numeric elements as
 * with the getters above, strings as tq_str). */
TQ_API tq_status tq_gguf_get_array(const tq_gguf *g, uint64_t i, tq_gguf_type *elem_type,
                                   uint64_t *count);
TQ_API tq_status tq_gguf_array_uint(const tq_gguf *g, uint64_t i, uint64_t j, uint64_t *out);
TQ_API tq_status tq_gguf_array_int(const tq_gguf *g, uint64_t i, uint64_t j, int64_t *out);
TQ_API tq_status tq_gguf_array_float(const tq_gguf *g, uint64_t i, uint64_t j, double *out);
TQ_API tq_status tq_gguf_array_string(const tq_gguf *g, uint64_t i, uint64_t j, tq_str *out);

/* Tensor i, or by name. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (bad index or
 * name not found). */
TQ_API tq_status tq_gguf_tensor_at(const tq_gguf *g, uint64_t i, tq_gguf_tensor *out);
TQ_API tq_status tq_gguf_find_tensor(const tq_gguf *g, const char *name, tq_gguf_tensor *out);

/* GGUF writer: builds a v3 file in memory, then writes it through a
 * temporary file renamed into place. */
typedef struct tq_gguf_writer tq_gguf_writer;

TQ_API tq_status tq_gguf_writer_create(tq_gguf_writer **out);
TQ_API void tq_gguf_writer_free(tq_gguf_writer *w);
/* Each add copies its arguments. Keys must be unique (TQ_ERR_INVALID_ARGUMENT). */
TQ_API tq_status tq_gguf_writer_add_uint32(tq_gguf_writer *w, const char *key, uint32_t v);
TQ_API tq_status tq_gguf_writer_add_int32(tq_gguf_writer *w, const char *key, int32_t v);
TQ_API tq_status tq_gguf_writer_add_uint64(tq_gguf_writer *w, const char *key, uint64_t v);
TQ_API tq_status tq_gguf_writer_add_float32(tq_gguf_writer *w, const char *key, float v);
TQ_API tq_status tq_gguf_writer_add_bool(tq_gguf_writer *w, const char *key, int v);
TQ_API tq_status tq_gguf_writer_add_string(tq_gguf_writer *w, const char *key, const char *v);
/* Numeric array: elem_type one of the numeric tq_gguf_type values, `data`
 * holding count elements of that type in native layout. */
TQ_API tq_status tq_gguf_writer_add_array(tq_gguf_writer *w, const char *key, tq_gguf_type elem_type,
                                          const void *data, uint64_t count);
TQ_API tq_status tq_gguf_writer_add_string_array(tq_gguf_writer *w, const char *key,
                                                 const char *const *strings, uint64_t count);
/* Tensor data in the given type's block layout, n_bytes of it (must match
 * the type and dims). */
TQ_API tq_status tq_gguf_writer_add_tensor(tq_gguf_writer *w, const char *name, tq_tensor_type type,
                                           uint32_t n_dims, const uint64_t *ne, const void *data,
                                           size_t n_bytes);
/* Writes the file (alignment 32, or general.alignment if set as uint32).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT or TQ_ERR_IO (no partial file left). */
TQ_API tq_status tq_gguf_writer_write(const tq_gguf_writer *w, const char *path);

/* ------------------------------------------------------------------------ */
/* Tensor types                                                              */
/* ------------------------------------------------------------------------ */

/* Name ("q4_0"), elements per block and bytes per block of a tensor type;
 * "unknown"/0 for unknown types. */
TQ_API const char *tq_tensor_type_name(tq_tensor_type t);
TQ_API uint32_t tq_tensor_type_block(tq_tensor_type t);
TQ_API uint32_t tq_tensor_type_block_bytes(tq_tensor_type t);
/* 1 if the engine can compute with weights of this type. */
TQ_API int tq_tensor_type_supported(tq_tensor_type t);

/* Converts n elements (a multiple of the type's block) of one row to float.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT or TQ_ERR_UNSUPPORTED (a type
 * without kernels). */
TQ_API tq_status tq_tensor_to_float(tq_tensor_type t, const void *src, float *dst, uint64_t n);
/* Quantizes n floats (a multiple of the block) into the type's layout
 * (F32, F16, BF16, Q8_0, Q4_0, Q4_1). Same statuses. */
TQ_API tq_status tq_tensor_from_float(tq_tensor_type t, const float *src, void *dst, uint64_t n);


/* ------------------------------------------------------------------------ */
/* Tokenizers                                                                */
/* ------------------------------------------------------------------------ */

typedef enum tq_tokenizer_kind {
  TQ_TOKENIZER_SPM = 0, /* GGUF "llama": SentencePiece-style, scores, byte fallback */
  TQ_TOKENIZER_BPE = 1  /* GGUF "gpt2": byte-level BPE with merges */
} tq_tokenizer_kind;

/* Token attributes from tokenizer.ggml.token_type. */
typedef enum tq_token_attr {
  TQ_TOKEN_NORMAL = 1,
  TQ_TOKEN_UNKNOWN = 2,
  TQ_TOKEN_CONTROL = 3,
  TQ_TOKEN_USER_DEFINED = 4,
  TQ_TOKEN_UNUSED = 5,
  TQ_TOKEN_BYTE = 6
} tq_token_attr;

typedef struct tq_tokenizer tq_tokenizer;

/* Builds a tokenizer from a GGUF file's tokenizer.* metadata (copying what
 * it needs; the file may be closed afterwards). Returns TQ_OK,
 * TQ_ERR_INVALID_ARGUMENT, TQ_ERR_UNSUPPORTED (unknown tokenizer model or
 * pre-tokenizer), TQ_ERR_CORRUPT (inconsistent metadata) or
 * TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_tokenizer_from_gguf(const tq_gguf *g, tq_tokenizer **out);
TQ_API void tq_tokenizer_free(tq_tokenizer *t);

TQ_API tq_tokenizer_kind tq_tokenizer_get_kind(const tq_tokenizer *t);
TQ_API uint32_t tq_tokenizer_n_vocab(const tq_tokenizer *t);
/* Special token ids, -1 when the model has none. */
TQ_API int32_t tq_tokenizer_bos(const tq_tokenizer *t);
TQ_API int32_t tq_tokenizer_eos(const tq_tokenizer *t);
/* 1 if the token ends a generation (eos, eot, im_end-like end tokens). */
TQ_API int tq_tokenizer_is_eog(const tq_tokenizer *t, int32_t id);
/* 1 if add_bos_token is set (or implied by the model kind). */
TQ_API int tq_tokenizer_adds_bos(const tq_tokenizer *t);
/* Id of a token whose text is exactly `text` (for special tokens such as
 * "<|im_end|>"), or -1. */
TQ_API int32_t tq_tokenizer_find(const tq_tokenizer *t, const char *text);

/* Tokenizes len bytes of UTF-8 text into ids (capacity cap). add_bos
 * prepends the BOS token if the model has one; parse_special recognizes
 * control tokens written in the text (user-defined tokens are always
 * recognized, as Hugging Face tokenizers and llama.cpp do). *n_out receives the
 * number of ids (also when the buffer is too small). Returns TQ_OK,
 * TQ_ERR_INVALID_ARGUMENT or TQ_ERR_BUFFER_TOO_SMALL. Invalid UTF-8 is
 * tokenized byte by byte, never rejected. */
TQ_API tq_status tq_tokenize(const tq_tokenizer *t, const char *text, size_t len, int add_bos,
                             int parse_special, int32_t *ids, size_t cap, size_t *n_out);

/* Streaming detokenization: feed ids one at a time; only complete UTF-8
 * characters are emitted, a character split across tokens waits for its
 * remaining bytes. The state is plain data: zero it (or call
 * tq_detok_init) before the first token. */
typedef struct tq_detok {
  uint8_t pending[8];
  uint32_t n_pending;
  uint32_t n_tokens;  /* tokens seen, for the leading-space rule */
  int skip_special;   /* 1 to emit nothing for control tokens */
} tq_detok;

TQ_API void tq_detok_init(tq_detok *d, int skip_special);
/* Appends the text of token id to out (capacity cap, NUL-terminated when
 * cap > 0); *n_out receives the bytes written. Returns TQ_OK,
 * TQ_ERR_INVALID_ARGUMENT (id out of range) or TQ_ERR_BUFFER_TOO_SMALL. */
TQ_API tq_status tq_detok_push(const tq_tokenizer *t, tq_detok *d, int32_t id, char *out,
                               size_t cap, size_t *n_out);
/* Emits whatever bytes are still pending (as U+FFFD for an incomplete
 * character). */
TQ_API tq_status tq_detok_flush(const tq_tokenizer *t, tq_detok *d, char *out, size_t cap,
                                size_t *n_out);

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum tq_arch {
  TQ_ARCH_LLAMA = 0, /* Llama 2 and 3, Mistral, SmolLM: GGUF "llama" */
  TQ_ARCH_QWEN2 = 1, /* biases on Q, K, V */
  TQ_ARCH_QWEN3 = 2  /* per-head RMS norm on Q and K */
} tq_arch;

typedef struct tq_model_info {
  tq_arch arch;
  uint32_t n_layers;
  uint32_t n_embd;
  uint32_t n_heads;
  uint32_t n_kv_heads;
  uint32_t head_dim;
  uint32_t n_ff;
  uint32_t n_vocab;
  uint32_t n_ctx_train;
  uint32_t n_rot;          /* rotary dimensions per head */
  float rope_base;
  float rms_eps;
  int rope_neox;           /* 1: pairs (i, i + n_rot/2); 0: pairs (2i, 2i+1) */
  int has_rope_factors;    /* Llama 3 frequency factors (rope_freqs.weight) */
  int tied_embeddings;     /* output projection is token_embd.weight */
  tq_tensor_type weight_type; /* type of most weight matrices */
  uint64_t n_params;
} tq_model_info;

typedef struct tq_model tq_model;

/* Opens a GGUF model file, checks that every tensor the architecture needs is
 * present with the right shape and a supported type, and builds its
 * tokenizer. The weights stay memory-mapped. *out receives the model, owned
 * by the caller; it is immutable and may be shared by sessions on several
 * threads. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_IO,
 * TQ_ERR_FORMAT_VERSION, TQ_ERR_CORRUPT, TQ_ERR_UNSUPPORTED or
 * TQ_ERR_OUT_OF_MEMORY; tq_engine_last_error() says what and where. */
TQ_API tq_status tq_model_load(const char *path, tq_model **out);
TQ_API void tq_model_free(tq_model *m);

/* The last model-loading or evaluation error on this thread, in words
 * ("" if none); a thread-local string owned by the library. */
TQ_API const char *tq_engine_last_error(void);

TQ_API const tq_model_info *tq_model_get_info(const tq_model *m);
TQ_API const tq_tokenizer *tq_model_tokenizer(const tq_model *m);
TQ_API const tq_gguf *tq_model_gguf(const tq_model *m);
/* "llama", "qwen2", "qwen3". */
TQ_API const char *tq_arch_name(tq_arch arch);

/* A session: one model, one KV cache, scratch memory, a position. */
typedef struct tq_session tq_session;

/* Creates a session with room for n_ctx tokens. cache: the cache's options
 * (mode, bits, sinks, window, centering, ...), or NULL for the default
 * K4/V2 TurboQuant cache; its shape fields (n_layers, n_kv_heads, head_dim,
 * max_tokens) are taken from the model and n_ctx. pool: threads to use (may
 * be NULL; it must outlive the session and serve one session call at a
 * time). Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, the cache's creation
 * statuses or TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_session_create(const tq_model *m, const tq_cache_params *cache, uint32_t n_ctx,
                                   tq_pool *pool, tq_session **out);
TQ_API void tq_session_free(tq_session *s);

/* Runs n tokens at the session's current position and advances it. logits:
 * NULL, or (n, n_vocab) floats when all_logits is 1, or (n_vocab,) for the
 * last token when all_logits is 0. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT
 * (a token id out of range), TQ_ERR_RANGE (the context would overflow
 * n_ctx), TQ_ERR_OUT_OF_MEMORY or the cache's statuses; on an error the
 * position is unchanged. */
TQ_API tq_status tq_session_eval(tq_session *s, const int32_t *tokens, uint32_t n, float *logits,
                                 int all_logits);
TQ_API uint32_t tq_session_position(const tq_session *s);
/* Forgets every token at positions >= n (to regenerate from there). */
TQ_API tq_status tq_session_truncate(tq_session *s, uint32_t n);
TQ_API const tq_cache *tq_session_cache(const tq_session *s);

/* ------------------------------------------------------------------------ */
/* Sampling                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct tq_sampler_params {
  float temperature;      /* <= 0: greedy (argmax) */
  uint32_t top_k;         /* 0: off */
  float top_p;            /* 1: off */
  float min_p;            /* 0: off */
  float repeat_penalty;   /* 1: off; divides positive logits, multiplies negative */
  uint32_t repeat_last_n; /* how many recent tokens the penalty looks at */
  uint64_t seed;
} tq_sampler_params;

/* Greedy decoding with no penalty; seed 0. */
TQ_API tq_sampler_params tq_sampler_params_greedy(void);
/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.1
 * over the last 64 tokens, seed 0. */
TQ_API tq_sampler_params tq_sampler_params_default(void);

typedef struct tq_sampler tq_sampler;
TQ_API tq_status tq_sampler_create(const tq_sampler_params *p, uint32_t n_vocab, tq_sampler **out);
TQ_API void tq_sampler_free(tq_sampler *s);
/* Picks a token from logits (n_vocab floats, not modified) and records it in
 * the penalty history. Returns TQ_OK or TQ_ERR_INVALID_ARGUMENT. */
TQ_API tq_status tq_sampler_sample(tq_sampler *s, const float *logits, int32_t *out);
/* Records a token (e.g. of the prompt) in the penalty history. */
TQ_API void tq_sampler_accept(tq_sampler *s, int32_t id);

/* ------------------------------------------------------------------------ */
/* Chat templates                                                            */
/* ------------------------------------------------------------------------ */

typedef enum tq_chat_template {
  TQ_CHAT_NONE = 0,   /* raw completion */
  TQ_CHAT_CHATML = 1, /* <|im_start|>role ... <|im_end|> (Qwen, SmolLM) */
  TQ_CHAT_LLAMA3 = 2, /* <|start_header_id|>role<|end_header_id|> ... <|eot_id|> */
  TQ_CHAT_MISTRAL = 3 /* [INST] ... [/INST] (Mistral, Llama 2) */
} tq_chat_template;

typedef struct tq_chat_message {
  const char *role;    /* "system", "user" or "assistant" */
  const char *content;
} tq_chat_message;

/* The template the model's tokenizer.chat_template metadata describes
 * (recognized by its markers), or TQ_CHAT_NONE. */
TQ_API tq_chat_template tq_chat_template_detect(const tq_gguf *g);
/* "none", "chatml", "llama3", "mistral". */
TQ_API const char *tq_chat_template_name(tq_chat_template t);
/* Renders messages (and, if add_assistant, the opening of the assistant's
 * turn) into out (capacity cap, NUL-terminated); *n_out receives the length
 * needed. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT or TQ_ERR_BUFFER_TOO_SMALL. */
TQ_API tq_status tq_chat_format(tq_chat_template t, const tq_chat_message *msgs, size_t n_msgs,
                                int add_assistant, char *out, size_t cap, size_t *n_out);

#ifdef __cplusplus
}
#endif

#endif /* TQAI_ENGINE_H */
