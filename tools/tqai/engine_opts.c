/* engine_opts.c - options shared by run, compare and perplexity. */
#include "engine_opts.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void engine_opts_default(engine_opts *o, uint32_t n_ctx) {
  memset(o, 0, sizeof *o);
  o->n_ctx = n_ctx;
  o->bits_k = 4;
  o->bits_v = 2;
  o->calib = 64;
  o->block = 256;
}

static const char *const rotations[] = {"haar", "hadamard"};

int engine_opts_parse(args_parser *p, engine_opts *o) {
  if (args_option(p, "-m") || args_option(p, "--model")) {
    if (!p->failed) o->model = p->value;
  } else if (args_option(p, "--ctx")) {
    args_u32(p, 16, 1u << 20, &o->n_ctx);
  } else if (args_option(p, "--threads") || args_option(p, "-t")) {
    args_u32(p, 0, 256, &o->threads);
  } else if (args_option(p, "--bits-k")) {
    args_f64(p, 1, 32, &o->bits_k);
  } else if (args_option(p, "--bits-v")) {
    args_f64(p, 1, 32, &o->bits_v);
  } else if (args_option(p, "--sinks")) {
    args_u32(p, 0, 1u << 20, &o->sinks);
  } else if (args_option(p, "--window")) {
    args_u32(p, 0, 1u << 20, &o->window);
  } else if (args_flag(p, "--center")) {
    o->center = 1;
  } else if (args_option(p, "--calib")) {
    args_u32(p, 1, 1u << 20, &o->calib);
  } else if (args_option(p, "--edge-layers")) {
    args_u32(p, 0, 1024, &o->edge_layers);
  } else if (args_option(p, "--edge-bits-k")) {
    args_f64(p, 1, 8, &o->edge_bits_k);
  } else if (args_option(p, "--edge-bits-v")) {
    args_f64(p, 1, 8, &o->edge_bits_v);
  } else if (args_option(p, "--rotation")) {
    args_choice(p, rotations, 2, &o->rotation);
  } else if (args_option(p, "--block")) {
    args_u32(p, 16, 65536, &o->block);
  } else {
    return 0;
  }
  return 1;
}

void engine_opts_usage(FILE *out, uint32_t n_ctx) {
  fprintf(out,
          "Model:\n"
          "  -m, --model FILE      GGUF model file (default: $TQAI_MODEL, else the shipped\n"
          "                        model " TQAI_DEFAULT_MODEL ")\n"
          "  --ctx N               context length in tokens (default %u)\n"
          "  -t, --threads N       threads, 0 = one per CPU (default 0)\n"
          "\n"
          "KV cache:\n"
          "  --bits-k B            key bits per coordinate: 1, 1.5, ..., 8, or 16 for\n"
          "                        the fp16 baseline (default 4)\n"
          "  --bits-v B            value bits, likewise (default 2); 16 for both keys\n"
          "                        and values gives the fp16 cache, 32 for both an\n"
          "                        exact float32 cache (slow; for checking)\n"
          "  --sinks N             keep the first N tokens in fp16 (default 0)\n"
          "  --window N            keep the last N tokens in fp16 (default 0)\n"
          "  --center              subtract per-head key and value means (taken from\n"
          "                        the first --calib tokens after the sinks)\n"
          "  --calib N             calibration tokens for --center and fractional\n"
          "                        rates (default 64)\n"
          "  --edge-layers N       the first and last N layers use --edge-bits-k/-v\n"
          "  --edge-bits-k B       key bits of the edge layers (default: --bits-k)\n"
          "  --edge-bits-v B       value bits of the edge layers (default: --bits-v)\n"
          "  --rotation R          haar or hadamard (default haar)\n"
          "  --block N             tokens per cache block (default 256)\n",
          n_ctx);
}

static int valid_rate(double b) { return b >= 1 && b <= 8 && b * 2 == floor(b * 2); }

int engine_cache_params(const char *prog, const engine_opts *o, const tq_model_info *info,
                        tq_cache_params *out) {
  tq_cache_params p = tq_cache_params_default(info->n_layers, info->n_kv_heads, info->head_dim);
  p.max_tokens = o->n_ctx;
  p.block_tokens = o->block;
  if (o->bits_k >= 16 || o->bits_v >= 16) {
    if (o->bits_k != o->bits_v || (o->bits_k != 16 && o->bits_k != 32))
      return args_usage_error(prog, "16 (fp16) or 32 (float32) bits apply to keys and values together");
    p.mode = o->bits_k == 32 ? TQ_CACHE_F32 : TQ_CACHE_F16;
    *out = p;
    return 0;
  }
  if (!valid_rate(o->bits_k) || !valid_rate(o->bits_v))
    return args_usage_error(prog, "bits must be 1, 1.5, 2, ..., 8 (or 16 for fp16); got K %g, V %g",
                            o->bits_k, o->bits_v);
  p.key_bits = (float)o->bits_k;
  p.value_bits = (float)o->bits_v;
  p.sink_tokens = o->sinks;
  p.window_tokens = o->window;
  p.center = o->center;
  p.calib_tokens = o->calib;
  p.rotation = o->rotation ? TQ_ROTATION_HADAMARD : TQ_ROTATION_HAAR;
  if (o->edge_layers) {
    p.edge_layers = o->edge_layers;
    p.edge_key_bits = (float)(o->edge_bits_k ? o->edge_bits_k : o->bits_k);
    p.edge_value_bits = (float)(o->edge_bits_v ? o->edge_bits_v : o->bits_v);
    if (!valid_rate(p.edge_key_bits) || !valid_rate(p.edge_value_bits))
      return args_usage_error(prog, "edge bits must be 1, 1.5, ..., 8");
  }
  *out = p;
  return 0;
}

