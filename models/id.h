/*
 * id.h - IDs of sites, systems, kinds and objects: [A-Za-z0-9_.-]{1,64}.
 * They become MQTT topic levels, so '/', '+' and '#' can never appear.
 */
#ifndef CFM_ID_H
#define CFM_ID_H

#include <stdbool.h>
#include "err.h"

/* True when s is a valid ID. s may be NULL (then false). */
bool cfm_id_valid(const char *s);

/* Checks s; on failure writes to why a message naming what (e.g. "system id")
 * and the offending character or length, and returns CFM_EINVAL. */
enum cfm_err cfm_id_check(const char *s, const char *what, struct cfm_why *why);

#endif
