/* test_tls.c - cluster.tls on loopback: a TLS server and client give the same rows, bit for bit,
 * as plaintext; a client refuses a server its CA did not sign or whose certificate names another
 * address; plaintext peers of a TLS server (and TLS clients of a plaintext one) are turned away
 * quickly while everyone else is served; the wire carries no plaintext; a peer that does not read
 * is held to its limit in ciphertext; the job file's cluster.tls is checked. The certificates are
 * tests/ref/tls/ (tests/ref/make_tls.sh; test-only keys). */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tls.h"
#include "testutil.h"

#define REF PS_SOURCE_DIR "/tests/ref/tls/"

TestSuite(tls, .timeout = 60);

/* A job of two tables; with ca (a file in tests/ref/tls/) it is a TLS job whose servers use
 * server.pem/server.key and whose clients trust ca. */
static void make_job(ps_job_config *j, const char *job_id, int servers, const char *ca,
                     const char *more) {
    char tls[512] = "", json[1400];
    if (ca != NULL)
        snprintf(tls, sizeof(tls),
                 ", \"tls\": {\"cert\": \"" REF "server.pem\", \"key\": \"" REF "server.key\","
                 " \"ca\": \"" REF "%s\"}", ca);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"%s\", \"seed\": 3, \"cluster\": {\"servers\": %d,"
             " \"connect_timeout_ms\": 5000, \"request_timeout_ms\": 5000%s}%s,"
             " \"tables\": [{\"name\": \"secret_table\", \"dim\": 16, \"init\": {\"type\":"
             " \"uniform\"}}, {\"name\": \"w\", \"dim\": 3}]}",
             job_id, servers, tls, more ? more : "");
    tu_job(json, j);
}

/* --- servers whose log we read ------------------------------------------------------------- */

typedef struct {
    ps_server *srv;
    pthread_t th;
    FILE *log;
    char addr[64];
} server;

static void *serve(void *arg) {
    ps_server_run(((server *)arg)->srv, NULL);
    return NULL;
}

/* Shard `shard` of job on listen ("127.0.0.1:0"), logging warnings to a file we read at stop. */
static server *start_on(const ps_job_config *job, uint32_t shard, const char *listen) {
    signal(SIGPIPE, SIG_IGN);
    server *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    s->log = tmpfile();
    cr_assert_not_null(s->log);
    ps_server_options opt = {.job = job, .shard = shard, .listen = listen,
                             .log = {.out = s->log, .level = PS_LOG_WARN}};
    ps_error err = {0};
    cr_assert_eq(ps_server_create(&opt, &s->srv, &err), PS_OK, "server: %s", err.msg);
    char host[64];
    uint16_t port;
    cr_assert_eq(ps_parse_hostport(listen, host, sizeof(host), &port, NULL), PS_OK);
    snprintf(s->addr, sizeof(s->addr), "%s:%d", host, ps_server_port(s->srv));
    cr_assert_eq(pthread_create(&s->th, NULL, serve, s), 0);
    return s;
}
static server *start(const ps_job_config *job, uint32_t shard) {
    return start_on(job, shard, "127.0.0.1:0");
}

static int port_of(const server *s) { return ps_server_port(s->srv); }

/* Stops and frees s; returns what it logged (malloc'd). */
static char *stop(server *s) {
    ps_server_stop(s->srv);
    pthread_join(s->th, NULL);
    ps_server_destroy(s->srv);
    long n = ftell(s->log);
    char *text = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    rewind(s->log);
    if (n > 0) cr_assert_eq(fread(text, 1, (size_t)n, s->log), (size_t)n);
    fclose(s->log);
    free(s);
    return text;
}

static void use(ps_job_config *j, server *const *s, int n) {
    j->num_servers = (uint32_t)n;
    for (int i = 0; i < n; i++) snprintf(j->servers[i], PS_ADDR_MAX, "%s", s[i]->addr);
}

