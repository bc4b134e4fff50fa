/* data.h - the worker's training-data readers: csv, libsvm (svmlight), Criteo TSV, IDX
 * (MNIST-style image files) and generated random rows; text formats streamed line by line (plain
 * or .gz), sharded by row, optionally shuffled through a bounded buffer, delivered as CSR
 * mini-batches with uint64 feature ids (or, for a dense model, idx and random rows as one
 * matrix per batch: dense_dim). Each format lives in its own data_<format>.c behind
 * data_format.h.
 *
 * Sharding: rows are numbered 0, 1, 2, ... in file order (empty lines, a csv header and libsvm
 * comment-only lines are not rows; malformed lines, including lines over max_line_bytes, are;
 * an IDX file's rows are its images).
 * Worker `rank` of `world` gets the rows with index % world == rank, so across workers every row
 * is seen exactly once per epoch. Each worker still reads every line, but only parses (and so
 * only reports errors in) its own rows.
 *
 * Example:
 *     ps_data_options o;
 *     ps_data_options_init(&o);
 *     o.format = PS_DATA_LIBSVM, o.path = "train.svm.gz", o.shuffle = true, o.seed = 42;
 *     ps_data *d;
 *     if (ps_data_open(&o, rank, world, &d, &err) != PS_OK) ...;
 *     for (uint32_t epoch = 0; epoch < epochs; epoch++) {
 *         if (ps_data_rewind(d, epoch, &err) != PS_OK) ...;
 *         ps_data_batch b;
 *         while (ps_data_next(d, 128, &b, &err) == PS_OK && b.B > 0) train(&b);
 *     }
 *     ps_data_destroy(d);
 *
 * A ps_data is not thread-safe; use one per thread. */
#ifndef PS_DATA_H
#define PS_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "ps_status.h"

#define PS_DATA_DEFAULT_SHUFFLE_BUFFER 10000u   /* rows */
#define PS_DATA_MAX_SHUFFLE_BUFFER (1u << 26)   /* rows */
#define PS_DATA_DEFAULT_MAX_LINE (1u << 20)     /* bytes per line, excluding the '\n' */
#define PS_DATA_MAX_LINE_LIMIT (1u << 30)       /* largest max_line_bytes accepted */
#define PS_DATA_MAX_BATCH (1u << 24)            /* largest max_b for ps_data_next */
#define PS_DATA_MAX_RANDOM_COLS (1u << 24)
#define PS_DATA_SKIP_MESSAGES 8                 /* skipped-line messages kept per epoch */
#define PS_DATA_DEFAULT_CACHE_BYTES (1ull << 30) /* data.cache_bytes' default (the reader's is 0) */

typedef enum {
    PS_DATA_CSV,
    PS_DATA_LIBSVM,
    PS_DATA_RANDOM,
    PS_DATA_CRITEO,
    PS_DATA_IDX,
} ps_data_format;

/* criteo: what an integer column I1..I13 becomes (see the criteo options below). */
typedef enum { PS_DATA_INT_BUCKET, PS_DATA_INT_DENSE } ps_data_integers;

