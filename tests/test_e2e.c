/* test_e2e.c - the real binaries on loopback: the seed Keras job through ps-launch, each row seen
 * once per epoch across workers, failures propagated with the right exit codes, and the CLIs'
 * error messages. Every wait has a deadline; every child is ended by its PID. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "testutil.h"

static char dir[64];

static void setup(void) { tu_tmpdir(dir, "ps_e2e"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(e2e, .init = setup, .fini = teardown, .timeout = 120);

static void path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

#define BIN(name) PS_BINARY_DIR "/" name
#define SEED_JOB PS_SOURCE_DIR "/examples/keras_seed.json"

Test(e2e, seed_job_three_epochs_through_the_launcher) {
    char out[128], err[128], metrics[128], set_metrics[192];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    path(metrics, sizeof(metrics), "metrics.jsonl");
    snprintf(set_metrics, sizeof(set_metrics), "fit.metrics_file=%s", metrics);
    char *argv[] = {BIN("ps-launch"), SEED_JOB, "--set", "fit.epochs=3", "--set", set_metrics,
                    NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 60000);
    char *text = tu_slurp(out);
    cr_assert_eq(code, 0, "exit %d\nstdout:\n%s\nstderr:\n%s", code, text, tu_slurp(err));
    text = tu_slurp(out);
    cr_assert(strstr(text, "Epoch 1/3\n") && strstr(text, "Epoch 3/3\n"), "%s", text);
    cr_assert(strstr(text, "32/32 [==============================] - ") != NULL, "%s", text);
    cr_assert(strstr(text, " - loss: ") && strstr(text, " - accuracy: "), "%s", text);
    cr_assert(strstr(text, "Trained 3 epochs: 3000 samples"), "%s", text);
    int epoch_lines = 0;
    for (const char *p = text; (p = strstr(p, "32/32 [")) != NULL; p++) epoch_lines++;
    cr_assert_eq(epoch_lines, 3, "one line per epoch for the job, got %d:\n%s", epoch_lines, text);

    /* the metrics file: one JSON line per epoch, the whole job's figures (their values are
     * checked against PyTorch by golden_trajectory_through_the_launcher) */
    FILE *f = fopen(metrics, "r");
    cr_assert_not_null(f);
    for (int e = 0; e < 3; e++) {
        unsigned ep;
        double loss;
        cr_assert_eq(fscanf(f, " {\"epoch\": %u, \"loss\": %lf, %*[^}]", &ep, &loss), 2);
        cr_assert_eq(ep, (unsigned)e + 1);
        cr_assert_eq(fscanf(f, "}"), 0);
    }
    fclose(f);
    text = tu_slurp(metrics);
    cr_assert(strstr(text, "\"samples\": 1000,") != NULL, "%s", text);
}

/* Two workers against one in-process shard: their epoch events prove every row was seen once. */
Test(e2e, every_row_once_per_epoch_across_workers) {
    ps_job_config job;
    ps_error e = {0};
    cr_assert_eq(ps_config_load(SEED_JOB, NULL, 0, &job, &e), PS_OK, "%s", e.msg);
    test_server *srv = tu_server_start(&job, 0);
    char servers[96];
    snprintf(servers, sizeof(servers), "cluster.servers=[\"%s\"]", tu_server_addr(srv));
    pid_t pid[2];
    char out[2][128], err[2][128];
    for (int r = 0; r < 2; r++) {
        char name[16], rank[8];
        snprintf(name, sizeof(name), "w%d.out", r), path(out[r], sizeof(out[r]), name);
        snprintf(name, sizeof(name), "w%d.err", r), path(err[r], sizeof(err[r]), name);
        snprintf(rank, sizeof(rank), "%d", r);
        char *argv[] = {BIN("ps-worker"), "--config", SEED_JOB, "--rank", rank, "--events",
                        "--set", servers, "--set", "fit.epochs=3", NULL};
        pid[r] = tu_spawn(argv, out[r], err[r]);
    }
    for (int r = 0; r < 2; r++) {
        int code = tu_wait_exit(pid[r], 60000);
        cr_assert_eq(code, 0, "worker %d exit %d: %s", r, code, tu_slurp(err[r]));
    }
    tu_server_free(srv);
    uint64_t want = 0;
    for (uint64_t i = 0; i < 1000; i++) want += ps_mix64(i);
    for (unsigned ep = 1; ep <= 3; ep++) {
        uint64_t hash = 0, samples = 0;
        for (int r = 0; r < 2; r++) {
            char key[64];
            snprintf(key, sizeof(key), "\"ev\": \"epoch\", \"rank\": %d, \"epoch\": %u,", r, ep);
            const char *line = strstr(tu_slurp(out[r]), key);
            cr_assert_not_null(line, "worker %d: no epoch %u event", r, ep);
            unsigned long long s, h;
            cr_assert_eq(sscanf(strstr(line, "\"samples\":"), "\"samples\": %llu", &s), 1);
            cr_assert_eq(sscanf(strstr(line, "\"rows_hash\":"), "\"rows_hash\": \"%llu\"", &h), 1);
            cr_assert_eq(s, 500, "worker %d epoch %u: %llu samples", r, ep, s);
            samples += s, hash += h;
        }
        cr_assert_eq(samples, 1000);
        cr_assert_eq(hash, want, "epoch %u: rows seen are not exactly 0..999 once", ep);
    }
}

