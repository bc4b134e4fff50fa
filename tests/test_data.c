/* test_data.c - the worker's data readers: csv/libsvm/random parsing, gzip, sharding, shuffle,
 * malformed-line messages and skip_bad_lines. Files are written to a mkdtemp directory. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "data_cache.h"
#include "hash.h"

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

static void assert_rows_equal(const rows *a, const rows *b, const char *what) {
    cr_assert_eq(a->n, b->n, "%s: %zu rows, want %zu", what, a->n, b->n);
    cr_assert_eq(a->nf, b->nf, "%s: %zu features, want %zu", what, a->nf, b->nf);
    for (size_t i = 0; i < a->n; i++) {
        cr_assert_eq(a->index[i], b->index[i], "%s: row %zu index", what, i);
        cr_assert_eq(a->label[i], b->label[i], "%s: row %zu label", what, i);
        cr_assert_eq(a->off[i + 1], b->off[i + 1], "%s: row %zu offset", what, i);
    }
    if (a->nf > 0) {
        cr_assert_eq(memcmp(a->ids, b->ids, a->nf * sizeof(uint64_t)), 0, "%s: ids", what);
        cr_assert_eq(memcmp(a->vals, b->vals, a->nf * sizeof(float)), 0, "%s: vals", what);
    }
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

#define TABS12 "\t\t\t\t\t\t\t\t\t\t\t\t"
#define TABS26 TABS12 TABS12 "\t\t"
#define TABS36 TABS12 TABS12 TABS12
#define TABS38 TABS36 "\t\t"
#define TABS39 TABS38 "\t"

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
        {"svm value empty, a bare id after", PS_DATA_LIBSVM, "1 3: 4\n", 0, false, 0,
         "1: token \"3:\": value is not a number"},
        {"svm value hex", PS_DATA_LIBSVM, "1 3:0x10\n", 0, false, 0,
         "1: token \"3:0x10\": value is not a number"},
        {"svm label hex", PS_DATA_LIBSVM, "0x1 1:2\n", 0, false, 0,
         "1: label \"0x1\" is not a number"},
        {"csv hex", PS_DATA_CSV, "1,2\n1,-0X1p3\n", 0, false, 0,
         "2: field 2: \"-0X1p3\" is not a number"},
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
        {"criteo fields", PS_DATA_CRITEO, "1\t\t\n", 0, false, 0,
         "1: 3 tab-separated fields, expected 40 (label, I1..I13, C1..C26)"},
        {"criteo 41 fields", PS_DATA_CRITEO, "1" TABS39 "\ta\n", 0, false, 0,
         "1: 41 tab-separated fields, expected 40 (label, I1..I13, C1..C26)"},
        {"criteo label 2", PS_DATA_CRITEO, "\n\n2" TABS39 "\n", 0, false, 0,
         "3: label \"2\" must be 0 or 1"},
        {"criteo label empty", PS_DATA_CRITEO, "0" TABS39 "\n" TABS39 "\n", 0, false, 0,
         "2: label \"\" must be 0 or 1"},
        {"criteo label 1.0", PS_DATA_CRITEO, "1.0" TABS39 "\n", 0, false, 0,
         "1: label \"1.0\" must be 0 or 1"},
        {"criteo int text", PS_DATA_CRITEO, "1\t1x" TABS38 "\n", 0, false, 0,
         "1: I1: \"1x\" is not an integer"},
        {"criteo int minus", PS_DATA_CRITEO, "1\t\t\t-" TABS36 "\n", 0, false, 0,
         "1: I3: \"-\" is not an integer"},
        {"criteo int overflow", PS_DATA_CRITEO, "0" TABS12 "\t9223372036854775808" TABS26 "\n",
         0, false, 0, "1: I13: \"9223372036854775808\" overflows int64"},
        {"criteo int float", PS_DATA_CRITEO, "0\t2.5" TABS38 "\r\n", 0, false, 0,
         "1: I1: \"2.5\" is not an integer"},
        {"criteo NUL", PS_DATA_CRITEO, "0" TABS39 "\n0\t\0" TABS38 "\n", 83, false, 0,
         "2: NUL byte in line"},
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
    cr_assert(strstr(err.msg, ":2: token \"x\": feature id is not a non-negative integer") != NULL,
              "%s", err.msg);
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
    snprintf(want, sizeof(want), "%s:2: token \"x\": feature id is not a non-negative integer",
             path);
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

/* The skipped lines' messages of an epoch read from the parse-once form (memory or file) are
 * the first epoch's, cut to 255 characters; a long path makes them longer than that. */
Test(data, skipped_messages_come_back_from_the_cache) {
    char name[200], path[512], text[256], *p = text;
    memset(name, 'n', sizeof(name) - 5);
    memcpy(name + sizeof(name) - 5, ".svm", 5);
    for (int i = 0; i < 10; i++) p += sprintf(p, "1 bad:1\n1 %d:1\n", i + 1);
    write_file(name, text, (size_t)(p - text), path);
    for (size_t budget = 1; budget <= (1u << 20); budget <<= 20) { /* a file, then memory */
        ps_data_options o;
        ps_data_options_init(&o);
        o.format = PS_DATA_LIBSVM, o.path = path, o.skip_bad_lines = true;
        o.cache_bytes = budget;
        ps_data *d = open_ok(&o, 0, 1);
        char first[PS_DATA_SKIP_MESSAGES][600];
        for (uint32_t epoch = 0; epoch < 3; epoch++) {
            rows r;
            cr_assert_eq(ps_data_rewind(d, epoch, NULL), PS_OK);
            collect(d, 4, &r);
            cr_assert_eq(r.n, 10);
            rows_free(&r);
            cr_assert_eq(ps_data_skipped(d), 10, "epoch %u", epoch);
            for (size_t i = 0; i < PS_DATA_SKIP_MESSAGES; i++) {
                const char *m = ps_data_skipped_message(d, i);
                cr_assert_not_null(m);
                if (epoch == 0) {
                    cr_assert_gt(strlen(m), 255u, "a message longer than the cache keeps");
                    snprintf(first[i], sizeof(first[i]), "%.255s", m);
                } else {
                    cr_assert_str_eq(m, first[i], "budget %zu epoch %u message %zu", budget,
                                     epoch, i);
                }
            }
        }
        char file[700];
        snprintf(file, sizeof(file), "%s", ps_data_cache_file(d));
        ps_data_destroy(d);
        unlink(file); /* the next budget parses afresh */
    }
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
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_DATA);
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

/* ---- libsvm values ------------------------------------------------------------------------ */

