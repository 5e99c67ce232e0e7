/*
 * tqai_cuda.h - public C API of libtqai_cuda: TurboQuant encoding and
 * attention on packed codes on an NVIDIA GPU (sm_90 and later).
 *
 * Conventions (as include/tqai.h)
 * - Every function that can fail returns a tq_status (the codes of tqai.h);
 *   TQ_OK is success. A failing CUDA runtime call is reported as
 *   TQ_ERR_UNSUPPORTED when there is no usable device or driver,
 *   TQ_ERR_OUT_OF_MEMORY when device memory runs out, and TQ_ERR_IO for any
 *   other CUDA error; tq_cuda_ctx_last_error() names the CUDA error behind it.
 * - The library never prints and never exits.
 * - Objects are opaque handles made by *_create and released by *_free; every
 *   *_free accepts NULL.
 * - "Device pointer" means memory on the context's GPU (from tq_cuda_malloc or
 *   any other CUDA allocation); "host pointer" means ordinary memory. The
 *   caller owns every buffer it passes in; the library keeps no pointer to it
 *   after the call returns.
 *
 * Streams and threading
 * - A tq_cuda_ctx binds one device and one CUDA stream. Every kernel of a call
 *   is queued on that stream. Calls documented as "asynchronous" return once
 *   the work is queued: their device outputs are ready after
 *   tq_cuda_ctx_sync (or any later synchronizing call on the same stream).
 *   Calls documented as "synchronous" wait for the stream before returning.
 * - A context, and every object made from it, must be used by one thread at a
 *   time. Different contexts may be used from different threads.
 *
 * Bytes
 * - tq_cuda_encode writes exactly the records tq_codec_encode_f32 (f16, bf16)
 *   writes on the CPU for the same codec and input (docs/FORMAT.md).
 * - The device cache keeps, per block, the packed codes of keys, the packed
 *   codes of values and the fp16 norms in separate arrays (docs/CUDA.md); the
 *   norm bytes followed by the code bytes of one token are that token's CPU
 *   record.
 */
#ifndef TQAI_CUDA_H
#define TQAI_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "tqai.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Devices and contexts                                                      */
/* ------------------------------------------------------------------------ */

/* Stores the number of CUDA devices usable by this process in *count: 0 when
 * there is no driver or no GPU (that is not an error). Returns TQ_OK or
 * TQ_ERR_INVALID_ARGUMENT (count NULL). */
TQ_API tq_status tq_cuda_device_count(int *count);

typedef struct tq_cuda_ctx tq_cuda_ctx;

/* Returns the name of the last CUDA runtime error a call on this context (or
 * on an object made from it) ran into ("cudaSuccess" if none): a static
 * string owned by the CUDA runtime, never NULL ("(null context)" for NULL). */
TQ_API const char *tq_cuda_ctx_last_error(const tq_cuda_ctx *ctx);

/* Creates a context on device `device` that queues its work on `stream` (a
 * cudaStream_t given as void *, owned by the caller, who keeps it alive until
 * tq_cuda_ctx_free), or on a new non-blocking stream owned by the context
 * when stream is NULL. *out receives the context, owned by the caller.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_UNSUPPORTED (no such device,
 * no driver, or a device older than sm_90), TQ_ERR_OUT_OF_MEMORY or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_ctx_create(int device, void *stream, tq_cuda_ctx **out);

/* Waits for the context's stream, then frees the context, its own stream and
 * its scratch memory. Objects made from the context must be freed first.
 * NULL is accepted. */
TQ_API void tq_cuda_ctx_free(tq_cuda_ctx *ctx);

/* Returns the context's cudaStream_t as void * (owned by the context or by
 * whoever passed it in), NULL for a NULL ctx. */
TQ_API void *tq_cuda_ctx_stream(const tq_cuda_ctx *ctx);

/* Returns the number of streaming multiprocessors of the context's device
 * (0 for NULL). */
