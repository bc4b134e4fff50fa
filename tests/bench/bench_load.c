/* bench_load.c - a load test of one ps-server: --clients connections (default 256) push and pull
 * 100-key requests on a dim-16 table for a bounded time. Every request must succeed. It reports
 * the latency of each request under load beside a single client's, and the server's RSS (flat,
 * or a leak). A program, not a test: ctest never runs it (tests/bench/run_bench.sh does).
 *
 * One ps-server child on 127.0.0.1, port 0, then:
 *   1. pre-create: every key of a bounded universe (--keys, default 1M) pushed once through
 *      worker/client.h, so the table has stopped growing before RSS is watched;
 *   2. baseline: one connection alone runs the load loop for --base-seconds;
 *   3. load: --clients connections on --threads event loops, --warmup s, then --seconds s
 *      measured; the server's VmRSS is read from /proc/PID/status every second;
 *   4. baseline again, and the table's row count (the universe, not one row more).
 * The load speaks the wire protocol on raw libuv sockets (common/wire.h): ps_client blocks in
 * its own loop per client, so one thread could keep only one client's request in flight.
 * Each connection loops: Push 100 keys (fixed gradients U(-0.01, 0.01)), await the Ack, Pull 100
 * keys, await the Values; half of each request's keys come from --shared keys every client uses,
 * half from the client's own range. One request in flight per connection, timed from its write
 * to its last reply frame. With --reconnect N a connection closes and comes back (connect,
 * Challenge, Hello) after every N rounds: connection churn, for leaks per connection.
 *
 * Any failure (connect, Hello, an Error reply, a bad or unexpected reply, a closed connection, a
 * request older than --timeout-ms, the server dying or exiting uncleanly, a warning in its log,
 * RSS over --rss-growth above its value after the warm-up, a row count off the universe) prints
 * a "bench_load FAIL ..." line and the exit status is 1. Machine-parseable:
 *   bench_load clients=256 seconds=20 requests=... errors=0 p50_us=... p99_us=... p999_us=...
 *              max_us=... rss_start_mb=... rss_max_mb=... rss_end_mb=...
 *   bench_load baseline ... / bench_load ratio ...
 *
 *   bench_load [--clients N] [--seconds S] [--warmup S] [--base-seconds S] [--threads T]
 *              [--keys N] [--shared N] [--timeout-ms MS] [--rss-growth PCT] [--reconnect N]
 *              [--server PATH] [--no-pin]
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "auth.h"
#include "bench_util.h"
#include "client.h"
#include "config.h"
#include "frame.h"
#include "wire.h"

#define REQ_KEYS 100            /* keys per push and per pull */
#define DIM 16                  /* the table's row width */
#define TABLE_NAME "d16"
#define MAX_CLIENTS 4096        /* cluster.workers' limit: each connection has its own rank */
#define MAX_THREADS 16
#define READ_BUF (16u << 10)    /* per connection; replies are 6.4 KB */
#define TICK_MS 50              /* request deadlines are checked this often */
#define CONNECT_MS 10000        /* every connection past Hello within this */
#define MAX_SAMPLES (16u << 20) /* latencies kept per thread and kind (64 MiB) */
#define PRECREATE_BATCH 100000
#define ERRORS_SHOWN 3          /* messages printed per thread and kind; all are counted */
#define MAX_RSS_SAMPLES 4096    /* seconds of --seconds with an RSS sample kept */

/* --- small helpers -------------------------------------------------------------------------- */

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Key number i of the universe: distinct for distinct i (a bijection of i), spread over uint64. */
static uint64_t key_at(uint64_t i) {
    uint64_t s = i;
    return bench_splitmix64(&s);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of sorted v (n > 0). */
static double quantile(const float *v, size_t n, double q) {
    return n == 0 ? 0.0 : (double)v[(size_t)(q * (double)(n - 1) + 0.5)];
}

/* The server's resident set in kB, or -1. */
static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* CPU seconds pid has used (user + system), from /proc/PID/stat; -1 if unknown. */
static double cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1.0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces; fields 3.. follow it */
    unsigned long long ut, st;
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                            &st) != 2)
        return -1.0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds all CPUs have been busy (all but idle and iowait; steal counts: a vCPU taken
 * away), from /proc/stat; -1 if unknown. */
static double machine_busy_s(void) {
    unsigned long long a[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int got = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &a[0], &a[1], &a[2],
                         &a[3], &a[4], &a[5], &a[6], &a[7])
                : 0;
    if (f != NULL) fclose(f);
    if (got != 8) return -1.0;
    unsigned long long busy = a[0] + a[1] + a[2] + a[5] + a[6] + a[7];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

/* Whether pid has exited (without reaping it). */
static bool has_exited(pid_t pid) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0;
}

/* --- the ps-server child ---------------------------------------------------------------------- */

/* Writes the job file (a table of dim DIM, room for clients connections) into a fresh scratch
 * directory and starts a ps-server with it on cpu (-1: any). */
static bool server_start(const char *path, int cpu, uint32_t clients, bench_server_proc *p) {
    if (!bench_server_prepare(p, "bench_load")) return false;
    FILE *f = fopen(p->job, "w");
    if (f == NULL ||
        fprintf(f,
                "{\"job_id\": \"bench_load\", \"cluster\": {\"servers\": [\"127.0.0.1:0\"],"
                " \"workers\": %u, \"connect_timeout_ms\": 10000, \"request_timeout_ms\": 60000},"
                " \"limits\": {\"max_connections\": %u, \"max_connections_per_address\": %u},"
                " \"tables\": [{\"name\": \"" TABLE_NAME "\", \"dim\": %d}]}\n",
                clients, 2 * clients + 16, 2 * clients + 16, DIM) < 0 ||
        fclose(f) != 0) {
        perror("bench_load: job file");
        return false;
    }
    return bench_server_start(p, path, cpu);
}

/* Lines of the server's log at warn level or above; prints the first few. */
static unsigned server_log_warnings(const bench_server_proc *p) {
    FILE *f = fopen(p->log, "r");
    if (f == NULL) return 0;
    char line[1024];
    unsigned n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, "warn: ") == NULL && strstr(line, "error: ") == NULL) continue;
        if (n++ < 5) fprintf(stderr, "bench_load: server log: %s", line);
    }
    fclose(f);
    return n;
}

