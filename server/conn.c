/* conn.c - one TCP peer: reads into a reused buffer (the bulk of a big frame straight into the
 * frame's own buffer), frames, hands frames to the handlers, queues replies with backpressure
 * (stop reading above limits.max_write_queue_bytes, resume below half), and closes after an
 * Error when the peer cannot be trusted any more. With cluster.tls every byte passes through the
 * connection's TLS session: reads are decrypted into the framer, corked frames leave encrypted. */
#include <malloc.h> /* malloc_usable_size */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

/* What an allocation of usable size n costs the heap (glibc: a size word, 16-byte chunks). */
static size_t heap_bytes(size_t n) { return (n + 8 + 15) & ~(size_t)15; }

#define READ_CHUNK (256u << 10)

typedef struct {
    uv_write_t req;
    ps_conn *conn;
    size_t n, bytes;
    uv_buf_t bufs[]; /* (n) frames, owned until write_done */
} write_req;

typedef struct ps_deferred {
    struct ps_deferred *next;
    size_t len;
    uint8_t bytes[]; /* (len) one frame's payload */
} ps_deferred;

/* c's first deferred frame now waits for the barrier (or no longer does). */
static void set_waiting(ps_conn *c, bool waiting) {
    if (c->waiting == waiting) return;
    c->waiting = waiting;
    if (waiting) {
        c->srv->n_waiting++;
        ps_server_parked(c->srv);
    } else {
        c->srv->n_waiting--;
    }
}

static void drop_deferred(ps_conn *c) {
    set_waiting(c, false);
    if (c->dq_head != NULL) c->srv->n_parked--;
    while (c->dq_head != NULL) {
        ps_deferred *d = c->dq_head;
        c->dq_head = d->next;
        free(d);
    }
    c->dq_tail = NULL;
}

static void on_close(uv_handle_t *h) {
    ps_conn *c = (ps_conn *)h;
    ps_server *srv = c->srv;
    drop_deferred(c);
    ps_reply_free(c->gen);
    ps_handle_disconnect(c);
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->n_conns--;
    ps_framer_destroy(c->framer);
    ps_tls_destroy(c->tls);
    free(c->scan_keys);
    for (size_t i = 0; i < c->n_cork; i++) free(c->cork[i].base);
    free(c->cork);
    free(c->rbuf);
    ps_shm_close(&c->shm);
    free(c);
    ps_server_conn_closed(srv);
}

void ps_conn_close(ps_conn *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    ps_conn *c = (ps_conn *)h;
    uint8_t *direct;
    size_t n = c->tls == NULL ? ps_framer_direct(c->framer, &direct) : 0; /* TLS: ciphertext */
    if (n > 0) { /* the rest of a big request, in place */
        *buf = uv_buf_init((char *)direct, (unsigned)n);
        return;
    }
    if (c->rbuf == NULL) {
        c->rbuf = malloc(READ_CHUNK);
        c->rbuf_cap = c->rbuf ? READ_CHUNK : 0;
    }
    *buf = uv_buf_init(c->rbuf, (unsigned)c->rbuf_cap); /* len 0 -> UV_ENOBUFS */
}

static bool may_read(const ps_conn *c);
static void start_reading(ps_conn *c);
static void stop_reading(ps_conn *c);
static void flush(ps_conn *c);

/* Keeps a copy of a frame behind the parked ones; the first one parks the connection. */
static ps_status defer(ps_conn *c, const uint8_t *payload, size_t len, bool waits) {
    ps_deferred *d = malloc(sizeof(*d) + len);
    if (d == NULL) {
        ps_log(&c->srv->opt.log, PS_LOG_ERROR, "%s: out of memory holding a waiting request",
               c->peer);
        drop_deferred(c);
        ps_conn_close(c);
        return PS_CLOSED;
    }
    d->next = NULL, d->len = len;
    memcpy(d->bytes, payload, len);
    if (c->dq_tail != NULL) {
        c->dq_tail->next = d;
    } else {
        c->dq_head = d;
        c->srv->n_parked++;
        stop_reading(c);
        set_waiting(c, waits);
    }
    c->dq_tail = d;
    return PS_OK;
}

