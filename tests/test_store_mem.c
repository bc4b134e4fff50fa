/* test_store_mem.c - server/store.c memory control: admission (a key's Nth push creates its row
 * and applies only that push's gradient), expiry by steps and seconds (expired rows read initial,
 * their places are reused), LRU eviction and the growth bound, the stats counters, and that an
 * evicted row's key is absent from the ordered scan. Expected weights are worked by hand:
 * zeros init, lr 0.1, eps 1e-10, so one step with gradient g gives acc = g^2 and
 * w = -0.1 * g / |g| = -0.1 * sign(g) in float32 (1e-10 is below half an ulp of |g| here). */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

static ps_store *st;
static void setup(void) { st = NULL; }
static void teardown(void) { ps_store_destroy(st); }
TestSuite(store_mem, .init = setup, .fini = teardown, .timeout = 60);

#define DIM 2

static ps_table_spec spec_mem(ps_table_memory mem) {
    ps_table_spec t = {.id = 0, .dim = DIM, .init = {.kind = PS_INIT_ZEROS}, .mem = mem};
    snprintf(t.name, sizeof(t.name), "emb");
    t.opt = (ps_adagrad_config){.form = PS_ADAGRAD_PYTORCH, .learning_rate = 0.1,
                                .epsilon = 1e-10, .initial_accumulator_value = 0.0};
    return t;
}

static ps_store *make(ps_table_memory mem) {
    ps_table_spec t = spec_mem(mem);
    ps_store *s = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_store_create(&t, 7, &s, &err), PS_OK, "%s", err.msg);
    return s;
}

/* Pushes keys (n), every coordinate of key i's gradient = g[i]. */
static void push_g(ps_store *s, const uint64_t *keys, const float *g, size_t n) {
    float grads[64 * DIM];
    cr_assert_leq(n, 64);
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < DIM; d++) grads[i * DIM + d] = g[i];
    ps_error err = {0};
    cr_assert_eq(ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)grads, n, &err), PS_OK,
                 "%s", err.msg);
}

static void push1(ps_store *s, uint64_t key, float g) { push_g(s, &key, &g, 1); }

static float pulled(ps_store *s, uint64_t key) {
    float w[DIM];
    ps_store_pull(s, (const uint8_t *)&key, 1, (uint8_t *)w);
    cr_assert_eq(w[0], w[1]);
    return w[0];
}

static ps_store_stats stats(const ps_store *s) {
    ps_store_stats x;
    ps_store_get_stats(s, &x);
    return x;
}

/* --- admission ------------------------------------------------------------------------------ */

Test(store_mem, admission_creates_the_row_on_the_nth_push_with_that_push_only) {
    st = make((ps_table_memory){.admit_after = 3});
    push1(st, 5, 1.0f);
    cr_assert_not(ps_store_get(st, 5, NULL, NULL), "a row after 1 push of 3");
    cr_assert_eq(pulled(st, 5), 0.0f, "a pending key pulls its initial row");
    push1(st, 5, 2.0f);
    cr_assert_not(ps_store_get(st, 5, NULL, NULL), "a row after 2 pushes of 3");
    cr_assert_eq(stats(st).pending, 1);
    cr_assert_eq(stats(st).rows, 0);
    push1(st, 5, 0.5f); /* the third: the row, with this gradient alone */
    float w[DIM], acc[DIM];
    cr_assert(ps_store_get(st, 5, w, acc));
    cr_assert_float_eq(acc[0], 0.25f, 0, "acc = 0.5^2 (the gradients 1 and 2 were dropped)");
    cr_assert_float_eq(w[0], -0.1f, 0);
    cr_assert_float_eq(pulled(st, 5), -0.1f, 0);
    /* the next push is an ordinary AdaGrad step: acc 0.5, w = -0.1 - 0.1 * 0.5 / sqrt(0.5) */
    push1(st, 5, 0.5f);
    cr_assert(ps_store_get(st, 5, w, acc));
    cr_assert_float_eq(acc[0], 0.5f, 0);
    cr_assert_float_eq(w[0], -0.17071068f, 1e-7);
    ps_store_stats x = stats(st);
    cr_assert_eq(x.rows, 1);
    cr_assert_eq(x.admitted, 1);
    cr_assert_eq(x.pending, 0);
    cr_assert_eq(x.evicted, 0);
}

/* A key named twice in one push counts once: pushes, not occurrences. Its admitting push sums
 * both occurrences (1 + 1 = 2: acc 4, w -0.1). */
