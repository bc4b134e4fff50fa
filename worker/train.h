/* train.h - one worker's training loop: data shard -> pull rows -> forward/backward -> push
 * gradients, epoch after epoch, with Keras-style reporting. */
#ifndef PS_TRAIN_H
#define PS_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "ps_status.h"

typedef struct {
    const ps_job_config *job; /* borrowed; must have a model and data.train */
    uint32_t rank;
    bool events;              /* emit "@ps {json}" lines for ps-launch instead of Keras lines */
    bool evaluate;            /* no training: score data.validation (else data.train) once with
                                 the servers' weights (e.g. loaded by fit.init_from) */
    FILE *out;                /* progress and events (stdout) */
    bool tty;                 /* out is a terminal: redraw the progress bar in place */
    const volatile sig_atomic_t *stop; /* set by a signal handler: stop after this step */
    ps_logger log;
    bool times;               /* after each epoch line, where its steps' time went (--verbose;
                                 epoch events always carry it as "times") */
    const char *pairs_dir;    /* NULL, or where each evaluation pass of a binary model leaves its
                                 (score, label) pairs for ps-launch (eval_pairs.h; the epoch
                                 event says how many): the job's AUC over all workers */
} ps_train_options;

/* Runs fit.epochs epochs (or, with evaluate, one pass over the evaluation data, reported as
 * Keras' model.evaluate: one line with loss and accuracy, and AUC for a binary model). After
 * each epoch, with data.validation, the validation pass adds val_loss, val_accuracy, val_auc
 * (binary models) and val_logloss over this worker's shard (metrics.h). PS_IO when a pairs
 * file cannot be written. PS_DATA for malformed data ("file:line: ..."), PS_TIMEOUT/PS_CLOSED
 * when a server is unreachable or goes away, PS_CONFIG for a model the data cannot feed. */
ps_status ps_train_run(const ps_train_options *opt, ps_error *err);

#endif
