/* bench_checkpoint.c - checkpoint write and restore of one server's table (server/checkpoint.h),
 * in-process on ps_store, against the disk measured in the same run:
 *   (a) dd if=/dev/zero bs=1M conv=fsync of the checkpoint's size: the disk's sequential write
 *   (b) ps_checkpoint_write of --rows rows x dim 16, full AdaGrad state (8 + 64 + 64 bytes a
 *       row): seconds and MB/s, goal >= 50% of (a)
 *   (c) ps_checkpoint_restore of that file into an empty store (crc pass, then the rows)
 *   (d) pushes/s of 4096-key batches on the table while a checkpoint is written as ps-server
 *       writes it (rows copied between batches, a thread writing), against pushes/s
 *       undisturbed for as long: goal >= 80%
 *   (f) the same over the wire, as training sees it: a ps-server process on loopback (a writer
 *       thread, the loop copying rows between frames) and this process pushing 4096-key
 *       batches through worker/client.h; pushes/s while a checkpoint asked for by SIGUSR1 is
 *       written against pushes/s undisturbed for as long just after: goal >= 80%
 *   (e) the block checksum: MB/s of CRC32C (SSE4.2 and the table fallback) and of zlib's crc32
 *       (format version 1's) over the same 64 MiB
 * Medians of --runs. The files are removed at the end. Lines to parse start "bench_checkpoint ".
 * usage: bench_checkpoint [--rows N] [--runs R] [--dir DIR] [--server PATH] [--no-net] */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "bench_client.h"
#include "checkpoint.h"
#include "config.h"
#include "crc32c.h"
#include "store.h"

#define DIM 16
#define BATCH 4096

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "bench_checkpoint: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* MB/s of three checksums over the same buffer, medians of runs (a checksum printed so the
 * compiler keeps the work, and the two CRC32C paths must agree). */
static void bench_crc(int runs) {
    const size_t n = 64u << 20;
    uint8_t *buf = xmalloc(n);
    uint64_t seed = 7;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = bench_splitmix64(&seed);
        memcpy(buf + i, &v, 8);
    }
    double hw[9], sw[9], zl[9];
    uint32_t c_hw = 0, c_sw = 0, c_zl = 0;
    const bool have_hw = ps_crc32c_hw_available();
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now_s();
        c_hw = have_hw ? ps_crc32c_hw(0, buf, n) : 0;
        hw[r] = bench_now_s() - t0;
        t0 = bench_now_s();
        c_sw = ps_crc32c_sw(0, buf, n);
        sw[r] = bench_now_s() - t0;
        t0 = bench_now_s();
        c_zl = (uint32_t)crc32(0L, buf, (uInt)n);
        zl[r] = bench_now_s() - t0;
    }
    free(buf);
    if (have_hw && c_hw != c_sw) {
        fprintf(stderr, "bench_checkpoint: crc32c paths disagree: %08x %08x\n", c_hw, c_sw);
        exit(1);
    }
    const double mb = (double)n / 1e6;
    printf("bench_checkpoint crc MB/s crc32c_sse42=%.0f crc32c_table=%.0f zlib_crc32=%.0f "
           "(64 MiB, crc32c %08x, crc32 %08x)\n", have_hw ? mb / median(hw, runs) : 0.0,
           mb / median(sw, runs), mb / median(zl, runs), c_sw, c_zl);
}

static void make_job(ps_job_config *job) {
    memset(job, 0, sizeof(*job));
    snprintf(job->job_id, sizeof(job->job_id), "bench");
    job->num_servers = 1, job->num_tables = 1;
    ps_table_spec *t = &job->tables[0];
    snprintf(t->name, sizeof(t->name), "emb");
    t->dim = DIM;
    t->init = (ps_init_spec){.kind = PS_INIT_UNIFORM, .a = -0.05, .b = 0.05};
    t->opt = (ps_adagrad_config){.form = PS_ADAGRAD_PYTORCH, .learning_rate = 0.05,
                                 .epsilon = 1e-10};
}

static ps_store *new_store(const ps_job_config *job) {
    ps_store *s;
    ps_error err = {0};
    if (ps_store_create(&job->tables[0], 1, &s, &err) != PS_OK) {
        fprintf(stderr, "bench_checkpoint: %s\n", err.msg);
        exit(1);
    }
    return s;
}

