/* test_fuzz_regressions.c - what the fuzz targets (tests/fuzz) found, kept found. Every target's
 * seed corpus is replayed through the same harness the fuzzer runs (tests/fuzz/fuzz_<target>.c,
 * built here as ps_fuzz_<target>), so the suite's ASan/UBSan build checks them too; and each input
 * that exposed a bug (tests/fuzz/regressions/<target>/) has a test of the right behaviour through
 * the public API. A test that fails until its bug is fixed is disabled, and says so. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "frame.h"
#include "testutil.h"
#include "wire.h"

#define FUZZ_DIR PS_SOURCE_DIR "/tests/fuzz"

typedef int (*harness)(const uint8_t *data, size_t size);
int ps_fuzz_frame(const uint8_t *, size_t);
int ps_fuzz_wire(const uint8_t *, size_t);
int ps_fuzz_handlers(const uint8_t *, size_t);
int ps_fuzz_config(const uint8_t *, size_t);
int ps_fuzz_data_csv(const uint8_t *, size_t);
int ps_fuzz_data_libsvm(const uint8_t *, size_t);
int ps_fuzz_data_criteo(const uint8_t *, size_t);
int ps_fuzz_data_idx(const uint8_t *, size_t);
int ps_fuzz_npy(const uint8_t *, size_t);
int ps_fuzz_weights(const uint8_t *, size_t);
int ps_fuzz_client_reply(const uint8_t *, size_t);

/* The whole file; *len its size. Fails the test if it cannot be read. */
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    struct stat st;
    cr_assert_eq(fstat(fileno(f), &st), 0);
    uint8_t *p = malloc((size_t)st.st_size + 1);
    cr_assert_not_null(p);
    *len = fread(p, 1, (size_t)st.st_size, f);
    cr_assert_eq(*len, (size_t)st.st_size, "short read of %s", path);
    fclose(f);
    return p;
}

/* A saved input: tests/fuzz/<kind>/<target>/<name>. */
static uint8_t *input(const char *kind, const char *target, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/%s/%s", FUZZ_DIR, kind, target, name);
    return slurp(path, len);
}

/* Runs every file of tests/fuzz/corpus/<target> through its harness (a harness aborts on what it
 * finds wrong, which fails the test with the file named on stderr). */
static void replay_corpus(const char *target, harness fn) {
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/corpus/%s", FUZZ_DIR, target);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "no corpus at %s", dir);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        size_t len;
        uint8_t *data = input("corpus", target, e->d_name, &len);
        fprintf(stderr, "replaying corpus/%s/%s\n", target, e->d_name);
        fn(data, len);
        free(data);
        n++;
    }
    closedir(d);
    cr_assert_geq(n, 3, "%s: %zu seeds", target, n);
}

TestSuite(fuzz_corpus, .timeout = 120);

Test(fuzz_corpus, frame) { replay_corpus("frame", ps_fuzz_frame); }
Test(fuzz_corpus, wire) { replay_corpus("wire", ps_fuzz_wire); }
Test(fuzz_corpus, handlers) { replay_corpus("handlers", ps_fuzz_handlers); }
Test(fuzz_corpus, config) { replay_corpus("config", ps_fuzz_config); }
Test(fuzz_corpus, data_csv) { replay_corpus("data_csv", ps_fuzz_data_csv); }
Test(fuzz_corpus, data_libsvm) { replay_corpus("data_libsvm", ps_fuzz_data_libsvm); }
Test(fuzz_corpus, data_criteo) { replay_corpus("data_criteo", ps_fuzz_data_criteo); }
Test(fuzz_corpus, data_idx) { replay_corpus("data_idx", ps_fuzz_data_idx); }
Test(fuzz_corpus, npy) { replay_corpus("npy", ps_fuzz_npy); }
Test(fuzz_corpus, weights) { replay_corpus("weights", ps_fuzz_weights); }
Test(fuzz_corpus, client_reply) { replay_corpus("client_reply", ps_fuzz_client_reply); }

/* --- findings ------------------------------------------------------------------------------- */

TestSuite(fuzz_regressions, .timeout = 60);

