/* barrier.c - see barrier.h. In sync mode no rank can run ahead of the step being gathered (its
 * pull for the next step waits for it), so one step is held at a time: held[rank][table]. */
#include "barrier.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

typedef struct {
    uint8_t *keys;  /* (n) u64 LE */
    uint8_t *grads; /* (n, dim) f32 LE */
    size_t n;       /* rows */
    size_t keys_cap, grads_cap; /* bytes */
} held_rows;

struct ps_barrier {
    ps_consistency mode;
    uint32_t W, T;
    ps_store *stores[PS_MAX_TABLES]; /* borrowed */
    uint64_t *clock;                 /* (W) */
    uint8_t *state;                  /* (W) rank_state */
    uint8_t *seen;                   /* (W) the rank has said Hello to this barrier */
    bool started;                    /* sync: a push was held or a step applied */
    uint64_t min_clock;              /* over live ranks; UINT64_MAX when none */
    uint64_t applied;                /* sync: steps whose combined update is applied */
    held_rows *held;                 /* (W * T) sync: this step's pushes */
    uint8_t *cat_keys, *cat_grads;   /* scratch: one table's combined rows, keys unique */
    size_t cat_keys_cap, cat_grads_cap; /* bytes */
    /* scratch: key -> row of cat_*, open addressing, cleared per table by a generation stamp */
    uint64_t *mkeys;
    uint32_t *mrow, *mstamp;
    size_t mcap;
    uint32_t mgen;
};

static size_t row_bytes(const ps_barrier *b, uint32_t t) {
    return ps_store_spec(b->stores[t])->dim * sizeof(float);
}

ps_status ps_barrier_create(const ps_job_config *job, ps_store *const *stores, ps_barrier **out,
                            ps_error *err) {
    ps_barrier *b = calloc(1, sizeof(*b));
    if (b == NULL) return ps_error_set(err, PS_NOMEM, "barrier: out of memory");
    b->mode = job->consistency;
    b->W = job->num_workers, b->T = (uint32_t)job->num_tables;
    for (uint32_t t = 0; t < b->T; t++) b->stores[t] = stores[t];
    b->clock = calloc(b->W, sizeof(*b->clock));
    b->state = calloc(b->W, sizeof(*b->state));
    b->seen = calloc(b->W, sizeof(*b->seen));
    b->held = calloc((size_t)b->W * (b->T ? b->T : 1), sizeof(*b->held));
    if (b->clock == NULL || b->state == NULL || b->seen == NULL || b->held == NULL) {
        ps_barrier_destroy(b);
        return ps_error_set(err, PS_NOMEM, "barrier: out of memory");
    }
    *out = b;
    return PS_OK;
}

void ps_barrier_destroy(ps_barrier *b) {
    if (b == NULL) return;
    for (size_t i = 0; b->held && i < (size_t)b->W * b->T; i++)
        free(b->held[i].keys), free(b->held[i].grads);
    free(b->held), free(b->clock), free(b->state), free(b->seen), free(b->cat_keys), free(b->cat_grads);
    free(b->mkeys), free(b->mrow), free(b->mstamp);
    free(b);
}

static void update_min(ps_barrier *b) {
    uint64_t m = UINT64_MAX;
    for (uint32_t r = 0; r < b->W; r++)
        if (b->state[r] == PS_RANK_LIVE && b->clock[r] < m) m = b->clock[r];
    b->min_clock = m;
}

static ps_status grow_bytes(uint8_t **p, size_t *cap, size_t need) {
    if (need <= *cap) return PS_OK;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    uint8_t *q = realloc(*p, n);
    if (q == NULL) return PS_NOMEM;
    *p = q, *cap = n;
    return PS_OK;
}

/* The key map for up to n distinct keys, emptied. */
static ps_status map_reset(ps_barrier *b, size_t n) {
    if (b->mcap < 2 * n) {
        size_t cap = 1024;
        while (cap < 2 * n) cap *= 2;
        free(b->mkeys), free(b->mrow), free(b->mstamp);
        b->mkeys = malloc(cap * sizeof(*b->mkeys));
        b->mrow = malloc(cap * sizeof(*b->mrow));
        b->mstamp = calloc(cap, sizeof(*b->mstamp));
        b->mcap = b->mkeys && b->mrow && b->mstamp ? cap : 0, b->mgen = 0;
        if (b->mcap == 0) return PS_NOMEM;
    }
    if (++b->mgen == 0) { /* stamps wrapped */
        memset(b->mstamp, 0, b->mcap * sizeof(*b->mstamp));
        b->mgen = 1;
    }
    return PS_OK;
}

