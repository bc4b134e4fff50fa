/* launch.c - ps-launch: runs a whole job on this machine. Starts the job's servers (port 0 unless
 * the job names ports), then its workers, as child processes; prefixes their output; combines
 * the workers' progress events into one Keras-style line per epoch; forwards SIGINT/SIGTERM;
 * stops everything as soon as one child fails (exit code: that child's), exits 0 when training
 * ends. Exit 2 for usage and job-file errors. With --restart[=N] a server or worker that dies
 * abnormally (a signal, or a non-zero status other than 2: a usage or job-file error would only
 * fail again) is started again with the same arguments after a
 * short backoff, at most N times each: a server restores its checkpoint (server.checkpoint_dir)
 * and listens where it did; workers reconnect (cluster.recover_timeout_ms) and a restarted
 * worker resumes from its position file.
 *
 * The job's AUC is that of every worker's predictions pooled: each worker leaves its validation
 * pass's (score, label) pairs in a private directory (--pairs-dir, eval_pairs.h) and says how
 * many in its epoch event; once every worker has reported the epoch, the launcher reads them,
 * computes the AUC (metrics.h) and deletes them. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "cli.h"
#include "client.h"
#include "config.h"
#include "eval_pairs.h"
#include "metrics.h"
#include "progress.h"
#include "signals.h"
#include "stats.h"

#define MAX_LINE (64u << 10)
#define EPOCH_RING 1024
#define START_TIMEOUT_MS 15000
#define KILL_GRACE_MS 5000

typedef struct launcher launcher;

typedef struct {
    char *buf;
    size_t len;
} line_buf;

typedef struct {
    uv_process_t proc;
    uv_pipe_t out, err;
    launcher *L;
    bool is_worker;
    bool is_exporter; /* ps-export, run once training ends when fit.export_to is set */
    uint32_t index;
    char name[32];
    bool running;
    int open_pipes;
    line_buf lout, lerr;
    char addr[PS_ADDR_MAX]; /* servers: where it listens */
    /* --restart: how it was started, and how often it was started again */
    const char *bin, *flag;
    uint32_t restarts;
    uv_timer_t restart_timer;
    bool restart_timer_init;
} child;

typedef struct {
    bool seen, done;
    ps_progress p;
    bool has_pairs; /* its pairs of this epoch wait in pairs_dir */
    uint64_t pairs;
    ps_step_times times; /* where its steps' time went ("times" in its epoch event) */
} worker_epoch;

struct launcher {
    uv_loop_t *loop;
    uv_poll_t sig_poll; /* SIGINT/SIGTERM (signals.h), watched until every child is gone */
    int sig_fd;
    uv_timer_t timer;
    ps_job_config job;
    ps_cli cli; /* the job file (positional or --config), --set, --verbose */
    char auto_sets[3][64]; /* busy_poll_us -1, fit.threads 0: resolved for this machine
                              (after the user's --set) */
    size_t n_auto_sets;
    bool tty;
    bool evaluate; /* --evaluate: workers score the data once, nothing is trained */
    bool stats;    /* --stats: print the servers' table figures when training ends */
    uint32_t restart_max;      /* --restart[=N]: restarts allowed per child (0: none) */
    uint32_t restarts_pending; /* children waiting out their restart backoff */
    ps_job_config *stats_job; /* the job with the servers' real addresses, for the stats client */
    ps_client *stats_client;  /* made on first use; blocking calls, a few ms each */
    char bin_dir[PS_PATH_MAX];
    child *servers, *workers;
    child exporter;
    char *servers_set; /* cluster.servers=[...] as the servers listen, for workers and ps-export */
    uint32_t n_servers, n_workers;
    uint64_t *steps_of; /* (n_workers) a worker's steps per epoch once it has said; 0 before */
    uint32_t servers_listening, workers_done, children_running;
    bool workers_started, stopping, finished;
    bool late_kill;   /* the children are gone, something of theirs holds a pipe: on a deadline */
    int exit_code;
    /* combined progress */
    worker_epoch *ring; /* [EPOCH_RING][n_workers] */
    uint32_t shown;     /* epochs fully printed */
    bool announced;     /* "Epoch shown+1/E" printed */
    uint64_t total_samples;
    uint64_t t_start;
    char pairs_dir[PS_PATH_MAX]; /* "" when the job has no model */
    ps_eval_pair *pairs;         /* one epoch's pairs of all workers, reused */
    size_t pairs_cap;
};

static void stop_all(launcher *L, int sig, int exit_code);
static void append_server_stats(launcher *L, uint32_t epoch);

/* --- output ----------------------------------------------------------------------------------- */

static worker_epoch *slot(launcher *L, uint32_t epoch, uint32_t rank) {
    return &L->ring[(size_t)(epoch % EPOCH_RING) * L->n_workers + rank];
}

