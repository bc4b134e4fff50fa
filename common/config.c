/* config.c - job file reader. Each section is read by one function that names every key it
 * accepts with its type, range and default; anything else is an error naming the key. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

typedef struct {
    const char *file;
    ps_error *err;
    const char *const *sets; /* the --set KEY=VALUE overrides applied to the file */
    size_t n_sets;
} ctx;

#define FAIL(c, path, ...) cfg_fail(c, path, __VA_ARGS__)

static ps_status cfg_fail(ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ps_status cfg_fail(ctx *c, const char *path, const char *fmt, ...) {
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    /* a value given on the command line is blamed there, not on the file (the last --set of
     * a key is the one that holds) */
    const size_t plen = strlen(path);
    for (size_t i = c->n_sets; i-- > 0;)
        if (strncmp(c->sets[i], path, plen) == 0 && c->sets[i][plen] == '=')
            return ps_error_set(c->err, PS_CONFIG, "%s: %s: %s (from --set %s)", c->file, path,
                                what, c->sets[i]);
    return ps_error_set(c->err, PS_CONFIG, "%s: %s: %s", c->file, path, what);
}

/* it as JSON, cut to fit out: what a type error quotes. */
static const char *shown(const cJSON *it, char *out, size_t n) {
    char *js = cJSON_PrintUnformatted(it);
    if (js == NULL) return "?";
    if (strlen(js) < n) snprintf(out, n, "%s", js);
    else snprintf(out, n, "%.*s...", (int)(n - 4), js);
    cJSON_free(js);
    return out;
}

static void join(char *out, size_t n, const char *parent, const char *key) {
    if (parent[0] == '\0')
        snprintf(out, n, "%s", key);
    else
        snprintf(out, n, "%s.%s", parent, key);
}

/* Every key of obj must be in allowed (NULL-terminated). */
static ps_status check_keys(ctx *c, const cJSON *obj, const char *path, const char *const *allowed) {
    char p[256];
    if (!cJSON_IsObject(obj)) return FAIL(c, path[0] ? path : "(top level)", "must be an object");
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        bool ok = false;
        for (const char *const *a = allowed; *a != NULL && !ok; a++) ok = strcmp(*a, it->string) == 0;
        if (!ok) {
            char list[256] = "";
            for (const char *const *a = allowed; *a != NULL; a++) {
                strncat(list, *a, sizeof(list) - strlen(list) - 1);
                if (a[1] != NULL) strncat(list, ", ", sizeof(list) - strlen(list) - 1);
            }
            join(p, sizeof(p), path, it->string);
            return FAIL(c, p, "unknown key (known here: %s)", list);
        }
    }
    return PS_OK;
}

static const cJSON *item(const cJSON *obj, const char *key) {
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static ps_status get_num(ctx *c, const cJSON *obj, const char *path, const char *key, double min,
                         double max, double dflt, double *out) {
    char p[256];
    const cJSON *it = item(obj, key);
    if (it == NULL) {
        *out = dflt;
        return PS_OK;
    }
    join(p, sizeof(p), path, key);
    char v[48];
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return FAIL(c, p, "must be a number, not %s", shown(it, v, sizeof(v)));
    if (it->valuedouble < min || it->valuedouble > max)
        return FAIL(c, p, "%g is out of range [%g, %g]", it->valuedouble, min, max);
    *out = it->valuedouble;
    return PS_OK;
}

static ps_status get_u64(ctx *c, const cJSON *obj, const char *path, const char *key, double min,
                         double max, uint64_t dflt, uint64_t *out) {
    char p[256];
    const cJSON *it = item(obj, key);
    if (it == NULL) {
        *out = dflt;
        return PS_OK;
    }
    join(p, sizeof(p), path, key);
    char v[48];
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
        return FAIL(c, p, "must be an integer, not %s", shown(it, v, sizeof(v)));
    if (it->valuedouble < min || it->valuedouble > max)
        return FAIL(c, p, "%.0f is out of range [%.0f, %.0f]", it->valuedouble, min, max);
    *out = (uint64_t)it->valuedouble;
    return PS_OK;
}

static ps_status get_u32(ctx *c, const cJSON *obj, const char *path, const char *key, double min,
                         double max, uint32_t dflt, uint32_t *out) {
    uint64_t v;
    ps_status st = get_u64(c, obj, path, key, min, max, dflt, &v);
    if (st == PS_OK) *out = (uint32_t)v;
    return st;
}

static ps_status get_size(ctx *c, const cJSON *obj, const char *path, const char *key, double min,
                          double max, size_t dflt, size_t *out) {
    uint64_t v;
    ps_status st = get_u64(c, obj, path, key, min, max, dflt, &v);
    if (st == PS_OK) *out = (size_t)v;
    return st;
}

static ps_status get_bool(ctx *c, const cJSON *obj, const char *path, const char *key, bool dflt,
                          bool *out) {
    char p[256];
    const cJSON *it = item(obj, key);
    if (it == NULL) {
        *out = dflt;
        return PS_OK;
    }
    join(p, sizeof(p), path, key);
    char v[48];
    if (!cJSON_IsBool(it))
        return FAIL(c, p, "must be true or false, not %s", shown(it, v, sizeof(v)));
    *out = cJSON_IsTrue(it);
    return PS_OK;
}

static ps_status get_str(ctx *c, const cJSON *obj, const char *path, const char *key,
                         const char *dflt, char *out, size_t cap) {
    char p[256];
    const cJSON *it = item(obj, key);
    if (it == NULL) {
        snprintf(out, cap, "%s", dflt);
        return PS_OK;
    }
    join(p, sizeof(p), path, key);
    char v[48];
    if (!cJSON_IsString(it) || it->valuestring == NULL)
        return FAIL(c, p, "must be a string, not %s", shown(it, v, sizeof(v)));
    if (strlen(it->valuestring) >= cap)
        return FAIL(c, p, "longer than %zu characters", cap - 1);
    snprintf(out, cap, "%s", it->valuestring);
    return PS_OK;
}

/* A string that must be one of choices; returns its index in *idx. */
static ps_status get_enum(ctx *c, const cJSON *obj, const char *path, const char *key,
                          const char *const *choices, int dflt, int *idx) {
    char buf[64], p[256], list[256] = "";
    if (item(obj, key) == NULL) {
        *idx = dflt;
        return PS_OK;
    }
    ps_status st = get_str(c, obj, path, key, "", buf, sizeof(buf));
    if (st != PS_OK) return st;
    for (int i = 0; choices[i] != NULL; i++) {
        if (strcmp(buf, choices[i]) == 0) {
            *idx = i;
            return PS_OK;
        }
        strncat(list, choices[i], sizeof(list) - strlen(list) - 1);
        if (choices[i + 1] != NULL) strncat(list, ", ", sizeof(list) - strlen(list) - 1);
    }
    join(p, sizeof(p), path, key);
    return FAIL(c, p, "\"%s\" is not one of: %s", buf, list);
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        ps_status st_ = (x);                                                                       \
        if (st_ != PS_OK) return st_;                                                              \
    } while (0)

/* --- sections ------------------------------------------------------------------------------ */

ps_status ps_parse_hostport(const char *s, char *host, size_t host_len, uint16_t *port,
                            ps_error *err) {
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return ps_error_set(err, PS_CONFIG, "\"%s\" is not HOST:PORT", s);
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') h++, hl -= 2;
    else if (memchr(h, ':', hl) != NULL) /* "::1:80": which colon ends the host? */
        return ps_error_set(err, PS_CONFIG, "\"%s\": an IPv6 host needs brackets ([::1]:7070)", s);
    if (hl == 0 || hl >= host_len) return ps_error_set(err, PS_CONFIG, "\"%s\": bad host", s);
    char *end;
    errno = 0;
    unsigned long v = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || v > 65535)
        return ps_error_set(err, PS_CONFIG, "\"%s\": port must be 0..65535", s);
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)v;
    return PS_OK;
}