static ps_status frame_cb(void *ud, const uint8_t *payload, size_t len) {
    ps_conn *c = ud;
    /* behind a waiting request, or a big reply still being produced */
    if (c->dq_head != NULL || c->gen != NULL) return defer(c, payload, len, false);
    switch (ps_handle_frame(c, payload, len)) {
    case PS_FRAME_WAIT: return defer(c, payload, len, true);
    case PS_FRAME_CLOSE: return PS_CLOSED;
    default: return PS_OK;
    }
}

/* cluster.tls: the plaintext of one record, into the framer. */
static ps_status tls_plain_cb(void *ud, const uint8_t *p, size_t n, ps_error *err) {
    ps_conn *c = ud;
    return ps_framer_feed(c->framer, p, n, frame_cb, c, err);
}

bool ps_conn_parked(const ps_conn *c) { return c->dq_head != NULL; }

void ps_conn_resume(ps_conn *c) {
    /* A frame run here may move the barrier and wake every parked connection, c among them:
     * that nested call must not run c's frames again (the frame being handled is still the
     * head of its queue). */
    if (uv_is_closing((uv_handle_t *)&c->tcp) || c->resuming) return;
    c->resuming = true;
    c->corked = true;
    while (c->dq_head != NULL && c->gen == NULL) {
        ps_deferred *d = c->dq_head;
        ps_frame_verdict v = ps_handle_frame(c, d->bytes, d->len);
        set_waiting(c, v == PS_FRAME_WAIT);
        if (v == PS_FRAME_WAIT) break;
        c->dq_head = d->next;
        free(d);
        if (c->dq_head == NULL) {
            c->dq_tail = NULL;
            c->srv->n_parked--;
        }
        if (v == PS_FRAME_CLOSE) {
            drop_deferred(c);
            break;
        }
    }
    c->corked = false;
    flush(c);
    if (c->dq_head == NULL && c->gen == NULL && may_read(c)) start_reading(c);
    c->resuming = false;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    ps_conn *c = (ps_conn *)s;
    ps_server *srv = c->srv;
    if (nread < 0) {
        if (nread == UV_EOF && ps_framer_pending(c->framer) > 0 && !c->close_after_write) {
            /* Half-closed mid-frame: say so (the peer may still read), then close. */
            char msg[128];
            snprintf(msg, sizeof(msg), "truncated frame: connection closed after %zu bytes of it",
                     ps_framer_pending(c->framer));
            ps_log(&srv->opt.log, PS_LOG_WARN, "%s: %s", c->peer, msg);
            ps_conn_send_error(c, 0, PS_PROTO, msg, true);
            return;
        }
        if (nread != UV_EOF)
            ps_log(&srv->opt.log, PS_LOG_INFO, "%s: %s", c->peer, uv_strerror((int)nread));
        ps_conn_close(c);
        return;
    }
    srv->last_read_ns = uv_hrtime();
    c->heard_ms = uv_now(&srv->loop);
    if (nread == 0 || c->close_after_write) return;
    ps_error err = {0};
    c->corked = true;
    ps_status st = c->tls != NULL ? ps_tls_feed(c->tls, (const uint8_t *)buf->base, (size_t)nread,
                                                tls_plain_cb, c, &err)
                   : buf->base == c->rbuf
                       ? ps_framer_feed(c->framer, (const uint8_t *)buf->base, (size_t)nread,
                                        frame_cb, c, &err)
                       : ps_framer_commit(c->framer, (size_t)nread, frame_cb, c);
    c->corked = false;
    if (c->tls != NULL && ps_tls_failed(c->tls)) {
        /* a failed handshake (a plaintext peer, a client that refused our certificate) or a
         * broken record: nothing more can be said to this peer but the alert, if any */
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s; closing", ps_tls_error(c->tls));
        c->close_after_write = true;
        stop_reading(c);
    } else if (st != PS_OK && st != PS_CLOSED) {
        /* The framer refused the length before allocating; the stream is out of sync now.
         * (PS_CLOSED: a handler already answered and is closing.) */
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: %s", c->peer, err.msg);
        ps_conn_send_error(c, 0, st, err.msg, true);
    }
    flush(c);
}

/* Below both write-queue limits (resume at half: hysteresis). */
static bool may_read(const ps_conn *c) {
    return c->queued <= c->srv->job->max_write_queue_bytes / 2 &&
           c->srv->queued_total <= c->srv->job->max_server_write_queue_bytes / 2;
}

static void start_reading(ps_conn *c) {
    if (c->reading || c->close_after_write || c->dq_head != NULL || c->gen != NULL) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
}

