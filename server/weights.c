/* weights.c - reads a saved-weights directory: manifest.json through cJSON into plain structs,
 * then each job table's .npy files streamed in blocks of rows, keeping the rows this shard owns.
 * Two passes: every table's entry and file headers are checked first, so a directory that does
 * not fit the job is refused before any row is stored. */
#include "weights.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "adagrad.h"
#include "hash.h"
#include "npy.h"

#define MAX_COUNT 9007199254740992.0 /* 2^53: JSON numbers are exact up to here */
#define BLOCK_BYTES (1u << 20)      /* values read per block of rows, about */

static const char *const forms[] = {[PS_ADAGRAD_PYTORCH] = "pytorch", [PS_ADAGRAD_KERAS] = "keras"};

/* --- manifest --------------------------------------------------------------------------------- */

/* Where a key sits, for messages: "tables[2].dim". */
static const char *key_at(char *buf, size_t len, const char *at, const char *key) {
    snprintf(buf, len, "%s%s%s", at, at[0] ? "." : "", key);
    return buf;
}

/* An integer in [min, max]. absent: *present = false (required: an error). */
static ps_status get_uint(const ps_weights_manifest *m, const cJSON *o, const char *at,
                          const char *key, bool required, double min, double max, uint64_t *out,
                          bool *present, ps_error *err) {
    char k[128];
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (present != NULL) *present = it != NULL;
    if (it == NULL && !required) return PS_OK;
    const double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
    if (v > max && v == floor(v))
        return ps_error_set(err, PS_DATA, "%s: %s: %.0f is above the limit %.0f", m->path,
                            key_at(k, sizeof(k), at, key), v, max);
    if (!(v >= min && v <= max) || v != (double)(uint64_t)v) /* the cast only when in range */
        return ps_error_set(err, PS_DATA, "%s: %s: expected a %s integer", m->path,
                            key_at(k, sizeof(k), at, key), min >= 1 ? "positive" : "non-negative");
    *out = (uint64_t)v;
    return PS_OK;
}

/* A string (NULL when absent and not required); borrowed from the tree. */
static ps_status get_str(const ps_weights_manifest *m, const cJSON *o, const char *at,
                         const char *key, bool required, const char **out, ps_error *err) {
    char k[128];
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (it == NULL && !required) return PS_OK;
    if (!cJSON_IsString(it) || it->valuestring == NULL || it->valuestring[0] == '\0')
        return ps_error_set(err, PS_DATA, "%s: %s: expected a non-empty string", m->path,
                            key_at(k, sizeof(k), at, key));
    *out = it->valuestring;
    return PS_OK;
}

/* A file name relative to the directory, copied into *out (NULL when absent). */
static ps_status get_file(const ps_weights_manifest *m, const cJSON *o, const char *at,
                          const char *key, bool required, char **out, ps_error *err) {
    char k[128];
    const char *s;
    ps_status st = get_str(m, o, at, key, required, &s, err);
    if (st != PS_OK || s == NULL) return st;
    if (s[0] == '/' || strstr(s, "..") != NULL)
        return ps_error_set(err, PS_DATA, "%s: %s: \"%s\": file names are relative to the "
                            "directory, never absolute, never with \"..\"", m->path,
                            key_at(k, sizeof(k), at, key), s);
    if (strlen(m->dir) + 1 + strlen(s) >= PS_PATH_MAX)
        return ps_error_set(err, PS_DATA, "%s: %s: path longer than %d bytes", m->path,
                            key_at(k, sizeof(k), at, key), PS_PATH_MAX - 1);
    if ((*out = strdup(s)) == NULL)
        return ps_error_set(err, PS_NOMEM, "%s: out of memory", m->path);
    return PS_OK;
}

static ps_status get_bool(const ps_weights_manifest *m, const cJSON *o, const char *at,
                          const char *key, bool dflt, bool *out, ps_error *err) {
    char k[128];
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = dflt;
    if (it == NULL) return PS_OK;
    if (!cJSON_IsBool(it))
        return ps_error_set(err, PS_DATA, "%s: %s: expected true or false", m->path,
                            key_at(k, sizeof(k), at, key));
    *out = cJSON_IsTrue(it);
    return PS_OK;
}

