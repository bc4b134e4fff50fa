/* checkpoint.h - a shard's tables and the job's state on disk (server.checkpoint_dir), and back.
 *
 * File DIR/shard-I-of-S.gen-G.ckpt, little-endian, format version 2 (the README has it too):
 *   header: magic "PSCKPT\0\0", version u32, job_id[64], generation u64, time_ms u64, shard I
 *           u32, count S u32, tables u32; per table name[64], dim, accumulator width, optimizer
 *           form, rowwise (u32 each), lr, eps, initial accumulator, lr_decay, weight_decay (f64
 *           each), rows u64, stamps u32 (bit 0: rows carry age_steps, bit 1: age_s), pending u64;
 *           then the job state: consistency u32, workers W u32, applied u64 (sync steps), per
 *           rank clock u64, barrier state u8 (0 live, 1 finished, 2 dropped), finished u8 (the
 *           rank said it finished, any consistency); then the header's CRC32C u32
 *   blocks: {table u32, n u32 (1..4096), n records, CRC32C u32 of the block from its table
 *           field}; a table's row blocks, then its pending blocks (table | 0x80000000), then the
 *           next table's. Row record: key u64, weights dim f32, accumulators f32, step u32, then
 *           age_steps u32 and age_s u32 as stamps says. Pending record: key u64, age_steps u32,
 *           count u32 (admit_after's count of a key that has no row yet).
 *   end:    a block of table 0xffffffff and 0 records
 * Version 1 (still read): zlib crc32 instead of CRC32C, no stamps, pending or job state fields,
 * no pending blocks. Ages, not stamps: the table step and the loop clock start over in a new
 * process, an age means the same after it (seconds while the server was down do not count).
 * Written to DIR/.shard-I-of-S.gen-G.tmp, fsync'd, renamed, the directory fsync'd; then every
 * generation of the same I-of-S but the new one and the newest before it is removed. A file that
 * is short, fails a CRC or does not end with the end block is not a checkpoint. */
#ifndef PS_CHECKPOINT_H
#define PS_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "ps_status.h"
#include "store.h"

#define PS_CKPT_VERSION 2u

/* The job's state a checkpoint keeps besides rows. The arrays are caller-owned, (W) each. */
typedef struct {
    uint32_t workers;    /* W; 0: no job state (written as none, or none restored) */
    uint64_t applied;    /* sync: steps applied (ps_barrier_save) */
    uint64_t *clock;     /* (W) each rank's barrier clock; 0 in async jobs */
    uint8_t *rank_state; /* (W) ps_rank_state; live in async jobs */
    uint8_t *finished;   /* (W) 1: the rank said it finished (the server's count for the end) */
} ps_ckpt_state;

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

/* Creates dir if missing and the temporary file; starts the thread. notify may be NULL. state
 * (NULL: none) is copied, and so are stores' pending admission counts (16 bytes per pending key):
 * both as of this call. stores' rows are copied by fill, as of each fill. */
ps_status ps_ckpt_writer_open(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                              ps_store *const *stores, const ps_ckpt_state *state,
                              const char *dir, uint64_t gen, ps_ckpt_notify notify, void *ud,
                              ps_ckpt_writer **out, ps_error *err);
/* Copies the next rows of stores (borrowed: open's, not changed during a call)
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
                              ps_store *const *stores, const ps_ckpt_state *state,
                              const char *dir, uint64_t gen, ps_ckpt_info *info, ps_error *err);

/* The newest generation number in dir of any shard count (0: none); PS_OK if dir is missing. */
ps_status ps_checkpoint_last_generation(const char *dir, uint64_t *gen, ps_error *err);

/* Restore on start: picks the shard count whose complete set (one good file per shard) has the
 * newest generation, using for each old shard its newest good file (a torn or corrupted one is
 * logged and passed over), and puts into stores the rows ps_shard_of gives to shard of
 * num_shards, with their pending admission counts and stamps' ages. state (NULL: not wanted;
 * arrays of job->num_workers) gets the job state: with the same shard count this shard's own
 * file's, else per rank the least of all files' (lowest clock, live < dropped < finished,
 * finished only if in all): a lower bound that the workers' Hellos raise. state->workers is 0
 * when the files carry none that applies (version 1, another cluster.workers or consistency).
 * PS_NOT_FOUND (stores untouched) when dir holds no checkpoint of any count;
 * PS_MISMATCH when a file belongs to another job_id or its tables differ from the job's (name,
 * dim, accumulator width); PS_DATA when files exist but neither this shard's own file of
 * num_shards (all a restore onto the same count reads) nor a complete set of every shard's files
 * of another count is good. */
ps_status ps_checkpoint_restore(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                                ps_store *const *stores, const char *dir, const ps_logger *log,
                                ps_ckpt_state *state, ps_ckpt_info *info, ps_error *err);

/* The ranks that said they finished, durable at once: a checkpoint holds them only as of its
 * start, and a finished worker does not come back to say it again. DIR/shard-I-of-S.finished,
 * text ("ps-finished 1 workers=W job_id=ID", then one rank per line), rewritten whole at each
 * finish (temporary file, fsync, rename, fsync of dir). finished: (W). PS_IO on failure. */
ps_status ps_ckpt_finished_write(const ps_job_config *job, uint32_t shard, uint32_t num_shards,
                                 const uint8_t *finished, uint32_t W, ps_error *err);
/* Sets finished[r] = 1 (W) for each rank that any shard's journal in dir of this job_id and W
 * lists (a rank's finish is the job's, whatever the shard count); *added: ranks newly set. Files
 * of another job or W, or unreadable, are passed over (logged). */
void ps_ckpt_finished_read(const ps_job_config *job, const char *dir, uint8_t *finished,
                           uint32_t W, const ps_logger *log, uint32_t *added);

#endif
