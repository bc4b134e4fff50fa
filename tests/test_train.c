/* test_train.c - the worker's training loop against real shards on loopback (in-process): which
 * rows each batch's gradients reach, in every consistency mode, the quality of a sparse model
 * trained with and without overlap, and a dense input trained as the sparse path would. Workers
 * run ps_train_run on threads of their own. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "train.h"

static char dir[64];

static void setup(void) { tu_tmpdir(dir, "ps_train"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(train, .init = setup, .fini = teardown, .timeout = 120);

typedef struct {
    ps_job_config *job;
    uint32_t rank;
    ps_status st;
    ps_error err;
} worker_run;

static void *run_worker(void *arg) {
    worker_run *w = arg;
    FILE *devnull = fopen("/dev/null", "w");
    ps_train_options o = {.job = w->job, .rank = w->rank, .out = devnull,
                          .log = {.level = PS_LOG_ERROR}};
    w->st = ps_train_run(&o, &w->err);
    fclose(devnull);
    return NULL;
}

/* Runs every worker of job on its own thread against job's (running) servers. */
static void train_all(ps_job_config *job) {
    worker_run w[8];
    pthread_t th[8];
    cr_assert(job->num_workers <= 8);
    for (uint32_t r = 0; r < job->num_workers; r++) {
        w[r] = (worker_run){.job = job, .rank = r};
        cr_assert_eq(pthread_create(&th[r], NULL, run_worker, &w[r]), 0);
    }
    for (uint32_t r = 0; r < job->num_workers; r++) {
        pthread_join(th[r], NULL);
        cr_assert_eq(w[r].st, PS_OK, "worker %u: %s", r, w[r].err.msg);
    }
}

/* --- every id in one batch only: each row moves once, by its own sample's label ---------------- */

enum { ONE_N = 64, ONE_IDS = 3 };

/* Sample i holds ids 3i+1..3i+3 (1-based, so keys 3i..3i+2) with value 1; no id occurs twice. */
static int label_of(int i) { return (i * 5 + i / 3) % 3 == 0; }

static void write_one_id_per_batch(const char *path) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < ONE_N; i++) {
        fprintf(f, "%d", label_of(i));
        for (int k = 1; k <= ONE_IDS; k++) fprintf(f, " %d:1", ONE_IDS * i + k);
        fputc('\n', f);
    }
    fclose(f);
}

/* One sigmoid unit over the ids, PyTorch-form AdaGrad with lr 0.1 and a zero kernel: a row pushed
 * once with gradient g becomes 0 + (-0.1 * g) / (sqrt(g^2) + 1e-10) = -0.1 * sign(g) within two
 * roundings (|g| >= 1e-3 here, so eps vanishes in the sum), and g = (p - y) / B has the sign of
 * -y: +0.1 for a label 1, -0.1 for a label 0. Any row pushed with another batch's gradients, or
 * never pushed, or pushed twice, is off. */
