/*
 * simd.c - run-time SIMD level detection. The level is probed from the CPU
 * (and the OS's saving of the wide registers), and TQ_SIMD_AUTO may be
 * lowered by the TQAI_SIMD environment variable so every test can run at
 * every level.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tqai.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(TQ_HAVE_AVX2) || defined(TQ_HAVE_AVX512))
#include <cpuid.h>

/* F16C is CPUID leaf 1, ECX bit 29 (not every compiler's
 * __builtin_cpu_supports knows its name). */
static int cpu_has_f16c(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  return (c >> 29) & 1u;
}
#endif

static int cpu_probe(tq_simd_level level) {
  if (level == TQ_SIMD_SCALAR) return 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (level) {
#ifdef TQ_HAVE_AVX2
    case TQ_SIMD_AVX2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             cpu_has_f16c();
#endif
#ifdef TQ_HAVE_AVX512
    case TQ_SIMD_AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             cpu_has_f16c();
#endif
    default: return 0;
  }
#else
  return 0;
#endif
}

/* CPUID can trap to the hypervisor (tens of microseconds on some virtual
 * machines) and kernels are looked up on every attention call, so each
 * answer is probed once and kept. The CPU does not change while the process
 * runs; threads racing here store the same value. Bit 0: probed, bit 1: has. */
static int cpu_has(tq_simd_level level) {
  static atomic_int known[4];
  int v = atomic_load_explicit(&known[level & 3], memory_order_relaxed);
  if (!(v & 1)) {
    v = 1 | (cpu_probe(level) ? 2 : 0);
    atomic_store_explicit(&known[level & 3], v, memory_order_relaxed);
  }
  return (v >> 1) & 1;
}

int tq_simd_supported(tq_simd_level level) {
  if (level == TQ_SIMD_AUTO) return 1;
  if (level < TQ_SIMD_SCALAR || level > TQ_SIMD_AVX512) return 0;
  return cpu_has(level);
}

tq_simd_level tq_simd_detect(void) {
  if (cpu_has(TQ_SIMD_AVX512)) return TQ_SIMD_AVX512;
  if (cpu_has(TQ_SIMD_AVX2)) return TQ_SIMD_AVX2;
  return TQ_SIMD_SCALAR;
}

tq_simd_level tq_simd_default(void) {
  tq_simd_level best = tq_simd_detect();
  const char *env = getenv("TQAI_SIMD");
  tq_simd_level want = best;
  if (env) {
    if (strcmp(env, "scalar") == 0) want = TQ_SIMD_SCALAR;
    else if (strcmp(env, "avx2") == 0) want = TQ_SIMD_AVX2;
    else if (strcmp(env, "avx512") == 0) want = TQ_SIMD_AVX512;
  }
  return want < best ? want : best;
}

const char *tq_simd_name(tq_simd_level level) {
  switch (level) {
    case TQ_SIMD_AUTO: return "auto";
    case TQ_SIMD_SCALAR: return "scalar";
    case TQ_SIMD_AVX2: return "avx2";
    case TQ_SIMD_AVX512: return "avx512";
  }
  return "unknown";
}
