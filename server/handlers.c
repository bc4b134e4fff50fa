/* handlers.c - Envelope -> store call -> reply. The protocol-error policy lives here:
 *  - a request the server cannot decode, or anything before a valid Hello, gets an Error and the
 *    connection closes after it (the peer is broken or speaking another protocol);
 *  - a well-formed request with bad arguments (unknown table, lengths that disagree, over a
 *    limit) gets an Error and the connection stays open. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adagrad.h"
#include "server_internal.h"

#define VALUES_PART_BYTES (4u << 20)
#define VALUES_OVERHEAD 64 /* a Values frame's bytes besides its rows, at most */

typedef struct {
    ps_store *store;
    const uint8_t *keys;
    size_t n;
} pull_fill;

static void fill_values(void *ud, uint8_t *dst, size_t len) {
    pull_fill *f = ud;
    (void)len;
    ps_store_pull(f->store, f->keys, f->n, dst);
}

/* Index of the first gradient coordinate that is not finite or whose square would overflow
 * float32 (|g| >= 2^64, which would make the accumulator infinite and freeze the coordinate for
 * good), or n when every one is fine. One vectorizable pass over the bits; any alignment.
 * The magnitude bits plus 2^31 - limit carry into bit 31 exactly when they are >= limit (at most
 * 0xa07fffff: no wrap), so the pass ORs the sums: no compare, and a 1-cycle chain per vector
 * instead of a running max's compare-and-select (it was the server's largest cost in a dense
 * sync step, ahead of the AdaGrad update). */
static size_t first_bad_gradient(const uint8_t *g, size_t n) {
    const uint32_t limit = 0x5f800000u; /* 2^64; inf and NaN have larger magnitude bits */
    uint32_t any = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, g + 4 * i, 4);
        any |= (w & 0x7fffffffu) + (0x80000000u - limit);
    }
    if ((any & 0x80000000u) == 0) return n;
    for (size_t i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, g + 4 * i, 4);
        if ((w & 0x7fffffffu) >= limit) return i;
    }
    return n;
}

/* Validates a key array (and, with grads, its gradient array) for table t. */
static ps_status check_keys(ps_conn *c, uint32_t table, const ps_bytes *keys,
                            const ps_bytes *grads, const char *what, size_t *n_out,
                            ps_error *err) {
    ps_server *srv = c->srv;
    if (table >= srv->job->num_tables)
        return ps_error_set(err, PS_INVALID_ARG, "%s: unknown table %u (the job has %zu)", what,
                            table, srv->job->num_tables);
    if (keys->len % 8 != 0)
        return ps_error_set(err, PS_PROTO, "%s: keys are %zu bytes, not a multiple of 8", what,
                            keys->len);
    size_t n = keys->len / 8, dim = srv->job->tables[table].dim;
    if (n > srv->job->max_keys_per_request)
        return ps_error_set(err, PS_TOO_LARGE, "%s: %zu keys, limit %zu", what, n,
                            srv->job->max_keys_per_request);
    if (grads != NULL && grads->len != n * dim * sizeof(float))
        return ps_error_set(err, PS_INVALID_ARG,
                            "%s: %zu bytes of gradients for %zu keys x dim %zu (want %zu)", what,
                            grads->len, n, dim, n * dim * sizeof(float));
    if (grads != NULL) {
        const size_t bad = first_bad_gradient(grads->p, n * dim);
        if (bad < n * dim) {
            float g;
            memcpy(&g, grads->p + 4 * bad, 4);
            srv->refused_gradients[table]++;
            return ps_error_set(err, PS_INVALID_ARG,
                                "%s: gradient of key %llu, coordinate %zu, is %g: refused (not "
                                "finite, or |g| >= 2^64 whose square overflows the accumulator); "
                                "no row of this push was updated",
                                what, (unsigned long long)ps_load_u64(keys->p + 8 * (bad / dim)),
                                bad % dim, (double)g);
        }
    }
    *n_out = n;
    return PS_OK;
}

/* Unsent reply bytes below which a big reply's next part is produced: two parts in flight keep
 * the socket busy while the loop serves everyone else between parts. */
#define REPLY_WATERMARK (2 * VALUES_PART_BYTES)

