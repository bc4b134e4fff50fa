/* bench_step_bound.c - the ceiling of a synchronous data-parallel step on this machine, with no
 * transport at all: the Fashion-MNIST job's MLP (784-256-10, softmax, sparse categorical
 * cross-entropy, worker/mlp.c through CBLAS) and its AdaGrad (server/adagrad.c, row by row as a
 * server applies a push), on random inputs of the same shape (half the pixels 0, as in the data):
 *   (a) one thread, batch 128: forward/backward, then the update - what PyTorch's loop does on
 *       its one thread;
 *   (b) two threads of 64 samples sharing one copy of the weights in memory: forward/backward in
 *       parallel, a barrier, thread 0 applies the mean gradient while the other waits, a barrier -
 *       a 1-server 2-worker sync step whose messages cost nothing;
 *   (c) as (b), each thread applying half of the rows;
 *   (d) as (c) with barriers that spin instead of sleeping: what is left once no thread ever waits
 *       to be woken (possible only with exactly one busy thread per core).
 * Any transport (TCP today, shared memory or anything else) only adds to (b) and (c), so (c)/(a)
 * bounds what 1 server + 2 workers can gain over single-threaded training on this machine, before
 * start-up and evaluation. One BLAS thread per thread (OPENBLAS_NUM_THREADS overrides). Medians
 * of --runs runs of --steps steps each (default 469: an epoch of 60 000 samples), the three
 * modes interleaved. Lines to parse start "bench_step_bound ".
 * usage: bench_step_bound [--steps N] [--runs R] */
#include <cblas.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adagrad.h"
#include "bench_util.h"
#include "mlp.h"

#define IN 784
#define HID 256
#define OUT 10
#define BATCH 128
#define SAMPLES 60000

typedef struct {
    float *x, *y;  /* (SAMPLES, IN), (SAMPLES) */
    ps_mlp_params p, acc; /* the weights and their AdaGrad accumulators: one copy */
    ps_adagrad_config opt;
} model;

typedef struct {
    model *m;
    ps_mlp *mlp;
    ps_mlp_params g; /* this thread's gradients */
    int t, threads, steps;
    bool split;      /* (c): each thread applies its half of the rows */
    pthread_barrier_t *bar;
    bool spin;       /* (d): spin_wait instead of bar */
    atomic_uint *arrived; /* (d): arrivals at barriers so far, both threads counted */
    unsigned passed;      /* (d): barriers this thread has passed */
    const ps_mlp_params *other; /* the other thread's gradients (2 threads) */
} worker;

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n, size);
    if (p == NULL) {
        fprintf(stderr, "bench_step_bound: out of memory\n");
        exit(1);
    }
    return p;
}

static void alloc_params(ps_mlp_params *p) {
    p->n_rows = IN;
    p->w[0] = xcalloc((size_t)IN * HID, sizeof(float)), p->b[0] = xcalloc(HID, sizeof(float));
    p->w[1] = xcalloc((size_t)HID * OUT, sizeof(float)), p->b[1] = xcalloc(OUT, sizeof(float));
}
static void free_params(ps_mlp_params *p) {
    for (int l = 0; l < 2; l++) free(p->w[l]), free(p->b[l]);
}

/* Rows [r0, r1) of the parameter rows in server order (w0's IN rows, b0, w1's HID rows, b1):
 * the mean of g and (when set) h, applied by AdaGrad. */
