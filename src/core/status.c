/* status.c - version, build description and status names. */
#include "tqai.h"

#define TQ_STR2_(x) #x
#define TQ_STR_(x) TQ_STR2_(x)

unsigned tq_version_number(void) { return TQ_VERSION_NUMBER; }

const char *tq_version_string(void) {
  return TQ_STR_(TQ_VERSION_MAJOR) "." TQ_STR_(TQ_VERSION_MINOR) "." TQ_STR_(TQ_VERSION_PATCH);
}

#if defined(__clang__)
#define TQ_COMPILER_ "clang " __clang_version__
#elif defined(__GNUC__)
#define TQ_COMPILER_ "gcc " __VERSION__
#else
#define TQ_COMPILER_ "unknown compiler"
#endif

#if defined(TQ_HAVE_AVX512)
#define TQ_SIMD_BUILT_ "scalar avx2 avx512"
#elif defined(TQ_HAVE_AVX2)
#define TQ_SIMD_BUILT_ "scalar avx2"
#else
#define TQ_SIMD_BUILT_ "scalar"
#endif

#if defined(TQ_HAVE_CUDA)
#define TQ_CUDA_BUILT_ "cuda: built"
#else
#define TQ_CUDA_BUILT_ "cuda: not built"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TQ_SAN_ "; sanitizers: address,undefined"
#else
#define TQ_SAN_ ""
#endif

const char *tq_build_info(void) {
  return "tqai " TQ_STR_(TQ_VERSION_MAJOR) "." TQ_STR_(TQ_VERSION_MINOR) "." TQ_STR_(
      TQ_VERSION_PATCH) "; " TQ_COMPILER_ "; simd kernels: " TQ_SIMD_BUILT_ "; " TQ_CUDA_BUILT_ TQ_SAN_;
}

const char *tq_status_name(tq_status status) {
  switch (status) {
    case TQ_OK: return "TQ_OK";
    case TQ_ERR_INVALID_ARGUMENT: return "TQ_ERR_INVALID_ARGUMENT";
    case TQ_ERR_UNSUPPORTED_DIM: return "TQ_ERR_UNSUPPORTED_DIM";
    case TQ_ERR_UNSUPPORTED_BITS: return "TQ_ERR_UNSUPPORTED_BITS";
    case TQ_ERR_UNSUPPORTED_ROTATION: return "TQ_ERR_UNSUPPORTED_ROTATION";
    case TQ_ERR_UNSUPPORTED_SIMD: return "TQ_ERR_UNSUPPORTED_SIMD";
    case TQ_ERR_NON_FINITE: return "TQ_ERR_NON_FINITE";
    case TQ_ERR_RANGE: return "TQ_ERR_RANGE";
    case TQ_ERR_OUT_OF_MEMORY: return "TQ_ERR_OUT_OF_MEMORY";
    case TQ_ERR_BUFFER_TOO_SMALL: return "TQ_ERR_BUFFER_TOO_SMALL";
    case TQ_ERR_CORRUPT: return "TQ_ERR_CORRUPT";
    case TQ_ERR_IO: return "TQ_ERR_IO";
    case TQ_ERR_FORMAT_VERSION: return "TQ_ERR_FORMAT_VERSION";
    case TQ_ERR_MISMATCH: return "TQ_ERR_MISMATCH";
    case TQ_ERR_NO_CONVERGENCE: return "TQ_ERR_NO_CONVERGENCE";
    case TQ_ERR_UNSUPPORTED: return "TQ_ERR_UNSUPPORTED";
  }
  return "TQ_UNKNOWN_STATUS";
}

const char *tq_status_message(tq_status status) {
  switch (status) {
    case TQ_OK: return "success";
    case TQ_ERR_INVALID_ARGUMENT: return "invalid argument";
    case TQ_ERR_UNSUPPORTED_DIM: return "unsupported head size (supported: 2..2048)";
    case TQ_ERR_UNSUPPORTED_BITS: return "unsupported bit width (supported: 1..8)";
    case TQ_ERR_UNSUPPORTED_ROTATION:
      return "unsupported rotation for this head size (Hadamard needs a power of two)";
    case TQ_ERR_UNSUPPORTED_SIMD: return "SIMD level not built in or not supported by this CPU";
    case TQ_ERR_NON_FINITE: return "input contains NaN or infinity";
    case TQ_ERR_RANGE: return "value out of range for its storage format";
    case TQ_ERR_OUT_OF_MEMORY: return "out of memory";
    case TQ_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case TQ_ERR_CORRUPT: return "data is corrupt or malformed";
    case TQ_ERR_IO: return "input/output error";
    case TQ_ERR_FORMAT_VERSION: return "unsupported format version";
    case TQ_ERR_MISMATCH: return "data does not match the object it is used with";
    case TQ_ERR_NO_CONVERGENCE: return "numerical solver did not converge";
    case TQ_ERR_UNSUPPORTED: return "not supported";
  }
  return "unknown status";
}
