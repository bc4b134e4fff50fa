/* test_wire.c - common/wire.c: every Envelope body survives encode -> decode; bulk fields come back
 * as views into the decoded buffer with their exact lengths; malformed input is PS_PROTO with a
 * reason. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "wire.h"

/* One encoded frame and its decoded form; freed by the suite's teardown. */
static uint8_t *frame;
static size_t frame_len;
static ps_msg msg;

static void setup(void) { frame = NULL, frame_len = 0; }
static void teardown(void) { free(frame); }
TestSuite(wire, .init = setup, .fini = teardown, .timeout = 10);

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Encodes env, checks the frame header, decodes the payload into msg. */
static void round_trip(const ps_Envelope *env, const ps_bulk *keys, const ps_bulk *grads,
                       const ps_bulk *pull_keys, const ps_bulk *values) {
    ps_error err = {0};
    free(frame);
    frame = NULL;
    cr_assert_eq(ps_wire_encode(env, keys, grads, pull_keys, values, NULL, &frame, &frame_len, &err),
                 PS_OK, "encode: %s", err.msg);
    cr_assert_geq(frame_len, PS_FRAME_HDR_BYTES);
    cr_assert_eq(be32(frame), frame_len - PS_FRAME_HDR_BYTES, "header says %u, payload is %zu",
                 be32(frame), frame_len - PS_FRAME_HDR_BYTES);
    cr_assert_eq(ps_wire_decode(frame + PS_FRAME_HDR_BYTES, frame_len - PS_FRAME_HDR_BYTES, &msg,
                                &err),
                 PS_OK, "decode: %s", err.msg);
    cr_assert_eq(msg.env.request_id, env->request_id);
    cr_assert_eq(msg.env.which_body, env->which_body);
}

/* A decoded bulk view: same bytes as src, and a pointer into the frame (zero copy). */
static void check_view(ps_bytes v, const void *src, size_t len, const char *what) {
    cr_assert_eq(v.len, len, "%s: %zu bytes, want %zu", what, v.len, len);
    if (len == 0) return;
    cr_assert_not_null(v.p, "%s", what);
    const uint8_t *lo = frame + PS_FRAME_HDR_BYTES, *hi = frame + frame_len;
    cr_assert(v.p >= lo && v.p + v.len <= hi, "%s: view is not inside the decoded buffer", what);
    cr_assert_neq((const void *)v.p, src, "%s", what);
    cr_assert_arr_eq(v.p, src, len, "%s: bytes differ", what);
}

static ps_bulk bulk(const void *p, size_t len) {
    return (ps_bulk){.src = {.p = p, .len = len}};
}

static void fill_keys(uint64_t *k, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) k[i] = seed * 0x9e3779b97f4a7c15ULL + i * 1000003u;
}
static void fill_floats(float *g, size_t n, float base) {
    for (size_t i = 0; i < n; i++) g[i] = base + 0.25f * (float)i - 3.0f;
}

Test(wire, hello) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 1;
    env.which_body = ps_Envelope_hello_tag;
    env.hello.protocol_version = PS_PROTOCOL_VERSION;
    strcpy(env.hello.job_id, "job-7");
    env.hello.role = ps_Role_ROLE_WORKER;
    env.hello.rank = 3;
    env.hello.mac.size = 32;
    for (int i = 0; i < 32; i++) env.hello.mac.bytes[i] = (uint8_t)(i * 7);
    round_trip(&env, NULL, NULL, NULL, NULL);
    cr_assert_eq(msg.env.hello.protocol_version, PS_PROTOCOL_VERSION);
    cr_assert_str_eq(msg.env.hello.job_id, "job-7");
    cr_assert_eq(msg.env.hello.role, ps_Role_ROLE_WORKER);
    cr_assert_eq(msg.env.hello.rank, 3);
    cr_assert_eq(msg.env.hello.mac.size, 32);
    cr_assert_eq(memcmp(msg.env.hello.mac.bytes, env.hello.mac.bytes, 32), 0);
    cr_assert_eq(msg.keys.len + msg.grads.len + msg.pull_keys.len + msg.values.len, 0);
}

