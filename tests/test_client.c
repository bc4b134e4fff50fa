/* test_client.c - the client library against real shards on loopback: what it accepts from a
 * server and what it refuses before any request is sized by the server's word. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

TestSuite(client, .timeout = 30);

static const char *base_json =
    "{\"job_id\": \"t\", \"cluster\": {\"servers\": [\"127.0.0.1:1\"], \"connect_timeout_ms\": 3000,"
    " \"request_timeout_ms\": 5000},"
    " \"tables\": [{\"name\": \"emb\", \"dim\": 16}, {\"name\": \"w\", \"dim\": 4}]}";

/* A server of job server_json and a client of base_json: the client's verdict and message. */
static ps_status connect_to(const char *server_json, char *msg, size_t msg_len) {
    ps_job_config sjob, cjob;
    tu_job(server_json, &sjob);
    tu_job(base_json, &cjob);
    test_server *srv = tu_server_start(&sjob, 0);
    tu_job_use(&cjob, &srv, 1);
    ps_client_options o = {.job = &cjob, .rank = 0, .log = {.level = PS_LOG_ERROR}};
    ps_client *c = NULL;
    ps_error err = {0};
    ps_status st = ps_client_create(&o, &c, &err);
    snprintf(msg, msg_len, "%s", err.msg);
    ps_client_destroy(c);
    tu_server_free(srv);
    return st;
}

Test(client, same_tables_are_accepted) {
    char msg[512];
    cr_assert_eq(connect_to(base_json, msg, sizeof(msg)), PS_OK, "%s", msg);
}

/* The bug this guards: with one extra table first, the worker took the server's dims for its own
 * table indices and wrote 80 000 bytes into a 16 384-byte buffer. */
Test(client, an_extra_table_first_is_refused_by_name) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"extra\", \"dim\": 100},"
        " {\"name\": \"emb\", \"dim\": 16}, {\"name\": \"w\", \"dim\": 4}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%d: %s", st, msg);
    cr_assert(strstr(msg, "\"extra\"") && strstr(msg, "\"emb\"") && strstr(msg, "name differs"),
              "%s", msg);
}

Test(client, a_missing_table_is_refused) {
    char msg[512];
    ps_status st =
        connect_to("{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16}]}", msg,
                   sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "does not serve table 1 \"w\""), "%s", msg);
}

Test(client, an_extra_table_last_is_refused) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16},"
        " {\"name\": \"w\", \"dim\": 4}, {\"name\": \"more\", \"dim\": 4}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "\"more\", which"), "%s", msg);
}

Test(client, another_dim_is_refused) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16},"
        " {\"name\": \"w\", \"dim\": 5}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "\"w\" (dim 5)") && strstr(msg, "dim differs"), "%s", msg);
}

Test(client, another_optimizer_is_refused) {
    const char *cases[][2] = {
        {"\"optimizer\": {\"learning_rate\": 0.02}", "optimizer.learning_rate"},
        {"\"optimizer\": {\"form\": \"keras\"}", "optimizer.form"},
        {"\"optimizer\": {\"epsilon\": 1e-8}", "optimizer.epsilon"},
        {"\"optimizer\": {\"rowwise\": true}", "optimizer.rowwise"},
        {"\"optimizer\": {\"weight_decay\": 0.1}", "optimizer.weight_decay"},
        {"\"optimizer\": {\"lr_decay\": 0.1}", "optimizer.lr_decay"},
        {"\"optimizer\": {\"initial_accumulator_value\": 0.5}",
         "optimizer.initial_accumulator_value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[512], msg[512];
        snprintf(json, sizeof(json),
                 "{\"job_id\": \"t\", %s, \"tables\": [{\"name\": \"emb\", \"dim\": 16},"
                 " {\"name\": \"w\", \"dim\": 4}]}",
                 cases[i][0]);
        ps_status st = connect_to(json, msg, sizeof(msg));
        cr_assert_eq(st, PS_MISMATCH, "%s: %s", cases[i][0], msg);
        cr_assert(strstr(msg, cases[i][1]), "%s: %s", cases[i][0], msg);
    }
}

Test(client, another_initializer_is_refused) {
    char msg[512];
    ps_status st = connect_to(
        "{\"job_id\": \"t\", \"tables\": [{\"name\": \"emb\", \"dim\": 16,"
        " \"init\": {\"type\": \"normal\"}}, {\"name\": \"w\", \"dim\": 4}]}",
        msg, sizeof(msg));
    cr_assert_eq(st, PS_MISMATCH, "%s", msg);
    cr_assert(strstr(msg, "init differs"), "%s", msg);
}