struct ps_reply_gen {
    uint64_t id;
    ps_store *st;
    uint8_t *keys; /* (n - base) owned copy of the keys of rows base.. : the request's frame
                      does not outlive its handling */
    size_t base, n, next, part;
};

void ps_reply_free(struct ps_reply_gen *g) {
    if (g == NULL) return;
    free(g->keys);
    free(g);
}

/* Queues one Values part: rows [first, first + m) of the request; keys (m) are theirs. */
static ps_status send_part(ps_conn *c, uint64_t id, ps_store *st, const uint8_t *keys,
                           size_t first, size_t m, size_t n, ps_error *err) {
    const size_t row_bytes = ps_store_spec(st)->dim * sizeof(float);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = id;
    env.which_body = ps_Envelope_values_tag;
    env.values.first_row = first;
    env.values.more = first + m < n;
    pull_fill f = {st, keys, m};
    ps_bulk values = {.fill = fill_values, .fill_ud = &f, .fill_len = m * row_bytes};
    uint8_t *frame;
    size_t len;
    ps_status s =
        ps_wire_encode(&env, NULL, NULL, NULL, &values, &c->srv->fcache, &frame, &len, err);
    if (s == PS_OK) ps_conn_send(c, frame, len);
    return s;
}

/* Reply bytes not yet written: handed to the socket, and still corked (small parts wait in the
 * cork until the read's replies leave together, and must count too). */
static size_t unsent(const ps_conn *c) {
    size_t n = c->queued;
    for (size_t i = 0; i < c->n_cork; i++) n += c->cork[i].len;
    return n;
}

bool ps_reply_continue(ps_conn *c) {
    struct ps_reply_gen *g = c->gen;
    while (g->next < g->n && unsent(c) < REPLY_WATERMARK) {
        const size_t m = g->n - g->next < g->part ? g->n - g->next : g->part;
        ps_error err = {0};
        if (send_part(c, g->id, g->st, g->keys + 8 * (g->next - g->base), g->next, m, g->n,
                      &err) != PS_OK) {
            ps_log(&c->srv->opt.log, PS_LOG_ERROR, "%s: %s; closing", c->peer, err.msg);
            ps_conn_close(c);
            break;
        }
        g->next += m;
    }
    if (g->next < g->n && !uv_is_closing((uv_handle_t *)&c->tcp)) return false;
    ps_reply_free(g);
    c->gen = NULL;
    return true;
}

/* Rows of n keys as Values parts of at most VALUES_PART_BYTES and within limits.max_frame_bytes
 * (at least one row, at least one part). The first parts leave at once; a reply longer than the
 * watermark goes on as the socket drains (ps_reply_continue), so one huge pull neither holds its
 * whole reply in memory nor keeps the loop from everyone else. */
static ps_status reply_values(ps_conn *c, uint64_t id, ps_store *st, const uint8_t *keys, size_t n,
                              ps_error *err) {
    const size_t row_bytes = ps_store_spec(st)->dim * sizeof(float);
    size_t part_bytes = VALUES_PART_BYTES; /* and within the frame limit, which peers share */
    if (part_bytes > c->srv->job->max_frame_bytes - VALUES_OVERHEAD)
        part_bytes = c->srv->job->max_frame_bytes - VALUES_OVERHEAD;
    const size_t part = row_bytes >= part_bytes ? 1 : part_bytes / row_bytes;
    size_t first = 0;
    do {
        const size_t m = n - first < part ? n - first : part;
        ps_status s = send_part(c, id, st, keys + 8 * first, first, m, n, err);
        if (s != PS_OK) return s;
        first += m;
    } while (first < n && unsent(c) < REPLY_WATERMARK);
    if (first == n) return PS_OK;
    struct ps_reply_gen *g = calloc(1, sizeof(*g));
    uint8_t *copy = g ? malloc(8 * (n - first)) : NULL;
    if (copy == NULL) {
        free(g);
        return ps_error_set(err, PS_NOMEM, "a pull of %zu keys: out of memory", n);
    }
    memcpy(copy, keys + 8 * first, 8 * (n - first));
    *g = (struct ps_reply_gen){.id = id, .st = st, .keys = copy, .base = first, .n = n,
                               .next = first, .part = part};
    c->gen = g;
    return PS_OK;
}

