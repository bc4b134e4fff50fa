/* replay.h - async and ssp jobs: a worker's numbered pushes, applied once. No I/O.
 *
 * A worker that lost a server retries its step after reconnecting; the servers that did get the
 * step's pushes must not apply them a second time (sync holds them until the step ends and
 * drops them on a reconnect instead). Each push of an async or ssp worker carries (step,
 * part): its step (from 1) and its index among the step's pushes to this server, in the order
 * sent, so they only grow within one worker process (its session, a random id in its Hello).
 * A server remembers the last (step, part) it applied per rank and session; a push at or below
 * it is a repeat. A new session (the worker restarted) starts afresh; step 0 is not numbered
 * (tools, tests) and always applies. */
#ifndef PS_REPLAY_H
#define PS_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "ps_status.h"

typedef struct ps_replay ps_replay;

ps_status ps_replay_create(uint32_t num_workers, ps_replay **out, ps_error *err);
void ps_replay_destroy(ps_replay *r); /* NULL-safe */

/* true when rank's session has already had (step, part) or a later one applied here. */
bool ps_replay_seen(const ps_replay *r, uint32_t rank, uint64_t session, uint64_t step,
                    uint32_t part);
/* (step, part) of rank's session was applied. */
void ps_replay_mark(ps_replay *r, uint32_t rank, uint64_t session, uint64_t step, uint32_t part);

#endif
