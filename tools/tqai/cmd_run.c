/*
 * cmd_run.c - "tqai run": generates text from a prompt with a GGUF model and
 * the compressed KV cache, streaming it to stdout; speed and cache size go
 * to stderr.
 */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "engine_opts.h"

static const char PROG[] = "tqai run";

void cmd_run_usage(FILE *out) {
  fprintf(out,
          "Usage: tqai run [OPTIONS] PROMPT\n"
          "\n"
          "Generates text from PROMPT, streaming it to stdout, with the KV cache\n"
          "compressed (K4/V2 unless told otherwise). Prefill and decode speed and the\n"
          "cache's size go to stderr.\n"
          "\n"
          "Generation:\n"
          "  -n, --n-predict N     tokens to generate at most (default 128)\n"
          "  --chat                use the model's chat template (ChatML if it has none)\n"
          "  --raw                 plain completion, no template\n"
          "                        (default: the template if the model has one)\n"
          "  --system TEXT         system message for the chat template\n"
          "  --greedy              always take the most likely token\n"
          "  --temp T              temperature (default 0.8; 0 = greedy)\n"
          "  --top-k K             (default 40; 0 = off)\n"
          "  --top-p P             (default 0.95; 1 = off)\n"
          "  --min-p P             (default 0.05; 0 = off)\n"
          "  --repeat-penalty R    (default 1.1; 1 = off)\n"
          "  --repeat-last-n N     tokens the penalty looks back over (default 64)\n"
          "  --seed S              sampling seed (default 0)\n"
          "  --quiet               no statistics on stderr\n"
          "\n");
  engine_opts_usage(out, 2048);
  fprintf(out, "\n  -h, --help            show this help and exit\n");
}

/* Parses a float option's value into *out (unchanged on a bad value). */
static void opt_float(args_parser *p, double lo, double hi, float *out) {
  double f;
  args_f64(p, lo, hi, &f);
  if (!p->failed) *out = (float)f;
}

/* Prints the statistics of a generation. The cache allocates whole blocks,
 * so for short texts its bytes exceed what the tokens need; the per-token
 * figure is what it costs as the context grows. */
static void report(const tq_session *s, const tq_model_info *info, const tq_cache_params *cp, size_t n_prompt,
                   double t_prompt, uint32_t n_gen, double t_gen) {
  char name[96];
  engine_cache_name(cp, name, sizeof name);
  uint32_t tokens = tq_session_position(s);
  double bytes = (double)tq_cache_bytes(tq_session_cache(s));
  double fp16_tok = (double)info->n_layers * info->n_kv_heads * info->head_dim * 2 * 2;
  double tok_bytes = cp->mode == TQ_CACHE_F16 ? fp16_tok : cp->mode == TQ_CACHE_F32 ? 2 * fp16_tok : 0.0;
  if (cp->mode == TQ_CACHE_TURBOQUANT) {
    /* Record sizes of each layer's rates: norm (2 bytes) + packed codes. */
    for (uint32_t l = 0; l < info->n_layers; l++) {
      int edge = cp->edge_layers && (l < cp->edge_layers || l + cp->edge_layers >= info->n_layers);
      float kb = edge ? cp->edge_key_bits : cp->key_bits, vb = edge ? cp->edge_value_bits : cp->value_bits;
      int kg = kb != (float)(int)kb ? 2 : 1, vg = vb != (float)(int)vb ? 2 : 1;
      tok_bytes += info->n_kv_heads * (2.0 * kg + info->head_dim * (double)kb / 8 + 2.0 * vg +
                                      info->head_dim * (double)vb / 8);
    }
  }
  fprintf(stderr, "\n\nprompt: %zu tokens in %.2f s (%.1f tok/s)\n", n_prompt, t_prompt,
          t_prompt > 0 ? n_prompt / t_prompt : 0.0);
  fprintf(stderr, "decode: %u tokens in %.2f s (%.1f tok/s)\n", n_gen, t_gen, t_gen > 0 ? n_gen / t_gen : 0.0);
  fprintf(stderr, "KV cache (%s): %.1f KiB allocated for %u tokens (blocks of %u); %.0f bytes per token "
                  "against %.0f for fp16 (%.2fx smaller)\n",
          name, bytes / 1024, tokens, cp->block_tokens, tok_bytes, fp16_tok, fp16_tok / tok_bytes);
}

