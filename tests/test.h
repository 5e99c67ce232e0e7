/*
 * test.h - the project's minimal test harness. Each test program defines test
 * functions, registers them in main() with TQ_RUN, and ends with
 * tq_test_summary(), which prints "N passed, N failed" and returns the exit
 * status. A check failing prints where and why and marks its test failed;
 * the test goes on, so one run shows every failure.
 */
#ifndef TQ_TEST_H
#define TQ_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tq_test_passed_ = 0, tq_test_failed_ = 0, tq_test_cur_failed_ = 0;
static const char *tq_test_name_ = "";

#define TQ_FAIL_(...)                                                     \
  do {                                                                    \
    if (!tq_test_cur_failed_) fprintf(stderr, "FAIL %s\n", tq_test_name_); \
    tq_test_cur_failed_ = 1;                                              \
    fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                     \
    fprintf(stderr, __VA_ARGS__);                                         \
    fprintf(stderr, "\n");                                                \
  } while (0)

/* Check a condition. */
#define CHECK(cond)                                 \
  do {                                              \
    if (!(cond)) TQ_FAIL_("check failed: %s", #cond); \
  } while (0)

/* Check a condition, with a printf-style explanation on failure. */
#define CHECKF(cond, ...)            \
  do {                               \
    if (!(cond)) TQ_FAIL_(__VA_ARGS__); \
  } while (0)

/* Check that a tq_status-returning expression gives the expected status. */
#define CHECK_STATUS(expr, expected)                                          \
  do {                                                                        \
    int tq_got_ = (int)(expr), tq_want_ = (int)(expected);                    \
    if (tq_got_ != tq_want_)                                                  \
      TQ_FAIL_("%s returned %s, expected %s", #expr,                          \
               tq_status_name((tq_status)tq_got_), tq_status_name((tq_status)tq_want_)); \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, TQ_OK)

/* Check |a - b| <= tol. */
#define CHECK_NEAR(a, b, tol)                                                  \
  do {                                                                         \
    double tq_a_ = (double)(a), tq_b_ = (double)(b), tq_t_ = (double)(tol);    \
    if (!(fabs(tq_a_ - tq_b_) <= tq_t_))                                       \
      TQ_FAIL_("%s = %.9g, %s = %.9g, differ by more than %.3g", #a, tq_a_, #b, \
               tq_b_, tq_t_);                                                  \
  } while (0)

#define TQ_RUN(fn)                                      \
  do {                                                  \
    tq_test_name_ = #fn;                                \
    tq_test_cur_failed_ = 0;                            \
    fn();                                               \
    if (tq_test_cur_failed_) tq_test_failed_++;         \
    else tq_test_passed_++;                             \
  } while (0)

/* Print a skipped test with its reason; a skip counts as neither. */
#define TQ_SKIP(name, why) printf("SKIP %s: %s\n", name, why)

static inline int tq_test_summary(const char *program) {
  printf("%s: %d passed, %d failed\n", program, tq_test_passed_, tq_test_failed_);
  return tq_test_failed_ ? 1 : 0;
}

/* Deterministic test data: a small splitmix64 generator. */
typedef struct {
  unsigned long long s;
} tq_test_rng;

static inline unsigned long long tq_test_next(tq_test_rng *r) {
  unsigned long long z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double tq_test_uniform(tq_test_rng *r) {
  return (double)(tq_test_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal (Box-Muller; test data need not be portable). */
static inline double tq_test_gauss(tq_test_rng *r) {
  double u1 = tq_test_uniform(r), u2 = tq_test_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
