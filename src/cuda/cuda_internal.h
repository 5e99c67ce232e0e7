/*
 * cuda_internal.h - what the .cu files of libtqai_cuda share: the context and
 * device codec structs, status mapping, and the host launchers of each
 * kernel file (one launcher per kernel, each checking its launch).
 */
#ifndef TQ_CUDA_INTERNAL_H
#define TQ_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "tqai.h"
#include "tqai_cuda.h"

struct tq_cuda_ctx {
  int device;
  cudaStream_t stream;
  int own_stream;
  int sm_count;
  cudaError_t last;                /* last CUDA error seen, cudaSuccess if none */
  unsigned long long *err_word;    /* device: first failing vector of an encode */
};

struct tq_cuda_codec {
  tq_cuda_ctx *ctx;
  tq_codec_params params;
  uint32_t levels;                 /* 2^bits */
  size_t norm_bytes, code_bytes, record_bytes;
  float h_centroids[256];          /* (levels,) ascending, as the CPU codec */
  float h_bounds[255];             /* (levels - 1,) float midpoints, as the CPU codec */
  float hadamard_scale;            /* Hadamard: the CPU's 1/sqrt(dim) in float */
  /* Scale in [1, 2) for the decode kernel's fp16 centroid tables (bits <= 4):
   * fp16(s * c) / s is closest to c over the codebook (largest relative
   * error smallest), the kernel divides s back out in float. 1 otherwise. */
  float table_scale;
  float *d_pt;                     /* device (dim, dim): pt[j * dim + i] = P[i][j] */
  float *d_p;                      /* device (dim, dim): p[j * dim + i] = P[j][i] */
  float *d_signs;                  /* device (dim,) Hadamard signs, NULL for Haar */
  float *d_centroids;              /* device (levels,) */
  float *d_bounds;                 /* device (levels - 1,), at least 1 entry */
};

/* Records a CUDA error in the context and maps it to a tq_status
 * (cudaSuccess -> TQ_OK). */
tq_status tq_cuda_fail(tq_cuda_ctx *ctx, cudaError_t e);

/* Checks the launch just queued (cudaGetLastError). */
tq_status tq_cuda_check_launch(tq_cuda_ctx *ctx);

/* Error codes the encoder stores in the low bits of the error word. */
#define TQ_CUDA_ENC_NON_FINITE 1u
#define TQ_CUDA_ENC_RANGE 2u

/* Where the encoder writes: contiguous records, or cache blocks. */
typedef struct tq_enc_out {
  int to_cache;                    /* 0: records; 1: cache blocks */
  uint8_t *records;                /* to_cache 0: (n, record_bytes) */
  /* to_cache 1: vector v is token first + v / H, KV head v % H; its block is
   * table[token / block_tokens]; codes at codes_off + (h * B + slot) *
   * code_bytes, the fp16 norm at norms_off + (h * B + slot) * 2. */
  uint8_t *const *table;
  uint32_t block_tokens, n_heads, first;
  size_t codes_off, norms_off;
} tq_enc_out;

/* Queues the encoding of n vectors of `codec` from x (device, dtype) to
 * `out`; vectors that fail set the context's error word (atomic minimum of
 * (index << 8) | (side << 4) | code). max_norm > 0 also rejects vectors
 * longer than it (TQ_CACHE_MAX_NORM for the cache). Returns the launch
 * status. */
tq_status tq_cuda_encode_launch(tq_cuda_ctx *ctx, const tq_cuda_codec *codec, const void *x,
                                tq_cuda_dtype dtype, size_t n, const tq_enc_out *out,
                                double max_norm, uint32_t side);

/* Resets the error word (before encodes) / reads it back (synchronizes) and
 * turns it into the status of the first failing vector. */
tq_status tq_cuda_err_reset(tq_cuda_ctx *ctx);
tq_status tq_cuda_err_read(tq_cuda_ctx *ctx);

/* Attention launchers (attention.cu). */

