/*
 * bench_attn_kernels.c - speed of the attention inner loops (attn_kernels.h)
 * at every SIMD level this machine supports.
 *
 * Shape: Llama-3-8B decode, head size 128, G = 4 query heads per KV head.
 *
 * 1. Chunk kernels (in cache): one chunk of n = 256 tokens, each kernel
 *    called repeatedly on the same data; the median of REPS timings, in ns
 *    per token (one token = one KV head's key or value for the G heads).
 *    "K+V" is score_codes + accum_codes at the given key / value widths,
 *    against score_f16 + accum_f16 at the same level.
 * 2. Streaming (beyond the private caches): attention of the G heads over
 *    32768 tokens of 8 KV heads (fp16: 128 MiB of keys and values; K4/V2:
 *    25 MiB), by chunks of 256: scores, exp_sum on each head's scores,
 *    accumulation. Every pass reads the same buffers again, so where the
 *    last-level cache is larger than a configuration's data (the codes'
 *    25 MiB on many servers) that configuration runs from it rather than
 *    from memory; bench_attention's cold figures flush the caches first.
 *    One thread, then (if the machine has more than one CPU) the KV heads
 *    spread over up to 8 threads: fp16 is bound by memory bandwidth, the
 *    codes by arithmetic, so the ratio depends on the thread count.
 *
 * Usage: bench_attn_kernels [--quick]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attn/attn_kernels.h"
#include "tqai.h"

#define D 128
#define G 4
#define CHUNK 256
#define REPS 15
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int quick = 0;

static const tq_simd_level levels[] = {TQ_SIMD_SCALAR, TQ_SIMD_AVX2, TQ_SIMD_AVX512};
static const uint32_t kv_bits[][2] = {{4, 2}, {3, 2}, {4, 4}, {2, 2}, {3, 3}, {8, 8}};

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

static uint64_t rng_state = 0x1234567u;
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

static void *xmalloc(size_t size) {
  void *p = malloc(size);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static size_t record_size(uint32_t bits) { return 2 + ((size_t)D * bits + 7) / 8; }

/* n records of random codes and norms, TQ_ATTN_PAD bytes of slack. */
static uint8_t *make_records(size_t n, uint32_t bits) {
  size_t rs = record_size(bits);
  uint8_t *r = xmalloc(n * rs + TQ_ATTN_PAD);
  for (size_t i = 0; i < n * rs + TQ_ATTN_PAD; i++) r[i] = (uint8_t)next_u64();
  for (size_t t = 0; t < n; t++) {
    uint16_t h = tq_f32_to_f16(0.5f + uniform());
    memcpy(r + t * rs, &h, 2);
  }
  return r;
}

static uint16_t *make_f16(size_t count) {
  uint16_t *x = xmalloc(count * sizeof *x);
  for (size_t i = 0; i < count; i++) x[i] = tq_f32_to_f16(gauss());
  return x;
}

/* ------------------------------------------------------------------------ */
/* Chunk kernels                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
  const tq_attn_kernels *k;
  const float *q, *w, *ck, *cv;
  const uint8_t *krec, *vrec;
  const uint16_t *kf, *vf;
  uint32_t kbits, vbits;
  float *scores, *acc;
} chunk_data;

enum { OP_SCORE_CODES, OP_ACCUM_CODES, OP_SCORE_F16, OP_ACCUM_F16, OP_EXP };

static void run_op(const chunk_data *c, int op) {
  switch (op) {
    case OP_SCORE_CODES:
      c->k->score_codes(c->q, G, D, c->krec, record_size(c->kbits), CHUNK, c->kbits, c->ck,
                        c->scores);
      break;
    case OP_ACCUM_CODES:
      c->k->accum_codes(c->w, G, D, c->vrec, record_size(c->vbits), CHUNK, c->vbits, c->cv,
                        c->acc);
      break;
    case OP_SCORE_F16: c->k->score_f16(c->q, G, D, c->kf, D, CHUNK, c->scores); break;
    case OP_ACCUM_F16: c->k->accum_f16(c->w, G, D, c->vf, D, CHUNK, c->acc); break;
    default: {
      /* exp_sum over the G rows of a chunk's scores (copied fresh: it
       * works in place). */
      for (uint32_t g = 0; g < G; g++) {
        memcpy(c->scores + g * CHUNK, c->w + g * CHUNK, CHUNK * sizeof(float));
        c->k->exp_sum(c->scores + g * CHUNK, CHUNK, 0.0f);
      }
    }
  }
}

