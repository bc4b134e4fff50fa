/* bench_ps.c - throughput and latency of one parameter-server shard, against the goals in the
 * issue. A program, not a test: ctest never runs it (tests/bench/run_bench.sh does).
 *
 *   1. the latency floor: 64-byte TCP ping-pong with a forked echo child (blocking sockets,
 *      TCP_NODELAY);
 *   2. a ps-server process on loopback driven by worker/client.h: push, pull and push+pull of
 *      {100, 10k, 1M} random keys x dim {1, 16}, AdaGrad, rows already there;
 *   3. the shard store in-process: ps_store_push of 1M existing keys, and bytes per row.
 *
 * Every figure is a median over all samples of --runs runs. Besides the table it prints
 * machine-parseable lines: `bench_ps <name> median=<v> unit=<u>`.
 *
 *   bench_ps [--runs N] [--server PATH] [--mem-rows N] [--no-net] [--no-store] [--no-big]
 *            [--no-pin]
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include <errno.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench_client.h"
#include "config.h"
#include "store.h"

#define PINGPONG_BYTES 64
#define PINGPONG_TRIPS 2000

/* --- small helpers -------------------------------------------------------------------------- */

/* Whether the bench pinned itself to CPU 0. Then the echo child and the ps-server of the small
 * requests run on CPU 1, so the ping-pong floor and the server's round trips cross CPUs alike;
 * for the 1M-key requests only the server's event loop is on CPU 1 (as the echo child is for the
 * bare-TCP floor: the scheduler would otherwise pull it onto the client's CPU and serialize the
 * transfer), and its pool thread may run on either core. */
static bool pinned;

static void fill_keys(uint64_t *keys, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) keys[i] = bench_splitmix64(&seed);
}

/* Fisher-Yates with splitmix64. */
static void shuffle_keys(uint64_t *keys, size_t n, uint64_t seed) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(bench_splitmix64(&seed) % i);
        uint64_t t = keys[i - 1];
        keys[i - 1] = keys[j], keys[j] = t;
    }
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "bench_ps: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Samples of one measurement; summarised by median and p90. */
typedef struct {
    double *v;
    size_t n, cap;
} samples;

static void sample_add(samples *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        double *p = realloc(s->v, s->cap * sizeof(*p));
        if (p == NULL) {
            fprintf(stderr, "bench_ps: out of memory\n");
            exit(1);
        }
        s->v = p;
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank quantile (q in [0, 1]); sorts in place. */
static double quantile(samples *s, double q) {
    if (s->n == 0) return 0.0;
    qsort(s->v, s->n, sizeof(*s->v), cmp_double);
    return s->v[(size_t)(q * (double)(s->n - 1) + 0.5)];
}

static void sample_free(samples *s) {
    free(s->v);
    *s = (samples){0};
}

/* Machine-parseable results, printed together at the end. */
typedef struct {
    char name[64];
    double median;
    char unit[16];
} result;

static result results[128];
static size_t n_results;

static void record(const char *name, double median, const char *unit) {
    if (n_results == sizeof(results) / sizeof(results[0])) return;
    result *r = &results[n_results++];
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->unit, sizeof(r->unit), "%s", unit);
    r->median = median;
}

static const char *verdict(bool ok) { return ok ? "ok" : "MISSED"; }

/* Percent of all CPUs busy (others' work: we are idle) over 0.5 s, from /proc/stat; -1 if
 * unknown. Other work on this machine makes every figure noisier. */
static double others_busy(void) {
    unsigned long long a[2][8] = {{0}};
    for (int k = 0; k < 2; k++) {
        if (k == 1) usleep(500000);
        FILE *f = fopen("/proc/stat", "r");
        int got = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &a[k][0], &a[k][1],
                             &a[k][2], &a[k][3], &a[k][4], &a[k][5], &a[k][6], &a[k][7])
                    : 0;
        if (f != NULL) fclose(f);
        if (got != 8) return -1.0;
    }
    double busy = 0, total = 0;
    for (int i = 0; i < 8; i++) {
        double d = (double)(a[1][i] - a[0][i]);
        total += d;
        if (i != 3 && i != 4) busy += d; /* all but idle and iowait */
    }
    return total > 0 ? 100.0 * busy / total : -1.0;
}

