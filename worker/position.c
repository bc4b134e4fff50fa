/* position.c - see position.h. */
#include "position.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

ps_status ps_position_path(char *out, size_t n, const char *dir, uint32_t rank, ps_error *err) {
    const int len = snprintf(out, n, "%s/rank-%u.pos", dir, rank);
    if (len < 0 || (size_t)len >= n)
        return ps_error_set(err, PS_CONFIG, "fit.state_dir \"%s\": path too long", dir);
    return PS_OK;
}

ps_status ps_position_load(const char *path, const char *job_id, uint32_t rank, ps_position *pos,
                           bool *found, ps_error *err) {
    *found = false;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT) return PS_OK;
        return ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
    }
    char line[256], job[72];
    unsigned version, r, epoch;
    uint64_t step, clock, seq;
    char tail;
    const bool got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    if (!got || sscanf(line,
                       "ps-position %u job=%71s rank=%u epoch=%u step=%" SCNu64 " clock=%" SCNu64
                       " seq=%" SCNu64 "%c",
                       &version, job, &r, &epoch, &step, &clock, &seq, &tail) != 8 ||
        tail != '\n' || version != 1)
        return ps_error_set(err, PS_DATA, "%s: not a worker position (ps-position 1 ...)", path);
    if (strcmp(job, job_id) != 0 || r != rank)
        return ps_error_set(err, PS_DATA,
                            "%s: the position of job \"%s\" rank %u, this is job \"%s\" rank %u "
                            "(fit.state_dir is per job)",
                            path, job, r, job_id, rank);
    *pos = (ps_position){.epoch = epoch, .step = step, .clock = clock, .seq = seq};
    *found = true;
    return PS_OK;
}

ps_status ps_position_save(const char *path, const char *job_id, uint32_t rank,
                           const ps_position *pos, ps_error *err) {
    char dir[1100], tmp[1100];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) *slash = '\0';
    if (slash != NULL && mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ps_error_set(err, PS_IO, "%s: %s", dir, strerror(errno));
    const int len = snprintf(tmp, sizeof(tmp), "%s/.rank-%u.pos.tmp", slash ? dir : ".", rank);
    if (len < 0 || (size_t)len >= sizeof(tmp))
        return ps_error_set(err, PS_IO, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) return ps_error_set(err, PS_IO, "%s: %s", tmp, strerror(errno));
    const int w = fprintf(f,
                          "ps-position 1 job=%s rank=%u epoch=%u step=%" PRIu64 " clock=%" PRIu64
                          " seq=%" PRIu64 "\n",
                          job_id, rank, pos->epoch, pos->step, pos->clock, pos->seq);
    const bool ok = w > 0 && fclose(f) == 0;
    if (!ok) {
        if (w <= 0) fclose(f);
        remove(tmp);
        return ps_error_set(err, PS_IO, "%s: write failed", tmp);
    }
    if (rename(tmp, path) != 0) {
        const int e = errno;
        remove(tmp);
        return ps_error_set(err, PS_IO, "%s: %s", path, strerror(e));
    }
    return PS_OK;
}
