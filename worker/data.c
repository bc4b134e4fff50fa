/* data.c - streaming csv/libsvm/random readers: a line source over stdio or zlib, row sharding,
 * per-format row parsers, a tf.data-style shuffle buffer and CSR batch assembly. */
#include "data.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define READ_CHUNK (64u * 1024u)
#define GZ_BUFFER (128u * 1024u)
#define WHY_MAX 200   /* "what is wrong" part of a row error */
#define TOKEN_SHOW 40 /* bytes of an offending token quoted in a message */
#define GOLDEN 0x9e3779b97f4a7c15ull

typedef struct {
    uint64_t *ids;
    float *vals;
    size_t n, cap;
} feat_vec;

typedef struct { /* one row held by the shuffle buffer */
    feat_vec fv;
    float label;
    uint64_t index;
    uint64_t order; /* its key in the epoch's order, when the whole shard is buffered */
} row_buf;

typedef enum { LINE_OK, LINE_EOF, LINE_LONG } line_kind;

struct ps_data {
    ps_data_format format;
    char *path; /* owned copy */
    uint32_t rank, world;
    bool one_based, skip_bad, shuffle;
    uint64_t num_ids; /* libsvm: ids (after one_based) must be below it; 0: any */
    size_t max_line, shuffle_cap;
    uint64_t seed;

    /* line source: buf holds cap bytes + 1 for a terminating NUL; [start, end) is unread */
    bool gzip;
    FILE *fp;
    gzFile gz;
    char *buf;
    size_t cap, start, end;
    bool eof;
    uint64_t line_no; /* lines consumed so far = 1-based number of the last line */

    /* csv */
    bool has_header;
    uint32_t n_fields, label_col;
    uint64_t first_line; /* line that fixed n_fields */

    /* random */
    uint64_t random_rows;
    uint32_t random_cols;

    /* position in the epoch */
    uint64_t next_row; /* global index of the next row */
    uint32_t phase;    /* next_row % world (file formats) */
    bool done;         /* source exhausted for this epoch */
    ps_status failed;  /* sticky error, with its message in fail */
    ps_error fail;

    /* shuffle buffer: slots[0, n_slots) are filled */
    row_buf *slots;
    size_t n_slots, slots_alloc;
    bool filled;
    bool whole;       /* the buffer holds the whole shard: emitted in key order, slots[emit..) */
    size_t emit;
    uint64_t rng;
    uint64_t order_key; /* mix64(mix64(seed) + epoch): the epoch's row order, rank-independent */

    /* batch */
    size_t b_cap;
    size_t *offsets;
    float *labels;
    uint64_t *row_index;
    feat_vec fv;

    /* skip_bad_lines */
    size_t skipped;
    char skip_msg[PS_DATA_SKIP_MESSAGES][sizeof(((ps_error *)0)->msg)];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}
static inline char *skip_ws(char *p) {
    while (is_ws(*p)) p++;
    return p;
}
static inline int show_len(size_t n) { return (int)(n < TOKEN_SHOW ? n : TOKEN_SHOW); }

/* splitmix64's output function.
 * reference: https://prng.di.unimi.it/splitmix64.c */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline uint64_t rng_next(uint64_t *s) { return mix64(*s += GOLDEN); }
static uint64_t rng_below(uint64_t *s, uint64_t n) { /* uniform in [0, n), n > 0, unbiased */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, r;
    do r = rng_next(s);
    while (r >= limit);
    return r % n;
}

/* strtof with Clinger's fast path: a plain decimal whose digits fit in 24 bits and whose power
 * of ten is within +-10 is (float)m * 10^e or (float)m / 10^-e, one correctly rounded float
 * operation on exact operands, hence bit-identical to strtof. Everything else (long mantissas,
 * big exponents, hex, inf/nan, leading spaces) goes to strtof. *end as strtof's. */
static float parse_float(const char *s, const char **end) {
#if FLT_EVAL_METHOD == 0
    static const float pow10f[] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f,
                                   1e6f, 1e7f, 1e8f, 1e9f, 1e10f};
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    uint64_t m = 0;
    int e10 = 0, nd = 0;
    for (; is_digit(*p); p++, nd++)
        if ((m = m * 10 + (uint64_t)(*p - '0')) > (1u << 24)) goto slow;
    if (*p == 'x' || *p == 'X') goto slow; /* hex float: strtof's business */
    if (*p == '.')
        for (p++; is_digit(*p); p++, nd++, e10--)
            if ((m = m * 10 + (uint64_t)(*p - '0')) > (1u << 24)) goto slow;
    if (nd == 0) goto slow;
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        bool eneg = false;
        if (*q == '-' || *q == '+') eneg = *q++ == '-';
        if (!is_digit(*q)) goto slow;
        int x = 0;
        for (; is_digit(*q); q++)
            if ((x = x * 10 + (*q - '0')) > 100) goto slow;
        e10 += eneg ? -x : x;
        p = q;
    }
    if (e10 < -10 || e10 > 10) goto slow;
    float f = (float)m;
    f = e10 < 0 ? f / pow10f[-e10] : f * pow10f[e10];
    *end = p;
    return neg ? -f : f;
