/* pool.h - internal interface of the thread pool (tq_pool in tqai.h). */
#ifndef TQ_CORE_POOL_H
#define TQ_CORE_POOL_H

#include <stdint.h>

#include "tqai.h"

/* A task: fn(ctx, index) for index in 0..n_tasks-1, any order, any thread. */
typedef void (*tq_task_fn)(void *ctx, uint32_t index);

/* Runs n_tasks tasks on the pool's threads and the caller's, returning when
 * all are done. pool NULL runs them in order on the calling thread. */
void tq_pool_run(tq_pool *pool, uint32_t n_tasks, tq_task_fn fn, void *ctx);

#endif
