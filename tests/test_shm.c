/* test_shm.c - the shared-memory lane of co-located peers (common/shm.h): the segment itself,
 * what a server does with regions a peer names (raw frames: every bad one gets an Error and the
 * connection stays), and clients whose bulk goes through it getting the same bits as TCP. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client.h"
#include "shm.h"
#include "testutil.h"

/* --- the segment ------------------------------------------------------------------------------ */

static bool name_exists(const char *name) {
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd >= 0) close(fd);
    return fd >= 0;
}

Test(segment, a_peer_maps_the_same_bytes_and_the_name_is_gone_after) {
    ps_shm a, b;
    ps_error err = {0};
    cr_assert_eq(ps_shm_create(8192, &a, &err), PS_OK, "%s", err.msg);
    char name[PS_SHM_NAME_MAX];
    snprintf(name, sizeof(name), "%s", a.name);
    cr_assert(name_exists(name));
    cr_assert_eq(ps_shm_attach(name, 8192, &b, &err), PS_OK, "%s", err.msg);
    cr_assert_not(name_exists(name), "the attaching peer unlinks the name");
    a.p[100] = 42, b.p[8191] = 7;
    cr_assert_eq(b.p[100], 42);
    cr_assert_eq(a.p[8191], 7);
    ps_shm_close(&a);
    cr_assert_eq(b.p[100], 42, "the mapping outlives the other side's close");
    ps_shm_close(&b);
    cr_assert_null(b.p);
}

Test(segment, attach_says_not_found_for_another_hosts_name_and_checks_the_size) {
    ps_shm a, b;
    ps_error err = {0};
    cr_assert_eq(ps_shm_attach("/ps-no-such-segment", 4096, &b, &err), PS_NOT_FOUND);
    cr_assert(strstr(err.msg, "/ps-no-such-segment") != NULL, "%s", err.msg);
    cr_assert_eq(ps_shm_create(4096, &a, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_shm_attach(a.name, 8192, &b, &err), PS_IO);
    cr_assert(strstr(err.msg, "not 8192") != NULL, "%s", err.msg);
    cr_assert_null(b.p);
    ps_shm_close(&a);
    cr_assert_eq(ps_shm_create(PS_SHM_MAX_BYTES + 1ull, &a, &err), PS_INVALID_ARG);
    cr_assert_eq(ps_shm_create(0, &a, &err), PS_INVALID_ARG);
}

Test(segment, a_region_must_lie_inside_and_have_the_size_asked) {
    ps_shm s = {0};
    ps_error err = {0};
    uint8_t *p = NULL;
    ps_ShmRef in = {.offset = 64, .length = 128};
    cr_assert_eq(ps_shm_region(&s, &in, 128, "Push", &p, &err), PS_INVALID_ARG, "no segment");
    cr_assert(strstr(err.msg, "no segment") != NULL, "%s", err.msg);
    cr_assert_eq(ps_shm_create(4096, &s, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_shm_region(&s, &in, 128, "Push", &p, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(p, s.p + 64);
    const ps_ShmRef bad[] = {{64, 127}, {4096 - 64, 128}, {4097, 0}, {UINT64_MAX - 8, 128},
                             {64, UINT64_MAX}};
    const size_t want[] = {128, 128, 0, 128, 128};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(ps_shm_region(&s, &bad[i], want[i], "Pull", &p, &err), PS_INVALID_ARG,
                     "region %zu", i);
        cr_assert(strncmp(err.msg, "Pull: ", 6) == 0, "%s", err.msg);
    }
    ps_ShmRef whole = {.offset = 0, .length = 4096}, empty_end = {.offset = 4096, .length = 0};
    cr_assert_eq(ps_shm_region(&s, &whole, 4096, "Pull", &p, &err), PS_OK);
    cr_assert_eq(ps_shm_region(&s, &empty_end, 0, "Pull", &p, &err), PS_OK);
    ps_shm_close(&s);
}

/* --- a server and raw peers ------------------------------------------------------------------- */

static const char *job_json =
    "{\"job_id\": \"shm\", \"seed\": 5,"
    " \"cluster\": {\"servers\": 1, \"connect_timeout_ms\": 5000, \"request_timeout_ms\": 5000},"
    " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"uniform\"}}]}";

static ps_job_config job;
static test_server *srv;

static void setup(void) {
    tu_job(job_json, &job);
    srv = tu_server_start(&job, 0);
    tu_job_use(&job, &srv, 1);
}

static void teardown(void) { tu_server_free(srv); }

TestSuite(lane, .init = setup, .fini = teardown, .timeout = 30);

/* Hello asking for shm_bytes; the HelloReply's shm_name into name ("" when none). */
static int hello_asking(uint64_t shm_bytes, char name[PS_SHM_NAME_MAX]) {
    int fd = tu_connect(tu_server_port(srv));
    ps_Envelope env;
    tu_hello_env(fd, &env, job.job_id, job.token, ps_Role_ROLE_WORKER, 0);
    env.hello.shm_bytes = shm_bytes;
    cr_assert(tu_send_msg(fd, &env, NULL, NULL, NULL));
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf));
    cr_assert_eq(m.env.which_body, ps_Envelope_hello_reply_tag);
    snprintf(name, PS_SHM_NAME_MAX, "%s", m.env.hello_reply.shm_name);
    free(buf);
    return fd;
}

static void expect_error(int fd, const char *has, const char *what) {
    ps_msg m;
    uint8_t *buf;
    cr_assert(tu_read_msg(fd, &m, &buf), "%s: no reply", what);
    cr_assert_eq(m.env.which_body, ps_Envelope_error_tag, "%s: not an Error", what);
    cr_assert_eq(m.env.error.code, ps_ErrorCode_ERR_INVALID_ARG, "%s: %s", what,
                 m.env.error.message);
    cr_assert(strstr(m.env.error.message, has) != NULL, "%s: \"%s\"", what, m.env.error.message);
    free(buf);
}

static void pull(int fd, uint64_t id, const uint64_t *keys, size_t n, const ps_ShmRef *at,
                 ps_msg *m, uint8_t **buf) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = id;
    env.which_body = ps_Envelope_pull_tag;
    if (at != NULL) env.pull.has_values_at = true, env.pull.values_at = *at;
    ps_bulk k = {.src = {(const uint8_t *)keys, n * 8}};
    cr_assert(tu_send_msg(fd, &env, &k, NULL, NULL));
    cr_assert(tu_read_msg(fd, m, buf));
    cr_assert_eq(m->env.request_id, id);
}

