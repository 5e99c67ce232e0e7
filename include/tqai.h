/*
 * tqai.h - public API of libtqai: TurboQuant compression of attention key/value
 * vectors (random rotation, Lloyd-Max scalar codebooks, norm kept apart).
 *
 * Conventions
 * - Every function that can fail returns a tq_status; TQ_OK (0) is success and
 *   every error is negative. tq_status_name() and tq_status_message() name them.
 * - The library never prints, never exits and keeps no mutable global state.
 * - Objects are opaque handles made by a *_create function and released by the
 *   matching *_free function; every *_free accepts NULL.
 * - Unless a comment says otherwise, the caller owns every buffer it passes in
 *   and the library keeps no pointer to it after the call returns.
 *
 * Threading
 * - A tq_codec is immutable once created: any number of threads may call the
 *   encode, decode, rotate and query functions on the same codec at once.
 *   tq_codec_free must not race with any other use of that codec.
 * - The free-standing functions (codebooks, packing, conversions, SIMD queries)
 *   are safe to call from any thread.
 * - A tq_cache may be read by many threads at once (tq_cache_attention,
 *   queries, tq_cache_save), but a call that changes it (append, truncate,
 *   reset, load) must not overlap any other call on the same cache.
 */
#ifndef TQAI_H
#define TQAI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the exported symbols of the shared library (built with hidden
 * visibility by default). */
#if defined(_WIN32)
#define TQ_API
#elif defined(__GNUC__) && __GNUC__ >= 4
#define TQ_API __attribute__((visibility("default")))
#else
#define TQ_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define TQ_VERSION_MAJOR 0
#define TQ_VERSION_MINOR 1
#define TQ_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, comparable with tq_version_number(). */
#define TQ_VERSION_NUMBER \
  (TQ_VERSION_MAJOR * 10000 + TQ_VERSION_MINOR * 100 + TQ_VERSION_PATCH)

/* Version of the byte layout of encoded vectors (docs/FORMAT.md). It changes
 * whenever the bytes produced for the same input and parameters change. */
#define TQ_CODE_FORMAT_VERSION 1

/* Returns TQ_VERSION_NUMBER of the library actually linked. */
TQ_API unsigned tq_version_number(void);

/* Returns the library version as "MAJOR.MINOR.PATCH": a static string, never
 * NULL, owned by the library. */
TQ_API const char *tq_version_string(void);

/* Returns a one-line description of how the library was built (compiler,
 * SIMD kernels compiled in, CUDA support): a static string owned by the
 * library, never NULL. */