/* v lies within p[0, n) (compared as addresses: v may point anywhere). */
static bool view_in(ps_bytes v, const uint8_t *p, size_t n) {
    const uintptr_t a = (uintptr_t)v.p, lo = (uintptr_t)p;
    return v.len == 0 || (a >= lo && a - lo <= n && v.len <= n - (a - lo));
}

/* Sends one frame in one write, so that each test meets only its own finding. */
static void send_payload(int fd, const uint8_t *payload, size_t len) {
    uint8_t frame[256];
    cr_assert_leq(len + PS_FRAME_HDR_BYTES, sizeof(frame));
    ps_frame_put_header(frame, (uint32_t)len);
    memcpy(frame + PS_FRAME_HDR_BYTES, payload, len);
    cr_assert(tu_send_all(fd, frame, len + PS_FRAME_HDR_BYTES));
}

/* F1 (wire): ps_wire_encode takes the Envelope's cb_body as it is. An Envelope straight from
 * ps_wire_decode carries wire.c's decode hook there, and the encoder runs it as an encode callback
 * on its output stream: the views it records become the bulk fields, and the second pass writes
 * past the frame (ASan: heap-buffer-overflow in pb_encode). No server or client path re-encodes a
 * decoded message today; a proxy, a log, or a retry would. Right: a decoded message encodes as it
 * came. Disabled until fixed (the harness clears cb_body meanwhile: fuzz_wire.c). */
Test(fuzz_regressions, f1_a_decoded_envelope_encodes_as_it_came) {
    size_t len;
    uint8_t *in = input("regressions", "wire", "F1-reencode-decoded-envelope", &len);
    ps_msg m, back;
    cr_assert_eq(ps_wire_decode(in, len, &m, NULL), PS_OK);
    cr_assert_eq(m.env.which_body, ps_Envelope_rows_tag);
    const ps_bulk k = {.src = m.keys}, v = {.src = m.values}, a = {.src = m.acc},
                  s = {.src = m.steps};
    uint8_t *f;
    size_t flen;
    cr_assert_eq(ps_wire_encode_rows(&m.env, &k, &v, &a, &s, NULL, &f, &flen, NULL), PS_OK);
    cr_assert_eq(flen, len + PS_FRAME_HDR_BYTES, "re-encoded to %zu bytes from %zu", flen, len);
    cr_assert_eq(memcmp(f + PS_FRAME_HDR_BYTES, in, len), 0, "re-encoded bytes differ");
    cr_assert_eq(ps_wire_decode(f + PS_FRAME_HDR_BYTES, len, &back, NULL), PS_OK);
    free(f);
    free(in);
}

/* F2 (frame): a read that ended right after a frame header reached store() with nothing to
 * store while the framer had no buffer yet: f->buf + f->len and memcpy(f->buf, p, 0) with f->buf
 * NULL (UBSan: "applying zero offset to null pointer", "null pointer passed as argument 1").
 * conn.c and client.c met it whenever TCP split a frame after its header, and the suite's UBSan
 * build aborted on it. Fixed by 116ef18. Right: no UB, and the frame comes out whole. */
static ps_status one_frame(void *ud, const uint8_t *payload, size_t len) {
    cr_assert(len == 2 && memcmp(payload, "hi", 2) == 0, "frame of %zu bytes", len);
    ++*(int *)ud;
    return PS_OK;
}

Test(fuzz_regressions, f2_a_read_that_ends_after_a_header) {
    size_t len;
    uint8_t *in = input("regressions", "frame", "F2-read-ends-after-header", &len);
    ps_fuzz_frame(in, len);
    ps_framer *f;
    cr_assert_eq(ps_framer_create(1024, &f, NULL), PS_OK);
    int frames = 0;
    cr_assert_eq(ps_framer_feed(f, (const uint8_t *)"\0\0\0\2", 4, one_frame, &frames, NULL),
                 PS_OK);
    cr_assert_eq(ps_framer_pending(f), 4);
    cr_assert_eq(ps_framer_feed(f, (const uint8_t *)"hi", 2, one_frame, &frames, NULL), PS_OK);
    cr_assert_eq(frames, 1);
    ps_framer_destroy(f);
    free(in);
}

