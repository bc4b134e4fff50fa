/* test_init.c - server/init.c: every initializer's exact float bits for a few (seed, table, key),
 * pinned from an independent Python re-implementation, so a change of placement hashing or of
 * initial values cannot pass unnoticed.
 *
 * The generator, as server/init.c implements it (its header comment says "mix64(row_seed + j)";
 * the code steps by the golden-ratio constant, which is what is written out here):
 *     row_seed = mix64(seed ^ key_hash(table, key))
 *     r_j      = mix64(row_seed + 0x9e3779b97f4a7c15 * j)           (mod 2^64)
 *     unit(x)  = (x >> 11) * 2^-53                                   (double in [0, 1))
 *     zeros     0;  constant  value
 *     uniform   a + (b - a) * unit(r_j)
 *     glorot    sqrt(6 / (fan_in + fan_out)) * (2 * unit(r_j) - 1)
 *     normal    stddev * sqrt(-2 log(1 - unit(r_j))) * cos(6.283185307179586 * unit(mix64(r_j ^
 *               0x9e3779b97f4a7c15)))
 * all in double, then rounded to float32. The reference (mix64/key_hash as in test_hash.c):
 *     STEP = 0x9e3779b97f4a7c15
 *     def unit(x): return float(x >> 11) * 2.0 ** -53
 *     def row(kind, seed, table, key, dim, a=0., b=0., stddev=0., fi=0, fo=0):
 *         rs = mix64(seed ^ key_hash(table, key)); out = []
 *         for j in range(dim):
 *             r = mix64((rs + STEP * j) & M)
 *             if kind == 'zeros': v = 0.0
 *             elif kind == 'constant': v = a
 *             elif kind == 'uniform': v = a + (b - a) * unit(r)
 *             elif kind == 'glorot': v = math.sqrt(6.0 / (fi + fo)) * (2.0 * unit(r) - 1.0)
 *             else:
 *                 u1, u2 = 1.0 - unit(r), unit(mix64(r ^ STEP))
 *                 v = stddev * math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)
 *             out.append(struct.unpack('<I', numpy.float32(v).tobytes())[0])
 *         return out */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "init.h"

TestSuite(init, .timeout = 10);

#define DIM 4

typedef struct {
    ps_init_spec spec;
    uint64_t seed;
    uint32_t table;
    uint64_t key;
    uint32_t dim;
    uint32_t want[DIM]; /* float32 bits */
} init_case;

static const init_case cases[] = {
    {{.kind = PS_INIT_ZEROS}, 0, 0, 0, 3, {0, 0, 0}},
    {{.kind = PS_INIT_CONSTANT, .a = 0.1}, 1, 2, 3, 3, {0x3dcccccd, 0x3dcccccd, 0x3dcccccd}},
    {{.kind = PS_INIT_CONSTANT, .a = -2.5}, 1, 2, 3, 2, {0xc0200000, 0xc0200000}},
    {{.kind = PS_INIT_UNIFORM, .a = -0.05, .b = 0.05}, 0, 0, 0, 4,
     {0xbd24408e, 0xbd04f324, 0xbb2f8865, 0x3c7c5259}},
    {{.kind = PS_INIT_UNIFORM, .a = -0.05, .b = 0.05}, 42, 1, 7, 4,
     {0x3ca83150, 0x3c50cc9a, 0xbd226250, 0xbc6ae199}},
    {{.kind = PS_INIT_UNIFORM, .a = 2.0, .b = 3.0}, 42, 1, 8, 4,
     {0x40312b88, 0x402ec97e, 0x4036e995, 0x40216ce7}},
    {{.kind = PS_INIT_UNIFORM, .a = -1.0, .b = 1.0}, 7, 3, 0x8000000000000005ULL, 4,
     {0xbd04f2bd, 0xbe751030, 0x3e5a3b72, 0xbf4fe4ec}},
    {{.kind = PS_INIT_NORMAL, .stddev = 0.05}, 0, 0, 0, 4,
     {0x3cab4de9, 0x3be94bd9, 0xbd101151, 0xbd3f97e0}},
    {{.kind = PS_INIT_NORMAL, .stddev = 1.0}, 11, 0, 7919, 4,
     {0x3ee51c8f, 0xbfb44196, 0xbeba300f, 0x3fa68f83}},
    {{.kind = PS_INIT_NORMAL, .stddev = 0.1}, 42, 2, 123456789, 4,
     {0x3d32894d, 0xbd0f52fa, 0xbd9fa212, 0xbdb8cc10}},
    {{.kind = PS_INIT_GLOROT_UNIFORM, .fan_in = 20, .fan_out = 64}, 42, 0, 0, 4,
     {0x3e369c96, 0x3e0288cb, 0x3d13f14c, 0xbe329ddf}},
    {{.kind = PS_INIT_GLOROT_UNIFORM, .fan_in = 20, .fan_out = 64}, 42, 0, 19, 4,
     {0xbe7cfe62, 0xbe6d8624, 0xbc1b3fe0, 0xbd61505c}},
    {{.kind = PS_INIT_GLOROT_UNIFORM, .fan_in = 1, .fan_out = 1}, 5, 4, 1000000, 4,
     {0xbfbacbf9, 0x3e38e8f1, 0x3f827fda, 0x3f192a2d}},
};

static const char *kind_name(ps_init_kind k) {
    static const char *const names[] = {"zeros", "constant", "uniform", "normal",
                                        "glorot_uniform"};
    return (unsigned)k < 5 ? names[k] : "?";
}

Test(init, known_bits_per_initializer) {
    int seen[5] = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const init_case *c = &cases[i];
        float out[DIM + 1];
        for (size_t j = 0; j <= DIM; j++) out[j] = -999.0f; /* canary past dim */
        ps_init_row(&c->spec, c->seed, c->table, c->key, out, c->dim);
        for (uint32_t j = 0; j < c->dim; j++) {
            uint32_t got;
            memcpy(&got, &out[j], sizeof(got));
            cr_assert_eq(got, c->want[j],
                         "case %zu (%s, seed %llu, table %u, key %#llx) [%u]: got %#010x (%a), "
                         "want %#010x",
                         i, kind_name(c->spec.kind), (unsigned long long)c->seed, c->table,
                         (unsigned long long)c->key, j, got, (double)out[j], c->want[j]);
        }
        cr_assert_eq(out[c->dim], -999.0f, "case %zu wrote past dim", i);
        seen[c->spec.kind]++;
    }
    for (int k = 0; k < 5; k++) cr_assert_gt(seen[k], 0, "no case for %s", kind_name(k));
}

/* The same row whatever else was initialized before: a pure function of its arguments. */
Test(init, row_does_not_depend_on_history) {
    const init_case *c = &cases[4];
    float a[DIM], b[DIM], other[DIM];
    ps_init_row(&c->spec, c->seed, c->table, c->key, a, DIM);
    for (uint64_t k = 0; k < 100; k++) ps_init_row(&c->spec, c->seed, c->table, k, other, DIM);
    ps_init_row(&c->spec, c->seed, c->table, c->key, b, DIM);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
}
