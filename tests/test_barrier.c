/* test_barrier.c - the barrier's rules for workers that reconnect, rejoin or come back to a
 * restarted server (server/barrier.h), and the async replay filter (server/replay.h).
 *
 * Table "w" of dim 1 starts at 0 (init zeros) with AdaGrad lr 0.5 and no initial accumulator:
 * one update by g gives w = -0.5 * g / (|g| + 1e-10), i.e. -0.5 for any g > 0, and a second
 * application of the same g (acc = 2 g^2) moves it to -0.5 - 0.5 / sqrt(2) = -0.853553...:
 * "applied once" and "applied twice" are far apart. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "barrier.h"
#include "replay.h"
#include "store.h"
#include "testutil.h"

static ps_job_config job;
static ps_store *st;
static ps_barrier *b;
static ps_error err;

static void make(const char *mode, int workers) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"b\", \"cluster\": {\"workers\": %d, \"consistency\": \"%s\"},"
             " \"optimizer\": {\"learning_rate\": 0.5, \"initial_accumulator_value\": 0,"
             " \"epsilon\": 1e-10},"
             " \"tables\": [{\"name\": \"w\", \"dim\": 1, \"init\": {\"type\": \"zeros\"}}]}",
             workers, mode);
    tu_job(json, &job);
    cr_assert_eq(ps_store_create(&job.tables[0], job.seed, &st, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_create(&job, &st, &b, &err), PS_OK, "%s", err.msg);
}

static void teardown(void) {
    ps_barrier_destroy(b);
    ps_store_destroy(st);
    b = NULL, st = NULL;
}

TestSuite(barrier, .fini = teardown, .timeout = 10);

static const uint64_t KEY = 7;

static float weight(void) {
    float w;
    ps_store_pull(st, (const uint8_t *)&KEY, 1, (uint8_t *)&w);
    return w;
}

static ps_status push(uint32_t rank, uint64_t clock, float g) {
    return ps_barrier_push(b, rank, 0, (const uint8_t *)&KEY, (const uint8_t *)&g, 1, clock, &err);
}

static ps_status clock(uint32_t rank, uint64_t c) {
    bool adv;
    return ps_barrier_clock(b, rank, c, false, &adv, &err);
}

static uint64_t hello(uint32_t rank, uint64_t c) {
    uint64_t start = 12345;
    bool adv;
    cr_assert_eq(ps_barrier_hello(b, rank, c, &start, &adv, &err), PS_OK, "%s", err.msg);
    return start;
}

/* One sync step of every rank in ranks with gradient g. */
static void step(uint32_t n, uint64_t at, float g) {
    for (uint32_t r = 0; r < n; r++) cr_assert_eq(push(r, at, g), PS_OK, "%s", err.msg);
    for (uint32_t r = 0; r < n; r++) cr_assert_eq(clock(r, at + 1), PS_OK, "%s", err.msg);
}

Test(barrier, a_retried_step_is_acknowledged_and_not_applied_again) {
    make("sync", 2);
    hello(0, 0), hello(1, 0);
    step(2, 0, 0.25f);
    cr_assert_float_eq(weight(), -0.5f, 1e-6);
    /* rank 0 lost a server after ending step 0 here and redoes it: push and clock are no-ops */
    cr_assert_eq(push(0, 0, 0.25f), PS_OK, "%s", err.msg);
    cr_assert_eq(clock(0, 1), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 1);
    cr_assert_eq(ps_barrier_min_clock(b), 1);
    step(2, 1, 0.25f); /* the next step is a real one: acc 2 g^2 */
    cr_assert_float_eq(weight(), -0.5f - 0.5f / sqrtf(2.0f), 1e-6);
    /* a step ahead is still refused */
    cr_assert_eq(push(0, 5, 0.25f), PS_INVALID_ARG);
    cr_assert_eq(clock(0, 4), PS_INVALID_ARG);
}

Test(barrier, a_reconnect_replaces_the_held_push_of_the_step) {
    make("sync", 2);
    hello(0, 0), hello(1, 0);
    cr_assert_eq(push(0, 0, 100.0f), PS_OK, "%s", err.msg); /* held; then its server vanished */
    cr_assert_eq(hello(0, 0), 0);                           /* reconnect: the held push goes */
    step(2, 0, 0.25f);
    /* the mean of the two 0.25s, not (100 + 0.25 + 0.25) / 2: w = -0.5 exactly */
    cr_assert_float_eq(weight(), -0.5f, 1e-6);
}