/* F3 (handlers): a Scan without keys of a table with no rows: ps_store_sorted_keys gives NULL and
 * on_scan computes c->scan_keys + 0 (clang UBSan: "applying zero offset to null pointer"; gcc does
 * not report it). Right: one Rows reply with no rows and done set, and the connection stays. The
 * behaviour holds today, so this test runs; the UB is held back in tests/fuzz/ubsan.supp. */
Test(fuzz_regressions, f3_a_scan_of_an_empty_table) {
    size_t len;
    uint8_t *in = input("regressions", "handlers", "F3-scan-of-an-empty-table", &len);
    ps_fuzz_handlers(in, len);
    ps_job_config job;
    tu_job("{\"job_id\": \"fz\", \"tables\": [{\"name\": \"emb\", \"dim\": 4}]}", &job);
    test_server *srv = tu_server_start(&job, 0);
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    send_payload(fd, in + 1, len - 1);
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf), "no reply");
    cr_assert_eq(m.env.which_body, ps_Envelope_rows_tag, "reply body %u", m.env.which_body);
    cr_assert(m.env.rows.done && m.keys.len == 0 && m.values.len == 0);
    free(buf);
    close(fd);
    tu_server_free(srv);
    free(in);
}

/* F4 (wire, server, client): a bulk field (keys, grads, values, ...) sent with a varint or fixed
 * wire type instead of as length-delimited bytes decodes, and its view points into nanopb's
 * scratch copy of the value on the stack of a call that has returned (pb_decode.c:
 * decode_callback_field copies non-string values to a local buffer before calling take_view).
 * Whoever reads the view reads a dead stack frame: ASan reports stack-buffer-overflow when the
 * frame is reused. A peer reaches it with one frame: a Pull whose keys are a fixed64 makes the
 * server look up a key taken from its own stale stack and answer with that row; a server can do
 * the same to a client's Values. Right: PS_PROTO ("keys: wrong wire type"), and the server
 * answers with an Error and closes. Disabled until fixed (FZ_KNOWN(F4) in the harnesses). */
Test(fuzz_regressions, f4_a_bulk_field_that_is_not_bytes_is_refused) {
    size_t len;
    uint8_t *in = input("regressions", "wire", "F4-push-keys-as-varint", &len);
    ps_fuzz_wire(in, len);
    ps_msg m;
    ps_error err = {0};
    ps_status st = ps_wire_decode(in, len, &m, &err);
    cr_assert(st == PS_PROTO || (view_in(m.keys, in, len) && view_in(m.grads, in, len)),
              "decoded with keys at %p (%zu bytes) outside the frame %p..%p", (void *)m.keys.p,
              m.keys.len, (void *)in, (void *)(in + len));
    free(in);
}

Test(fuzz_regressions, f4_the_server_refuses_keys_that_are_not_bytes) {
    size_t len;
    uint8_t *in = input("regressions", "handlers", "F4-pull-keys-as-fixed64", &len);
    ps_fuzz_handlers(in, len);
    ps_job_config job;
    tu_job("{\"job_id\": \"fz\", \"tables\": [{\"name\": \"emb\", \"dim\": 4},"
           " {\"name\": \"bias\", \"dim\": 1}]}",
           &job);
    test_server *srv = tu_server_start(&job, 0);
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    send_payload(fd, in + 1, len - 1);
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf), "no reply");
    cr_assert_eq(m.env.which_body, ps_Envelope_error_tag,
                 "a Pull with keys as a fixed64 got body %u (%zu bytes of values)",
                 m.env.which_body, m.values.len);
    cr_assert_eq(m.env.error.code, ps_ErrorCode_ERR_PROTO, "%s", m.env.error.message);
    free(buf);
    cr_assert(tu_closed(fd));
    close(fd);
    tu_server_free(srv);
    free(in);
}

/* Writes a data fuzzer's input without its 3 option bytes to dir/name and opens it shuffled,
 * as one worker; the caller destroys the reader and removes path and dir. */
