/* testutil.h - helpers shared by the tests that need real servers: shards run in-process, each on
 * its own thread and loop, bound to 127.0.0.1:0; raw sockets speak the wire by hand. */
#ifndef PS_TESTUTIL_H
#define PS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "config.h"
#include "server.h"
#include "wire.h"

typedef struct test_server test_server;

/* Parses a job from JSON text; aborts the test with the message on error. */
void tu_job(const char *json, ps_job_config *cfg);

/* Starts shard `shard` of job on an ephemeral loopback port, serving on a thread. */
test_server *tu_server_start(const ps_job_config *job, uint32_t shard);
const char *tu_server_addr(const test_server *t); /* "127.0.0.1:PORT" */
int tu_server_port(const test_server *t);
/* The running server, for its thread-safe calls (ps_server_stop, ps_server_checkpoint). */
ps_server *tu_server(test_server *t);
/* Stops the loop and joins the thread; the stores stay readable until tu_server_free. */
ps_server *tu_server_stop(test_server *t);
void tu_server_free(test_server *t);

/* A client of job with this rank (errors logged only); fails the test if it cannot connect. */
ps_client *tu_client(const ps_job_config *job, uint32_t rank);
/* The same as an admin: reads and writes outside any barrier (to inspect a sync job's rows). */
ps_client *tu_admin_client(const ps_job_config *job);

/* Points job->servers at running test servers. */
void tu_job_use(ps_job_config *job, test_server *const *servers, size_t n);

/* A port free a moment ago on the loopback of family (AF_INET, AF_INET6). */
int tu_free_port(int family);
/* Blocking loopback socket with a 5 s receive timeout; -1 on failure. The server's Challenge is
 * read (its nonce kept for tu_hello_env); a refusal sent instead stays to be read. */
int tu_connect(int port);
const uint8_t *tu_nonce(int fd);
/* A Hello for job_id as role/rank whose mac proves token over fd's nonce (token NULL: no mac). */
void tu_hello_env(int fd, ps_Envelope *env, const char *job_id, const char *token,
                  uint32_t role, uint32_t rank);
/* A fake server's first frame: a Challenge (of zeros). */
bool tu_send_challenge(int fd);
bool tu_send_all(int fd, const void *p, size_t n);
/* Sends env (+ bulk fields) as one frame. */
bool tu_send_msg(int fd, const ps_Envelope *env, const ps_bulk *keys, const ps_bulk *grads,
                 const ps_bulk *pull_keys);
/* Reads one frame and decodes it into m; *buf holds the payload (free it). false on EOF/timeout. */
bool tu_read_msg(int fd, ps_msg *m, uint8_t **buf);
/* Sends a valid Hello for job and reads the reply; true if it is a HelloReply. */
bool tu_hello(int fd, const ps_job_config *job);
/* true if the peer closed the connection (read returns 0) within the timeout. */
bool tu_closed(int fd);

/* --- files and processes ---------------------------------------------------------------------- */

/* Makes a new directory /tmp/PREFIX_XXXXXX into dir (64 bytes); tu_rmtree removes it and all
 * that it holds. */
void tu_tmpdir(char dir[64], const char *prefix);
void tu_rmtree(const char *dir);
/* Writes text to path (mode: 0644 or, for scripts, 0755). */
void tu_write_file(const char *path, const char *text, unsigned mode);
/* A file's text, NUL-terminated, in a buffer of 1 MiB that the next call reuses. */
char *tu_slurp(const char *path);
/* Starts argv[0] with stdout and stderr into the files out and err (created or truncated). */
int tu_spawn(char *const argv[], const char *out, const char *err);
/* The child's exit status, 128 + its signal, or -1 after timeout_ms (it is then killed). */
int tu_wait_exit(int pid, int timeout_ms);
/* SIGTERM to pid every 0.1 ms until it exits (at most ~10 s, then SIGKILL and false); *status:
 * its wait status (WIFEXITED or WIFSIGNALED, unlike tu_wait_exit's code). */
bool tu_sigterm_until_exit(int pid, int *status);
/* A whole .npy file of float32 or uint64 items (malloc'd; *n items); fails the test otherwise. */
float *tu_read_f4(const char *path, uint64_t *n);
uint64_t *tu_read_u8(const char *path, uint64_t *n);

#endif
