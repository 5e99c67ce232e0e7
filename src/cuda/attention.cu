/*
 * attention.cu - attention on packed TurboQuant codes in the device cache.
 *
 * Decode (one query per sequence) is one kernel per call. decode_kernel,
 * grid (split, KV head, sequence): each block rotates its group's queries,
 * walks its token range with tensor-core MMAs on codes decoded through
 * shared tables of centroid pairs, rotates its result back and writes one
 * partial per split; the last block of each (sequence, KV head) to finish
 * merges the splits (docs/CUDA.md has the details).
 *
 * Prefill uses a plain CUDA-core kernel (one block per query and head)
 * between rotate_queries and reduce, which write and read partials in the
 * same layout as the decode kernel's splits. It is meant for correctness.
 */
#include <cuda_fp16.h>
#include <math.h>
#include <string.h>

#include "cuda_internal.h"

#define LOG2E 1.4426950408889634f
/* Warps of a decode block: one block per SM, 16 warps in flight. */
#define DEC_WARPS 16
#define DEC_THREADS (DEC_WARPS * 32)
#define TILE 16
/* Accumulator sets of the score MMAs (independent chains per tile). */
#define SCORE_SETS 4

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

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


/* 2^x by the hardware's approximation (2 ulp), results below 2^-126
 * flushed to 0: one instruction, where exp2f adds a range fix-up for
 * subnormal results. The softmax weights it computes are at most 1, and a
 * weight below 2^-126 of the largest changes no sum. */
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/* Guarded exp2(a - b) for the online softmax: 0 when a is -inf (also when
 * b is: a - b would be NaN). */
