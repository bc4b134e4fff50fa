/* export.c - see export.h. */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "npy.h"

#define DENSE_CHUNK 4096u /* rows per request of a dense table */

/* The four files of one table, written side by side. */
typedef struct {
    ps_npy_writer *keys, *values, *acc, *steps;
} table_files;

static void files_abort(table_files *f) {
    ps_npy_abort(f->keys), ps_npy_abort(f->values), ps_npy_abort(f->acc), ps_npy_abort(f->steps);
    *f = (table_files){0};
}

static ps_status files_finish(table_files *f, ps_error *err) {
    ps_npy_writer *w[4] = {f->keys, f->values, f->acc, f->steps};
    *f = (table_files){0};
    ps_status first = PS_OK;
    for (int i = 0; i < 4; i++) {
        if (w[i] == NULL) continue;
        if (first != PS_OK) ps_npy_abort(w[i]);
        else first = ps_npy_finish(w[i], err);
    }
    return first;
}

/* mkdir -p of path's directory part (path itself when is_dir). */
static ps_status make_dirs(const char *path, bool is_dir, ps_error *err) {
    char p[PS_PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s", path);
    if (!is_dir) {
        char *slash = strrchr(p, '/');
        if (slash == NULL) return PS_OK;
        *slash = '\0';
    }
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return ps_error_set(err, PS_IO, "%s: cannot create directory: %s", p, strerror(errno));
        if (c == '\0') return PS_OK;
        *s = c;
    }
}

static ps_status open_file(const char *dir, const char *rel, ps_npy_dtype dt, unsigned ndim,
                           uint64_t d1, uint64_t rows, ps_npy_writer **out, ps_error *err) {
    char path[PS_PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    if (make_dirs(path, false, err) != PS_OK) return err->code;
    uint64_t shape[2] = {rows, d1};
    return ps_npy_create(path, dt, ndim, shape, out, err);
}

typedef struct {
    ps_client *c;
    const ps_job_config *job;
    const char *dir;
    uint32_t t;            /* table */
    uint32_t dim, sl;      /* floats of values and of state per row */
    bool steps;            /* lr_decay: per-row step counts */
    ps_export_stats *stats;
} export_ctx;

static ps_status append_rows(export_ctx *x, table_files *f, const uint64_t *keys,
                             const float *values, const float *acc, const uint32_t *steps,
                             size_t n, ps_error *err) {
    if ((f->keys && ps_npy_append(f->keys, keys, n * 8, err) != PS_OK) ||
        ps_npy_append(f->values, values, n * x->dim * 4, err) != PS_OK ||
        ps_npy_append(f->acc, acc, n * x->sl * 4, err) != PS_OK ||
        (f->steps && ps_npy_append(f->steps, steps, n * 4, err) != PS_OK))
        return err->code;
    x->stats->rows += n;
    x->stats->bytes += n * (8 * (f->keys != NULL) + 4 * (x->dim + x->sl) + 4 * (f->steps != NULL));
    return PS_OK;
}

/* Rows 0..rows-1 (a bias: one row, written as (dim,)). */
static ps_status export_dense(export_ctx *x, const char *name, uint64_t rows, bool one_row,
                              cJSON *entry, ps_error *err) {
    char vrel[PS_TABLE_NAME_MAX + 32], arel[PS_TABLE_NAME_MAX + 32], srel[PS_TABLE_NAME_MAX + 32];
    snprintf(vrel, sizeof(vrel), "%s.npy", name);
    snprintf(arel, sizeof(arel), "%s.accumulators.npy", name);
    snprintf(srel, sizeof(srel), "%s.steps.npy", name);
    table_files f = {0};
    ps_status st = PS_OK;
    if (one_row) {
        st = open_file(x->dir, vrel, PS_NPY_F4, 1, 0, x->dim, &f.values, err);
        if (st == PS_OK) st = open_file(x->dir, arel, PS_NPY_F4, 1, 0, x->sl, &f.acc, err);
    } else {
        st = open_file(x->dir, vrel, PS_NPY_F4, 2, x->dim, rows, &f.values, err);
        if (st == PS_OK) st = open_file(x->dir, arel, PS_NPY_F4, 2, x->sl, rows, &f.acc, err);
    }
    if (st == PS_OK && x->steps) st = open_file(x->dir, srel, PS_NPY_U4, 1, 0, rows, &f.steps, err);
    const size_t chunk = rows < DENSE_CHUNK ? rows : DENSE_CHUNK;
    uint64_t *keys = malloc(chunk * 8 + 8);
    float *v = malloc(chunk * x->dim * 4 + 4), *a = malloc(chunk * x->sl * 4 + 4);
    uint32_t *s = malloc(chunk * 4 + 4);
    if (st == PS_OK && (!keys || !v || !a || !s))
        st = ps_error_set(err, PS_NOMEM, "export: out of memory");
    for (uint64_t at = 0; st == PS_OK && at < rows; at += chunk) {
        size_t n = rows - at < chunk ? (size_t)(rows - at) : chunk;
        for (size_t i = 0; i < n; i++) keys[i] = at + i;
        st = ps_client_rows(x->c, x->t, keys, n, v, a, s, err);
        if (st == PS_OK) st = append_rows(x, &f, keys, v, a, s, n, err);
    }
    free(keys), free(v), free(a), free(s);
    if (st == PS_OK) st = files_finish(&f, err);
    else files_abort(&f);
    if (st != PS_OK) return st;
    cJSON_AddStringToObject(entry, "layout", "dense");
    cJSON *shape = cJSON_AddArrayToObject(entry, "shape");
    if (!one_row) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)rows));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(x->dim));
    cJSON_AddStringToObject(entry, "values", vrel);
    cJSON_AddStringToObject(entry, "accumulators", arel);
    if (x->steps) cJSON_AddStringToObject(entry, "steps", srel);
    return PS_OK;
}

