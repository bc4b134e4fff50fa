/* test_eval.c - the validation pass of the worker loop (ps_train_run, in-process, against an
 * in-process shard) against loss, accuracy, AUC and log loss computed by hand: a one-layer
 * sigmoid model whose every weight is known before and after its single training step. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval_pairs.h"
#include "testutil.h"
#include "train.h"

static char dir[64];

static void setup(void) { tu_tmpdir(dir, "ps_eval"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(eval, .init = setup, .fini = teardown, .timeout = 30);

static double field(const cJSON *o, const char *k) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(it), "metrics: no number \"%s\"", k);
    return it->valuedouble;
}

/* Model: 2 dense inputs -> Dense(1, sigmoid), binary cross-entropy. The kernel starts at the
 * constant 0.5 (model.input.init), the bias at 0 (always zeros). PyTorch AdaGrad with lr 0.5,
 * G0 = 0: a row's first step is w -= 0.5 * g / (|g| + 1e-10) = w - 0.5 * sign(g), exactly in
 * float32 (1e-10 is below half an ulp of these |g|, and g * 0.5 / |g| = 0.5 exactly).
 *
 * Training (one batch of all 4 rows, one step), y | x1 x2 -> z = 0.5 (x1 + x2), p = sigmoid(z):
 *   1 | 2 0   z = 1.0   p = 0.7310586   0 | 0 2   z = 1.0   p = 0.7310586
 *   1 | 2 1   z = 1.5   p = 0.8175745   0 | 1 1   z = 1.0   p = 0.7310586
 *   loss = mean(softplus(z) - z y) = 0.7852995851343552; accuracy (p > 0.5) == y: 2/4 = 0.5
 *   grad = mean((p - y) x): kernel (-0.0429188, 0.5026876) -> signs (-, +); bias 0.2526876 (+)
 *   after the step: kernel (1.0, 0.0), bias -0.5, so z = x1 - 0.5 on validation:
 *   y | x1 x2    z     loss term = softplus(z) - z y     (p > 0.5) == y
 *   1 | 1  -1   0.5    log(1 + e^-0.5)  = 0.4740769842   yes
 *   0 | 0   1  -0.5    log(1 + e^-0.5)  = 0.4740769842   yes
 *   1 | 2   0   1.5    log(1 + e^-1.5)  = 0.2014132779   yes
 *   0 | 1 0.5   0.5    log(1 + e^0.5)   = 0.9740769842   no
 *   1 | 0.5 -1  0.0    log 2            = 0.6931471806   no  (p = 0.5 exactly: not > 0.5)
 *   val_loss = 2.8167914111 / 5 = 0.5633582822166036; val_accuracy = 3/5 = 0.6
 *   val_logloss: the same sum from p = sigmoid(z) (no p is near the clip): 0.5633582822166036
 *   val_auc: positives z = 0.5, 1.5, 0.0; negatives z = -0.5, 0.5; over the 6 pairs
 *     0.5: 1 + 1/2 (tie), 1.5: 1 + 1, 0.0: 1 + 0  ->  4.5 / 6 = 0.75
 * (With the weights before the step the validation figures would be 0.7886592556504036 and 0.2:
 * an evaluation that ran before the push, or on stale rows, fails.) Expected values from
 * /usr/bin/python3 in double precision; the C loop computes in float32, hence the 1e-6. */
