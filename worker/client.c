/* client.c - the worker's side of the wire. One uv loop drives every shard connection; it runs
 * only inside calls (connect, wait), so the caller's thread owns the client.
 *
 * Replies on one connection come back in request order (a shard serves a connection in order),
 * so each connection keeps a FIFO of what it is owed and checks each reply's request id against
 * its head. A pull's rows may come in several Values parts; the owed entry stays at the head
 * until the last one. The bulk of a big part is read straight into the caller's array when its
 * rows go there in order (maybe_redirect), else copied out of the frame. With cluster.tls each
 * connection starts with a TLS handshake that verifies the server's certificate, and every byte
 * then goes through its session (no reads into place: ciphertext is decrypted first). */
#include "client.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pb_decode.h>
#include <uv.h>

#include "auth.h"
#include "frame.h"
#include "hash.h"
#include "shm.h"
#include "tls.h"
#include "wire.h"

#define READ_CHUNK (256u << 10)

typedef struct {
    uint64_t request_id;
    uint32_t op;      /* slot index */
    uint32_t op_gen;  /* slot generation: a stale reply finds a newer generation */
    uint32_t *pos;    /* (n_pull) positions in the op's out, or NULL: rows base, base + 1, ... */
    size_t base;
    size_t n_pull;
    size_t got;       /* rows received so far: Values come in parts */
    bool in_shm;      /* the rows were asked for at shm_off of the shard's segment */
    size_t shm_off;
} owed;

typedef struct {
    bool in_use;
    uint32_t gen;
    size_t pending; /* replies still owed */
    ps_status st;
    char msg[400];
    float *out;
    float **view;     /* ps_client_pull_view_async: where the rows are, out or the segment */
    size_t view_rows; /* the pull's rows: one reply with all of them can be left in place */
    uint32_t dim;
    uint64_t rows, bytes; /* stats */
    uint32_t stats_table;
    ps_table_stats *stats_out; /* ps_client_stats: (n_shards, n_tables), or NULL */
    /* Scan (export): out gets values; these the rest, at the owed positions (or in order) */
    float *acc;
    uint32_t *steps;
    uint64_t *keys; /* a scan's keys */
    size_t state_len, cap, got;
    bool done;
} op_slot;

typedef struct {
    uv_tcp_t tcp; /* first member */
    ps_client *cl;
    uint32_t index;
    char addr[PS_ADDR_MAX];
    ps_framer *framer;
    ps_tls *tls; /* cluster.tls: the connection's session; NULL: plaintext */
    char *rbuf;
    bool open;     /* connected, not closed */
    int connect_status;
    bool connect_done;
    bool redirected; /* the frame being read puts its values straight into an op's out */
    bool challenged; /* the server's Challenge arrived: nonce is set */
    uint8_t nonce[PS_AUTH_NONCE_BYTES];
    owed *q; /* FIFO ring */
    size_t q_head, q_len, q_cap;
    uv_buf_t *cork; /* (n_cork) frames queued by *_async, written together by flush */
    size_t n_cork, cap_cork, cork_bytes;
    uint64_t start_clock; /* sync/ssp: the clock its HelloReply said to go on from */
    uint32_t part;        /* async: pushes of the current step sent to this shard */
    ps_shm shm;           /* the segment shared with this server (same host); p NULL: none */
    size_t shm_used;      /* bytes of its request area handed to requests still owed (reset
                             when none is) */
    size_t stage_at;      /* the staging area (ps_client_stage) is [stage_at, shm.len); the
                             request area before it */
    size_t stage_used;    /* bytes of the staging area handed out since it was last free */
    size_t stage_out;     /* staged buffers not passed to a push yet */
    ps_shm retired;       /* the segment before the last reconnect when buffers were staged in
                             it, kept mapped until the next: a push may send them again (copied) */
} shard_conn;

typedef struct {
    uv_write_t req;
    size_t n;
    uv_buf_t bufs[]; /* (n) owned until write_done */
} write_req;

#define CORK_MAX_BYTES (1u << 20) /* flush early past this: big requests need not wait */

struct ps_client {
    uv_loop_t loop;
    uv_timer_t timer;
    bool timer_fired;
    ps_client_options opt;
    const ps_job_config *job;
    uint32_t n_shards;
    shard_conn *shards;
    size_t n_tables;
    ps_table_spec tables[PS_MAX_TABLES];
    op_slot *ops;
    size_t ops_cap;
    ps_frame_cache fcache; /* big request buffers for reuse, shared by the shards */
    ps_tls_ctx *tls;       /* cluster.tls: the CA bundle servers are verified against; or NULL */
    uint64_t next_id;
    uint64_t clock;     /* steps ended by ps_client_clock_async; sent with every push */
    uint64_t min_clock; /* sent with every pull */
    uint64_t step;      /* async: the step pushes are numbered with (0: not numbered) */
    uint64_t session;   /* this client's random id, in every Hello: reconnects are recognised */
    uint64_t shm_requests; /* requests whose bulk went through a segment */
    uint64_t staged_pushes; /* pushes whose gradients were staged (sent without a copy) */
    int closing;        /* shard handles whose close has not completed (drop_connections) */
    bool broken; /* a deadline passed or a server went away: the client cannot be trusted */
    char broken_msg[400];
    /* hello state */
    bool hello_ok;
    ps_error hello_err;
    uint32_t hello_shard;
};

/* --- op slots ------------------------------------------------------------------------------- */

static ps_status op_new(ps_client *c, float *out, uint32_t dim, uint32_t *idx, ps_error *err) {
    for (size_t i = 0; i < c->ops_cap; i++) {
        if (!c->ops[i].in_use) {
            *idx = (uint32_t)i;
            goto found;
        }
    }
    size_t ncap = c->ops_cap ? c->ops_cap * 2 : 16;
    op_slot *n = realloc(c->ops, ncap * sizeof(*n));
    if (n == NULL) return ps_error_set(err, PS_NOMEM, "client: out of memory");
    memset(n + c->ops_cap, 0, (ncap - c->ops_cap) * sizeof(*n));
    *idx = (uint32_t)c->ops_cap;
    c->ops = n, c->ops_cap = ncap;
found:;
    op_slot *o = &c->ops[*idx];
    uint32_t gen = o->gen + 1;
    memset(o, 0, sizeof(*o));
    o->in_use = true, o->gen = gen, o->out = out, o->dim = dim, o->st = PS_OK;
    return PS_OK;
}

static ps_op op_handle(const ps_client *c, uint32_t idx) {
    return (uint64_t)c->ops[idx].gen << 32 | idx;
}

static void op_fail(op_slot *o, ps_status st, const char *msg) {
    if (o->st != PS_OK) return; /* keep the first failure */
    o->st = st;
    snprintf(o->msg, sizeof(o->msg), "%s", msg);
}

/* --- connection I/O -------------------------------------------------------------------------- */

static void close_cb_noop(uv_handle_t *h) { (void)h; }

static void break_client(ps_client *c, ps_status st, const char *msg) {
    if (!c->broken) {
        c->broken = true;
        snprintf(c->broken_msg, sizeof(c->broken_msg), "%s", msg);
    }
    for (uint32_t s = 0; s < c->n_shards; s++) {
        shard_conn *sc = &c->shards[s];
        for (size_t i = 0; i < sc->q_len; i++) {
            owed *w = &sc->q[(sc->q_head + i) % sc->q_cap];
            op_slot *o = &c->ops[w->op];
            if (o->gen == w->op_gen) {
                op_fail(o, st, msg);
                if (o->pending) o->pending--;
            }
            free(w->pos);
        }
        sc->q_len = 0;
        if (sc->open) {
            sc->open = false;
            uv_read_stop((uv_stream_t *)&sc->tcp);
        }
    }
}

static ps_status queue_push(shard_conn *sc, const owed *w) {
    if (sc->q_len == sc->q_cap) {
        size_t ncap = sc->q_cap ? sc->q_cap * 2 : 16;
        owed *n = malloc(ncap * sizeof(*n));
        if (n == NULL) return PS_NOMEM;
        for (size_t i = 0; i < sc->q_len; i++) n[i] = sc->q[(sc->q_head + i) % sc->q_cap];
        free(sc->q);
        sc->q = n, sc->q_cap = ncap, sc->q_head = 0;
    }
    sc->q[(sc->q_head + sc->q_len++) % sc->q_cap] = *w;
    return PS_OK;
}

static void write_done(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    shard_conn *sc = (shard_conn *)req->handle;
    for (size_t i = 0; i < w->n; i++) ps_frame_release(&sc->cl->fcache, (uint8_t *)w->bufs[i].base);
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        char msg[400];
        snprintf(msg, sizeof(msg), "server %u (%s): write failed: %s", sc->index, sc->addr,
                 uv_strerror(status));
        break_client(sc->cl, PS_CLOSED, msg);
    }
}

static void drop_cork(shard_conn *sc) {
    for (size_t i = 0; i < sc->n_cork; i++) free(sc->cork[i].base);
    sc->n_cork = 0, sc->cork_bytes = 0;
}

/* cluster.tls: writes the ciphertext the session holds (handshake records, an alert, encrypted
 * frames) in one uv_write. */
static ps_status tls_send(shard_conn *sc, ps_error *err) {
    uint8_t *out;
    size_t len;
    ps_tls_take(sc->tls, &out, &len);
    if (len == 0) return PS_OK;
    write_req *w = malloc(sizeof(*w) + sizeof(uv_buf_t));
    if (w == NULL) {
        free(out);
        return ps_error_set(err, PS_NOMEM, "client: out of memory");
    }
    w->n = 1, w->bufs[0] = uv_buf_init((char *)out, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&sc->tcp, w->bufs, 1, write_done);
    if (rc < 0) {
        free(out);
        free(w);
        return ps_error_set(err, PS_CLOSED, "server %u (%s): %s", sc->index, sc->addr,
                            uv_strerror(rc));
    }
    return PS_OK;
}