__device__ __forceinline__ float exp2_diff(float a, float b) {
  return a == -INFINITY ? 0.0f : ex2_ftz(a - b);
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
/* 2. Decode: one fused kernel per call                                      */
/* ------------------------------------------------------------------------ */

/* Lookup tables of centroid pairs are stored once per shared-memory bank,
 * keys and values interleaved: key entry e of lane l is the word at byte
 * 256 e + 4 l, value entry e at byte 256 e + 128 + 4 l. A warp's 32 lookups
 * never share a bank whatever the codes are, and a lookup's byte offset is
 * (index << 8) | lane offset: for a byte-aligned 8-bit index (4-bit keys)
 * one byte permute, otherwise a shift and a masked or. */
#define TAB_STRIDE 256 /* bytes per entry: 32 key copies, 32 value copies */
/* 2-bit values use the value half of each entry differently: entry e (a
 * byte of four codes: two coordinates of two tokens) holds their four fp16
 * centroids as 8 bytes, 16 copies: lane l reads bytes 256 e + 128 +
 * 8 (l % 16). A 64-bit load is served per half-warp, so the 16 lanes of
 * each half read 16 different bank pairs: one load brings two A-fragment
 * registers, where a pair table needs two loads. */

typedef struct dec_args {
  tq_decode_call c;
  uint32_t B, H;
  uint32_t step_blocks, step_rem;  /* DEC_WARPS * TILE tokens = step_blocks blocks + step_rem */
  uint32_t off_vc, off_kn, off_vn; /* within a block (blocks are < 4 GiB) */
  float kc[16], vc[16];       /* the 2^kbits and 2^vbits centroids (bits <= 4), times the
                                 codecs' table_scale: the fp16 tables hold them closer */
  float inv_vscale;           /* 1 / the value codec's table_scale */
  const float *pt_k;          /* (D, D): pt_k[j D + i] = P_k[i][j] */
  const float *p_v;           /* (D, D): p_v[k D + i] = P_v[k][i] */
} dec_args;

/* Dynamic shared memory of the kernel: the warps' tile stages; the two
 * rotations' partial sums; and memory reused by the phases: the two pair
 * tables, then the warps' output accumulators. The partial sums have their
 * own room so that the tables can be built while the query rotation's loads
 * are in flight. */
/* Tiles of one warp in shared memory: this one and the next, in flight
 * while this one is computed (three stages, two in flight, measured 1-3%
 * slower: docs/CUDA.md, v11). */
#define DEC_STAGES 2

/* Bytes of one staged tile: key codes, value codes, 16 key norms, 16 value
 * norms, each a contiguous run in the cache block. */
static __host__ __device__ constexpr size_t dec_tile_bytes(uint32_t D, uint32_t kb, uint32_t vb) {
  return (size_t)16 * D * kb / 8 + (size_t)16 * D * vb / 8 + 64;
}

static size_t dec_stage_bytes(uint32_t D, uint32_t kb, uint32_t vb) {
  return (size_t)DEC_WARPS * DEC_STAGES * dec_tile_bytes(D, kb, vb);
}

/* Bytes of the rotations' partial sums, (DEC_THREADS / D, 8, D) floats. */
static __host__ __device__ constexpr size_t dec_rot_bytes(uint32_t D) {
  return (size_t)(DEC_THREADS / D) * 8 * D * 4;
}

/* Entries of the lookup tables: pairs of either side's centroids, and for
 * 2-bit values their 256-entry four-centroid table. */
static __host__ __device__ constexpr uint32_t dec_tab_entries(uint32_t kb, uint32_t vb) {
  return 1u << (2 * (vb == 2 ? 4u : kb > vb ? kb : vb));
}

static size_t dec_dyn_smem(uint32_t D, uint32_t kb, uint32_t vb, uint32_t G) {
  size_t tab = (size_t)dec_tab_entries(kb, vb) * TAB_STRIDE;
  size_t mrg = (size_t)DEC_WARPS * G * (D + D / 32) * 4;
  return dec_stage_bytes(D, kb, vb) + dec_rot_bytes(D) + (tab > mrg ? tab : mrg);
}

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
  uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Starts the copy of one tile (16 tokens from slot0 of block blk, KV head h)
 * into a warp's stage; every lane takes every 32nd 16-byte piece. */
template <int D, int KB, int VB>
__device__ __forceinline__ void stage_tile(uint8_t *stg, const uint8_t *blk, uint32_t h,
                                           uint32_t B, uint32_t slot0, const dec_args &a,
                                           uint32_t lane) {
  constexpr int KT = 16 * D * KB / 8, VT = 16 * D * VB / 8;
  /* Offsets within the block in 32 bits (a block is smaller than 4 GiB):
   * one 64-bit addition per address. */
  const uint32_t row0 = h * B + slot0;
  const uint8_t *k = blk + row0 * (uint32_t)(D * KB / 8);
  const uint8_t *v = blk + (a.off_vc + row0 * (uint32_t)(D * VB / 8));
#pragma unroll
  for (int c = (int)lane; c < KT / 16; c += 32) cp_async16(stg + 16 * c, k + 16 * c);
#pragma unroll
  for (int c = (int)lane; c < VT / 16; c += 32) cp_async16(stg + KT + 16 * c, v + 16 * c);
  if (lane < 4) {
    const uint8_t *n = blk + ((lane < 2 ? a.off_kn : a.off_vn) + row0 * 2 + 16 * (lane & 1));
    cp_async16(stg + KT + VT + 16 * lane, n);
  }
}

/* One load of a T from p: from global memory as a streaming load (read
 * once per call: evict first), or from shared memory. */
template <typename T, bool GLOBAL>
__device__ __forceinline__ T ld_word(const T *p) {
  if constexpr (GLOBAL) return __ldcs(p);
  else return *p;
}

/* Loads CH bytes (a run of code bytes, aligned to its largest power-of-two
 * divisor up to 16) into 32-bit words, little-endian; unused high bytes 0.
 * From global memory only whole words, so that no register is assembled
 * from parts (that would wait for the loads where they are issued). */
template <int CH, bool GLOBAL>
__device__ __forceinline__ void load_chunk(const uint8_t *p, uint32_t *w) {
  static_assert(!GLOBAL || CH % 4 == 0, "whole words from global memory");
  if constexpr (CH % 16 == 0) {
#pragma unroll
    for (int i = 0; i < CH / 16; i++) {
      uint4 x = ld_word<uint4, GLOBAL>((const uint4 *)p + i);
      w[4 * i] = x.x, w[4 * i + 1] = x.y, w[4 * i + 2] = x.z, w[4 * i + 3] = x.w;
    }
  } else if constexpr (CH % 8 == 0) {
#pragma unroll
    for (int i = 0; i < CH / 8; i++) {
      uint2 x = ld_word<uint2, GLOBAL>((const uint2 *)p + i);
      w[2 * i] = x.x, w[2 * i + 1] = x.y;
    }
  } else if constexpr (CH % 4 == 0) {
#pragma unroll
    for (int i = 0; i < CH / 4; i++) w[i] = ld_word<unsigned int, GLOBAL>((const unsigned int *)p + i);
  } else if constexpr (CH % 2 == 0) {
#pragma unroll
    for (int i = 0; i < (CH + 3) / 4; i++) w[i] = 0;
#pragma unroll
    for (int i = 0; i < CH / 2; i++)
      w[i / 2] |= (uint32_t)((const unsigned short *)p)[i] << (16 * (i % 2));
  } else {
#pragma unroll
    for (int i = 0; i < (CH + 3) / 4; i++) w[i] = 0;
#pragma unroll
    for (int i = 0; i < CH; i++) w[i / 4] |= (uint32_t)p[i] << (8 * (i % 4));
  }
}

/* One tile (16 tokens) of one warp, as one lane holds it. Key operand (A of
 * the score MMA, rows = tokens): lane (r = lane / 4, j = lane % 4) owns
 * coordinates [j D/4, (j+1) D/4) of tokens r and r + 8, one contiguous run
 * of code bytes each. Value operand (A of the value MMA, rows =
 * coordinates, columns = k-slots): lane owns coordinates [r D/8, (r+1) D/8)
 * of k-slots 2j, 2j+1, 2j+8, 2j+9, which hold the tokens j, j+4, j+8, j+12
 * (v[0..3]): each of the four loads of a warp then reads one contiguous
 * 128-byte run for 2-bit codes and d = 128 (one line, no bank conflict),
 * where tokens 2j, 2j+1, ... took two lines (two-way conflicts in shared
 * memory). */
template <int D, int KB, int VB>
struct tile_regs {
  static constexpr int KCH = D * KB / 32; /* key bytes per lane and token */
  static constexpr int VCH = D * VB / 64; /* value bytes per lane and token */
  uint32_t k[2][(KCH + 3) / 4];
  uint32_t v[4][(VCH + 3) / 4];
  uint32_t n[4]; /* fp16 norms in the low halves: key r, key r + 8, value r, value r + 8 */
};

/* A lane's share of one tile, into registers: the tile's key codes (token
 * after token), value codes and 16 key and 16 value norms start at the byte
 * offsets ko, vo, kno, vno from base (32-bit offsets: one 64-bit addition
 * per address). */
template <int D, int KB, int VB, bool GLOBAL>
__device__ __forceinline__ void load_tile_at(tile_regs<D, KB, VB> &t, const uint8_t *base,
                                             uint32_t ko, uint32_t vo, uint32_t kno,
                                             uint32_t vno, uint32_t lane) {
  constexpr int KCB = D * KB / 8, VCB = D * VB / 8;
  constexpr int KCH = tile_regs<D, KB, VB>::KCH, VCH = tile_regs<D, KB, VB>::VCH;
  const uint32_t j = lane & 3, r = lane >> 2;
  const uint8_t *k = base + (ko + j * KCH + r * KCB);
  load_chunk<KCH, GLOBAL>(k, t.k[0]);
  load_chunk<KCH, GLOBAL>(k + 8 * KCB, t.k[1]);
  const uint8_t *v = base + (vo + r * VCH + j * VCB);
  load_chunk<VCH, GLOBAL>(v, t.v[0]);
  load_chunk<VCH, GLOBAL>(v + 4 * VCB, t.v[1]);
  load_chunk<VCH, GLOBAL>(v + 8 * VCB, t.v[2]);
  load_chunk<VCH, GLOBAL>(v + 12 * VCB, t.v[3]);
  const unsigned short *kn = (const unsigned short *)(base + (kno + 2 * r));
  const unsigned short *vn = (const unsigned short *)(base + (vno + 2 * r));
  t.n[0] = ld_word<unsigned short, GLOBAL>(kn), t.n[1] = ld_word<unsigned short, GLOBAL>(kn + 8);
  t.n[2] = ld_word<unsigned short, GLOBAL>(vn), t.n[3] = ld_word<unsigned short, GLOBAL>(vn + 8);
}

/* A lane's share of a staged tile (key codes, value codes, key norms, value
 * norms, as stage_tile copies them), into registers. */
template <int D, int KB, int VB>
__device__ __forceinline__ void load_tile(tile_regs<D, KB, VB> &t, const uint8_t *stg,
                                          uint32_t lane) {
  constexpr uint32_t KT = 16 * D * KB / 8, VT = 16 * D * VB / 8;
  load_tile_at<D, KB, VB, false>(t, stg, 0, KT, KT + VT, KT + VT + 32, lane);
}

/* The next tile of a warp's walk: step = step_blocks B + step_rem tokens,
 * step_rem < B, so at most one more block when the slot wraps. tp: the
 * tile's block-table entry, ns: its slot in the block. */
__device__ __forceinline__ void advance_tile(const uint8_t *const *&tp, uint32_t &ns,
                                             uint32_t step_blocks, uint32_t step_rem, uint32_t B) {
  ns += step_rem;
  const bool wrap = ns >= B;
  ns = wrap ? ns - B : ns;
  tp += step_blocks + (wrap ? 1u : 0u);
}

/* A lane's share of one tile (16 tokens from slot0 of block blk, KV head h),
 * as load_tile lays it out, loaded from the cache block straight into
 * registers: no copy to shared memory and no second read from there. The
 * loads stay in flight until the registers are first used (the next
 * tile's). */
template <int D, int KB, int VB>
__device__ __forceinline__ void load_tile_g(tile_regs<D, KB, VB> &t, const uint8_t *blk,
                                            uint32_t h, uint32_t B, uint32_t slot0,
                                            const dec_args &a, uint32_t lane) {
  const uint32_t row0 = h * B + slot0;
  load_tile_at<D, KB, VB, true>(t, blk, row0 * (uint32_t)(D * KB / 8),
                                a.off_vc + row0 * (uint32_t)(D * VB / 8), a.off_kn + row0 * 2,
                                a.off_vn + row0 * 2, lane);
}

/* *p += v at device scope with acquire and release semantics; returns the
 * old value. */
__device__ __forceinline__ uint32_t atomic_add_acq_rel(uint32_t *p, uint32_t v) {
  uint32_t old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

/* Pairs of blocks (a cluster of two, with an even number of splits). A
 * block sends data into its peer's shared memory with st.async, whose bytes
 * count against a transaction count of the peer's mbarrier; the peer waits
 * on that barrier (acquire at cluster scope). No memory fence on the
 * sending side: a release (barrier.cluster.arrive.release) is a full
 * MEMBAR.GPU on sm_90, which waits for the block's loads in flight (the
 * first tiles, the P_v columns): 0.5-1.5 us a call on the H200
 * (docs/CUDA.md, v24). The cluster barrier is used relaxed only: once at
 * the start (the peer runs and its mbarriers are initialized before
 * anything is sent to it) and once at the end (neither block exits while
 * its peer may still be sending to it). */
__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
}

__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait;" ::: "memory");
}

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

/* The peer's address (shared::cluster) of this block's shared object p. */
__device__ __forceinline__ uint32_t peer_addr(const void *p, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem_addr(p)), "r"(rank));
  return r;
}

/* An mbarrier of this block for one phase: count 1, armed by this thread
 * for `bytes` of st.async transactions; the fence makes the initialization
 * visible to the cluster (before the start's barrier). */
__device__ __forceinline__ void mbar_arm(uint64_t *b, uint32_t bytes) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(b)) : "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(b)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/* Waits until phase 0 of this block's mbarrier b is complete: every byte
 * the peer sent against it has arrived and is visible. */
__device__ __forceinline__ void mbar_wait0(uint64_t *b) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{\n .reg .pred p;\n"
        " mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], 0;\n"
        " selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_addr(b))
        : "memory");
}

/* v into the peer's shared memory at addr (shared::cluster), counted
 * against the peer's mbarrier at bar. */