/* Median ns per token of `op` on the chunk. */
static double time_op(const chunk_data *c, int op) {
  int inner = c->k->level == TQ_SIMD_SCALAR ? 4 : 64;
  if (quick) inner /= 4;
  double t[REPS];
  run_op(c, op); /* warm up */
  for (int r = 0; r < REPS; r++) {
    double t0 = now_seconds();
    for (int i = 0; i < inner; i++) run_op(c, op);
    t[r] = (now_seconds() - t0) / inner;
  }
  return median(t, REPS) * 1e9 / CHUNK;
}

static void bench_chunks(void) {
  printf("Chunk kernels, in cache: d=%d, G=%d, n=%d; median ns per token (per KV head, all G "
         "query heads)\n",
         D, G, CHUNK);
  printf("%-7s %-6s %10s %10s %10s %8s %8s %8s\n", "level", "K/V", "score", "accum", "K+V",
         "f16 K+V", "ratio", "exp/tok");
  float *q = xmalloc(G * D * sizeof *q), *w = xmalloc(G * CHUNK * sizeof *w);
  float *scores = xmalloc(G * CHUNK * sizeof *scores), *acc = xmalloc(G * D * sizeof *acc);
  for (int i = 0; i < G * D; i++) q[i] = gauss();
  for (int i = 0; i < G * CHUNK; i++) w[i] = -20.0f * uniform();
  memset(acc, 0, G * D * sizeof *acc);
  uint16_t *kf = make_f16((size_t)CHUNK * D), *vf = make_f16((size_t)CHUNK * D);
  for (size_t li = 0; li < COUNT(levels); li++) {
    if (!tq_simd_supported(levels[li])) {
      printf("%-7s (not supported here)\n", tq_simd_name(levels[li]));
      continue;
    }
    chunk_data c = {0};
    c.k = tq_attn_kernels_get(levels[li]);
    c.q = q;
    c.w = w;
    c.kf = kf;
    c.vf = vf;
    c.scores = scores;
    c.acc = acc;
    double sf = time_op(&c, OP_SCORE_F16), af = time_op(&c, OP_ACCUM_F16);
    double ex = time_op(&c, OP_EXP);
    printf("%-7s %-6s %10.2f %10.2f %10.2f %8s %8s %8.2f\n", tq_simd_name(levels[li]), "f16", sf,
           af, sf + af, "", "1.00", ex);
    for (size_t b = 0; b < COUNT(kv_bits); b++) {
      float ck[256], cv[256];
      c.kbits = kv_bits[b][0];
      c.vbits = kv_bits[b][1];
      for (uint32_t e = 0; e < (1u << c.kbits); e++) ck[e] = gauss() * 0.09f;
      for (uint32_t e = 0; e < (1u << c.vbits); e++) cv[e] = gauss() * 0.09f;
      c.ck = ck;
      c.cv = cv;
      uint8_t *kr = make_records(CHUNK, c.kbits), *vr = make_records(CHUNK, c.vbits);
      c.krec = kr;
      c.vrec = vr;
      double s = time_op(&c, OP_SCORE_CODES), a = time_op(&c, OP_ACCUM_CODES);
      char name[16];
      snprintf(name, sizeof name, "K%u/V%u", c.kbits, c.vbits);
      printf("%-7s %-6s %10.2f %10.2f %10.2f %8.2f %8.2f\n", tq_simd_name(levels[li]), name, s, a,
             s + a, sf + af, (sf + af) / (s + a));
      free(kr);
      free(vr);
    }
  }
  printf("(ratio = f16 K+V time / codes K+V time: above 1 means the codes are faster)\n\n");
  free(q);
  free(w);
  free(scores);
  free(acc);
  free(kf);
  free(vf);
}

/* ------------------------------------------------------------------------ */
/* Streaming                                                                 */
/* ------------------------------------------------------------------------ */

#define KV_HEADS 8
#define CONTEXT 32768

/* One decode step's attention over the whole context for the KV heads
 * h = first, first + step, ...: chunks of 256, scores, exp_sum per head row
 * (against a fixed maximum; a real softmax rescales, which costs the same),
 * accumulation. */
typedef struct {
  const tq_attn_kernels *k;
  int f16;
  const uint8_t *krec, *vrec;
  uint32_t kb, vb;
  const uint16_t *kf, *vf;
  const float *q, *ck, *cv;
  uint32_t first, step;
} stream_job;

