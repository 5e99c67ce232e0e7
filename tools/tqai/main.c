/*
 * main.c - entry point of the tqai tool: global options and dispatch of the
 * subcommands listed in `commands` (one file each, declared in commands.h).
 *
 * Exit status: 0 success, 1 the library or the system failed, 2 bad command
 * line. The tool is the only part of the project that prints.
 */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "tqai.h"

static const char PROG[] = "tqai";

/* Add a row here for every new command (see commands.h). */
static const cli_command commands[] = {
    {"info", "show version, build, SIMD levels, limits and codebooks", cmd_info_run,
     cmd_info_usage},
    {"benchmark", "measure codec quality and speed on random Gaussian vectors",
     cmd_benchmark_run, cmd_benchmark_usage},
    {"run", "generate text with a GGUF model and the compressed KV cache", cmd_run_run,
     cmd_run_usage},
    {"compare", "fp16 and compressed KV caches side by side on one prompt", cmd_compare_run,
     cmd_compare_usage},
    {"perplexity", "perplexity, and KL divergence against the fp16 cache", cmd_perplexity_run,
     cmd_perplexity_usage},
    {"convert", "convert a Hugging Face checkpoint (safetensors) to a GGUF model",
     cmd_convert_run, cmd_convert_usage},
};

static const size_t n_commands = sizeof commands / sizeof commands[0];

static const cli_command *find_command(const char *name) {
  for (size_t i = 0; i < n_commands; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

static void usage(FILE *out) {
  fprintf(out,
          "Usage: tqai COMMAND [OPTIONS]\n"
          "       tqai help COMMAND\n"
          "       tqai --help | --version\n"
          "\n"
          "TurboQuant compression of LLM key/value caches: random rotation,\n"
          "Lloyd-Max scalar codebooks, norm stored apart.\n"
          "\n"
          "Commands:\n");
  for (size_t i = 0; i < n_commands; i++)
    fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "  %-12s %s\n", "help", "show the options of a command");
  fprintf(out,
          "\n"
          "Options:\n"
          "  -h, --help     show this help and exit\n"
          "  -V, --version  show the version and exit\n"
          "\n"
          "Run 'tqai COMMAND --help' for the options of a command.\n"
          "Exit status: 0 success, 1 failure, 2 bad command line.\n");
}

static void version(FILE *out) {
  fprintf(out, "tqai %s (libtqai %s, code format %d)\n", tq_version_string(),
          tq_version_string(), TQ_CODE_FORMAT_VERSION);
  if (tq_version_number() != TQ_VERSION_NUMBER)
    fprintf(out, "warning: built against tqai.h %d.%d.%d but linked with libtqai %s\n",
            TQ_VERSION_MAJOR, TQ_VERSION_MINOR, TQ_VERSION_PATCH, tq_version_string());
}

static int is_arg(const char *arg, const char *short_name, const char *long_name) {
  return strcmp(arg, short_name) == 0 || strcmp(arg, long_name) == 0;
}

static int dispatch(int argc, char **argv) {
  const char *first;
  const cli_command *cmd;

  if (argc < 2) {
    fprintf(stderr, "tqai: missing command\n\n");
    usage(stderr);
    return TQ_CLI_USAGE;
  }
  first = argv[1];

  if (is_arg(first, "-h", "--help")) {
    if (argc > 2) return args_usage_error(PROG, "unexpected argument '%s'", argv[2]);
    usage(stdout);
    return TQ_CLI_OK;
  }
  if (is_arg(first, "-V", "--version")) {
    if (argc > 2) return args_usage_error(PROG, "unexpected argument '%s'", argv[2]);
    version(stdout);
    return TQ_CLI_OK;
  }

  if (strcmp(first, "help") == 0) {
    if (argc == 2) {
      usage(stdout);
      return TQ_CLI_OK;
    }
    if (argc > 3) return args_usage_error(PROG, "help takes one command name");
    cmd = find_command(argv[2]);
    if (!cmd) return args_usage_error(PROG, "unknown command '%s'", argv[2]);
    cmd->usage(stdout);
    return TQ_CLI_OK;
  }

  if (first[0] == '-') return args_usage_error(PROG, "unknown option '%s'", first);

  cmd = find_command(first);
  if (!cmd) return args_usage_error(PROG, "unknown command '%s'", first);
  return cmd->run(argc - 1, argv + 1);
}

int main(int argc, char **argv) {
  int status = dispatch(argc, argv);
  /* A full disk or a closed pipe must not pass for success. */
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "tqai: error writing to standard output\n");
    if (status == TQ_CLI_OK) status = TQ_CLI_FAIL;
  }
  return status;
}
