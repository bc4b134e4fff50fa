/* server.h - one parameter-server shard: a libuv loop that accepts workers on TCP and serves the
 * job's tables (the rows of each table that hash to this shard). */
#ifndef PS_SERVER_H
#define PS_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "ps.pb.h"
#include "log.h"
#include "ps_status.h"
#include "store.h"

typedef struct ps_server ps_server;

typedef struct {
    const ps_job_config *job; /* borrowed until ps_server_destroy */
    uint32_t shard;           /* this server's index in job->servers */
    /* --bind: "host:port" to listen on (port 0 = any free port; a name is resolved once). NULL:
     * job->servers[shard] when its host is an IP literal, else every interface at its port. */
    const char *listen;
    const char *advertise;    /* --advertise: what logs and ps-server's banner give peers; NULL:
                               * the job's entry (a name) or the bound address */
    /* Stop cleanly on SIGINT/SIGTERM, checkpoint on SIGUSR1. The process's handlers stay until
     * it exits (signals.h): a signal once the server is stopping changes nothing. */
    bool handle_signals;
    ps_logger log;
    /* The end of the job (ps-server sets these; zero: serve until stopped, as tests and
     * ps-launch's servers do). end_with_job: once every worker rank 0..W-1 has said it finished
     * (a Clock with finished), run returns PS_OK - at once, or with hold_for_end on an EndJob
     * from an admin peer (the exporter's "the weights are written"); an EndJob also ends it
     * early. If cluster.job_deadline_s passes first, run returns PS_TIMEOUT naming the ranks
     * that never finished (a worker that died is not finished); with hold_for_end only after
     * serving the export (on_deadline). An EndJob carrying a failure also returns PS_TIMEOUT. */
    bool end_with_job;
    bool hold_for_end;
    /* With end_with_job: where the job would end the server (after the export, at the
     * deadline), it logs the end and goes on serving until stopped instead (ps-server
     * --serve-after-job: a Kubernetes StatefulSet restarts a server that exits). run then
     * returns as on a signal, PS_TIMEOUT if the job had failed. */
    bool serve_after_job;
    /* With end_with_job: called once, on the loop thread, when every worker has finished. */
    void (*on_workers_done)(ps_server *srv, void *ud);
    /* With hold_for_end: called once, on the loop thread, when cluster.job_deadline_s passes
     * with ranks unfinished; why names them. The server then serves until an EndJob (the
     * exporter's) or another job_deadline_s, and run returns PS_TIMEOUT with why. */
    void (*on_deadline)(ps_server *srv, void *ud, const char *why);
    /* Each worker's EpochStats, on the loop thread (NULL: acked and dropped). */
    void (*on_epoch_stats)(void *ud, uint32_t rank, const ps_EpochStats *s);
    void *ud;
} ps_server_options;

/* Binds the listen address (so the port is known before run). The process must ignore SIGPIPE
 * (ps-server does): a write to a peer that reset its connection must fail, not kill it. */
ps_status ps_server_create(const ps_server_options *opt, ps_server **out, ps_error *err);

/* The bound port (useful with port 0). */
int ps_server_port(const ps_server *s);

/* "host:port" the listener is bound to, real port included ("[::]:7070", "127.0.0.1:40123"). */
const char *ps_server_bound(const ps_server *s);

/* "host:port" peers are told to dial (see ps_server_options.advertise). */
const char *ps_server_advertised(const ps_server *s);

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