static ps_status try_client(const ps_job_config *j, ps_client **c, ps_error *err) {
    ps_client_options o = {.job = j, .log = {.level = PS_LOG_ERROR}};
    *c = NULL;
    return ps_client_create(&o, c, err);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A push and a pull of a few rows of table 0 give what they give on a fresh plaintext shard. */
static void works(ps_client *c) {
    uint64_t keys[3] = {11, 12, 13};
    float g[3 * 16], got[3 * 16];
    for (int i = 0; i < 3 * 16; i++) g[i] = 0.01f * (float)(i - 20);
    ps_error err = {0};
    cr_assert_eq(ps_client_push(c, 0, keys, 3, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(c, 0, keys, 3, got, &err), PS_OK, "%s", err.msg);
}

/* --- the same results as plaintext ----------------------------------------------------------- */

/* Pushes the same gradients (small requests, a PushPull, and pushes of every key) to a TLS job
 * and a plaintext job of 2 shards each, and pulls n keys from both: bit for bit the same rows. */
static void compare_with_plaintext(size_t n) {
    ps_job_config jt, jp;
    make_job(&jt, "same", 2, "ca.pem", NULL);
    make_job(&jp, "same", 2, NULL, NULL);
    server *st[2] = {start(&jt, 0), start(&jt, 1)}, *sp[2] = {start(&jp, 0), start(&jp, 1)};
    use(&jt, st, 2), use(&jp, sp, 2);
    ps_client *ct, *cp;
    ps_error err = {0};
    cr_assert_eq(try_client(&jt, &ct, &err), PS_OK, "TLS client: %s", err.msg);
    cr_assert_eq(try_client(&jp, &cp, &err), PS_OK, "client: %s", err.msg);
    const size_t D = 16;
    uint64_t *keys = malloc(n * sizeof(uint64_t));
    float *g = malloc(n * D * sizeof(float)), *a = malloc(n * D * sizeof(float)),
          *b = malloc(n * D * sizeof(float));
    cr_assert(keys && g && a && b);
    for (size_t i = 0; i < n; i++) {
        keys[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
        for (size_t d = 0; d < D; d++) g[i * D + d] = 0.001f * (float)((i * 7 + d * 3) % 101) - 0.05f;
    }
    for (int round = 0; round < 3; round++) {
        ps_client *cs[2] = {ct, cp};
        for (int k = 0; k < 2; k++) {
            ps_client *c = cs[k];
            const size_t small = n < 100 ? n : 100;
            cr_assert_eq(ps_client_push(c, 0, keys, small, g, &err), PS_OK, "%s", err.msg);
            cr_assert_eq(ps_client_pushpull(c, 0, keys + 1, small - 1, g, keys, small,
                                            k ? b : a, &err), PS_OK, "%s", err.msg);
            cr_assert_eq(ps_client_push(c, 0, keys, n, g, &err), PS_OK, "%s", err.msg);
            float w[3] = {0.5f, -1.0f, 0.25f};
            uint64_t k0 = 0;
            cr_assert_eq(ps_client_push(c, 1, &k0, 1, w, &err), PS_OK, "%s", err.msg);
        }
        cr_assert_eq(memcmp(a, b, (n < 100 ? n : 100) * D * sizeof(float)), 0,
                     "round %d: PushPull rows differ", round);
    }
    memset(a, 0, n * D * sizeof(float)), memset(b, 0xff, n * D * sizeof(float));
    cr_assert_eq(ps_client_pull(ct, 0, keys, n, a, &err), PS_OK, "TLS pull: %s", err.msg);
    cr_assert_eq(ps_client_pull(cp, 0, keys, n, b, &err), PS_OK, "pull: %s", err.msg);
    cr_assert_eq(memcmp(a, b, n * D * sizeof(float)), 0, "pulled rows differ");
    float wa[3], wb[3];
    uint64_t k0 = 0;
    cr_assert_eq(ps_client_pull(ct, 1, &k0, 1, wa, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(cp, 1, &k0, 1, wb, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(memcmp(wa, wb, sizeof(wa)), 0);
    ps_client_destroy(ct), ps_client_destroy(cp);
    for (int s = 0; s < 2; s++) free(stop(st[s])), free(stop(sp[s]));
    free(keys), free(g), free(a), free(b);
}

Test(tls, push_and_pull_give_the_rows_of_plaintext) { compare_with_plaintext(1000); }

/* 200 000 keys x dim 16: a 14 MB push, and a pull whose 12.8 MB of rows come back as several
 * 4 MiB Values parts per shard, through TLS records. */
Test(tls, a_big_pull_in_several_parts) { compare_with_plaintext(200000); }

/* --- certificates ------------------------------------------------------------------------------ */

/* A client that trusts another CA refuses the server with OpenSSL's reason and the server's
 * address; the server logs the failed handshake and serves a good client on. */
Test(tls, a_client_with_another_ca_refuses_the_server) {
    ps_job_config j, bad;
    make_job(&j, "ca", 1, "ca.pem", NULL);
    make_job(&bad, "ca", 1, "other_ca.pem", NULL);
    server *s = start(&j, 0);
    use(&j, &s, 1), use(&bad, &s, 1);
    ps_client *c;
    ps_error err = {0};
    double t0 = now_s();
    cr_assert_eq(try_client(&bad, &c, &err), PS_MISMATCH, "%s", err.msg);
    cr_assert_lt(now_s() - t0, 3.0);
    char want[128];
    snprintf(want, sizeof(want), "TLS handshake with %s failed: certificate verify failed", s->addr);
    cr_assert(strstr(err.msg, want) != NULL, "%s", err.msg);
    cr_assert_eq(try_client(&j, &c, &err), PS_OK, "%s", err.msg);
    works(c);
    ps_client_destroy(c);
    char *log = stop(s);
    cr_assert(strstr(log, "TLS handshake with 127.0.0.1:") && strstr(log, "failed: "), "%s", log);
    free(log);
}

/* The certificate must name the address dialled: it names IP 127.0.0.1 and DNS localhost, so a
 * server reached as 127.0.0.2 (loopback too) is refused, and as localhost accepted. */
Test(tls, the_certificate_must_name_the_server) {
    ps_job_config j;
    make_job(&j, "name", 1, "ca.pem", NULL);
    server *s = start_on(&j, 0, "127.0.0.2:0");
    use(&j, &s, 1);
    ps_client *c;
    ps_error err = {0};
    cr_assert_eq(try_client(&j, &c, &err), PS_MISMATCH, "%s", err.msg);
    cr_assert(strstr(err.msg, "certificate verify failed (IP address mismatch)"), "%s", err.msg);
    free(stop(s));
    s = start(&j, 0);
    snprintf(j.servers[0], PS_ADDR_MAX, "localhost:%d", port_of(s));
    cr_assert_eq(try_client(&j, &c, &err), PS_OK, "%s", err.msg);
    works(c);
    ps_client_destroy(c);
    free(stop(s));
}

/* --- peers that do not speak TLS ---------------------------------------------------------------- */

static int raw_connect(const char *ip, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect: %s", strerror(errno));
    return fd;
}

/* true when the peer closes (EOF or reset) within the 5 s receive timeout */
static bool closed_soon(int fd) {
    uint8_t b[4096];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof(b), 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
        if (r < 0) return false;
    }
}

/* A plaintext client (a Hello frame where a ClientHello belongs) is closed with a log line, and
 * one that says nothing at all is closed after limits.hello_timeout_ms: the handshake is
 * bounded by it too. A good client is served all along. */
Test(tls, a_plaintext_client_is_closed_and_others_are_served) {
    ps_job_config j;
    make_job(&j, "plain", 1, "ca.pem", ", \"limits\": {\"hello_timeout_ms\": 400}");
    server *s = start(&j, 0);
    use(&j, &s, 1);
    ps_client *good;
    ps_error err = {0};
    cr_assert_eq(try_client(&j, &good, &err), PS_OK, "%s", err.msg);
    int fd = raw_connect("127.0.0.1", port_of(s)), mute = raw_connect("127.0.0.1", port_of(s));
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 1;
    env.which_body = ps_Envelope_hello_tag;
    env.hello.protocol_version = PS_PROTOCOL_VERSION;
    env.hello.role = ps_Role_ROLE_WORKER;
    snprintf(env.hello.job_id, sizeof(env.hello.job_id), "plain");
    double t0 = now_s();
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    cr_assert(closed_soon(fd), "the plaintext peer was not closed");
    cr_assert_lt(now_s() - t0, 0.3, "closed only by the hello timeout");
    close(fd);
    works(good);
    t0 = now_s();
    cr_assert(closed_soon(mute), "the silent peer was not closed");
    const double took = now_s() - t0;
    cr_assert(took > 0.2 && took < 2.0, "the silent peer was closed after %.2f s", took);
    close(mute);
    works(good);
    ps_client_destroy(good);
    char *log = stop(s);
    cr_assert(strstr(log, "TLS handshake with 127.0.0.1:") && strstr(log, "; closing"), "%s", log);
    cr_assert(strstr(log, "no Hello within 400 ms"), "%s", log);
    free(log);
}

/* A TLS client of a plaintext server fails at once (the server's plaintext Challenge is no TLS
 * record), and of a server that never answers within cluster.request_timeout_ms: no hang. */
Test(tls, a_tls_client_of_a_plaintext_server_fails_within_its_deadline) {
    ps_job_config jp, jt;
    make_job(&jp, "mixed", 1, NULL, NULL);
    make_job(&jt, "mixed", 1, "ca.pem", NULL);
    server *s = start(&jp, 0);
    use(&jt, &s, 1);
    ps_client *c;
    ps_error err = {0};
    double t0 = now_s();
    cr_assert_eq(try_client(&jt, &c, &err), PS_MISMATCH, "%s", err.msg);
    cr_assert_lt(now_s() - t0, 2.0);
    cr_assert(strstr(err.msg, "TLS handshake with 127.0.0.1:"), "%s", err.msg);
    free(stop(s));

    int lfd = socket(AF_INET, SOCK_STREAM, 0); /* accepts (in the kernel) and says nothing */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    cr_assert(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 4) == 0 &&
              getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
    snprintf(jt.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", ntohs(a.sin_port));
    jt.request_timeout_ms = 300;
    t0 = now_s();
    cr_assert_eq(try_client(&jt, &c, &err), PS_TIMEOUT, "%s", err.msg);
    const double took = now_s() - t0;
    cr_assert(took > 0.25 && took < 3.0, "gave up after %.2f s", took);
    cr_assert(strstr(err.msg, "TLS handshake with") && strstr(err.msg, "300 ms"), "%s", err.msg);
    close(lfd);
}

/* --- what travels -------------------------------------------------------------------------------- */

/* A TCP relay on loopback that records every byte both ways, for one connection. */
typedef struct {
    int lfd, port, target;
    uint8_t *seen;
    size_t seen_len, seen_cap;
    pthread_t th;
} relay;

static void record(relay *r, const uint8_t *p, size_t n) {
    if (r->seen_len + n > r->seen_cap) {
        r->seen_cap = (r->seen_len + n) * 2;
        r->seen = realloc(r->seen, r->seen_cap);
    }
    memcpy(r->seen + r->seen_len, p, n);
    r->seen_len += n;
}

static void *relay_run(void *arg) {
    relay *r = arg;
    int a = accept(r->lfd, NULL, NULL);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->target)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (a < 0 || connect(b, (struct sockaddr *)&to, sizeof(to)) != 0) goto done;
    static uint8_t buf[1 << 16];
    struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, 10000) <= 0) break;
        int from = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 0 : 1;
        ssize_t n = recv(p[from].fd, buf, sizeof(buf), 0);
        if (n <= 0 || !tu_send_all(p[1 - from].fd, buf, (size_t)n)) break;
        record(r, buf, (size_t)n);
    }
done:
    if (a >= 0) close(a);
    close(b);
    return NULL;
}

static void relay_start(relay *r, int target) {
    *r = (relay){.target = target};
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    cr_assert(bind(r->lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(r->lfd, 1) == 0 &&
              getsockname(r->lfd, (struct sockaddr *)&a, &alen) == 0);
    r->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&r->th, NULL, relay_run, r), 0);
}

static bool seen(const relay *r, const void *s, size_t n) {
    return memmem(r->seen, r->seen_len, s, n) != NULL;
}

/* Through a recording relay: a TLS job's bytes hold neither its job id, nor a table name, nor
 * the gradients pushed; the same job in plaintext shows all three (so the check can fail). */
Test(tls, the_wire_carries_no_plaintext) {
    for (int tls = 1; tls >= 0; tls--) {
        ps_job_config j;
        make_job(&j, "job-id-on-the-wire", 1, tls ? "ca.pem" : NULL, NULL);
        server *s = start(&j, 0);
        relay r;
        relay_start(&r, port_of(s));
        snprintf(j.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", r.port);
        j.num_servers = 1;
        ps_client *c;
        ps_error err = {0};
        cr_assert_eq(try_client(&j, &c, &err), PS_OK, "%s", err.msg);
        uint64_t keys[4] = {1, 2, 3, 4};
        float g[4 * 16], out[4 * 16];
        for (int i = 0; i < 4 * 16; i++) g[i] = 1234.5f; /* 0x449a5000, easy to spot */
        cr_assert_eq(ps_client_push(c, 0, keys, 4, g, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(ps_client_pull(c, 0, keys, 4, out, &err), PS_OK, "%s", err.msg);
        ps_client_destroy(c);
        pthread_join(r.th, NULL);
        close(r.lfd);
        free(stop(s));
        cr_assert_gt(r.seen_len, 600, "tls %d: %zu bytes", tls, r.seen_len);
        const bool job = seen(&r, "job-id-on-the-wire", 18), table = seen(&r, "secret_table", 12),
                   grads = seen(&r, g, 16 * sizeof(float));
        if (tls)
            cr_assert(!job && !table && !grads, "in the clear: job %d, table %d, grads %d", job,
                      table, grads);
        else
            cr_assert(job && table && grads, "the control missed: job %d, table %d, grads %d", job,
                      table, grads);
        free(r.seen);
    }
}

/* --- a TLS peer by hand: what the server holds for one that does not read ------------------------ */

typedef struct {
    int fd;
    ps_tls *t;
    uint8_t *buf; /* plaintext received, not yet taken as frames */
    size_t len, cap;
} raw_tls;

static ps_status raw_plain(void *ud, const uint8_t *p, size_t n, ps_error *err) {
    raw_tls *r = ud;
    (void)err;
    if (r->len + n > r->cap) {
        r->cap = (r->len + n) * 2;
        r->buf = realloc(r->buf, r->cap);
        cr_assert_not_null(r->buf);
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    return PS_OK;
}

static void raw_flush(raw_tls *r) {
    uint8_t *out;
    size_t len;
    ps_tls_take(r->t, &out, &len);
    if (len > 0) cr_assert(tu_send_all(r->fd, out, len));
    free(out);
}

static bool raw_fill(raw_tls *r) {
    static uint8_t in[1 << 16];
    ssize_t n = recv(r->fd, in, sizeof(in), 0);
    if (n <= 0) return false;
    ps_error err = {0};
    cr_assert_eq(ps_tls_feed(r->t, in, (size_t)n, raw_plain, r, &err), PS_OK, "%s", err.msg);
    raw_flush(r);
    return true;
}

static void raw_send(raw_tls *r, const ps_Envelope *env, const ps_bulk *keys) {
    uint8_t *frame;
    size_t len;
    cr_assert_eq(ps_wire_encode(env, keys, NULL, NULL, NULL, NULL, &frame, &len, NULL), PS_OK);
    cr_assert_eq(ps_tls_write(r->t, frame, len, NULL), PS_OK);
    free(frame);
    raw_flush(r);
}

/* One frame; *payload is malloc'd. */
static bool raw_read_msg(raw_tls *r, ps_msg *m, uint8_t **payload) {
    for (;;) {
        if (r->len >= 4) {
            size_t n = (size_t)r->buf[0] << 24 | (size_t)r->buf[1] << 16 |
                       (size_t)r->buf[2] << 8 | r->buf[3];
            if (r->len >= 4 + n) {
                *payload = malloc(n + 1);
                memcpy(*payload, r->buf + 4, n);
                memmove(r->buf, r->buf + 4 + n, r->len - 4 - n);
                r->len -= 4 + n;
                return ps_wire_decode(*payload, n, m, NULL) == PS_OK;
            }
        }
        if (!raw_fill(r)) return false;
    }
}

/* Connects, completes the handshake, reads the Challenge and says Hello (a job without a token). */
static void raw_open(raw_tls *r, ps_tls_ctx *ctx, int port, const char *job_id) {
    *r = (raw_tls){.fd = raw_connect("127.0.0.1", port)};
    ps_error err = {0};
    cr_assert_eq(ps_tls_create(ctx, "raw", "127.0.0.1", &r->t, &err), PS_OK, "%s", err.msg);
    raw_flush(r);
    while (!ps_tls_ready(r->t)) cr_assert(raw_fill(r), "handshake cut");
    ps_msg m;
    uint8_t *p;
    cr_assert(raw_read_msg(r, &m, &p) && m.env.which_body == ps_Envelope_challenge_tag);
    free(p);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 1;
    env.which_body = ps_Envelope_hello_tag;
    env.hello.protocol_version = PS_PROTOCOL_VERSION;
    env.hello.role = ps_Role_ROLE_ADMIN;
    snprintf(env.hello.job_id, sizeof(env.hello.job_id), "%s", job_id);
    raw_send(r, &env, NULL);
    cr_assert(raw_read_msg(r, &m, &p) && m.env.which_body == ps_Envelope_hello_reply_tag);
    free(p);
}

static void raw_close(raw_tls *r) {
    close(r->fd);
    ps_tls_destroy(r->t);
    free(r->buf);
}

/* A pull of 1M rows x dim 16 (64 MB of rows) from a TLS peer that does not read: the server
 * encrypts a part at a time as the socket drains and counts the ciphertext it holds, so it stays
 * near the watermark (2 parts) instead of holding the reply; once read, every row is there. */
Test(tls, a_peer_that_does_not_read_is_held_to_its_limit) {
    ps_job_config j;
    make_job(&j, "held", 1, "ca.pem", NULL);
    server *s = start(&j, 0);
    ps_tls_ctx *ctx;
    ps_error err = {0};
    cr_assert_eq(ps_tls_client_ctx(REF "ca.pem", &ctx, &err), PS_OK, "%s", err.msg);
    raw_tls a, b;
    raw_open(&a, ctx, port_of(s), "held");
    enum { N = 1 << 20 };
    uint64_t *keys = malloc(N * sizeof(uint64_t));
    for (uint64_t i = 0; i < N; i++) keys[i] = i;
    ps_bulk kb = {.src = {(const uint8_t *)keys, N * sizeof(uint64_t)}};
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 7;
    env.which_body = ps_Envelope_pull_tag;
    raw_send(&a, &env, &kb);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    raw_open(&b, ctx, port_of(s), "held");
    env = (ps_Envelope)ps_Envelope_init_zero;
    env.request_id = 2;
    env.which_body = ps_Envelope_stats_tag;
    raw_send(&b, &env, NULL);
    ps_msg m;
    uint8_t *p;
    cr_assert(raw_read_msg(&b, &m, &p) && m.env.which_body == ps_Envelope_stats_reply_tag,
              "no stats: the server is stalled");
    const uint64_t q = m.env.stats_reply.queued_bytes;
    free(p);
    cr_assert_gt(q, 1u << 20, "%llu bytes queued: is the ciphertext counted?",
                 (unsigned long long)q);
    cr_assert_lt(q, 16u << 20, "%llu bytes held for a peer that does not read",
                 (unsigned long long)q);
    size_t rows = 0;
    for (bool more = true; more;) {
        cr_assert(raw_read_msg(&a, &m, &p), "reply cut at row %zu", rows);
        cr_assert_eq(m.env.which_body, ps_Envelope_values_tag);
        cr_assert_eq(m.env.values.first_row, rows);
        rows += m.values.len / 64;
        more = m.env.values.more;
        free(p);
    }
    cr_assert_eq(rows, N);
    raw_close(&a), raw_close(&b);
    ps_tls_ctx_destroy(ctx);
    free(keys);
    free(stop(s));
}

/* --- the job file ------------------------------------------------------------------------------- */

static ps_status parse(const char *tls, ps_job_config *j, ps_error *err) {
    char json[1024];
    snprintf(json, sizeof(json), "{\"cluster\": {\"tls\": %s}}", tls);
    return ps_config_parse(json, "job.json", NULL, 0, j, err);
}

Test(tls, the_job_file_is_checked) {
    static const struct { const char *tls, *want; } bad[] = {
        {"{\"cert\": \"a\", \"key\": \"b\", \"cafile\": \"c\"}",
         "job.json: cluster.tls.cafile: unknown key (known here: cert, key, ca)"},
        {"{\"cert\": \"a\"}", "job.json: cluster.tls.key: missing"},
        {"{\"key\": \"a\", \"ca\": \"c\"}", "job.json: cluster.tls.cert: missing"},
        {"{}", "job.json: cluster.tls: needs \"cert\" and \"key\" (servers) or \"ca\""},
        {"true", "job.json: cluster.tls: must be an object"},
        {"{\"ca\": 3}", "job.json: cluster.tls.ca: must be a string"},
    };
    ps_job_config j;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ps_error err = {0};
        cr_assert_eq(parse(bad[i].tls, &j, &err), PS_CONFIG, "%s", bad[i].tls);
        cr_assert(strstr(err.msg, bad[i].want), "%s: %s", bad[i].tls, err.msg);
    }
    ps_error err = {0};
    cr_assert_eq(ps_config_parse("{}", "job.json", NULL, 0, &j, &err), PS_OK);
    cr_assert(!j.tls.on);
    cr_assert_eq(parse("{\"ca\": \"c.pem\"}", &j, &err), PS_OK, "%s", err.msg);
    cr_assert(j.tls.on && strcmp(j.tls.ca, "c.pem") == 0);

    /* each process needs its own role's files, named with their key when they are missing */
    cr_assert_eq(ps_config_tls_files(&j, false, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "job.json: cluster.tls.ca: cannot read c.pem: No such file"), "%s",
              err.msg);
    cr_assert_eq(ps_config_tls_files(&j, true, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "job.json: cluster.tls.cert: missing"), "%s", err.msg);
    ps_server_options o = {.job = &j, .listen = "127.0.0.1:0", .log = {.level = PS_LOG_ERROR}};
    ps_server *srv = NULL;
    cr_assert_eq(parse("{\"cert\": \"" REF "server.pem\", \"key\": \"/nonexistent/k.pem\"}", &j,
                       &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_server_create(&o, &srv, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "job.json: cluster.tls.key: cannot read /nonexistent/k.pem"), "%s",
              err.msg);
    /* a file that is there but is no key of the certificate: OpenSSL's reason */
    cr_assert_eq(parse("{\"cert\": \"" REF "server.pem\", \"key\": \"" REF "ca.pem\"}", &j, &err),
                 PS_OK);
    cr_assert_eq(ps_server_create(&o, &srv, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "job.json: cluster.tls: private key " REF "ca.pem: "), "%s",
              err.msg);
    cr_assert_eq(parse("{\"ca\": \"" REF "server.key\"}", &j, &err), PS_OK);
    ps_client *c;
    cr_assert_eq(try_client(&j, &c, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "job.json: cluster.tls: CA bundle " REF "server.key: "), "%s",
              err.msg);
}