Test(wire, hello_reply_with_tables) {
    ps_table_spec specs[3] = {
        {.name = "emb", .id = 0, .dim = 16, .init = {.kind = PS_INIT_NORMAL, .stddev = 0.01}},
        {.name = "dense/kernel", .id = 1, .dim = 4,
         .init = {.kind = PS_INIT_GLOROT_UNIFORM, .fan_in = 10, .fan_out = 4}},
        {.name = "u", .id = 2, .dim = 3, .init = {.kind = PS_INIT_UNIFORM, .a = -0.5, .b = 0.25}},
    };
    static ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 2;
    env.which_body = ps_Envelope_hello_reply_tag;
    env.hello_reply.shard = 1;
    env.hello_reply.num_shards = 4;
    env.hello_reply.tables_count = 3;
    for (int i = 0; i < 3; i++) ps_wire_table_to_pb(&specs[i], &env.hello_reply.tables[i]);
    round_trip(&env, NULL, NULL, NULL, NULL);
    cr_assert_eq(msg.env.hello_reply.shard, 1);
    cr_assert_eq(msg.env.hello_reply.num_shards, 4);
    cr_assert_eq(msg.env.hello_reply.tables_count, 3);
    for (int i = 0; i < 3; i++) {
        ps_table_spec t;
        ps_wire_table_from_pb(&msg.env.hello_reply.tables[i], &t);
        cr_assert_str_eq(t.name, specs[i].name);
        cr_assert_eq(t.id, specs[i].id);
        cr_assert_eq(t.dim, specs[i].dim);
        cr_assert_eq(t.init.kind, specs[i].init.kind);
        cr_assert_eq(t.init.a, specs[i].init.a);
        cr_assert_eq(t.init.b, specs[i].init.b);
        cr_assert_eq(t.init.stddev, specs[i].init.stddev);
        cr_assert_eq(t.init.fan_in, specs[i].init.fan_in);
        cr_assert_eq(t.init.fan_out, specs[i].init.fan_out);
    }
}

Test(wire, pull) {
    uint64_t keys[37];
    fill_keys(keys, 37, 1);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 0xfedcba9876543210ULL;
    env.which_body = ps_Envelope_pull_tag;
    env.pull.table = 5;
    ps_bulk k = bulk(keys, sizeof(keys));
    round_trip(&env, &k, NULL, NULL, NULL);
    cr_assert_eq(msg.env.pull.table, 5);
    check_view(msg.keys, keys, sizeof(keys), "keys");
    cr_assert_eq(ps_load_u64(msg.keys.p + 8 * 36), keys[36]);
}

Test(wire, push) {
    uint64_t keys[10];
    float grads[10 * 3];
    fill_keys(keys, 10, 2);
    fill_floats(grads, 30, 1.5f);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 3;
    env.which_body = ps_Envelope_push_tag;
    env.push.table = 1;
    ps_bulk k = bulk(keys, sizeof(keys)), g = bulk(grads, sizeof(grads));
    round_trip(&env, &k, &g, NULL, NULL);
    cr_assert_eq(msg.env.push.table, 1);
    check_view(msg.keys, keys, sizeof(keys), "keys");
    check_view(msg.grads, grads, sizeof(grads), "grads");
    cr_assert_eq(msg.pull_keys.len, 0);
    cr_assert_eq(ps_load_f32(msg.grads.p + 4 * 29), grads[29]);
}

Test(wire, push_pull) {
    uint64_t keys[4], pull_keys[7];
    float grads[4 * 2];
    fill_keys(keys, 4, 3);
    fill_keys(pull_keys, 7, 4);
    fill_floats(grads, 8, -1.0f);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 4;
    env.which_body = ps_Envelope_push_pull_tag;
    env.push_pull.table = 2;
    ps_bulk k = bulk(keys, sizeof(keys)), g = bulk(grads, sizeof(grads)),
            pk = bulk(pull_keys, sizeof(pull_keys));
    round_trip(&env, &k, &g, &pk, NULL);
    cr_assert_eq(msg.env.push_pull.table, 2);
    check_view(msg.keys, keys, sizeof(keys), "push keys");
    check_view(msg.grads, grads, sizeof(grads), "grads");
    check_view(msg.pull_keys, pull_keys, sizeof(pull_keys), "pull keys");
}

