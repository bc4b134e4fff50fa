/* test_checkpoint.c - server.checkpoint_dir: the file's layout read by hand, round trips through
 * real servers (in-process and a ps-server process on SIGTERM), two generations kept, a torn or
 * corrupted newest file passed over for the one before, restore onto other shard counts with
 * every row on its new owner, another job's or other tables' files refused, a full disk. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "barrier.h"
#include "checkpoint.h"
#include "hash.h"
#include "testutil.h"

/* emb: dim 4 with lr_decay (the store keeps per-row steps); row: dim 3, one accumulator per row */
#define JOB_FMT                                                                                    \
    "{\"job_id\": \"%s\", \"seed\": 7,"                                                            \
    " \"cluster\": {\"servers\": %u, \"connect_timeout_ms\": 5000, \"request_timeout_ms\": 5000}," \
    " \"server\": {\"checkpoint_dir\": \"%s\"},"                                                   \
    " \"tables\": [{\"name\": \"emb\", \"dim\": %u, \"init\": {\"type\": \"uniform\"},"            \
    "               \"optimizer\": {\"lr_decay\": 0.01}},"                                         \
    "              {\"name\": \"row\", \"dim\": 3, \"optimizer\": {\"rowwise\": true}}]}"

static char dir[64];
static void setup(void) { tu_tmpdir(dir, "ckpt"); }
static void teardown(void) {
    if (geteuid() == 0) umount2(dir, MNT_DETACH); /* disk_full's tmpfs, if a test failed in it */
    tu_rmtree(dir);
}
TestSuite(checkpoint, .init = setup, .fini = teardown, .timeout = 60);

static void make_job(ps_job_config *job, const char *job_id, uint32_t servers, uint32_t dim,
                     const char *d) {
    char json[2048];
    snprintf(json, sizeof(json), JOB_FMT, job_id, servers, d, dim);
    tu_job(json, job);
}

/* Hand-made row values of key k: w[i] = k + i/8, acc[i] = k/4 + i, step = k % 7. */
static void row_of(uint64_t k, uint32_t n, float *w, float *acc, uint32_t sl) {
    for (uint32_t i = 0; i < n; i++) w[i] = (float)k + (float)i / 8;
    for (uint32_t i = 0; i < sl; i++) acc[i] = (float)k / 4 + (float)i;
}

static void make_stores(const ps_job_config *job, ps_store **st) {
    ps_error err = {0};
    for (size_t t = 0; t < job->num_tables; t++)
        cr_assert_eq(ps_store_create(&job->tables[t], job->seed, &st[t], &err), PS_OK, "%s",
                     err.msg);
}
static void free_stores(const ps_job_config *job, ps_store **st) {
    for (size_t t = 0; t < job->num_tables; t++) ps_store_destroy(st[t]), st[t] = NULL;
}

/* Puts the hand-made rows of keys [0, n) that shard of count owns (delta added to w). */
static void fill(const ps_job_config *job, ps_store **st, uint64_t n, uint32_t shard,
                 uint32_t count, float delta) {
    for (uint32_t t = 0; t < job->num_tables; t++) {
        const ps_table_spec *sp = &job->tables[t];
        float w[8], acc[8];
        for (uint64_t k = 0; k < n; k++) {
            if (ps_shard_of(t, k, count) != shard) continue;
            row_of(k, sp->dim, w, acc, ps_table_state_len(sp));
            w[0] += delta;
            cr_assert_eq(ps_store_put(st[t], k, w, acc, (uint32_t)(k % 7), NULL), PS_OK);
        }
    }
}

/* One shard of one (dim 4) of job job_id in dir, with rows keys 0..n-1 in both tables (fill). */
static void one_shard_with_rows(ps_job_config *job, const char *job_id, ps_store **st,
                                uint64_t n) {
    make_job(job, job_id, 1, 4, dir);
    make_stores(job, st);
    fill(job, st, n, 0, 1, 0);
}

/* Every key of [0, n) is in st iff shard of count owns it, with the hand-made values. */
static void expect_rows(const ps_job_config *job, ps_store **st, uint64_t n, uint32_t shard,
                        uint32_t count, float delta) {
    for (uint32_t t = 0; t < job->num_tables; t++) {
        const ps_table_spec *sp = &job->tables[t];
        const uint32_t sl = ps_table_state_len(sp);
        size_t owned = 0;
        for (uint64_t k = 0; k < n; k++) {
            float w[8] = {0}, acc[8] = {0}, gw[8], gacc[8];
            uint32_t step = 99;
            bool have = ps_store_get_row(st[t], k, gw, gacc, &step);
            if (ps_shard_of(t, k, count) != shard) {
                cr_assert(!have, "table %u key %llu on shard %u of %u: not its owner", t,
                          (unsigned long long)k, shard, count);
                continue;
            }
            owned++;
            cr_assert(have, "table %u key %llu missing on shard %u of %u", t,
                      (unsigned long long)k, shard, count);
            row_of(k, sp->dim, w, acc, sl);
            w[0] += delta;
            cr_assert_eq(memcmp(w, gw, 4 * sp->dim), 0, "table %u key %llu weights", t,
                         (unsigned long long)k);
            cr_assert_eq(memcmp(acc, gacc, 4 * sl), 0, "table %u key %llu accumulators", t,
                         (unsigned long long)k);
            /* steps are kept only where the store counts them (lr_decay: table emb) */
            cr_assert_eq(step, t == 0 ? (uint32_t)(k % 7) : 0u, "table %u key %llu step", t,
                         (unsigned long long)k);
        }
        cr_assert_eq(ps_store_rows(st[t]), owned, "table %u: %zu rows, %zu owned", t,
                     ps_store_rows(st[t]), owned);
    }
}

static void write_gen(const ps_job_config *job, ps_store **st, uint32_t shard, uint32_t count,
                      uint64_t gen) {
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(ps_checkpoint_write(job, shard, count, st, NULL, dir, gen, &info, &err), PS_OK, "%s",
                 err.msg);
    cr_assert_eq(info.generation, gen);
}

/* Generation gen of shard of count, written from fresh stores holding fill's rows. */
static void write_shard(const ps_job_config *job, uint64_t n, uint32_t shard, uint32_t count,
                        float delta, uint64_t gen) {
    ps_store *st[PS_MAX_TABLES];
    make_stores(job, st);
    fill(job, st, n, shard, count, delta);
    write_gen(job, st, shard, count, gen);
    free_stores(job, st);
}

static char *path_of(uint32_t shard, uint32_t count, uint64_t gen) {
    static char p[256];
    snprintf(p, sizeof(p), "%s/shard-%u-of-%u.gen-%llu.ckpt", dir, shard, count,
             (unsigned long long)gen);
    return p;
}