static void stop_reading(ps_conn *c) {
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* Peers paused for the server's total may read again once it is below half. */
static void resume_paused(ps_server *srv) {
    if (!srv->paused_for_total || srv->queued_total > srv->job->max_server_write_queue_bytes / 2)
        return;
    srv->paused_for_total = false;
    for (ps_conn *o = srv->conns; o != NULL; o = o->next)
        if (!o->reading && !uv_is_closing((uv_handle_t *)&o->tcp) && may_read(o))
            start_reading(o);
}

static void write_done(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    ps_conn *c = w->conn;
    ps_server *srv = c->srv;
    c->queued -= w->bytes;
    srv->queued_total -= w->bytes;
    c->write_progress_ms = uv_now(&srv->loop);
    c->pending_writes--;
    for (size_t i = 0; i < w->n; i++) ps_frame_release(&srv->fcache, (uint8_t *)w->bufs[i].base);
    free(w);
    resume_paused(srv); /* on every path: a failed or closing peer frees its share too */
    if (status < 0) {
        ps_conn_close(c);
        return;
    }
    if (c->close_after_write) {
        if (c->pending_writes == 0) ps_conn_close(c);
        return;
    }
    if (c->gen != NULL && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        c->corked = true;
        bool done = ps_reply_continue(c);
        c->corked = false;
        flush(c);
        if (done) ps_conn_resume(c); /* the frames that waited behind the reply */
    }
    if (!c->reading && !uv_is_closing((uv_handle_t *)&c->tcp) && may_read(c)) start_reading(c);
}

/* Hands w to uv_write and counts its bytes against both write-queue limits. false (w freed, its
 * buffers not, the connection closing) when uv_write refused it. */
static bool submit(ps_conn *c, write_req *w) {
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, w->bufs, (unsigned)w->n, write_done);
    if (rc < 0) {
        free(w);
        ps_conn_close(c);
        return false;
    }
    if (c->queued == 0) c->write_progress_ms = uv_now(&c->srv->loop);
    c->queued += w->bytes;
    c->srv->queued_total += w->bytes;
    c->pending_writes++;
    if (c->queued > c->srv->job->max_write_queue_bytes) stop_reading(c);
    /* Over the server's total, the peers that hold a big share stop being read (those that
     * hold little are served on), and past twice the total every peer that adds to it does. */
    const size_t cap = c->srv->job->max_server_write_queue_bytes;
    if (c->srv->queued_total > cap && (c->queued >= cap / 8 || c->srv->queued_total > 2 * cap)) {
        c->srv->paused_for_total = true;
        stop_reading(c);
    }
    return true;
}

/* cluster.tls: encrypts the corked frames (each is freed at once: what stays queued is the
 * ciphertext, and that is what is counted) and writes whatever ciphertext the session has, also
 * with nothing corked (handshake records, an alert). A connection marked to close after its last
 * write closes here when nothing is left to write (e.g. an Error before the handshake ended). */
static void flush_tls(ps_conn *c) {
    const size_t n = c->n_cork;
    c->n_cork = 0;
    const bool closing = uv_is_closing((uv_handle_t *)&c->tcp);
    bool ok = !closing;
    for (size_t i = 0; i < n; i++) {
        ps_error err = {0};
        if (ok && !ps_tls_failed(c->tls) &&
            ps_tls_write(c->tls, (const uint8_t *)c->cork[i].base, c->cork[i].len, &err) != PS_OK) {
            ps_log(&c->srv->opt.log, PS_LOG_ERROR, "%s: %s", c->peer, err.msg);
            ok = false;
        }
        ps_frame_release(&c->srv->fcache, (uint8_t *)c->cork[i].base);
    }
    if (closing) return;
    if (!ok) {
        ps_conn_close(c);
        return;
    }
    uint8_t *out;
    size_t len;
    ps_tls_take(c->tls, &out, &len);
    if (len > 0) {
        write_req *w = malloc(sizeof(*w) + sizeof(uv_buf_t));
        if (w == NULL) {
            free(out);
            ps_log(&c->srv->opt.log, PS_LOG_ERROR, "%s: out of memory queueing a reply", c->peer);
            ps_conn_close(c);
            return;
        }
        w->conn = c, w->n = 1, w->bufs[0] = uv_buf_init((char *)out, (unsigned)len);
        w->bytes = heap_bytes(malloc_usable_size(out)) + heap_bytes(sizeof(*w) + sizeof(uv_buf_t));
        if (!submit(c, w)) {
            free(out);
            return;
        }
    }
    if (c->close_after_write && c->pending_writes == 0) ps_conn_close(c);
}

