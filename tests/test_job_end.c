/* test_job_end.c - a job that ends (server.h end_with_job, job_end.h): real shards and workers
 * on loopback. The servers stop on their own once every worker rank has said it finished (in
 * async and sync jobs); with fit.export_to shard 0 writes the weights first, the same files that
 * ps-export writes from servers that keep running; a worker that never finishes fails the job at
 * cluster.job_deadline_s, naming its rank (ps-server exits 1); EndJob is refused from workers and
 * by servers that serve until stopped. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "export.h"
#include "job_end.h"
#include "testutil.h"
#include "train.h"

static char dir[64];

static void setup(void) { tu_tmpdir(dir, "ps_job_end"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(job_end, .init = setup, .fini = teardown, .timeout = 60);

/* --- in-process shards that end with their job -------------------------------------------------- */

typedef struct {
    ps_server *srv;
    pthread_t thread;
    ps_status st;
    ps_error err;
} ending_server;

static void *serve(void *arg) {
    ending_server *s = arg;
    s->st = ps_server_run(s->srv, &s->err);
    return NULL;
}

/* Shard `shard` of job on 127.0.0.1:0; je (may be NULL) runs the export when all finished. */
static void start_ending(ending_server *s, const ps_job_config *job, uint32_t shard,
                         ps_job_end *je) {
    ps_server_options opt = {.job = job, .shard = shard, .listen = "127.0.0.1:0",
                             .end_with_job = true,
                             .hold_for_end = job->fit.export_to[0] != '\0',
                             .on_workers_done = je ? ps_job_end_start : NULL,
                             .on_deadline = je ? ps_job_end_deadline : NULL, .ud = je,
                             .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    *s = (ending_server){0};
    cr_assert_eq(ps_server_create(&opt, &s->srv, &err), PS_OK, "%s", err.msg);
}

static void run_ending(ending_server *s) {
    cr_assert_eq(pthread_create(&s->thread, NULL, serve, s), 0);
}

/* Joins the server's thread: it returns only when the server stopped by itself. */
static ps_status join_ending(ending_server *s, ps_error *err) {
    pthread_join(s->thread, NULL);
    ps_server_destroy(s->srv);
    *err = s->err;
    return s->st;
}

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

/* Trains rank on the calling thread. */
static void train_rank(ps_job_config *job, uint32_t rank) {
    worker_run w = {.job = job, .rank = rank};
    run_worker(&w);
    cr_assert_eq(w.st, PS_OK, "worker %u: %s", rank, w.err.msg);
}

#define SEED_JOB \
    "{\"job_id\": \"end\", \"seed\": 42, \"cluster\": {\"servers\": %d, \"workers\": 2," \
    " \"consistency\": \"%s\"%s}," \
    " \"model\": {\"input_dim\": 20, \"layers\": [{\"units\": 16, \"activation\": \"relu\"}," \
    " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"}," \
    " \"optimizer\": {\"name\": \"adagrad\", \"form\": \"keras\", \"learning_rate\": 0.01}," \
    " \"fit\": {\"epochs\": 3, \"batch_size\": 32, \"verbose\": 0%s%s%s}," \
    " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 400, \"cols\": 20}}}"

/* The job's text: servers shards, more cluster keys (", \"k\": v" or ""), maybe export_to. */
static void job_text(char *json, size_t cap, int servers, const char *mode, const char *cluster,
                     const char *export_to) {
    snprintf(json, cap, SEED_JOB, servers, mode, cluster,
             export_to ? ", \"export_to\": \"" : "", export_to ? export_to : "",
             export_to ? "\"" : "");
}

static void make_job(ps_job_config *job, const char *mode, const char *export_to) {
    char json[2048];
    job_text(json, sizeof(json), 2, mode, "", export_to);
    tu_job(json, job);
}

/* A whole file (binary); *n bytes. */
static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* The model's files (as the manifest names them) are byte for byte those of the other directory. */
static void same_npy_files(const char *a, const char *b) {
    static const char *const files[] = {
        "dense/kernel.npy",   "dense/kernel.accumulators.npy",   "dense/bias.npy",
        "dense/bias.accumulators.npy",   "dense_1/kernel.npy", "dense_1/kernel.accumulators.npy",
        "dense_1/bias.npy",   "dense_1/bias.accumulators.npy"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char pa[256], pb[256];
        snprintf(pa, sizeof(pa), "%s/%s", a, files[i]);
        snprintf(pb, sizeof(pb), "%s/%s", b, files[i]);
        size_t na, nb;
        char *xa = read_all(pa, &na), *xb = read_all(pb, &nb);
        cr_assert(na > 128 && na == nb && memcmp(xa, xb, na) == 0, "%s differs from %s", pa, pb);
        free(xa), free(xb);
    }
}

