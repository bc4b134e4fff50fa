/* test_server.c - real shards on loopback: bad peers get an Error while other clients keep
 * working, and a 2-shard job stores each key on its own shard with the reference values. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "adagrad.h"
#include "client.h"
#include "frame.h"
#include "hash.h"
#include "init.h"
#include "auth.h"
#include "testutil.h"

static const char *job_json =
    "{\"job_id\": \"t\", \"seed\": 5,"
    " \"cluster\": {\"servers\": 1, \"connect_timeout_ms\": 5000, \"request_timeout_ms\": 5000},"
    " \"limits\": {\"max_frame_bytes\": 1048576, \"max_keys_per_request\": 10000},"
    " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"uniform\"}},"
    "              {\"name\": \"bias\", \"dim\": 1}]}";

static ps_job_config job;
static test_server *srv;
static ps_client *good; /* a well-behaved client that must keep working throughout */

static void setup(void) {
    tu_job(job_json, &job);
    srv = tu_server_start(&job, 0);
    tu_job_use(&job, &srv, 1);
    good = tu_client(&job, 0);
}

static void teardown(void) {
    ps_client_destroy(good);
    tu_server_free(srv);
}

TestSuite(server, .init = setup, .fini = teardown, .timeout = 30);

/* The good client pushes one gradient and reads back what AdaGrad makes of it. */
static void good_client_works(void) {
    static uint64_t key = 1000;
    key++;
    float g[4] = {0.5f, -0.25f, 1.0f, 0.0f}, before[4], after[4];
    ps_error err = {0};
    cr_assert_eq(ps_client_pull(good, 0, &key, 1, before, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_push(good, 0, &key, 1, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(good, 0, &key, 1, after, &err), PS_OK, "%s", err.msg);
    float acc[4] = {0};
    ps_adagrad_update(&job.tables[0].opt, before, acc, g, 4, 1);
    cr_assert_eq(memcmp(before, after, sizeof(after)), 0, "good client got wrong values");
}

/* Expects an Error reply (code) and, if closes, that the server then closes the connection. */
static void expect_error(int fd, ps_ErrorCode code, bool closes, const char *what) {
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf), "%s: no reply", what);
    cr_assert_eq(m.env.which_body, ps_Envelope_error_tag, "%s: reply is not an Error", what);
    cr_assert_eq(m.env.error.code, code, "%s: code %d, message \"%s\"", what, m.env.error.code,
                 m.env.error.message);
    cr_assert(strlen(m.env.error.message) > 0, "%s: empty message", what);
    free(buf);
    if (closes) cr_assert(tu_closed(fd), "%s: connection not closed", what);
}

Test(server, oversized_frame_is_refused_before_allocation) {
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    uint8_t hdr[4] = {0xff, 0xff, 0xff, 0xf0}; /* ~4 GiB announced, limit 1 MiB */
    cr_assert(tu_send_all(fd, hdr, 4));
    expect_error(fd, ps_ErrorCode_ERR_TOO_LARGE, true, "oversized");
    close(fd);
    good_client_works();
}