/* The job's figures for epoch e so far: sums over workers, the slowest worker's time. */
static bool combine(launcher *L, uint32_t e, ps_progress *out) {
    bool all_done = true, all_logloss = true, all_val_logloss = true;
    *out = (ps_progress){.epoch = e + 1, .epochs = L->job.fit.epochs};
    for (uint32_t r = 0; r < L->n_workers; r++) {
        worker_epoch *w = slot(L, e, r);
        all_done &= w->seen && w->done;
        if (!w->seen) continue;
        const ps_progress *p = &w->p;
        out->step += p->step, out->samples += p->samples;
        out->loss_sum += p->loss_sum, out->correct += p->correct;
        if (p->seconds > out->seconds) out->seconds = p->seconds;
        out->has_val |= p->has_val;
        out->val_samples += p->val_samples, out->val_loss_sum += p->val_loss_sum;
        out->val_correct += p->val_correct;
        out->logloss_sum += p->logloss_sum, out->val_logloss_sum += p->val_logloss_sum;
        all_logloss &= p->has_logloss, all_val_logloss &= p->has_val_logloss;
    }
    /* log losses add up like losses; the AUC does not (pool_auc) */
    out->has_logloss = all_done && all_logloss;
    out->has_val_logloss = all_done && all_val_logloss && out->has_val;
    /* steps per epoch do not change: a worker not heard from yet in e counts what it said before */
    for (uint32_t r = 0; r < L->n_workers; r++) {
        if (L->steps_of[r] == 0) {
            out->steps = 0; /* unknown: Keras prints "Unknown" */
            break;
        }
        out->steps += L->steps_of[r];
    }
    return all_done;
}

/* The job's AUC for epoch e, when every worker left its pairs: all of them pooled and ranked
 * together (a mean of the workers' AUCs is not the job's AUC). The files are deleted. */
static void pool_auc(launcher *L, uint32_t e, ps_progress *out) {
    bool all = true;
    for (uint32_t r = 0; r < L->n_workers; r++) all &= slot(L, e, r)->has_pairs;
    size_t n = 0;
    for (uint32_t r = 0; r < L->n_workers; r++) {
        const worker_epoch *w = slot(L, e, r);
        char path[PS_PATH_MAX + 64];
        ps_error err = {0};
        if (!w->has_pairs) continue;
        if (ps_eval_pairs_path(path, sizeof(path), L->pairs_dir, e + 1, r, &err) != PS_OK) {
            fprintf(stderr, "[launch] epoch %u: no AUC: %s\n", e + 1, err.msg);
            all = false;
            continue;
        }
        if (all && ps_eval_pairs_read(path, w->pairs, &L->pairs, &n, &L->pairs_cap, &err) !=
                       PS_OK) {
            fprintf(stderr, "[launch] epoch %u: no AUC: %s\n", e + 1, err.msg);
            all = false;
        }
        remove(path);
    }
    if (!all) return;
    const double auc = ps_metrics_auc(L->pairs, n);
    if (L->evaluate)
        out->has_auc = true, out->auc = auc;
    else
        out->has_val_auc = true, out->val_auc = auc;
}

static void render(launcher *L) {
    ps_progress p;
    while (L->shown < L->job.fit.epochs) {
        uint32_t e = L->shown;
        bool any = false;
        for (uint32_t r = 0; r < L->n_workers; r++) any |= slot(L, e, r)->seen;
        if (!any) return;
        if (!L->announced && L->job.fit.verbose > 0 && !L->evaluate) {
            printf("Epoch %u/%u\n", e + 1, L->job.fit.epochs);
            L->announced = true;
        }
        bool done = combine(L, e, &p);
        char line[512];
        if (!done) {
            bool heard_all = true; /* a bar of some workers only would jump back */
            for (uint32_t r = 0; r < L->n_workers; r++)
                heard_all &= slot(L, e, r)->seen || L->steps_of[r] != 0;
            if (L->tty && L->job.fit.verbose == 1 && heard_all) {
                ps_progress_format(&p, false, line, sizeof(line));
                printf("\r%s\033[K", line);
                fflush(stdout);
            }
            return;
        }
        pool_auc(L, e, &p);
        if (L->job.fit.verbose > 0) {
            ps_progress_format(&p, true, line, sizeof(line));
            printf(L->tty ? "\r%s\033[K\n" : "%s\n", line);
        }
        if (L->cli.verbose && !L->evaluate) { /* every worker's steps together */
            ps_step_times t = {0};
            for (uint32_t r = 0; r < L->n_workers; r++) {
                const ps_step_times *w = &slot(L, e, r)->times;
                t.data += w->data, t.wait += w->wait, t.compute += w->compute;
                t.send += w->send, t.other += w->other, t.prep += w->prep;
                t.shm_links += w->shm_links, t.links += w->links;
            }
            ps_progress_format_times(&t, p.step, line, sizeof(line));
            printf("%s\n", line);
        }
        if (L->job.fit.metrics_file[0] && !ps_progress_append_json(L->job.fit.metrics_file, &p))
            fprintf(stderr, "[launch] cannot append to %s\n", L->job.fit.metrics_file);
        if (L->job.fit.metrics_file[0] && !L->evaluate) append_server_stats(L, e + 1);
        L->total_samples += p.samples;
        for (uint32_t r = 0; r < L->n_workers; r++) *slot(L, e, r) = (worker_epoch){0};
        L->shown++;
        L->announced = false;
        fflush(stdout);
    }
}

/* --- server stats (--stats, fit.metrics_file) ------------------------------------------------ */