slow:
#endif
    {
        char *e;
        float v = strtof(s, &e);
        *end = e;
        return v;
    }
}

static bool fv_reserve(feat_vec *v, size_t need) {
    if (need <= v->cap && v->ids != NULL) return true; /* never NULL once asked: batches of no
                                                          features still hand out arrays */
    size_t cap = v->cap ? v->cap : 64;
    while (cap < need) cap *= 2;
    uint64_t *ids = realloc(v->ids, cap * sizeof(*ids));
    if (ids == NULL) return false;
    v->ids = ids;
    float *vals = realloc(v->vals, cap * sizeof(*vals));
    if (vals == NULL) return false;
    v->vals = vals;
    v->cap = cap;
    return true;
}

static void fv_free(feat_vec *v) {
    free(v->ids);
    free(v->vals);
}

/* ---- line source ------------------------------------------------------------------------ */

static void src_close(ps_data *d) {
    if (d->gz != NULL) gzclose(d->gz);
    if (d->fp != NULL) fclose(d->fp);
    d->gz = NULL, d->fp = NULL;
}

static ps_status src_open(ps_data *d, ps_error *err) {
    src_close(d);
    d->start = d->end = 0, d->eof = false, d->line_no = 0;
    errno = 0;
    if (d->gzip) {
        d->gz = gzopen(d->path, "rb");
        if (d->gz == NULL)
            return ps_error_set(err, errno ? PS_IO : PS_NOMEM, "open %s: %s", d->path,
                                errno ? strerror(errno) : "out of memory");
        gzbuffer(d->gz, GZ_BUFFER);
    } else {
        d->fp = fopen(d->path, "rb");
        if (d->fp == NULL) return ps_error_set(err, PS_IO, "open %s: %s", d->path, strerror(errno));
        setvbuf(d->fp, NULL, _IONBF, 0); /* we buffer ourselves */
    }
    return PS_OK;
}

static ps_status src_fill(ps_data *d, ps_error *err) {
    size_t room = d->cap - d->end, got;
    if (d->gz != NULL) {
        int r = gzread(d->gz, d->buf + d->end, (unsigned)room);
        int zerr = Z_OK;
        const char *zmsg = gzerror(d->gz, &zerr);
        if (r < 0 || (zerr != Z_OK && zerr != Z_BUF_ERROR))
            return ps_error_set(err, PS_IO, "read %s: %s", d->path,
                                zerr == Z_ERRNO ? strerror(errno) : zmsg);
        if (r == 0 && zerr == Z_BUF_ERROR) /* input ended inside the deflate stream */
            return ps_error_set(err, PS_IO, "read %s: truncated gzip file (%s)", d->path, zmsg);
        got = (size_t)r;
    } else {
        got = fread(d->buf + d->end, 1, room, d->fp);
        if (got == 0 && ferror(d->fp))
            return ps_error_set(err, PS_IO, "read %s: %s", d->path, strerror(errno));
    }
    if (got == 0) d->eof = true;
    d->end += got;
    return PS_OK;
}

/* Next line, NUL-terminated in place, without its '\n' (a UTF-8 BOM on line 1 is dropped).
 * LINE_LONG: the line exceeded max_line bytes and was consumed without being returned. */