/* Layout of one cache block (block_tokens B tokens of one (seq, layer), all
 * H KV heads): key codes (H, B, kcb), value codes (H, B, vcb), key norms
 * (H, B) fp16, value norms (H, B) fp16. */
typedef struct tq_block_layout {
  uint32_t B, H, kcb, vcb;
  size_t off_vc, off_kn, off_vn, bytes;
} tq_block_layout;

/* q (rows, Hq, d) f32 -> qrot (rows, Hq, d) = P_k (q * scale) * log2(e). */
tq_status tq_cuda_rotate_queries(tq_cuda_ctx *ctx, const tq_cuda_codec *kc, const float *q,
                                 uint32_t rows, uint32_t n_q_heads, float scale, float *qrot);

/* Most splits of one (sequence, KV head) a decode call may use. */
#define TQ_CUDA_MAX_SPLITS 256

/* One decode call over the cache of one layer: decode_kernel, grid
 * (n_splits, H, n_seqs), n_splits 1 or even: query rotation, split
 * attention; with an even number the splits run in pairs of blocks that
 * merge their results and rotate them back, with more than two each pair
 * writes one partial and the last block of each (sequence, KV head) to
 * finish merges the partials. */
typedef struct tq_decode_call {
  const uint8_t *const *table;     /* device (n_seqs, max_blocks) block pointers */
  uint32_t max_blocks;
  const uint32_t *lens;            /* device (n_seqs,) tokens */
  uint32_t n_seqs, G;
  uint32_t split_tokens, n_splits; /* n_splits <= TQ_CUDA_MAX_SPLITS */
  const float *q;                  /* (n_seqs, H * G, d) queries as given */
  float scale;                     /* multiplies q.k */
  float *out;                      /* (n_seqs, H * G, d) */
  float *part_ml;                  /* (n_seqs, H * G, n_splits / 2, 2) scratch */
  float *part_acc;                 /* (n_seqs, H * G, n_splits / 2, d) scratch */
  uint32_t *counts;                /* (n_seqs, H) finished splits, zero between calls
                                      (the last block resets its count); needed when
                                      n_splits > 1 */
} tq_decode_call;

/* Blocks of the decode kernel for these codecs and G that run at once on
 * the context's GPU (blocks per SM x SMs), for sizing the splits. */
tq_status tq_cuda_decode_slots(tq_cuda_ctx *ctx, const tq_cuda_codec *kc, const tq_cuda_codec *vc,
                               const tq_block_layout *lay, uint32_t G, uint32_t *slots);

tq_status tq_cuda_decode(tq_cuda_ctx *ctx, const tq_cuda_codec *kc, const tq_cuda_codec *vc,
                         const tq_block_layout *lay, const tq_decode_call *call);

/* Causal prefill of one sequence: partials with one split per query row. */
tq_status tq_cuda_prefill_partials(tq_cuda_ctx *ctx, const tq_cuda_codec *kc,
                                   const tq_cuda_codec *vc, const tq_block_layout *lay,
                                   const uint8_t *const *table, uint32_t T, uint32_t n_q,
                                   uint32_t n_q_heads, const float *qrot, float *part_ml,
                                   float *part_acc);

/* Merges n_splits partials per (row, q head), divides by the softmax sum and
 * rotates back by P_v^T into out (rows, Hq, d) f32. */
tq_status tq_cuda_reduce(tq_cuda_ctx *ctx, const tq_cuda_codec *vc, uint32_t rows,
                         uint32_t n_q_heads, uint32_t n_splits, const float *part_ml,
                         const float *part_acc, float *out);

/* Copies n tokens' records between contiguous CPU-layout records (n, H) and
 * cache blocks, starting at token `first`: to_cache 1 writes the cache. */
tq_status tq_cuda_copy_records(tq_cuda_ctx *ctx, const tq_block_layout *lay,
                               uint8_t *const *table, uint32_t first, uint32_t n, uint8_t *krec,
                               uint8_t *vrec, int to_cache);

/* 1 if the decode/prefill kernels exist for this head size and these bits. */
int tq_cuda_attention_supported(uint32_t d, uint32_t kbits, uint32_t vbits);

#endif
