/* test_metrics.c - worker/metrics.h (AUC, log loss) and worker/eval_pairs.h (the pairs file).
 * AUCs are counted by hand in the comments, or by the test's own O(n^2) pair count; log losses
 * are /usr/bin/python3 math.log values. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_pairs.h"
#include "metrics.h"
#include "testutil.h"

static char dir[64];

static void setup(void) { tu_tmpdir(dir, "ps_metrics"); }
static void teardown(void) { tu_rmtree(dir); }
TestSuite(metrics, .init = setup, .fini = teardown, .timeout = 30);

#define MAXN 8
typedef struct {
    char name[32];
    size_t n;
    float score[MAXN], label[MAXN];
    double want; /* NaN: undefined */
} auc_case;

/* Counted by hand over (positive, negative) pairs: 1 when the positive is higher, 1/2 on a tie. */
ParameterizedTestParameters(metrics, auc_by_hand) {
    static auc_case cases[] = {
        {"separated", 4, {0.1f, 0.2f, 0.8f, 0.9f}, {0, 0, 1, 1}, 1.0},
        {"reversed", 4, {0.1f, 0.2f, 0.8f, 0.9f}, {1, 1, 0, 0}, 0.0},
        /* sklearn's roc_auc_score example: pos 0.35, 0.8; neg 0.1, 0.4: 1 + 0 + 1 + 1 = 3/4 */
        {"sklearn example", 4, {0.1f, 0.4f, 0.35f, 0.8f}, {0, 0, 1, 1}, 0.75},
        {"all tied", 4, {0.5f, 0.5f, 0.5f, 0.5f}, {0, 1, 0, 1}, 0.5},
        /* pos 0.5, 0.9; neg 0.2, 0.5: 1 + 0.5 + 1 + 1 = 3.5/4 */
        {"tie across classes", 4, {0.2f, 0.5f, 0.5f, 0.9f}, {0, 1, 0, 1}, 0.875},
        /* pos 1, 2, 2; neg 1, 2, 3: pos 1 -> 0.5; each pos 2 -> 1 + 0.5 = 1.5; 3.5/9 */
        {"ties in groups", 6, {1, 1, 2, 2, 2, 3}, {0, 1, 0, 1, 1, 0}, 3.5 / 9.0},
        /* unsorted input, negative scores: pos -1, 3; neg -2, 0, 5: 1+0+0 + 1+1+0 = 3/6 */
        {"unsorted", 5, {3, -2, 5, -1, 0}, {1, 0, 0, 1, 0}, 0.5},
        /* a label above 0.5 is positive, 0.5 itself is not */
        {"soft labels", 2, {0.1f, 0.9f}, {0.5f, 0.6f}, 1.0},
        {"one class (positive)", 3, {0.1f, 0.2f, 0.3f}, {1, 1, 1}, NAN},
        {"one class (negative)", 3, {0.1f, 0.2f, 0.3f}, {0, 0, 0}, NAN},
        {"empty", 0, {0}, {0}, NAN},
        {"a NaN score", 3, {0.1f, NAN, 0.3f}, {0, 1, 1}, NAN},
    };
    return cr_make_param_array(auc_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(auc_case *c, metrics, auc_by_hand) {
    ps_eval_pair p[MAXN];
    for (size_t i = 0; i < c->n; i++) p[i] = (ps_eval_pair){c->score[i], c->label[i]};
    double got = ps_metrics_auc(p, c->n);
    if (isnan(c->want))
        cr_assert(isnan(got), "%s: AUC %.17g, want NaN (undefined)", c->name, got);
    else
        cr_assert(fabs(got - c->want) < 1e-15, "%s: AUC %.17g, want %.17g", c->name, got,
                  c->want);
}

Test(metrics, auc_of_no_or_one_sample_is_nan) {
    cr_assert(isnan(ps_metrics_auc(NULL, 0))); /* a worker whose share of the data is empty */
    ps_eval_pair one = {0.5f, 1.0f};
    cr_assert(isnan(ps_metrics_auc(&one, 1)));
}

/* The test's own definition: every (positive, negative) pair compared, O(n^2). */
static double brute_auc(const ps_eval_pair *p, size_t n) {
    double wins = 0.0, pairs = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!(p[i].label > 0.5f)) continue;
        for (size_t j = 0; j < n; j++) {
            if (p[j].label > 0.5f) continue;
            pairs += 1.0;
            wins += p[i].score > p[j].score ? 1.0 : p[i].score == p[j].score ? 0.5 : 0.0;
        }
    }
    return wins / pairs;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

Test(metrics, auc_matches_brute_force_pair_count_with_many_ties) {
    const size_t sizes[] = {2, 3, 17, 300, 2000};
    const unsigned levels[] = {2, 5, 64, 1u << 20}; /* few levels: most scores tie */
    uint64_t seed = 42;
    for (size_t a = 0; a < sizeof(sizes) / sizeof(sizes[0]); a++) {
        for (size_t b = 0; b < sizeof(levels) / sizeof(levels[0]); b++) {
            const size_t n = sizes[a];
            ps_eval_pair *p = malloc(n * sizeof(*p));
            cr_assert_not_null(p);
            size_t pos = 0;
            for (size_t i = 0; i < n; i++) {
                float s = (float)(splitmix(&seed) % levels[b]) / (float)levels[b];
                float y = (float)(splitmix(&seed) % 3 == 0); /* about 1/3 positive */
                if (i < 2) y = (float)i; /* both classes in every case */
                /* a weak signal, so the AUC is away from 0.5 */
                if (y > 0.5f && splitmix(&seed) % 2) s = s * 0.5f + 0.5f;
                p[i] = (ps_eval_pair){s, y};
                pos += y > 0.5f;
            }
            const double want = brute_auc(p, n);
            const double got = ps_metrics_auc(p, n);
            cr_assert(fabs(got - want) < 1e-12, "n %zu, %u levels, %zu positive: AUC %.17g, "
                      "brute force %.17g", n, levels[b], pos, got, want);
            /* sorted in place: the pairs are still the same multiset */
            cr_assert(fabs(brute_auc(p, n) - want) < 1e-12, "pairs changed by the sort");
            free(p);
        }
    }
}

Test(metrics, logloss_matches_python_math_log) {
    const struct {
        double p, y, want;
    } bin[] = {
        {0.8, 1, 0.2231435513142097},            /* -ln 0.8 */
        {0.8, 0, 1.6094379124341003},            /* -ln 0.2 */
        {0.5, 0.25, 0.6931471805599453},         /* soft label: ln 2 */
        {0.0, 1, 16.11809565095832},             /* clipped to 1e-7: -ln 1e-7 */
        {-3.0, 1, 16.11809565095832},            /* a linear output below 0: clipped too */
        {1.0, 0, 16.118095651484676},            /* clipped to 1 - 1e-7: -ln(1e-7) in double */
        {1.0, 1, 1.0000000494736474e-07},        /* -ln(1 - 1e-7) */
    };
    for (size_t i = 0; i < sizeof(bin) / sizeof(bin[0]); i++) {
        double got = ps_metrics_logloss_binary(bin[i].p, bin[i].y);
        cr_assert(fabs(got - bin[i].want) <= 1e-14 * fabs(bin[i].want), "p %g y %g: %.17g, want "
                  "%.17g", bin[i].p, bin[i].y, got, bin[i].want);
    }
    cr_assert(fabs(ps_metrics_logloss_class(0.25) - 1.3862943611198906) < 1e-15);
    cr_assert(fabs(ps_metrics_logloss_class(0.0) - 16.11809565095832) < 1e-13);
    cr_assert(isnan(ps_metrics_logloss_binary(NAN, 1.0)));
}

/* --- the pairs file ----------------------------------------------------------------------------- */

static void pairs_path(char *out, size_t n, uint32_t epoch, uint32_t rank) {
    ps_error err = {0};
    cr_assert_eq(ps_eval_pairs_path(out, n, dir, epoch, rank, &err), PS_OK, "%s", err.msg);
}

Test(metrics, pairs_file_round_trip_appends) {
    char a[256], b[256];
    pairs_path(a, sizeof(a), 3, 0);
    pairs_path(b, sizeof(b), 3, 1);
    char want_a[256];
    snprintf(want_a, sizeof(want_a), "%s/epoch-3.rank-0.pairs", dir);
    cr_assert_str_eq(a, want_a);
    const ps_eval_pair p0[3] = {{0.25f, 1}, {0.75f, 0}, {-1.5f, 0.5f}}, p1[1] = {{1e-30f, 1}};
    ps_error err = {0};
    cr_assert_eq(ps_eval_pairs_write(a, p0, 3, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_eval_pairs_write(b, p1, 1, &err), PS_OK, "%s", err.msg);
    /* header 16 bytes + 8 per pair, and no .tmp left behind */
    FILE *f = fopen(a, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    cr_assert_eq(ftell(f), 16 + 3 * 8);
    fclose(f);
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", a);
    cr_assert_null(fopen(tmp, "rb"), "%s left behind", tmp);

    ps_eval_pair *buf = NULL;
    size_t len = 0, cap = 0;
    cr_assert_eq(ps_eval_pairs_read(a, 3, &buf, &len, &cap, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(ps_eval_pairs_read(b, 1, &buf, &len, &cap, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(len, 4);
    cr_assert(memcmp(buf, p0, sizeof(p0)) == 0 && memcmp(buf + 3, p1, sizeof(p1)) == 0);
    free(buf);

    /* an empty pass is a valid file of 0 pairs */
    cr_assert_eq(ps_eval_pairs_write(a, NULL, 0, &err), PS_OK, "%s", err.msg);
    buf = NULL, len = 0, cap = 0;
    cr_assert_eq(ps_eval_pairs_read(a, 0, &buf, &len, &cap, &err), PS_OK, "%s", err.msg);
    cr_assert_eq(len, 0);
    free(buf);
}

Test(metrics, pairs_file_errors_name_the_file) {
    char path[256], bad[256];
    pairs_path(path, sizeof(path), 1, 0);
    const ps_eval_pair p[2] = {{0.5f, 1}, {0.25f, 0}};
    ps_error err = {0};
    cr_assert_eq(ps_eval_pairs_write(path, p, 2, &err), PS_OK, "%s", err.msg);
    ps_eval_pair *buf = NULL;
    size_t len = 0, cap = 0;

    /* a count other than the one announced */
    cr_assert_eq(ps_eval_pairs_read(path, 3, &buf, &len, &cap, &err), PS_DATA);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "holds 2 pairs, the worker announced 3"),
              "%s", err.msg);
    cr_assert_eq(len, 0);

    /* missing */
    snprintf(bad, sizeof(bad), "%s/epoch-9.rank-9.pairs", dir);
    cr_assert_eq(ps_eval_pairs_read(bad, 2, &buf, &len, &cap, &err), PS_IO);
    cr_assert(strstr(err.msg, bad) != NULL, "%s", err.msg);

    /* not a pairs file */
    snprintf(bad, sizeof(bad), "%s/text.pairs", dir);
    tu_write_file(bad, "hello, this is not a pairs file\n", 0644);
    cr_assert_eq(ps_eval_pairs_read(bad, 2, &buf, &len, &cap, &err), PS_DATA);
    cr_assert(strstr(err.msg, "not a pairs file") && strstr(err.msg, bad), "%s", err.msg);

    /* cut short: the header says 2 pairs, one and a half follow */
    char *whole = malloc(32);
    FILE *f = fopen(path, "rb");
    cr_assert_eq(fread(whole, 1, 32, f), 32);
    fclose(f);
    snprintf(bad, sizeof(bad), "%s/short.pairs", dir);
    f = fopen(bad, "wb");
    cr_assert_eq(fwrite(whole, 1, 28, f), 28);
    fclose(f);
    cr_assert_eq(ps_eval_pairs_read(bad, 2, &buf, &len, &cap, &err), PS_DATA);
    cr_assert(strstr(err.msg, "28 bytes, want 32 for 2 pairs") && strstr(err.msg, bad), "%s",
              err.msg);
    /* a header that claims more than the bound */
    uint64_t huge = PS_EVAL_PAIRS_MAX + 1;
    memcpy(whole + 8, &huge, 8);
    f = fopen(bad, "wb");
    cr_assert_eq(fwrite(whole, 1, 32, f), 32);
    fclose(f);
    cr_assert_eq(ps_eval_pairs_read(bad, huge, &buf, &len, &cap, &err), PS_DATA);
    free(whole);
    cr_assert_eq(len, 0);
    cr_assert_null(buf);

    /* cannot write: the directory does not exist */
    snprintf(bad, sizeof(bad), "%s/no/such/dir/x.pairs", dir);
    cr_assert_eq(ps_eval_pairs_write(bad, p, 2, &err), PS_IO);
    cr_assert(strstr(err.msg, "no/such/dir/x.pairs.tmp") != NULL, "%s", err.msg);

    /* a directory name too long for the buffer */
    char small[16];
    cr_assert_eq(ps_eval_pairs_path(small, sizeof(small), dir, 1, 0, &err), PS_TOO_LARGE);
    cr_assert(strstr(err.msg, dir) != NULL, "%s", err.msg);
}