static uint8_t *slurp_bin(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*n ? *n : 1);
    cr_assert_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit_bin(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A restore of shard of count from dir into fresh stores; the log goes to *log_text. */
static ps_status restore(const ps_job_config *job, ps_store **st, uint32_t shard, uint32_t count,
                         ps_ckpt_info *info, ps_error *err, char *log_text, size_t cap) {
    FILE *lf = tmpfile();
    cr_assert_not_null(lf);
    ps_logger log = {.out = lf, .level = PS_LOG_DEBUG};
    make_stores(job, st);
    ps_status s = ps_checkpoint_restore(job, shard, count, st, dir, &log, NULL, info, err);
    rewind(lf);
    size_t got = fread(log_text, 1, cap - 1, lf);
    log_text[got] = '\0';
    fclose(lf);
    return s;
}

/* CRC-32C bit by bit from its definition (reflected 0x82F63B78): not the code under test. */
static uint32_t crc32c_ref(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
}

/* The layout by hand (README "Checkpoints", format version 2): offsets, the header's CRC32C and
 * the first block's, computed here bit by bit. */
Test(checkpoint, layout_by_hand) {
    ps_job_config job;
    ps_store *st[2];
    one_shard_with_rows(&job, "layout", st, 3); /* keys 0, 1, 2 in both tables */
    write_gen(&job, st, 0, 1, 5);
    size_t n;
    uint8_t *b = slurp_bin(path_of(0, 1, 5), &n);
    cr_assert_eq(memcmp(b, "PSCKPT\0\0", 8), 0, "magic");
    uint32_t u32;
    uint64_t u64;
    memcpy(&u32, b + 8, 4); cr_assert_eq(u32, 2u, "version");
    cr_assert_str_eq((char *)b + 12, "layout");
    memcpy(&u64, b + 76, 8); cr_assert_eq(u64, 5u, "generation");
    memcpy(&u32, b + 92, 4); cr_assert_eq(u32, 0u, "shard");
    memcpy(&u32, b + 96, 4); cr_assert_eq(u32, 1u, "shard count");
    memcpy(&u32, b + 100, 4); cr_assert_eq(u32, 2u, "tables");
    const size_t t0 = 104, trec = 64 + 16 + 40 + 8 + 4 + 8;
    cr_assert_str_eq((char *)b + t0, "emb");
    memcpy(&u32, b + t0 + 64, 4); cr_assert_eq(u32, 4u, "emb dim");
    memcpy(&u32, b + t0 + 68, 4); cr_assert_eq(u32, 4u, "emb accumulators");
    memcpy(&u32, b + t0 + trec + 68, 4); cr_assert_eq(u32, 1u, "row: rowwise, 1 accumulator");
    memcpy(&u64, b + t0 + 120, 8); cr_assert_eq(u64, 3u, "emb rows");
    memcpy(&u32, b + t0 + 128, 4); cr_assert_eq(u32, 0u, "emb stamps: none kept");
    memcpy(&u64, b + t0 + 132, 8); cr_assert_eq(u64, 0u, "emb pending keys");
    const size_t js = t0 + 2 * trec; /* the job state: async, no ranks written (state NULL) */
    memcpy(&u32, b + js, 4); cr_assert_eq(u32, (uint32_t)PS_ASYNC, "consistency");
    memcpy(&u32, b + js + 4, 4); cr_assert_eq(u32, 0u, "workers");
    const size_t hend = js + 16;
    memcpy(&u32, b + hend, 4);
    cr_assert_eq(u32, crc32c_ref(b, hend), "header crc32c");
    /* block 0: table 0, 3 rows of 8 + 16 + 16 + 4 bytes, then its crc32 */
    const uint8_t *blk = b + hend + 4;
    memcpy(&u32, blk, 4); cr_assert_eq(u32, 0u, "block table");
    memcpy(&u32, blk + 4, 4); cr_assert_eq(u32, 3u, "block rows");
    const size_t plen = 8 + 3 * 44;
    memcpy(&u32, blk + plen, 4);
    cr_assert_eq(u32, crc32c_ref(blk, plen), "block crc32c");
    /* rows in creation order: key 0's weights [0, .125, .25, .375], step 0; key 2's step 2 */
    float w[4];
    memcpy(&u64, blk + 8, 8), memcpy(w, blk + 16, 16);
    cr_assert_eq(u64, 0u);
    cr_assert(w[1] == 0.125f && w[3] == 0.375f);
    memcpy(&u32, blk + 8 + 2 * 44 + 40, 4); cr_assert_eq(u32, 2u, "key 2's step");
    /* then table 1's block (3 rows of 8 + 12 + 4 + 4), then the end block {ffffffff, 0, crc} */
    const uint8_t *end = blk + plen + 4 + 8 + 3 * 28 + 4;
    memcpy(&u32, end, 4); cr_assert_eq(u32, 0xffffffffu, "end block");
    cr_assert_eq((size_t)(end + 12 - b), n, "file ends after the end block");
    free(b);
    free_stores(&job, st);
}

/* Restore of shard 0 of 1 gives back every row exactly, steps included. */
Test(checkpoint, round_trip_exact) {
    ps_job_config job;
    ps_store *st[2];
    one_shard_with_rows(&job, "rt", st, 10000);
    write_gen(&job, st, 0, 1, 1);
    free_stores(&job, st);
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(&job, st, 0, 1, &info, &err, log, sizeof(log)), PS_OK, "%s", err.msg);
    cr_assert_eq(info.rows, 20000u);
    cr_assert_eq(info.from_shards, 1u);
    expect_rows(&job, st, 10000, 0, 1, 0);
    free_stores(&job, st);
}

/* Three generations written: the two newest are kept. */
Test(checkpoint, keeps_two_generations) {
    ps_job_config job;
    ps_store *st[2];
    one_shard_with_rows(&job, "gens", st, 10);
    for (uint64_t g = 1; g <= 3; g++) write_gen(&job, st, 0, 1, g);
    cr_assert_neq(access(path_of(0, 1, 1), F_OK), 0, "generation 1 should be gone");
    cr_assert_eq(access(path_of(0, 1, 2), F_OK), 0, "generation 2 kept");
    cr_assert_eq(access(path_of(0, 1, 3), F_OK), 0, "generation 3 kept");
    uint64_t last;
    cr_assert_eq(ps_checkpoint_last_generation(dir, &last, NULL), PS_OK);
    cr_assert_eq(last, 3u);
    free_stores(&job, st);
}

/* A writer killed mid-file leaves its temporary file: the next write of that shard removes it
 * (another shard's stays). */
Test(checkpoint, stale_temporary_files_removed) {
    ps_job_config job;
    make_job(&job, "stale", 1, 4, dir);
    char mine[256], other[256];
    snprintf(mine, sizeof(mine), "%s/.shard-0-of-1.gen-7.tmp", dir);
    snprintf(other, sizeof(other), "%s/.shard-1-of-2.gen-7.tmp", dir);
    tu_write_file(mine, "torn", 0644);
    tu_write_file(other, "torn", 0644);
    ps_store *st[2];
    make_stores(&job, st);
    write_gen(&job, st, 0, 1, 8);
    free_stores(&job, st);
    cr_assert_neq(access(mine, F_OK), 0, "stale temporary file left");
    cr_assert_eq(access(other, F_OK), 0, "another shard's file removed");
}

/* Generation 1 holds values A, generation 2 values B (w[0] + 1); damage generation 2. */
static void two_gens(ps_job_config *job) {
    make_job(job, "dmg", 1, 4, dir);
    ps_store *st[2];
    make_stores(job, st);
    fill(job, st, 5000, 0, 1, 0);
    write_gen(job, st, 0, 1, 1);
    fill(job, st, 5000, 0, 1, 1);
    write_gen(job, st, 0, 1, 2);
    free_stores(job, st);
}

/* two_gens' generation 2 was spoiled: restore passes over it to generation 1, whose rows come
 * back exactly; what it logged is left in log. */
static void restores_generation_1(const ps_job_config *job, char *log, size_t cap) {
    ps_store *st[2];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(job, st, 0, 1, &info, &err, log, cap), PS_OK, "%s", err.msg);
    cr_assert_eq(info.generation, 1u);
    expect_rows(job, st, 5000, 0, 1, 0);
    free_stores(job, st);
}

Test(checkpoint, torn_file_uses_previous_generation) {
    ps_job_config job;
    two_gens(&job);
    size_t n;
    uint8_t *b = slurp_bin(path_of(0, 1, 2), &n);
    spit_bin(path_of(0, 1, 2), b, n / 2); /* a crash half way (as if rename came early) */
    free(b);
    char log[4096];
    restores_generation_1(&job, log, sizeof(log));
    cr_assert_not_null(strstr(log, "shard-0-of-1.gen-2.ckpt"), "log: %s", log);
    cr_assert_not_null(strstr(log, "torn"), "log: %s", log);
}

Test(checkpoint, corrupted_block_named_and_previous_generation_used) {
    ps_job_config job;
    two_gens(&job);
    size_t n;
    uint8_t *b = slurp_bin(path_of(0, 1, 2), &n);
    /* block 0 starts after the header (104 + 2 * 140 + 16 + 4 bytes); flip a bit in block 1's
     * rows: blocks of table 0 hold 4096 rows of 44 bytes (+ 8 + 4) */
    const size_t blk1 = 404 + 8 + 4096 * 44 + 4;
    b[blk1 + 8 + 100] ^= 0x10;
    spit_bin(path_of(0, 1, 2), b, n);
    free(b);
    char log[4096];
    restores_generation_1(&job, log, sizeof(log));
    cr_assert_not_null(strstr(log, "shard-0-of-1.gen-2.ckpt: block 1: crc32c mismatch"),
                       "log: %s", log);
}

Test(checkpoint, every_generation_bad_is_an_error) {
    ps_job_config job;
    two_gens(&job);
    for (uint64_t g = 1; g <= 2; g++) {
        size_t n;
        uint8_t *b = slurp_bin(path_of(0, 1, g), &n);
        b[20] ^= 1; /* inside job_id: the header's crc32c */
        spit_bin(path_of(0, 1, g), b, n);
        free(b);
    }
    ps_store *st[2];
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(&job, st, 0, 1, &info, &err, log, sizeof(log)), PS_DATA);
    cr_assert_not_null(strstr(err.msg, "no good checkpoint of shard 0 of 1"), "%s", err.msg);
    cr_assert_not_null(strstr(log, "header: crc32c mismatch"), "log: %s", log);
    free_stores(&job, st);
}

Test(checkpoint, empty_dir_is_not_found) {
    ps_job_config job;
    make_job(&job, "none", 1, 4, dir);
    ps_store *st[2];
    char log[512];
    ps_ckpt_info info;
    cr_assert_eq(restore(&job, st, 0, 1, &info, NULL, log, sizeof(log)), PS_NOT_FOUND);
    cr_assert_eq(ps_store_rows(st[0]), 0u);
    free_stores(&job, st);
}

