/* weights.h - saved weights, format "ps-weights" version 1: a directory of .npy files described by
 * DIR/manifest.json. This module reads it: the manifest into plain structs, and into a shard's
 * stores the rows that shard owns. (Writing is the exporter's.)
 *
 *   {"format": "ps-weights", "version": 1, "job_id": "...", "seed": 42, "tables": [
 *     {"name": "dense/kernel", "dim": 64, "layout": "dense", "shape": [20, 64],
 *      "values": "dense/kernel.npy", "accumulators": "dense/kernel.accumulators.npy",
 *      "optimizer": {"form": "keras", "rowwise": false, "learning_rate": 0.01, ...}},
 *     {"name": "emb", "dim": 16, "layout": "sparse", "rows": 12345, "keys": "emb/keys.npy",
 *      "values": "emb/values.npy", "accumulators": "emb/accumulators.npy",
 *      "steps": "emb/steps.npy", "optimizer": {...}}]}
 *
 * dense:  keys 0..n-1. values (n, dim) '<f4'; a one-row table (a bias, key 0) may be "shape":
 *         [dim] with values (dim,). accumulators (n, state_len), or (state_len,) when n is 1.
 * sparse: keys (n,) '<u8', ascending and unique; values (n, dim) '<f4'; accumulators
 *         (n, state_len) '<f4'; steps (n,) '<u4' (also read for dense tables when given).
 * state_len = dim, or 1 when rowwise. "accumulators" and "steps" are optional: rows then start
 * from initial_accumulator_value and step 0. "optimizer" is required with "accumulators".
 * File names are relative to DIR: never absolute, never containing "..". Keys this reader does
 * not know are ignored, so writers may add informational ones. */
#ifndef PS_WEIGHTS_H
#define PS_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ps_status.h"
#include "store.h"
#include "table_spec.h"

#define PS_WEIGHTS_VERSION 1
#define PS_WEIGHTS_MAX_MANIFEST (64u << 20) /* bytes of manifest.json read at most */

typedef enum { PS_WEIGHTS_DENSE, PS_WEIGHTS_SPARSE } ps_weights_layout;

typedef struct {
    char *name;
    uint32_t dim;
    ps_weights_layout layout;
    uint64_t rows;  /* sparse: "rows"; dense: shape[0], or 1 for "shape": [dim] */
    bool one_row;   /* dense "shape": [dim] */
    /* file names relative to the directory; NULL when absent (keys: sparse only) */
    char *values, *accumulators, *keys, *steps;
    bool has_optimizer;
    ps_adagrad_config opt; /* form and rowwise as given; numbers given or the form's defaults */
} ps_weights_table;

typedef struct {
    char path[PS_PATH_MAX + 16]; /* DIR/manifest.json, for messages */
    char dir[PS_PATH_MAX];
    uint32_t version;
    char job_id[64]; /* "" when absent */
    bool has_seed;
    uint64_t seed;
    size_t num_tables;
    ps_weights_table *tables; /* (num_tables), owned */
} ps_weights_manifest;

/* Reads and checks DIR/manifest.json into m (caller-owned; free with ps_weights_manifest_free,
 * also after an error). Every type and range is checked; messages name the file and the key
 * ("DIR/manifest.json: tables[2].dim: expected a positive integer"). PS_IO: unreadable;
 * PS_DATA: not a valid manifest; PS_MISMATCH: another format version. */
ps_status ps_weights_manifest_read(const char *dir, ps_weights_manifest *m, ps_error *err);
void ps_weights_manifest_free(ps_weights_manifest *m); /* frees what m holds; NULL-safe */

/* The entry called name, or NULL. */
const ps_weights_table *ps_weights_manifest_find(const ps_weights_manifest *m, const char *name);

/* Loads into stores[t] (t < job->num_tables, each created for job->tables[t]) the saved rows of
 * job table t that shard owns among num_shards (ps_shard_of), with ps_store_put. Manifest tables
 * the job lacks are ignored. Every table and file header is checked before any row is stored:
 * PS_CONFIG if a job table is missing from the manifest, PS_MISMATCH if its dim differs or its
 * accumulators belong to another AdaGrad form or rowwise setting, PS_DATA if a file's dtype or
 * shape disagrees with the manifest. Files are streamed (a few MB of buffers). A later error
 * (keys out of order, a read failure) leaves some rows stored: discard the stores then.
 * rows_loaded (may be NULL): rows put on this shard, all tables together. */
ps_status ps_weights_load(const char *dir, const ps_job_config *job, uint32_t shard,
                          uint32_t num_shards, ps_store *const *stores, size_t *rows_loaded,
                          ps_error *err);

#endif