static void check_one_id_per_batch(const char *cluster, const char *fit, uint32_t workers) {
    char data[128], json[2048];
    snprintf(data, sizeof(data), "%s/one.svm", dir);
    write_one_id_per_batch(data);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"one\", \"cluster\": {\"servers\": 2, \"workers\": %u%s},"
             " \"optimizer\": {\"learning_rate\": 0.1},"
             " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": %d,"
             " \"init\": {\"type\": \"zeros\"}},"
             " \"layers\": [{\"units\": 1, \"activation\": \"sigmoid\"}],"
             " \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 1, \"batch_size\": 4, \"shuffle\": false, \"verbose\": 0%s},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             workers, cluster, ONE_N * ONE_IDS, fit, data);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
    tu_job_use(&job, s, 2);
    train_all(&job);

    ps_client *c = tu_admin_client(&job);
    const uint32_t kernel = (uint32_t)ps_config_table(&job, "dense/kernel");
    uint64_t keys[ONE_N * ONE_IDS], rows, bytes;
    float w[ONE_N * ONE_IDS];
    for (int k = 0; k < ONE_N * ONE_IDS; k++) keys[k] = (uint64_t)k;
    ps_error err = {0};
    cr_assert_eq(ps_client_pull(c, kernel, keys, ONE_N * ONE_IDS, w, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_table_stats(c, kernel, &rows, &bytes, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(rows, (uint64_t)ONE_N * ONE_IDS, "%llu rows stored: every id is pushed once",
                 (unsigned long long)rows);
    for (int i = 0; i < ONE_N; i++)
        for (int k = 0; k < ONE_IDS; k++) {
            const float want = label_of(i) ? 0.1f : -0.1f;
            cr_assert(fabsf(w[ONE_IDS * i + k] - want) <= 1e-7f,
                         "%s: sample %d (batch %d, label %d) id %d: weight %.9g, want %.9g",
                         cluster, i, i / 4, label_of(i), ONE_IDS * i + k + 1,
                         (double)w[ONE_IDS * i + k], (double)want);
        }
    ps_client_destroy(c);
    tu_server_free(s[0]);
    tu_server_free(s[1]);
}

Test(train, overlapped_async_pushes_each_batch_under_its_own_keys) {
    check_one_id_per_batch("", "", 1); /* fit.overlap is on by default */
}

Test(train, sequential_async_pushes_each_batch_under_its_own_keys) {
    check_one_id_per_batch("", ", \"overlap\": false", 1);
}

Test(train, two_async_workers_push_each_batch_under_its_own_keys) {
    check_one_id_per_batch("", "", 2);
}

Test(train, sync_pushes_each_batch_under_its_own_keys) {
    check_one_id_per_batch(", \"consistency\": \"sync\"", "", 1);
    check_one_id_per_batch(", \"consistency\": \"sync\"", "", 2); /* g / 2 keeps its sign */
}

Test(train, ssp_pushes_each_batch_under_its_own_keys) {
    check_one_id_per_batch(", \"consistency\": \"ssp\", \"staleness\": 0", "", 1);
    check_one_id_per_batch(", \"consistency\": \"ssp\", \"staleness\": 2", "", 2);
}

/* --- a sparse model learns as well overlapped as sequentially --------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

enum { GEN_IDS = 1000, GEN_PER_ROW = 8 };

/* Rows of 8 distinct ids out of 1000 (value 1), labels from a hidden logistic model on them.
 * Returns the base-rate logloss of the labels written (what predicting the mean achieves). */
static double write_generated(const char *path, int rows, const float *w_true, uint64_t seed) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    int pos = 0;
    for (int i = 0; i < rows; i++) {
        int ids[GEN_PER_ROW];
        double z = 0;
        for (int k = 0; k < GEN_PER_ROW; k++) {
            int id, dup;
            do {
                id = 1 + (int)(rng_next(&seed) % GEN_IDS);
                dup = 0;
                for (int j = 0; j < k; j++) dup |= ids[j] == id;
            } while (dup);
            ids[k] = id;
            z += w_true[id - 1];
        }
        int y = rng_unit(&seed) < 1.0 / (1.0 + exp(-z));
        pos += y;
        fprintf(f, "%d", y);
        for (int k = 0; k < GEN_PER_ROW; k++) fprintf(f, " %d:1", ids[k]);
        fputc('\n', f);
    }
    fclose(f);
    double p = (double)pos / rows;
    return -(p * log(p) + (1 - p) * log(1 - p));
}

/* A hidden model (weights U(-1.5, 1.5) per id, from `seed`), train_rows rows of it in
 * dir/train.svm and 2000 held-out rows in dir/val.svm (paths into train and val, 128 bytes each);
 * returns the base-rate logloss of the held-out labels. */
static double generated_data_set(uint64_t seed, int train_rows, uint64_t train_seed,
                                 uint64_t val_seed, char *train, char *val) {
    static float w_true[GEN_IDS];
    for (int i = 0; i < GEN_IDS; i++) w_true[i] = (float)(3.0 * (rng_unit(&seed) - 0.5));
    snprintf(train, 128, "%s/train.svm", dir);
    snprintf(val, 128, "%s/val.svm", dir);
    write_generated(train, train_rows, w_true, train_seed);
    return write_generated(val, 2000, w_true, val_seed);
}

/* val_loss of the last line of a metrics file. */
static double last_val_loss(const char *path) {
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char line[1024], last[1024] = "";
    while (fgets(line, sizeof(line), f)) snprintf(last, sizeof(last), "%s", line);
    fclose(f);
    const char *v = strstr(last, "\"val_loss\": ");
    cr_assert_not_null(v, "no val_loss in %s", last);
    return strtod(v + strlen("\"val_loss\": "), NULL);
}

static double train_generated(const char *train, const char *val, bool overlap, int run) {
    char metrics[128], json[2048];
    snprintf(metrics, sizeof(metrics), "%s/metrics%d.jsonl", dir, run);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"gen\", \"seed\": 7, \"cluster\": {\"servers\": 2},"
             " \"optimizer\": {\"learning_rate\": 0.05},"
             " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": %d},"
             " \"layers\": [{\"units\": 8, \"activation\": \"relu\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 4, \"batch_size\": 32, \"verbose\": 0, \"overlap\": %s,"
             " \"metrics_file\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"},"
             " \"validation\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             GEN_IDS, overlap ? "true" : "false", metrics, train, val);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
    tu_job_use(&job, s, 2);
    train_all(&job);
    tu_server_free(s[0]);
    tu_server_free(s[1]);
    return last_val_loss(metrics);
}

/* The bug this guards: overlapped pushes went to another batch's rows, and the held-out loss of
 * an overlapped run stayed at the base rate while a sequential run learned. */
Test(train, overlapped_sparse_model_learns_as_well_as_sequential) {
    char train[128], val[128];
    const double base = generated_data_set(12345, 6000, 1, 2, train, val);
    const double seq = train_generated(train, val, false, 0);
    const double ovl = train_generated(train, val, true, 1);
    cr_assert(seq < base - 0.05, "sequential: held-out logloss %.4f, base rate %.4f", seq, base);
    cr_assert(fabs(ovl - seq) < 0.01, "held-out logloss: overlapped %.4f, sequential %.4f (base "
              "rate %.4f)", ovl, seq, base);
}

/* --- data.validation_split ------------------------------------------------------------------- */

/* Trains a 1-server, 1-worker sequential job on `data` (the job file's "data" object) for 3
 * epochs; metrics lines up to their timing fields into lines[epoch]. */
static void train_with_data(const char *data, const char *metrics, char lines[3][256]) {
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"split\", \"seed\": 7, \"optimizer\": {\"learning_rate\": 0.05},"
             " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": %d},"
             " \"layers\": [{\"units\": 4, \"activation\": \"relu\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 3, \"batch_size\": 16, \"verbose\": 0, \"overlap\": false,"
             " \"seed\": 3, \"metrics_file\": \"%s\"}, \"data\": %s}",
             GEN_IDS, metrics, data);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);
    train_all(&job);
    tu_server_free(s);
    FILE *f = fopen(metrics, "r");
    cr_assert_not_null(f);
    int n = 0;
    for (char line[1024]; fgets(line, sizeof(line), f) != NULL; n++) {
        cr_assert_lt(n, 3);
        char *t = strstr(line, ", \"samples_per_sec\"");
        cr_assert_not_null(t);
        *t = '\0';
        snprintf(lines[n], 256, "%s", line);
    }
    fclose(f);
    cr_assert_eq(n, 3);
}