__device__ __forceinline__ void st_async(uint32_t addr, float v, uint32_t bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];" ::"r"(addr),
               "r"(__float_as_uint(v)), "r"(bar)
               : "memory");
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  return __byte_perm(a, b, sel);
}

/* Byte offset in the pair table of the n-bit index at bit off of the word
 * array w: (index << 8) | lo, lo = the lane's offset (< 256). With off and n
 * constants after unrolling, one permute (8-bit index on a byte boundary)
 * or a shift and a masked or. */
__device__ __forceinline__ uint32_t tab_off(const uint32_t *w, int off, int n, uint32_t lo) {
  const int i = off >> 5, s = off & 31;
  if (n == 8 && s % 8 == 0) {
    /* byte 0 from lo, byte 1 = byte s / 8 of w, bytes 2 and 3 zero (byte 1
     * of lo). */
    return prmt(w[i], lo, 0x5504u | (uint32_t)(s / 8) << 4);
  }
  if (s + n <= 32) {
    const uint32_t m = ((1u << n) - 1u) << 8;
    const uint32_t x = s >= 8 ? w[i] >> (s - 8) : w[i] << (8 - s);
    return (x & m) | lo;
  }
  return (bits_at(w, off, n) << 8) | lo;
}

/* One tile of the decode loop for one warp: scores of its 16 tokens (from
 * t0; rows past hi are masked), the online softmax, the value MMAs. o, m, l
 * are the warp's running state; qf the query fragments. */
template <int D, int KB, int VB, int NG>
__device__ __forceinline__ void tile_step(const tile_regs<D, KB, VB> &cur, uint32_t t0,
                                          uint32_t hi, float (&o)[D / 16][4], float (&m)[NG],
                                          float (&l)[NG], const uint32_t (&qf)[NG][D / 16][2],
                                          const uint8_t *tab, uint32_t klo, uint32_t vlo,
                                          uint32_t j, uint32_t r, uint32_t G) {
  constexpr int KS = D / 16, NMT = D / 16;
#define TAB(o) (*(const uint32_t *)(tab + (o)))
  /* SCORE_SETS accumulator sets (k-step s into set s % SCORE_SETS):
   * independent chains of dependent MMAs, summed at the end. */
  float sacc[SCORE_SETS][NG][4];
#pragma unroll
  for (int c4 = 0; c4 < SCORE_SETS; c4++)
#pragma unroll
    for (int nt = 0; nt < NG; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) sacc[c4][nt][e] = 0.0f;
#pragma unroll
  for (int s = 0; s < KS; s++) {
    uint32_t ka[4];
    ka[0] = TAB(tab_off(cur.k[0], 4 * s * KB, 2 * KB, klo));
    ka[1] = TAB(tab_off(cur.k[1], 4 * s * KB, 2 * KB, klo));
    ka[2] = TAB(tab_off(cur.k[0], (4 * s + 2) * KB, 2 * KB, klo));
    ka[3] = TAB(tab_off(cur.k[1], (4 * s + 2) * KB, 2 * KB, klo));
#pragma unroll
    for (int nt = 0; nt < NG; nt++)
      mma_16816(sacc[s % SCORE_SETS][nt], ka, qf[nt][s][0], qf[nt][s][1]);
  }
  float sc[NG][4];
#pragma unroll
  for (int nt = 0; nt < NG; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      float x = sacc[0][nt][e];
#pragma unroll
      for (int c4 = 1; c4 < SCORE_SETS; c4++) x += sacc[c4][nt][e];
      sc[nt][e] = x;
    }

  const float2 kn = make_float2(__half2float(__ushort_as_half((unsigned short)cur.n[0])),
                                __half2float(__ushort_as_half((unsigned short)cur.n[1])));
  const float2 vn = make_float2(__half2float(__ushort_as_half((unsigned short)cur.n[2])),
                                __half2float(__ushort_as_half((unsigned short)cur.n[3])));
  const bool ok0 = t0 + r < hi, ok1 = t0 + r + 8 < hi;
  uint32_t pk[NG];
  float sv0[NG], sv1[NG];
  bool keep = true;
#pragma unroll
  for (int nt = 0; nt < NG; nt++) {
    sv0[nt] = ok0 ? (sc[nt][0] + sc[nt][1]) * kn.x : -INFINITY;
    sv1[nt] = ok1 ? (sc[nt][2] + sc[nt][3]) * kn.y : -INFINITY;
    keep = keep && sv0[nt] <= m[nt] && sv1[nt] <= m[nt];
  }
  if (__all_sync(0xffffffffu, keep)) {
    /* No score above its head's running maximum (the usual case after the
     * first tiles): the maxima stay, the factor is 1 (the other branch
     * would compute exactly these values), no reduction, no rescale. */
#pragma unroll
    for (int nt = 0; nt < NG; nt++) {
      const float p0 = exp2_diff(sv0[nt], m[nt]), p1 = exp2_diff(sv1[nt], m[nt]);
      l[nt] += p0 + p1;
      pk[nt] = pack_half2(p0 > 0.0f ? p0 * vn.x : 0.0f, p1 > 0.0f ? p1 * vn.y : 0.0f);
    }
  } else {
    float al[NG];
#pragma unroll
    for (int nt = 0; nt < NG; nt++) {
      const float s0 = sv0[nt], s1 = sv1[nt];
      float mx = fmaxf(s0, s1);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
      float mn = fmaxf(m[nt], mx);
      al[nt] = exp2_diff(m[nt], mn);
      m[nt] = mn;
      float p0 = exp2_diff(s0, mn), p1 = exp2_diff(s1, mn);
      l[nt] = l[nt] * al[nt] + (p0 + p1);
      /* A weight's fp16 rounding (2^-12) averages out over the tokens. */
      pk[nt] = pack_half2(p0 > 0.0f ? p0 * vn.x : 0.0f, p1 > 0.0f ? p1 * vn.y : 0.0f);
    }

    /* Rescale O where a head's maximum moved. */
    const uint32_t sa = (2 * j) & 3, sb = (2 * j + 1) & 3;
    float aa = __shfl_sync(0xffffffffu, al[0], sa), ab = __shfl_sync(0xffffffffu, al[0], sb);
    if constexpr (NG == 2) {
      float a1 = __shfl_sync(0xffffffffu, al[1], sa), b1 = __shfl_sync(0xffffffffu, al[1], sb);
      if (j >= 2) aa = a1, ab = b1;
    }
    if (__any_sync(0xffffffffu, aa != 1.0f || ab != 1.0f)) {
#pragma unroll
      for (int mt = 0; mt < NMT; mt++) {
        o[mt][0] *= aa, o[mt][1] *= ab;
        o[mt][2] *= aa, o[mt][3] *= ab;
      }
    }
  }

  /* P^T B fragment: column r is head r; k-slots 2j, 2j+1, 2j+8, 2j+9 are
   * tokens j, j+4, j+8, j+12 (tile_regs), held by lanes 4j + r%4 (j and
   * j+8) and 16 + 4j + r%4 (j+4 and j+12). */
  uint32_t pb0, pb1;
  {
    const int s0 = 4 * j + (r & 3), s1 = s0 + 16;
    uint32_t x0 = __shfl_sync(0xffffffffu, pk[0], s0);
    uint32_t x1 = __shfl_sync(0xffffffffu, pk[0], s1);
    if constexpr (NG == 2) {
      uint32_t y0 = __shfl_sync(0xffffffffu, pk[1], s0);
      uint32_t y1 = __shfl_sync(0xffffffffu, pk[1], s1);
      if (r >= 4) x0 = y0, x1 = y1;
    }
    pb0 = r < G ? prmt(x0, x1, 0x5410) : 0u;
    pb1 = r < G ? prmt(x0, x1, 0x7632) : 0u;
  }

  /* Values: rows r (coordinate VCPT r + 2 mt) and r + 8 (the next one). */
  if constexpr (VB == 2) {
    /* Byte i of y: nibble 2i (y0, y2) or 2i + 1 (y1, y3) of k-slots 2j
     * (low) and 2j + 1 (high) for y0, y1, of k-slots 2j + 8 and 2j + 9 for
     * y2, y3: the codes of two tokens at two coordinates. */
    const uint32_t yy[4] = {
        (cur.v[0][0] & 0x0f0f0f0fu) | ((cur.v[1][0] << 4) & 0xf0f0f0f0u),
        ((cur.v[0][0] >> 4) & 0x0f0f0f0fu) | (cur.v[1][0] & 0xf0f0f0f0u),
        (cur.v[2][0] & 0x0f0f0f0fu) | ((cur.v[3][0] << 4) & 0xf0f0f0f0u),
        ((cur.v[2][0] >> 4) & 0x0f0f0f0fu) | (cur.v[3][0] & 0xf0f0f0f0u)};
#pragma unroll
    for (int mt = 0; mt < NMT; mt++) {
      /* Rows r and r + 8 (coordinates 2 mt and 2 mt + 1): byte mt / 2 of
       * y0 or y1 for the k-slots 2j, 2j + 1, of y2 or y3 for 2j + 8,
       * 2j + 9; one 64-bit load gives both rows' registers. */
      const uint32_t sel = 0x5504u | (uint32_t)(mt >> 1) << 4;
      const uint2 x0 = *(const uint2 *)(tab + prmt(yy[mt & 1], vlo, sel));
      const uint2 x1 = *(const uint2 *)(tab + prmt(yy[2 + (mt & 1)], vlo, sel));
      uint32_t va[4] = {x0.x, x0.y, x1.x, x1.y};
      mma_16816(o[mt], va, pb0, pb1);
    }
  } else {
    /* A pair index holds the codes of two tokens at one coordinate. */
#pragma unroll
    for (int mt = 0; mt < NMT; mt++) {
      uint32_t va[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = 2 * mt + (e & 1), p = (e >> 1) * 2;
        uint32_t i = bits_at(cur.v[p], c * VB, VB) | (bits_at(cur.v[p + 1], c * VB, VB) << VB);
        va[e] = TAB((i << 8) | vlo);
      }
      mma_16816(o[mt], va, pb0, pb1);
    }
  }
#undef TAB
}