/* cluster.tls: encrypts the queued frames (freed at once) and writes the ciphertext. */
static ps_status flush_tls(shard_conn *sc, ps_error *err) {
    ps_status st = PS_OK;
    for (size_t i = 0; i < sc->n_cork; i++) {
        if (st == PS_OK)
            st = ps_tls_write(sc->tls, (const uint8_t *)sc->cork[i].base, sc->cork[i].len, err);
        ps_frame_release(&sc->cl->fcache, (uint8_t *)sc->cork[i].base);
    }
    sc->n_cork = 0, sc->cork_bytes = 0;
    return st == PS_OK ? tls_send(sc, err) : st;
}

/* Writes the queued frames of one shard in one uv_write (one syscall, one server wakeup). */
static ps_status flush_shard(shard_conn *sc, ps_error *err) {
    if (sc->n_cork == 0) return PS_OK;
    if (!sc->open) {
        drop_cork(sc);
        return ps_error_set(err, PS_CLOSED, "server %u (%s): not connected", sc->index, sc->addr);
    }
    if (sc->tls != NULL) return flush_tls(sc, err);
    write_req *w = malloc(sizeof(*w) + sc->n_cork * sizeof(uv_buf_t));
    if (w == NULL) {
        drop_cork(sc);
        return ps_error_set(err, PS_NOMEM, "client: out of memory");
    }
    w->n = sc->n_cork;
    memcpy(w->bufs, sc->cork, w->n * sizeof(uv_buf_t));
    sc->n_cork = 0, sc->cork_bytes = 0;
    int rc = uv_write(&w->req, (uv_stream_t *)&sc->tcp, w->bufs, (unsigned)w->n, write_done);
    if (rc < 0) {
        for (size_t i = 0; i < w->n; i++) free(w->bufs[i].base);
        free(w);
        return ps_error_set(err, PS_CLOSED, "server %u (%s): %s", sc->index, sc->addr,
                            uv_strerror(rc));
    }
    return PS_OK;
}

/* Queues a frame (takes ownership); it leaves at the next flush. */
static ps_status send_frame(shard_conn *sc, uint8_t *frame, size_t len, ps_error *err) {
    if (!sc->open) {
        free(frame);
        return ps_error_set(err, PS_CLOSED, "server %u (%s): not connected", sc->index, sc->addr);
    }
    if (sc->n_cork == sc->cap_cork) {
        size_t cap = sc->cap_cork ? sc->cap_cork * 2 : 8;
        uv_buf_t *nb = realloc(sc->cork, cap * sizeof(*nb));
        if (nb == NULL) {
            free(frame);
            return ps_error_set(err, PS_NOMEM, "client: out of memory");
        }
        sc->cork = nb, sc->cap_cork = cap;
    }
    sc->cork[sc->n_cork++] = uv_buf_init((char *)frame, (unsigned)len);
    sc->cork_bytes += len;
    return sc->cork_bytes >= CORK_MAX_BYTES ? flush_shard(sc, err) : PS_OK;
}

ps_status ps_client_flush(ps_client *c, ps_error *err) {
    ps_status first = PS_OK;
    for (uint32_t s = 0; s < c->n_shards; s++) {
        ps_status st = flush_shard(&c->shards[s], first == PS_OK ? err : NULL);
        if (first == PS_OK) first = st;
    }
    return first;
}

/* Names the first field in which a server's table differs from the job's, or returns NULL. */
static const char *table_diff(const ps_table_spec *srv, const ps_table_spec *job) {
    if (strcmp(srv->name, job->name) != 0) return "name";
    if (srv->dim != job->dim) return "dim";
    if (srv->init.kind != job->init.kind || srv->init.a != job->init.a ||
        srv->init.b != job->init.b || srv->init.stddev != job->init.stddev ||
        srv->init.fan_in != job->init.fan_in || srv->init.fan_out != job->init.fan_out)
        return "init";
    const ps_adagrad_config *a = &srv->opt, *b = &job->opt;
    if (a->form != b->form) return "optimizer.form";
    if (a->learning_rate != b->learning_rate) return "optimizer.learning_rate";
    if (a->epsilon != b->epsilon) return "optimizer.epsilon";
    if (a->initial_accumulator_value != b->initial_accumulator_value)
        return "optimizer.initial_accumulator_value";
    if (a->lr_decay != b->lr_decay) return "optimizer.lr_decay";
    if (a->weight_decay != b->weight_decay) return "optimizer.weight_decay";
    if (a->rowwise != b->rowwise) return "optimizer.rowwise";
    return NULL;
}

/* Unmaps sc's segment and empties its areas. One that buffers were staged in since its staging
 * area was last free stays mapped as sc->retired instead (unmapping the one retired before), so
 * that a step pushed again after a reconnect still reads what the caller wrote there. */
static void retire_segment(shard_conn *sc) {
    if (sc->shm.p != NULL && sc->stage_used > 0) {
        ps_shm_close(&sc->retired);
        sc->retired = sc->shm;
        sc->shm = (ps_shm){0};
    }
    ps_shm_close(&sc->shm);
    sc->shm_used = sc->stage_at = sc->stage_used = sc->stage_out = 0;
}

/* Every table of every shard must be the job's, in the job's order: requests name tables by index
 * and size their buffers by the job's dims, so a server that serves anything else is refused. */
static void on_hello_reply(ps_client *c, shard_conn *sc, const ps_msg *m) {
    const ps_HelloReply *r = &m->env.hello_reply;
    if (r->num_shards != c->n_shards || r->shard != sc->index) {
        ps_error_set(&c->hello_err, PS_MISMATCH,
                     "server %s says it is shard %u of %u; this job has it as shard %u of %u",
                     sc->addr, r->shard, r->num_shards, sc->index, c->n_shards);
        return;
    }
    const ps_job_config *job = c->job;
    for (size_t i = 0; i < job->num_tables || i < r->tables_count; i++) {
        if (i >= r->tables_count) {
            ps_error_set(&c->hello_err, PS_MISMATCH,
                         "server %u (%s) does not serve table %zu \"%s\" of %s (it has %u tables)",
                         sc->index, sc->addr, i, job->tables[i].name, job->file, r->tables_count);
            return;
        }
        ps_table_spec t;
        ps_wire_table_from_pb(&r->tables[i], &t);
        if (i >= job->num_tables) {
            ps_error_set(&c->hello_err, PS_MISMATCH,
                         "server %u (%s) serves table %zu \"%s\", which %s does not have",
                         sc->index, sc->addr, i, t.name, job->file);
            return;
        }
        const char *diff = table_diff(&t, &job->tables[i]);
        if (diff != NULL) {
            ps_error_set(&c->hello_err, PS_MISMATCH,
                         "server %u (%s): table %zu is \"%s\" (dim %u), %s has \"%s\" (dim %u): "
                         "%s differs; servers and workers must read the same job file",
                         sc->index, sc->addr, i, t.name, t.dim, job->file, job->tables[i].name,
                         job->tables[i].dim, diff);
            return;
        }
    }
    sc->start_clock = r->clock;
    retire_segment(sc); /* a reconnect's old segment */
    if (r->shm_name[0] != '\0') {
        ps_error e = {0};
        ps_status st = ps_shm_attach(r->shm_name, c->opt.shm_bytes, &sc->shm, &e);
        if (st != PS_OK) /* another host (or /dev/shm): TCP carries everything, as without */
            ps_log(&c->opt.log, st == PS_NOT_FOUND ? PS_LOG_DEBUG : PS_LOG_WARN,
                   "server %u (%s): %s; staying on TCP", sc->index, sc->addr, e.msg);
    }
    /* the staging area: the segment's last shm_stage_bytes, from a 64-byte boundary; none when
     * 0 or with no segment */
    const size_t stage = c->opt.shm_stage_bytes;
    sc->stage_at = stage == 0 || stage > sc->shm.len ? sc->shm.len
                                                     : (sc->shm.len - stage) & ~(size_t)63;
    c->hello_ok = true;
}

/* One Values part into the op's out: rows [first_row, first_row + k) of what w is owed. */
static void take_values(ps_client *c, shard_conn *sc, owed *w, const ps_msg *m) {
    op_slot *o = &c->ops[w->op];
    if (!o->in_use || o->gen != w->op_gen || o->st != PS_OK) return; /* abandoned or failed */
    const size_t rb = o->dim * sizeof(float);
    ps_bytes vals = m->values;
    if (m->env.values.in_shm) { /* every row at once, where the request said */
        if (!w->in_shm || m->env.values.first_row != 0 || m->env.values.more || w->got != 0 ||
            vals.len != 0 || sc->shm.p == NULL) {
            char msg[400];
            snprintf(msg, sizeof(msg), "server %u: values in shared memory for a request that "
                     "did not ask for them there", sc->index);
            op_fail(o, PS_PROTO, msg);
            return;
        }
        vals = (ps_bytes){sc->shm.p + w->shm_off, w->n_pull * rb};
    }
    const size_t len = vals.len;
    if (rb == 0 || (o->out == NULL && len > 0)) { /* no pull asked for (Stats, Push) */
        char msg[400];
        snprintf(msg, sizeof(msg), "server %u: values in reply to a request without a pull",
                 sc->index);
        op_fail(o, PS_PROTO, msg);
        return;
    }
    if (m->env.values.first_row != w->got || len % rb != 0 || len / rb > w->n_pull - w->got) {
        char msg[400];
        snprintf(msg, sizeof(msg),
                 "server %u: values part of %zu bytes at row %llu; %zu of %zu rows x dim %u "
                 "received",
                 sc->index, len, (unsigned long long)m->env.values.first_row, w->got, w->n_pull,
                 o->dim);
        op_fail(o, PS_PROTO, msg);
        return;
    }
    const size_t k = len / rb;
    if (sc->redirected) {
        /* already in place: see maybe_redirect */
    } else if (o->view != NULL && m->env.values.in_shm && w->base == 0 &&
               w->n_pull == o->view_rows) {
        *o->view = (float *)(void *)vals.p; /* every row, in order, in place: no copy */
    } else if (w->pos == NULL) {
        if (len) memcpy(o->out + (w->base + w->got) * o->dim, vals.p, len);
    } else {
        for (size_t i = 0; i < k; i++)
            memcpy(o->out + (size_t)w->pos[w->got + i] * o->dim, vals.p + i * rb, rb);
    }
    w->got += k;
}

/* A Rows reply: rows for w's keys (at w->pos) or, for a scan (no pull keys), the next rows in
 * order with their keys. Sizes are checked against what was asked, never trusted. */
