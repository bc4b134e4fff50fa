/* tls.c - see tls.h. One BIO of our own per session stands between OpenSSL and the socket: its
 * reads come from the caller's ciphertext in place (no copy into a memory BIO), its writes append
 * to a malloc'd buffer that ps_tls_take hands over whole (no copy out of one, and nothing is left
 * behind: a memory BIO keeps the largest size it ever grew to for the connection's life). */
#include "tls.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define PLAIN_MAX 16384 /* one record's plaintext at most (RFC 8446 5.1) */
/* Ciphertext per record beyond its plaintext: 5-byte header, content type, 16-byte tag (TLS 1.3
 * AEAD); rounded up. */
#define RECORD_OVERHEAD 64

struct ps_tls_ctx {
    SSL_CTX *ssl;
    BIO_METHOD *bio;
    bool server;
};

struct ps_tls {
    SSL *ssl;
    ps_tls_ctx *ctx;
    char peer[64];
    bool ready, failed, closed;
    char msg[400];
    const uint8_t *in; /* ciphertext of the current feed, read in place by the BIO */
    size_t in_len;
    uint8_t *out; /* ciphertext written by OpenSSL, until taken */
    size_t out_len, out_cap;
    bool out_nomem;
    uint8_t *early; /* plaintext written before the handshake completed */
    size_t early_len, early_cap;
    uint8_t plain[PLAIN_MAX];
};

/* OpenSSL's reason for the last failure, or fallback. */
static const char *ssl_reason(const char *fallback) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : fallback;
}

static bool reserve(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < need) ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    uint8_t *nb = realloc(*buf, ncap);
    if (nb == NULL) return false;
    *buf = nb, *cap = ncap;
    return true;
}

/* --- the BIO: ciphertext in from the feed, out into t->out ---------------------------------- */

static int bio_write_ex(BIO *b, const char *data, size_t n, size_t *written) {
    ps_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!reserve(&t->out, &t->out_cap, t->out_len + n)) {
        t->out_nomem = true;
        return 0;
    }
    memcpy(t->out + t->out_len, data, n);
    t->out_len += n;
    *written = n;
    return 1;
}

static int bio_read_ex(BIO *b, char *data, size_t n, size_t *got) {
    ps_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->in_len == 0) { /* nothing more now: OpenSSL keeps a partial record and asks again */
        BIO_set_retry_read(b);
        *got = 0;
        return 0;
    }
    size_t k = n < t->in_len ? n : t->in_len;
    memcpy(data, t->in, k);
    t->in += k, t->in_len -= k;
    *got = k;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num, (void)ptr;
    ps_tls *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return t ? (long)(t->in_len > LONG_MAX ? LONG_MAX : t->in_len) : 0;
    case BIO_CTRL_WPENDING: return 0;
    default: return 0;
    }
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

/* --- contexts -------------------------------------------------------------------------------- */

static ps_status ctx_new(bool server, ps_tls_ctx **out, ps_error *err) {
    ps_tls_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) return ps_error_set(err, PS_NOMEM, "TLS: out of memory");
    c->server = server;
    c->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    c->bio = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ps-stream");
    if (c->ssl == NULL || c->bio == NULL || !BIO_meth_set_write_ex(c->bio, bio_write_ex) ||
        !BIO_meth_set_read_ex(c->bio, bio_read_ex) || !BIO_meth_set_ctrl(c->bio, bio_ctrl) ||
        !BIO_meth_set_create(c->bio, bio_create) ||
        /* both ends are ours: no reason to speak anything older than TLS 1.3 */
        !SSL_CTX_set_min_proto_version(c->ssl, TLS1_3_VERSION)) {
        ps_error_set(err, PS_NOMEM, "TLS: cannot set up OpenSSL: %s", ssl_reason("out of memory"));
        ps_tls_ctx_destroy(c);
        return PS_NOMEM;
    }
    SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
    *out = c;
    return PS_OK;
}