Test(data, libsvm_id_without_value_is_one) {
    char path[256];
    write_file("v.svm", "1 3 7:0.5 18446744073709551615\n0 qid:4 2\t9:-2 \n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.one_based = false;
    rows r;
    read_all(&o, path, &r);
    cr_assert_eq(r.n, 2);
    assert_row(&r, 0, 1, 3, U64S(3, 7, UINT64_MAX), FLTS(1, 0.5f, 1));
    assert_row(&r, 1, 0, 2, U64S(2, 9), FLTS(1, -2));
    rows_free(&r);
    o.one_based = true; /* the largest id is the largest key + 1 */
    read_all(&o, path, &r);
    assert_row(&r, 0, 1, 3, U64S(2, 6, UINT64_MAX - 1), FLTS(1, 0.5f, 1));
    rows_free(&r);
}

/* ---- criteo ------------------------------------------------------------------------------- */

/* tests/ref/criteo_golden.txt: the keys tests/ref/criteo_keys.py (an independent Python
 * implementation of the rule in data.h) computed for tests/ref/criteo_sample.tsv. */
static void check_criteo_golden(const char *path, ps_data_integers mode) {
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_CRITEO, o.integers = mode;
    rows r;
    read_all(&o, path, &r);
    FILE *g = fopen(PS_SOURCE_DIR "/tests/ref/criteo_golden.txt", "r");
    cr_assert_not_null(g);
    const char *want_mode = mode == PS_DATA_INT_DENSE ? "dense" : "bucket";
    char line[8192], m[16];
    size_t checked = 0;
    while (fgets(line, sizeof(line), g) != NULL) {
        int row, label, at;
        cr_assert_eq(sscanf(line, "%15s %d %d%n", m, &row, &label, &at), 3);
        if (strcmp(m, want_mode) != 0) continue;
        cr_assert_lt((size_t)row, r.n);
        cr_assert_eq(r.label[row], (float)label, "%s row %d", m, row);
        size_t k = r.off[row];
        for (char *p = line + at, *e; *(p += strspn(p, " \n")) != '\0'; p = e, k++) {
            uint64_t key = strtoull(p, &e, 16);
            cr_assert_eq(*e, ':');
            float v = strtof(e + 1, &e);
            cr_assert_lt(k, r.off[row + 1], "%s row %d: fewer keys than the golden", m, row);
            cr_assert_eq(r.ids[k], key, "%s row %d key %zu: %016" PRIx64 ", want %016" PRIx64, m,
                         row, k - r.off[row], r.ids[k], key);
            cr_assert_eq(r.vals[k], v, "%s row %d key %zu: %.9g, want %.9g", m, row,
                         k - r.off[row], r.vals[k], v);
        }
        cr_assert_eq(k, r.off[row + 1], "%s row %d: more keys than the golden", m, row);
        checked++;
    }
    fclose(g);
    cr_assert_eq(checked, r.n);
    cr_assert_eq(checked, 7);
    rows_free(&r);
}

Test(data, criteo_keys_match_independent_reference) {
    const char *sample = PS_SOURCE_DIR "/tests/ref/criteo_sample.tsv";
    check_criteo_golden(sample, PS_DATA_INT_BUCKET);
    check_criteo_golden(sample, PS_DATA_INT_DENSE);
    /* the same rows with CRLF line ends, gzip-compressed */
    FILE *f = fopen(sample, "rb");
    cr_assert_not_null(f);
    char text[8192], crlf[8500], path[256];
    size_t n = fread(text, 1, sizeof(text), f), m = 0;
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '\n') crlf[m++] = '\r';
        crlf[m++] = text[i];
    }
    write_file("crlf.tsv.gz", crlf, m, path);
    check_criteo_golden(path, PS_DATA_INT_BUCKET);
    check_criteo_golden(path, PS_DATA_INT_DENSE);
}

/* One hand-made row: what each integer becomes, pinned without the golden file's help. */
Test(data, criteo_integer_buckets_by_hand) {
    char path[256];
    /* I1=-5 I2=2 I3=3 I4=20 I5=1000000, then C1=ab, the rest empty */
    write_file("h.tsv", "1\t-5\t2\t3\t20\t1000000\t\t\t\t\t\t\t\t\tab" TABS12 TABS12 "\t\n", 0,
               path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_CRITEO;
    rows bucket, dense;
    read_all(&o, path, &bucket);
    o.integers = PS_DATA_INT_DENSE;
    read_all(&o, path, &dense);
    cr_assert_eq(bucket.nf, 6);
    cr_assert_eq(dense.nf, 6);
    /* buckets: -5 -> "-5", 2 -> "2", 3 -> floor(1.0986^2) = 1, 20 -> floor(2.9957^2) = 8,
     * 1e6 -> floor(13.8155^2) = 190: each the key of its column and that decimal string */
    const char *dec[5] = {"-5", "2", "1", "8", "190"};
    for (uint32_t c = 1; c <= 5; c++) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (const char *p = dec[c - 1]; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
        uint64_t salt = ps_mix64(0x9e3779b97f4a7c15ull * c);
        cr_assert_eq(bucket.ids[c - 1], ps_mix64(h ^ salt), "I%u", c);
        cr_assert_eq(bucket.vals[c - 1], 1.0f);
        /* dense: the FNV-1a of no bytes is the offset basis; ln(1 + max(v, 0)) */
        cr_assert_eq(dense.ids[c - 1], ps_mix64(0xcbf29ce484222325ull ^ salt), "I%u", c);
    }
    cr_assert_eq(dense.vals[0], 0.0f);
    cr_assert_float_eq(dense.vals[1], 1.0986123f, 1e-6);
    cr_assert_float_eq(dense.vals[2], 1.3862944f, 1e-6);
    cr_assert_float_eq(dense.vals[3], 3.0445225f, 1e-6);
    cr_assert_float_eq(dense.vals[4], 13.815512f, 1e-5);
    cr_assert_eq(bucket.ids[5], dense.ids[5]); /* categoricals do not depend on the mode */
    rows_free(&bucket);
    rows_free(&dense);
}

Test(data, criteo_bad_integers_option) {
    char path[256];
    write_file("o.tsv", "1" TABS39 "\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_CRITEO, o.path = path, o.integers = (ps_data_integers)7;
    ps_data *d = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    cr_assert_null(d);
    cr_assert_str_eq(err.msg, "criteo integers mode 7 unknown (bucket or dense)");
    ps_data_format f;
    cr_assert_eq(ps_data_format_parse("criteo", &f, NULL), PS_OK);
    cr_assert_eq(f, PS_DATA_CRITEO);
    cr_assert_str_eq(ps_data_format_name(PS_DATA_CRITEO), "criteo");
}

Test(data, criteo_skip_bad_lines_and_sharding) {
    char path[256];
    write_file("s.tsv",
               "1" TABS39 "\n"
               "\n"
               "2" TABS39 "\n"
               "0\tab" TABS38 "\n"
               "0" TABS39 "\n",
               0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_CRITEO, o.path = path, o.skip_bad_lines = true;
    ps_data *d = open_ok(&o, 0, 1);
    rows r;
    collect(d, 8, &r);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.index[0], 0);
    cr_assert_eq(r.index[1], 3);
    cr_assert_eq(r.label[1], 0.0f);
    cr_assert_eq(ps_data_skipped(d), 2);
    char want[300];
    snprintf(want, sizeof(want), "%s:4: I1: \"ab\" is not an integer", path);
    cr_assert_str_eq(ps_data_skipped_message(d, 1), want);
    rows_free(&r);
    ps_data_destroy(d);
    d = open_ok(&o, 1, 2); /* rows 1 (malformed) and 3 */
    collect(d, 8, &r);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.index[0], 3);
    cr_assert_eq(ps_data_skipped(d), 1);
    snprintf(want, sizeof(want), "%s:3: label \"2\" must be 0 or 1", path);
    cr_assert_str_eq(ps_data_skipped_message(d, 0), want);
    rows_free(&r);
    ps_data_destroy(d);
}

/* ---- idx ---------------------------------------------------------------------------------- */

/* Writes an IDX file: magic, dims (big-endian), body; gz: gzip-compressed whatever the name. */
static void write_idx(const char *name, uint32_t magic, const uint32_t *dims, int ndims,
                      const uint8_t *body, size_t n, bool gz, char *path) {
    uint8_t buf[1024];
    size_t len = 0;
    uint32_t words[4] = {magic, dims[0], ndims > 1 ? dims[1] : 0, ndims > 2 ? dims[2] : 0};
    for (int w = 0; w < 1 + ndims; w++)
        for (int b = 3; b >= 0; b--) buf[len++] = (uint8_t)(words[w] >> (8 * b));
    cr_assert_leq(len + n, sizeof(buf));
    memcpy(buf + len, body, n);
    len += n;
    sprintf(path, "%s/%s", tmpdir, name);
    if (gz) {
        gzFile g = gzopen(path, "wb");
        cr_assert_not_null(g);
        cr_assert_eq(gzwrite(g, buf, (unsigned)len), (int)len);
        cr_assert_eq(gzclose(g), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(buf, 1, len, f), len);
        fclose(f);
    }
}

/* 5 images of 2 x 3 pixels; image i holds 51 * ((i + p) % 6) at pixel p, label 9 - i. */
static void write_mnist(bool gz_images, bool gz_labels, char *images, char *labels) {
    uint8_t px[5 * 6], lab[5];
    for (int i = 0; i < 5; i++) {
        for (int p = 0; p < 6; p++) px[i * 6 + p] = (uint8_t)(51 * ((i + p) % 6));
        lab[i] = (uint8_t)(9 - i);
    }
    write_idx("img-idx3-ubyte", 0x803, (const uint32_t[]){5, 2, 3}, 3, px, sizeof(px), gz_images,
              images);
    write_idx("lab-idx1-ubyte", 0x801, (const uint32_t[]){5}, 1, lab, sizeof(lab), gz_labels,
              labels);
}

/* pixel value 51 * k scaled by x/255: k/5, written out by hand */
static const float idx_level[6] = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};

