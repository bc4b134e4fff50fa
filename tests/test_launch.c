/* test_launch.c - ps-launch's combination of the workers' progress events into the job's figures:
 * sample-weighted (sums over workers divided by the job's samples), not a mean of the workers'
 * means. Fake workers (sh scripts run through PS_WORKER_BIN) print chosen "@ps {json}" epoch
 * events; the real ps-server serves the job's tables meanwhile. The job's AUC runs real workers
 * on data whose pooled AUC is far from the mean of the workers' AUCs. Every wait has a
 * deadline. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static char dir[64];

static void setup(void) { tu_tmpdir(dir, "ps_launch"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(launch, .init = setup, .fini = teardown, .timeout = 60);

#define BIN(name) PS_BINARY_DIR "/" name

static void path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

/* The fake worker: finds its rank in argv (ps-launch passes --rank R) and prints that rank's
 * events. Two epochs; rank 1 also sends a step event first (not yet the epoch's figures). Rank 0
 * takes 2 steps per epoch, rank 1 one (the job's 3 steps are not its 4 samples).
 *            samples loss_sum correct | val_samples val_loss_sum val_correct
 *   epoch 1  rank 0: 3  3.0  3         | 2  1.0  2
 *            rank 1: 1  5.0  0         | 6  9.0  1
 *     job:   loss 8/4 = 2.0 (mean of means 3.0), accuracy 3/4 = 0.75 (mean of means 0.5)
 *            val_loss 10/8 = 1.25 (mean of means 1.0), val_accuracy 3/8 = 0.375 (0.5833)
 *   epoch 2  rank 0: 3  0.3  1         | 2  0.5  0
 *            rank 1: 1  0.5  1         | 6  2.5  6
 *     job:   loss 0.8/4 = 0.2 (0.3), accuracy 2/4 = 0.5 (0.6667)
 *            val_loss 3/8 = 0.375 (0.3333), val_accuracy 6/8 = 0.75 (0.5) */
static const char worker_sh[] =
    "#!/bin/sh\n"
    "rank=\n"
    "while [ $# -gt 0 ]; do\n"
    "  if [ \"$1\" = --rank ]; then rank=$2; fi\n"
    "  shift\n"
    "done\n"
    "ev() { echo \"@ps {\\\"ev\\\": \\\"$1\\\", \\\"rank\\\": $rank, \\\"epoch\\\": $2, "
    "\\\"epochs\\\": 2, \\\"step\\\": $3, \\\"steps\\\": $3, \\\"samples\\\": $4, "
    "\\\"loss_sum\\\": $5, \\\"correct\\\": $6, \\\"seconds\\\": 0.5, \\\"val_samples\\\": $7, "
    "\\\"val_loss_sum\\\": $8, \\\"val_correct\\\": $9}\"; }\n"
    "case \"$rank\" in\n"
    "0) ev epoch 1 2 3 3.0 3 2 1.0 2\n"
    "   ev epoch 2 2 3 0.3 1 2 0.5 0 ;;\n"
    "1) ev step 1 1 1 100.0 1 0 0 0\n"
    "   ev epoch 1 1 1 5.0 0 6 9.0 1\n"
    "   ev epoch 2 1 1 0.5 1 6 2.5 6 ;;\n"
    "*) echo \"fake worker: no --rank in $*\" >&2; exit 3 ;;\n"
    "esac\n";

typedef struct {
    double loss, accuracy, val_loss, val_accuracy;
} epoch_figures;

static const epoch_figures want[2] = {{2.0, 0.75, 1.25, 0.375}, {0.2, 0.5, 0.375, 0.75}};

static double field(const cJSON *o, const char *k, int line) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(it), "metrics line %d: no number \"%s\"", line, k);
    return it->valuedouble;
}

/* A 2-worker, 2-epoch job whose workers are the shell script `script` (PS_WORKER_BIN), run by
 * ps-launch to a clean exit; its stdout (malloc'd), with the metrics file and stderr named in
 * metrics and err. */
