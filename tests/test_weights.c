/* test_weights.c - server/weights.c: a saved-weights directory (written here with the npy writer
 * and hand-written manifests) loads into two shards' stores with every row on exactly the shard
 * ps_shard_of names, bit for bit with its accumulator and step; a bias stored as (dim,) is key 0;
 * missing accumulators read as the initial value; the manifest parses into plain structs; and
 * every malformed or mismatched directory is refused with the file and key named, before any row
 * is stored when the headers already show it. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <criterion/criterion.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "hash.h"
#include "npy.h"
#include "store.h"
#include "weights.h"

static char dir[64];
static ps_job_config job;
static ps_store *stores[2][PS_MAX_TABLES];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void) {
    snprintf(dir, sizeof(dir), "/tmp/test_weights.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    memset(stores, 0, sizeof(stores));
}

static void teardown(void) {
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < PS_MAX_TABLES; t++) ps_store_destroy(stores[s][t]);
    nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(weights, .init = setup, .fini = teardown, .timeout = 60);

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static const char *at(const char *rel) {
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", dir, rel);
    return p;
}

static void make_dir(const char *rel) { cr_assert_eq(mkdir(at(rel), 0700), 0, "mkdir %s", rel); }

static void write_text(const char *rel, const char *text) {
    FILE *f = fopen(at(rel), "wb");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void write_npy(const char *rel, ps_npy_dtype dt, unsigned ndim, const uint64_t *shape,
                      const void *data, size_t bytes) {
    ps_npy_writer *w = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_npy_create(at(rel), dt, ndim, shape, &w, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_npy_append(w, data, bytes, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_npy_finish(w, &err), PS_OK, "%s", err.msg);
}

/* The job, and a store per table on each of two shards. */
static void make_job(const char *json) {
    ps_error err = {0};
    cr_assert_eq(ps_config_parse(json, "job.json", NULL, 0, &job, &err), PS_OK, "%s", err.msg);
    for (int s = 0; s < 2; s++)
        for (size_t t = 0; t < job.num_tables; t++)
            cr_assert_eq(ps_store_create(&job.tables[t], job.seed, &stores[s][t], &err), PS_OK,
                         "%s", err.msg);
}

static ps_status load(uint32_t shard, size_t *rows, ps_error *err) {
    return ps_weights_load(dir, &job, shard, 2, stores[shard], rows, err);
}

/* Saved values, distinct per (table, key, coordinate) and exact in float32. */
static float val(size_t t, uint64_t key, size_t d) {
    return (float)(key % 100000) * 0.5f + (float)d * 0.125f + (float)t * 1000.0f;
}
static float accv(size_t t, uint64_t key, size_t d) { return 1.0f + val(t, key, d); }
static uint32_t stepv(uint64_t key) { return (uint32_t)(key % 1000) * 3 + 1; }

/* (n, dim) values or accumulators of table t for keys. */
static float *rows_of(size_t t, const uint64_t *keys, size_t n, size_t dim, bool acc) {
    float *v = malloc(n * dim * sizeof(float) + 1);
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            v[i * dim + d] = acc ? accv(t, keys[i], d) : val(t, keys[i], d);
    return v;
}

/* Writes a sparse table's files: keys, values and, if asked, accumulators and steps. */
static void write_sparse(size_t t, const char *sub, const uint64_t *keys, size_t n, size_t dim,
                         size_t state, bool with_acc, bool with_steps) {
    char rel[128];
    make_dir(sub);
    snprintf(rel, sizeof(rel), "%s/keys.npy", sub);
    write_npy(rel, PS_NPY_U8, 1, (const uint64_t[]){n}, keys, n * 8);
    float *v = rows_of(t, keys, n, dim, false);
    snprintf(rel, sizeof(rel), "%s/values.npy", sub);
    write_npy(rel, PS_NPY_F4, 2, (const uint64_t[]){n, dim}, v, n * dim * 4);
    free(v);
    if (with_acc) {
        v = rows_of(t, keys, n, state, true);
        snprintf(rel, sizeof(rel), "%s/accumulators.npy", sub);
        write_npy(rel, PS_NPY_F4, 2, (const uint64_t[]){n, state}, v, n * state * 4);
        free(v);
    }
    if (with_steps) {
        uint32_t *s = malloc(n * sizeof(*s) + 1);
        for (size_t i = 0; i < n; i++) s[i] = stepv(keys[i]);
        snprintf(rel, sizeof(rel), "%s/steps.npy", sub);
        write_npy(rel, PS_NPY_U4, 1, (const uint64_t[]){n}, s, n * 4);
        free(s);
    }
}

