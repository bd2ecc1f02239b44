/*
 * driver.h - the one interface between cfm and a cloud (docs/drivers.md).
 *
 * A driver runs, describes, lists and terminates VMs, attaches volumes and
 * associates addresses. Every call is asynchronous: it returns at once and
 * reports through its callback on the loop (never from inside the call).
 * Every effectful call takes an idempotency key: the same key returns the
 * same VM (volume attachment, address association) instead of making a
 * second one, also after the manager restarted. Drivers are chosen by name
 * in the site config ("driver": {"type": "local", ...}); adding one means
 * writing its file and listing its ops in driver.c's table, nothing else.
 */
#ifndef CFM_DRIVER_H
#define CFM_DRIVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bounds.h"
#include "err.h"

#define CFM_MAX_IP 46

enum cfm_vm_state {
    CFM_VM_PENDING,     /* asked for, not running yet */
    CFM_VM_RUNNING,
    CFM_VM_FAILED,      /* died without being asked to (killed, crashed) */
    CFM_VM_TERMINATED,  /* ended on request */
};

/* "pending", "running", "failed", "terminated". */
const char *cfm_vm_state_name(enum cfm_vm_state s);

/* What run() is asked for; strings borrowed for the duration of the call. */
struct cfm_vm_spec {
    const char *key;         /* idempotency key (an ID: [A-Za-z0-9_.-]{1,64}) */
    const char *system;      /* the business system it belongs to */
    const char *vm_class;    /* the VMClass id (for messages and records) */
    const char *image;
    int cpu;
    int memory_mb;
    const json_t *extra;     /* driver-specific options (borrowed, may be NULL) */
};

/* A VM as the driver knows it. */
struct cfm_vm_info {
    char id[CFM_MAX_ID + 1];
    char key[CFM_MAX_ID + 1];
    char system[CFM_MAX_ID + 1];
    char vm_class[CFM_MAX_ID + 1];
    enum cfm_vm_state state;
    int cpu;
    int memory_mb;
    char private_ip[CFM_MAX_IP];
    char public_ip[CFM_MAX_IP];      /* "" when no address is associated */
    char address_id[CFM_MAX_ID + 1]; /* the associated Address, or "" */
    char volumes[8][CFM_MAX_ID + 1]; /* attached volume ids */
    int nvolumes;
    char disk[4096];                 /* local driver: the VM's directory; "" elsewhere */
};

struct cfm_driver;

/* Result of run/describe/terminate/attach/associate: err CFM_OK and the VM's
 * state after the call, or an error with why (one line, e.g. "site site-a
 * has no capacity for VM class big (needs 4 CPU, 2 free)"). vm is NULL on
 * error and valid only during the callback. */
typedef void (*cfm_driver_vm_cb)(void *arg, enum cfm_err err, const struct cfm_vm_info *vm,
                                 const char *why);

/* Result of list: every VM the driver knows (running or not), then done. */
typedef void (*cfm_driver_list_cb)(void *arg, const struct cfm_vm_info *vms, size_t n);

/* Told whenever a VM changes state by itself (e.g. killed from outside:
 * RUNNING -> FAILED), so the manager can publish vm_failed. */
typedef void (*cfm_driver_event_cb)(void *arg, const struct cfm_vm_info *vm);

/* What every driver gets at open. */
struct cfm_driver_env {
    uv_loop_t *loop;
    const char *site;
    const char *state_dir;         /* the manager's state directory */
    const char *broker_host;       /* for agents on the VMs */
    int broker_port;
    const char *agent_path;        /* local driver: the cfm-agent binary */
    cfm_driver_event_cb on_event;
    void *arg;
};

struct cfm_driver_ops {
    const char *name;
    /* config is the site config's "driver" object (borrowed). */
    enum cfm_err (*open)(const struct cfm_driver_env *env, const json_t *config,
                         struct cfm_driver **out, struct cfm_why *why);
    /* Stops watching; VMs keep running (a restarted manager re-adopts them). */
    void (*close)(struct cfm_driver *d);
    enum cfm_err (*run)(struct cfm_driver *d, const struct cfm_vm_spec *spec,
                        cfm_driver_vm_cb cb, void *arg);
    enum cfm_err (*describe)(struct cfm_driver *d, const char *vm_id, cfm_driver_vm_cb cb,
                             void *arg);
    enum cfm_err (*terminate)(struct cfm_driver *d, const char *vm_id, const char *key,
                              cfm_driver_vm_cb cb, void *arg);
    enum cfm_err (*list)(struct cfm_driver *d, cfm_driver_list_cb cb, void *arg);
    enum cfm_err (*attach_volume)(struct cfm_driver *d, const char *vm_id,
                                  const char *volume_id, const char *key, cfm_driver_vm_cb cb,
                                  void *arg);
    enum cfm_err (*detach_volume)(struct cfm_driver *d, const char *vm_id,
                                  const char *volume_id, const char *key, cfm_driver_vm_cb cb,
                                  void *arg);
    enum cfm_err (*associate_address)(struct cfm_driver *d, const char *vm_id,
                                      const char *address_id, const char *key,
                                      cfm_driver_vm_cb cb, void *arg);
    enum cfm_err (*disassociate_address)(struct cfm_driver *d, const char *vm_id,
                                         const char *address_id, const char *key,
                                         cfm_driver_vm_cb cb, void *arg);
};

/* The driver registered under name ("local"), or NULL. */
const struct cfm_driver_ops *cfm_driver_find(const char *name);

/* Comma-separated names of every registered driver (for messages). */
const char *cfm_driver_names(void);

/* The local driver's ops (driver_local.c). */
extern const struct cfm_driver_ops cfm_driver_local_ops;

#endif
