/* signals.c - see signals.h. */
#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int pipe_fds[2] = {-1, -1}; /* the handler's only way to the loop */

static void on_signal(int sig) {
    const int saved = errno;
    const unsigned char b = (unsigned char)sig;
    if (write(pipe_fds[1], &b, 1) < 0) { /* full pipe: that many signals are already pending */
    }
    errno = saved;
}

ps_status ps_signals_catch(const int *signums, size_t n, int *read_fd, ps_error *err) {
    if (pipe_fds[0] < 0) {
        int fds[2];
        if (pipe(fds) != 0) return ps_error_set(err, PS_IO, "signals: pipe: %s", strerror(errno));
        for (int i = 0; i < 2; i++) { /* children (ps-launch's) must not inherit it */
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
            fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        }
        pipe_fds[0] = fds[0], pipe_fds[1] = fds[1];
    }
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < n; i++) {
        if (signums[i] <= 0 || signums[i] > 255)
            return ps_error_set(err, PS_INVALID_ARG, "signals: signal %d out of range",
                                signums[i]);
        if (sigaction(signums[i], &sa, NULL) != 0)
            return ps_error_set(err, PS_IO, "signals: sigaction(%d): %s", signums[i],
                                strerror(errno));
    }
    *read_fd = pipe_fds[0];
    return PS_OK;
}

int ps_signals_next(int read_fd) {
    unsigned char b;
    for (;;) {
        ssize_t r = read(read_fd, &b, 1);
        if (r == 1) return b;
        if (r < 0 && errno == EINTR) continue;
        return 0;
    }
}