/* n distinct keys spread over 2^64, ascending. */
static uint64_t *sorted_keys(size_t n, uint64_t salt) {
    uint64_t *k = malloc(n * sizeof(*k));
    cr_assert_not_null(k);
    for (size_t i = 0; i < n; i++) k[i] = (ps_mix64(i + salt) & ~0xfffffULL) | i; /* distinct */
    for (size_t i = 1; i < n; i++) /* insertion sort: n is small */
        for (size_t j = i; j > 0 && k[j - 1] > k[j]; j--) {
            uint64_t x = k[j];
            k[j] = k[j - 1], k[j - 1] = x;
        }
    return k;
}

/* Row key of table t is on exactly the owning shard, with these values, accumulator and step;
 * returns the owner. */
static uint32_t assert_row(size_t t, uint64_t key, const float *w, const float *acc,
                           uint32_t step) {
    const uint32_t owner = ps_shard_of(job.tables[t].id, key, 2);
    const size_t dim = job.tables[t].dim, state = ps_store_state_len(stores[owner][t]);
    float gw[64], ga[64];
    uint32_t gs = 0;
    cr_assert_not(ps_store_get(stores[1 - owner][t], key, NULL, NULL),
                  "%s key %llu is on shard %u too", job.tables[t].name, (unsigned long long)key,
                  1 - owner);
    cr_assert(ps_store_get_row(stores[owner][t], key, gw, ga, &gs), "%s key %llu not on shard %u",
              job.tables[t].name, (unsigned long long)key, owner);
    for (size_t d = 0; d < dim; d++)
        cr_assert_eq(bits(gw[d]), bits(w[d]), "%s key %llu w[%zu] = %g, want %g",
                     job.tables[t].name, (unsigned long long)key, d, (double)gw[d], (double)w[d]);
    for (size_t d = 0; d < state; d++)
        cr_assert_eq(bits(ga[d]), bits(acc[d]), "%s key %llu acc[%zu] = %g, want %g",
                     job.tables[t].name, (unsigned long long)key, d, (double)ga[d],
                     (double)acc[d]);
    cr_assert_eq(gs, step, "%s key %llu step %u, want %u", job.tables[t].name,
                 (unsigned long long)key, gs, step);
    return owner;
}

/* --- loading ---------------------------------------------------------------------------------- */

#define FULL_JOB                                                                                   \
    "{\"job_id\": \"w\", \"seed\": 5, \"cluster\": {\"servers\": 2},"                              \
    " \"optimizer\": {\"form\": \"keras\", \"learning_rate\": 0.01},"                              \
    " \"tables\": [{\"name\": \"dense/kernel\", \"dim\": 4},"                                      \
    "  {\"name\": \"dense/bias\", \"dim\": 4},"                                                    \
    "  {\"name\": \"emb\", \"dim\": 3,"                                                            \
    "   \"optimizer\": {\"form\": \"pytorch\", \"lr_decay\": 0.1}},"                               \
    "  {\"name\": \"emb_rw\", \"dim\": 2,"                                                         \
    "   \"optimizer\": {\"form\": \"pytorch\", \"rowwise\": true}}]}"

#define KERAS_OPT "{\"form\": \"keras\", \"rowwise\": false, \"learning_rate\": 0.01}"

/* Four tables (dense kernel, a (dim,) bias, sparse with steps, sparse row-wise) and a manifest
 * entry the job lacks: every row lands on its shard, exactly. */
