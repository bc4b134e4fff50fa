/* test_config.c - common/config.c: a full job file, every default, the tables a model implies, and
 * error messages that name the file and the dotted key; --set overrides; host:port parsing. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"

/* A job that sets every key config.c reads, each to a value other than its default. */
static const char full_job[] =
    "{\n"
    "  \"job_id\": \"ctr-full\",\n"
    "  \"seed\": 42,\n"
    "  \"cluster\": {\"servers\": [\"10.0.0.1:7000\", \"[::1]:7001\", \"host-c:0\"],\n"
    "              \"workers\": 3, \"connect_timeout_ms\": 5000,\n"
    "              \"request_timeout_ms\": 7000, \"token\": \"s3cret\", \"busy_poll_us\": 0},\n"
    "  \"limits\": {\"max_frame_bytes\": 1048576, \"max_write_queue_bytes\": 2097152,\n"
    "             \"max_keys_per_request\": 100000, \"max_connections\": 64},\n"
    "  \"server\": {\"threads\": 4, \"busy_poll_us\": 250},\n"
    "  \"optimizer\": {\"name\": \"adagrad\", \"form\": \"pytorch\", \"learning_rate\": 0.05,\n"
    "                \"epsilon\": 1e-8, \"initial_accumulator_value\": 0.1,\n"
    "                \"lr_decay\": 0.001, \"weight_decay\": 0.0001, \"rowwise\": false},\n"
    "  \"tables\": [\n"
    "    {\"name\": \"emb\", \"dim\": 8, \"init\": {\"type\": \"normal\", \"stddev\": 0.01},\n"
    "     \"optimizer\": {\"learning_rate\": 0.1, \"rowwise\": true}},\n"
    "    {\"name\": \"c\", \"dim\": 2, \"init\": {\"type\": \"constant\", \"value\": 0.5}},\n"
    "    {\"name\": \"u\", \"dim\": 3,\n"
    "     \"init\": {\"type\": \"uniform\", \"minval\": -0.1, \"maxval\": 0.2}},\n"
    "    {\"name\": \"g\", \"dim\": 5,\n"
    "     \"init\": {\"type\": \"glorot_uniform\", \"fan_in\": 100, \"fan_out\": 5}},\n"
    "    {\"name\": \"k\", \"dim\": 1, \"optimizer\": {\"form\": \"keras\"}}\n"
    "  ],\n"
    "  \"model\": {\"input_dim\": 10,\n"
    "            \"layers\": [{\"units\": 4, \"activation\": \"relu\"},\n"
    "                       {\"units\": 3, \"activation\": \"tanh\"},\n"
    "                       {\"units\": 1, \"activation\": \"sigmoid\"}],\n"
    "            \"loss\": \"binary_crossentropy\"},\n"
    "  \"fit\": {\"epochs\": 3, \"batch_size\": 64, \"shuffle\": false, \"seed\": 7,\n"
    "          \"shuffle_buffer\": 500, \"verbose\": 2, \"metrics_file\": \"/tmp/m.jsonl\",\n"
    "          \"overlap\": false, \"threads\": 3},\n"
    "  \"data\": {\"train\": {\"path\": \"/data/train.csv\", \"format\": \"csv\",\n"
    "                      \"label_column\": -1, \"label_name\": \"y\", \"one_based\": false,\n"
    "                      \"skip_bad_lines\": true},\n"
    "           \"validation\": {\"format\": \"random\", \"rows\": 500, \"cols\": 10,\n"
    "                           \"seed\": 9}}\n"
    "}\n";

/* The smallest job a model needs around it. */
#define MODEL_JOB(layers, loss)                                                                    \
    "{\"model\": {\"input_dim\": 6, \"layers\": " layers ", \"loss\": \"" loss "\"},"             \
    " \"data\": {\"train\": {\"format\": \"random\"}}}"

static ps_job_config *cfg;
static ps_error err;
static void setup(void) {
    cfg = malloc(sizeof(*cfg)); /* ~90 KB: not on the stack */
    cr_assert_not_null(cfg);
    memset(&err, 0, sizeof(err));
}
static void teardown(void) { free(cfg); }
TestSuite(config, .init = setup, .fini = teardown, .timeout = 10);

static void parse_ok(const char *json, const char *const *sets, size_t n_sets) {
    ps_status st = ps_config_parse(json, "job.json", sets, n_sets, cfg, &err);
    cr_assert_eq(st, PS_OK, "parse failed: %s", err.msg);
}

static const ps_table_spec *table(const char *name) {
    int i = ps_config_table(cfg, name);
    cr_assert_geq(i, 0, "no table \"%s\"", name);
    return &cfg->tables[i];
}