static void take_rows(ps_client *c, shard_conn *sc, const owed *w, const ps_msg *m) {
    op_slot *o = &c->ops[w->op];
    if (o->st != PS_OK) return;
    const bool scan = w->n_pull == 0;
    const size_t n = scan ? m->keys.len / 8 : w->n_pull;
    const bool has_steps = m->steps.len > 0;
    if ((scan && (m->keys.len % 8 != 0 || o->got + n > o->cap)) ||
        m->values.len != n * o->dim * 4 || m->acc.len != n * o->state_len * 4 ||
        (has_steps && m->steps.len != n * 4)) {
        char msg[400];
        snprintf(msg, sizeof(msg), "server %u: Rows reply of the wrong size (%zu keys, %zu/%zu/%zu "
                 "bytes)", sc->index, m->keys.len / 8, m->values.len, m->acc.len, m->steps.len);
        op_fail(o, PS_PROTO, msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const size_t at = scan ? o->got + i : w->pos ? w->pos[i] : w->base + i;
        memcpy(o->out + at * o->dim, m->values.p + i * o->dim * 4, o->dim * 4);
        memcpy(o->acc + at * o->state_len, m->acc.p + i * o->state_len * 4, o->state_len * 4);
        if (o->steps != NULL) {
            uint32_t st = 0;
            if (has_steps) memcpy(&st, m->steps.p + i * 4, 4);
            o->steps[at] = st;
        }
        if (scan) memcpy(&o->keys[at], m->keys.p + i * 8, 8);
    }
    if (scan) o->got += n, o->done = m->env.rows.done;
}

/* A server's Error code as a status. */
static ps_status status_of(ps_ErrorCode code) {
    switch (code) {
    case ps_ErrorCode_ERR_TOO_LARGE: return PS_TOO_LARGE;
    case ps_ErrorCode_ERR_INVALID_ARG: return PS_INVALID_ARG;
    case ps_ErrorCode_ERR_MISMATCH: return PS_MISMATCH;
    case ps_ErrorCode_ERR_TIMEOUT: return PS_TIMEOUT;
    case ps_ErrorCode_ERR_INTERNAL: return PS_NOMEM;
    default: return PS_PROTO;
    }
}

static void handle_reply(shard_conn *sc, const ps_msg *m) {
    ps_client *c = sc->cl;
    char msg[400];
    if (sc->q_len == 0 || sc->q[sc->q_head].request_id != m->env.request_id) {
        if (m->env.which_body == ps_Envelope_error_tag) {
            /* not a reply to a request: the server refuses the connection or closes it */
            snprintf(msg, sizeof(msg), "server %u (%s): %s", sc->index, sc->addr,
                     m->env.error.message);
            const ps_status st = status_of(m->env.error.code);
            ps_error_set(&c->hello_err, st, "%s", msg);
            break_client(c, st, msg);
            return;
        }
        snprintf(msg, sizeof(msg), "server %u (%s): reply %llu out of order", sc->index, sc->addr,
                 (unsigned long long)m->env.request_id);
        break_client(c, PS_PROTO, msg);
        return;
    }
    owed *head = &sc->q[sc->q_head];
    if (m->env.which_body == ps_Envelope_values_tag && m->env.values.more) {
        take_values(c, sc, head, m); /* a part: the reply goes on */
        return;
    }
    owed w = *head;
    sc->q_head = (sc->q_head + 1) % sc->q_cap, sc->q_len--;
    op_slot *o = &c->ops[w.op];
    bool live = o->in_use && o->gen == w.op_gen;
    switch (m->env.which_body) {
    case ps_Envelope_values_tag:
        take_values(c, sc, &w, m);
        if (live && o->st == PS_OK && w.got != w.n_pull) {
            snprintf(msg, sizeof(msg), "server %u: %zu rows of values for %zu keys", sc->index,
                     w.got, w.n_pull);
            op_fail(o, PS_PROTO, msg);
        }
        break;
    case ps_Envelope_ack_tag:
        break;
    case ps_Envelope_rows_tag:
        if (live) take_rows(c, sc, &w, m);
        break;
    case ps_Envelope_stats_reply_tag:
        for (size_t i = 0; live && o->stats_out != NULL && i < c->n_tables &&
                           i < m->env.stats_reply.tables_count; i++) {
            const ps_TableStats *t = &m->env.stats_reply.tables[i];
            ps_table_stats *d = &o->stats_out[sc->index * c->n_tables + i];
            snprintf(d->name, sizeof(d->name), "%s", t->name);
            d->rows = t->rows, d->bytes = t->bytes, d->row_bytes = t->row_bytes;
            d->admitted = t->admitted, d->pending = t->pending, d->evicted = t->evicted;
            d->refused_gradients = t->refused_gradients;
        }
        if (live && o->stats_table < m->env.stats_reply.tables_count) {
            o->rows += m->env.stats_reply.tables[o->stats_table].rows;
            o->bytes += m->env.stats_reply.tables[o->stats_table].bytes;
        }
        break;
    case ps_Envelope_error_tag:
        snprintf(msg, sizeof(msg), "server %u (%s): %s", sc->index, sc->addr,
                 m->env.error.message);
        if (live) {
            ps_status st = status_of(m->env.error.code);
            op_fail(o, st, msg);
        }
        break;
    default:
        if (live) op_fail(o, PS_PROTO, "unexpected reply type");
        break;
    }
    free(w.pos);
    if (live && o->pending) o->pending--;
}

static ps_status frame_cb(void *ud, const uint8_t *payload, size_t len) {
    shard_conn *sc = ud;
    ps_client *c = sc->cl;
    ps_msg m;
    ps_error err;
    if (ps_wire_decode(payload, len, &m, &err) != PS_OK) {
        sc->redirected = false;
        char msg[400];
        snprintf(msg, sizeof(msg), "server %u (%s): %s", sc->index, sc->addr, err.msg);
        break_client(c, PS_PROTO, msg);
        return PS_PROTO;
    }
    if (m.env.which_body == ps_Envelope_challenge_tag && !sc->challenged &&
        m.env.challenge.nonce.size == PS_AUTH_NONCE_BYTES) {
        memcpy(sc->nonce, m.env.challenge.nonce.bytes, PS_AUTH_NONCE_BYTES);
        sc->challenged = true;
    } else if (m.env.which_body == ps_Envelope_hello_reply_tag) {
        on_hello_reply(c, sc, &m);
    } else {
        handle_reply(sc, &m);
    }
    sc->redirected = false;
    return c->broken ? PS_CLOSED : PS_OK;
}

/* When the big frame being read is a Values part for the request at the head of the queue, and
 * its rows go to consecutive rows of the caller's array, the rest of the frame is read straight
 * there instead of being copied out of the frame buffer afterwards (64 MB for a 1M x 16 pull).
 * Reads the Envelope's first bytes by hand: request_id, values { first_row, more, values }.
 * (The op cannot go away mid-frame: it is waited for until its last reply, or the client breaks
 * and reads stop.) */
static void maybe_redirect(shard_conn *sc) {
    size_t have, total;
    const uint8_t *p = ps_framer_partial(sc->framer, &have, &total);
    if (p == NULL || sc->redirected || sc->q_len == 0 || total < PS_FRAME_DIRECT_MIN) return;
    /* the prefix may end anywhere: a field cut short just fails to decode, and we try again */
    pb_istream_t in = pb_istream_from_buffer(p, have);
    pb_wire_type_t wt;
    uint32_t tag;
    bool eof;
    uint64_t id, len, first_row = 0, more = 0, vlen;
#define FIELD(number, type) (pb_decode_tag(&in, &wt, &tag, &eof) && tag == (number) && wt == (type))
    if (!FIELD(ps_Envelope_request_id_tag, PB_WT_VARINT) || !pb_decode_varint(&in, &id) ||
        !FIELD(ps_Envelope_values_tag, PB_WT_STRING) || !pb_decode_varint(&in, &len) ||
        len != total - (have - in.bytes_left))
        return;
#undef FIELD
    for (;;) { /* Values: first_row and more (each absent when 0), then values */
        if (!pb_decode_tag(&in, &wt, &tag, &eof)) return;
        if (wt == PB_WT_VARINT && tag == ps_Values_first_row_tag &&
            pb_decode_varint(&in, &first_row))
            continue;
        if (wt == PB_WT_VARINT && tag == ps_Values_more_tag && pb_decode_varint(&in, &more))
            continue;
        if (wt == PB_WT_STRING && tag == ps_Values_values_tag && pb_decode_varint(&in, &vlen))
            break;
        return;
    }
    const size_t at = have - in.bytes_left;
    const owed *w = &sc->q[sc->q_head];
    const op_slot *o = &sc->cl->ops[w->op];
    const size_t rb = o->dim * sizeof(float);
    if (id != w->request_id || !o->in_use || o->gen != w->op_gen || o->st != PS_OK ||
        o->out == NULL || w->pos != NULL || at + vlen != total || rb == 0 || vlen % rb != 0 ||
        first_row != w->got || vlen / rb > w->n_pull - w->got)
        return; /* anything unusual takes the ordinary path, which reports it */
    ps_framer_redirect(sc->framer, at, (uint8_t *)(o->out + (w->base + first_row) * o->dim));
    sc->redirected = true;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    shard_conn *sc = (shard_conn *)h;
    if (sc->tls == NULL) { /* with TLS the socket's bytes are ciphertext: never read into place */
        maybe_redirect(sc);
        uint8_t *direct;
        size_t n = ps_framer_direct(sc->framer, &direct); /* the rest of a big reply, in place */
        if (n > 0) {
            *buf = uv_buf_init((char *)direct, (unsigned)n);
            return;
        }
    }
    if (sc->rbuf == NULL) sc->rbuf = malloc(READ_CHUNK);
    *buf = uv_buf_init(sc->rbuf, sc->rbuf ? READ_CHUNK : 0);
}

/* cluster.tls: the plaintext of one record, into the framer. */
static ps_status tls_plain_cb(void *ud, const uint8_t *p, size_t n, ps_error *err) {
    shard_conn *sc = ud;
    return ps_framer_feed(sc->framer, p, n, frame_cb, sc, err);
}

/* cluster.tls: ciphertext from the socket. A TLS failure breaks the client (after the alert it
 * may owe the server is on its way); the handshake's answers are written at once. */
static void tls_read(shard_conn *sc, const uint8_t *p, size_t n) {
    ps_client *c = sc->cl;
    ps_error err = {0}, send_err = {0};
    ps_status st = ps_tls_feed(sc->tls, p, n, tls_plain_cb, sc, &err);
    ps_status sent = c->broken ? PS_OK : tls_send(sc, &send_err);
    if (ps_tls_failed(sc->tls)) {
        if (!c->hello_ok && c->hello_err.code == PS_OK) c->hello_err = err;
        break_client(c, err.code, ps_tls_error(sc->tls));
    } else if (st != PS_OK && st != PS_CLOSED && st != PS_PROTO) {
        char msg[400];
        snprintf(msg, sizeof(msg), "server %u (%s): %s", sc->index, sc->addr, err.msg);
        break_client(c, st, msg);
    } else if (sent != PS_OK) {
        break_client(c, sent, send_err.msg);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    shard_conn *sc = (shard_conn *)s;
    ps_client *c = sc->cl;
    char msg[400];
    if (nread < 0) {
        snprintf(msg, sizeof(msg), "server %u (%s) closed the connection%s%s", sc->index, sc->addr,
                 nread == UV_EOF ? "" : ": ", nread == UV_EOF ? "" : uv_strerror((int)nread));
        if (!c->hello_ok && c->hello_err.code == PS_OK)
            ps_error_set(&c->hello_err, PS_CLOSED, "%s", msg);
        break_client(c, PS_CLOSED, msg);
        return;
    }
    if (nread == 0 || c->broken) return;
    if (sc->tls != NULL) {
        tls_read(sc, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    ps_error err = {0};
    ps_status st = buf->base == sc->rbuf
                       ? ps_framer_feed(sc->framer, (const uint8_t *)buf->base, (size_t)nread,
                                        frame_cb, sc, &err)
                       : ps_framer_commit(sc->framer, (size_t)nread, frame_cb, sc);
    if (st != PS_OK && st != PS_CLOSED && st != PS_PROTO) {
        snprintf(msg, sizeof(msg), "server %u (%s): %s", sc->index, sc->addr, err.msg);
        break_client(c, st, msg);
    }
}

/* --- waiting ------------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) { ((ps_client *)t->data)->timer_fired = true; }

/* Runs the loop until done(arg) or timeout_ms pass. Returns false on timeout. */
static bool run_until(ps_client *c, bool (*done)(ps_client *, void *), void *arg,
                      uint64_t timeout_ms) {
    c->timer_fired = false;
    ps_client_flush(c, NULL); /* a failed write breaks the client; done() then sees it */
    /* the loop's clock stands still between calls: without this, a client idle for longer than
     * the timeout would start a timer that is already due */
    uv_update_time(&c->loop);
    uv_timer_start(&c->timer, on_timer, timeout_ms, 0);
    if (c->job->busy_poll_us > 0) { /* poll without sleeping first: see busy_poll_us */
        const uint64_t until = uv_hrtime() + (uint64_t)c->job->busy_poll_us * 1000;
        while (!done(c, arg) && uv_hrtime() < until) uv_run(&c->loop, UV_RUN_NOWAIT);
    }
    while (!done(c, arg) && !c->timer_fired) uv_run(&c->loop, UV_RUN_ONCE);
    uv_timer_stop(&c->timer);
    return done(c, arg);
}

static bool connect_done(ps_client *c, void *arg) {
    (void)c;
    return ((shard_conn *)arg)->connect_done;
}

static bool challenge_done(ps_client *c, void *arg) {
    const shard_conn *sc = arg;
    return sc->challenged || c->hello_err.code != PS_OK || c->broken;
}

static bool tls_done(ps_client *c, void *arg) {
    const shard_conn *sc = arg;
    return ps_tls_ready(sc->tls) || ps_tls_failed(sc->tls) || c->broken;
}

static bool hello_done(ps_client *c, void *arg) {
    (void)arg;
    return c->hello_ok || c->hello_err.code != PS_OK || c->broken;
}

static void on_connect(uv_connect_t *req, int status) {
    shard_conn *sc = req->data;
    sc->connect_status = status;
    sc->connect_done = true;
}

/* A name lookup run on libuv's threadpool so that it keeps the connect deadline. A lookup that
 * outlives its wait is orphaned: its callback frees it (getaddrinfo itself cannot be stopped). */
typedef struct {
    uv_getaddrinfo_t req;
    bool done, orphan;
    int status;
    struct addrinfo *res;
} lookup;

static void on_resolved(uv_getaddrinfo_t *r, int status, struct addrinfo *res) {
    lookup *q = r->data;
    if (q->orphan) {
        uv_freeaddrinfo(res);
        free(q);
        return;
    }
    q->done = true, q->status = status, q->res = res;
}

static bool lookup_done(ps_client *c, void *arg) {
    (void)c;
    return ((lookup *)arg)->done;
}

/* host -> its addresses (caller frees with uv_freeaddrinfo), within timeout_ms. */
static int resolve(ps_client *c, const char *host, uint16_t port, uint64_t timeout_ms,
                   struct addrinfo **out) {
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    /* An IP literal needs no lookup: without a trip through the thread pool a loaded machine
     * cannot make it outlast a short deadline (and call 127.0.0.1 unresolvable). */
    struct addrinfo numeric = hints;
    numeric.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, service, &numeric, out) == 0) return 0;
    lookup *q = calloc(1, sizeof(*q));
    if (q == NULL) return UV_ENOMEM;
    q->req.data = q;
    int rc = uv_getaddrinfo(&c->loop, &q->req, on_resolved, host, service, &hints);
    if (rc != 0) {
        free(q);
        return rc;
    }
    if (!run_until(c, lookup_done, q, timeout_ms)) {
        uv_cancel((uv_req_t *)&q->req); /* the callback still runs, with UV_EAI_CANCELED */
        q->orphan = true;
        return UV_ETIMEDOUT;
    }
    rc = q->status;
    *out = q->res;
    free(q);
    return rc;
}

/* One connection attempt: resolves the host (a Docker or Kubernetes name) each time, then tries
 * its addresses in order ("localhost" may give ::1 first to a server bound to 127.0.0.1).
 * *resolving: the failure was the lookup. */
static int try_connect(ps_client *c, shard_conn *sc, uint64_t timeout_ms, bool *resolving) {
    char host[256];
    uint16_t port;
    if (ps_parse_hostport(sc->addr, host, sizeof(host), &port, NULL) != PS_OK) return UV_EINVAL;
    uv_update_time(&c->loop);
    const uint64_t until = uv_now(&c->loop) + timeout_ms;
    struct addrinfo *res = NULL;
    *resolving = true;
    int rc = resolve(c, host, port, timeout_ms, &res);
    if (rc != 0) return rc;
    *resolving = false;
    rc = UV_EADDRNOTAVAIL;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        uv_update_time(&c->loop);
        const uint64_t now = uv_now(&c->loop);
        if (now >= until) {
            rc = UV_ETIMEDOUT;
            break;
        }
        uv_tcp_init(&c->loop, &sc->tcp);
        uv_connect_t req;
        req.data = sc;
        sc->connect_done = false;
        rc = uv_tcp_connect(&req, &sc->tcp, ai->ai_addr, on_connect);
        const bool issued = rc == 0; /* else no callback will come */
        if (issued) {
            if (!run_until(c, connect_done, sc, until - now)) rc = UV_ETIMEDOUT;
            else rc = sc->connect_status;
        }
        if (rc == 0) break;
        uv_close((uv_handle_t *)&sc->tcp, close_cb_noop);
        while (issued && !sc->connect_done) uv_run(&c->loop, UV_RUN_ONCE); /* cancel lands */
        uv_run(&c->loop, UV_RUN_NOWAIT);
    }
    uv_freeaddrinfo(res);
    return rc;
}

/* Connects, retrying refused connections with backoff until deadline (uv_now ms), which is
 * budget_ms from the start of the wait that key names; then Challenge, TLS, Hello. */
static bool stopping(const ps_client *c) { return c->opt.stop != NULL && *c->opt.stop; }

/* Sleeps ms, in slices, returning early once a signal asked the process to stop. */
static void nap(const ps_client *c, uint64_t ms) {
    for (uint64_t left = ms; left > 0 && !stopping(c);) {
        const uint64_t slice = left < 50 ? left : 50;
        uv_sleep((unsigned)slice);
        left -= slice;
    }
}

static ps_status connect_shard(ps_client *c, shard_conn *sc, uint64_t deadline, uint32_t budget_ms,
                               const char *key, ps_error *err) {
    uint64_t backoff = 50;
    int rc;
    bool resolving = false;
    for (;;) {
        uint64_t now = uv_now(&c->loop);
        uint64_t left = deadline > now ? deadline - now : 0;
        rc = try_connect(c, sc, left > 5000 ? 5000 : (left ? left : 1), &resolving);
        if (rc == 0) break;
        uv_update_time(&c->loop);
        now = uv_now(&c->loop);
        if (now >= deadline && resolving) {
            char host[256];
            uint16_t port;
            ps_parse_hostport(sc->addr, host, sizeof(host), &port, NULL);
            return ps_error_set(err, PS_TIMEOUT,
                                "cannot resolve \"%s\" (server %u at %s): %s (gave up after %u "
                                "ms, %s)",
                                host, sc->index, sc->addr, uv_strerror(rc), budget_ms, key);
        }
        if (now >= deadline)
            return ps_error_set(err, PS_TIMEOUT,
                                "cannot reach server %u at %s: %s (gave up after %u ms, %s)",
                                sc->index, sc->addr, uv_strerror(rc), budget_ms, key);
        ps_log(&c->opt.log, PS_LOG_DEBUG, "server %u at %s: %s%s; retrying in %llu ms", sc->index,
               sc->addr, resolving ? "lookup: " : "", uv_strerror(rc),
               (unsigned long long)backoff);
        nap(c, backoff < deadline - now ? backoff : deadline - now);
        if (stopping(c))
            return ps_error_set(err, PS_CLOSED, "interrupted while connecting to server %u (%s)",
                                sc->index, sc->addr);
        uv_update_time(&c->loop);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
    uv_tcp_nodelay(&sc->tcp, 1);
    sc->open = true;
    sc->challenged = false;
    c->hello_ok = false;
    c->hello_err = (ps_error){0};
    if (c->tls != NULL) { /* the ClientHello; the certificate must name the host we dialled */
        char host[256];
        uint16_t port;
        ps_status st = ps_parse_hostport(sc->addr, host, sizeof(host), &port, err);
        if (st == PS_OK) st = ps_tls_create(c->tls, sc->addr, host, &sc->tls, err);
        if (st == PS_OK) st = tls_send(sc, err);
        if (st != PS_OK) return st;
    }
    uv_read_start((uv_stream_t *)&sc->tcp, on_alloc, on_read);

    if (sc->tls != NULL) {
        if (!run_until(c, tls_done, sc, c->job->request_timeout_ms))
            return ps_error_set(err, PS_TIMEOUT,
                                "TLS handshake with %s: no answer in %u ms "
                                "(cluster.request_timeout_ms)",
                                sc->addr, c->job->request_timeout_ms);
        if (ps_tls_failed(sc->tls))
            return ps_error_set(err, PS_MISMATCH, "%s", ps_tls_error(sc->tls));
        if (!ps_tls_ready(sc->tls)) /* closed on us: a refusal at accept, or not a ps server */
            return ps_error_set(err, PS_CLOSED, "TLS handshake with %s failed: %s", sc->addr,
                                c->broken_msg);
    }

    /* the server's Challenge (or its Error: too many connections, an address locked out) */
    if (!run_until(c, challenge_done, sc, c->job->request_timeout_ms))
        return ps_error_set(err, PS_TIMEOUT, "server %u at %s: no Challenge in %u ms", sc->index,
                            sc->addr, c->job->request_timeout_ms);
    if (!sc->challenged) {
        *err = c->hello_err;
        if (err->code == PS_OK) ps_error_set(err, PS_CLOSED, "%s", c->broken_msg);
        return err->code;
    }

    /* Hello, proving the token without sending it (auth.h) */
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = ++c->next_id;
    env.which_body = ps_Envelope_hello_tag;
    env.hello.protocol_version = PS_PROTOCOL_VERSION;
    snprintf(env.hello.job_id, sizeof(env.hello.job_id), "%s", c->job->job_id);
    env.hello.role = c->opt.admin ? ps_Role_ROLE_ADMIN : ps_Role_ROLE_WORKER;
    env.hello.rank = c->opt.rank;
    env.hello.clock = c->clock;
    env.hello.session = c->session;
    if (c->job->shared_memory && !c->opt.admin) env.hello.shm_bytes = c->opt.shm_bytes;
    env.hello.mac.size = PS_AUTH_MAC_BYTES;
    ps_auth_mac(c->job->token, sc->nonce, env.hello.job_id, (uint32_t)env.hello.role,
                env.hello.rank, env.hello.mac.bytes);
    uint8_t *frame;
    size_t len;
    if (ps_wire_encode(&env, NULL, NULL, NULL, NULL, NULL, &frame, &len, err) != PS_OK ||
        send_frame(sc, frame, len, err) != PS_OK)
        return err->code;
    if (!run_until(c, hello_done, NULL, c->job->request_timeout_ms))
        return ps_error_set(err, PS_TIMEOUT, "server %u at %s: no reply to Hello in %u ms",
                            sc->index, sc->addr, c->job->request_timeout_ms);
    if (!c->hello_ok) {
        *err = c->hello_err;
        if (err->code == PS_OK) ps_error_set(err, PS_CLOSED, "%s", c->broken_msg);
        return err->code;
    }
    return PS_OK;
}

static ps_status to_every_shard(ps_client *c, ps_Envelope *env, uint32_t idx, ps_error *err);

/* sync/ssp workers, after every shard said Hello: the shards may name different clocks to go on
 * from (one restarted from a checkpoint, one where the rank rejoins after being dropped). The
 * worker takes the largest and moves every shard there (Clock with adopt), so that its pushes
 * carry one clock that every shard expects. */
static ps_status settle_clock(ps_client *c, ps_error *err) {
    if (c->opt.admin || c->job->consistency == PS_ASYNC) return PS_OK;
    uint64_t top = 0;
    bool differ = false;
    for (uint32_t s = 0; s < c->n_shards; s++) {
        if (s > 0 && c->shards[s].start_clock != top) differ = true;
        if (c->shards[s].start_clock > top) top = c->shards[s].start_clock;
    }
    if (top != c->clock)
        ps_log(&c->opt.log, PS_LOG_WARN, "rank %u goes on at step %llu (it was at %llu): it was "
               "dropped from the barrier and rejoins where the others are", c->opt.rank,
               (unsigned long long)top, (unsigned long long)c->clock);
    c->clock = top;
    if (!differ) return PS_OK;
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, NULL, 0, &idx, err) != PS_OK) return err->code;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_clock_tag;
    env.clock.clock = top;
    env.clock.adopt = true;
    if (to_every_shard(c, &env, idx, err) != PS_OK && c->ops[idx].pending == 0) {
        c->ops[idx].in_use = false;
        return err->code;
    }
    return ps_client_wait(c, op_handle(c, idx), err);
}

