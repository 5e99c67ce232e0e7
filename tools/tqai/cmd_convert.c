/*
 * cmd_convert.c - "tqai convert": a Hugging Face checkpoint directory
 * (config.json, *.safetensors, tokenizer.json, tokenizer_config.json) to a
 * GGUF model file the engine loads, with the metadata keys, tensor names and
 * layouts llama.cpp's converter writes for the same architectures:
 *
 *   LlamaForCausalLM, MistralForCausalLM -> "llama": the rows of Q and K are
 *     permuted within each head from Hugging Face's half-split rotary order
 *     (pairs (i, i + d/2)) to the adjacent-pair order (2i, 2i+1) that GGUF
 *     "llama" files use; Llama 3 rope scaling becomes rope_freqs.weight.
 *   Qwen2ForCausalLM -> "qwen2" (Q, K, V biases), Qwen3ForCausalLM -> "qwen3"
 *     (per-head Q and K norms, head size from config.json): the half-split
 *     order is kept (the engine rotates NeoX-style for them).
 *
 * Tokenizers: byte-level BPE -> "gpt2" (tokens, types, merges, a
 * pre-tokenizer name recognized from the regex); SentencePiece-style (BPE
 * with byte fallback / Metaspace, or Unigram) -> "llama" (tokens, scores,
 * types with <0xXX> as bytes).
 *
 * Every input is treated as hostile: JSON is parsed strictly with a depth
 * limit and every field is type-checked (a message names the field),
 * safetensors headers are checked against the file (safetensors.c), shapes
 * against config.json. The output goes through a temporary file renamed into
 * place only when complete, and is loaded back with tq_model_load before the
 * command reports success (a file that does not load is removed).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "args.h"
#include "commands.h"
#include "safetensors.h"
#include "tqai_engine.h"

static const char PROG[] = "tqai convert";

#define MAX_CONFIG_BYTES ((size_t)16 << 20)
#define MAX_TOKENIZER_BYTES ((size_t)1 << 30)
#define MAX_VOCAB (1u << 24)
#define PI 3.14159265358979323846

/* Pre-tokenizer regexes as the models' tokenizer.json files spell them. */
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

void cmd_convert_usage(FILE *out) {
  fprintf(out,
          "Usage: tqai convert [OPTIONS] HF_DIR -o MODEL.gguf\n"
          "\n"
          "Converts a Hugging Face checkpoint directory (config.json, *.safetensors,\n"
          "tokenizer.json and, if present, tokenizer_config.json) into a GGUF model\n"
          "file for tqai run. Architectures: LlamaForCausalLM and MistralForCausalLM\n"
          "(GGUF \"llama\"), Qwen2ForCausalLM (\"qwen2\"), Qwen3ForCausalLM (\"qwen3\").\n"
          "Weights may be F32, F16 or BF16. Norms and biases are always stored as f32;\n"
          "matrices whose rows do not fill whole q8_0/q4_0 blocks (32 values) fall\n"
          "back to f16. Progress goes to stderr. The file is written through a\n"
          "temporary name and checked by loading it; on any error nothing is left.\n"
          "\n"
          "Options:\n"
          "  -o, --output PATH   the GGUF file to write (required)\n"
          "  --type TYPE         f32, f16, q8_0 or q4_0: the type of the weight\n"
          "                      matrices (default f16)\n"
          "  --name NAME         general.name (default: the directory's name)\n"
          "  -q, --quiet         no progress on stderr\n"
          "  -h, --help          show this help and exit\n"
          "\n"
          "Exit status: 0 success, 1 the input could not be converted or the output\n"
          "not written, 2 bad command line.\n");
}

/* ------------------------------------------------------------------------ */
/* State and messages                                                        */
/* ------------------------------------------------------------------------ */

enum { ARCH_LLAMA = 0, ARCH_QWEN2 = 1, ARCH_QWEN3 = 2 };

typedef struct conv {
  const char *dir;
  const char *out;
  const char *name;
  tq_tensor_type type;
  int quiet;
  char err[1024];
  struct json_object *cfg, *tok, *tokcfg;
  st_set st;
  tq_gguf_writer *w;
  /* Model. */
  const char *hf_arch;
  int arch;
  const char *arch_name;
  uint32_t n_layers, n_embd, n_heads, n_kv, n_ff, head_dim, n_ctx, n_rot, n_vocab;
  double rope_base, rms_eps;
  int tied;           /* -1 unknown (decided by lm_head's presence), 0, 1 */
  float *rope_factors; /* n_rot / 2, or NULL */
  int quantized_any, f16_any;
  /* Tokenizer. */
  char **tok_text;    /* n_vocab, malloc'd */
  int32_t *tok_type;
  float *tok_score;
  uint8_t *tok_added;
  int spm;
} conv;

static int cfail(conv *c, const char *fmt, ...) TQ_CLI_PRINTF(2, 3);

/* Records the message of a failure; returns -1. */
static int cfail(conv *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  return -1;
}

static void note(const conv *c, const char *fmt, ...) TQ_CLI_PRINTF(2, 3);

/* A remark on stderr (shown even with --quiet: it says what changed). */
static void note(const conv *c, const char *fmt, ...) {
  (void)c;
  va_list ap;
  fprintf(stderr, "%s: note: ", PROG);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s);
  char *p = malloc(n + 1);
  if (p) memcpy(p, s, n + 1);
  return p;
}

