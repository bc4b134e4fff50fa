/* frame.h - 4-byte big-endian length framing over a byte stream. No I/O: bytes in, frames out.
 * The length is checked against the limit before any allocation. */
#ifndef PS_FRAME_H
#define PS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "ps_status.h"

#define PS_FRAME_HDR_BYTES 4

typedef struct ps_framer ps_framer;

/* Called once per complete frame. payload is borrowed until the callback returns; a status
 * other than PS_OK stops feeding and is returned by ps_framer_feed. */
typedef ps_status (*ps_frame_cb)(void *ud, const uint8_t *payload, size_t len);

ps_status ps_framer_create(size_t max_frame, ps_framer **out, ps_error *err);
void ps_framer_destroy(ps_framer *f);

/* Feeds n bytes, split anywhere. PS_TOO_LARGE when a header announces more than max_frame
 * bytes; PS_NOMEM if the payload buffer cannot grow; else the callback's status. After an
 * error the framer is unusable (the peer is out of sync). */
ps_status ps_framer_feed(ps_framer *f, const uint8_t *p, size_t n, ps_frame_cb cb, void *ud,
                         ps_error *err);

/* Big frames can skip the copy out of the reader's buffer: when a frame of at least
 * PS_FRAME_DIRECT_MIN bytes is partly received, *dst is set to the unfilled rest of its payload
 * buffer and its length is returned; the caller reads into it and reports what arrived with
 * ps_framer_commit. Returns 0 otherwise (read into your own buffer and call ps_framer_feed);
 * PS_NOMEM is reported the same way, by the next ps_framer_feed. */
#define PS_FRAME_DIRECT_MIN (256u << 10)
size_t ps_framer_direct(ps_framer *f, uint8_t **dst);

/* n bytes (<= what ps_framer_direct offered) were written at its *dst; calls cb when the frame is
 * complete. Returns the callback's status. */
ps_status ps_framer_commit(ps_framer *f, size_t n, ps_frame_cb cb, void *ud);

/* The payload bytes of the incomplete frame received so far (*len of them, of *total), or NULL. */
const uint8_t *ps_framer_partial(const ps_framer *f, size_t *len, size_t *total);

/* From payload byte `at` to the end, the current incomplete frame's bytes go to dst instead of
 * the frame buffer (those already received are moved there now; at <= bytes received). Once per
 * frame: a second call is ignored. Lets a
 * reader that knows where a big field of the frame belongs place it without a copy. The frame
 * callback then gets the payload with bytes [at, end) unset. */
void ps_framer_redirect(ps_framer *f, size_t at, uint8_t *dst);

/* Bytes held for assembling frames: the payload buffer grows with what arrives, never to a size
 * that was only announced. */
size_t ps_framer_capacity(const ps_framer *f);

/* Changes the largest frame accepted from the next header on (e.g. once a peer has said Hello). */
void ps_framer_set_max(ps_framer *f, size_t max_frame);

/* Bytes of a frame received so far but not yet complete (0 between frames). */
size_t ps_framer_pending(const ps_framer *f);

/* Writes the 4-byte header for a payload of len bytes. */
void ps_frame_put_header(uint8_t hdr[PS_FRAME_HDR_BYTES], uint32_t len);

#endif
