/* server_internal.h - what server.c, conn.c and handlers.c share. Not a public header. */
#ifndef PS_SERVER_INTERNAL_H
#define PS_SERVER_INTERNAL_H

#include <uv.h>

#include "auth.h"
#include "barrier.h"
#include "frame.h"
#include "pool.h"
#include "replay.h"
#include "server.h"
#include "shm.h"
#include "tls.h"
#include "wire.h"

typedef struct ps_conn ps_conn;

/* Failed token attempts per address: PS_AUTH_MAX_FAILURES within PS_AUTH_WINDOW_MS lock the
 * address out for PS_AUTH_LOCKOUT_MS (guessing the token costs a minute per ten tries). */
#define PS_AUTH_MAX_FAILURES 10
#define PS_AUTH_WINDOW_MS 60000
#define PS_AUTH_LOCKOUT_MS 60000
#define PS_AUTH_SLOTS 64
typedef struct {
    char ip[48];
    uint32_t failures;
    uint64_t since_ms, locked_until_ms;
} ps_auth_slot;

struct ps_server {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_poll_t sig_poll; /* with handle_signals: watches sig_fd (signals.h) until the stop */
    int sig_fd;
    uv_async_t stop_async;
    ps_server_options opt;
    const ps_job_config *job;
    ps_store *stores[PS_MAX_TABLES];
    ps_pool *pool; /* server.threads, shared by the stores for big pushes and pulls */
    ps_frame_cache fcache; /* big reply buffers for reuse, shared by all connections */
    uint8_t *shm_grads;    /* a push's gradients copied out of a peer's segment, checked and
                              applied from here (the peer may write its segment at any time) */
    size_t shm_grads_cap;
    ps_tls_ctx *tls;       /* cluster.tls: certificate and key; NULL: plaintext */
    uint64_t refused_gradients[PS_MAX_TABLES]; /* pushes refused for a non-finite gradient */
    ps_auth_slot auth[PS_AUTH_SLOTS];          /* recent bad tokens by address */
    ps_conn *conns; /* intrusive doubly linked list */
    size_t n_conns;
    size_t fd_limit; /* RLIMIT_NOFILE's soft limit when the server was made (SIZE_MAX: none) */
    /* sync/ssp jobs: worker clocks; pulls that must wait park their connection */
    ps_barrier *barrier;       /* NULL in async jobs */
    ps_replay *replay;         /* async jobs: numbered pushes already applied (replay.h) */
    uv_timer_t barrier_timer;  /* runs while a connection is parked: drops stalled ranks */
    uv_timer_t sweep_timer;    /* closes peers past limits.hello_timeout_ms / idle_timeout_ms */
    size_t n_parked;           /* connections with deferred frames */
    size_t n_waiting;          /* ... whose first deferred frame waits for the barrier */
    size_t queued_total;       /* bytes held for unsent replies, all peers (real bytes) */
    bool paused_for_total;     /* some peers stopped reading because of queued_total */
    bool waking, wake_again;   /* ps_server_wake is running / must run once more */
    bool stopping;
    /* the end of the job (ps_server_options.end_with_job) */
    uint8_t *finished;      /* (W) a worker rank said it finished */
    uint32_t n_finished;
    uv_timer_t end_timer;   /* the deadline; once the job is over, the grace for peers */
    bool ending;            /* a stop is scheduled */
    bool job_over;          /* serve_after_job: the job ended and the server serves on */
    bool end_failed;        /* the deadline passed: run returns PS_TIMEOUT with end_msg */
    char end_msg[256];
    uint64_t last_read_ns; /* uv_hrtime of the last read from any peer: busy polling */
    uint64_t now_ms;       /* uv_now at the frame being handled: the stores' clock (expiry) */
    int port;
    char addr[PS_ADDR_MAX];      /* where the listener is bound, with the real port */
    char advertise[PS_ADDR_MAX]; /* what peers dial: --advertise, the job's entry, or addr */
    /* server.checkpoint_dir (server.c): rows copied between frames, written by a thread */
    uv_timer_t ckpt_timer;  /* every server.checkpoint_every_s */
    uv_async_t ckpt_wake;   /* the writer has a free buffer, or finished */
    uv_async_t ckpt_async;  /* ps_server_checkpoint from any thread */
    struct ps_ckpt_writer *ckpt; /* the one being written; NULL: none */
    uint64_t ckpt_gen;      /* the last generation started (continues the directory's) */
    uint64_t ckpt_started_ns;
    /* server.checkpoint_every_steps: sync/ssp: the barrier's minimum clock reached a multiple
     * of N; async: N * W worker steps began here (a rank's push with a step number other than
     * its last: tables and parts of one step count once, retries not at all; an unnumbered
     * push, step 0, counts as a step) */
    uint64_t ckpt_step_mark;  /* sync/ssp: min clock / N at the last; async: steps then */
    uint64_t steps_seen;      /* async: worker steps begun */
    uint64_t *push_step;      /* (W) async: each rank's last pushed step + 1; 0: none yet */
    _Atomic uint64_t ckpt_done, ckpt_failed;
};

