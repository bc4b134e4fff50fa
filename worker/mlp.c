/* mlp.c - forward and backward of the worker's Dense stack, llm.c style: one function per layer
 * (outputs first, then inputs, then sizes), one scratch slab carved at create time, CBLAS for
 * the dense products (a dense input's first layer too) and a CSR loop for a sparse first layer. */
#include "mlp.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KERAS_EPSILON 1e-7f /* keras.config.epsilon() */

struct ps_mlp {
    ps_mlp_spec spec;
    size_t max_batch;
    size_t B;                          /* samples of the latest good forward, 0 after an error */
    float *slab;                       /* everything below points into it */
    float *act[PS_MLP_MAX_LAYERS];     /* (max_batch, U_l) h_l; the last layer holds p = act(z) */
    float *dact[PS_MLP_MAX_LAYERS];    /* (max_batch, U_l) dL/dh_l, turned into dL/dz_l in place */
    float *logits;                     /* (max_batch, C) z of the last layer */
};

/* ---- names ---- */

static const char *const act_names[] = {
    [PS_ACT_LINEAR] = "linear", [PS_ACT_RELU] = "relu",       [PS_ACT_SIGMOID] = "sigmoid",
    [PS_ACT_TANH] = "tanh",     [PS_ACT_SOFTMAX] = "softmax",
};
static const char *const loss_names[] = {
    [PS_LOSS_BCE] = "binary_crossentropy",
    [PS_LOSS_SPARSE_CE] = "sparse_categorical_crossentropy",
};
#define N_ACTS (sizeof(act_names) / sizeof(act_names[0]))
#define N_LOSSES (sizeof(loss_names) / sizeof(loss_names[0]))

ps_status ps_activation_parse(const char *s, ps_activation *out, ps_error *err) {
    if (s == NULL || out == NULL) return ps_error_set(err, PS_INVALID_ARG, "activation: NULL");
    for (size_t i = 0; i < N_ACTS; i++) {
        if (strcmp(s, act_names[i]) == 0) {
            *out = (ps_activation)i;
            return PS_OK;
        }
    }
    return ps_error_set(err, PS_CONFIG,
                        "unknown activation \"%s\" (linear, relu, sigmoid, tanh or softmax)", s);
}

ps_status ps_loss_parse(const char *s, ps_loss *out, ps_error *err) {
    if (s == NULL || out == NULL) return ps_error_set(err, PS_INVALID_ARG, "loss: NULL");
    for (size_t i = 0; i < N_LOSSES; i++) {
        if (strcmp(s, loss_names[i]) == 0) {
            *out = (ps_loss)i;
            return PS_OK;
        }
    }
    return ps_error_set(err, PS_CONFIG,
                        "unknown loss \"%s\" (binary_crossentropy or "
                        "sparse_categorical_crossentropy)", s);
}

const char *ps_activation_name(ps_activation a) {
    return (size_t)a < N_ACTS ? act_names[a] : "?";
}

const char *ps_loss_name(ps_loss l) {
    return (size_t)l < N_LOSSES ? loss_names[l] : "?";
}

/* ---- lifecycle ---- */

