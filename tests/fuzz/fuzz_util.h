/* fuzz_util.h - what the libFuzzer harnesses in tests/fuzz share: a cursor over the input, a
 * private scratch directory, and a check that aborts with a message (libFuzzer and Criterion both
 * report an abort as a crash, with the input that caused it). */
#ifndef PS_FUZZ_UTIL_H
#define PS_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Aborts with "fuzz check failed: file:line: what" when cond is false. */
#define FZ_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) fz_fail(__FILE__, __LINE__, __VA_ARGS__);                                     \
    } while (0)
void fz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* A finding that waits for its fix (tests/test_fuzz_regressions.c has its test, disabled until
 * then): an input that would hit it again is skipped, so that the fuzzers, here and in CI, go on
 * looking for new bugs. Delete the line with the fix. */
#define FZ_KNOWN(finding, cond)                                                                    \
    do {                                                                                           \
        if (cond) return 0;                                                                        \
    } while (0)

/* F4: true when payload decodes but one of its bulk views (ps_msg) lies outside it. */
bool fz_view_outside(const uint8_t *payload, size_t len);

/* F4 for a byte stream of frames (4-byte big-endian length + payload; a cut-off tail is
 * ignored): true when any frame's payload does. */
bool fz_stream_view_outside(const uint8_t *p, size_t n);

/* The input, consumed from the front: option bytes first, the payload is the rest. */
typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;

uint8_t fz_u8(fz_in *in); /* 0 once the input is used up */
uint32_t fz_u32(fz_in *in);

/* A directory of this process's own (under /dev/shm when it exists: fsync is free there),
 * removed with its files at exit. */
const char *fz_dir(void);

/* Writes n bytes to fz_dir()/name (subdirectories are not created) and returns the full path,
 * valid until the fourth call after this one. */
const char *fz_write(const char *name, const void *p, size_t n);

/* fz_dir()/name; same lifetime as fz_write's result. */
const char *fz_path(const char *name);

/* A FILE that discards what is written (for loggers that should still format). */
void *fz_devnull(void);

/* Monotonic milliseconds. */
uint64_t fz_now_ms(void);

#endif
