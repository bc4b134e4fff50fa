/* test_server_mem.c - memory control through a real shard on loopback: server.max_memory_bytes
 * refuses a push with an Error (the client and everyone else go on) or, with eviction "lru",
 * evicts and stays under the limit; admission and expiry as a client sees them; the stats a
 * client reads (and that ps-stats prints) count rows, admitted, pending and evicted. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adagrad.h"
#include "init.h"
#include "testutil.h"

#define LIMIT 1048576 /* the smallest server.max_memory_bytes */

static ps_job_config job;
static test_server *srv;
static ps_client *cl;

static void teardown(void) {
    ps_client_destroy(cl);
    tu_server_free(srv);
    cl = NULL, srv = NULL;
}
TestSuite(server_mem, .fini = teardown, .timeout = 60);

/* One shard; table "emb" (dim 4, zeros, lr 0.1) with the given extra keys, and "bias". */
static void start(const char *server_keys, const char *table_keys) {
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"mem\", \"seed\": 3,"
             " \"cluster\": {\"servers\": 1, \"connect_timeout_ms\": 5000,"
             "              \"request_timeout_ms\": 10000},"
             " \"server\": {%s},"
             " \"optimizer\": {\"learning_rate\": 0.1},"
             " \"tables\": [{\"name\": \"emb\", \"dim\": 4%s}, {\"name\": \"bias\", \"dim\": 1}]}",
             server_keys, table_keys);
    tu_job(json, &job);
    srv = tu_server_start(&job, 0);
    tu_job_use(&job, &srv, 1);
    cl = tu_client(&job, 0);
}

static ps_table_stats stats_of(ps_client *c, uint32_t table) {
    ps_table_stats st[2];
    ps_error err = {0};
    cr_assert_eq(ps_client_stats(c, st, &err), PS_OK, "%s", err.msg);
    cr_assert_str_eq(st[table].name, job.tables[table].name);
    return st[table];
}

/* Pushes n new keys from *next on, gradient 1 everywhere. */
static ps_status push_new(ps_client *c, uint64_t *next, size_t n, ps_error *err) {
    uint64_t *keys = malloc(n * sizeof(*keys));
    float *g = malloc(n * 4 * sizeof(float));
    cr_assert(keys && g);
    for (size_t i = 0; i < n; i++) keys[i] = (*next)++;
    for (size_t i = 0; i < n * 4; i++) g[i] = 1.0f;
    ps_status st = ps_client_push(c, 0, keys, n, g, err);
    free(keys), free(g);
    return st;
}

