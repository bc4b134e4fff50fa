/* server.h - one parameter-server shard: a libuv loop that accepts workers on TCP and serves the
 * job's tables (the rows of each table that hash to this shard). */
#ifndef PS_SERVER_H
#define PS_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "ps_status.h"
#include "store.h"

typedef struct ps_server ps_server;

typedef struct {
    const ps_job_config *job; /* borrowed until ps_server_destroy */
    uint32_t shard;           /* this server's index in job->servers */
    const char *listen;       /* "host:port" (port 0 = any free port); NULL: job->servers[shard] */
    bool handle_signals;      /* stop cleanly on SIGINT/SIGTERM */
    ps_logger log;
} ps_server_options;

/* Binds the listen address (so the port is known before run). The process must ignore SIGPIPE
 * (ps-server does): a write to a peer that reset its connection must fail, not kill it. */
ps_status ps_server_create(const ps_server_options *opt, ps_server **out, ps_error *err);

/* The bound port (useful with port 0). */
int ps_server_port(const ps_server *s);

/* Serves until ps_server_stop or a signal. Returns PS_OK on a clean stop. */
ps_status ps_server_run(ps_server *s, ps_error *err);

/* Asks a running server to stop; safe from any thread. */
void ps_server_stop(ps_server *s);

/* NULL-safe. Only after run returned (or if it never ran). */
void ps_server_destroy(ps_server *s);

/* Asks for a checkpoint (server.checkpoint_dir; ignored without one); safe from any thread. The
 * loop copies rows between frames and a thread writes them, so serving goes on; one already
 * running is not doubled. Stopping abandons one being written (SIGTERM then writes its own). */
void ps_server_checkpoint(ps_server *s);

/* Checkpoints completed so far (*failed: those that failed; may be NULL); any thread. */
uint64_t ps_server_checkpoints(const ps_server *s, uint64_t *failed);

/* The table's store, for tests and stats; only while the loop is not running. */
ps_store *ps_server_store(ps_server *s, uint32_t table);

#endif
