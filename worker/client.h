/* client.h - a job's parameter servers seen as one: connects to every shard (retrying with
 * backoff until a deadline), says Hello, then pushes and pulls any key set, splitting it by
 * shard (ps_shard_of) and putting the replies back in request order.
 *
 * The verbs follow ps-lite: *_async returns an op that ps_client_wait completes; many ops may be
 * in flight, so a training step that touches several tables costs one round trip. Not
 * thread-safe: one thread drives a client. Example:
 *
 *     ps_client *c;
 *     ps_client_options o = {.job = &job, .rank = 0};
 *     if (ps_client_create(&o, &c, &err) != PS_OK) die(err.msg);
 *     uint32_t t = ps_client_table(c, "emb")->id;
 *     ps_client_push(c, t, keys, n, grads, &err);        // grads: (n, dim)
 *     ps_client_pull(c, t, keys, n, weights, &err);      // weights: (n, dim)
 *     ps_client_destroy(c);
 */
#ifndef PS_CLIENT_H
#define PS_CLIENT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "ps.pb.h"
#include "ps_status.h"
#include "table_spec.h"

typedef struct ps_client ps_client;
typedef uint64_t ps_op;

typedef struct {
    const ps_job_config *job;   /* borrowed until destroy: servers, job_id, token, timeouts */
    uint32_t rank;              /* this worker's rank, sent in Hello */
    bool admin;                 /* not a worker (ps-export, tools): Hello says so, and the
                                   servers' barrier of a sync/ssp job does not count it */
    const char *const *servers; /* optional: "host:port" per shard instead of job->servers */
    ps_logger log;
    uint64_t clock;             /* sync/ssp workers: the step to start from (a restarted worker
                                   resuming); the servers may move it on (ps_client_clock) */
    const volatile sig_atomic_t *stop; /* optional, set by a signal handler: connecting and
                                          reconnecting give up between attempts (PS_CLOSED) */
    size_t shm_bytes; /* workers: a shared-memory segment of this size asked of every server on
                         this host (cluster.shared_memory; shm.h), for one step's bulk: requests
                         that do not fit go inline. 0: none */
    size_t shm_stage_bytes; /* of shm_bytes, the last part kept for ps_client_stage */
} ps_client_options;

/* Connects to all shards; PS_TIMEOUT if one stays unreachable for cluster.connect_timeout_ms,
 * PS_MISMATCH if a server refuses the Hello (version, job id, token) or disagrees on the
 * tables. */
ps_status ps_client_create(const ps_client_options *opt, ps_client **out, ps_error *err);
void ps_client_destroy(ps_client *c); /* NULL-safe; waits for nothing */

uint32_t ps_client_num_shards(const ps_client *c);
/* Bytes of the shared-memory segment this client uses with shard (0: that shard is on TCP
 * alone: another host, cluster.shared_memory false, or no shm_bytes asked). */
size_t ps_client_shared_memory(const ps_client *c, uint32_t shard);
/* Requests so far whose gradients or rows went through shared memory (the others were inline:
 * no segment, or no room left in it). */
uint64_t ps_client_shm_requests(const ps_client *c);
/* Pushes so far whose gradients went from a staged buffer (ps_client_stage), uncopied. */
uint64_t ps_client_staged_pushes(const ps_client *c);
/* Room for the gradients of a push of n rows of table, in the shared-memory segment of a
 * one-shard client (o.shm_stage_bytes of it), or NULL: no segment, more than one shard, or no
 * room left. Write the gradients there and pass the buffer as grads to a push: it is sent
 * without a copy (where grads is copied before return, a staged buffer is the server's to read
 * until the reply). The buffers of a step are distinct. A later call recycles the area once
 * every buffer handed out was passed to a push (started or failed) and every request is
 * answered; until then a buffer keeps what the caller wrote. A reconnect (ps_client_recover)
 * keeps the buffers staged before it readable until the next one, so a step may push them
 * again after it (they are copied then). Never read what the server wrote: a staged buffer
 * holds only what the caller put there. o.shm_stage_bytes > o.shm_bytes: ps_client_create
 * refuses the options (PS_INVALID_ARG). */
float *ps_client_stage(ps_client *c, uint32_t table, size_t n);
/* The table called name as the servers described it, or NULL. */
const ps_table_spec *ps_client_table(const ps_client *c, const char *name);

/* Starts a pull: out (n, dim) is written by ps_client_wait and must live until then.
 * keys are copied before return. */
ps_status ps_client_pull_async(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                               float *out, ps_op *op, ps_error *err);
/* A pull that may leave its rows where they arrived: once ps_client_wait returns, *rows is
 * either out (filled as by ps_client_pull_async) or, when every row came through a shard's
 * shared-memory segment in one reply, a pointer to them there, with nothing written to out.
 * rows itself must live until the wait (the client keeps its address). Such a pointer stays
 * valid until this client's next pull or push, its reconnect or its destroy: read the rows
 * before sending anything else (a request then reuses the segment), and only read them (the
 * server writes there); never pass them to a push as its gradients: copy them out first. */
ps_status ps_client_pull_view_async(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                                    float *out, float **rows, ps_op *op, ps_error *err);
/* Starts a push: keys (n), grads (n, dim) are copied before return (staged grads are sent
 * from where they are: ps_client_stage). */
