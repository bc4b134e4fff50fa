/* npy.h - NumPy .npy files (format 1.0; 2.0 and 3.0 read too): a streaming reader and a streaming
 * writer for the three element types our tables use, float32, uint64 and uint32, little-endian.
 * Little-endian hosts only (npy.c refuses to compile elsewhere): items are copied as they are.
 * reference: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html */
#ifndef PS_NPY_H
#define PS_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "ps_status.h"

#define PS_NPY_MAX_DIM 4
#define PS_NPY_MAX_HEADER 10000 /* bytes of header dict, numpy's own default limit */
#define PS_NPY_ROWS_UNKNOWN UINT64_MAX /* shape[0] for a writer: set by ps_npy_finish */

typedef enum {
    PS_NPY_F4, /* '<f4' float32 */
    PS_NPY_U8, /* '<u8' uint64 */
    PS_NPY_U4, /* '<u4' uint32 */
} ps_npy_dtype;

/* What a file holds. count = product of shape (1 for shape ()). */
typedef struct {
    ps_npy_dtype dtype;
    size_t item_size;
    unsigned ndim;
    uint64_t shape[PS_NPY_MAX_DIM];
    uint64_t count;
    uint64_t data_offset; /* bytes of magic + header */
} ps_npy_info;

typedef struct ps_npy_reader ps_npy_reader;
typedef struct ps_npy_writer ps_npy_writer;

/* "<f4", "<u8", "<u4". */
const char *ps_npy_descr(ps_npy_dtype dtype);

/* Writes shape as Python prints it ("(20, 64)", "(64,)", "()") into buf; returns buf. */
char *ps_npy_shape_str(unsigned ndim, const uint64_t *shape, char *buf, size_t len);

/* Opens path and reads its header. Refused, with PS_DATA and the path in the message: bad magic or
 * version, a header over PS_NPY_MAX_HEADER or not a dict as numpy writes it, fortran_order True,
 * a descr other than the three above (big-endian named as such), ndim > PS_NPY_MAX_DIM, and a
 * file whose size is not exactly header + shape's bytes. PS_IO: cannot open or read. */
ps_status ps_npy_open(const char *path, ps_npy_reader **out, ps_error *err);

const ps_npy_info *ps_npy_info_of(const ps_npy_reader *r);
const char *ps_npy_path(const ps_npy_reader *r);

/* Reads the next n items (C order) into dst (caller-owned, n * item_size bytes). Asking for
 * more items than remain is PS_INVALID_ARG; a read failure (file shrunk since open) PS_IO. */
ps_status ps_npy_read(ps_npy_reader *r, void *dst, uint64_t n, ps_error *err);

void ps_npy_close(ps_npy_reader *r); /* NULL-safe */

/* Starts writing PATH.tmp. shape (ndim <= PS_NPY_MAX_DIM) is copied; shape[0] may be
 * PS_NPY_ROWS_UNKNOWN (ndim >= 1; rows of zero items then count as 0 rows). The header is numpy's
 * byte for byte, with numpy's spare room for a first dimension of up to 21 digits, so
 * ps_npy_finish rewrites it in place. */
ps_status ps_npy_create(const char *path, ps_npy_dtype dtype, unsigned ndim,
                        const uint64_t *shape, ps_npy_writer **out, ps_error *err);

/* Appends n_bytes of items, C order; a call may end mid-item. data is borrowed for the call. */
ps_status ps_npy_append(ps_npy_writer *w, const void *data, size_t n_bytes, ps_error *err);

/* Sets shape[0] from the bytes appended (or checks it, when it was given), rewrites the header,
 * fsyncs and renames PATH.tmp to PATH. PS_DATA if the bytes are not whole rows of the shape.
 * Frees w whatever the outcome; on error PATH.tmp is removed and PATH is left as it was. */
ps_status ps_npy_finish(ps_npy_writer *w, ps_error *err);

/* Removes PATH.tmp and frees w. NULL-safe. */
void ps_npy_abort(ps_npy_writer *w);

#endif