static char *join_path(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

/* Reads a regular text file of at most max bytes without NULs into a new
 * NUL-terminated string. Returns 0, 1 when it does not exist (*out NULL), or
 * -1 with a message. */
static int read_text_file(conv *c, const char *path, size_t max, char **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 1 : cfail(c, "%s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > max) {
    close(fd);
    return cfail(c, "%s: not a regular file of at most %zu bytes", path, max);
  }
  size_t n = (size_t)sb.st_size, got = 0;
  char *buf = malloc(n + 1);
  if (!buf) {
    close(fd);
    return cfail(c, "out of memory");
  }
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  buf[got] = '\0';
  if (got != n || strlen(buf) != n) {
    free(buf);
    return cfail(c, "%s: read error or a NUL byte", path);
  }
  *out = buf;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON fields                                                               */
/* ------------------------------------------------------------------------ */

/* The member `key` of o, or NULL when absent or null. */
static struct json_object *jget(struct json_object *o, const char *key) {
  struct json_object *v = NULL;
  if (!o || !json_object_is_type(o, json_type_object)) return NULL;
  if (!json_object_object_get_ex(o, key, &v)) return NULL;
  if (!v || json_object_is_type(v, json_type_null)) return NULL;
  return v;
}

static const char *jtype(struct json_object *v) {
  return v ? json_type_to_name(json_object_get_type(v)) : "null";
}

/* An unsigned integer field of `where` (e.g. "config.json"). */
static int field_uint(conv *c, struct json_object *o, const char *where, const char *key, int required,
                      uint64_t dflt, uint64_t lo, uint64_t hi, uint32_t *out) {
  struct json_object *v = jget(o, key);
  if (!v) {
    if (required) return cfail(c, "%s: field '%s' is missing", where, key);
    *out = (uint32_t)dflt;
    return 0;
  }
  if (!json_object_is_type(v, json_type_int))
    return cfail(c, "%s: field '%s' must be an integer, not %s", where, key, jtype(v));
  int64_t x = json_object_get_int64(v);
  if (x < 0 || (uint64_t)x < lo || (uint64_t)x > hi)
    return cfail(c, "%s: field '%s' = %lld is outside %llu..%llu", where, key, (long long)x,
                 (unsigned long long)lo, (unsigned long long)hi);
  *out = (uint32_t)x;
  return 0;
}

/* A number field (integer or not), finite and lo < x <= hi. */
static int field_num(conv *c, struct json_object *o, const char *where, const char *key, int required,
                     double dflt, double lo, double hi, double *out) {
  struct json_object *v = jget(o, key);
  if (!v) {
    if (required) return cfail(c, "%s: field '%s' is missing", where, key);
    *out = dflt;
    return 0;
  }
  if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
    return cfail(c, "%s: field '%s' must be a number, not %s", where, key, jtype(v));
  double x = json_object_get_double(v);
  if (!isfinite(x) || !(x > lo) || x > hi)
    return cfail(c, "%s: field '%s' = %g is outside (%g, %g]", where, key, x, lo, hi);
  *out = x;
  return 0;
}

/* A boolean field: *out = -1 when absent. */
static int field_bool(conv *c, struct json_object *o, const char *where, const char *key, int *out) {
  struct json_object *v = jget(o, key);
  *out = -1;
  if (!v) return 0;
  if (!json_object_is_type(v, json_type_boolean))
    return cfail(c, "%s: field '%s' must be true or false, not %s", where, key, jtype(v));
  *out = json_object_get_boolean(v) ? 1 : 0;
  return 0;
}

/* A string field: *out = NULL when absent. The string must not hold NULs. */
static int field_str(conv *c, struct json_object *o, const char *where, const char *key, int required,
                     const char **out) {
  struct json_object *v = jget(o, key);
  *out = NULL;
  if (!v) return required ? cfail(c, "%s: field '%s' is missing", where, key) : 0;
  if (!json_object_is_type(v, json_type_string))
    return cfail(c, "%s: field '%s' must be a string, not %s", where, key, jtype(v));
  const char *s = json_object_get_string(v);
  if ((size_t)json_object_get_string_len(v) != strlen(s))
    return cfail(c, "%s: field '%s' contains a NUL character", where, key);
  *out = s;
  return 0;
}

/* A string of a JSON value that must be a string without NULs; NULL if not. */
static const char *jstr(struct json_object *v) {
  if (!v || !json_object_is_type(v, json_type_string)) return NULL;
  const char *s = json_object_get_string(v);
  return (size_t)json_object_get_string_len(v) == strlen(s) ? s : NULL;
}

/* ------------------------------------------------------------------------ */
/* config.json                                                               */
/* ------------------------------------------------------------------------ */

static int read_rope(conv *c) {
  struct json_object *cfg = c->cfg;
  const char *where = "config.json";
  /* transformers >= 5 writes "rope_parameters" (theta and scaling in one
   * object); older files "rope_theta" and "rope_scaling". */
  struct json_object *rp = jget(cfg, "rope_parameters"), *scaling;
  const char *swhere;
  if (rp) {
    if (!json_object_is_type(rp, json_type_object))
      return cfail(c, "config.json: field 'rope_parameters' must be an object, not %s", jtype(rp));
    swhere = "config.json: rope_parameters";
    if (!jget(rp, "rope_theta") && !jget(rp, "rope_type") && !jget(rp, "type"))
      return cfail(c, "config.json: rope_parameters has no 'rope_theta' or 'rope_type' "
                      "(per-layer rope parameters are not supported)");
    if (field_num(c, rp, swhere, "rope_theta", 0, 0.0, 0.0, 1e30, &c->rope_base)) return -1;
    if (c->rope_base == 0.0 && field_num(c, cfg, where, "rope_theta", 0, 10000.0, 0.0, 1e30, &c->rope_base))
      return -1;
    scaling = rp;
  } else {
    if (field_num(c, cfg, where, "rope_theta", 0, 10000.0, 0.0, 1e30, &c->rope_base)) return -1;
    scaling = jget(cfg, "rope_scaling");
    swhere = "config.json: rope_scaling";
    if (scaling && !json_object_is_type(scaling, json_type_object))
      return cfail(c, "config.json: field 'rope_scaling' must be an object, not %s", jtype(scaling));
  }
  double prf;
  if (field_num(c, rp ? rp : cfg, rp ? swhere : where, "partial_rotary_factor", 0, 1.0, 0.0, 1.0, &prf))
    return -1;
  if (rp && prf == 1.0 && field_num(c, cfg, where, "partial_rotary_factor", 0, 1.0, 0.0, 1.0, &prf))
    return -1;
  if (prf != 1.0)
    return cfail(c, "config.json: partial_rotary_factor %g is not supported (only 1)", prf);
  c->n_rot = c->head_dim;
  if (!scaling) return 0;
  const char *type = NULL;
  if (field_str(c, scaling, swhere, "rope_type", 0, &type)) return -1;
  if (!type && field_str(c, scaling, swhere, "type", 0, &type)) return -1;
  if (!type || !strcmp(type, "default")) return 0;
  if (strcmp(type, "llama3") != 0)
    return cfail(c, "%s: rope scaling '%.64s' is not supported (only llama3)", swhere, type);
  double factor, lo, hi;
  uint32_t old_ctx;
  if (field_num(c, scaling, swhere, "factor", 1, 0, 0.0, 1e6, &factor) ||
      field_num(c, scaling, swhere, "low_freq_factor", 1, 0, 0.0, 1e6, &lo) ||
      field_num(c, scaling, swhere, "high_freq_factor", 1, 0, 0.0, 1e6, &hi) ||
      field_uint(c, scaling, swhere, "original_max_position_embeddings", 1, 0, 1, UINT32_MAX, &old_ctx))
    return -1;
  if (!(hi > lo))
    return cfail(c, "%s: high_freq_factor %g must be above low_freq_factor %g", swhere, hi, lo);
  /* Llama 3.1's frequency scaling as a divisor per rotary pair: wavelengths
   * below old_ctx / high keep their frequency, those above old_ctx / low are
   * divided by `factor`, those between are interpolated smoothly. */
  uint32_t n = c->n_rot / 2;
  c->rope_factors = malloc(n * sizeof *c->rope_factors);
  if (!c->rope_factors) return cfail(c, "out of memory");
  double low_wl = old_ctx / lo, high_wl = old_ctx / hi;
  for (uint32_t i = 0; i < n; i++) {
    double freq = 1.0 / pow(c->rope_base, 2.0 * i / (double)c->n_rot);
    double wl = 2.0 * PI / freq, f;
    if (wl < high_wl) {
      f = 1.0;
    } else if (wl > low_wl) {
      f = factor;
    } else {
      double smooth = (old_ctx / wl - lo) / (hi - lo);
      f = 1.0 / ((1.0 - smooth) / factor + smooth);
    }
    c->rope_factors[i] = (float)f;
  }
  return 0;
}

static int read_config(conv *c) {
  struct json_object *cfg = c->cfg;
  const char *where = "config.json";
  if (!json_object_is_type(cfg, json_type_object)) return cfail(c, "config.json: not a JSON object");
  struct json_object *archs = jget(cfg, "architectures");
  if (!archs) return cfail(c, "config.json: field 'architectures' is missing");
  if (!json_object_is_type(archs, json_type_array) || json_object_array_length(archs) == 0 ||
      !jstr(json_object_array_get_idx(archs, 0)))
    return cfail(c, "config.json: field 'architectures' must be a non-empty array of strings");
  c->hf_arch = jstr(json_object_array_get_idx(archs, 0));
  if (!strcmp(c->hf_arch, "LlamaForCausalLM") || !strcmp(c->hf_arch, "MistralForCausalLM")) {
    c->arch = ARCH_LLAMA;
    c->arch_name = "llama";
  } else if (!strcmp(c->hf_arch, "Qwen2ForCausalLM")) {
    c->arch = ARCH_QWEN2;
    c->arch_name = "qwen2";
  } else if (!strcmp(c->hf_arch, "Qwen3ForCausalLM")) {
    c->arch = ARCH_QWEN3;
    c->arch_name = "qwen3";
  } else {
    return cfail(c,
                 "config.json: architecture '%.80s' is not supported (LlamaForCausalLM, "
                 "MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM are)",
                 c->hf_arch);
  }
  if (field_uint(c, cfg, where, "num_hidden_layers", 1, 0, 1, 1024, &c->n_layers) ||
      field_uint(c, cfg, where, "hidden_size", 1, 0, 1, 65536, &c->n_embd) ||
      field_uint(c, cfg, where, "num_attention_heads", 1, 0, 1, 1024, &c->n_heads) ||
      field_uint(c, cfg, where, "num_key_value_heads", 0, c->n_heads, 1, 1024, &c->n_kv) ||
      field_uint(c, cfg, where, "intermediate_size", 1, 0, 1, 1u << 20, &c->n_ff) ||
      field_uint(c, cfg, where, "max_position_embeddings", 0, 2048, 1, UINT32_MAX, &c->n_ctx) ||
      field_uint(c, cfg, where, "vocab_size", 0, 0, 0, MAX_VOCAB, &c->n_vocab))
    return -1;
  if (c->n_heads % c->n_kv)
    return cfail(c, "config.json: num_attention_heads %u is not a multiple of num_key_value_heads %u",
                 c->n_heads, c->n_kv);
  uint32_t hd_default = c->n_embd / c->n_heads;
  if (field_uint(c, cfg, where, "head_dim", 0, hd_default, TQ_MIN_DIM, TQ_MAX_DIM, &c->head_dim)) return -1;
  if (c->head_dim == 0 || c->head_dim % 2)
    return cfail(c, "config.json: head size %u (hidden_size / num_attention_heads unless head_dim is "
                    "given) must be even and at least 2",
                 c->head_dim);
  if (field_num(c, cfg, where, "rms_norm_eps", 0, 1e-6, 0.0, 1.0, &c->rms_eps)) return -1;
  if (read_rope(c)) return -1;
  const char *act;
  if (field_str(c, cfg, where, "hidden_act", 0, &act)) return -1;
  if (act && strcmp(act, "silu") != 0)
    return cfail(c, "config.json: hidden_act '%.40s' is not supported (only silu)", act);
  int b;
  if (field_bool(c, cfg, where, "tie_word_embeddings", &c->tied)) return -1;
  if (field_bool(c, cfg, where, "mlp_bias", &b)) return -1;
  if (b == 1) return cfail(c, "config.json: mlp_bias is not supported");
  if (field_bool(c, cfg, where, "attention_bias", &b)) return -1;
  if (b == 1 && c->arch != ARCH_QWEN2)
    return cfail(c, "config.json: attention_bias is not supported for %s", c->hf_arch);
  if (c->arch == ARCH_QWEN2) {
    if (field_bool(c, cfg, where, "use_sliding_window", &b)) return -1;
    if (b == 1) note(c, "config.json: use_sliding_window is ignored: attention always sees the whole context");
  }
  if (c->arch == ARCH_LLAMA) {
    uint32_t sw;
    if (field_uint(c, cfg, where, "sliding_window", 0, 0, 0, UINT32_MAX, &sw)) return -1;
    if (sw && sw < c->n_ctx)
      note(c, "config.json: sliding_window %u is ignored: attention always sees the whole context", sw);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Safetensors files                                                         */
/* ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int open_weights(conv *c) {
  DIR *d = opendir(c->dir);
  if (!d) return cfail(c, "%s: %s", c->dir, strerror(errno));
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (l <= 12 || strcmp(e->d_name + l - 12, ".safetensors") != 0 || e->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 8;
      char **p = realloc(names, cap * sizeof *p);
      if (!p) {
        rc = cfail(c, "out of memory");
        break;
      }
      names = p;
    }
    if (!(names[n] = xstrdup(e->d_name))) {
      rc = cfail(c, "out of memory");
      break;
    }
    n++;
  }
  closedir(d);
  if (!rc && n == 0) rc = cfail(c, "%s: no *.safetensors files", c->dir);
  if (!rc) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n && !rc; i++) {
    char *p = join_path(c->dir, names[i]);
    if (!p) rc = cfail(c, "out of memory");
    else if (st_add_file(&c->st, p, c->err, sizeof c->err) != 0) rc = -1;
    free(p);
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Tensors                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct plan {
  char gguf[96];
  char hf[128];
  const st_tensor *src;
  uint64_t rows, cols; /* cols = 0: a vector of rows elements */
  uint32_t permute;    /* heads to permute the rows of (llama Q and K), or 0 */
} plan;

typedef struct plan_list {
  plan *p;
  size_t n, cap;
} plan_list;

static int plan_add(conv *c, plan_list *L, const char *gguf, const char *hf, uint64_t rows, uint64_t cols,
                    uint32_t permute) {
  if (L->n == L->cap) {
    size_t cap = L->cap ? L->cap * 2 : 64;
    plan *p = realloc(L->p, cap * sizeof *p);
    if (!p) return cfail(c, "out of memory");
    L->p = p;
    L->cap = cap;
  }
  plan *p = &L->p[L->n++];
  memset(p, 0, sizeof *p);
  snprintf(p->gguf, sizeof p->gguf, "%s", gguf);
  snprintf(p->hf, sizeof p->hf, "%s", hf);
  p->rows = rows;
  p->cols = cols;
  p->permute = permute;
  return 0;
}

/* Builds the list of tensors to write, in file order, each with its source
 * checked for presence and shape; every source tensor must be used. */
static int build_plan(conv *c, plan_list *L) {
  uint64_t E = c->n_embd, QD = (uint64_t)c->n_heads * c->head_dim, KD = (uint64_t)c->n_kv * c->head_dim,
           F = c->n_ff, HD = c->head_dim;
  const st_tensor *emb = st_find(&c->st, "model.embed_tokens.weight");
  if (!emb) return cfail(c, "tensor 'model.embed_tokens.weight' is missing from the *.safetensors files");
  if (emb->n_dims != 2 || emb->shape[1] != E || emb->shape[0] == 0 || emb->shape[0] > MAX_VOCAB)
    return cfail(c, "tensor 'model.embed_tokens.weight' has %u dims [%llu, %llu], expected [vocab, %llu]",
                 emb->n_dims, (unsigned long long)emb->shape[0],
                 (unsigned long long)(emb->n_dims > 1 ? emb->shape[1] : 0), (unsigned long long)E);
  uint64_t V = emb->shape[0];
  if (c->n_vocab && c->n_vocab != V)
    return cfail(c, "config.json: vocab_size %u differs from the %llu rows of model.embed_tokens.weight",
                 c->n_vocab, (unsigned long long)V);
  c->n_vocab = (uint32_t)V;
  const st_tensor *head = st_find(&c->st, "lm_head.weight");
  if (c->tied == 1 && head) note(c, "lm_head.weight is ignored: tie_word_embeddings is set");
  if (c->tied == -1) c->tied = head == NULL;
  if (!c->tied && !head)
    return cfail(c, "tensor 'lm_head.weight' is missing (and config.json does not set tie_word_embeddings)");

  int st = 0;
  st |= plan_add(c, L, "token_embd.weight", "model.embed_tokens.weight", V, E, 0);
  for (uint32_t l = 0; l < c->n_layers && !st; l++) {
    char g[96], h[128];
#define ADD(gn, hn, r, cl, perm)                                  \
  (snprintf(g, sizeof g, "blk.%u.%s", l, gn),                    \
   snprintf(h, sizeof h, "model.layers.%u.%s", l, hn), st |= plan_add(c, L, g, h, r, cl, perm))
    ADD("attn_norm.weight", "input_layernorm.weight", E, 0, 0);
    ADD("attn_q.weight", "self_attn.q_proj.weight", QD, E, c->arch == ARCH_LLAMA ? c->n_heads : 0);
    ADD("attn_k.weight", "self_attn.k_proj.weight", KD, E, c->arch == ARCH_LLAMA ? c->n_kv : 0);
    ADD("attn_v.weight", "self_attn.v_proj.weight", KD, E, 0);
    if (c->arch == ARCH_QWEN2) {
      ADD("attn_q.bias", "self_attn.q_proj.bias", QD, 0, 0);
      ADD("attn_k.bias", "self_attn.k_proj.bias", KD, 0, 0);
      ADD("attn_v.bias", "self_attn.v_proj.bias", KD, 0, 0);
    }
    if (c->arch == ARCH_QWEN3) {
      ADD("attn_q_norm.weight", "self_attn.q_norm.weight", HD, 0, 0);
      ADD("attn_k_norm.weight", "self_attn.k_norm.weight", HD, 0, 0);
    }
    ADD("attn_output.weight", "self_attn.o_proj.weight", E, QD, 0);
    ADD("ffn_norm.weight", "post_attention_layernorm.weight", E, 0, 0);
    ADD("ffn_gate.weight", "mlp.gate_proj.weight", F, E, 0);
    ADD("ffn_up.weight", "mlp.up_proj.weight", F, E, 0);
    ADD("ffn_down.weight", "mlp.down_proj.weight", E, F, 0);
#undef ADD
  }
  st |= plan_add(c, L, "output_norm.weight", "model.norm.weight", E, 0, 0);
  if (!c->tied) st |= plan_add(c, L, "output.weight", "lm_head.weight", V, E, 0);
  if (st) return -1;

  for (size_t i = 0; i < L->n; i++) {
    plan *p = &L->p[i];
    const st_tensor *t = st_find(&c->st, p->hf);
    if (!t) return cfail(c, "tensor '%s' is missing from the *.safetensors files", p->hf);
    int ok = p->cols ? t->n_dims == 2 && t->shape[0] == p->rows && t->shape[1] == p->cols
                     : t->n_dims == 1 && t->shape[0] == p->rows;
    if (!ok) {
      char got[160];
      size_t k = 0;
      got[0] = '\0';
      for (uint32_t d = 0; d < t->n_dims && k < sizeof got - 24; d++)
        k += (size_t)snprintf(got + k, sizeof got - k, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
      if (p->cols)
        return cfail(c, "tensor '%s' has shape [%s]; config.json implies [%llu, %llu]", p->hf, got,
                     (unsigned long long)p->rows, (unsigned long long)p->cols);
      return cfail(c, "tensor '%s' has shape [%s]; config.json implies [%llu]", p->hf, got,
                   (unsigned long long)p->rows);
    }
    if (t->dtype == ST_OTHER)
      return cfail(c, "tensor '%s' has dtype %s; only F32, F16 and BF16 are supported", p->hf, t->dtype_name);
    p->src = t;
  }
  /* Every tensor of the checkpoint must have found a place. */
  for (size_t i = 0; i < c->st.n_tensors; i++) {
    const char *n = c->st.tensors[i].name;
    int used = 0;
    for (size_t j = 0; j < L->n && !used; j++) used = L->p[j].src == &c->st.tensors[i];
    if (used) continue;
    size_t nl = strlen(n);
    if (nl >= 20 && strcmp(n + nl - 20, ".rotary_emb.inv_freq") == 0) continue;
    if (!strcmp(n, "lm_head.weight") && c->tied) continue;
    return cfail(c, "tensor '%s' (%s) has no place in a %s model as tqai converts it", n,
                 c->st.files[c->st.tensors[i].file].path, c->hf_arch);
  }
  return 0;
}

/* Rows of each head reordered from (i, i + d/2) pairs to (2i, 2i+1) pairs:
 * out row h*d + 2i + s = in row h*d + s*d/2 + i. */
static void permute_rows(const float *in, float *out, uint64_t rows, uint64_t cols, uint32_t heads) {
  uint64_t d = rows / heads, half = d / 2;
  for (uint64_t h = 0; h < heads; h++)
    for (uint64_t i = 0; i < half; i++)
      for (uint64_t s = 0; s < 2; s++)
        memcpy(out + (h * d + 2 * i + s) * cols, in + (h * d + s * half + i) * cols, cols * sizeof *out);
}

static int write_tensors(conv *c, const plan_list *L) {
  size_t total = L->n + (c->rope_factors ? 1 : 0);
  size_t k = 0;
  for (size_t i = 0; i < L->n; i++) {
    const plan *p = &L->p[i];
    const st_tensor *t = p->src;
    uint64_t n = t->n_elements;
    if (n > SIZE_MAX / sizeof(float) / 2) return cfail(c, "tensor '%s' is too large", p->hf);
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f) return cfail(c, "out of memory (tensor '%s')", p->hf);
    st_to_float(t, f);
    for (uint64_t j = 0; j < n; j++)
      if (!isfinite(f[j])) {
        free(f);
        return cfail(c, "tensor '%s' contains NaN or infinity", p->hf);
      }
    if (p->permute) {
      float *g = malloc((n ? n : 1) * sizeof *g);
      if (!g) {
        free(f);
        return cfail(c, "out of memory (tensor '%s')", p->hf);
      }
      permute_rows(f, g, p->rows, p->cols, p->permute);
      free(f);
      f = g;
    }
    tq_tensor_type ty = TQ_TENSOR_F32;
    if (p->cols) {
      ty = c->type;
      uint32_t blk = tq_tensor_type_block(ty);
      if (p->cols % blk) {
        note(c, "%s: %llu columns do not fill %s blocks of %u; stored as f16", p->gguf,
             (unsigned long long)p->cols, tq_tensor_type_name(ty), blk);
        ty = TQ_TENSOR_F16;
      }
      if (ty == TQ_TENSOR_F16) {
        float amax = 0.0f;
        for (uint64_t j = 0; j < n; j++) amax = fabsf(f[j]) > amax ? fabsf(f[j]) : amax;
        if (amax > 65504.0f) {
          note(c, "%s: values up to %g do not fit f16; stored as f32", p->gguf, amax);
          ty = TQ_TENSOR_F32;
        }
      }
    }
    uint64_t blocks = n / tq_tensor_type_block(ty);
    size_t bytes = (size_t)(blocks * tq_tensor_type_block_bytes(ty));
    void *q = malloc(bytes ? bytes : 1);
    tq_status s = q ? tq_tensor_from_float(ty, f, q, n) : TQ_ERR_OUT_OF_MEMORY;
    free(f);
    if (s == TQ_OK) {
      uint64_t ne[2] = {p->cols ? p->cols : p->rows, p->cols ? p->rows : 1};
      s = tq_gguf_writer_add_tensor(c->w, p->gguf, ty, p->cols ? 2 : 1, ne, q, bytes);
    }
    free(q);
    if (s != TQ_OK) return cfail(c, "tensor '%s': %s", p->gguf, tq_status_message(s));
    if (ty == TQ_TENSOR_Q8_0 || ty == TQ_TENSOR_Q4_0) c->quantized_any = 1;
    if (ty == TQ_TENSOR_F16) c->f16_any = 1;
    k++;
    if (!c->quiet) {
      char shape[64];
      if (p->cols)
        snprintf(shape, sizeof shape, "[%llu, %llu]", (unsigned long long)p->rows, (unsigned long long)p->cols);
      else
        snprintf(shape, sizeof shape, "[%llu]", (unsigned long long)p->rows);
      fprintf(stderr, "[%3zu/%3zu] %-28s %-4s -> %-4s %s%s\n", k, total, p->gguf, t->dtype_name,
              tq_tensor_type_name(ty), shape, p->permute ? " (rows permuted for RoPE)" : "");
    }
  }
  if (c->rope_factors) {
    uint64_t ne[1] = {c->n_rot / 2};
    tq_status s = tq_gguf_writer_add_tensor(c->w, "rope_freqs.weight", TQ_TENSOR_F32, 1, ne, c->rope_factors,
                                            ne[0] * sizeof(float));
    if (s != TQ_OK) return cfail(c, "tensor 'rope_freqs.weight': %s", tq_status_message(s));
    k++;
    if (!c->quiet)
      fprintf(stderr, "[%3zu/%3zu] %-28s llama3 rope scaling -> f32 [%llu]\n", k, total, "rope_freqs.weight",
              (unsigned long long)ne[0]);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Metadata                                                                  */
/* ------------------------------------------------------------------------ */

/* Sticky writer status: the first failure is kept. */
typedef struct kvw {
  conv *c;
  tq_status st;
  const char *key;
} kvw;

static void kv_check(kvw *k, const char *key, tq_status s) {
  if (k->st == TQ_OK && s != TQ_OK) {
    k->st = s;
    k->key = key;
  }
}

static void kv_arch_u32(kvw *k, const char *name, uint32_t v) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", k->c->arch_name, name);
  kv_check(k, name, tq_gguf_writer_add_uint32(k->c->w, key, v));
}

static void kv_arch_f32(kvw *k, const char *name, float v) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", k->c->arch_name, name);
  kv_check(k, name, tq_gguf_writer_add_float32(k->c->w, key, v));
}

static const char *dir_name(const char *dir, char *buf, size_t size) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  size_t s = n;
  while (s > 0 && dir[s - 1] != '/') s--;
  snprintf(buf, size, "%.*s", (int)(n - s), dir + s);
  if (!buf[0] || !strcmp(buf, ".") || !strcmp(buf, "..") || !strcmp(buf, "/")) snprintf(buf, size, "model");
  return buf;
}

static int write_model_kv(conv *c) {
  kvw k = {c, TQ_OK, NULL};
  char nbuf[256];
  const char *name = c->name ? c->name : dir_name(c->dir, nbuf, sizeof nbuf);
  kv_check(&k, "general.architecture", tq_gguf_writer_add_string(c->w, "general.architecture", c->arch_name));
  kv_check(&k, "general.name", tq_gguf_writer_add_string(c->w, "general.name", name));
  /* llama.cpp's file types: 0 all f32, 1 mostly f16, 2 mostly q4_0, 7 mostly q8_0. */
  uint32_t ft = c->type == TQ_TENSOR_Q8_0 ? 7 : c->type == TQ_TENSOR_Q4_0 ? 2 : c->type == TQ_TENSOR_F16 ? 1 : 0;
  kv_check(&k, "general.file_type", tq_gguf_writer_add_uint32(c->w, "general.file_type", ft));
  if (c->type == TQ_TENSOR_Q8_0 || c->type == TQ_TENSOR_Q4_0)
    kv_check(&k, "general.quantization_version",
             tq_gguf_writer_add_uint32(c->w, "general.quantization_version", 2));
  kv_arch_u32(&k, "vocab_size", c->n_vocab);
  kv_arch_u32(&k, "context_length", c->n_ctx);
  kv_arch_u32(&k, "embedding_length", c->n_embd);
  kv_arch_u32(&k, "block_count", c->n_layers);
  kv_arch_u32(&k, "feed_forward_length", c->n_ff);
  kv_arch_u32(&k, "attention.head_count", c->n_heads);
  kv_arch_u32(&k, "attention.head_count_kv", c->n_kv);
  if (c->n_embd % c->n_heads || c->head_dim != c->n_embd / c->n_heads) {
    kv_arch_u32(&k, "attention.key_length", c->head_dim);
    kv_arch_u32(&k, "attention.value_length", c->head_dim);
  }
  kv_arch_u32(&k, "rope.dimension_count", c->n_rot);
  kv_arch_f32(&k, "rope.freq_base", (float)c->rope_base);
  kv_arch_f32(&k, "attention.layer_norm_rms_epsilon", (float)c->rms_eps);
  if (k.st != TQ_OK) return cfail(c, "metadata '%s': %s", k.key, tq_status_message(k.st));
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Tokenizer                                                                 */
/* ------------------------------------------------------------------------ */

/* A string -> id hash table over the token texts (first id wins). */
typedef struct tok_index {
  int32_t *slot;
  size_t mask;
} tok_index;

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static int index_build(conv *c, tok_index *ix) {
  size_t cap = 16;
  while (cap < (size_t)c->n_vocab * 2) cap *= 2;
  ix->slot = malloc(cap * sizeof *ix->slot);
  if (!ix->slot) return cfail(c, "out of memory");
  ix->mask = cap - 1;
  for (size_t i = 0; i < cap; i++) ix->slot[i] = -1;
  for (uint32_t id = 0; id < c->n_vocab; id++) {
    const char *t = c->tok_text[id];
    size_t n = strlen(t), h = (size_t)hash_bytes(t, n) & ix->mask;
    while (ix->slot[h] >= 0 && strcmp(c->tok_text[ix->slot[h]], t) != 0) h = (h + 1) & ix->mask;
    if (ix->slot[h] < 0) ix->slot[h] = (int32_t)id;
  }
  return 0;
}

static int32_t index_find(const conv *c, const tok_index *ix, const char *s, size_t n) {
  size_t h = (size_t)hash_bytes(s, n) & ix->mask;
  while (ix->slot[h] >= 0) {
    const char *t = c->tok_text[ix->slot[h]];
    if (strlen(t) == n && memcmp(t, s, n) == 0) return ix->slot[h];
    h = (h + 1) & ix->mask;
  }
  return -1;
}

/* The pre-tokenizers of tokenizer.json, Sequences flattened. */
typedef struct pre_info {
  int bytelevel, bytelevel_regex, bytelevel_prefix, digits, metaspace, metaspace_prefix, other;
  const char *split_regex;
  int n_split;
} pre_info;

static void scan_pre(struct json_object *p, pre_info *pi, int depth) {
  if (!p || depth > 8) return;
  const char *type = jstr(jget(p, "type"));
  if (!type) {
    pi->other = 1;
    return;
  }
  if (!strcmp(type, "Sequence")) {
    struct json_object *a = jget(p, "pretokenizers");
    if (!a || !json_object_is_type(a, json_type_array)) {
      pi->other = 1;
      return;
    }
    for (size_t i = 0; i < json_object_array_length(a); i++)
      scan_pre(json_object_array_get_idx(a, i), pi, depth + 1);
  } else if (!strcmp(type, "ByteLevel")) {
    struct json_object *r = jget(p, "use_regex"), *ap = jget(p, "add_prefix_space");
    pi->bytelevel = 1;
    pi->bytelevel_regex = !r || json_object_get_boolean(r);
    pi->bytelevel_prefix = ap && json_object_get_boolean(ap);
  } else if (!strcmp(type, "Digits")) {
    struct json_object *ind = jget(p, "individual_digits");
    pi->digits = ind && json_object_get_boolean(ind) ? 1 : 2;
  } else if (!strcmp(type, "Split")) {
    pi->n_split++;
    pi->split_regex = jstr(jget(jget(p, "pattern"), "Regex"));
  } else if (!strcmp(type, "Metaspace")) {
    const char *scheme = jstr(jget(p, "prepend_scheme"));
    struct json_object *ap = jget(p, "add_prefix_space");
    pi->metaspace = 1;
    pi->metaspace_prefix = scheme ? strcmp(scheme, "never") != 0 : !ap || json_object_get_boolean(ap);
  } else {
    pi->other = 1;
  }
}

/* 1 if the normalizer (or one in a Sequence) is Prepend("▁"), 2 if it
 * replaces " " by "▁" (and not Prepend), else 0. */
static int scan_normalizer(struct json_object *n, int depth) {
  if (!n || depth > 8) return 0;
  const char *type = jstr(jget(n, "type"));
  if (!type) return 0;
  if (!strcmp(type, "Sequence")) {
    struct json_object *a = jget(n, "normalizers");
    int r = 0;
    if (!a || !json_object_is_type(a, json_type_array)) return 0;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
      int x = scan_normalizer(json_object_array_get_idx(a, i), depth + 1);
      if (x == 1 || (x == 2 && r == 0)) r = x;
    }
    return r;
  }
  if (!strcmp(type, "Prepend")) {
    const char *s = jstr(jget(n, "prepend"));
    return s && !strcmp(s, "\xe2\x96\x81") ? 1 : 0;
  }
  if (!strcmp(type, "Replace")) {
    const char *from = jstr(jget(jget(n, "pattern"), "String")), *to = jstr(jget(n, "content"));
    return from && to && !strcmp(from, " ") && !strcmp(to, "\xe2\x96\x81") ? 2 : 0;
  }
  return 0;
}

/* The text of a special token in tokenizer_config.json: a string or an
 * object with "content". */
static const char *special_text(struct json_object *v) {
  if (!v) return NULL;
  if (json_object_is_type(v, json_type_string)) return jstr(v);
  if (json_object_is_type(v, json_type_object)) return jstr(jget(v, "content"));
  return NULL;
}

/* Reads one of tokenizer_config.json's bos_token, eos_token, ... into an id
 * (-1 when absent); falls back to config.json's `cfg_key` (an integer, or
 * for eos an array whose first element is taken). */
static int special_id(conv *c, const tok_index *ix, const char *tc_key, const char *cfg_key, int32_t *out) {
  *out = -1;
  struct json_object *v = jget(c->tokcfg, tc_key);
  if (v) {
    const char *t = special_text(v);
    if (!t) return cfail(c, "tokenizer_config.json: field '%s' must be a string or an object with 'content'", tc_key);
    int32_t id = index_find(c, ix, t, strlen(t));
    if (id >= 0) {
      *out = id;
      return 0;
    }
    note(c, "tokenizer_config.json: %s '%.64s' is not in the vocabulary", tc_key, t);
  }
  if (!cfg_key) return 0;
  struct json_object *x = jget(c->cfg, cfg_key);
  if (x && json_object_is_type(x, json_type_array) && json_object_array_length(x) > 0)
    x = json_object_array_get_idx(x, 0);
  if (!x) return 0;
  if (!json_object_is_type(x, json_type_int))
    return cfail(c, "config.json: field '%s' must be an integer, not %s", cfg_key, jtype(x));
  int64_t id = json_object_get_int64(x);
  if (id < 0 || id >= (int64_t)c->n_vocab)
    return cfail(c, "config.json: field '%s' = %lld is outside the vocabulary of %u", cfg_key, (long long)id,
                 c->n_vocab);
  *out = (int32_t)id;
  return 0;
}

/* Whether the post-processor adds a special token before (*bos) and after
 * (*eos) a single sequence; -1 when it says nothing. *bos_id: the token it
 * adds first, or -1. */
static void scan_post(struct json_object *pp, int *bos, int *eos, int32_t *bos_id, int depth) {
  if (!pp || depth > 8) return;
  const char *type = jstr(jget(pp, "type"));
  if (!type) return;
  if (!strcmp(type, "Sequence")) {
    struct json_object *a = jget(pp, "processors");
    if (!a || !json_object_is_type(a, json_type_array)) return;
    for (size_t i = 0; i < json_object_array_length(a); i++)
      scan_post(json_object_array_get_idx(a, i), bos, eos, bos_id, depth + 1);
    return;
  }
  if (strcmp(type, "TemplateProcessing") != 0) return;
  struct json_object *single = jget(pp, "single");
  if (!single || !json_object_is_type(single, json_type_array)) return;
  size_t n = json_object_array_length(single);
  *bos = *eos = 0;
  for (size_t i = 0; i < n; i++) {
    struct json_object *sp = jget(json_object_array_get_idx(single, i), "SpecialToken");
    if (!sp) continue;
    if (i == 0) {
      *bos = 1;
      const char *name = jstr(jget(sp, "id"));
      struct json_object *ids = name ? jget(jget(jget(pp, "special_tokens"), name), "ids") : NULL;
      if (ids && json_object_is_type(ids, json_type_array) && json_object_array_length(ids) == 1) {
        struct json_object *x = json_object_array_get_idx(ids, 0);
        if (json_object_is_type(x, json_type_int)) *bos_id = (int32_t)json_object_get_int64(x);
      }
    } else if (i == n - 1) {
      *eos = 1;
    }
  }
}

static int set_token(conv *c, int64_t id, const char *text, const char *where) {
  if (id < 0 || id >= (int64_t)c->n_vocab)
    return cfail(c, "tokenizer.json: %s: token id %lld is outside the model's vocabulary of %u", where,
                 (long long)id, c->n_vocab);
  if (!text) return cfail(c, "tokenizer.json: %s: token %lld is not a string without NULs", where, (long long)id);
  char *t = xstrdup(text);
  if (!t) return cfail(c, "out of memory");
  free(c->tok_text[id]);
  c->tok_text[id] = t;
  return 0;
}

static int is_byte_token(const char *t) {
  static const char hex[] = "0123456789ABCDEF";
  return strlen(t) == 6 && !strncmp(t, "<0x", 3) && t[5] == '>' && strchr(hex, t[3]) && strchr(hex, t[4]);
}

/* One merge ("a b" or ["a", "b"]) as its two parts; 0 on success. */
static int merge_parts(struct json_object *m, const char **a, size_t *al, const char **b, size_t *bl) {
  if (json_object_is_type(m, json_type_string)) {
    const char *s = jstr(m);
    const char *sp = s ? strchr(s, ' ') : NULL;
    if (!sp) return -1;
    *a = s;
    *al = (size_t)(sp - s);
    *b = sp + 1;
    *bl = strlen(sp + 1);
    return 0;
  }
  if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2) {
    *a = jstr(json_object_array_get_idx(m, 0));
    *b = jstr(json_object_array_get_idx(m, 1));
    if (!*a || !*b) return -1;
    *al = strlen(*a);
    *bl = strlen(*b);
    return 0;
  }
  return -1;
}

static int write_tokenizer(conv *c) {
  struct json_object *model = jget(c->tok, "model");
  const char *where = "tokenizer.json";
  if (!json_object_is_type(c->tok, json_type_object)) return cfail(c, "tokenizer.json: not a JSON object");
  if (!model || !json_object_is_type(model, json_type_object))
    return cfail(c, "tokenizer.json: field 'model' is missing or not an object");
  const char *mtype;
  if (field_str(c, model, "tokenizer.json: model", "type", 1, &mtype)) return -1;
  pre_info pi;
  memset(&pi, 0, sizeof pi);
  scan_pre(jget(c->tok, "pre_tokenizer"), &pi, 0);
  int norm = scan_normalizer(jget(c->tok, "normalizer"), 0);
  int byte_fallback = 0, ignore_merges = 0;
  if (field_bool(c, model, "tokenizer.json: model", "byte_fallback", &byte_fallback) ||
      field_bool(c, model, "tokenizer.json: model", "ignore_merges", &ignore_merges))
    return -1;
  int unigram = !strcmp(mtype, "Unigram");
  if (unigram) {
    c->spm = 1;
    note(c, "tokenizer.json: a Unigram model is written as SentencePiece-style \"llama\" with its scores; "
            "tqai merges pieces by score, which can split some words differently from the Unigram model's "
            "best segmentation");
  } else if (!strcmp(mtype, "BPE")) {
    if (pi.bytelevel) c->spm = 0;
    else if (byte_fallback == 1 || pi.metaspace || norm) c->spm = 1;
    else
      return cfail(c, "tokenizer.json: a BPE model with neither a ByteLevel pre-tokenizer nor "
                      "SentencePiece-style byte fallback is not supported");
  } else {
    return cfail(c, "tokenizer.json: tokenizer model '%.40s' is not supported (BPE and Unigram are)", mtype);
  }

  uint32_t V = c->n_vocab;
  c->tok_text = calloc(V, sizeof *c->tok_text);
  c->tok_type = malloc(V * sizeof *c->tok_type);
  c->tok_score = malloc(V * sizeof *c->tok_score);
  c->tok_added = calloc(V, 1);
  if (!c->tok_text || !c->tok_type || !c->tok_score || !c->tok_added) return cfail(c, "out of memory");
  for (uint32_t i = 0; i < V; i++) {
    c->tok_type[i] = TQ_TOKEN_NORMAL;
    c->tok_score[i] = 0.0f;
  }
  uint8_t *seen = calloc(V, 1);
  if (!seen) return cfail(c, "out of memory");
  struct json_object *vocab = jget(model, "vocab");
  int rc = 0;
  int32_t unk = -1;
  if (unigram) {
    if (!vocab || !json_object_is_type(vocab, json_type_array)) {
      free(seen);
      return cfail(c, "tokenizer.json: model.vocab must be an array of [piece, score]");
    }
    size_t n = json_object_array_length(vocab);
    for (size_t i = 0; i < n && !rc; i++) {
      struct json_object *e = json_object_array_get_idx(vocab, i);
      struct json_object *sc = e && json_object_is_type(e, json_type_array) && json_object_array_length(e) == 2
                                   ? json_object_array_get_idx(e, 1)
                                   : NULL;
      if (!sc || (!json_object_is_type(sc, json_type_double) && !json_object_is_type(sc, json_type_int)) ||
          !isfinite(json_object_get_double(sc))) {
        rc = cfail(c, "tokenizer.json: model.vocab[%zu] is not [piece, score]", i);
        break;
      }
      rc = set_token(c, (int64_t)i, jstr(json_object_array_get_idx(e, 0)), "model.vocab");
      if (!rc) {
        double s = json_object_get_double(sc);
        c->tok_score[i] = s > 3e38 ? 3e38f : s < -3e38 ? -3e38f : (float)s;
        seen[i] = 1;
      }
    }
    uint32_t u = UINT32_MAX;
    if (!rc) rc = field_uint(c, model, "tokenizer.json: model", "unk_id", 0, UINT32_MAX, 0, UINT32_MAX, &u);
    if (!rc && u != UINT32_MAX) {
      if (u >= V) rc = cfail(c, "tokenizer.json: model.unk_id %u is outside the vocabulary", u);
      else unk = (int32_t)u;
    }
  } else {
    if (!vocab || !json_object_is_type(vocab, json_type_object)) {
      free(seen);
      return cfail(c, "tokenizer.json: model.vocab must be an object of token: id");
    }
    json_object_object_foreach(vocab, key, val) {
      if (!json_object_is_type(val, json_type_int)) {
        rc = cfail(c, "tokenizer.json: model.vocab['%.40s'] is not an integer id", key);
        break;
      }
      int64_t id = json_object_get_int64(val);
      if ((rc = set_token(c, id, key, "model.vocab")) != 0) break;
      if (seen[id]) {
        rc = cfail(c, "tokenizer.json: model.vocab gives id %lld to two tokens", (long long)id);
        break;
      }
      seen[id] = 1;
    }
  }
  /* Added tokens override the model's vocabulary. */
  struct json_object *added = jget(c->tok, "added_tokens");
  if (!rc && added && !json_object_is_type(added, json_type_array))
    rc = cfail(c, "tokenizer.json: field 'added_tokens' must be an array");
  for (size_t i = 0; !rc && added && i < json_object_array_length(added); i++) {
    struct json_object *a = json_object_array_get_idx(added, i);
    struct json_object *jid = jget(a, "id"), *sp = jget(a, "special");
    if (!jid || !json_object_is_type(jid, json_type_int)) {
      rc = cfail(c, "tokenizer.json: added_tokens[%zu].id is missing or not an integer", i);
      break;
    }
    int64_t id = json_object_get_int64(jid);
    if ((rc = set_token(c, id, jstr(jget(a, "content")), "added_tokens")) != 0) break;
    seen[id] = 1;
    c->tok_added[id] = 1;
    c->tok_type[id] = sp && json_object_get_boolean(sp) ? TQ_TOKEN_CONTROL : TQ_TOKEN_USER_DEFINED;
  }
  uint32_t n_pad = 0;
  for (uint32_t id = 0; !rc && id < V; id++) {
    if (seen[id]) continue;
    char pad[32];
    snprintf(pad, sizeof pad, "[PAD%u]", id);
    rc = set_token(c, id, pad, "padding");
    c->tok_type[id] = TQ_TOKEN_UNUSED;
    n_pad++;
  }
  free(seen);
  if (rc) return rc;
  if (n_pad) note(c, "%u of the model's %u token ids have no token; they are written as unused [PADn]", n_pad, V);

  tok_index ix = {0};
  if (index_build(c, &ix)) return -1;
  struct json_object *merges = jget(model, "merges");
  if (merges && !json_object_is_type(merges, json_type_array)) {
    free(ix.slot);
    return cfail(c, "tokenizer.json: model.merges must be an array");
  }
  size_t n_merges = merges ? json_object_array_length(merges) : 0;
  kvw k = {c, TQ_OK, NULL};
  const char *pre = NULL;
  char **mtext = NULL;

  if (!c->spm) {
    if (!strcmp(mtype, "BPE") && !merges) {
      free(ix.slot);
      return cfail(c, "tokenizer.json: field 'model.merges' is missing");
    }
    if (pi.split_regex && pi.n_split == 1 && !pi.digits && !strcmp(pi.split_regex, RE_LLAMA3))
      pre = ignore_merges == 1 ? "llama-bpe" : "smaug-bpe";
    else if (pi.split_regex && pi.n_split == 1 && !pi.digits && !strcmp(pi.split_regex, RE_QWEN2))
      pre = "qwen2";
    else if (!pi.n_split && !pi.digits && pi.bytelevel_regex && !pi.other)
      pre = "gpt2";
    else if (!pi.n_split && pi.digits == 1 && pi.bytelevel_regex && !pi.other)
      pre = "smollm";
    if (!pre) {
      pre = "default";
      note(c, "tokenizer.json: pre-tokenizer not recognized; writing 'default' (its splits may differ from "
              "Hugging Face's)");
    }
    if (ignore_merges == 1 && strcmp(pre, "llama-bpe") != 0)
      note(c, "tokenizer.json: ignore_merges is set but the '%s' pre-tokenizer does not ignore merges", pre);
    if (pi.bytelevel_prefix) note(c, "tokenizer.json: ByteLevel add_prefix_space is not reproduced");
    mtext = calloc(n_merges ? n_merges : 1, sizeof *mtext);
    if (!mtext) rc = cfail(c, "out of memory");
    for (size_t i = 0; !rc && i < n_merges; i++) {
      const char *a, *b;
      size_t al, bl;
      if (merge_parts(json_object_array_get_idx(merges, i), &a, &al, &b, &bl) != 0) {
        rc = cfail(c, "tokenizer.json: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
        break;
      }
      mtext[i] = malloc(al + bl + 2);
      if (!mtext[i]) {
        rc = cfail(c, "out of memory");
        break;
      }
      memcpy(mtext[i], a, al);
      mtext[i][al] = ' ';
      memcpy(mtext[i] + al + 1, b, bl);
      mtext[i][al + bl + 1] = '\0';
    }
    if (!rc) {
      kv_check(&k, "tokenizer.ggml.model", tq_gguf_writer_add_string(c->w, "tokenizer.ggml.model", "gpt2"));
      kv_check(&k, "tokenizer.ggml.pre", tq_gguf_writer_add_string(c->w, "tokenizer.ggml.pre", pre));
    }
  } else {
    /* SentencePiece-style: scores rank the merges. A BPE tokenizer.json
     * lists its merges best first; a piece scores minus the rank of the
     * first merge that makes it, pieces no merge makes score below them. */
    if (!unigram) {
      const char *ut = NULL;
      if (field_str(c, model, "tokenizer.json: model", "unk_token", 0, &ut)) rc = -1;
      if (ut) unk = index_find(c, &ix, ut, strlen(ut));
      float *best = malloc(V * sizeof *best);
      char *buf = NULL;
      size_t bufcap = 0;
      if (!best) rc = cfail(c, "out of memory");
      for (uint32_t id = 0; !rc && id < V; id++) best[id] = 1.0f; /* unset */
      for (size_t i = 0; !rc && i < n_merges; i++) {
        const char *a, *b;
        size_t al, bl;
        if (merge_parts(json_object_array_get_idx(merges, i), &a, &al, &b, &bl) != 0) {
          rc = cfail(c, "tokenizer.json: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
          break;
        }
        if (al + bl + 1 > bufcap) {
          bufcap = (al + bl + 1) * 2;
          char *nb = realloc(buf, bufcap);
          if (!nb) {
            rc = cfail(c, "out of memory");
            break;
          }
          buf = nb;
        }
        memcpy(buf, a, al);
        memcpy(buf + al, b, bl);
        int32_t id = index_find(c, &ix, buf, al + bl);
        if (id >= 0 && best[id] > 0.0f) best[id] = -(float)i;
      }
      for (uint32_t id = 0; !rc && id < V; id++)
        c->tok_score[id] = best[id] <= 0.0f ? best[id] : c->tok_added[id] ? 0.0f : -(float)(n_merges + id);
      free(best);
      free(buf);
    }
    for (uint32_t id = 0; !rc && id < V; id++) {
      if (c->tok_added[id] || c->tok_type[id] == TQ_TOKEN_UNUSED) continue;
      if (byte_fallback == 1 && is_byte_token(c->tok_text[id])) c->tok_type[id] = TQ_TOKEN_BYTE;
    }
    if (unk >= 0) c->tok_type[unk] = TQ_TOKEN_UNKNOWN;
    int prefix = norm == 1 || (pi.metaspace && pi.metaspace_prefix);
    if (!rc) {
      kv_check(&k, "tokenizer.ggml.model", tq_gguf_writer_add_string(c->w, "tokenizer.ggml.model", "llama"));
      kv_check(&k, "tokenizer.ggml.add_space_prefix",
               tq_gguf_writer_add_bool(c->w, "tokenizer.ggml.add_space_prefix", prefix));
    }
  }
  if (!rc) {
    kv_check(&k, "tokenizer.ggml.tokens",
             tq_gguf_writer_add_string_array(c->w, "tokenizer.ggml.tokens", (const char *const *)c->tok_text, V));
    if (c->spm)
      kv_check(&k, "tokenizer.ggml.scores",
               tq_gguf_writer_add_array(c->w, "tokenizer.ggml.scores", TQ_GGUF_FLOAT32, c->tok_score, V));
    kv_check(&k, "tokenizer.ggml.token_type",
             tq_gguf_writer_add_array(c->w, "tokenizer.ggml.token_type", TQ_GGUF_INT32, c->tok_type, V));
    if (mtext)
      kv_check(&k, "tokenizer.ggml.merges",
               tq_gguf_writer_add_string_array(c->w, "tokenizer.ggml.merges", (const char *const *)mtext, n_merges));
  }
  if (mtext)
    for (size_t i = 0; i < n_merges; i++) free(mtext[i]);
  free(mtext);

  /* Special tokens and flags. */
  int32_t bos = -1, eos = -1, pad = -1, unk2 = -1;
  if (!rc && c->tokcfg && !json_object_is_type(c->tokcfg, json_type_object))
    rc = cfail(c, "tokenizer_config.json: not a JSON object");
  if (!rc) rc = special_id(c, &ix, "bos_token", "bos_token_id", &bos);
  if (!rc) rc = special_id(c, &ix, "eos_token", "eos_token_id", &eos);
  if (!rc) rc = special_id(c, &ix, "pad_token", "pad_token_id", &pad);
  if (!rc) rc = special_id(c, &ix, "unk_token", NULL, &unk2);
  free(ix.slot);
  if (rc) return rc;
  if (unk < 0) unk = unk2;
  int add_bos = -1, add_eos = -1, post_bos = -1, post_eos = -1;
  int32_t post_bos_id = -1;
  if (field_bool(c, c->tokcfg, "tokenizer_config.json", "add_bos_token", &add_bos) ||
      field_bool(c, c->tokcfg, "tokenizer_config.json", "add_eos_token", &add_eos))
    return -1;
  scan_post(jget(c->tok, "post_processor"), &post_bos, &post_eos, &post_bos_id, 0);
  if (bos < 0 && post_bos == 1 && post_bos_id >= 0 && post_bos_id < (int32_t)V) bos = post_bos_id;
  if (add_bos < 0) add_bos = post_bos == 1;
  if (add_eos < 0) add_eos = post_eos == 1;
  if (add_bos && bos < 0) {
    note(c, "the tokenizer adds a BOS token but none is named; add_bos_token is written as false");
    add_bos = 0;
  }
  if (bos >= 0) kv_check(&k, "bos", tq_gguf_writer_add_uint32(c->w, "tokenizer.ggml.bos_token_id", (uint32_t)bos));
  if (eos >= 0) kv_check(&k, "eos", tq_gguf_writer_add_uint32(c->w, "tokenizer.ggml.eos_token_id", (uint32_t)eos));
  if (unk >= 0)
    kv_check(&k, "unk", tq_gguf_writer_add_uint32(c->w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk));
  if (pad >= 0)
    kv_check(&k, "pad", tq_gguf_writer_add_uint32(c->w, "tokenizer.ggml.padding_token_id", (uint32_t)pad));
  kv_check(&k, "add_bos", tq_gguf_writer_add_bool(c->w, "tokenizer.ggml.add_bos_token", add_bos));
  kv_check(&k, "add_eos", tq_gguf_writer_add_bool(c->w, "tokenizer.ggml.add_eos_token", add_eos == 1));

  /* Chat template: chat_template.jinja (written by recent transformers),
   * else tokenizer_config.json's chat_template (a string, or a list of named
   * templates of which "default" is taken). */
  char *tmpl = NULL;
  {
    char *p = join_path(c->dir, "chat_template.jinja");
    if (!p) return cfail(c, "out of memory");
    int r = read_text_file(c, p, (size_t)16 << 20, &tmpl);
    free(p);
    if (r < 0) return -1;
  }
  if (!tmpl) {
    struct json_object *ct = jget(c->tokcfg, "chat_template");
    const char *s = NULL;
    if (ct && json_object_is_type(ct, json_type_array)) {
      for (size_t i = 0; i < json_object_array_length(ct); i++) {
        struct json_object *e = json_object_array_get_idx(ct, i);
        const char *nm = jstr(jget(e, "name"));
        if (nm && !strcmp(nm, "default")) s = jstr(jget(e, "template"));
      }
    } else if (ct) {
      if (field_str(c, c->tokcfg, "tokenizer_config.json", "chat_template", 0, &s)) return -1;
    }
    if (s && !(tmpl = xstrdup(s))) return cfail(c, "out of memory");
  }
  if (tmpl) kv_check(&k, "tokenizer.chat_template", tq_gguf_writer_add_string(c->w, "tokenizer.chat_template", tmpl));
  free(tmpl);
  if (k.st != TQ_OK) return cfail(c, "%s: metadata '%s': %s", where, k.key, tq_status_message(k.st));
  if (!c->quiet)
    fprintf(stderr, "tokenizer: %s, %u tokens%s%s%s, bos %d, eos %d, add_bos %s\n",
            c->spm ? "SentencePiece-style (\"llama\")" : "byte-level BPE (\"gpt2\")", V, pre ? ", pre-tokenizer '" : "",
            pre ? pre : "", pre ? "'" : "", bos, eos, add_bos ? "yes" : "no");
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The command                                                               */
/* ------------------------------------------------------------------------ */

static int check_output(conv *c) {
  struct stat sb;
  if (stat(c->out, &sb) == 0 && S_ISDIR(sb.st_mode)) return cfail(c, "%s: is a directory", c->out);
  const char *slash = strrchr(c->out, '/');
  char dir[4096];
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == c->out) snprintf(dir, sizeof dir, "/");
  else snprintf(dir, sizeof dir, "%.*s", (int)(slash - c->out), c->out);
  if (access(dir, W_OK | X_OK) != 0) return cfail(c, "%s: cannot write there: %s", dir, strerror(errno));
  return 0;
}

static int convert(conv *c) {
  struct stat sb;
  if (stat(c->dir, &sb) != 0) return cfail(c, "%s: %s", c->dir, strerror(errno));
  if (!S_ISDIR(sb.st_mode)) return cfail(c, "%s: not a directory", c->dir);
  if (check_output(c)) return -1;
  char *p = join_path(c->dir, "config.json");
  if (!p) return cfail(c, "out of memory");
  int r = st_json_read_file(p, MAX_CONFIG_BYTES, &c->cfg, c->err, sizeof c->err);
  free(p);
  if (r == 1) return cfail(c, "%s: no config.json", c->dir);
  if (r) return -1;
  /* Messages name "config.json"; the reader's carry the path. */
  if (read_config(c)) return -1;
  if (open_weights(c)) return -1;
  p = join_path(c->dir, "tokenizer.json");
  if (!p) return cfail(c, "out of memory");
  r = st_json_read_file(p, MAX_TOKENIZER_BYTES, &c->tok, c->err, sizeof c->err);
  free(p);
  if (r == 1) return cfail(c, "%s: no tokenizer.json (a tokenizer.model alone is not supported)", c->dir);
  if (r) return -1;
  p = join_path(c->dir, "tokenizer_config.json");
  if (!p) return cfail(c, "out of memory");
  r = st_json_read_file(p, MAX_CONFIG_BYTES, &c->tokcfg, c->err, sizeof c->err);
  free(p);
  if (r < 0) return -1;

  plan_list L = {0};
  if (build_plan(c, &L)) {
    free(L.p);
    return -1;
  }
  if (!c->quiet)
    fprintf(stderr,
            "%s: %s -> \"%s\": %u layers, width %u, %u heads (%u KV) of %u, ffn %u, vocab %u, context %u, "
            "rope base %g%s%s\n",
            c->dir, c->hf_arch, c->arch_name, c->n_layers, c->n_embd, c->n_heads, c->n_kv, c->head_dim, c->n_ff,
            c->n_vocab, c->n_ctx, c->rope_base, c->rope_factors ? " (llama3 scaling)" : "",
            c->tied ? ", tied embeddings" : "");
  tq_status s = tq_gguf_writer_create(&c->w);
  if (s != TQ_OK) {
    free(L.p);
    return cfail(c, "GGUF writer: %s", tq_status_message(s));
  }
  int rc = write_model_kv(c);
  if (!rc) rc = write_tokenizer(c);
  if (!rc) rc = write_tensors(c, &L);
  free(L.p);
  if (rc) return rc;
  s = tq_gguf_writer_write(c->w, c->out);
  if (s != TQ_OK) return cfail(c, "%s: cannot write: %s", c->out, tq_status_message(s));
  /* The round trip: what was written must load. */
  tq_model *m = NULL;
  s = tq_model_load(c->out, &m);
  if (s != TQ_OK) {
    cfail(c, "%s: the written file does not load (%s); removed", c->out, tq_engine_last_error());
    unlink(c->out);
    return -1;
  }
  const tq_model_info *I = tq_model_get_info(m);
  if (!c->quiet) {
    struct stat ob;
    double mib = stat(c->out, &ob) == 0 ? (double)ob.st_size / (1024.0 * 1024.0) : 0.0;
    fprintf(stderr, "wrote %s: %.2f MiB, %llu parameters, %s weights; it loads as %s\n", c->out, mib,
            (unsigned long long)I->n_params, tq_tensor_type_name(I->weight_type), tq_arch_name(I->arch));
  }
  tq_model_free(m);
  return 0;
}

static void conv_free(conv *c) {
  json_object_put(c->cfg);
  json_object_put(c->tok);
  json_object_put(c->tokcfg);
  st_free(&c->st);
  tq_gguf_writer_free(c->w);
  free(c->rope_factors);
  if (c->tok_text)
    for (uint32_t i = 0; i < c->n_vocab; i++) free(c->tok_text[i]);
  free(c->tok_text);
  free(c->tok_type);
  free(c->tok_score);
  free(c->tok_added);
}

int cmd_convert_run(int argc, char **argv) {
  static const char *const type_names[] = {"f32", "f16", "q8_0", "q4_0"};
  static const tq_tensor_type types[] = {TQ_TENSOR_F32, TQ_TENSOR_F16, TQ_TENSOR_Q8_0, TQ_TENSOR_Q4_0};
  conv c;
  memset(&c, 0, sizeof c);
  int type = 1;
  args_parser p;
  args_init(&p, PROG, argc, argv);
  while (args_next(&p)) {
    if (args_flag(&p, "--help") || args_flag(&p, "-h")) {
      if (p.failed) return TQ_CLI_USAGE;
      cmd_convert_usage(stdout);
      return TQ_CLI_OK;
    } else if (args_option(&p, "-o") || args_option(&p, "--output")) {
      if (!p.failed && !*p.value) {
        args_usage_error(PROG, "%s expects a file name", p.name);
        p.failed = 1;
      }
      c.out = p.value;
    } else if (args_option(&p, "--type")) {
      args_choice(&p, type_names, 4, &type);
    } else if (args_option(&p, "--name")) {
      c.name = p.value;
    } else if (args_flag(&p, "--quiet") || args_flag(&p, "-q")) {
      c.quiet = 1;
    } else if (p.arg[0] != '-' && !c.dir) {
      c.dir = p.arg;
    } else {
      args_unknown(&p);
    }
    if (p.failed) return TQ_CLI_USAGE;
  }
  if (!c.dir) return args_usage_error(PROG, "no Hugging Face model directory given");
  if (!c.out) return args_usage_error(PROG, "no output file given (-o MODEL.gguf)");
  c.type = types[type];
  int rc = convert(&c) == 0 ? TQ_CLI_OK : cli_error(PROG, "%s", c.err);
  conv_free(&c);
  return rc;
}
