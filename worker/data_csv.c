/* data_csv.c - csv rows: numbers separated by ',', an optional header line, the label in one
 * column and every other column a feature (data.h has the contract). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_format.h"

typedef struct {
    bool has_header;
    uint32_t n_fields, label_col;
    uint64_t first_line; /* line that fixed n_fields */
} csv_state;

static size_t count_fields(const char *s, size_t n) {
    size_t k = 1;
    for (const char *c = s; (c = memchr(c, ',', n - (size_t)(c - s))) != NULL; c++) k++;
    return k;
}

static void trim(char **p, size_t *n) {
    while (*n > 0 && ps_data_is_ws(**p)) (*p)++, (*n)--;
    while (*n > 0 && ps_data_is_ws((*p)[*n - 1])) (*n)--;
}

/* Reads the first non-empty line: header or data, the column count and the label column. */
static ps_status csv_probe(csv_state *d, const ps_format_args *a, ps_error *err) {
    const ps_data_options *o = a->o;
    char *s = NULL;
    size_t len = 0;
    bool found_line = false;
    while (!found_line) {
        ps_line_kind kind;
        ps_status st = ps_lines_next(a->lines, &kind, &s, &len, err);
        if (st != PS_OK) return st;
        if (kind == PS_LINE_EOF) break; /* no non-empty line: no rows */
        if (kind == PS_LINE_LONG)
            return ps_error_set(err, PS_DATA, "%s:%" PRIu64 ": line longer than %zu bytes",
                                a->path, ps_lines_no(a->lines), a->max_line);
        if (memchr(s, '\0', len) != NULL)
            return ps_error_set(err, PS_DATA, "%s:%" PRIu64 ": NUL byte in line", a->path,
                                ps_lines_no(a->lines));
        char *p = s;
        size_t n = len;
        trim(&p, &n);
        found_line = n > 0;
    }
    int name_col = -1;
    if (found_line) {
        d->n_fields = (uint32_t)count_fields(s, len);
        d->first_line = ps_lines_no(a->lines);
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
                ps_data_parse_float(p, &e);
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
                                a->path, o->label_name, found_line ? "data" : "missing");
        if (name_col < 0)
            return ps_error_set(err, PS_CONFIG,
                                "%s: label_name \"%s\" is not in the header (line %" PRIu64
                                ", %" PRIu32 " columns)",
                                a->path, o->label_name, d->first_line, d->n_fields);
        d->label_col = (uint32_t)name_col;
    } else if (found_line) {
        int64_t c = o->label_column < 0 ? (int64_t)d->n_fields + o->label_column
                                        : (int64_t)o->label_column;
        if (c < 0 || c >= (int64_t)d->n_fields)
            return ps_error_set(err, PS_CONFIG,
                                "label_column %d out of range for %" PRIu32
                                " columns in %s (must be in [-%" PRIu32 ", %" PRIu32 "])",
                                o->label_column, d->n_fields, a->path, d->n_fields,
                                d->n_fields - 1);
        d->label_col = (uint32_t)c;
    }
    return PS_OK;
}

static ps_status csv_parse(void *state, char *s, size_t len, ps_fvec *fv, float *label,
                           char *why) {
    csv_state *d = state;
    ps_data_rtrim(s, &len);
    size_t nf = count_fields(s, len);
    if (nf != d->n_fields) {
        snprintf(why, PS_DATA_WHY_MAX,
                 "%zu fields, expected %" PRIu32 " (as in line %" PRIu64 ")", nf,
                 d->n_fields, d->first_line);
        return PS_DATA;
    }
    if (!ps_fvec_reserve(fv, fv->n + nf - 1)) return PS_NOMEM;
    uint64_t *ids = fv->ids + fv->n;
    float *vals = fv->vals + fv->n;
    uint32_t j = 0;
    char *p = s;
    for (uint32_t f = 0; f < nf; f++) {
        p = ps_data_skip_ws(p);
        const char *e;
        float v = ps_data_parse_float(p, &e);
        char *t = ps_data_skip_ws((char *)e);
        if (e == p || (*t != ',' && *t != '\0') || !isfinite(v)) {
            size_t n = strcspn(p, ",");
            while (n > 0 && ps_data_is_ws(p[n - 1])) n--;
            if (n == 0)
                snprintf(why, PS_DATA_WHY_MAX, "field %" PRIu32 ": empty", f + 1);
            else
                snprintf(why, PS_DATA_WHY_MAX, "field %" PRIu32 ": \"%.*s\" is not %s", f + 1,
                         ps_data_show_len(n), p, isfinite(v) ? "a number" : "finite");
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

static ps_status csv_open(const ps_format_args *a, void **state, ps_error *err) {
    csv_state *d = calloc(1, sizeof(*d));
    if (d == NULL) return ps_error_set(err, PS_NOMEM, "csv reader: out of memory");
    ps_status st = csv_probe(d, a, err);
    if (st != PS_OK) {
        free(d);
        return st;
    }
    *state = d;
    return PS_OK;
}

static uint64_t csv_header_lines(const void *state) {
    const csv_state *d = state;
    return d->has_header ? d->first_line : 0;
}

static uint32_t csv_num_features(const void *state) {
    const csv_state *d = state;
    return d->n_fields > 0 ? d->n_fields - 1 : 0;
}

const ps_format_ops ps_format_csv = {
    .name = "csv",
    .text = true,
    .open = csv_open,
    .destroy = free,
    .header_lines = csv_header_lines,
    .parse = csv_parse,
    .num_features = csv_num_features,
};
