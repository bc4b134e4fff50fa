/* test_store.c - server/store.c: rows appear on first push, pulls of unknown keys read the initial
 * value without storing it, initial values are a pure function of (seed, table, key), pushes apply
 * exactly ps_adagrad_update (duplicates summed first) and touch nothing else, the index keeps
 * every row through many rehashes within a bounded memory overhead, a put sets a row's exact bits
 * (and a later push continues from them), and the ordered scan lists every key once, ascending. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adagrad.h"
#include "hash.h"
#include "init.h"
#include "store.h"

#define SEED 1234u
#define MAX_DIM 32

static ps_store *st;
static void setup(void) { st = NULL; }
static void teardown(void) { ps_store_destroy(st); }
TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static ps_table_spec spec_of(uint32_t id, uint32_t dim, ps_init_spec init) {
    ps_table_spec t = {.id = id, .dim = dim, .init = init};
    snprintf(t.name, sizeof(t.name), "t%u", id);
    t.opt = (ps_adagrad_config){.form = PS_ADAGRAD_PYTORCH, .learning_rate = 0.1,
                                .epsilon = 1e-10, .initial_accumulator_value = 0.0};
    return t;
}

static const ps_init_spec uniform_init = {.kind = PS_INIT_UNIFORM, .a = -0.5, .b = 0.5};

static ps_store *make(const ps_table_spec *t, uint64_t seed) {
    ps_store *s = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_store_create(t, seed, &s, &err), PS_OK, "%s", err.msg);
    return s;
}

static void push(ps_store *s, const uint64_t *keys, const float *grads, size_t n) {
    ps_error err = {0};
    cr_assert_eq(ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)grads, n, &err), PS_OK,
                 "%s", err.msg);
}

static void pull(ps_store *s, const uint64_t *keys, size_t n, float *out) {
    ps_store_pull(s, (const uint8_t *)keys, n, (uint8_t *)out);
}

/* The row a key should hold after the given gradient steps, run by hand through the kernel. */
static void expect_row(const ps_table_spec *t, uint64_t seed, uint64_t key, const float *grads,
                       size_t steps, float *w, float *acc) {
    ps_init_row(&t->init, seed, t->id, key, w, t->dim);
    ps_adagrad_init_state(&t->opt, acc, t->dim);
    for (size_t k = 0; k < steps; k++)
        ps_adagrad_update(&t->opt, w, acc, grads + k * t->dim, t->dim, (uint64_t)k + 1);
}

static void assert_row_bits(const ps_store *s, uint64_t key, const float *w, const float *acc,
                            const char *what) {
    const ps_table_spec *t = ps_store_spec(s);
    size_t state = ps_adagrad_state_len(&t->opt, t->dim);
    float gw[MAX_DIM], ga[MAX_DIM];
    cr_assert(ps_store_get(s, key, gw, ga), "%s: key %llu has no row", what,
              (unsigned long long)key);
    for (size_t d = 0; d < t->dim; d++)
        cr_assert_eq(bits(gw[d]), bits(w[d]), "%s: key %llu w[%zu] = %a, want %a", what,
                     (unsigned long long)key, d, (double)gw[d], (double)w[d]);
    for (size_t d = 0; acc != NULL && d < state; d++)
        cr_assert_eq(bits(ga[d]), bits(acc[d]), "%s: key %llu acc[%zu] = %a, want %a", what,
                     (unsigned long long)key, d, (double)ga[d], (double)acc[d]);
}

static float grad_of(uint64_t key, size_t d) { /* deterministic, in [-1, 1) */
    return (float)((double)(ps_mix64(key * 31 + d) >> 40) / (double)(1 << 23) - 1.0);
}

/* --- rows and initial values ---------------------------------------------------------------- */

Test(store, create_rejects_dim_zero) {
    ps_table_spec t = spec_of(0, 0, uniform_init);
    ps_error err = {0};
    ps_store *s = NULL;
    cr_assert_eq(ps_store_create(&t, SEED, &s, &err), PS_INVALID_ARG);
    cr_assert_null(s);
    cr_assert_gt(strlen(err.msg), 0);
    ps_store_destroy(NULL);
}

Test(store, rows_created_on_first_push) {
    ps_table_spec t = spec_of(0, 4, uniform_init);
    st = make(&t, SEED);
    cr_assert_eq(ps_store_rows(st), 0);
    cr_assert_eq(ps_store_spec(st)->dim, 4);
    cr_assert_str_eq(ps_store_spec(st)->name, "t0");
    float g[3 * 4] = {0.5f, 0.25f};
    push(st, (const uint64_t[]){1, 2, 3}, g, 3);
    cr_assert_eq(ps_store_rows(st), 3);
    push(st, (const uint64_t[]){3, 2, 1}, g, 3);
    cr_assert_eq(ps_store_rows(st), 3, "pushing known keys adds no row");
    push(st, (const uint64_t[]){2, 0xffffffffffffffffULL, 0}, g, 3);
    cr_assert_eq(ps_store_rows(st), 5, "keys 0 and 2^64-1 are ordinary keys");
    push(st, NULL, NULL, 0);
    cr_assert_eq(ps_store_rows(st), 5);
    cr_assert(ps_store_get(st, 0, NULL, NULL));
    cr_assert(ps_store_get(st, 0xffffffffffffffffULL, NULL, NULL));
    cr_assert_not(ps_store_get(st, 4, NULL, NULL));
}