static ps_status src_line(ps_data *d, line_kind *kind, char **line, size_t *len, ps_error *err) {
    bool too_long = false;
    for (;;) {
        char *p = d->buf + d->start;
        size_t avail = d->end - d->start;
        char *nl = memchr(p, '\n', avail);
        if (nl != NULL || (d->eof && (avail > 0 || too_long))) {
            size_t n = nl != NULL ? (size_t)(nl - p) : avail;
            d->start += nl != NULL ? n + 1 : n;
            d->line_no++;
            if (too_long || n > d->max_line) {
                *kind = LINE_LONG;
                return PS_OK;
            }
            p[n] = '\0';
            if (d->line_no == 1 && n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) p += 3, n -= 3;
            *kind = LINE_OK, *line = p, *len = n;
            return PS_OK;
        }
        if (d->eof) {
            *kind = LINE_EOF;
            return PS_OK;
        }
        if (d->start > 0) { /* keep the partial line at the front */
            memmove(d->buf, p, avail);
            d->start = 0, d->end = avail;
        }
        if (d->end > d->max_line) { /* the partial line alone is over the limit: drop it */
            too_long = true;
            d->start = d->end = 0;
        } else if (d->end == d->cap) {
            size_t cap = d->cap * 2 < d->max_line + 1 ? d->cap * 2 : d->max_line + 1;
            char *b = realloc(d->buf, cap + 1);
            if (b == NULL)
                return ps_error_set(err, PS_NOMEM, "%s: line buffer of %zu bytes", d->path, cap);
            d->buf = b, d->cap = cap;
        }
        ps_status st = src_fill(d, err);
        if (st != PS_OK) return st;
    }
}

/* ---- row parsers ------------------------------------------------------------------------ */

/* Each parser appends one row's features to fv and sets *label. On PS_DATA `why` says what is
 * wrong; fv may hold a partial row (the caller truncates it). */

static ps_status parse_libsvm(ps_data *d, char *s, feat_vec *fv, float *label, char *why) {
    char *hash = strchr(s, '#');
    if (hash != NULL) *hash = '\0';
    char *p = skip_ws(s);
    const char *e;
    float y = parse_float(p, &e);
    if (e == p || !(*e == '\0' || is_ws(*e))) {
        size_t n = strcspn(p, " \t\r\v\f");
        snprintf(why, WHY_MAX, "label \"%.*s\" is not a number", show_len(n), p);
        return PS_DATA;
    }
    if (!isfinite(y)) {
        snprintf(why, WHY_MAX, "label \"%.*s\" is not finite", show_len((size_t)(e - p)), p);
        return PS_DATA;
    }
    *label = y == -1.0f ? 0.0f : y;
    for (p = (char *)e;;) {
        p = skip_ws(p);
        if (*p == '\0') return PS_OK;
        char *tok = p, *q = p;
        uint64_t id = 0;
        bool overflow = false;
        for (; is_digit(*q); q++) {
            unsigned dg = (unsigned)(*q - '0');
            if (id > (UINT64_MAX - dg) / 10) overflow = true;
            id = id * 10 + dg;
        }
        if (q == tok || *q != ':' || overflow) { /* slow path: say what is wrong */
            size_t n = strcspn(tok, " \t\r\v\f");
            if (n >= 4 && memcmp(tok, "qid:", 4) == 0) {
                p = tok + n;
                continue;
            }
            const char *what = memchr(tok, ':', n) == NULL ? "missing ':'"
                               : *tok == '-'              ? "feature id is negative"
                               : q == tok || *q != ':'
                                   ? "feature id is not a non-negative integer"
                                   : "feature id overflows uint64 (max 18446744073709551615)";
            snprintf(why, WHY_MAX, "token \"%.*s\": %s", show_len(n), tok, what);
            return PS_DATA;
        }
        if (d->one_based) {
            if (id == 0) {
                size_t n = strcspn(tok, " \t\r\v\f");
                snprintf(why, WHY_MAX, "token \"%.*s\": feature id 0 but ids are 1-based",
                         show_len(n), tok);
                return PS_DATA;
            }
            id--;
        }
        if (d->num_ids != 0 && id >= d->num_ids) {
            size_t n = strcspn(tok, " \t\r\v\f");
            snprintf(why, WHY_MAX, "token \"%.*s\": feature id beyond the model's %llu inputs "
                     "(model.input.num_ids or model.input_dim)", show_len(n), tok,
                     (unsigned long long)d->num_ids);
            return PS_DATA;
        }
        float v = parse_float(q + 1, &e);
        if (e == q + 1 || !(*e == '\0' || is_ws(*e)) || !isfinite(v)) {
            size_t n = strcspn(tok, " \t\r\v\f");
            snprintf(why, WHY_MAX, "token \"%.*s\": value is not %s", show_len(n), tok,
                     e == q + 1 || !(*e == '\0' || is_ws(*e)) ? "a number" : "finite");
            return PS_DATA;
        }
        if (fv->n == fv->cap && !fv_reserve(fv, fv->n + 1)) return PS_NOMEM;
        fv->ids[fv->n] = id, fv->vals[fv->n] = v, fv->n++;
        p = (char *)e;
    }
}

static size_t count_fields(const char *s, size_t n) {
    size_t k = 1;
    for (const char *c = s; (c = memchr(c, ',', n - (size_t)(c - s))) != NULL; c++) k++;
    return k;
}

