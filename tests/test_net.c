/* test_net.c - addresses on loopback: where a shard binds and what it advertises (--bind,
 * --advertise, a DNS-name entry), IPv6 literals end to end, names that resolve ("localhost") and
 * names that never do, and a server that starts after its workers. The real ps-server and
 * ps-worker run where the banner or the exit code is the behaviour; every wait has a deadline. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static char dir[64];
static ps_job_config job;

static void setup(void) { tu_tmpdir(dir, "ps_net"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(net, .init = setup, .fini = teardown, .timeout = 90);

#define BIN(name) PS_BINARY_DIR "/" name

/* A deterministic job: one worker, sync, small. SERVERS is the JSON list of addresses. */
#define JOB(SERVERS)                                                                               \
    "{\"job_id\": \"net\", \"seed\": 7, \"cluster\": {\"servers\": " SERVERS ", \"workers\": 1, "  \
    "\"consistency\": \"sync\", \"connect_timeout_ms\": 20000},"                                   \
    " \"model\": {\"input_dim\": 8, \"layers\": [{\"units\": 4, \"activation\": \"relu\"},"        \
    " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"           \
    " \"optimizer\": {\"name\": \"adagrad\", \"form\": \"keras\", \"learning_rate\": 0.05},"       \
    " \"fit\": {\"epochs\": 3, \"batch_size\": 16},"                                               \
    " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 96, \"cols\": 8}}}"

static void path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}


/* Waits (at most 15 s) for ps-server's banner in its stdout file; returns the line. */
static const char *await_banner(const char *out) {
    for (int i = 0; i < 300; i++) {
        char *text = tu_slurp(out);
        char *at = strstr(text, "listening on ");
        if (at != NULL && strchr(at, '\n') != NULL) {
            *strchr(at, '\n') = '\0';
            char *line = strrchr(text, '\n') ? strrchr(text, '\n') + 1 : text;
            static char copy[512];
            snprintf(copy, sizeof(copy), "%s", line);
            return copy;
        }
        nap_ms(50);
    }
    cr_assert_fail("no banner in %s: %s", out, tu_slurp(out));
    return NULL;
}

/* Runs ps-server (extra args) on the job file; returns its pid, banner in *banner. */
static int start_server(const char *jobfile, const char *const *extra, const char **banner) {
    char out[128], err[128];
    path(out, sizeof(out), "server.out");
    path(err, sizeof(err), "server.err");
    /* --until-stopped: the test stops it (a server that ends with its job may be on its way out
     * when SIGTERM comes) */
    char *argv[16] = {BIN("ps-server"), "--config", (char *)jobfile, "--shard", "0",
                      "--until-stopped"};
    int n = 6;
    for (; extra != NULL && *extra != NULL && n < 15; extra++) argv[n++] = (char *)*extra;
    argv[n] = NULL;
    int pid = tu_spawn(argv, out, err);
    cr_assert_gt(pid, 0);
    if (banner != NULL) *banner = await_banner(out);
    return pid;
}

static void stop_server(int pid) {
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 10000), 0, "ps-server did not stop cleanly");
}

/* Runs ps-worker rank 0 to the end (60 s at most); returns its exit code, stdout in *out_text. */
static int run_worker(const char *jobfile, const char *servers_set, char **out_text) {
    char out[128], err[128];
    path(out, sizeof(out), "worker.out");
    path(err, sizeof(err), "worker.err");
    char *argv[] = {BIN("ps-worker"), "--config", (char *)jobfile, "--rank", "0",
                    servers_set ? "--set" : NULL, (char *)servers_set, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, err), 60000);
    if (code != 0) cr_log_error("worker stderr: %s", tu_slurp(err));
    if (out_text != NULL) *out_text = strdup(tu_slurp(out));
    return code;
}

/* The last epoch's "loss: X" in a worker's Keras-style output. */
static double final_loss(const char *text) {
    const char *at = NULL;
    for (const char *p = strstr(text, "loss: "); p != NULL; p = strstr(p + 1, "loss: ")) at = p;
    cr_assert_not_null(at, "no loss in: %s", text);
    return strtod(at + strlen("loss: "), NULL);
}

static void write_job(const char *name, const char *json, char *file, size_t n) {
    path(file, n, name);
    tu_write_file(file, json, 0644);
}

/* The same job over IPv6 loopback and over IPv4 loopback: it trains, and the transport changes
 * nothing (sync, one worker: the run is deterministic, so the losses are equal). */
