/* stats.h - the servers' per-table memory figures (ps_client_stats) as text: the table that
 * ps-stats and `ps-launch --stats` print, and the JSON object ps-launch appends to the metrics
 * file. No I/O besides the given stream. */
#ifndef PS_STATS_H
#define PS_STATS_H

#include <stdio.h>

#include "client.h"
#include "config.h"

/* One line per shard and table, then a total:
 *   shard table rows bytes bytes/row admitted pending evicted
 * bytes/row is bytes / rows (all the table's memory on that shard, index and scratch included;
 * "-" without rows). st: (job->num_servers, job->num_tables) as ps_client_stats fills it. */
void ps_stats_print(FILE *f, const ps_job_config *job, const ps_table_stats *st);

/* {"epoch": E, "server_stats": [{"shard": s, "table": "...", "rows": ...}, ...]} and a newline,
 * one line (JSON Lines, as the metrics file). */
void ps_stats_json(FILE *f, const ps_job_config *job, const ps_table_stats *st, uint32_t epoch);

#endif
