/* server.c - the shard's lifecycle: stores, listener, signals, stop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "checkpoint.h"
#include "server_internal.h"
#include "signals.h"
#include "weights.h"

static void on_connection(uv_stream_t *l, int status) {
    ps_server *srv = l->data;
    if (status < 0) {
        ps_log(&srv->opt.log, PS_LOG_WARN, "accept: %s", uv_strerror(status));
        return;
    }
    if (!srv->stopping) ps_conn_accept(srv);
}

static void close_cb_noop(uv_handle_t *h) { (void)h; }

static void on_barrier_stall(uv_timer_t *t);
static void start_checkpoint(ps_server *srv);
static void steps_checkpoint(ps_server *srv);
static void workers_done(ps_server *srv);

void ps_server_wake(ps_server *srv) {
    if (srv->waking) {
        srv->wake_again = true;
        return;
    }
    srv->waking = true;
    do {
        srv->wake_again = false;
        for (ps_conn *c = srv->conns; c != NULL; c = c->next)
            if (ps_conn_parked(c)) ps_conn_resume(c);
    } while (srv->wake_again);
    srv->waking = false;
    steps_checkpoint(srv);
    /* the stall clock restarts whenever the barrier moves */
    if (srv->n_waiting > 0 && !srv->stopping)
        uv_timer_start(&srv->barrier_timer, on_barrier_stall, srv->job->barrier_timeout_ms, 0);
    else if (srv->barrier != NULL)
        uv_timer_stop(&srv->barrier_timer);
}

/* No progress for cluster.barrier_timeout_ms while a pull waits: the slowest live ranks are
 * dead or stuck. Drop them so the job goes on. */
static void on_barrier_stall(uv_timer_t *t) {
    ps_server *srv = t->data;
    if (srv->n_waiting == 0 || srv->stopping || srv->barrier == NULL) return;
    uint32_t ranks[64];
    size_t n = ps_barrier_slowest(srv->barrier, ranks, 64);
    if (n > 64) n = 64; /* the rest go on the next expiry */
    for (size_t i = 0; i < n; i++) {
        ps_log(&srv->opt.log, PS_LOG_WARN,
               "worker %u made no progress past step %llu in %u ms (cluster.barrier_timeout_ms): "
               "dropped from the barrier",
               ranks[i], (unsigned long long)ps_barrier_rank_clock(srv->barrier, ranks[i]),
               srv->job->barrier_timeout_ms);
        bool advanced;
        ps_error err = {0};
        if (ps_barrier_drop(srv->barrier, ranks[i], &advanced, &err) != PS_OK)
            ps_log(&srv->opt.log, PS_LOG_ERROR, "%s", err.msg);
    }
    ps_server_wake(srv);
}

static void on_sweep(uv_timer_t *t) { ps_conn_sweep(t->data); }

static ps_auth_slot *auth_slot(ps_server *srv, const char *ip, bool make) {
    ps_auth_slot *oldest = &srv->auth[0];
    for (int i = 0; i < PS_AUTH_SLOTS; i++) {
        if (strcmp(srv->auth[i].ip, ip) == 0) return &srv->auth[i];
        if (srv->auth[i].since_ms < oldest->since_ms) oldest = &srv->auth[i];
    }
    if (!make) return NULL;
    *oldest = (ps_auth_slot){0};
    snprintf(oldest->ip, sizeof(oldest->ip), "%s", ip);
    return oldest;
}

void ps_server_auth_failed(ps_server *srv, const char *ip) {
    const uint64_t now = uv_now(&srv->loop);
    ps_auth_slot *a = auth_slot(srv, ip, true);
    if (a->failures == 0 || now - a->since_ms > PS_AUTH_WINDOW_MS) a->failures = 0, a->since_ms = now;
    if (++a->failures >= PS_AUTH_MAX_FAILURES) {
        a->locked_until_ms = now + PS_AUTH_LOCKOUT_MS;
        a->failures = 0;
        ps_log(&srv->opt.log, PS_LOG_WARN, "%s: %d bad tokens in %d s: refused for %d s", ip,
               PS_AUTH_MAX_FAILURES, PS_AUTH_WINDOW_MS / 1000, PS_AUTH_LOCKOUT_MS / 1000);
    }
}

uint64_t ps_server_locked_out(ps_server *srv, const char *ip) {
    const uint64_t now = uv_now(&srv->loop);
    const ps_auth_slot *a = auth_slot(srv, ip, false);
    return a != NULL && a->locked_until_ms > now ? a->locked_until_ms - now : 0;
}

void ps_server_parked(ps_server *srv) {
    if (srv->barrier != NULL && !uv_is_active((uv_handle_t *)&srv->barrier_timer) &&
        !srv->stopping)
        uv_timer_start(&srv->barrier_timer, on_barrier_stall, srv->job->barrier_timeout_ms, 0);
}

