/*
 * pool.c - a fixed set of worker threads. A call hands out task indices from
 * an atomic counter; the caller works too and waits for the stragglers.
 * Which thread runs a task never changes what the task computes, so results
 * do not depend on the thread count.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"

struct tq_pool {
  uint32_t n_threads;  /* workers + the caller */
  pthread_t *workers;  /* (n_threads - 1,) */
  pthread_mutex_t mu;
  pthread_cond_t start; /* workers wait here for a new generation */
  pthread_cond_t done;  /* the caller waits here for busy == 0 */
  uint64_t generation;
  int stopping;
  uint32_t busy;        /* workers still inside the current call */
  /* The current call. */
  tq_task_fn fn;
  void *ctx;
  uint32_t n_tasks;
  atomic_uint next;
};

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
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stopping && p->generation == seen) pthread_cond_wait(&p->start, &p->mu);
    if (p->stopping) break;
    seen = p->generation;
    pthread_mutex_unlock(&p->mu);
    drain(p);
    pthread_mutex_lock(&p->mu);
    if (--p->busy == 0) pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static void stop_workers(tq_pool *p, uint32_t started) {
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
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
  pthread_mutex_lock(&pool->mu);
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n_tasks = n_tasks;
  atomic_store(&pool->next, 0u);
  pool->busy = pool->n_threads - 1;
  pool->generation++;
  pthread_cond_broadcast(&pool->start);
  pthread_mutex_unlock(&pool->mu);
  drain(pool);
  pthread_mutex_lock(&pool->mu);
  while (pool->busy > 0) pthread_cond_wait(&pool->done, &pool->mu);
  pthread_mutex_unlock(&pool->mu);
}
