/*
 * membership.c - the systems this site belongs to. Every manager watches
 * all BusinessSystem objects (cfm/v1/sys/+/obj/BusinessSystem/+); a system
 * whose "sites" names this site is subscribed as a whole (cfm/v1/sys/<id>/#)
 * and unsubscribed when it no longer does.
 *
 * Membership is read from the subscriptions (cfm_manager__member_of), never
 * from the store, on the hot path of every message; the systems an event
 * needs parsed are kept in a small cache (cfm_manager__system_of) that is
 * dropped whenever a BusinessSystem may have changed (cfm_store_kind_writes).
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "log.h"
#include "manager_int.h"
#include "obj.h"
#include "store.h"
#include "sync.h"
#include "topic.h"

void cfm_manager__forget_systems(struct cfm_manager *m)
{
    for (size_t i = 0; i < m->nsystems; i++)
        cfm_obj_free(m->systems[i]);
    m->nsystems = m->next_evict = 0;
}

/* The BusinessSystem id as stored (tombstone included), or NULL. Borrowed:
 * valid until the next call (which may find that systems were written and
 * read them again). */
const struct cfm_obj *cfm_manager__system_of(struct cfm_manager *m, const char *id)
{
    uint64_t writes = cfm_store_kind_writes(m->store, CFM_KIND_BUSINESS_SYSTEM);
    struct cfm_obj *sys = NULL;
    size_t slot;

    if (writes != m->systems_writes) {
        cfm_manager__forget_systems(m);
        m->systems_writes = writes;
    }
    for (size_t i = 0; i < m->nsystems; i++)
        if (strcmp(m->systems[i]->id, id) == 0)
            return m->systems[i];
    if (cfm_store_get(m->store, id, CFM_KIND_BUSINESS_SYSTEM, id, &sys) != CFM_OK)
        return NULL;
    if (m->nsystems < SYSTEM_CACHE) {
        slot = m->nsystems++;
    } else {
        slot = m->next_evict++ % SYSTEM_CACHE;
        cfm_obj_free(m->systems[slot]);
    }
    m->systems[slot] = sys;
    return sys;
}

bool cfm_manager__is_member(const struct cfm_obj *sys, const char *site)
{
    json_t *v;
    size_t i;

    if (sys->deleted)
        return false;
    json_array_foreach(json_object_get(sys->body, "sites"), i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), site) == 0)
            return true;
    return false;
}

/* The topics of a member system. Its objects and events are subscribed
 * with MQTT 5 "no local": a manager never needs its own object messages
 * back (they are most of its traffic), and the events it publishes are
 * handed to it in the transaction that publishes them (publish.h); the
 * digests and run states it publishes itself must come back. */
#define MEMBER_TOPICS 4
static void member_patterns(const char *system, char p[MEMBER_TOPICS][CFM_MAX_TOPIC + 1])
{
    snprintf(p[0], CFM_MAX_TOPIC + 1, CFM_TOPIC_ROOT "/sys/%s/event/#", system);
    snprintf(p[1], CFM_MAX_TOPIC + 1, CFM_TOPIC_ROOT "/sys/%s/obj/#", system);
    snprintf(p[2], CFM_MAX_TOPIC + 1, CFM_TOPIC_ROOT "/sys/%s/sync", system);
    snprintf(p[3], CFM_MAX_TOPIC + 1, CFM_TOPIC_ROOT "/sys/%s/run/#", system);
}

void cfm_manager__on_system(void *arg, const struct cfm_obj *sys)
{
    struct cfm_manager *m = arg;
    char p[MEMBER_TOPICS][CFM_MAX_TOPIC + 1];

    member_patterns(sys->id, p);
    if (cfm_manager__is_member(sys, m->cfg.site)) {
        if (cfm_bus_subscribed(m->bus, p[0]))
            return;
        cfm_bus_subscribe_no_local(m->bus, p[0]);
        cfm_bus_subscribe_no_local(m->bus, p[1]);
        cfm_bus_subscribe(m->bus, p[2]);
        cfm_bus_subscribe(m->bus, p[3]);
        /* Joined (or started): catch up with the peers. */
        if (cfm_bus_connected(m->bus)) {
            cfm_info("manager", "site %s is a member of system %s; catching up", m->cfg.site,
                     sys->id);
            cfm_sync_announce(m->sync, sys->id);
        }
    } else if (cfm_bus_subscribed(m->bus, p[0])) {
        for (int i = 0; i < MEMBER_TOPICS; i++)
            cfm_bus_unsubscribe(m->bus, p[i]);
        cfm_info("manager", "site %s is no longer a member of system %s", m->cfg.site, sys->id);
    }
}

bool cfm_manager__subscribe_member(void *arg, const struct cfm_obj *sys)
{
    cfm_manager__on_system(arg, sys);
    return true;
}

/* Membership as subscribed (kept by cfm_manager__on_system from every BusinessSystem
 * seen): no store read on the hot path of every message. */
bool cfm_manager__member_of(struct cfm_manager *m, const char *system)
{
    char p[MEMBER_TOPICS][CFM_MAX_TOPIC + 1];

    member_patterns(system, p);
    return cfm_bus_subscribed(m->bus, p[0]);
}

bool cfm_manager__announce_member(void *arg, const struct cfm_obj *sys)
{
    struct cfm_manager *m = arg;

    if (cfm_manager__is_member(sys, m->cfg.site))
        cfm_sync_announce(m->sync, sys->id);
    return true;
}
