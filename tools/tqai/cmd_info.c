/*
 * cmd_info.c - "tqai info": what this build of the library can do: version,
 * build description, SIMD levels, CUDA (as tq_build_info reports it), the
 * code format, limits and the tabulated codebooks. Human text or --json.
 */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "tqai.h"

static const char PROG[] = "tqai info";

/* Head sizes the library may tabulate (tqai.h, tq_codebook_get). */
static const uint32_t table_dims[] = {64, 80, 96, 112, 128, 192, 256};
#define N_TABLE_DIMS (sizeof table_dims / sizeof table_dims[0])

static const tq_simd_level levels[] = {TQ_SIMD_SCALAR, TQ_SIMD_AVX2, TQ_SIMD_AVX512};
#define N_LEVELS (sizeof levels / sizeof levels[0])

void cmd_info_usage(FILE *out) {
  fprintf(out,
          "Usage: tqai info [--json]\n"
          "\n"
          "Shows the library version, how it was built, the SIMD levels this CPU\n"
          "supports and the one in use, CUDA support (as the build reports it), the\n"
          "code format version, the limits, and which codebooks are tabulated.\n"
          "\n"
          "Options:\n"
          "  --json      print one JSON object instead of text\n"
          "  -h, --help  show this help and exit\n"
          "\n"
          "Environment:\n"
          "  TQAI_SIMD   scalar, avx2 or avx512: the level TQ_SIMD_AUTO uses\n"
          "              (lowered to the best level this CPU supports)\n");
}

/* The "cuda..." part of tq_build_info(), whose parts are separated by "; ".
 * Copies it (without the "cuda" prefix and ": ") into buf; returns 0 if the
 * build info says nothing about CUDA. */
static int cuda_from_build_info(char *buf, size_t size) {
  const char *info = tq_build_info();
  const char *p = info;
  while (*p) {
    const char *end = strchr(p, ';');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len >= 4 && strncmp(p, "cuda", 4) == 0) {
      const char *v = p + 4;
      size_t vlen = len - 4;
      while (vlen > 0 && (*v == ':' || *v == ' ' || *v == '=')) {
        v++;
        vlen--;
      }
      if (vlen >= size) vlen = size - 1;
      memcpy(buf, v, vlen);
      buf[vlen] = '\0';
      return 1;
    }
    if (!end) break;
    p = end + 1;
    while (*p == ' ') p++;
  }
  return 0;
}

/* How TQAI_SIMD affects the level in use: NULL if unset. *forces is 1 when it
 * names a level (which tq_simd_default then uses, lowered to the CPU's best). */
static const char *simd_env(int *forces) {
  const char *env = getenv("TQAI_SIMD");
  *forces = env && (strcmp(env, "scalar") == 0 || strcmp(env, "avx2") == 0 ||
                    strcmp(env, "avx512") == 0);
  return env;
}

/* Writes the bits 1..8 tabulated for (dim, kind) as "1-8", "2, 4" or "none". */
static void format_bits(uint32_t dim, tq_codebook_kind kind, char *buf, size_t size) {
  int all = 1, any = 0;
  size_t used = 0;
  buf[0] = '\0';
  for (uint32_t b = TQ_MIN_BITS; b <= TQ_MAX_BITS; b++) {
    if (!tq_codebook_is_tabulated(dim, b, kind)) {
      all = 0;
      continue;
    }
    if (used < size) {
      int w = snprintf(buf + used, size - used, "%s%u", any ? ", " : "", (unsigned)b);
      if (w > 0) used += (size_t)w;
    }
    any = 1;
  }
  if (all)
    snprintf(buf, size, "%u-%u", (unsigned)TQ_MIN_BITS, (unsigned)TQ_MAX_BITS);
  else if (!any)
    snprintf(buf, size, "none");
}

