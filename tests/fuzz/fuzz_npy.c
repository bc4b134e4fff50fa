/* fuzz_npy.c - libFuzzer target: the .npy reader (common/npy.c). The input is the file. What
 * opens must describe itself consistently (count = product of shape, file size = header + data),
 * read back exactly its items in chunks, refuse one more, and survive a round trip through the
 * writer (same dtype, shape and bytes; shape[0] left for ps_npy_finish on odd sizes). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("in.npy", data, size);
    ps_npy_reader *r;
    ps_error err = {0};
    if (ps_npy_open(path, &r, &err) != PS_OK) {
        FZ_CHECK(err.msg[0] != '\0', "refused without a message");
        return 0;
    }
    const ps_npy_info info = *ps_npy_info_of(r);
    FZ_CHECK(info.ndim <= PS_NPY_MAX_DIM, "ndim %u", info.ndim);
    FZ_CHECK(info.item_size == (info.dtype == PS_NPY_U8 ? 8u : 4u), "item size %zu for %s",
             info.item_size, ps_npy_descr(info.dtype));
    uint64_t count = 1;
    for (unsigned i = 0; i < info.ndim; i++) count *= info.shape[i];
    FZ_CHECK(count == info.count, "count %llu, shape gives %llu", (unsigned long long)info.count,
             (unsigned long long)count);
    FZ_CHECK(info.data_offset + info.count * info.item_size == size,
             "header %llu + %llu items of %zu bytes != file size %zu",
             (unsigned long long)info.data_offset, (unsigned long long)info.count, info.item_size,
             size);
    char shape[128];
    ps_npy_shape_str(info.ndim, info.shape, shape, sizeof(shape));
    ps_npy_shape_str(info.ndim, info.shape, shape, 4); /* cut short */

    const size_t bytes = (size_t)(info.count * info.item_size);
    uint8_t *items = malloc(bytes + 1);
    FZ_CHECK(items != NULL, "malloc");
    for (uint64_t done = 0, step = 1; done < info.count; step = step * 3 % 17 + 1) {
        uint64_t n = info.count - done < step ? info.count - done : step;
        FZ_CHECK(ps_npy_read(r, items + done * info.item_size, n, &err) == PS_OK,
                 "read of %llu items at %llu: %s", (unsigned long long)n,
                 (unsigned long long)done, err.msg);
        done += n;
    }
    FZ_CHECK(bytes == 0 || memcmp(items, data + info.data_offset, bytes) == 0,
             "items differ from the file's bytes");
    uint8_t extra[8];
    FZ_CHECK(ps_npy_read(r, extra, 1, &err) == PS_INVALID_ARG, "a read past the end was allowed");
    ps_npy_close(r);

    /* the writer gives back the same file contents */
    uint64_t wshape[PS_NPY_MAX_DIM];
    memcpy(wshape, info.shape, sizeof(wshape));
    if (info.ndim >= 1 && (size & 1)) wshape[0] = PS_NPY_ROWS_UNKNOWN;
    const char *out = fz_path("out.npy");
    ps_npy_writer *w;
    FZ_CHECK(ps_npy_create(out, info.dtype, info.ndim, wshape, &w, &err) == PS_OK, "create: %s",
             err.msg);
    const size_t half = bytes / 2;
    FZ_CHECK(ps_npy_append(w, items, half, &err) == PS_OK &&
                 ps_npy_append(w, items + half, bytes - half, &err) == PS_OK,
             "append: %s", err.msg);
    ps_status st = ps_npy_finish(w, &err);
    uint64_t row_items = 1;
    for (unsigned i = 1; i < info.ndim; i++) row_items *= info.shape[i];
    if (wshape[0] == PS_NPY_ROWS_UNKNOWN && row_items == 0) {
        /* rows of zero items count as 0 rows (npy.h): shape[0] is lost, nothing to compare */
        FZ_CHECK(st == PS_OK, "finish: %s", err.msg);
        free(items);
        return 0;
    }
    FZ_CHECK(st == PS_OK, "finish: %s", err.msg);
    FZ_CHECK(ps_npy_open(out, &r, &err) == PS_OK, "the writer's file does not open: %s", err.msg);
    const ps_npy_info *back = ps_npy_info_of(r);
    FZ_CHECK(back->dtype == info.dtype && back->ndim == info.ndim && back->count == info.count &&
                 memcmp(back->shape, info.shape, info.ndim * sizeof(uint64_t)) == 0,
             "the writer's file says %s %s", ps_npy_descr(back->dtype),
             ps_npy_shape_str(back->ndim, back->shape, shape, sizeof(shape)));
    uint8_t *again = malloc(bytes + 1);
    FZ_CHECK(again != NULL, "malloc");
    FZ_CHECK(ps_npy_read(r, again, info.count, &err) == PS_OK &&
                 (bytes == 0 || memcmp(again, items, bytes) == 0),
             "the writer's items differ");
    ps_npy_close(r);
    free(again);
    free(items);
    return 0;
}