/* 2 shards -> 3 -> 1: every row on its new owner (ps_shard_of), none lost, none doubled. */
Test(checkpoint, reshard_2_to_3_to_1) {
    const uint64_t n = 20000;
    ps_job_config job2, job3, job1;
    make_job(&job2, "re", 2, 4, dir);
    make_job(&job3, "re", 3, 4, dir);
    make_job(&job1, "re", 1, 4, dir);
    ps_store *st[3][2];
    for (uint32_t s = 0; s < 2; s++) {
        make_stores(&job2, st[s]);
        fill(&job2, st[s], n, s, 2, 0);
        write_gen(&job2, st[s], s, 2, 1);
        free_stores(&job2, st[s]);
    }
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    uint64_t total = 0;
    for (uint32_t s = 0; s < 3; s++) {
        cr_assert_eq(restore(&job3, st[s], s, 3, &info, &err, log, sizeof(log)), PS_OK, "%s",
                     err.msg);
        cr_assert_eq(info.from_shards, 2u);
        expect_rows(&job3, st[s], n, s, 3, 0);
        total += info.rows;
    }
    cr_assert_eq(total, 2 * n, "rows kept by the 3 shards");
    for (uint32_t s = 0; s < 3; s++) {
        write_gen(&job3, st[s], s, 3, 2); /* the newest set now: 3 shards */
        free_stores(&job3, st[s]);
    }
    cr_assert_eq(restore(&job1, st[0], 0, 1, &info, &err, log, sizeof(log)), PS_OK, "%s",
                 err.msg);
    cr_assert_eq(info.from_shards, 3u);
    cr_assert_eq(info.generation, 2u);
    expect_rows(&job1, st[0], n, 0, 1, 0);
    free_stores(&job1, st[0]);
}

/* A newer set missing a shard is passed over for the older complete one. */
Test(checkpoint, incomplete_newer_set_is_passed_over) {
    const uint64_t n = 3000;
    ps_job_config job2, job3;
    make_job(&job2, "inc", 2, 4, dir);
    make_job(&job3, "inc", 3, 4, dir);
    ps_store *st[2];
    for (uint32_t s = 0; s < 2; s++) write_shard(&job2, n, s, 2, 0, 1);
    write_shard(&job3, n, 0, 3, 5, 2); /* only shard 0 of 3 wrote before the crash */
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(&job3, st, 1, 3, &info, &err, log, sizeof(log)), PS_OK, "%s", err.msg);
    cr_assert_eq(info.from_shards, 2u);
    expect_rows(&job3, st, n, 1, 3, 0);
    cr_assert_not_null(strstr(log, "checkpoints of 3 shards: shard 1 has no good file"), "%s", log);
    free_stores(&job3, st);
}

/* The same shard count: a shard's own file is all it reads. Shard 1 restores with shard 0's file
 * missing, and a newer generation of shard 0 does not hold shard 1 back at an older one. */
Test(checkpoint, own_file_suffices_on_the_same_shard_count) {
    const uint64_t n = 3000;
    ps_job_config job;
    make_job(&job, "own", 2, 4, dir);
    ps_store *st[2];
    write_shard(&job, n, 1, 2, 0, 3);
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(&job, st, 1, 2, &info, &err, log, sizeof(log)), PS_OK, "%s", err.msg);
    cr_assert_eq(info.from_shards, 2u);
    cr_assert_eq(info.generation, 3u);
    cr_assert_eq(info.rows, ps_store_rows(st[0]) + ps_store_rows(st[1]));
    expect_rows(&job, st, n, 1, 2, 0);
    free_stores(&job, st);
    /* shard 0 has no file of its own: an error naming it, its stores untouched */
    cr_assert_eq(restore(&job, st, 0, 2, &info, &err, log, sizeof(log)), PS_DATA);
    cr_assert_not_null(strstr(err.msg, "no good checkpoint of shard 0 of 2"), "%s", err.msg);
    cr_assert_not_null(strstr(log, "checkpoints of 2 shards: shard 0 has no good file"), "%s", log);
    cr_assert_eq(ps_store_rows(st[0]) + ps_store_rows(st[1]), 0u);
    free_stores(&job, st);
    /* shard 0 writes generations 4 and 5 (other rows): shard 1 still restores its own, 3 */
    write_shard(&job, n, 0, 2, 7, 4);
    write_shard(&job, n, 0, 2, 7, 5);
    cr_assert_eq(restore(&job, st, 1, 2, &info, &err, log, sizeof(log)), PS_OK, "%s", err.msg);
    cr_assert_eq(info.generation, 3u);
    expect_rows(&job, st, n, 1, 2, 0);
    free_stores(&job, st);
}

Test(checkpoint, other_job_or_tables_refused) {
    ps_job_config job, other_id, other_dim;
    make_job(&job, "mine", 1, 4, dir);
    make_job(&other_id, "theirs", 1, 4, dir);
    make_job(&other_dim, "mine", 1, 8, dir);
    ps_store *st[2];
    make_stores(&job, st);
    fill(&job, st, 100, 0, 1, 0);
    write_gen(&job, st, 0, 1, 1);
    free_stores(&job, st);
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(&other_id, st, 0, 1, &info, &err, log, sizeof(log)), PS_MISMATCH);
    cr_assert_not_null(strstr(err.msg, "shard-0-of-1.gen-1.ckpt: written by job_id \"mine\", "
                                       "this job is \"theirs\""), "%s", err.msg);
    cr_assert_eq(ps_store_rows(st[0]), 0u);
    free_stores(&other_id, st);
    cr_assert_eq(restore(&other_dim, st, 0, 1, &info, &err, log, sizeof(log)), PS_MISMATCH);
    cr_assert_not_null(strstr(err.msg, "table 0 is \"emb\" dim 4 (accumulators 4), the job's is "
                                       "\"emb\" dim 8 (accumulators 8)"), "%s", err.msg);
    free_stores(&other_dim, st);
}

/* A file renamed or copied under another shard's name: its header says whose it is, and the
 * restore refuses it rather than give shard 1 shard 0's job state and none of its rows. */
Test(checkpoint, a_file_under_another_shard_s_name_is_refused) {
    ps_job_config job;
    make_job(&job, "mine", 2, 4, dir);
    write_shard(&job, 100, 0, 2, 0, 1);
    char from[256];
    snprintf(from, sizeof(from), "%s", path_of(0, 2, 1));
    cr_assert_eq(rename(from, path_of(1, 2, 1)), 0);
    ps_store *st[2];
    make_stores(&job, st);
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(&job, st, 1, 2, &info, &err, log, sizeof(log)), PS_MISMATCH);
    cr_assert_not_null(strstr(err.msg, "shard-1-of-2.gen-1.ckpt: its header says shard 0 of 2, "
                                       "generation 1, not what its name says"), "%s", err.msg);
    cr_assert_eq(ps_store_rows(st[0]), 0u);
    free_stores(&job, st);
}

/* Disk full (a 256 KiB tmpfs): the write fails with the reason, no temporary file is left, and
 * the generation before is intact. */
Test(checkpoint, disk_full_keeps_previous) {
    if (geteuid() != 0) cr_skip_test("disk full: needs root to mount a small tmpfs");
    if (mount("tmpfs", dir, "tmpfs", 0, "size=256k") != 0)
        cr_skip_test("disk full: mount tmpfs: %s", strerror(errno));
    ps_job_config job;
    ps_store *st[2];
    one_shard_with_rows(&job, "full", st, 1000); /* 1000 x (44 + 28) bytes: fits */
    write_gen(&job, st, 0, 1, 1);
    fill(&job, st, 10000, 0, 1, 0); /* 720 KB: does not */
    ps_error err = {0};
    ps_status s = ps_checkpoint_write(&job, 0, 1, st, NULL, dir, 2, NULL, &err);
    free_stores(&job, st);
    cr_assert_eq(s, PS_IO);
    cr_assert_not_null(strstr(err.msg, strerror(ENOSPC)), "%s", err.msg);
    cr_assert_neq(access(path_of(0, 1, 2), F_OK), 0, "no generation 2");
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s/.shard-0-of-1.gen-2.tmp", dir);
    cr_assert_neq(access(tmp, F_OK), 0, "temporary file left behind");
    char log[4096];
    ps_ckpt_info info;
    cr_assert_eq(restore(&job, st, 0, 1, &info, &err, log, sizeof(log)), PS_OK, "%s", err.msg);
    expect_rows(&job, st, 1000, 0, 1, 0);
    free_stores(&job, st);
    umount(dir);
}

