/* data_libsvm.c - libsvm (svmlight) rows: `label id[:val] ... [# comment]`, ids decimal up to
 * 2^64-1, a missing value meaning 1 (data.h has the contract). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_format.h"

typedef struct {
    bool one_based;
    uint64_t num_ids; /* ids (after one_based) must be below it; 0: any */
} libsvm_state;

static ps_status libsvm_open(const ps_format_args *a, void **state, ps_error *err) {
    libsvm_state *d = malloc(sizeof(*d));
    if (d == NULL) return ps_error_set(err, PS_NOMEM, "libsvm reader: out of memory");
    d->one_based = a->o->one_based, d->num_ids = a->o->num_ids;
    *state = d;
    return PS_OK;
}

/* Blank and comment-only lines are not rows. */
static bool libsvm_is_row(const char *s, size_t len) {
    size_t i = 0;
    while (i < len && ps_data_is_ws(s[i])) i++;
    return i < len && s[i] != '#';
}

static ps_status libsvm_parse(void *state, char *s, size_t len, ps_fvec *fv, float *label,
                              char *why) {
    const libsvm_state *d = state;
    ps_data_rtrim(s, &len);
    char *hash = strchr(s, '#');
    if (hash != NULL) *hash = '\0';
    char *p = ps_data_skip_ws(s);
    const char *e;
    float y = ps_data_parse_float(p, &e);
    if (e == p || !(*e == '\0' || ps_data_is_ws(*e))) {
        size_t n = strcspn(p, " \t\r\v\f");
        snprintf(why, PS_DATA_WHY_MAX, "label \"%.*s\" is not a number", ps_data_show_len(n), p);
        return PS_DATA;
    }
    if (!isfinite(y)) {
        snprintf(why, PS_DATA_WHY_MAX, "label \"%.*s\" is not finite",
                 ps_data_show_len((size_t)(e - p)), p);
        return PS_DATA;
    }
    *label = y == -1.0f ? 0.0f : y;
    for (p = (char *)e;;) {
        p = ps_data_skip_ws(p);
        if (*p == '\0') return PS_OK;
        char *tok = p, *q = p;
        uint64_t id = 0;
        bool overflow = false;
        for (; ps_data_is_digit(*q); q++) {
            unsigned dg = (unsigned)(*q - '0');
            if (id > (UINT64_MAX - dg) / 10) overflow = true;
            id = id * 10 + dg;
        }
        const bool bare = *q == '\0' || ps_data_is_ws(*q); /* `id` alone: value 1 */
        if (q == tok || (*q != ':' && !bare) || overflow) { /* slow path: say what is wrong */
            size_t n = strcspn(tok, " \t\r\v\f");
            if (n >= 4 && memcmp(tok, "qid:", 4) == 0) {
                p = tok + n;
                continue;
            }
            const char *what = *tok == '-' ? "feature id is negative"
                               : q == tok || (*q != ':' && !bare)
                                   ? "feature id is not a non-negative integer"
                                   : "feature id overflows uint64 (max 18446744073709551615)";
            snprintf(why, PS_DATA_WHY_MAX, "token \"%.*s\": %s", ps_data_show_len(n), tok, what);
            return PS_DATA;
        }
        if (d->one_based) {
            if (id == 0) {
                size_t n = strcspn(tok, " \t\r\v\f");
                snprintf(why, PS_DATA_WHY_MAX, "token \"%.*s\": feature id 0 but ids are 1-based",
                         ps_data_show_len(n), tok);
                return PS_DATA;
            }
            id--;
        }
        if (d->num_ids != 0 && id >= d->num_ids) {
            size_t n = strcspn(tok, " \t\r\v\f");
            snprintf(why, PS_DATA_WHY_MAX,
                     "token \"%.*s\": feature id beyond the model's %llu inputs "
                     "(model.input.num_ids or model.input_dim)",
                     ps_data_show_len(n), tok, (unsigned long long)d->num_ids);
            return PS_DATA;
        }
        float v = 1.0f;
        if (bare) {
            e = q;
        } else {
            v = ps_data_parse_float(q + 1, &e);
            if (ps_data_is_ws(q[1])) e = q + 1; /* "3: 4": no value (strtof would take the 4) */
            if (e == q + 1 || !(*e == '\0' || ps_data_is_ws(*e)) || !isfinite(v)) {
                size_t n = strcspn(tok, " \t\r\v\f");
                snprintf(why, PS_DATA_WHY_MAX, "token \"%.*s\": value is not %s",
                         ps_data_show_len(n), tok,
                         e == q + 1 || !(*e == '\0' || ps_data_is_ws(*e)) ? "a number"
                                                                           : "finite");
                return PS_DATA;
            }
        }
        if (fv->n == fv->cap && !ps_fvec_reserve(fv, fv->n + 1)) return PS_NOMEM;
        fv->ids[fv->n] = id, fv->vals[fv->n] = v, fv->n++;
        p = (char *)e;
    }
}

const ps_format_ops ps_format_libsvm = {
    .name = "libsvm",
    .text = true,
    .open = libsvm_open,
    .destroy = free,
    .is_row = libsvm_is_row,
    .parse = libsvm_parse,
};