/* Pushes random batches of existing keys until the writer w has finished (w NULL: for seconds),
 * feeding w between batches: returns keys pushed per second. */
static double push_rate(ps_store *s, uint64_t rows, ps_ckpt_writer *w, double seconds,
                        uint64_t *seed, double *fill_s) {
    uint64_t *keys = xmalloc(BATCH * 8);
    float *g = xmalloc(BATCH * DIM * sizeof(float));
    bench_fill_grads(g, BATCH * DIM, 3);
    const double t0 = bench_now_s();
    uint64_t pushed = 0;
    for (;;) {
        for (int i = 0; i < BATCH; i++) keys[i] = bench_splitmix64(seed) % rows;
        ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)g, BATCH, NULL);
        pushed += BATCH;
        if (w != NULL) { /* between two frames, as ps-server's loop: copy what the writer takes */
            bool done;
            const double f0 = bench_now_s();
            const bool stop = ps_ckpt_writer_fill(w, &s, false, &done, NULL) != PS_OK ||
                              ps_ckpt_writer_finished(w);
            *fill_s += bench_now_s() - f0;
            if (stop) break;
        } else if (bench_now_s() - t0 >= seconds) {
            break;
        }
    }
    const double dt = bench_now_s() - t0;
    free(keys), free(g);
    return (double)pushed / dt;
}

/* --- (f) a ps-server on loopback ------------------------------------------------------------ */

/* Pushes random batches of the rows keys through c until path exists (path NULL: for seconds):
 * keys pushed per second, or -1 on an error (said on stderr). */
static double net_push_rate(ps_client *c, uint32_t table, uint64_t rows, const char *path,
                            double seconds, uint64_t *seed) {
    uint64_t *keys = xmalloc(BATCH * 8);
    float *g = xmalloc(BATCH * DIM * sizeof(float));
    bench_fill_grads(g, BATCH * DIM, 5);
    ps_error err = {0};
    const double t0 = bench_now_s();
    uint64_t pushed = 0;
    struct stat st;
    double rate = -1;
    for (;;) {
        for (int i = 0; i < BATCH; i++) keys[i] = bench_splitmix64(seed) % rows;
        if (ps_client_push(c, table, keys, BATCH, g, &err) != PS_OK) {
            fprintf(stderr, "bench_checkpoint: push: %s\n", err.msg);
            goto out;
        }
        pushed += BATCH;
        if (path != NULL ? stat(path, &st) == 0 : bench_now_s() - t0 >= seconds) break;
        if (bench_now_s() - t0 > 600) {
            fprintf(stderr, "bench_checkpoint: no %s after 600 s\n", path);
            goto out;
        }
    }
    rate = (double)pushed / (bench_now_s() - t0);
out:
    free(keys), free(g);
    return rate;
}

