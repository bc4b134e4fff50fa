/* store.c - sparse rows with AdaGrad state.
 *
 * Index: power-of-two array of 8-byte slots, linear probing, load <= 3/4. A slot packs the upper
 * 32 bits of the key's hash (a tag, so a probe rarely touches a row that is not the one) with the
 * row number + 1 (0 = empty). Rows live in chunks of CHUNK_ROWS rows of `stride` bytes (a
 * multiple of 4, not 8: a row-wise dim-16 row is 76 bytes, not 80):
 *   [key u64][w: dim f32][acc: dim or 1 f32][step u32, only with lr_decay]
 * Growing the index moves only slots, so row numbers stay valid across a push. Chunk 0 starts
 * at FIRST_CHUNK_ROWS rows and doubles by realloc (a small table holds kilobytes, not a 4096-row
 * chunk): rows of chunk 0 may move while it grows, so no row pointer is kept across a row's
 * creation, only row numbers.
 *
 * Memory control (spec.mem, store.h): a row may be evicted. Its index slot is deleted by
 * backward shift (linear probing needs no tombstones then: a probe still stops at the first
 * empty slot), its live bit is cleared and its row number goes on a free list that the next new
 * row takes first. Tables that expire or evict stamp each row with the table step of its last
 * push (and its second, for expire_after_seconds): [..][touch u32][tsec u32] after the row.
 * Admission counts pending keys in a second open-addressing table of 16-byte entries
 * {key, last step, count}, load 3/8..3/4, so 21..43 bytes per pending key.
 *
 * Push and pull walk keys as a software pipeline: key i + 2*AHEAD is hashed and its slot
 * prefetched, key i + AHEAD's slot is probed for its first tag match and that row prefetched, and
 * key i is resolved with both already in cache. A lone lookup would wait on two cache misses in a
 * row (the slot, then the row's key for the compare).
 *
 * With a pool (ps_store_set_pool), a call of >= PAR_MIN_KEYS keys is cut into one key range per
 * thread: lookups, the apply (rows are distinct by then: duplicates take the serial path) and
 * pulls run side by side. Rows are created, and the index grown, on the caller's thread only. */
#include "store.h"

#include <stdlib.h>
#include <string.h>

#include "adagrad.h"
#include "hash.h"
#include "init.h"
#include "wire.h"

#define CHUNK_SHIFT 12
#define CHUNK_ROWS (1u << CHUNK_SHIFT)
#define FIRST_CHUNK_ROWS 64u /* chunk 0 starts this small and doubles up to CHUNK_ROWS */
#define AHEAD 16 /* keys between pipeline stages */
#define RING 64  /* > 2 * AHEAD, power of two */
#define PREFETCH_MAX 512 /* bytes of a row prefetched at most; the hardware streams the rest */
#define MAX_ROWS 0xfffffffeu
#define NO_ROW UINT32_MAX
/* A push or pull of fewer keys stays on the caller's thread: waking the pool costs ~10-50 us. */
#define PAR_MIN_KEYS 16384
#define SWEEP_MIN 256   /* row numbers (and pending slots) a push's expiry sweep visits, at least */
#define LRU_SAMPLES 8   /* rows sampled per LRU eviction (as redis's maxmemory-samples) */

typedef struct {
    uint64_t key;
    uint32_t step;  /* the table step that last counted it */
    uint32_t count; /* pushes counted; 0: the entry is empty */
} pending_entry;

struct ps_store {
    ps_table_spec spec;
    uint64_t seed;
    size_t state_len; /* accumulator floats per row */
    size_t stride;    /* bytes per row */
    bool has_step;
    bool expires; /* expire_after_steps or expire_after_seconds */
    size_t touch_off, tsec_off; /* byte offsets of the stamps in a row; 0: not kept */

    uint64_t *slots; /* (cap) */
    size_t cap, mask, used;

    uint8_t **chunks; /* (n_chunks) of CHUNK_ROWS * stride bytes; chunk 0: chunk0_rows */
    size_t n_chunks, chunks_cap, chunk0_rows;
    size_t rows;      /* row numbers handed out: live rows plus free ones */
    size_t n_live;
    uint64_t *live;   /* (n_chunks * CHUNK_ROWS / 64) bit per row number: holds a row */
    uint32_t free_head; /* free row numbers, linked through their first weight; NO_ROW: none */
    size_t n_free;

    /* memory control */
    uint32_t step;            /* pushes applied so far (wraps; ages compare modulo 2^32) */
    const uint64_t *clock_ms; /* borrowed; NULL: time stands still at 0 */
    size_t sweep_row, sweep_pending; /* where the expiry sweep goes on */
    uint64_t rng;             /* LRU sampling */
    uint64_t admitted, evicted;
    pending_entry *pend;      /* (pcap) admission counts */
    size_t pcap, pused;
    uint8_t *fkeys, *fgrads;  /* (fcap) keys and grads of a push that passed admission */
    size_t fcap;

    /* push scratch, reused: row of each key, a seen-bitmap over rows for duplicate detection */
    uint32_t *ridx;
    size_t ridx_cap;
    uint64_t *seen;
    size_t seen_words;
    float *gsum; /* (dim) sum of duplicate gradients */
    float *gtmp; /* (parts, dim) per part: an aligned copy of one gradient or initial row */

    ps_pool *pool; /* borrowed; NULL: the caller's thread does everything */
    unsigned parts;
};

/* The slot hash must not be the shard hash: every key on this shard shares jump-hash structure. */
static inline uint64_t slot_hash(uint64_t key) {
    return ps_mix64(key + 0x2545f4914f6cdd1dULL);
}

static inline uint8_t *row_at(const ps_store *s, uint32_t r) {
    return s->chunks[r >> CHUNK_SHIFT] + (size_t)(r & (CHUNK_ROWS - 1)) * s->stride;
}
/* A row is 4-byte aligned (stride % 4 == 0): its key may straddle 8 bytes, hence memcpy (one
 * load on the hosts we build for). */