/* path.busy_poll_us: microseconds 0..1000000, or -1 (the default): auto, see ps_busy_poll_auto. */
static ps_status get_busy_poll(ctx *c, const cJSON *o, const char *path, int32_t *out) {
    double v = -1;
    TRY(get_num(c, o, path, "busy_poll_us", -1, 1e6, -1, &v));
    if (v != (double)(int32_t)v) {
        char p[256];
        join(p, sizeof(p), path, "busy_poll_us");
        return FAIL(c, p, "%g is not an integer", v);
    }
    *out = (int32_t)v;
    return PS_OK;
}

/* cluster.tls: {"cert", "key"} for servers, {"ca"} for clients; one job file usually has all
 * three. The files are read by the process that needs them (ps_config_tls_files). */
static ps_status read_tls(ctx *c, const cJSON *o, ps_tls_config *t) {
    static const char *const keys[] = {"cert", "key", "ca", NULL};
    TRY(check_keys(c, o, "cluster.tls", keys));
    TRY(get_str(c, o, "cluster.tls", "cert", "", t->cert, sizeof(t->cert)));
    TRY(get_str(c, o, "cluster.tls", "key", "", t->key, sizeof(t->key)));
    TRY(get_str(c, o, "cluster.tls", "ca", "", t->ca, sizeof(t->ca)));
    if (t->cert[0] != '\0' && t->key[0] == '\0')
        return FAIL(c, "cluster.tls.key", "missing: cluster.tls.cert needs its private key");
    if (t->key[0] != '\0' && t->cert[0] == '\0')
        return FAIL(c, "cluster.tls.cert", "missing: cluster.tls.key needs its certificate");
    if (t->cert[0] == '\0' && t->ca[0] == '\0')
        return FAIL(c, "cluster.tls", "needs \"cert\" and \"key\" (servers) or \"ca\" (workers)");
    t->on = true;
    return PS_OK;
}