/* A peer's string, fit for a log line: control bytes become '?'. */
static void printable(char *dst, size_t n, const char *src) {
    size_t i = 0;
    for (; src[i] != '\0' && i + 1 < n; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
    dst[i] = '\0';
}

/* Queues a reply without bulk fields. */
static ps_status send_env(ps_conn *c, const ps_Envelope *env, ps_error *err) {
    uint8_t *frame;
    size_t len;
    ps_status s = ps_wire_encode(env, NULL, NULL, NULL, NULL, NULL, &frame, &len, err);
    if (s == PS_OK) ps_conn_send(c, frame, len);
    return s;
}

/* A segment for a worker on this host that asks for one (shm.h); anything that stands in the
 * way leaves the connection on TCP, which always works. */
static void offer_shm(ps_conn *c, const ps_Hello *h, ps_HelloReply *reply) {
    ps_server *srv = c->srv;
    if (h->shm_bytes == 0 || !srv->job->shared_memory || !c->local_peer ||
        h->role != ps_Role_ROLE_WORKER || c->shm.p != NULL)
        return;
    ps_error err = {0};
    if (h->shm_bytes > PS_SHM_MAX_BYTES ||
        ps_shm_create((size_t)h->shm_bytes, &c->shm, &err) != PS_OK) {
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: no shared memory for worker %u (%llu bytes): %s; "
               "it stays on TCP", c->peer, h->rank, (unsigned long long)h->shm_bytes,
               h->shm_bytes > PS_SHM_MAX_BYTES ? "over the limit" : err.msg);
        return;
    }
    snprintf(reply->shm_name, sizeof(reply->shm_name), "%s", c->shm.name);
}

static ps_status on_hello(ps_conn *c, const ps_msg *m, ps_error *err) {
    ps_server *srv = c->srv;
    const ps_Hello *h = &m->env.hello;
    /* the token first: a peer that does not have it learns nothing of the job; an address
     * locked out meanwhile (its other connections guessing) may not try again yet */
    if (srv->job->token[0] != '\0' && ps_server_locked_out(srv, c->ip) > 0)
        return ps_error_set(err, PS_MISMATCH, "too many bad tokens from this address");
    if (srv->job->token[0] != '\0') {
        uint8_t want[PS_AUTH_MAC_BYTES];
        ps_auth_mac(srv->job->token, c->nonce, h->job_id, (uint32_t)h->role, h->rank, want);
        if (h->mac.size != PS_AUTH_MAC_BYTES || !ps_auth_equal(h->mac.bytes, want)) {
            ps_server_auth_failed(srv, c->ip);
            return ps_error_set(err, PS_MISMATCH, "bad token");
        }
    }
    if (h->protocol_version != PS_PROTOCOL_VERSION)
        return ps_error_set(err, PS_MISMATCH, "protocol version %u, this server speaks %u",
                            h->protocol_version, PS_PROTOCOL_VERSION);
    if (strcmp(h->job_id, srv->job->job_id) != 0) {
        char id[sizeof(h->job_id)];
        printable(id, sizeof(id), h->job_id);
        return ps_error_set(err, PS_MISMATCH, "job \"%s\", this server serves job \"%s\"", id,
                            srv->job->job_id);
    }
    if (h->role != ps_Role_ROLE_WORKER && h->role != ps_Role_ROLE_ADMIN)
        return ps_error_set(err, PS_INVALID_ARG, "unknown role %d", (int)h->role);
    if (h->role == ps_Role_ROLE_WORKER && h->rank >= srv->job->num_workers)
        return ps_error_set(err, PS_INVALID_ARG, "worker rank %u, the job has %u workers",
                            h->rank, srv->job->num_workers);
    uint64_t start = 0; /* the clock the worker goes on from here (barrier) */
    if (h->role == ps_Role_ROLE_WORKER) {
        /* one connection per rank (two would mix their steps in one clock), except that the
         * same worker process reconnecting (a server it timed out on while that server still
         * held its old connection) replaces its old one */
        for (ps_conn *o = srv->conns; o != NULL; o = o->next) {
            if (o == c || !o->hello_done || !o->is_worker || o->rank != h->rank) continue;
            const bool closing = uv_is_closing((const uv_handle_t *)&o->tcp);
            if (h->session != 0 && o->session == h->session) {
                /* also when its close is under way (its EOF came in this same loop turn): the
                 * close must not drop the rank that this connection now holds */
                o->replaced = true;
                if (closing) continue;
                ps_log(&srv->opt.log, PS_LOG_INFO,
                       "%s: worker %u reconnected; closing its old connection %s", c->peer,
                       h->rank, o->peer);
                ps_conn_close(o);
            } else if (!closing && srv->barrier != NULL) {
                return ps_error_set(err, PS_MISMATCH, "worker rank %u is already connected (%s)",
                                    h->rank, o->peer);
            }
        }
        bool advanced = false;
        if (srv->barrier != NULL &&
            ps_barrier_hello(srv->barrier, h->rank, h->clock, &start, &advanced, err) != PS_OK)
            return err->code;
        if (advanced) ps_server_wake(srv);
        if (srv->barrier != NULL && start != h->clock)
            ps_log(&srv->opt.log, PS_LOG_WARN, "%s: worker %u rejoins at step %llu (it said %llu)",
                   c->peer, h->rank, (unsigned long long)start, (unsigned long long)h->clock);
    }
    c->hello_done = true;
    ps_framer_set_max(c->framer, srv->job->max_frame_bytes);
    c->is_worker = h->role == ps_Role_ROLE_WORKER;
    c->rank = h->rank;
    c->session = h->session;
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = m->env.request_id;
    env.which_body = ps_Envelope_hello_reply_tag;
    env.hello_reply.shard = srv->opt.shard;
    env.hello_reply.num_shards = srv->job->num_servers;
    env.hello_reply.clock = start;
    env.hello_reply.tables_count = (pb_size_t)srv->job->num_tables;
    for (size_t i = 0; i < srv->job->num_tables; i++)
        ps_wire_table_to_pb(&srv->job->tables[i], &env.hello_reply.tables[i]);
    offer_shm(c, h, &env.hello_reply);
    ps_status s = send_env(c, &env, err);
    ps_log(&srv->opt.log, PS_LOG_DEBUG, "%s: hello from rank %u", c->peer, h->rank);
    return s;
}