Test(weights, loads_every_row_on_its_shard) {
    make_job(FULL_JOB);
    make_dir("dense");
    /* dense/kernel: (20, 4), keys 0..19 */
    uint64_t dkeys[20];
    for (uint64_t k = 0; k < 20; k++) dkeys[k] = k;
    float *kv = rows_of(0, dkeys, 20, 4, false), *ka = rows_of(0, dkeys, 20, 4, true);
    write_npy("dense/kernel.npy", PS_NPY_F4, 2, (const uint64_t[]){20, 4}, kv, 20 * 16);
    write_npy("dense/kernel.accumulators.npy", PS_NPY_F4, 2, (const uint64_t[]){20, 4}, ka,
              20 * 16);
    /* dense/bias: one row stored as (4,) */
    float *bv = rows_of(1, dkeys, 1, 4, false), *ba = rows_of(1, dkeys, 1, 4, true);
    write_npy("dense/bias.npy", PS_NPY_F4, 1, (const uint64_t[]){4}, bv, 16);
    write_npy("dense/bias.accumulators.npy", PS_NPY_F4, 1, (const uint64_t[]){4}, ba, 16);
    /* emb: 1000 keys, steps kept (lr_decay); emb_rw: 50 keys, one accumulator per row */
    uint64_t *ek = sorted_keys(1000, 1), *rk = sorted_keys(50, 2);
    write_sparse(2, "emb", ek, 1000, 3, 3, true, true);
    write_sparse(3, "emb_rw", rk, 50, 2, 1, true, false);
    write_text("manifest.json",
               "{\"format\": \"ps-weights\", \"version\": 1, \"job_id\": \"w\", \"seed\": 5,"
               " \"writer\": \"informational keys are ignored\", \"tables\": ["
               "{\"name\": \"dense/bias\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4],"
               " \"values\": \"dense/bias.npy\", \"accumulators\": \"dense/bias.accumulators.npy\","
               " \"optimizer\": " KERAS_OPT "},"
               "{\"name\": \"unused\", \"dim\": 9, \"layout\": \"dense\", \"shape\": [9],"
               " \"values\": \"no/such/file.npy\"},"
               "{\"name\": \"dense/kernel\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [20, 4],"
               " \"values\": \"dense/kernel.npy\","
               " \"accumulators\": \"dense/kernel.accumulators.npy\","
               " \"optimizer\": " KERAS_OPT "},"
               "{\"name\": \"emb\", \"dim\": 3, \"layout\": \"sparse\", \"rows\": 1000,"
               " \"keys\": \"emb/keys.npy\", \"values\": \"emb/values.npy\","
               " \"accumulators\": \"emb/accumulators.npy\", \"steps\": \"emb/steps.npy\","
               " \"optimizer\": {\"form\": \"pytorch\", \"rowwise\": false, \"lr_decay\": 0.1}},"
               "{\"name\": \"emb_rw\", \"dim\": 2, \"layout\": \"sparse\", \"rows\": 50,"
               " \"keys\": \"emb_rw/keys.npy\", \"values\": \"emb_rw/values.npy\","
               " \"accumulators\": \"emb_rw/accumulators.npy\","
               " \"optimizer\": {\"form\": \"pytorch\", \"rowwise\": true}}]}");

    size_t loaded[2];
    ps_error err = {0};
    for (uint32_t s = 0; s < 2; s++)
        cr_assert_eq(load(s, &loaded[s], &err), PS_OK, "shard %u: %s", s, err.msg);

    size_t on[2] = {0, 0};
    for (uint64_t k = 0; k < 20; k++) on[assert_row(0, k, kv + 4 * k, ka + 4 * k, 0)]++;
    on[assert_row(1, 0, bv, ba, 0)]++;
    for (size_t i = 0; i < 1000; i++) {
        float w[3], a[3];
        for (size_t d = 0; d < 3; d++) w[d] = val(2, ek[i], d), a[d] = accv(2, ek[i], d);
        on[assert_row(2, ek[i], w, a, stepv(ek[i]))]++;
    }
    for (size_t i = 0; i < 50; i++) {
        float w[2] = {val(3, rk[i], 0), val(3, rk[i], 1)}, a[1] = {accv(3, rk[i], 0)};
        on[assert_row(3, rk[i], w, a, 0)]++; /* no lr_decay: the store keeps no step */
    }
    for (uint32_t s = 0; s < 2; s++) {
        size_t rows = 0;
        for (size_t t = 0; t < 4; t++) rows += ps_store_rows(stores[s][t]);
        cr_assert_eq(rows, on[s], "shard %u holds rows it was not given", s);
        cr_assert_eq(loaded[s], on[s], "shard %u: rows_loaded %zu, %zu rows", s, loaded[s], on[s]);
        cr_assert_gt(on[s], 400, "shard %u got %zu of 1071 rows: not a split", s, on[s]);
    }
    cr_assert_eq(on[0] + on[1], 20 + 1 + 1000 + 50);
    free(kv), free(ka), free(bv), free(ba), free(ek), free(rk);
}

