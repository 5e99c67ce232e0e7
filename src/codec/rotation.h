/*
 * rotation.h - the codec's random orthogonal transform P, built once per codec
 * from its seed. Applying it is the kernels' job (kernels.h).
 */
#ifndef TQ_CODEC_ROTATION_H
#define TQ_CODEC_ROTATION_H

#include <stdint.h>

#include "tqai.h"

typedef struct tq_rotation_data {
  tq_rotation kind;
  uint32_t dim;
  float *p;     /* Haar: (dim, dim) row-major P; NULL for Hadamard */
  float *pt;    /* Haar: (dim, dim) row-major P^T; NULL for Hadamard */
  float *signs; /* Hadamard: (dim,) of +-1.0f; NULL for Haar */
  float scale;  /* Hadamard: 1/sqrt(dim) in float; 1 for Haar */
} tq_rotation_data;

/* Builds the rotation for (kind, dim, seed) into *out (its arrays allocated
 * here, owned by *out until tq_rotation_release). Bit-identical output on any
 * IEEE-754 machine. Returns TQ_OK, TQ_ERR_UNSUPPORTED_DIM,
 * TQ_ERR_UNSUPPORTED_ROTATION, TQ_ERR_INVALID_ARGUMENT or
 * TQ_ERR_OUT_OF_MEMORY; on failure *out holds nothing to release. */
tq_status tq_rotation_build(tq_rotation kind, uint32_t dim, uint64_t seed,
                            tq_rotation_data *out);

/* Frees the arrays of a rotation built by tq_rotation_build and zeroes it. */
void tq_rotation_release(tq_rotation_data *rot);

/* Allocates `bytes` rounded up to 64 with 64-byte alignment; NULL on failure
 * or size overflow. Free with free(). */
void *tq_alloc_aligned(size_t bytes);

#endif