static ps_status get_num(const ps_weights_manifest *m, const cJSON *o, const char *at,
                         const char *key, double dflt, double *out, ps_error *err) {
    char k[128];
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = dflt;
    if (it == NULL) return PS_OK;
    if (!cJSON_IsNumber(it) || it->valuedouble < 0)
        return ps_error_set(err, PS_DATA, "%s: %s: expected a non-negative number", m->path,
                            key_at(k, sizeof(k), at, key));
    *out = it->valuedouble;
    return PS_OK;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        ps_status st_ = (x);                                                                       \
        if (st_ != PS_OK) return st_;                                                              \
    } while (0)

/* "optimizer": form (required), rowwise, and the numbers (the form's defaults when absent, as
 * in the job file). */
static ps_status read_optimizer(const ps_weights_manifest *m, const cJSON *o, const char *at,
                                ps_adagrad_config *opt, ps_error *err) {
    char k[128];
    if (!cJSON_IsObject(o))
        return ps_error_set(err, PS_DATA, "%s: %s: expected an object", m->path, at);
    const char *form;
    TRY(get_str(m, o, at, "form", true, &form, err));
    if (strcmp(form, forms[PS_ADAGRAD_PYTORCH]) == 0)
        opt->form = PS_ADAGRAD_PYTORCH;
    else if (strcmp(form, forms[PS_ADAGRAD_KERAS]) == 0)
        opt->form = PS_ADAGRAD_KERAS;
    else
        return ps_error_set(err, PS_DATA, "%s: %s: \"%s\", expected \"pytorch\" or \"keras\"",
                            m->path, key_at(k, sizeof(k), at, "form"), form);
    const bool keras = opt->form == PS_ADAGRAD_KERAS;
    TRY(get_bool(m, o, at, "rowwise", false, &opt->rowwise, err));
    TRY(get_num(m, o, at, "learning_rate", keras ? 0.001 : 0.01, &opt->learning_rate, err));
    TRY(get_num(m, o, at, "epsilon", keras ? 1e-7 : 1e-10, &opt->epsilon, err));
    TRY(get_num(m, o, at, "initial_accumulator_value", keras ? 0.1 : 0.0,
                &opt->initial_accumulator_value, err));
    TRY(get_num(m, o, at, "lr_decay", 0, &opt->lr_decay, err));
    TRY(get_num(m, o, at, "weight_decay", 0, &opt->weight_decay, err));
    return PS_OK;
}

