/* metrics.h - evaluation metrics of one pass over a validation set, from the model's per-sample
 * outputs: exact ROC AUC and log loss. The worker computes them over its own shard; ps-launch
 * pools every worker's pairs (eval_pairs.h) and computes the job's with the same calls.
 *
 * Example (a binary model; probs from ps_mlp_output, labels 0/1):
 *     ps_eval_pair *pairs = ...;                     // (n) {score = p, label = y}
 *     double ll = 0.0;
 *     for (size_t i = 0; i < n; i++) ll += ps_metrics_logloss_binary(pairs[i].score, pairs[i].label);
 *     double auc = ps_metrics_auc(pairs, n);         // NaN: only one class present
 *     printf("val_logloss %.4f val_auc %.4f\n", ll / (double)n, auc); */
#ifndef PS_METRICS_H
#define PS_METRICS_H

#include <stddef.h>

/* The clip Keras and sklearn apply to a probability before its logarithm (keras epsilon). */
#define PS_METRICS_EPS 1e-7

/* One sample of a binary model: score = the model's probability of class 1 (sigmoid output),
 * label = the data's label in [0, 1]. 8 bytes, as eval_pairs.h stores it. */
typedef struct {
    float score;
    float label;
} ps_eval_pair;

/* ROC AUC as the Mann-Whitney U statistic with midranks: over every (positive, negative)
 * pair, 1 when the positive scores higher, 1/2 when they tie, divided by n_pos * n_neg.
 * A label > 0.5 is positive (0/1 labels as they are; the threshold accuracy uses). Sorts pairs
 * by score in place, O(n log n), no allocation. NaN (AUC undefined) when n == 0, when every
 * label is of one class, or when a score is NaN.
 * reference: https://en.wikipedia.org/wiki/Mann%E2%80%93Whitney_U_test#Area-under-curve_(AUC)_statistic_for_ROC_curves */
double ps_metrics_auc(ps_eval_pair *pairs, size_t n);

/* One sample's log loss in double, -[y ln q + (1-y) ln(1-q)] with q = p clipped to
 * [PS_METRICS_EPS, 1 - PS_METRICS_EPS] (keras.metrics.binary_crossentropy, sklearn's
 * log_loss). NaN p gives NaN. */
double ps_metrics_logloss_binary(double p, double y);

/* A multi-class sample's log loss: -ln q, q = the probability of the true class, clipped as
 * above (keras.metrics.sparse_categorical_crossentropy on softmax outputs). */
double ps_metrics_logloss_class(double p_true);

#endif