Test(server, garbage_frame) {
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    uint8_t bad[4 + 12] = {0, 0, 0, 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                           0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    cr_assert(tu_send_all(fd, bad, sizeof(bad)));
    expect_error(fd, ps_ErrorCode_ERR_PROTO, true, "garbage");
    close(fd);
    good_client_works();
}

Test(server, truncated_frame) {
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    uint8_t part[4 + 5] = {0, 0, 0, 100, 1, 2, 3, 4, 5}; /* 100 announced, 5 sent, then EOF */
    cr_assert(tu_send_all(fd, part, sizeof(part)));
    shutdown(fd, SHUT_WR);
    expect_error(fd, ps_ErrorCode_ERR_PROTO, true, "truncated");
    close(fd);
    good_client_works();
}

Test(server, truncated_message_inside_a_frame) {
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 7;
    env.which_body = ps_Envelope_pull_tag;
    uint64_t keys[4] = {1, 2, 3, 4};
    ps_bulk k = {.src = {(const uint8_t *)keys, sizeof(keys)}};
    uint8_t *frame;
    size_t len;
    cr_assert_eq(ps_wire_encode(&env, &k, NULL, NULL, NULL, NULL, &frame, &len, NULL), PS_OK);
    size_t cut = len - 9; /* a frame that says it is shorter: the Envelope ends mid-field */
    ps_frame_put_header(frame, (uint32_t)(cut - 4));
    cr_assert(tu_send_all(fd, frame, cut));
    free(frame);
    expect_error(fd, ps_ErrorCode_ERR_PROTO, true, "truncated envelope");
    close(fd);
    good_client_works();
}

Test(server, wrong_lengths_get_an_error_and_the_connection_stays) {
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    uint64_t keys[3] = {1, 2, 3};
    float grads[12] = {0};
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_push_tag;
    env.push.table = 0;

    /* 3 keys x dim 4 = 12 floats wanted, 11 sent */
    env.request_id = 10;
    ps_bulk k = {.src = {(const uint8_t *)keys, sizeof(keys)}};
    ps_bulk g = {.src = {(const uint8_t *)grads, 11 * sizeof(float)}};
    cr_assert(tu_send_msg(fd, &env, &k, &g, NULL));
    expect_error(fd, ps_ErrorCode_ERR_INVALID_ARG, false, "short grads");

    /* unknown table */
    env.request_id = 11;
    env.push.table = 9;
    g.src.len = sizeof(grads);
    cr_assert(tu_send_msg(fd, &env, &k, &g, NULL));
    expect_error(fd, ps_ErrorCode_ERR_INVALID_ARG, false, "unknown table");

    /* over max_keys_per_request */
    env.request_id = 12;
    env.which_body = ps_Envelope_pull_tag;
    env.pull.table = 0;
    uint64_t *many = calloc(10001, sizeof(uint64_t));
    ps_bulk km = {.src = {(const uint8_t *)many, 10001 * sizeof(uint64_t)}};
    cr_assert(tu_send_msg(fd, &env, &km, NULL, NULL));
    free(many);
    expect_error(fd, ps_ErrorCode_ERR_TOO_LARGE, false, "too many keys");

    /* the same connection still serves a valid pull; the reply carries the request id */
    env.request_id = 13;
    cr_assert(tu_send_msg(fd, &env, &k, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf));
    cr_assert_eq(m.env.which_body, ps_Envelope_values_tag);
    cr_assert_eq(m.env.request_id, 13);
    cr_assert_eq(m.values.len, 3 * 4 * sizeof(float));
    free(buf);
    close(fd);
    good_client_works();
}

Test(server, keys_not_a_multiple_of_8_close_the_connection) {
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 3;
    env.which_body = ps_Envelope_pull_tag;
    uint8_t odd[13] = {0};
    ps_bulk k = {.src = {odd, sizeof(odd)}};
    cr_assert(tu_send_msg(fd, &env, &k, NULL, NULL));
    expect_error(fd, ps_ErrorCode_ERR_PROTO, true, "13-byte keys");
    close(fd);
    good_client_works();
}

Test(server, request_before_hello) {
    int fd = tu_connect(tu_server_port(srv));
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 1;
    env.which_body = ps_Envelope_stats_tag;
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    expect_error(fd, ps_ErrorCode_ERR_PROTO, true, "no hello");
    close(fd);
    good_client_works();
}

Test(server, hello_mismatch) {
    for (int which = 0; which < 2; which++) {
        int fd = tu_connect(tu_server_port(srv));
        ps_Envelope env;
        tu_hello_env(fd, &env, which == 1 ? "other" : "t", "", ps_Role_ROLE_WORKER, 0);
        if (which == 0) env.hello.protocol_version = PS_PROTOCOL_VERSION + 1;
        cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
        expect_error(fd, ps_ErrorCode_ERR_MISMATCH, true, which == 0 ? "version" : "job id");
        close(fd);
    }
    /* the client library reports the server's reason */
    ps_job_config other = job;
    snprintf(other.job_id, sizeof(other.job_id), "someone-else");
    ps_client *c = NULL;
    ps_client_options o = {.job = &other, .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_MISMATCH, "got %s", err.msg);
    cr_assert(strstr(err.msg, "job") != NULL, "message: %s", err.msg);
    good_client_works();
}

Test(server, pipelined_requests_on_one_connection) {
    uint64_t keys[64];
    float grads[64 * 4], out[8][64 * 4];
    for (int i = 0; i < 64; i++) keys[i] = 5000 + (uint64_t)i;
    for (int i = 0; i < 64 * 4; i++) grads[i] = 0.01f * (float)(i % 7);
    ps_op ops[16];
    ps_error err = {0};
    for (int r = 0; r < 8; r++) {
        cr_assert_eq(ps_client_push_async(good, 0, keys, 64, grads, &ops[2 * r], &err), PS_OK);
        cr_assert_eq(ps_client_pull_async(good, 0, keys, 64, out[r], &ops[2 * r + 1], &err), PS_OK);
    }
    for (int i = 0; i < 16; i++) cr_assert_eq(ps_client_wait(good, ops[i], &err), PS_OK, "%s", err.msg);
    /* pull r saw exactly r + 1 pushes: all rows of pull r differ from pull r - 1 */
    for (int r = 1; r < 8; r++) cr_assert_neq(out[r][4], out[r - 1][4]);
}

Test(server, client_gives_up_on_unreachable_server) {
    ps_job_config j = job;
    j.connect_timeout_ms = 300;
    int fd = tu_connect(tu_server_port(srv)); /* learn a free port: bind one and close it */
    close(fd);
    snprintf(j.servers[0], sizeof(j.servers[0]), "127.0.0.1:1");
    ps_client *c = NULL;
    ps_client_options o = {.job = &j, .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_TIMEOUT, "got: %s", err.msg);
    cr_assert(strstr(err.msg, "127.0.0.1:1") != NULL, "message: %s", err.msg);
}

/* --- two shards, two clients ------------------------------------------------------------------ */

Test(two_shards, each_shard_holds_its_own_keys_with_reference_values, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"two\", \"seed\": 11, \"cluster\": {\"servers\": 2, \"workers\": 2},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 3, \"init\": {\"type\": \"normal\","
           " \"stddev\": 0.1}}]}",
           &j);
    test_server *s[2] = {tu_server_start(&j, 0), tu_server_start(&j, 1)};
    tu_job_use(&j, s, 2);
    ps_client *c[2] = {tu_client(&j, 0), tu_client(&j, 1)};
    ps_error err = {0};
    enum { N = 2000, D = 3, STEPS = 3 };
    static uint64_t keys[N];
    static float grads[N * D], ref_w[N * D], ref_acc[N * D], got[N * D];
    for (int i = 0; i < N; i++) keys[i] = (uint64_t)i * 7919u; /* overlapping ranges below */
    ps_init_spec init = j.tables[0].init;
    (void)init;
    /* initial values: what a pull returns before any push */
    cr_assert_eq(ps_client_pull(c[0], 0, keys, N, ref_w, &err), PS_OK, "%s", err.msg);
    memset(ref_acc, 0, sizeof(ref_acc));
    for (int step = 0; step < STEPS; step++) {
        for (int who = 0; who < 2; who++) {
            /* client 0 pushes keys [0, 1500), client 1 keys [500, 2000) */
            int lo = who == 0 ? 0 : 500, hi = who == 0 ? 1500 : 2000;
            for (int i = lo; i < hi; i++)
                for (int d = 0; d < D; d++)
                    grads[i * D + d] = 0.001f * (float)((i * 31 + d * 17 + step * 7 + who) % 101) - 0.05f;
            cr_assert_eq(ps_client_push(c[who], 0, keys + lo, (size_t)(hi - lo), grads + lo * D, &err),
                         PS_OK, "%s", err.msg);
            for (int i = lo; i < hi; i++)
                ps_adagrad_update(&j.tables[0].opt, ref_w + i * D, ref_acc + i * D, grads + i * D, D, 1);
        }
    }
    for (int who = 0; who < 2; who++) {
        cr_assert_eq(ps_client_pull(c[who], 0, keys, N, got, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(memcmp(got, ref_w, sizeof(got)), 0, "client %d pulled values differ", who);
    }
    uint64_t rows, bytes;
    cr_assert_eq(ps_client_table_stats(c[0], 0, &rows, &bytes, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(rows, N);
    for (int i = 0; i < 2; i++) ps_client_destroy(c[i]);

    ps_server *srv0 = tu_server_stop(s[0]), *srv1 = tu_server_stop(s[1]);
    ps_store *st[2] = {ps_server_store(srv0, 0), ps_server_store(srv1, 0)};
    cr_assert_eq(ps_store_rows(st[0]) + ps_store_rows(st[1]), N);
    cr_assert(ps_store_rows(st[0]) > N / 3 && ps_store_rows(st[1]) > N / 3, "uneven: %zu / %zu",
              ps_store_rows(st[0]), ps_store_rows(st[1]));
    for (int i = 0; i < N; i++) {
        uint32_t home = ps_shard_of(0, keys[i], 2);
        float w[D], acc[D];
        cr_assert(ps_store_get(st[home], keys[i], w, acc), "key %lu missing on shard %u",
                  (unsigned long)keys[i], home);
        cr_assert(!ps_store_get(st[1 - home], keys[i], NULL, NULL), "key %lu on both shards",
                  (unsigned long)keys[i]);
        cr_assert_eq(memcmp(w, ref_w + i * D, sizeof(w)), 0);
        cr_assert_eq(memcmp(acc, ref_acc + i * D, sizeof(acc)), 0);
    }
    tu_server_free(s[0]);
    tu_server_free(s[1]);
}

/* --- big pulls: the reply comes in parts --------------------------------------------------------- */

#define BIG_JSON                                                                                   \
    "{\"job_id\": \"big\", \"seed\": 3, \"cluster\": {\"servers\": %d},"                              \
    " \"tables\": [{\"name\": \"emb\", \"dim\": 16, \"init\": {\"type\": \"uniform\"}}]}"

/* On the wire: a pull of 150 000 x 16 floats (9.6 MB) arrives as Values parts of whole rows, in
 * order, first_row counting up, more on all but the last, and nothing lost between them. */
Test(parts, pull_reply_is_split_into_ordered_parts, .timeout = 60) {
    char json[512];
    snprintf(json, sizeof(json), BIG_JSON, 1);
    ps_job_config j;
    tu_job(json, &j);
    test_server *s = tu_server_start(&j, 0);
    int fd = tu_connect(tu_server_port(s));
    cr_assert(fd >= 0 && tu_hello(fd, &j));
    enum { N = 150000, D = 16 };
    uint64_t *keys = malloc(N * sizeof(*keys));
    cr_assert_not_null(keys);
    for (size_t i = 0; i < N; i++) keys[i] = ps_mix64(i);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 42;
    env.which_body = ps_Envelope_pull_tag;
    ps_bulk k = {.src = {(const uint8_t *)keys, N * 8}};
    cr_assert(tu_send_msg(fd, &env, &k, NULL, NULL));
    size_t rows = 0, parts = 0;
    bool more = true;
    float want[D];
    while (more) {
        ps_msg m;
        uint8_t *buf;
        cr_assert(tu_read_msg(fd, &m, &buf), "part %zu: no reply", parts);
        cr_assert_eq(m.env.which_body, ps_Envelope_values_tag);
        cr_assert_eq(m.env.request_id, 42);
        cr_assert_eq(m.env.values.first_row, rows, "part %zu starts at row %llu, want %zu", parts,
                     (unsigned long long)m.env.values.first_row, rows);
        cr_assert_eq(m.values.len % (D * 4), 0);
        cr_assert_leq(m.values.len, 4u << 20, "part of %zu bytes", m.values.len);
        size_t got = m.values.len / (D * 4);
        cr_assert_gt(got, 0);
        for (size_t i = 0; i < got; i++) { /* no row exists: every value is the initial one */
            ps_init_row(&j.tables[0].init, j.seed, 0, keys[rows + i], want, D);
            cr_assert_eq(memcmp(m.values.p + i * D * 4, want, sizeof(want)), 0, "row %zu",
                         rows + i);
        }
        rows += got, parts++, more = m.env.values.more;
        free(buf);
    }
    cr_assert_eq(rows, N);
    cr_assert_geq(parts, 3, "%zu parts for 9.6 MB", parts);
    close(fd);
    free(keys);
    tu_server_free(s);
}

/* Through the client, over 2 shards: the parts of each shard's reply land at the right positions
 * of the caller's array, and equal the rows the shards hold. */
Test(parts, client_reassembles_parts_from_two_shards, .timeout = 60) {
    char json[512];
    snprintf(json, sizeof(json), BIG_JSON, 2);
    ps_job_config j;
    tu_job(json, &j);
    test_server *s[2] = {tu_server_start(&j, 0), tu_server_start(&j, 1)};
    tu_job_use(&j, s, 2);
    ps_client *c = tu_client(&j, 0);
    ps_error err = {0};
    enum { N = 300000, D = 16 };
    uint64_t *keys = malloc(N * sizeof(*keys));
    float *g = malloc((size_t)N * D * sizeof(float)), *out = malloc((size_t)N * D * sizeof(float));
    cr_assert(keys && g && out);
    for (size_t i = 0; i < N; i++) keys[i] = ps_mix64(i + 99);
    for (size_t i = 0; i < (size_t)N * D; i++) g[i] = 0.001f * (float)(i % 13) - 0.006f;
    /* rows for the first half only: the pull mixes stored rows and initial values */
    cr_assert_eq(ps_client_push(c, 0, keys, N / 2, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(c, 0, keys, N, out, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(c);
    ps_store *st[2] = {ps_server_store(tu_server_stop(s[0]), 0),
                       ps_server_store(tu_server_stop(s[1]), 0)};
    for (size_t i = 0; i < N; i++) {
        float w[D];
        bool stored = ps_store_get(st[ps_shard_of(0, keys[i], 2)], keys[i], w, NULL);
        cr_assert_eq(stored, i < N / 2, "key %zu stored: %d", i, stored);
        if (!stored) ps_init_row(&j.tables[0].init, j.seed, 0, keys[i], w, D);
        if (memcmp(out + i * D, w, sizeof(w)) != 0) cr_assert_fail("row %zu differs", i);
    }
    tu_server_free(s[0]), tu_server_free(s[1]);
    free(keys), free(g), free(out);
}

/* A 14 MB PushPull (its pull comes back in parts) where every key appears twice, far apart: each
 * row takes exactly one AdaGrad step on the summed gradient, and the pull sees it. */
Test(parts, big_push_with_duplicates_is_one_push, .timeout = 60) {
    char json[512];
    snprintf(json, sizeof(json), BIG_JSON, 1);
    ps_job_config j;
    tu_job(json, &j);
    test_server *s = tu_server_start(&j, 0);
    tu_job_use(&j, &s, 1);
    ps_client *c = tu_client(&j, 0);
    ps_error err = {0};
    enum { U = 100000, N = 2 * U, D = 16 };
    uint64_t *keys = malloc(N * sizeof(*keys));
    float *g = malloc((size_t)N * D * sizeof(float)), *out = malloc((size_t)U * D * sizeof(float));
    cr_assert(keys && g && out);
    for (size_t i = 0; i < N; i++) keys[i] = ps_mix64(i % U + 7); /* key i and key i + U agree */
    for (size_t i = 0; i < (size_t)N * D; i++) g[i] = 0.001f * (float)(i % 17) - 0.008f;
    cr_assert_eq(ps_client_pushpull(c, 0, keys, N, g, keys, U, out, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(c);
    ps_store *st = ps_server_store(tu_server_stop(s), 0);
    cr_assert_eq(ps_store_rows(st), U);
    for (size_t i = 0; i < U; i++) {
        float w[D], acc[D] = {0}, sum[D], got[D];
        ps_init_row(&j.tables[0].init, j.seed, 0, keys[i], w, D);
        for (size_t d = 0; d < D; d++) sum[d] = g[i * D + d] + g[(i + U) * D + d];
        ps_adagrad_update(&j.tables[0].opt, w, acc, sum, D, 1);
        cr_assert(ps_store_get(st, keys[i], got, NULL));
        if (memcmp(got, w, sizeof(w)) != 0) cr_assert_fail("row %zu: not one summed step", i);
        if (memcmp(out + i * D, w, sizeof(w)) != 0) cr_assert_fail("pull of row %zu is stale", i);
    }
    tu_server_free(s);
    free(keys), free(g), free(out);
}

/* Parts also respect limits.max_frame_bytes: with 1 MiB frames, a pull whose request fits (0.8 MB)
 * but whose rows do not (6.4 MB) still arrives whole through the client. */
Test(parts, parts_fit_a_small_frame_limit, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"small\", \"seed\": 3, \"limits\": {\"max_frame_bytes\": 1048576},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 16, \"init\": {\"type\": \"uniform\"}}]}",
           &j);
    test_server *s = tu_server_start(&j, 0);
    tu_job_use(&j, &s, 1);
    ps_client *c = tu_client(&j, 0);
    ps_error err = {0};
    enum { N = 100000, D = 16 };
    uint64_t *keys = malloc(N * sizeof(*keys));
    float *out = malloc((size_t)N * D * sizeof(float)), want[D];
    cr_assert(keys && out);
    for (size_t i = 0; i < N; i++) keys[i] = ps_mix64(i + 5);
    cr_assert_eq(ps_client_pull(c, 0, keys, N, out, &err), PS_OK, "%s", err.msg);
    for (size_t i = 0; i < N; i++) {
        ps_init_row(&j.tables[0].init, j.seed, 0, keys[i], want, D);
        if (memcmp(out + i * D, want, sizeof(want)) != 0) cr_assert_fail("row %zu differs", i);
    }
    ps_client_destroy(c);
    tu_server_free(s);
    free(keys), free(out);
}

/* --- a misbehaving server: the client reports, never crashes ----------------------------------- */

typedef struct {
    int lfd;
    ps_table_spec table; /* the one table of the HelloReply */
} fake_server;

/* Accepts one client, answers its Hello with one table of f->dim, then answers every request
 * with an empty Values (wrong for a Stats request) until the client goes. */
static void *fake_serve(void *arg) {
    fake_server *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    ps_msg m;
    uint8_t *buf = NULL;
    if (fd >= 0) tu_send_challenge(fd);
    while (fd >= 0 && tu_read_msg(fd, &m, &buf)) {
        ps_Envelope env = ps_Envelope_init_zero;
        env.request_id = m.env.request_id;
        if (m.env.which_body == ps_Envelope_hello_tag) {
            env.which_body = ps_Envelope_hello_reply_tag;
            env.hello_reply.num_shards = 1;
            env.hello_reply.tables_count = 1;
            ps_wire_table_to_pb(&f->table, &env.hello_reply.tables[0]);
        } else {
            env.which_body = ps_Envelope_values_tag;
            env.values.first_row = 0;
        }
        free(buf);
        if (!tu_send_msg(fd, &env, NULL, NULL, NULL)) break;
    }
    free(buf);
    if (fd >= 0) close(fd);
    return NULL;
}

static int fake_listen(int *port) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    cr_assert(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              listen(lfd, 1) == 0 && getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
    *port = ntohs(a.sin_port);
    return lfd;
}

static ps_status fake_client(uint32_t dim, bool stats, char *msg, size_t msg_len) {
    int port;
    fake_server f = {.lfd = fake_listen(&port)};
    ps_job_config j;
    char json[256];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"\", \"cluster\": {\"servers\": [\"127.0.0.1:%d\"],"
             " \"connect_timeout_ms\": 5000, \"request_timeout_ms\": 5000},"
             " \"tables\": [{\"name\": \"t\", \"dim\": 4}]}",
             port);
    tu_job(json, &j);
    f.table = j.tables[0];
    f.table.dim = dim;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, fake_serve, &f), 0);
    ps_client *c = NULL;
    ps_error err = {0};
    ps_client_options o = {.job = &j, .log = {.level = PS_LOG_ERROR}};
    ps_status st = ps_client_create(&o, &c, &err);
    if (st == PS_OK && stats) {
        uint64_t rows, bytes;
        st = ps_client_table_stats(c, 0, &rows, &bytes, &err);
    }
    snprintf(msg, msg_len, "%s", err.msg);
    ps_client_destroy(c);
    pthread_join(th, NULL);
    close(f.lfd);
    return st;
}

Test(misbehaving, values_in_reply_to_stats_is_an_error) {
    char msg[512];
    cr_assert_eq(fake_client(4, true, msg, sizeof(msg)), PS_PROTO, "got: %s", msg);
    cr_assert(strstr(msg, "without a pull") != NULL, "message: %s", msg);
}

Test(misbehaving, table_of_dim_zero_is_refused) {
    char msg[512];
    cr_assert_eq(fake_client(0, false, msg, sizeof(msg)), PS_MISMATCH, "got: %s", msg);
    cr_assert(strstr(msg, "dim 0") != NULL, "message: %s", msg);
}

/* --- busy polling changes nothing but latency -------------------------------------------------- */

/* A client and a server that poll between requests (as ps-launch sets them up when the CPUs
 * allow) give the same values; waits still end on their deadlines. */
Test(server, busy_polling_client_and_server) {
    ps_job_config j;
    tu_job("{\"job_id\": \"poll\", \"seed\": 5, \"server\": {\"busy_poll_us\": 300},"
           " \"cluster\": {\"busy_poll_us\": 300, \"request_timeout_ms\": 5000},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"uniform\"}}]}",
           &j);
    test_server *s = tu_server_start(&j, 0);
    tu_job_use(&j, &s, 1);
    ps_client *c = tu_client(&j, 0);
    ps_error err = {0};
    uint64_t key = 77;
    float w[4], acc[4] = {0}, g[4] = {0.5f, -0.5f, 0.25f, 1.0f}, got[4];
    ps_init_row(&j.tables[0].init, j.seed, 0, key, w, 4);
    for (int step = 0; step < 50; step++) {
        cr_assert_eq(ps_client_pushpull(c, 0, &key, 1, g, &key, 1, got, &err), PS_OK, "%s",
                     err.msg);
        ps_adagrad_update(&j.tables[0].opt, w, acc, g, 4, (uint64_t)step + 1);
        cr_assert_eq(memcmp(got, w, sizeof(w)), 0, "step %d", step);
    }
    ps_client_destroy(c);
    tu_server_free(s);
}

/* --- cluster.token ---------------------------------------------------------------------------- */

/* A Hello proving `token` over this connection's nonce (NULL: no mac at all). */
static void send_hello(int fd, const char *job_id, const char *token) {
    ps_Envelope env;
    tu_hello_env(fd, &env, job_id, token, ps_Role_ROLE_WORKER, 0);
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
}

/* With cluster.token set, a Hello with another token or none is refused (Error, then close);
 * the right token is served, and so is the library client that carries it. */
Test(token, hello_must_carry_the_token) {
    ps_job_config j;
    tu_job("{\"job_id\": \"tok\", \"cluster\": {\"token\": \"s3cret\","
           " \"request_timeout_ms\": 5000, \"connect_timeout_ms\": 5000},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 2}]}",
           &j);
    cr_assert_str_eq(j.token, "s3cret");
    test_server *s = tu_server_start(&j, 0);
    const char *bad[] = {"wrong", "", "s3cre", "s3cret2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = tu_connect(tu_server_port(s));
        cr_assert(fd >= 0);
        send_hello(fd, "tok", i == 1 ? NULL : bad[i]); /* i == 1: no token field at all */
        ps_msg m;
        uint8_t *buf;
        cr_assert(tu_read_msg(fd, &m, &buf), "token \"%s\": no reply", bad[i]);
        cr_assert_eq(m.env.which_body, ps_Envelope_error_tag, "token \"%s\" was accepted",
                     bad[i]);
        cr_assert_eq(m.env.error.code, ps_ErrorCode_ERR_MISMATCH, "token \"%s\": code %d (%s)",
                     bad[i], m.env.error.code, m.env.error.message);
        cr_assert(strstr(m.env.error.message, "token") != NULL, "message: %s",
                  m.env.error.message);
        free(buf);
        cr_assert(tu_closed(fd), "token \"%s\": connection not closed", bad[i]);
        close(fd);
    }
    /* the right token: a HelloReply, and the connection serves a pull */
    int fd = tu_connect(tu_server_port(s));
    cr_assert(fd >= 0);
    send_hello(fd, "tok", "s3cret");
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf));
    cr_assert_eq(m.env.which_body, ps_Envelope_hello_reply_tag, "right token refused: %s",
                 m.env.which_body == ps_Envelope_error_tag ? m.env.error.message : "?");
    free(buf);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 2;
    env.which_body = ps_Envelope_pull_tag;
    uint64_t key = 9;
    ps_bulk k = {.src = {(const uint8_t *)&key, sizeof(key)}};
    cr_assert(tu_send_msg(fd, &env, &k, NULL, NULL));
    cr_assert(tu_read_msg(fd, &m, &buf));
    cr_assert_eq(m.env.which_body, ps_Envelope_values_tag);
    cr_assert_eq(m.values.len, 2 * sizeof(float));
    free(buf);
    close(fd);

    /* through the library: the job's token is sent; another token is reported as a mismatch */
    tu_job_use(&j, &s, 1);
    ps_client *c = tu_client(&j, 0);
    ps_client_destroy(c);
    ps_job_config other = j;
    snprintf(other.token, sizeof(other.token), "guess");
    ps_client_options o = {.job = &other, .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    c = NULL;
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_MISMATCH, "got: %s", err.msg);
    cr_assert(strstr(err.msg, "token") != NULL, "message: %s", err.msg);
    tu_server_free(s);
}

/* --- limits.max_connections ------------------------------------------------------------------- */

/* A pull of one key on a raw connection that said Hello; true if Values came back. */
static bool raw_pull_works(int fd, uint64_t id) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = id;
    env.which_body = ps_Envelope_pull_tag;
    uint64_t key = id;
    ps_bulk k = {.src = {(const uint8_t *)&key, sizeof(key)}};
    if (!tu_send_msg(fd, &env, &k, NULL, NULL)) return false;
    ps_msg m;
    uint8_t *buf;
    bool ok = tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_values_tag &&
              m.env.request_id == id && m.values.len == 2 * sizeof(float);
    free(buf);
    return ok;
}

/* Expects the "too many connections" Error (before any Hello) and the close. */
static void expect_refused(int fd, const char *what) {
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf), "%s: no Error before the close", what);
    cr_assert_eq(m.env.which_body, ps_Envelope_error_tag, "%s: not an Error", what);
    cr_assert_eq(m.env.error.code, ps_ErrorCode_ERR_TOO_LARGE, "%s: code %d (%s)", what,
                 m.env.error.code, m.env.error.message);
    cr_assert(strstr(m.env.error.message, "too many connections") != NULL, "%s: message %s",
              what, m.env.error.message);
    free(buf);
    cr_assert(tu_closed(fd), "%s: not closed", what);
}

