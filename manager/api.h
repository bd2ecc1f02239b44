/*
 * api.h - the procedure API that needs the manager: events, model objects,
 * templates (and, with the driver, VMs and agents). The engine's own calls
 * (async, wait, sleep, wait_cloud_event, log) live in engine.c.
 */
#ifndef CFM_API_H
#define CFM_API_H

#include <lua.h>

#include "agentc.h"
#include "bus.h"
#include "driver.h"
#include "engine.h"
#include "publish.h"
#include "replica.h"
#include "store.h"

/* What API functions reach; owned by the manager, outlives the engine. */
struct cfm_api_ctx {
    struct cfm_store *st;
    struct cfm_replica *replica;
    const struct cfm_publisher *events; /* the events it publishes (publish.h) */
    struct cfm_bus *bus;
    struct cfm_engine *engine;
    const struct cfm_driver_ops *driver_ops;  /* NULL: no cloud driver */
    struct cfm_driver *driver;
    struct cfm_agentc *agentc;
    const char *site;
    const char *bin_dir;   /* where cfm's programs are (cfm-agent, cfm-svc) */
};

/* Installs the API into the table at the top of L's stack (the sandbox's
 * base library): publish_cloud_event, render, and the cfm table. */
void cfm_api_open(struct cfm_api_ctx *ctx, lua_State *L);

/* Writes the run's ProcedureRun object (replicated like any object) and
 * publishes its state, retained, on cfm/v1/sys/<system>/run/<run-id>. */
void cfm_api_record_run(struct cfm_api_ctx *ctx, struct cfm_run *run);

#endif
