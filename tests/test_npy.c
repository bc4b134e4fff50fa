/* test_npy.c - common/npy.c: files numpy 1.24 wrote (pasted byte for byte) read back with their
 * shape and values; the writer reproduces numpy's bytes, whether the first dimension is known at
 * the start or set by finish; round trips of every dtype and shape kind; a file appears under its
 * name only after finish; every malformed header or size is refused, the path in the message. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "npy.h"

/* Made with /usr/bin/python3 (numpy 1.24.2):
 *   f = io.BytesIO(); np.save(f, a); print(', '.join('0x%02x' % b for b in f.getvalue())) */
/* np.save(f, np.arange(6, dtype='<f4').reshape(2, 3)) by numpy 1.24.2: 152 bytes */
static const uint8_t np_f4_2x3[152] = {
    0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00, 0x76, 0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63,
    0x72, 0x27, 0x3a, 0x20, 0x27, 0x3c, 0x66, 0x34, 0x27, 0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74,
    0x72, 0x61, 0x6e, 0x5f, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73,
    0x65, 0x2c, 0x20, 0x27, 0x73, 0x68, 0x61, 0x70, 0x65, 0x27, 0x3a, 0x20, 0x28, 0x32, 0x2c, 0x20,
    0x33, 0x29, 0x2c, 0x20, 0x7d, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x40, 0x40,
    0x00, 0x00, 0x80, 0x40, 0x00, 0x00, 0xa0, 0x40,
};
/* np.save(f, np.array([1, 2**40, 2**64 - 1], dtype='<u8')) by numpy 1.24.2: 152 bytes */
static const uint8_t np_u8_3[152] = {
    0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00, 0x76, 0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63,
    0x72, 0x27, 0x3a, 0x20, 0x27, 0x3c, 0x75, 0x38, 0x27, 0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74,
    0x72, 0x61, 0x6e, 0x5f, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73,
    0x65, 0x2c, 0x20, 0x27, 0x73, 0x68, 0x61, 0x70, 0x65, 0x27, 0x3a, 0x20, 0x28, 0x33, 0x2c, 0x29,
    0x2c, 0x20, 0x7d, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
};
/* np.save(f, np.array(7, dtype='<u4')) by numpy 1.24.2: 132 bytes */
static const uint8_t np_u4_scalar[132] = {
    0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00, 0x76, 0x00, 0x7b, 0x27, 0x64, 0x65, 0x73, 0x63,
    0x72, 0x27, 0x3a, 0x20, 0x27, 0x3c, 0x75, 0x34, 0x27, 0x2c, 0x20, 0x27, 0x66, 0x6f, 0x72, 0x74,
    0x72, 0x61, 0x6e, 0x5f, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x27, 0x3a, 0x20, 0x46, 0x61, 0x6c, 0x73,
    0x65, 0x2c, 0x20, 0x27, 0x73, 0x68, 0x61, 0x70, 0x65, 0x27, 0x3a, 0x20, 0x28, 0x29, 0x2c, 0x20,
    0x7d, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x0a,
    0x07, 0x00, 0x00, 0x00,
};

