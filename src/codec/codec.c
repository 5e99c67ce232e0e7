/*
 * codec.c - TurboQuant_mse encoding of single vectors (one head's key or value
 * for one token) into fixed-size records:
 *
 *   n = ||x||, u = x / n, y = P u, idx_j = cell of y_j in the Lloyd-Max
 *   codebook, record = norm (fp16 or f32) followed by the packed idx.
 *   Decode: x_hat = n * P^T c[idx].
 *
 * Record layout and its version: docs/FORMAT.md. The inner loops are in the
 * kernel table chosen at creation; everything here is shared by all levels,
 * so the bytes produced depend only on the parameters and the input.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "pack.h"
#include "rotation.h"
#include "tqai.h"

struct tq_codec {
  tq_codec_params params;           /* simd resolved to the level in use */
  const tq_codec_kernels *k;
  tq_rotation_data rot;
  float centroids[1u << TQ_MAX_BITS]; /* (2^bits,) ascending */
  float bounds[(1u << TQ_MAX_BITS) - 1]; /* (2^bits - 1,) midpoints, ascending */
  size_t norm_bytes;
  size_t code_bytes;
  size_t record_bytes;
};

tq_codec_params tq_codec_params_default(uint32_t dim, uint32_t bits) {
  tq_codec_params p;
  memset(&p, 0, sizeof p);
  p.dim = dim;
  p.bits = bits;
  p.rotation = TQ_ROTATION_HAAR;
  p.codebook = TQ_CODEBOOK_EXACT;
  p.norm_format = TQ_NORM_F16;
  p.simd = TQ_SIMD_AUTO;
  p.seed = TQ_DEFAULT_KEY_SEED;
  return p;
}

tq_kv_params tq_kv_params_default(uint32_t dim) {
  tq_kv_params kv;
  kv.key = tq_codec_params_default(dim, 4);
  kv.value = tq_codec_params_default(dim, 2);
  kv.value.seed = TQ_DEFAULT_VALUE_SEED;
  return kv;
}

size_t tq_record_size(uint32_t dim, uint32_t bits, tq_norm_format norm_format) {
  size_t packed = tq_packed_size(dim, bits);
  if (!packed) return 0;
  if (norm_format == TQ_NORM_F16) return 2 + packed;
  if (norm_format == TQ_NORM_F32) return 4 + packed;
  return 0;
}

static tq_status validate(const tq_codec_params *p) {
  if (p->dim < TQ_MIN_DIM || p->dim > TQ_MAX_DIM) return TQ_ERR_UNSUPPORTED_DIM;
  if (p->bits < TQ_MIN_BITS || p->bits > TQ_MAX_BITS) return TQ_ERR_UNSUPPORTED_BITS;
  if (p->rotation != TQ_ROTATION_HAAR && p->rotation != TQ_ROTATION_HADAMARD)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->codebook != TQ_CODEBOOK_EXACT && p->codebook != TQ_CODEBOOK_GAUSSIAN)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->norm_format != TQ_NORM_F16 && p->norm_format != TQ_NORM_F32)
    return TQ_ERR_INVALID_ARGUMENT;
  if (p->simd < TQ_SIMD_AUTO || p->simd > TQ_SIMD_AVX512) return TQ_ERR_INVALID_ARGUMENT;
  if (!tq_simd_supported(p->simd)) return TQ_ERR_UNSUPPORTED_SIMD;
  if (p->rotation == TQ_ROTATION_HADAMARD && (p->dim & (p->dim - 1)))
    return TQ_ERR_UNSUPPORTED_ROTATION;
  return TQ_OK;
}