static char *launch_fake_job(const char *script, char metrics[128], char err[128]) {
    char job[128], worker[128], out[128];
    path(job, sizeof(job), "job.json"), path(worker, sizeof(worker), "fake-worker.sh");
    path(metrics, 128, "metrics.jsonl");
    path(out, sizeof(out), "out"), path(err, 128, "err");
    tu_write_file(worker, script, 0755);
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"launch-test\", \"cluster\": {\"servers\": 1, \"workers\": 2},"
             " \"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1, \"activation\": "
             "\"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"verbose\": 2, \"metrics_file\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 8, \"cols\": 2},"
             "          \"validation\": {\"format\": \"random\", \"rows\": 8, \"cols\": 2}}}",
             metrics);
    tu_write_file(job, json, 0644);
    cr_assert_eq(setenv("PS_WORKER_BIN", worker, 1), 0);
    char *argv[] = {BIN("ps-launch"), job, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 30000);
    char *text = strdup(tu_slurp(out));
    cr_assert_eq(code, 0, "ps-launch exit %d\nstdout:\n%s\nstderr:\n%s", code, text, tu_slurp(err));
    return text;
}

Test(launch, combines_workers_weighted_by_samples) {
    char metrics[128], err[128];
    char *text = launch_fake_job(worker_sh, metrics, err);

    /* the job's line per epoch: "... - loss: 2.0000 - accuracy: 0.7500 - val_loss: ..." */
    const char *at = text;
    for (int e = 0; e < 2; e++) {
        char head[32], figures[160];
        snprintf(head, sizeof(head), "Epoch %d/2\n", e + 1);
        const char *h = strstr(at, head);
        cr_assert_not_null(h, "no \"%s\" in:\n%s", head, text);
        const char *eol = strchr(h + strlen(head), '\n');
        cr_assert_not_null(eol, "epoch %d: no line after the header:\n%s", e + 1, text);
        char line[512];
        snprintf(line, sizeof(line), "%.*s", (int)(eol - h - strlen(head)), h + strlen(head));
        snprintf(figures, sizeof(figures),
                 "- loss: %.4f - accuracy: %.4f - val_loss: %.4f - val_accuracy: %.4f",
                 want[e].loss, want[e].accuracy, want[e].val_loss, want[e].val_accuracy);
        cr_assert_not_null(strstr(line, figures), "epoch %d line:\n  %s\nwant it to contain:\n  %s",
                           e + 1, line, figures);
        at = eol;
    }

    /* the metrics file: one JSON line per epoch with the same figures */
    char *m = tu_slurp(metrics);
    int line = 0;
    for (char *save = NULL, *l = strtok_r(m, "\n", &save); l != NULL;
         l = strtok_r(NULL, "\n", &save), line++) {
        cr_assert_lt(line, 2, "more than 2 metrics lines: %s", l);
        cJSON *o = cJSON_Parse(l);
        cr_assert_not_null(o, "metrics line %d is not JSON: %s", line + 1, l);
        cr_assert_eq(field(o, "epoch", line + 1), line + 1);
        cr_assert_eq(field(o, "samples", line + 1), 4, "%s", l);
        const double got[4] = {field(o, "loss", line + 1), field(o, "accuracy", line + 1),
                               field(o, "val_loss", line + 1),
                               field(o, "val_accuracy", line + 1)};
        const double w[4] = {want[line].loss, want[line].accuracy, want[line].val_loss,
                             want[line].val_accuracy};
        for (int k = 0; k < 4; k++)
            cr_assert(fabs(got[k] - w[k]) < 1e-6, "metrics line %d, figure %d: %.9g, want %.9g\n%s",
                      line + 1, k, got[k], w[k], l);
        cJSON_Delete(o);
    }
    cr_assert_eq(line, 2, "%d metrics lines, want 2", line);
    free(text);
}

/* --- fit.threads auto and the --verbose time line ------------------------------------------------ */

/* A fake worker that prints the fit.threads it was given, then one epoch whose "times" are
 *   rank 0: data 0.1, wait 0.2, compute 0.6, send 0.1, other 0, prep 0     (2 steps)
 *   rank 1: data 0.3, wait 0,   compute 0,   send 0.1, other 0, prep 0.05  (2 steps)
 * together 1.4 s over 4 steps: 350 ms/step = data 100 (0.4/1.4 = 29%) + pull wait 50 (14%) +
 * compute 150 (43%) + push 50 (14%) + other 0; prep thread 12.5 ms. */