ps_status ps_mlp_create(const ps_mlp_spec *spec, size_t max_batch, ps_mlp **out, ps_error *err) {
    if (out != NULL) *out = NULL;
    if (spec == NULL || out == NULL) return ps_error_set(err, PS_INVALID_ARG, "mlp: NULL argument");
    size_t L = spec->n_layers;
    if (L < 1 || L > PS_MLP_MAX_LAYERS)
        return ps_error_set(err, PS_CONFIG, "model: %zu layers, must be between 1 and %d", L,
                            PS_MLP_MAX_LAYERS);
    for (size_t l = 0; l < L; l++) {
        if (spec->units[l] < 1 || spec->units[l] > PS_MLP_MAX_UNITS)
            return ps_error_set(err, PS_CONFIG, "model: layer %zu has %zu units, must be between "
                                "1 and %u", l, spec->units[l], PS_MLP_MAX_UNITS);
        if ((size_t)spec->act[l] >= N_ACTS)
            return ps_error_set(err, PS_CONFIG, "model: layer %zu: unknown activation %d", l,
                                (int)spec->act[l]);
    }
    if ((size_t)spec->loss >= N_LOSSES)
        return ps_error_set(err, PS_CONFIG, "model: unknown loss %d", (int)spec->loss);
    if (spec->loss == PS_LOSS_BCE && spec->units[L - 1] != 1)
        return ps_error_set(err, PS_CONFIG, "model: binary_crossentropy needs 1 output unit, the "
                            "last layer has %zu (use sparse_categorical_crossentropy)",
                            spec->units[L - 1]);
    if (max_batch < 1 || max_batch > PS_MLP_MAX_BATCH)
        return ps_error_set(err, PS_TOO_LARGE, "mlp: max batch %zu, must be between 1 and %u",
                            max_batch, PS_MLP_MAX_BATCH);

    /* per sample: act + dact for every layer, plus the logits of the last one */
    size_t per_sample = spec->units[L - 1];
    for (size_t l = 0; l < L; l++) per_sample += 2 * spec->units[l];
    if (per_sample > SIZE_MAX / sizeof(float) / max_batch)
        return ps_error_set(err, PS_TOO_LARGE, "mlp: scratch for %zu x %zu floats overflows",
                            max_batch, per_sample);

    ps_mlp *m = calloc(1, sizeof(*m));
    if (m == NULL) goto nomem;
    m->spec = *spec;
    m->max_batch = max_batch;
    m->slab = malloc(max_batch * per_sample * sizeof(float));
    if (m->slab == NULL) goto nomem;
    float *ptr = m->slab;
    for (size_t l = 0; l < L; l++) {
        m->act[l] = ptr, ptr += max_batch * spec->units[l];
        m->dact[l] = ptr, ptr += max_batch * spec->units[l];
    }
    m->logits = ptr;
    *out = m;
    return PS_OK;
nomem:
    ps_mlp_destroy(m);
    return ps_error_set(err, PS_NOMEM, "mlp: scratch for batch %zu", max_batch);
}

void ps_mlp_destroy(ps_mlp *m) {
    if (m == NULL) return;
    free(m->slab);
    free(m);
}

const ps_mlp_spec *ps_mlp_get_spec(const ps_mlp *m) {
    return &m->spec;
}

const float *ps_mlp_output(const ps_mlp *m) {
    return m->B > 0 ? m->act[m->spec.n_layers - 1] : NULL;
}

/* ---- elementwise helpers ----
 * Loops run in blocks of LANES plus a scalar tail: a constant trip count lets -O2 vectorize
 * them (GCC's "very cheap" cost model, the -O2 default, skips loops that need an epilogue). */
#define LANES 16

/* y += a * x; y: (n), x: (n) */
static void axpy(float *restrict y, float a, const float *restrict x, size_t n) {
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES; k++) y[i + k] += a * x[i + k];
    for (; i < n; i++) y[i] += a * x[i];
}

/* y += a[0] * x0 + a[1] * x1 + a[2] * x2 + a[3] * x3, added left to right: the same rounding
 * as four axpy calls in a row. y, x0..x3: (n); a: (4); the x's may be the same row. */
static void axpy4(float *restrict y, const float *a, const float *restrict x0,
                  const float *restrict x1, const float *restrict x2, const float *restrict x3,
                  size_t n) {
    const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES; k++)
            y[i + k] = y[i + k] + a0 * x0[i + k] + a1 * x1[i + k] + a2 * x2[i + k] +
                       a3 * x3[i + k];
    for (; i < n; i++) y[i] = y[i] + a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i];
}

/* y += x; y: (n), x: (n) */
static void add(float *restrict y, const float *restrict x, size_t n) {
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES; k++) y[i + k] += x[i + k];
    for (; i < n; i++) y[i] += x[i];
}