/* --- the load: connections on event loops -------------------------------------------------- */

#define LOAD_ERR_MAP(X)                                                                            \
    X(CONNECT, "connect", "connect failed")                                                       \
    X(HELLO, "hello", "Hello refused or answered wrongly")                                        \
    X(SERVER_ERROR, "server_error", "an Error reply")                                             \
    X(BAD_FRAME, "bad_frame", "an undecodable reply frame")                                       \
    X(UNEXPECTED, "unexpected", "a reply of the wrong kind, request id or row count")            \
    X(BAD_VALUES, "bad_values", "Values parts out of order, of the wrong length or not finite")   \
    X(CLOSED, "closed", "the server closed the connection")                                       \
    X(IO, "io", "a read or write error")                                                          \
    X(TIMEOUT, "timeout", "no reply within --timeout-ms")                                         \
    X(LOCAL, "local", "out of memory or an encode error here")

typedef enum {
#define X(name, key, text) ERR_##name,
    LOAD_ERR_MAP(X)
#undef X
        N_ERR
} load_err;

static const char *const err_key[N_ERR] = {
#define X(name, key, text) key,
    LOAD_ERR_MAP(X)
#undef X
};
static const char *const err_text[N_ERR] = {
#define X(name, key, text) text,
    LOAD_ERR_MAP(X)
#undef X
};

typedef enum { PH_WARMUP, PH_MEASURE, PH_STOP } load_phase;

/* Shared by the main thread (writes phase) and the load threads. */
typedef struct {
    _Atomic int phase;
    _Atomic uint32_t ready; /* connections past Hello, or failed before */
    _Atomic uint32_t open;  /* connections not yet closed */
} load_control;

typedef struct {
    int port;
    uint32_t first_client, clients, threads; /* clients [first_client, first_client + clients) */
    uint64_t shared;      /* keys [0, shared) are every client's */
    uint64_t private_per; /* client c's own keys: [shared + c * private_per, ... + private_per) */
    uint32_t table;
    uint32_t timeout_ms;
    uint32_t reconnect; /* reconnect after this many Push+Pull rounds (0: never) */
    const char *token;  /* the job's cluster token, for the Hello's mac ("" when none) */
} load_opts;

typedef enum { K_PUSH, K_PULL, N_KINDS } req_kind;

typedef struct {
    float *v; /* microseconds */
    size_t n, cap, dropped;
} lat_samples;

typedef struct {
    lat_samples lat[N_KINDS]; /* requests sent in the measured phase */
    uint64_t requests;        /* completed in the measured phase */
    uint64_t reconnects;      /* in any phase */
    uint64_t errors[N_ERR];
} load_stats;

typedef enum { C_CONNECTING, C_CHALLENGE, C_HELLO, C_PUSH, C_PULL } conn_state;
static const char *const state_name[] = {"connect", "Challenge", "Hello", "Push", "Pull"};

struct load_thread;

typedef struct {
    uv_tcp_t tcp; /* first member: the handle's address is the connection's */
    uv_connect_t creq;
    struct load_thread *th;
    uint32_t client; /* Hello rank and private key range */
    conn_state state;
    bool closing, counted_ready;
    bool reopen;     /* closing to reconnect, not for good */
    uint64_t pairs;  /* Push+Pull rounds completed */
    ps_framer *framer;
    uint64_t rng;
    uint64_t req_id;  /* of the request in flight */
    uint64_t sent_ns; /* when it was written (or the connect started) */
    bool measured;    /* it was sent in the measured phase */
    size_t rows_got;  /* Pull: rows of the Values parts so far */
    uint64_t keys[REQ_KEYS];
    float grads[REQ_KEYS * DIM];
    char rbuf[READ_BUF];
} load_conn;

typedef struct load_thread {
    uv_loop_t loop;
    uv_timer_t tick;
    const load_opts *o;
    load_control *ctl;
    load_conn *conns;
    uint32_t first, n; /* clients [first, first + n) */
    uint32_t open;
    unsigned shown[N_ERR];
    load_stats st;
    pthread_t tid;
} load_thread;

typedef struct {
    uv_write_t req;
    uint8_t *frame;
} write_req;

static void conn_open(load_conn *c);

static void conn_on_closed(uv_handle_t *h) {
    load_conn *c = (load_conn *)h;
    load_thread *th = c->th;
    ps_framer_destroy(c->framer);
    c->framer = NULL;
    if (c->reopen && atomic_load(&th->ctl->phase) != PH_STOP) {
        th->st.reconnects++;
        conn_open(c);
        return;
    }
    atomic_fetch_sub(&th->ctl->open, 1);
    if (--th->open == 0) uv_close((uv_handle_t *)&th->tick, NULL);
}

static void conn_close(load_conn *c) {
    if (c->closing) return;
    c->closing = true;
    if (!c->counted_ready) {
        c->counted_ready = true;
        atomic_fetch_add(&c->th->ctl->ready, 1);
    }
    uv_close((uv_handle_t *)&c->tcp, conn_on_closed);
}

/* Counts an error of kind, prints the first few, and closes the connection (it is out of step
 * with the server from here on). */
