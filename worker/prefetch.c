/* prefetch.c - one producer thread, a ring of n slots and three counters under one mutex:
 * filled (items the producer has finished), taken and released (by the consumer). The producer
 * may fill item k once k - released < n, i.e. its slot's previous item was released. */
#include "prefetch.h"

#include <stdlib.h>

#include <uv.h>

struct ps_prefetch {
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    size_t n;
    ps_prefetch_fill fill;
    void *ud;
    size_t filled, taken, released;
    bool ended;     /* the last item is filled: no more follow */
    bool failed;    /* ... and fill failed on it with err */
    bool cancel;    /* stop asked: fill nothing more */
    ps_error err;
    uint64_t busy_ns; /* time inside fill() */
};

static void producer(void *arg) {
    ps_prefetch *p = arg;
    uv_mutex_lock(&p->mu);
    while (!p->ended) {
        while (!p->cancel && p->filled - p->released >= p->n) uv_cond_wait(&p->cv, &p->mu);
        if (p->cancel) break;
        const size_t slot = p->filled % p->n;
        uv_mutex_unlock(&p->mu);
        bool last = false;
        ps_error e = {0};
        const uint64_t t0 = uv_hrtime();
        ps_status st = p->fill(p->ud, slot, &last, &e);
        const uint64_t spent = uv_hrtime() - t0;
        uv_mutex_lock(&p->mu);
        p->busy_ns += spent;
        p->filled++;
        if (st != PS_OK) {
            p->failed = true, last = true;
            p->err = e;
            if (p->err.code == PS_OK) p->err.code = st; /* a fill that forgot its message */
        }
        p->ended = last;
        uv_cond_broadcast(&p->cv);
    }
    uv_mutex_unlock(&p->mu);
}

ps_status ps_prefetch_start(size_t n_slots, ps_prefetch_fill fill, void *ud, ps_prefetch **out,
                            ps_error *err) {
    *out = NULL;
    if (n_slots == 0 || fill == NULL)
        return ps_error_set(err, PS_INVALID_ARG, "prefetch: %s", n_slots ? "no fill" : "0 slots");
    ps_prefetch *p = calloc(1, sizeof(*p));
    if (p == NULL) return ps_error_set(err, PS_NOMEM, "prefetch: out of memory");
    p->n = n_slots, p->fill = fill, p->ud = ud;
    if (uv_mutex_init(&p->mu) != 0) {
        free(p);
        return ps_error_set(err, PS_IO, "prefetch: cannot make a mutex");
    }
    if (uv_cond_init(&p->cv) != 0) {
        uv_mutex_destroy(&p->mu);
        free(p);
        return ps_error_set(err, PS_IO, "prefetch: cannot make a condition variable");
    }
    int rc = uv_thread_create(&p->thread, producer, p);
    if (rc != 0) {
        uv_cond_destroy(&p->cv);
        uv_mutex_destroy(&p->mu);
        free(p);
        return ps_error_set(err, PS_IO, "prefetch: cannot start a thread: %s", uv_strerror(rc));
    }
    *out = p;
    return PS_OK;
}

ps_status ps_prefetch_take(ps_prefetch *p, bool *last, ps_error *err) {
    uv_mutex_lock(&p->mu);
    if (p->ended && p->taken == p->filled) {
        uv_mutex_unlock(&p->mu);
        *last = true;
        return ps_error_set(err, PS_INVALID_ARG, "prefetch: taking past the last item");
    }
    while (p->taken == p->filled) uv_cond_wait(&p->cv, &p->mu);
    p->taken++;
    *last = p->ended && p->taken == p->filled;
    ps_status st = PS_OK;
    if (*last && p->failed) {
        st = p->err.code;
        if (err != NULL) *err = p->err;
    }
    uv_mutex_unlock(&p->mu);
    return st;
}

void ps_prefetch_release(ps_prefetch *p) {
    uv_mutex_lock(&p->mu);
    if (p->released < p->taken) p->released++;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
}

double ps_prefetch_busy_seconds(ps_prefetch *p) {
    uv_mutex_lock(&p->mu);
    const double s = (double)p->busy_ns * 1e-9;
    uv_mutex_unlock(&p->mu);
    return s;
}

void ps_prefetch_stop(ps_prefetch *p) {
    if (p == NULL) return;
    uv_mutex_lock(&p->mu);
    p->cancel = true;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
    uv_thread_join(&p->thread);
    uv_cond_destroy(&p->cv);
    uv_mutex_destroy(&p->mu);
    free(p);
}
