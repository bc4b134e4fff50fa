/* progress.c - Keras-compatible progress text. */
#include "progress.h"

#include <math.h>
#include <string.h>

static void fmt_per_step(char *buf, size_t n, double seconds, uint64_t steps) {
    double per = steps ? seconds / (double)steps : 0.0;
    if (per >= 1.0)
        snprintf(buf, n, "%.0fs/step", per);
    else if (per >= 1e-3)
        snprintf(buf, n, "%.0fms/step", per * 1e3);
    else
        snprintf(buf, n, "%.0fus/step", per * 1e6);
}

void ps_progress_format(const ps_progress *p, bool done, char *buf, size_t n) {
    char bar[32], count[48], timing[48];
    const int width = 30;
    if (p->steps > 0) {
        int digits = snprintf(NULL, 0, "%llu", (unsigned long long)p->steps);
        snprintf(count, sizeof(count), "%*llu/%llu", digits, (unsigned long long)p->step,
                 (unsigned long long)p->steps);
        int filled = (int)((double)width * (double)p->step / (double)p->steps);
        if (filled > width) filled = width;
        for (int i = 0; i < width; i++)
            bar[i] = i < filled - (p->step < p->steps ? 1 : 0) ? '=' : '.';
        if (p->step < p->steps && filled > 0) bar[filled - 1] = '>';
        bar[width] = '\0';
    } else {
        snprintf(count, sizeof(count), "%llu/Unknown", (unsigned long long)p->step);
        memset(bar, '.', (size_t)width);
        bar[width] = '\0';
    }
    if (done) {
        char per[24];
        fmt_per_step(per, sizeof(per), p->seconds, p->step);
        snprintf(timing, sizeof(timing), "%.0fs %s", p->seconds, per);
    } else {
        double eta = p->steps > p->step && p->step > 0
                         ? p->seconds / (double)p->step * (double)(p->steps - p->step)
                         : 0.0;
        snprintf(timing, sizeof(timing), "ETA: %.0fs", eta);
    }
    double loss = p->samples ? p->loss_sum / (double)p->samples : 0.0;
    double acc = p->samples ? (double)p->correct / (double)p->samples : 0.0;
    int len = snprintf(buf, n, "%s [%s] - %s - loss: %.4f - accuracy: %.4f", count, bar, timing,
                       loss, acc);
    if (p->has_auc && len > 0 && (size_t)len < n)
        len += snprintf(buf + len, n - (size_t)len, " - auc: %.4f", p->auc);
    if (p->has_val && len > 0 && (size_t)len < n) {
        double vl = p->val_samples ? p->val_loss_sum / (double)p->val_samples : 0.0;
        double va = p->val_samples ? (double)p->val_correct / (double)p->val_samples : 0.0;
        len += snprintf(buf + len, n - (size_t)len, " - val_loss: %.4f - val_accuracy: %.4f", vl,
                        va);
        if (p->has_val_auc && len > 0 && (size_t)len < n)
            snprintf(buf + len, n - (size_t)len, " - val_auc: %.4f", p->val_auc);
    }
}

void ps_progress_format_times(const ps_step_times *t, uint64_t steps, char *buf, size_t n) {
    const double parts[5] = {t->data, t->wait, t->compute, t->send, t->other};
    static const char *const names[5] = {"data", "pull wait", "compute", "push", "other"};
    const double per = steps ? 1e3 / (double)steps : 0.0; /* seconds -> ms/step */
    double total = 0;
    for (int i = 0; i < 5; i++) total += parts[i];
    int len = snprintf(buf, n, "time/step: %.3fms =", total * per);
    for (int i = 0; i < 5 && len > 0 && (size_t)len < n; i++)
        len += snprintf(buf + len, n - (size_t)len, "%s %s %.3fms (%.0f%%)", i ? " +" : "",
                        names[i], parts[i] * per, total > 0 ? 100.0 * parts[i] / total : 0.0);
    if (t->prep > 0 && len > 0 && (size_t)len < n)
        len += snprintf(buf + len, n - (size_t)len, "; prep thread %.3fms", t->prep * per);
    if (t->links > 0 && len > 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, "; shared memory: %u of %u links", t->shm_links,
                 t->links);
}

/* ", \"key\": v" with NaN as null (JSON has no NaN). */
static void put_number(FILE *f, const char *key, double v) {
    if (isnan(v))
        fprintf(f, ", \"%s\": null", key);
    else
        fprintf(f, ", \"%s\": %.10g", key, v);
}

bool ps_progress_append_json(const char *path, const ps_progress *p) {
    FILE *f = fopen(path, "a");
    if (f == NULL) return false;
    double loss = p->samples ? p->loss_sum / (double)p->samples : 0.0;
    double acc = p->samples ? (double)p->correct / (double)p->samples : 0.0;
    fprintf(f, "{\"epoch\": %u, \"loss\": %.10g, \"accuracy\": %.10g", p->epoch, loss, acc);
    if (p->has_logloss)
        put_number(f, "logloss", p->samples ? p->logloss_sum / (double)p->samples : 0.0);
    if (p->has_auc) put_number(f, "auc", p->auc);
    if (p->has_val) {
        double vl = p->val_samples ? p->val_loss_sum / (double)p->val_samples : 0.0;
        double va = p->val_samples ? (double)p->val_correct / (double)p->val_samples : 0.0;
        fprintf(f, ", \"val_loss\": %.10g, \"val_accuracy\": %.10g", vl, va);
        if (p->has_val_auc) put_number(f, "val_auc", p->val_auc);
        if (p->has_val_logloss)
            put_number(f, "val_logloss",
                       p->val_samples ? p->val_logloss_sum / (double)p->val_samples : 0.0);
    }
    fprintf(f, ", \"samples\": %llu, \"samples_per_sec\": %.1f, \"seconds\": %.4f}\n",
            (unsigned long long)p->samples,
            p->seconds > 0 ? (double)p->samples / p->seconds : 0.0, p->seconds);
    return fclose(f) == 0;
}