static void conn_fail(load_conn *c, load_err kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(load_conn *c, load_err kind, const char *fmt, ...) {
    if (c->closing) return;
    load_thread *th = c->th;
    c->reopen = false;
    th->st.errors[kind]++;
    if (th->shown[kind]++ < ERRORS_SHOWN) {
        char msg[600];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        fprintf(stderr, "bench_load: client %u, %s: %s: %s\n", c->client, state_name[c->state],
                err_key[kind], msg);
    }
    conn_close(c);
}

static void on_write(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    load_conn *c = (load_conn *)req->handle;
    free(w->frame);
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(c, ERR_IO, "write: %s", uv_strerror(status));
}

/* Encodes env (with keys and grads when not NULL) and writes it; the clock of the request
 * starts here. */
static void conn_send(load_conn *c, const ps_Envelope *env, const ps_bulk *keys,
                      const ps_bulk *grads) {
    uint8_t *frame = NULL;
    size_t len = 0;
    ps_error err = {0};
    c->sent_ns = uv_hrtime();
    if (ps_wire_encode(env, keys, grads, NULL, NULL, NULL, &frame, &len, &err) != PS_OK) {
        conn_fail(c, ERR_LOCAL, "encode: %s", err.msg);
        return;
    }
    write_req *w = malloc(sizeof(*w));
    if (w == NULL) {
        free(frame);
        conn_fail(c, ERR_LOCAL, "out of memory");
        return;
    }
    w->frame = frame;
    uv_buf_t b = uv_buf_init((char *)frame, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(frame);
        free(w);
        conn_fail(c, ERR_IO, "write: %s", uv_strerror(rc));
    }
}

/* Half shared keys, half the client's own; drawn with replacement (a push sums duplicates). */
static void draw_keys(load_conn *c) {
    const load_opts *o = c->th->o;
    uint64_t base = o->shared + (uint64_t)c->client * o->private_per;
    for (size_t i = 0; i < REQ_KEYS; i++) {
        uint64_t r = bench_splitmix64(&c->rng);
        c->keys[i] = key_at(i < REQ_KEYS / 2 ? r % o->shared : base + r % o->private_per);
    }
}

static void send_request(load_conn *c, req_kind k) {
    int ph = atomic_load(&c->th->ctl->phase);
    if (ph == PH_STOP) { /* done: no new request */
        conn_close(c);
        return;
    }
    draw_keys(c);
    c->measured = ph == PH_MEASURE;
    c->req_id++;
    c->rows_got = 0;
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = c->req_id;
    ps_bulk keys = {.src = {(const uint8_t *)c->keys, sizeof(c->keys)}};
    if (k == K_PUSH) {
        ps_bulk grads = {.src = {(const uint8_t *)c->grads, sizeof(c->grads)}};
        env.which_body = ps_Envelope_push_tag;
        env.push.table = c->th->o->table;
        c->state = C_PUSH;
        conn_send(c, &env, &keys, &grads);
    } else {
        env.which_body = ps_Envelope_pull_tag;
        env.pull.table = c->th->o->table;
        c->state = C_PULL;
        conn_send(c, &env, &keys, NULL);
    }
}

static void complete(load_conn *c, req_kind k) {
    load_thread *th = c->th;
    if (!c->measured) return;
    th->st.requests++;
    lat_samples *s = &th->st.lat[k];
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        float *p = cap <= MAX_SAMPLES ? realloc(s->v, cap * sizeof(*p)) : NULL;
        if (p == NULL) {
            s->dropped++;
            return;
        }
        s->v = p, s->cap = cap;
    }
    s->v[s->n++] = (float)((double)(uv_hrtime() - c->sent_ns) / 1e3);
}

/* Checks one Values part of the pull in flight; true once the last part came. */
static bool take_values(load_conn *c, const ps_msg *m) {
    const size_t row_bytes = DIM * sizeof(float);
    const ps_Values *v = &m->env.values;
    if (v->first_row != c->rows_got || m->values.len % row_bytes != 0 ||
        c->rows_got + m->values.len / row_bytes > REQ_KEYS) {
        conn_fail(c, ERR_BAD_VALUES, "part at row %llu with %zu bytes after %zu of %d rows",
                  (unsigned long long)v->first_row, m->values.len, c->rows_got, REQ_KEYS);
        return false;
    }
    for (size_t i = 0; i < m->values.len / sizeof(float); i++) {
        float x = ps_load_f32(m->values.p + i * sizeof(float));
        if (!isfinite(x)) {
            conn_fail(c, ERR_BAD_VALUES, "value %zu of row %zu is %g", i % DIM,
                      c->rows_got + i / DIM, (double)x);
            return false;
        }
    }
    c->rows_got += m->values.len / row_bytes;
    if (v->more) return false;
    if (c->rows_got != REQ_KEYS) {
        conn_fail(c, ERR_BAD_VALUES, "last part after %zu of %d rows", c->rows_got, REQ_KEYS);
        return false;
    }
    return true;
}

static void on_hello_reply(load_conn *c, const ps_msg *m) {
    const ps_HelloReply *r = &m->env.hello_reply;
    const uint32_t t = c->th->o->table;
    if (m->env.which_body != ps_Envelope_hello_reply_tag || r->tables_count <= t ||
        r->tables[t].dim != DIM || strcmp(r->tables[t].name, TABLE_NAME) != 0) {
        conn_fail(c, ERR_HELLO, "reply type %u, %u tables", (unsigned)m->env.which_body,
                  (unsigned)r->tables_count);
        return;
    }
    if (!c->counted_ready) {
        c->counted_ready = true;
        atomic_fetch_add(&c->th->ctl->ready, 1);
    }
    send_request(c, K_PUSH);
}

/* The server's first frame: a nonce, answered by the Hello with its mac (common/auth.h). */
static void on_challenge(load_conn *c, const ps_msg *m) {
    if (m->env.which_body != ps_Envelope_challenge_tag ||
        m->env.challenge.nonce.size != PS_AUTH_NONCE_BYTES) {
        conn_fail(c, ERR_HELLO, "first frame of type %u, not a Challenge of %d bytes",
                  (unsigned)m->env.which_body, PS_AUTH_NONCE_BYTES);
        return;
    }
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = ++c->req_id;
    env.which_body = ps_Envelope_hello_tag;
    env.hello.protocol_version = PS_PROTOCOL_VERSION;
    snprintf(env.hello.job_id, sizeof(env.hello.job_id), "bench_load");
    env.hello.role = ps_Role_ROLE_WORKER;
    env.hello.rank = c->client;
    env.hello.mac.size = PS_AUTH_MAC_BYTES;
    ps_auth_mac(c->th->o->token, m->env.challenge.nonce.bytes, env.hello.job_id,
                (uint32_t)env.hello.role, env.hello.rank, env.hello.mac.bytes);
    c->state = C_HELLO;
    conn_send(c, &env, NULL, NULL);
}