/* --- checkpoints (server.checkpoint_dir, checkpoint.h) --------------------------------------
 * The loop thread copies a few blocks of 4096 rows whenever the writer's thread has a free
 * buffer (ckpt_wake), between frames; the thread does the file's I/O. A fuzzy checkpoint: each
 * row is whole as of one moment between two frames, rows as of moments within the checkpoint's
 * run (a push during it may be in for some rows and not others). fork() and copy-on-write would
 * give one cut, but here each page the parent first writes after the fork took ~100 us: pushes
 * ran at 1-3% of their rate while a child wrote (bench_checkpoint). */

static void finish_checkpoint(ps_server *srv, bool abort) {
    ps_error err = {0};
    ps_ckpt_info info;
    ps_status st = ps_ckpt_writer_close(srv->ckpt, abort, &info, &err);
    srv->ckpt = NULL;
    const double s = (double)(uv_hrtime() - srv->ckpt_started_ns) / 1e9;
    if (st == PS_OK) {
        ps_log(&srv->opt.log, PS_LOG_INFO, "checkpoint generation %llu written to %s in %.2f s "
               "(%llu rows, %.1f MB)", (unsigned long long)srv->ckpt_gen,
               srv->job->checkpoint_dir, s, (unsigned long long)info.rows,
               (double)info.bytes / 1e6);
        srv->ckpt_done++;
    } else {
        ps_log(&srv->opt.log, PS_LOG_WARN, "checkpoint generation %llu failed: %s; the previous "
               "generation in %s is kept, serving on", (unsigned long long)srv->ckpt_gen,
               err.msg, srv->job->checkpoint_dir);
        srv->ckpt_failed++;
    }
}

/* The job state as of now (checkpoint.h), in arrays malloc'd into st; false: out of memory. */
static bool save_state(const ps_server *srv, ps_ckpt_state *st) {
    const uint32_t W = srv->job->num_workers;
    *st = (ps_ckpt_state){.workers = W, .clock = calloc(W, sizeof(uint64_t)),
                          .rank_state = calloc(W, 1), .finished = malloc(W)};
    if (st->clock == NULL || st->rank_state == NULL || st->finished == NULL) return false;
    if (srv->barrier != NULL) ps_barrier_save(srv->barrier, st->clock, st->rank_state, &st->applied);
    memcpy(st->finished, srv->finished, W);
    return true;
}

static void free_state(ps_ckpt_state *st) { free(st->clock), free(st->rank_state), free(st->finished); }

static void wake_notify(void *ud) { uv_async_send(&((ps_server *)ud)->ckpt_wake); }

/* Opens srv->ckpt for the next generation; logs and counts a failure. */
static bool open_checkpoint(ps_server *srv, bool background) {
    srv->ckpt_gen++;
    srv->ckpt_started_ns = uv_hrtime();
    ps_error err = {0};
    ps_ckpt_state state;
    ps_status st = save_state(srv, &state)
                       ? ps_ckpt_writer_open(srv->job, srv->opt.shard, srv->job->num_servers,
                                             srv->stores, &state, srv->job->checkpoint_dir,
                                             srv->ckpt_gen, background ? wake_notify : NULL,
                                             background ? srv : NULL, &srv->ckpt, &err)
                       : ps_error_set(&err, PS_NOMEM, "out of memory");
    free_state(&state);
    if (st == PS_OK) return true;
    srv->ckpt = NULL;
    ps_log(&srv->opt.log, PS_LOG_WARN, "checkpoint generation %llu: %s%s",
           (unsigned long long)srv->ckpt_gen, err.msg, background ? "; serving on" : "");
    srv->ckpt_failed++;
    return false;
}

static void on_ckpt_wake(uv_async_t *a) {
    ps_server *srv = a->data;
    if (srv->ckpt == NULL) return;
    bool done;
    if (ps_ckpt_writer_fill(srv->ckpt, srv->stores, false, &done, NULL) != PS_OK ||
        ps_ckpt_writer_finished(srv->ckpt))
        finish_checkpoint(srv, false);
}

static void start_checkpoint(ps_server *srv) {
    if (srv->job->checkpoint_dir[0] == '\0' || srv->stopping) return;
    if (srv->ckpt != NULL) {
        ps_log(&srv->opt.log, PS_LOG_DEBUG, "checkpoint: one is being written already");
        return;
    }
    if (open_checkpoint(srv, true)) on_ckpt_wake(&srv->ckpt_wake);
}