Test(barrier, a_reconnect_ahead_of_this_shard_moves_the_rank_on) {
    make("sync", 1);
    hello(0, 0);
    step(1, 0, 0.25f);
    cr_assert_eq(hello(0, 0), 0);           /* redoes step 0 here: clock stays 1 */
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 1);
    cr_assert_eq(hello(0, 3), 3);           /* says 3: taken */
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 3);
}

Test(barrier, a_restarted_server_adopts_the_workers_clocks) {
    make("sync", 2);
    cr_assert_eq(hello(0, 7), 7);
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 7);
    cr_assert_eq(ps_barrier_min_clock(b), 0, "rank 1 has not come back yet");
    cr_assert_eq(push(0, 7, 0.25f), PS_OK, "step 7 is the one being gathered: %s", err.msg);
    cr_assert_eq(clock(0, 8), PS_OK, "%s", err.msg);
    cr_assert_float_eq(weight(), 0.0f, 0.0, "held until rank 1 ends step 7");
    cr_assert_eq(hello(1, 7), 7);
    cr_assert_eq(ps_barrier_min_clock(b), 7);
    cr_assert_eq(push(1, 7, 0.25f), PS_OK, "%s", err.msg);
    cr_assert_eq(clock(1, 8), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_min_clock(b), 8);
    cr_assert_float_eq(weight(), -0.5f, 1e-6);
    /* a rank that reconnects saying an older step redoes it as no-ops: its clock stays */
    cr_assert_eq(hello(1, 2), 2);
    cr_assert_eq(ps_barrier_rank_clock(b, 1), 8);
}

Test(barrier, a_dropped_rank_rejoins_at_the_live_minimum) {
    make("sync", 2);
    hello(0, 0), hello(1, 0);
    bool adv;
    cr_assert_eq(ps_barrier_drop(b, 1, &adv, &err), PS_OK);
    step(1, 0, 0.25f), step(1, 1, 0.25f), step(1, 2, 0.25f);
    cr_assert_eq(ps_barrier_min_clock(b), 3);
    cr_assert_eq(push(1, 0, 0.25f), PS_INVALID_ARG, "dropped: refused until it says Hello");
    cr_assert_eq(hello(1, 1), 3, "rejoins where the live ranks are");
    cr_assert(ps_barrier_is_live(b, 1));
    cr_assert_eq(ps_barrier_min_clock(b), 3);
    /* and takes part in the next step: two ranks, the mean */
    const float w3 = weight();
    step(2, 3, 0.25f);
    cr_assert_neq(weight(), w3);
    cr_assert_eq(ps_barrier_min_clock(b), 4);
    /* a rank dropped while ahead keeps its own clock when it rejoins */
    cr_assert_eq(ps_barrier_drop(b, 0, &adv, &err), PS_OK);
    cr_assert_eq(hello(0, 9), 9);
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 9);
}

/* A worker that lost another server drops its connections and reconnects: this shard saw the
 * old connection close first and dropped it, after it had ended step 0 here. Nobody went on
 * without it, so it is a reconnect: it redoes step 0, as a no-op here (not applied twice). */
Test(barrier, a_rank_dropped_by_its_own_reconnect_redoes_its_step_as_a_no_op) {
    make("sync", 2);
    hello(0, 0), hello(1, 0);
    step(2, 0, 0.25f);
    cr_assert_eq(push(1, 1, 0.25f), PS_OK, "%s", err.msg);
    cr_assert_eq(clock(1, 2), PS_OK, "%s", err.msg); /* rank 1 ended step 1 here, 0 did not */
    bool adv;
    cr_assert_eq(ps_barrier_drop(b, 1, &adv, &err), PS_OK);
    cr_assert_eq(hello(1, 1), 1, "it redoes step 1");
    cr_assert(ps_barrier_is_live(b, 1));
    cr_assert_eq(ps_barrier_rank_clock(b, 1), 2);
    cr_assert_eq(push(1, 1, 0.25f), PS_OK, "%s", err.msg); /* no-op: ended here */
    cr_assert_eq(clock(1, 2), PS_OK, "%s", err.msg);
    cr_assert_eq(push(0, 1, 0.25f), PS_OK, "%s", err.msg);
    cr_assert_eq(clock(0, 2), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_min_clock(b), 2);
    /* step 1 = the mean of both ranks' 0.25: rank 1's push, complete before its drop, was kept
     * and counted once: w = -0.5 - 0.5 * 0.25 / sqrt(0.0625 + 0.0625) */
    cr_assert_float_eq(weight(), -0.5f - 0.5f * 0.25f / sqrtf(0.125f), 1e-6);
}