static const char times_sh[] =
    "#!/bin/sh\n"
    "rank=\n"
    "while [ $# -gt 0 ]; do\n"
    "  case \"$1\" in --rank) rank=$2 ;; fit.threads=*) echo \"$1\" ;; esac\n"
    "  shift\n"
    "done\n"
    "if [ \"$rank\" = 0 ]; then t='0.1, 0.2, 0.6, 0.1, 0, 0'; else t='0.3, 0, 0, 0.1, 0, 0.05'; fi\n"
    "shm=${FAKE_SHM:+, \\\"shm\\\": [$FAKE_SHM]}\n" /* a worker's links, when the test sets them */
    "echo \"@ps {\\\"ev\\\": \\\"epoch\\\", \\\"rank\\\": $rank, \\\"epoch\\\": 1, \\\"epochs\\\": 1, "
    "\\\"step\\\": 2, \\\"steps\\\": 2, \\\"samples\\\": 4, \\\"loss_sum\\\": 1, \\\"correct\\\": 2, "
    "\\\"seconds\\\": 1, \\\"times\\\": [$t]$shm}\"\n";

/* stdout of ps-launch on a 1-server, 2-worker job with the fake worker, plus extra args. */
static char *launch_times(const char *extra) {
    char job[128], worker[128], out[128], err[128];
    path(job, sizeof(job), "job.json"), path(worker, sizeof(worker), "times-worker.sh");
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    tu_write_file(worker, times_sh, 0755);
    tu_write_file(job,
                  "{\"job_id\": \"launch-times\", \"cluster\": {\"servers\": 1, \"workers\": 2},"
                  " \"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1, \"activation\": "
                  "\"sigmoid\"}], \"loss\": \"binary_crossentropy\"}, \"fit\": {\"verbose\": 2},"
                  " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 8, \"cols\": 2}}}",
                  0644);
    cr_assert_eq(setenv("PS_WORKER_BIN", worker, 1), 0);
    char *argv[] = {BIN("ps-launch"), job, "--verbose", "--set", (char *)extra, NULL};
    if (extra == NULL) argv[3] = NULL;
    int code = tu_wait_exit(tu_spawn(argv, out, err), 30000);
    char *text = strdup(tu_slurp(out));
    cr_assert_eq(code, 0, "ps-launch exit %d\nstdout:\n%s\nstderr:\n%s", code, text, tu_slurp(err));
    return text;
}

Test(launch, verbose_prints_where_the_workers_steps_went) {
    char *text = launch_times(NULL);
    const char *e = strstr(text, "4/4 [");
    cr_assert_not_null(e, "no epoch line in:\n%s", text);
    const char *line = "\ntime/step: 350.000ms = data 100.000ms (29%) + pull wait 50.000ms (14%) "
                       "+ compute 150.000ms (43%) + push 50.000ms (14%) + other 0.000ms (0%); "
                       "prep thread 12.500ms\n";
    const char *t = strstr(text, line);
    cr_assert(t != NULL && t == strchr(e, '\n'), "want right after the epoch line:%s\nin:\n%s",
              line, text);
    free(text);
}

/* Each worker's epoch event says how many of its links use shared memory; the line sums them. */
Test(launch, verbose_sums_the_workers_shared_memory_links) {
    cr_assert_eq(setenv("FAKE_SHM", "1, 1", 1), 0);
    char *text = launch_times(NULL);
    cr_assert_eq(unsetenv("FAKE_SHM"), 0);
    cr_assert(strstr(text, "; prep thread 12.500ms; shared memory: 2 of 2 links\n") != NULL,
              "in:\n%s", text);
    free(text);
}

/* auto: each worker gets (CPUs - servers) / workers threads for BLAS, at least 1, plus the prep
 * thread when there are 2 CPUs; a job's own value is passed as it is, with nothing after it. */