Test(e2e, a_failing_worker_stops_the_job_with_its_status) {
    char script[128], out[128], err[128];
    path(script, sizeof(script), "fail.sh"), path(out, sizeof(out), "out");
    path(err, sizeof(err), "err");
    FILE *f = fopen(script, "w");
    fputs("#!/bin/sh\necho 'worker starting' >&2\nexit 1\n", f);
    fclose(f);
    chmod(script, 0755);
    setenv("PS_WORKER_BIN", script, 1);
    char *argv[] = {BIN("ps-launch"), SEED_JOB, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 30000);
    cr_assert_eq(code, 1, "exit %d: %s", code, tu_slurp(err));
    const char *text = tu_slurp(err);
    cr_assert(strstr(text, "worker ") && strstr(text, "exited with status 1"), "%s", text);
}

Test(e2e, malformed_data_names_file_and_line_and_exits_2) {
    char csv[128], job[128], out[128], err[128], set_path[192];
    path(csv, sizeof(csv), "bad.csv"), path(job, sizeof(job), "job.json");
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    FILE *f = fopen(csv, "w");
    fputs("label,a,b\n1,0.5,0.25\n0,oops,1\n1,1,1\n", f);
    fclose(f);
    snprintf(set_path, sizeof(set_path), "data.train.path=%s", csv);
    char *argv[] = {BIN("ps-launch"), SEED_JOB, "--set", "model.input_dim=2",
                    "--set", "data.train={\"format\": \"csv\", \"path\": \"x\"}",
                    "--set", set_path, "--set", "cluster.workers=1", NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 30000);
    const char *text = tu_slurp(err);
    cr_assert_eq(code, 2, "exit %d: %s", code, text);
    char want[160];
    snprintf(want, sizeof(want), "%s:3:", csv);
    cr_assert(strstr(text, want) != NULL, "no \"%s\" in:\n%s", want, text);
}

/* A data file the job names but that is not there is the job's error, like a malformed line:
 * exit 2, which ps-launch --restart does not retry, and no wait for the servers first. */
Test(e2e, missing_data_file_exits_2_before_any_server_is_reached) {
    char out[128], err[128], missing[128], set_path[192];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    path(missing, sizeof(missing), "no-such.csv");
    snprintf(set_path, sizeof(set_path), "data.train.path=%s", missing);
    char *argv[] = {BIN("ps-worker"), "--config", SEED_JOB, "--rank", "0",
                    "--set", "model.input_dim=2",
                    "--set", "data.train={\"format\": \"csv\", \"path\": \"x\"}",
                    "--set", set_path, "--set", "cluster.servers=[\"127.0.0.1:1\"]",
                    "--set", "cluster.connect_timeout_ms=20000", NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 15000);
    const char *text = tu_slurp(err);
    cr_assert_eq(code, 2, "exit %d: %s", code, text);
    char want[192];
    snprintf(want, sizeof(want), "open %s: No such file or directory", missing);
    cr_assert(strstr(text, want) != NULL, "no \"%s\" in:\n%s", want, text);
}

Test(e2e, worker_gives_up_on_unreachable_server) {
    char out[128], err[128];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    char *argv[] = {BIN("ps-worker"), "--config", SEED_JOB, "--rank", "0",
                    "--set", "cluster.servers=[\"127.0.0.1:1\"]",
                    "--set", "cluster.connect_timeout_ms=500", NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 20000);
    const char *text = tu_slurp(err);
    cr_assert_eq(code, 1, "exit %d: %s", code, text);
    cr_assert(strstr(text, "cannot reach server 0 at 127.0.0.1:1") != NULL, "%s", text);
}

Test(e2e, config_errors_name_file_and_key) {
    char out[128], err[128];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    char *argv[] = {BIN("ps-server"), "--config", SEED_JOB, "--shard", "0",
                    "--set", "fit.epoch=3", NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 10000);
    const char *text = tu_slurp(err);
    cr_assert_eq(code, 2, "exit %d: %s", code, text);
    cr_assert(strstr(text, "keras_seed.json: fit.epoch: unknown key") != NULL, "%s", text);

    char *argv2[] = {BIN("ps-launch"), SEED_JOB, "--set", "optimizer.learning_rate=-1", NULL};
    code = tu_wait_exit(tu_spawn(argv2, out, err), 10000);
    text = tu_slurp(err);
    cr_assert_eq(code, 2, "exit %d: %s", code, text);
    cr_assert(strstr(text, "optimizer.learning_rate") != NULL, "%s", text);

    char *argv3[] = {BIN("ps-server"), "--help", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(argv3, out, err), 10000), 0);
    cr_assert(strstr(tu_slurp(out), "usage: ps-server") != NULL);
}

