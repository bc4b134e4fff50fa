/* fuzz_data.c - see fuzz_data.h. */
#include "fuzz_data.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_util.h"

/* One batch against data.h's contract. */
static void check_batch(const ps_data *d, const ps_data_batch *b, size_t max_b, uint32_t rank,
                        uint32_t world, bool ordered, uint64_t *last_index) {
    FZ_CHECK(b->B <= max_b, "batch of %zu rows, asked for %zu", b->B, max_b);
    FZ_CHECK(b->offsets[0] == 0, "offsets[0] = %zu", b->offsets[0]);
    const uint32_t hint = ps_data_num_features_hint(d);
    for (size_t i = 0; i < b->B; i++) {
        FZ_CHECK(b->offsets[i] <= b->offsets[i + 1], "offsets go back at row %zu", i);
        FZ_CHECK(isfinite(b->labels[i]), "row %zu: label %g is not finite", i,
                 (double)b->labels[i]);
        FZ_CHECK(b->row_index[i] % world == rank, "row index %llu in the shard of rank %u of %u",
                 (unsigned long long)b->row_index[i], rank, world);
        if (ordered) {
            FZ_CHECK(*last_index == UINT64_MAX || b->row_index[i] > *last_index,
                     "row %llu after row %llu without shuffling",
                     (unsigned long long)b->row_index[i], (unsigned long long)*last_index);
            *last_index = b->row_index[i];
        }
    }
    for (size_t j = 0; j < b->offsets[b->B]; j++) {
        FZ_CHECK(isfinite(b->vals[j]), "feature %zu: value %g is not finite", j,
                 (double)b->vals[j]);
        FZ_CHECK(hint == 0 || b->ids[j] < hint, "feature id %llu of %u features",
                 (unsigned long long)b->ids[j], hint);
    }
}

void fz_data_run(ps_data_format format, const uint8_t *data, size_t size) {
    fz_in in = {data, size};
    const uint8_t flags = fz_u8(&in), opts = fz_u8(&in);
    const int8_t label_column = (int8_t)fz_u8(&in);
    static const size_t max_lines[] = {0, 16, 64, 256};
    const uint32_t world = (uint32_t)(flags >> 6) + 1, rank = (uint32_t)(opts >> 6) % world;
    const size_t max_b = (opts & 7u) + 1;
    const char *ext = format == PS_DATA_CSV ? "csv" : format == PS_DATA_CRITEO ? "tsv" : "svm";
    char name[32];
    const char *path;
    switch (flags & 12) {
    case 4: {
        snprintf(name, sizeof(name), "data.%s.gz", ext);
        path = fz_path(name);
        gzFile gz = gzopen(path, "wb1");
        FZ_CHECK(gz != NULL, "gzopen %s", path);
        FZ_CHECK(in.n == 0 || gzwrite(gz, in.p, (unsigned)in.n) == (int)in.n, "gzwrite");
        FZ_CHECK(gzclose(gz) == Z_OK, "gzclose");
        break;
    }
    case 8:
        snprintf(name, sizeof(name), "data.%s.gz", ext);
        path = fz_write(name, in.p, in.n);
        break;
    default:
        snprintf(name, sizeof(name), "data.%s", ext);
        path = fz_write(name, in.p, in.n);
    }

    ps_data_options o;
    ps_data_options_init(&o);
    o.format = format;
    o.path = path;
    o.label_column = label_column;
    o.label_name = flags & 32 ? "label" : NULL;
    o.one_based = flags & 16;
    o.skip_bad_lines = flags & 1;
    o.shuffle = flags & 2;
    o.shuffle_buffer = opts & 32 ? 3 : 0;
    o.max_line_bytes = max_lines[(opts >> 3) & 3];
    o.seed = size;
    if (format == PS_DATA_CRITEO) { /* the label_column byte picks the split instead */
        o.integers = flags & 16 ? PS_DATA_INT_DENSE : PS_DATA_INT_BUCKET;
        o.validation_split = (double)((uint8_t)label_column & 3) * 0.25;
        o.holdout = o.validation_split > 0 && ((uint8_t)label_column & 4);
    }
    ps_data *d;
    ps_error err = {0};
    if (ps_data_open(&o, rank, world, &d, &err) != PS_OK) {
        FZ_CHECK(d == NULL && err.msg[0] != '\0', "a failed open leaves a reader or no message");
        return;
    }
    /* a plain file has at most a row per line; a .gz of the input's own bytes may hold more */
    const size_t max_rows = (flags & 12) == 8 ? SIZE_MAX : size + 1;
    for (uint32_t epoch = 0; epoch < 2; epoch++) {
        if (epoch > 0 && ps_data_rewind(d, epoch, &err) != PS_OK) break;
        uint64_t last = UINT64_MAX;
        size_t rows = 0;
        for (;;) {
            ps_data_batch b;
            ps_status st = ps_data_next(d, max_b, &b, &err);
            if (st != PS_OK) {
                FZ_CHECK(b.B == 0 && err.msg[0] != '\0', "an error with %zu rows or no message",
                         b.B);
                FZ_CHECK(ps_data_next(d, max_b, &b, NULL) == st && b.B == 0,
                         "an error that is not sticky");
                break;
            }
            if (b.B == 0) break;
            check_batch(d, &b, max_b, rank, world, !o.shuffle, &last);
            rows += b.B;
            FZ_CHECK(rows <= max_rows, "%zu rows out of %zu bytes", rows, size);
        }
        for (size_t i = 0; i < ps_data_skipped(d) && i < PS_DATA_SKIP_MESSAGES; i++) {
            const char *m = ps_data_skipped_message(d, i);
            FZ_CHECK(m != NULL && strlen(m) > 0, "skipped row %zu without a message", i);
        }
    }
    ps_data_destroy(d);
}
