/* test_frame.c - common/frame.c: frames built with ps_frame_put_header come back whole however the
 * stream is split; limits are checked on the header, before any payload is buffered. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

#define LIMIT (1u << 20)
#define SINK_BYTES 8192
#define SINK_FRAMES 64

/* Collects every frame the framer hands out: lengths and a copy of the payloads. */
typedef struct {
    size_t n, bytes;
    size_t len[SINK_FRAMES];
    uint8_t data[SINK_BYTES];
    ps_status fail_at_call; /* PS_OK: never fail */
    size_t fail_index;      /* fail on this call (0-based) with fail_at_call */
    size_t calls;
} sink;

static ps_status collect(void *ud, const uint8_t *payload, size_t len) {
    sink *s = ud;
    size_t call = s->calls++;
    if (s->fail_at_call != PS_OK && call == s->fail_index) return s->fail_at_call;
    cr_assert_lt(s->n, SINK_FRAMES, "more than %d frames", SINK_FRAMES);
    cr_assert_leq(s->bytes + len, SINK_BYTES, "frames larger than the sink");
    if (len > 0) memcpy(s->data + s->bytes, payload, len);
    s->len[s->n++] = len;
    s->bytes += len;
    return PS_OK;
}

/* Appends one frame (header + payload) to wire; returns the new length. */
static size_t put_frame(uint8_t *wire, size_t at, const uint8_t *payload, uint32_t len) {
    ps_frame_put_header(wire + at, len);
    if (len > 0) memcpy(wire + at + PS_FRAME_HDR_BYTES, payload, len);
    return at + PS_FRAME_HDR_BYTES + len;
}

static ps_framer *fr;
static void setup(void) {
    ps_error err = {0};
    cr_assert_eq(ps_framer_create(LIMIT, &fr, &err), PS_OK, "%s", err.msg);
}
static void teardown(void) { ps_framer_destroy(fr); }
TestSuite(frame, .init = setup, .fini = teardown, .timeout = 10);

/* A stream of frames of these payload sizes; payload byte i of frame f is (f * 31 + i) & 0xff. */
static const uint32_t sizes[] = {0, 1, 3, 4, 5, 17, 0, 255, 256, 1000, 2};
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))

static size_t build_stream(uint8_t *wire, uint8_t *expect, size_t *expect_len) {
    size_t at = 0, e = 0;
    uint8_t payload[1024];
    for (size_t f = 0; f < N_SIZES; f++) {
        for (uint32_t i = 0; i < sizes[f]; i++) payload[i] = (uint8_t)(f * 31 + i);
        at = put_frame(wire, at, payload, sizes[f]);
        memcpy(expect + e, payload, sizes[f]);
        e += sizes[f];
    }
    *expect_len = e;
    return at;
}

static void check_stream(const sink *s, const uint8_t *expect, size_t expect_len,
                         const char *how) {
    cr_assert_eq(s->n, N_SIZES, "%s: %zu frames, want %zu", how, s->n, N_SIZES);
    for (size_t f = 0; f < N_SIZES; f++)
        cr_assert_eq(s->len[f], sizes[f], "%s: frame %zu has %zu bytes, want %u", how, f,
                     s->len[f], sizes[f]);
    cr_assert_eq(s->bytes, expect_len, "%s", how);
    cr_assert_arr_eq(s->data, expect, expect_len, "%s: payload bytes differ", how);
    cr_assert_eq(ps_framer_pending(fr), 0, "%s: bytes left pending", how);
}

Test(frame, header_is_big_endian) {
    uint8_t h[PS_FRAME_HDR_BYTES];
    ps_frame_put_header(h, 0x01020304u);
    cr_assert_arr_eq(h, ((uint8_t[]){1, 2, 3, 4}), 4);
    ps_frame_put_header(h, 0xffffffffu);
    cr_assert_arr_eq(h, ((uint8_t[]){0xff, 0xff, 0xff, 0xff}), 4);
}