static void wait_for(const char *file, const char *needle, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 20) {
        if (strstr(tu_slurp(file), needle)) return;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("\"%s\" never appeared in %s", needle, file);
}

Test(e2e, sigterm_stops_a_server_cleanly_and_sigint_stops_a_job) {
    char out[128], err[128];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    char *argv[] = {BIN("ps-server"), "--config", SEED_JOB, "--shard", "0",
                    "--listen", "127.0.0.1:0", NULL};
    pid_t pid = tu_spawn(argv, out, err);
    wait_for(out, "listening on 127.0.0.1:", 10000);
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 10000), 0, "%s", tu_slurp(err));

    char *job[] = {BIN("ps-launch"), SEED_JOB, "--set", "fit.epochs=100000", NULL};
    pid = tu_spawn(job, out, err);
    wait_for(out, "Epoch 2/100000", 30000);
    kill(pid, SIGINT);
    int code = tu_wait_exit(pid, 15000);
    cr_assert_eq(code, 130, "exit %d: %s", code, tu_slurp(err));
}

/* The port a ps-server printed on its "listening on HOST:PORT" line. */
static int server_port(const char *out) {
    wait_for(out, "listening on 127.0.0.1:", 10000);
    int port = 0;
    cr_assert_eq(sscanf(strstr(tu_slurp(out), "listening on 127.0.0.1:"), "listening on 127.0.0.1:%d",
                        &port), 1);
    return port;
}

/* A client that pipelines many pulls and closes without reading their replies makes the server
 * write to a reset connection: without SIGPIPE ignored, that kills the shard (exit by signal 13). */
Test(e2e, a_client_that_closes_without_reading_cannot_kill_a_server) {
    char out[128], err[128];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    char *argv[] = {BIN("ps-server"), "--config", SEED_JOB, "--shard", "0",
                    "--listen", "127.0.0.1:0", NULL};
    pid_t pid = tu_spawn(argv, out, err);
    const int port = server_port(out);
    ps_job_config job;
    ps_error e = {0};
    cr_assert_eq(ps_config_load(SEED_JOB, NULL, 0, &job, &e), PS_OK, "%s", e.msg);
    uint64_t keys[100];
    for (int i = 0; i < 100; i++) keys[i] = (uint64_t)i;
    ps_bulk kb = {.src = {(const uint8_t *)keys, sizeof(keys)}};
    for (int round = 0; round < 10; round++) {
        int fd = tu_connect(port);
        cr_assert(fd >= 0);
        cr_assert(tu_hello(fd, &job));
        for (int i = 0; i < 2000; i++) {
            ps_Envelope env = ps_Envelope_init_zero;
            env.request_id = (uint64_t)i + 2;
            env.which_body = ps_Envelope_pull_tag;
            env.pull.table = 0;
            if (!tu_send_msg(fd, &env, &kb, NULL, NULL)) break; /* the server may reset first */
        }
        close(fd);
        struct timespec ts = {0, 200 * 1000 * 1000}; /* time to write into the reset socket */
        nanosleep(&ts, NULL);
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "the server died in round %d: %s", round,
                     WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exited");
    }
    int fd = tu_connect(port); /* and it still serves */
    cr_assert(fd >= 0 && tu_hello(fd, &job));
    close(fd);
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 10000), 0, "%s", tu_slurp(err));
}

/* --- weights out and in, through the programs -------------------------------------------------- */

#define GOLDEN PS_SOURCE_DIR "/tests/ref/train"

/* The seed model's job of tests/ref/train (golden.json, case seed_keras_b32). */
static void golden_seed_job(char *job, size_t n) {
    path(job, n, "golden.json");
    tu_write_file(job,
               "{\"job_id\": \"golden\", \"cluster\": {\"servers\": 2, \"workers\": 2},"
               " \"optimizer\": {\"form\": \"keras\", \"learning_rate\": 0.01},"
               " \"model\": {\"input_dim\": 20, \"layers\": [{\"units\": 64, \"activation\":"
               " \"relu\"}, {\"units\": 1, \"activation\": \"sigmoid\"}],"
               " \"loss\": \"binary_crossentropy\"},"
               " \"fit\": {\"epochs\": 2, \"batch_size\": 32, \"shuffle\": false},"
               " \"data\": {\"train\": {\"format\": \"csv\", \"path\": \"" GOLDEN "/seed.csv\","
               " \"label_name\": \"label\"}}}", 0644);
}

/* ps-launch --evaluate with PyTorch's final weights of a golden run: the loss and accuracy torch
 * computes for them on the same rows (golden.json "evaluate"), across 2 workers and 2 shards. */
