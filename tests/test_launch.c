/* test_launch.c - ps-launch's combination of the workers' progress events into the job's figures:
 * sample-weighted (sums over workers divided by the job's samples), not a mean of the workers'
 * means. Fake workers (sh scripts run through PS_WORKER_BIN) print chosen "@ps {json}" epoch
 * events; the real ps-server serves the job's tables meanwhile. Every wait has a deadline. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

Test(launch, combines_workers_weighted_by_samples) {
    char job[128], worker[128], metrics[128], out[128], err[128];
    path(job, sizeof(job), "job.json"), path(worker, sizeof(worker), "fake-worker.sh");
    path(metrics, sizeof(metrics), "metrics.jsonl");
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    tu_write_file(worker, worker_sh, 0755);
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
