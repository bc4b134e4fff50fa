/* data_random.c - generated rows: random_cols uniform features and a 0/1 label, row i a pure
 * function of (seed, i), so any sharding of the rows gives the same data set. */
#include <inttypes.h>
#include <stdlib.h>

#include "data_format.h"

typedef struct {
    uint64_t rows, seed;
    uint32_t cols;
} random_state;

static ps_status random_open(const ps_format_args *a, void **state, ps_error *err) {
    const ps_data_options *o = a->o;
    if (o->random_cols == 0 || o->random_cols > PS_DATA_MAX_RANDOM_COLS)
        return ps_error_set(err, PS_CONFIG, "random_cols %" PRIu32 " must be in [1, %u]",
                            o->random_cols, PS_DATA_MAX_RANDOM_COLS);
    random_state *r = malloc(sizeof(*r));
    if (r == NULL) return ps_error_set(err, PS_NOMEM, "random reader: out of memory");
    r->rows = o->random_rows, r->seed = o->seed, r->cols = o->random_cols;
    *state = r;
    return PS_OK;
}

static uint64_t random_num_rows(const void *state) { return ((const random_state *)state)->rows; }

static uint32_t random_num_features(const void *state) {
    return ((const random_state *)state)->cols;
}

/* Row i: h = mix64(seed ^ mix64(i + GOLDEN)), z_k = mix64(h + k*GOLDEN) for k = 1, 2, ...;
 * label = z_1 >> 63; x_j = (z_{j+2} >> 40) * 2^-24, j = 0..d-1. */
static void random_row(void *state, uint64_t i, float *x, float *label) {
    const random_state *r = state;
    uint64_t h = ps_mix64(r->seed ^ ps_mix64(i + PS_DATA_GOLDEN));
    *label = (float)(ps_mix64(h + PS_DATA_GOLDEN) >> 63);
    for (uint32_t j = 0; j < r->cols; j++)
        x[j] = (float)(ps_mix64(h + (uint64_t)(j + 2) * PS_DATA_GOLDEN) >> 40) * 0x1p-24f;
}

const ps_format_ops ps_format_random = {
    .name = "random",
    .text = false,
    .open = random_open,
    .destroy = free,
    .num_rows = random_num_rows,
    .row = random_row,
    .num_features = random_num_features,
};
