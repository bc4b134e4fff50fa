/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include <fcntl.h>
#include <errno.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "auth.h"
#include "frame.h"
#include "npy.h"

extern char **environ;

struct test_server {
    ps_server *srv;
    uv_thread_t thread;
    bool running;
    char addr[64];
};

void tu_job(const char *json, ps_job_config *cfg) {
    ps_error err = {0};
    ps_status st = ps_config_parse(json, "test.json", NULL, 0, cfg, &err);
    cr_assert_eq(st, PS_OK, "job: %s", err.msg);
}

static void serve(void *arg) {
    test_server *t = arg;
    ps_server_run(t->srv, NULL);
}

test_server *tu_server_start(const ps_job_config *job, uint32_t shard) {
    /* a server writes to peers that may reset: as ps-server does, the process ignores SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    test_server *t = calloc(1, sizeof(*t));
    cr_assert_not_null(t);
    ps_server_options opt = {.job = job, .shard = shard, .listen = "127.0.0.1:0",
                             .log = {.level = PS_LOG_ERROR}};
    snprintf(opt.log.prefix, sizeof(opt.log.prefix), "server %u", shard);
    ps_error err = {0};
    cr_assert_eq(ps_server_create(&opt, &t->srv, &err), PS_OK, "server: %s", err.msg);
    snprintf(t->addr, sizeof(t->addr), "127.0.0.1:%d", ps_server_port(t->srv));
    cr_assert_eq(uv_thread_create(&t->thread, serve, t), 0);
    t->running = true;
    return t;
}

const char *tu_server_addr(const test_server *t) { return t->addr; }
ps_server *tu_server(test_server *t) { return t->srv; }
int tu_server_port(const test_server *t) { return ps_server_port(t->srv); }

ps_server *tu_server_stop(test_server *t) {
    if (t->running) {
        ps_server_stop(t->srv);
        uv_thread_join(&t->thread);
        t->running = false;
    }
    return t->srv;
}

void tu_server_free(test_server *t) {
    if (t == NULL) return;
    tu_server_stop(t);
    ps_server_destroy(t->srv);
    free(t);
}

void tu_job_use(ps_job_config *job, test_server *const *servers, size_t n) {
    job->num_servers = (uint32_t)n;
    for (size_t i = 0; i < n; i++)
        snprintf(job->servers[i], sizeof(job->servers[i]), "%s", servers[i]->addr);
}

/* The nonce of each connection's Challenge, by descriptor (tests open few). */
static uint8_t nonces[1024][PS_AUTH_NONCE_BYTES];

const uint8_t *tu_nonce(int fd) { return fd >= 0 && fd < 1024 ? nonces[fd] : nonces[0]; }

/* Takes the server's first frame if it is a Challenge (keeping its nonce); leaves anything else
 * (an Error refusing the connection) to be read. */
static void take_challenge(int fd) {
    uint8_t buf[128];
    ssize_t n = 0;
    for (int tries = 0; tries < 500; tries++) { /* the whole frame, peeked: about 40 bytes */
        n = recv(fd, buf, sizeof(buf), MSG_PEEK);
        if (n <= 0) return;
        if (n >= 4) {
            uint32_t len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
                           (uint32_t)buf[2] << 8 | buf[3];
            if (len + 4 > sizeof(buf)) return;
            if ((size_t)n >= len + 4) {
                ps_msg m;
                if (ps_wire_decode(buf + 4, len, &m, NULL) != PS_OK ||
                    m.env.which_body != ps_Envelope_challenge_tag ||
                    m.env.challenge.nonce.size != PS_AUTH_NONCE_BYTES || fd >= 1024)
                    return;
                memcpy(nonces[fd], m.env.challenge.nonce.bytes, PS_AUTH_NONCE_BYTES);
                cr_assert_eq(recv(fd, buf, len + 4, 0), (ssize_t)(len + 4));
                return;
            }
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int tu_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    take_challenge(fd);
    return fd;
}

void tu_hello_env(int fd, ps_Envelope *env, const char *job_id, const char *token,
                  uint32_t role, uint32_t rank) {
    *env = (ps_Envelope)ps_Envelope_init_zero;
    env->request_id = 1;
    env->which_body = ps_Envelope_hello_tag;
    env->hello.protocol_version = PS_PROTOCOL_VERSION;
    env->hello.role = (ps_Role)role;
    env->hello.rank = rank;
    snprintf(env->hello.job_id, sizeof(env->hello.job_id), "%s", job_id);
    if (token != NULL) {
        env->hello.mac.size = PS_AUTH_MAC_BYTES;
        ps_auth_mac(token, tu_nonce(fd), env->hello.job_id, role, rank, env->hello.mac.bytes);
    }
}

bool tu_send_challenge(int fd) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.which_body = ps_Envelope_challenge_tag;
    env.challenge.nonce.size = PS_AUTH_NONCE_BYTES;
    return tu_send_msg(fd, &env, NULL, NULL, NULL);
}

bool tu_send_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        b += w, n -= (size_t)w;
    }
    return true;
}