Test(net, ipv6_job_matches_ipv4) {
    char f6[128], f4[128], set[96];
    write_job("v6.json", JOB("[\"[::1]:0\"]"), f6, sizeof(f6));
    write_job("v4.json", JOB("[\"127.0.0.1:0\"]"), f4, sizeof(f4));
    const char *banner;
    int pid = start_server(f6, NULL, &banner);
    const char *addr = strstr(banner, "listening on [::1]:");
    cr_assert_not_null(addr, "banner: %s", banner);
    snprintf(set, sizeof(set), "cluster.servers=[\"%s\"]", addr + strlen("listening on "));
    char *out6;
    cr_assert_eq(run_worker(f6, set, &out6), 0);
    stop_server(pid);

    pid = start_server(f4, NULL, &banner);
    addr = strstr(banner, "listening on 127.0.0.1:");
    cr_assert_not_null(addr, "banner: %s", banner);
    snprintf(set, sizeof(set), "cluster.servers=[\"%s\"]", addr + strlen("listening on "));
    char *out4;
    cr_assert_eq(run_worker(f4, set, &out4), 0);
    stop_server(pid);
    cr_assert_float_eq(final_loss(out6), final_loss(out4), 0.0, "v6 %s\nv4 %s", out6, out4);
    free(out6);
    free(out4);
}

/* "localhost" in cluster.servers: the server binds every interface at the port (dual-stack) and
 * advertises the name; the worker resolves it and trains, whichever of ::1 / 127.0.0.1 the
 * resolver gives first. */
Test(net, localhost_entry_binds_all_interfaces) {
    char f[128], json[2048], servers[64];
    snprintf(servers, sizeof(servers), "[\"localhost:%d\"]", tu_free_port(AF_INET));
    snprintf(json, sizeof(json), JOB("%s"), servers);
    write_job("job.json", json, f, sizeof(f));
    const char *banner;
    int pid = start_server(f, NULL, &banner);
    cr_assert_not_null(strstr(banner, "bound to [::]:"), "banner: %s", banner);
    cr_assert_not_null(strstr(banner, "listening on localhost:"), "banner: %s", banner);
    cr_assert_eq(run_worker(f, NULL, NULL), 0);
    stop_server(pid);
}

/* --bind and --advertise: the banner gives both; the advertised one ends the line (ps-launch
 * reads it from there). */
Test(net, bind_and_advertise_banner) {
    char f[128];
    write_job("job.json", JOB("[\"ps-server-0.ps-server:7070\"]"), f, sizeof(f));
    const char *extra[] = {"--bind", "127.0.0.1:0", "--advertise", "ps-server-0.ps-server:7070",
                           NULL};
    const char *banner;
    int pid = start_server(f, extra, &banner);
    cr_assert_not_null(strstr(banner, "ps-server: shard 0 bound to 127.0.0.1:"), "%s", banner);
    const char *tail = ", listening on ps-server-0.ps-server:7070";
    cr_assert_str_eq(banner + strlen(banner) - strlen(tail), tail, "%s", banner);
    stop_server(pid);
}

/* In-process: a name entry binds the wildcard at the entry's port and advertises the entry; an
 * IP entry binds itself; --advertise wins. */
Test(net, bound_and_advertised_addresses) {
    tu_job(JOB("[\"localhost:0\", \"127.0.0.1:0\"]"), &job);
    ps_error err = {0};
    ps_server *s;
    ps_server_options opt = {.job = &job, .shard = 0, .log = {.level = PS_LOG_ERROR}};
    cr_assert_eq(ps_server_create(&opt, &s, &err), PS_OK, "%s", err.msg);
    char want[64];
    snprintf(want, sizeof(want), "[::]:%d", ps_server_port(s));
    cr_assert_str_eq(ps_server_bound(s), want);
    snprintf(want, sizeof(want), "localhost:%d", ps_server_port(s));
    cr_assert_str_eq(ps_server_advertised(s), want);
    ps_server_destroy(s);

    opt.shard = 1;
    cr_assert_eq(ps_server_create(&opt, &s, &err), PS_OK, "%s", err.msg);
    snprintf(want, sizeof(want), "127.0.0.1:%d", ps_server_port(s));
    cr_assert_str_eq(ps_server_bound(s), want);
    cr_assert_str_eq(ps_server_advertised(s), want);
    ps_server_destroy(s);

    opt.listen = "localhost:0"; /* a name given to --bind is resolved */
    opt.advertise = "10.0.0.5:7000";
    cr_assert_eq(ps_server_create(&opt, &s, &err), PS_OK, "%s", err.msg);
    cr_assert(strstr(ps_server_bound(s), "127.0.0.1:") == ps_server_bound(s) ||
                  strstr(ps_server_bound(s), "[::1]:") == ps_server_bound(s),
              "bound %s", ps_server_bound(s));
    cr_assert_str_eq(ps_server_advertised(s), "10.0.0.5:7000");
    ps_server_destroy(s);
}

