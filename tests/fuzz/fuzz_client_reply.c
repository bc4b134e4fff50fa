/* fuzz_client_reply.c - libFuzzer target: the client's handling of what a server sends back
 * (worker/client.c: the Challenge, Hello reply checks, reply matching, Values parts, Rows, Stats,
 * Errors).
 *
 * A fake shard runs on a thread of its own (the client blocks inside its calls, so its peer must
 * live elsewhere). Per input it accepts the client, sends a Challenge, reads the Hello and answers
 * it correctly, reads the first request and answers with the input's bytes (or the input stands
 * for the Hello reply, or for the Challenge and all after it), then resets the connection
 * (SO_LINGER 0: the client still reads what was sent, then sees the reset, and no TIME_WAIT is
 * left behind; fake_server says why a Challenge script ends with a FIN instead). The client must
 * come back with success or an error, never crash, and within its deadline
 * (cluster.request_timeout_ms is 200 ms); every array it fills is an exact-size heap block, so a
 * write past it is caught.
 *
 * Input: [mode][n][script...]. mode & 7: 0 pull, 1 push, 2 push+pull, 3 rows, 4 scan, 5 stats,
 * 6 clock, 7 two pulls in flight; 8: the script is the Hello reply; 16: one more pull after the
 * first call (a broken client must refuse it at once); 32: the script is the Challenge (and what
 * follows it). n % 9: keys in the request. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "client.h"
#include "frame.h"
#include "fuzz_util.h"
#include "wire.h"

#define CALL_MS 2000 /* a call of the client must return within this (its deadline is 200 ms) */

static ps_job_config job;
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int lfd;
    uint8_t *script; /* the input's, copied: a late connection may still be served with it */
    size_t script_len;
    bool fuzz_hello, fuzz_challenge;
    bool busy; /* serving a connection */
} fs = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static bool recv_all(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = recv(fd, b, n, 0);
        if (r <= 0) return false;
        b += r, n -= (size_t)r;
    }
    return true;
}

static bool send_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        b += w, n -= (size_t)w;
    }
    return true;
}

/* Reads one frame; its request id into *id. false on EOF, timeout or nonsense. */
static bool read_frame(int fd, uint64_t *id) {
    uint8_t hdr[4];
    if (!recv_all(fd, hdr, 4)) return false;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len > (1u << 20)) return false;
    uint8_t *buf = malloc(len + 1);
    FZ_CHECK(buf != NULL, "malloc");
    bool ok = recv_all(fd, buf, len);
    ps_msg m;
    ok = ok && ps_wire_decode(buf, len, &m, NULL) == PS_OK;
    if (ok) *id = m.env.request_id;
    free(buf);
    return ok;
}

static void send_challenge(int fd) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_challenge_tag;
    env.challenge.nonce.size = PS_AUTH_NONCE_BYTES;
    memset(env.challenge.nonce.bytes, 0x5a, PS_AUTH_NONCE_BYTES);
    uint8_t *f;
    size_t len;
    FZ_CHECK(ps_wire_encode(&env, NULL, NULL, NULL, NULL, NULL, &f, &len, NULL) == PS_OK, "encode");
    send_all(fd, f, len);
    free(f);
}

static void send_hello_reply(int fd, uint64_t id) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = id;
    env.which_body = ps_Envelope_hello_reply_tag;
    env.hello_reply.shard = 0;
    env.hello_reply.num_shards = 1;
    env.hello_reply.tables_count = (pb_size_t)job.num_tables;
    for (size_t i = 0; i < job.num_tables; i++)
        ps_wire_table_to_pb(&job.tables[i], &env.hello_reply.tables[i]);
    uint8_t *f;
    size_t len;
    FZ_CHECK(ps_wire_encode(&env, NULL, NULL, NULL, NULL, NULL, &f, &len, NULL) == PS_OK, "encode");
    send_all(fd, f, len);
    free(f);
}

static void *fake_server(void *arg) {
    (void)arg;
    sigset_t alarm; /* libFuzzer's SIGALRM goes to the fuzzing thread, not into our recv() */
    sigemptyset(&alarm);
    sigaddset(&alarm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alarm, NULL);
    for (;;) {
        int c = accept(fs.lfd, NULL, NULL);
        if (c < 0) continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_mutex_lock(&fs.mu);
        fs.busy = true;
        const uint8_t *script = fs.script;
        const size_t script_len = fs.script_len;
        const bool fuzz_hello = fs.fuzz_hello, fuzz_challenge = fs.fuzz_challenge;
        pthread_mutex_unlock(&fs.mu);
        uint64_t id;
        if (fuzz_challenge) {
            /* The client may wait for more than the script holds: end with a FIN, so that it
             * reads the script and then the end (a reset at once could beat the client to its
             * own connect, which it would retry), and wait until it has hung up. */
            send_all(c, script, script_len);
            shutdown(c, SHUT_WR);
            uint8_t sink[4096];
            while (recv(c, sink, sizeof(sink), 0) > 0) continue;
        } else if (send_challenge(c), read_frame(c, &id)) {
            if (!fuzz_hello) {
                send_hello_reply(c, id);
                read_frame(c, &id); /* the first request (none if the call failed early) */
            }
            send_all(c, script, script_len);
        }
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(c);
        pthread_mutex_lock(&fs.mu);
        fs.busy = false;
        pthread_cond_broadcast(&fs.cv);
        pthread_mutex_unlock(&fs.mu);
    }
    return NULL;
}