struct ps_conn {
    uv_tcp_t tcp; /* first member: a handle pointer is a conn pointer */
    ps_server *srv;
    ps_conn *prev, *next;
    ps_framer *framer;
    /* cluster.tls: the session every byte goes through (reads into the framer, corked frames
     * out as ciphertext); NULL: plaintext, where big frames are read straight into place */
    ps_tls *tls;
    char peer[64];
    char ip[48];          /* the peer's address without its port: limits per address */
    bool local_peer;      /* the peer's address is this socket's own: the same host (shm.h) */
    ps_shm shm;           /* a worker's shared-memory segment (Hello.shm_bytes); p NULL: none */
    uint64_t accepted_ms; /* uv_now at accept */
    uint64_t heard_ms;    /* uv_now of the last bytes received */
    char *rbuf; /* read buffer, reused */
    size_t rbuf_cap;
    uint8_t nonce[PS_AUTH_NONCE_BYTES]; /* sent in the Challenge; the Hello's mac covers it */
    bool hello_done;
    bool is_worker; /* Hello's role: a worker's rank takes part in the barrier */
    bool replaced;  /* a newer connection of the same worker took its rank: closing it drops
                       nothing */
    uint64_t session; /* the worker process's id from its Hello (0: none given) */
    bool reading;
    bool close_after_write; /* an Error was queued for a peer we cannot trust any more */
    uint32_t rank;
    size_t queued; /* bytes held for replies handed to uv_write and not yet written: frames
                    * plus the per-write bookkeeping, as allocated */
    size_t pending_writes;
    /* Replies to the frames of one read are corked and leave in one write (one syscall, one
     * wakeup for a client that pipelines several requests). */
    bool corked;
    uv_buf_t *cork;
    size_t n_cork, cap_cork;
    /* A Pull that must wait for the barrier parks the connection: that frame and every later one
     * of the peer wait here, in order (and reading stops) until ps_server_wake runs them. */
    struct ps_deferred *dq_head, *dq_tail;
    bool waiting;  /* the first deferred frame waits for the barrier (counted in n_waiting) */
    bool resuming; /* ps_conn_resume is running: a nested call (through a wake) returns */
    uint64_t write_progress_ms; /* uv_now when unsent replies last shrank, or first queued */
    /* A big pull's reply, produced a part at a time as the socket drains (handlers.c); while
     * it lasts, later frames of the peer wait in the deferred queue. */
    struct ps_reply_gen *gen;
    /* Scan without keys: the key order of one table, snapshotted at its from_start */
    uint64_t *scan_keys;
    size_t scan_n;
    uint32_t scan_table;
};

/* What became of a frame. */
typedef enum {
    PS_FRAME_DONE,  /* answered (maybe with an Error) */
    PS_FRAME_WAIT,  /* must wait for the barrier: keep it and everything after it */
    PS_FRAME_CLOSE, /* the peer was sent a final Error; stop feeding frames */
} ps_frame_verdict;

