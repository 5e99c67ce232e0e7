/*
 * context.cu - contexts (device + stream), device memory helpers, and device
 * copies of CPU codecs (rotation read back from the CPU codec, codebook and
 * boundaries computed exactly as the CPU codec computes them).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

tq_status tq_cuda_fail(tq_cuda_ctx *ctx, cudaError_t e) {
  if (e == cudaSuccess) return TQ_OK;
  if (ctx) ctx->last = e;
  switch (e) {
    case cudaErrorMemoryAllocation: return TQ_ERR_OUT_OF_MEMORY;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion: return TQ_ERR_UNSUPPORTED;
    default: return TQ_ERR_IO;
  }
}

tq_status tq_cuda_check_launch(tq_cuda_ctx *ctx) {
  return tq_cuda_fail(ctx, cudaGetLastError());
}

extern "C" tq_status tq_cuda_device_count(int *count) {
  if (!count) return TQ_ERR_INVALID_ARGUMENT;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError(); /* clear the sticky "no driver" status */
    n = 0;
  }
  *count = n;
  return TQ_OK;
}

extern "C" const char *tq_cuda_ctx_last_error(const tq_cuda_ctx *ctx) {
  return ctx ? cudaGetErrorName(ctx->last) : "(null context)";
}

extern "C" tq_status tq_cuda_ctx_create(int device, void *stream, tq_cuda_ctx **out) {
  if (out) *out = NULL;
  if (!out || device < 0) return TQ_ERR_INVALID_ARGUMENT;
  int n = 0;
  tq_cuda_device_count(&n);
  if (device >= n) return TQ_ERR_UNSUPPORTED;
  tq_cuda_ctx *c = (tq_cuda_ctx *)calloc(1, sizeof *c);
  if (!c) return TQ_ERR_OUT_OF_MEMORY;
  c->device = device;
  c->last = cudaSuccess;
  tq_status st = tq_cuda_fail(c, cudaSetDevice(device));
  cudaDeviceProp prop;
  if (st == TQ_OK) st = tq_cuda_fail(c, cudaGetDeviceProperties(&prop, device));
  if (st == TQ_OK && prop.major < 9) st = TQ_ERR_UNSUPPORTED;
  if (st == TQ_OK) {
    c->sm_count = prop.multiProcessorCount;
    if (stream) {
      c->stream = (cudaStream_t)stream;
    } else {
      st = tq_cuda_fail(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
      c->own_stream = st == TQ_OK;
    }
  }
  if (st == TQ_OK) st = tq_cuda_fail(c, cudaMalloc((void **)&c->err_word, sizeof *c->err_word));
  if (st != TQ_OK) {
    tq_cuda_ctx_free(c);
    return st;
  }
  *out = c;
  return TQ_OK;
}

extern "C" void tq_cuda_ctx_free(tq_cuda_ctx *ctx) {
  if (!ctx) return;
  cudaSetDevice(ctx->device);
  if (ctx->stream) cudaStreamSynchronize(ctx->stream);
  if (ctx->err_word) cudaFree(ctx->err_word);
  if (ctx->own_stream) cudaStreamDestroy(ctx->stream);
  (void)cudaGetLastError();
  free(ctx);
}

extern "C" void *tq_cuda_ctx_stream(const tq_cuda_ctx *ctx) { return ctx ? (void *)ctx->stream : NULL; }

extern "C" int tq_cuda_ctx_sm_count(const tq_cuda_ctx *ctx) { return ctx ? ctx->sm_count : 0; }

extern "C" tq_status tq_cuda_ctx_sync(tq_cuda_ctx *ctx) {
  if (!ctx) return TQ_ERR_INVALID_ARGUMENT;
  return tq_cuda_fail(ctx, cudaStreamSynchronize(ctx->stream));
}

/* ------------------------------------------------------------------------ */
/* Device memory                                                             */
/* ------------------------------------------------------------------------ */

extern "C" tq_status tq_cuda_malloc(tq_cuda_ctx *ctx, size_t bytes, void **out) {
  if (out) *out = NULL;
  if (!ctx || !out || bytes == 0) return TQ_ERR_INVALID_ARGUMENT;
  return tq_cuda_fail(ctx, cudaMalloc(out, bytes));
}

extern "C" void tq_cuda_free(tq_cuda_ctx *ctx, void *ptr) {
  if (!ctx || !ptr) return;
  cudaStreamSynchronize(ctx->stream);
  cudaFree(ptr);
}

extern "C" tq_status tq_cuda_upload(tq_cuda_ctx *ctx, void *dst_dev, const void *src_host,
                                    size_t bytes) {
  if (!ctx || (bytes && (!dst_dev || !src_host))) return TQ_ERR_INVALID_ARGUMENT;
  if (!bytes) return TQ_OK;
  tq_status st = tq_cuda_fail(ctx, cudaMemcpyAsync(dst_dev, src_host, bytes,
                                                   cudaMemcpyHostToDevice, ctx->stream));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaStreamSynchronize(ctx->stream));
  return st;
}

