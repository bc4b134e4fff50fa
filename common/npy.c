/* npy.c - .npy headers parsed and written as numpy 1.24 does, data streamed through stdio.
 *
 * File: "\x93NUMPY", major, minor, header length (u16 LE for 1.0, u32 LE for 2.0/3.0), then the
 * header: a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a final '\n' so that the data starts at a multiple of 64. */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "npy.c copies '<' items as they are: little-endian hosts only");

#define MAGIC "\x93NUMPY"
#define MAGIC_LEN 6
#define ALIGN 64
#define GROWTH_DIGITS 21 /* numpy's GROWTH_AXIS_MAX_DIGITS: spare room for shape[0] to grow */

static const struct {
    const char *descr;
    size_t size;
} dtypes[] = {[PS_NPY_F4] = {"<f4", 4}, [PS_NPY_U8] = {"<u8", 8}, [PS_NPY_U4] = {"<u4", 4}};
#define N_DTYPES (sizeof(dtypes) / sizeof(dtypes[0]))

const char *ps_npy_descr(ps_npy_dtype dtype) {
    return (size_t)dtype < N_DTYPES ? dtypes[dtype].descr : "?";
}

/* snprintf at buf + *at, clamped to len; *at counts what would have been written. */
__attribute__((format(printf, 4, 5))) static void cat(char *buf, size_t len, size_t *at,
                                                       const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + (*at < len ? *at : len), *at < len ? len - *at : 0, fmt, ap);
    va_end(ap);
    *at += n > 0 ? (size_t)n : 0;
}

char *ps_npy_shape_str(unsigned ndim, const uint64_t *shape, char *buf, size_t len) {
    size_t at = 0;
    if (len > 0) buf[0] = '\0';
    cat(buf, len, &at, "(");
    for (unsigned i = 0; i < ndim; i++) cat(buf, len, &at, "%s%" PRIu64, i ? ", " : "", shape[i]);
    cat(buf, len, &at, ndim == 1 ? ",)" : ")");
    return buf;
}

/* count = product of shape; false on overflow of count * item_size. */
static bool count_items(unsigned ndim, const uint64_t *shape, size_t item_size, uint64_t *count) {
    uint64_t c = 1;
    for (unsigned i = 0; i < ndim; i++) {
        if (shape[i] != 0 && c > UINT64_MAX / shape[i]) return false;
        c *= shape[i];
    }
    if (c > UINT64_MAX / item_size) return false;
    *count = c;
    return true;
}

/* --- reading ---------------------------------------------------------------------------------- */

struct ps_npy_reader {
    FILE *f;
    ps_npy_info info;
    uint64_t left; /* items not read yet */
    char path[];
};

/* A cursor over the header text; each helper skips the whitespace before its token. */
typedef struct {
    const char *p, *end;
} scan;

static void skip_ws(scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool eat(scan *s, char c) {
    skip_ws(s);
    if (s->p == s->end || *s->p != c) return false;
    s->p++;
    return true;
}

static bool eat_word(scan *s, const char *w) {
    size_t n = strlen(w);
    skip_ws(s);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0) return false;
    s->p += n;
    return true;
}

/* A 'quoted' or "quoted" string without escapes, into out (cap bytes with the NUL). */
static bool read_str(scan *s, char *out, size_t cap) {
    skip_ws(s);
    if (s->p == s->end || (*s->p != '\'' && *s->p != '"')) return false;
    const char q = *s->p++;
    size_t n = 0;
    for (; s->p < s->end && *s->p != q; s->p++) {
        if (*s->p == '\\' || n + 1 == cap) return false;
        out[n++] = *s->p;
    }
    if (s->p == s->end) return false;
    s->p++;
    out[n] = '\0';
    return true;
}

