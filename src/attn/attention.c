/*
 * attention.c - causal attention of queries against one layer of a tq_cache,
 * computed on what the cache stores: fp16 rows for sinks, pending rows, the
 * recent window (and everything in TQ_CACHE_F16 mode), codec records for the
 * rest. Compressed keys are scored in the key codec's rotated domain
 * (score = norm * (P q) . c[idx], plus q . mean for centered keys); values
 * are summed in the value codec's rotated domain and rotated back once.
 *
 * Work is split into tasks (query token, KV head, token segment); decode
 * (one query token) cuts the context into fixed segments merged in order
 * afterwards, so the result does not depend on the number of threads.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "attn_kernels.h"
#include "cache/cache_internal.h"
#include "core/pool.h"

/* Online-softmax state of one query head over a span of tokens. */
typedef struct head_state {
  float m;      /* running max of the scores */
  float l;      /* sum of exp(score - m) */
  float wc;     /* the part of l that came from compressed tokens */
} head_state;

typedef struct attn_call {
  const tq_cache *c;
  const tq_layer *L;
  const tq_attn_kernels *ak;
  const float *q;
  float *out;
  float scale;
  uint32_t n_q, n_q_heads, G, d, T;
  uint32_t seg_tokens, n_seg;   /* decode: fixed segments; prefill: one */
  /* Decode partial results: (H, n_seg, G) states and accumulators. */
  head_state *part_state;
  float *part_acc;              /* (H, n_seg, G, 2 * d): original then rotated domain */
  /* Decode: each KV head's prepared queries, shared by its segments: per
   * head PREP_FLOATS(G, d) floats (scaled, rotated, key-mean offsets). */
  float *prep;
  atomic_int status;
} attn_call;

/* Per-task working memory: one allocation. */
typedef struct task_mem {
  float *qs;       /* (G, d) scaled queries, original channel order */
  float *qr[2];    /* (G, dim[grp]) rotated queries per key group */
  float *koff;     /* (G,) q . key mean */
  float *s, *s2;   /* (G, B) scores */
  float *acc_o;    /* (G, d) value sum from fp16 rows */
  float *acc_r;    /* value sums in the rotated domain, group by group: group
                      grp is (G, dim[grp]) at acc_r + G * (dims before grp) */
  head_state *st;  /* (G,) */
  void *base;
} task_mem;

#define PREP_FLOATS(G, d) ((size_t)(G) * (d) * 2 + (G))

/* Points m's query fields at one head's block of PREP_FLOATS floats. */
static void prep_view(task_mem *m, float *f, uint32_t G, uint32_t d) {
  m->qs = f;
  m->qr[0] = f + (size_t)G * d;
  m->koff = f + (size_t)G * d * 2;
}

static int task_mem_alloc(task_mem *m, uint32_t G, uint32_t d, uint32_t B) {
  size_t n = (size_t)G * d * 4 + (size_t)G + (size_t)G * B * 2;
  m->base = malloc(n * sizeof(float) + (size_t)G * sizeof(head_state));
  if (!m->base) return 0;
  float *f = m->base;
  m->qs = f, f += (size_t)G * d;
  m->qr[0] = f, f += (size_t)G * d; /* both groups fit in G * d */
  m->acc_o = f, f += (size_t)G * d;
  m->acc_r = f, f += (size_t)G * d;
  m->koff = f, f += G;
  m->s = f, f += (size_t)G * B;
  m->s2 = f, f += (size_t)G * B;
  m->st = (head_state *)(void *)f;
  return 1;
}

/* Scores of one chunk are in m->s (G, n); folds them into the softmax state
 * (turning them into weights) and rescales the accumulators. */