static void init(void) {
    fs.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    FZ_CHECK(fs.lfd >= 0 && bind(fs.lfd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
                 listen(fs.lfd, 16) == 0 && getsockname(fs.lfd, (struct sockaddr *)&a, &alen) == 0,
             "fake server: %s", strerror(errno));
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"fz\", \"cluster\": {\"servers\": [\"127.0.0.1:%d\"],"
             " \"connect_timeout_ms\": 200, \"request_timeout_ms\": 200},"
             " \"limits\": {\"max_frame_bytes\": 65536},"
             " \"tables\": [{\"name\": \"emb\", \"dim\": 4}, {\"name\": \"bias\", \"dim\": 1},"
             "  {\"name\": \"rw\", \"dim\": 2,"
             "   \"optimizer\": {\"rowwise\": true, \"lr_decay\": 0.1}}]}",
             ntohs(a.sin_port));
    ps_error err = {0};
    FZ_CHECK(ps_config_parse(json, "fuzz.json", NULL, 0, &job, &err) == PS_OK, "%s", err.msg);
    pthread_t t;
    FZ_CHECK(pthread_create(&t, NULL, fake_server, NULL) == 0, "pthread_create");
    pthread_detach(t);
}

/* With fs.mu held: waits until the fake server serves no connection. */
static void wait_idle(void) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (fs.busy)
        FZ_CHECK(pthread_cond_timedwait(&fs.cv, &fs.mu, &until) == 0 || !fs.busy,
                 "the fake server is stuck in a session");
}

/* Exact-size heap blocks: a write past one is caught. */
static void *block(size_t bytes) {
    void *p = malloc(bytes);
    FZ_CHECK(p != NULL || bytes == 0, "malloc");
    return p;
}

#define TIMED(call)                                                                                \
    do {                                                                                           \
        uint64_t t0_ = fz_now_ms();                                                                \
        ps_status st_ = (call);                                                                    \
        uint64_t ms_ = fz_now_ms() - t0_;                                                          \
        FZ_CHECK(ms_ < CALL_MS, "%s took %llu ms", #call, (unsigned long long)ms_);                \
        FZ_CHECK(st_ == PS_OK || err.msg[0] != '\0', "%s failed (%s) without a message", #call,    \
                 ps_status_str(st_));                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (job.num_tables == 0) init();
    fz_in in = {data, size};
    const uint8_t mode = fz_u8(&in);
    const size_t n = fz_u8(&in) % 9;
    uint8_t *script = malloc(in.n + 1);
    FZ_CHECK(script != NULL, "malloc");
    if (in.n > 0) memcpy(script, in.p, in.n);
    pthread_mutex_lock(&fs.mu);
    wait_idle();
    free(fs.script);
    fs.script = script, fs.script_len = in.n, fs.fuzz_hello = mode & 8;
    fs.fuzz_challenge = mode & 32;
    pthread_mutex_unlock(&fs.mu);

    uint64_t keys[8];
    for (size_t i = 0; i < 8; i++) keys[i] = i * 7 + 1;
    float grads[8 * 4] = {0};
    ps_client_options o = {.job = &job, .log = {.out = fz_devnull(), .level = PS_LOG_DEBUG}};
    ps_client *c = NULL;
    ps_error err = {0};
    TIMED(ps_client_create(&o, &c, &err));
    if (c != NULL) {
        float *out = block(n * 4 * sizeof(float)), *out2 = block(n * sizeof(float));
        float *rvals = block(n * 2 * sizeof(float)), *acc = block(n * sizeof(float));
        uint32_t *steps = block(n * sizeof(uint32_t));
        uint64_t *skeys = block((n + 1) * sizeof(uint64_t)), rows, bytes;
        float *svals = block((n + 1) * 2 * sizeof(float)), *sacc = block((n + 1) * sizeof(float));
        uint32_t *ssteps = block((n + 1) * sizeof(uint32_t));
        size_t got;
        bool done;
        ps_op op;
        switch (mode & 7) {
        case 0: TIMED(ps_client_pull(c, 0, keys, n, out, &err)); break;
        case 1: TIMED(ps_client_push(c, 0, keys, n, grads, &err)); break;
        case 2: TIMED(ps_client_pushpull(c, 0, keys, n, grads, keys, n, out, &err)); break;
        case 3: TIMED(ps_client_rows(c, 2, keys, n, rvals, acc, steps, &err)); break;
        case 4:
            TIMED(ps_client_scan(c, 2, 0, true, 0, n + 1, skeys, svals, sacc, ssteps, &got, &done,
                                 &err));
            FZ_CHECK(got <= n + 1, "scan of at most %zu rows returned %zu", n + 1, got);
            break;
        case 5: TIMED(ps_client_table_stats(c, 0, &rows, &bytes, &err)); break;
        case 6:
            if (ps_client_clock_async(c, n & 1, &op, &err) == PS_OK)
                TIMED(ps_client_wait(c, op, &err));
            break;
        default:
            if (ps_client_pull_async(c, 0, keys, n, out, &op, &err) == PS_OK &&
                ps_client_pull_async(c, 1, keys, n, out2, &op, &err) == PS_OK)
                TIMED(ps_client_wait_all(c, &err));
            break;
        }
        if (mode & 16) TIMED(ps_client_pull(c, 1, keys, n, out2, &err));
        free(out), free(out2), free(rvals), free(acc), free(steps);
        free(skeys), free(svals), free(sacc), free(ssteps);
    }
    ps_client_destroy(c);

    /* the fake server is done with this client before the next input */
    pthread_mutex_lock(&fs.mu);
    wait_idle();
    pthread_mutex_unlock(&fs.mu);
    return 0;
}