tq_status tq_codec_create(const tq_codec_params *params, tq_codec **out) {
  if (out) *out = NULL;
  if (!params || !out) return TQ_ERR_INVALID_ARGUMENT;
  tq_status st = validate(params);
  if (st != TQ_OK) return st;
  tq_codec *c = calloc(1, sizeof *c);
  if (!c) return TQ_ERR_OUT_OF_MEMORY;
  c->params = *params;
  if (c->params.simd == TQ_SIMD_AUTO) c->params.simd = tq_simd_default();
  c->k = tq_codec_kernels_get(c->params.simd);
  if (!c->k) {
    free(c);
    return TQ_ERR_UNSUPPORTED_SIMD;
  }
  uint32_t levels = 1u << params->bits;
  st = tq_codebook_get(params->dim, params->bits, params->codebook, c->centroids);
  if (st == TQ_OK) st = tq_rotation_build(params->rotation, params->dim, params->seed, &c->rot);
  if (st != TQ_OK) {
    free(c);
    return st;
  }
  for (uint32_t i = 0; i + 1 < levels; i++)
    c->bounds[i] = 0.5f * (c->centroids[i] + c->centroids[i + 1]);
  c->norm_bytes = params->norm_format == TQ_NORM_F16 ? 2 : 4;
  c->code_bytes = tq_packed_size(params->dim, params->bits);
  c->record_bytes = c->norm_bytes + c->code_bytes;
  *out = c;
  return TQ_OK;
}

void tq_codec_free(tq_codec *codec) {
  if (!codec) return;
  tq_rotation_release(&codec->rot);
  free(codec);
}

tq_status tq_codec_get_params(const tq_codec *codec, tq_codec_params *out) {
  if (!codec || !out) return TQ_ERR_INVALID_ARGUMENT;
  *out = codec->params;
  return TQ_OK;
}

size_t tq_codec_record_size(const tq_codec *codec) { return codec ? codec->record_bytes : 0; }

tq_status tq_codec_centroids(const tq_codec *codec, float *centroids, size_t count) {
  if (!codec || !centroids) return TQ_ERR_INVALID_ARGUMENT;
  size_t levels = (size_t)1 << codec->params.bits;
  if (count < levels) return TQ_ERR_BUFFER_TOO_SMALL;
  memcpy(centroids, codec->centroids, levels * sizeof *centroids);
  return TQ_OK;
}

/* y = P x (scale 1); x == y allowed. */
static void rotate(const tq_codec *c, const float *x, float *y, float *tmp) {
  uint32_t d = c->params.dim;
  if (c->params.rotation == TQ_ROTATION_HADAMARD) {
    c->k->hadamard(c->rot.signs, x, c->rot.scale, y, d);
  } else {
    if (x == y) {
      memcpy(tmp, x, d * sizeof *tmp);
      x = tmp;
    }
    c->k->matvec(c->rot.pt, x, 1.0f, y, d);
  }
}

/* x = P^T y * s; y == x allowed. */
static void unrotate(const tq_codec *c, const float *y, float s, float *x, float *tmp) {
  uint32_t d = c->params.dim;
  if (c->params.rotation == TQ_ROTATION_HADAMARD) {
    c->k->hadamard_inv(c->rot.signs, y, (float)((double)s * (double)c->rot.scale), x, d);
  } else {
    if (x == y) {
      memcpy(tmp, y, d * sizeof *tmp);
      y = tmp;
    }
    c->k->matvec(c->rot.p, y, s, x, d);
  }
}

tq_status tq_codec_rotate(const tq_codec *codec, const float *x, float *y) {
  if (!codec || !x || !y) return TQ_ERR_INVALID_ARGUMENT;
  _Alignas(64) float tmp[TQ_MAX_DIM];
  rotate(codec, x, y, tmp);
  return TQ_OK;
}

tq_status tq_codec_unrotate(const tq_codec *codec, const float *y, float *x) {
  if (!codec || !x || !y) return TQ_ERR_INVALID_ARGUMENT;
  _Alignas(64) float tmp[TQ_MAX_DIM];
  unrotate(codec, y, 1.0f, x, tmp);
  return TQ_OK;
}

static void store_norm(uint8_t *rec, tq_norm_format fmt, float n) {
  if (fmt == TQ_NORM_F16) {
    uint16_t h = tq_f32_to_f16(n);
    rec[0] = (uint8_t)h;
    rec[1] = (uint8_t)(h >> 8);
  } else {
    uint32_t u;
    memcpy(&u, &n, sizeof u);
    for (int i = 0; i < 4; i++) rec[i] = (uint8_t)(u >> (8 * i));
  }
}