static inline uint64_t row_key(const uint8_t *row) {
    uint64_t k;
    memcpy(&k, row, 8);
    return k;
}
static inline float *row_w(uint8_t *row) { return (float *)(row + 8); }
static inline float *row_acc(const ps_store *s, uint8_t *row) {
    return (float *)(row + 8) + s->spec.dim;
}
static inline uint32_t *row_step(const ps_store *s, uint8_t *row) {
    return (uint32_t *)((float *)(row + 8) + s->spec.dim + s->state_len);
}
static inline uint32_t *row_u32(uint8_t *row, size_t off) { return (uint32_t *)(row + off); }
static inline bool is_live(const ps_store *s, uint32_t r) {
    return (s->live[r >> 6] >> (r & 63)) & 1;
}
static inline uint32_t now_s(const ps_store *s) {
    return s->clock_ms ? (uint32_t)(*s->clock_ms / 1000) : 0;
}

/* Expired: expire_after_steps pushes to the table (or expire_after_seconds) since its last. */
static inline bool expired(const ps_store *s, uint8_t *row) {
    const ps_table_memory *m = &s->spec.mem;
    if (m->expire_after_steps && s->step - *row_u32(row, s->touch_off) >= m->expire_after_steps)
        return true;
    return m->expire_after_seconds &&
           now_s(s) - *row_u32(row, s->tsec_off) >= m->expire_after_seconds;
}

ps_status ps_store_create(const ps_table_spec *spec, uint64_t seed, ps_store **out, ps_error *err) {
    if (spec->dim == 0) return ps_error_set(err, PS_INVALID_ARG, "table %s: dim 0", spec->name);
    ps_store *s = calloc(1, sizeof(*s));
    if (s == NULL) goto nomem;
    s->spec = *spec;
    s->seed = seed;
    s->state_len = ps_adagrad_state_len(&spec->opt, spec->dim);
    s->has_step = spec->opt.lr_decay != 0.0;
    size_t bytes = 8 + 4 * (spec->dim + s->state_len) + (s->has_step ? 4 : 0);
    if (spec->mem.expire_after_steps != 0 || spec->mem.eviction == PS_EVICT_LRU)
        s->touch_off = bytes, bytes += 4;
    if (spec->mem.expire_after_seconds != 0) s->tsec_off = bytes, bytes += 4;
    s->stride = (bytes + 3) & ~(size_t)3; /* 4-byte aligned: keys are read with memcpy */
    s->free_head = NO_ROW;
    s->expires = spec->mem.expire_after_steps != 0 || spec->mem.expire_after_seconds != 0;
    s->rng = seed ^ 0x9e3779b97f4a7c15ULL ^ spec->id;
    s->cap = 16, s->mask = 15;
    s->slots = calloc(s->cap, sizeof(*s->slots));
    s->gsum = malloc(sizeof(float) * spec->dim);
    s->gtmp = malloc(sizeof(float) * spec->dim);
    s->parts = 1;
    if (s->slots == NULL || s->gsum == NULL || s->gtmp == NULL) goto nomem;
    *out = s;
    return PS_OK;
nomem:
    ps_store_destroy(s);
    return ps_error_set(err, PS_NOMEM, "table %s: out of memory", spec->name);
}

void ps_store_destroy(ps_store *s) {
    if (s == NULL) return;
    for (size_t i = 0; i < s->n_chunks; i++) free(s->chunks[i]);
    free(s->chunks);
    free(s->live);
    free(s->pend);
    free(s->fkeys);
    free(s->fgrads);
    free(s->slots);
    free(s->ridx);
    free(s->seen);
    free(s->gsum);
    free(s->gtmp);
    free(s);
}

static ps_status grow_index(ps_store *s) {
    size_t ncap = s->cap * 2, nmask = ncap - 1;
    uint64_t *ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL) return PS_NOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        uint64_t v = s->slots[i];
        if (i + AHEAD < s->cap && s->slots[i + AHEAD] != 0) /* rehashing reads every row's key */
            __builtin_prefetch(row_at(s, (uint32_t)s->slots[i + AHEAD] - 1));
        if (v == 0) continue;
        uint32_t r = (uint32_t)v - 1;
        size_t p = slot_hash(row_key(row_at(s, r))) & nmask;
        while (ns[p] != 0) p = (p + 1) & nmask;
        ns[p] = v;
    }
    free(s->slots);
    s->slots = ns, s->cap = ncap, s->mask = nmask;
    return PS_OK;
}

/* A new row holding only its key (values unset); returns its number or -1 (NOMEM). */
static int64_t alloc_row(ps_store *s, uint64_t key) {
    uint32_t r;
    if (s->free_head != NO_ROW) { /* an evicted row's place first */
        r = s->free_head;
        memcpy(&s->free_head, row_w(row_at(s, r)), 4);
        s->n_free--;
    } else {
        if (s->rows >= MAX_ROWS) return -1;
        if ((s->rows >> CHUNK_SHIFT) == s->n_chunks) {
            if (s->n_chunks == s->chunks_cap) {
                size_t nc = s->chunks_cap ? s->chunks_cap * 2 : 8;
                uint8_t **np = realloc(s->chunks, nc * sizeof(*np));
                if (np == NULL) return -1;
                s->chunks = np, s->chunks_cap = nc;
            }
            const size_t words = CHUNK_ROWS / 64;
            uint64_t *nl = realloc(s->live, (s->n_chunks + 1) * words * sizeof(*nl));
            if (nl == NULL) return -1;
            memset(nl + s->n_chunks * words, 0, words * sizeof(*nl));
            s->live = nl;
            const size_t n = s->n_chunks == 0 ? FIRST_CHUNK_ROWS : CHUNK_ROWS;
            uint8_t *c = malloc(n * s->stride);
            if (c == NULL) return -1;
            if (s->n_chunks == 0) s->chunk0_rows = n;
            s->chunks[s->n_chunks++] = c;
        } else if (s->n_chunks == 1 && s->rows == s->chunk0_rows) { /* < CHUNK_ROWS here */
            uint8_t *c = realloc(s->chunks[0], 2 * s->chunk0_rows * s->stride);
            if (c == NULL) return -1;
            s->chunks[0] = c, s->chunk0_rows *= 2;
        }
        r = (uint32_t)s->rows++;
    }
    s->live[r >> 6] |= 1ull << (r & 63);
    s->n_live++;
    uint8_t *row = row_at(s, r);
    memcpy(row, &key, 8);
    if (s->touch_off) *row_u32(row, s->touch_off) = s->step;
    if (s->tsec_off) *row_u32(row, s->tsec_off) = now_s(s);
    return r;
}

