/*
 * cmd_compare.c - "tqai compare": the same prompt through the fp16 cache and
 * the compressed cache, greedy, side by side: both texts, how many tokens
 * agree before they first differ, and both cache sizes.
 */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "engine_opts.h"

static const char PROG[] = "tqai compare";

void cmd_compare_usage(FILE *out) {
  fprintf(out,
          "Usage: tqai compare [OPTIONS] PROMPT\n"
          "\n"
          "Generates greedily from PROMPT twice, once with the fp16 KV cache and once\n"
          "with the compressed cache the options describe, and shows both texts, the\n"
          "number of tokens that agree before the first difference and both cache\n"
          "sizes.\n"
          "\n"
          "  -n, --n-predict N     tokens to generate (default 64)\n"
          "  --chat, --raw         prompt format, as for tqai run\n"
          "  --system TEXT         system message for the chat template\n"
          "  --json                one JSON object instead of text\n"
          "\n");
  engine_opts_usage(out, 2048);
  fprintf(out, "\n  -h, --help            show this help and exit\n");
}

typedef struct generation {
  int32_t *ids;
  uint32_t n;
  char *text;
  size_t text_len;
  size_t bytes;
  double seconds;
} generation;

static void generation_free(generation *g) {
  free(g->ids);
  free(g->text);
}

/* Greedy generation of up to n_predict tokens after the prompt. */
static int generate(const tq_model *m, const tq_cache_params *cp, const engine_opts *o, tq_pool *pool,
                    const int32_t *prompt, size_t n_prompt, uint32_t n_predict, generation *g) {
  const tq_model_info *info = tq_model_get_info(m);
  const tq_tokenizer *tok = tq_model_tokenizer(m);
  memset(g, 0, sizeof *g);
  tq_session *s = NULL;
  float *logits = malloc((size_t)info->n_vocab * sizeof *logits);
  g->ids = malloc((n_predict ? n_predict : 1) * sizeof *g->ids);
  size_t cap = 64 + (size_t)n_predict * 64;
  g->text = malloc(cap);
  if (!logits || !g->ids || !g->text) {
    free(logits);
    return cli_error(PROG, "out of memory");
  }
  tq_status st = tq_session_create(m, cp, o->n_ctx, pool, &s);
  double t0 = engine_now();
  if (st == TQ_OK) st = tq_session_eval(s, prompt, (uint32_t)n_prompt, logits, 0);
  tq_detok dt;
  tq_detok_init(&dt, 1);
  size_t np;
  while (st == TQ_OK && g->n < n_predict) {
    int32_t best = 0;
    for (uint32_t i = 1; i < info->n_vocab; i++)
      if (logits[i] > logits[best]) best = (int32_t)i;
    if (tq_tokenizer_is_eog(tok, best)) break;
    g->ids[g->n++] = best;
    if (tq_detok_push(tok, &dt, best, g->text + g->text_len, cap - g->text_len, &np) == TQ_OK) g->text_len += np;
    if (tq_session_position(s) >= o->n_ctx) break;
    st = tq_session_eval(s, &best, 1, logits, 0);
  }
  if (st == TQ_OK && tq_detok_flush(tok, &dt, g->text + g->text_len, cap - g->text_len, &np) == TQ_OK)
    g->text_len += np;
  g->text[g->text_len < cap ? g->text_len : cap - 1] = '\0';
  g->seconds = engine_now() - t0;
  if (s) g->bytes = tq_cache_bytes(tq_session_cache(s));
  tq_session_free(s);
  free(logits);
  if (st != TQ_OK) return cli_error(PROG, "generation failed: %s", tq_engine_last_error());
  return 0;
}

int cmd_compare_run(int argc, char **argv) {
  engine_opts o;
  engine_opts_default(&o, 2048);
  uint32_t n_predict = 64;
  int json = 0;
  prompt_opts po = {PROMPT_AUTO, NULL, NULL};
  args_parser p;
  args_init(&p, PROG, argc, argv);
  while (args_next(&p)) {
    if (args_flag(&p, "--help") || args_flag(&p, "-h")) {
      if (p.failed) return TQ_CLI_USAGE;
      cmd_compare_usage(stdout);
      return TQ_CLI_OK;
    } else if (engine_opts_parse(&p, &o)) {
    } else if (args_option(&p, "-n") || args_option(&p, "--n-predict")) {
      args_u32(&p, 1, 1u << 16, &n_predict);
    } else if (args_flag(&p, "--json")) {
      json = 1;
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
  tq_cache_params cp, base;
  int32_t *ids = NULL;
  size_t n_ids = 0;
  generation a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  if ((rc = engine_cache_params(PROG, &o, info, &cp))) goto done;
  base = cp;
  base.mode = TQ_CACHE_F16;
  if ((rc = engine_prompt(PROG, model, po.text, po.mode, po.system, &ids, &n_ids))) goto done;
  if ((rc = generate(model, &base, &o, pool, ids, n_ids, n_predict, &a))) goto done;
  if ((rc = generate(model, &cp, &o, pool, ids, n_ids, n_predict, &b))) goto done;
  uint32_t agree = 0;
  while (agree < a.n && agree < b.n && a.ids[agree] == b.ids[agree]) agree++;
  char name[96];
  engine_cache_name(&cp, name, sizeof name);
  if (json) {
    printf("{\"prompt_tokens\": %zu, \"baseline\": {\"cache\": \"fp16\", \"tokens\": %u, \"kv_bytes\": %zu, "
           "\"text\": ",
           n_ids, a.n, a.bytes);
    cli_json_string(stdout, a.text);
    printf("}, \"compressed\": {\"cache\": ");
    cli_json_string(stdout, name);
    printf(", \"tokens\": %u, \"kv_bytes\": %zu, \"text\": ", b.n, b.bytes);
    cli_json_string(stdout, b.text);
    printf("}, \"agreeing_tokens\": %u, \"identical\": %s}\n", agree,
           agree == a.n && a.n == b.n ? "true" : "false");
  } else {
    printf("=== fp16 cache (%.1f KiB)\n%s\n\n", a.bytes / 1024.0, a.text);
    printf("=== %s cache (%.1f KiB, %.2fx smaller)\n%s\n\n", name, b.bytes / 1024.0,
           b.bytes ? (double)a.bytes / b.bytes : 0.0, b.text);
    if (agree == a.n && a.n == b.n)
      printf("identical: all %u generated tokens agree\n", agree);
    else
      printf("%u of %u tokens agree before the first difference\n", agree, a.n > b.n ? a.n : b.n);
  }
  rc = TQ_CLI_OK;
done:
  generation_free(&a);
  generation_free(&b);
  free(ids);
  tq_pool_free(pool);
  tq_model_free(model);
  return rc;
}
