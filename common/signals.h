/* signals.h - signals caught for the rest of the process's life. libuv's uv_signal_t puts the
 * default action back when its last handle closes, so a process that closes its handles on its
 * way out (the job ended; it frees tables, joins threads) dies of a SIGTERM that comes then,
 * instead of exiting with the status it documents. Here a sigaction handler, installed once and
 * never removed, writes the signal's number into a pipe; a loop watches the pipe's read end
 * (uv_poll) while it cares, and a signal after that stays in the pipe: the process exits as it
 * was going to. One pipe per process: the handler must find it, so its write end is the one
 * file-scope variable.
 *
 *     int fd;
 *     if (ps_signals_catch((const int[]){SIGINT, SIGTERM}, 2, &fd, &err) != PS_OK) ...
 *     uv_poll_init(loop, &poll, fd), uv_poll_start(&poll, UV_READABLE, on_readable);
 *     for (int sig; (sig = ps_signals_next(fd)) != 0;) ...   // in on_readable
 *     uv_close((uv_handle_t *)&poll, ...);                    // done listening; fd stays open
 */
#ifndef PS_SIGNALS_H
#define PS_SIGNALS_H

#include <stddef.h>

#include "ps_status.h"

/* Catches signums (each < 256) from now until the process exits; *read_fd: the pipe's read end
 * (non-blocking, close-on-exec; owned by this module, never closed). May be called again (more
 * signals, the same pipe). PS_IO if the pipe or a sigaction fails. */
ps_status ps_signals_catch(const int *signums, size_t n, int *read_fd, ps_error *err);

/* The next signal caught, in order, or 0 when none is pending. */
int ps_signals_next(int read_fd);

#endif