extern "C" tq_status tq_cuda_download(tq_cuda_ctx *ctx, void *dst_host, const void *src_dev,
                                      size_t bytes) {
  if (!ctx || (bytes && (!dst_host || !src_dev))) return TQ_ERR_INVALID_ARGUMENT;
  if (!bytes) return TQ_OK;
  tq_status st = tq_cuda_fail(ctx, cudaMemcpyAsync(dst_host, src_dev, bytes,
                                                   cudaMemcpyDeviceToHost, ctx->stream));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaStreamSynchronize(ctx->stream));
  return st;
}

extern "C" tq_status tq_cuda_memset(tq_cuda_ctx *ctx, void *dst_dev, int value, size_t bytes) {
  if (!ctx || (bytes && !dst_dev)) return TQ_ERR_INVALID_ARGUMENT;
  if (!bytes) return TQ_OK;
  return tq_cuda_fail(ctx, cudaMemsetAsync(dst_dev, value & 0xff, bytes, ctx->stream));
}

/* ------------------------------------------------------------------------ */
/* Encoder error word                                                        */
/* ------------------------------------------------------------------------ */

tq_status tq_cuda_err_reset(tq_cuda_ctx *ctx) {
  return tq_cuda_fail(ctx, cudaMemsetAsync(ctx->err_word, 0xff, sizeof *ctx->err_word, ctx->stream));
}

tq_status tq_cuda_err_read(tq_cuda_ctx *ctx) {
  unsigned long long w = 0;
  tq_status st = tq_cuda_fail(ctx, cudaMemcpyAsync(&w, ctx->err_word, sizeof w,
                                                   cudaMemcpyDeviceToHost, ctx->stream));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaStreamSynchronize(ctx->stream));
  if (st != TQ_OK) return st;
  if (w == ~0ull) return TQ_OK;
  return (w & 0xfu) == TQ_CUDA_ENC_NON_FINITE ? TQ_ERR_NON_FINITE : TQ_ERR_RANGE;
}

/* ------------------------------------------------------------------------ */
/* Device codecs                                                             */
/* ------------------------------------------------------------------------ */

extern "C" void tq_cuda_codec_free(tq_cuda_codec *codec) {
  if (!codec) return;
  if (codec->ctx) cudaStreamSynchronize(codec->ctx->stream);
  cudaFree(codec->d_pt);
  cudaFree(codec->d_p);
  cudaFree(codec->d_signs);
  cudaFree(codec->d_centroids);
  cudaFree(codec->d_bounds);
  free(codec);
}

extern "C" size_t tq_cuda_codec_record_size(const tq_cuda_codec *codec) {
  return codec ? codec->record_bytes : 0;
}

/* The decode kernel holds the centroids as fp16 (rounding each by up to
 * 2^-11 relative, an error that does not average out over a context). A
 * common scale s moves where each centroid falls between fp16 values: of the
 * 2^16 scales 1 + i 2^-16, the one whose largest relative error |fp16(s c) -
 * s c| / |s c| over the codebook is smallest (the first such). Only for the
 * widths the kernel supports (<= 4 bits: at most 8 magnitudes); 1 otherwise. */
static float fp16_table_scale(const float *c, uint32_t levels, uint32_t bits) {
  if (bits > 4) return 1.0f;
  float best_s = 1.0f;
  double best = 1e30;
  for (uint32_t i = 0; i < (1u << 16); i++) {
    const float s = 1.0f + (float)i * (1.0f / 65536.0f);
    double worst = 0.0;
    for (uint32_t e = levels / 2; e < levels && worst < best; e++) {
      const float x = s * c[e];
      if (!(x > 0.0f)) continue;
      const double r = fabs((double)tq_f16_to_f32(tq_f32_to_f16(x)) - (double)x) / (double)x;
      worst = r > worst ? r : worst;
    }
    if (worst < best) best = worst, best_s = s;
  }
  return best_s;
}

