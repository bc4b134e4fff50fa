/* fuzz_data.h - the driver the text data-reader targets share (fuzz_data_csv.c,
 * fuzz_data_libsvm.c, fuzz_data_criteo.c). */
#ifndef PS_FUZZ_DATA_H
#define PS_FUZZ_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"

/* Input: [flags][opts][label_column][file bytes...]. flags: 1 skip_bad_lines, 2 shuffle,
 * 4|8 the file: plain (0), gzip-compressed .gz (4), the bytes themselves named .gz (8), plain (12);
 * 16 one_based (libsvm) or integers dense (criteo), 32 label_name "label" (csv), 64|128 world - 1.
 * label_column: csv's; for criteo validation_split (bits 0-1: 0, 0.25, 0.5, 0.75), holdout (4). opts: 1..8 rows per
 * batch (low 3 bits + 1), max_line_bytes 0 (default), 16, 64 or 256 (bits 3-4), a shuffle buffer
 * of 3 rows (bit 5, else the default), rank (bits 6-7, mod world). Two epochs are read whole and
 * every batch is checked against the reader's contract (data.h). */
void fz_data_run(ps_data_format format, const uint8_t *data, size_t size);

#endif
