/* checkpoint.c - write and restore a shard's tables and job state (format in checkpoint.h and
 * the README).
 *
 * Writing streams each table's rows (ps_store_scan_from), then its pending admission counts (a
 * snapshot taken when the checkpoint opens), into blocks of BLOCK_ROWS records, each with its
 * CRC32C, through NBUF buffers and a thread doing plain write(2). Restoring reads a file twice:
 * once to check every crc and the end block (so a bad file costs nothing but time, and an older
 * generation is used), then to put the rows this shard now owns. Version 1 files (zlib crc32,
 * no stamps, no pending keys, no job state) are still read. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>
#include <zlib.h>

#include "barrier.h"
#include "crc32c.h"
#include "hash.h"

#define MAGIC "PSCKPT\0\0"
#define BLOCK_ROWS 4096u
#define END_TABLE 0xffffffffu
#define PENDING_BIT 0x80000000u /* a block's table field: pending admission counts of the table */
#define PENDING_BYTES 16u        /* key u64, age_steps u32, count u32 */
#define MAX_WORKERS 4096u        /* cluster.workers' limit (config.c) */

typedef struct {
    char name[PS_TABLE_NAME_MAX];
    uint32_t dim, state_len, form, rowwise;
    double lr, eps, g0, lr_decay, weight_decay;
    uint64_t rows;
    uint32_t stamps;  /* v2: PS_STAMP_* ages each row record carries */
    uint64_t pending; /* v2: pending admission counts */
} table_rec;

typedef struct {
    uint32_t version;
    char job_id[64];
    uint64_t generation, created_ms;
    uint32_t shard, num_shards, num_tables;
    table_rec t[PS_MAX_TABLES];
    /* v2: the job state */
    uint32_t consistency, workers;
    uint64_t applied;
    uint64_t clock[MAX_WORKERS];
    uint8_t rank_state[MAX_WORKERS], finished[MAX_WORKERS];
} header;

/* --- little-endian fields (the hosts we build for are little-endian: memcpy) ----------------- */

static uint8_t *put(uint8_t *p, const void *v, size_t n) { return (uint8_t *)memcpy(p, v, n) + n; }
static const uint8_t *get(const uint8_t *p, void *v, size_t n) { memcpy(v, p, n); return p + n; }

/* Header bytes before its crc: magic, version, job_id, gen, time, shard, count, tables, then
 * per table name[64] dim state_len form rowwise lr eps g0 lr_decay weight_decay rows (v2: stamps
 * pending); v2: consistency workers applied, per rank clock u64, state u8, finished u8. */
#define FIXED_BYTES (8 + 4 + 64 + 8 + 8 + 4 + 4 + 4)
static size_t table_bytes(uint32_t version) { return 64 + 16 + 40 + 8 + (version >= 2 ? 12 : 0); }
static size_t header_bytes(uint32_t version, uint32_t num_tables, uint32_t workers) {
    size_t n = FIXED_BYTES + (size_t)num_tables * table_bytes(version);
    return version >= 2 ? n + 16 + (size_t)workers * 10 : n;
}
#define HEADER_MAX (header_bytes(PS_CKPT_VERSION, PS_MAX_TABLES, MAX_WORKERS) + 4)

/* The block and header checksum of a version: CRC32C from 2 on, zlib's crc32 before. */
static uint32_t checksum(uint32_t version, const uint8_t *p, size_t n) {
    return version >= 2 ? ps_crc32c(0, p, n) : (uint32_t)crc32(0L, p, (uInt)n);
}

/* Bytes of one row record: key, weights, accumulators, step, then the ages of stamps. */
static size_t record_bytes(const table_rec *t) {
    return 12 + 4 * (size_t)(t->dim + t->state_len) + 4 * (size_t)__builtin_popcount(t->stamps & 3u);
}

static size_t encode_header(const header *h, uint8_t *buf) {
    uint8_t *p = put(buf, MAGIC, 8);
    p = put(p, &h->version, 4), p = put(p, h->job_id, 64), p = put(p, &h->generation, 8);
    p = put(p, &h->created_ms, 8), p = put(p, &h->shard, 4), p = put(p, &h->num_shards, 4);
    p = put(p, &h->num_tables, 4);
    for (uint32_t i = 0; i < h->num_tables; i++) {
        const table_rec *t = &h->t[i];
        p = put(p, t->name, 64), p = put(p, &t->dim, 4), p = put(p, &t->state_len, 4);
        p = put(p, &t->form, 4), p = put(p, &t->rowwise, 4), p = put(p, &t->lr, 8);
        p = put(p, &t->eps, 8), p = put(p, &t->g0, 8), p = put(p, &t->lr_decay, 8);
        p = put(p, &t->weight_decay, 8), p = put(p, &t->rows, 8);
        p = put(p, &t->stamps, 4), p = put(p, &t->pending, 8);
    }
    p = put(p, &h->consistency, 4), p = put(p, &h->workers, 4), p = put(p, &h->applied, 8);
    for (uint32_t r = 0; r < h->workers; r++)
        p = put(p, &h->clock[r], 8), p = put(p, &h->rank_state[r], 1),
        p = put(p, &h->finished[r], 1);
    uint32_t crc = ps_crc32c(0, buf, (size_t)(p - buf));
    p = put(p, &crc, 4);
    return (size_t)(p - buf);
}