static void assert_mnist_row(const rows *r, size_t at, int image) {
    cr_assert_eq(r->index[at], (uint64_t)image);
    float v[6];
    for (int p = 0; p < 6; p++) v[p] = idx_level[(image + p) % 6];
    assert_row(r, at, (float)(9 - image), 6, U64S(0, 1, 2, 3, 4, 5), v);
}

/* The five images of write_mnist, read whole (world 1) through o as pairs. */
static void assert_mnist_pairs(const ps_data_options *o) {
    ps_data *d = open_ok(o, 0, 1);
    cr_assert_eq(ps_data_num_features_hint(d), 6);
    rows r;
    collect(d, 2, &r);
    cr_assert_eq(r.n, 5);
    for (int i = 0; i < 5; i++) assert_mnist_row(&r, (size_t)i, i);
    rows_free(&r);
    ps_data_destroy(d);
}

Test(data, idx_plain_and_gzip_by_magic) {
    for (int form = 0; form < 4; form++) { /* images and labels each plain or gzip */
        char images[256], labels[256];
        write_mnist(form & 1, form & 2, images, labels);
        ps_data_options o;
        ps_data_options_init(&o);
        o.format = PS_DATA_IDX, o.labels = labels;
        o.path = images;
        assert_mnist_pairs(&o);
        ps_data *d = open_ok(&o, 1, 2); /* the shard of rank 1 of 2: images 1 and 3 */
        rows r;
        collect(d, 4, &r);
        cr_assert_eq(r.n, 2);
        assert_mnist_row(&r, 0, 1);
        assert_mnist_row(&r, 1, 3);
        rows_free(&r);
        ps_data_destroy(d);
    }
}

/* A shuffled idx reader holds only row numbers in its buffer and reads each row when it is
 * emitted. Its order must be the one every format has: the full-shuffle order pinned from the
 * Python implementation (see full_shuffle_is_one_permutation_of_seed_and_epoch_for_any_world),
 * and, through a buffer smaller than the shard, the order a libsvm file of the same rows takes;
 * each row keeps its own pixels and label. 300 images of 2 pixels, i % 256 and i / 256;
 * label i % 10. */
Test(data, idx_shuffle_reads_rows_in_the_common_order) {
    enum { N = 300 };
    uint8_t px[2 * N], lab[N];
    char text[16384], *p = text, images[256], labels[256], svm[256];
    for (int i = 0; i < N; i++) {
        px[2 * i] = (uint8_t)(i % 256), px[2 * i + 1] = (uint8_t)(i / 256);
        lab[i] = (uint8_t)(i % 10);
        p += sprintf(p, "1 1:%d\n", i);
    }
    write_idx("shuf-images", 0x803, (const uint32_t[]){N, 1, 2}, 3, px, sizeof(px), false, images);
    write_idx("shuf-labels", 0x801, (const uint32_t[]){N}, 1, lab, sizeof(lab), true, labels);
    write_file("shuf.svm", text, (size_t)(p - text), svm);
    ps_data_options o, t;
    ps_data_options_init(&o);
    o.format = PS_DATA_IDX, o.path = images, o.labels = labels, o.shuffle = true, o.seed = 7;
    static const uint64_t first[2][10] = {{156, 177, 92, 124, 31, 204, 107, 83, 167, 267},
                                          {240, 162, 27, 61, 17, 106, 40, 238, 249, 274}};
    for (uint32_t epoch = 0; epoch < 2; epoch++) {
        ps_data *d = open_ok(&o, 0, 1);
        cr_assert_eq(ps_data_rewind(d, epoch, NULL), PS_OK);
        rows r;
        collect(d, 7, &r);
        cr_assert_eq(r.n, N);
        cr_assert_eq(memcmp(r.index, first[epoch], sizeof(first[epoch])), 0,
                     "epoch %u starts %llu %llu %llu", epoch, (unsigned long long)r.index[0],
                     (unsigned long long)r.index[1], (unsigned long long)r.index[2]);
        rows_free(&r);
        ps_data_destroy(d);
    }
    o.shuffle_buffer = 16; /* smaller than every shard: the bounded buffer's random draws */
    t = o, t.format = PS_DATA_LIBSVM, t.path = svm, t.labels = NULL;
    for (uint32_t rank = 0; rank < 3; rank++) {
        rows r, want;
        ps_data *d = open_ok(&o, rank, 3), *e = open_ok(&t, rank, 3);
        cr_assert_eq(ps_data_rewind(d, 1, NULL), PS_OK);
        cr_assert_eq(ps_data_rewind(e, 1, NULL), PS_OK);
        collect(d, 5, &r);
        collect(e, 5, &want);
        cr_assert_eq(r.n, N / 3);
        cr_assert_eq(want.n, N / 3);
        size_t moved = 0;
        for (size_t i = 0; i < r.n; i++) {
            const uint64_t k = r.index[i];
            cr_assert_eq(k, want.index[i], "rank %u row %zu: %llu, libsvm's order has %llu", rank,
                         i, (unsigned long long)k, (unsigned long long)want.index[i]);
            cr_assert_eq(r.off[i + 1] - r.off[i], 2);
            cr_assert_eq(r.vals[r.off[i]], (float)(k % 256) / 255.0f, "row %llu's pixels",
                         (unsigned long long)k);
            cr_assert_eq(r.vals[r.off[i] + 1], (float)(k / 256) / 255.0f);
            cr_assert_eq(r.label[i], (float)(k % 10));
            moved += i > 0 && k < r.index[i - 1];
        }
        cr_assert_gt(moved, 0, "rank %u: rows in file order, not shuffled", rank);
        rows_free(&r), rows_free(&want);
        ps_data_destroy(d), ps_data_destroy(e);
    }
}

/* Reads the rest of the epoch as collect does, from a reader opened with dense_dim = D: every
 * batch must come as a (B, D) matrix and no pairs; its rows are written out as the pairs
 * (p, x_p), p = 0..D-1, which is what the same reader without dense_dim gives. */
static void collect_dense(ps_data *d, size_t max_b, size_t D, rows *r) {
    memset(r, 0, sizeof(*r));
    r->off = calloc(1, sizeof(size_t));
    for (;;) {
        ps_data_batch b;
        ps_error err = {0};
        cr_assert_eq(ps_data_next(d, max_b, &b, &err), PS_OK, "ps_data_next: %s", err.msg);
        if (b.B == 0) break;
        cr_assert_not_null(b.x, "a dense reader gave pairs");
        cr_assert_eq(b.x_cols, D);
        cr_assert_eq(b.offsets[b.B], 0, "a dense batch with %zu pairs", b.offsets[b.B]);
        r->index = realloc(r->index, (r->n + b.B) * sizeof(uint64_t));
        r->label = realloc(r->label, (r->n + b.B) * sizeof(float));
        r->off = realloc(r->off, (r->n + b.B + 1) * sizeof(size_t));
        r->ids = realloc(r->ids, (r->nf + b.B * D) * sizeof(uint64_t));
        r->vals = realloc(r->vals, (r->nf + b.B * D) * sizeof(float));
        for (size_t i = 0; i < b.B; i++) {
            r->index[r->n + i] = b.row_index[i];
            r->label[r->n + i] = b.labels[i];
            for (size_t p = 0; p < D; p++) r->ids[r->nf + i * D + p] = p;
            memcpy(r->vals + r->nf + i * D, b.x + i * D, D * sizeof(float));
            r->off[r->n + i + 1] = r->nf + (i + 1) * D;
        }
        r->n += b.B, r->nf += b.B * D;
    }
}