/*
 * grid (n_splits, H, n_seqs), DEC_THREADS threads. Each block:
 *   1. rotates the G queries of its KV head (columns of P_k in registers,
 *      the parts summed in shared memory; in a pair each block half of the
 *      coordinates, sent to the other);
 *   2. walks its token range, each warp taking every DEC_WARPS-th tile of 16
 *      tokens (the next tile's loads in flight while this one computes):
 *        scores  S^T (16 tokens x 8) = Kc (16 x D) Q^T, the 8 columns being
 *                4 query heads x {high, low} fp16 halves of the rotated query
 *                (NG = 2 n-tiles for G > 4); a lane's c0 + c1 is then the
 *                score of one (token, head) with no shuffle;
 *        values  O^T (D x 8 heads) += Vc^T (D x 16 tokens) P^T, the weights
 *                p * value norm moved into the B fragment by two shuffles;
 *      online softmax per head in base 2;
 *   3. merges its warps in shared memory; with one split it rotates the
 *      result back and writes the output (decode_finish); in a pair the two
 *      blocks merge their results, each rotates half of the coordinates
 *      back, and with two splits that is the output, with more the pair
 *      writes one partial (m, l, acc) per head, each block counts itself
 *      in, and the last of its (sequence, KV head) merges the partials and
 *      writes the output (decode_finish_pair).
 */
/* One rotation part of the decode kernel's two matrix-vector products (the
 * query rotation and the inverse value rotation): this thread holds RP
 * consecutive rows [row0, row0 + RP) of one column of the matrix in pr, and
 * writes red[(part * 8 + g) * W + col] = sum over those rows of pr[u] *
 * x[g][row] for the G heads (G <= GM, the kernel's 4 NG); W is the number
 * of slots a part has (D, or D / 2 in a pair's inverse rotation), col this
 * thread's; the caller sums the parts. */
template <int D, int RP, int GM, int W>
__device__ __forceinline__ void rotation_part(const float *pr, const float (*x)[D], uint32_t row0,
                                              uint32_t part, uint32_t col, uint32_t G,
                                              float *red) {
  float acc[GM];
#pragma unroll
  for (int g = 0; g < GM; g++) acc[g] = 0.0f;
#pragma unroll
  for (int u = 0; u < RP; u += 4) {
#pragma unroll
    for (int g = 0; g < GM; g++)
      if (g < (int)G) {
        const float4 v = *(const float4 *)&x[g][row0 + u];
        acc[g] += pr[u] * v.x + pr[u + 1] * v.y + pr[u + 2] * v.z + pr[u + 3] * v.w;
      }
  }
#pragma unroll
  for (int g = 0; g < GM; g++)
    if (g < (int)G) red[(part * 8 + g) * W + col] = acc[g];
}

/* The sum over the NP rotation parts of red[(p * 8 + g) * W + c], in part
 * order. */
template <int W, int NP>
__device__ __forceinline__ float parts_sum(const float *red, uint32_t g, uint32_t c) {
  float s = 0.0f;
#pragma unroll
  for (int p = 0; p < NP; p++) s += red[(p * 8 + g) * W + c];
  return s;
}

/* The merge of S split partials of one (row, coordinate): (m, l) pairs at
 * ml, partial sums at pa, pa + stride, ...; returns sum_s acc_s 2^(m_s - M)
 * / sum_s l_s 2^(m_s - M) over the splits with l > 0 (M their largest m),
 * 0 when there are none. Reads through L2 (the partials come from other
 * blocks). */
__device__ __forceinline__ float merge_splits(const float2 *ml, const float *pa, uint32_t S,
                                              uint32_t stride) {
  float M = -INFINITY;
  for (uint32_t s = 0; s < S; s++) {
    const float2 x = __ldcg(ml + s);
    if (x.y > 0.0f) M = fmaxf(M, x.x);
  }
  float L = 0.0f, acc = 0.0f;
  for (uint32_t s = 0; s < S; s++) {
    const float2 x = __ldcg(ml + s);
    const float f = x.y > 0.0f ? exp2f(x.x - M) : 0.0f;
    L += x.y * f;
    acc += __ldcg(pa + (size_t)s * stride) * f;
  }
  return L > 0.0f ? acc / L : 0.0f;
}

/* The decode kernel's static shared memory, one object. Its alignment makes
 * its size a multiple of 128 bytes, so that the dynamic shared memory after
 * it (tile stages, tables) starts on a 128-byte boundary: shifted by 16
 * bytes, the tile loop ran 12% slower on the H200 (docs/CUDA.md, v19). */
/* Where coordinate c of a rotated query sits in its row of dec_shared::q:
 * 4 words of skew per lane's run of D / 4 coordinates, and rows D + 16 words
 * apart, so that the B-fragment loads of a warp (4 heads x 4 runs, each lane
 * 16 bytes) fall on different banks, two wavefronts a load. Unskewed, the 16
 * runs sat on the same four banks: 16 wavefronts a load, about 1 us at the
 * start of every block on the H200 (docs/CUDA.md, v24). */
template <int D>
__device__ __forceinline__ uint32_t qsk(uint32_t c) {
  return c + 4 * (c / (D / 4));
}

template <int D>
struct __align__(128) dec_shared {
  float x[8][D];                  /* scaled queries; at the end the merged result */
  float q[8][D + 16];             /* rotated queries, at qsk<D>(c) in their rows */
  float m[DEC_WARPS][8], l[DEC_WARPS][8]; /* the warps' softmax maxima and sums */
  float bm[8], bl[8];             /* the block's, read by its peer in a pair */
  float pm[8], pl[8];             /* the pair's */
  uint64_t qbar, tbar;            /* a pair's mbarriers: the rotated queries, the sums */
  uint32_t last;                  /* this block merges the splits */
};

/* The merge of the warps' results (sm_o, sh->m, sh->l) into sh->x: the
 * normalized result (norm) or the block's sum, with its softmax maximum
 * and sum per head in sh->bm, sh->bl, and the same sent to the peer's red
 * (prx, its address; pbar, the peer's mbarrier). */
