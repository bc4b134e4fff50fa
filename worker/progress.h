/* progress.h - Keras's progress line, for the worker (alone) and for ps-launch (a whole job):
 *   " 7/32 [======>.......................] - ETA: 0s - loss: 0.6900 - accuracy: 0.5312"
 *   "32/32 [==============================] - 0s 1ms/step - loss: 0.6812 - accuracy: 0.5630"
 * and the JSON line appended to a metrics file per epoch. */
#ifndef PS_PROGRESS_H
#define PS_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    uint32_t epoch, epochs;   /* 1-based */
    uint64_t step, steps;     /* steps == 0: not known yet (first pass over a file) */
    double seconds;           /* since the epoch began */
    uint64_t samples;
    double loss_sum;          /* sum of per-sample losses */
    uint64_t correct;
    bool has_val;
    uint64_t val_samples;
    double val_loss_sum;
    uint64_t val_correct;
    /* Log loss and ROC AUC (metrics.h). A logloss_sum sums per-sample log losses; an AUC is NaN
     * when the pass held one class only. has_*: reported (AUC: binary models only). The plain
     * ones are --evaluate's (that pass is the run), the val_ ones the validation pass's. */
    bool has_logloss, has_auc, has_val_logloss, has_val_auc;
    double logloss_sum, auc, val_logloss_sum, val_auc;
} ps_progress;

/* Where an epoch's training steps spent their time, in seconds summed over the steps: data
 * (waiting for the next batch: read, parse, id dedup, dense fill; with a prep thread only the
 * wait for it), wait (blocked on the servers' replies), compute (forward + backward), send
 * (encoding and writing pushes and pulls), other (progress events). The five add up to the
 * epoch's seconds. prep: time the prep thread spent preparing batches (0 without one), beside
 * the five rather than among them. links: worker-server connections, shm_links: those whose bulk
 * goes through shared memory (shm.h). */
typedef struct {
    double data, wait, compute, send, other;
    double prep;
    uint32_t shm_links, links;
} ps_step_times;

/* "time/step: T = data Xms (P%) + pull wait ... + compute ... + push ... + other ..." with
 * "; prep thread Xms" when t->prep > 0 and "; shared memory: K of N links" when t->links > 0,
 * per step over steps steps (0: all zero). */
void ps_progress_format_times(const ps_step_times *t, uint64_t steps, char *buf, size_t n);

/* The line for p, without a newline. done: the epoch's last line (time per step, no ETA).
 * " - auc: A" follows accuracy and " - val_auc: A" val_accuracy when reported ("nan" when
 * undefined); log loss stays out of the line (for binary_crossentropy it is the loss). */
void ps_progress_format(const ps_progress *p, bool done, char *buf, size_t n);

/* {"epoch":..,"loss":..,"accuracy":..,["logloss":..,"auc":..,]["val_loss":..,"val_accuracy":..,
 *  "val_auc":..,"val_logloss":..,]"samples":..,"samples_per_sec":..,"seconds":..} appended to
 * path (created if missing); each AUC/logloss key only when reported, an undefined AUC as null.
 * false on I/O error. */
bool ps_progress_append_json(const char *path, const ps_progress *p);

#endif