/* server.checkpoint_every_steps: a checkpoint when the job passed another N steps here. */
static void steps_checkpoint(ps_server *srv) {
    const uint64_t N = srv->job->checkpoint_every_steps;
    if (N == 0) return;
    uint64_t mark;
    if (srv->barrier != NULL) {
        const uint64_t m = ps_barrier_min_clock(srv->barrier);
        if (m == UINT64_MAX) return; /* no live rank */
        mark = m / N;
    } else {
        mark = srv->steps_seen / (N * srv->job->num_workers);
    }
    if (mark <= srv->ckpt_step_mark) return;
    srv->ckpt_step_mark = mark;
    start_checkpoint(srv); /* one is being written already: this one is skipped, as on a timer */
}

void ps_server_pushed(ps_server *srv, uint32_t rank, uint64_t step) {
    if (rank >= srv->job->num_workers || srv->push_step == NULL) return;
    /* step 0: a client that does not number its steps; each push counts as one */
    if (step != 0 && srv->push_step[rank] == step + 1) return;
    srv->push_step[rank] = step + 1;
    srv->steps_seen++;
    steps_checkpoint(srv);
}

/* On SIGTERM/SIGINT: the last generation, whole, on this thread (the loop serves no one any
 * more); one being written is abandoned for it. */
static void final_checkpoint(ps_server *srv) {
    if (srv->job->checkpoint_dir[0] == '\0') return;
    if (srv->ckpt != NULL) ps_ckpt_writer_close(srv->ckpt, true, NULL, NULL), srv->ckpt = NULL;
    if (!open_checkpoint(srv, false)) return;
    bool done;
    ps_status st = ps_ckpt_writer_fill(srv->ckpt, srv->stores, true, &done, NULL);
    finish_checkpoint(srv, st != PS_OK);
}

static void on_ckpt_timer(uv_timer_t *t) { start_checkpoint(t->data); }
static void on_ckpt_async(uv_async_t *a) { start_checkpoint(a->data); }

void ps_server_checkpoint(ps_server *s) { uv_async_send(&s->ckpt_async); }

uint64_t ps_server_checkpoints(const ps_server *s, uint64_t *failed) {
    if (failed != NULL) *failed = s->ckpt_failed;
    return s->ckpt_done;
}

/* Restore on start: the newest good checkpoint of the job in server.checkpoint_dir, if any. */
static ps_status restore_checkpoint(ps_server *srv, ps_ckpt_state *state, bool *restored,
                                    ps_error *err) {
    const ps_job_config *job = srv->job;
    *restored = false;
    if (job->checkpoint_dir[0] == '\0') return PS_OK;
    ps_status st = ps_checkpoint_last_generation(job->checkpoint_dir, &srv->ckpt_gen, err);
    ps_ckpt_info info;
    const uint64_t t0 = uv_hrtime();
    if (st == PS_OK)
        st = ps_checkpoint_restore(job, srv->opt.shard, job->num_servers, srv->stores,
                                   job->checkpoint_dir, &srv->opt.log, state, &info, err);
    if (st == PS_NOT_FOUND) {
        ps_log(&srv->opt.log, PS_LOG_INFO, "no checkpoint in %s: starting fresh",
               job->checkpoint_dir);
        return PS_OK;
    }
    if (st != PS_OK) return ps_error_prefix(err, st, "%s: server.checkpoint_dir", job->file);
    ps_log(&srv->opt.log, PS_LOG_INFO, "restored %llu rows from %s (generation %llu of %u shards, "
           "%.1f MB read) in %.2f s", (unsigned long long)info.rows, job->checkpoint_dir,
           (unsigned long long)info.generation, info.from_shards, (double)info.bytes / 1e6,
           (double)(uv_hrtime() - t0) / 1e9);
    *restored = true;
    return PS_OK;
}

/* The restored job state onto the barrier and the finished ranks (created by now). */
static ps_status apply_state(ps_server *srv, const ps_ckpt_state *st, ps_error *err) {
    const uint32_t W = srv->job->num_workers;
    if (st->workers != W) {
        ps_log(&srv->opt.log, PS_LOG_INFO, "the checkpoint holds no job state for %u workers of "
               "this consistency: clocks start at 0, no rank finished", W);
        return PS_OK;
    }
    if (srv->barrier != NULL) {
        ps_status s = ps_barrier_restore(srv->barrier, st->clock, st->rank_state, st->applied, err);
        if (s != PS_OK) return s;
        const uint64_t m = ps_barrier_min_clock(srv->barrier);
        if (m != UINT64_MAX && srv->job->checkpoint_every_steps > 0)
            srv->ckpt_step_mark = m / srv->job->checkpoint_every_steps;
    }
    for (uint32_t r = 0; r < W; r++)
        if (st->finished[r] && !srv->finished[r]) srv->finished[r] = 1, srv->n_finished++;
    ps_log(&srv->opt.log, PS_LOG_INFO, "restored job state: %u of %u workers finished%s%llu",
           srv->n_finished, W, srv->barrier ? ", barrier minimum clock " : "",
           srv->barrier ? (unsigned long long)ps_barrier_min_clock(srv->barrier) : 0ull);
    return PS_OK;
}

