/* test_pack.c - bit packing of codes: layout, round trips, errors. */
#include "test.h"
#include "tqai.h"

/* Round trip for every width and every dim 2..300 plus a few large ones,
 * with the exact size and zero padding bits. */
static void test_round_trip(void) {
  tq_test_rng rng = {42};
  static uint8_t codes[TQ_MAX_DIM], back[TQ_MAX_DIM], packed[TQ_MAX_DIM + 8];
  for (uint32_t b = 1; b <= 8; b++) {
    for (uint32_t d = 2; d <= 1100; d += (d < 300 ? 1 : 97)) {
      for (uint32_t j = 0; j < d; j++) codes[j] = (uint8_t)(tq_test_next(&rng) & ((1u << b) - 1u));
      size_t size = tq_packed_size(d, b);
      CHECKF(size == ((size_t)d * b + 7) / 8, "size d=%u b=%u", d, b);
      memset(packed, 0xA5, sizeof packed);
      CHECK_OK(tq_pack_codes(codes, d, b, packed));
      CHECKF(packed[size] == 0xA5, "wrote past the end at d=%u b=%u", d, b);
      uint32_t used = (uint32_t)((d * b) % 8);
      if (used) CHECKF((packed[size - 1] >> used) == 0, "padding bits not zero at d=%u b=%u", d, b);
      CHECK_OK(tq_unpack_codes(packed, d, b, back));
      CHECKF(memcmp(codes, back, d) == 0, "round trip d=%u b=%u", d, b);
    }
  }
  CHECK(tq_packed_size(TQ_MAX_DIM, 8) == TQ_MAX_DIM);
}

/* The documented layout: code j at stream bits j*b.., LSB first. */
static void test_layout(void) {
  uint8_t codes[8] = {0, 1, 2, 3, 4, 5, 6, 7}, out[3];
  CHECK_OK(tq_pack_codes(codes, 8, 3, out));
  /* bits: 000 100 010 110 001 101 011 111 (LSB first) = 0x88 0xC6 0xFA */
  CHECK(out[0] == 0x88 && out[1] == 0xC6 && out[2] == 0xFA);
  uint8_t c4[4] = {0x1, 0x2, 0xF, 0x0}, o4[2];
  CHECK_OK(tq_pack_codes(c4, 4, 4, o4));
  CHECK(o4[0] == 0x21 && o4[1] == 0x0F);
  uint8_t c2[4] = {3, 0, 1, 2}, o2[1];
  CHECK_OK(tq_pack_codes(c2, 4, 2, o2));
  CHECK(o2[0] == (3 | (0 << 2) | (1 << 4) | (2 << 6)));
  uint8_t c1[9] = {1, 0, 0, 0, 0, 0, 0, 1, 1}, o1[2];
  CHECK_OK(tq_pack_codes(c1, 9, 1, o1));
  CHECK(o1[0] == 0x81 && o1[1] == 0x01);
  uint8_t c7[2] = {0x7F, 0x01}, o7[2];
  CHECK_OK(tq_pack_codes(c7, 2, 7, o7));
  CHECK(o7[0] == 0xFF && o7[1] == 0x00);
}

static void test_errors(void) {
  uint8_t codes[16] = {0}, out[16];
  CHECK_STATUS(tq_pack_codes(NULL, 16, 4, out), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_pack_codes(codes, 16, 4, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_pack_codes(codes, 1, 4, out), TQ_ERR_UNSUPPORTED_DIM);
  CHECK_STATUS(tq_pack_codes(codes, 16, 0, out), TQ_ERR_UNSUPPORTED_BITS);
  CHECK_STATUS(tq_pack_codes(codes, 16, 9, out), TQ_ERR_UNSUPPORTED_BITS);
  codes[5] = 16;
  CHECK_STATUS(tq_pack_codes(codes, 16, 4, out), TQ_ERR_RANGE);
  CHECK_STATUS(tq_unpack_codes(NULL, 16, 4, codes), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_unpack_codes(out, 16, 4, NULL), TQ_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(tq_unpack_codes(out, TQ_MAX_DIM + 1, 4, codes), TQ_ERR_UNSUPPORTED_DIM);
  CHECK_STATUS(tq_unpack_codes(out, 16, 9, codes), TQ_ERR_UNSUPPORTED_BITS);
  CHECK(tq_packed_size(1, 4) == 0 && tq_packed_size(16, 0) == 0 && tq_packed_size(16, 9) == 0);
}

int main(void) {
  TQ_RUN(test_round_trip);
  TQ_RUN(test_layout);
  TQ_RUN(test_errors);
  return tq_test_summary("test_pack");
}
