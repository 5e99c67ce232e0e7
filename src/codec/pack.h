/* pack.h - bit packing without argument checks, for the codec's inner loop. */
#ifndef TQ_CODEC_PACK_H
#define TQ_CODEC_PACK_H

#include <stdint.h>

#include "tqai.h"

/* codes: (dim,) each < 2^bits; out: tq_packed_size(dim, bits) bytes. */
void tq_pack_unchecked(const uint8_t *codes, uint32_t dim, uint32_t bits, uint8_t *out);
void tq_unpack_unchecked(const uint8_t *packed, uint32_t dim, uint32_t bits, uint8_t *codes);

#endif
