/* eval_pairs.h - a worker's (score, label) pairs of one evaluation pass, as a file: how
 * ps-launch computes the job's exact AUC from every worker's predictions without putting them
 * in event lines. A worker writes DIR/epoch-E.rank-R.pairs before it reports epoch E; the
 * launcher, once every worker has reported E, reads them all, pools them and deletes them. Only
 * one epoch's pairs exist at a time: memory and disk are bounded by one validation pass.
 *
 * Layout (host byte order: the files never leave the machine that made them):
 *   bytes 0..7   magic "PSPAIRS1"
 *   bytes 8..15  n, uint64
 *   then n x {float32 score, float32 label} (ps_eval_pair) */
#ifndef PS_EVAL_PAIRS_H
#define PS_EVAL_PAIRS_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "ps_status.h"

#define PS_EVAL_PAIRS_MAX ((uint64_t)1 << 40) /* pairs in one file: a sanity bound, 8 TB */

/* DIR/epoch-E.rank-R.pairs into buf (n bytes). PS_TOO_LARGE, naming the directory, when it
 * does not fit. */
ps_status ps_eval_pairs_path(char *buf, size_t n, const char *dir, uint32_t epoch, uint32_t rank,
                             ps_error *err);

/* Writes pairs (n, borrowed) to path.tmp, then renames it to path: a reader never sees half a
 * file. PS_IO naming the file (and errno's text) when it cannot be written. */
ps_status ps_eval_pairs_write(const char *path, const ps_eval_pair *pairs, size_t n,
                              ps_error *err);

/* Appends the file's pairs to *buf (len used of cap; realloc'd as needed, the caller frees it).
 * expect: the count the worker announced. PS_IO when the file cannot be opened or read,
 * PS_DATA when the magic is wrong, the count differs from expect or exceeds
 * PS_EVAL_PAIRS_MAX, or the size is not the header plus n pairs; PS_NOMEM. Every message names
 * the file. On error *len is unchanged. */
ps_status ps_eval_pairs_read(const char *path, uint64_t expect, ps_eval_pair **buf, size_t *len,
                             size_t *cap, ps_error *err);

#endif
