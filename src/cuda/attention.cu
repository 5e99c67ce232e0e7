/*
 * attention.cu - attention on packed TurboQuant codes in the device cache.
 *
 * Decode (one query per sequence) runs three kernels:
 *   1. rotate_queries: qrot = P_k (q * scale) * log2(e), once per query head
 *      (scores then live in base 2, so the softmax uses exp2).
 *   2. decode_split: grid (split, KV head, sequence). Each block of four
 *      warps takes one token range (split-K, "flash-decoding"); each warp
 *      walks tiles of 16 tokens with an online softmax and tensor-core MMAs:
 *        scores  S (16 x 16 tokens) = Q (16 x d) * Kc^T, Kc the centroids of
 *                the key codes, decoded from the packed bytes straight into
 *                the B fragment through a shared table of centroid pairs;
 *        values  O (16 x d) += P (16 x 16 tokens) * Vc, P taken from S's
 *                accumulator registers, Vc decoded like Kc.
 *      The 16 MMA rows are 8 query heads x {high, low} fp16 halves of the
 *      query: the two halves' products are summed in fp32, so the scores
 *      lose nothing beyond the fp16 centroids (2^-12 relative). The weights
 *      p * norm enter the value MMA in fp16 (the low rows are zero). The G <= 8 query heads of one KV head share every
 *      code load. The block's warps merge their states in shared memory and
 *      write one partial (m, l, acc) per query head.
 *   3. reduce: merges the splits in order, divides by the softmax sum and
 *      rotates back once by P_v^T.
 * Prefill uses a plain CUDA-core kernel (one block per query and head) that
 * writes the same partials with one split, then the same reduce kernel.
 *
 * Coordinates inside the MMAs are permuted (a dot product does not care):
 * for keys, thread q = lane % 4 of a token owns the d/4 consecutive
 * coordinates [q d/4, (q+1) d/4) of that token, one contiguous run of its code
 * bytes (16 bytes for K4 at d = 128: a single 16-byte load); for values, lane
 * group r = lane / 4 owns coordinates [r d/8, (r+1) d/8) of four tokens.
 */
#include <cuda_fp16.h>
#include <math.h>

#include "cuda_internal.h"

#define LOG2E 1.4426950408889634f
#define DEC_WARPS 4
/* Blocks per SM the register allocation aims for (3: no spills at d = 128). */
#ifndef TQ_DEC_MIN_BLOCKS
#define TQ_DEC_MIN_BLOCKS 3
#endif
#define TILE 16

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

/* Loads CH bytes (CH a run of code bytes, aligned to its largest power-of-two
 * divisor up to 16) into 32-bit words, little-endian; unused high bytes 0. */
template <int CH>
__device__ __forceinline__ void load_chunk(const uint8_t *p, uint32_t *w) {
  if constexpr (CH % 16 == 0) {
#pragma unroll
    for (int i = 0; i < CH / 16; i++) {
      uint4 x = __ldg((const uint4 *)p + i);
      w[4 * i] = x.x, w[4 * i + 1] = x.y, w[4 * i + 2] = x.z, w[4 * i + 3] = x.w;
    }
  } else if constexpr (CH % 8 == 0) {
#pragma unroll
    for (int i = 0; i < CH / 8; i++) {
      uint2 x = __ldg((const uint2 *)p + i);
      w[2 * i] = x.x, w[2 * i + 1] = x.y;
    }
  } else if constexpr (CH % 4 == 0) {
#pragma unroll
    for (int i = 0; i < CH / 4; i++) w[i] = __ldg((const unsigned int *)p + i);
  } else if constexpr (CH % 2 == 0) {
#pragma unroll
    for (int i = 0; i < (CH + 3) / 4; i++) w[i] = 0;
#pragma unroll
    for (int i = 0; i < CH / 2; i++)
      w[i / 2] |= (uint32_t)__ldg((const unsigned short *)p + i) << (16 * (i % 2));
  } else {
#pragma unroll
    for (int i = 0; i < (CH + 3) / 4; i++) w[i] = 0;
#pragma unroll
    for (int i = 0; i < CH; i++) w[i / 4] |= (uint32_t)__ldg(p + i) << (8 * (i % 4));
  }
}