Test(store_mem, admission_counts_pushes_not_occurrences) {
    st = make((ps_table_memory){.admit_after = 2});
    push_g(st, (const uint64_t[]){9, 9, 9}, (const float[]){1, 1, 1}, 3);
    cr_assert_not(ps_store_get(st, 9, NULL, NULL), "three occurrences in one push admitted");
    push_g(st, (const uint64_t[]){9, 4, 9}, (const float[]){1, 3, 1}, 3);
    float w[DIM], acc[DIM];
    cr_assert(ps_store_get(st, 9, w, acc));
    cr_assert_float_eq(acc[0], 4.0f, 0);
    cr_assert_float_eq(w[0], -0.1f, 0);
    cr_assert_not(ps_store_get(st, 4, NULL, NULL), "key 4 was pushed once");
    ps_store_stats x = stats(st);
    cr_assert_eq(x.rows, 1);
    cr_assert_eq(x.pending, 1);
    cr_assert_eq(x.admitted, 1);
}

/* Keys with rows are pushed as usual next to pending ones in the same push. */
Test(store_mem, admission_keeps_gradients_of_rows_in_a_mixed_push) {
    st = make((ps_table_memory){.admit_after = 2});
    push1(st, 1, 1.0f);
    push1(st, 1, 1.0f); /* row 1: acc 1, w -0.1 */
    push_g(st, (const uint64_t[]){2, 1, 3}, (const float[]){-1, 1, 5}, 3);
    float w[DIM], acc[DIM];
    cr_assert(ps_store_get(st, 1, w, acc));
    cr_assert_float_eq(acc[0], 2.0f, 0);
    cr_assert_float_eq(w[0], -0.1f - 0.1f / sqrtf(2.0f), 1e-7);
    cr_assert_eq(pulled(st, 2), 0.0f);
    cr_assert_eq(pulled(st, 3), 0.0f);
    cr_assert_eq(stats(st).pending, 2);
}

/* Pending counts are forgotten after expire_after_steps pushes without the key. */
Test(store_mem, pending_counts_expire) {
    st = make((ps_table_memory){.admit_after = 2, .expire_after_steps = 2});
    push1(st, 8, 1.0f);   /* step 1: count 1 */
    push1(st, 100, 1.0f); /* step 2 */
    push1(st, 101, 1.0f); /* step 3 */
    cr_assert_eq(stats(st).pending, 3);
    push1(st, 102, 1.0f); /* step 4: 8's count is 2 steps old when it starts: swept */
    cr_assert_eq(stats(st).pending, 3, "8's count outlived 2 steps");
    push1(st, 8, 1.0f);   /* step 5: counts 1 again (a remembered count would admit it) */
    cr_assert_not(ps_store_get(st, 8, NULL, NULL));
}

/* A count the sweep has not reached yet is just as forgotten: one push of many new keys leaves
 * more pending entries than a few pushes sweep, yet none of them admits on a second push after
 * expire_after_steps (each counts afresh). */
Test(store_mem, an_aged_count_the_sweep_missed_counts_afresh) {
    st = make((ps_table_memory){.admit_after = 2, .expire_after_steps = 3});
    enum { N = 20000 };
    uint64_t *keys = malloc(N * sizeof(uint64_t));
    float *g = malloc(N * DIM * sizeof(float));
    for (size_t i = 0; i < N; i++) keys[i] = 1000 + i;
    for (size_t i = 0; i < N * DIM; i++) g[i] = 1.0f;
    ps_error err = {0};
    cr_assert_eq(ps_store_push(st, (const uint8_t *)keys, (const uint8_t *)g, N, &err), PS_OK);
    for (uint64_t k = 0; k < 5; k++) push1(st, k, 1.0f); /* steps 2..6: each sweeps a few */
    cr_assert_gt(stats(st).pending, 10000u, "most aged entries not swept yet");
    push_g(st, keys + N - 50, g, 50); /* their second push, 6 steps after the first */
    for (size_t i = N - 50; i < N; i++)
        cr_assert_not(ps_store_get(st, keys[i], NULL, NULL), "key %llu admitted by an aged count",
                      (unsigned long long)keys[i]);
    free(keys), free(g);
}

/* --- expiry --------------------------------------------------------------------------------- */