static ps_status on_stats(ps_conn *c, const ps_msg *m, ps_error *err) {
    ps_server *srv = c->srv;
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = m->env.request_id;
    env.which_body = ps_Envelope_stats_reply_tag;
    env.stats_reply.shard = srv->opt.shard;
    env.stats_reply.tables_count = (pb_size_t)srv->job->num_tables;
    env.stats_reply.queued_bytes = srv->queued_total;
    for (size_t i = 0; i < srv->job->num_tables; i++) {
        ps_TableStats *t = &env.stats_reply.tables[i];
        ps_store_stats ss;
        ps_store_get_stats(srv->stores[i], &ss);
        snprintf(t->name, sizeof(t->name), "%s", srv->job->tables[i].name);
        t->rows = ss.rows;
        t->bytes = ss.bytes;
        t->refused_gradients = srv->refused_gradients[i];
        t->row_bytes = ss.row_bytes;
        t->admitted = ss.admitted;
        t->pending = ss.pending;
        t->evicted = ss.evicted;
    }
    return send_env(c, &env, err);
}

static ps_status send_ack(ps_conn *c, uint64_t id, uint64_t rows, ps_error *err) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = id;
    env.which_body = ps_Envelope_ack_tag;
    env.ack.rows_touched = rows;
    return send_env(c, &env, err);
}

/* sync/ssp: only a worker's rank has a clock. */
static ps_status check_barrier_peer(const ps_conn *c, const char *what, ps_error *err) {
    if (!c->is_worker)
        return ps_error_set(err, PS_INVALID_ARG, "%s: in a %s job only workers push and end steps",
                            what, c->srv->job->consistency == PS_SYNC ? "sync" : "ssp");
    return PS_OK;
}