/* Closes fd from our side and waits until the server has closed its end: the server has then
 * dropped the connection from its count before it can accept another one (the count falls in
 * the same loop iteration that closes the socket, before the next accept is looked at). */
static void close_and_wait(int fd) {
    shutdown(fd, SHUT_WR);
    cr_assert(tu_closed(fd), "server did not close after our EOF");
    close(fd);
}

/* limits.max_connections = 3: three connections are served, the fourth gets an Error and is
 * closed while the three keep working; once one of them goes, a new one is accepted. */
Test(limits, max_connections) {
    enum { N = 3 };
    ps_job_config j;
    tu_job("{\"job_id\": \"lim\", \"limits\": {\"max_connections\": 3},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 2}]}",
           &j);
    cr_assert_eq(j.max_connections, N);
    test_server *s = tu_server_start(&j, 0);
    int port = tu_server_port(s), fd[N];
    for (int i = 0; i < N; i++) {
        fd[i] = tu_connect(port);
        cr_assert(fd[i] >= 0);
        cr_assert(tu_hello(fd[i], &j), "connection %d of %d refused", i + 1, N);
    }
    for (int round = 0; round < 2; round++) {
        int extra = tu_connect(port);
        cr_assert(extra >= 0);
        expect_refused(extra, round == 0 ? "connection 4" : "connection 4 again");
        close(extra);
        for (int i = 0; i < N; i++)
            cr_assert(raw_pull_works(fd[i], (uint64_t)(10 * round + i + 1)),
                      "round %d: connection %d stopped working", round, i + 1);
    }
    /* one goes: a new one is served, and the limit holds again after it */
    close_and_wait(fd[1]);
    fd[1] = tu_connect(port);
    cr_assert(fd[1] >= 0);
    cr_assert(tu_hello(fd[1], &j), "a new connection after one closed was refused");
    cr_assert(raw_pull_works(fd[1], 100));
    int extra = tu_connect(port);
    cr_assert(extra >= 0);
    expect_refused(extra, "connection 4 after the swap");
    close(extra);
    for (int i = 0; i < N; i++) cr_assert(raw_pull_works(fd[i], (uint64_t)(200 + i)));
    for (int i = 0; i < N; i++) close(fd[i]);
    tu_server_free(s);
}

