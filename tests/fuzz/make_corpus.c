/* make_corpus.c - writes the seed corpus of every fuzz target (tests/fuzz/corpus/<target>/): a
 * handful of small valid inputs each, made with the real encoders so they stay in step with the
 * protocol. Usage: fuzz_make_corpus DIR (DIR/<target> must not hold stale files you care about). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth.h"
#include "frame.h"
#include "npy.h"
#include "wire.h"

#define DELIM "\xF5\xF5\xF5\xF5" /* fuzz_handlers.c: between frames */

static const char *root;

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void add(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) abort();
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void add_u8(buf *b, uint8_t v) { add(b, &v, 1); }
static void add_str(buf *b, const char *s) { add(b, s, strlen(s)); }

static void put(const char *target, const char *name, const buf *b) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) abort();
    snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (b->n && fwrite(b->p, 1, b->n, f) != b->n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void put_text(const char *target, const char *name, const char *text) {
    buf b = {0};
    add_str(&b, text);
    put(target, name, &b);
    free(b.p);
}

/* prefix bytes, then text */
static void put_opts(const char *target, const char *name, const uint8_t *opts, size_t n_opts,
                     const char *text) {
    buf b = {0};
    add(&b, opts, n_opts);
    add_str(&b, text);
    put(target, name, &b);
    free(b.p);
}

/* --- messages --------------------------------------------------------------------------------- */

typedef struct {
    ps_Envelope env;
    ps_bytes keys, grads, pull_keys, values, acc, steps;
} msg;

/* The frame (header + payload) of m appended to b; with_header false: the payload only. */
static void add_msg(buf *b, const msg *m, bool with_header) {
    const ps_bulk k = {.src = m->keys}, g = {.src = m->grads}, q = {.src = m->pull_keys},
                  v = {.src = m->values}, a = {.src = m->acc}, s = {.src = m->steps};
    uint8_t *f;
    size_t len;
    ps_status st = m->env.which_body == ps_Envelope_rows_tag
                       ? ps_wire_encode_rows(&m->env, &k, &v, &a, &s, NULL, &f, &len, NULL)
                       : ps_wire_encode(&m->env, &k, &g, &q, &v, NULL, &f, &len, NULL);
    if (st != PS_OK) abort();
    add(b, with_header ? f : f + 4, with_header ? len : len - 4);
    free(f);
}

static const uint64_t KEYS[8] = {1, 8, 15, 22, 29, 36, 43, 50}; /* fuzz_client_reply: i*7+1 */
static const float VALS[32] = {0.5f, -1, 2, 0.25f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                               13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28};
static const uint32_t STEPS[8] = {0, 1, 2, 3, 4, 5, 6, 7};
static const uint64_t MANY[300]; /* over fuzz_handlers.c's limit of 256 keys */
#define KB(n) ((ps_bytes){(const uint8_t *)KEYS, (n) * 8})
#define VB(n) ((ps_bytes){(const uint8_t *)VALS, (n) * 4})
#define SB(n) ((ps_bytes){(const uint8_t *)STEPS, (n) * 4})

/* A Hello with a mac of zeros: fuzz_handlers.c signs Hellos among its frames (flag 32). */
static msg hello(uint64_t id, const char *job_id, ps_Role role, uint32_t rank) {
    msg m = {.env = ps_Envelope_init_zero};
    m.env.request_id = id;
    m.env.which_body = ps_Envelope_hello_tag;
    m.env.hello.protocol_version = PS_PROTOCOL_VERSION;
    snprintf(m.env.hello.job_id, sizeof(m.env.hello.job_id), "%s", job_id);
    m.env.hello.role = role;
    m.env.hello.rank = rank;
    m.env.hello.mac.size = PS_AUTH_MAC_BYTES;
    return m;
}

static msg challenge(void) {
    msg m = {.env = ps_Envelope_init_zero};
    m.env.which_body = ps_Envelope_challenge_tag;
    m.env.challenge.nonce.size = PS_AUTH_NONCE_BYTES;
    memset(m.env.challenge.nonce.bytes, 0x5a, PS_AUTH_NONCE_BYTES);
    return m;
}

static msg body(uint64_t id, pb_size_t which) {
    msg m = {.env = ps_Envelope_init_zero};
    m.env.request_id = id;
    m.env.which_body = which;
    return m;
}

static msg pull(uint64_t id, uint32_t table, size_t n, uint64_t min_clock) {
    msg m = body(id, ps_Envelope_pull_tag);
    m.env.pull.table = table, m.env.pull.min_clock = min_clock, m.keys = KB(n);
    return m;
}

static msg push(uint64_t id, uint32_t table, size_t n, size_t dim, uint64_t clock) {
    msg m = body(id, ps_Envelope_push_tag);
    m.env.push.table = table, m.env.push.clock = clock, m.keys = KB(n), m.grads = VB(n * dim);
    return m;
}

static msg pushpull(uint64_t id, uint32_t table, size_t n, size_t dim, size_t n_pull) {
    msg m = body(id, ps_Envelope_push_pull_tag);
    m.env.push_pull.table = table, m.keys = KB(n), m.grads = VB(n * dim);
    m.pull_keys = KB(n_pull);
    return m;
}

static msg clock_(uint64_t id, uint64_t clock, bool finished) {
    msg m = body(id, ps_Envelope_clock_tag);
    m.env.clock.clock = clock, m.env.clock.finished = finished;
    return m;
}

static msg scan(uint64_t id, uint32_t table, size_t n, bool from_start, uint64_t after,
                uint32_t max_rows) {
    msg m = body(id, ps_Envelope_scan_tag);
    m.env.scan.table = table, m.env.scan.from_start = from_start, m.env.scan.after = after;
    m.env.scan.max_rows = max_rows, m.keys = KB(n);
    return m;
}

static msg values(uint64_t id, uint64_t first_row, bool more, size_t floats) {
    msg m = body(id, ps_Envelope_values_tag);
    m.env.values.first_row = first_row, m.env.values.more = more, m.values = VB(floats);
    return m;
}

static msg rows(uint64_t id, size_t n, size_t dim, size_t state, bool steps, bool done) {
    msg m = body(id, ps_Envelope_rows_tag);
    m.env.rows.done = done, m.keys = KB(n), m.values = VB(n * dim), m.acc = VB(n * state);
    if (steps) m.steps = SB(n);
    return m;
}

static msg error(uint64_t id, ps_ErrorCode code, const char *text) {
    msg m = body(id, ps_Envelope_error_tag);
    m.env.error.code = code;
    snprintf(m.env.error.message, sizeof(m.env.error.message), "%s", text);
    return m;
}

static msg ack(uint64_t id, uint64_t rows_touched) {
    msg m = body(id, ps_Envelope_ack_tag);
    m.env.ack.rows_touched = rows_touched;
    return m;
}

/* The tables of fuzz_client_reply.c's job, as its servers describe them. */
static msg hello_reply(uint64_t id, uint32_t num_shards) {
    msg m = body(id, ps_Envelope_hello_reply_tag);
    ps_HelloReply *r = &m.env.hello_reply;
    r->num_shards = num_shards;
    r->tables_count = 3;
    const char *names[3] = {"emb", "bias", "rw"};
    const uint32_t dims[3] = {4, 1, 2};
    for (int i = 0; i < 3; i++) {
        ps_TableSpec *t = &r->tables[i];
        *t = (ps_TableSpec)ps_TableSpec_init_zero;
        t->id = (uint32_t)i;
        strcpy(t->name, names[i]);
        t->dim = dims[i];
        t->learning_rate = 0.01, t->epsilon = 1e-10;
        if (i == 2) t->rowwise = true, t->lr_decay = 0.1;
    }
    return m;
}

static msg stats_reply(uint64_t id) {
    msg m = body(id, ps_Envelope_stats_reply_tag);
    m.env.stats_reply.tables_count = 3;
    const char *names[3] = {"emb", "bias", "rw"};
    for (int i = 0; i < 3; i++) {
        strcpy(m.env.stats_reply.tables[i].name, names[i]);
        m.env.stats_reply.tables[i].rows = (uint64_t)i * 10;
        m.env.stats_reply.tables[i].bytes = (uint64_t)i * 1000;
    }
    return m;
}

/* --- per target ----------------------------------------------------------------------------- */

static void frame_corpus(void) {
    /* [limit index][flags][fail_at][8 read sizes][stream] */
    buf b = {0};
    add(&b, "\x03\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08", 11);
    msg h = hello(1, "fz", ps_Role_ROLE_WORKER, 0), p = pull(2, 0, 3, 0);
    add_msg(&b, &h, true);
    add_msg(&b, &p, true);
    add(&b, "\0\0\0\0", 4);
    put("frame", "three_frames", &b);
    b.n = 0;
    add(&b, "\x03\x06\x00\x01\x00\x05\xff\x02\x09\x03\x40", 11); /* redirect, chunked */
    add_msg(&b, &p, true);
    add_msg(&b, &h, true);
    put("frame", "redirect", &b);
    b.n = 0;
    add(&b, "\x04\x03\x00\xc8\x01\xff\x03\x10\x20\x40\x80", 11); /* direct: a 300 000-byte frame */
    add(&b, "\x00\x04\x93\xe0", 4);
    for (int i = 0; i < 200; i++) add_u8(&b, (uint8_t)i);
    put("frame", "direct_partial", &b);
    b.n = 0;
    add(&b, "\x02\x00\x00\x05\x05\x05\x05\x05\x05\x05\x05", 11); /* limit 1024 */
    add(&b, "\x00\x00\x00\x02hi\x00\x00\x10\x00", 10);
    put("frame", "too_large", &b);
    b.n = 0;
    add(&b, "\x03\x04\x01\x07\x07\x07\x07\x07\x07\x07\x07", 11); /* callback fails on frame 1 */
    for (int i = 0; i < 3; i++) add(&b, "\x00\x00\x00\x03" "abc", 7);
    put("frame", "callback_error", &b);
    free(b.p);
}

static void wire_corpus(void) {
    const struct {
        const char *name;
        msg m;
    } all[] = {
        {"challenge", challenge()},
        {"hello", hello(1, "fz", ps_Role_ROLE_WORKER, 0)},
        {"hello_reply", hello_reply(1, 1)},
        {"pull", pull(2, 0, 3, 0)},
        {"push", push(3, 0, 2, 4, 0)},
        {"push_pull", pushpull(4, 0, 2, 4, 3)},
        {"values", values(5, 1, true, 8)},
        {"ack", ack(6, 2)},
        {"error", error(7, ps_ErrorCode_ERR_TOO_LARGE, "frame of 9 bytes exceeds the limit")},
        {"stats", body(8, ps_Envelope_stats_tag)},
        {"stats_reply", stats_reply(9)},
        {"clock", clock_(10, 3, true)},
        {"scan", scan(11, 2, 2, true, 5, 10)},
        {"rows", rows(12, 2, 2, 1, true, true)},
    };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        buf b = {0};
        add_msg(&b, &all[i].m, false);
        put("wire", all[i].name, &b);
        free(b.p);
    }
}