template <int D>
__device__ __forceinline__ void merge_warps(dec_shared<D> *sh, const float *sm_o, uint32_t tid,
                                            uint32_t G, float inv_vscale, bool norm,
                                            uint32_t prx = 0, uint32_t pbar = 0) {
  constexpr int OS = D + D / 32;
  for (uint32_t i = tid; i < G * D; i += DEC_THREADS) {
    const uint32_t g = i / D, c = i % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sh->m[w][g]);
    float L = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) {
      const float f = exp2_diff(sh->m[w][g], M);
      L += sh->l[w][g] * f;
      acc += sm_o[(w * G + g) * OS + c + c / 32] * f;
    }
    if (norm) {
      sh->x[g][c] = L > 0.0f ? acc * inv_vscale / L : 0.0f;
    } else {
      /* Also sent to the peer's red: the sums at g D + c, then the G
       * maxima and the G softmax sums at 8 D. */
      sh->x[g][c] = acc * inv_vscale;
      st_async(prx + 4 * i, acc * inv_vscale, pbar);
      if (c == 0) {
        sh->bm[g] = M, sh->bl[g] = L;
        st_async(prx + 4 * (8 * D + g), M, pbar);
        st_async(prx + 4 * (8 * D + 8 + g), L, pbar);
      }
    }
  }
}

/* The end of a decode block with one split per (sequence, KV head), once
 * its warps' results are in shared memory: their merge is the result,
 * rotated back by P_v^T into out. base: the block's first query head row. */
template <int D, int GM>
__device__ __forceinline__ void decode_finish(dec_shared<D> *sh, const float *sm_o, float *red,
                                              uint32_t tid, uint32_t G, size_t base,
                                              const float *p_v, float *out, float inv_vscale) {
  constexpr int NP = DEC_THREADS / D;
  constexpr int RP = D / NP;
  float pr[RP];
  /* Columns of P_v into registers (thread (i, part), as the query
   * rotation's), issued first so that they arrive during the warps' merge. */
  {
    const uint32_t i = tid % D, part = tid / D;
#pragma unroll
    for (int u = 0; u < RP; u++) pr[u] = __ldg(p_v + (size_t)(part * RP + u) * D + i);
  }
  merge_warps<D>(sh, sm_o, tid, G, inv_vscale, true);
  __syncthreads();
  /* out_g = P_v^T y_g: x_i = sum_k P_v[k][i] y_k, each part's k range, then
   * the parts summed. */
  rotation_part<D, RP, GM, D>(pr, sh->x, (tid / D) * RP, tid / D, tid % D, G, red);
  __syncthreads();
  for (uint32_t i = tid; i < G * D; i += DEC_THREADS)
    out[(base + i / D) * D + i % D] = parts_sum<D, NP>(red, i / D, i % D);
}

/* The end of a decode block in a pair (two splits of one (sequence, KV
 * head), ranks 0 and 1 of a cluster), once its warps' results are in
 * shared memory: each block merges its warps, then the pair's two results
 * through distributed shared memory (each block all of them), and rotates
 * back by P_v^T the half of the coordinates its rank names (so each block
 * loads half of P_v). With S = 2 splits that is the output; otherwise the
 * pair writes it as partial split / 2 (each block its half), and the last
 * block of the (sequence, KV head) to finish merges the S / 2 partials
 * (the merge is linear in the sums, so the partials are rotated already).
 * cnt: the (sequence, KV head)'s count of finished blocks.
 *
 * No loop here may sit inside another: with the splits' merge written as a
 * loop over the splits inside a loop over (head, coordinate), ptxas gave the
 * tile loop 44 more instructions for G > 4 (recomputed addresses; docs/CUDA.md,
 * v19), so the outer loop is unrolled. */
template <int D, int GM>
__device__ __forceinline__ void decode_finish_pair(dec_shared<D> *sh, const float *sm_o,
                                                   float *red, uint32_t tid, uint32_t G,
                                                   size_t base, uint32_t split, uint32_t S,
                                                   uint32_t rank, uint32_t *cnt, float *part_ml,
                                                   float *part_acc, const float *p_v,
                                                   float *out, float inv_vscale) {
  constexpr int W = D / 2;
  constexpr int NP = DEC_THREADS / W;
  constexpr int RP = D / NP;
  float pr[RP];
  {
    const uint32_t i = tid % W, part = tid / W;
#pragma unroll
    for (int u = 0; u < RP; u++) pr[u] = __ldg(p_v + (size_t)(part * RP + u) * D + rank * W + i);
  }
  const uint32_t peer = rank ^ 1u;
  merge_warps<D>(sh, sm_o, tid, G, inv_vscale, false, peer_addr(red, peer),
                 peer_addr(&sh->tbar, peer));
  /* The pair's merge into sh->x (each thread its own elements), from this
   * block's sums and the peer's (in red once the barrier completes). */
  mbar_wait0(&sh->tbar);
  cluster_arrive_relaxed(); /* received: the peer may exit after its wait */
  __syncthreads();          /* sh->bm, sh->bl */
  for (uint32_t i = tid; i < G * D; i += DEC_THREADS) {
    const uint32_t g = i / D, c = i % D;
    const float mo = sh->bm[g], lo = sh->bl[g];
    const float mp = red[8 * D + g], lp = red[8 * D + 8 + g];
    const float M = fmaxf(mo, mp);
    const float fo = exp2_diff(mo, M), fp = exp2_diff(mp, M);
    sh->x[g][c] = sh->x[g][c] * fo + red[i] * fp;
    if (c == 0) sh->pm[g] = M, sh->pl[g] = lo * fo + lp * fp;
  }
  __syncthreads();
  rotation_part<D, RP, GM, W>(pr, sh->x, (tid / W) * RP, tid / W, tid % W, G, red);
  __syncthreads();
  cluster_wait(); /* the peer has what this block sent */
  if (S == 2) {
    for (uint32_t i = tid; i < G * W; i += DEC_THREADS) {
      const uint32_t g = i / W, c = i % W;
      const float L = sh->pl[g];
      const float v = parts_sum<W, NP>(red, g, c);
      out[(base + g) * D + rank * W + c] = L > 0.0f ? v / L : 0.0f;
    }
    return;
  }
  const uint32_t SP = S / 2, at0 = split / 2;
  for (uint32_t i = tid; i < G * W; i += DEC_THREADS) {
    const uint32_t g = i / W, c = i % W;
    part_acc[((base + g) * SP + at0) * D + rank * W + c] = parts_sum<W, NP>(red, g, c);
  }
  if (rank == 0 && tid < G) {
    const size_t at = (base + tid) * SP + at0;
    part_ml[at * 2] = sh->pm[tid];
    part_ml[at * 2 + 1] = sh->pl[tid];
  }
  /* Each block counts itself in once its part of the partial is written
   * (the barrier orders the block's stores before thread 0's release); the
   * one that brings the count to S (its acquire makes every partial
   * visible) reads them from L2, merges them into the output and resets the
   * count for the next call. */
  __syncthreads();
  if (tid == 0) {
    const uint32_t done = atomic_add_acq_rel(cnt, 1u) + 1u;
    if (done == S) *cnt = 0;
    sh->last = done == S;
  }
  __syncthreads();
  if (!sh->last) return;
  /* Each thread merges one (head, coordinate) over the partials on its
   * own; up to MERGE_PF in one round trip. Empty ones (l = 0) have m = -inf
   * and weigh 0. */
  constexpr int MERGE_PF = 16;
#pragma unroll
  for (int k = 0; k < (8 * D + DEC_THREADS - 1) / DEC_THREADS; k++) {
    const uint32_t i = tid + k * DEC_THREADS;
    if (i >= G * D) break;
    const uint32_t g = i / D, c = i % D;
    const float2 *ml = (const float2 *)(part_ml + (base + g) * SP * 2);
    const float *pa = part_acc + (base + g) * SP * D + c;
    float v;
    if (SP <= (uint32_t)MERGE_PF) {
      float M = -INFINITY, L = 0.0f, acc = 0.0f;
      float2 x[MERGE_PF];
      float z[MERGE_PF];
#pragma unroll
      for (int s = 0; s < MERGE_PF; s++) {
        x[s] = (uint32_t)s < SP ? __ldcg(ml + s) : make_float2(-INFINITY, 0.0f);
        z[s] = (uint32_t)s < SP ? __ldcg(pa + (size_t)s * D) : 0.0f;
      }
#pragma unroll
      for (int s = 0; s < MERGE_PF; s++)
        if (x[s].y > 0.0f) M = fmaxf(M, x[s].x);
#pragma unroll
      for (int s = 0; s < MERGE_PF; s++) {
        const float f = x[s].y > 0.0f ? exp2f(x[s].x - M) : 0.0f;
        L += x[s].y * f;
        acc += z[s] * f;
      }
      v = L > 0.0f ? acc / L : 0.0f;
    } else {
      v = merge_splits(ml, pa, SP, D);
    }
    out[(base + g) * D + c] = v;
  }
}

