/* test_golden.c - whole training runs against PyTorch: tests/ref/make_train_golden.py trained the
 * seed model 20-64-1 and a sparse embedding-bag model 300x8-1 from fixed initial weights on fixed
 * data with torch 1.13 (both AdaGrad forms, batch 32/64/128, 3 epochs, no shuffle) and wrote each
 * epoch's loss and accuracy and the final weights (tests/ref/train/). Here the same jobs run on
 * two in-process shards with `sync` workers that start from the same weights (fit.init_from): one
 * worker of batch B, and W workers of batch B/W, which sync makes the same computation; the
 * weights and AdaGrad accumulators are then read back through ps_export's files. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "export.h"
#include "npy.h"
#include "testutil.h"
#include "train.h"
#include "weights.h"

#define REF PS_SOURCE_DIR "/tests/ref/train"

/* Bounds, from the float32 rounding a run accumulates (the script measured its own float32 run
 * against float64 at 7e-9 on losses and 1.4e-7 on weights): */
#define LOSS_TOL 1e-6   /* absolute, on each epoch's mean loss */
#define WEIGHT_RTOL 1e-5 /* |ours - torch| <= WEIGHT_RTOL * max(|torch|, WEIGHT_FLOOR) */
#define WEIGHT_FLOOR 1e-2

static char dir[64];
static cJSON *golden;

static void setup(void) {
    tu_tmpdir(dir, "ps_golden");
    golden = cJSON_Parse(tu_slurp(REF "/golden.json"));
    cr_assert_not_null(golden);
}
static void teardown(void) {
    cJSON_Delete(golden);
    tu_rmtree(dir);
}
TestSuite(golden, .init = setup, .fini = teardown, .timeout = 120);

static const cJSON *find_case(const char *name) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(golden, "cases")) {
        if (strcmp(cJSON_GetObjectItem(c, "name")->valuestring, name) == 0) return c;
    }
    cr_assert_fail("no case %s in golden.json", name);
    return NULL;
}

/* dir/rel in a static buffer (two at a time) */
static const char *at(const char *d, const char *rel) {
    static char buf[2][640];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", d, rel);
    return buf[k];
}

typedef struct {
    ps_job_config *job;
    uint32_t rank;
    char events[128];
    ps_status st;
    ps_error err;
} worker_run;

static void *run_worker(void *arg) {
    worker_run *w = arg;
    FILE *out = fopen(w->events, "w");
    ps_train_options o = {.job = w->job, .rank = w->rank, .events = true, .out = out,
                          .log = {.level = PS_LOG_ERROR}};
    w->st = ps_train_run(&o, &w->err);
    fclose(out);
    return NULL;
}

typedef struct {
    double loss_sum;
    uint64_t samples, correct;
} epoch_sum;

/* Adds a worker's "@ps" epoch events to sums[epoch - 1]. */
static void add_events(const char *path, epoch_sum *sums, unsigned epochs) {
    char *text = tu_slurp(path);
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strstr(line, "\"ev\": \"epoch\"") == NULL) continue;
        unsigned e;
        unsigned long long samples, correct;
        double loss_sum;
        cr_assert_eq(sscanf(strstr(line, "\"epoch\": "), "\"epoch\": %u", &e), 1);
        cr_assert_eq(sscanf(strstr(line, "\"samples\": "), "\"samples\": %llu", &samples), 1);
        cr_assert_eq(sscanf(strstr(line, "\"loss_sum\": "), "\"loss_sum\": %lf", &loss_sum), 1);
        cr_assert_eq(sscanf(strstr(line, "\"correct\": "), "\"correct\": %llu", &correct), 1);
        cr_assert(e >= 1 && e <= epochs);
        sums[e - 1].loss_sum += loss_sum, sums[e - 1].samples += samples;
        sums[e - 1].correct += correct;
    }
}

