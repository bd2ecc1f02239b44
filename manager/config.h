/*
 * config.h - the site configuration of one cfm-manager: a JSON file
 * (--config) and/or command-line flags, flags winning over the file.
 *
 *   {"site": "site-a", "broker": {"host": "127.0.0.1", "port": 1883,
 *    "username": "cfm-site-a", "password_file": "/etc/cfm/site-a.pw"},
 *    "state_dir": "/var/lib/cfm", "driver": {"type": "local"},
 *    "procedures_dir": "/usr/share/cfm/procedures", "log_level": "info",
 *    "event_dedup_s": 604800, "run_history_s": 2592000}
 */
#ifndef CFM_CONFIG_H
#define CFM_CONFIG_H

#include <limits.h>
#include <stdint.h>
#include <jansson.h>

#include "err.h"
#include "bounds.h"
#include "log.h"

#define CFM_MAX_HOST 255
#define CFM_MAX_SECRET 256

struct cfm_config {
    char config_path[PATH_MAX];       /* "" when no --config (SIGHUP then only re-applies flags) */
    char site[CFM_MAX_ID + 1];
    char broker_host[CFM_MAX_HOST + 1];
    int broker_port;
    char username[CFM_MAX_ID + 1];    /* "" = anonymous */
    char password[CFM_MAX_SECRET + 1];
    char state_dir[PATH_MAX];
    char procedures_dir[PATH_MAX];    /* "" = <state_dir>/procedures is not assumed: none */
    json_t *driver;                   /* owned; {"type": "local", ...} */
    enum cfm_log_level log_level;
    int64_t event_dedup_s;            /* how long a handled event's id is remembered */
    int64_t run_history_s;            /* how long an ended run's record is kept */
};

#define CFM_EVENT_DEDUP_DEFAULT_S (7 * 24 * 3600)
#define CFM_EVENT_DEDUP_MAX_S ((int64_t)10 * 366 * 24 * 3600)
#define CFM_RUN_HISTORY_DEFAULT_S (30 * 24 * 3600)
#define CFM_RUN_HISTORY_MAX_S CFM_EVENT_DEDUP_MAX_S

/* Fills cfg from argv (the manager's command line, argv[0] included): reads
 * --config FILE first, then applies every other flag over it, then checks
 * that the result is complete. Returns CFM_OK; CFM_ECONFIG with why naming
 * the field or flag and what is wrong (one line); or CFM_EINVAL when help
 * was asked for (why then holds nothing). Release with cfm_config_free(). */
enum cfm_err cfm_config_from_args(int argc, char **argv, struct cfm_config *cfg,
                                  struct cfm_why *why);

/* Releases what cfg owns; cfg itself is the caller's. */
void cfm_config_free(struct cfm_config *cfg);

/* The usage text for --help and usage errors. */
const char *cfm_config_usage(void);

#endif
