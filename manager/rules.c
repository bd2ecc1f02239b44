/*
 * rules.c - run_at selection.
 *
 *   primary   the system's primary site; when it is known to be offline
 *             (not merely never heard from), its standby (when online)
 *             takes its place
 *   standby   the standby; when it is known to be offline, the primary
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
#include "health.h"
#include "kind.h"

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
            /* Known offline, not merely never heard from: a standby that
             * started before its bridges came up ran its primary's work too. */
            if (standby && primary && cfm_health_seen(st, primary) == CFM_SITE_OFFLINE &&
                cfm_health_seen(st, standby) == CFM_SITE_ONLINE)
                chosen = standby;
        } else if (strcmp(run_at, "standby") == 0) {
            chosen = standby ? standby : primary;
            if (standby && primary && cfm_health_seen(st, standby) == CFM_SITE_OFFLINE &&
                cfm_health_seen(st, primary) == CFM_SITE_ONLINE)
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