/* Keras semantics: validation_split 0.25 of 1000 rows trains on rows 0..749 and evaluates rows
 * 750..999 after each epoch, exactly as naming those rows in two files does. */
Test(train, validation_split_holds_out_the_last_rows_as_a_validation_file_would) {
    static float w_true[GEN_IDS];
    uint64_t seed = 99;
    for (int i = 0; i < GEN_IDS; i++) w_true[i] = (float)(3.0 * (rng_unit(&seed) - 0.5));
    char all[128], head[128], tail[128], data[1024], m1[128], m2[128];
    snprintf(all, sizeof(all), "%s/all.svm", dir);
    snprintf(head, sizeof(head), "%s/head.svm", dir);
    snprintf(tail, sizeof(tail), "%s/tail.svm", dir);
    write_generated(all, 1000, w_true, 5);
    FILE *in = fopen(all, "r"), *h = fopen(head, "w"), *t = fopen(tail, "w");
    char line[256];
    for (int i = 0; fgets(line, sizeof(line), in) != NULL; i++) fputs(line, i < 750 ? h : t);
    fclose(in), fclose(h), fclose(t);

    char split[3][256], files[3][256];
    snprintf(m1, sizeof(m1), "%s/m1.jsonl", dir);
    snprintf(data, sizeof(data),
             "{\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}, \"validation_split\": 0.25}",
             all);
    train_with_data(data, m1, split);
    snprintf(m2, sizeof(m2), "%s/m2.jsonl", dir);
    snprintf(data, sizeof(data),
             "{\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}, \"validation\": "
             "{\"format\": \"libsvm\", \"path\": \"%s\"}}",
             head, tail);
    train_with_data(data, m2, files);
    for (int e = 0; e < 3; e++) {
        cr_assert(strstr(split[e], "\"val_loss\"") != NULL, "%s", split[e]);
        cr_assert(strstr(split[e], "\"samples\": 750") != NULL, "%s", split[e]);
        cr_assert_str_eq(split[e], files[e], "epoch %d", e + 1);
    }
}

/* --evaluate on a job with validation_split scores the held-out rows (here: their count, from
 * the evaluation's event line). */
Test(train, evaluate_with_validation_split_scores_the_held_out_rows) {
    static float w_true[GEN_IDS];
    char all[128], json[2048], events[128];
    snprintf(all, sizeof(all), "%s/all.svm", dir);
    write_generated(all, 100, w_true, 5);
    for (int split = 0; split < 2; split++) {
        snprintf(json, sizeof(json),
                 "{\"job_id\": \"ev\", \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": "
                 "%d}, \"layers\": [{\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": "
                 "\"binary_crossentropy\"}, \"fit\": {\"batch_size\": 7, \"verbose\": 0},"
                 " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}%s}}",
                 GEN_IDS, all, split ? ", \"validation_split\": 0.3" : "");
        ps_job_config job;
        tu_job(json, &job);
        test_server *s = tu_server_start(&job, 0);
        tu_job_use(&job, &s, 1);
        snprintf(events, sizeof(events), "%s/events%d", dir, split);
        FILE *out = fopen(events, "w");
        ps_train_options o = {.job = &job, .events = true, .evaluate = true, .out = out,
                              .log = {.level = PS_LOG_ERROR}};
        ps_error err = {0};
        cr_assert_eq(ps_train_run(&o, &err), PS_OK, "%s", err.msg);
        fclose(out);
        tu_server_free(s);
        FILE *in = fopen(events, "r");
        char line[2048];
        unsigned long long samples = 0;
        while (fgets(line, sizeof(line), in)) {
            const char *sm = strstr(line, "\"samples\": ");
            if (sm) samples = strtoull(sm + 11, NULL, 10);
        }
        fclose(in);
        cr_assert_eq(samples, split ? 30 : 100, "split %d: %llu samples scored", split, samples);
    }
}

/* --- sync: determinism, uneven shards, workers that stall or vanish ---------------------------- */

/* Every weight of a model whose first kernel has n_ids rows, pulled in table order. */
static size_t pull_all(const ps_job_config *job, uint64_t n_ids, float *out, size_t cap) {
    ps_client *c = tu_admin_client(job);
    size_t at = 0;
    ps_error err = {0};
    for (size_t l = 0; l < job->model.num_layers; l++) {
        uint64_t rows = l == 0 ? n_ids : job->model.units[l - 1];
        uint32_t kt = job->model.kernel_table[l], bt = job->model.bias_table[l];
        uint64_t *keys = malloc(rows * sizeof(uint64_t));
        for (uint64_t k = 0; k < rows; k++) keys[k] = k;
        cr_assert(at + rows * job->model.units[l] + job->model.units[l] <= cap);
        cr_assert_eq(ps_client_pull(c, kt, keys, rows, out + at, &err), PS_OK, "%s", err.msg);
        at += rows * job->model.units[l];
        cr_assert_eq(ps_client_pull(c, bt, keys, 1, out + at, &err), PS_OK, "%s", err.msg);
        at += job->model.units[l];
        free(keys);
    }
    ps_client_destroy(c);
    return at;
}

static size_t train_sync_sparse(const char *train, const char *cluster_extra, float *w,
                                size_t cap) {
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"det\", \"seed\": 3,"
             " \"cluster\": {\"servers\": 2, \"workers\": 2, \"consistency\": \"sync\"%s},"
             " \"optimizer\": {\"learning_rate\": 0.05},"
             " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": %d},"
             " \"layers\": [{\"units\": 8, \"activation\": \"relu\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"batch_size\": 32, \"verbose\": 0},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             cluster_extra, GEN_IDS, train);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
    tu_job_use(&job, s, 2);
    train_all(&job);
    size_t n = pull_all(&job, GEN_IDS, w, cap);
    tu_server_free(s[0]);
    tu_server_free(s[1]);
    return n;
}