/* Every table on every shard, through an admin client of our own. NULL on failure (said). */
static ps_table_stats *server_stats(launcher *L) {
    ps_error err = {0};
    if (L->stats_client == NULL) {
        if (L->stats_job == NULL && (L->stats_job = malloc(sizeof(*L->stats_job))) == NULL) {
            fprintf(stderr, "[launch] server stats: out of memory\n");
            return NULL;
        }
        *L->stats_job = L->job;
        L->stats_job->servers_auto = false;
        for (uint32_t i = 0; i < L->n_servers; i++)
            snprintf(L->stats_job->servers[i], PS_ADDR_MAX, "%s", L->servers[i].addr);
        ps_client_options o = {.job = L->stats_job, .admin = true,
                               .log = {.level = PS_LOG_WARN}};
        snprintf(o.log.prefix, sizeof(o.log.prefix), "stats");
        if (ps_client_create(&o, &L->stats_client, &err) != PS_OK) {
            fprintf(stderr, "[launch] server stats: %s\n", err.msg);
            return NULL;
        }
    }
    ps_table_stats *st = calloc((size_t)L->n_servers * L->job.num_tables + 1, sizeof(*st));
    if (st == NULL || ps_client_stats(L->stats_client, st, &err) != PS_OK) {
        fprintf(stderr, "[launch] server stats: %s\n", st ? err.msg : "out of memory");
        free(st);
        return NULL;
    }
    return st;
}

/* Memory control is on somewhere: only then do server figures go to the metrics file (readers
 * of older files keep their one line per epoch). */
static bool memory_controlled(const ps_job_config *job) {
    bool on = job->server_max_memory_bytes != 0;
    for (size_t t = 0; t < job->num_tables; t++) {
        const ps_table_memory *m = &job->tables[t].mem;
        on |= m->admit_after > 1 || m->expire_after_steps || m->expire_after_seconds;
    }
    return on;
}

/* fit.metrics_file, with memory control: one more line per epoch, {"epoch": E, "server_stats":
 * [...]}, the servers' tables after it. */
static void append_server_stats(launcher *L, uint32_t epoch) {
    if (!memory_controlled(&L->job)) return;
    ps_table_stats *st = server_stats(L);
    if (st == NULL) return;
    FILE *f = fopen(L->job.fit.metrics_file, "a");
    if (f != NULL) {
        ps_stats_json(f, &L->job, st, epoch);
        fclose(f);
    } else {
        fprintf(stderr, "[launch] cannot append to %s\n", L->job.fit.metrics_file);
    }
    free(st);
}

static void print_server_stats(launcher *L) {
    ps_table_stats *st = server_stats(L);
    if (st == NULL) return;
    ps_stats_print(stdout, &L->job, st);
    fflush(stdout);
    free(st);
}

static double num(const cJSON *o, const char *k) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : 0.0;
}

/* An optional figure: *has says whether the event holds it; null (an undefined AUC) is NaN. */
static double opt_num(const cJSON *o, const char *k, bool *has) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    *has = cJSON_IsNumber(it) || cJSON_IsNull(it);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

/* "@ps {json}" from a worker. */
static void on_event(launcher *L, child *c, const char *json) {
    cJSON *o = cJSON_Parse(json);
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "ev");
    if (o == NULL || !cJSON_IsString(ev)) {
        fprintf(stderr, "[%s] bad event: %s\n", c->name, json);
        cJSON_Delete(o);
        return;
    }
    uint32_t e = (uint32_t)num(o, "epoch");
    if (e >= 1 && e - 1 >= L->shown && e - 1 < L->shown + EPOCH_RING) {
        worker_epoch *w = slot(L, e - 1, c->index);
        w->seen = true;
        w->done = strcmp(ev->valuestring, "epoch") == 0;
        ps_progress *p = &w->p;
        p->step = (uint64_t)num(o, "step"), p->steps = (uint64_t)num(o, "steps");
        if (p->steps != 0) L->steps_of[c->index] = p->steps;
        p->samples = (uint64_t)num(o, "samples"), p->loss_sum = num(o, "loss_sum");
        p->correct = (uint64_t)num(o, "correct"), p->seconds = num(o, "seconds");
        p->has_val = cJSON_GetObjectItemCaseSensitive(o, "val_samples") != NULL;
        p->val_samples = (uint64_t)num(o, "val_samples");
        p->val_loss_sum = num(o, "val_loss_sum");
        p->val_correct = (uint64_t)num(o, "val_correct");
        p->logloss_sum = opt_num(o, "logloss_sum", &p->has_logloss);
        p->val_logloss_sum = opt_num(o, "val_logloss_sum", &p->has_val_logloss);
        p->auc = opt_num(o, "auc", &p->has_auc);
        p->val_auc = opt_num(o, "val_auc", &p->has_val_auc);
        const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(o, "pairs");
        w->has_pairs = w->done && L->pairs_dir[0] != '\0' && cJSON_IsNumber(pairs);
        w->pairs = (uint64_t)num(o, "pairs");
        const cJSON *tm = cJSON_GetObjectItemCaseSensitive(o, "times");
        double *part[6] = {&w->times.data, &w->times.wait, &w->times.compute, &w->times.send,
                           &w->times.other, &w->times.prep};
        for (int i = 0; i < 6; i++) {
            const cJSON *x = cJSON_GetArrayItem(tm, i); /* NULL-safe; absent reads as 0 */
            *part[i] = cJSON_IsNumber(x) ? x->valuedouble : 0.0;
        }
        const cJSON *shm = cJSON_GetObjectItemCaseSensitive(o, "shm");
        const cJSON *k = cJSON_GetArrayItem(shm, 0), *n = cJSON_GetArrayItem(shm, 1);
        w->times.shm_links = cJSON_IsNumber(k) ? (uint32_t)k->valuedouble : 0;
        w->times.links = cJSON_IsNumber(n) ? (uint32_t)n->valuedouble : 0;
        if (L->cli.verbose && w->done) {
            char line[512];
            ps_progress_format(p, true, line, sizeof(line));
            fprintf(stderr, "[%s] epoch %u: %s\n", c->name, e, line);
        }
        render(L);
    }
    cJSON_Delete(o);
}

