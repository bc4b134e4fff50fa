/* stats_main.c - ps-stats: asks a running job's servers for their per-table memory figures.
 * Exit codes: 0 printed, 1 servers unreachable, 2 usage or config error. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "config.h"
#include "stats.h"

static const char usage[] =
    "usage: ps-stats JOB.json [--set KEY=VALUE ...] [--verbose]\n"
    "\n"
    "Prints one line per server shard and table of a running job (cluster.servers must list\n"
    "their addresses), then a total:\n"
    "  rows       rows held (an expired row counts until the sweep evicts it)\n"
    "  bytes      memory the table holds on the shard: rows, index, admission counts, scratch\n"
    "  bytes/row  bytes / rows\n"
    "  admitted   rows created by pushes (with admit_after: keys that reached the count)\n"
    "  pending    keys counted by admit_after, without a row yet\n"
    "  evicted    rows evicted: expired (expire_after_*) or by eviction \"lru\"\n"
    "  --set KEY=VALUE  override a job key by its dotted path\n"
    "  --verbose        log connection attempts\n";

int main(int argc, char **argv) {
    ps_cli cli;
    ps_cli_init(&cli, "ps-stats", usage, NULL);
    for (int i = 1; i < argc; i++) {
        int code;
        ps_cli_result r = ps_cli_arg(&cli, argc, argv, &i, &code);
        if (r == PS_CLI_EXIT) return code;
        if (r == PS_CLI_TAKEN) continue;
        if (argv[i][0] != '-' && cli.config == NULL) {
            cli.config = argv[i];
        } else {
            fprintf(stderr, "ps-stats: unknown or extra argument \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }
    static ps_job_config job;
    if (!ps_cli_load(&cli, &job)) return 2;
    if (job.servers_auto) {
        fprintf(stderr, "ps-stats: %s: cluster.servers is a count (%u); list the servers as "
                "\"host:port\" (or use ps-launch --stats)\n", cli.config, job.num_servers);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    ps_client_options o = {.job = &job, .admin = true,
                           .log = {.level = cli.verbose ? PS_LOG_DEBUG : PS_LOG_INFO}};
    snprintf(o.log.prefix, sizeof(o.log.prefix), "stats");
    ps_table_stats *st = calloc((size_t)job.num_servers * job.num_tables + 1, sizeof(*st));
    ps_client *c = NULL;
    ps_error err = {0};
    ps_status s = st == NULL ? ps_error_set(&err, PS_NOMEM, "out of memory")
                             : ps_client_create(&o, &c, &err);
    if (s == PS_OK) s = ps_client_stats(c, st, &err);
    ps_client_destroy(c);
    if (s == PS_OK) ps_stats_print(stdout, &job, st);
    free(st);
    if (s != PS_OK) {
        fprintf(stderr, "ps-stats: %s\n", err.msg);
        return s == PS_CONFIG ? 2 : 1;
    }
    return 0;
}