/* Bits [off, off + n) of a little-endian word array (n <= 16); with off and n
 * constants after unrolling, this is one or two shifts. */
__device__ __forceinline__ uint32_t bits_at(const uint32_t *w, int off, int n) {
  int i = off >> 5, s = off & 31;
  uint32_t x = w[i] >> s;
  if (s + n > 32) x |= w[i + 1] << (32 - s);
  return x & ((1u << n) - 1u);
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *(uint32_t *)&h;
}

/* The high half of x, or the low half (x minus its fp16 rounding). */
__device__ __forceinline__ float split_part(float x, int low) {
  float h = __half2float(__float2half_rn(x));
  return low ? x - h : h;
}

__device__ __forceinline__ void mma_16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}


/* Guarded exp2(a - b) for the online softmax: 0 when a is -inf. */
__device__ __forceinline__ float exp2_diff(float a, float b) {
  return a == -INFINITY ? 0.0f : exp2f(a - b);
}

/* ------------------------------------------------------------------------ */
/* 1. Query rotation                                                         */
/* ------------------------------------------------------------------------ */

/* grid (Hq, rows), block d threads (d <= 1024). */
__global__ void rotate_queries_kernel(const float *q, const float *pt, uint32_t d, float scale,
                                      float *qrot) {
  extern __shared__ float qs[];
  size_t base = ((size_t)blockIdx.y * gridDim.x + blockIdx.x) * d;
  uint32_t i = threadIdx.x;
  qs[i] = q[base + i] * scale;
  __syncthreads();
  float acc = 0.0f;
  for (uint32_t j = 0; j < d; j++) acc += pt[(size_t)j * d + i] * qs[j];
  qrot[base + i] = acc * LOG2E;
}

tq_status tq_cuda_rotate_queries(tq_cuda_ctx *ctx, const tq_cuda_codec *kc, const float *q,
                                 uint32_t rows, uint32_t n_q_heads, float scale, float *qrot) {
  uint32_t d = kc->params.dim;
  dim3 grid(n_q_heads, rows);
  rotate_queries_kernel<<<grid, d, d * sizeof(float), ctx->stream>>>(q, kc->d_pt, d, scale, qrot);
  return tq_cuda_check_launch(ctx);
}

/* ------------------------------------------------------------------------ */
/* 2. Split-K decode on tensor cores                                         */
/* ------------------------------------------------------------------------ */

typedef struct dec_args {
  tq_decode_call c;
  uint32_t B, H;
  size_t off_vc, off_kn, off_vn;
  const float *kcent, *vcent;
} dec_args;

/* One tile's loads for one thread. */
template <int D, int KB, int VB>
struct tile_regs {
  static constexpr int KCH = D * KB / 32; /* key bytes per thread and token */
  static constexpr int VCH = D * VB / 64; /* value bytes per thread and token */
  uint32_t k[2][(KCH + 3) / 4];           /* tokens r0 and 8 + r0 */
  uint32_t v[4][(VCH + 3) / 4];           /* tokens 2q, 2q+1, 8+2q, 9+2q */
  uint32_t kn[2], vn[2];                  /* fp16 norm pairs of tokens 2q, 2q+1 and 8+2q, 9+2q */
};