static void start_workers(launcher *L);

/* A routine log line of a child (common/log.c): "info: ..." or "[who] info: ...". */
static bool is_info_log(const char *line) {
    if (line[0] == '[') {
        const char *end = strstr(line, "] ");
        if (end == NULL) return false;
        line = end + 2;
    }
    return strncmp(line, "info: ", 6) == 0;
}

static void on_line(child *c, bool is_err, char *line) {
    launcher *L = c->L;
    if (!is_err && c->is_worker && strncmp(line, "@ps ", 4) == 0) {
        on_event(L, c, line + 4);
        return;
    }
    if (!is_err && !c->is_worker && c->addr[0] == '\0') {
        const char *at = strstr(line, "listening on ");
        if (at != NULL) {
            snprintf(c->addr, sizeof(c->addr), "%s", at + strlen("listening on "));
            if (L->cli.verbose) printf("[%s] %s\n", c->name, line);
            if (++L->servers_listening == L->n_servers) start_workers(L);
            return;
        }
    }
    if (!L->cli.verbose && is_info_log(line)) return; /* routine logs: --verbose */
    if (L->tty && L->announced) printf("\r\033[K"); /* keep the bar off other lines */
    if (line[0] == '[') /* already says who it is */
        fprintf(is_err ? stderr : stdout, "%s\n", line);
    else
        fprintf(is_err ? stderr : stdout, "[%s] %s\n", c->name, line);
    fflush(is_err ? stderr : stdout);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void maybe_finish(launcher *L);

static void pipe_closed(uv_handle_t *h) {
    child *c = h->data;
    c->open_pipes--;
    maybe_finish(c->L);
}

static void feed(child *c, line_buf *lb, bool is_err, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' || lb->len + 1 >= MAX_LINE) {
            lb->buf[lb->len] = '\0';
            on_line(c, is_err, lb->buf);
            lb->len = 0;
            if (p[i] == '\n') continue;
        }
        lb->buf[lb->len++] = p[i];
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    child *c = s->data;
    bool is_err = s == (uv_stream_t *)&c->err;
    line_buf *lb = is_err ? &c->lerr : &c->lout;
    if (nread > 0) feed(c, lb, is_err, buf->base, (size_t)nread);
    free(buf->base);
    if (nread < 0) {
        if (lb->len > 0) feed(c, lb, is_err, "\n", 1);
        uv_close((uv_handle_t *)s, pipe_closed);
    }
}

/* --- children --------------------------------------------------------------------------------- */

static void proc_closed(uv_handle_t *h) { (void)h; }

static void close_restart_timer(child *c) {
    if (c->restart_timer_init && !uv_is_closing((uv_handle_t *)&c->restart_timer))
        uv_close((uv_handle_t *)&c->restart_timer, NULL);
}

static void on_kill_timer(uv_timer_t *t);

static bool pipes_open(const launcher *L) {
    if (L->exporter.open_pipes > 0) return true;
    for (uint32_t i = 0; i < L->n_servers; i++)
        if (L->servers[i].open_pipes > 0) return true;
    for (uint32_t i = 0; i < L->n_workers; i++)
        if (L->workers[i].open_pipes > 0) return true;
    return false;
}

static void maybe_finish(launcher *L) {
    if (L->children_running > 0 || L->restarts_pending > 0 || L->finished) return;
    if (pipes_open(L)) { /* a child's own child (a wrapper's) still writes: not forever */
        if (!L->late_kill) uv_timer_start(&L->timer, on_kill_timer, KILL_GRACE_MS, 0);
        L->late_kill = true;
        return;
    }
    L->finished = true;
    for (uint32_t i = 0; i < L->n_servers; i++) close_restart_timer(&L->servers[i]);
    for (uint32_t i = 0; i < L->n_workers; i++) close_restart_timer(&L->workers[i]);
    uv_timer_stop(&L->timer);
    uv_close((uv_handle_t *)&L->timer, NULL);
    uv_close((uv_handle_t *)&L->sig_poll, NULL); /* the handlers stay: a late signal is moot */
}

static int start_exporter(launcher *L);
static int spawn_role(launcher *L, child *c, const char *bin, const char *flag, uint32_t index,
                      const char *listen, const char *servers_set);

/* "killed by SIGKILL", "exited with status 3" */
static void describe_exit(char *out, size_t n, int64_t status, int term_signal) {
    static const struct { int sig; const char *name; } names[] = {
        {SIGKILL, "SIGKILL"}, {SIGTERM, "SIGTERM"}, {SIGINT, "SIGINT"},   {SIGSEGV, "SIGSEGV"},
        {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGHUP, "SIGHUP"},   {SIGQUIT, "SIGQUIT"},
        {SIGFPE, "SIGFPE"},   {SIGILL, "SIGILL"},   {SIGPIPE, "SIGPIPE"},
    };
    if (term_signal == 0) {
        snprintf(out, n, "exited with status %lld", (long long)status);
        return;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].sig == term_signal) {
            snprintf(out, n, "killed by %s", names[i].name);
            return;
        }
    snprintf(out, n, "killed by signal %d", term_signal);
}

