/* tls.h - TLS 1.3 (OpenSSL 3) over any byte stream, for the job's connections when cluster.tls
 * is set. No I/O of its own: ciphertext read from a socket goes in (ps_tls_feed) and comes out as
 * plaintext to a callback; plaintext to send goes in (ps_tls_write) and comes out as ciphertext
 * to write (ps_tls_take). So it sits between a libuv stream and the framer on either side.
 *
 * A server's context holds its certificate chain and private key; a client's holds the CA bundle
 * that the server's chain must verify against, and each client session checks that the
 * certificate names the host it dialled (an IP address against the certificate's IP SANs, a name
 * against its DNS SANs). Clients present no certificate: the cluster token's HMAC in the Hello
 * still proves who they are (auth.h).
 *
 * Example (a client over some socket):
 *     ps_tls_ctx *ctx;  ps_tls *t;
 *     ps_tls_client_ctx("ca.pem", &ctx, &err);
 *     ps_tls_create(ctx, "10.0.0.5:4242", "10.0.0.5", &t, &err);   // ClientHello is pending
 *     ps_tls_take(t, &out, &len, &err);  write(out, len);  free(out);
 *     on each read: ps_tls_feed(t, buf, n, on_plain, ud, &err); then take and write again
 *     ps_tls_write(t, frame, frame_len, &err);  then take and write
 * reference: https://www.openssl.org/docs/man3.0/man7/ssl.html, RFC 8446 (TLS 1.3). */
#ifndef PS_TLS_H
#define PS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ps_status.h"

typedef struct ps_tls_ctx ps_tls_ctx;
typedef struct ps_tls ps_tls;

/* A server's context: cert is a PEM chain (leaf first), key its PEM private key. PS_CONFIG with
 * "certificate PATH: reason" / "private key PATH: reason" when a file is unusable or the key is
 * not the certificate's. */
ps_status ps_tls_server_ctx(const char *cert, const char *key, ps_tls_ctx **out, ps_error *err);
/* A client's context: ca is a PEM bundle of the certificates trusted to sign servers'. */
ps_status ps_tls_client_ctx(const char *ca, ps_tls_ctx **out, ps_error *err);
/* NULL-safe; after every session made from it is destroyed. */
void ps_tls_ctx_destroy(ps_tls_ctx *ctx);

/* A session for one connection. peer names it in messages ("127.0.0.1:4242"). On a client
 * context, host is what the server's certificate must name (NULL: the chain is verified, the name
 * is not), and the handshake starts at once: its first record is ready for ps_tls_take. */
ps_status ps_tls_create(ps_tls_ctx *ctx, const char *peer, const char *host, ps_tls **out,
                        ps_error *err);
void ps_tls_destroy(ps_tls *t); /* NULL-safe */

/* Plaintext that arrived: p is borrowed until the callback returns (at most 16 KiB, one record's
 * worth). A status other than PS_OK stops the feed and is returned by it. */
typedef ps_status (*ps_tls_plain_cb)(void *ud, const uint8_t *p, size_t n, ps_error *err);

/* Ciphertext from the socket (n bytes, split anywhere): moves the handshake on, then passes every
 * whole record's plaintext to cb. Returns PS_OK, the callback's status, or on a TLS failure
 * PS_MISMATCH during the handshake ("TLS handshake with PEER failed: certificate verify failed
 * (unable to get local issuer certificate)") and PS_PROTO after it; the session is then failed
 * (ps_tls_failed) and an alert for the peer may be waiting in ps_tls_take. */
ps_status ps_tls_feed(ps_tls *t, const uint8_t *in, size_t n, ps_tls_plain_cb cb, void *ud,
                      ps_error *err);

/* Plaintext to send (copied): encrypted now, or held until the handshake completes. PS_CLOSED
 * on a failed session, PS_NOMEM. */
ps_status ps_tls_write(ps_tls *t, const uint8_t *p, size_t n, ps_error *err);

/* The ciphertext waiting to be written, in order (handshake records, alerts, encrypted data):
 * *out is malloc'd and the caller's (free it, or ps_frame_release it once written); NULL and
 * *len = 0 when there is none. */
void ps_tls_take(ps_tls *t, uint8_t **out, size_t *len);

bool ps_tls_ready(const ps_tls *t);  /* the handshake completed */
bool ps_tls_failed(const ps_tls *t); /* a TLS error ended the session */
bool ps_tls_closed(const ps_tls *t); /* the peer sent close_notify: no more plaintext will come */
/* Why the session failed ("" when it has not). */
const char *ps_tls_error(const ps_tls *t);

#endif
