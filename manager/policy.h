/*
 * policy.h - policies that turn observations into events (DESIGN.md,
 * Liveness, health, policies). For now the DR policy of a system:
 *
 *   "policies": {"dr": {"after_offline_s": 30, "witness": "site-c"}}
 *
 * The standby site watches the primary; once it has been offline for
 * after_offline_s, the standby asks the witness site whether it sees the
 * same; only when the witness agrees does the standby publish
 * dr {"target_site": <standby>}. Two sites cut from each other cannot both
 * win: the one cut from the witness too never gets its agreement.
 */
#ifndef CFM_POLICY_H
#define CFM_POLICY_H

#include <stddef.h>
#include <uv.h>

#include "bus.h"
#include "publish.h"
#include "store.h"

struct cfm_policy;

/* st, bus and events are borrowed and outlive the policy. */
enum cfm_err cfm_policy_new(uv_loop_t *loop, struct cfm_store *st, struct cfm_bus *bus,
                            const struct cfm_publisher *events, const char *site,
                            struct cfm_policy **out);

/* Stops the timer; memory is freed once libuv has closed it. NULL is allowed. */
void cfm_policy_close(struct cfm_policy *p);

/* The topic the witnesses' answers come back on (subscribe to it). */
const char *cfm_policy_response_topic(const struct cfm_policy *p);

/* A witness answered (a message on the response topic; borrowed). */
void cfm_policy_on_vote(struct cfm_policy *p, const void *correlation, size_t correlation_len,
                        const void *payload, size_t len);

#endif