Test(barrier, a_finished_rank_stays_finished) {
    make("sync", 2);
    hello(0, 0), hello(1, 0);
    bool adv;
    cr_assert_eq(ps_barrier_clock(b, 0, 0, true, &adv, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(hello(0, 0), 0); /* a retried finish may reconnect */
    cr_assert(!ps_barrier_is_live(b, 0));
    cr_assert_eq(push(0, 0, 0.25f), PS_INVALID_ARG);
    cr_assert_eq(ps_barrier_clock(b, 0, 0, true, &adv, &err), PS_OK, "finish said twice");
    cr_assert_eq(ps_barrier_adopt(b, 0, 5, &adv, &err), PS_OK);
    cr_assert(!ps_barrier_is_live(b, 0));
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 0);
}

Test(barrier, adopt_raises_a_clock_and_never_lowers_it) {
    make("ssp", 2);
    hello(0, 0), hello(1, 0);
    bool adv;
    cr_assert_eq(ps_barrier_adopt(b, 0, 4, &adv, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 4);
    cr_assert(!adv, "rank 1 still holds the minimum at 0");
    cr_assert_eq(ps_barrier_adopt(b, 1, 2, &adv, &err), PS_OK, "%s", err.msg);
    cr_assert(adv);
    cr_assert_eq(ps_barrier_min_clock(b), 2);
    cr_assert_eq(ps_barrier_adopt(b, 0, 1, &adv, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 4);
    cr_assert_eq(ps_barrier_drop(b, 1, &adv, &err), PS_OK);
    cr_assert_eq(ps_barrier_adopt(b, 1, 9, &adv, &err), PS_INVALID_ARG, "dropped: Hello first");
    uint64_t start;
    cr_assert_eq(ps_barrier_hello(b, 2, 0, &start, &adv, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "the job has 2 workers"), "%s", err.msg);
}

/* A clock set far ahead (a client may send any): the empty steps up to it are passed at once,
 * not one loop pass each, and a step held before it is still applied (2^40 passes would hang
 * the server). */
Test(barrier, a_clock_far_ahead_is_passed_in_one_move, .timeout = 5) {
    make("sync", 2);
    hello(0, 0), hello(1, 0);
    cr_assert_eq(push(0, 0, 0.25f), PS_OK, "%s", err.msg);
    cr_assert_eq(clock(0, 1), PS_OK, "%s", err.msg);
    bool adv;
    cr_assert_eq(ps_barrier_adopt(b, 1, 1ull << 40, &adv, &err), PS_OK, "%s", err.msg);
    cr_assert_float_eq(weight(), -0.5f, 1e-6, "step 0 applied once it was complete");
    cr_assert_eq(ps_barrier_clock(b, 1, 1ull << 40, true, &adv, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_drop(b, 0, &adv, &err), PS_OK, "%s", err.msg);
    cr_assert_float_eq(weight(), -0.5f, 1e-6, "the empty steps change nothing");
}

/* --- replay ----------------------------------------------------------------------------------- */

Test(replay, a_session_s_step_and_part_are_applied_once) {
    ps_replay *r;
    cr_assert_eq(ps_replay_create(2, &r, &err), PS_OK);
    cr_assert(!ps_replay_seen(r, 0, 42, 1, 0));
    ps_replay_mark(r, 0, 42, 1, 0);
    ps_replay_mark(r, 0, 42, 1, 1);
    cr_assert(ps_replay_seen(r, 0, 42, 1, 0));
    cr_assert(ps_replay_seen(r, 0, 42, 1, 1));
    cr_assert(!ps_replay_seen(r, 0, 42, 1, 2), "the next part of the step");
    cr_assert(!ps_replay_seen(r, 0, 42, 2, 0), "the next step");
    cr_assert(!ps_replay_seen(r, 1, 42, 1, 0), "another rank");
    cr_assert(!ps_replay_seen(r, 0, 43, 1, 0), "another session: a restarted worker");
    cr_assert(!ps_replay_seen(r, 0, 42, 0, 0), "step 0 is not numbered");
    ps_replay_mark(r, 0, 43, 1, 0); /* the new session takes the slot */
    cr_assert(!ps_replay_seen(r, 0, 42, 1, 0));
    cr_assert(!ps_replay_seen(r, 5, 42, 1, 0), "a rank out of range is never a repeat");
    ps_replay_destroy(r);
}

/* --- restored from a checkpoint (ps_barrier_restore) ----------------------------------------- */

/* Rank 1 finished before the restart: the restored barrier does not wait for it. */
Test(barrier, a_restored_finished_rank_is_not_waited_for) {
    make("sync", 2);
    cr_assert_eq(ps_barrier_restore(b, (const uint64_t[]){3, 3},
                                    (const uint8_t[]){PS_RANK_LIVE, PS_RANK_FINISHED}, 3, &err),
                 PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_min_clock(b), 3);
    cr_assert(!ps_barrier_is_live(b, 1));
    cr_assert_eq(hello(0, 3), 3);
    cr_assert_eq(push(0, 3, 0.25f), PS_OK, "%s", err.msg);
    cr_assert_eq(clock(0, 4), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_min_clock(b), 4, "only rank 0 is waited for");
    cr_assert_float_eq(weight(), -0.5f, 1e-6, "step 3 applied without rank 1");
    cr_assert_eq(hello(1, 3), 3, "a finished rank stays finished");
    cr_assert(!ps_barrier_is_live(b, 1));
}

/* The control: a fresh barrier (no restore) holds step 3 for rank 1. */
Test(barrier, without_restore_a_finished_rank_is_waited_for) {
    make("sync", 2);
    cr_assert_eq(hello(0, 3), 3);
    cr_assert_eq(push(0, 3, 0.25f), PS_OK, "%s", err.msg);
    cr_assert_eq(clock(0, 4), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_min_clock(b), 0);
    cr_assert_float_eq(weight(), 0.0f, 0.0);
}

/* A restored clock is a lower bound: a Hello saying less starts there, one saying more wins. */
Test(barrier, a_restored_clock_is_a_lower_bound_for_hello) {
    make("ssp", 2);
    cr_assert_eq(ps_barrier_restore(b, (const uint64_t[]){5, 5},
                                    (const uint8_t[]){PS_RANK_LIVE, PS_RANK_LIVE}, 0, &err),
                 PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_min_clock(b), 5);
    cr_assert_eq(hello(0, 2), 5);
    cr_assert_eq(hello(1, 9), 9);
    cr_assert_eq(ps_barrier_min_clock(b), 5);
    uint64_t clocks[2];
    uint8_t states[2];
    uint64_t applied = 77;
    ps_barrier_save(b, clocks, states, &applied);
    cr_assert(clocks[0] == 5 && clocks[1] == 9 && states[0] == PS_RANK_LIVE && applied == 0);
}

/* A restored dropped rank rejoins as a dropped one does: at the live minimum. */
Test(barrier, a_restored_dropped_rank_rejoins_at_the_live_minimum) {
    make("ssp", 2);
    cr_assert_eq(ps_barrier_restore(b, (const uint64_t[]){8, 2},
                                    (const uint8_t[]){PS_RANK_LIVE, PS_RANK_DROPPED}, 0, &err),
                 PS_OK, "%s", err.msg);
    cr_assert_eq(ps_barrier_min_clock(b), 8);
    cr_assert_eq(hello(1, 2), 8);
}

Test(barrier, restore_refuses_an_unknown_state) {
    make("sync", 2);
    cr_assert_eq(ps_barrier_restore(b, (const uint64_t[]){1, 1}, (const uint8_t[]){0, 3}, 0, &err),
                 PS_INVALID_ARG);
    cr_assert_not_null(strstr(err.msg, "rank 1 has state 3"), "%s", err.msg);
    cr_assert_eq(ps_barrier_rank_clock(b, 0), 0, "nothing changed");
}