static void apply_rows(model *m, const ps_mlp_params *g, const ps_mlp_params *h, size_t r0,
                       size_t r1, uint64_t step) {
    float mean[HID];
    for (size_t r = r0; r < r1; r++) {
        float *w, *a;
        const float *gr, *hr = NULL;
        size_t dim;
        if (r < IN) {
            dim = HID, w = m->p.w[0] + r * HID, a = m->acc.w[0] + r * HID, gr = g->w[0] + r * HID;
            if (h) hr = h->w[0] + r * HID;
        } else if (r == IN) {
            dim = HID, w = m->p.b[0], a = m->acc.b[0], gr = g->b[0];
            if (h) hr = h->b[0];
        } else if (r < IN + 1 + HID) {
            const size_t k = r - IN - 1;
            dim = OUT, w = m->p.w[1] + k * OUT, a = m->acc.w[1] + k * OUT, gr = g->w[1] + k * OUT;
            if (h) hr = h->w[1] + k * OUT;
        } else {
            dim = OUT, w = m->p.b[1], a = m->acc.b[1], gr = g->b[1];
            if (h) hr = h->b[1];
        }
        if (hr != NULL) {
            for (size_t i = 0; i < dim; i++) mean[i] = (gr[i] + hr[i]) * 0.5f;
            gr = mean;
        }
        ps_adagrad_update(&m->opt, w, a, gr, dim, step);
    }
}
#define ROWS (IN + 1 + HID + 1)

/* A barrier of two threads that never sleeps: the n-th barrier is passed once 2n arrivals are
 * counted. */
