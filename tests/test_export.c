/* test_export.c - ps_export against real shards: every stored row of a sparse table, sorted,
 * with the AdaGrad state its pushes give (computed here independently), through scans cut into
 * many replies; and a job that resumes from its export is the same job, bit for bit. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export.h"
#include "npy.h"
#include "testutil.h"
#include "train.h"
#include "weights.h"

static char dir[64];

static void setup(void) { tu_tmpdir(dir, "ps_export"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(export, .init = setup, .fini = teardown, .timeout = 60);

static void *read_all(const char *path, ps_npy_dtype dt, uint64_t *count, unsigned *ndim,
                      uint64_t *shape) {
    ps_npy_reader *r;
    ps_error err = {0};
    cr_assert_eq(ps_npy_open(path, &r, &err), PS_OK, "%s", err.msg);
    const ps_npy_info *info = ps_npy_info_of(r);
    cr_assert_eq(info->dtype, dt, "%s", path);
    void *v = malloc(info->count * info->item_size + 8);
    cr_assert_eq(ps_npy_read(r, v, info->count, &err), PS_OK, "%s", err.msg);
    *count = info->count;
    if (ndim) *ndim = info->ndim;
    if (shape) memcpy(shape, info->shape, sizeof(info->shape));
    ps_npy_close(r);
    return v;
}

static ps_client *admin_client(const ps_job_config *job) {
    ps_client_options o = {.job = job, .admin = true, .log = {.level = PS_LOG_ERROR}};
    ps_client *c;
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_OK, "%s", err.msg);
    return c;
}

static const char *at(const char *d, const char *rel) {
    static char buf[2][512];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", d, rel);
    return buf[k];
}

/* 3 shards, an 8 KiB frame limit (a scan reply holds ~100 rows of these), keys spread over the
 * whole uint64 range. Table "emb" (dim 4): each key pushed once with g, so G = g*g (PyTorch form,
 * G0 = 0: fmaf(g, g, 0) is g*g rounded once). Table "decayed" (dim 2, lr_decay, row-wise): key k
 * pushed (k % 3) + 1 times, so its step count is that. */
