/* shm.h - the shared-memory segment of one worker-server connection, when both run on one host.
 *
 * The server makes a POSIX shared-memory object for a worker that asks (Hello.shm_bytes) and
 * names it in its HelloReply; the worker maps it and unlinks the name. A request's bulk then
 * travels through the segment (ShmRef in ps.proto): the worker writes its gradients there and
 * the server writes pulled rows there, so neither crosses the kernel's socket buffers (2 copies
 * each way on TCP, and the copies were ~40 % of a dense sync step's server time). The frames,
 * ordering and deadlines stay on the TCP connection: a segment is only a place for bytes.
 *
 * A worker that cannot map the name (another host, another /dev/shm) goes on over TCP. The
 * server makes a segment only for a peer whose address is its own (loopback, or the host's own
 * address), reserves its pages at once (posix_fallocate: a full /dev/shm is a clean error, never
 * a SIGBUS on first touch), and unlinks the name at the peer's next frame or its close, so no
 * name outlives the two processes. Who may write where: the worker owns a region from sending
 * the request until its reply; the server reads or writes it only while handling that request,
 * and copies a push's gradients out before checking them (a peer may write its segment at any
 * time: what is checked is what is applied).
 *
 * Trust: the object is mode 0600, so only processes of the server's own user can map it, and
 * those can already signal or trace the server; one that shrinks the object (ftruncate) makes the
 * server's next access fault (SIGBUS), which is no new power. Workers of another user get EACCES
 * and stay on TCP. A segment is memory outside server.max_memory_bytes: at most PS_SHM_MAX_BYTES
 * per worker connection, as big as the worker's step needs (train.c asks for one step's bulk). */
#ifndef PS_SHM_H
#define PS_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ps.pb.h"
#include "ps_status.h"

#define PS_SHM_MAX_BYTES (64u << 20) /* a segment's size at most (a server refuses more) */
#define PS_SHM_NAME_MAX 64

typedef struct {
    uint8_t *p; /* mapping, len bytes; NULL: no segment */
    size_t len;
    char name[PS_SHM_NAME_MAX]; /* "" once unlinked */
} ps_shm;

/* Makes and maps a segment of len bytes under a fresh random name (mode 0600), pages reserved.
 * PS_IO with the system's reason (also for no room in /dev/shm); out is zeroed then. */
ps_status ps_shm_create(size_t len, ps_shm *out, ps_error *err);
/* Maps the segment called name ("/ps-...", as ps_shm_create names them), which must be len bytes,
 * and unlinks the name once mapped. PS_NOT_FOUND when there is no such object here (the server
 * is on another host), PS_PROTO for another kind of name, PS_IO otherwise. */
ps_status ps_shm_attach(const char *name, size_t len, ps_shm *out, ps_error *err);
void ps_shm_unlink(ps_shm *s); /* drops the name, keeps the mapping; idempotent */
void ps_shm_close(ps_shm *s);  /* unmaps (and unlinks); zeroes s; NULL-safe */

/* The bytes of ref in s, which must be exactly want bytes inside the segment: *out, or
 * PS_INVALID_ARG naming what ("Push: grads_at ...") when there is no segment or it lies outside. */
ps_status ps_shm_region(const ps_shm *s, const ps_ShmRef *ref, size_t want, const char *what,
                        uint8_t **out, ps_error *err);

#endif
