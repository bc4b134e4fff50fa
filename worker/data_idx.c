/* data_idx.c - IDX image and label files as MNIST and Fashion-MNIST ship them, plain or gzip:
 * both files are read at open (their headers checked against each other, their bodies against
 * the headers) and the shard's images kept; row i is image i, pixel/255 per feature.
 * reference: http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT") */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data_format.h"

#define IDX_IMAGES_MAGIC 0x00000803u /* unsigned bytes, 3 dimensions */
#define IDX_LABELS_MAGIC 0x00000801u /* unsigned bytes, 1 dimension */
#define IDX_MAX_PIXELS (1u << 24)    /* rows * cols of one image */

typedef struct {
    uint32_t n, rows, cols, pixels;
    uint32_t rank, world;
    uint8_t *img; /* (own, pixels) the shard's images: image i at (i / world) */
    uint8_t *lab; /* (own) their labels */
} idx_state;

/* One open IDX file, read through zlib: gzread passes a file without the gzip magic bytes
 * (1f 8b) through as it is, so either form works whatever the name. */
typedef struct {
    const char *path;
    gzFile gz;
} idx_file;

static ps_status idx_read(idx_file *f, void *buf, size_t n, size_t *got, ps_error *err) {
    int r = gzread(f->gz, buf, (unsigned)n);
    int zerr = Z_OK;
    const char *zmsg = gzerror(f->gz, &zerr);
    if (r < 0 || zerr != Z_OK) /* Z_BUF_ERROR: the gzip stream ends early (its trailer cut) */
        return ps_error_set(err, PS_IO, "read %s: %s", f->path,
                            zerr == Z_ERRNO ? strerror(errno) : zmsg);
    *got = (size_t)r;
    return PS_OK;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Opens f and reads its header: the magic, then ndims big-endian uint32 sizes. */
static ps_status idx_header(idx_file *f, uint32_t magic, const char *what, uint32_t *dims,
                            ps_error *err) {
    errno = 0;
    f->gz = gzopen(f->path, "rb");
    if (f->gz == NULL)
        return ps_error_set(err, ps_data_open_status(errno), "open %s: %s", f->path,
                            errno ? strerror(errno) : "out of memory");
    const size_t ndims = magic & 0xff, want = 4 + 4 * ndims;
    uint8_t h[16];
    size_t got = 0;
    ps_status st = idx_read(f, h, want, &got, err);
    if (st != PS_OK) return st;
    if (got >= 4 && be32(h) != magic) {
        uint32_t m = be32(h);
        return ps_error_set(err, PS_DATA, "%s: magic 0x%08" PRIx32 " is not an IDX %s file's "
                            "0x%08" PRIx32 "%s",
                            f->path, m, what, magic,
                            m == (IDX_IMAGES_MAGIC ^ IDX_LABELS_MAGIC ^ magic)
                                ? " (the images and labels files swapped?)"
                                : "");
    }
    if (got < want)
        return ps_error_set(err, PS_DATA, "%s: truncated: %zu bytes, shorter than the %zu-byte "
                            "IDX %s header", f->path, got, want, what);
    for (size_t i = 0; i < ndims; i++) dims[i] = be32(h + 4 + 4 * i);
    return PS_OK;
}

/* Reads n records of rec bytes, keeping record i when i % world == rank in *out (grown as the
 * records arrive, so a header that lies costs no more memory than the file holds); the body
 * must end with the last record. */
static ps_status idx_body(idx_file *f, uint32_t n, size_t rec, uint32_t rank, uint32_t world,
                          const char *what, uint8_t **out, ps_error *err) {
    uint8_t *buf = malloc(rec), *keep = NULL;
    size_t cap = 0, own = 0;
    ps_status st = PS_OK;
    if (buf == NULL) return ps_error_set(err, PS_NOMEM, "%s: out of memory", f->path);
    for (uint32_t i = 0; i < n && st == PS_OK; i++) {
        size_t got = 0;
        if ((st = idx_read(f, buf, rec, &got, err)) != PS_OK) break;
        if (got < rec) {
            st = ps_error_set(err, PS_DATA,
                              "%s: truncated: ends in %s %" PRIu32 " of the %" PRIu32
                              " its header declares",
                              f->path, what, i + 1, n);
            break;
        }
        if (i % world != rank) continue;
        if (own == cap) {
            size_t c = cap ? cap * 2 : 256;
            uint8_t *k = realloc(keep, c * rec);
            if (k == NULL) {
                st = ps_error_set(err, PS_NOMEM, "%s: %zu %ss: out of memory", f->path, c, what);
                break;
            }
            keep = k, cap = c;
        }
        memcpy(keep + own++ * rec, buf, rec);
    }
    if (st == PS_OK) {
        size_t got = 0;
        uint8_t extra;
        if ((st = idx_read(f, &extra, 1, &got, err)) == PS_OK && got != 0)
            st = ps_error_set(err, PS_DATA,
                              "%s: bytes after the %" PRIu32 " %ss its header declares",
                              f->path, n, what);
    }
    free(buf);
    if (st != PS_OK) {
        free(keep);
        return st;
    }
    *out = keep;
    return PS_OK;
}

static void idx_destroy(void *state) {
    idx_state *x = state;
    if (x == NULL) return;
    free(x->img);
    free(x->lab);
    free(x);
}

static ps_status idx_open(const ps_format_args *a, void **state, ps_error *err) {
    if (a->o->labels == NULL || a->o->labels[0] == '\0')
        return ps_error_set(err, PS_CONFIG, "idx data needs a labels file (path is the images)");
    idx_state *x = calloc(1, sizeof(*x));
    if (x == NULL) return ps_error_set(err, PS_NOMEM, "idx reader: out of memory");
    x->rank = a->rank, x->world = a->world;
    idx_file img = {.path = a->path}, lab = {.path = a->o->labels};
    uint32_t dims[3], n_labels;
    ps_status st = idx_header(&img, IDX_IMAGES_MAGIC, "images", dims, err);
    if (st == PS_OK) st = idx_header(&lab, IDX_LABELS_MAGIC, "labels", &n_labels, err);
    if (st == PS_OK) {
        x->n = dims[0], x->rows = dims[1], x->cols = dims[2];
        uint64_t px = (uint64_t)x->rows * x->cols;
        if (px == 0 || px > IDX_MAX_PIXELS)
            st = ps_error_set(err, PS_DATA, "%s: images of %" PRIu32 " x %" PRIu32
                              " pixels (must be 1 to %u pixels)",
                              img.path, x->rows, x->cols, IDX_MAX_PIXELS);
        else if (n_labels != x->n)
            st = ps_error_set(err, PS_DATA, "%s has %" PRIu32 " images but %s has %" PRIu32
                              " labels", img.path, x->n, lab.path, n_labels);
        x->pixels = (uint32_t)px;
    }
    if (st == PS_OK)
        st = idx_body(&img, x->n, x->pixels, x->rank, x->world, "image", &x->img, err);
    if (st == PS_OK) st = idx_body(&lab, x->n, 1, x->rank, x->world, "label", &x->lab, err);
    if (img.gz != NULL) gzclose(img.gz);
    if (lab.gz != NULL) gzclose(lab.gz);
    if (st != PS_OK) {
        idx_destroy(x);
        return st;
    }
    *state = x;
    return PS_OK;
}

static uint64_t idx_num_rows(const void *state) { return ((const idx_state *)state)->n; }

static uint32_t idx_num_features(const void *state) {
    return ((const idx_state *)state)->pixels;
}

/* Image i (one of this shard's): pixel p is feature p, with value x/255. */
static void idx_row(void *state, uint64_t i, float *out, float *label) {
    const idx_state *x = state;
    const size_t k = (size_t)(i / x->world);
    const uint8_t *px = x->img + k * x->pixels;
    for (uint32_t p = 0; p < x->pixels; p++) out[p] = (float)px[p] / 255.0f;
    *label = (float)x->lab[k];
}

const ps_format_ops ps_format_idx = {
    .name = "idx",
    .text = false,
    .open = idx_open,
    .destroy = idx_destroy,
    .num_rows = idx_num_rows,
    .row = idx_row,
    .num_features = idx_num_features,
};