ps_status ps_client_create(const ps_client_options *opt, ps_client **out, ps_error *err) {
    if (!ps_auth_init()) return ps_error_set(err, PS_IO, "client: no random source (libsodium)");
    if (opt->shm_stage_bytes > opt->shm_bytes)
        return ps_error_set(err, PS_INVALID_ARG,
                            "client: shm_stage_bytes (%zu) is more than shm_bytes (%zu)",
                            opt->shm_stage_bytes, opt->shm_bytes);
    ps_client *c = calloc(1, sizeof(*c));
    if (c == NULL) return ps_error_set(err, PS_NOMEM, "client: out of memory");
    c->opt = *opt;
    c->job = opt->job;
    c->clock = opt->clock;
    uint8_t rnd[PS_AUTH_NONCE_BYTES];
    ps_auth_nonce(rnd);
    memcpy(&c->session, rnd, sizeof(c->session));
    if (c->session == 0) c->session = 1; /* 0 means "none" on the wire */
    if (c->job->tls.on) {
        ps_status st = ps_config_tls_files(c->job, false, err);
        if (st == PS_OK && ps_tls_client_ctx(c->job->tls.ca, &c->tls, err) != PS_OK)
            st = ps_error_prefix(err, PS_CONFIG, "%s: cluster.tls", c->job->file);
        if (st != PS_OK) {
            free(c);
            return st;
        }
    }
    c->n_shards = opt->job->num_servers;
    c->n_tables = opt->job->num_tables; /* the servers must serve exactly these (on_hello_reply) */
    memcpy(c->tables, opt->job->tables, c->n_tables * sizeof(c->tables[0]));
    if (uv_loop_init(&c->loop) != 0) {
        ps_tls_ctx_destroy(c->tls);
        free(c);
        return ps_error_set(err, PS_IO, "client: uv_loop_init failed");
    }
    uv_timer_init(&c->loop, &c->timer);
    c->timer.data = c;
    c->shards = calloc(c->n_shards, sizeof(*c->shards));
    if (c->shards == NULL) {
        ps_client_destroy(c);
        return ps_error_set(err, PS_NOMEM, "client: out of memory");
    }
    uv_update_time(&c->loop);
    uint64_t deadline = uv_now(&c->loop) + c->job->connect_timeout_ms;
    for (uint32_t s = 0; s < c->n_shards; s++) {
        shard_conn *sc = &c->shards[s];
        sc->cl = c;
        sc->index = s;
        snprintf(sc->addr, sizeof(sc->addr), "%s",
                 opt->servers ? opt->servers[s] : c->job->servers[s]);
        ps_status st = ps_framer_create(c->job->max_frame_bytes, &sc->framer, err);
        if (st == PS_OK)
            st = connect_shard(c, sc, deadline, c->job->connect_timeout_ms,
                               "cluster.connect_timeout_ms", err);
        if (st != PS_OK) {
            ps_client_destroy(c);
            return st;
        }
    }
    if (settle_clock(c, err) != PS_OK) {
        ps_client_destroy(c);
        return err->code;
    }
    *out = c;
    return PS_OK;
}

