/* mlp.h - the worker's model: a Keras Sequential of Dense layers whose parameters live on the
 * parameter servers, forward and backward in float32 with Keras semantics (batch-mean loss).
 *
 * Layer 0 takes one of two inputs, picked per batch (ps_mlp_batch.x):
 *   sparse: a CSR batch whose entries name rows of a local matrix w[0] that the caller pulled
 *     (after deduplicating the batch's feature ids). For sample b with entries (row_i, x_i):
 *     h0[b] = act0(sum_i x_i * w[0][row_i] + b[0]), one row of w[0] at a time.
 *   dense: a matrix X (B, d) with d = n_rows, and w[0] the whole kernel (d, units[0]):
 *     H0 = act0(X w[0] + b[0]) through cblas_sgemm, backward dw[0] = X^T dZ0 (no dX).
 * Both compute the same function on the same data (ps_mlp_dense_input turns a CSR batch into X);
 * they differ only in the order of the float sums. Layers l >= 1 are Dense:
 * h_l = act_l(h_{l-1} w[l] + b[l]) with w[l] in Keras kernel layout (units[l-1], units[l]).
 *
 * Example (one training step; pulled rows in w0 (n, units[0]), the rest dense tables):
 *     ps_mlp_spec s = {.n_layers = 2, .units = {64, 1},
 *                      .act = {PS_ACT_RELU, PS_ACT_SIGMOID}, .loss = PS_LOSS_BCE};
 *     ps_mlp *m;
 *     if (ps_mlp_create(&s, 128, &m, &err) != PS_OK) ...;
 *     ps_mlp_params p = {.n_rows = n, .w = {w0, w1}, .b = {b0, b1}};
 *     ps_mlp_params g = {.n_rows = n, .w = {gw0, gw1}, .b = {gb0, gb1}};   // same shapes
 *     ps_mlp_batch bt = {.B = B, .offsets = off, .rows = local_rows, .vals = x, .labels = y};
 *     // or, for a dense input of width d (n = d, w0 the whole kernel): {.B = B, .x = X, ...}
 *     double loss_sum; size_t correct;
 *     if (ps_mlp_forward_backward(m, &p, &bt, &g, &loss_sum, &correct, &err) != PS_OK) ...;
 *     // push g: gradients of loss_sum / B (the batch mean), as Keras/PyTorch compute them
 *     ps_mlp_destroy(m);
 *
 * A ps_mlp holds only scratch (activations and their gradients for max_batch samples, one slab
 * allocated by create); parameters and gradients are always the caller's. Not thread-safe: one
 * ps_mlp per thread. Dense products go through CBLAS (OpenBLAS): set OPENBLAS_NUM_THREADS=1
 * when every core already runs a worker. */
#ifndef PS_MLP_H
#define PS_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "ps_status.h"

#define PS_MLP_MAX_LAYERS 16        /* same as config.h's PS_MAX_LAYERS */
#define PS_MLP_MAX_UNITS (1u << 20) /* per layer */
#define PS_MLP_MAX_BATCH (1u << 24) /* largest max_batch for ps_mlp_create */

/* Keras activation names: "linear", "relu", "sigmoid", "tanh", "softmax" (over the layer's
 * units). reference: https://keras.io/api/layers/activations/ */
typedef enum {
    PS_ACT_LINEAR,
    PS_ACT_RELU,
    PS_ACT_SIGMOID,
    PS_ACT_TANH,
    PS_ACT_SOFTMAX
} ps_activation;

/* Keras loss names, both reduced to the batch mean ("sum_over_batch_size"):
 *   "binary_crossentropy": last layer has 1 unit; labels in [0, 1].
 *   "sparse_categorical_crossentropy": last layer has C units; labels are class ids 0..C-1.
 * reference: https://keras.io/api/losses/probabilistic_losses/
 *
 * Numerics (mlp.c has the formulas), following Keras 3's TensorFlow backend
 * (keras/src/backend/tensorflow/nn.py) and the matching PyTorch losses:
 *   sigmoid + BCE: on the logits, max(z,0) - z*y + log1p(exp(-|z|)) (= BCEWithLogitsLoss).
 *   softmax + sparse CE: on the logits, logsumexp(z) - z[y] (= CrossEntropyLoss).
 *   any other last activation: Keras' probability form, p clipped to [1e-7, 1 - 1e-7]; the
 *   gradient is 0 where the clip is active (tf.clip_by_value). Sparse CE then renormalizes:
 *   log(sum_j q_j) - log(q_y), as sparse_softmax_cross_entropy_with_logits(log(q)) does.
 * Metrics: "accuracy" as Keras picks it: binary (p > 0.5) == y; categorical argmax(p) == y (the
 * first maximum on ties). */
typedef enum { PS_LOSS_BCE, PS_LOSS_SPARSE_CE } ps_loss;

