/* init.h - deterministic initial row values: a pure function of (job seed, table, key), so every
 * shard, every restart and every shard count produce the same row. */
#ifndef PS_INIT_H
#define PS_INIT_H

#include <stdint.h>

#include "table_spec.h"

/* out: (dim) written. Glorot-uniform is Keras's: U(-l, l), l = sqrt(6 / (fan_in + fan_out)). */
void ps_init_row(const ps_init_spec *spec, uint64_t seed, uint32_t table, uint64_t key, float *out,
                 uint32_t dim);

#endif