/* Writes every corked frame in one uv_write. */
static void flush(ps_conn *c) {
    if (c->tls != NULL) {
        flush_tls(c);
        return;
    }
    if (c->n_cork == 0) return;
    size_t n = c->n_cork, bytes = 0;
    c->n_cork = 0;
    if (uv_is_closing((uv_handle_t *)&c->tcp)) goto drop;
    write_req *w = malloc(sizeof(*w) + n * sizeof(uv_buf_t));
    if (w == NULL) {
        ps_log(&c->srv->opt.log, PS_LOG_ERROR, "%s: out of memory queueing a reply", c->peer);
        ps_conn_close(c);
        goto drop;
    }
    /* real bytes: each frame's allocation and this write's bookkeeping, as the heap holds them */
    for (size_t i = 0; i < n; i++) bytes += heap_bytes(malloc_usable_size(c->cork[i].base));
    bytes += heap_bytes(sizeof(*w) + n * sizeof(uv_buf_t));
    memcpy(w->bufs, c->cork, n * sizeof(uv_buf_t));
    w->conn = c, w->n = n, w->bytes = bytes;
    if (submit(c, w)) return;
drop:
    for (size_t i = 0; i < n; i++) free(c->cork[i].base);
}

void ps_conn_send(ps_conn *c, uint8_t *frame, size_t len) {
    if (uv_is_closing((uv_handle_t *)&c->tcp)) {
        free(frame);
        return;
    }
    if (c->n_cork == c->cap_cork) {
        size_t cap = c->cap_cork ? c->cap_cork * 2 : 8;
        uv_buf_t *nb = realloc(c->cork, cap * sizeof(*nb));
        if (nb == NULL) {
            free(frame);
            ps_log(&c->srv->opt.log, PS_LOG_ERROR, "%s: out of memory queueing a reply", c->peer);
            ps_conn_close(c);
            return;
        }
        c->cork = nb, c->cap_cork = cap;
    }
    c->cork[c->n_cork++] = uv_buf_init((char *)frame, (unsigned)len);
    if (!c->corked || len >= PS_FRAME_CACHE_MIN) flush(c); /* a big frame gains nothing waiting */
}

void ps_conn_send_error(ps_conn *c, uint64_t request_id, ps_status st, const char *msg,
                        bool fatal) {
    uint8_t *frame;
    size_t len;
    if (fatal) {
        c->close_after_write = true;
        stop_reading(c);
    }
    if (ps_wire_encode_error(request_id, ps_wire_error_code(st), msg, &frame, &len, NULL) != PS_OK) {
        ps_conn_close(c);
        return;
    }
    ps_conn_send(c, frame, len);
}

