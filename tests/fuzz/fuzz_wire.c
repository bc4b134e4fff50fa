/* fuzz_wire.c - libFuzzer target: the Envelope codec (common/wire.c). The input is one frame
 * payload. What decodes is encoded again from its views (ps_wire_encode, or ps_wire_encode_rows
 * for Rows), and that frame must decode to the same body, request id and bulk bytes, and encode
 * to the same bytes a second time (encode . decode is idempotent). Table specs go through their
 * wire form both ways, and the input's tail is an Error message. */
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz_util.h"
#include "wire.h"

static void encode(const ps_msg *decoded, uint8_t **out, size_t *len) {
    /* A decoded Envelope keeps wire.c's decode hook in cb_body, and ps_wire_encode would run it as
     * an encode callback (finding F1, test_fuzz_regressions.c): start from a clean hook. */
    ps_msg copy = *decoded;
    copy.env.cb_body = (pb_callback_t){0};
    const ps_msg *m = &copy;
    const ps_bulk k = {.src = m->keys}, g = {.src = m->grads}, q = {.src = m->pull_keys},
                  v = {.src = m->values}, a = {.src = m->acc}, s = {.src = m->steps};
    ps_error err = {0};
    ps_status st = m->env.which_body == ps_Envelope_rows_tag
                       ? ps_wire_encode_rows(&m->env, &k, &v, &a, &s, NULL, out, len, &err)
                       : ps_wire_encode(&m->env, &k, &g, &q, &v, NULL, out, len, &err);
    FZ_CHECK(st == PS_OK, "a decoded message (body %u) does not encode: %s",
             (unsigned)m->env.which_body, err.msg);
    FZ_CHECK(*len >= PS_FRAME_HDR_BYTES, "frame shorter than its header");
    const uint8_t *h = *out;
    const size_t plen = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    FZ_CHECK(plen == *len - PS_FRAME_HDR_BYTES, "header says %zu, payload is %zu", plen,
             *len - PS_FRAME_HDR_BYTES);
}

static bool same_view(ps_bytes a, ps_bytes b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ps_msg m, m2;
    ps_error err = {0};
    if (ps_wire_decode(data, size, &m, &err) != PS_OK) {
        FZ_CHECK(err.code == PS_PROTO && err.msg[0] != '\0', "decode failed without PS_PROTO");
    } else {
        FZ_CHECK(m.env.which_body != 0, "decoded a message without a body");
        uint8_t *f1, *f2;
        size_t l1, l2;
        encode(&m, &f1, &l1);
        FZ_CHECK(ps_wire_decode(f1 + 4, l1 - 4, &m2, &err) == PS_OK,
                 "re-encoded message does not decode: %s", err.msg);
        FZ_CHECK(m2.env.which_body == m.env.which_body, "body %u became %u",
                 (unsigned)m.env.which_body, (unsigned)m2.env.which_body);
        FZ_CHECK(m2.env.request_id == m.env.request_id, "request id changed");
        FZ_CHECK(same_view(m.keys, m2.keys) && same_view(m.grads, m2.grads) &&
                     same_view(m.pull_keys, m2.pull_keys) && same_view(m.values, m2.values) &&
                     same_view(m.acc, m2.acc) && same_view(m.steps, m2.steps),
                 "bulk bytes changed in a round trip (body %u)", (unsigned)m.env.which_body);
        encode(&m2, &f2, &l2);
        FZ_CHECK(l1 == l2 && memcmp(f1, f2, l1) == 0, "encode(decode(x)) is not stable");
        if (m.env.which_body == ps_Envelope_hello_reply_tag) {
            for (pb_size_t i = 0; i < m.env.hello_reply.tables_count; i++) {
                ps_table_spec t;
                ps_TableSpec pb;
                ps_wire_table_from_pb(&m.env.hello_reply.tables[i], &t);
                ps_wire_table_to_pb(&t, &pb);
                FZ_CHECK(strlen(t.name) < sizeof(t.name), "table name not terminated");
            }
        }
        free(f1);
        free(f2);
    }
    /* the input as an Error's message (cut to the field's size, never overrun) */
    char msg[512];
    size_t n = size < sizeof(msg) - 1 ? size : sizeof(msg) - 1;
    memcpy(msg, data, n);
    msg[n] = '\0';
    uint8_t *f;
    size_t len;
    FZ_CHECK(ps_wire_encode_error(size, ps_wire_error_code((ps_status)(size % PS_STATUS_COUNT)),
                                  msg, &f, &len, &err) == PS_OK,
             "Error reply does not encode: %s", err.msg);
    FZ_CHECK(ps_wire_decode(f + 4, len - 4, &m, &err) == PS_OK &&
                 m.env.which_body == ps_Envelope_error_tag && m.env.request_id == size,
             "Error reply does not decode");
    FZ_CHECK(strncmp(m.env.error.message, msg, sizeof(m.env.error.message) - 1) == 0,
             "Error message changed");
    free(f);
    return 0;
}