/* --- through real servers ------------------------------------------------------------------- */

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (bounded) for the server's done + failed checkpoints to reach want. */
static void wait_checkpoints(ps_server *srv, uint64_t want) {
    for (int i = 0; i < 1000; i++) {
        uint64_t failed, done = ps_server_checkpoints(srv, &failed);
        if (done + failed >= want) return;
        sleep_ms(10);
    }
    cr_assert_fail("checkpoint %llu never finished", (unsigned long long)want);
}

/* Pushes gradients of 500 keys (key k pushed 1 + k % 3 times) to both tables. */
static void push_some(const ps_job_config *job, ps_client *c, uint64_t n) {
    ps_error err = {0};
    uint64_t keys[500];
    float g[500 * 4];
    for (int round = 0; round < 3; round++) {
        size_t m = 0;
        for (uint64_t k = 0; k < n; k++)
            if (k % 3 >= (uint64_t)round) keys[m++] = k;
        for (uint32_t t = 0; t < job->num_tables; t++) {
            for (size_t i = 0; i < m * job->tables[t].dim; i++) g[i] = 0.01f * (float)(i % 17) - 0.05f;
            cr_assert_eq(ps_client_push(c, t, keys, m, g, &err), PS_OK, "%s", err.msg);
        }
    }
}

/* Every row of b equals a's, bit for bit (weights, accumulators, steps); as many rows. */
static void same_stores(const ps_job_config *job, ps_server *a, ps_server *b) {
    for (uint32_t t = 0; t < job->num_tables; t++) {
        ps_store *x = ps_server_store(a, t), *y = ps_server_store(b, t);
        cr_assert_eq(ps_store_rows(x), ps_store_rows(y), "table %u rows", t);
        uint64_t *keys;
        size_t n;
        cr_assert_eq(ps_store_sorted_keys(x, &keys, &n, NULL), PS_OK);
        for (size_t i = 0; i < n; i++) {
            float w1[8], a1[8], w2[8], a2[8];
            uint32_t s1, s2;
            cr_assert(ps_store_get_row(x, keys[i], w1, a1, &s1));
            cr_assert(ps_store_get_row(y, keys[i], w2, a2, &s2), "key %llu lost",
                      (unsigned long long)keys[i]);
            cr_assert_eq(memcmp(w1, w2, 4 * job->tables[t].dim), 0);
            cr_assert_eq(memcmp(a1, a2, 4 * ps_table_state_len(&job->tables[t])), 0);
            cr_assert_eq(s1, s2);
            /* hand count: key k was pushed 1 + k % 3 times (steps kept with lr_decay: emb) */
            cr_assert_eq(s2, t == 0 ? 1 + (uint32_t)(keys[i] % 3) : 0u);
        }
        free(keys);
    }
}

/* Pushes through a client, a checkpoint on request (the fork()ed child), a new server on the
 * same dir: every row of both tables back bit for bit, steps included. */
Test(checkpoint, round_trip_through_real_server) {
    ps_job_config job;
    make_job(&job, "real", 1, 4, dir);
    test_server *a = tu_server_start(&job, 0);
    tu_job_use(&job, &a, 1);
    ps_client *c = tu_client(&job, 0);
    push_some(&job, c, 500);
    ps_server_checkpoint(tu_server(a));
    wait_checkpoints(tu_server(a), 1);
    uint64_t failed;
    cr_assert_eq(ps_server_checkpoints(tu_server(a), &failed), 1u);
    cr_assert_eq(failed, 0u);
    cr_assert_eq(access(path_of(0, 1, 1), F_OK), 0, "generation 1");
    ps_client_destroy(c);
    tu_server_stop(a);
    cr_assert_eq(ps_store_rows(ps_server_store(tu_server(a), 0)), 500u);
    test_server *b = tu_server_start(&job, 0);
    tu_server_stop(b);
    same_stores(&job, tu_server(a), tu_server(b));
    tu_server_free(a);
    tu_server_free(b);
}

/* server.checkpoint_every_s: generations come on their own (waited for, not timed). */
Test(checkpoint, every_s_writes_on_its_own) {
    ps_job_config job;
    make_job(&job, "every", 1, 4, dir);
    job.checkpoint_every_s = 1;
    test_server *a = tu_server_start(&job, 0);
    tu_job_use(&job, &a, 1);
    ps_client *c = tu_client(&job, 0);
    push_some(&job, c, 100);
    wait_checkpoints(tu_server(a), 2);
    uint64_t failed;
    cr_assert_geq(ps_server_checkpoints(tu_server(a), &failed), 2u);
    cr_assert_eq(failed, 0u);
    ps_client_destroy(c);
    tu_server_free(a);
    uint64_t last;
    cr_assert_eq(ps_checkpoint_last_generation(dir, &last, NULL), PS_OK);
    cr_assert_geq(last, 2u);
}

/* Disk full while a server checkpoints: the child fails, the server counts it and keeps serving,
 * the previous generation stays. */
Test(checkpoint, disk_full_server_keeps_serving) {
    if (geteuid() != 0) cr_skip_test("disk full: needs root to mount a small tmpfs");
    if (mount("tmpfs", dir, "tmpfs", 0, "size=256k") != 0)
        cr_skip_test("disk full: mount tmpfs: %s", strerror(errno));
    ps_job_config job;
    make_job(&job, "fullsrv", 1, 4, dir);
    test_server *a = tu_server_start(&job, 0);
    tu_job_use(&job, &a, 1);
    ps_client *c = tu_client(&job, 0);
    push_some(&job, c, 500); /* 500 x 72 bytes: fits */
    ps_server_checkpoint(tu_server(a));
    wait_checkpoints(tu_server(a), 1);
    uint64_t keys[500];
    float g[500 * 4] = {0};
    ps_error err = {0};
    for (uint64_t base = 1000; base < 8000; base += 500) { /* 7000 more rows: ~ 500 KB */
        for (int i = 0; i < 500; i++) keys[i] = base + (uint64_t)i;
        cr_assert_eq(ps_client_push(c, 0, keys, 500, g, &err), PS_OK, "%s", err.msg);
    }
    ps_server_checkpoint(tu_server(a));
    wait_checkpoints(tu_server(a), 2);
    uint64_t failed;
    cr_assert_eq(ps_server_checkpoints(tu_server(a), &failed), 1u);
    cr_assert_eq(failed, 1u, "the second checkpoint should fail on a full disk");
    float w[4];
    cr_assert_eq(ps_client_pull(c, 0, keys, 1, w, &err), PS_OK, "still serving: %s", err.msg);
    ps_client_destroy(c);
    tu_server_stop(a);
    cr_assert_eq(access(path_of(0, 1, 1), F_OK), 0, "generation 1 survives");
    test_server *b = tu_server_start(&job, 0); /* restores generation 1: the first 500 rows */
    tu_server_stop(b);
    cr_assert_eq(ps_store_rows(ps_server_store(tu_server(b), 0)), 500u);
    tu_server_free(a);
    tu_server_free(b);
    umount(dir);
}

static void wait_for(const char *file, const char *needle) {
    for (int t = 0; t < 10000; t += 20) {
        if (strstr(tu_slurp(file), needle)) return;
        sleep_ms(20);
    }
    cr_assert_fail("\"%s\" never appeared in %s: %s", needle, file, tu_slurp(file));
}

/* A ps-server process: SIGUSR1 writes a generation while it serves, SIGTERM the last one before
 * it exits 0; started again it restores them and says so. */
Test(checkpoint, ps_server_sigusr1_sigterm_and_restart) {
    char jobf[128], out[128], errf[128], json[2048];
    snprintf(jobf, sizeof(jobf), "%s/job.json", dir);
    snprintf(out, sizeof(out), "%s/out", dir), snprintf(errf, sizeof(errf), "%s/err", dir);
    char ck[128];
    snprintf(ck, sizeof(ck), "%s/ck", dir);
    snprintf(json, sizeof(json), JOB_FMT, "proc", 1u, ck, 4u);
    tu_write_file(jobf, json, 0644);
    char *argv[] = {PS_BINARY_DIR "/ps-server", "--config", jobf, "--shard", "0",
                    "--listen", "127.0.0.1:0", NULL};
    int pid = tu_spawn(argv, out, errf);
    wait_for(out, "listening on 127.0.0.1:");
    int port = 0;
    sscanf(strstr(tu_slurp(out), "listening on 127.0.0.1:"), "listening on 127.0.0.1:%d", &port);
    ps_job_config job;
    tu_job(json, &job);
    snprintf(job.servers[0], sizeof(job.servers[0]), "127.0.0.1:%d", port);
    ps_client *c = tu_client(&job, 0);
    push_some(&job, c, 300);
    kill(pid, SIGUSR1);
    wait_for(errf, "checkpoint generation 1 written");
    push_some(&job, c, 400);
    ps_client_destroy(c);
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 20000), 0, "%s", tu_slurp(errf));
    cr_assert_not_null(strstr(tu_slurp(errf), "checkpoint generation 2 written"), "%s",
                       tu_slurp(errf));
    pid = tu_spawn(argv, out, errf);
    wait_for(errf, "restored 800 rows from"); /* 400 keys in each of the 2 tables */
    cr_assert_not_null(strstr(tu_slurp(errf), "(generation 2 of 1 shards"), "%s", tu_slurp(errf));
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 20000), 0, "%s", tu_slurp(errf));
}

