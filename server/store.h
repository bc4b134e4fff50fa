/* store.h - one table's rows on one shard: an open-addressing hash index over rows kept inline in
 * fixed-size chunks (no per-row malloc; rows keep their numbers, only 8-byte index slots rehash).
 * A row holds its key, dim weights, its AdaGrad state and, with lr_decay, its update count.
 * Not thread-safe: one caller at a time (a big push or pull may use a pool's threads inside). */
/* Memory control (the table spec's mem, set per table in the job file):
 *  - step: every ps_store_push call is one step of the table on this shard (a worker's push
 *    request in async and ssp jobs; in sync jobs one combined push per global step). With W
 *    async workers, W steps pass per global step.
 *  - admit_after N > 1: a key without a row is counted once per push that names it; the push
 *    that brings its count to N creates the row (initial values) and applies its own gradient;
 *    the gradients of the N-1 pushes before are dropped. Until then pulls read the initial row.
 *    Counts are exact: a table of pending keys, 16 bytes each at load 3/8..3/4 (21..43 bytes per
 *    pending key, in ps_store_bytes). Pending keys are forgotten after expire_after_steps steps
 *    without a push (when set), else kept until admitted.
 *  - expire_after_steps E / expire_after_seconds T: a row that E pushes to the table (or T
 *    seconds) have not touched is expired: pulls, gets and scans read it as absent at once, and
 *    it is evicted by the next push that names it or by the sweep (each push visits
 *    256 + 2n row numbers), which frees its place for the next new row. Pulls do not touch.
 *  - eviction "lru" (ps_store_evict_lru): the oldest-pushed of 8 sampled rows, one at a time, as
 *    redis's approximated LRU.
 * An evicted row's weights, accumulators and counts are gone: its key starts over. Memory
 * held by chunks is reused, not returned: ps_store_bytes does not shrink on eviction. */
#ifndef PS_STORE_H
#define PS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "ps_status.h"
#include "table_spec.h"

typedef struct ps_store ps_store;

/* spec is copied. seed: the job seed, for initial values. */
ps_status ps_store_create(const ps_table_spec *spec, uint64_t seed, ps_store **out, ps_error *err);
void ps_store_destroy(ps_store *s); /* NULL-safe */

/* Spreads pushes and pulls of many keys over pool's threads (borrowed; it must outlive its use
 * here). NULL: everything on the caller's thread, the default. Results are identical either way. */
ps_status ps_store_set_pool(ps_store *s, ps_pool *pool, ps_error *err);

/* AdaGrad on the rows of keys, creating missing rows first (initial values). keys: (n) uint64 LE,
 * grads: (n, dim) float32 LE; both borrowed, any alignment. Duplicate keys are summed (in push
 * order) and applied once. Rows not in keys are untouched. PS_NOMEM leaves earlier rows updated. */
ps_status ps_store_push(ps_store *s, const uint8_t *keys, const uint8_t *grads, size_t n,
                        ps_error *err);

/* Weights of keys into out: (n, dim) float32 LE, caller-owned, any alignment. A key without a row
 * reads as its initial value and is not stored. Uses the store's scratch: not const. */
void ps_store_pull(ps_store *s, const uint8_t *keys, size_t n, uint8_t *out);

/* Copies one row out (w: (dim), acc: (state_len), either may be NULL). false if absent. */
bool ps_store_get(const ps_store *s, uint64_t key, float *w, float *acc);

/* ps_store_get plus the row's update count (step may be NULL; 0 when lr_decay is 0, the store
 * then counts none). */
bool ps_store_get_row(const ps_store *s, uint64_t key, float *w, float *acc, uint32_t *step);

/* Sets key's row, creating it if missing (for loading saved weights): w (dim) and acc
 * (state_len; NULL: initial_accumulator_value) are copied, step is kept only when the store
 * counts steps (lr_decay != 0). Both borrowed for the call. PS_NOMEM leaves the store unchanged. */
ps_status ps_store_put(ps_store *s, uint64_t key, const float *w, const float *acc, uint32_t step,
                       ps_error *err);

/* What a row's memory-control stamps are kept for (spec.mem): PS_STAMP_STEPS (expire_after_steps
 * or eviction lru), PS_STAMP_SECONDS (expire_after_seconds); 0: neither. */
#define PS_STAMP_STEPS 1u
#define PS_STAMP_SECONDS 2u
uint32_t ps_store_stamps(const ps_store *s);