TQ_API const char *tq_build_info(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

typedef enum tq_status {
  TQ_OK = 0,
  TQ_ERR_INVALID_ARGUMENT = -1,   /* NULL pointer, unknown enum value, n too big */
  TQ_ERR_UNSUPPORTED_DIM = -2,    /* head size outside [TQ_MIN_DIM, TQ_MAX_DIM] */
  TQ_ERR_UNSUPPORTED_BITS = -3,   /* bits outside [TQ_MIN_BITS, TQ_MAX_BITS] */
  TQ_ERR_UNSUPPORTED_ROTATION = -4, /* e.g. Hadamard for a dim not a power of two */
  TQ_ERR_UNSUPPORTED_SIMD = -5,   /* SIMD level not compiled in or not on this CPU */
  TQ_ERR_NON_FINITE = -6,         /* NaN or infinity in the input */
  TQ_ERR_RANGE = -7,              /* a value does not fit its storage format */
  TQ_ERR_OUT_OF_MEMORY = -8,
  TQ_ERR_BUFFER_TOO_SMALL = -9,   /* an output or input buffer is shorter than needed */
  TQ_ERR_CORRUPT = -10,           /* input data is malformed */
  TQ_ERR_IO = -11,                /* a read or write failed */
  TQ_ERR_FORMAT_VERSION = -12,    /* data written by an unknown format version */
  TQ_ERR_MISMATCH = -13,          /* data does not match the object it is used with */
  TQ_ERR_NO_CONVERGENCE = -14,    /* a numerical solver did not reach its tolerance */
  TQ_ERR_UNSUPPORTED = -15        /* a feature the data needs is not supported
                                     (architecture, tensor type, tokenizer kind) */
} tq_status;

/* Returns the enum name of a status ("TQ_ERR_RANGE"); "TQ_UNKNOWN_STATUS" for
 * a value that is not a tq_status. Static string, never NULL. */
TQ_API const char *tq_status_name(tq_status status);

/* Returns a short English description of a status. Static string, never NULL. */
TQ_API const char *tq_status_message(tq_status status);

/* ------------------------------------------------------------------------ */
/* Limits                                                                    */
/* ------------------------------------------------------------------------ */

#define TQ_MIN_DIM 2u
#define TQ_MAX_DIM 2048u
#define TQ_MIN_BITS 1u
#define TQ_MAX_BITS 8u
/* Largest norm an fp16 norm can hold; encoding a longer vector with
 * TQ_NORM_F16 fails with TQ_ERR_RANGE (use TQ_NORM_F32 for such data). */
#define TQ_F16_MAX 65504.0f

/* ------------------------------------------------------------------------ */
/* SIMD levels                                                               */
/* ------------------------------------------------------------------------ */

typedef enum tq_simd_level {
  TQ_SIMD_AUTO = 0,   /* the best level available, or the one TQAI_SIMD names */
  TQ_SIMD_SCALAR = 1, /* portable reference code, always built */
  TQ_SIMD_AVX2 = 2,   /* x86-64 AVX2 + FMA + F16C */
  TQ_SIMD_AVX512 = 3  /* x86-64 AVX-512 F/BW/VL/DQ */
} tq_simd_level;

/* Returns the highest level both compiled into this library and supported by
 * the CPU it runs on (never TQ_SIMD_AUTO). */
TQ_API tq_simd_level tq_simd_detect(void);

/* Returns the level TQ_SIMD_AUTO resolves to: tq_simd_detect(), unless the
 * environment variable TQAI_SIMD is "scalar", "avx2" or "avx512", in which case
 * that level, lowered to tq_simd_detect() when the CPU lacks it. Other values
 * of TQAI_SIMD are ignored. */
TQ_API tq_simd_level tq_simd_default(void);

/* Returns 1 if `level` is compiled in and supported by this CPU, else 0.
 * TQ_SIMD_AUTO counts as supported. */
TQ_API int tq_simd_supported(tq_simd_level level);

/* Returns "auto", "scalar", "avx2", "avx512", or "unknown". Static string. */
TQ_API const char *tq_simd_name(tq_simd_level level);

/* ------------------------------------------------------------------------ */
/* Half-precision conversions (round to nearest even; NaN stays NaN)         */
/* ------------------------------------------------------------------------ */

/* Each returns the converted value; none can fail. f32 -> f16 overflows to
 * infinity above 65504 (after rounding), as IEEE 754 specifies. */
TQ_API uint16_t tq_f32_to_f16(float x);
TQ_API float tq_f16_to_f32(uint16_t h);
TQ_API uint16_t tq_f32_to_bf16(float x);
TQ_API float tq_bf16_to_f32(uint16_t h);

/* ------------------------------------------------------------------------ */
/* Codebooks                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum tq_codebook_kind {
  /* Lloyd-Max for the exact law of one coordinate of a uniformly random unit
   * vector in R^dim: f(t) proportional to (1 - t^2)^((dim-3)/2) on [-1, 1]. */
  TQ_CODEBOOK_EXACT = 0,
  /* Lloyd-Max for N(0, 1/dim), the large-dim limit of the above. */
  TQ_CODEBOOK_GAUSSIAN = 1
} tq_codebook_kind;