Test(launch, fit_threads_auto_shares_the_cpus_the_servers_leave) {
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long share = (cpus - 1) / 2;
    char auto_set[64];
    snprintf(auto_set, sizeof(auto_set), "fit.threads=%ld\n", (share < 1 ? 1 : share) + (cpus > 1));
    char *text = launch_times(NULL);
    const char *a = strstr(text, auto_set);
    cr_assert_not_null(a, "no \"%s\" in:\n%s", auto_set, text);
    cr_assert_not_null(strstr(a + 1, auto_set), "one line per worker:\n%s", text);
    free(text);
    text = launch_times("fit.threads=3");
    const char *three = strstr(text, "fit.threads=3\n");
    cr_assert_not_null(three, "%s", text);
    cr_assert_null(strstr(text, "fit.threads=1\n"), "%s", text);
    free(text);
}

/* --- the job's AUC: every worker's predictions pooled ------------------------------------------- */

/* The test's own AUC over (x, y): every (positive, negative) pair, ties 1/2. Rows with
 * i % stride == rank (stride 1: all). */
static double brute_auc(const double *x, const int *y, size_t n, size_t stride, size_t rank) {
    double wins = 0.0, pairs = 0.0;
    for (size_t i = rank; i < n; i += stride)
        for (size_t j = rank; j < n; j += stride)
            if (y[i] == 1 && y[j] == 0)
                pairs += 1.0, wins += x[i] > x[j] ? 1.0 : x[i] == x[j] ? 0.5 : 0.0;
    return wins / pairs;
}

#define AUC_ROWS 400

/* Rows i = 0..399, label y, one feature x on a grid of 0.25 (many ties); worker i % 2 reads row
 * i. Within each worker positives sit 1 above negatives, and worker 1's rows sit 3 above
 * worker 0's: each worker ranks its own rows well, but worker 1's negatives outrank worker 0's
 * positives, so the pooled AUC (0.698) is well below the mean of the two workers' AUCs (0.872). The model is
 * Dense(1, sigmoid) with kernel 1, bias 0 and learning rate 0 (AdaGrad moves nothing), so
 * p = sigmoid(x): the test knows every prediction without the code under test. */
static void write_auc_data(const char *csv, double *x, int *y) {
    FILE *f = fopen(csv, "w");
    cr_assert_not_null(f);
    uint64_t s = 7;
    for (size_t i = 0; i < AUC_ROWS; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        y[i] = (int)((s >> 33) % 2);
        int k = (int)((s >> 40) % 8) + (y[i] ? 4 : 0) + (i % 2 ? 12 : 0) - 8;
        x[i] = 0.25 * k;
        fprintf(f, "%d,%.2f\n", y[i], x[i]);
    }
    fclose(f);
}

static void write_auc_job(const char *job, const char *csv, const char *metrics) {
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"launch-auc\", \"seed\": 1, \"cluster\": {\"servers\": 1, \"workers\": 2},"
             " \"optimizer\": {\"learning_rate\": 0},"
             " \"model\": {\"input_dim\": 1, \"input\": {\"type\": \"dense\", \"init\":"
             "  {\"type\": \"constant\", \"value\": 1}},"
             "  \"layers\": [{\"units\": 1, \"activation\": \"sigmoid\"}],"
             "  \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"batch_size\": 32, \"verbose\": 2, \"metrics_file\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"csv\", \"path\": \"%s\"},"
             "          \"validation\": {\"format\": \"csv\", \"path\": \"%s\"}}}",
             metrics, csv, csv);
    tu_write_file(job, json, 0644);
}

/* Nothing but the test's own files is left in dir (TMPDIR of the launcher). */
static void assert_no_pairs_left(void) {
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "ls -A %s | grep -q -e ps-launch -e pairs", dir);
    cr_assert_neq(system(cmd), 0, "pairs files or directory left in %s", dir);
}