/* Two sync runs of a shuffled sparse job on 2 workers and 2 shards give the same bits, though
 * the first moves its bulk through shared memory (the default on one host) and the second over
 * TCP, polling instead of sleeping. */
Test(train, sync_runs_are_bit_identical) {
    static float a[GEN_IDS * 8 + 64], b[GEN_IDS * 8 + 64];
    char train[128], val[128];
    generated_data_set(99, 3000, 5, 6, train, val);
    size_t na = train_sync_sparse(train, "", a, sizeof(a) / sizeof(a[0]));
    size_t nb = train_sync_sparse(train, ", \"busy_poll_us\": 200, \"shared_memory\": false",
                                  b, sizeof(b) / sizeof(b[0]));
    cr_assert_eq(na, nb);
    size_t moved = 0;
    for (size_t i = 0; i < na; i++) {
        cr_assert_eq(memcmp(&a[i], &b[i], sizeof(float)), 0, "weight %zu: %.9g vs %.9g", i,
                     (double)a[i], (double)b[i]);
        moved += a[i] != 0.0f;
    }
    cr_assert(moved > na / 2, "only %zu of %zu weights are nonzero", moved, na);
}

/* --- a dense input: the same training as the sparse first layer ------------------------------- */

/* Trains the generated libsvm data with its 1000 ids as a sparse input or as a dense input of
 * width 1000 (one sgemm per layer-0 product, the whole kernel pulled and pushed as one block;
 * the rows a batch does not touch get gradient 0, which AdaGrad turns into no change). Both
 * start from the same rows: init is a function of (seed, table, key) and both fan-ins are 1000.
 * Writes every weight to w and each epoch's metrics to dir/NAME.jsonl (1 worker only). */
static size_t train_as(const char *train, const char *val, bool dense, const char *cluster,
                       const char *name, float *w, size_t cap) {
    char json[2048], metrics[128], input[96];
    snprintf(metrics, sizeof(metrics), "%s/%s.jsonl", dir, name);
    if (dense) snprintf(input, sizeof(input), "\"input_dim\": %d", GEN_IDS);
    else snprintf(input, sizeof(input), "\"input\": {\"type\": \"sparse\", \"num_ids\": %d}",
                  GEN_IDS);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"as\", \"seed\": 11, \"cluster\": {\"servers\": 2%s},"
             " \"optimizer\": {\"learning_rate\": 0.05},"
             " \"model\": {%s, \"layers\": [{\"units\": 8, \"activation\": \"relu\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"batch_size\": 32, \"verbose\": 0,"
             " \"metrics_file\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"},"
             " \"validation\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             cluster, input, metrics, train, val);
    ps_job_config job;
    tu_job(json, &job);
    cr_assert_eq(job.model.sparse, !dense);
    test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
    tu_job_use(&job, s, 2);
    train_all(&job);
    size_t n = pull_all(&job, GEN_IDS, w, cap);
    tu_server_free(s[0]);
    tu_server_free(s[1]);
    return n;
}

/* |a - b| <= 1e-4 * max(|b|, 1e-2) for each weight; returns the largest ratio to that bound. */
static double check_close(const char *what, const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double scale = fmax(fabs((double)b[i]), 1e-2), d = fabs((double)a[i] - (double)b[i]);
        cr_assert(d <= 1e-4 * scale, "%s: weight %zu: dense %.9g, sparse %.9g", what, i,
                  (double)a[i], (double)b[i]);
        worst = fmax(worst, d / scale);
    }
    return worst;
}

Test(train, a_dense_input_trains_as_the_sparse_path_does) {
    static float sp[GEN_IDS * 8 + 64], de[GEN_IDS * 8 + 64];
    char train[128], val[128];
    generated_data_set(2024, 1500, 3, 4, train, val);

    /* 1 worker, overlapped async: per-epoch loss and held-out loss too */
    size_t n = train_as(train, val, false, "", "sparse1", sp, sizeof(sp) / sizeof(sp[0]));
    cr_assert_eq(train_as(train, val, true, "", "dense1", de, sizeof(de) / sizeof(de[0])), n);
    double worst = check_close("1 async worker", de, sp, n);
    size_t moved = 0;
    for (size_t i = 0; i < n; i++) moved += de[i] != 0.0f;
    cr_assert(moved > n / 2, "only %zu of %zu weights are nonzero", moved, n);
    char path[2][160];
    snprintf(path[0], sizeof(path[0]), "%s/sparse1.jsonl", dir);
    snprintf(path[1], sizeof(path[1]), "%s/dense1.jsonl", dir);
    FILE *f[2] = {fopen(path[0], "r"), fopen(path[1], "r")};
    cr_assert(f[0] != NULL && f[1] != NULL);
    for (int e = 0; e < 2; e++) {
        double loss[2], val_loss[2], acc[2];
        for (int k = 0; k < 2; k++) {
            char line[1024];
            cr_assert_not_null(fgets(line, sizeof(line), f[k]), "%s: epoch %d", path[k], e + 1);
            const char *l = strstr(line, "\"loss\": "), *v = strstr(line, "\"val_loss\": ");
            const char *a = strstr(line, "\"accuracy\": ");
            cr_assert(l && v && a, "%s", line);
            loss[k] = strtod(l + 8, NULL), val_loss[k] = strtod(v + 12, NULL);
            acc[k] = strtod(a + 12, NULL);
        }
        cr_assert(fabs(loss[1] - loss[0]) <= 1e-5 && fabs(val_loss[1] - val_loss[0]) <= 1e-5,
                  "epoch %d: dense loss %.9f val %.9f, sparse %.9f val %.9f", e + 1, loss[1],
                  val_loss[1], loss[0], val_loss[0]);
        cr_assert(fabs(acc[1] - acc[0]) <= 2.0 / 1500, "epoch %d: accuracy %.4f vs %.4f", e + 1,
                  acc[1], acc[0]);
    }
    fclose(f[0]), fclose(f[1]);

    /* 2 sync workers: the dense block pushed by both, split over 2 shards */
    const char *sync2 = ", \"workers\": 2, \"consistency\": \"sync\"";
    cr_assert_eq(train_as(train, val, false, sync2, "sparse2", sp, sizeof(sp) / sizeof(sp[0])), n);
    cr_assert_eq(train_as(train, val, true, sync2, "dense2", de, sizeof(de) / sizeof(de[0])), n);
    worst = fmax(worst, check_close("2 sync workers", de, sp, n));
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += de[i] != sp[i];
    cr_log_info("dense vs sparse input: %zu of %zu weights differ, the worst by %.2e of the bound",
                differ, n, worst);
}