/* flags, then each message's payload, DELIM between them */
static void handlers_seed(const char *name, uint8_t flags, const msg *ms, size_t n) {
    buf b = {0};
    add_u8(&b, flags);
    for (size_t i = 0; i < n; i++) {
        if (i) add(&b, DELIM, 4);
        add_msg(&b, &ms[i], false);
    }
    put("handlers", name, &b);
    free(b.p);
}

static void handlers_corpus(void) {
    const msg async_all[] = {pull(2, 0, 3, 0),         push(3, 0, 2, 4, 0),
                             pushpull(4, 1, 2, 1, 3),  body(5, ps_Envelope_stats_tag),
                             clock_(6, 1, false),       scan(7, 2, 3, false, 0, 0),
                             push(8, 2, 3, 2, 0),       scan(9, 2, 0, true, 0, 2),
                             scan(10, 2, 0, false, 8, 0)};
    handlers_seed("async_all", 0, async_all, 9);
    const msg sync_steps[] = {push(2, 0, 2, 4, 0), clock_(3, 1, false), pull(4, 0, 2, 1),
                              push(5, 1, 1, 1, 1), clock_(6, 2, true), pull(7, 1, 1, 2)};
    handlers_seed("sync_steps", 1, sync_steps, 6);
    const msg sync_wait[] = {pull(2, 0, 2, 3), pull(3, 1, 1, 0), body(4, ps_Envelope_stats_tag)};
    handlers_seed("sync_wait", 1, sync_wait, 3);
    const msg admin[] = {body(2, ps_Envelope_stats_tag), scan(3, 0, 0, true, 0, 0),
                         push(4, 0, 1, 4, 0)};
    handlers_seed("admin_sync", 1 | 4, admin, 3);
    msg too_many = pull(4, 0, 0, 0);
    too_many.keys = (ps_bytes){(const uint8_t *)MANY, sizeof(MANY)};
    const msg bad_args[] = {pull(2, 9, 1, 0), push(3, 0, 2, 3, 0), too_many,
                            hello(5, "fz", ps_Role_ROLE_WORKER, 0), values(6, 0, false, 4)};
    handlers_seed("bad_args", 0, bad_args, 5);
    const msg no_hello[] = {pull(1, 0, 1, 0)};
    handlers_seed("before_hello", 2, no_hello, 1);
    const msg bad_mac[] = {hello(1, "fz", ps_Role_ROLE_WORKER, 0), pull(2, 0, 1, 0)};
    handlers_seed("unsigned_hello", 2, bad_mac, 2);
    const msg own_hello[] = {hello(1, "fz", ps_Role_ROLE_ADMIN, 0), scan(2, 1, 1, false, 0, 0)};
    handlers_seed("signed_hello_split", 2 | 16 | 32, own_hello, 2);
    const msg rank1[] = {hello(1, "fz", ps_Role_ROLE_WORKER, 1), push(2, 0, 1, 4, 0),
                         clock_(3, 1, false), pull(4, 0, 1, 1)};
    handlers_seed("signed_hello_rank1_sync", 1 | 2 | 32, rank1, 4);
    const msg others[] = {hello(1, "other-job", ps_Role_ROLE_WORKER, 0)};
    handlers_seed("signed_hello_other_job", 2 | 32, others, 1);
    const msg bad_rank[] = {hello(1, "fz", ps_Role_ROLE_WORKER, 7)};
    handlers_seed("signed_hello_bad_rank", 2 | 32, bad_rank, 1);
    buf b = {0};
    add(&b, "\x08\xff\xff\xff\xf0", 5); /* raw: an oversized header */
    put("handlers", "raw_oversized", &b);
    b.n = 0;
    add(&b, "\x08\x00\x00\x00\x64truncated", 14);
    put("handlers", "raw_truncated", &b);
    free(b.p);
}