TQ_API int tq_cuda_ctx_sm_count(const tq_cuda_ctx *ctx);

/* Waits until all work queued on the context's stream is done. Returns TQ_OK,
 * TQ_ERR_INVALID_ARGUMENT, or the status of a failed kernel (TQ_ERR_IO). */
TQ_API tq_status tq_cuda_ctx_sync(tq_cuda_ctx *ctx);

/* ------------------------------------------------------------------------ */
/* Device memory                                                             */
/* ------------------------------------------------------------------------ */

/* Allocates `bytes` (at least 1) of device memory, 256-byte aligned; *out
 * receives the device pointer, owned by the caller (tq_cuda_free).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT or TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_cuda_malloc(tq_cuda_ctx *ctx, size_t bytes, void **out);

/* Frees memory from tq_cuda_malloc (waits for the device first). NULL is
 * accepted. */
TQ_API void tq_cuda_free(tq_cuda_ctx *ctx, void *ptr);

/* Copies `bytes` from host to device (upload) or device to host (download).
 * Synchronous. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_upload(tq_cuda_ctx *ctx, void *dst_dev, const void *src_host,
                                size_t bytes);
TQ_API tq_status tq_cuda_download(tq_cuda_ctx *ctx, void *dst_host, const void *src_dev,
                                  size_t bytes);

/* Sets `bytes` of device memory to `value` (its low 8 bits). Asynchronous.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_memset(tq_cuda_ctx *ctx, void *dst_dev, int value, size_t bytes);

/* ------------------------------------------------------------------------ */
/* Codecs on the device                                                      */
/* ------------------------------------------------------------------------ */

/* Element types of vectors given to or returned by the device. */
typedef enum tq_cuda_dtype {
  TQ_CUDA_F32 = 0,  /* IEEE single */
  TQ_CUDA_F16 = 1,  /* IEEE half, raw 16-bit patterns */
  TQ_CUDA_BF16 = 2  /* bfloat16, raw 16-bit patterns */
} tq_cuda_dtype;

typedef struct tq_cuda_codec tq_cuda_codec;

/* Copies a CPU codec to the device: its parameters, its rotation (read back
 * through tq_codec_rotate, so the device applies exactly the CPU's matrix or
 * Hadamard signs) and its codebook. The CPU codec is only read during the
 * call. *out receives the device codec, owned by the caller.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_OUT_OF_MEMORY or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_codec_create(tq_cuda_ctx *ctx, const tq_codec *codec,
                                      tq_cuda_codec **out);

/* Frees a device codec (waits for the context's stream first). NULL is
 * accepted. */
TQ_API void tq_cuda_codec_free(tq_cuda_codec *codec);

/* Returns the record size of the codec (tq_codec_record_size), 0 for NULL. */
TQ_API size_t tq_cuda_codec_record_size(const tq_cuda_codec *codec);

/* Encodes n vectors of dim elements (x: device pointer, n * dim elements of
 * `dtype`, one vector after another) into n records written one after
 * another at `records` (device pointer, n * record size bytes). The bytes are
 * those of tq_codec_encode_* on the CPU. Synchronous: it waits for the
 * kernel to learn whether every vector could be encoded.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_NON_FINITE, TQ_ERR_RANGE
 * (as the CPU codec, for the first failing vector; the records of the other
 * vectors are written), TQ_ERR_OUT_OF_MEMORY or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_encode(tq_cuda_ctx *ctx, const tq_cuda_codec *codec, const void *x,
                                tq_cuda_dtype dtype, size_t n, void *records);

/* ------------------------------------------------------------------------ */
/* KV cache on the device                                                    */
/* ------------------------------------------------------------------------ */

/* A compressed KV cache kept in device memory: n_seqs sequences (the batch),
 * each with n_layers layers of n_kv_heads lanes of tokens, as the CPU
 * tq_cache in TurboQuant mode with integer rates and no sinks, window or
 * centering (those stay CPU features). Tokens are stored in blocks of
 * block_tokens tokens per (sequence, layer) holding every KV head; blocks are
 * allocated as tokens arrive and never move. Codecs are those a tq_cache with
 * the same head_dim, bits, rotation and seeds builds, so the codes are the
 * CPU cache's codes. */