Test(config, full_job) {
    parse_ok(full_job, NULL, 0);
    cr_assert_str_eq(cfg->file, "job.json");
    cr_assert_str_eq(cfg->job_id, "ctr-full");
    cr_assert_eq(cfg->seed, 42);

    cr_assert_eq(cfg->num_servers, 3);
    cr_assert_eq(cfg->servers_auto, false);
    cr_assert_str_eq(cfg->servers[0], "10.0.0.1:7000");
    cr_assert_str_eq(cfg->servers[1], "[::1]:7001");
    cr_assert_str_eq(cfg->servers[2], "host-c:0");
    cr_assert_eq(cfg->num_workers, 3);
    cr_assert_eq(cfg->connect_timeout_ms, 5000);
    cr_assert_eq(cfg->request_timeout_ms, 7000);
    cr_assert_str_eq(cfg->token, "s3cret");

    cr_assert_eq(cfg->max_frame_bytes, 1048576);
    cr_assert_eq(cfg->max_write_queue_bytes, 2097152);
    cr_assert_eq(cfg->max_keys_per_request, 100000);
    cr_assert_eq(cfg->max_connections, 64);
    cr_assert_eq(cfg->server_threads, 4);
    cr_assert_eq(cfg->server_busy_poll_us, 250);
    cr_assert_eq(cfg->busy_poll_us, 0);

    const ps_adagrad_config *o = &cfg->optimizer;
    cr_assert_eq(o->form, PS_ADAGRAD_PYTORCH);
    cr_assert_eq(o->learning_rate, 0.05);
    cr_assert_eq(o->epsilon, 1e-8);
    cr_assert_eq(o->initial_accumulator_value, 0.1);
    cr_assert_eq(o->lr_decay, 0.001);
    cr_assert_eq(o->weight_decay, 0.0001);
    cr_assert_eq(o->rowwise, false);

    /* 5 explicit tables, then 3 layers x (kernel, bias) */
    cr_assert_eq(cfg->num_tables, 11);
    for (size_t i = 0; i < cfg->num_tables; i++)
        cr_assert_eq(cfg->tables[i].id, i, "table %zu has id %u", i, cfg->tables[i].id);

    const ps_table_spec *t = table("emb");
    cr_assert_eq(t->dim, 8);
    cr_assert_eq(t->init.kind, PS_INIT_NORMAL);
    cr_assert_eq(t->init.stddev, 0.01);
    /* a table's optimizer overrides the job's keys it names and inherits the rest */
    cr_assert_eq(t->opt.form, PS_ADAGRAD_PYTORCH);
    cr_assert_eq(t->opt.learning_rate, 0.1);
    cr_assert_eq(t->opt.rowwise, true);
    cr_assert_eq(t->opt.epsilon, 1e-8);
    cr_assert_eq(t->opt.initial_accumulator_value, 0.1);
    cr_assert_eq(t->opt.lr_decay, 0.001);
    cr_assert_eq(t->opt.weight_decay, 0.0001);

    t = table("c");
    cr_assert_eq(t->dim, 2);
    cr_assert_eq(t->init.kind, PS_INIT_CONSTANT);
    cr_assert_eq(t->init.a, 0.5);
    cr_assert_eq(memcmp(&t->opt, &cfg->optimizer, sizeof(t->opt)), 0,
                 "a table without an optimizer uses the job's");

    t = table("u");
    cr_assert_eq(t->init.kind, PS_INIT_UNIFORM);
    cr_assert_eq(t->init.a, -0.1);
    cr_assert_eq(t->init.b, 0.2);

    t = table("g");
    cr_assert_eq(t->init.kind, PS_INIT_GLOROT_UNIFORM);
    cr_assert_eq(t->init.fan_in, 100);
    cr_assert_eq(t->init.fan_out, 5);

    /* another form than the job's: that library's defaults, nothing inherited */
    t = table("k");
    cr_assert_eq(t->init.kind, PS_INIT_ZEROS);
    cr_assert_eq(t->opt.form, PS_ADAGRAD_KERAS);
    cr_assert_eq(t->opt.learning_rate, 0.001);
    cr_assert_eq(t->opt.epsilon, 1e-7);
    cr_assert_eq(t->opt.initial_accumulator_value, 0.1);
    cr_assert_eq(t->opt.lr_decay, 0.0);
    cr_assert_eq(t->opt.weight_decay, 0.0);

    cr_assert_eq(cfg->has_model, true);
    const ps_model_config *m = &cfg->model;
    cr_assert_eq(m->input_dim, 10);
    cr_assert_eq(m->sparse, false);
    cr_assert_eq(m->num_layers, 3);
    cr_assert_eq(m->units[0], 4);
    cr_assert_eq(m->units[1], 3);
    cr_assert_eq(m->units[2], 1);
    cr_assert_str_eq(m->activation[0], "relu");
    cr_assert_str_eq(m->activation[1], "tanh");
    cr_assert_str_eq(m->activation[2], "sigmoid");
    cr_assert_str_eq(m->loss, "binary_crossentropy");
    cr_assert_eq(m->kernel_table[0], 5);
    cr_assert_eq(m->bias_table[0], 6);
    cr_assert_eq(m->kernel_table[2], 9);
    cr_assert_eq(m->bias_table[2], 10);

    const ps_fit_config *f = &cfg->fit;
    cr_assert_eq(f->epochs, 3);
    cr_assert_eq(f->batch_size, 64);
    cr_assert_eq(f->shuffle, false);
    cr_assert_eq(f->seed, 7);
    cr_assert_eq(f->shuffle_buffer, 500);
    cr_assert_eq(f->verbose, 2);
    cr_assert_str_eq(f->metrics_file, "/tmp/m.jsonl");
    cr_assert_eq(f->overlap, false);
    cr_assert_eq(f->threads, 3);

    cr_assert_eq(cfg->has_train, true);
    cr_assert_str_eq(cfg->train.format, "csv");
    cr_assert_str_eq(cfg->train.path, "/data/train.csv");
    cr_assert_eq(cfg->train.label_column, -1);
    cr_assert_str_eq(cfg->train.label_name, "y");
    cr_assert_eq(cfg->train.one_based, false);
    cr_assert_eq(cfg->train.skip_bad_lines, true);
    cr_assert_eq(cfg->train.seed, 42, "data seed defaults to the job seed");
    cr_assert_eq(cfg->has_validation, true);
    cr_assert_str_eq(cfg->validation.format, "random");
    cr_assert_eq(cfg->validation.rows, 500);
    cr_assert_eq(cfg->validation.cols, 10);
    cr_assert_eq(cfg->validation.seed, 9);
}

Test(config, defaults_of_an_empty_job) {
    parse_ok("{}", NULL, 0);
    cr_assert_str_eq(cfg->job_id, "ps-job");
    cr_assert_eq(cfg->seed, 0);
    cr_assert_eq(cfg->num_servers, 1);
    cr_assert_eq(cfg->servers_auto, true);
    cr_assert_str_eq(cfg->servers[0], "127.0.0.1:0");
    cr_assert_eq(cfg->num_workers, 1);
    cr_assert_eq(cfg->connect_timeout_ms, 30000);
    cr_assert_eq(cfg->request_timeout_ms, 60000);
    cr_assert_str_eq(cfg->token, "");
    cr_assert_eq(cfg->max_frame_bytes, 64u << 20);
    cr_assert_eq(cfg->max_write_queue_bytes, 256u << 20);
    cr_assert_eq(cfg->max_keys_per_request, 16u << 20);
    cr_assert_eq(cfg->max_connections, 4096);
    cr_assert_eq(cfg->server_threads, 2);
    cr_assert_eq(cfg->busy_poll_us, -1);
    cr_assert_eq(cfg->server_busy_poll_us, -1);
    cr_assert_eq(cfg->num_tables, 0);
    cr_assert_eq(cfg->has_model, false);
    cr_assert_eq(cfg->has_train, false);
    cr_assert_eq(cfg->has_validation, false);
    cr_assert_eq(cfg->fit.epochs, 1);
    cr_assert_eq(cfg->fit.batch_size, 32);
    cr_assert_eq(cfg->fit.shuffle, true);
    cr_assert_eq(cfg->fit.seed, 0);
    cr_assert_eq(cfg->fit.shuffle_buffer, 10000);
    cr_assert_eq(cfg->fit.verbose, 1);
    cr_assert_str_eq(cfg->fit.metrics_file, "");
    cr_assert_eq(cfg->fit.overlap, true);
    cr_assert_eq(cfg->fit.threads, 0, "auto");
    cr_assert_str_eq(cfg->fit.state_dir, "", "no position file");
    cr_assert_eq(cfg->recover_timeout_ms, 60000);
}

Test(config, servers_as_a_count) {
    parse_ok("{\"cluster\": {\"servers\": 3}}", NULL, 0);
    cr_assert_eq(cfg->num_servers, 3);
    cr_assert_eq(cfg->servers_auto, true);
    for (int i = 0; i < 3; i++) cr_assert_str_eq(cfg->servers[i], "127.0.0.1:0");
}

/* Defaults per optimizer form: each library's own. */
typedef struct {
    char json[128];
    int form;
    double lr, eps, g0;
} optimizer_case;