ps_status ps_tls_server_ctx(const char *cert, const char *key, ps_tls_ctx **out, ps_error *err) {
    ERR_clear_error();
    ps_tls_ctx *c;
    if (ctx_new(true, &c, err) != PS_OK) return err ? err->code : PS_NOMEM;
    ps_status st = PS_OK;
    if (SSL_CTX_use_certificate_chain_file(c->ssl, cert) != 1)
        st = ps_error_set(err, PS_CONFIG, "certificate %s: %s", cert, ssl_reason("unusable"));
    else if (SSL_CTX_use_PrivateKey_file(c->ssl, key, SSL_FILETYPE_PEM) != 1)
        st = ps_error_set(err, PS_CONFIG, "private key %s: %s", key, ssl_reason("unusable"));
    else if (SSL_CTX_check_private_key(c->ssl) != 1)
        st = ps_error_set(err, PS_CONFIG, "private key %s is not the key of certificate %s", key,
                          cert);
    /* No session tickets: nothing resumes sessions, and none is sent after the handshake. */
    if (st == PS_OK && SSL_CTX_set_num_tickets(c->ssl, 0) != 1)
        st = ps_error_set(err, PS_NOMEM, "TLS: %s", ssl_reason("cannot turn tickets off"));
    ERR_clear_error();
    if (st != PS_OK) {
        ps_tls_ctx_destroy(c);
        return st;
    }
    *out = c;
    return PS_OK;
}

ps_status ps_tls_client_ctx(const char *ca, ps_tls_ctx **out, ps_error *err) {
    ERR_clear_error();
    ps_tls_ctx *c;
    if (ctx_new(false, &c, err) != PS_OK) return err ? err->code : PS_NOMEM;
    if (SSL_CTX_load_verify_locations(c->ssl, ca, NULL) != 1) {
        ps_status st = ps_error_set(err, PS_CONFIG, "CA bundle %s: %s", ca,
                                    ssl_reason("no certificate in it"));
        ERR_clear_error();
        ps_tls_ctx_destroy(c);
        return st;
    }
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    *out = c;
    return PS_OK;
}

void ps_tls_ctx_destroy(ps_tls_ctx *ctx) {
    if (ctx == NULL) return;
    SSL_CTX_free(ctx->ssl);
    BIO_meth_free(ctx->bio);
    free(ctx);
}

/* --- sessions -------------------------------------------------------------------------------- */

/* Marks t failed with OpenSSL's reason (and the certificate check's, when that failed). */
static ps_status fail(ps_tls *t, const char *fallback, ps_error *err) {
    if (!t->failed) {
        t->failed = true;
        char why[256];
        long v = SSL_get_verify_result(t->ssl);
        if (t->out_nomem)
            snprintf(why, sizeof(why), "out of memory");
        else if (!t->ctx->server && v != X509_V_OK)
            snprintf(why, sizeof(why), "certificate verify failed (%s)",
                     X509_verify_cert_error_string(v));
        else
            snprintf(why, sizeof(why), "%s", ssl_reason(fallback));
        if (t->ready)
            snprintf(t->msg, sizeof(t->msg), "TLS with %s failed: %s", t->peer, why);
        else
            snprintf(t->msg, sizeof(t->msg), "TLS handshake with %s failed: %s", t->peer, why);
        ERR_clear_error();
    }
    return ps_error_set(err, t->ready ? PS_PROTO : PS_MISMATCH, "%s", t->msg);
}

/* Encrypts n bytes of plaintext into t->out, room made first: no growth mid-record. */
static ps_status encrypt(ps_tls *t, const uint8_t *p, size_t n, ps_error *err) {
    if (!reserve(&t->out, &t->out_cap, t->out_len + n + (n / PLAIN_MAX + 1) * RECORD_OVERHEAD))
        return ps_error_set(err, PS_NOMEM, "TLS with %s: out of memory", t->peer);
    while (n > 0) {
        size_t done = 0;
        if (SSL_write_ex(t->ssl, p, n, &done) != 1 || done == 0) return fail(t, "write failed", err);
        p += done, n -= done;
    }
    return PS_OK;
}

/* One handshake step; on completion sends what was written before it. */
static ps_status handshake(ps_tls *t, ps_error *err) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return PS_OK;
        return fail(t, e == SSL_ERROR_ZERO_RETURN ? "closed by the peer" : "handshake failed",
                    err);
    }
    t->ready = true;
    ps_status st = PS_OK;
    if (t->early_len > 0) st = encrypt(t, t->early, t->early_len, err);
    free(t->early);
    t->early = NULL, t->early_len = t->early_cap = 0;
    return st;
}