/* --- poisoned gradients ------------------------------------------------------------------------ */

/* A NaN, an infinity or a gradient whose square overflows the accumulator (|g| >= 2^64) would
 * leave the row NaN or frozen for good: the push is refused with an Error naming the key, no row
 * of it is updated, the connection stays, and the server counts it in its stats. */
Test(server, non_finite_and_huge_gradients_are_refused) {
    const float bad[] = {NAN, INFINITY, -INFINITY, 1e30f, 1.8446744e19f /* 2^64 */};
    uint64_t keys[2] = {777001, 777002};
    float before[8], after[8];
    ps_error err = {0};
    cr_assert_eq(ps_client_pull(good, 0, keys, 2, before, &err), PS_OK, "%s", err.msg);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        float g[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.25f, 0.25f, 0.25f, 0.25f};
        g[6] = bad[i]; /* key 777002, coordinate 2 */
        ps_status st = ps_client_push(good, 0, keys, 2, g, &err);
        cr_assert_eq(st, PS_INVALID_ARG, "gradient %g accepted", (double)bad[i]);
        cr_assert(strstr(err.msg, "key 777002, coordinate 2") && strstr(err.msg, "refused"),
                  "%s", err.msg);
        cr_assert_eq(ps_client_pull(good, 0, keys, 2, after, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(memcmp(before, after, sizeof(after)), 0, "a row moved");
    }
    /* just below 2^64 is a (large) gradient like any other */
    float big[8] = {0, 0, 0, 0, 0, 0, 1.8446742e19f, 0};
    cr_assert_eq(ps_client_push(good, 0, keys, 2, big, &err), PS_OK, "%s", err.msg);
    /* the stats count the refusals, per table */
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 9;
    env.which_body = ps_Envelope_stats_tag;
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_stats_reply_tag);
    cr_assert_eq(m.env.stats_reply.tables[0].refused_gradients, 5);
    cr_assert_eq(m.env.stats_reply.tables[1].refused_gradients, 0);
    free(buf);
    close(fd);
    good_client_works();
}

