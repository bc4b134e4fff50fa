/* test_position.c - a worker's position file (worker/position.h) and resuming from it: the
 * file's round trip and every way it can be wrong, and a worker that resumes at a position
 * trains exactly the batches after it. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "position.h"
#include "testutil.h"
#include "train.h"

static char dir[64];
static void setup(void) { tu_tmpdir(dir, "ps_position"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(position, .init = setup, .fini = teardown, .timeout = 60);

Test(position, saves_and_loads_what_it_saved) {
    char p[256];
    ps_error err = {0};
    cr_assert_eq(ps_position_path(p, sizeof(p), dir, 3, &err), PS_OK);
    cr_assert_str_eq(strrchr(p, '/'), "/rank-3.pos");
    ps_position got, want = {.epoch = 4, .step = 17, .clock = 123456789012ULL, .seq = 99};
    bool found = true;
    cr_assert_eq(ps_position_load(p, "job", 3, &got, &found, &err), PS_OK, "%s", err.msg);
    cr_assert(!found, "no file yet");
    cr_assert_eq(ps_position_save(p, "job", 3, &want, &err), PS_OK, "%s", err.msg);
    cr_assert_str_eq(tu_slurp(p),
                     "ps-position 1 job=job rank=3 epoch=4 step=17 clock=123456789012 seq=99\n");
    cr_assert_eq(ps_position_load(p, "job", 3, &got, &found, &err), PS_OK, "%s", err.msg);
    cr_assert(found);
    cr_assert(got.epoch == 4 && got.step == 17 && got.clock == 123456789012ULL && got.seq == 99);
    /* a directory that does not exist yet is made */
    char deeper[256];
    snprintf(deeper, sizeof(deeper), "%s/state", dir);
    cr_assert_eq(ps_position_path(p, sizeof(p), deeper, 0, &err), PS_OK);
    cr_assert_eq(ps_position_save(p, "job", 0, &want, &err), PS_OK, "%s", err.msg);
}

typedef struct {
    char name[32];
    char text[160];
} bad_case;