/* 1000 rows on 3 workers with batch 111: 4, 3 and 3 steps per epoch (the last of 1 row). No mode
 * may deadlock, and none may need a worker dropped (that would take barrier_timeout_ms). */
Test(train, uneven_shards_never_deadlock) {
    const char *modes[] = {"async", "sync", "ssp"};
    for (int m = 0; m < 3; m++) {
        char json[1024];
        snprintf(json, sizeof(json),
                 "{\"job_id\": \"uneven\", \"cluster\": {\"servers\": 2, \"workers\": 3,"
                 " \"consistency\": \"%s\", \"barrier_timeout_ms\": 20000},"
                 " \"model\": {\"input_dim\": 5, \"layers\": [{\"units\": 4, \"activation\":"
                 " \"relu\"}, {\"units\": 1, \"activation\": \"sigmoid\"}],"
                 " \"loss\": \"binary_crossentropy\"},"
                 " \"fit\": {\"epochs\": 3, \"batch_size\": 111, \"verbose\": 0},"
                 " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 1000, \"cols\": 5}}}",
                 modes[m]);
        ps_job_config job;
        tu_job(json, &job);
        test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
        tu_job_use(&job, s, 2);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        train_all(&job);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        cr_assert(secs < 15.0, "%s: %.1f s: a worker waited for a barrier timeout", modes[m],
                  secs);
        tu_server_free(s[0]);
        tu_server_free(s[1]);
    }
}

/* Says Hello as worker `rank` on a raw connection. */
static int hello_as(const ps_job_config *job, int port, uint32_t rank) {
    int fd = tu_connect(port);
    cr_assert(fd >= 0);
    ps_Envelope env;
    tu_hello_env(fd, &env, job->job_id, job->token, ps_Role_ROLE_WORKER, rank);
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_hello_reply_tag);
    free(buf);
    return fd;
}

/* Worker 1 connects and then stalls (or vanishes): worker 0 is held at the first barrier until
 * the server drops worker 1, then trains to the end. The stalled worker's next push is refused. */
static void one_worker_goes_missing(const char *mode, bool vanish) {
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"drop\", \"cluster\": {\"workers\": 2, \"consistency\": \"%s\","
             " \"barrier_timeout_ms\": 300, \"request_timeout_ms\": 10000}, %s"
             " \"model\": {\"input_dim\": 5, \"layers\": [{\"units\": 1, \"activation\":"
             " \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"batch_size\": 50, \"verbose\": 0},"
             " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 400, \"cols\": 5}}}",
             mode, strcmp(mode, "ssp") == 0 ? "" : "");
    ps_job_config job;
    tu_job(json, &job);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);
    int fd = hello_as(&job, tu_server_port(s), 1);
    if (vanish) close(fd);
    worker_run w = {.job = &job, .rank = 0};
    run_worker(&w);
    cr_assert_eq(w.st, PS_OK, "%s: worker 0: %s", mode, w.err.msg);
    if (!vanish) { /* the dropped rank's push is refused, the connection stays */
        uint64_t key = 0;
        float g[1] = {0.5f};
        ps_bulk kb = {.src = {(const uint8_t *)&key, 8}}, gb = {.src = {(const uint8_t *)g, 4}};
        ps_Envelope env = ps_Envelope_init_zero;
        env.request_id = 2;
        env.which_body = ps_Envelope_push_tag;
        env.push.table = job.model.bias_table[0];
        cr_assert(tu_send_msg(fd, &env, &kb, &gb, NULL));
        ps_msg m;
        uint8_t *buf;
        cr_assert(tu_read_msg(fd, &m, &buf));
        cr_assert_eq(m.env.which_body, ps_Envelope_error_tag);
        cr_assert(strstr(m.env.error.message, "dropped from the barrier"), "%s",
                  m.env.error.message);
        free(buf);
        close(fd);
    }
    tu_server_free(s);
}

Test(train, a_stalled_worker_is_dropped_and_the_job_goes_on) {
    one_worker_goes_missing("sync", false);
    one_worker_goes_missing("ssp", false);
}

Test(train, a_vanished_worker_is_dropped_and_the_job_goes_on) {
    one_worker_goes_missing("sync", true);
    one_worker_goes_missing("ssp", true);
}

/* --- async against sync ------------------------------------------------------------------------ */

