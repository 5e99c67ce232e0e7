/*
 * pool.c - a fixed set of worker threads. A call hands out task indices from
 * an atomic counter; the caller works too and waits for the stragglers.
 * Which thread runs a task never changes what the task computes, so results
 * do not depend on the thread count.
 *
 * Waking a sleeping thread through a condition variable costs tens of
 * microseconds on many machines (over 100 on some virtual machines), more
 * than a small matrix-vector product takes. So a worker that finishes a call
 * keeps polling for the next one for up to TQ_POOL_SPIN_NS before it sleeps,
 * and the caller polls for the stragglers for as long before it sleeps: an
 * engine's decode step, which runs the pool many times a token, never pays
 * for a wake-up, and an idle pool costs nothing after the spin.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

/* How long a thread polls before it sleeps, in nanoseconds. */
#define TQ_POOL_SPIN_NS 2000000

struct tq_pool {
  uint32_t n_threads;  /* workers + the caller */
  pthread_t *workers;  /* (n_threads - 1,) */
  pthread_mutex_t mu;
  pthread_cond_t start; /* sleeping workers wait here for a new generation */
  pthread_cond_t done;  /* a sleeping caller waits here for busy == 0 */
  atomic_uint_fast64_t generation; /* bumped (release) once a call is set up */
  atomic_int stopping;
  atomic_uint busy;     /* workers still inside the current call */
  uint32_t sleepers;    /* workers in pthread_cond_wait (under mu) */
  int caller_sleeping;  /* the caller is in pthread_cond_wait (under mu) */
  /* The current call, written before generation is bumped. */
  tq_task_fn fn;
  void *ctx;
  uint32_t n_tasks;
  atomic_uint next;
};

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Polls until done(p, arg) holds or TQ_POOL_SPIN_NS have passed; returns
 * whether it holds. Every 256 polls it reads the clock and yields the
 * processor, so that with more threads than processors a polling thread
 * does not keep a working one waiting. */
static int spin_until(tq_pool *p, int (*done)(tq_pool *, uint64_t), uint64_t arg) {
  uint64_t t0 = 0;
  for (uint32_t i = 1;; i++) {
    if (done(p, arg)) return 1;
    cpu_relax();
    if (i % 256 == 0) {
      sched_yield();
      uint64_t t = now_ns();
      if (t0 == 0) t0 = t;
      else if (t - t0 > TQ_POOL_SPIN_NS) return done(p, arg);
    }
  }
}

static int new_call(tq_pool *p, uint64_t seen) {
  return atomic_load_explicit(&p->generation, memory_order_acquire) != seen ||
         atomic_load_explicit(&p->stopping, memory_order_acquire);
}

static int all_done(tq_pool *p, uint64_t unused) {
  (void)unused;
  return atomic_load_explicit(&p->busy, memory_order_acquire) == 0;
}

static void drain(tq_pool *p) {
  for (;;) {
    unsigned i = atomic_fetch_add(&p->next, 1u);
    if (i >= p->n_tasks) return;
    p->fn(p->ctx, i);
  }
}

static void *worker_main(void *arg) {
  tq_pool *p = arg;
  uint64_t seen = 0;
  for (;;) {
    if (!spin_until(p, new_call, seen)) {
      pthread_mutex_lock(&p->mu);
      p->sleepers++;
      while (!new_call(p, seen)) pthread_cond_wait(&p->start, &p->mu);
      p->sleepers--;
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load_explicit(&p->stopping, memory_order_acquire)) break;
    seen = atomic_load_explicit(&p->generation, memory_order_acquire);
    drain(p);
    if (atomic_fetch_sub_explicit(&p->busy, 1u, memory_order_acq_rel) == 1u) {
      /* The last one out wakes the caller if it went to sleep. */
      pthread_mutex_lock(&p->mu);
      if (p->caller_sleeping) pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

static void stop_workers(tq_pool *p, uint32_t started) {
  pthread_mutex_lock(&p->mu);
  atomic_store_explicit(&p->stopping, 1, memory_order_release);
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  for (uint32_t i = 0; i < started; i++) pthread_join(p->workers[i], NULL);
}

tq_status tq_pool_create(uint32_t n_threads, tq_pool **out) {
  if (out) *out = NULL;
  if (!out || n_threads > 256) return TQ_ERR_INVALID_ARGUMENT;
  if (n_threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    n_threads = n < 1 ? 1 : (n > 256 ? 256 : (uint32_t)n);
  }
  tq_pool *p = calloc(1, sizeof *p);
  if (!p) return TQ_ERR_OUT_OF_MEMORY;
  p->n_threads = n_threads;
  atomic_init(&p->next, 0u);
  atomic_init(&p->generation, 0u);
  atomic_init(&p->stopping, 0);
  atomic_init(&p->busy, 0u);
  if (pthread_mutex_init(&p->mu, NULL) != 0) {
    free(p);
    return TQ_ERR_OUT_OF_MEMORY;
  }
  pthread_cond_init(&p->start, NULL);
  pthread_cond_init(&p->done, NULL);
  if (n_threads > 1) {
    p->workers = calloc(n_threads - 1, sizeof *p->workers);
    if (!p->workers) {
      tq_pool_free(p);
      return TQ_ERR_OUT_OF_MEMORY;
    }
    for (uint32_t i = 0; i + 1 < n_threads; i++) {
      if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
        stop_workers(p, i);
        free(p->workers);
        p->workers = NULL;
        p->n_threads = 1;
        tq_pool_free(p);
        return TQ_ERR_OUT_OF_MEMORY;
      }
    }
  }
  *out = p;
  return TQ_OK;
}

void tq_pool_free(tq_pool *pool) {
  if (!pool) return;
  if (pool->workers) stop_workers(pool, pool->n_threads - 1);
  free(pool->workers);
  pthread_cond_destroy(&pool->start);
  pthread_cond_destroy(&pool->done);
  pthread_mutex_destroy(&pool->mu);
  free(pool);
}

uint32_t tq_pool_size(const tq_pool *pool) { return pool ? pool->n_threads : 1; }

void tq_pool_run(tq_pool *pool, uint32_t n_tasks, tq_task_fn fn, void *ctx) {
  if (n_tasks == 0) return;
  if (!pool || pool->n_threads == 1 || n_tasks == 1) {
    for (uint32_t i = 0; i < n_tasks; i++) fn(ctx, i);
    return;
  }
  /* The previous call's workers have all finished (busy reached 0), so the
   * call's fields are free to change; the release store of the generation
   * publishes them. */
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n_tasks = n_tasks;
  atomic_store_explicit(&pool->next, 0u, memory_order_relaxed);
  atomic_store_explicit(&pool->busy, pool->n_threads - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool->generation, 1u, memory_order_release);
  /* Workers that went to sleep check the generation under mu: taking mu
   * after the store means none can miss this broadcast. */
  pthread_mutex_lock(&pool->mu);
  if (pool->sleepers) pthread_cond_broadcast(&pool->start);
  pthread_mutex_unlock(&pool->mu);
  drain(pool);
  if (!spin_until(pool, all_done, 0)) {
    pthread_mutex_lock(&pool->mu);
    pool->caller_sleeping = 1;
    while (!all_done(pool, 0)) pthread_cond_wait(&pool->done, &pool->mu);
    pool->caller_sleeping = 0;
    pthread_mutex_unlock(&pool->mu);
  }
}