/* One shard's scan, a buffer of rows at a time. */
typedef struct {
    uint64_t *keys;
    float *values, *acc;
    uint32_t *steps;
    size_t n, at;  /* rows buffered, next one */
    bool done;     /* the shard has no rows after the buffered ones */
} shard_scan;

static ps_status refill(export_ctx *x, shard_scan *s, uint32_t shard, bool first, size_t cap,
                        ps_error *err) {
    uint64_t after = first || s->n == 0 ? 0 : s->keys[s->n - 1];
    s->at = 0;
    return ps_client_scan(x->c, x->t, shard, first, after, cap, s->keys, s->values, s->acc,
                          s->steps, &s->n, &s->done, err);
}

/* Every stored row, ascending by key: a merge of the shards' ordered scans (each key lives on
 * one shard, so the merge takes runs of one shard below the next shard's head). */
static ps_status export_sparse(export_ctx *x, const char *name, cJSON *entry, ps_error *err) {
    const uint32_t S = ps_client_num_shards(x->c);
    const size_t cap = 16384 / (x->dim + x->sl + 3) + 64; /* rows per shard buffer */
    char krel[PS_TABLE_NAME_MAX + 32], vrel[PS_TABLE_NAME_MAX + 32], arel[PS_TABLE_NAME_MAX + 32],
        srel[PS_TABLE_NAME_MAX + 32];
    snprintf(krel, sizeof(krel), "%s/keys.npy", name);
    snprintf(vrel, sizeof(vrel), "%s/values.npy", name);
    snprintf(arel, sizeof(arel), "%s/accumulators.npy", name);
    snprintf(srel, sizeof(srel), "%s/steps.npy", name);
    table_files f = {0};
    ps_status st = open_file(x->dir, krel, PS_NPY_U8, 1, 0, PS_NPY_ROWS_UNKNOWN, &f.keys, err);
    if (st == PS_OK)
        st = open_file(x->dir, vrel, PS_NPY_F4, 2, x->dim, PS_NPY_ROWS_UNKNOWN, &f.values, err);
    if (st == PS_OK)
        st = open_file(x->dir, arel, PS_NPY_F4, 2, x->sl, PS_NPY_ROWS_UNKNOWN, &f.acc, err);
    if (st == PS_OK && x->steps)
        st = open_file(x->dir, srel, PS_NPY_U4, 1, 0, PS_NPY_ROWS_UNKNOWN, &f.steps, err);
    shard_scan *sc = calloc(S, sizeof(*sc));
    if (st == PS_OK && sc == NULL) st = ps_error_set(err, PS_NOMEM, "export: out of memory");
    for (uint32_t s = 0; st == PS_OK && s < S; s++) {
        sc[s].keys = malloc(cap * 8);
        sc[s].values = malloc(cap * x->dim * 4);
        sc[s].acc = malloc(cap * x->sl * 4);
        sc[s].steps = malloc(cap * 4);
        if (!sc[s].keys || !sc[s].values || !sc[s].acc || !sc[s].steps)
            st = ps_error_set(err, PS_NOMEM, "export: out of memory");
        else
            st = refill(x, &sc[s], s, true, cap, err);
    }
    uint64_t rows = 0;
    while (st == PS_OK) {
        int lo = -1; /* the shard with the smallest head key; the second smallest head */
        uint64_t next = UINT64_MAX;
        for (uint32_t s = 0; s < S; s++) {
            if (sc[s].at == sc[s].n) continue;
            uint64_t k = sc[s].keys[sc[s].at];
            if (lo < 0 || k < sc[lo].keys[sc[lo].at]) {
                if (lo >= 0) next = sc[lo].keys[sc[lo].at];
                lo = (int)s;
            } else if (k < next) {
                next = k;
            }
        }
        if (lo < 0) break;
        shard_scan *h = &sc[lo];
        size_t run = h->at;
        while (run < h->n && (h->keys[run] < next || next == UINT64_MAX)) run++;
        size_t n = run - h->at;
        st = append_rows(x, &f, h->keys + h->at, h->values + h->at * x->dim,
                         h->acc + h->at * x->sl, h->steps + h->at, n, err);
        rows += n, h->at = run;
        if (st == PS_OK && h->at == h->n && !h->done) st = refill(x, h, (uint32_t)lo, false, cap, err);
    }
    for (uint32_t s = 0; sc != NULL && s < S; s++)
        free(sc[s].keys), free(sc[s].values), free(sc[s].acc), free(sc[s].steps);
    free(sc);
    if (st == PS_OK) st = files_finish(&f, err);
    else files_abort(&f);
    if (st != PS_OK) return st;
    cJSON_AddStringToObject(entry, "layout", "sparse");
    cJSON_AddNumberToObject(entry, "rows", (double)rows);
    cJSON_AddStringToObject(entry, "keys", krel);
    cJSON_AddStringToObject(entry, "values", vrel);
    cJSON_AddStringToObject(entry, "accumulators", arel);
    if (x->steps) cJSON_AddStringToObject(entry, "steps", srel);
    return PS_OK;
}