/* (f): medians of runs into *free_out, *ck_out (keys/s) and *ck_s (seconds); false on failure. */
static bool bench_net(const char *server_path, const char *base, uint64_t rows, int runs,
                      double *free_out, double *ck_out, double *ck_s_out) {
    bench_server_proc sp;
    if (!bench_server_prepare(&sp, "bench_checkpoint")) return false;
    char ckdir[300];
    snprintf(ckdir, sizeof(ckdir), "%s/bench_checkpoint-net.%d", base, (int)getpid());
    FILE *f = fopen(sp.job, "w");
    bool wrote = f != NULL &&
                 fprintf(f, "{\"job_id\": \"bench\", \"cluster\": {\"servers\": [\"127.0.0.1:0\"],"
                            " \"request_timeout_ms\": 600000}, \"server\": {\"checkpoint_dir\":"
                            " \"%s\"}, \"optimizer\": {\"name\": \"adagrad\", \"learning_rate\":"
                            " 0.05}, \"tables\": [{\"name\": \"emb\", \"dim\": %d}]}\n",
                         ckdir, DIM) > 0;
    if (f != NULL && fclose(f) != 0) wrote = false;
    if (!wrote || !bench_server_start(&sp, server_path, -1)) {
        if (!wrote) perror("bench_checkpoint: job file");
        bench_server_stop(&sp);
        bench_server_remove_files(&sp);
        return false;
    }
    bool ok = false;
    ps_client *c = NULL;
    ps_error err = {0};
    static ps_job_config job;
    uint64_t *keys = xmalloc(BATCH * 8);
    float *g = xmalloc(BATCH * DIM * sizeof(float));
    bench_fill_grads(g, BATCH * DIM, 9);
    double free_rate[9], ck_rate[9], ck_s[9];
    if (bench_server_client(&sp, &job, &c, &err) != PS_OK) goto done;
    const uint32_t table = ps_client_table(c, "emb")->id;
    const double t0 = bench_now_s();
    for (uint64_t k = 0; k < rows; k += BATCH) { /* the rows, made by their first push */
        const size_t n = rows - k < BATCH ? (size_t)(rows - k) : BATCH;
        for (size_t i = 0; i < n; i++) keys[i] = k + i;
        if (ps_client_push(c, table, keys, n, g, &err) != PS_OK) goto done;
    }
    fprintf(stderr, "bench_checkpoint: %" PRIu64 " rows made on the server in %.1f s\n", rows,
            bench_now_s() - t0);
    uint64_t seed = 77;
    for (int r = 0; r < runs; r++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/shard-0-of-1.gen-%d.ckpt", ckdir, r + 1);
        const double c0 = bench_now_s();
        kill(sp.pid, SIGUSR1); /* a checkpoint, now */
        ck_rate[r] = net_push_rate(c, table, rows, path, 0, &seed);
        ck_s[r] = bench_now_s() - c0;
        free_rate[r] = net_push_rate(c, table, rows, NULL, ck_s[r], &seed);
        if (ck_rate[r] < 0 || free_rate[r] < 0) goto done;
    }
    *free_out = median(free_rate, runs), *ck_out = median(ck_rate, runs);
    *ck_s_out = median(ck_s, runs);
    ok = true;
done:
    if (!ok && err.msg[0]) fprintf(stderr, "bench_checkpoint: over the wire: %s\n", err.msg);
    free(keys), free(g);
    ps_client_destroy(c);
    if (sp.pid > 0) { /* not SIGTERM: it would write a last 1.4 GB checkpoint, unmeasured */
        kill(sp.pid, SIGKILL);
        bench_reap("bench_checkpoint", sp.pid, BENCH_REAP_MS);
        sp.pid = 0;
    }
    bench_server_stop(&sp);
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", ckdir);
    if (system(cmd) != 0) fprintf(stderr, "bench_checkpoint: could not remove %s\n", ckdir);
    bench_server_remove_files(&sp);
    return ok;
}