static void softmax_update(const attn_call *a, task_mem *m, uint32_t n, int compressed) {
  uint32_t G = a->G, d = a->d;
  for (uint32_t g = 0; g < G; g++) {
    float *s = m->s + (size_t)g * n;
    float mx = a->ak->row_max(s, n);
    head_state *st = &m->st[g];
    if (mx > st->m) {
      if (st->l > 0.0f) {
        float f = expf(st->m - mx);
        st->l *= f;
        st->wc *= f;
        for (uint32_t j = 0; j < d; j++) m->acc_o[(size_t)g * d + j] *= f;
        float *r = m->acc_r;
        for (uint32_t grp = 0; grp < a->L->v.n_groups; grp++) {
          uint32_t dg = a->L->v.dim[grp];
          for (uint32_t j = 0; j < dg; j++) r[(size_t)g * dg + j] *= f;
          r += (size_t)G * dg;
        }
      }
      st->m = mx;
    }
    float sum = a->ak->exp_sum(s, n, st->m);
    st->l += sum;
    if (compressed) st->wc += sum;
  }
}

/* One chunk of n fp16 rows (keys k, values v, row stride d). */
static void chunk_f16(const attn_call *a, task_mem *m, const uint16_t *k, const uint16_t *v,
                      uint32_t n) {
  if (n == 0) return;
  a->ak->score_f16(m->qs, a->G, a->d, k, a->d, n, m->s);
  softmax_update(a, m, n, 0);
  a->ak->accum_f16(m->s, a->G, a->d, v, a->d, n, m->acc_o);
}

/* One chunk of n float32 rows (TQ_CACHE_F32 mode): plain loops, the mode
 * exists to check engines against references, not for speed. */
static void chunk_f32(const attn_call *a, task_mem *m, const float *k, const float *v, uint32_t n) {
  uint32_t G = a->G, d = a->d;
  for (uint32_t g = 0; g < G; g++)
    for (uint32_t t = 0; t < n; t++) {
      float s = 0.0f;
      for (uint32_t j = 0; j < d; j++) s += m->qs[(size_t)g * d + j] * k[(size_t)t * d + j];
      m->s[(size_t)g * n + t] = s;
    }
  softmax_update(a, m, n, 0);
  for (uint32_t g = 0; g < G; g++)
    for (uint32_t t = 0; t < n; t++) {
      float w = m->s[(size_t)g * n + t];
      for (uint32_t j = 0; j < d; j++) m->acc_o[(size_t)g * d + j] += w * v[(size_t)t * d + j];
    }
}

/* One chunk of n compressed tokens starting at slot `first` of a block. */
static void chunk_codes(const attn_call *a, task_mem *m, const uint8_t *blk, uint32_t first,
                        uint32_t n) {
  if (n == 0) return;
  const tq_layer *L = a->L;
  uint32_t G = a->G;
  const uint8_t *krec = blk + (size_t)first * L->k.rec_bytes;
  const uint8_t *vrec = blk + L->k_block_bytes + (size_t)first * L->v.rec_bytes;
  for (uint32_t grp = 0; grp < L->k.n_groups; grp++) {
    float *dst = grp == 0 ? m->s : m->s2;
    a->ak->score_codes(m->qr[grp], G, L->k.dim[grp], krec + L->k.offset[grp], L->k.rec_bytes, n,
                       L->k.gbits[grp], L->k.centroids[grp], dst);
  }
  for (uint32_t g = 0; g < G; g++) {
    float *s = m->s + (size_t)g * n;
    const float *s2 = m->s2 + (size_t)g * n;
    if (L->k.n_groups == 2)
      for (uint32_t t = 0; t < n; t++) s[t] += s2[t];
    /* The offset is exactly 0 without centering: nothing to add. */
    const float off = m->koff[g];
    if (off != 0.0f)
      for (uint32_t t = 0; t < n; t++) s[t] += off;
  }
  softmax_update(a, m, n, 1);
  float *acc = m->acc_r;
  for (uint32_t grp = 0; grp < L->v.n_groups; grp++) {
    /* acc for group grp: (G, dim[grp]) starting after the previous group. */
    a->ak->accum_codes(m->s, G, L->v.dim[grp], vrec + L->v.offset[grp], L->v.rec_bytes, n,
                       L->v.gbits[grp], L->v.centroids[grp], acc);
    acc += (size_t)G * L->v.dim[grp];
  }
}