Test(store, pull_missing_key_reads_initial_value_without_creating_it) {
    ps_table_spec t = spec_of(3, 8, uniform_init);
    st = make(&t, SEED);
    uint64_t keys[4] = {10, 20, 10, 99};
    float out[4 * 8], want[8];
    pull(st, keys, 4, out);
    cr_assert_eq(ps_store_rows(st), 0, "a pull created rows");
    for (int i = 0; i < 4; i++) {
        ps_init_row(&t.init, SEED, t.id, keys[i], want, t.dim);
        cr_assert_arr_eq(out + 8 * i, want, sizeof(want), "key %llu", (unsigned long long)keys[i]);
        cr_assert_not(ps_store_get(st, keys[i], NULL, NULL));
    }
    /* ...and a later push starts from that same value */
    float g[8] = {1, -1, 0.5f, 0, 0, 0, 0, 2};
    push(st, (const uint64_t[]){20}, g, 1);
    float w[8], acc[8];
    expect_row(&t, SEED, 20, g, 1, w, acc);
    assert_row_bits(st, 20, w, acc, "first push");
    pull(st, (const uint64_t[]){20}, 1, out);
    cr_assert_arr_eq(out, w, sizeof(w), "pull after push returns the updated row");
}

/* Initial values depend on (seed, table, key) only: a second store (a restart, another shard)
 * reads the same; another table id or seed reads differently. */
Test(store, initial_values_are_deterministic) {
    ps_table_spec t = spec_of(1, 16, uniform_init);
    const size_t n = 1000;
    uint64_t *keys = malloc(n * sizeof(*keys));
    float *a = malloc(n * 16 * sizeof(float)), *b = malloc(n * 16 * sizeof(float));
    cr_assert(keys && a && b);
    for (size_t i = 0; i < n; i++) keys[i] = ps_mix64(i) >> (i % 64);

    st = make(&t, SEED);
    pull(st, keys, n, a);
    /* rows created in between do not shift anyone else's initial value */
    float g[16] = {1};
    for (uint64_t k = 1000000; k < 1000100; k++) push(st, &k, g, 1);
    pull(st, keys, n, b);
    cr_assert_arr_eq(a, b, n * 16 * sizeof(float), "initial values changed with other rows");
    ps_store_destroy(st);
    st = make(&t, SEED); /* restart */
    pull(st, keys, n, b);
    cr_assert_arr_eq(a, b, n * 16 * sizeof(float), "a restarted store reads other values");
    /* in reverse order, one at a time */
    for (size_t i = n; i-- > 0;) {
        float one[16];
        pull(st, &keys[i], 1, one);
        cr_assert_arr_eq(one, a + 16 * i, sizeof(one));
    }

    ps_table_spec t2 = spec_of(2, 16, uniform_init);
    ps_store *other = make(&t2, SEED);
    pull(other, keys, n, b);
    size_t same = 0;
    for (size_t i = 0; i < n * 16; i++) same += bits(a[i]) == bits(b[i]);
    cr_assert_lt(same, n, "table 2 reads table 1's values (%zu of %zu equal)", same, n * 16);
    ps_store_destroy(other);

    other = make(&t, SEED + 1);
    pull(other, keys, n, b);
    same = 0;
    for (size_t i = 0; i < n * 16; i++) same += bits(a[i]) == bits(b[i]);
    cr_assert_lt(same, n, "another seed reads the same values (%zu equal)", same);
    ps_store_destroy(other);
    free(keys);
    free(a);
    free(b);
}

/* Pulls n keys (0..n-1 scrambled) of a fresh store; returns the values, (n, dim). */
static float *pull_many(const ps_init_spec *init, uint32_t dim, size_t n) {
    ps_table_spec t = spec_of(0, dim, *init);
    st = make(&t, SEED);
    uint64_t *keys = malloc(n * sizeof(*keys));
    float *out = malloc(n * dim * sizeof(float));
    cr_assert(keys && out);
    for (size_t i = 0; i < n; i++) keys[i] = ps_mix64(i + 77);
    pull(st, keys, n, out);
    cr_assert_eq(ps_store_rows(st), 0);
    free(keys);
    return out;
}

Test(store, init_zeros) {
    ps_init_spec init = {.kind = PS_INIT_ZEROS};
    float *v = pull_many(&init, 8, 1000);
    for (size_t i = 0; i < 8000; i++) cr_assert_eq(bits(v[i]), 0, "[%zu] = %g", i, (double)v[i]);
    free(v);
}

Test(store, init_constant) {
    ps_init_spec init = {.kind = PS_INIT_CONSTANT, .a = -0.375};
    float *v = pull_many(&init, 8, 1000);
    for (size_t i = 0; i < 8000; i++) cr_assert_eq(v[i], -0.375f, "[%zu] = %g", i, (double)v[i]);
    free(v);
}

Test(store, init_uniform_within_bounds) {
    ps_init_spec init = {.kind = PS_INIT_UNIFORM, .a = -0.2, .b = 0.6};
    const size_t n = 20000 * 8;
    float *v = pull_many(&init, 8, 20000);
    double sum = 0, lo = 1, hi = -1;
    for (size_t i = 0; i < n; i++) {
        cr_assert(v[i] >= -0.2f && v[i] <= 0.6f, "[%zu] = %g outside [-0.2, 0.6]", i,
                  (double)v[i]);
        sum += v[i], lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
    }
    double mean = sum / (double)n, sd = 0.8 / sqrt(12.0);
    cr_assert(fabs(mean - 0.2) < 5 * sd / sqrt((double)n), "mean %g, want 0.2", mean);
    cr_assert(lo < -0.199 && hi > 0.599, "range [%g, %g] does not fill [-0.2, 0.6]", lo, hi);
    /* coordinates of one row are not copies of each other */
    cr_assert_neq(bits(v[0]), bits(v[1]));
    free(v);
}

