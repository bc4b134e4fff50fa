/* adagrad.h - pure per-row AdaGrad kernels: no I/O, no allocation.
 * reference: https://pytorch.org/docs/1.13/generated/torch.optim.Adagrad.html
 * reference: https://keras.io/api/optimizers/adagrad/ (Keras 3) */
#ifndef PS_ADAGRAD_H
#define PS_ADAGRAD_H

#include <stddef.h>
#include <stdint.h>

#include "table_spec.h"

/* Floats of optimizer state per row: dim, or 1 when rowwise. */
size_t ps_adagrad_state_len(const ps_adagrad_config *c, size_t dim);

/* Writes the initial accumulator (initial_accumulator_value) into acc: (state_len). */
void ps_adagrad_init_state(const ps_adagrad_config *c, float *acc, size_t dim);

/* One AdaGrad step on one row, in the reference's float32 rounding order.
 * w: (dim), acc: (state_len), both owned by the caller's store; g: (dim), borrowed, read only
 * (weight_decay is applied to a copy). step: this row's update count including this update
 * (1 on the first push), used only for lr_decay. */
void ps_adagrad_update(const ps_adagrad_config *c, float *w, float *acc, const float *g,
                       size_t dim, uint64_t step);

#endif
