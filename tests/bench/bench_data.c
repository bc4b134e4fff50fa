/* bench_data.c - epoch times of one worker's data reader: parse-once cache against streaming.
 * Reads --epochs epochs of FILE in batches of --batch (shuffled as fit.shuffle does, full-shard
 * order or the --buffer rows tf.data buffer) and prints one line per epoch, so the first epoch
 * (parse, and build the cache) and the later ones (read the cache) can be compared. A program, not
 * a test: ctest never runs it.
 *
 *   bench_data --format csv|libsvm|criteo FILE [--cache-bytes N] [--cache-dir DIR] [--epochs E]
 *              [--batch B] [--buffer R] [--rank R --world W]
 *   bench_data format=csv cache_bytes=1073741824 epoch=1 seconds=... rows=... source=stream */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "data.h"

int main(int argc, char **argv) {
    ps_data_options o;
    ps_data_options_init(&o);
    o.shuffle = true, o.seed = 42, o.cache_bytes = PS_DATA_DEFAULT_CACHE_BYTES;
    const char *format = "csv";
    unsigned epochs = 3, rank = 0, world = 1;
    size_t batch = 128;
    ps_logger log = {.level = PS_LOG_INFO, .prefix = "bench_data"};
    o.log = &log;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--format") == 0 && v) format = v, i++;
        else if (strcmp(a, "--cache-bytes") == 0 && v) o.cache_bytes = strtoull(v, NULL, 10), i++;
        else if (strcmp(a, "--cache-dir") == 0 && v) o.cache_dir = v, i++;
        else if (strcmp(a, "--epochs") == 0 && v) epochs = (unsigned)atoi(v), i++;
        else if (strcmp(a, "--batch") == 0 && v) batch = (size_t)atol(v), i++;
        else if (strcmp(a, "--buffer") == 0 && v) o.shuffle_buffer = (size_t)atol(v), i++;
        else if (strcmp(a, "--rank") == 0 && v) rank = (unsigned)atoi(v), i++;
        else if (strcmp(a, "--world") == 0 && v) world = (unsigned)atoi(v), i++;
        else if (a[0] != '-') o.path = a;
        else {
            fprintf(stderr, "bench_data: unknown argument %s\n", a);
            return 2;
        }
    }
    ps_error err = {0};
    ps_data *d;
    if (o.path == NULL || ps_data_format_parse(format, &o.format, &err) != PS_OK ||
        ps_data_open(&o, rank, world, &d, &err) != PS_OK) {
        fprintf(stderr, "bench_data: %s\n", o.path ? err.msg : "needs a FILE");
        return 1;
    }
    static const char *sources[] = {"stream", "memory", "file"};
    for (unsigned e = 0; e < epochs; e++) {
        double t0 = bench_now_s();
        uint64_t rows = 0;
        ps_data_batch b;
        if (ps_data_rewind(d, e, &err) != PS_OK) break;
        ps_data_source src = ps_data_source_of(d);
        while (ps_data_next(d, batch, &b, &err) == PS_OK && b.B > 0) rows += b.B;
        if (err.code != PS_OK) {
            fprintf(stderr, "bench_data: %s\n", err.msg);
            ps_data_destroy(d);
            return 1;
        }
        printf("bench_data format=%s cache_bytes=%zu epoch=%u seconds=%.3f rows=%" PRIu64
               " source=%s\n",
               format, o.cache_bytes, e + 1, bench_now_s() - t0, rows, sources[src]);
    }
    ps_data_destroy(d);
    return 0;
}