template <int D, int KB, int VB>
__device__ __forceinline__ void load_tile(tile_regs<D, KB, VB> &t, const uint8_t *blk, uint32_t h,
                                          uint32_t B, uint32_t slot0, const dec_args &a,
                                          uint32_t lane) {
  constexpr int KCB = D * KB / 8, VCB = D * VB / 8;
  constexpr int KCH = tile_regs<D, KB, VB>::KCH, VCH = tile_regs<D, KB, VB>::VCH;
  const uint32_t q = lane & 3, r0 = lane >> 2;
  const size_t row0 = (size_t)h * B + slot0;
  const uint8_t *kc = blk + row0 * KCB + q * KCH;
  load_chunk<KCH>(kc + (size_t)r0 * KCB, t.k[0]);
  load_chunk<KCH>(kc + (size_t)(8 + r0) * KCB, t.k[1]);
  const uint8_t *vc = blk + a.off_vc + row0 * VCB + r0 * VCH;
  load_chunk<VCH>(vc + (size_t)(2 * q) * VCB, t.v[0]);
  load_chunk<VCH>(vc + (size_t)(2 * q + 1) * VCB, t.v[1]);
  load_chunk<VCH>(vc + (size_t)(8 + 2 * q) * VCB, t.v[2]);
  load_chunk<VCH>(vc + (size_t)(9 + 2 * q) * VCB, t.v[3]);
  const unsigned int *kn = (const unsigned int *)(blk + a.off_kn + row0 * 2);
  const unsigned int *vn = (const unsigned int *)(blk + a.off_vn + row0 * 2);
  t.kn[0] = __ldg(kn + q);
  t.kn[1] = __ldg(kn + 4 + q);
  t.vn[0] = __ldg(vn + q);
  t.vn[1] = __ldg(vn + 4 + q);
}