/* Applies step b->applied: the held rows of the n ranks that ended it. Per table, the rows of
 * every rank are combined in rank order, g = g_0/n + g_1/n + ... (a row absent from a rank adds
 * nothing), into one row per key, and pushed once. */
static ps_status apply_step(ps_barrier *b, uint32_t n, ps_error *err) {
    const float scale = 1.0f / (float)n; /* exact for n a power of two */
    for (uint32_t t = 0; t < b->T; t++) {
        const size_t rb = row_bytes(b, t), dim = rb / sizeof(float);
        size_t total = 0;
        for (uint32_t r = 0; r < b->W; r++) total += b->held[(size_t)r * b->T + t].n;
        if (total == 0) continue;
        if (grow_bytes(&b->cat_keys, &b->cat_keys_cap, total * 8) != PS_OK ||
            grow_bytes(&b->cat_grads, &b->cat_grads_cap, total * rb) != PS_OK ||
            map_reset(b, total) != PS_OK)
            return ps_error_set(err, PS_NOMEM, "barrier: out of memory combining %zu rows", total);
        const size_t mask = b->mcap - 1;
        float *out = (float *)(void *)b->cat_grads;
        size_t rows = 0;
        for (uint32_t r = 0; r < b->W; r++) {
            held_rows *h = &b->held[(size_t)r * b->T + t];
            const float *g = (const float *)(void *)h->grads;
            for (size_t i = 0; i < h->n; i++, g += dim) {
                uint64_t key;
                memcpy(&key, h->keys + 8 * i, 8);
                size_t at = (size_t)(ps_mix64(key) & mask);
                while (b->mstamp[at] == b->mgen && b->mkeys[at] != key) at = (at + 1) & mask;
                float *o;
                if (b->mstamp[at] != b->mgen) { /* first rank with this row */
                    b->mstamp[at] = b->mgen, b->mkeys[at] = key, b->mrow[at] = (uint32_t)rows;
                    memcpy(b->cat_keys + 8 * rows, &key, 8);
                    o = out + rows++ * dim;
                    for (size_t d = 0; d < dim; d++) o[d] = g[d] * scale;
                } else {
                    o = out + (size_t)b->mrow[at] * dim;
                    for (size_t d = 0; d < dim; d++) o[d] += g[d] * scale;
                }
            }
            h->n = 0;
        }
        if (ps_store_push(b->stores[t], b->cat_keys, b->cat_grads, rows, err) != PS_OK)
            return err ? err->code : PS_NOMEM;
    }
    return PS_OK;
}

static bool holds(const ps_barrier *b, uint32_t rank) {
    for (uint32_t t = 0; t < b->T; t++)
        if (b->held[(size_t)rank * b->T + t].n > 0) return true;
    return false;
}

/* The rank's push of the step being gathered goes, unless it ended that step: an ended step's
 * push is complete and counts (a retry of it is a no-op, so it is never re-sent). */
static void discard_held(ps_barrier *b, uint32_t rank) {
    if (b->mode == PS_SYNC && b->clock[rank] > b->applied) return;
    for (uint32_t t = 0; t < b->T; t++) b->held[(size_t)rank * b->T + t].n = 0;
}

/* sync: applies every step that no live rank holds back any more. Only step `applied` can hold
 * pushes (a push for a later one is refused), so once it is applied the steps up to the
 * minimum clock are empty and passed in one move: a clock far ahead costs no loop. */
static ps_status complete(ps_barrier *b, ps_error *err) {
    if (b->mode != PS_SYNC) return PS_OK;
    while (b->applied < b->min_clock) {
        uint32_t n = 0;   /* ranks that ended step `applied` (a rank is never past it), and
                             dropped ones whose push of it is kept (ps_barrier_drop) */
        uint64_t top = 0; /* the steps up to here are ended by some rank counted */
        bool any = false;
        for (uint32_t r = 0; r < b->W; r++) {
            const bool counted = b->state[r] != PS_RANK_DROPPED || holds(b, r);
            n += b->clock[r] > b->applied && counted;
            if (counted && b->clock[r] > top) top = b->clock[r];
            any = any || holds(b, r);
        }
        if (n == 0) break; /* every rank left before this step */
        if (!any) { /* nothing held: no update, as for every step after it */
            b->applied = top < b->min_clock ? top : b->min_clock;
            b->started = true;
            break;
        }
        if (apply_step(b, n, err) != PS_OK) return err ? err->code : PS_NOMEM;
        b->applied++;
        b->started = true;
    }
    return PS_OK;
}