/* [mode][n][script] */
static void client_seed(const char *name, uint8_t mode, uint8_t n, const msg *ms, size_t count) {
    buf b = {0};
    add_u8(&b, mode);
    add_u8(&b, n);
    for (size_t i = 0; i < count; i++) add_msg(&b, &ms[i], true);
    put("client_reply", name, &b);
    free(b.p);
}

static void client_corpus(void) {
    /* the Hello is request 1; the call's requests are 2, 3, ... */
    client_seed("pull", 0, 3, (msg[]){values(2, 0, false, 12)}, 1);
    client_seed("pull_parts", 0, 3, (msg[]){values(2, 0, true, 4), values(2, 1, false, 8)}, 2);
    client_seed("pull_error", 0, 3, (msg[]){error(2, ps_ErrorCode_ERR_INVALID_ARG, "no")}, 1);
    client_seed("pull_out_of_order", 0, 3, (msg[]){values(7, 0, false, 12)}, 1);
    client_seed("pull_short", 16, 3, (msg[]){values(2, 0, false, 5)}, 1);
    client_seed("push", 1, 3, (msg[]){ack(2, 3)}, 1);
    client_seed("push_pull", 2, 2, (msg[]){values(2, 0, false, 8)}, 1);
    client_seed("rows", 3, 3, (msg[]){rows(2, 3, 2, 1, true, false)}, 1);
    client_seed("scan", 4, 3, (msg[]){rows(2, 2, 2, 1, true, true)}, 1);
    client_seed("stats", 5, 0, (msg[]){stats_reply(2)}, 1);
    client_seed("clock", 6, 0, (msg[]){ack(2, 0)}, 1);
    client_seed("two_pulls", 7, 2, (msg[]){values(2, 0, false, 8), values(3, 0, false, 2)}, 2);
    client_seed("then_pull", 16, 2, (msg[]){values(2, 0, false, 8), values(3, 0, false, 2)}, 2);
    client_seed("hello_reply", 8 | 16, 1, (msg[]){hello_reply(1, 1)}, 1);
    client_seed("hello_wrong_shards", 8, 1, (msg[]){hello_reply(1, 2)}, 1);
    client_seed("hello_error", 8, 1, (msg[]){error(1, ps_ErrorCode_ERR_MISMATCH, "bad token")},
                1);
    client_seed("challenge_and_all", 32, 2,
                (msg[]){challenge(), hello_reply(1, 1), values(2, 0, false, 8)}, 3);
    client_seed("challenge_refused", 32, 1, (msg[]){error(0, ps_ErrorCode_ERR_TOO_LARGE, "full")},
                1);
}