/* Solves the Lloyd-Max quantizer for `kind`, `dim` and `bits` to a fixed point
 * (centroid = conditional mean of its cell, boundary = midpoint of its
 * neighbours) in double precision. Always runs the solver (no tables).
 * centroids: caller-owned array of 2^bits doubles, filled in ascending order,
 *   in units of one coordinate of a unit vector (about 1/sqrt(dim) in size).
 * distortion: if not NULL, receives E||u - Q(u)||^2 for a random unit vector u
 *   (dim times the per-coordinate mean squared error).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (NULL centroids or unknown kind),
 * TQ_ERR_UNSUPPORTED_DIM, TQ_ERR_UNSUPPORTED_BITS or TQ_ERR_NO_CONVERGENCE. */
TQ_API tq_status tq_codebook_solve(uint32_t dim, uint32_t bits, tq_codebook_kind kind,
                            double *centroids, double *distortion);

/* Fills `centroids` (caller-owned, 2^bits floats, ascending) with the codebook
 * a codec of these parameters uses: from the built-in tables for the common
 * head sizes (64, 80, 96, 112, 128, 192, 256; exact kind) and for the
 * Gaussian kind at every dim, otherwise from tq_codebook_solve.
 * Returns the same statuses as tq_codebook_solve. */
TQ_API tq_status tq_codebook_get(uint32_t dim, uint32_t bits, tq_codebook_kind kind,
                          float *centroids);

/* Returns 1 if tq_codebook_get answers (dim, bits, kind) from a built-in
 * table without solving, else 0. */
TQ_API int tq_codebook_is_tabulated(uint32_t dim, uint32_t bits, tq_codebook_kind kind);

/* Returns the paper's bounds on E||u - Q(u)||^2 at `bits` bits per coordinate:
 * upper sqrt(3)*pi/2 * 4^-bits, lower 4^-bits. 0 for bits outside 1..8. */
TQ_API double tq_distortion_upper_bound(uint32_t bits);
TQ_API double tq_distortion_lower_bound(uint32_t bits);

/* ------------------------------------------------------------------------ */
/* Bit packing                                                               */
/* ------------------------------------------------------------------------ */

/* Returns the bytes that `dim` codes of `bits` bits occupy when packed:
 * ceil(dim * bits / 8); 0 if dim or bits is out of range. */
TQ_API size_t tq_packed_size(uint32_t dim, uint32_t bits);

/* Packs dim codes (each < 2^bits) into out[0 .. tq_packed_size-1] as one
 * little-endian bit stream: code j occupies stream bits j*bits .. j*bits+bits-1,
 * bit k of the stream being bit (k % 8) of byte k / 8. Unused high bits of the
 * last byte are zero. Both buffers are the caller's.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (NULL pointer), TQ_ERR_UNSUPPORTED_DIM,
 * TQ_ERR_UNSUPPORTED_BITS, or TQ_ERR_RANGE if a code does not fit in `bits`. */
TQ_API tq_status tq_pack_codes(const uint8_t *codes, uint32_t dim, uint32_t bits,
                        uint8_t *out);

/* Unpacks what tq_pack_codes wrote. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT,
 * TQ_ERR_UNSUPPORTED_DIM or TQ_ERR_UNSUPPORTED_BITS. */
TQ_API tq_status tq_unpack_codes(const uint8_t *packed, uint32_t dim, uint32_t bits,
                          uint8_t *codes);

/* ------------------------------------------------------------------------ */
/* Codec                                                                     */
/* ------------------------------------------------------------------------ */

typedef enum tq_rotation {
  /* Haar-random orthogonal dim x dim matrix: QR of a seeded Gaussian matrix
   * with the sign fix. Any dim. O(dim^2) per vector. */
  TQ_ROTATION_HAAR = 0,
  /* Randomized Hadamard transform: seeded random signs, then a fast
   * Walsh-Hadamard transform scaled by 1/sqrt(dim). dim a power of two only.
   * O(dim log dim) per vector. */
  TQ_ROTATION_HADAMARD = 1
} tq_rotation;