/* The rows of a model's dense table (its input width; a bias is one row, *bias), or 0 for a
 * sparse-layout table. */
static uint64_t dense_rows(const ps_job_config *job, uint32_t t, bool *bias) {
    const ps_model_config *m = &job->model;
    *bias = false;
    for (size_t l = 0; job->has_model && l < m->num_layers; l++) {
        if (m->bias_table[l] == t) return *bias = true, 1;
        if (m->kernel_table[l] == t) return l > 0 ? m->units[l - 1] : m->sparse ? 0 : m->input_dim;
    }
    return 0;
}

static cJSON *optimizer_json(const ps_adagrad_config *o) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "form", o->form == PS_ADAGRAD_KERAS ? "keras" : "pytorch");
    cJSON_AddBoolToObject(j, "rowwise", o->rowwise);
    cJSON_AddNumberToObject(j, "learning_rate", o->learning_rate);
    cJSON_AddNumberToObject(j, "epsilon", o->epsilon);
    cJSON_AddNumberToObject(j, "initial_accumulator_value", o->initial_accumulator_value);
    cJSON_AddNumberToObject(j, "lr_decay", o->lr_decay);
    cJSON_AddNumberToObject(j, "weight_decay", o->weight_decay);
    return j;
}

/* Writes text to dir/manifest.json through a temporary file, fsync'd, then renamed. */
static ps_status write_manifest(const char *dir, const char *text, ps_error *err) {
    char path[PS_PATH_MAX + 32], tmp[PS_PATH_MAX + 48];
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return ps_error_set(err, PS_IO, "%s: %s", tmp, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd), unlink(tmp);
            return ps_error_set(err, PS_IO, "%s: %s", tmp, strerror(errno));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
    }
    return PS_OK;
}

ps_status ps_export(ps_client *c, const ps_job_config *job, const char *dir,
                    ps_export_stats *stats, ps_error *err) {
    ps_export_stats local = {0};
    if (stats == NULL) stats = &local;
    *stats = (ps_export_stats){0};
    if (make_dirs(dir, true, err) != PS_OK) return err->code;
    /* an earlier export's manifest goes first: until the new one is written, the directory has
     * none, and a reader does not take half-replaced files for a whole export */
    char old[PS_PATH_MAX + 32];
    snprintf(old, sizeof(old), "%s/manifest.json", dir);
    if (unlink(old) != 0 && errno != ENOENT)
        return ps_error_set(err, PS_IO, "%s: %s", old, strerror(errno));
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", "ps-weights");
    cJSON_AddNumberToObject(m, "version", 1);
    cJSON_AddStringToObject(m, "job_id", job->job_id);
    cJSON_AddNumberToObject(m, "seed", (double)job->seed);
    cJSON *tables = cJSON_AddArrayToObject(m, "tables");
    ps_status st = PS_OK;
    for (uint32_t t = 0; st == PS_OK && t < job->num_tables; t++) {
        const ps_table_spec *spec = &job->tables[t];
        if (spec->name[0] == '/' || strstr(spec->name, "..") != NULL) {
            st = ps_error_set(err, PS_CONFIG, "%s: table \"%s\": a name that is not a relative "
                              "path cannot be exported", job->file, spec->name);
            break;
        }
        export_ctx x = {.c = c, .job = job, .dir = dir, .t = t, .dim = spec->dim,
                        .sl = ps_table_state_len(spec), .steps = spec->opt.lr_decay != 0.0,
                        .stats = stats};
        cJSON *entry = cJSON_CreateObject();
        cJSON_AddStringToObject(entry, "name", spec->name);
        cJSON_AddNumberToObject(entry, "dim", spec->dim);
        bool bias;
        const uint64_t rows = dense_rows(job, t, &bias);
        st = rows > 0 ? export_dense(&x, spec->name, rows, bias, entry, err)
                      : export_sparse(&x, spec->name, entry, err);
        cJSON_AddItemToObject(entry, "optimizer", optimizer_json(&spec->opt));
        cJSON_AddItemToArray(tables, entry);
    }
    if (st == PS_OK) {
        char *text = cJSON_Print(m);
        st = text ? write_manifest(dir, text, err)
                  : ps_error_set(err, PS_NOMEM, "export: out of memory");
        free(text);
    }
    cJSON_Delete(m);
    return st;
}