/* Parse a Keras name (exact, lower case). PS_CONFIG naming the bad value otherwise. */
ps_status ps_activation_parse(const char *s, ps_activation *out, ps_error *err);
ps_status ps_loss_parse(const char *s, ps_loss *out, ps_error *err);
const char *ps_activation_name(ps_activation a); /* "?" when out of range */
const char *ps_loss_name(ps_loss l);

typedef struct {
    size_t n_layers;                       /* 1..PS_MLP_MAX_LAYERS; layer 0 reads the input */
    size_t units[PS_MLP_MAX_LAYERS];       /* 1..PS_MLP_MAX_UNITS each */
    ps_activation act[PS_MLP_MAX_LAYERS];
    ps_loss loss;
} ps_mlp_spec;

/* One mini-batch, in CSR form or (x not NULL) dense; everything borrowed for the duration of
 * the call. */
typedef struct {
    size_t B;                 /* samples, 1..max_batch */
    const size_t *offsets;    /* (B + 1) sample b's entries are [offsets[b], offsets[b+1]) */
    const uint32_t *rows;     /* (nnz) local row of w[0]; duplicates allowed, also in one sample */
    const float *vals;        /* (nnz) */
    const float *labels;      /* (B) BCE: 0..1; sparse CE: class id 0..C-1 as a float */
    const float *x;           /* (B, n_rows) dense input, row-major; NULL: the CSR arrays above
                                 (which are not read when x is set) */
} ps_mlp_batch;

/* Views of parameters (or gradients, same shapes), borrowed; L = n_layers, U_l = units[l]. */
typedef struct {
    size_t n_rows;                    /* rows of w[0] */
    float *w[PS_MLP_MAX_LAYERS];      /* w[0]: (n_rows, U_0); w[l]: (U_{l-1}, U_l) row-major */
    float *b[PS_MLP_MAX_LAYERS];      /* b[l]: (U_l) */
} ps_mlp_params;

typedef struct ps_mlp ps_mlp;

/* The dense input of a CSR batch with feature ids: x (B, d) is zeroed, then
 * x[b][ids[i]] += vals[i] for sample b's entries, so a repeated id adds up as the sparse layer
 * sums its rows. x must hold B * d floats. PS_INVALID_ARG for NULL arrays or decreasing
 * offsets, PS_DATA naming the sample and id if an id is >= d. */
ps_status ps_mlp_dense_input(float *x, size_t B, size_t d, const size_t *offsets,
                             const uint64_t *ids, const float *vals, ps_error *err);

/* Checks the spec and allocates the scratch slab for batches of up to max_batch samples.
 * PS_INVALID_ARG for NULL arguments, PS_CONFIG for a bad spec (layer count or units out of
 * range, BCE with a last layer of more than 1 unit, unknown activation), PS_TOO_LARGE if
 * max_batch is 0, above PS_MLP_MAX_BATCH or the slab overflows size_t, PS_NOMEM. The spec is
 * copied. On error *out is NULL. */
ps_status ps_mlp_create(const ps_mlp_spec *spec, size_t max_batch, ps_mlp **out, ps_error *err);
void ps_mlp_destroy(ps_mlp *m); /* NULL-safe */

const ps_mlp_spec *ps_mlp_get_spec(const ps_mlp *m);

/* Forward only (evaluation). *loss_sum gets the sum over the batch of the per-sample loss
 * (divide by B for Keras' "loss"), *correct the number of accurate predictions; either may be
 * NULL. Errors: PS_INVALID_ARG (NULL pointers, B == 0 or > max_batch, decreasing offsets, a row
 * >= n_rows, a dense input with n_rows == 0), PS_DATA (a label out of range: not in [0, 1] for
 * BCE, not an integer in [0, C) for sparse CE). Outputs are unspecified after an error. */
ps_status ps_mlp_forward(ps_mlp *m, const ps_mlp_params *p, const ps_mlp_batch *b,
                         double *loss_sum, size_t *correct, ps_error *err);

/* Forward and backward: every array of grads (caller-owned, same shapes as p, grads->n_rows ==
 * p->n_rows) is overwritten with the gradient of the batch-mean loss. Rows of grads->w[0] that
 * a sparse batch does not use (or that are 0 in every sample of a dense one) are exactly 0; a
 * row used several times gets the sum. Same outputs
 * and errors as ps_mlp_forward; grads are unspecified after an error. */
ps_status ps_mlp_forward_backward(ps_mlp *m, const ps_mlp_params *p, const ps_mlp_batch *b,
                                  ps_mlp_params *grads, double *loss_sum, size_t *correct,
                                  ps_error *err);

/* The last layer's activations (B, units[L-1]) of the latest call, when it succeeded:
 * probabilities for sigmoid/softmax outputs. Owned by m, valid until the next call on m; NULL
 * before the first call and after a failed one. */
const float *ps_mlp_output(const ps_mlp *m);

#endif
