/* data_cache.c - a shard's parsed rows in memory or in a memory-mapped cache file (data_cache.h).
 *
 * A build appends each row to five sections (offsets, ids, vals, labels, index). Each section is a
 * growing buffer until the build passes its budget; then every section moves to its own unlinked
 * temporary file beside the cache file, and the finished file is those sections copied after a
 * header. Rows are read back by offset, so an epoch costs a copy per row and no parsing. */
#define _GNU_SOURCE /* mremap */
#include "data_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "hash.h"

#define MAGIC "PSDCACHE"
#define VERSION 2u /* 2: the source identity in the key, the sections' crc32 */
#define ALIGN 64u
#define COPY_CHUNK (1u << 20)
#define SECTION_MIN (64u << 10) /* a section's first mapping */
#define HUGE_PAGE (2u << 20)    /* past this a section asks for transparent huge pages */

enum { S_OFFSETS, S_IDS, S_VALS, S_LABELS, S_INDEX, N_SECTIONS };
static const size_t elem_bytes[N_SECTIONS] = {8, 8, 4, 4, 8};

typedef struct {
    char magic[8];
    uint32_t version, header_bytes;
    ps_cache_key key;
    uint64_t rows, feats, total_bytes;
    uint64_t off[N_SECTIONS]; /* byte offset of each section in the file */
    ps_cache_meta meta;
    uint32_t data_crc; /* crc32 of the bytes from off[0] to total_bytes */
    uint32_t crc;      /* crc32 of the bytes before this field */
} file_header;

struct ps_data_cache {
    uint64_t rows;
    const uint64_t *offsets, *ids, *index;
    const float *vals, *labels;
    ps_cache_meta meta;
    void *map; /* the mapped file, or NULL: then mem[] own the arrays (anonymous mappings) */
    size_t map_len;
    void *mem[N_SECTIONS];
    size_t mem_len[N_SECTIONS];
    char *path;
};

/* One section of a build: an anonymous mapping grown by mremap, or a temporary file past the
 * budget. Mappings, not malloc: a first touch costs a page fault, tens of microseconds each on a
 * paravirtual VM (14 000 of them tripled the parse of a 200k-row file), and huge pages make those
 * 512 times fewer. */
typedef struct {
    unsigned char *p;
    size_t len, cap;
    FILE *f;
} section;

struct ps_cache_builder {
    ps_cache_key key;
    size_t budget, bytes;
    char *file;
    uint64_t rows, feats;
    section s[N_SECTIONS];
};

/* ---- names ------------------------------------------------------------------------------- */

static uint64_t hash_bytes(uint64_t h, const void *bytes, size_t len) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w = 0;
        memcpy(&w, p + i, len - i < 8 ? len - i : 8);
        h = ps_mix64(h ^ w);
    }
    return ps_mix64(h ^ len);
}

int ps_cache_file_name(const char *dir, const char *src, const ps_cache_key *k, char *out,
                       size_t n) {
    /* the key from num_ids on: the source's identity comes before it */
    uint64_t h = hash_bytes(0x5053444341434845ull, &k->num_ids,
                            sizeof(*k) - offsetof(ps_cache_key, num_ids));
    const char *slash = strrchr(src, '/');
    const char *base = slash != NULL ? slash + 1 : src;
    if (dir != NULL && dir[0] != '\0') {
        char *real = realpath(src, NULL); /* one name for one file, however it is reached */
        const char *full = real != NULL ? real : src;
        h = hash_bytes(h, full, strlen(full));
        free(real);
        return snprintf(out, n, "%s/%s.%016" PRIx64 ".pscache", dir, base, h);
    }
    if (slash == NULL) return snprintf(out, n, "%s.%016" PRIx64 ".pscache", base, h);
    return snprintf(out, n, "%.*s/%s.%016" PRIx64 ".pscache", (int)(slash - src), src, base, h);
}

/* ---- reading ----------------------------------------------------------------------------- */