static ps_status parse_csv(ps_data *d, char *s, size_t len, feat_vec *fv, float *label,
                           char *why) {
    size_t nf = count_fields(s, len);
    if (nf != d->n_fields) {
        snprintf(why, WHY_MAX, "%zu fields, expected %" PRIu32 " (as in line %" PRIu64 ")", nf,
                 d->n_fields, d->first_line);
        return PS_DATA;
    }
    if (!fv_reserve(fv, fv->n + nf - 1)) return PS_NOMEM;
    uint64_t *ids = fv->ids + fv->n;
    float *vals = fv->vals + fv->n;
    uint32_t j = 0;
    char *p = s;
    for (uint32_t f = 0; f < nf; f++) {
        p = skip_ws(p);
        const char *e;
        float v = parse_float(p, &e);
        char *t = skip_ws((char *)e);
        if (e == p || (*t != ',' && *t != '\0') || !isfinite(v)) {
            size_t n = strcspn(p, ",");
            while (n > 0 && is_ws(p[n - 1])) n--;
            if (n == 0)
                snprintf(why, WHY_MAX, "field %" PRIu32 ": empty", f + 1);
            else
                snprintf(why, WHY_MAX, "field %" PRIu32 ": \"%.*s\" is not %s", f + 1,
                         show_len(n), p, isfinite(v) ? "a number" : "finite");
            return PS_DATA;
        }
        if (f == d->label_col) {
            *label = v;
        } else {
            ids[j] = j, vals[j] = v;
            j++;
        }
        p = t + 1;
    }
    fv->n += j;
    return PS_OK;
}

/* Row i of the random data set: h = mix64(seed ^ mix64(i + GOLDEN)), z_k = mix64(h + k*GOLDEN)
 * for k = 1, 2, ...; label = z_1 >> 63; x_j = (z_{j+2} >> 40) * 2^-24, j = 0..d-1. */
static ps_status gen_random(ps_data *d, uint64_t i, feat_vec *fv, float *label) {
    if (!fv_reserve(fv, fv->n + d->random_cols)) return PS_NOMEM;
    uint64_t h = mix64(d->seed ^ mix64(i + GOLDEN));
    *label = (float)(mix64(h + GOLDEN) >> 63);
    for (uint32_t j = 0; j < d->random_cols; j++) {
        fv->ids[fv->n + j] = j;
        fv->vals[fv->n + j] = (float)(mix64(h + (uint64_t)(j + 2) * GOLDEN) >> 40) * 0x1p-24f;
    }
    fv->n += d->random_cols;
    return PS_OK;
}

/* ---- rows of this shard ----------------------------------------------------------------- */

static ps_status bad_row(ps_data *d, const char *why, ps_error *err) {
    if (!d->skip_bad)
        return ps_error_set(err, PS_DATA, "%s:%" PRIu64 ": %s", d->path, d->line_no, why);
    if (d->skipped < PS_DATA_SKIP_MESSAGES)
        snprintf(d->skip_msg[d->skipped], sizeof(d->skip_msg[0]), "%s:%" PRIu64 ": %s", d->path,
                 d->line_no, why);
    d->skipped++;
    return PS_OK;
}

/* Appends this shard's next row to fv; *got = false at the end of the epoch. */
static ps_status next_row(ps_data *d, feat_vec *fv, float *label, uint64_t *index, bool *got,
                          ps_error *err) {
    *got = false;
    if (d->done) return PS_OK;
    if (d->format == PS_DATA_RANDOM) {
        if (d->next_row >= d->random_rows) {
            d->done = true;
            return PS_OK;
        }
        *index = d->next_row;
        ps_status st = gen_random(d, d->next_row, fv, label);
        if (st != PS_OK) return ps_error_set(err, st, "random row %" PRIu64, d->next_row);
        d->next_row = d->random_rows - d->next_row > d->world ? d->next_row + d->world
                                                              : d->random_rows;
        *got = true;
        return PS_OK;
    }
    for (;;) {
        line_kind kind;
        char *s = NULL;
        size_t len = 0;
        ps_status st = src_line(d, &kind, &s, &len, err);
        if (st != PS_OK) return st;
        if (kind == LINE_EOF) {
            d->done = true;
            return PS_OK;
        }
        if (kind == LINE_OK) { /* blank and comment-only lines are not rows */
            char *p = skip_ws(s);
            if (p == s + len || (d->format == PS_DATA_LIBSVM && *p == '#')) continue;
        }
        uint64_t row = d->next_row++;
        bool mine = d->phase == d->rank;
        if (++d->phase == d->world) d->phase = 0;
        if (!mine) continue;

        char why[WHY_MAX];
        if (kind == LINE_LONG) {
            snprintf(why, sizeof(why), "line longer than %zu bytes", d->max_line);
        } else if (memchr(s, '\0', len) != NULL) {
            snprintf(why, sizeof(why), "NUL byte in line");
        } else {
            while (len > 0 && is_ws(s[len - 1])) s[--len] = '\0';
            size_t mark = fv->n;
            st = d->format == PS_DATA_CSV ? parse_csv(d, s, len, fv, label, why)
                                          : parse_libsvm(d, s, fv, label, why);
            if (st == PS_OK) {
                *index = row, *got = true;
                return PS_OK;
            }
            fv->n = mark;
            if (st != PS_DATA)
                return ps_error_set(err, st, "%s:%" PRIu64 ": %s", d->path, d->line_no,
                                    ps_status_str(st));
        }
        st = bad_row(d, why, err);
        if (st != PS_OK) return st;
    }
}