/* Backward-shift deletion of slot p of a linear-probing table of cap (a power of two) slots:
 * later entries of the same run move back so every probe still meets them before an empty
 * slot. home(i): the home slot of the entry in slot i; empty(i), move(dst, src), clear(i). */
#define BACKWARD_SHIFT_DELETE(p, mask, empty, home, move, clear)                                   \
    do {                                                                                           \
        size_t i_ = (p), j_ = (p);                                                                 \
        for (;;) {                                                                                 \
            j_ = (j_ + 1) & (mask);                                                                \
            if (empty(j_)) break;                                                                  \
            size_t h_ = home(j_);                                                                  \
            /* the entry at j_ may fill i_ unless its home lies cyclically in (i_, j_] */          \
            bool stays_ = i_ <= j_ ? (h_ > i_ && h_ <= j_) : (h_ > i_ || h_ <= j_);                \
            if (!stays_) {                                                                         \
                move(i_, j_);                                                                      \
                i_ = j_;                                                                           \
            }                                                                                      \
        }                                                                                          \
        clear(i_);                                                                                 \
    } while (0)

#define SLOT_EMPTY(i) (s->slots[i] == 0)
#define SLOT_HOME(i) (slot_hash(row_key(row_at(s, (uint32_t)s->slots[i] - 1))) & s->mask)
#define SLOT_MOVE(d, f) (s->slots[d] = s->slots[f])
#define SLOT_CLEAR(i) (s->slots[i] = 0)

/* Removes row r (live) from the index and puts its number on the free list. */
static void evict_row(ps_store *s, uint32_t r) {
    uint8_t *row = row_at(s, r);
    const uint64_t key = row_key(row);
    size_t p = slot_hash(key) & s->mask;
    while ((uint32_t)s->slots[p] != r + 1) p = (p + 1) & s->mask;
    BACKWARD_SHIFT_DELETE(p, s->mask, SLOT_EMPTY, SLOT_HOME, SLOT_MOVE, SLOT_CLEAR);
    s->used--;
    s->live[r >> 6] &= ~(1ull << (r & 63));
    s->n_live--;
    memcpy(row_w(row), &s->free_head, 4);
    s->free_head = r, s->n_free++;
    s->evicted++;
}

/* A new row for key with initial weights and accumulator; returns its number or -1 (NOMEM). */
static int64_t new_row(ps_store *s, uint64_t key) {
    int64_t r = alloc_row(s, key);
    if (r < 0) return -1;
    uint8_t *row = row_at(s, (uint32_t)r);
    ps_init_row(&s->spec.init, s->seed, s->spec.id, key, row_w(row), s->spec.dim);
    ps_adagrad_init_state(&s->spec.opt, row_acc(s, row), s->spec.dim);
    if (s->has_step) *row_step(s, row) = 0;
    return r;
}

/* --- admission: pending keys and their counts ---------------------------------------------- */

#define PEND_EMPTY(i) (s->pend[i].count == 0)
#define PEND_HOME(i) (slot_hash(s->pend[i].key) & (s->pcap - 1))
#define PEND_MOVE(d, f) (s->pend[d] = s->pend[f])
#define PEND_CLEAR(i) (s->pend[i].count = 0)

static void pend_delete(ps_store *s, size_t p) {
    BACKWARD_SHIFT_DELETE(p, s->pcap - 1, PEND_EMPTY, PEND_HOME, PEND_MOVE, PEND_CLEAR);
    s->pused--;
}

static ps_status pend_grow(ps_store *s) {
    size_t ncap = s->pcap ? s->pcap * 2 : 64;
    pending_entry *np = calloc(ncap, sizeof(*np));
    if (np == NULL) return PS_NOMEM;
    for (size_t i = 0; i < s->pcap; i++) {
        if (s->pend[i].count == 0) continue;
        size_t p = slot_hash(s->pend[i].key) & (ncap - 1);
        while (np[p].count != 0) p = (p + 1) & (ncap - 1);
        np[p] = s->pend[i];
    }
    free(s->pend);
    s->pend = np, s->pcap = ncap;
    return PS_OK;
}

/* Counts key's push of this step (once per push); true when the count reaches admit_after (the
 * entry is then gone: the caller creates the row). */
static ps_status pend_count(ps_store *s, uint64_t key, bool *admit) {
    if ((s->pused + 1) * 4 > s->pcap * 3 && pend_grow(s) != PS_OK) return PS_NOMEM;
    const size_t mask = s->pcap - 1;
    size_t p = slot_hash(key) & mask;
    while (s->pend[p].count != 0 && s->pend[p].key != key) p = (p + 1) & mask;
    pending_entry *e = &s->pend[p];
    if (e->count == 0) {
        *e = (pending_entry){.key = key, .step = s->step, .count = 1};
        s->pused++;
    } else if (e->step != s->step) {
        /* aged past expire_after_steps, the sweep not there yet: forgotten, counted afresh (as
         * the sweep, which runs before this push's step, would have: hence the - 1) */
        const uint64_t E = s->spec.mem.expire_after_steps;
        if (E != 0 && (uint32_t)(s->step - 1 - e->step) >= E) e->count = 0;
        e->step = s->step, e->count++;
    }
    *admit = e->count >= s->spec.mem.admit_after;
    if (*admit) pend_delete(s, p);
    return PS_OK;
}