/* A dense model reads idx and random rows as one matrix per batch (dense_dim): the same rows,
 * order, labels and values, bit for bit, as the pairs, for every shard, shuffled or not,
 * through a bounded shuffle buffer, with batches that do not divide the shard, and after a
 * rewind to bigger batches. A width other than the rows' gives pairs, as do text formats. */
Test(data, dense_batches_equal_the_pairs) {
    char images[256], labels[256];
    write_mnist(false, true, images, labels);
    ps_data_options o[2];
    ps_data_options_init(&o[0]);
    o[0].format = PS_DATA_IDX, o[0].path = images, o[0].labels = labels;
    ps_data_options_init(&o[1]);
    o[1].format = PS_DATA_RANDOM, o[1].random_rows = 40, o[1].random_cols = 3, o[1].seed = 5;
    const size_t D[2] = {6, 3};
    for (int f = 0; f < 2; f++)
        for (int shuffle = 0; shuffle < 3; shuffle++)
            for (uint32_t world = 1; world <= 2; world++)
                for (uint32_t rank = 0; rank < world; rank++) {
                    ps_data_options pairs = o[f], dense = o[f];
                    pairs.shuffle = dense.shuffle = shuffle > 0, pairs.seed = dense.seed = 9;
                    pairs.shuffle_buffer = dense.shuffle_buffer = shuffle == 2 ? 4 : 0;
                    dense.dense_dim = (uint32_t)D[f];
                    ps_data *a = open_ok(&pairs, rank, world), *b = open_ok(&dense, rank, world);
                    for (uint32_t epoch = 0; epoch < 2; epoch++) {
                        cr_assert_eq(ps_data_rewind(a, epoch, NULL), PS_OK);
                        cr_assert_eq(ps_data_rewind(b, epoch, NULL), PS_OK);
                        rows want, got;
                        const size_t mb = epoch == 0 ? 2 : 7; /* the matrix grows */
                        collect(a, mb, &want);
                        collect_dense(b, mb, D[f], &got);
                        char what[96];
                        snprintf(what, sizeof(what), "%s shuffle %d rank %u/%u epoch %u",
                                 f ? "random" : "idx", shuffle, rank, world, epoch);
                        cr_assert_gt(want.n, 0, "%s: no rows", what);
                        assert_rows_equal(&got, &want, what);
                        rows_free(&want), rows_free(&got);
                    }
                    ps_data_destroy(a), ps_data_destroy(b);
                }
    /* a width the rows do not have, and a text format: pairs */
    ps_data_options w = o[0];
    w.dense_dim = 5;
    assert_mnist_pairs(&w);
    char csv[256];
    write_file("dense.csv", "1,0.5,2\n0,3,4\n", 14, csv);
    ps_data_options t;
    ps_data_options_init(&t);
    t.path = csv, t.dense_dim = 2;
    ps_data *d = open_ok(&t, 0, 1);
    ps_data_batch b;
    cr_assert_eq(ps_data_next(d, 8, &b, NULL), PS_OK);
    cr_assert_eq(b.B, 2);
    cr_assert_null(b.x);
    cr_assert_eq(b.x_cols, 0);
    cr_assert_eq(b.offsets[2], 4);
    ps_data_destroy(d);
}

typedef enum { IDX_OK, IDX_BAD_IMAGES_MAGIC, IDX_SWAPPED, IDX_N_MISMATCH, IDX_SHORT_IMAGES,
               IDX_LONG_LABELS, IDX_SHORT_HEADER, IDX_NO_PIXELS, IDX_SHORT_GZIP,
               IDX_BAD_LABELS_MAGIC, IDX_CORRUPT_GZIP, IDX_NO_TRAILER } idx_fault;

/* Opens an idx reader over files with one fault; returns the status, message in err. */
static ps_status open_idx_fault(idx_fault fault, char *images, char *labels, ps_error *err) {
    uint8_t px[5 * 6] = {0}, lab[6] = {0};
    uint32_t img_dims[3] = {5, 2, 3}, lab_dims[1] = {5};
    size_t img_n = sizeof(px), lab_n = 5;
    uint32_t img_magic = 0x803;
    if (fault == IDX_BAD_IMAGES_MAGIC) img_magic = 0x0c03;
    if (fault == IDX_N_MISMATCH) lab_dims[0] = 4, lab_n = 4;
    if (fault == IDX_SHORT_IMAGES) img_n -= 7; /* ends inside image 4 */
    if (fault == IDX_LONG_LABELS) lab_n = 6;
    if (fault == IDX_NO_PIXELS) img_dims[1] = 0;
    write_idx("i", img_magic, img_dims, 3, px, img_n,
              fault == IDX_SHORT_GZIP || fault == IDX_NO_TRAILER, images);
    write_idx("l", fault == IDX_BAD_LABELS_MAGIC ? 0x803 : 0x801, lab_dims, 1, lab, lab_n,
              fault == IDX_CORRUPT_GZIP, labels);
    if (fault == IDX_CORRUPT_GZIP) { /* flip a byte of the deflate stream: a data error */
        FILE *f = fopen(labels, "r+b");
        cr_assert_not_null(f);
        cr_assert_eq(fseek(f, 12, SEEK_SET), 0);
        int ch = fgetc(f);
        cr_assert_eq(fseek(f, 12, SEEK_SET), 0);
        fputc(ch ^ 0x55, f);
        fclose(f);
    }
    if (fault == IDX_SHORT_HEADER) write_file("i", "\0\0\x08\x03\0\0\0\x05\0\0", 10, images);
    if (fault == IDX_SHORT_GZIP) { /* cut the gzip stream short */
        FILE *f = fopen(images, "r+b");
        cr_assert_not_null(f);
        cr_assert_eq(fseek(f, 0, SEEK_END), 0);
        long sz = ftell(f);
        fclose(f);
        cr_assert_eq(truncate(images, sz - 12), 0);
    }
    if (fault == IDX_NO_TRAILER) { /* every pixel there, the gzip crc and size cut off */
        struct stat stt;
        cr_assert_eq(stat(images, &stt), 0);
        cr_assert_eq(truncate(images, stt.st_size - 8), 0);
    }
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_IDX;
    o.path = fault == IDX_SWAPPED ? labels : images;
    o.labels = fault == IDX_SWAPPED ? images : labels;
    ps_data *d = NULL;
    ps_status st = ps_data_open(&o, 0, 1, &d, err);
    if (st != PS_OK) cr_assert_null(d);
    ps_data_destroy(d);
    return st;
}

