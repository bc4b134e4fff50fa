/* frame.c - length-prefixed framing. Frames that arrive whole in one read are handed to the
 * callback straight from the caller's buffer; split frames are assembled in a buffer kept for the
 * next one, and the bulk of a big frame is read straight into it (ps_framer_direct). */
#include "frame.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct ps_framer {
    size_t max_frame;
    uint8_t hdr[PS_FRAME_HDR_BYTES];
    size_t hdr_len;   /* header bytes held */
    bool in_payload;  /* header complete, payload pending */
    uint32_t plen;    /* announced payload length */
    uint8_t *buf;     /* (cap) partial payload */
    size_t len, cap;
    uint8_t *redirect; /* payload bytes [redirect_at, plen) go here instead, when set */
    size_t redirect_at;
};

static uint32_t read_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void ps_frame_put_header(uint8_t hdr[PS_FRAME_HDR_BYTES], uint32_t len) {
    hdr[0] = (uint8_t)(len >> 24), hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8), hdr[3] = (uint8_t)len;
}

ps_status ps_framer_create(size_t max_frame, ps_framer **out, ps_error *err) {
    ps_framer *f = calloc(1, sizeof(*f));
    if (f == NULL) return ps_error_set(err, PS_NOMEM, "framer: out of memory");
    f->max_frame = max_frame;
    *out = f;
    return PS_OK;
}

void ps_framer_destroy(ps_framer *f) {
    if (f == NULL) return;
    free(f->buf);
    free(f);
}

size_t ps_framer_pending(const ps_framer *f) {
    return f->in_payload ? PS_FRAME_HDR_BYTES + f->len : f->hdr_len;
}

/* The payload buffer grows with the bytes that arrive (at least doubling, at most to `limit`,
 * the bytes the frame still puts there): an announced size costs nothing until it is sent. It is
 * kept for later frames (no page faults per frame once it is big). */
#define GROW_MIN (256u << 10)
static bool reserve(ps_framer *f, size_t need, size_t limit) {
    if (need <= f->cap) return true;
    size_t ncap = f->cap * 2 > GROW_MIN ? f->cap * 2 : GROW_MIN;
    if (ncap > limit) ncap = limit;
    if (ncap < need) ncap = need;
    uint8_t *nb = realloc(f->buf, ncap);
    if (nb == NULL) return false;
    f->buf = nb, f->cap = ncap;
    return true;
}

size_t ps_framer_direct(ps_framer *f, uint8_t **dst) {
    if (!f->in_payload || f->plen < PS_FRAME_DIRECT_MIN) return 0;
    if (f->redirect != NULL && f->len >= f->redirect_at) {
        *dst = f->redirect + (f->len - f->redirect_at);
        return f->plen - f->len;
    }
    const size_t end = f->redirect != NULL ? f->redirect_at : f->plen;
    if (!reserve(f, f->len + 1, end)) return 0;
    *dst = f->buf + f->len;
    return (f->cap < end ? f->cap : end) - f->len;
}

size_t ps_framer_capacity(const ps_framer *f) { return f->cap; }

void ps_framer_set_max(ps_framer *f, size_t max_frame) { f->max_frame = max_frame; }

static ps_status complete(ps_framer *f, ps_frame_cb cb, void *ud) {
    /* a redirected frame's tail went elsewhere, but the callback sees plen bytes (the tail's
     * unset: a decoder skips over them) */
    const bool whole = reserve(f, f->plen, f->plen);
    f->in_payload = false, f->len = 0, f->redirect = NULL;
    return whole ? cb(ud, f->buf, f->plen) : PS_NOMEM;
}

ps_status ps_framer_commit(ps_framer *f, size_t n, ps_frame_cb cb, void *ud) {
    f->len += n;
    return f->len < f->plen ? PS_OK : complete(f, cb, ud);
}

const uint8_t *ps_framer_partial(const ps_framer *f, size_t *len, size_t *total) {
    *len = f->in_payload ? f->len : 0;
    *total = f->in_payload ? f->plen : 0;
    return f->in_payload ? f->buf : NULL;
}

void ps_framer_redirect(ps_framer *f, size_t at, uint8_t *dst) {
    if (!f->in_payload || f->redirect != NULL || at > f->len || at > f->plen) return;
    if (f->len > at) memcpy(dst, f->buf + at, f->len - at);
    f->redirect = dst, f->redirect_at = at;
}

/* Stores n received payload bytes at the current position, minding a redirect. */
static void store(ps_framer *f, const uint8_t *p, size_t n) {
    size_t to_buf = n;
    if (f->redirect != NULL)
        to_buf = f->len >= f->redirect_at ? 0 : n < f->redirect_at - f->len ? n : f->redirect_at - f->len;
    if (to_buf > 0) memcpy(f->buf + f->len, p, to_buf); /* buf is NULL until a payload byte */
    if (to_buf < n) memcpy(f->redirect + (f->len + to_buf - f->redirect_at), p + to_buf, n - to_buf);
    f->len += n;
}

ps_status ps_framer_feed(ps_framer *f, const uint8_t *p, size_t n, ps_frame_cb cb, void *ud,
                         ps_error *err) {
    while (n > 0) {
        if (!f->in_payload) {
            size_t take = PS_FRAME_HDR_BYTES - f->hdr_len;
            if (take > n) take = n;
            memcpy(f->hdr + f->hdr_len, p, take);
            f->hdr_len += take, p += take, n -= take;
            if (f->hdr_len < PS_FRAME_HDR_BYTES) return PS_OK;
            uint32_t plen = read_be32(f->hdr);
            if (plen > f->max_frame)
                return ps_error_set(err, PS_TOO_LARGE, "frame of %u bytes exceeds the limit of %zu",
                                    plen, f->max_frame);
            f->in_payload = true, f->plen = plen, f->len = 0, f->hdr_len = 0;
        }
        ps_status st;
        if (f->len == 0 && n >= f->plen && f->redirect == NULL) { /* whole in this read: no copy */
            st = cb(ud, p, f->plen);
            p += f->plen, n -= f->plen;
        } else {
            size_t take = f->plen - f->len;
            if (take > n) take = n;
            size_t to_buf = f->redirect == NULL ? f->len + take
                            : f->len >= f->redirect_at ? 0
                            : f->len + take < f->redirect_at ? f->len + take : f->redirect_at;
            if (!reserve(f, to_buf, f->redirect == NULL ? f->plen : f->redirect_at))
                return ps_error_set(err, PS_NOMEM, "frame of %u bytes: out of memory", f->plen);
            store(f, p, take);
            p += take, n -= take;
            if (f->len < f->plen) return PS_OK;
            st = complete(f, cb, ud);
        }
        f->in_payload = false, f->len = 0;
        if (st != PS_OK) return st; /* the callback fills err through its own context */
    }
    return PS_OK;
}
