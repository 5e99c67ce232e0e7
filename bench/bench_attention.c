/*
 * bench_attention.c - decode attention (one new query token) for one
 * Llama-3-8B-shaped layer: 32 query heads, 8 KV heads, head size 128, at
 * contexts 1k, 4k, 16k, 32k and 128k. The baseline is the fp16 cache mode
 * (F16C conversion, FMA, the same threads and the same driver); each
 * compressed configuration is reported as a speed-up against it, from the
 * same run. The configurations are timed in turn within each repetition, so
 * a change in the machine's load affects all of them alike. Times are
 * medians of the repetitions.
 *
 * Two measurements per context:
 * - cold: before each timed call, a buffer larger than the processor's
 *   caches (--flush-mib, default 1024) is read and written, so the layer's
 *   keys and values come from main memory. This is what decode in a whole
 *   model sees: between one layer's attention for token t and the same
 *   layer's attention for token t + 1, every other layer's cache and all
 *   the weights pass through the caches.
 * - hot: the same call repeated at once, so whatever of the layer fits in
 *   the caches is still there (on processors with very large last-level
 *   caches the whole fp16 layer can be, up to about 32k tokens).
 *
 * Usage: bench_attention [--quick] [--threads N] [--max-context N]
 *                        [--reps N] [--flush-mib N] [--block N]
 *   --quick: contexts 1k and 4k only, fewer repetitions.
 *   --block: tokens per cache block (default: the library's, 256), for
 *            every configuration.
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
#define MAX_REPS 64

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
#define N_CONTEXTS 5

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof v[0], cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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

/* Reads and writes every cache line of buf, so that what was cached before
 * is evicted; returns a value that depends on the contents so the loop is
 * not optimized away. */
static volatile unsigned long flush_sink;
static void flush_caches(unsigned char *buf, size_t n) {
  unsigned long s = 0;
  for (size_t i = 0; i < n; i += 64) {
    s += buf[i];
    buf[i] = (unsigned char)(s + 1);
  }
  flush_sink += s;
}

static int fail(const char *what, tq_status st) {
  fprintf(stderr, "bench_attention: %s: %s\n", what, tq_status_message(st));
  return 1;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out) {
  char *end = NULL;
  unsigned long v = strtoul(s, &end, 10);
  if (!s[0] || *end || v < lo || v > hi) return -1;
  *out = (uint32_t)v;
  return 0;
}