static void config_corpus(void) {
    put_text("config", "keras_seed",
             "{\"job_id\": \"keras-seed\", \"seed\": 42, \"cluster\": {\"servers\": 1, "
             "\"workers\": 2},\n \"model\": {\"input_dim\": 20, \"layers\": [{\"units\": 64, "
             "\"activation\": \"relu\"}, {\"units\": 1, \"activation\": \"sigmoid\"}],\n "
             "\"loss\": \"binary_crossentropy\"},\n \"optimizer\": {\"name\": \"adagrad\", "
             "\"form\": \"keras\", \"learning_rate\": 0.01},\n \"fit\": {\"epochs\": 50, "
             "\"batch_size\": 32},\n \"data\": {\"train\": {\"format\": \"random\", \"rows\": "
             "1000, \"cols\": 20}}}\n");
    buf b = {0};
    add(&b, "\0fit.epochs=3\0tables[0].dim=16\0cluster.servers=[\"h:1\",\"[::1]:2\"]\0token=x",
        71);
    put("config", "base_with_sets", &b);
    free(b.p);
    put_text("config", "tables_and_limits",
             "{\"job_id\": \"t\", \"cluster\": {\"servers\": [\"127.0.0.1:7000\"], "
             "\"consistency\": \"sync\", \"barrier_timeout_ms\": 100, \"request_timeout_ms\": 500,"
             " \"token\": \"s\"},\n \"limits\": {\"max_frame_bytes\": 1024, "
             "\"max_keys_per_request\": 10, \"max_connections\": 2},\n \"server\": {\"threads\": "
             "2, \"busy_poll_us\": -1},\n \"tables\": [{\"name\": \"emb\", \"dim\": 8, \"init\": "
             "{\"type\": \"uniform\", \"minval\": -1, \"maxval\": 1}, \"optimizer\": "
             "{\"rowwise\": true, \"lr_decay\": 0.5}},\n {\"name\": \"b\", \"dim\": 1, \"init\": "
             "{\"type\": \"constant\", \"value\": 2}}]}\n");
    put_text("config", "sparse_csv",
             "{\"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": 1000, \"init\": "
             "{\"type\": \"normal\", \"stddev\": 0.1}},\n \"layers\": [{\"units\": 3, "
             "\"activation\": \"softmax\"}], \"loss\": \"sparse_categorical_crossentropy\"},\n "
             "\"fit\": {\"shuffle\": false, \"verbose\": 2, \"overlap\": false, \"init_from\": "
             "\"w\", \"export_to\": \"e\", \"metrics_file\": \"m\"},\n \"data\": {\"train\": "
             "{\"format\": \"csv\", \"path\": \"a.csv.gz\", \"label_name\": \"y\", "
             "\"skip_bad_lines\": true},\n \"validation\": {\"format\": \"libsvm\", \"path\": "
             "\"v.svm\", \"one_based\": false}}}\n");
    b = (buf){0};
    add(&b, "{\"tables\": [{\"name\": \"a\", \"dim\": 2}]}\0tables[0].init.type=glorot_uniform"
            "\0tables[0].init.fan_in=3\0optimizer.form=\"keras\"", 120);
    put("config", "json_with_sets", &b);
    free(b.p);
}