typedef enum tq_norm_format {
  TQ_NORM_F16 = 0, /* 2 bytes, IEEE half; norms above 65504 are rejected */
  TQ_NORM_F32 = 1  /* 4 bytes, IEEE single */
} tq_norm_format;

typedef struct tq_codec_params {
  uint32_t dim;                /* head size, TQ_MIN_DIM..TQ_MAX_DIM */
  uint32_t bits;               /* bits per coordinate, 1..8 */
  tq_rotation rotation;
  tq_codebook_kind codebook;
  tq_norm_format norm_format;
  tq_simd_level simd;          /* TQ_SIMD_AUTO, or a level to force */
  uint64_t seed;               /* seeds the rotation; same seed, same bytes */
} tq_codec_params;

#define TQ_DEFAULT_KEY_SEED 0x7471616b6579ull   /* "tqakey" */
#define TQ_DEFAULT_VALUE_SEED 0x74716176616cull /* "tqaval" */

/* Returns parameters with the defaults: Haar rotation, exact codebook, fp16
 * norm, TQ_SIMD_AUTO, seed TQ_DEFAULT_KEY_SEED. Nothing is validated here. */
TQ_API tq_codec_params tq_codec_params_default(uint32_t dim, uint32_t bits);

/* Key and value codecs are independent; this pair is what a cache needs. */
typedef struct tq_kv_params {
  tq_codec_params key;
  tq_codec_params value;
} tq_kv_params;

/* Returns the default key/value pair for a head size: keys at 4 bits with
 * TQ_DEFAULT_KEY_SEED, values at 2 bits with TQ_DEFAULT_VALUE_SEED, other
 * fields as tq_codec_params_default. */
TQ_API tq_kv_params tq_kv_params_default(uint32_t dim);

typedef struct tq_codec tq_codec;

/* Validates `params` and builds a codec: rotation, codebook and kernels.
 * On success *out receives a new codec owned by the caller (release it with
 * tq_codec_free); on failure *out is set to NULL (when out is not NULL).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_UNSUPPORTED_DIM,
 * TQ_ERR_UNSUPPORTED_BITS, TQ_ERR_UNSUPPORTED_ROTATION,
 * TQ_ERR_UNSUPPORTED_SIMD, TQ_ERR_NO_CONVERGENCE or TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_codec_create(const tq_codec_params *params, tq_codec **out);

/* Releases a codec and everything it owns. NULL is accepted. */
TQ_API void tq_codec_free(tq_codec *codec);

/* Copies the codec's parameters, with `simd` resolved to the level in use,
 * into *out. Returns TQ_OK or TQ_ERR_INVALID_ARGUMENT. */
TQ_API tq_status tq_codec_get_params(const tq_codec *codec, tq_codec_params *out);

/* Returns the bytes of one encoded vector (record): norm then packed codes,
 * tq_record_size(dim, bits, norm_format). 0 for a NULL codec. */
TQ_API size_t tq_codec_record_size(const tq_codec *codec);

/* Returns the bytes of one record for these parameters without a codec:
 * (2 or 4) + ceil(dim * bits / 8); 0 if any argument is out of range. */
TQ_API size_t tq_record_size(uint32_t dim, uint32_t bits, tq_norm_format norm_format);

/* Encodes n vectors of dim values, stored one after another in x, into n
 * records written one after another to `records` (record layout:
 * docs/FORMAT.md). records_size is the capacity of `records` in bytes and must
 * be at least n * tq_codec_record_size(codec). Allocates nothing.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (NULL pointer or n * record size
 * overflowing size_t), TQ_ERR_BUFFER_TOO_SMALL, TQ_ERR_NON_FINITE (a NaN or
 * infinity in x) or TQ_ERR_RANGE (a norm above the norm format's largest
 * value, 65504 for TQ_NORM_F16 and FLT_MAX for TQ_NORM_F32, or a vector whose
 * decoded form, of length norm * ||centroids||, would exceed it). On an
 * error the records of the vectors before the failing one are written and the
 * rest of `records` is unspecified. */
