/* test_data.c - the worker's data readers: csv/libsvm/random parsing, gzip, sharding, shuffle,
 * malformed-line messages and skip_bad_lines. Files are written to a mkdtemp directory. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"

/* ---- fixture: a temp directory, removed after each test ---------------------------------- */

static char tmpdir[64];

static void setup(void) {
    strcpy(tmpdir, "/tmp/ps_test_data_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void) {
    DIR *dir = opendir(tmpdir);
    if (dir == NULL) return;
    struct dirent *e;
    char p[sizeof(tmpdir) + sizeof(e->d_name) + 1];
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(dir);
    rmdir(tmpdir);
}

TestSuite(data, .init = setup, .fini = teardown, .timeout = 60);

/* Writes len bytes (strlen if len == 0) to tmpdir/name; path receives the full name. */
static void write_file(const char *name, const char *text, size_t len, char *path) {
    sprintf(path, "%s/%s", tmpdir, name);
    if (len == 0) len = strlen(text);
    if (strlen(name) > 3 && strcmp(name + strlen(name) - 3, ".gz") == 0) {
        gzFile gz = gzopen(path, "wb");
        cr_assert_not_null(gz);
        cr_assert_eq(gzwrite(gz, text, (unsigned)len), (int)len);
        cr_assert_eq(gzclose(gz), Z_OK);
        return;
    }
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* ---- collecting an epoch ----------------------------------------------------------------- */

typedef struct {
    size_t n, nf;          /* rows, features */
    uint64_t *index;       /* (n) */
    float *label;          /* (n) */
    size_t *off;           /* (n + 1) */
    uint64_t *ids;         /* (nf) */
    float *vals;           /* (nf) */
} rows;

static void rows_free(rows *r) {
    free(r->index), free(r->label), free(r->off), free(r->ids), free(r->vals);
    memset(r, 0, sizeof(*r));
}

/* Reads the rest of the epoch in batches of max_b, checking the batch invariants. */
static void collect(ps_data *d, size_t max_b, rows *r) {
    memset(r, 0, sizeof(*r));
    r->off = calloc(1, sizeof(size_t));
    for (;;) {
        ps_data_batch b;
        ps_error err = {0};
        ps_status st = ps_data_next(d, max_b, &b, &err);
        cr_assert_eq(st, PS_OK, "ps_data_next: %s", err.msg);
        cr_assert_leq(b.B, max_b);
        if (b.B == 0) break;
        cr_assert_eq(b.offsets[0], 0);
        size_t nf = b.offsets[b.B];
        r->index = realloc(r->index, (r->n + b.B) * sizeof(uint64_t));
        r->label = realloc(r->label, (r->n + b.B) * sizeof(float));
        r->off = realloc(r->off, (r->n + b.B + 1) * sizeof(size_t));
        r->ids = realloc(r->ids, (r->nf + nf + 1) * sizeof(uint64_t));
        r->vals = realloc(r->vals, (r->nf + nf + 1) * sizeof(float));
        for (size_t i = 0; i < b.B; i++) {
            cr_assert_leq(b.offsets[i], b.offsets[i + 1]);
            r->index[r->n + i] = b.row_index[i];
            r->label[r->n + i] = b.labels[i];
            r->off[r->n + i + 1] = r->nf + b.offsets[i + 1];
        }
        if (nf > 0) {
            memcpy(r->ids + r->nf, b.ids, nf * sizeof(uint64_t));
            memcpy(r->vals + r->nf, b.vals, nf * sizeof(float));
        }
        r->n += b.B, r->nf += nf;
    }
    ps_data_batch b; /* the end of an epoch stays the end */
    cr_assert_eq(ps_data_next(d, max_b, &b, NULL), PS_OK);
    cr_assert_eq(b.B, 0);
}

static ps_data *open_ok(const ps_data_options *o, uint32_t rank, uint32_t world) {
    ps_data *d = NULL;
    ps_error err = {0};
    ps_status st = ps_data_open(o, rank, world, &d, &err);
    cr_assert_eq(st, PS_OK, "ps_data_open: %s (%s)", err.msg, ps_status_str(st));
    cr_assert_not_null(d);
    return d;
}

/* Opens path with o, reads one epoch with world 1. */
static void read_all(ps_data_options *o, const char *path, rows *r) {
    o->path = path;
    ps_data *d = open_ok(o, 0, 1);
    collect(d, 3, r);
    ps_data_destroy(d);
}

static void assert_row(const rows *r, size_t i, float label, size_t n, const uint64_t *ids,
                       const float *vals) {
    cr_assert_lt(i, r->n);
    cr_assert_eq(r->label[i], label, "row %zu: label %g, want %g", i, r->label[i], label);
    cr_assert_eq(r->off[i + 1] - r->off[i], n, "row %zu: %zu features, want %zu", i,
                 r->off[i + 1] - r->off[i], n);
    for (size_t k = 0; k < n; k++) {
        cr_assert_eq(r->ids[r->off[i] + k], ids[k], "row %zu feature %zu: id %" PRIu64, i, k,
                     r->ids[r->off[i] + k]);
        cr_assert_eq(r->vals[r->off[i] + k], vals[k], "row %zu feature %zu: val %g want %g", i,
                     k, r->vals[r->off[i] + k], vals[k]);
    }
}

#define U64S(...) ((const uint64_t[]){__VA_ARGS__})
#define FLTS(...) ((const float[]){__VA_ARGS__})

/* ---- csv --------------------------------------------------------------------------------- */

Test(data, csv_no_header_label_first) {
    char path[256];
    write_file("a.csv", "1,0.5,2\n0,1.5,-3e2\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    rows r;
    read_all(&o, path, &r);
    cr_assert_eq(r.n, 2);
    assert_row(&r, 0, 1, 2, U64S(0, 1), FLTS(0.5f, 2));
    assert_row(&r, 1, 0, 2, U64S(0, 1), FLTS(1.5f, -300));
    cr_assert_eq(r.index[0], 0);
    cr_assert_eq(r.index[1], 1);
    rows_free(&r);
}

Test(data, csv_label_last_and_middle) {
    char path[256];
    write_file("a.csv", "0.5,2,1\n1.5,3,0\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    rows r;
    o.label_column = -1;
    read_all(&o, path, &r);
    assert_row(&r, 0, 1, 2, U64S(0, 1), FLTS(0.5f, 2));
    assert_row(&r, 1, 0, 2, U64S(0, 1), FLTS(1.5f, 3));
    rows_free(&r);
    o.label_column = 1; /* features are renumbered around the label */
    read_all(&o, path, &r);
    assert_row(&r, 0, 2, 2, U64S(0, 1), FLTS(0.5f, 1));
    rows_free(&r);
    o.label_column = -3;
    read_all(&o, path, &r);
    assert_row(&r, 1, 1.5f, 2, U64S(0, 1), FLTS(3, 0));
    rows_free(&r);
}

Test(data, csv_header_label_by_name) {
    char path[256];
    /* BOM, quoted names, spaces, CRLF, an empty line, no trailing newline */
    write_file("h.csv", "\xef\xbb\xbf\"a\", y ,b\r\n1, 1 ,2\r\n\r\n3,0,\t4", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.label_name = "y";
    o.path = path;
    ps_data *d = open_ok(&o, 0, 1);
    cr_assert_eq(ps_data_num_features_hint(d), 2);
    rows r;
    collect(d, 10, &r);
    cr_assert_eq(r.n, 2);
    assert_row(&r, 0, 1, 2, U64S(0, 1), FLTS(1, 2));
    assert_row(&r, 1, 0, 2, U64S(0, 1), FLTS(3, 4));
    cr_assert_eq(r.index[1], 1, "the header is not a row");
    rows_free(&r);
    ps_data_destroy(d);

    o.label_name = "a";
    read_all(&o, path, &r);
    assert_row(&r, 1, 3, 2, U64S(0, 1), FLTS(0, 4));
    rows_free(&r);
    o.label_name = NULL, o.label_column = 0; /* header with index-chosen label */
    read_all(&o, path, &r);
    assert_row(&r, 0, 1, 2, U64S(0, 1), FLTS(1, 2));
    rows_free(&r);
}

Test(data, csv_header_detection_is_any_field) {
    char path[256];
    write_file("h.csv", "1,x2,3\n0,1,1\n", 0, path); /* one non-number makes it a header */
    ps_data_options o;
    ps_data_options_init(&o);
    rows r;
    read_all(&o, path, &r);
    cr_assert_eq(r.n, 1);
    assert_row(&r, 0, 0, 2, U64S(0, 1), FLTS(1, 1));
    rows_free(&r);
}

Test(data, csv_single_column_and_empty) {
    char path[256];
    write_file("one.csv", "1\n0\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    rows r;
    read_all(&o, path, &r);
    cr_assert_eq(r.n, 2);
    assert_row(&r, 1, 0, 0, NULL, NULL);
    rows_free(&r);
    write_file("empty.csv", "\n\n", 0, path);
    read_all(&o, path, &r);
    cr_assert_eq(r.n, 0);
    rows_free(&r);
    write_file("header_only.csv", "y,a,b\n", 0, path);
    o.path = path;
    ps_data *d = open_ok(&o, 0, 1);
    cr_assert_eq(ps_data_num_features_hint(d), 2);
    collect(d, 4, &r);
    cr_assert_eq(r.n, 0);
    rows_free(&r);
    ps_data_destroy(d);
}

/* Values go through a fast path that must be bit-identical to strtof. */
Test(data, csv_values_match_strtof) {
    enum { N = 20000 };
    char *text = malloc((size_t)N * 40), *p = text;
    char (*num)[32] = malloc(sizeof(*num) * N);
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t x = s >> 11;
        int digits = 1 + (int)(x % 12), point = (int)((x >> 8) % (uint64_t)(digits + 1));
        char *q = num[i];
        if ((x >> 16) & 1) *q++ = '-';
        for (int k = 0; k < digits; k++) {
            if (k == point && k > 0) *q++ = '.';
            *q++ = (char)('0' + (x >> (20 + 3 * k)) % 10);
        }
        if ((x >> 60) % 3 == 0) q += sprintf(q, "e%d", (int)((x >> 52) % 31) - 15);
        *q = '\0';
        p += sprintf(p, "%d,%s\n", i, num[i]);
    }
    char path[256];
    write_file("nums.csv", text, (size_t)(p - text), path);
    ps_data_options o;
    ps_data_options_init(&o);
    rows r;
    read_all(&o, path, &r);
    cr_assert_eq(r.n, N);
    for (int i = 0; i < N; i++) {
        float want = strtof(num[i], NULL);
        cr_assert_eq(memcmp(&r.vals[i], &want, sizeof(float)), 0, "\"%s\": got %a want %a",
                     num[i], (double)r.vals[i], (double)want);
    }
    rows_free(&r);
    free(text);
    free(num);
}

/* ---- libsvm ------------------------------------------------------------------------------ */

static const char svm_text[] =
    "# a comment line\n"
    "+1 1:0.5 3:2 # trailing comment\n"
    "\n"
    "-1 qid:7 2:1e-3\t10:-4\r\n"
    "   \t\n"
    "0 18446744073709551615:1\n"
    "3 1:1\n"
    "1"; /* label only, no trailing newline */

Test(data, libsvm_one_based) {
    char path[256];
    write_file("a.svm", svm_text, 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM;
    o.path = path;
    ps_data *d = open_ok(&o, 0, 1);
    cr_assert_eq(ps_data_num_features_hint(d), 0);
    rows r;
    collect(d, 2, &r);
    ps_data_destroy(d);
    cr_assert_eq(r.n, 5);
    assert_row(&r, 0, 1, 2, U64S(0, 2), FLTS(0.5f, 2));
    assert_row(&r, 1, 0, 2, U64S(1, 9), FLTS(1e-3f, -4));
    assert_row(&r, 2, 0, 1, U64S(UINT64_MAX - 1), FLTS(1));
    assert_row(&r, 3, 3, 1, U64S(0), FLTS(1));
    assert_row(&r, 4, 1, 0, NULL, NULL);
    for (size_t i = 0; i < r.n; i++) cr_assert_eq(r.index[i], i);
    rows_free(&r);
}

/* Ids past the model's inputs are malformed lines, named by file:line (they were accepted and
 * one job created 400 000 rows no layer reads). */
Test(data, libsvm_ids_beyond_num_ids_are_errors) {
    char path[256];
    write_file("n.svm", "1 1:1 10:1\n0 3:1 11:0.5\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.num_ids = 10;
    ps_data *d = open_ok(&o, 0, 1);
    ps_data_batch b;
    ps_error err = {0};
    cr_assert_eq(ps_data_next(d, 1, &b, &err), PS_OK, "%s", err.msg); /* id 10 is key 9 */
    cr_assert_eq(ps_data_next(d, 1, &b, &err), PS_DATA);
    char want[300];
    snprintf(want, sizeof(want), "%s:2: token \"11:0.5\": feature id beyond the model's 10", path);
    cr_assert(strstr(err.msg, want) != NULL, "%s", err.msg);
    ps_data_destroy(d);
}

Test(data, libsvm_zero_based) {
    char path[256];
    write_file("a.svm", svm_text, 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM;
    o.one_based = false;
    rows r;
    read_all(&o, path, &r);
    cr_assert_eq(r.n, 5);
    assert_row(&r, 0, 1, 2, U64S(1, 3), FLTS(0.5f, 2));
    assert_row(&r, 2, 0, 1, U64S(18446744073709551615ull), FLTS(1));
    rows_free(&r);
    write_file("z.svm", "1 0:7\n", 0, path);
    read_all(&o, path, &r);
    assert_row(&r, 0, 1, 1, U64S(0), FLTS(7));
    rows_free(&r);
}

Test(data, gzip_equals_plain) {
    char plain[256], gz[256];
    write_file("a.svm", svm_text, 0, plain);
    write_file("a.svm.gz", svm_text, 0, gz);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM;
    rows a, b;
    read_all(&o, plain, &a);
    read_all(&o, gz, &b);
    cr_assert_eq(a.n, b.n);
    cr_assert_eq(a.nf, b.nf);
    cr_assert_eq(memcmp(a.ids, b.ids, a.nf * sizeof(uint64_t)), 0);
    cr_assert_eq(memcmp(a.vals, b.vals, a.nf * sizeof(float)), 0);
    cr_assert_eq(memcmp(a.label, b.label, a.n * sizeof(float)), 0);
    rows_free(&a), rows_free(&b);

    write_file("c.csv.gz", "y,a\n1,2\n0,3\n", 0, gz); /* csv too, rewound through zlib */
    ps_data_options_init(&o);
    o.path = gz;
    ps_data *d = open_ok(&o, 0, 1);
    for (uint32_t epoch = 0; epoch < 2; epoch++) {
        cr_assert_eq(ps_data_rewind(d, epoch, NULL), PS_OK);
        collect(d, 8, &a);
        cr_assert_eq(a.n, 2);
        assert_row(&a, 1, 0, 1, U64S(0), FLTS(3));
        rows_free(&a);
    }
    ps_data_destroy(d);
}

Test(data, gzip_truncated_is_io_error) {
    enum { N = 20000 };
    char *text = malloc(N * 16), *p = text;
    for (int i = 0; i < N; i++) p += sprintf(p, "1 %d:%d\n", i + 1, i);
    char path[256];
    write_file("t.svm.gz", text, (size_t)(p - text), path);
    free(text);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    cr_assert_eq(truncate(path, size / 2), 0);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path;
    ps_data *d = open_ok(&o, 0, 1);
    ps_data_batch b;
    ps_error err = {0};
    ps_status st;
    while ((st = ps_data_next(d, 1000, &b, &err)) == PS_OK && b.B > 0) {
    }
    cr_assert_eq(st, PS_IO, "got %s", ps_status_str(st));
    cr_assert(strstr(err.msg, "truncated gzip") != NULL, "%s", err.msg);
    ps_data_destroy(d);
}

/* ---- sharding ---------------------------------------------------------------------------- */

/* Every row exactly once across ranks, each rank's rows in file order, and row_index matching
 * the row's content (feature 0's value = row number). Blank lines, comments and a bad line in
 * someone else's shard must not shift the numbering. */
Test(data, sharding_every_row_once) {
    enum { N = 100, W = 3 };
    char text[8192], *p = text, path[256];
    for (int i = 0; i < N; i++) {
        if (i % 7 == 0) p += sprintf(p, "\n# comment\n");
        p += sprintf(p, "%d 1:%d 5:1\n", i % 2, i);
    }
    write_file("s.svm", text, (size_t)(p - text), path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path;
    int seen[N] = {0};
    for (uint32_t rank = 0; rank < W; rank++) {
        ps_data *d = open_ok(&o, rank, W);
        rows r;
        collect(d, 4, &r);
        for (size_t i = 0; i < r.n; i++) {
            uint64_t idx = r.index[i];
            cr_assert_eq(idx % W, rank);
            if (i > 0) cr_assert_gt(idx, r.index[i - 1]);
            cr_assert_eq(r.vals[r.off[i]], (float)idx);
            seen[idx]++;
        }
        rows_free(&r);
        ps_data_destroy(d);
    }
    for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1, "row %d seen %d times", i, seen[i]);
}

Test(data, sharding_csv_with_header_and_bad_foreign_row) {
    char path[256];
    /* row 1 (line 3) is malformed; only rank 1 of 2 owns it */
    write_file("s.csv", "y,x\n1,0\n0,bad\n1,2\n0,3\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.path = path;
    ps_data *d = open_ok(&o, 0, 2);
    rows r;
    collect(d, 8, &r);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.index[0], 0);
    cr_assert_eq(r.index[1], 2);
    assert_row(&r, 1, 1, 1, U64S(0), FLTS(2));
    rows_free(&r);
    ps_data_destroy(d);
    d = open_ok(&o, 1, 2);
    ps_data_batch b;
    ps_error err = {0};
    cr_assert_eq(ps_data_next(d, 8, &b, &err), PS_DATA);
    char want[300];
    snprintf(want, sizeof(want), "%s:3: field 2: \"bad\" is not a number", path);
    cr_assert_str_eq(err.msg, want);
    ps_data_destroy(d);
}

/* A rank's rows are the same set in every epoch, with and without shuffle: rewinding must not
 * carry the row counter's phase over from the last epoch (10 rows, world 3: an epoch ends one row
 * past a multiple of 3) nor let the shuffle seed pick rows. Expected: {i : i % 3 == rank}. */
Test(data, sharding_is_fixed_across_epochs) {
    enum { N = 10, W = 3, EPOCHS = 3 };
    char csv[1024], svm[1024], *p, path_csv[256], path_hdr[256], path_svm[256];
    p = csv;
    for (int i = 0; i < N; i++) p += sprintf(p, "%s%d,%d\n", i == 4 ? "\n" : "", i % 2, i);
    write_file("e.csv", csv, (size_t)(p - csv), path_csv);
    char hdr[1100];
    snprintf(hdr, sizeof(hdr), "y,x\n%s", csv);
    write_file("h.csv", hdr, 0, path_hdr);
    p = svm;
    for (int i = 0; i < N; i++) p += sprintf(p, "%s%d 1:%d\n", i == 6 ? "# c\n" : "", i % 2, i);
    write_file("e.svm", svm, (size_t)(p - svm), path_svm);
    const struct {
        ps_data_format format;
        const char *path;
    } files[] = {{PS_DATA_CSV, path_csv}, {PS_DATA_CSV, path_hdr}, {PS_DATA_LIBSVM, path_svm}};
    const size_t buffers[] = {0, 2}; /* full shuffle, and a buffer smaller than the shard */
    for (size_t f = 0; f < 3; f++) {
        for (int shuffle = 0; shuffle <= 1; shuffle++) {
            for (size_t bi = 0; bi < (shuffle ? 2u : 1u); bi++) {
                ps_data_options o;
                ps_data_options_init(&o);
                o.format = files[f].format, o.path = files[f].path;
                o.shuffle = shuffle, o.shuffle_buffer = buffers[bi], o.seed = 17;
                for (uint32_t rank = 0; rank < W; rank++) {
                    ps_data *d = open_ok(&o, rank, W);
                    for (uint32_t epoch = 0; epoch < EPOCHS; epoch++) {
                        cr_assert_eq(ps_data_rewind(d, epoch, NULL), PS_OK);
                        rows r;
                        collect(d, 2, &r);
                        int seen[N] = {0};
                        for (size_t i = 0; i < r.n; i++) {
                            uint64_t idx = r.index[i];
                            cr_assert_lt(idx, N, "%s shuffle %d rank %u epoch %u: row %" PRIu64,
                                         files[f].path, shuffle, rank, epoch, idx);
                            cr_assert_eq(idx % W, rank,
                                         "%s shuffle %d buffer %zu rank %u epoch %u: got row %"
                                         PRIu64, files[f].path, shuffle, buffers[bi], rank,
                                         epoch, idx);
                            cr_assert_eq(r.vals[r.off[i]], (float)idx, "row content moved");
                            seen[idx]++;
                        }
                        for (uint64_t i = 0; i < N; i++)
                            cr_assert_eq(seen[i], i % W == rank ? 1 : 0,
                                         "%s shuffle %d buffer %zu rank %u epoch %u: row %" PRIu64
                                         " seen %d times",
                                         files[f].path, shuffle, buffers[bi], rank, epoch, i,
                                         seen[i]);
                        rows_free(&r);
                    }
                    ps_data_destroy(d);
                }
            }
        }
    }
}

/* ---- random ------------------------------------------------------------------------------ */

Test(data, random_shards_union_equals_single) {
    enum { N = 50, D = 4, W = 3 };
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_RANDOM, o.random_rows = N, o.random_cols = D, o.seed = 7;
    ps_data *d = open_ok(&o, 0, 1);
    cr_assert_eq(ps_data_num_features_hint(d), D);
    rows all;
    collect(d, 16, &all);
    ps_data_destroy(d);
    cr_assert_eq(all.n, N);
    int ones = 0;
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(all.index[i], i);
        cr_assert(all.label[i] == 0 || all.label[i] == 1);
        ones += all.label[i] == 1;
        cr_assert_eq(all.off[i + 1] - all.off[i], D);
        for (size_t k = 0; k < D; k++) {
            cr_assert_eq(all.ids[all.off[i] + k], k);
            float v = all.vals[all.off[i] + k];
            cr_assert(v >= 0 && v < 1, "value %g", v);
        }
    }
    cr_assert(ones > 10 && ones < 40, "labels look random: %d ones of %d", ones, N);
    int seen[N] = {0};
    for (uint32_t rank = 0; rank < W; rank++) {
        d = open_ok(&o, rank, W);
        rows r;
        collect(d, 5, &r);
        for (size_t i = 0; i < r.n; i++) {
            uint64_t idx = r.index[i];
            cr_assert_eq(idx % W, rank);
            seen[idx]++;
            cr_assert_eq(r.label[i], all.label[idx]);
            cr_assert_eq(memcmp(&r.vals[r.off[i]], &all.vals[all.off[idx]], D * sizeof(float)), 0,
                         "row %" PRIu64 " differs from the W=1 data", idx);
        }
        rows_free(&r);
        ps_data_destroy(d);
    }
    for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1);

    /* deterministic per seed; another seed gives other data; a rewind gives the same again */
    d = open_ok(&o, 0, 1);
    rows again;
    collect(d, 7, &again);
    cr_assert_eq(memcmp(again.vals, all.vals, N * D * sizeof(float)), 0);
    rows_free(&again);
    cr_assert_eq(ps_data_rewind(d, 1, NULL), PS_OK);
    collect(d, 7, &again);
    cr_assert_eq(memcmp(again.vals, all.vals, N * D * sizeof(float)), 0);
    rows_free(&again);
    ps_data_destroy(d);
    o.seed = 8;
    d = open_ok(&o, 0, 1);
    collect(d, 7, &again);
    cr_assert_neq(memcmp(again.vals, all.vals, N * D * sizeof(float)), 0);
    rows_free(&again);
    ps_data_destroy(d);
    rows_free(&all);
}

Test(data, random_bad_options) {
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_RANDOM, o.random_rows = 10;
    ps_data *d = (ps_data *)1;
    ps_error err = {0};
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    cr_assert_null(d);
    cr_assert_str_eq(err.msg, "random_cols 0 must be in [1, 16777216]");
    o.random_cols = 2;
    cr_assert_eq(ps_data_open(&o, 3, 3, &d, &err), PS_INVALID_ARG);
    cr_assert_str_eq(err.msg, "rank 3 out of range for world 3");
    o.random_rows = 2; /* more workers than rows: some shards are empty */
    d = open_ok(&o, 2, 3);
    rows r;
    collect(d, 4, &r);
    cr_assert_eq(r.n, 0);
    rows_free(&r);
    ps_data_destroy(d);
}

/* ---- shuffle ----------------------------------------------------------------------------- */

static void shuffled_indices(ps_data_options *o, uint32_t rank, uint32_t world, uint32_t epoch,
                             uint64_t *out, size_t *n) {
    ps_data *d = open_ok(o, rank, world);
    cr_assert_eq(ps_data_rewind(d, epoch, NULL), PS_OK);
    rows r;
    collect(d, 7, &r);
    for (size_t i = 0; i < r.n; i++) {
        out[i] = r.index[i];
        if (o->format == PS_DATA_LIBSVM) /* the row's content travels with it */
            cr_assert_eq(r.vals[r.off[i]], (float)r.index[i]);
    }
    *n = r.n;
    rows_free(&r);
    ps_data_destroy(d);
}

Test(data, shuffle_full_buffer_is_reproducible_permutation) {
    enum { N = 200 };
    char text[8192], *p = text, path[256];
    for (int i = 0; i < N; i++) p += sprintf(p, "1 1:%d\n", i);
    write_file("s.svm", text, (size_t)(p - text), path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.shuffle = true, o.seed = 3;
    uint64_t a[N], b[N], c[N];
    size_t na, nb, nc;
    shuffled_indices(&o, 0, 1, 0, a, &na);
    shuffled_indices(&o, 0, 1, 0, b, &nb);
    shuffled_indices(&o, 0, 1, 1, c, &nc);
    cr_assert_eq(na, N);
    cr_assert_eq(nb, N);
    cr_assert_eq(nc, N);
    cr_assert_eq(memcmp(a, b, sizeof(a)), 0, "same seed and epoch: same order");
    cr_assert_neq(memcmp(a, c, sizeof(a)), 0, "another epoch: another order");
    int seen[N] = {0}, moved = 0;
    for (int i = 0; i < N; i++) seen[a[i]]++, moved += a[i] != (uint64_t)i;
    for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1);
    cr_assert_gt(moved, N / 2);
    o.seed = 4;
    shuffled_indices(&o, 0, 1, 0, c, &nc);
    cr_assert_neq(memcmp(a, c, sizeof(a)), 0, "another seed: another order");
}

/* A shard smaller than the buffer comes in the documented order (data.h): rows sorted by
 * mix64(mix64(mix64(seed) + epoch) ^ mix64(i + golden)). The first rows are pinned from an
 * independent Python implementation of that formula; with 3 workers each rank's order is the
 * single worker's order restricted to its rows, so the job's order is the same for any W. */
Test(data, full_shuffle_is_one_permutation_of_seed_and_epoch_for_any_world) {
    enum { N = 300 };
    char text[16384], *p = text, path[256];
    for (int i = 0; i < N; i++) p += sprintf(p, "1 1:%d\n", i);
    write_file("o.svm", text, (size_t)(p - text), path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.shuffle = true, o.seed = 7;
    static const uint64_t first[2][10] = {{156, 177, 92, 124, 31, 204, 107, 83, 167, 267},
                                          {240, 162, 27, 61, 17, 106, 40, 238, 249, 274}};
    for (uint32_t epoch = 0; epoch < 2; epoch++) {
        uint64_t all[N], mine[N];
        size_t n_all, n_mine;
        shuffled_indices(&o, 0, 1, epoch, all, &n_all);
        cr_assert_eq(n_all, N);
        cr_assert_eq(memcmp(all, first[epoch], sizeof(first[epoch])), 0,
                     "epoch %u starts %llu %llu %llu", epoch, (unsigned long long)all[0],
                     (unsigned long long)all[1], (unsigned long long)all[2]);
        for (uint32_t rank = 0; rank < 3; rank++) {
            shuffled_indices(&o, rank, 3, epoch, mine, &n_mine);
            size_t k = 0;
            for (size_t i = 0; i < n_all; i++) {
                if (all[i] % 3 != rank) continue;
                cr_assert(k < n_mine && mine[k] == all[i], "epoch %u rank %u: row %zu is %llu, "
                          "the single worker's order has %llu", epoch, rank, k,
                          (unsigned long long)(k < n_mine ? mine[k] : 0),
                          (unsigned long long)all[i]);
                k++;
            }
            cr_assert_eq(k, n_mine);
        }
    }
}

/* A buffer of K rows: output k is one of the first k + K rows of the shard, and with sharding
 * the ranks still cover every row once. */
Test(data, shuffle_bounded_buffer_with_shards) {
    enum { N = 300, W = 2, K = 8 };
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_RANDOM, o.random_rows = N, o.random_cols = 1, o.seed = 9;
    o.shuffle = true, o.shuffle_buffer = K;
    int seen[N] = {0};
    for (uint32_t rank = 0; rank < W; rank++) {
        uint64_t idx[N];
        size_t n;
        shuffled_indices(&o, rank, W, 5, idx, &n);
        cr_assert_eq(n, N / W);
        int moved = 0;
        for (size_t k = 0; k < n; k++) {
            cr_assert_eq(idx[k] % W, rank);
            cr_assert_lt(idx[k] / W, k + K, "output %zu is shard row %" PRIu64, k, idx[k] / W);
            seen[idx[k]]++;
            moved += idx[k] / W != k;
        }
        cr_assert_gt(moved, (int)n / 2);
    }
    for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1);
}

/* ---- malformed lines --------------------------------------------------------------------- */

typedef struct {
    char name[32];
    ps_data_format format;
    char text[96];
    size_t len;          /* 0: strlen(text) */
    bool zero_based;
    size_t max_line;
    char want[112];      /* the message after "path:" */
} bad_case;

ParameterizedTestParameters(data, malformed) {
    static bad_case cases[] = {
        {"svm label", PS_DATA_LIBSVM, "1 3:0.5\nabc 1:2\n", 0, false, 0,
         "2: label \"abc\" is not a number"},
        {"svm label nan", PS_DATA_LIBSVM, "nan 1:2\n", 0, false, 0,
         "1: label \"nan\" is not finite"},
        {"svm label junk", PS_DATA_LIBSVM, "1x 1:2\n", 0, false, 0,
         "1: label \"1x\" is not a number"},
        {"svm no colon", PS_DATA_LIBSVM, "1 5x\n", 0, false, 0,
         "1: token \"5x\": feature id is not a non-negative integer"},
        {"svm bare id negative", PS_DATA_LIBSVM, "1 -5\n", 0, false, 0,
         "1: token \"-5\": feature id is negative"},
        {"svm bare id overflow", PS_DATA_LIBSVM, "1 18446744073709551616\n", 0, true, 0,
         "1: token \"18446744073709551616\": feature id overflows uint64 (max "
         "18446744073709551615)"},
        {"svm id text", PS_DATA_LIBSVM, "1 x:1\n", 0, false, 0,
         "1: token \"x:1\": feature id is not a non-negative integer"},
        {"svm id negative", PS_DATA_LIBSVM, "1 -3:1\n", 0, false, 0,
         "1: token \"-3:1\": feature id is negative"},
        {"svm id plus", PS_DATA_LIBSVM, "1 +3:1\n", 0, false, 0,
         "1: token \"+3:1\": feature id is not a non-negative integer"},
        {"svm id overflow", PS_DATA_LIBSVM, "1 18446744073709551616:1\n", 0, true, 0,
         "1: token \"18446744073709551616:1\": feature id overflows uint64 (max "
         "18446744073709551615)"},
        {"svm id 0 one-based", PS_DATA_LIBSVM, "1 2:1\n1 0:1\n", 0, false, 0,
         "2: token \"0:1\": feature id 0 but ids are 1-based"},
        {"svm value text", PS_DATA_LIBSVM, "1 3:abc\n", 0, false, 0,
         "1: token \"3:abc\": value is not a number"},
        {"svm value empty", PS_DATA_LIBSVM, "1 3: 4:1\n", 0, false, 0,
         "1: token \"3:\": value is not a number"},
        {"svm value suffix", PS_DATA_LIBSVM, "1 3:1.5x\n", 0, false, 0,
         "1: token \"3:1.5x\": value is not a number"},
        {"svm value nan", PS_DATA_LIBSVM, "1 3:nan\n", 0, false, 0,
         "1: token \"3:nan\": value is not finite"},
        {"svm value inf", PS_DATA_LIBSVM, "1 3:-inf\n", 0, false, 0,
         "1: token \"3:-inf\": value is not finite"},
        {"svm value overflow", PS_DATA_LIBSVM, "1 3:1e39\n", 0, false, 0,
         "1: token \"3:1e39\": value is not finite"},
        {"svm line numbers", PS_DATA_LIBSVM, "\r\n\n# c\n1 1:1\r\n1 2:x\r\n", 0, false, 0,
         "5: token \"2:x\": value is not a number"},
        {"svm no newline", PS_DATA_LIBSVM, "1 1:1\n1 2:", 0, false, 0,
         "2: token \"2:\": value is not a number"},
        {"svm NUL", PS_DATA_LIBSVM, "1 1:1\n1 2:1\0 3:1\n", 17, false, 0, "2: NUL byte in line"},
        {"svm too long", PS_DATA_LIBSVM, "1 1:1\n1 1:1 2:1 3:1 4:1 5:1\n1 1:1\n", 0, false, 16,
         "2: line longer than 16 bytes"},
        {"svm too long last", PS_DATA_LIBSVM, "1 1:1\n1 1:1 2:1 3:1 4:1 5:1", 0, false, 16,
         "2: line longer than 16 bytes"},
        {"csv fewer fields", PS_DATA_CSV, "1,2,3\n1,2\n", 0, false, 0,
         "2: 2 fields, expected 3 (as in line 1)"},
        {"csv more fields", PS_DATA_CSV, "\n1,2,3\n1,2,3,4\n", 0, false, 0,
         "3: 4 fields, expected 3 (as in line 2)"},
        {"csv vs header", PS_DATA_CSV, "y,a,b\n1,2\n", 0, false, 0,
         "2: 2 fields, expected 3 (as in line 1)"},
        {"csv text", PS_DATA_CSV, "1,2,3\n1, abc ,3\n", 0, false, 0,
         "2: field 2: \"abc\" is not a number"},
        {"csv empty field", PS_DATA_CSV, "1,2,3\n1,,3\n", 0, false, 0, "2: field 2: empty"},
        {"csv trailing comma", PS_DATA_CSV, "1,2,3\n1,2,\n", 0, false, 0, "2: field 3: empty"},
        {"csv nan", PS_DATA_CSV, "1,2,3\n1,nan,3\n", 0, false, 0,
         "2: field 2: \"nan\" is not finite"},
        {"csv inf after header", PS_DATA_CSV, "a,b\n1,inf\n", 0, false, 0,
         "2: field 2: \"inf\" is not finite"},
        {"csv two numbers", PS_DATA_CSV, "1,2\n1,2 3\n", 0, false, 0,
         "2: field 2: \"2 3\" is not a number"},
        {"csv crlf", PS_DATA_CSV, "1,2\r\n\r\n1,x\r\n", 0, false, 0,
         "3: field 2: \"x\" is not a number"},
        {"csv first line empty field", PS_DATA_CSV, "1,,2\n", 0, false, 0, "1: field 2: empty"},
        {"csv too long", PS_DATA_CSV, "1,2\n1,22222222222222222222\n", 0, false, 16,
         "2: line longer than 16 bytes"},
        {"csv first too long", PS_DATA_CSV, "1,22222222222222222222\n", 0, false, 16,
         "1: line longer than 16 bytes"},
    };
    return cr_make_param_array(bad_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(bad_case *c, data, malformed) {
    char path[256], want[512];
    write_file(c->format == PS_DATA_CSV ? "bad.csv" : "bad.svm", c->text, c->len, path);
    snprintf(want, sizeof(want), "%s:%s", path, c->want);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = c->format, o.path = path, o.one_based = !c->zero_based;
    o.max_line_bytes = c->max_line;
    ps_data *d = NULL;
    ps_error err = {0};
    ps_status st = ps_data_open(&o, 0, 1, &d, &err);
    if (st == PS_OK) {
        ps_data_batch b;
        while ((st = ps_data_next(d, 2, &b, &err)) == PS_OK && b.B > 0) {
        }
    }
    cr_assert_eq(st, PS_DATA, "%s: got %s (%s)", c->name, ps_status_str(st), err.msg);
    cr_assert_eq(err.code, PS_DATA);
    cr_assert_str_eq(err.msg, want, "%s", c->name);
    ps_data_destroy(d);
}

Test(data, error_is_sticky_until_rewind) {
    char path[256];
    write_file("e.svm", "1 1:1\n1 x\n1 2:2\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path;
    ps_data *d = open_ok(&o, 0, 1);
    ps_data_batch b;
    ps_error err = {0};
    cr_assert_eq(ps_data_next(d, 1, &b, &err), PS_OK);
    cr_assert_eq(b.B, 1);
    cr_assert_eq(ps_data_next(d, 1, &b, &err), PS_DATA);
    cr_assert_eq(b.B, 0);
    memset(&err, 0, sizeof(err));
    cr_assert_eq(ps_data_next(d, 1, &b, &err), PS_DATA);
    cr_assert(strstr(err.msg, ":2: token \"x\": feature id is not a non-negative integer") != NULL, "%s", err.msg);
    cr_assert_eq(ps_data_next(d, 1, &b, NULL), PS_DATA);
    cr_assert_eq(ps_data_rewind(d, 1, &err), PS_OK);
    cr_assert_eq(ps_data_next(d, 1, &b, &err), PS_OK);
    cr_assert_eq(b.B, 1);
    cr_assert_eq(ps_data_next(d, 0, &b, &err), PS_INVALID_ARG);
    cr_assert_str_eq(err.msg, "max_b 0 must be in [1, 16777216]");
    ps_data_destroy(d);
}

Test(data, skip_bad_lines_counts_and_reports) {
    char path[256];
    write_file("k.svm",
               "1 1:1\n"
               "1 x\n"           /* line 2 */
               "0 2:2\n"
               "1 3:nan\n"       /* line 4 */
               "1 1:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1\n" /* line 5: too long */
               "0 4:4",
               0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.skip_bad_lines = true, o.max_line_bytes = 20;
    ps_data *d = open_ok(&o, 0, 1);
    rows r;
    collect(d, 10, &r);
    cr_assert_eq(r.n, 3);
    cr_assert_eq(r.index[0], 0);
    cr_assert_eq(r.index[1], 2, "bad lines still take a row number");
    cr_assert_eq(r.index[2], 5);
    assert_row(&r, 2, 0, 1, U64S(3), FLTS(4));
    rows_free(&r);
    cr_assert_eq(ps_data_skipped(d), 3);
    char want[300];
    snprintf(want, sizeof(want), "%s:2: token \"x\": feature id is not a non-negative integer", path);
    cr_assert_str_eq(ps_data_skipped_message(d, 0), want);
    snprintf(want, sizeof(want), "%s:4: token \"3:nan\": value is not finite", path);
    cr_assert_str_eq(ps_data_skipped_message(d, 1), want);
    snprintf(want, sizeof(want), "%s:5: line longer than 20 bytes", path);
    cr_assert_str_eq(ps_data_skipped_message(d, 2), want);
    cr_assert_null(ps_data_skipped_message(d, 3));
    cr_assert_eq(ps_data_rewind(d, 1, NULL), PS_OK);
    cr_assert_eq(ps_data_skipped(d), 0, "counts are per epoch");
    ps_data_destroy(d);

    /* many bad lines: all counted, the first PS_DATA_SKIP_MESSAGES kept */
    char text[4096], *p = text;
    for (int i = 0; i < 30; i++) p += sprintf(p, "%s\n", i % 2 ? "1,?" : "1,2");
    write_file("k.csv", text, (size_t)(p - text), path);
    ps_data_options_init(&o);
    o.path = path, o.skip_bad_lines = true;
    d = open_ok(&o, 0, 1);
    collect(d, 4, &r);
    cr_assert_eq(r.n, 15);
    rows_free(&r);
    cr_assert_eq(ps_data_skipped(d), 15);
    cr_assert_not_null(ps_data_skipped_message(d, PS_DATA_SKIP_MESSAGES - 1));
    cr_assert_null(ps_data_skipped_message(d, PS_DATA_SKIP_MESSAGES));
    ps_data_destroy(d);
}

/* Lines longer than the read chunk grow the buffer; over the default 1 MiB they are errors. */
Test(data, long_lines) {
    size_t n = 1u << 21;
    char *text = malloc(n + 64), *p = text;
    p += sprintf(p, "1");
    for (int i = 1; p - text < 300000; i++) p += sprintf(p, " %d:1", i);
    size_t first = (size_t)(p - text);
    p += sprintf(p, "\n0 1:2\n1");
    while ((size_t)(p - text) < first + (1u << 20) + 16) *p++ = ' ';
    p += sprintf(p, "\n1 2:3\n");
    char path[256];
    write_file("long.svm", text, (size_t)(p - text), path);
    free(text);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path;
    ps_data *d = open_ok(&o, 0, 1);
    ps_data_batch b;
    ps_error err = {0};
    cr_assert_eq(ps_data_next(d, 2, &b, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(b.B, 2);
    cr_assert_gt(b.offsets[1], 30000);
    cr_assert_eq(b.vals[b.offsets[1]], 2);
    cr_assert_eq(ps_data_next(d, 2, &b, &err), PS_DATA);
    char want[300];
    snprintf(want, sizeof(want), "%s:3: line longer than 1048576 bytes", path);
    cr_assert_str_eq(err.msg, want);
    ps_data_destroy(d);
}

/* ---- options and open errors ------------------------------------------------------------- */

typedef struct {
    char name[32];
    char text[32];
    int label_column;
    char label_name[8];  /* "" = NULL */
    ps_status want_st;
    char want[128];      /* message after "path" (or the whole message if it starts with '!') */
} open_case;

ParameterizedTestParameters(data, open_errors) {
    static open_case cases[] = {
        {"label col too big", "1,2,3\n", 3, "", PS_CONFIG,
         "!label_column 3 out of range for 3 columns in %s (must be in [-3, 2])"},
        {"label col too small", "1,2,3\n", -4, "", PS_CONFIG,
         "!label_column -4 out of range for 3 columns in %s (must be in [-3, 2])"},
        {"name without header", "1,2,3\n", 0, "y", PS_CONFIG,
         ": label_name \"y\" needs a header line, but the first line is data"},
        {"name without lines", "\n", 0, "y", PS_CONFIG,
         ": label_name \"y\" needs a header line, but the first line is missing"},
        {"name not found", "a,b\n1,2\n", 0, "y", PS_CONFIG,
         ": label_name \"y\" is not in the header (line 1, 2 columns)"},
    };
    return cr_make_param_array(open_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(open_case *c, data, open_errors) {
    char path[256], want[512];
    write_file("o.csv", c->text, 0, path);
    if (c->want[0] == '!') { /* the path goes where "%s" is */
        const char *at = strstr(c->want, "%s");
        snprintf(want, sizeof(want), "%.*s%s%s", (int)(at - c->want - 1), c->want + 1, path,
                 at + 2);
    } else
        snprintf(want, sizeof(want), "%s%s", path, c->want);
    ps_data_options o;
    ps_data_options_init(&o);
    o.path = path, o.label_column = c->label_column;
    o.label_name = c->label_name[0] ? c->label_name : NULL;
    ps_data *d = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), c->want_st, "%s: %s", c->name, err.msg);
    cr_assert_null(d);
    cr_assert_str_eq(err.msg, want, "%s", c->name);
}

Test(data, open_missing_file_and_format_names) {
    char path[256];
    snprintf(path, sizeof(path), "%s/nope.svm", tmpdir);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path;
    ps_data *d = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_IO);
    char want[300];
    snprintf(want, sizeof(want), "open %s: No such file or directory", path);
    cr_assert_str_eq(err.msg, want);
    o.path = NULL;
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    cr_assert_str_eq(err.msg, "libsvm data needs a path");

    ps_data_format f;
    cr_assert_eq(ps_data_format_parse("csv", &f, NULL), PS_OK);
    cr_assert_eq(f, PS_DATA_CSV);
    cr_assert_eq(ps_data_format_parse("svmlight", &f, NULL), PS_OK);
    cr_assert_eq(f, PS_DATA_LIBSVM);
    cr_assert_eq(ps_data_format_parse("random", &f, NULL), PS_OK);
    cr_assert_eq(f, PS_DATA_RANDOM);
    cr_assert_str_eq(ps_data_format_name(PS_DATA_LIBSVM), "libsvm");
    cr_assert_eq(ps_data_format_parse("parquet", &f, &err), PS_CONFIG);
    cr_assert_str_eq(err.msg,
                     "data format \"parquet\" unknown (expected csv, libsvm, svmlight, random, "
                     "criteo, idx)");
    ps_data_destroy(NULL);
}