static ps_data *open_fuzz_data(const uint8_t *in, size_t len, ps_data_format format,
                               const char *name, char *dir, char *path) {
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, 64, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL && fwrite(in + 3, 1, len - 3, f) == len - 3 && fclose(f) == 0);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = format, o.path = path, o.shuffle = true;
    ps_data *d;
    ps_error err = {0};
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_OK, "%s", err.msg);
    return d;
}

/* F5 (data): a csv whose only column is the label: rows without features. parse_csv computed
 * fv->ids + fv->n and take_slot called memcpy(NULL, NULL, 0) while the batch's feature arrays were
 * still NULL (UBSan: "applying zero offset to null pointer", "null pointer passed as argument").
 * Fixed by bb00852 (feature arrays exist even for batches without features). Right: two rows, no
 * features, labels 1 and 0, and no UB. */
Test(fuzz_regressions, f5_a_csv_of_only_the_label) {
    size_t len;
    uint8_t *in = input("regressions", "data_csv", "F5-label-column-only", &len);
    ps_fuzz_data_csv(in, len);
    char dir[] = "/tmp/fz_f5_XXXXXX", path[64];
    ps_data *d = open_fuzz_data(in, len, PS_DATA_CSV, "d.csv", dir, path);
    ps_error err = {0};
    ps_data_batch b;
    cr_assert_eq(ps_data_next(d, 8, &b, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(b.B, 2);
    cr_assert_eq(b.offsets[2], 0);
    cr_assert(b.labels[0] + b.labels[1] == 1.0f);
    ps_data_destroy(d);
    remove(path);
    rmdir(dir);
    free(in);
}

/* F6 (data): what is left of F5. A shuffled libsvm row without features ("0": a label alone) is
 * held in the shuffle buffer with NULL feature arrays, and take_slot copies them with
 * memcpy(dst, NULL, 0) (UBSan: "null pointer passed as argument 2"). Right: two rows, the second
 * without features, and no UB. Disabled until fixed: the UBSan build fails it
 * (tests/fuzz/ubsan.supp holds it back). */
Test(fuzz_regressions, f6_a_shuffled_libsvm_row_without_features) {
    size_t len;
    uint8_t *in = input("regressions", "data_libsvm", "F6-shuffled-row-without-features", &len);
    ps_fuzz_data_libsvm(in, len);
    char dir[] = "/tmp/fz_f6_XXXXXX", path[64];
    ps_data *d = open_fuzz_data(in, len, PS_DATA_LIBSVM, "d.svm", dir, path);
    ps_error err = {0};
    ps_data_batch b;
    cr_assert_eq(ps_data_next(d, 8, &b, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(b.B, 2);
    cr_assert_eq(b.offsets[2], 1, "%zu features in all", b.offsets[2]);
    ps_data_destroy(d);
    remove(path);
    rmdir(dir);
    free(in);
}

/* F7 (barrier): an empty Push (no keys) from a worker of a sync job, before its rank holds any
 * row of the step: ps_barrier_push computes h->keys + 0 and calls memcpy(NULL, keys, 0) (UBSan:
 * "applying zero offset to null pointer", "null pointer passed as argument 1"). Right: an Ack of
 * 0 rows, and no UB. Disabled until fixed: the UBSan build fails it (tests/fuzz/ubsan.supp holds
 * it back). */
Test(fuzz_regressions, f7_an_empty_push_in_a_sync_job) {
    size_t len;
    uint8_t *in = input("regressions", "handlers", "F7-empty-push-in-a-sync-job", &len);
    ps_fuzz_handlers(in, len);
    ps_job_config job;
    tu_job("{\"job_id\": \"fz\", \"cluster\": {\"consistency\": \"sync\"},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 4}]}",
           &job);
    test_server *srv = tu_server_start(&job, 0);
    int fd = tu_connect(tu_server_port(srv));
    cr_assert(tu_hello(fd, &job));
    send_payload(fd, in + 1, len - 1);
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf), "no reply");
    cr_assert_eq(m.env.which_body, ps_Envelope_ack_tag, "reply body %u", m.env.which_body);
    cr_assert_eq(m.env.ack.rows_touched, 0);
    free(buf);
    close(fd);
    tu_server_free(srv);
    free(in);
}
