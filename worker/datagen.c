/* datagen.c - ps-datagen: a click-through-rate-like data set with a known best possible score.
 *
 * Rows hold K distinct ids (K uniform in [per_row/2, 3*per_row/2]) drawn from 1..ids with
 * power-law frequencies, P(id = i) proportional to 1 / i^alpha (a few ids are everywhere, most
 * are rare, as hashed categorical features are). A hidden logistic model gives each row
 * p = sigmoid(b + sum of w_id over its ids), w_id ~ N(0, (signal^2 / per_row)), with the bias b
 * set (by bisection) so that the mean of p is the base rate; the label is 1 with probability p.
 * Since p is the true probability, no model can do better in expectation than predicting p:
 * the held-out logloss and AUC of p are printed as the Bayes-optimal scores, beside the logloss
 * of predicting the base rate. Everything is a function of the seed (splitmix64 streams).
 *
 * Writes PREFIX.train.svm and PREFIX.test.svm (libsvm, 1-based ids, value 1, ids ascending). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

typedef struct {
    uint64_t rows, ids;
    uint32_t per_row;
    double alpha, base_rate, holdout, signal;
    uint64_t seed;
    const char *prefix;
} options;

static const char usage[] =
    "usage: ps-datagen PREFIX [--rows N] [--ids N] [--per-row K] [--alpha A] [--base-rate P]\n"
    "                  [--holdout F] [--signal S] [--seed S]\n"
    "\n"
    "Writes PREFIX.train.svm and PREFIX.test.svm: a CTR-like libsvm data set whose labels come\n"
    "from a hidden logistic model, and prints the best held-out logloss and AUC any model can\n"
    "expect on it (the hidden model's own).\n"
    "  --rows N       rows in all (default 200000)\n"
    "  --ids N        id space, 1..N (default 1000000)\n"
    "  --per-row K    ids per row on average, K/2..3K/2 (default 25)\n"
    "  --alpha A      power law of id frequencies, P(i) ~ 1/i^A (default 1.1)\n"
    "  --base-rate P  mean label (default 0.25)\n"
    "  --holdout F    fraction of rows in PREFIX.test.svm, the last ones (default 0.2)\n"
    "  --signal S     standard deviation of a row's logit around the bias (default 1.5)\n"
    "  --seed S       (default 1)\n";

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

/* --- main --------------------------------------------------------------------------------------- */

static int parse_args(int argc, char **argv, options *o) {
    *o = (options){.rows = 200000, .ids = 1000000, .per_row = 25, .alpha = 1.1,
                   .base_rate = 0.25, .holdout = 0.2, .signal = 1.5, .seed = 1};
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
                      : o->per_row * 3 / 2 + 1 > o->ids        ? "--per-row needs more --ids"
                      : !(o->alpha >= 0 && o->alpha <= 5)      ? "--alpha must be in [0, 5]"
                      : !(o->base_rate > 0 && o->base_rate < 1) ? "--base-rate must be in (0, 1)"
                      : !(o->holdout > 0 && o->holdout < 1)    ? "--holdout must be in (0, 1)"
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
    const uint64_t n_test = (uint64_t)((double)o.rows * o.holdout);
    const uint64_t n_train = o.rows - n_test;
    double *cdf = malloc(o.ids * sizeof(double));
    double *z = malloc(o.rows * sizeof(double));
    uint64_t *ids = malloc((o.per_row * 3 / 2 + 2) * sizeof(uint64_t));
    scored *test = malloc((n_test + 1) * sizeof(scored));
    if (!cdf || !z || !ids || !test) {
        fprintf(stderr, "ps-datagen: out of memory\n");
        return 1;
    }
    double acc = 0;
    for (uint64_t i = 0; i < o.ids; i++) cdf[i] = acc += pow((double)(i + 1), -o.alpha);
    for (uint64_t i = 0; i < o.rows; i++) { /* pass 1: each row's logit without the bias */
        uint32_t k = row_ids(&o, cdf, i, ids);
        double s = 0;
        for (uint32_t j = 0; j < k; j++) s += weight_of(&o, ids[j]);
        z[i] = s;
    }
    const double bias = fit_bias(z, o.rows, o.base_rate);

    char path[2][4096];
    snprintf(path[0], sizeof(path[0]), "%s.train.svm", o.prefix);
    snprintf(path[1], sizeof(path[1]), "%s.test.svm", o.prefix);
    FILE *f[2] = {fopen(path[0], "w"), fopen(path[1], "w")};
    for (int k = 0; k < 2; k++)
        if (f[k] == NULL) {
            fprintf(stderr, "ps-datagen: %s: %s\n", path[k], strerror(errno));
            return 1;
        }
    rng labels = {ps_mix64(o.seed ^ 0x3c6ef372fe94f82bULL)};
    uint64_t positives = 0, test_pos = 0;
    double bayes_loss = 0;
    for (uint64_t i = 0; i < o.rows; i++) { /* pass 2: the same rows, with labels */
        uint32_t k = row_ids(&o, cdf, i, ids);
        const double p = sigmoid(bias + z[i]);
        const int y = next_unit(&labels) < p;
        positives += (uint64_t)y;
        FILE *out = i < n_train ? f[0] : f[1];
        fprintf(out, "%d", y);
        for (uint32_t j = 0; j < k; j++) fprintf(out, " %llu:1", (unsigned long long)ids[j]);
        fputc('\n', out);
        if (i >= n_train) {
            test[i - n_train] = (scored){p, y};
            test_pos += (uint64_t)y;
            bayes_loss -= y ? log(p) : log(1.0 - p);
        }
    }
    for (int k = 0; k < 2; k++)
        if (fclose(f[k]) != 0) {
            fprintf(stderr, "ps-datagen: %s: %s\n", path[k], strerror(errno));
            return 1;
        }
    const double q = (double)test_pos / (double)n_test;
    const double prior_loss = q > 0 && q < 1 ? -(q * log(q) + (1 - q) * log(1 - q)) : 0;
    const double auc = auc_of(test, n_test);
    printf("ps-datagen: %llu training rows in %s, %llu held-out rows in %s\n",
           (unsigned long long)n_train, path[0], (unsigned long long)n_test, path[1]);
    printf("ps-datagen: ids 1..%llu (P(i) ~ 1/i^%g), %u per row on average, base rate %.4f "
           "(asked %.4f)\n",
           (unsigned long long)o.ids, o.alpha, o.per_row,
           (double)positives / (double)o.rows, o.base_rate);
    printf("ps-datagen: held-out logloss %.4f and AUC %.4f for the hidden model (the best to "
           "expect); %.4f for predicting the base rate\n",
           bayes_loss / (double)n_test, auc, prior_loss);
    printf("datagen bayes_logloss=%.6f bayes_auc=%.6f base_rate_logloss=%.6f\n",
           bayes_loss / (double)n_test, auc, prior_loss);
    free(cdf), free(z), free(ids), free(test);
    return 0;
}
