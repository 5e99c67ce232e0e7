/* test_core.c - version, status names, half conversions, SIMD selection. */
#include <stdint.h>

#include "test.h"
#include "tqai.h"

static void test_version(void) {
  CHECK(tq_version_number() == TQ_VERSION_NUMBER);
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", TQ_VERSION_MAJOR, TQ_VERSION_MINOR, TQ_VERSION_PATCH);
  CHECK(strcmp(tq_version_string(), want) == 0);
  CHECK(strstr(tq_build_info(), "simd kernels: scalar") != NULL);
  CHECK(strstr(tq_build_info(), "cuda:") != NULL);
}

static void test_status_names(void) {
  for (int s = 0; s >= TQ_ERR_UNSUPPORTED; s--) {
    const char *name = tq_status_name((tq_status)s);
    CHECKF(strncmp(name, "TQ_", 3) == 0 && strcmp(name, "TQ_UNKNOWN_STATUS") != 0, "status %d unnamed", s);
    CHECKF(strcmp(tq_status_message((tq_status)s), "unknown status") != 0, "status %d no message", s);
    for (int t = s - 1; t >= TQ_ERR_UNSUPPORTED; t--)
      CHECKF(strcmp(name, tq_status_name((tq_status)t)) != 0, "statuses %d and %d share a name", s, t);
  }
  CHECK(strcmp(tq_status_name((tq_status)1), "TQ_UNKNOWN_STATUS") == 0);
  CHECK(strcmp(tq_status_name((tq_status)-999), "TQ_UNKNOWN_STATUS") == 0);
  CHECK(strcmp(tq_status_message((tq_status)-999), "unknown status") == 0);
}

static uint32_t fbits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static float bitsf(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

/* Every non-NaN half survives f16 -> f32 -> f16; NaNs stay NaN. */
static void test_f16_exhaustive(void) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = tq_f16_to_f32((uint16_t)h);
    int is_nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
    if (is_nan) {
      if (f == f) bad++;
      if ((tq_f32_to_f16(f) & 0x7c00u) != 0x7c00u || !(tq_f32_to_f16(f) & 0x3ffu)) bad++;
    } else if (tq_f32_to_f16(f) != h) {
      bad++;
    }
  }
  CHECKF(bad == 0, "%d half patterns fail the round trip", bad);
}

static void test_f16_rounding(void) {
  CHECK(tq_f32_to_f16(1.0f) == 0x3c00);
  CHECK(tq_f32_to_f16(-2.0f) == 0xc000);
  CHECK(tq_f32_to_f16(65504.0f) == 0x7bff);
  CHECK(tq_f32_to_f16(65519.0f) == 0x7bff);   /* rounds down to the largest half */
  CHECK(tq_f32_to_f16(65520.0f) == 0x7c00);   /* tie rounds to even: infinity */
  CHECK(tq_f32_to_f16(1e6f) == 0x7c00);
  CHECK(tq_f32_to_f16(-INFINITY) == 0xfc00);
  CHECK(tq_f32_to_f16(5.9604645e-08f) == 0x0001); /* smallest subnormal */
  CHECK(tq_f32_to_f16(2.9802322e-08f) == 0x0000); /* half of it: tie to even (0) */
  CHECK(tq_f32_to_f16(2.9802326e-08f) == 0x0001); /* just above the tie */
  CHECK(tq_f32_to_f16(6.1035156e-05f) == 0x0400); /* smallest normal */
  /* 1 + 2^-11 is a tie between 1 and 1 + 2^-10: to even (1). */
  CHECK(tq_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);
  CHECK(tq_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);
  CHECK(tq_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02); /* tie, odd below: up */
  CHECK(tq_f16_to_f32(0x0001) == 0x1p-24f);
  CHECK(tq_f16_to_f32(0x8000) == 0.0f && (fbits(tq_f16_to_f32(0x8000)) >> 31));
}

static void test_bf16(void) {
  CHECK(tq_f32_to_bf16(1.0f) == 0x3f80);
  CHECK(tq_bf16_to_f32(0x3f80) == 1.0f);
  CHECK(tq_f32_to_bf16(bitsf(0x3f808000u)) == 0x3f80); /* tie to even */
  CHECK(tq_f32_to_bf16(bitsf(0x3f818000u)) == 0x3f82); /* tie, odd below: up */
  CHECK(tq_f32_to_bf16(bitsf(0x3f808001u)) == 0x3f81);
  CHECK(tq_f32_to_bf16(bitsf(0x7f7fffffu)) == 0x7f80); /* FLT_MAX rounds to inf */
  uint16_t n = tq_f32_to_bf16(NAN);
  CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f));
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    int is_nan = (h & 0x7f80u) == 0x7f80u && (h & 0x7fu);
    if (!is_nan && tq_f32_to_bf16(tq_bf16_to_f32((uint16_t)h)) != h) bad++;
  }
  CHECKF(bad == 0, "%d bf16 patterns fail the round trip", bad);
}

static void test_simd_selection(void) {
  tq_simd_level best = tq_simd_detect();
  CHECK(best >= TQ_SIMD_SCALAR && best <= TQ_SIMD_AVX512);
  CHECK(tq_simd_supported(TQ_SIMD_SCALAR) && tq_simd_supported(TQ_SIMD_AUTO));
  CHECK(tq_simd_supported(best));
  CHECK(!tq_simd_supported((tq_simd_level)17) && !tq_simd_supported((tq_simd_level)-1));
  for (int l = TQ_SIMD_SCALAR; l <= TQ_SIMD_AVX512; l++)
    if (l > (int)best) CHECK(!tq_simd_supported((tq_simd_level)l));
  CHECK(strcmp(tq_simd_name(TQ_SIMD_AVX2), "avx2") == 0);
  CHECK(strcmp(tq_simd_name((tq_simd_level)9), "unknown") == 0);
  /* TQAI_SIMD lowers the default level, never raises it past the CPU. */
  const char *saved = getenv("TQAI_SIMD");
  char keep[32] = "";
  if (saved) snprintf(keep, sizeof keep, "%s", saved);
  setenv("TQAI_SIMD", "scalar", 1);
  CHECK(tq_simd_default() == TQ_SIMD_SCALAR);
  setenv("TQAI_SIMD", "avx512", 1);
  CHECK(tq_simd_default() == best);
  setenv("TQAI_SIMD", "bogus", 1);
  CHECK(tq_simd_default() == best);
  if (saved) setenv("TQAI_SIMD", keep, 1);
  else unsetenv("TQAI_SIMD");
}

int main(void) {
  TQ_RUN(test_version);
  TQ_RUN(test_status_names);
  TQ_RUN(test_f16_exhaustive);
  TQ_RUN(test_f16_rounding);
  TQ_RUN(test_bf16);
  TQ_RUN(test_simd_selection);
  return tq_test_summary("test_core");
}