Test(e2e, evaluate_scores_saved_weights_as_torch_does) {
    char job[128], out[128], err[128], metrics[128], set_metrics[192];
    golden_seed_job(job, sizeof(job));
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    path(metrics, sizeof(metrics), "m.jsonl");
    snprintf(set_metrics, sizeof(set_metrics), "fit.metrics_file=%s", metrics);
    char *argv[] = {BIN("ps-launch"), job, "--evaluate", "--set",
                    "fit.init_from=" GOLDEN "/seed_keras_b32", "--set", set_metrics, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 60000);
    cr_assert_eq(code, 0, "exit %d: %s", code, tu_slurp(err));
    const char *text = tu_slurp(out);
    cr_assert(strstr(text, "Evaluated 200 samples") && !strstr(text, "Epoch "), "%s", text);
    double loss, acc;
    cr_assert_eq(sscanf(tu_slurp(metrics), "{\"epoch\": 1, \"loss\": %lf, \"accuracy\": %lf", &loss,
                        &acc), 2, "%s", tu_slurp(metrics));
    /* golden.json, seed_keras_b32: "evaluate" */
    const char *g = strstr(tu_slurp(GOLDEN "/golden.json"), "\"evaluate\"");
    double want_loss, want_acc;
    cr_assert_eq(sscanf(g, "\"evaluate\": { \"loss\": %lf, \"accuracy\": %lf", &want_loss,
                        &want_acc), 2);
    cr_assert(fabs(loss - want_loss) < 1e-6, "loss %.9f, torch %.9f", loss, want_loss);
    cr_assert(fabs(acc - want_acc) < 1e-9, "accuracy %.4f, torch %.4f", acc, want_acc);
}

/* fit.export_to: ps-launch writes the weights when training ends; numpy's layout, a manifest. */
Test(e2e, launch_exports_weights_when_training_ends) {
    char job[128], out[128], err[128], dest[128], set_dest[192], file[256];
    golden_seed_job(job, sizeof(job));
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    path(dest, sizeof(dest), "weights/run1");
    snprintf(set_dest, sizeof(set_dest), "fit.export_to=%s", dest);
    char *argv[] = {BIN("ps-launch"), job, "--set", set_dest, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 60000);
    cr_assert_eq(code, 0, "exit %d: %s\n%s", code, tu_slurp(out), tu_slurp(err));
    cr_assert(strstr(tu_slurp(out), "Exported 4 tables"), "%s", tu_slurp(out));
    const char *files[] = {"manifest.json", "dense/kernel.npy", "dense/kernel.accumulators.npy",
                           "dense/bias.npy", "dense_1/kernel.npy", "dense_1/bias.npy"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(file, sizeof(file), "%s/%s", dest, files[i]);
        cr_assert_eq(access(file, R_OK), 0, "no %s", file);
    }
    snprintf(file, sizeof(file), "%s/manifest.json", dest);
    cr_assert(strstr(tu_slurp(file), "\"shape\":\t[20, 64]") ||
              strstr(tu_slurp(file), "[20, 64]"), "%s", tu_slurp(file));
}

Test(e2e, export_errors_name_what_is_wrong) {
    char out[128], err[128];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    char *no_dir[] = {BIN("ps-export"), SEED_JOB, NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(no_dir, out, err), 10000), 2);
    cr_assert(strstr(tu_slurp(err), "no directory"), "%s", tu_slurp(err));
    char *counted[] = {BIN("ps-export"), SEED_JOB, "/tmp/x", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(counted, out, err), 10000), 2);
    cr_assert(strstr(tu_slurp(err), "cluster.servers is a count"), "%s", tu_slurp(err));
    char *down[] = {BIN("ps-export"), SEED_JOB, "/tmp/x", "--set",
                    "cluster.servers=[\"127.0.0.1:1\"]", "--set",
                    "cluster.connect_timeout_ms=300", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(down, out, err), 10000), 1);
    cr_assert(strstr(tu_slurp(err), "cannot reach server 0"), "%s", tu_slurp(err));
}

/* The whole program path against PyTorch: ps-launch, 2 servers, 2 sync workers of batch 32 from
 * the golden initial weights = torch's run with batch 64 (golden.json seed_keras_b64): each
 * epoch's combined loss within 1e-6, accuracy exact. */