/* --- 1. bare TCP ping-pong -------------------------------------------------------------------- */

static bool io_full(int fd, uint8_t *buf, size_t n, bool writing) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = writing ? send(fd, buf + done, n - done, MSG_NOSIGNAL)
                            : recv(fd, buf + done, n - done, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        done += (size_t)r;
    }
    return true;
}

static void set_nodelay_timeout(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* The echo child: one connection; echoes PINGPONG_BYTES messages until EOF. A message that starts
 * with 'B' and a uint64 n announces n bulk bytes, which it reads (into a reused 1 MiB buffer, as
 * a receiver would) before it answers: the bare-TCP floor for moving a big request. */
static void echo_child(int lfd) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (pinned) bench_pin_to(1);
    alarm(120); /* never outlive a stuck parent for long */
    int fd = accept(lfd, NULL, NULL);
    close(lfd);
    if (fd < 0) _exit(1);
    set_nodelay_timeout(fd);
    uint8_t buf[PINGPONG_BYTES];
    static uint8_t sink[1 << 20];
    while (io_full(fd, buf, sizeof(buf), false)) {
        if (buf[0] == 'B') {
            uint64_t n;
            memcpy(&n, buf + 1, sizeof(n));
            for (uint64_t got = 0; got < n;) {
                size_t take = n - got < sizeof(sink) ? (size_t)(n - got) : sizeof(sink);
                if (!io_full(fd, sink, take, false)) _exit(1);
                got += take;
            }
        }
        if (!io_full(fd, buf, sizeof(buf), true)) break;
    }
    close(fd);
    _exit(0);
}

/* A connection to a forked echo child. */
typedef struct {
    int fd;
    pid_t pid;
} echo_peer;

static bool echo_start(echo_peer *e) {
    *e = (echo_peer){.fd = -1, .pid = -1};
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("bench_ps: ping-pong listener");
        if (lfd >= 0) close(lfd);
        return false;
    }
    fflush(NULL);
    e->pid = fork();
    if (e->pid < 0) {
        perror("bench_ps: fork");
        close(lfd);
        return false;
    }
    if (e->pid == 0) echo_child(lfd);
    close(lfd);
    e->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (e->fd < 0 || connect(e->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("bench_ps: ping-pong connect");
        return false;
    }
    set_nodelay_timeout(e->fd);
    return true;
}

/* One 64-byte round trip: seconds, or -1 on failure. */
static double echo_once(const echo_peer *e) {
    uint8_t buf[PINGPONG_BYTES];
    memset(buf, 0xab, sizeof(buf));
    double t0 = bench_now_s();
    if (!io_full(e->fd, buf, sizeof(buf), true) || !io_full(e->fd, buf, sizeof(buf), false)) {
        perror("bench_ps: ping-pong");
        return -1.0;
    }
    return bench_now_s() - t0;
}

/* n bytes of src to the echo child and its 64-byte answer: seconds, or -1 on failure. */
static double bulk_once(const echo_peer *e, const uint8_t *src, uint64_t n) {
    uint8_t buf[PINGPONG_BYTES] = {'B'};
    memcpy(buf + 1, &n, sizeof(n));
    double t0 = bench_now_s();
    if (!io_full(e->fd, buf, sizeof(buf), true) || !io_full(e->fd, (uint8_t *)src, n, true) ||
        !io_full(e->fd, buf, sizeof(buf), false)) {
        perror("bench_ps: bulk transfer");
        return -1.0;
    }
    return bench_now_s() - t0;
}

static void echo_stop(echo_peer *e) {
    if (e->fd >= 0) close(e->fd); /* EOF: the child exits */
    if (e->pid > 0) bench_reap("bench_ps", e->pid, BENCH_REAP_MS);
    *e = (echo_peer){.fd = -1, .pid = -1};
}

/* runs x PINGPONG_TRIPS round trips (after a warm-up) into out. */
static bool bench_pingpong(const echo_peer *e, int runs, samples *out) {
    for (int i = 0; i < 200; i++)
        if (echo_once(e) < 0) return false;
    for (int r = 0; r < runs; r++) {
        for (int i = 0; i < PINGPONG_TRIPS; i++) {
            double t = echo_once(e);
            if (t < 0) return false;
            sample_add(out, t);
        }
    }
    return true;
}