/* Positions [lo, hi) of a lane's region that starts at position `start` and
 * holds `count` tokens, clipped to the task's span; returns the count. */
static uint32_t clip(uint32_t start, uint32_t count, uint32_t lo, uint32_t hi, uint32_t *first) {
  uint32_t a = start > lo ? start : lo;
  uint32_t b = start + count < hi ? start + count : hi;
  if (b <= a) return 0;
  *first = a - start;
  return b - a;
}

/* Runs the softmax over positions [lo, hi) of lane h into m. */
static void attend_span(const attn_call *a, task_mem *m, const tq_lane *ln, uint32_t lo,
                        uint32_t hi) {
  const tq_cache_params *p = &a->c->p;
  uint32_t d = a->d, B = p->block_tokens, first, n;
  uint32_t pos = 0;
  /* sinks */
  n = clip(pos, ln->n_sink, lo, hi, &first);
  for (uint32_t o = 0; o < n; o += B) {
    uint32_t len = n - o < B ? n - o : B;
    chunk_f16(a, m, ln->sink_k + (size_t)(first + o) * d, ln->sink_v + (size_t)(first + o) * d, len);
  }
  pos += ln->n_sink;
  /* blocks */
  n = clip(pos, ln->n_comp, lo, hi, &first);
  for (uint32_t o = 0; o < n;) {
    uint32_t idx = first + o, b = idx / B, slot = idx % B;
    uint32_t len = B - slot < n - o ? B - slot : n - o;
    const uint8_t *blk = ln->blocks[b];
    if (p->mode == TQ_CACHE_F16) {
      /* The next block of the span towards the second-level cache while
       * this one is computed: the fp16 kernel is bound by memory, and a
       * block's start would otherwise wait for the hardware prefetcher to
       * find the new stream (5-12% faster cold at 32k tokens). The
       * compressed kernels are bound by arithmetic; the same prefetch made
       * them about 6% slower (docs/CACHE.md). */
#if defined(__GNUC__) || defined(__clang__)
      if (o + len < n) {
        const char *nb = (const char *)ln->blocks[b + 1];
        for (size_t i = 0; i < a->L->block_bytes; i += 64) __builtin_prefetch(nb + i, 0, 1);
      }
#endif
      const uint16_t *kr = (const uint16_t *)(const void *)blk + (size_t)slot * d;
      const uint16_t *vr = (const uint16_t *)(const void *)(blk + a->L->k_block_bytes) + (size_t)slot * d;
      chunk_f16(a, m, kr, vr, len);
    } else if (p->mode == TQ_CACHE_F32) {
      const float *kr = (const float *)(const void *)blk + (size_t)slot * d;
      const float *vr = (const float *)(const void *)(blk + a->L->k_block_bytes) + (size_t)slot * d;
      chunk_f32(a, m, kr, vr, len);
    } else {
      chunk_codes(a, m, blk, slot, len);
    }
    o += len;
  }
  pos += ln->n_comp;
  /* pending rows */
  n = clip(pos, ln->n_pend, lo, hi, &first);
  for (uint32_t o = 0; o < n; o += B) {
    uint32_t len = n - o < B ? n - o : B;
    chunk_f16(a, m, ln->pend_k + (size_t)(first + o) * d, ln->pend_v + (size_t)(first + o) * d, len);
  }
  pos += ln->n_pend;
  /* ring: contiguous pieces between wrap-arounds */
  n = clip(pos, ln->n_ring, lo, hi, &first);
  for (uint32_t o = 0; o < n;) {
    uint32_t slot = tq_ring_slot(ln, p->window_tokens, first + o);
    uint32_t len = p->window_tokens - slot;
    if (len > n - o) len = n - o;
    if (len > B) len = B;
    chunk_f16(a, m, ln->ring_k + (size_t)slot * d, ln->ring_v + (size_t)slot * d, len);
    o += len;
  }
}

