/* prefetch.h - a producer thread that fills a ring of caller-owned slots one or more steps
 * ahead of the thread that consumes them (the worker's batch preparation: read, parse, dedup).
 *
 * Item k goes to slot k % n_slots, in order; the producer fills a slot only once the consumer
 * has released the item that held it before. The consumer takes items in the same order, so
 * what it sees is exactly what a single thread calling fill() in turn would have seen. fill()
 * runs on the producer thread only, and nothing else may touch what it touches until the
 * producer is stopped. Example (items 0, 1, ... until fill says last):
 *
 *     ps_prefetch *pf;
 *     if (ps_prefetch_start(3, fill, ud, &pf, &err) != PS_OK) return err.code;
 *     for (size_t k = 0;; k++) {
 *         bool last;
 *         if (ps_prefetch_take(pf, &last, &err) != PS_OK) break;   // slot k % 3 is ready
 *         use(k % 3);
 *         ps_prefetch_release(pf);                                  // oldest taken item
 *         if (last) break;
 *     }
 *     ps_prefetch_stop(pf);
 */
#ifndef PS_PREFETCH_H
#define PS_PREFETCH_H

#include <stdbool.h>
#include <stddef.h>

#include "ps_status.h"

typedef struct ps_prefetch ps_prefetch;

/* Fills slot with the next item; *last when it is the final one (no fill follows). A failure
 * is final too: take() returns it with its message. */
typedef ps_status (*ps_prefetch_fill)(void *ud, size_t slot, bool *last, ps_error *err);

/* Starts the producer; n_slots >= 1, all free. PS_NOMEM, or PS_IO when no thread starts. */
ps_status ps_prefetch_start(size_t n_slots, ps_prefetch_fill fill, void *ud, ps_prefetch **out,
                            ps_error *err);

/* Waits for the next item (slot = its index % n_slots) and returns fill's verdict on it.
 * *last: no item follows. Taking past the last item is PS_INVALID_ARG. */
ps_status ps_prefetch_take(ps_prefetch *p, bool *last, ps_error *err);

/* The oldest taken and not yet released item's slot is free for the producer again. */
void ps_prefetch_release(ps_prefetch *p);

/* Seconds the producer spent in fill() since start (read after stop, or as an estimate). */
double ps_prefetch_busy_seconds(ps_prefetch *p);

/* Lets the fill in progress end, stops the producer and frees p. NULL-safe. */
void ps_prefetch_stop(ps_prefetch *p);

#endif
