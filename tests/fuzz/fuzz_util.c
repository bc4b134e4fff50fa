/* fuzz_util.c - see fuzz_util.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "fuzz_util.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

void fz_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz check failed: %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

uint8_t fz_u8(fz_in *in) {
    if (in->n == 0) return 0;
    in->n--;
    return *in->p++;
}

uint32_t fz_u32(fz_in *in) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | fz_u8(in);
    return v;
}

static char dir[64];
static pid_t dir_owner;

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_dir(void) {
    if (dir[0] != '\0' && getpid() == dir_owner) nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

const char *fz_dir(void) {
    if (dir[0] == '\0' || dir_owner != getpid()) { /* a forked child (Criterion) makes its own */
        struct stat st;
        snprintf(dir, sizeof(dir), "%s/ps_fuzz.XXXXXX",
                 stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp");
        FZ_CHECK(mkdtemp(dir) != NULL, "mkdtemp %s failed", dir);
        if (dir_owner == 0) atexit(rm_dir);
        dir_owner = getpid();
    }
    return dir;
}

const char *fz_path(const char *name) {
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", fz_dir(), name);
    return p;
}

const char *fz_write(const char *name, const void *p, size_t n) {
    const char *path = fz_path(name);
    FILE *f = fopen(path, "wb");
    FZ_CHECK(f != NULL, "cannot create %s", path);
    FZ_CHECK(n == 0 || fwrite(p, 1, n, f) == n, "cannot write %s", path);
    FZ_CHECK(fclose(f) == 0, "cannot write %s", path);
    return path;
}

void *fz_devnull(void) {
    static FILE *f;
    if (f == NULL) f = fopen("/dev/null", "w");
    FZ_CHECK(f != NULL, "cannot open /dev/null");
    return f;
}

uint64_t fz_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* v lies within p[0, n) (compared as addresses: F4's views point anywhere). */
static bool inside(ps_bytes v, const uint8_t *p, size_t n) {
    const uintptr_t a = (uintptr_t)v.p, lo = (uintptr_t)p;
    return v.len == 0 || (a >= lo && a - lo <= n && v.len <= n - (a - lo));
}

bool fz_view_outside(const uint8_t *payload, size_t len) {
    ps_msg m;
    if (ps_wire_decode(payload, len, &m, NULL) != PS_OK) return false;
    return !inside(m.keys, payload, len) || !inside(m.grads, payload, len) ||
           !inside(m.pull_keys, payload, len) || !inside(m.values, payload, len) ||
           !inside(m.acc, payload, len) || !inside(m.steps, payload, len);
}

bool fz_stream_view_outside(const uint8_t *p, size_t n) {
    while (n >= 4) {
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (len > n - 4) return false;
        if (fz_view_outside(p + 4, len)) return true;
        p += 4 + len, n -= 4 + len;
    }
    return false;
}
