/* ps_status.h - status codes shared by every module, and an error record that carries a message.
 * Functions return ps_status and take `ps_error *err` last; err may be NULL. */
#ifndef PS_STATUS_H
#define PS_STATUS_H

#include <stdarg.h>

#define PS_STATUS_MAP(X)                                                                           \
    X(OK, "ok")                                                                                    \
    X(NOMEM, "out of memory")                                                                      \
    X(INVALID_ARG, "invalid argument")                                                             \
    X(PROTO, "malformed message")                                                                  \
    X(TOO_LARGE, "size exceeds configured limit")                                                  \
    X(IO, "I/O error")                                                                             \
    X(CONFIG, "bad configuration")                                                                 \
    X(DATA, "bad input data")                                                                      \
    X(TIMEOUT, "deadline exceeded")                                                                \
    X(MISMATCH, "version or job mismatch")                                                         \
    X(NOT_FOUND, "not found")                                                                      \
    X(CLOSED, "connection closed")

typedef enum {
#define X(name, msg) PS_##name,
    PS_STATUS_MAP(X)
#undef X
        PS_STATUS_COUNT
} ps_status;

typedef struct {
    ps_status code;
    char msg[512];
} ps_error;

/* Short fixed text for a status ("out of memory"); never NULL. */
const char *ps_status_str(ps_status s);

/* Fills err (if not NULL) with code and a printf-style message. Returns code. */
ps_status ps_error_set(ps_error *err, ps_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message, keeping the code. Returns err->code (or code). */
ps_status ps_error_prefix(ps_error *err, ps_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