Test(e2e, golden_trajectory_through_the_launcher) {
    char job[128], out[128], err[128], metrics[128], set_metrics[192];
    golden_seed_job(job, sizeof(job));
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    path(metrics, sizeof(metrics), "m.jsonl");
    snprintf(set_metrics, sizeof(set_metrics), "fit.metrics_file=%s", metrics);
    char *argv[] = {BIN("ps-launch"), job, "--set", "fit.init_from=" GOLDEN "/seed_init",
                    "--set", "cluster.consistency=sync", "--set", "fit.epochs=3", "--set",
                    set_metrics, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 60000);
    cr_assert_eq(code, 0, "exit %d: %s", code, tu_slurp(err));
    const char *g = strstr(tu_slurp(GOLDEN "/golden.json"), "\"name\": \"seed_keras_b64\"");
    cr_assert_not_null(g);
    double want[3], want_acc[3];
    g = strstr(g, "\"epoch_loss\"");
    cr_assert_eq(sscanf(g, "\"epoch_loss\": [ %lf, %lf, %lf ], \"epoch_accuracy\": [ %lf, %lf, %lf",
                        &want[0], &want[1], &want[2], &want_acc[0], &want_acc[1], &want_acc[2]),
                 6);
    FILE *f = fopen(metrics, "r");
    cr_assert_not_null(f);
    for (int e = 0; e < 3; e++) {
        unsigned ep;
        double loss, acc;
        cr_assert_eq(fscanf(f, " {\"epoch\": %u, \"loss\": %lf, \"accuracy\": %lf%*[^}]", &ep,
                            &loss, &acc), 3);
        cr_assert_eq(fscanf(f, "}"), 0);
        cr_assert(fabs(loss - want[e]) < 1e-6, "epoch %d: loss %.9f, torch %.9f", e + 1, loss,
                  want[e]);
        cr_assert(fabs(acc - want_acc[e]) < 1e-9, "epoch %d: accuracy %.4f, torch %.4f", e + 1,
                  acc, want_acc[e]);
    }
    fclose(f);
}

/* --- ps-datagen -------------------------------------------------------------------------------- */

/* Counts of the data set it wrote: rows, positives, occurrences of ids 1 and 100; fails the test
 * on a malformed line (ids must be ascending, distinct and within 1..ids). */
static void scan_svm(const char *file, unsigned long ids, long *rows, long *pos, long *id1,
                     long *id100) {
    FILE *f = fopen(file, "r");
    cr_assert_not_null(f, "%s", file);
    char line[8192];
    while (fgets(line, sizeof(line), f)) {
        char *p = line, *end;
        long y = strtol(p, &end, 10);
        cr_assert(end != p && (y == 0 || y == 1), "%s: label in %s", file, line);
        (*rows)++, *pos += y;
        unsigned long prev = 0;
        for (p = end; *p == ' ';) {
            unsigned long id = strtoul(p + 1, &end, 10);
            cr_assert(end != p + 1 && strncmp(end, ":1", 2) == 0, "%s: %s", file, line);
            cr_assert(id >= 1 && id <= ids && id > prev, "%s: id %lu after %lu", file, id, prev);
            *id1 += id == 1, *id100 += id == 100, prev = id;
            p = end + 2;
        }
    }
    fclose(f);
}

Test(e2e, datagen_writes_a_reproducible_power_law_data_set) {
    char prefix[2][128], out[128], err[128], a[160], b[160];
    path(prefix[0], sizeof(prefix[0]), "one"), path(prefix[1], sizeof(prefix[1]), "two");
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    double bayes[2], auc = 0, prior = 0;
    for (int k = 0; k < 2; k++) {
        char *argv[] = {BIN("ps-datagen"), prefix[k], "--rows", "20000", "--ids", "5000",
                        "--per-row", "10", "--base-rate", "0.3", "--seed", "7", NULL};
        cr_assert_eq(tu_wait_exit(tu_spawn(argv, out, err), 30000), 0, "%s", tu_slurp(err));
        const char *line = strstr(tu_slurp(out), "datagen bayes_logloss=");
        cr_assert_not_null(line, "%s", tu_slurp(out));
        cr_assert_eq(sscanf(line, "datagen bayes_logloss=%lf bayes_auc=%lf base_rate_logloss=%lf",
                            &bayes[k], &auc, &prior), 3);
    }
    /* the same seed, the same bytes and scores */
    snprintf(a, sizeof(a), "%s.train.svm", prefix[0]);
    snprintf(b, sizeof(b), "%s.train.svm", prefix[1]);
    char *first = strdup(tu_slurp(a));
    cr_assert_str_eq(first, tu_slurp(b));
    free(first);
    cr_assert_eq(bayes[0], bayes[1]);
    /* what it promises: the split, the base rate, the power law, a real signal */
    long rows = 0, pos = 0, id1 = 0, id100 = 0, test_rows = 0, test_pos = 0;
    scan_svm(a, 5000, &rows, &pos, &id1, &id100);
    snprintf(b, sizeof(b), "%s.test.svm", prefix[0]);
    scan_svm(b, 5000, &test_rows, &test_pos, &id1, &id100);
    cr_assert_eq(rows, 16000);
    cr_assert_eq(test_rows, 4000);
    const double rate = (double)(pos + test_pos) / 20000.0;
    cr_assert(fabs(rate - 0.3) < 0.02, "base rate %.4f", rate);
    cr_assert_gt(id1, 10 * id100, "id 1: %ld rows, id 100: %ld", id1, id100);
    cr_assert(auc > 0.6 && auc < 1.0, "AUC %.4f", auc);
    cr_assert(bayes[0] < prior - 0.02, "Bayes logloss %.4f, base rate's %.4f", bayes[0], prior);
}

