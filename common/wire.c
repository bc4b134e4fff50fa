/* wire.c - nanopb glue: bulk `bytes` fields become zero-copy views on decode and are written in
 * place on encode. */
#include "wire.h"

#include <stdio.h>
#include <malloc.h> /* malloc_usable_size: glibc, and ASan intercepts it */
#include <stdlib.h>
#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "frame.h"

/* --- decode ------------------------------------------------------------------------------- */

/* A bytes field arrives as a substream of exactly its length. The frame is one buffer stream, so
 * stream->state is the current position (pb_decode.c: buf_read): record it, then skip. */
static bool take_view(pb_istream_t *s, const pb_field_iter_t *field, void **arg) {
    (void)field;
    ps_bytes *v = *arg;
    v->p = (const uint8_t *)s->state;
    v->len = s->bytes_left;
    return pb_read(s, NULL, s->bytes_left);
}

static bool setup_body(pb_istream_t *s, const pb_field_iter_t *field, void **arg) {
    (void)s;
    ps_msg *m = *arg;
    pb_callback_t view = {.funcs.decode = take_view};
    /* A repeated oneof: the last body wins; views of an earlier one must not leak into it. */
    m->keys = m->grads = m->pull_keys = m->values = m->acc = m->steps = (ps_bytes){0};
#define VIEW(cb, dst) (cb) = view, (cb).arg = &m->dst
    switch (field->tag) {
    case ps_Envelope_pull_tag:
        VIEW(((ps_Pull *)field->pData)->keys, keys);
        break;
    case ps_Envelope_push_tag:
        VIEW(((ps_Push *)field->pData)->keys, keys);
        VIEW(((ps_Push *)field->pData)->grads, grads);
        break;
    case ps_Envelope_push_pull_tag:
        VIEW(((ps_PushPull *)field->pData)->push_keys, keys);
        VIEW(((ps_PushPull *)field->pData)->grads, grads);
        VIEW(((ps_PushPull *)field->pData)->pull_keys, pull_keys);
        break;
    case ps_Envelope_values_tag:
        VIEW(((ps_Values *)field->pData)->values, values);
        break;
    case ps_Envelope_scan_tag:
        VIEW(((ps_Scan *)field->pData)->keys, keys);
        break;
    case ps_Envelope_rows_tag:
        VIEW(((ps_Rows *)field->pData)->keys, keys);
        VIEW(((ps_Rows *)field->pData)->values, values);
        VIEW(((ps_Rows *)field->pData)->accumulators, acc);
        VIEW(((ps_Rows *)field->pData)->steps, steps);
        break;
    default:
        break;
    }
#undef VIEW
    return true;
}

ps_status ps_wire_decode(const uint8_t *buf, size_t len, ps_msg *out, ps_error *err) {
    memset(out, 0, sizeof(*out));
    out->env.cb_body.funcs.decode = setup_body;
    out->env.cb_body.arg = out;
    pb_istream_t s = pb_istream_from_buffer(buf, len);
    if (!pb_decode(&s, ps_Envelope_fields, &out->env))
        return ps_error_set(err, PS_PROTO, "cannot decode message: %s", PB_GET_ERROR(&s));
    if (out->env.which_body == 0)
        return ps_error_set(err, PS_PROTO, "message has no body");
    /* an absent or empty field is an empty array at a valid address: readers may offset it.
     * A bulk field sent with another wire type (a varint, a fixed64) reaches take_view through
     * a copy on nanopb's stack: its view would outlive that copy, so it is refused (F4). */
    static const uint8_t none[8];
    static const char *const names[] = {"keys", "grads", "pull_keys", "values", "accumulators",
                                        "steps"};
    ps_bytes *views[] = {&out->keys, &out->grads, &out->pull_keys, &out->values, &out->acc,
                         &out->steps};
    const uintptr_t lo = (uintptr_t)buf, hi = lo + len;
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
        if (views[i]->p == NULL) {
            views[i]->p = none;
            continue;
        }
        const uintptr_t at = (uintptr_t)views[i]->p;
        if (at < lo || at > hi || views[i]->len > hi - at)
            return ps_error_set(err, PS_PROTO, "cannot decode message: field %s is not bytes",
                                names[i]);
    }
    return PS_OK;
}

/* --- encode ------------------------------------------------------------------------------- */

static bool put_bulk(pb_ostream_t *s, const pb_field_iter_t *field, void *const *arg) {
    const ps_bulk *b = *arg;
    size_t len = b->fill ? b->fill_len : b->src.len;
    if (len == 0) return true; /* proto3: empty bytes are not sent */
    if (!pb_encode_tag_for_field(s, field) || !pb_encode_varint(s, len)) return false;
    if (b->fill == NULL) return pb_write(s, b->src.p, len);
    if (s->callback == NULL) return pb_write(s, NULL, len); /* sizing pass */
    if (s->max_size - s->bytes_written < len) PB_RETURN_ERROR(s, "stream full");
    /* pb_ostream_from_buffer keeps the write position in state (pb_encode.c: buf_write). */
    uint8_t *dst = s->state;
    b->fill(b->fill_ud, dst, len);
    s->state = dst + len;
    s->bytes_written += len;
    return true;
}