static ps_status read_cluster(ctx *c, const cJSON *o, ps_job_config *cfg) {
    static const char *const keys[] = {"servers",           "workers", "connect_timeout_ms",
                                       "request_timeout_ms", "token",   "busy_poll_us",
                                       "consistency", "staleness", "barrier_timeout_ms",
                                       "token_file", "tls", "job_deadline_s", "recover_timeout_ms",
                                       "shared_memory", NULL};
    static const char *const modes[] = {"async", "sync", "ssp", NULL};
    if (o != NULL) TRY(check_keys(c, o, "cluster", keys));
    const cJSON *srv = item(o, "servers");
    if (srv == NULL || cJSON_IsNumber(srv)) {
        uint32_t n = 1;
        TRY(get_u32(c, o, "cluster", "servers", 1, PS_MAX_SERVERS, 1, &n));
        cfg->num_servers = n, cfg->servers_auto = true;
        for (uint32_t i = 0; i < n; i++) snprintf(cfg->servers[i], PS_ADDR_MAX, "127.0.0.1:0");
    } else if (cJSON_IsArray(srv)) {
        int n = cJSON_GetArraySize(srv);
        if (n < 1 || n > PS_MAX_SERVERS)
            return FAIL(c, "cluster.servers", "needs 1..%d addresses, got %d", PS_MAX_SERVERS, n);
        cfg->num_servers = (uint32_t)n;
        for (int i = 0; i < n; i++) {
            const cJSON *a = cJSON_GetArrayItem(srv, i);
            char p[64], host[256];
            uint16_t port;
            ps_error e;
            snprintf(p, sizeof(p), "cluster.servers[%d]", i);
            if (!cJSON_IsString(a)) return FAIL(c, p, "must be a \"host:port\" string");
            if (ps_parse_hostport(a->valuestring, host, sizeof(host), &port, &e) != PS_OK)
                return FAIL(c, p, "%s", e.msg);
            snprintf(cfg->servers[i], PS_ADDR_MAX, "%s", a->valuestring);
        }
    } else {
        return FAIL(c, "cluster.servers", "must be a count or a list of \"host:port\"");
    }
    TRY(get_u32(c, o, "cluster", "workers", 1, 4096, 1, &cfg->num_workers));
    TRY(get_u32(c, o, "cluster", "connect_timeout_ms", 1, 3600e3, 30000, &cfg->connect_timeout_ms));
    TRY(get_u32(c, o, "cluster", "request_timeout_ms", 1, 3600e3, 60000, &cfg->request_timeout_ms));
    TRY(get_str(c, o, "cluster", "token", "", cfg->token, sizeof(cfg->token)));
    char token_file[PS_PATH_MAX];
    TRY(get_str(c, o, "cluster", "token_file", "", token_file, sizeof(token_file)));
    if (token_file[0] != '\0') {
        if (cfg->token[0] != '\0')
            return FAIL(c, "cluster.token_file", "and cluster.token: give one of them");
        FILE *f = fopen(token_file, "r");
        if (f == NULL)
            return FAIL(c, "cluster.token_file", "cannot read %s: %s", token_file,
                        strerror(errno));
        char line[sizeof(cfg->token) + 2];
        bool ok = fgets(line, sizeof(line), f) != NULL;
        fclose(f);
        line[ok ? strcspn(line, "\r\n") : 0] = '\0';
        if (line[0] == '\0' || strlen(line) >= sizeof(cfg->token))
            return FAIL(c, "cluster.token_file", "%s: the first line must hold the token (1..%zu "
                        "bytes)", token_file, sizeof(cfg->token) - 1);
        snprintf(cfg->token, sizeof(cfg->token), "%s", line);
    }
    TRY(get_busy_poll(c, o, "cluster", &cfg->busy_poll_us));
    TRY(get_bool(c, o, "cluster", "shared_memory", true, &cfg->shared_memory));
    int mode;
    TRY(get_enum(c, o, "cluster", "consistency", modes, 0, &mode));
    cfg->consistency = (ps_consistency)mode;
    TRY(get_u32(c, o, "cluster", "staleness", 0, 1e6, 2, &cfg->staleness));
    if (item(o, "staleness") != NULL && cfg->consistency != PS_SSP)
        return FAIL(c, "cluster.staleness", "applies to \"consistency\": \"ssp\" only");
    TRY(get_u32(c, o, "cluster", "barrier_timeout_ms", 1, 3600e3, 30000,
                &cfg->barrier_timeout_ms));
    TRY(get_u32(c, o, "cluster", "recover_timeout_ms", 0, 3600e3, 60000,
                &cfg->recover_timeout_ms));
    if (cfg->consistency != PS_ASYNC && cfg->barrier_timeout_ms >= cfg->request_timeout_ms)
        return FAIL(c, "cluster.barrier_timeout_ms",
                    "%u must be below cluster.request_timeout_ms (%u): the servers drop a "
                    "stalled worker before the others give up waiting",
                    cfg->barrier_timeout_ms, cfg->request_timeout_ms);
    /* a server that ends with its job gives up on unfinished workers then (0: never) */
    TRY(get_u32(c, o, "cluster", "job_deadline_s", 0, 30 * 86400, 0, &cfg->job_deadline_s));
    if (item(o, "tls") != NULL) TRY(read_tls(c, item(o, "tls"), &cfg->tls));
    return PS_OK;
}

static ps_status read_limits(ctx *c, const cJSON *o, ps_job_config *cfg) {
    static const char *const keys[] = {"max_frame_bytes", "max_write_queue_bytes",
                                       "max_server_write_queue_bytes",
                                       "max_keys_per_request", "max_connections",
                                       "max_connections_per_address", "hello_timeout_ms",
                                       "idle_timeout_ms", NULL};
    if (o != NULL) TRY(check_keys(c, o, "limits", keys));
    TRY(get_size(c, o, "limits", "max_frame_bytes", 1024, 4294967295.0, 64u << 20,
                 &cfg->max_frame_bytes));
    TRY(get_size(c, o, "limits", "max_write_queue_bytes", 1024, 1e15, 256u << 20,
                 &cfg->max_write_queue_bytes));
    TRY(get_size(c, o, "limits", "max_server_write_queue_bytes", 1024, 1e15, 1024u << 20,
                 &cfg->max_server_write_queue_bytes));
    TRY(get_size(c, o, "limits", "max_keys_per_request", 1, 1e12, 16u << 20,
                 &cfg->max_keys_per_request));
    TRY(get_u32(c, o, "limits", "max_connections", 1, 1e6, 4096, &cfg->max_connections));
    TRY(get_u32(c, o, "limits", "max_connections_per_address", 1, 1e6, 256,
                &cfg->max_connections_per_address));
    TRY(get_u32(c, o, "limits", "hello_timeout_ms", 1, 3600e3, 5000, &cfg->hello_timeout_ms));
    TRY(get_u32(c, o, "limits", "idle_timeout_ms", 0, 864e5, 600000, &cfg->idle_timeout_ms));
    return PS_OK;
}

