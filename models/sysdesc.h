/*
 * sysdesc.h - a system description file: one whole business system in one
 * JSON document, as a system owner writes it (examples/web3tier.json).
 *
 *   { "id": "shop", <BusinessSystem body fields>,
 *     "objects": { "<Kind>": { "<id>": <body>, ... }, ... } }
 *
 * Parsing checks the JSON syntax (reporting line and column), every ID, every
 * body against its kind, and every reference between objects of the file
 * (an element naming an unknown VM class, a dependency cycle): the file is
 * accepted whole or refused whole.
 */
#ifndef CFM_SYSDESC_H
#define CFM_SYSDESC_H

#include <stddef.h>
#include "obj.h"

struct cfm_sysdesc {
    char id[CFM_MAX_ID + 1];   /* the system ID */
    size_t count;              /* number of objects, >= 1 */
    struct cfm_obj **objs;     /* owned; objs[0] is the BusinessSystem; version 0 */
};

/* Parses text (len bytes, not necessarily NUL-terminated; at most
 * CFM_MAX_PAYLOAD). On success *out is a new description the caller frees
 * with cfm_sysdesc_free(). On failure returns CFM_EINVAL (CFM_ETOOBIG over
 * the limit) and why says where: "line 3, column 5: ..." for syntax, a field
 * path such as "objects.BusinessSystemElement.web.vm_class: VMClass 'big'
 * is not defined in this file" otherwise. */
enum cfm_err cfm_sysdesc_parse(const char *text, size_t len, struct cfm_sysdesc **out,
                               struct cfm_why *why);

/* Releases desc and its objects; NULL is allowed. */
void cfm_sysdesc_free(struct cfm_sysdesc *desc);

#endif
