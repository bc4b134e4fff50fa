/* test_crc32c.c - CRC-32C against RFC 3720's published vectors, and the SSE4.2 and table paths
 * against a bit-at-a-time reference written here (the polynomial's definition, nothing shared
 * with crc32c.c) on every length 0..1024 at every misalignment 0..7. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

/* One bit per step, straight from the definition: reflected, init ~0, final xor ~0. */
static uint32_t crc_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
}

/* RFC 3720 appendix B.4 */
static void check_vectors(crc_fn f, const char *which) {
    uint8_t b[32];
    memset(b, 0, 32);
    cr_assert_eq(f(0, b, 32), 0x8A9136AAu, "%s: 32 zero bytes", which);
    memset(b, 0xff, 32);
    cr_assert_eq(f(0, b, 32), 0x62A8AB43u, "%s: 32 bytes of 0xff", which);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)i;
    cr_assert_eq(f(0, b, 32), 0x46DD794Eu, "%s: 0..31", which);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)(31 - i);
    cr_assert_eq(f(0, b, 32), 0x113FDB5Cu, "%s: 31..0", which);
    cr_assert_eq(f(0, "123456789", 9), 0xE3069283u, "%s: \"123456789\"", which);
    cr_assert_eq(f(0, b, 0), 0u, "%s: empty", which);
}

Test(crc32c, rfc3720_vectors_software) { check_vectors(ps_crc32c_sw, "software"); }

Test(crc32c, rfc3720_vectors_hardware) {
    if (!ps_crc32c_hw_available()) cr_skip_test("no SSE4.2 on this CPU");
    check_vectors(ps_crc32c_hw, "sse4.2");
}

Test(crc32c, rfc3720_vectors_dispatch) { check_vectors(ps_crc32c, "ps_crc32c"); }

/* Random bytes, every length 0..1024 at offsets 0..7 from an 8-byte boundary: the head, the
 * 8-byte body and the tail of both implementations all get exercised. */
Test(crc32c, paths_agree_on_every_length_and_alignment) {
    enum { MAX = 1024 };
    uint64_t *mem = malloc(MAX + 16);
    uint8_t *base = (uint8_t *)mem;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < MAX + 16; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        base[i] = (uint8_t)x;
    }
    const bool hw = ps_crc32c_hw_available();
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= MAX; n++) {
            const uint32_t want = crc_bitwise(base + off, n);
            cr_assert_eq(ps_crc32c_sw(0, base + off, n), want, "software, len %zu off %zu", n, off);
            if (hw)
                cr_assert_eq(ps_crc32c_hw(0, base + off, n), want, "sse4.2, len %zu off %zu", n,
                             off);
            cr_assert_eq(ps_crc32c(0, base + off, n), want, "dispatch, len %zu off %zu", n, off);
        }
    free(mem);
}

/* crc(a || b) continues from crc(a), across the two implementations too. */
Test(crc32c, continues_across_calls_and_paths) {
    const char *s = "The quick brown fox jumps over the lazy dog, twice over the lazy dog.";
    const size_t n = strlen(s);
    const uint32_t want = crc_bitwise((const uint8_t *)s, n);
    for (size_t cut = 0; cut <= n; cut++) {
        cr_assert_eq(ps_crc32c_sw(ps_crc32c_sw(0, s, cut), s + cut, n - cut), want, "cut %zu", cut);
        if (ps_crc32c_hw_available()) {
            cr_assert_eq(ps_crc32c_hw(ps_crc32c_sw(0, s, cut), s + cut, n - cut), want, "cut %zu", cut);
            cr_assert_eq(ps_crc32c_sw(ps_crc32c_hw(0, s, cut), s + cut, n - cut), want, "cut %zu", cut);
        }
    }
}
