/* cli.c - shared command-line options; see cli.h. */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

void ps_cli_init(ps_cli *c, const char *prog, const char *usage, const char *index_flag) {
    memset(c, 0, sizeof(*c));
    c->prog = prog, c->usage = usage, c->index_flag = index_flag;
    c->index = -1;
}

void ps_cli_end_with_launcher(void) {
    const char *v = getenv(PS_LAUNCH_PID_ENV);
    if (v == NULL || v[0] == '\0') return;
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* when the parent goes: the launcher, or a wrapper */
    /* gone before that took hold: the init process (1) has us, and it is not the launcher */
    if (getppid() == 1 && strtol(v, NULL, 10) != 1) raise(SIGTERM);
}

ps_cli_result ps_cli_arg(ps_cli *c, int argc, char **argv, int *i, int *code) {
    const char *a = argv[*i];
    const bool has_val = *i + 1 < argc;
    *code = 2;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        fputs(c->usage, stdout);
        *code = 0;
        return PS_CLI_EXIT;
    }
    if (strcmp(a, "--verbose") == 0) {
        c->verbose = true;
        return PS_CLI_TAKEN;
    }
    const bool is_config = strcmp(a, "--config") == 0, is_set = strcmp(a, "--set") == 0;
    const bool is_index = c->index_flag != NULL && strcmp(a, c->index_flag) == 0;
    if (!is_config && !is_set && !is_index) return PS_CLI_OTHER;
    if (!has_val) {
        fprintf(stderr, "%s: %s needs a value\n%s", c->prog, a, c->usage);
        return PS_CLI_EXIT;
    }
    const char *v = argv[++*i];
    if (is_config) {
        c->config = v;
    } else if (is_set) {
        if (c->n_sets == PS_CLI_MAX_SETS) {
            fprintf(stderr, "%s: more than %d --set options\n", c->prog, PS_CLI_MAX_SETS);
            return PS_CLI_EXIT;
        }
        c->sets[c->n_sets++] = v;
    } else {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || n < 0 || errno == ERANGE || n > (long)UINT32_MAX) {
            fprintf(stderr, "%s: %s %s: not an index from 0 to %u\n", c->prog, a, v, UINT32_MAX);
            return PS_CLI_EXIT;
        }
        c->index = n;
    }
    return PS_CLI_TAKEN;
}

bool ps_cli_load(const ps_cli *c, ps_job_config *job) {
    if (c->config == NULL) {
        fprintf(stderr, "%s: a job file is required\n%s", c->prog, c->usage);
        return false;
    }
    if (c->index_flag != NULL && c->index < 0) {
        fprintf(stderr, "%s: %s is required\n%s", c->prog, c->index_flag, c->usage);
        return false;
    }
    for (size_t i = 0; i < c->n_sets; i++) {
        if (strncmp(c->sets[i], "cluster.token=", 14) == 0) {
            fprintf(stderr, "%s: --set cluster.token would put the token on the command line, "
                    "where every user of the machine sees it; use cluster.token_file or the "
                    "environment variable PS_CLUSTER_TOKEN\n", c->prog);
            return false;
        }
    }
    ps_error err = {0};
    if (ps_config_load(c->config, c->sets, c->n_sets, job, &err) != PS_OK) {
        fprintf(stderr, "%s: %s\n", c->prog, err.msg);
        return false;
    }
    const char *env = getenv("PS_CLUSTER_TOKEN"); /* wins over the job file's */
    if (env != NULL && env[0] != '\0') {
        if (strlen(env) >= sizeof(job->token)) {
            fprintf(stderr, "%s: PS_CLUSTER_TOKEN: longer than %zu bytes\n", c->prog,
                    sizeof(job->token) - 1);
            return false;
        }
        snprintf(job->token, sizeof(job->token), "%s", env);
    }
    return true;
}