Test(wire, values_from_memory) {
    float v[5 * 4];
    fill_floats(v, 20, 0.125f);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 5;
    env.which_body = ps_Envelope_values_tag;
    ps_bulk b = bulk(v, sizeof(v));
    round_trip(&env, NULL, NULL, NULL, &b);
    check_view(msg.values, v, sizeof(v), "values");
}

/* A fill callback writes the values in place, once, with exactly the announced length. */
typedef struct {
    int calls;
    size_t len;
} fill_state;

static void fill_pattern(void *ud, uint8_t *dst, size_t len) {
    fill_state *f = ud;
    f->calls++, f->len = len;
    for (size_t i = 0; i < len; i++) dst[i] = (uint8_t)(i * 7 + 1);
}

Test(wire, values_from_fill_callback) {
    const size_t n = 1003; /* odd: the field starts wherever the encoder happens to be */
    uint8_t *want = malloc(n);
    cr_assert_not_null(want);
    for (size_t i = 0; i < n; i++) want[i] = (uint8_t)(i * 7 + 1);
    fill_state fs = {0};
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 6;
    env.which_body = ps_Envelope_values_tag;
    ps_bulk b = {.fill = fill_pattern, .fill_ud = &fs, .fill_len = n};
    round_trip(&env, NULL, NULL, NULL, &b);
    cr_assert_eq(fs.calls, 1, "fill called %d times", fs.calls);
    cr_assert_eq(fs.len, n);
    check_view(msg.values, want, n, "filled values");
    free(want);
}

/* Fill and copy give the same bytes on the wire. */
Test(wire, fill_and_copy_encode_identically) {
    uint8_t src[64];
    for (size_t i = 0; i < sizeof(src); i++) src[i] = (uint8_t)(i * 7 + 1);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 66;
    env.which_body = ps_Envelope_values_tag;
    fill_state fs = {0};
    ps_bulk filled = {.fill = fill_pattern, .fill_ud = &fs, .fill_len = sizeof(src)};
    ps_bulk copied = bulk(src, sizeof(src));
    uint8_t *a, *b;
    size_t alen, blen;
    cr_assert_eq(ps_wire_encode(&env, NULL, NULL, NULL, &filled, NULL, &a, &alen, NULL), PS_OK);
    cr_assert_eq(ps_wire_encode(&env, NULL, NULL, NULL, &copied, NULL, &b, &blen, NULL), PS_OK);
    cr_assert_eq(alen, blen);
    cr_assert_arr_eq(a, b, alen);
    free(a);
    free(b);
}

Test(wire, ack) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 7;
    env.which_body = ps_Envelope_ack_tag;
    env.ack.rows_touched = 123456789012ULL;
    round_trip(&env, NULL, NULL, NULL, NULL);
    cr_assert_eq(msg.env.ack.rows_touched, 123456789012ULL);
}

/* An Ack of 0 rows has no fields at all; it is still an Ack. */
Test(wire, ack_of_zero_rows) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_ack_tag;
    round_trip(&env, NULL, NULL, NULL, NULL);
    cr_assert_eq(msg.env.ack.rows_touched, 0);
}