static char dir[64];
static char pbuf[4][256];
static int pnext;

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void setup(void) {
    snprintf(dir, sizeof(dir), "/tmp/test_npy.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) { nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS); }
TestSuite(npy, .init = setup, .fini = teardown, .timeout = 60);

/* DIR/name, in one of a few rotating buffers. */
static const char *at(const char *name) {
    char *p = pbuf[pnext++ % 4];
    snprintf(p, sizeof(pbuf[0]), "%s/%s", dir, name);
    return p;
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

static void put_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static uint8_t *get_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*n + 1);
    cr_assert_not_null(p);
    cr_assert_eq(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static ps_npy_reader *open_ok(const char *path) {
    ps_npy_reader *r = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_npy_open(path, &r, &err), PS_OK, "%s", err.msg);
    return r;
}

/* Writes data as one file; chunk > 0 appends it in pieces of chunk bytes. */
static void write_npy(const char *path, ps_npy_dtype dt, unsigned ndim, const uint64_t *shape,
                      const void *data, size_t n, size_t chunk) {
    ps_npy_writer *w = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_npy_create(path, dt, ndim, shape, &w, &err), PS_OK, "%s", err.msg);
    const uint8_t *p = data;
    for (size_t o = 0; o < n; o += chunk ? chunk : n) {
        size_t k = chunk && n - o > chunk ? chunk : n - o;
        cr_assert_eq(ps_npy_append(w, p + o, k, &err), PS_OK, "%s", err.msg);
    }
    cr_assert_eq(ps_npy_finish(w, &err), PS_OK, "%s", err.msg);
}

static void assert_file_is(const char *path, const uint8_t *want, size_t n, const char *what) {
    size_t got_n;
    uint8_t *got = get_file(path, &got_n);
    cr_assert_eq(got_n, n, "%s: %zu bytes, numpy wrote %zu", what, got_n, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s: byte %zu is 0x%02x, numpy wrote 0x%02x ('%c')", what,
                     i, got[i], want[i], want[i]);
    free(got);
}

/* --- files numpy wrote ------------------------------------------------------------------------ */

Test(npy, reads_numpy_files) {
    put_file(at("a.npy"), np_f4_2x3, sizeof(np_f4_2x3));
    ps_npy_reader *r = open_ok(at("a.npy"));
    const ps_npy_info *i = ps_npy_info_of(r);
    cr_assert_eq(i->dtype, PS_NPY_F4);
    cr_assert_eq(i->item_size, 4);
    cr_assert_eq(i->ndim, 2);
    cr_assert_eq(i->shape[0], 2);
    cr_assert_eq(i->shape[1], 3);
    cr_assert_eq(i->count, 6);
    cr_assert_eq(i->data_offset, 128);
    float f[6];
    ps_error err = {0};
    cr_assert_eq(ps_npy_read(r, f, 6, &err), PS_OK, "%s", err.msg);
    for (int k = 0; k < 6; k++) cr_assert_eq(f[k], (float)k);
    cr_assert_str_eq(ps_npy_path(r), at("a.npy"));
    ps_npy_close(r);

    put_file(at("b.npy"), np_u8_3, sizeof(np_u8_3));
    r = open_ok(at("b.npy"));
    i = ps_npy_info_of(r);
    cr_assert(i->dtype == PS_NPY_U8 && i->item_size == 8 && i->ndim == 1 && i->shape[0] == 3);
    uint64_t u[3];
    cr_assert_eq(ps_npy_read(r, u, 3, &err), PS_OK, "%s", err.msg);
    cr_assert(u[0] == 1 && u[1] == 1ull << 40 && u[2] == UINT64_MAX);
    ps_npy_close(r);

    put_file(at("c.npy"), np_u4_scalar, sizeof(np_u4_scalar));
    r = open_ok(at("c.npy"));
    i = ps_npy_info_of(r);
    cr_assert(i->dtype == PS_NPY_U4 && i->ndim == 0 && i->count == 1);
    uint32_t s;
    cr_assert_eq(ps_npy_read(r, &s, 1, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(s, 7);
    ps_npy_close(r);
}

/* The writer's bytes are numpy's, with the first dimension given or left to finish. */
Test(npy, writes_numpy_bytes) {
    const float f[6] = {0, 1, 2, 3, 4, 5};
    write_npy(at("a.npy"), PS_NPY_F4, 2, (const uint64_t[]){2, 3}, f, sizeof(f), 0);
    assert_file_is(at("a.npy"), np_f4_2x3, sizeof(np_f4_2x3), "(2, 3) known");
    write_npy(at("b.npy"), PS_NPY_F4, 2, (const uint64_t[]){PS_NPY_ROWS_UNKNOWN, 3}, f, sizeof(f),
              5);
    assert_file_is(at("b.npy"), np_f4_2x3, sizeof(np_f4_2x3), "(?, 3) in 5-byte appends");

    const uint64_t u[3] = {1, 1ull << 40, UINT64_MAX};
    write_npy(at("c.npy"), PS_NPY_U8, 1, (const uint64_t[]){PS_NPY_ROWS_UNKNOWN}, u, sizeof(u), 8);
    assert_file_is(at("c.npy"), np_u8_3, sizeof(np_u8_3), "(?,) u8");

    const uint32_t s = 7;
    write_npy(at("d.npy"), PS_NPY_U4, 0, NULL, &s, sizeof(s), 0);
    assert_file_is(at("d.npy"), np_u4_scalar, sizeof(np_u4_scalar), "() u4");
}

Test(npy, shape_str_as_python_prints) {
    char b[64];
    cr_assert_str_eq(ps_npy_shape_str(2, (const uint64_t[]){20, 64}, b, sizeof(b)), "(20, 64)");
    cr_assert_str_eq(ps_npy_shape_str(1, (const uint64_t[]){64}, b, sizeof(b)), "(64,)");
    cr_assert_str_eq(ps_npy_shape_str(0, NULL, b, sizeof(b)), "()");
    cr_assert_str_eq(ps_npy_shape_str(2, (const uint64_t[]){20, 64}, b, 5), "(20,");
    cr_assert_str_eq(ps_npy_descr(PS_NPY_F4), "<f4");
    cr_assert_str_eq(ps_npy_descr(PS_NPY_U8), "<u8");
    cr_assert_str_eq(ps_npy_descr(PS_NPY_U4), "<u4");
}

/* --- round trips ------------------------------------------------------------------------------ */

typedef struct {
    int dtype;
    unsigned ndim;
    uint64_t shape[PS_NPY_MAX_DIM];
} rt_case;

ParameterizedTestParameters(npy, round_trip) {
    static rt_case cases[] = {
        {PS_NPY_F4, 1, {5}},          {PS_NPY_F4, 2, {4, 3}},    {PS_NPY_F4, 0, {0}},
        {PS_NPY_F4, 2, {0, 7}},       {PS_NPY_F4, 3, {2, 3, 4}}, {PS_NPY_F4, 4, {1, 2, 1, 3}},
        {PS_NPY_U8, 1, {1}},          {PS_NPY_U8, 2, {9, 2}},    {PS_NPY_U8, 0, {0}},
        {PS_NPY_U8, 1, {0}},          {PS_NPY_U4, 1, {1000}},    {PS_NPY_U4, 2, {10, 100}},
        {PS_NPY_U4, 0, {0}},          {PS_NPY_U4, 2, {3, 1}},
    };
    return cr_make_param_array(rt_case, cases, sizeof(cases) / sizeof(cases[0]));
}

/* Known shape, then unknown first dimension in odd appends: the same file, read back exactly
 * (in one read and in reads of 7 items). */
ParameterizedTest(rt_case *c, npy, round_trip) {
    char name[64];
    ps_npy_shape_str(c->ndim, c->shape, name, sizeof(name));
    size_t isz = c->dtype == PS_NPY_U8 ? 8 : 4, count = 1;
    for (unsigned d = 0; d < c->ndim; d++) count *= c->shape[d];
    uint8_t *data = malloc(count * isz + 1), *back = malloc(count * isz + 1);
    cr_assert(data && back);
    for (size_t i = 0; i < count * isz; i++) data[i] = (uint8_t)(i * 131 + 7);

    write_npy(at("k.npy"), (ps_npy_dtype)c->dtype, c->ndim, c->shape, data, count * isz, 0);
    uint64_t open_shape[PS_NPY_MAX_DIM];
    memcpy(open_shape, c->shape, sizeof(open_shape));
    if (c->ndim > 0) open_shape[0] = PS_NPY_ROWS_UNKNOWN;
    write_npy(at("u.npy"), (ps_npy_dtype)c->dtype, c->ndim, open_shape, data, count * isz, 3);
    size_t nk, nu;
    uint8_t *fk = get_file(at("k.npy"), &nk), *fu = get_file(at("u.npy"), &nu);
    cr_assert_eq(nk, nu, "%s", name);
    cr_assert_arr_eq(fk, fu, nk, "%s: streamed file differs", name);
    free(fk), free(fu);

    ps_npy_reader *r = open_ok(at("u.npy"));
    const ps_npy_info *i = ps_npy_info_of(r);
    cr_assert_eq(i->dtype, (ps_npy_dtype)c->dtype, "%s", name);
    cr_assert_eq(i->ndim, c->ndim, "%s", name);
    for (unsigned d = 0; d < c->ndim; d++) cr_assert_eq(i->shape[d], c->shape[d], "%s", name);
    cr_assert_eq(i->count, count, "%s", name);
    cr_assert_eq(i->data_offset % 64, 0, "%s: data at %llu", name,
                 (unsigned long long)i->data_offset);
    ps_error err = {0};
    for (size_t o = 0; o < count; o += 7) {
        size_t k = count - o < 7 ? count - o : 7;
        cr_assert_eq(ps_npy_read(r, back + o * isz, k, &err), PS_OK, "%s", err.msg);
    }
    cr_assert_arr_eq(back, data, count * isz, "%s", name);
    cr_assert_eq(ps_npy_read(r, back, 1, &err), PS_INVALID_ARG, "%s: read past the end", name);
    cr_assert(strstr(err.msg, "u.npy") != NULL, "%s", err.msg);
    cr_assert_eq(ps_npy_read(r, back, 0, &err), PS_OK);
    ps_npy_close(r);
    free(data), free(back);
}

/* 100k rows of 16 floats streamed in uneven appends; PATH appears only at finish. */
Test(npy, streamed_rows_appear_at_finish) {
    const size_t rows = 100000, dim = 16;
    float *v = malloc(rows * dim * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < rows * dim; i++) v[i] = (float)i * 0.5f - 3.0f;
    ps_npy_writer *w = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_npy_create(at("big.npy"), PS_NPY_F4, 2,
                               (const uint64_t[]){PS_NPY_ROWS_UNKNOWN, dim}, &w, &err),
                 PS_OK, "%s", err.msg);
    const uint8_t *p = (const uint8_t *)v;
    size_t total = rows * dim * sizeof(float), o = 0, step = 1;
    while (o < total) {
        size_t k = total - o < step ? total - o : step;
        cr_assert_eq(ps_npy_append(w, p + o, k, &err), PS_OK, "%s", err.msg);
        o += k, step = step * 3 + 1; /* 1, 4, 13, ... bytes: appends end mid-float and mid-row */
    }
    cr_assert(exists(at("big.npy.tmp")));
    cr_assert_not(exists(at("big.npy")), "visible before finish");
    cr_assert_eq(ps_npy_finish(w, &err), PS_OK, "%s", err.msg);
    cr_assert_not(exists(at("big.npy.tmp")));

    ps_npy_reader *r = open_ok(at("big.npy"));
    cr_assert_eq(ps_npy_info_of(r)->shape[0], rows);
    cr_assert_eq(ps_npy_info_of(r)->shape[1], dim);
    float row[777 * 16];
    for (size_t at_row = 0; at_row < rows; at_row += 777) {
        size_t k = rows - at_row < 777 ? rows - at_row : 777;
        cr_assert_eq(ps_npy_read(r, row, k * dim, &err), PS_OK, "%s", err.msg);
        cr_assert_arr_eq(row, v + at_row * dim, k * dim * sizeof(float), "rows from %zu", at_row);
    }
    ps_npy_close(r);
    free(v);
}

/* --- writer errors ---------------------------------------------------------------------------- */

/* 13 bytes are not whole rows of (?, 3) float32: refused; the old PATH stays, no PATH.tmp. */
Test(npy, finish_refuses_partial_rows) {
    const char old[] = "an older file";
    put_file(at("p.npy"), old, sizeof(old));
    ps_npy_writer *w = NULL;
    ps_error err = {0};
    uint8_t junk[13] = {0};
    cr_assert_eq(ps_npy_create(at("p.npy"), PS_NPY_F4, 2,
                               (const uint64_t[]){PS_NPY_ROWS_UNKNOWN, 3}, &w, &err),
                 PS_OK);
    cr_assert_eq(ps_npy_append(w, junk, sizeof(junk), &err), PS_OK);
    cr_assert_eq(ps_npy_finish(w, &err), PS_DATA);
    cr_assert(strstr(err.msg, "p.npy: 13 bytes appended are not whole rows of 12 bytes") != NULL,
              "%s", err.msg);
    cr_assert_not(exists(at("p.npy.tmp")));
    assert_file_is(at("p.npy"), (const uint8_t *)old, sizeof(old), "old file");

    /* a scalar is one item exactly */
    cr_assert_eq(ps_npy_create(at("s.npy"), PS_NPY_U8, 0, NULL, &w, &err), PS_OK);
    cr_assert_eq(ps_npy_append(w, junk, 4, &err), PS_OK);
    cr_assert_eq(ps_npy_finish(w, &err), PS_DATA);
    cr_assert(strstr(err.msg, "not one item of 8 bytes") != NULL, "%s", err.msg);
    cr_assert_not(exists(at("s.npy")) || exists(at("s.npy.tmp")));
}

Test(npy, finish_checks_a_given_first_dimension) {
    ps_npy_writer *w = NULL;
    ps_error err = {0};
    float row[3] = {1, 2, 3};
    cr_assert_eq(ps_npy_create(at("k.npy"), PS_NPY_F4, 2, (const uint64_t[]){4, 3}, &w, &err),
                 PS_OK);
    for (int i = 0; i < 3; i++) cr_assert_eq(ps_npy_append(w, row, sizeof(row), &err), PS_OK);
    cr_assert_eq(ps_npy_finish(w, &err), PS_DATA);
    cr_assert(strstr(err.msg, "k.npy: 3 rows appended, the shape says 4") != NULL, "%s", err.msg);
    cr_assert_not(exists(at("k.npy")) || exists(at("k.npy.tmp")));
}

Test(npy, abort_removes_the_temp_file) {
    ps_npy_writer *w = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_npy_create(at("a.npy"), PS_NPY_U4, 1, (const uint64_t[]){PS_NPY_ROWS_UNKNOWN},
                               &w, &err), PS_OK);
    cr_assert_eq(ps_npy_append(w, "abcd", 4, &err), PS_OK);
    cr_assert(exists(at("a.npy.tmp")));
    ps_npy_abort(w);
    cr_assert_not(exists(at("a.npy.tmp")) || exists(at("a.npy")));
    ps_npy_abort(NULL);
    ps_npy_close(NULL);
}

Test(npy, create_errors) {
    ps_npy_writer *w = (ps_npy_writer *)1;
    ps_error err = {0};
    cr_assert_eq(ps_npy_create(at("no/such/dir.npy"), PS_NPY_F4, 1, (const uint64_t[]){1}, &w,
                               &err), PS_IO);
    cr_assert_null(w);
    cr_assert(strstr(err.msg, "no/such/dir.npy.tmp: No such file") != NULL, "%s", err.msg);
    cr_assert_eq(ps_npy_create(at("x.npy"), PS_NPY_F4, 5, (const uint64_t[]){1, 1, 1, 1, 1}, &w,
                               &err), PS_INVALID_ARG);
    cr_assert_eq(ps_npy_create(at("x.npy"), PS_NPY_F4, 3,
                               (const uint64_t[]){1, 1ull << 40, 1ull << 40}, &w, &err),
                 PS_INVALID_ARG, "rows of 2^80 items overflow");
    cr_assert_not(exists(at("x.npy.tmp")));
}

/* --- reader errors ---------------------------------------------------------------------------- */

typedef struct {
    char name[32];
    char magic[8];      /* "" = \x93NUMPY */
    unsigned major, minor;
    char dict[200];     /* padded by the test to 64-byte alignment, ending in '\n' */
    uint32_t hlen;      /* 0 = the real length */
    uint32_t data;      /* bytes of data after the header */
    ps_status want;
    char msg[96];       /* expected in the message, after "PATH: " */
} hdr_case;

#define D24 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"

ParameterizedTestParameters(npy, headers) {
    static hdr_case cases[] = {
        /* accepted variations */
        {"numpy's", "", 1, 0, D24, 0, 24, PS_OK, ""},
        {"v2.0", "", 2, 0, D24, 0, 24, PS_OK, ""},
        {"v3.0", "", 3, 0, D24, 0, 24, PS_OK, ""},
        {"other order, no spaces", "", 1, 0, "{'shape':(2,3),'fortran_order':False,'descr':'<f4'}",
         0, 24, PS_OK, ""},
        {"double quotes, no comma", "", 1, 0,
         "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": ( 2 , 3 )}", 0, 24, PS_OK, ""},
        {"newlines inside", "", 1, 0,
         "{\n 'descr' : '<f4' ,\n 'fortran_order' : False ,\n 'shape' : (2, 3,) ,\n}", 0, 24,
         PS_OK, ""},
        /* refused */
        {"bad magic", "\x93NUMPX", 1, 0, D24, 0, 24, PS_DATA, "not a .npy file"},
        {"version 4.0", "", 4, 0, D24, 0, 24, PS_DATA, ".npy version 4.0"},
        {"version 1.1", "", 1, 1, D24, 0, 24, PS_DATA, ".npy version 1.1"},
        {"header too long", "", 2, 0, D24, 100000, 24, PS_DATA,
         "header of 100000 bytes, the limit is 10000"},
        {"header truncated", "", 1, 0, D24, 9000, 0, PS_DATA, "header truncated"},
        {"truncated data", "", 1, 0, D24, 0, 20, PS_DATA,
         "shape (2, 3) needs 24 bytes of data, file has 20"},
        {"trailing data", "", 1, 0, D24, 0, 28, PS_DATA,
         "shape (2, 3) needs 24 bytes of data, file has 28"},
        {"fortran order", "", 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
         0, 24, PS_DATA, "fortran_order True is not supported"},
        {"big-endian", "", 1, 0, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
         0, 24, PS_DATA, "big-endian descr '>f4' is not supported"},
        {"float64", "", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 0, 24,
         PS_DATA, "descr '<f8' is not supported (want '<f4', '<u8' or '<u4')"},
        {"int64", "", 1, 0, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 0, 24,
         PS_DATA, "descr '<i8' is not supported"},
        {"structured", "", 1, 0,
         "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", 0, 24, PS_DATA,
         "header: descr: structured dtypes are not supported"},
        {"5 dims", "", 1, 0,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 1, 3), }", 0, 24, PS_DATA,
         "header: shape: more than 4 dimensions"},
        {"not a tuple", "", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", 0,
         24, PS_DATA, "header: shape: (6) is not a tuple"},
        {"negative", "", 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (-6,), }", 0,
         24, PS_DATA, "header: shape: expected a non-negative integer"},
        {"missing shape", "", 1, 0, "{'descr': '<f4', 'fortran_order': False, }", 0, 24, PS_DATA,
         "header: missing 'shape'"},
        {"unknown key", "", 1, 0,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", 0, 24, PS_DATA,
         "header: unknown key 'x'"},
        {"key twice", "", 1, 0,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'shape': (6,)}", 0, 24,
         PS_DATA, "header: 'shape' given twice"},
        {"text after", "", 1, 0, D24 " x", 0, 24, PS_DATA, "header: text after the dict"},
        {"not a dict", "", 1, 0, "[1, 2]", 0, 24, PS_DATA, "header: not a dict"},
        {"bad fortran", "", 1, 0, "{'descr': '<f4', 'fortran_order': 0, 'shape': (6,), }", 0,
         24, PS_DATA, "header: fortran_order: expected True or False"},
        {"shape overflow", "", 1, 0,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 0, 0,
         PS_DATA, "shape (4294967296, 4294967296) is too large"},
    };
    return cr_make_param_array(hdr_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(hdr_case *c, npy, headers) {
    uint8_t buf[512] = {0};
    const size_t pre = c->major == 1 ? 10 : 12, dl = strlen(c->dict);
    size_t total = pre + dl + 1;
    total += (64 - total % 64) % 64;
    memcpy(buf, c->magic[0] ? c->magic : "\x93NUMPY", 6);
    buf[6] = (uint8_t)c->major, buf[7] = (uint8_t)c->minor;
    uint32_t hlen = c->hlen ? c->hlen : (uint32_t)(total - pre);
    for (size_t b = 0; b < pre - 8; b++) buf[8 + b] = (uint8_t)(hlen >> (8 * b));
    memcpy(buf + pre, c->dict, dl);
    memset(buf + pre + dl, ' ', total - 1 - pre - dl);
    buf[total - 1] = '\n';
    for (uint32_t i = 0; i < c->data; i++) buf[total + i] = (uint8_t)i;
    put_file(at("h.npy"), buf, total + c->data);

    ps_npy_reader *r = (ps_npy_reader *)1;
    ps_error err = {0};
    ps_status st = ps_npy_open(at("h.npy"), &r, &err);
    cr_assert_eq(st, c->want, "%s: got %s (%s)", c->name, ps_status_str(st), err.msg);
    if (st == PS_OK) {
        const ps_npy_info *i = ps_npy_info_of(r);
        cr_assert(i->ndim == 2 && i->shape[0] == 2 && i->shape[1] == 3 && i->dtype == PS_NPY_F4,
                  "%s", c->name);
        cr_assert_eq(i->data_offset, total, "%s", c->name);
        uint8_t back[24];
        cr_assert_eq(ps_npy_read(r, back, 6, &err), PS_OK, "%s", err.msg);
        cr_assert_arr_eq(back, buf + total, 24, "%s", c->name);
        ps_npy_close(r);
        return;
    }
    cr_assert_null(r, "%s", c->name);
    char want[400];
    snprintf(want, sizeof(want), "%s: %s", at("h.npy"), c->msg);
    cr_assert(strstr(err.msg, want) == err.msg, "%s: message \"%s\", want \"%s...\"", c->name,
              err.msg, want);
}

Test(npy, open_missing_and_empty_files) {
    ps_npy_reader *r = NULL;
    ps_error err = {0};
    cr_assert_eq(ps_npy_open(at("none.npy"), &r, &err), PS_IO);
    cr_assert(strstr(err.msg, "none.npy: No such file or directory") != NULL, "%s", err.msg);
    put_file(at("empty.npy"), "", 0);
    cr_assert_eq(ps_npy_open(at("empty.npy"), &r, &err), PS_DATA);
    cr_assert(strstr(err.msg, "empty.npy: not a .npy file") != NULL, "%s", err.msg);
    cr_assert_eq(ps_npy_open(dir, &r, &err) != PS_OK, true, "a directory is not a file");
}

/* A file that shrinks after open (another process truncating it) fails the read with PS_IO. */
Test(npy, read_of_a_shrunk_file) {
    enum { N = 100000 };
    float *v = calloc(N, sizeof(float));
    cr_assert_not_null(v);
    write_npy(at("a.npy"), PS_NPY_F4, 1, (const uint64_t[]){N}, v, N * sizeof(float), 0);
    ps_npy_reader *r = open_ok(at("a.npy"));
    ps_error err = {0};
    cr_assert_eq(ps_npy_read(r, v, 10, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(truncate(at("a.npy"), 64 * 1024), 0);
    cr_assert_eq(ps_npy_read(r, v, N - 10, &err), PS_IO);
    cr_assert(strstr(err.msg, "a.npy: reading item 10: unexpected end of file") != NULL, "%s",
              err.msg);
    ps_npy_close(r);
    free(v);
}