/* --- 2. one ps-server on loopback ------------------------------------------------------------- */

static const char job_json[] =
    "{\"job_id\": \"bench\", \"cluster\": {\"servers\": [\"127.0.0.1:0\"],"
    " \"connect_timeout_ms\": 10000, \"request_timeout_ms\": 60000},"
    " \"limits\": {\"max_frame_bytes\": 134217728},"
    " \"tables\": [{\"name\": \"d1\", \"dim\": 1}, {\"name\": \"d16\", \"dim\": 16}]}\n";

/* Writes the job file into a fresh scratch directory and starts a ps-server with it on cpu
 * (-1: any). */
static bool server_start(const char *path, int cpu, bench_server_proc *p) {
    if (!bench_server_prepare(p, "bench_ps")) return false;
    FILE *f = fopen(p->job, "w");
    if (f == NULL || fputs(job_json, f) < 0 || fclose(f) != 0) {
        perror("bench_ps: job file");
        return false;
    }
    return bench_server_start(p, path, cpu);
}

typedef enum { OP_PUSH, OP_PULL, OP_PUSHPULL, N_OPS } op_kind;
static const char *const op_name[N_OPS] = {"push", "pull", "pushpull"};

static ps_status do_op(ps_client *c, op_kind k, uint32_t t, const uint64_t *keys, size_t n,
                       const float *grads, float *out, ps_error *err) {
    switch (k) {
    case OP_PUSH:
        return ps_client_push(c, t, keys, n, grads, err);
    case OP_PULL:
        return ps_client_pull(c, t, keys, n, out, err);
    default:
        return ps_client_pushpull(c, t, keys, n, grads, keys, n, out, err);
    }
}

/* Bulk bytes on the wire for one op (request + reply arrays; framing and headers excluded). */
static double op_bytes(op_kind k, size_t n, uint32_t dim) {
    double keys = 8.0 * (double)n, rows = 4.0 * (double)dim * (double)n;
    return k == OP_PUSH ? keys + rows : k == OP_PULL ? keys + rows : 2 * keys + 2 * rows;
}

/* Runs the client benchmarks for the given sizes against a fresh ps-server on cpu (-1: any).
 * For 100 keys each op is preceded by a ping-pong on echo (when set), so that the ratio
 * push+pull / ping-pong compares like with like on a noisy machine. */
