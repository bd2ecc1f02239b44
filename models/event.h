/*
 * event.h - cloud events: the messages on cfm/v1/sys/<system>/event/<type>.
 *
 *   {"id":"9f1c...","type":"dr","system":"shop","origin":"site-a",
 *    "time":"2026-11-22T10:00:00.000Z","payload":{"target_site":"site-b"}}
 *
 * An event published by hand may carry only a payload (or be {} or empty);
 * cfm_event_parse completes the rest, so every consumer sees the same shape.
 */
#ifndef CFM_EVENT_H
#define CFM_EVENT_H

#include <stddef.h>
#include <jansson.h>
#include "err.h"

/* Returns a new event (new reference) with a fresh id and the current time.
 * Takes ownership of payload (NULL means {}). NULL when out of memory or
 * when no random id could be made. */
json_t *cfm_event_new(const char *system, const char *type, const char *origin, json_t *payload);

/* The same with the given id (an ID the caller derived), no random one. */
json_t *cfm_event_new_id(const char *id, const char *system, const char *type,
                         const char *origin, json_t *payload);

/* Parses an event received on the topic of (system, type); text need not be
 * NUL-terminated. An empty text is an empty event. Missing id, origin and
 * time are completed (origin = origin_default, id derived from nothing is a
 * fresh UUID); present ones are checked (id and origin are IDs, "system" and
 * "type" must equal the topic's, "payload" must be an object). On success
 * *out is a new reference. On failure CFM_EINVAL/CFM_ETOOBIG with why. */
enum cfm_err cfm_event_parse(const char *text, size_t len, const char *system, const char *type,
                             const char *origin_default, json_t **out, struct cfm_why *why);

#endif