/* --- handshake, idle peers, per-address cap, frames before Hello -------------------------------- */

static test_server *limited_server(const char *limits, ps_job_config *j) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"t\", \"limits\": {%s}, \"tables\": [{\"name\": \"emb\", \"dim\": 4}]}",
             limits);
    tu_job(json, j);
    test_server *s = tu_server_start(j, 0);
    tu_job_use(j, &s, 1);
    return s;
}

/* Connections that never say Hello were kept forever (4096 of them locked every worker out). */
Test(conn_limits, a_peer_that_never_says_hello_is_closed) {
    ps_job_config j;
    test_server *s = limited_server("\"hello_timeout_ms\": 200", &j);
    int silent = tu_connect(tu_server_port(s)), trickle = tu_connect(tu_server_port(s));
    cr_assert(silent >= 0 && trickle >= 0);
    cr_assert(tu_send_all(trickle, "\0\0", 2)); /* half a header, then nothing */
    expect_error(silent, ps_ErrorCode_ERR_TIMEOUT, true, "silent peer");
    expect_error(trickle, ps_ErrorCode_ERR_TIMEOUT, true, "trickling peer");
    close(silent), close(trickle);
    ps_client *c = tu_client(&j, 0); /* a real worker is served */
    ps_client_destroy(c);
    tu_server_free(s);
}

Test(conn_limits, an_idle_peer_is_closed) {
    ps_job_config j;
    test_server *s = limited_server("\"idle_timeout_ms\": 300", &j);
    int fd = tu_connect(tu_server_port(s));
    cr_assert(tu_hello(fd, &j));
    expect_error(fd, ps_ErrorCode_ERR_TIMEOUT, true, "idle peer");
    close(fd);
    tu_server_free(s);
}

/* A peer that sends pulls and never reads a reply: once its replies stop moving for
 * idle_timeout_ms it is closed at once (an Error queued behind them would never go out, and it
 * kept the connection, its memory and, past the server's write cap, every other peer's reads
 * stopped). A new client is served after it. */