TQ_API tq_status tq_codec_encode_f32(const tq_codec *codec, const float *x, size_t n,
                              void *records, size_t records_size);
/* As tq_codec_encode_f32, for IEEE half (f16) or bfloat16 (bf16) input given
 * as raw 16-bit patterns. */
TQ_API tq_status tq_codec_encode_f16(const tq_codec *codec, const uint16_t *x, size_t n,
                              void *records, size_t records_size);
TQ_API tq_status tq_codec_encode_bf16(const tq_codec *codec, const uint16_t *x, size_t n,
                               void *records, size_t records_size);

/* Decodes n records (records_size bytes available at `records`) into n
 * vectors of dim values at x (caller-owned, n * dim elements). Allocates
 * nothing. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_BUFFER_TOO_SMALL
 * (records_size < n * record size), TQ_ERR_CORRUPT (a stored norm that is
 * negative, NaN or infinite, or a record no encoder writes because it would
 * decode beyond float range) or, for the 16-bit outputs, TQ_ERR_RANGE (a
 * value beyond the output format's range, possible with TQ_NORM_F32); on an
 * error the vectors before the bad record are written and the rest of x is
 * unspecified. */
TQ_API tq_status tq_codec_decode_f32(const tq_codec *codec, const void *records,
                              size_t records_size, size_t n, float *x);
TQ_API tq_status tq_codec_decode_f16(const tq_codec *codec, const void *records,
                              size_t records_size, size_t n, uint16_t *x);
TQ_API tq_status tq_codec_decode_bf16(const tq_codec *codec, const void *records,
                               size_t records_size, size_t n, uint16_t *x);

/* y = P x for one vector of dim floats (P the codec's orthogonal rotation).
 * x and y are caller-owned and may be the same array (other overlaps are
 * not allowed). Use it to rotate a query once
 * and score it against codes. Returns TQ_OK or TQ_ERR_INVALID_ARGUMENT. */
TQ_API tq_status tq_codec_rotate(const tq_codec *codec, const float *x, float *y);

/* x = P^T y, the inverse of tq_codec_rotate. Returns TQ_OK or
 * TQ_ERR_INVALID_ARGUMENT. */
TQ_API tq_status tq_codec_unrotate(const tq_codec *codec, const float *y, float *x);

/* Copies the codec's 2^bits centroids (ascending; units of one coordinate of
 * a unit vector) into the caller's array of `count` floats.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT or TQ_ERR_BUFFER_TOO_SMALL. */
TQ_API tq_status tq_codec_centroids(const tq_codec *codec, float *centroids, size_t count);


/* ------------------------------------------------------------------------ */
/* Thread pool                                                               */
/* ------------------------------------------------------------------------ */

/* A fixed set of worker threads that the attention functions (and engines)
 * can share. One pool may serve one call at a time: calls that pass the same
 * pool must not overlap (give each concurrent caller its own pool). After a
 * call, the workers keep polling for the next one for up to 2 ms before they
 * sleep (a wake-up costs far more than that poll on many machines), and the
 * caller polls as long for the last tasks before it sleeps; an idle pool
 * uses no processor time after that. */
typedef struct tq_pool tq_pool;

/* Starts n_threads - 1 workers (the calling thread is the n-th); n_threads 0
 * means one per online CPU. *out receives the pool, owned by the caller.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (out NULL or n_threads > 256) or
 * TQ_ERR_OUT_OF_MEMORY (also when a thread cannot be started). */
TQ_API tq_status tq_pool_create(uint32_t n_threads, tq_pool **out);

/* Stops the workers and frees the pool. NULL is accepted. */
TQ_API void tq_pool_free(tq_pool *pool);