static inline int64_t find(const ps_store *s, uint64_t key, uint64_t h) {
    const uint32_t tag = (uint32_t)(h >> 32);
    for (size_t p = h & s->mask;; p = (p + 1) & s->mask) {
        uint64_t v = s->slots[p];
        if (v == 0) return -1;
        if ((uint32_t)(v >> 32) == tag && row_key(row_at(s, (uint32_t)v - 1)) == key)
            return (uint32_t)v - 1;
    }
}

static inline int64_t find_or_insert(ps_store *s, uint64_t key, uint64_t h) {
    const uint32_t tag = (uint32_t)(h >> 32);
    size_t p = h & s->mask;
    for (;; p = (p + 1) & s->mask) {
        uint64_t v = s->slots[p];
        if (v == 0) break;
        if ((uint32_t)(v >> 32) == tag && row_key(row_at(s, (uint32_t)v - 1)) == key)
            return (uint32_t)v - 1;
    }
    int64_t r = new_row(s, key);
    if (r < 0) return -1;
    s->admitted++;
    s->slots[p] = (uint64_t)tag << 32 | (uint64_t)(r + 1);
    if (++s->used * 4 > s->cap * 3 && grow_index(s) != PS_OK) return -1;
    return r;
}

/* Pipeline stages 1 and 2 (only hints: an insert or a grown index in between is harmless). */
static inline uint64_t hash_and_prefetch_slot(const ps_store *s, const uint8_t *keys, size_t i) {
    uint64_t h = slot_hash(ps_load_u64(keys + 8 * i));
    __builtin_prefetch(&s->slots[h & s->mask]);
    return h;
}

/* The row of the first slot whose tag matches (usually key's row), or NULL: a prefetch target.
 * (The prefetch itself stays in the caller: GCC's pure-function discovery would otherwise drop a
 * helper whose only effect is a prefetch.) */
static inline const uint8_t *candidate_row(const ps_store *s, uint64_t h) {
    const uint32_t tag = (uint32_t)(h >> 32);
    for (size_t p = h & s->mask, probes = 0; probes < 8; p = (p + 1) & s->mask, probes++) {
        uint64_t v = s->slots[p];
        if (v == 0) return NULL;
        if ((uint32_t)(v >> 32) == tag) return row_at(s, (uint32_t)v - 1);
    }
    return NULL;
}

/* Prefetches bytes [0, end) of the candidate row of h. */
#define PREFETCH_CANDIDATE(s, h, end)                                                              \
    do {                                                                                           \
        const uint8_t *row_ = candidate_row(s, h);                                                 \
        if (row_ != NULL) {                                                                        \
            for (size_t o_ = 0; o_ < (end); o_ += 64) __builtin_prefetch(row_ + o_);               \
            __builtin_prefetch(row_ + (end) - 1);                                                  \
        }                                                                                          \
    } while (0)

static ps_status reserve_scratch(ps_store *s, size_t n) {
    if (n > s->ridx_cap) {
        uint32_t *p = realloc(s->ridx, n * sizeof(*p));
        if (p == NULL) return PS_NOMEM;
        s->ridx = p, s->ridx_cap = n;
    }
    size_t words = (s->rows + 63) / 64;
    if (words > s->seen_words) {
        size_t nw = words * 2;
        uint64_t *p = realloc(s->seen, nw * sizeof(*p));
        if (p == NULL) return PS_NOMEM;
        memset(p + s->seen_words, 0, (nw - s->seen_words) * sizeof(*p));
        s->seen = p, s->seen_words = nw;
    }
    return PS_OK;
}

static inline void apply_row(ps_store *s, uint8_t *row, const float *g) {
    uint64_t step = 1;
    if (s->has_step) step = ++*row_step(s, row);
    if (s->touch_off) *row_u32(row, s->touch_off) = s->step;
    if (s->tsec_off) *row_u32(row, s->tsec_off) = now_s(s);
    ps_adagrad_update(&s->spec.opt, row_w(row), row_acc(s, row), g, s->spec.dim, step);
}

/* Unaligned gradient rows are copied to an aligned buffer before the kernel reads them. */
static inline const float *grad_row(const ps_store *s, const uint8_t *grads, size_t i, float *tmp) {
    const uint8_t *p = grads + i * s->spec.dim * sizeof(float);
    if (((uintptr_t)p & (sizeof(float) - 1)) == 0) return (const float *)(const void *)p;
    memcpy(tmp, p, s->spec.dim * sizeof(float));
    return tmp;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Slow path for a push that names a row more than once: group positions by row, sum, apply. */
static ps_status apply_with_duplicates(ps_store *s, const uint8_t *grads, size_t n) {
    const size_t dim = s->spec.dim;
    /* (row << 32 | position): sorting groups a row's gradients, in push order */
    uint64_t *rp = malloc(n * sizeof(*rp));
    float *tmp = s->gtmp;
    if (rp == NULL) return PS_NOMEM;
    for (size_t i = 0; i < n; i++) rp[i] = (uint64_t)s->ridx[i] << 32 | i;
    qsort(rp, n, sizeof(*rp), cmp_u64);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && rp[j] >> 32 == rp[i] >> 32) j++;
        uint8_t *row = row_at(s, (uint32_t)(rp[i] >> 32));
        if (j == i + 1) {
            apply_row(s, row, grad_row(s, grads, (uint32_t)rp[i], tmp));
        } else {
            memcpy(s->gsum, grad_row(s, grads, (uint32_t)rp[i], tmp), dim * sizeof(float));
            for (size_t k = i + 1; k < j; k++) {
                const float *g = grad_row(s, grads, (uint32_t)rp[k], tmp);
                for (size_t d = 0; d < dim; d++) s->gsum[d] += g[d];
            }
            apply_row(s, row, s->gsum);
        }
        i = j;
    }
    free(rp);
    return PS_OK;
}

/* Stage 3 of the pipeline for keys [lo, hi): ridx[i] = the key's row. With insert, missing rows
 * are created (one thread only); without, they read NO_ROW (safe on several threads at once). */