static void shard_closed(uv_handle_t *h) { ((shard_conn *)h)->cl->closing--; }

/* Closes every shard connection and forgets what was in flight on them: the ops fail, queued
 * frames are dropped, and each shard is left ready for connect_shard (fresh framer, no TLS
 * session). */
static ps_status drop_connections(ps_client *c, ps_error *err) {
    if (!c->broken) break_client(c, PS_CLOSED, "reconnecting");
    for (uint32_t s = 0; s < c->n_shards; s++) {
        shard_conn *sc = &c->shards[s];
        drop_cork(sc);
        sc->open = false;
        if (sc->tcp.loop != NULL && !uv_is_closing((uv_handle_t *)&sc->tcp)) {
            uv_read_stop((uv_stream_t *)&sc->tcp);
            c->closing++;
            uv_close((uv_handle_t *)&sc->tcp, shard_closed);
        }
    }
    while (c->closing > 0) uv_run(&c->loop, UV_RUN_ONCE);
    for (size_t i = 0; i < c->ops_cap; i++) c->ops[i].in_use = false;
    for (uint32_t s = 0; s < c->n_shards; s++) {
        shard_conn *sc = &c->shards[s];
        ps_tls_destroy(sc->tls);
        sc->tls = NULL;
        ps_framer_destroy(sc->framer);
        sc->framer = NULL;
        retire_segment(sc);
        sc->redirected = sc->challenged = false;
        sc->q_head = sc->q_len = 0, sc->part = 0, sc->start_clock = 0;
        if (ps_framer_create(c->job->max_frame_bytes, &sc->framer, err) != PS_OK)
            return err->code;
    }
    c->broken = false;
    c->broken_msg[0] = '\0';
    return PS_OK;
}