Test(conn_limits, a_peer_that_reads_no_reply_is_closed_and_others_are_served) {
    ps_job_config j;
    tu_job("{\"job_id\": \"t\", \"cluster\": {\"request_timeout_ms\": 3000},"
           " \"limits\": {\"idle_timeout_ms\": 500, \"max_write_queue_bytes\": 1048576,"
           " \"max_server_write_queue_bytes\": 8388608},"
           " \"tables\": [{\"name\": \"big\", \"dim\": 4096}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    tu_job_use(&j, &s, 1);
    int fd = tu_connect(tu_server_port(s));
    cr_assert(tu_hello(fd, &j));
    const uint64_t key = 3;
    for (uint64_t id = 1; id <= 4000; id++) { /* 64 MB of replies asked for, none read */
        ps_Envelope env = ps_Envelope_init_zero;
        env.request_id = id, env.which_body = ps_Envelope_pull_tag;
        ps_bulk kb = {.src = {(const uint8_t *)&key, 8}};
        if (!tu_send_msg(fd, &env, &kb, NULL, NULL)) break; /* the server stopped reading */
    }
    struct timespec ts = {1, 500 * 1000 * 1000}; /* past the deadline and the next sweep */
    nanosleep(&ts, NULL);
    ps_client *c = tu_admin_client(&j);
    uint64_t rows, bytes;
    ps_error err = {0};
    cr_assert_eq(ps_client_table_stats(c, 0, &rows, &bytes, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(c);
    close(fd);
    tu_server_free(s);
}

Test(conn_limits, connections_per_address_are_capped) {
    ps_job_config j;
    test_server *s = limited_server("\"max_connections_per_address\": 3", &j);
    int fd[4];
    for (int i = 0; i < 3; i++) {
        fd[i] = tu_connect(tu_server_port(s));
        cr_assert(tu_hello(fd[i], &j), "connection %d refused", i);
    }
    fd[3] = tu_connect(tu_server_port(s));
    expect_error(fd[3], ps_ErrorCode_ERR_TOO_LARGE, true, "fourth connection");
    close(fd[3]);
    close(fd[0]);
    struct timespec ts = {0, 100 * 1000 * 1000}; /* the server sees the close */
    nanosleep(&ts, NULL);
    fd[0] = tu_connect(tu_server_port(s));
    cr_assert(tu_hello(fd[0], &j), "a freed slot is not reused");
    for (int i = 0; i < 3; i++) close(fd[i]);
    tu_server_free(s);
}

/* Before Hello a peer may send 64 KiB frames at most: 8 peers announcing 64 MiB each took a
 * server from 2 MB to 527 MB. After Hello limits.max_frame_bytes applies. */
Test(conn_limits, a_big_frame_before_hello_is_refused) {
    ps_job_config j;
    test_server *s = limited_server("\"max_frame_bytes\": 1048576", &j);
    int fd = tu_connect(tu_server_port(s));
    uint8_t hdr[4];
    ps_frame_put_header(hdr, 100000);
    cr_assert(tu_send_all(fd, hdr, 4));
    expect_error(fd, ps_ErrorCode_ERR_TOO_LARGE, true, "100 kB frame before Hello");
    close(fd);
    /* after Hello the same size is a request like any other */
    fd = tu_connect(tu_server_port(s));
    cr_assert(tu_hello(fd, &j));
    enum { N = 12000 }; /* 96 kB of keys */
    static uint64_t keys[N];
    for (int i = 0; i < N; i++) keys[i] = (uint64_t)i;
    ps_bulk kb = {.src = {(const uint8_t *)keys, sizeof(keys)}};
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 2;
    env.which_body = ps_Envelope_pull_tag;
    cr_assert(tu_send_msg(fd, &env, &kb, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf));
    cr_assert_eq(m.env.which_body, ps_Envelope_values_tag, "%s",
                 m.env.which_body == ps_Envelope_error_tag ? m.env.error.message : "?");
    free(buf);
    close(fd);
    tu_server_free(s);
}

/* Reads one Error reply and returns its message in a static buffer. */
static const char *error_of(int fd) {
    static char msg[300];
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf), "no reply");
    cr_assert_eq(m.env.which_body, ps_Envelope_error_tag, "not an Error");
    snprintf(msg, sizeof(msg), "%s", m.env.error.message);
    free(buf);
    return msg;
}

/* Guessing the token: a peer without it learns nothing of the job (not its id, not the protocol
 * version), and ten bad tokens lock its address out for a minute, the right token included. */
Test(token, guessing_is_slow_and_reveals_nothing) {
    ps_job_config j;
    tu_job("{\"job_id\": \"secret-job\", \"cluster\": {\"token\": \"s3cret\"},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 2}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    for (int i = 0; i < 10 /* PS_AUTH_MAX_FAILURES */; i++) {
        int fd = tu_connect(tu_server_port(s));
        send_hello(fd, "other-job", "guess");
        const char *msg = error_of(fd);
        cr_assert(strstr(msg, "bad token") && !strstr(msg, "secret-job"), "%s", msg);
        close(fd);
    }
    int fd = tu_connect(tu_server_port(s));
    send_hello(fd, "secret-job", "s3cret");
    const char *msg = error_of(fd);
    cr_assert(strstr(msg, "too many bad tokens from this address"), "%s", msg);
    close(fd);
    tu_server_free(s);
}

/* A job id with control characters reaches the log (and the reply) as '?'s. */
Test(server, a_peer_string_is_printable_in_the_log) {
    int fd = tu_connect(tu_server_port(srv));
    send_hello(fd, "evil\nserver 0: forged line", NULL);
    const char *msg = error_of(fd);
    cr_assert(strstr(msg, "evil?server 0: forged line") && !strchr(msg, '\n'), "%s", msg);
    close(fd);
}

/* --- replies that cannot stall the server or fill its memory ----------------------------------- */

static uint64_t queued_bytes(int port, ps_job_config *j) {
    int fd = tu_connect(port);
    cr_assert(tu_hello(fd, j));
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 2;
    env.which_body = ps_Envelope_stats_tag;
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_stats_reply_tag,
              "no stats: the server is stalled");
    uint64_t q = m.env.stats_reply.queued_bytes;
    free(buf);
    close(fd);
    return q;
}

/* A pull of 1M rows x dim 16 (a 64 MB reply) from a peer that does not read: the server produces
 * the reply a part at a time as the socket drains (it encoded all of it at once, stalling every
 * other peer and holding it all), answers others meanwhile, and the rows arrive whole once read. */
Test(backpressure, a_huge_pull_is_produced_as_the_socket_drains, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    enum { N = 1 << 20 };
    const size_t heap0 = mallinfo2().uordblks;
    (void)heap0; /* read only without ASan */
    uint64_t *keys = malloc(N * sizeof(uint64_t));
    for (uint64_t i = 0; i < N; i++) keys[i] = i;
    int fd = tu_connect(tu_server_port(s));
    cr_assert(tu_hello(fd, &j));
    ps_bulk kb = {.src = {(const uint8_t *)keys, N * sizeof(uint64_t)}};
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 7;
    env.which_body = ps_Envelope_pull_tag;
    cr_assert(tu_send_msg(fd, &env, &kb, NULL, NULL));
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    const uint64_t q = queued_bytes(tu_server_port(s), &j);
    cr_assert_lt(q, 16u << 20, "%llu bytes held for a reader that does not read",
                 (unsigned long long)q);
#ifndef __SANITIZE_ADDRESS__ /* the heap itself: the reply is 64 MB, the request 8 MB */
    const size_t heap = mallinfo2().uordblks - heap0;
    cr_assert_lt(heap, 40u << 20, "the heap grew %zu bytes", heap);
#endif
    /* now read it all: parts in order, every row its key's initial value */
    size_t rows = 0;
    bool more = true;
    while (more) {
        ps_msg m;
        uint8_t *buf;
        cr_assert(tu_read_msg(fd, &m, &buf), "reply cut at row %zu", rows);
        cr_assert_eq(m.env.which_body, ps_Envelope_values_tag);
        cr_assert_eq(m.env.request_id, 7);
        cr_assert_eq(m.env.values.first_row, rows);
        cr_assert_eq(m.values.len % 64, 0);
        rows += m.values.len / 64;
        more = m.env.values.more;
        free(buf);
    }
    cr_assert_eq(rows, N);
    close(fd);
    free(keys);
    tu_server_free(s);
}