static ps_status on_clock(ps_conn *c, const ps_msg *m, ps_error *err) {
    ps_server *srv = c->srv;
    if (srv->barrier == NULL) { /* async: only "finished" means something (the job's end) */
        /* recorded (server.checkpoint_dir) before the worker hears back and leaves */
        if (m->env.clock.finished && c->is_worker) ps_server_worker_finished(srv, c->rank);
        return send_ack(c, m->env.request_id, 0, err);
    }
    if (check_barrier_peer(c, "Clock", err) != PS_OK) return err->code;
    bool advanced;
    if (m->env.clock.adopt) { /* one clock on every shard after a reconnect */
        if (ps_barrier_adopt(srv->barrier, c->rank, m->env.clock.clock, &advanced, err) != PS_OK)
            return err->code;
        if (advanced) ps_server_wake(srv);
        return send_ack(c, m->env.request_id, 0, err);
    }
    if (ps_barrier_clock(srv->barrier, c->rank, m->env.clock.clock, m->env.clock.finished,
                         &advanced, err) != PS_OK)
        return err->code;
    if (m->env.clock.finished) ps_server_worker_finished(srv, c->rank); /* before the Ack */
    ps_status st = send_ack(c, m->env.request_id, 0, err);
    if (advanced) ps_server_wake(srv);
    return st;
}

/* A worker's epoch figures, for the job's combined line (server.h on_epoch_stats). */
static ps_status on_epoch_stats(ps_conn *c, const ps_msg *m, ps_error *err) {
    if (!c->is_worker)
        return ps_error_set(err, PS_INVALID_ARG, "EpochStats from an admin peer: only workers "
                            "have epochs");
    ps_status st = send_ack(c, m->env.request_id, 0, err);
    if (st == PS_OK && c->srv->opt.on_epoch_stats != NULL)
        c->srv->opt.on_epoch_stats(c->srv->opt.ud, c->rank, &m->env.epoch_stats);
    return st;
}

/* The job is over: only an admin peer (the exporter, an operator) may say so. */
static ps_status on_end_job(ps_conn *c, const ps_msg *m, ps_error *err) {
    if (c->is_worker)
        return ps_error_set(err, PS_INVALID_ARG, "EndJob from worker rank %u: only an admin "
                            "peer ends the job (a worker says finished with its Clock)", c->rank);
    if (ps_server_end_job(c->srv, m->env.end_job.failure, err) != PS_OK) return err->code;
    return send_ack(c, m->env.request_id, 0, err);
}

void ps_handle_disconnect(ps_conn *c) {
    ps_server *srv = c->srv;
    if (srv->barrier == NULL || !c->hello_done || !c->is_worker || srv->stopping || c->replaced ||
        !ps_barrier_is_live(srv->barrier, c->rank))
        return;
    ps_log(&srv->opt.log, PS_LOG_WARN,
           "worker %u disconnected at step %llu before finishing: dropped from the barrier",
           c->rank, (unsigned long long)ps_barrier_rank_clock(srv->barrier, c->rank));
    bool advanced;
    ps_error err = {0};
    if (ps_barrier_drop(srv->barrier, c->rank, &advanced, &err) != PS_OK)
        ps_log(&srv->opt.log, PS_LOG_ERROR, "%s", err.msg);
    if (advanced) ps_server_wake(srv);
}