ps_status ps_client_recover(ps_client *c, uint64_t clock, ps_error *err) {
    const uint32_t budget = c->job->recover_timeout_ms;
    if (budget == 0)
        return ps_error_set(err, PS_CLOSED, "%s (cluster.recover_timeout_ms is 0: no reconnect)",
                            c->broken_msg[0] ? c->broken_msg : "a server went away");
    uv_update_time(&c->loop);
    const uint64_t deadline = uv_now(&c->loop) + budget;
    uint64_t backoff = 50;
    ps_error last = {0};
    for (unsigned attempt = 1;; attempt++) {
        if (drop_connections(c, err) != PS_OK) return err->code;
        c->clock = clock;
        ps_status st = PS_OK;
        for (uint32_t s = 0; s < c->n_shards && st == PS_OK; s++)
            st = connect_shard(c, &c->shards[s], deadline, budget, "cluster.recover_timeout_ms",
                               &last);
        if (st == PS_OK) st = settle_clock(c, &last);
        if (st == PS_OK) {
            ps_log(&c->opt.log, PS_LOG_INFO, "reconnected to %u server%s (attempt %u), at step %llu",
                   c->n_shards, c->n_shards == 1 ? "" : "s", attempt,
                   (unsigned long long)c->clock);
            return PS_OK;
        }
        uv_update_time(&c->loop);
        const uint64_t now = uv_now(&c->loop);
        if (now >= deadline) {
            drop_connections(c, NULL);
            c->broken = true;
            snprintf(c->broken_msg, sizeof(c->broken_msg), "%s", last.msg);
            if (strstr(last.msg, "cluster.recover_timeout_ms") != NULL) /* says it already */
                return ps_error_set(err, last.code == PS_OK ? PS_TIMEOUT : last.code, "%s",
                                    last.msg);
            return ps_error_set(err, last.code == PS_OK ? PS_TIMEOUT : last.code,
                                "%s (gave up reconnecting after %u ms, "
                                "cluster.recover_timeout_ms)", last.msg, budget);
        }
        if (stopping(c)) {
            drop_connections(c, NULL);
            c->broken = true;
            snprintf(c->broken_msg, sizeof(c->broken_msg), "interrupted");
            return ps_error_set(err, PS_CLOSED, "interrupted while reconnecting: %s", last.msg);
        }
        ps_log(&c->opt.log, PS_LOG_DEBUG, "reconnect attempt %u: %s; again in %llu ms", attempt,
               last.msg, (unsigned long long)backoff);
        nap(c, backoff < deadline - now ? backoff : deadline - now);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
}

void ps_client_destroy(ps_client *c) {
    if (c == NULL) return;
    for (uint32_t s = 0; c->shards && s < c->n_shards; s++) {
        shard_conn *sc = &c->shards[s];
        for (size_t i = 0; i < sc->q_len; i++) free(sc->q[(sc->q_head + i) % sc->q_cap].pos);
        if (sc->open || uv_is_active((uv_handle_t *)&sc->tcp) || sc->tcp.loop != NULL)
            if (!uv_is_closing((uv_handle_t *)&sc->tcp) && sc->tcp.loop != NULL)
                uv_close((uv_handle_t *)&sc->tcp, close_cb_noop);
    }
    uv_close((uv_handle_t *)&c->timer, close_cb_noop);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    for (uint32_t s = 0; c->shards && s < c->n_shards; s++) {
        ps_framer_destroy(c->shards[s].framer);
        ps_tls_destroy(c->shards[s].tls);
        ps_shm_close(&c->shards[s].shm);
        ps_shm_close(&c->shards[s].retired);
        drop_cork(&c->shards[s]);
        free(c->shards[s].cork);
        free(c->shards[s].rbuf);
        free(c->shards[s].q);
    }
    free(c->shards);
    ps_frame_cache_clear(&c->fcache);
    ps_tls_ctx_destroy(c->tls);
    free(c->ops);
    free(c);
}

uint32_t ps_client_num_shards(const ps_client *c) { return c->n_shards; }

size_t ps_client_shared_memory(const ps_client *c, uint32_t shard) {
    return shard < c->n_shards ? c->shards[shard].shm.len : 0;
}

uint64_t ps_client_shm_requests(const ps_client *c) { return c->shm_requests; }

uint64_t ps_client_staged_pushes(const ps_client *c) { return c->staged_pushes; }

float *ps_client_stage(ps_client *c, uint32_t table, size_t n) {
    if (c->broken || c->n_shards != 1 || table >= c->n_tables || n == 0) return NULL;
    shard_conn *sc = &c->shards[0];
    if (sc->shm.p == NULL) return NULL;
    if (sc->q_len == 0 && sc->stage_out == 0) sc->stage_used = 0; /* every staged push answered */
    const size_t dim = c->tables[table].dim;
    if (n > (sc->shm.len - sc->stage_at) / sizeof(float) / dim) return NULL;
    const size_t len = n * dim * sizeof(float);
    const size_t at = sc->stage_at + ((sc->stage_used + 63) & ~(size_t)63);
    if (at > sc->shm.len || len > sc->shm.len - at) return NULL;
    sc->stage_used = at - sc->stage_at + len;
    sc->stage_out++;
    return (float *)(void *)(sc->shm.p + at);
}

/* Where grads sits in sc's staging area (ps_client_stage), or SIZE_MAX when it is not there. */
static size_t staged_offset(const shard_conn *sc, const float *grads) {
    if (sc->shm.p == NULL || grads == NULL) return SIZE_MAX;
    const uintptr_t g = (uintptr_t)grads, lo = (uintptr_t)sc->shm.p + sc->stage_at,
                    hi = (uintptr_t)sc->shm.p + sc->shm.len;
    return g >= lo && g < hi ? (size_t)(g - (uintptr_t)sc->shm.p) : SIZE_MAX;
}

const ps_table_spec *ps_client_table(const ps_client *c, const char *name) {
    for (size_t i = 0; i < c->n_tables; i++)
        if (strcmp(c->tables[i].name, name) == 0) return &c->tables[i];
    return NULL;
}

/* --- requests -------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *src;     /* (n, width) rows */
    const uint32_t *pos;    /* rows to take, in order */
    size_t n, width;        /* bytes per row */
} gather;

static void fill_gather(void *ud, uint8_t *dst, size_t len) {
    const gather *g = ud;
    (void)len;
    for (size_t i = 0; i < g->n; i++) memcpy(dst + i * g->width, g->src + g->pos[i] * g->width,
                                             g->width);
}

static ps_bulk bulk_of(const gather *g, const void *all, size_t n_all, size_t width) {
    ps_bulk b = {0};
    if (g == NULL) {
        b.src = (ps_bytes){all, n_all * width};
    } else {
        b.fill = fill_gather, b.fill_ud = (void *)g, b.fill_len = g->n * width;
    }
    return b;
}

/* Positions of the keys that belong to each shard: pos[s] (count[s]) malloc'd. */
static ps_status split(const ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                       uint32_t **pos, size_t *count) {
    const uint32_t S = c->n_shards;
    uint32_t *which = malloc(n * sizeof(*which) + 1);
    if (which == NULL) return PS_NOMEM;
    for (uint32_t s = 0; s < S; s++) count[s] = 0;
    for (size_t i = 0; i < n; i++) count[which[i] = ps_shard_of(table, keys[i], S)]++;
    for (uint32_t s = 0; s < S; s++) {
        pos[s] = malloc(count[s] * sizeof(uint32_t) + 1);
        if (pos[s] == NULL) {
            for (uint32_t t = 0; t <= s; t++) free(pos[t]), pos[t] = NULL;
            free(which);
            return PS_NOMEM;
        }
        count[s] = 0;
    }
    for (size_t i = 0; i < n; i++) pos[which[i]][count[which[i]]++] = (uint32_t)i;
    free(which);
    return PS_OK;
}

/* Room for len bytes in sc's segment (64-byte aligned), if it has that much left: regions stay
 * the request's until its reply, and the whole segment is free again once nothing is owed. */
static bool shm_reserve(shard_conn *sc, size_t len, ps_ShmRef *ref) {
    if (sc->shm.p == NULL) return false;
    const size_t at = (sc->shm_used + 63) & ~(size_t)63;
    if (at > sc->stage_at || len > sc->stage_at - at) return false; /* this one goes inline */
    sc->shm_used = at + len;
    *ref = (ps_ShmRef){.offset = at, .length = len};
    return true;
}

/* Moves a bulk field into sc's segment (gathered there as it would be into the frame): *ref
 * names it and *b becomes empty. false: no room, b stays for the frame. */
static bool shm_take(shard_conn *sc, ps_bulk *b, ps_ShmRef *ref) {
    const size_t len = b->fill ? b->fill_len : b->src.len;
    if (!shm_reserve(sc, len, ref)) return false;
    uint8_t *dst = sc->shm.p + ref->offset;
    if (b->fill) b->fill(b->fill_ud, dst, len);
    else memcpy(dst, b->src.p, len);
    *b = (ps_bulk){0};
    return true;
}

/* The requests of one call: pull (n_push == 0, grads NULL, out set), push (out NULL) or both.
 * staged_at: where grads lies in the one shard's segment (ps_client_stage), or SIZE_MAX. */