Test(launch, job_auc_pools_every_workers_predictions) {
    char job[128], csv[128], metrics[128], out[128], err[128];
    path(job, sizeof(job), "job.json"), path(csv, sizeof(csv), "data.csv");
    path(metrics, sizeof(metrics), "metrics.jsonl");
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    double x[AUC_ROWS];
    int y[AUC_ROWS];
    write_auc_data(csv, x, y);
    write_auc_job(job, csv, metrics);

    const double pooled = brute_auc(x, y, AUC_ROWS, 1, 0);
    const double mean_of_workers =
        (brute_auc(x, y, AUC_ROWS, 2, 0) + brute_auc(x, y, AUC_ROWS, 2, 1)) / 2.0;
    cr_assert_gt(fabs(pooled - mean_of_workers), 0.1, "the data do not tell pooled (%.4f) from "
                 "averaged (%.4f)", pooled, mean_of_workers);
    double logloss = 0.0, correct = 0.0;
    for (size_t i = 0; i < AUC_ROWS; i++) {
        const double p = 1.0 / (1.0 + exp(-x[i]));
        logloss -= y[i] ? log(p) : log(1.0 - p);
        correct += (x[i] > 0.0) == (y[i] == 1);
    }
    logloss /= AUC_ROWS;

    cr_assert_eq(unsetenv("PS_WORKER_BIN"), 0);
    cr_assert_eq(setenv("TMPDIR", dir, 1), 0); /* where the launcher makes its pairs directory */
    char *argv[] = {BIN("ps-launch"), job, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 60000);
    char *text = strdup(tu_slurp(out));
    cr_assert_eq(code, 0, "ps-launch exit %d\nstdout:\n%s\nstderr:\n%s", code, text, tu_slurp(err));
    char expect[64];
    snprintf(expect, sizeof(expect), " - val_auc: %.4f\n", pooled);
    cr_assert_not_null(strstr(text, expect), "no \"%s\" in:\n%s", expect, text);
    free(text);

    char *m = tu_slurp(metrics);
    int line = 0;
    for (char *save = NULL, *l = strtok_r(m, "\n", &save); l != NULL;
         l = strtok_r(NULL, "\n", &save), line++) {
        cJSON *o = cJSON_Parse(l);
        cr_assert_not_null(o, "metrics line %d is not JSON: %s", line + 1, l);
        const double auc = field(o, "val_auc", line + 1);
        cr_assert(fabs(auc - pooled) < 1e-6, "epoch %d: val_auc %.9g, pooled %.9g (mean of the "
                  "workers' %.9g)\n%s", line + 1, auc, pooled, mean_of_workers, l);
        cr_assert(fabs(field(o, "val_logloss", line + 1) - logloss) < 1e-6, "want logloss %.9g\n%s",
                  logloss, l);
        cr_assert(fabs(field(o, "val_accuracy", line + 1) - correct / AUC_ROWS) < 1e-12, "%s", l);
        cJSON_Delete(o);
    }
    cr_assert_eq(line, 2, "%d metrics lines, want 2", line);
    assert_no_pairs_left();

    /* --evaluate: one pass over the same rows (data.validation), Keras evaluate's "auc" */
    remove(metrics);
    char *eval_argv[] = {BIN("ps-launch"), job, "--evaluate", NULL};
    code = tu_wait_exit(tu_spawn(eval_argv, out, err), 60000);
    text = strdup(tu_slurp(out));
    cr_assert_eq(code, 0, "ps-launch --evaluate exit %d\nstdout:\n%s\nstderr:\n%s", code, text,
                 tu_slurp(err));
    snprintf(expect, sizeof(expect), " - auc: %.4f\n", pooled);
    cr_assert_not_null(strstr(text, expect), "no \"%s\" in:\n%s", expect, text);
    free(text);
    cJSON *o = cJSON_Parse(tu_slurp(metrics));
    cr_assert_not_null(o, "%s", tu_slurp(metrics));
    cr_assert(fabs(field(o, "auc", 1) - pooled) < 1e-6, "%s", tu_slurp(metrics));
    cr_assert(fabs(field(o, "logloss", 1) - logloss) < 1e-6, "%s", tu_slurp(metrics));
    cJSON_Delete(o);
    assert_no_pairs_left();
}

