/*
 * rng.h - the project's portable random generator: xoshiro256** seeded by
 * splitmix64, with uniform and Gaussian variates computed only from integer
 * operations, IEEE-exact arithmetic (+ - * / sqrt) and a logarithm of our own,
 * so the same seed gives the same numbers on every machine and compiler.
 */
#ifndef TQ_CODEC_RNG_H
#define TQ_CODEC_RNG_H

#include <stdint.h>

typedef struct tq_rng {
  uint64_t s[4];
  double spare;    /* second variate of the last polar-method pair */
  int has_spare;
} tq_rng;

void tq_rng_seed(tq_rng *r, uint64_t seed);
uint64_t tq_rng_next(tq_rng *r);
/* Uniform in [0, 1), 53 random bits. */
double tq_rng_uniform(tq_rng *r);
/* Standard normal variate (Marsaglia's polar method). */
double tq_rng_gauss(tq_rng *r);
/* Natural logarithm of x > 0, finite; portable (see rng.c). */
double tq_log_portable(double x);

#endif