/* --- format version 1, still read ------------------------------------------------------------ */

/* A version 1 file as the previous build wrote it, by hand: header (zlib crc32), one block per
 * table of n rows {key, w, acc, step}, the end block. */
static void write_v1_by_hand(const ps_job_config *job, uint64_t n, uint64_t gen) {
    uint8_t *b = calloc(1, 1 << 20), *p = b;
    memcpy(p, "PSCKPT\0\0", 8), p += 8;
    uint32_t u32 = 1;
    memcpy(p, &u32, 4), p += 4;
    snprintf((char *)p, 64, "%s", job->job_id), p += 64;
    memcpy(p, &gen, 8), p += 8 + 8; /* time: 0 */
    u32 = 0, memcpy(p, &u32, 4), p += 4;
    u32 = 1, memcpy(p, &u32, 4), p += 4;
    u32 = (uint32_t)job->num_tables, memcpy(p, &u32, 4), p += 4;
    for (uint32_t t = 0; t < job->num_tables; t++) {
        const ps_table_spec *sp = &job->tables[t];
        snprintf((char *)p, 64, "%s", sp->name), p += 64;
        uint32_t f[4] = {sp->dim, ps_table_state_len(sp), (uint32_t)sp->opt.form, sp->opt.rowwise};
        memcpy(p, f, 16), p += 16;
        double d[5] = {sp->opt.learning_rate, sp->opt.epsilon, sp->opt.initial_accumulator_value,
                       sp->opt.lr_decay, sp->opt.weight_decay};
        memcpy(p, d, 40), p += 40;
        memcpy(p, &n, 8), p += 8;
    }
    u32 = (uint32_t)crc32(0, b, (uInt)(p - b));
    memcpy(p, &u32, 4), p += 4;
    for (uint32_t t = 0; t < job->num_tables; t++) {
        const ps_table_spec *sp = &job->tables[t];
        const uint32_t sl = ps_table_state_len(sp);
        uint8_t *blk = p;
        uint32_t hdr[2] = {t, (uint32_t)n};
        memcpy(p, hdr, 8), p += 8;
        for (uint64_t k = 0; k < n; k++) {
            float w[8], acc[8];
            row_of(k, sp->dim, w, acc, sl);
            uint32_t step = (uint32_t)(k % 7);
            memcpy(p, &k, 8), memcpy(p + 8, w, 4 * sp->dim), memcpy(p + 8 + 4 * sp->dim, acc, 4 * sl);
            p += 8 + 4 * (sp->dim + sl);
            memcpy(p, &step, 4), p += 4;
        }
        u32 = (uint32_t)crc32(0, blk, (uInt)(p - blk));
        memcpy(p, &u32, 4), p += 4;
    }
    uint32_t end[2] = {0xffffffffu, 0};
    memcpy(p, end, 8);
    u32 = (uint32_t)crc32(0, p, 8);
    memcpy(p + 8, &u32, 4), p += 12;
    spit_bin(path_of(0, 1, gen), b, (size_t)(p - b));
    free(b);
}

Test(checkpoint, version_1_file_restored) {
    ps_job_config job;
    make_job(&job, "old", 1, 4, dir);
    write_v1_by_hand(&job, 300, 4);
    ps_store *st[2];
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    uint64_t clock[2] = {9, 9};
    uint8_t rs[2] = {9, 9}, fin[2] = {9, 9};
    ps_ckpt_state state = {.workers = 77, .clock = clock, .rank_state = rs, .finished = fin};
    FILE *lf = tmpfile();
    ps_logger lg = {.out = lf, .level = PS_LOG_DEBUG};
    make_stores(&job, st);
    cr_assert_eq(ps_checkpoint_restore(&job, 0, 1, st, dir, &lg, &state, &info, &err), PS_OK,
                 "%s", err.msg);
    fclose(lf);
    cr_assert_eq(info.generation, 4u);
    cr_assert_eq(info.rows, 600u);
    expect_rows(&job, st, 300, 0, 1, 0);
    cr_assert_eq(state.workers, 0u, "a version 1 file holds no job state");
    free_stores(&job, st);
    /* and a bit flipped in its block: zlib's crc32 still guards it */
    write_v1_by_hand(&job, 300, 5);
    size_t n;
    uint8_t *b = slurp_bin(path_of(0, 1, 5), &n);
    b[364 + 8 + 50] ^= 4;
    spit_bin(path_of(0, 1, 5), b, n);
    free(b);
    cr_assert_eq(restore(&job, st, 0, 1, &info, &err, log, sizeof(log)), PS_OK, "%s", err.msg);
    cr_assert_eq(info.generation, 4u);
    cr_assert_not_null(strstr(log, "shard-0-of-1.gen-5.ckpt: block 0: crc32 mismatch"), "%s", log);
    free_stores(&job, st);
}

/* --- the job state ----------------------------------------------------------------------------- */

#define STATE_FMT                                                                                  \
    "{\"job_id\": \"st\", \"cluster\": {\"servers\": %u, \"workers\": 3, \"consistency\": \"%s\"}," \
    " \"server\": {\"checkpoint_dir\": \"%s\"}, \"tables\": [{\"name\": \"emb\", \"dim\": 2}]}"

static void state_job(ps_job_config *job, uint32_t servers, const char *mode) {
    char json[1024];
    snprintf(json, sizeof(json), STATE_FMT, servers, mode, dir);
    tu_job(json, job);
}

/* Writes shard of count with the given state (3 ranks) and no rows. */
static void write_state(const ps_job_config *job, uint32_t shard, uint32_t count,
                        const uint64_t clock[3], const uint8_t rs[3], const uint8_t fin[3],
                        uint64_t applied, uint64_t gen) {
    ps_store *st[1];
    make_stores(job, st);
    ps_ckpt_state s = {.workers = 3, .applied = applied, .clock = (uint64_t *)clock,
                       .rank_state = (uint8_t *)rs, .finished = (uint8_t *)fin};
    ps_error err = {0};
    cr_assert_eq(ps_checkpoint_write(job, shard, count, st, &s, dir, gen, NULL, &err), PS_OK, "%s",
                 err.msg);
    free_stores(job, st);
}

static void read_state(const ps_job_config *job, uint32_t shard, uint32_t count,
                       ps_ckpt_state *s) {
    ps_store *st[1];
    make_stores(job, st);
    ps_error err = {0};
    cr_assert_eq(ps_checkpoint_restore(job, shard, count, st, dir, NULL, s, NULL, &err), PS_OK,
                 "%s", err.msg);
    free_stores(job, st);
}

Test(checkpoint, job_state_round_trip) {
    ps_job_config job;
    state_job(&job, 1, "sync");
    write_state(&job, 0, 1, (uint64_t[]){5, 7, 4},
                (uint8_t[]){PS_RANK_LIVE, PS_RANK_FINISHED, PS_RANK_DROPPED}, (uint8_t[]){0, 1, 0},
                4, 1);
    uint64_t clock[3];
    uint8_t rs[3], fin[3];
    ps_ckpt_state s = {.clock = clock, .rank_state = rs, .finished = fin};
    read_state(&job, 0, 1, &s);
    cr_assert_eq(s.workers, 3u);
    cr_assert_eq(s.applied, 4u);
    cr_assert(clock[0] == 5 && clock[1] == 7 && clock[2] == 4);
    cr_assert(rs[0] == PS_RANK_LIVE && rs[1] == PS_RANK_FINISHED && rs[2] == PS_RANK_DROPPED);
    cr_assert(fin[0] == 0 && fin[1] == 1 && fin[2] == 0);
    /* the state of another consistency (or worker count) does not apply */
    ps_job_config ssp;
    state_job(&ssp, 1, "ssp");
    s.workers = 99;
    read_state(&ssp, 0, 1, &s);
    cr_assert_eq(s.workers, 0u);
    /* written without state: none restored */
    ps_store *st[1];
    make_stores(&job, st);
    write_gen(&job, st, 0, 1, 2);
    free_stores(&job, st);
    s.workers = 99;
    read_state(&job, 0, 1, &s);
    cr_assert_eq(s.workers, 0u);
}