/* Workers that report their own AUC but leave no pairs: the job's line has no AUC (never a
 * mean of theirs), and a worker whose announced pairs file is missing is reported. */
static const char auc_worker_sh[] =
    "#!/bin/sh\n"
    "rank=\n"
    "while [ $# -gt 0 ]; do\n"
    "  if [ \"$1\" = --rank ]; then rank=$2; fi\n"
    "  shift\n"
    "done\n"
    "ev() { echo \"@ps {\\\"ev\\\": \\\"epoch\\\", \\\"rank\\\": $rank, \\\"epoch\\\": $1, "
    "\\\"epochs\\\": 2, \\\"step\\\": 1, \\\"steps\\\": 1, \\\"samples\\\": 2, "
    "\\\"loss_sum\\\": 1.0, \\\"correct\\\": 1, \\\"seconds\\\": 0.5, \\\"val_samples\\\": 2, "
    "\\\"val_loss_sum\\\": 1.0, \\\"val_correct\\\": 1, \\\"val_logloss_sum\\\": $2, "
    "\\\"val_auc\\\": $3 $4}\"; }\n"
    "ev 1 1.5 0.25\n"                         /* epoch 1: AUCs, no pairs */
    "ev 2 2.5 null ', \"pairs\": 2'\n";       /* epoch 2: pairs announced, never written */

Test(launch, no_pooled_pairs_means_no_job_auc) {
    char metrics[128], err[128];
    cr_assert_eq(setenv("TMPDIR", dir, 1), 0);
    char *text = launch_fake_job(auc_worker_sh, metrics, err);
    cr_assert_null(strstr(text, "val_auc"), "a job AUC without pooled pairs:\n%s", text);
    free(text);
    cr_assert_not_null(strstr(tu_slurp(err), "epoch 2: no AUC: "), "%s", tu_slurp(err));
    cr_assert_not_null(strstr(tu_slurp(err), "epoch-2.rank-0.pairs"), "%s", tu_slurp(err));
    /* log losses add up over workers: (1.5 + 1.5) / 4, (2.5 + 2.5) / 4 */
    char *m = tu_slurp(metrics);
    cr_assert_null(strstr(m, "val_auc"), "%s", m);
    cr_assert_not_null(strstr(m, "\"val_logloss\": 0.75,"), "%s", m);
    cr_assert_not_null(strstr(m, "\"val_logloss\": 1.25,"), "%s", m);
    assert_no_pairs_left();
}

/* Once every worker has finished, the job is over: SIGTERMs, one every 0.1 ms from then until the
 * launcher is gone, change nothing. The launcher stops its servers, closes its handles and exits
 * 0, never by a signal (libuv's handlers, once closed, had put back the default action). */
Test(launch, sigterms_after_the_job_finished_change_nothing) {
    char job[128], worker[128], out[128], err[128];
    path(job, sizeof(job), "job.json"), path(worker, sizeof(worker), "quick-worker.sh");
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    tu_write_file(worker, "#!/bin/sh\nexit 0\n", 0755);
    tu_write_file(job,
                  "{\"job_id\": \"launch-late\", \"cluster\": {\"servers\": 1, \"workers\": 2},"
                  " \"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1, \"activation\": "
                  "\"sigmoid\"}], \"loss\": \"binary_crossentropy\"}, \"fit\": {\"verbose\": 2},"
                  " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 8, \"cols\": 2}}}",
                  0644);
    cr_assert_eq(setenv("PS_WORKER_BIN", worker, 1), 0);
    char *argv[] = {BIN("ps-launch"), job, NULL};
    int pid = tu_spawn(argv, out, err);
    cr_assert(pid > 0);
    bool trained = false;
    for (int i = 0; i < 2000 && !trained; i++) { /* at most 20 s for both workers to exit */
        trained = strstr(tu_slurp(out), "Trained 1 epoch:") != NULL;
        if (!trained) usleep(10000);
    }
    int status = 0;
    const bool exited = tu_sigterm_until_exit(pid, &status);
    cr_assert(trained, "stdout:\n%s\nstderr:\n%s", tu_slurp(out), tu_slurp(err));
    cr_assert(exited, "ps-launch did not exit");
    cr_assert(WIFEXITED(status), "ps-launch died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "stderr:\n%s", tu_slurp(err));
}

/* --- the children never outlive the launcher ------------------------------------------------ */

/* pid in DIR/name, once the file is there (at most 20 s); 0 if it never comes. */
static int pid_in(const char *name) {
    char p[128];
    path(p, sizeof(p), name);
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(p, "r");
        int pid = 0;
        if (f != NULL) {
            if (fscanf(f, "%d", &pid) != 1) pid = 0;
            fclose(f);
        }
        if (pid > 0) return pid;
        usleep(10000);
    }
    return 0;
}

