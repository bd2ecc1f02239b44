/*
 * schema.h - internal to the models library (cfm_models__ names): the body
 * schemas of every kind and the helpers that word their errors safely. Not
 * installed and not included outside models/; other modules use obj.h and
 * sysdesc.h.
 */
#ifndef CFM_SCHEMA_H
#define CFM_SCHEMA_H

#include <stddef.h>
#include <jansson.h>

#include "err.h"
#include "kind.h"


/* cfm_id_check for a string of len bytes that may hold NULs (a JSON string
 * built in memory can): the same rules and messages. */
enum cfm_err cfm_models__id_checkn(const char *s, size_t len, const char *what,
                                   struct cfm_why *why);

/* Checks body (borrowed) against the schema of kind, naming fields by their
 * path below prefix ("" for paths relative to the body, "body" in an
 * envelope, "objects.VMClass.small" in a system description). id, when not
 * NULL, is the object's own ID, for the checks that need it (an element may
 * not depend on itself). Returns CFM_OK or CFM_EINVAL with why set. */
enum cfm_err cfm_models__check_body(enum cfm_kind kind, const char *id, const json_t *body,
                                    const char *prefix, struct cfm_why *why);

#endif