ps_status ps_tls_create(ps_tls_ctx *ctx, const char *peer, const char *host, ps_tls **out,
                        ps_error *err) {
    ERR_clear_error();
    ps_tls *t = calloc(1, sizeof(*t));
    if (t == NULL) return ps_error_set(err, PS_NOMEM, "TLS: out of memory");
    t->ctx = ctx;
    snprintf(t->peer, sizeof(t->peer), "%s", peer);
    t->ssl = SSL_new(ctx->ssl);
    BIO *b = t->ssl ? BIO_new(ctx->bio) : NULL;
    if (b == NULL) {
        ps_tls_destroy(t);
        return ps_error_set(err, PS_NOMEM, "TLS with %s: %s", peer, ssl_reason("out of memory"));
    }
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b); /* the session owns it */
    if (ctx->server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (host != NULL && host[0] != '\0') {
            unsigned char ip[16];
            bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
            int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host)
                           : SSL_set1_host(t->ssl, host) && SSL_set_tlsext_host_name(t->ssl, host);
            if (ok != 1) {
                ps_tls_destroy(t);
                return ps_error_set(err, PS_CONFIG, "TLS with %s: cannot check the name \"%s\"",
                                    peer, host);
            }
        }
        if (handshake(t, err) != PS_OK) { /* the ClientHello, waiting in t->out */
            ps_tls_destroy(t);
            return err ? err->code : PS_MISMATCH;
        }
    }
    *out = t;
    return PS_OK;
}

void ps_tls_destroy(ps_tls *t) {
    if (t == NULL) return;
    SSL_free(t->ssl);
    free(t->out);
    free(t->early);
    free(t);
}

ps_status ps_tls_feed(ps_tls *t, const uint8_t *in, size_t n, ps_tls_plain_cb cb, void *ud,
                      ps_error *err) {
    if (t->failed) return ps_error_set(err, t->ready ? PS_PROTO : PS_MISMATCH, "%s", t->msg);
    ERR_clear_error();
    t->in = in, t->in_len = n;
    ps_status st = PS_OK;
    if (!t->ready) st = handshake(t, err);
    while (st == PS_OK && t->ready && !t->closed) {
        size_t got = 0;
        if (SSL_read_ex(t->ssl, t->plain, sizeof(t->plain), &got) == 1) {
            st = cb(ud, t->plain, got, err);
            continue;
        }
        int e = SSL_get_error(t->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break; /* all of in is read */
        if (e == SSL_ERROR_ZERO_RETURN) t->closed = true;
        else st = fail(t, "read failed", err);
    }
    t->in = NULL, t->in_len = 0; /* what a stopped feed left is dropped: the caller is closing */
    return st;
}

ps_status ps_tls_write(ps_tls *t, const uint8_t *p, size_t n, ps_error *err) {
    if (t->failed) return ps_error_set(err, PS_CLOSED, "%s", t->msg);
    if (n == 0) return PS_OK;
    if (!t->ready) {
        if (!reserve(&t->early, &t->early_cap, t->early_len + n))
            return ps_error_set(err, PS_NOMEM, "TLS with %s: out of memory", t->peer);
        memcpy(t->early + t->early_len, p, n);
        t->early_len += n;
        return PS_OK;
    }
    ERR_clear_error();
    return encrypt(t, p, n, err);
}

void ps_tls_take(ps_tls *t, uint8_t **out, size_t *len) {
    *out = t->out_len > 0 ? t->out : NULL;
    *len = t->out_len;
    if (t->out_len == 0) return;
    /* the buffer grew by doubling: hand over what it holds, so the heap (and the write
     * accounting, which counts allocations) sees the ciphertext, not up to twice that */
    if (t->out_cap > t->out_len + 4096) {
        uint8_t *fit = realloc(t->out, t->out_len);
        if (fit != NULL) *out = fit;
    }
    t->out = NULL, t->out_len = t->out_cap = 0;
}

bool ps_tls_ready(const ps_tls *t) { return t->ready; }
bool ps_tls_failed(const ps_tls *t) { return t->failed; }
bool ps_tls_closed(const ps_tls *t) { return t->closed; }
const char *ps_tls_error(const ps_tls *t) { return t->msg; }
