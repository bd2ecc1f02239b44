/*
 * main.c - cfm-agent: the command line, one libuv loop, and the signals
 * that stop it. A configuration error is one line naming the flag and exit
 * status 2; SIGTERM or SIGINT stops the agent cleanly (offline status,
 * DISCONNECT) with status 0; a failure at start-up is status 1. At the end
 * uv_loop_close must succeed: it proves every handle was closed.
 */
#include <errno.h>
#include <getopt.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "agent.h"
#include "cfgutil.h"
#include "exec.h"
#include "id.h"
#include "log.h"

#define DEFAULT_PORT 1883
#define DEFAULT_STATUS_S 5
#define MAX_STATUS_S 3600

static const char usage[] =
    "usage: cfm-agent --vm ID --broker HOST:PORT --root DIR\n"
    "                 [--username NAME --password-file FILE] [--status-interval SECONDS]\n"
    "                 [--state-dir DIR] [--log-level debug|info|warn|error]\n"
    "                 [--stop-vm-processes]\n"
    "Runs commands and writes files on this VM for cfm; see docs/agent.md.\n";

struct stopper {
    uv_signal_t term, intr;
    struct cfm_agent *agent;
};

static enum cfm_err copy_flag(char *dst, size_t cap, const char *src, const char *flag,
                              struct cfm_why *why)
{
    size_t n = strlen(src);

    if (n == 0)
        return cfm_why_set(why, CFM_ECONFIG, "%s: must not be empty", flag);
    if (n >= cap)
        return cfm_why_set(why, CFM_ECONFIG, "%s: longer than %zu characters", flag, cap - 1);
    memcpy(dst, src, n + 1);
    return CFM_OK;
}

/* Resolves dir (creating it when create) into out (PATH_MAX bytes). */
static enum cfm_err resolve_dir(const char *dir, bool create, char *out, const char *flag,
                                struct cfm_why *why)
{
    struct stat st;

    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cfm_why_set(why, CFM_ECONFIG, "%s: cannot create '%s': %s", flag, dir,
                           strerror(errno));
    if (!realpath(dir, out) || stat(out, &st) != 0)
        return cfm_why_set(why, CFM_ECONFIG, "%s: '%s': %s", flag, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return cfm_why_set(why, CFM_ECONFIG, "%s: '%s' is not a directory", flag, dir);
    return CFM_OK;
}

/* Returns CFM_EINVAL for --help, CFM_ECONFIG with why for a bad flag. */
static enum cfm_err parse_args(int argc, char **argv, struct cfm_agent_config *cfg,
                               enum cfm_log_level *level, struct cfm_why *why)
{
    static const struct option opts[] = {
        {"vm", required_argument, NULL, 'v'},
        {"broker", required_argument, NULL, 'b'},
        {"root", required_argument, NULL, 'r'},
        {"username", required_argument, NULL, 'u'},
        {"password-file", required_argument, NULL, 'p'},
        {"status-interval", required_argument, NULL, 'i'},
        {"state-dir", required_argument, NULL, 's'},
        {"log-level", required_argument, NULL, 'l'},
        {"stop-vm-processes", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *root = NULL, *state = NULL, *password_file = NULL;
    char path[PATH_MAX];
    enum cfm_err err = CFM_OK;
    int c, n;
    long v;
    char *end;

    memset(cfg, 0, sizeof *cfg);
    cfg->status_interval_s = DEFAULT_STATUS_S;
    *level = CFM_LOG_INFO;
    opterr = 0;
    while (err == CFM_OK && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'v':
            if (cfm_id_check(optarg, "--vm", why) != CFM_OK)
                return CFM_ECONFIG;
            memcpy(cfg->vm, optarg, strlen(optarg) + 1);
            break;
        case 'b':
            cfg->broker_port = DEFAULT_PORT;
            err = cfm_parse_hostport(optarg, cfg->broker_host, sizeof cfg->broker_host,
                                     &cfg->broker_port, "--broker", why);
            break;
        case 'r': root = optarg; break;
        case 's': state = optarg; break;
        case 'u':
            err = copy_flag(cfg->username, sizeof cfg->username, optarg, "--username", why);
            break;
        case 'p': password_file = optarg; break;
        case 'i':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > MAX_STATUS_S)
                return cfm_why_set(why, CFM_ECONFIG,
                                   "--status-interval: must be whole seconds from 1 to %d",
                                   MAX_STATUS_S);
            cfg->status_interval_s = (unsigned)v;
            break;
        case 'l':
            if (cfm_log_parse_level(optarg, level) != CFM_OK)
                return cfm_why_set(why, CFM_ECONFIG,
                                   "--log-level: must be debug, info, warn or error");
            break;
        case 'k': cfg->stop_vm_processes = true; break;
        case 'h': return CFM_EINVAL;
        case ':':
            return cfm_why_set(why, CFM_ECONFIG, "%s: needs a value", argv[optind - 1]);
        default:
            return cfm_why_set(why, CFM_ECONFIG, "unknown flag '%s' (see --help)",
                               argv[optind - 1]);
        }
    }
    if (err != CFM_OK)
        return err;
    if (optind < argc)
        return cfm_why_set(why, CFM_ECONFIG, "unexpected argument '%s' (see --help)",
                           argv[optind]);
    if (!cfg->vm[0])
        return cfm_why_set(why, CFM_ECONFIG, "--vm: missing (the VM's id)");
    if (!cfg->broker_host[0])
        return cfm_why_set(why, CFM_ECONFIG, "--broker: missing (HOST:PORT of the site's broker)");
    if (!root)
        return cfm_why_set(why, CFM_ECONFIG, "--root: missing (the VM's disk)");
    if (password_file && !cfg->username[0])
        return cfm_why_set(why, CFM_ECONFIG, "--password-file: needs --username");
    if (password_file && (err = cfm_read_secret(password_file, cfg->password,
                                                sizeof cfg->password, "--password-file",
                                                why)) != CFM_OK)
        return err;
    if ((err = resolve_dir(root, false, cfg->root, "--root", why)) != CFM_OK)
        return err;
    if (!state) {
        n = snprintf(path, sizeof path, "%s/.cfm-agent",
                     strcmp(cfg->root, "/") == 0 ? "" : cfg->root);
        if (n < 0 || (size_t)n >= sizeof path)
            return cfm_why_set(why, CFM_ECONFIG, "--root: too long");
        state = path;
    }
    return resolve_dir(state, true, cfg->state_dir, "--state-dir", why);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct stopper *st = s->data;

