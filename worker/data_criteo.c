/* data_criteo.c - Criteo display-advertising TSV rows: `label \t I1..I13 \t C1..C26`, every
 * (column, value) hashed to a 64-bit key without modulo (data.h has the rule; the README shows
 * a sample and its keys, computed by tests/ref/criteo_keys.py). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_format.h"

#define CRITEO_INTS 13
#define CRITEO_CATS 26
#define CRITEO_FIELDS (1 + CRITEO_INTS + CRITEO_CATS)

typedef struct {
    ps_data_integers integers;
} criteo_state;

/* 64-bit FNV-1a.
 * reference: http://www.isthe.com/chongo/tech/comp/fnv/index.html */
static uint64_t fnv1a64(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* key(col, bytes) = ps_mix64(fnv1a64(bytes) ^ ps_mix64(0x9e3779b97f4a7c15 * col)) */
static uint64_t criteo_key(uint32_t col, const char *p, size_t n) {
    return ps_mix64(fnv1a64(p, n) ^ ps_mix64(PS_DATA_GOLDEN * col));
}

static ps_status criteo_open(const ps_format_args *a, void **state, ps_error *err) {
    if (a->o->integers != PS_DATA_INT_BUCKET && a->o->integers != PS_DATA_INT_DENSE)
        return ps_error_set(err, PS_CONFIG, "criteo integers mode %d unknown (bucket or dense)",
                            (int)a->o->integers);
    criteo_state *c = malloc(sizeof(*c));
    if (c == NULL) return ps_error_set(err, PS_NOMEM, "criteo reader: out of memory");
    c->integers = a->o->integers;
    *state = c;
    return PS_OK;
}

/* Every line but an empty one (or a lone '\r') is a row: a line of tabs is a row of 40 empty
 * fields, malformed for its label. */
static bool criteo_is_row(const char *s, size_t len) {
    return len > 1 || (len == 1 && s[0] != '\r');
}

/* Field f (1-based) of the line, for messages: "label", "I3", "C17". */
static void field_name(uint32_t f, char *out, size_t n) {
    if (f == 0)
        snprintf(out, n, "label");
    else if (f <= CRITEO_INTS)
        snprintf(out, n, "I%" PRIu32, f);
    else
        snprintf(out, n, "C%" PRIu32, f - CRITEO_INTS);
}

/* A decimal int64: -?[0-9]+. */
static const char *parse_int(const char *p, size_t n, int64_t *out) {
    size_t i = p[0] == '-';
    if (i == n) return "is not an integer";
    uint64_t limit = i ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
    for (; i < n; i++) {
        if (!ps_data_is_digit(p[i])) return "is not an integer";
        unsigned dg = (unsigned)(p[i] - '0');
        if (v > (limit - dg) / 10) return "overflows int64";
        v = v * 10 + dg;
    }
    *out = p[0] == '-' ? (int64_t)(0 - v) : (int64_t)v;
    return NULL;
}

static ps_status criteo_parse(void *state, char *s, size_t len, ps_fvec *fv, float *label,
                              char *why) {
    const criteo_state *c = state;
    if (len > 0 && s[len - 1] == '\r') s[--len] = '\0'; /* CRLF */
    const char *field[CRITEO_FIELDS];
    size_t flen[CRITEO_FIELDS], nf = 0;
    for (const char *p = s, *stop = s + len;;) {
        const char *tab = memchr(p, '\t', (size_t)(stop - p));
        const char *end = tab != NULL ? tab : stop;
        if (nf < CRITEO_FIELDS) field[nf] = p, flen[nf] = (size_t)(end - p);
        nf++;
        if (tab == NULL) break;
        p = tab + 1;
    }
    if (nf != CRITEO_FIELDS) {
        snprintf(why, PS_DATA_WHY_MAX,
                 "%zu tab-separated fields, expected %d (label, I1..I13, C1..C26)", nf,
                 CRITEO_FIELDS);
        return PS_DATA;
    }
    if (flen[0] != 1 || (field[0][0] != '0' && field[0][0] != '1')) {
        snprintf(why, PS_DATA_WHY_MAX, "label \"%.*s\" must be 0 or 1",
                 ps_data_show_len(flen[0]), field[0]);
        return PS_DATA;
    }
    *label = field[0][0] == '1' ? 1.0f : 0.0f;
    if (!ps_fvec_reserve(fv, fv->n + CRITEO_FIELDS - 1)) return PS_NOMEM;
    for (uint32_t f = 1; f < CRITEO_FIELDS; f++) {
        const char *p = field[f];
        size_t n = flen[f];
        if (n == 0) continue; /* missing: no key */
        uint64_t key;
        float val = 1.0f;
        if (f <= CRITEO_INTS) {
            int64_t v;
            const char *bad = parse_int(p, n, &v);
            if (bad != NULL) {
                char name[8];
                field_name(f, name, sizeof(name));
                snprintf(why, PS_DATA_WHY_MAX, "%s: \"%.*s\" %s", name, ps_data_show_len(n), p,
                         bad);
                return PS_DATA;
            }
            if (c->integers == PS_DATA_INT_DENSE) {
                key = criteo_key(f, "", 0);
                val = (float)log(1.0 + (double)(v > 0 ? v : 0));
            } else { /* libffm's Criteo recipe: small values as they are, then log^2 buckets */
                int64_t b = v > 2 ? (int64_t)floor(log((double)v) * log((double)v)) : v;
                char dec[24];
                int m = snprintf(dec, sizeof(dec), "%" PRId64, b);
                key = criteo_key(f, dec, (size_t)m);
            }
        } else {
            key = criteo_key(f, p, n);
        }
        fv->ids[fv->n] = key, fv->vals[fv->n] = val, fv->n++;
    }
    return PS_OK;
}

const ps_format_ops ps_format_criteo = {
    .name = "criteo",
    .text = true,
    .open = criteo_open,
    .destroy = free,
    .is_row = criteo_is_row,
    .parse = criteo_parse,
};
