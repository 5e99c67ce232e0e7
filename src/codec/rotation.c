/*
 * rotation.c - seeded random rotations.
 *
 * Haar: a dim x dim matrix of standard Gaussians from the portable generator,
 * Householder QR in double precision, Q with column j multiplied by
 * sign(R_jj) (that makes Q Haar-distributed rather than biased by the QR
 * convention). The file is compiled with -ffp-contract=off and every loop
 * runs in a fixed order, so the floats produced are the same everywhere.
 *
 * Hadamard: dim random signs; the transform itself is in the kernels.
 */
#include "rotation.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

void *tq_alloc_aligned(size_t bytes) {
  if (bytes == 0) bytes = 64;
  if (bytes > SIZE_MAX - 63) return NULL;
  bytes = (bytes + 63) & ~(size_t)63;
  return aligned_alloc(64, bytes);
}

/* Mixes the kind and dim into the seed so that different shapes built from
 * the same user seed do not share a prefix of random numbers. */
static uint64_t rotation_seed(tq_rotation kind, uint32_t dim, uint64_t seed) {
  return seed ^ ((uint64_t)dim << 32) ^ ((uint64_t)kind << 60) ^ 0x5452514149524f54ull;
}

static tq_status build_haar(uint32_t d, tq_rng *rng, float *p, float *pt) {
  size_t n = (size_t)d * d;
  double *a = malloc(n * sizeof *a);    /* (d, d) row-major, becomes R above diagonal */
  double *q = malloc(n * sizeof *q);    /* (d, d) row-major Q */
  double *v = malloc((size_t)d * sizeof *v);
  double *w = malloc((size_t)d * sizeof *w);
  double *rdiag = malloc((size_t)d * sizeof *rdiag);
  double *vs = malloc(n * sizeof *vs);  /* Householder vectors, (d, d): row k holds v_k */
  if (!a || !q || !v || !w || !rdiag || !vs) {
    free(a), free(q), free(v), free(w), free(rdiag), free(vs);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  for (size_t i = 0; i < n; i++) a[i] = tq_rng_gauss(rng);
  memset(vs, 0, n * sizeof *vs);

  /* Householder QR: H_k = I - 2 v v^T / (v^T v) zeroes column k below row k. */
  for (uint32_t k = 0; k < d; k++) {
    double norm2 = 0.0;
    for (uint32_t i = k; i < d; i++) norm2 += a[(size_t)i * d + k] * a[(size_t)i * d + k];
    double norm = sqrt(norm2);
    double x0 = a[(size_t)k * d + k];
    if (k == d - 1 || norm == 0.0) {
      rdiag[k] = x0;
      continue;
    }
    double alpha = x0 >= 0.0 ? -norm : norm;
    double *vk = vs + (size_t)k * d;
    for (uint32_t i = k; i < d; i++) vk[i] = a[(size_t)i * d + k];
    vk[k] = x0 - alpha;
    double vnorm2 = 0.0;
    for (uint32_t i = k; i < d; i++) vnorm2 += vk[i] * vk[i];
    if (vnorm2 == 0.0) {
      rdiag[k] = x0;
      continue;
    }
    double inv = 2.0 / vnorm2;
    /* a[k:, k:] -= v (inv * v^T a[k:, k:]) */
    for (uint32_t j = k; j < d; j++) w[j] = 0.0;
    for (uint32_t i = k; i < d; i++) {
      double vi = vk[i];
      const double *row = a + (size_t)i * d;
      for (uint32_t j = k; j < d; j++) w[j] += vi * row[j];
    }
    for (uint32_t j = k; j < d; j++) w[j] *= inv;
    for (uint32_t i = k; i < d; i++) {
      double vi = vk[i];
      double *row = a + (size_t)i * d;
      for (uint32_t j = k; j < d; j++) row[j] -= vi * w[j];
    }
    rdiag[k] = alpha;
  }

  /* Q = H_0 H_1 ... H_{d-2}: apply the reflectors to I from the last one. */
  memset(q, 0, n * sizeof *q);
  for (uint32_t i = 0; i < d; i++) q[(size_t)i * d + i] = 1.0;
  for (uint32_t kk = d; kk-- > 0;) {
    const double *vk = vs + (size_t)kk * d;
    double vnorm2 = 0.0;
    for (uint32_t i = kk; i < d; i++) vnorm2 += vk[i] * vk[i];
    if (vnorm2 == 0.0) continue;
    double inv = 2.0 / vnorm2;
    for (uint32_t j = kk; j < d; j++) w[j] = 0.0;
    for (uint32_t i = kk; i < d; i++) {
      double vi = vk[i];
      const double *row = q + (size_t)i * d;
      for (uint32_t j = kk; j < d; j++) w[j] += vi * row[j];
    }
    for (uint32_t j = kk; j < d; j++) w[j] *= inv;
    for (uint32_t i = kk; i < d; i++) {
      double vi = vk[i];
      double *row = q + (size_t)i * d;
      for (uint32_t j = kk; j < d; j++) row[j] -= vi * w[j];
    }
  }

  /* Sign fix, then store P = Q and P^T as float. */
  for (uint32_t i = 0; i < d; i++) {
    for (uint32_t j = 0; j < d; j++) {
      double qij = q[(size_t)i * d + j];
      if (rdiag[j] < 0.0) qij = -qij;
      p[(size_t)i * d + j] = (float)qij;
      pt[(size_t)j * d + i] = (float)qij;
    }
  }
  free(a), free(q), free(v), free(w), free(rdiag), free(vs);
  return TQ_OK;
}

tq_status tq_rotation_build(tq_rotation kind, uint32_t dim, uint64_t seed,
                            tq_rotation_data *out) {
  if (!out) return TQ_ERR_INVALID_ARGUMENT;
  memset(out, 0, sizeof *out);
  if (dim < TQ_MIN_DIM || dim > TQ_MAX_DIM) return TQ_ERR_UNSUPPORTED_DIM;
  tq_rng rng;
  tq_rng_seed(&rng, rotation_seed(kind, dim, seed));
  out->kind = kind;
  out->dim = dim;
  out->scale = 1.0f;
  if (kind == TQ_ROTATION_HAAR) {
    size_t bytes = (size_t)dim * dim * sizeof(float);
    out->p = tq_alloc_aligned(bytes);
    out->pt = tq_alloc_aligned(bytes);
    if (!out->p || !out->pt) {
      tq_rotation_release(out);
      return TQ_ERR_OUT_OF_MEMORY;
    }
    tq_status st = build_haar(dim, &rng, out->p, out->pt);
    if (st != TQ_OK) tq_rotation_release(out);
    return st;
  }
  if (kind == TQ_ROTATION_HADAMARD) {
    if (dim & (dim - 1)) return TQ_ERR_UNSUPPORTED_ROTATION;
    out->signs = tq_alloc_aligned((size_t)dim * sizeof(float));
    if (!out->signs) return TQ_ERR_OUT_OF_MEMORY;
    for (uint32_t j = 0; j < dim; j++) out->signs[j] = (tq_rng_next(&rng) >> 63) ? -1.0f : 1.0f;
    out->scale = (float)(1.0 / sqrt((double)dim));
    return TQ_OK;
  }
  return TQ_ERR_INVALID_ARGUMENT;
}

void tq_rotation_release(tq_rotation_data *rot) {
  if (!rot) return;
  free(rot->p);
  free(rot->pt);
  free(rot->signs);
  memset(rot, 0, sizeof *rot);
}