static ps_status on_frame(void *ud, const uint8_t *payload, size_t len) {
    load_conn *c = ud;
    if (c->closing) return PS_CLOSED;
    ps_msg m;
    ps_error err = {0};
    if (ps_wire_decode(payload, len, &m, &err) != PS_OK) {
        conn_fail(c, ERR_BAD_FRAME, "%s (%zu bytes)", err.msg, len);
        return PS_PROTO;
    }
    if (m.env.which_body == ps_Envelope_error_tag) {
        conn_fail(c, c->state <= C_HELLO ? ERR_HELLO : ERR_SERVER_ERROR,
                  "request %llu: Error %d: %s", (unsigned long long)m.env.request_id,
                  (int)m.env.error.code, m.env.error.message);
        return PS_PROTO;
    }
    if (c->state == C_CHALLENGE) {
        on_challenge(c, &m);
        return c->closing ? PS_CLOSED : PS_OK;
    }
    if (m.env.request_id != c->req_id) {
        conn_fail(c, ERR_UNEXPECTED, "reply to request %llu, %llu is in flight",
                  (unsigned long long)m.env.request_id, (unsigned long long)c->req_id);
        return PS_PROTO;
    }
    switch (c->state) {
    case C_HELLO:
        on_hello_reply(c, &m);
        break;
    case C_PUSH:
        if (m.env.which_body != ps_Envelope_ack_tag || m.env.ack.rows_touched != REQ_KEYS) {
            conn_fail(c, ERR_UNEXPECTED, "reply type %u (Ack %u), rows_touched %llu",
                      (unsigned)m.env.which_body, (unsigned)ps_Envelope_ack_tag,
                      (unsigned long long)m.env.ack.rows_touched);
            break;
        }
        complete(c, K_PUSH);
        send_request(c, K_PULL);
        break;
    case C_PULL:
        if (m.env.which_body != ps_Envelope_values_tag) {
            conn_fail(c, ERR_UNEXPECTED, "reply type %u, Values is %u", (unsigned)m.env.which_body,
                      (unsigned)ps_Envelope_values_tag);
            break;
        }
        if (take_values(c, &m)) {
            complete(c, K_PULL);
            const uint32_t every = c->th->o->reconnect;
            if (every > 0 && ++c->pairs % every == 0) { /* churn: a new connection and Hello */
                c->reopen = true;
                conn_close(c);
            } else {
                send_request(c, K_PUSH);
            }
        }
        break;
    default:
        conn_fail(c, ERR_UNEXPECTED, "a frame before the connection was up");
        break;
    }
    return c->closing ? PS_CLOSED : PS_OK;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    load_conn *c = (load_conn *)h;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    load_conn *c = (load_conn *)s;
    if (nread == UV_EOF) {
        conn_fail(c, ERR_CLOSED, "EOF with the %s in flight", state_name[c->state]);
        return;
    }
    if (nread < 0) {
        conn_fail(c, ERR_IO, "read: %s", uv_strerror((int)nread));
        return;
    }
    ps_error err = {0};
    ps_status st = ps_framer_feed(c->framer, (const uint8_t *)buf->base, (size_t)nread, on_frame,
                                  c, &err);
    if (st != PS_OK && !c->closing) conn_fail(c, ERR_BAD_FRAME, "framing: %s", err.msg);
}

static void on_connect(uv_connect_t *req, int status) {
    load_conn *c = (load_conn *)req->handle;
    if (c->closing) return;
    if (status < 0) {
        conn_fail(c, ERR_CONNECT, "%s", uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        conn_fail(c, ERR_IO, "read start: %s", uv_strerror(rc));
        return;
    }
    c->state = C_CHALLENGE; /* the server speaks first */
}

/* Every TICK_MS: a request (or the handshake) older than --timeout-ms fails its connection. */
static void on_tick(uv_timer_t *t) {
    load_thread *th = t->data;
    uint64_t now = uv_hrtime(), limit = (uint64_t)th->o->timeout_ms * 1000000u;
    for (uint32_t i = 0; i < th->n; i++) {
        load_conn *c = &th->conns[i];
        if (!c->closing && now - c->sent_ns > limit)
            conn_fail(c, ERR_TIMEOUT, "request %llu waited %.0f ms", (unsigned long long)c->req_id,
                      (double)(now - c->sent_ns) / 1e6);
    }
}

/* Starts (or restarts) c's connection: connect, the server's Challenge, Hello, then requests. */
static void conn_open(load_conn *c) {
    load_thread *th = c->th;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", th->o->port, &addr);
    c->closing = c->reopen = false;
    c->sent_ns = uv_hrtime();
    c->state = C_CONNECTING;
    uv_tcp_init(&th->loop, &c->tcp);
    ps_error err = {0};
    if (ps_framer_create(READ_BUF * 4, &c->framer, &err) != PS_OK) {
        conn_fail(c, ERR_LOCAL, "framer: %s", err.msg);
        return;
    }
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&addr, on_connect);
    if (rc < 0) conn_fail(c, ERR_CONNECT, "%s", uv_strerror(rc));
}

static void *thread_main(void *arg) {
    load_thread *th = arg;
    uv_timer_init(&th->loop, &th->tick);
    th->tick.data = th;
    uv_timer_start(&th->tick, on_tick, TICK_MS, TICK_MS);
    th->open = th->n;
    for (uint32_t i = 0; i < th->n; i++) {
        load_conn *c = &th->conns[i];
        c->th = th;
        c->client = th->first + i;
        c->rng = 0x10adull * 1000003u + c->client;
        bench_fill_grads(c->grads, REQ_KEYS * DIM, 0x9a0dull + c->client);
        conn_open(c);
    }
    uv_run(&th->loop, UV_RUN_DEFAULT); /* ends when every connection and the tick are closed */
    return NULL;
}

/* Summary of one run of the load loop. */
typedef struct {
    uint32_t clients;
    double seconds;
    uint64_t requests, reconnects, errors[N_ERR], dropped;
    /* CPU seconds per second of the measured phase (1 = a core): the server, this program, and
     * the rest of the machine's busy time: interrupt time (loopback packets are processed in
     * softirqs) and other processes (which make every figure noisier) */
    double server_cpu, load_cpu, other_cpu;
    size_t n_lat[N_KINDS + 1];
    float *lat[N_KINDS + 1]; /* sorted, microseconds: push, pull, both */
    bool server_died;
    /* server RSS in kB: after the warm-up, the highest and the last of the measured seconds */
    long rss_start, rss_max, rss_end;
    size_t n_rss;
    long rss[MAX_RSS_SAMPLES]; /* one per second of the measured phase */
} load_result;