/* A child's restart backoff is over: the same arguments again (a server where it listened). */
static void on_restart_timer(uv_timer_t *t) {
    child *c = t->data;
    launcher *L = c->L;
    if (L->stopping) {
        L->restarts_pending--;
        maybe_finish(L);
        return;
    }
    if (c->open_pipes > 0) { /* the old process's output is still being read */
        uv_timer_start(t, on_restart_timer, 20, 0);
        return;
    }
    L->restarts_pending--;
    if (spawn_role(L, c, c->bin, c->flag, c->index, c->is_worker ? NULL : c->addr,
                   c->is_worker ? L->servers_set : NULL) != 0) {
        stop_all(L, SIGTERM, 1);
        maybe_finish(L);
    }
}

/* --restart: true when c died abnormally and may start again (scheduled here). */
static bool schedule_restart(launcher *L, child *c, int64_t status, int term_signal) {
    /* status 2: a usage or job-file error, which would only fail again */
    if (L->restart_max == 0 || c->is_exporter || (status == 0 && term_signal == 0) ||
        (term_signal == 0 && status == 2) ||
        c->restarts >= L->restart_max || (!c->is_worker && c->addr[0] == '\0'))
        return false;
    if (!c->restart_timer_init) {
        uv_timer_init(L->loop, &c->restart_timer);
        c->restart_timer.data = c;
        c->restart_timer_init = true;
    }
    c->restarts++;
    char how[64];
    describe_exit(how, sizeof(how), status, term_signal);
    fprintf(stderr, "[launch] %s %s; restarting (%u/%u)\n", c->name, how, c->restarts,
            L->restart_max);
    fflush(stderr);
    /* 250 ms, doubling: a server's port is free again at once (SO_REUSEADDR), and a crash loop
     * does not spin */
    uint64_t backoff = 250u << (c->restarts - 1 < 3 ? c->restarts - 1 : 3);
    L->restarts_pending++;
    uv_timer_start(&c->restart_timer, on_restart_timer, backoff, 0);
    return true;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal) {
    child *c = p->data;
    launcher *L = c->L;
    c->running = false;
    L->children_running--;
    uv_close((uv_handle_t *)p, proc_closed);
    if (L->stopping) {
        if (L->cli.verbose)
            fprintf(stderr, "[launch] %s stopped (status %lld, signal %d)\n", c->name,
                    (long long)status, term_signal);
        maybe_finish(L);
        return;
    }
    if (c->is_exporter && status == 0 && term_signal == 0) {
        stop_all(L, SIGTERM, 0);
        maybe_finish(L);
        return;
    }
    if (c->is_worker && status == 0 && term_signal == 0) {
        if (++L->workers_done == L->n_workers) {
            double s = (double)(uv_hrtime() - L->t_start) * 1e-9;
            if (L->job.fit.verbose > 0 && L->evaluate)
                printf("Evaluated %llu samples in %.2fs on %u server%s and %u worker%s\n",
                       (unsigned long long)L->total_samples, s, L->n_servers,
                       L->n_servers == 1 ? "" : "s", L->n_workers, L->n_workers == 1 ? "" : "s");
            else if (L->job.fit.verbose > 0)
                printf("Trained %u epoch%s: %llu samples in %.2fs (%.0f samples/s) on %u server%s "
                       "and %u worker%s\n",
                       L->job.fit.epochs, L->job.fit.epochs == 1 ? "" : "s",
                       (unsigned long long)L->total_samples, s,
                       s > 0 ? (double)L->total_samples / s : 0.0, L->n_servers,
                       L->n_servers == 1 ? "" : "s", L->n_workers, L->n_workers == 1 ? "" : "s");
            fflush(stdout);
            if (L->stats) print_server_stats(L); /* the servers still run */
            if (L->job.fit.export_to[0] == '\0' || L->evaluate)
                stop_all(L, SIGTERM, 0);
            else if (start_exporter(L) != 0)
                stop_all(L, SIGTERM, 1);
        }
        maybe_finish(L);
        return;
    }
    if (schedule_restart(L, c, status, term_signal)) return;
    int code = term_signal ? 128 + term_signal : (int)status;
    if (code == 0) code = 1; /* a server that stops on its own is a failure too */
    fprintf(stderr, "[launch] %s exited with %s %d; stopping the job\n", c->name,
            term_signal ? "signal" : "status", term_signal ? term_signal : (int)status);
    stop_all(L, SIGTERM, code);
    maybe_finish(L);
}

static int spawn(launcher *L, child *c, char **args) {
    c->L = L;
    if (c->lout.buf == NULL) c->lout.buf = malloc(MAX_LINE + 1);
    if (c->lerr.buf == NULL) c->lerr.buf = malloc(MAX_LINE + 1);
    c->lout.len = c->lerr.len = 0;
    if (c->lout.buf == NULL || c->lerr.buf == NULL) return UV_ENOMEM;
    uv_pipe_init(L->loop, &c->out, 0);
    uv_pipe_init(L->loop, &c->err, 0);
    c->out.data = c->err.data = c->proc.data = c;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = 0},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->err},
    };
    /* detached: a process group of its own (signal_child), and a terminal's Ctrl-C reaches the
     * launcher alone, which stops everything in order */
    uv_process_options_t o = {.exit_cb = on_exit_cb, .file = args[0], .args = args,
                              .stdio_count = 3, .stdio = stdio, .flags = UV_PROCESS_DETACHED};
    int rc = uv_spawn(L->loop, &c->proc, &o);
    if (rc != 0) {
        uv_close((uv_handle_t *)&c->out, NULL);
        uv_close((uv_handle_t *)&c->err, NULL);
        return rc;
    }
    c->running = true;
    c->open_pipes = 2;
    L->children_running++;
    uv_read_start((uv_stream_t *)&c->out, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&c->err, on_alloc, on_read);
    return 0;
}