/* Stops accepting, closes every peer and our own handles; the loop then runs dry. */
static void begin_stop(ps_server *srv) {
    if (srv->stopping) return;
    srv->stopping = true;
    if (srv->ckpt != NULL) finish_checkpoint(srv, true); /* its thread must not wake us now */
    for (ps_conn *c = srv->conns; c != NULL; c = c->next) ps_conn_close(c);
    uv_close((uv_handle_t *)&srv->listener, close_cb_noop);
    uv_close((uv_handle_t *)&srv->stop_async, close_cb_noop);
    uv_close((uv_handle_t *)&srv->barrier_timer, close_cb_noop);
    uv_close((uv_handle_t *)&srv->sweep_timer, close_cb_noop);
    uv_close((uv_handle_t *)&srv->end_timer, close_cb_noop);
    uv_close((uv_handle_t *)&srv->ckpt_timer, close_cb_noop);
    uv_close((uv_handle_t *)&srv->ckpt_wake, close_cb_noop);
    uv_close((uv_handle_t *)&srv->ckpt_async, close_cb_noop);
    /* only the watch: the handlers stay (signals.h), and a signal from now on is not heard */
    if (srv->opt.handle_signals) uv_close((uv_handle_t *)&srv->sig_poll, close_cb_noop);
}

/* --- the end of the job ----------------------------------------------------------------------- */

/* The job is over: stop, or with serve_after_job say so (once) and go on serving. */
static void end_or_serve(ps_server *srv, const char *why) {
    if (!srv->opt.serve_after_job) {
        begin_stop(srv);
        return;
    }
    if (srv->job_over) return;
    srv->job_over = true;
    uv_timer_stop(&srv->end_timer); /* the deadline means nothing any more */
    ps_log(&srv->opt.log, srv->end_failed ? PS_LOG_ERROR : PS_LOG_INFO,
           "%s: the job is over%s; serving until stopped (--serve-after-job)", why,
           srv->end_failed ? ", and failed" : "");
}

static void on_end_timer(uv_timer_t *t) { end_or_serve(t->data, "the end grace passed"); }

/* The job is over, but peers may still read: a worker's prefetched pull that the last worker's
 * "finished" just released, the final Acks. Stop once every peer has hung up (workers and the
 * exporter do when they are done), or after PS_END_GRACE_MS. Replaces the deadline. */
#define PS_END_GRACE_MS 5000
static void schedule_end(ps_server *srv, const char *why) {
    if (srv->ending || srv->stopping) return;
    if (srv->opt.serve_after_job) {
        end_or_serve(srv, why);
        return;
    }
    srv->ending = true;
    ps_log(&srv->opt.log, PS_LOG_INFO, "%s: the job is over, shutting down", why);
    uv_timer_start(&srv->end_timer, on_end_timer, srv->n_conns == 0 ? 0 : PS_END_GRACE_MS, 0);
}

void ps_server_conn_closed(ps_server *srv) {
    if (srv->ending && !srv->stopping && srv->n_conns == 0)
        uv_timer_start(&srv->end_timer, on_end_timer, 0, 0);
}

/* cluster.job_deadline_s passed: name who is missing, then stop; run returns PS_TIMEOUT. */
static void on_deadline(uv_timer_t *t) {
    ps_server *srv = t->data;
    const uint32_t W = srv->job->num_workers;
    if (srv->n_finished == W) {
        snprintf(srv->end_msg, sizeof(srv->end_msg),
                 "cluster.job_deadline_s (%u s) passed: every worker finished, but the job did "
                 "not end (no EndJob from the exporter)", srv->job->job_deadline_s);
    } else {
        char ranks[160] = "";
        size_t len = 0;
        for (uint32_t r = 0; r < W && len < sizeof(ranks); r++) {
            if (srv->finished[r]) continue;
            int k = snprintf(ranks + len, sizeof(ranks) - len, "%s%u", len ? ", " : "", r);
            len += k > 0 ? (size_t)k : 0;
        }
        if (len >= sizeof(ranks)) snprintf(ranks + sizeof(ranks) - 5, 5, "...");
        snprintf(srv->end_msg, sizeof(srv->end_msg),
                 "cluster.job_deadline_s (%u s) passed: worker rank%s %s never finished (%u of "
                 "%u did)", srv->job->job_deadline_s, W - srv->n_finished == 1 ? "" : "s", ranks,
                 srv->n_finished, W);
    }
    srv->end_failed = true;
    ps_log(&srv->opt.log, PS_LOG_ERROR, "%s", srv->end_msg);
    if (!srv->opt.hold_for_end || srv->n_finished == srv->job->num_workers) {
        end_or_serve(srv, "cluster.job_deadline_s");
        return;
    }
    /* fit.export_to: the weights trained so far are written all the same (shard 0's exporter,
     * which then sends EndJob). Serve it; should it never come, stop after another deadline. */
    ps_log(&srv->opt.log, PS_LOG_INFO, "serving the export of the weights trained so far until "
           "it ends the job (at most %u s more)", srv->job->job_deadline_s);
    uv_timer_start(&srv->end_timer, on_end_timer, (uint64_t)srv->job->job_deadline_s * 1000, 0);
    if (srv->opt.on_deadline != NULL) srv->opt.on_deadline(srv, srv->opt.ud, srv->end_msg);
}