/* PAIR: launched in clusters of two (an even number of splits); the
 * instances with one split have none of the pairs' code. The PAIR instances
 * still test the number of splits at run time: with the flag a constant,
 * ptxas scheduled the set-up differently and batches 1 and 8 took 0.4-0.8
 * us longer on the H200 (docs/CUDA.md, v24). */
template <int D, int KB, int VB, int NG, bool PAIR>
__global__ void __launch_bounds__(DEC_THREADS, 1) decode_kernel(dec_args a) {
  constexpr int KS = D / 16;   /* k-steps of the score MMAs */
  constexpr int NMT = D / 16;  /* m-tiles of the value MMAs */
  constexpr int CPT = D / 4;   /* key coordinates per lane */
  constexpr int VCPT = D / 8;  /* value coordinates per lane group */
  constexpr int NP = DEC_THREADS / D;
  constexpr int KE = 1 << (2 * KB), VE = 1 << (2 * VB);
  constexpr int TB = (int)dec_tile_bytes(D, KB, VB);
  extern __shared__ __align__(128) uint32_t dyn_all[];
  /* dyn_all: the warps' tile stages (DEC_WARPS, DEC_STAGES, TB bytes), the
   * rotations' partial sums red, then dyn, the memory the phases share. */
  float *red = (float *)(dyn_all + DEC_WARPS * DEC_STAGES * TB / 4);
  uint32_t *dyn = dyn_all + DEC_WARPS * DEC_STAGES * TB / 4 + dec_rot_bytes(D) / 4;
  __shared__ dec_shared<D> sh;

  const uint32_t split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z;
  const uint32_t tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const uint32_t j = lane & 3, r = lane >> 2;
  const uint32_t G = a.c.G, H = a.H, Hq = H * G;
  const uint32_t lo = split * a.c.split_tokens;
  const uint8_t *const *table = a.c.table + (size_t)seq * a.c.max_blocks;
  const uint32_t B = a.B;
  /* The block pointers of the first tiles are loaded together with the
   * sequence's length, not after it (the index clamped to the table; a
   * tile past the end is not copied): two global round trips become one
   * at the start of the block. */
  const uint8_t *first[DEC_STAGES - 1];
#pragma unroll
  for (int i = 0; i < DEC_STAGES - 1; i++)
    first[i] = table[min((lo + warp * TILE + i * DEC_WARPS * TILE) / B, a.c.max_blocks - 1)];
  const uint32_t T = a.c.lens[seq];
  const uint32_t hi = min(T, lo + a.c.split_tokens);

  /* The set-up's loads first (the rotation's columns of pt_k and the
   * queries: all independent, all in flight together), then the tables,
   * then the copies of the first DEC_STAGES - 1 tiles (B is a multiple of
   * 64, so a tile never crosses a block). */
  constexpr int RP = D / NP; /* rows of a rotation part */
  constexpr int QW = (8 * D + DEC_THREADS - 1) / DEC_THREADS;
  /* In a pair each block computes half of the rotated queries' coordinates
   * (the W2 columns of P_k that its rank names, thread (i, part) half of
   * its part's rows of column rank W2 + i % W2: the first half for i < W2,
   * the second for i >= W2) and writes them into both blocks' memory. */
  constexpr int W2 = D / 2;
  const bool pair = PAIR && a.c.n_splits % 2 == 0;
  const uint32_t rank = pair ? cluster_rank() : 0u;
  /* The pair's mbarriers, armed for what the peer will send: half of the
   * rotated queries' rows, then its sums, maxima and softmax sums. */
  if (pair) {
    if (tid == 0) {
      mbar_arm(&sh.qbar, 8 * W2 * 4);
      mbar_arm(&sh.tbar, (a.c.G * D + 2 * a.c.G) * 4);
      mbar_fence_init();
    }
    cluster_arrive_relaxed();
  }
  float pr[RP], qv[QW];
  if (pair) {
    const uint32_t row0 = (tid / D) * RP + (tid % D) / W2 * (RP / 2);
#pragma unroll
    for (int u = 0; u < RP / 2; u++)
      pr[u] = __ldg(a.pt_k + (size_t)(row0 + u) * D + rank * W2 + tid % W2);
  } else {
#pragma unroll
    for (int u = 0; u < RP; u++) pr[u] = __ldg(a.pt_k + (size_t)((tid / D) * RP + u) * D + tid % D);
  }
  {
    const float *qb = a.c.q + ((size_t)seq * Hq + (size_t)h * G) * D;
#pragma unroll
    for (int k = 0; k < QW; k++) {
      const uint32_t x = tid + k * DEC_THREADS;
      qv[k] = x < G * D ? qb[x] : 0.0f;
    }
  }
  /* Pair tables: entry e = half2 (c[e & mask], c[e >> bits]), one copy per
   * bank (for 2-bit values the four-centroid entries, one copy per bank
   * pair), built from the kernel arguments while the loads above are in
   * flight, before the first copies (which wait for their block pointers)
   * and with no barrier of their own (the rotation's first barrier comes
   * before any lookup). Thread u < 2 NE makes the copies of one half-entry
   * (key half u even, value half u odd): one value, eight 16-byte stores,
   * the k-th to 16-byte piece (k + u) % 8 so that the eight threads of a
   * store phase hit different banks. */
  constexpr int NE = (int)dec_tab_entries(KB, VB);
  for (uint32_t u = tid; u < 2u * NE; u += DEC_THREADS) {
    const uint32_t e = u >> 1;
    uint32_t x = 0;
    if (!(u & 1u) && e < (uint32_t)KE) x = pack_half2(a.kc[e & ((1u << KB) - 1)], a.kc[e >> KB]);
    uint32_t y = x;
    if (VB == 2 && (u & 1u)) {
      /* Byte e: codes of coordinates c (bits 0-1) and c + 1 (2-3) of one
       * token, then the same of the next (4-5, 6-7); the low word is
       * coordinate c of both tokens, the high word c + 1. */
      x = pack_half2(a.vc[e & 3u], a.vc[(e >> 4) & 3u]);
      y = pack_half2(a.vc[(e >> 2) & 3u], a.vc[e >> 6]);
    } else if ((u & 1u) && e < (uint32_t)VE) {
      x = y = pack_half2(a.vc[e & ((1u << VB) - 1)], a.vc[e >> VB]);
    }
    uint4 *row = (uint4 *)((uint8_t *)dyn + (size_t)e * TAB_STRIDE + (u & 1u) * (TAB_STRIDE / 2));
    const uint4 v4 = make_uint4(x, y, x, y);
#pragma unroll
    for (int k = 0; k < 8; k++) row[(k + u) % 8] = v4;
  }
  const uint32_t step = DEC_WARPS * TILE;
  uint8_t *stg = (uint8_t *)dyn_all + (size_t)warp * DEC_STAGES * TB;
  uint32_t t0 = lo + warp * TILE;
  /* Tiles straight from the cache into registers (two register sets, one
   * tile ahead) where a lane's runs are whole words and the loop's
   * registers leave room (G <= 4); otherwise through the warp's stages in
   * shared memory. The direct instances keep the stages' memory unused:
   * without it (the tables 34-43 KiB lower) batch 1 at 4k was 5% slower on
   * the H200 (docs/CUDA.md, v23). */
  constexpr bool DIRECT = NG == 1 && (D * KB / 32) % 4 == 0 && (D * VB / 64) % 4 == 0;
  tile_regs<D, KB, VB> ta, tb;
  if constexpr (DIRECT) {
    if (t0 < hi) load_tile_g<D, KB, VB>(ta, first[0], h, B, t0 % B, a, lane);
  } else {
#pragma unroll
    for (int i = 0; i < DEC_STAGES - 1; i++) {
      uint32_t t = t0 + i * step;
      if (t < hi) stage_tile<D, KB, VB>(stg + i * TB, first[i], h, B, t % B, a, lane);
      cp_async_commit();
    }
  }

  const uint8_t *tab = (const uint8_t *)dyn;
  const uint32_t klo = 4 * lane, vlo = VB == 2 ? 128 + 8 * (lane & 15) : 128 + 4 * lane;
#define TAB(o) (*(const uint32_t *)(tab + (o)))

  /* 1. Rotation: sh.q[g] = P_k (q_g * scale) * log2(e). Thread (i, part)
   * holds column i of rows [part D/NP, (part + 1) D/NP) of pt_k in
   * registers (coalesced loads, all in flight with the queries'); the NP
   * parts are summed through shared memory. */
  {
    const uint32_t i = tid % D, part = tid / D;
#pragma unroll
    for (int k = 0; k < QW; k++) {
      const uint32_t x = tid + k * DEC_THREADS;
      if (x < G * D) sh.x[x / D][x % D] = qv[k] * a.c.scale;
    }
    __syncthreads();
    if (pair)
      rotation_part<D, RP / 2, 4 * NG, D>(pr, sh.x, part * RP + i / W2 * (RP / 2), part, i, G, red);
    else
      rotation_part<D, RP, 4 * NG, D>(pr, sh.x, part * RP, part, i, G, red);
    __syncthreads();
    if (pair) {
      cluster_wait(); /* the peer runs, its mbarriers armed */
      const uint32_t peer = rank ^ 1u, pq = peer_addr(&sh.q[0][0], peer);
      const uint32_t pbar = peer_addr(&sh.qbar, peer);
      /* Rows G..7 zero: the fragments below load every row. */
      for (uint32_t k = tid; k < 8 * W2; k += DEC_THREADS) {
        const uint32_t g = k / W2, c = rank * W2 + k % W2;
        const float v =
            k < G * W2 ? (parts_sum<D, NP>(red, g, k % W2) + parts_sum<D, NP>(red, g, k % W2 + W2)) * LOG2E
                       : 0.0f;
        const uint32_t at = g * (D + 16) + qsk<D>(c);
        (&sh.q[0][0])[at] = v;
        st_async(pq + 4 * at, v, pbar);
      }
      mbar_wait0(&sh.qbar);
      __syncthreads();
    } else {
      /* Rows G..7 zero: the fragments below load every row. */
      for (uint32_t k = tid; k < 8 * D; k += DEC_THREADS)
        sh.q[k / D][qsk<D>(k % D)] = k < G * D ? parts_sum<D, NP>(red, k / D, k % D) * LOG2E : 0.0f;
      __syncthreads();
    }
  }

  /* Query B fragments: column n = r of n-tile nt is head 4 nt + r / 2, its
   * high (r even) or low (r odd) fp16 half; k-slot 2j + e of k-step s is
   * coordinate CPT j + 4 s + e, slot 2j + 8 + e is CPT j + 4 s + 2 + e. */
  uint32_t qf[NG][KS][2];
#pragma unroll
  for (int nt = 0; nt < NG; nt++) {
    const uint32_t g = 4 * nt + (r >> 1);
    const int low = r & 1;
#pragma unroll
    for (int s = 0; s < KS; s++) {
#pragma unroll
      for (int b = 0; b < 2; b++) {
        /* No branch on g < G (rows G..7 are zero), so that the loads
         * are issued together. */
        /* qsk<D>(CPT j + 4 s + 2 b) */
        const float x0 = split_part(sh.q[g][(CPT + 4) * j + 4 * s + 2 * b], low);
        const float x1 = split_part(sh.q[g][(CPT + 4) * j + 4 * s + 2 * b + 1], low);
        qf[nt][s][b] = pack_half2(x0, x1);
      }
    }
  }

  /* 2. The token range. Per n-tile: running max and sum of the head
   * 4 nt + j (the sum is this lane's share). o[mt]: O^T rows VCPT r + 2 mt
   * (e < 2) and + 1 (e >= 2), heads 2j (e even) and 2j + 1 (e odd). */
  float m[NG], l[NG];
#pragma unroll
  for (int nt = 0; nt < NG; nt++) m[nt] = -INFINITY, l[nt] = 0.0f;
  float o[NMT][4];
#pragma unroll
  for (int mt = 0; mt < NMT; mt++) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
  /* Block (its table entry) and slot of the next tile to load (t0 +
   * (DEC_STAGES - 1) step; with DIRECT t0 + step), advanced by step each
   * tile: no division in the loop. The direct loop alternates the two
   * register sets: the next tile's loads go into the set that the last
   * tile used. */
  const uint8_t *const *tp = table + (t0 + (DEC_STAGES - 1) * step) / B;
  uint32_t ns = (t0 + (DEC_STAGES - 1) * step) % B;
  if constexpr (DIRECT) {
    for (;;) {
      if (t0 >= hi) break;
      if (t0 + step < hi) load_tile_g<D, KB, VB>(tb, *tp, h, B, ns, a, lane);
      advance_tile(tp, ns, a.step_blocks, a.step_rem, B);
      tile_step<D, KB, VB, NG>(ta, t0, hi, o, m, l, qf, tab, klo, vlo, j, r, G);
      t0 += step;
      if (t0 >= hi) break;
      if (t0 + step < hi) load_tile_g<D, KB, VB>(ta, *tp, h, B, ns, a, lane);
      advance_tile(tp, ns, a.step_blocks, a.step_rem, B);
      tile_step<D, KB, VB, NG>(tb, t0, hi, o, m, l, qf, tab, klo, vlo, j, r, G);
      t0 += step;
    }
  } else {
    for (uint32_t it = 0; t0 < hi; t0 += step, it++) {
      /* Copy tile it + DEC_STAGES - 1 into the stage that tile it - 1 used;
       * wait for tile it. */
      __syncwarp();
      const uint32_t t2 = t0 + (DEC_STAGES - 1) * step;
      if (t2 < hi)
        stage_tile<D, KB, VB>(stg + ((it + DEC_STAGES - 1) % DEC_STAGES) * TB, *tp, h, B,
                              ns, a, lane);
      cp_async_commit();
      advance_tile(tp, ns, a.step_blocks, a.step_rem, B);
      cp_async_wait<DEC_STAGES - 1>();
      __syncwarp();
      load_tile<D, KB, VB>(ta, stg + (it % DEC_STAGES) * TB, lane);
      tile_step<D, KB, VB, NG>(ta, t0, hi, o, m, l, qf, tab, klo, vlo, j, r, G);
    }
  }
  cp_async_wait<0>();

  /* 3. Merge the warps (the tables' memory now holds their accumulators). */
#pragma unroll
  for (int nt = 0; nt < NG; nt++) {
    l[nt] += __shfl_xor_sync(0xffffffffu, l[nt], 4);
    l[nt] += __shfl_xor_sync(0xffffffffu, l[nt], 8);
    l[nt] += __shfl_xor_sync(0xffffffffu, l[nt], 16);
  }
  __syncthreads();
  /* (DEC_WARPS, G) rows of OS words: coordinate c at c + c / 32, rows
   * OS = D + D / 32 apart, so a warp's stores (16 coordinates apart, 4
   * heads) hit at most 2 lanes per bank, and the reads stay contiguous. */
  constexpr int OS = D + D / 32;
  float *sm_o = (float *)dyn;
  if (r == 0) {
#pragma unroll
    for (int nt = 0; nt < NG; nt++) {
      uint32_t g = 4 * nt + j;
      if (g < G) sh.m[warp][g] = m[nt], sh.l[warp][g] = l[nt];
    }
  }
#pragma unroll
  for (int mt = 0; mt < NMT; mt++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      uint32_t hd = 2 * j + (e & 1);
      const uint32_t c = VCPT * r + 2 * mt + (e >> 1);
      if (hd < G) sm_o[(warp * G + hd) * OS + c + c / 32] = o[mt][e];
    }
  }
  __syncthreads();
  const size_t base = (size_t)seq * Hq + (size_t)h * G;
  /* The pair test and the rank are taken again here rather than kept live
   * through the tile loop. */
  if (PAIR && a.c.n_splits % 2 == 0)
    decode_finish_pair<D, 4 * NG>(&sh, sm_o, red, tid, G, base, split, a.c.n_splits, cluster_rank(),
                                  a.c.counts + (size_t)seq * H + h, a.c.part_ml, a.c.part_acc,
                                  a.p_v, a.c.out, a.inv_vscale);
  else
    decode_finish<D, 4 * NG>(&sh, sm_o, red, tid, G, base, a.p_v, a.c.out, a.inv_vscale);
}
#undef TAB