Test(data, idx_errors_name_the_file) {
    char images[256], labels[256], want[600];
    ps_error err = {0};
    cr_assert_eq(open_idx_fault(IDX_OK, images, labels, &err), PS_OK, "%s", err.msg);

    cr_assert_eq(open_idx_fault(IDX_BAD_IMAGES_MAGIC, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want), "%s: magic 0x00000c03 is not an IDX images file's 0x00000803",
             images);
    cr_assert_str_eq(err.msg, want);

    cr_assert_eq(open_idx_fault(IDX_SWAPPED, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want),
             "%s: magic 0x00000801 is not an IDX images file's 0x00000803 (the images and "
             "labels files swapped?)",
             labels);
    cr_assert_str_eq(err.msg, want);

    cr_assert_eq(open_idx_fault(IDX_N_MISMATCH, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want), "%s has 5 images but %s has 4 labels", images, labels);
    cr_assert_str_eq(err.msg, want);

    cr_assert_eq(open_idx_fault(IDX_SHORT_IMAGES, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want),
             "%s: truncated: ends in image 4 of the 5 its header declares", images);
    cr_assert_str_eq(err.msg, want);

    cr_assert_eq(open_idx_fault(IDX_LONG_LABELS, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want), "%s: bytes after the 5 labels its header declares", labels);
    cr_assert_str_eq(err.msg, want);

    cr_assert_eq(open_idx_fault(IDX_SHORT_HEADER, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want),
             "%s: truncated: 10 bytes, shorter than the 16-byte IDX images header", images);
    cr_assert_str_eq(err.msg, want);

    cr_assert_eq(open_idx_fault(IDX_NO_PIXELS, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want), "%s: images of 0 x 3 pixels (must be 1 to 16777216 pixels)",
             images);
    cr_assert_str_eq(err.msg, want);

    cr_assert_eq(open_idx_fault(IDX_BAD_LABELS_MAGIC, images, labels, &err), PS_DATA);
    snprintf(want, sizeof(want), "%s: magic 0x00000803 is not an IDX labels file's 0x00000801 "
             "(the images and labels files swapped?)", labels);
    cr_assert_str_eq(err.msg, want);

    ps_status st = open_idx_fault(IDX_CORRUPT_GZIP, images, labels, &err);
    cr_assert(st == PS_IO || st == PS_DATA, "%s: %s", ps_status_str(st), err.msg);
    cr_assert(strstr(err.msg, labels) != NULL, "%s", err.msg);

    st = open_idx_fault(IDX_NO_TRAILER, images, labels, &err);
    cr_assert_eq(st, PS_IO, "a gzip file without its trailer: %s", ps_status_str(st));
    cr_assert(strstr(err.msg, images) != NULL, "%s", err.msg);

    st = open_idx_fault(IDX_SHORT_GZIP, images, labels, &err);
    cr_assert(st == PS_DATA || st == PS_IO, "%s", ps_status_str(st));
    cr_assert(strncmp(err.msg, images, strlen(images)) == 0 ||
                  strstr(err.msg, images) != NULL,
              "%s", err.msg);

    write_mnist(false, false, images, labels);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_IDX, o.path = images;
    ps_data *d = NULL;
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    cr_assert_str_eq(err.msg, "idx data needs a labels file (path is the images)");
    snprintf(want, sizeof(want), "%s/none", tmpdir);
    o.labels = want;
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_DATA);
    cr_assert(strstr(err.msg, "none: No such file or directory") != NULL, "%s", err.msg);
}

/* ---- validation_split --------------------------------------------------------------------- */

/* Row indices of one reader's epoch. */
static size_t split_rows(ps_data_options *o, bool holdout, uint32_t rank, uint32_t world,
                         uint64_t *out) {
    o->holdout = holdout;
    ps_data *d = open_ok(o, rank, world);
    rows r;
    collect(d, 3, &r);
    for (size_t i = 0; i < r.n; i++) out[i] = r.index[i];
    size_t n = r.n;
    rows_free(&r);
    ps_data_destroy(d);
    return n;
}

/* Keras: split_at = int(n * (1 - f)), rows [split_at, n) held out. 10 rows: f 0.25 -> 7;
 * f 0.8 -> int(10 * 0.19999999999999996) = 1 (not 2). */
Test(data, validation_split_as_keras_for_each_format) {
    char svm[256], csv[256], tsv[256], images[256], labels[256];
    char text[2048], *p = text;
    p += sprintf(p, "# ten rows, comments and blank lines between\n\n");
    for (int i = 0; i < 10; i++) p += sprintf(p, "1 1:%d\n%s", i, i % 3 == 0 ? "# c\n\n" : "");
    write_file("s.svm", text, 0, svm);
    p = text + sprintf(text, "y,x\n");
    for (int i = 0; i < 10; i++) p += sprintf(p, "1,%d\n", i);
    write_file("s.csv", text, 0, csv);
    p = text;
    for (int i = 0; i < 10; i++) p += sprintf(p, "%d" TABS39 "\n%s", i % 2, i == 4 ? "\n" : "");
    write_file("s.tsv", text, 0, tsv);
    write_mnist(true, false, images, labels);

    struct {
        ps_data_format format;
        const char *path;
        uint64_t n;
    } src[] = {{PS_DATA_LIBSVM, svm, 10}, {PS_DATA_CSV, csv, 10}, {PS_DATA_CRITEO, tsv, 10},
               {PS_DATA_RANDOM, NULL, 10}, {PS_DATA_IDX, images, 5}};
    struct {
        double f;
        uint64_t at10, at5; /* split_at for 10 and 5 rows, by hand */
    } splits[] = {{0.25, 7, 3}, {0.8, 1, 0}, {0.5, 5, 2}};
    for (size_t s = 0; s < sizeof(src) / sizeof(src[0]); s++) {
        for (size_t k = 0; k < sizeof(splits) / sizeof(splits[0]); k++) {
            ps_data_options o;
            ps_data_options_init(&o);
            o.format = src[s].format, o.path = src[s].path, o.labels = labels;
            o.label_name = src[s].format == PS_DATA_CSV ? "y" : NULL;
            o.random_rows = 10, o.random_cols = 1;
            o.validation_split = splits[k].f;
            const uint64_t n = src[s].n, at = n == 10 ? splits[k].at10 : splits[k].at5;
            uint64_t got[16];
            for (uint32_t world = 1; world <= 2; world++) {
                for (uint32_t rank = 0; rank < world; rank++) {
                    size_t m = split_rows(&o, false, rank, world, got);
                    size_t want = 0;
                    for (uint64_t i = rank; i < at; i += world, want++)
                        cr_assert_eq(got[want], i, "%s f %g train", src[s].path, splits[k].f);
                    cr_assert_eq(m, want, "%s f %g world %u: %zu train rows",
                                 ps_data_format_name(src[s].format), splits[k].f, world, m);
                    m = split_rows(&o, true, rank, world, got);
                    want = 0;
                    for (uint64_t i = at; i < n; i++)
                        if (i % world == rank) cr_assert_eq(got[want++], i);
                    cr_assert_eq(m, want, "%s f %g world %u: %zu held-out rows",
                                 ps_data_format_name(src[s].format), splits[k].f, world, m);
                }
            }
        }
    }
}

/* The split is taken before shuffling: a shuffled training part holds the same rows. */
Test(data, validation_split_then_shuffle) {
    char svm[256], text[4096], *p = text;
    for (int i = 0; i < 40; i++) p += sprintf(p, "1 1:%d\n", i);
    write_file("s.svm", text, 0, svm);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = svm, o.validation_split = 0.25, o.shuffle = true;
    o.seed = 5;
    ps_data *d = open_ok(&o, 0, 1);
    rows r;
    collect(d, 7, &r);
    cr_assert_eq(r.n, 30);
    int seen[30] = {0}, moved = 0;
    for (size_t i = 0; i < r.n; i++) {
        cr_assert_lt(r.index[i], 30);
        cr_assert_eq(r.vals[r.off[i]], (float)r.index[i]);
        seen[r.index[i]]++;
        moved += r.index[i] != i;
    }
    for (int i = 0; i < 30; i++) cr_assert_eq(seen[i], 1);
    cr_assert_gt(moved, 0);
    rows_free(&r);
    ps_data_destroy(d);
}

/* The counting pass reports what the reader would: a gzip file cut short fails the open. */
Test(data, validation_split_count_pass_errors) {
    char path[256], text[8192], *p = text;
    for (int i = 0; i < 300; i++) p += sprintf(p, "1 1:%d 2:%d\n", i, i * 7);
    write_file("t.svm.gz", text, 0, path);
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long sz = ftell(f);
    fclose(f);
    cr_assert_eq(truncate(path, sz / 2), 0);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.validation_split = 0.5;
    ps_data *d = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_IO);
    cr_assert_null(d);
    char want[300];
    snprintf(want, sizeof(want), "read %s: truncated gzip file", path);
    cr_assert(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
}