    cfm_info("agent", "signal %d: stopping", signum);
    cfm_agent_stop(st->agent);
}

static void on_stopped(void *arg)
{
    struct stopper *st = arg;

    uv_close((uv_handle_t *)&st->term, NULL);
    uv_close((uv_handle_t *)&st->intr, NULL);
}

int main(int argc, char **argv)
{
    struct cfm_agent_config cfg;
    struct cfm_why why = {{0}};
    struct stopper st = {0};
    enum cfm_log_level level;
    enum cfm_err err;
    uv_loop_t loop;
    int status = 0;

    err = parse_args(argc, argv, &cfg, &level, &why);
    if (err == CFM_EINVAL) {
        fputs(usage, stdout);
        return 0;
    }
    if (err != CFM_OK) {
        fprintf(stderr, "cfm-agent: %s\n", why.text);
        return 2;
    }
    cfm_log_set_level(level);
    /* A command that does not read its stdin must not kill the agent. */
    signal(SIGPIPE, SIG_IGN);
    mosquitto_lib_init();
    uv_loop_init(&loop);
    if (cfm_agent_start(&loop, &cfg, on_stopped, &st, &st.agent, &why) != CFM_OK) {
        fprintf(stderr, "cfm-agent: %s\n", why.text);
        status = 1;
    } else {
        uv_signal_init(&loop, &st.term);
        uv_signal_init(&loop, &st.intr);
        st.term.data = st.intr.data = &st;
        uv_signal_start(&st.term, on_signal, SIGTERM);
        uv_signal_start(&st.intr, on_signal, SIGINT);
        uv_run(&loop, UV_RUN_DEFAULT);
        /* With --stop-vm-processes the stop waited for the VM's processes
         * (SIGKILL for what ignored SIGTERM for 2 s): none is left. */
        cfm_agent_free(st.agent);
    }
    if (uv_loop_close(&loop) != 0) {
        cfm_error("agent", "handles were left open at exit");
        status = status ? status : 1;
    }
    mosquitto_lib_cleanup();
    return status;
}