static void print_text(void) {
  char cuda[128], bits_exact[64], bits_gauss[64];
  int forces;
  const char *env = simd_env(&forces);
  tq_simd_level detected = tq_simd_detect(), in_use = tq_simd_default();

  printf("tqai %s\n", tq_version_string());
  if (tq_version_number() != TQ_VERSION_NUMBER)
    printf("  warning: tool built against tqai.h %d.%d.%d\n", TQ_VERSION_MAJOR,
           TQ_VERSION_MINOR, TQ_VERSION_PATCH);
  printf("\n%-22s%s\n", "build", tq_build_info());
  printf("%-22s%d\n", "code format version", TQ_CODE_FORMAT_VERSION);

  printf("\nSIMD\n");
  printf("  %-20s%s\n", "detected", tq_simd_name(detected));
  printf("  %-20s%s", "in use (auto)", tq_simd_name(in_use));
  if (env && forces && strcmp(env, tq_simd_name(in_use)) == 0)
    printf("  (forced by TQAI_SIMD=%s)", env);
  else if (env && forces)
    printf("  (TQAI_SIMD=%s, lowered to what this CPU supports)", env);
  else if (env)
    printf("  (TQAI_SIMD=%s ignored: not scalar, avx2 or avx512)", env);
  printf("\n");
  for (size_t i = 0; i < N_LEVELS; i++)
    printf("  %-20s%s\n", tq_simd_name(levels[i]),
           tq_simd_supported(levels[i]) ? "supported" : "not available");

  printf("\n%-22s%s\n", "CUDA",
         cuda_from_build_info(cuda, sizeof cuda) ? cuda : "(not reported by the build)");

  printf("\nlimits\n");
  printf("  %-20s%u..%u\n", "head dim", (unsigned)TQ_MIN_DIM, (unsigned)TQ_MAX_DIM);
  printf("  %-20s%u..%u\n", "bits per coordinate", (unsigned)TQ_MIN_BITS,
         (unsigned)TQ_MAX_BITS);
  printf("  %-20s%.0f (larger norms need --norm f32)\n", "fp16 norm max",
         (double)TQ_F16_MAX);

  printf("\ncodebooks (tabulated bits per head dim)\n");
  printf("  %-8s%-16s%s\n", "dim", "exact", "gaussian");
  for (size_t i = 0; i < N_TABLE_DIMS; i++) {
    format_bits(table_dims[i], TQ_CODEBOOK_EXACT, bits_exact, sizeof bits_exact);
    format_bits(table_dims[i], TQ_CODEBOOK_GAUSSIAN, bits_gauss, sizeof bits_gauss);
    printf("  %-8u%-16s%s\n", (unsigned)table_dims[i], bits_exact, bits_gauss);
  }
  printf("  any other head dim in %u..%u: solved on demand (Lloyd-Max, double precision)\n",
         (unsigned)TQ_MIN_DIM, (unsigned)TQ_MAX_DIM);
}

static void json_bits_array(uint32_t dim, tq_codebook_kind kind) {
  int first = 1;
  putchar('[');
  for (uint32_t b = TQ_MIN_BITS; b <= TQ_MAX_BITS; b++) {
    if (!tq_codebook_is_tabulated(dim, b, kind)) continue;
    printf("%s%u", first ? "" : ", ", (unsigned)b);
    first = 0;
  }
  putchar(']');
}

static void print_json(void) {
  char cuda[128];
  int forces;
  const char *env = simd_env(&forces);
  const char *kinds[] = {"exact", "gaussian"};
  const tq_codebook_kind kind_values[] = {TQ_CODEBOOK_EXACT, TQ_CODEBOOK_GAUSSIAN};

  printf("{\n  \"version\": ");
  cli_json_string(stdout, tq_version_string());
  printf(",\n  \"version_number\": %u,\n", tq_version_number());
  printf("  \"header_version_number\": %d,\n", TQ_VERSION_NUMBER);
  printf("  \"build\": ");
  cli_json_string(stdout, tq_build_info());
  printf(",\n  \"code_format_version\": %d,\n", TQ_CODE_FORMAT_VERSION);

  printf("  \"simd\": {\n    \"detected\": ");
  cli_json_string(stdout, tq_simd_name(tq_simd_detect()));
  printf(",\n    \"in_use\": ");
  cli_json_string(stdout, tq_simd_name(tq_simd_default()));
  printf(",\n    \"env_TQAI_SIMD\": ");
  if (env)
    cli_json_string(stdout, env);
  else
    printf("null");
  printf(",\n    \"env_forces\": %s,\n    \"levels\": {", forces ? "true" : "false");
  for (size_t i = 0; i < N_LEVELS; i++)
    printf("%s\"%s\": %s", i ? ", " : "", tq_simd_name(levels[i]),
           tq_simd_supported(levels[i]) ? "true" : "false");
  printf("}\n  },\n");

  printf("  \"cuda\": ");
  if (cuda_from_build_info(cuda, sizeof cuda))
    cli_json_string(stdout, cuda);
  else
    printf("null");
  printf(",\n");

  printf("  \"limits\": {\"min_dim\": %u, \"max_dim\": %u, \"min_bits\": %u, "
         "\"max_bits\": %u, \"f16_norm_max\": %.0f},\n",
         (unsigned)TQ_MIN_DIM, (unsigned)TQ_MAX_DIM, (unsigned)TQ_MIN_BITS,
         (unsigned)TQ_MAX_BITS, (double)TQ_F16_MAX);

  printf("  \"codebooks\": {\n");
  for (size_t k = 0; k < 2; k++) {
    printf("    \"%s\": {", kinds[k]);
    for (size_t i = 0; i < N_TABLE_DIMS; i++) {
      printf("%s\"%u\": ", i ? ", " : "", (unsigned)table_dims[i]);
      json_bits_array(table_dims[i], kind_values[k]);
    }
    printf("},\n");
  }
  printf("    \"other_dims\": \"solved on demand\"\n  }\n}\n");
}

int cmd_info_run(int argc, char **argv) {
  args_parser p;
  int json = 0;

  args_init(&p, PROG, argc, argv);
  while (args_next(&p)) {
    if (args_flag(&p, "--help") || args_flag(&p, "-h")) {
      if (p.failed) break;
      cmd_info_usage(stdout);
      return TQ_CLI_OK;
    } else if (args_flag(&p, "--json")) {
      json = 1;
    } else {
      args_unknown(&p);
    }
  }
  if (p.failed) return TQ_CLI_USAGE;

  if (json)
    print_json();
  else
    print_text();
  return TQ_CLI_OK;
}
