/* checkpoint.c - write and restore a shard's tables (format in checkpoint.h and the README).
 *
 * Writing streams each table's rows (ps_store_scan) into blocks of BLOCK_ROWS rows, each with its
 * crc32, through one buffer and plain write(2). Restoring reads a file twice: once to check every
 * crc and the end block (so a bad file costs nothing but time, and an older generation is used),
 * then to put the rows this shard now owns. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <zlib.h>

#include "hash.h"

#define MAGIC "PSCKPT\0\0"
#define BLOCK_ROWS 4096u
#define END_TABLE 0xffffffffu

typedef struct {
    char name[PS_TABLE_NAME_MAX];
    uint32_t dim, state_len, form, rowwise;
    double lr, eps, g0, lr_decay, weight_decay;
    uint64_t rows;
} table_rec;

typedef struct {
    uint32_t version;
    char job_id[64];
    uint64_t generation, created_ms;
    uint32_t shard, num_shards, num_tables;
    table_rec t[PS_MAX_TABLES];
} header;

/* --- little-endian fields (the hosts we build for are little-endian: memcpy) ----------------- */

static uint8_t *put(uint8_t *p, const void *v, size_t n) { return (uint8_t *)memcpy(p, v, n) + n; }
static const uint8_t *get(const uint8_t *p, void *v, size_t n) { memcpy(v, p, n); return p + n; }

/* Header bytes before its crc: magic, version, job_id, gen, time, shard, count, tables, then
 * per table name[64] dim state_len form rowwise lr eps g0 lr_decay weight_decay rows. */
static size_t header_bytes(uint32_t num_tables) {
    return 8 + 4 + 64 + 8 + 8 + 4 + 4 + 4 + (size_t)num_tables * (64 + 16 + 40 + 8);
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
    }
    uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(p - buf));
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

/* The rename is atomic already; syncing the directory makes it survive a power loss too. */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd); /* best effort: some filesystems refuse fsync on a directory */
    close(fd);
}

/* --- writing -------------------------------------------------------------------------------- */

typedef struct {
    int fd;
    const char *path;
    uint8_t *buf; /* the block being filled: [table u32][rows u32][rows...], room for its crc */
    size_t len;
    uint32_t table, n;
    size_t wb, ab; /* weight and accumulator bytes of a row of the table being written */
    uint64_t bytes;
    ps_status st;
    ps_error *err;
} writer;

static ps_status write_all(writer *w, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0)
            return w->st = ps_error_set(w->err, PS_IO, "%s: write: %s", w->path, strerror(errno));
        p += k, n -= (size_t)k, w->bytes += (uint64_t)k;
    }
    return PS_OK;
}

static ps_status flush_block(writer *w) {
    memcpy(w->buf, &w->table, 4);
    memcpy(w->buf + 4, &w->n, 4);
    uint32_t crc = (uint32_t)crc32(0L, w->buf, (uInt)w->len);
    memcpy(w->buf + w->len, &crc, 4);
    ps_status st = write_all(w, w->buf, w->len + 4);
    w->len = 8, w->n = 0;
    return st;
}

static bool on_row(void *ud, uint64_t key, const float *wt, const float *acc, uint32_t step) {
    writer *w = ud;
    uint8_t *p = w->buf + w->len;
    p = put(p, &key, 8), p = put(p, wt, w->wb), p = put(p, acc, w->ab), put(p, &step, 4);
    w->len += 12 + w->wb + w->ab;
    return ++w->n < BLOCK_ROWS || flush_block(w) == PS_OK;
}