static ps_status read_server(ctx *c, const cJSON *o, ps_job_config *cfg) {
    static const char *const keys[] = {"threads", "busy_poll_us", "max_memory_bytes",
                                       "checkpoint_dir", "checkpoint_every_s",
                                       "checkpoint_every_steps", NULL};
    if (o != NULL) TRY(check_keys(c, o, "server", keys));
    TRY(get_u32(c, o, "server", "threads", 1, 64, 2, &cfg->server_threads));
    TRY(get_busy_poll(c, o, "server", &cfg->server_busy_poll_us));
    /* below 1 MiB a server could not hold even its empty tables' scratch for long */
    TRY(get_u64(c, o, "server", "max_memory_bytes", 0, 1e15, 0, &cfg->server_max_memory_bytes));
    if (cfg->server_max_memory_bytes != 0 && cfg->server_max_memory_bytes < (1u << 20))
        return FAIL(c, "server.max_memory_bytes", "%llu is below 1048576 (1 MiB); 0 means no "
                    "limit", (unsigned long long)cfg->server_max_memory_bytes);
    TRY(get_str(c, o, "server", "checkpoint_dir", "", cfg->checkpoint_dir,
                sizeof(cfg->checkpoint_dir)));
    TRY(get_u32(c, o, "server", "checkpoint_every_s", 0, 864e5, 0, &cfg->checkpoint_every_s));
    if (cfg->checkpoint_every_s != 0 && cfg->checkpoint_dir[0] == '\0')
        return FAIL(c, "server.checkpoint_every_s", "needs server.checkpoint_dir");
    TRY(get_u32(c, o, "server", "checkpoint_every_steps", 0, 1e9, 0,
                &cfg->checkpoint_every_steps));
    if (cfg->checkpoint_every_steps != 0 && cfg->checkpoint_dir[0] == '\0')
        return FAIL(c, "server.checkpoint_every_steps", "needs server.checkpoint_dir");
    return PS_OK;
}

/* An optimizer object; `base` gives the defaults (the job's optimizer for table overrides). */
static ps_status read_optimizer(ctx *c, const cJSON *o, const char *path,
                                const ps_adagrad_config *base, ps_adagrad_config *out) {
    static const char *const keys[] = {"name", "form", "learning_rate", "epsilon",
                                       "initial_accumulator_value", "lr_decay", "weight_decay",
                                       "rowwise", NULL};
    static const char *const names[] = {"adagrad", NULL};
    static const char *const forms[] = {"pytorch", "keras", NULL};
    if (o != NULL) TRY(check_keys(c, o, path, keys));
    int name, form;
    TRY(get_enum(c, o, path, "name", names, 0, &name));
    TRY(get_enum(c, o, path, "form", forms, base ? (int)base->form : 0, &form));
    out->form = (ps_adagrad_form)form;
    bool keras = out->form == PS_ADAGRAD_KERAS;
    /* Defaults follow the chosen form's library unless a base (the job's optimizer) is given. */
    bool same_form = base != NULL && base->form == out->form;
    double lr0 = same_form ? base->learning_rate : keras ? 0.001 : 0.01;
    double eps0 = same_form ? base->epsilon : keras ? 1e-7 : 1e-10;
    double g00 = same_form ? base->initial_accumulator_value : keras ? 0.1 : 0.0;
    TRY(get_num(c, o, path, "learning_rate", 0, 1e6, lr0, &out->learning_rate));
    TRY(get_num(c, o, path, "epsilon", 0, 1, eps0, &out->epsilon));
    TRY(get_num(c, o, path, "initial_accumulator_value", 0, 1e9, g00,
                &out->initial_accumulator_value));
    TRY(get_num(c, o, path, "lr_decay", 0, 1e6, same_form ? base->lr_decay : 0, &out->lr_decay));
    TRY(get_num(c, o, path, "weight_decay", 0, 1e6, same_form ? base->weight_decay : 0,
                &out->weight_decay));
    TRY(get_bool(c, o, path, "rowwise", base ? base->rowwise : false, &out->rowwise));
    if (keras && (out->lr_decay != 0 || out->weight_decay != 0)) {
        char p[256];
        join(p, sizeof(p), path, out->lr_decay != 0 ? "lr_decay" : "weight_decay");
        return FAIL(c, p, "is PyTorch's; not available with form \"keras\"");
    }
    if ((float)out->epsilon == 0.0f && (float)out->initial_accumulator_value == 0.0f) {
        char p[256];
        join(p, sizeof(p), path, "epsilon");
        return FAIL(c, p, "is 0 in float32 with initial_accumulator_value 0: a zero gradient on "
                    "a new row would divide 0 by 0 (NaN); use epsilon >= 1e-38 or a positive "
                    "initial_accumulator_value");
    }
    return PS_OK;
}

static ps_status read_init(ctx *c, const cJSON *o, const char *path, ps_init_spec *out) {
    static const char *const keys[] = {"type", "value", "minval", "maxval", "stddev",
                                       "fan_in", "fan_out", NULL};
    static const char *const kinds[] = {"zeros", "constant", "uniform", "normal",
                                        "glorot_uniform", NULL};
    if (o == NULL) return PS_OK; /* keep the caller's default */
    TRY(check_keys(c, o, path, keys));
    int kind;
    TRY(get_enum(c, o, path, "type", kinds, (int)out->kind, &kind));
    out->kind = (ps_init_kind)kind;
    switch (out->kind) {
    case PS_INIT_CONSTANT:
        TRY(get_num(c, o, path, "value", -1e30, 1e30, 0, &out->a));
        break;
    case PS_INIT_UNIFORM:
        TRY(get_num(c, o, path, "minval", -1e30, 1e30, -0.05, &out->a));
        TRY(get_num(c, o, path, "maxval", -1e30, 1e30, 0.05, &out->b));
        if (out->b < out->a) return FAIL(c, path, "maxval %g < minval %g", out->b, out->a);
        break;
    case PS_INIT_NORMAL:
        TRY(get_num(c, o, path, "stddev", 0, 1e30, 0.05, &out->stddev));
        break;
    case PS_INIT_GLOROT_UNIFORM:
        TRY(get_u32(c, o, path, "fan_in", 1, 4294967295.0, out->fan_in ? out->fan_in : 1,
                    &out->fan_in));
        TRY(get_u32(c, o, path, "fan_out", 1, 4294967295.0, out->fan_out ? out->fan_out : 1,
                    &out->fan_out));
        break;
    default:
        break;
    }
    return PS_OK;
}