static void table_of(const ps_table_spec *spec, table_rec *t) {
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", spec->name);
    t->dim = spec->dim, t->state_len = ps_table_state_len(spec);
    t->form = (uint32_t)spec->opt.form, t->rowwise = spec->opt.rowwise;
    t->lr = spec->opt.learning_rate, t->eps = spec->opt.epsilon;
    t->g0 = spec->opt.initial_accumulator_value, t->lr_decay = spec->opt.lr_decay;
    t->weight_decay = spec->opt.weight_decay;
}

/* --- file names ----------------------------------------------------------------------------- */

typedef struct {
    uint32_t shard, count;
    uint64_t gen;
    char name[256];
} entry;

/* "shard-I-of-S.gen-G.ckpt" -> true and its numbers. */
static bool parse_name(const char *name, entry *e) {
    int end = 0;
    if (sscanf(name, "shard-%" SCNu32 "-of-%" SCNu32 ".gen-%" SCNu64 ".ckpt%n", &e->shard,
               &e->count, &e->gen, &end) != 3 ||
        end == 0 || name[end] != '\0' || e->count == 0 || e->shard >= e->count)
        return false;
    snprintf(e->name, sizeof(e->name), "%s", name);
    return true;
}

/* The checkpoint files in dir, malloc'd in *out (NULL when none). A missing dir holds none. */
static ps_status list_dir(const char *dir, entry **out, size_t *n_out, ps_error *err) {
    *out = NULL, *n_out = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT) return PS_OK;
        return ps_error_set(err, PS_IO, "%s: %s", dir, strerror(errno));
    }
    entry *v = NULL, e;
    size_t n = 0, cap = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (strlen(de->d_name) >= sizeof(e.name) || !parse_name(de->d_name, &e)) continue;
        if (n == cap) {
            entry *nv = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof(*v));
            if (nv == NULL) {
                free(v), closedir(d);
                return ps_error_set(err, PS_NOMEM, "%s: out of memory listing it", dir);
            }
            v = nv;
        }
        v[n++] = e;
    }
    closedir(d);
    *out = v, *n_out = n;
    return PS_OK;
}

ps_status ps_checkpoint_last_generation(const char *dir, uint64_t *gen, ps_error *err) {
    entry *v;
    size_t n;
    *gen = 0;
    ps_status st = list_dir(dir, &v, &n, err);
    for (size_t i = 0; i < n; i++)
        if (v[i].gen > *gen) *gen = v[i].gen;
    free(v);
    return st;
}

/* Removes the generations of shard-of-count older than the newest one before keep. */
static void prune(const char *dir, uint32_t shard, uint32_t count, uint64_t keep) {
    entry *v;
    size_t n;
    if (list_dir(dir, &v, &n, NULL) != PS_OK) return;
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].shard == shard && v[i].count == count && v[i].gen < keep && v[i].gen > prev)
            prev = v[i].gen;
    for (size_t i = 0; i < n; i++) {
        if (v[i].shard != shard || v[i].count != count || v[i].gen >= prev) continue;
        char path[PS_PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s", dir, v[i].name);
        unlink(path);
    }
    free(v);
}

/* Removes the temporary files of shard-of-count that a killed writer left (each as big as a
 * checkpoint); one writer per shard at a time, so none of them is in use. */
static void remove_stale_tmp(const char *dir, uint32_t shard, uint32_t count) {
    DIR *d = opendir(dir);
    if (d == NULL) return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        uint32_t i, n;
        uint64_t g;
        int end = 0;
        if (sscanf(de->d_name, ".shard-%" SCNu32 "-of-%" SCNu32 ".gen-%" SCNu64 ".tmp%n", &i, &n,
                   &g, &end) != 3 || end == 0 || de->d_name[end] != '\0' || i != shard ||
            n != count)
            continue;
        char path[PS_PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

/* The rename is atomic already; syncing the directory makes it survive a power loss too. */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd); /* best effort: some filesystems refuse fsync on a directory */
    close(fd);
}

/* --- writing: the loop thread copies rows into blocks, a thread writes them ------------------ */

#define NBUF 4 /* blocks in flight: ~2 MiB at dim 16 */
/* The writer thread's nice value (README: 0, 5 and 10 measured; -DWRITER_NICE=N to compare) */
#ifndef WRITER_NICE
#define WRITER_NICE 5
#endif

struct ps_ckpt_writer {
    char path[PS_PATH_MAX + 64], tmp[PS_PATH_MAX + 64], dir[PS_PATH_MAX];
    uint32_t shard, num_shards;
    int fd;
    header h;
    ps_ckpt_notify notify;
    void *ud;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a buffer came free, a block was queued, or the thread ended */
    uint8_t *buf[NBUF];
    size_t len[NBUF]; /* bytes before the crc32 */
    bool is_end[NBUF];
    int free_[NBUF], n_free; /* buffers the loop thread may fill */
    int queue[NBUF], q_head, q_n; /* filled buffers, in order */
    bool abort, finished;
    ps_status st; /* the thread's */
    ps_error err;
    uint64_t bytes;
    /* the loop thread's scan position; the rows it queued per table */
    uint32_t table;
    size_t next_row;
    bool rows_done;  /* of table: its pending keys come next */
    size_t next_pending;
    bool queued_end;
    uint64_t counts[PS_MAX_TABLES];
    ps_pending_key *pend[PS_MAX_TABLES]; /* the snapshot at open, (h.t[i].pending) each */
};