int main(int argc, char **argv) {
  int quick = 0;
  uint32_t threads = 0, max_context = 131072, reps = 0, flush_mib = 1024, block = 0;
  for (int i = 1; i < argc; i++) {
    int bad = 0;
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) bad = parse_u32(argv[++i], 0, 1024, &threads);
    else if (!strcmp(argv[i], "--max-context") && i + 1 < argc) bad = parse_u32(argv[++i], 1, 1u << 20, &max_context);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) bad = parse_u32(argv[++i], 1, MAX_REPS, &reps);
    else if (!strcmp(argv[i], "--flush-mib") && i + 1 < argc) bad = parse_u32(argv[++i], 0, 1u << 16, &flush_mib);
    else if (!strcmp(argv[i], "--block") && i + 1 < argc) bad = parse_u32(argv[++i], 16, 65536, &block);
    else bad = 1;
    if (bad) {
      fprintf(stderr, "usage: bench_attention [--quick] [--threads N] [--max-context N] [--reps N (1-%d)] "
                      "[--flush-mib N] [--block N]\n", MAX_REPS);
      return 2;
    }
  }
  static const uint32_t all_contexts[N_CONTEXTS] = {1024, 4096, 16384, 32768, 131072};
  uint32_t n_ctx = 0, contexts[N_CONTEXTS];
  for (int i = 0; i < N_CONTEXTS; i++)
    if (all_contexts[i] <= max_context && (!quick || all_contexts[i] <= 4096)) contexts[n_ctx++] = all_contexts[i];
  if (n_ctx == 0) return fail("no context", TQ_ERR_INVALID_ARGUMENT);
  if (!reps) reps = quick ? 5 : 11;
  tq_pool *pool = NULL;
  tq_status st = tq_pool_create(threads, &pool);
  if (st != TQ_OK) return fail("pool", st);

  size_t step_n = (size_t)FILL_STEP * N_KV_HEADS * HEAD_DIM;
  size_t flush_n = (size_t)flush_mib << 20;
  float *k = malloc(step_n * sizeof *k), *v = malloc(step_n * sizeof *v);
  float *q = malloc((size_t)N_Q_HEADS * HEAD_DIM * sizeof *q);
  float *out = malloc((size_t)N_Q_HEADS * HEAD_DIM * sizeof *out);
  unsigned char *flush = flush_n ? malloc(flush_n) : NULL;
  if (!k || !v || !q || !out || (flush_n && !flush)) return fail("memory", TQ_ERR_OUT_OF_MEMORY);
  if (flush) memset(flush, 1, flush_n);
  gauss_fill(1, k, step_n);
  gauss_fill(2, v, step_n);
  gauss_fill(3, q, (size_t)N_Q_HEADS * HEAD_DIM);

  tq_cache *cache[N_CONFIGS] = {0};
  for (size_t c = 0; c < N_CONFIGS; c++) {
    tq_cache_params p = tq_cache_params_default(1, N_KV_HEADS, HEAD_DIM);
    p.mode = configs[c].mode;
    p.max_tokens = contexts[n_ctx - 1];
    if (block) p.block_tokens = block;
    if (p.mode == TQ_CACHE_TURBOQUANT) p.key_bits = configs[c].kb, p.value_bits = configs[c].vb;
    if ((st = tq_cache_create(&p, &cache[c])) != TQ_OK) return fail("cache", st);
  }

  static double cold[N_CONFIGS][N_CONTEXTS], hot[N_CONFIGS][N_CONTEXTS];
  size_t bytes[N_CONFIGS][N_CONTEXTS];
  const float scale = 1.0f / sqrtf((float)HEAD_DIM);
  uint32_t have = 0;
  for (uint32_t ci = 0; ci < n_ctx; ci++) {
    fprintf(stderr, "\rcontext %6u: filling     ", contexts[ci]);
    for (; have < contexts[ci]; have += FILL_STEP)
      for (size_t c = 0; c < N_CONFIGS; c++)
        if ((st = tq_cache_append(cache[c], 0, k, v, FILL_STEP)) != TQ_OK) return fail("append", st);
    fprintf(stderr, "\rcontext %6u: timing      ", contexts[ci]);
    double tc[N_CONFIGS][MAX_REPS], th[N_CONFIGS][MAX_REPS];
    for (size_t c = 0; c < N_CONFIGS; c++) /* warm-up: page faults, pool start */
      if ((st = tq_cache_attention(cache[c], 0, q, 1, N_Q_HEADS, scale, out, pool)) != TQ_OK)
        return fail("attention", st);
    for (uint32_t r = 0; r < reps; r++) {
      for (size_t c = 0; c < N_CONFIGS; c++) {
        if (flush) flush_caches(flush, flush_n);
        double t0 = now_seconds();
        st = tq_cache_attention(cache[c], 0, q, 1, N_Q_HEADS, scale, out, pool);
        double t1 = now_seconds();
        st = st != TQ_OK ? st : tq_cache_attention(cache[c], 0, q, 1, N_Q_HEADS, scale, out, pool);
        double t2 = now_seconds();
        if (st != TQ_OK) return fail("attention", st);
        tc[c][r] = t1 - t0;
        th[c][r] = t2 - t1;
      }
    }
    for (size_t c = 0; c < N_CONFIGS; c++) {
      cold[c][ci] = median(tc[c], (int)reps) * 1e3;
      hot[c][ci] = median(th[c], (int)reps) * 1e3;
      bytes[c][ci] = tq_cache_bytes(cache[c]);
    }
  }
  fprintf(stderr, "\r%40s\r", "");

  printf("decode attention, one layer: %d query heads, %d KV heads, head size %d, %u threads, "
         "SIMD %s, blocks of %u tokens; median of %u repetitions\n",
         N_Q_HEADS, N_KV_HEADS, HEAD_DIM, tq_pool_size(pool), tq_simd_name(tq_simd_default()),
         block ? block : tq_cache_params_default(1, 1, HEAD_DIM).block_tokens, reps);
  printf("cold: %u MiB of other data passed through the caches before each call; "
         "hot: the call repeated at once\n\n", flush_mib);
  for (int pass = 0; pass < 2; pass++) {
    double (*t)[N_CONTEXTS] = pass == 0 ? cold : hot;
    if (pass == 0 && !flush) continue;
    printf("%s\n%-10s", pass == 0 ? "cold" : "hot", "context");
    for (size_t c = 0; c < N_CONFIGS; c++) printf(" %12s", configs[c].name);
    printf("\n");
    for (uint32_t ci = 0; ci < n_ctx; ci++) {
      printf("%-10u", contexts[ci]);
      for (size_t c = 0; c < N_CONFIGS; c++) printf(" %9.3f ms", t[c][ci]);
      printf("\n%-10s", "  speed-up");
      for (size_t c = 0; c < N_CONFIGS; c++) printf(" %11.2fx", t[0][ci] / t[c][ci]);
      printf("\n");
    }
    printf("\n");
  }
  printf("%-10s", "MiB");
  for (size_t c = 0; c < N_CONFIGS; c++) printf(" %12s", configs[c].name);
  printf("\n");
  for (uint32_t ci = 0; ci < n_ctx; ci++) {
    printf("%-10u", contexts[ci]);
    for (size_t c = 0; c < N_CONFIGS; c++) printf(" %12.1f", (double)bytes[c][ci] / (1 << 20));
    printf("\n");
  }
  printf("\nspeed-up = fp16-cache time / this configuration's time, same run, same threads.\n");
  for (size_t c = 0; c < N_CONFIGS; c++) tq_cache_free(cache[c]);
  tq_pool_free(pool);
  free(k), free(v), free(q), free(out), free(flush);
  return 0;
}
