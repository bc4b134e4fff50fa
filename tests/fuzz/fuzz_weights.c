/* fuzz_weights.c - libFuzzer target: the saved-weights loader (server/weights.c). The input is
 * DIR/manifest.json; DIR holds small fixed .npy files (good ones of every shape the job's four
 * tables take, and bad ones: keys out of order or repeated, a wrong dtype, empty arrays, garbage)
 * for the manifest to point at in any combination. The manifest is read into structs (every
 * entry findable by its name), then loaded into one of two shards' stores. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "npy.h"
#include "weights.h"

#define JOB                                                                                        \
    "{\"job_id\": \"fz\", \"seed\": 5, \"cluster\": {\"servers\": 2},"                             \
    " \"optimizer\": {\"form\": \"keras\", \"learning_rate\": 0.01},"                              \
    " \"tables\": [{\"name\": \"dense/kernel\", \"dim\": 4},"                                      \
    "  {\"name\": \"dense/bias\", \"dim\": 4},"                                                    \
    "  {\"name\": \"emb\", \"dim\": 2,"                                                            \
    "   \"optimizer\": {\"form\": \"pytorch\", \"lr_decay\": 0.1}},"                               \
    "  {\"name\": \"rw\", \"dim\": 2, \"optimizer\": {\"form\": \"pytorch\", \"rowwise\": true}}]}"

static ps_job_config job;
static ps_store *stores[2][PS_MAX_TABLES];
static char dir[300];

static void npy(const char *name, ps_npy_dtype dt, unsigned ndim, const uint64_t *shape,
                const void *items, size_t bytes) {
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ps_npy_writer *w;
    ps_error err = {0};
    FZ_CHECK(ps_npy_create(path, dt, ndim, shape, &w, &err) == PS_OK &&
                 ps_npy_append(w, items, bytes, &err) == PS_OK && ps_npy_finish(w, &err) == PS_OK,
             "%s: %s", name, err.msg);
}

static void init(void) {
    ps_error err = {0};
    FZ_CHECK(ps_config_parse(JOB, "fuzz.json", NULL, 0, &job, &err) == PS_OK, "%s", err.msg);
    for (int s = 0; s < 2; s++)
        for (size_t t = 0; t < job.num_tables; t++)
            FZ_CHECK(ps_store_create(&job.tables[t], job.seed, &stores[s][t], &err) == PS_OK,
                     "%s", err.msg);
    snprintf(dir, sizeof(dir), "%s", fz_path("w"));
    char sub[320];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    FZ_CHECK(mkdir(dir, 0700) == 0 && mkdir(sub, 0700) == 0, "mkdir %s", dir);
    float f[12];
    for (int i = 0; i < 12; i++) f[i] = 0.25f * (float)i - 1.0f;
    const uint64_t keys[5] = {1, 5, 9, 100, 1ull << 63}, desc[5] = {9, 5, 1, 0, 0};
    const uint64_t dup[5] = {1, 5, 5, 9, 10};
    const uint32_t steps[5] = {0, 1, 2, 3, 4};
    npy("dk.npy", PS_NPY_F4, 2, (const uint64_t[]){3, 4}, f, 48);
    npy("dk.acc.npy", PS_NPY_F4, 2, (const uint64_t[]){3, 4}, f, 48);
    npy("dk.u4.npy", PS_NPY_U4, 2, (const uint64_t[]){3, 4}, f, 48);
    npy("db.npy", PS_NPY_F4, 1, (const uint64_t[]){4}, f, 16);
    npy("db14.npy", PS_NPY_F4, 2, (const uint64_t[]){1, 4}, f, 16);
    npy("ek.npy", PS_NPY_U8, 1, (const uint64_t[]){5}, keys, 40);
    npy("sub/ek.npy", PS_NPY_U8, 1, (const uint64_t[]){5}, keys, 40);
    npy("ek.desc.npy", PS_NPY_U8, 1, (const uint64_t[]){5}, desc, 40);
    npy("ek.dup.npy", PS_NPY_U8, 1, (const uint64_t[]){5}, dup, 40);
    npy("ev.npy", PS_NPY_F4, 2, (const uint64_t[]){5, 2}, f, 40);
    npy("ea1.npy", PS_NPY_F4, 2, (const uint64_t[]){5, 1}, f, 20);
    npy("es.npy", PS_NPY_U4, 1, (const uint64_t[]){5}, steps, 20);
    npy("e0k.npy", PS_NPY_U8, 1, (const uint64_t[]){0}, NULL, 0);
    npy("e0v.npy", PS_NPY_F4, 2, (const uint64_t[]){0, 2}, NULL, 0);
    npy("scalar.npy", PS_NPY_F4, 0, NULL, f, 4);
    char bad[400];
    snprintf(bad, sizeof(bad), "%s/bad.npy", dir);
    FILE *fp = fopen(bad, "wb");
    FZ_CHECK(fp != NULL && fputs("\x93NUMPY\x01\x00garbage", fp) >= 0 && fclose(fp) == 0, "bad");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (job.num_tables == 0) init();
    char path[400];
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    FILE *fp = fopen(path, "wb");
    FZ_CHECK(fp != NULL && (size == 0 || fwrite(data, 1, size, fp) == size) && fclose(fp) == 0,
             "cannot write %s", path);

    ps_weights_manifest m;
    memset(&m, 0xa5, sizeof(m)); /* the reader must set m up even when it fails */
    ps_error err = {0};
    if (ps_weights_manifest_read(dir, &m, &err) == PS_OK) {
        for (size_t i = 0; i < m.num_tables; i++) {
            const ps_weights_table *t = &m.tables[i];
            FZ_CHECK(t->name != NULL && t->values != NULL && t->dim > 0, "table %zu incomplete", i);
            FZ_CHECK(ps_weights_manifest_find(&m, t->name) != NULL, "table \"%s\" not found",
                     t->name);
            FZ_CHECK(t->layout == PS_WEIGHTS_SPARSE || t->keys == NULL, "dense table with keys");
        }
    } else {
        FZ_CHECK(err.msg[0] != '\0', "manifest refused without a message");
    }
    ps_weights_manifest_free(&m);

    const uint32_t shard = (uint32_t)(size & 1);
    size_t rows = 0;
    if (ps_weights_load(dir, &job, shard, 2, stores[shard], &rows, &err) != PS_OK)
        FZ_CHECK(err.msg[0] != '\0', "load refused without a message");
    else
        FZ_CHECK(rows <= 3 + 3 + 5 + 5, "%zu rows loaded; the files hold at most 16", rows);
    return 0;
}