typedef struct {
    uint8_t *p;
    size_t wb, ab;
    uint32_t stamps;
} row_sink;

static bool on_row(void *ud, uint64_t key, const float *wt, const float *acc, uint32_t step,
                   uint32_t age_steps, uint32_t age_s) {
    row_sink *k = ud;
    k->p = put(k->p, &key, 8);
    if (acc == wt + k->wb / 4) /* as the store lays a row out: one copy for both */
        k->p = put(k->p, wt, k->wb + k->ab);
    else
        k->p = put(k->p, wt, k->wb), k->p = put(k->p, acc, k->ab);
    k->p = put(k->p, &step, 4);
    if (k->stamps & PS_STAMP_STEPS) k->p = put(k->p, &age_steps, 4);
    if (k->stamps & PS_STAMP_SECONDS) k->p = put(k->p, &age_s, 4);
    return true;
}

static ps_status write_all(ps_ckpt_writer *w, const uint8_t *p, size_t n, off_t at) {
    while (n > 0) {
        ssize_t k = at >= 0 ? pwrite(w->fd, p, n, at) : write(w->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return ps_error_set(&w->err, PS_IO, "%s: write: %s", w->tmp, strerror(errno));
        p += k, n -= (size_t)k;
        if (at >= 0) at += k; else w->bytes += (uint64_t)k;
    }
    return PS_OK;
}

/* The end: the header with the row counts over its placeholder, fsync, rename, fsync the dir,
 * and the generations before the one before go. */
static ps_status seal(ps_ckpt_writer *w) {
    uint8_t *hb = malloc(HEADER_MAX);
    if (hb == NULL) return ps_error_set(&w->err, PS_NOMEM, "%s: out of memory", w->tmp);
    ps_status st = write_all(w, hb, encode_header(&w->h, hb), 0);
    free(hb);
    if (st != PS_OK) return st;
    if (fsync(w->fd) != 0) /* where a full disk often shows first */
        return ps_error_set(&w->err, PS_IO, "%s: fsync: %s", w->tmp, strerror(errno));
    const int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0 || rename(w->tmp, w->path) != 0)
        return ps_error_set(&w->err, PS_IO, "%s: %s", w->path, strerror(errno));
    sync_dir(w->dir);
    prune(w->dir, w->shard, w->num_shards, w->h.generation);
    return PS_OK;
}

static void *writer_main(void *arg) {
    ps_ckpt_writer *w = arg;
    ps_status st = PS_OK;
    /* Below the loop thread when the CPUs are contended: the checkpoint may take longer, the
     * pushes it overlaps should not (Linux: a thread's own nice value; best effort). */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WRITER_NICE);
    for (bool end = false; !end && st == PS_OK;) {
        pthread_mutex_lock(&w->mu);
        while (!w->abort && w->q_n == 0) pthread_cond_wait(&w->cv, &w->mu);
        if (w->abort) {
            pthread_mutex_unlock(&w->mu);
            st = ps_error_set(&w->err, PS_CLOSED, "%s: abandoned", w->tmp);
            break;
        }
        const int b = w->queue[w->q_head];
        end = w->is_end[b];
        pthread_mutex_unlock(&w->mu);
        const uint32_t crc = ps_crc32c(0, w->buf[b], w->len[b]);
        memcpy(w->buf[b] + w->len[b], &crc, 4);
        st = write_all(w, w->buf[b], w->len[b] + 4, -1);
        if (st == PS_OK && end) st = seal(w);
        pthread_mutex_lock(&w->mu);
        w->q_head = (w->q_head + 1) % NBUF, w->q_n--;
        w->free_[w->n_free++] = b;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        if (!end && st == PS_OK && w->notify) w->notify(w->ud);
    }
    if (w->fd >= 0) close(w->fd), w->fd = -1;
    if (st != PS_OK) unlink(w->tmp);
    pthread_mutex_lock(&w->mu);
    w->st = st, w->finished = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->notify) w->notify(w->ud);
    return NULL;
}

/* The job state into the header; none (no ranks) when state is NULL or has no workers. */
static ps_status set_state(header *h, const ps_job_config *job, const ps_ckpt_state *state,
                           ps_error *err) {
    h->consistency = (uint32_t)job->consistency;
    if (state == NULL || state->workers == 0) return PS_OK;
    if (state->workers > MAX_WORKERS)
        return ps_error_set(err, PS_INVALID_ARG, "checkpoint: %u workers, at most %u",
                            state->workers, MAX_WORKERS);
    h->workers = state->workers, h->applied = state->applied;
    memcpy(h->clock, state->clock, state->workers * sizeof(*h->clock));
    memcpy(h->rank_state, state->rank_state, state->workers);
    memcpy(h->finished, state->finished, state->workers);
    return PS_OK;
}

