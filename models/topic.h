/*
 * topic.h - the one place that builds and parses cfm's MQTT topics
 * (version 1, see docs/topics.md). Every ID is checked before it becomes a
 * topic level, so no topic cfm builds can contain '/', '+' or '#' in a level.
 */
#ifndef CFM_TOPIC_H
#define CFM_TOPIC_H

#include <stddef.h>
#include "err.h"
#include "bounds.h"

#define CFM_TOPIC_ROOT "cfm/v1"

enum cfm_topic_type {
    CFM_TOPIC_SITE_STATUS,  /* cfm/v1/site/<site>/status */
    CFM_TOPIC_CTL_REQ,      /* cfm/v1/site/<site>/ctl/req */
    CFM_TOPIC_EVENT,        /* cfm/v1/sys/<system>/event/<type> */
    CFM_TOPIC_OBJ,          /* cfm/v1/sys/<system>/obj/<kind>/<id> */
    CFM_TOPIC_SYNC,         /* cfm/v1/sys/<system>/sync */
    CFM_TOPIC_RUN,          /* cfm/v1/sys/<system>/run/<run-id> */
    CFM_TOPIC_AGENT_REQ,    /* cfm/v1/agent/<vm>/req */
    CFM_TOPIC_AGENT_RES,    /* cfm/v1/agent/<vm>/res/<id> */
    CFM_TOPIC_AGENT_STATUS, /* cfm/v1/agent/<vm>/status */
    CFM_TOPIC_CTL_RES,      /* cfm/v1/ctl/res/<client> (cfmctl's response topic) */
};

/* A parsed topic; unused fields are "". */
struct cfm_topic {
    enum cfm_topic_type type;
    char site[CFM_MAX_ID + 1];    /* SITE_STATUS, CTL_REQ */
    char system[CFM_MAX_ID + 1];  /* EVENT, OBJ, SYNC, RUN */
    char name[CFM_MAX_ID + 1];    /* event type, kind, vm or client */
    char id[CFM_MAX_ID + 1];      /* object id, run id, agent request id */
};

/* Builds the topic of type from its parts (a, b, c in the order they appear
 * in the topic; unused ones NULL) into buf. Returns CFM_EINVAL with why when a
 * part is not a valid ID, CFM_ETOOBIG when buf is too small. */
enum cfm_err cfm_topic_build(char *buf, size_t len, enum cfm_topic_type type,
                             const char *a, const char *b, const char *c,
                             struct cfm_why *why);

/* Parses topic into out. Returns CFM_EINVAL with why for anything that is not
 * one of the topics above with valid IDs. */
enum cfm_err cfm_topic_parse(const char *topic, struct cfm_topic *out, struct cfm_why *why);

#endif