/* ---- activations, in place over (B, C) ---- */

/* reference: https://keras.io/api/layers/activations/ (softmax over the last axis) */
static void activation_forward(float *restrict h, size_t B, size_t C, ps_activation act) {
    size_t n = B * C;
    switch (act) {
    case PS_ACT_LINEAR:
        break;
    case PS_ACT_RELU: {
        size_t i = 0;
        for (; i + LANES <= n; i += LANES)
            for (size_t k = 0; k < LANES; k++) h[i + k] = h[i + k] > 0.0f ? h[i + k] : 0.0f;
        for (; i < n; i++) h[i] = h[i] > 0.0f ? h[i] : 0.0f;
        break;
    }
    case PS_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) h[i] = 1.0f / (1.0f + expf(-h[i]));
        break;
    case PS_ACT_TANH:
        for (size_t i = 0; i < n; i++) h[i] = tanhf(h[i]);
        break;
    case PS_ACT_SOFTMAX:
        for (size_t b = 0; b < B; b++) {
            float *row = h + b * C;
            float mx = row[0];
            for (size_t j = 1; j < C; j++) mx = row[j] > mx ? row[j] : mx;
            float sum = 0.0f;
            for (size_t j = 0; j < C; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            for (size_t j = 0; j < C; j++) row[j] *= inv;
        }
        break;
    }
}

/* d: (B, C) dL/dh in, dL/dz out, with h = act(z): (B, C) the forward's output. */
static void activation_backward(float *restrict d, const float *restrict h, size_t B, size_t C,
                                ps_activation act) {
    size_t n = B * C;
    switch (act) {
    case PS_ACT_LINEAR:
        break;
    case PS_ACT_RELU: { /* 0 at z == 0, as tf.nn.relu's gradient */
        size_t i = 0;
        for (; i + LANES <= n; i += LANES)
            for (size_t k = 0; k < LANES; k++) d[i + k] = h[i + k] > 0.0f ? d[i + k] : 0.0f;
        for (; i < n; i++) d[i] = h[i] > 0.0f ? d[i] : 0.0f;
        break;
    }
    case PS_ACT_SIGMOID: {
        size_t i = 0;
        for (; i + LANES <= n; i += LANES)
            for (size_t k = 0; k < LANES; k++) d[i + k] *= h[i + k] * (1.0f - h[i + k]);
        for (; i < n; i++) d[i] *= h[i] * (1.0f - h[i]);
        break;
    }
    case PS_ACT_TANH: {
        size_t i = 0;
        for (; i + LANES <= n; i += LANES)
            for (size_t k = 0; k < LANES; k++) d[i + k] *= 1.0f - h[i + k] * h[i + k];
        for (; i < n; i++) d[i] *= 1.0f - h[i] * h[i];
        break;
    }
    case PS_ACT_SOFTMAX: /* dz = s * (dh - <dh, s>) */
        for (size_t b = 0; b < B; b++) {
            float *drow = d + b * C;
            const float *s = h + b * C;
            float dot = 0.0f;
            for (size_t j = 0; j < C; j++) dot += drow[j] * s[j];
            for (size_t j = 0; j < C; j++) drow[j] = s[j] * (drow[j] - dot);
        }
        break;
    }
}

/* ---- layers ---- */

/* Sparse Dense layer over a CSR batch: out[b] = sum_i vals[i] * w0[rows[i]] + b0.
 * out: (B, U); w0: (n_rows, U); b0: (U). Rows and offsets are checked here, on the way. */