template <int D, int KB, int VB>
__global__ void __launch_bounds__(DEC_WARPS * 32, TQ_DEC_MIN_BLOCKS) decode_split_kernel(dec_args a) {
  constexpr int KS = D / 16;  /* k-steps of the score MMAs */
  constexpr int NTV = D / 8;  /* n-tiles of the value MMAs */
  constexpr int CPT = D / 4;  /* key coordinates per thread */
  constexpr int VCPT = D / 8; /* value coordinates per lane group */
  __shared__ uint32_t t2k[1 << (2 * KB)]; /* half2 (c[i & mask], c[i >> KB]) */
  __shared__ uint32_t t2v[1 << (2 * VB)];
  __shared__ float sm_m[DEC_WARPS][8], sm_l[DEC_WARPS][8];
  __shared__ float sm_o[DEC_WARPS][8][D];

  const uint32_t split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z;
  const uint32_t tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const uint32_t q = lane & 3;
  const int low = (lane >> 4) & 1;     /* rows 4..7 and 12..15 hold the low halves */
  const uint32_t ga = (lane >> 2) & 3; /* head of row r0; row r0 + 8 has head ga + 4 */
  const uint32_t G = a.c.G, Hq = a.H * G;
  const uint32_t T = a.c.lens[seq];
  const uint32_t lo = split * a.c.split_tokens;
  const uint32_t hi = min(T, lo + a.c.split_tokens);

  for (uint32_t i = tid; i < (1u << (2 * KB)); i += blockDim.x)
    t2k[i] = pack_half2(a.kcent[i & ((1u << KB) - 1)], a.kcent[i >> KB]);
  for (uint32_t i = tid; i < (1u << (2 * VB)); i += blockDim.x)
    t2v[i] = pack_half2(a.vcent[i & ((1u << VB) - 1)], a.vcent[i >> VB]);

  /* Query fragments (A operand, 16 x 16 per k-step): row r holds head
   * (r & 3) + 4 (r >> 3), high half if (r >> 2) & 1 is 0, else low half;
   * column c of k-step s is coordinate CPT (c % 8 / 2) + 4 s + 2 (c / 8) + c % 2. */
  uint32_t qa[KS][4];
  {
    const float *qb = a.c.qrot + ((size_t)seq * Hq + (size_t)h * G) * D;
#pragma unroll
    for (int s = 0; s < KS; s++) {
#pragma unroll
      for (int r = 0; r < 4; r++) {
        uint32_t g = ga + ((r & 1) ? 4 : 0);
        int part = r >> 1;
        int coord = CPT * q + 4 * s + 2 * part;
        float x0 = 0.0f, x1 = 0.0f;
        if (g < G) {
          x0 = split_part(qb[(size_t)g * D + coord], low);
          x1 = split_part(qb[(size_t)g * D + coord + 1], low);
        }
        qa[s][r] = pack_half2(x0, x1);
      }
    }
  }
  __syncthreads();

  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
  float o[NTV][4];
#pragma unroll
  for (int v = 0; v < NTV; v++) o[v][0] = o[v][1] = o[v][2] = o[v][3] = 0.0f;

  const uint8_t *const *table = a.c.table + (size_t)seq * a.c.max_blocks;
  const uint32_t B = a.B;
  const uint32_t step = DEC_WARPS * TILE;
  uint32_t t0 = lo + warp * TILE;
  tile_regs<D, KB, VB> cur, nxt;
  if (t0 < hi) load_tile<D, KB, VB>(cur, table[t0 / B], h, B, t0 % B, a, lane);
  for (; t0 < hi; t0 += step) {
    uint32_t t1 = t0 + step;
    if (t1 < hi) load_tile<D, KB, VB>(nxt, table[t1 / B], h, B, t1 % B, a, lane);

    /* Scores: sc[nt][e], rows r0 (e < 2) and r0 + 8, token nt*8 + 2q + e%2. */
    float sc[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
      for (int s = 0; s < KS; s++) {
        uint32_t b0 = t2k[bits_at(cur.k[nt], (4 * s) * KB, 2 * KB)];
        uint32_t b1 = t2k[bits_at(cur.k[nt], (4 * s + 2) * KB, 2 * KB)];
        mma_16816(sc[nt], qa[s], b0, b1);
      }
    }
    /* High + low halves (lanes 16 apart), norms, mask. */
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      float2 kn2 = __half22float2(*(const __half2 *)&cur.kn[nt]);
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float s = sc[nt][e] + __shfl_xor_sync(0xffffffffu, sc[nt][e], 16);
        uint32_t tok = t0 + nt * 8 + 2 * q + (e & 1);
        s = tok < hi ? s * ((e & 1) ? kn2.y : kn2.x) : -INFINITY;
        sc[nt][e] = s;
        if (e < 2) mx_a = fmaxf(mx_a, s);
        else mx_b = fmaxf(mx_b, s);
      }
    }
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
    float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
    /* mn is -inf only while every token so far was masked: nothing to scale. */
    float al_a = exp2_diff(m_a, mn_a), al_b = exp2_diff(m_b, mn_b);
    m_a = mn_a;
    m_b = mn_b;
    l_a *= al_a;
    l_b *= al_b;
#pragma unroll
    for (int v = 0; v < NTV; v++) {
      o[v][0] *= al_a, o[v][1] *= al_a;
      o[v][2] *= al_b, o[v][3] *= al_b;
    }
    /* Weights p = exp2(s - m); the MMA takes p * value norm in fp16 (rows of
     * the low halves get zeros: a weight's 2^-12 rounding averages out over
     * the tokens, unlike a score's, which the exponential amplifies). */
    float pw[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      float2 vn2 = __half22float2(*(const __half2 *)&cur.vn[nt]);
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float p = exp2_diff(sc[nt][e], e < 2 ? m_a : m_b);
        if (e < 2) l_a += p;
        else l_b += p;
        float vn = (e & 1) ? vn2.y : vn2.x;
        pw[nt][e] = p > 0.0f && !low ? p * vn : 0.0f;
      }
    }
    uint32_t pa[4];
    pa[0] = pack_half2(pw[0][0], pw[0][1]);
    pa[1] = pack_half2(pw[0][2], pw[0][3]);
    pa[2] = pack_half2(pw[1][0], pw[1][1]);
    pa[3] = pack_half2(pw[1][2], pw[1][3]);
    /* Values: B fragment rows are tokens (2q, 2q+1 | 8+2q, 9+2q), the column
     * is coordinate VCPT r0 + v. */
