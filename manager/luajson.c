/*
 * luajson.c - conversion between jansson values and Lua values, bounded in
 * depth (CFM_MAX_JSON_DEPTH) so a cyclic or deeply nested table is an error,
 * not a crash.
 */
#include "luajson.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bounds.h"

char cfm_lua_null_sentinel;

static void push(lua_State *L, const json_t *json, int depth)
{
    const char *key;
    json_t *v;
    size_t i;

    if (depth > CFM_MAX_JSON_DEPTH || !lua_checkstack(L, 3)) {
        lua_pushnil(L);
        return;
    }
    switch (json_typeof(json)) {
    case JSON_OBJECT:
        lua_createtable(L, 0, (int)json_object_size(json));
        json_object_foreach((json_t *)json, key, v) {
            if (json_is_null(v))
                continue;
            push(L, v, depth + 1);
            lua_setfield(L, -2, key);
        }
        break;
    case JSON_ARRAY:
        lua_createtable(L, (int)json_array_size(json), 0);
        json_array_foreach(json, i, v) {
            if (json_is_null(v))
                lua_pushlightuserdata(L, CFM_LUA_NULL);
            else
                push(L, v, depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(json), json_string_length(json));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(json));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(json));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    default:
        lua_pushnil(L);
        break;
    }
}

void cfm_lua_push_json(lua_State *L, const json_t *json)
{
    push(L, json, 0);
}

/* The length n when the table at idx has exactly the keys 1..n, else 0. */
static lua_Integer sequence_length(lua_State *L, int idx)
{
    lua_Integer n = 0, max = 0;

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return 0;
        }
        n++;
        if (lua_tointeger(L, -1) > max)
            max = lua_tointeger(L, -1);
    }
    return n == max ? n : 0;
}

static json_t *convert(lua_State *L, int idx, char *path, size_t plen, int depth,
                       struct cfm_why *why)
{
    json_t *out = NULL;
    size_t used = strlen(path);

    idx = lua_absindex(L, idx);
    if (depth > CFM_MAX_JSON_DEPTH) {
        cfm_why_set(why, CFM_EINVAL, "%s: nested deeper than %d (a cycle?)", path,
                    CFM_MAX_JSON_DEPTH);
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) {
            cfm_why_set(why, CFM_EINVAL, "%s: %g has no JSON form", path, lua_tonumber(L, idx));
            return NULL;
        }
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        out = json_stringn(s, len);
        if (!out)
            cfm_why_set(why, CFM_EINVAL, "%s: string is not valid UTF-8", path);
        return out;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == CFM_LUA_NULL)
            return json_null();
        break;
    case LUA_TTABLE: {
        lua_Integer n;
        if (!lua_checkstack(L, 4)) {
            cfm_why_set(why, CFM_EINVAL, "%s: too deep", path);
            return NULL;
        }
        n = sequence_length(L, idx);
        if (n > 0) {
            out = json_array();
            for (lua_Integer i = 1; out && i <= n; i++) {
                json_t *v;
                lua_rawgeti(L, idx, i);
                snprintf(path + used, plen - used, "[%lld]", (long long)i);
                v = convert(L, -1, path, plen, depth + 1, why);
                lua_pop(L, 1);
                if (!v || json_array_append_new(out, v) != 0) {
                    json_decref(out);
                    out = NULL;
                }
            }
            path[used] = '\0';
            return out;
        }
        out = json_object();
        lua_pushnil(L);
        while (out && lua_next(L, idx)) {
            json_t *v;
            if (lua_type(L, -2) != LUA_TSTRING) {
                cfm_why_set(why, CFM_EINVAL, "%s: a table mixing keys that are not strings "
                            "has no JSON form", path);
                lua_pop(L, 2);
                json_decref(out);
                return NULL;
            }
            snprintf(path + used, plen - used, ".%s", lua_tostring(L, -2));
            v = convert(L, -1, path, plen, depth + 1, why);
            if (!v || json_object_set_new(out, lua_tostring(L, -2), v) != 0) {
                lua_pop(L, 2);
                json_decref(out);
                return NULL;
            }
            lua_pop(L, 1);
        }
        path[used] = '\0';
        return out;
    }
    default:
        break;
    }
    cfm_why_set(why, CFM_EINVAL, "%s: cannot convert a %s to JSON", path,
                luaL_typename(L, idx));
    return NULL;
}

json_t *cfm_lua_to_json(lua_State *L, int idx, const char *what, struct cfm_why *why)
{
    char path[256];

    snprintf(path, sizeof path, "%s", what);
    return convert(L, idx, path, sizeof path, 0, why);
}

static int slot_gc(lua_State *L)
{
    json_t **slot = lua_touserdata(L, 1);

    if (slot) {
        json_decref(*slot);
        *slot = NULL;
    }
    return 0;
}

json_t **cfm_lua_json_slot(lua_State *L)
{
    json_t **slot = lua_newuserdatauv(L, sizeof *slot, 0);

    *slot = NULL;
    if (luaL_newmetatable(L, "cfm.json_slot")) {
        lua_pushcfunction(L, slot_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, slot_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return slot;
}
