/* train.c - the worker's loop. Per step, for batch t:
 *   1. map the batch's feature ids to local rows (unique ids = the rows to pull); a dense input
 *      (model.input_dim) instead fills a (B, d) matrix and pulls the whole first kernel, rows
 *      0..d-1, as one block (every step reads all of them: no id map);
 *   2. forward + backward with the rows pulled for it;
 *   3. one round trip per shard: push t's gradients and pull batch t+1's rows.
 * With overlap the exchange for t+1 is sent before t is computed (it carries t-1's gradients),
 * so the round trip hides behind compute at the price of one step of staleness, as in ps-lite's
 * asynchronous mode. Without it, a single worker is plain sequential SGD.
 *
 * Batches live in a ring of three: while t is computed, t+1 is being pulled and t-1's gradients
 * are still to be pushed under t-1's keys. (With two buffers, reading t+1 overwrote the keys of
 * t-1 before its push: sparse gradients went to another batch's rows.)
 *
 * cluster.consistency: async sends one PushPull per table and shard. sync and ssp send Push
 * (carrying the step), a Clock to every shard (the step is over), then Pull with min_clock: the
 * servers answer once every live worker has ended step min_clock - 1 (sync: the step the rows
 * are for; ssp: that step minus the staleness). sync cannot overlap (the next rows need this
 * step's update); ssp overlaps when staleness >= 1.
 *
 * With fit.threads >= 2 a prep thread (prefetch.h) reads, parses and maps batch t+1 (or t+2)
 * into the ring while the loop computes and exchanges t: the same batches in the same order,
 * so the results do not change. Each slot is released to it once its step is through (its
 * gradients pushed and the replies in: a retried step needs the batch again). */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "client.h"
#include "hash.h"
#include "data.h"
#include "eval_pairs.h"
#include "metrics.h"
#include "mlp.h"
#include "position.h"
#include "prefetch.h"
#include "progress.h"
#include "shm.h"

#define EVENT_PERIOD_S 0.1 /* at most this often a progress event or redraw */

/* A batch as the model sees it, rows local to this step, plus the keys to pull for them. A
 * dense input fills x instead of the CSR arrays, and its keys are the trainer's dense_keys. */
typedef struct {
    size_t B, nnz, n_keys;
    size_t *offsets;  /* (B + 1) */
    uint32_t *rows;   /* (nnz) */
    float *vals;      /* (nnz) */
    float *labels;    /* (B) */
    uint64_t *keys;   /* (n_keys) unique feature ids, rows of the first kernel */
    float *x;         /* dense input: (B, n_keys), n_keys = model.input_dim */
    size_t cap_b, cap_nnz, cap_x;
    uint64_t seq;     /* async, ssp: the step its gradients are pushed as (client.h set_step) */
    uint64_t rows_hash; /* sum of mix64(row index) of its samples: added once it is trained */
} step_batch;

/* Parameters for one step: pulled rows of the first kernel, all of the dense layers. p owns
 * its arrays; use is what the step reads: p's, or rows left in the shared-memory segment
 * (ps_client_pull_view_async), valid until the next exchange. */
typedef struct {
    ps_mlp_params p, use;
    size_t cap_rows;
} step_params;

/* Feature id -> local row, cleared in O(1) per batch by a generation stamp. */
typedef struct {
    uint64_t *ids;
    uint32_t *row, *stamp;
    size_t cap;
    uint32_t gen;
} id_map;

typedef struct {
    const ps_train_options *opt;
    const ps_job_config *job;
    const ps_model_config *model;
    ps_client *client;
    ps_mlp *mlp;
    ps_data *train, *val;
    size_t L;
    bool dense_input;     /* model.input_dim: layer 0 is a matrix product over all d rows */
    uint32_t units[PS_MAX_LAYERS], in_units[PS_MAX_LAYERS]; /* in_units[l] = units[l-1] */
    uint32_t kernel_t[PS_MAX_LAYERS], bias_t[PS_MAX_LAYERS];
    uint64_t *dense_keys; /* 0..max(units, input_dim): the row keys of dense kernels */
    uint64_t zero_key;
    step_batch batch[3];   /* ring: batch t in batch[t % 3] */
    ps_prefetch *prep;     /* during an epoch with fit.threads >= 2: fills batch[] */
    step_params params[2]; /* rows for batch t in params[t % 2] */
    bool overlap;          /* fit.overlap where the consistency mode allows it; without it no
                              request goes out between a pull and the step that reads its rows,
                              so those are read where they arrive (ps_client_pull_view_async) */
    ps_mlp_params own;   /* gradient buffers of our own */
    ps_mlp_params grads; /* what a step writes and pushes: own's, or buffers staged in the
                            shared-memory segment (ps_client_stage: pushed uncopied) */
    size_t grad_cap_rows;
    id_map map;
    uint64_t steps_per_epoch; /* 0 until known */
    uint64_t seq_base;        /* steps of the epochs before this one (push numbering) */
    /* fit.state_dir: this worker's position file, and where it resumes (position.h) */
    char pos_path[PS_PATH_MAX + 32];
    ps_position resume;       /* resume.step batches of epoch resume.epoch are done */
    uint64_t skip;            /* batches of this epoch done before this process (resumed) */
    double saved_at;          /* now_s() of the last position written */
    uint64_t rows_hash;       /* sum of mix64(row index) trained this epoch: each row once */
    ps_step_times times;      /* this epoch's, reported with it */
    /* a binary model's (score, label) per evaluated sample, for the AUC: one pass at a time */
    ps_eval_pair *pairs;
    size_t n_pairs, cap_pairs;
    bool pairs_written; /* this epoch's pairs are in opt->pairs_dir (said in the epoch event) */
} trainer;

/* --- buffers ---------------------------------------------------------------------------------- */

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(p, n * elem);
    if (q != NULL) *cap = n;
    return q;
}

static ps_status map_reserve(id_map *m, size_t n) {
    if (m->cap >= 2 * n && m->cap > 0) return PS_OK;
    size_t cap = 64;
    while (cap < 2 * n) cap *= 2;
    free(m->ids), free(m->row), free(m->stamp);
    m->ids = malloc(cap * sizeof(*m->ids));
    m->row = malloc(cap * sizeof(*m->row));
    m->stamp = calloc(cap, sizeof(*m->stamp));
    m->cap = cap, m->gen = 0;
    return m->ids && m->row && m->stamp ? PS_OK : PS_NOMEM;
}

