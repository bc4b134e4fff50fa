/* crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as iSCSI, ext4, Kafka and
 * LevelDB use it: the checkpoint format's block and header checksum.
 * reference: RFC 3720 section 12.1 and appendix B.4 (test vectors). */
#ifndef PS_CRC32C_H
#define PS_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC-32C of n bytes at p (any alignment), continuing from crc (0 to start): crc32c(a || b) ==
 * ps_crc32c(ps_crc32c(0, a), b). Uses SSE4.2's crc32 instruction when the CPU has it. */
uint32_t ps_crc32c(uint32_t crc, const void *p, size_t n);

/* The two implementations behind ps_crc32c, for tests and the benchmark. The hardware one must
 * only be called when ps_crc32c_hw_available() is true. */
uint32_t ps_crc32c_sw(uint32_t crc, const void *p, size_t n);
uint32_t ps_crc32c_hw(uint32_t crc, const void *p, size_t n);
bool ps_crc32c_hw_available(void);

#endif