Test(store, init_normal_mean_and_stddev) {
    ps_init_spec init = {.kind = PS_INIT_NORMAL, .stddev = 0.05};
    const size_t n = 20000 * 8;
    float *v = pull_many(&init, 8, 20000);
    double sum = 0, sq = 0;
    size_t within1 = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(isfinite(v[i]), "[%zu] not finite", i);
        sum += v[i], sq += (double)v[i] * v[i];
        within1 += fabs(v[i]) < 0.05;
    }
    double mean = sum / (double)n, sd = sqrt(sq / (double)n - mean * mean);
    cr_assert(fabs(mean) < 5 * 0.05 / sqrt((double)n), "mean %g, want 0", mean);
    cr_assert(fabs(sd - 0.05) < 0.02 * 0.05, "stddev %g, want 0.05", sd);
    double frac = (double)within1 / (double)n; /* 0.6827 for a normal, 0.577 for a uniform */
    cr_assert(fabs(frac - 0.6827) < 0.01, "%.4f of the values within 1 sd, want 0.6827", frac);
    free(v);
}

Test(store, init_glorot_within_limit) {
    ps_init_spec init = {.kind = PS_INIT_GLOROT_UNIFORM, .fan_in = 100, .fan_out = 20};
    const size_t n = 10000 * 20;
    float *v = pull_many(&init, 20, 10000);
    const float limit = (float)sqrt(6.0 / (100 + 20));
    double lo = 1, hi = -1, sum = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(fabsf(v[i]) <= limit, "[%zu] = %g outside +-%g", i, (double)v[i],
                  (double)limit);
        lo = fmin(lo, v[i]), hi = fmax(hi, v[i]), sum += v[i];
    }
    cr_assert(lo < -0.99 * limit && hi > 0.99 * limit, "range [%g, %g], limit %g", lo, hi,
              (double)limit);
    cr_assert(fabs(sum / (double)n) < 5 * limit / sqrt(3.0 * (double)n), "mean %g",
              sum / (double)n);
    free(v);
}

/* --- pushes --------------------------------------------------------------------------------- */

typedef struct {
    char name[40];
    int form;
    double lr, eps, g0, lr_decay, wd;
    int rowwise;
    uint32_t dim;
} push_case;