typedef struct tq_cuda_cache_params {
  uint32_t n_layers;      /* >= 1 */
  uint32_t n_kv_heads;    /* >= 1 */
  uint32_t head_dim;      /* 64 or 128 for attention; encoding takes any dim */
  uint32_t n_seqs;        /* sequences (batch), >= 1 */
  uint32_t max_tokens;    /* capacity per (sequence, layer) */
  uint32_t block_tokens;  /* multiple of 64, 64..65536 */
  uint32_t key_bits;      /* 2, 3 or 4 for attention (1..8 for storage) */
  uint32_t value_bits;    /* 2, 3 or 4 for attention (1..8 for storage) */
  tq_rotation rotation;
  uint64_t key_seed;
  uint64_t value_seed;
} tq_cuda_cache_params;

/* Returns the defaults for a model shape: one sequence, max_tokens 131072,
 * block_tokens 256, K4/V2, Haar rotation, the default seeds. */
TQ_API tq_cuda_cache_params tq_cuda_cache_params_default(uint32_t n_layers, uint32_t n_kv_heads,
                                                         uint32_t head_dim);

typedef struct tq_cuda_cache tq_cuda_cache;

/* Validates params, builds the key and value codecs (on the CPU, then copied to
 * the device) and an empty cache: no block is allocated until tokens arrive.
 * *out receives the cache, owned by the caller; it keeps a pointer to ctx,
 * which must outlive it. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT,
 * TQ_ERR_UNSUPPORTED_DIM, TQ_ERR_UNSUPPORTED_BITS,
 * TQ_ERR_UNSUPPORTED_ROTATION, TQ_ERR_OUT_OF_MEMORY or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_cache_create(tq_cuda_ctx *ctx, const tq_cuda_cache_params *params,
                                      tq_cuda_cache **out);

/* Frees the cache and all its device memory (waits for the stream first).
 * NULL is accepted. */
TQ_API void tq_cuda_cache_free(tq_cuda_cache *cache);

/* Returns the tokens stored for (layer, seq), 0 for a bad argument. */
TQ_API uint32_t tq_cuda_cache_tokens(const tq_cuda_cache *cache, uint32_t layer, uint32_t seq);

/* Returns the device bytes the cache holds (blocks, block tables, codecs,
 * scratch), 0 for NULL. */
TQ_API size_t tq_cuda_cache_bytes(const tq_cuda_cache *cache);

/* Returns the bytes one token takes per KV head: key record + value record. */
TQ_API size_t tq_cuda_cache_token_bytes(const tq_cuda_cache *cache);

/* Appends n tokens to (layer, seq), encoding them on the device.
 * k, v: device pointers, (n, n_kv_heads, head_dim) elements of `dtype`.
 * Synchronous (the encoder's checks are read back). Returns TQ_OK,
 * TQ_ERR_INVALID_ARGUMENT, TQ_ERR_RANGE (capacity exceeded, or a vector
 * longer than TQ_CACHE_MAX_NORM), TQ_ERR_NON_FINITE, TQ_ERR_OUT_OF_MEMORY or
 * TQ_ERR_IO; on an error the token count is unchanged (blocks allocated by
 * the call stay allocated for later appends). */
TQ_API tq_status tq_cuda_cache_append(tq_cuda_cache *cache, uint32_t layer, uint32_t seq,
                                      const void *k, const void *v, tq_cuda_dtype dtype,
                                      uint32_t n);

