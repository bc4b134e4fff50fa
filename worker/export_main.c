/* export_main.c - ps-export: writes a running job's tables to a directory (worker/export.h).
 * Exit codes: 0 written, 1 servers unreachable or a write failed, 2 usage or config error. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "export.h"

static const char usage[] =
    "usage: ps-export JOB.json [DIR] [--set KEY=VALUE ...] [--verbose]\n"
    "\n"
    "Reads every table of the job from its running servers (cluster.servers must list their\n"
    "addresses) and writes DIR (default: fit.export_to) as NumPy .npy files with a manifest.json:\n"
    "per dense layer NAME.npy (in, out) and NAME.accumulators.npy, per sparse table NAME/keys.npy,\n"
    "values.npy and accumulators.npy. numpy.load reads them; fit.init_from resumes from them.\n"
    "  --set KEY=VALUE  override a job key by its dotted path\n"
    "  --verbose        log connection attempts\n";

int main(int argc, char **argv) {
    ps_cli cli;
    ps_cli_init(&cli, "ps-export", usage, NULL);
    ps_cli_end_with_launcher(); /* under ps-launch: not past it */
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        int code;
        ps_cli_result r = ps_cli_arg(&cli, argc, argv, &i, &code);
        if (r == PS_CLI_EXIT) return code;
        if (r == PS_CLI_TAKEN) continue;
        if (argv[i][0] != '-' && cli.config == NULL) {
            cli.config = argv[i];
        } else if (argv[i][0] != '-' && dir == NULL) {
            dir = argv[i];
        } else {
            fprintf(stderr, "ps-export: unknown or extra argument \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }
    static ps_job_config job;
    if (!ps_cli_load(&cli, &job)) return 2;
    if (dir == NULL) dir = job.fit.export_to;
    if (dir[0] == '\0') {
        fprintf(stderr, "ps-export: no directory: give DIR or set fit.export_to in %s\n",
                cli.config);
        return 2;
    }
    if (job.servers_auto) {
        fprintf(stderr, "ps-export: %s: cluster.servers is a count (%u); list the servers as "
                "\"host:port\" (or let ps-launch export with fit.export_to)\n", cli.config,
                job.num_servers);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    ps_client_options o = {.job = &job, .admin = true,
                           .log = {.level = cli.verbose ? PS_LOG_DEBUG : PS_LOG_INFO}};
    snprintf(o.log.prefix, sizeof(o.log.prefix), "export");
    ps_client *c;
    ps_error err = {0};
    ps_export_stats stats;
    ps_status st = ps_client_create(&o, &c, &err);
    if (st == PS_OK) {
        st = ps_export(c, &job, dir, &stats, &err);
        ps_client_destroy(c);
    }
    if (st != PS_OK) {
        fprintf(stderr, "ps-export: %s\n", err.msg);
        return st == PS_CONFIG ? 2 : 1;
    }
    printf("Exported %zu tables, %llu rows (%.1f MB) to %s\n", job.num_tables,
           (unsigned long long)stats.rows, (double)stats.bytes / 1e6, dir);
    return 0;
}
