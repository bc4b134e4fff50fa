/* pool.h - a fixed set of threads that run one data-parallel task at a time: the caller's
 * thread takes part 0, helpers take the rest, and ps_pool_run returns when every part is done.
 * Used to spread one big push or pull over the machine's cores. */
#ifndef PS_POOL_H
#define PS_POOL_H

#include "ps_status.h"

typedef struct ps_pool ps_pool;

/* fn(arg, part, parts) runs once for each part in [0, parts). */
typedef void (*ps_pool_fn)(void *arg, unsigned part, unsigned parts);

/* threads >= 1 (1: no helper threads, ps_pool_run calls fn inline). */
ps_status ps_pool_create(unsigned threads, ps_pool **out, ps_error *err);
void ps_pool_destroy(ps_pool *p); /* NULL-safe; joins the helpers */
unsigned ps_pool_size(const ps_pool *p);

/* Runs fn over ps_pool_size(p) parts and waits for all of them. One caller at a time. */
void ps_pool_run(ps_pool *p, ps_pool_fn fn, void *arg);

#endif