static uint64_t total_errors(const load_result *r) {
    uint64_t n = 0;
    for (int k = 0; k < N_ERR; k++) n += r->errors[k];
    return n;
}

static void result_free(load_result *r) {
    for (int k = 0; k <= N_KINDS; k++) free(r->lat[k]);
}

/* Merges the threads' samples into r (sorted per kind and together). */
static bool merge_stats(load_thread *th, uint32_t n_threads, load_result *r) {
    size_t total = 0;
    for (int k = 0; k < N_KINDS; k++) {
        size_t n = 0;
        for (uint32_t i = 0; i < n_threads; i++) n += th[i].st.lat[k].n;
        r->lat[k] = malloc((n ? n : 1) * sizeof(float));
        if (r->lat[k] == NULL) return false;
        for (uint32_t i = 0; i < n_threads; i++) {
            memcpy(r->lat[k] + r->n_lat[k], th[i].st.lat[k].v, th[i].st.lat[k].n * sizeof(float));
            r->n_lat[k] += th[i].st.lat[k].n;
            r->dropped += th[i].st.lat[k].dropped;
        }
        qsort(r->lat[k], r->n_lat[k], sizeof(float), cmp_float);
        total += n;
    }
    r->lat[N_KINDS] = malloc((total ? total : 1) * sizeof(float));
    if (r->lat[N_KINDS] == NULL) return false;
    for (int k = 0; k < N_KINDS; k++) {
        memcpy(r->lat[N_KINDS] + r->n_lat[N_KINDS], r->lat[k], r->n_lat[k] * sizeof(float));
        r->n_lat[N_KINDS] += r->n_lat[k];
    }
    qsort(r->lat[N_KINDS], r->n_lat[N_KINDS], sizeof(float), cmp_float);
    for (uint32_t i = 0; i < n_threads; i++) {
        r->requests += th[i].st.requests;
        r->reconnects += th[i].st.reconnects;
        for (int k = 0; k < N_ERR; k++) r->errors[k] += th[i].st.errors[k];
    }
    return true;
}

/* Runs o->clients connections on o->threads loops: warmup_s, then seconds measured. The main
 * thread samples the server's RSS every second and watches that it lives. Bounded: connections
 * come up within CONNECT_MS, and after the stop each ends with its request in flight, which
 * fails after timeout_ms at the latest. */
static bool run_load(const load_opts *o, double warmup_s, double seconds, pid_t server,
                     load_result *r) {
    *r = (load_result){.clients = o->clients, .seconds = seconds, .rss_start = -1};
    load_control ctl;
    atomic_init(&ctl.phase, PH_WARMUP);
    atomic_init(&ctl.ready, 0);
    atomic_init(&ctl.open, o->clients);
    load_thread *th = calloc(o->threads, sizeof(*th));
    load_conn *conns = calloc(o->clients, sizeof(*conns));
    bool ok = th != NULL && conns != NULL;
    uint32_t started = 0;
    for (uint32_t i = 0; ok && i < o->threads; i++) {
        uint32_t lo = (uint32_t)((uint64_t)o->clients * i / o->threads);
        uint32_t hi = (uint32_t)((uint64_t)o->clients * (i + 1) / o->threads);
        th[i] = (load_thread){.o = o, .ctl = &ctl, .conns = conns + lo,
                              .first = o->first_client + lo, .n = hi - lo};
        bool loop = uv_loop_init(&th[i].loop) == 0;
        if (!loop || pthread_create(&th[i].tid, NULL, thread_main, &th[i]) != 0) {
            fprintf(stderr, "bench_load: cannot start load thread %u\n", i);
            if (loop) uv_loop_close(&th[i].loop);
            ok = false;
            break;
        }
        started++;
    }
    uint32_t expected = 0;
    for (uint32_t i = 0; i < started; i++) expected += th[i].n;
    atomic_fetch_sub(&ctl.open, o->clients - expected); /* threads not started open none */
    double t_up = bench_now_s() + CONNECT_MS / 1e3;
    while (ok && atomic_load(&ctl.ready) < expected && bench_now_s() < t_up) sleep_s(0.005);
    if (ok && atomic_load(&ctl.ready) < expected)
        fprintf(stderr, "bench_load: %u of %u connections up after %d ms\n",
                atomic_load(&ctl.ready), expected, CONNECT_MS);
    /* warm-up, then the measured seconds; RSS once a second, and at the phase change */
    const double t0 = bench_now_s(), t_measure = t0 + warmup_s, t_end = t_measure + seconds;
    double cpu0_server = 0, cpu0_load = 0, cpu0_all = 0, wall0 = 0;
    for (double next = t0 + 1.0; ok; next += 1.0) {
        bool measuring = atomic_load(&ctl.phase) == PH_MEASURE;
        double wake = next;
        if (!measuring && t_measure < wake) wake = t_measure;
        if (t_end < wake) wake = t_end;
        sleep_s(wake - bench_now_s());
        if (server > 0 && has_exited(server)) {
            r->server_died = true;
            break;
        }
        if (atomic_load(&ctl.open) == 0) break; /* every connection failed */
        long kb = server > 0 ? rss_kb(server) : -1;
        if (!measuring && bench_now_s() >= t_measure - 1e-4) {
            atomic_store(&ctl.phase, PH_MEASURE);
            r->rss_start = r->rss_max = kb;
            wall0 = bench_now_s(), cpu0_server = cpu_s(server), cpu0_load = cpu_s(getpid());
            cpu0_all = machine_busy_s();
            next = wake; /* seconds of the measured phase count from here */
            continue;
        }
        if (measuring && r->n_rss < MAX_RSS_SAMPLES) r->rss[r->n_rss++] = kb;
        if (measuring && kb > r->rss_max) r->rss_max = kb;
        if (measuring) r->rss_end = kb;
        if (measuring && bench_now_s() > wall0) {
            double wall = bench_now_s() - wall0;
            r->server_cpu = (cpu_s(server) - cpu0_server) / wall;
            r->load_cpu = (cpu_s(getpid()) - cpu0_load) / wall;
            r->other_cpu = (machine_busy_s() - cpu0_all) / wall - r->server_cpu - r->load_cpu;
            if (r->other_cpu < 0) r->other_cpu = 0; /* the counters tick at different times */
        }
        if (bench_now_s() >= t_end - 1e-4) break;
    }
    atomic_store(&ctl.phase, PH_STOP);
    for (uint32_t i = 0; i < started; i++) pthread_join(th[i].tid, NULL);
    for (uint32_t i = 0; i < started; i++) uv_loop_close(&th[i].loop);
    if (ok && !merge_stats(th, started, r)) {
        fprintf(stderr, "bench_load: out of memory merging latencies\n");
        ok = false;
    }
    for (uint32_t i = 0; th != NULL && i < o->threads; i++)
        for (int k = 0; k < N_KINDS; k++) free(th[i].st.lat[k].v);
    free(th);
    free(conns);
    return ok;
}