static ps_status read_table(ps_weights_manifest *m, const cJSON *o, size_t i, ps_error *err) {
    char at[40], k[128];
    snprintf(at, sizeof(at), "tables[%zu]", i);
    if (!cJSON_IsObject(o))
        return ps_error_set(err, PS_DATA, "%s: %s: expected an object", m->path, at);
    ps_weights_table *t = &m->tables[i];
    const char *name, *layout;
    uint64_t v;
    TRY(get_str(m, o, at, "name", true, &name, err));
    for (size_t j = 0; j < i; j++)
        if (strcmp(m->tables[j].name, name) == 0)
            return ps_error_set(err, PS_DATA, "%s: %s.name: \"%s\" is also tables[%zu]", m->path,
                                at, name, j);
    if ((t->name = strdup(name)) == NULL)
        return ps_error_set(err, PS_NOMEM, "%s: out of memory", m->path);
    TRY(get_uint(m, o, at, "dim", true, 1, UINT32_MAX, &v, NULL, err));
    t->dim = (uint32_t)v;
    TRY(get_str(m, o, at, "layout", true, &layout, err));
    if (strcmp(layout, "dense") == 0) {
        t->layout = PS_WEIGHTS_DENSE;
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
        const int n = cJSON_GetArraySize(shape);
        if (!cJSON_IsArray(shape) || n < 1 || n > 2)
            return ps_error_set(err, PS_DATA, "%s: %s: expected [rows, dim] or [dim]", m->path,
                                key_at(k, sizeof(k), at, "shape"));
        uint64_t d[2];
        for (int j = 0; j < n; j++) {
            const cJSON *e = cJSON_GetArrayItem(shape, j);
            double x = cJSON_IsNumber(e) ? e->valuedouble : -1;
            if (x < 0 || x > MAX_COUNT || x != (double)(uint64_t)x)
                return ps_error_set(err, PS_DATA, "%s: %s.shape[%d]: expected a non-negative "
                                    "integer", m->path, at, j);
            d[j] = (uint64_t)x;
        }
        if (d[n - 1] != t->dim)
            return ps_error_set(err, PS_DATA, "%s: %s.shape: last dimension %" PRIu64 ", dim is %u",
                                m->path, at, d[n - 1], t->dim);
        t->one_row = n == 1;
        t->rows = n == 1 ? 1 : d[0];
        if (cJSON_GetObjectItemCaseSensitive(o, "keys") != NULL)
            return ps_error_set(err, PS_DATA, "%s: %s.keys: a dense table's keys are 0..n-1; "
                                "\"keys\" is for layout \"sparse\"", m->path, at);
    } else if (strcmp(layout, "sparse") == 0) {
        t->layout = PS_WEIGHTS_SPARSE;
        TRY(get_uint(m, o, at, "rows", true, 0, MAX_COUNT, &t->rows, NULL, err));
        TRY(get_file(m, o, at, "keys", true, &t->keys, err));
    } else {
        return ps_error_set(err, PS_DATA, "%s: %s: \"%s\", expected \"dense\" or \"sparse\"",
                            m->path, key_at(k, sizeof(k), at, "layout"), layout);
    }
    TRY(get_file(m, o, at, "values", true, &t->values, err));
    TRY(get_file(m, o, at, "accumulators", false, &t->accumulators, err));
    TRY(get_file(m, o, at, "steps", false, &t->steps, err));
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(o, "optimizer");
    if (opt != NULL) {
        TRY(read_optimizer(m, opt, key_at(k, sizeof(k), at, "optimizer"), &t->opt, err));
        t->has_optimizer = true;
    } else if (t->accumulators != NULL) { /* state without its form cannot be checked */
        return ps_error_set(err, PS_DATA, "%s: %s.optimizer: required with \"accumulators\"",
                            m->path, at);
    }
    return PS_OK;
}

static ps_status read_text(const char *path, char **out, size_t *len, ps_error *err) {
    FILE *f = fopen(path, "rb");
    struct stat sb;
    if (f == NULL) return ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return ps_error_set(err, PS_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > PS_WEIGHTS_MAX_MANIFEST) {
        fclose(f);
        return ps_error_set(err, PS_DATA, "%s: %lld bytes, more than the %u a manifest may have",
                            path, (long long)sb.st_size, PS_WEIGHTS_MAX_MANIFEST);
    }
    char *text = malloc((size_t)sb.st_size + 1);
    if (text == NULL) {
        fclose(f);
        return ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
    }
    *len = fread(text, 1, (size_t)sb.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        return ps_error_set(err, PS_IO, "%s: read error", path);
    }
    text[*len] = '\0';
    *out = text;
    return PS_OK;
}

