/*
 * config.c - reading and checking a site configuration. A configuration
 * error is reported as one line naming the field ("broker.port: must be an
 * integer from 1 to 65535") so an operator can fix it without reading code.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cfgutil.h"
#include "driver.h"
#include "id.h"

#define MAX_CONFIG_FILE (64u << 10)

static const char usage[] =
    "usage: cfm-manager [--config FILE] [--site ID] [--broker HOST:PORT]\n"
    "                   [--state-dir DIR] [--driver local] [--procedures DIR]\n"
    "                   [--username NAME] [--password-file FILE] [--log-level LEVEL]\n"
    "                   [--event-dedup-s SECONDS] [--run-history-s SECONDS]\n"
    "Flags override the same fields of the --config file; see docs/operations.md.\n";

const char *cfm_config_usage(void)
{
    return usage;
}

static enum cfm_err copy_str(char *dst, size_t cap, const char *src, const char *field,
                             struct cfm_why *why)
{
    size_t n = strlen(src);

    if (n == 0)
        return cfm_why_set(why, CFM_ECONFIG, "%s: must not be empty", field);
    if (n >= cap)
        return cfm_why_set(why, CFM_ECONFIG, "%s: longer than %zu characters", field, cap - 1);
    memcpy(dst, src, n + 1);
    return CFM_OK;
}

static enum cfm_err set_driver(struct cfm_config *cfg, json_t *driver, const char *field,
                               struct cfm_why *why)
{
    json_t *type;

    if (json_is_string(driver))
        driver = json_pack("{s:O}", "type", driver);
    else if (json_is_object(driver))
        json_incref(driver);
    else
        return cfm_why_set(why, CFM_ECONFIG, "%s: must be \"local\" or {\"type\": ...}", field);
    type = json_object_get(driver, "type");
    if (!json_is_string(type) || !cfm_driver_find(json_string_value(type))) {
        json_decref(driver);
        return cfm_why_set(why, CFM_ECONFIG, "%s.type: unknown driver (known: %s)", field,
                           cfm_driver_names());
    }
    json_decref(cfg->driver);
    cfg->driver = driver;
    return CFM_OK;
}

/* A number of seconds from 1 to max: the file's field name (left alone
 * when absent) or the value of flag. */
static enum cfm_err seconds_field(const json_t *root, const char *name, int64_t max,
                                  int64_t *dst, const char *path, struct cfm_why *why)
{
    const json_t *v = json_object_get(root, name);

    if (!v)
        return CFM_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
        return cfm_why_set(why, CFM_ECONFIG, "%s: %s: must be an integer from 1 to %lld", path,
                           name, (long long)max);
    *dst = json_integer_value(v);
    return CFM_OK;
}

static enum cfm_err seconds_flag(const char *val, const char *flag, int64_t max, int64_t *dst,
                                 struct cfm_why *why)
{
    char *end = NULL;
    long long n;

    errno = 0;
    n = strtoll(val, &end, 10);
    if (errno || end == val || *end || n < 1 || n > max)
        return cfm_why_set(why, CFM_ECONFIG,
                           "%s: '%.32s' is not a number of seconds from 1 to %lld", flag, val,
                           (long long)max);
    *dst = n;
    return CFM_OK;
}

static enum cfm_err load_file(struct cfm_config *cfg, const char *path, struct cfm_why *why)
{
    static const char *const known[] = {"site",           "broker",    "state_dir",    "driver",
                                        "procedures_dir", "log_level", "event_dedup_s",
                                        "run_history_s"};
    enum cfm_err err = CFM_ECONFIG;
    json_error_t jerr;
    json_t *root, *v, *broker;
    const char *key;