static bool read_uint(scan *s, uint64_t *v) {
    skip_ws(s);
    if (s->p == s->end || *s->p < '0' || *s->p > '9') return false;
    uint64_t x = 0;
    for (; s->p < s->end && *s->p >= '0' && *s->p <= '9'; s->p++) {
        uint64_t d = (uint64_t)(*s->p - '0');
        if (x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

/* The header dict into info (dtype from descr; fortran checked by the caller). On failure
 * writes the reason into why. */
static bool parse_header(const char *text, size_t len, ps_npy_info *info, bool *fortran,
                         char *descr, size_t descr_cap, char *why, size_t why_len) {
    scan s = {text, text + len};
    enum { DESCR = 1, FORTRAN = 2, SHAPE = 4 };
    unsigned seen = 0;
    if (!eat(&s, '{')) return snprintf(why, why_len, "not a dict"), false;
    while (!eat(&s, '}')) {
        char key[32];
        if (!read_str(&s, key, sizeof(key)))
            return snprintf(why, why_len, "expected a quoted key or '}'"), false;
        if (!eat(&s, ':')) return snprintf(why, why_len, "expected ':' after '%s'", key), false;
        unsigned bit = strcmp(key, "descr") == 0           ? DESCR
                       : strcmp(key, "fortran_order") == 0 ? FORTRAN
                       : strcmp(key, "shape") == 0         ? SHAPE
                                                           : 0;
        if (bit == 0) return snprintf(why, why_len, "unknown key '%s'", key), false;
        if (seen & bit) return snprintf(why, why_len, "'%s' given twice", key), false;
        seen |= bit;
        if (bit == DESCR && !read_str(&s, descr, descr_cap)) {
            skip_ws(&s);
            return snprintf(why, why_len, "descr: %s",
                            s.p < s.end && *s.p == '[' ? "structured dtypes are not supported"
                                                       : "expected a short quoted string"),
                   false;
        }
        if (bit == FORTRAN) {
            if (eat_word(&s, "True"))
                *fortran = true;
            else if (eat_word(&s, "False"))
                *fortran = false;
            else
                return snprintf(why, why_len, "fortran_order: expected True or False"), false;
        }
        if (bit == SHAPE) {
            if (!eat(&s, '(')) return snprintf(why, why_len, "shape: expected a tuple"), false;
            info->ndim = 0;
            bool comma = false;
            while (!eat(&s, ')')) {
                uint64_t d;
                if (info->ndim == PS_NPY_MAX_DIM)
                    return snprintf(why, why_len, "shape: more than %d dimensions",
                                    PS_NPY_MAX_DIM),
                           false;
                if (!read_uint(&s, &d))
                    return snprintf(why, why_len, "shape: expected a non-negative integer"), false;
                info->shape[info->ndim++] = d;
                comma = eat(&s, ',');
                if (!comma && !eat(&s, ')'))
                    return snprintf(why, why_len, "shape: expected ',' or ')'"), false;
                if (!comma) break;
            }
            if (info->ndim == 1 && !comma) /* (5) is the integer 5 to Python, not a tuple */
                return snprintf(why, why_len, "shape: (%" PRIu64 ") is not a tuple",
                                info->shape[0]),
                       false;
        }
        if (!eat(&s, ',')) {
            if (eat(&s, '}')) break;
            return snprintf(why, why_len, "expected ',' or '}' after '%s'", key), false;
        }
    }
    skip_ws(&s);
    if (s.p != s.end) return snprintf(why, why_len, "text after the dict"), false;
    if (seen != (DESCR | FORTRAN | SHAPE))
        return snprintf(why, why_len, "missing '%s'",
                        !(seen & DESCR) ? "descr" : !(seen & FORTRAN) ? "fortran_order" : "shape"),
               false;
    return true;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

ps_status ps_npy_open(const char *path, ps_npy_reader **out, ps_error *err) {
    *out = NULL;
    size_t plen = strlen(path);
    ps_npy_reader *r = calloc(1, sizeof(*r) + plen + 1);
    char *text = NULL;
    ps_status st = PS_OK;
    if (r == NULL) return ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
    memcpy(r->path, path, plen + 1);
    r->f = fopen(path, "rb");
    if (r->f == NULL) {
        st = ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    uint8_t pre[12];
    size_t got = fread(pre, 1, 10, r->f);
    if (got < 10 || memcmp(pre, MAGIC, MAGIC_LEN) != 0) {
        st = ps_error_set(err, PS_DATA, "%s: not a .npy file (no \\x93NUMPY magic)", path);
        goto fail;
    }
    const unsigned major = pre[6], minor = pre[7];
    if ((major < 1 || major > 3) || minor != 0) {
        st = ps_error_set(err, PS_DATA, "%s: .npy version %u.%u, only 1.0, 2.0 and 3.0 are read",
                          path, major, minor);
        goto fail;
    }
    uint64_t hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8, offset = 10;
    if (major > 1) { /* 2.0, 3.0: a 4-byte length */
        if (fread(pre + 10, 1, 2, r->f) != 2) {
            st = ps_error_set(err, PS_DATA, "%s: header truncated", path);
            goto fail;
        }
        hlen = le32(pre + 8), offset = 12;
    }
    if (hlen > PS_NPY_MAX_HEADER) {
        st = ps_error_set(err, PS_DATA, "%s: header of %" PRIu64 " bytes, the limit is %d", path,
                          hlen, PS_NPY_MAX_HEADER);
        goto fail;
    }
    text = malloc(hlen + 1);
    if (text == NULL) {
        st = ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (fread(text, 1, hlen, r->f) != hlen) {
        st = ps_error_set(err, PS_DATA, "%s: header truncated (%" PRIu64 " bytes announced)", path,
                          hlen);
        goto fail;
    }
    ps_npy_info *info = &r->info;
    char descr[16], why[128];
    bool fortran = false;
    if (!parse_header(text, hlen, info, &fortran, descr, sizeof(descr), why, sizeof(why))) {
        st = ps_error_set(err, PS_DATA, "%s: header: %s", path, why);
        goto fail;
    }
    size_t k = 0;
    while (k < N_DTYPES && strcmp(descr, dtypes[k].descr) != 0) k++;
    if (k == N_DTYPES) {
        st = ps_error_set(err, PS_DATA, "%s: %sdescr '%s' is not supported (want '<f4', '<u8' or "
                          "'<u4')", path, descr[0] == '>' ? "big-endian " : "", descr);
        goto fail;
    }
    if (fortran) {
        st = ps_error_set(err, PS_DATA, "%s: fortran_order True is not supported (save a "
                          "C-ordered array)", path);
        goto fail;
    }
    info->dtype = (ps_npy_dtype)k;
    info->item_size = dtypes[k].size;
    info->data_offset = offset + hlen;
    char shape[128];
    ps_npy_shape_str(info->ndim, info->shape, shape, sizeof(shape));
    if (!count_items(info->ndim, info->shape, info->item_size, &info->count)) {
        st = ps_error_set(err, PS_DATA, "%s: shape %s is too large", path, shape);
        goto fail;
    }
    struct stat sb;
    if (fstat(fileno(r->f), &sb) != 0) {
        st = ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = ps_error_set(err, PS_IO, "%s: not a regular file", path);
        goto fail;
    }
    const uint64_t need = info->count * info->item_size;
    const uint64_t have = (uint64_t)sb.st_size - info->data_offset; /* >= 0: the header was read */
    if (have != need) {
        st = ps_error_set(err, PS_DATA, "%s: shape %s needs %" PRIu64 " bytes of data, file has %"
                          PRIu64, path, shape, need, have);
        goto fail;
    }
    r->left = info->count;
    free(text);
    *out = r;
    return PS_OK;
fail:
    free(text);
    ps_npy_close(r);
    return st;
}

const ps_npy_info *ps_npy_info_of(const ps_npy_reader *r) { return &r->info; }
const char *ps_npy_path(const ps_npy_reader *r) { return r->path; }

ps_status ps_npy_read(ps_npy_reader *r, void *dst, uint64_t n, ps_error *err) {
    if (n > r->left)
        return ps_error_set(err, PS_INVALID_ARG, "%s: %" PRIu64 " items asked, %" PRIu64 " left",
                            r->path, n, r->left);
    const size_t bytes = (size_t)(n * r->info.item_size); /* <= the file's size: fits */
    if (fread(dst, 1, bytes, r->f) != bytes)
        return ps_error_set(err, PS_IO, "%s: reading item %" PRIu64 ": %s", r->path,
                            r->info.count - r->left,
                            ferror(r->f) ? strerror(errno) : "unexpected end of file");
    r->left -= n;
    return PS_OK;
}

void ps_npy_close(ps_npy_reader *r) {
    if (r == NULL) return;
    if (r->f != NULL) fclose(r->f);
    free(r);
}

/* --- writing ---------------------------------------------------------------------------------- */

struct ps_npy_writer {
    FILE *f;
    ps_npy_dtype dtype;
    unsigned ndim;
    uint64_t shape[PS_NPY_MAX_DIM];
    uint64_t row_bytes;  /* bytes per step of shape[0]; for ndim 0, the one item */
    size_t header_len;   /* magic to '\n', fixed at create */
    uint64_t bytes;      /* data appended */
    bool failed;         /* an append failed: finish refuses */
    bool created;        /* PATH.tmp is ours to remove */
    char *path, *tmp;
};

/* Writes the header for shape into buf (cap >= 512). total 0: numpy's size, returned; otherwise
 * padded to exactly total (which must be numpy's size for some shape[0] of the same shape). */
static size_t build_header(char *buf, ps_npy_dtype dtype, unsigned ndim, const uint64_t *shape,
                           size_t total) {
    char sh[256];
    ps_npy_shape_str(ndim, shape, sh, sizeof(sh));
    int n = snprintf(buf + 10, 400, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     dtypes[dtype].descr, sh);
    size_t len = 10 + (size_t)n;
    if (total == 0) {
        size_t growth = 0;
        if (ndim > 0) {
            char d0[24];
            growth = GROWTH_DIGITS - (size_t)snprintf(d0, sizeof(d0), "%" PRIu64, shape[0]);
        }
        size_t base = len + growth + 1; /* + '\n'; numpy pads a whole 64 when already aligned */
        total = base + ALIGN - base % ALIGN;
    }
    memcpy(buf, MAGIC, MAGIC_LEN);
    buf[6] = 1, buf[7] = 0;
    buf[8] = (char)((total - 10) & 0xff), buf[9] = (char)((total - 10) >> 8);
    memset(buf + len, ' ', total - 1 - len);
    buf[total - 1] = '\n';
    return total;
}

static char *dup_str(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s == NULL) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static void writer_free(ps_npy_writer *w) {
    if (w->f != NULL) fclose(w->f);
    free(w->path);
    free(w->tmp);
    free(w);
}

ps_status ps_npy_create(const char *path, ps_npy_dtype dtype, unsigned ndim,
                        const uint64_t *shape, ps_npy_writer **out, ps_error *err) {
    *out = NULL;
    if ((size_t)dtype >= N_DTYPES || ndim > PS_NPY_MAX_DIM)
        return ps_error_set(err, PS_INVALID_ARG, "%s: dtype %d, ndim %u", path, (int)dtype, ndim);
    ps_npy_writer *w = calloc(1, sizeof(*w));
    if (w == NULL) return ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
    ps_status st = PS_OK;
    w->dtype = dtype, w->ndim = ndim;
    for (unsigned i = 0; i < ndim; i++) w->shape[i] = shape[i];
    uint64_t row_items = 1;
    if (!count_items(ndim > 0 ? ndim - 1 : 0, w->shape + 1, dtypes[dtype].size, &row_items)) {
        st = ps_error_set(err, PS_INVALID_ARG, "%s: rows of this shape overflow", path);
        goto fail;
    }
    w->row_bytes = row_items * dtypes[dtype].size;
    w->path = dup_str(path, "");
    w->tmp = dup_str(path, ".tmp");
    if (w->path == NULL || w->tmp == NULL) {
        st = ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    char hdr[512];
    uint64_t first[PS_NPY_MAX_DIM];
    memcpy(first, w->shape, sizeof(first));
    if (ndim > 0 && first[0] == PS_NPY_ROWS_UNKNOWN) first[0] = 0; /* any: the size is the same */
    w->header_len = build_header(hdr, dtype, ndim, first, 0);
    w->f = fopen(w->tmp, "wb");
    if (w->f == NULL) {
        st = ps_error_set(err, PS_IO, "%s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    w->created = true;
    if (fwrite(hdr, 1, w->header_len, w->f) != w->header_len) {
        st = ps_error_set(err, PS_IO, "%s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    *out = w;
    return PS_OK;
fail:
    ps_npy_abort(w);
    return st;
}

ps_status ps_npy_append(ps_npy_writer *w, const void *data, size_t n_bytes, ps_error *err) {
    if (n_bytes > 0 && fwrite(data, 1, n_bytes, w->f) != n_bytes) {
        w->failed = true;
        return ps_error_set(err, PS_IO, "%s: %s", w->tmp, strerror(errno));
    }
    w->bytes += n_bytes;
    return PS_OK;
}

/* The rename is atomic already; syncing the directory makes it survive a power loss too. */
static void sync_dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash == path ? 1 : slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)fsync(fd); /* best effort: some filesystems refuse fsync on a directory */
    close(fd);
}

ps_status ps_npy_finish(ps_npy_writer *w, ps_error *err) {
    ps_status st = PS_OK;
    char sh[128];
    if (w->failed) {
        st = ps_error_set(err, PS_IO, "%s: an earlier write failed", w->tmp);
        goto fail;
    }
    uint64_t rows = 1;
    if (w->ndim > 0) {
        rows = w->row_bytes ? w->bytes / w->row_bytes : w->shape[0];
        if (rows == PS_NPY_ROWS_UNKNOWN) rows = 0; /* rows of zero bytes, count unknown */
    }
    if (w->bytes != rows * w->row_bytes) {
        ps_npy_shape_str(w->ndim > 0 ? w->ndim - 1 : 0, w->shape + 1, sh, sizeof(sh));
        st = ps_error_set(err, PS_DATA, "%s: %" PRIu64 " bytes appended are not %s of %" PRIu64
                          " bytes (row shape %s)", w->path, w->bytes,
                          w->ndim > 0 ? "whole rows" : "one item", w->row_bytes,
                          w->ndim > 0 ? sh : "()");
        goto fail;
    }
    if (w->ndim > 0 && w->shape[0] != PS_NPY_ROWS_UNKNOWN && w->shape[0] != rows) {
        st = ps_error_set(err, PS_DATA, "%s: %" PRIu64 " rows appended, the shape says %" PRIu64,
                          w->path, rows, w->shape[0]);
        goto fail;
    }
    if (w->ndim > 0) w->shape[0] = rows;
    char hdr[512];
    build_header(hdr, w->dtype, w->ndim, w->shape, w->header_len);
    if (fflush(w->f) != 0 || fseek(w->f, 0, SEEK_SET) != 0 ||
        fwrite(hdr, 1, w->header_len, w->f) != w->header_len || fflush(w->f) != 0 ||
        fsync(fileno(w->f)) != 0) {
        st = ps_error_set(err, PS_IO, "%s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    int rc = fclose(w->f);
    w->f = NULL;
    if (rc != 0 || rename(w->tmp, w->path) != 0) {
        st = ps_error_set(err, PS_IO, "%s: %s", rc != 0 ? w->tmp : w->path, strerror(errno));
        goto fail;
    }
    sync_dir_of(w->path);
    writer_free(w);
    return PS_OK;
fail:
    ps_npy_abort(w);
    return st;
}

void ps_npy_abort(ps_npy_writer *w) {
    if (w == NULL) return;
    if (w->f != NULL) fclose(w->f);
    w->f = NULL;
    if (w->created) remove(w->tmp);
    writer_free(w);
}
