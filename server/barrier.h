/* barrier.h - the clocks of a "sync" or "ssp" job on one shard. No I/O: the server tells it what
 * arrives and asks it whether a pull may be answered.
 *
 * Each worker rank 0..W-1 has a clock: the steps it has ended on this shard (a Clock message
 * ends one). A rank is live until it says it is finished or is dropped (its connection closed
 * before it finished, or it stalled a barrier past cluster.barrier_timeout_ms); live ranks that
 * have not connected yet count with clock 0. A pull with min_clock m is answered once every
 * live rank's clock is >= m (ps_barrier_min_clock).
 *   ssp:  a push is applied on arrival.
 *   sync: the pushes of step t are held, per rank, until every live rank has ended step t; then,
 *         per table, the held gradients of the ranks that ended t are concatenated in rank order
 *         (each scaled by 1/n, n = those ranks), and pushed to the store as one push, which sums a
 *         row's duplicates in that order and applies AdaGrad once: the mean of the workers'
 *         batch-mean gradients, the same bits whatever the arrival order. */
#ifndef PS_BARRIER_H
#define PS_BARRIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ps_status.h"
#include "store.h"

typedef struct ps_barrier ps_barrier;

/* For job->consistency sync or ssp. stores: (job->num_tables), borrowed for the barrier's life. */
ps_status ps_barrier_create(const ps_job_config *job, ps_store *const *stores, ps_barrier **out,
                            ps_error *err);
void ps_barrier_destroy(ps_barrier *b); /* NULL-safe */

/* A push of rank's step `clock` (keys (n) u64 LE, grads (n, dim) f32 LE, borrowed). It must be
 * the rank's current clock and, in sync, the step being gathered. sync: copied and held; ssp:
 * applied now. A step the rank has already ended is a retry after a reconnect: PS_OK, nothing
 * applied. PS_INVALID_ARG (rank not live, a step ahead), PS_NOMEM. */
ps_status ps_barrier_push(ps_barrier *b, uint32_t rank, uint32_t table, const uint8_t *keys,
                          const uint8_t *grads, size_t n, uint64_t clock, ps_error *err);

/* rank ends its step: clock must be its clock + 1 (a clock it has already reached is a retried
 * step: PS_OK, nothing changes). finished: rank leaves instead (clock must be its clock).
 * Completes sync steps that no live rank holds back any more. *advanced is set when the minimum
 * clock moved (parked pulls may now be answered). */
ps_status ps_barrier_clock(ps_barrier *b, uint32_t rank, uint64_t clock, bool finished,
                           bool *advanced, ps_error *err);

/* A worker's Hello for rank (a new connection) saying it starts or retries from step `clock`.
 * *start gets the clock it goes on from here, which becomes the rank's clock:
 *   - a rank this barrier has not heard from (a server restarted from its checkpoint has a fresh
 *     barrier): `clock` (sync: at least the steps applied); while nothing was pushed yet, sync
 *     takes it as the step being gathered;
 *   - a live rank reconnecting: `clock`; its clock here becomes max(its clock, clock) (steps it
 *     already ended here are acknowledged without being applied when it redoes them);
 *   - a dropped rank: live again; when the live ranks went past the steps it had ended (it
 *     stalled, or it died and was restarted), at max(clock, the live minimum); else (dropped
 *     only because its old connection closed before it reconnected) as a reconnect;
 * in each case the rank's held push of the step being gathered is discarded when it had not
 * ended that step (it re-pushes the whole step); an ended step's push stays (its retry is a
 * no-op). A finished rank stays finished (*start: its clock; it may only say finished
 * again, as a retried finish does). PS_INVALID_ARG for a rank >= the job's workers. */
ps_status ps_barrier_hello(ps_barrier *b, uint32_t rank, uint64_t clock, uint64_t *start,
                           bool *advanced, ps_error *err);

/* After a reconnect the worker's shards told it different clocks (ps_barrier_hello): its clock
 * here becomes max(its clock, clock), the one it goes on with on every shard (a no-op for a
 * finished rank). PS_INVALID_ARG for a dropped rank or one >= the job's workers. */
ps_status ps_barrier_adopt(ps_barrier *b, uint32_t rank, uint64_t clock, bool *advanced,
                           ps_error *err);

/* Drops a live rank; a no-op for one that is not live. Its held gradients are discarded, unless
 * it ended the step being gathered (sync): that push is complete and still counts.
 * Same *advanced as above. PS_NOMEM when completing a step failed. */
ps_status ps_barrier_drop(ps_barrier *b, uint32_t rank, bool *advanced, ps_error *err);

/* The smallest clock among live ranks; UINT64_MAX when none is live. */
uint64_t ps_barrier_min_clock(const ps_barrier *b);

/* Live ranks whose clock is the minimum (those a waiting pull waits for): up to max into ranks;
 * returns how many there are. */
size_t ps_barrier_slowest(const ps_barrier *b, uint32_t *ranks, size_t max);

/* A rank's state, as a checkpoint stores it (one byte). */
typedef enum { PS_RANK_LIVE = 0, PS_RANK_FINISHED = 1, PS_RANK_DROPPED = 2 } ps_rank_state;

/* The state a checkpoint keeps: each rank's clock and ps_rank_state into clocks (W) and
 * states (W), caller-owned; *applied: the sync steps applied (0 in ssp). */
void ps_barrier_save(const ps_barrier *b, uint64_t *clocks, uint8_t *states, uint64_t *applied);

/* A restarted server, before any Hello: the ranks' clocks and states as ps_barrier_save gave
 * them (borrowed). A finished rank is not waited for; a dropped one rejoins as a dropped rank
 * does; a live rank's clock is a lower bound its first Hello may raise. sync: a clock past
 * `applied` comes back as `applied` (the pushes held for that step are not saved: its ranks
 * redo it). PS_INVALID_ARG for a state byte that is none of ps_rank_state (nothing changed
 * then). */
ps_status ps_barrier_restore(ps_barrier *b, const uint64_t *clocks, const uint8_t *states,
                             uint64_t applied, ps_error *err);

uint64_t ps_barrier_rank_clock(const ps_barrier *b, uint32_t rank);
bool ps_barrier_is_live(const ps_barrier *b, uint32_t rank);

#endif