/* busy_poll_us -1 (auto). Polling pays when the poller has a CPU to itself and starves a
 * neighbour when not: servers and workers poll only when every process of the job has a CPU.
 * (Servers used to poll whenever one CPU was left for the workers; with 1 server + 2 workers
 * on 2 CPUs that was slower on the seed, Fashion-MNIST and CTR jobs alike: README.) */
static void resolve_busy_poll(launcher *L) {
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const int client_us = (long)(L->n_servers + L->n_workers) <= cpus ? PS_BUSY_POLL_AUTO_US : 0;
    const int server_us = client_us;
    if (L->job.server_busy_poll_us < 0)
        snprintf(L->auto_sets[L->n_auto_sets++], sizeof(L->auto_sets[0]),
                 "server.busy_poll_us=%d", server_us);
    if (L->job.busy_poll_us < 0)
        snprintf(L->auto_sets[L->n_auto_sets++], sizeof(L->auto_sets[0]),
                 "cluster.busy_poll_us=%d", client_us);
}

/* fit.threads 0 (auto): BLAS threads spin, so a worker gets for BLAS only its equal share of
 * the CPUs the servers leave (one each), at least 1. The prep thread (train.c) comes on top
 * whenever there are 2 CPUs: it adds no work, it moves the batch preparation off the step's
 * path and sleeps otherwise (measured on 2 CPUs with 1 server + 2 workers: README). */
static void resolve_threads(launcher *L) {
    if (L->job.fit.threads != 0) return;
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long share = L->n_workers ? (cpus - (long)L->n_servers) / (long)L->n_workers : 1;
    if (share < 1) share = 1;
    snprintf(L->auto_sets[L->n_auto_sets++], sizeof(L->auto_sets[0]), "fit.threads=%ld",
             share + (cpus >= 2));
}

/* argv: BIN --config JOB [extra...] --set ... NULL; strings live in the launcher or static. */
static int spawn_role(launcher *L, child *c, const char *bin, const char *flag, uint32_t index,
                      const char *listen, const char *servers_set) {
    char path[PS_PATH_MAX + 16], idx[16];
    /* PS_SERVER_BIN / PS_WORKER_BIN replace the binaries next to ps-launch (tests, debugging). */
    const char *override =
        c->is_exporter ? NULL : getenv(c->is_worker ? "PS_WORKER_BIN" : "PS_SERVER_BIN");
    if (override != NULL && override[0] != '\0')
        snprintf(path, sizeof(path), "%s", override);
    else
        snprintf(path, sizeof(path), "%s/%s", L->bin_dir, bin);
    snprintf(idx, sizeof(idx), "%u", index);
    c->bin = bin, c->flag = flag;
    char *args[16 + 2 * (PS_CLI_MAX_SETS + 2)];
    size_t n = 0;
    args[n++] = path;
    args[n++] = "--config";
    args[n++] = (char *)L->cli.config;
    if (flag) args[n++] = (char *)flag, args[n++] = idx; /* ps-export has no index */
    if (listen) args[n++] = "--listen", args[n++] = (char *)listen;
    /* the launcher ends the job itself (ps-export, then SIGTERM): servers wait for it */
    if (!c->is_worker && !c->is_exporter) args[n++] = "--until-stopped";
    if (c->is_worker) args[n++] = "--events";
    if (c->is_worker && L->evaluate) args[n++] = "--evaluate";
    if (c->is_worker && L->pairs_dir[0]) args[n++] = "--pairs-dir", args[n++] = L->pairs_dir;
    for (size_t i = 0; i < L->cli.n_sets; i++) args[n++] = "--set", args[n++] = (char *)L->cli.sets[i];
    for (size_t i = 0; i < L->n_auto_sets; i++) args[n++] = "--set", args[n++] = L->auto_sets[i];
    if (servers_set) args[n++] = "--set", args[n++] = (char *)servers_set;
    if (L->cli.verbose) args[n++] = "--verbose";
    args[n] = NULL;
    int rc = spawn(L, c, args);
    if (rc != 0) fprintf(stderr, "[launch] cannot start %s: %s\n", path, uv_strerror(rc));
    return rc;
}

static void start_workers(launcher *L) {
    if (L->workers_started || L->stopping) return;
    L->workers_started = true;
    uv_timer_stop(&L->timer);
    if (!L->job.has_model) {
        printf("[launch] the job has no model: serving until SIGINT/SIGTERM\n");
        fflush(stdout);
        return;
    }
    /* cluster.servers=["h:p", ...] for every worker */
    size_t cap = 32 + (size_t)L->n_servers * (PS_ADDR_MAX + 4);
    char *set = malloc(cap);
    if (set == NULL) {
        stop_all(L, SIGTERM, 1);
        return;
    }
    size_t len = (size_t)snprintf(set, cap, "cluster.servers=[");
    for (uint32_t i = 0; i < L->n_servers; i++)
        len += (size_t)snprintf(set + len, cap - len, "%s\"%s\"", i ? "," : "",
                                L->servers[i].addr);
    snprintf(set + len, cap - len, "]");
    L->servers_set = set;
    L->t_start = uv_hrtime();
    for (uint32_t r = 0; r < L->n_workers; r++) {
        child *c = &L->workers[r];
        c->is_worker = true, c->index = r;
        snprintf(c->name, sizeof(c->name), "worker %u", r);
        if (spawn_role(L, c, "ps-worker", "--rank", r, NULL, set) != 0) {
            stop_all(L, SIGTERM, 1);
            break;
        }
    }
}

