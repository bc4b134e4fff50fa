/* bench_util.h - what bench_ps and bench_load share: the clock, CPU pinning, the fixed-seed
 * generator, and a ps-server child on 127.0.0.1, port 0 (spawn, read its port, stop, reap).
 * Messages go to stderr prefixed with the caller's program name; nothing here exits. */
#ifndef PS_BENCH_UTIL_H
#define PS_BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_SERVER_START_MS 10000 /* ps-server must print its port within this */
#define BENCH_REAP_MS 5000          /* after SIGTERM, then SIGKILL */

/* Seconds on CLOCK_MONOTONIC. */
double bench_now_s(void);

/* Pins the calling thread (and the threads and processes it starts) to cpu; false if it cannot. */
bool bench_pin_to(int cpu);

/* Lets the calling thread (and the threads and processes it starts) run on every online CPU. */
void bench_unpin(void);

/* splitmix64: advances *state and returns the next value of the fixed-seed generator.
 * reference: https://prng.di.unimi.it/splitmix64.c */
uint64_t bench_splitmix64(uint64_t *state);

/* g: (n), caller-owned; filled with U(-0.01, 0.01) drawn by splitmix64 from seed. */
void bench_fill_grads(float *g, size_t n, uint64_t seed);

/* Waits for pid at most ms, then SIGKILL (said on stderr as "<prog>: ...") and a blocking wait.
 * Returns the wait status. */
int bench_reap(const char *prog, pid_t pid, int ms);

/* A ps-server child and its scratch directory /tmp/<prog>.XXXXXX, which holds the job file the
 * caller writes (job) and the server's stderr (log). Plain data; owned by the caller. */
typedef struct {
    const char *prog; /* message prefix; borrowed, must outlive the struct */
    pid_t pid;        /* > 0 while the child runs */
    int out_fd;       /* read end of its stdout; -1 when closed */
    int port;         /* from its "listening on" line */
    char dir[64], job[128], log[128];
} bench_server_proc;

/* Sets *p to no child, creates its scratch directory and names p->job and p->log in it (neither
 * file exists yet). False, said on stderr, if the directory cannot be made. */
bool bench_server_prepare(bench_server_proc *p, const char *prog);

/* Spawns `path --config p->job --shard 0 --listen 127.0.0.1:0` on cpu (-1: every CPU), its
 * stderr into p->log, and reads p->port from its "listening on" line within
 * BENCH_SERVER_START_MS. The caller has written p->job. False, said on stderr, if the server is
 * missing, cannot start or prints no port; then the child is stopped. */
bool bench_server_start(bench_server_proc *p, const char *path, int cpu);

/* Ends the child (SIGTERM; SIGKILL after BENCH_REAP_MS) and closes its stdout; a second call
 * does nothing. False, said on stderr, if it did not exit with status 0. The files remain. */
bool bench_server_stop(bench_server_proc *p);

/* Removes p->job, p->log and the scratch directory (missing ones are ignored). */
void bench_server_remove_files(const bench_server_proc *p);

/* buf: (size), caller-owned, size > 16; receives the path of the ps-server next to this binary. */
void bench_server_path_default(char *buf, size_t size);

#endif
