/*
 * pack.c - codes packed at exactly `bits` bits each into a little-endian bit
 * stream (docs/FORMAT.md). Byte-aligned widths (1, 2, 4, 8) take direct
 * paths; the others go through a 64-bit accumulator.
 */
#include <string.h>

#include "pack.h"

size_t tq_packed_size(uint32_t dim, uint32_t bits) {
  if (dim < TQ_MIN_DIM || dim > TQ_MAX_DIM || bits < TQ_MIN_BITS || bits > TQ_MAX_BITS) return 0;
  return ((size_t)dim * bits + 7) / 8;
}

void tq_pack_unchecked(const uint8_t *codes, uint32_t dim, uint32_t bits, uint8_t *out) {
  size_t nbytes = ((size_t)dim * bits + 7) / 8;
  if (bits == 8) {
    memcpy(out, codes, dim);
    return;
  }
  if (bits == 4 || bits == 2 || bits == 1) {
    uint32_t per = 8 / bits;
    memset(out, 0, nbytes);
    for (uint32_t j = 0; j < dim; j++) out[j / per] |= (uint8_t)(codes[j] << ((j % per) * bits));
    return;
  }
  uint64_t acc = 0;
  uint32_t nacc = 0;
  size_t o = 0;
  for (uint32_t j = 0; j < dim; j++) {
    acc |= (uint64_t)codes[j] << nacc;
    nacc += bits;
    while (nacc >= 8) {
      out[o++] = (uint8_t)acc;
      acc >>= 8;
      nacc -= 8;
    }
  }
  if (nacc) out[o++] = (uint8_t)acc;
}

void tq_unpack_unchecked(const uint8_t *packed, uint32_t dim, uint32_t bits, uint8_t *codes) {
  if (bits == 8) {
    memcpy(codes, packed, dim);
    return;
  }
  uint8_t mask = (uint8_t)((1u << bits) - 1u);
  if (bits == 4 || bits == 2 || bits == 1) {
    uint32_t per = 8 / bits;
    for (uint32_t j = 0; j < dim; j++)
      codes[j] = (uint8_t)((packed[j / per] >> ((j % per) * bits)) & mask);
    return;
  }
  uint64_t acc = 0;
  uint32_t nacc = 0;
  size_t i = 0;
  for (uint32_t j = 0; j < dim; j++) {
    while (nacc < bits) {
      acc |= (uint64_t)packed[i++] << nacc;
      nacc += 8;
    }
    codes[j] = (uint8_t)(acc & mask);
    acc >>= bits;
    nacc -= bits;
  }
}

tq_status tq_pack_codes(const uint8_t *codes, uint32_t dim, uint32_t bits, uint8_t *out) {
  if (!codes || !out) return TQ_ERR_INVALID_ARGUMENT;
  if (dim < TQ_MIN_DIM || dim > TQ_MAX_DIM) return TQ_ERR_UNSUPPORTED_DIM;
  if (bits < TQ_MIN_BITS || bits > TQ_MAX_BITS) return TQ_ERR_UNSUPPORTED_BITS;
  for (uint32_t j = 0; j < dim; j++)
    if (codes[j] >> bits) return TQ_ERR_RANGE;
  tq_pack_unchecked(codes, dim, bits, out);
  return TQ_OK;
}

tq_status tq_unpack_codes(const uint8_t *packed, uint32_t dim, uint32_t bits, uint8_t *codes) {
  if (!packed || !codes) return TQ_ERR_INVALID_ARGUMENT;
  if (dim < TQ_MIN_DIM || dim > TQ_MAX_DIM) return TQ_ERR_UNSUPPORTED_DIM;
  if (bits < TQ_MIN_BITS || bits > TQ_MAX_BITS) return TQ_ERR_UNSUPPORTED_BITS;
  tq_unpack_unchecked(packed, dim, bits, codes);
  return TQ_OK;
}
