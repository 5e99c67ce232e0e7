/*
 * commands.h - the subcommands of the tqai tool, one file each
 * (tools/tqai/cmd_NAME.c).
 *
 * To add a command: write cmd_NAME.c with cmd_NAME_run and cmd_NAME_usage,
 * declare both here, and add one row to the table in main.c.
 */
#ifndef TQAI_TOOL_COMMANDS_H
#define TQAI_TOOL_COMMANDS_H

#include <stdio.h>

typedef struct cli_command {
  const char *name;    /* as typed: "tqai NAME ..." */
  const char *summary; /* one line for "tqai --help" */
  /* Runs the command. argv[0] is the command name, argv[1..argc-1] its
   * arguments. Returns the exit status: TQ_CLI_OK, TQ_CLI_FAIL or
   * TQ_CLI_USAGE (args.h). */
  int (*run)(int argc, char **argv);
  /* Writes the usage text: every option with its default. */
  void (*usage)(FILE *out);
} cli_command;

/* tqai info: version, build, SIMD levels, limits, codebooks. */
int cmd_info_run(int argc, char **argv);
void cmd_info_usage(FILE *out);

/* tqai benchmark: codec quality and speed on random Gaussian vectors. */
int cmd_benchmark_run(int argc, char **argv);
void cmd_benchmark_usage(FILE *out);

/* tqai run: generate text with a GGUF model and the compressed cache. */
int cmd_run_run(int argc, char **argv);
void cmd_run_usage(FILE *out);

/* tqai compare: fp16 and compressed caches side by side, greedy. */
int cmd_compare_run(int argc, char **argv);
void cmd_compare_usage(FILE *out);

/* tqai perplexity: perplexity and KL divergence against the fp16 cache. */
int cmd_perplexity_run(int argc, char **argv);
void cmd_perplexity_usage(FILE *out);

/* tqai convert: a Hugging Face checkpoint directory to a GGUF model. */
int cmd_convert_run(int argc, char **argv);
void cmd_convert_usage(FILE *out);

#endif /* TQAI_TOOL_COMMANDS_H */