typedef struct {
    ps_data_format format;
    const char *path;        /* csv/libsvm/criteo: "*.gz" is read through zlib; idx: the images
                                file. Borrowed until open returns. Ignored for random. */

    /* csv: the label column, 0-based; negative counts from the end (-1 = last). label_name, if
     * not NULL, picks the column by header name instead (the file must have a header; the first
     * match wins) and is borrowed until open returns. The first non-empty line is a header if
     * any of its non-empty fields is not a number. Fields are separated by ',', may be padded
     * with spaces/tabs; every field must be a finite number. Feature ids are the column index
     * among the non-label columns (0..d-1); every column is emitted, zeros included. */
    int label_column;
    const char *label_name;

    /* libsvm: `label id[:val] id[:val] ... [# comment]`, optional `qid:N` token skipped; an id
     * without `:val` has the value 1. one_based: id 1 is feature 0 (LIBSVM's convention, the
     * default); otherwise ids are taken as they are. Ids are decimal, 0..2^64-1. Label -1
     * becomes 0; any other finite label is kept (0/1, or class ids for multi-class). */
    bool one_based;
    uint64_t num_ids;        /* libsvm: an id (after one_based) >= num_ids is malformed; 0: any */

    /* criteo (Criteo display-advertising TSV): `label \t I1..I13 \t C1..C26`, 40 fields, label
     * 0 or 1, I* decimal integers (may be negative), C* strings (hex in the data set), any of the
     * 39 features empty (no key). Column col = 1..13 for I1..I13, 14..39 for C1..C26; a field
     * becomes the 64-bit key (no modulo)
     *     key(col, bytes) = ps_mix64(fnv1a64(bytes) ^ ps_mix64(0x9e3779b97f4a7c15 * col))
     * with fnv1a64 the 64-bit FNV-1a (offset 0xcbf29ce484222325, prime 0x100000001b3) over the
     * bytes and ps_mix64 as in common/hash.h. C*: key(col, the field as written), value 1.
     * I* with PS_DATA_INT_BUCKET: b = v > 2 ? floor(ln(v)^2) : v, key(col, b in decimal),
     * value 1 (the Criteo-winning libffm recipe); with PS_DATA_INT_DENSE: key(col, ""), value
     * ln(1 + max(v, 0)). num_ids is not used (keys are hashes). */
    ps_data_integers integers;

    /* idx (MNIST/Fashion-MNIST files): path is the images file (magic 0x00000803, uint8,
     * N x rows x cols, big-endian header), labels the labels file (0x00000801, uint8, N); each
     * may be gzip (zlib tells by the magic bytes 1f 8b, whatever the name). A row is one image:
     * features 0..rows*cols-1, every pixel, value pixel/255; label the class byte. Both files
     * are read at open; the reader keeps its shard's images. Borrowed until open returns. */
    const char *labels;

    /* Keras' validation_split: with n rows (counted at open for text formats, in one pass that
     * numbers rows as the reader does), rows [floor(n*(1-f)), n) are the held-out part and the
     * rest the training part, both before shuffling. 0 (the default): no split. holdout: this
     * reader yields the held-out rows (needs validation_split > 0), else the training rows.
     * Either part is sharded by the global row index % world as above. */
    double validation_split;
    bool holdout;

    /* csv/libsvm/criteo: a malformed own row is counted, remembered (ps_data_skipped_message) and
     * skipped instead of failing ps_data_next with PS_DATA. */
    bool skip_bad_lines;
    size_t max_line_bytes;   /* 0 = PS_DATA_DEFAULT_MAX_LINE; longer lines are malformed */

    /* random: random_rows rows of random_cols features, x ~ U[0,1) with 24-bit resolution,
     * label 0/1. Row i depends only on (seed, i), so the union of the shards of any world size
     * equals the world == 1 data set. See data_random.c for the exact generator. */
    uint64_t random_rows;
    uint32_t random_cols;

    /* Shuffle the order of this worker's rows within each epoch. When the shard has fewer rows
     * than shuffle_buffer (0 = PS_DATA_DEFAULT_SHUFFLE_BUFFER) the epoch's order is a
     * permutation of (seed, epoch) alone: rows sorted by
     *     key(i) = mix64(mix64(mix64(seed) + epoch) ^ mix64(i + 0x9e3779b97f4a7c15))
     * (i the row index, ties by index), so the job's rows come in one global order whatever the
     * number of workers, each worker taking its own rows in that order. A bigger shard goes
     * through a buffer of shuffle_buffer rows as tf.data's shuffle() (seeded by seed, epoch and
     * rank). Without shuffle rows come in file order. */
    bool shuffle;
    size_t shuffle_buffer;
    uint64_t seed;           /* shuffle and random */

    /* > 0: a binary format (idx, random) whose rows have this many features hands each batch
     * out as a (B, dense_dim) matrix (ps_data_batch.x), not as (id, value) pairs: a dense input
     * layer's view, without 12 bytes per feature in between. Other formats and widths: pairs. */
    uint32_t dense_dim;

    /* csv/libsvm/criteo: parse once. The first epoch that runs to its end keeps this reader's
     * rows in a compact binary form (CSR: offsets, ids, values, labels, row indexes) and later
     * epochs read them from it, with no text parsing; rows, order and errors are those of
     * streaming. cache_bytes 0 (the default here): stream every epoch. Up to cache_bytes the
     * form is held in memory; past it, it goes to the cache file
     *     DIR/BASENAME.HASH.pscache
     * (DIR: cache_dir if set, else the source's directory; HASH: of the reader options that
     * change the rows: format, label column/name, one_based, num_ids, integers, max_line_bytes,
     * skip_bad_lines, validation_split, holdout, rank and world; with cache_dir also the
     * source's full path), written unnamed, fsynced, named, and memory-mapped. A later open that
     * finds that file with the source's identity (device, inode, size, mtime, ctime), those
     * options and a good crc32 of its sections reads from it from epoch 0 (no parse, no
     * validation_split counting pass); a stale or torn file is removed and rebuilt.
     * When the file cannot be written the reader warns through log and streams. */
    size_t cache_bytes;
    const char *cache_dir;   /* borrowed until open returns; NULL or "": the source's directory */
    const ps_logger *log;    /* the cache's warnings and notes; NULL: none. Borrowed: must
                                outlive the reader */
} ps_data_options;