/* fit.export_to: every worker has finished; the servers still hold the weights. */
static int start_exporter(launcher *L) {
    child *c = &L->exporter;
    c->is_exporter = true;
    snprintf(c->name, sizeof(c->name), "export");
    return spawn_role(L, c, "ps-export", NULL, 0, NULL, L->servers_set);
}

/* Each child leads a process group of its own (spawn): a signal goes to the whole group, so a
 * wrapper script's own children (PS_SERVER_BIN, PS_WORKER_BIN) stop with it. A child that has
 * exited while something of its group still holds its output pipes is signalled too. */
static bool signal_child(child *c, int sig) {
    if (!c->running && c->open_pipes == 0) return false;
    if (kill(-c->proc.pid, sig) != 0 && c->running) uv_process_kill(&c->proc, sig);
    return true;
}

/* Calls f on every child: the exporter, the workers, then the servers. */
static void each_child(launcher *L, void (*f)(launcher *, child *, int), int sig) {
    f(L, &L->exporter, sig);
    for (uint32_t i = 0; i < L->n_workers; i++) f(L, &L->workers[i], sig);
    for (uint32_t i = 0; i < L->n_servers; i++) f(L, &L->servers[i], sig);
}

static void kill_late(launcher *L, child *c, int sig) {
    (void)L;
    const bool was_running = c->running;
    if (signal_child(c, sig) && was_running) /* its final checkpoint, say, was cut short */
        fprintf(stderr, "[launch] %s did not stop within %d ms; killed\n", c->name,
                KILL_GRACE_MS);
}

static void on_kill_timer(uv_timer_t *t) {
    launcher *L = t->data;
    each_child(L, kill_late, SIGKILL);
}

static void stop_one(launcher *L, child *c, int sig) {
    (void)L;
    signal_child(c, sig);
}

static void stop_all(launcher *L, int sig, int exit_code) {
    const bool again = L->stopping;
    if (!again) L->exit_code = exit_code;
    L->stopping = true;
    each_child(L, stop_one, sig);
    /* the deadline runs from the first stop: a second signal does not put it off */
    if (!again && (L->children_running > 0 || pipes_open(L)))
        uv_timer_start(&L->timer, on_kill_timer, KILL_GRACE_MS, 0);
}

static void on_start_timeout(uv_timer_t *t) {
    launcher *L = t->data;
    fprintf(stderr, "[launch] servers did not start listening within %d ms; stopping\n",
            START_TIMEOUT_MS);
    stop_all(L, SIGTERM, 1);
}

static void on_signals_readable(uv_poll_t *p, int status, int events) {
    launcher *L = p->data;
    (void)status, (void)events;
    for (int sig; !L->finished && (sig = ps_signals_next(L->sig_fd)) != 0;) {
        if (L->tty) printf("\n");
        fprintf(stderr, "[launch] signal %d: stopping the job\n", sig);
        stop_all(L, sig, 128 + sig);
        maybe_finish(L);
    }
}

/* --- main ------------------------------------------------------------------------------------- */

/* A private directory for the workers' pairs files; "" (no job-wide AUC) when it cannot be
 * made. */
static void make_pairs_dir(launcher *L) {
    char tmp[PS_PATH_MAX - 32];
    size_t len = sizeof(tmp);
    if (uv_os_tmpdir(tmp, &len) != 0) snprintf(tmp, sizeof(tmp), "/tmp");
    snprintf(L->pairs_dir, sizeof(L->pairs_dir), "%s/ps-launch-XXXXXX", tmp);
    if (mkdtemp(L->pairs_dir) == NULL) {
        fprintf(stderr, "[launch] no job-wide AUC: cannot make %s\n", L->pairs_dir);
        L->pairs_dir[0] = '\0';
    }
}

/* Files left by a job that stopped early, then the directory itself. */
static void remove_pairs_dir(launcher *L) {
    if (L->pairs_dir[0] == '\0') return;
    DIR *d = opendir(L->pairs_dir);
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.') continue;
        char path[2 * PS_PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", L->pairs_dir, de->d_name);
        remove(path);
    }
    if (d != NULL) closedir(d);
    rmdir(L->pairs_dir);
}

static const char usage[] =
    "usage: ps-launch JOB.json [--set KEY=VALUE ...] [--evaluate] [--stats] [--verbose]\n"
    "                 [--restart[=N]]\n"
    "\n"
    "Runs the job on this machine: cluster.servers servers, then cluster.workers workers, as\n"
    "child processes; prints one Keras-style line per epoch for the whole job.\n"
    "  --set KEY=VALUE  override a job key by its dotted path, for every process\n"
    "                   (e.g. --set fit.epochs=5 --set cluster.workers=1)\n"
    "  --evaluate       no training: the workers score data.validation (or data.train) with\n"
    "                   the weights the servers start from (fit.init_from): one line\n"
    "  --stats          when training ends, print each server's tables: rows, bytes, bytes\n"
    "                   per row, admitted, pending, evicted (as ps-stats)\n"
    "  --verbose        also print each worker's own line per epoch, server logs, and after\n"
    "                   each epoch's line where its steps' time went (all workers' steps)\n"
    "  --restart[=N]    start a server or worker that dies abnormally (a signal, a non-zero\n"
    "                   status but 2) again with the same arguments, at most N times each\n"
    "                   (default 3): servers restore server.checkpoint_dir, workers reconnect\n"
    "                   and resume from fit.state_dir\n"
    "With fit.export_to set, the weights are written there when training ends (ps-export).\n"
    "val_auc (binary models) is over all workers' predictions pooled: the workers leave them in\n"
    "a private directory under $TMPDIR, deleted epoch by epoch.\n"
    "Exit status: 0 when training ends; a failing child's status; 2 for a bad job file.\n";