static ps_status read_manifest(ps_weights_manifest *m, const cJSON *root, ps_error *err) {
    if (!cJSON_IsObject(root))
        return ps_error_set(err, PS_DATA, "%s: expected a JSON object", m->path);
    const char *s;
    uint64_t v;
    TRY(get_str(m, root, "", "format", true, &s, err));
    if (strcmp(s, "ps-weights") != 0)
        return ps_error_set(err, PS_DATA, "%s: format: \"%s\", expected \"ps-weights\"", m->path,
                            s);
    TRY(get_uint(m, root, "", "version", true, 1, UINT32_MAX, &v, NULL, err));
    m->version = (uint32_t)v;
    if (m->version != PS_WEIGHTS_VERSION)
        return ps_error_set(err, PS_MISMATCH, "%s: version %u; this build reads version %d",
                            m->path, m->version, PS_WEIGHTS_VERSION);
    TRY(get_str(m, root, "", "job_id", false, &s, err));
    if (s != NULL && strlen(s) >= sizeof(m->job_id))
        return ps_error_set(err, PS_DATA, "%s: job_id: longer than %zu bytes", m->path,
                            sizeof(m->job_id) - 1);
    snprintf(m->job_id, sizeof(m->job_id), "%s", s ? s : "");
    TRY(get_uint(m, root, "", "seed", false, 0, 0x1.fffffffffffffp63 /* < 2^64 */, &m->seed,
                 &m->has_seed, err));
    const cJSON *tables = cJSON_GetObjectItemCaseSensitive(root, "tables");
    if (!cJSON_IsArray(tables))
        return ps_error_set(err, PS_DATA, "%s: tables: expected a list", m->path);
    const size_t n = (size_t)cJSON_GetArraySize(tables);
    if (n > 0 && (m->tables = calloc(n, sizeof(*m->tables))) == NULL)
        return ps_error_set(err, PS_NOMEM, "%s: out of memory", m->path);
    size_t i = 0;
    for (const cJSON *o = tables->child; o != NULL; o = o->next, i++) {
        m->num_tables = i + 1; /* what to free, from here on */
        TRY(read_table(m, o, i, err));
    }
    return PS_OK;
}

ps_status ps_weights_manifest_read(const char *dir, ps_weights_manifest *m, ps_error *err) {
    memset(m, 0, sizeof(*m));
    if (strlen(dir) >= sizeof(m->dir))
        return ps_error_set(err, PS_INVALID_ARG, "%s: directory name longer than %zu bytes", dir,
                            sizeof(m->dir) - 1);
    snprintf(m->dir, sizeof(m->dir), "%s", dir);
    snprintf(m->path, sizeof(m->path), "%s/manifest.json", dir);
    char *text = NULL;
    size_t len = 0;
    TRY(read_text(m->path, &text, &len, err));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    ps_status st;
    if (root == NULL) {
        size_t at = end != NULL && end >= text ? (size_t)(end - text) : 0;
        int line = 1;
        for (size_t i = 0; i < at && i < len; i++) line += text[i] == '\n';
        st = ps_error_set(err, PS_DATA, "%s:%d: invalid JSON near \"%.20s\"", m->path, line,
                          at < len ? text + at : "");
    } else {
        st = read_manifest(m, root, err);
    }
    cJSON_Delete(root);
    free(text);
    return st;
}

void ps_weights_manifest_free(ps_weights_manifest *m) {
    if (m == NULL) return;
    for (size_t i = 0; i < m->num_tables; i++) {
        ps_weights_table *t = &m->tables[i];
        free(t->name), free(t->values), free(t->accumulators), free(t->keys), free(t->steps);
    }
    free(m->tables);
    m->tables = NULL, m->num_tables = 0;
}

const ps_weights_table *ps_weights_manifest_find(const ps_weights_manifest *m, const char *name) {
    for (size_t i = 0; i < m->num_tables; i++)
        if (strcmp(m->tables[i].name, name) == 0) return &m->tables[i];
    return NULL;
}

/* --- loading ---------------------------------------------------------------------------------- */

/* One table's open files, all positioned at row 0. */
typedef struct {
    ps_npy_reader *keys, *values, *acc, *steps;
} table_files;

static void close_files(table_files *f) {
    ps_npy_close(f->keys), ps_npy_close(f->values), ps_npy_close(f->acc), ps_npy_close(f->steps);
    memset(f, 0, sizeof(*f));
}

typedef struct {
    unsigned ndim;
    uint64_t shape[2];
} want_shape;

static bool shape_is(const ps_npy_info *i, const want_shape *w) {
    return w != NULL && i->ndim == w->ndim && (w->ndim < 1 || i->shape[0] == w->shape[0]) &&
           (w->ndim < 2 || i->shape[1] == w->shape[1]);
}

