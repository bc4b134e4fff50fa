/* main.c - ps-worker: argv -> job file -> training loop. The only place that exits.
 * Exit codes: 0 trained, 1 runtime failure (servers unreachable, lost), 2 usage, config or data
 * error, 130 interrupted by SIGINT/SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cli.h"
#include "config.h"
#include "train.h"

static const char usage[] =
    "usage: ps-worker --config JOB.json --rank R [--set KEY=VALUE ...] [--evaluate] [--events]\n"
    "                 [--pairs-dir DIR] [--verbose]\n"
    "\n"
    "Trains the job's model on shard R of its data (rows with index mod cluster.workers == R),\n"
    "pulling and pushing parameters on the job's servers.\n"
    "  --config JOB.json  the job file every server and worker of the job reads\n"
    "  --rank R           this worker's rank, 0 .. cluster.workers-1\n"
    "  --set KEY=VALUE    override a job key by its dotted path (e.g. fit.epochs=5)\n"
    "  --evaluate         no training: score data.validation (or data.train) with the servers'\n"
    "                     weights (start them with fit.init_from), one loss/accuracy line\n"
    "  --events           print machine-readable progress lines (used by ps-launch)\n"
    "  --pairs-dir DIR    leave each validation pass's (score, label) pairs in DIR for the\n"
    "                     job-wide AUC (used by ps-launch; alone, a worker prints its own)\n"
    "  --verbose          log connection attempts, and after each epoch's line where its\n"
    "                     steps' time went (data, pull wait, compute, push)\n";

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

int main(int argc, char **argv) {
    ps_cli cli;
    ps_cli_init(&cli, "ps-worker", usage, "--rank");
    ps_cli_end_with_launcher(); /* under ps-launch: not past it */
    bool events = false, evaluate = false;
    const char *pairs_dir = NULL;
    for (int i = 1; i < argc; i++) {
        int code;
        ps_cli_result r = ps_cli_arg(&cli, argc, argv, &i, &code);
        if (r == PS_CLI_EXIT) return code;
        if (r == PS_CLI_TAKEN) continue;
        if (strcmp(argv[i], "--events") == 0) {
            events = true;
        } else if (strcmp(argv[i], "--evaluate") == 0) {
            evaluate = true;
        } else if (strcmp(argv[i], "--pairs-dir") == 0 && i + 1 < argc && argv[i + 1][0]) {
            pairs_dir = argv[++i];
        } else {
            fprintf(stderr, "ps-worker: unknown or incomplete option \"%s\"\n%s", argv[i], usage);
            return 2;
        }
    }
    static ps_job_config job;
    if (!ps_cli_load(&cli, &job)) return 2;
    const char *config = cli.config;
    const long rank = cli.index;
    const bool verbose = cli.verbose;
    ps_error err = {0};
    if ((uint32_t)rank >= job.num_workers) {
        fprintf(stderr, "ps-worker: --rank %ld, but cluster.workers is %u in %s\n", rank,
                job.num_workers, config);
        return 2;
    }
    if (job.servers_auto) {
        fprintf(stderr,
                "ps-worker: %s: cluster.servers is a count (%u); a worker needs their addresses: "
                "list them as \"host:port\", or start the job with ps-launch\n",
                config, job.num_servers);
        return 2;
    }
    /* fit.threads: with 2 or more one prepares batches (train.c), the rest are BLAS's; auto
     * (0) is resolved by ps-launch from the CPUs its processes leave free. A worker started
     * alone cannot know what shares the machine: BLAS gets 1, plus the prep thread (which adds
     * no work) when there are 2 CPUs. OPENBLAS_NUM_THREADS still wins. */
    if (job.fit.threads == 0) job.fit.threads = sysconf(_SC_NPROCESSORS_ONLN) >= 2 ? 2 : 1;
    if (getenv("OPENBLAS_NUM_THREADS") == NULL)
        openblas_set_num_threads(job.fit.threads > 1 ? (int)job.fit.threads - 1 : 1);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ps_train_options opt = {.job = &job, .rank = (uint32_t)rank, .events = events,
                            .evaluate = evaluate, .pairs_dir = pairs_dir, .times = verbose,
                            .out = stdout, .tty = isatty(STDOUT_FILENO), .stop = &stop_flag,
                            .log = {.level = verbose ? PS_LOG_DEBUG : PS_LOG_INFO}};
    snprintf(opt.log.prefix, sizeof(opt.log.prefix), "worker %ld", rank);
    ps_status st = ps_train_run(&opt, &err);
    if (st == PS_OK) return 0;
    if (stop_flag) {
        fprintf(stderr, "ps-worker %ld: %s\n", rank, err.msg);
        return 130;
    }
    fprintf(stderr, "ps-worker %ld: %s\n", rank, err.msg);
    return st == PS_DATA || st == PS_CONFIG ? 2 : 1;
}
