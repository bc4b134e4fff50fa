/* auth.c - see auth.h. */
#include "auth.h"

#include <string.h>

#include <sodium.h>

bool ps_auth_init(void) { return sodium_init() >= 0; }

void ps_auth_nonce(uint8_t nonce[PS_AUTH_NONCE_BYTES]) {
    randombytes_buf(nonce, PS_AUTH_NONCE_BYTES);
}

void ps_auth_mac(const char *token, const uint8_t nonce[PS_AUTH_NONCE_BYTES], const char *job_id,
                 uint32_t role, uint32_t rank, uint8_t mac[PS_AUTH_MAC_BYTES]) {
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)token, strlen(token));
    crypto_auth_hmacsha256_update(&st, nonce, PS_AUTH_NONCE_BYTES);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"ps-hello", 8);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)job_id, strlen(job_id) + 1);
    const uint8_t who[5] = {(uint8_t)role, (uint8_t)rank, (uint8_t)(rank >> 8),
                            (uint8_t)(rank >> 16), (uint8_t)(rank >> 24)};
    crypto_auth_hmacsha256_update(&st, who, sizeof(who));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
}

bool ps_auth_equal(const uint8_t a[PS_AUTH_MAC_BYTES], const uint8_t b[PS_AUTH_MAC_BYTES]) {
    return crypto_verify_32(a, b) == 0;
}
