/* pool.c - helpers sleep on a condition variable until the generation changes, run their part,
 * and the last one to finish wakes the caller. */
#include "pool.h"

#include <stdbool.h>
#include <stdlib.h>

#include <uv.h>

struct ps_pool {
    unsigned n; /* parts: helpers + the caller */
    uv_thread_t *threads;
    uv_mutex_t mu;
    uv_cond_t work, done;
    unsigned long gen; /* bumped per task */
    unsigned pending;  /* helper parts not finished */
    bool quit;
    ps_pool_fn fn;
    void *arg;
};

typedef struct {
    ps_pool *p;
    unsigned part;
} helper_arg;

static void helper(void *a) {
    helper_arg h = *(helper_arg *)a;
    free(a);
    ps_pool *p = h.p;
    unsigned long seen = 0;
    uv_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->gen == seen) uv_cond_wait(&p->work, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        ps_pool_fn fn = p->fn;
        void *arg = p->arg;
        uv_mutex_unlock(&p->mu);
        fn(arg, h.part, p->n);
        uv_mutex_lock(&p->mu);
        if (--p->pending == 0) uv_cond_signal(&p->done);
    }
    uv_mutex_unlock(&p->mu);
}

ps_status ps_pool_create(unsigned threads, ps_pool **out, ps_error *err) {
    if (threads == 0) threads = 1;
    ps_pool *p = calloc(1, sizeof(*p));
    if (p == NULL) return ps_error_set(err, PS_NOMEM, "pool: out of memory");
    p->threads = calloc(threads, sizeof(*p->threads));
    if (p->threads == NULL || uv_mutex_init(&p->mu) != 0) {
        free(p->threads);
        free(p);
        return ps_error_set(err, PS_NOMEM, "pool: out of memory");
    }
    bool work_ok = uv_cond_init(&p->work) == 0, done_ok = work_ok && uv_cond_init(&p->done) == 0;
    if (!done_ok) {
        if (work_ok) uv_cond_destroy(&p->work);
        uv_mutex_destroy(&p->mu);
        free(p->threads);
        free(p);
        return ps_error_set(err, PS_NOMEM, "pool: cannot create condition variables");
    }
    p->n = 1;
    for (unsigned i = 1; i < threads; i++) {
        helper_arg *h = malloc(sizeof(*h));
        if (h == NULL) break;
        *h = (helper_arg){p, i};
        if (uv_thread_create(&p->threads[i], helper, h) != 0) {
            free(h);
            break;
        }
        p->n++;
    }
    *out = p;
    return PS_OK;
}

void ps_pool_destroy(ps_pool *p) {
    if (p == NULL) return;
    uv_mutex_lock(&p->mu);
    p->quit = true;
    uv_cond_broadcast(&p->work);
    uv_mutex_unlock(&p->mu);
    for (unsigned i = 1; i < p->n; i++) uv_thread_join(&p->threads[i]);
    uv_cond_destroy(&p->work);
    uv_cond_destroy(&p->done);
    uv_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

unsigned ps_pool_size(const ps_pool *p) { return p->n; }

void ps_pool_run(ps_pool *p, ps_pool_fn fn, void *arg) {
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    uv_mutex_lock(&p->mu);
    p->fn = fn, p->arg = arg, p->pending = p->n - 1;
    p->gen++;
    uv_cond_broadcast(&p->work);
    uv_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    uv_mutex_lock(&p->mu);
    while (p->pending > 0) uv_cond_wait(&p->done, &p->mu);
    uv_mutex_unlock(&p->mu);
}
