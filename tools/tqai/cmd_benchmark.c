/*
 * cmd_benchmark.c - "tqai benchmark": quality and speed of a key codec and a
 * value codec on random Gaussian vectors N(0, I_dim).
 *
 * Quality: every vector is encoded and decoded (in chunks, so memory stays
 * modest) and compared with the original: NMSE = sum ||x - x_hat||^2 /
 * sum ||x||^2, SNR, per-vector cosine (mean, 5th percentile, min), next to
 * the Lloyd-Max distortion the solver predicts and the paper's bounds.
 * Speed: encode and decode timed apart, median of TIMING_PASSES passes over
 * the first min(n, TIMING_MAX_VECTORS) vectors, one thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "tqai.h"

static const char PROG[] = "tqai benchmark";

#define MAX_N_VECTORS 100000000ull /* the per-vector cosines are kept: 8 bytes each */
#define CHUNK_FLOATS (1u << 20)    /* floats per chunk of the quality pass (4 MiB) */
#define CHUNK_MAX_VECTORS 4096u
#define TIMING_PASSES 5
#define TIMING_MAX_VECTORS 16384u
#define TIMING_MAX_FLOATS (1u << 22) /* caps the timing set for large head sizes */
#define PROGRESS_MIN_N 200000u

static const char *const rotation_names[] = {"haar", "hadamard"};
static const char *const codebook_names[] = {"exact", "gaussian"};
static const char *const norm_names[] = {"f16", "f32"};
static const char *const simd_names[] = {"auto", "scalar", "avx2", "avx512"};

typedef struct bench_options {
  uint32_t dim;
  uint32_t bits_k, bits_v;
  uint64_t n;          /* vectors in the quality pass */
  uint64_t seed;       /* seeds the data */
  uint64_t codec_seed; /* rotation seed of both codecs, if have_codec_seed */
  int have_codec_seed;
  int rotation, codebook, norm, simd; /* indices into the *_names tables */
  int json, quiet;
} bench_options;

typedef struct codec_stats {
  const char *name;       /* "key" or "value" (JSON) */
  tq_codec *codec;
  tq_codec_params params; /* as in use: simd resolved */
  size_t record_size;     /* bytes per encoded vector */
  /* sums over all vectors, in double */
  double err2;            /* sum ||x - x_hat||^2 */
  double sig2;            /* sum ||x||^2 */
  double cos_sum;
  double cos_min;
  float *cos;             /* (n) cosine of every vector with its decoding */
  /* results */
  double nmse, snr_db, cos_mean, cos_p5;
  double lloyd_max;       /* solver's E||u - Q(u)||^2 for (dim, bits, codebook) */
  double lower, upper;    /* paper's bounds at these bits */
  double encode_vps, decode_vps; /* vectors per second, medians */
} codec_stats;