Test(frame, round_trip_whole) {
    static uint8_t wire[4096], expect[4096];
    size_t elen, n = build_stream(wire, expect, &elen);
    sink s = {0};
    cr_assert_eq(ps_framer_feed(fr, wire, n, collect, &s, NULL), PS_OK);
    check_stream(&s, expect, elen, "whole");
}

Test(frame, round_trip_byte_by_byte) {
    static uint8_t wire[4096], expect[4096];
    size_t elen, n = build_stream(wire, expect, &elen);
    sink s = {0};
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ps_framer_feed(fr, wire + i, 1, collect, &s, NULL), PS_OK, "byte %zu", i);
    check_stream(&s, expect, elen, "byte by byte");
}

/* Two feeds, split at every offset of the stream (including 0 and n: an empty feed). */
Test(frame, round_trip_split_at_every_offset) {
    static uint8_t wire[4096], expect[4096];
    size_t elen, n = build_stream(wire, expect, &elen);
    for (size_t cut = 0; cut <= n; cut++) {
        ps_framer *f2;
        cr_assert_eq(ps_framer_create(LIMIT, &f2, NULL), PS_OK);
        sink s = {0};
        cr_assert_eq(ps_framer_feed(f2, wire, cut, collect, &s, NULL), PS_OK, "cut %zu", cut);
        cr_assert_eq(ps_framer_feed(f2, wire + cut, n - cut, collect, &s, NULL), PS_OK,
                     "cut %zu", cut);
        cr_assert_eq(s.n, N_SIZES, "cut %zu: %zu frames", cut, s.n);
        cr_assert_eq(s.bytes, elen, "cut %zu", cut);
        cr_assert_arr_eq(s.data, expect, elen, "cut %zu: payload bytes differ", cut);
        cr_assert_eq(ps_framer_pending(f2), 0, "cut %zu", cut);
        ps_framer_destroy(f2);
    }
}

/* Random chunkings (fixed seed): many small feeds of 1..9 bytes. */
Test(frame, round_trip_random_chunks) {
    static uint8_t wire[4096], expect[4096];
    size_t elen, n = build_stream(wire, expect, &elen);
    uint64_t rng = 12345;
    for (int round = 0; round < 200; round++) {
        ps_framer *f2;
        cr_assert_eq(ps_framer_create(LIMIT, &f2, NULL), PS_OK);
        sink s = {0};
        for (size_t at = 0; at < n;) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t take = 1 + (size_t)(rng >> 33) % 9;
            if (take > n - at) take = n - at;
            cr_assert_eq(ps_framer_feed(f2, wire + at, take, collect, &s, NULL), PS_OK);
            at += take;
        }
        cr_assert_eq(s.n, N_SIZES, "round %d", round);
        cr_assert_arr_eq(s.data, expect, elen, "round %d", round);
        ps_framer_destroy(f2);
    }
}

Test(frame, two_frames_in_one_feed) {
    uint8_t wire[32];
    size_t n = put_frame(wire, 0, (const uint8_t *)"a", 1);
    n = put_frame(wire, n, (const uint8_t *)"bc", 2);
    cr_assert_eq(n, 11);
    sink s = {0};
    cr_assert_eq(ps_framer_feed(fr, wire, n, collect, &s, NULL), PS_OK);
    cr_assert_eq(s.n, 2);
    cr_assert_eq(s.len[0], 1);
    cr_assert_eq(s.len[1], 2);
    cr_assert_arr_eq(s.data, "abc", 3);
}

Test(frame, empty_frame) {
    uint8_t wire[PS_FRAME_HDR_BYTES];
    ps_frame_put_header(wire, 0);
    sink s = {0};
    cr_assert_eq(ps_framer_feed(fr, wire, sizeof(wire), collect, &s, NULL), PS_OK);
    cr_assert_eq(s.n, 1, "an empty frame is still a frame");
    cr_assert_eq(s.len[0], 0);
    cr_assert_eq(ps_framer_pending(fr), 0);
}

Test(frame, empty_feed_is_a_no_op) {
    sink s = {0};
    cr_assert_eq(ps_framer_feed(fr, NULL, 0, collect, &s, NULL), PS_OK);
    cr_assert_eq(s.calls, 0);
    cr_assert_eq(ps_framer_pending(fr), 0);
}