Test(eval, validation_loss_and_accuracy_match_hand_computation) {
    char train[128], val[128], metrics[128], json[2048];
    snprintf(train, sizeof(train), "%s/train.csv", dir);
    snprintf(val, sizeof(val), "%s/val.csv", dir);
    snprintf(metrics, sizeof(metrics), "%s/metrics.jsonl", dir);
    tu_write_file(train, "1,2,0\n0,0,2\n1,2,1\n0,1,1\n", 0644);
    tu_write_file(val, "1,1,-1\n0,0,1\n1,2,0\n0,1,0.5\n1,0.5,-1\n", 0644);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"eval\", \"seed\": 1,"
             " \"cluster\": {\"servers\": 1, \"workers\": 1, \"connect_timeout_ms\": 5000,"
             "  \"request_timeout_ms\": 5000},"
             " \"optimizer\": {\"form\": \"pytorch\", \"learning_rate\": 0.5},"
             " \"model\": {\"input_dim\": 2, \"input\": {\"type\": \"dense\", \"init\":"
             "  {\"type\": \"constant\", \"value\": 0.5}},"
             "  \"layers\": [{\"units\": 1, \"activation\": \"sigmoid\"}],"
             "  \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 1, \"batch_size\": 4, \"shuffle\": false, \"verbose\": 0,"
             "  \"metrics_file\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"csv\", \"path\": \"%s\"},"
             "  \"validation\": {\"format\": \"csv\", \"path\": \"%s\"}}}",
             metrics, train, val);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);

    FILE *out = tmpfile();
    cr_assert_not_null(out);
    ps_train_options o = {.job = &job, .rank = 0, .out = out, .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    ps_status st = ps_train_run(&o, &err);
    fclose(out);
    cr_assert_eq(st, PS_OK, "ps_train_run: %s (%s)", ps_status_str(st), err.msg);

    /* the rows the step left on the shard: kernel (1, 0), bias -0.5 */
    ps_client *c = tu_client(&job, 0);
    uint64_t keys[2] = {0, 1};
    float kernel[2], bias;
    cr_assert_eq(ps_client_pull(c, (uint32_t)ps_config_table(&job, "dense/kernel"), keys, 2, kernel,
                                &err),
                 PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(c, (uint32_t)ps_config_table(&job, "dense/bias"), keys, 1, &bias,
                                &err),
                 PS_OK, "%s", err.msg);
    ps_client_destroy(c);
    tu_server_free(s);
    cr_assert(kernel[0] == 1.0f && kernel[1] == 0.0f && bias == -0.5f,
              "after the step: kernel (%.9g, %.9g), bias %.9g; want (1, 0), -0.5",
              (double)kernel[0], (double)kernel[1], (double)bias);

    FILE *f = fopen(metrics, "r");
    cr_assert_not_null(f, "no metrics file %s", metrics);
    char line[1024];
    cr_assert_not_null(fgets(line, sizeof(line), f), "empty metrics file");
    char extra[8];
    cr_assert_null(fgets(extra, sizeof(extra), f), "more than one metrics line");
    fclose(f);
    cJSON *m = cJSON_Parse(line);
    cr_assert_not_null(m, "metrics line is not JSON: %s", line);
    cr_assert_eq(field(m, "samples"), 4.0, "%s", line);
    const struct {
        const char *key;
        double want;
    } figures[] = {
        {"loss", 0.7852995851343552},    {"accuracy", 0.5},
        {"val_loss", 0.5633582822166036}, {"val_accuracy", 0.6},
        {"val_auc", 0.75},                {"val_logloss", 0.5633582822166036},
    };
    for (size_t i = 0; i < sizeof(figures) / sizeof(figures[0]); i++) {
        double got = field(m, figures[i].key);
        cr_assert(fabs(got - figures[i].want) < 1e-6, "%s = %.10g, want %.10g\n%s",
                  figures[i].key, got, figures[i].want, line);
    }
    cJSON_Delete(m);
}

/* The same validation set scored by --evaluate with the initial weights (kernel 0.5, bias 0), so
 * z = 0.5 (x1 + x2): 0, 0.5, 1, 0.75, -0.25 for labels 1, 0, 1, 0, 1.
 *   binary (sigmoid, BCE): positives 0, 1, -0.25 against negatives 0.5, 0.75: only z = 1 wins
 *     (twice): auc = 2/6; logloss_sum = sum softplus(z) - z y = 3.943296278252018 (python)
 *   3 classes (softmax, sparse CE, labels as classes 1, 0, 1, 0, 1): every class has the same
 *     logit, p = 1/3: logloss_sum = 5 ln 3 = 5.493061443340549 and no AUC (not defined for
 *     more than two classes)
 * With pairs_dir, the worker leaves the binary pass's pairs there: p = sigmoid(z) in float32
 * (0.5, 0.62245935, 0.7310586, 0.6791787, 0.43782344) with their labels, in data order. */