typedef struct {
    char name[40];
    const char *listen, *advertise;
    ps_status want;
    char says[48];
} bad_addr_case;

ParameterizedTestParameters(net, bad_addresses) {
    static bad_addr_case cases[] = {
        {"bind not host:port", "nohost", NULL, PS_CONFIG, "\"nohost\" is not HOST:PORT"},
        {"bind name unknown", "nosuch-host.invalid:0", NULL, PS_CONFIG,
         "cannot resolve \"nosuch-host.invalid\""},
        {"bind address not ours", "192.0.2.1:0", NULL, PS_IO, "listen on 192.0.2.1:0"},
        {"advertise not host:port", NULL, "ps-server-0", PS_CONFIG, "advertise address"},
        {"advertise unbracketed v6", NULL, "::1:7070", PS_CONFIG, "needs brackets"},
    };
    return cr_make_param_array(bad_addr_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(bad_addr_case *c, net, bad_addresses) {
    tu_job(JOB("[\"127.0.0.1:0\"]"), &job);
    ps_error err = {0};
    ps_server *s = NULL;
    ps_server_options opt = {.job = &job, .listen = c->listen, .advertise = c->advertise,
                             .log = {.level = PS_LOG_ERROR}};
    ps_status st = ps_server_create(&opt, &s, &err);
    cr_assert_eq(st, c->want, "%s: got %s (%s)", c->name, ps_status_str(st), err.msg);
    cr_assert_not_null(strstr(err.msg, c->says), "%s: %s", c->name, err.msg);
}

/* A name that never resolves: the client gives up at cluster.connect_timeout_ms (well within
 * the bound checked here), naming the name and the key. */
Test(net, unresolvable_name_fails_in_time) {
    tu_job(JOB("[\"nosuch-host.invalid:7070\"]"), &job);
    job.connect_timeout_ms = 800;
    ps_client_options opt = {.job = &job, .rank = 0, .log = {.level = PS_LOG_ERROR}};
    ps_client *c = NULL;
    ps_error err = {0};
    double t0 = now_s();
    ps_status st = ps_client_create(&opt, &c, &err);
    double took = now_s() - t0;
    cr_assert_eq(st, PS_TIMEOUT, "got %s: %s", ps_status_str(st), err.msg);
    cr_assert_null(c);
    cr_assert_not_null(strstr(err.msg, "cannot resolve \"nosuch-host.invalid\""), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "cluster.connect_timeout_ms"), "%s", err.msg);
    cr_assert_lt(took, 10.0, "gave up after %.1f s, deadline 0.8 s", took); /* a bound, not a time */
}

/* The worker starts first; the server comes up later on the port the job names. The worker
 * retries with backoff and trains. */
Test(net, server_starting_late) {
    char f[128], json[2048], servers[64], wout[128], werr[128];
    snprintf(servers, sizeof(servers), "[\"127.0.0.1:%d\"]", tu_free_port(AF_INET));
    snprintf(json, sizeof(json), JOB("%s"), servers);
    write_job("job.json", json, f, sizeof(f));
    path(wout, sizeof(wout), "late.out");
    path(werr, sizeof(werr), "late.err");
    char *wargv[] = {BIN("ps-worker"), "--config", f, "--rank", "0", "--verbose", NULL};
    int wpid = tu_spawn(wargv, wout, werr);
    cr_assert_gt(wpid, 0);
    /* the worker has tried (and logged a retry) before the server exists */
    bool retried = false;
    for (int i = 0; i < 200 && !retried; i++, nap_ms(50))
        retried = strstr(tu_slurp(werr), "retrying in") != NULL;
    cr_assert(retried, "no retry logged: %s", tu_slurp(werr));
    int spid = start_server(f, NULL, NULL);
    int code = tu_wait_exit(wpid, 60000);
    cr_assert_eq(code, 0, "worker: %d, %s", code, tu_slurp(werr));
    cr_assert_not_null(strstr(tu_slurp(wout), "Epoch 3/3"), "%s", tu_slurp(wout));
    stop_server(spid);
}