/* A launch configuration of decode_kernel: clusters of two along x with
 * pair, none without. */
static cudaLaunchConfig_t dec_config(dim3 grid, size_t dyn, cudaStream_t stream, bool pair,
                                     cudaLaunchAttribute *at) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(DEC_THREADS);
  cfg.dynamicSmemBytes = dyn;
  cfg.stream = stream;
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = 2;
  at[0].val.clusterDim.y = 1;
  at[0].val.clusterDim.z = 1;
  cfg.attrs = at;
  cfg.numAttrs = pair ? 1 : 0;
  return cfg;
}

template <int D, int KB, int VB, int NG>
static tq_status launch_decode(tq_cuda_ctx *ctx, const dec_args *a, dim3 grid, uint32_t *slots) {
  const size_t dyn = dec_dyn_smem(D, KB, VB, a->c.G);
  const bool pair = a->c.n_splits > 1;
  tq_status st = TQ_OK;
  if (slots || !pair)
    st = tq_cuda_fail(ctx, cudaFuncSetAttribute(decode_kernel<D, KB, VB, NG, false>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn));
  if (st == TQ_OK && (slots || pair))
    st = tq_cuda_fail(ctx, cudaFuncSetAttribute(decode_kernel<D, KB, VB, NG, true>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn));
  if (st != TQ_OK) return st;
  cudaLaunchAttribute at[1];
  if (slots) {
    int per_sm = 0;
    st = tq_cuda_fail(ctx, cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                               &per_sm, decode_kernel<D, KB, VB, NG, false>, DEC_THREADS, dyn));
    if (st != TQ_OK) return st;
    *slots = (uint32_t)(per_sm > 0 ? per_sm : 1) * (uint32_t)(ctx->sm_count > 0 ? ctx->sm_count : 1);
    /* No more than the pairs that fit at once (clusters stay in one GPC). */
    const cudaLaunchConfig_t cfg = dec_config(dim3(2), dyn, ctx->stream, true, at);
    int pairs = 0;
    st = tq_cuda_fail(ctx, cudaOccupancyMaxActiveClusters(&pairs, decode_kernel<D, KB, VB, NG, true>,
                                                          &cfg));
    if (st != TQ_OK) return st;
    if (pairs > 0 && 2u * (uint32_t)pairs < *slots) *slots = 2u * (uint32_t)pairs;
    return TQ_OK;
  }
  const cudaLaunchConfig_t cfg = dec_config(grid, dyn, ctx->stream, pair, at);
  if (pair) return tq_cuda_fail(ctx, cudaLaunchKernelEx(&cfg, decode_kernel<D, KB, VB, NG, true>, *a));
  return tq_cuda_fail(ctx, cudaLaunchKernelEx(&cfg, decode_kernel<D, KB, VB, NG, false>, *a));
}