#define SMALL_JOB                                                                                  \
    "{\"job_id\": \"w\", \"seed\": 5, \"cluster\": {\"servers\": 2},"                              \
    " \"optimizer\": {\"form\": \"keras\"},"                                                       \
    " \"tables\": [{\"name\": \"emb\", \"dim\": 3,"                                                \
    "   \"optimizer\": {\"form\": \"pytorch\", \"lr_decay\": 0.1,"                                 \
    "                 \"initial_accumulator_value\": 0.5}},"                                       \
    "  {\"name\": \"b\", \"dim\": 4}]}"

/* Initial weights only (no accumulators, steps or optimizer): accumulators start at each table's
 * initial_accumulator_value (pytorch 0.5 as set, keras 0.1 by default) and steps at 0. A one-row
 * dense table may also be [1, dim] with accumulators (1, state_len). */
Test(weights, initial_weights_only) {
    make_job(SMALL_JOB);
    uint64_t *ek = sorted_keys(40, 3);
    write_sparse(0, "emb", ek, 40, 3, 3, false, false);
    const float b[4] = {1, 2, 3, 4};
    write_npy("b.npy", PS_NPY_F4, 2, (const uint64_t[]){1, 4}, b, 16);
    write_text("manifest.json",
               "{\"format\": \"ps-weights\", \"version\": 1, \"tables\": ["
               "{\"name\": \"emb\", \"dim\": 3, \"layout\": \"sparse\", \"rows\": 40,"
               " \"keys\": \"emb/keys.npy\", \"values\": \"emb/values.npy\"},"
               "{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [1, 4],"
               " \"values\": \"b.npy\"}]}");
    ps_error err = {0};
    for (uint32_t s = 0; s < 2; s++) cr_assert_eq(load(s, NULL, &err), PS_OK, "%s", err.msg);
    for (size_t i = 0; i < 40; i++) {
        float w[3] = {val(0, ek[i], 0), val(0, ek[i], 1), val(0, ek[i], 2)};
        assert_row(0, ek[i], w, (const float[]){0.5f, 0.5f, 0.5f}, 0);
    }
    assert_row(1, 0, b, (const float[]){0.1f, 0.1f, 0.1f, 0.1f}, 0);

    /* the same bias with its accumulators as (1, 4) */
    write_npy("b.acc.npy", PS_NPY_F4, 2, (const uint64_t[]){1, 4}, (const float[]){5, 6, 7, 8},
              16);
    write_text("manifest.json",
               "{\"format\": \"ps-weights\", \"version\": 1, \"tables\": ["
               "{\"name\": \"emb\", \"dim\": 3, \"layout\": \"sparse\", \"rows\": 0,"
               " \"keys\": \"empty_keys.npy\", \"values\": \"empty_values.npy\"},"
               "{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [1, 4],"
               " \"values\": \"b.npy\", \"accumulators\": \"b.acc.npy\","
               " \"optimizer\": {\"form\": \"keras\"}}]}");
    write_npy("empty_keys.npy", PS_NPY_U8, 1, (const uint64_t[]){0}, NULL, 0);
    write_npy("empty_values.npy", PS_NPY_F4, 2, (const uint64_t[]){0, 3}, NULL, 0);
    for (uint32_t s = 0; s < 2; s++) cr_assert_eq(load(s, NULL, &err), PS_OK, "%s", err.msg);
    assert_row(1, 0, b, (const float[]){5, 6, 7, 8}, 0);
    free(ek);
}

/* 200k keys cross the loader's blocks of rows (87381 at dim 3); a duplicate placed exactly at a
 * block boundary is still caught. */
