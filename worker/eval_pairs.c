/* eval_pairs.c - the pairs file of one worker's evaluation pass (layout in eval_pairs.h). */
#include "eval_pairs.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char magic[8] = {'P', 'S', 'P', 'A', 'I', 'R', 'S', '1'};
#define HEADER_BYTES 16

ps_status ps_eval_pairs_path(char *buf, size_t n, const char *dir, uint32_t epoch, uint32_t rank,
                             ps_error *err) {
    int len = snprintf(buf, n, "%s/epoch-%u.rank-%u.pairs", dir, epoch, rank);
    if (len < 0 || (size_t)len >= n)
        return ps_error_set(err, PS_TOO_LARGE, "pairs directory \"%s\": path longer than %zu",
                            dir, n - 1);
    return PS_OK;
}

ps_status ps_eval_pairs_write(const char *path, const ps_eval_pair *pairs, size_t n,
                              ps_error *err) {
    char tmp[4096 + 8];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return ps_error_set(err, PS_TOO_LARGE, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) return ps_error_set(err, PS_IO, "%s: %s", tmp, strerror(errno));
    const uint64_t count = n;
    bool ok = fwrite(magic, 1, sizeof(magic), f) == sizeof(magic) &&
              fwrite(&count, sizeof(count), 1, f) == 1 &&
              (n == 0 || fwrite(pairs, sizeof(*pairs), n, f) == n);
    int saved = errno;
    if (fclose(f) != 0 && ok) ok = false, saved = errno;
    if (!ok) {
        remove(tmp);
        return ps_error_set(err, PS_IO, "%s: %s", tmp, strerror(saved));
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        remove(tmp);
        return ps_error_set(err, PS_IO, "%s: rename from %s: %s", path, tmp, strerror(saved));
    }
    return PS_OK;
}

ps_status ps_eval_pairs_read(const char *path, uint64_t expect, ps_eval_pair **buf, size_t *len,
                             size_t *cap, ps_error *err) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
    ps_status st = PS_OK;
    char head[HEADER_BYTES];
    uint64_t n;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        st = ps_error_set(err, PS_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (fread(head, 1, sizeof(head), f) != sizeof(head) || memcmp(head, magic, 8) != 0) {
        st = ps_error_set(err, PS_DATA, "%s: not a pairs file (no \"PSPAIRS1\" header)", path);
        goto done;
    }
    memcpy(&n, head + 8, sizeof(n));
    if (n != expect || n > PS_EVAL_PAIRS_MAX) {
        st = ps_error_set(err, PS_DATA, "%s: holds %llu pairs, the worker announced %llu", path,
                          (unsigned long long)n, (unsigned long long)expect);
        goto done;
    }
    if ((uint64_t)sb.st_size != HEADER_BYTES + n * sizeof(ps_eval_pair)) {
        st = ps_error_set(err, PS_DATA, "%s: %lld bytes, want %llu for %llu pairs", path,
                          (long long)sb.st_size,
                          (unsigned long long)(HEADER_BYTES + n * sizeof(ps_eval_pair)),
                          (unsigned long long)n);
        goto done;
    }
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n) c *= 2;
        ps_eval_pair *p = realloc(*buf, c * sizeof(*p));
        if (p == NULL) {
            st = ps_error_set(err, PS_NOMEM, "%s: %llu pairs: out of memory", path,
                              (unsigned long long)n);
            goto done;
        }
        *buf = p, *cap = c;
    }
    if (n > 0 && fread(*buf + *len, sizeof(ps_eval_pair), n, f) != n) {
        st = ps_error_set(err, PS_IO, "%s: short read", path);
        goto done;
    }
    *len += n;
done:
    fclose(f);
    return st;
}
