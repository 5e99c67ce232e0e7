/*
 * bench_attention.c - decode attention (one new query token) for one
 * Llama-3-8B-shaped layer: 32 query heads, 8 KV heads, head size 128, at
 * contexts 1k, 4k, 16k, 32k and 128k. The baseline is the fp16 cache mode
 * (F16C conversion, FMA, the same threads and the same driver); each
 * compressed configuration is reported as a speed-up against it, from the
 * same run. Times are medians of REPS calls.
 *
 * Usage: bench_attention [--quick] [--threads N] [--max-context N]
 *   --quick: contexts 1k and 4k only, fewer repetitions.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tqai.h"

#define N_Q_HEADS 32
#define N_KV_HEADS 8
#define HEAD_DIM 128
#define FILL_STEP 1024 /* tokens appended per call while filling */

typedef struct config {
  const char *name;
  tq_cache_mode mode;
  float kb, vb;
} config;

static const config configs[] = {
    {"fp16", TQ_CACHE_F16, 16, 16}, {"K8/V8", TQ_CACHE_TURBOQUANT, 8, 8},
    {"K4/V4", TQ_CACHE_TURBOQUANT, 4, 4}, {"K4/V2", TQ_CACHE_TURBOQUANT, 4, 2},
    {"K3/V2", TQ_CACHE_TURBOQUANT, 3, 2},
};
#define N_CONFIGS (sizeof configs / sizeof configs[0])

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* splitmix64 + Box-Muller. */
static void gauss_fill(uint64_t seed, float *x, size_t n) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i += 2) {
    double u[2];
    for (int k = 0; k < 2; k++) {
      uint64_t z = (s += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      u[k] = ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    }
    double r = sqrt(-2.0 * log(u[0]));
    x[i] = (float)(r * cos(6.283185307179586 * u[1]));
    if (i + 1 < n) x[i + 1] = (float)(r * sin(6.283185307179586 * u[1]));
  }
}

static int fail(const char *what, tq_status st) {
  fprintf(stderr, "bench_attention: %s: %s\n", what, tq_status_message(st));
  return 1;
}

int main(int argc, char **argv) {
  int quick = 0;
  uint32_t threads = 0, max_context = 131072;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--max-context") && i + 1 < argc) max_context = (uint32_t)strtoul(argv[++i], NULL, 10);
    else {
      fprintf(stderr, "usage: bench_attention [--quick] [--threads N] [--max-context N]\n");
      return 2;
    }
  }
  static const uint32_t all_contexts[] = {1024, 4096, 16384, 32768, 131072};
  uint32_t n_ctx = 0, contexts[5];
  for (int i = 0; i < 5; i++)
    if (all_contexts[i] <= max_context && (!quick || all_contexts[i] <= 4096)) contexts[n_ctx++] = all_contexts[i];
  if (n_ctx == 0) return fail("no context", TQ_ERR_INVALID_ARGUMENT);
  const int reps = quick ? 5 : 9;
  tq_pool *pool = NULL;
  tq_status st = tq_pool_create(threads, &pool);
  if (st != TQ_OK) return fail("pool", st);

  size_t step_n = (size_t)FILL_STEP * N_KV_HEADS * HEAD_DIM;
  float *k = malloc(step_n * sizeof *k), *v = malloc(step_n * sizeof *v);
  float *q = malloc((size_t)N_Q_HEADS * HEAD_DIM * sizeof *q);
  float *out = malloc((size_t)N_Q_HEADS * HEAD_DIM * sizeof *out);
  if (!k || !v || !q || !out) return fail("memory", TQ_ERR_OUT_OF_MEMORY);
  gauss_fill(1, k, step_n);
  gauss_fill(2, v, step_n);
  gauss_fill(3, q, (size_t)N_Q_HEADS * HEAD_DIM);

  double ms[N_CONFIGS][5];
  size_t bytes[N_CONFIGS][5];
  for (size_t c = 0; c < N_CONFIGS; c++) {
    tq_cache_params p = tq_cache_params_default(1, N_KV_HEADS, HEAD_DIM);
    p.mode = configs[c].mode;
    p.max_tokens = contexts[n_ctx - 1];
    if (p.mode == TQ_CACHE_TURBOQUANT) p.key_bits = configs[c].kb, p.value_bits = configs[c].vb;
    tq_cache *cache = NULL;
    if ((st = tq_cache_create(&p, &cache)) != TQ_OK) return fail("cache", st);
    uint32_t have = 0;
    for (uint32_t ci = 0; ci < n_ctx; ci++) {
      fprintf(stderr, "\r%-6s context %6u: filling", configs[c].name, contexts[ci]);
      while (have < contexts[ci]) {
        if ((st = tq_cache_append(cache, 0, k, v, FILL_STEP)) != TQ_OK) return fail("append", st);
        have += FILL_STEP;
      }
      double t[32];
      float scale = 1.0f / sqrtf((float)HEAD_DIM);
      tq_cache_attention(cache, 0, q, 1, N_Q_HEADS, scale, out, pool); /* warm-up */
      for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        if ((st = tq_cache_attention(cache, 0, q, 1, N_Q_HEADS, scale, out, pool)) != TQ_OK)
          return fail("attention", st);
        t[r] = now_seconds() - t0;
      }
      qsort(t, (size_t)reps, sizeof t[0], cmp_double);
      ms[c][ci] = t[reps / 2] * 1e3;
      bytes[c][ci] = tq_cache_bytes(cache);
    }
    tq_cache_free(cache);
  }
  fprintf(stderr, "\r%40s\r", "");

  printf("decode attention, one layer: %d query heads, %d KV heads, head size %d, %u threads, "
         "SIMD %s; median of %d calls\n\n",
         N_Q_HEADS, N_KV_HEADS, HEAD_DIM, tq_pool_size(pool), tq_simd_name(tq_simd_default()), reps);
  printf("%-8s", "context");
  for (size_t c = 0; c < N_CONFIGS; c++) printf(" %12s", configs[c].name);
  printf("\n");
  for (uint32_t ci = 0; ci < n_ctx; ci++) {
    printf("%-8u", contexts[ci]);
    for (size_t c = 0; c < N_CONFIGS; c++) printf(" %9.3f ms", ms[c][ci]);
    printf("\n%-8s", "  speed-up");
    for (size_t c = 0; c < N_CONFIGS; c++) printf(" %11.2fx", ms[0][ci] / ms[c][ci]);
    printf("\n%-8s", "  MiB");
    for (size_t c = 0; c < N_CONFIGS; c++) printf(" %12.1f", (double)bytes[c][ci] / (1 << 20));
    printf("\n");
  }
  printf("\nspeed-up = fp16-cache time / this configuration's time, same run, same threads.\n");
  tq_pool_free(pool);
  free(k), free(v), free(q), free(out);
  return 0;
}