static ps_status add_table(ctx *c, ps_job_config *cfg, const char *path, const char *name,
                           uint32_t dim, const ps_init_spec *init, uint32_t *id) {
    if (cfg->num_tables == PS_MAX_TABLES)
        return FAIL(c, path, "more than %d tables", PS_MAX_TABLES);
    if (ps_config_table(cfg, name) >= 0) return FAIL(c, path, "table \"%s\" defined twice", name);
    ps_table_spec *t = &cfg->tables[cfg->num_tables];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->id = (uint32_t)cfg->num_tables;
    t->dim = dim;
    t->init = *init;
    t->opt = cfg->optimizer;
    *id = t->id;
    cfg->num_tables++;
    return PS_OK;
}

/* tables[i]'s memory control: admission, expiry, eviction (server/store.h). */
static ps_status read_table_memory(ctx *c, const cJSON *o, const char *path, ps_table_memory *m) {
    static const char *const policies[] = {"none", "lru", NULL};
    int ev;
    TRY(get_u32(c, o, path, "admit_after", 0, 1e6, 0, &m->admit_after));
    /* rows stamp their last push in 32 bits that wrap: ages up to 2^31 - 1 compare right */
    TRY(get_u64(c, o, path, "expire_after_steps", 0, 2147483647.0, 0, &m->expire_after_steps));
    TRY(get_u64(c, o, path, "expire_after_seconds", 0, 2147483647.0, 0,
                &m->expire_after_seconds));
    TRY(get_enum(c, o, path, "eviction", policies, 0, &ev));
    m->eviction = (ps_eviction)ev;
    return PS_OK;
}

static ps_status read_tables(ctx *c, const cJSON *arr, ps_job_config *cfg) {
    static const char *const keys[] = {"name", "dim", "init", "optimizer", "admit_after",
                                       "expire_after_steps", "expire_after_seconds",
                                       "eviction", NULL};
    if (arr == NULL) return PS_OK;
    if (!cJSON_IsArray(arr)) return FAIL(c, "tables", "must be a list of tables");
    int i = 0;
    for (const cJSON *o = arr->child; o != NULL; o = o->next, i++) {
        char path[64], name[PS_TABLE_NAME_MAX], ipath[80], opath[80];
        snprintf(path, sizeof(path), "tables[%d]", i);
        TRY(check_keys(c, o, path, keys));
        if (item(o, "name") == NULL) return FAIL(c, path, "needs a \"name\"");
        TRY(get_str(c, o, path, "name", "", name, sizeof(name)));
        if (name[0] == '\0') return FAIL(c, path, "name must not be empty");
        uint32_t dim, id;
        if (item(o, "dim") == NULL) return FAIL(c, path, "needs a \"dim\"");
        TRY(get_u32(c, o, path, "dim", 1, 1 << 20, 1, &dim));
        ps_init_spec init = {.kind = PS_INIT_ZEROS};
        snprintf(ipath, sizeof(ipath), "%s.init", path);
        TRY(read_init(c, item(o, "init"), ipath, &init));
        TRY(add_table(c, cfg, path, name, dim, &init, &id));
        snprintf(opath, sizeof(opath), "%s.optimizer", path);
        if (item(o, "optimizer") != NULL)
            TRY(read_optimizer(c, item(o, "optimizer"), opath, &cfg->optimizer,
                               &cfg->tables[id].opt));
        TRY(read_table_memory(c, o, path, &cfg->tables[id].mem));
        if (cfg->tables[id].mem.eviction != PS_EVICT_NONE && cfg->server_max_memory_bytes == 0) {
            char p[96];
            snprintf(p, sizeof(p), "%s.eviction", path);
            return FAIL(c, p, "acts only when a push would pass server.max_memory_bytes, which "
                        "is 0 (no limit)");
        }
    }
    return PS_OK;
}

static const char *const activations[] = {"linear", "relu", "sigmoid", "tanh", "softmax", NULL};
static const char *const losses[] = {"binary_crossentropy", "sparse_categorical_crossentropy",
                                     NULL};

/* model: Keras Sequential of Dense layers. Each layer l gets two tables, named as Keras names
 * its weights: "dense/kernel" (rows keyed by input unit, width units[l], Glorot-uniform) and
 * "dense/bias" (row 0, zeros); then "dense_1/...", and so on. */