static ps_status sparse_forward(float *restrict out, const float *restrict w0,
                                const float *restrict b0, const ps_mlp_batch *bt, size_t n_rows,
                                size_t U, ps_error *err) {
    for (size_t b = 0; b < bt->B; b++) {
        size_t lo = bt->offsets[b], hi = bt->offsets[b + 1];
        if (hi < lo)
            return ps_error_set(err, PS_INVALID_ARG, "mlp: sample %zu: offsets decrease "
                                "(%zu then %zu)", b, lo, hi);
        for (size_t i = lo; i < hi; i++) {
            if (bt->rows[i] >= n_rows)
                return ps_error_set(err, PS_INVALID_ARG, "mlp: sample %zu: row %u out of range, "
                                    "w[0] has %zu rows", b, bt->rows[i], n_rows);
        }
        float *o = out + b * U;
        memcpy(o, b0, U * sizeof(float));
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) /* 4 entries per pass over o: a quarter of its loads/stores */
            axpy4(o, bt->vals + i, w0 + (size_t)bt->rows[i] * U, w0 + (size_t)bt->rows[i + 1] * U,
                  w0 + (size_t)bt->rows[i + 2] * U, w0 + (size_t)bt->rows[i + 3] * U, U);
        for (; i < hi; i++) axpy(o, bt->vals[i], w0 + (size_t)bt->rows[i] * U, U);
    }
    return PS_OK;
}

/* dw0: (n_rows, U) zeroed, then dw0[rows[i]] += vals[i] * dout[b] (duplicates add up);
 * db0: (U) = sum_b dout[b]; dout: (B, U). Rows were checked by sparse_forward. */
static void sparse_backward(float *restrict dw0, float *restrict db0, const float *restrict dout,
                            const ps_mlp_batch *bt, size_t n_rows, size_t U) {
    memset(dw0, 0, n_rows * U * sizeof(float));
    memset(db0, 0, U * sizeof(float));
    for (size_t b = 0; b < bt->B; b++) {
        const float *restrict d = dout + b * U;
        add(db0, d, U);
        for (size_t i = bt->offsets[b]; i < bt->offsets[b + 1]; i++)
            axpy(dw0 + (size_t)bt->rows[i] * U, bt->vals[i], d, U);
    }
}

ps_status ps_mlp_dense_input(float *x, size_t B, size_t d, const size_t *offsets,
                             const uint64_t *ids, const float *vals, ps_error *err) {
    if (x == NULL || offsets == NULL || (offsets[B] > offsets[0] && (ids == NULL || vals == NULL)))
        return ps_error_set(err, PS_INVALID_ARG, "mlp: dense input: NULL arrays");
    memset(x, 0, B * d * sizeof(float));
    for (size_t b = 0; b < B; b++) {
        if (offsets[b + 1] < offsets[b])
            return ps_error_set(err, PS_INVALID_ARG, "mlp: sample %zu: offsets decrease "
                                "(%zu then %zu)", b, offsets[b], offsets[b + 1]);
        float *row = x + b * d;
        for (size_t i = offsets[b]; i < offsets[b + 1]; i++) {
            if (ids[i] >= d)
                return ps_error_set(err, PS_DATA, "mlp: sample %zu: feature id %llu is past the "
                                    "dense input's %zu columns", b, (unsigned long long)ids[i],
                                    d);
            row[ids[i]] += vals[i];
        }
    }
    return PS_OK;
}

/* Dense: out = inp w + bias. out: (B, OC); inp: (B, C); w: (C, OC) Keras kernel; bias: (OC).
 * reference: https://keras.io/api/layers/core_layers/dense/ */
static void dense_forward(float *out, const float *inp, const float *w, const float *bias,
                          size_t B, size_t C, size_t OC) {
    for (size_t b = 0; b < B; b++) memcpy(out + b * OC, bias, OC * sizeof(float));
    if (OC == 1) /* one output unit (binary heads): a matrix-vector product */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)B, (int)C, 1.0f, inp, (int)C, w, 1, 1.0f,
                    out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)OC, (int)C, 1.0f,
                    inp, (int)C, w, (int)OC, 1.0f, out, (int)OC);
}

/* dw = inp^T dout: (C, OC); dbias = sum_b dout[b]: (OC); dinp = dout w^T: (B, C), or NULL
 * when the input needs no gradient (a dense first layer). dout: (B, OC); inp: (B, C);
 * w: (C, OC). */
