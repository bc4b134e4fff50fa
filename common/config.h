/* config.h - the job file: one JSON file that every server and worker of a job reads.
 * Every key has a type, a range and a default (config.c, one table per section, mirrored in the
 * README); unknown keys are errors. Errors name the file and the dotted key. */
#ifndef PS_CONFIG_H
#define PS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ps_status.h"
#include "table_spec.h"

#define PS_MAX_SERVERS 256
#define PS_MAX_LAYERS 16
#define PS_ADDR_MAX 272 /* "host:port" */
#define PS_PATH_MAX 1024
#define PS_BUSY_POLL_AUTO_US 500 /* what busy_poll_us: -1 (auto) becomes when it is on */

typedef struct {
    char format[16]; /* "csv", "libsvm", "random", "criteo" or "idx" */
    char path[PS_PATH_MAX];     /* idx: the images file */
    char labels[PS_PATH_MAX];   /* idx: the labels file */
    char integers[8];      /* criteo: "bucket" (default) or "dense" integer columns */
    int label_column;      /* csv: column index; negative counts from the end */
    char label_name[64];   /* csv: header name of the label column (wins over label_column) */
    bool one_based;        /* libsvm: ids start at 1 */
    bool skip_bad_lines;   /* count and skip malformed lines instead of stopping */
    uint64_t rows;         /* random: number of rows */
    uint32_t cols;         /* random: number of columns */
    uint64_t seed;         /* random: data seed (default: the job seed) */
} ps_data_config;

typedef struct {
    uint32_t input_dim;    /* dense input width; 0 with a sparse input */
    bool sparse;           /* input is sparse ids (libsvm) */
    uint64_t num_ids;      /* sparse: the id space, for the first kernel's fan-in (0 = unknown) */
    size_t num_layers;
    uint32_t units[PS_MAX_LAYERS];
    char activation[PS_MAX_LAYERS][16];
    char loss[40];
    uint32_t kernel_table[PS_MAX_LAYERS], bias_table[PS_MAX_LAYERS]; /* ids in tables[] */
} ps_model_config;

typedef struct {
    uint32_t epochs;
    uint32_t batch_size;
    bool shuffle;
    uint64_t seed;
    size_t shuffle_buffer;
    int verbose;              /* 0 silent, 1 progress bar, 2 one line per epoch */
    char metrics_file[PS_PATH_MAX];
    char state_dir[PS_PATH_MAX]; /* where each worker keeps its position ("": none; position.h) */
    bool overlap;             /* prefetch the next batch's rows while computing */
    uint32_t threads;         /* a worker's threads: >= 2 adds a batch-prep thread, BLAS gets
                                 the rest; 0 auto (ps-launch resolves it, see launch.c) */
    char init_from[PS_PATH_MAX]; /* saved-weights directory the servers start from ("": none) */
    char export_to[PS_PATH_MAX]; /* saved-weights directory written when the job ends */
} ps_fit_config;

/* cluster.consistency: when a worker's pushes reach the rows other workers read. */
typedef enum {
    PS_ASYNC = 0, /* each push applied on arrival (Downpour/Hogwild) */
    PS_SYNC,      /* bulk synchronous: one combined AdaGrad step per global step */
    PS_SSP,       /* stale synchronous: a worker at clock c reads once all reached c - staleness */
} ps_consistency;

/* cluster.tls: when on, every connection of the job is TLS 1.3 (common/tls.h). Each process needs
 * only its role's files: a server cert and key, a worker (or tool) ca. */
typedef struct {
    bool on;
    char cert[PS_PATH_MAX]; /* servers: PEM certificate chain, leaf first */
    char key[PS_PATH_MAX];  /* servers: its PEM private key */
    char ca[PS_PATH_MAX];   /* clients: PEM bundle of the CAs trusted to sign servers' certs */
} ps_tls_config;