void ps_frame_cache_clear(ps_frame_cache *fc) {
    for (int i = 0; i < PS_FRAME_CACHE_SLOTS; i++) {
        free(fc->spare[i]);
        fc->spare[i] = NULL;
    }
}

static size_t cap_of(const uint8_t *p) { return p ? malloc_usable_size((void *)p) : 0; }

void ps_frame_release(ps_frame_cache *fc, uint8_t *frame) {
    size_t cap = cap_of(frame);
    if (fc == NULL || cap < PS_FRAME_CACHE_MIN) {
        free(frame);
        return;
    }
    int smallest = 0; /* an empty slot counts as smallest */
    size_t held = 0;
    for (int i = 0; i < PS_FRAME_CACHE_SLOTS; i++) {
        held += cap_of(fc->spare[i]);
        if (cap_of(fc->spare[i]) < cap_of(fc->spare[smallest])) smallest = i;
    }
    if ((fc->spare[smallest] != NULL && cap_of(fc->spare[smallest]) >= cap) ||
        held - cap_of(fc->spare[smallest]) + cap > PS_FRAME_CACHE_MAX_BYTES) {
        free(frame); /* every spare is at least as big, or the cache would hold too much */
        return;
    }
    free(fc->spare[smallest]);
    fc->spare[smallest] = frame;
}

/* n bytes for a frame: the smallest spare that holds n, else the biggest spare grown (realloc of
 * an mmap'd block is an mremap: the pages already touched stay), else a fresh block. */
static uint8_t *frame_alloc(ps_frame_cache *fc, size_t n) {
    if (fc == NULL || n < PS_FRAME_CACHE_MIN) return malloc(n);
    int fit = -1, biggest = -1;
    for (int i = 0; i < PS_FRAME_CACHE_SLOTS; i++) {
        size_t cap = cap_of(fc->spare[i]);
        if (cap == 0) continue;
        if (cap >= n && (fit < 0 || cap < cap_of(fc->spare[fit]))) fit = i;
        if (biggest < 0 || cap > cap_of(fc->spare[biggest])) biggest = i;
    }
    int take = fit >= 0 ? fit : biggest;
    if (take < 0) return malloc(n);
    uint8_t *p = fc->spare[take];
    if (fit < 0 && (p = realloc(p, n)) == NULL) return malloc(n); /* the spare stays on failure */
    fc->spare[take] = NULL;
    return p;
}

static const ps_bulk no_bulk;
#define BULK(field, b) (field) = cb, (field).arg = (void *)((b) ? (b) : &no_bulk)

static ps_status encode_env(const ps_Envelope *env, ps_frame_cache *cache, uint8_t **out,
                            size_t *out_len, ps_error *err);

ps_status ps_wire_encode_rows(const ps_Envelope *env_in, const ps_bulk *keys,
                              const ps_bulk *values, const ps_bulk *acc, const ps_bulk *steps,
                              ps_frame_cache *cache, uint8_t **out, size_t *out_len,
                              ps_error *err) {
    ps_Envelope env = *env_in;
    env.cb_body = (pb_callback_t){0};
    pb_callback_t cb = {.funcs.encode = put_bulk};
    BULK(env.rows.keys, keys);
    BULK(env.rows.values, values);
    BULK(env.rows.accumulators, acc);
    BULK(env.rows.steps, steps);
    return encode_env(&env, cache, out, out_len, err);
}

ps_status ps_wire_encode(const ps_Envelope *env_in, const ps_bulk *keys, const ps_bulk *grads,
                         const ps_bulk *pull_keys, const ps_bulk *values, ps_frame_cache *cache,
                         uint8_t **out, size_t *out_len, ps_error *err) {
    ps_Envelope env = *env_in;
    env.cb_body = (pb_callback_t){0}; /* a decoded envelope's hook is a decoder's (F1) */
    pb_callback_t cb = {.funcs.encode = put_bulk};
    switch (env.which_body) {
    case ps_Envelope_pull_tag:
        BULK(env.pull.keys, keys);
        break;
    case ps_Envelope_push_tag:
        BULK(env.push.keys, keys);
        BULK(env.push.grads, grads);
        break;
    case ps_Envelope_push_pull_tag:
        BULK(env.push_pull.push_keys, keys);
        BULK(env.push_pull.grads, grads);
        BULK(env.push_pull.pull_keys, pull_keys);
        break;
    case ps_Envelope_values_tag:
        BULK(env.values.values, values);
        break;
    case ps_Envelope_scan_tag:
        BULK(env.scan.keys, keys);
        break;
    case ps_Envelope_rows_tag: /* ps_wire_encode_rows */
        BULK(env.rows.keys, NULL);
        BULK(env.rows.values, NULL);
        BULK(env.rows.accumulators, NULL);
        BULK(env.rows.steps, NULL);
        break;
    default:
        break;
    }
    return encode_env(&env, cache, out, out_len, err);
}
#undef BULK