/* Rows with their state for export (see Scan in ps.proto). Replies stay within a Values part. */
static ps_status on_scan(ps_conn *c, const ps_msg *m, ps_error *err) {
    ps_server *srv = c->srv;
    const ps_Scan *q = &m->env.scan;
    size_t n = 0;
    if (check_keys(c, q->table, &m->keys, NULL, "Scan", &n, err) != PS_OK) return err->code;
    ps_store *st = srv->stores[q->table];
    const ps_table_spec *spec = ps_store_spec(st);
    const size_t dim = spec->dim, sl = ps_store_state_len(st);
    const bool steps = spec->opt.lr_decay != 0.0;
    const size_t row = 8 + 4 * (dim + sl) + (steps ? 4 : 0);
    size_t budget = VALUES_PART_BYTES;
    if (budget > srv->job->max_frame_bytes - VALUES_OVERHEAD)
        budget = srv->job->max_frame_bytes - VALUES_OVERHEAD;
    const size_t limit = row >= budget ? 1 : budget / row;
    const uint8_t *keys = m->keys.p;
    bool done = false;
    if (m->keys.len > 0) {
        if (n > limit)
            return ps_error_set(err, PS_TOO_LARGE, "Scan of %zu keys: at most %zu per request",
                                n, limit);
    } else {
        if (q->from_start || c->scan_keys == NULL || c->scan_table != q->table) {
            free(c->scan_keys);
            c->scan_keys = NULL, c->scan_n = 0;
            if (ps_store_sorted_keys(st, &c->scan_keys, &c->scan_n, err) != PS_OK)
                return err->code;
            c->scan_table = q->table;
        }
        size_t lo = 0, hi = c->scan_n; /* first key > after */
        while (!q->from_start && lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (c->scan_keys[mid] <= q->after) lo = mid + 1;
            else hi = mid;
        }
        n = c->scan_n - lo;
        if (n > limit) n = limit;
        if (q->max_rows > 0 && n > q->max_rows) n = q->max_rows;
        done = lo + n == c->scan_n;
        static const uint64_t none[1];
        keys = (const uint8_t *)(c->scan_keys != NULL ? c->scan_keys + lo : none); /* F3 */
    }
    float *w = malloc(n * dim * 4 + 1), *acc = malloc(n * sl * 4 + 1);
    uint32_t *stp = malloc(n * 4 + 1);
    if (w == NULL || acc == NULL || stp == NULL) {
        free(w), free(acc), free(stp);
        return ps_error_set(err, PS_NOMEM, "Scan of %zu rows: out of memory", n);
    }
    for (size_t i = 0; i < n; i++) {
        const uint64_t k = ps_load_u64(keys + 8 * i);
        stp[i] = 0;
        if (!ps_store_get_row(st, k, w + i * dim, acc + i * sl, &stp[i])) {
            ps_store_pull(st, keys + 8 * i, 1, (uint8_t *)(w + i * dim)); /* initial values */
            ps_adagrad_init_state(&spec->opt, acc + i * sl, dim);
        }
    }
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = m->env.request_id;
    env.which_body = ps_Envelope_rows_tag;
    env.rows.done = done;
    ps_bulk bk = {.src = {keys, n * 8}}, bw = {.src = {(const uint8_t *)w, n * dim * 4}};
    ps_bulk ba = {.src = {(const uint8_t *)acc, n * sl * 4}};
    ps_bulk bs = {.src = {(const uint8_t *)stp, steps ? n * 4 : 0}};
    uint8_t *frame;
    size_t len;
    ps_status s = ps_wire_encode_rows(&env, &bk, &bw, &ba, &bs, NULL, &frame, &len, err);
    free(w), free(acc), free(stp);
    if (s == PS_OK) ps_conn_send(c, frame, len);
    return s;
}

/* async: this worker process has had push (step, part) applied here already (a step retried
 * after a reconnect): acknowledge it without applying it again (replay.h). */
static bool replayed(const ps_conn *c, uint64_t step, uint32_t part) {
    return c->srv->replay != NULL && c->is_worker &&
           ps_replay_seen(c->srv->replay, c->rank, c->session, step, part);
}

/* A push's gradients: *out views the frame's, or (in_shm) a copy of the region ref of the peer's
 * segment, which check_keys checks and the push applies (checking the segment itself would let
 * a peer change what was checked before it is applied). Not both. */
static ps_status push_grads(ps_conn *c, const ps_msg *m, uint32_t table, bool in_shm,
                            const ps_ShmRef *ref, const char *what, ps_bytes *out, ps_error *err) {
    ps_server *srv = c->srv;
    *out = m->grads;
    if (!in_shm || table >= srv->job->num_tables) return PS_OK; /* check_keys names the table */
    if (m->grads.len != 0)
        return ps_error_set(err, PS_INVALID_ARG, "%s: gradients both inline and in shared "
                            "memory", what);
    const size_t want = m->keys.len / 8 * ps_store_spec(srv->stores[table])->dim * sizeof(float);
    uint8_t *p;
    if (ps_shm_region(&c->shm, ref, want, what, &p, err) != PS_OK) return err->code;
    if (want > srv->shm_grads_cap) {
        uint8_t *q = realloc(srv->shm_grads, want);
        if (q == NULL)
            return ps_error_set(err, PS_NOMEM, "%s: out of memory for %zu bytes of gradients",
                                what, want);
        srv->shm_grads = q, srv->shm_grads_cap = want;
    }
    memcpy(srv->shm_grads, p, want);
    *out = (ps_bytes){srv->shm_grads, want};
    return PS_OK;
}

/* Where in the peer's segment a pull of n rows of table goes (PS_INVALID_ARG if not there). */
static ps_status values_region(ps_conn *c, uint32_t table, const ps_ShmRef *ref, size_t n,
                               const char *what, uint8_t **p, ps_error *err) {
    const size_t want = n * ps_store_spec(c->srv->stores[table])->dim * sizeof(float);
    return ps_shm_region(&c->shm, ref, want, what, p, err);
}

