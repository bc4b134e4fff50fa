/* data.c - what every format shares: the line source over stdio or zlib, row numbering and
 * sharding, validation_split's row range, a tf.data-style shuffle buffer and batch assembly (CSR,
 * or a dense matrix for binary formats),
 * and for text formats the parse-once cache (data_cache.c): the rows next_row() hands out come
 * from the text or from the cache, and everything after it (shuffle, batches) is the same code.
 * Each format parses its rows in its own file, behind data_format.h. */
#include "data.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data_cache.h"
#include "data_format.h"

#define READ_CHUNK (64u * 1024u)
#define GZ_BUFFER (128u * 1024u)

/* The formats, indexed by ps_data_format. */
static const ps_format_ops *const formats[] = {
    [PS_DATA_CSV] = &ps_format_csv,       [PS_DATA_LIBSVM] = &ps_format_libsvm,
    [PS_DATA_RANDOM] = &ps_format_random, [PS_DATA_CRITEO] = &ps_format_criteo,
    [PS_DATA_IDX] = &ps_format_idx,
};
#define N_FORMATS (sizeof(formats) / sizeof(formats[0]))

struct ps_lines { /* buf holds cap bytes + 1 for a terminating NUL; [start, end) is unread */
    const char *path; /* the reader's copy */
    bool gzip;
    FILE *fp;
    gzFile gz;
    char *buf;
    size_t cap, start, end, max_line;
    bool eof;
    uint64_t line_no; /* lines consumed so far = 1-based number of the last line */
};

typedef struct { /* one row held by the shuffle buffer (a binary format: its index only) */
    ps_fvec fv;
    float label;
    uint64_t index;
    uint64_t order; /* its key in the epoch's order, when the whole shard is buffered */
} row_buf;

struct ps_data {
    const ps_format_ops *ops;
    void *fs; /* the format's state */
    char *path; /* owned copy */
    uint32_t rank, world;
    bool skip_bad, shuffle;
    size_t shuffle_cap;
    uint64_t seed;

    ps_lines src;          /* text formats */
    uint64_t header_lines; /* text: lines skipped before the first row on every pass */
    uint64_t row_begin, row_end; /* this reader's rows (validation_split); record: end <= rows */

    /* position in the epoch */
    uint64_t next_row; /* global index of the next row */
    uint32_t phase;    /* next_row % world (text formats) */
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
    ps_fvec fv;
    uint32_t n_features; /* binary formats: every row's width (ops->num_features) */
    uint32_t dense_dim;  /* > 0: their rows go into x, a (b_cap, dense_dim) matrix, not fv */
    float *x;

    /* skip_bad_lines */
    size_t skipped;
    char skip_msg[PS_DATA_SKIP_MESSAGES][sizeof(((ps_error *)0)->msg)];

    /* parse once (text formats, cache_bytes > 0): an epoch streamed to its end with `build`
     * becomes `cache`; later epochs read rows cache_pos = 0, 1, ... from it */
    size_t cache_budget;     /* 0: stream every epoch */
    char *cache_file;        /* where the form goes past the budget */
    ps_cache_key cache_key;
    ps_cache_builder *build; /* this epoch's rows so far */
    ps_data_cache *cache;
    uint64_t cache_pos;
    const ps_logger *log;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static inline uint64_t rng_next(uint64_t *s) { return ps_mix64(*s += PS_DATA_GOLDEN); }
static uint64_t rng_below(uint64_t *s, uint64_t n) { /* uniform in [0, n), n > 0, unbiased */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, r;
    do r = rng_next(s);
    while (r >= limit);
    return r % n;
}

/* strtof with Clinger's fast path: a plain decimal whose digits fit in 24 bits and whose power
 * of ten is within +-10 is (float)m * 10^e or (float)m / 10^-e, one correctly rounded float
 * operation on exact operands, hence bit-identical to strtof. Everything else (long mantissas,
 * big exponents, inf/nan, leading spaces) goes to strtof. A hex float ("0x1p3") is no number
 * (*end = s), as in Python or pandas. *end as strtof's. */
float ps_data_parse_float(const char *s, const char **end) {
#if FLT_EVAL_METHOD == 0
    static const float pow10f[] = {1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f,
                                   1e6f, 1e7f, 1e8f, 1e9f, 1e10f};
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    uint64_t m = 0;
    int e10 = 0, nd = 0;
    for (; ps_data_is_digit(*p); p++, nd++)
        if ((m = m * 10 + (uint64_t)(*p - '0')) > (1u << 24)) goto slow;
    if (*p == 'x' || *p == 'X') goto slow; /* hex float: strtof's business */
    if (*p == '.')
        for (p++; ps_data_is_digit(*p); p++, nd++, e10--)
            if ((m = m * 10 + (uint64_t)(*p - '0')) > (1u << 24)) goto slow;
    if (nd == 0) goto slow;
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        bool eneg = false;
        if (*q == '-' || *q == '+') eneg = *q++ == '-';
        if (!ps_data_is_digit(*q)) goto slow;
        int x = 0;
        for (; ps_data_is_digit(*q); q++)
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
        const char *t = s; /* strtof's reading of a hex float: refused */
        while (ps_data_is_ws(*t)) t++;
        if (*t == '-' || *t == '+') t++;
        if (t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
            *end = s;
            return 0.0f;
        }
        char *e;
        float v = strtof(s, &e);
        *end = e;
        return v;
    }
}


