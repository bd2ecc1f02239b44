/*
 * manager.h - one cfm-manager: its store, bus, replica and request server on
 * one libuv loop, and the routing of every incoming message to the module
 * that owns it.
 */
#ifndef CFM_MANAGER_H
#define CFM_MANAGER_H

#include <uv.h>

#include "config.h"
#include "err.h"

struct cfm_manager;

/* Opens the store in cfg->state_dir, starts the bus and registers signal
 * handlers (SIGTERM/SIGINT stop, SIGHUP re-reads the configuration from
 * argv). Takes ownership of cfg's contents (cfg is zeroed). argv must
 * outlive the manager. */
enum cfm_err cfm_manager_start(uv_loop_t *loop, struct cfm_config *cfg, int argc, char **argv,
                               struct cfm_manager **out, struct cfm_why *why);

/* Begins a clean stop: publishes the offline status, waits (bounded) for
 * its acknowledgement, disconnects and closes every handle, so uv_run
 * returns. */
void cfm_manager_stop(struct cfm_manager *m);

/* Frees what is left after uv_run has returned; NULL is allowed. */
void cfm_manager_free(struct cfm_manager *m);

#endif