/* Opens DIR/rel and checks its dtype and that its shape is a (or b, if given). */
static ps_status open_npy(const ps_weights_manifest *m, const char *rel, const char *table,
                          ps_npy_dtype dtype, const want_shape *a, const want_shape *b,
                          ps_npy_reader **out, ps_error *err) {
    char path[PS_PATH_MAX + 8];
    snprintf(path, sizeof(path), "%s/%s", m->dir, rel);
    TRY(ps_npy_open(path, out, err));
    const ps_npy_info *i = ps_npy_info_of(*out);
    char got[96], sa[64], sb[64];
    if (i->dtype != dtype || (!shape_is(i, a) && !shape_is(i, b))) {
        ps_npy_shape_str(i->ndim, i->shape, got, sizeof(got));
        ps_npy_shape_str(a->ndim, a->shape, sa, sizeof(sa));
        if (b != NULL) ps_npy_shape_str(b->ndim, b->shape, sb, sizeof(sb));
        ps_error_set(err, PS_DATA, "%s: '%s' %s, table \"%s\" of %s needs '%s' %s%s%s", path,
                     ps_npy_descr(i->dtype), got, table, m->path, ps_npy_descr(dtype), sa,
                     b ? " or " : "", b ? sb : "");
        ps_npy_close(*out);
        *out = NULL;
        return PS_DATA;
    }
    return PS_OK;
}

/* Checks entry e against the job's table and opens its files. */
static ps_status open_table(const ps_weights_manifest *m, const ps_weights_table *e,
                            const ps_table_spec *spec, table_files *f, ps_error *err) {
    memset(f, 0, sizeof(*f));
    if (e->dim != spec->dim)
        return ps_error_set(err, PS_MISMATCH, "%s: table \"%s\": dim %u, the job's is %u",
                            m->path, e->name, e->dim, spec->dim);
    if (e->accumulators != NULL &&
        (e->opt.form != spec->opt.form || e->opt.rowwise != spec->opt.rowwise))
        return ps_error_set(err, PS_MISMATCH, "%s: table \"%s\": the accumulators are AdaGrad "
                            "state of form \"%s\" (rowwise %s); the job trains it with form "
                            "\"%s\" (rowwise %s)", m->path, e->name, forms[e->opt.form],
                            e->opt.rowwise ? "true" : "false", forms[spec->opt.form],
                            spec->opt.rowwise ? "true" : "false");
    const uint64_t n = e->rows, state = ps_adagrad_state_len(&spec->opt, spec->dim);
    const want_shape rows_dim = {2, {n, e->dim}}, dim_only = {1, {e->dim}};
    const want_shape rows_state = {2, {n, state}}, state_only = {1, {state}}, rows = {1, {n}};
    ps_status st = PS_OK;
    if (e->keys != NULL)
        st = open_npy(m, e->keys, e->name, PS_NPY_U8, &rows, NULL, &f->keys, err);
    if (st == PS_OK)
        st = open_npy(m, e->values, e->name, PS_NPY_F4, e->one_row ? &dim_only : &rows_dim, NULL,
                      &f->values, err);
    if (st == PS_OK && e->accumulators != NULL)
        st = open_npy(m, e->accumulators, e->name, PS_NPY_F4, &rows_state,
                      n == 1 ? &state_only : NULL, &f->acc, err);
    if (st == PS_OK && e->steps != NULL)
        st = open_npy(m, e->steps, e->name, PS_NPY_U4, &rows, NULL, &f->steps, err);
    if (st != PS_OK) close_files(f);
    return st;
}

