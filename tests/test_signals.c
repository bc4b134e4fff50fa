/* test_signals.c - signals.h: signals caught for the life of the process, in order, through the
 * pipe; none lost to a default action once nobody watches. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>

#include "signals.h"

TestSuite(signals, .timeout = 10);

/* Two SIGTERMs and a SIGUSR1 with no loop watching: the process lives, and the pipe holds them. */
Test(signals, caught_in_order_and_kept_in_the_pipe) {
    int fd = -1;
    ps_error err = {0};
    cr_assert_eq(ps_signals_catch((const int[]){SIGTERM, SIGUSR1}, 2, &fd, &err), PS_OK, "%s",
                 err.msg);
    cr_assert_eq(ps_signals_next(fd), 0, "nothing caught yet");
    cr_assert_eq(raise(SIGTERM), 0);
    cr_assert_eq(raise(SIGUSR1), 0);
    cr_assert_eq(raise(SIGTERM), 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 1000), 1, "the read end is readable (what uv_poll waits for)");
    cr_assert_eq(ps_signals_next(fd), SIGTERM);
    cr_assert_eq(ps_signals_next(fd), SIGUSR1);
    cr_assert_eq(ps_signals_next(fd), SIGTERM);
    cr_assert_eq(ps_signals_next(fd), 0);
    int again = -1; /* a second call adds signals to the same pipe */
    cr_assert_eq(ps_signals_catch((const int[]){SIGINT}, 1, &again, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(again, fd);
    cr_assert_eq(raise(SIGINT), 0);
    cr_assert_eq(ps_signals_next(fd), SIGINT);
}

Test(signals, a_signal_number_out_of_range_is_refused) {
    int fd = -1;
    ps_error err = {0};
    cr_assert_eq(ps_signals_catch((const int[]){SIGTERM, 300}, 2, &fd, &err), PS_INVALID_ARG);
    cr_assert_str_eq(err.msg, "signals: signal 300 out of range");
}