static void data_corpus(void) {
    /* [flags][opts][label_column][text]: see fuzz_data.h */
    put_opts("data_csv", "header", (const uint8_t[]){0, 7, 0}, 3, "label,a,b\n1,0.5,2\n0,1,3\n");
    put_opts("data_csv", "label_name", (const uint8_t[]){32, 2, 0}, 3,
             "x,label,y\n1,0,2\n 3 ,\t1, 4\n");
    put_opts("data_csv", "gzip_last_column", (const uint8_t[]){4, 7, 0xff}, 3,
             "1,2,0\n3,4,1\n5,6,0\n");
    put_opts("data_csv", "sharded_skip_shuffle", (const uint8_t[]){1 | 2 | 64, 0x61, 0}, 3,
             "a,b\n1,2\nbad,3\n4,5\n\n6,7\n1e3,-2.5\n");
    put_opts("data_csv", "long_lines", (const uint8_t[]){1, 0x08 | 3, 1}, 3,
             "1,2,3\n4,5,6,7,8,9,10,11,12,13,14,15\n7,8,9\n");
    put_opts("data_libsvm", "one_based", (const uint8_t[]){16, 7, 0}, 3,
             "1 1:0.5 3:1.2\n-1 2:1 # comment\n0 qid:3 5:2\n# only a comment\n");
    put_opts("data_libsvm", "zero_based_big_ids", (const uint8_t[]){0, 1, 0}, 3,
             "1 0:1 18446744073709551615:2\n2 7:-1e-3\n");
    put_opts("data_libsvm", "gzip", (const uint8_t[]){4 | 16, 3, 0}, 3, "1 1:1\n0 2:2 4:4\n");
    put_opts("data_libsvm", "bad_lines_sharded", (const uint8_t[]){1 | 2 | 16 | 128, 0xa2, 0}, 3,
             "1 1:1\nx 2:2\n1 3:nan\n0 4:4 4:5\n1 0:1\n1 5\n0\n");
    /* criteo: [flags][opts][split byte][text] (fuzz_data.h); 39 tabs make a row of empties */
#define T12 "\t\t\t\t\t\t\t\t\t\t\t\t"
#define T39 T12 T12 T12 "\t\t\t"
    put_opts("data_criteo", "bucket", (const uint8_t[]){0, 7, 0}, 3,
             "0\t1\t-1\t5" T12 T12 "\t68fd1e64\t80e26c9b\t\t\t\t\t\t\t\t\t\t\n1" T39 "\n");
    put_opts("data_criteo", "dense_gzip_split", (const uint8_t[]){4 | 16, 3, 2}, 3,
             "1\t3\t1000" T12 T12 "\tab\t\t\t\t\t\t\t\t\t\t\t\t\n0" T39 "\r\n1" T39 "\n");
    put_opts("data_criteo", "bad_lines_sharded_holdout", (const uint8_t[]){1 | 2 | 64, 0x62, 5},
             3, "2" T39 "\n1\tx" T39 "\n\n0" T39 "\n1\t9223372036854775808" T12 T12 "\t\n");
#undef T12
#undef T39
    /* idx: [flags][a][b][c][rest] (fuzz_data_idx.c); with flags 128 the headers are made */
    put_opts("data_idx", "made_headers", (const uint8_t[]){128, 5, 1, 2, 0}, 4,
             "abcdefghijklmnopqrstuvwxyz0123\1\2\3\4\5");
    put_opts("data_idx", "made_gzip_sharded_split", (const uint8_t[]){128 | 1 | 2 | 4 | 16 | 64,
                                                                      7, 3, 0x31},
             4, "the bytes of seven images of 4 x 2 pixels and their labels");
    {
        buf b = {0}; /* two 1 x 2 images and their labels, as files the fuzzer may change */
        add(&b, (const uint8_t[]){0, 170, 0, 0}, 4); /* split: images are the first 20 bytes */
        add(&b, (const uint8_t[]){0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2}, 16);
        add(&b, (const uint8_t[]){0, 255, 128, 7}, 4);
        add(&b, (const uint8_t[]){0, 0, 8, 1, 0, 0, 0, 2, 3, 9}, 10);
        put("data_idx", "raw_files", &b);
        free(b.p);
    }
}

