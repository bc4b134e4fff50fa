/* position.h - where a worker is in its training (fit.state_dir): a small file per rank that a
 * restarted worker resumes from.
 *
 * DIR/rank-R.pos holds one line:
 *   ps-position 1 job=JOB_ID rank=R epoch=E step=S clock=C seq=Q
 * E: the epoch in progress (0-based), S: its steps done, C: the worker's clock then (sync/ssp:
 * steps ended on every server), Q: its async push numbering then (replay.h). Written to
 * DIR/.rank-R.pos.tmp and renamed over the old one, so a reader sees the old line or the new
 * one, never a torn one; no fsync (a crash of the machine may lose the last second of it, which
 * only means a few steps redone). The shuffle of an epoch is a function of (seed, epoch), so
 * skipping S batches of epoch E finds the batch the worker was at. */
#ifndef PS_POSITION_H
#define PS_POSITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ps_status.h"

typedef struct {
    uint32_t epoch;
    uint64_t step, clock, seq;
} ps_position;

/* DIR/rank-R.pos into out (n bytes); PS_CONFIG when it does not fit. */
ps_status ps_position_path(char *out, size_t n, const char *dir, uint32_t rank, ps_error *err);

/* The position in path: *found false (PS_OK) when there is no file. PS_DATA, naming the file,
 * for a line that is not a position of this job_id and rank; PS_IO when it cannot be read. */
ps_status ps_position_load(const char *path, const char *job_id, uint32_t rank, ps_position *pos,
                           bool *found, ps_error *err);

/* Writes pos (tmp + rename), making the directory if missing. PS_IO naming the file. */
ps_status ps_position_save(const char *path, const char *job_id, uint32_t rank,
                           const ps_position *pos, ps_error *err);

#endif