typedef struct ps_data ps_data;

/* A mini-batch in CSR form (or with x, a matrix and no pairs). All arrays are owned by the reader and valid until the next
 * ps_data_next/ps_data_rewind/ps_data_destroy on it. */
typedef struct {
    size_t B;                   /* rows in this batch; 0 at the end of the epoch */
    const size_t *offsets;      /* (B + 1) row i's features are [offsets[i], offsets[i+1]) */
    const uint64_t *ids;        /* (offsets[B]) feature ids */
    const float *vals;          /* (offsets[B]) feature values */
    const float *labels;        /* (B) */
    const uint64_t *row_index;  /* (B) global 0-based row index of each row (see sharding) */
    const float *x;             /* (B, x_cols) the rows as a matrix, zeros included, when the
                                   reader fills one (ps_data_options.dense_dim), and then no
                                   pairs (offsets all 0); else NULL */
    size_t x_cols;              /* dense_dim with x, else 0 */
} ps_data_batch;

/* Defaults: csv, label_column 0, one_based true, everything else 0/NULL/false. */
void ps_data_options_init(ps_data_options *o);

/* "csv", "libsvm" (or "svmlight"), "random", "criteo", "idx". PS_CONFIG for anything else. */
ps_status ps_data_format_parse(const char *s, ps_data_format *out, ps_error *err);
const char *ps_data_format_name(ps_data_format f);

/* Opens the reader for worker `rank` of `world`, positioned at the start of epoch 0. For csv it
 * reads the first non-empty line to find the header and column count; idx reads both files;
 * with validation_split a text file is read once more to count its rows. Errors: PS_INVALID_ARG
 * (rank >= world, NULL arguments), PS_CONFIG (bad options: label column out of range, label
 * name not in the header, limits), PS_IO (open/read/gzip), PS_DATA (first csv line malformed;
 * an idx file with a bad magic, a short or long body, or image and label counts that differ),
 * PS_NOMEM. On error *out is NULL. */
ps_status ps_data_open(const ps_data_options *o, uint32_t rank, uint32_t world, ps_data **out,
                       ps_error *err);

void ps_data_destroy(ps_data *d); /* NULL-safe */

/* Restarts at the beginning of the shard for `epoch` (re-seeds the shuffle, clears the skip
 * count and a sticky error). PS_IO if the file cannot be re-read. */
ps_status ps_data_rewind(ps_data *d, uint32_t epoch, ps_error *err);

/* Fills *out with the next up to max_b (1..PS_DATA_MAX_BATCH) rows of this epoch; B == 0 at the
 * end of the epoch (and on every later call until ps_data_rewind). A malformed own row fails
 * with PS_DATA and the message "path:LINE: what is wrong" (LINE 1-based, counting every line),
 * unless skip_bad_lines. PS_IO on read or gzip errors. After an error out->B is 0, the rows of
 * that call are dropped and the error is sticky until ps_data_rewind. */
ps_status ps_data_next(ps_data *d, size_t max_b, ps_data_batch *out, ps_error *err);

/* Malformed rows skipped so far in this epoch (skip_bad_lines; read from a cache: the whole
 * epoch's count, from its start), and the messages of the first
 * PS_DATA_SKIP_MESSAGES of them ("path:LINE: what"), i < min(skipped, PS_DATA_SKIP_MESSAGES);
 * NULL otherwise. The string lives until the next rewind or destroy. */
size_t ps_data_skipped(const ps_data *d);
const char *ps_data_skipped_message(const ps_data *d, size_t i);

/* Where this reader's rows come from now: streamed text (no cache, or a build in progress that
 * becomes the cache at the end of the epoch), or the parsed form in memory or in a mapped file. */
typedef enum {
    PS_DATA_STREAM,
    PS_DATA_CACHE_MEMORY,
    PS_DATA_CACHE_FILE,
} ps_data_source;
ps_data_source ps_data_source_of(const ps_data *d);
/* The cache file's name for this reader (whether or not it exists); NULL without a cache. */
const char *ps_data_cache_file(const ps_data *d);

/* Feature-space size when the format fixes it: csv and random d (columns without the label),
 * idx rows*cols; libsvm and criteo 0 (unknown). */
uint32_t ps_data_num_features_hint(const ps_data *d);

#endif