ParameterizedTestParameters(store, push_applies_adagrad_exactly) {
    static push_case cases[] = {
        {"pytorch", PS_ADAGRAD_PYTORCH, 0.1, 1e-10, 0.0, 0, 0, 0, 5},
        {"pytorch G0 + weight decay", PS_ADAGRAD_PYTORCH, 0.05, 1e-8, 0.1, 0, 0.01, 0, 7},
        {"pytorch lr_decay", PS_ADAGRAD_PYTORCH, 0.1, 1e-10, 0.0, 0.5, 0, 0, 3},
        {"pytorch rowwise", PS_ADAGRAD_PYTORCH, 0.1, 1e-10, 0.0, 0, 0, 1, 16},
        {"keras", PS_ADAGRAD_KERAS, 0.001, 1e-7, 0.1, 0, 0, 0, 4},
        {"keras rowwise", PS_ADAGRAD_KERAS, 0.01, 1e-7, 0.1, 0, 0, 1, 9},
    };
    return cr_make_param_array(push_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* Three rounds of pushes over overlapping key sets: each pushed row equals a hand-run of
 * ps_adagrad_update on copies; every row not pushed in a round is bit-identical after it. */
ParameterizedTest(push_case *c, store, push_applies_adagrad_exactly) {
    ps_table_spec t = spec_of(4, c->dim, uniform_init);
    t.opt = (ps_adagrad_config){.form = (ps_adagrad_form)c->form, .learning_rate = c->lr,
                                .epsilon = c->eps, .initial_accumulator_value = c->g0,
                                .lr_decay = c->lr_decay, .weight_decay = c->wd,
                                .rowwise = c->rowwise};
    st = make(&t, SEED);
    const size_t n_keys = 50, dim = c->dim;
    const size_t state = ps_adagrad_state_len(&t.opt, dim);
    float w[50][MAX_DIM], acc[50][MAX_DIM];
    uint64_t steps[50] = {0};
    for (size_t i = 0; i < n_keys; i++) {
        ps_init_row(&t.init, SEED, t.id, 1000 + i, w[i], t.dim);
        ps_adagrad_init_state(&t.opt, acc[i], dim);
    }
    for (int round = 0; round < 3; round++) {
        uint64_t keys[50];
        float g[50 * MAX_DIM];
        size_t n = 0;
        bool pushed[50] = {false};
        for (size_t i = 0; i < n_keys; i++) {
            if ((i + (size_t)round) % 3 == 0) continue; /* each round skips a different third */
            keys[n] = 1000 + i;
            for (size_t d = 0; d < dim; d++) g[n * dim + d] = grad_of(keys[n] + round, d);
            n++;
            pushed[i] = true;
        }
        push(st, keys, g, n);
        for (size_t j = 0; j < n; j++) {
            size_t i = keys[j] - 1000;
            ps_adagrad_update(&t.opt, w[i], acc[i], g + j * dim, dim, ++steps[i]);
        }
        for (size_t i = 0; i < n_keys; i++) {
            if (steps[i] == 0) {
                cr_assert_not(ps_store_get(st, 1000 + i, NULL, NULL));
                continue;
            }
            char what[64];
            snprintf(what, sizeof(what), "%s round %d (%s)", c->name, round,
                     pushed[i] ? "pushed" : "untouched");
            assert_row_bits(st, 1000 + i, w[i], acc[i], what);
        }
    }
    cr_assert_eq(state, c->rowwise ? 1 : dim);
}

/* Duplicate keys in one push are summed (in push order) and applied once. */
Test(store, duplicate_keys_are_summed_first) {
    ps_table_spec t = spec_of(0, 3, uniform_init);
    const float g1[3] = {0.5f, -1.0f, 0.125f}, g2[3] = {0.3f, 2.0f, -0.7f};
    float both[6], sum[3];
    memcpy(both, g1, sizeof(g1));
    memcpy(both + 3, g2, sizeof(g2));
    for (int d = 0; d < 3; d++) sum[d] = g1[d] + g2[d];
    const uint64_t k = 42;

    ps_store *a = make(&t, SEED), *b = make(&t, SEED), *c = make(&t, SEED);
    push(a, (const uint64_t[]){k, k}, both, 2);
    push(b, &k, sum, 1);
    push(c, &k, g1, 1);
    push(c, &k, g2, 1);
    cr_assert_eq(ps_store_rows(a), 1);
    float wa[3], aa[3], wb[3], ab[3], wc[3];
    cr_assert(ps_store_get(a, k, wa, aa));
    cr_assert(ps_store_get(b, k, wb, ab));
    cr_assert(ps_store_get(c, k, wc, NULL));
    cr_assert_arr_eq(wa, wb, sizeof(wa), "push [k, k] != push [k] of g1 + g2");
    cr_assert_arr_eq(aa, ab, sizeof(aa));
    cr_assert(memcmp(wa, wc, sizeof(wa)) != 0, "summing equals two sequential steps?");
    ps_store_destroy(a);
    ps_store_destroy(b);
    ps_store_destroy(c);
}

/* Duplicates mixed with unique keys, three of one key, and keys seen in an earlier push. */
Test(store, duplicates_among_unique_keys) {
    ps_table_spec t = spec_of(0, 4, uniform_init);
    t.opt.lr_decay = 0.25; /* and one step per push for a duplicated row */
    st = make(&t, SEED);
    push(st, (const uint64_t[]){7}, (const float[]){1, 1, 1, 1}, 1);
    const uint64_t keys[8] = {5, 7, 6, 7, 9, 5, 7, 8};
    float g[8 * 4];
    for (size_t i = 0; i < 8 * 4; i++) g[i] = grad_of(i, 0);
    push(st, keys, g, 8);
    cr_assert_eq(ps_store_rows(st), 5);

    const uint64_t uniq[5] = {5, 6, 7, 8, 9};
    for (int u = 0; u < 5; u++) {
        float w[4], acc[4], s[4] = {0};
        bool first = true;
        for (int i = 0; i < 8; i++) {
            if (keys[i] != uniq[u]) continue;
            for (int d = 0; d < 4; d++) s[d] = first ? g[i * 4 + d] : s[d] + g[i * 4 + d];
            first = false;
        }
        ps_init_row(&t.init, SEED, t.id, uniq[u], w, 4);
        ps_adagrad_init_state(&t.opt, acc, 4);
        uint64_t step = 1;
        if (uniq[u] == 7) ps_adagrad_update(&t.opt, w, acc, (const float[]){1, 1, 1, 1}, 4, step++);
        ps_adagrad_update(&t.opt, w, acc, s, 4, step);
        assert_row_bits(st, uniq[u], w, acc, "mixed duplicates");
    }
}

/* lr_decay: clr = lr / (1 + (step - 1) * lr_decay) with step counted per row, not per store. */
Test(store, lr_decay_steps_per_row) {
    ps_table_spec t = spec_of(0, 2, uniform_init);
    t.opt.lr_decay = 0.5;
    st = make(&t, SEED);
    cr_assert_eq(ps_store_row_bytes(st), 8 + 4 * (2 + 2) + 4, "key, w, acc, step");
    const float g[2] = {0.5f, -0.25f};
    const uint64_t a = 1, b = 2;
    push(st, &a, g, 1);
    push(st, &b, g, 1);
    push(st, &a, g, 1);
    push(st, &a, g, 1);
    push(st, &b, g, 1);
    float ga[3 * 2], gb[2 * 2], w[2], acc[2];
    for (int i = 0; i < 3; i++) memcpy(ga + 2 * i, g, sizeof(g));
    for (int i = 0; i < 2; i++) memcpy(gb + 2 * i, g, sizeof(g));
    expect_row(&t, SEED, a, ga, 3, w, acc);
    assert_row_bits(st, a, w, acc, "a after steps 1..3");
    expect_row(&t, SEED, b, gb, 2, w, acc);
    assert_row_bits(st, b, w, acc, "b after steps 1..2 (not 2 and 5)");

    /* the same row with a store-wide step count would differ: check the test can tell */
    float w_wrong[2], acc_wrong[2];
    ps_init_row(&t.init, SEED, t.id, b, w_wrong, 2);
    ps_adagrad_init_state(&t.opt, acc_wrong, 2);
    ps_adagrad_update(&t.opt, w_wrong, acc_wrong, g, 2, 2);
    ps_adagrad_update(&t.opt, w_wrong, acc_wrong, g, 2, 5);
    cr_assert(memcmp(w, w_wrong, sizeof(w)) != 0);
}

/* Keys and grads at odd addresses (as they sit in a frame) give the same rows; pull writes to an
 * odd address. */
Test(store, unaligned_buffers) {
    ps_table_spec t = spec_of(0, 5, uniform_init);
    const size_t n = 333, dim = 5;
    uint64_t *keys = malloc(n * 8);
    float *grads = malloc(n * dim * 4);
    uint8_t *ukeys = malloc(n * 8 + 1), *ugrads = malloc(n * dim * 4 + 1);
    uint8_t *uout = malloc(n * dim * 4 + 1);
    float *out = malloc(n * dim * 4);
    cr_assert(keys && grads && ukeys && ugrads && uout && out);
    for (size_t i = 0; i < n; i++) {
        keys[i] = ps_mix64(i) % 200; /* some duplicates too */
        for (size_t d = 0; d < dim; d++) grads[i * dim + d] = grad_of(i, d);
    }
    memcpy(ukeys + 1, keys, n * 8);
    memcpy(ugrads + 1, grads, n * dim * 4);

    ps_store *aligned = make(&t, SEED);
    st = make(&t, SEED);
    push(aligned, keys, grads, n);
    ps_error err = {0};
    cr_assert_eq(ps_store_push(st, ukeys + 1, ugrads + 1, n, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_store_rows(st), ps_store_rows(aligned));
    /* a second, duplicate-free push through the fast path */
    uint64_t fresh[10];
    for (int i = 0; i < 10; i++) fresh[i] = 1000 + (uint64_t)i;
    memcpy(ukeys + 1, fresh, sizeof(fresh));
    cr_assert_eq(ps_store_push(st, ukeys + 1, ugrads + 1, 10, &err), PS_OK, "%s", err.msg);
    push(aligned, fresh, grads, 10);

    for (size_t i = 0; i < n + 10; i++) {
        uint64_t k = i < n ? keys[i] : fresh[i - n];
        float w[MAX_DIM], acc[MAX_DIM];
        cr_assert(ps_store_get(aligned, k, w, acc));
        assert_row_bits(st, k, w, acc, "unaligned push");
    }
    memcpy(ukeys + 1, keys, n * 8);
    ps_store_pull(st, ukeys + 1, n, uout + 1);
    pull(aligned, keys, n, out);
    cr_assert_arr_eq(uout + 1, out, n * dim * 4, "unaligned pull differs");
    ps_store_destroy(aligned);
    free(keys);
    free(grads);
    free(ukeys);
    free(ugrads);
    free(uout);
    free(out);
}

/* 300k rows arrive in pushes of varied size, so the index doubles many times between and inside
 * pushes; afterwards every row is there and holds init + its one update. */
Test(store, many_rehashes_lose_no_row) {
    ps_table_spec t = spec_of(9, 4, uniform_init);
    st = make(&t, SEED);
    const size_t n = 300000, dim = 4;
    const size_t sizes[] = {1, 2, 3, 7, 16, 17, 100, 999, 4096, 10007, 31, 65536};
    uint64_t *keys = malloc(n * sizeof(*keys));
    float *g = malloc(n * dim * sizeof(float));
    cr_assert(keys && g);
    for (size_t i = 0; i < n; i++) {
        /* half scattered, half dense runs: both hash well only if the slot hash mixes */
        keys[i] = i % 2 ? ps_mix64(i) : (uint64_t)i << 20;
        for (size_t d = 0; d < dim; d++) g[i * dim + d] = grad_of(keys[i], d);
    }
    size_t at = 0, which = 0;
    while (at < n) {
        size_t m = sizes[which++ % (sizeof(sizes) / sizeof(sizes[0]))];
        if (m > n - at) m = n - at;
        push(st, keys + at, g + at * dim, m);
        at += m;
        cr_assert_eq(ps_store_rows(st), at);
    }
    for (size_t i = 0; i < n; i++) {
        float w[4], acc[4];
        expect_row(&t, SEED, keys[i], g + i * dim, 1, w, acc);
        float gw[4], ga[4];
        cr_assert(ps_store_get(st, keys[i], gw, ga), "row %zu (key %#llx) lost", i,
                  (unsigned long long)keys[i]);
        if (memcmp(gw, w, sizeof(w)) != 0 || memcmp(ga, acc, sizeof(acc)) != 0)
            cr_assert_fail("row %zu (key %#llx) holds the wrong values", i,
                           (unsigned long long)keys[i]);
    }
    float *out = malloc(n * dim * sizeof(float));
    cr_assert_not_null(out);
    pull(st, keys, n, out);
    for (size_t i = 0; i < n; i++) {
        float w[4];
        ps_store_get(st, keys[i], w, NULL);
        if (memcmp(out + i * dim, w, sizeof(w)) != 0) cr_assert_fail("pull of row %zu differs", i);
    }
    cr_assert_not(ps_store_get(st, 1, NULL, NULL));
    cr_assert_eq(ps_store_rows(st), n);
    free(out);
    free(keys);
    free(g);
}

/* Memory: 1M rows of dim 16 cost at most 1.3x the row payload (key + weights + accumulators). */
Test(store, bytes_per_row_overhead) {
    ps_table_spec t = spec_of(0, 16, uniform_init);
    st = make(&t, SEED);
    cr_assert_eq(ps_store_row_bytes(st), 8 + 2 * 16 * 4);
    const size_t n = 1000000, batch = 50000, dim = 16;
    uint64_t *keys = malloc(batch * sizeof(*keys));
    float *g = calloc(batch * dim, sizeof(float));
    cr_assert(keys && g);
    for (size_t base = 0; base < n; base += batch) {
        for (size_t i = 0; i < batch; i++) keys[i] = ps_mix64(base + i);
        push(st, keys, g, batch);
    }
    cr_assert_eq(ps_store_rows(st), n);
    double payload = (double)n * (8 + 2 * dim * 4), ratio = (double)ps_store_bytes(st) / payload;
    cr_log_info("1M rows, dim 16: %zu bytes, %.3f x payload", ps_store_bytes(st), ratio);
    cr_assert_geq(ratio, 1.0, "ps_store_bytes counts less than the rows themselves");
    cr_assert_leq(ratio, 1.3, "%.3f x the row payload", ratio);
    free(keys);
    free(g);
}

/* Row-wise tables: one accumulator per row, and the row is correspondingly smaller. */
Test(store, rowwise_table) {
    ps_table_spec t = spec_of(0, 16, uniform_init);
    t.opt.rowwise = true;
    t.opt.initial_accumulator_value = 0.5;
    st = make(&t, SEED);
    cr_assert_eq(ps_store_row_bytes(st), 8 + 4 * (16 + 1), "key, w, one accumulator: no padding");
    float g[2 * 16];
    for (int i = 0; i < 32; i++) g[i] = grad_of((uint64_t)i, 1);
    push(st, (const uint64_t[]){3, 4}, g, 2);
    push(st, (const uint64_t[]){3}, g + 16, 1);
    float w[16], acc[16];
    float g3[2 * 16];
    memcpy(g3, g, 16 * sizeof(float));
    memcpy(g3 + 16, g + 16, 16 * sizeof(float));
    expect_row(&t, SEED, 3, g3, 2, w, acc);
    float got_acc[16];
    memset(got_acc, 0xff, sizeof(got_acc));
    cr_assert(ps_store_get(st, 3, NULL, got_acc));
    cr_assert_eq(bits(got_acc[0]), bits(acc[0]));
    cr_assert_eq(bits(got_acc[1]), 0xffffffffu, "ps_store_get wrote past the 1-float state");
    assert_row_bits(st, 3, w, acc, "rowwise key 3");
    expect_row(&t, SEED, 4, g + 16, 1, w, acc);
    assert_row_bits(st, 4, w, acc, "rowwise key 4");
}

/* The bytes reported grow with the rows. */
Test(store, bytes_grow_with_rows) {
    ps_table_spec t = spec_of(0, 8, uniform_init);
    st = make(&t, SEED);
    size_t empty = ps_store_bytes(st);
    cr_assert_gt(empty, 0);
    float g[8] = {0};
    for (uint64_t k = 0; k < 5000; k++) push(st, &k, g, 1);
    cr_assert_geq(ps_store_bytes(st), empty + 5000 * ps_store_row_bytes(st));
}

/* --- a pool of threads changes nothing but speed ---------------------------------------------- */

/* Pushes of 50k keys (new rows, existing rows, then a push with duplicates) and pulls with keys
 * that have no row, through a serial store and one on a 3-thread pool: the same bits everywhere. */
Test(store, pool_gives_identical_rows_and_pulls) {
    ps_table_spec t = spec_of(4, 8, uniform_init);
    t.opt.lr_decay = 0.01; /* the per-row step counter must also advance once per push */
    ps_error err = {0};
    ps_pool *pool = NULL;
    cr_assert_eq(ps_pool_create(3, &pool, &err), PS_OK, "%s", err.msg);
    ps_store *serial = make(&t, SEED);
    st = make(&t, SEED);
    cr_assert_eq(ps_store_set_pool(st, pool, &err), PS_OK, "%s", err.msg);

    const size_t n = 50000, dim = 8;
    uint64_t *keys = malloc(2 * n * sizeof(*keys));
    float *g = malloc(2 * n * dim * sizeof(float));
    float *a = malloc(2 * n * dim * sizeof(float)), *b = malloc(2 * n * dim * sizeof(float));
    cr_assert(keys && g && a && b);
    for (size_t i = 0; i < 2 * n; i++) {
        keys[i] = ps_mix64(i + 77);
        for (size_t d = 0; d < dim; d++) g[i * dim + d] = grad_of(keys[i], d);
    }
    /* round 1: keys [0, n) are new; round 2: [n/2, 3n/2) half existing, half new */
    for (size_t round = 0; round < 2; round++) {
        const uint64_t *k = keys + round * n / 2;
        push(serial, k, g, n);
        push(st, k, g, n);
    }
    /* round 3: duplicates (every key twice) take the slow path on both */
    memcpy(keys + n, keys, n * sizeof(*keys));
    push(serial, keys, g, 2 * n);
    push(st, keys, g, 2 * n);
    cr_assert_eq(ps_store_rows(st), ps_store_rows(serial));

    /* pull everything plus n keys that have no row */
    for (size_t i = 0; i < 2 * n; i++) keys[i] = ps_mix64(i + 77 + (i >= 3 * n / 2 ? n : 0));
    pull(serial, keys, 2 * n, a);
    pull(st, keys, 2 * n, b);
    for (size_t i = 0; i < 2 * n * dim; i++)
        if (bits(a[i]) != bits(b[i]))
            cr_assert_fail("pull [%zu]: pooled %a, serial %a", i, (double)b[i], (double)a[i]);
    for (size_t i = 0; i < 3 * n / 2; i++) {
        float wa[8], aa[8], wb[8], ab[8];
        cr_assert(ps_store_get(serial, keys[i], wa, aa) && ps_store_get(st, keys[i], wb, ab));
        if (memcmp(wa, wb, sizeof(wa)) != 0 || memcmp(aa, ab, sizeof(aa)) != 0)
            cr_assert_fail("row of key %zu differs between pooled and serial", i);
    }
    ps_store_destroy(serial);
    ps_store_destroy(st);
    st = NULL;
    ps_pool_destroy(pool);
    free(keys), free(g), free(a), free(b);
}

/* --- put and ordered scan (loading and exporting saved weights) ------------------------------- */

static ps_table_spec spec_decay(uint32_t dim, double lr_decay) {
    ps_table_spec t = spec_of(0, dim, uniform_init);
    t.opt.lr_decay = lr_decay;
    return t;
}

static void put(ps_store *s, uint64_t key, const float *w, const float *acc, uint32_t step) {
    ps_error err = {0};
    cr_assert_eq(ps_store_put(s, key, w, acc, step, &err), PS_OK, "%s", err.msg);
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Whatever the bits (-0, a subnormal, a NaN with a payload, infinity), a get returns them. */
Test(store, put_then_get_returns_the_exact_bits) {
    ps_table_spec t = spec_decay(5, 0.5);
    st = make(&t, SEED);
    const float w[5] = {from_bits(0x80000000u), from_bits(0x00000001u), from_bits(0x7fc12345u),
                        from_bits(0xff800000u), 0.1f};
    const float acc[5] = {from_bits(0x3dcccccdu), 0, 1e30f, from_bits(0x00400000u), 7};
    put(st, 99, w, acc, 7);
    cr_assert_eq(ps_store_rows(st), 1);
    float gw[5], ga[5];
    uint32_t step = 0;
    cr_assert(ps_store_get_row(st, 99, gw, ga, &step));
    for (int d = 0; d < 5; d++) {
        cr_assert_eq(bits(gw[d]), bits(w[d]), "w[%d]", d);
        cr_assert_eq(bits(ga[d]), bits(acc[d]), "acc[%d]", d);
    }
    cr_assert_eq(step, 7);
    cr_assert_not(ps_store_get_row(st, 98, gw, ga, &step));
    cr_assert(ps_store_get_row(st, 99, NULL, NULL, NULL));

    /* a store without lr_decay keeps no step: it reads 0 */
    ps_table_spec t2 = spec_decay(5, 0);
    ps_store *s2 = make(&t2, SEED);
    put(s2, 99, w, acc, 7);
    step = 123;
    cr_assert(ps_store_get_row(s2, 99, gw, NULL, &step));
    cr_assert_eq(step, 0);
    cr_assert_arr_eq(gw, w, sizeof(w));
    ps_store_destroy(s2);
}

/* A put replaces a pushed row (weights, accumulator and step) without adding a row. */
Test(store, put_overwrites_an_existing_row) {
    ps_table_spec t = spec_decay(3, 0.25);
    st = make(&t, SEED);
    const float g[3] = {0.5f, -1, 2};
    push(st, (const uint64_t[]){4, 5}, (const float[]){0.5f, -1, 2, 1, 1, 1}, 2);
    push(st, (const uint64_t[]){4}, g, 1);
    uint32_t step;
    cr_assert(ps_store_get_row(st, 4, NULL, NULL, &step));
    cr_assert_eq(step, 2, "two pushes");
    const float w[3] = {1, 2, 3}, acc[3] = {4, 5, 6};
    put(st, 4, w, acc, 11);
    cr_assert_eq(ps_store_rows(st), 2);
    float gw[3], ga[3];
    cr_assert(ps_store_get_row(st, 4, gw, ga, &step));
    cr_assert_arr_eq(gw, w, sizeof(w));
    cr_assert_arr_eq(ga, acc, sizeof(acc));
    cr_assert_eq(step, 11);
    /* the other row is untouched */
    float w5[3], a5[3];
    expect_row(&t, SEED, 5, (const float[]){1, 1, 1}, 1, w5, a5);
    assert_row_bits(st, 5, w5, a5, "row 5 after a put on row 4");
}

/* acc NULL: the table's initial accumulator value, one float per row when rowwise. */
Test(store, put_without_accumulator_gives_the_initial_one) {
    ps_table_spec t = spec_of(0, 4, uniform_init);
    t.opt = (ps_adagrad_config){.form = PS_ADAGRAD_KERAS, .learning_rate = 0.01, .epsilon = 1e-7,
                                .initial_accumulator_value = 0.1};
    st = make(&t, SEED);
    cr_assert_eq(ps_store_state_len(st), 4);
    const float w[4] = {1, 2, 3, 4};
    push(st, (const uint64_t[]){8}, (const float[]){9, 9, 9, 9}, 1); /* acc no longer 0.1 */
    put(st, 8, w, NULL, 0);
    put(st, 9, w, NULL, 0);
    for (uint64_t k = 8; k <= 9; k++) {
        float ga[4];
        cr_assert(ps_store_get(st, k, NULL, ga));
        for (int d = 0; d < 4; d++) cr_assert_eq(bits(ga[d]), 0x3dcccccdu, "key %d acc[%d] = %a",
                                                 (int)k, d, (double)ga[d]); /* 0.1f */
    }

    ps_table_spec r = t;
    r.opt.rowwise = true, r.opt.initial_accumulator_value = 0.5;
    ps_store *s2 = make(&r, SEED);
    cr_assert_eq(ps_store_state_len(s2), 1);
    put(s2, 1, w, NULL, 0);
    float ga[4];
    memset(ga, 0xff, sizeof(ga));
    cr_assert(ps_store_get(s2, 1, NULL, ga));
    cr_assert_eq(ga[0], 0.5f);
    cr_assert_eq(bits(ga[1]), 0xffffffffu, "rowwise state is one float");
    const float acc1 = 2.5f;
    put(s2, 2, w, &acc1, 0);
    cr_assert(ps_store_get(s2, 2, NULL, ga));
    cr_assert_eq(ga[0], 2.5f);
    ps_store_destroy(s2);
}

/* A push after a put continues from the put state. PyTorch form, lr 0.1, eps 1e-10: w = 1, G = 0,
 * g = 0.5 -> G = 0.25, w = 1 + (-0.1f * 0.5f) / (sqrt(0.25f) + 1e-10f) = 0.9f (0x3f666666);
 * from G = 0.75 instead: G = 1, w = 0.95f (0x3f733333); all computed in numpy float32. With
 * lr_decay 0.5 and a saved step of 3 the push is step 4: clr = 0.1 / (1 + 3 * 0.5) = 0.04 ->
 * w = 0.96f (0x3f75c28f). */
Test(store, push_continues_from_a_put) {
    ps_table_spec t = spec_of(0, 2, uniform_init);
    st = make(&t, SEED);
    const float one[2] = {1, 1}, zero[2] = {0, 0}, g[2] = {0.5f, 0.5f};
    put(st, 3, one, zero, 0);
    put(st, 4, one, NULL, 0); /* initial_accumulator_value 0 */
    put(st, 5, one, (const float[]){0.75f, 0.75f}, 0);
    push(st, (const uint64_t[]){3, 4, 5}, (const float[]){0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f}, 3);
    for (uint64_t k = 3; k <= 5; k++) {
        float w[2], acc[2];
        cr_assert(ps_store_get(st, k, w, acc));
        for (int d = 0; d < 2; d++) {
            cr_assert_eq(bits(w[d]), k == 5 ? 0x3f733333u : 0x3f666666u, "key %d w = %a", (int)k,
                         (double)w[d]);
            cr_assert_eq(acc[d], k == 5 ? 1.0f : 0.25f);
        }
    }

    ps_table_spec td = spec_decay(2, 0.5);
    ps_store *s2 = make(&td, SEED);
    put(s2, 3, one, zero, 3);
    push(s2, (const uint64_t[]){3}, g, 1);
    float w[2];
    uint32_t step;
    cr_assert(ps_store_get_row(s2, 3, w, NULL, &step));
    cr_assert_eq(bits(w[0]), 0x3f75c28fu, "w = %a: the saved step was not used", (double)w[0]);
    cr_assert_eq(step, 4);
    ps_store_destroy(s2);
}

Test(store, sorted_keys_of_an_empty_table) {
    ps_table_spec t = spec_of(0, 4, uniform_init);
    st = make(&t, SEED);
    uint64_t *keys = (uint64_t *)1;
    size_t n = 99;
    ps_error err = {0};
    cr_assert_eq(ps_store_sorted_keys(st, &keys, &n, &err), PS_OK);
    cr_assert_null(keys);
    cr_assert_eq(n, 0);
}

static int cmp_key(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* 100k random keys (and 0, 2^63, 2^64-1), half put and half pushed with duplicates: the scan is
 * the sorted set of the keys given, each once. */
Test(store, sorted_keys_of_100k_random_keys) {
    ps_table_spec t = spec_of(0, 2, uniform_init);
    st = make(&t, SEED);
    const size_t n = 100000;
    uint64_t *keys = malloc(n * sizeof(*keys));
    float *g = calloc(n * 2, sizeof(float));
    cr_assert(keys && g);
    for (size_t i = 0; i < n; i++) keys[i] = ps_mix64(i % 90000 + 5); /* 10k repeats */
    keys[1] = 0, keys[2] = 1ull << 63, keys[3] = UINT64_MAX;
    const float w[2] = {1, 2};
    for (size_t i = 0; i < n / 2; i++) put(st, keys[i], w, NULL, 0);
    push(st, keys + n / 2, g, n - n / 2);

    qsort(keys, n, sizeof(*keys), cmp_key);
    size_t uniq = 0;
    for (size_t i = 0; i < n; i++)
        if (uniq == 0 || keys[i] != keys[uniq - 1]) keys[uniq++] = keys[i];
    cr_assert_lt(uniq, n - 9000, "test setup: the pushes must repeat keys");

    uint64_t *got = NULL;
    size_t n_got = 0;
    ps_error err = {0};
    cr_assert_eq(ps_store_sorted_keys(st, &got, &n_got, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(n_got, ps_store_rows(st));
    cr_assert_eq(n_got, uniq, "%zu keys, %zu distinct were stored", n_got, uniq);
    cr_assert_eq(got[0], 0);
    cr_assert_eq(got[n_got - 1], UINT64_MAX);
    for (size_t i = 0; i < n_got; i++)
        if (got[i] != keys[i])
            cr_assert_fail("key %zu is %#llx, want %#llx", i, (unsigned long long)got[i],
                           (unsigned long long)keys[i]);
    free(got);
    free(keys);
    free(g);
}