void ps_conn_accept(ps_server *srv) {
    ps_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) return;
    if (uv_tcp_init(&srv->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->srv = srv;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    c->accepted_ms = c->heard_ms = uv_now(&srv->loop);
    const size_t first_max = srv->job->max_frame_bytes < PS_HELLO_MAX_FRAME
                                 ? srv->job->max_frame_bytes
                                 : PS_HELLO_MAX_FRAME;
    int rc = uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp);
    if (rc != 0 || ps_framer_create(first_max, &c->framer, NULL) != PS_OK) {
        ps_log(&srv->opt.log, PS_LOG_WARN, "accept: %s", rc ? uv_strerror(rc) : "out of memory");
        ps_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(c->peer, sizeof(c->peer), "peer");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        char ip[48] = "?";
        uv_ip_name((struct sockaddr *)&ss, ip, sizeof(ip));
        const int port = ps_sockaddr_port(&ss);
        snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
        snprintf(c->ip, sizeof(c->ip), "%s", ip);
        struct sockaddr_storage self;
        int self_len = sizeof(self);
        char self_ip[48] = "";
        if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&self, &self_len) == 0)
            uv_ip_name((struct sockaddr *)&self, self_ip, sizeof(self_ip));
        c->local_peer = strcmp(self_ip, ip) == 0;
    }
    if (srv->tls != NULL) { /* from here on every frame, refusals too, goes through it */
        ps_error err = {0};
        if (ps_tls_create(srv->tls, c->peer, NULL, &c->tls, &err) != PS_OK) {
            ps_log(&srv->opt.log, PS_LOG_WARN, "%s: %s", c->peer, err.msg);
            ps_conn_close(c);
            return;
        }
    }
    if (srv->n_conns > srv->job->max_connections) {
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: refused: %zu connections, limit %u", c->peer,
               srv->n_conns, srv->job->max_connections);
        ps_conn_send_error(c, 0, PS_TOO_LARGE, "too many connections", true);
        return;
    }
    /* Refused while a few descriptors are left, with a reason: past the last one libuv accepts
     * and closes peers without a word to anyone. */
    if (srv->n_conns + PS_FD_RESERVE > srv->fd_limit) {
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: refused: %zu connections use the descriptors "
               "this process may open (%zu, ulimit -n)", c->peer, srv->n_conns, srv->fd_limit);
        ps_conn_send_error(c, 0, PS_TOO_LARGE, "the server is out of file descriptors", true);
        return;
    }
    const uint64_t locked = ps_server_locked_out(srv, c->ip);
    if (locked > 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too many bad tokens from this address: try again in %llu s",
                 (unsigned long long)(locked + 999) / 1000);
        ps_conn_send_error(c, 0, PS_MISMATCH, msg, true);
        return;
    }
    size_t same = 0;
    for (ps_conn *o = srv->conns; o != NULL; o = o->next)
        same += !uv_is_closing((uv_handle_t *)&o->tcp) && strcmp(o->ip, c->ip) == 0;
    if (same > srv->job->max_connections_per_address) {
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: refused: %zu connections from %s, limit %u "
               "(limits.max_connections_per_address)", c->peer, same, c->ip,
               srv->job->max_connections_per_address);
        ps_conn_send_error(c, 0, PS_TOO_LARGE, "too many connections from this address", true);
        return;
    }
    /* the Challenge: a fresh nonce the peer's Hello proves the token over */
    ps_auth_nonce(c->nonce);
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_challenge_tag;
    env.challenge.nonce.size = PS_AUTH_NONCE_BYTES;
    memcpy(env.challenge.nonce.bytes, c->nonce, PS_AUTH_NONCE_BYTES);
    uint8_t *frame;
    size_t flen;
    if (ps_wire_encode(&env, NULL, NULL, NULL, NULL, NULL, &frame, &flen, NULL) != PS_OK) {
        ps_conn_close(c);
        return;
    }
    ps_conn_send(c, frame, flen);
    start_reading(c);
}

void ps_conn_sweep(ps_server *srv) {
    const uint64_t now = uv_now(&srv->loop);
    const ps_job_config *job = srv->job;
    for (ps_conn *c = srv->conns; c != NULL; c = c->next) {
        if (uv_is_closing((uv_handle_t *)&c->tcp)) continue;
        const bool write_stalled = job->idle_timeout_ms > 0 && c->queued > 0 &&
                                   now - c->write_progress_ms >= job->idle_timeout_ms;
        if (c->close_after_write) { /* its last Error waits behind what it does not read */
            if (write_stalled) ps_conn_close(c);
            continue;
        }
        char msg[128];
        if (!c->hello_done && now - c->accepted_ms >= job->hello_timeout_ms)
            snprintf(msg, sizeof(msg), "no Hello within %u ms (limits.hello_timeout_ms)",
                     job->hello_timeout_ms);
        else if (c->hello_done && job->idle_timeout_ms > 0 && c->dq_head == NULL &&
                 c->queued == 0 && now - c->heard_ms >= job->idle_timeout_ms)
            snprintf(msg, sizeof(msg), "nothing received for %u ms (limits.idle_timeout_ms)",
                     job->idle_timeout_ms);
        else if (write_stalled) { /* an Error would queue behind the rest: close at once */
            ps_log(&srv->opt.log, PS_LOG_WARN, "%s: reads none of its replies for %u ms "
                   "(limits.idle_timeout_ms); closing", c->peer, job->idle_timeout_ms);
            ps_conn_close(c);
            continue;
        } else
            continue;
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: %s; closing", c->peer, msg);
        ps_conn_send_error(c, 0, PS_TIMEOUT, msg, true);
    }
}