/* Returns the number of threads working on a call (1 for NULL). */
TQ_API uint32_t tq_pool_size(const tq_pool *pool);

/* ------------------------------------------------------------------------ */
/* Compressed KV cache                                                       */
/* ------------------------------------------------------------------------ */

typedef enum tq_cache_mode {
  TQ_CACHE_F16 = 0,        /* every key and value in fp16: the baseline */
  TQ_CACHE_TURBOQUANT = 1, /* keys and values as TurboQuant codes */
  TQ_CACHE_F32 = 2         /* every key and value in float32: exact, for
                              checking an engine against a reference (scalar
                              attention only, not tuned for speed) */
} tq_cache_mode;

/* Bits per coordinate accepted by the cache: 1, 1.5, 2, ..., 7.5, 8. A rate
 * b + 0.5 splits the head's channels into two halves coded with b + 1 and b
 * bits (docs/CACHE.md says which channels get the extra bit). */
#define TQ_CACHE_MIN_BITS 1.0f
#define TQ_CACHE_MAX_BITS 8.0f
/* Longest key or value vector the cache accepts (room for centering and for
 * decoded codes within the fp16 norms the codes keep). */
#define TQ_CACHE_MAX_NORM 16000.0

typedef struct tq_cache_params {
  uint32_t n_layers;      /* >= 1 */
  uint32_t n_kv_heads;    /* >= 1 */
  uint32_t head_dim;      /* TQ_MIN_DIM..TQ_MAX_DIM (even for fractional bits) */
  uint32_t max_tokens;    /* capacity per layer; appends beyond it fail */
  uint32_t block_tokens;  /* tokens per allocation block, 16..65536 */
  tq_cache_mode mode;

  /* TurboQuant mode only. */
  float key_bits;         /* default 4 */
  float value_bits;       /* default 2 */
  /* Optional per-layer rates (n_layers entries each, copied at creation);
   * NULL means key_bits / value_bits for every layer. */
  const float *layer_key_bits;
  const float *layer_value_bits;
  /* Convenience policy: the first and last `edge_layers` layers use
   * edge_key_bits / edge_value_bits (0 disables). Per-layer arrays win. */
  uint32_t edge_layers;
  float edge_key_bits;
  float edge_value_bits;
  uint32_t sink_tokens;   /* the first S tokens stay fp16 */
  uint32_t window_tokens; /* the last W tokens stay fp16, then are encoded */
  int center;             /* subtract per-head key and value means */
  uint32_t calib_tokens;  /* tokens after the sinks that fix the means and the
                             channel split of fractional rates */
  tq_rotation rotation;
  uint64_t key_seed;
  uint64_t value_seed;
  tq_simd_level simd;
} tq_cache_params;

/* Returns the defaults for a model shape: TurboQuant K4/V2, Haar rotation,
 * block_tokens 256, max_tokens 131072, no sinks, no window, no centering,
 * calib_tokens 64, default seeds, TQ_SIMD_AUTO. */
TQ_API tq_cache_params tq_cache_params_default(uint32_t n_layers, uint32_t n_kv_heads,
                                               uint32_t head_dim);

typedef struct tq_cache tq_cache;

/* Validates params and creates an empty cache (no token memory is allocated
 * until tokens arrive). *out receives the cache, owned by the caller.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_UNSUPPORTED_DIM,
 * TQ_ERR_UNSUPPORTED_BITS, TQ_ERR_UNSUPPORTED_ROTATION,
 * TQ_ERR_UNSUPPORTED_SIMD or TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_cache_create(const tq_cache_params *params, tq_cache **out);

/* Frees the cache and all its memory. NULL is accepted. */
TQ_API void tq_cache_free(tq_cache *cache);

/* Copies the parameters the cache was created with into *out (the per-layer
 * pointers are set to NULL). Returns TQ_OK or TQ_ERR_INVALID_ARGUMENT. */
