/*
 * health.c - the sites seen on the bus. A status is "online" or "offline"
 * (the Last Will a broker publishes when it loses a manager); last_seen is
 * the last time this manager saw the site online, kept in the store so it
 * survives restarts.
 */
#include "health.h"

#include <stdlib.h>

#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define MAX_STATUS 4096

struct find_ctx {
    const char *site;
    bool found;
    char state[16];
    char last_seen[CFM_TIME_LEN];
    char *status; /* malloc'd copy of the last status payload */
};

static bool find_site(void *arg, const struct cfm_site_rec *rec)
{
    struct find_ctx *f = arg;

    if (strcmp(rec->site, f->site) != 0)
        return true;
    f->found = true;
    snprintf(f->state, sizeof f->state, "%s", rec->state);
    snprintf(f->last_seen, sizeof f->last_seen, "%s", rec->last_seen);
    free(f->status);
    f->status = strdup(rec->status);
    return false;
}

int cfm_health_on_status(struct cfm_store *st, const char *site, const void *payload,
                         size_t len)
{
    int result = -1;
    struct find_ctx f = {.site = site, .last_seen = ""};
    struct cfm_site_rec rec;
    json_error_t jerr;
    json_t *json = NULL;
    const char *state;
    char *text = NULL;

    if (len == 0)
        return -1; /* a cleared retained status */
    if (len > MAX_STATUS) {
        cfm_warn("health", "dropped status of %s: %zu bytes is over %d", site, len, MAX_STATUS);
        return -1;
    }
    json = json_loadb(payload, len, 0, &jerr);
    state = json_string_value(json_object_get(json, "state"));
    if (!state || (strcmp(state, "online") != 0 && strcmp(state, "offline") != 0)) {
        cfm_warn("health", "dropped status of %s: needs {\"state\": \"online\"|\"offline\"}",
                 site);
        goto out;
    }
    if (cfm_store_site_each(st, find_site, &f) != CFM_OK)
        goto out;
    free(f.status);
    f.status = NULL;
    if (strcmp(state, "online") == 0)
        cfm_time_now(f.last_seen);
    text = json_dumps(json, JSON_COMPACT);
    rec.site = site;
    rec.state = state;
    rec.last_seen = f.last_seen;
    rec.status = text ? text : "{}";
    if (cfm_store_site_put(st, &rec) != CFM_OK)
        cfm_error("health", "cannot record the status of %s", site);
    else
        cfm_info("health", "site %s is %s", site, state);
    result = strcmp(state, "online") == 0;
out:
    free(text);
    json_decref(json);
    return result;
}

void cfm_health_on_link(struct cfm_store *st, const char *peer, bool up)
{
    struct find_ctx f = {.site = peer};
    struct cfm_site_rec rec;
    json_t *status = NULL;
    const char *state;

    if (cfm_store_site_each(st, find_site, &f) != CFM_OK || !f.found)
        goto out;
    status = json_loads(f.status ? f.status : "{}", 0, NULL);
    state = json_string_value(json_object_get(status, "state"));
    rec.site = peer;
    rec.state = up && state && strcmp(state, "online") == 0 ? "online" : "offline";
    rec.last_seen = f.last_seen;
    rec.status = f.status ? f.status : "{}";
    if (cfm_store_site_put(st, &rec) != CFM_OK)
        cfm_error("health", "cannot record the link to %s", peer);
    else
        cfm_info("health", "the bridge to %s is %s: site %s counts as %s", peer,
                 up ? "up" : "down", peer, rec.state);
out:
    json_decref(status);
    free(f.status);
}

enum cfm_site_seen cfm_health_seen(struct cfm_store *st, const char *site)
{
    struct find_ctx f = {.site = site};
    enum cfm_site_seen seen = CFM_SITE_UNKNOWN;

    if (cfm_store_site_each(st, find_site, &f) == CFM_OK && f.found)
        seen = strcmp(f.state, "online") == 0 ? CFM_SITE_ONLINE : CFM_SITE_OFFLINE;
    free(f.status);
    return seen;
}

int64_t cfm_health_offline_ms(struct cfm_store *st, const char *site)
{
    struct find_ctx f = {.site = site};
    int64_t seen = 0, result = -1;

    if (cfm_store_site_each(st, find_site, &f) == CFM_OK && f.found &&
        strcmp(f.state, "offline") == 0 && cfm_time_parse(f.last_seen, &seen) == CFM_OK)
        result = cfm_time_ms() - seen;
    free(f.status);
    return result;
}

static bool add_site(void *arg, const struct cfm_site_rec *rec)
{
    json_array_append_new(arg, json_pack("{s:s, s:s, s:s}", "site", rec->site, "state",
                                         rec->state, "last_seen", rec->last_seen));
    return true;
}

json_t *cfm_health_sites(struct cfm_store *st)
{
    json_t *arr = json_array();

    if (arr && cfm_store_site_each(st, add_site, arr) != CFM_OK) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

json_t *cfm_health_status(const char *site, const char *state)
{
    char now[CFM_TIME_LEN];

    cfm_time_now(now);
    return json_pack("{s:s, s:s, s:s, s:I}", "state", state, "site", site, "time", now, "pid",
                     (json_int_t)getpid());
}