template <int D, int KB, int VB>
static tq_status dispatch_ng(tq_cuda_ctx *ctx, const dec_args *a, dim3 grid, uint32_t *slots) {
  if (a->c.G <= 4) return launch_decode<D, KB, VB, 1>(ctx, a, grid, slots);
  return launch_decode<D, KB, VB, 2>(ctx, a, grid, slots);
}

template <int D, int KB>
static tq_status dispatch_vb(tq_cuda_ctx *ctx, const dec_args *a, dim3 grid, uint32_t vb,
                             uint32_t *slots) {
  switch (vb) {
    case 2: return dispatch_ng<D, KB, 2>(ctx, a, grid, slots);
    case 3: return dispatch_ng<D, KB, 3>(ctx, a, grid, slots);
    case 4: return dispatch_ng<D, KB, 4>(ctx, a, grid, slots);
    default: return TQ_ERR_UNSUPPORTED;
  }
}

template <int D>
static tq_status dispatch_kb(tq_cuda_ctx *ctx, const dec_args *a, dim3 grid, uint32_t kb,
                             uint32_t vb, uint32_t *slots) {
  switch (kb) {
    case 2: return dispatch_vb<D, 2>(ctx, a, grid, vb, slots);
    case 3: return dispatch_vb<D, 3>(ctx, a, grid, vb, slots);
    case 4: return dispatch_vb<D, 4>(ctx, a, grid, vb, slots);
    default: return TQ_ERR_UNSUPPORTED;
  }
}

int tq_cuda_attention_supported(uint32_t d, uint32_t kbits, uint32_t vbits) {
  return (d == 64 || d == 128) && kbits >= 2 && kbits <= 4 && vbits >= 2 && vbits <= 4;
}

/* Fills the launch arguments; slots != NULL asks for the number of blocks
 * that run at once instead of launching. */
static tq_status decode_common(tq_cuda_ctx *ctx, const tq_cuda_codec *kc, const tq_cuda_codec *vc,
                               const tq_block_layout *lay, const tq_decode_call *call,
                               uint32_t *slots) {
  uint32_t d = kc->params.dim, kb = kc->params.bits, vb = vc->params.bits;
  /* One split, or an even number (the blocks in pairs). */
  if (!tq_cuda_attention_supported(d, kb, vb) || call->G < 1 || call->G > 8 ||
      call->n_splits < 1 || call->n_splits > TQ_CUDA_MAX_SPLITS ||
      (call->n_splits > 1 && call->n_splits % 2))
    return TQ_ERR_UNSUPPORTED;
  dec_args a;
  a.c = *call;
  a.B = lay->B;
  a.H = lay->H;
  a.step_blocks = (DEC_WARPS * TILE) / lay->B;
  a.step_rem = (DEC_WARPS * TILE) % lay->B;
  if (lay->bytes > 0xffffffffu) return TQ_ERR_UNSUPPORTED;
  a.off_vc = (uint32_t)lay->off_vc;
  a.off_kn = (uint32_t)lay->off_kn;
  a.off_vn = (uint32_t)lay->off_vn;
  memset(a.kc, 0, sizeof a.kc);
  memset(a.vc, 0, sizeof a.vc);
  /* Centroids times the codecs' table scales (their fp16 roundings are
   * then the smallest); the key scale comes back out through the query
   * scale (the query is rotated in float and split into two fp16 halves),
   * the value scale from the partial sums. */
  for (uint32_t i = 0; i < (1u << kb); i++) a.kc[i] = kc->h_centroids[i] * kc->table_scale;
  for (uint32_t i = 0; i < (1u << vb); i++) a.vc[i] = vc->h_centroids[i] * vc->table_scale;
  a.c.scale = call->scale / kc->table_scale;
  a.inv_vscale = 1.0f / vc->table_scale;
  if (call->n_splits > 1 && !call->counts) return TQ_ERR_INVALID_ARGUMENT;
  a.pt_k = kc->d_pt;
  a.p_v = vc->d_p;
  dim3 grid(call->n_splits, lay->H, call->n_seqs);
  if (d == 128) return dispatch_kb<128>(ctx, &a, grid, kb, vb, slots);
  return dispatch_kb<64>(ctx, &a, grid, kb, vb, slots);
}

tq_status tq_cuda_decode_slots(tq_cuda_ctx *ctx, const tq_cuda_codec *kc, const tq_cuda_codec *vc,
                               const tq_block_layout *lay, uint32_t G, uint32_t *slots) {
  tq_decode_call call;
  memset(&call, 0, sizeof call);
  call.G = G;
  call.n_splits = 1;
  *slots = 1;
  return decode_common(ctx, kc, vc, lay, &call, slots);
}

tq_status tq_cuda_decode(tq_cuda_ctx *ctx, const tq_cuda_codec *kc, const tq_cuda_codec *vc,
                         const tq_block_layout *lay, const tq_decode_call *call) {
  return decode_common(ctx, kc, vc, lay, call, NULL);
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
  y[j] = merge_splits((const float2 *)(part_ml + row * S * 2), part_acc + row * S * d + j, S, d);
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