/* 2 shards' states; onto 2 each gets its own, onto 1 (or 3) the least of both per rank. */
Test(checkpoint, job_state_onto_other_shard_counts) {
    ps_job_config job2, job1;
    state_job(&job2, 2, "ssp");
    state_job(&job1, 1, "ssp");
    write_state(&job2, 0, 2, (uint64_t[]){10, 20, 30},
                (uint8_t[]){PS_RANK_FINISHED, PS_RANK_FINISHED, PS_RANK_LIVE},
                (uint8_t[]){1, 1, 0}, 0, 1);
    write_state(&job2, 1, 2, (uint64_t[]){11, 19, 30},
                (uint8_t[]){PS_RANK_FINISHED, PS_RANK_DROPPED, PS_RANK_DROPPED},
                (uint8_t[]){1, 0, 0}, 0, 1);
    uint64_t clock[3];
    uint8_t rs[3], fin[3];
    ps_ckpt_state s = {.clock = clock, .rank_state = rs, .finished = fin};
    read_state(&job2, 1, 2, &s);
    cr_assert(clock[0] == 11 && clock[1] == 19 && clock[2] == 30, "shard 1's own clocks");
    cr_assert(rs[0] == PS_RANK_FINISHED && rs[1] == PS_RANK_DROPPED && rs[2] == PS_RANK_DROPPED);
    cr_assert(fin[0] == 1 && fin[1] == 0 && fin[2] == 0);
    read_state(&job1, 0, 1, &s);
    cr_assert_eq(s.workers, 3u);
    cr_assert(clock[0] == 10 && clock[1] == 19 && clock[2] == 30, "least clocks: %llu %llu %llu",
              (unsigned long long)clock[0], (unsigned long long)clock[1],
              (unsigned long long)clock[2]);
    /* finished in both stays finished; finished + dropped is dropped; dropped + live is live */
    cr_assert(rs[0] == PS_RANK_FINISHED && rs[1] == PS_RANK_DROPPED && rs[2] == PS_RANK_LIVE,
              "states %u %u %u", rs[0], rs[1], rs[2]);
    cr_assert(fin[0] == 1 && fin[1] == 0 && fin[2] == 0, "finished only if in both");
}

/* --- memory control: admission counts and the stamps' ages ----------------------------------- */

#define MEM_FMT                                                                                    \
    "{\"job_id\": \"mem\", \"server\": {\"checkpoint_dir\": \"%s\"},"                              \
    " \"tables\": [{\"name\": \"a\", \"dim\": 2, \"admit_after\": 3},"                             \
    "              {\"name\": \"e\", \"dim\": 2, \"expire_after_steps\": 4,"                        \
    "               \"expire_after_seconds\": 5}]}"

static void push_keys(ps_store *s, const uint64_t *keys, size_t n) {
    float g[16] = {0.5f, -0.25f, 0.5f, -0.25f, 0.5f, -0.25f, 0.5f, -0.25f,
                   0.5f, -0.25f, 0.5f, -0.25f, 0.5f, -0.25f, 0.5f, -0.25f};
    cr_assert_eq(ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)g, n, NULL), PS_OK);
}
static void push1(ps_store *s, uint64_t k) { push_keys(s, &k, 1); }

static bool has_row(ps_store *s, uint64_t k) { return ps_store_get_row(s, k, NULL, NULL, NULL); }

typedef struct {
    uint64_t key[8];
    uint32_t age_steps[8], age_s[8];
    size_t n;
} ages;
static bool collect_ages(void *ud, uint64_t key, const float *w, const float *acc, uint32_t step,
                         uint32_t age_steps, uint32_t age_s) {
    ages *a = ud;
    (void)w, (void)acc, (void)step;
    if (a->n < 8) a->key[a->n] = key, a->age_steps[a->n] = age_steps, a->age_s[a->n] = age_s;
    a->n++;
    return true;
}

/* The MEM_FMT job in dir and fresh stores of it. */
static void mem_job(ps_job_config *job, ps_store **st) {
    char json[1024];
    snprintf(json, sizeof(json), MEM_FMT, dir);
    tu_job(json, job);
    make_stores(job, st);
}

/* admit_after 3: a key pushed twice before the checkpoint is admitted by one more push after the
 * restore, one pushed once by two more; a fresh store (the control) needs all three. */
Test(checkpoint, admission_counts_survive_restore) {
    ps_job_config job;
    ps_store *st[2];
    mem_job(&job, st);
    push1(st[0], 100), push1(st[0], 100), push1(st[0], 200);
    push1(st[0], 7), push1(st[0], 7), push1(st[0], 7); /* admitted: a row */
    cr_assert(has_row(st[0], 7) && !has_row(st[0], 100));
    write_gen(&job, st, 0, 1, 1);
    free_stores(&job, st);

    ps_store *r[2];
    char log[4096];
    ps_error err = {0};
    ps_ckpt_info info;
    cr_assert_eq(restore(&job, r, 0, 1, &info, &err, log, sizeof(log)), PS_OK, "%s", err.msg);
    ps_store_stats stats;
    ps_store_get_stats(r[0], &stats);
    cr_assert_eq(stats.pending, 2u, "pending keys 100 and 200");
    cr_assert_eq(stats.rows, 1u);
    push1(r[0], 100);
    cr_assert(has_row(r[0], 100), "the third push admits key 100");
    push1(r[0], 200);
    cr_assert(!has_row(r[0], 200), "key 200: 2 of 3");
    push1(r[0], 200);
    cr_assert(has_row(r[0], 200), "key 200: admitted by its third push");
    push1(r[0], 7);
    ps_store_get_stats(r[0], &stats);
    cr_assert_eq(stats.pending, 0u);
    cr_assert_eq(stats.rows, 3u, "key 7 not admitted twice");
    free_stores(&job, r);

    ps_store *fresh[2]; /* control: without the counts, one push admits nothing */
    make_stores(&job, fresh);
    push1(fresh[0], 100);
    cr_assert(!has_row(fresh[0], 100));
    free_stores(&job, fresh);
}

/* expire_after_steps 4 and _seconds 5: the rows' ages come back, so a row expires as many steps
 * (and seconds of the new process's clock) after the restore as it had left before it. */
Test(checkpoint, expiry_ages_survive_restore) {
    ps_job_config job;
    ps_store *st[2];
    mem_job(&job, st);
    uint64_t now_ms = 1000000; /* the old process's loop clock: 1000 s */
    ps_store_set_clock(st[1], &now_ms);
    push1(st[1], 1);           /* step 1, at 1000 s */
    now_ms = 1003000;
    push1(st[1], 2), push1(st[1], 3); /* steps 2, 3 at 1003 s: row 1 is 2 steps, 3 s old */
    ages a = {0};
    ps_store_scan(st[1], collect_ages, &a);
    cr_assert_eq(a.n, 3u);
    cr_assert(a.key[0] == 1 && a.age_steps[0] == 2 && a.age_s[0] == 3, "row 1: %u steps %u s",
              a.age_steps[0], a.age_s[0]);
    write_gen(&job, st, 0, 1, 1);
    free_stores(&job, st);

    /* the new process: its clock at 20 s, its table step at 0 */
    uint64_t new_ms = 20000;
    ps_store *r[2];
    make_stores(&job, r);
    ps_store_set_clock(r[1], &new_ms);
    ps_error err = {0};
    cr_assert_eq(ps_checkpoint_restore(&job, 0, 1, r, dir, NULL, NULL, NULL, &err), PS_OK, "%s",
                 err.msg);
    ages b = {0};
    ps_store_scan(r[1], collect_ages, &b);
    cr_assert_eq(b.n, 3u);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(b.key[i], a.key[i]);
        cr_assert_eq(b.age_steps[i], a.age_steps[i], "key %llu steps",
                     (unsigned long long)b.key[i]);
        cr_assert_eq(b.age_s[i], a.age_s[i], "key %llu seconds", (unsigned long long)b.key[i]);
    }
    /* seconds: row 1 is 3 s old; at 21.9 s (4 s) it lives, at 22 s (5 s) it has expired */
    new_ms = 21999;
    cr_assert(has_row(r[1], 1), "row 1 at 4 s");
    new_ms = 22000;
    cr_assert(!has_row(r[1], 1), "row 1 at 5 s: expired");
    cr_assert(has_row(r[1], 3), "row 3 is 0 s old");
    free_stores(&job, r);

    /* steps: again, the clock standing still: row 1 (2 steps old) expires after 2 more pushes */
    make_stores(&job, r);
    new_ms = 20000;
    ps_store_set_clock(r[1], &new_ms);
    cr_assert_eq(ps_checkpoint_restore(&job, 0, 1, r, dir, NULL, NULL, NULL, &err), PS_OK, "%s",
                 err.msg);
    push1(r[1], 50);
    cr_assert(has_row(r[1], 1), "row 1: 3 steps old");
    push1(r[1], 51);
    cr_assert(!has_row(r[1], 1), "row 1: 4 steps old, expired");
    cr_assert(has_row(r[1], 3), "row 3: 2 steps old");
    push1(r[1], 52), push1(r[1], 53);
    cr_assert(!has_row(r[1], 3), "row 3: 4 steps old, expired");
    free_stores(&job, r);
}

