/* checkpoint.h - a shard's tables on disk (server.checkpoint_dir), and back.
 *
 * File DIR/shard-I-of-S.gen-G.ckpt, little-endian (the format is in the README):
 *   header: magic "PSCKPT\0\0", version, job_id, generation, time, shard I, count S, and per
 *           table its name, dim, accumulator width, optimizer and row count; zlib crc32 of it
 *   blocks: {table u32, rows u32, rows x [key u64, w dim f32, acc f32, step u32], crc32}
 *   end:    a block of table 0xffffffff and 0 rows
 * Written to DIR/.shard-I-of-S.gen-G.tmp, fsync'd, renamed, the directory fsync'd; then every
 * generation of the same I-of-S but the new one and the newest before it is removed. A file that
 * is short, fails a crc32 or does not end with the end block is not a checkpoint.
 * CRC: zlib's crc32, not CRC32C: Debian has no libcrc32c-dev here, and zlib is in the stack. */
#ifndef PS_CHECKPOINT_H
#define PS_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "ps_status.h"
#include "store.h"

#define PS_CKPT_VERSION 1u

typedef struct {
    uint64_t rows;  /* rows written, or kept by this shard on restore */
    uint64_t bytes; /* file bytes written, or read (all files) on restore */
    uint64_t generation;
    uint32_t from_shards; /* restore: the shard count of the files read */
} ps_ckpt_info;

/* A checkpoint being written: the owner's thread copies rows into blocks (ps_ckpt_writer_fill,
 * a few blocks at a time, between other work), a thread of the writer's own writes them, then
 * seals the file (header with the row counts, fsync, rename, fsync of dir, old generations
 * removed). On any error the temporary file is removed and older generations are untouched. */
typedef struct ps_ckpt_writer ps_ckpt_writer;
/* Called from the writer's thread when a block buffer came free or the writer finished. */
typedef void (*ps_ckpt_notify)(void *ud);

/* Creates dir if missing and the temporary file; starts the thread. notify may be NULL. */
ps_status ps_ckpt_writer_open(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                              const char *dir, uint64_t gen, ps_ckpt_notify notify, void *ud,
                              ps_ckpt_writer **out, ps_error *err);
/* Copies the next rows of stores (borrowed: the same every call, not changed during a call)
 * into free buffers: at most NBUF blocks of 4096 rows, or with wait every row, blocking on the
 * thread. *done: every row and the end block are queued. An error: the thread's (the file is
 * gone already). */
ps_status ps_ckpt_writer_fill(ps_ckpt_writer *w, ps_store *const *stores, bool wait, bool *done,
                              ps_error *err);
/* The thread ended: sealed, or failed. */
bool ps_ckpt_writer_finished(ps_ckpt_writer *w);
/* Waits for the thread and frees w (NULL-safe). abort, or rows not all queued: the file is
 * abandoned (PS_CLOSED). PS_OK with info when the generation is on disk. */
ps_status ps_ckpt_writer_close(ps_ckpt_writer *w, bool abort, ps_ckpt_info *info, ps_error *err);

/* The whole of it at once on the caller's thread (fill with wait): SIGTERM's last checkpoint,
 * tests and the benchmark. */
ps_status ps_checkpoint_write(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                              ps_store *const *stores, const char *dir, uint64_t gen,
                              ps_ckpt_info *info, ps_error *err);

/* The newest generation number in dir of any shard count (0: none); PS_OK if dir is missing. */
ps_status ps_checkpoint_last_generation(const char *dir, uint64_t *gen, ps_error *err);

/* Restore on start: picks the shard count whose complete set (one good file per shard) has the
 * newest generation, using for each old shard its newest good file (a torn or corrupted one is
 * logged and passed over), and puts into stores the rows ps_shard_of gives to shard of
 * num_shards. PS_NOT_FOUND (stores untouched) when dir holds no checkpoint of any count;
 * PS_MISMATCH when a file belongs to another job_id or its tables differ from the job's (name,
 * dim, accumulator width); PS_DATA when files exist but no shard count has a complete good set. */
ps_status ps_checkpoint_restore(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                                ps_store *const *stores, const char *dir, const ps_logger *log,
                                ps_ckpt_info *info, ps_error *err);

#endif
