/* test_prefetch.c - the prep thread's ring: items in order into slot k % n, never more than n
 * ahead of the consumer's releases, a failure delivered with its item, stop at any point. */
#include <criterion/criterion.h>
#include <stdatomic.h>

#include "prefetch.h"

TestSuite(prefetch, .timeout = 20);

enum { SLOTS = 3, ITEMS = 50 };

typedef struct {
    int slot_item[SLOTS];   /* the item each slot holds */
    int next;               /* the producer's next item (producer thread only) */
    int fail_at;            /* this item fails (-1: none) */
    int end_at;             /* the item with *last (its slot holds -1, like an empty batch) */
    atomic_int released;    /* the consumer's releases so far */
    atomic_int worst_ahead; /* max over fills of item - released: must stay < SLOTS */
} ring;

static ps_status fill(void *ud, size_t slot, bool *last, ps_error *err) {
    ring *r = ud;
    const int k = r->next++;
    const int ahead = k - atomic_load(&r->released);
    if (ahead > atomic_load(&r->worst_ahead)) atomic_store(&r->worst_ahead, ahead);
    cr_assert_eq(slot, (size_t)(k % SLOTS), "item %d filled into slot %zu", k, slot);
    if (k == r->fail_at) return ps_error_set(err, PS_DATA, "rows.svm:%d: bad line", k + 1);
    r->slot_item[slot] = k == r->end_at ? -1 : k;
    *last = k == r->end_at;
    return PS_OK;
}

Test(prefetch, items_arrive_in_order_and_never_more_than_n_ahead_of_releases) {
    static ring r = {.fail_at = -1, .end_at = ITEMS};
    ps_prefetch *p;
    ps_error err = {0};
    cr_assert_eq(ps_prefetch_start(SLOTS, fill, &r, &p, &err), PS_OK, "%s", err.msg);
    int held = 0; /* taken, not released: the loop keeps 2 like the training ring does */
    for (int k = 0; k <= ITEMS; k++) {
        bool last;
        cr_assert_eq(ps_prefetch_take(p, &last, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(r.slot_item[k % SLOTS], k == ITEMS ? -1 : k, "item %d", k);
        cr_assert_eq(last, k == ITEMS, "item %d", k);
        if (++held == 2) {
            atomic_fetch_add(&r.released, 1);
            ps_prefetch_release(p);
            held--;
        }
    }
    bool last = false;
    cr_assert_eq(ps_prefetch_take(p, &last, &err), PS_INVALID_ARG);
    cr_assert(last);
    cr_assert_lt(atomic_load(&r.worst_ahead), SLOTS);
    cr_assert_geq(ps_prefetch_busy_seconds(p), 0.0);
    ps_prefetch_stop(p);
}

Test(prefetch, a_failed_fill_is_the_last_item_and_carries_its_message) {
    static ring r = {.fail_at = 4, .end_at = ITEMS};
    ps_prefetch *p;
    ps_error err = {0};
    cr_assert_eq(ps_prefetch_start(SLOTS, fill, &r, &p, &err), PS_OK);
    for (int k = 0; k < 4; k++) {
        bool last;
        cr_assert_eq(ps_prefetch_take(p, &last, &err), PS_OK);
        cr_assert_not(last);
        atomic_fetch_add(&r.released, 1);
        ps_prefetch_release(p);
    }
    bool last = false;
    cr_assert_eq(ps_prefetch_take(p, &last, &err), PS_DATA);
    cr_assert(last);
    cr_assert_str_eq(err.msg, "rows.svm:5: bad line");
    cr_assert_eq(ps_prefetch_take(p, &last, &err), PS_INVALID_ARG);
    ps_prefetch_stop(p);
    cr_assert_eq(r.next, 5, "the producer went on after a failure: %d fills", r.next);
}

/* The consumer leaves early (an error, SIGINT) while the producer waits for a free slot. */
Test(prefetch, stop_while_the_producer_waits_for_a_slot) {
    static ring r = {.fail_at = -1, .end_at = ITEMS};
    ps_prefetch *p;
    cr_assert_eq(ps_prefetch_start(SLOTS, fill, &r, &p, NULL), PS_OK);
    bool last;
    cr_assert_eq(ps_prefetch_take(p, &last, NULL), PS_OK);
    ps_prefetch_stop(p); /* must join: the producer fills 3 items at most, then waits */
    cr_assert_leq(r.next, SLOTS);
    ps_prefetch_stop(NULL);
}

Test(prefetch, start_refuses_zero_slots_and_no_fill) {
    static ring r = {.fail_at = -1, .end_at = ITEMS};
    ps_prefetch *p = (ps_prefetch *)&r;
    ps_error err = {0};
    cr_assert_eq(ps_prefetch_start(0, fill, &r, &p, &err), PS_INVALID_ARG);
    cr_assert_null(p);
    cr_assert_str_eq(err.msg, "prefetch: 0 slots");
    cr_assert_eq(ps_prefetch_start(2, NULL, &r, &p, &err), PS_INVALID_ARG);
    cr_assert_str_eq(err.msg, "prefetch: no fill");
}
