/* data_cache.h - one reader's rows of a text file, parsed once: CSR arrays (offsets, ids, values,
 * labels, global row index) held in memory, or, past a memory budget, written to a cache file
 * that is memory-mapped and reused by later runs while its key (the source file's identity: device,
 * inode, size, mtime and ctime; and the reader options that change the rows) is unchanged. Not a
 * public header; data.c drives it.
 *
 * Cache file layout (native byte order; the header says which version):
 *     header            magic "PSDCACHE", version, key, counts, section offsets, the skipped
 *                       lines' count and first messages, total size, crc32 of the sections,
 *                       crc32 of the header
 *     offsets           (rows + 1) u64, row r's features are [offsets[r], offsets[r+1])
 *     ids               (feats) u64
 *     vals              (feats) f32
 *     labels            (rows) f32
 *     index             (rows) u64, the global row index
 * each section starting on a 64-byte boundary. A file is written unnamed where the file system
 * allows (O_TMPFILE; else under a temporary name), fsynced, then named by a rename, so a reader
 * sees a whole file or none and a writer killed midway leaves nothing; a file that fails any
 * check (size, crcs, key, offsets) is stale or torn and is rebuilt. */
#ifndef PS_DATA_CACHE_H
#define PS_DATA_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"

#define PS_CACHE_MSG_BYTES 256 /* a skipped line's message as kept: cut to 255 characters */

/* What makes the rows. Zeroed, then filled: it is compared and hashed as bytes. The source's
 * identity comes first: ctime, which no tool sets back, catches a file rewritten with its size
 * and mtime restored (cp -p, rsync -t, touch -r), the inode one replaced by a rename. */
typedef struct {
    uint64_t src_size, src_dev, src_ino;
    int64_t src_mtime_sec, src_mtime_nsec, src_ctime_sec, src_ctime_nsec;
    uint64_t num_ids, max_line, label_name_hash; /* label_name_hash: 0 without a label name */
    double validation_split;
    int32_t label_column;
    uint32_t format, integers, one_based, skip_bad, holdout, rank, world;
} ps_cache_key;

typedef struct ps_data_cache ps_data_cache;
typedef struct ps_cache_builder ps_cache_builder;

/* What the cache recorded besides the rows: the reader's row range (validation_split) and the
 * malformed lines skipped while parsing (skip_bad_lines), with their first messages. */
typedef struct {
    uint64_t row_begin, row_end;
    uint64_t skipped;
    char msgs[PS_DATA_SKIP_MESSAGES][PS_CACHE_MSG_BYTES];
} ps_cache_meta;

/* The cache file's name for a source and key: DIR/BASENAME.HASH16.pscache, DIR being dir or, when
 * dir is NULL or empty, the source's directory. The hash leaves out the source's identity, so a
 * changed source rebuilds the same name; in a dir of its own it covers the source's full path,
 * so two sources of one base name do not share a file. */
int ps_cache_file_name(const char *dir, const char *src, const ps_cache_key *k, char *out,
                       size_t n);

/* Maps the cache file `path` if it is whole and made with key k. PS_OK with *out NULL when there
 * is no such file; PS_DATA ("stale: ...", "torn: ...") when it fails a check; PS_IO, PS_NOMEM. */
ps_status ps_cache_load(const char *path, const ps_cache_key *k, ps_data_cache **out,
                        ps_error *err);

void ps_cache_free(ps_data_cache *c); /* NULL-safe */
uint64_t ps_cache_rows(const ps_data_cache *c);
const ps_cache_meta *ps_cache_meta_of(const ps_data_cache *c);
const char *ps_cache_path(const ps_data_cache *c); /* NULL when held in memory */
size_t ps_cache_bytes(const ps_data_cache *c);

/* Row i < ps_cache_rows: its n features (borrowed from the cache), label and global index. */
void ps_cache_row(const ps_data_cache *c, uint64_t i, const uint64_t **ids, const float **vals,
                  size_t *n, float *label, uint64_t *index);

/* A build collects rows in memory until they take more than budget bytes, then moves them to
 * unlinked temporary files in the directory of `file` and goes on there. PS_IO when those cannot
 * be made or written (the build is then unusable: abort it), PS_NOMEM. */
ps_status ps_cache_build_begin(const ps_cache_key *k, size_t budget, const char *file,
                               ps_cache_builder **out, ps_error *err);
ps_status ps_cache_build_add(ps_cache_builder *b, const uint64_t *ids, const float *vals,
                             size_t n, float label, uint64_t index, ps_error *err);
/* Ends the build (b is freed whatever happens): the rows in memory, or written to `file`
 * (temporary name, fsync, rename) and mapped from there. */
ps_status ps_cache_build_finish(ps_cache_builder *b, const ps_cache_meta *meta,
                                ps_data_cache **out, ps_error *err);
void ps_cache_build_abort(ps_cache_builder *b); /* NULL-safe */

#endif