int cmd_run_run(int argc, char **argv) {
  engine_opts o;
  engine_opts_default(&o, 2048);
  tq_sampler_params sp = tq_sampler_params_default();
  uint32_t n_predict = 128;
  int quiet = 0;
  prompt_opts po = {PROMPT_AUTO, NULL, NULL};
  args_parser p;
  args_init(&p, PROG, argc, argv);
  while (args_next(&p)) {
    if (args_flag(&p, "--help") || args_flag(&p, "-h")) {
      if (p.failed) return TQ_CLI_USAGE;
      cmd_run_usage(stdout);
      return TQ_CLI_OK;
    } else if (engine_opts_parse(&p, &o)) {
    } else if (args_option(&p, "-n") || args_option(&p, "--n-predict")) {
      args_u32(&p, 0, 1u << 20, &n_predict);
    } else if (args_flag(&p, "--greedy")) {
      sp = tq_sampler_params_greedy();
    } else if (args_option(&p, "--temp")) {
      opt_float(&p, 0, 100, &sp.temperature);
    } else if (args_option(&p, "--top-k")) {
      args_u32(&p, 0, 1u << 24, &sp.top_k);
    } else if (args_option(&p, "--top-p")) {
      opt_float(&p, 1e-6, 1, &sp.top_p);
    } else if (args_option(&p, "--min-p")) {
      opt_float(&p, 0, 1, &sp.min_p);
    } else if (args_option(&p, "--repeat-penalty")) {
      opt_float(&p, 0.01, 100, &sp.repeat_penalty);
    } else if (args_option(&p, "--repeat-last-n")) {
      args_u32(&p, 0, 1u << 16, &sp.repeat_last_n);
    } else if (args_option(&p, "--seed")) {
      args_seed(&p, &sp.seed);
    } else if (args_flag(&p, "--quiet")) {
      quiet = 1;
    } else if (prompt_opts_parse(&p, &po)) {
    } else {
      args_unknown(&p);
    }
    if (p.failed) return TQ_CLI_USAGE;
  }
  if (!po.text) return args_usage_error(PROG, "no prompt given");
  tq_model *model;
  tq_pool *pool;
  int rc = engine_load(PROG, &o, &model, &pool);
  if (rc) return rc;
  const tq_model_info *info = tq_model_get_info(model);
  const tq_tokenizer *tok = tq_model_tokenizer(model);
  tq_cache_params cp;
  tq_session *s = NULL;
  tq_sampler *sampler = NULL;
  int32_t *ids = NULL;
  float *logits = NULL;
  size_t n_ids = 0;
  rc = engine_cache_params(PROG, &o, info, &cp);
  if (rc) goto done;
  rc = engine_prompt(PROG, model, po.text, po.mode, po.system, &ids, &n_ids);
  if (rc) goto done;
  if (n_ids == 0) {
    rc = cli_error(PROG, "the prompt has no tokens");
    goto done;
  }
  tq_status st = tq_session_create(model, &cp, o.n_ctx, pool, &s);
  if (st == TQ_OK) st = tq_sampler_create(&sp, info->n_vocab, &sampler);
  logits = malloc((size_t)info->n_vocab * sizeof *logits);
  if (st != TQ_OK || !logits) {
    rc = cli_error(PROG, "cannot start: %s", st != TQ_OK ? tq_engine_last_error() : "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n_ids; i++) tq_sampler_accept(sampler, ids[i]);
  double t0 = engine_now();
  st = tq_session_eval(s, ids, (uint32_t)n_ids, logits, 0);
  double t_prompt = engine_now() - t0;
  if (st != TQ_OK) {
    rc = cli_error(PROG, "prompt: %s", tq_engine_last_error());
    goto done;
  }
  tq_detok dt;
  tq_detok_init(&dt, 1);
  char piece[512];
  size_t np;
  uint32_t n_gen = 0;
  t0 = engine_now();
  while (n_gen < n_predict) {
    int32_t next;
    tq_sampler_sample(sampler, logits, &next);
    if (tq_tokenizer_is_eog(tok, next)) break;
    if (tq_detok_push(tok, &dt, next, piece, sizeof piece, &np) == TQ_OK) fwrite(piece, 1, np, stdout);
    fflush(stdout);
    n_gen++;
    if (tq_session_position(s) >= o.n_ctx) break;
    if ((st = tq_session_eval(s, &next, 1, logits, 0)) != TQ_OK) {
      rc = cli_error(PROG, "decode: %s", tq_engine_last_error());
      goto done;
    }
  }
  if (tq_detok_flush(tok, &dt, piece, sizeof piece, &np) == TQ_OK) fwrite(piece, 1, np, stdout);
  double t_gen = engine_now() - t0;
  printf("\n");
  if (!quiet) report(s, info, &cp, n_ids, t_prompt, n_gen, t_gen);
  rc = TQ_CLI_OK;
done:
  free(ids);
  free(logits);
  tq_sampler_free(sampler);
  tq_session_free(s);
  tq_pool_free(pool);
  tq_model_free(model);
  return rc;
}
