/* datagen.c - ps-datagen: a click-through-rate-like data set with a known best possible score.
 *
 * libsvm form (PREFIX.train.svm / PREFIX.test.svm; 1-based ids, value 1, ids ascending):
 * rows hold K distinct ids (K uniform in [per_row/2, 3*per_row/2]) drawn from 1..ids with
 * power-law frequencies, P(id = i) proportional to 1 / i^alpha (a few ids are everywhere, most
 * are rare, as hashed categorical features are). A hidden logistic model gives each row
 * p = sigmoid(b + sum of w_id over its ids), w_id ~ N(0, (signal^2 / per_row)), with the bias b
 * set (by bisection) so that the mean of p is the base rate; the label is 1 with probability p.
 *
 * Criteo form (PREFIX.train.tsv / PREFIX.test.tsv): `label \t I1..I13 \t C1..C26` as Criteo's
 * display-advertising data (its columns: the comment of the Criteo section below); its hidden
 * model has one weight per feature the criteo reader makes of a line - (categorical column, hex
 * string) and (integer column, bucket b = v > 2 ? floor(ln(v)^2) : v) - and nothing else, so it
 * is a logistic model over exactly what a job sees. tests/ref/datagen_criteo.py implements this
 * form again, independently.
 *
 * Since p is the true probability, no model can do better in expectation than predicting p:
 * the held-out logloss and AUC of p are printed as the Bayes-optimal scores, beside the logloss
 * of predicting the base rate. Everything is a function of the seed (splitmix64 streams). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

typedef enum { FORM_LIBSVM = 1, FORM_CRITEO = 2, FORM_BOTH = 3 } form;

typedef struct {
    uint64_t rows, ids;
    uint32_t per_row;
    double alpha, base_rate, holdout, signal;
    uint64_t seed;
    form forms;
    const char *prefix;
} options;

static const char usage[] =
    "usage: ps-datagen PREFIX [--format libsvm|criteo|both] [--rows N] [--ids N] [--per-row K]\n"
    "                  [--alpha A] [--base-rate P] [--holdout F] [--signal S] [--seed S]\n"
    "\n"
    "Writes a CTR-like data set whose labels come from a hidden logistic model, and prints the\n"
    "best held-out logloss and AUC any model can expect on it (the hidden model's own).\n"
    "  --format F     libsvm (default): PREFIX.train.svm and PREFIX.test.svm, ids 1..N;\n"
    "                 criteo: PREFIX.train.tsv and PREFIX.test.tsv, Criteo's TSV (label,\n"
    "                 13 integer columns I1..I13 of counts, I2 sometimes -1..-3, 26 categorical\n"
    "                 columns C1..C26 of 8 hex digits from power-law vocabularies of 4..N/4\n"
    "                 values; some fields empty); the hidden model has a weight per categorical\n"
    "                 (column, value) and per integer (column, b), b = v > 2 ? floor(ln(v)^2) : v;\n"
    "                 both: the two data sets (each its own hidden model), one after the other\n"
    "  --rows N       rows in all (default 200000)\n"
    "  --ids N        id space, 1..N (default 1000000); criteo: the vocabularies' scale\n"
    "  --per-row K    ids per row on average, K/2..3K/2 (default 25; libsvm only)\n"
    "  --alpha A      power law of id (criteo: value) frequencies, P(i) ~ 1/i^A (default 1.1)\n"
    "  --base-rate P  mean label (default 0.25)\n"
    "  --holdout F    fraction of rows in the test file, the last ones (default 0.2)\n"
    "  --signal S     standard deviation of a row's logit around the bias (default 1.5)\n"
    "  --seed S       (default 1)\n"
    "The last line per form is machine-readable:\n"
    "  datagen bayes_logloss=L bayes_auc=A base_rate_logloss=B form=libsvm|criteo\n";

/* --- generator ---------------------------------------------------------------------------------- */

typedef struct {
    uint64_t s;
} rng;