/* A pull's rows written into the peer's segment at ref, then one Values saying so. All rows at
 * once (a segment is at most PS_SHM_MAX_BYTES): a consistent snapshot, where an inline reply
 * past 8 MiB is produced in parts as the socket drains. */
static ps_status reply_in_shm(ps_conn *c, uint64_t id, uint32_t table, const ps_ShmRef *ref,
                              const uint8_t *keys, size_t n, const char *what, ps_error *err) {
    ps_store *st = c->srv->stores[table];
    uint8_t *p;
    if (values_region(c, table, ref, n, what, &p, err) != PS_OK) return err->code;
    ps_store_pull(st, keys, n, p);
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = id;
    env.which_body = ps_Envelope_values_tag;
    env.values.in_shm = true;
    return send_env(c, &env, err);
}

static ps_status dispatch(ps_conn *c, const ps_msg *m, ps_error *err) {
    ps_server *srv = c->srv;
    size_t n = 0, n_pull = 0;
    switch (m->env.which_body) {
    case ps_Envelope_pull_tag: {
        uint32_t t = m->env.pull.table;
        if (check_keys(c, t, &m->keys, NULL, "Pull", &n, err) != PS_OK) return err->code;
        if (m->env.pull.has_values_at)
            return reply_in_shm(c, m->env.request_id, t, &m->env.pull.values_at, m->keys.p, n,
                                "Pull", err);
        return reply_values(c, m->env.request_id, srv->stores[t], m->keys.p, n, err);
    }
    case ps_Envelope_push_tag: {
        uint32_t t = m->env.push.table;
        ps_bytes grads;
        if (push_grads(c, m, t, m->env.push.has_grads_at, &m->env.push.grads_at, "Push", &grads,
                       err) != PS_OK ||
            check_keys(c, t, &m->keys, &grads, "Push", &n, err) != PS_OK ||
            ps_server_make_room(srv, t, m->keys.p, n, err) != PS_OK)
            return err->code;
        const uint64_t step = m->env.push.step;
        const uint32_t part = m->env.push.part;
        if (replayed(c, step, part)) return send_ack(c, m->env.request_id, n, err);
        ps_status st = srv->barrier == NULL
                           ? ps_store_push(srv->stores[t], m->keys.p, grads.p, n, err)
                       : check_barrier_peer(c, "Push", err) != PS_OK
                           ? err->code
                           : ps_barrier_push(srv->barrier, c->rank, t, m->keys.p, grads.p, n,
                                             m->env.push.clock, err);
        if (st != PS_OK) return st;
        if (srv->replay != NULL && c->is_worker) {
            ps_replay_mark(srv->replay, c->rank, c->session, step, part);
            if (srv->barrier == NULL) ps_server_pushed(srv, c->rank, step); /* async's count */
        }
        return send_ack(c, m->env.request_id, n, err);
    }
    case ps_Envelope_push_pull_tag: {
        uint32_t t = m->env.push_pull.table;
        ps_bytes grads;
        if (push_grads(c, m, t, m->env.push_pull.has_grads_at, &m->env.push_pull.grads_at,
                       "PushPull", &grads, err) != PS_OK ||
            check_keys(c, t, &m->keys, &grads, "PushPull", &n, err) != PS_OK ||
            check_keys(c, t, &m->pull_keys, NULL, "PushPull", &n_pull, err) != PS_OK)
            return err->code;
        if (srv->barrier != NULL)
            return ps_error_set(err, PS_INVALID_ARG,
                                "PushPull in a %s job: push with a clock, then pull",
                                srv->job->consistency == PS_SYNC ? "sync" : "ssp");
        uint8_t *unused;
        if (m->env.push_pull.has_values_at && /* refused before the push is applied */
            values_region(c, t, &m->env.push_pull.values_at, n_pull, "PushPull", &unused, err) !=
                PS_OK)
            return err->code;
        const uint64_t step = m->env.push_pull.step;
        const uint32_t part = m->env.push_pull.part;
        if (!replayed(c, step, part)) {
            if (ps_server_make_room(srv, t, m->keys.p, n, err) != PS_OK ||
                ps_store_push(srv->stores[t], m->keys.p, grads.p, n, err) != PS_OK)
                return err->code;
            if (c->is_worker) {
                ps_replay_mark(srv->replay, c->rank, c->session, step, part);
                ps_server_pushed(srv, c->rank, step);
            }
        }
        if (m->env.push_pull.has_values_at)
            return reply_in_shm(c, m->env.request_id, t, &m->env.push_pull.values_at,
                                m->pull_keys.p, n_pull, "PushPull", err);
        return reply_values(c, m->env.request_id, srv->stores[t], m->pull_keys.p, n_pull, err);
    }
    case ps_Envelope_stats_tag:
        return on_stats(c, m, err);
    case ps_Envelope_clock_tag:
        return on_clock(c, m, err);
    case ps_Envelope_end_job_tag:
        return on_end_job(c, m, err);
    case ps_Envelope_epoch_stats_tag:
        return on_epoch_stats(c, m, err);
    case ps_Envelope_scan_tag:
        return on_scan(c, m, err);
    case ps_Envelope_hello_tag:
        return ps_error_set(err, PS_INVALID_ARG, "Hello sent twice");
    default:
        return ps_error_set(err, PS_PROTO, "message type %u is not a request",
                            (unsigned)m->env.which_body);
    }
}

