/*
 * cmd_perplexity.c - "tqai perplexity": perplexity of a model over a text in
 * fixed windows, scoring the second half of each window, with its standard
 * error; with --kl-divergence, the fp16 cache and the compressed cache run
 * side by side on the same windows and their next-token distributions are
 * compared (mean KL divergence, its 99th percentile, top-1 agreement).
 *
 * The method is llama.cpp's perplexity tool's, so that the two can be compared
 * on the same tokens: the whole text is tokenized once (with a leading BOS when
 * the vocabulary adds one), cut into windows of ctx tokens, the first token of
 * every window is replaced by BOS (when the vocabulary adds one), and the
 * logits at positions ctx/2 .. ctx-2 are scored (ctx/2 - 1 tokens a window).
 * The 99th percentile interpolates between neighbours as llama.cpp's does.
 *
 * --kl-base-out saves a run's log-probabilities so that later runs compare
 * against them (--kl-base) without running the baseline again. File layout,
 * little-endian:
 *   "TQAIKLB1", u32 ctx, u32 n_vocab, u32 n_windows,
 *   i32 tokens[n_windows][ctx]        (as tokenized, before any BOS swap)
 *   f32 logprob[n_windows][ctx/2 - 1][n_vocab]   (the scored positions)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "engine_opts.h"

static const char PROG[] = "tqai perplexity";
#define PIECE 256 /* tokens evaluated per call: bounds the logits buffer */

