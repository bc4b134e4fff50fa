/* replay.c - see replay.h. One slot per rank: the last session heard from and its last
 * (step, part). Two processes claiming one rank (tests, tools) alternate sessions and so never
 * see each other's pushes as repeats. */
#include "replay.h"

#include <stdlib.h>

typedef struct {
    uint64_t session, step;
    uint32_t part;
} slot;

struct ps_replay {
    uint32_t W;
    slot *s; /* (W) */
};

ps_status ps_replay_create(uint32_t num_workers, ps_replay **out, ps_error *err) {
    ps_replay *r = calloc(1, sizeof(*r));
    if (r != NULL) r->s = calloc(num_workers ? num_workers : 1, sizeof(*r->s));
    if (r == NULL || r->s == NULL) {
        free(r);
        return ps_error_set(err, PS_NOMEM, "replay: out of memory");
    }
    r->W = num_workers;
    *out = r;
    return PS_OK;
}

void ps_replay_destroy(ps_replay *r) {
    if (r == NULL) return;
    free(r->s);
    free(r);
}

bool ps_replay_seen(const ps_replay *r, uint32_t rank, uint64_t session, uint64_t step,
                    uint32_t part) {
    if (step == 0 || rank >= r->W) return false;
    const slot *s = &r->s[rank];
    if (s->session != session || s->step == 0) return false;
    return step < s->step || (step == s->step && part <= s->part);
}

void ps_replay_mark(ps_replay *r, uint32_t rank, uint64_t session, uint64_t step, uint32_t part) {
    if (step == 0 || rank >= r->W) return;
    r->s[rank] = (slot){session, step, part};
}