/* --- pre-creating the rows, and reading the row count --------------------------------------- */

static ps_client *admin_client(const bench_server_proc *sp, ps_job_config *job) {
    ps_error err = {0};
    char set[64];
    snprintf(set, sizeof(set), "cluster.servers[0]=127.0.0.1:%d", sp->port);
    const char *sets[] = {set};
    ps_client *c = NULL;
    if (ps_config_load(sp->job, sets, 1, job, &err) != PS_OK) {
        fprintf(stderr, "bench_load: %s\n", err.msg);
        return NULL;
    }
    ps_client_options o = {.job = job, .admin = true, .log = {.level = PS_LOG_WARN}};
    if (ps_client_create(&o, &c, &err) != PS_OK) {
        fprintf(stderr, "bench_load: client: %s\n", err.msg);
        return NULL;
    }
    return c;
}

/* Pushes keys [0, universe) once, in batches. */
static bool precreate(ps_client *c, uint32_t table, uint64_t universe) {
    uint64_t *keys = malloc(PRECREATE_BATCH * sizeof(*keys));
    float *grads = malloc((size_t)PRECREATE_BATCH * DIM * sizeof(*grads));
    bool ok = keys != NULL && grads != NULL;
    if (!ok) fprintf(stderr, "bench_load: out of memory\n");
    if (ok) bench_fill_grads(grads, (size_t)PRECREATE_BATCH * DIM, 0xc0ffee);
    ps_error err = {0};
    for (uint64_t at = 0; ok && at < universe; at += PRECREATE_BATCH) {
        size_t n = universe - at < PRECREATE_BATCH ? (size_t)(universe - at) : PRECREATE_BATCH;
        for (size_t i = 0; i < n; i++) keys[i] = key_at(at + i);
        if (ps_client_push(c, table, keys, n, grads, &err) != PS_OK) {
            fprintf(stderr, "bench_load: pre-create push at key %llu: %s\n",
                    (unsigned long long)at, err.msg);
            ok = false;
        }
    }
    free(keys), free(grads);
    return ok;
}

/* --- reporting -------------------------------------------------------------------------------- */

static double p_us(const load_result *r, int k, double q) {
    return quantile(r->lat[k], r->n_lat[k], q);
}

static void print_errors(const char *what, const load_result *r) {
    for (int k = 0; k < N_ERR; k++)
        if (r->errors[k] > 0)
            printf("bench_load FAIL %s error=%s count=%llu (%s)\n", what, err_key[k],
                   (unsigned long long)r->errors[k], err_text[k]);
}

static void print_latency(const char *indent, const load_result *r) {
    printf("%slatency us: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f   push p50 %.0f p99 "
           "%.0f   pull p50 %.0f p99 %.0f\n",
           indent, p_us(r, N_KINDS, 0.5), p_us(r, N_KINDS, 0.9), p_us(r, N_KINDS, 0.99),
           p_us(r, N_KINDS, 0.999), p_us(r, N_KINDS, 1.0), p_us(r, K_PUSH, 0.5),
           p_us(r, K_PUSH, 0.99), p_us(r, K_PULL, 0.5), p_us(r, K_PULL, 0.99));
}

/* Least-squares slope of the measured RSS samples (one per second), in MB per minute. */
static double rss_slope_mb_min(const load_result *r) {
    double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < r->n_rss; i++) {
        if (r->rss[i] < 0) continue;
        double x = (double)i, y = (double)r->rss[i] / 1024.0;
        n++, sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    double d = n * sxx - sx * sx;
    return n < 2 || d == 0 ? 0.0 : (n * sxy - sx * sy) / d * 60.0;
}

/* --- main ------------------------------------------------------------------------------------- */

static const char usage[] =
    "usage: bench_load [--clients N] [--seconds S] [--warmup S] [--base-seconds S] [--threads T]\n"
    "                  [--keys N] [--shared N] [--timeout-ms MS] [--rss-growth PCT]\n"
    "                  [--reconnect N] [--server PATH] [--no-pin]\n"
    "  --clients N       concurrent connections (default 256, at most 4096)\n"
    "  --seconds S       measured load (default 20), after --warmup S (default 2)\n"
    "  --base-seconds S  the single-client baseline, before and after the load (default 3)\n"
    "  --threads T       event loops driving the connections (default 1)\n"
    "  --keys N          the key universe, pre-created before the load (default 1000000)\n"
    "  --shared N        keys every client reads and writes (default 10000); the rest are\n"
    "                    split into one private range per client\n"
    "  --timeout-ms MS   a request without a reply this long is an error (default 10000)\n"
    "  --rss-growth PCT  server RSS above its post-warm-up value by more is an error (default 10)\n"
    "  --reconnect N     each load connection closes and reconnects (new Hello) after N\n"
    "                    Push+Pull rounds: connection churn (default 0: never)\n"
    "  --server PATH     the ps-server to spawn (default: ps-server next to bench_load)\n"
    "  --no-pin          let the scheduler place everything (default: load threads on CPU 0,\n"
    "                    ps-server on CPU 1)\n";