static void dense_backward(float *dinp, float *dw, float *restrict dbias,
                           const float *restrict dout, const float *inp, const float *w, size_t B,
                           size_t C, size_t OC) {
    memset(dbias, 0, OC * sizeof(float));
    for (size_t b = 0; b < B; b++) add(dbias, dout + b * OC, OC);
    if (OC == 1) { /* dw = inp^T dout, dinp = dout w^T: a matrix-vector and an outer product */
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)B, (int)C, 1.0f, inp, (int)C, dout, 1, 0.0f,
                    dw, 1);
        for (size_t b = 0; dinp != NULL && b < B; b++) {
            memset(dinp + b * C, 0, C * sizeof(float));
            axpy(dinp + b * C, dout[b], w, C);
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)C, (int)OC, (int)B, 1.0f, inp,
                (int)C, dout, (int)OC, 0.0f, dw, (int)OC);
    if (dinp == NULL) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)C, (int)OC, 1.0f, dout,
                (int)OC, w, (int)OC, 0.0f, dinp, (int)C);
}

/* ---- loss ---- */

static float clampf(float x, float lo, float hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

/* Gradient mask of tf.clip_by_value(p, lo, hi): passes where lo <= p <= hi. */
static float clip_passes(float p, float lo, float hi) {
    return (p >= lo && p <= hi) ? 1.0f : 0.0f;
}

/* Loss and accuracy of the last layer, and optionally its gradient.
 * probs: (B, C) written with act(logits); logits: (B, C); labels: (B); dlogits: (B, C) gets
 * dL/dz of the batch-mean loss, or NULL for forward only. Per-sample loss in float as TF does,
 * summed in double.
 * references: https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html
 *             https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html
 *             keras/src/backend/tensorflow/nn.py (binary_/sparse_categorical_crossentropy) */
static ps_status loss_forward_backward(float *probs, float *dlogits, double *loss_sum,
                                       size_t *correct, const float *logits, const float *labels,
                                       size_t B, size_t C, ps_activation act, ps_loss loss,
                                       ps_error *err) {
    const float eps = KERAS_EPSILON, one_m_eps = 1.0f - KERAS_EPSILON;
    const float invB = 1.0f / (float)B;
    double lsum = 0.0;
    size_t ok = 0;

    /* labels first: a bad one fails before any loss or gradient is computed */
    for (size_t b = 0; b < B; b++) {
        float y = labels[b];
        if (loss == PS_LOSS_BCE && !(y >= 0.0f && y <= 1.0f))
            return ps_error_set(err, PS_DATA, "mlp: sample %zu: label %g, binary_crossentropy "
                                "needs a label in [0, 1]", b, (double)y);
        if (loss == PS_LOSS_SPARSE_CE && !(y >= 0.0f && y < (float)C && y == floorf(y)))
            return ps_error_set(err, PS_DATA, "mlp: sample %zu: label %g, sparse_categorical_"
                                "crossentropy needs a class id in 0..%zu", b, (double)y, C - 1);
    }

    if (loss == PS_LOSS_BCE && act == PS_ACT_SIGMOID) {
        /* logit form; Keras 2 (and Keras 3 off the TF backend) may take the clipped
         * probability form instead, which differs only when p is within 1e-7 of 0 or 1 */
        for (size_t b = 0; b < B; b++) {
            float z = logits[b], y = labels[b];
            float p;
            if (z >= 0.0f) {
                p = 1.0f / (1.0f + expf(-z));
            } else {
                float e = expf(z);
                p = e / (1.0f + e);
            }
            probs[b] = p;
            lsum += (double)((z > 0.0f ? z : 0.0f) - z * y + log1pf(expf(-fabsf(z))));
            ok += (p > 0.5f ? 1.0f : 0.0f) == y;
            if (dlogits != NULL) dlogits[b] = (p - y) * invB;
        }
    } else if (loss == PS_LOSS_BCE) {
        /* probability form: q = clip(act(z), eps, 1-eps); -(y log q + (1-y) log(1-q)) */
        memcpy(probs, logits, B * sizeof(float));
        activation_forward(probs, B, 1, act);
        for (size_t b = 0; b < B; b++) {
            float p = probs[b], y = labels[b];
            float q = clampf(p, eps, one_m_eps);
            lsum += (double)(-(y * logf(q) + (1.0f - y) * logf(1.0f - q)));
            ok += (p > 0.5f ? 1.0f : 0.0f) == y;
            if (dlogits != NULL)
                dlogits[b] = clip_passes(p, eps, one_m_eps) * (q - y) / (q * (1.0f - q)) * invB;
        }
        if (dlogits != NULL) activation_backward(dlogits, probs, B, 1, act);
    } else if (act == PS_ACT_SOFTMAX) {
        /* log-sum-exp form: logsumexp(z) - z[y]; dz = softmax(z) - onehot(y) */
        for (size_t b = 0; b < B; b++) {
            const float *z = logits + b * C;
            float *p = probs + b * C;
            size_t y = (size_t)labels[b];
            float mx = z[0];
            for (size_t j = 1; j < C; j++) mx = z[j] > mx ? z[j] : mx;
            float sum = 0.0f;
            for (size_t j = 0; j < C; j++) {
                p[j] = expf(z[j] - mx);
                sum += p[j];
            }
            lsum += (double)(mx + logf(sum) - z[y]);
            float inv = 1.0f / sum;
            size_t arg = 0;
            for (size_t j = 0; j < C; j++) {
                p[j] *= inv;
                if (p[j] > p[arg]) arg = j;
            }
            ok += arg == y;
            if (dlogits != NULL) {
                float *d = dlogits + b * C;
                for (size_t j = 0; j < C; j++) d[j] = p[j] * invB;
                d[y] -= invB;
            }
        }
    } else {
        /* probability form: q = clip(act(z)); log(sum q) - log(q[y]) */
        memcpy(probs, logits, B * C * sizeof(float));
        activation_forward(probs, B, C, act);
        for (size_t b = 0; b < B; b++) {
            const float *p = probs + b * C;
            size_t y = (size_t)labels[b];
            float sum = 0.0f;
            size_t arg = 0;
            for (size_t j = 0; j < C; j++) {
                sum += clampf(p[j], eps, one_m_eps);
                if (p[j] > p[arg]) arg = j;
            }
            float qy = clampf(p[y], eps, one_m_eps);
            lsum += (double)(logf(sum) - logf(qy));
            ok += arg == y;
            if (dlogits != NULL) {
                float *d = dlogits + b * C;
                float invsum = 1.0f / sum;
                for (size_t j = 0; j < C; j++) {
                    float dq = j == y ? invsum - 1.0f / qy : invsum;
                    d[j] = clip_passes(p[j], eps, one_m_eps) * dq * invB;
                }
            }
        }
        if (dlogits != NULL) activation_backward(dlogits, probs, B, C, act);
    }
    if (loss_sum != NULL) *loss_sum = lsum;
    if (correct != NULL) *correct = ok;
    return PS_OK;
}

/* ---- the model ---- */

static ps_status check_params(const ps_mlp *m, const ps_mlp_params *p, const char *what,
                              ps_error *err) {
    for (size_t l = 0; l < m->spec.n_layers; l++) {
        if (p->w[l] == NULL || p->b[l] == NULL)
            return ps_error_set(err, PS_INVALID_ARG, "mlp: %s of layer %zu is NULL", what, l);
    }
    return PS_OK;
}

/* Forward, then backward into g unless g is NULL. */
static ps_status run(ps_mlp *m, const ps_mlp_params *p, const ps_mlp_batch *bt,
                     ps_mlp_params *g, double *loss_sum, size_t *correct, ps_error *err) {
    if (m == NULL || p == NULL || bt == NULL)
        return ps_error_set(err, PS_INVALID_ARG, "mlp: NULL argument");
    m->B = 0;
    if (bt->B < 1 || bt->B > m->max_batch)
        return ps_error_set(err, PS_INVALID_ARG, "mlp: batch of %zu samples, must be between 1 "
                            "and %zu", bt->B, m->max_batch);
    const bool dense_in = bt->x != NULL;
    if (bt->labels == NULL ||
        (!dense_in && (bt->offsets == NULL || (bt->offsets[bt->B] > bt->offsets[0] &&
                                               (bt->rows == NULL || bt->vals == NULL)))))
        return ps_error_set(err, PS_INVALID_ARG, "mlp: batch has NULL arrays");
    if (dense_in && p->n_rows == 0)
        return ps_error_set(err, PS_INVALID_ARG, "mlp: dense input of width 0 (n_rows)");
    ps_status st = check_params(m, p, "params", err);
    if (st != PS_OK) return st;
    if (g != NULL) {
        if (g->n_rows != p->n_rows)
            return ps_error_set(err, PS_INVALID_ARG, "mlp: grads have %zu rows of w[0], params "
                                "%zu", g->n_rows, p->n_rows);
        if ((st = check_params(m, g, "grads", err)) != PS_OK) return st;
    }

    const size_t L = m->spec.n_layers, B = bt->B, *U = m->spec.units;

    /* forward: the last layer leaves its pre-activation in logits */
    float *out0 = L == 1 ? m->logits : m->act[0];
    if (dense_in)
        dense_forward(out0, bt->x, p->w[0], p->b[0], B, p->n_rows, U[0]);
    else if ((st = sparse_forward(out0, p->w[0], p->b[0], bt, p->n_rows, U[0], err)) != PS_OK)
        return st;
    if (L > 1) activation_forward(m->act[0], B, U[0], m->spec.act[0]);
    for (size_t l = 1; l < L; l++) {
        float *out = l == L - 1 ? m->logits : m->act[l];
        dense_forward(out, m->act[l - 1], p->w[l], p->b[l], B, U[l - 1], U[l]);
        if (l < L - 1) activation_forward(out, B, U[l], m->spec.act[l]);
    }
    st = loss_forward_backward(m->act[L - 1], g != NULL ? m->dact[L - 1] : NULL, loss_sum,
                               correct, m->logits, bt->labels, B, U[L - 1], m->spec.act[L - 1],
                               m->spec.loss, err);
    if (st != PS_OK) return st;
    m->B = B;
    if (g == NULL) return PS_OK;

    /* backward: dact[l] holds dL/dz_l when layer l's turn comes */
    for (size_t l = L - 1; l >= 1; l--) {
        float *dinp = m->dact[l - 1];
        dense_backward(dinp, g->w[l], g->b[l], m->dact[l], m->act[l - 1], p->w[l], B, U[l - 1],
                       U[l]);
        activation_backward(dinp, m->act[l - 1], B, U[l - 1], m->spec.act[l - 1]);
    }
    if (dense_in)
        dense_backward(NULL, g->w[0], g->b[0], m->dact[0], bt->x, p->w[0], B, p->n_rows, U[0]);
    else
        sparse_backward(g->w[0], g->b[0], m->dact[0], bt, p->n_rows, U[0]);
    return PS_OK;
}

ps_status ps_mlp_forward(ps_mlp *m, const ps_mlp_params *p, const ps_mlp_batch *b,
                         double *loss_sum, size_t *correct, ps_error *err) {
    return run(m, p, b, NULL, loss_sum, correct, err);
}

ps_status ps_mlp_forward_backward(ps_mlp *m, const ps_mlp_params *p, const ps_mlp_batch *b,
                                  ps_mlp_params *grads, double *loss_sum, size_t *correct,
                                  ps_error *err) {
    if (grads == NULL) {
        if (m != NULL) m->B = 0;
        return ps_error_set(err, PS_INVALID_ARG, "mlp: NULL grads");
    }
    return run(m, p, b, grads, loss_sum, correct, err);
}
