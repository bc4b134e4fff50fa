/* cli.h - the options every program of a job takes, parsed one way: --config FILE, --set
 * KEY=VALUE (repeatable), --verbose, --help/-h, and one index option (--shard, --rank). Each
 * program handles its own extra options where ps_cli_arg says PS_CLI_OTHER. */
#ifndef PS_CLI_H
#define PS_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define PS_CLI_MAX_SETS 64

typedef struct {
    const char *prog;       /* in messages: "ps-server" */
    const char *usage;      /* printed by --help and after a usage error */
    const char *index_flag; /* "--shard", "--rank", or NULL for none */
    const char *config;     /* --config */
    const char *sets[PS_CLI_MAX_SETS];
    size_t n_sets;
    bool verbose;
    long index; /* -1 until given */
} ps_cli;

typedef enum {
    PS_CLI_TAKEN, /* a shared option: *i is past its value */
    PS_CLI_OTHER, /* not a shared option: the caller's to handle */
    PS_CLI_EXIT,  /* --help printed (exit 0) or an error printed (exit 2): see *code */
} ps_cli_result;

/* Sets index to -1, the rest to empty; prog, usage and index_flag are borrowed. */
void ps_cli_init(ps_cli *c, const char *prog, const char *usage, const char *index_flag);

/* Set by ps-launch for its children: its pid. */
#define PS_LAUNCH_PID_ENV "PS_LAUNCH_PID"
/* A child of ps-launch (PS_LAUNCH_PID set) gets SIGTERM when the launcher dies, however it
 * dies (SIGKILL included: it can stop nothing then), and stops as on any SIGTERM; if the
 * launcher is already gone, at once. No effect otherwise. */
void ps_cli_end_with_launcher(void);

/* Looks at argv[*i]. */
ps_cli_result ps_cli_arg(ps_cli *c, int argc, char **argv, int *i, int *code);

/* After the last argument: checks that --config (and the index option) were given, then loads
 * the job file with the --set overrides. false after printing why (exit 2). */
bool ps_cli_load(const ps_cli *c, ps_job_config *job);

#endif