/* A frame of exactly LIMIT bytes passes, fed whole and fed in 3 pieces (the copying path). */
typedef struct {
    size_t frames, len;
    uint8_t first, last;
} big_sink;

static ps_status count_big(void *ud, const uint8_t *payload, size_t len) {
    big_sink *b = ud;
    b->frames++, b->len = len;
    b->first = payload[0], b->last = payload[len - 1];
    return PS_OK;
}

Test(frame, exactly_at_limit_passes) {
    uint8_t *wire = malloc(PS_FRAME_HDR_BYTES + LIMIT);
    cr_assert_not_null(wire);
    ps_frame_put_header(wire, LIMIT);
    memset(wire + PS_FRAME_HDR_BYTES, 0x5a, LIMIT);
    wire[PS_FRAME_HDR_BYTES] = 1, wire[PS_FRAME_HDR_BYTES + LIMIT - 1] = 2;
    size_t n = PS_FRAME_HDR_BYTES + LIMIT;

    big_sink b = {0};
    ps_error err = {0};
    cr_assert_eq(ps_framer_feed(fr, wire, n, count_big, &b, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(b.frames, 1);
    cr_assert_eq(b.len, LIMIT);

    const size_t cuts[] = {2, 1000, n};
    size_t at = 0;
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(ps_framer_feed(fr, wire + at, cuts[i] - at, count_big, &b, &err), PS_OK,
                     "%s", err.msg);
        at = cuts[i];
        if (i < 2) cr_assert_eq(ps_framer_pending(fr), at);
    }
    cr_assert_eq(b.frames, 2);
    cr_assert_eq(b.len, LIMIT);
    cr_assert_eq(b.first, 1);
    cr_assert_eq(b.last, 2);
    free(wire);
}

/* Over-limit headers, table-driven: TOO_LARGE as soon as the header is complete, whatever
 * follows, and the callback is never called. */
typedef struct {
    char name[32];
    uint32_t announced;
    size_t extra; /* payload bytes sent after the header */
    int one_byte; /* feed byte by byte */
} over_case;

ParameterizedTestParameters(frame, over_limit) {
    static over_case cases[] = {
        {"limit + 1", LIMIT + 1, 0, 0},
        {"limit + 1, with payload", LIMIT + 1, 100, 0},
        {"limit + 1, byte by byte", LIMIT + 1, 10, 1},
        {"4 GB - 1", 0xffffffffu, 0, 0},
        {"4 GB - 1, with payload", 0xffffffffu, 64, 0},
        {"2 GB", 0x80000000u, 8, 1},
    };
    return cr_make_param_array(over_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(over_case *c, frame, over_limit) {
    uint8_t wire[PS_FRAME_HDR_BYTES + 128] = {0};
    ps_frame_put_header(wire, c->announced);
    size_t n = PS_FRAME_HDR_BYTES + c->extra;
    sink s = {0};
    ps_error err = {0};
    ps_status st = PS_OK;
    if (c->one_byte) {
        size_t i = 0;
        for (; i < n && st == PS_OK; i++) st = ps_framer_feed(fr, wire + i, 1, collect, &s, &err);
        cr_assert_eq(i, PS_FRAME_HDR_BYTES, "%s: error after byte %zu, want at the header's end",
                     c->name, i);
    } else {
        st = ps_framer_feed(fr, wire, n, collect, &s, &err);
    }
    cr_assert_eq(st, PS_TOO_LARGE, "%s: got %s", c->name, ps_status_str(st));
    cr_assert_eq(err.code, PS_TOO_LARGE, "%s", c->name);
    cr_assert_eq(s.calls, 0, "%s: callback called", c->name);
    char want[64];
    snprintf(want, sizeof(want), "frame of %u bytes", c->announced);
    cr_assert_not_null(strstr(err.msg, want), "%s: message \"%s\" lacks \"%s\"", c->name,
                       err.msg, want);
}

/* The announced 4 GB are never allocated: the heap does not grow by anything near it.
 * (mallinfo2 reports glibc's heap; under ASan it may read 0, which passes trivially.) */
Test(frame, over_limit_allocates_nothing) {
    uint8_t wire[PS_FRAME_HDR_BYTES + 16] = {0};
    ps_frame_put_header(wire, 0xffffffffu);
    struct mallinfo2 before = mallinfo2();
    sink s = {0};
    cr_assert_eq(ps_framer_feed(fr, wire, sizeof(wire), collect, &s, NULL), PS_TOO_LARGE);
    struct mallinfo2 after = mallinfo2();
    size_t used_before = before.uordblks + before.hblkhd;
    size_t used_after = after.uordblks + after.hblkhd;
    cr_assert_lt(used_after, used_before + 4096, "heap grew from %zu to %zu bytes", used_before,
                 used_after);
    cr_assert_eq(s.calls, 0);
}

/* A callback error stops the feed: later frames in the same buffer are not delivered. */
Test(frame, callback_error_stops_feeding) {
    uint8_t wire[64];
    size_t n = put_frame(wire, 0, (const uint8_t *)"one", 3);
    n = put_frame(wire, n, (const uint8_t *)"two", 3);
    n = put_frame(wire, n, (const uint8_t *)"six", 3);
    sink s = {.fail_at_call = PS_INVALID_ARG, .fail_index = 1};
    cr_assert_eq(ps_framer_feed(fr, wire, n, collect, &s, NULL), PS_INVALID_ARG);
    cr_assert_eq(s.calls, 2, "feeding went on after the callback failed");
    cr_assert_eq(s.n, 1);
    cr_assert_arr_eq(s.data, "one", 3);
}

/* Same through the copying path: the failing frame arrives split. */
Test(frame, callback_error_on_split_frame) {
    uint8_t wire[64];
    size_t n = put_frame(wire, 0, (const uint8_t *)"hello", 5);
    n = put_frame(wire, n, (const uint8_t *)"x", 1);
    sink s = {.fail_at_call = PS_PROTO, .fail_index = 0};
    cr_assert_eq(ps_framer_feed(fr, wire, 6, collect, &s, NULL), PS_OK);
    cr_assert_eq(ps_framer_feed(fr, wire + 6, n - 6, collect, &s, NULL), PS_PROTO);
    cr_assert_eq(s.calls, 1);
}

Test(frame, pending_counts_partial_frame) {
    uint8_t wire[32];
    size_t n = put_frame(wire, 0, (const uint8_t *)"abcdef", 6);
    sink s = {0};
    cr_assert_eq(ps_framer_pending(fr), 0);
    const size_t steps[] = {2, 4, 7, 9};
    size_t at = 0;
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(ps_framer_feed(fr, wire + at, steps[i] - at, collect, &s, NULL), PS_OK);
        at = steps[i];
        cr_assert_eq(ps_framer_pending(fr), at, "after %zu bytes: pending %zu", at,
                     ps_framer_pending(fr));
        cr_assert_eq(s.n, 0);
    }
    cr_assert_eq(ps_framer_feed(fr, wire + at, n - at, collect, &s, NULL), PS_OK);
    cr_assert_eq(ps_framer_pending(fr), 0);
    cr_assert_eq(s.n, 1);
    cr_assert_arr_eq(s.data, "abcdef", 6);
}

Test(frame, destroy_null_is_safe) { ps_framer_destroy(NULL); }

/* --- direct reads into a big frame's buffer ------------------------------------------------- */

typedef struct {
    size_t calls, len;
    uint64_t sum; /* position-weighted checksum of the payload */
} sum_sink;

static ps_status check_big(void *ud, const uint8_t *payload, size_t len) {
    sum_sink *b = ud;
    b->calls++, b->len = len;
    for (size_t i = 0; i < len; i++) b->sum += (uint64_t)payload[i] * (i + 1);
    return PS_OK;
}

/* A reader's loop: whenever the framer offers its buffer, read up to `chunk` into it; else feed
 * from a small buffer. Two big frames and a small one between them arrive intact, and the bulk of
 * each big one never passes through the small buffer. */
Test(frame, direct_reads_fill_big_frames_in_place) {
    const uint32_t big = PS_FRAME_DIRECT_MIN + 12345;
    const size_t total = 2 * (PS_FRAME_HDR_BYTES + big) + PS_FRAME_HDR_BYTES + 3;
    uint8_t *wire = malloc(total), *payload = malloc(big);
    cr_assert(wire && payload);
    uint64_t want = 0;
    for (uint32_t i = 0; i < big; i++) {
        payload[i] = (uint8_t)(i * 7 + 1);
        want += (uint64_t)payload[i] * (i + 1);
    }
    size_t at = put_frame(wire, 0, payload, big);
    at = put_frame(wire, at, (const uint8_t *)"abc", 3);
    at = put_frame(wire, at, payload, big);
    cr_assert_eq(at, total);

    sum_sink b = {0};
    ps_error err = {0};
    size_t pos = 0, direct_bytes = 0, copied_bytes = 0;
    const size_t chunk = 100003; /* what one read returns at most */
    while (pos < total) {
        uint8_t *dst;
        size_t room = ps_framer_direct(fr, &dst);
        size_t n = total - pos < chunk ? total - pos : chunk;
        if (room > 0) {
            if (n > room) n = room;
            memcpy(dst, wire + pos, n);
            cr_assert_eq(ps_framer_commit(fr, n, check_big, &b), PS_OK);
            direct_bytes += n;
        } else {
            cr_assert_eq(ps_framer_feed(fr, wire + pos, n, check_big, &b, &err), PS_OK, "%s",
                         err.msg);
            copied_bytes += n;
        }
        pos += n;
    }
    cr_assert_eq(b.calls, 3);
    cr_assert_eq(b.sum, 2 * want + 'a' * 1 + 'b' * 2 + 'c' * 3);
    cr_assert_eq(ps_framer_pending(fr), 0);
    cr_assert_gt(direct_bytes, 2 * (size_t)big - 2 * chunk, "only %zu bytes went direct",
                 direct_bytes);
    free(wire), free(payload);
}

/* Small frames are never offered for direct reads (they arrive whole in one read). */
Test(frame, no_direct_read_for_small_frames) {
    uint8_t wire[PS_FRAME_HDR_BYTES + 10], *dst;
    ps_frame_put_header(wire, 1000);
    sum_sink b = {0};
    ps_error err = {0};
    cr_assert_eq(ps_framer_feed(fr, wire, sizeof(wire), check_big, &b, &err), PS_OK);
    cr_assert_eq(ps_framer_direct(fr, &dst), 0);
    cr_assert_eq(ps_framer_pending(fr), sizeof(wire));
}

/* A reader that learns from a big frame's first bytes where its tail belongs redirects it: the
 * tail lands in the caller's array (fed or read directly, and the bytes already received move
 * there too), the head stays in the frame, and the next frame is not redirected. */
Test(frame, redirect_puts_the_tail_in_place) {
    const uint32_t big = PS_FRAME_DIRECT_MIN + 5000, at = 100;
    const size_t total = PS_FRAME_HDR_BYTES + big + PS_FRAME_HDR_BYTES + 3;
    uint8_t *wire = malloc(total), *payload = malloc(big), *tail = calloc(1, big - at);
    cr_assert(wire && payload && tail);
    for (uint32_t i = 0; i < big; i++) payload[i] = (uint8_t)(i * 13 + 5);
    size_t end = put_frame(wire, 0, payload, big);
    put_frame(wire, end, (const uint8_t *)"xyz", 3);

    sum_sink b = {0};
    ps_error err = {0};
    /* the first read: header and 1000 bytes, fed */
    cr_assert_eq(ps_framer_feed(fr, wire, PS_FRAME_HDR_BYTES + 1000, check_big, &b, &err), PS_OK);
    size_t have, plen;
    const uint8_t *head = ps_framer_partial(fr, &have, &plen);
    cr_assert(head != NULL && have == 1000 && plen == big);
    ps_framer_redirect(fr, at, tail);
    size_t pos = PS_FRAME_HDR_BYTES + 1000;
    bool fed = false;
    while (pos < end) { /* alternate direct reads and feeds of 70 000 bytes at most */
        uint8_t *dst;
        size_t room = ps_framer_direct(fr, &dst), n = end - pos < 70000 ? end - pos : 70000;
        if (!fed && room > 0) {
            if (n > room) n = room;
            cr_assert(dst >= tail && dst + n <= tail + (big - at), "direct read outside the tail");
            memcpy(dst, wire + pos, n);
            cr_assert_eq(ps_framer_commit(fr, n, check_big, &b), PS_OK);
        } else {
            cr_assert_eq(ps_framer_feed(fr, wire + pos, n, check_big, &b, &err), PS_OK);
        }
        fed = !fed, pos += n;
    }
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.len, big);
    cr_assert_eq(memcmp(tail, payload + at, big - at), 0, "the tail is not in place");
    uint8_t *dst;
    cr_assert_eq(ps_framer_direct(fr, &dst), 0);
    b = (sum_sink){0};
    cr_assert_eq(ps_framer_feed(fr, wire + end, total - end, check_big, &b, &err), PS_OK);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.sum, 'x' * 1 + 'y' * 2 + 'z' * 3);
    free(wire), free(payload), free(tail);
}

