/*
 * vmapi.h - the cloud and agent calls of the procedure API (vmapi.c).
 */
#ifndef CFM_VMAPI_H
#define CFM_VMAPI_H

#include <lua.h>

#include "api.h"
#include "driver.h"

/* Installs run_vm, terminate_vm, attach_volume, associate_address,
 * run_agent_command, put_file and http_get into the table at the top of L. */
void cfm_vmapi_open(struct cfm_api_ctx *ctx, lua_State *L);

/* A VM changed state by itself (driver event): its VMInstance is updated
 * and, when it failed, vm_failed is published on its system. */
void cfm_vmapi_on_driver_event(struct cfm_api_ctx *ctx, const struct cfm_vm_info *vm);

#endif
