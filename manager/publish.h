/*
 * publish.h - the events this manager publishes itself (a run's
 * publish_cloud_event, the policy's dr, the driver's vm_failed).
 *
 * An event goes to the outbox (replica.c), and this site's own copy is
 * handed straight back to the manager (loopback) in the same transaction:
 * the manager subscribes to its systems' events "no local"
 * (membership.c), so the broker does not send an event back to the site
 * that published it. Before, every event came back: a broker round trip,
 * a transaction and a log line per event hop spent on learning what the
 * site already knew, and a window in which a crash had published an
 * event whose own copy was not yet handled here.
 */
#ifndef CFM_PUBLISH_H
#define CFM_PUBLISH_H

#include <jansson.h>

#include "err.h"
#include "replica.h"

struct cfm_publisher {
    struct cfm_replica *replica;
    /* Takes this site's copy of ev (borrowed), inside the transaction that
     * published it; NULL: nobody here listens (tests). */
    void (*loopback)(void *arg, const json_t *ev);
    void *arg;
};

/* Publishes ev (borrowed; complete, as cfm_event_new makes it: its topic
 * comes from its "system" and "type") through the outbox, and hands it to
 * p->loopback, in one transaction (the caller's, when one is open).
 * CFM_EINVAL when ev names no valid system or type. */
enum cfm_err cfm_publish_event(const struct cfm_publisher *p, const json_t *ev);

#endif