/* Copies a data batch into sb, mapping ids to local rows in first-seen order. */
static ps_status take_batch(trainer *tr, const ps_data_batch *db, step_batch *sb, ps_error *err) {
    size_t nnz = db->offsets[db->B];
    size_t cb = sb->cap_b, cn = sb->cap_nnz;
    size_t *off = grow(sb->offsets, &cb, db->B + 1, sizeof(size_t));
    if (off) sb->offsets = off;
    float *lab = off ? grow(sb->labels, &sb->cap_b, db->B + 1, sizeof(float)) : NULL;
    if (lab) sb->labels = lab;
    cn = sb->cap_nnz;
    uint32_t *rows = grow(sb->rows, &cn, nnz + 1, sizeof(uint32_t));
    if (rows) sb->rows = rows;
    size_t cn2 = sb->cap_nnz;
    float *vals = rows ? grow(sb->vals, &cn2, nnz + 1, sizeof(float)) : NULL;
    if (vals) sb->vals = vals;
    size_t cn3 = sb->cap_nnz;
    uint64_t *keys = vals ? grow(sb->keys, &cn3, nnz + 1, sizeof(uint64_t)) : NULL;
    if (keys) sb->keys = keys, sb->cap_nnz = cn3;
    if (!off || !lab || !rows || !vals || !keys || map_reserve(&tr->map, nnz) != PS_OK)
        return ps_error_set(err, PS_NOMEM, "batch of %zu samples, %zu entries: out of memory",
                            db->B, nnz);
    id_map *m = &tr->map;
    if (++m->gen == 0) { /* stamps wrapped: clear once every 2^32 batches */
        memset(m->stamp, 0, m->cap * sizeof(*m->stamp));
        m->gen = 1;
    }
    size_t n_keys = 0, mask = m->cap - 1;
    for (size_t i = 0; i < nnz; i++) {
        uint64_t id = db->ids[i];
        size_t h = (size_t)((id * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
        while (m->stamp[h] == m->gen && m->ids[h] != id) h = (h + 1) & mask;
        if (m->stamp[h] != m->gen) {
            m->stamp[h] = m->gen, m->ids[h] = id, m->row[h] = (uint32_t)n_keys;
            sb->keys[n_keys++] = id;
        }
        sb->rows[i] = m->row[h];
    }
    memcpy(sb->offsets, db->offsets, (db->B + 1) * sizeof(size_t));
    memcpy(sb->vals, db->vals, nnz * sizeof(float));
    memcpy(sb->labels, db->labels, db->B * sizeof(float));
    sb->B = db->B, sb->nnz = nnz, sb->n_keys = n_keys;
    return PS_OK;
}

/* Copies a data batch with a dense input into sb: x (B, d), the reader's matrix (idx and
 * random rows of width d) or filled by feature id from the pairs. The readers already refuse an
 * id >= d with its file:line (csv by the width checked in setup, libsvm by num_ids), so
 * ps_mlp_dense_input's PS_DATA is a last guard. */
static ps_status take_dense_batch(trainer *tr, const ps_data_batch *db, step_batch *sb,
                                  ps_error *err) {
    const size_t d = tr->model->input_dim;
    float *lab = grow(sb->labels, &sb->cap_b, db->B + 1, sizeof(float));
    if (lab) sb->labels = lab;
    float *x = lab ? grow(sb->x, &sb->cap_x, db->B * d, sizeof(float)) : NULL;
    if (x) sb->x = x;
    if (!lab || !x)
        return ps_error_set(err, PS_NOMEM, "batch of %zu samples of %zu inputs: out of memory",
                            db->B, d);
    if (db->x != NULL && db->x_cols == d) /* the reader's matrix (ps_data_options.dense_dim) */
        memcpy(sb->x, db->x, db->B * d * sizeof(float));
    else if (db->x != NULL)
        return ps_error_set(err, PS_INVALID_ARG, "a batch of %zu columns for %zu inputs",
                            db->x_cols, d);
    else if (ps_mlp_dense_input(sb->x, db->B, d, db->offsets, db->ids, db->vals, err) != PS_OK)
        return err->code;
    memcpy(sb->labels, db->labels, db->B * sizeof(float));
    sb->B = db->B, sb->nnz = db->offsets[db->B], sb->n_keys = d;
    return PS_OK;
}

/* The model's view of a batch. */
static ps_mlp_batch model_batch(const step_batch *sb) {
    return (ps_mlp_batch){.B = sb->B, .offsets = sb->offsets, .rows = sb->rows,
                          .vals = sb->vals, .labels = sb->labels, .x = sb->x};
}

static ps_status reserve_rows(trainer *tr, step_params *sp, size_t n_rows, ps_error *err) {
    float *w0 = grow(sp->p.w[0], &sp->cap_rows, n_rows + 1, tr->units[0] * sizeof(float));
    if (w0 == NULL) return ps_error_set(err, PS_NOMEM, "%zu rows: out of memory", n_rows);
    sp->p.w[0] = w0;
    sp->p.n_rows = n_rows;
    return PS_OK;
}

static void free_batch(step_batch *b) {
    free(b->offsets), free(b->rows), free(b->vals), free(b->labels), free(b->keys), free(b->x);
}

/* --- exchange with the servers --------------------------------------------------------------- */

/* The bytes of one step's gradients (or rows) of every table, each 64-byte aligned in a
 * shared-memory segment. A sparse first kernel counts 32 ids a sample; a batch with more sends
 * that table inline. */
static size_t step_bytes(const trainer *tr, const ps_model_config *m, const ps_job_config *job) {
    size_t bytes = 0;
    for (size_t l = 0; l < tr->L; l++) {
        const size_t rows = l > 0 ? tr->in_units[l] : m->sparse ? 32u * job->fit.batch_size
                                                                : m->input_dim;
        bytes += (rows * tr->units[l] + tr->units[l]) * sizeof(float) + 2 * 64;
    }
    return bytes;
}

/* The segment: one exchange's requests (t's gradients, when not staged, and t+1's rows), then
 * the staging area the step writes its gradients into (ps_client_stage). */
static void shm_sizes(const trainer *tr, const ps_model_config *m, const ps_job_config *job,
                      size_t *total, size_t *stage) {
    const size_t step = step_bytes(tr, m, job);
    *total = (3 * step + 4095) & ~(size_t)4095;
    if (*total > PS_SHM_MAX_BYTES) *total = PS_SHM_MAX_BYTES;
    *stage = step < *total / 3 ? step : *total / 3;
}

/* The min_clock of a pull for rows that will be used at step `at` (see the file comment). */
static uint64_t min_clock_for(const trainer *tr, uint64_t at) {
    if (tr->opt->evaluate) return 0; /* an evaluation reads what is there */
    if (tr->job->consistency == PS_SYNC) return at;
    const uint64_t s = tr->job->staleness;
    return at > s ? at - s : 0;
}

/* The rows of kernel l that batch sb reads: its own ids for a sparse first layer. */
static const uint64_t *kernel_keys(const trainer *tr, const step_batch *sb, size_t l) {
    return l == 0 && !tr->dense_input ? sb->keys : tr->dense_keys;
}

/* One request per table and shard, all in flight together: the gradients in tr->grads of the
 * rows of `pushed` (if any), and the rows `next` needs into `into` (if any). `ahead`: a step of
 * this worker's will be pushed before `next` is computed (overlap). */
static ps_status exchange(trainer *tr, const step_batch *pushed, const step_batch *next,
                          step_params *into, bool ahead, ps_error *err) {
    ps_client *c = tr->client;
    const bool async = tr->job->consistency == PS_ASYNC;
    ps_op op;
    if (next != NULL && reserve_rows(tr, into, next->n_keys, err) != PS_OK) return err->code;
    if (next != NULL) into->use = into->p; /* until a pull leaves its rows in place */
    /* numbered: a server applies each push once, however often a retry sends it (replay.h);
     * sync drops a reconnecting rank's held pushes instead */
    if (tr->job->consistency != PS_SYNC && pushed != NULL) ps_client_set_step(c, pushed->seq);
    if (!async && pushed != NULL) { /* gradients, then the end of the step, then the pulls */
        for (size_t l = 0; l < tr->L; l++) {
            const uint64_t *k = kernel_keys(tr, pushed, l);
            size_t n = l == 0 ? pushed->n_keys : tr->in_units[l];
            if (ps_client_push_async(c, tr->kernel_t[l], k, n, tr->grads.w[l], &op, err) !=
                    PS_OK ||
                ps_client_push_async(c, tr->bias_t[l], &tr->zero_key, 1, tr->grads.b[l], &op,
                                     err) != PS_OK)
                return err->code;
        }
        if (ps_client_clock_async(c, false, &op, err) != PS_OK) return err->code;
        pushed = NULL;
    }
    if (!async) ps_client_set_min_clock(c, min_clock_for(tr, ps_client_clock(c) + ahead));
    for (size_t l = 0; l < tr->L; l++) {
        const uint64_t *pk = pushed ? kernel_keys(tr, pushed, l) : NULL;
        size_t np = pushed == NULL ? 0 : l == 0 ? pushed->n_keys : tr->in_units[l];
        const uint64_t *qk = next ? kernel_keys(tr, next, l) : NULL;
        size_t nq = next == NULL ? 0 : l == 0 ? next->n_keys : tr->in_units[l];
        float *out_w = next ? into->p.w[l] : NULL, *out_b = next ? into->p.b[l] : NULL;
        float **view_w = next && !tr->overlap ? &into->use.w[l] : NULL;
        float **view_b = next && !tr->overlap ? &into->use.b[l] : NULL;
        ps_status st;
        if (np && nq)
            st = ps_client_pushpull_async(c, tr->kernel_t[l], pk, np, tr->grads.w[l], qk, nq,
                                          out_w, &op, err);
        else if (np)
            st = ps_client_push_async(c, tr->kernel_t[l], pk, np, tr->grads.w[l], &op, err);
        else if (nq)
            st = ps_client_pull_view_async(c, tr->kernel_t[l], qk, nq, out_w, view_w, &op, err);
        else
            st = PS_OK;
        if (st != PS_OK) return st;
        if (pushed && next)
            st = ps_client_pushpull_async(c, tr->bias_t[l], &tr->zero_key, 1, tr->grads.b[l],
                                          &tr->zero_key, 1, out_b, &op, err);
        else if (pushed)
            st = ps_client_push_async(c, tr->bias_t[l], &tr->zero_key, 1, tr->grads.b[l], &op, err);
        else if (next)
            st = ps_client_pull_view_async(c, tr->bias_t[l], &tr->zero_key, 1, out_b, view_b, &op,
                                           err);
        if (st != PS_OK) return st;
    }
    return ps_client_flush(c, err);
}

/* --- setup -------------------------------------------------------------------------------------- */

/* holdout: with data.validation_split, the held-out rows of data.train (else its other rows) */
static ps_status open_data(const ps_job_config *job, const ps_data_config *dc, uint32_t rank,
                           bool shuffle, bool holdout, const ps_logger *log, ps_data **out,
                           ps_error *err) {
    ps_data_options o;
    ps_data_options_init(&o);
    if (ps_data_format_parse(dc->format, &o.format, err) != PS_OK) return err->code;
    o.path = dc->path;
    o.label_column = dc->label_column;
    o.label_name = dc->label_name[0] ? dc->label_name : NULL;
    o.one_based = dc->one_based;
    /* the model's input width: an id past it would make rows no layer reads */
    o.num_ids = job->model.sparse ? job->model.num_ids : job->model.input_dim;
    o.dense_dim = job->model.sparse ? 0 : job->model.input_dim;
    o.skip_bad_lines = dc->skip_bad_lines;
    o.random_rows = dc->rows;
    o.random_cols = dc->cols;
    o.labels = dc->labels;
    o.integers = strcmp(dc->integers, "dense") == 0 ? PS_DATA_INT_DENSE : PS_DATA_INT_BUCKET;
    if (dc == &job->train) o.validation_split = job->validation_split, o.holdout = holdout;
    o.shuffle = shuffle;
    o.shuffle_buffer = job->fit.shuffle_buffer;
    /* Generated data draws rows and their order from data.*.seed; files shuffle by fit.seed. */
    o.seed = dc->format[0] == 'r' ? dc->seed : job->fit.seed;
    o.cache_bytes = job->data_cache_bytes, o.cache_dir = job->data_cache_dir, o.log = log;
    const ps_status st = ps_data_open(&o, rank, job->num_workers, out, err);
    if (st != PS_OK) { /* a file that will not open: name the key that gave it */
        const char *which = dc == &job->train ? "train" : "validation";
        char at[PS_PATH_MAX + 8];
        snprintf(at, sizeof(at), "open %s: ", dc->path);
        if (strncmp(err->msg, at, strlen(at)) == 0)
            return ps_error_prefix(err, st, "%s: data.%s.path", job->file, which);
        snprintf(at, sizeof(at), "open %s: ", dc->labels);
        if (dc->labels[0] != '\0' && strncmp(err->msg, at, strlen(at)) == 0)
            return ps_error_prefix(err, st, "%s: data.%s.labels", job->file, which);
    }
    return st;
}

static ps_status setup(trainer *tr, ps_error *err) {
    const ps_job_config *job = tr->job;
    const ps_model_config *m = tr->model;
    ps_mlp_spec spec = {.n_layers = m->num_layers};
    tr->overlap = job->fit.overlap && (job->consistency == PS_ASYNC ||
                                       (job->consistency == PS_SSP && job->staleness >= 1));
    tr->L = m->num_layers;
    tr->dense_input = !m->sparse;
    uint32_t max_units = tr->dense_input ? m->input_dim : 1;
    for (size_t l = 0; l < tr->L; l++) {
        spec.units[l] = tr->units[l] = m->units[l];
        tr->in_units[l] = l == 0 ? 0 : m->units[l - 1];
        tr->kernel_t[l] = m->kernel_table[l];
        tr->bias_t[l] = m->bias_table[l];
        if (m->units[l] > max_units) max_units = m->units[l];
        if (ps_activation_parse(m->activation[l], &spec.act[l], err) != PS_OK) return err->code;
    }
    if (ps_loss_parse(m->loss, &spec.loss, err) != PS_OK) return err->code;
    if (ps_mlp_create(&spec, job->fit.batch_size, &tr->mlp, err) != PS_OK) return err->code;

    const bool split = job->validation_split > 0;
    if (open_data(job, &job->train, tr->opt->rank, job->fit.shuffle, false, &tr->opt->log,
                  &tr->train, err) != PS_OK)
        return err->code;
    const ps_data_config *val = job->has_validation          ? &job->validation
                                : split || tr->opt->evaluate ? &job->train
                                                             : NULL;
    if (val != NULL &&
        open_data(job, val, tr->opt->rank, false, split, &tr->opt->log, &tr->val, err) != PS_OK)
        return err->code;
    uint32_t hint = ps_data_num_features_hint(tr->train);
    if (!m->sparse && hint != 0 && hint != m->input_dim)
        return ps_error_set(err, PS_CONFIG, "%s: model.input_dim is %u but %s has %u features",
                            job->file, m->input_dim, job->train.path[0] ? job->train.path
                                                                       : "data.train", hint);
    if (job->train.format[0] == 'r' && !split) {
        uint64_t mine = job->train.rows / job->num_workers +
                        (tr->opt->rank < job->train.rows % job->num_workers);
        tr->steps_per_epoch = (mine + job->fit.batch_size - 1) / job->fit.batch_size;
    }

    tr->dense_keys = malloc(max_units * sizeof(uint64_t));
    if (tr->dense_keys == NULL) return ps_error_set(err, PS_NOMEM, "out of memory");
    for (uint32_t i = 0; i < max_units; i++) tr->dense_keys[i] = i;
    for (int k = 0; k < 2; k++) {
        for (size_t l = 0; l < tr->L; l++) {
            if (l > 0) tr->params[k].p.w[l] = calloc((size_t)tr->in_units[l] * tr->units[l], 4);
            tr->params[k].p.b[l] = calloc(tr->units[l], sizeof(float));
            if ((l > 0 && !tr->params[k].p.w[l]) || !tr->params[k].p.b[l])
                return ps_error_set(err, PS_NOMEM, "out of memory");
        }
    }
    for (size_t l = 0; l < tr->L; l++) {
        if (l > 0) tr->own.w[l] = calloc((size_t)tr->in_units[l] * tr->units[l], 4);
        tr->own.b[l] = calloc(tr->units[l], sizeof(float));
        if ((l > 0 && !tr->own.w[l]) || !tr->own.b[l])
            return ps_error_set(err, PS_NOMEM, "out of memory");
    }

    /* an evaluation reads only: as an admin it takes no part in (and cannot upset) a barrier */
    if (job->fit.state_dir[0] != '\0' && !tr->opt->evaluate) { /* a restarted worker resumes */
        bool found;
        if (ps_position_path(tr->pos_path, sizeof(tr->pos_path), job->fit.state_dir,
                             tr->opt->rank, err) != PS_OK ||
            ps_position_load(tr->pos_path, job->job_id, tr->opt->rank, &tr->resume, &found,
                             err) != PS_OK)
            return err->code;
        if (found)
            ps_log(&tr->opt->log, PS_LOG_WARN,
                   "worker %u resumes epoch %u at step %llu (clock %llu) from %s",
                   tr->opt->rank, tr->resume.epoch + 1, (unsigned long long)tr->resume.step,
                   (unsigned long long)tr->resume.clock, tr->pos_path);
        tr->seq_base = tr->resume.seq - tr->resume.step;
    }
    ps_client_options co = {.job = job, .rank = tr->opt->rank, .admin = tr->opt->evaluate,
                            .log = tr->opt->log, .clock = tr->resume.clock,
                            .stop = tr->opt->stop};
    shm_sizes(tr, m, job, &co.shm_bytes, &co.shm_stage_bytes);
    if (ps_client_create(&co, &tr->client, err) != PS_OK) return err->code;
    for (size_t l = 0; l < tr->L; l++) {
        const ps_table_spec *k = ps_client_table(tr->client, job->tables[tr->kernel_t[l]].name);
        if (k == NULL || k->dim != tr->units[l])
            return ps_error_set(err, PS_MISMATCH, "servers do not serve table %s with dim %u",
                                job->tables[tr->kernel_t[l]].name, tr->units[l]);
    }
    return PS_OK;
}

static void teardown(trainer *tr) {
    ps_client_destroy(tr->client);
    ps_mlp_destroy(tr->mlp);
    ps_data_destroy(tr->train);
    ps_data_destroy(tr->val);
    for (int k = 0; k < 3; k++) free_batch(&tr->batch[k]);
    for (int k = 0; k < 2; k++)
        for (size_t l = 0; l < tr->L; l++) free(tr->params[k].p.w[l]), free(tr->params[k].p.b[l]);
    for (size_t l = 0; l < tr->L; l++) free(tr->own.w[l]), free(tr->own.b[l]);
    free(tr->dense_keys);
    free(tr->pairs);
    free(tr->map.ids), free(tr->map.row), free(tr->map.stamp);
}

/* --- reporting ------------------------------------------------------------------------------- */

static double now_s(void) { return (double)uv_hrtime() * 1e-9; }

/* ", \"key\": v" for an event, exact in double; NaN (an undefined AUC) as null. */
static void put_number(FILE *out, const char *key, double v) {
    if (isnan(v))
        fprintf(out, ", \"%s\": null", key);
    else
        fprintf(out, ", \"%s\": %.17g", key, v);
}

static void report(trainer *tr, const ps_progress *p, const char *ev, bool done) {
    FILE *out = tr->opt->out;
    if (tr->opt->events) {
        fprintf(out,
                "@ps {\"ev\": \"%s\", \"rank\": %u, \"epoch\": %u, \"epochs\": %u, "
                "\"step\": %llu, \"steps\": %llu, \"samples\": %llu, \"loss_sum\": %.17g, "
                "\"correct\": %llu, \"seconds\": %.6f",
                ev, tr->opt->rank, p->epoch, p->epochs, (unsigned long long)p->step,
                (unsigned long long)p->steps, (unsigned long long)p->samples, p->loss_sum,
                (unsigned long long)p->correct, p->seconds);
        if (done) fprintf(out, ", \"rows_hash\": \"%llu\"", (unsigned long long)tr->rows_hash);
        if (p->has_val)
            fprintf(out, ", \"val_samples\": %llu, \"val_loss_sum\": %.17g, \"val_correct\": %llu",
                    (unsigned long long)p->val_samples, p->val_loss_sum,
                    (unsigned long long)p->val_correct);
        /* this worker's own log loss and AUC; the launcher pools the pairs for the job's AUC */
        if (p->has_logloss) put_number(out, "logloss_sum", p->logloss_sum);
        if (p->has_auc) put_number(out, "auc", p->auc);
        if (p->has_val_logloss) put_number(out, "val_logloss_sum", p->val_logloss_sum);
        if (p->has_val_auc) put_number(out, "val_auc", p->val_auc);
        if (done && tr->pairs_written)
            fprintf(out, ", \"pairs\": %llu", (unsigned long long)tr->n_pairs);
        if (done && !tr->opt->evaluate) { /* ps_step_times, in its order */
            const ps_step_times *t = &tr->times;
            fprintf(out, ", \"times\": [%.6f, %.6f, %.6f, %.6f, %.6f, %.6f]", t->data, t->wait,
                    t->compute, t->send, t->other, t->prep);
            fprintf(out, ", \"shm\": [%u, %u]", t->shm_links, t->links);
        }
        fputs("}\n", out);
        fflush(out);
        return;
    }
    if (tr->job->fit.verbose == 0) return;
    if (!done && (tr->job->fit.verbose != 1 || !tr->opt->tty)) return;
    char line[512];
    ps_progress_format(p, done, line, sizeof(line));
    fprintf(out, tr->opt->tty ? "\r%s\033[K%s" : "%s%s", line, done ? "\n" : "");
    if (done && tr->opt->times && !tr->opt->evaluate) {
        ps_progress_format_times(&tr->times, p->step, line, sizeof(line));
        fprintf(out, "%s\n", line);
    }
    fflush(out);
}

/* --- the loop -------------------------------------------------------------------------------- */

static ps_status next_batch(trainer *tr, ps_data *d, step_batch *sb, ps_error *err) {
    ps_data_batch db;
    if (ps_data_next(d, tr->job->fit.batch_size, &db, err) != PS_OK) return err->code;
    if (db.B == 0) {
        sb->B = 0;
        return PS_OK;
    }
    sb->rows_hash = 0;
    if (d == tr->train)
        for (size_t i = 0; i < db.B; i++) sb->rows_hash += ps_mix64(db.row_index[i]);
    return tr->dense_input ? take_dense_batch(tr, &db, sb, err) : take_batch(tr, &db, sb, err);
}

/* The batch's per-sample log loss (metrics.h) into p and, for a binary model, its (score,
 * label) pairs into tr->pairs for the AUC. The model's outputs are those of the latest forward. */
static ps_status score_batch(trainer *tr, const step_batch *sb, ps_progress *p, ps_error *err) {
    const float *out = ps_mlp_output(tr->mlp);
    const float *y = sb->labels;
    if (ps_mlp_get_spec(tr->mlp)->loss != PS_LOSS_BCE) { /* softmax: the true class's p */
        const size_t C = tr->units[tr->L - 1];
        for (size_t b = 0; b < sb->B; b++)
            p->val_logloss_sum += ps_metrics_logloss_class(out[b * C + (size_t)y[b]]);
        return PS_OK;
    }
    ps_eval_pair *q = grow(tr->pairs, &tr->cap_pairs, tr->n_pairs + sb->B, sizeof(*q));
    if (q == NULL)
        return ps_error_set(err, PS_NOMEM, "%zu validation predictions: out of memory",
                            tr->n_pairs + sb->B);
    tr->pairs = q;
    for (size_t b = 0; b < sb->B; b++) {
        q[tr->n_pairs++] = (ps_eval_pair){out[b], y[b]};
        p->val_logloss_sum += ps_metrics_logloss_binary(out[b], y[b]);
    }
    return PS_OK;
}

/* After the pass: this worker's AUC and, under ps-launch, its pairs for the job's. */
static ps_status finish_scores(trainer *tr, uint32_t epoch, ps_progress *p, ps_error *err) {
    p->has_val_logloss = true;
    if (ps_mlp_get_spec(tr->mlp)->loss != PS_LOSS_BCE) return PS_OK;
    if (tr->opt->pairs_dir != NULL) {
        char path[PS_PATH_MAX + 64];
        if (ps_eval_pairs_path(path, sizeof(path), tr->opt->pairs_dir, epoch, tr->opt->rank,
                               err) != PS_OK ||
            ps_eval_pairs_write(path, tr->pairs, tr->n_pairs, err) != PS_OK)
            return err->code;
        tr->pairs_written = true;
    }
    p->has_val_auc = true;
    p->val_auc = ps_metrics_auc(tr->pairs, tr->n_pairs); /* sorts: after the file is written */
    return PS_OK;
}

/* One pass over the validation data (epoch: 1-based, names the pairs file). */
static ps_status evaluate(trainer *tr, uint32_t epoch, ps_progress *p, ps_error *err) {
    if (ps_data_rewind(tr->val, 0, err) != PS_OK) return err->code;
    step_batch *sb = &tr->batch[0];
    step_params *sp = &tr->params[0];
    tr->n_pairs = 0;
    for (;;) {
        if (next_batch(tr, tr->val, sb, err) != PS_OK) return err->code;
        if (sb->B == 0) return finish_scores(tr, epoch, p, err);
        if (exchange(tr, NULL, sb, sp, false, err) != PS_OK) return err->code;
        if (ps_client_wait_all(tr->client, err) != PS_OK) return err->code;
        ps_mlp_batch mb = model_batch(sb);
        double loss;
        size_t correct;
        if (ps_mlp_forward(tr->mlp, &sp->use, &mb, &loss, &correct, err) != PS_OK) return err->code;
        p->val_samples += sb->B, p->val_loss_sum += loss, p->val_correct += correct;
        if (score_batch(tr, sb, p, err) != PS_OK) return err->code;
    }
}

/* Seconds since *mark, and *mark moved to now: consecutive laps add up to the whole. */
static double lap(double *mark) {
    const double now = now_s(), d = now - *mark;
    *mark = now;
    return d;
}

/* The prep thread's job: the training batches in order, item k into batch[k % 3]. */
static ps_status fill_train(void *ud, size_t slot, bool *last, ps_error *err) {
    trainer *tr = ud;
    ps_status st = next_batch(tr, tr->train, &tr->batch[slot], err);
    *last = st != PS_OK || tr->batch[slot].B == 0;
    return st;
}

/* Training batch k (k-th of the epoch) into batch[k % 3]: from the prep thread, else read now. */
static ps_status take_train(trainer *tr, size_t k, ps_error *err) {
    if (tr->prep == NULL) return next_batch(tr, tr->train, &tr->batch[k % 3], err);
    bool last;
    return ps_prefetch_take(tr->prep, &last, err);
}

/* The oldest batch taken is pushed (its keys copied into requests): the prep thread may refill
 * its slot. */
static void release_train(trainer *tr) {
    if (tr->prep != NULL) ps_prefetch_release(tr->prep);
}

/* A failure a reconnect may cure: a server went away or went quiet (client.h). */
static bool recoverable(const trainer *tr, ps_status st) {
    return (st == PS_CLOSED || st == PS_TIMEOUT) && tr->job->recover_timeout_ms > 0 &&
           !(tr->opt->stop && *tr->opt->stop);
}

#define MAX_RETRIES 16 /* per step: a server that keeps dying fails the worker in the end */

/* After a recoverable failure: says what happened (what names the server), then reconnects with
 * the clock the failed step started from (ps_client_recover). */
static ps_status recover(trainer *tr, uint64_t clock, const ps_error *what, ps_error *err) {
    ps_log(&tr->opt->log, PS_LOG_WARN,
           "worker %u: %s; reconnecting to retry step %llu (for up to %u ms, "
           "cluster.recover_timeout_ms)",
           tr->opt->rank, what->msg, (unsigned long long)clock, tr->job->recover_timeout_ms);
    const uint64_t t0 = uv_hrtime();
    if (ps_client_recover(tr->client, clock, err) != PS_OK) return err->code;
    ps_log(&tr->opt->log, PS_LOG_WARN, "worker %u: reconnected in %.0f ms; retrying the step",
           tr->opt->rank, (double)(uv_hrtime() - t0) * 1e-6);
    return PS_OK;
}

/* fit.state_dir: where this worker is, at most once a second unless force (position.h). A
 * failure to write is a warning: training goes on, a restart would redo more. */
static void save_position(trainer *tr, uint32_t epoch, uint64_t step, bool force) {
    if (tr->pos_path[0] == '\0') return;
    const double now = now_s();
    if (!force && now - tr->saved_at < 1.0) return;
    tr->saved_at = now;
    const ps_position pos = {.epoch = epoch, .step = step, .clock = ps_client_clock(tr->client),
                             .seq = tr->seq_base + step};
    ps_error e = {0};
    if (ps_position_save(tr->pos_path, tr->job->job_id, tr->opt->rank, &pos, &e) != PS_OK)
        ps_log(&tr->opt->log, PS_LOG_WARN, "fit.state_dir: %s", e.msg);
}

/* The rows batch sb needs, into sp, now (the start of an epoch, or a retried step). */
static ps_status fetch_rows(trainer *tr, const step_batch *sb, step_params *sp, ps_error *err) {
    if (exchange(tr, NULL, sb, sp, false, err) != PS_OK) return err->code;
    return ps_client_wait_all(tr->client, err);
}

/* The step's gradients written straight into the shared-memory segment, where the push sends
 * them from; a buffer the client has no room for stays our own. */
static void stage_grads(trainer *tr, const step_batch *sb) {
    for (size_t l = 0; l < tr->L; l++) {
        float *w = ps_client_stage(tr->client, tr->kernel_t[l],
                                   l == 0 ? sb->n_keys : tr->in_units[l]);
        float *b = ps_client_stage(tr->client, tr->bias_t[l], 1);
        if (w != NULL) tr->grads.w[l] = w;
        if (b != NULL) tr->grads.b[l] = b;
    }
}

/* One step t: sb with its rows in sp; nb (batch t+1, or empty) gets its rows into np. retry:
 * the step failed part way and the client reconnected: sb's rows are pulled afresh and the step
 * runs without overlap (with overlap, the gradients of t-1 that were in flight are lost). */
typedef struct {
    step_batch *sb, *nb;
    step_params *sp, *np;
    bool released; /* sb's slot went back to the prep thread */
    double *mark;
    uint64_t redo_clock; /* the clock a retry starts from: the step's, or (ssp with overlap)
                            the one after t-1's, whose end went out with this step */
} step_ctx;

static ps_status do_step(trainer *tr, step_ctx *s, const step_batch **unpushed, bool retry,
                         ps_progress *p, ps_error *err) {
    ps_step_times *tm = &tr->times;
    const bool overlap = tr->overlap && !retry;
    const step_batch *want = s->nb->B > 0 ? s->nb : NULL;
    if (retry) {
        /* t-1's gradients whose exchange failed before its slot went back: give it back now
         * (each batch taken is released once, in order); t itself is released once pushed */
        if (*unpushed != NULL && *unpushed != s->sb) release_train(tr);
        *unpushed = NULL;
        if (fetch_rows(tr, s->sb, s->sp, err) != PS_OK) return err->code;
        tm->wait += lap(s->mark);
    }
    /* requests copy keys and gradients when made (overlap stages none): tr->grads is free again */
    if (overlap && (*unpushed || want)) {
        /* t-1 ends here (ssp: its Clock goes out): a retry of t must not push under t-1's clock,
         * which a server that got that Clock would take for a replay and drop */
        if (*unpushed != NULL && tr->job->consistency != PS_ASYNC)
            s->redo_clock = ps_client_clock(tr->client) + 1;
        if (exchange(tr, *unpushed, want, s->np, true, err) != PS_OK) return err->code;
        if (*unpushed != NULL) release_train(tr);
        *unpushed = NULL;
        tm->send += lap(s->mark);
    }
    step_batch *sb = s->sb;
    ps_mlp_batch mb = model_batch(sb);
    double loss;
    size_t correct;
    float *gw0 = grow(tr->own.w[0], &tr->grad_cap_rows, sb->n_keys + 1,
                      tr->units[0] * sizeof(float));
    if (gw0 == NULL) return ps_error_set(err, PS_NOMEM, "out of memory");
    tr->own.w[0] = gw0;
    tr->own.n_rows = sb->n_keys;
    tr->grads = tr->own;
    if (!overlap) stage_grads(tr, sb); /* pushed right after the compute: no copy of them */
    if (ps_mlp_forward_backward(tr->mlp, &s->sp->use, &mb, &tr->grads, &loss, &correct, err) !=
        PS_OK)
        return err->code;
    p->samples += sb->B, p->loss_sum += loss, p->correct += correct, p->step++;
    tm->compute += lap(s->mark);
    if (overlap) {
        *unpushed = sb;
    } else {
        if (exchange(tr, sb, want, s->np, false, err) != PS_OK) return err->code;
        tm->send += lap(s->mark);
    }
    if (ps_client_wait_all(tr->client, err) != PS_OK) return err->code;
    tm->wait += lap(s->mark);
    /* t's slot goes back to the prep thread only once the step is through: a step retried after
     * a reconnect computes the same batch again (released at once, the slot was refilled with
     * batch t + 3, or the epoch's end, and the retry trained that) */
    tr->rows_hash += sb->rows_hash; /* the rows trained, once each, whatever the retries */
    if (!overlap && !s->released) release_train(tr); /* sb is the prep thread's from here */
    s->released = true;
    return PS_OK;
}

/* The epoch's steps, timed into tr->times (see ps_step_times). A step that fails because a
 * server went away or went quiet is retried from its start once the client has reconnected
 * (cluster.recover_timeout_ms): its figures count once, and the servers apply its gradients
 * once (a retried push is acknowledged, not applied, where it already was). */
static ps_status run_steps(trainer *tr, uint32_t epoch, ps_progress *p, ps_error *err) {
    ps_step_times *tm = &tr->times;
    double t0 = now_s(), mark = t0, last_event = t0;
    /* batch 0 and its rows */
    if (take_train(tr, 0, err) != PS_OK) return err->code;
    tm->data += lap(&mark);
    if (tr->batch[0].B == 0) return PS_OK;
    tr->batch[0].seq = tr->seq_base + tr->skip + 1;
    ps_status st = fetch_rows(tr, &tr->batch[0], &tr->params[0], err);
    for (int k = 0; recoverable(tr, st) && k < MAX_RETRIES; k++) {
        ps_error what = *err;
        if (recover(tr, ps_client_clock(tr->client), &what, err) != PS_OK) return err->code;
        st = fetch_rows(tr, &tr->batch[0], &tr->params[0], err);
    }
    if (st != PS_OK) return st;
    tm->wait += lap(&mark);
    const step_batch *unpushed = NULL; /* overlap: batch t-1, whose gradients are in tr->grads */
    for (size_t t = 0;; t++) {
        if (tr->opt->stop && *tr->opt->stop)
            return ps_error_set(err, PS_CLOSED, "interrupted at epoch %u step %llu", epoch + 1,
                                (unsigned long long)p->step);
        step_ctx s = {.sb = &tr->batch[t % 3], .nb = &tr->batch[(t + 1) % 3],
                      .sp = &tr->params[t % 2], .np = &tr->params[(t + 1) % 2], .mark = &mark};
        if (take_train(tr, t + 1, err) != PS_OK) return err->code;
        tm->data += lap(&mark);
        s.nb->seq = tr->seq_base + tr->skip + t + 2;
        const ps_progress before = *p;
        s.redo_clock = ps_client_clock(tr->client); /* the step starts here */
        st = do_step(tr, &s, &unpushed, false, p, err);
        for (int k = 0; recoverable(tr, st) && k < MAX_RETRIES; k++) {
            ps_error what = *err;
            *p = before;
            if (recover(tr, s.redo_clock, &what, err) != PS_OK) return err->code;
            st = do_step(tr, &s, &unpushed, true, p, err);
        }
        if (st != PS_OK) return st;
        save_position(tr, epoch, tr->skip + p->step, false);
        p->seconds = mark - t0;
        if (s.nb->B == 0) break;
        if (mark - last_event >= EVENT_PERIOD_S) {
            report(tr, p, "step", false);
            last_event = mark;
            tm->other += lap(&mark);
        }
    }
    if (unpushed != NULL) { /* the epoch's last gradients */
        const uint64_t clock = ps_client_clock(tr->client); /* a retry redoes this step */
        st = exchange(tr, unpushed, NULL, NULL, false, err);
        tm->send += lap(&mark);
        if (st == PS_OK) st = ps_client_wait_all(tr->client, err);
        for (int k = 0; recoverable(tr, st) && k < MAX_RETRIES; k++) {
            ps_error what = *err; /* its gradients are still in tr->grads: push them again (a
                                     server that got them acknowledges them: replay.h) */
            if (recover(tr, clock, &what, err) != PS_OK) return err->code;
            st = exchange(tr, unpushed, NULL, NULL, false, err);
            if (st == PS_OK) st = ps_client_wait_all(tr->client, err);
        }
        if (st != PS_OK) return st;
        tm->wait += lap(&mark);
    }
    tr->seq_base += tr->skip + p->step;
    p->seconds = mark - t0; /* = the sum of the parts */
    return PS_OK;
}

static ps_status run_epoch(trainer *tr, uint32_t epoch, ps_progress *p, ps_error *err) {
    if (ps_data_rewind(tr->train, epoch, err) != PS_OK) return err->code;
    tr->skip = 0;
    if (epoch == tr->resume.epoch && tr->resume.step > 0) { /* the batches done before */
        for (uint64_t i = 0; i < tr->resume.step; i++, tr->skip++) {
            ps_data_batch db;
            if (ps_data_next(tr->train, tr->job->fit.batch_size, &db, err) != PS_OK)
                return err->code;
            if (db.B == 0) break;
        }
        tr->resume.step = 0;
    }
    tr->rows_hash = 0;
    tr->pairs_written = false;
    tr->times = (ps_step_times){0};
    *p = (ps_progress){.epoch = epoch + 1, .epochs = tr->job->fit.epochs,
                       .steps = tr->steps_per_epoch, .has_val = tr->val != NULL};
    if (tr->job->fit.threads >= 2 &&
        ps_prefetch_start(3, fill_train, tr, &tr->prep, err) != PS_OK)
        return err->code;
    ps_status st = run_steps(tr, epoch, p, err);
    if (tr->prep != NULL) tr->times.prep = ps_prefetch_busy_seconds(tr->prep);
    tr->times.links = ps_client_num_shards(tr->client), tr->times.shm_links = 0;
    for (uint32_t s = 0; s < tr->times.links; s++)
        tr->times.shm_links += ps_client_shared_memory(tr->client, s) > 0;
    ps_prefetch_stop(tr->prep); /* joined: the data, id map and rows_hash are ours again */
    tr->prep = NULL;
    if (st != PS_OK) return st;
    if (p->step == 0) return PS_OK; /* an empty shard */
    if (tr->steps_per_epoch == 0 && tr->skip == 0) tr->steps_per_epoch = p->step;
    p->steps = tr->steps_per_epoch;
    if (tr->val != NULL) { /* a pass cut short by a lost server is run again whole */
        const ps_progress before = *p;
        st = evaluate(tr, epoch + 1, p, err);
        for (int k = 0; recoverable(tr, st) && k < MAX_RETRIES; k++) {
            ps_error what = *err;
            *p = before;
            if (recover(tr, ps_client_clock(tr->client), &what, err) != PS_OK) return err->code;
            st = evaluate(tr, epoch + 1, p, err);
        }
        if (st != PS_OK) return st;
    }
    if (ps_data_skipped(tr->train) > 0)
        ps_log(&tr->opt->log, PS_LOG_WARN, "epoch %u: skipped %zu malformed lines (first: %s)",
               epoch + 1, ps_data_skipped(tr->train), ps_data_skipped_message(tr->train, 0));
    return PS_OK;
}

/* --evaluate: one pass over the evaluation data, reported as a one-epoch run. */
static ps_status run_evaluation(trainer *tr, ps_progress *p, ps_error *err) {
    const double t0 = now_s();
    ps_progress v = {0};
    if (evaluate(tr, 1, &v, err) != PS_OK) return err->code;
    const uint64_t B = tr->job->fit.batch_size;
    *p = (ps_progress){.epoch = 1, .epochs = 1, .samples = v.val_samples,
                       .loss_sum = v.val_loss_sum, .correct = v.val_correct,
                       .has_logloss = v.has_val_logloss, .logloss_sum = v.val_logloss_sum,
                       .has_auc = v.has_val_auc, .auc = v.val_auc,
                       .step = (v.val_samples + B - 1) / B, .seconds = now_s() - t0};
    p->steps = p->step;
    return PS_OK;
}

/* This epoch's sums to the servers: a ps-server's shard 0 prints the job's line from them. */
static ps_status send_epoch_stats(trainer *tr, const ps_progress *p, ps_error *err) {
    ps_EpochStats s = {.epoch = p->epoch, .steps = p->steps, .samples = p->samples,
                       .loss_sum = p->loss_sum, .correct = p->correct, .seconds = p->seconds,
                       .has_val = p->has_val, .val_samples = p->val_samples,
                       .val_loss_sum = p->val_loss_sum, .val_correct = p->val_correct};
    return ps_client_epoch_stats(tr->client, &s, err);
}

/* Tells every server this worker is done: sync/ssp, it leaves the barrier (the other workers stop
 * waiting for its steps); in every mode, a server that ends with its job counts it. */
static ps_status finish(trainer *tr, const ps_progress *p, ps_error *err) {
    (void)p;
    ps_op op;
    if (ps_client_clock_async(tr->client, true, &op, err) != PS_OK) return err->code;
    return ps_client_wait(tr->client, op, err);
}

/* f, again after a reconnect when a server went away or went quiet (a server that already had
 * this epoch's EpochStats from the rank ignores the repeat: job_end.c). */
static ps_status retried(trainer *tr, ps_status (*f)(trainer *, const ps_progress *, ps_error *),
                         const ps_progress *p, ps_error *err) {
    ps_status st = f(tr, p, err);
    for (int k = 0; recoverable(tr, st) && k < MAX_RETRIES; k++) {
        ps_error what = *err;
        if (recover(tr, ps_client_clock(tr->client), &what, err) != PS_OK) return err->code;
        st = f(tr, p, err);
    }
    return st;
}

ps_status ps_train_run(const ps_train_options *opt, ps_error *err) {
    trainer tr = {.opt = opt, .job = opt->job, .model = &opt->job->model};
    if (!opt->job->has_model)
        return ps_error_set(err, PS_CONFIG, "%s: the job has no \"model\"", opt->job->file);
    ps_status st = setup(&tr, err);
    const ps_fit_config *fit = &opt->job->fit;
    if (opt->evaluate) {
        ps_progress p;
        if (st == PS_OK) st = run_evaluation(&tr, &p, err);
        if (st == PS_OK) report(&tr, &p, "epoch", true);
        teardown(&tr);
        return st;
    }
    double t0 = now_s();
    uint64_t total = 0;
    for (uint32_t e = tr.resume.epoch; st == PS_OK && e < fit->epochs; e++) {
        ps_progress p;
        if (!opt->events && fit->verbose > 0) {
            fprintf(opt->out, "Epoch %u/%u\n", e + 1, fit->epochs);
            fflush(opt->out);
        }
        st = run_epoch(&tr, e, &p, err);
        if (st == PS_OK) st = retried(&tr, send_epoch_stats, &p, err);
        if (st == PS_OK && e + 1 == fit->epochs) st = retried(&tr, finish, &p, err);
        if (st != PS_OK) break;
        total += p.samples;
        save_position(&tr, e + 1, 0, true);
        report(&tr, &p, "epoch", true);
        if (!opt->events && fit->metrics_file[0] &&
            !ps_progress_append_json(fit->metrics_file, &p))
            ps_log(&opt->log, PS_LOG_WARN, "cannot append to %s", fit->metrics_file);
    }
    if (st == PS_OK && tr.pos_path[0] != '\0') remove(tr.pos_path); /* done: nothing to resume */
    if (st == PS_OK && !opt->events && fit->verbose > 0) {
        double s = now_s() - t0;
        fprintf(opt->out, "Trained %u epoch%s, %llu samples in %.2fs (%.0f samples/s)\n",
                fit->epochs, fit->epochs == 1 ? "" : "s", (unsigned long long)total, s,
                s > 0 ? (double)total / s : 0.0);
    }
    teardown(&tr);
    return st;
}
