/* test_progress.c - the per-step time breakdown line (the Keras line is checked through the
 * worker and the launcher in test_train and test_launch). Expected strings are hand-computed. */
#include <criterion/criterion.h>

#include "progress.h"

Test(progress, times_per_step_with_shares_and_the_prep_thread) {
    /* 100 steps in 1 s: 1 ms data, 2 pull wait, 6 compute, 1 push, 0 other = 10 ms */
    ps_step_times t = {.data = 0.1, .wait = 0.2, .compute = 0.6, .send = 0.1, .prep = 0.05};
    char line[256];
    ps_progress_format_times(&t, 100, line, sizeof(line));
    cr_assert_str_eq(line, "time/step: 10.000ms = data 1.000ms (10%) + pull wait 2.000ms (20%) + "
                           "compute 6.000ms (60%) + push 1.000ms (10%) + other 0.000ms (0%); "
                           "prep thread 0.500ms");
    t.prep = 0; /* no prep thread: no such part */
    t.other = 0.01, t.compute = 0.59;
    ps_progress_format_times(&t, 4, line, sizeof(line));
    cr_assert_str_eq(line, "time/step: 250.000ms = data 25.000ms (10%) + pull wait 50.000ms (20%) + "
                           "compute 147.500ms (59%) + push 25.000ms (10%) + other 2.500ms (1%)");
}

Test(progress, times_of_no_steps_read_zero_and_a_short_buffer_is_cut) {
    ps_step_times t = {.data = 1};
    char line[256];
    ps_progress_format_times(&t, 0, line, sizeof(line));
    cr_assert_str_eq(line, "time/step: 0.000ms = data 0.000ms (100%) + pull wait 0.000ms (0%) + "
                           "compute 0.000ms (0%) + push 0.000ms (0%) + other 0.000ms (0%)");
    char small[16];
    ps_progress_format_times(&t, 1, small, sizeof(small));
    cr_assert_str_eq(small, "time/step: 1000");
}

Test(progress, the_time_line_says_how_many_links_use_shared_memory) {
    ps_step_times t = {.compute = 0.2, .shm_links = 3, .links = 4};
    char line[512];
    ps_progress_format_times(&t, 100, line, sizeof(line));
    cr_assert_str_eq(line, "time/step: 2.000ms = data 0.000ms (0%) + pull wait 0.000ms (0%) + "
                           "compute 2.000ms (100%) + push 0.000ms (0%) + other 0.000ms (0%); "
                           "shared memory: 3 of 4 links");
    t.prep = 0.1;
    ps_progress_format_times(&t, 100, line, sizeof(line));
    cr_assert(strstr(line, "; prep thread 1.000ms; shared memory: 3 of 4 links") != NULL, "%s",
              line);
}