/* ---- open / rewind ---------------------------------------------------------------------- */

static void trim(char **p, size_t *n) {
    while (*n > 0 && is_ws(**p)) (*p)++, (*n)--;
    while (*n > 0 && is_ws((*p)[*n - 1])) (*n)--;
}

/* Reads the first non-empty line: header or data, the column count and the label column. */
static ps_status csv_probe(ps_data *d, const ps_data_options *o, ps_error *err) {
    char *s = NULL;
    size_t len = 0;
    bool found_line = false;
    while (!found_line) {
        line_kind kind;
        ps_status st = src_line(d, &kind, &s, &len, err);
        if (st != PS_OK) return st;
        if (kind == LINE_EOF) break; /* no non-empty line: no rows */
        if (kind == LINE_LONG)
            return ps_error_set(err, PS_DATA, "%s:%" PRIu64 ": line longer than %zu bytes",
                                d->path, d->line_no, d->max_line);
        if (memchr(s, '\0', len) != NULL)
            return ps_error_set(err, PS_DATA, "%s:%" PRIu64 ": NUL byte in line", d->path,
                                d->line_no);
        char *p = s;
        size_t n = len;
        trim(&p, &n);
        found_line = n > 0;
    }
    int name_col = -1;
    if (found_line) {
        d->n_fields = (uint32_t)count_fields(s, len);
        d->first_line = d->line_no;
        char *f = s, *stop = s + len;
        for (uint32_t i = 0; i < d->n_fields; i++) { /* header if any field is not a number */
            char *c = memchr(f, ',', (size_t)(stop - f));
            size_t n = c != NULL ? (size_t)(c - f) : (size_t)(stop - f);
            char *p = f;
            trim(&p, &n);
            if (n > 0) {
                const char *e;
                char saved = p[n];
                p[n] = '\0';
                parse_float(p, &e);
                if (e != p + n) d->has_header = true;
                if (n >= 2 && p[0] == '"' && p[n - 1] == '"') p++, n -= 2;
                if (name_col < 0 && o->label_name != NULL && strlen(o->label_name) == n &&
                    memcmp(p, o->label_name, n) == 0)
                    name_col = (int)i;
                p[n] = saved;
            }
            f = c != NULL ? c + 1 : stop;
        }
    }
    if (o->label_name != NULL) {
        if (!d->has_header)
            return ps_error_set(err, PS_CONFIG,
                                "%s: label_name \"%s\" needs a header line, but the first line "
                                "is %s",
                                d->path, o->label_name, found_line ? "data" : "missing");
        if (name_col < 0)
            return ps_error_set(err, PS_CONFIG,
                                "%s: label_name \"%s\" is not in the header (line %" PRIu64
                                ", %" PRIu32 " columns)",
                                d->path, o->label_name, d->first_line, d->n_fields);
        d->label_col = (uint32_t)name_col;
    } else if (found_line) {
        int64_t c = o->label_column < 0 ? (int64_t)d->n_fields + o->label_column
                                        : (int64_t)o->label_column;
        if (c < 0 || c >= (int64_t)d->n_fields)
            return ps_error_set(err, PS_CONFIG,
                                "label_column %d out of range for %" PRIu32
                                " columns in %s (must be in [-%" PRIu32 ", %" PRIu32 "])",
                                o->label_column, d->n_fields, d->path, d->n_fields,
                                d->n_fields - 1);
        d->label_col = (uint32_t)c;
    }
    return PS_OK;
}

