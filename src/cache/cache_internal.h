/*
 * cache_internal.h - the layout of a tq_cache, shared by the cache
 * (kvcache.c), attention (src/attn/attention.c) and the file format
 * (cachefile.c).
 *
 * Each (layer, KV head) pair is a lane. A lane's tokens, in position order:
 *   sinks    [0, n_sink)            fp16 rows, the first sink_tokens tokens
 *   blocks   next n_comp tokens     compressed records (or fp16 rows in
 *                                   TQ_CACHE_F16 mode), block_tokens a block
 *   pending  next n_pend tokens     fp16 rows waiting for calibration
 *   ring     last n_ring tokens     fp16 rows, the recent window
 * New tokens enter the ring (or go straight on when there is no window); the
 * oldest ring token leaves it for the pending rows (until the lane is
 * calibrated) or for the blocks.
 */
#ifndef TQ_CACHE_INTERNAL_H
#define TQ_CACHE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tqai.h"

/* How one layer codes keys (or values): one codec over all channels, or two
 * codecs over the two halves of a channel permutation (fractional rates). */
typedef struct tq_side_codec {
  float bits;             /* the rate, e.g. 4 or 3.5 */
  uint32_t n_groups;      /* 1 or 2 */
  const tq_codec *codec[2];
  uint32_t dim[2];        /* channels per group: d, or d/2 and d/2 */
  uint32_t gbits[2];      /* bits per group */
  size_t offset[2];       /* byte offset of each group's sub-record */
  size_t rec_bytes;       /* whole record: sum of the groups' record sizes */
  float centroids[2][256];
} tq_side_codec;

typedef struct tq_lane {
  uint16_t *sink_k, *sink_v;   /* (sink_tokens, d) fp16, allocated on first use */
  uint32_t n_sink;
  uint8_t **blocks;            /* block b: K part then V part then padding */
  uint32_t n_blocks, cap_blocks;
  uint32_t n_comp;
  uint16_t *pend_k, *pend_v;   /* (calib_tokens, d) fp16 while uncalibrated */
  uint32_t n_pend;
  uint16_t *ring_k, *ring_v;   /* (window_tokens, d) fp16 ring */
  uint32_t ring_head, n_ring;  /* index of the oldest entry, count */
  int calibrated;
  float *k_mean, *v_mean;      /* (d,) means subtracted before coding (zeros if off) */
  uint16_t *k_perm, *v_perm;   /* (d,) channel order: group 0 first (fractional) */
} tq_lane;

typedef struct tq_layer {
  tq_side_codec k, v;
  int needs_calib;
  size_t k_block_bytes;        /* block_tokens * k.rec_bytes */
  size_t block_bytes;          /* K part + V part + TQ_ATTN_PAD */
  tq_lane *lanes;              /* (n_kv_heads,) */
} tq_layer;

struct tq_cache {
  tq_cache_params p;           /* per-layer pointers cleared */
  tq_layer *layers;            /* (n_layers,) */
  tq_codec **codecs;           /* distinct codecs the layers share */
  uint32_t n_codecs;
  size_t bytes;                /* bytes currently allocated through cache_alloc */
};

/* Allocation through the cache's counter: 64-byte aligned, zeroed. */
void *tq_cache_alloc(tq_cache *c, size_t bytes);
void tq_cache_dealloc(tq_cache *c, void *ptr);

/* Frees everything a lane holds and zeroes it. */
void tq_lane_free(tq_cache *c, tq_lane *ln);

/* Row k of a ring in position order (0 = oldest). */
static inline uint32_t tq_ring_slot(const tq_lane *l, uint32_t window, uint32_t i) {
  uint32_t s = l->ring_head + i;
  return s >= window ? s - window : s;
}

/* Tokens a lane holds. */
static inline uint32_t tq_lane_tokens(const tq_lane *l) {
  return l->n_sink + l->n_comp + l->n_pend + l->n_ring;
}

#endif
