/* bench_memory.c - server memory per row, and what admission and expiry save on a power-law
 * stream. In-process on ps_store (the server's tables), no network.
 *   (a) bytes held per row against the payload (key + weights + accumulators) at dim 16, full and
 *       row-wise AdaGrad, at several row counts: goal <= 1.3x.
 *   (b) a Zipf(alpha) stream over a 10M-key universe (rank r drawn with p ~ 1/r^alpha, keys are
 *       the ranks hashed), pushed in batches: rows held, bytes, admitted, pending, evicted and
 *       push speed, without memory control and with admit_after / expire_after_steps. Medians of
 *       --runs streams of different seeds (rows and bytes vary little; speed more).
 * Held-out logloss with and without them is left to the CTR example (examples/ctr.json with
 * --set tables[0].admit_after=N ...); this program prints rows and bytes.
 * Machine-parseable lines start with "bench_memory ". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "hash.h"
#include "store.h"

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "bench_memory: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static ps_table_spec spec16(bool rowwise, ps_table_memory mem) {
    ps_table_spec t = {.id = 0, .dim = 16, .init = {.kind = PS_INIT_UNIFORM, .a = -0.05, .b = 0.05},
                       .mem = mem};
    snprintf(t.name, sizeof(t.name), "emb");
    t.opt = (ps_adagrad_config){.form = PS_ADAGRAD_PYTORCH, .learning_rate = 0.05,
                                .epsilon = 1e-10, .rowwise = rowwise};
    return t;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, size_t n) {
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static const char *verdict(bool ok) { return ok ? "ok" : "OVER"; }

/* --- (a) bytes per row ------------------------------------------------------------------------ */

static bool per_row(bool rowwise, const size_t *counts, size_t n_counts) {
    const size_t batch = 1000000, dim = 16;
    ps_table_spec spec = spec16(rowwise, (ps_table_memory){0});
    ps_store *s = NULL;
    ps_error err = {0};
    if (ps_store_create(&spec, 42, &s, &err) != PS_OK) {
        fprintf(stderr, "bench_memory: %s\n", err.msg);
        return false;
    }
    uint64_t *keys = xmalloc(batch * sizeof(*keys));
    float *grads = xmalloc(batch * dim * sizeof(*grads));
    bench_fill_grads(grads, batch * dim, 7);
    uint64_t seed = 0x5eed0000u + rowwise;
    const double payload = 8.0 + 4.0 * dim + 4.0 * (rowwise ? 1 : dim);
    bool ok = true;
    for (size_t ci = 0; ci < n_counts; ci++) {
        while (ps_store_rows(s) < counts[ci]) {
            size_t m = counts[ci] - ps_store_rows(s);
            if (m > batch) m = batch;
            for (size_t i = 0; i < m; i++) keys[i] = bench_splitmix64(&seed);
            if (ps_store_push(s, (const uint8_t *)keys, (const uint8_t *)grads, m, &err) !=
                PS_OK) {
                fprintf(stderr, "bench_memory: %s\n", err.msg);
                ok = false;
                goto done;
            }
        }
        const double per = (double)ps_store_bytes(s) / (double)ps_store_rows(s);
        const double ratio = per / payload;
        printf("  %-7s dim 16 %9zu rows: %6.1f B/row held, payload %3.0f B, row stored %3zu B"
               " -> %.3fx  (<= 1.3x %s)\n",
               rowwise ? "rowwise" : "full", ps_store_rows(s), per, payload,
               ps_store_row_bytes(s), ratio, verdict(ratio <= 1.3));
        printf("bench_memory per_row_%s_rows%zu %.4f x_payload\n", rowwise ? "rowwise" : "full",
               ps_store_rows(s), ratio);
    }
done:
    free(keys), free(grads);
    ps_store_destroy(s);
    return ok;
}

/* --- (b) a power-law stream ------------------------------------------------------------------- */

typedef struct {
    const char *name;
    ps_table_memory mem;
} mem_case;

/* cdf: (universe) cumulative P(rank <= r) of Zipf(alpha). */
static double *zipf_cdf(size_t universe, double alpha) {
    double *cdf = xmalloc(universe * sizeof(*cdf)), sum = 0;
    for (size_t r = 0; r < universe; r++) cdf[r] = sum += pow((double)(r + 1), -alpha);
    for (size_t r = 0; r < universe; r++) cdf[r] /= sum;
    return cdf;
}

static uint64_t zipf_key(const double *cdf, size_t universe, uint64_t *state) {
    const double u = (double)(bench_splitmix64(state) >> 11) * 0x1p-53;
    size_t lo = 0, hi = universe - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] < u) lo = mid + 1;
        else hi = mid;
    }
    return ps_mix64(lo + 1); /* rank -> key: popular keys spread over the key space */
}

