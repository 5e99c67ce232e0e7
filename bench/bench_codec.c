/*
 * bench_codec.c - encode and decode throughput of the codec, one thread, for
 * head sizes 64 and 128, bits 2, 3, 4 and 8, both rotations, at every SIMD
 * level this machine supports (forced through tq_codec_params.simd).
 *
 * Each time is the median of REPS repetitions over the same N vectors and is
 * reported against two baselines measured in the same run on the same number
 * of vectors: copying them as fp16 (memcpy of N * d uint16_t) and converting
 * them from fp16 to f32 with a tq_f16_to_f32 loop. A ratio is codec time /
 * baseline time: 1.0 means as fast as the baseline, 10 ten times slower.
 *
 * Usage: bench_codec [--quick]   (--quick: fewer vectors, a few seconds)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tqai.h"

#define REPS 7           /* timed repetitions of every codec measurement */
#define BASELINE_REPS 31 /* the baselines are short: more repetitions */
#define N_FULL 8192      /* vectors per repetition */
#define N_QUICK 1024
#define MAX_DIM 128

static const uint32_t dims[] = {64, 128};
static const uint32_t bit_widths[] = {2, 3, 4, 8};
static const tq_rotation rotations[] = {TQ_ROTATION_HAAR, TQ_ROTATION_HADAMARD};
static const tq_simd_level levels[] = {TQ_SIMD_SCALAR, TQ_SIMD_AVX2, TQ_SIMD_AVX512};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static volatile float sink; /* keeps the baselines' results alive */

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
  qsort(v, n, sizeof v[0], cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* splitmix64 + Box-Muller: x (count) filled with N(0, 1) draws. */
static void gauss_fill(uint64_t seed, float *x, size_t count) {
  const double two_pi = 6.283185307179586476925286766559;
  uint64_t s = seed;
  for (size_t i = 0; i < count; i += 2) {
    uint64_t r[2];
    double u1, u2, radius;
    for (int k = 0; k < 2; k++) {
      uint64_t z = (s += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      r[k] = z ^ (z >> 31);
    }
    u1 = (double)((r[0] >> 11) + 1) * 0x1.0p-53;
    u2 = (double)(r[1] >> 11) * 0x1.0p-53;
    radius = sqrt(-2.0 * log(u1));
    x[i] = (float)(radius * cos(two_pi * u2));
    if (i + 1 < count) x[i + 1] = (float)(radius * sin(two_pi * u2));
  }
}

typedef struct baseline {
  double memcpy_s; /* median seconds to memcpy n * d fp16 values */
  double cvt_s;    /* median seconds to convert them to f32, tq_f16_to_f32 each */
} baseline;

/* h: (n * d) fp16 source; h2: (n * d) fp16 destination; f: (n * d) floats. */
static baseline measure_baseline(const uint16_t *h, uint16_t *h2, float *f, size_t count) {
  double t_copy[BASELINE_REPS], t_cvt[BASELINE_REPS];
  baseline b;
  for (int r = 0; r <= BASELINE_REPS; r++) { /* r == 0: warm-up */
    double t = now_seconds();
    memcpy(h2, h, count * sizeof *h);
    if (r > 0) t_copy[r - 1] = now_seconds() - t;
    sink += (float)h2[(size_t)r % count];
    t = now_seconds();
    for (size_t i = 0; i < count; i++) f[i] = tq_f16_to_f32(h[i]);
    if (r > 0) t_cvt[r - 1] = now_seconds() - t;
    sink += f[(size_t)r % count];
  }
  b.memcpy_s = median(t_copy, BASELINE_REPS);
  b.cvt_s = median(t_cvt, BASELINE_REPS);
  return b;
}

/* Encode and decode n vectors x (n, d) REPS times after one warm-up; stores
 * the median seconds of each. records: n * record size bytes; y: (n, d). */
static tq_status measure_codec(const tq_codec *codec, const float *x, size_t n, void *records,
                               float *y, double *enc_s, double *dec_s) {
  double te[REPS], td[REPS];
  size_t bytes = n * tq_codec_record_size(codec);
  tq_status st = TQ_OK;
  for (int r = 0; r <= REPS && st == TQ_OK; r++) {
    double t = now_seconds();
    st = tq_codec_encode_f32(codec, x, n, records, bytes);
    if (r > 0) te[r - 1] = now_seconds() - t;
    if (st != TQ_OK) break;
    t = now_seconds();
    st = tq_codec_decode_f32(codec, records, bytes, n, y);
    if (r > 0) td[r - 1] = now_seconds() - t;
  }
  if (st != TQ_OK) return st;
  *enc_s = median(te, REPS);
  *dec_s = median(td, REPS);
  return TQ_OK;
}

int main(int argc, char **argv) {
  int quick = 0;
  size_t n;
  float *x = NULL, *y = NULL, *f = NULL;
  uint16_t *h = NULL, *h2 = NULL;
  void *records = NULL;
  baseline base[COUNT(dims)];
  double t_start = now_seconds();
  int rc = 0;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      quick = 1;
    } else {
      fprintf(stderr, "bench_codec: unknown argument '%s'\nusage: bench_codec [--quick]\n",
              argv[i]);
      return 2;
    }
  }
  n = quick ? N_QUICK : N_FULL;

  x = malloc(n * MAX_DIM * sizeof *x);
  y = malloc(n * MAX_DIM * sizeof *y);
  f = malloc(n * MAX_DIM * sizeof *f);
  h = malloc(n * MAX_DIM * sizeof *h);
  h2 = malloc(n * MAX_DIM * sizeof *h2);
  /* the largest record: 4-byte norm + MAX_DIM bytes of 8-bit codes */
  records = malloc(n * (4 + MAX_DIM));
  if (!x || !y || !f || !h || !h2 || !records) {
    fprintf(stderr, "bench_codec: out of memory\n");
    rc = 1;
    goto done;
  }
  gauss_fill(1, x, n * MAX_DIM);
  for (size_t i = 0; i < n * MAX_DIM; i++) h[i] = tq_f32_to_f16(x[i]);

  printf("bench_codec: libtqai %s; %s\n", tq_version_string(), tq_build_info());
  printf("%zu Gaussian vectors per repetition, median of %d repetitions, one thread%s\n\n",
         n, REPS, quick ? " (--quick)" : "");

  for (size_t di = 0; di < COUNT(dims); di++)
    base[di] = measure_baseline(h, h2, f, n * dims[di]);

  printf("%-7s %-9s %4s %4s %10s %10s %11s %11s %11s %11s\n", "level", "rotation", "d",
         "bits", "enc Mvec/s", "dec Mvec/s", "enc/memcpy", "dec/memcpy", "enc/f16cvt",
         "dec/f16cvt");
  for (size_t li = 0; li < COUNT(levels); li++) {
    if (!tq_simd_supported(levels[li])) {
      printf("%-7s (not supported here: skipped)\n", tq_simd_name(levels[li]));
      continue;
    }
    for (size_t ri = 0; ri < COUNT(rotations); ri++) {
      for (size_t di = 0; di < COUNT(dims); di++) {
        for (size_t bi = 0; bi < COUNT(bit_widths); bi++) {
          tq_codec_params p = tq_codec_params_default(dims[di], bit_widths[bi]);
          tq_codec *codec = NULL;
          double enc_s = 0.0, dec_s = 0.0;
          tq_status st;
          p.rotation = rotations[ri];
          p.simd = levels[li];
          st = tq_codec_create(&p, &codec);
          if (st == TQ_OK) st = measure_codec(codec, x, n, records, y, &enc_s, &dec_s);
          tq_codec_free(codec);
          if (st != TQ_OK) {
            fprintf(stderr, "bench_codec: %s %s d=%u bits=%u: %s (%s)\n",
                    tq_simd_name(levels[li]),
                    rotations[ri] == TQ_ROTATION_HAAR ? "haar" : "hadamard",
                    (unsigned)dims[di], (unsigned)bit_widths[bi], tq_status_message(st),
                    tq_status_name(st));
            rc = 1;
            goto done;
          }
          printf("%-7s %-9s %4u %4u %10.3f %10.3f %11.2f %11.2f %11.2f %11.2f\n",
                 tq_simd_name(levels[li]),
                 rotations[ri] == TQ_ROTATION_HAAR ? "haar" : "hadamard", (unsigned)dims[di],
                 (unsigned)bit_widths[bi], (double)n / enc_s * 1e-6,
                 (double)n / dec_s * 1e-6, enc_s / base[di].memcpy_s,
                 dec_s / base[di].memcpy_s, enc_s / base[di].cvt_s, dec_s / base[di].cvt_s);
          fflush(stdout);
        }
      }
    }
  }

  printf("\nbaselines (same run, same %zu vectors, median of %d):\n", n, BASELINE_REPS);
  for (size_t di = 0; di < COUNT(dims); di++) {
    double bytes = (double)n * dims[di] * 2.0;
    printf("  d=%-4u memcpy of fp16: %9.1f us (%6.2f GB/s, %8.2f Mvec/s); "
           "fp16->f32 via tq_f16_to_f32: %9.1f us (%8.2f Mvec/s)\n",
           (unsigned)dims[di], base[di].memcpy_s * 1e6, bytes / base[di].memcpy_s * 1e-9,
           (double)n / base[di].memcpy_s * 1e-6, base[di].cvt_s * 1e6,
           (double)n / base[di].cvt_s * 1e-6);
  }
  printf("ratios are codec time / baseline time for the same number of vectors "
         "(enc/memcpy: against memcpy of fp16; enc/f16cvt: against the fp16->f32 loop)\n");
  printf("total time %.1f s\n", now_seconds() - t_start);

done:
  free(x);
  free(y);
  free(f);
  free(h);
  free(h2);
  free(records);
  return rc;
}