Test(server_mem, over_the_limit_a_push_is_refused_and_everyone_goes_on) {
    start("\"max_memory_bytes\": 1048576", "");
    ps_error err = {0};
    uint64_t next = 0;
    ps_status st = PS_OK;
    int pushes = 0;
    while (pushes < 200 && (st = push_new(cl, &next, 2000, &err)) == PS_OK) pushes++;
    cr_assert_eq(st, PS_TOO_LARGE, "200 pushes of 2000 rows (16 MB) fit in 1 MiB? %s", err.msg);
    cr_assert_gt(pushes, 0, "the first push was refused: %s", err.msg);
    cr_assert(strstr(err.msg, "\"emb\"") && strstr(err.msg, "1048576") &&
                  strstr(err.msg, "server.max_memory_bytes") && strstr(err.msg, "hold"),
              "the message names the table, the limit and the usage: %s", err.msg);
    /* the same client goes on: known keys need no memory, pulls never do */
    const uint64_t old = 5;
    float g[4] = {1, 1, 1, 1}, w[4];
    cr_assert_eq(ps_client_push(cl, 0, &old, 1, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(cl, 0, &old, 1, w, &err), PS_OK, "%s", err.msg);
    /* two steps of gradient 1 from zeros: -0.1, then -0.1 - 0.1 / sqrt(2) */
    cr_assert_float_eq(w[0], -0.1f - 0.1f / 1.41421356f, 1e-6);
    const uint64_t fresh = next + 1000;
    cr_assert_eq(ps_client_pull(cl, 0, &fresh, 1, w, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(w[0], 0.0f);
    /* another client too; and the tables stayed under the limit */
    ps_client *other = tu_client(&job, 0);
    ps_table_stats e = stats_of(other, 0), b = stats_of(other, 1);
    cr_assert_leq(e.bytes + b.bytes, LIMIT);
    cr_assert_eq(e.rows, (uint64_t)pushes * 2000);
    cr_assert_eq(e.evicted, 0);
    ps_client_destroy(other);
}

Test(server_mem, with_lru_the_server_evicts_and_stays_under_the_limit) {
    start("\"max_memory_bytes\": 1048576", ", \"eviction\": \"lru\"");
    ps_error err = {0};
    uint64_t next = 0;
    for (int i = 0; i < 100; i++) /* 200 000 rows of 44 bytes: 8.8 MB */
        cr_assert_eq(push_new(cl, &next, 2000, &err), PS_OK, "push %d: %s", i, err.msg);
    ps_table_stats e = stats_of(cl, 0), b = stats_of(cl, 1);
    cr_assert_leq(e.bytes + b.bytes, LIMIT);
    cr_assert_gt(e.evicted, 0);
    cr_assert_eq(e.rows + e.evicted, 200000, "every row is held or was evicted");
    cr_assert_eq(e.admitted, 200000);
    /* the last push's rows are there (the oldest went first) */
    uint64_t keys[4] = {next - 1, next - 500, next - 1000, next - 2000};
    float w[4 * 4];
    cr_assert_eq(ps_client_pull(cl, 0, keys, 4, w, &err), PS_OK, "%s", err.msg);
    for (int i = 0; i < 4; i++) cr_assert_float_eq(w[4 * i], -0.1f, 0, "key %d of the last push", i);
    const uint64_t first = 0;
    cr_assert_eq(ps_client_pull(cl, 0, &first, 1, w, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(w[0], 0.0f, "the first row outlived 99 newer pushes in a full table");
}

/* lru on one table does not let another table's push through: "bias" has no policy. */
Test(server_mem, a_table_without_a_policy_is_refused_even_if_another_could_evict) {
    start("\"max_memory_bytes\": 1048576", ", \"eviction\": \"lru\"");
    ps_error err = {0};
    uint64_t next = 0;
    for (int i = 0; i < 20; i++) cr_assert_eq(push_new(cl, &next, 2000, &err), PS_OK, "%s", err.msg);
    uint64_t *keys = malloc(40000 * sizeof(*keys));
    float *g = calloc(40000, sizeof(float));
    cr_assert(keys && g);
    for (size_t i = 0; i < 40000; i++) keys[i] = i;
    cr_assert_eq(ps_client_push(cl, 1, keys, 40000, g, &err), PS_TOO_LARGE, "%s", err.msg);
    cr_assert(strstr(err.msg, "\"bias\"") && strstr(err.msg, "eviction: none"), "%s", err.msg);
    free(keys), free(g);
}

Test(server_mem, admission_and_expiry_through_a_server) {
    start("", ", \"admit_after\": 2, \"expire_after_steps\": 3");
    ps_error err = {0};
    const uint64_t k = 77, other = 78;
    float g[4] = {2, 2, 2, 2}, w[4];
    cr_assert_eq(ps_client_push(cl, 0, &k, 1, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(cl, 0, &k, 1, w, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(w[0], 0.0f, "one push of two: no row");
    ps_table_stats s = stats_of(cl, 0);
    cr_assert_eq(s.rows, 0);
    cr_assert_eq(s.pending, 1);
    cr_assert_eq(ps_client_push(cl, 0, &k, 1, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(cl, 0, &k, 1, w, &err), PS_OK, "%s", err.msg);
    cr_assert_float_eq(w[0], -0.1f, 0, "the second push made the row and applied itself only");
    s = stats_of(cl, 0);
    cr_assert_eq(s.rows, 1);
    cr_assert_eq(s.admitted, 1);
    cr_assert_eq(s.pending, 0);
    cr_assert_eq(s.row_bytes, 8 + 4 * 4 + 4 * 4 + 4, "key, w, acc, touch stamp");
    for (int i = 0; i < 3; i++) /* three steps without k */
        cr_assert_eq(ps_client_push(cl, 0, &other, 1, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(cl, 0, &k, 1, w, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(w[0], 0.0f, "expired after 3 steps untouched");
    cr_assert_eq(ps_client_push(cl, 0, &other, 1, g, &err), PS_OK, "%s", err.msg);
    s = stats_of(cl, 0);
    cr_assert_eq(s.evicted, 1);
    cr_assert_eq(s.rows, 1, "78's row");
}

/* ps-stats prints one line per shard and table, then the total. */
Test(server_mem, ps_stats_prints_the_tables) {
    start("", ", \"admit_after\": 2");
    ps_error err = {0};
    uint64_t keys[3] = {1, 2, 3};
    float g[12] = {0};
    cr_assert_eq(ps_client_push(cl, 0, keys, 3, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_push(cl, 0, keys, 2, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_push(cl, 1, keys, 1, g, &err), PS_OK, "%s", err.msg);
    char dir[64], path[128], out[128], errf[128];
    tu_tmpdir(dir, "psstats");
    snprintf(path, sizeof(path), "%s/job.json", dir);
    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(errf, sizeof(errf), "%s/err", dir);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"job_id\": \"mem\", \"seed\": 3, \"cluster\": {\"servers\": [\"%s\"]},"
             " \"optimizer\": {\"learning_rate\": 0.1},"
             " \"tables\": [{\"name\": \"emb\", \"dim\": 4}, {\"name\": \"bias\", \"dim\": 1}]}",
             tu_server_addr(srv));
    tu_write_file(path, json, 0644);
    char *argv[] = {PS_BINARY_DIR "/ps-stats", path, NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, errf), 20000);
    cr_assert_eq(code, 0, "ps-stats: %s", tu_slurp(errf));
    const char *text = tu_slurp(out);
    unsigned long long rows, bytes, adm, pend, ev;
    char per[32];
    const char *l = strstr(text, "\n0      emb ");
    cr_assert_not_null(l, "%s", text);
    cr_assert_eq(sscanf(l, " 0 emb %llu %llu %31s %llu %llu %llu", &rows, &bytes, per, &adm, &pend,
                        &ev), 6, "%s", text);
    cr_assert_eq(rows, 2);
    cr_assert_eq(adm, 2);
    cr_assert_eq(pend, 1);
    cr_assert_eq(ev, 0);
    cr_assert_gt(bytes, 0);
    l = strstr(text, "\n0      bias ");
    cr_assert_not_null(l, "%s", text);
    cr_assert_eq(sscanf(l, " 0 bias %llu", &rows), 1);
    cr_assert_eq(rows, 1);
    l = strstr(text, "\ntotal ");
    cr_assert_not_null(l, "%s", text);
    cr_assert_eq(sscanf(l, " total %llu %llu %31s %llu %llu", &rows, &bytes, per, &adm, &pend), 5);
    cr_assert_eq(rows, 3);
    cr_assert_eq(adm, 3);
    cr_assert_eq(pend, 1);
    tu_rmtree(dir);
}

/* --- a whole job through ps-launch ------------------------------------------------------------ */

/* A sparse job with admit_after 3 on its embedding (model.input), 2 servers, 2 workers, in the
 * given consistency, through ps-launch --stats with an export and a metrics file. Ids 1..50
 * recur; ids 1001..1010 occur once per epoch, twice in all: pending, not exported. The rows
 * ps-launch --stats counts are the rows ps-export writes. */
static void launch_job(const char *consistency) {
    char dir[64], data[128], jobf[128], out[128], errf[128], exp[160], metrics[128], json[2048];
    tu_tmpdir(dir, "psmemjob");
    snprintf(data, sizeof(data), "%s/d.svm", dir);
    snprintf(jobf, sizeof(jobf), "%s/job.json", dir);
    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(errf, sizeof(errf), "%s/err", dir);
    snprintf(exp, sizeof(exp), "%s/export", dir);
    snprintf(metrics, sizeof(metrics), "%s/m.jsonl", dir);
    FILE *f = fopen(data, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 120; i++) {
        if (i < 10)
            fprintf(f, "%d %d:1 %d:1\n", i % 2, 1 + i % 50, 1001 + i);
        else
            fprintf(f, "%d %d:1 %d:0.5\n", (i * 7) % 3 == 0, 1 + i % 50, 1 + (i * 3) % 50);
    }
    fclose(f);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"memjob\", \"seed\": 9,"
             " \"cluster\": {\"servers\": 2, \"workers\": 2, \"consistency\": \"%s\"},"
             " \"optimizer\": {\"learning_rate\": 0.1},"
             " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": 2000, \"admit_after\": 3,"
             "   \"expire_after_steps\": 100000},"
             "  \"layers\": [{\"units\": 4, \"activation\": \"tanh\"},"
             "   {\"units\": 1, \"activation\": \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
             " \"fit\": {\"epochs\": 2, \"batch_size\": 8, \"verbose\": 0, \"export_to\": \"%s\","
             "  \"metrics_file\": \"%s\"},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"%s\"}}}",
             consistency, exp, metrics, data);
    tu_write_file(jobf, json, 0644);
    char *argv[] = {PS_BINARY_DIR "/ps-launch", jobf, "--stats", NULL};
    int code = tu_wait_exit(tu_spawn(argv, out, errf), 60000);
    cr_assert_eq(code, 0, "%s: exit %d\n%s\n%s", consistency, code, tu_slurp(out), tu_slurp(errf));
    /* the stats table: dense/kernel on shards 0 and 1 */
    unsigned long long rows = 0, pending = 0;
    const char *text = tu_slurp(out);
    cr_assert(strstr(text, "bytes/row") && strstr(text, "\ntotal "), "%s", text);
    for (const char *l = text; (l = strstr(l, " dense/kernel ")) != NULL; l++) {
        unsigned long long r, b, adm, p;
        char per[32];
        cr_assert_eq(sscanf(l, " dense/kernel %llu %llu %31s %llu %llu", &r, &b, per, &adm, &p), 5);
        rows += r, pending += p;
    }
    cr_assert_geq(pending, 10, "%s: ids seen once are pending\n%s", consistency, text);
    cr_assert_gt(rows, 0);
    uint64_t n;
    char keys_path[200];
    snprintf(keys_path, sizeof(keys_path), "%s/dense/kernel/keys.npy", exp);
    uint64_t *keys = tu_read_u8(keys_path, &n);
    cr_assert_eq(n, rows, "%s: %llu rows exported, %llu counted", consistency,
                 (unsigned long long)n, rows);
    for (uint64_t i = 0; i < n; i++)
        cr_assert_lt(keys[i], 1000, "%s: key %llu was pushed once, yet has a row", consistency,
                     (unsigned long long)keys[i]);
    free(keys);
    /* the metrics file: per epoch, the job's line and the servers' line */
    int server_lines = 0;
    for (const char *p = tu_slurp(metrics); (p = strstr(p, "\"server_stats\"")) != NULL; p++)
        server_lines++;
    cr_assert_eq(server_lines, 2, "%s", tu_slurp(metrics));
    tu_rmtree(dir);
}

Test(server_mem, async_job_with_admission_exports_what_stats_count) { launch_job("async"); }
Test(server_mem, sync_job_with_admission_exports_what_stats_count) { launch_job("sync"); }
Test(server_mem, ssp_job_with_admission_exports_what_stats_count) { launch_job("ssp"); }

/* An lru table that cannot make room even by evicting every row refuses the push. */
Test(server_mem, lru_refuses_a_push_bigger_than_the_limit) {
    start("\"max_memory_bytes\": 1048576", ", \"eviction\": \"lru\"");
    ps_error err = {0};
    uint64_t next = 0;
    cr_assert_eq(push_new(cl, &next, 1000, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(push_new(cl, &next, 40000, &err), PS_TOO_LARGE, "40 000 rows of 44 B in 1 MiB");
    cr_assert(strstr(err.msg, "eviction: lru, no more rows to evict"), "%s", err.msg);
    cr_assert_eq(push_new(cl, &next, 1000, &err), PS_OK, "after a refusal: %s", err.msg);
}

/* ps-stats needs the servers' addresses: a count of servers is a usage error (exit 2). */
Test(server_mem, ps_stats_needs_server_addresses) {
    char dir[64], path[128], out[128], errf[128];
    tu_tmpdir(dir, "psstats");
    snprintf(path, sizeof(path), "%s/job.json", dir);
    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(errf, sizeof(errf), "%s/err", dir);
    tu_write_file(path, "{\"cluster\": {\"servers\": 2}, \"tables\": [{\"name\": \"t\", \"dim\": 1}]}",
                  0644);
    char *argv[] = {PS_BINARY_DIR "/ps-stats", path, NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(argv, out, errf), 20000), 2);
    cr_assert(strstr(tu_slurp(errf), "cluster.servers is a count (2)"), "%s", tu_slurp(errf));
    char *extra[] = {PS_BINARY_DIR "/ps-stats", path, "other.json", NULL};
    cr_assert_eq(tu_wait_exit(tu_spawn(extra, out, errf), 20000), 2);
    cr_assert(strstr(tu_slurp(errf), "unknown or extra argument \"other.json\""), "%s",
              tu_slurp(errf));
    tu_rmtree(dir);
}