int main(int argc, char **argv) {
    static launcher L;
    ps_cli_init(&L.cli, "ps-launch", usage, NULL);
    for (int i = 1; i < argc; i++) {
        int code;
        ps_cli_result r = ps_cli_arg(&L.cli, argc, argv, &i, &code);
        if (r == PS_CLI_EXIT) return code;
        if (r == PS_CLI_TAKEN) continue;
        if (strcmp(argv[i], "--evaluate") == 0) {
            L.evaluate = true;
        } else if (strcmp(argv[i], "--stats") == 0) {
            L.stats = true;
        } else if (strcmp(argv[i], "--restart") == 0) {
            L.restart_max = 3;
        } else if (strncmp(argv[i], "--restart=", 10) == 0) {
            char *end;
            unsigned long n = strtoul(argv[i] + 10, &end, 10);
            if (argv[i][10] == '\0' || *end != '\0' || n > 1000) {
                fprintf(stderr, "ps-launch: --restart=N takes a count from 0 to 1000, not \"%s\"\n",
                        argv[i] + 10);
                return 2;
            }
            L.restart_max = (uint32_t)n;
        } else if (argv[i][0] != '-' && L.cli.config == NULL) {
            L.cli.config = argv[i];
        } else if (argv[i][0] != '-') {
            fprintf(stderr, "ps-launch: one job file, please: \"%s\" and \"%s\"\n", L.cli.config,
                    argv[i]);
            return 2;
        } else {
            fprintf(stderr, "ps-launch: unknown or incomplete option \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }
    if (!ps_cli_load(&L.cli, &L.job)) return 2;
    if (L.evaluate) L.job.fit.epochs = 1; /* one pass, shown as Keras' evaluate shows it */
    size_t len = sizeof(L.bin_dir);
    if (uv_exepath(L.bin_dir, &len) != 0) {
        fprintf(stderr, "ps-launch: cannot find my own path\n");
        return 1;
    }
    char *slash = strrchr(L.bin_dir, '/');
    if (slash) *slash = '\0';
    L.tty = isatty(STDOUT_FILENO);
    L.loop = uv_default_loop();
    L.n_servers = L.job.num_servers, L.n_workers = L.job.num_workers;
    L.servers = calloc(L.n_servers, sizeof(child));
    L.workers = calloc(L.n_workers, sizeof(child));
    L.ring = calloc((size_t)EPOCH_RING * L.n_workers, sizeof(worker_epoch));
    L.steps_of = calloc(L.n_workers, sizeof(*L.steps_of));
    if (!L.servers || !L.workers || !L.ring || !L.steps_of) {
        fprintf(stderr, "ps-launch: out of memory\n");
        return 1;
    }
    resolve_busy_poll(&L);
    resolve_threads(&L); /* each worker sets its BLAS threads from fit.threads (ps-worker) */
    if (L.job.has_model) make_pairs_dir(&L);
    signal(SIGPIPE, SIG_IGN);
    char self[32]; /* the children end with the launcher, even one killed outright (cli.h) */
    snprintf(self, sizeof(self), "%ld", (long)getpid());
    setenv(PS_LAUNCH_PID_ENV, self, 1);
    ps_error serr = {0};
    if (ps_signals_catch((const int[]){SIGINT, SIGTERM, SIGHUP}, 3, &L.sig_fd, &serr) != PS_OK ||
        uv_poll_init(L.loop, &L.sig_poll, L.sig_fd) != 0) {
        fprintf(stderr, "ps-launch: %s\n", serr.msg[0] ? serr.msg : "signals: uv_poll_init");
        remove_pairs_dir(&L);
        return 1;
    }
    L.sig_poll.data = &L;
    uv_poll_start(&L.sig_poll, UV_READABLE, on_signals_readable);
    uv_timer_init(L.loop, &L.timer);
    L.timer.data = &L;
    uv_timer_start(&L.timer, on_start_timeout, START_TIMEOUT_MS, 0);

    for (uint32_t i = 0; i < L.n_servers; i++) {
        child *c = &L.servers[i];
        c->index = i;
        snprintf(c->name, sizeof(c->name), "server %u", i);
        if (spawn_role(&L, c, "ps-server", "--shard", i, L.job.servers[i], NULL) != 0) {
            stop_all(&L, SIGTERM, 1);
            break;
        }
    }
    maybe_finish(&L);
    uv_run(L.loop, UV_RUN_DEFAULT);
    uv_loop_close(L.loop);
    for (uint32_t i = 0; i < L.n_servers; i++) free(L.servers[i].lout.buf), free(L.servers[i].lerr.buf);
    for (uint32_t i = 0; i < L.n_workers; i++) free(L.workers[i].lout.buf), free(L.workers[i].lerr.buf);
    free(L.exporter.lout.buf), free(L.exporter.lerr.buf);
    free(L.servers), free(L.workers), free(L.ring), free(L.steps_of), free(L.servers_set);
    remove_pairs_dir(&L);
    free(L.pairs);
    ps_client_destroy(L.stats_client);
    free(L.stats_job);
    return L.exit_code;
}
