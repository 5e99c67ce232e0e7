/*
 * args.c - strict command-line parsing and output helpers of the tqai tool.
 * See args.h.
 */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */
/* ------------------------------------------------------------------------ */

int args_usage_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
  return TQ_CLI_USAGE;
}

int cli_status_error(const char *prog, const char *what, tq_status status) {
  fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, tq_status_message(status),
          tq_status_name(status));
  return TQ_CLI_FAIL;
}

int cli_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return TQ_CLI_FAIL;
}

/* ------------------------------------------------------------------------ */
/* Values                                                                    */
/* ------------------------------------------------------------------------ */

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Reads an unsigned integer in `base` from the whole of `text` (which must
 * start with a digit, so no blanks or signs slip through strtoull). Returns 0
 * on success, -1 on bad syntax or overflow. */
static int read_u64(const char *text, int base, uint64_t *out) {
  char *end = NULL;
  unsigned long long v;
  if (!is_digit(text[0])) return -1;
  errno = 0;
  v = strtoull(text, &end, base);
  if (errno == ERANGE || end == text || *end != '\0') return -1;
  *out = (uint64_t)v;
  return 0;
}

int args_parse_u64(const char *prog, const char *opt, const char *text, uint64_t min,
                   uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (read_u64(text, 10, &v) != 0 || v < min || v > max)
    return args_usage_error(prog, "%s expects an integer in %llu..%llu, got '%s'", opt,
                            (unsigned long long)min, (unsigned long long)max, text);
  *out = v;
  return 0;
}

int args_parse_u32(const char *prog, const char *opt, const char *text, uint32_t min,
                   uint32_t max, uint32_t *out) {
  uint64_t v = 0;
  int rc = args_parse_u64(prog, opt, text, min, max, &v);
  if (rc == 0) *out = (uint32_t)v;
  return rc;
}

int args_parse_i64(const char *prog, const char *opt, const char *text, int64_t min,
                   int64_t max, int64_t *out) {
  char *end = NULL;
  long long v = 0;
  const char *digits = text[0] == '-' ? text + 1 : text;
  int ok = is_digit(digits[0]);
  if (ok) {
    errno = 0;
    v = strtoll(text, &end, 10);
    ok = errno != ERANGE && end != text && *end == '\0' && v >= min && v <= max;
  }
  if (!ok)
    return args_usage_error(prog, "%s expects an integer in %lld..%lld, got '%s'", opt,
                            (long long)min, (long long)max, text);
  *out = (int64_t)v;
  return 0;
}

int args_parse_seed(const char *prog, const char *opt, const char *text, uint64_t *out) {
  uint64_t v = 0;
  int rc;
  if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    /* read_u64 wants a digit first, and strtoull would accept "0x" alone. */
    const char *hex = text + 2;
    int ok = hex[0] != '\0';
    for (const char *c = hex; ok && *c; c++)
      ok = is_digit(*c) || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F');
    rc = ok && strlen(hex) <= 16 ? read_u64(text, 16, &v) : -1;
  } else {
    rc = read_u64(text, 10, &v);
  }
  if (rc != 0)
    return args_usage_error(prog,
                            "%s expects an unsigned 64-bit integer (decimal, or hex with "
                            "0x), got '%s'",
                            opt, text);
  *out = v;
  return 0;
}

int args_parse_f64(const char *prog, const char *opt, const char *text, double min,
                   double max, double *out) {
  char *end = NULL;
  double v = 0.0;
  int ok = text[0] != '\0' && (is_digit(text[0]) || text[0] == '-' || text[0] == '.');
  if (ok) {
    errno = 0;
    v = strtod(text, &end);
    ok = errno != ERANGE && end != text && *end == '\0' && isfinite(v) && v >= min &&
         v <= max;
  }
  if (!ok)
    return args_usage_error(prog, "%s expects a number in %g..%g, got '%s'", opt, min, max,
                            text);
  *out = v;
  return 0;
}

int args_parse_choice(const char *prog, const char *opt, const char *text,
                      const char *const *names, size_t count, int *out) {
  char list[256];
  size_t used = 0;
  for (size_t i = 0; i < count; i++) {
    if (strcmp(text, names[i]) == 0) {
      *out = (int)i;
      return 0;
    }
  }
  list[0] = '\0';
  for (size_t i = 0; i < count && used < sizeof list; i++) {
    int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
    if (w < 0) break;
    used += (size_t)w;
  }
  return args_usage_error(prog, "%s expects one of %s; got '%s'", opt, list, text);
}

