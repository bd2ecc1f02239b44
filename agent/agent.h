/*
 * agent.h - cfm-agent: one VM's end of the agent protocol (docs/agent.md).
 * It connects out to its site's broker, answers requests on
 * cfm/v1/agent/<vm>/req and publishes its status and load.
 */
#ifndef CFM_AGENT_H
#define CFM_AGENT_H

#include <limits.h>
#include <stdbool.h>
#include <uv.h>

#include "bounds.h"
#include "err.h"

#define CFM_AGENT_MAX_HOST 255
#define CFM_AGENT_MAX_SECRET 255
#define CFM_AGENT_MAX_RUNNING 64 /* commands running at once */
#define CFM_AGENT_MAX_GETS 64    /* http_get requests in flight at once */

struct cfm_agent_config {
    char vm[CFM_MAX_ID + 1];
    char broker_host[CFM_AGENT_MAX_HOST + 1];
    int broker_port;
    char username[CFM_AGENT_MAX_SECRET + 1]; /* "" = anonymous */
    char password[CFM_AGENT_MAX_SECRET + 1];
    char root[PATH_MAX];      /* the VM's disk, resolved (realpath) */
    char state_dir[PATH_MAX]; /* the agent's own files, normally <root>/.cfm-agent */
    unsigned status_interval_s;
    /* --stop-vm-processes: the agent is the VM (the local driver's VMs):
     * when it stops, so does every process of the VM, and it exits once
     * they are gone. Without it a VM's services outlive the agent. */
    bool stop_vm_processes;
};

struct cfm_agent;

/* Starts the agent on loop with cfg (copied): opens its answers, starts
 * connecting to the broker (retrying while it is away) and the status
 * timer. on_stopped(arg) is called once cfm_agent_stop has finished and
 * every handle of the agent is closing. On success *out is the agent; free
 * it with cfm_agent_free() after the loop has run out. */
enum cfm_err cfm_agent_start(uv_loop_t *loop, const struct cfm_agent_config *cfg,
                             void (*on_stopped)(void *arg), void *arg, struct cfm_agent **out,
                             struct cfm_why *why);

/* Stops: kills the commands still running (their answer says the agent
 * stopped), ends the HTTP requests in flight (their answer says so too),
 * with stop_vm_processes SIGTERMs every process of the VM, publishes the
 * offline status, waits (up to 2 s in all) for the broker to take it and
 * for those processes to be gone, then disconnects cleanly and closes
 * every handle. */
void cfm_agent_stop(struct cfm_agent *agent);

/* Frees a stopped agent; NULL is allowed. */
void cfm_agent_free(struct cfm_agent *agent);

#endif