ParameterizedTestParameters(config, optimizer_defaults) {
    static optimizer_case cases[] = {
        {"{}", PS_ADAGRAD_PYTORCH, 0.01, 1e-10, 0.0},
        {"{\"optimizer\": {}}", PS_ADAGRAD_PYTORCH, 0.01, 1e-10, 0.0},
        {"{\"optimizer\": {\"form\": \"pytorch\"}}", PS_ADAGRAD_PYTORCH, 0.01, 1e-10, 0.0},
        {"{\"optimizer\": {\"name\": \"adagrad\", \"form\": \"keras\"}}", PS_ADAGRAD_KERAS, 0.001,
         1e-7, 0.1},
        {"{\"optimizer\": {\"form\": \"keras\", \"learning_rate\": 0.5}}", PS_ADAGRAD_KERAS, 0.5,
         1e-7, 0.1},
    };
    return cr_make_param_array(optimizer_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(optimizer_case *c, config, optimizer_defaults) {
    parse_ok(c->json, NULL, 0);
    const ps_adagrad_config *o = &cfg->optimizer;
    cr_assert_eq(o->form, (ps_adagrad_form)c->form, "%s", c->json);
    cr_assert_eq(o->learning_rate, c->lr, "%s: lr %g", c->json, o->learning_rate);
    cr_assert_eq(o->epsilon, c->eps, "%s: eps %g", c->json, o->epsilon);
    cr_assert_eq(o->initial_accumulator_value, c->g0, "%s: G0 %g", c->json,
                 o->initial_accumulator_value);
    cr_assert_eq(o->lr_decay, 0.0);
    cr_assert_eq(o->weight_decay, 0.0);
    cr_assert_eq(o->rowwise, false);
}

/* A model implies its tables, named as Keras names the weights. */
Test(config, model_tables) {
    parse_ok(MODEL_JOB("[{\"units\": 8, \"activation\": \"relu\"}, {\"units\": 5},"
                       " {\"units\": 3, \"activation\": \"softmax\"}]",
                       "sparse_categorical_crossentropy"),
             NULL, 0);
    cr_assert_eq(cfg->num_tables, 6);
    const char names[6][16] = {"dense/kernel",   "dense/bias",   "dense_1/kernel",
                               "dense_1/bias",   "dense_2/kernel", "dense_2/bias"};
    for (int i = 0; i < 6; i++) cr_assert_str_eq(cfg->tables[i].name, names[i]);

    const ps_table_spec *k0 = table("dense/kernel");
    cr_assert_eq(k0->dim, 8);
    cr_assert_eq(k0->init.kind, PS_INIT_GLOROT_UNIFORM);
    cr_assert_eq(k0->init.fan_in, 6, "fan_in = input_dim");
    cr_assert_eq(k0->init.fan_out, 8, "fan_out = units");
    const ps_table_spec *b0 = table("dense/bias");
    cr_assert_eq(b0->dim, 8);
    cr_assert_eq(b0->init.kind, PS_INIT_ZEROS);
    const ps_table_spec *k1 = table("dense_1/kernel");
    cr_assert_eq(k1->dim, 5);
    cr_assert_eq(k1->init.kind, PS_INIT_GLOROT_UNIFORM);
    cr_assert_eq(k1->init.fan_in, 8);
    cr_assert_eq(k1->init.fan_out, 5);
    const ps_table_spec *k2 = table("dense_2/kernel");
    cr_assert_eq(k2->init.fan_in, 5);
    cr_assert_eq(k2->init.fan_out, 3);
    cr_assert_eq(table("dense_2/bias")->init.kind, PS_INIT_ZEROS);

    cr_assert_str_eq(cfg->model.activation[1], "linear", "Keras's default activation");
    for (int l = 0; l < 3; l++) {
        cr_assert_str_eq(cfg->tables[cfg->model.kernel_table[l]].name, names[2 * l]);
        cr_assert_str_eq(cfg->tables[cfg->model.bias_table[l]].name, names[2 * l + 1]);
    }
    /* model tables use the job's optimizer */
    cr_assert_eq(k0->opt.learning_rate, 0.01);
}

/* Keras's per-layer initializers; the first kernel's may come from model.input.init, not both. */
Test(config, layer_initializers) {
    parse_ok("{\"model\": {\"input_dim\": 4, \"layers\": ["
             " {\"units\": 3, \"kernel_initializer\": {\"type\": \"uniform\", \"minval\": -0.5,"
             " \"maxval\": 0.5}, \"bias_initializer\": {\"type\": \"constant\", \"value\": 0.25}},"
             " {\"units\": 1, \"bias_initializer\": {\"type\": \"normal\", \"stddev\": 0.1}}],"
             " \"loss\": \"binary_crossentropy\"},"
             " \"data\": {\"train\": {\"format\": \"random\", \"rows\": 8, \"cols\": 4}}}",
             NULL, 0);
    const ps_table_spec *k0 = table("dense/kernel"), *b0 = table("dense/bias");
    cr_assert_eq(k0->init.kind, PS_INIT_UNIFORM);
    cr_assert_eq(k0->init.a, -0.5);
    cr_assert_eq(k0->init.b, 0.5);
    cr_assert_eq(b0->init.kind, PS_INIT_CONSTANT);
    cr_assert_eq(b0->init.a, 0.25);
    const ps_table_spec *k1 = table("dense_1/kernel"), *b1 = table("dense_1/bias");
    cr_assert_eq(k1->init.kind, PS_INIT_GLOROT_UNIFORM, "unset: Keras's default");
    cr_assert_eq(k1->init.fan_in, 3);
    cr_assert_eq(k1->init.fan_out, 1);
    cr_assert_eq(b1->init.kind, PS_INIT_NORMAL);
    cr_assert_eq(b1->init.stddev, 0.1);

    ps_status st = ps_config_parse(
        "{\"model\": {\"input\": {\"type\": \"sparse\", \"init\": {\"type\": \"zeros\"}},"
        " \"layers\": [{\"units\": 1, \"kernel_initializer\": {\"type\": \"zeros\"}}],"
        " \"loss\": \"binary_crossentropy\"}}", "job.json", NULL, 0, cfg, &err);
    cr_assert_eq(st, PS_CONFIG);
    cr_assert_str_eq(err.msg, "job.json: model.layers[0].kernel_initializer: the first kernel's "
                              "init is already model.input.init");
    st = ps_config_parse("{\"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1,"
                         " \"bias_initializer\": {\"type\": \"uniform\", \"minval\": 1,"
                         " \"maxval\": 0}}], \"loss\": \"binary_crossentropy\"}}",
                         "job.json", NULL, 0, cfg, &err);
    cr_assert_eq(st, PS_CONFIG);
    cr_assert_str_eq(err.msg, "job.json: model.layers[0].bias_initializer: maxval 0 < minval 1");
}

Test(config, sparse_model_input) {
    parse_ok("{\"model\": {\"input\": {\"type\": \"sparse\", \"num_ids\": 1000000,"
             " \"init\": {\"type\": \"normal\", \"stddev\": 0.001}},"
             " \"layers\": [{\"units\": 16}, {\"units\": 1}], \"loss\": \"binary_crossentropy\"},"
             " \"data\": {\"train\": {\"format\": \"libsvm\", \"path\": \"t.svm\"}}}",
             NULL, 0);
    cr_assert_eq(cfg->model.sparse, true);
    cr_assert_eq(cfg->model.num_ids, 1000000);
    cr_assert_eq(cfg->model.input_dim, 0);
    const ps_table_spec *k0 = table("dense/kernel");
    cr_assert_eq(k0->init.kind, PS_INIT_NORMAL);
    cr_assert_eq(k0->init.stddev, 0.001);
    cr_assert_eq(cfg->train.one_based, true, "libsvm ids are 1-based by default");
}

Test(config, data_formats_criteo_idx_and_validation_split) {
    parse_ok("{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"/d/img.gz\", "
             "\"labels\": \"/d/lab.gz\"}, \"validation_split\": 0.2}}",
             NULL, 0);
    cr_assert_str_eq(cfg->train.format, "idx");
    cr_assert_str_eq(cfg->train.path, "/d/img.gz");
    cr_assert_str_eq(cfg->train.labels, "/d/lab.gz");
    cr_assert_eq(cfg->validation_split, 0.2);
    cr_assert_eq(cfg->has_validation, false);
    parse_ok("{\"data\": {\"train\": {\"format\": \"criteo\", \"path\": \"t.tsv\"}, "
             "\"validation\": {\"format\": \"criteo\", \"path\": \"v.tsv\", "
             "\"integers\": \"dense\"}}}",
             NULL, 0);
    cr_assert_str_eq(cfg->train.format, "criteo");
    cr_assert_str_eq(cfg->train.integers, "bucket", "bucket is the default");
    cr_assert_str_eq(cfg->validation.integers, "dense");
    cr_assert_eq(cfg->validation_split, 0.0, "no split by default");
}

Test(config, data_cache_bytes_and_dir) {
    parse_ok("{}", NULL, 0);
    cr_assert_eq(cfg->data_cache_bytes, (size_t)1073741824, "1 GiB by default");
    cr_assert_str_eq(cfg->data_cache_dir, "");
    parse_ok("{\"data\": {\"train\": {\"format\": \"csv\", \"path\": \"a.csv\"}, "
             "\"cache_bytes\": 0, \"cache_dir\": \"/var/cache/ps\"}}",
             NULL, 0);
    cr_assert_eq(cfg->data_cache_bytes, 0);
    cr_assert_str_eq(cfg->data_cache_dir, "/var/cache/ps");
}

/* --- errors: the message names the file and the dotted key --------------------------------- */

typedef struct {
    char name[40];
    char json[300];
    char set[64]; /* one --set, or "" */
    char want[120]; /* a substring of the message, starting with "job.json" */
} error_case;

ParameterizedTestParameters(config, errors) {
    static error_case cases[] = {
        {"unknown key, top level", "{\"seed\": 1, \"bogus\": 2}", "",
         "job.json: bogus: unknown key (known here: job_id, seed, cluster"},
        {"unknown key, nested", "{\"cluster\": {\"wrkers\": 2}}", "",
         "job.json: cluster.wrkers: unknown key (known here: servers, workers"},
        {"unknown key, in a table's init",
         "{\"tables\": [{\"name\": \"t\", \"dim\": 2, \"init\": {\"type\": \"zeros\", "
         "\"scale\": 1}}]}",
         "", "job.json: tables[0].init.scale: unknown key"},
        {"unknown key, in a layer",
         MODEL_JOB("[{\"units\": 1, \"kernel\": 3}]", "binary_crossentropy"), "",
         "job.json: model.layers[0].kernel: unknown key"},
        {"unknown key, in data", "{\"data\": {\"train\": {\"format\": \"random\", \"x\": 1}}}",
         "", "job.json: data.train.x: unknown key"},
        {"top level not an object", "[1, 2]", "", "job.json: (top level): must be an object"},
        {"section not an object", "{\"fit\": 3}", "", "job.json: fit: must be an object"},
        {"wrong type, integer", "{\"cluster\": {\"workers\": \"two\"}}", "",
         "job.json: cluster.workers: must be an integer, not \"two\""},
        {"wrong type, fraction", "{\"seed\": 1.5}", "",
         "job.json: seed: must be an integer, not 1.5"},
        {"wrong type, from --set", "{\"fit\": {\"epochs\": 5}}", "fit.epochs=abc",
         "job.json: fit.epochs: must be an integer, not \"abc\" (from --set fit.epochs=abc)"},
        {"out of range, from --set", "{}", "fit.epochs=-1",
         "job.json: fit.epochs: -1 is out of range [1, 10000000] (from --set fit.epochs=-1)"},
        {"wrong type, string", "{\"job_id\": 5}", "", "job.json: job_id: must be a string"},
        {"wrong type, bool", "{\"fit\": {\"shuffle\": 1}}", "",
         "job.json: fit.shuffle: must be true or false, not 1"},
        {"wrong type, number", "{\"optimizer\": {\"learning_rate\": \"big\"}}", "",
         "job.json: optimizer.learning_rate: must be a number"},
        {"wrong type, tables", "{\"tables\": {}}", "", "job.json: tables: must be a list"},
        {"out of range, integer", "{\"server\": {\"threads\": 0}}", "",
         "job.json: server.threads: 0 is out of range [1, 64]"},
        {"recover_timeout_ms past an hour", "{\"cluster\": {\"recover_timeout_ms\": 3600001}}",
         "", "job.json: cluster.recover_timeout_ms: 3600001 is out of range [0, 3600000]"},
        {"state_dir not a string", "{\"fit\": {\"state_dir\": 1}}", "",
         "job.json: fit.state_dir: must be a string"},
        {"fit.threads past 64", "{\"fit\": {\"threads\": 65}}", "",
         "job.json: fit.threads: 65 is out of range [0, 64]"},
        {"fit.threads not an integer", "{}", "fit.threads=1.5",
         "job.json: fit.threads: must be an integer"},
        {"busy poll below auto", "{\"server\": {\"busy_poll_us\": -2}}", "",
         "job.json: server.busy_poll_us: -2 is out of range [-1, 1e+06]"},
        {"busy poll fraction", "{\"cluster\": {\"busy_poll_us\": 2.5}}", "",
         "job.json: cluster.busy_poll_us: 2.5 is not an integer"},
        {"out of range, number", "{\"optimizer\": {\"epsilon\": 2}}", "",
         "job.json: optimizer.epsilon: 2 is out of range [0, 1]"},
        {"out of range, negative", "{\"limits\": {\"max_frame_bytes\": -1}}", "",
         "job.json: limits.max_frame_bytes: -1 is out of range [1024, 4294967295]"},
        {"out of range, table dim", "{\"tables\": [{\"name\": \"t\", \"dim\": 0}]}", "",
         "job.json: tables[0].dim: 0 is out of range [1, 1048576]"},
        {"bad enum, form", "{\"optimizer\": {\"form\": \"tf\"}}", "",
         "job.json: optimizer.form: \"tf\" is not one of: pytorch, keras"},
        {"bad enum, name", "{\"optimizer\": {\"name\": \"adam\"}}", "",
         "job.json: optimizer.name: \"adam\" is not one of: adagrad"},
        {"bad enum, init type",
         "{\"tables\": [{\"name\": \"t\", \"dim\": 1, \"init\": {\"type\": \"ones\"}}]}", "",
         "job.json: tables[0].init.type: \"ones\" is not one of: zeros, constant, uniform"},
        {"bad enum, activation", MODEL_JOB("[{\"units\": 1, \"activation\": \"gelu\"}]",
                                           "binary_crossentropy"),
         "", "job.json: model.layers[0].activation: \"gelu\" is not one of: linear, relu"},
        {"bad enum, data format", "{\"data\": {\"train\": {\"format\": \"parquet\"}}}", "",
         "job.json: data.train.format: \"parquet\" is not one of: csv, libsvm, random"},
        {"idx without labels", "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"i\"}}}",
         "", "job.json: data.train: needs \"labels\" (the IDX labels file) for format idx"},
        {"labels for csv",
         "{\"data\": {\"train\": {\"format\": \"csv\", \"path\": \"a\", \"labels\": \"b\"}}}",
         "", "job.json: data.train.labels: is for format idx only (this is csv)"},
        {"integers for libsvm",
         "{\"data\": {\"validation\": {\"format\": \"libsvm\", \"path\": \"a\", "
         "\"integers\": \"dense\"}}}",
         "", "job.json: data.validation.integers: is for format criteo only (this is libsvm)"},
        {"bad integers",
         "{\"data\": {\"train\": {\"format\": \"criteo\", \"path\": \"a\", "
         "\"integers\": \"log\"}}}",
         "", "job.json: data.train.integers: \"log\" is not one of: bucket, dense"},
        {"cache_bytes negative", "{\"data\": {\"cache_bytes\": -1}}", "",
         "job.json: data.cache_bytes: -1 is out of range [0, "},
        {"cache_bytes fraction", "{\"data\": {\"cache_bytes\": 1.5}}", "",
         "job.json: data.cache_bytes: must be an integer"},
        {"cache_dir number", "{\"data\": {\"cache_dir\": 3}}", "",
         "job.json: data.cache_dir: must be a string"},
        {"validation_split 1",
         "{\"data\": {\"train\": {\"format\": \"random\"}, \"validation_split\": 1}}", "",
         "job.json: data.validation_split: 1 is out of range [0, 1)"},
        {"validation_split negative",
         "{\"data\": {\"train\": {\"format\": \"random\"}, \"validation_split\": -0.1}}", "",
         "job.json: data.validation_split: -0.1 is out of range"},
        {"validation_split text",
         "{\"data\": {\"train\": {\"format\": \"random\"}, \"validation_split\": \"a\"}}",
         "", "job.json: data.validation_split: must be a number"},
        {"validation_split and validation",
         "{\"data\": {\"train\": {\"format\": \"random\"}, \"validation\": {\"format\": "
         "\"random\"}, \"validation_split\": 0.1}}",
         "", "job.json: data.validation_split: and data.validation are both given"},
        {"validation_split without train", "{\"data\": {\"validation_split\": 0.1}}", "",
         "job.json: data.validation_split: needs data.train to split"},
        {"bad host:port, no port", "{\"cluster\": {\"servers\": [\"a:1\", \"nohost\"]}}", "",
         "job.json: cluster.servers[1]: \"nohost\" is not HOST:PORT"},
        {"bad host:port, port range", "{\"cluster\": {\"servers\": [\"a:70000\"]}}", "",
         "job.json: cluster.servers[0]: \"a:70000\": port must be 0..65535"},
        {"bad host:port, not a string", "{\"cluster\": {\"servers\": [7]}}", "",
         "job.json: cluster.servers[0]: must be a \"host:port\" string"},
        {"no servers", "{\"cluster\": {\"servers\": []}}", "",
         "job.json: cluster.servers: needs 1..256 addresses, got 0"},
        {"keras + lr_decay", "{\"optimizer\": {\"form\": \"keras\", \"lr_decay\": 0.1}}", "",
         "job.json: optimizer.lr_decay: is PyTorch's; not available with form \"keras\""},
        {"keras + weight_decay", "{\"optimizer\": {\"form\": \"keras\", \"weight_decay\": 1}}",
         "", "job.json: optimizer.weight_decay: is PyTorch's"},
        {"keras + lr_decay in a table",
         "{\"tables\": [{\"name\": \"t\", \"dim\": 1, \"optimizer\": {\"form\": \"keras\", "
         "\"lr_decay\": 0.5}}]}",
         "", "job.json: tables[0].optimizer.lr_decay: is PyTorch's"},
        {"BCE with a last layer of 2 units",
         MODEL_JOB("[{\"units\": 4}, {\"units\": 2}]", "binary_crossentropy"), "",
         "job.json: model.layers: binary_crossentropy needs a last layer of 1 unit, got 2"},
        {"model without data.train",
         "{\"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1}], "
         "\"loss\": \"binary_crossentropy\"}}",
         "", "job.json: data.train: a job with a model needs training data"},
        {"model without loss", "{\"model\": {\"input_dim\": 2, \"layers\": [{\"units\": 1}]}}",
         "", "job.json: model: needs \"loss\""},
        {"model without layers",
         "{\"model\": {\"input_dim\": 2, \"loss\": \"binary_crossentropy\"}}",
         "", "job.json: model.layers: must be a non-empty list"},
        {"table without dim", "{\"tables\": [{\"name\": \"t\"}]}", "",
         "job.json: tables[0]: needs a \"dim\""},
        {"table defined twice",
         "{\"tables\": [{\"name\": \"t\", \"dim\": 1}, {\"name\": \"t\", \"dim\": 2}]}", "",
         "job.json: tables[1]: table \"t\" defined twice"},
        {"table clashes with a model table",
         "{\"tables\": [{\"name\": \"dense/bias\", \"dim\": 1}], \"model\": {\"input_dim\": 2,"
         " \"layers\": [{\"units\": 1}], \"loss\": \"binary_crossentropy\"},"
         " \"data\": {\"train\": {\"format\": \"random\"}}}",
         "", "job.json: model.layers: table \"dense/bias\" defined twice"},
        {"uniform maxval < minval",
         "{\"tables\": [{\"name\": \"t\", \"dim\": 1, \"init\": {\"type\": \"uniform\", "
         "\"minval\": 1, \"maxval\": 0}}]}",
         "", "job.json: tables[0].init: maxval 0 < minval 1"},
        {"csv without a path", "{\"data\": {\"train\": {\"format\": \"csv\"}}}", "",
         "job.json: data.train: needs \"path\" for format csv"},
        {"invalid JSON", "{\n  \"seed\": 1,\n  \"job_id\": ,\n  \"fit\": {}\n}", "",
         "job.json:3: invalid JSON near"},
        {"invalid JSON, line 1", "{\"seed\" 1}", "", "job.json:1: invalid JSON near"},
        {"invalid JSON, unterminated", "{\n\n\n\"job_id\": \"abc", "", "job.json:4: invalid JSON"},
        {"--set, unknown key", "{}", "bogus=1", "job.json: bogus: unknown key"},
        {"--set, out of range", "{}", "cluster.workers=0",
         "job.json: cluster.workers: 0 is out of range [1, 4096]"},
        {"--set, no =", "{}", "seed", "--set seed: expected KEY=VALUE"},
        {"--set, empty key", "{}", "=3", "--set =3: expected KEY=VALUE"},
        {"--set, index past the end", "{\"cluster\": {\"servers\": [\"a:1\"]}}",
         "cluster.servers[5]=b:2", "--set cluster.servers[5]: no element 5 in servers"},
        {"--set, index into a non-array", "{}", "cluster.servers[0]=b:2",
         "--set cluster.servers[0]: no element 0 in servers"},
        {"--set, bad index", "{\"cluster\": {\"servers\": [\"a:1\"]}}", "cluster.servers[x]=b:2",
         "--set cluster.servers[x]: bad index"},
        {"admit_after, negative", "{\"tables\": [{\"name\": \"t\", \"dim\": 1, "
         "\"admit_after\": -1}]}", "",
         "job.json: tables[0].admit_after: -1 is out of range [0, 1000000]"},
        {"admit_after, fraction", "{\"tables\": [{\"name\": \"t\", \"dim\": 1, "
         "\"admit_after\": 1.5}]}", "", "job.json: tables[0].admit_after: must be an integer"},
        {"expire_after_steps, past 2^31", "{\"tables\": [{\"name\": \"t\", \"dim\": 1, "
         "\"expire_after_steps\": 3000000000}]}", "",
         "job.json: tables[0].expire_after_steps: 3000000000 is out of range [0, 2147483647]"},
        {"expire_after_seconds, a string", "{\"tables\": [{\"name\": \"t\", \"dim\": 1, "
         "\"expire_after_seconds\": \"1h\"}]}", "",
         "job.json: tables[0].expire_after_seconds: must be an integer"},
        {"eviction, unknown policy", "{\"server\": {\"max_memory_bytes\": 1e9}, "
         "\"tables\": [{\"name\": \"t\", \"dim\": 1, \"eviction\": \"lfu\"}]}", "",
         "job.json: tables[0].eviction: \"lfu\" is not one of: none, lru"},
        {"eviction without a memory limit", "{\"tables\": [{\"name\": \"t\", \"dim\": 1, "
         "\"eviction\": \"lru\"}]}", "",
         "job.json: tables[0].eviction: acts only when a push would pass "
         "server.max_memory_bytes"},
        {"model input, bad admit_after",
         "{\"model\": {\"input\": {\"type\": \"sparse\", \"admit_after\": \"x\"}, "
         "\"layers\": [{\"units\": 1}], \"loss\": \"binary_crossentropy\"},"
         " \"data\": {\"train\": {\"format\": \"random\"}}}", "",
         "job.json: model.input.admit_after: must be an integer"},
        {"model input, lru without a limit",
         "{\"model\": {\"input\": {\"type\": \"sparse\", \"eviction\": \"lru\"}, "
         "\"layers\": [{\"units\": 1}], \"loss\": \"binary_crossentropy\"},"
         " \"data\": {\"train\": {\"format\": \"random\"}}}", "",
         "job.json: model.input.eviction: acts only when"},
        {"max_memory_bytes below 1 MiB", "{\"server\": {\"max_memory_bytes\": 1000}}", "",
         "job.json: server.max_memory_bytes: 1000 is below 1048576"},
        {"max_memory_bytes negative", "{\"server\": {\"max_memory_bytes\": -1}}", "",
         "job.json: server.max_memory_bytes: -1 is out of range [0, 1000000000000000]"},
        {"checkpoint_every_s without a dir", "{\"server\": {\"checkpoint_every_s\": 60}}", "",
         "job.json: server.checkpoint_every_s: needs server.checkpoint_dir"},
        {"checkpoint_every_s negative", "{\"server\": {\"checkpoint_dir\": \"/c\", "
         "\"checkpoint_every_s\": -1}}", "",
         "job.json: server.checkpoint_every_s: -1 is out of range [0, 86400000]"},
        {"checkpoint_every_steps without a dir", "{\"server\": {\"checkpoint_every_steps\": 5}}",
         "", "job.json: server.checkpoint_every_steps: needs server.checkpoint_dir"},
        {"checkpoint_every_steps too big", "{\"server\": {\"checkpoint_dir\": \"/c\", "
         "\"checkpoint_every_steps\": 1000000001}}", "",
         "job.json: server.checkpoint_every_steps: 1000000001 is out of range [0, 1000000000]"},
        {"checkpoint_dir, a number", "{\"server\": {\"checkpoint_dir\": 3}}", "",
         "job.json: server.checkpoint_dir: must be a string"},
        {"--set, through a number", "{\"seed\": 3}", "seed.low=1",
         "--set seed.low: \"seed\" is not an object"},
    };
    return cr_make_param_array(error_case, cases, sizeof(cases) / sizeof(cases[0]));
}

Test(config, a_key_set_twice_is_blamed_on_the_set_that_holds) {
    const char *sets[] = {"fit.epochs=-1", "fit.epochs=\"two\"", "seed=3"};
    ps_error e = {0};
    cr_assert_eq(ps_config_parse("{}", "job.json", sets, 3, cfg, &e), PS_CONFIG);
    cr_assert(strstr(e.msg, "job.json: fit.epochs: must be an integer, not \"two\" (from --set "
                            "fit.epochs=\"two\")") != NULL, "%s", e.msg);
}

ParameterizedTest(error_case *c, config, errors) {
    const char *sets[1] = {c->set};
    ps_status st = ps_config_parse(c->json, "job.json", sets, c->set[0] ? 1 : 0, cfg, &err);
    cr_assert_eq(st, PS_CONFIG, "%s: got %s (%s)", c->name, ps_status_str(st), err.msg);
    cr_assert_eq(err.code, PS_CONFIG, "%s", c->name);
    cr_assert_not_null(strstr(err.msg, c->want), "%s:\n  message: %s\n  wanted:  %s", c->name,
                       err.msg, c->want);
    if (c->want[0] == 'j') /* file errors start with the file */
        cr_assert_eq(strncmp(err.msg, "job.json", 8), 0, "%s: %s", c->name, err.msg);
}

Test(config, checkpoint_keys) {
    cr_assert_eq(ps_config_parse("{}", "job.json", NULL, 0, cfg, &err), PS_OK, "%s", err.msg);
    cr_assert_str_eq(cfg->checkpoint_dir, "");
    cr_assert_eq(cfg->checkpoint_every_s, 0u);
    cr_assert_eq(cfg->checkpoint_every_steps, 0u);
    cr_assert_eq(ps_config_parse("{\"server\": {\"checkpoint_dir\": \"/var/ps\", "
                                 "\"checkpoint_every_s\": 300, \"checkpoint_every_steps\": 50}}",
                                 "job.json", NULL, 0, cfg, &err),
                 PS_OK, "%s", err.msg);
    cr_assert_str_eq(cfg->checkpoint_dir, "/var/ps");
    cr_assert_eq(cfg->checkpoint_every_s, 300u);
    cr_assert_eq(cfg->checkpoint_every_steps, 50u);
}

/* --- --set ---------------------------------------------------------------------------------- */

Test(config, set_numbers_and_strings) {
    const char *sets[] = {"seed=7", "cluster.workers=4", "job_id=plain text", "cluster.token=\"q\"",
                          "optimizer.learning_rate=0.25", "fit.shuffle=false"};
    parse_ok("{\"seed\": 1, \"job_id\": \"x\", \"cluster\": {\"workers\": 2}}", sets, 6);
    cr_assert_eq(cfg->seed, 7);
    cr_assert_eq(cfg->num_workers, 4);
    cr_assert_str_eq(cfg->job_id, "plain text", "a value that is not JSON is a string");
    cr_assert_str_eq(cfg->token, "q", "a JSON string loses its quotes");
    cr_assert_eq(cfg->optimizer.learning_rate, 0.25, "new nested key under a new object");
    cr_assert_eq(cfg->fit.shuffle, false);
}

Test(config, set_creates_nested_objects) {
    const char *sets[] = {"data.train.format=random", "data.train.rows=77",
                          "limits.max_connections=9"};
    parse_ok("{}", sets, 3);
    cr_assert_eq(cfg->has_train, true);
    cr_assert_str_eq(cfg->train.format, "random");
    cr_assert_eq(cfg->train.rows, 77);
    cr_assert_eq(cfg->max_connections, 9);
}

Test(config, set_array_element) {
    const char *sets[] = {"cluster.servers[1]=h:1"};
    parse_ok("{\"cluster\": {\"servers\": [\"a:1\", \"b:2\", \"c:3\"]}}", sets, 1);
    cr_assert_eq(cfg->num_servers, 3);
    cr_assert_str_eq(cfg->servers[0], "a:1");
    cr_assert_str_eq(cfg->servers[1], "h:1");
    cr_assert_str_eq(cfg->servers[2], "c:3");
}

Test(config, set_inside_an_array_element) {
    const char *sets[] = {"tables[1].dim=9", "tables[0].init.type=constant",
                          "tables[0].init.value=2.5"};
    parse_ok("{\"tables\": [{\"name\": \"a\", \"dim\": 1}, {\"name\": \"b\", \"dim\": 2}]}", sets,
             3);
    cr_assert_eq(table("b")->dim, 9);
    cr_assert_eq(table("a")->init.kind, PS_INIT_CONSTANT);
    cr_assert_eq(table("a")->init.a, 2.5);
}

Test(config, set_applies_in_order_and_wins) {
    const char *sets[] = {"seed=1", "seed=2", "cluster={\"servers\": 2}"};
    parse_ok("{\"seed\": 9, \"cluster\": {\"workers\": 5}}", sets, 3);
    cr_assert_eq(cfg->seed, 2);
    cr_assert_eq(cfg->num_servers, 2, "a JSON object value replaces the whole section");
    cr_assert_eq(cfg->num_workers, 1);
}

/* --- host:port ------------------------------------------------------------------------------ */

typedef struct {
    char in[48];
    int ok;
    char host[32];
    uint16_t port;
} hostport_case;

ParameterizedTestParameters(config, hostport) {
    static hostport_case cases[] = {
        {"localhost:80", 1, "localhost", 80},
        {"10.1.2.3:65535", 1, "10.1.2.3", 65535},
        {"h:0", 1, "h", 0},
        {"[::1]:80", 1, "::1", 80},
        {"[fe80::1%eth0]:7000", 1, "fe80::1%eth0", 7000},
        {"nohost", 0, "", 0},
        {":80", 0, "", 0},
        {"h:", 0, "", 0},
        {"h:abc", 0, "", 0},
        {"h:80x", 0, "", 0},
        {"h:65536", 0, "", 0},
        {"h:-1", 0, "", 0},
        {"[]:80", 0, "", 0},
        {"::1:80", 0, "", 0},
        {"fe80::1:7000", 0, "", 0},
        {"a-very-long-host-name-that-does-not-fit:1", 0, "", 0},
    };
    return cr_make_param_array(hostport_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(hostport_case *c, config, hostport) {
    char host[32];
    uint16_t port = 12345;
    ps_status st = ps_parse_hostport(c->in, host, sizeof(host), &port, &err);
    if (c->ok) {
        cr_assert_eq(st, PS_OK, "%s: %s", c->in, err.msg);
        cr_assert_str_eq(host, c->host, "%s", c->in);
        cr_assert_eq(port, c->port, "%s", c->in);
    } else {
        cr_assert_eq(st, PS_CONFIG, "%s: accepted as %s port %u", c->in, host, port);
        cr_assert_not_null(strstr(err.msg, c->in), "%s: message does not quote it: %s", c->in,
                           err.msg);
    }
}

/* --- files ---------------------------------------------------------------------------------- */

Test(config, load_missing_file) {
    const char *path = "/nonexistent/dir/job.json";
    ps_status st = ps_config_load(path, NULL, 0, cfg, &err);
    cr_assert(st == PS_CONFIG || st == PS_IO, "got %s", ps_status_str(st));
    cr_assert_not_null(strstr(err.msg, path), "message does not name the file: %s", err.msg);
    cr_assert_not_null(strstr(err.msg, "No such file"), "message lacks the reason: %s", err.msg);
}

static void write_file(char *path, const char *text) {
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
}

Test(config, load_file_with_sets) {
    char path[] = "/tmp/ps_test_config_XXXXXX";
    write_file(path, full_job);
    const char *sets[] = {"fit.epochs=11"};
    ps_status st = ps_config_load(path, sets, 1, cfg, &err);
    cr_assert_eq(st, PS_OK, "%s", err.msg);
    cr_assert_str_eq(cfg->file, path);
    cr_assert_str_eq(cfg->job_id, "ctr-full");
    cr_assert_eq(cfg->fit.epochs, 11);
    cr_assert_eq(cfg->num_tables, 11);
    unlink(path);
}

Test(config, load_file_error_names_the_file) {
    char path[] = "/tmp/ps_test_config_XXXXXX";
    write_file(path, "{\n\"server\": {\"threads\": 100}\n}\n");
    ps_status st = ps_config_load(path, NULL, 0, cfg, &err);
    unlink(path);
    cr_assert_eq(st, PS_CONFIG);
    char want[128];
    snprintf(want, sizeof(want), "%s: server.threads: 100 is out of range", path);
    cr_assert_not_null(strstr(err.msg, want), "message: %s", err.msg);
}

/* A file larger than the 8 KiB first buffer is read whole. */
Test(config, load_large_file) {
    char path[] = "/tmp/ps_test_config_XXXXXX";
    size_t pad = 20000;
    char *text = malloc(pad + 64);
    cr_assert_not_null(text);
    memset(text, ' ', pad);
    strcpy(text + pad, "{\"job_id\": \"padded\"}");
    write_file(path, text);
    free(text);
    ps_status st = ps_config_load(path, NULL, 0, cfg, &err);
    unlink(path);
    cr_assert_eq(st, PS_OK, "%s", err.msg);
    cr_assert_str_eq(cfg->job_id, "padded");
}

Test(config, table_memory_keys) {
    parse_ok("{\"server\": {\"max_memory_bytes\": 2000000},"
             " \"tables\": [{\"name\": \"a\", \"dim\": 4, \"admit_after\": 3,"
             " \"expire_after_steps\": 100, \"expire_after_seconds\": 60,"
             " \"eviction\": \"lru\"}, {\"name\": \"b\", \"dim\": 2}]}",
             NULL, 0);
    cr_assert_eq(cfg->server_max_memory_bytes, 2000000);
    const ps_table_spec *a = table("a"), *b = table("b");
    cr_assert_eq(a->mem.admit_after, 3);
    cr_assert_eq(a->mem.expire_after_steps, 100);
    cr_assert_eq(a->mem.expire_after_seconds, 60);
    cr_assert_eq(a->mem.eviction, PS_EVICT_LRU);
    /* defaults: everything off */
    cr_assert_eq(b->mem.admit_after, 0);
    cr_assert_eq(b->mem.expire_after_steps, 0);
    cr_assert_eq(b->mem.expire_after_seconds, 0);
    cr_assert_eq(b->mem.eviction, PS_EVICT_NONE);
    parse_ok("{}", NULL, 0);
    cr_assert_eq(cfg->server_max_memory_bytes, 0);
    /* a model's sparse input: the keys sit in model.input and go to its first kernel only */
    parse_ok("{\"model\": {\"input\": {\"type\": \"sparse\", \"admit_after\": 4,"
             " \"expire_after_steps\": 9}, \"layers\": [{\"units\": 2}, {\"units\": 1}],"
             " \"loss\": \"binary_crossentropy\"}, \"data\": {\"train\": {\"format\": \"random\"}}}",
             NULL, 0);
    cr_assert_eq(table("dense/kernel")->mem.admit_after, 4);
    cr_assert_eq(table("dense/kernel")->mem.expire_after_steps, 9);
    cr_assert_eq(table("dense/bias")->mem.admit_after, 0);
    cr_assert_eq(table("dense_1/kernel")->mem.admit_after, 0);
}

Test(config, table_lookup) {
    parse_ok("{\"tables\": [{\"name\": \"a\", \"dim\": 1}, {\"name\": \"b\", \"dim\": 2}]}", NULL,
             0);
    cr_assert_eq(ps_config_table(cfg, "a"), 0);
    cr_assert_eq(ps_config_table(cfg, "b"), 1);
    cr_assert_eq(ps_config_table(cfg, "c"), -1);
    cr_assert_eq(ps_config_table(cfg, ""), -1);
}

/* --- the job files shipped in the repository ----------------------------------------------------- */

Test(config, shipped_job_files_load) {
    static const char *const files[] = {"examples/keras_seed.json", "deploy/job.json"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", PS_SOURCE_DIR, files[i]);
        static ps_job_config job;
        err = (ps_error){0};
        cr_assert_eq(ps_config_load(path, NULL, 0, &job, &err), PS_OK, "%s", err.msg);
        cr_assert(job.has_model, "%s: no model", files[i]);
        cr_assert_eq(job.num_workers, 2, "%s: the seed job runs 2 workers", files[i]);
        cr_assert_eq(job.optimizer.form, PS_ADAGRAD_KERAS, "%s: Keras form", files[i]);
    }
}

/* The examples of the README (examples/make_data.sh writes their data; test_examples runs them):
 * they load, and are the jobs the README describes: 1 server + 2 workers, the model's shape. */
Test(config, example_job_files_load) {
    static const struct {
        const char *file, *format;
        bool sparse;
        size_t layers;
        uint32_t units[3];
    } ex[] = {{"examples/ctr.json", "libsvm", true, 3, {16, 64, 1}},
              {"examples/ctr_logreg.json", "libsvm", true, 1, {1}},
              {"examples/criteo.json", "criteo", true, 3, {16, 64, 1}},
              {"examples/fashion_mnist.json", "idx", false, 2, {256, 10}}};
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", PS_SOURCE_DIR, ex[i].file);
        static ps_job_config job;
        err = (ps_error){0};
        cr_assert_eq(ps_config_load(path, NULL, 0, &job, &err), PS_OK, "%s", err.msg);
        cr_assert_eq(job.num_servers, 1, "%s", ex[i].file);
        cr_assert_eq(job.num_workers, 2, "%s", ex[i].file);
        cr_assert_eq(job.model.sparse, ex[i].sparse, "%s", ex[i].file);
        cr_assert_eq(job.model.num_layers, ex[i].layers, "%s", ex[i].file);
        for (size_t l = 0; l < ex[i].layers; l++)
            cr_assert_eq(job.model.units[l], ex[i].units[l], "%s layer %zu", ex[i].file, l);
        cr_assert_str_eq(job.train.format, ex[i].format, "%s", ex[i].file);
        cr_assert(job.has_validation, "%s: held-out data", ex[i].file);
    }
}

/* --- shared command-line options (common/cli.c) ----------------------------------------------- */

static ps_cli_result cli_run(ps_cli *c, int argc, char **argv, int *code) {
    ps_cli_init(c, "prog", "usage\n", "--rank");
    ps_cli_result r = PS_CLI_TAKEN;
    for (int i = 1; i < argc && r != PS_CLI_EXIT; i++) r = ps_cli_arg(c, argc, argv, &i, code);
    return r;
}

Test(config, cli_takes_shared_options) {
    char *argv[] = {"prog", "--config", "j.json", "--set", "a.b=1", "--rank", "3", "--set",
                    "c=2", "--verbose"};
    ps_cli c;
    int code = -1;
    cr_assert_eq(cli_run(&c, 10, argv, &code), PS_CLI_TAKEN);
    cr_assert_str_eq(c.config, "j.json");
    cr_assert_eq(c.n_sets, 2);
    cr_assert_str_eq(c.sets[1], "c=2");
    cr_assert_eq(c.index, 3);
    cr_assert(c.verbose);
}

Test(config, cli_leaves_other_options_and_rejects_bad_values) {
    ps_cli c;
    int code = -1, i = 1;
    ps_cli_init(&c, "prog", "usage\n", "--rank");
    char *other[] = {"prog", "--events"};
    cr_assert_eq(ps_cli_arg(&c, 2, other, &i, &code), PS_CLI_OTHER);
    char *bad_rank[] = {"prog", "--rank", "-1"}, *big_rank[] = {"prog", "--rank", "4294967296"};
    cr_assert_eq(cli_run(&c, 3, bad_rank, &code), PS_CLI_EXIT);
    cr_assert_eq(code, 2);
    cr_assert_eq(cli_run(&c, 3, big_rank, &code), PS_CLI_EXIT, "a rank past 2^32 - 1 wraps");
    char *no_value[] = {"prog", "--config"};
    cr_assert_eq(cli_run(&c, 2, no_value, &code), PS_CLI_EXIT);
    cr_assert_eq(code, 2);
    char *help[] = {"prog", "-h"};
    cr_assert_eq(cli_run(&c, 2, help, &code), PS_CLI_EXIT);
    cr_assert_eq(code, 0);
    ps_job_config job;
    char *no_rank[] = {"prog", "--config", "x.json"};
    cr_assert_eq(cli_run(&c, 3, no_rank, &code), PS_CLI_TAKEN);
    cr_assert_not(ps_cli_load(&c, &job), "loads without --rank");
}

/* epsilon 0 with a zero initial accumulator divides 0 by 0 on a zero gradient */
Test(config, zero_epsilon_that_can_divide_by_zero_is_refused) {
    ps_job_config c;
    ps_error e = {0};
    cr_assert_eq(ps_config_parse("{\"optimizer\": {\"epsilon\": 0}}", "j.json", NULL, 0, &c, &e),
                 PS_CONFIG);
    cr_assert(strstr(e.msg, "j.json: optimizer.epsilon: is 0") != NULL, "%s", e.msg);
    cr_assert_eq(ps_config_parse("{\"tables\": [{\"name\": \"t\", \"dim\": 1, \"optimizer\":"
                                 " {\"form\": \"keras\", \"epsilon\": 1e-50,"
                                 " \"initial_accumulator_value\": 0}}]}",
                                 "j.json", NULL, 0, &c, &e),
                 PS_CONFIG);
    cr_assert(strstr(e.msg, "tables[0].optimizer.epsilon") != NULL, "%s", e.msg);
    /* a positive G0 keeps the denominator positive */
    cr_assert_eq(ps_config_parse("{\"optimizer\": {\"epsilon\": 0,"
                                 " \"initial_accumulator_value\": 0.1}}", "j.json", NULL, 0, &c, &e),
                 PS_OK, "%s", e.msg);
}

/* A frame limit below one row would make replies no peer accepts. */
Test(config, a_frame_limit_below_one_row_is_refused) {
    ps_job_config c;
    ps_error e = {0};
    cr_assert_eq(ps_config_parse("{\"limits\": {\"max_frame_bytes\": 2048},"
                                 " \"tables\": [{\"name\": \"wide\", \"dim\": 200}]}",
                                 "j.json", NULL, 0, &c, &e),
                 PS_CONFIG);
    cr_assert(strstr(e.msg, "j.json: limits.max_frame_bytes: 2048 bytes cannot carry one row of "
                            "table \"wide\"") != NULL, "%s", e.msg);
    cr_assert_eq(ps_config_parse("{\"limits\": {\"max_frame_bytes\": 4096},"
                                 " \"tables\": [{\"name\": \"wide\", \"dim\": 200}]}",
                                 "j.json", NULL, 0, &c, &e),
                 PS_OK, "%s", e.msg);
}

/* The token comes from the job file, cluster.token_file or PS_CLUSTER_TOKEN, never argv. */
Test(config, the_token_comes_from_a_file_or_the_environment) {
    char dir[64], tok[128], job_path[128];
    snprintf(dir, sizeof(dir), "/tmp/ps_tok_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(tok, sizeof(tok), "%s/token", dir);
    snprintf(job_path, sizeof(job_path), "%s/job.json", dir);
    FILE *f = fopen(tok, "w");
    fputs("from-the-file\n", f);
    fclose(f);
    char json[512];
    snprintf(json, sizeof(json), "{\"cluster\": {\"token_file\": \"%s\"}}", tok);
    f = fopen(job_path, "w");
    fputs(json, f);
    fclose(f);
    ps_job_config job;
    ps_error e = {0};
    cr_assert_eq(ps_config_load(job_path, NULL, 0, &job, &e), PS_OK, "%s", e.msg);
    cr_assert_str_eq(job.token, "from-the-file");
    /* the environment wins, through the programs' shared loader */
    ps_cli c;
    int code;
    char *argv[] = {"prog", "--config", job_path, "--rank", "0"};
    cr_assert_eq(cli_run(&c, 5, argv, &code), PS_CLI_TAKEN);
    setenv("PS_CLUSTER_TOKEN", "from-the-environment", 1);
    cr_assert(ps_cli_load(&c, &job));
    cr_assert_str_eq(job.token, "from-the-environment");
    unsetenv("PS_CLUSTER_TOKEN");
    /* never from argv */
    char *on_argv[] = {"prog", "--config", job_path, "--rank", "0", "--set", "cluster.token=x"};
    cr_assert_eq(cli_run(&c, 7, on_argv, &code), PS_CLI_TAKEN);
    cr_assert_not(ps_cli_load(&c, &job));
    /* a missing file and both sources are errors naming the key */
    cr_assert_eq(ps_config_parse("{\"cluster\": {\"token_file\": \"/nonexistent/t\"}}", "j.json",
                                 NULL, 0, &job, &e), PS_CONFIG);
    cr_assert(strstr(e.msg, "j.json: cluster.token_file: cannot read /nonexistent/t"), "%s",
              e.msg);
    snprintf(json, sizeof(json), "{\"cluster\": {\"token\": \"a\", \"token_file\": \"%s\"}}", tok);
    cr_assert_eq(ps_config_parse(json, "j.json", NULL, 0, &job, &e), PS_CONFIG);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