static void npy_file(const char *target, const char *name, ps_npy_dtype dt, unsigned ndim,
                     const uint64_t *shape, const void *items, size_t bytes) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) abort();
    snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
    ps_npy_writer *w;
    ps_error err = {0};
    if (ps_npy_create(path, dt, ndim, shape, &w, &err) != PS_OK ||
        ps_npy_append(w, items, bytes, &err) != PS_OK || ps_npy_finish(w, &err) != PS_OK) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        exit(1);
    }
}

static void npy_corpus(void) {
    npy_file("npy", "f4_3x4", PS_NPY_F4, 2, (const uint64_t[]){3, 4}, VALS, 48);
    npy_file("npy", "u8_5", PS_NPY_U8, 1, (const uint64_t[]){5}, KEYS, 40);
    npy_file("npy", "u4_2x2x1", PS_NPY_U4, 3, (const uint64_t[]){2, 2, 1}, STEPS, 16);
    npy_file("npy", "f4_scalar", PS_NPY_F4, 0, NULL, VALS, 4);
    npy_file("npy", "f4_0x3", PS_NPY_F4, 2, (const uint64_t[]){0, 3}, NULL, 0);
    /* format 2.0: a 4-byte header length */
    buf b = {0};
    const char *dict = "{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }";
    size_t hl = strlen(dict) + 1, pad = (64 - (12 + hl) % 64) % 64;
    add(&b, "\x93NUMPY\x02\x00", 8);
    uint32_t len = (uint32_t)(hl + pad);
    add(&b, &len, 4);
    add_str(&b, dict);
    for (size_t i = 0; i < pad; i++) add_u8(&b, ' ');
    add_u8(&b, '\n');
    add(&b, STEPS, 8);
    put("npy", "v2_u4_2", &b);
    free(b.p);
}