int main(int argc, char **argv) {
    uint64_t rows = 10000000;
    int runs = 3;
    const char *base = "/tmp";
    char server_default[512];
    bench_server_path_default(server_default, sizeof(server_default));
    const char *server = server_default;
    bool net = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) rows = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) base = argv[++i];
        else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) server = argv[++i];
        else if (strcmp(argv[i], "--no-net") == 0) net = false;
        else {
            fprintf(stderr, "usage: bench_checkpoint [--rows N] [--runs R] [--dir DIR] "
                            "[--server PATH] [--no-net]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 9 || rows == 0) return 2;
    if (getenv("BENCH_CRC_ONLY") != NULL) { /* the checksums alone, in a second */
        bench_crc(runs);
        return 0;
    }
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/bench_checkpoint.XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("bench_checkpoint: mkdtemp");
        return 1;
    }
    ps_job_config *job = xmalloc(sizeof(*job));
    make_job(job);

    /* the table: rows with accumulators that are not all equal */
    ps_store *s = new_store(job);
    float wv[DIM], acc[DIM];
    uint64_t seed = 42;
    double t0 = bench_now_s();
    for (uint64_t k = 0; k < rows; k++) {
        for (int i = 0; i < DIM; i++) {
            wv[i] = (float)(bench_splitmix64(&seed) >> 40) * 1e-8f;
            acc[i] = wv[i] * wv[i];
        }
        if (ps_store_put(s, k, wv, acc, 0, NULL) != PS_OK) {
            fprintf(stderr, "bench_checkpoint: out of memory at %" PRIu64 " rows\n", k);
            return 1;
        }
    }
    fprintf(stderr, "bench_checkpoint: %" PRIu64 " rows made in %.1f s\n", rows,
            bench_now_s() - t0);

    double dd_s[9], wr_s[9], rd_s[9], free_rate[9], ck_rate[9];
    uint64_t bytes = 0;
    char cmd[512], ddf[300];
    snprintf(ddf, sizeof(ddf), "%s/dd.bin", dir);
    ps_error err = {0};
    ps_ckpt_info info = {0};
    for (int r = 0; r < runs; r++) {
        t0 = bench_now_s();
        if (ps_checkpoint_write(job, 0, 1, &s, NULL, dir, (uint64_t)r + 1, &info, &err) != PS_OK) {
            fprintf(stderr, "bench_checkpoint: %s\n", err.msg);
            return 1;
        }
        wr_s[r] = bench_now_s() - t0;
        bytes = info.bytes;
        const uint64_t mb = (bytes + (1 << 20) - 1) >> 20;
        snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of=%s bs=1M count=%" PRIu64
                 " conv=fsync status=none", ddf, mb);
        t0 = bench_now_s();
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_checkpoint: %s failed\n", cmd);
            return 1;
        }
        dd_s[r] = (bench_now_s() - t0) * (double)bytes / (double)(mb << 20);
        unlink(ddf);
    }
    /* pushes while a checkpoint is written, then undisturbed for as long */
    double ck_s[9], fill_s[9];
    for (int r = 0; r < runs; r++) {
        t0 = bench_now_s();
        ps_ckpt_writer *w;
        if (ps_ckpt_writer_open(job, 0, 1, &s, NULL, dir, 100 + (uint64_t)r, NULL, NULL, &w, &err) !=
            PS_OK) {
            fprintf(stderr, "bench_checkpoint: %s\n", err.msg);
            return 1;
        }
        fill_s[r] = 0;
        ck_rate[r] = push_rate(s, rows, w, 0, &seed, &fill_s[r]);
        if (ps_ckpt_writer_close(w, false, NULL, &err) != PS_OK) {
            fprintf(stderr, "bench_checkpoint: during pushes: %s\n", err.msg);
            return 1;
        }
        ck_s[r] = bench_now_s() - t0;
        free_rate[r] = push_rate(s, rows, NULL, ck_s[r], &seed, NULL);
    }
    ps_store_destroy(s);
    for (int r = 0; r < runs; r++) {
        s = new_store(job);
        t0 = bench_now_s();
        if (ps_checkpoint_restore(job, 0, 1, &s, dir, NULL, NULL, &info, &err) != PS_OK) {
            fprintf(stderr, "bench_checkpoint: restore: %s\n", err.msg);
            return 1;
        }
        rd_s[r] = bench_now_s() - t0;
        if (info.rows != rows)
            fprintf(stderr, "bench_checkpoint: restored %" PRIu64 " rows of %" PRIu64 "\n",
                    info.rows, rows);
        ps_store_destroy(s);
    }
    /* the files go: ~1.4 GB each at 10 M rows */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_checkpoint: could not remove %s\n", dir);

    const double mbytes = (double)bytes / 1e6;
    const double dd = median(dd_s, runs), wr = median(wr_s, runs), rd = median(rd_s, runs);
    const double fr = median(free_rate, runs), cr = median(ck_rate, runs);
    printf("bench_checkpoint rows=%" PRIu64 " dim=%d bytes=%" PRIu64 " runs=%d\n", rows, DIM,
           bytes, runs);
    printf("bench_checkpoint dd_fsync s=%.2f MB/s=%.0f\n", dd, mbytes / dd);
    printf("bench_checkpoint write s=%.2f MB/s=%.0f of_dd=%.0f%%\n", wr, mbytes / wr,
           100 * dd / wr);
    printf("bench_checkpoint restore s=%.2f MB/s=%.0f (crc pass + rows)\n", rd, mbytes / rd);
    printf("bench_checkpoint push keys/s undisturbed=%.0f during_checkpoint=%.0f ratio=%.0f%% "
           "(checkpoint under pushes s=%.2f, of it copying rows on the pushing thread s=%.2f)\n",
           fr, cr, 100 * cr / fr, median(ck_s, runs), median(fill_s, runs));
    double nf, nc, ns;
    if (net && bench_net(server, base, rows, runs, &nf, &nc, &ns))
        printf("bench_checkpoint net push keys/s undisturbed=%.0f during_checkpoint=%.0f "
               "ratio=%.0f%% (ps-server on loopback, checkpoint under pushes s=%.2f)\n", nf, nc,
               100 * nc / nf, ns);
    bench_crc(runs);
    free(job);
    return 0;
}