/* Prepares the task's queries: scaled, and rotated per key group. */
static void prepare_queries(const attn_call *a, task_mem *m, const tq_lane *ln, uint32_t i,
                            uint32_t h) {
  uint32_t G = a->G, d = a->d;
  const tq_side_codec *K = &a->L->k;
  for (uint32_t g = 0; g < G; g++) {
    const float *src = a->q + ((size_t)i * a->n_q_heads + (size_t)h * G + g) * d;
    float *qs = m->qs + (size_t)g * d;
    for (uint32_t j = 0; j < d; j++) qs[j] = src[j] * a->scale;
    m->koff[g] = 0.0f;
    if (!ln->calibrated && ln->n_comp == 0) continue;
    if (ln->k_mean) {
      float off = 0.0f;
      for (uint32_t j = 0; j < d; j++) off += qs[j] * ln->k_mean[j];
      m->koff[g] = off;
    }
  }
  if (K->n_groups == 0) return;
  m->qr[1] = m->qr[0] + (size_t)G * K->dim[0];
  _Alignas(64) float perm[TQ_MAX_DIM];
  for (uint32_t g = 0; g < G; g++) {
    const float *qs = m->qs + (size_t)g * d;
    if (K->n_groups == 2) {
      for (uint32_t j = 0; j < d; j++) perm[j] = qs[ln->k_perm ? ln->k_perm[j] : j];
      qs = perm;
    }
    tq_codec_rotate(K->codec[0], qs, m->qr[0] + (size_t)g * K->dim[0]);
    if (K->n_groups == 2) tq_codec_rotate(K->codec[1], qs + K->dim[0], m->qr[1] + (size_t)g * K->dim[1]);
  }
}

/* Copies the group-by-group rotated sums into rows: row g of dst (d floats)
 * holds group 0's part of head g, then group 1's. */
static void rot_rows(const attn_call *a, const float *acc_r, float *dst) {
  const tq_side_codec *V = &a->L->v;
  uint32_t G = a->G, d = a->d;
  const float *r = acc_r;
  uint32_t at = 0;
  for (uint32_t grp = 0; grp < V->n_groups; grp++) {
    uint32_t dg = V->dim[grp];
    for (uint32_t g = 0; g < G; g++) memcpy(dst + (size_t)g * d + at, r + (size_t)g * dg, dg * sizeof(float));
    r += (size_t)G * dg;
    at += dg;
  }
}

/* out (G, d) = (acc_o + P_v^T rot + wc * v_mean) / l for lane ln, with rot in
 * the row layout of rot_rows. */
static void finish(const attn_call *a, const tq_lane *ln, const head_state *st, const float *acc_o,
                   const float *rot_row, float *out, uint32_t out_stride) {
  uint32_t G = a->G, d = a->d;
  const tq_side_codec *V = &a->L->v;
  _Alignas(64) float y[TQ_MAX_DIM];
  for (uint32_t g = 0; g < G; g++) {
    float *o = out + (size_t)g * out_stride;
    float inv = st[g].l > 0.0f ? 1.0f / st[g].l : 0.0f;
    for (uint32_t j = 0; j < d; j++) o[j] = acc_o[(size_t)g * d + j];
    if (V->n_groups > 0 && st[g].wc > 0.0f) {
      uint32_t at = 0;
      for (uint32_t grp = 0; grp < V->n_groups; grp++) {
        tq_codec_unrotate(V->codec[grp], rot_row + (size_t)g * d + at, y + at);
        at += V->dim[grp];
      }
      for (uint32_t j = 0; j < d; j++) o[V->n_groups == 2 && ln->v_perm ? ln->v_perm[j] : j] += y[j];
      if (ln->v_mean)
        for (uint32_t j = 0; j < d; j++) o[j] += st[g].wc * ln->v_mean[j];
    }
    for (uint32_t j = 0; j < d; j++) o[j] *= inv;
  }
}