#pragma unroll
    for (int v = 0; v < NTV; v++) {
      uint32_t i0 = bits_at(cur.v[0], v * VB, VB) | (bits_at(cur.v[1], v * VB, VB) << VB);
      uint32_t i1 = bits_at(cur.v[2], v * VB, VB) | (bits_at(cur.v[3], v * VB, VB) << VB);
      mma_16816(o[v], pa, t2v[i0], t2v[i1]);
    }
    if (t1 < hi) cur = nxt;
  }

  /* Row sums over the four lanes of a row; high + low output halves. */
  l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
  l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
  l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
#pragma unroll
  for (int v = 0; v < NTV; v++)
#pragma unroll
    for (int e = 0; e < 4; e++) o[v][e] += __shfl_xor_sync(0xffffffffu, o[v][e], 16);
  if (!low) {
    if (q == 0) {
      sm_m[warp][ga] = m_a, sm_l[warp][ga] = l_a;
      sm_m[warp][ga + 4] = m_b, sm_l[warp][ga + 4] = l_b;
    }
#pragma unroll
    for (int v = 0; v < NTV; v++) {
#pragma unroll
      for (int e = 0; e < 2; e++) {
        int coord = VCPT * (2 * q + e) + v;
        sm_o[warp][ga][coord] = o[v][e];
        sm_o[warp][ga + 4][coord] = o[v][2 + e];
      }
    }
  }
  __syncthreads();

  /* Merge the warps; one partial per query head of this KV head. */
  const size_t S = a.c.n_splits;
  for (uint32_t i = tid; i < G * D; i += blockDim.x) {
    uint32_t g = i / D, j = i % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm_m[w][g]);
    float L = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) {
      float f = exp2_diff(sm_m[w][g], M);
      L += sm_l[w][g] * f;
      acc += sm_o[w][g][j] * f;
    }
    size_t at = ((size_t)seq * Hq + (size_t)h * G + g) * S + split;
    a.c.part_acc[at * D + j] = acc;
    if (j == 0) {
      a.c.part_ml[at * 2] = M;
      a.c.part_ml[at * 2 + 1] = L;
    }
  }
}

template <int D, int KB, int VB>
static tq_status launch_decode(tq_cuda_ctx *ctx, const dec_args &a, dim3 grid) {
  decode_split_kernel<D, KB, VB><<<grid, DEC_WARPS * 32, 0, ctx->stream>>>(a);
  return tq_cuda_check_launch(ctx);
}

template <int D, int KB>
static tq_status dispatch_vb(tq_cuda_ctx *ctx, const dec_args &a, dim3 grid, uint32_t vb) {
  switch (vb) {
    case 2: return launch_decode<D, KB, 2>(ctx, a, grid);
    case 3: return launch_decode<D, KB, 3>(ctx, a, grid);
    case 4: return launch_decode<D, KB, 4>(ctx, a, grid);
    default: return TQ_ERR_UNSUPPORTED;
  }
}

template <int D>
static tq_status dispatch_kb(tq_cuda_ctx *ctx, const dec_args &a, dim3 grid, uint32_t kb,
                             uint32_t vb) {
  switch (kb) {
    case 2: return dispatch_vb<D, 2>(ctx, a, grid, vb);
    case 3: return dispatch_vb<D, 3>(ctx, a, grid, vb);
    case 4: return dispatch_vb<D, 4>(ctx, a, grid, vb);
    default: return TQ_ERR_UNSUPPORTED;
  }
}