/* Gone: no such process, or a zombie nobody has reaped yet. */
static bool gone(int pid) {
    char p[64], st[256] = "";
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (f == NULL) return true;
    const bool read = fgets(st, sizeof(st), f) != NULL;
    fclose(f);
    const char *r = strrchr(st, ')');
    return !read || (r != NULL && r[1] == ' ' && r[2] == 'Z');
}

static bool gone_within(int pid, int ms) {
    for (int t = 0; t < ms && !gone(pid); t += 10) usleep(10000);
    return gone(pid);
}

/* A long job of the real server and workers, each started through a wrapper that leaves its pid
 * in DIR/<role>-<index>.pid and execs the binary; returns the launcher's pid once all three
 * run and training has begun. */
static int long_job(int pids[3]) {
    char job[128], out[128], err[128], sbin[128], wbin[128], text[512];
    path(job, sizeof(job), "job.json"), path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    path(sbin, sizeof(sbin), "server.sh"), path(wbin, sizeof(wbin), "worker.sh");
    const char *roles[2][3] = {{"server.sh", "--shard", BIN("ps-server")},
                               {"worker.sh", "--rank", BIN("ps-worker")}};
    for (int k = 0; k < 2; k++) {
        char p[128];
        path(p, sizeof(p), roles[k][0]);
        snprintf(text, sizeof(text),
                 "#!/bin/sh\ni=\nprev=\nfor a in \"$@\"; do\n"
                 "  if [ \"$prev\" = %s ]; then i=$a; fi\n  prev=$a\ndone\n"
                 "echo $$ > %s/%s-$i.pid.tmp && mv %s/%s-$i.pid.tmp %s/%s-$i.pid\nexec %s \"$@\"\n",
                 roles[k][1], dir, k ? "worker" : "server", dir, k ? "worker" : "server", dir,
                 k ? "worker" : "server", roles[k][2]);
        tu_write_file(p, text, 0755);
    }
    tu_write_file(job,
                  "{\"job_id\": \"launch-long\", \"cluster\": {\"servers\": 1, \"workers\": 2},"
                  " \"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1, \"activation\": "
                  "\"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
                  " \"fit\": {\"epochs\": 1000000, \"verbose\": 2},"
                  " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 64, \"cols\": 2}}}",
                  0644);
    cr_assert_eq(setenv("PS_SERVER_BIN", sbin, 1), 0);
    cr_assert_eq(setenv("PS_WORKER_BIN", wbin, 1), 0);
    char *argv[] = {BIN("ps-launch"), job, NULL};
    const int pid = tu_spawn(argv, out, err);
    cr_assert(pid > 0);
    pids[0] = pid_in("server-0.pid"), pids[1] = pid_in("worker-0.pid");
    pids[2] = pid_in("worker-1.pid");
    for (int i = 0; i < 3; i++) cr_assert_gt(pids[i], 0, "child %d never started", i);
    for (int i = 0; i < 2000 && strstr(tu_slurp(out), "Epoch 2/") == NULL; i++) usleep(10000);
    cr_assert_not_null(strstr(tu_slurp(out), "Epoch 2/"), "%s\n%s", tu_slurp(out), tu_slurp(err));
    return pid;
}

/* SIGKILL gives the launcher no chance to stop anything: the kernel tells its children (they
 * asked for SIGTERM on their parent's death), and they stop. */