static bool bench_server(const char *server_path, int cpu, int main_cpu, const size_t *sizes,
                         size_t n_sizes, int runs, const echo_peer *echo) {
    bench_server_proc sp;
    if (!server_start(server_path, cpu, &sp)) return false;
    if (main_cpu >= 0) { /* the thread whose id is the pid: the event loop, not the pool */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(main_cpu, &set);
        sched_setaffinity(sp.pid, sizeof(set), &set);
    }
    bool ok = false;
    ps_client *c = NULL;
    ps_error err = {0};
    static ps_job_config job;
    if (bench_server_client(&sp, &job, &c, &err) != PS_OK) {
        fprintf(stderr, "bench_ps: client: %s\n", err.msg);
        goto done;
    }
    char where[48] = "any CPU";
    if (cpu >= 0) snprintf(where, sizeof(where), "CPU %d", cpu);
    if (main_cpu >= 0) snprintf(where, sizeof(where), "event loop on CPU %d", main_cpu);
    printf("\nclient -> 1 ps-server on loopback (pid %d, port %d, %s); AdaGrad, random uint64 "
           "keys, rows exist\n",
           (int)sp.pid, sp.port, where);
    printf("  %-9s %8s %4s %11s %11s %10s %9s  %s\n", "op", "keys", "dim", "median", "p90",
           "Mkeys/s", "MB/s", "goal   (MB/s: keys + rows both ways, 1e6 B)");
    static const uint32_t dims[] = {1, 16};
    for (size_t di = 0; di < 2; di++) {
        const uint32_t dim = dims[di];
        char tname[8];
        snprintf(tname, sizeof(tname), "d%u", dim);
        const ps_table_spec *ts = ps_client_table(c, tname);
        if (ts == NULL || ts->dim != dim) {
            fprintf(stderr, "bench_ps: server has no table %s of dim %u\n", tname, dim);
            goto done;
        }
        for (size_t si = 0; si < n_sizes; si++) {
            const size_t n = sizes[si];
            const int iters = n <= 100 ? 500 : n <= 10000 ? 20 : 1;
            uint64_t *keys = xmalloc(n * sizeof(*keys));
            float *grads = xmalloc(n * dim * sizeof(*grads));
            float *out = xmalloc(n * dim * sizeof(*out));
            fill_keys(keys, n, 0x5eed0000u + n * 64 + dim);
            bench_fill_grads(grads, n * dim, 0xfeed0000u + n * 64 + dim);
            samples s[N_OPS] = {{0}}, ping = {0}, floor[N_OPS] = {{0}};
            const bool paired = n == 100 && echo != NULL && echo->fd >= 0;
            /* big requests: before each, the same bytes over bare TCP to the echo child */
            const bool floored = n >= 1000000 && echo != NULL && echo->fd >= 0;
            uint8_t *bulk = floored ? xmalloc((size_t)op_bytes(OP_PUSHPULL, n, dim)) : NULL;
            if (bulk) memset(bulk, 0x5a, (size_t)op_bytes(OP_PUSHPULL, n, dim));
            /* warm-up: the first push creates the rows; one of each op after it */
            bool good = ps_client_push(c, ts->id, keys, n, grads, &err) == PS_OK;
            for (int k = 0; good && k < N_OPS; k++)
                good = do_op(c, (op_kind)k, ts->id, keys, n, grads, out, &err) == PS_OK;
            for (int r = 0; good && r < runs; r++) {
                for (int k = 0; good && k < N_OPS; k++) {
                    for (int i = 0; good && i < iters; i++) {
                        if (paired) {
                            double t = echo_once(echo);
                            if (t >= 0) sample_add(&ping, t);
                        }
                        if (floored) {
                            double t = bulk_once(echo, bulk, (uint64_t)op_bytes(k, n, dim));
                            if (t >= 0) sample_add(&floor[k], t);
                        }
                        double t0 = bench_now_s();
                        good = do_op(c, (op_kind)k, ts->id, keys, n, grads, out, &err) == PS_OK;
                        sample_add(&s[k], bench_now_s() - t0);
                    }
                }
            }
            if (!good) fprintf(stderr, "bench_ps: %zu keys x dim %u: %s\n", n, dim, err.msg);
            for (int k = 0; good && k < N_OPS; k++) {
                double med = quantile(&s[k], 0.5), p90 = quantile(&s[k], 0.9);
                bool small = n <= 10000;
                double scale = small ? 1e6 : 1e3;
                const char *unit = small ? "us" : "ms";
                char goal[48] = "";
                if (n == 1000000 && dim == 16 && k == OP_PUSH)
                    snprintf(goal, sizeof(goal), "<= 100 ms  %s", verdict(med <= 0.100));
                if (n == 1000000 && dim == 16 && k == OP_PULL)
                    snprintf(goal, sizeof(goal), "<= 50 ms   %s", verdict(med <= 0.050));
                printf("  %-9s %8zu %4u %8.1f %s %8.1f %s %10.2f %9.1f  %s\n", op_name[k], n, dim,
                       med * scale, unit, p90 * scale, unit, (double)n / med / 1e6,
                       op_bytes((op_kind)k, n, dim) / med / 1e6, goal);
                char name[64];
                snprintf(name, sizeof(name), "%s_d%u_n%zu", op_name[k], dim, n);
                record(name, med * scale, unit);
                snprintf(name, sizeof(name), "%s_d%u_n%zu_rate", op_name[k], dim, n);
                record(name, (double)n / med / 1e6, "Mkeys/s");
                if (floored && floor[k].n > 0) {
                    double f = quantile(&floor[k], 0.5);
                    printf("  %-9s %8zu %4u %8.1f ms  bare TCP, the same %.0f MB one way: op = "
                           "%.2fx that\n",
                           "  floor", n, dim, f * 1e3, op_bytes((op_kind)k, n, dim) / 1e6, med / f);
                    snprintf(name, sizeof(name), "%s_d%u_n%zu_vs_bare_tcp", op_name[k], dim, n);
                    record(name, med / f, "x");
                }
            }
            if (good && paired && ping.n > 0) {
                double ratio = quantile(&s[OP_PUSHPULL], 0.5) / quantile(&ping, 0.5);
                printf("  %-9s %8zu %4u %8.1f us %8.1f us  (paired with each op above)  "
                       "push+pull / ping-pong = %.2fx  goal <= 1.3x  %s\n",
                       "ping-pong", n, dim, quantile(&ping, 0.5) * 1e6, quantile(&ping, 0.9) * 1e6,
                       ratio, verdict(ratio <= 1.3));
                char name[64];
                snprintf(name, sizeof(name), "pushpull_d%u_n100_vs_pingpong", dim);
                record(name, ratio, "x");
            }
            sample_free(&ping);
            for (int k = 0; k < N_OPS; k++) sample_free(&s[k]), sample_free(&floor[k]);
            free(keys), free(grads), free(out), free(bulk);
            if (!good) goto done;
        }
    }
    uint64_t rows = 0, bytes = 0;
    if (ps_client_table_stats(c, 1, &rows, &bytes, &err) == PS_OK && rows > 0)
        printf("  server table d16: %llu rows, %.1f bytes/row held\n", (unsigned long long)rows,
               (double)bytes / (double)rows);
    ok = true;
done:
    ps_client_destroy(c);
    bench_server_stop(&sp);
    bench_server_remove_files(&sp);
    if (!ok) printf("  (server benchmark failed; see above)\n");
    return ok;
}