static bool parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    double clients_d = 256, seconds = 20, warmup = 2, base_seconds = 3, threads_d = 1;
    double keys_d = 1e6, shared_d = 1e4, timeout_d = 10000, growth_pct = 10, reconnect_d = 0;
    bool pin = true;
    char server_path[4096] = "";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool good = true;
        if (strcmp(a, "--no-pin") == 0) {
            pin = false;
            continue;
        }
        if (strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (v == NULL) good = false;
        else if (strcmp(a, "--clients") == 0) good = parse_double(v, 1, MAX_CLIENTS, &clients_d);
        else if (strcmp(a, "--seconds") == 0) good = parse_double(v, 1, 3600, &seconds);
        else if (strcmp(a, "--warmup") == 0) good = parse_double(v, 0, 600, &warmup);
        else if (strcmp(a, "--base-seconds") == 0) good = parse_double(v, 0, 600, &base_seconds);
        else if (strcmp(a, "--threads") == 0) good = parse_double(v, 1, MAX_THREADS, &threads_d);
        else if (strcmp(a, "--keys") == 0) good = parse_double(v, 1, 1e9, &keys_d);
        else if (strcmp(a, "--shared") == 0) good = parse_double(v, 1, 1e9, &shared_d);
        else if (strcmp(a, "--timeout-ms") == 0) good = parse_double(v, 10, 600000, &timeout_d);
        else if (strcmp(a, "--rss-growth") == 0) good = parse_double(v, 0, 1000, &growth_pct);
        else if (strcmp(a, "--reconnect") == 0) good = parse_double(v, 0, 1e9, &reconnect_d);
        else if (strcmp(a, "--server") == 0) snprintf(server_path, sizeof(server_path), "%s", v);
        else good = false;
        if (!good) {
            fprintf(stderr, "bench_load: bad option %s%s%s\n%s", a, v ? " " : "", v ? v : "",
                    usage);
            return 2;
        }
        i++;
    }
    const uint32_t clients = (uint32_t)clients_d, n_threads = (uint32_t)threads_d;
    const uint64_t universe = (uint64_t)keys_d, shared = (uint64_t)shared_d;
    if (universe < shared + clients || n_threads > clients) {
        fprintf(stderr, "bench_load: --keys must be at least --shared + --clients, and --threads "
                        "at most --clients\n");
        return 2;
    }
    if (server_path[0] == '\0') bench_server_path_default(server_path, sizeof(server_path));
    signal(SIGPIPE, SIG_IGN);
    if (!ps_auth_init()) {
        fprintf(stderr, "bench_load: no random source (libsodium)\n");
        return 1;
    }
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < clients + 64) {
        nofile.rlim_cur = nofile.rlim_max < clients + 64 ? nofile.rlim_max : clients + 64;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    const bool pinned = pin && sysconf(_SC_NPROCESSORS_ONLN) >= 2 && bench_pin_to(0);

    bench_server_proc sp;
    if (!server_start(server_path, pinned ? 1 : -1, clients, &sp)) return 1;
    bool ok = true;
    static ps_job_config job; /* big: not on the stack */
    /* an admin client for the pre-create and the row counts, connected only while in use */
    ps_client *admin = admin_client(&sp, &job);
    const ps_table_spec *ts = admin ? ps_client_table(admin, TABLE_NAME) : NULL;
    if (ts == NULL) {
        fprintf(stderr, "bench_load: no table %s on the server\n", TABLE_NAME);
        ps_client_destroy(admin);
        bench_server_stop(&sp);
        return 1;
    }
    const uint32_t table = ts->id;
    printf("bench_load: %u clients on %u event loop(s), %s; ps-server pid %d port %d%s\n", clients,
           n_threads, pinned ? "load on CPU 0" : "not pinned", (int)sp.pid, sp.port,
           pinned ? " on CPU 1" : "");
    printf("  table %s dim %d; %llu keys (%llu shared, %llu private per client); each request "
           "%d keys, half shared; %ld CPUs\n",
           TABLE_NAME, DIM, (unsigned long long)universe, (unsigned long long)shared,
           (unsigned long long)((universe - shared) / clients), REQ_KEYS,
           sysconf(_SC_NPROCESSORS_ONLN));

    /* 1. pre-create */
    double t = bench_now_s();
    long rss_empty = rss_kb(sp.pid);
    ok = precreate(admin, table, universe);
    uint64_t rows = 0, bytes = 0;
    ps_error err = {0};
    if (ok && (ps_client_table_stats(admin, table, &rows, &bytes, &err) != PS_OK ||
               rows != universe)) {
        printf("bench_load FAIL precreate rows=%llu want=%llu %s\n", (unsigned long long)rows,
               (unsigned long long)universe, err.msg);
        ok = false;
    }
    if (ok)
        printf("pre-create: %llu rows in %.2f s; server RSS %.1f MB (%.1f MB before)\n",
               (unsigned long long)rows, bench_now_s() - t, (double)rss_kb(sp.pid) / 1024.0,
               (double)rss_empty / 1024.0);
    ps_client_destroy(admin);
    admin = NULL;

    /* 2. baseline; 3. load; 4. baseline again */
    load_opts base_o = {.port = sp.port, .first_client = 0, .clients = 1, .threads = 1,
                        .shared = shared, .private_per = (universe - shared) / clients,
                        .table = table, .timeout_ms = (uint32_t)timeout_d, .token = job.token};
    load_opts load_o = base_o;
    load_o.clients = clients, load_o.threads = n_threads;
    load_o.reconnect = (uint32_t)reconnect_d;
    load_result base = {0}, load = {0}, after = {0};
    bool have_base = false, have_after = false, have_load = false;
    if (ok && base_seconds > 0) {
        have_base = run_load(&base_o, 0.5, base_seconds, sp.pid, &base);
        ok = have_base && total_errors(&base) == 0 && !base.server_died;
        if (have_base)
            printf("baseline, 1 client alone, %.0f s: %llu requests (%.0f/s)\n", base_seconds,
                   (unsigned long long)base.requests, (double)base.requests / base_seconds);
        if (have_base) print_latency("  ", &base);
    }
    if (ok) {
        have_load = run_load(&load_o, warmup, seconds, sp.pid, &load);
        ok = have_load;
    }
    uint64_t load_errors = have_load ? total_errors(&load) : 0;
    const double mb = 1024.0;
    if (have_load) {
        printf("load, %u clients, %.0f s warm-up then %.0f s: %llu requests (%.0f/s), %llu errors"
               "%s\n",
               clients, warmup, seconds, (unsigned long long)load.requests,
               (double)load.requests / seconds, (unsigned long long)load_errors,
               load.server_died ? ", THE SERVER DIED" : "");
        print_latency("  ", &load);
        printf("  CPU, cores busy: ps-server %.2f, bench_load %.2f%s, the rest (softirqs, other "
               "processes) %.2f\n",
               load.server_cpu, load.load_cpu, pinned ? " (one core each)" : "",
               load.other_cpu);
        if (load_o.reconnect > 0)
            printf("  %llu reconnects (every %u Push+Pull rounds)\n",
                   (unsigned long long)load.reconnects, load_o.reconnect);
        if (have_base && base.n_lat[N_KINDS] > 0)
            printf("  under load / alone: p50 %.1fx, p99 %.1fx the single client's p50 (%.0f us)"
                   "\n",
                   p_us(&load, N_KINDS, 0.5) / p_us(&base, N_KINDS, 0.5),
                   p_us(&load, N_KINDS, 0.99) / p_us(&base, N_KINDS, 0.5),
                   p_us(&base, N_KINDS, 0.5));
        printf("  server RSS MB: after warm-up %.1f, max %.1f, end %.1f (%+.1f%%), trend %+.2f "
               "MB/min; per second:",
               (double)load.rss_start / mb, (double)load.rss_max / mb, (double)load.rss_end / mb,
               load.rss_start > 0
                   ? 100.0 * (double)(load.rss_end - load.rss_start) / (double)load.rss_start
                   : 0.0,
               rss_slope_mb_min(&load));
        for (size_t i = 0; i < load.n_rss; i++) printf(" %.1f", (double)load.rss[i] / mb);
        printf("\n");
        if (load.dropped > 0)
            printf("  (%llu latencies not kept: over %u per thread and kind)\n",
                   (unsigned long long)load.dropped, MAX_SAMPLES);
    }
    if (ok && !load.server_died && base_seconds > 0) {
        have_after = run_load(&base_o, 0.5, base_seconds, sp.pid, &after);
        if (have_after) {
            printf("baseline again after the load: %llu requests\n",
                   (unsigned long long)after.requests);
            print_latency("  ", &after);
        }
    }
    bool counted = false;
    if (!load.server_died && (admin = admin_client(&sp, &job)) == NULL) {
        printf("bench_load FAIL rows_unread (no admin connection after the load)\n");
        ok = false;
    } else if (admin != NULL) {
        rows = 0;
        counted = true;
        if (ps_client_table_stats(admin, table, &rows, &bytes, &err) != PS_OK ||
            rows != universe) {
            printf("bench_load FAIL rows=%llu want=%llu %s\n", (unsigned long long)rows,
                   (unsigned long long)universe, err.msg);
            ok = false;
        }
    }
    ps_client_destroy(admin);
    bool server_clean = bench_server_stop(&sp);
    unsigned warnings = server_log_warnings(&sp);
    char rows_s[32] = "?";
    if (counted) snprintf(rows_s, sizeof(rows_s), "%llu", (unsigned long long)rows);
    printf("server: %s rows at the end (universe %llu); %u warnings in its log; exit %s\n", rows_s,
           (unsigned long long)universe, warnings, server_clean ? "clean" : "NOT CLEAN");

    /* verdicts */
    if (have_base) print_errors("baseline", &base);
    if (have_after) print_errors("baseline_after", &after);
    if (have_load) print_errors("load", &load);
    if (have_after && total_errors(&after) > 0) ok = false;
    if (load_errors > 0) ok = false;
    if (load.server_died || base.server_died) {
        printf("bench_load FAIL server_died (log: %s)\n", sp.log);
        ok = false;
    }
    if (have_load && load.requests == 0) {
        printf("bench_load FAIL no_requests\n");
        ok = false;
    }
    if (have_load && (load.rss_start <= 0 || load.rss_max <= 0)) {
        printf("bench_load FAIL rss_unreadable\n");
        ok = false;
    } else if (have_load &&
               (double)load.rss_max > (double)load.rss_start * (1 + growth_pct / 100)) {
        printf("bench_load FAIL rss_growth start_mb=%.1f max_mb=%.1f limit_pct=%g\n",
               (double)load.rss_start / mb, (double)load.rss_max / mb, growth_pct);
        ok = false;
    }
    if (warnings > 0) {
        printf("bench_load FAIL server_log_warnings=%u (log: %s)\n", warnings, sp.log);
        ok = false;
    }
    if (!server_clean) {
        printf("bench_load FAIL server_exit (log: %s)\n", sp.log);
        ok = false;
    }
    if (have_load)
        printf("bench_load clients=%u seconds=%g requests=%llu errors=%llu p50_us=%.0f p99_us=%.0f "
               "p999_us=%.0f max_us=%.0f rss_start_mb=%.1f rss_max_mb=%.1f rss_end_mb=%.1f\n",
               clients, seconds, (unsigned long long)load.requests,
               (unsigned long long)load_errors, p_us(&load, N_KINDS, 0.5),
               p_us(&load, N_KINDS, 0.99), p_us(&load, N_KINDS, 0.999), p_us(&load, N_KINDS, 1.0),
               (double)load.rss_start / mb, (double)load.rss_max / mb, (double)load.rss_end / mb);
    if (have_base)
        printf("bench_load baseline clients=1 seconds=%g requests=%llu p50_us=%.0f p99_us=%.0f "
               "push_p50_us=%.0f pull_p50_us=%.0f\n",
               base_seconds, (unsigned long long)base.requests, p_us(&base, N_KINDS, 0.5),
               p_us(&base, N_KINDS, 0.99), p_us(&base, K_PUSH, 0.5), p_us(&base, K_PULL, 0.5));
    if (have_base && have_load && base.n_lat[N_KINDS] > 0)
        printf("bench_load ratio p50_over_base_p50=%.2f p99_over_base_p50=%.2f "
               "requests_per_s=%.0f rss_trend_mb_per_min=%.2f server_cpu=%.2f other_cpu=%.2f\n",
               p_us(&load, N_KINDS, 0.5) / p_us(&base, N_KINDS, 0.5),
               p_us(&load, N_KINDS, 0.99) / p_us(&base, N_KINDS, 0.5),
               (double)load.requests / seconds, rss_slope_mb_min(&load), load.server_cpu,
               load.other_cpu);
    printf("bench_load %s\n", ok ? "ok" : "FAILED");
    result_free(&base), result_free(&load), result_free(&after);
    if (ok) bench_server_remove_files(&sp);
    fflush(stdout);
    return ok ? 0 : 1;
}