    if (copy_str(cfg->config_path, sizeof cfg->config_path, path, "--config", why) != CFM_OK)
        return CFM_ECONFIG;
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (jerr.line < 0)
            return cfm_why_set(why, CFM_ECONFIG, "%s: %s", path, jerr.text);
        return cfm_why_set(why, CFM_ECONFIG, "%s: line %d, column %d: %s", path, jerr.line,
                           jerr.column, jerr.text);
    }
    if (!json_is_object(root)) {
        cfm_why_set(why, CFM_ECONFIG, "%s: must be a JSON object", path);
        goto out;
    }
    json_object_foreach(root, key, v) {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok) {
            cfm_why_set(why, CFM_ECONFIG,
                        "%s: unknown field '%.64s' (known: site, broker, state_dir, driver, "
                        "procedures_dir, log_level, event_dedup_s, run_history_s)",
                        path, key);
            goto out;
        }
    }
#define STRING_FIELD(name, dst)                                                            \
    if ((v = json_object_get(root, name))) {                                               \
        if (!json_is_string(v)) {                                                          \
            cfm_why_set(why, CFM_ECONFIG, "%s: %s: must be a string", path, name);         \
            goto out;                                                                      \
        }                                                                                  \
        if (copy_str(dst, sizeof dst, json_string_value(v), name, why) != CFM_OK)          \
            goto out;                                                                      \
    }
    STRING_FIELD("site", cfg->site)
    STRING_FIELD("state_dir", cfg->state_dir)
    STRING_FIELD("procedures_dir", cfg->procedures_dir)
    if ((v = json_object_get(root, "log_level")) &&
        cfm_log_parse_level(json_string_value(v), &cfg->log_level) != CFM_OK) {
        cfm_why_set(why, CFM_ECONFIG, "%s: log_level: must be debug, info, warn or error", path);
        goto out;
    }
    if (seconds_field(root, "event_dedup_s", CFM_EVENT_DEDUP_MAX_S, &cfg->event_dedup_s, path,
                      why) != CFM_OK ||
        seconds_field(root, "run_history_s", CFM_RUN_HISTORY_MAX_S, &cfg->run_history_s, path,
                      why) != CFM_OK)
        goto out;
    if ((v = json_object_get(root, "driver")) && set_driver(cfg, v, "driver", why) != CFM_OK)
        goto out;
    if ((broker = json_object_get(root, "broker"))) {
        if (!json_is_object(broker)) {
            cfm_why_set(why, CFM_ECONFIG, "%s: broker: must be an object", path);
            goto out;
        }
        json_object_foreach(broker, key, v) {
            if (strcmp(key, "host") == 0 && json_is_string(v)) {
                if (copy_str(cfg->broker_host, sizeof cfg->broker_host, json_string_value(v),
                             "broker.host", why) != CFM_OK)
                    goto out;
            } else if (strcmp(key, "port") == 0 && json_is_integer(v)) {
                json_int_t port = json_integer_value(v);
                if (port < 1 || port > 65535) {
                    cfm_why_set(why, CFM_ECONFIG, "%s: broker.port: must be from 1 to 65535",
                                path);
                    goto out;
                }
                cfg->broker_port = (int)port;
            } else if (strcmp(key, "username") == 0 && json_is_string(v)) {
                if (copy_str(cfg->username, sizeof cfg->username, json_string_value(v),
                             "broker.username", why) != CFM_OK)
                    goto out;
            } else if (strcmp(key, "password_file") == 0 && json_is_string(v)) {
                if (cfm_read_secret(json_string_value(v), cfg->password, sizeof cfg->password,
                                    "broker.password_file", why) != CFM_OK)
                    goto out;
            } else {
                cfm_why_set(why, CFM_ECONFIG,
                            "%s: broker.%.64s: unknown field or wrong type (host: string, port: "
                            "integer, username: string, password_file: string)",
                            path, key);
                goto out;
            }
        }
    }
#undef STRING_FIELD
    err = CFM_OK;
out:
    json_decref(root);
    return err;
}

static enum cfm_err check(struct cfm_config *cfg, struct cfm_why *why)
{
    struct stat sb;

