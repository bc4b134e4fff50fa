/* wire.h - Envelope codec around nanopb. Bulk arrays (keys, grads, values) are never copied on
 * decode: they are views into the frame, valid while the frame is. On encode they are copied
 * from caller memory, or written in place by a fill callback (no staging buffer). */
#ifndef PS_WIRE_H
#define PS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "ps.pb.h"
#include "ps_status.h"
#include "table_spec.h"

#define PS_PROTOCOL_VERSION 6 /* 2: Values replies come in parts; 3: optimizer in TableSpec,
                                 clocks; 4: Challenge and an HMAC instead of the token;
                                 5: EndJob, EpochStats, and workers of async jobs say
                                 finished too; 6: reconnects: Hello's clock and session,
                                 numbered async pushes, Clock adopt, EndJob's failure */

/* Bytes borrowed from a frame or from the caller; possibly unaligned. */
typedef struct {
    const uint8_t *p;
    size_t len;
} ps_bytes;

/* A decoded message. env holds the scalar fields; which bulk views are set depends on
 * env.which_body: Pull -> keys; Push -> keys, grads; PushPull -> keys (push), grads,
 * pull_keys; Values -> values; Scan -> keys; Rows -> keys, values, acc, steps. */
typedef struct {
    ps_Envelope env;
    ps_bytes keys, grads, pull_keys, values, acc, steps;
} ps_msg;

/* Decodes one frame payload. PS_PROTO with nanopb's reason on malformed input. */
ps_status ps_wire_decode(const uint8_t *buf, size_t len, ps_msg *out, ps_error *err);

/* Writes exactly len bytes of a bulk field in place; dst may be unaligned. */
typedef void (*ps_fill_fn)(void *ud, uint8_t *dst, size_t len);

/* A bulk field to encode: either src (copied) or fill (called once with len bytes to write). */
typedef struct {
    ps_bytes src;
    ps_fill_fn fill;
    void *fill_ud;
    size_t fill_len;
} ps_bulk;

/* Spare frame buffers of one event loop (a server's connections, a client's shards). A fresh
 * malloc of a frame of many MiB is an mmap whose every 4 KiB page faults and is zeroed on first
 * touch (~0.3 ms per MiB here); encoding the next big frame into an earlier one's memory skips
 * that. Holds at most PS_FRAME_CACHE_SLOTS buffers (as many as big frames were in flight at once:
 * a 64 MiB pull leaves as 16 parts) and PS_FRAME_CACHE_MAX_BYTES in all.
 * Zero-initialize; ps_frame_cache_clear frees them. */
#define PS_FRAME_CACHE_SLOTS 16
#define PS_FRAME_CACHE_MAX_BYTES (256u << 20) /* held at most, all slots together */
typedef struct {
    uint8_t *spare[PS_FRAME_CACHE_SLOTS];
} ps_frame_cache;

/* Frames under this many bytes are plain mallocs: the allocator serves them without faults. */
#define PS_FRAME_CACHE_MIN (256u << 10)

void ps_frame_cache_clear(ps_frame_cache *fc);
/* Gives back a frame from ps_wire_encode once it is written: kept as a spare when it is big (in a
 * free slot, else in place of a smaller spare), else freed. fc may be NULL (free). */
void ps_frame_release(ps_frame_cache *fc, uint8_t *frame);

/* Encodes env with its bulk fields (same mapping as ps_msg; unused ones may be zeroed) into one
 * frame: 4-byte header + Envelope. *out is malloc'd and owned by the caller: free() it, or hand it
 * to ps_frame_release. With a cache, a big frame reuses its spare buffer (cache may be NULL). */
ps_status ps_wire_encode(const ps_Envelope *env, const ps_bulk *keys, const ps_bulk *grads,
                         const ps_bulk *pull_keys, const ps_bulk *values, ps_frame_cache *cache,
                         uint8_t **out, size_t *out_len, ps_error *err);

/* A Rows reply (keys, values, acc, steps; any may be NULL), otherwise as ps_wire_encode. */
ps_status ps_wire_encode_rows(const ps_Envelope *env, const ps_bulk *keys, const ps_bulk *values,
                              const ps_bulk *acc, const ps_bulk *steps, ps_frame_cache *cache,
                              uint8_t **out, size_t *out_len, ps_error *err);

/* Shorthand: an Error reply frame. */
ps_status ps_wire_encode_error(uint64_t request_id, ps_ErrorCode code, const char *message,
                               uint8_t **out, size_t *out_len, ps_error *err);

/* ps_status -> wire error code. */
ps_ErrorCode ps_wire_error_code(ps_status st);

/* Table specs <-> their wire form. */
void ps_wire_table_to_pb(const ps_table_spec *t, ps_TableSpec *pb);
void ps_wire_table_from_pb(const ps_TableSpec *pb, ps_table_spec *t);

/* Little-endian loads/stores at any alignment (hosts are little-endian; checked at build). */
static inline uint64_t ps_load_u64(const uint8_t *p) {
    uint64_t v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}
static inline float ps_load_f32(const uint8_t *p) {
    float v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire carries little-endian arrays as raw bytes: big-endian hosts need a swap here"
#endif

#endif