void ps_server_worker_finished(ps_server *srv, uint32_t rank) {
    if (rank >= srv->job->num_workers || srv->finished[rank]) return;
    srv->finished[rank] = 1;
    /* on disk before the worker hears back (handlers.c): it will not say so again */
    ps_error err = {0};
    if (srv->job->checkpoint_dir[0] != '\0' &&
        ps_ckpt_finished_write(srv->job, srv->opt.shard, srv->job->num_servers, srv->finished,
                               srv->job->num_workers, &err) != PS_OK)
        ps_log(&srv->opt.log, PS_LOG_WARN, "rank %u finished, but it could not be recorded: %s; "
               "a restart before the next checkpoint would wait for it", rank, err.msg);
    if (++srv->n_finished == srv->job->num_workers) workers_done(srv);
}

/* Every worker rank finished (now, or before a restart): the job's end, when the server ends
 * with it. */
static void workers_done(ps_server *srv) {
    if (!srv->opt.end_with_job) return;
    if (srv->opt.on_workers_done != NULL) srv->opt.on_workers_done(srv, srv->opt.ud);
    if (srv->opt.hold_for_end)
        ps_log(&srv->opt.log, PS_LOG_INFO,
               "every worker (%u) finished: serving the export until it ends the job",
               srv->n_finished);
    else
        schedule_end(srv, "every worker finished");
}

ps_status ps_server_end_job(ps_server *srv, const char *failure, ps_error *err) {
    if (!srv->opt.end_with_job)
        return ps_error_set(err, PS_INVALID_ARG,
                            "EndJob: this server serves until it is stopped (--until-stopped)");
    if (failure != NULL && failure[0] != '\0' && !srv->end_failed) { /* the exporter's verdict */
        srv->end_failed = true;
        snprintf(srv->end_msg, sizeof(srv->end_msg), "%s", failure);
        ps_log(&srv->opt.log, PS_LOG_ERROR, "EndJob: %s", failure);
    }
    schedule_end(srv, srv->n_finished == srv->job->num_workers
                          ? "EndJob after every worker finished"
                          : "EndJob before every worker finished");
    return PS_OK;
}

static void on_signal(ps_server *srv, int signum) {
    if (signum == SIGUSR1) {
        start_checkpoint(srv);
        return;
    }
    ps_log(&srv->opt.log, PS_LOG_INFO, "signal %d: shutting down", signum);
    bool was_stopping = srv->stopping;
    begin_stop(srv);
    if (!was_stopping) final_checkpoint(srv);
}

static void on_signals_readable(uv_poll_t *p, int status, int events) {
    ps_server *srv = p->data;
    (void)status, (void)events;
    for (int sig; !srv->stopping && (sig = ps_signals_next(srv->sig_fd)) != 0;)
        on_signal(srv, sig);
}

static void on_stop_async(uv_async_t *a) { begin_stop(a->data); }

/* host:port -> a socket address: an IP literal as given, else a name resolved (sync: once, at
 * start, from a private loop). */
static ps_status resolve_bind(const char *what, const char *addr, struct sockaddr_storage *ss,
                              char *host, size_t host_len, uint16_t *port, ps_error *err) {
    if (ps_parse_hostport(addr, host, host_len, port, err) != PS_OK)
        return ps_error_prefix(err, PS_CONFIG, "%s", what);
    if (uv_ip4_addr(host, *port, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(host, *port, (struct sockaddr_in6 *)ss) == 0)
        return PS_OK;
    uv_loop_t loop; /* uv_getaddrinfo without a callback runs synchronously */
    if (uv_loop_init(&loop) != 0) return ps_error_set(err, PS_IO, "%s: uv_loop_init", what);
    char service[8];
    snprintf(service, sizeof(service), "%u", *port);
    uv_getaddrinfo_t gai;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    int rc = uv_getaddrinfo(&loop, &gai, NULL, host, service, &hints);
    if (rc == 0) {
        memcpy(ss, gai.addrinfo->ai_addr, gai.addrinfo->ai_addrlen);
        uv_freeaddrinfo(gai.addrinfo);
    }
    uv_loop_close(&loop);
    if (rc != 0)
        return ps_error_set(err, PS_CONFIG, "%s \"%s\": cannot resolve \"%s\": %s", what, addr,
                            host, uv_strerror(rc));
    return PS_OK;
}

static bool is_ip_literal(const char *host) {
    struct sockaddr_storage ss;
    return uv_ip4_addr(host, 0, (struct sockaddr_in *)&ss) == 0 ||
           uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&ss) == 0;
}

