/*
 * bench_matmul.c - speed of the engine's weight-times-activations products
 * (tq_matmul_at, src/engine/quant.h) for the shapes of SmolLM2-135M.
 *
 * Shapes (rows x cols = output x input): 576 x 576 (attention q / o) and
 * 1536 x 576 (MLP gate / up). The K-quants need cols divisible by 256, so
 * for them the 576 x 1536 MLP down projection stands in.
 * Types: f32, f16, q8_0, q4_0, q4_1, q4_K, q6_K. Batches: n_tok = 1 (decode:
 * the fused path) and 64 (prefill: the batched path). Every SIMD level this
 * machine runs, pools of 1 and 2 threads.
 *
 * Each measurement is the median over REPS repetitions of a run of calls
 * lasting at least MIN_SECONDS. Reported: microseconds per call, GFLOP/s
 * (2 rows cols n_tok per call), effective weight bandwidth (the matrix's
 * bytes once per call, GB/s) and the speed relative to f32 at the same
 * shape, level, batch and threads (f32 time / this time). The weights stay
 * in cache between calls (at most 3.5 MB here), so decode figures are an
 * upper bound for a model streaming its weights from memory.
 *
 * Usage: bench_matmul [--quick]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/quant.h"
#include "tqai.h"
#include "tqai_engine.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int reps = 11;
static double min_seconds = 0.02;

static const tq_simd_level levels[] = {TQ_SIMD_SCALAR, TQ_SIMD_AVX2, TQ_SIMD_AVX512};
static const tq_tensor_type types[] = {TQ_TENSOR_F32,  TQ_TENSOR_F16,  TQ_TENSOR_Q8_0,
                                       TQ_TENSOR_Q4_0, TQ_TENSOR_Q4_1, TQ_TENSOR_Q4_K,
                                       TQ_TENSOR_Q6_K};
static const struct {
  size_t rows, cols;
} shapes[] = {{576, 576}, {1536, 576}, {576, 1536}};
static const uint32_t toks[] = {1, 64};
static const uint32_t threads[] = {1, 2};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void *xmalloc(size_t size) {
  void *p = malloc(size);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static uint64_t rng_state = 0x9e3779b9u;
static uint64_t next_u64(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static float uniform(void) { return (float)(next_u64() >> 40) * (1.0f / 16777216.0f); }
static float gauss(void) {
  float u1 = uniform() + 1e-7f, u2 = uniform();
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* A (rows, cols) weight matrix: quantized from Gaussian values where the
 * library quantizes the type, otherwise random quants with sane fp16 scales
 * (speed does not depend on the values). */
static uint8_t *make_weights(tq_tensor_type type, size_t rows, size_t cols) {
  size_t bytes = rows * (size_t)tq_tensor_row_bytes(type, cols);
  uint8_t *w = xmalloc(bytes);
  if (type == TQ_TENSOR_Q4_K || type == TQ_TENSOR_Q6_K) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)(next_u64() >> 56);
    size_t bb = tq_tensor_type_block_bytes(type);
    for (size_t i = 0; i < bytes / bb; i++) {
      if (type == TQ_TENSOR_Q4_K) {
        put16(w + i * bb, tq_f32_to_f16(0.002f));
        put16(w + i * bb + 2, tq_f32_to_f16(0.001f));
      } else {
        put16(w + i * bb + 208, tq_f32_to_f16(0.0002f));
      }
    }
    return w;
  }
  float *f = xmalloc(rows * cols * sizeof *f);
  for (size_t i = 0; i < rows * cols; i++) f[i] = 0.05f * gauss();
  if (tq_tensor_from_float(type, f, w, rows * cols) != TQ_OK) {
    fprintf(stderr, "cannot quantize %s\n", tq_tensor_type_name(type));
    exit(2);
  }
  free(f);
  return w;
}