TQ_API tq_status tq_cache_get_params(const tq_cache *cache, tq_cache_params *out);

/* Appends n tokens to one layer. k and v: (n, n_kv_heads, head_dim) floats,
 * caller-owned. Old tokens are never moved. Returns TQ_OK,
 * TQ_ERR_INVALID_ARGUMENT, TQ_ERR_RANGE (capacity exceeded, or a key or value
 * vector longer than TQ_CACHE_MAX_NORM), TQ_ERR_NON_FINITE or
 * TQ_ERR_OUT_OF_MEMORY; on an error the layer is as it was before. */
TQ_API tq_status tq_cache_append(tq_cache *cache, uint32_t layer, const float *k,
                                 const float *v, uint32_t n);

/* Returns the number of tokens stored in `layer` (0 for a bad argument). */
TQ_API uint32_t tq_cache_tokens(const tq_cache *cache, uint32_t layer);

/* Returns the bytes the cache currently holds from the allocator (token
 * storage, per-head statistics and bookkeeping), counted at each allocation
 * and free. 0 for NULL. */
TQ_API size_t tq_cache_bytes(const tq_cache *cache);

/* Keeps the first n_tokens tokens of every layer and drops the rest (for
 * regeneration); n_tokens above a layer's count leaves that layer alone.
 * Returns TQ_OK or TQ_ERR_INVALID_ARGUMENT. Dropping below the calibration
 * point also clears the frozen means and channel split. */
TQ_API tq_status tq_cache_truncate(tq_cache *cache, uint32_t n_tokens);

/* Drops every token and frees their memory. Returns TQ_OK or
 * TQ_ERR_INVALID_ARGUMENT. */
TQ_API tq_status tq_cache_reset(tq_cache *cache);

/* Causal attention of n_q query tokens against one layer, computed on the
 * stored codes (keys and values are never decompressed):
 *   q:   (n_q, n_q_heads, head_dim) floats, the queries of the LAST n_q
 *        tokens stored in the layer (query i sits at position
 *        tokens - n_q + i and sees positions 0..that one);
 *   out: (n_q, n_q_heads, head_dim) floats, caller-owned;
 *   n_q_heads a multiple of n_kv_heads (grouped-query attention: heads
 *   h*G .. h*G+G-1 use KV head h, G = n_q_heads / n_kv_heads);
 *   scale multiplies q.k (usually 1/sqrt(head_dim));
 *   pool may be NULL (the calling thread does all the work). Results do not
 *   depend on the number of threads.
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (bad layer, shapes, n_q = 0 or more
 * than the layer holds) or TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_cache_attention(const tq_cache *cache, uint32_t layer, const float *q,
                                    uint32_t n_q, uint32_t n_q_heads, float scale,
                                    float *out, tq_pool *pool);

/* Writes the whole cache to `path` through a temporary file in the same
 * directory that is renamed over `path` only when complete, so a crash never
 * leaves a half-written file under that name (format: docs/FORMAT.md).
 * Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT (NULL or empty path), TQ_ERR_IO or
 * TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_cache_save(const tq_cache *cache, const char *path);

/* Replaces the cache's contents with those saved at `path`. The file must
 * have been written from a cache of the same parameters. The file is read and
 * checked completely before anything changes: on any error the cache is left
 * exactly as it was. Returns TQ_OK, TQ_ERR_INVALID_ARGUMENT, TQ_ERR_IO,
 * TQ_ERR_CORRUPT (bad magic, checksum, sizes or values),
 * TQ_ERR_FORMAT_VERSION, TQ_ERR_MISMATCH (other parameters) or
 * TQ_ERR_OUT_OF_MEMORY. */
TQ_API tq_status tq_cache_load(tq_cache *cache, const char *path);

/* As tq_cache_load, from a buffer of `size` bytes (caller-owned). */
TQ_API tq_status tq_cache_load_buffer(tq_cache *cache, const void *data, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* TQAI_H */