Test(wire, error) {
    ps_error err = {0};
    cr_assert_eq(ps_wire_encode_error(8, ps_ErrorCode_ERR_TOO_LARGE, "frame too big", &frame,
                                      &frame_len, &err),
                 PS_OK, "%s", err.msg);
    cr_assert_eq(be32(frame), frame_len - PS_FRAME_HDR_BYTES);
    cr_assert_eq(ps_wire_decode(frame + 4, frame_len - 4, &msg, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(msg.env.request_id, 8);
    cr_assert_eq(msg.env.which_body, ps_Envelope_error_tag);
    cr_assert_eq(msg.env.error.code, ps_ErrorCode_ERR_TOO_LARGE);
    cr_assert_str_eq(msg.env.error.message, "frame too big");
}

/* A message longer than the wire's 255 characters is cut, not rejected. */
Test(wire, error_message_is_truncated) {
    char long_msg[400];
    memset(long_msg, 'x', sizeof(long_msg) - 1);
    long_msg[sizeof(long_msg) - 1] = '\0';
    cr_assert_eq(ps_wire_encode_error(9, ps_ErrorCode_ERR_PROTO, long_msg, &frame, &frame_len,
                                      NULL),
                 PS_OK);
    cr_assert_eq(ps_wire_decode(frame + 4, frame_len - 4, &msg, NULL), PS_OK);
    cr_assert_eq(strlen(msg.env.error.message), sizeof(msg.env.error.message) - 1);
    cr_assert_eq(strncmp(msg.env.error.message, long_msg, 255), 0);
}

Test(wire, stats_request) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 10;
    env.which_body = ps_Envelope_stats_tag;
    round_trip(&env, NULL, NULL, NULL, NULL);
}

Test(wire, stats_reply) {
    static ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 11;
    env.which_body = ps_Envelope_stats_reply_tag;
    env.stats_reply.shard = 2;
    env.stats_reply.tables_count = 2;
    strcpy(env.stats_reply.tables[0].name, "emb");
    env.stats_reply.tables[0].rows = 1000000;
    env.stats_reply.tables[0].bytes = 136000000;
    strcpy(env.stats_reply.tables[1].name, "dense/bias");
    env.stats_reply.tables[1].rows = 1;
    env.stats_reply.tables[1].bytes = 4096;
    round_trip(&env, NULL, NULL, NULL, NULL);
    cr_assert_eq(msg.env.stats_reply.shard, 2);
    cr_assert_eq(msg.env.stats_reply.tables_count, 2);
    cr_assert_str_eq(msg.env.stats_reply.tables[0].name, "emb");
    cr_assert_eq(msg.env.stats_reply.tables[0].rows, 1000000);
    cr_assert_eq(msg.env.stats_reply.tables[0].bytes, 136000000);
    cr_assert_str_eq(msg.env.stats_reply.tables[1].name, "dense/bias");
    cr_assert_eq(msg.env.stats_reply.tables[1].rows, 1);
    cr_assert_eq(msg.env.stats_reply.tables[1].bytes, 4096);
}

/* Empty bulk fields (absent on the wire in proto3) decode as zero-length views, and the body is
 * still there. NULL bulk pointers mean empty too. */
Test(wire, empty_bulk_fields) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 12;
    env.which_body = ps_Envelope_push_pull_tag;
    ps_bulk none = bulk(NULL, 0);
    round_trip(&env, &none, NULL, &none, NULL);
    cr_assert_eq(msg.keys.len, 0);
    cr_assert_eq(msg.grads.len, 0);
    cr_assert_eq(msg.pull_keys.len, 0);

    env.which_body = ps_Envelope_pull_tag;
    round_trip(&env, NULL, NULL, NULL, NULL);
    cr_assert_eq(msg.keys.len, 0);

    env.which_body = ps_Envelope_values_tag;
    fill_state fs = {0};
    ps_bulk empty_fill = {.fill = fill_pattern, .fill_ud = &fs, .fill_len = 0};
    round_trip(&env, NULL, NULL, NULL, &empty_fill);
    cr_assert_eq(msg.values.len, 0);
    cr_assert_eq(fs.calls, 0, "fill called for an empty field");
}

/* One key: the shortest non-empty bulk field. And a large one (100k keys, 1.6 MB of grads). */
Test(wire, bulk_sizes) {
    uint64_t one = 42;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_pull_tag;
    ps_bulk k = bulk(&one, 8);
    round_trip(&env, &k, NULL, NULL, NULL);
    check_view(msg.keys, &one, 8, "one key");

    const size_t n = 100000, dim = 4;
    uint64_t *keys = malloc(n * sizeof(*keys));
    float *grads = malloc(n * dim * sizeof(*grads));
    cr_assert(keys && grads);
    fill_keys(keys, n, 9);
    fill_floats(grads, n * dim, 0.5f);
    env.which_body = ps_Envelope_push_tag;
    k = bulk(keys, n * 8);
    ps_bulk g = bulk(grads, n * dim * 4);
    round_trip(&env, &k, &g, NULL, NULL);
    check_view(msg.keys, keys, n * 8, "100k keys");
    check_view(msg.grads, grads, n * dim * 4, "400k grads");
    free(keys);
    free(grads);
}