static void reset_state(task_mem *m, uint32_t G, uint32_t d) {
  for (uint32_t g = 0; g < G; g++) m->st[g] = (head_state){-INFINITY, 0.0f, 0.0f};
  memset(m->acc_o, 0, (size_t)G * d * sizeof(float));
  memset(m->acc_r, 0, (size_t)G * d * sizeof(float));
}

static void run_task(void *ctx, uint32_t index) {
  attn_call *a = ctx;
  uint32_t H = a->c->p.n_kv_heads;
  uint32_t seg = index % a->n_seg, rest = index / a->n_seg;
  uint32_t h = rest % H, i = rest / H;
  const tq_lane *ln = &a->L->lanes[h];
  task_mem m;
  if (!task_mem_alloc(&m, a->G, a->d, a->c->p.block_tokens)) {
    atomic_store(&a->status, TQ_ERR_OUT_OF_MEMORY);
    return;
  }
  if (a->prep) {
    const float *f = a->prep + h * PREP_FLOATS(a->G, a->d);
    memcpy(m.qs, f, (size_t)a->G * a->d * sizeof(float));
    memcpy(m.qr[0], f + (size_t)a->G * a->d, (size_t)a->G * a->d * sizeof(float));
    memcpy(m.koff, f + (size_t)a->G * a->d * 2, a->G * sizeof(float));
    m.qr[1] = m.qr[0] + (a->L->k.n_groups ? (size_t)a->G * a->L->k.dim[0] : 0);
  } else {
    prepare_queries(a, &m, ln, i, h);
  }
  reset_state(&m, a->G, a->d);
  uint32_t pos = a->T - a->n_q + i; /* the query's own position */
  uint32_t lo = seg * a->seg_tokens;
  uint32_t hi = a->n_seg == 1 ? pos + 1 : lo + a->seg_tokens;
  if (hi > pos + 1) hi = pos + 1;
  if (lo < hi) attend_span(a, &m, ln, lo, hi);
  /* qr[0] (G * d floats) is free once the span is done: it takes the
   * rotated sums as rows. */
  float *rows = m.qr[0];
  rot_rows(a, m.acc_r, rows);
  if (a->n_seg == 1) {
    float *out = a->out + ((size_t)i * a->n_q_heads + (size_t)h * a->G) * a->d;
    finish(a, ln, m.st, m.acc_o, rows, out, a->d);
  } else {
    size_t at = ((size_t)h * a->n_seg + seg) * a->G;
    memcpy(a->part_state + at, m.st, a->G * sizeof(head_state));
    for (uint32_t g = 0; g < a->G; g++) {
      memcpy(a->part_acc + (at + g) * 2 * a->d, m.acc_o + (size_t)g * a->d, a->d * sizeof(float));
      memcpy(a->part_acc + (at + g) * 2 * a->d + a->d, rows + (size_t)g * a->d, a->d * sizeof(float));
    }
  }
  free(m.base);
}

/* Merges the segments of KV head h in order and writes the output. */
static void merge_segments(attn_call *a, uint32_t h) {
  uint32_t G = a->G, d = a->d;
  const tq_lane *ln = &a->L->lanes[h];
  head_state st[256];
  float *acc_o = calloc((size_t)G * d * 2, sizeof(float));
  if (!acc_o) {
    atomic_store(&a->status, TQ_ERR_OUT_OF_MEMORY);
    return;
  }
  float *acc_r = acc_o + (size_t)G * d; /* rows as in rot_rows */
  for (uint32_t g = 0; g < G; g++) st[g] = (head_state){-INFINITY, 0.0f, 0.0f};
  for (uint32_t s = 0; s < a->n_seg; s++) {
    size_t at = ((size_t)h * a->n_seg + s) * G;
    for (uint32_t g = 0; g < G; g++) {
      const head_state *ps = &a->part_state[at + g];
      if (ps->l == 0.0f) continue;
      float m = ps->m > st[g].m ? ps->m : st[g].m;
      float fa = st[g].l > 0.0f ? expf(st[g].m - m) : 0.0f;
      float fb = expf(ps->m - m);
      const float *po = a->part_acc + (at + g) * 2 * d;
      for (uint32_t j = 0; j < d; j++) {
        acc_o[(size_t)g * d + j] = acc_o[(size_t)g * d + j] * fa + po[j] * fb;
      }
      st[g].l = st[g].l * fa + ps->l * fb;
      st[g].wc = st[g].wc * fa + ps->wc * fb;
      st[g].m = m;
      for (uint32_t j = 0; j < d; j++)
        acc_r[(size_t)g * d + j] = acc_r[(size_t)g * d + j] * fa + po[d + j] * fb;
    }
  }
  float *out = a->out + (size_t)h * G * d;
  finish(a, ln, st, acc_o, acc_r, out, d);
  free(acc_o);
}

