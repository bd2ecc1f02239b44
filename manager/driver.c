/*
 * driver.c - the registry of cloud drivers (docs/drivers.md).
 *
 * The site config names a driver ("driver": {"type": "local"}); the manager
 * finds its ops here and talks to the cloud through them only. Adding a
 * driver means writing its file and adding one line to the table below.
 */
#include "driver.h"

#include <stddef.h>
#include <string.h>

static const struct cfm_driver_ops *const drivers[] = {
    &cfm_driver_local_ops,
};

#define NDRIVERS (sizeof drivers / sizeof drivers[0])

const struct cfm_driver_ops *cfm_driver_find(const char *name)
{
    for (size_t i = 0; name && i < NDRIVERS; i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

const char *cfm_driver_names(void)
{
    /* Built once from the table; a handful of short names fits easily. */
    static char names[256];

    if (!names[0]) {
        size_t used = 0;
        for (size_t i = 0; i < NDRIVERS; i++) {
            size_t n = strlen(drivers[i]->name);
            if (used + n + 3 > sizeof names)
                break;
            if (i > 0) {
                memcpy(names + used, ", ", 2);
                used += 2;
            }
            memcpy(names + used, drivers[i]->name, n);
            used += n;
            names[used] = '\0';
        }
    }
    return names;
}

const char *cfm_vm_state_name(enum cfm_vm_state s)
{
    switch (s) {
    case CFM_VM_PENDING: return "pending";
    case CFM_VM_RUNNING: return "running";
    case CFM_VM_FAILED: return "failed";
    case CFM_VM_TERMINATED: return "terminated";
    }
    return "unknown";
}