/* Streams one table's rows, putting those shard owns into s. */
static ps_status load_table(const ps_weights_table *e, table_files *f, ps_store *s, uint32_t shard,
                            uint32_t num_shards, size_t *loaded, ps_error *err) {
    const ps_table_spec *spec = ps_store_spec(s);
    const size_t dim = spec->dim, state = ps_store_state_len(s);
    size_t block = BLOCK_BYTES / (dim * sizeof(float));
    if (block == 0) block = 1;
    uint64_t *keys = malloc(block * sizeof(*keys));
    float *w = malloc(block * dim * sizeof(float));
    float *acc = f->acc ? malloc(block * state * sizeof(float)) : NULL;
    uint32_t *steps = f->steps ? malloc(block * sizeof(*steps)) : NULL;
    ps_status st = PS_OK;
    if (keys == NULL || w == NULL || (f->acc && acc == NULL) || (f->steps && steps == NULL)) {
        st = ps_error_set(err, PS_NOMEM, "table \"%s\": out of memory", e->name);
        goto done;
    }
    uint64_t prev = 0; /* the key before keys[0] (sparse, past the first row) */
    for (uint64_t at = 0; at < e->rows; at += block) {
        const size_t b = e->rows - at < block ? (size_t)(e->rows - at) : block;
        if (f->keys != NULL) {
            if ((st = ps_npy_read(f->keys, keys, b, err)) != PS_OK) goto done;
            for (size_t i = 0; i < b; i++) { /* a duplicate would silently replace its twin */
                const uint64_t before = i > 0 ? keys[i - 1] : prev;
                if ((at > 0 || i > 0) && keys[i] <= before) {
                    st = ps_error_set(err, PS_DATA, "%s: keys[%" PRIu64 "] = %" PRIu64 " after %"
                                      PRIu64 ": keys must be ascending and unique",
                                      ps_npy_path(f->keys), at + i, keys[i], before);
                    goto done;
                }
            }
            prev = keys[b - 1];
        } else {
            for (size_t i = 0; i < b; i++) keys[i] = at + i;
        }
        if ((st = ps_npy_read(f->values, w, b * dim, err)) != PS_OK) goto done;
        if (f->acc && (st = ps_npy_read(f->acc, acc, b * state, err)) != PS_OK) goto done;
        if (f->steps && (st = ps_npy_read(f->steps, steps, b, err)) != PS_OK) goto done;
        for (size_t i = 0; i < b; i++) {
            if (ps_shard_of(spec->id, keys[i], num_shards) != shard) continue;
            st = ps_store_put(s, keys[i], w + i * dim, acc ? acc + i * state : NULL,
                              steps ? steps[i] : 0, err);
            if (st != PS_OK) goto done;
            (*loaded)++;
        }
    }
done:
    free(keys), free(w), free(acc), free(steps);
    return st;
}

ps_status ps_weights_load(const char *dir, const ps_job_config *job, uint32_t shard,
                          uint32_t num_shards, ps_store *const *stores, size_t *rows_loaded,
                          ps_error *err) {
    if (rows_loaded != NULL) *rows_loaded = 0;
    if (num_shards == 0 || shard >= num_shards)
        return ps_error_set(err, PS_INVALID_ARG, "%s: shard %u of %u", dir, shard, num_shards);
    for (size_t t = 0; t < job->num_tables; t++) {
        const ps_table_spec *s = ps_store_spec(stores[t]);
        if (s->id != job->tables[t].id || s->dim != job->tables[t].dim)
            return ps_error_set(err, PS_INVALID_ARG, "%s: store %zu holds table \"%s\", not the "
                                "job's \"%s\"", dir, t, s->name, job->tables[t].name);
    }
    ps_weights_manifest m;
    ps_status st = ps_weights_manifest_read(dir, &m, err);
    table_files f = {0};
    size_t loaded = 0;
    /* pass 0 checks every table; pass 1 loads */
    for (int pass = 0; pass < 2 && st == PS_OK; pass++) {
        for (size_t t = 0; t < job->num_tables && st == PS_OK; t++) {
            const ps_table_spec *spec = &job->tables[t];
            const ps_weights_table *e = ps_weights_manifest_find(&m, spec->name);
            if (e == NULL) {
                st = ps_error_set(err, PS_CONFIG, "%s: no table \"%s\" (the job has it)", m.path,
                                  spec->name);
                break;
            }
            st = open_table(&m, e, spec, &f, err);
            if (st == PS_OK && pass == 1)
                st = load_table(e, &f, stores[t], shard, num_shards, &loaded, err);
            close_files(&f);
        }
    }
    ps_weights_manifest_free(&m);
    if (rows_loaded != NULL) *rows_loaded = loaded;
    return st;
}
