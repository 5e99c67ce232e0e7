/*
 * test_pool.c - the thread pool runs every task of a call exactly once and
 * returns only when all are done, whether its workers are polling for the
 * next call or asleep, for any thread and task count; it can be freed in
 * either state.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "core/pool.h"
#include "test.h"
#include "tqai.h"

#define MAX_TASKS 1000

typedef struct {
  atomic_uint runs[MAX_TASKS];
  atomic_uint total;
  uint32_t spin_work; /* busy iterations per task */
} counts;

static void task(void *ctx, uint32_t index) {
  counts *c = ctx;
  volatile uint32_t x = 0;
  for (uint32_t i = 0; i < c->spin_work; i++) x += i;
  atomic_fetch_add(&c->runs[index], 1u);
  atomic_fetch_add(&c->total, 1u);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* One call of n tasks; every index ran once by the time it returns. */
static void check_call(tq_pool *pool, counts *c, uint32_t n, uint32_t threads, int round) {
  for (uint32_t i = 0; i < n; i++) atomic_store(&c->runs[i], 0u);
  atomic_store(&c->total, 0u);
  tq_pool_run(pool, n, task, c);
  CHECKF(atomic_load(&c->total) == n, "threads %u round %d: %u of %u tasks ran", threads, round,
         atomic_load(&c->total), n);
  for (uint32_t i = 0; i < n; i++)
    if (atomic_load(&c->runs[i]) != 1u) {
      TQ_FAIL_("threads %u round %d: task %u ran %u times", threads, round, i,
               atomic_load(&c->runs[i]));
      break;
    }
}

static void test_calls(void) {
  static const uint32_t threads[] = {1, 2, 3, 4, 8};
  static const uint32_t tasks[] = {0, 1, 2, 3, 7, 64, MAX_TASKS};
  counts *c = calloc(1, sizeof *c);
  CHECK(c != NULL);
  if (!c) return;
  for (size_t a = 0; a < sizeof threads / sizeof threads[0]; a++) {
    tq_pool *pool = NULL;
    CHECK(tq_pool_create(threads[a], &pool) == TQ_OK && pool);
    if (!pool) continue;
    CHECK(tq_pool_size(pool) == threads[a]);
    int round = 0;
    /* Back to back: the workers are still polling. */
    for (int r = 0; r < 200; r++, round++) {
      c->spin_work = (uint32_t)(r % 3) * 200;
      check_call(pool, c, tasks[(size_t)r % (sizeof tasks / sizeof tasks[0])], threads[a], round);
    }
    /* After a pause longer than the polling: the workers sleep. */
    for (int r = 0; r < 3; r++, round++) {
      sleep_ms(5);
      c->spin_work = 100;
      check_call(pool, c, 64, threads[a], round);
    }
    /* Long tasks: the caller waits for stragglers past its polling. */
    c->spin_work = 3000000;
    check_call(pool, c, threads[a] + 1, threads[a], round++);
    tq_pool_free(pool); /* workers polling */
  }
  /* Freed while the workers sleep, and freed before any call. */
  tq_pool *pool = NULL;
  CHECK(tq_pool_create(3, &pool) == TQ_OK);
  c->spin_work = 0;
  check_call(pool, c, 10, 3, 0);
  sleep_ms(5);
  tq_pool_free(pool);
  pool = NULL;
  CHECK(tq_pool_create(4, &pool) == TQ_OK);
  tq_pool_free(pool);
  /* NULL runs the tasks in order on the caller. */
  check_call(NULL, c, 5, 1, 0);
  free(c);
}

static void test_bad_arguments(void) {
  tq_pool *pool = (tq_pool *)(uintptr_t)1;
  CHECK(tq_pool_create(257, &pool) == TQ_ERR_INVALID_ARGUMENT && pool == NULL);
  CHECK(tq_pool_create(2, NULL) == TQ_ERR_INVALID_ARGUMENT);
  CHECK(tq_pool_size(NULL) == 1);
  tq_pool_free(NULL);
}

int main(void) {
  TQ_RUN(test_calls);
  TQ_RUN(test_bad_arguments);
  return tq_test_summary("test_pool");
}
