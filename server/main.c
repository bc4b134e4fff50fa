/* main.c - ps-server: argv -> job file -> one shard. The only place that exits.
 * Exit codes: 0 clean stop (SIGINT/SIGTERM), 1 runtime failure, 2 usage or config error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "server.h"

static const char usage[] =
    "usage: ps-server --config JOB.json --shard I [--listen HOST:PORT] [--set KEY=VALUE ...]\n"
    "\n"
    "Serves shard I of the job's parameter tables until SIGINT/SIGTERM.\n"
    "  --config JOB.json   the job file every server and worker of the job reads\n"
    "  --shard I           this server's index in cluster.servers (0-based)\n"
    "  --listen HOST:PORT  listen here instead of cluster.servers[I]; port 0 picks a free port\n"
    "  --set KEY=VALUE     override a job key by its dotted path (e.g. limits.max_frame_bytes=1e6)\n"
    "  --verbose           log every connection\n"
    "Prints \"listening on HOST:PORT\" on stdout once it accepts connections.\n";

#define MAX_SETS 64

int main(int argc, char **argv) {
    const char *config = NULL, *listen = NULL, *sets[MAX_SETS];
    size_t n_sets = 0;
    long shard = -1;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--config") == 0 && has_val) {
            config = argv[++i];
        } else if (strcmp(a, "--shard") == 0 && has_val) {
            char *end;
            shard = strtol(argv[++i], &end, 10);
            if (*end != '\0' || shard < 0) {
                fprintf(stderr, "ps-server: --shard %s: not a shard index\n", argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--listen") == 0 && has_val) {
            listen = argv[++i];
        } else if (strcmp(a, "--set") == 0 && has_val) {
            if (n_sets == MAX_SETS) {
                fprintf(stderr, "ps-server: more than %d --set options\n", MAX_SETS);
                return 2;
            }
            sets[n_sets++] = argv[++i];
        } else if (strcmp(a, "--verbose") == 0) {
            verbose = true;
        } else {
            fprintf(stderr, "ps-server: unknown or incomplete option \"%s\"\n%s", a, usage);
            return 2;
        }
    }
    if (config == NULL || shard < 0) {
        fprintf(stderr, "ps-server: --config and --shard are required\n%s", usage);
        return 2;
    }
    static ps_job_config job;
    ps_error err = {0};
    if (ps_config_load(config, sets, n_sets, &job, &err) != PS_OK) {
        fprintf(stderr, "ps-server: %s\n", err.msg);
        return 2;
    }
    ps_server_options opt = {.job = &job, .shard = (uint32_t)shard, .listen = listen,
                             .handle_signals = true,
                             .log = {.level = verbose ? PS_LOG_DEBUG : PS_LOG_INFO}};
    snprintf(opt.log.prefix, sizeof(opt.log.prefix), "server %ld", shard);
    ps_server *srv;
    ps_status st = ps_server_create(&opt, &srv, &err);
    if (st != PS_OK) {
        fprintf(stderr, "ps-server: %s\n", err.msg);
        return st == PS_CONFIG ? 2 : 1;
    }
    char host[256];
    uint16_t port;
    ps_parse_hostport(listen ? listen : job.servers[shard], host, sizeof(host), &port, NULL);
    printf("ps-server: shard %ld listening on %s%s%s:%d\n", shard, strchr(host, ':') ? "[" : "",
           host, strchr(host, ':') ? "]" : "", ps_server_port(srv));
    fflush(stdout);
    st = ps_server_run(srv, &err);
    ps_server_destroy(srv);
    if (st != PS_OK) {
        fprintf(stderr, "ps-server: %s\n", err.msg);
        return 1;
    }
    return 0;
}