static ps_status evaluate_job(const char *loss, const char *act, int units, const char *pairs_dir,
                              char *event, size_t event_len, ps_error *err) {
    char val[128], json[2048];
    snprintf(val, sizeof(val), "%s/val.csv", dir);
    tu_write_file(val, "1,1,-1\n0,0,1\n1,2,0\n0,1,0.5\n1,0.5,-1\n", 0644);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"eval\", \"seed\": 1,"
             " \"cluster\": {\"servers\": 1, \"workers\": 1, \"connect_timeout_ms\": 5000,"
             "  \"request_timeout_ms\": 5000},"
             " \"model\": {\"input_dim\": 2, \"input\": {\"type\": \"dense\", \"init\":"
             "  {\"type\": \"constant\", \"value\": 0.5}},"
             "  \"layers\": [{\"units\": %d, \"activation\": \"%s\"}], \"loss\": \"%s\"},"
             " \"fit\": {\"batch_size\": 2, \"verbose\": 0},"
             " \"data\": {\"train\": {\"format\": \"csv\", \"path\": \"%s\"}}}",
             units, act, loss, val);
    ps_job_config job;
    tu_job(json, &job);
    test_server *s = tu_server_start(&job, 0);
    tu_job_use(&job, &s, 1);
    FILE *out = tmpfile();
    cr_assert_not_null(out);
    ps_train_options o = {.job = &job, .rank = 0, .out = out, .events = true, .evaluate = true,
                          .pairs_dir = pairs_dir, .log = {.level = PS_LOG_ERROR}};
    ps_status st = ps_train_run(&o, err);
    rewind(out);
    size_t n = fread(event, 1, event_len - 1, out);
    event[n] = '\0';
    fclose(out);
    tu_server_free(s);
    return st;
}

static cJSON *the_event(const char *text) {
    cr_assert_eq(strncmp(text, "@ps ", 4), 0, "not an event: %s", text);
    cJSON *o = cJSON_Parse(text + 4);
    cr_assert_not_null(o, "event is not JSON: %s", text);
    return o;
}

Test(eval, evaluate_reports_auc_and_logloss_of_a_binary_model) {
    char text[4096];
    ps_error err = {0};
    ps_status st = evaluate_job("binary_crossentropy", "sigmoid", 1, dir, text, sizeof(text), &err);
    cr_assert_eq(st, PS_OK, "%s: %s", ps_status_str(st), err.msg);
    cJSON *o = the_event(text);
    cr_assert(fabs(field(o, "auc") - 2.0 / 6.0) < 1e-12, "%s", text);
    cr_assert(fabs(field(o, "logloss_sum") - 3.943296278252018) < 1e-5, "%s", text);
    cr_assert(fabs(field(o, "loss_sum") - 3.943296278252018) < 1e-5, "%s", text);
    cr_assert_eq(field(o, "pairs"), 5.0, "%s", text);
    cJSON_Delete(o);

    char path[256];
    snprintf(path, sizeof(path), "%s/epoch-1.rank-0.pairs", dir);
    ps_eval_pair *p = NULL;
    size_t n = 0, cap = 0;
    cr_assert_eq(ps_eval_pairs_read(path, 5, &p, &n, &cap, &err), PS_OK, "%s", err.msg);
    const float score[5] = {0.5f, 0.62245935f, 0.7310586f, 0.6791787f, 0.43782344f};
    const float label[5] = {1, 0, 1, 0, 1};
    for (size_t i = 0; i < 5; i++)
        cr_assert(fabsf(p[i].score - score[i]) < 1e-7f && p[i].label == label[i],
                  "pair %zu: (%.9g, %g), want (%.9g, %g)", i, (double)p[i].score,
                  (double)p[i].label, (double)score[i], (double)label[i]);
    free(p);
}

Test(eval, evaluate_of_a_multiclass_model_has_logloss_and_no_auc) {
    char text[4096];
    ps_error err = {0};
    ps_status st = evaluate_job("sparse_categorical_crossentropy", "softmax", 3, dir, text,
                                sizeof(text), &err);
    cr_assert_eq(st, PS_OK, "%s: %s", ps_status_str(st), err.msg);
    cJSON *o = the_event(text);
    cr_assert(fabs(field(o, "logloss_sum") - 5.493061443340549) < 1e-5, "%s", text);
    cr_assert(fabs(field(o, "loss_sum") - 5.493061443340549) < 1e-5, "%s", text);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(o, "auc"), "%s", text);
    cr_assert_null(cJSON_GetObjectItemCaseSensitive(o, "pairs"), "%s", text);
    cJSON_Delete(o);
}

Test(eval, a_pairs_dir_that_cannot_be_written_fails_naming_the_file) {
    char text[4096], missing[128];
    snprintf(missing, sizeof(missing), "%s/no-such-dir", dir);
    ps_error err = {0};
    ps_status st = evaluate_job("binary_crossentropy", "sigmoid", 1, missing, text, sizeof(text),
                                &err);
    cr_assert_eq(st, PS_IO, "%s: %s", ps_status_str(st), err.msg);
    cr_assert(strstr(err.msg, "no-such-dir/epoch-1.rank-0.pairs.tmp") != NULL, "%s", err.msg);
}
