/* job_end.c - see job_end.h. The export runs on its own thread with its own client (its own libuv
 * loop): the shard's loop keeps serving it, including this shard's Scans. */
#include "job_end.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "client.h"
#include "export.h"
#include "progress.h"

struct ps_job_end {
    const ps_job_config *job;
    FILE *out;
    ps_progress *sums;   /* (fit.epochs) the workers' figures so far */
    uint32_t *heard;     /* (fit.epochs) ranks that reported the epoch */
    uint8_t *reported;   /* (fit.epochs, W) */
    uint32_t shown;      /* epochs printed */
    char failure[256]; /* the deadline's verdict, sent with EndJob; "": the job ended well */
    pthread_t thread;
    bool started;
    ps_status st;
    ps_error err;
};

static void job_end_free(ps_job_end *je) {
    free(je->sums), free(je->heard), free(je->reported);
    free(je);
}

ps_job_end *ps_job_end_new(const ps_job_config *job, FILE *out) {
    ps_job_end *je = calloc(1, sizeof(*je));
    if (je == NULL) return NULL;
    const size_t E = job->fit.epochs ? job->fit.epochs : 1;
    je->job = job, je->out = out;
    je->sums = calloc(E, sizeof(*je->sums));
    je->heard = calloc(E, sizeof(*je->heard));
    je->reported = calloc(E * job->num_workers, 1);
    if (je->sums == NULL || je->heard == NULL || je->reported == NULL) {
        job_end_free(je);
        return NULL;
    }
    return je;
}

void ps_job_end_epoch(void *ud, uint32_t rank, const ps_EpochStats *s) {
    ps_job_end *je = ud;
    const uint32_t E = je->job->fit.epochs, W = je->job->num_workers;
    if (s->epoch == 0 || s->epoch > E || rank >= W) return;
    uint8_t *seen = &je->reported[(size_t)(s->epoch - 1) * W + rank];
    if (*seen) return;
    *seen = 1;
    ps_progress *p = &je->sums[s->epoch - 1];
    p->epoch = s->epoch, p->epochs = E;
    p->steps += s->steps, p->step += s->steps;
    p->samples += s->samples, p->loss_sum += s->loss_sum, p->correct += s->correct;
    if (s->seconds > p->seconds) p->seconds = s->seconds;
    p->has_val |= s->has_val;
    p->val_samples += s->val_samples, p->val_loss_sum += s->val_loss_sum;
    p->val_correct += s->val_correct;
    je->heard[s->epoch - 1]++;
    while (je->shown < E && je->heard[je->shown] == W) {
        if (je->job->fit.verbose > 0) {
            char line[512];
            ps_progress_format(&je->sums[je->shown], true, line, sizeof(line));
            fprintf(je->out, "Epoch %u/%u\n%s\n", je->shown + 1, E, line);
            fflush(je->out);
        }
        je->shown++;
    }
}

static void *run_export(void *arg) {
    ps_job_end *je = arg;
    const ps_job_config *job = je->job;
    ps_client_options o = {.job = job, .admin = true, .log = {.level = PS_LOG_INFO}};
    snprintf(o.log.prefix, sizeof(o.log.prefix), "export");
    ps_client *c = NULL;
    ps_export_stats stats = {0};
    ps_status st = ps_client_create(&o, &c, &je->err);
    if (st == PS_OK) {
        st = ps_export(c, job, job->fit.export_to, &stats, &je->err);
        if (st == PS_OK)
            printf("Exported %zu tables, %llu rows (%.1f MB) to %s\n", job->num_tables,
                   (unsigned long long)stats.rows, (double)stats.bytes / 1e6, job->fit.export_to);
        else
            ps_error_prefix(&je->err, st, "fit.export_to %s", job->fit.export_to);
        fflush(stdout);
        /* whatever the export's fate the job is over: every shard stops (this one exits 1) */
        ps_error end_err = {0};
        ps_status end_st = ps_client_fail_job(c, je->failure[0] ? je->failure : NULL, &end_err);
        if (end_st != PS_OK && end_st != PS_CLOSED && st == PS_OK) /* CLOSED: already stopping */
            st = ps_error_set(&je->err, end_st, "EndJob: %s", end_err.msg);
    }
    ps_client_destroy(c);
    je->st = st;
    return NULL;
}

void ps_job_end_start(ps_server *srv, void *ud) {
    (void)srv;
    ps_job_end *je = ud;
    if (je->started) return;
    if (pthread_create(&je->thread, NULL, run_export, je) != 0) {
        je->st = ps_error_set(&je->err, PS_IO, "fit.export_to: cannot start the export thread");
        return;
    }
    je->started = true;
}

void ps_job_end_deadline(ps_server *srv, void *ud, const char *why) {
    ps_job_end *je = ud;
    if (je->started) return; /* every worker had finished: that export carries on */
    snprintf(je->failure, sizeof(je->failure), "%s", why);
    ps_job_end_start(srv, ud);
}

ps_status ps_job_end_join(ps_job_end *je, ps_error *err) {
    if (je == NULL) return PS_OK;
    if (je->started) pthread_join(je->thread, NULL);
    ps_status st = je->st;
    if (st != PS_OK) ps_error_set(err, st, "%s", je->err.msg);
    job_end_free(je);
    return st;
}
