/* data_format.h - what data.c shares with the per-format parsers (data_csv.c, data_libsvm.c,
 * data_criteo.c, data_idx.c, data_random.c). Not a public header.
 *
 * A format is one of two kinds:
 * - text: each row is one line. data.c owns the line source (plain or gzip), row numbering
 *   (lines that are not rows: blank lines and what is_row refuses), sharding, over-long and NUL
 *   lines, "path:LINE:" in messages and skip_bad_lines; the format parses one line.
 * - record: the format knows its row count at open and hands out row i on demand (random:
 *   generated; idx: read at open).
 * data.c keeps the rows of the shard, the shuffle and the batches for both. */
#ifndef PS_DATA_FORMAT_H
#define PS_DATA_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "hash.h"

#define PS_DATA_WHY_MAX 200   /* "what is wrong" part of a row error */
#define PS_DATA_TOKEN_SHOW 40 /* bytes of an offending token quoted in a message */
#define PS_DATA_GOLDEN 0x9e3779b97f4a7c15ull

/* A growing list of (id, value) pairs: one row's or one batch's features. */
typedef struct {
    uint64_t *ids;
    float *vals;
    size_t n, cap;
} ps_fvec;

/* ids and vals hold at least need entries (never NULL afterwards, even for need 0); false when
 * out of memory, with the vector unchanged but for capacity. */
bool ps_fvec_reserve(ps_fvec *v, size_t need);
void ps_fvec_free(ps_fvec *v);

/* The line source of a text format (data.c), positioned at line 1 when open() runs. */
typedef struct ps_lines ps_lines;
typedef enum { PS_LINE_OK, PS_LINE_EOF, PS_LINE_LONG } ps_line_kind;

/* Next line, NUL-terminated in place without its '\n' (a UTF-8 BOM on line 1 is dropped), valid
 * until the next call. PS_LINE_LONG: over max_line_bytes, consumed without being returned. */
ps_status ps_lines_next(ps_lines *l, ps_line_kind *kind, char **line, size_t *len, ps_error *err);
uint64_t ps_lines_no(const ps_lines *l); /* 1-based number of the last line returned */

/* The status of a data file that would not open, from errno: PS_DATA when the job names a file
 * that is missing or unreadable (fixing the job fixes it: ps-worker exits 2, ps-launch does not
 * restart it), PS_NOMEM for errno 0 (zlib's allocation), else PS_IO. */
ps_status ps_data_open_status(int errnum);

typedef struct {
    const ps_data_options *o; /* the caller's options, borrowed until open returns */
    const char *path;         /* text formats: o->path; the reader's own copy */
    size_t max_line;          /* bytes, resolved from o->max_line_bytes */
    uint32_t rank, world;     /* the shard: rows with index % world == rank */
    ps_lines *lines;          /* text formats: at line 1; NULL for record formats */
} ps_format_args;

typedef struct {
    const char *name;
    bool text;
    /* Checks the format's options and builds its state (which may be NULL). A text format may
     * read lines (csv: its header). Errors as ps_data_open's. */
    ps_status (*open)(const ps_format_args *a, void **state, ps_error *err);
    void (*destroy)(void *state); /* NULL-safe; NULL: nothing to free */

    /* text: lines before the first row, skipped on every pass (csv: through its header). NULL: 0 */
    uint64_t (*header_lines)(const void *state);
    /* text: whether a line is a row. NULL: every line with a non-blank byte (ps_data_blank) */
    bool (*is_row)(const char *s, size_t len);
    /* text: appends one row's features to fv (which may hold earlier rows) and sets *label. s is
     * the whole line (no '\n', NUL-terminated, no NUL inside) and may be modified. PS_DATA with
     * `why` (< PS_DATA_WHY_MAX bytes) when the line is malformed; PS_NOMEM. fv may then hold a
     * partial row: the caller truncates it. */
    ps_status (*parse)(void *state, char *s, size_t len, ps_fvec *fv, float *label, char *why);

    /* record: the number of rows, and row i < that as a dense vector: feature p's value in x[p]
     * for every p < num_features (zeros included), and its label. data.c hands a batch out as a
     * (B, d) matrix filled by this call (ps_data_options.dense_dim) or as (id, value) pairs
     * 0..d-1 made from it. */
    uint64_t (*num_rows)(const void *state);
    void (*row)(void *state, uint64_t i, float *x, float *label);

    /* ps_data_num_features_hint; record formats must have it (their rows' width). Text formats:
     * NULL is 0 (unknown) */
    uint32_t (*num_features)(const void *state);
} ps_format_ops;

extern const ps_format_ops ps_format_csv, ps_format_libsvm, ps_format_criteo, ps_format_idx,
    ps_format_random;

/* ---- helpers the parsers share ---------------------------------------------------------- */

static inline bool ps_data_is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool ps_data_is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}
static inline char *ps_data_skip_ws(char *p) {
    while (ps_data_is_ws(*p)) p++;
    return p;
}
static inline int ps_data_show_len(size_t n) {
    return (int)(n < PS_DATA_TOKEN_SHOW ? n : PS_DATA_TOKEN_SHOW);
}
/* Drops trailing whitespace (csv and libsvm: "1,2 \r" is "1,2"). */
static inline void ps_data_rtrim(char *s, size_t *len) {
    while (*len > 0 && ps_data_is_ws(s[*len - 1])) s[--*len] = '\0';
}

/* strtof, bit for bit, with a fast path for short plain decimals (data.c). */
float ps_data_parse_float(const char *s, const char **end);

#endif
