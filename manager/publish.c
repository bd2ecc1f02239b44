/*
 * publish.c - events this manager publishes itself; see publish.h.
 */
#include "publish.h"

#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "topic.h"

enum cfm_err cfm_publish_event(const struct cfm_publisher *p, const json_t *ev)
{
    const char *system = json_string_value(json_object_get(ev, "system"));
    const char *type = json_string_value(json_object_get(ev, "type"));
    char topic[CFM_MAX_TOPIC + 1];
    enum cfm_err err;
    char *text;

    if (!system || !type ||
        cfm_topic_build(topic, sizeof topic, CFM_TOPIC_EVENT, system, type, NULL, NULL) != CFM_OK)
        return CFM_EINVAL;
    if (!(text = json_dumps(ev, JSON_COMPACT)))
        return CFM_ENOMEM;
    if ((err = cfm_replica_begin(p->replica)) != CFM_OK) {
        free(text);
        return err;
    }
    err = cfm_replica_publish(p->replica, topic, text, strlen(text), false);
    free(text);
    if (err != CFM_OK) {
        cfm_replica_rollback(p->replica);
        return err;
    }
    if (p->loopback)
        p->loopback(p->arg, ev);
    return cfm_replica_commit(p->replica);
}