/* --- 3. the store in-process ------------------------------------------------------------------ */

static ps_table_spec store_spec(uint32_t dim) {
    ps_table_spec t = {.id = 0, .dim = dim};
    snprintf(t.name, sizeof(t.name), "bench_d%u", dim);
    t.init = (ps_init_spec){.kind = PS_INIT_UNIFORM, .a = -0.05, .b = 0.05};
    t.opt = (ps_adagrad_config){.form = PS_ADAGRAD_PYTORCH, .learning_rate = 0.01,
                                .epsilon = 1e-10};
    return t;
}

static bool must(ps_status st, const ps_error *err) {
    if (st != PS_OK) fprintf(stderr, "bench_ps: store: %s\n", err->msg);
    return st == PS_OK;
}

/* Apply rate at dim: 1M rows, then pushes of those 1M keys in a fresh random order each run;
 * with threads > 1 the store runs on a pool of that many threads (unpinned while it lives). */
static bool bench_store_apply(uint32_t dim, unsigned threads, int runs) {
    const size_t n = 1000000;
    ps_table_spec spec = store_spec(dim);
    ps_store *s = NULL;
    ps_pool *pool = NULL;
    ps_error err = {0};
    if (!must(ps_store_create(&spec, 42, &s, &err), &err)) return false;
    if (threads > 1) {
        bench_unpin();
        if (!must(ps_pool_create(threads, &pool, &err), &err) ||
            !must(ps_store_set_pool(s, pool, &err), &err)) {
            ps_store_destroy(s);
            ps_pool_destroy(pool);
            return false;
        }
    }
    uint64_t *keys = xmalloc(n * sizeof(*keys));
    float *grads = xmalloc(n * dim * sizeof(*grads));
    float *out = xmalloc(n * dim * sizeof(*out));
    fill_keys(keys, n, 0xabc0 + dim);
    bench_fill_grads(grads, n * dim, 0xdef0 + dim);
    double t0 = bench_now_s();
    bool ok = must(ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)grads, n, &err), &err);
    double t_insert = bench_now_s() - t0;
    samples push = {0}, pull = {0};
    for (int r = 0; ok && r < runs; r++) {
        shuffle_keys(keys, n, 0x51u + (uint64_t)r);
        t0 = bench_now_s();
        ok = must(ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)grads, n, &err), &err);
        sample_add(&push, bench_now_s() - t0);
        t0 = bench_now_s();
        ps_store_pull(s, (const uint8_t *)keys, n, (uint8_t *)out);
        sample_add(&pull, bench_now_s() - t0);
    }
    if (ok) {
        double mp = (double)n / quantile(&push, 0.5) / 1e6;
        double ml = (double)n / quantile(&pull, 0.5) / 1e6;
        char goal[48] = "";
        if (dim == 16) snprintf(goal, sizeof(goal), ">= 8 M keys/s  %s", verdict(mp >= 8.0));
        printf("  apply  dim %-2u threads %u %8.2f M keys/s  (at p90 time: %.2f)  %s\n", dim,
               threads, mp, (double)n / quantile(&push, 0.9) / 1e6, goal);
        printf("  pull   dim %-2u threads %u %8.2f M keys/s\n", dim, threads, ml);
        printf("  insert dim %-2u threads %u %8.2f M keys/s  (first push: 1M new rows)\n", dim,
               threads, (double)n / t_insert / 1e6);
        char name[64];
        snprintf(name, sizeof(name), "store_apply_d%u_t%u", dim, threads);
        record(name, mp, "Mkeys/s");
        snprintf(name, sizeof(name), "store_pull_d%u_t%u", dim, threads);
        record(name, ml, "Mkeys/s");
        snprintf(name, sizeof(name), "store_insert_d%u_t%u", dim, threads);
        record(name, (double)n / t_insert / 1e6, "Mkeys/s");
    }
    sample_free(&push), sample_free(&pull);
    free(keys), free(grads), free(out);
    ps_store_destroy(s);
    if (pool != NULL) {
        ps_pool_destroy(pool);
        if (pinned) bench_pin_to(0);
    }
    return ok;
}

