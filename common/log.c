/* log.c - one line per message: "[prefix] level: text". */
#include "log.h"

#include <stdarg.h>

void ps_log(const ps_logger *log, ps_log_level level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (log != NULL && level < log->level) return;
    FILE *out = log != NULL && log->out != NULL ? log->out : stderr;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (log != NULL && log->prefix[0] != '\0')
        fprintf(out, "[%s] %s: %s\n", log->prefix, names[level], line);
    else
        fprintf(out, "%s: %s\n", names[level], line);
    fflush(out);
}
