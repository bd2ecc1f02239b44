/*
 * obj.h - a model object: the envelope every kind shares (kind, id, system,
 * version, origin, updated, deleted) and a JSON body whose shape depends on
 * the kind. This is the unit that is stored, replicated and shown.
 *
 * Wire and storage JSON form (see docs/models.md):
 *   {"kind":"VMClass","id":"small","system":"shop","version":3,
 *    "origin":"site-a","updated":"2026-11-22T10:00:00.000Z",
 *    "deleted":false,"body":{...}}
 * A tombstone has "deleted":true and an empty body {}.
 */
#ifndef CFM_OBJ_H
#define CFM_OBJ_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "err.h"
#include "kind.h"
#include "bounds.h"

/* Versions stay below 2^53 so every JSON reader holds them exactly. */
#define CFM_MAX_VERSION ((uint64_t)1 << 53)

struct cfm_obj {
    enum cfm_kind kind;
    char id[CFM_MAX_ID + 1];
    char system[CFM_MAX_ID + 1];
    uint64_t version;            /* Lamport time of the last write; 0 = never written */
    char origin[CFM_MAX_ID + 1]; /* site that wrote it last; "" before the first write */
    char updated[CFM_TIME_LEN];  /* RFC 3339 UTC of the last write; "" before it */
    bool deleted;                /* tombstone */
    json_t *body;                /* owned; always a JSON object */
};

/* Creates an object with version 0. Takes ownership of body (released even on
 * error); body NULL means {}. system and id are copied and must be valid IDs.
 * Returns NULL on invalid IDs or out of memory. Free with cfm_obj_free(). */
struct cfm_obj *cfm_obj_new(enum cfm_kind kind, const char *system, const char *id,
                            json_t *body);

/* Returns a deep copy, or NULL when out of memory. */
struct cfm_obj *cfm_obj_dup(const struct cfm_obj *obj);

/* Releases obj and its body; NULL is allowed. */
void cfm_obj_free(struct cfm_obj *obj);

/* Returns a new reference to the envelope JSON form; NULL when out of memory. */
json_t *cfm_obj_to_json(const struct cfm_obj *obj);

/* Parses and validates the envelope JSON form (every envelope field, the ID
 * rules, version range, and the body against its kind with
 * cfm_obj_validate_body; a tombstone's body must be {}). json is borrowed.
 * On success *out is a new object the caller frees. On failure returns
 * CFM_EINVAL and why names the field, e.g. "body.cpu: must be an integer >= 1". */
enum cfm_err cfm_obj_from_json(const json_t *json, struct cfm_obj **out, struct cfm_why *why);

/* Checks body (borrowed) against the schema of kind: required fields, types,
 * ranges, ID syntax of references; declared kinds refuse unknown fields.
 * References to other objects are not resolved here (see sysdesc.h).
 * Returns CFM_OK or CFM_EINVAL with why naming the field. */
enum cfm_err cfm_obj_validate_body(enum cfm_kind kind, const json_t *body, struct cfm_why *why);

/* Orders objects by (kind, id): a qsort/bsearch comparator of two
 * `struct cfm_obj *` (pa and pb point at the pointers). */
int cfm_obj_cmp_kind_id(const void *pa, const void *pb);

/* Orders two writes of the same object: by version, then by origin (strcmp).
 * Returns <0, 0, >0 like strcmp; the greater one wins everywhere. */
int cfm_obj_cmp_version(const struct cfm_obj *a, const struct cfm_obj *b);

/* True when a and b have the same kind, id, system, deleted flag and an
 * equal body (json_equal); version, origin and updated are ignored. */
bool cfm_obj_same_content(const struct cfm_obj *a, const struct cfm_obj *b);

#endif