/* --- server.checkpoint_every_steps ----------------------------------------------------------- */

#define STEPS_FMT                                                                                  \
    "{\"job_id\": \"steps\", \"cluster\": {\"servers\": 1, \"workers\": 2,"                        \
    " \"consistency\": \"%s\", \"connect_timeout_ms\": 5000, \"request_timeout_ms\": 5000,"        \
    " \"barrier_timeout_ms\": 2000},"                                                             \
    " \"server\": {\"checkpoint_dir\": \"%s\", \"checkpoint_every_steps\": %u},"                   \
    " \"tables\": [{\"name\": \"a\", \"dim\": 2}, {\"name\": \"b\", \"dim\": 2}]}"

/* A generation was started: its temporary file or the file itself is there. */
static bool gen_started(uint64_t gen) {
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s/.shard-0-of-1.gen-%llu.tmp", dir, (unsigned long long)gen);
    return access(tmp, F_OK) == 0 || access(path_of(0, 1, gen), F_OK) == 0;
}

/* One async step of a client: numbered `step`, a push to each table (one step, two pushes). */
static void async_step(ps_client *c, uint64_t step) {
    ps_error err = {0};
    const uint64_t keys[2] = {step, step + 1000};
    const float g[4] = {0.5f, 0.5f, -0.5f, 0.25f};
    ps_client_set_step(c, step);
    for (uint32_t t = 0; t < 2; t++)
        cr_assert_eq(ps_client_push(c, t, keys, 2, g, &err), PS_OK, "%s", err.msg);
}

/* One in-process server of a STEPS_FMT job (consistency mode, every N steps) and a client of
 * each of its two ranks. The clients borrow job: the rig outlives them. */
typedef struct {
    ps_job_config job;
    test_server *srv;
    ps_client *c0, *c1;
} steps_rig;

static void steps_rig_start(steps_rig *r, const char *mode, unsigned n) {
    char json[1024];
    snprintf(json, sizeof(json), STEPS_FMT, mode, dir, n);
    tu_job(json, &r->job);
    r->srv = tu_server_start(&r->job, 0);
    tu_job_use(&r->job, &r->srv, 1);
    r->c0 = tu_client(&r->job, 0), r->c1 = tu_client(&r->job, 1);
}

static void steps_rig_stop(steps_rig *r) {
    ps_client_destroy(r->c0);
    ps_client_destroy(r->c1);
    tu_server_free(r->srv);
}

/* async, N = 3, W = 2: a generation after 6 worker steps; a push's step starts the checkpoint
 * before its ack, so after an ack the file (or its temporary) says whether it did. */
Test(checkpoint, every_steps_async_counts_worker_steps) {
    steps_rig r;
    steps_rig_start(&r, "async", 3);
    ps_client *c0 = r.c0, *c1 = r.c1;
    test_server *a = r.srv;
    for (uint64_t s = 1; s <= 3; s++) async_step(c0, s);
    async_step(c1, 1), async_step(c1, 2);
    async_step(c1, 2); /* a retried step: not counted */
    cr_assert(!gen_started(1), "5 worker steps: no checkpoint yet");
    async_step(c1, 3);
    cr_assert(gen_started(1), "6 worker steps (N * W): a checkpoint");
    wait_checkpoints(tu_server(a), 1);
    for (uint64_t s = 4; s <= 8; s++) async_step(c0, s);
    cr_assert(!gen_started(2), "11 worker steps");
    async_step(c1, 4);
    cr_assert(gen_started(2), "12 worker steps: the second");
    wait_checkpoints(tu_server(a), 2);
    steps_rig_stop(&r);
}