Test(export, sparse_tables_come_back_whole_and_sorted) {
    ps_job_config job;
    tu_job("{\"job_id\": \"exp\", \"seed\": 5, \"cluster\": {\"servers\": 3},"
           " \"limits\": {\"max_frame_bytes\": 8192},"
           " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"normal\"}},"
           " {\"name\": \"decayed\", \"dim\": 2,"
           "  \"optimizer\": {\"lr_decay\": 0.5, \"rowwise\": true}}]}",
           &job);
    test_server *s[3] = {tu_server_start(&job, 0), tu_server_start(&job, 1),
                         tu_server_start(&job, 2)};
    tu_job_use(&job, s, 3);
    enum { N = 3000 };
    static uint64_t keys[N];
    static float g[N * 4];
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        keys[i] = i == 0 ? 0 : i == 1 ? UINT64_MAX : x;
        for (int d = 0; d < 4; d++) g[i * 4 + d] = 0.01f * (float)((i * 7 + d * 3) % 41) - 0.2f;
    }
    ps_client *c = tu_client(&job, 0);
    ps_error err = {0};
    for (int i = 0; i < N; i += 100) /* requests within the frame limit */
        cr_assert_eq(ps_client_push(c, 0, keys + i, 100, g + i * 4, &err), PS_OK, "%s", err.msg);
    for (int rep = 0; rep < 3; rep++) /* key i: (i % 3) + 1 pushes */
        for (int i = 0; i < N; i++)
            if (i % 3 >= rep)
                cr_assert_eq(ps_client_push(c, 1, &keys[i], 1, g + i * 4, &err), PS_OK, "%s",
                             err.msg);
    static float want_w[N * 4];
    for (int i = 0; i < N; i += 100)
        cr_assert_eq(ps_client_pull(c, 0, keys + i, 100, want_w + i * 4, &err), PS_OK, "%s",
                     err.msg);
    ps_client_destroy(c);

    ps_client *a = admin_client(&job);
    ps_export_stats stats;
    char out[128];
    snprintf(out, sizeof(out), "%s/out", dir);
    cr_assert_eq(ps_export(a, &job, out, &stats, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(a);
    cr_assert_eq(stats.rows, 2 * N);

    uint64_t n, nv, na, ns, shape[4];
    unsigned ndim;
    uint64_t *k = read_all(at(out, "emb/keys.npy"), PS_NPY_U8, &n, NULL, NULL);
    float *w = read_all(at(out, "emb/values.npy"), PS_NPY_F4, &nv, &ndim, shape);
    float *acc = read_all(at(out, "emb/accumulators.npy"), PS_NPY_F4, &na, NULL, NULL);
    cr_assert_eq(n, N);
    cr_assert(ndim == 2 && shape[0] == N && shape[1] == 4);
    cr_assert_eq(nv, N * 4);
    cr_assert_eq(na, N * 4);
    for (uint64_t i = 1; i < n; i++) cr_assert(k[i - 1] < k[i], "keys not ascending at %llu",
                                              (unsigned long long)i);
    cr_assert(k[0] == 0 && k[n - 1] == UINT64_MAX);
    for (int i = 0; i < N; i++) { /* find key i in the sorted export */
        uint64_t lo = 0, hi = n;
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (k[mid] < keys[i]) lo = mid + 1;
            else hi = mid;
        }
        cr_assert(lo < n && k[lo] == keys[i], "key %llu missing", (unsigned long long)keys[i]);
        cr_assert_eq(memcmp(w + lo * 4, want_w + i * 4, 16), 0, "key %d: values differ", i);
        for (int d = 0; d < 4; d++)
            cr_assert_eq(acc[lo * 4 + d], g[i * 4 + d] * g[i * 4 + d], "key %d acc[%d]", i, d);
    }
    free(k), free(w), free(acc);

    k = read_all(at(out, "decayed/keys.npy"), PS_NPY_U8, &n, NULL, NULL);
    acc = read_all(at(out, "decayed/accumulators.npy"), PS_NPY_F4, &na, &ndim, shape);
    uint32_t *steps = read_all(at(out, "decayed/steps.npy"), PS_NPY_U4, &ns, NULL, NULL);
    cr_assert(n == N && ns == N && na == N && ndim == 2 && shape[1] == 1, "row-wise: (n, 1)");
    for (int i = 0; i < N; i++) {
        uint64_t j = 0;
        while (k[j] != keys[i]) j++;
        cr_assert_eq(steps[j], (uint32_t)(i % 3) + 1, "key %d: %u steps", i, steps[j]);
    }
    free(k), free(acc), free(steps);

    ps_weights_manifest m = {0};
    cr_assert_eq(ps_weights_manifest_read(out, &m, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(m.num_tables, 2);
    cr_assert_eq(m.tables[0].layout, PS_WEIGHTS_SPARSE);
    cr_assert_eq(m.tables[0].rows, N);
    cr_assert(m.tables[1].opt.rowwise && m.tables[1].opt.lr_decay == 0.5);
    ps_weights_manifest_free(&m);
    for (int i = 0; i < 3; i++) tu_server_free(s[i]);
}

/* --- resuming from an export is the same job --------------------------------------------------- */

static void train(ps_job_config *job) {
    FILE *devnull = fopen("/dev/null", "w");
    ps_train_options o = {.job = job, .out = devnull, .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    cr_assert_eq(ps_train_run(&o, &err), PS_OK, "%s", err.msg);
    fclose(devnull);
}

/* Trains `epochs` epochs from init (or from scratch) and exports to out. */
static void run(const char *data, unsigned epochs, const char *init, const char *out) {
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"resume\", \"seed\": 9, \"cluster\": {\"servers\": 2,"
             " \"consistency\": \"sync\"},"
             " \"optimizer\": {\"learning_rate\": 0.1, \"lr_decay\": 0.01},"
             " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": 50},"
             " \"layers\": [{\"units\": 4, \"activation\": \"tanh\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": %u, \"batch_size\": 8, \"shuffle\": false, \"verbose\": 0,"
             " \"init_from\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             epochs, init ? init : "", data);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s[2] = {tu_server_start(&job, 0), tu_server_start(&job, 1)};
    tu_job_use(&job, s, 2);
    train(&job);
    ps_client *a = admin_client(&job);
    ps_error err = {0};
    cr_assert_eq(ps_export(a, &job, out, NULL, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(a);
    tu_server_free(s[0]);
    tu_server_free(s[1]);
}

static void same_file(const char *a, const char *b, const char *rel) {
    FILE *fa = fopen(at(a, rel), "rb"), *fb = fopen(at(b, rel), "rb");
    cr_assert(fa && fb, "%s", rel);
    int ca, cb;
    long pos = 0;
    do {
        ca = fgetc(fa), cb = fgetc(fb);
        cr_assert_eq(ca, cb, "%s differs at byte %ld", rel, pos);
        pos++;
    } while (ca != EOF);
    fclose(fa), fclose(fb);
}

/* Two epochs in one go, and one epoch then one more from its export: the same bits, values,
 * accumulators and per-row step counts (lr_decay) alike. Without the accumulators or the steps
 * in the export the second half would take bigger steps. */
Test(export, a_job_resumed_from_its_export_is_the_same_job) {
    char data[128], both[128], first[128], second[128];
    snprintf(data, sizeof(data), "%s/d.svm", dir);
    FILE *f = fopen(data, "w");
    for (int i = 0; i < 120; i++)
        fprintf(f, "%d %d:1 %d:0.5 %d:0.25\n", (i * 7) % 3 == 0, 1 + i % 50, 1 + (i * 3) % 50,
                1 + (i * 11) % 50);
    fclose(f);
    snprintf(both, sizeof(both), "%s/both", dir);
    snprintf(first, sizeof(first), "%s/first", dir);
    snprintf(second, sizeof(second), "%s/second", dir);
    run(data, 2, NULL, both);
    run(data, 1, NULL, first);
    run(data, 1, first, second);
    const char *files[] = {"dense/kernel/keys.npy", "dense/kernel/values.npy",
                           "dense/kernel/accumulators.npy", "dense/kernel/steps.npy",
                           "dense/bias.npy", "dense/bias.accumulators.npy", "dense/bias.steps.npy",
                           "dense_1/kernel.npy", "dense_1/kernel.accumulators.npy",
                           "dense_1/bias.npy"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) same_file(both, second, files[i]);
    /* and the first half really is another state */
    FILE *fa = fopen(at(both, "dense_1/kernel.npy"), "rb"), *fb = fopen(at(first, "dense_1/kernel.npy"), "rb");
    char ba[256], bb[256];
    size_t la = fread(ba, 1, sizeof(ba), fa), lb = fread(bb, 1, sizeof(bb), fb);
    fclose(fa), fclose(fb);
    cr_assert(la == lb && memcmp(ba, bb, la) != 0);
}

/* An export that fails leaves no manifest behind: an earlier export's manifest does not vouch
 * for files half replaced by this one. */
Test(export, a_failed_export_leaves_no_manifest) {
    ps_job_config job;
    tu_job("{\"job_id\": \"fx\", \"tables\": [{\"name\": \"emb\", \"dim\": 2},"
           " {\"name\": \"bad/../name\", \"dim\": 2}]}", &job);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);
    char out[128];
    snprintf(out, sizeof(out), "%s/w", dir);
    ps_job_config good = job;
    good.num_tables = 1; /* the first table only: exports */
    ps_client *a = admin_client(&job);
    ps_error err = {0};
    cr_assert_eq(ps_export(a, &good, out, NULL, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(access(at(out, "manifest.json"), F_OK), 0);
    cr_assert_eq(ps_export(a, &job, out, NULL, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "bad/../name"), "%s", err.msg);
    cr_assert_neq(access(at(out, "manifest.json"), F_OK), 0, "the old manifest survived");
    ps_client_destroy(a);
    tu_server_free(s);
}
