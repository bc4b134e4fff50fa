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

/* --- known answers ------------------------------------------------------------------------------
 * Pinned from an independent implementation in Python's unbounded ints masked to 64 bits (the
 * jump hash's division in Python floats, i.e. doubles, as in the paper):
 *     M = 2**64 - 1
 *     def mix64(x):
 *         x ^= x >> 30; x = x * 0xbf58476d1ce4e5b9 & M
 *         x ^= x >> 27; x = x * 0x94d049bb133111eb & M
 *         return x ^ x >> 31
 *     def key_hash(t, k): return mix64(k ^ mix64(0x9e3779b97f4a7c15 * (t + 1) & M))
 *     def jump(h, n):
 *         b, j = -1, 0
 *         while j < n:
 *             b, h = j, (h * 2862933555777941757 + 1) & M
 *             j = int(float(b + 1) * (float(1 << 31) / float((h >> 33) + 1)))
 *         return b
 *     def shard_of(t, k, s): return 0 if s <= 1 else jump(key_hash(t, k), s)
 * The Python mix64 gives splitmix64's published first output for seed 0:
 * mix64(0x9e3779b97f4a7c15) = 0xe220a8397b1dcdaf. A change of any constant, shift or of the
 * table term moves keys between shards (and changes every initial value): these must fail. */

Test(hash, mix64_known_values) {
    static const uint64_t cases[][2] = {
        {0x9e3779b97f4a7c15ULL, 0xe220a8397b1dcdafULL}, /* splitmix64(seed 0), first output */
        {1, 0x5692161d100b05e5ULL},
        {2, 0xdbd238973a2b148aULL},
        {42, 0xa759ea27d4727622ULL},
        {0x0123456789abcdefULL, 0xb2c058e4ebb5112cULL},
        {UINT64_MAX, 0xb4d055fcf2cbbd7bULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(ps_mix64(cases[i][0]), cases[i][1], "mix64(%#llx) = %#llx, want %#llx",
                     (unsigned long long)cases[i][0], (unsigned long long)ps_mix64(cases[i][0]),
                     (unsigned long long)cases[i][1]);
}

Test(hash, key_hash_known_values) {
    static const struct {
        uint32_t table;
        uint64_t key, want;
    } cases[] = {
        {0, 0, 0x48218226ff3cd4bfULL},
        {0, 1, 0x9e0160293a33aaf7ULL},
        {3, 12345, 0x7f2b59d5fe9d17b5ULL},
        {7, 0x8000000000000005ULL, 0xf1478ba4e0aff143ULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = ps_key_hash(cases[i].table, cases[i].key);
        cr_assert_eq(got, cases[i].want, "key_hash(%u, %#llx) = %#llx, want %#llx",
                     cases[i].table, (unsigned long long)cases[i].key, (unsigned long long)got,
                     (unsigned long long)cases[i].want);
    }
}

Test(hash, jump_of_hashes_known_values) {
    static const struct {
        uint64_t hash;
        uint32_t buckets, want;
    } cases[] = {
        {0x0123456789abcdefULL, 10, 0},
        {UINT64_MAX, 1000, 313},
        {0x12ae30237b17df14ULL /* mix64(7) */, 3, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(ps_jump_hash(cases[i].hash, cases[i].buckets), cases[i].want,
                     "jump(%#llx, %u)", (unsigned long long)cases[i].hash, cases[i].buckets);
}

Test(hash, shard_of_known_values) {
    static const struct {
        uint32_t table;
        uint64_t key;
        uint32_t shards, want;
    } cases[] = {
        {0, 5, 2, 1},
        {1, 2, 2, 1},
        {2, 1000, 5, 0},
        {2, 1001, 5, 4},
        {2, 1002, 5, 1},
        {3, 12345, 16, 4},
        {5, 0xdeadbeefULL, 100, 81},
        {9, 1ULL << 40, 1000, 647},
        {7, 0x8000000000000005ULL, 7, 1},
        {0, 123, 65536, 65078},
        {0, 99, 1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(ps_shard_of(cases[i].table, cases[i].key, cases[i].shards), cases[i].want,
                     "shard_of(%u, %#llx, %u) = %u, want %u", cases[i].table,
                     (unsigned long long)cases[i].key, cases[i].shards,
                     ps_shard_of(cases[i].table, cases[i].key, cases[i].shards), cases[i].want);
    /* keys 0..15 of tables 0 and 1 over 4 shards */
    static const uint32_t t0[16] = {0, 0, 2, 1, 2, 1, 3, 1, 2, 1, 2, 3, 3, 1, 3, 2};
    static const uint32_t t1[16] = {1, 0, 2, 1, 1, 0, 0, 1, 2, 2, 3, 3, 2, 3, 0, 1};
    for (uint64_t k = 0; k < 16; k++) {
        cr_assert_eq(ps_shard_of(0, k, 4), t0[k], "table 0 key %llu", (unsigned long long)k);
        cr_assert_eq(ps_shard_of(1, k, 4), t1[k], "table 1 key %llu", (unsigned long long)k);
    }
}
