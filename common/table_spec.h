/* table_spec.h - what a parameter table is: its width, initializer and optimizer settings.
 * Plain data shared by the config reader, the wire (HelloReply) and the server's store. */
#ifndef PS_TABLE_SPEC_H
#define PS_TABLE_SPEC_H

#include <stdbool.h>
#include <stdint.h>

#define PS_TABLE_NAME_MAX 64
#define PS_MAX_TABLES 64

typedef enum {
    PS_INIT_ZEROS = 0,
    PS_INIT_CONSTANT,       /* every coordinate = value */
    PS_INIT_UNIFORM,        /* U(a, b) */
    PS_INIT_NORMAL,         /* N(0, stddev^2) */
    PS_INIT_GLOROT_UNIFORM, /* U(-l, l), l = sqrt(6 / (fan_in + fan_out)), as Keras */
} ps_init_kind;

typedef struct {
    ps_init_kind kind;
    double a, b;    /* uniform bounds; a = value for constant */
    double stddev;  /* normal */
    uint32_t fan_in, fan_out; /* glorot_uniform */
} ps_init_spec;

typedef enum {
    PS_ADAGRAD_PYTORCH = 0, /* G += g^2; w -= lr*g/(sqrt(G)+eps); G0 = 0, eps = 1e-10 */
    PS_ADAGRAD_KERAS,       /* G += g^2; w -= lr*g/sqrt(G+eps);   G0 = 0.1, eps = 1e-7 */
} ps_adagrad_form;

typedef struct {
    ps_adagrad_form form;
    double learning_rate;  /* double, as Python passes it; rounded to float where torch does */
    double epsilon;
    double initial_accumulator_value;
    double lr_decay;       /* PyTorch: clr = lr / (1 + (step - 1) * lr_decay), step per row */
    double weight_decay;   /* PyTorch: g += weight_decay * w before the accumulator */
    bool rowwise;          /* one accumulator per row: G += mean(g^2) (FBGEMM row-wise) */
} ps_adagrad_config;

/* tables[].eviction: what a push that would pass server.max_memory_bytes does to this table. */
typedef enum {
    PS_EVICT_NONE = 0, /* refuse the push with an Error */
    PS_EVICT_LRU,      /* evict the least recently pushed rows first (sampled, store.h) */
} ps_eviction;

/* Server-side memory control of one table (store.h has the exact rules). Each shard applies it
 * alone, so workers need not agree on it: it is not part of the HelloReply's comparison. */
typedef struct {
    uint32_t admit_after;          /* a row is created on its key's Nth push; 0 or 1: first */
    uint64_t expire_after_steps;   /* evict rows not pushed for this many table steps; 0: off */
    uint64_t expire_after_seconds; /* ... or for this many seconds; 0: off */
    ps_eviction eviction;
} ps_table_memory;

typedef struct {
    char name[PS_TABLE_NAME_MAX];
    uint32_t id;  /* index in the job's table list; part of the key hash */
    uint32_t dim; /* floats per row */
    ps_init_spec init;
    ps_adagrad_config opt;
    ps_table_memory mem;
} ps_table_spec;

/* Floats of AdaGrad state per row: dim, or 1 when rowwise. */
static inline uint32_t ps_table_state_len(const ps_table_spec *t) {
    return t->opt.rowwise ? 1 : t->dim;
}

#endif
