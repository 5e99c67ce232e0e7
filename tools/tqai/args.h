/*
 * args.h - strict command-line parsing and small output helpers shared by the
 * commands of the tqai tool.
 *
 * Every parser here prints its own message on stderr when the input is bad
 * ("tqai benchmark: --bits-k expects an integer in 1..8, got 'x'", then a hint
 * to use --help), so a command only has to return TQ_CLI_USAGE. Integers are
 * read in full: no sign where none is allowed, no leading blanks, no trailing
 * characters, no silent wrap-around on overflow.
 */
#ifndef TQAI_TOOL_ARGS_H
#define TQAI_TOOL_ARGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tqai.h"

/* Exit statuses of the tool and of every command. */
enum {
  TQ_CLI_OK = 0,   /* success, and --help */
  TQ_CLI_FAIL = 1, /* the library or the system failed */
  TQ_CLI_USAGE = 2 /* bad command line */
};

#if defined(__GNUC__) || defined(__clang__)
#define TQ_CLI_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#else
#define TQ_CLI_PRINTF(fmt, first)
#endif

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */
/* ------------------------------------------------------------------------ */

/* Prints "PROG: MESSAGE" and "Try 'PROG --help' for more information." on
 * stderr. PROG is "tqai" or "tqai COMMAND". Returns TQ_CLI_USAGE. */
int args_usage_error(const char *prog, const char *fmt, ...) TQ_CLI_PRINTF(2, 3);

/* Prints "PROG: WHAT: <tq_status_message> (<tq_status_name>)" on stderr.
 * Returns TQ_CLI_FAIL. */
int cli_status_error(const char *prog, const char *what, tq_status status);

/* Prints "PROG: MESSAGE" on stderr (a failure that is not a usage error).
 * Returns TQ_CLI_FAIL. */
int cli_error(const char *prog, const char *fmt, ...) TQ_CLI_PRINTF(2, 3);

/* ------------------------------------------------------------------------ */
/* Values                                                                    */
/* ------------------------------------------------------------------------ */

/* Each parses `text`, the value given to option `opt`, stores it in *out and
 * returns 0; on bad input it prints a message naming `opt`, the expected form
 * and the text given, leaves *out alone and returns TQ_CLI_USAGE. */

/* Decimal digits only, min <= value <= max. */
int args_parse_u64(const char *prog, const char *opt, const char *text, uint64_t min,
                   uint64_t max, uint64_t *out);
int args_parse_u32(const char *prog, const char *opt, const char *text, uint32_t min,
                   uint32_t max, uint32_t *out);
/* Optional '-' then decimal digits, min <= value <= max. */
int args_parse_i64(const char *prog, const char *opt, const char *text, int64_t min,
                   int64_t max, int64_t *out);
/* Any 64-bit unsigned value, in decimal or in hex with a 0x prefix (seeds). */
int args_parse_seed(const char *prog, const char *opt, const char *text, uint64_t *out);
/* A finite decimal number (strtod syntax, no blanks), min <= value <= max. */
int args_parse_f64(const char *prog, const char *opt, const char *text, double min,
                   double max, double *out);
/* One of `count` names; *out receives its index. */
int args_parse_choice(const char *prog, const char *opt, const char *text,
                      const char *const *names, size_t count, int *out);

/* ------------------------------------------------------------------------ */
/* Walking a command's arguments                                             */
/* ------------------------------------------------------------------------ */

/* A cursor over argv[1..argc-1] of one command (argv[0] is the command name).
 * Typical loop:
 *
 *   args_parser p;
 *   args_init(&p, "tqai benchmark", argc, argv);
 *   while (args_next(&p)) {
 *     if (args_flag(&p, "--json")) json = 1;
 *     else if (args_option(&p, "--bits-k")) args_u32(&p, 1, 8, &bits_k);
 *     else args_unknown(&p);
 *     if (p.failed) return TQ_CLI_USAGE;
 *   }
 *
 * Options take their value as the next argument ("--bits-k 4") or after '='
 * ("--bits-k=4"). Once a message has been printed, `failed` is set and every
 * later call does nothing. */
typedef struct args_parser {
  const char *prog;  /* "tqai COMMAND", the prefix of every message */
  int argc;
  char **argv;
  int index;         /* index of the current argument in argv */
  const char *arg;   /* the current argument, as given */
  const char *name;  /* the option matched by args_option (for messages) */
  const char *value; /* its value, once args_option matched */
  int failed;        /* a message has been printed: return TQ_CLI_USAGE */
} args_parser;

void args_init(args_parser *p, const char *prog, int argc, char **argv);

/* Moves to the next argument; returns it, or NULL after the last one. */
const char *args_next(args_parser *p);

/* Returns 1 if the current argument is the flag `name`. "--name=VALUE" is
 * reported as an error (the flag takes no value); it also returns 1 then, with
 * `failed` set. */
int args_flag(args_parser *p, const char *name);

/* Returns 1 if the current argument is the option `name` and takes its value
 * (the next argument, or the text after '='). A missing value is reported and
 * `failed` set; it also returns 1 then. */
int args_option(args_parser *p, const char *name);

/* Parse the value of the option just matched into *out (see the parsers
 * above); on bad input they set `failed`. */
void args_u32(args_parser *p, uint32_t min, uint32_t max, uint32_t *out);
void args_u64(args_parser *p, uint64_t min, uint64_t max, uint64_t *out);
void args_i64(args_parser *p, int64_t min, int64_t max, int64_t *out);
void args_seed(args_parser *p, uint64_t *out);
void args_f64(args_parser *p, double min, double max, double *out);
void args_choice(args_parser *p, const char *const *names, size_t count, int *out);

/* Reports the current argument as an unknown option (it starts with '-') or
 * an unexpected argument, and sets `failed`. */
void args_unknown(args_parser *p);

/* ------------------------------------------------------------------------ */
/* JSON output                                                               */
/* ------------------------------------------------------------------------ */

/* Writes `s` as a JSON string literal, quotes included. */
void cli_json_string(FILE *out, const char *s);

/* Writes a JSON number with 9 significant digits, or null when v is not
 * finite (JSON has no NaN or infinity). */
void cli_json_double(FILE *out, double v);

#endif /* TQAI_TOOL_ARGS_H */
