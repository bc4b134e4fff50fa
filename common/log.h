/* log.h - leveled logging to a FILE*, with a per-process prefix ("server 0", "worker 1").
 * The logger is passed in, never global. */
#ifndef PS_LOG_H
#define PS_LOG_H

#include <stdio.h>

typedef enum { PS_LOG_DEBUG, PS_LOG_INFO, PS_LOG_WARN, PS_LOG_ERROR } ps_log_level;

typedef struct {
    FILE *out;          /* borrowed; stderr when NULL */
    ps_log_level level; /* messages below it are dropped */
    char prefix[48];
} ps_logger;

void ps_log(const ps_logger *log, ps_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