static ps_status read_model(ctx *c, const cJSON *o, ps_job_config *cfg) {
    static const char *const keys[] = {"input_dim", "input", "layers", "loss", NULL};
    static const char *const input_keys[] = {"type", "num_ids", "init", "admit_after",
                                             "expire_after_steps", "expire_after_seconds",
                                             "eviction", NULL};
    static const char *const layer_keys[] = {"units", "activation", "kernel_initializer",
                                             "bias_initializer", NULL};
    static const char *const input_types[] = {"dense", "sparse", NULL};
    ps_model_config *m = &cfg->model;
    TRY(check_keys(c, o, "model", keys));
    const cJSON *in = item(o, "input");
    int type = 0;
    ps_init_spec first_init = {.kind = PS_INIT_GLOROT_UNIFORM};
    if (in != NULL) {
        TRY(check_keys(c, in, "model.input", input_keys));
        TRY(get_enum(c, in, "model.input", "type", input_types, 0, &type));
        TRY(get_u64(c, in, "model.input", "num_ids", 0, 1.8e19, 0, &m->num_ids));
        if (type == 1 && item(o, "input_dim") != NULL)
            return FAIL(c, "model.input_dim", "not used with a sparse input (model.input.num_ids)");
    }
    m->sparse = type == 1;
    if (!m->sparse) {
        if (item(o, "input_dim") == NULL)
            return FAIL(c, "model", "needs \"input_dim\" (or \"input\": {\"type\": \"sparse\"})");
        TRY(get_u32(c, o, "model", "input_dim", 1, 1 << 24, 1, &m->input_dim));
    }
    const cJSON *layers = item(o, "layers");
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) < 1)
        return FAIL(c, "model.layers", "must be a non-empty list of {\"units\", \"activation\"}");
    if (cJSON_GetArraySize(layers) > PS_MAX_LAYERS)
        return FAIL(c, "model.layers", "more than %d layers", PS_MAX_LAYERS);
    int li = 0;
    for (const cJSON *l = layers->child; l != NULL; l = l->next, li++) {
        char path[64];
        int act;
        snprintf(path, sizeof(path), "model.layers[%d]", li);
        TRY(check_keys(c, l, path, layer_keys));
        if (item(l, "units") == NULL) return FAIL(c, path, "needs \"units\"");
        TRY(get_u32(c, l, path, "units", 1, 1 << 16, 1, &m->units[li]));
        TRY(get_enum(c, l, path, "activation", activations, 0, &act));
        snprintf(m->activation[li], sizeof(m->activation[li]), "%s", activations[act]);
    }
    m->num_layers = (size_t)li;
    int loss;
    if (item(o, "loss") == NULL) return FAIL(c, "model", "needs \"loss\"");
    TRY(get_enum(c, o, "model", "loss", losses, 0, &loss));
    snprintf(m->loss, sizeof(m->loss), "%s", losses[loss]);
    if (loss == 0 && m->units[li - 1] != 1)
        return FAIL(c, "model.layers", "binary_crossentropy needs a last layer of 1 unit, got %u",
                    m->units[li - 1]);

    uint64_t fan_in0 = m->sparse ? (m->num_ids ? m->num_ids : 1) : m->input_dim;
    first_init.fan_in = fan_in0 > UINT32_MAX ? UINT32_MAX : (uint32_t)fan_in0;
    first_init.fan_out = m->units[0];
    if (in != NULL) TRY(read_init(c, item(in, "init"), "model.input.init", &first_init));
    for (size_t l = 0; l < m->num_layers; l++) {
        char kname[PS_TABLE_NAME_MAX], bname[PS_TABLE_NAME_MAX], base[24];
        if (l == 0)
            snprintf(base, sizeof(base), "dense");
        else
            snprintf(base, sizeof(base), "dense_%zu", l);
        snprintf(kname, sizeof(kname), "%s/kernel", base);
        snprintf(bname, sizeof(bname), "%s/bias", base);
        ps_init_spec kinit = {.kind = PS_INIT_GLOROT_UNIFORM,
                              .fan_in = l == 0 ? 0 : m->units[l - 1], .fan_out = m->units[l]};
        if (l == 0) kinit = first_init;
        ps_init_spec binit = {.kind = PS_INIT_ZEROS};
        /* Keras's Dense(kernel_initializer=, bias_initializer=), in this file's init form */
        const cJSON *layer = cJSON_GetArrayItem(layers, (int)l);
        char path[64];
        snprintf(path, sizeof(path), "model.layers[%zu].kernel_initializer", l);
        if (l == 0 && in != NULL && item(in, "init") != NULL &&
            item(layer, "kernel_initializer") != NULL)
            return FAIL(c, path, "the first kernel's init is already model.input.init");
        TRY(read_init(c, item(layer, "kernel_initializer"), path, &kinit));
        snprintf(path, sizeof(path), "model.layers[%zu].bias_initializer", l);
        TRY(read_init(c, item(layer, "bias_initializer"), path, &binit));
        TRY(add_table(c, cfg, "model.layers", kname, m->units[l], &kinit, &m->kernel_table[l]));
        TRY(add_table(c, cfg, "model.layers", bname, m->units[l], &binit, &m->bias_table[l]));
    }
    /* the first kernel is the big table of a sparse input: its memory control sits by it */
    if (in != NULL) {
        ps_table_memory *mem = &cfg->tables[m->kernel_table[0]].mem;
        TRY(read_table_memory(c, in, "model.input", mem));
        if (mem->eviction != PS_EVICT_NONE && cfg->server_max_memory_bytes == 0)
            return FAIL(c, "model.input.eviction", "acts only when a push would pass "
                        "server.max_memory_bytes, which is 0 (no limit)");
    }
    return PS_OK;
}

static ps_status read_fit(ctx *c, const cJSON *o, ps_job_config *cfg) {
    static const char *const keys[] = {"epochs", "batch_size", "shuffle", "seed",
                                       "shuffle_buffer", "verbose", "metrics_file", "overlap",
                                       "init_from", "export_to", "threads", "state_dir", NULL};
    ps_fit_config *f = &cfg->fit;
    if (o != NULL) TRY(check_keys(c, o, "fit", keys));
    TRY(get_u32(c, o, "fit", "epochs", 1, 1e7, 1, &f->epochs));
    TRY(get_u32(c, o, "fit", "batch_size", 1, 1 << 20, 32, &f->batch_size));
    TRY(get_bool(c, o, "fit", "shuffle", true, &f->shuffle));
    TRY(get_u64(c, o, "fit", "seed", 0, 9007199254740992.0, cfg->seed, &f->seed));
    TRY(get_size(c, o, "fit", "shuffle_buffer", 1, 1e9, 10000, &f->shuffle_buffer));
    uint32_t v;
    TRY(get_u32(c, o, "fit", "verbose", 0, 2, 1, &v));
    f->verbose = (int)v;
    TRY(get_str(c, o, "fit", "metrics_file", "", f->metrics_file, sizeof(f->metrics_file)));
    TRY(get_str(c, o, "fit", "state_dir", "", f->state_dir, sizeof(f->state_dir)));
    TRY(get_bool(c, o, "fit", "overlap", true, &f->overlap));
    TRY(get_u32(c, o, "fit", "threads", 0, 64, 0, &f->threads));
    TRY(get_str(c, o, "fit", "init_from", "", f->init_from, sizeof(f->init_from)));
    TRY(get_str(c, o, "fit", "export_to", "", f->export_to, sizeof(f->export_to)));
    return PS_OK;
}

