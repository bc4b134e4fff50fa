/* init.c - counter-based random initial values, so rows never depend on the order they were
 * created in. With row_seed = mix64(seed ^ key_hash(table, key)) and G = 0x9e3779b97f4a7c15,
 * coordinate j draws r_j = mix64(row_seed + G*j) and u_j = (r_j >> 11) * 2^-53 in [0, 1):
 *   uniform: a + (b - a) * u_j;  glorot_uniform: l * (2 u_j - 1), l = sqrt(6 / (fan_in + fan_out));
 *   normal: Box-Muller, stddev * sqrt(-2 ln(1 - u_j)) * cos(2 pi v_j), v_j from mix64(r_j ^ G).
 * tests/test_init.c pins these bits from an independent implementation. */
#include "init.h"

#include <math.h>

#include "hash.h"

static double unit(uint64_t x) { /* [0, 1), 53 bits */
    return (double)(x >> 11) * 0x1.0p-53;
}

void ps_init_row(const ps_init_spec *spec, uint64_t seed, uint32_t table, uint64_t key, float *out,
                 uint32_t dim) {
    const uint64_t row_seed = ps_mix64(seed ^ ps_key_hash(table, key));
    const uint64_t step = 0x9e3779b97f4a7c15ULL;
    switch (spec->kind) {
    case PS_INIT_ZEROS:
        for (uint32_t j = 0; j < dim; j++) out[j] = 0.0f;
        break;
    case PS_INIT_CONSTANT:
        for (uint32_t j = 0; j < dim; j++) out[j] = (float)spec->a;
        break;
    case PS_INIT_UNIFORM:
        for (uint32_t j = 0; j < dim; j++)
            out[j] = (float)(spec->a + (spec->b - spec->a) * unit(ps_mix64(row_seed + step * j)));
        break;
    case PS_INIT_GLOROT_UNIFORM: {
        const double limit = sqrt(6.0 / ((double)spec->fan_in + (double)spec->fan_out));
        for (uint32_t j = 0; j < dim; j++)
            out[j] = (float)(limit * (2.0 * unit(ps_mix64(row_seed + step * j)) - 1.0));
        break;
    }
    case PS_INIT_NORMAL:
        /* Box-Muller, one pair of uniforms per coordinate. */
        for (uint32_t j = 0; j < dim; j++) {
            uint64_t r = ps_mix64(row_seed + step * j);
            double u1 = 1.0 - unit(r), u2 = unit(ps_mix64(r ^ step));
            out[j] = (float)(spec->stddev * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        }
        break;
    }
}