/* BATCH frames of a one-key push back to back (malloc'd); *len: the bytes of one. */
enum { BATCH = 4096 };
static uint8_t *push_frames(int n, size_t *len) {
    uint64_t key = 1;
    float g = 0.5f;
    ps_bulk kb = {.src = {(const uint8_t *)&key, 8}}, gb = {.src = {(const uint8_t *)&g, 4}};
    uint8_t *frame;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_push_tag;
    cr_assert_eq(ps_wire_encode(&env, &kb, &gb, NULL, NULL, NULL, &frame, len, NULL), PS_OK);
    uint8_t *many = malloc(*len * (size_t)n);
    cr_assert_not_null(many);
    for (int i = 0; i < n; i++) memcpy(many + (size_t)i * *len, frame, *len);
    free(frame);
    return many;
}

/* A peer that pushes and never reads: its Acks are counted as the heap holds them (frames and
 * the bookkeeping of each write; it held 1.47 GB against a 256 MiB limit), so reading from it
 * stops near limits.max_write_queue_bytes. */
Test(backpressure, a_peer_that_never_reads_is_held_to_its_limit, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"t\", \"limits\": {\"max_write_queue_bytes\": 1048576},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 1}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    const size_t heap0 = mallinfo2().uordblks;
    int fd = tu_connect(tu_server_port(s));
    cr_assert(tu_hello(fd, &j));
    int small = 4096; /* keep the kernel's receive buffer small: the server's queue holds the rest */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    size_t len;
    uint8_t *many = push_frames(BATCH, &len);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    size_t sent = 0; /* at most 100k pushes, or until the server stops reading for 300 ms */
    for (int stalls = 0, round = 0; round < 25 && stalls < 30; round++) {
        size_t off = 0;
        while (off < len * BATCH && stalls < 30) {
            ssize_t w = send(fd, many + off, len * BATCH - off, MSG_NOSIGNAL);
            if (w > 0) off += (size_t)w, sent += (size_t)w, stalls = 0;
            else {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
                stalls++;
            }
        }
    }
    const uint64_t q = queued_bytes(tu_server_port(s), &j);
    const size_t heap = mallinfo2().uordblks - heap0 - len * BATCH; /* less our own buffer */
    cr_log_info("%zu pushes sent, %llu bytes queued, heap grew %zu bytes", sent / len,
                (unsigned long long)q, heap);
    cr_assert_gt(sent / len, 20000, "only %zu pushes sent: the server stopped early", sent / len);
    cr_assert_lt(q, 2u << 20, "%llu bytes queued for a 1 MiB limit", (unsigned long long)q);
#ifndef __SANITIZE_ADDRESS__ /* ASan's allocator does not keep mallinfo2's counts */
    cr_assert_lt(heap, 3u << 20, "the heap grew %zu bytes for a 1 MiB limit", heap);
#endif
    close(fd);
    free(many);
    tu_server_free(s);
}

/* An empty PushPull (no keys at all: absent fields) is a request like any other: an empty
 * Values. (Its absent arrays were NULL, offset by the reply code.) */
Test(server, an_empty_pushpull_gets_an_empty_reply) {
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 5;
    env.which_body = ps_Envelope_push_pull_tag;
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf));
    cr_assert_eq(m.env.which_body, ps_Envelope_values_tag);
    cr_assert_eq(m.env.request_id, 5);
    cr_assert_eq(m.values.len, 0);
    cr_assert(!m.env.values.more);
    free(buf);
    close(fd);
    good_client_works();
}

/* A mac is bound to its connection's nonce: one that proved the token on one connection is
 * refused on another (a captured Hello cannot be replayed). */
Test(token, a_captured_hello_cannot_be_replayed) {
    ps_job_config j;
    tu_job("{\"job_id\": \"tok\", \"cluster\": {\"token\": \"s3cret\"},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 2}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    int a = tu_connect(tu_server_port(s)), b = tu_connect(tu_server_port(s));
    cr_assert(memcmp(tu_nonce(a), tu_nonce(b), PS_AUTH_NONCE_BYTES) != 0, "nonces repeat");
    ps_Envelope env;
    tu_hello_env(a, &env, "tok", "s3cret", ps_Role_ROLE_WORKER, 0); /* a's proof, sent on b */
    cr_assert(tu_send_msg(b, &env, NULL, NULL, NULL));
    cr_assert(strstr(error_of(b), "bad token"));
    cr_assert(tu_send_msg(a, &env, NULL, NULL, NULL)); /* on a it is good */
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(a, &m, &buf) && m.env.which_body == ps_Envelope_hello_reply_tag);
    free(buf);
    /* and it proves this rank and role only */
    int c = tu_connect(tu_server_port(s));
    tu_hello_env(c, &env, "tok", "s3cret", ps_Role_ROLE_WORKER, 0);
    env.hello.role = ps_Role_ROLE_ADMIN;
    cr_assert(tu_send_msg(c, &env, NULL, NULL, NULL));
    cr_assert(strstr(error_of(c), "bad token"));
    close(a), close(b), close(c);
    tu_server_free(s);
}

/* Hello's role and rank are checked: an unknown role, or a worker rank the job does not have,
 * is refused (a rank past cluster.workers would have joined no barrier and broken its clocks). */
Test(server, hello_role_and_rank_are_range_checked) {
    const struct { uint32_t role, rank; const char *why; } bad[] = {
        {0, 0, "unknown role 0"}, {7, 0, "unknown role 7"}, {ps_Role_ROLE_WORKER, 1, "rank 1"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = tu_connect(tu_server_port(srv));
        ps_Envelope env;
        tu_hello_env(fd, &env, "t", "", bad[i].role, bad[i].rank);
        cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
        const char *msg = error_of(fd);
        cr_assert(strstr(msg, bad[i].why), "%s", msg);
        cr_assert(tu_closed(fd));
        close(fd);
    }
    /* an admin's rank is not a worker's: any is fine */
    int fd = tu_connect(tu_server_port(srv));
    ps_Envelope env;
    tu_hello_env(fd, &env, "t", "", ps_Role_ROLE_ADMIN, 99);
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_hello_reply_tag);
    free(buf);
    close(fd);
}

/* limits.max_server_write_queue_bytes holds all peers together: two peers that never read, each
 * far below their own limit, stop being read once their sum passes the server's. */
