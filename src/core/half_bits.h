/*
 * half_bits.h - float to IEEE h (f16) bits, round to nearest even, as one
 * static inline function that the host C code (tq_f32_to_f16 in h.c) and
 * the CUDA encoder (src/cuda/encode.cu) both compile, so that a norm stored
 * by either has the same bits. NaN handling matches x86 F16C: every NaN
 * comes out quiet and keeps the sign and the top 10 payload bits.
 */
#ifndef TQ_HALF_BITS_H
#define TQ_HALF_BITS_H

#include <stdint.h>

#ifdef __CUDACC__
#define TQ_HOST_DEVICE __host__ __device__
#else
#define TQ_HOST_DEVICE
#endif

/* The h bits of the float whose bits are u. */
TQ_HOST_DEVICE static inline uint16_t tq_half_from_f32_bits(uint32_t u) {
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t exp = (u >> 23) & 0xffu;
  uint32_t mant = u & 0x7fffffu;
  if (exp == 0xffu) {
    if (mant == 0) return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | 0x7e00u | (mant >> 13));
  }
  int32_t e = (int32_t)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    /* Subnormal half (or zero): shift the mantissa with its hidden bit. */
    if (e < -10) return sign;
    uint32_t m = mant | 0x800000u;
    uint32_t shift = (uint32_t)(14 - e);
    uint32_t h = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (h & 1u))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* may carry into inf */
  return (uint16_t)(sign | h);
}

#endif