void cmd_benchmark_usage(FILE *out) {
  fprintf(out,
          "Usage: tqai benchmark [OPTIONS]\n"
          "\n"
          "Encodes and decodes random Gaussian vectors N(0, 1) with a key codec and a\n"
          "value codec, and reports for each: NMSE = sum ||x - x_hat||^2 / sum ||x||^2\n"
          "next to the Lloyd-Max distortion from the codebook solver and the paper's\n"
          "bounds, SNR, per-vector cosine similarity (mean, 5th percentile, min),\n"
          "bytes per vector, and encode/decode throughput (one thread, median of %d\n"
          "passes over the first min(n, %u) vectors); then bytes per token per KV head\n"
          "against fp16 and the compression ratio.\n"
          "\n"
          "Options:\n"
          "  --bits-k N          key bits per coordinate, %u..%u (default 4)\n"
          "  --bits-v N          value bits per coordinate, %u..%u (default 2)\n"
          "  --head-dim D        head size, %u..%u (default 128)\n"
          "  --n-vectors N       vectors to encode, 1..%llu (default 100000)\n"
          "  --seed S            seed of the random data (default 1)\n"
          "  --codec-seed S      rotation seed of both codecs (default: the library's\n"
          "                      key and value seeds, 0x%llx and 0x%llx)\n"
          "  --rotation R        haar or hadamard (default haar; hadamard needs a\n"
          "                      power-of-two head size)\n"
          "  --codebook C        exact or gaussian (default exact)\n"
          "  --norm F            f16 or f32: how the norm is stored (default f16)\n"
          "  --simd L            auto, scalar, avx2 or avx512 (default auto)\n"
          "  --json              print one JSON object instead of a table\n"
          "  --quiet             no progress on stderr (shown only on a terminal, for\n"
          "                      more than %u vectors)\n"
          "  -h, --help          show this help and exit\n"
          "\n"
          "Seeds are decimal or hex with 0x. With --codebook gaussian the solver's\n"
          "distortion is that of N(0, 1/dim), not of the exact coordinate law.\n",
          TIMING_PASSES, TIMING_MAX_VECTORS, (unsigned)TQ_MIN_BITS, (unsigned)TQ_MAX_BITS,
          (unsigned)TQ_MIN_BITS, (unsigned)TQ_MAX_BITS, (unsigned)TQ_MIN_DIM,
          (unsigned)TQ_MAX_DIM, MAX_N_VECTORS, (unsigned long long)TQ_DEFAULT_KEY_SEED,
          (unsigned long long)TQ_DEFAULT_VALUE_SEED, PROGRESS_MIN_N);
}

/* ------------------------------------------------------------------------ */
/* Data: splitmix64 + Box-Muller                                             */
/* ------------------------------------------------------------------------ */

typedef struct gauss_rng {
  uint64_t state;
  int have_spare;
  double spare;
} gauss_rng;

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double gauss_next(gauss_rng *r) {
  const double two_pi = 6.283185307179586476925286766559;
  double u1, u2, radius;
  if (r->have_spare) {
    r->have_spare = 0;
    return r->spare;
  }
  u1 = (double)((splitmix64(&r->state) >> 11) + 1) * 0x1.0p-53; /* (0, 1]: log finite */
  u2 = (double)(splitmix64(&r->state) >> 11) * 0x1.0p-53;       /* [0, 1) */
  radius = sqrt(-2.0 * log(u1));
  r->spare = radius * sin(two_pi * u2);
  r->have_spare = 1;
  return radius * cos(two_pi * u2);
}

/* x: (count) floats, filled with N(0, 1) draws. */
static void gauss_fill(gauss_rng *r, float *x, size_t count) {
  for (size_t i = 0; i < count; i++) x[i] = (float)gauss_next(r);
}

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */
/* ------------------------------------------------------------------------ */

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

/* Reorders a[0..n-1] so that a[k] is the k-th smallest, everything before it
 * <= a[k] and everything after it >= a[k]; returns a[k]. No NaN in a. */
static float select_kth(float *a, size_t n, size_t k) {
  ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, kk = (ptrdiff_t)k;
  while (lo < hi) {
    float p0 = a[lo], p1 = a[lo + (hi - lo) / 2], p2 = a[hi], pivot;
    ptrdiff_t i = lo, j = hi;
    /* median of three */
    if ((p0 <= p1 && p1 <= p2) || (p2 <= p1 && p1 <= p0))
      pivot = p1;
    else if ((p1 <= p0 && p0 <= p2) || (p2 <= p0 && p0 <= p1))
      pivot = p0;
    else
      pivot = p2;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        float t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    /* now a[lo..j] <= pivot, a[i..hi] >= pivot, a[j+1..i-1] == pivot */
    if (kk <= j)
      hi = j;
    else if (kk >= i)
      lo = i;
    else
      break;
  }
  return a[k];
}

/* The q-quantile (0 <= q <= 1) of a[0..n-1], linear between order statistics
 * (numpy's default). Reorders a. */