static void *attend(void *arg) {
  const stream_job *j = arg;
  const tq_attn_kernels *k = j->k;
  float scores[G * CHUNK], acc[G * D];
  memset(acc, 0, sizeof acc);
  size_t ks = record_size(j->kb), vs = record_size(j->vb);
  for (uint32_t h = j->first; h < KV_HEADS; h += j->step) {
    for (uint32_t t0 = 0; t0 < CONTEXT; t0 += CHUNK) {
      size_t tok = (size_t)h * CONTEXT + t0;
      if (j->f16) k->score_f16(j->q, G, D, j->kf + tok * D, D, CHUNK, scores);
      else k->score_codes(j->q, G, D, j->krec + tok * ks, ks, CHUNK, j->kb, j->ck, scores);
      for (uint32_t g = 0; g < G; g++) k->exp_sum(scores + g * CHUNK, CHUNK, 50.0f);
      if (j->f16) k->accum_f16(scores, G, D, j->vf + tok * D, D, CHUNK, acc);
      else k->accum_codes(scores, G, D, j->vrec + tok * vs, vs, CHUNK, j->vb, j->cv, acc);
    }
  }
  return NULL;
}

/* Seconds for one decode step over all KV heads with `threads` threads. */
static double time_step(stream_job job, uint32_t threads) {
  pthread_t tid[KV_HEADS];
  stream_job jobs[KV_HEADS];
  double t0 = now_seconds();
  for (uint32_t i = 0; i < threads; i++) {
    jobs[i] = job;
    jobs[i].first = i;
    jobs[i].step = threads;
    if (i + 1 < threads) {
      if (pthread_create(&tid[i], NULL, attend, &jobs[i]) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        exit(2);
      }
    }
  }
  attend(&jobs[threads - 1]);
  for (uint32_t i = 0; i + 1 < threads; i++) pthread_join(tid[i], NULL);
  return now_seconds() - t0;
}

static void bench_stream(void) {
  const size_t tokens = (size_t)KV_HEADS * CONTEXT;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  uint32_t many = cpus > KV_HEADS ? KV_HEADS : cpus < 1 ? 1 : (uint32_t)cpus;
  printf("Streaming: one decode step over %d tokens x %d KV heads, G=%d, d=%d, chunks of %d; "
         "median ms (ns per token per KV head)\n",
         CONTEXT, KV_HEADS, G, D, CHUNK);
  uint16_t *kf = make_f16(tokens * D), *vf = make_f16(tokens * D);
  float q[G * D], ck[16], cv[16];
  for (int i = 0; i < G * D; i++) q[i] = gauss() * 0.1f;
  for (int e = 0; e < 16; e++) ck[e] = cv[e] = gauss() * 0.09f;
  static const uint32_t stream_bits[][2] = {{4, 2}, {3, 2}, {4, 4}};
  uint8_t *krec[3], *vrec[3];
  for (int b = 0; b < 3; b++) {
    krec[b] = make_records(tokens, stream_bits[b][0]);
    vrec[b] = make_records(tokens, stream_bits[b][1]);
  }
  int reps = quick ? 3 : 7;
  for (size_t li = 1; li < COUNT(levels); li++) {
    if (!tq_simd_supported(levels[li])) continue;
    for (uint32_t threads = 1; threads <= many; threads = threads == 1 && many > 1 ? many : many + 1) {
      stream_job job = {0};
      job.k = tq_attn_kernels_get(levels[li]);
      job.q = q;
      job.ck = ck;
      job.cv = cv;
      job.kf = kf;
      job.vf = vf;
      double t[16], f16_ms = 0;
      for (int b = -1; b < 3; b++) {
        job.f16 = b < 0;
        if (b >= 0) {
          job.krec = krec[b];
          job.vrec = vrec[b];
          job.kb = stream_bits[b][0];
          job.vb = stream_bits[b][1];
        }
        for (int r = 0; r < reps; r++) t[r] = time_step(job, threads);
        double ms = median(t, (size_t)reps) * 1e3;
        char name[16];
        if (b < 0) snprintf(name, sizeof name, "f16");
        else snprintf(name, sizeof name, "K%u/V%u", stream_bits[b][0], stream_bits[b][1]);
        printf("%-7s %u thr %-6s %8.2f ms (%6.2f ns/token)", tq_simd_name(levels[li]), threads,
               name, ms, ms * 1e6 / (double)tokens * threads);
        if (b < 0) {
          f16_ms = ms;
          printf("\n");
        } else {
          printf("  %.2fx faster than f16\n", f16_ms / ms);
        }
      }
    }
  }
  printf("(ns/token: per token per KV head per thread)\n");
  for (int b = 0; b < 3; b++) {
    free(krec[b]);
    free(vrec[b]);
  }
  free(kf);
  free(vf);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) quick = 1;
    else {
      fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  bench_chunks();
  bench_stream();
  return 0;
}