/* Pool task: the merge of KV head `index`. Heads write disjoint outputs. */
static void merge_task(void *ctx, uint32_t index) { merge_segments(ctx, index); }

tq_status tq_cache_attention(const tq_cache *cache, uint32_t layer, const float *q, uint32_t n_q,
                             uint32_t n_q_heads, float scale, float *out, tq_pool *pool) {
  if (!cache || !q || !out || layer >= cache->p.n_layers || n_q == 0) return TQ_ERR_INVALID_ARGUMENT;
  uint32_t H = cache->p.n_kv_heads;
  if (n_q_heads == 0 || n_q_heads % H || n_q_heads / H > 256 || !isfinite(scale))
    return TQ_ERR_INVALID_ARGUMENT;
  const tq_layer *L = &cache->layers[layer];
  uint32_t T = tq_lane_tokens(&L->lanes[0]);
  if (n_q > T) return TQ_ERR_INVALID_ARGUMENT;
  attn_call a;
  memset(&a, 0, sizeof a);
  a.c = cache;
  a.L = L;
  a.ak = tq_attn_kernels_get(cache->p.simd);
  if (!a.ak) return TQ_ERR_UNSUPPORTED_SIMD;
  a.q = q;
  a.out = out;
  a.scale = scale;
  a.n_q = n_q;
  a.n_q_heads = n_q_heads;
  a.G = n_q_heads / H;
  a.d = cache->p.head_dim;
  a.T = T;
  atomic_init(&a.status, TQ_OK);
  if (n_q == 1) {
    a.seg_tokens = 8 * cache->p.block_tokens;
    a.n_seg = (T + a.seg_tokens - 1) / a.seg_tokens;
  } else {
    a.seg_tokens = T;
    a.n_seg = 1;
  }
  if (a.n_seg > 1) {
    size_t states = (size_t)H * a.n_seg * a.G;
    a.part_state = malloc(states * sizeof *a.part_state);
    a.part_acc = malloc(states * 2 * a.d * sizeof(float));
    /* The queries are scaled and rotated once per KV head here, not once
     * per segment in every task. */
    a.prep = calloc(H * PREP_FLOATS(a.G, a.d), sizeof(float));
    if (!a.part_state || !a.part_acc || !a.prep) {
      free(a.part_state);
      free(a.part_acc);
      free(a.prep);
      return TQ_ERR_OUT_OF_MEMORY;
    }
    for (uint32_t h = 0; h < H; h++) {
      task_mem view;
      prep_view(&view, a.prep + h * PREP_FLOATS(a.G, a.d), a.G, a.d);
      prepare_queries(&a, &view, &L->lanes[h], 0, h);
    }
  }
  tq_pool_run(pool, n_q * H * a.n_seg, run_task, &a);
  if (a.n_seg > 1) {
    if (atomic_load(&a.status) == TQ_OK) tq_pool_run(pool, H, merge_task, &a);
    free(a.part_state);
    free(a.part_acc);
    free(a.prep);
  }
  return (tq_status)atomic_load(&a.status);
}