static double quantile(float *a, size_t n, double q) {
  double pos = q * (double)(n - 1);
  size_t k = (size_t)pos;
  double frac = pos - (double)k, lo, hi;
  lo = select_kth(a, n, k);
  if (frac == 0.0 || k + 1 >= n) return lo;
  hi = a[k + 1];
  for (size_t i = k + 2; i < n; i++)
    if (a[i] < hi) hi = a[i];
  return lo + frac * (hi - lo);
}

/* Adds m vectors (x original, y decoded; each (m, dim)) to the sums of s;
 * their cosines go to s->cos[first .. first + m - 1]. */
static void accumulate(codec_stats *s, const float *x, const float *y, size_t m,
                       uint32_t dim, size_t first) {
  for (size_t v = 0; v < m; v++) {
    const float *a = x + v * dim, *b = y + v * dim;
    double xx = 0.0, yy = 0.0, xy = 0.0, ee = 0.0, c;
    for (uint32_t j = 0; j < dim; j++) {
      double p = a[j], q = b[j], e = p - q;
      xx += p * p;
      yy += q * q;
      xy += p * q;
      ee += e * e;
    }
    s->err2 += ee;
    s->sig2 += xx;
    if (xx > 0.0 && yy > 0.0)
      c = xy / sqrt(xx * yy);
    else
      c = (xx == 0.0 && yy == 0.0) ? 1.0 : 0.0;
    s->cos[first + v] = (float)c;
    s->cos_sum += c;
    if (c < s->cos_min) s->cos_min = c;
  }
}

/* Times encode and decode of m vectors x (m, dim) apart: one warm-up, then
 * TIMING_PASSES passes each; stores the median throughputs in s.
 * records: m * s->record_size bytes; y: (m, dim) floats. */