/* The held-out loss of the servers' weights: one evaluating worker (ps_train_run's evaluate). */
static double held_out_loss(const ps_job_config *trained, const char *val) {
    ps_job_config job = *trained;
    job.num_workers = 1;
    job.has_validation = true;
    snprintf(job.validation.format, sizeof(job.validation.format), "libsvm");
    snprintf(job.validation.path, sizeof(job.validation.path), "%s", val);
    job.validation.one_based = true;
    char events[128];
    snprintf(events, sizeof(events), "%s/eval_events", dir);
    FILE *out = fopen(events, "w");
    ps_train_options o = {.job = &job, .events = true, .evaluate = true, .out = out,
                          .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    cr_assert_eq(ps_train_run(&o, &err), PS_OK, "%s", err.msg);
    fclose(out);
    FILE *in = fopen(events, "r");
    char line[2048];
    double loss_sum = -1;
    unsigned long long samples = 0;
    while (fgets(line, sizeof(line), in)) {
        const char *ls = strstr(line, "\"loss_sum\": "), *sm = strstr(line, "\"samples\": ");
        if (ls && sm) loss_sum = strtod(ls + 12, NULL), samples = strtoull(sm + 11, NULL, 10);
    }
    fclose(in);
    cr_assert(samples > 0);
    return loss_sum / (double)samples;
}

static double train_four(const char *train, const char *val, const char *mode) {
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"four\", \"seed\": 7, \"cluster\": {\"servers\": 2, \"workers\": 4,"
             " \"consistency\": \"%s\"}, \"optimizer\": {\"learning_rate\": 0.05},"
             " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": %d},"
             " \"layers\": [{\"units\": 8, \"activation\": \"relu\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"batch_size\": 32, \"verbose\": 0},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             mode, GEN_IDS, train);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
    tu_job_use(&job, s, 2);
    train_all(&job);
    double loss = held_out_loss(&job, val);
    tu_server_free(s[0]);
    tu_server_free(s[1]);
    return loss;
}

/* Four async workers (each push on arrival, overlapped) end within 2% of four sync workers on
 * held-out loss: asynchrony costs little here, and the test would catch it costing much. */
Test(train, four_async_workers_end_within_2_percent_of_sync) {
    char train[128], val[128];
    const double base = generated_data_set(4242, 24000, 3, 4, train, val);
    const double sync = train_four(train, val, "sync");
    const double async = train_four(train, val, "async");
    cr_log_info("held-out logloss: sync %.4f, async %.4f, base rate %.4f", sync, async, base);
    cr_assert(sync < base - 0.05, "sync did not learn: %.4f vs base rate %.4f", sync, base);
    cr_assert(fabs(async - sync) <= 0.02 * sync, "async %.4f, sync %.4f", async, sync);
}

/* --- the barrier against odd peers -------------------------------------------------------------- */

/* An evaluation of a sync job (ps-worker --evaluate) reads as an admin: it neither finishes nor
 * drops the rank it names, and the workers train on (it marked rank 0 finished, and the real
 * rank 0's first push was refused). A second connection claiming a live rank is refused. */
Test(train, an_evaluation_does_not_touch_the_barrier) {
    ps_job_config job;
    tu_job("{\"job_id\": \"ev\", \"cluster\": {\"workers\": 2, \"consistency\": \"sync\"},"
           " \"model\": {\"input_dim\": 5, \"layers\": [{\"units\": 1, \"activation\":"
           " \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
           " \"fit\": {\"epochs\": 2, \"batch_size\": 50, \"verbose\": 0},"
           " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 400, \"cols\": 5}}}",
           &job);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);
    FILE *devnull = fopen("/dev/null", "w");
    ps_train_options o = {.job = &job, .rank = 0, .evaluate = true, .out = devnull,
                          .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    cr_assert_eq(ps_train_run(&o, &err), PS_OK, "%s", err.msg);
    fclose(devnull);
    int dup = hello_as(&job, tu_server_port(s), 1); /* rank 1, connected */
    int fd = tu_connect(tu_server_port(s));
    ps_Envelope env;
    tu_hello_env(fd, &env, job.job_id, "", ps_Role_ROLE_WORKER, 1);
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_error_tag);
    cr_assert(strstr(m.env.error.message, "rank 1 is already connected"), "%s",
              m.env.error.message);
    free(buf);
    close(fd);
    close(dup); /* rank 1 vanishes: dropped; rank 0 trains alone */
    worker_run w = {.job = &job, .rank = 0};
    run_worker(&w);
    cr_assert_eq(w.st, PS_OK, "worker 0 after an evaluation: %s", w.err.msg);
    tu_server_free(s);
}

/* A pull that would wait for a clock its own sender has not reached, or a wait asked by a peer
 * that is not a worker, is refused at once: it would stall the barrier's timer and get every
 * live worker dropped. */
Test(train, pulls_that_could_only_wait_forever_are_refused) {
    ps_job_config job;
    tu_job("{\"job_id\": \"mc\", \"cluster\": {\"workers\": 2, \"consistency\": \"sync\"},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 2}]}", &job);
    test_server *s = tu_server_start(&job, 0);
    const uint32_t roles[2] = {ps_Role_ROLE_WORKER, ps_Role_ROLE_ADMIN};
    for (int k = 0; k < 2; k++) {
        int fd = tu_connect(tu_server_port(s));
        ps_Envelope env;
        tu_hello_env(fd, &env, job.job_id, "", roles[k], 0);
        cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
        ps_msg m;
        uint8_t *buf;
        cr_assert(tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_hello_reply_tag);
        free(buf);
        uint64_t key = 3;
        ps_bulk kb = {.src = {(const uint8_t *)&key, 8}};
        env = (ps_Envelope)ps_Envelope_init_zero;
        env.request_id = 2;
        env.which_body = ps_Envelope_pull_tag;
        env.pull.min_clock = 1ull << 62;
        cr_assert(tu_send_msg(fd, &env, &kb, NULL, NULL));
        cr_assert(tu_read_msg(fd, &m, &buf), "no answer: the pull waits");
        cr_assert_eq(m.env.which_body, ps_Envelope_error_tag);
        cr_assert(strstr(m.env.error.message, k == 0 ? "past the sender's own clock"
                                                     : "only workers wait"),
                  "%s", m.env.error.message);
        free(buf);
        close(fd);
    }
    tu_server_free(s);
}