extern "C" tq_status tq_cuda_codec_create(tq_cuda_ctx *ctx, const tq_codec *codec,
                                          tq_cuda_codec **out) {
  if (out) *out = NULL;
  if (!ctx || !codec || !out) return TQ_ERR_INVALID_ARGUMENT;
  tq_cuda_codec *c = (tq_cuda_codec *)calloc(1, sizeof *c);
  if (!c) return TQ_ERR_OUT_OF_MEMORY;
  c->ctx = ctx;
  tq_status st = tq_codec_get_params(codec, &c->params);
  uint32_t d = c->params.dim;
  c->levels = 1u << c->params.bits;
  if (st == TQ_OK) st = tq_codec_centroids(codec, c->h_centroids, 256);
  /* The CPU codec's boundaries: float midpoints (codec.c). */
  for (uint32_t i = 0; i + 1 < c->levels; i++)
    c->h_bounds[i] = 0.5f * (c->h_centroids[i] + c->h_centroids[i + 1]);
  c->table_scale = st == TQ_OK ? fp16_table_scale(c->h_centroids, c->levels, c->params.bits) : 1.0f;
  c->norm_bytes = c->params.norm_format == TQ_NORM_F16 ? 2 : 4;
  c->code_bytes = tq_packed_size(d, c->params.bits);
  c->record_bytes = tq_codec_record_size(codec);
  /* P column by column: rotating the unit vector e_j gives P e_j exactly
   * (every other product is a zero), whatever the rotation kind. */
  size_t n = (size_t)d * d;
  float *pt = (float *)malloc(n * sizeof *pt);
  float *p = (float *)malloc(n * sizeof *p);
  float *e = (float *)calloc(d, sizeof *e);
  float *col = (float *)malloc((size_t)d * sizeof *col);
  float *signs = (float *)malloc((size_t)d * sizeof *signs);
  if (st == TQ_OK && (!pt || !p || !e || !col || !signs)) st = TQ_ERR_OUT_OF_MEMORY;
  for (uint32_t j = 0; j < d && st == TQ_OK; j++) {
    e[j] = 1.0f;
    st = tq_codec_rotate(codec, e, col);
    e[j] = 0.0f;
    for (uint32_t i = 0; i < d; i++) {
      pt[(size_t)j * d + i] = col[i]; /* pt[j][i] = P[i][j] */
      p[(size_t)i * d + j] = col[i];  /* p[i][j] = P[i][j] */
    }
    /* Hadamard: row 0 of H is all ones, so (P e_j)[0] = signs[j] * scale. */
    signs[j] = col[0] < 0.0f ? -1.0f : 1.0f;
    if (j == 0) c->hadamard_scale = fabsf(col[0]);
  }
  int hadamard = c->params.rotation == TQ_ROTATION_HADAMARD;
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaSetDevice(ctx->device));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_pt, n * sizeof(float)));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_p, n * sizeof(float)));
  if (st == TQ_OK && hadamard)
    st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_signs, d * sizeof(float)));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_centroids, 256 * sizeof(float)));
  if (st == TQ_OK) st = tq_cuda_fail(ctx, cudaMalloc((void **)&c->d_bounds, 256 * sizeof(float)));
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMemcpy(c->d_pt, pt, n * sizeof(float), cudaMemcpyHostToDevice));
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMemcpy(c->d_p, p, n * sizeof(float), cudaMemcpyHostToDevice));
  if (st == TQ_OK && hadamard)
    st = tq_cuda_fail(ctx, cudaMemcpy(c->d_signs, signs, d * sizeof(float), cudaMemcpyHostToDevice));
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMemcpy(c->d_centroids, c->h_centroids, 256 * sizeof(float),
                                      cudaMemcpyHostToDevice));
  if (st == TQ_OK)
    st = tq_cuda_fail(ctx, cudaMemcpy(c->d_bounds, c->h_bounds, 255 * sizeof(float),
                                      cudaMemcpyHostToDevice));
  free(pt);
  free(p);
  free(e);
  free(col);
  free(signs);
  if (st != TQ_OK) {
    tq_cuda_codec_free(c);
    return st;
  }
  *out = c;
  return TQ_OK;
}

extern "C" tq_status tq_cuda_encode(tq_cuda_ctx *ctx, const tq_cuda_codec *codec, const void *x,
                                    tq_cuda_dtype dtype, size_t n, void *records) {
  if (!ctx || !codec || codec->ctx != ctx || (n && (!x || !records))) return TQ_ERR_INVALID_ARGUMENT;
  if (dtype != TQ_CUDA_F32 && dtype != TQ_CUDA_F16 && dtype != TQ_CUDA_BF16)
    return TQ_ERR_INVALID_ARGUMENT;
  if (n == 0) return TQ_OK;
  if (n > ((size_t)1 << 48)) return TQ_ERR_INVALID_ARGUMENT;
  tq_enc_out o;
  memset(&o, 0, sizeof o);
  o.records = (uint8_t *)records;
  tq_status st = tq_cuda_err_reset(ctx);
  if (st == TQ_OK) st = tq_cuda_encode_launch(ctx, codec, x, dtype, n, &o, 0.0, 0);
  if (st == TQ_OK) st = tq_cuda_err_read(ctx);
  return st;
}
