/*
 * encode.cu - TurboQuant encoding on the GPU, byte for byte the CPU codec's
 * (src/codec/codec.c with the reference kernels of kernels_ref.c):
 *
 *   ss = sum x_j^2 in double, eight lanes acc[j % 8], combined as
 *        ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7));
 *   n = sqrt(ss); tiny vectors (0 < n < 1e-30) are scaled by 2^64 first;
 *   u_j = x_j * (float)(1 / n);
 *   Haar:     y_i = sum over ascending j of pt[j][i] * u_j, from 0.0f,
 *             a float multiply then a float add each step;
 *   Hadamard: t_j = signs_j * u_j, butterflies h = 1, 2, ..., d/2, y = t * s;
 *   idx_j = number of boundaries below y_j;
 *   norm stored as (float)n (fp16 or f32), then the LSB-first packed codes.
 *
 * Every float operation is an explicit round-to-nearest intrinsic
 * (__fmul_rn, __fadd_rn, __dadd_rn ...), which the compiler never fuses, so
 * the order above is the order executed. This file is also compiled with
 * --fmad=false.
 */
#include <cuda_fp16.h>
#include <math.h>

#include "core/half_bits.h"
#include "cuda_internal.h"

#define ENC_THREADS 128

typedef struct enc_args {
  const void *x;
  int dtype;
  size_t n;
  uint32_t d, bits, levels;
  int hadamard;
  const float *pt;        /* (d, d) */
  const float *signs;     /* (d,) */
  float hscale;
  const float *bounds;    /* (levels - 1,) */
  const float *centroids; /* (levels,) */
  int norm_f32;
  uint32_t norm_bytes, code_bytes;
  size_t record_bytes;
  double max_norm_sq;     /* > 0: also reject ss above it */
  uint32_t side;
  tq_enc_out out;
  unsigned long long *err;
} enc_args;

/* tq_f32_to_f16 of src/core/half.c: the same function (core/half_bits.h). */
__device__ static uint16_t f32_to_f16_bits(float x) { return tq_half_from_f32_bits(__float_as_uint(x)); }

__device__ static float load_elem(const void *x, int dtype, size_t i) {
  if (dtype == TQ_CUDA_F32) return ((const float *)x)[i];
  uint16_t h = ((const uint16_t *)x)[i];
  if (dtype == TQ_CUDA_F16) return __half2float(__ushort_as_half(h));
  return __uint_as_float((uint32_t)h << 16);
}

/* Vectors per block: several share each load of the rotation matrix. */
static uint32_t enc_vpb(uint32_t d) { return d <= 512 ? 4u : 1u; }

