/* job_end.h - shard 0 of a ps-server that ends with its job: prints the job's per-epoch Keras line
 * (the workers' EpochStats summed, as ps-launch combines its workers' events), and ends a job that
 * exports: it writes the weights once every worker has finished (or, at cluster.job_deadline_s,
 * the weights trained so far), through the streaming exporter (worker/export.h) as an admin client of every
 * shard (itself included), then sends EndJob to all of them; the other shards serve the export
 * until that EndJob comes (ps_server_options.hold_for_end). One directory, the layout that
 * ps-export and fit.init_from use.
 *
 *     ps_job_end *je = ps_job_end_new(&job);
 *     opt.end_with_job = true, opt.hold_for_end = job.fit.export_to[0] != '\0';
 *     if (shard == 0 && opt.hold_for_end)
 *         opt.on_workers_done = ps_job_end_start, opt.on_deadline = ps_job_end_deadline, opt.ud = je;
 *     ... ps_server_run(srv, &err) ...
 *     st = ps_job_end_join(je, &err);   // the export's verdict; PS_OK when none ran
 */
#ifndef PS_JOB_END_H
#define PS_JOB_END_H

#include <stdio.h>

#include "config.h"
#include "ps_status.h"
#include "server.h"

typedef struct ps_job_end ps_job_end;

/* job: borrowed until ps_job_end_join; its cluster.servers must be reachable addresses. out: where
 * the epoch lines go. NULL when out of memory. */
ps_job_end *ps_job_end_new(const ps_job_config *job, FILE *out);

/* The on_epoch_stats hook (ud: the ps_job_end). Once every worker has reported epoch e, and every
 * epoch before it was printed, prints "Epoch e/E" and the Keras line (fit.verbose > 0): sums of
 * samples, losses and hits, the slowest worker's time. A second report of a rank for the same
 * epoch, or an epoch out of range, is ignored. */
void ps_job_end_epoch(void *ud, uint32_t rank, const ps_EpochStats *s);

/* The on_workers_done hook (ud: the ps_job_end): starts the export on its own thread. Should
 * the thread fail to start, the export fails and the shards are sent EndJob by nobody: they
 * stop at cluster.job_deadline_s, or on a signal. */
void ps_job_end_start(ps_server *srv, void *ud);

/* The on_deadline hook (ud: the ps_job_end): cluster.job_deadline_s passed with ranks unfinished;
 * the export runs all the same (the weights trained so far), and its EndJob carries why, which
 * every shard then exits 1 with. */
void ps_job_end_deadline(ps_server *srv, void *ud, const char *why);

/* Waits for the export (if it started), frees je, and returns its verdict: PS_OK, or the export's
 * or EndJob's error (the message says which). NULL-safe. */
ps_status ps_job_end_join(ps_job_end *je, ps_error *err);

#endif