Test(weights, streams_many_rows_and_checks_order_across_blocks) {
    make_job(SMALL_JOB);
    const size_t n = 200000, block = (1u << 20) / 12;
    uint64_t *k = malloc(n * sizeof(*k));
    cr_assert_not_null(k);
    for (size_t i = 0; i < n; i++) k[i] = i * 7 + 1;
    write_sparse(0, "emb", k, n, 3, 3, false, true);
    write_npy("b.npy", PS_NPY_F4, 1, (const uint64_t[]){4}, (const float[]){1, 2, 3, 4}, 16);
    write_text("manifest.json",
               "{\"format\": \"ps-weights\", \"version\": 1, \"tables\": ["
               "{\"name\": \"emb\", \"dim\": 3, \"layout\": \"sparse\", \"rows\": 200000,"
               " \"keys\": \"emb/keys.npy\", \"values\": \"emb/values.npy\","
               " \"steps\": \"emb/steps.npy\"},"
               "{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4],"
               " \"values\": \"b.npy\"}]}");
    ps_error err = {0};
    size_t loaded[2];
    for (uint32_t s = 0; s < 2; s++)
        cr_assert_eq(load(s, &loaded[s], &err), PS_OK, "%s", err.msg);
    cr_assert_eq(loaded[0] + loaded[1], n + 1);
    cr_assert_eq(ps_store_rows(stores[0][0]) + ps_store_rows(stores[1][0]), n);
    for (size_t i = 0; i < n; i += 997) {
        float w[3] = {val(0, k[i], 0), val(0, k[i], 1), val(0, k[i], 2)};
        assert_row(0, k[i], w, (const float[]){0.5f, 0.5f, 0.5f}, stepv(k[i]));
    }

    k[block] = k[block - 1]; /* first key of the second block repeats the last of the first */
    nftw(at("emb"), rm_one, 8, FTW_DEPTH | FTW_PHYS);
    write_sparse(0, "emb", k, n, 3, 3, false, true);
    ps_store_destroy(stores[0][0]);
    cr_assert_eq(ps_store_create(&job.tables[0], job.seed, &stores[0][0], &err), PS_OK);
    cr_assert_eq(load(0, NULL, &err), PS_DATA);
    char want[200];
    snprintf(want, sizeof(want), "%s: keys[%zu] = %llu after %llu: keys must be ascending and "
             "unique", at("emb/keys.npy"), block, (unsigned long long)k[block],
             (unsigned long long)k[block]);
    cr_assert_str_eq(err.msg, want);
    free(k);
}