__global__ void __launch_bounds__(ENC_THREADS) encode_kernel(enc_args a, uint32_t vpb) {
  extern __shared__ float sm[];
  const uint32_t d = a.d;
  float *xs = sm;                           /* (vpb, d) input as float */
  float *u = sm + (size_t)vpb * d;          /* (vpb, d) normalized, then rotated */
  uint8_t *idx = (uint8_t *)(u + (size_t)vpb * d); /* (vpb, d) */
  __shared__ double part[4][8];
  __shared__ float inv_s[4];
  __shared__ double norm_s[4];
  __shared__ int tiny_s[4];
  __shared__ uint32_t bad_s[4];
  const uint32_t tid = threadIdx.x;
  const size_t v0 = (size_t)blockIdx.x * vpb;

  for (uint32_t e = tid; e < vpb * d; e += blockDim.x) {
    uint32_t v = e / d, j = e % d;
    size_t gv = v0 + v;
    xs[e] = gv < a.n ? load_elem(a.x, a.dtype, gv * d + j) : 0.0f;
  }
  __syncthreads();

  /* Sum of squares: lane l of vector v sums j = l, l + 8, ... in order. */
  if (tid < vpb * 8) {
    uint32_t v = tid / 8, l = tid % 8;
    double acc = 0.0;
    for (uint32_t j = l; j < d; j += 8) {
      double xj = (double)xs[v * d + j];
      acc = __dadd_rn(acc, __dmul_rn(xj, xj));
    }
    part[v][l] = acc;
  }
  __syncthreads();
  if (tid < vpb) {
    uint32_t v = tid;
    const double *p = part[v];
    double ss = __dadd_rn(__dadd_rn(__dadd_rn(p[0], p[4]), __dadd_rn(p[2], p[6])),
                          __dadd_rn(__dadd_rn(p[1], p[5]), __dadd_rn(p[3], p[7])));
    uint32_t bad = 0;
    double n = 0.0;
    if (!isfinite(ss)) {
      bad = TQ_CUDA_ENC_NON_FINITE;
    } else {
      n = __dsqrt_rn(ss);
      double limit = a.norm_f32 ? 3.4028234663852886e38 : 65504.0;
      if (n > limit || (a.max_norm_sq > 0.0 && ss > a.max_norm_sq)) bad = TQ_CUDA_ENC_RANGE;
    }
    int tiny = n > 0.0 && n < 1e-30;
    double ns = tiny ? n * 0x1p64 : n;
    inv_s[v] = ns > 0.0 ? __double2float_rn(__ddiv_rn(1.0, ns)) : 0.0f;
    norm_s[v] = n;
    tiny_s[v] = tiny;
    bad_s[v] = bad;
  }
  __syncthreads();

  for (uint32_t e = tid; e < vpb * d; e += blockDim.x) {
    uint32_t v = e / d;
    float src = tiny_s[v] ? __fmul_rn(xs[e], 0x1p64f) : xs[e];
    u[e] = __fmul_rn(src, inv_s[v]);
  }
  __syncthreads();

  if (!a.hadamard) {
    /* y_i = sum_j pt[j][i] u_j; the result goes to xs (no longer needed). */
    for (uint32_t i = tid; i < d; i += blockDim.x) {
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (uint32_t j = 0; j < d; j++) {
        float m = a.pt[(size_t)j * d + i];
        for (uint32_t v = 0; v < vpb; v++) acc[v] = __fadd_rn(acc[v], __fmul_rn(m, u[v * d + j]));
      }
      /* The CPU multiplies by s = 1.0f afterwards: exact, nothing to do. */
      for (uint32_t v = 0; v < vpb; v++) xs[v * d + i] = acc[v];
    }
    __syncthreads();
  } else {
    for (uint32_t e = tid; e < vpb * d; e += blockDim.x) xs[e] = __fmul_rn(a.signs[e % d], u[e]);
    __syncthreads();
    for (uint32_t h = 1; h < d; h <<= 1) {
      for (uint32_t e = tid; e < vpb * (d / 2); e += blockDim.x) {
        uint32_t v = e / (d / 2), pr = e % (d / 2);
        uint32_t lo = (pr / h) * 2 * h + (pr % h);
        float *t = xs + (size_t)v * d;
        float x0 = t[lo], x1 = t[lo + h];
        t[lo] = __fadd_rn(x0, x1);
        t[lo + h] = __fsub_rn(x0, x1);
      }
      __syncthreads();
    }
    for (uint32_t e = tid; e < vpb * d; e += blockDim.x) xs[e] = __fmul_rn(xs[e], a.hscale);
    __syncthreads();
  }

  /* Quantize: the same branch-free binary search as the CPU (a count of the
   * boundaries strictly below y). */
  for (uint32_t e = tid; e < vpb * d; e += blockDim.x) {
    float y = xs[e];
    uint32_t k = 0;
    for (uint32_t step = 1u << (a.bits - 1); step; step >>= 1)
      if (a.bounds[k + step - 1] < y) k += step;
    idx[e] = (uint8_t)k;
  }
  __syncthreads();

  /* Norm, the decoded-length check, and the error word. */
  if (tid < vpb && v0 + tid < a.n) {
    uint32_t v = tid;
    size_t gv = v0 + v;
    uint32_t bad = bad_s[v];
    float nf = __double2float_rn(norm_s[v]);
    uint16_t h = f32_to_f16_bits(nf);
    if (!bad) {
      double stored = a.norm_f32 ? (double)nf : (double)__half2float(__ushort_as_half(h));
      double s = 0.0;
      for (uint32_t j = 0; j < d; j++) {
        double c = (double)a.centroids[idx[v * d + j]];
        s = __dadd_rn(s, __dmul_rn(c, c));
      }
      double limit = a.norm_f32 ? 3.4028234663852886e38 : 65504.0;
      if (__dmul_rn(stored, __dsqrt_rn(s)) > limit) bad = TQ_CUDA_ENC_RANGE;
    }
    if (bad) {
      atomicMin(a.err, ((unsigned long long)gv << 8) | ((unsigned long long)a.side << 4) | bad);
      bad_s[v] = bad;
    } else {
      uint8_t *np;
      if (!a.out.to_cache) {
        np = a.out.records + gv * a.record_bytes;
      } else {
        uint32_t tok = a.out.first + (uint32_t)(gv / a.out.n_heads), hh = (uint32_t)(gv % a.out.n_heads);
        uint8_t *blk = a.out.table[tok / a.out.block_tokens];
        np = blk + a.out.norms_off + ((size_t)hh * a.out.block_tokens + tok % a.out.block_tokens) * 2;
      }
      if (a.norm_f32) {
        uint32_t b = __float_as_uint(nf);
        for (int i = 0; i < 4; i++) np[i] = (uint8_t)(b >> (8 * i));
      } else {
        np[0] = (uint8_t)h;
        np[1] = (uint8_t)(h >> 8);
      }
    }
  }
  __syncthreads();

  /* Packed codes, one output byte per thread step. */
  const uint32_t cb = a.code_bytes;
  for (uint32_t e = tid; e < vpb * cb; e += blockDim.x) {
    uint32_t v = e / cb, k = e % cb;
    size_t gv = v0 + v;
    if (gv >= a.n || bad_s[v]) continue;
    uint32_t byte = 0;
    for (uint32_t b = 0; b < 8; b++) {
      uint32_t p = 8 * k + b;
      if (p >= d * a.bits) break;
      byte |= ((uint32_t)(idx[v * d + p / a.bits] >> (p % a.bits)) & 1u) << b;
    }
    uint8_t *cp;
    if (!a.out.to_cache) {
      cp = a.out.records + gv * a.record_bytes + a.norm_bytes;
    } else {
      uint32_t tok = a.out.first + (uint32_t)(gv / a.out.n_heads), hh = (uint32_t)(gv % a.out.n_heads);
      uint8_t *blk = a.out.table[tok / a.out.block_tokens];
      cp = blk + a.out.codes_off + ((size_t)hh * a.out.block_tokens + tok % a.out.block_tokens) * cb;
    }
    cp[k] = (uint8_t)byte;
  }
}

