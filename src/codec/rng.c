/* rng.c - portable seeded random numbers (see rng.h). */
#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void tq_rng_seed(tq_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
  r->spare = 0.0;
  r->has_spare = 0;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tq_rng_next(tq_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double tq_rng_uniform(tq_rng *r) {
  return (double)(tq_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* log(x) = e*ln2 + 2*atanh(s), s = (m-1)/(m+1), m in [sqrt(1/2), sqrt(2)).
 * frexp and ldexp are exact; the series has a fixed number of terms evaluated
 * in a fixed order, so the result depends only on IEEE arithmetic. */
double tq_log_portable(double x) {
  int e;
  double m = frexp(x, &e); /* x = m * 2^e, m in [0.5, 1) */
  if (m < 0.70710678118654752440) {
    m = m * 2.0;
    e -= 1;
  }
  double s = (m - 1.0) / (m + 1.0);
  double s2 = s * s;
  /* atanh(s)/s = sum s2^k / (2k+1); |s| <= 0.1716, 14 terms reach 1e-22. */
  double sum = 1.0 / 29.0;
  for (int k = 13; k >= 0; k--) sum = 1.0 / (double)(2 * k + 1) + s2 * sum;
  double logm = 2.0 * s * sum;
  const double ln2_hi = 6.93147180369123816490e-01; /* exact in 32 bits */
  const double ln2_lo = 1.90821492927058770002e-10;
  return (double)e * ln2_hi + ((double)e * ln2_lo + logm);
}

double tq_rng_gauss(tq_rng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  double u, v, s;
  do {
    u = 2.0 * tq_rng_uniform(r) - 1.0;
    v = 2.0 * tq_rng_uniform(r) - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  double f = sqrt(-2.0 * tq_log_portable(s) / s);
  r->spare = v * f;
  r->has_spare = 1;
  return u * f;
}