void cmd_perplexity_usage(FILE *out) {
  fprintf(out,
          "Usage: tqai perplexity -m MODEL -f TEXT [OPTIONS]\n"
          "\n"
          "Cuts the tokenized TEXT into windows of --ctx tokens and scores the second\n"
          "half of each window: perplexity with its standard error. With\n"
          "--kl-divergence the fp16 cache runs beside the compressed one on the same\n"
          "windows: mean KL divergence of the compressed run's next-token\n"
          "distributions from the baseline's, its 99th percentile, and how often\n"
          "their most likely tokens agree.\n"
          "\n"
          "  -f, --file FILE       the text (UTF-8)\n"
          "  -c N                  same as --ctx: window length (default 512)\n"
          "  --chunks N            at most N windows (default: all)\n"
          "  --kl-divergence       compare against the fp16 cache\n"
          "  --kl-base-out FILE    save this run's log-probabilities (fp16 cache: a\n"
          "                        baseline for --kl-base; large: n_vocab floats per\n"
          "                        scored token)\n"
          "  --kl-base FILE        compare against a saved baseline instead of running\n"
          "                        the fp16 cache beside (same text, -c, --chunks)\n"
          "  --kv-bytes-at N       also count the bytes of this cache holding N tokens\n"
          "                        (filled with random vectors; up to 4 times)\n"
          "  --json                one JSON object instead of text\n"
          "  --quiet               no progress on stderr\n"
          "\n");
  engine_opts_usage(out, 512);
  fprintf(out, "\n  -h, --help            show this help and exit\n");
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n == cap) {
      char *grown = cap > ((size_t)1 << 31) ? NULL : realloc(buf, cap * 2);
      if (!grown) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = grown;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (buf && ferror(f)) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* log-softmax of one row (n floats) into lp (doubles). */
static void log_softmax(const float *x, uint32_t n, double *lp) {
  double mx = x[0];
  for (uint32_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  double s = 0.0;
  for (uint32_t i = 0; i < n; i++) s += exp(x[i] - mx);
  double lse = mx + log(s);
  for (uint32_t i = 0; i < n; i++) lp[i] = x[i] - lse;
}

static uint32_t argmax(const float *x, uint32_t n) {
  uint32_t b = 0;
  for (uint32_t i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

static uint32_t argmax_d(const double *x, uint32_t n) {
  uint32_t b = 0;
  for (uint32_t i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The p-quantile of sorted v[0..n-1], interpolating between neighbours. */
static double quantile(const double *v, size_t n, double p) {
  double at = p * (double)(n - 1);
  size_t i = (size_t)at;
  if (i + 1 >= n) return v[n - 1];
  return v[i] + (at - (double)i) * (v[i + 1] - v[i]);
}

static const char KLB_MAGIC[8] = {'T', 'Q', 'A', 'I', 'K', 'L', 'B', '1'};

/* Writes the header and tokens of a baseline file; returns 0 on success. */
static int klb_write_header(FILE *f, uint32_t ctx, uint32_t V, uint32_t n_chunks, const int32_t *ids) {
  uint32_t h[3] = {ctx, V, n_chunks};
  return fwrite(KLB_MAGIC, 1, 8, f) != 8 || fwrite(h, sizeof h, 1, f) != 1 ||
         fwrite(ids, sizeof *ids, (size_t)n_chunks * ctx, f) != (size_t)n_chunks * ctx;
}

/* Reads a baseline file's header and checks it against this run; returns NULL
 * on success or what is wrong. */
static const char *klb_check_header(FILE *f, uint32_t ctx, uint32_t V, uint32_t n_chunks, const int32_t *ids) {
  char magic[8];
  uint32_t h[3];
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, KLB_MAGIC, 8) || fread(h, sizeof h, 1, f) != 1)
    return "not a baseline file";
  if (h[0] != ctx) return "saved with another -c";
  if (h[1] != V) return "saved with another vocabulary";
  if (h[2] != n_chunks) return "saved with another number of windows";
  int32_t t;
  for (size_t i = 0; i < (size_t)n_chunks * ctx; i++)
    if (fread(&t, sizeof t, 1, f) != 1 || t != ids[i]) return "saved from other tokens";
  return NULL;
}

/* Bytes a cache with parameters p holds once it stores n tokens in every
 * layer: the count of tq_cache_bytes(), filled with seeded random vectors
 * (how many bytes a cache holds depends on its parameters and token count,
 * not on the values). Returns 0 if the cache cannot be made or filled. */
static size_t cache_bytes_at(tq_cache_params p, uint32_t n) {
  p.max_tokens = n;
  tq_cache *c = NULL;
  if (tq_cache_create(&p, &c) != TQ_OK) return 0;
  enum { STEP = 64 };
  size_t row = (size_t)p.n_kv_heads * p.head_dim; /* floats per token */
  float *k = malloc(STEP * row * sizeof *k), *v = malloc(STEP * row * sizeof *v);
  uint64_t x = 0x9e3779b97f4a7c15u;
  tq_status st = k && v ? TQ_OK : TQ_ERR_OUT_OF_MEMORY;
  for (uint32_t l = 0; l < p.n_layers && st == TQ_OK; l++) {
    for (uint32_t at = 0; at < n && st == TQ_OK; at += STEP) {
      uint32_t len = n - at < STEP ? n - at : STEP;
      for (size_t i = 0; i < 2 * (size_t)len * row; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64: uniform in [-1, 1) */
        float u = (float)((double)(x >> 11) / 4503599627370496.0 - 1.0);
        if (i < (size_t)len * row) k[i] = u;
        else v[i - (size_t)len * row] = u;
      }
      st = tq_cache_append(c, l, k, v, len);
    }
  }
  size_t bytes = st == TQ_OK ? tq_cache_bytes(c) : 0;
  free(k), free(v);
  tq_cache_free(c);
  return bytes;
}

typedef struct stats {
  double nll, nll2;   /* sums of -log p and its square, compressed run */
  double bnll, bnll2; /* the same, baseline */
  double kl, kl2;
  double *kls;
  size_t n, top1;
} stats;

int cmd_perplexity_run(int argc, char **argv) {
  engine_opts o;
  engine_opts_default(&o, 512);
  const char *file = NULL;
  uint32_t max_chunks = 0;
  int kld = 0, json = 0, quiet = 0;
  const char *base_in = NULL, *base_out = NULL;
  uint32_t at_tokens[4], n_at = 0;
  args_parser p;
  args_init(&p, PROG, argc, argv);
  while (args_next(&p)) {
    if (args_flag(&p, "--help") || args_flag(&p, "-h")) {
      if (p.failed) return TQ_CLI_USAGE;
      cmd_perplexity_usage(stdout);
      return TQ_CLI_OK;
    } else if (engine_opts_parse(&p, &o)) {
    } else if (args_option(&p, "-c")) {
      args_u32(&p, 16, 1u << 20, &o.n_ctx);
    } else if (args_option(&p, "-f") || args_option(&p, "--file")) {
      file = p.value;
    } else if (args_option(&p, "--chunks")) {
      args_u32(&p, 1, 1u << 30, &max_chunks);
    } else if (args_flag(&p, "--kl-divergence")) {
      kld = 1;
    } else if (args_option(&p, "--kl-base")) {
      base_in = p.value;
    } else if (args_option(&p, "--kl-base-out")) {
      base_out = p.value;
    } else if (args_option(&p, "--kv-bytes-at")) {
      if (n_at == 4) {
        args_usage_error(PROG, "--kv-bytes-at is accepted at most 4 times");
        return TQ_CLI_USAGE;
      }
      args_u32(&p, 1, 1u << 24, &at_tokens[n_at++]);
    } else if (args_flag(&p, "--json")) {
      json = 1;
    } else if (args_flag(&p, "--quiet")) {
      quiet = 1;
    } else {
      args_unknown(&p);
    }
    if (p.failed) return TQ_CLI_USAGE;
  }
  if (!file) return args_usage_error(PROG, "no text given: use -f FILE");
  if (base_in && (kld || base_out))
    return args_usage_error(PROG, "--kl-base goes with neither --kl-divergence nor --kl-base-out");
  if (base_in) kld = 1;
  size_t text_len;
  char *text = read_file(file, &text_len);
  if (!text) return cli_error(PROG, "cannot read %s", file);
  tq_model *model;
  tq_pool *pool;
  int rc = engine_load(PROG, &o, &model, &pool);
  if (rc) {
    free(text);
    return rc;
  }
  const tq_model_info *info = tq_model_get_info(model);
  const tq_tokenizer *tok = tq_model_tokenizer(model);
  uint32_t V = info->n_vocab, ctx = o.n_ctx;
  tq_cache_params cp, base;
  tq_session *s = NULL, *sb = NULL;
  int32_t *ids = NULL;
  float *lg = NULL, *lgb = NULL, *frow = NULL;
  FILE *fin = NULL, *fout = NULL;
  double *lp = NULL, *lpb = NULL;
  stats S;
  memset(&S, 0, sizeof S);
  if ((rc = engine_cache_params(PROG, &o, info, &cp))) goto done;
  base = cp;
  base.mode = TQ_CACHE_F16;
  size_t n_tok = 0;
  int adds_bos = tq_tokenizer_adds_bos(tok);
  tq_tokenize(tok, text, text_len, adds_bos, 0, NULL, 0, &n_tok);
  ids = malloc((n_tok ? n_tok : 1) * sizeof *ids);
  if (!ids || tq_tokenize(tok, text, text_len, adds_bos, 0, ids, n_tok, &n_tok) != TQ_OK) {
    rc = cli_error(PROG, "cannot tokenize %s", file);
    goto done;
  }
  uint32_t n_chunks = (uint32_t)(n_tok / ctx);
  if (max_chunks && n_chunks > max_chunks) n_chunks = max_chunks;
  if (n_chunks == 0) {
    rc = cli_error(PROG, "%s has %zu tokens, fewer than one window of %u", file, n_tok, ctx);
    goto done;
  }
  if (base_in) {
    const char *why = NULL;
    if (!(fin = fopen(base_in, "rb"))) why = "cannot open it";
    else why = klb_check_header(fin, ctx, V, n_chunks, ids);
    if (why) {
      rc = cli_error(PROG, "%s: %s", base_in, why);
      goto done;
    }
  }
  if (base_out && (!(fout = fopen(base_out, "wb")) || klb_write_header(fout, ctx, V, n_chunks, ids))) {
    rc = cli_error(PROG, "cannot write %s", base_out);
    goto done;
  }
  tq_status st = tq_session_create(model, &cp, ctx, pool, &s);
  if (st == TQ_OK && kld && !base_in) st = tq_session_create(model, &base, ctx, pool, &sb);
  lg = malloc((size_t)PIECE * V * sizeof *lg);
  lgb = sb ? malloc((size_t)PIECE * V * sizeof *lgb) : NULL;
  frow = base_in || base_out ? malloc((size_t)V * sizeof *frow) : NULL;
  lp = malloc((size_t)V * sizeof *lp);
  lpb = malloc((size_t)V * sizeof *lpb);
  S.kls = kld ? malloc((size_t)n_chunks * ctx * sizeof *S.kls) : NULL;
  if (st != TQ_OK || !lg || !lp || !lpb || (sb && !lgb) || ((base_in || base_out) && !frow) || (kld && !S.kls)) {
    rc = cli_error(PROG, "cannot start: %s", st != TQ_OK ? tq_engine_last_error() : "out of memory");
    goto done;
  }
  int32_t bos = tq_tokenizer_adds_bos(tok) ? tq_tokenizer_bos(tok) : -1;
  uint32_t first = ctx / 2;
  double t0 = engine_now();
  size_t kv_bytes = 0, kv_bytes_base = 0;
  for (uint32_t c = 0; c < n_chunks; c++) {
    int32_t *w = ids + (size_t)c * ctx;
    int32_t saved = w[0];
    if (bos >= 0) w[0] = bos; /* every window starts like a document */
    tq_session_truncate(s, 0);
    if (sb) tq_session_truncate(sb, 0);
    for (uint32_t at = 0; at < ctx && st == TQ_OK; at += PIECE) {
      uint32_t len = ctx - at < PIECE ? ctx - at : PIECE;
      /* A piece before the scored half needs no logits (the output layer is
         a fifth of this model's work). */
      int scored = at + len > first;
      st = tq_session_eval(s, w + at, len, scored ? lg : NULL, 1);
      if (st == TQ_OK && sb) st = tq_session_eval(sb, w + at, len, scored ? lgb : NULL, 1);
      if (st != TQ_OK) break;
      /* Position j's logits predict token j + 1; score j in [first, ctx - 1). */
      for (uint32_t j = at; j < at + len; j++) {
        if (j < first || j + 1 >= ctx) continue;
        const float *row = lg + (size_t)(j - at) * V;
        log_softmax(row, V, lp);
        double nll = -lp[w[j + 1]];
        S.nll += nll, S.nll2 += nll * nll;
        if (fout) {
          for (uint32_t i = 0; i < V; i++) frow[i] = (float)lp[i];
          if (fwrite(frow, sizeof *frow, V, fout) != V) {
            rc = cli_error(PROG, "cannot write %s", base_out);
            goto done;
          }
        }
        if (kld) {
          if (sb) {
            log_softmax(lgb + (size_t)(j - at) * V, V, lpb);
          } else {
            if (fread(frow, sizeof *frow, V, fin) != V) {
              rc = cli_error(PROG, "%s: file ends early", base_in);
              goto done;
            }
            for (uint32_t i = 0; i < V; i++) {
              /* Log-probabilities: finite and at most 0 (a little rounding
               * allowed); anything else is a damaged file. */
              if (!(frow[i] <= 1e-3f) || !isfinite(frow[i])) {
                rc = cli_error(PROG, "%s: not a log-probability at window %u (damaged file?)", base_in, c);
                goto done;
              }
              lpb[i] = frow[i];
            }
          }
          double bn = -lpb[w[j + 1]], kl = 0.0;
          S.bnll += bn, S.bnll2 += bn * bn;
          for (uint32_t i = 0; i < V; i++) kl += exp(lpb[i]) * (lpb[i] - lp[i]);
          if (kl < 0) kl = 0; /* rounding */
          S.kl += kl, S.kl2 += kl * kl;
          S.kls[S.n] = kl;
          S.top1 += argmax(row, V) == argmax_d(lpb, V);
        }
        S.n++;
      }
    }
    w[0] = saved;
    if (st != TQ_OK) {
      rc = cli_error(PROG, "window %u: %s", c, tq_engine_last_error());
      goto done;
    }
    kv_bytes = tq_cache_bytes(tq_session_cache(s));
    if (sb) kv_bytes_base = tq_cache_bytes(tq_session_cache(sb));
    if (!quiet) {
      double el = engine_now() - t0;
      fprintf(stderr, "\r[%u/%u] ppl %.4f  %.1f s, %.0f s left   ", c + 1, n_chunks, exp(S.nll / S.n), el,
              el / (c + 1) * (n_chunks - c - 1));
      if (kld) fprintf(stderr, "kld %.5f  ", S.kl / S.n);
      fflush(stderr);
    }
  }
  if (!quiet) fprintf(stderr, "\n");
  if (fout) {
    int bad = fclose(fout);
    fout = NULL;
    if (bad) {
      rc = cli_error(PROG, "cannot write %s", base_out);
      goto done;
    }
  }
  size_t at_bytes[4];
  for (uint32_t i = 0; i < n_at; i++) {
    if (!(at_bytes[i] = cache_bytes_at(cp, at_tokens[i]))) {
      rc = cli_error(PROG, "cannot fill a cache with %u tokens", at_tokens[i]);
      goto done;
    }
  }
  double n = (double)S.n;
  double mean = S.nll / n, var = S.nll2 / n - mean * mean;
  double ppl = exp(mean), ppl_err = ppl * sqrt(var > 0 ? var / (n - 1 > 0 ? n - 1 : 1) : 0);
  char name[96];
  engine_cache_name(&cp, name, sizeof name);
  double kl_mean = 0, kl_err = 0, kl_p99 = 0, bppl = 0, bppl_err = 0, top1 = 0;
  if (kld) {
    kl_mean = S.kl / n;
    double kv = S.kl2 / n - kl_mean * kl_mean;
    kl_err = sqrt(kv > 0 ? kv / (n - 1 > 0 ? n - 1 : 1) : 0);
    qsort(S.kls, S.n, sizeof *S.kls, cmp_double);
    kl_p99 = quantile(S.kls, S.n, 0.99);
    double bm = S.bnll / n, bv = S.bnll2 / n - bm * bm;
    bppl = exp(bm);
    bppl_err = bppl * sqrt(bv > 0 ? bv / (n - 1 > 0 ? n - 1 : 1) : 0);
    top1 = (double)S.top1 / n;
  }
  if (json) {
    printf("{\"file\": ");
    cli_json_string(stdout, file);
    printf(", \"text_tokens\": %zu, \"ctx\": %u, \"windows\": %u, \"scored_tokens\": %zu, \"cache\": ", n_tok,
           ctx, n_chunks, S.n);
    cli_json_string(stdout, name);
    printf(", \"kv_bytes\": %zu", kv_bytes);
    if (n_at) {
      printf(", \"kv_bytes_at\": {");
      for (uint32_t i = 0; i < n_at; i++) printf("%s\"%u\": %zu", i ? ", " : "", at_tokens[i], at_bytes[i]);
      printf("}");
    }
    printf(", \"ppl\": ");
    cli_json_double(stdout, ppl);
    printf(", \"ppl_err\": ");
    cli_json_double(stdout, ppl_err);
    if (kld) {
      printf(", \"baseline_ppl\": ");
      cli_json_double(stdout, bppl);
      printf(", \"baseline_ppl_err\": ");
      cli_json_double(stdout, bppl_err);
      if (sb) printf(", \"baseline_kv_bytes\": %zu", kv_bytes_base);
      printf(", \"kld_mean\": ");
      cli_json_double(stdout, kl_mean);
      printf(", \"kld_err\": ");
      cli_json_double(stdout, kl_err);
      printf(", \"kld_p99\": ");
      cli_json_double(stdout, kl_p99);
      printf(", \"top1_agreement\": ");
      cli_json_double(stdout, top1);
    }
    printf("}\n");
  } else {
    printf("text %zu tokens; windows %u x %u tokens, %zu scored, cache %s (%.1f KiB)\n", n_tok, n_chunks, ctx,
           S.n, name, kv_bytes / 1024.0);
    for (uint32_t i = 0; i < n_at; i++)
      printf("cache holding %u tokens: %zu bytes (%.1f KiB)\n", at_tokens[i], at_bytes[i], at_bytes[i] / 1024.0);
    printf("perplexity: %.4f +/- %.4f\n", ppl, ppl_err);
    if (kld) {
      if (sb) printf("fp16 cache perplexity: %.4f +/- %.4f (%.1f KiB)\n", bppl, bppl_err, kv_bytes_base / 1024.0);
      else printf("baseline perplexity (%s): %.4f +/- %.4f\n", base_in, bppl, bppl_err);
      printf("mean KL divergence: %.6f +/- %.6f, 99th percentile %.6f\n", kl_mean, kl_err, kl_p99);
      printf("top-1 agreement: %.2f%%\n", 100.0 * top1);
    }
  }
  rc = TQ_CLI_OK;
done:
  free(text);
  free(ids);
  free(lg), free(lgb), free(frow), free(lp), free(lpb), free(S.kls);
  if (fin) fclose(fin);
  if (fout) fclose(fout);
  tq_session_free(s);
  tq_session_free(sb);
  tq_pool_free(pool);
  tq_model_free(model);
  return rc;
}