    if (!cfg->site[0])
        return cfm_why_set(why, CFM_ECONFIG, "site: missing (--site ID or \"site\" in the config)");
    if (cfm_id_check(cfg->site, "site", why) != CFM_OK)
        return cfm_why_prefix(why, CFM_ECONFIG, "site");
    if (!cfg->state_dir[0])
        return cfm_why_set(why, CFM_ECONFIG,
                           "state_dir: missing (--state-dir DIR or \"state_dir\" in the config)");
    if (stat(cfg->state_dir, &sb) != 0 && mkdir(cfg->state_dir, 0700) != 0)
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: cannot create '%s': %s", cfg->state_dir,
                           strerror(errno));
    if (stat(cfg->state_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return cfm_why_set(why, CFM_ECONFIG, "state_dir: '%s' is not a directory", cfg->state_dir);
    if (cfg->procedures_dir[0] &&
        (stat(cfg->procedures_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        return cfm_why_set(why, CFM_ECONFIG, "procedures_dir: '%s' is not a directory",
                           cfg->procedures_dir);
    if (!cfg->driver) {
        json_t *local = json_string("local");
        enum cfm_err err = set_driver(cfg, local, "driver", why);
        json_decref(local);
        return err;
    }
    return CFM_OK;
}

enum cfm_err cfm_config_from_args(int argc, char **argv, struct cfm_config *cfg,
                                  struct cfm_why *why)
{
    enum cfm_err err;

    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->broker_host, sizeof cfg->broker_host, "127.0.0.1");
    cfg->broker_port = 1883;
    cfg->log_level = CFM_LOG_INFO;
    cfg->event_dedup_s = CFM_EVENT_DEDUP_DEFAULT_S;
    cfg->run_history_s = CFM_RUN_HISTORY_DEFAULT_S;

    /* --config first, so that flags override it wherever they stand. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 == argc)
                return cfm_why_set(why, CFM_ECONFIG, "--config: needs a FILE");
            if ((err = load_file(cfg, argv[i + 1], why)) != CFM_OK)
                return err;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0)
            return CFM_EINVAL;
        if (!val)
            return cfm_why_set(why, CFM_ECONFIG, "%s: needs a value (or unknown flag)", flag);
        i++;
        if (strcmp(flag, "--config") == 0)
            err = CFM_OK;
        else if (strcmp(flag, "--site") == 0)
            err = copy_str(cfg->site, sizeof cfg->site, val, "--site", why);
        else if (strcmp(flag, "--broker") == 0)
            err = cfm_parse_hostport(val, cfg->broker_host, sizeof cfg->broker_host,
                                     &cfg->broker_port, "--broker", why);
        else if (strcmp(flag, "--state-dir") == 0)
            err = copy_str(cfg->state_dir, sizeof cfg->state_dir, val, "--state-dir", why);
        else if (strcmp(flag, "--procedures") == 0)
            err = copy_str(cfg->procedures_dir, sizeof cfg->procedures_dir, val, "--procedures",
                           why);
        else if (strcmp(flag, "--driver") == 0) {
            json_t *d = json_string(val);
            err = set_driver(cfg, d, "--driver", why);
            json_decref(d);
        } else if (strcmp(flag, "--username") == 0)
            err = copy_str(cfg->username, sizeof cfg->username, val, "--username", why);
        else if (strcmp(flag, "--password-file") == 0)
            err = cfm_read_secret(val, cfg->password, sizeof cfg->password, "--password-file",
                                  why);
        else if (strcmp(flag, "--log-level") == 0) {
            err = cfm_log_parse_level(val, &cfg->log_level);
            if (err != CFM_OK)
                cfm_why_set(why, CFM_ECONFIG, "--log-level: must be debug, info, warn or error");
        } else if (strcmp(flag, "--event-dedup-s") == 0)
            err = seconds_flag(val, flag, CFM_EVENT_DEDUP_MAX_S, &cfg->event_dedup_s, why);
        else if (strcmp(flag, "--run-history-s") == 0)
            err = seconds_flag(val, flag, CFM_RUN_HISTORY_MAX_S, &cfg->run_history_s, why);
        else
            return cfm_why_set(why, CFM_ECONFIG, "%s: unknown flag", flag);
        if (err != CFM_OK)
            return CFM_ECONFIG;
    }
    return check(cfg, why);
}

void cfm_config_free(struct cfm_config *cfg)
{
    if (!cfg)
        return;
    json_decref(cfg->driver);
    cfg->driver = NULL;
}