Test(backpressure, the_server_total_is_capped, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"t\", \"limits\": {\"max_write_queue_bytes\": 67108864,"
           " \"max_server_write_queue_bytes\": 1048576},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 1}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    size_t len;
    uint8_t *many = push_frames(BATCH, &len);
    int fd[2];
    for (int k = 0; k < 2; k++) {
        fd[k] = tu_connect(tu_server_port(s));
        cr_assert(tu_hello(fd[k], &j));
        int small = 4096;
        setsockopt(fd[k], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        fcntl(fd[k], F_SETFL, fcntl(fd[k], F_GETFL) | O_NONBLOCK);
    }
    for (int stalls = 0, round = 0; round < 25 && stalls < 30; round++) {
        for (int k = 0; k < 2; k++) { /* both peers, a batch each in turn */
            ssize_t w = send(fd[k], many, len * BATCH, MSG_NOSIGNAL);
            stalls = w > 0 ? 0 : stalls + 1;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    const uint64_t q = queued_bytes(tu_server_port(s), &j);
    cr_assert_lt(q, 3u << 20, "%llu bytes queued for a 1 MiB server total", (unsigned long long)q);
    close(fd[0]), close(fd[1]);
    free(many);
    tu_server_free(s);
}

/* With a small frame limit a big reply is many small parts, which wait in the cork: they count
 * toward the watermark too, or every part of the reply was built at once. */
Test(backpressure, small_parts_are_produced_as_the_socket_drains_too, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"t\", \"limits\": {\"max_frame_bytes\": 65536},"
           " \"tables\": [{\"name\": \"wide\", \"dim\": 1024}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    enum { N = 8000 }; /* a 64 kB request, a 32 MB reply in parts of 15 rows */
    static uint64_t keys[N];
    for (uint64_t i = 0; i < N; i++) keys[i] = i;
    const size_t heap0 = mallinfo2().uordblks;
    (void)heap0; /* read only without ASan */
    int fd = tu_connect(tu_server_port(s));
    cr_assert(tu_hello(fd, &j));
    ps_bulk kb = {.src = {(const uint8_t *)keys, sizeof(keys)}};
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 3;
    env.which_body = ps_Envelope_pull_tag;
    cr_assert(tu_send_msg(fd, &env, &kb, NULL, NULL));
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    const uint64_t q = queued_bytes(tu_server_port(s), &j);
    cr_assert_lt(q, 16u << 20, "%llu bytes held", (unsigned long long)q);
#ifndef __SANITIZE_ADDRESS__
    const size_t heap = mallinfo2().uordblks - heap0;
    cr_assert_lt(heap, 20u << 20, "the heap grew %zu bytes for a 32 MB reply", heap);
#endif
    size_t rows = 0;
    for (bool more = true; more;) {
        ps_msg m;
        uint8_t *buf;
        cr_assert(tu_read_msg(fd, &m, &buf), "reply cut at row %zu", rows);
        cr_assert_eq(m.env.values.first_row, rows);
        rows += m.values.len / 4096;
        more = m.env.values.more;
        free(buf);
    }
    cr_assert_eq(rows, N);
    close(fd);
    tu_server_free(s);
}

/* Found in review. A big pull (reply > 8 MB: a generator) pipelined with a Clock on one connection, sync job with
 * one worker: the Clock waits behind the generator; when the generator finishes in write_done,
 * ps_conn_resume handles the Clock, which advances the barrier and calls ps_server_wake, which
 * resumes the same connection again (its head frame is still the Clock). */
Test(backpressure, a_clock_behind_a_big_reply_is_handled_once, .timeout = 60) {
    ps_job_config jb;
    tu_job("{\"job_id\": \"r\", \"cluster\": {\"workers\": 1, \"consistency\": \"sync\","
           " \"request_timeout_ms\": 60000},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 64}]}", &jb);
    test_server *s = tu_server_start(&jb, 0);
    tu_job_use(&jb, &s, 1);
    ps_client *c = tu_client(&jb, 0);
    const size_t n = 200000; /* 200k x 64 x 4 = 51 MB */
    uint64_t *keys = malloc(n * 8);
    float *out = malloc(n * 64 * 4);
    for (size_t i = 0; i < n; i++) keys[i] = i;
    ps_op a, b;
    ps_error err = {0};
    cr_assert_eq(ps_client_pull_async(c, 0, keys, n, out, &a, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_clock_async(c, false, &b, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_wait(c, a, &err), PS_OK, "pull: %s", err.msg);
    cr_assert_eq(ps_client_wait(c, b, &err), PS_OK, "clock: %s", err.msg);
    ps_client_destroy(c);
    tu_server_free(s);
    free(keys), free(out);
}

/* A peer whose big unsent reply pushes the server total over its limit dies; the peers paused
 * for the total are never read again. */
Test(backpressure, peers_paused_for_the_total_read_again_when_a_big_peer_dies, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"t\", \"cluster\": {\"request_timeout_ms\": 4000,"
           " \"barrier_timeout_ms\": 1000},"
           " \"limits\": {\"max_server_write_queue_bytes\": 1048576},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 1}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    tu_job_use(&j, &s, 1);
    ps_client *b = tu_client(&j, 0);
    uint64_t k = 1;
    float out;
    ps_error err = {0};
    cr_assert_eq(ps_client_pull(b, 0, &k, 1, &out, &err), PS_OK, "warm-up: %s", err.msg);
    int a = tu_connect(tu_server_port(s));
    int small = 4096;
    setsockopt(a, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    cr_assert(tu_hello(a, &j));
    const size_t n = 1u << 20;
    uint64_t *keys = malloc(n * 8);
    for (size_t i = 0; i < n; i++) keys[i] = i;
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 7;
    env.which_body = ps_Envelope_pull_tag;
    ps_bulk kb = {.src = {(const uint8_t *)keys, n * 8}};
    cr_assert(tu_send_msg(a, &env, &kb, NULL, NULL));
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    /* b is served, and its reply's flush sees the total over the limit: b stops being read */
    cr_assert_eq(ps_client_pull(b, 0, &k, 1, &out, &err), PS_OK, "during: %s", err.msg);
    close(a); /* unread data: RST; the server's writes to a fail, its queue is released */
    nanosleep(&(struct timespec){0, 500 * 1000 * 1000}, NULL);
    ps_status st = ps_client_pull(b, 0, &k, 1, &out, &err);
    cr_assert_eq(st, PS_OK, "a pull after the big peer died: %d %s", st, err.msg);
    ps_client_destroy(b);
    tu_server_free(s);
    free(keys);
}

/* sync, 2 workers: rank 0's connection waits behind its own big reply (it reads slowly), nothing
 * waits for the barrier; yet the stall timer runs and drops the slowest ranks: everyone. */
Test(backpressure, the_stall_timer_runs_only_while_a_pull_waits_for_the_barrier, .timeout = 60) {
    ps_job_config j;
    tu_job("{\"job_id\": \"t\", \"cluster\": {\"workers\": 2, \"consistency\": \"sync\","
           " \"request_timeout_ms\": 8000, \"barrier_timeout_ms\": 1000},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 1}]}", &j);
    test_server *s = tu_server_start(&j, 0);
    tu_job_use(&j, &s, 1);
    int a = tu_connect(tu_server_port(s));
    int small = 4096;
    setsockopt(a, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    ps_Envelope env;
    tu_hello_env(a, &env, "t", "", ps_Role_ROLE_WORKER, 0);
    cr_assert(tu_send_msg(a, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(a, &m, &buf) && m.env.which_body == ps_Envelope_hello_reply_tag);
    free(buf);
    env = (ps_Envelope)ps_Envelope_init_zero;
    env.request_id = 2, env.which_body = ps_Envelope_clock_tag, env.clock.clock = 1;
    cr_assert(tu_send_msg(a, &env, NULL, NULL, NULL));
    const size_t n = 4u << 20; /* 16 MB of values: a generator */
    uint64_t *keys = malloc(n * 8);
    for (size_t i = 0; i < n; i++) keys[i] = i;
    env = (ps_Envelope)ps_Envelope_init_zero;
    env.request_id = 3, env.which_body = ps_Envelope_pull_tag, env.pull.min_clock = 0;
    ps_bulk kb = {.src = {(const uint8_t *)keys, n * 8}};
    cr_assert(tu_send_msg(a, &env, &kb, NULL, NULL));
    env = (ps_Envelope)ps_Envelope_init_zero;
    env.request_id = 4, env.which_body = ps_Envelope_stats_tag;
    cr_assert(tu_send_msg(a, &env, NULL, NULL, NULL));
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    ps_client *b = tu_client(&j, 1);
    ps_op op;
    ps_error err = {0};
    cr_assert_eq(ps_client_clock_async(b, false, &op, &err), PS_OK);
    cr_assert_eq(ps_client_wait(b, op, &err), PS_OK, "%s", err.msg); /* min 0 -> 1: wake */
    nanosleep(&(struct timespec){2, 0}, NULL); /* > barrier_timeout_ms; nobody waits */
    uint64_t k = 1;
    float g = 0.1f;
    ps_status st = ps_client_push(b, 0, &k, 1, &g, &err);
    cr_assert_eq(st, PS_OK, "rank 1's push of step 1: %d %s", st, err.msg);
    close(a);
    ps_client_destroy(b);
    tu_server_free(s);
    free(keys);
}
