/* ps_status.c - status names and error formatting. */
#include "ps_status.h"

#include <stdio.h>
#include <string.h>

const char *ps_status_str(ps_status s) {
    switch (s) {
#define X(name, msg)                                                                               \
    case PS_##name:                                                                                \
        return msg;
        PS_STATUS_MAP(X)
#undef X
    default:
        return "unknown status";
    }
}

ps_status ps_error_set(ps_error *err, ps_status code, const char *fmt, ...) {
    if (err == NULL) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

ps_status ps_error_prefix(ps_error *err, ps_status code, const char *fmt, ...) {
    if (err == NULL) return code;
    char old[sizeof(err->msg)];
    memcpy(old, err->msg, sizeof(old));
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    size_t at = n < 0 ? 0 : (size_t)n < sizeof(err->msg) ? (size_t)n : sizeof(err->msg) - 1;
    size_t room = sizeof(err->msg) - at;
    if (room > 3) {
        memcpy(err->msg + at, ": ", 2);
        size_t take = strnlen(old, room - 3);
        memcpy(err->msg + at + 2, old, take);
        err->msg[at + 2 + take] = '\0';
    }
    if (err->code == PS_OK) err->code = code;
    return err->code;
}
