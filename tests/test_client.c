/* test_client.c - the client library against real shards on loopback: what it accepts from a
 * server and what it refuses before any request is sized by the server's word. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "testutil.h"

TestSuite(client, .timeout = 30);

static const char *base_json =
    "{\"job_id\": \"t\", \"cluster\": {\"servers\": [\"127.0.0.1:1\"], \"connect_timeout_ms\": 3000,"
    " \"request_timeout_ms\": 5000},"
    " \"tables\": [{\"name\": \"emb\", \"dim\": 16}, {\"name\": \"w\", \"dim\": 4}]}";

/* A server of job server_json and a client of base_json: the client's verdict and message. */
static ps_status connect_to(const char *server_json, char *msg, size_t msg_len) {
    ps_job_config sjob, cjob;
    tu_job(server_json, &sjob);
    tu_job(base_json, &cjob);
    test_server *srv = tu_server_start(&sjob, 0);
    tu_job_use(&cjob, &srv, 1);
    ps_client_options o = {.job = &cjob, .rank = 0, .log = {.level = PS_LOG_ERROR}};
    ps_client *c = NULL;
    ps_error err = {0};
    ps_status st = ps_client_create(&o, &c, &err);
    snprintf(msg, msg_len, "%s", err.msg);
    ps_client_destroy(c);
    tu_server_free(srv);
    return st;
}

Test(client, same_tables_are_accepted) {
    char msg[512];
    cr_assert_eq(connect_to(base_json, msg, sizeof(msg)), PS_OK, "%s", msg);
}

/* The bug this guards: with one extra table first, the worker took the server's dims for its own
 * table indices and wrote 80 000 bytes into a 16 384-byte buffer. */
Test(client, an_extra_table_first_is_refused_by_name) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"extra\", \"dim\": 100},"
        " {\"name\": \"emb\", \"dim\": 16}, {\"name\": \"w\", \"dim\": 4}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%d: %s", st, msg);
    cr_assert(strstr(msg, "\"extra\"") && strstr(msg, "\"emb\"") && strstr(msg, "name differs"),
              "%s", msg);
}

Test(client, a_missing_table_is_refused) {
    char msg[512];
    ps_status st =
        connect_to("{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16}]}", msg,
                   sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "does not serve table 1 \"w\""), "%s", msg);
}

Test(client, an_extra_table_last_is_refused) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16},"
        " {\"name\": \"w\", \"dim\": 4}, {\"name\": \"more\", \"dim\": 4}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "\"more\", which"), "%s", msg);
}

Test(client, another_dim_is_refused) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16},"
        " {\"name\": \"w\", \"dim\": 5}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "\"w\" (dim 5)") && strstr(msg, "dim differs"), "%s", msg);
}

Test(client, another_optimizer_is_refused) {
    const char *cases[][2] = {
        {"\"optimizer\": {\"learning_rate\": 0.02}", "optimizer.learning_rate"},
        {"\"optimizer\": {\"form\": \"keras\"}", "optimizer.form"},
        {"\"optimizer\": {\"epsilon\": 1e-8}", "optimizer.epsilon"},
        {"\"optimizer\": {\"rowwise\": true}", "optimizer.rowwise"},
        {"\"optimizer\": {\"weight_decay\": 0.1}", "optimizer.weight_decay"},
        {"\"optimizer\": {\"lr_decay\": 0.1}", "optimizer.lr_decay"},
        {"\"optimizer\": {\"initial_accumulator_value\": 0.5}",
         "optimizer.initial_accumulator_value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[512], msg[512];
        snprintf(json, sizeof(json),
                 "{\"job_id\": \"t\", %s, \"tables\": [{\"name\": \"emb\", \"dim\": 16},"
                 " {\"name\": \"w\", \"dim\": 4}]}",
                 cases[i][0]);
        ps_status st = connect_to(json, msg, sizeof(msg));
        cr_assert_eq(st, PS_MISMATCH, "%s: %s", cases[i][0], msg);
        cr_assert(strstr(msg, cases[i][1]), "%s: %s", cases[i][0], msg);
    }
}

Test(client, another_initializer_is_refused) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16,"
        " \"init\": {\"type\": \"normal\"}}, {\"name\": \"w\", \"dim\": 4}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "init differs"), "%s", msg);
}