static inline ps_status resolve_range(ps_store *s, const uint8_t *keys, size_t lo, size_t hi,
                                      bool insert) {
    uint64_t h[RING];
    for (size_t i = lo; i < hi && i < lo + 2 * AHEAD; i++)
        h[i % RING] = hash_and_prefetch_slot(s, keys, i);
    for (size_t i = lo; i < hi && i < lo + AHEAD; i++) PREFETCH_CANDIDATE(s, h[i % RING], 8);
    for (size_t i = lo; i < hi; i++) {
        if (i + 2 * AHEAD < hi)
            h[(i + 2 * AHEAD) % RING] = hash_and_prefetch_slot(s, keys, i + 2 * AHEAD);
        if (i + AHEAD < hi) PREFETCH_CANDIDATE(s, h[(i + AHEAD) % RING], 8);
        const uint64_t k = ps_load_u64(keys + 8 * i);
        int64_t r = insert ? find_or_insert(s, k, h[i % RING]) : find(s, k, h[i % RING]);
        if (r < 0 && insert) return PS_NOMEM;
        s->ridx[i] = r < 0 ? NO_ROW : (uint32_t)r;
    }
    return PS_OK;
}

/* AdaGrad on the (distinct) rows ridx[lo, hi), rows prefetched AHEAD keys ahead. */
static void apply_range(ps_store *s, const uint8_t *grads, size_t lo, size_t hi, float *tmp) {
    const size_t span = s->stride < PREFETCH_MAX ? s->stride : PREFETCH_MAX;
    for (size_t i = lo; i < hi; i++) {
        if (i + AHEAD < hi) { /* the row's lines: w, acc (and step) */
            uint8_t *pr = row_at(s, s->ridx[i + AHEAD]);
            for (size_t o = 8; o < span; o += 64) __builtin_prefetch(pr + o, 1);
            __builtin_prefetch(pr + span - 1, 1);
        }
        apply_row(s, row_at(s, s->ridx[i]), grad_row(s, grads, i, tmp));
    }
}

static void pull_range(ps_store *s, const uint8_t *keys, size_t lo, size_t hi, uint8_t *out,
                       float *tmp) {
    const size_t dim = s->spec.dim, row_bytes = dim * sizeof(float);
    const size_t end = 8 + row_bytes < PREFETCH_MAX ? 8 + row_bytes : PREFETCH_MAX; /* key, w */
    uint64_t h[RING];
    for (size_t i = lo; i < hi && i < lo + 2 * AHEAD; i++)
        h[i % RING] = hash_and_prefetch_slot(s, keys, i);
    for (size_t i = lo; i < hi && i < lo + AHEAD; i++) PREFETCH_CANDIDATE(s, h[i % RING], end);
    for (size_t i = lo; i < hi; i++) {
        if (i + 2 * AHEAD < hi)
            h[(i + 2 * AHEAD) % RING] = hash_and_prefetch_slot(s, keys, i + 2 * AHEAD);
        if (i + AHEAD < hi) PREFETCH_CANDIDATE(s, h[(i + AHEAD) % RING], end);
        const uint64_t k = ps_load_u64(keys + 8 * i);
        const int64_t r = find(s, k, h[i % RING]);
        uint8_t *dst = out + i * row_bytes;
        if (r >= 0 && !(s->expires && expired(s, row_at(s, (uint32_t)r)))) {
            memcpy(dst, row_w(row_at(s, (uint32_t)r)), row_bytes);
        } else {
            ps_init_row(&s->spec.init, s->seed, s->spec.id, k, tmp, dim);
            memcpy(dst, tmp, row_bytes);
        }
    }
}

/* --- spreading one call over the pool: part p of P takes keys [n*p/P, n*(p+1)/P) ------------- */

typedef enum { JOB_FIND, JOB_APPLY, JOB_PULL } job_kind;

typedef struct {
    ps_store *s;
    job_kind kind;
    const uint8_t *keys, *grads;
    uint8_t *out;
    size_t n;
} store_job;

static void run_part(void *arg, unsigned part, unsigned parts) {
    store_job *j = arg;
    const size_t lo = j->n * part / parts, hi = j->n * (part + 1) / parts;
    float *tmp = j->s->gtmp + (size_t)part * j->s->spec.dim;
    switch (j->kind) {
    case JOB_FIND:
        resolve_range(j->s, j->keys, lo, hi, false);
        break;
    case JOB_APPLY:
        apply_range(j->s, j->grads, lo, hi, tmp);
        break;
    case JOB_PULL:
        pull_range(j->s, j->keys, lo, hi, j->out, tmp);
        break;
    }
}

static bool parallel(const ps_store *s, size_t n) { return s->parts > 1 && n >= PAR_MIN_KEYS; }

ps_status ps_store_set_pool(ps_store *s, ps_pool *pool, ps_error *err) {
    unsigned parts = pool ? ps_pool_size(pool) : 1;
    if (parts > s->parts) {
        float *p = realloc(s->gtmp, (size_t)parts * s->spec.dim * sizeof(float));
        if (p == NULL) return ps_error_set(err, PS_NOMEM, "table %s: out of memory", s->spec.name);
        s->gtmp = p;
    }
    s->pool = pool, s->parts = parts;
    return PS_OK;
}

/* Evicts the expired rows among keys (so they come back as new rows, or pending keys), then
 * sweeps on over SWEEP_MIN + 2n row numbers and pending slots: a push does bounded work, and
 * the sweep passes every row once per rows / (SWEEP_MIN + 2n) pushes. */