/* Bytes held per row against the payload (key + weights + accumulators) at each row count. */
static bool bench_store_memory(uint32_t dim, const size_t *counts, size_t n_counts) {
    const size_t batch = 1000000;
    ps_table_spec spec = store_spec(dim);
    ps_store *s = NULL;
    ps_error err = {0};
    if (!must(ps_store_create(&spec, 42, &s, &err), &err)) return false;
    uint64_t *keys = xmalloc(batch * sizeof(*keys));
    float *grads = xmalloc(batch * dim * sizeof(*grads));
    bench_fill_grads(grads, batch * dim, 7);
    uint64_t seed = 0x3e3e0000u + dim;
    const double payload = 8.0 + 2.0 * dim * 4.0;
    bool ok = true;
    for (size_t ci = 0; ok && ci < n_counts; ci++) {
        while (ok && ps_store_rows(s) < counts[ci]) {
            size_t m = counts[ci] - ps_store_rows(s);
            if (m > batch) m = batch;
            for (size_t i = 0; i < m; i++) keys[i] = bench_splitmix64(&seed);
            ok = must(ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)grads, m, &err),
                      &err);
        }
        if (!ok) break;
        double per_row = (double)ps_store_bytes(s) / (double)ps_store_rows(s);
        double ratio = per_row / payload;
        char goal[48] = "";
        if (dim == 16) snprintf(goal, sizeof(goal), "<= 1.3x  %s", verdict(ratio <= 1.3));
        printf("  memory dim %-2u %9zu rows: %7.1f B/row held, payload %3.0f B (row stored: %zu B)"
               " -> %.3fx  %s\n",
               dim, ps_store_rows(s), per_row, payload, ps_store_row_bytes(s), ratio, goal);
        char name[64];
        snprintf(name, sizeof(name), "store_mem_ratio_d%u_rows%zu", dim, ps_store_rows(s));
        record(name, ratio, "x_payload");
    }
    free(keys), free(grads);
    ps_store_destroy(s);
    return ok;
}

/* --- main ------------------------------------------------------------------------------------- */

static const char usage[] =
    "usage: bench_ps [--runs N] [--server PATH] [--mem-rows N] [--no-net] [--no-store] [--no-big]\n"
    "                [--no-pin]\n"
    "  --runs N        runs per measurement; medians over all samples (default 7)\n"
    "  --server PATH   the ps-server to spawn (default: ps-server next to bench_ps)\n"
    "  --mem-rows N    largest row count of the memory check (default 10000000)\n"
    "  --no-net        skip the ping-pong and ps-server parts\n"
    "  --no-store      skip the in-process store part\n"
    "  --no-big        skip the 1M-key requests (for profiling the small ones)\n"
    "  --no-pin        let the scheduler place processes (default: bench on CPU 0, echo child\n"
    "                  and ps-server on CPU 1; for 1M keys only the server's event loop)\n";

