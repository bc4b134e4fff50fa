/* test_mlp_grad.c - worker/mlp.c: gradients against central differences of an independent
 * double-precision reference forward (every activation hidden and last, both losses, the sparse
 * first layer with repeated and unused rows, and the same cases through the dense first layer),
 * hand-computed cases, the dense and sparse paths against each other, input validation, and a
 * training sanity check. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"

#define REF_MAX_UNITS 32
#define GRAD_GARBAGE 12345.0f /* grads are prefilled with this: the call must overwrite all */

/* ---- a small model with its own storage ---- */

typedef struct {
    ps_mlp_spec spec;
    ps_mlp_params p, g;
    float *mem;
} model;

static size_t w_len(const ps_mlp_spec *s, size_t n_rows, size_t l) {
    return (l == 0 ? n_rows : s->units[l - 1]) * s->units[l];
}

static uint64_t rng_state;
static float urand(void) { /* U[-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(uint32_t)(rng_state >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}

static void model_init(model *m, const ps_mlp_spec *s, size_t n_rows, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->spec = *s;
    size_t total = 0;
    for (size_t l = 0; l < s->n_layers; l++) total += w_len(s, n_rows, l) + s->units[l];
    m->mem = malloc(2 * total * sizeof(float));
    cr_assert_not_null(m->mem);
    float *ptr = m->mem;
    m->p.n_rows = m->g.n_rows = n_rows;
    for (size_t l = 0; l < s->n_layers; l++) {
        size_t wl = w_len(s, n_rows, l);
        m->p.w[l] = ptr, ptr += wl;
        m->p.b[l] = ptr, ptr += s->units[l];
        m->g.w[l] = ptr, ptr += wl;
        m->g.b[l] = ptr, ptr += s->units[l];
    }
    rng_state = seed;
    for (size_t l = 0; l < s->n_layers; l++) {
        for (size_t i = 0; i < w_len(s, n_rows, l); i++) m->p.w[l][i] = 0.7f * urand();
        for (size_t i = 0; i < s->units[l]; i++) m->p.b[l][i] = 0.2f * urand();
    }
}

static void fill_grads(model *m, float v) {
    for (size_t l = 0; l < m->spec.n_layers; l++) {
        for (size_t i = 0; i < w_len(&m->spec, m->g.n_rows, l); i++) m->g.w[l][i] = v;
        for (size_t i = 0; i < m->spec.units[l]; i++) m->g.b[l][i] = v;
    }
}

/* ---- the double-precision reference: written from the Keras formulas, sample by sample ---- */

typedef struct {
    ps_mlp_spec spec;
    size_t n_rows;
    double *w[PS_MLP_MAX_LAYERS], *b[PS_MLP_MAX_LAYERS];
} dmodel;

static void dmodel_from(dmodel *d, const model *m) {
    memset(d, 0, sizeof(*d));
    d->spec = m->spec;
    d->n_rows = m->p.n_rows;
    for (size_t l = 0; l < m->spec.n_layers; l++) {
        size_t wl = w_len(&m->spec, d->n_rows, l), u = m->spec.units[l];
        d->w[l] = malloc((wl + 1) * sizeof(double));
        d->b[l] = malloc(u * sizeof(double));
        cr_assert(d->w[l] != NULL && d->b[l] != NULL);
        for (size_t i = 0; i < wl; i++) d->w[l][i] = m->p.w[l][i];
        for (size_t i = 0; i < u; i++) d->b[l][i] = m->p.b[l][i];
    }
}

static void dmodel_free(dmodel *d) {
    for (size_t l = 0; l < d->spec.n_layers; l++) free(d->w[l]), free(d->b[l]);
}

static void ref_act(double *h, size_t n, ps_activation a) {
    if (a == PS_ACT_SOFTMAX) {
        double mx = h[0], s = 0.0;
        for (size_t j = 1; j < n; j++) mx = fmax(mx, h[j]);
        for (size_t j = 0; j < n; j++) s += exp(h[j] - mx);
        for (size_t j = 0; j < n; j++) h[j] = exp(h[j] - mx) / s;
        return;
    }
    for (size_t j = 0; j < n; j++) {
        switch (a) {
        case PS_ACT_RELU: h[j] = h[j] > 0 ? h[j] : 0; break;
        case PS_ACT_SIGMOID: h[j] = 1.0 / (1.0 + exp(-h[j])); break;
        case PS_ACT_TANH: h[j] = tanh(h[j]); break;
        default: break;
        }
    }
}

/* Keras clips to [eps, 1 - eps] with both bounds in float32, as TF computes them. */
static double clip(double p) {
    const double lo = 1e-7f, hi = 1.0f - 1e-7f;
    return p < lo ? lo : (p > hi ? hi : p);
}

/* Mean loss over the batch; probs (B, C) and *correct if not NULL. */
static double ref_loss(const dmodel *d, const ps_mlp_batch *bt, double *probs, size_t *correct) {
    const ps_mlp_spec *s = &d->spec;
    size_t L = s->n_layers, C = s->units[L - 1];
    double total = 0.0;
    size_t ok = 0;
    for (size_t b = 0; b < bt->B; b++) {
        double h[REF_MAX_UNITS], z[REF_MAX_UNITS];
        cr_assert_leq(s->units[0], REF_MAX_UNITS);
        for (size_t j = 0; j < s->units[0]; j++) {
            z[j] = d->b[0][j];
            if (bt->x != NULL) { /* dense input: (B, n_rows) */
                for (size_t k = 0; k < d->n_rows; k++)
                    z[j] += bt->x[b * d->n_rows + k] * d->w[0][k * s->units[0] + j];
                continue;
            }
            for (size_t i = bt->offsets[b]; i < bt->offsets[b + 1]; i++)
                z[j] += bt->vals[i] * d->w[0][bt->rows[i] * s->units[0] + j];
        }
        for (size_t l = 1; l < L; l++) {
            memcpy(h, z, sizeof(h));
            ref_act(h, s->units[l - 1], s->act[l - 1]);
            cr_assert_leq(s->units[l], REF_MAX_UNITS);
            for (size_t k = 0; k < s->units[l]; k++) {
                z[k] = d->b[l][k];
                for (size_t j = 0; j < s->units[l - 1]; j++)
                    z[k] += h[j] * d->w[l][j * s->units[l] + k];
            }
        }
        double p[REF_MAX_UNITS];
        memcpy(p, z, sizeof(p));
        ref_act(p, C, s->act[L - 1]);
        double y = bt->labels[b];
        if (s->loss == PS_LOSS_BCE && s->act[L - 1] == PS_ACT_SIGMOID) {
            total += fmax(z[0], 0) - z[0] * y + log1p(exp(-fabs(z[0])));
        } else if (s->loss == PS_LOSS_BCE) {
            double q = clip(p[0]);
            total += -(y * log(q) + (1 - y) * log(1 - q));
        } else if (s->act[L - 1] == PS_ACT_SOFTMAX) {
            double mx = z[0], se = 0.0;
            for (size_t j = 1; j < C; j++) mx = fmax(mx, z[j]);
            for (size_t j = 0; j < C; j++) se += exp(z[j] - mx);
            total += mx + log(se) - z[(size_t)y];
        } else {
            double se = 0.0;
            for (size_t j = 0; j < C; j++) se += clip(p[j]);
            total += log(se) - log(clip(p[(size_t)y]));
        }
        if (s->loss == PS_LOSS_BCE) {
            ok += (p[0] > 0.5 ? 1.0 : 0.0) == y;
        } else {
            size_t arg = 0;
            for (size_t j = 1; j < C; j++) arg = p[j] > p[arg] ? j : arg;
            ok += arg == (size_t)y;
        }
        if (probs != NULL) memcpy(probs + b * C, p, C * sizeof(double));
    }
    if (correct != NULL) *correct = ok;
    return total / (double)bt->B;
}

/* ---- the sparse batch used by the gradient checks ----
 * n_rows 6: row 0 twice in sample 0, row 4 twice in sample 2, row 2 in samples 0, 1 and 2,
 * sample 3 empty, row 5 unused. Samples 0 and 2 have >= 4 entries (mlp.c takes them 4 at a time
 * and the rest one by one). */

#define FD_ROWS 6
static const size_t fd_offsets[] = {0, 5, 7, 11, 11};
static const uint32_t fd_rows[] = {0, 2, 0, 3, 1, 2, 3, 1, 4, 4, 2};
static const float fd_vals[] = {0.5f, -1.0f, 1.5f, 0.25f, -0.6f, 0.7f,
                                0.3f, -0.8f, 1.2f, 0.4f,  0.9f};
static const float fd_labels_bce[] = {1, 0, 1, 0};
static const float fd_labels_sce[] = {0, 2, 1, 2};
/* the same batch as a dense (4, 6) input, summed by hand: row 5 stays 0 */
static const float fd_x[4 * FD_ROWS] = {
    0.5f + 1.5f, -0.6f, -1.0f,        0.25f, 0.0f,         0.0f, /* sample 0 */
    0.0f,        0.0f,  0.7f,         0.3f,  0.0f,         0.0f, /* sample 1 */
    0.0f,        -0.8f, 0.9f,         0.0f,  1.2f + 0.4f,  0.0f, /* sample 2 */
    0.0f,        0.0f,  0.0f,         0.0f,  0.0f,         0.0f, /* sample 3: empty */
};

typedef struct {
    char name[40];
    size_t n_layers;
    ps_activation hidden, out;
    ps_loss loss;
    float out_wscale, out_bias; /* probability-form cases: last layer w *= scale, b = bias */
    size_t width;               /* units of layer 0 (0 = 4), layer 1 has 2 fewer */
} grad_case;

#define LIN PS_ACT_LINEAR
#define RELU PS_ACT_RELU
#define SIGM PS_ACT_SIGMOID
#define TANH PS_ACT_TANH
#define SMAX PS_ACT_SOFTMAX
#define BCE PS_LOSS_BCE
#define SCE PS_LOSS_SPARSE_CE

static grad_case grad_cases[] = {
        /* every activation in the hidden positions (sparse layer 0 and dense layer 1) */
        {"hidden linear, bce", 3, LIN, SIGM, BCE, 0, 0, 0},
        {"hidden relu, bce", 3, RELU, SIGM, BCE, 0, 0, 0},
        {"hidden sigmoid, bce", 3, SIGM, SIGM, BCE, 0, 0, 0},
        {"hidden tanh, bce", 3, TANH, SIGM, BCE, 0, 0, 0},
        {"hidden softmax, bce", 3, SMAX, SIGM, BCE, 0, 0, 0},
        {"hidden linear, sce", 3, LIN, SMAX, SCE, 0, 0, 0},
        {"hidden relu, sce", 3, RELU, SMAX, SCE, 0, 0, 0},
        {"hidden sigmoid, sce", 3, SIGM, SMAX, SCE, 0, 0, 0},
        {"hidden tanh, sce", 3, TANH, SMAX, SCE, 0, 0, 0},
        {"hidden softmax, sce", 3, SMAX, SMAX, SCE, 0, 0, 0},
        /* every activation in the last position, under both losses; p kept inside the clip */
        {"out linear, bce", 3, TANH, LIN, BCE, 0.2f, 0.5f, 0},
        {"out relu, bce", 3, TANH, RELU, BCE, 0.2f, 0.5f, 0},
        {"out tanh, bce", 3, TANH, TANH, BCE, 0.2f, 0.5f, 0},
        {"out softmax, bce", 3, TANH, SMAX, BCE, 0.2f, 0.5f, 0},
        {"out linear, sce", 3, TANH, LIN, SCE, 0.2f, 0.5f, 0},
        {"out relu, sce", 3, TANH, RELU, SCE, 0.2f, 0.5f, 0},
        {"out sigmoid, sce", 3, TANH, SIGM, SCE, 0.2f, 0.5f, 0},
        {"out tanh, sce", 3, TANH, TANH, SCE, 0.2f, 0.5f, 0},
        /* ... and straddling the clip: its gradient is 0 where p is outside [eps, 1 - eps] */
        {"out linear, bce, clipped", 3, TANH, LIN, BCE, 3.0f, 0.95f, 0},
        {"out tanh, bce, clipped", 3, TANH, TANH, BCE, 6.0f, -0.03f, 0},
        {"out linear, sce, clipped", 3, TANH, LIN, SCE, 1.5f, 0.3f, 0},
        /* the sparse layer alone is the output layer */
        {"one layer, bce", 1, LIN, SIGM, BCE, 0, 0, 0},
        {"one layer, sce", 1, LIN, SMAX, SCE, 0, 0, 0},
        {"one layer relu, sce", 1, LIN, RELU, SCE, 0.2f, 0.5f, 0},
        /* wide layers (19 and 17 units): mlp.c's blocks of 16 plus a tail */
        {"wide relu, bce", 3, RELU, SIGM, BCE, 0, 0, 19},
        {"wide sigmoid, bce", 3, SIGM, SIGM, BCE, 0, 0, 19},
        {"wide tanh, sce", 3, TANH, SMAX, SCE, 0, 0, 19},
        {"wide softmax, sce", 3, SMAX, SMAX, SCE, 0, 0, 19},
        {"wide linear, sce", 3, LIN, SMAX, SCE, 0, 0, 19},
        {"wide one layer, sce", 1, LIN, SMAX, SCE, 0, 0, 19},
};
#define N_GRAD_CASES (sizeof(grad_cases) / sizeof(grad_cases[0]))

/* One case of grad_cases, through the sparse first layer (the CSR fd batch) or the dense one
 * (fd_x, the same numbers). */
static void check_gradients(const grad_case *c, bool dense) {
    char name[64];
    snprintf(name, sizeof(name), "%s%s", c->name, dense ? " (dense input)" : "");
    size_t C = c->loss == PS_LOSS_BCE ? 1 : (c->n_layers == 1 && c->width > 0 ? c->width : 3);
    ps_mlp_spec s = {.n_layers = c->n_layers, .loss = c->loss};
    for (size_t l = 0; l + 1 < c->n_layers; l++)
        s.units[l] = (c->width > 0 ? c->width : 4) - 2 * l, s.act[l] = c->hidden;
    s.units[c->n_layers - 1] = C, s.act[c->n_layers - 1] = c->out;

    model m;
    model_init(&m, &s, FD_ROWS, 0x5eed + (uint64_t)c->out * 7 + (uint64_t)c->hidden);
    if (c->out_wscale != 0.0f) { /* place p = act(z) relative to Keras' clip */
        size_t l = c->n_layers - 1;
        for (size_t i = 0; i < w_len(&s, FD_ROWS, l); i++) m.p.w[l][i] *= c->out_wscale;
        for (size_t j = 0; j < C; j++) m.p.b[l][j] = c->out_bias + 0.05f * (float)j;
    }
    ps_mlp_batch bt = {.B = 4, .offsets = fd_offsets, .rows = fd_rows, .vals = fd_vals,
                       .labels = c->loss == PS_LOSS_BCE ? fd_labels_bce : fd_labels_sce};
    if (dense) bt = (ps_mlp_batch){.B = 4, .x = fd_x, .labels = bt.labels};
    ps_mlp *net;
    ps_error err = {0};
    cr_assert_eq(ps_mlp_create(&s, 8, &net, &err), PS_OK, "%s", err.msg);

    fill_grads(&m, GRAD_GARBAGE);
    double loss_sum = -1.0;
    size_t correct = 99;
    cr_assert_eq(ps_mlp_forward_backward(net, &m.p, &bt, &m.g, &loss_sum, &correct, &err), PS_OK,
                 "%s: %s", name, err.msg);

    /* forward matches the reference: loss, accuracy, output probabilities */
    dmodel d;
    dmodel_from(&d, &m);
    double probs[4 * REF_MAX_UNITS];
    size_t ref_correct;
    double ref = ref_loss(&d, &bt, probs, &ref_correct);
    cr_assert(fabs(loss_sum / 4.0 - ref) <= 1e-5 * fmax(1.0, fabs(ref)), "%s: loss %.9g, ref %.9g",
              name, loss_sum / 4.0, ref);
    cr_assert_eq(correct, ref_correct, "%s", name);
    const float *out = ps_mlp_output(net);
    for (size_t i = 0; i < 4 * C; i++)
        cr_assert(fabs(out[i] - probs[i]) <= 1e-5, "%s: output[%zu] %.9g, ref %.9g", name, i,
                  (double)out[i], probs[i]);

    if (strstr(name, "clipped") != NULL) { /* some outputs inside the clip, some outside */
        size_t outside = 0;
        for (size_t i = 0; i < 4 * C; i++) outside += probs[i] < 1e-7 || probs[i] > 1 - 1e-7;
        cr_assert(outside > 0 && outside < 4 * C, "%s: %zu of %zu outputs clipped", name,
                  outside, 4 * C);
    }

    /* forward-only gives the same numbers */
    double loss_fwd;
    size_t correct_fwd;
    cr_assert_eq(ps_mlp_forward(net, &m.p, &bt, &loss_fwd, &correct_fwd, &err), PS_OK);
    cr_assert(loss_fwd == loss_sum && correct_fwd == correct, "%s", name);

    /* every gradient against central differences of the reference, in double */
    const double h = 1e-5;
    double gnorm = 0.0;
    for (size_t l = 0; l < s.n_layers; l++) {
        for (int is_bias = 0; is_bias < 2; is_bias++) {
            size_t n = is_bias ? s.units[l] : w_len(&s, FD_ROWS, l);
            double *theta = is_bias ? d.b[l] : d.w[l];
            const float *grad = is_bias ? m.g.b[l] : m.g.w[l];
            for (size_t i = 0; i < n; i++) {
                double saved = theta[i];
                theta[i] = saved + h;
                double lp = ref_loss(&d, &bt, NULL, NULL);
                theta[i] = saved - h;
                double lm = ref_loss(&d, &bt, NULL, NULL);
                theta[i] = saved;
                double fd = (lp - lm) / (2 * h);
                double tol = 2e-5 + 1e-3 * fabs(fd);
                cr_assert(fabs(grad[i] - fd) <= tol, "%s: d%s%zu[%zu] = %.9g, finite diff %.9g",
                          name, is_bias ? "b" : "w", l, i, (double)grad[i], fd);
                gnorm += fd * fd;
            }
        }
    }
    if (!(c->loss == PS_LOSS_BCE && c->out == PS_ACT_SOFTMAX)) /* softmax of 1 unit: p = 1 */
        cr_assert_gt(gnorm, 1e-6, "%s: gradients vanish, the check proves nothing", name);

    /* the row no sample uses has exactly zero gradient */
    for (size_t j = 0; j < s.units[0]; j++)
        cr_assert_eq(m.g.w[0][5 * s.units[0] + j], 0.0f, "%s: unused row 5, unit %zu", name, j);

    dmodel_free(&d);
    ps_mlp_destroy(net);
    free(m.mem);
}

ParameterizedTestParameters(mlp, gradients_match_finite_differences) {
    return cr_make_param_array(grad_case, grad_cases, N_GRAD_CASES);
}

ParameterizedTest(grad_case *c, mlp, gradients_match_finite_differences) {
    check_gradients(c, false);
}

ParameterizedTestParameters(mlp, dense_input_gradients_match_finite_differences) {
    return cr_make_param_array(grad_case, grad_cases, N_GRAD_CASES);
}

ParameterizedTest(grad_case *c, mlp, dense_input_gradients_match_finite_differences) {
    check_gradients(c, true);
}

/* ---- hand-computed: 1 sample, 2 inputs, 1 sigmoid unit, BCE ----
 * x = (1, 2), w0 = (0.5, -0.25), b0 = 0.125, y = 1
 * z = 0.5 - 0.5 + 0.125 = 0.125 (exact in float)
 * p = 1 / (1 + e^-0.125)          = 0.5312093733737563
 * loss = log1p(e^-0.125) = -log p = 0.6325990353171691
 * dz = p - y                      = -0.4687906266262437
 * dw0 = x * dz = (-0.4687906266262437, -0.9375812532524874), db0 = dz; p > 0.5: correct. */
Test(mlp, hand_computed_logistic_unit) {
    ps_mlp_spec s = {.n_layers = 1, .units = {1}, .act = {PS_ACT_SIGMOID}, .loss = PS_LOSS_BCE};
    float w0[2] = {0.5f, -0.25f}, b0[1] = {0.125f}, gw0[2], gb0[1];
    ps_mlp_params p = {.n_rows = 2, .w = {w0}, .b = {b0}};
    ps_mlp_params g = {.n_rows = 2, .w = {gw0}, .b = {gb0}};
    ps_mlp_batch bt = {.B = 1, .offsets = (const size_t[]){0, 2},
                       .rows = (const uint32_t[]){0, 1}, .vals = (const float[]){1.0f, 2.0f},
                       .labels = (const float[]){1.0f}};
    ps_mlp *net;
    cr_assert_eq(ps_mlp_create(&s, 1, &net, NULL), PS_OK);
    double loss;
    size_t correct;
    cr_assert_eq(ps_mlp_forward_backward(net, &p, &bt, &g, &loss, &correct, NULL), PS_OK);
    cr_assert_float_eq(loss, 0.6325990353171691, 1e-6);
    cr_assert_eq(correct, 1);
    cr_assert_float_eq(ps_mlp_output(net)[0], 0.5312093733737563, 1e-6);
    cr_assert_float_eq(gw0[0], -0.4687906266262437, 1e-6);
    cr_assert_float_eq(gw0[1], -0.9375812532524874, 1e-6);
    cr_assert_float_eq(gb0[0], -0.4687906266262437, 1e-6);
    ps_mlp_destroy(net);
}

/* The same unit with x = (1, 2) as a dense input: the same hand-computed numbers. */
Test(mlp, hand_computed_logistic_unit_dense_input) {
    ps_mlp_spec s = {.n_layers = 1, .units = {1}, .act = {PS_ACT_SIGMOID}, .loss = PS_LOSS_BCE};
    float w0[2] = {0.5f, -0.25f}, b0[1] = {0.125f}, gw0[2], gb0[1];
    ps_mlp_params p = {.n_rows = 2, .w = {w0}, .b = {b0}};
    ps_mlp_params g = {.n_rows = 2, .w = {gw0}, .b = {gb0}};
    ps_mlp_batch bt = {.B = 1, .x = (const float[]){1.0f, 2.0f}, .labels = (const float[]){1.0f}};
    ps_mlp *net;
    cr_assert_eq(ps_mlp_create(&s, 1, &net, NULL), PS_OK);
    double loss;
    size_t correct;
    cr_assert_eq(ps_mlp_forward_backward(net, &p, &bt, &g, &loss, &correct, NULL), PS_OK);
    cr_assert_float_eq(loss, 0.6325990353171691, 1e-6);
    cr_assert_eq(correct, 1);
    cr_assert_float_eq(ps_mlp_output(net)[0], 0.5312093733737563, 1e-6);
    cr_assert_float_eq(gw0[0], -0.4687906266262437, 1e-6);
    cr_assert_float_eq(gw0[1], -0.9375812532524874, 1e-6);
    cr_assert_float_eq(gb0[0], -0.4687906266262437, 1e-6);
    ps_mlp_destroy(net);
}

/* ---- the dense and the sparse first layer on the same data ----
 * A Fashion-MNIST-like batch (B 48, d 50, ~40% zeros, 10 classes) and a binary one, given to the
 * sparse path twice - every column as csv emits it, and only the nonzeros with some entries split
 * in two (duplicate ids) - and to the dense path. The three differ only in summation order:
 * loss, accuracy, outputs and every gradient agree to float rounding. */

typedef struct {
    char name[32];
    size_t units0, n_layers;
    ps_activation out;
    ps_loss loss;
} same_case;

ParameterizedTestParameters(mlp, dense_and_sparse_inputs_agree) {
    static same_case cases[] = {
        {"relu relu softmax", 37, 3, SMAX, SCE},
        {"seed-like relu sigmoid", 64, 2, SIGM, BCE},
        {"one layer softmax", 10, 1, SMAX, SCE},
        {"one layer sigmoid", 1, 1, SIGM, BCE},
    };
    return cr_make_param_array(same_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(same_case *c, mlp, dense_and_sparse_inputs_agree) {
    enum { B = 48, D = 50, MAXNNZ = 2 * B * D };
    const size_t C = c->loss == PS_LOSS_BCE ? 1 : 10;
    ps_mlp_spec s = {.n_layers = c->n_layers, .loss = c->loss};
    for (size_t l = 0; l + 1 < c->n_layers; l++) s.units[l] = c->units0 - 9 * l, s.act[l] = RELU;
    s.units[c->n_layers - 1] = C, s.act[c->n_layers - 1] = c->out;
    model m;
    model_init(&m, &s, D, 77 + c->units0);

    static float x[B * D], labels[B], vals_all[B * D], vals_nz[MAXNNZ];
    static uint32_t rows_all[B * D], rows_nz[MAXNNZ];
    static size_t off_all[B + 1], off_nz[B + 1];
    size_t nnz = 0;
    for (size_t b = 0; b < B; b++) {
        off_all[b] = b * D, off_nz[b] = nnz;
        labels[b] = c->loss == PS_LOSS_BCE ? (float)(b % 2) : (float)(b % C);
        for (size_t j = 0; j < D; j++) {
            float u = urand();
            float v = u < -0.2f ? 0.0f : u + 0.2f; /* ~40% exact zeros, like pixel data */
            x[b * D + j] = v;
            rows_all[b * D + j] = (uint32_t)j, vals_all[b * D + j] = v;
            if (v == 0.0f) continue;
            if (j % 7 == 3) { /* the same id twice: 0.25 v + 0.75 v == v exactly */
                rows_nz[nnz] = (uint32_t)j, vals_nz[nnz++] = 0.75f * v;
            }
            rows_nz[nnz] = (uint32_t)j, vals_nz[nnz++] = j % 7 == 3 ? 0.25f * v : v;
        }
    }
    off_all[B] = B * D, off_nz[B] = nnz;
    const ps_mlp_batch inputs[3] = {
        {.B = B, .x = x, .labels = labels},
        {.B = B, .offsets = off_all, .rows = rows_all, .vals = vals_all, .labels = labels},
        {.B = B, .offsets = off_nz, .rows = rows_nz, .vals = vals_nz, .labels = labels},
    };

    ps_mlp *net;
    ps_error err = {0};
    cr_assert_eq(ps_mlp_create(&s, B, &net, &err), PS_OK, "%s", err.msg);
    size_t total = 0;
    for (size_t l = 0; l < s.n_layers; l++) total += w_len(&s, D, l) + s.units[l];
    float *grads[3], *outs[3];
    double loss[3];
    size_t correct[3];
    for (int k = 0; k < 3; k++) {
        fill_grads(&m, GRAD_GARBAGE);
        cr_assert_eq(ps_mlp_forward_backward(net, &m.p, &inputs[k], &m.g, &loss[k], &correct[k],
                                             &err), PS_OK, "%s: input %d: %s", c->name, k,
                     err.msg);
        grads[k] = malloc(total * sizeof(float)), outs[k] = malloc(B * C * sizeof(float));
        cr_assert(grads[k] != NULL && outs[k] != NULL);
        memcpy(outs[k], ps_mlp_output(net), B * C * sizeof(float));
        float *ptr = grads[k];
        for (size_t l = 0; l < s.n_layers; l++) {
            memcpy(ptr, m.g.w[l], w_len(&s, D, l) * sizeof(float)), ptr += w_len(&s, D, l);
            memcpy(ptr, m.g.b[l], s.units[l] * sizeof(float)), ptr += s.units[l];
        }
    }
    double gmax = 0.0;
    for (size_t i = 0; i < total; i++) gmax = fmax(gmax, fabs(grads[0][i]));
    cr_assert_gt(gmax, 1e-3, "%s: gradients vanish, the comparison proves nothing", c->name);
    for (int k = 1; k < 3; k++) {
        cr_assert(fabs(loss[k] - loss[0]) <= 1e-5 * fabs(loss[0]), "%s: input %d: loss %.9g, "
                  "dense %.9g", c->name, k, loss[k], loss[0]);
        cr_assert_eq(correct[k], correct[0], "%s: input %d", c->name, k);
        for (size_t i = 0; i < B * C; i++)
            cr_assert(fabsf(outs[k][i] - outs[0][i]) <= 1e-5f, "%s: input %d: output[%zu] %.9g, "
                      "dense %.9g", c->name, k, i, (double)outs[k][i], (double)outs[0][i]);
        /* relative to the largest gradient: small ones are differences of larger terms */
        for (size_t i = 0; i < total; i++)
            cr_assert(fabs(grads[k][i] - grads[0][i]) <= 1e-5 * gmax, "%s: input %d: grad[%zu] "
                      "%.9g, dense %.9g", c->name, k, i, (double)grads[k][i],
                      (double)grads[0][i]);
    }
    for (int k = 0; k < 3; k++) free(grads[k]), free(outs[k]);
    ps_mlp_destroy(net);
    free(m.mem);
}

/* ---- ps_mlp_dense_input: a CSR batch with feature ids into (B, d) ---- */

Test(mlp, dense_input_from_csr) {
    /* the fd batch with its rows as ids: fd_x, which was summed by hand */
    uint64_t ids[sizeof(fd_rows) / sizeof(fd_rows[0])];
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) ids[i] = fd_rows[i];
    float x[4 * FD_ROWS];
    memset(x, 0x7f, sizeof(x)); /* garbage: every cell must be written */
    ps_error err = {0};
    cr_assert_eq(ps_mlp_dense_input(x, 4, FD_ROWS, fd_offsets, ids, fd_vals, &err), PS_OK, "%s",
                 err.msg);
    for (size_t i = 0; i < 4 * FD_ROWS; i++)
        cr_assert_eq(x[i], fd_x[i], "x[%zu][%zu] = %g, want %g", i / FD_ROWS, i % FD_ROWS,
                     (double)x[i], (double)fd_x[i]);
    /* no entries at all: zeros, and the arrays may be NULL */
    float z[2 * 3] = {1, 1, 1, 1, 1, 1};
    cr_assert_eq(ps_mlp_dense_input(z, 2, 3, (const size_t[]){4, 4, 4}, NULL, NULL, NULL), PS_OK);
    for (size_t i = 0; i < 6; i++) cr_assert_eq(z[i], 0.0f);
}

Test(mlp, dense_input_errors) {
    uint64_t ids[sizeof(fd_rows) / sizeof(fd_rows[0])];
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) ids[i] = fd_rows[i];
    float x[4 * FD_ROWS];
    ps_error err = {0};
    /* id 4 (in sample 2) past a width of 4 */
    cr_assert_eq(ps_mlp_dense_input(x, 4, 4, fd_offsets, ids, fd_vals, &err), PS_DATA);
    cr_assert(strstr(err.msg, "sample 2") && strstr(err.msg, "feature id 4") &&
              strstr(err.msg, "4 columns"), "%s", err.msg);
    ids[3] = 1ull << 40;
    cr_assert_eq(ps_mlp_dense_input(x, 4, FD_ROWS, fd_offsets, ids, fd_vals, &err), PS_DATA);
    cr_assert(strstr(err.msg, "sample 0") && strstr(err.msg, "1099511627776"), "%s", err.msg);
    ids[3] = 3;
    cr_assert_eq(ps_mlp_dense_input(x, 4, FD_ROWS, (const size_t[]){0, 5, 4, 11, 11}, ids,
                                    fd_vals, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "sample 1") && strstr(err.msg, "decrease"), "%s", err.msg);
    cr_assert_eq(ps_mlp_dense_input(NULL, 4, FD_ROWS, fd_offsets, ids, fd_vals, &err),
                 PS_INVALID_ARG);
    cr_assert_eq(ps_mlp_dense_input(x, 4, FD_ROWS, NULL, ids, fd_vals, NULL), PS_INVALID_ARG);
    cr_assert_eq(ps_mlp_dense_input(x, 4, FD_ROWS, fd_offsets, NULL, fd_vals, NULL),
                 PS_INVALID_ARG);
    cr_assert_eq(ps_mlp_dense_input(x, 4, FD_ROWS, fd_offsets, ids, NULL, NULL), PS_INVALID_ARG);
}

/* ---- extreme logits: the loss stays exact and finite (no exp overflow, no log(0)) ----
 * One layer, samples without entries, so z = b0 for every sample. */

static void run_bias_only(ps_mlp_spec *s, float *b0, float *gb0, const float *labels,
                          double *loss, size_t *correct) {
    float w0[3] = {0}, gw0[3];
    ps_mlp_params p = {.n_rows = 1, .w = {w0}, .b = {b0}};
    ps_mlp_params g = {.n_rows = 1, .w = {gw0}, .b = {gb0}};
    ps_mlp_batch bt = {.B = 2, .offsets = (const size_t[]){0, 0, 0}, .labels = labels};
    ps_mlp *net;
    ps_error err = {0};
    cr_assert_eq(ps_mlp_create(s, 2, &net, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_mlp_forward_backward(net, &p, &bt, &g, loss, correct, &err), PS_OK, "%s",
                 err.msg);
    ps_mlp_destroy(net);
}

Test(mlp, extreme_logits) {
    ps_mlp_spec s = {.n_layers = 1, .units = {1}, .act = {PS_ACT_SIGMOID}, .loss = PS_LOSS_BCE};
    const float labels01[2] = {0.0f, 1.0f};
    float b0[3], gb0[3];
    double loss;
    size_t correct;

    /* z = 100: sample 0 (y = 0) costs 100, sample 1 (y = 1) costs log1p(e^-100) ~ 0 */
    b0[0] = 100.0f;
    run_bias_only(&s, b0, gb0, labels01, &loss, &correct);
    cr_assert_float_eq(loss, 100.0, 1e-4);
    cr_assert_eq(correct, 1);
    cr_assert_float_eq(gb0[0], 0.5f, 1e-7); /* ((1 - 0) + (1 - 1)) / 2 */
    b0[0] = -100.0f;
    run_bias_only(&s, b0, gb0, labels01, &loss, &correct);
    cr_assert_float_eq(loss, 100.0, 1e-4);
    cr_assert_float_eq(gb0[0], -0.5f, 1e-7);

    /* softmax: z = (1000, 0, -1000); labels 0 and 1 cost 0 and 1000 */
    s.units[0] = 3, s.act[0] = PS_ACT_SOFTMAX, s.loss = PS_LOSS_SPARSE_CE;
    b0[0] = 1000.0f, b0[1] = 0.0f, b0[2] = -1000.0f;
    run_bias_only(&s, b0, gb0, labels01, &loss, &correct);
    cr_assert_float_eq(loss, 1000.0, 1e-3);
    cr_assert_eq(correct, 1);
    cr_assert(gb0[0] == 0.5f && gb0[1] == -0.5f && gb0[2] == 0.0f, "db0 = (%g, %g, %g)",
              (double)gb0[0], (double)gb0[1], (double)gb0[2]);

    /* a tie predicts the first class, as tf.argmax */
    b0[0] = b0[1] = b0[2] = 0.0f;
    run_bias_only(&s, b0, gb0, labels01, &loss, &correct);
    cr_assert_float_eq(loss, 2 * log(3.0), 1e-5);
    cr_assert_eq(correct, 1);
}

/* ---- training sanity: all-ones labels, plain SGD drives the loss towards 0 ---- */

Test(mlp, sgd_on_all_ones_drives_loss_down) {
    enum { B = 32, D = 20 };
    ps_mlp_spec s = {.n_layers = 2, .units = {8, 1}, .act = {PS_ACT_RELU, PS_ACT_SIGMOID},
                     .loss = PS_LOSS_BCE};
    model m;
    model_init(&m, &s, D, 42);
    size_t offsets[B + 1];
    uint32_t rows[B * D];
    float vals[B * D], labels[B];
    for (size_t b = 0; b < B; b++) {
        offsets[b] = b * D;
        labels[b] = 1.0f;
        for (size_t j = 0; j < D; j++) rows[b * D + j] = (uint32_t)j, vals[b * D + j] = urand();
    }
    offsets[B] = B * D;
    ps_mlp_batch bt = {.B = B, .offsets = offsets, .rows = rows, .vals = vals, .labels = labels};
    ps_mlp *net;
    ps_error err = {0};
    cr_assert_eq(ps_mlp_create(&s, B, &net, &err), PS_OK, "%s", err.msg);
    double first = 0.0, loss = 0.0;
    size_t correct = 0;
    for (int step = 0; step < 300; step++) {
        cr_assert_eq(ps_mlp_forward_backward(net, &m.p, &bt, &m.g, &loss, &correct, &err), PS_OK,
                     "%s", err.msg);
        if (step == 0) first = loss / B;
        for (size_t l = 0; l < s.n_layers; l++) {
            for (size_t i = 0; i < w_len(&s, D, l); i++) m.p.w[l][i] -= 0.1f * m.g.w[l][i];
            for (size_t i = 0; i < s.units[l]; i++) m.p.b[l][i] -= 0.1f * m.g.b[l][i];
        }
    }
    cr_assert_eq(ps_mlp_forward(net, &m.p, &bt, &loss, &correct, &err), PS_OK);
    loss /= B;
    cr_assert(first > 0.3 && loss < 0.05 && loss < first / 5, "loss %.4f -> %.4f", first, loss);
    cr_assert_eq(correct, B);
    ps_mlp_destroy(net);
    free(m.mem);
}

/* ---- validation ---- */

static ps_mlp *vnet;
static model vm;
static void vsetup(void) {
    ps_mlp_spec s = {.n_layers = 2, .units = {4, 3}, .act = {PS_ACT_RELU, PS_ACT_SOFTMAX},
                     .loss = PS_LOSS_SPARSE_CE};
    model_init(&vm, &s, FD_ROWS, 7);
    cr_assert_eq(ps_mlp_create(&s, 4, &vnet, NULL), PS_OK);
}
static void vteardown(void) {
    ps_mlp_destroy(vnet);
    free(vm.mem);
}
TestSuite(mlp_validate, .init = vsetup, .fini = vteardown, .timeout = 10);

static ps_status try_batch(const ps_mlp_batch *bt, ps_error *err) {
    double loss;
    size_t correct;
    return ps_mlp_forward_backward(vnet, &vm.p, bt, &vm.g, &loss, &correct, err);
}

Test(mlp_validate, good_batch) {
    ps_mlp_batch bt = {.B = 4, .offsets = fd_offsets, .rows = fd_rows, .vals = fd_vals,
                       .labels = fd_labels_sce};
    ps_error err = {0};
    cr_assert_eq(try_batch(&bt, &err), PS_OK, "%s", err.msg);
}

Test(mlp_validate, row_out_of_range) {
    static const uint32_t rows[] = {0, 2, 0, 3, 1, 2, 6, 1, 4, 4, 2};
    ps_mlp_batch bt = {.B = 4, .offsets = fd_offsets, .rows = rows, .vals = fd_vals,
                       .labels = fd_labels_sce};
    ps_error err = {0};
    cr_assert_null(ps_mlp_output(vnet), "no output before the first call");
    cr_assert_eq(try_batch(&bt, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "row 6") != NULL && strstr(err.msg, "6 rows") != NULL, "%s",
              err.msg);
    cr_assert_null(ps_mlp_output(vnet), "no output after a failed call");
}

Test(mlp_validate, dense_input) {
    ps_mlp_batch bt = {.B = 4, .x = fd_x, .labels = fd_labels_sce}; /* no CSR arrays needed */
    ps_error err = {0};
    cr_assert_eq(try_batch(&bt, &err), PS_OK, "%s", err.msg);
    ps_mlp_params p = vm.p, g = vm.g;
    p.n_rows = g.n_rows = 0;
    double loss;
    cr_assert_eq(ps_mlp_forward_backward(vnet, &p, &bt, &g, &loss, NULL, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "width 0") != NULL, "%s", err.msg);
    cr_assert_eq(ps_mlp_forward(vnet, &p, &bt, &loss, NULL, NULL), PS_INVALID_ARG);
    bt.labels = NULL;
    cr_assert_eq(try_batch(&bt, NULL), PS_INVALID_ARG);
}

Test(mlp_validate, offsets_decrease) {
    static const size_t offsets[] = {0, 5, 4, 11, 11};
    ps_mlp_batch bt = {.B = 4, .offsets = offsets, .rows = fd_rows, .vals = fd_vals,
                       .labels = fd_labels_sce};
    cr_assert_eq(try_batch(&bt, NULL), PS_INVALID_ARG);
}

Test(mlp_validate, batch_size) {
    ps_mlp_batch bt = {.B = 5, .offsets = (const size_t[]){0, 0, 0, 0, 0, 0},
                       .labels = (const float[]){0, 0, 0, 0, 0}};
    ps_error err = {0};
    cr_assert_eq(try_batch(&bt, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "5 samples") != NULL, "%s", err.msg);
    bt.B = 0;
    cr_assert_eq(try_batch(&bt, NULL), PS_INVALID_ARG);
    bt.B = 4; /* empty samples are fine: h0 = act(b0) */
    cr_assert_eq(try_batch(&bt, NULL), PS_OK);
}

typedef struct {
    char name[24];
    float label;
    ps_status want;
} label_case;

ParameterizedTestParameters(mlp_validate, sparse_ce_labels) {
    static label_case cases[] = {
        {"class 0", 0.0f, PS_OK},       {"class 2", 2.0f, PS_OK},
        {"class 3 of 3", 3.0f, PS_DATA}, {"negative", -1.0f, PS_DATA},
        {"fraction", 1.5f, PS_DATA},     {"nan", NAN, PS_DATA},
    };
    return cr_make_param_array(label_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(label_case *c, mlp_validate, sparse_ce_labels) {
    float labels[4] = {0, 1, c->label, 2};
    ps_mlp_batch bt = {.B = 4, .offsets = fd_offsets, .rows = fd_rows, .vals = fd_vals,
                       .labels = labels};
    ps_error err = {0};
    cr_assert_eq(try_batch(&bt, &err), c->want, "%s: %s", c->name, err.msg);
    if (c->want == PS_DATA) cr_assert(strstr(err.msg, "sample 2") != NULL, "%s", err.msg);
}

Test(mlp_validate, bce_labels) {
    ps_mlp_spec s = {.n_layers = 1, .units = {1}, .act = {PS_ACT_SIGMOID}, .loss = PS_LOSS_BCE};
    model m;
    model_init(&m, &s, FD_ROWS, 3);
    ps_mlp *net;
    cr_assert_eq(ps_mlp_create(&s, 4, &net, NULL), PS_OK);
    float labels[4] = {0.0f, 1.0f, 0.25f, 1.0f};
    ps_mlp_batch bt = {.B = 4, .offsets = fd_offsets, .rows = fd_rows, .vals = fd_vals,
                       .labels = labels};
    double loss;
    cr_assert_eq(ps_mlp_forward(net, &m.p, &bt, &loss, NULL, NULL), PS_OK);
    labels[3] = 2.0f;
    ps_error err = {0};
    cr_assert_eq(ps_mlp_forward(net, &m.p, &bt, &loss, NULL, &err), PS_DATA);
    cr_assert(strstr(err.msg, "label 2") != NULL, "%s", err.msg);
    ps_mlp_destroy(net);
    free(m.mem);
}

Test(mlp_validate, grads_shape_and_nulls) {
    ps_mlp_batch bt = {.B = 4, .offsets = fd_offsets, .rows = fd_rows, .vals = fd_vals,
                       .labels = fd_labels_sce};
    ps_mlp_params g = vm.g;
    g.n_rows = FD_ROWS - 1;
    double loss;
    cr_assert_eq(ps_mlp_forward_backward(vnet, &vm.p, &bt, &g, &loss, NULL, NULL),
                 PS_INVALID_ARG);
    g = vm.g;
    g.b[1] = NULL;
    cr_assert_eq(ps_mlp_forward_backward(vnet, &vm.p, &bt, &g, &loss, NULL, NULL),
                 PS_INVALID_ARG);
    cr_assert_eq(ps_mlp_forward_backward(vnet, &vm.p, &bt, NULL, &loss, NULL, NULL),
                 PS_INVALID_ARG);
}

Test(mlp_validate, bad_specs) {
    ps_mlp *net = (ps_mlp *)&net; /* must be reset to NULL */
    ps_error err = {0};
    ps_mlp_spec s = {.n_layers = 2, .units = {4, 2}, .act = {PS_ACT_RELU, PS_ACT_SIGMOID},
                     .loss = PS_LOSS_BCE};
    cr_assert_eq(ps_mlp_create(&s, 8, &net, &err), PS_CONFIG);
    cr_assert_null(net);
    cr_assert(strstr(err.msg, "has 2") != NULL, "%s", err.msg);
    s.units[1] = 1;
    cr_assert_eq(ps_mlp_create(&s, 0, &net, NULL), PS_TOO_LARGE);
    cr_assert_eq(ps_mlp_create(&s, (size_t)PS_MLP_MAX_BATCH + 1, &net, NULL), PS_TOO_LARGE);
    s.units[0] = 0;
    cr_assert_eq(ps_mlp_create(&s, 8, &net, NULL), PS_CONFIG);
    s.units[0] = 4, s.n_layers = 0;
    cr_assert_eq(ps_mlp_create(&s, 8, &net, NULL), PS_CONFIG);
    s.n_layers = PS_MLP_MAX_LAYERS + 1;
    cr_assert_eq(ps_mlp_create(&s, 8, &net, NULL), PS_CONFIG);
    s.n_layers = 2, s.act[0] = (ps_activation)99;
    cr_assert_eq(ps_mlp_create(&s, 8, &net, NULL), PS_CONFIG);
    s.act[0] = PS_ACT_RELU;
    cr_assert_eq(ps_mlp_create(&s, 8, &net, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_mlp_get_spec(net)->units[0], 4);
    ps_mlp_destroy(net);
    ps_mlp_destroy(NULL);
}

/* ---- names ---- */

Test(mlp, names_round_trip) {
    const char *acts[] = {"linear", "relu", "sigmoid", "tanh", "softmax"};
    for (size_t i = 0; i < 5; i++) {
        ps_activation a;
        cr_assert_eq(ps_activation_parse(acts[i], &a, NULL), PS_OK, "%s", acts[i]);
        cr_assert_str_eq(ps_activation_name(a), acts[i]);
    }
    const char *losses[] = {"binary_crossentropy", "sparse_categorical_crossentropy"};
    for (size_t i = 0; i < 2; i++) {
        ps_loss l;
        cr_assert_eq(ps_loss_parse(losses[i], &l, NULL), PS_OK, "%s", losses[i]);
        cr_assert_str_eq(ps_loss_name(l), losses[i]);
    }
    ps_activation a;
    ps_loss l;
    ps_error err = {0};
    cr_assert_eq(ps_activation_parse("Relu", &a, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "\"Relu\"") != NULL, "%s", err.msg);
    cr_assert_eq(ps_loss_parse("categorical_crossentropy", &l, NULL), PS_CONFIG);
    cr_assert_eq(ps_activation_parse(NULL, &a, NULL), PS_INVALID_ARG);
    cr_assert_str_eq(ps_activation_name((ps_activation)42), "?");
}
