/*
 * health.h - liveness of the sites of the federation, from their managers'
 * retained status messages (cfm/v1/site/<site>/status) and Last Wills.
 * Agent liveness and HTTP checks join this module with the driver work.
 */
#ifndef CFM_HEALTH_H
#define CFM_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "store.h"

/* Records the status message of site (payload borrowed). A malformed status
 * is dropped with a logged reason. Returns 1 for an online status, 0 for
 * offline, -1 for one dropped (or an empty, cleared one). */
int cfm_health_on_status(struct cfm_store *st, const char *site, const void *payload,
                         size_t len);

/* The bridge to peer's site went down (up = false) or came back. While it
 * is down the peer counts as offline (a killed site's broker never
 * delivers its manager's Last Will); when it is back, the peer's last
 * status holds again. */
void cfm_health_on_link(struct cfm_store *st, const char *peer, bool up);

/* What this manager knows of site: never heard from, online, or offline
 * (its last status, a Last Will, or its bridge being down). */
enum cfm_site_seen { CFM_SITE_UNKNOWN, CFM_SITE_ONLINE, CFM_SITE_OFFLINE };
enum cfm_site_seen cfm_health_seen(struct cfm_store *st, const char *site);

/* How long site has been offline as this manager sees it, in ms since it
 * was last seen online; -1 when it is online, or was never seen. */
int64_t cfm_health_offline_ms(struct cfm_store *st, const char *site);

/* Returns a new JSON array of {"site","state","last_seen"} in site order,
 * or NULL on a store error. */
json_t *cfm_health_sites(struct cfm_store *st);

/* Returns a new reference to this manager's own status message. */
json_t *cfm_health_status(const char *site, const char *state);

#endif