/* E = 3: a row pushed at step t reads initial once steps t+1..t+3 passed without it. */
Test(store_mem, rows_expire_after_steps_and_their_places_are_reused) {
    st = make((ps_table_memory){.expire_after_steps = 3});
    push_g(st, (const uint64_t[]){1, 2}, (const float[]){1, 1}, 2); /* step 1 */
    const size_t bytes = ps_store_bytes(st);
    push1(st, 2, 1.0f);                                             /* step 2 */
    push1(st, 2, 1.0f);                                             /* step 3 */
    cr_assert_float_eq(pulled(st, 1), -0.1f, 0, "untouched for 2 steps: still there");
    push1(st, 2, 1.0f);                                             /* step 4 */
    cr_assert_eq(pulled(st, 1), 0.0f, "untouched for 3 steps: reads initial");
    cr_assert_not(ps_store_get(st, 1, NULL, NULL));
    uint64_t *keys;
    size_t n;
    cr_assert_eq(ps_store_sorted_keys(st, &keys, &n, NULL), PS_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(keys[0], 2);
    free(keys);
    push1(st, 3, 2.0f);                           /* step 5: the sweep evicts 1; 3 takes its place */
    ps_store_stats x = stats(st);
    cr_assert_eq(x.evicted, 1);
    cr_assert_eq(x.rows, 2);
    cr_assert_eq(ps_store_bytes(st), bytes, "a new row grew the store instead of reusing");
    float w[DIM], acc[DIM];
    cr_assert(ps_store_get(st, 3, w, acc));
    cr_assert_float_eq(acc[0], 4.0f, 0);
    cr_assert_float_eq(w[0], -0.1f, 0);
    /* key 1 comes back as a new row: its old accumulator is gone (acc = 0.25, not 1.25) */
    push1(st, 1, 0.5f);
    cr_assert(ps_store_get(st, 1, w, acc));
    cr_assert_float_eq(acc[0], 0.25f, 0);
    cr_assert_float_eq(w[0], -0.1f, 0);
    cr_assert_eq(stats(st).rows, 3);
}

/* A push that names an expired row evicts it first: the row restarts from its initial value. */
Test(store_mem, a_push_to_an_expired_row_starts_it_over) {
    st = make((ps_table_memory){.expire_after_steps = 1});
    push1(st, 1, 1.0f); /* step 1 */
    push1(st, 2, 1.0f); /* step 2: 1 untouched for 1 step */
    push1(st, 1, 1.0f); /* step 3: evicted first, then a new row (acc 1, not 2) */
    float w[DIM], acc[DIM];
    cr_assert(ps_store_get(st, 1, w, acc));
    cr_assert_float_eq(acc[0], 1.0f, 0);
    cr_assert_float_eq(w[0], -0.1f, 0);
    cr_assert_eq(stats(st).evicted, 1);
    cr_assert_eq(pulled(st, 2), 0.0f, "2 is expired after step 3 (held until swept)");
    cr_assert_eq(stats(st).rows, 2);
}

Test(store_mem, rows_expire_after_seconds) {
    uint64_t now_ms = 5000;
    st = make((ps_table_memory){.expire_after_seconds = 10});
    ps_store_set_clock(st, &now_ms);
    push1(st, 1, 1.0f);
    now_ms = 14999; /* 9.999 s: second 14 - 5 = 9 < 10 */
    cr_assert_float_eq(pulled(st, 1), -0.1f, 0);
    now_ms = 15000;
    cr_assert_eq(pulled(st, 1), 0.0f, "10 s untouched: reads initial");
    push1(st, 2, 1.0f);
    cr_assert_eq(stats(st).evicted, 1);
    cr_assert_eq(stats(st).rows, 1);
}

/* Many rows through a small working set: the store stops growing (evicted places are reused)
 * and the index still finds every live row after many backward-shift deletions. */
Test(store_mem, churn_keeps_memory_flat_and_the_index_consistent) {
    st = make((ps_table_memory){.expire_after_steps = 4});
    uint64_t keys[64];
    float g[64];
    for (int i = 0; i < 64; i++) g[i] = 1.0f;
    size_t bytes_at_50 = 0;
    for (uint64_t step = 0; step < 400; step++) {
        for (int i = 0; i < 64; i++) keys[i] = step * 64 + (uint64_t)i; /* all new each push */
        push_g(st, keys, g, 64);
        if (step == 50) bytes_at_50 = ps_store_bytes(st);
        /* the last 4 pushes' rows are live, each read back */
        for (uint64_t back = 0; back < 4 && back <= step; back++)
            for (int i = 0; i < 64; i += 7)
                cr_assert_float_eq(pulled(st, (step - back) * 64 + (uint64_t)i), -0.1f, 0,
                                   "step %llu: key lost", (unsigned long long)step);
        cr_assert_leq(stats(st).rows, 5 * 64, "4 live pushes + the expired one not swept yet");
    }
    cr_assert_eq(ps_store_bytes(st), bytes_at_50, "the store grew under a flat working set");
    cr_assert_eq(stats(st).evicted + stats(st).rows, 400 * 64);
}

/* --- LRU and the growth bound --------------------------------------------------------------- */

Test(store_mem, lru_evicts_the_least_recently_pushed_rows) {
    st = make((ps_table_memory){.eviction = PS_EVICT_LRU});
    uint64_t keys[64];
    float g[64];
    for (int i = 0; i < 64; i++) keys[i] = (uint64_t)i, g[i] = 1.0f;
    push_g(st, keys, g, 64); /* step 1: rows 0..63 */
    for (int i = 0; i < 60; i++) push_g(st, keys + 32, g, 32); /* keys 32..63 stay fresh */
    cr_assert_eq(ps_store_evict_lru(st, 16), 16);
    cr_assert_eq(stats(st).rows, 48);
    cr_assert_eq(stats(st).evicted, 16);
    /* sampled LRU: 8 samples miss every old row with p < (40/64)^8 < 2.5 % per eviction (the
     * sampler is seeded, so this run is the same every time); allow one miss */
    int fresh_gone = 0;
    for (uint64_t k = 32; k < 64; k++) fresh_gone += !ps_store_get(st, k, NULL, NULL);
    cr_assert_leq(fresh_gone, 1, "%d recently pushed rows evicted", fresh_gone);
    cr_assert_eq(ps_store_evict_lru(st, 1000), 48, "evicts what there is");
    cr_assert_eq(stats(st).rows, 0);
}

Test(store_mem, lru_needs_the_policy) {
    st = make((ps_table_memory){0});
    push1(st, 1, 1.0f);
    cr_assert_eq(ps_store_evict_lru(st, 1), 0);
    cr_assert_eq(stats(st).rows, 1);
}

/* The growth bound covers what a push really adds; a push of known keys adds nothing. */
Test(store_mem, push_growth_bounds_the_real_growth) {
    st = make((ps_table_memory){0});
    uint64_t *keys = malloc(20000 * sizeof(*keys));
    float *g = calloc(20000 * DIM, sizeof(float));
    cr_assert(keys && g);
    for (size_t i = 0; i < 20000; i++) keys[i] = i * 2654435761u;
    ps_error err = {0};
    for (size_t lo = 0; lo < 20000; lo += 5000) {
        size_t before = ps_store_bytes(st);
        size_t bound = ps_store_push_growth(st, (const uint8_t *)(keys + lo), 5000);
        cr_assert_eq(ps_store_push(st, (const uint8_t *)(keys + lo), (const uint8_t *)g, 5000,
                                   &err), PS_OK);
        cr_assert_leq(ps_store_bytes(st) - before, bound);
        cr_assert_eq(ps_store_push_growth(st, (const uint8_t *)(keys + lo), 5000), 0,
                     "known keys need no memory");
    }
    free(keys);
    free(g);
}

/* Row-wise AdaGrad at dim 16: payload 8 + 64 + 4 = 76 bytes, stored in 76 (rows are 4-byte
 * aligned). 800 000 rows is just past an index doubling (786 432 = 3/4 of 2^20), the worst
 * load for memory: still <= 1.3x the payload. */
Test(store_mem, rowwise_bytes_per_row_at_the_worst_index_load) {
    ps_table_spec t = spec_mem((ps_table_memory){0});
    t.dim = 16;
    t.opt.rowwise = true;
    ps_error err = {0};
    cr_assert_eq(ps_store_create(&t, 7, &st, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_store_row_bytes(st), 76);
    const size_t n = 800000, batch = 50000;
    uint64_t *keys = malloc(batch * sizeof(*keys));
    float *g = calloc(batch * 16, sizeof(float));
    cr_assert(keys && g);
    for (size_t base = 0; base < n; base += batch) {
        for (size_t i = 0; i < batch; i++) keys[i] = (base + i) * 0x9e3779b97f4a7c15ULL;
        cr_assert_eq(ps_store_push(st, (const uint8_t *)keys, (const uint8_t *)g, batch, &err),
                     PS_OK, "%s", err.msg);
    }
    cr_assert_eq(ps_store_rows(st), n);
    const double ratio = (double)ps_store_bytes(st) / ((double)n * 76);
    cr_log_info("800k rows, row-wise dim 16: %.3f x payload", ratio);
    cr_assert_leq(ratio, 1.3, "%.3f x the payload", ratio);
    cr_assert_geq(ratio, 1.0);
    free(keys);
    free(g);
}

/* A small table holds little: chunk 0 starts at 64 rows and doubles (a 4096-row chunk of dim 4
 * would be 160 KB for 20 rows), and rows survive its moves. */
Test(store_mem, a_small_table_holds_kilobytes) {
    st = make((ps_table_memory){0});
    for (uint64_t k = 0; k < 20; k++) push1(st, k, 1.0f);
    cr_assert_lt(ps_store_bytes(st), 16384, "%zu bytes for 20 rows", ps_store_bytes(st));
    for (uint64_t k = 20; k < 300; k++) push1(st, k, 1.0f); /* chunk 0: 64 -> 128 -> 256 -> 512 */
    for (uint64_t k = 0; k < 300; k++) cr_assert_float_eq(pulled(st, k), -0.1f, 0, "key %llu",
                                                          (unsigned long long)k);
    cr_assert_lt(ps_store_bytes(st), 65536, "%zu bytes for 300 rows", ps_store_bytes(st));
}
