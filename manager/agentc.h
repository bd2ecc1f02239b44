/*
 * agentc.h - the manager's client of cfm-agent (docs/agent.md): requests on
 * cfm/v1/agent/<vm>/req, answers on cfm/v1/agent/<vm>/res/<id>, liveness on
 * cfm/v1/agent/<vm>/status. The request id is the caller's idempotency key,
 * so a request sent again (after a manager restart) gets the agent's first
 * answer instead of running twice.
 */
#ifndef CFM_AGENTC_H
#define CFM_AGENTC_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "bus.h"
#include "err.h"
#include "topic.h"

struct cfm_agentc;

/* answer is borrowed (valid during the call); NULL with err/why on
 * timeout or a malformed answer. */
typedef void (*cfm_agentc_cb)(void *arg, enum cfm_err err, const json_t *answer,
                              const char *why);

enum cfm_err cfm_agentc_new(uv_loop_t *loop, struct cfm_bus *bus, struct cfm_agentc **out);

/* Fails every pending request with "the manager is stopping" (callbacks
 * run) and frees the client once its timers are closed. NULL is allowed. */
void cfm_agentc_close(struct cfm_agentc *a);

/* Sends req (stolen; "id" and "op" set by the caller's key and op) to vm's
 * agent and calls cb with the answer, or with CFM_ETIMEOUT after timeout_s. */
enum cfm_err cfm_agentc_request(struct cfm_agentc *a, const char *vm, const char *id,
                                json_t *req, double timeout_s, cfm_agentc_cb cb, void *arg);

/* Calls cb (answer = the status message) once vm's agent is online, at
 * once if it is already; CFM_ETIMEOUT after timeout_s. */
enum cfm_err cfm_agentc_wait_online(struct cfm_agentc *a, const char *vm, double timeout_s,
                                    cfm_agentc_cb cb, void *arg);

/* Routes an agent message (status or answer) arriving on topic t. */
void cfm_agentc_on_message(struct cfm_agentc *a, const struct cfm_topic *t, const void *payload,
                           size_t len);

#endif
