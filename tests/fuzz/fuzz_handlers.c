/* fuzz_handlers.c - libFuzzer target: a real shard's message handling, over a real connection
 * (server/conn.c, server/handlers.c, the stores and, in a sync job, the barrier).
 *
 * Each input gets a fresh ps_server bound to 127.0.0.1:0 (so no state leaks between inputs and a
 * crash reproduces from its input alone). Its loop is not run on a thread: this thread pumps it
 * with uv_run(UV_RUN_NOWAIT) between its own non-blocking socket calls, so the exchange is
 * deterministic and costs no thread hand-offs (the Challenge's nonce is random; the harness
 * answers it with the right mac). The fuzz connection reads the Challenge, says Hello (unless the
 * input says not to), sends the input's frames, and the server is pumped until it is idle; every
 * frame it sends must decode. Then a second connection must still get a valid Pull answered with
 * the right number of rows. Sockets close with RST (SO_LINGER 0), which leaves no TIME_WAIT
 * behind however many inputs run.
 *
 * Input: [flags][payload]. flags: 1 sync job (2 workers, barrier timeout 2 ms), 2 no Hello from
 * the harness, 4 its Hello as admin, 8 the payload is the raw byte stream (else pieces split at
 * "\xF5\xF5\xF5\xF5", each sent as one frame), 16 pump the server between pieces, 32 a piece
 * that is a Hello gets the right mac for its own job, role and rank before it is sent. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "frame.h"
#include "fuzz_util.h"
#include "server_internal.h"
#include "wire.h"

#define DELIM "\xF5\xF5\xF5\xF5"
#define DEADLINE_MS 3000 /* the server must go idle or answer within this */

#define JOB(extra)                                                                                 \
    "{\"job_id\": \"fz\", \"seed\": 3,"                                                            \
    " \"cluster\": {\"servers\": 1, \"workers\": 2, \"token\": \"tok\","                           \
    "  \"request_timeout_ms\": 1000" extra "},"                                                    \
    " \"limits\": {\"max_frame_bytes\": 65536, \"max_keys_per_request\": 256},"                   \
    " \"server\": {\"threads\": 1, \"busy_poll_us\": 0},"                                          \
    " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"uniform\"}},"            \
    "  {\"name\": \"bias\", \"dim\": 1},"                                                          \
    "  {\"name\": \"rw\", \"dim\": 2, \"optimizer\": {\"rowwise\": true, \"lr_decay\": 0.1}}]}"

static ps_job_config jobs[2];
static bool ready;

typedef struct {
    int fd;
    ps_framer *framer;
    uint8_t nonce[PS_AUTH_NONCE_BYTES]; /* from the server's Challenge */
    size_t frames;
    bool closed;
    pb_size_t last_body;
    uint64_t last_id;
    size_t last_values;
} peer;

static ps_status on_reply(void *ud, const uint8_t *payload, size_t len) {
    peer *p = ud;
    ps_msg m;
    ps_error err = {0};
    FZ_CHECK(ps_wire_decode(payload, len, &m, &err) == PS_OK, "the server sent a frame that "
             "does not decode: %s", err.msg);
    if (p->frames == 0 && m.env.which_body == ps_Envelope_challenge_tag &&
        m.env.challenge.nonce.size == PS_AUTH_NONCE_BYTES)
        memcpy(p->nonce, m.env.challenge.nonce.bytes, PS_AUTH_NONCE_BYTES);
    p->frames++;
    p->last_body = m.env.which_body;
    p->last_id = m.env.request_id;
    p->last_values = m.values.len;
    return PS_OK;
}

/* Reads what the server sent; returns the bytes read. */
static size_t drain(peer *p) {
    uint8_t buf[65536];
    size_t total = 0;
    while (!p->closed) {
        ssize_t r = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r <= 0) {
            p->closed = true;
            break;
        }
        ps_error err = {0};
        FZ_CHECK(ps_framer_feed(p->framer, buf, (size_t)r, on_reply, p, &err) == PS_OK,
                 "the server's reply stream: %s", err.msg);
        total += (size_t)r;
    }
    return total;
}

/* The first DELIM at or after p, or NULL. */
static const uint8_t *find_delim(const uint8_t *p, const uint8_t *end) {
    for (; end - p >= 4; p++)
        if (memcmp(p, DELIM, 4) == 0) return p;
    return NULL;
}

static void pump(ps_server *srv, peer *p) {
    uv_run(&srv->loop, UV_RUN_NOWAIT);
    if (p) drain(p);
}