/* --- fit.threads: the prep thread; the per-step time breakdown --------------------------------- */

/* One async worker on 1 server (deterministic: nobody else pushes) trains 2 shuffled epochs of
 * dir/train.svm with fit.threads and fit.overlap as given; epoch events into dir/NAME.events,
 * every weight into w. input: the job's model input (sparse ids or a dense input_dim). */
static size_t train_threads(const char *input, bool overlap, int threads, const char *name,
                            float *w, size_t cap) {
    char json[2048], events[128], train[128];
    snprintf(train, sizeof(train), "%s/train.svm", dir);
    snprintf(events, sizeof(events), "%s/%s.events", dir, name);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"th\", \"seed\": 5, \"optimizer\": {\"learning_rate\": 0.05},"
             " \"model\": {%s, \"layers\": [{\"units\": 8, \"activation\": \"relu\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"batch_size\": 32, \"overlap\": %s, \"threads\": %d},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             input, overlap ? "true" : "false", threads, train);
    ps_job_config job;
    tu_job(json, &job);
    cr_assert_eq(job.fit.threads, (uint32_t)threads);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);
    FILE *out = fopen(events, "w");
    ps_train_options o = {.job = &job, .events = true, .out = out, .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    cr_assert_eq(ps_train_run(&o, &err), PS_OK, "%s", err.msg);
    fclose(out);
    size_t n = pull_all(&job, GEN_IDS, w, cap);
    tu_server_free(s);
    return n;
}

/* The epoch events of a run with their "seconds" and "times" cut off (the rest must match). */
static void epoch_events(const char *name, char lines[2][512]) {
    char path[128];
    snprintf(path, sizeof(path), "%s/%s.events", dir, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int n = 0;
    for (char line[2048]; fgets(line, sizeof(line), f) != NULL;) {
        if (strstr(line, "\"ev\": \"epoch\"") == NULL) continue;
        cr_assert_lt(n, 2);
        char *sec = strstr(line, ", \"seconds\"");
        const char *rest = strstr(line, ", \"rows_hash\"");
        cr_assert(sec != NULL && rest != NULL, "%s", line);
        const char *tm = strstr(rest, ", \"times\"");
        cr_assert_not_null(tm, "%s", line);
        snprintf(lines[n++], 512, "%.*s%.*s", (int)(sec - line), line, (int)(tm - rest), rest);
    }
    fclose(f);
    cr_assert_eq(n, 2, "%s: %d epoch events", name, n);
}

/* A prep thread reads, parses and maps the same batches in the same order: the same weights to
 * the bit, the same losses, and the same rows (rows_hash) per epoch, for a sparse and a dense
 * input, sequential and overlapped. */
Test(train, a_prep_thread_trains_exactly_as_one_thread_does) {
    static float one[GEN_IDS * 8 + 64], two[GEN_IDS * 8 + 64];
    char train[128], val[128], input[96];
    generated_data_set(31, 1500, 8, 9, train, val);
    for (int dense = 0; dense < 2; dense++) {
        if (dense) snprintf(input, sizeof(input), "\"input_dim\": %d", GEN_IDS + 1);
        else snprintf(input, sizeof(input), "\"input\": {\"type\": \"sparse\", \"num_ids\": %d}",
                      GEN_IDS + 1);
        for (int overlap = 0; overlap < 2; overlap++) {
            size_t n1 = train_threads(input, overlap, 1, "one", one, sizeof(one) / 4);
            size_t n2 = train_threads(input, overlap, 2, "two", two, sizeof(two) / 4);
            cr_assert_eq(n1, n2);
            size_t moved = 0;
            for (size_t i = 0; i < n1; i++) {
                cr_assert_eq(memcmp(&one[i], &two[i], 4), 0, "dense %d overlap %d: weight %zu: "
                             "%.9g vs %.9g", dense, overlap, i, (double)one[i], (double)two[i]);
                moved += one[i] != 0.0f;
            }
            cr_assert(moved > n1 / 2, "only %zu of %zu weights moved", moved, n1);
            char a[2][512], b[2][512];
            epoch_events("one", a);
            epoch_events("two", b);
            for (int e = 0; e < 2; e++)
                cr_assert_str_eq(a[e], b[e], "dense %d overlap %d epoch %d\n%s\n%s", dense, overlap, e, a[e], b[e]);
        }
    }
}

/* The epoch event's "times" (data, wait, compute, send, other, prep) add up to its "seconds";
 * prep is the prep thread's own time, > 0 only when there is one. Structure, not speed. */
Test(train, epoch_events_say_where_the_time_went) {
    static float w[GEN_IDS * 8 + 64];
    char train[128], val[128];
    const char *input = "\"input\": {\"type\": \"sparse\", \"num_ids\": 1001}";
    generated_data_set(32, 1000, 8, 9, train, val);
    for (int threads = 1; threads <= 2; threads++) {
        train_threads(input, true, threads, "t", w, sizeof(w) / 4);
        char path[128], line[2048];
        snprintf(path, sizeof(path), "%s/t.events", dir);
        FILE *f = fopen(path, "r");
        int epochs = 0;
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strstr(line, "\"ev\": \"epoch\"") == NULL) {
                cr_assert_null(strstr(line, "\"times\""), "a step event: %s", line);
                continue;
            }
            epochs++;
            double s = strtod(strstr(line, "\"seconds\": ") + 11, NULL), t[6];
            const char *p = strstr(line, "\"times\": [");
            cr_assert_not_null(p, "%s", line);
            cr_assert_eq(sscanf(p, "\"times\": [%lf, %lf, %lf, %lf, %lf, %lf]", &t[0], &t[1], &t[2],
                                &t[3], &t[4], &t[5]), 6, "%s", p);
            double sum = 0;
            for (int i = 0; i < 6; i++) cr_assert_geq(t[i], 0.0, "%s", p);
            for (int i = 0; i < 5; i++) sum += t[i];
            /* six figures rounded to 1e-6 s each */
            cr_assert(fabs(sum - s) <= 4e-6, "parts %.6f, seconds %.6f: %s", sum, s, line);
            cr_assert_gt(t[2], 0.0, "no compute time: %s", p);
            cr_assert_gt(t[1] + t[3], 0.0, "no exchange time: %s", p);
            cr_assert_eq(t[5] > 0, threads == 2, "threads %d: prep %.6f", threads, t[5]);
        }
        fclose(f);
        cr_assert_eq(epochs, 2);
    }
}