static void push(int fd, uint64_t id, const uint64_t *keys, size_t n, const float *inline_g,
                 const ps_ShmRef *at) {
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = id;
    env.which_body = ps_Envelope_push_tag;
    if (at != NULL) env.push.has_grads_at = true, env.push.grads_at = *at;
    ps_bulk k = {.src = {(const uint8_t *)keys, n * 8}};
    ps_bulk g = {.src = {(const uint8_t *)inline_g, inline_g ? n * 16 : 0}};
    cr_assert(tu_send_msg(fd, &env, &k, &g, NULL));
}

Test(lane, rows_and_gradients_through_the_segment_match_the_inline_ones) {
    char name[PS_SHM_NAME_MAX];
    int fd = hello_asking(1 << 16, name);
    cr_assert(name[0] != '\0', "a loopback worker is offered a segment");
    ps_shm seg;
    ps_error err = {0};
    cr_assert_eq(ps_shm_attach(name, 1 << 16, &seg, &err), PS_OK, "%s", err.msg);

    const uint64_t keys[3] = {7, 8, 9};
    ps_msg m;
    uint8_t *buf;
    pull(fd, 2, keys, 3, NULL, &m, &buf); /* inline: the reference */
    float inline_rows[12];
    cr_assert_eq(m.values.len, sizeof(inline_rows));
    memcpy(inline_rows, m.values.p, sizeof(inline_rows));
    free(buf);
    const ps_ShmRef at = {.offset = 1024, .length = sizeof(inline_rows)};
    pull(fd, 3, keys, 3, &at, &m, &buf);
    cr_assert_eq(m.env.which_body, ps_Envelope_values_tag);
    cr_assert(m.env.values.in_shm);
    cr_assert_eq(m.values.len, 0);
    free(buf);
    cr_assert_eq(memcmp(seg.p + 1024, inline_rows, sizeof(inline_rows)), 0);

    /* the same gradient through the segment here, inline on a fresh server of the same job
     * (init is a function of seed, table and key): the same rows after */
    const float g[12] = {0.5f, -1, 2, 0.25f, 1, 1, 1, 1, -3, 0.125f, 0, 4};
    memcpy(seg.p + 4096, g, sizeof(g));
    const ps_ShmRef gat = {.offset = 4096, .length = sizeof(g)};
    push(fd, 4, keys, 3, NULL, &gat);
    cr_assert(tu_read_msg(fd, &m, &buf) && m.env.which_body == ps_Envelope_ack_tag);
    free(buf);
    float a[12], b0[12], b[12];
    pull(fd, 5, keys, 3, NULL, &m, &buf);
    memcpy(a, m.values.p, sizeof(a));
    free(buf);
    test_server *fresh = tu_server_start(&job, 0);
    ps_job_config j2 = job;
    tu_job_use(&j2, &fresh, 1);
    ps_client *c = tu_client(&j2, 0);
    cr_assert_eq(ps_client_pull(c, 0, keys, 3, b0, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(memcmp(b0, inline_rows, sizeof(b0)), 0);
    cr_assert_eq(ps_client_push(c, 0, keys, 3, g, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_pull(c, 0, keys, 3, b, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(c);
    tu_server_free(fresh);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
    cr_assert_neq(memcmp(a, inline_rows, sizeof(a)), 0, "the push moved the rows");
    close(fd);
    ps_shm_close(&seg);
}

Test(lane, bad_regions_get_an_error_and_the_connection_stays) {
    char name[PS_SHM_NAME_MAX];
    int fd = hello_asking(4096, name);
    ps_shm seg;
    ps_error err = {0};
    cr_assert_eq(ps_shm_attach(name, 4096, &seg, &err), PS_OK, "%s", err.msg);
    const uint64_t keys[2] = {1, 2};
    const float g[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    ps_msg m;
    uint8_t *buf;

    float before[8];
    pull(fd, 1, keys, 2, NULL, &m, &buf);
    cr_assert_eq(m.values.len, sizeof(before));
    memcpy(before, m.values.p, sizeof(before));
    free(buf);
    const ps_ShmRef past = {.offset = 4096 - 16, .length = 32};
    push(fd, 2, keys, 2, NULL, &past);
    expect_error(fd, "shared-memory region", "gradients past the end");
    const ps_ShmRef short_ = {.offset = 0, .length = 16};
    push(fd, 3, keys, 2, NULL, &short_);
    expect_error(fd, "shared-memory region", "gradients of the wrong size");
    const ps_ShmRef ok = {.offset = 0, .length = 32};
    push(fd, 4, keys, 2, g, &ok);
    expect_error(fd, "both inline and in shared memory", "gradients twice");
    const ps_ShmRef huge = {.offset = UINT64_MAX - 4, .length = 32};
    pull(fd, 5, keys, 2, &huge, &m, &buf);
    cr_assert_eq(m.env.which_body, ps_Envelope_error_tag);
    cr_assert(strstr(m.env.error.message, "shared-memory region") != NULL, "%s",
              m.env.error.message);
    free(buf);
    /* a PushPull whose rows could not go where it says is refused before its push is applied */
    ps_Envelope env = ps_Envelope_init_zero;
    env.request_id = 6;
    env.which_body = ps_Envelope_push_pull_tag;
    env.push_pull.has_values_at = true, env.push_pull.values_at = huge;
    ps_bulk kb = {.src = {(const uint8_t *)keys, 16}}, gb = {.src = {(const uint8_t *)g, 32}};
    cr_assert(tu_send_msg(fd, &env, &kb, &gb, &kb));
    expect_error(fd, "shared-memory region", "PushPull rows out of the segment");
    /* none of those touched a row; the connection still serves, in the segment too */
    pull(fd, 7, keys, 2, &ok, &m, &buf);
    cr_assert(m.env.values.in_shm, "reply: %d", m.env.which_body);
    free(buf);
    cr_assert_eq(memcmp(seg.p, before, sizeof(before)), 0, "a refused request changed a row");
    close(fd);
    ps_shm_close(&seg);

    /* a connection without a segment naming one */
    fd = hello_asking(0, name);
    cr_assert_eq(name[0], '\0');
    push(fd, 8, keys, 2, NULL, &ok);
    expect_error(fd, "no segment", "no segment");
    pull(fd, 9, keys, 2, NULL, &m, &buf);
    cr_assert_eq(m.values.len, 32);
    free(buf);
    close(fd);
}

Test(lane, the_server_unlinks_a_name_the_peer_never_maps) {
    char name[PS_SHM_NAME_MAX];
    int fd = hello_asking(4096, name);
    cr_assert(name[0] != '\0');
    cr_assert(name_exists(name));
    const uint64_t key = 1;
    ps_msg m;
    uint8_t *buf;
    pull(fd, 2, &key, 1, NULL, &m, &buf); /* the next frame: the peer had its chance */
    free(buf);
    cr_assert_not(name_exists(name));

    int fd2 = hello_asking(4096, name);
    cr_assert(name_exists(name));
    close(fd2); /* gone without another frame: the close unlinks */
    for (int i = 0; i < 200 && name_exists(name); i++) usleep(10000);
    cr_assert_not(name_exists(name));

    fd2 = hello_asking((uint64_t)PS_SHM_MAX_BYTES + 1, name);
    cr_assert_eq(name[0], '\0', "over the limit: no segment, still connected");
    pull(fd2, 3, &key, 1, NULL, &m, &buf);
    cr_assert_eq(m.values.len, 16);
    free(buf);
    close(fd2), close(fd);
}

/* --- clients: the same bits either way ---------------------------------------------------------- */

enum { N = 3000, DIM = 4, STEPS = 3 };

/* The gradients of a push of n rows from src: staged in the segment when the client has room
 * (counted in *staged), else src itself. */
static const float *grads_for(ps_client *c, const float *src, size_t n, uint64_t *staged) {
    float *g = ps_client_stage(c, 0, n);
    if (g == NULL) return src;
    memcpy(g, src, n * DIM * sizeof(float));
    ++*staged;
    return g;
}

/* Three steps of a push, then two PushPulls in flight at once (each pushing more rows than it
 * pulls: the second's regions must not reach into the first's, which the server has not read
 * yet), then a pull of every row that may leave them in the segment (*in_place: it did, and its
 * out block was not written); every reply kept: out (STEPS * 2 + 1) blocks of N * DIM. With
 * stage_bytes, gradients are staged where there is room (*staged: how many). */
static uint64_t drive(ps_job_config *j, size_t shm_bytes, size_t stage_bytes, float *out,
                      bool *in_place, uint64_t *staged) {
    uint64_t *keys = malloc(2 * N * sizeof(uint64_t));
    float *g = malloc(N * DIM * sizeof(float));
    for (size_t i = 0; i < 2 * N; i++) keys[i] = i * 2654435761u % 1000003u;
    for (size_t i = 0; i < N * DIM; i++) g[i] = (float)((int)(i % 13) - 6) / 8.0f;
    ps_client_options o = {.job = j, .log = {.level = PS_LOG_ERROR}, .shm_bytes = shm_bytes,
                           .shm_stage_bytes = stage_bytes};
    *staged = 0;
    const float *first = NULL; /* step 0's first staged buffer */
    ps_client *c;
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_OK, "%s", err.msg);
    for (uint32_t s = 0; s < ps_client_num_shards(c); s++)
        cr_assert_eq(ps_client_shared_memory(c, s), shm_bytes, "shard %u", s);
    for (int step = 0; step < STEPS; step++) {
        float *o0 = out + (size_t)step * 2 * N * DIM, *o1 = o0 + N * DIM;
        ps_op op[2];
        const float *g0 = grads_for(c, g, N, staged);
        if (step == 0) first = g0;
        else if (first != g) cr_assert_eq(g0, first, "every push answered: the area is free");
        cr_assert_eq(ps_client_push(c, 0, keys + N, N, g0, &err), PS_OK, "%s", err.msg);
        const float *g1 = grads_for(c, g, N, staged);
        const float *g2 = grads_for(c, g + N * DIM / 2, N / 2, staged);
        if (g1 != g && g2 != g + N * DIM / 2)
            cr_assert(g2 >= g1 + N * DIM, "two buffers in flight at once do not overlap");
        cr_assert_eq(ps_client_pushpull_async(c, 0, keys + step * 100, N, g1,
                                              keys + step * 100 + 50, N / 4, o0, &op[0], &err),
                     PS_OK, "%s", err.msg);
        cr_assert_eq(ps_client_pushpull_async(c, 0, keys + N, N / 2, g2, keys + step * 10,
                                              N / 4, o1, &op[1], &err),
                     PS_OK, "%s", err.msg);
        cr_assert_eq(ps_client_wait(c, op[0], &err), PS_OK, "%s", err.msg);
        cr_assert_eq(ps_client_wait(c, op[1], &err), PS_OK, "%s", err.msg);
    }
    float *last = out + STEPS * 2 * N * DIM, *rows = NULL;
    for (size_t i = 0; i < N * DIM; i++) last[i] = -7.0f;
    ps_op op;
    cr_assert_eq(ps_client_pull_view_async(c, 0, keys, N, last, &rows, &op, &err), PS_OK, "%s",
                 err.msg);
    cr_assert_eq(ps_client_wait(c, op, &err), PS_OK, "%s", err.msg);
    *in_place = rows != last;
    if (*in_place) {
        const uint8_t *seg_lo = (const uint8_t *)rows;
        cr_assert_eq((uintptr_t)seg_lo % 64, 0, "rows in the segment at a 64-byte boundary");
        for (size_t i = 0; i < N * DIM; i++) cr_assert_eq(last[i], -7.0f, "out written at %zu", i);
        memcpy(last, rows, N * DIM * sizeof(float)); /* the bits compared below */
    }
    const uint64_t through = ps_client_shm_requests(c);
    cr_assert_eq(ps_client_staged_pushes(c), *staged, "each staged buffer went uncopied");
    ps_client_destroy(c);
    free(keys), free(g);
    return through;
}

/* The same requests on fresh servers of the same job, through a segment of shm_bytes (the last
 * stage_bytes of it for staged gradients) and over TCP alone: every reply the same bits. Returns
 * the requests that used the segment; *in_place: the last pull's rows were read where they
 * arrived (never over TCP); *staged: pushes sent from staged gradients. */
static uint64_t same_bits(uint32_t shards, size_t shm_bytes, size_t stage_bytes, bool *in_place,
                          uint64_t *staged) {
    const size_t len = (size_t)(STEPS * 2 + 1) * N * DIM;
    float *out[2] = {calloc(len, sizeof(float)), calloc(len, sizeof(float))};
    uint64_t through[2];
    bool placed[2];
    uint64_t st[2];
    for (int k = 0; k < 2; k++) {
        ps_job_config j;
        char json[256];
        snprintf(json, sizeof(json),
                 "{\"job_id\": \"same\", \"seed\": 9, \"cluster\": {\"servers\": %u}, \"tables\": "
                 "[{\"name\": \"emb\", \"dim\": 4, \"init\": {\"type\": \"uniform\"}}]}", shards);
        tu_job(json, &j);
        test_server *s[2] = {tu_server_start(&j, 0), shards > 1 ? tu_server_start(&j, 1) : NULL};
        tu_job_use(&j, s, shards);
        through[k] = drive(&j, k == 0 ? shm_bytes : 0, k == 0 ? stage_bytes : 0, out[k],
                           &placed[k], &st[k]);
        for (uint32_t i = 0; i < shards; i++) tu_server_free(s[i]);
    }
    cr_assert_eq(through[1], 0, "no segment: everything inline");
    cr_assert(!placed[1], "no segment: the rows are in out");
    cr_assert_eq(st[1], 0, "no segment: nothing staged");
    *in_place = placed[0], *staged = st[0];
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(memcmp(&out[0][i], &out[1][i], 4), 0, "value %zu (reply %zu): %.9g vs %.9g",
                     i, i / (N * DIM), (double)out[0][i], (double)out[1][i]);
    free(out[0]), free(out[1]);
    return through[0];
}

Test(clients, through_shared_memory_a_client_gets_the_bits_of_tcp, .timeout = 60) {
    /* every request fits: push, pushpull, pushpull per step, then the pull, left in place */
    bool in_place;
    uint64_t staged;
    cr_assert_eq(same_bits(1, 1 << 20, 0, &in_place, &staged), STEPS * 3 + 1);
    cr_assert(in_place, "one shard, one reply with every row: read where they arrived");
    cr_assert_eq(staged, 0, "no staging area asked for");
}

Test(clients, two_shards_split_requests_get_the_bits_of_tcp, .timeout = 60) {
    bool in_place;
    uint64_t staged;
    cr_assert_eq(same_bits(2, 1 << 20, 256 << 10, &in_place, &staged), 2 * (STEPS * 3 + 1),
                 "each shard's part of each request");
    cr_assert(!in_place, "rows from two segments are gathered into out");
    cr_assert_eq(staged, 0, "gradients split over two shards are never staged");
}

Test(clients, what_does_not_fit_goes_inline_with_the_same_bits, .timeout = 60) {
    /* 16 KiB: a PushPull's N / 4 rows (12 000 bytes) fit, its gradients (48 000) do not; the
     * first request's N / 2 pushed rows do not either */
    bool in_place;
    uint64_t staged;
    const uint64_t through = same_bits(1, 16 << 10, 0, &in_place, &staged);
    cr_assert(!in_place, "the last pull's 48 000 bytes came inline, into out");
    cr_assert(through > 0 && through < STEPS * 3 + 1, "%llu requests through the segment",
              (unsigned long long)through);
}

Test(clients, staged_gradients_go_uncopied_with_the_same_bits, .timeout = 60) {
    /* 128 KiB of a 1 MiB segment staged: a step's pushes (48 000, 48 000 and 24 000 bytes) fit */
    bool in_place;
    uint64_t staged;
    cr_assert_eq(same_bits(1, 1 << 20, 128 << 10, &in_place, &staged), STEPS * 3 + 1);
    cr_assert_eq(staged, STEPS * 3, "every push of every step from a staged buffer");
    cr_assert(in_place);
}

Test(clients, a_staging_area_too_small_leaves_the_gradients_ours, .timeout = 60) {
    /* 64 KiB staged: the first two pushes fit, the third (24 000 bytes more) does not */
    bool in_place;
    uint64_t staged;
    cr_assert_eq(same_bits(1, 1 << 20, 64 << 10, &in_place, &staged), STEPS * 3 + 1);
    cr_assert_eq(staged, STEPS * 2, "two of each step's three pushes staged");
}

/* --- staging: its bookkeeping across failures and reconnects ---------------------------------- */

TestSuite(staging, .init = setup, .fini = teardown, .timeout = 30);

static ps_client *staging_client(size_t shm_bytes, size_t stage_bytes) {
    ps_client_options o = {.job = &job, .log = {.level = PS_LOG_ERROR}, .shm_bytes = shm_bytes,
                           .shm_stage_bytes = stage_bytes};
    ps_client *c;
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_OK, "%s", err.msg);
    return c;
}

Test(staging, a_buffer_staged_before_a_reconnect_is_pushed_with_what_was_written) {
    enum { K = 8 };
    ps_client *c = staging_client(1 << 20, 64 << 10);
    ps_error err = {0};
    uint64_t keys[2 * K]; /* the first K from the staged buffer, the rest from our own memory */
    for (size_t i = 0; i < 2 * K; i++) keys[i] = 1000 + i;
    float before[2 * K * DIM], after[2 * K * DIM], ours[K * DIM];
    cr_assert_eq(ps_client_pull(c, 0, keys, 2 * K, before, &err), PS_OK, "%s", err.msg);
    float *a = ps_client_stage(c, 0, K);
    cr_assert_not_null(a);
    for (size_t i = 0; i < K * DIM; i++) a[i] = ours[i] = 1.0f;
    cr_assert_eq(ps_client_recover(c, 0, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_shared_memory(c, 0), 1 << 20, "a new segment after the reconnect");
    float *b = ps_client_stage(c, 0, K);
    cr_assert_not_null(b);
    cr_assert(b + K * DIM <= a || a + K * DIM <= b, "the old segment is still mapped");
    for (size_t i = 0; i < K * DIM; i++) b[i] = 0.0f; /* what a stale reference would send */
    cr_assert_eq(ps_client_push(c, 0, keys, K, a, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_push(c, 0, keys + K, K, ours, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_staged_pushes(c), 0, "the old segment's buffer went copied");
    cr_assert_eq(ps_client_pull(c, 0, keys, 2 * K, after, &err), PS_OK, "%s", err.msg);
    for (size_t i = 0; i < K * DIM; i++) { /* the first AdaGrad step of g = 1 moves each alike */
        const float staged = before[i] - after[i], copied = before[K * DIM + i] - after[K * DIM + i];
        cr_assert(copied > 1e-4f, "value %zu: the control row moved (%g)", i, (double)copied);
        cr_assert(fabsf(staged - copied) < 1e-6f, "value %zu: moved %g, the control %g", i,
                  (double)staged, (double)copied);
    }
    ps_client_destroy(c);
}

Test(staging, a_push_that_fails_frees_its_buffer_for_the_area) {
    /* 4 KiB staged: 32 buffers of 8 rows (128 bytes each) until the area is free again */
    ps_client *c = staging_client(1 << 20, 4096);
    ps_error err = {0};
    uint64_t keys[8];
    for (size_t i = 0; i < 8; i++) keys[i] = 50 + i;
    float *g = ps_client_stage(c, 0, 8);
    cr_assert_not_null(g);
    memset(g, 0, 8 * DIM * sizeof(float));
    cr_assert_eq(ps_client_push(c, 7, keys, 8, g, &err), PS_INVALID_ARG, "no table 7");
    for (int i = 0; i < 100; i++) {
        g = ps_client_stage(c, 0, 8);
        cr_assert_not_null(g, "step %d: the failed push still holds the area", i);
        for (size_t k = 0; k < 8 * DIM; k++) g[k] = 0.01f;
        cr_assert_eq(ps_client_push(c, 0, keys, 8, g, &err), PS_OK, "%s", err.msg);
    }
    cr_assert_eq(ps_client_staged_pushes(c), 100);
    ps_client_destroy(c);
}

Test(staging, no_area_without_staging_bytes_or_a_segment_and_more_than_the_segment_is_refused) {
    ps_client *c = staging_client(4096 + 48, 0); /* not a multiple of 64: nothing rounds into one */
    cr_assert_eq(ps_client_shared_memory(c, 0), 4096 + 48);
    cr_assert_null(ps_client_stage(c, 0, 1));
    ps_client_destroy(c);
    c = staging_client(PS_SHM_MAX_BYTES + 4096ull, 4096); /* the server refuses the segment */
    cr_assert_eq(ps_client_shared_memory(c, 0), 0);
    cr_assert_null(ps_client_stage(c, 0, 1));
    float g[DIM] = {0.5f, 0.5f, 0.5f, 0.5f};
    uint64_t key = 9;
    ps_error err = {0};
    cr_assert_eq(ps_client_push(c, 0, &key, 1, g, &err), PS_OK, "over TCP: %s", err.msg);
    ps_client_destroy(c);
    ps_client_options o = {.job = &job, .log = {.level = PS_LOG_ERROR}, .shm_bytes = 4096,
                           .shm_stage_bytes = 8192};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_INVALID_ARG);
    cr_assert(strstr(err.msg, "shm_stage_bytes (8192) is more than shm_bytes (4096)") != NULL,
              "%s", err.msg);
}