/* ps_store_put, then the row's stamps set as if its last push was age_steps table steps and
 * age_s seconds ago (a checkpoint's restore: ages survive a restart, absolute stamps would not).
 * A stamp the store does not keep is ignored. */
ps_status ps_store_put_aged(ps_store *s, uint64_t key, const float *w, const float *acc,
                            uint32_t step, uint32_t age_steps, uint32_t age_s, ps_error *err);

/* A key admission is counting (admit_after): pushes counted, and table steps since the last. */
typedef struct {
    uint64_t key;
    uint32_t age_steps;
    uint32_t count;
} ps_pending_key;
/* The pending keys now (those expire_after_steps has not aged out), in *out: malloc'd, the
 * caller frees it (NULL when none). 16 bytes per pending key. */
ps_status ps_store_pending_snapshot(const ps_store *s, ps_pending_key **out, size_t *n_out,
                                    ps_error *err);
/* Sets key's admission count as ps_store_pending_snapshot gave it. A key that has a row is left
 * alone (it was admitted). A no-op when the table does not count (admit_after <= 1). PS_NOMEM. */
ps_status ps_store_pending_put(ps_store *s, const ps_pending_key *p, ps_error *err);

/* Every stored key, ascending, in *keys_out: malloc'd, the caller frees it (NULL when the table
 * is empty). O(n log n) time, 8 bytes per row of memory. An export pairs it with
 * ps_store_get_row. A snapshot: rows created afterwards are not in it. */
ps_status ps_store_sorted_keys(const ps_store *s, uint64_t **keys_out, size_t *n_out,
                               ps_error *err);

/* Called once per row by ps_store_scan: w (dim), acc (state_len) point into the store, valid for
 * the call only; step is 0 when the store counts none. age_steps: table steps since the row's
 * last push, age_s: seconds since it (each 0 unless ps_store_stamps says the store keeps it).
 * Returns false to stop the scan. */
typedef bool (*ps_store_row_cb)(void *ud, uint64_t key, const float *w, const float *acc,
                                uint32_t step, uint32_t age_steps, uint32_t age_s);
/* Visits every stored row (expired ones skipped) in row-number order, no allocation, no sort:
 * a checkpoint's stream. cb NULL: only counts. Returns the rows visited. */
size_t ps_store_scan(const ps_store *s, ps_store_row_cb cb, void *ud);
/* The same a piece at a time: from row number *next on, until max rows were visited (or cb
 * stopped); *next is where the next call goes on. Rows made meanwhile come after (row numbers
 * grow), and an evicted row's number may come back with another key: a fuzzy scan. Returns the
 * rows visited; 0 once *next passed the last row. */
size_t ps_store_scan_from(const ps_store *s, size_t *next, size_t max, ps_store_row_cb cb,
                          void *ud);

/* The clock of expire_after_seconds: *now_ms, milliseconds from any fixed start, borrowed for the
 * store's life (the server's loop time). NULL (the default): time stands still. */
void ps_store_set_clock(ps_store *s, const uint64_t *now_ms);

/* Bytes ps_store_bytes could grow by if keys (n, u64 LE) were pushed now: an upper bound (new
 * chunks, index and pending-table doublings, scratch). O(n) lookups. */
size_t ps_store_push_growth(const ps_store *s, const uint8_t *keys, size_t n);

/* Evicts up to n rows, least recently pushed first (sampled; see above); returns how many.
 * 0 unless the table's eviction is "lru" (only those keep the stamps). */
size_t ps_store_evict_lru(ps_store *s, size_t n);

typedef struct {
    uint64_t rows;      /* rows held (an expired row counts until it is evicted) */
    uint64_t bytes;     /* ps_store_bytes */
    uint64_t row_bytes; /* one row as stored */
    uint64_t admitted;  /* rows created by pushes (with admit_after: keys that passed) */
    uint64_t pending;   /* keys counted by admission, not yet admitted */
    uint64_t evicted;   /* rows evicted: expired or by LRU */
} ps_store_stats;
void ps_store_get_stats(const ps_store *s, ps_store_stats *out);

const ps_table_spec *ps_store_spec(const ps_store *s);
size_t ps_store_state_len(const ps_store *s); /* accumulator floats per row: dim, or 1 rowwise */
size_t ps_store_rows(const ps_store *s);     /* rows held */
size_t ps_store_bytes(const ps_store *s);     /* memory held: rows, index and scratch */
size_t ps_store_row_bytes(const ps_store *s); /* bytes of one row as stored */

#endif