int main(int argc, char **argv) {
    int runs = 7;
    size_t mem_rows = 10000000;
    bool net = true, store = true, pin = true, big_ops = true;
    char server[4096] = "";
    for (int i = 1; i < argc; i++) {
        bool has_val = i + 1 < argc;
        if (strcmp(argv[i], "--runs") == 0 && has_val) {
            runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--server") == 0 && has_val) {
            snprintf(server, sizeof(server), "%s", argv[++i]);
        } else if (strcmp(argv[i], "--mem-rows") == 0 && has_val) {
            mem_rows = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--no-net") == 0) {
            net = false;
        } else if (strcmp(argv[i], "--no-store") == 0) {
            store = false;
        } else if (strcmp(argv[i], "--no-pin") == 0) {
            pin = false;
        } else if (strcmp(argv[i], "--no-big") == 0) {
            big_ops = false;
        } else {
            fprintf(stderr, "%s", usage);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (runs < 1 || runs > 1000 || mem_rows < 1000000) {
        fprintf(stderr, "bench_ps: --runs must be 1..1000 and --mem-rows >= 1000000\n");
        return 2;
    }
    if (server[0] == '\0') bench_server_path_default(server, sizeof(server));
    signal(SIGPIPE, SIG_IGN);
    pinned = pin && bench_pin_to(0);
    printf("bench_ps: %d runs per measurement; medians over all samples; %ld CPUs, %.0f%% busy "
           "with other work before the start\n",
           runs, sysconf(_SC_NPROCESSORS_ONLN), others_busy());
    printf("%s\n", pinned ? "pinned: bench on CPU 0; echo child and the small-request ps-server "
                            "on CPU 1; the 1M-key ps-server's event loop on CPU 1, its pool free"
                          : "not pinned: the scheduler places every process");
    bool ok = true;

    if (net) {
        samples pp = {0};
        echo_peer echo;
        printf("\nlatency floor: bare TCP ping-pong, %d bytes, blocking sockets, TCP_NODELAY\n",
               PINGPONG_BYTES);
        if (echo_start(&echo) && bench_pingpong(&echo, runs, &pp)) {
            double med = quantile(&pp, 0.5);
            printf("  round trip  median %.1f us  p10 %.1f us  p90 %.1f us  (%zu round trips)\n",
                   med * 1e6, quantile(&pp, 0.1) * 1e6, quantile(&pp, 0.9) * 1e6, pp.n);
            record("pingpong_64B_rtt", med * 1e6, "us");
        } else {
            ok = false;
        }
        sample_free(&pp);
        /* small requests: latency, server on the echo child's CPU; 1M keys: both cores */
        static const size_t small[] = {100, 10000}, big[] = {1000000};
        ok &= bench_server(server, pinned ? 1 : -1, -1, small, 2, runs, &echo);
        if (big_ops) ok &= bench_server(server, -1, pinned ? 1 : -1, big, 1, runs, &echo);
        echo_stop(&echo);
    }
    if (store) {
        printf("\nin-process store (ps_store_push/pull): 1M existing rows, 1M keys in a fresh "
               "random order per run\n");
        ok &= bench_store_apply(16, 1, runs);
        ok &= bench_store_apply(16, 2, runs);
        ok &= bench_store_apply(1, 1, runs);
        ok &= bench_store_apply(1, 2, runs);
        size_t counts16[] = {1000000, mem_rows}, counts1[] = {1000000};
        ok &= bench_store_memory(16, counts16, mem_rows > 1000000 ? 2 : 1);
        ok &= bench_store_memory(1, counts1, 1);
    }

    printf("\nCPUs %.0f%% busy with other work after the end (well above 0: expect noise)\n\n",
           others_busy());
    for (size_t i = 0; i < n_results; i++)
        printf("bench_ps %s median=%.4g unit=%s\n", results[i].name, results[i].median,
               results[i].unit);
    fflush(stdout);
    return ok ? 0 : 1;
}
