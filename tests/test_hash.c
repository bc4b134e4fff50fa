/* test_hash.c - common/hash.h: keys spread evenly over shards, jump hash moves only the keys it
 * must when a shard is added, and ps_jump_hash matches Lamping & Veach's published algorithm. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <stdlib.h>

#include "hash.h"

#define N_KEYS 100000

static void setup(void) {}
static void teardown(void) {}
TestSuite(hash, .init = setup, .fini = teardown, .timeout = 10);

/* reference: Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", 2014, Fig. 1,
 * written out again here (double arithmetic, as in the paper) so the test does not trust hash.c. */
static int32_t paper_jump(uint64_t key, int32_t num_buckets) {
    int64_t b = -1, j = 0;
    while (j < num_buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int32_t)b;
}

/* --- spread --------------------------------------------------------------------------------- */

typedef struct {
    uint32_t table, shards;
} spread_case;

ParameterizedTestParameters(hash, spread_within_5_percent) {
    static spread_case cases[] = {
        {0, 4}, {1, 4}, {7, 4}, {0, 3}, {1, 3}, {0, 8}, {1, 8}, {0, 2}, {5, 16},
    };
    return cr_make_param_array(spread_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* ids 0..99999 of one table: every shard within +-5% of N / shards. */
ParameterizedTest(spread_case *c, hash, spread_within_5_percent) {
    size_t count[64] = {0};
    for (uint64_t k = 0; k < N_KEYS; k++) {
        uint32_t s = ps_shard_of(c->table, k, c->shards);
        cr_assert_lt(s, c->shards, "table %u key %llu -> shard %u of %u", c->table,
                     (unsigned long long)k, s, c->shards);
        count[s]++;
    }
    double want = (double)N_KEYS / c->shards;
    for (uint32_t s = 0; s < c->shards; s++)
        cr_assert(fabs((double)count[s] - want) <= 0.05 * want,
                  "table %u, %u shards: shard %u has %zu keys, want %.0f +- 5%%", c->table,
                  c->shards, s, count[s], want);
}

/* Tables are placed independently: the same key lands on the same shard of two tables about
 * 1/S of the time, not always. */
Test(hash, tables_place_keys_independently) {
    size_t same = 0;
    for (uint64_t k = 0; k < N_KEYS; k++) same += ps_shard_of(0, k, 4) == ps_shard_of(1, k, 4);
    cr_assert(fabs((double)same - N_KEYS / 4.0) < 0.05 * N_KEYS / 4.0,
              "%zu of %d keys share a shard across tables", same, N_KEYS);
    cr_assert_neq(ps_key_hash(0, 12345), ps_key_hash(1, 12345));
}

/* --- jump hash ------------------------------------------------------------------------------ */

/* Growing S -> S+1 moves a key only to the new shard S, and moves about 1/(S+1) of the keys
 * (within 5 standard deviations of the binomial count). */
Test(hash, jump_monotone_and_minimal) {
    for (uint32_t s = 1; s <= 10; s++) {
        size_t moved = 0;
        for (uint64_t k = 0; k < N_KEYS; k++) {
            uint64_t h = ps_key_hash(0, k);
            uint32_t a = ps_jump_hash(h, s), b = ps_jump_hash(h, s + 1);
            cr_assert_lt(a, s);
            cr_assert_lt(b, s + 1);
            if (a != b) {
                cr_assert_eq(b, s, "S=%u: key %llu moved from %u to %u, not to the new shard", s,
                             (unsigned long long)k, a, b);
                moved++;
            }
        }
        double p = 1.0 / (s + 1), want = N_KEYS * p, sd = sqrt(N_KEYS * p * (1 - p));
        cr_assert(fabs((double)moved - want) <= 5 * sd,
                  "S=%u -> %u: %zu keys moved, want %.0f +- %.0f", s, s + 1, moved, want, 5 * sd);
    }
}

Test(hash, one_shard_is_shard_zero) {
    for (uint64_t k = 0; k < 1000; k++) {
        cr_assert_eq(ps_shard_of(0, k * 0x123456789ULL, 1), 0);
        cr_assert_eq(ps_shard_of(3, k, 1), 0);
        cr_assert_eq(ps_jump_hash(k * 0x9e3779b97f4a7c15ULL, 1), 0);
    }
}

Test(hash, shard_of_is_jump_of_key_hash) {
    for (uint64_t k = 0; k < 1000; k++)
        for (uint32_t s = 2; s <= 9; s++)
            cr_assert_eq(ps_shard_of(2, k, s), ps_jump_hash(ps_key_hash(2, k), s));
}

/* Values published with other implementations of the paper's algorithm (go-jump, ClickHouse's
 * jumpConsistentHash, rust jump-consistent-hash docs), and the reimplementation above agrees. */
typedef struct {
    uint64_t key;
    uint32_t buckets, want;
} jump_case;

ParameterizedTestParameters(hash, jump_known_values) {
    static jump_case cases[] = {
        {1, 1, 0},     {42, 57, 43},   {0xDEAD10CCULL, 1, 0}, {0xDEAD10CCULL, 666, 361},
        {256, 1024, 520}, {0, 60, 0}, {1, 60, 55},          {2, 60, 46},
    };
    return cr_make_param_array(jump_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(jump_case *c, hash, jump_known_values) {
    cr_assert_eq(paper_jump(c->key, (int32_t)c->buckets), (int32_t)c->want,
                 "the test's own reference disagrees with the published value");
    uint32_t got = ps_jump_hash(c->key, c->buckets);
    cr_assert_eq(got, c->want, "jump(%#llx, %u) = %u, want %u", (unsigned long long)c->key,
                 c->buckets, got, c->want);
}

/* Many (key, buckets) pairs against the reimplementation, including large bucket counts. */
Test(hash, jump_matches_paper) {
    uint64_t x = 0x243f6a8885a308d3ULL;
    const uint32_t buckets[] = {1, 2, 3, 5, 10, 100, 1000, 65536, 1u << 20, 0x7fffffffu};
    for (int i = 0; i < 20000; i++) {
        x = ps_mix64(x + 1);
        uint32_t b = buckets[i % 10];
        cr_assert_eq(ps_jump_hash(x, b), (uint32_t)paper_jump(x, (int32_t)b),
                     "key %#llx, %u buckets", (unsigned long long)x, b);
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ps_mix64 is a bijection: no collisions among many consecutive keys, and it moves 0. */
Test(hash, mix64_no_collisions) {
    const size_t n = 1 << 16;
    uint64_t *v = malloc(n * sizeof(*v));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = ps_mix64(i);
    qsort(v, n, sizeof(*v), cmp_u64);
    for (size_t i = 1; i < n; i++) cr_assert_neq(v[i], v[i - 1], "collision at %zu", i);
    free(v);
    cr_assert_eq(ps_mix64(0), 0, "splitmix64's finalizer maps 0 to 0");
    cr_assert_neq(ps_key_hash(0, 0), 0, "the table term keeps key 0 of table 0 off 0");
}