/* --verbose (opt.times): one "time/step" line after each epoch's Keras line, its parts adding
 * up to its total; without it, none. */
Test(train, verbose_prints_a_time_line_after_each_epoch_line) {
    char train[128], val[128], json[2048], path[128];
    generated_data_set(33, 600, 8, 9, train, val);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"vb\", \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": 1001},"
             " \"layers\": [{\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": "
             "\"binary_crossentropy\"}, \"fit\": {\"epochs\": 3, \"batch_size\": 32, \"verbose\": 2,"
             " \"threads\": 2}, \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             train);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);
    for (int times = 0; times < 2; times++) {
        snprintf(path, sizeof(path), "%s/out%d", dir, times);
        FILE *out = fopen(path, "w");
        ps_train_options o = {.job = &job, .out = out, .times = times,
                              .log = {.level = PS_LOG_ERROR}};
        ps_error err = {0};
        cr_assert_eq(ps_train_run(&o, &err), PS_OK, "%s", err.msg);
        fclose(out);
        char *text = tu_slurp(path); /* a static buffer */
        int n = 0;
        const char *prev = NULL;
        for (char *line = strtok(text, "\n"); line != NULL; prev = line, line = strtok(NULL, "\n")) {
            if (strncmp(line, "time/step: ", 11) != 0) continue;
            n++;
            cr_assert(prev != NULL && strstr(prev, "19/19 [") == prev, "after: %s", prev);
            double tot, part[5], pct[5];
            cr_assert_eq(sscanf(line, "time/step: %lfms = data %lfms (%lf%%) + pull wait %lfms "
                                "(%lf%%) + compute %lfms (%lf%%) + push %lfms (%lf%%) + other "
                                "%lfms (%lf%%); prep thread",
                                &tot, &part[0], &pct[0], &part[1], &pct[1], &part[2], &pct[2],
                                &part[3], &pct[3], &part[4], &pct[4]), 11, "%s", line);
            double sum = 0, psum = 0;
            for (int i = 0; i < 5; i++) sum += part[i], psum += pct[i];
            cr_assert(fabs(sum - tot) <= 0.003, "parts %.3f, total %.3f: %s", sum, tot, line);
            cr_assert(fabs(psum - 100) <= 2.5, "shares %.0f%%: %s", psum, line);
            cr_assert_not_null(strstr(line, "; prep thread "), "%s", line);
        }
        cr_assert_eq(n, times ? 3 : 0, "times %d: %d time lines", times, n);
    }
    tu_server_free(s);
}

/* A data file that is not there: the worker's error names the job file, the key and the path. */
Test(train, a_missing_data_file_is_named_by_its_key) {
    char images[128]; /* idx images of 8 pixels (2 x 4): the labels file is the one missing */
    snprintf(images, sizeof(images), "%s/images", dir);
    FILE *f = fopen(images, "wb");
    cr_assert_not_null(f);
    const uint8_t head[16] = {0, 0, 8, 3, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 4}, pixels[64] = {0};
    fwrite(head, 1, sizeof(head), f), fwrite(pixels, 1, sizeof(pixels), f);
    fclose(f);
    char data[3][512];
    snprintf(data[0], sizeof(data[0]), "{\"train\": {\"format\": \"libsvm\", \"path\": "
             "\"%s/none.svm\"}}", dir);
    snprintf(data[1], sizeof(data[1]), "{\"train\": {\"format\": \"random\", \"rows\": 64, "
             "\"cols\": 8}, \"validation\": {\"format\": \"idx\", \"path\": \"%s/none-images\", "
             "\"labels\": \"%s/none-labels\"}}", dir, dir);
    snprintf(data[2], sizeof(data[2]), "{\"train\": {\"format\": \"idx\", \"path\": \"%s\", "
             "\"labels\": \"%s/none-labels\"}}", images, dir);
    const char *key[3] = {"data.train.path", "data.validation.path", "data.train.labels"};
    const char *file[3] = {"none.svm", "none-images", "none-labels"};
    for (size_t i = 0; i < 3; i++) {
        char json[1024];
        snprintf(json, sizeof(json),
                 "{\"job_id\": \"missing\", \"cluster\": {\"servers\": 1, \"workers\": 1},"
                 " \"model\": {\"input_dim\": 8, \"layers\": [{\"units\": 1, \"activation\": "
                 "\"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
                 " \"fit\": {\"epochs\": 1, \"batch_size\": 8, \"verbose\": 0},"
                 " \"data\": %s}", data[i]);
        ps_job_config job;
        tu_job(json, &job);
        test_server *s = tu_server_start(&job, 0);
        tu_job_use(&job, &s, 1);
        worker_run w = {.job = &job};
        run_worker(&w);
        char want[256];
        snprintf(want, sizeof(want), "test.json: %s: open %s/%s: No such file or directory",
                 key[i], dir, file[i]);
        cr_assert_neq(w.st, PS_OK, "case %zu trained", i);
        cr_assert(strstr(w.err.msg, want) != NULL, "case %zu: %s\n  wanted: %s", i, w.err.msg,
                  want);
        tu_server_free(s);
    }
}
