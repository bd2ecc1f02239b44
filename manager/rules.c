/*
 * rules.c - run_at selection.
 *
 *   primary   the system's primary site; when it is offline, its standby
 *             (when online) takes its place
 *   standby   the standby; when it is offline, the primary
 *   target    the event's payload.target_site
 *   origin    the site that published the event
 *   all       every site of the system
 *   <site>    that site
 *
 * Liveness comes from the retained site statuses every manager records
 * (health.c), so all managers choose alike once they have seen the same
 * statuses. The run id is derived from (event id, site, type) with SHA-256,
 * so a redelivered event maps to the same run.
 */
#include "rules.h"

#include <stdio.h>
#include <string.h>

#include "digest.h"
#include "kind.h"

struct online_ctx {
    const char *site;
    bool online, offline; /* both false: never heard from */
};

static bool find_state(void *arg, const struct cfm_site_rec *rec)
{
    struct online_ctx *c = arg;

    if (strcmp(rec->site, c->site) != 0)
        return true;
    c->online = strcmp(rec->state, "online") == 0;
    c->offline = !c->online;
    return false;
}

static bool site_online(struct cfm_store *st, const char *site)
{
    struct online_ctx c = {.site = site};

    cfm_store_site_each(st, find_state, &c);
    return c.online;
}

/* Known to be offline: its last status (a Last Will) or its bridge says
 * so. A site this one has never heard from is not: taking it for offline
 * made a standby that started before the bridges came up run what its
 * primary was running too. */
static bool site_offline(struct cfm_store *st, const char *site)
{
    struct online_ctx c = {.site = site};

    cfm_store_site_each(st, find_state, &c);
    return c.offline;
}

static bool in_sites(const json_t *body, const char *site)
{
    json_t *v;
    size_t i;

    json_array_foreach(json_object_get(body, "sites"), i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), site) == 0)
            return true;
    return false;
}

static void derive_run_id(const char *event_id, const char *site, const char *type,
                          char out[CFM_MAX_ID + 1])
{
    char input[3 * (CFM_MAX_ID + 1) + 4], hex[CFM_SHA256_HEX_LEN + 1];
    int n = snprintf(input, sizeof input, "%s/%s/%s", event_id, site, type);

    cfm_sha256_hex(input, n > 0 ? (size_t)n : 0, hex);
    snprintf(out, CFM_MAX_ID + 1, "run-%.24s", hex);
}

bool cfm_rules_match(struct cfm_store *st, const struct cfm_obj *sys, const json_t *event,
                     const char *site, struct cfm_rule_match *m)
{
    const char *type = json_string_value(json_object_get(event, "type"));
    const char *id = json_string_value(json_object_get(event, "id"));
    json_t *binding = json_object_get(json_object_get(sys->body, "procedures"), type ? type : "");
    const char *run_at, *primary, *standby, *chosen = NULL;
    bool here;

    memset(m, 0, sizeof *m);
    if (!binding) {
        snprintf(m->reason, sizeof m->reason, "no procedure is bound to '%s'", type ? type : "?");
        return false;
    }
    run_at = json_string_value(json_object_get(binding, "run_at"));
    if (!run_at)
        run_at = "primary";
    primary = json_string_value(json_object_get(sys->body, "primary"));
    standby = json_string_value(json_object_get(sys->body, "standby"));

    if (strcmp(run_at, "all") == 0) {
        here = in_sites(sys->body, site);
        snprintf(m->reason, sizeof m->reason, "run_at all: %s", here ? "runs here" : "not a member");
    } else {
        if (strcmp(run_at, "primary") == 0) {
            chosen = primary;
            if (standby && primary && site_offline(st, primary) && site_online(st, standby))
                chosen = standby;
        } else if (strcmp(run_at, "standby") == 0) {
            chosen = standby ? standby : primary;
            if (standby && primary && site_offline(st, standby) && site_online(st, primary))
                chosen = primary;
        } else if (strcmp(run_at, "target") == 0) {
            chosen = json_string_value(
                json_object_get(json_object_get(event, "payload"), "target_site"));
        } else if (strcmp(run_at, "origin") == 0) {
            chosen = json_string_value(json_object_get(event, "origin"));
        } else {
            chosen = run_at;
        }
        here = chosen && strcmp(chosen, site) == 0;
        snprintf(m->reason, sizeof m->reason, "run_at %s: runs at %s", run_at,
                 chosen ? chosen : "(no site: payload.target_site missing?)");
    }
    if (!here)
        return false;
    snprintf(m->script, sizeof m->script, "%s",
             json_string_value(json_object_get(binding, "script")));
    m->timeout_s = (double)json_integer_value(json_object_get(binding, "timeout_s"));
    derive_run_id(id ? id : "", site, type, m->run_id);
    return true;
}
