/*
 * sync.h - anti-entropy: after a (re)connect, a bridge coming back or a
 * site joining a system, a manager publishes a digest of the system's
 * objects on cfm/v1/sys/<system>/sync; every peer answers with the objects
 * it holds newer and, when it finds itself behind, with its own digest, so
 * partitions heal without relying on broker queues or retained messages
 * having survived (docs/federation.md).
 */
#ifndef CFM_SYNC_H
#define CFM_SYNC_H

#include <stddef.h>

#include "bus.h"
#include "err.h"
#include "store.h"

struct cfm_sync;

/* st and bus are borrowed and outlive the sync. */
enum cfm_err cfm_sync_new(struct cfm_store *st, struct cfm_bus *bus, const char *site,
                          struct cfm_sync **out);

/* NULL is allowed. */
void cfm_sync_free(struct cfm_sync *s);

/* Publishes this site's digest of system, asking peers that are behind to
 * answer with theirs. */
void cfm_sync_announce(struct cfm_sync *s, const char *system);

/* A digest arrived for system (payload borrowed, untrusted). Malformed
 * digests are dropped with a logged reason. */
void cfm_sync_on_digest(struct cfm_sync *s, const char *system, const void *payload, size_t len);

/* Counters for status and tests. */
struct cfm_sync_stats {
    unsigned long digests_sent, digests_received, objects_sent;
};
void cfm_sync_stats(const struct cfm_sync *s, struct cfm_sync_stats *out);

#endif