static ps_status send_requests(ps_client *c, int kind, uint32_t table, const uint64_t *push_keys,
                               size_t n_push, const float *grads, size_t staged_at,
                               const uint64_t *pull_keys, size_t n_pull, float *out, float **view,
                               ps_op *op, ps_error *err) {
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    if (table >= c->n_tables)
        return ps_error_set(err, PS_INVALID_ARG, "unknown table %u (the job has %zu)", table,
                            c->n_tables);
    if (n_push > UINT32_MAX || n_pull > UINT32_MAX)
        return ps_error_set(err, PS_TOO_LARGE, "more than 2^32 keys in one request");
    const uint32_t S = c->n_shards, dim = c->tables[table].dim;
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, out, dim, &idx, err) != PS_OK) return err->code;
    if (view != NULL) *view = out, c->ops[idx].view = view, c->ops[idx].view_rows = n_pull;
    ps_status st = PS_OK;
    uint32_t **ppos = NULL, **qpos = NULL;
    size_t *pcount = NULL, *qcount = NULL;
    if (S > 1) {
        ppos = calloc(S, sizeof(*ppos)), qpos = calloc(S, sizeof(*qpos));
        pcount = calloc(S, sizeof(*pcount)), qcount = calloc(S, sizeof(*qcount));
        if (!ppos || !qpos || !pcount || !qcount ||
            split(c, table, push_keys, n_push, ppos, pcount) != PS_OK ||
            split(c, table, pull_keys, n_pull, qpos, qcount) != PS_OK) {
            st = ps_error_set(err, PS_NOMEM, "client: out of memory");
            goto done;
        }
    }
    /* Requests of at most `chunk` keys, so every frame fits limits.max_frame_bytes. */
    const size_t per_key = 8 + (kind == 0 ? 0 : 8 + (size_t)dim * sizeof(float));
    const size_t room = c->job->max_frame_bytes > 256 ? c->job->max_frame_bytes - 256 : 0;
    size_t chunk = room / per_key > 0 ? room / per_key : 1;
    if (chunk > c->job->max_keys_per_request) chunk = c->job->max_keys_per_request;
    for (uint32_t s = 0; s < S; s++) {
        const size_t np_all = S > 1 ? pcount[s] : n_push, nq_all = S > 1 ? qcount[s] : n_pull;
        for (size_t at = 0; at == 0 || at < np_all || at < nq_all; at += chunk) {
            if (S > 1 && np_all == 0 && nq_all == 0) break; /* nothing for this shard */
            const size_t np = at < np_all ? (np_all - at < chunk ? np_all - at : chunk) : 0;
            const size_t nq = at < nq_all ? (nq_all - at < chunk ? nq_all - at : chunk) : 0;
            const uint32_t *pp = S > 1 ? ppos[s] + at : NULL, *qp = S > 1 ? qpos[s] + at : NULL;
            const size_t off = S > 1 ? 0 : at; /* one shard: the caller's arrays, from `at` */
            gather gk = {(const uint8_t *)push_keys, pp, np, 8};
            gather gg = {(const uint8_t *)grads, pp, np, dim * sizeof(float)};
            gather gq = {(const uint8_t *)pull_keys, qp, nq, 8};
            ps_bulk bk = bulk_of(S > 1 ? &gk : NULL, push_keys ? push_keys + off : NULL, np, 8);
            ps_bulk bg = bulk_of(S > 1 ? &gg : NULL, grads ? grads + off * dim : NULL, np,
                                 dim * sizeof(float));
            ps_bulk bq = bulk_of(S > 1 ? &gq : NULL, pull_keys ? pull_keys + off : NULL, nq, 8);
            shard_conn *sc = &c->shards[s];
            if (sc->q_len == 0) sc->shm_used = 0; /* every earlier region is answered */
            ps_ShmRef grads_at = {0}, values_at = {0};
            const size_t gat = staged_at + off * dim * sizeof(float), glen = np * dim * sizeof(float);
            bool shm_grads = false;
            if (kind != 0 && np > 0 && staged_at != SIZE_MAX && gat <= sc->shm.len &&
                glen <= sc->shm.len - gat) {
                grads_at = (ps_ShmRef){.offset = gat, .length = glen};
                bg = (ps_bulk){0}, shm_grads = true;
            } else {
                shm_grads = kind != 0 && np > 0 && shm_take(sc, &bg, &grads_at);
            }
            const bool shm_values = kind != 1 && nq > 0 &&
                                    shm_reserve(sc, nq * dim * sizeof(float), &values_at);
            c->shm_requests += shm_grads || shm_values;
            ps_Envelope env = ps_Envelope_init_zero;
            env.request_id = ++c->next_id;
            if (kind == 0) {
                env.which_body = ps_Envelope_pull_tag, env.pull.table = table;
                env.pull.min_clock = c->min_clock;
                env.pull.has_values_at = shm_values, env.pull.values_at = values_at;
                bk = bq; /* Pull carries its keys in the keys slot */
            } else if (kind == 1) {
                env.which_body = ps_Envelope_push_tag, env.push.table = table;
                env.push.clock = c->clock;
                env.push.has_grads_at = shm_grads, env.push.grads_at = grads_at;
                if (c->step != 0) env.push.step = c->step, env.push.part = c->shards[s].part++;
            } else {
                env.which_body = ps_Envelope_push_pull_tag, env.push_pull.table = table;
                env.push_pull.has_grads_at = shm_grads, env.push_pull.grads_at = grads_at;
                env.push_pull.has_values_at = shm_values, env.push_pull.values_at = values_at;
                if (c->step != 0)
                    env.push_pull.step = c->step, env.push_pull.part = c->shards[s].part++;
            }
            uint32_t *wpos = NULL; /* the reply's rows go to these positions of out */
            if (S > 1 && kind != 1 && nq > 0) {
                if (at == 0 && nq == nq_all) {
                    wpos = qpos[s], qpos[s] = NULL; /* the whole list: hand it over */
                } else if ((wpos = malloc(nq * sizeof(uint32_t))) != NULL) {
                    memcpy(wpos, qp, nq * sizeof(uint32_t));
                } else {
                    st = ps_error_set(err, PS_NOMEM, "client: out of memory");
                    goto done;
                }
            }
            uint8_t *frame;
            size_t len;
            st = ps_wire_encode(&env, &bk, &bg, &bq, NULL, &c->fcache, &frame, &len, err);
            if (st != PS_OK) {
                free(wpos);
                goto done;
            }
            owed w = {.request_id = env.request_id, .op = idx, .op_gen = c->ops[idx].gen,
                      .pos = wpos, .base = off, .n_pull = kind == 1 ? 0 : nq,
                      .in_shm = shm_values, .shm_off = values_at.offset};
            st = send_frame(sc, frame, len, err);
            if (st == PS_OK && queue_push(sc, &w) != PS_OK)
                st = ps_error_set(err, PS_NOMEM, "client: out of memory");
            if (st != PS_OK) {
                free(wpos);
                goto done;
            }
            c->ops[idx].pending++;
        }
    }
    *op = op_handle(c, idx);
done:
    for (uint32_t s = 0; S > 1 && s < S; s++) {
        if (ppos) free(ppos[s]);
        if (qpos) free(qpos[s]);
    }
    free(ppos), free(qpos), free(pcount), free(qcount);
    if (st != PS_OK) {
        if (c->ops[idx].pending == 0) c->ops[idx].in_use = false;
        else op_fail(&c->ops[idx], st, err ? err->msg : "request failed");
    }
    return st;
}

/* The one request path. Gradients the caller staged in the segment go from there, uncopied; a
 * staged buffer passed to a push, whether it starts or not, holds the staging area back no
 * longer. */
static ps_status start(ps_client *c, int kind, uint32_t table, const uint64_t *push_keys,
                       size_t n_push, const float *grads, const uint64_t *pull_keys,
                       size_t n_pull, float *out, float **view, ps_op *op, ps_error *err) {
    const size_t staged_at =
        c->n_shards == 1 && kind != 0 ? staged_offset(&c->shards[0], grads) : SIZE_MAX;
    const ps_status st = send_requests(c, kind, table, push_keys, n_push, grads, staged_at,
                                       pull_keys, n_pull, out, view, op, err);
    if (staged_at != SIZE_MAX) {
        shard_conn *sc = &c->shards[0];
        if (sc->stage_out > 0) sc->stage_out--;
        if (st == PS_OK) c->staged_pushes++;
    }
    return st;
}

ps_status ps_client_pull_async(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                               float *out, ps_op *op, ps_error *err) {
    return start(c, 0, table, NULL, 0, NULL, keys, n, out, NULL, op, err);
}

ps_status ps_client_pull_view_async(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                                    float *out, float **rows, ps_op *op, ps_error *err) {
    return start(c, 0, table, NULL, 0, NULL, keys, n, out, rows, op, err);
}

ps_status ps_client_push_async(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                               const float *grads, ps_op *op, ps_error *err) {
    return start(c, 1, table, keys, n, grads, NULL, 0, NULL, NULL, op, err);
}

ps_status ps_client_pushpull_async(ps_client *c, uint32_t table, const uint64_t *push_keys,
                                   size_t n_push, const float *grads, const uint64_t *pull_keys,
                                   size_t n_pull, float *out, ps_op *op, ps_error *err) {
    return start(c, 2, table, push_keys, n_push, grads, pull_keys, n_pull, out, NULL, op, err);
}

static bool op_done(ps_client *c, void *arg) {
    return c->ops[*(uint32_t *)arg].pending == 0;
}

ps_status ps_client_wait(ps_client *c, ps_op op, ps_error *err) {
    uint32_t idx = (uint32_t)op, gen = (uint32_t)(op >> 32);
    if (idx >= c->ops_cap || !c->ops[idx].in_use || c->ops[idx].gen != gen)
        return ps_error_set(err, PS_INVALID_ARG, "wait: unknown or finished op");
    if (!run_until(c, op_done, &idx, c->job->request_timeout_ms)) {
        /* name the servers still owing this op: on a cluster, which host went quiet matters */
        char who[300] = "";
        for (uint32_t s = 0; s < c->n_shards; s++) {
            const shard_conn *sc = &c->shards[s];
            for (size_t i = 0; i < sc->q_len; i++) {
                const owed *w = &sc->q[(sc->q_head + i) % sc->q_cap];
                if (w->op != idx || w->op_gen != gen) continue;
                size_t at = strlen(who);
                snprintf(who + at, sizeof(who) - at, "%sserver %u (%s)", at ? ", " : " from ",
                         sc->index, sc->addr);
                break;
            }
        }
        char msg[400];
        snprintf(msg, sizeof(msg), "no reply within %u ms (cluster.request_timeout_ms)%s",
                 c->job->request_timeout_ms, who);
        break_client(c, PS_TIMEOUT, msg);
    }
    op_slot *o = &c->ops[idx];
    o->in_use = false;
    if (o->st != PS_OK) return ps_error_set(err, o->st, "%s", o->msg);
    return PS_OK;
}

ps_status ps_client_wait_all(ps_client *c, ps_error *err) {
    ps_status first = PS_OK;
    for (size_t i = 0; i < c->ops_cap; i++) {
        if (!c->ops[i].in_use) continue;
        ps_status st = ps_client_wait(c, op_handle(c, (uint32_t)i), first == PS_OK ? err : NULL);
        if (first == PS_OK) first = st;
    }
    return first;
}

