/* adagrad.c - AdaGrad row kernels. The float32 operation order follows each reference exactly:
 * the golden files in tests/ref/ are compared bit for bit. */
#include "adagrad.h"

#include <math.h>

size_t ps_adagrad_state_len(const ps_adagrad_config *c, size_t dim) {
    return c->rowwise ? 1 : dim;
}

void ps_adagrad_init_state(const ps_adagrad_config *c, float *acc, size_t dim) {
    size_t n = ps_adagrad_state_len(c, dim);
    float g0 = (float)c->initial_accumulator_value;
    for (size_t i = 0; i < n; i++) acc[i] = g0;
}

/* torch (dense path, 1.13 _single_tensor_adagrad):
 *   grad = grad + wd * param;  clr = lr / (1 + (step - 1) * lr_decay)   [Python double]
 *   state_sum.addcmul_(grad, grad); std = state_sum.sqrt().add_(eps);
 *   param.addcdiv_(grad, std, -clr)
 * addcdiv evaluates self + (value * t1) / t2 in float32. The two multiply-adds are fused in torch's
 * CPU kernels (GCC contracts a + b * c in the AVX2 build; make_adagrad_golden.py checks it), so
 * they are fmaf() here: grad = fma(wd, param, grad), state_sum = fma(grad, grad, state_sum). */
/* fmaf is one instruction where the CPU has FMA and a slow exact libm call where it does not:
 * build both and let the loader pick (GCC function multiversioning). */
__attribute__((target_clones("fma", "default")))
static void update_pytorch(const ps_adagrad_config *c, float *w, float *acc, const float *g,
                           size_t dim, uint64_t step) {
    double clr_d = c->learning_rate;
    if (c->lr_decay != 0.0) clr_d = c->learning_rate / (1.0 + (double)(step - 1) * c->lr_decay);
    const float neg_clr = (float)-clr_d, eps = (float)c->epsilon, wd = (float)c->weight_decay;
    if (c->rowwise) {
        /* FBGEMM row-wise: one accumulator per row, G += mean(g^2). */
        float sum = 0.0f;
        for (size_t i = 0; i < dim; i++) {
            float gi = wd != 0.0f ? g[i] + wd * w[i] : g[i];
            sum += gi * gi;
        }
        acc[0] += sum / (float)dim;
        const float std = sqrtf(acc[0]) + eps;
        for (size_t i = 0; i < dim; i++) {
            float gi = wd != 0.0f ? g[i] + wd * w[i] : g[i];
            w[i] = w[i] + (neg_clr * gi) / std;
        }
        return;
    }
    for (size_t i = 0; i < dim; i++) {
        const float gi = c->weight_decay != 0.0 ? fmaf(wd, w[i], g[i]) : g[i];
        acc[i] = fmaf(gi, gi, acc[i]);
        const float std = sqrtf(acc[i]) + eps;
        w[i] = w[i] + (neg_clr * gi) / std;
    }
}

/* Keras 3 (keras/src/optimizers/adagrad.py), all float32:
 *   accumulator += square(g); variable -= (lr * g) / sqrt(accumulator + epsilon) */
static void update_keras(const ps_adagrad_config *c, float *w, float *acc, const float *g,
                         size_t dim) {
    const float lr = (float)c->learning_rate, eps = (float)c->epsilon;
    if (c->rowwise) {
        float sum = 0.0f;
        for (size_t i = 0; i < dim; i++) sum += g[i] * g[i];
        acc[0] += sum / (float)dim;
        const float den = sqrtf(acc[0] + eps);
        for (size_t i = 0; i < dim; i++) w[i] = w[i] - (lr * g[i]) / den;
        return;
    }
    for (size_t i = 0; i < dim; i++) {
        acc[i] = acc[i] + g[i] * g[i];
        w[i] = w[i] - (lr * g[i]) / sqrtf(acc[i] + eps);
    }
}

void ps_adagrad_update(const ps_adagrad_config *c, float *w, float *acc, const float *g,
                       size_t dim, uint64_t step) {
    if (c->form == PS_ADAGRAD_KERAS)
        update_keras(c, w, acc, g, dim);
    else
        update_pytorch(c, w, acc, g, dim, step);
}