/* The Criteo form. Every line must be 40 tab-separated fields: label 0/1, I1..I13 empty or a
 * decimal integer (negative only in I2), C1..C26 empty or 8 lowercase hex digits. Counts rows,
 * positives, negative I2 values and empty fields. */
static void scan_tsv(const char *file, long *rows, long *pos, long *neg_i2, long *empty) {
    FILE *f = fopen(file, "r");
    cr_assert_not_null(f, "%s", file);
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        cr_assert(strchr(line, '\n') != NULL, "%s: line %ld too long", file, *rows + 1);
        line[strcspn(line, "\n")] = '\0';
        char *fields[41];
        int nf = 0;
        for (char *p = line; nf < 41; p++) {
            fields[nf++] = p;
            p = strchr(p, '\t');
            if (p == NULL) break;
            *p = '\0';
        }
        cr_assert_eq(nf, 40, "%s:%ld: %d fields", file, *rows + 1, nf);
        cr_assert(strcmp(fields[0], "0") == 0 || strcmp(fields[0], "1") == 0, "%s: label %s",
                  file, fields[0]);
        (*rows)++, *pos += fields[0][0] == '1';
        for (int c = 1; c < 40; c++) {
            const char *v = fields[c];
            if (*v == '\0') {
                (*empty)++;
                continue;
            }
            if (c <= 13) {
                char *end;
                long long x = strtoll(v, &end, 10);
                cr_assert(*end == '\0', "%s:%ld: I%d = \"%s\"", file, *rows, c, v);
                cr_assert(x >= 0 || c == 2, "%s:%ld: I%d = %lld", file, *rows, c, x);
                *neg_i2 += x < 0;
            } else {
                cr_assert_eq(strlen(v), 8, "%s:%ld: C%d = \"%s\"", file, *rows, c - 13, v);
                cr_assert_eq(strspn(v, "0123456789abcdef"), 8, "%s:%ld: C%d = \"%s\"", file,
                             *rows, c - 13, v);
            }
        }
    }
    fclose(f);
}

/* 64-bit FNV-1a of a file's bytes, as tests/ref/datagen_criteo.py computes it. */
static uint64_t fnv1a64_file(const char *file) {
    FILE *f = fopen(file, "rb");
    cr_assert_not_null(f, "%s", file);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int ch; (ch = fgetc(f)) != EOF;) h = (h ^ (uint64_t)ch) * 0x100000001b3ULL;
    fclose(f);
    return h;
}

static double golden_num(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(cJSON_IsNumber(it), "golden: %s", key);
    return it->valuedouble;
}

/* ps-datagen with the golden's arguments (and this seed) writes DIR/NAME.{train,test}.tsv;
 * returns its machine line's three scores. */
static void run_criteo(const cJSON *args, const char *name, long seed, double score[3]) {
    char prefix[128], out[128], err[128], a[5][32];
    path(prefix, sizeof(prefix), name);
    path(out, sizeof(out), "criteo.out"), path(err, sizeof(err), "criteo.err");
    snprintf(a[0], sizeof(a[0]), "%.0f", golden_num(args, "rows"));
    snprintf(a[1], sizeof(a[1]), "%.0f", golden_num(args, "ids"));
    snprintf(a[2], sizeof(a[2]), "%.17g", golden_num(args, "base_rate"));
    snprintf(a[3], sizeof(a[3]), "%.17g", golden_num(args, "holdout"));
    snprintf(a[4], sizeof(a[4]), "%ld", seed);
    char alpha[32], signal[32];
    snprintf(alpha, sizeof(alpha), "%.17g", golden_num(args, "alpha"));
    snprintf(signal, sizeof(signal), "%.17g", golden_num(args, "signal"));
    char *argv[] = {BIN("ps-datagen"), prefix, "--format", "criteo", "--rows", a[0], "--ids",
                    a[1], "--base-rate", a[2], "--holdout", a[3], "--seed", a[4], "--alpha",
                    alpha, "--signal", signal, NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(argv, out, err), 30000), 0, "%s", tu_slurp(err));
    const char *line = strstr(tu_slurp(out), "datagen bayes_logloss=");
    cr_assert_not_null(line, "%s", tu_slurp(out));
    cr_assert_eq(sscanf(line, "datagen bayes_logloss=%lf bayes_auc=%lf base_rate_logloss=%lf "
                              "form=criteo",
                        &score[0], &score[1], &score[2]), 3, "%s", line);
}

/* The Criteo form against tests/ref/datagen_criteo.py, a second implementation of its rules:
 * the same bytes (FNV-1a of each file, first lines) and the same printed Bayes-optimal scores;
 * and what a reader relies on: the fields, the split, a real signal, the same seed the same
 * bytes and another seed other bytes. */