/* The manifest as plain structs. */
Test(weights, manifest_read) {
    write_text("manifest.json",
               "{\"format\": \"ps-weights\", \"version\": 1, \"job_id\": \"j7\", \"seed\": 42,"
               " \"tables\": ["
               "{\"name\": \"d\", \"dim\": 64, \"layout\": \"dense\", \"shape\": [20, 64],"
               " \"values\": \"d.npy\", \"accumulators\": \"d.acc.npy\", \"optimizer\":"
               " {\"form\": \"keras\", \"rowwise\": true, \"learning_rate\": 0.02,"
               " \"epsilon\": 1e-07, \"initial_accumulator_value\": 0.2}},"
               "{\"name\": \"s\", \"dim\": 16, \"layout\": \"sparse\", \"rows\": 12345,"
               " \"keys\": \"s/k.npy\", \"values\": \"s/v.npy\", \"steps\": \"s/st.npy\"}]}");
    ps_weights_manifest m;
    ps_error err = {0};
    cr_assert_eq(ps_weights_manifest_read(dir, &m, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(m.version, 1);
    cr_assert_str_eq(m.job_id, "j7");
    cr_assert(m.has_seed && m.seed == 42);
    cr_assert_str_eq(m.dir, dir);
    cr_assert_str_eq(m.path, at("manifest.json"));
    cr_assert_eq(m.num_tables, 2);
    const ps_weights_table *d = ps_weights_manifest_find(&m, "d"), *s = &m.tables[1];
    cr_assert_eq(d, &m.tables[0]);
    cr_assert_null(ps_weights_manifest_find(&m, "x"));
    cr_assert(d->layout == PS_WEIGHTS_DENSE && d->dim == 64 && d->rows == 20 && !d->one_row);
    cr_assert_str_eq(d->values, "d.npy");
    cr_assert_str_eq(d->accumulators, "d.acc.npy");
    cr_assert(d->keys == NULL && d->steps == NULL);
    cr_assert(d->has_optimizer && d->opt.form == PS_ADAGRAD_KERAS && d->opt.rowwise);
    cr_assert(d->opt.learning_rate == 0.02 && d->opt.epsilon == 1e-7 &&
              d->opt.initial_accumulator_value == 0.2 && d->opt.lr_decay == 0);
    cr_assert(s->layout == PS_WEIGHTS_SPARSE && s->dim == 16 && s->rows == 12345);
    cr_assert_str_eq(s->keys, "s/k.npy");
    cr_assert_str_eq(s->steps, "s/st.npy");
    cr_assert(s->accumulators == NULL && !s->has_optimizer);
    ps_weights_manifest_free(&m);
    cr_assert(m.tables == NULL && m.num_tables == 0);
    ps_weights_manifest_free(&m);
    ps_weights_manifest_free(NULL);
}

/* --- errors ----------------------------------------------------------------------------------- */

/* The small job's files: emb (5 keys, values, accumulators, steps), b (4,), and some bad ones. */
static void small_fixture(void) {
    make_job(SMALL_JOB);
    const uint64_t keys[5] = {2, 3, 5, 7, 11};
    write_sparse(0, "emb", keys, 5, 3, 3, true, true);
    write_npy("emb/keys6.npy", PS_NPY_U8, 1, (const uint64_t[]){6},
              (const uint64_t[]){2, 3, 5, 7, 11, 13}, 48);
    write_npy("emb/unsorted.npy", PS_NPY_U8, 1, (const uint64_t[]){5},
              (const uint64_t[]){2, 5, 3, 7, 11}, 40);
    write_npy("emb/dup.npy", PS_NPY_U8, 1, (const uint64_t[]){5},
              (const uint64_t[]){2, 3, 3, 7, 11}, 40);
    float v[15] = {0};
    write_npy("emb/trunc.npy", PS_NPY_F4, 2, (const uint64_t[]){5, 3}, v, sizeof(v));
    cr_assert_eq(truncate(at("emb/trunc.npy"), 128 + 50), 0);
    write_npy("emb/values_t.npy", PS_NPY_F4, 2, (const uint64_t[]){3, 5}, v, sizeof(v));
    write_npy("b.npy", PS_NPY_F4, 1, (const uint64_t[]){4}, (const float[]){1, 2, 3, 4}, 16);
}

#define MAN(tables) "{\"format\": \"ps-weights\", \"version\": 1, \"tables\": [" tables "]}"
#define EMB(dim, rows, keys, values, extra)                                                        \
    "{\"name\": \"emb\", \"dim\": " dim ", \"layout\": \"sparse\", \"rows\": " rows                \
    ", \"keys\": \"" keys "\", \"values\": \"" values "\"" extra "}"
#define EMB_OK EMB("3", "5", "emb/keys.npy", "emb/values.npy", "")
#define B_OK                                                                                       \
    "{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4], \"values\": \"b.npy\"}"
#define ACC(form) ", \"accumulators\": \"emb/accumulators.npy\", \"optimizer\": " form

/* Writes manifest, loads shard 0 and expects st with "DIR/file: msg" somewhere in the message. */
static void expect(const char *manifest, ps_status want, const char *file, const char *msg) {
    if (manifest != NULL) write_text("manifest.json", manifest);
    ps_error err = {0};
    ps_status st = load(0, NULL, &err);
    cr_assert_eq(st, want, "got %s (%s), want %s: %s", ps_status_str(st), err.msg,
                 ps_status_str(want), msg);
    if (want == PS_OK) return;
    char full[600];
    snprintf(full, sizeof(full), "%s: %s", at(file), msg);
    cr_assert(strstr(err.msg, full) != NULL, "message \"%s\"\n   lacks \"%s\"", err.msg, full);
}

Test(weights, good_small_fixture_loads) {
    small_fixture();
    expect(MAN(EMB_OK "," B_OK), PS_OK, "", "");
    cr_assert_gt(ps_store_rows(stores[0][0]), 0);
}

Test(weights, missing_or_malformed_manifest) {
    small_fixture();
    expect(NULL, PS_IO, "manifest.json", "No such file or directory");
    expect("{\"format\": \"ps-weights\",\n \"version\": 1,, }", PS_DATA, "manifest.json:2",
           "invalid JSON near");
    expect("[1]", PS_DATA, "manifest.json", "expected a JSON object");
    expect("{\"version\": 1, \"tables\": []}", PS_DATA, "manifest.json",
           "format: expected a non-empty string");
    expect("{\"format\": \"npz\", \"version\": 1, \"tables\": []}", PS_DATA, "manifest.json",
           "format: \"npz\", expected \"ps-weights\"");
    expect("{\"format\": \"ps-weights\", \"version\": 2, \"tables\": []}", PS_MISMATCH,
           "manifest.json", "version 2; this build reads version 1");
    expect("{\"format\": \"ps-weights\", \"version\": \"1\", \"tables\": []}", PS_DATA,
           "manifest.json", "version: expected a positive integer");
    expect("{\"format\": \"ps-weights\", \"version\": 1, \"seed\": -1, \"tables\": []}", PS_DATA,
           "manifest.json", "seed: expected a non-negative integer");
    expect("{\"format\": \"ps-weights\", \"version\": 1, \"job_id\": 7, \"tables\": []}", PS_DATA,
           "manifest.json", "job_id: expected a non-empty string");
    expect("{\"format\": \"ps-weights\", \"version\": 1, \"tables\": {}}", PS_DATA,
           "manifest.json", "tables: expected a list");
    expect(MAN("7"), PS_DATA, "manifest.json", "tables[0]: expected an object");
}

Test(weights, malformed_table_entries) {
    small_fixture();
    expect(MAN(EMB("\"3\"", "5", "emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "manifest.json", "tables[0].dim: expected a positive integer");
    expect(MAN(EMB("0", "5", "emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "manifest.json", "tables[0].dim: expected a positive integer");
    expect(MAN(EMB("2.5", "5", "emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "manifest.json", "tables[0].dim: expected a positive integer");
    expect(MAN(EMB("5000000000", "5", "emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "manifest.json", "tables[0].dim: 5000000000 is above the limit 4294967295");
    expect(MAN(EMB("3", "-5", "emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "manifest.json", "tables[0].rows: expected a non-negative integer");
    expect(MAN(EMB_OK ",{\"name\": \"b\", \"dim\": 4, \"layout\": \"flat\"}"), PS_DATA,
           "manifest.json", "tables[1].layout: \"flat\", expected \"dense\" or \"sparse\"");
    expect(MAN(EMB_OK ",{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [5],"
                      " \"values\": \"b.npy\"}"),
           PS_DATA, "manifest.json", "tables[1].shape: last dimension 5, dim is 4");
    expect(MAN(EMB_OK ",{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [1, 2, 4],"
                      " \"values\": \"b.npy\"}"),
           PS_DATA, "manifest.json", "tables[1].shape: expected [rows, dim] or [dim]");
    expect(MAN(EMB_OK ",{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4],"
                      " \"keys\": \"emb/keys.npy\", \"values\": \"b.npy\"}"),
           PS_DATA, "manifest.json", "tables[1].keys: a dense table's keys are 0..n-1");
    expect(MAN(EMB_OK ",{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4]}"),
           PS_DATA, "manifest.json", "tables[1].values: expected a non-empty string");
    expect(MAN(EMB_OK "," EMB_OK), PS_DATA, "manifest.json",
           "tables[1].name: \"emb\" is also tables[0]");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy",
                   ", \"accumulators\": \"emb/accumulators.npy\"") "," B_OK),
           PS_DATA, "manifest.json", "tables[0].optimizer: required with \"accumulators\"");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy", ACC("{\"form\": \"sgd\"}"))
               "," B_OK),
           PS_DATA, "manifest.json",
           "tables[0].optimizer.form: \"sgd\", expected \"pytorch\" or \"keras\"");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy",
                   ACC("{\"form\": \"pytorch\", \"rowwise\": 1}")) "," B_OK),
           PS_DATA, "manifest.json", "tables[0].optimizer.rowwise: expected true or false");
}

Test(weights, file_names_stay_inside_the_directory) {
    small_fixture();
    expect(MAN(EMB("3", "5", "/etc/passwd", "emb/values.npy", "") "," B_OK), PS_DATA,
           "manifest.json",
           "tables[0].keys: \"/etc/passwd\": file names are relative to the directory, never "
           "absolute, never with \"..\"");
    expect(MAN(EMB("3", "5", "emb/../emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "manifest.json", "tables[0].keys: \"emb/../emb/keys.npy\": file names are relative");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "../values.npy", "") "," B_OK), PS_DATA,
           "manifest.json", "tables[0].values: \"../values.npy\": file names are relative");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/none.npy", "") "," B_OK), PS_IO,
           "emb/none.npy", "No such file or directory");
}

Test(weights, job_and_manifest_disagree) {
    small_fixture();
    expect(MAN(EMB_OK), PS_CONFIG, "manifest.json", "no table \"b\" (the job has it)");
    expect(MAN(EMB("4", "5", "emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_MISMATCH,
           "manifest.json", "table \"emb\": dim 4, the job's is 3");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy", ACC("{\"form\": \"keras\"}"))
               "," B_OK),
           PS_MISMATCH, "manifest.json",
           "table \"emb\": the accumulators are AdaGrad state of form \"keras\" (rowwise false); "
           "the job trains it with form \"pytorch\" (rowwise false)");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy",
                   ACC("{\"form\": \"pytorch\", \"rowwise\": true}")) "," B_OK),
           PS_MISMATCH, "manifest.json",
           "table \"emb\": the accumulators are AdaGrad state of form \"pytorch\" (rowwise true); "
           "the job trains it with form \"pytorch\" (rowwise false)");
    /* without accumulators the form does not matter: only weights are loaded */
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy",
                   ", \"optimizer\": {\"form\": \"keras\"}") "," B_OK),
           PS_OK, "", "");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy", ACC("{\"form\": \"pytorch\"}"))
               "," B_OK),
           PS_OK, "", "");
}