/* Median seconds per call. */
static double time_call(tq_simd_level level, tq_tensor_type type, const uint8_t *w, size_t rows,
                        size_t cols, const float *x, uint32_t n_tok, float *y, tq_pool *pool) {
  /* Calibrate the number of calls per repetition. */
  size_t calls = 1;
  for (;;) {
    double t0 = now_seconds();
    for (size_t i = 0; i < calls; i++)
      if (tq_matmul_at(level, type, w, rows, cols, x, n_tok, y, pool) != TQ_OK) {
        fprintf(stderr, "tq_matmul_at failed\n");
        exit(2);
      }
    double dt = now_seconds() - t0;
    if (dt >= min_seconds || calls >= ((size_t)1 << 24)) break;
    calls *= dt > 0 ? (size_t)fmin(16.0, fmax(2.0, 1.2 * min_seconds / dt)) : 16;
  }
  double *t = xmalloc((size_t)reps * sizeof *t);
  for (int r = 0; r < reps; r++) {
    double t0 = now_seconds();
    for (size_t i = 0; i < calls; i++) tq_matmul_at(level, type, w, rows, cols, x, n_tok, y, pool);
    t[r] = (now_seconds() - t0) / (double)calls;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  double med = t[reps / 2];
  free(t);
  return med;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
    reps = 3;
    min_seconds = 0.005;
  }
  tq_pool *pools[COUNT(threads)];
  for (size_t i = 0; i < COUNT(threads); i++) {
    if (tq_pool_create(threads[i], &pools[i]) != TQ_OK) {
      fprintf(stderr, "cannot create a pool\n");
      return 2;
    }
  }
  printf("bench_matmul: y = W x, SmolLM2-135M shapes; median of %d; weights cache-resident\n", reps);
  printf("%-10s %-5s %-6s %5s %3s %10s %9s %9s %7s\n", "shape", "type", "level", "n_tok", "thr",
         "us/call", "GFLOP/s", "W GB/s", "vs f32");
  for (size_t si = 0; si < COUNT(shapes); si++) {
    size_t rows = shapes[si].rows, cols = shapes[si].cols;
    uint8_t *w[COUNT(types)];
    for (size_t ti = 0; ti < COUNT(types); ti++)
      w[ti] = tq_tensor_row_bytes(types[ti], cols) ? make_weights(types[ti], rows, cols) : NULL;
    float *x = xmalloc(64 * cols * sizeof *x), *y = xmalloc(64 * rows * sizeof *y);
    for (size_t i = 0; i < 64 * cols; i++) x[i] = gauss();
    char shape[32];
    snprintf(shape, sizeof shape, "%zux%zu", rows, cols);
    for (size_t li = 0; li < COUNT(levels); li++) {
      if (!tq_simd_supported(levels[li])) continue;
      for (size_t ni = 0; ni < COUNT(toks); ni++) {
        for (size_t pi = 0; pi < COUNT(threads); pi++) {
          double t_f32 = 0.0;
          for (size_t ti = 0; ti < COUNT(types); ti++) {
            if (!w[ti]) continue;
            double t = time_call(levels[li], types[ti], w[ti], rows, cols, x, toks[ni], y, pools[pi]);
            if (types[ti] == TQ_TENSOR_F32) t_f32 = t;
            double flop = 2.0 * (double)rows * (double)cols * toks[ni];
            double wbytes = (double)rows * (double)tq_tensor_row_bytes(types[ti], cols);
            printf("%-10s %-5s %-6s %5u %3u %10.2f %9.2f %9.2f %7.2f\n", shape,
                   tq_tensor_type_name(types[ti]), tq_simd_name(levels[li]), toks[ni], threads[pi],
                   t * 1e6, flop / t * 1e-9, wbytes / t * 1e-9, t_f32 > 0 ? t_f32 / t : 0.0);
            fflush(stdout);
          }
        }
      }
    }
    for (size_t ti = 0; ti < COUNT(types); ti++) free(w[ti]);
    free(x);
    free(y);
  }
  for (size_t i = 0; i < COUNT(threads); i++) tq_pool_free(pools[i]);
  return 0;
}
