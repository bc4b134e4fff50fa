/* fuzz_config.c - libFuzzer target: the job-file reader (common/config.c) and its `--set`
 * overrides. The input is split at NUL bytes: the first piece is the job file (when it is empty,
 * a valid built-in job stands for it, so the overrides meet a real job), the next pieces (eight at
 * most) are `--set KEY=VALUE` strings, each also parsed as a "host:port". A job that is accepted
 * must hold together: counts within their arrays, tables found by their own names, strings
 * terminated. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_util.h"

#define MAX_SETS 8

static const char *base_job =
    "{\"job_id\": \"fz\", \"seed\": 1,"
    " \"cluster\": {\"servers\": [\"127.0.0.1:7000\", \"[::1]:7001\"], \"workers\": 2,"
    "  \"consistency\": \"ssp\", \"staleness\": 1, \"barrier_timeout_ms\": 100},"
    " \"optimizer\": {\"form\": \"keras\", \"learning_rate\": 0.01},"
    " \"tables\": [{\"name\": \"emb\", \"dim\": 8, \"init\": {\"type\": \"normal\"}}],"
    " \"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": 100},"
    "  \"layers\": [{\"units\": 4, \"activation\": \"relu\"}, {\"units\": 1, \"activation\":"
    "  \"sigmoid\"}], \"loss\": \"binary_crossentropy\"},"
    " \"fit\": {\"epochs\": 2, \"batch_size\": 16},"
    " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"t.svm\"},"
    "  \"validation\": {\"format\": \"random\", \"rows\": 10, \"cols\": 100}}}";

static void check_job(const ps_job_config *c) {
    FZ_CHECK(c->num_servers >= 1 && c->num_servers <= PS_MAX_SERVERS, "%u servers",
             c->num_servers);
    FZ_CHECK(c->num_tables <= PS_MAX_TABLES, "%zu tables", c->num_tables);
    FZ_CHECK(memchr(c->job_id, 0, sizeof(c->job_id)) && memchr(c->token, 0, sizeof(c->token)),
             "job_id or token not terminated");
    for (uint32_t s = 0; s < c->num_servers; s++)
        FZ_CHECK(memchr(c->servers[s], 0, sizeof(c->servers[s])), "server %u not terminated", s);
    for (size_t t = 0; t < c->num_tables; t++) {
        FZ_CHECK(memchr(c->tables[t].name, 0, sizeof(c->tables[t].name)), "name not terminated");
        FZ_CHECK(c->tables[t].dim > 0, "table %zu has dim 0", t);
        FZ_CHECK(ps_config_table(c, c->tables[t].name) == (int)t,
                 "table %zu \"%s\" is found at %d", t, c->tables[t].name,
                 ps_config_table(c, c->tables[t].name));
    }
    if (c->has_model) {
        FZ_CHECK(c->model.num_layers >= 1 && c->model.num_layers <= PS_MAX_LAYERS, "%zu layers",
                 c->model.num_layers);
        for (size_t l = 0; l < c->model.num_layers; l++)
            FZ_CHECK(c->model.kernel_table[l] < c->num_tables &&
                         c->model.bias_table[l] < c->num_tables,
                     "layer %zu names tables %u/%u of %zu", l, c->model.kernel_table[l],
                     c->model.bias_table[l], c->num_tables);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    FZ_CHECK(text != NULL, "malloc");
    memcpy(text, data, size);
    text[size] = '\0';
    const char *sets[MAX_SETS];
    size_t n_sets = 0;
    char *p = text + strlen(text) + 1; /* past the first NUL */
    while (p <= text + size && n_sets < MAX_SETS) {
        sets[n_sets++] = p;
        p += strlen(p) + 1;
    }
    static ps_job_config cfg;
    ps_error err = {0};
    ps_status st =
        ps_config_parse(text[0] ? text : base_job, "fuzz.json", sets, n_sets, &cfg, &err);
    if (st == PS_OK)
        check_job(&cfg);
    else
        FZ_CHECK(err.msg[0] != '\0', "error %s without a message", ps_status_str(st));
    for (size_t i = 0; i < n_sets; i++) {
        char host[256];
        uint16_t port;
        if (ps_parse_hostport(sets[i], host, sizeof(host), &port, NULL) == PS_OK)
            FZ_CHECK(memchr(host, 0, sizeof(host)) != NULL, "host not terminated");
    }
    free(text);
    return 0;
}