/* "host:port" with brackets around an IPv6 host. */
static void format_addr(char *out, size_t len, const char *host, int port) {
    const bool v6 = strchr(host, ':') != NULL;
    snprintf(out, len, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

/* Where the shard listens and what it tells others. An explicit bind (--bind) is taken as given.
 * Without one the job's own entry is bound when its host is an IP literal; a DNS name (a
 * Kubernetes or Compose service name) may resolve to an address this host does not own, so then
 * every interface at the entry's port: "[::]" (dual-stack), or "0.0.0.0" without IPv6. The
 * advertised address is --advertise, else the entry for a name, else the bound address. */
static ps_status bind_listener(ps_server *srv, ps_error *err) {
    const ps_server_options *opt = &srv->opt;
    const char *entry = srv->job->servers[opt->shard];
    char host[256], ehost[256];
    uint16_t port, eport;
    struct sockaddr_storage ss;
    bool wildcard = false;
    ps_status st;
    if (opt->listen != NULL) {
        st = resolve_bind("bind address", opt->listen, &ss, host, sizeof(host), &port, err);
    } else {
        char what[64];
        snprintf(what, sizeof(what), "%s: cluster.servers[%u]", srv->job->file, opt->shard);
        st = ps_parse_hostport(entry, ehost, sizeof(ehost), &eport, err);
        if (st != PS_OK) return ps_error_prefix(err, PS_CONFIG, "%s", what);
        wildcard = !is_ip_literal(ehost);
        st = resolve_bind(what, wildcard ? "[::]:0" : entry, &ss, host, sizeof(host), &port, err);
        if (wildcard) {
            port = eport;
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(eport);
        }
    }
    if (st != PS_OK) return st;
    if (opt->advertise != NULL) { /* checked before anything listens */
        char ah[256];
        uint16_t ap;
        if (ps_parse_hostport(opt->advertise, ah, sizeof(ah), &ap, err) != PS_OK)
            return ps_error_prefix(err, PS_CONFIG, "advertise address");
    }
    int rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (wildcard && (rc == UV_EAFNOSUPPORT || rc == UV_EADDRNOTAVAIL)) { /* a host without IPv6 */
        snprintf(host, sizeof(host), "0.0.0.0");
        uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
        rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    }
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc != 0) {
        char want[PS_ADDR_MAX];
        format_addr(want, sizeof(want), host, port);
        return ps_error_set(err, PS_IO, "listen on %s: %s", want, uv_strerror(rc));
    }
    int len = sizeof(ss);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
    srv->port = ps_sockaddr_port(&ss);
    char ip[64]; /* the address itself: a --bind name shows what it resolved to */
    uv_ip_name((struct sockaddr *)&ss, ip, sizeof(ip));
    format_addr(srv->addr, sizeof(srv->addr), ip, srv->port);
    if (opt->advertise != NULL)
        snprintf(srv->advertise, sizeof(srv->advertise), "%s", opt->advertise);
    else if (wildcard)
        format_addr(srv->advertise, sizeof(srv->advertise), ehost, srv->port);
    else
        snprintf(srv->advertise, sizeof(srv->advertise), "%s", srv->addr);
    return PS_OK;
}

ps_status ps_server_create(const ps_server_options *opt, ps_server **out, ps_error *err) {
    const ps_job_config *job = opt->job;
    if (opt->shard >= job->num_servers)
        return ps_error_set(err, PS_CONFIG, "%s: shard %u, but cluster.servers has %u", job->file,
                            opt->shard, job->num_servers);
    if (!ps_auth_init()) return ps_error_set(err, PS_IO, "server: no random source (libsodium)");
    ps_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) return ps_error_set(err, PS_NOMEM, "server: out of memory");
    srv->opt = *opt;
    srv->job = job;
    struct rlimit nofile;
    srv->fd_limit = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY
                        ? (size_t)nofile.rlim_cur
                        : SIZE_MAX;
    ps_status st = PS_OK;
    int rc = uv_loop_init(&srv->loop);
    if (rc != 0) {
        free(srv);
        return ps_error_set(err, PS_IO, "uv_loop_init: %s", uv_strerror(rc));
    }
    if (job->tls.on) { /* the certificate and key, checked before anything listens */
        st = ps_config_tls_files(job, true, err);
        if (st == PS_OK && ps_tls_server_ctx(job->tls.cert, job->tls.key, &srv->tls, err) != PS_OK)
            st = ps_error_prefix(err, PS_CONFIG, "%s: cluster.tls", job->file);
    }
    if (st == PS_OK) st = ps_pool_create(job->server_threads, &srv->pool, err);
    for (size_t i = 0; i < job->num_tables && st == PS_OK; i++) {
        st = ps_store_create(&job->tables[i], job->seed, &srv->stores[i], err);
        if (st == PS_OK) st = ps_store_set_pool(srv->stores[i], srv->pool, err);
        if (st == PS_OK) ps_store_set_clock(srv->stores[i], &srv->now_ms);
    }
    bool restored = false;
    const uint32_t W = job->num_workers;
    ps_ckpt_state state = {.clock = calloc(W, sizeof(uint64_t)), .rank_state = calloc(W, 1),
                           .finished = calloc(W, 1)};
    if (st == PS_OK && (state.clock == NULL || state.rank_state == NULL || state.finished == NULL))
        st = ps_error_set(err, PS_NOMEM, "server: out of memory");
    if (st == PS_OK) st = restore_checkpoint(srv, &state, &restored, err);
    bool with_state = restored;
    if (st == PS_OK && job->checkpoint_dir[0] != '\0') { /* finishes after the checkpoint */
        if (state.workers != W) { /* no job state restored: clocks from 0, as a fresh job's */
            memset(state.clock, 0, W * sizeof(*state.clock));
            memset(state.rank_state, PS_RANK_LIVE, W), memset(state.finished, 0, W);
            state.applied = 0;
        }
        uint32_t added;
        ps_ckpt_finished_read(job, job->checkpoint_dir, state.finished, W, &opt->log, &added);
        if (added > 0) {
            state.workers = W;
            for (uint32_t r = 0; r < W; r++)
                if (state.finished[r]) state.rank_state[r] = PS_RANK_FINISHED;
            ps_log(&opt->log, PS_LOG_INFO, "%u worker rank%s finished after the checkpoint "
                   "(%s/shard-*.finished)", added, added == 1 ? "" : "s", job->checkpoint_dir);
            with_state = true;
        }
    }
    if (st == PS_OK && !restored && job->fit.init_from[0] != '\0') {
        size_t rows = 0;
        st = ps_weights_load(job->fit.init_from, job, opt->shard, job->num_servers, srv->stores,
                             &rows, err);
        if (st == PS_OK)
            ps_log(&opt->log, PS_LOG_INFO, "fit.init_from: %zu rows of this shard from %s", rows,
                   job->fit.init_from);
        else
            ps_error_prefix(err, st, "%s: fit.init_from", job->file);
    }
    if (st == PS_OK && job->consistency != PS_ASYNC)
        st = ps_barrier_create(job, srv->stores, &srv->barrier, err);
    /* sync discards a rank's held pushes when it reconnects; async and ssp apply on arrival, so
     * a retried step's pushes that got here before are told apart by their (step, part) */
    if (st == PS_OK && job->consistency != PS_SYNC)
        st = ps_replay_create(job->num_workers, &srv->replay, err);
    if (st == PS_OK && ((srv->finished = calloc(W, 1)) == NULL ||
                        (srv->push_step = calloc(W, sizeof(uint64_t))) == NULL))
        st = ps_error_set(err, PS_NOMEM, "server: out of memory");
    if (st == PS_OK && with_state) st = apply_state(srv, &state, err);
    free_state(&state);
    if (st != PS_OK) goto fail;
    uv_timer_init(&srv->loop, &srv->end_timer);
    srv->end_timer.data = srv;
    uv_timer_init(&srv->loop, &srv->barrier_timer);
    srv->barrier_timer.data = srv;
    uv_timer_init(&srv->loop, &srv->sweep_timer);
    srv->sweep_timer.data = srv;
    {   /* often enough that a deadline is kept within a quarter of the shortest one */
        uint64_t every = job->hello_timeout_ms;
        if (job->idle_timeout_ms > 0 && job->idle_timeout_ms < every) every = job->idle_timeout_ms;
        every = every / 4 > 10 ? every / 4 : 10;
        uv_timer_start(&srv->sweep_timer, on_sweep, every, every);
        uv_unref((uv_handle_t *)&srv->sweep_timer); /* it never keeps the loop alive by itself */
    }
    uv_tcp_init(&srv->loop, &srv->listener);
    srv->listener.data = srv;
    uv_async_init(&srv->loop, &srv->stop_async, on_stop_async);
    srv->stop_async.data = srv;
    if (opt->handle_signals) {
        st = ps_signals_catch((const int[]){SIGINT, SIGTERM, SIGUSR1}, 3, &srv->sig_fd, err);
        if (st == PS_OK) rc = uv_poll_init(&srv->loop, &srv->sig_poll, srv->sig_fd);
        if (st == PS_OK && rc == 0) {
            srv->sig_poll.data = srv;
            uv_poll_start(&srv->sig_poll, UV_READABLE, on_signals_readable);
        } else {
            if (st == PS_OK) st = ps_error_set(err, PS_IO, "signals: %s", uv_strerror(rc));
            srv->opt.handle_signals = false; /* nothing to close */
        }
    }
    uv_timer_init(&srv->loop, &srv->ckpt_timer);
    uv_async_init(&srv->loop, &srv->ckpt_wake, on_ckpt_wake);
    uv_async_init(&srv->loop, &srv->ckpt_async, on_ckpt_async);
    srv->ckpt_timer.data = srv->ckpt_wake.data = srv->ckpt_async.data = srv;
    if (job->checkpoint_every_s > 0) {
        const uint64_t ms = (uint64_t)job->checkpoint_every_s * 1000;
        uv_timer_start(&srv->ckpt_timer, on_ckpt_timer, ms, ms);
        uv_unref((uv_handle_t *)&srv->ckpt_timer);
    }
    if (st == PS_OK) st = bind_listener(srv, err);
    if (st != PS_OK) {
        begin_stop(srv);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        goto fail;
    }
    *out = srv;
    return PS_OK;
fail:
    free(srv->finished), free(srv->push_step);
    ps_barrier_destroy(srv->barrier);
    ps_replay_destroy(srv->replay);
    for (size_t i = 0; i < PS_MAX_TABLES; i++) ps_store_destroy(srv->stores[i]);
    ps_pool_destroy(srv->pool);
    ps_tls_ctx_destroy(srv->tls);
    uv_loop_close(&srv->loop);
    free(srv);
    return st;
}