static void peer_open(peer *p, ps_server *srv) {
    memset(p, 0, sizeof(*p));
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    FZ_CHECK(p->fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_port = htons((uint16_t)ps_server_port(srv));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* non-blocking: libFuzzer's SIGALRM would interrupt a blocking connect */
    int rc = connect(p->fd, (struct sockaddr *)&a, sizeof(a));
    FZ_CHECK(rc == 0 || errno == EINPROGRESS || errno == EINTR, "connect: %s", strerror(errno));
    struct pollfd pfd = {.fd = p->fd, .events = POLLOUT};
    const uint64_t until = fz_now_ms() + DEADLINE_MS;
    while (poll(&pfd, 1, 0) == 0 || !(pfd.revents & (POLLOUT | POLLERR | POLLHUP))) {
        FZ_CHECK(fz_now_ms() < until, "connect: no answer in %d ms", DEADLINE_MS);
        uv_run(&srv->loop, UV_RUN_NOWAIT);
    }
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    FZ_CHECK(soerr == 0, "connect: %s", strerror(soerr));
    int one = 1;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    FZ_CHECK(ps_framer_create(8u << 20, &p->framer, NULL) == PS_OK, "framer");
}

static void wait_frames(ps_server *srv, peer *p, size_t frames, const char *what);

/* Connects and reads the server's Challenge. */
static void peer_connect(peer *p, ps_server *srv) {
    peer_open(p, srv);
    wait_frames(srv, p, 1, "Challenge");
    FZ_CHECK(p->last_body == ps_Envelope_challenge_tag, "the first frame is body %u",
             (unsigned)p->last_body);
}

static void peer_close(peer *p) {
    close(p->fd);
    ps_framer_destroy(p->framer);
}

/* Sends n bytes, pumping the server whenever the socket is full. false once the server closed. */
static bool send_all(ps_server *srv, peer *p, const uint8_t *b, size_t n) {
    const uint64_t until = fz_now_ms() + DEADLINE_MS;
    while (n > 0) {
        ssize_t w = send(p->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            b += w, n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
        pump(srv, p);
        FZ_CHECK(fz_now_ms() < until, "the server stopped reading for %d ms", DEADLINE_MS);
    }
    return true;
}

/* One frame in one send (a header alone in a read is a case of its own: fuzz_frame covers it). */
static bool send_frame(ps_server *srv, peer *p, const uint8_t *payload, size_t n) {
    uint8_t *f = malloc(PS_FRAME_HDR_BYTES + n);
    FZ_CHECK(f != NULL, "malloc");
    ps_frame_put_header(f, (uint32_t)n);
    if (n > 0) memcpy(f + PS_FRAME_HDR_BYTES, payload, n);
    bool ok = send_all(srv, p, f, PS_FRAME_HDR_BYTES + n);
    free(f);
    return ok;
}

static bool send_msg(ps_server *srv, peer *p, const ps_Envelope *env, const ps_bulk *keys) {
    uint8_t *f;
    size_t len;
    FZ_CHECK(ps_wire_encode(env, keys, NULL, NULL, NULL, NULL, &f, &len, NULL) == PS_OK, "encode");
    bool ok = send_all(srv, p, f, len);
    free(f);
    return ok;
}

/* A Hello that proves the job's token over the peer's nonce (common/auth.h). */
static bool hello(ps_server *srv, peer *p, bool admin) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 1;
    env.which_body = ps_Envelope_hello_tag;
    env.hello.protocol_version = PS_PROTOCOL_VERSION;
    strcpy(env.hello.job_id, "fz");
    env.hello.role = admin ? ps_Role_ROLE_ADMIN : ps_Role_ROLE_WORKER;
    env.hello.mac.size = PS_AUTH_MAC_BYTES;
    ps_auth_mac("tok", p->nonce, "fz", env.hello.role, 0, env.hello.mac.bytes);
    return send_msg(srv, p, &env, NULL);
}

/* With a piece that decodes as a Hello: sends it with the right mac for its job, role and rank
 * (*sent: whether the server still reads) and returns true; false for any other piece. */
static bool signed_hello(ps_server *srv, peer *p, const uint8_t *piece, size_t n, bool *sent) {
    ps_msg m;
    if (ps_wire_decode(piece, n, &m, NULL) != PS_OK || m.env.which_body != ps_Envelope_hello_tag)
        return false;
    ps_Envelope env = m.env;
    env.cb_body = (pb_callback_t){0}; /* F1 */
    env.hello.mac.size = PS_AUTH_MAC_BYTES;
    ps_auth_mac("tok", p->nonce, env.hello.job_id, env.hello.role, env.hello.rank,
                env.hello.mac.bytes);
    *sent = send_msg(srv, p, &env, NULL);
    return true;
}

/* Pumps until the peer has received `frames` frames in all. */
static void wait_frames(ps_server *srv, peer *p, size_t frames, const char *what) {
    const uint64_t until = fz_now_ms() + DEADLINE_MS;
    while (p->frames < frames) {
        FZ_CHECK(!p->closed, "%s: the server closed the connection", what);
        FZ_CHECK(fz_now_ms() < until, "%s: no reply within %d ms", what, DEADLINE_MS);
        pump(srv, p);
    }
}

/* Pumps until three rounds in a row move no bytes and no connection waits for the barrier. */
static void wait_idle(ps_server *srv, peer *p) {
    const uint64_t until = fz_now_ms() + DEADLINE_MS;
    for (int quiet = 0; quiet < 3;) {
        uv_run(&srv->loop, UV_RUN_NOWAIT);
        size_t got = drain(p);
        if (srv->n_parked > 0) {
            usleep(100); /* a parked pull waits for the barrier's stall timer */
            quiet = 0;
        } else {
            quiet = got == 0 ? quiet + 1 : 0;
        }
        FZ_CHECK(fz_now_ms() < until, "the server is still busy (%zu parked) after %d ms",
                 srv->n_parked, DEADLINE_MS);
    }
}

static void init(void) {
    ps_error err = {0};
    FZ_CHECK(ps_config_parse(JOB(""), "fuzz-async.json", NULL, 0, &jobs[0], &err) == PS_OK,
             "%s", err.msg);
    FZ_CHECK(ps_config_parse(JOB(", \"consistency\": \"sync\", \"barrier_timeout_ms\": 2"),
                             "fuzz-sync.json", NULL, 0, &jobs[1], &err) == PS_OK,
             "%s", err.msg);
    ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ready) init();
    fz_in in = {data, size};
    const uint8_t flags = fz_u8(&in);
    const ps_job_config *job = &jobs[flags & 1];
    ps_server_options opt = {.job = job, .listen = "127.0.0.1:0",
                             .log = {.out = fz_devnull(), .level = PS_LOG_DEBUG}};
    ps_server *srv;
    ps_error err = {0};
    FZ_CHECK(ps_server_create(&opt, &srv, &err) == PS_OK, "server: %s", err.msg);

    /* the fuzz connection */
    peer p;
    peer_connect(&p, srv);
    bool up = true;
    if (!(flags & 2)) {
        up = hello(srv, &p, flags & 4);
        wait_frames(srv, &p, 2, "Hello");
        FZ_CHECK(p.last_body == ps_Envelope_hello_reply_tag, "a valid Hello got body %u",
                 (unsigned)p.last_body);
    }
    if (flags & 8) {
        up = up && send_all(srv, &p, in.p, in.n);
    } else {
        const uint8_t *at = in.p, *end = in.p + in.n;
        while (up) {
            const uint8_t *d = find_delim(at, end);
            const uint8_t *stop = d ? d : end;
            up = (flags & 32) && signed_hello(srv, &p, at, (size_t)(stop - at), &up)
                     ? up
                     : send_frame(srv, &p, at, (size_t)(stop - at));
            if (flags & 16) pump(srv, &p);
            if (d == NULL) break;
            at = d + 4;
        }
    }
    wait_idle(srv, &p);
    peer_close(&p); /* RST: the server sees ECONNRESET (a worker of a sync job is dropped) */

    /* whatever came before, a well-behaved client is served */
    peer q;
    peer_connect(&q, srv);
    FZ_CHECK(hello(srv, &q, true), "the server closed a new connection");
    wait_frames(srv, &q, 2, "Hello after the input");
    FZ_CHECK(q.last_body == ps_Envelope_hello_reply_tag, "Hello after the input: body %u",
             (unsigned)q.last_body);
    const uint64_t keys[3] = {7, 1u << 20, UINT64_MAX};
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 2;
    env.which_body = ps_Envelope_pull_tag;
    env.pull.table = 0;
    ps_bulk bk = {.src = {(const uint8_t *)keys, sizeof(keys)}};
    FZ_CHECK(send_msg(srv, &q, &env, &bk), "the server closed a new connection");
    wait_frames(srv, &q, 3, "Pull after the input");
    FZ_CHECK(q.last_body == ps_Envelope_values_tag && q.last_id == 2 &&
                 q.last_values == 3 * 4 * sizeof(float),
             "Pull after the input: body %u, id %llu, %zu bytes of values", (unsigned)q.last_body,
             (unsigned long long)q.last_id, q.last_values);
    peer_close(&q);
    ps_server_destroy(srv);
    return 0;
}