/* Appends n already encoded tokens to (layer, seq): k_records and
 * v_records are device pointers to (n, n_kv_heads) records in the CPU layout
 * (key codec records and value codec records, fp16 norms), e.g. copied from
 * a CPU cache or written by tq_cuda_encode. Records are not checked.
 * Asynchronous. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_RANGE
 * (capacity), TQ_ERR_OUT_OF_MEMORY or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_cache_append_records(tq_cuda_cache *cache, uint32_t layer, uint32_t seq,
                                              const void *k_records, const void *v_records,
                                              uint32_t n);

/* Copies the records of tokens [first, first + n) of (layer, seq) into
 * k_records and v_records (host pointers, (n, n_kv_heads) records each, CPU
 * layout). Synchronous. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT,
 * TQ_ERR_OUT_OF_MEMORY or TQ_ERR_IO. */
TQ_API tq_status tq_cuda_cache_read_records(tq_cuda_cache *cache, uint32_t layer, uint32_t seq,
                                            uint32_t first, uint32_t n, void *k_records,
                                            void *v_records);

/* Keeps the first n_tokens tokens of every (layer, sequence) and drops the
 * rest; blocks no longer used go back to the cache's free list (the device
 * memory stays with the cache until tq_cuda_cache_free). Returns TQ_OK or
 * TQ_ERR_INVALID_ARGUMENT. */
TQ_API tq_status tq_cuda_cache_truncate(tq_cuda_cache *cache, uint32_t n_tokens);

/* Decode attention: one new query token per sequence against every token
 * stored for that sequence in `layer` (the query's own key and value already
 * appended), computed on the packed codes.
 *   q:   device pointer, (n_seqs, n_q_heads, head_dim) f32;
 *   out: device pointer, (n_seqs, n_q_heads, head_dim) f32;
 *   n_q_heads = G * n_kv_heads with G in 1..8 (heads h*G .. h*G+G-1 share KV
 *   head h); scale multiplies q.k. A sequence with no tokens gets zeros.
 * Asynchronous: one kernel on the context's stream, which may be captured in
 * a CUDA graph and replayed. Uses scratch memory owned by the cache (grown on
 * demand; calls on one cache share it, so they run in stream order).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_UNSUPPORTED (head_dim or
 * bits without a kernel), TQ_ERR_OUT_OF_MEMORY or TQ_ERR_IO. Matches
 * tq_cache_attention on the same codes to a few 1e-4 of the output's largest
 * value (the tensor-core products take fp16 centroids and fp16 softmax
 * weights; tests/test_cuda.c requires 1e-3, the largest error it saw on an
 * H200 was 2.4e-4). */
TQ_API tq_status tq_cuda_cache_attention_decode(tq_cuda_cache *cache, uint32_t layer,
                                                const float *q, uint32_t n_q_heads, float scale,
                                                float *out);

/* Prefill attention for one sequence: the queries of the LAST n_q tokens
 * stored in (layer, seq), causal (query i sits at position T - n_q + i and
 * sees positions 0 .. that one), as tq_cache_attention.
 *   q, out: device pointers, (n_q, n_q_heads, head_dim) f32.
 * Asynchronous. Simpler and slower than the decode kernel. Returns TQ_OK,
 * TQ_ERR_INVALID_ARGUMENT, TQ_ERR_UNSUPPORTED, TQ_ERR_OUT_OF_MEMORY or
 * TQ_ERR_IO. */
TQ_API tq_status tq_cuda_cache_attention_prefill(tq_cuda_cache *cache, uint32_t layer,
                                                 uint32_t seq, const float *q, uint32_t n_q,
                                                 uint32_t n_q_heads, float scale, float *out);

/* Device bytes the decode kernel reads for one call on `layer` (codes and
 * norms of every stored token, queries, the rotation of the values) and
 * writes (outputs), not counting its scratch partial results: what a
 * bandwidth figure should be computed from. 0 for a bad argument. */
TQ_API size_t tq_cuda_cache_decode_bytes(const tq_cuda_cache *cache, uint32_t layer,
                                         uint32_t n_q_heads);

#ifdef __cplusplus
}
#endif

#endif /* TQAI_CUDA_H */