static void spin_wait(worker *k) {
    const unsigned target = 2 * ++k->passed;
    atomic_fetch_add_explicit(k->arrived, 1, memory_order_acq_rel);
    while (atomic_load_explicit(k->arrived, memory_order_acquire) < target) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

static void barrier(worker *k) {
    if (k->spin) spin_wait(k);
    else pthread_barrier_wait(k->bar);
}

static void *run(void *arg) {
    worker *k = arg;
    model *m = k->m;
    const size_t B = BATCH / (size_t)k->threads;
    ps_error err = {0};
    for (int s = 0; s < k->steps; s++) {
        const size_t first = ((size_t)s * BATCH + (size_t)k->t * B) % (SAMPLES - BATCH);
        ps_mlp_batch b = {.B = B, .x = m->x + first * IN, .labels = m->y + first};
        if (ps_mlp_forward_backward(k->mlp, &m->p, &b, &k->g, NULL, NULL, &err) != PS_OK) {
            fprintf(stderr, "bench_step_bound: %s\n", err.msg);
            exit(1);
        }
        if (k->threads == 1) {
            apply_rows(m, &k->g, NULL, 0, ROWS, (uint64_t)s + 1);
            continue;
        }
        barrier(k); /* both gradients are in */
        const ps_mlp_params *g0 = k->t == 0 ? &k->g : k->other, *g1 = k->t == 0 ? k->other : &k->g;
        if (k->split) /* w0's rows halved; thread 1 also takes the small rest */
            apply_rows(m, g0, g1, k->t == 0 ? 0 : IN / 2, k->t == 0 ? IN / 2 : ROWS,
                       (uint64_t)s + 1);
        else if (k->t == 0)
            apply_rows(m, g0, g1, 0, ROWS, (uint64_t)s + 1);
        barrier(k); /* the weights are updated: the next step may read them */
    }
    return NULL;
}

static void reset(model *m) {
    uint64_t seed = 7;
    const float lim0 = 0.0765f, lim1 = 0.1459f; /* Glorot-uniform: sqrt(6 / (fan_in + fan_out)) */
    for (size_t i = 0; i < (size_t)IN * HID; i++)
        m->p.w[0][i] = lim0 * (2.0f * (float)(bench_splitmix64(&seed) >> 40) / 16777216.0f - 1);
    for (size_t i = 0; i < (size_t)HID * OUT; i++)
        m->p.w[1][i] = lim1 * (2.0f * (float)(bench_splitmix64(&seed) >> 40) / 16777216.0f - 1);
    memset(m->p.b[0], 0, HID * sizeof(float)), memset(m->p.b[1], 0, OUT * sizeof(float));
    for (int l = 0; l < 2; l++) {
        const size_t nw = l == 0 ? (size_t)IN * HID : (size_t)HID * OUT, nb = l == 0 ? HID : OUT;
        for (size_t i = 0; i < nw; i++) m->acc.w[l][i] = (float)m->opt.initial_accumulator_value;
        for (size_t i = 0; i < nb; i++) m->acc.b[l][i] = (float)m->opt.initial_accumulator_value;
    }
}

/* samples/s of one run of mode: 1 thread, or 2 (split: each applies half; spin: barriers that
 * spin). */
static double one_run(model *m, int threads, bool split, bool spin, int steps) {
    reset(m);
    const ps_mlp_spec spec = {.n_layers = 2, .units = {HID, OUT},
                              .act = {PS_ACT_RELU, PS_ACT_SOFTMAX}, .loss = PS_LOSS_SPARSE_CE};
    worker k[2];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    atomic_uint arrived = 0;
    ps_error err = {0};
    for (int t = 0; t < threads; t++) {
        k[t] = (worker){.m = m, .t = t, .threads = threads, .steps = steps, .split = split,
                        .bar = &bar, .spin = spin, .arrived = &arrived};
        alloc_params(&k[t].g);
        if (ps_mlp_create(&spec, BATCH, &k[t].mlp, &err) != PS_OK) {
            fprintf(stderr, "bench_step_bound: %s\n", err.msg);
            exit(1);
        }
    }
    if (threads == 2) k[0].other = &k[1].g, k[1].other = &k[0].g;
    const double t0 = bench_now_s();
    pthread_t th;
    if (threads == 2 && pthread_create(&th, NULL, run, &k[1]) != 0) {
        fprintf(stderr, "bench_step_bound: cannot start a thread\n");
        exit(1);
    }
    run(&k[0]);
    if (threads == 2) pthread_join(th, NULL);
    const double dt = bench_now_s() - t0;
    for (int t = 0; t < threads; t++) ps_mlp_destroy(k[t].mlp), free_params(&k[t].g);
    pthread_barrier_destroy(&bar);
    return (double)steps * BATCH / dt;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int steps = 469, runs = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_step_bound [--steps N] [--runs R]\n");
            return 2;
        }
    }
    if (steps < 1 || runs < 1 || runs > 15) return 2;
    /* one BLAS thread per thread, as each worker has on this machine and PyTorch has here */
    if (getenv("OPENBLAS_NUM_THREADS") == NULL) openblas_set_num_threads(1);
    model m = {.opt = {.form = PS_ADAGRAD_PYTORCH, .learning_rate = 0.05, .epsilon = 1e-10,
                       .initial_accumulator_value = 0.001}};
    m.x = xcalloc((size_t)SAMPLES * IN, sizeof(float));
    m.y = xcalloc(SAMPLES, sizeof(float));
    uint64_t seed = 42;
    for (size_t i = 0; i < (size_t)SAMPLES * IN; i++) {
        const uint64_t v = bench_splitmix64(&seed);
        m.x[i] = (v & 1) ? (float)(v >> 40) / 16777216.0f : 0.0f; /* half the pixels 0 */
    }
    for (size_t i = 0; i < SAMPLES; i++) m.y[i] = (float)(bench_splitmix64(&seed) % OUT);
    alloc_params(&m.p), alloc_params(&m.acc);
    double a[15], b[15], c[15], d[15];
    for (int r = 0; r < runs; r++) { /* interleaved: the four modes see the same machine */
        a[r] = one_run(&m, 1, false, false, steps);
        b[r] = one_run(&m, 2, false, false, steps);
        c[r] = one_run(&m, 2, true, false, steps);
        d[r] = one_run(&m, 2, true, true, steps);
    }
    qsort(a, (size_t)runs, sizeof(double), cmp_double);
    qsort(b, (size_t)runs, sizeof(double), cmp_double);
    qsort(c, (size_t)runs, sizeof(double), cmp_double);
    qsort(d, (size_t)runs, sizeof(double), cmp_double);
    const double ma = a[runs / 2], mb = b[runs / 2], mc = c[runs / 2], md = d[runs / 2];
    printf("bench_step_bound steps=%d runs=%d batch=%d (medians, samples/s)\n", steps, runs, BATCH);
    printf("bench_step_bound one_thread=%.0f two_threads_apply_on_one=%.0f (%.2fx) "
           "two_threads_apply_split=%.0f (%.2fx) two_threads_apply_split_spin=%.0f (%.2fx)\n",
           ma, mb, mb / ma, mc, mc / ma, md, md / ma);
    free(m.x), free(m.y), free_params(&m.p), free_params(&m.acc);
    return 0;
}