static ps_status rewind_impl(ps_data *d, uint32_t epoch, ps_error *err) {
    d->failed = PS_OK;
    d->done = false;
    d->n_slots = 0, d->filled = false, d->whole = false, d->emit = 0;
    d->order_key = mix64(mix64(d->seed) + epoch);
    d->rng = mix64(d->order_key + d->rank);
    d->skipped = 0;
    d->phase = 0;
    if (d->format == PS_DATA_RANDOM) {
        d->next_row = d->rank;
        return PS_OK;
    }
    d->next_row = 0;
    ps_status st = src_open(d, err);
    if (st != PS_OK) return st;
    if (d->has_header) { /* skip up to and including the header line */
        while (d->line_no < d->first_line) {
            line_kind kind;
            char *s;
            size_t len;
            st = src_line(d, &kind, &s, &len, err);
            if (st != PS_OK) return st;
            if (kind == LINE_EOF)
                return ps_error_set(err, PS_IO, "%s: file shrank below its header line %" PRIu64,
                                    d->path, d->first_line);
        }
    }
    return PS_OK;
}

void ps_data_options_init(ps_data_options *o) {
    memset(o, 0, sizeof(*o));
    o->format = PS_DATA_CSV;
    o->one_based = true;
}

ps_status ps_data_format_parse(const char *s, ps_data_format *out, ps_error *err) {
    if (s != NULL && strcmp(s, "csv") == 0) *out = PS_DATA_CSV;
    else if (s != NULL && (strcmp(s, "libsvm") == 0 || strcmp(s, "svmlight") == 0))
        *out = PS_DATA_LIBSVM;
    else if (s != NULL && strcmp(s, "random") == 0) *out = PS_DATA_RANDOM;
    else
        return ps_error_set(err, PS_CONFIG,
                            "data format \"%s\" unknown (expected csv, libsvm, svmlight, random)",
                            s != NULL ? s : "(null)");
    return PS_OK;
}

const char *ps_data_format_name(ps_data_format f) {
    switch (f) {
    case PS_DATA_CSV: return "csv";
    case PS_DATA_LIBSVM: return "libsvm";
    case PS_DATA_RANDOM: return "random";
    }
    return "unknown";
}

ps_status ps_data_open(const ps_data_options *o, uint32_t rank, uint32_t world, ps_data **out,
                       ps_error *err) {
    if (out == NULL || o == NULL)
        return ps_error_set(err, PS_INVALID_ARG, "ps_data_open: NULL %s", o ? "out" : "options");
    *out = NULL;
    if (world == 0 || rank >= world)
        return ps_error_set(err, PS_INVALID_ARG, "rank %" PRIu32 " out of range for world %" PRIu32,
                            rank, world);
    if (o->format != PS_DATA_CSV && o->format != PS_DATA_LIBSVM && o->format != PS_DATA_RANDOM)
        return ps_error_set(err, PS_CONFIG, "data format %d unknown", (int)o->format);
    size_t shuffle_cap = o->shuffle_buffer ? o->shuffle_buffer : PS_DATA_DEFAULT_SHUFFLE_BUFFER;
    if (shuffle_cap > PS_DATA_MAX_SHUFFLE_BUFFER)
        return ps_error_set(err, PS_CONFIG, "shuffle_buffer %zu exceeds limit %u",
                            o->shuffle_buffer, PS_DATA_MAX_SHUFFLE_BUFFER);
    size_t max_line = o->max_line_bytes ? o->max_line_bytes : PS_DATA_DEFAULT_MAX_LINE;
    if (max_line > PS_DATA_MAX_LINE_LIMIT)
        return ps_error_set(err, PS_CONFIG, "max_line_bytes %zu exceeds limit %u",
                            o->max_line_bytes, PS_DATA_MAX_LINE_LIMIT);
    if (o->format == PS_DATA_RANDOM) {
        if (o->random_cols == 0 || o->random_cols > PS_DATA_MAX_RANDOM_COLS)
            return ps_error_set(err, PS_CONFIG, "random_cols %" PRIu32 " must be in [1, %u]",
                                o->random_cols, PS_DATA_MAX_RANDOM_COLS);
    } else if (o->path == NULL || o->path[0] == '\0') {
        return ps_error_set(err, PS_CONFIG, "%s data needs a path",
                            ps_data_format_name(o->format));
    }

    ps_data *d = calloc(1, sizeof(*d));
    if (d == NULL) return ps_error_set(err, PS_NOMEM, "ps_data_open: %zu bytes", sizeof(*d));
    ps_status st = PS_NOMEM;
    d->format = o->format;
    d->rank = rank, d->world = world;
    d->one_based = o->one_based, d->skip_bad = o->skip_bad_lines, d->shuffle = o->shuffle;
    d->num_ids = o->num_ids;
    d->max_line = max_line, d->shuffle_cap = shuffle_cap;
    d->seed = o->seed;
    d->random_rows = o->random_rows, d->random_cols = o->random_cols;
    if (d->format == PS_DATA_RANDOM) {
        d->path = strdup("random");
        if (d->path == NULL) goto fail_nomem;
    } else {
        size_t n = strlen(o->path);
        d->path = strdup(o->path);
        d->gzip = n >= 3 && strcmp(o->path + n - 3, ".gz") == 0;
        d->cap = READ_CHUNK < max_line + 1 ? READ_CHUNK : max_line + 1;
        d->buf = malloc(d->cap + 1);
        if (d->path == NULL || d->buf == NULL) goto fail_nomem;
        if (d->format == PS_DATA_CSV) {
            if ((st = src_open(d, err)) != PS_OK || (st = csv_probe(d, o, err)) != PS_OK)
                goto fail;
        }
    }
    if ((st = rewind_impl(d, 0, err)) != PS_OK) goto fail;
    *out = d;
    return PS_OK;
fail_nomem:
    st = ps_error_set(err, PS_NOMEM, "ps_data_open: buffers for %s", o->path ? o->path : "random");
fail:
    ps_data_destroy(d);
    return st;
}