static void expire(ps_store *s, const uint8_t *keys, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t k = ps_load_u64(keys + 8 * i);
        int64_t r = find(s, k, slot_hash(k));
        if (r >= 0 && expired(s, row_at(s, (uint32_t)r))) evict_row(s, (uint32_t)r);
    }
    const size_t budget = SWEEP_MIN + 2 * n;
    for (size_t v = 0; v < budget && s->rows > 0; v++) {
        if (s->sweep_row >= s->rows) s->sweep_row = 0;
        const uint32_t r = (uint32_t)s->sweep_row++;
        if (is_live(s, r) && expired(s, row_at(s, r))) evict_row(s, r);
    }
    const uint64_t e = s->spec.mem.expire_after_steps;
    for (size_t v = 0; v < budget && e != 0 && s->pused > 0; v++) {
        if (s->sweep_pending >= s->pcap) s->sweep_pending = 0;
        const pending_entry *pe = &s->pend[s->sweep_pending];
        if (pe->count != 0 && s->step - pe->step >= e)
            pend_delete(s, s->sweep_pending); /* a later entry may have moved here: look again */
        else
            s->sweep_pending++;
    }
}

static ps_status reserve_filtered(ps_store *s, size_t n) {
    if (n <= s->fcap) return PS_OK;
    uint8_t *k = realloc(s->fkeys, n * 8);
    if (k != NULL) s->fkeys = k;
    uint8_t *g = k ? realloc(s->fgrads, n * s->spec.dim * sizeof(float)) : NULL;
    if (g == NULL) return PS_NOMEM;
    s->fgrads = g, s->fcap = n;
    return PS_OK;
}

/* Admission: keys with a row stay; others are counted, and the one reaching admit_after gets
 * its row now (initial values; this push's gradient is then applied). The rest are dropped with
 * their gradients. *keys, *grads, *n become the kept ones (the store's copies if any dropped). */
static ps_status admit(ps_store *s, const uint8_t **keys, const uint8_t **grads, size_t *n) {
    const size_t row_bytes = s->spec.dim * sizeof(float);
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++) {
        const uint64_t k = ps_load_u64(*keys + 8 * i);
        const uint64_t h = slot_hash(k);
        bool keep = find(s, k, h) >= 0;
        if (!keep) {
            if (pend_count(s, k, &keep) != PS_OK) return PS_NOMEM;
            if (keep && find_or_insert(s, k, h) < 0) return PS_NOMEM;
        }
        s->ridx[i] = keep;
        kept += keep;
    }
    if (kept == *n) return PS_OK;
    if (reserve_filtered(s, kept) != PS_OK) return PS_NOMEM;
    for (size_t i = 0, j = 0; i < *n; i++) {
        if (!s->ridx[i]) continue;
        memcpy(s->fkeys + 8 * j, *keys + 8 * i, 8);
        memcpy(s->fgrads + row_bytes * j, *grads + row_bytes * i, row_bytes);
        j++;
    }
    *keys = s->fkeys, *grads = s->fgrads, *n = kept;
    return PS_OK;
}

ps_status ps_store_push(ps_store *s, const uint8_t *keys, const uint8_t *grads, size_t n,
                        ps_error *err) {
    if (n > MAX_ROWS) return ps_error_set(err, PS_TOO_LARGE, "push of %zu keys", n);
    if (reserve_scratch(s, n) != PS_OK) goto nomem;
    if (s->expires) expire(s, keys, n);
    s->step++; /* this push's step: the stamp of the rows it touches */
    if (s->spec.mem.admit_after > 1) {
        if (admit(s, &keys, &grads, &n) != PS_OK) goto nomem;
        if (n == 0) return PS_OK;
    }

    /* 1. resolve every key to a row, creating rows. With a pool, the parts look up existing rows
     *    side by side, then this thread creates the missing ones. */
    store_job job = {.s = s, .keys = keys, .grads = grads, .n = n};
    if (parallel(s, n) && s->rows > 0) { /* an empty table has nothing to look up */
        job.kind = JOB_FIND;
        ps_pool_run(s->pool, run_part, &job);
        for (size_t i = 0; i < n; i++) {
            if (s->ridx[i] != NO_ROW) continue;
            const uint64_t k = ps_load_u64(keys + 8 * i);
            int64_t r = find_or_insert(s, k, slot_hash(k));
            if (r < 0) goto nomem;
            s->ridx[i] = (uint32_t)r;
        }
    } else if (resolve_range(s, keys, 0, n, true) != PS_OK) {
        goto nomem;
    }
    if (reserve_scratch(s, n) != PS_OK) goto nomem; /* rows may have grown the bitmap's need */

    /* 2. duplicates? one bit per row; cleared again below */
    bool dup = false;
    for (size_t i = 0; i < n; i++) {
        uint32_t r = s->ridx[i];
        uint64_t bit = 1ull << (r & 63);
        dup |= (s->seen[r >> 6] & bit) != 0;
        s->seen[r >> 6] |= bit;
    }
    for (size_t i = 0; i < n; i++) s->seen[s->ridx[i] >> 6] = 0;
    if (dup) {
        if (apply_with_duplicates(s, grads, n) != PS_OK) goto nomem;
        return PS_OK;
    }

    /* 3. apply: rows are distinct, so parts never share one */
    if (parallel(s, n)) {
        job.kind = JOB_APPLY;
        ps_pool_run(s->pool, run_part, &job);
    } else {
        apply_range(s, grads, 0, n, s->gtmp);
    }
    return PS_OK;
nomem:
    return ps_error_set(err, PS_NOMEM, "table %s: out of memory at %zu rows", s->spec.name,
                        s->rows);
}

void ps_store_pull(ps_store *s, const uint8_t *keys, size_t n, uint8_t *out) {
    if (parallel(s, n)) {
        store_job job = {.s = s, .kind = JOB_PULL, .keys = keys, .out = out, .n = n};
        ps_pool_run(s->pool, run_part, &job);
    } else {
        pull_range(s, keys, 0, n, out, s->gtmp);
    }
}

bool ps_store_get(const ps_store *s, uint64_t key, float *w, float *acc) {
    return ps_store_get_row(s, key, w, acc, NULL);
}

bool ps_store_get_row(const ps_store *s, uint64_t key, float *w, float *acc, uint32_t *step) {
    int64_t r = find(s, key, slot_hash(key));
    if (r < 0) return false;
    uint8_t *row = row_at(s, (uint32_t)r);
    if (s->expires && expired(s, row)) return false;
    if (w != NULL) memcpy(w, row_w(row), s->spec.dim * sizeof(float));
    if (acc != NULL) memcpy(acc, row_acc(s, row), s->state_len * sizeof(float));
    if (step != NULL) *step = s->has_step ? *row_step(s, row) : 0;
    return true;
}

