/*
 * half.c - IEEE half (f16) and bfloat16 conversions, round to nearest even.
 * NaN handling matches x86 F16C / AVX-512 BF16 so that every SIMD level gives
 * the same bits: every NaN comes out quiet; f32 -> f16 keeps the sign and the
 * top 10 payload bits, f32 -> bf16 the top 16 bits.
 */
#include <string.h>

#include "core/half_bits.h"
#include "tqai.h"

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

uint16_t tq_f32_to_f16(float x) { return tq_half_from_f32_bits(f32_bits(x)); }

float tq_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  /* NaN comes back quiet (bit 22 set), as F16C does. */
  if (exp == 0x1fu) return bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    /* Subnormal: normalize. */
    int32_t e = -14;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      e--;
    }
    mant &= 0x3ffu;
    return bits_f32(sign | ((uint32_t)(e + 127) << 23) | (mant << 13));
  }
  return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

uint16_t tq_f32_to_bf16(float x) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)((u + rounding) >> 16);
}

float tq_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }
