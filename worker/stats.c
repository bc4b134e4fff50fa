/* stats.c - per-table server figures as a text table and as a JSON line. */
#include "stats.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static void line(FILE *f, const char *shard, const char *name, const ps_table_stats *t) {
    char per[32] = "-";
    if (t->rows > 0) snprintf(per, sizeof(per), "%.1f", (double)t->bytes / (double)t->rows);
    fprintf(f, "%-6s %-20s %12llu %14llu %10s %12llu %10llu %10llu\n", shard, name,
            (unsigned long long)t->rows, (unsigned long long)t->bytes, per,
            (unsigned long long)t->admitted, (unsigned long long)t->pending,
            (unsigned long long)t->evicted);
}

void ps_stats_print(FILE *f, const ps_job_config *job, const ps_table_stats *st) {
    fprintf(f, "%-6s %-20s %12s %14s %10s %12s %10s %10s\n", "shard", "table", "rows", "bytes",
            "bytes/row", "admitted", "pending", "evicted");
    ps_table_stats total = {0};
    for (uint32_t s = 0; s < job->num_servers; s++) {
        char shard[16];
        snprintf(shard, sizeof(shard), "%u", s);
        for (size_t t = 0; t < job->num_tables; t++) {
            const ps_table_stats *x = &st[s * job->num_tables + t];
            line(f, shard, job->tables[t].name, x);
            total.rows += x->rows, total.bytes += x->bytes, total.admitted += x->admitted;
            total.pending += x->pending, total.evicted += x->evicted;
        }
    }
    line(f, "total", "", &total);
}

void ps_stats_json(FILE *f, const ps_job_config *job, const ps_table_stats *st, uint32_t epoch) {
    cJSON *root = cJSON_CreateObject(), *arr = NULL;
    if (root == NULL || cJSON_AddNumberToObject(root, "epoch", epoch) == NULL ||
        (arr = cJSON_AddArrayToObject(root, "server_stats")) == NULL)
        goto done;
    for (uint32_t s = 0; s < job->num_servers; s++) {
        for (size_t t = 0; t < job->num_tables; t++) {
            const ps_table_stats *x = &st[s * job->num_tables + t];
            cJSON *o = cJSON_CreateObject();
            if (o == NULL || !cJSON_AddItemToArray(arr, o)) {
                cJSON_Delete(o);
                goto done;
            }
            cJSON_AddNumberToObject(o, "shard", s);
            cJSON_AddStringToObject(o, "table", job->tables[t].name);
            cJSON_AddNumberToObject(o, "rows", (double)x->rows);
            cJSON_AddNumberToObject(o, "bytes", (double)x->bytes);
            cJSON_AddNumberToObject(o, "admitted", (double)x->admitted);
            cJSON_AddNumberToObject(o, "pending", (double)x->pending);
            cJSON_AddNumberToObject(o, "evicted", (double)x->evicted);
        }
    }
    char *text = cJSON_PrintUnformatted(root);
    if (text != NULL) fprintf(f, "%s\n", text);
    free(text);
done:
    cJSON_Delete(root);
}
