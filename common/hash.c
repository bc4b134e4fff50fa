/* hash.c - jump consistent hash. */
#include "hash.h"

uint32_t ps_jump_hash(uint64_t hash, uint32_t buckets) {
    int64_t b = -1, j = 0;
    while (j < (int64_t)buckets) {
        b = j;
        hash = hash * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((hash >> 33) + 1)));
    }
    return (uint32_t)b;
}