ps_status ps_checkpoint_write(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                              ps_store *const *stores, const char *dir, uint64_t gen,
                              ps_ckpt_info *info, ps_error *err) {
    char path[PS_PATH_MAX + 64], tmp[PS_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/shard-%u-of-%u.gen-%" PRIu64 ".ckpt", dir, shard, num_shards,
             gen);
    snprintf(tmp, sizeof(tmp), "%s/.shard-%u-of-%u.gen-%" PRIu64 ".tmp", dir, shard, num_shards,
             gen);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ps_error_set(err, PS_IO, "%s: %s", dir, strerror(errno));
    header h = {0}; /* ~9 KiB with every table: fine on any thread's stack */
    struct timeval tv;
    gettimeofday(&tv, NULL);
    h.version = PS_CKPT_VERSION, h.generation = gen, h.shard = shard, h.num_shards = num_shards;
    h.created_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    h.num_tables = (uint32_t)job->num_tables;
    snprintf(h.job_id, sizeof(h.job_id), "%s", job->job_id);
    size_t max_rb = 0;
    for (uint32_t i = 0; i < h.num_tables; i++) {
        table_of(&job->tables[i], &h.t[i]);
        h.t[i].rows = ps_store_scan(stores[i], NULL, NULL);
        size_t rb = 12 + 4 * (size_t)(h.t[i].dim + h.t[i].state_len);
        if (rb > max_rb) max_rb = rb;
    }
    writer w = {.fd = -1, .path = tmp, .err = err, .len = 8};
    size_t cap = 8 + BLOCK_ROWS * max_rb + 4;
    if (cap < header_bytes(PS_MAX_TABLES) + 4) cap = header_bytes(PS_MAX_TABLES) + 4;
    w.buf = malloc(cap);
    if (w.buf == NULL) return ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
    w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.fd < 0) {
        w.st = ps_error_set(err, PS_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    if (write_all(&w, w.buf, encode_header(&h, w.buf)) != PS_OK) goto done;
    uint64_t rows = 0;
    for (uint32_t i = 0; i < h.num_tables; i++) {
        w.table = i, w.wb = 4 * (size_t)h.t[i].dim, w.ab = 4 * (size_t)h.t[i].state_len;
        ps_store_scan(stores[i], on_row, &w);
        if (w.st != PS_OK || (w.n > 0 && flush_block(&w) != PS_OK)) goto done;
        rows += h.t[i].rows;
    }
    w.table = END_TABLE;
    if (flush_block(&w) != PS_OK) goto done;
    if (fsync(w.fd) != 0) { /* where a full disk often shows first */
        w.st = ps_error_set(err, PS_IO, "%s: fsync: %s", tmp, strerror(errno));
        goto done;
    }
    int fd = w.fd;
    w.fd = -1;
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        w.st = ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    sync_dir(dir);
    prune(dir, shard, num_shards, gen);
    if (info != NULL) *info = (ps_ckpt_info){.rows = rows, .bytes = w.bytes, .generation = gen,
                                             .from_shards = num_shards};
done:
    if (w.fd >= 0) close(w.fd);
    if (w.st != PS_OK) unlink(tmp);
    free(w.buf);
    return w.st;
}

/* --- reading -------------------------------------------------------------------------------- */

static ps_status read_exact(FILE *f, const char *path, void *p, size_t n, const char *what,
                            ps_error *err) {
    if (fread(p, 1, n, f) == n) return PS_OK;
    if (ferror(f)) return ps_error_set(err, PS_IO, "%s: %s: %s", path, what, strerror(errno));
    return ps_error_set(err, PS_DATA, "%s: %s: file ends early (torn)", path, what);
}

static ps_status read_header(FILE *f, const char *path, uint8_t *buf, header *h, ps_error *err) {
    const size_t fixed = header_bytes(0);
    ps_status st = read_exact(f, path, buf, fixed, "header", err);
    if (st != PS_OK) return st;
    if (memcmp(buf, MAGIC, 8) != 0)
        return ps_error_set(err, PS_DATA, "%s: not a checkpoint (bad magic)", path);
    const uint8_t *p = get(buf + 8, &h->version, 4);
    if (h->version != PS_CKPT_VERSION)
        return ps_error_set(err, PS_DATA, "%s: format version %u, this build reads %u", path,
                            h->version, PS_CKPT_VERSION);
    p = get(p, h->job_id, 64), p = get(p, &h->generation, 8), p = get(p, &h->created_ms, 8);
    p = get(p, &h->shard, 4), p = get(p, &h->num_shards, 4), p = get(p, &h->num_tables, 4);
    h->job_id[63] = '\0';
    if (h->num_tables > PS_MAX_TABLES)
        return ps_error_set(err, PS_DATA, "%s: header: %u tables", path, h->num_tables);
    const size_t all = header_bytes(h->num_tables);
    if ((st = read_exact(f, path, buf + fixed, all + 4 - fixed, "header", err)) != PS_OK) return st;
    uint32_t crc;
    memcpy(&crc, buf + all, 4);
    if (crc != (uint32_t)crc32(0L, buf, (uInt)all))
        return ps_error_set(err, PS_DATA, "%s: header: crc32 mismatch", path);
    for (uint32_t i = 0; i < h->num_tables; i++) {
        table_rec *t = &h->t[i];
        p = get(p, t->name, 64), p = get(p, &t->dim, 4), p = get(p, &t->state_len, 4);
        p = get(p, &t->form, 4), p = get(p, &t->rowwise, 4), p = get(p, &t->lr, 8);
        p = get(p, &t->eps, 8), p = get(p, &t->g0, 8), p = get(p, &t->lr_decay, 8);
        p = get(p, &t->weight_decay, 8), p = get(p, &t->rows, 8);
        t->name[63] = '\0';
        if (t->dim == 0 || t->dim > (1u << 20) || t->state_len > t->dim)
            return ps_error_set(err, PS_DATA, "%s: header: table %u: dim %u, state %u", path, i,
                                t->dim, t->state_len);
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
    size_t cap = header_bytes(PS_MAX_TABLES) + 4;
    uint8_t *buf = malloc(cap);
    uint64_t counts[PS_MAX_TABLES] = {0};
    ps_status st = buf ? PS_OK : ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
    if (st == PS_OK) st = read_header(f, path, buf, h, err);
    if (st == PS_OK) st = match_job(h, job, path, err);
    for (size_t block = 0; st == PS_OK; block++) {
        char what[64];
        snprintf(what, sizeof(what), "block %zu", block);
        uint32_t hdr[2];
        if ((st = read_exact(f, path, hdr, 8, what, err)) != PS_OK) break;
        const uint32_t table = hdr[0], n = hdr[1];
        if (table != END_TABLE && (table >= h->num_tables || n == 0 || n > BLOCK_ROWS)) {
            st = ps_error_set(err, PS_DATA, "%s: %s: table %u, %u rows", path, what, table, n);
            break;
        }
        const size_t rb = table == END_TABLE ? 0 : 12 + 4 * (size_t)(h->t[table].dim +
                                                                    h->t[table].state_len);
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
        if (crc != (uint32_t)crc32(0L, buf, (uInt)(8 + n * rb))) {
            st = ps_error_set(err, PS_DATA, "%s: %s: crc32 mismatch", path, what);
            break;
        }
        if (table == END_TABLE) {
            for (uint32_t i = 0; i < h->num_tables && st == PS_OK; i++)
                if (counts[i] != h->t[i].rows)
                    st = ps_error_set(err, PS_DATA, "%s: table %s: %" PRIu64 " rows, header says %"
                                      PRIu64, path, h->t[i].name, counts[i], h->t[i].rows);
            if (st == PS_OK && fgetc(f) != EOF)
                st = ps_error_set(err, PS_DATA, "%s: bytes after the end block", path);
            break;
        }
        counts[table] += n;
        for (uint32_t r = 0; stores != NULL && r < n && st == PS_OK; r++) {
            const uint8_t *row = buf + 8 + r * rb;
            uint64_t key;
            uint32_t step;
            memcpy(&key, row, 8);
            if (ps_shard_of(table, key, num_shards) != shard) continue;
            memcpy(&step, row + rb - 4, 4);
            const float *w = (const float *)(row + 8); /* 4-byte aligned: rb % 4 == 0 */
            st = ps_store_put(stores[table], key, w, w + h->t[table].dim, step, err);
            *kept += 1;
        }
    }
    if (bytes != NULL) *bytes += (uint64_t)ftell(f);
    fclose(f);
    free(buf);
    return st;
}

static int by_gen_desc(const void *a, const void *b) {
    const entry *x = a, *y = b;
    return x->gen < y->gen ? 1 : x->gen > y->gen ? -1 : 0;
}

ps_status ps_checkpoint_restore(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                                ps_store *const *stores, const char *dir, const ps_logger *log,
                                ps_ckpt_info *info, ps_error *err) {
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
    st = ps_error_set(err, PS_DATA, "%s: no shard count has a good checkpoint of every shard", dir);
    for (size_t c = 0; c < n; c++) {
        const uint32_t count = v[c].count;
        bool tried = false; /* each count once, at its newest generation */
        for (size_t j = 0; j < c && !tried; j++) tried = v[j].count == count;
        if (tried) continue;
        uint32_t have = 0;
        uint64_t newest = 0;
        for (uint32_t i = 0; i < count && have == i; i++) {
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
                chosen[i] = &v[k], have++;
                if (v[k].gen > newest) newest = v[k].gen;
                break;
            }
        }
        if (have < count) {
            ps_log(log, PS_LOG_WARN, "%s: checkpoints of %u shards: shard %u has no good file",
                   dir, count, have);
            continue;
        }
        ps_ckpt_info got = {.generation = newest, .from_shards = count};
        for (uint32_t i = 0; i < count; i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, chosen[i]->name);
            st = read_file(path, job, stores, shard, num_shards, &h, &got.rows, &got.bytes, err);
            if (st != PS_OK) goto done;
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