/* --- the shard index of the HelloReply -------------------------------------------------------- */

/* Two real shards listed in the job in the wrong order: the first address answers "shard 1 of
 * 2" where the job expects shard 0, and the client refuses, naming both. */
Test(client, shards_listed_in_the_wrong_order_are_refused) {
    ps_job_config j;
    tu_job("{\"job_id\": \"two\", \"cluster\": {\"servers\": 2, \"connect_timeout_ms\": 3000,"
           " \"request_timeout_ms\": 5000}, \"tables\": [{\"name\": \"emb\", \"dim\": 4}]}",
           &j);
    test_server *s[2] = {tu_server_start(&j, 0), tu_server_start(&j, 1)};
    test_server *swapped[2] = {s[1], s[0]};
    tu_job_use(&j, swapped, 2);
    ps_client_options o = {.job = &j, .rank = 0, .log = {.level = PS_LOG_ERROR}};
    ps_client *c = NULL;
    ps_error err = {0};
    ps_status st = ps_client_create(&o, &c, &err);
    cr_assert_eq(st, PS_MISMATCH, "%s: %s", ps_status_str(st), err.msg);
    cr_assert_null(c);
    cr_assert(strstr(err.msg, tu_server_addr(s[1])) != NULL, "no address: %s", err.msg);
    cr_assert(strstr(err.msg, "shard 1 of 2") && strstr(err.msg, "shard 0 of 2"), "%s", err.msg);
    /* the right order is accepted */
    tu_job_use(&j, s, 2);
    ps_client_destroy(tu_client(&j, 0));
    tu_server_free(s[0]);
    tu_server_free(s[1]);
}

/* --- cluster.request_timeout_ms --------------------------------------------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

typedef struct {
    int lfd;
    const ps_job_config *job;
    int requests; /* read after the Hello, never answered */
} silent_server;

/* Accepts one client, answers its Hello with exactly the job's tables, then reads every request
 * and answers none, until the client goes. */