static bool stream(size_t universe, double alpha, size_t pushes, size_t batch, int runs) {
    static const mem_case cases[] = {
        {"none", {0}},
        {"admit_after=2", {.admit_after = 2}},
        {"admit_after=5", {.admit_after = 5}},
        {"expire_after_steps=500", {.expire_after_steps = 500}},
        {"admit=2+expire=500", {.admit_after = 2, .expire_after_steps = 500}},
    };
    const size_t n_cases = sizeof(cases) / sizeof(cases[0]), total = pushes * batch, dim = 16;
    double *cdf = zipf_cdf(universe, alpha);
    uint64_t *keys = xmalloc(total * sizeof(*keys));
    float *grads = xmalloc(batch * dim * sizeof(*grads));
    bench_fill_grads(grads, batch * dim, 11);
    enum { ROWS, BYTES, ADMITTED, PENDING, EVICTED, SPEED, DISTINCT, NV };
    double *v = xmalloc(n_cases * NV * (size_t)runs * sizeof(*v));
    bool ok = true;
    for (int run = 0; run < runs && ok; run++) {
        uint64_t seed = 0x21bf0000u + (uint64_t)run;
        for (size_t i = 0; i < total; i++) keys[i] = zipf_key(cdf, universe, &seed);
        for (size_t c = 0; c < n_cases && ok; c++) {
            ps_table_spec spec = spec16(false, cases[c].mem);
            ps_store *s = NULL;
            ps_error err = {0};
            if (ps_store_create(&spec, 42, &s, &err) != PS_OK) {
                fprintf(stderr, "bench_memory: %s\n", err.msg);
                ok = false;
                break;
            }
            const double t0 = bench_now_s();
            for (size_t p = 0; p < pushes && ok; p++)
                ok = ps_store_push(s, (const uint8_t *)(keys + p * batch), (const uint8_t *)grads,
                                   batch, &err) == PS_OK;
            const double dt = bench_now_s() - t0;
            if (!ok) fprintf(stderr, "bench_memory: %s: %s\n", cases[c].name, err.msg);
            ps_store_stats st;
            ps_store_get_stats(s, &st);
            double *x = v + (c * NV) * (size_t)runs + (size_t)run;
            x[ROWS * runs] = (double)st.rows, x[BYTES * runs] = (double)st.bytes;
            x[ADMITTED * runs] = (double)st.admitted, x[PENDING * runs] = (double)st.pending;
            x[EVICTED * runs] = (double)st.evicted, x[SPEED * runs] = (double)total / dt / 1e6;
            ps_store_destroy(s);
        }
    }
    printf("  Zipf(%.2f) over %zu keys: %zu pushes of %zu keys (%zu key-pushes), dim 16, full "
           "AdaGrad; medians of %d runs\n", alpha, universe, pushes, batch, total, runs);
    printf("  %-24s %10s %12s %9s %10s %10s %10s %9s\n", "memory control", "rows", "bytes",
           "B/row", "admitted", "pending", "evicted", "Mkeys/s");
    for (size_t c = 0; ok && c < n_cases; c++) {
        double m[NV];
        for (int k = 0; k < NV - 1; k++) m[k] = median(v + (c * NV + (size_t)k) * (size_t)runs,
                                                       (size_t)runs);
        printf("  %-24s %10.0f %12.0f %9.1f %10.0f %10.0f %10.0f %9.2f\n", cases[c].name,
               m[ROWS], m[BYTES], m[ROWS] > 0 ? m[BYTES] / m[ROWS] : 0.0, m[ADMITTED],
               m[PENDING], m[EVICTED], m[SPEED]);
        printf("bench_memory zipf_%s rows %.0f bytes %.0f admitted %.0f pending %.0f evicted %.0f "
               "mkeys_per_s %.2f\n", cases[c].name, m[ROWS], m[BYTES], m[ADMITTED], m[PENDING],
               m[EVICTED], m[SPEED]);
    }
    free(v), free(cdf), free(keys), free(grads);
    return ok;
}

static const char usage[] =
    "usage: bench_memory [--runs N] [--rows N] [--pushes N] [--batch N] [--alpha A]\n"
    "  --runs N     streams per configuration; medians over them (default 3)\n"
    "  --rows N     largest row count of the bytes-per-row part (default 10000000)\n"
    "  --pushes N   pushes of the power-law stream (default 4000)\n"
    "  --batch N    keys per push (default 1000)\n"
    "  --alpha A    Zipf exponent (default 1.1)\n";

int main(int argc, char **argv) {
    int runs = 3;
    size_t rows = 10000000, pushes = 4000, batch = 1000;
    double alpha = 1.1;
    for (int i = 1; i < argc; i++) {
        const bool val = i + 1 < argc;
        if (strcmp(argv[i], "--runs") == 0 && val) runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rows") == 0 && val) rows = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--pushes") == 0 && val) pushes = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--batch") == 0 && val) batch = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--alpha") == 0 && val) alpha = atof(argv[++i]);
        else {
            fputs(usage, stderr);
            return 2;
        }
    }
    if (runs < 1 || runs > 50 || rows < 1000 || pushes < 1 || batch < 1 || alpha <= 0) {
        fputs(usage, stderr);
        return 2;
    }
    size_t counts[4] = {1000000, 3000000, rows}, n_counts = 0;
    for (size_t i = 0; i < 3; i++)
        if (counts[i] <= rows && (n_counts == 0 || counts[i] > counts[n_counts - 1]))
            counts[n_counts++] = counts[i];
    printf("bench_memory: (a) bytes per row, dim 16\n");
    bool ok = per_row(false, counts, n_counts) && per_row(true, counts, n_counts);
    printf("bench_memory: (b) admission and expiry on a power-law stream\n");
    ok = ok && stream(10000000, alpha, pushes, batch, runs);
    return ok ? 0 : 1;
}