Test(e2e, datagen_criteo_form_matches_an_independent_implementation) {
    cJSON *golden = cJSON_Parse(tu_slurp(PS_SOURCE_DIR "/tests/ref/datagen_criteo_golden.json"));
    cr_assert_not_null(golden);
    const cJSON *args = cJSON_GetObjectItem(golden, "args");
    const long seed = (long)golden_num(args, "seed");
    double score[3], again[3], other[3];
    run_criteo(args, "c1", seed, score);
    run_criteo(args, "c2", seed, again);
    run_criteo(args, "c3", seed + 1, other);
    cr_assert(fabs(score[0] - golden_num(golden, "bayes_logloss")) < 1e-6, "logloss %.6f", score[0]);
    cr_assert(fabs(score[1] - golden_num(golden, "bayes_auc")) < 1e-6, "AUC %.6f", score[1]);
    cr_assert(fabs(score[2] - golden_num(golden, "base_rate_logloss")) < 1e-6, "%.6f", score[2]);
    cr_assert(again[0] == score[0] && again[1] == score[1], "same seed, other scores");
    cr_assert(other[0] != score[0], "another seed, the same logloss %.6f", other[0]);
    cr_assert(score[0] < score[2] - 0.05 && score[1] > 0.7, "no signal: %.4f %.4f", score[0],
              score[1]);

    const char *parts[] = {"train", "test"};
    long neg_i2 = 0, empty = 0, rows_all = 0;
    for (int k = 0; k < 2; k++) {
        const cJSON *g = cJSON_GetObjectItem(cJSON_GetObjectItem(golden, "files"), parts[k]);
        char file[160], file2[160], file3[160], want[32], first[1024];
        snprintf(file, sizeof(file), "%s/c1.%s.tsv", dir, parts[k]);
        snprintf(file2, sizeof(file2), "%s/c2.%s.tsv", dir, parts[k]);
        snprintf(file3, sizeof(file3), "%s/c3.%s.tsv", dir, parts[k]);
        const uint64_t h = fnv1a64_file(file);
        snprintf(want, sizeof(want), "%016llx", (unsigned long long)h);
        cr_assert_str_eq(want, cJSON_GetObjectItem(g, "fnv1a64")->valuestring, "%s", file);
        cr_assert_eq(h, fnv1a64_file(file2), "same seed, other bytes: %s", file2);
        cr_assert_neq(h, fnv1a64_file(file3), "another seed, the same bytes: %s", file3);
        FILE *f = fopen(file, "r");
        cr_assert(f != NULL && fgets(first, sizeof(first), f) != NULL);
        fclose(f);
        cr_assert_str_eq(first, cJSON_GetObjectItem(g, "first_line")->valuestring);
        long rows = 0, pos = 0;
        scan_tsv(file, &rows, &pos, &neg_i2, &empty);
        cr_assert_eq(rows, (long)golden_num(g, "rows"));
        cr_assert_eq(pos, (long)golden_num(g, "positives"));
        rows_all += rows;
    }
    cr_assert_eq(rows_all, (long)golden_num(args, "rows"));
    cr_assert_gt(neg_i2, 0, "no negative I2");
    cr_assert(empty > rows_all && empty < rows_all * 39 / 4, "%ld empty fields", empty);
    cJSON_Delete(golden);
}

/* --format both writes the libsvm form exactly as --format libsvm does, then the Criteo form,
 * each with its machine line; an unknown form, or no held-out row, is a usage error. */
Test(e2e, datagen_both_forms_and_a_bad_format) {
    char p1[128], p2[128], out[128], err[128], a[160], b[160];
    path(p1, sizeof(p1), "b1"), path(p2, sizeof(p2), "b2");
    path(out, sizeof(out), "both.out"), path(err, sizeof(err), "both.err");
    char *both[] = {BIN("ps-datagen"), p1, "--format", "both", "--rows", "500", "--ids", "300",
                    "--per-row", "5", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(both, out, err), 30000), 0, "%s", tu_slurp(err));
    const char *text = tu_slurp(out);
    const char *l1 = strstr(text, "datagen bayes_logloss="), *l2 = strstr(text, " form=criteo\n");
    cr_assert(l1 && strstr(l1, " form=libsvm\n") && l2 && l2 > l1, "%s", text);
    char *svm[] = {BIN("ps-datagen"), p2, "--rows", "500", "--ids", "300", "--per-row", "5", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(svm, out, err), 30000), 0, "%s", tu_slurp(err));
    for (int k = 0; k < 2; k++) {
        snprintf(a, sizeof(a), "%s.%s.svm", p1, k ? "test" : "train");
        snprintf(b, sizeof(b), "%s.%s.svm", p2, k ? "test" : "train");
        cr_assert_eq(fnv1a64_file(a), fnv1a64_file(b), "%s differs from %s", a, b);
        snprintf(a, sizeof(a), "%s.%s.tsv", p1, k ? "test" : "train");
        cr_assert_eq(access(a, R_OK), 0, "%s", a);
    }
    char *bad[] = {BIN("ps-datagen"), p1, "--format", "parquet", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(bad, out, err), 30000), 2);
    cr_assert(strstr(tu_slurp(err), "--format: \"parquet\" is not libsvm, criteo or both"),
              "%s", tu_slurp(err));
    char *tiny[] = {BIN("ps-datagen"), p1, "--format", "criteo", "--rows", "4", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(tiny, out, err), 30000), 2);
    cr_assert(strstr(tu_slurp(err), "--rows * --holdout must leave a held-out row"), "%s",
              tu_slurp(err));
}

