/* crc32c.c - CRC-32C: a slicing-by-8 table for any CPU, SSE4.2's crc32 instruction on x86-64.
 * Both keep the CRC inverted between calls the same way (~crc on entry and exit), so they agree
 * bit for bit and one may continue what the other began. The tables are computed at compile
 * time's equivalent: once, by the first call, under pthread_once (no mutable global besides). */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u /* Castagnoli, reflected */

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void make_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

uint32_t ps_crc32c_sw(uint32_t crc, const void *p, size_t n) {
    pthread_once(&table_once, make_table);
    const uint8_t *b = p;
    uint32_t c = ~crc;
    for (; n > 0 && ((uintptr_t)b & 7) != 0; n--) c = (c >> 8) ^ table[0][(c ^ *b++) & 0xff];
    for (; n >= 8; n -= 8, b += 8) { /* slicing-by-8: little-endian loads */
        uint32_t lo, hi;
        memcpy(&lo, b, 4), memcpy(&hi, b + 4, 4);
        lo ^= c;
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
            table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
    }
    for (; n > 0; n--) c = (c >> 8) ^ table[0][(c ^ *b++) & 0xff];
    return ~c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>

/* Only this function is compiled for SSE4.2: the rest of the build stays baseline x86-64. */
__attribute__((target("sse4.2"))) uint32_t ps_crc32c_hw(uint32_t crc, const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t c = ~crc;
    for (; n > 0 && ((uintptr_t)b & 7) != 0; n--) c = _mm_crc32_u8((uint32_t)c, *b++);
    for (; n >= 8; n -= 8, b += 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        c = _mm_crc32_u64(c, v);
    }
    for (; n > 0; n--) c = _mm_crc32_u8((uint32_t)c, *b++);
    return ~(uint32_t)c;
}

bool ps_crc32c_hw_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}
#else
uint32_t ps_crc32c_hw(uint32_t crc, const void *p, size_t n) { return ps_crc32c_sw(crc, p, n); }
bool ps_crc32c_hw_available(void) { return false; }
#endif

uint32_t ps_crc32c(uint32_t crc, const void *p, size_t n) {
    /* __builtin_cpu_supports reads a table libgcc fills at startup: cheap per call */
    return ps_crc32c_hw_available() ? ps_crc32c_hw(crc, p, n) : ps_crc32c_sw(crc, p, n);
}
