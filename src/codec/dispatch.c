/* dispatch.c - maps a resolved SIMD level to its codec kernel table. */
#include "kernels.h"

const tq_codec_kernels *tq_codec_kernels_get(tq_simd_level level) {
  if (level == TQ_SIMD_AUTO || !tq_simd_supported(level)) return NULL;
  switch (level) {
    case TQ_SIMD_SCALAR: return &tq_codec_kernels_ref;
#ifdef TQ_HAVE_AVX2
    case TQ_SIMD_AVX2: return &tq_codec_kernels_avx2;
#endif
#ifdef TQ_HAVE_AVX512
    case TQ_SIMD_AVX512: return &tq_codec_kernels_avx512;
#endif
    default: return NULL;
  }
}