ps_status ps_client_push_async(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                               const float *grads, ps_op *op, ps_error *err);
/* Push, then pull, in one round trip per shard; out (n_pull, dim) as for pull. */
ps_status ps_client_pushpull_async(ps_client *c, uint32_t table, const uint64_t *push_keys,
                                   size_t n_push, const float *grads, const uint64_t *pull_keys,
                                   size_t n_pull, float *out, ps_op *op, ps_error *err);

/* Sends every request queued by *_async calls now (one write per shard). Waiting flushes too;
 * call it to get requests on the wire before computing, so the round trip overlaps compute. */
ps_status ps_client_flush(ps_client *c, ps_error *err);

/* Waits for op (at most cluster.request_timeout_ms); returns the servers' verdict: PS_OK, the
 * server's Error as a status with its message, PS_TIMEOUT or PS_CLOSED. */
ps_status ps_client_wait(ps_client *c, ps_op op, ps_error *err);
/* Waits for every op in flight; the first failure is returned. */
ps_status ps_client_wait_all(ps_client *c, ps_error *err);

/* Blocking forms. */
ps_status ps_client_pull(ps_client *c, uint32_t table, const uint64_t *keys, size_t n, float *out,
                         ps_error *err);
ps_status ps_client_push(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                         const float *grads, ps_error *err);
ps_status ps_client_pushpull(ps_client *c, uint32_t table, const uint64_t *push_keys,
                             size_t n_push, const float *grads, const uint64_t *pull_keys,
                             size_t n_pull, float *out, ps_error *err);

/* Synchronous and bounded-staleness jobs (cluster.consistency "sync"/"ssp"). The client keeps a
 * clock, the number of steps it has ended; every push carries it. ps_client_clock_async ends the
 * step on every shard (clock + 1), or with finished leaves the barrier for good. Pulls carry
 * min_clock: a server answers one only once every live worker's clock is >= min_clock (sync:
 * the step's combined update is applied by then). Both are 0 at start; async servers ignore them. */
ps_status ps_client_clock_async(ps_client *c, bool finished, ps_op *op, ps_error *err);
uint64_t ps_client_clock(const ps_client *c);
/* Admin clients: tells every shard the job is over (EndJob); servers that end with their job ack
 * and exit, the others answer PS_INVALID_ARG. Blocking. */
ps_status ps_client_end_job(ps_client *c, ps_error *err);
/* The same for a job that failed: failure (at most 255 bytes kept) is what every shard exits 1
 * with, e.g. the ranks that never finished by cluster.job_deadline_s. */
ps_status ps_client_fail_job(ps_client *c, const char *failure, ps_error *err);
/* Workers: this worker's figures for one epoch, to every shard (EpochStats). Blocking. */
ps_status ps_client_epoch_stats(ps_client *c, const ps_EpochStats *s, ps_error *err);
void ps_client_set_min_clock(ps_client *c, uint64_t min_clock);

/* Async workers: the pushes that follow carry (step, part), part counting this step's pushes to
 * each server from 0; a server applies a (step, part) of this client once (server/replay.h), so
 * a step retried after ps_client_recover is not applied twice where it already was. Call it
 * before each step's pushes, again before a retry; step 0 (the default): not numbered. */
void ps_client_set_step(ps_client *c, uint64_t step);

/* After PS_CLOSED or PS_TIMEOUT: drops every connection and whatever was in flight (those ops
 * are gone), then reconnects to every server, with backoff from 50 ms doubling to 2 s, for at
 * most cluster.recover_timeout_ms. The Hello says `clock` (the step being retried, sync/ssp);
 * the servers may move it on (a rank dropped meanwhile rejoins where the others are):
 * ps_client_clock tells. PS_CLOSED at once when recover_timeout_ms is 0; else the last failure,
 * naming the server, once the time is up. */
ps_status ps_client_recover(ps_client *c, uint64_t clock, ps_error *err);

/* Export. Rows with their AdaGrad state: for keys (n), values (n, dim), acc (n, state_len) and,
 * if not NULL, steps (n) (0 unless the table has lr_decay); keys without a row read as their
 * initial value and accumulator. Blocking. */
ps_status ps_client_rows(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                         float *values, float *acc, uint32_t *steps, ps_error *err);
/* The next stored rows of table on one shard in ascending key order: from the first when
 * from_start (which also snapshots the shard's key order for this client), else after key
 * `after`; at most max_rows into keys (max_rows), values (max_rows, dim), acc (max_rows,
 * state_len), steps (max_rows, or NULL). *n_out rows came; *done when the last row is among
 * them. Blocking. */
ps_status ps_client_scan(ps_client *c, uint32_t table, uint32_t shard, bool from_start,
                         uint64_t after, size_t max_rows, uint64_t *keys, float *values,
                         float *acc, uint32_t *steps, size_t *n_out, bool *done, ps_error *err);

/* Rows and bytes of each table on each shard (sum over shards when shard < 0). */
ps_status ps_client_table_stats(ps_client *c, uint32_t table, uint64_t *rows, uint64_t *bytes,
                                ps_error *err);

/* One table on one shard as its server counts it (TableStats in ps.proto; server/store.h). */
typedef struct {
    char name[PS_TABLE_NAME_MAX];
    uint64_t rows, bytes, row_bytes, admitted, pending, evicted, refused_gradients;
} ps_table_stats;

/* Every table on every shard: out (num_servers, num_tables), caller-owned; out[s * num_tables
 * + t] is table t on shard s. Blocking. */
ps_status ps_client_stats(ps_client *c, ps_table_stats *out, ps_error *err);

#endif