/* The seed job with cluster.tls (tests/ref/tls/, test-only keys) through ps-launch: the servers
 * and workers speak TLS only, and the job trains. A ps-worker whose CA did not sign the server's
 * certificate exits 1 with OpenSSL's reason. */
#define TLS_REF PS_SOURCE_DIR "/tests/ref/tls/"
#define TLS_SET(ca)                                                                                \
    "cluster.tls={\"cert\": \"" TLS_REF "server.pem\", \"key\": \"" TLS_REF "server.key\","       \
    " \"ca\": \"" TLS_REF ca "\"}"
Test(e2e, seed_job_over_tls) {
    char out[128], err[128];
    path(out, sizeof(out), "tls.out"), path(err, sizeof(err), "tls.err");
    char *argv[] = {BIN("ps-launch"), SEED_JOB, "--set", "fit.epochs=2", "--set", TLS_SET("ca.pem"),
                    NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 60000);
    cr_assert_eq(code, 0, "exit %d\nstdout:\n%s\nstderr:\n%s", code, tu_slurp(out), tu_slurp(err));
    cr_assert(strstr(tu_slurp(out), "Trained 2 epochs: 2000 samples"), "%s", tu_slurp(out));

    ps_job_config job;
    ps_error e = {0};
    const char *sets[] = {TLS_SET("ca.pem")};
    cr_assert_eq(ps_config_load(SEED_JOB, sets, 1, &job, &e), PS_OK, "%s", e.msg);
    test_server *srv = tu_server_start(&job, 0);
    char servers[96];
    snprintf(servers, sizeof(servers), "cluster.servers=[\"%s\"]", tu_server_addr(srv));
    char *worker[] = {BIN("ps-worker"), "--config", SEED_JOB, "--rank", "0", "--set", servers,
                      "--set", TLS_SET("other_ca.pem"), NULL};
    code = tu_wait_exit(tu_spawn(worker, out, err), 30000);
    tu_server_free(srv);
    const char *text = tu_slurp(err);
    cr_assert_eq(code, 1, "exit %d: %s", code, text);
    cr_assert(strstr(text, "TLS handshake with 127.0.0.1:") &&
              strstr(text, "failed: certificate verify failed"), "%s", text);
}

/* Descriptors: ps-server raises its soft limit to the hard one (a soft 40 would refuse the 41st
 * peer), and where the hard limit itself is low it says so at start and logs each refusal
 * instead of closing new peers silently. */
static int open_peers(int port, int n, int *fds) {
    int ok = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = tu_connect(port);
        ok += fds[i] >= 0 && tu_hello(fds[i], &(ps_job_config){.job_id = "keras-seed"}) ? 1 : 0;
    }
    return ok;
}

Test(e2e, the_server_takes_the_descriptors_it_may_and_says_when_it_runs_out) {
    char out[128], err[128];
    path(out, sizeof(out), "out"), path(err, sizeof(err), "err");
    enum { PEERS = 60 };
    int fds[PEERS];
    /* soft 40, hard unlimited by the test: raised, every peer served */
    char *soft[] = {"/bin/sh", "-c", "ulimit -S -n 40; exec \"$0\" --config \"$1\" --shard 0 "
                    "--listen 127.0.0.1:0", BIN("ps-server"), SEED_JOB, NULL};
    pid_t pid = tu_spawn(soft, out, err);
    int port = server_port(out);
    cr_assert_eq(open_peers(port, PEERS, fds), PEERS, "%s", tu_slurp(err));
    cr_assert_null(strstr(tu_slurp(err), "file descriptors"), "%s", tu_slurp(err));
    for (int i = 0; i < PEERS; i++) close(fds[i]);
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 10000), 0);
    /* hard 40: a warning at start, and the refusals in the log */
    char *hard[] = {"/bin/sh", "-c", "ulimit -n 40; exec \"$0\" --config \"$1\" --shard 0 "
                    "--listen 127.0.0.1:0", BIN("ps-server"), SEED_JOB, NULL};
    pid = tu_spawn(hard, out, err);
    port = server_port(out);
    cr_assert(strstr(tu_slurp(err), "40 file descriptors (ulimit -n) for 4096"), "%s",
              tu_slurp(err));
    int served = open_peers(port, PEERS, fds);
    cr_assert_lt(served, PEERS);
    for (int i = 0; i < PEERS; i++)
        if (fds[i] >= 0) close(fds[i]);
    nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    cr_assert(strstr(tu_slurp(err), "use the descriptors this process may open (40, ulimit -n)"),
              "%s", tu_slurp(err));
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 10000), 0);
}