int tq_cuda_attention_supported(uint32_t d, uint32_t kbits, uint32_t vbits) {
  return (d == 64 || d == 128) && kbits >= 2 && kbits <= 4 && vbits >= 2 && vbits <= 4;
}

tq_status tq_cuda_decode_splits(tq_cuda_ctx *ctx, const tq_cuda_codec *kc,
                                const tq_cuda_codec *vc, const tq_block_layout *lay,
                                const tq_decode_call *call) {
  uint32_t d = kc->params.dim, kb = kc->params.bits, vb = vc->params.bits;
  if (!tq_cuda_attention_supported(d, kb, vb) || call->G < 1 || call->G > 8)
    return TQ_ERR_UNSUPPORTED;
  dec_args a;
  a.c = *call;
  a.B = lay->B;
  a.H = lay->H;
  a.off_vc = lay->off_vc;
  a.off_kn = lay->off_kn;
  a.off_vn = lay->off_vn;
  a.kcent = kc->d_centroids;
  a.vcent = vc->d_centroids;
  dim3 grid(call->n_splits, lay->H, call->n_seqs);
  if (d == 128) return dispatch_kb<128>(ctx, a, grid, kb, vb);
  return dispatch_kb<64>(ctx, a, grid, kb, vb);
}

/* ------------------------------------------------------------------------ */
/* Prefill: CUDA cores, one block per (query, query head)                   */
/* ------------------------------------------------------------------------ */

#define PRE_THREADS 128

typedef struct pre_args {
  const uint8_t *const *table;
  uint32_t B, H, G, d, kbits, vbits, kcb, vcb, T, n_q;
  size_t off_vc, off_kn, off_vn;
  const float *qrot, *kcent, *vcent;
  float *part_ml, *part_acc;
} pre_args;

__device__ __forceinline__ uint32_t code_at(const uint8_t *row, uint32_t j, uint32_t bits) {
  uint32_t bit = j * bits;
  uint32_t w = row[bit / 8];
  if ((bit % 8) + bits > 8) w |= (uint32_t)row[bit / 8 + 1] << 8;
  return (w >> (bit % 8)) & ((1u << bits) - 1u);
}