static ps_status check_rank(const ps_barrier *b, uint32_t rank, const char *what, ps_error *err) {
    if (rank >= b->W)
        return ps_error_set(err, PS_INVALID_ARG, "%s from rank %u, the job has %u workers", what,
                            rank, b->W);
    if (b->state[rank] == PS_RANK_DROPPED)
        return ps_error_set(err, PS_INVALID_ARG,
                            "%s from rank %u, which was dropped from the barrier at step %llu",
                            what, rank, (unsigned long long)b->clock[rank]);
    if (b->state[rank] == PS_RANK_FINISHED)
        return ps_error_set(err, PS_INVALID_ARG, "%s from rank %u, which has finished", what,
                            rank);
    return PS_OK;
}

ps_status ps_barrier_push(ps_barrier *b, uint32_t rank, uint32_t table, const uint8_t *keys,
                          const uint8_t *grads, size_t n, uint64_t clock, ps_error *err) {
    if (check_rank(b, rank, "Push", err) != PS_OK) return err->code;
    if (clock < b->clock[rank]) return PS_OK; /* a step it ended here: a retry, applied once */
    if (clock != b->clock[rank])
        return ps_error_set(err, PS_INVALID_ARG, "Push for step %llu from rank %u, at step %llu",
                            (unsigned long long)clock, rank,
                            (unsigned long long)b->clock[rank]);
    if (n == 0) return PS_OK; /* nothing to apply or hold (F7) */
    if (b->mode == PS_SSP) return ps_store_push(b->stores[table], keys, grads, n, err);
    if (clock != b->applied)
        return ps_error_set(err, PS_INVALID_ARG,
                            "Push for step %llu from rank %u before step %llu is complete",
                            (unsigned long long)clock, rank, (unsigned long long)b->applied);
    held_rows *h = &b->held[(size_t)rank * b->T + table];
    const size_t rb = row_bytes(b, table);
    if (grow_bytes(&h->keys, &h->keys_cap, (h->n + n) * 8) != PS_OK ||
        grow_bytes(&h->grads, &h->grads_cap, (h->n + n) * rb) != PS_OK)
        return ps_error_set(err, PS_NOMEM, "barrier: out of memory holding %zu rows", h->n + n);
    memcpy(h->keys + h->n * 8, keys, n * 8);
    memcpy(h->grads + h->n * rb, grads, n * rb);
    h->n += n;
    b->started = true;
    return PS_OK;
}

ps_status ps_barrier_clock(ps_barrier *b, uint32_t rank, uint64_t clock, bool finished,
                           bool *advanced, ps_error *err) {
    *advanced = false;
    if (finished && rank < b->W && b->state[rank] == PS_RANK_FINISHED)
        return PS_OK; /* said twice */
    if (check_rank(b, rank, "Clock", err) != PS_OK) return err->code;
    const uint64_t want = finished ? b->clock[rank] : b->clock[rank] + 1;
    if (!finished && clock < want) return PS_OK; /* a step it ended here: a retry */
    if (clock != want)
        return ps_error_set(err, PS_INVALID_ARG, "Clock %llu%s from rank %u at step %llu",
                            (unsigned long long)clock, finished ? " (finished)" : "", rank,
                            (unsigned long long)b->clock[rank]);
    const uint64_t before = b->min_clock;
    if (finished) b->state[rank] = PS_RANK_FINISHED;
    else b->clock[rank] = clock;
    update_min(b);
    *advanced = b->min_clock != before;
    return complete(b, err);
}


/* Moves rank's clock up to c; the minimum and the sync steps follow. */
static ps_status raise_clock(ps_barrier *b, uint32_t rank, uint64_t c, bool *advanced,
                             ps_error *err) {
    const uint64_t before = b->min_clock;
    if (c > b->clock[rank]) b->clock[rank] = c;
    update_min(b);
    *advanced = b->min_clock != before;
    return complete(b, err);
}

