/* export.h - a job's tables, read from its running servers, written as a saved-weights directory
 * (format "ps-weights" version 1; the layout and its reader are server/weights.h):
 *
 *   DIR/manifest.json                      names every file below, shapes, optimizer, job
 *   DIR/NAME.npy, NAME.accumulators.npy    a dense-layout table: (rows, dim) float32 values in
 *                                          Keras orientation and its AdaGrad state; a bias is
 *                                          (dim,); NAME.steps.npy (rows,) uint32 with lr_decay
 *   DIR/NAME/keys.npy, values.npy,         a sparse-layout table: (n,) uint64 keys ascending,
 *       accumulators.npy, steps.npy        (n, dim) values, (n, dim or 1) state, (n,) steps
 *
 * A model's kernels and biases are dense (rows: its input width; the first kernel of a sparse
 * input is sparse), explicit tables[] are sparse. numpy.load reads every file as it is; the
 * accumulators make fit.init_from resume AdaGrad exactly. A sparse table streams shard by shard
 * (a merge of each shard's key-ordered scan), a few MB of buffers whatever its size. Files are
 * written as NAME.tmp and renamed; manifest.json comes last, so a directory with a manifest is
 * whole. A running job's export is each table as its rows are read: not one instant. */
#ifndef PS_EXPORT_H
#define PS_EXPORT_H

#include <stdint.h>

#include "client.h"
#include "config.h"
#include "ps_status.h"

typedef struct {
    uint64_t rows;  /* all tables */
    uint64_t bytes; /* of the files written */
} ps_export_stats;

/* Writes every table of job into dir (created, parents too). stats may be NULL. PS_IO when a
 * file cannot be written (the message names it), the client's errors as they come. */
ps_status ps_export(ps_client *c, const ps_job_config *job, const char *dir,
                    ps_export_stats *stats, ps_error *err);

#endif