tq_status tq_cuda_encode_launch(tq_cuda_ctx *ctx, const tq_cuda_codec *codec, const void *x,
                                tq_cuda_dtype dtype, size_t n, const tq_enc_out *out,
                                double max_norm, uint32_t side) {
  enc_args a;
  a.x = x;
  a.dtype = (int)dtype;
  a.n = n;
  a.d = codec->params.dim;
  a.bits = codec->params.bits;
  a.levels = codec->levels;
  a.hadamard = codec->params.rotation == TQ_ROTATION_HADAMARD;
  a.pt = codec->d_pt;
  a.signs = codec->d_signs;
  a.hscale = codec->hadamard_scale;
  a.bounds = codec->d_bounds;
  a.centroids = codec->d_centroids;
  a.norm_f32 = codec->params.norm_format == TQ_NORM_F32;
  a.norm_bytes = (uint32_t)codec->norm_bytes;
  a.code_bytes = (uint32_t)codec->code_bytes;
  a.record_bytes = codec->record_bytes;
  a.max_norm_sq = max_norm > 0.0 ? max_norm * max_norm : 0.0;
  a.side = side;
  a.out = *out;
  a.err = ctx->err_word;
  uint32_t vpb = enc_vpb(a.d);
  size_t blocks = (n + vpb - 1) / vpb;
  size_t smem = (size_t)vpb * a.d * (2 * sizeof(float) + 1);
  tq_status st = TQ_OK;
  if (smem > 48 * 1024)
    st = tq_cuda_fail(ctx, cudaFuncSetAttribute(encode_kernel,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                (int)smem));
  /* Grid x holds up to 2^31 - 1 blocks; larger batches go in pieces. */
  for (size_t done = 0; st == TQ_OK && done < blocks;) {
    size_t chunk = blocks - done < 0x7fffffffu ? blocks - done : 0x7fffffffu;
    enc_args b = a;
    b.x = (const uint8_t *)x + done * vpb * a.d * (dtype == TQ_CUDA_F32 ? 4 : 2);
    b.n = n - done * vpb < chunk * vpb ? n - done * vpb : chunk * vpb;
    if (!b.out.to_cache) b.out.records = out->records + done * vpb * a.record_bytes;
    else b.out.first = out->first + (uint32_t)(done * vpb / out->n_heads);
    /* Error indices are relative to the piece; pieces only exist for more
     * than 2^31 vectors, where the order of failures is not kept. */
    encode_kernel<<<(unsigned)chunk, ENC_THREADS, smem, ctx->stream>>>(b, vpb);
    st = tq_cuda_check_launch(ctx);
    done += chunk;
  }
  return st;
}