ps_status ps_ckpt_writer_open(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                              ps_store *const *stores, const ps_ckpt_state *state,
                              const char *dir, uint64_t gen, ps_ckpt_notify notify, void *ud,
                              ps_ckpt_writer **out, ps_error *err) {
    ps_ckpt_writer *w = calloc(1, sizeof(*w));
    if (w == NULL) return ps_error_set(err, PS_NOMEM, "checkpoint: out of memory");
    snprintf(w->dir, sizeof(w->dir), "%s", dir);
    snprintf(w->path, sizeof(w->path), "%s/shard-%u-of-%u.gen-%" PRIu64 ".ckpt", dir, shard,
             num_shards, gen);
    snprintf(w->tmp, sizeof(w->tmp), "%s/.shard-%u-of-%u.gen-%" PRIu64 ".tmp", dir, shard,
             num_shards, gen);
    w->shard = shard, w->num_shards = num_shards, w->notify = notify, w->ud = ud, w->fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    header *h = &w->h;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    h->version = PS_CKPT_VERSION, h->generation = gen, h->shard = shard;
    h->num_shards = num_shards, h->num_tables = (uint32_t)job->num_tables;
    h->created_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    snprintf(h->job_id, sizeof(h->job_id), "%s", job->job_id);
    size_t max_rb = PENDING_BYTES;
    ps_status st = set_state(h, job, state, err);
    if (st != PS_OK) goto fail;
    for (uint32_t i = 0; i < h->num_tables; i++) {
        table_of(&job->tables[i], &h->t[i]);
        h->t[i].stamps = ps_store_stamps(stores[i]);
        size_t rb = record_bytes(&h->t[i]);
        if (rb > max_rb) max_rb = rb;
        size_t np;
        /* the admission counts as of now: a copy, as the table may rehash while rows stream */
        if ((st = ps_store_pending_snapshot(stores[i], &w->pend[i], &np, err)) != PS_OK) goto fail;
        h->t[i].pending = np;
    }
    size_t cap = 8 + BLOCK_ROWS * max_rb + 4;
    if (cap < HEADER_MAX) cap = HEADER_MAX;
    for (int b = 0; b < NBUF; b++) {
        if ((w->buf[b] = malloc(cap)) == NULL) st = PS_NOMEM;
        w->free_[w->n_free++] = b;
    }
    if (st != PS_OK) {
        ps_error_set(err, st, "%s: out of memory", w->path);
        goto fail;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        st = ps_error_set(err, PS_IO, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    remove_stale_tmp(dir, shard, num_shards);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        st = ps_error_set(err, PS_IO, "%s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    /* the header's place: rewritten with the row counts at the end */
    if ((st = write_all(w, w->buf[0], encode_header(h, w->buf[0]), -1)) != PS_OK) {
        ps_error_set(err, st, "%s", w->err.msg);
        goto fail;
    }
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        st = ps_error_set(err, PS_IO, "checkpoint: cannot start a thread");
        goto fail;
    }
    w->started = true;
    *out = w;
    return PS_OK;
fail:
    if (w->fd >= 0) close(w->fd), unlink(w->tmp);
    w->fd = -1;
    ps_ckpt_writer_close(w, true, NULL, NULL);
    return st;
}

ps_status ps_ckpt_writer_fill(ps_ckpt_writer *w, ps_store *const *stores, bool wait, bool *done,
                              ps_error *err) {
    *done = w->queued_end;
    while (!w->queued_end) {
        pthread_mutex_lock(&w->mu);
        while (wait && w->n_free == 0 && !w->finished) pthread_cond_wait(&w->cv, &w->mu);
        if (w->finished || w->n_free == 0) {
            const bool failed = w->finished;
            pthread_mutex_unlock(&w->mu);
            return failed ? ps_error_set(err, w->st, "%s", w->err.msg) : PS_OK;
        }
        const int b = w->free_[--w->n_free];
        pthread_mutex_unlock(&w->mu);
        uint32_t n = 0, table = END_TABLE;
        while (w->table < w->h.num_tables) { /* the next rows, pending keys, or next table's */
            const table_rec *t = &w->h.t[w->table];
            if (!w->rows_done) {
                row_sink k = {.p = w->buf[b] + 8, .wb = 4 * (size_t)t->dim,
                              .ab = 4 * (size_t)t->state_len, .stamps = t->stamps};
                n = (uint32_t)ps_store_scan_from(stores[w->table], &w->next_row, BLOCK_ROWS,
                                                 on_row, &k);
                if (n > 0) {
                    table = w->table;
                    w->counts[table] += n;
                    w->len[b] = (size_t)(k.p - w->buf[b]);
                    break;
                }
                w->rows_done = true, w->next_pending = 0;
            }
            if (w->next_pending < t->pending) {
                const size_t left = t->pending - w->next_pending;
                n = left < BLOCK_ROWS ? (uint32_t)left : BLOCK_ROWS;
                uint8_t *p = w->buf[b] + 8;
                for (uint32_t i = 0; i < n; i++) {
                    const ps_pending_key *pk = &w->pend[w->table][w->next_pending++];
                    p = put(p, &pk->key, 8), p = put(p, &pk->age_steps, 4);
                    p = put(p, &pk->count, 4);
                }
                table = w->table | PENDING_BIT;
                w->len[b] = (size_t)(p - w->buf[b]);
                break;
            }
            w->table++, w->next_row = 0, w->rows_done = false;
        }
        if (table == END_TABLE) {
            w->len[b] = 8, w->queued_end = true;
            for (uint32_t i = 0; i < w->h.num_tables; i++) w->h.t[i].rows = w->counts[i];
        }
        memcpy(w->buf[b], &table, 4);
        memcpy(w->buf[b] + 4, &n, 4); /* the thread adds the crc: not the loop's time */
        pthread_mutex_lock(&w->mu);
        w->is_end[b] = table == END_TABLE;
        w->queue[(w->q_head + w->q_n) % NBUF] = b, w->q_n++;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    *done = true;
    return PS_OK;
}

bool ps_ckpt_writer_finished(ps_ckpt_writer *w) {
    pthread_mutex_lock(&w->mu);
    const bool f = w->finished;
    pthread_mutex_unlock(&w->mu);
    return f;
}

ps_status ps_ckpt_writer_close(ps_ckpt_writer *w, bool abort, ps_ckpt_info *info,
                               ps_error *err) {
    if (w == NULL) return PS_OK;
    ps_status st = PS_CLOSED;
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        if (abort || !w->queued_end) w->abort = true; /* a half-queued file cannot complete */
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        st = w->st;
        if (st != PS_OK) ps_error_set(err, st, "%s", w->err.msg);
    }
    if (st == PS_OK && info != NULL) {
        uint64_t rows = 0;
        for (uint32_t i = 0; i < w->h.num_tables; i++) rows += w->counts[i];
        *info = (ps_ckpt_info){.rows = rows, .bytes = w->bytes, .generation = w->h.generation,
                               .from_shards = w->num_shards};
    }
    for (int b = 0; b < NBUF; b++) free(w->buf[b]);
    for (int i = 0; i < PS_MAX_TABLES; i++) free(w->pend[i]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
    return st;
}

ps_status ps_checkpoint_write(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                              ps_store *const *stores, const ps_ckpt_state *state,
                              const char *dir, uint64_t gen, ps_ckpt_info *info, ps_error *err) {
    ps_ckpt_writer *w;
    ps_status st = ps_ckpt_writer_open(job, shard, num_shards, stores, state, dir, gen, NULL, NULL,
                                       &w, err);
    if (st != PS_OK) return st;
    bool done;
    st = ps_ckpt_writer_fill(w, stores, true, &done, err);
    ps_status cst = ps_ckpt_writer_close(w, st != PS_OK, info, st == PS_OK ? err : NULL);
    return st != PS_OK ? st : cst;
}

/* --- reading -------------------------------------------------------------------------------- */

static ps_status read_exact(FILE *f, const char *path, void *p, size_t n, const char *what,
                            ps_error *err) {
    if (fread(p, 1, n, f) == n) return PS_OK;
    if (ferror(f)) return ps_error_set(err, PS_IO, "%s: %s: %s", path, what, strerror(errno));
    return ps_error_set(err, PS_DATA, "%s: %s: file ends early (torn)", path, what);
}

/* buf: HEADER_MAX bytes. Reads the header of either version, checking its crc. */
static ps_status read_header(FILE *f, const char *path, uint8_t *buf, header *h, ps_error *err) {
    memset(h, 0, offsetof(header, clock)); /* the rank arrays are set for h->workers only */
    ps_status st = read_exact(f, path, buf, FIXED_BYTES, "header", err);
    if (st != PS_OK) return st;
    if (memcmp(buf, MAGIC, 8) != 0)
        return ps_error_set(err, PS_DATA, "%s: not a checkpoint (bad magic)", path);
    const uint8_t *p = get(buf + 8, &h->version, 4);
    if (h->version < 1 || h->version > PS_CKPT_VERSION)
        return ps_error_set(err, PS_DATA, "%s: format version %u, this build reads 1..%u", path,
                            h->version, PS_CKPT_VERSION);
    p = get(p, h->job_id, 64), p = get(p, &h->generation, 8), p = get(p, &h->created_ms, 8);
    p = get(p, &h->shard, 4), p = get(p, &h->num_shards, 4), p = get(p, &h->num_tables, 4);
    h->job_id[63] = '\0';
    if (h->num_tables > PS_MAX_TABLES)
        return ps_error_set(err, PS_DATA, "%s: header: %u tables", path, h->num_tables);
    size_t have = FIXED_BYTES, all = header_bytes(h->version, h->num_tables, 0);
    if (h->version >= 2) { /* the job state's size follows the tables */
        /* all: up to and with the job state's fixed 16 bytes (no ranks) */
        if ((st = read_exact(f, path, buf + have, all - have, "header", err)) != PS_OK) return st;
        have = all;
        memcpy(&h->workers, buf + all - 12, 4);
        if (h->workers > MAX_WORKERS)
            return ps_error_set(err, PS_DATA, "%s: header: %u workers", path, h->workers);
        all = header_bytes(h->version, h->num_tables, h->workers);
    }
    if ((st = read_exact(f, path, buf + have, all + 4 - have, "header", err)) != PS_OK) return st;
    uint32_t crc;
    memcpy(&crc, buf + all, 4);
    if (crc != checksum(h->version, buf, all))
        return ps_error_set(err, PS_DATA, "%s: header: %s mismatch", path,
                            h->version >= 2 ? "crc32c" : "crc32");
    for (uint32_t i = 0; i < h->num_tables; i++) {
        table_rec *t = &h->t[i];
        p = get(p, t->name, 64), p = get(p, &t->dim, 4), p = get(p, &t->state_len, 4);
        p = get(p, &t->form, 4), p = get(p, &t->rowwise, 4), p = get(p, &t->lr, 8);
        p = get(p, &t->eps, 8), p = get(p, &t->g0, 8), p = get(p, &t->lr_decay, 8);
        p = get(p, &t->weight_decay, 8), p = get(p, &t->rows, 8);
        t->stamps = 0, t->pending = 0;
        if (h->version >= 2) p = get(p, &t->stamps, 4), p = get(p, &t->pending, 8);
        t->name[63] = '\0';
        if (t->dim == 0 || t->dim > (1u << 20) || t->state_len > t->dim || t->stamps > 3)
            return ps_error_set(err, PS_DATA, "%s: header: table %u: dim %u, state %u, stamps %u",
                                path, i, t->dim, t->state_len, t->stamps);
    }
    if (h->version >= 2) {
        p = get(p, &h->consistency, 4), p = get(p, &h->workers, 4), p = get(p, &h->applied, 8);
        for (uint32_t r = 0; r < h->workers; r++) {
            p = get(p, &h->clock[r], 8), p = get(p, &h->rank_state[r], 1);
            p = get(p, &h->finished[r], 1);
            if (h->rank_state[r] > PS_RANK_DROPPED || h->finished[r] > 1)
                return ps_error_set(err, PS_DATA, "%s: header: rank %u: state %u, finished %u",
                                    path, r, h->rank_state[r], h->finished[r]);
        }
    }
    return PS_OK;
}

/* The header against the job: another job's file, or other tables, are refused outright. */
static ps_status match_job(const header *h, const ps_job_config *job, const char *path,
                           ps_error *err) {
    if (strcmp(h->job_id, job->job_id) != 0)
        return ps_error_set(err, PS_MISMATCH, "%s: written by job_id \"%s\", this job is \"%s\"",
                            path, h->job_id, job->job_id);
    if (h->num_tables != job->num_tables)
        return ps_error_set(err, PS_MISMATCH, "%s: %u tables, the job has %zu", path,
                            h->num_tables, job->num_tables);
    for (uint32_t i = 0; i < h->num_tables; i++) {
        table_rec want;
        table_of(&job->tables[i], &want);
        const table_rec *t = &h->t[i];
        if (strcmp(t->name, want.name) != 0 || t->dim != want.dim ||
            t->state_len != want.state_len)
            return ps_error_set(err, PS_MISMATCH,
                                "%s: table %u is \"%s\" dim %u (accumulators %u), the job's is "
                                "\"%s\" dim %u (accumulators %u)",
                                path, i, t->name, t->dim, t->state_len, want.name, want.dim,
                                want.state_len);
    }
    return PS_OK;
}

/* Reads a whole file, checking every crc, the row counts and the end. With stores, puts the rows
 * that ps_shard_of gives to shard of num_shards (*kept counts them). */
static ps_status read_file(const char *path, const ps_job_config *job, ps_store *const *stores,
                           uint32_t shard, uint32_t num_shards, header *h, uint64_t *kept,
                           uint64_t *bytes, ps_error *err) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
    size_t cap = HEADER_MAX;
    uint8_t *buf = malloc(cap);
    uint64_t counts[PS_MAX_TABLES] = {0}, pcounts[PS_MAX_TABLES] = {0};
    ps_status st = buf ? PS_OK : ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
    if (st == PS_OK) st = read_header(f, path, buf, h, err);
    if (st == PS_OK) st = match_job(h, job, path, err);
    for (size_t block = 0; st == PS_OK; block++) {
        char what[64];
        snprintf(what, sizeof(what), "block %zu", block);
        uint32_t hdr[2];
        if ((st = read_exact(f, path, hdr, 8, what, err)) != PS_OK) break;
        const uint32_t table = hdr[0] == END_TABLE ? END_TABLE : hdr[0] & ~PENDING_BIT, n = hdr[1];
        const bool pending = table != END_TABLE && (hdr[0] & PENDING_BIT) && h->version >= 2;
        if (table != END_TABLE && (table >= h->num_tables || n == 0 || n > BLOCK_ROWS ||
                                   (hdr[0] & PENDING_BIT && !pending))) {
            st = ps_error_set(err, PS_DATA, "%s: %s: table %u, %u rows", path, what, hdr[0], n);
            break;
        }
        const size_t rb = table == END_TABLE ? 0 : pending ? PENDING_BYTES
                                                           : record_bytes(&h->t[table]);
        const size_t need = 8 + n * rb + 4;
        if (need > cap) {
            uint8_t *nb = realloc(buf, need);
            if (nb == NULL) {
                st = ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb, cap = need;
        }
        memcpy(buf, hdr, 8);
        if ((st = read_exact(f, path, buf + 8, n * rb + 4, what, err)) != PS_OK) break;
        uint32_t crc;
        memcpy(&crc, buf + 8 + n * rb, 4);
        if (crc != checksum(h->version, buf, 8 + n * rb)) {
            st = ps_error_set(err, PS_DATA, "%s: %s: %s mismatch", path, what,
                              h->version >= 2 ? "crc32c" : "crc32");
            break;
        }
        if (table == END_TABLE) {
            for (uint32_t i = 0; i < h->num_tables && st == PS_OK; i++)
                if (counts[i] != h->t[i].rows || pcounts[i] != h->t[i].pending)
                    st = ps_error_set(err, PS_DATA, "%s: table %s: %" PRIu64 " rows and %" PRIu64
                                      " pending keys, header says %" PRIu64 " and %" PRIu64,
                                      path, h->t[i].name, counts[i], pcounts[i], h->t[i].rows,
                                      h->t[i].pending);
            if (st == PS_OK && fgetc(f) != EOF)
                st = ps_error_set(err, PS_DATA, "%s: bytes after the end block", path);
            break;
        }
        if (pending) {
            pcounts[table] += n;
            for (uint32_t r = 0; stores != NULL && r < n && st == PS_OK; r++) {
                const uint8_t *e = buf + 8 + r * rb;
                ps_pending_key pk;
                memcpy(&pk.key, e, 8), memcpy(&pk.age_steps, e + 8, 4);
                memcpy(&pk.count, e + 12, 4);
                if (ps_shard_of(table, pk.key, num_shards) != shard) continue;
                st = ps_store_pending_put(stores[table], &pk, err);
            }
            continue;
        }
        counts[table] += n;
        const table_rec *t = &h->t[table];
        const size_t ages_at = 12 + 4 * (size_t)(t->dim + t->state_len);
        for (uint32_t r = 0; stores != NULL && r < n && st == PS_OK; r++) {
            const uint8_t *row = buf + 8 + r * rb;
            uint64_t key;
            uint32_t step, age[2] = {0, 0};
            memcpy(&key, row, 8);
            if (ps_shard_of(table, key, num_shards) != shard) continue;
            memcpy(&step, row + ages_at - 4, 4);
            const uint8_t *a = row + ages_at;
            if (t->stamps & PS_STAMP_STEPS) memcpy(&age[0], a, 4), a += 4;
            if (t->stamps & PS_STAMP_SECONDS) memcpy(&age[1], a, 4);
            const float *w = (const float *)(row + 8); /* 4-byte aligned: rb % 4 == 0 */
            st = ps_store_put_aged(stores[table], key, w, w + t->dim, step, age[0], age[1], err);
            *kept += 1;
        }
    }
    if (bytes != NULL) *bytes += (uint64_t)ftell(f);
    fclose(f);
    free(buf);
    return st;
}

/* How far a rank got, to take the least of several files' states: live, dropped, finished. */
static int progress(uint8_t rank_state) {
    return rank_state == PS_RANK_LIVE ? 0 : rank_state == PS_RANK_DROPPED ? 1 : 2;
}

/* Folds file header h's job state into out (first: the first file read). Files of another
 * consistency or worker count, or of version 1, carry none that applies: out->workers = 0. */
static void merge_state(const header *h, const ps_job_config *job, bool first,
                        ps_ckpt_state *out) {
    const uint32_t W = job->num_workers;
    if (h->version < 2 || h->workers != W || h->consistency != (uint32_t)job->consistency) {
        out->workers = 0;
        return;
    }
    if (first) {
        out->workers = W, out->applied = h->applied;
        memcpy(out->clock, h->clock, W * sizeof(*out->clock));
        memcpy(out->rank_state, h->rank_state, W);
        memcpy(out->finished, h->finished, W);
        return;
    }
    if (out->workers == 0) return;
    if (h->applied < out->applied) out->applied = h->applied;
    for (uint32_t r = 0; r < W; r++) {
        if (h->clock[r] < out->clock[r]) out->clock[r] = h->clock[r];
        if (progress(h->rank_state[r]) < progress(out->rank_state[r]))
            out->rank_state[r] = h->rank_state[r];
        out->finished[r] &= h->finished[r];
    }
}

static int by_gen_desc(const void *a, const void *b) {
    const entry *x = a, *y = b;
    return x->gen < y->gen ? 1 : x->gen > y->gen ? -1 : 0;
}

ps_status ps_checkpoint_restore(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                                ps_store *const *stores, const char *dir, const ps_logger *log,
                                ps_ckpt_state *state, ps_ckpt_info *info, ps_error *err) {
    entry *v;
    size_t n;
    ps_status st = list_dir(dir, &v, &n, err);
    if (st != PS_OK) return st;
    if (n == 0) return ps_error_set(err, PS_NOT_FOUND, "%s: no checkpoint", dir);
    qsort(v, n, sizeof(*v), by_gen_desc); /* newest first: the first count seen is the newest */
    header h;
    char path[PS_PATH_MAX + 300];
    const entry **chosen = calloc(n, sizeof(*chosen));
    if (chosen == NULL) {
        free(v);
        return ps_error_set(err, PS_NOMEM, "%s: out of memory", dir);
    }
    st = ps_error_set(err, PS_DATA, "%s: no good checkpoint of shard %u of %u, nor a good set "
                      "of another shard count", dir, shard, num_shards);
    for (size_t c = 0; c < n; c++) {
        const uint32_t count = v[c].count;
        bool tried = false; /* each count once, at its newest generation */
        for (size_t j = 0; j < c && !tried; j++) tried = v[j].count == count;
        if (tried) continue;
        /* The same shard count: the hash gives this shard the rows of its own file and no
         * other's, so that file alone is read (a restarted shard needs no other's checkpoint);
         * another count: a set of every shard's file, each row kept where the hash puts it now */
        const bool own = count == num_shards;
        const uint32_t first = own ? shard : 0, end = own ? shard + 1 : count;
        uint32_t have = 0;
        uint64_t newest = 0;
        for (uint32_t i = first; i < end && have == i - first; i++) {
            for (size_t k = 0; k < n; k++) { /* newest good file of shard i of count */
                if (v[k].count != count || v[k].shard != i) continue;
                snprintf(path, sizeof(path), "%s/%s", dir, v[k].name);
                ps_error e = {0};
                ps_status fs = read_file(path, job, NULL, 0, 1, &h, NULL, NULL, &e);
                if (fs == PS_MISMATCH || fs == PS_NOMEM) {
                    st = ps_error_set(err, fs, "%s", e.msg);
                    goto done;
                }
                if (fs != PS_OK) {
                    ps_log(log, PS_LOG_WARN, "checkpoint %s; using an older generation", e.msg);
                    continue;
                }
                if (h.shard != v[k].shard || h.num_shards != v[k].count ||
                    h.generation != v[k].gen) {
                    /* a file copied or renamed: its rows and job state are another shard's */
                    st = ps_error_set(err, PS_MISMATCH,
                                      "%s: its header says shard %u of %u, generation %llu, not "
                                      "what its name says", path, h.shard, h.num_shards,
                                      (unsigned long long)h.generation);
                    goto done;
                }
                chosen[i - first] = &v[k], have++; /* have <= n */
                if (v[k].gen > newest) newest = v[k].gen;
                break;
            }
        }
        if (have < end - first) {
            ps_log(log, PS_LOG_WARN, "%s: checkpoints of %u shards: shard %u has no good file",
                   dir, count, first + have);
            continue;
        }
        ps_ckpt_info got = {.generation = newest, .from_shards = count};
        for (uint32_t i = first; i < end; i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, chosen[i - first]->name);
            st = read_file(path, job, stores, shard, num_shards, &h, &got.rows, &got.bytes, err);
            if (st != PS_OK) goto done;
            /* its own file says exactly where its ranks were; files of another count: the
             * least of them all, a lower bound the workers' Hellos raise */
            if (state != NULL) merge_state(&h, job, i == first, state);
        }
        if (info != NULL) *info = got;
        st = PS_OK;
        break;
    }
done:
    free(chosen);
    free(v);
    return st;
}

/* --- the finished ranks' journal --------------------------------------------------------------- */

#define FINISHED_HEAD "ps-finished 1"

ps_status ps_ckpt_finished_write(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                                 const uint8_t *finished, uint32_t W, ps_error *err) {
    const char *dir = job->checkpoint_dir;
    char path[PS_PATH_MAX + 64], tmp[PS_PATH_MAX + 80];
    snprintf(path, sizeof(path), "%s/shard-%u-of-%u.finished", dir, shard, num_shards);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ps_error_set(err, PS_IO, "%s: %s", dir, strerror(errno));
    FILE *f = fopen(tmp, "w");
    if (f == NULL) return ps_error_set(err, PS_IO, "%s: %s", tmp, strerror(errno));
    bool ok = fprintf(f, FINISHED_HEAD " workers=%u job_id=%s\n", W, job->job_id) > 0;
    for (uint32_t r = 0; r < W && ok; r++)
        if (finished[r]) ok = fprintf(f, "%u\n", r) > 0;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int why = errno;
    if (fclose(f) != 0 && ok) ok = false, why = errno;
    if (ok && rename(tmp, path) != 0) ok = false, why = errno;
    if (!ok) {
        unlink(tmp);
        return ps_error_set(err, PS_IO, "%s: %s", path, strerror(why));
    }
    sync_dir(dir);
    return PS_OK;
}

void ps_ckpt_finished_read(const ps_job_config *job, const char *dir, uint8_t *finished,
                           uint32_t W, const ps_logger *log, uint32_t *added) {
    *added = 0;
    DIR *d = opendir(dir);
    if (d == NULL) return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        uint32_t i, n;
        int end = 0;
        if (sscanf(de->d_name, "shard-%" SCNu32 "-of-%" SCNu32 ".finished%n", &i, &n, &end) != 2 ||
            end == 0 || de->d_name[end] != '\0')
            continue;
        char path[PS_PATH_MAX + 300], head[160];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            ps_log(log, PS_LOG_WARN, "%s: %s; passed over", path, strerror(errno));
            continue;
        }
        /* the head line whole: job_id may be empty */
        uint32_t w = 0, r;
        int at = 0;
        if (fgets(head, sizeof(head), f) == NULL ||
            sscanf(head, FINISHED_HEAD " workers=%" SCNu32 " job_id=%n", &w, &at) != 1 || at == 0) {
            ps_log(log, PS_LOG_WARN, "%s: not a list of finished ranks; passed over", path);
            fclose(f);
            continue;
        }
        head[strcspn(head, "\n")] = '\0';
        if (w != W || strcmp(head + at, job->job_id) != 0) {
            ps_log(log, PS_LOG_WARN, "%s: the finished ranks of job_id \"%s\" with %u workers, "
                   "this is \"%s\" with %u; passed over", path, head + at, w, job->job_id, W);
            fclose(f);
            continue;
        }
        while (fscanf(f, "%" SCNu32, &r) == 1)
            if (r < W && !finished[r]) finished[r] = 1, (*added)++;
        fclose(f);
    }
    closedir(d);
}