typedef struct {
    char file[PS_PATH_MAX]; /* where it came from, for messages */
    char job_id[64];
    uint64_t seed;

    /* cluster */
    uint32_t num_servers;
    bool servers_auto;                         /* "servers": N; the launcher assigns ports */
    char servers[PS_MAX_SERVERS][PS_ADDR_MAX]; /* "host:port" of shard i */
    uint32_t num_workers;
    uint32_t connect_timeout_ms;  /* a worker gives up reaching a server after this long */
    uint32_t request_timeout_ms;  /* every request's deadline */
    /* A client polls this long for a reply before it sleeps (waking a sleeping vCPU costs ~100 us
     * on a VM). -1, the default: auto, which ps-launch resolves to PS_BUSY_POLL_AUTO_US or 0 by
     * how its processes fit the machine's CPUs (launch.c); a process started otherwise reads 0. */
    int32_t busy_poll_us;
    bool shared_memory; /* a worker on a server's host moves its bulk through shared memory
                           (shm.h); false: everything over TCP. Default true. */
    char token[128];
    ps_consistency consistency;
    uint32_t staleness;          /* ssp: steps a worker may run ahead of the slowest */
    uint32_t barrier_timeout_ms; /* sync/ssp: a worker that stalls a barrier this long is dropped */
    uint32_t recover_timeout_ms; /* a worker whose server went away or went quiet reconnects and
                                    retries its step for this long (0: it fails at once) */
    uint32_t job_deadline_s;     /* ps-server: workers not finished this long after start fail
                                    the job (0: no deadline) */
    ps_tls_config tls;

    /* limits and server */
    size_t max_frame_bytes;
    size_t max_write_queue_bytes;
    size_t max_server_write_queue_bytes; /* all peers together */
    size_t max_keys_per_request;
    uint32_t max_connections;
    uint32_t max_connections_per_address;
    uint32_t hello_timeout_ms; /* a connection that has not said Hello by then is closed */
    uint32_t idle_timeout_ms;  /* a peer that sends nothing this long is closed; 0: never */
    uint32_t server_threads;
    int32_t server_busy_poll_us; /* the server polls this long after a read; -1 auto, as above */
    uint64_t server_max_memory_bytes; /* all tables of one server; 0: no limit (store.h) */
    char checkpoint_dir[PS_PATH_MAX]; /* server.checkpoint_dir: "" none (server/checkpoint.h) */
    uint32_t checkpoint_every_s;      /* server.checkpoint_every_s: 0 only on SIGTERM/SIGUSR1 */
    uint32_t checkpoint_every_steps;  /* server.checkpoint_every_steps: 0 none (server.c: a step) */

    ps_adagrad_config optimizer; /* the job's default; tables may override */
    size_t num_tables;
    ps_table_spec tables[PS_MAX_TABLES];

    bool has_model;
    ps_model_config model;
    ps_fit_config fit;
    bool has_train, has_validation;
    ps_data_config train, validation;
    double validation_split; /* data.validation_split: the last fraction of train held out */
    size_t data_cache_bytes; /* data.cache_bytes: parsed text kept in memory up to this; 0: off */
    char data_cache_dir[PS_PATH_MAX]; /* data.cache_dir: cache files here ("": beside the data) */
} ps_job_config;

/* Reads and validates a job file, applying `--set KEY=VALUE` overrides (dotted paths, array
 * indexes as a.b[0].c; VALUE is JSON, or a plain string when it is not valid JSON) first.
 * On error: PS_CONFIG (or PS_IO) with "FILE: key: what is wrong". cfg is caller-owned. */
ps_status ps_config_load(const char *path, const char *const *sets, size_t n_sets,
                         ps_job_config *cfg, ps_error *err);

/* Same, from a JSON string; `name` stands for the file in messages. */
ps_status ps_config_parse(const char *json, const char *name, const char *const *sets,
                          size_t n_sets, ps_job_config *cfg, ps_error *err);

/* With cluster.tls: the files a server (cert, key) or a client (ca) needs are named and readable;
 * else PS_CONFIG with "FILE: cluster.tls.KEY: what is wrong". PS_OK without cluster.tls. */
ps_status ps_config_tls_files(const ps_job_config *cfg, bool server, ps_error *err);

/* Index of the table called name, or -1. */
int ps_config_table(const ps_job_config *cfg, const char *name);

/* Splits "host:port" into host (brackets stripped for [v6]) and port. */
ps_status ps_parse_hostport(const char *s, char *host, size_t host_len, uint16_t *port,
                            ps_error *err);

#endif
