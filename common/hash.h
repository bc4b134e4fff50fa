/* hash.h - key hashing and key -> shard placement, the one function both sides must agree on. */
#ifndef PS_HASH_H
#define PS_HASH_H

#include <stdint.h>

/* splitmix64's finalizer: a bijection on uint64 with full avalanche.
 * reference: https://prng.di.unimi.it/splitmix64.c */
static inline uint64_t ps_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Hash of (table, key): distinct tables place the same key independently. */
static inline uint64_t ps_key_hash(uint32_t table, uint64_t key) {
    return ps_mix64(key ^ ps_mix64(0x9e3779b97f4a7c15ULL * ((uint64_t)table + 1)));
}

/* Jump consistent hash: bucket in [0, buckets) for a 64-bit hash. Growing buckets from S to
 * S+1 moves only 1/(S+1) of the keys. buckets must be >= 1.
 * reference: Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", 2014. */
uint32_t ps_jump_hash(uint64_t hash, uint32_t buckets);

/* The shard that owns `key` of `table` among num_shards servers. */
static inline uint32_t ps_shard_of(uint32_t table, uint64_t key, uint32_t num_shards) {
    return num_shards <= 1 ? 0 : ps_jump_hash(ps_key_hash(table, key), num_shards);
}

#endif
