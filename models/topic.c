/*
 * topic.c - builds and parses cfm's version 1 topics. A topic is a fixed
 * pattern of literal levels and ID levels; one table drives both directions
 * so a builder and its parser can never disagree.
 */
#include "topic.h"

#include <stdio.h>
#include <string.h>

#include "id.h"

/* A pattern: levels after "cfm/v1"; "%s" or "%1".."%3" mark ID levels. */
struct pattern {
    enum cfm_topic_type type;
    const char *levels[5];
};

static const struct pattern patterns[] = {
    {CFM_TOPIC_SITE_STATUS, {"site", "%1", "status", NULL}},
    {CFM_TOPIC_CTL_REQ, {"site", "%1", "ctl", "req", NULL}},
    {CFM_TOPIC_EVENT, {"sys", "%1", "event", "%2", NULL}},
    {CFM_TOPIC_OBJ, {"sys", "%1", "obj", "%2", "%3"}},
    {CFM_TOPIC_SYNC, {"sys", "%1", "sync", NULL}},
    {CFM_TOPIC_RUN, {"sys", "%1", "run", "%2", NULL}},
    {CFM_TOPIC_AGENT_REQ, {"agent", "%1", "req", NULL}},
    {CFM_TOPIC_AGENT_RES, {"agent", "%1", "res", "%2", NULL}},
    {CFM_TOPIC_AGENT_STATUS, {"agent", "%1", "status", NULL}},
    {CFM_TOPIC_CTL_RES, {"ctl", "res", "%1", NULL}},
};

#define NPATTERNS (sizeof patterns / sizeof patterns[0])
#define MAX_LEVELS 5

static const struct pattern *find_pattern(enum cfm_topic_type type)
{
    for (size_t i = 0; i < NPATTERNS; i++)
        if (patterns[i].type == type)
            return &patterns[i];
    return NULL;
}

enum cfm_err cfm_topic_build(char *buf, size_t len, enum cfm_topic_type type, const char *a,
                             const char *b, const char *c, struct cfm_why *why)
{
    const struct pattern *p = find_pattern(type);
    const char *parts[3] = {a, b, c};
    size_t used;
    int n;

    if (!p)
        return cfm_why_set(why, CFM_EINVAL, "unknown topic type %d", (int)type);
    n = snprintf(buf, len, "%s", CFM_TOPIC_ROOT);
    if (n < 0 || (size_t)n >= len)
        return cfm_why_set(why, CFM_ETOOBIG, "topic buffer too small");
    used = (size_t)n;
    for (int i = 0; i < MAX_LEVELS && p->levels[i]; i++) {
        const char *level = p->levels[i];
        if (level[0] == '%') {
            level = parts[level[1] - '1'];
            enum cfm_err err = cfm_id_check(level, "topic level", why);
            if (err != CFM_OK)
                return err;
        }
        n = snprintf(buf + used, len - used, "/%s", level);
        if (n < 0 || (size_t)n >= len - used)
            return cfm_why_set(why, CFM_ETOOBIG, "topic longer than %zu bytes", len - 1);
        used += (size_t)n;
    }
    return CFM_OK;
}

/* Splits topic into at most max levels; returns the count or -1 when there
 * are more levels than max or a level is longer than an ID. */
static int split(const char *topic, char levels[][CFM_MAX_ID + 1], int max)
{
    int count = 0;
    const char *start = topic;

    for (;;) {
        const char *slash = strchr(start, '/');
        size_t n = slash ? (size_t)(slash - start) : strlen(start);
        if (count == max || n > CFM_MAX_ID)
            return -1;
        memcpy(levels[count], start, n);
        levels[count][n] = '\0';
        count++;
        if (!slash)
            return count;
        start = slash + 1;
    }
}

enum cfm_err cfm_topic_parse(const char *topic, struct cfm_topic *out, struct cfm_why *why)
{
    char levels[MAX_LEVELS + 2][CFM_MAX_ID + 1];
    int count;

    memset(out, 0, sizeof *out);
    if (!topic || strlen(topic) > CFM_MAX_TOPIC)
        return cfm_why_set(why, CFM_EINVAL, "topic missing or longer than %d bytes", CFM_MAX_TOPIC);
    count = split(topic, levels, MAX_LEVELS + 2);
    if (count < 3 || strcmp(levels[0], "cfm") != 0 || strcmp(levels[1], "v1") != 0)
        return cfm_why_set(why, CFM_EINVAL, "topic '%.*s' is not a cfm/v1 topic", 128, topic);

    for (size_t i = 0; i < NPATTERNS; i++) {
        const struct pattern *p = &patterns[i];
        char *slots[3] = {NULL, NULL, NULL};
        int n = 0;
        bool match = true;

        while (n < MAX_LEVELS && p->levels[n])
            n++;
        if (n != count - 2)
            continue;
        switch (p->type) {
        case CFM_TOPIC_SITE_STATUS:
        case CFM_TOPIC_CTL_REQ:
            slots[0] = out->site;
            break;
        case CFM_TOPIC_AGENT_REQ:
        case CFM_TOPIC_AGENT_STATUS:
        case CFM_TOPIC_CTL_RES:
            slots[0] = out->name;
            break;
        case CFM_TOPIC_AGENT_RES:
            slots[0] = out->name;
            slots[1] = out->id;
            break;
        case CFM_TOPIC_RUN:
            slots[0] = out->system;
            slots[1] = out->id;
            break;
        default: /* EVENT, OBJ, SYNC */
            slots[0] = out->system;
            slots[1] = out->name;
            slots[2] = out->id;
            break;
        }
        for (int l = 0; l < n && match; l++) {
            const char *want = p->levels[l];
            if (want[0] != '%')
                match = strcmp(want, levels[l + 2]) == 0;
        }
        if (!match)
            continue;
        for (int l = 0; l < n; l++) {
            const char *want = p->levels[l];
            if (want[0] != '%')
                continue;
            enum cfm_err err = cfm_id_check(levels[l + 2], "topic level", why);
            if (err != CFM_OK) {
                memset(out, 0, sizeof *out);
                return err;
            }
            memcpy(slots[want[1] - '1'], levels[l + 2], CFM_MAX_ID + 1);
        }
        out->type = p->type;
        return CFM_OK;
    }
    memset(out, 0, sizeof *out);
    return cfm_why_set(why, CFM_EINVAL, "topic '%.*s' matches no cfm/v1 topic", 128, topic);
}