ps_status ps_barrier_hello(ps_barrier *b, uint32_t rank, uint64_t clock, uint64_t *start,
                           bool *advanced, ps_error *err) {
    *advanced = false;
    if (rank >= b->W)
        return ps_error_set(err, PS_INVALID_ARG, "Hello from rank %u, the job has %u workers",
                            rank, b->W);
    if (b->state[rank] == PS_RANK_FINISHED) { /* it stays so: only its finish can be retried */
        *start = b->clock[rank];
        return PS_OK;
    }
    const uint64_t floor = b->mode == PS_SYNC ? b->applied : 0;
    uint64_t c = clock > floor ? clock : floor;
    discard_held(b, rank);
    if (b->state[rank] == PS_RANK_DROPPED) {
        /* live ranks that went past the steps it had ended went on without it: it rejoins
         * where they are. Else (it was dropped because it reconnected, its old connection
         * closing first) it is a reconnect: it redoes `clock`, steps it ended are no-ops. */
        const uint64_t ended = b->clock[rank], live = b->min_clock; /* UINT64_MAX: none */
        const bool passed = live != UINT64_MAX && live > ended;
        uint64_t now = ended > c ? ended : c;
        if (passed && live > now) now = live;
        b->state[rank] = PS_RANK_LIVE;
        b->clock[rank] = now;
        if (passed) c = now;
    } else if (!b->seen[rank]) { /* first word from it: its clock is the one it says, at least
                                  * the one a checkpoint restored (0 otherwise) */
        if (b->clock[rank] > c) c = b->clock[rank];
        b->clock[rank] = c;
        /* a restarted server: the step being gathered is where the workers are */
        if (b->mode == PS_SYNC && !b->started && c > b->applied) b->applied = c;
    } else { /* reconnecting: it redoes `clock`; steps it ended here are acknowledged as
              * no-ops (its clock here is never below the steps applied) */
        c = clock;
        if (c > b->clock[rank]) b->clock[rank] = c;
    }
    b->seen[rank] = 1;
    *start = c;
    return raise_clock(b, rank, c, advanced, err);
}

ps_status ps_barrier_adopt(ps_barrier *b, uint32_t rank, uint64_t clock, bool *advanced,
                           ps_error *err) {
    *advanced = false;
    if (rank < b->W && b->state[rank] == PS_RANK_FINISHED) return PS_OK; /* stays finished */
    if (check_rank(b, rank, "Clock (adopt)", err) != PS_OK) return err->code;
    return raise_clock(b, rank, clock, advanced, err);
}

ps_status ps_barrier_drop(ps_barrier *b, uint32_t rank, bool *advanced, ps_error *err) {
    *advanced = false;
    if (rank >= b->W || b->state[rank] != PS_RANK_LIVE) return PS_OK;
    b->state[rank] = PS_RANK_DROPPED;
    discard_held(b, rank);
    const uint64_t before = b->min_clock;
    update_min(b);
    *advanced = b->min_clock != before;
    return complete(b, err);
}

void ps_barrier_save(const ps_barrier *b, uint64_t *clocks, uint8_t *states, uint64_t *applied) {
    memcpy(clocks, b->clock, b->W * sizeof(*clocks));
    memcpy(states, b->state, b->W);
    *applied = b->mode == PS_SYNC ? b->applied : 0;
}

ps_status ps_barrier_restore(ps_barrier *b, const uint64_t *clocks, const uint8_t *states,
                             uint64_t applied, ps_error *err) {
    for (uint32_t r = 0; r < b->W; r++)
        if (states[r] > PS_RANK_DROPPED)
            return ps_error_set(err, PS_INVALID_ARG, "barrier: rank %u has state %u", r,
                                states[r]);
    memcpy(b->clock, clocks, b->W * sizeof(*clocks));
    memcpy(b->state, states, b->W);
    if (b->mode == PS_SYNC) {
        b->applied = applied;
        /* A checkpoint holds no pushes of the step being gathered: a rank that had ended it is
         * back at it, so its retried step is applied (not acknowledged as a replay) and the mean
         * counts only ranks whose pushes are here again. */
        for (uint32_t r = 0; r < b->W; r++)
            if (b->clock[r] > applied) b->clock[r] = applied;
    }
    update_min(b);
    return PS_OK;
}

uint64_t ps_barrier_min_clock(const ps_barrier *b) { return b->min_clock; }

size_t ps_barrier_slowest(const ps_barrier *b, uint32_t *ranks, size_t max) {
    size_t n = 0;
    for (uint32_t r = 0; r < b->W; r++) {
        if (b->state[r] != PS_RANK_LIVE || b->clock[r] != b->min_clock) continue;
        if (n < max) ranks[n] = r;
        n++;
    }
    return n;
}

uint64_t ps_barrier_rank_clock(const ps_barrier *b, uint32_t rank) {
    return rank < b->W ? b->clock[rank] : 0;
}

bool ps_barrier_is_live(const ps_barrier *b, uint32_t rank) {
    return rank < b->W && b->state[rank] == PS_RANK_LIVE;
}