/* Descriptors kept free of peers: listener, loop, signals, the pool, files (init_from). */
#define PS_FD_RESERVE 32

/* Until a peer's Hello is accepted it may send frames of this many bytes at most. */
#define PS_HELLO_MAX_FRAME (64u << 10)

/* conn.c */
void ps_conn_accept(ps_server *srv);
/* Closes peers that have not said Hello within limits.hello_timeout_ms or sent nothing for
 * limits.idle_timeout_ms (not while they wait for the barrier). */
void ps_conn_sweep(ps_server *srv);
/* Takes ownership of frame (from ps_wire_encode, ideally with &c->srv->fcache) whatever the outcome. */
void ps_conn_send(ps_conn *c, uint8_t *frame, size_t len);
/* Queues an Error reply; with fatal, the connection closes once it is written. */
void ps_conn_send_error(ps_conn *c, uint64_t request_id, ps_status st, const char *msg,
                        bool fatal);
void ps_conn_close(ps_conn *c);
/* Runs the parked frames of c until one must wait again; reading resumes when none is left. */
void ps_conn_resume(ps_conn *c);
bool ps_conn_parked(const ps_conn *c);

/* server.c: the barrier moved on: resume parked connections (re-entrant calls fold into the
 * running one), and keep the stall timer running while any connection still waits. */
void ps_server_wake(ps_server *srv);
/* a connection parked: start the stall timer if it is not running */
void ps_server_parked(ps_server *srv);
/* async: rank's push of its step `step` was applied (server.checkpoint_every_steps). */
void ps_server_pushed(ps_server *srv, uint32_t rank, uint64_t step);
/* A worker rank said it finished (Clock with finished, any consistency). */
void ps_server_worker_finished(ps_server *srv, uint32_t rank);
/* A connection is gone: when the job is over and it was the last, stop now. */
void ps_server_conn_closed(ps_server *srv);
/* An admin peer's EndJob: PS_INVALID_ARG when the server serves until stopped. failure ("" or
 * NULL: none) makes run return PS_TIMEOUT with it, unless the server has its own reason. */
ps_status ps_server_end_job(ps_server *srv, const char *failure, ps_error *err);
/* A Hello from ip carried a bad token. */
void ps_server_auth_failed(ps_server *srv, const char *ip);
/* ms until ip may try again, or 0 when it is not locked out. */
uint64_t ps_server_locked_out(ps_server *srv, const char *ip);

/* memory.c: server.max_memory_bytes before a push of keys (n) to table: PS_OK when the tables
 * plus the push's possible growth fit (after evicting rows of an "lru" table), else
 * PS_TOO_LARGE with a message naming the table, the limit and the usage. */
ps_status ps_server_make_room(ps_server *srv, uint32_t table, const uint8_t *keys, size_t n,
                              ps_error *err);

/* handlers.c: one frame from c. Request errors are answered (PS_FRAME_DONE); PS_FRAME_CLOSE means
 * the peer was sent a final Error and c closes once it is written. PS_FRAME_WAIT: nothing was
 * done; offer the same frame again after the barrier moves. */
ps_frame_verdict ps_handle_frame(ps_conn *c, const uint8_t *payload, size_t len);
/* A worker's connection closed: in a sync/ssp job a rank that had not finished is dropped. */
void ps_handle_disconnect(ps_conn *c);
/* c's big reply: queue its next parts while c's unsent bytes are below the watermark; true when
 * the reply is complete (c->gen is then freed and NULL). */
bool ps_reply_continue(ps_conn *c);
void ps_reply_free(struct ps_reply_gen *g); /* NULL-safe */

/* The port of an AF_INET or AF_INET6 address, in host order (uv_ip_name gives its address). */
static inline int ps_sockaddr_port(const struct sockaddr_storage *ss) {
    return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                           : ((const struct sockaddr_in *)ss)->sin_port);
}

#endif
