/*
 * ctlsrv.h - requests from cfmctl (cfm/v1/site/<site>/ctl/req, MQTT 5
 * request/response). A request is {"op": "...", "args": {...}}; the answer is
 * {"ok": true, "result": ...} or {"ok": false, "error": "one line"}.
 * The operations are listed in docs/topics.md.
 */
#ifndef CFM_CTLSRV_H
#define CFM_CTLSRV_H

#include <stddef.h>
#include <jansson.h>

#include "engine.h"
#include "replica.h"
#include "store.h"

struct cfm_ctl_ctx {
    struct cfm_store *st;
    struct cfm_replica *replica;
    struct cfm_engine *engine;
    const char *site;
};

/* Largest answer sent (cfmctl accepts the same). */
#define CFM_MAX_CTL_RESPONSE (64u << 20)

/* Handles one request (payload borrowed, untrusted). Always returns a new
 * response object (NULL only when out of memory). */
json_t *cfm_ctlsrv_handle(const struct cfm_ctl_ctx *ctx, const void *payload, size_t len);

#endif