Test(weights, files_disagree_with_the_manifest) {
    small_fixture();
    char tail[200];
    snprintf(tail, sizeof(tail), "table \"emb\" of %s needs '<u8' (5,)", at("manifest.json"));
    char msg[300];
    snprintf(msg, sizeof(msg), "'<u8' (6,), %s", tail);
    expect(MAN(EMB("3", "5", "emb/keys6.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "emb/keys6.npy", msg);
    expect(MAN(EMB("3", "6", "emb/keys6.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "emb/values.npy", "'<f4' (5, 3), table \"emb\"");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy", "") "," B_OK), PS_OK, "", "");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values_t.npy", "") "," B_OK), PS_DATA,
           "emb/values_t.npy", "'<f4' (3, 5), table \"emb\"");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/steps.npy", "") "," B_OK), PS_DATA,
           "emb/steps.npy", "'<u4' (5,), table \"emb\"");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/values.npy",
                   ", \"steps\": \"emb/keys.npy\"") "," B_OK),
           PS_DATA, "emb/keys.npy", "'<u8' (5,), table \"emb\"");
    expect(MAN(EMB("3", "5", "emb/keys.npy", "emb/trunc.npy", "") "," B_OK), PS_DATA,
           "emb/trunc.npy", "shape (5, 3) needs 60 bytes of data, file has 50");
    expect(MAN(EMB_OK ",{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [1, 4],"
                      " \"values\": \"b.npy\"}"),
           PS_DATA, "b.npy", "'<f4' (4,), table \"b\"");
}

