/* bench_util.c - helpers shared by bench_ps and bench_load (see bench_util.h): the clock, CPU
 * pinning, splitmix64, and the ps-server child they both spawn on loopback. */
#define _GNU_SOURCE /* sched_setaffinity */
#include "bench_util.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool bench_pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0;
}

void bench_unpin(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (long c = 0; c < sysconf(_SC_NPROCESSORS_ONLN) && c < CPU_SETSIZE; c++) CPU_SET(c, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

uint64_t bench_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bench_fill_grads(float *g, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        g[i] = (float)((double)(bench_splitmix64(&seed) >> 11) * 0x1.0p-53 * 0.02 - 0.01);
}

int bench_reap(const char *prog, pid_t pid, int ms) {
    int status = 0;
    for (int waited = 0; waited < ms; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) return status;
        usleep(10000);
    }
    fprintf(stderr, "%s: pid %d did not exit within %d ms; SIGKILL\n", prog, (int)pid, ms);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
}

bool bench_server_prepare(bench_server_proc *p, const char *prog) {
    *p = (bench_server_proc){.prog = prog, .out_fd = -1};
    snprintf(p->dir, sizeof(p->dir), "/tmp/%s.XXXXXX", prog);
    if (mkdtemp(p->dir) == NULL) {
        fprintf(stderr, "%s: mkdtemp: %s\n", prog, strerror(errno));
        return false;
    }
    snprintf(p->job, sizeof(p->job), "%s/job.json", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/server.log", p->dir);
    return true;
}

bool bench_server_start(bench_server_proc *p, const char *path, int cpu) {
    const char *prog = p->prog;
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "%s: ps-server not found at %s (use --server PATH)\n", prog, path);
        return false;
    }
    int pfd[2];
    if (pipe(pfd) != 0) {
        fprintf(stderr, "%s: pipe: %s\n", prog, strerror(errno));
        return false;
    }
    fflush(NULL);
    p->pid = fork();
    if (p->pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
        close(pfd[0]), close(pfd[1]);
        return false;
    }
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (cpu >= 0) bench_pin_to(cpu);
        else bench_unpin(); /* a server with a thread pool may then use every core */
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]), close(pfd[1]);
        FILE *lf = freopen(p->log, "w", stderr);
        (void)lf;
        execl(path, path, "--config", p->job, "--shard", "0", "--listen", "127.0.0.1:0",
              (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    p->out_fd = pfd[0];
    char line[512];
    size_t len = 0;
    double deadline = bench_now_s() + BENCH_SERVER_START_MS / 1e3;
    while (len < sizeof(line) - 1 && memchr(line, '\n', len) == NULL) {
        int left = (int)((deadline - bench_now_s()) * 1e3);
        struct pollfd pf = {.fd = p->out_fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, left) <= 0) break;
        ssize_t r = read(p->out_fd, line + len, sizeof(line) - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    line[len] = '\0';
    const char *at = strstr(line, "listening on ");
    const char *colon = at ? strrchr(at, ':') : NULL;
    if (colon == NULL || (p->port = atoi(colon + 1)) <= 0) {
        fprintf(stderr, "%s: %s printed no port within %d ms (got \"%s\"; log: %s)\n", prog, path,
                BENCH_SERVER_START_MS, line, p->log);
        bench_server_stop(p);
        return false;
    }
    return true;
}

bool bench_server_stop(bench_server_proc *p) {
    bool clean = true;
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        int st = bench_reap(p->prog, p->pid, BENCH_REAP_MS);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "%s: ps-server %d ended with status 0x%x (log: %s)\n", p->prog,
                    (int)p->pid, st, p->log);
            clean = false;
        }
        p->pid = 0;
    }
    if (p->out_fd >= 0) close(p->out_fd);
    p->out_fd = -1;
    return clean;
}

void bench_server_remove_files(const bench_server_proc *p) {
    unlink(p->job), unlink(p->log), rmdir(p->dir);
}

void bench_server_path_default(char *buf, size_t size) {
    ssize_t n = readlink("/proc/self/exe", buf, size - 16);
    if (n <= 0) n = 0;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    snprintf(slash ? slash + 1 : buf, 16, "ps-server");
}
