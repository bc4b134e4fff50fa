/* fuzz_data_criteo.c - libFuzzer target: the Criteo TSV reader (worker/data_criteo.c), plain and
 * gzip, sharded, shuffled and split, two epochs in small batches; see fuzz_data.h for the input. */
#include "fuzz_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_data_run(PS_DATA_CRITEO, data, size);
    return 0;
}
