/* fuzz_data_csv.c - libFuzzer target: the csv reader (worker/data.c), plain and gzip, sharded and
 * shuffled, two epochs in small batches; see fuzz_data.h for the input's layout. */
#include "fuzz_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_data_run(PS_DATA_CSV, data, size);
    return 0;
}