Test(data, validation_split_bad_options) {
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_RANDOM, o.random_rows = 10, o.random_cols = 1;
    ps_data *d = NULL;
    ps_error err = {0};
    o.validation_split = 1.0;
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    cr_assert_str_eq(err.msg, "validation_split 1 must be in [0, 1)");
    o.validation_split = -0.5;
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    cr_assert_str_eq(err.msg, "validation_split -0.5 must be in [0, 1)");
    o.validation_split = NAN;
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    o.validation_split = 0, o.holdout = true;
    cr_assert_eq(ps_data_open(&o, 0, 1, &d, &err), PS_CONFIG);
    cr_assert_str_eq(err.msg, "holdout needs a validation_split above 0");
    cr_assert_null(d);
}

/* ---- parse once: the cache ---------------------------------------------------------------- */

/* Text files of each format: 61 rows with blank/comment lines, rows of no features (libsvm),
 * empty fields (criteo) and, with bad, one malformed row (for skip_bad_lines). */
static void write_cache_sources(bool bad, bool gz, char *csv, char *svm, char *tsv) {
    size_t cap = 1 << 16;
    char *c = malloc(cap), *s = malloc(cap), *t = malloc(cap);
    char *pc = c, *ps = s, *pt = t;
    pc += sprintf(pc, "y,a,b,c\n");
    ps += sprintf(ps, "# rows\n");
    for (int i = 0; i < 61; i++) {
        if (i % 9 == 4) pc += sprintf(pc, "\n"), ps += sprintf(ps, "\n"), pt += sprintf(pt, "\n");
        if (bad && i == 17) {
            pc += sprintf(pc, "1,x,2,3\n"), ps += sprintf(ps, "1 3:z\n");
            pt += sprintf(pt, "0\tnot-an-int" TABS38 "\n");
            continue;
        }
        pc += sprintf(pc, "%d,%d.%d,%d,-%d.25\n", i % 2, i, i % 7, i * 3, i);
        ps += sprintf(ps, "%s", i % 2 ? "1" : "-1");
        for (int k = 0; k < i % 5; k++) ps += sprintf(ps, " %d:%d.5", 1 + k * 7 + i, k);
        ps += sprintf(ps, "\n");
        pt += sprintf(pt, "%d", i % 2);
        for (int k = 1; k <= 39; k++)
            pt += (k + i) % 4 == 0 ? sprintf(pt, "\t") : k <= 13 ? sprintf(pt, "\t%d", i * k - 5)
                                                                  : sprintf(pt, "\t%x", i * 31 + k);
        pt += sprintf(pt, "\n");
    }
    write_file(gz ? "c.csv.gz" : "c.csv", c, 0, csv);
    write_file(gz ? "s.svm.gz" : "s.svm", s, 0, svm);
    write_file(gz ? "t.tsv.gz" : "t.tsv", t, 0, tsv);
    free(c), free(s), free(t);
}

/* Three epochs of streamed and cached (in memory, and in a file) readers give the same batches,
 * for each text format, plain and gzip, shuffled fully, through a small buffer, or not at all,
 * sharded, with validation_split's two parts, and with skip_bad_lines. */
Test(data, cache_gives_the_streamed_rows_every_epoch) {
    char csv[256], svm[256], tsv[256];
    for (int variant = 0; variant < 4; variant++) {
        bool gz = variant & 1, bad = variant & 2;
        write_cache_sources(bad, gz, csv, svm, tsv);
        const char *paths[] = {csv, svm, tsv};
        const ps_data_format fmts[] = {PS_DATA_CSV, PS_DATA_LIBSVM, PS_DATA_CRITEO};
        for (int f = 0; f < 3; f++)
            for (int mode = 0; mode < 5; mode++) {
                ps_data_options o;
                ps_data_options_init(&o);
                o.format = fmts[f], o.path = paths[f], o.seed = 7, o.skip_bad_lines = bad;
                o.shuffle = mode != 0;
                o.shuffle_buffer = mode == 2 ? 5 : 0;
                uint32_t world = mode >= 3 ? 2 : 1, rank = mode == 4 ? 1 : 0;
                if (mode >= 3) o.validation_split = 0.3, o.holdout = mode == 4;
                ps_data *d[3];
                d[0] = open_ok(&o, rank, world);
                o.cache_bytes = 1 << 20;
                d[1] = open_ok(&o, rank, world);
                o.cache_bytes = 1; /* past the budget at once: a cache file */
                d[2] = open_ok(&o, rank, world);
                for (uint32_t epoch = 0; epoch < 3; epoch++) {
                    rows r[3];
                    for (int k = 0; k < 3; k++) {
                        cr_assert_eq(ps_data_rewind(d[k], epoch, NULL), PS_OK);
                        cr_assert_eq(ps_data_source_of(d[k]),
                                     k == 0 || epoch == 0 ? PS_DATA_STREAM
                                     : k == 1             ? PS_DATA_CACHE_MEMORY
                                                          : PS_DATA_CACHE_FILE,
                                     "variant %d format %d mode %d reader %d epoch %u", variant,
                                     f, mode, k, epoch);
                        collect(d[k], 4, &r[k]);
                    }
                    cr_assert_gt(r[0].n, 5);
                    char what[96];
                    for (int k = 1; k < 3; k++) {
                        snprintf(what, sizeof(what), "variant %d format %d mode %d reader %d "
                                 "epoch %u", variant, f, mode, k, epoch);
                        assert_rows_equal(&r[k], &r[0], what);
                        cr_assert_eq(ps_data_skipped(d[k]), ps_data_skipped(d[0]), "%s", what);
                        if (ps_data_skipped(d[0]) > 0)
                            cr_assert_str_eq(ps_data_skipped_message(d[k], 0),
                                             ps_data_skipped_message(d[0], 0), "%s", what);
                    }
                    if (bad && mode < 3) /* row 17: rank 1 of 2 when sharded */
                        cr_assert_eq(ps_data_skipped(d[0]), 1);
                    for (int k = 0; k < 3; k++) rows_free(&r[k]);
                }
                /* the next mode differs in options the cache leaves out (shuffle): it would
                   find this file and read from it from epoch 0 */
                cr_assert_eq(unlink(ps_data_cache_file(d[2])), 0);
                for (int k = 0; k < 3; k++) ps_data_destroy(d[k]);
            }
    }
}