static uint64_t next_u64(rng *r) { return ps_mix64(r->s += 0x9e3779b97f4a7c15ULL); }
static double next_unit(rng *r) { return (double)(next_u64(r) >> 11) * 0x1.0p-53; }
static double next_normal(rng *r) { /* Box-Muller */
    double u = 1.0 - next_unit(r), v = next_unit(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* The hidden weight of id i: its own stream, so it does not depend on the draw order. */
static double weight_of(const options *o, uint64_t id) {
    rng r = {ps_mix64(o->seed ^ 0x5be1b3c8a7f4d2e9ULL) ^ ps_mix64(id)};
    return o->signal / sqrt((double)o->per_row) * next_normal(&r);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Row i's ids (ascending, distinct) into ids; returns how many. cdf: (o->ids) cumulative P. */
static uint32_t row_ids(const options *o, const double *cdf, uint64_t i, uint64_t *ids) {
    rng r = {ps_mix64(o->seed) ^ ps_mix64(i + 1)};
    const uint32_t lo = o->per_row / 2 > 0 ? o->per_row / 2 : 1;
    const uint32_t k = lo + (uint32_t)(next_u64(&r) % (o->per_row + 1));
    uint32_t n = 0;
    for (uint32_t tries = 0; n < k && tries < 20 * k; tries++) {
        double u = next_unit(&r) * cdf[o->ids - 1];
        uint64_t a = 0, b = o->ids - 1; /* first id whose cdf exceeds u */
        while (a < b) {
            uint64_t m = a + (b - a) / 2;
            if (cdf[m] <= u) a = m + 1;
            else b = m;
        }
        uint64_t id = a + 1, j = 0;
        while (j < n && ids[j] != id) j++;
        if (j == n) ids[n++] = id;
    }
    qsort(ids, n, sizeof(*ids), cmp_u64);
    return n;
}

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

/* The bias that makes the mean of sigmoid(b + z) the base rate (it grows with b). */
static double fit_bias(const double *z, uint64_t n, double base_rate) {
    double lo = -50, hi = 50;
    for (int it = 0; it < 100; it++) {
        double b = (lo + hi) / 2, mean = 0;
        for (uint64_t i = 0; i < n; i++) mean += sigmoid(b + z[i]);
        if (mean / (double)n < base_rate) lo = b;
        else hi = b;
    }
    return (lo + hi) / 2;
}

typedef struct {
    double p;
    int y;
} scored;

static int cmp_scored(const void *a, const void *b) {
    double x = ((const scored *)a)->p, y = ((const scored *)b)->p;
    return x < y ? -1 : x > y;
}

/* Exact ROC AUC: the Mann-Whitney statistic, tied scores sharing their mean rank. */
static double auc_of(scored *s, uint64_t n) {
    qsort(s, n, sizeof(*s), cmp_scored);
    double rank_sum = 0;
    uint64_t pos = 0;
    for (uint64_t i = 0; i < n;) {
        uint64_t j = i;
        while (j < n && s[j].p == s[i].p) j++;
        double mean_rank = (double)(i + 1 + j) / 2.0; /* ranks i+1 .. j */
        for (uint64_t k = i; k < j; k++)
            if (s[k].y) rank_sum += mean_rank, pos++;
        i = j;
    }
    uint64_t neg = n - pos;
    if (pos == 0 || neg == 0) return NAN;
    return (rank_sum - (double)pos * (double)(pos + 1) / 2.0) / ((double)pos * (double)neg);
}

/* --- output shared by both forms ---------------------------------------------------------------- */

/* Opens PREFIX.train.EXT and PREFIX.test.EXT; on failure prints why and closes what it opened. */
static int open_pair(const char *prefix, const char *ext, char path[2][4096], FILE *f[2]) {
    snprintf(path[0], 4096, "%s.train.%s", prefix, ext);
    snprintf(path[1], 4096, "%s.test.%s", prefix, ext);
    for (int k = 0; k < 2; k++) {
        f[k] = fopen(path[k], "w");
        if (f[k] == NULL) {
            fprintf(stderr, "ps-datagen: %s: %s\n", path[k], strerror(errno));
            if (k == 1) fclose(f[0]);
            return 1;
        }
    }
    return 0;
}

static int close_pair(char path[2][4096], FILE *f[2]) {
    int rc = 0;
    for (int k = 0; k < 2; k++)
        if (fclose(f[k]) != 0 && rc == 0) {
            fprintf(stderr, "ps-datagen: %s: %s\n", path[k], strerror(errno));
            rc = 1;
        }
    return rc;
}

/* The held-out scores of the hidden model, and of predicting the held-out base rate; what: the
 * form's own description line. test: (n_test) the held-out rows' p and labels (sorted here). */
static void report(const char *form_name, char path[2][4096], uint64_t n_train, uint64_t n_test,
                   scored *test, const char *what) {
    uint64_t test_pos = 0;
    double bayes_loss = 0;
    for (uint64_t i = 0; i < n_test; i++) {
        test_pos += (uint64_t)test[i].y;
        bayes_loss -= test[i].y ? log(test[i].p) : log(1.0 - test[i].p);
    }
    bayes_loss /= (double)n_test;
    const double q = (double)test_pos / (double)n_test;
    const double prior_loss = q > 0 && q < 1 ? -(q * log(q) + (1 - q) * log(1 - q)) : 0;
    const double auc = auc_of(test, n_test);
    printf("ps-datagen: %llu training rows in %s, %llu held-out rows in %s\n",
           (unsigned long long)n_train, path[0], (unsigned long long)n_test, path[1]);
    printf("ps-datagen: %s\n", what);
    printf("ps-datagen: held-out logloss %.4f and AUC %.4f for the hidden model (the best to "
           "expect); %.4f for predicting the base rate\n",
           bayes_loss, auc, prior_loss);
    printf("datagen bayes_logloss=%.6f bayes_auc=%.6f base_rate_logloss=%.6f form=%s\n",
           bayes_loss, auc, prior_loss, form_name);
}

/* --- libsvm form -------------------------------------------------------------------------------- */

static int gen_libsvm(const options *o) {
    const uint64_t n_test = (uint64_t)((double)o->rows * o->holdout);
    const uint64_t n_train = o->rows - n_test;
    double *cdf = malloc(o->ids * sizeof(double));
    double *z = malloc(o->rows * sizeof(double));
    uint64_t *ids = malloc((o->per_row * 3 / 2 + 2) * sizeof(uint64_t));
    scored *test = malloc((n_test + 1) * sizeof(scored));
    char path[2][4096];
    FILE *f[2];
    int rc = 1;
    if (!cdf || !z || !ids || !test) {
        fprintf(stderr, "ps-datagen: out of memory\n");
        goto done;
    }
    double acc = 0;
    for (uint64_t i = 0; i < o->ids; i++) cdf[i] = acc += pow((double)(i + 1), -o->alpha);
    for (uint64_t i = 0; i < o->rows; i++) { /* pass 1: each row's logit without the bias */
        uint32_t k = row_ids(o, cdf, i, ids);
        double s = 0;
        for (uint32_t j = 0; j < k; j++) s += weight_of(o, ids[j]);
        z[i] = s;
    }
    const double bias = fit_bias(z, o->rows, o->base_rate);
    if (open_pair(o->prefix, "svm", path, f) != 0) goto done;
    rng labels = {ps_mix64(o->seed ^ 0x3c6ef372fe94f82bULL)};
    uint64_t positives = 0;
    for (uint64_t i = 0; i < o->rows; i++) { /* pass 2: the same rows, with labels */
        uint32_t k = row_ids(o, cdf, i, ids);
        const double p = sigmoid(bias + z[i]);
        const int y = next_unit(&labels) < p;
        positives += (uint64_t)y;
        FILE *out = i < n_train ? f[0] : f[1];
        fprintf(out, "%d", y);
        for (uint32_t j = 0; j < k; j++) fprintf(out, " %llu:1", (unsigned long long)ids[j]);
        fputc('\n', out);
        if (i >= n_train) test[i - n_train] = (scored){p, y};
    }
    if (close_pair(path, f) != 0) goto done;
    char what[256];
    snprintf(what, sizeof(what),
             "ids 1..%llu (P(i) ~ 1/i^%g), %u per row on average, base rate %.4f (asked %.4f)",
             (unsigned long long)o->ids, o->alpha, o->per_row,
             (double)positives / (double)o->rows, o->base_rate);
    report("libsvm", path, n_train, n_test, test, what);
    rc = 0;
done:
    free(cdf), free(z), free(ids), free(test);
    return rc;
}

/* --- Criteo form -------------------------------------------------------------------------------- *
 *
 * Row i draws, from its own stream g = splitmix64 from mix64(seed ^ ROW_SALT) ^ mix64(i + 1):
 *   I1..I13, per column three units (miss, u, neg): v = floor(scale * ((1 - u)^(-2/3) - 1)),
 *     capped at 1e9 (Pareto counts, mostly small); in I2, neg < 0.15 makes v -1, -2 or -3
 *     (neg < 0.12, < 0.14, else), as Criteo's I2 holds a few negatives; empty when miss < the
 *     column's missing rate.
 *   C1..C26, per column two units (miss, u): the value of rank k in 1..V_c with
 *     P(k) ~ 1/k^alpha (the first k whose cumulative weight exceeds u times the total), written
 *     as 8 hex digits, the high half of mix64(mix64(seed ^ HEX_SALT) + (col << 40) + k);
 *     V_c = max(2, round(4 * (ids/16)^e_c)), e_c = ((7 (c-1)) mod 26) / 25 for Cc; empty when
 *     miss < the column's missing rate.
 * A feature is what the criteo reader makes of a field, keyed by its column (1..13 for I1..I13,
 * 14..39 for C1..C26) and key = the 32-bit hex value, or (uint64) b for integers with
 * b = v > 2 ? floor(ln(v)^2) : v. Its weight is the first normal of the stream from
 * mix64(seed ^ W_SALT) ^ mix64(key ^ mix64(col)); a row's z is the sum over its non-empty fields,
 * all z are scaled so that their standard deviation is `signal`, and p = sigmoid(bias + z) with
 * the bias fitted to the base rate as in the libsvm form. Labels: y = (next unit of the stream
 * from mix64(seed ^ LABEL_SALT)) < p, in row order. */

#define N_INT 13
#define N_CAT 26
#define ROW_SALT 0x6a09e667f3bcc909ULL
#define HEX_SALT 0xbb67ae8584caa73bULL
#define W_SALT 0xa54ff53a5f1d36f1ULL
#define LABEL_SALT 0x510e527fade682d1ULL

/* Fractions of empty fields, near Criteo's own; the scales of I1..I13's counts. */
static const double int_missing[N_INT] = {0.45, 0,    0.21, 0.22, 0.03, 0.22, 0.04,
                                          0.0005, 0.04, 0.45, 0.04, 0.77, 0.22};
static const double int_scale[N_INT] = {1, 30, 8, 3, 5000, 40, 5, 6, 40, 0.3, 1, 0.5, 3};
static const double cat_missing[N_CAT] = {0, 0, 0.03, 0.03, 0,    0,    0.12, 0,    0,
                                          0, 0, 0.03, 0,    0,    0.03, 0,    0,    0.44,
                                          0.44, 0.03, 0.76, 0, 0.03, 0.44, 0.44, 0};

typedef struct {
    uint64_t vocab[N_CAT], offset[N_CAT]; /* column c's cdf: cdf[offset[c] .. + vocab[c]) */
    double *cdf;
    uint64_t hex_seed, w_seed;
} criteo_model;

typedef struct {
    bool has[N_INT + N_CAT];
    int64_t v[N_INT];
    uint32_t hex[N_CAT];
} criteo_row;

static int criteo_model_init(const options *o, criteo_model *m) {
    uint64_t total = 0;
    for (int c = 0; c < N_CAT; c++) {
        const double e = (double)((7 * c) % N_CAT) / 25.0;
        const double v = round(4.0 * pow((double)o->ids / 16.0, e));
        m->vocab[c] = v < 2 ? 2 : (uint64_t)v;
        m->offset[c] = total;
        total += m->vocab[c];
    }
    m->cdf = malloc(total * sizeof(double));
    if (m->cdf == NULL) return 1;
    for (int c = 0; c < N_CAT; c++) {
        double acc = 0;
        for (uint64_t k = 0; k < m->vocab[c]; k++)
            m->cdf[m->offset[c] + k] = acc += pow((double)(k + 1), -o->alpha);
    }
    m->hex_seed = ps_mix64(o->seed ^ HEX_SALT);
    m->w_seed = ps_mix64(o->seed ^ W_SALT);
    return 0;
}

static void criteo_draw(const options *o, const criteo_model *m, uint64_t i, criteo_row *r) {
    rng g = {ps_mix64(o->seed ^ ROW_SALT) ^ ps_mix64(i + 1)};
    for (int c = 0; c < N_INT; c++) {
        const double miss = next_unit(&g), u = next_unit(&g), neg = next_unit(&g);
        double x = int_scale[c] * (pow(1.0 - u, -2.0 / 3.0) - 1.0);
        int64_t v = (int64_t)floor(x < 1e9 ? x : 1e9);
        if (c == 1 && neg < 0.15) v = neg < 0.12 ? -1 : neg < 0.14 ? -2 : -3;
        r->v[c] = v;
        r->has[c] = miss >= int_missing[c];
    }
    for (int c = 0; c < N_CAT; c++) {
        const double miss = next_unit(&g), u = next_unit(&g);
        const double *cdf = m->cdf + m->offset[c];
        const double target = u * cdf[m->vocab[c] - 1];
        uint64_t a = 0, b = m->vocab[c] - 1; /* first rank whose cdf exceeds target */
        while (a < b) {
            uint64_t mid = a + (b - a) / 2;
            if (cdf[mid] <= target) a = mid + 1;
            else b = mid;
        }
        const uint64_t col = (uint64_t)(N_INT + 1 + c), rank = a + 1;
        r->hex[c] = (uint32_t)(ps_mix64(m->hex_seed + (col << 40) + rank) >> 32);
        r->has[N_INT + c] = miss >= cat_missing[c];
    }
}

/* The bucket rule of the criteo reader (libffm's recipe for Criteo's integers). */
static int64_t bucket_of(int64_t v) {
    if (v <= 2) return v;
    const double l = log((double)v);
    return (int64_t)floor(l * l);
}

static double feature_weight(const criteo_model *m, uint64_t col, uint64_t key) {
    rng r = {m->w_seed ^ ps_mix64(key ^ ps_mix64(col))};
    return next_normal(&r);
}

static double criteo_logit(const criteo_model *m, const criteo_row *r) {
    double z = 0;
    for (int c = 0; c < N_INT; c++)
        if (r->has[c]) z += feature_weight(m, (uint64_t)(c + 1), (uint64_t)bucket_of(r->v[c]));
    for (int c = 0; c < N_CAT; c++)
        if (r->has[N_INT + c]) z += feature_weight(m, (uint64_t)(N_INT + 1 + c), r->hex[c]);
    return z;
}

static int gen_criteo(const options *o) {
    const uint64_t n_test = (uint64_t)((double)o->rows * o->holdout);
    const uint64_t n_train = o->rows - n_test;
    criteo_model m = {0};
    double *z = malloc(o->rows * sizeof(double));
    scored *test = malloc((n_test + 1) * sizeof(scored));
    char path[2][4096];
    FILE *f[2];
    criteo_row r;
    int rc = 1;
    if (!z || !test || criteo_model_init(o, &m) != 0) {
        fprintf(stderr, "ps-datagen: out of memory\n");
        goto done;
    }
    double mean = 0, var = 0;
    for (uint64_t i = 0; i < o->rows; i++) { /* pass 1: each row's logit without the bias */
        criteo_draw(o, &m, i, &r);
        z[i] = criteo_logit(&m, &r);
        mean += z[i];
    }
    mean /= (double)o->rows;
    for (uint64_t i = 0; i < o->rows; i++) var += (z[i] - mean) * (z[i] - mean);
    const double sd = sqrt(var / (double)o->rows);
    const double scale = sd > 0 ? o->signal / sd : 0; /* weights are N(0, scale^2) */
    for (uint64_t i = 0; i < o->rows; i++) z[i] *= scale;
    const double bias = fit_bias(z, o->rows, o->base_rate);
    if (open_pair(o->prefix, "tsv", path, f) != 0) goto done;
    rng labels = {ps_mix64(o->seed ^ LABEL_SALT)};
    uint64_t positives = 0;
    for (uint64_t i = 0; i < o->rows; i++) { /* pass 2: the same rows, with labels */
        criteo_draw(o, &m, i, &r);
        const double p = sigmoid(bias + z[i]);
        const int y = next_unit(&labels) < p;
        positives += (uint64_t)y;
        FILE *out = i < n_train ? f[0] : f[1];
        fprintf(out, "%d", y);
        for (int c = 0; c < N_INT; c++)
            if (r.has[c]) fprintf(out, "\t%lld", (long long)r.v[c]);
            else fputc('\t', out);
        for (int c = 0; c < N_CAT; c++)
            if (r.has[N_INT + c]) fprintf(out, "\t%08x", (unsigned)r.hex[c]);
            else fputc('\t', out);
        fputc('\n', out);
        if (i >= n_train) test[i - n_train] = (scored){p, y};
    }
    if (close_pair(path, f) != 0) goto done;
    uint64_t vmin = m.vocab[0], vmax = m.vocab[0];
    for (int c = 1; c < N_CAT; c++) {
        if (m.vocab[c] < vmin) vmin = m.vocab[c];
        if (m.vocab[c] > vmax) vmax = m.vocab[c];
    }
    char what[256];
    snprintf(what, sizeof(what),
             "13 integer and 26 categorical columns, vocabularies of %llu..%llu values "
             "(P(k) ~ 1/k^%g), weights N(0, %.4g^2), base rate %.4f (asked %.4f)",
             (unsigned long long)vmin, (unsigned long long)vmax, o->alpha, scale,
             (double)positives / (double)o->rows, o->base_rate);
    report("criteo", path, n_train, n_test, test, what);
    rc = 0;
done:
    free(m.cdf), free(z), free(test);
    return rc;
}

/* --- main --------------------------------------------------------------------------------------- */

static int parse_args(int argc, char **argv, options *o) {
    *o = (options){.rows = 200000, .ids = 1000000, .per_row = 25, .alpha = 1.1,
                   .base_rate = 0.25, .holdout = 0.2, .signal = 1.5, .seed = 1,
                   .forms = FORM_LIBSVM};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (o->prefix != NULL) break;
            o->prefix = a;
            continue;
        }
        if (v == NULL) break;
        if (strcmp(a, "--format") == 0) {
            o->forms = strcmp(v, "libsvm") == 0   ? FORM_LIBSVM
                       : strcmp(v, "criteo") == 0 ? FORM_CRITEO
                       : strcmp(v, "both") == 0   ? FORM_BOTH
                                                  : 0;
            if (o->forms == 0) {
                fprintf(stderr, "ps-datagen: --format: \"%s\" is not libsvm, criteo or both\n", v);
                return 2;
            }
            i++;
            continue;
        }
        errno = 0;
        if (strcmp(a, "--rows") == 0) o->rows = strtoull(v, &end, 10);
        else if (strcmp(a, "--ids") == 0) o->ids = strtoull(v, &end, 10);
        else if (strcmp(a, "--per-row") == 0) o->per_row = (uint32_t)strtoul(v, &end, 10);
        else if (strcmp(a, "--alpha") == 0) o->alpha = strtod(v, &end);
        else if (strcmp(a, "--base-rate") == 0) o->base_rate = strtod(v, &end);
        else if (strcmp(a, "--holdout") == 0) o->holdout = strtod(v, &end);
        else if (strcmp(a, "--signal") == 0) o->signal = strtod(v, &end);
        else if (strcmp(a, "--seed") == 0) o->seed = strtoull(v, &end, 10);
        else break;
        if (end == v || *end != '\0' || errno != 0) {
            fprintf(stderr, "ps-datagen: %s: \"%s\" is not a number\n", a, v);
            return 2;
        }
        i++;
        continue;
    }
    const char *bad = o->prefix == NULL                        ? "PREFIX is required"
                      : o->rows < 2 || o->rows > (1ull << 34)  ? "--rows must be in 2..2^34"
                      : o->ids < 1 || o->ids > (1ull << 30)    ? "--ids must be in 1..2^30"
                      : o->per_row < 1 || o->per_row > 10000   ? "--per-row must be in 1..10000"
                      : (o->forms & FORM_LIBSVM) && o->per_row * 3 / 2 + 1 > o->ids
                          ? "--per-row needs more --ids"
                      : !(o->alpha >= 0 && o->alpha <= 5)      ? "--alpha must be in [0, 5]"
                      : !(o->base_rate > 0 && o->base_rate < 1) ? "--base-rate must be in (0, 1)"
                      : !(o->holdout > 0 && o->holdout < 1)    ? "--holdout must be in (0, 1)"
                      : (uint64_t)((double)o->rows * o->holdout) < 1
                          ? "--rows * --holdout must leave a held-out row"
                      : !(o->signal >= 0 && o->signal <= 20)   ? "--signal must be in [0, 20]"
                                                               : NULL;
    if (bad != NULL) {
        fprintf(stderr, "ps-datagen: %s\n%s", bad, usage);
        return 2;
    }
    return -1; /* go on */
}

int main(int argc, char **argv) {
    options o;
    int code = parse_args(argc, argv, &o);
    if (code >= 0) return code;
    if ((o.forms & FORM_LIBSVM) && gen_libsvm(&o) != 0) return 1;
    if ((o.forms & FORM_CRITEO) && gen_criteo(&o) != 0) return 1;
    return 0;
}