Test(launch, the_children_end_with_a_launcher_killed_outright) {
    int pids[3];
    const int pid = long_job(pids);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert_eq(tu_wait_exit(pid, 5000), 128 + SIGKILL);
    for (int i = 0; i < 3; i++) {
        const bool ok = gone_within(pids[i], 10000);
        if (!ok) kill(pids[i], SIGKILL);
        cr_assert(ok, "child %d (pid %d) outlived the launcher", i, pids[i]);
    }
}

/* SIGHUP (the terminal went away) stops the job as SIGTERM does: status 128 + 1, no child left. */
Test(launch, sighup_stops_the_job) {
    int pids[3];
    const int pid = long_job(pids);
    cr_assert_eq(kill(pid, SIGHUP), 0);
    const int st = tu_wait_exit(pid, 20000);
    for (int i = 0; i < 3; i++) {
        const bool ok = gone_within(pids[i], 5000);
        if (!ok) kill(pids[i], SIGKILL);
        cr_assert(ok, "child %d (pid %d) outlived the launcher", i, pids[i]);
    }
    cr_assert_eq(st, 128 + SIGHUP, "stderr:\n%s", "(see the test dir)");
}

/* ps-launch on a 1-server 1-worker job whose worker is the sh script `script` (the real
 * ps-server serves); its stderr goes to DIR/err. Returns the launcher's pid. */
static int launch_one_fake_worker(const char *job_id, const char *script) {
    char job[128], out[128], err[128], worker[128], text[512];
    path(job, sizeof(job), "job.json"), path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    path(worker, sizeof(worker), "fake-worker.sh");
    tu_write_file(worker, script, 0755);
    snprintf(text, sizeof(text),
             "{\"job_id\": \"%s\", \"cluster\": {\"servers\": 1, \"workers\": 1},"
             " \"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1, \"activation\": "
             "\"sigmoid\"}], \"loss\": \"binary_crossentropy\"}, \"fit\": {\"verbose\": 2},"
             " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 8, \"cols\": 2}}}",
             job_id);
    tu_write_file(job, text, 0644);
    cr_assert_eq(setenv("PS_WORKER_BIN", worker, 1), 0);
    char *argv[] = {BIN("ps-launch"), job, NULL};
    const int pid = tu_spawn(argv, out, err);
    cr_assert(pid > 0);
    return pid;
}

/* A worker wrapper that does not exec (its own child holds the output pipes): stopping the job
 * stops that child too, and the launcher does not wait on it. */
Test(launch, a_wrapper_s_own_child_stops_with_the_job) {
    char text[256];
    snprintf(text, sizeof(text), "#!/bin/sh\nsleep 60 &\necho $! > %s/sleep.pid\nwait\n", dir);
    const int pid = launch_one_fake_worker("launch-sleepy", text);
    const int sleeper = pid_in("sleep.pid");
    cr_assert_gt(sleeper, 0, "the wrapper never started its sleep");
    cr_assert_eq(kill(pid, SIGTERM), 0);
    const int st = tu_wait_exit(pid, 10000);
    const bool ok = gone_within(sleeper, 5000);
    if (!ok) kill(sleeper, SIGKILL);
    cr_assert_eq(st, 128 + SIGTERM, "the launcher waited on the wrapper's child: %d", st);
    cr_assert(ok, "the wrapper's child (pid %d) outlived the job", sleeper);
}

/* Only a log line's own "info: " marks it routine (hidden without --verbose): a worker's error
 * about a file called "userinfo" is shown. */
Test(launch, an_error_mentioning_info_is_shown) {
    const int pid = launch_one_fake_worker(
        "launch-info", "#!/bin/sh\necho 'ps-worker 0: open /data/userinfo: No such file' >&2\n"
                       "echo '[worker 0] info: routine' >&2\nexit 2\n");
    cr_assert_eq(tu_wait_exit(pid, 20000), 2);
    char err[128];
    path(err, sizeof(err), "err");
    const char *e = tu_slurp(err);
    cr_assert_not_null(strstr(e, "[worker 0] ps-worker 0: open /data/userinfo: No such file"), "%s",
                       e);
    cr_assert_null(strstr(e, "routine"), "%s", e);
}
