/*
 * event.c - building, checking and completing cloud events.
 */
#include "event.h"

#include <string.h>

#include "id.h"
#include "bounds.h"
#include "util.h"

json_t *cfm_event_new_id(const char *id, const char *system, const char *type,
                         const char *origin, json_t *payload)
{
    char now[CFM_TIME_LEN];

    if (!payload)
        payload = json_object();
    if (!payload)
        return NULL;
    cfm_time_now(now);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", id, "type", type, "system", system,
                     "origin", origin, "time", now, "payload", payload);
}

json_t *cfm_event_new(const char *system, const char *type, const char *origin, json_t *payload)
{
    char id[CFM_UUID_LEN];

    if (cfm_uuid(id) != CFM_OK) {
        json_decref(payload);
        return NULL;
    }
    return cfm_event_new_id(id, system, type, origin, payload);
}

static enum cfm_err check_string_field(json_t *ev, const char *key, const char *want,
                                       struct cfm_why *why)
{
    json_t *v = json_object_get(ev, key);

    if (!v)
        return CFM_OK;
    if (!json_is_string(v))
        return cfm_why_set(why, CFM_EINVAL, "event field '%s' must be a string", key);
    if (want && strcmp(json_string_value(v), want) != 0)
        return cfm_why_set(why, CFM_EINVAL, "event field '%s' is '%.64s' but the topic says '%s'",
                           key, json_string_value(v), want);
    return CFM_OK;
}

enum cfm_err cfm_event_parse(const char *text, size_t len, const char *system, const char *type,
                             const char *origin_default, json_t **out, struct cfm_why *why)
{
    static const char *const known[] = {"id", "type", "system", "origin", "time", "payload"};
    enum cfm_err err = CFM_EINVAL;
    json_error_t jerr;
    json_t *ev = NULL;
    const char *key;
    json_t *value;

    *out = NULL;
    if (len > CFM_MAX_PAYLOAD)
        return cfm_why_set(why, CFM_ETOOBIG, "event is %zu bytes; the limit is %u", len,
                           CFM_MAX_PAYLOAD);
    ev = len == 0 ? json_object() : json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!ev) {
        cfm_why_set(why, CFM_EINVAL, "event is not JSON: line %d, column %d: %s", jerr.line,
                    jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(ev)) {
        cfm_why_set(why, CFM_EINVAL, "event must be a JSON object");
        goto out;
    }
    json_object_foreach(ev, key, value) {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok) {
            cfm_why_set(why, CFM_EINVAL,
                        "unknown event field '%.64s' (known: id, type, system, origin, time, "
                        "payload)",
                        key);
            goto out;
        }
    }
    if ((err = check_string_field(ev, "system", system, why)) != CFM_OK ||
        (err = check_string_field(ev, "type", type, why)) != CFM_OK ||
        (err = check_string_field(ev, "id", NULL, why)) != CFM_OK ||
        (err = check_string_field(ev, "origin", NULL, why)) != CFM_OK ||
        (err = check_string_field(ev, "time", NULL, why)) != CFM_OK)
        goto out;
    err = CFM_EINVAL;

    value = json_object_get(ev, "id");
    if (value && cfm_id_check(json_string_value(value), "event id", why) != CFM_OK)
        goto out;
    if (!value) {
        char id[CFM_UUID_LEN];
        if (cfm_uuid(id) != CFM_OK) {
            err = cfm_why_set(why, CFM_EIO, "no randomness for an event id");
            goto out;
        }
        json_object_set_new(ev, "id", json_string(id));
    }
    value = json_object_get(ev, "origin");
    if (value && cfm_id_check(json_string_value(value), "event origin", why) != CFM_OK)
        goto out;
    if (!value)
        json_object_set_new(ev, "origin", json_string(origin_default));
    value = json_object_get(ev, "time");
    if (value) {
        int64_t ms;
        if (cfm_time_parse(json_string_value(value), &ms) != CFM_OK) {
            cfm_why_set(why, CFM_EINVAL, "event time '%.40s' is not RFC 3339 UTC",
                        json_string_value(value));
            goto out;
        }
    } else {
        char now[CFM_TIME_LEN];
        cfm_time_now(now);
        json_object_set_new(ev, "time", json_string(now));
    }
    value = json_object_get(ev, "payload");
    if (value && !json_is_object(value)) {
        cfm_why_set(why, CFM_EINVAL, "event payload must be a JSON object");
        goto out;
    }
    if (!value)
        json_object_set_new(ev, "payload", json_object());
    json_object_set_new(ev, "system", json_string(system));
    json_object_set_new(ev, "type", json_string(type));
    *out = ev;
    ev = NULL;
    err = CFM_OK;
out:
    json_decref(ev);
    return err;
}