/* ------------------------------------------------------------------------ */
/* Walking a command's arguments                                             */
/* ------------------------------------------------------------------------ */

void args_init(args_parser *p, const char *prog, int argc, char **argv) {
  p->prog = prog;
  p->argc = argc;
  p->argv = argv;
  p->index = 0;
  p->arg = NULL;
  p->name = NULL;
  p->value = NULL;
  p->failed = 0;
}

const char *args_next(args_parser *p) {
  if (p->failed || p->index + 1 >= p->argc) return NULL;
  p->index++;
  p->arg = p->argv[p->index];
  p->name = NULL;
  p->value = NULL;
  return p->arg;
}

int args_flag(args_parser *p, const char *name) {
  size_t len = strlen(name);
  if (p->failed || !p->arg || strncmp(p->arg, name, len) != 0) return 0;
  if (p->arg[len] == '\0') return 1;
  if (p->arg[len] != '=') return 0;
  args_usage_error(p->prog, "option '%s' takes no value", name);
  p->failed = 1;
  return 1;
}

int args_option(args_parser *p, const char *name) {
  size_t len = strlen(name);
  if (p->failed || !p->arg || strncmp(p->arg, name, len) != 0) return 0;
  if (p->arg[len] == '=') {
    p->name = name;
    p->value = p->arg + len + 1;
    return 1;
  }
  if (p->arg[len] != '\0') return 0;
  p->name = name;
  if (p->index + 1 >= p->argc) {
    args_usage_error(p->prog, "option '%s' requires a value", name);
    p->failed = 1;
    return 1;
  }
  p->index++;
  p->value = p->argv[p->index];
  return 1;
}

void args_u32(args_parser *p, uint32_t min, uint32_t max, uint32_t *out) {
  if (!p->failed && args_parse_u32(p->prog, p->name, p->value, min, max, out) != 0)
    p->failed = 1;
}

void args_u64(args_parser *p, uint64_t min, uint64_t max, uint64_t *out) {
  if (!p->failed && args_parse_u64(p->prog, p->name, p->value, min, max, out) != 0)
    p->failed = 1;
}

void args_i64(args_parser *p, int64_t min, int64_t max, int64_t *out) {
  if (!p->failed && args_parse_i64(p->prog, p->name, p->value, min, max, out) != 0)
    p->failed = 1;
}

void args_seed(args_parser *p, uint64_t *out) {
  if (!p->failed && args_parse_seed(p->prog, p->name, p->value, out) != 0) p->failed = 1;
}

void args_f64(args_parser *p, double min, double max, double *out) {
  if (!p->failed && args_parse_f64(p->prog, p->name, p->value, min, max, out) != 0)
    p->failed = 1;
}

void args_choice(args_parser *p, const char *const *names, size_t count, int *out) {
  if (!p->failed && args_parse_choice(p->prog, p->name, p->value, names, count, out) != 0)
    p->failed = 1;
}

void args_unknown(args_parser *p) {
  if (p->failed || !p->arg) return;
  if (p->arg[0] == '-' && p->arg[1] != '\0')
    args_usage_error(p->prog, "unknown option '%s'", p->arg);
  else
    args_usage_error(p->prog, "unexpected argument '%s'", p->arg);
  p->failed = 1;
}

/* ------------------------------------------------------------------------ */
/* JSON output                                                               */
/* ------------------------------------------------------------------------ */

void cli_json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    switch (*c) {
      case '"': fputs("\\\"", out); break;
      case '\\': fputs("\\\\", out); break;
      case '\n': fputs("\\n", out); break;
      case '\r': fputs("\\r", out); break;
      case '\t': fputs("\\t", out); break;
      default:
        if (*c < 0x20)
          fprintf(out, "\\u%04x", (unsigned)*c);
        else
          fputc(*c, out);
    }
  }
  fputc('"', out);
}

void cli_json_double(FILE *out, double v) {
  if (isfinite(v))
    fprintf(out, "%.9g", v);
  else
    fputs("null", out);
}
