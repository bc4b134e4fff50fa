/* bench_client.h - a worker/client.h client of a bench_server_proc child (bench_util.h), for the
 * benchmarks that drive a ps-server over loopback (bench_ps, bench_checkpoint). */
#ifndef PS_BENCH_CLIENT_H
#define PS_BENCH_CLIENT_H

#include "bench_util.h"
#include "client.h"
#include "config.h"

/* Loads p->job with cluster.servers[0] set to the child's 127.0.0.1 port into *job (the
 * caller's, and it must outlive the client: the client borrows it) and connects a rank-0 client
 * that logs warnings. The caller destroys *out. */
ps_status bench_server_client(const bench_server_proc *p, ps_job_config *job, ps_client **out,
                              ps_error *err);

#endif