/* Returns the stored norm, or -1 if it is negative, NaN or infinite. */
static float load_norm(const uint8_t *rec, tq_norm_format fmt) {
  if (fmt == TQ_NORM_F16) {
    uint16_t h = (uint16_t)(rec[0] | (rec[1] << 8));
    if ((h & 0x8000u) || (h & 0x7c00u) == 0x7c00u) return -1.0f;
    return tq_f16_to_f32(h);
  }
  uint32_t u = 0;
  for (int i = 0; i < 4; i++) u |= (uint32_t)rec[i] << (8 * i);
  if ((u & 0x80000000u) || (u & 0x7f800000u) == 0x7f800000u) return -1.0f;
  float n;
  memcpy(&n, &u, sizeof n);
  return n;
}

/* ||c[idx]|| for one vector's indices. */
static double codeword_norm(const tq_codec *c, const uint8_t *idx) {
  double s = 0.0;
  for (uint32_t j = 0; j < c->params.dim; j++) s += (double)c->centroids[idx[j]] * c->centroids[idx[j]];
  return sqrt(s);
}

/* Encodes one vector x (dim floats) into one record. */
static tq_status encode_one(const tq_codec *c, const float *x, uint8_t *rec) {
  uint32_t d = c->params.dim;
  _Alignas(64) float u[TQ_MAX_DIM];   /* (d,) x / ||x||, then P u */
  _Alignas(64) float tmp[TQ_MAX_DIM]; /* (d,) scratch for the rotation */
  _Alignas(64) uint8_t idx[TQ_MAX_DIM];
  double ss = c->k->sumsq(x, d);
  if (!isfinite(ss)) return TQ_ERR_NON_FINITE; /* a float sum of squares cannot overflow a double */
  double n = sqrt(ss);
  double limit = c->params.norm_format == TQ_NORM_F16 ? (double)TQ_F16_MAX : (double)FLT_MAX;
  if (n > limit) return TQ_ERR_RANGE;
  /* Normalize first so the rotation works on values of order 1 whatever the
   * input's magnitude. Tiny vectors are scaled up by an exact power of two
   * first, so 1/n stays a finite float. */
  const float *src = x;
  if (n > 0.0 && n < 1e-30) {
    for (uint32_t j = 0; j < d; j++) tmp[j] = x[j] * 0x1p64f;
    src = tmp;
    n *= 0x1p64;
  }
  float inv = n > 0.0 ? (float)(1.0 / n) : 0.0f;
  for (uint32_t j = 0; j < d; j++) u[j] = src[j] * inv;
  if (src == tmp) n *= 0x1p-64;
  rotate(c, u, u, tmp);
  c->k->quantize(c->bounds, c->params.bits, u, idx, d);
  /* The decoded vector is n * P^T c[idx], whose length n * ||c[idx]|| can
   * exceed n (up to about 1.5x for tiny dims); it must stay in range. */
  store_norm(rec, c->params.norm_format, (float)n);
  if ((double)load_norm(rec, c->params.norm_format) * codeword_norm(c, idx) > limit) return TQ_ERR_RANGE;
  tq_pack_unchecked(idx, d, c->params.bits, rec + c->norm_bytes);
  return TQ_OK;
}

/* Decodes one record into x (dim floats). */
static tq_status decode_one(const tq_codec *c, const uint8_t *rec, float *x) {
  uint32_t d = c->params.dim;
  _Alignas(64) float y[TQ_MAX_DIM];
  _Alignas(64) uint8_t idx[TQ_MAX_DIM];
  float n = load_norm(rec, c->params.norm_format);
  if (n < 0.0f) return TQ_ERR_CORRUPT;
  tq_unpack_unchecked(rec + c->norm_bytes, d, c->params.bits, idx);
  /* A valid record decodes within float range (the encoder checks it). */
  if ((double)n * codeword_norm(c, idx) > (double)FLT_MAX) return TQ_ERR_CORRUPT;
  c->k->dequantize(c->centroids, idx, y, d);
  unrotate(c, y, n, x, NULL);
  return TQ_OK;
}