ps_frame_verdict ps_handle_frame(ps_conn *c, const uint8_t *payload, size_t len) {
    ps_server *srv = c->srv;
    ps_error err = {0};
    ps_msg m;
    if (ps_wire_decode(payload, len, &m, &err) != PS_OK) {
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: %s; closing", c->peer, err.msg);
        ps_conn_send_error(c, 0, err.code, err.msg, true);
        return PS_FRAME_CLOSE;
    }
    const uint64_t id = m.env.request_id;
    srv->now_ms = uv_now(&srv->loop);
    /* the worker maps its segment before it sends anything after the HelloReply */
    if (c->hello_done) ps_shm_unlink(&c->shm);
    if (!c->hello_done) {
        ps_status st = m.env.which_body == ps_Envelope_hello_tag
                           ? on_hello(c, &m, &err)
                           : ps_error_set(&err, PS_PROTO, "the first message must be Hello");
        if (st == PS_OK) return PS_FRAME_DONE;
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: %s; closing", c->peer, err.msg);
        ps_conn_send_error(c, id, st, err.msg, true);
        return PS_FRAME_CLOSE;
    }
    /* a pull that asks for steps not every live worker has ended waits for them (a bad one is
     * answered by dispatch's checks instead) */
    if (srv->barrier != NULL && m.env.which_body == ps_Envelope_pull_tag &&
        m.env.pull.min_clock > ps_barrier_min_clock(srv->barrier)) {
        size_t n;
        if (check_keys(c, m.env.pull.table, &m.keys, NULL, "Pull", &n, &err) != PS_OK) {
            /* dispatch answers it */
        } else if (!c->is_worker) {
            ps_error_set(&err, PS_INVALID_ARG, "Pull: min_clock %llu from a peer that is not a "
                         "worker: only workers wait for the barrier",
                         (unsigned long long)m.env.pull.min_clock);
            ps_conn_send_error(c, id, err.code, err.msg, false);
            return PS_FRAME_DONE;
        } else if (m.env.pull.min_clock > ps_barrier_rank_clock(srv->barrier, c->rank)) {
            ps_error_set(&err, PS_INVALID_ARG, "Pull: min_clock %llu is past the sender's own "
                         "clock %llu: it would wait for itself",
                         (unsigned long long)m.env.pull.min_clock,
                         (unsigned long long)ps_barrier_rank_clock(srv->barrier, c->rank));
            ps_conn_send_error(c, id, err.code, err.msg, false);
            return PS_FRAME_DONE;
        } else {
            return PS_FRAME_WAIT;
        }
    }
    ps_status st = dispatch(c, &m, &err);
    if (st == PS_OK) return PS_FRAME_DONE;
    bool fatal = st == PS_PROTO || st == PS_NOMEM;
    ps_log(&srv->opt.log, PS_LOG_WARN, "%s: request %llu: %s%s", c->peer, (unsigned long long)id,
           err.msg, fatal ? "; closing" : "");
    ps_conn_send_error(c, id, st, err.msg, fatal);
    return fatal ? PS_FRAME_CLOSE : PS_FRAME_DONE;
}