/* Keys out of order or repeated are refused (a repeat would silently replace its twin). */
Test(weights, keys_must_ascend) {
    small_fixture();
    expect(MAN(EMB("3", "5", "emb/unsorted.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "emb/unsorted.npy", "keys[2] = 3 after 5: keys must be ascending and unique");
    expect(MAN(EMB("3", "5", "emb/dup.npy", "emb/values.npy", "") "," B_OK), PS_DATA,
           "emb/dup.npy", "keys[2] = 3 after 3");
}

/* A table whose headers are wrong is found before any row of any table is stored. */
Test(weights, refused_before_any_row_is_stored) {
    small_fixture();
    expect(MAN(EMB_OK ",{\"name\": \"b\", \"dim\": 4, \"layout\": \"dense\", \"shape\": [4],"
                      " \"values\": \"emb/trunc.npy\"}"),
           PS_DATA, "emb/trunc.npy", "shape (5, 3) needs 60 bytes");
    cr_assert_eq(ps_store_rows(stores[0][0]), 0, "emb was loaded before b was checked");
}

Test(weights, bad_arguments) {
    small_fixture();
    write_text("manifest.json", MAN(EMB_OK "," B_OK));
    ps_error err = {0};
    cr_assert_eq(ps_weights_load(dir, &job, 2, 2, stores[0], NULL, &err), PS_INVALID_ARG);
    cr_assert_eq(ps_weights_load(dir, &job, 0, 0, stores[0], NULL, &err), PS_INVALID_ARG);
    ps_store *swapped[2] = {stores[0][1], stores[0][0]};
    cr_assert_eq(ps_weights_load(dir, &job, 0, 2, swapped, NULL, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "store 0 holds table \"b\", not the job's \"emb\"") != NULL, "%s",
              err.msg);
}
