/* auth.h - the Hello handshake's proof of the cluster token, without sending the token.
 *
 * On accept a server sends Challenge{nonce}: PS_AUTH_NONCE_BYTES random bytes, new for each
 * connection. The client answers in Hello with
 *     mac = HMAC-SHA256(key = token, message = nonce || "ps-hello" || job_id || 0x00 ||
 *                       role (1 byte) || rank (4 bytes, little-endian))
 * and the server compares it with its own in constant time. Binding job, role and rank into the
 * message stops a captured mac from being replayed for another identity; the nonce stops it
 * from being replayed on another connection. The token never crosses the wire.
 * reference: RFC 2104 (HMAC); libsodium crypto_auth_hmacsha256. */
#ifndef PS_AUTH_H
#define PS_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#define PS_AUTH_NONCE_BYTES 32
#define PS_AUTH_MAC_BYTES 32

/* false if the system's random source is unusable (libsodium could not start). */
bool ps_auth_init(void);
void ps_auth_nonce(uint8_t nonce[PS_AUTH_NONCE_BYTES]);
void ps_auth_mac(const char *token, const uint8_t nonce[PS_AUTH_NONCE_BYTES], const char *job_id,
                 uint32_t role, uint32_t rank, uint8_t mac[PS_AUTH_MAC_BYTES]);
/* Constant-time comparison of two macs. */
bool ps_auth_equal(const uint8_t a[PS_AUTH_MAC_BYTES], const uint8_t b[PS_AUTH_MAC_BYTES]);

#endif