static tq_status time_codec(codec_stats *s, const float *x, size_t m, void *records,
                            float *y) {
  double enc[TIMING_PASSES], dec[TIMING_PASSES], t;
  size_t bytes = m * s->record_size;
  tq_status st;

  st = tq_codec_encode_f32(s->codec, x, m, records, bytes);
  if (st == TQ_OK) st = tq_codec_decode_f32(s->codec, records, bytes, m, y);
  for (int r = 0; st == TQ_OK && r < TIMING_PASSES; r++) {
    t = now_seconds();
    st = tq_codec_encode_f32(s->codec, x, m, records, bytes);
    enc[r] = now_seconds() - t;
    if (st != TQ_OK) break;
    t = now_seconds();
    st = tq_codec_decode_f32(s->codec, records, bytes, m, y);
    dec[r] = now_seconds() - t;
  }
  if (st != TQ_OK) return st;
  t = median(enc, TIMING_PASSES);
  s->encode_vps = (double)m / (t > 0.0 ? t : 1e-9);
  t = median(dec, TIMING_PASSES);
  s->decode_vps = (double)m / (t > 0.0 ? t : 1e-9);
  return TQ_OK;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct bench_result {
  const bench_options *opt;
  codec_stats *k, *v;
  size_t timing_vectors;
  size_t bytes_per_token; /* K record + V record */
  size_t fp16_bytes;      /* 2 * dim * 2 */
  double compression;
} bench_result;

/* One table row of two numbers, each "%.*g" (conv 'g') or "%.*f" (conv 'f');
 * a value that is not finite prints as "-". */
static void format_num(char *buf, size_t size, double x, int prec, char conv) {
  if (!isfinite(x))
    snprintf(buf, size, "-");
  else if (conv == 'g')
    snprintf(buf, size, "%.*g", prec, x);
  else
    snprintf(buf, size, "%.*f", prec, x);
}

static void row_num(const char *label, double k, double v, int prec, char conv) {
  char a[32], b[32];
  format_num(a, sizeof a, k, prec, conv);
  format_num(b, sizeof b, v, prec, conv);
  printf("  %-28s%16s%16s\n", label, a, b);
}

static void print_text(const bench_result *r) {
  const bench_options *o = r->opt;
  const codec_stats *k = r->k, *v = r->v;
  char a[32], b[32];

  printf("tqai benchmark: %llu Gaussian vectors N(0, 1), head dim %u, data seed %llu\n",
         (unsigned long long)o->n, (unsigned)o->dim, (unsigned long long)o->seed);
  printf("codecs: rotation %s, codebook %s, norm %s, simd %s%s\n\n",
         rotation_names[o->rotation], codebook_names[o->codebook], norm_names[o->norm],
         tq_simd_name(k->params.simd), o->simd == 0 ? " (auto)" : "");

  printf("  %-28s%16s%16s\n", "", "K (key)", "V (value)");
  snprintf(a, sizeof a, "%u", (unsigned)k->params.bits);
  snprintf(b, sizeof b, "%u", (unsigned)v->params.bits);
  printf("  %-28s%16s%16s\n", "bits per coordinate", a, b);
  snprintf(a, sizeof a, "0x%llx", (unsigned long long)k->params.seed);
  snprintf(b, sizeof b, "0x%llx", (unsigned long long)v->params.seed);
  printf("  %-28s%16s%16s\n", "rotation seed", a, b);
  row_num("NMSE", k->nmse, v->nmse, 6, 'g');
  row_num("Lloyd-Max D(b) (solver)", k->lloyd_max, v->lloyd_max, 6, 'g');
  row_num("NMSE / Lloyd-Max", k->nmse / k->lloyd_max, v->nmse / v->lloyd_max, 4, 'f');
  row_num("paper lower bound 4^-b", k->lower, v->lower, 6, 'g');
  row_num("paper upper bound", k->upper, v->upper, 6, 'g');
  row_num("SNR (dB)", k->snr_db, v->snr_db, 3, 'f');
  row_num("cosine mean", k->cos_mean, v->cos_mean, 6, 'f');
  row_num("cosine 5th percentile", k->cos_p5, v->cos_p5, 6, 'f');
  row_num("cosine min", k->cos_min, v->cos_min, 6, 'f');
  snprintf(a, sizeof a, "%zu", k->record_size);
  snprintf(b, sizeof b, "%zu", v->record_size);
  printf("  %-28s%16s%16s\n", "bytes per vector", a, b);
  row_num("encode (Mvec/s)", k->encode_vps * 1e-6, v->encode_vps * 1e-6, 4, 'g');
  row_num("decode (Mvec/s)", k->decode_vps * 1e-6, v->decode_vps * 1e-6, 4, 'g');

  printf("\n  %-28s%zu (K %zu + V %zu)\n", "bytes per token per KV head", r->bytes_per_token,
         k->record_size, v->record_size);
  printf("  %-28s%zu (2 x %u x 2 bytes)\n", "fp16 bytes per token", r->fp16_bytes,
         (unsigned)o->dim);
  printf("  %-28s%.2fx\n", "compression", r->compression);
  printf("\nthroughput: one thread, median of %d passes over %zu vectors\n", TIMING_PASSES,
         r->timing_vectors);
}

static void json_codec(const codec_stats *s) {
  printf("  \"%s\": {\n", s->name);
  printf("    \"bits\": %u,\n", (unsigned)s->params.bits);
  printf("    \"seed\": %llu,\n", (unsigned long long)s->params.seed);
  printf("    \"nmse\": ");
  cli_json_double(stdout, s->nmse);
  printf(",\n    \"snr_db\": ");
  cli_json_double(stdout, s->snr_db);
  printf(",\n    \"lloyd_max_distortion\": ");
  cli_json_double(stdout, s->lloyd_max);
  printf(",\n    \"nmse_over_lloyd_max\": ");
  cli_json_double(stdout, s->nmse / s->lloyd_max);
  printf(",\n    \"distortion_lower_bound\": ");
  cli_json_double(stdout, s->lower);
  printf(",\n    \"distortion_upper_bound\": ");
  cli_json_double(stdout, s->upper);
  printf(",\n    \"cosine_mean\": ");
  cli_json_double(stdout, s->cos_mean);
  printf(",\n    \"cosine_p5\": ");
  cli_json_double(stdout, s->cos_p5);
  printf(",\n    \"cosine_min\": ");
  cli_json_double(stdout, s->cos_min);
  printf(",\n    \"record_bytes\": %zu,\n", s->record_size);
  printf("    \"encode_vectors_per_s\": ");
  cli_json_double(stdout, s->encode_vps);
  printf(",\n    \"decode_vectors_per_s\": ");
  cli_json_double(stdout, s->decode_vps);
  printf("\n  },\n");
}

static void print_json(const bench_result *r) {
  const bench_options *o = r->opt;
  printf("{\n  \"tool\": \"tqai benchmark\",\n  \"version\": ");
  cli_json_string(stdout, tq_version_string());
  printf(",\n  \"params\": {\n");
  printf("    \"head_dim\": %u,\n", (unsigned)o->dim);
  printf("    \"n_vectors\": %llu,\n", (unsigned long long)o->n);
  printf("    \"seed\": %llu,\n", (unsigned long long)o->seed);
  printf("    \"rotation\": \"%s\",\n", rotation_names[o->rotation]);
  printf("    \"codebook\": \"%s\",\n", codebook_names[o->codebook]);
  printf("    \"norm\": \"%s\",\n", norm_names[o->norm]);
  printf("    \"simd_requested\": \"%s\",\n", simd_names[o->simd]);
  printf("    \"simd\": \"%s\",\n", tq_simd_name(r->k->params.simd));
  printf("    \"timing_vectors\": %zu,\n", r->timing_vectors);
  printf("    \"timing_passes\": %d,\n", TIMING_PASSES);
  printf("    \"threads\": 1\n  },\n");
  json_codec(r->k);
  json_codec(r->v);
  printf("  \"bytes_per_token_per_kv_head\": %zu,\n", r->bytes_per_token);
  printf("  \"fp16_bytes_per_token_per_kv_head\": %zu,\n", r->fp16_bytes);
  printf("  \"compression_ratio\": ");
  cli_json_double(stdout, r->compression);
  printf("\n}\n");
}

/* ------------------------------------------------------------------------ */
/* The command                                                               */
/* ------------------------------------------------------------------------ */

static int parse_options(int argc, char **argv, bench_options *o, int *help) {
  args_parser p;
  *help = 0;
  memset(o, 0, sizeof *o);
  o->dim = 128;
  o->bits_k = 4;
  o->bits_v = 2;
  o->n = 100000;
  o->seed = 1;

  args_init(&p, PROG, argc, argv);
  while (args_next(&p)) {
    if (args_flag(&p, "--help") || args_flag(&p, "-h")) {
      if (!p.failed) {
        *help = 1;
        return TQ_CLI_OK;
      }
    } else if (args_flag(&p, "--json")) {
      o->json = 1;
    } else if (args_flag(&p, "--quiet")) {
      o->quiet = 1;
    } else if (args_option(&p, "--bits-k")) {
      args_u32(&p, TQ_MIN_BITS, TQ_MAX_BITS, &o->bits_k);
    } else if (args_option(&p, "--bits-v")) {
      args_u32(&p, TQ_MIN_BITS, TQ_MAX_BITS, &o->bits_v);
    } else if (args_option(&p, "--head-dim")) {
      args_u32(&p, TQ_MIN_DIM, TQ_MAX_DIM, &o->dim);
    } else if (args_option(&p, "--n-vectors")) {
      args_u64(&p, 1, MAX_N_VECTORS, &o->n);
    } else if (args_option(&p, "--seed")) {
      args_seed(&p, &o->seed);
    } else if (args_option(&p, "--codec-seed")) {
      args_seed(&p, &o->codec_seed);
      o->have_codec_seed = 1;
    } else if (args_option(&p, "--rotation")) {
      args_choice(&p, rotation_names, 2, &o->rotation);
    } else if (args_option(&p, "--codebook")) {
      args_choice(&p, codebook_names, 2, &o->codebook);
    } else if (args_option(&p, "--norm")) {
      args_choice(&p, norm_names, 2, &o->norm);
    } else if (args_option(&p, "--simd")) {
      args_choice(&p, simd_names, 4, &o->simd);
    } else {
      args_unknown(&p);
    }
  }
  return p.failed ? TQ_CLI_USAGE : TQ_CLI_OK;
}

/* Creates the codec of s from params and fills in what does not depend on the
 * data: parameters in use, record size, solver distortion, bounds. */
static int setup_codec(codec_stats *s, const tq_codec_params *params) {
  double centroids[1u << TQ_MAX_BITS];
  char what[128];
  tq_status st = tq_codec_create(params, &s->codec);
  if (st != TQ_OK) {
    snprintf(what, sizeof what, "cannot create the %s codec (head dim %u, %u bits, %s)",
             s->name, (unsigned)params->dim, (unsigned)params->bits,
             rotation_names[params->rotation == TQ_ROTATION_HADAMARD]);
    return cli_status_error(PROG, what, st);
  }
  st = tq_codec_get_params(s->codec, &s->params);
  if (st != TQ_OK) return cli_status_error(PROG, "tq_codec_get_params", st);
  s->record_size = tq_codec_record_size(s->codec);
  st = tq_codebook_solve(params->dim, params->bits, params->codebook, centroids,
                         &s->lloyd_max);
  if (st != TQ_OK) return cli_status_error(PROG, "tq_codebook_solve", st);
  s->lower = tq_distortion_lower_bound(params->bits);
  s->upper = tq_distortion_upper_bound(params->bits);
  s->cos_min = 2.0;
  return TQ_CLI_OK;
}

/* Progress on stderr, in whole percent, only when `enabled`. */
static void progress(int enabled, uint64_t done, uint64_t total, int *last_pct) {
  int pct;
  if (!enabled) return;
  pct = (int)(done * 100 / total);
  if (pct == *last_pct) return;
  *last_pct = pct;
  fprintf(stderr, "\r%s: %3d%%", PROG, pct);
  fflush(stderr);
}

int cmd_benchmark_run(int argc, char **argv) {
  bench_options o;
  codec_stats ks, vs, *both[2];
  bench_result res;
  tq_kv_params kv;
  gauss_rng rng;
  float *x = NULL, *y = NULL;     /* (chunk, dim) original and decoded */
  void *records = NULL;           /* chunk * max record size */
  size_t chunk, timing_n;
  int help, rc, show_progress, last_pct = -1;
  tq_status st = TQ_OK;

  rc = parse_options(argc, argv, &o, &help);
  if (rc != TQ_CLI_OK) return rc;
  if (help) {
    cmd_benchmark_usage(stdout);
    return TQ_CLI_OK;
  }

  memset(&ks, 0, sizeof ks);
  memset(&vs, 0, sizeof vs);
  ks.name = "key";
  vs.name = "value";
  both[0] = &ks;
  both[1] = &vs;

  kv = tq_kv_params_default(o.dim);
  kv.key.bits = o.bits_k;
  kv.value.bits = o.bits_v;
  for (int c = 0; c < 2; c++) {
    tq_codec_params *cp = c == 0 ? &kv.key : &kv.value;
    cp->rotation = o.rotation == 1 ? TQ_ROTATION_HADAMARD : TQ_ROTATION_HAAR;
    cp->codebook = o.codebook == 1 ? TQ_CODEBOOK_GAUSSIAN : TQ_CODEBOOK_EXACT;
    cp->norm_format = o.norm == 1 ? TQ_NORM_F32 : TQ_NORM_F16;
    cp->simd = (tq_simd_level)o.simd; /* simd_names is in enum order */
    if (o.have_codec_seed) cp->seed = o.codec_seed;
  }
  rc = setup_codec(&ks, &kv.key);
  if (rc == TQ_CLI_OK) rc = setup_codec(&vs, &kv.value);
  if (rc != TQ_CLI_OK) goto done;

  /* Quality pass over all n vectors, chunk by chunk. */
  chunk = CHUNK_FLOATS / o.dim;
  if (chunk > CHUNK_MAX_VECTORS) chunk = CHUNK_MAX_VECTORS;
  if (chunk < 1) chunk = 1;
  if (chunk > o.n) chunk = (size_t)o.n;
  timing_n = TIMING_MAX_FLOATS / o.dim;
  if (timing_n > TIMING_MAX_VECTORS) timing_n = TIMING_MAX_VECTORS;
  if (timing_n > o.n) timing_n = (size_t)o.n;
  {
    size_t buf_n = chunk > timing_n ? chunk : timing_n;
    size_t rec = ks.record_size > vs.record_size ? ks.record_size : vs.record_size;
    x = malloc(buf_n * o.dim * sizeof *x);
    y = malloc(buf_n * o.dim * sizeof *y);
    records = malloc(buf_n * rec);
    ks.cos = malloc((size_t)o.n * sizeof *ks.cos);
    vs.cos = malloc((size_t)o.n * sizeof *vs.cos);
    if (!x || !y || !records || !ks.cos || !vs.cos) {
      rc = cli_error(PROG, "out of memory (%llu vectors of head dim %u)",
                     (unsigned long long)o.n, (unsigned)o.dim);
      goto done;
    }
  }

  show_progress = !o.quiet && o.n > PROGRESS_MIN_N && isatty(STDERR_FILENO);
  rng.state = o.seed;
  rng.have_spare = 0;
  rng.spare = 0.0;
  for (uint64_t first = 0; first < o.n; first += chunk) {
    size_t m = (size_t)(o.n - first < chunk ? o.n - first : chunk);
    gauss_fill(&rng, x, m * o.dim);
    for (int c = 0; c < 2; c++) {
      codec_stats *s = both[c];
      size_t bytes = m * s->record_size;
      st = tq_codec_encode_f32(s->codec, x, m, records, bytes);
      if (st != TQ_OK) {
        rc = cli_status_error(PROG, c ? "encoding with the value codec"
                                      : "encoding with the key codec", st);
        goto done;
      }
      st = tq_codec_decode_f32(s->codec, records, bytes, m, y);
      if (st != TQ_OK) {
        rc = cli_status_error(PROG, c ? "decoding with the value codec"
                                      : "decoding with the key codec", st);
        goto done;
      }
      accumulate(s, x, y, m, o.dim, (size_t)first);
    }
    progress(show_progress, first + m, o.n, &last_pct);
  }
  if (show_progress) fprintf(stderr, "\r%*s\r", (int)sizeof PROG + 8, "");

  for (int c = 0; c < 2; c++) {
    codec_stats *s = both[c];
    s->nmse = s->sig2 > 0.0 ? s->err2 / s->sig2 : 0.0;
    s->snr_db = -10.0 * log10(s->nmse); /* +inf when exact: printed as "-"/null */
    s->cos_mean = s->cos_sum / (double)o.n;
    s->cos_p5 = quantile(s->cos, (size_t)o.n, 0.05);
  }

  /* Speed: the first timing_n vectors of the same stream. */
  rng.state = o.seed;
  rng.have_spare = 0;
  gauss_fill(&rng, x, timing_n * o.dim);
  for (int c = 0; c < 2; c++) {
    st = time_codec(both[c], x, timing_n, records, y);
    if (st != TQ_OK) {
      rc = cli_status_error(PROG, c ? "timing the value codec" : "timing the key codec",
                            st);
      goto done;
    }
  }

  res.opt = &o;
  res.k = &ks;
  res.v = &vs;
  res.timing_vectors = timing_n;
  res.bytes_per_token = ks.record_size + vs.record_size;
  res.fp16_bytes = (size_t)2 * o.dim * 2;
  res.compression = (double)res.fp16_bytes / (double)res.bytes_per_token;
  if (o.json)
    print_json(&res);
  else
    print_text(&res);
  rc = TQ_CLI_OK;

done:
  free(x);
  free(y);
  free(records);
  free(ks.cos);
  free(vs.cos);
  tq_codec_free(ks.codec);
  tq_codec_free(vs.codec);
  return rc;
}