ParameterizedTestParameters(position, refuses_what_is_not_its_position) {
    static bad_case cases[] = {
        {"empty", ""},
        {"garbage", "hello\n"},
        {"version 2", "ps-position 2 job=job rank=0 epoch=1 step=2 clock=3 seq=4\n"},
        {"cut short", "ps-position 1 job=job rank=0 epoch=1 step=2 clock=3"},
        {"no newline", "ps-position 1 job=job rank=0 epoch=1 step=2 clock=3 seq=4"},
        {"another job", "ps-position 1 job=other rank=0 epoch=1 step=2 clock=3 seq=4\n"},
        {"another rank", "ps-position 1 job=job rank=1 epoch=1 step=2 clock=3 seq=4\n"},
    };
    return cr_make_param_array(bad_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(bad_case *c, position, refuses_what_is_not_its_position) {
    char p[256];
    snprintf(p, sizeof(p), "%s/rank-0.pos", dir);
    tu_write_file(p, c->text, 0644);
    ps_position pos;
    bool found;
    ps_error err = {0};
    cr_assert_eq(ps_position_load(p, "job", 0, &pos, &found, &err), PS_DATA, "%s", c->name);
    cr_assert(strstr(err.msg, p), "%s: the message names the file: %s", c->name, err.msg);
}

Test(position, an_unwritable_place_is_an_io_error) {
    char file[128], p[256];
    snprintf(file, sizeof(file), "%s/plain", dir);
    tu_write_file(file, "x", 0644);
    snprintf(p, sizeof(p), "%s/rank-0.pos", file); /* a "directory" that is a file */
    ps_position pos = {0};
    ps_error err = {0};
    cr_assert_eq(ps_position_save(p, "job", 0, &pos, &err), PS_IO);
    cr_assert(strstr(err.msg, file), "%s", err.msg);
    cr_assert_eq(ps_position_path(p, 20, dir, 0, &err), PS_CONFIG, "too long for its buffer");
}

/* --- resuming --------------------------------------------------------------------------------- */

/* One async worker, sequential (fit.overlap false): plain SGD, the same bits every run. 400 rows
 * in batches of 50: 8 steps an epoch. */
static void job_text(char *json, size_t n, int epochs, bool state) {
    snprintf(json, n,
             "{\"job_id\": \"pos\", \"seed\": 11, \"cluster\": {\"workers\": 1},"
             " \"optimizer\": {\"learning_rate\": 0.1},"
             " \"model\": {\"input_dim\": 5, \"layers\": [{\"units\": 4, \"activation\": \"relu\"},"
             " {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": %d, \"batch_size\": 50, \"verbose\": 0, \"overlap\": false,"
             " \"state_dir\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 400, \"cols\": 5}}}",
             epochs, state ? dir : "");
}

typedef struct {
    unsigned long long step, samples;
    char loss_sum[40];
} epoch_line;

/* Trains job on the running server s; the "epoch" events it printed into lines (up to 4). */
static int train(ps_job_config *job, test_server *s, epoch_line lines[4]) {
    tu_job_use(job, &s, 1);
    char events[128];
    snprintf(events, sizeof(events), "%s/events", dir);
    FILE *out = fopen(events, "w");
    ps_train_options o = {.job = job, .rank = 0, .events = true, .out = out,
                          .log = {.level = PS_LOG_ERROR}};
    ps_error err = {0};
    cr_assert_eq(ps_train_run(&o, &err), PS_OK, "%s", err.msg);
    fclose(out);
    int n = 0;
    for (const char *at = strstr(tu_slurp(events), "\"ev\": \"epoch\""); at != NULL && n < 4;
         at = strstr(at + 1, "\"ev\": \"epoch\""), n++) {
        const char *st = strstr(at, "\"step\": "), *sa = strstr(at, "\"samples\": ");
        const char *ls = strstr(at, "\"loss_sum\": ");
        cr_assert(st && sa && ls);
        lines[n].step = strtoull(st + 8, NULL, 10), lines[n].samples = strtoull(sa + 11, NULL, 10);
        sscanf(ls + 12, "%39[^,]", lines[n].loss_sum);
    }
    return n;
}

Test(position, resuming_at_an_epoch_trains_as_if_never_stopped) {
    char json[1024];
    ps_job_config two, one;
    job_text(json, sizeof(json), 2, false);
    tu_job(json, &two);
    epoch_line ref[4], a[4], b[4];
    test_server *s = tu_server_start(&two, 0);
    cr_assert_eq(train(&two, s, ref), 2);
    tu_server_free(s);

    /* epoch 1 alone on fresh servers, then a worker told it stopped after it */
    job_text(json, sizeof(json), 1, true);
    tu_job(json, &one);
    s = tu_server_start(&one, 0);
    cr_assert_eq(train(&one, s, a), 1);
    char p[256];
    snprintf(p, sizeof(p), "%s/rank-0.pos", dir);
    struct stat sb;
    cr_assert_neq(stat(p, &sb), 0, "a worker that completed leaves no position");
    tu_write_file(p, "ps-position 1 job=pos rank=0 epoch=1 step=0 clock=0 seq=8\n", 0644);
    job_text(json, sizeof(json), 2, true);
    tu_job(json, &two);
    cr_assert_eq(train(&two, s, b), 1, "only epoch 2 is left");
    tu_server_free(s);
    cr_assert_str_eq(a[0].loss_sum, ref[0].loss_sum);
    cr_assert_str_eq(b[0].loss_sum, ref[1].loss_sum, "epoch 2 resumed: the same bits");
    cr_assert_eq(b[0].step, 8);
}

Test(position, resuming_mid_epoch_skips_the_batches_done) {
    char json[1024];
    ps_job_config job;
    job_text(json, sizeof(json), 1, true);
    tu_job(json, &job);
    char p[256];
    snprintf(p, sizeof(p), "%s/rank-0.pos", dir);
    tu_write_file(p, "ps-position 1 job=pos rank=0 epoch=0 step=3 clock=0 seq=3\n", 0644);
    test_server *s = tu_server_start(&job, 0);
    epoch_line l[4];
    cr_assert_eq(train(&job, s, l), 1);
    tu_server_free(s);
    cr_assert_eq(l[0].step, 5, "steps 4..8 of 8");
    cr_assert_eq(l[0].samples, 250);
}