ps_status ps_client_pull(ps_client *c, uint32_t table, const uint64_t *keys, size_t n, float *out,
                         ps_error *err) {
    ps_op op;
    if (ps_client_pull_async(c, table, keys, n, out, &op, err) != PS_OK) return err->code;
    return ps_client_wait(c, op, err);
}

ps_status ps_client_push(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                         const float *grads, ps_error *err) {
    ps_op op;
    if (ps_client_push_async(c, table, keys, n, grads, &op, err) != PS_OK) return err->code;
    return ps_client_wait(c, op, err);
}

ps_status ps_client_pushpull(ps_client *c, uint32_t table, const uint64_t *push_keys,
                             size_t n_push, const float *grads, const uint64_t *pull_keys,
                             size_t n_pull, float *out, ps_error *err) {
    ps_op op;
    if (ps_client_pushpull_async(c, table, push_keys, n_push, grads, pull_keys, n_pull, out, &op,
                                 err) != PS_OK)
        return err->code;
    return ps_client_wait(c, op, err);
}

/* Rows of one Scan reply at most: within a Values part and the frame limit (as the server). */
static size_t scan_limit(const ps_client *c, uint32_t table) {
    const ps_table_spec *t = &c->tables[table];
    const size_t row = 8 + 4 * (t->dim + ps_table_state_len(t)) + 4;
    size_t budget = 4u << 20;
    if (budget > c->job->max_frame_bytes - 64) budget = c->job->max_frame_bytes - 64;
    return row >= budget ? 1 : budget / row;
}

static ps_status scan_request(ps_client *c, uint32_t shard, const ps_Scan *q, const uint64_t *keys,
                              size_t n, uint32_t *pos, uint32_t idx, ps_error *err) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = ++c->next_id;
    env.which_body = ps_Envelope_scan_tag;
    env.scan = *q;
    ps_bulk bk = {.src = {(const uint8_t *)keys, n * 8}};
    uint8_t *frame;
    size_t len;
    if (ps_wire_encode(&env, &bk, NULL, NULL, NULL, NULL, &frame, &len, err) != PS_OK ||
        send_frame(&c->shards[shard], frame, len, err) != PS_OK) {
        free(pos);
        return err->code;
    }
    owed w = {.request_id = env.request_id, .op = idx, .op_gen = c->ops[idx].gen, .pos = pos,
              .n_pull = n};
    if (queue_push(&c->shards[shard], &w) != PS_OK) {
        free(pos);
        return ps_error_set(err, PS_NOMEM, "client: out of memory");
    }
    c->ops[idx].pending++;
    return PS_OK;
}

ps_status ps_client_rows(ps_client *c, uint32_t table, const uint64_t *keys, size_t n,
                         float *values, float *acc, uint32_t *steps, ps_error *err) {
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    if (table >= c->n_tables)
        return ps_error_set(err, PS_INVALID_ARG, "unknown table %u", table);
    if (n > UINT32_MAX) return ps_error_set(err, PS_TOO_LARGE, "more than 2^32 keys");
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, values, c->tables[table].dim, &idx, err) != PS_OK) return err->code;
    op_slot *o = &c->ops[idx];
    o->acc = acc, o->steps = steps, o->state_len = ps_table_state_len(&c->tables[table]);
    const size_t limit = scan_limit(c, table);
    ps_Scan q = {.table = table};
    ps_status st = PS_OK;
    for (uint32_t s = 0; s < c->n_shards && st == PS_OK; s++) {
        /* this shard's keys, in request order, a reply's worth at a time */
        size_t i = 0;
        while (st == PS_OK && i < n) {
            uint32_t *pos = malloc(limit * sizeof(uint32_t));
            uint64_t *ks = malloc(limit * sizeof(uint64_t));
            if (pos == NULL || ks == NULL) {
                free(pos), free(ks);
                st = ps_error_set(err, PS_NOMEM, "client: out of memory");
                break;
            }
            size_t m = 0;
            for (; i < n && m < limit; i++)
                if (ps_shard_of(table, keys[i], c->n_shards) == s) pos[m] = (uint32_t)i, ks[m++] = keys[i];
            if (m > 0) st = scan_request(c, s, &q, ks, m, pos, idx, err);
            else free(pos);
            free(ks);
        }
    }
    if (st != PS_OK) {
        op_fail(o, st, err ? err->msg : "request failed");
        if (o->pending == 0) {
            o->in_use = false;
            return st;
        }
    }
    if (ps_client_flush(c, st == PS_OK ? err : NULL) != PS_OK && st == PS_OK) st = err->code;
    ps_status w = ps_client_wait(c, op_handle(c, idx), st == PS_OK ? err : NULL);
    return st != PS_OK ? st : w;
}

ps_status ps_client_scan(ps_client *c, uint32_t table, uint32_t shard, bool from_start,
                         uint64_t after, size_t max_rows, uint64_t *keys, float *values,
                         float *acc, uint32_t *steps, size_t *n_out, bool *done, ps_error *err) {
    *n_out = 0, *done = false;
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    if (table >= c->n_tables || shard >= c->n_shards || max_rows == 0)
        return ps_error_set(err, PS_INVALID_ARG, "scan: table %u, shard %u, %zu rows", table,
                            shard, max_rows);
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, values, c->tables[table].dim, &idx, err) != PS_OK) return err->code;
    op_slot *o = &c->ops[idx];
    o->acc = acc, o->steps = steps, o->keys = keys, o->cap = max_rows;
    o->state_len = ps_table_state_len(&c->tables[table]);
    ps_Scan q = {.table = table, .from_start = from_start, .after = after,
                 .max_rows = (uint32_t)(max_rows < UINT32_MAX ? max_rows : UINT32_MAX)};
    if (scan_request(c, shard, &q, NULL, 0, NULL, idx, err) != PS_OK) {
        o->in_use = false;
        return err->code;
    }
    if (ps_client_flush(c, err) != PS_OK) return ps_client_wait(c, op_handle(c, idx), NULL), err->code;
    ps_status st = ps_client_wait(c, op_handle(c, idx), err);
    *n_out = o->got, *done = o->done;
    return st;
}

/* Sends one bodyless request (Stats, Clock) to every shard as one op. */
static ps_status to_every_shard(ps_client *c, ps_Envelope *env, uint32_t idx, ps_error *err) {
    for (uint32_t s = 0; s < c->n_shards; s++) {
        env->request_id = ++c->next_id;
        uint8_t *frame;
        size_t len;
        if (ps_wire_encode(env, NULL, NULL, NULL, NULL, NULL, &frame, &len, err) != PS_OK ||
            send_frame(&c->shards[s], frame, len, err) != PS_OK) {
            op_fail(&c->ops[idx], err->code, err->msg);
            return err->code;
        }
        owed w = {.request_id = env->request_id, .op = idx, .op_gen = c->ops[idx].gen};
        if (queue_push(&c->shards[s], &w) != PS_OK) {
            op_fail(&c->ops[idx], PS_NOMEM, "client: out of memory");
            return ps_error_set(err, PS_NOMEM, "client: out of memory");
        }
        c->ops[idx].pending++;
    }
    return PS_OK;
}

ps_status ps_client_clock_async(ps_client *c, bool finished, ps_op *op, ps_error *err) {
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, NULL, 0, &idx, err) != PS_OK) return err->code;
    if (!finished) c->clock++;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_clock_tag;
    env.clock.clock = c->clock;
    env.clock.finished = finished;
    ps_status st = to_every_shard(c, &env, idx, err);
    if (st != PS_OK && c->ops[idx].pending == 0) c->ops[idx].in_use = false;
    else *op = op_handle(c, idx);
    return st;
}

ps_status ps_client_end_job(ps_client *c, ps_error *err) {
    return ps_client_fail_job(c, NULL, err);
}

ps_status ps_client_fail_job(ps_client *c, const char *failure, ps_error *err) {
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, NULL, 0, &idx, err) != PS_OK) return err->code;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_end_job_tag;
    if (failure != NULL) /* cut to the field's bound (ps.options) */
        snprintf(env.end_job.failure, sizeof(env.end_job.failure), "%s", failure);
    ps_status st = to_every_shard(c, &env, idx, err);
    if (st != PS_OK && c->ops[idx].pending == 0) {
        c->ops[idx].in_use = false;
        return st;
    }
    return ps_client_wait(c, op_handle(c, idx), err);
}

ps_status ps_client_epoch_stats(ps_client *c, const ps_EpochStats *s, ps_error *err) {
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, NULL, 0, &idx, err) != PS_OK) return err->code;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_epoch_stats_tag;
    env.epoch_stats = *s;
    ps_status st = to_every_shard(c, &env, idx, err);
    if (st != PS_OK && c->ops[idx].pending == 0) {
        c->ops[idx].in_use = false;
        return st;
    }
    return ps_client_wait(c, op_handle(c, idx), err);
}

uint64_t ps_client_clock(const ps_client *c) { return c->clock; }
void ps_client_set_min_clock(ps_client *c, uint64_t min_clock) { c->min_clock = min_clock; }

void ps_client_set_step(ps_client *c, uint64_t step) {
    c->step = step;
    for (uint32_t s = 0; s < c->n_shards; s++) c->shards[s].part = 0;
}

ps_status ps_client_table_stats(ps_client *c, uint32_t table, uint64_t *rows, uint64_t *bytes,
                                ps_error *err) {
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, NULL, 0, &idx, err) != PS_OK) return err->code;
    c->ops[idx].stats_table = table;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_stats_tag;
    to_every_shard(c, &env, idx, err);
    op_slot *o = &c->ops[idx];
    ps_status st = ps_client_wait(c, op_handle(c, idx), err);
    *rows = o->rows, *bytes = o->bytes;
    return st;
}

ps_status ps_client_stats(ps_client *c, ps_table_stats *out, ps_error *err) {
    if (c->broken) return ps_error_set(err, PS_CLOSED, "client is closed: %s", c->broken_msg);
    memset(out, 0, c->n_shards * c->n_tables * sizeof(*out));
    uint32_t idx = 0; /* set by op_new */
    if (op_new(c, NULL, 0, &idx, err) != PS_OK) return err->code;
    c->ops[idx].stats_out = out;
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_stats_tag;
    to_every_shard(c, &env, idx, err);
    return ps_client_wait(c, op_handle(c, idx), err);
}