ps_status ps_store_put(ps_store *s, uint64_t key, const float *w, const float *acc, uint32_t step,
                       ps_error *err) {
    const uint64_t h = slot_hash(key);
    int64_t r = find(s, key, h);
    if (r < 0) {
        /* Grow first: once the row exists it is set in full, never left with unset values. The
         * row skips its initial values (it is about to be overwritten). */
        if ((s->used + 1) * 4 > s->cap * 3 && grow_index(s) != PS_OK) goto nomem;
        if ((r = alloc_row(s, key)) < 0) goto nomem;
        size_t p = h & s->mask;
        while (s->slots[p] != 0) p = (p + 1) & s->mask;
        s->slots[p] = (h >> 32) << 32 | (uint64_t)(r + 1);
        s->used++;
    }
    uint8_t *row = row_at(s, (uint32_t)r);
    memcpy(row_w(row), w, s->spec.dim * sizeof(float));
    if (acc != NULL)
        memcpy(row_acc(s, row), acc, s->state_len * sizeof(float));
    else
        ps_adagrad_init_state(&s->spec.opt, row_acc(s, row), s->spec.dim);
    if (s->has_step) *row_step(s, row) = step;
    if (s->touch_off) *row_u32(row, s->touch_off) = s->step;
    if (s->tsec_off) *row_u32(row, s->tsec_off) = now_s(s);
    return PS_OK;
nomem:
    return ps_error_set(err, PS_NOMEM, "table %s: out of memory at %zu rows", s->spec.name,
                        s->rows);
}

uint32_t ps_store_stamps(const ps_store *s) {
    return (s->touch_off ? PS_STAMP_STEPS : 0) | (s->tsec_off ? PS_STAMP_SECONDS : 0);
}

ps_status ps_store_put_aged(ps_store *s, uint64_t key, const float *w, const float *acc,
                            uint32_t step, uint32_t age_steps, uint32_t age_s, ps_error *err) {
    ps_status st = ps_store_put(s, key, w, acc, step, err);
    if (st != PS_OK || (s->touch_off == 0 && s->tsec_off == 0)) return st;
    uint8_t *row = row_at(s, (uint32_t)find(s, key, slot_hash(key)));
    /* modulo 2^32, as expired() compares: the age comes back whatever the counters are now */
    if (s->touch_off) *row_u32(row, s->touch_off) = s->step - age_steps;
    if (s->tsec_off) *row_u32(row, s->tsec_off) = now_s(s) - age_s;
    return PS_OK;
}

ps_status ps_store_pending_snapshot(const ps_store *s, ps_pending_key **out, size_t *n_out,
                                    ps_error *err) {
    *out = NULL, *n_out = 0;
    if (s->pused == 0) return PS_OK;
    ps_pending_key *v = malloc(s->pused * sizeof(*v));
    if (v == NULL)
        return ps_error_set(err, PS_NOMEM, "table %s: out of memory copying %zu pending keys",
                            s->spec.name, s->pused);
    const uint64_t e = s->spec.mem.expire_after_steps;
    size_t n = 0;
    for (size_t i = 0; i < s->pcap; i++) {
        const pending_entry *pe = &s->pend[i];
        if (pe->count == 0 || (e != 0 && s->step - pe->step >= e)) continue; /* aged out */
        v[n++] = (ps_pending_key){.key = pe->key, .age_steps = s->step - pe->step,
                                  .count = pe->count};
    }
    if (n == 0) free(v), v = NULL;
    *out = v, *n_out = n;
    return PS_OK;
}

ps_status ps_store_pending_put(ps_store *s, const ps_pending_key *k, ps_error *err) {
    if (s->spec.mem.admit_after <= 1 || k->count == 0 || find(s, k->key, slot_hash(k->key)) >= 0)
        return PS_OK;
    if ((s->pused + 1) * 4 > s->pcap * 3 && pend_grow(s) != PS_OK)
        return ps_error_set(err, PS_NOMEM, "table %s: out of memory at %zu pending keys",
                            s->spec.name, s->pused);
    const size_t mask = s->pcap - 1;
    size_t p = slot_hash(k->key) & mask;
    while (s->pend[p].count != 0 && s->pend[p].key != k->key) p = (p + 1) & mask;
    if (s->pend[p].count == 0) s->pused++;
    s->pend[p] = (pending_entry){.key = k->key, .step = s->step - k->age_steps, .count = k->count};
    return PS_OK;
}

/* Row order is creation order, so the keys are gathered from the chunks and sorted. */
ps_status ps_store_sorted_keys(const ps_store *s, uint64_t **keys_out, size_t *n_out,
                               ps_error *err) {
    *keys_out = NULL, *n_out = 0;
    if (s->n_live == 0) return PS_OK;
    uint64_t *keys = malloc(s->n_live * sizeof(*keys));
    if (keys == NULL)
        return ps_error_set(err, PS_NOMEM, "table %s: out of memory sorting %zu keys",
                            s->spec.name, s->n_live);
    size_t n = 0;
    for (size_t r = 0; r < s->rows; r++) {
        uint8_t *row = row_at(s, (uint32_t)r);
        if (is_live(s, (uint32_t)r) && !(s->expires && expired(s, row))) memcpy(&keys[n++], row, 8);
    }
    qsort(keys, n, sizeof(*keys), cmp_u64);
    *keys_out = keys, *n_out = n;
    if (n == 0) free(keys), *keys_out = NULL;
    return PS_OK;
}