/* A header announcing 64 MiB costs nothing until the bytes come: the buffer grows with what
 * arrives (at most doubling), so peers that announce big frames and trickle bytes cannot make a
 * server hold memory they never send. */
Test(frame, an_announced_size_is_not_allocated_before_its_bytes_arrive) {
    ps_framer *f;
    cr_assert_eq(ps_framer_create(64u << 20, &f, NULL), PS_OK);
    const uint32_t big = 64u << 20;
    uint8_t hdr[PS_FRAME_HDR_BYTES], chunk[1000];
    ps_frame_put_header(hdr, big);
    memset(chunk, 7, sizeof(chunk));
    sum_sink b = {0};
    ps_error err = {0};
    cr_assert_eq(ps_framer_feed(f, hdr, sizeof(hdr), check_big, &b, &err), PS_OK);
    cr_assert_eq(ps_framer_feed(f, chunk, sizeof(chunk), check_big, &b, &err), PS_OK);
    cr_assert_lt(ps_framer_capacity(f), 1u << 20, "%zu bytes held for 1004 received",
                 ps_framer_capacity(f));
    uint8_t *dst;
    size_t room = ps_framer_direct(f, &dst);
    cr_assert(room > 0 && room <= (256u << 10), "a direct read is offered %zu bytes", room);
    /* the rest, in reads of 1 MiB: the buffer stays within twice what has arrived */
    static uint8_t mib[1u << 20];
    memset(mib, 7, sizeof(mib));
    size_t got = sizeof(chunk);
    while (got < big) {
        size_t n = big - got < sizeof(mib) ? big - got : sizeof(mib);
        cr_assert_eq(ps_framer_feed(f, mib, n, check_big, &b, &err), PS_OK);
        got += n;
        if (got < big)
            cr_assert_leq(ps_framer_capacity(f), 2 * got + (256u << 10), "%zu held for %zu",
                          ps_framer_capacity(f), got);
    }
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.len, big);
    ps_framer_destroy(f);
}

/* The limit may change between frames (a server raises it once a peer has said Hello). */
Test(frame, the_limit_can_be_raised_between_frames) {
    ps_framer *f;
    cr_assert_eq(ps_framer_create(100, &f, NULL), PS_OK);
    uint8_t hdr[PS_FRAME_HDR_BYTES];
    ps_frame_put_header(hdr, 200);
    sum_sink b = {0};
    ps_error err = {0};
    cr_assert_eq(ps_framer_feed(f, hdr, sizeof(hdr), check_big, &b, &err), PS_TOO_LARGE);
    ps_framer_destroy(f);
    cr_assert_eq(ps_framer_create(100, &f, NULL), PS_OK);
    ps_framer_set_max(f, 1000);
    cr_assert_eq(ps_framer_feed(f, hdr, sizeof(hdr), check_big, &b, &err), PS_OK);
    ps_framer_destroy(f);
}