/* One epoch of a fresh reader of path (libsvm, budget 1: a cache file), and where it came from. */
static ps_data_source read_cached(const char *path, const ps_logger *log, const char *dir,
                                  rows *r, char *file) {
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.cache_bytes = 1, o.cache_dir = dir, o.log = log;
    ps_data *d = open_ok(&o, 0, 1);
    ps_data_source src = ps_data_source_of(d);
    collect(d, 2, r);
    if (file != NULL) strcpy(file, ps_data_cache_file(d));
    ps_data_destroy(d);
    return src;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The file a run leaves is read by the next from epoch 0, without looking at the text, while the
 * source is untouched. A source rewritten with its size and mtime put back (cp -p, rsync -t),
 * or replaced by a rename of a look-alike, is parsed again: its ctime or inode differ. */
Test(data, cache_file_reused_while_the_source_is_untouched) {
    char path[256], other[256], file[512];
    write_file("r.svm", "1 1:0.5 2:1\n0 3:2\n", 0, path);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    rows a, b, c;
    cr_assert_eq(read_cached(path, NULL, NULL, &a, file), PS_DATA_STREAM);
    char want[512];
    snprintf(want, sizeof(want), "%s/r.svm.", tmpdir);
    cr_assert_eq(strncmp(file, want, strlen(want)), 0, "%s beside the data", file);
    cr_assert_str_eq(file + strlen(file) - 8, ".pscache");
    cr_assert_gt(file_size(file), 0, "the first run wrote %s", file);
    assert_row(&a, 0, 1.0f, 2, U64S(0, 1), FLTS(0.5f, 1.0f));
    cr_assert_eq(read_cached(path, NULL, NULL, &b, NULL), PS_DATA_CACHE_FILE);
    assert_rows_equal(&b, &a, "reused cache");
    rows_free(&b);

    write_file("r.svm", "0 1:0.7 2:1\n1 3:4\n", 0, path); /* same size, the mtime put back */
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    cr_assert_eq(utimensat(AT_FDCWD, path, times, 0), 0);
    cr_assert_eq(read_cached(path, NULL, NULL, &b, NULL), PS_DATA_STREAM);
    assert_row(&b, 0, 0.0f, 2, U64S(0, 1), FLTS(0.7f, 1.0f));
    assert_row(&b, 1, 1.0f, 1, U64S(2), FLTS(4.0f));
    cr_assert_eq(read_cached(path, NULL, NULL, &c, NULL), PS_DATA_CACHE_FILE);
    assert_rows_equal(&c, &b, "rebuilt cache");
    rows_free(&b), rows_free(&c);

    write_file("r2.svm", "1 1:0.9 2:1\n0 3:8\n", 0, other); /* renamed over it, same size */
    cr_assert_eq(utimensat(AT_FDCWD, other, times, 0), 0);
    cr_assert_eq(rename(other, path), 0);
    cr_assert_eq(read_cached(path, NULL, NULL, &b, NULL), PS_DATA_STREAM);
    assert_row(&b, 0, 1.0f, 2, U64S(0, 1), FLTS(0.9f, 1.0f));
    rows_free(&b);

    /* options that change the rows have a file of their own */
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.cache_bytes = 1, o.one_based = false;
    ps_data *d = open_ok(&o, 0, 1);
    cr_assert_str_neq(ps_data_cache_file(d), file);
    cr_assert_eq(ps_data_source_of(d), PS_DATA_STREAM);
    ps_data_destroy(d);
    rows_free(&a);
}

/* Two sources of one base name in different directories, cached in one data.cache_dir: each has
 * a file of its own and gets its own rows back, run after run; no temporary file is left. */
Test(data, cache_dir_keeps_sources_of_one_name_apart) {
    char dirs[3][300], paths[2][320], files[2][512];
    for (int k = 0; k < 3; k++) {
        snprintf(dirs[k], sizeof(dirs[k]), "%s/%c", tmpdir, "abc"[k]);
        cr_assert_eq(mkdir(dirs[k], 0700), 0);
    }
    const char *text[2] = {"1 1:1 2:2\n0 3:4\n", "0 1:7 2:8\n1 3:9\n"}; /* same size */
    for (int k = 0; k < 2; k++) {
        snprintf(paths[k], sizeof(paths[k]), "%s/x.svm", dirs[k]);
        FILE *f = fopen(paths[k], "wb");
        cr_assert_not_null(f);
        fputs(text[k], f);
        fclose(f);
        struct timespec t[2] = {{.tv_sec = 1704067200}, {.tv_sec = 1704067200}};
        cr_assert_eq(utimensat(AT_FDCWD, paths[k], t, 0), 0);
    }
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < 2; k++) {
            rows r;
            cr_assert_eq(read_cached(paths[k], NULL, dirs[2], &r, files[k]),
                         round == 0 ? PS_DATA_STREAM : PS_DATA_CACHE_FILE, "round %d, %s", round,
                         paths[k]);
            assert_row(&r, 0, k == 0 ? 1.0f : 0.0f, 2, U64S(0, 1),
                       k == 0 ? FLTS(1.0f, 2.0f) : FLTS(7.0f, 8.0f));
            rows_free(&r);
        }
    cr_assert_str_neq(files[0], files[1]);
    DIR *dir = opendir(dirs[2]);
    cr_assert_not_null(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        if (e->d_name[0] != '.') {
            n++;
            cr_assert_null(strstr(e->d_name, ".tmp"), "left behind: %s", e->d_name);
        }
    closedir(dir);
    cr_assert_eq(n, 2, "one file per source");
}

/* The file's layout, by hand: a 2304-byte header (2248 rounded to 64), then offsets (3 x u64),
 * ids (3 x u64), vals (3 x f32), labels (2 x f32), index (2 x u64), each from a 64-byte
 * boundary: 2304, 2368, 2432, 2496, 2560, ending at 2624. */
Test(data, cache_file_layout) {
    char path[256], file[512];
    write_file("l.svm", "1 1:0.5 2:1\n\n-1 3:2\n", 0, path);
    rows r;
    read_cached(path, NULL, NULL, &r, file);
    rows_free(&r);
    FILE *f = fopen(file, "rb");
    cr_assert_not_null(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    cr_assert_eq(n, 2624);
    cr_assert_eq(memcmp(buf, "PSDCACHE", 8), 0);
    uint64_t u[3];
    float v[3];
    memcpy(u, buf + 2304, 24);
    cr_assert(u[0] == 0 && u[1] == 2 && u[2] == 3, "offsets");
    memcpy(u, buf + 2368, 24);
    cr_assert(u[0] == 0 && u[1] == 1 && u[2] == 2, "ids");
    memcpy(v, buf + 2432, 12);
    cr_assert(v[0] == 0.5f && v[1] == 1.0f && v[2] == 2.0f, "vals");
    memcpy(v, buf + 2496, 8);
    cr_assert(v[0] == 1.0f && v[1] == 0.0f, "labels");
    memcpy(u, buf + 2560, 16);
    cr_assert(u[0] == 0 && u[1] == 1, "row index");
}

/* A torn or garbled file is not read: the text is parsed again and the file rebuilt. */
Test(data, cache_torn_file_rebuilt) {
    char path[256], file[512], log_path[300];
    write_file("t.svm", "1 1:0.5 2:1\n0 3:2\n1\n", 0, path);
    rows a, b;
    read_cached(path, NULL, NULL, &a, file);
    long size = file_size(file);
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    ps_logger log = {.out = fopen(log_path, "w"), .level = PS_LOG_DEBUG};
    cr_assert_not_null(log.out);
    for (int how = 0; how < 6; how++) {
        if (how == 0) {
            cr_assert_eq(truncate(file, size - 8), 0);
        } else if (how == 5) { /* a row count no file of this size holds, crc recomputed */
            int fd = open(file, O_RDWR);
            cr_assert_geq(fd, 0);
            unsigned char h[4096];
            cr_assert_geq(pread(fd, h, sizeof(h), 0), 2304, "the header and its padding");
            uint32_t header_bytes;
            memcpy(&header_bytes, h + 12, 4); /* magic, version, then the header's size */
            const uint64_t rows_at = 16 + sizeof(ps_cache_key), huge = UINT64_MAX / 64;
            memcpy(h + rows_at, &huge, 8);
            const uint32_t crc = (uint32_t)crc32(0L, h, header_bytes - 4);
            memcpy(h + header_bytes - 4, &crc, 4);
            cr_assert_eq(pwrite(fd, h, header_bytes, 0), (ssize_t)header_bytes);
            close(fd);
        } else {
            int fd = open(file, O_WRONLY);
            cr_assert_geq(fd, 0);
            /* 1: the header's magic; 2: the last row offset (past the header: checked apart);
               3: a byte inside the header (its skipped-line messages), under its crc32;
               4: the first id, under the sections' crc32 */
            off_t at = how == 1 ? 0 : how == 2 ? 2304 + 3 * 8 : how == 3 ? 1000 : 2368;
            cr_assert_eq(pwrite(fd, "\x7f\x7f\x7f\x7f", 4, at), 4);
            close(fd);
        }
        cr_assert_eq(read_cached(path, &log, NULL, &b, NULL), PS_DATA_STREAM, "how %d", how);
        assert_rows_equal(&b, &a, "parsed again");
        cr_assert_eq(file_size(file), size, "how %d: rebuilt", how);
        rows_free(&b);
        cr_assert_eq(read_cached(path, &log, NULL, &b, NULL), PS_DATA_CACHE_FILE);
        assert_rows_equal(&b, &a, "rebuilt");
        rows_free(&b);
    }
    fclose(log.out);
    char text[4096] = {0};
    FILE *f = fopen(log_path, "r");
    cr_assert_eq(fread(text, 1, sizeof(text) - 1, f) > 0, true);
    fclose(f);
    cr_assert_not_null(strstr(text, "torn: the file's size differs"), "%s", text);
    cr_assert_not_null(strstr(text, "torn: not a data cache file"), "%s", text);
    cr_assert_not_null(strstr(text, "torn: row offsets"), "%s", text);
    cr_assert_not_null(strstr(text, "torn: header checksum"), "%s", text);
    cr_assert_not_null(strstr(text, "torn: data checksum"), "%s", text);
    cr_assert_not_null(strstr(text, "torn: impossible counts"), "%s", text);
    rows_free(&a);
}

/* A cache dir that cannot take a file: a warning, and the reader streams every epoch. */
Test(data, cache_unwritable_dir_streams_with_a_warning) {
    char path[256], log_path[300], dirs[2][300], text[4096];
    write_file("w.svm", "1 1:0.5 2:1\n0 3:2\n", 0, path);
    write_file("plain-file", "x", 0, dirs[1]);
    snprintf(dirs[0], sizeof(dirs[0]), "%s/no/such/dir", tmpdir);
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    for (int k = 0; k < 2; k++) {
        ps_logger log = {.out = fopen(log_path, "w"), .level = PS_LOG_WARN};
        ps_data_options o;
        ps_data_options_init(&o);
        o.format = PS_DATA_LIBSVM, o.path = path, o.cache_bytes = 1, o.cache_dir = dirs[k];
        o.log = &log;
        ps_data *d = open_ok(&o, 0, 1);
        for (uint32_t epoch = 0; epoch < 2; epoch++) {
            rows r;
            cr_assert_eq(ps_data_rewind(d, epoch, NULL), PS_OK);
            collect(d, 2, &r);
            cr_assert_eq(ps_data_source_of(d), PS_DATA_STREAM);
            assert_row(&r, 1, 0.0f, 1, U64S(2), FLTS(2.0f));
            rows_free(&r);
        }
        ps_data_destroy(d);
        fclose(log.out);
        memset(text, 0, sizeof(text));
        FILE *f = fopen(log_path, "r");
        cr_assert_eq(fread(text, 1, sizeof(text) - 1, f) > 0, true);
        fclose(f);
        cr_assert_not_null(strstr(text, "warn: cannot write the data cache"), "%s", text);
        cr_assert_not_null(strstr(text, dirs[k]), "%s", text);
        cr_assert_not_null(strstr(text, "streaming"), "%s", text);
        cr_assert_null(strstr(text + 1, "warn:"), "warned once: %s", text);
    }
}

/* Parse errors come from the first epoch's parse, named file:line, with or without a cache; an
 * epoch that fails or is cut short leaves no cache behind. */
Test(data, cache_parse_errors_name_file_and_line) {
    char path[256];
    write_file("e.svm", "1 1:0.5\n\n0 2:x\n1 3:1\n", 0, path);
    for (size_t budget = 1; budget <= (1 << 20); budget <<= 20) {
        ps_data_options o;
        ps_data_options_init(&o);
        o.format = PS_DATA_LIBSVM, o.path = path, o.cache_bytes = budget;
        ps_data *d = open_ok(&o, 0, 1);
        for (uint32_t epoch = 0; epoch < 2; epoch++) {
            ps_data_batch b;
            ps_error err = {0};
            cr_assert_eq(ps_data_rewind(d, epoch, NULL), PS_OK);
            cr_assert_eq(ps_data_next(d, 8, &b, &err), PS_DATA);
            char want[300];
            snprintf(want, sizeof(want), "%s:3: ", path);
            cr_assert_eq(strncmp(err.msg, want, strlen(want)), 0, "%s", err.msg);
            cr_assert_eq(ps_data_source_of(d), PS_DATA_STREAM);
        }
        cr_assert_eq(access(ps_data_cache_file(d), F_OK), -1, "no file from a failed epoch");
        ps_data_destroy(d);
    }
    write_file("e.svm", "1 1:0.5\n\n0 2:3\n1 3:1\n", 0, path);
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.cache_bytes = 1 << 20;
    ps_data *d = open_ok(&o, 0, 1);
    ps_data_batch b;
    cr_assert_eq(ps_data_next(d, 1, &b, NULL), PS_OK); /* epoch 0 cut short */
    rows r;
    cr_assert_eq(ps_data_rewind(d, 1, NULL), PS_OK);
    cr_assert_eq(ps_data_source_of(d), PS_DATA_STREAM);
    collect(d, 2, &r);
    cr_assert_eq(r.n, 3);
    rows_free(&r);
    cr_assert_eq(ps_data_rewind(d, 2, NULL), PS_OK);
    cr_assert_eq(ps_data_source_of(d), PS_DATA_CACHE_MEMORY);
    collect(d, 2, &r);
    assert_row(&r, 1, 0.0f, 1, U64S(1), FLTS(3.0f));
    rows_free(&r);
    ps_data_destroy(d);
}

/* validation_split's parts from a cache file: the next run takes the row range from its header
 * (no counting pass) and gives both parts' rows as the first run did. */
Test(data, cache_file_keeps_validation_split_parts) {
    char csv[256], svm[256], tsv[256];
    write_cache_sources(false, true, csv, svm, tsv);
    for (int holdout = 0; holdout < 2; holdout++) {
        ps_data_options o;
        ps_data_options_init(&o);
        o.format = PS_DATA_LIBSVM, o.path = svm, o.cache_bytes = 1;
        o.validation_split = 0.25, o.holdout = holdout, o.shuffle = true, o.seed = 3;
        rows r[2];
        for (int run = 0; run < 2; run++) {
            ps_data *d = open_ok(&o, 1, 2);
            cr_assert_eq(ps_data_source_of(d), run ? PS_DATA_CACHE_FILE : PS_DATA_STREAM);
            collect(d, 5, &r[run]);
            ps_data_destroy(d);
        }
        /* 61 rows: int(61 * 0.75) = 45 train on, [45, 61) held out; rank 1 takes odd rows */
        cr_assert_eq(r[0].n, holdout ? 8 : 22);
        for (size_t i = 0; i < r[0].n; i++)
            cr_assert(r[0].index[i] % 2 == 1 && (holdout ? r[0].index[i] >= 45
                                                         : r[0].index[i] < 45));
        assert_rows_equal(&r[1], &r[0], holdout ? "held-out part" : "training part");
        rows_free(&r[0]), rows_free(&r[1]);
    }
}

/* A source that changes while the first epoch reads it leaves no cache: a warning, and every
 * later epoch parses the text, as streaming does. */
Test(data, cache_source_changed_during_the_first_epoch) {
    char path[256], log_path[300], text[4096] = {0};
    write_file("m.svm", "1 1:0.5\n0 2:3\n1 3:1\n", 0, path);
    snprintf(log_path, sizeof(log_path), "%s/log", tmpdir);
    ps_logger log = {.out = fopen(log_path, "w"), .level = PS_LOG_WARN};
    ps_data_options o;
    ps_data_options_init(&o);
    o.format = PS_DATA_LIBSVM, o.path = path, o.cache_bytes = 1 << 20, o.log = &log;
    ps_data *d = open_ok(&o, 0, 1);
    ps_data_batch b;
    cr_assert_eq(ps_data_next(d, 1, &b, NULL), PS_OK);
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000000}};
    cr_assert_eq(utimensat(AT_FDCWD, path, times, 0), 0);
    rows r;
    collect(d, 2, &r);
    cr_assert_eq(r.n, 2);
    rows_free(&r);
    cr_assert_eq(ps_data_rewind(d, 1, NULL), PS_OK);
    cr_assert_eq(ps_data_source_of(d), PS_DATA_STREAM);
    collect(d, 2, &r);
    cr_assert_eq(r.n, 3);
    rows_free(&r);
    ps_data_destroy(d);
    fclose(log.out);
    FILE *f = fopen(log_path, "r");
    cr_assert_eq(fread(text, 1, sizeof(text) - 1, f) > 0, true);
    fclose(f);
    cr_assert_not_null(strstr(text, "m.svm changed while read; streaming"), "%s", text);
}
