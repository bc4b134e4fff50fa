/* bench_client.c - see bench_client.h. */
#include "bench_client.h"

#include <stdio.h>

ps_status bench_server_client(const bench_server_proc *p, ps_job_config *job, ps_client **out,
                              ps_error *err) {
    char set[64];
    snprintf(set, sizeof(set), "cluster.servers[0]=127.0.0.1:%d", p->port);
    const char *sets[] = {set};
    ps_status st = ps_config_load(p->job, sets, 1, job, err);
    if (st != PS_OK) return st;
    ps_client_options o = {.job = job, .rank = 0, .log = {.level = PS_LOG_WARN}};
    return ps_client_create(&o, out, err);
}