size_t ps_store_scan_from(const ps_store *s, size_t *next, size_t max, ps_store_row_cb cb,
                          void *ud) {
    size_t n = 0, r = *next;
    while (r < s->rows && n < max) {
        uint8_t *row = row_at(s, (uint32_t)r++);
        if (!is_live(s, (uint32_t)(r - 1)) || (s->expires && expired(s, row))) continue;
        n++;
        if (cb != NULL &&
            !cb(ud, row_key(row), row_w(row), row_acc(s, row), s->has_step ? *row_step(s, row) : 0,
                s->touch_off ? s->step - *row_u32(row, s->touch_off) : 0,
                s->tsec_off ? now_s(s) - *row_u32(row, s->tsec_off) : 0))
            break;
    }
    *next = r;
    return n;
}

size_t ps_store_scan(const ps_store *s, ps_store_row_cb cb, void *ud) {
    if (cb == NULL && !s->expires) return s->n_live;
    size_t next = 0;
    return ps_store_scan_from(s, &next, SIZE_MAX, cb, ud);
}

const ps_table_spec *ps_store_spec(const ps_store *s) { return &s->spec; }
size_t ps_store_state_len(const ps_store *s) { return s->state_len; }
size_t ps_store_rows(const ps_store *s) { return s->n_live; }
size_t ps_store_row_bytes(const ps_store *s) { return s->stride; }

size_t ps_store_bytes(const ps_store *s) {
    const size_t chunk_rows = s->n_chunks ? (s->n_chunks - 1) * CHUNK_ROWS + s->chunk0_rows : 0;
    return sizeof(*s) + s->cap * sizeof(*s->slots) + chunk_rows * s->stride +
           s->chunks_cap * sizeof(*s->chunks) + s->n_chunks * (CHUNK_ROWS / 8) +
           s->ridx_cap * sizeof(*s->ridx) + s->seen_words * sizeof(*s->seen) +
           (1 + s->parts) * s->spec.dim * sizeof(float) + s->pcap * sizeof(*s->pend) +
           s->fcap * (8 + s->spec.dim * sizeof(float));
}

void ps_store_get_stats(const ps_store *s, ps_store_stats *out) {
    *out = (ps_store_stats){.rows = s->n_live, .bytes = ps_store_bytes(s), .row_bytes = s->stride,
                            .admitted = s->admitted, .pending = s->pused,
                            .evicted = s->evicted};
}

void ps_store_set_clock(ps_store *s, const uint64_t *now_ms) { s->clock_ms = now_ms; }

/* Doublings of a power-of-two table of cap slots until used + add fit at load <= 3/4. */
static size_t grown_cap(size_t cap, size_t used, size_t add) {
    size_t c = cap ? cap : 64;
    while ((used + add) * 4 > c * 3) c *= 2;
    return c;
}

size_t ps_store_push_growth(const ps_store *s, const uint8_t *keys, size_t n) {
    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t k = ps_load_u64(keys + 8 * i);
        missing += find(s, k, slot_hash(k)) < 0;
    }
    size_t grow = 0;
    if (n > s->ridx_cap) grow += (n - s->ridx_cap) * sizeof(*s->ridx);
    if (s->spec.mem.admit_after > 1) {
        if (n > s->fcap) grow += (n - s->fcap) * (8 + s->spec.dim * sizeof(float));
        size_t pc = grown_cap(s->pcap, s->pused, missing);
        if (pc > s->pcap) grow += (pc - s->pcap) * sizeof(*s->pend);
        /* a push admits at most the keys already pending */
        if (missing > s->pused) missing = s->pused;
    }
    if (missing == 0) return grow;
    /* free places first, then new row numbers (the seen bitmap follows them), then chunks */
    const size_t hwm = s->rows + (missing > s->n_free ? missing - s->n_free : 0);
    const size_t words = (hwm + 63) / 64;
    if (words > s->seen_words) grow += (2 * words - s->seen_words) * sizeof(*s->seen);
    size_t c0 = s->chunk0_rows ? s->chunk0_rows : FIRST_CHUNK_ROWS; /* chunk 0 doubles first */
    while (c0 < hwm && c0 < CHUNK_ROWS) c0 *= 2;
    grow += (c0 - s->chunk0_rows) * s->stride;
    const size_t chunks = (hwm + CHUNK_ROWS - 1) / CHUNK_ROWS;
    if (chunks > s->n_chunks) {
        const size_t full = chunks - (s->n_chunks ? s->n_chunks : 1); /* past chunk 0 */
        grow += full * CHUNK_ROWS * s->stride + (chunks - s->n_chunks) * (CHUNK_ROWS / 8);
        size_t cc = s->chunks_cap ? s->chunks_cap : 8;
        while (cc < chunks) cc *= 2;
        grow += (cc - s->chunks_cap) * sizeof(*s->chunks);
    }
    size_t ic = s->cap;
    while ((s->used + missing) * 4 > ic * 3) ic *= 2;
    return grow + (ic - s->cap) * sizeof(*s->slots);
}

/* The row (live) with the oldest touch stamp among LRU_SAMPLES random row numbers, or NO_ROW
 * when none of them is live. */
static uint32_t lru_candidate(ps_store *s) {
    uint32_t best = NO_ROW, best_age = 0;
    for (int i = 0; i < LRU_SAMPLES; i++) {
        s->rng ^= s->rng << 13, s->rng ^= s->rng >> 7, s->rng ^= s->rng << 17; /* xorshift64 */
        const uint32_t r = (uint32_t)(s->rng % s->rows);
        if (!is_live(s, r)) continue;
        const uint32_t age = s->step - *row_u32(row_at(s, r), s->touch_off);
        if (best == NO_ROW || age > best_age) best = r, best_age = age;
    }
    return best;
}

size_t ps_store_evict_lru(ps_store *s, size_t n) {
    if (!s->touch_off) return 0;
    size_t done = 0;
    while (done < n && s->n_live > 0) {
        uint32_t r = lru_candidate(s);
        if (r == NO_ROW) { /* mostly free rows sampled: take the next live one */
            for (r = (uint32_t)(s->rng % s->rows); !is_live(s, r);) r = (r + 1) % (uint32_t)s->rows;
        }
        evict_row(s, r);
        done++;
    }
    return done;
}