static ps_status encode_env(const ps_Envelope *env_p, ps_frame_cache *cache, uint8_t **out,
                            size_t *out_len, ps_error *err) {
    const ps_Envelope env = *env_p;
    size_t size = 0;
    if (!pb_get_encoded_size(&size, ps_Envelope_fields, &env))
        return ps_error_set(err, PS_PROTO, "cannot size message");
    if (size > UINT32_MAX)
        return ps_error_set(err, PS_TOO_LARGE, "message of %zu bytes cannot be framed", size);
    uint8_t *buf = frame_alloc(cache, PS_FRAME_HDR_BYTES + size);
    if (buf == NULL) return ps_error_set(err, PS_NOMEM, "message of %zu bytes: out of memory", size);
    pb_ostream_t s = pb_ostream_from_buffer(buf + PS_FRAME_HDR_BYTES, size);
    if (!pb_encode(&s, ps_Envelope_fields, &env)) {
        ps_frame_release(cache, buf);
        return ps_error_set(err, PS_PROTO, "cannot encode message: %s", PB_GET_ERROR(&s));
    }
    ps_frame_put_header(buf, (uint32_t)s.bytes_written);
    *out = buf;
    *out_len = PS_FRAME_HDR_BYTES + s.bytes_written;
    return PS_OK;
}

ps_status ps_wire_encode_error(uint64_t request_id, ps_ErrorCode code, const char *message,
                               uint8_t **out, size_t *out_len, ps_error *err) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = request_id;
    env.which_body = ps_Envelope_error_tag;
    env.error.code = code;
    snprintf(env.error.message, sizeof(env.error.message), "%s", message);
    return ps_wire_encode(&env, NULL, NULL, NULL, NULL, NULL, out, out_len, err);
}

ps_ErrorCode ps_wire_error_code(ps_status st) {
    switch (st) {
    case PS_OK:
        return ps_ErrorCode_ERR_NONE;
    case PS_PROTO:
        return ps_ErrorCode_ERR_PROTO;
    case PS_TOO_LARGE:
        return ps_ErrorCode_ERR_TOO_LARGE;
    case PS_INVALID_ARG:
    case PS_NOT_FOUND:
        return ps_ErrorCode_ERR_INVALID_ARG;
    case PS_MISMATCH:
        return ps_ErrorCode_ERR_MISMATCH;
    case PS_TIMEOUT:
        return ps_ErrorCode_ERR_TIMEOUT;
    default:
        return ps_ErrorCode_ERR_INTERNAL;
    }
}

void ps_wire_table_to_pb(const ps_table_spec *t, ps_TableSpec *pb) {
    *pb = (ps_TableSpec)ps_TableSpec_init_zero;
    pb->id = t->id;
    snprintf(pb->name, sizeof(pb->name), "%s", t->name);
    pb->dim = t->dim;
    pb->init = (ps_InitKind)t->init.kind;
    pb->init_a = t->init.a;
    pb->init_b = t->init.b;
    pb->init_stddev = t->init.stddev;
    pb->fan_in = t->init.fan_in;
    pb->fan_out = t->init.fan_out;
    pb->form = (ps_AdagradForm)t->opt.form;
    pb->learning_rate = t->opt.learning_rate;
    pb->epsilon = t->opt.epsilon;
    pb->initial_accumulator_value = t->opt.initial_accumulator_value;
    pb->lr_decay = t->opt.lr_decay;
    pb->weight_decay = t->opt.weight_decay;
    pb->rowwise = t->opt.rowwise;
}

void ps_wire_table_from_pb(const ps_TableSpec *pb, ps_table_spec *t) {
    memset(t, 0, sizeof(*t));
    t->id = pb->id;
    snprintf(t->name, sizeof(t->name), "%s", pb->name);
    t->dim = pb->dim;
    t->init.kind = (ps_init_kind)pb->init;
    t->init.a = pb->init_a;
    t->init.b = pb->init_b;
    t->init.stddev = pb->init_stddev;
    t->init.fan_in = pb->fan_in;
    t->init.fan_out = pb->fan_out;
    t->opt.form = (ps_adagrad_form)pb->form;
    t->opt.learning_rate = pb->learning_rate;
    t->opt.epsilon = pb->epsilon;
    t->opt.initial_accumulator_value = pb->initial_accumulator_value;
    t->opt.lr_decay = pb->lr_decay;
    t->opt.weight_decay = pb->weight_decay;
    t->opt.rowwise = pb->rowwise;
}