/* Decoding at an odd address: views stay exact (they are read with ps_load_*). */
Test(wire, decode_unaligned_buffer) {
    uint64_t keys[3] = {1, 2, 0xffffffffffffffffULL};
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_pull_tag;
    ps_bulk k = bulk(keys, sizeof(keys));
    round_trip(&env, &k, NULL, NULL, NULL);
    size_t plen = frame_len - PS_FRAME_HDR_BYTES;
    uint8_t *odd = malloc(plen + 1);
    cr_assert_not_null(odd);
    memcpy(odd + 1, frame + PS_FRAME_HDR_BYTES, plen);
    ps_msg m;
    cr_assert_eq(ps_wire_decode(odd + 1, plen, &m, NULL), PS_OK);
    cr_assert_eq(m.keys.len, sizeof(keys));
    cr_assert(m.keys.p > odd && m.keys.p + m.keys.len <= odd + 1 + plen);
    for (int i = 0; i < 3; i++) cr_assert_eq(ps_load_u64(m.keys.p + 8 * i), keys[i]);
    free(odd);
}

/* --- malformed input ------------------------------------------------------------------------ */

typedef struct {
    char name[40];
    uint8_t bytes[16];
    size_t len;
} garbage_case;

ParameterizedTestParameters(wire, garbage) {
    static garbage_case cases[] = {
        {"all ones", {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 6},
        {"zero tag", {0x00, 0x00, 0x00}, 3},
        {"request_id as bytes", {0x0a, 0x01, 0x00}, 3},
        {"truncated varint", {0x08, 0x80}, 2},
        {"hello overruns", {0x12, 0x05, 0x08}, 3},
        {"pull keys overrun", {0x22, 0x04, 0x12, 0x10, 0x01, 0x02}, 6},
        {"wire type 7", {0x0f}, 1},
        {"empty buffer", {0}, 0},
        {"request id only", {0x08, 0x01}, 2},
        {"text", "hello, world", 12},
    };
    return cr_make_param_array(garbage_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(garbage_case *c, wire, garbage) {
    ps_msg m;
    ps_error err = {0};
    ps_status st = ps_wire_decode(c->bytes, c->len, &m, &err);
    cr_assert_eq(st, PS_PROTO, "%s: got %s", c->name, ps_status_str(st));
    cr_assert_eq(err.code, PS_PROTO, "%s", c->name);
    cr_assert_gt(strlen(err.msg), 0, "%s: no message", c->name);
    cr_log_info("%s: %s", c->name, err.msg);
}

/* nanopb's reason reaches the message. */
Test(wire, garbage_message_has_a_reason) {
    const uint8_t bad[] = {0x0a, 0x01, 0x00};
    ps_error err = {0};
    cr_assert_eq(ps_wire_decode(bad, sizeof(bad), &msg, &err), PS_PROTO);
    const char *prefix = "cannot decode message: ";
    cr_assert_eq(strncmp(err.msg, prefix, strlen(prefix)), 0, "message: %s", err.msg);
    cr_assert_gt(strlen(err.msg), strlen(prefix), "no reason after the prefix: %s", err.msg);
}

/* Every strict prefix of a valid Push is malformed: request_id comes first and the body last,
 * so a prefix either cuts a field or has no body. */
Test(wire, truncated_envelope) {
    uint64_t keys[3] = {10, 20, 30};
    float grads[6] = {1, 2, 3, 4, 5, 6};
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 99;
    env.which_body = ps_Envelope_push_tag;
    env.push.table = 3;
    ps_bulk k = bulk(keys, sizeof(keys)), g = bulk(grads, sizeof(grads));
    round_trip(&env, &k, &g, NULL, NULL);
    const uint8_t *payload = frame + PS_FRAME_HDR_BYTES;
    size_t plen = frame_len - PS_FRAME_HDR_BYTES;
    for (size_t cut = 0; cut < plen; cut++) {
        ps_msg m;
        ps_error err = {0};
        ps_status st = ps_wire_decode(payload, cut, &m, &err);
        cr_assert_eq(st, PS_PROTO, "prefix of %zu/%zu bytes: got %s", cut, plen,
                     ps_status_str(st));
        cr_assert_gt(strlen(err.msg), 0);
    }
}

Test(wire, envelope_without_body) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 13;
    ps_error err = {0};
    cr_assert_eq(ps_wire_encode(&env, NULL, NULL, NULL, NULL, NULL, &frame, &frame_len, &err), PS_OK,
                 "%s", err.msg);
    ps_status st = ps_wire_decode(frame + 4, frame_len - 4, &msg, &err);
    cr_assert_eq(st, PS_PROTO, "got %s", ps_status_str(st));
    cr_assert_not_null(strstr(err.msg, "no body"), "message: %s", err.msg);
}

/* Two bodies in one Envelope (protobuf: the last oneof member wins). The Pull has no keys of its
 * own: the earlier Push's keys must not show through as the Pull's. */
Test(wire, last_body_wins_without_stale_views) {
    const uint8_t b[] = {0x2a, 0x0c, 0x08, 0x01, 0x12, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, /* Push */
                         0x22, 0x02, 0x08, 0x02};                                  /* Pull */
    ps_error err = {0};
    cr_assert_eq(ps_wire_decode(b, sizeof(b), &msg, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(msg.env.which_body, ps_Envelope_pull_tag);
    cr_assert_eq(msg.env.pull.table, 2);
    cr_assert_eq(msg.keys.len, 0, "Pull shows the Push's %zu key bytes", msg.keys.len);
    cr_assert_eq(msg.grads.len, 0);
}

/* --- table specs and error codes ------------------------------------------------------------ */

Test(wire, table_spec_round_trip) {
    ps_table_spec in = {
        .name = "dense_1/kernel",
        .id = 17,
        .dim = 1 << 20,
        .init = {.kind = PS_INIT_GLOROT_UNIFORM, .a = -1.5, .b = 2.25, .stddev = 0.3,
                 .fan_in = 4000000000u, .fan_out = 7},
    };
    ps_TableSpec pb;
    ps_wire_table_to_pb(&in, &pb);
    cr_assert_eq(pb.id, 17);
    cr_assert_str_eq(pb.name, "dense_1/kernel");
    cr_assert_eq(pb.init, ps_InitKind_INIT_GLOROT_UNIFORM);
    ps_table_spec out;
    memset(&out, 0xab, sizeof(out));
    ps_wire_table_from_pb(&pb, &out);
    cr_assert_str_eq(out.name, in.name);
    cr_assert_eq(out.id, in.id);
    cr_assert_eq(out.dim, in.dim);
    cr_assert_eq(out.init.kind, in.init.kind);
    cr_assert_eq(out.init.a, in.init.a);
    cr_assert_eq(out.init.b, in.init.b);
    cr_assert_eq(out.init.stddev, in.init.stddev);
    cr_assert_eq(out.init.fan_in, in.init.fan_in);
    cr_assert_eq(out.init.fan_out, in.init.fan_out);
    /* The optimizer is not on the wire: from_pb leaves it zeroed, not garbage. */
    cr_assert_eq(out.opt.learning_rate, 0.0);
    cr_assert_eq(out.opt.rowwise, false);

    /* every init kind maps to the same wire enum value */
    for (int k = PS_INIT_ZEROS; k <= PS_INIT_GLOROT_UNIFORM; k++) {
        in.init.kind = (ps_init_kind)k;
        ps_wire_table_to_pb(&in, &pb);
        ps_wire_table_from_pb(&pb, &out);
        cr_assert_eq(out.init.kind, (ps_init_kind)k);
    }
}

Test(wire, error_codes) {
    cr_assert_eq(ps_wire_error_code(PS_OK), ps_ErrorCode_ERR_NONE);
    cr_assert_eq(ps_wire_error_code(PS_PROTO), ps_ErrorCode_ERR_PROTO);
    cr_assert_eq(ps_wire_error_code(PS_TOO_LARGE), ps_ErrorCode_ERR_TOO_LARGE);
    cr_assert_eq(ps_wire_error_code(PS_INVALID_ARG), ps_ErrorCode_ERR_INVALID_ARG);
    cr_assert_eq(ps_wire_error_code(PS_NOT_FOUND), ps_ErrorCode_ERR_INVALID_ARG);
    cr_assert_eq(ps_wire_error_code(PS_MISMATCH), ps_ErrorCode_ERR_MISMATCH);
    cr_assert_eq(ps_wire_error_code(PS_NOMEM), ps_ErrorCode_ERR_INTERNAL);
}