static void set(cJSON *obj, const char *key, cJSON *value) {
    if (cJSON_GetObjectItem(obj, key) != NULL) cJSON_ReplaceItemInObject(obj, key, value);
    else cJSON_AddItemToObject(obj, key, value);
}

static void check_weights(const char *what, const char *table, const float *got,
                          const float *want, uint64_t n) {
    double worst = 0;
    for (uint64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double scale = fabs((double)want[i]) > WEIGHT_FLOOR ? fabs((double)want[i]) : WEIGHT_FLOOR;
        cr_assert(d <= WEIGHT_RTOL * scale, "%s: %s[%llu] = %.9g, torch %.9g", what, table,
                  (unsigned long long)i, (double)got[i], (double)want[i]);
        if (d / scale > worst) worst = d / scale;
    }
    cr_log_info("%s: %s: %llu weights, worst relative error %.2e", what, table,
                (unsigned long long)n, worst);
}

/* Runs golden case `name` with `workers` sync workers of batch_size / workers each. */
static void run_case(const char *name, uint32_t workers) {
    const cJSON *c = find_case(name);
    const uint32_t B = (uint32_t)cJSON_GetObjectItem(c, "batch_size")->valueint;
    const unsigned E = (unsigned)cJSON_GetObjectItem(c, "epochs")->valueint;
    char what[96], path[512];
    snprintf(what, sizeof(what), "%s with %u sync workers of batch %u", name, workers,
             B / workers);

    cJSON *j = cJSON_Duplicate(cJSON_GetObjectItem(c, "job"), true);
    cJSON *cluster = cJSON_GetObjectItem(j, "cluster"), *fit = cJSON_GetObjectItem(j, "fit");
    set(cluster, "workers", cJSON_CreateNumber(workers));
    set(cluster, "servers", cJSON_CreateNumber(2));
    set(cluster, "consistency", cJSON_CreateString("sync"));
    set(fit, "batch_size", cJSON_CreateNumber(B / workers));
    set(fit, "verbose", cJSON_CreateNumber(0));
    snprintf(path, sizeof(path), REF "/%s", cJSON_GetObjectItem(c, "init")->valuestring);
    set(fit, "init_from", cJSON_CreateString(path));
    cJSON *train = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "data"), "train");
    snprintf(path, sizeof(path), REF "/%s", cJSON_GetObjectItem(c, "data")->valuestring);
    set(train, "path", cJSON_CreateString(path));
    char *json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    ps_job_config job;
    tu_job(json, &job);
    free(json);

    test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
    tu_job_use(&job, s, 2);
    worker_run w[4];
    pthread_t th[4];
    cr_assert(workers <= 4);
    for (uint32_t r = 0; r < workers; r++) {
        w[r] = (worker_run){.job = &job, .rank = r};
        snprintf(w[r].events, sizeof(w[r].events), "%s/events%u", dir, r);
        cr_assert_eq(pthread_create(&th[r], NULL, run_worker, &w[r]), 0);
    }
    for (uint32_t r = 0; r < workers; r++) {
        pthread_join(th[r], NULL);
        cr_assert_eq(w[r].st, PS_OK, "%s: worker %u: %s", what, r, w[r].err.msg);
    }

    /* each epoch's loss and accuracy, the whole job's */
    epoch_sum sums[8] = {{0}};
    cr_assert(E <= 8);
    for (uint32_t r = 0; r < workers; r++) add_events(w[r].events, sums, E);
    const cJSON *losses = cJSON_GetObjectItem(c, "epoch_loss");
    const cJSON *accs = cJSON_GetObjectItem(c, "epoch_accuracy");
    for (unsigned e = 0; e < E; e++) {
        const double loss = sums[e].loss_sum / (double)sums[e].samples;
        const double want = cJSON_GetArrayItem(losses, (int)e)->valuedouble;
        cr_assert_eq(sums[e].samples, 200, "%s: epoch %u: %llu samples", what, e + 1,
                     (unsigned long long)sums[e].samples);
        cr_assert(fabs(loss - want) <= LOSS_TOL, "%s: epoch %u loss %.9f, torch %.9f", what,
                  e + 1, loss, want);
        const double acc_want = cJSON_GetArrayItem(accs, (int)e)->valuedouble;
        cr_assert_eq(sums[e].correct, (uint64_t)llround(acc_want * 200), "%s: epoch %u accuracy",
                     what, e + 1);
    }

    /* every weight and accumulator of every table, as ps_export writes them */
    char out[160];
    snprintf(out, sizeof(out), "%s/%s_w%u", dir, name, workers);
    ps_client_options co = {.job = &job, .admin = true, .log = {.level = PS_LOG_ERROR}};
    ps_client *cl;
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&co, &cl, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_export(cl, &job, out, NULL, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(cl);
    ps_weights_manifest ours = {0}, ref = {0};
    cr_assert_eq(ps_weights_manifest_read(out, &ours, &err), PS_OK, "%s", err.msg);
    snprintf(path, sizeof(path), REF "/%s", cJSON_GetObjectItem(c, "weights")->valuestring);
    cr_assert_eq(ps_weights_manifest_read(path, &ref, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ours.num_tables, ref.num_tables);
    for (size_t i = 0; i < ref.num_tables; i++) {
        const ps_weights_table *r = &ref.tables[i], *o = ps_weights_manifest_find(&ours, r->name);
        cr_assert_not_null(o, "%s: no table %s in the export", what, r->name);
        cr_assert_eq(o->layout, r->layout, "%s: %s", what, r->name);
        cr_assert_eq(o->rows, r->rows, "%s: %s: %llu rows, torch %llu", what, r->name,
                     (unsigned long long)o->rows, (unsigned long long)r->rows);
        if (r->layout == PS_WEIGHTS_SPARSE) {
            uint64_t n1, n2;
            uint64_t *k1 = tu_read_u8(at(out, o->keys), &n1), *k2 = tu_read_u8(at(path, r->keys), &n2);
            cr_assert(n1 == n2 && memcmp(k1, k2, n1 * 8) == 0, "%s: %s: other keys", what,
                      r->name);
            free(k1), free(k2);
        }
        const char *files[2][2] = {{o->values, r->values}, {o->accumulators, r->accumulators}};
        for (int f = 0; f < 2; f++) {
            uint64_t n1, n2;
            float *got = tu_read_f4(at(out, files[f][0]), &n1), *want = tu_read_f4(at(path, files[f][1]), &n2);
            cr_assert_eq(n1, n2, "%s: %s", what, files[f][0]);
            char label[96];
            snprintf(label, sizeof(label), "%s %s", r->name, f ? "accumulators" : "values");
            check_weights(what, label, got, want, n1);
            free(got), free(want);
        }
    }
    ps_weights_manifest_free(&ours);
    ps_weights_manifest_free(&ref);
    tu_server_free(s[0]);
    tu_server_free(s[1]);
}

Test(golden, seed_model_keras_form_one_worker) { run_case("seed_keras_b32", 1); }
Test(golden, seed_model_pytorch_form_one_worker) { run_case("seed_pytorch_b32", 1); }
Test(golden, seed_model_keras_form_2_and_4_sync_workers) {
    run_case("seed_keras_b64", 2);
    run_case("seed_keras_b128", 4);
}
Test(golden, seed_model_pytorch_form_2_and_4_sync_workers) {
    run_case("seed_pytorch_b64", 2);
    run_case("seed_pytorch_b128", 4);
}
Test(golden, sparse_model_keras_form) {
    run_case("sparse_keras_b32", 1);
    run_case("sparse_keras_b64", 2);
}
Test(golden, sparse_model_pytorch_form) {
    run_case("sparse_pytorch_b32", 1);
    run_case("sparse_pytorch_b64", 2);
}
