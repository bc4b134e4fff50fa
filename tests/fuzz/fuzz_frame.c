/* fuzz_frame.c - libFuzzer target: the framer (common/frame.c) against a plain reference parse of
 * the same bytes. The input picks the frame limit, the read sizes (one table of eight, cycled),
 * whether big frames are read in place (ps_framer_direct/commit, as conn.c and client.c do), a
 * redirect of the partial frame's tail (as the client's Values reader does), and on which frame
 * the callback fails. Whatever the split, the frames that come out must be the reference's, byte
 * for byte, and the framer must stop where the reference does (limit, callback error, or a
 * partial frame of exactly the bytes left over).
 *
 * Input: [limit][flags][fail_at][8 read sizes][stream...] */
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz_util.h"

typedef struct {
    const uint8_t *stream; /* the whole stream, for the reference */
    size_t n;
    size_t max_frame;
    size_t ref_pos;  /* where the reference's next frame header is */
    size_t frames;   /* frames delivered */
    size_t fail_at;  /* the callback fails on this frame (SIZE_MAX: never) */
    uint8_t *redirect; /* the tail buffer of the current frame, if redirected */
    size_t redirect_at;
} ctx;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static ps_status on_frame(void *ud, const uint8_t *payload, size_t len) {
    ctx *c = ud;
    FZ_CHECK(c->ref_pos + 4 <= c->n, "frame %zu delivered past the end of the stream", c->frames);
    const uint32_t want = be32(c->stream + c->ref_pos);
    FZ_CHECK(want <= c->max_frame, "frame of %u bytes over the limit %zu delivered", want,
             c->max_frame);
    FZ_CHECK(len == want, "frame %zu: %zu bytes delivered, header says %u", c->frames, len, want);
    FZ_CHECK(c->ref_pos + 4 + len <= c->n, "frame %zu delivered before its bytes arrived",
             c->frames);
    const uint8_t *ref = c->stream + c->ref_pos + 4;
    const size_t head = c->redirect != NULL ? c->redirect_at : len;
    FZ_CHECK(head == 0 || memcmp(payload, ref, head) == 0, "frame %zu: payload differs", c->frames);
    if (c->redirect != NULL) {
        FZ_CHECK(len == head || memcmp(c->redirect, ref + head, len - head) == 0,
                 "frame %zu: redirected tail differs", c->frames);
        free(c->redirect);
        c->redirect = NULL;
    }
    c->ref_pos += 4 + len;
    return c->frames++ == c->fail_at ? PS_DATA : PS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const size_t limits[] = {0, 16, 1024, 65536, 2 * PS_FRAME_DIRECT_MIN};
    fz_in in = {data, size};
    const size_t max_frame = limits[fz_u8(&in) % 5];
    const uint8_t flags = fz_u8(&in);
    const uint8_t fail = fz_u8(&in);
    uint8_t sizes[8];
    for (int i = 0; i < 8; i++) sizes[i] = fz_u8(&in);
    const bool direct = flags & 1, redirect = flags & 2;
    ctx c = {.stream = in.p, .n = in.n, .max_frame = max_frame,
             .fail_at = flags & 4 ? fail : SIZE_MAX};

    ps_framer *f;
    FZ_CHECK(ps_framer_create(max_frame, &f, NULL) == PS_OK, "framer_create");
    ps_error err = {0};
    ps_status st = PS_OK;
    size_t off = 0;
    for (unsigned i = 0; off < in.n && st == PS_OK; i++) {
        size_t chunk = sizes[i % 8];
        if (chunk == 0) { /* an empty read changes nothing */
            st = ps_framer_feed(f, in.p + off, 0, on_frame, &c, &err);
            chunk = 1;
            if (st != PS_OK) break;
        }
        if (chunk > in.n - off) chunk = in.n - off;
        size_t have, total;
        if (redirect && c.redirect == NULL && ps_framer_partial(f, &have, &total) != NULL &&
            (sizes[i % 8] & 1)) {
            const size_t at = have / 2;
            c.redirect = malloc(total - at + 1);
            FZ_CHECK(c.redirect != NULL, "malloc");
            c.redirect_at = at;
            ps_framer_redirect(f, at, c.redirect);
        }
        uint8_t *dst;
        size_t room = direct ? ps_framer_direct(f, &dst) : 0;
        if (room > 0) {
            if (chunk > room) chunk = room;
            memcpy(dst, in.p + off, chunk);
            st = ps_framer_commit(f, chunk, on_frame, &c);
        } else {
            st = ps_framer_feed(f, in.p + off, chunk, on_frame, &c, &err);
        }
        off += chunk;
    }

    /* The reference's verdict on the bytes fed (off of them). */
    if (st == PS_DATA) {
        FZ_CHECK(c.frames == c.fail_at + 1, "callback error after %zu frames, want %zu", c.frames,
                 c.fail_at + 1);
    } else if (st == PS_TOO_LARGE) {
        FZ_CHECK(c.ref_pos + 4 <= off && be32(c.stream + c.ref_pos) > max_frame,
                 "PS_TOO_LARGE but the next header (at %zu) is within the limit %zu", c.ref_pos,
                 max_frame);
        FZ_CHECK(err.code == PS_TOO_LARGE && err.msg[0] != '\0', "PS_TOO_LARGE without message");
    } else {
        FZ_CHECK(st == PS_OK, "unexpected status %s", ps_status_str(st));
        const size_t left = off - c.ref_pos;
        FZ_CHECK(left < 4 || be32(c.stream + c.ref_pos) <= max_frame,
                 "a header over the limit was accepted");
        FZ_CHECK(left < 4 || left < 4 + (size_t)be32(c.stream + c.ref_pos),
                 "a complete frame (at %zu) was not delivered", c.ref_pos);
        FZ_CHECK(ps_framer_pending(f) == left, "pending %zu, %zu bytes of a frame left over",
                 ps_framer_pending(f), left);
    }
    ps_framer_destroy(f);
    free(c.redirect);
    return 0;
}
