/* metrics.c - ROC AUC by sorting (Mann-Whitney with midranks) and clipped log loss. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>

static int by_score(const void *a, const void *b) {
    const float x = ((const ps_eval_pair *)a)->score, y = ((const ps_eval_pair *)b)->score;
    return (x > y) - (x < y);
}

double ps_metrics_auc(ps_eval_pair *pairs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (isnan(pairs[i].score)) return NAN; /* no order: qsort's result would be arbitrary */
    if (n > 1) qsort(pairs, n, sizeof(*pairs), by_score); /* pairs may be NULL when n == 0 */
    /* Ascending groups of equal score: each positive beats the negatives below its group and
     * ties with half of its own group's. Counts are exact integers in double below 2^53. */
    double neg_below = 0.0, wins = 0.0, n_pos = 0.0;
    for (size_t i = 0; i < n;) {
        double pos = 0.0, neg = 0.0;
        size_t j = i;
        for (; j < n && pairs[j].score == pairs[i].score; j++) {
            if (pairs[j].label > 0.5f)
                pos += 1.0;
            else
                neg += 1.0;
        }
        wins += pos * neg_below + 0.5 * pos * neg;
        neg_below += neg, n_pos += pos;
        i = j;
    }
    if (n_pos == 0.0 || neg_below == 0.0) return NAN;
    return wins / (n_pos * neg_below);
}

static double clip(double p) {
    const double lo = PS_METRICS_EPS, hi = 1.0 - PS_METRICS_EPS;
    return p < lo ? lo : p > hi ? hi : p; /* NaN passes through */
}

double ps_metrics_logloss_binary(double p, double y) {
    const double q = clip(p);
    return -(y * log(q) + (1.0 - y) * log1p(-q));
}

double ps_metrics_logloss_class(double p_true) { return -log(clip(p_true)); }