void engine_cache_name(const tq_cache_params *p, char *buf, size_t size) {
  if (p->mode != TQ_CACHE_TURBOQUANT) {
    snprintf(buf, size, p->mode == TQ_CACHE_F32 ? "f32" : "fp16");
    return;
  }
  int n = snprintf(buf, size, "K%g/V%g", p->key_bits, p->value_bits);
  if (n < 0 || (size_t)n >= size) return;
  size_t used = (size_t)n;
  if (p->edge_layers && used < size)
    used += (size_t)snprintf(buf + used, size - used, " edge%u:K%g/V%g", p->edge_layers, p->edge_key_bits,
                             p->edge_value_bits);
  if (p->center && used < size) used += (size_t)snprintf(buf + used, size - used, " +center");
  if (p->sink_tokens && used < size) used += (size_t)snprintf(buf + used, size - used, " +sinks%u", p->sink_tokens);
  if (p->window_tokens && used < size) snprintf(buf + used, size - used, " +window%u", p->window_tokens);
}

/* The directory of the running executable (from /proc/self/exe) into dir;
 * returns 0, or -1 when it cannot be read. */
static int exe_dir(char *dir, size_t size) {
  ssize_t n = readlink("/proc/self/exe", dir, size - 1);
  if (n <= 0 || (size_t)n >= size - 1) return -1;
  dir[n] = '\0';
  char *slash = strrchr(dir, '/');
  if (!slash) return -1;
  *slash = '\0';
  return 0;
}

static int is_file(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

const char *engine_default_model(char *buf, size_t size) {
  const char *env = getenv("TQAI_MODEL");
  if (env && env[0]) return env;
  char dir[4096];
  if (exe_dir(dir, sizeof dir) != 0) return NULL;
  /* In the source tree (build/tqai), then installed (PREFIX/bin/tqai). */
  static const char *const rel[] = {"/../models/" TQAI_DEFAULT_MODEL, "/../share/tqai/" TQAI_DEFAULT_MODEL};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    int n = snprintf(buf, size, "%s%s", dir, rel[i]);
    if (n > 0 && (size_t)n < size && is_file(buf)) return buf;
  }
  return NULL;
}

int engine_load(const char *prog, const engine_opts *o, tq_model **model, tq_pool **pool) {
  *model = NULL;
  *pool = NULL;
  char buf[4200];
  const char *path = o->model ? o->model : engine_default_model(buf, sizeof buf);
  if (!path)
    return args_usage_error(prog, "no model given and the default model (models/" TQAI_DEFAULT_MODEL
                                  ") was not found: use -m FILE or set TQAI_MODEL");
  tq_status st = tq_model_load(path, model);
  if (st != TQ_OK) return cli_error(prog, "cannot load %s: %s", path, tq_engine_last_error());
  st = tq_pool_create(o->threads, pool);
  if (st != TQ_OK) {
    tq_model_free(*model);
    *model = NULL;
    return cli_status_error(prog, "thread pool", st);
  }
  return 0;
}

double engine_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int prompt_opts_parse(args_parser *p, prompt_opts *o) {
  if (args_flag(p, "--chat")) o->mode = PROMPT_CHAT;
  else if (args_flag(p, "--raw")) o->mode = PROMPT_RAW;
  else if (args_option(p, "--system")) o->system = p->value;
  else if (p->arg[0] != '-' && !o->text) o->text = p->arg;
  else return 0;
  return 1;
}

int engine_prompt(const char *prog, const tq_model *m, const char *text, prompt_mode mode,
                  const char *system, int32_t **ids, size_t *n) {
  const tq_tokenizer *tok = tq_model_tokenizer(m);
  tq_chat_template tmpl = tq_chat_template_detect(tq_model_gguf(m));
  if (mode == PROMPT_CHAT && tmpl == TQ_CHAT_NONE) tmpl = TQ_CHAT_CHATML;
  if (mode == PROMPT_RAW) tmpl = TQ_CHAT_NONE;
  const char *formatted = text;
  char *buf = NULL;
  if (tmpl != TQ_CHAT_NONE) {
    tq_chat_message msgs[2];
    size_t nm = 0;
    if (system) msgs[nm++] = (tq_chat_message){"system", system};
    msgs[nm++] = (tq_chat_message){"user", text};
    size_t need = 0;
    tq_chat_format(tmpl, msgs, nm, 1, NULL, 0, &need);
    buf = malloc(need + 1);
    if (!buf) return cli_error(prog, "out of memory");
    if (tq_chat_format(tmpl, msgs, nm, 1, buf, need + 1, &need) != TQ_OK) {
      free(buf);
      return cli_error(prog, "cannot format the chat prompt");
    }
    formatted = buf;
  }
  size_t len = strlen(formatted);
  /* A template that writes the BOS token itself must not get a second one. */
  int add_bos = tq_tokenizer_adds_bos(tok) && tmpl != TQ_CHAT_LLAMA3 && tmpl != TQ_CHAT_MISTRAL;
  size_t need = 0;
  tq_status st = tq_tokenize(tok, formatted, len, add_bos, tmpl != TQ_CHAT_NONE, NULL, 0, &need);
  if (st != TQ_OK && st != TQ_ERR_BUFFER_TOO_SMALL) {
    free(buf);
    return cli_status_error(prog, "tokenizing the prompt", st);
  }
  *ids = malloc((need ? need : 1) * sizeof **ids);
  if (!*ids) {
    free(buf);
    return cli_error(prog, "out of memory");
  }
  st = tq_tokenize(tok, formatted, len, add_bos, tmpl != TQ_CHAT_NONE, *ids, need, n);
  free(buf);
  if (st != TQ_OK) {
    free(*ids);
    *ids = NULL;
    return cli_status_error(prog, "tokenizing the prompt", st);
  }
  return 0;
}