static void weights_corpus(void) {
    /* files: see fuzz_weights.c's init */
    put_text("weights", "full",
             "{\"format\": \"ps-weights\", \"version\": 1, \"job_id\": \"fz\", \"seed\": 5,"
             " \"tables\": [\n"
             "{\"name\": \"dense/kernel\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [3, 4],"
             " \"values\": \"dk.npy\", \"accumulators\": \"dk.acc.npy\","
             " \"optimizer\": {\"form\": \"keras\", \"rowwise\": false,"
             " \"learning_rate\": 0.01}},\n"
             "{\"name\": \"dense/bias\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4],"
             " \"values\": \"db.npy\"},\n"
             "{\"name\": \"emb\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 5,"
             " \"keys\": \"ek.npy\", \"values\": \"ev.npy\", \"accumulators\": \"ev.npy\","
             " \"steps\": \"es.npy\", \"optimizer\": {\"form\": \"pytorch\", \"lr_decay\": 0.1}},\n"
             "{\"name\": \"rw\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 5,"
             " \"keys\": \"sub/ek.npy\", \"values\": \"ev.npy\", \"accumulators\": \"ea1.npy\","
             " \"optimizer\": {\"form\": \"pytorch\", \"rowwise\": true}}]}\n");
    put_text("weights", "values_only",
             "{\"format\": \"ps-weights\", \"version\": 1, \"tables\": [\n"
             "{\"name\": \"dense/kernel\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [1, 4],"
             " \"values\": \"db14.npy\"},\n"
             "{\"name\": \"dense/bias\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4],"
             " \"values\": \"db.npy\"},\n"
             "{\"name\": \"emb\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 0,"
             " \"keys\": \"e0k.npy\", \"values\": \"e0v.npy\"},\n"
             "{\"name\": \"rw\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 5,"
             " \"keys\": \"ek.npy\", \"values\": \"ev.npy\"},\n"
             "{\"name\": \"extra\", \"dim\": 9, \"layout\": \"dense\", \"shape\": [9],"
             " \"values\": \"missing.npy\"}]}\n");
    put_text("weights", "keys_out_of_order",
             "{\"format\": \"ps-weights\", \"version\": 1, \"tables\": [\n"
             "{\"name\": \"dense/kernel\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [3, 4],"
             " \"values\": \"dk.u4.npy\"},\n"
             "{\"name\": \"dense/bias\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4],"
             " \"values\": \"scalar.npy\"},\n"
             "{\"name\": \"emb\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 5,"
             " \"keys\": \"ek.desc.npy\", \"values\": \"ev.npy\"},\n"
             "{\"name\": \"rw\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 5,"
             " \"keys\": \"ek.dup.npy\", \"values\": \"bad.npy\"}]}\n");
    put_text("weights", "unsafe_paths",
             "{\"format\": \"ps-weights\", \"version\": 2, \"tables\": [\n"
             "{\"name\": \"emb\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 5,"
             " \"keys\": \"../ek.npy\", \"values\": \"/ev.npy\"}]}\n");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) {
        perror(root);
        return 1;
    }
    frame_corpus();
    wire_corpus();
    handlers_corpus();
    client_corpus();
    config_corpus();
    data_corpus();
    npy_corpus();
    weights_corpus();
    return 0;
}
