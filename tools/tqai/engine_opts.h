/*
 * engine_opts.h - the options shared by the commands that run a model (run,
 * compare, perplexity): the model file, context, threads, and every option of
 * the KV cache.
 */
#ifndef TQAI_TOOL_ENGINE_OPTS_H
#define TQAI_TOOL_ENGINE_OPTS_H

#include <stdio.h>

#include "args.h"
#include "tqai.h"
#include "tqai_engine.h"

typedef struct engine_opts {
  const char *model;      /* -m, --model */
  uint32_t n_ctx;         /* --ctx */
  uint32_t threads;       /* --threads, 0 = one per CPU */
  double bits_k, bits_v;  /* --bits-k, --bits-v; 16 = fp16 baseline */
  uint32_t sinks;         /* --sinks */
  uint32_t window;        /* --window */
  int center;             /* --center */
  uint32_t calib;         /* --calib */
  uint32_t edge_layers;   /* --edge-layers */
  double edge_bits_k, edge_bits_v; /* --edge-bits-k, --edge-bits-v */
  int rotation;           /* --rotation: 0 haar, 1 hadamard */
  uint32_t block;         /* --block */
} engine_opts;

void engine_opts_default(engine_opts *o, uint32_t n_ctx);

/* If the current argument of p is one of these options, parses it and
 * returns 1 (p->failed set on a bad value); else returns 0. */
int engine_opts_parse(args_parser *p, engine_opts *o);

/* Writes the usage lines of these options. */
void engine_opts_usage(FILE *out, uint32_t n_ctx);

/* Cache parameters for the model from the options (fp16 mode when both
 * rates are 16). Returns 0, or prints a message and returns TQ_CLI_USAGE. */
int engine_cache_params(const char *prog, const engine_opts *o, const tq_model_info *info,
                        tq_cache_params *out);

/* A short name of the cache configuration: "fp16", "K4/V2", "K3.5/V2 +center". */
void engine_cache_name(const tq_cache_params *p, char *buf, size_t size);

/* The file name of the model the project ships, used when no -m is given. */
#define TQAI_DEFAULT_MODEL "tqai-tiny.gguf"

/* The default model's path: $TQAI_MODEL if set, else the shipped model next
 * to the executable (../models/ in the source tree, ../share/tqai/ when
 * installed), written into buf. Returns the path (env or buf), or NULL. */
const char *engine_default_model(char *buf, size_t size);

/* Loads the model (o->model, or the default model) and starts the thread pool. Returns 0 or prints the error
 * and returns TQ_CLI_FAIL (or TQ_CLI_USAGE when no model was given). */
int engine_load(const char *prog, const engine_opts *o, tq_model **model, tq_pool **pool);

/* Seconds from a monotonic clock. */
double engine_now(void);

/* How a prompt is presented to the model. */
typedef enum prompt_mode {
  PROMPT_AUTO = 0, /* the model's chat template if it has one, else raw */
  PROMPT_CHAT = 1, /* the chat template (ChatML when the model names none) */
  PROMPT_RAW = 2   /* the text as it is */
} prompt_mode;

/* The prompt and how to present it: --chat, --raw, --system TEXT, and the
 * first argument that is not an option. */
typedef struct prompt_opts {
  prompt_mode mode;
  const char *system;
  const char *text;
} prompt_opts;

/* If the current argument of p is one of the prompt options or the prompt
 * itself, records it and returns 1; else returns 0. */
int prompt_opts_parse(args_parser *p, prompt_opts *o);

/* Formats and tokenizes a prompt. *ids receives a malloc'd array (the
 * caller frees it) of *n ids. Returns 0 or prints the error and returns
 * TQ_CLI_FAIL. */
int engine_prompt(const char *prog, const tq_model *m, const char *text, prompt_mode mode,
                  const char *system, int32_t **ids, size_t *n);

#endif