static void *silent_serve(void *arg) {
    silent_server *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    ps_msg m;
    uint8_t *buf = NULL;
    if (fd >= 0) tu_send_challenge(fd);
    while (fd >= 0 && tu_read_msg(fd, &m, &buf)) {
        if (m.env.which_body == ps_Envelope_hello_tag) {
            ps_Envelope env = ps_Envelope_init_zero;
            env.request_id = m.env.request_id;
            env.which_body = ps_Envelope_hello_reply_tag;
            env.hello_reply.shard = 0;
            env.hello_reply.num_shards = 1;
            env.hello_reply.tables_count = (pb_size_t)f->job->num_tables;
            for (size_t i = 0; i < f->job->num_tables; i++)
                ps_wire_table_to_pb(&f->job->tables[i], &env.hello_reply.tables[i]);
            if (!tu_send_msg(fd, &env, NULL, NULL, NULL)) break;
        } else {
            f->requests++;
        }
        free(buf);
        buf = NULL;
    }
    free(buf);
    if (fd >= 0) close(fd);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A server that says Hello and then never answers: a push (and, on another client, a pull)
 * returns PS_TIMEOUT after about cluster.request_timeout_ms = 300 ms, not a hang (bound 5 s,
 * while connect_timeout_ms is 20 s), and not at once. */
Test(client, silent_server_times_out_on_request_timeout_ms) {
    for (int op = 0; op < 2; op++) {
        silent_server f = {.requests = 0};
        f.lfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof(a);
        cr_assert(f.lfd >= 0 && bind(f.lfd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
                  listen(f.lfd, 1) == 0 && getsockname(f.lfd, (struct sockaddr *)&a, &alen) == 0);
        ps_job_config j;
        char json[512];
        snprintf(json, sizeof(json),
                 "{\"job_id\": \"quiet\", \"cluster\": {\"servers\": [\"127.0.0.1:%d\"],"
                 " \"connect_timeout_ms\": 20000, \"request_timeout_ms\": 300},"
                 " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"uniform\"}},"
                 " {\"name\": \"w\", \"dim\": 2}]}",
                 ntohs(a.sin_port));
        tu_job(json, &j);
        f.job = &j;
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, silent_serve, &f), 0);
        ps_client *c = tu_client(&j, 0); /* the Hello is answered: the client is created */
        uint64_t keys[2] = {3, 4};
        float vals[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
        ps_error err = {0};
        double t0 = now_s();
        ps_status st = op == 0 ? ps_client_push(c, 0, keys, 2, vals, &err)
                               : ps_client_pull(c, 0, keys, 2, vals, &err);
        double took = now_s() - t0;
        const char *what = op == 0 ? "push" : "pull";
        cr_assert_eq(st, PS_TIMEOUT, "%s: %s (%s)", what, ps_status_str(st), err.msg);
        char who[64]; /* the message names the server that went quiet */
        snprintf(who, sizeof(who), "from server 0 (127.0.0.1:%d)", ntohs(a.sin_port));
        cr_assert_not_null(strstr(err.msg, who), "%s: %s", what, err.msg);
        cr_assert_lt(took, 5.0, "%s: returned after %.2f s", what, took);
        cr_assert_geq(took, 0.15, "%s: returned after %.3f s, before the timeout", what, took);
        ps_client_destroy(c); /* closes the connection: the fake server's read ends */
        pthread_join(th, NULL);
        close(f.lfd);
        cr_assert_geq(f.requests, 1, "%s: the request never reached the server", what);
    }
}

/* Requests bigger than limits.max_frame_bytes go as several frames (they were sent whole and the
 * server refused them), on one shard and on two: the rows come back in place and the pushes are
 * the same AdaGrad steps as one big push on a server without the limit. */
Test(client, requests_are_split_to_fit_the_frame_limit) {
    enum { N = 3000, D = 4 };
    static uint64_t keys[N];
    static float g[N * D], want[N * D], got[N * D];
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i * 2654435761u;
        for (int d = 0; d < D; d++) g[i * D + d] = 0.001f * (float)((i * 3 + d) % 97) - 0.04f;
    }
#define SPLIT_JOB                                                                            \
    "{\"job_id\": \"split\", \"cluster\": {\"servers\": %d}, \"limits\": {\"max_frame_bytes\": %d},"  \
    " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"normal\"}}]}"
    char json[512];
    ps_error err = {0};
    for (int shards = 1; shards <= 2; shards++) {
        ps_job_config big, small;
        snprintf(json, sizeof(json), SPLIT_JOB, shards, 64 << 20);
        tu_job(json, &big);
        snprintf(json, sizeof(json), SPLIT_JOB, shards, 4096); /* ~150 keys of a push a frame */
        tu_job(json, &small);
        test_server *sb[2], *ss[2];
        for (int s = 0; s < shards; s++) sb[s] = tu_server_start(&big, s), ss[s] = tu_server_start(&small, s);
        tu_job_use(&big, sb, (size_t)shards);
        tu_job_use(&small, ss, (size_t)shards);
        ps_client *cb = tu_client(&big, 0), *cs = tu_client(&small, 0);
        cr_assert_eq(ps_client_push(cb, 0, keys, N, g, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(ps_client_pull(cb, 0, keys, N, want, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(ps_client_push(cs, 0, keys, N, g, &err), PS_OK, "%d shards: %s", shards,
                     err.msg);
        cr_assert_eq(ps_client_pull(cs, 0, keys, N, got, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(memcmp(want, got, sizeof(got)), 0, "%d shards: other rows", shards);
        memset(got, 0, sizeof(got)); /* and both at once */
        cr_assert_eq(ps_client_pushpull(cs, 0, keys, N, g, keys, N, got, &err), PS_OK, "%s",
                     err.msg);
        cr_assert_eq(ps_client_pushpull(cb, 0, keys, N, g, keys, N, want, &err), PS_OK, "%s",
                     err.msg);
        cr_assert_eq(memcmp(want, got, sizeof(got)), 0, "%d shards: pushpull", shards);
        ps_client_destroy(cb), ps_client_destroy(cs);
        for (int s = 0; s < shards; s++) tu_server_free(sb[s]), tu_server_free(ss[s]);
    }
}

/* What a worker sends in its Hello: HMAC-SHA256(token, nonce || "ps-hello" || job_id || 0 ||
 * role || rank LE32), computed here with libsodium's one-shot HMAC over the concatenated message,
 * and never the token itself. */
typedef struct {
    int lfd;
    uint8_t hello[512];
    size_t hello_len;
} capture_server;

static void *capture_serve(void *arg) {
    capture_server *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_challenge_tag;
    env.challenge.nonce.size = PS_AUTH_NONCE_BYTES;
    for (int i = 0; i < PS_AUTH_NONCE_BYTES; i++) env.challenge.nonce.bytes[i] = (uint8_t)(i + 1);
    tu_send_msg(fd, &env, NULL, NULL, NULL);
    uint8_t hdr[4];
    if (recv(fd, hdr, 4, MSG_WAITALL) == 4) {
        f->hello_len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
        if (f->hello_len > sizeof(f->hello) ||
            recv(fd, f->hello, f->hello_len, MSG_WAITALL) != (ssize_t)f->hello_len)
            f->hello_len = 0;
    }
    close(fd); /* no reply: the client gives up */
    return NULL;
}

Test(client, hello_proves_the_token_without_sending_it) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    cr_assert(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 1) == 0 &&
              getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
    capture_server f = {.lfd = lfd};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, capture_serve, &f), 0);
    char json[300];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"jb\", \"cluster\": {\"servers\": [\"127.0.0.1:%d\"], \"workers\": 8,"
             " \"token\": \"open sesame\", \"request_timeout_ms\": 2000}}",
             ntohs(a.sin_port));
    ps_job_config j;
    tu_job(json, &j);
    ps_client_options o = {.job = &j, .rank = 5, .log = {.level = PS_LOG_ERROR}};
    ps_client *c = NULL;
    ps_error err = {0};
    cr_assert_neq(ps_client_create(&o, &c, &err), PS_OK);
    pthread_join(th, NULL);
    close(lfd);
    cr_assert_gt(f.hello_len, 0, "no Hello captured");
    for (size_t i = 0; i + 11 <= f.hello_len; i++)
        cr_assert(memcmp(f.hello + i, "open sesame", 11) != 0, "the token travelled");
    ps_msg m;
    cr_assert_eq(ps_wire_decode(f.hello, f.hello_len, &m, NULL), PS_OK);
    cr_assert_eq(m.env.which_body, ps_Envelope_hello_tag);
    uint8_t msg[64], *p = msg, want[32];
    for (int i = 0; i < 32; i++) *p++ = (uint8_t)(i + 1);
    memcpy(p, "ps-hellojb", 10), p += 10;
    *p++ = 0, *p++ = 1 /* worker */, *p++ = 5, *p++ = 0, *p++ = 0, *p++ = 0;
    crypto_auth_hmacsha256_state st; /* one key: the one-shot API wants exactly 32 bytes */
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)"open sesame", 11);
    crypto_auth_hmacsha256_update(&st, msg, (size_t)(p - msg));
    crypto_auth_hmacsha256_final(&st, want);
    cr_assert_eq(m.env.hello.mac.size, 32);
    cr_assert_eq(memcmp(m.env.hello.mac.bytes, want, 32), 0, "another mac");
}

/* A client left idle longer than cluster.request_timeout_ms still gets its next reply (the
 * loop's clock stood still between calls, so the deadline had already passed: a polling client
 * gave up at once). */
Test(client, an_idle_client_still_works) {
    ps_job_config j;
    /* the timeout leaves a loaded sanitizer build room for a 12.8 MB reply */
    tu_job("{\"job_id\": \"idle\", \"cluster\": {\"request_timeout_ms\": 3000},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 16}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    tu_job_use(&j, &s, 1);
    ps_client *c = tu_client(&j, 0);
    enum { N = 200000 }; /* a reply of several parts: more than one turn of the loop */
    static uint64_t keys[N];
    static float out[N * 16];
    for (int i = 0; i < N; i++) keys[i] = (uint64_t)i;
    ps_error err = {0};
    cr_assert_eq(ps_client_pull(c, 0, keys, N, out, &err), PS_OK, "%s", err.msg);
    nanosleep(&(struct timespec){3, 300 * 1000 * 1000}, NULL); /* longer than the timeout */
    cr_assert_eq(ps_client_pull(c, 0, keys, N, out, &err), PS_OK, "after idling: %s", err.msg);
    ps_client_destroy(c);
    tu_server_free(s);
}