/* One sync step of a client: a push to table 0 with its clock, then the step's end. */
static void sync_step(ps_client *c) {
    ps_error err = {0};
    const uint64_t key = 5;
    const float g[2] = {0.5f, 0.25f};
    cr_assert_eq(ps_client_push(c, 0, &key, 1, g, &err), PS_OK, "%s", err.msg);
    ps_op op;
    cr_assert_eq(ps_client_clock_async(c, false, &op, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_wait(c, op, &err), PS_OK, "%s", err.msg);
}

/* A pull answered at min clock: every frame before it was handled. */
static void settle(ps_client *c) {
    ps_error err = {0};
    const uint64_t key = 5;
    float w[2];
    cr_assert_eq(ps_client_pull(c, 0, &key, 1, w, &err), PS_OK, "%s", err.msg);
}

/* sync, N = 2: a generation when the barrier's minimum clock reaches 2, then 4 (not when only
 * one rank got there). */
Test(checkpoint, every_steps_sync_follows_the_minimum_clock) {
    steps_rig r;
    steps_rig_start(&r, "sync", 2);
    ps_client *c0 = r.c0, *c1 = r.c1;
    test_server *a = r.srv;
    sync_step(c0), sync_step(c1); /* both at 1 */
    sync_step(c0);                /* rank 0 at 2, the minimum still 1 */
    settle(c1);
    cr_assert(!gen_started(1), "minimum clock 1");
    sync_step(c1); /* the minimum reaches 2 */
    settle(c1);
    cr_assert(gen_started(1), "minimum clock 2");
    wait_checkpoints(tu_server(a), 1);
    sync_step(c0), sync_step(c1);
    settle(c0);
    cr_assert(!gen_started(2), "minimum clock 3");
    sync_step(c0), sync_step(c1);
    settle(c0), settle(c1);
    cr_assert(gen_started(2), "minimum clock 4");
    wait_checkpoints(tu_server(a), 2);
    steps_rig_stop(&r);
}

/* --- the job's end across a restart ---------------------------------------------------------- */

/* One ps-server of a 2-worker job (server.checkpoint_dir DIR/ck) that a test stops and starts
 * again, with a client of one rank per start. The client borrows job: the rig outlives it. */
typedef struct {
    char jobf[128], out[128], errf[128], ck[128];
    ps_job_config job;
} restart_rig;

static void rig_init(restart_rig *r, const char *job_id, const char *consistency) {
    char json[2048];
    snprintf(r->jobf, sizeof(r->jobf), "%s/job.json", dir);
    snprintf(r->out, sizeof(r->out), "%s/out", dir);
    snprintf(r->errf, sizeof(r->errf), "%s/err", dir);
    snprintf(r->ck, sizeof(r->ck), "%s/ck", dir);
    snprintf(json, sizeof(json),
             "{\"job_id\": \"%s\", \"cluster\": {\"servers\": 1, \"workers\": 2,"
             " \"consistency\": \"%s\", \"job_deadline_s\": 600, \"connect_timeout_ms\": 5000,"
             " \"request_timeout_ms\": 5000, \"barrier_timeout_ms\": 2000},"
             " \"server\": {\"checkpoint_dir\": \"%s\"},"
             " \"tables\": [{\"name\": \"a\", \"dim\": 2}]}", job_id, consistency, r->ck);
    tu_write_file(r->jobf, json, 0644);
    tu_job(json, &r->job);
}

/* Starts the server and connects *c as rank; returns the server's pid. */
static int rig_start(restart_rig *r, uint32_t rank, ps_client **c) {
    char *argv[] = {PS_BINARY_DIR "/ps-server", "--config", r->jobf, "--shard", "0",
                    "--listen", "127.0.0.1:0", NULL};
    int pid = tu_spawn(argv, r->out, r->errf);
    wait_for(r->out, "listening on 127.0.0.1:");
    int port = 0;
    sscanf(strstr(tu_slurp(r->out), "listening on 127.0.0.1:"), "listening on 127.0.0.1:%d",
           &port);
    snprintf(r->job.servers[0], sizeof(r->job.servers[0]), "127.0.0.1:%d", port);
    *c = tu_client(&r->job, rank);
    return pid;
}

/* The rank says it finished (acknowledged), and its client goes. */
static void finish_rank(ps_client *c) {
    ps_error err = {0};
    ps_op op;
    cr_assert_eq(ps_client_clock_async(c, true, &op, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_wait(c, op, &err), PS_OK, "%s", err.msg);
    ps_client_destroy(c);
}

/* A ps-server that ends with its job (the default): rank 0 finishes, the server is stopped
 * (SIGTERM: the last checkpoint) and started again; rank 1's finish then ends the job at once,
 * not at cluster.job_deadline_s (10 minutes here). */
Test(checkpoint, ps_server_ends_when_the_last_rank_finishes_after_a_restart) {
    restart_rig r;
    rig_init(&r, "end", "ssp");
    ps_client *c;
    int pid = rig_start(&r, 0, &c);
    finish_rank(c);
    kill(pid, SIGTERM);
    cr_assert_eq(tu_wait_exit(pid, 20000), 0, "%s", tu_slurp(r.errf));
    cr_assert_not_null(strstr(tu_slurp(r.errf), "checkpoint generation 1 written"), "%s",
                       tu_slurp(r.errf));
    pid = rig_start(&r, 1, &c);
    sync_step(c); /* rank 1 goes on where it was */
    finish_rank(c);
    /* no signal: the job is over, the server exits on its own (5 s grace at most) */
    cr_assert_eq(tu_wait_exit(pid, 15000), 0, "%s", tu_slurp(r.errf));
    const char *log = tu_slurp(r.errf);
    cr_assert_not_null(strstr(log, "restored job state: 1 of 2 workers finished"), "%s", log);
    cr_assert_not_null(strstr(log, "every worker finished"), "%s", log);
}

/* A worker's finish after the last checkpoint (here: there is none) survives kill -9 of its
 * server: the journal (shard-0-of-1.finished) is written before the Ack, the restarted server
 * counts the rank finished, its barrier does not wait for it, and the job ends with the other
 * rank's finish. Without the journal the server would wait for rank 0 until job_deadline_s. */
Test(checkpoint, a_finish_after_the_last_checkpoint_survives_kill_9) {
    restart_rig r;
    rig_init(&r, "fin", "sync");
    char journal[160];
    snprintf(journal, sizeof(journal), "%s/shard-0-of-1.finished", r.ck);
    ps_client *c;
    int pid = rig_start(&r, 0, &c);
    finish_rank(c);
    const char *j = tu_slurp(journal); /* acknowledged, so on disk: the crash comes right after */
    cr_assert_not_null(strstr(j, "ps-finished 1 workers=2 job_id=fin\n0\n"), "%s", j);
    kill(pid, SIGKILL);
    tu_wait_exit(pid, 20000);
    pid = rig_start(&r, 1, &c);
    sync_step(c);
    settle(c); /* answered at once: rank 0 is finished, not live at clock 0 */
    finish_rank(c);
    cr_assert_eq(tu_wait_exit(pid, 15000), 0, "%s", tu_slurp(r.errf));
    const char *log = tu_slurp(r.errf);
    cr_assert_not_null(strstr(log, "no checkpoint in"), "%s", log);
    cr_assert_not_null(strstr(log, "1 worker rank finished after the checkpoint"), "%s", log);
    cr_assert_not_null(strstr(log, "restored job state: 1 of 2 workers finished"), "%s", log);
    cr_assert_null(strstr(log, "dropped from the barrier"), "%s", log);
    cr_assert_not_null(strstr(log, "every worker finished"), "%s", log);
}

/* The journal of another job, or of another number of workers, is not this job's. */
Test(checkpoint, finished_journal_of_another_job_is_passed_over) {
    ps_job_config job;
    make_job(&job, "mine", 1, 4, dir);
    job.num_workers = 3;
    const uint8_t done[3] = {1, 0, 1};
    ps_error err = {0};
    cr_assert_eq(ps_ckpt_finished_write(&job, 0, 2, done, 3, &err), PS_OK, "%s", err.msg);
    uint8_t got[3] = {0, 1, 0};
    uint32_t added;
    ps_ckpt_finished_read(&job, dir, got, 3, NULL, &added);
    cr_assert_eq(added, 2u); /* ranks 0 and 2 (1 was set already) */
    cr_assert(got[0] == 1 && got[1] == 1 && got[2] == 1);
    ps_job_config other = job;
    snprintf(other.job_id, sizeof(other.job_id), "theirs");
    uint8_t none[3] = {0};
    ps_ckpt_finished_read(&other, dir, none, 3, NULL, &added);
    cr_assert_eq(added, 0u);
    ps_ckpt_finished_read(&job, dir, none, 4, NULL, &added); /* W differs */
    cr_assert_eq(added, 0u);
    other.job_id[0] = '\0'; /* an empty job_id is a job_id too: its own journal is read */
    const uint8_t one[3] = {0, 1, 0};
    cr_assert_eq(ps_ckpt_finished_write(&other, 1, 2, one, 3, &err), PS_OK, "%s", err.msg);
    ps_ckpt_finished_read(&other, dir, none, 3, NULL, &added);
    cr_assert(added == 1 && none[1] == 1 && none[0] == 0 && none[2] == 0);
}

/* --- a sync step half gathered when the checkpoint was taken ---------------------------------- */

#define HALF_FMT                                                                                   \
    "{\"job_id\": \"half\", \"cluster\": {\"servers\": 1, \"workers\": 2, \"consistency\": \"sync\","\
    " \"connect_timeout_ms\": 5000, \"request_timeout_ms\": 5000, \"barrier_timeout_ms\": 3000}%s,"\
    " \"tables\": [{\"name\": \"a\", \"dim\": 2, \"init\": {\"type\": \"zeros\"}}]}"

static ps_client *rank_client(const ps_job_config *job, uint32_t rank) {
    ps_client_options o = {.job = job, .rank = rank, .log = {.level = PS_LOG_ERROR}};
    ps_client *c = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_client_create(&o, &c, &err), PS_OK, "%s", err.msg);
    return c;
}

/* Step 0 of rank: gradient g on key 5, then the end of the step. */
static void step0(ps_client *c, float g) {
    const uint64_t key = 5;
    const float grad[2] = {g, g};
    ps_error err = {0};
    ps_op op;
    cr_assert_eq(ps_client_push(c, 0, &key, 1, grad, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_clock_async(c, false, &op, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_client_wait(c, op, &err), PS_OK, "%s", err.msg);
}

/* Key 5 as step 1 reads it (a pull that waits for step 0). */
static void after_step0(const ps_job_config *job, ps_client *c, float w[2]) {
    (void)job;
    const uint64_t key = 5;
    ps_error err = {0};
    ps_client_set_min_clock(c, 1);
    cr_assert_eq(ps_client_pull(c, 0, &key, 1, w, &err), PS_OK, "%s", err.msg);
}

/* Rank 0 ends step 0 (its push held, rank 1's not in yet), a checkpoint, the server stops. On a
 * new server from that checkpoint both ranks redo step 0 from its start, as a worker's retried
 * step does, whichever reconnects first: the row is what the undisturbed step gives, bit for
 * bit (before the fix rank 1's push was refused or rank 0's gradient lost). */
Test(checkpoint, a_sync_step_half_gathered_at_a_checkpoint_is_redone_whole) {
    ps_job_config plain, job;
    char json[1024], at[128];
    snprintf(json, sizeof(json), HALF_FMT, "");
    tu_job(json, &plain);
    snprintf(at, sizeof(at), ", \"server\": {\"checkpoint_dir\": \"%s\"}", dir);
    snprintf(json, sizeof(json), HALF_FMT, at);
    tu_job(json, &job);
    float want[2], got[2];
    { /* undisturbed */
        test_server *s = tu_server_start(&plain, 0);
        tu_job_use(&plain, &s, 1);
        ps_client *c0 = rank_client(&plain, 0), *c1 = rank_client(&plain, 1);
        step0(c0, 1.0f), step0(c1, 3.0f);
        after_step0(&plain, c0, want);
        ps_client_destroy(c0), ps_client_destroy(c1);
        tu_server_free(s);
    }
    cr_assert(want[0] < 0.0f, "the step moved the row: %g", (double)want[0]);
    for (int first = 0; first < 2; first++) {
        tu_rmtree(dir);
        cr_assert_eq(mkdir(dir, 0700), 0);
        test_server *a = tu_server_start(&job, 0);
        tu_job_use(&job, &a, 1);
        ps_client *c0 = rank_client(&job, 0), *c1 = rank_client(&job, 1);
        step0(c0, 1.0f);
        ps_server_checkpoint(tu_server(a));
        wait_checkpoints(tu_server(a), 1);
        ps_client_destroy(c0), ps_client_destroy(c1);
        tu_server_free(a);
        test_server *b = tu_server_start(&job, 0);
        tu_job_use(&job, &b, 1);
        ps_client *n[2];
        n[first] = rank_client(&job, (uint32_t)first);
        n[1 - first] = rank_client(&job, (uint32_t)(1 - first));
        cr_assert_eq(ps_client_clock(n[0]), 0u, "rank 0 redoes step 0");
        cr_assert_eq(ps_client_clock(n[1]), 0u, "rank 1 is at step 0");
        step0(n[0], 1.0f), step0(n[1], 3.0f);
        after_step0(&job, n[0], got);
        cr_assert_eq(memcmp(got, want, sizeof(got)), 0, "rank %d first: %g %g, undisturbed %g %g",
                     first, (double)got[0], (double)got[1], (double)want[0], (double)want[1]);
        ps_client_destroy(n[0]), ps_client_destroy(n[1]);
        tu_server_free(b);
    }
}