void ps_data_destroy(ps_data *d) {
    if (d == NULL) return;
    src_close(d);
    for (size_t i = 0; i < d->slots_alloc; i++) fv_free(&d->slots[i].fv);
    free(d->slots);
    fv_free(&d->fv);
    free(d->offsets);
    free(d->labels);
    free(d->row_index);
    free(d->buf);
    free(d->path);
    free(d);
}

ps_status ps_data_rewind(ps_data *d, uint32_t epoch, ps_error *err) {
    if (d == NULL) return ps_error_set(err, PS_INVALID_ARG, "ps_data_rewind: NULL reader");
    ps_status st = rewind_impl(d, epoch, &d->fail);
    if (st != PS_OK) {
        d->failed = st;
        if (err != NULL) *err = d->fail;
    }
    return st;
}

/* ---- batches ---------------------------------------------------------------------------- */

static ps_status batch_reserve(ps_data *d, size_t max_b, ps_error *err) {
    if (max_b <= d->b_cap) return PS_OK;
    size_t *off = realloc(d->offsets, (max_b + 1) * sizeof(*off));
    if (off != NULL) d->offsets = off;
    float *lab = realloc(d->labels, max_b * sizeof(*lab));
    if (lab != NULL) d->labels = lab;
    uint64_t *idx = realloc(d->row_index, max_b * sizeof(*idx));
    if (idx != NULL) d->row_index = idx;
    if (off == NULL || lab == NULL || idx == NULL)
        return ps_error_set(err, PS_NOMEM, "batch of %zu rows", max_b);
    d->b_cap = max_b;
    return PS_OK;
}

/* Reads the next row of the shard into slot i (reusing its arrays); *got as next_row. */
static ps_status slot_load(ps_data *d, size_t i, bool *got, ps_error *err) {
    row_buf *r = &d->slots[i];
    r->fv.n = 0;
    return next_row(d, &r->fv, &r->label, &r->index, got, err);
}

/* The rank of row `index` in the epoch's order (see data.h: shuffle). */
static inline uint64_t order_of(const ps_data *d, uint64_t index) {
    return mix64(d->order_key ^ mix64(index + GOLDEN));
}

