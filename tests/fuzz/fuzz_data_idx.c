/* fuzz_data_idx.c - libFuzzer target: the IDX reader (worker/data_idx.c): an images and a labels
 * file, plain or gzip, with headers the fuzzer writes or made here from a few bytes, read
 * sharded, shuffled and split for two epochs, every batch checked against data.h's contract.
 *
 * Input: [flags][a][b][c][rest...]. flags: 1 images gzip, 2 labels gzip, 4|8 world - 1,
 * 16|32 rank (mod world), 64 shuffle, 128 headers made here: images N = a % 16, rows
 * 1 + b % 4, cols 1 + c % 4, labels N (+1 when b & 64), bodies cut from rest (short when rest
 * is); else rest is both files as they are, split at a * |rest| / 255. c bits 4-5:
 * validation_split 0, 0.25, 0.5, 0.75; c bit 6: holdout. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "data.h"
#include "fuzz_util.h"

static const char *write_file(const char *name, const uint8_t *p, size_t n, bool gz) {
    if (!gz) return fz_write(name, p, n);
    const char *path = fz_path(name);
    gzFile g = gzopen(path, "wb1");
    FZ_CHECK(g != NULL, "gzopen %s", path);
    FZ_CHECK(n == 0 || gzwrite(g, p, (unsigned)n) == (int)n, "gzwrite");
    FZ_CHECK(gzclose(g) == Z_OK, "gzclose");
    return path;
}

static size_t put_be32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
    return 4;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in in = {data, size};
    const uint8_t flags = fz_u8(&in), a = fz_u8(&in), b = fz_u8(&in), c = fz_u8(&in);
    const uint32_t world = (uint32_t)((flags >> 2) & 3) + 1, rank = ((flags >> 4) & 3) % world;
    uint8_t img[4096 + 16], lab[4096 + 8];
    size_t img_n, lab_n;
    if (flags & 128) {
        const uint32_t n = a % 16, rows = 1 + b % 4, cols = 1 + c % 4;
        size_t body = (size_t)n * rows * cols, lab_body = n + ((b & 64) != 0);
        img_n = put_be32(img, 0x803);
        img_n += put_be32(img + img_n, n);
        img_n += put_be32(img + img_n, rows);
        img_n += put_be32(img + img_n, cols);
        if (body > in.n) body = in.n;
        memcpy(img + img_n, in.p, body);
        img_n += body;
        in.p += body, in.n -= body;
        lab_n = put_be32(lab, 0x801);
        lab_n += put_be32(lab + lab_n, n);
        if (lab_body > in.n) lab_body = in.n;
        memcpy(lab + lab_n, in.p, lab_body);
        lab_n += lab_body;
    } else {
        size_t cut = (size_t)a * in.n / 255;
        if (cut > 4096) cut = 4096;
        img_n = cut;
        memcpy(img, in.p, cut);
        lab_n = in.n - cut > 4096 ? 4096 : in.n - cut;
        memcpy(lab, in.p + cut, lab_n);
    }
    char images[4096], labels[4096];
    snprintf(images, sizeof(images), "%s", write_file("images", img, img_n, flags & 1));
    snprintf(labels, sizeof(labels), "%s", write_file("labels", lab, lab_n, flags & 2));

    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_IDX;
    o.path = images, o.labels = labels;
    o.shuffle = flags & 64;
    o.seed = size;
    o.validation_split = (double)((c >> 4) & 3) * 0.25;
    o.holdout = o.validation_split > 0 && (c & 64);
    ps_data *d;
    ps_error err = {0};
    if (ps_data_open(&o, rank, world, &d, &err) != PS_OK) {
        FZ_CHECK(d == NULL && err.msg[0] != '\0', "a failed open leaves a reader or no message");
        return 0;
    }
    const uint32_t px = ps_data_num_features_hint(d);
    FZ_CHECK(px >= 1 && px <= (flags & 128 ? 16u : 1u << 24), "%u pixels", px);
    if (size & 1) { /* a dense model's reader: every batch a (B, px) matrix */
        ps_data_destroy(d);
        o.dense_dim = px;
        FZ_CHECK(ps_data_open(&o, rank, world, &d, &err) == PS_OK, "dense reopen: %s", err.msg);
    }
    size_t rows_seen[2] = {0, 0};
    for (uint32_t epoch = 0; epoch < 2; epoch++) {
        FZ_CHECK(epoch == 0 || ps_data_rewind(d, epoch, &err) == PS_OK, "rewind: %s", err.msg);
        for (;;) {
            ps_data_batch bt;
            FZ_CHECK(ps_data_next(d, 3, &bt, &err) == PS_OK, "an idx batch failed: %s",
                     err.msg);
            if (bt.B == 0) break;
            FZ_CHECK((bt.x != NULL) == (o.dense_dim != 0) && bt.x_cols == o.dense_dim,
                     "a batch of %zu columns, dense_dim %u", bt.x_cols, o.dense_dim);
            for (size_t i = 0; i < bt.B; i++) {
                FZ_CHECK(bt.row_index[i] % world == rank, "row %llu in shard %u of %u",
                         (unsigned long long)bt.row_index[i], rank, world);
                FZ_CHECK(bt.labels[i] >= 0 && bt.labels[i] <= 255 &&
                             bt.labels[i] == floorf(bt.labels[i]),
                         "label %g", (double)bt.labels[i]);
                if (bt.x != NULL) {
                    for (size_t p = 0; p < px; p++)
                        FZ_CHECK(bt.x[i * px + p] >= 0 && bt.x[i * px + p] <= 1,
                                 "pixel value %g", (double)bt.x[i * px + p]);
                    continue;
                }
                FZ_CHECK(bt.offsets[i + 1] - bt.offsets[i] == px, "a row of %zu of %u pixels",
                         bt.offsets[i + 1] - bt.offsets[i], px);
                for (size_t j = bt.offsets[i]; j < bt.offsets[i + 1]; j++) {
                    FZ_CHECK(bt.ids[j] == j - bt.offsets[i], "pixel %llu at %zu",
                             (unsigned long long)bt.ids[j], j - bt.offsets[i]);
                    FZ_CHECK(bt.vals[j] >= 0 && bt.vals[j] <= 1, "pixel value %g",
                             (double)bt.vals[j]);
                }
            }
            rows_seen[epoch] += bt.B;
        }
    }
    FZ_CHECK(rows_seen[0] == rows_seen[1], "epochs of %zu and %zu rows", rows_seen[0],
             rows_seen[1]);
    ps_data_destroy(d);
    return 0;
}