static ps_status read_data(ctx *c, const cJSON *o, const char *path, uint64_t seed,
                           ps_data_config *d) {
    static const char *const keys[] = {"path", "format", "label_column", "label_name",
                                       "one_based", "skip_bad_lines", "rows", "cols", "seed",
                                       "labels", "integers", NULL};
    static const char *const formats[] = {"csv", "libsvm", "random", "criteo", "idx", NULL};
    static const char *const integers[] = {"bucket", "dense", NULL};
    enum { RANDOM = 2, CRITEO = 3, IDX = 4 };
    TRY(check_keys(c, o, path, keys));
    int fmt, ints;
    char p[256];
    if (item(o, "format") == NULL)
        return FAIL(c, path, "needs \"format\" (csv, libsvm, random, criteo, idx)");
    TRY(get_enum(c, o, path, "format", formats, 0, &fmt));
    snprintf(d->format, sizeof(d->format), "%s", formats[fmt]);
    TRY(get_str(c, o, path, "path", "", d->path, sizeof(d->path)));
    if (fmt != RANDOM && d->path[0] == '\0')
        return FAIL(c, path, "needs \"path\" for format %s", formats[fmt]);
    double lc;
    TRY(get_num(c, o, path, "label_column", -1e6, 1e6, 0, &lc));
    if (lc != floor(lc)) return FAIL(c, path, "label_column must be an integer");
    d->label_column = (int)lc;
    TRY(get_str(c, o, path, "label_name", "", d->label_name, sizeof(d->label_name)));
    TRY(get_bool(c, o, path, "one_based", true, &d->one_based));
    TRY(get_bool(c, o, path, "skip_bad_lines", false, &d->skip_bad_lines));
    TRY(get_u64(c, o, path, "rows", 1, 1e15, 1000, &d->rows));
    TRY(get_u32(c, o, path, "cols", 1, 1 << 24, 20, &d->cols));
    TRY(get_u64(c, o, path, "seed", 0, 9007199254740992.0, seed, &d->seed));
    TRY(get_str(c, o, path, "labels", "", d->labels, sizeof(d->labels)));
    join(p, sizeof(p), path, "labels");
    if (fmt == IDX && d->labels[0] == '\0')
        return FAIL(c, path, "needs \"labels\" (the IDX labels file) for format idx");
    if (fmt != IDX && item(o, "labels") != NULL)
        return FAIL(c, p, "is for format idx only (this is %s)", formats[fmt]);
    TRY(get_enum(c, o, path, "integers", integers, 0, &ints));
    snprintf(d->integers, sizeof(d->integers), "%s", integers[ints]);
    join(p, sizeof(p), path, "integers");
    if (fmt != CRITEO && item(o, "integers") != NULL)
        return FAIL(c, p, "is for format criteo only (this is %s)", formats[fmt]);
    return PS_OK;
}

static ps_status read_job(ctx *c, const cJSON *root, ps_job_config *cfg) {
    static const char *const keys[] = {"job_id", "seed", "cluster", "limits", "server",
                                       "optimizer", "tables", "model", "fit", "data", NULL};
    static const char *const data_keys[] = {"train",       "validation", "validation_split",
                                            "cache_bytes", "cache_dir",  NULL};
    TRY(check_keys(c, root, "", keys));
    TRY(get_str(c, root, "", "job_id", "ps-job", cfg->job_id, sizeof(cfg->job_id)));
    TRY(get_u64(c, root, "", "seed", 0, 9007199254740992.0, 0, &cfg->seed));
    TRY(read_cluster(c, item(root, "cluster"), cfg));
    TRY(read_limits(c, item(root, "limits"), cfg));
    TRY(read_server(c, item(root, "server"), cfg));
    TRY(read_optimizer(c, item(root, "optimizer"), "optimizer", NULL, &cfg->optimizer));
    TRY(read_tables(c, item(root, "tables"), cfg));
    if (item(root, "model") != NULL) {
        cfg->has_model = true;
        TRY(read_model(c, item(root, "model"), cfg));
    }
    TRY(read_fit(c, item(root, "fit"), cfg));
    const cJSON *data = item(root, "data");
    if (data != NULL) {
        TRY(check_keys(c, data, "data", data_keys));
        if (item(data, "train") != NULL) {
            cfg->has_train = true;
            TRY(read_data(c, item(data, "train"), "data.train", cfg->seed, &cfg->train));
        }
        if (item(data, "validation") != NULL) {
            cfg->has_validation = true;
            TRY(read_data(c, item(data, "validation"), "data.validation", cfg->seed + 1,
                          &cfg->validation));
        }
        /* Keras' validation_split: the last fraction of data.train's rows, before shuffling */
        TRY(get_num(c, data, "data", "validation_split", 0, 1, 0, &cfg->validation_split));
        if (cfg->validation_split >= 1)
            return FAIL(c, "data.validation_split", "1 is out of range [0, 1): no rows would "
                        "be left to train on");
        if (item(data, "validation_split") != NULL && cfg->has_validation)
            return FAIL(c, "data.validation_split",
                        "and data.validation are both given; hold out rows or name a file");
        if (item(data, "validation_split") != NULL && !cfg->has_train)
            return FAIL(c, "data.validation_split", "needs data.train to split");
    }
    /* parse once: text data held parsed up to cache_bytes, past it in a cache file (data.h) */
    TRY(get_size(c, data, "data", "cache_bytes", 0, 1e15, (size_t)1 << 30, &cfg->data_cache_bytes));
    TRY(get_str(c, data, "data", "cache_dir", "", cfg->data_cache_dir, sizeof(cfg->data_cache_dir)));
    if (cfg->has_model && !cfg->has_train)
        return FAIL(c, "data.train", "a job with a model needs training data");
    for (size_t t = 0; t < cfg->num_tables; t++) /* a request or reply carries whole rows */
        if ((size_t)cfg->tables[t].dim * (4 + 4 + 8) + 256 > cfg->max_frame_bytes)
            return FAIL(c, "limits.max_frame_bytes",
                        "%zu bytes cannot carry one row of table \"%s\" (dim %u: %zu bytes with "
                        "its key, accumulator and framing)",
                        cfg->max_frame_bytes, cfg->tables[t].name, cfg->tables[t].dim,
                        (size_t)cfg->tables[t].dim * 16 + 256);
    return PS_OK;
}