static void layout(file_header *h) { /* section offsets from the counts; sets total_bytes */
    uint64_t at = (sizeof(*h) + ALIGN - 1) / ALIGN * ALIGN;
    const uint64_t count[N_SECTIONS] = {h->rows + 1, h->feats, h->feats, h->rows, h->rows};
    for (int s = 0; s < N_SECTIONS; s++) {
        h->off[s] = at;
        at = (at + count[s] * elem_bytes[s] + ALIGN - 1) / ALIGN * ALIGN;
    }
    h->total_bytes = at;
}

static uint32_t header_crc(const file_header *h) {
    return (uint32_t)crc32(0L, (const Bytef *)h, (uInt)offsetof(file_header, crc));
}

ps_status ps_cache_load(const char *path, const ps_cache_key *k, ps_data_cache **out,
                        ps_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return PS_OK; /* no file (yet) */
        return ps_error_set(err, PS_IO, "open %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ps_status s = ps_error_set(err, PS_IO, "stat %s: %s", path, strerror(errno));
        close(fd);
        return s;
    }
    file_header h;
    if ((size_t)st.st_size < sizeof(h) || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        close(fd);
        return ps_error_set(err, PS_DATA, "%s: torn: %lld bytes, shorter than its header", path,
                            (long long)st.st_size);
    }
    const char *why = NULL;
    file_header want = h;
    if (memcmp(h.magic, MAGIC, 8) != 0 || h.version != VERSION || h.header_bytes != sizeof(h))
        why = "torn: not a data cache file of this version";
    else if (h.crc != header_crc(&h))
        why = "torn: header checksum";
    else if (memcmp(&h.key, k, sizeof(*k)) != 0)
        why = "stale: the source or the reader options changed";
    else if (h.rows > (uint64_t)st.st_size / 20 || h.feats > (uint64_t)st.st_size / 12)
        why = "torn: impossible counts"; /* 20 bytes per row, 12 per feature: layout can't wrap */
    else if (layout(&want), memcmp(want.off, h.off, sizeof(h.off)) != 0 ||
             want.total_bytes != h.total_bytes)
        why = "torn: section offsets";
    else if ((uint64_t)st.st_size != h.total_bytes)
        why = "torn: the file's size differs from its header's";
    if (why != NULL) {
        close(fd);
        return ps_error_set(err, PS_DATA, "%s: %s", path, why);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ps_error_set(err, PS_IO, "mmap %s: %s", path, strerror(errno));
    ps_data_cache *c = calloc(1, sizeof(*c));
    char *name = strdup(path);
    if (c == NULL || name == NULL) {
        free(c), free(name);
        munmap(map, (size_t)st.st_size);
        return ps_error_set(err, PS_NOMEM, "%s: cache descriptor", path);
    }
    const unsigned char *base = map;
    c->rows = h.rows, c->meta = h.meta, c->map = map, c->map_len = (size_t)st.st_size;
    c->path = name;
    c->offsets = (const uint64_t *)(const void *)(base + h.off[S_OFFSETS]);
    c->ids = (const uint64_t *)(const void *)(base + h.off[S_IDS]);
    c->vals = (const float *)(const void *)(base + h.off[S_VALS]);
    c->labels = (const float *)(const void *)(base + h.off[S_LABELS]);
    c->index = (const uint64_t *)(const void *)(base + h.off[S_INDEX]);
    /* the offsets must stay inside the file: a bad one would read out of bounds */
    bool ok = c->offsets[0] == 0 && c->offsets[c->rows] == h.feats;
    for (uint64_t r = 0; ok && r < c->rows; r++) ok = c->offsets[r] <= c->offsets[r + 1];
    for (int i = 0; i < PS_DATA_SKIP_MESSAGES; i++) c->meta.msgs[i][PS_CACHE_MSG_BYTES - 1] = '\0';
    if (!ok) {
        ps_cache_free(c);
        return ps_error_set(err, PS_DATA, "%s: torn: row offsets out of order", path);
    }
    /* a changed id or value would be trained on silently: the sections are checked whole */
    if ((uint32_t)crc32_z(0L, base + h.off[0], (z_size_t)(h.total_bytes - h.off[0])) !=
        h.data_crc) {
        ps_cache_free(c);
        return ps_error_set(err, PS_DATA, "%s: torn: data checksum", path);
    }
    *out = c;
    return PS_OK;
}

void ps_cache_free(ps_data_cache *c) {
    if (c == NULL) return;
    if (c->map != NULL) munmap(c->map, c->map_len);
    for (int s = 0; s < N_SECTIONS; s++)
        if (c->mem[s] != NULL) munmap(c->mem[s], c->mem_len[s]);
    free(c->path);
    free(c);
}

uint64_t ps_cache_rows(const ps_data_cache *c) { return c->rows; }
const ps_cache_meta *ps_cache_meta_of(const ps_data_cache *c) { return &c->meta; }
const char *ps_cache_path(const ps_data_cache *c) { return c->path; }

size_t ps_cache_bytes(const ps_data_cache *c) {
    if (c->map != NULL) return c->map_len;
    uint64_t feats = c->offsets[c->rows];
    return (size_t)(c->rows * 20 + 8 + feats * 12); /* offsets, labels, index; ids, vals */
}

void ps_cache_row(const ps_data_cache *c, uint64_t i, const uint64_t **ids, const float **vals,
                  size_t *n, float *label, uint64_t *index) {
    uint64_t a = c->offsets[i];
    *ids = c->ids + a, *vals = c->vals + a;
    *n = (size_t)(c->offsets[i + 1] - a);
    *label = c->labels[i], *index = c->index[i];
}

/* ---- building ---------------------------------------------------------------------------- */

/* An unlinked temporary file in the directory of `file`. */
static FILE *side_file(const ps_cache_builder *b, ps_error *err) {
    size_t n = strlen(b->file) + 16;
    char *t = malloc(n);
    if (t == NULL) return ps_error_set(err, PS_NOMEM, "cache: temp name"), NULL;
    snprintf(t, n, "%s.part.XXXXXX", b->file);
    int fd = mkstemp(t);
    if (fd < 0) {
        ps_error_set(err, PS_IO, "cannot write the data cache %s: %s", b->file, strerror(errno));
        free(t);
        return NULL;
    }
    unlink(t);
    free(t);
    FILE *f = fdopen(fd, "w+b");
    if (f == NULL) {
        close(fd);
        ps_error_set(err, PS_IO, "cache %s: %s", b->file, strerror(errno));
    }
    return f;
}

/* Past the budget: every section moves to its own temporary file. */
static ps_status spill(ps_cache_builder *b, ps_error *err) {
    for (int s = 0; s < N_SECTIONS; s++) {
        section *x = &b->s[s];
        if ((x->f = side_file(b, err)) == NULL) return err != NULL ? err->code : PS_IO;
        if (x->len > 0 && fwrite(x->p, 1, x->len, x->f) != x->len)
            return ps_error_set(err, PS_IO, "write the data cache %s: %s", b->file,
                                strerror(errno));
        if (x->p != NULL) munmap(x->p, x->cap);
        x->p = NULL, x->cap = 0;
    }
    return PS_OK;
}

static ps_status put(ps_cache_builder *b, int s, const void *p, size_t n, ps_error *err) {
    section *x = &b->s[s];
    if (x->f != NULL) {
        if (n > 0 && fwrite(p, 1, n, x->f) != n)
            return ps_error_set(err, PS_IO, "write the data cache %s: %s", b->file,
                                strerror(errno));
        x->len += n;
        return PS_OK;
    }
    if (x->len + n > x->cap) {
        size_t cap = x->cap ? x->cap : SECTION_MIN;
        while (cap < x->len + n) cap *= 2;
        void *q = x->p == NULL ? mmap(NULL, cap, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                               : mremap(x->p, x->cap, cap, MREMAP_MAYMOVE);
        if (q == MAP_FAILED) return ps_error_set(err, PS_NOMEM, "data cache: %zu bytes", cap);
        if (cap >= HUGE_PAGE) madvise(q, cap, MADV_HUGEPAGE); /* a hint: no error if refused */
        x->p = q, x->cap = cap;
    }
    if (n > 0) memcpy(x->p + x->len, p, n);
    x->len += n;
    b->bytes += n;
    return PS_OK;
}

ps_status ps_cache_build_begin(const ps_cache_key *k, size_t budget, const char *file,
                               ps_cache_builder **out, ps_error *err) {
    *out = NULL;
    ps_cache_builder *b = calloc(1, sizeof(*b));
    if (b == NULL || (b->file = strdup(file)) == NULL) {
        free(b);
        return ps_error_set(err, PS_NOMEM, "data cache: builder");
    }
    b->key = *k, b->budget = budget;
    uint64_t zero = 0;
    ps_status st = put(b, S_OFFSETS, &zero, sizeof(zero), err);
    if (st != PS_OK) {
        ps_cache_build_abort(b);
        return st;
    }
    *out = b;
    return PS_OK;
}

ps_status ps_cache_build_add(ps_cache_builder *b, const uint64_t *ids, const float *vals,
                             size_t n, float label, uint64_t index, ps_error *err) {
    b->feats += n, b->rows++;
    ps_status st;
    if ((st = put(b, S_IDS, ids, n * sizeof(*ids), err)) != PS_OK ||
        (st = put(b, S_VALS, vals, n * sizeof(*vals), err)) != PS_OK ||
        (st = put(b, S_OFFSETS, &b->feats, sizeof(b->feats), err)) != PS_OK ||
        (st = put(b, S_LABELS, &label, sizeof(label), err)) != PS_OK ||
        (st = put(b, S_INDEX, &index, sizeof(index), err)) != PS_OK)
        return st;
    if (b->s[0].f == NULL && b->bytes > b->budget) return spill(b, err);
    return PS_OK;
}

void ps_cache_build_abort(ps_cache_builder *b) {
    if (b == NULL) return;
    for (int s = 0; s < N_SECTIONS; s++) {
        if (b->s[s].p != NULL) munmap(b->s[s].p, b->s[s].cap);
        if (b->s[s].f != NULL) fclose(b->s[s].f);
    }
    free(b->file);
    free(b);
}

/* Copies section x (a temporary file) to f at its current position, then pads to ALIGN; *crc
 * goes on over both. */
static bool copy_section(section *x, FILE *f, unsigned char *buf, uint32_t *crc) {
    if (fflush(x->f) != 0 || fseeko(x->f, 0, SEEK_SET) != 0) return false;
    for (size_t left = x->len; left > 0;) {
        size_t n = left < COPY_CHUNK ? left : COPY_CHUNK;
        if (fread(buf, 1, n, x->f) != n || fwrite(buf, 1, n, f) != n) return false;
        *crc = (uint32_t)crc32_z(*crc, buf, n);
        left -= n;
    }
    static const unsigned char zeros[ALIGN];
    long pos = ftell(f);
    size_t pad = pos < 0 ? 0 : (ALIGN - (size_t)pos % ALIGN) % ALIGN;
    *crc = (uint32_t)crc32_z(*crc, zeros, pad);
    return pos >= 0 && fwrite(zeros, 1, pad, f) == pad;
}

/* A file to write `file` through: unnamed in its directory (O_TMPFILE), *tmp set to NULL; or,
 * where the file system has no such files, a fresh temporary name in *tmp (malloc'd). -1 and
 * errno on failure. */
static int open_unnamed(const char *file, char **tmp) {
    *tmp = NULL;
    const char *slash = strrchr(file, '/');
    char *dir = slash == NULL ? strdup(".") : strndup(file, (size_t)(slash - file) + 1);
    if (dir == NULL) return -1;
    int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    free(dir);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
    const size_t n = strlen(file) + 16;
    if ((*tmp = malloc(n)) == NULL) return -1;
    snprintf(*tmp, n, "%s.tmp.XXXXXX", file);
    if ((fd = mkstemp(*tmp)) < 0) free(*tmp), *tmp = NULL;
    return fd;
}

/* Names the written file fd `file`, replacing any: an unnamed one is linked under a temporary
 * name first (linkat cannot replace), then renamed. */
static bool name_file(int fd, char *tmp, const char *file) {
    if (tmp != NULL) return rename(tmp, file) == 0;
    char proc[64], *t = NULL;
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    const size_t n = strlen(file) + 32;
    if ((t = malloc(n)) == NULL) return false;
    bool ok = false;
    for (unsigned k = 0; k < 100 && !ok; k++) { /* a name nobody holds */
        snprintf(t, n, "%s.tmp.%ld.%u", file, (long)getpid(), k);
        ok = linkat(AT_FDCWD, proc, AT_FDCWD, t, AT_SYMLINK_FOLLOW) == 0;
        if (!ok && errno != EEXIST) break;
    }
    if (ok && rename(t, file) != 0) {
        const int e = errno;
        unlink(t);
        errno = e, ok = false;
    }
    free(t);
    return ok;
}

static ps_status write_file(ps_cache_builder *b, const ps_cache_meta *meta, ps_error *err) {
    file_header h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, MAGIC, 8);
    h.version = VERSION, h.header_bytes = sizeof(h);
    h.key = b->key, h.rows = b->rows, h.feats = b->feats, h.meta = *meta;
    layout(&h);

    unsigned char *buf = malloc(COPY_CHUNK);
    if (buf == NULL) return ps_error_set(err, PS_NOMEM, "data cache: copy buffer");
    char *tmp;
    int fd = open_unnamed(b->file, &tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    bool ok = f != NULL;
    if (!ok && fd >= 0) close(fd);
    if (ok) { /* the header once its data_crc is known, then the sections behind it */
        static const unsigned char zeros[ALIGN];
        size_t pad = (size_t)(h.off[0] - sizeof(h));
        ok = fwrite(&h, sizeof(h), 1, f) == 1 && fwrite(zeros, 1, pad, f) == pad;
        uint32_t crc = 0;
        for (int s = 0; ok && s < N_SECTIONS; s++) ok = copy_section(&b->s[s], f, buf, &crc);
        h.data_crc = crc;
        h.crc = header_crc(&h);
        ok = ok && fflush(f) == 0 && pwrite(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
             fsync(fd) == 0;
        ok = ok && name_file(fd, tmp, b->file);
        int e = errno;
        ok = fclose(f) == 0 && ok;
        if (!ok) errno = e;
    }
    ps_status st = PS_OK;
    if (!ok) {
        st = ps_error_set(err, PS_IO, "write the data cache %s: %s", b->file, strerror(errno));
        if (tmp != NULL) unlink(tmp);
    }
    free(tmp), free(buf);
    return st;
}

ps_status ps_cache_build_finish(ps_cache_builder *b, const ps_cache_meta *meta,
                                ps_data_cache **out, ps_error *err) {
    *out = NULL;
    ps_status st = PS_OK;
    if (b->s[0].f != NULL) { /* past the budget: to the file, then mapped from it */
        st = write_file(b, meta, err);
        if (st == PS_OK) st = ps_cache_load(b->file, &b->key, out, err);
        if (st == PS_OK && *out == NULL)
            st = ps_error_set(err, PS_IO, "%s: vanished after it was written", b->file);
        ps_cache_build_abort(b);
        return st;
    }
    ps_data_cache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        ps_cache_build_abort(b);
        return ps_error_set(err, PS_NOMEM, "data cache: descriptor");
    }
    c->rows = b->rows, c->meta = *meta;
    for (int s = 0; s < N_SECTIONS; s++) { /* the cache takes the buffers (NULL when empty) */
        c->mem[s] = b->s[s].p, c->mem_len[s] = b->s[s].cap;
        b->s[s].p = NULL;
    }
    static const uint64_t none[1];
    c->offsets = c->mem[S_OFFSETS];
    c->ids = c->mem[S_IDS] ? c->mem[S_IDS] : none;
    c->vals = c->mem[S_VALS] ? c->mem[S_VALS] : (const float *)(const void *)none;
    c->labels = c->mem[S_LABELS];
    c->index = c->mem[S_INDEX];
    ps_cache_build_abort(b);
    *out = c;
    return st;
}