bool tu_send_msg(int fd, const ps_Envelope *env, const ps_bulk *keys, const ps_bulk *grads,
                 const ps_bulk *pull_keys) {
    uint8_t *frame;
    size_t len;
    if (ps_wire_encode(env, keys, grads, pull_keys, NULL, NULL, &frame, &len, NULL) != PS_OK) return false;
    bool ok = tu_send_all(fd, frame, len);
    free(frame);
    return ok;
}

static bool read_all(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = recv(fd, b, n, 0);
        if (r <= 0) return false;
        b += r, n -= (size_t)r;
    }
    return true;
}

bool tu_read_msg(int fd, ps_msg *m, uint8_t **buf) {
    uint8_t hdr[4];
    *buf = NULL;
    if (!read_all(fd, hdr, 4)) return false;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    *buf = malloc(len + 1);
    if (*buf == NULL || !read_all(fd, *buf, len)) return false;
    return ps_wire_decode(*buf, len, m, NULL) == PS_OK;
}

bool tu_hello(int fd, const ps_job_config *job) {
    ps_Envelope env;
    tu_hello_env(fd, &env, job->job_id, job->token, ps_Role_ROLE_WORKER, 0);
    if (!tu_send_msg(fd, &env, NULL, NULL, NULL)) return false;
    ps_msg m;
    uint8_t *buf;
    bool ok = tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_hello_reply_tag;
    free(buf);
    return ok;
}

bool tu_closed(int fd) {
    uint8_t b[256];
    for (int i = 0; i < 1000; i++) {
        ssize_t r = recv(fd, b, sizeof(b), 0);
        if (r == 0) return true;
        if (r < 0) return false; /* timeout */
    }
    return false;
}

static ps_client *client_of(const ps_job_config *job, uint32_t rank, bool admin) {
    ps_client_options o = {.job = job, .rank = rank, .admin = admin,
                           .log = {.level = PS_LOG_ERROR}};
    ps_client *c = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_OK, "client: %s", err.msg);
    return c;
}

ps_client *tu_client(const ps_job_config *job, uint32_t rank) {
    return client_of(job, rank, false);
}

ps_client *tu_admin_client(const ps_job_config *job) { return client_of(job, 0, true); }

/* A port that was free a moment ago on this family's loopback (for a server that must start
 * after its worker, or whose job must list its address before it starts). */
int tu_free_port(int family) {
    int fd = socket(family, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6, a->sin6_addr = in6addr_loopback, len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET, a->sin_addr.s_addr = htonl(INADDR_LOOPBACK), len = sizeof(*a);
    }
    cr_assert_eq(bind(fd, (struct sockaddr *)&ss, len), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    int port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                        : ((struct sockaddr_in *)&ss)->sin_port);
    close(fd);
    return port;
}

/* --- files and processes ---------------------------------------------------------------------- */

void tu_tmpdir(char dir[64], const char *prefix) {
    snprintf(dir, 64, "/tmp/%s_XXXXXX", prefix);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

void tu_rmtree(const char *dir) {
    char cmd[128];
    cr_assert(strncmp(dir, "/tmp/", 5) == 0 && strstr(dir, "..") == NULL, "rm -rf %s", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

void tu_write_file(const char *path, const char *text, unsigned mode) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert(fputs(text, f) >= 0);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, (mode_t)mode), 0);
}

char *tu_slurp(const char *path) {
    static char buf[1 << 20];
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* fork + exec rather than posix_spawn, for one thing posix_spawn cannot do: the child is killed
 * when the test's process ends, so a test that fails between starting a server and stopping it
 * leaves no process behind (CI once found a ps-server still running after such a failure). Only
 * async-signal-safe calls between fork and exec. */
int tu_spawn(char *const argv[], const char *out, const char *err) {
    /* the files exist (empty) when this returns, as callers read them at once */
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int e = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert(o >= 0 && e >= 0, "open %s, %s: %s", out, err, strerror(errno));
    const pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (dup2(o, 1) < 0 || dup2(e, 2) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
            getppid() != parent)
            _exit(127);
        execve(argv[0], argv, environ);
        _exit(127);
    }
    close(o), close(e);
    return pid;
}

int tu_wait_exit(int pid, int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

bool tu_sigterm_until_exit(int pid, int *status) {
    for (int i = 0; i < 100000; i++) {
        kill(pid, SIGTERM);
        usleep(100);
        if (waitpid(pid, status, WNOHANG) == pid) return true;
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return false;
}

static void *read_npy(const char *path, ps_npy_dtype dtype, uint64_t *n) {
    ps_npy_reader *r;
    ps_error err = {0};
    cr_assert_eq(ps_npy_open(path, &r, &err), PS_OK, "%s", err.msg);
    const ps_npy_info *info = ps_npy_info_of(r);
    cr_assert_eq(info->dtype, dtype, "%s: another dtype", path);
    void *v = malloc(info->count * info->item_size + 8);
    cr_assert_not_null(v);
    cr_assert_eq(ps_npy_read(r, v, info->count, &err), PS_OK, "%s", err.msg);
    *n = info->count;
    ps_npy_close(r);
    return v;
}

float *tu_read_f4(const char *path, uint64_t *n) { return read_npy(path, PS_NPY_F4, n); }
uint64_t *tu_read_u8(const char *path, uint64_t *n) { return read_npy(path, PS_NPY_U8, n); }
