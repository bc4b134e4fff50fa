/* store.h - one table's rows on one shard: an open-addressing hash index over rows kept inline in
 * fixed-size chunks (no per-row malloc; rows never move, only 8-byte index slots rehash).
 * A row holds its key, dim weights, its AdaGrad state and, with lr_decay, its update count.
 * Not thread-safe: one caller at a time (a big push or pull may use a pool's threads inside). */
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

/* Every stored key, ascending, in *keys_out: malloc'd, the caller frees it (NULL when the table
 * is empty). O(n log n) time, 8 bytes per row of memory. An export pairs it with
 * ps_store_get_row. A snapshot: rows created afterwards are not in it. */
ps_status ps_store_sorted_keys(const ps_store *s, uint64_t **keys_out, size_t *n_out,
                               ps_error *err);

const ps_table_spec *ps_store_spec(const ps_store *s);
size_t ps_store_state_len(const ps_store *s); /* accumulator floats per row: dim, or 1 rowwise */
size_t ps_store_rows(const ps_store *s);
size_t ps_store_bytes(const ps_store *s);     /* memory held: rows, index and scratch */
size_t ps_store_row_bytes(const ps_store *s); /* bytes of one row as stored */

#endif