/* grid (Hq, n_q), block PRE_THREADS; dynamic shared: qrot (d) + acc (d). */
__global__ void __launch_bounds__(PRE_THREADS) prefill_kernel(pre_args a) {
  extern __shared__ float sm[];
  float *qs = sm, *acc = sm + a.d;
  __shared__ float p_s[PRE_THREADS];
  __shared__ float red[PRE_THREADS / 32];
  __shared__ float kc_s[16], vc_s[16];
  const uint32_t qh = blockIdx.x, i = blockIdx.y, tid = threadIdx.x;
  const uint32_t Hq = gridDim.x, h = qh / a.G, d = a.d;
  const uint32_t pos = a.T - a.n_q + i; /* sees tokens 0..pos */
  for (uint32_t j = tid; j < d; j += blockDim.x) {
    qs[j] = a.qrot[((size_t)i * Hq + qh) * d + j];
    acc[j] = 0.0f;
  }
  if (tid < (1u << a.kbits)) kc_s[tid] = a.kcent[tid];
  if (tid < (1u << a.vbits)) vc_s[tid] = a.vcent[tid];
  __syncthreads();
  float m = -INFINITY, l = 0.0f;
  for (uint32_t c0 = 0; c0 <= pos; c0 += PRE_THREADS) {
    uint32_t t = c0 + tid;
    float s = -INFINITY;
    const uint8_t *blk = NULL;
    uint32_t slot = 0;
    if (t <= pos) {
      blk = a.table[t / a.B];
      slot = t % a.B;
      const uint8_t *row = blk + ((size_t)h * a.B + slot) * a.kcb;
      float dot = 0.0f;
      for (uint32_t j = 0; j < d; j++) dot += qs[j] * kc_s[code_at(row, j, a.kbits)];
      uint16_t kn = *(const uint16_t *)(blk + a.off_kn + ((size_t)h * a.B + slot) * 2);
      s = dot * __half2float(__ushort_as_half(kn));
    }
    /* Block max of the chunk. */
    float mx = s;
    for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((tid & 31) == 0) red[tid >> 5] = mx;
    __syncthreads();
    mx = red[0];
    for (int w = 1; w < PRE_THREADS / 32; w++) mx = fmaxf(mx, red[w]);
    __syncthreads();
    float mn = fmaxf(m, mx);
    float al = exp2_diff(m, mn);
    float p = exp2_diff(s, mn);
    float vn = 0.0f;
    if (t <= pos) {
      uint16_t v = *(const uint16_t *)(blk + a.off_vn + ((size_t)h * a.B + slot) * 2);
      vn = __half2float(__ushort_as_half(v));
    }
    p_s[tid] = p * vn;
    /* Chunk sum of p. */
    float ps = p;
    for (int o = 16; o; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
    if ((tid & 31) == 0) red[tid >> 5] = ps;
    __syncthreads();
    float sum = 0.0f;
    for (int w = 0; w < PRE_THREADS / 32; w++) sum += red[w];
    l = l * al + sum;
    m = mn;
    uint32_t n = pos + 1 - c0 < PRE_THREADS ? pos + 1 - c0 : PRE_THREADS;
    for (uint32_t j = tid; j < d; j += blockDim.x) {
      float x = acc[j] * al;
      for (uint32_t tt = 0; tt < n; tt++) {
        uint32_t tok = c0 + tt;
        const uint8_t *vrow = a.table[tok / a.B] + a.off_vc + ((size_t)h * a.B + tok % a.B) * a.vcb;
        x += p_s[tt] * vc_s[code_at(vrow, j, a.vbits)];
      }
      acc[j] = x;
    }
    __syncthreads();
  }
  size_t at = (size_t)i * Hq + qh;
  for (uint32_t j = tid; j < d; j += blockDim.x) a.part_acc[at * d + j] = acc[j];
  if (tid == 0) {
    a.part_ml[at * 2] = m;
    a.part_ml[at * 2 + 1] = l;
  }
}

tq_status tq_cuda_prefill_partials(tq_cuda_ctx *ctx, const tq_cuda_codec *kc,
                                   const tq_cuda_codec *vc, const tq_block_layout *lay,
                                   const uint8_t *const *table, uint32_t T, uint32_t n_q,
                                   uint32_t n_q_heads, const float *qrot, float *part_ml,
                                   float *part_acc) {
  uint32_t d = kc->params.dim;
  if (!tq_cuda_attention_supported(d, kc->params.bits, vc->params.bits)) return TQ_ERR_UNSUPPORTED;
  pre_args a;
  a.table = table;
  a.B = lay->B;
  a.H = lay->H;
  a.G = n_q_heads / lay->H;
  a.d = d;
  a.kbits = kc->params.bits;
  a.vbits = vc->params.bits;
  a.kcb = lay->kcb;
  a.vcb = lay->vcb;
  a.T = T;
  a.n_q = n_q;
  a.off_vc = lay->off_vc;
  a.off_kn = lay->off_kn;
  a.off_vn = lay->off_vn;
  a.qrot = qrot;
  a.kcent = kc->d_centroids;
  a.vcent = vc->d_centroids;
  a.part_ml = part_ml;
  a.part_acc = part_acc;
  dim3 grid(n_q_heads, n_q);
  prefill_kernel<<<grid, PRE_THREADS, 2 * d * sizeof(float), ctx->stream>>>(a);
  return tq_cuda_check_launch(ctx);
}

/* ------------------------------------------------------------------------ */
/* 3. Reduce and rotate back                                                 */
/* ------------------------------------------------------------------------ */

/* grid (Hq, rows), block d threads. */
__global__ void reduce_kernel(const float *part_ml, const float *part_acc, uint32_t S,
                              const float *p, uint32_t d, float *out) {
  extern __shared__ float y[];
  const size_t row = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
  const uint32_t j = threadIdx.x;
  const float *ml = part_ml + row * S * 2;
  float M = -INFINITY;
  for (uint32_t s = 0; s < S; s++)
    if (ml[2 * s + 1] > 0.0f) M = fmaxf(M, ml[2 * s]);
  float L = 0.0f, acc = 0.0f;
  for (uint32_t s = 0; s < S; s++) {
    float l = ml[2 * s + 1];
    if (!(l > 0.0f)) continue;
    float f = exp2f(ml[2 * s] - M);
    L += l * f;
    acc += part_acc[(row * S + s) * d + j] * f;
  }
  y[j] = L > 0.0f ? acc / L : 0.0f;
  __syncthreads();
  /* x = P^T y: x_j = sum_k P[k][j] y_k, p row-major P. */
  float x = 0.0f;
  for (uint32_t k = 0; k < d; k++) x += p[(size_t)k * d + j] * y[k];
  out[row * d + j] = x;
}

tq_status tq_cuda_reduce(tq_cuda_ctx *ctx, const tq_cuda_codec *vc, uint32_t rows,
                         uint32_t n_q_heads, uint32_t n_splits, const float *part_ml,
                         const float *part_acc, float *out) {
  uint32_t d = vc->params.dim;
  dim3 grid(n_q_heads, rows);
  reduce_kernel<<<grid, d, d * sizeof(float), ctx->stream>>>(part_ml, part_acc, n_splits,
                                                             vc->d_p, d, out);
  return tq_cuda_check_launch(ctx);
}

/* ------------------------------------------------------------------------ */
/* Record copies between CPU-layout records and cache blocks                 */
/* ------------------------------------------------------------------------ */

/* grid (n * H), block 64: one token's key and value record per block. */
__global__ void copy_records_kernel(tq_block_layout lay, uint8_t *const *table, uint32_t first,
                                    uint8_t *krec, uint8_t *vrec, int to_cache) {
  const uint32_t r = blockIdx.x, h = r % lay.H, tok = first + r / lay.H;
  uint8_t *blk = table[tok / lay.B];
  const size_t row = (size_t)h * lay.B + tok % lay.B;
  uint8_t *kr = krec + (size_t)r * (2 + lay.kcb), *vr = vrec + (size_t)r * (2 + lay.vcb);
  uint8_t *kc = blk + row * lay.kcb, *vcd = blk + lay.off_vc + row * lay.vcb;
  uint8_t *kn = blk + lay.off_kn + row * 2, *vn = blk + lay.off_vn + row * 2;
  for (uint32_t i = threadIdx.x; i < 2 + lay.kcb; i += blockDim.x) {
    uint8_t *c = i < 2 ? kn + i : kc + (i - 2);
    if (to_cache) *c = kr[i];
    else kr[i] = *c;
  }
  for (uint32_t i = threadIdx.x; i < 2 + lay.vcb; i += blockDim.x) {
    uint8_t *c = i < 2 ? vn + i : vcd + (i - 2);
    if (to_cache) *c = vr[i];
    else vr[i] = *c;
  }
}

tq_status tq_cuda_copy_records(tq_cuda_ctx *ctx, const tq_block_layout *lay,
                               uint8_t *const *table, uint32_t first, uint32_t n, uint8_t *krec,
                               uint8_t *vrec, int to_cache) {
  size_t blocks = (size_t)n * lay->H;
  if (blocks == 0) return TQ_OK;
  if (blocks > 0x7fffffffu) return TQ_ERR_INVALID_ARGUMENT;
  copy_records_kernel<<<(unsigned)blocks, 64, 0, ctx->stream>>>(*lay, table, first, krec, vrec,
                                                                to_cache);
  return tq_cuda_check_launch(ctx);
}