static int cmp_order(const void *a, const void *b) {
    const row_buf *x = a, *y = b;
    if (x->order != y->order) return x->order < y->order ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static ps_status shuffle_fill(ps_data *d, ps_error *err) {
    bool got = true;
    while (d->n_slots < d->shuffle_cap) {
        if (d->n_slots == d->slots_alloc) {
            size_t n = d->slots_alloc ? d->slots_alloc * 2 : 256;
            if (n > d->shuffle_cap) n = d->shuffle_cap;
            row_buf *s = realloc(d->slots, n * sizeof(*s));
            if (s == NULL) return ps_error_set(err, PS_NOMEM, "shuffle buffer of %zu rows", n);
            memset(s + d->slots_alloc, 0, (n - d->slots_alloc) * sizeof(*s));
            d->slots = s, d->slots_alloc = n;
        }
        ps_status st = slot_load(d, d->n_slots, &got, err);
        if (st != PS_OK) return st;
        if (!got) break;
        d->n_slots++;
    }
    d->filled = true;
    if (!got) { /* the whole shard is here: the epoch's order, by key */
        d->whole = true;
        for (size_t i = 0; i < d->n_slots; i++) d->slots[i].order = order_of(d, d->slots[i].index);
        qsort(d->slots, d->n_slots, sizeof(*d->slots), cmp_order);
    }
    return PS_OK;
}

/* Appends a buffered row to the batch as its row b. */
static ps_status take_slot(ps_data *d, const row_buf *r, size_t b, ps_error *err) {
    if (!fv_reserve(&d->fv, d->fv.n + r->fv.n))
        return ps_error_set(err, PS_NOMEM, "batch of %zu features", d->fv.n + r->fv.n);
    if (r->fv.n > 0) { /* a row without features may have no arrays at all (F6) */
        memcpy(d->fv.ids + d->fv.n, r->fv.ids, r->fv.n * sizeof(uint64_t));
        memcpy(d->fv.vals + d->fv.n, r->fv.vals, r->fv.n * sizeof(float));
    }
    d->fv.n += r->fv.n;
    d->labels[b] = r->label, d->row_index[b] = r->index;
    return PS_OK;
}

static ps_status next_impl(ps_data *d, size_t max_b, size_t *B, ps_error *err) {
    ps_status st = batch_reserve(d, max_b, err);
    if (st != PS_OK) return st;
    d->fv.n = 0;
    d->offsets[0] = 0;
    if (d->shuffle && !d->filled && (st = shuffle_fill(d, err)) != PS_OK) return st;
    size_t b = 0;
    while (b < max_b) {
        if (!d->shuffle) {
            bool got;
            st = next_row(d, &d->fv, &d->labels[b], &d->row_index[b], &got, err);
            if (st != PS_OK) return st;
            if (!got) break;
        } else if (d->whole) { /* the next row in the epoch's order */
            if (d->emit == d->n_slots) break;
            if ((st = take_slot(d, &d->slots[d->emit++], b, err)) != PS_OK) return st;
        } else { /* emit a random buffered row, refill its slot from the stream */
            if (d->n_slots == 0) break;
            size_t i = (size_t)rng_below(&d->rng, d->n_slots);
            if ((st = take_slot(d, &d->slots[i], b, err)) != PS_OK) return st;
            bool got;
            if ((st = slot_load(d, i, &got, err)) != PS_OK) return st;
            if (!got) { /* stream done: shrink the buffer */
                row_buf last = d->slots[--d->n_slots];
                d->slots[d->n_slots] = d->slots[i];
                d->slots[i] = last;
            }
        }
        d->offsets[++b] = d->fv.n;
        *B = b;
    }
    return PS_OK;
}

ps_status ps_data_next(ps_data *d, size_t max_b, ps_data_batch *out, ps_error *err) {
    if (d == NULL || out == NULL)
        return ps_error_set(err, PS_INVALID_ARG, "ps_data_next: NULL %s", d ? "out" : "reader");
    memset(out, 0, sizeof(*out));
    if (max_b == 0 || max_b > PS_DATA_MAX_BATCH)
        return ps_error_set(err, PS_INVALID_ARG, "max_b %zu must be in [1, %u]", max_b,
                            PS_DATA_MAX_BATCH);
    size_t B = 0;
    if (d->failed == PS_OK && !fv_reserve(&d->fv, 1))
        d->failed = ps_error_set(&d->fail, PS_NOMEM, "batch: out of memory");
    if (d->failed == PS_OK) d->failed = next_impl(d, max_b, &B, &d->fail);
    if (d->failed != PS_OK) {
        if (err != NULL) *err = d->fail;
        return d->failed;
    }
    out->B = B;
    out->offsets = d->offsets, out->ids = d->fv.ids, out->vals = d->fv.vals;
    out->labels = d->labels, out->row_index = d->row_index;
    return PS_OK;
}

size_t ps_data_skipped(const ps_data *d) { return d != NULL ? d->skipped : 0; }

const char *ps_data_skipped_message(const ps_data *d, size_t i) {
    if (d == NULL || i >= d->skipped || i >= PS_DATA_SKIP_MESSAGES) return NULL;
    return d->skip_msg[i];
}

uint32_t ps_data_num_features_hint(const ps_data *d) {
    if (d == NULL) return 0;
    if (d->format == PS_DATA_RANDOM) return d->random_cols;
    if (d->format == PS_DATA_CSV && d->n_fields > 0) return d->n_fields - 1;
    return 0;
}
