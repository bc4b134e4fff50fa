/* main.c - ps-server: argv -> job file -> one shard. The only place that exits.
 * Exit codes: 0 the job ended (or a clean stop on SIGINT/SIGTERM), 1 runtime failure (the job's
 * deadline passed - with fit.export_to, after the export - or the export failed), 2 usage or
 * config error. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "job_end.h"
#include "server.h"

static const char usage[] =
    "usage: ps-server --config JOB.json --shard I [--bind HOST:PORT] [--advertise HOST:PORT]\n"
    "                 [--until-stopped | --serve-after-job] [--verbose] [--set KEY=VALUE ...]\n"
    "\n"
    "Serves shard I of the job's parameter tables until every worker has finished, then exits 0;\n"
    "with fit.export_to, shard 0 first writes the weights there (all shards) and ends the job.\n"
    "Workers not finished by cluster.job_deadline_s: exit 1, naming their ranks (with\n"
    "fit.export_to, after shard 0 wrote the weights trained so far).\n"
    "  --config JOB.json   the job file every server and worker of the job reads\n"
    "  --shard I           this server's index in cluster.servers (0-based)\n"
    "  --bind HOST:PORT    listen here instead of cluster.servers[I] (--listen: the same);\n"
    "                      port 0 picks a free port, \"[::]:7070\" every interface. Default: the\n"
    "                      entry's address if it is an IP, else every interface at its port\n"
    "  --advertise HOST:PORT  the address peers dial, printed below and logged (default: the\n"
    "                      entry if it is a name, else the bound address)\n"
    "  --set KEY=VALUE     override a job key by its dotted path (e.g. limits.max_frame_bytes=1e6)\n"
    "  --until-stopped     serve until SIGINT/SIGTERM whatever the workers do (ps-launch)\n"
    "  --serve-after-job   end the job as usual (export, epoch lines, exit status) but go on\n"
    "                      serving until SIGINT/SIGTERM (a Kubernetes StatefulSet)\n"
    "  --verbose           log every connection\n"
    "Prints \"listening on HOST:PORT\" (the advertised address) on stdout once it accepts\n"
    "connections.\n";

int main(int argc, char **argv) {
    ps_cli cli;
    ps_cli_init(&cli, "ps-server", usage, "--shard");
    ps_cli_end_with_launcher(); /* under ps-launch: not past it */
    const char *listen = NULL, *advertise = NULL;
    bool until_stopped = false, serve_after_job = false;
    for (int i = 1; i < argc; i++) {
        int code;
        ps_cli_result r = ps_cli_arg(&cli, argc, argv, &i, &code);
        if (r == PS_CLI_EXIT) return code;
        if (r == PS_CLI_TAKEN) continue;
        if ((strcmp(argv[i], "--bind") == 0 || strcmp(argv[i], "--listen") == 0) && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(argv[i], "--advertise") == 0 && i + 1 < argc) {
            advertise = argv[++i];
        } else if (strcmp(argv[i], "--until-stopped") == 0) {
            until_stopped = true;
        } else if (strcmp(argv[i], "--serve-after-job") == 0) {
            serve_after_job = true;
        } else {
            fprintf(stderr, "ps-server: unknown or incomplete option \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }
    if (until_stopped && serve_after_job) {
        fprintf(stderr, "ps-server: --until-stopped and --serve-after-job exclude each other "
                "(the first ignores the job's end, the second ends the job and serves on)\n%s",
                usage);
        return 2;
    }
    /* A peer that resets its connection must cost that connection only: writes to it fail with
     * EPIPE (and close it) instead of killing the shard. */
    signal(SIGPIPE, SIG_IGN);
    /* A fixed mmap threshold: each connection's 256 KiB read buffer then comes from mmap and goes
     * back to the system on close. glibc's adaptive threshold moved them onto the heap, whose
     * free pages connection churn kept dirtying (RSS +23% over 63 000 reconnects). */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    /* One descriptor per peer: the soft limit (often 1024) would refuse peers long before
     * limits.max_connections; take what the hard limit allows. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    static ps_job_config job;
    if (!ps_cli_load(&cli, &job)) return 2;
    const long shard = cli.index;
    const bool verbose = cli.verbose;
    ps_error err = {0};
    ps_server_options opt = {.job = &job, .shard = (uint32_t)shard, .listen = listen,
                             .advertise = advertise, .handle_signals = true,
                             .log = {.level = verbose ? PS_LOG_DEBUG : PS_LOG_INFO}};
    snprintf(opt.log.prefix, sizeof(opt.log.prefix), "server %ld", shard);
    ps_job_end *je = NULL;
    if (!until_stopped) {
        opt.end_with_job = true, opt.serve_after_job = serve_after_job;
        opt.hold_for_end = job.fit.export_to[0] != '\0';
        if (opt.hold_for_end && shard == 0 && job.servers_auto) {
            /* the exporter must reach every shard by its address */
            fprintf(stderr, "ps-server: %s: fit.export_to needs cluster.servers as a list of "
                    "\"host:port\" (or --until-stopped and ps-export)\n", job.file);
            return 2;
        }
        if (shard == 0) { /* the job's epoch lines; the export */
            if ((je = ps_job_end_new(&job, stdout)) == NULL) {
                fprintf(stderr, "ps-server: out of memory\n");
                return 1;
            }
            opt.on_epoch_stats = ps_job_end_epoch, opt.ud = je;
            if (opt.hold_for_end)
                opt.on_workers_done = ps_job_end_start, opt.on_deadline = ps_job_end_deadline;
        }
    }
    ps_server *srv;
    ps_status st = ps_server_create(&opt, &srv, &err);
    if (st != PS_OK) {
        fprintf(stderr, "ps-server: %s\n", err.msg);
        ps_job_end_join(je, NULL);
        return st == PS_CONFIG ? 2 : 1;
    }
    /* the warning before the address: whoever waits for "listening on" has seen it by then */
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
        nofile.rlim_cur < (rlim_t)job.max_connections + 64)
        fprintf(stderr, "ps-server: warning: %llu file descriptors (ulimit -n) for %u "
                "limits.max_connections: peers past the descriptors are refused\n",
                (unsigned long long)nofile.rlim_cur, job.max_connections);
    /* "listening on" ends the line: ps-launch reads the address from there */
    if (strcmp(ps_server_bound(srv), ps_server_advertised(srv)) != 0)
        printf("ps-server: shard %ld bound to %s, listening on %s\n", shard, ps_server_bound(srv),
               ps_server_advertised(srv));
    else
        printf("ps-server: shard %ld listening on %s\n", shard, ps_server_advertised(srv));
    fflush(stdout);
    st = ps_server_run(srv, &err);
    ps_server_destroy(srv);
    ps_error end_err = {0};
    ps_status end_st = ps_job_end_join(je, &end_err); /* the export, when this shard ran it */
    if (st != PS_OK) fprintf(stderr, "ps-server: %s\n", err.msg);
    if (end_st != PS_OK) fprintf(stderr, "ps-server: %s\n", end_err.msg);
    return st == PS_OK && end_st == PS_OK ? 0 : 1;
}