/* The export of an async job's weights after ranks 0..ranks-1 trained one after the other, from
 * servers that serve until stopped (ps_export through an admin client), into out. */
static void export_reference(uint32_t ranks, const char *out) {
    ps_job_config ref;
    make_job(&ref, "async", NULL);
    test_server *t[2] = {tu_server_start(&ref, 0), tu_server_start(&ref, 1)};
    tu_job_use(&ref, t, 2);
    for (uint32_t r = 0; r < ranks; r++) train_rank(&ref, r);
    ps_client *c = tu_admin_client(&ref);
    ps_error err = {0};
    cr_assert_eq(ps_export(c, &ref, out, NULL, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(c);
    tu_server_free(t[0]);
    tu_server_free(t[1]);
}

/* Both shards of job, ending with it, serving on threads; shard 0 exports (the ps_job_end
 * returned). job's servers become their addresses. */
static ps_job_end *run_two_ending(ps_job_config *job, ending_server s[2]) {
    ps_job_end *je = ps_job_end_new(job, stdout);
    cr_assert_not_null(je);
    start_ending(&s[0], job, 0, je);
    start_ending(&s[1], job, 1, NULL);
    for (uint32_t i = 0; i < 2; i++)
        snprintf(job->servers[i], PS_ADDR_MAX, "127.0.0.1:%d", ps_server_port(s[i].srv));
    run_ending(&s[0]);
    run_ending(&s[1]);
    return je;
}

/* Two async workers, one after the other (deterministic): the shards end by themselves once
 * both finished, shard 0 having exported. The files are those ps-export writes from shards
 * that keep serving, after the same training. */
Test(job_end, shards_export_then_exit_when_every_worker_finished) {
    char ended[128], reference[128];
    snprintf(ended, sizeof(ended), "%s/ended", dir);
    snprintf(reference, sizeof(reference), "%s/reference", dir);

    ps_job_config job;
    make_job(&job, "async", ended);
    ending_server s[2];
    ps_job_end *je = run_two_ending(&job, s);
    train_rank(&job, 0);
    train_rank(&job, 1);
    ps_error err = {0};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(join_ending(&s[i], &err), PS_OK, "shard %d: %s", i, err.msg);
    cr_assert_eq(ps_job_end_join(je, &err), PS_OK, "export: %s", err.msg);
    char manifest[160];
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", ended);
    cr_assert_eq(access(manifest, R_OK), 0, "no %s", manifest);

    /* the reference: servers that serve until stopped, ps_export through an admin client */
    export_reference(2, reference);
    same_npy_files(ended, reference);
}

/* A sync job's workers leave the barrier with finished: that is also the job's end. */
Test(job_end, a_sync_job_ends_when_its_workers_do) {
    ps_job_config job;
    make_job(&job, "sync", NULL);
    ending_server s[2];
    for (uint32_t i = 0; i < 2; i++) {
        start_ending(&s[i], &job, i, NULL);
        snprintf(job.servers[i], PS_ADDR_MAX, "127.0.0.1:%d", ps_server_port(s[i].srv));
    }
    run_ending(&s[0]);
    run_ending(&s[1]);
    worker_run w[2] = {{.job = &job, .rank = 0}, {.job = &job, .rank = 1}};
    pthread_t th[2];
    for (int r = 0; r < 2; r++) cr_assert_eq(pthread_create(&th[r], NULL, run_worker, &w[r]), 0);
    for (int r = 0; r < 2; r++) {
        pthread_join(th[r], NULL);
        cr_assert_eq(w[r].st, PS_OK, "worker %d: %s", r, w[r].err.msg);
    }
    ps_error err = {0};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(join_ending(&s[i], &err), PS_OK, "shard %d: %s", i, err.msg);
}

/* Rank 1 never comes: at cluster.job_deadline_s the shard gives up and says who is missing. */
Test(job_end, the_deadline_names_the_ranks_that_never_finished) {
    ps_job_config job;
    make_job(&job, "async", NULL);
    job.num_servers = 1, job.job_deadline_s = 1;
    ending_server s;
    start_ending(&s, &job, 0, NULL);
    snprintf(job.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", ps_server_port(s.srv));
    run_ending(&s);
    train_rank(&job, 0);
    ps_error err = {0};
    cr_assert_eq(join_ending(&s, &err), PS_TIMEOUT);
    cr_assert_str_eq(err.msg, "cluster.job_deadline_s (1 s) passed: worker rank 1 never "
                              "finished (1 of 2 did)");
}

/* Rank 1 never comes, but the job exports: at the deadline shard 0 writes the weights rank 0
 * trained (the files ps-export writes after the same training, from shards that keep serving),
 * then ends the job with the deadline's verdict: both shards fail naming rank 1. */
Test(job_end, the_deadline_exports_what_was_trained_then_fails_naming_the_ranks) {
    char ended[128], reference[128];
    snprintf(ended, sizeof(ended), "%s/ended", dir);
    snprintf(reference, sizeof(reference), "%s/reference", dir);
    ps_job_config job;
    make_job(&job, "async", ended);
    job.job_deadline_s = 1;
    ending_server s[2];
    ps_job_end *je = run_two_ending(&job, s);
    train_rank(&job, 0);
    ps_error err = {0};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(join_ending(&s[i], &err), PS_TIMEOUT, "shard %d: %s", i, err.msg);
        cr_assert_str_eq(err.msg, "cluster.job_deadline_s (1 s) passed: worker rank 1 never "
                                  "finished (1 of 2 did)", "shard %d", i);
    }
    cr_assert_eq(ps_job_end_join(je, &err), PS_OK, "export: %s", err.msg);

    export_reference(1, reference);
    same_npy_files(ended, reference);
}

/* An EndJob with a failure: a shard whose own deadline has not passed fails with the sender's
 * reason; one without (an operator's EndJob) ends well. */
Test(job_end, an_end_job_with_a_failure_fails_the_shard) {
    ps_job_config job;
    make_job(&job, "async", NULL);
    job.num_servers = 1;
    ending_server s;
    start_ending(&s, &job, 0, NULL);
    snprintf(job.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", ps_server_port(s.srv));
    run_ending(&s);
    ps_error err = {0};
    ps_client *admin = tu_admin_client(&job);
    cr_assert_eq(ps_client_fail_job(admin, "ranks 3, 4 lost", &err), PS_OK, "%s", err.msg);
    ps_client_destroy(admin);
    cr_assert_eq(join_ending(&s, &err), PS_TIMEOUT);
    cr_assert_str_eq(err.msg, "ranks 3, 4 lost");
}

/* EndJob: only from an admin peer, and only to a server that ends with its job. */
Test(job_end, end_job_is_refused_from_workers_and_by_servers_that_serve_until_stopped) {
    ps_job_config job;
    make_job(&job, "async", NULL);
    job.num_servers = 1;
    test_server *t = tu_server_start(&job, 0); /* serves until stopped */
    tu_job_use(&job, &t, 1);
    ps_error err = {0};
    ps_client *admin = tu_admin_client(&job);
    cr_assert_eq(ps_client_end_job(admin, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "EndJob: this server serves until it is stopped"), "%s", err.msg);
    ps_client_destroy(admin);
    tu_server_free(t);

    ending_server s;
    start_ending(&s, &job, 0, NULL);
    snprintf(job.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", ps_server_port(s.srv));
    run_ending(&s);
    ps_client *worker = tu_client(&job, 1);
    cr_assert_eq(ps_client_end_job(worker, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "EndJob from worker rank 1: only an admin peer ends the job"), "%s",
              err.msg);
    ps_client_destroy(worker);
    admin = tu_admin_client(&job); /* an operator ends the job early */
    cr_assert_eq(ps_client_end_job(admin, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(admin);
    cr_assert_eq(join_ending(&s, &err), PS_OK, "%s", err.msg);
}

Test(job_end, job_deadline_s_is_checked) {
    ps_job_config job;
    ps_error err = {0};
    cr_assert_eq(ps_config_parse("{\"cluster\": {\"job_deadline_s\": -1}}", "j.json", NULL, 0,
                                 &job, &err), PS_CONFIG);
    cr_assert(strstr(err.msg, "j.json") && strstr(err.msg, "cluster.job_deadline_s"), "%s",
              err.msg);
    cr_assert_eq(ps_config_parse("{\"cluster\": {\"job_deadline_s\": 90}}", "j.json", NULL, 0,
                                 &job, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(job.job_deadline_s, 90);
}

/* --- ps-server, the process: its exit code ------------------------------------------------------ */

/* Starts ps-server for jobfile's shard 0 on port (0: a free one); the port it printed. */
/* flag: one more option, or NULL. */
static int spawn_server_on(const char *jobfile, int port, const char *flag, const char *out,
                           const char *errf, int *pid) {
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    char *argv[] = {PS_BINARY_DIR "/ps-server", "--config", (char *)jobfile, "--shard", "0",
                    "--listen", listen, (char *)flag, NULL};
    *pid = tu_spawn(argv, out, errf);
    cr_assert(*pid > 0);
    for (int i = 0; i < 500; i++) { /* at most 5 s for "listening on 127.0.0.1:PORT" */
        const char *at = strstr(tu_slurp(out), "listening on 127.0.0.1:");
        if (at != NULL && strchr(at, '\n') != NULL) return atoi(at + 23);
        usleep(10000);
    }
    cr_assert_fail("ps-server did not listen: %s", tu_slurp(errf));
    return 0;
}

static int spawn_server(const char *jobfile, const char *out, const char *errf, int *pid) {
    return spawn_server_on(jobfile, 0, NULL, out, errf, pid);
}

/* ps-server, shard 0 of 1 with a 2 s deadline (and export_to, may be NULL), after `trained`
 * ranks of 2 trained: its exit code, and want_err in its stderr. */
/* Writes dir/job.json for one shard, a 2 s deadline and export_to (may be NULL) into jobfile
 * (128), loads it into job; the port the shard must listen on (0: any). */
static int one_shard_job(const char *export_to, char *jobfile, ps_job_config *job) {
    char json[2048];
    snprintf(jobfile, 128, "%s/job.json", dir);
    /* the exporter dials shard 0 at its entry: a list of one address, not a count */
    const int fixed = export_to ? tu_free_port(AF_INET) : 0;
    char servers[32];
    snprintf(servers, sizeof(servers), "[\"127.0.0.1:%d\"]", fixed);
    char json_export[2048];
    job_text(json, sizeof(json), 1, "async", ", \"job_deadline_s\": 2", export_to);
    if (export_to) {
        char *at = strstr(json, "\"servers\": 1,");
        cr_assert_not_null(at);
        snprintf(json_export, sizeof(json_export), "%.*s\"servers\": %s,%s", (int)(at - json),
                 json, servers, at + strlen("\"servers\": 1,"));
        snprintf(json, sizeof(json), "%s", json_export);
    }
    tu_write_file(jobfile, json, 0644);
    ps_error err = {0};
    cr_assert_eq(ps_config_load(jobfile, NULL, 0, job, &err), PS_OK, "%s", err.msg);
    return fixed;
}

static void server_process(int trained, const char *export_to, int want_code,
                           const char *want_err) {
    char jobfile[128], out[128], errf[128];
    snprintf(out, sizeof(out), "%s/server.out", dir);
    snprintf(errf, sizeof(errf), "%s/server.err", dir);
    ps_job_config job;
    const int fixed = one_shard_job(export_to, jobfile, &job);
    int pid;
    int port = spawn_server_on(jobfile, fixed, NULL, out, errf, &pid);
    snprintf(job.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", port);
    for (int r = 0; r < trained; r++) train_rank(&job, (uint32_t)r);
    cr_assert_eq(tu_wait_exit(pid, 20000), want_code, "%s", tu_slurp(errf));
    if (want_err) cr_assert(strstr(tu_slurp(errf), want_err), "%s", tu_slurp(errf));
}

Test(job_end, ps_server_exits_0_when_the_job_ends) { server_process(2, NULL, 0, NULL); }

Test(job_end, ps_server_exits_1_at_the_deadline_naming_the_missing_rank) {
    server_process(1, NULL, 1, "ps-server: cluster.job_deadline_s (2 s) passed: worker rank 1 "
                               "never finished (1 of 2 did)");
}

/* With fit.export_to the deadline writes the weights trained so far first: the manifest is
 * there, stdout says so, and the exit is 1 naming the missing rank all the same. */
Test(job_end, ps_server_exports_at_the_deadline_then_exits_1) {
    char exported[128], manifest[160], out[128];
    snprintf(exported, sizeof(exported), "%s/exported", dir);
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", exported);
    snprintf(out, sizeof(out), "%s/server.out", dir);
    server_process(1, exported, 1, "ps-server: cluster.job_deadline_s (2 s) passed: worker rank "
                                   "1 never finished (1 of 2 did)");
    cr_assert_eq(access(manifest, R_OK), 0, "no %s", manifest);
    cr_assert(strstr(tu_slurp(out), "Exported 4 tables"), "%s", tu_slurp(out));
}

/* --serve-after-job (a StatefulSet's servers): the job ends as usual - the export is written -
 * but the process goes on serving its rows until SIGTERM, then exits 0. */
Test(job_end, ps_server_serve_after_job_exports_then_serves_until_stopped) {
    char jobfile[128], out[128], errf[128], exported[128], manifest[160];
    snprintf(out, sizeof(out), "%s/server.out", dir);
    snprintf(errf, sizeof(errf), "%s/server.err", dir);
    snprintf(exported, sizeof(exported), "%s/exported", dir);
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", exported);
    ps_job_config job;
    const int fixed = one_shard_job(exported, jobfile, &job);
    int pid;
    int port = spawn_server_on(jobfile, fixed, "--serve-after-job", out, errf, &pid);
    snprintf(job.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", port);
    for (uint32_t r = 0; r < 2; r++) train_rank(&job, r);
    for (int i = 0; i < 1000 && access(manifest, R_OK) != 0; i++) usleep(10000);
    cr_assert_eq(access(manifest, R_OK), 0, "no %s: %s", manifest, tu_slurp(errf));
    /* past the 2 s deadline and the end grace: still serving the trained rows */
    usleep(2500 * 1000);
    cr_assert_eq(kill(pid, 0), 0, "the server exited: %s", tu_slurp(errf));
    ps_client *c = tu_admin_client(&job);
    uint64_t rows = 0, bytes = 0;
    ps_error err = {0};
    cr_assert_eq(ps_client_table_stats(c, ps_client_table(c, "dense/kernel")->id, &rows, &bytes,
                                       &err), PS_OK, "%s", err.msg);
    cr_assert_eq(rows, 20, "the first kernel's 20 rows: %llu", (unsigned long long)rows);
    ps_client_destroy(c);
    cr_assert(strstr(tu_slurp(errf), "the job is over; serving until stopped"), "%s",
              tu_slurp(errf));
    cr_assert_eq(kill(pid, SIGTERM), 0);
    cr_assert_eq(tu_wait_exit(pid, 10000), 0, "%s", tu_slurp(errf));
}

Test(job_end, ps_server_refuses_until_stopped_with_serve_after_job) {
    char out[128], errf[128];
    snprintf(out, sizeof(out), "%s/server.out", dir);
    snprintf(errf, sizeof(errf), "%s/server.err", dir);
    char *argv[] = {PS_BINARY_DIR "/ps-server", "--config", PS_SOURCE_DIR "/examples/keras_seed.json",
                    "--shard", "0", "--until-stopped", "--serve-after-job", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(argv, out, errf), 10000), 2, "%s", tu_slurp(errf));
    cr_assert(strstr(tu_slurp(errf), "--until-stopped and --serve-after-job exclude each other"),
              "%s", tu_slurp(errf));
}

/* --- the job's epoch line on shard 0 ------------------------------------------------------------ */

/* Sums, not means of means: rank 0 has 3 samples (loss 1.5, 2 right), rank 1 has 1 (loss 0.9, 1
 * right): loss 2.4 / 4 = 0.6000 (the mean of the means would be 0.7), accuracy 3 / 4 = 0.7500
 * (not 0.8333); validation 2 samples (loss 1.0, 2 right) and 6 (loss 9.0, 1 right): val_loss
 * 10 / 8 = 1.2500 (not 2.0), val_accuracy 3 / 8 = 0.3750 (not 0.5833). No AUC: it does not add
 * up (README, Validation metrics). Epoch 2 complete before epoch 1 waits for it; a rank's second report of an epoch
 * and an epoch past fit.epochs are ignored. */
Test(job_end, the_epoch_line_sums_every_workers_figures) {
    ps_job_config job;
    make_job(&job, "async", NULL);
    job.fit.epochs = 2, job.fit.verbose = 2;
    char path[128];
    snprintf(path, sizeof(path), "%s/lines", dir);
    FILE *out = fopen(path, "w");
    cr_assert_not_null(out);
    ps_job_end *je = ps_job_end_new(&job, out);
    const ps_EpochStats r0e1 = {.epoch = 1, .steps = 2, .samples = 3, .loss_sum = 1.5,
                                .correct = 2, .seconds = 0.5, .has_val = true,
                                .val_samples = 2, .val_loss_sum = 1.0, .val_correct = 2};
    const ps_EpochStats r1e1 = {.epoch = 1, .steps = 1, .samples = 1, .loss_sum = 0.9,
                                .correct = 1, .seconds = 0.25, .has_val = true,
                                .val_samples = 6, .val_loss_sum = 9.0, .val_correct = 1};
    const ps_EpochStats e2 = {.epoch = 2, .steps = 1, .samples = 2, .loss_sum = 0.2,
                              .correct = 2, .seconds = 0.1};
    const ps_EpochStats e3 = {.epoch = 3, .steps = 1, .samples = 2, .loss_sum = 0.2};
    ps_job_end_epoch(je, 0, &r0e1);
    ps_job_end_epoch(je, 0, &r1e1); /* rank 0 again: ignored */
    ps_job_end_epoch(je, 0, &e2);
    ps_job_end_epoch(je, 1, &e2);
    ps_job_end_epoch(je, 1, &e3);
    fflush(out);
    cr_assert_str_eq(tu_slurp(path), "", "printed before epoch 1 was complete");
    ps_job_end_epoch(je, 1, &r1e1);
    fclose(out);
    cr_assert_eq(ps_job_end_join(je, NULL), PS_OK);
    const char *text = tu_slurp(path);
    const char *l1 = strstr(text, "Epoch 1/2\n3/3 ["), *l2 = strstr(text, "Epoch 2/2\n2/2 [");
    cr_assert(l1 && l2 && l1 < l2, "%s", text);
    cr_assert(strstr(l1, "loss: 0.6000 - accuracy: 0.7500 - val_loss: 1.2500 - "
                         "val_accuracy: 0.3750\n") < l2, "%s", text);
    cr_assert(strstr(l2, "loss: 0.1000 - accuracy: 1.0000\n"), "%s", text);
    cr_assert_null(strstr(text, "auc"), "%s", text);
    cr_assert_null(strstr(text, "Epoch 3"), "%s", text);
}

/* --- a signal while the job is ending -------------------------------------------------------- */

/* Every worker finished, but a peer (an admin client here) keeps its connection: the shard waits
 * up to its grace for peers to hang up. A SIGTERM then ends the grace early; more SIGTERMs, one
 * every 0.1 ms until the process is gone, land while it closes its handles, frees its tables
 * and exits (where libuv's handlers, once closed, put back the default action: it died of them).
 * It exits as documented, 0 for a clean stop, never by a signal. */
Test(job_end, sigterms_while_the_job_ends_are_a_clean_stop) {
    char jobfile[128], out[128], errf[128], json[2048];
    snprintf(jobfile, sizeof(jobfile), "%s/job.json", dir);
    snprintf(out, sizeof(out), "%s/server.out", dir);
    snprintf(errf, sizeof(errf), "%s/server.err", dir);
    job_text(json, sizeof(json), 1, "async", "", NULL);
    tu_write_file(jobfile, json, 0644);
    ps_job_config job;
    ps_error err = {0};
    cr_assert_eq(ps_config_load(jobfile, NULL, 0, &job, &err), PS_OK, "%s", err.msg);
    int pid;
    int port = spawn_server(jobfile, out, errf, &pid);
    snprintf(job.servers[0], PS_ADDR_MAX, "127.0.0.1:%d", port);
    ps_client *held = tu_admin_client(&job);
    train_rank(&job, 0);
    train_rank(&job, 1);
    bool ending = false;
    for (int i = 0; i < 300 && !ending; i++) { /* at most 3 s for the server to say so */
        ending = strstr(tu_slurp(errf), "every worker finished: the job is over") != NULL;
        if (!ending) usleep(10000);
    }
    cr_assert(ending, "%s", tu_slurp(errf));
    int status = 0;
    const bool exited = tu_sigterm_until_exit(pid, &status);
    ps_client_destroy(held);
    cr_assert(exited, "ps-server did not exit");
    cr_assert(WIFEXITED(status), "ps-server died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "%s", tu_slurp(errf));
    cr_assert(strstr(tu_slurp(errf), "signal 15: shutting down"), "%s", tu_slurp(errf));
}