/* Shared argument checks of the batch calls. */
static tq_status check_batch(const tq_codec *c, const void *a, const void *b, size_t n,
                             size_t bytes_avail) {
  if (!c || !a || !b) return TQ_ERR_INVALID_ARGUMENT;
  if (n > SIZE_MAX / c->record_bytes || n > SIZE_MAX / c->params.dim / sizeof(float))
    return TQ_ERR_INVALID_ARGUMENT;
  if (bytes_avail < n * c->record_bytes) return TQ_ERR_BUFFER_TOO_SMALL;
  return TQ_OK;
}

tq_status tq_codec_encode_f32(const tq_codec *codec, const float *x, size_t n, void *records,
                              size_t records_size) {
  tq_status st = check_batch(codec, x, records, n, records_size);
  if (st != TQ_OK) return st;
  uint32_t d = codec->params.dim;
  uint8_t *out = records;
  for (size_t i = 0; i < n; i++) {
    st = encode_one(codec, x + i * d, out + i * codec->record_bytes);
    if (st != TQ_OK) return st;
  }
  return TQ_OK;
}

/* 16-bit inputs: convert one vector at a time into a float buffer. */
static tq_status encode_16(const tq_codec *codec, const uint16_t *x, size_t n, void *records,
                           size_t records_size, int bf16) {
  tq_status st = check_batch(codec, x, records, n, records_size);
  if (st != TQ_OK) return st;
  uint32_t d = codec->params.dim;
  uint8_t *out = records;
  _Alignas(64) float v[TQ_MAX_DIM];
  for (size_t i = 0; i < n; i++) {
    if (bf16) codec->k->bf16_to_f32(x + i * d, v, d);
    else codec->k->f16_to_f32(x + i * d, v, d);
    st = encode_one(codec, v, out + i * codec->record_bytes);
    if (st != TQ_OK) return st;
  }
  return TQ_OK;
}

tq_status tq_codec_encode_f16(const tq_codec *codec, const uint16_t *x, size_t n, void *records,
                              size_t records_size) {
  return encode_16(codec, x, n, records, records_size, 0);
}

tq_status tq_codec_encode_bf16(const tq_codec *codec, const uint16_t *x, size_t n, void *records,
                               size_t records_size) {
  return encode_16(codec, x, n, records, records_size, 1);
}

tq_status tq_codec_decode_f32(const tq_codec *codec, const void *records, size_t records_size,
                              size_t n, float *x) {
  tq_status st = check_batch(codec, records, x, n, records_size);
  if (st != TQ_OK) return st;
  uint32_t d = codec->params.dim;
  const uint8_t *in = records;
  for (size_t i = 0; i < n; i++) {
    st = decode_one(codec, in + i * codec->record_bytes, x + i * d);
    if (st != TQ_OK) return st;
  }
  return TQ_OK;
}

static tq_status decode_16(const tq_codec *codec, const void *records, size_t records_size,
                           size_t n, uint16_t *x, int bf16) {
  tq_status st = check_batch(codec, records, x, n, records_size);
  if (st != TQ_OK) return st;
  uint32_t d = codec->params.dim;
  const uint8_t *in = records;
  _Alignas(64) float v[TQ_MAX_DIM];
  for (size_t i = 0; i < n; i++) {
    st = decode_one(codec, in + i * codec->record_bytes, v);
    if (st != TQ_OK) return st;
    /* Values past the 16-bit format's largest finite value would become
     * infinity (only possible with TQ_NORM_F32 records). */
    float top = bf16 ? 0x1.fep127f : TQ_F16_MAX;
    for (uint32_t j = 0; j < d; j++)
      if (fabsf(v[j]) > top) return TQ_ERR_RANGE;
    if (bf16) codec->k->f32_to_bf16(v, x + i * d, d);
    else codec->k->f32_to_f16(v, x + i * d, d);
  }
  return TQ_OK;
}

tq_status tq_codec_decode_f16(const tq_codec *codec, const void *records, size_t records_size,
                              size_t n, uint16_t *x) {
  return decode_16(codec, records, records_size, n, x, 0);
}

tq_status tq_codec_decode_bf16(const tq_codec *codec, const void *records, size_t records_size,
                               size_t n, uint16_t *x) {
  return decode_16(codec, records, records_size, n, x, 1);
}
