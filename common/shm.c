/* shm.c - see shm.h. */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"

static ps_status map_fd(int fd, size_t len, ps_shm *out, ps_error *err) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return ps_error_set(err, PS_IO, "shared memory %s: mmap: %s", out->name, strerror(errno));
    out->p = p, out->len = len;
    return PS_OK;
}

ps_status ps_shm_create(size_t len, ps_shm *out, ps_error *err) {
    *out = (ps_shm){0};
    if (len == 0 || len > PS_SHM_MAX_BYTES)
        return ps_error_set(err, PS_INVALID_ARG, "shared memory of %zu bytes (1..%u)", len,
                            PS_SHM_MAX_BYTES);
    uint8_t r[PS_AUTH_NONCE_BYTES];
    ps_auth_nonce(r); /* unguessable: no other local process can open it in the meantime */
    snprintf(out->name, sizeof(out->name), "/ps-%ld-", (long)getpid());
    for (int i = 0; i < 8; i++)
        snprintf(out->name + strlen(out->name), sizeof(out->name) - strlen(out->name), "%02x",
                 r[i]);
    int fd = shm_open(out->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        ps_error_set(err, PS_IO, "shared memory %s: %s", out->name, strerror(errno));
        *out = (ps_shm){0};
        return PS_IO;
    }
    int e = posix_fallocate(fd, 0, (off_t)len); /* returns the error, not -1 */
    ps_status st = e == 0 ? map_fd(fd, len, out, err)
                          : ps_error_set(err, PS_IO, "shared memory %s: reserving %zu bytes: %s",
                                         out->name, len, strerror(e));
    close(fd);
    if (st != PS_OK) {
        shm_unlink(out->name);
        *out = (ps_shm){0};
    }
    return st;
}

ps_status ps_shm_attach(const char *name, size_t len, ps_shm *out, ps_error *err) {
    *out = (ps_shm){0};
    if (strncmp(name, "/ps-", 4) != 0 || strchr(name + 1, '/') != NULL)
        return ps_error_set(err, PS_PROTO, "shared memory \"%.64s\": not a name a server makes",
                            name);
    snprintf(out->name, sizeof(out->name), "%s", name);
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        const int e = errno;
        *out = (ps_shm){0};
        return ps_error_set(err, e == ENOENT ? PS_NOT_FOUND : PS_IO, "shared memory %s: %s", name,
                            strerror(e));
    }
    struct stat sb;
    ps_status st = fstat(fd, &sb) != 0 ? ps_error_set(err, PS_IO, "shared memory %s: fstat: %s",
                                                      name, strerror(errno))
                   : (uint64_t)sb.st_size != len
                       ? ps_error_set(err, PS_IO, "shared memory %s is %lld bytes, not %zu", name,
                                      (long long)sb.st_size, len)
                       : map_fd(fd, len, out, err);
    close(fd);
    if (st != PS_OK) { /* not ours to remove: the server unlinks it at our next frame */
        *out = (ps_shm){0};
        return st;
    }
    ps_shm_unlink(out); /* mapped: the name has served its purpose */
    return PS_OK;
}

void ps_shm_unlink(ps_shm *s) {
    if (s->name[0] == '\0') return;
    shm_unlink(s->name); /* ENOENT: the peer did it first */
    s->name[0] = '\0';
}

void ps_shm_close(ps_shm *s) {
    if (s == NULL) return;
    ps_shm_unlink(s);
    if (s->p != NULL) munmap(s->p, s->len);
    *s = (ps_shm){0};
}

ps_status ps_shm_region(const ps_shm *s, const ps_ShmRef *ref, size_t want, const char *what,
                        uint8_t **out, ps_error *err) {
    if (s->p == NULL)
        return ps_error_set(err, PS_INVALID_ARG, "%s: a shared-memory region, but this connection "
                            "has no segment", what);
    if (ref->length != want || ref->offset > s->len || want > s->len - ref->offset)
        return ps_error_set(err, PS_INVALID_ARG,
                            "%s: shared-memory region [%" PRIu64 ", +%" PRIu64 ") for %zu bytes "
                            "in a segment of %zu", what, ref->offset, ref->length, want, s->len);
    *out = s->p + ref->offset;
    return PS_OK;
}