int ps_server_port(const ps_server *s) { return s->port; }

const char *ps_server_bound(const ps_server *s) { return s->addr; }

const char *ps_server_advertised(const ps_server *s) { return s->advertise; }

ps_status ps_server_run(ps_server *srv, ps_error *err) {
    ps_log(&srv->opt.log, PS_LOG_INFO, "shard %u of %u serving %zu tables on %s (bound to %s)",
           srv->opt.shard, srv->job->num_servers, srv->job->num_tables, srv->advertise, srv->addr);
    /* Within busy_poll_us of the last read the loop polls instead of sleeping: the next request
     * of a training step is usually that close, and waking from sleep costs more (see config.h). */
    const uint64_t poll_ns =
        srv->job->server_busy_poll_us > 0 ? (uint64_t)srv->job->server_busy_poll_us * 1000 : 0;
    if (srv->opt.end_with_job && srv->job->job_deadline_s > 0 && !srv->stopping)
        uv_timer_start(&srv->end_timer, on_deadline, (uint64_t)srv->job->job_deadline_s * 1000,
                       0);
    /* restored from a checkpoint taken after every worker finished: the job is over already */
    if (srv->n_finished == srv->job->num_workers && !srv->stopping) {
        if (srv->opt.end_with_job)
            ps_log(&srv->opt.log, PS_LOG_WARN, "every worker of job %s finished before this "
                   "start (%s): nothing to train; to train it again, empty that directory or "
                   "change job_id", srv->job->job_id, srv->job->checkpoint_dir);
        workers_done(srv);
    }
    for (;;) {
        bool hot = poll_ns > 0 && uv_hrtime() - srv->last_read_ns < poll_ns;
        if (uv_run(&srv->loop, hot ? UV_RUN_NOWAIT : UV_RUN_ONCE) == 0) break;
    }
    if (srv->end_failed) return ps_error_set(err, PS_TIMEOUT, "%s", srv->end_msg);
    return PS_OK;
}

void ps_server_stop(ps_server *s) { uv_async_send(&s->stop_async); }

void ps_server_destroy(ps_server *srv) {
    if (srv == NULL) return;
    if (!srv->stopping) begin_stop(srv);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv->loop);
    ps_barrier_destroy(srv->barrier);
    ps_replay_destroy(srv->replay);
    free(srv->finished), free(srv->push_step);
    for (size_t i = 0; i < PS_MAX_TABLES; i++) ps_store_destroy(srv->stores[i]);
    ps_pool_destroy(srv->pool);
    ps_frame_cache_clear(&srv->fcache);
    free(srv->shm_grads);
    ps_tls_ctx_destroy(srv->tls); /* after the loop: every connection's session is gone */
    free(srv);
}

ps_store *ps_server_store(ps_server *s, uint32_t table) {
    return table < s->job->num_tables ? s->stores[table] : NULL;
}
