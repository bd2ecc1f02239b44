/*
 * luajson.h - JSON (jansson) <-> Lua values for the procedure API.
 *
 * Objects become tables with string keys, arrays sequences (1-based), null
 * the light userdata CFM_LUA_NULL (`cfm.null` in procedures) inside arrays
 * and an absent key inside objects. A Lua table converts to an array when
 * its keys are exactly 1..n (n >= 1), otherwise to an object (string keys
 * only); an empty table is an object.
 */
#ifndef CFM_LUAJSON_H
#define CFM_LUAJSON_H

#include <jansson.h>
#include <lua.h>

#include "err.h"

/* The sentinel pushed for JSON null inside arrays. */
extern char cfm_lua_null_sentinel;
#define CFM_LUA_NULL ((void *)&cfm_lua_null_sentinel)

/* Pushes json (borrowed) as a Lua value; nesting beyond CFM_MAX_JSON_DEPTH
 * is cut off as nil. Needs up to 3 stack slots per level. */
void cfm_lua_push_json(lua_State *L, const json_t *json);

/* Converts the Lua value at idx to a new JSON reference. On failure returns
 * NULL and writes why (e.g. "cannot convert a function to JSON at
 * payload.cb"); what names the root in the message. */
json_t *cfm_lua_to_json(lua_State *L, int idx, const char *what, struct cfm_why *why);

/* Pushes a userdata slot that owns the JSON value stored into it (released
 * when the userdata is collected), and returns the slot, initially NULL.
 * Create the slot before acquiring the value, so a Lua error (even out of
 * memory) raised while the value is held cannot leak it. */
json_t **cfm_lua_json_slot(lua_State *L);

#endif