bool ps_fvec_reserve(ps_fvec *v, size_t need) {
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

void ps_fvec_free(ps_fvec *v) {
    free(v->ids);
    free(v->vals);
}

/* ---- line source ------------------------------------------------------------------------ */

static void src_close(ps_lines *l) {
    if (l->gz != NULL) gzclose(l->gz);
    if (l->fp != NULL) fclose(l->fp);
    l->gz = NULL, l->fp = NULL;
}

ps_status ps_data_open_status(int errnum) {
    switch (errnum) {
    case 0: return PS_NOMEM;
    case ENOENT: case ENOTDIR: case EACCES: case EISDIR: case ELOOP: case ENAMETOOLONG:
        return PS_DATA;
    default: return PS_IO;
    }
}

static ps_status src_open(ps_lines *l, ps_error *err) {
    src_close(l);
    l->start = l->end = 0, l->eof = false, l->line_no = 0;
    errno = 0;
    if (l->gzip) {
        l->gz = gzopen(l->path, "rb");
        if (l->gz == NULL)
            return ps_error_set(err, ps_data_open_status(errno), "open %s: %s", l->path,
                                errno ? strerror(errno) : "out of memory");
        gzbuffer(l->gz, GZ_BUFFER);
    } else {
        l->fp = fopen(l->path, "rb");
        if (l->fp == NULL)
            return ps_error_set(err, ps_data_open_status(errno), "open %s: %s", l->path,
                                strerror(errno));
        setvbuf(l->fp, NULL, _IONBF, 0); /* we buffer ourselves */
    }
    return PS_OK;
}

static ps_status src_fill(ps_lines *l, ps_error *err) {
    size_t room = l->cap - l->end, got;
    if (l->gz != NULL) {
        int r = gzread(l->gz, l->buf + l->end, (unsigned)room);
        int zerr = Z_OK;
        const char *zmsg = gzerror(l->gz, &zerr);
        if (r < 0 || (zerr != Z_OK && zerr != Z_BUF_ERROR))
            return ps_error_set(err, PS_IO, "read %s: %s", l->path,
                                zerr == Z_ERRNO ? strerror(errno) : zmsg);
        if (r == 0 && zerr == Z_BUF_ERROR) /* input ended inside the deflate stream */
            return ps_error_set(err, PS_IO, "read %s: truncated gzip file (%s)", l->path, zmsg);
        got = (size_t)r;
    } else {
        got = fread(l->buf + l->end, 1, room, l->fp);
        if (got == 0 && ferror(l->fp))
            return ps_error_set(err, PS_IO, "read %s: %s", l->path, strerror(errno));
    }
    if (got == 0) l->eof = true;
    l->end += got;
    return PS_OK;
}

/* Next line, NUL-terminated in place, without its '\n' (a UTF-8 BOM on line 1 is dropped).
 * PS_LINE_LONG: the line exceeded max_line bytes and was consumed without being returned. */
ps_status ps_lines_next(ps_lines *l, ps_line_kind *kind, char **line, size_t *len, ps_error *err) {
    bool too_long = false;
    for (;;) {
        char *p = l->buf + l->start;
        size_t avail = l->end - l->start;
        char *nl = memchr(p, '\n', avail);
        if (nl != NULL || (l->eof && (avail > 0 || too_long))) {
            size_t n = nl != NULL ? (size_t)(nl - p) : avail;
            l->start += nl != NULL ? n + 1 : n;
            l->line_no++;
            if (too_long || n > l->max_line) {
                *kind = PS_LINE_LONG;
                return PS_OK;
            }
            p[n] = '\0';
            if (l->line_no == 1 && n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) p += 3, n -= 3;
            *kind = PS_LINE_OK, *line = p, *len = n;
            return PS_OK;
        }
        if (l->eof) {
            *kind = PS_LINE_EOF;
            return PS_OK;
        }
        if (l->start > 0) { /* keep the partial line at the front */
            memmove(l->buf, p, avail);
            l->start = 0, l->end = avail;
        }
        if (l->end > l->max_line) { /* the partial line alone is over the limit: drop it */
            too_long = true;
            l->start = l->end = 0;
        } else if (l->end == l->cap) {
            size_t cap = l->cap * 2 < l->max_line + 1 ? l->cap * 2 : l->max_line + 1;
            char *b = realloc(l->buf, cap + 1);
            if (b == NULL)
                return ps_error_set(err, PS_NOMEM, "%s: line buffer of %zu bytes", l->path, cap);
            l->buf = b, l->cap = cap;
        }
        ps_status st = src_fill(l, err);
        if (st != PS_OK) return st;
    }
}

/* ---- rows of this shard ----------------------------------------------------------------- */

uint64_t ps_lines_no(const ps_lines *l) { return l->line_no; }

/* Whether a line is a row: malformed over-long lines are; otherwise the format says. */
static bool line_is_row(const ps_data *d, ps_line_kind kind, const char *s, size_t len) {
    if (kind != PS_LINE_OK) return true;
    if (d->ops->is_row != NULL) return d->ops->is_row(s, len);
    for (size_t i = 0; i < len; i++)
        if (!ps_data_is_ws(s[i])) return true;
    return false;
}

static ps_status bad_row(ps_data *d, const char *why, ps_error *err) {
    if (!d->skip_bad)
        return ps_error_set(err, PS_DATA, "%s:%" PRIu64 ": %s", d->path, d->src.line_no, why);
    if (d->skipped < PS_DATA_SKIP_MESSAGES)
        snprintf(d->skip_msg[d->skipped], sizeof(d->skip_msg[0]), "%s:%" PRIu64 ": %s", d->path,
                 d->src.line_no, why);
    d->skipped++;
    return PS_OK;
}

/* ---- parse once ------------------------------------------------------------------------- */

#define note(d, ...) ((d)->log != NULL ? ps_log((d)->log, __VA_ARGS__) : (void)0)

/* The key of the source as it is now: the reader's key with the file's identity. */
static ps_status source_key(const ps_data *d, ps_cache_key *k, ps_error *err) {
    struct stat st;
    if (stat(d->path, &st) != 0)
        return ps_error_set(err, PS_IO, "stat %s: %s", d->path, strerror(errno));
    *k = d->cache_key;
    k->src_size = (uint64_t)st.st_size;
    k->src_dev = (uint64_t)st.st_dev, k->src_ino = (uint64_t)st.st_ino;
    k->src_mtime_sec = (int64_t)st.st_mtim.tv_sec, k->src_mtime_nsec = (int64_t)st.st_mtim.tv_nsec;
    k->src_ctime_sec = (int64_t)st.st_ctim.tv_sec, k->src_ctime_nsec = (int64_t)st.st_ctim.tv_nsec;
    return PS_OK;
}

/* The build is given up, with the reason: this reader streams from now on. */
static void cache_give_up(ps_data *d, const char *why) {
    note(d, PS_LOG_WARN, "%s; streaming %s every epoch", why, d->path);
    ps_cache_build_abort(d->build);
    d->build = NULL;
    d->cache_budget = 0;
}

static void build_add(ps_data *d, const ps_fvec *fv, size_t mark, float label, uint64_t row) {
    ps_error e = {0};
    size_t n = fv->n - mark;
    if (ps_cache_build_add(d->build, n ? fv->ids + mark : NULL, n ? fv->vals + mark : NULL, n,
                           label, row, &e) != PS_OK)
        cache_give_up(d, e.msg);
}

/* The epoch streamed to its end: its rows become the cache, unless the source changed meanwhile. */
static void build_end(ps_data *d) {
    if (d->build == NULL) return;
    ps_cache_builder *b = d->build;
    d->build = NULL;
    ps_error e = {0};
    ps_cache_key now;
    if (source_key(d, &now, &e) != PS_OK || memcmp(&now, &d->cache_key, sizeof(now)) != 0) {
        ps_cache_build_abort(b);
        if (e.msg[0] == '\0') snprintf(e.msg, sizeof(e.msg), "%s changed while read", d->path);
        cache_give_up(d, e.msg);
        return;
    }
    ps_cache_meta meta = {.row_begin = d->row_begin, .row_end = d->row_end, .skipped = d->skipped};
    for (size_t i = 0; i < d->skipped && i < PS_DATA_SKIP_MESSAGES; i++)
        snprintf(meta.msgs[i], PS_CACHE_MSG_BYTES, "%s", d->skip_msg[i]); /* cut to fit */
    if (ps_cache_build_finish(b, &meta, &d->cache, &e) != PS_OK) {
        cache_give_up(d, e.msg);
        return;
    }
    const char *file = ps_cache_path(d->cache);
    note(d, PS_LOG_INFO, "%s: %" PRIu64 " rows parsed once into %s (%zu bytes)", d->path,
           ps_cache_rows(d->cache), file != NULL ? file : "memory", ps_cache_bytes(d->cache));
    src_close(&d->src);
}

/* The next row of the cache: the rows the epoch would have streamed, in the same order. */
static ps_status cache_next(ps_data *d, ps_fvec *fv, float *label, uint64_t *index, bool *got,
                            ps_error *err) {
    if (d->cache_pos == ps_cache_rows(d->cache)) {
        d->done = true;
        return PS_OK;
    }
    const uint64_t *ids;
    const float *vals;
    size_t n;
    ps_cache_row(d->cache, d->cache_pos++, &ids, &vals, &n, label, index);
    if (!ps_fvec_reserve(fv, fv->n + n))
        return ps_error_set(err, PS_NOMEM, "row of %zu features", fv->n + n);
    if (n > 0) {
        memcpy(fv->ids + fv->n, ids, n * sizeof(*ids));
        memcpy(fv->vals + fv->n, vals, n * sizeof(*vals));
    }
    fv->n += n;
    *got = true;
    return PS_OK;
}

/* At open: the key of this reader's rows, the cache file's name, and that file if it is current.
 * A stale or torn file is removed (its name is this reader's: the next build replaces it). */
static ps_status cache_open(ps_data *d, const ps_data_options *o, size_t max_line,
                            ps_error *err) {
    ps_cache_key *k = &d->cache_key;
    memset(k, 0, sizeof(*k));
    k->num_ids = o->format == PS_DATA_LIBSVM ? o->num_ids : 0;
    k->max_line = max_line;
    if (o->format == PS_DATA_CSV && o->label_name != NULL) {
        size_t n = strlen(o->label_name);
        k->label_name_hash =
            ps_mix64((uint64_t)crc32(0L, (const Bytef *)o->label_name, (uInt)n) ^ n << 32) | 1;
    }
    k->validation_split = o->validation_split;
    k->label_column = o->format == PS_DATA_CSV ? o->label_column : 0;
    k->format = (uint32_t)o->format;
    k->integers = o->format == PS_DATA_CRITEO ? (uint32_t)o->integers : 0;
    k->one_based = o->format == PS_DATA_LIBSVM && o->one_based;
    k->skip_bad = o->skip_bad_lines, k->holdout = o->holdout;
    k->rank = d->rank, k->world = d->world;
    ps_status st = source_key(d, k, err);
    if (st != PS_OK) return st;
    size_t n = (o->cache_dir ? strlen(o->cache_dir) : 0) + strlen(d->path) + 32;
    if ((d->cache_file = malloc(n)) == NULL)
        return ps_error_set(err, PS_NOMEM, "ps_data_open: cache file name");
    ps_cache_file_name(o->cache_dir, d->path, k, d->cache_file, n);
    d->cache_budget = o->cache_bytes;

    ps_error e = {0};
    st = ps_cache_load(d->cache_file, k, &d->cache, &e);
    if (st == PS_DATA) {
        note(d, PS_LOG_INFO, "%s; rebuilding it", e.msg);
        unlink(d->cache_file);
    } else if (st != PS_OK) {
        note(d, PS_LOG_WARN, "%s; parsing %s again", e.msg, d->path);
    } else if (d->cache != NULL) {
        const ps_cache_meta *m = ps_cache_meta_of(d->cache);
        d->row_begin = m->row_begin, d->row_end = m->row_end;
        note(d, PS_LOG_INFO, "%s: %" PRIu64 " rows from %s", d->path,
               ps_cache_rows(d->cache), d->cache_file);
    }
    return st == PS_NOMEM ? ps_error_set(err, st, "%s", e.msg) : PS_OK;
}

/* Appends this shard's next row of a text format to fv; *got = false at the end of the epoch. */
static ps_status next_row(ps_data *d, ps_fvec *fv, float *label, uint64_t *index, bool *got,
                          ps_error *err) {
    *got = false;
    if (d->done) return PS_OK;
    if (d->cache != NULL) return cache_next(d, fv, label, index, got, err);
    for (;;) {
        ps_line_kind kind;
        char *s = NULL;
        size_t len = 0;
        ps_status st = ps_lines_next(&d->src, &kind, &s, &len, err);
        if (st != PS_OK) return st;
        if (kind == PS_LINE_EOF) {
            d->done = true;
            build_end(d);
            return PS_OK;
        }
        if (!line_is_row(d, kind, s, len)) continue;
        uint64_t row = d->next_row++;
        bool mine = d->phase == d->rank;
        if (++d->phase == d->world) d->phase = 0;
        if (row >= d->row_end) {
            d->done = true;
            build_end(d);
            return PS_OK;
        }
        if (!mine || row < d->row_begin) continue;

        char why[PS_DATA_WHY_MAX];
        if (kind == PS_LINE_LONG) {
            snprintf(why, sizeof(why), "line longer than %zu bytes", d->src.max_line);
        } else if (memchr(s, '\0', len) != NULL) {
            snprintf(why, sizeof(why), "NUL byte in line");
        } else {
            size_t mark = fv->n;
            st = d->ops->parse(d->fs, s, len, fv, label, why);
            if (st == PS_OK) {
                *index = row, *got = true;
                if (d->build != NULL) build_add(d, fv, mark, *label, row);
                return PS_OK;
            }
            fv->n = mark;
            if (st != PS_DATA)
                return ps_error_set(err, st, "%s:%" PRIu64 ": %s", d->path, d->src.line_no,
                                    ps_status_str(st));
        }
        st = bad_row(d, why, err);
        if (st != PS_OK) return st;
    }
}

/* ---- open / rewind ---------------------------------------------------------------------- */

/* Text formats: back to line 1, then past the header lines. */
static ps_status text_restart(ps_data *d, ps_error *err) {
    ps_status st = src_open(&d->src, err);
    if (st != PS_OK) return st;
    while (d->src.line_no < d->header_lines) {
        ps_line_kind kind;
        char *s;
        size_t len;
        st = ps_lines_next(&d->src, &kind, &s, &len, err);
        if (st != PS_OK) return st;
        if (kind == PS_LINE_EOF)
            return ps_error_set(err, PS_IO, "%s: file shrank below its header line %" PRIu64,
                                d->path, d->header_lines);
    }
    return PS_OK;
}

/* Text formats: the rows of the file, numbered as next_row numbers them (validation_split). */
static ps_status count_rows(ps_data *d, uint64_t *n, ps_error *err) {
    ps_status st = text_restart(d, err);
    *n = 0;
    while (st == PS_OK) {
        ps_line_kind kind;
        char *s;
        size_t len;
        st = ps_lines_next(&d->src, &kind, &s, &len, err);
        if (st != PS_OK || kind == PS_LINE_EOF) break;
        if (line_is_row(d, kind, s, len)) (*n)++;
    }
    return st;
}

static ps_status rewind_impl(ps_data *d, uint32_t epoch, ps_error *err) {
    d->failed = PS_OK;
    d->done = false;
    d->n_slots = 0, d->filled = false, d->whole = false, d->emit = 0;
    d->order_key = ps_mix64(ps_mix64(d->seed) + epoch);
    d->rng = ps_mix64(d->order_key + d->rank);
    d->skipped = 0;
    d->phase = 0;
    if (!d->ops->text) { /* this shard's first row at or after row_begin */
        d->next_row = d->row_begin + (d->rank + d->world - d->row_begin % d->world) % d->world;
        return PS_OK;
    }
    if (d->cache != NULL) { /* the epoch's skipped lines were counted when it was parsed */
        const ps_cache_meta *m = ps_cache_meta_of(d->cache);
        d->cache_pos = 0;
        d->skipped = (size_t)m->skipped;
        for (size_t i = 0; i < d->skipped && i < PS_DATA_SKIP_MESSAGES; i++)
            snprintf(d->skip_msg[i], sizeof(d->skip_msg[i]), "%.*s", PS_CACHE_MSG_BYTES - 1,
                     m->msgs[i]);
        return PS_OK;
    }
    d->next_row = 0;
    if (d->cache_budget > 0) { /* an epoch cut short left a partial build: start again */
        ps_cache_build_abort(d->build);
        d->build = NULL;
        ps_error e = {0};
        if (ps_cache_build_begin(&d->cache_key, d->cache_budget, d->cache_file, &d->build, &e) !=
            PS_OK)
            cache_give_up(d, e.msg);
    }
    return text_restart(d, err);
}

void ps_data_options_init(ps_data_options *o) {
    memset(o, 0, sizeof(*o));
    o->format = PS_DATA_CSV;
    o->one_based = true;
}

ps_status ps_data_format_parse(const char *s, ps_data_format *out, ps_error *err) {
    for (size_t f = 0; s != NULL && f < N_FORMATS; f++)
        if (strcmp(s, formats[f]->name) == 0) {
            *out = (ps_data_format)f;
            return PS_OK;
        }
    if (s != NULL && strcmp(s, "svmlight") == 0) {
        *out = PS_DATA_LIBSVM;
        return PS_OK;
    }
    return ps_error_set(err, PS_CONFIG,
                        "data format \"%s\" unknown (expected csv, libsvm, svmlight, random, "
                        "criteo, idx)",
                        s != NULL ? s : "(null)");
}

const char *ps_data_format_name(ps_data_format f) {
    return (size_t)f < N_FORMATS ? formats[f]->name : "unknown";
}

ps_status ps_data_open(const ps_data_options *o, uint32_t rank, uint32_t world, ps_data **out,
                       ps_error *err) {
    if (out == NULL || o == NULL)
        return ps_error_set(err, PS_INVALID_ARG, "ps_data_open: NULL %s", o ? "out" : "options");
    *out = NULL;
    if (world == 0 || rank >= world)
        return ps_error_set(err, PS_INVALID_ARG, "rank %" PRIu32 " out of range for world %" PRIu32,
                            rank, world);
    if ((size_t)o->format >= N_FORMATS)
        return ps_error_set(err, PS_CONFIG, "data format %d unknown", (int)o->format);
    const ps_format_ops *ops = formats[o->format];
    size_t shuffle_cap = o->shuffle_buffer ? o->shuffle_buffer : PS_DATA_DEFAULT_SHUFFLE_BUFFER;
    if (shuffle_cap > PS_DATA_MAX_SHUFFLE_BUFFER)
        return ps_error_set(err, PS_CONFIG, "shuffle_buffer %zu exceeds limit %u",
                            o->shuffle_buffer, PS_DATA_MAX_SHUFFLE_BUFFER);
    size_t max_line = o->max_line_bytes ? o->max_line_bytes : PS_DATA_DEFAULT_MAX_LINE;
    if (max_line > PS_DATA_MAX_LINE_LIMIT)
        return ps_error_set(err, PS_CONFIG, "max_line_bytes %zu exceeds limit %u",
                            o->max_line_bytes, PS_DATA_MAX_LINE_LIMIT);
    if (!(o->validation_split >= 0.0 && o->validation_split < 1.0))
        return ps_error_set(err, PS_CONFIG, "validation_split %g must be in [0, 1)",
                            o->validation_split);
    if (o->holdout && o->validation_split == 0.0)
        return ps_error_set(err, PS_CONFIG, "holdout needs a validation_split above 0");
    if (o->format != PS_DATA_RANDOM && (o->path == NULL || o->path[0] == '\0'))
        return ps_error_set(err, PS_CONFIG, "%s data needs a path", ops->name);

    ps_data *d = calloc(1, sizeof(*d));
    if (d == NULL) return ps_error_set(err, PS_NOMEM, "ps_data_open: %zu bytes", sizeof(*d));
    ps_status st = PS_NOMEM;
    d->ops = ops;
    d->rank = rank, d->world = world;
    d->skip_bad = o->skip_bad_lines, d->shuffle = o->shuffle;
    d->shuffle_cap = shuffle_cap;
    d->seed = o->seed;
    d->row_begin = 0, d->row_end = UINT64_MAX;
    d->path = strdup(o->path != NULL && o->path[0] != '\0' ? o->path : ops->name);
    if (d->path == NULL) goto fail_nomem;
    ps_format_args a = {
        .o = o, .path = d->path, .max_line = max_line, .rank = rank, .world = world};
    if (ops->text) {
        size_t n = strlen(d->path);
        ps_lines *l = &d->src;
        l->path = d->path, l->max_line = max_line;
        l->gzip = n >= 3 && strcmp(d->path + n - 3, ".gz") == 0;
        l->cap = READ_CHUNK < max_line + 1 ? READ_CHUNK : max_line + 1;
        l->buf = malloc(l->cap + 1);
        if (l->buf == NULL) goto fail_nomem;
        if ((st = src_open(l, err)) != PS_OK) goto fail;
        a.lines = l;
    }
    if ((st = ops->open(&a, &d->fs, err)) != PS_OK) goto fail;
    if (ops->header_lines != NULL) d->header_lines = ops->header_lines(d->fs);
    if (!ops->text) d->n_features = ops->num_features(d->fs);
    if (!ops->text && o->dense_dim > 0 && d->n_features == o->dense_dim)
        d->dense_dim = o->dense_dim;
    d->log = o->log;
    if (ops->text && o->cache_bytes > 0 && (st = cache_open(d, o, max_line, err)) != PS_OK)
        goto fail;
    uint64_t n_rows = ops->text ? UINT64_MAX : ops->num_rows(d->fs);
    if (o->validation_split > 0.0 && d->cache == NULL) { /* Keras: split_at = int(n * (1 - f)) */
        if (ops->text && (st = count_rows(d, &n_rows, err)) != PS_OK) goto fail;
        uint64_t at = (uint64_t)((double)n_rows * (1.0 - o->validation_split));
        if (o->holdout)
            d->row_begin = at, d->row_end = n_rows;
        else
            d->row_end = at;
    }
    if (d->row_end > n_rows) d->row_end = n_rows;
    if ((st = rewind_impl(d, 0, err)) != PS_OK) goto fail;
    if (d->cache != NULL) src_close(&d->src);
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
    src_close(&d->src);
    ps_cache_build_abort(d->build);
    ps_cache_free(d->cache);
    free(d->cache_file);
    if (d->ops->destroy != NULL) d->ops->destroy(d->fs);
    for (size_t i = 0; i < d->slots_alloc; i++) ps_fvec_free(&d->slots[i].fv);
    free(d->slots);
    ps_fvec_free(&d->fv);
    free(d->offsets);
    free(d->labels);
    free(d->x);
    free(d->row_index);
    free(d->src.buf);
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
    float *x = d->dense_dim ? realloc(d->x, max_b * d->dense_dim * sizeof(*x)) : NULL;
    if (x != NULL) d->x = x;
    if (off == NULL || lab == NULL || idx == NULL || (d->dense_dim && x == NULL))
        return ps_error_set(err, PS_NOMEM, "batch of %zu rows", max_b);
    d->b_cap = max_b;
    return PS_OK;
}

/* A binary format reads any row by its index (ops->row), so its slots hold only the index and
 * the row is read once, straight into the batch: no copy of every row through the buffer (12
 * bytes per pixel of an image, twice) and no buffer of whole rows. The rows and their order are
 * those of the text formats' path. */
static bool lazy_rows(const ps_data *d) { return !d->ops->text && d->cache == NULL; }

/* A binary format: the index of this shard's next row; false at the end of the epoch. */
static bool next_index(ps_data *d, uint64_t *index) {
    if (d->done || d->next_row >= d->row_end) {
        d->done = true;
        return false;
    }
    *index = d->next_row;
    d->next_row = d->row_end - d->next_row > d->world ? d->next_row + d->world : d->row_end;
    return true;
}

/* Reads the next row of the shard into slot i (reusing its arrays; a binary format: its index
 * only); *got = false at the end of the epoch. */
static ps_status slot_load(ps_data *d, size_t i, bool *got, ps_error *err) {
    row_buf *r = &d->slots[i];
    r->fv.n = 0;
    if (!lazy_rows(d)) return next_row(d, &r->fv, &r->label, &r->index, got, err);
    *got = next_index(d, &r->index);
    return PS_OK;
}

/* A binary format's row `index` as the batch's row b: straight into x, or as the pairs
 * (p, x_p) for every feature p, zeros included, appended to fv. */
static ps_status take_record(ps_data *d, uint64_t index, size_t b, ps_error *err) {
    d->row_index[b] = index;
    if (d->dense_dim > 0) {
        d->ops->row(d->fs, index, d->x + b * d->dense_dim, &d->labels[b]);
        return PS_OK;
    }
    const uint32_t n = d->n_features;
    if (!ps_fvec_reserve(&d->fv, d->fv.n + n))
        return ps_error_set(err, PS_NOMEM, "%s row %" PRIu64 ": batch of %zu features", d->path,
                            index, d->fv.n + n);
    d->ops->row(d->fs, index, d->fv.vals + d->fv.n, &d->labels[b]);
    for (uint32_t p = 0; p < n; p++) d->fv.ids[d->fv.n + p] = p;
    d->fv.n += n;
    return PS_OK;
}

/* The rank of row `index` in the epoch's order (see data.h: shuffle). */
static inline uint64_t order_of(const ps_data *d, uint64_t index) {
    return ps_mix64(d->order_key ^ ps_mix64(index + PS_DATA_GOLDEN));
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
    if (lazy_rows(d)) return take_record(d, r->index, b, err);
    if (!ps_fvec_reserve(&d->fv, d->fv.n + r->fv.n))
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
        if (!d->shuffle && lazy_rows(d)) {
            uint64_t index;
            if (!next_index(d, &index)) break;
            if ((st = take_record(d, index, b, err)) != PS_OK) return st;
        } else if (!d->shuffle) {
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
    if (d->failed == PS_OK && !ps_fvec_reserve(&d->fv, 1))
        d->failed = ps_error_set(&d->fail, PS_NOMEM, "batch: out of memory");
    if (d->failed == PS_OK) d->failed = next_impl(d, max_b, &B, &d->fail);
    if (d->failed != PS_OK) {
        if (err != NULL) *err = d->fail;
        return d->failed;
    }
    out->B = B;
    out->offsets = d->offsets, out->ids = d->fv.ids, out->vals = d->fv.vals;
    out->labels = d->labels, out->row_index = d->row_index;
    out->x = d->dense_dim ? d->x : NULL, out->x_cols = d->dense_dim;
    return PS_OK;
}

size_t ps_data_skipped(const ps_data *d) { return d != NULL ? d->skipped : 0; }

const char *ps_data_skipped_message(const ps_data *d, size_t i) {
    if (d == NULL || i >= d->skipped || i >= PS_DATA_SKIP_MESSAGES) return NULL;
    return d->skip_msg[i];
}

ps_data_source ps_data_source_of(const ps_data *d) {
    if (d == NULL || d->cache == NULL) return PS_DATA_STREAM;
    return ps_cache_path(d->cache) != NULL ? PS_DATA_CACHE_FILE : PS_DATA_CACHE_MEMORY;
}

const char *ps_data_cache_file(const ps_data *d) { return d != NULL ? d->cache_file : NULL; }

uint32_t ps_data_num_features_hint(const ps_data *d) {
    if (d == NULL) return 0;
    return d->ops->num_features != NULL ? d->ops->num_features(d->fs) : 0;
}