/* --- --set KEY=VALUE ----------------------------------------------------------------------- */

/* Walks a dotted path (a.b[2].c), creating objects as needed, and replaces the leaf. */
static ps_status apply_set(ctx *c, cJSON *root, const char *set) {
    const char *eq = strchr(set, '=');
    if (eq == NULL || eq == set)
        return ps_error_set(c->err, PS_CONFIG, "--set %s: expected KEY=VALUE", set);
    char path[256];
    size_t plen = (size_t)(eq - set);
    if (plen >= sizeof(path)) return ps_error_set(c->err, PS_CONFIG, "--set: key too long");
    memcpy(path, set, plen);
    path[plen] = '\0';
    cJSON *val = cJSON_ParseWithOpts(eq + 1, NULL, true);
    if (val == NULL) val = cJSON_CreateString(eq + 1);
    if (val == NULL) return ps_error_set(c->err, PS_NOMEM, "--set: out of memory");

    cJSON *node = root;
    char *save = NULL;
    char *tok = strtok_r(path, ".", &save);
    while (tok != NULL) {
        char *next = strtok_r(NULL, ".", &save);
        char *br = strchr(tok, '[');
        long index = -1;
        if (br != NULL) {
            char *end;
            index = strtol(br + 1, &end, 10);
            if (*end != ']' || end[1] != '\0' || index < 0) {
                cJSON_Delete(val);
                return ps_error_set(c->err, PS_CONFIG, "--set %.*s: bad index", (int)plen, set);
            }
            *br = '\0';
        }
        cJSON *child = cJSON_GetObjectItemCaseSensitive(node, tok);
        bool leaf = next == NULL;
        if (index >= 0) {
            if (!cJSON_IsArray(child) || index >= cJSON_GetArraySize(child)) {
                cJSON_Delete(val);
                return ps_error_set(c->err, PS_CONFIG, "--set %.*s: no element %ld in %s",
                                    (int)plen, set, index, tok);
            }
            if (leaf) {
                cJSON_ReplaceItemInArray(child, (int)index, val);
                return PS_OK;
            }
            node = cJSON_GetArrayItem(child, (int)index);
        } else if (leaf) {
            if (!cJSON_IsObject(node)) {
                cJSON_Delete(val);
                return ps_error_set(c->err, PS_CONFIG, "--set %.*s: parent is not an object",
                                    (int)plen, set);
            }
            if (child != NULL)
                cJSON_ReplaceItemInObjectCaseSensitive(node, tok, val);
            else
                cJSON_AddItemToObject(node, tok, val);
            return PS_OK;
        } else {
            if (child == NULL) child = cJSON_AddObjectToObject(node, tok);
            node = child;
        }
        if (node == NULL || !cJSON_IsObject(node)) {
            cJSON_Delete(val);
            return ps_error_set(c->err, PS_CONFIG, "--set %.*s: \"%s\" is not an object",
                                (int)plen, set, tok);
        }
        tok = next;
    }
    cJSON_Delete(val);
    return ps_error_set(c->err, PS_CONFIG, "--set %s: empty key", set);
}

ps_status ps_config_parse(const char *json, const char *name, const char *const *sets,
                          size_t n_sets, ps_job_config *cfg, ps_error *err) {
    ctx c = {.file = name, .err = err, .sets = sets, .n_sets = n_sets};
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->file, sizeof(cfg->file), "%s", name);
    cJSON *root = cJSON_Parse(json);
    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        int line = 1;
        for (const char *p = json; at != NULL && p < at && *p; p++) line += *p == '\n';
        return ps_error_set(err, PS_CONFIG, "%s:%d: invalid JSON near \"%.20s\"", name, line,
                            at ? at : "");
    }
    ps_status st = PS_OK;
    for (size_t i = 0; i < n_sets && st == PS_OK; i++) st = apply_set(&c, root, sets[i]);
    if (st == PS_OK) st = read_job(&c, root, cfg);
    cJSON_Delete(root);
    return st;
}

ps_status ps_config_load(const char *path, const char *const *sets, size_t n_sets,
                         ps_job_config *cfg, ps_error *err) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return ps_error_set(err, PS_CONFIG, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (16u << 20)) {
                free(buf);
                fclose(f);
                return ps_error_set(err, PS_CONFIG, "%s: larger than 16 MiB", path);
            }
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return ps_error_set(err, PS_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ps_error_set(err, PS_CONFIG, "%s: read error", path);
    }
    buf[len] = '\0';
    ps_status st = ps_config_parse(buf, path, sets, n_sets, cfg, err);
    free(buf);
    return st;
}

static ps_status tls_file(const ps_job_config *cfg, const char *key, const char *path,
                          const char *why, ps_error *err) {
    if (path[0] == '\0')
        return ps_error_set(err, PS_CONFIG, "%s: cluster.tls.%s: missing: %s", cfg->file, key, why);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return ps_error_set(err, PS_CONFIG, "%s: cluster.tls.%s: cannot read %s: %s", cfg->file,
                            key, path, strerror(errno));
    fclose(f);
    return PS_OK;
}

ps_status ps_config_tls_files(const ps_job_config *cfg, bool server, ps_error *err) {
    if (!cfg->tls.on) return PS_OK;
    if (!server)
        return tls_file(cfg, "ca", cfg->tls.ca,
                        "workers verify the servers' certificates against it", err);
    ps_status st = tls_file(cfg, "cert", cfg->tls.cert, "a server needs its certificate", err);
    return st == PS_OK ? tls_file(cfg, "key", cfg->tls.key, "a server needs its private key", err)
                       : st;
}

int ps_config_table(const ps_job_config *cfg, const char *name) {
    for (size_t i = 0; i < cfg->num_tables; i++)
        if (strcmp(cfg->tables[i].name, name) == 0) return (int)i;
    return -1;
}
