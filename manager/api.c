/*
 * api.c - procedure API functions that reach the manager's state: cloud
 * events, model objects, templates, and the run records every site sees.
 *
 * Each function checks its arguments as untrusted input and raises a Lua
 * error naming the call and what was wrong; Lua errors unwind through these
 * functions, so nothing here holds a C resource across a call that can
 * raise (JSON values are released before luaL_error is reached).
 */
#include "api.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "event.h"
#include "id.h"
#include "kind.h"
#include "log.h"
#include "luajson.h"
#include "obj.h"
#include "publish.h"
#include "template.h"
#include "topic.h"
#include "util.h"
#include "vmapi.h"

#define MAX_RENDER (4u << 20)

static struct cfm_api_ctx *ctx_of(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);

    if (!ctx)
        luaL_error(L, "no manager behind this call");
    return ctx;
}

static struct cfm_run *run_of(lua_State *L)
{
    struct cfm_run *r = cfm_engine_run_of(L);

    if (!r)
        luaL_error(L, "not inside a procedure run");
    return r;
}

static const char *check_id(lua_State *L, int idx, const char *what)
{
    const char *s = luaL_checkstring(L, idx);
    struct cfm_why why;

    if (cfm_id_check(s, what, &why) != CFM_OK)
        luaL_error(L, "%s", why.text);
    return s;
}

/* The id of the event a run publishes with call seq: a UUID-shaped digest
 * of (run, seq), so an event published again by a replay keeps its id and
 * consumers drop it as a duplicate. */
static void derived_event_id(const char *run, uint64_t seq, char out[CFM_UUID_LEN])
{
    char in[CFM_MAX_ID + 32], hex[CFM_SHA256_HEX_LEN + 1];
    int n = snprintf(in, sizeof in, "%s:%llu", run, (unsigned long long)seq);

    cfm_sha256_hex(in, (size_t)n, hex);
    snprintf(out, CFM_UUID_LEN, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
             hex + 20);
}

/* Journals results (stolen) of call seq inside the current transaction. */
static void record(lua_State *L, uint64_t seq, const char *what, json_t *results)
{
    cfm_engine_call_record(L, seq, what, results, NULL);
    json_decref(results);
}

/* publish_cloud_event(system, type, payload) -> event id */
static int l_publish_cloud_event(lua_State *L)
{
    struct cfm_api_ctx *ctx = ctx_of(L);
    const char *system = check_id(L, 1, "system"), *type = check_id(L, 2, "event type");
    char id[CFM_UUID_LEN], what[2 * CFM_MAX_ID + 32];
    struct cfm_why why = {{0}};
    json_t **payload, *ev;
    enum cfm_err err;
    uint64_t seq;
    int n;

    run_of(L);
    lua_settop(L, 3); /* the slot below must not pose as the payload */
    payload = cfm_lua_json_slot(L);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        *payload = cfm_lua_to_json(L, 3, "payload", &why);
        if (!*payload)
            return luaL_error(L, "publish_cloud_event: %s", why.text);
        if (!json_is_object(*payload))
            return luaL_error(L, "publish_cloud_event: payload must be a table of fields");
    }
    snprintf(what, sizeof what, "publish_cloud_event %s/%s", system, type);
    if ((n = cfm_engine_call_replay(L, what, &seq)) >= 0)
        return n;
    derived_event_id(cfm_run_id(run_of(L)), seq, id);
    ev = cfm_event_new_id(id, system, type, ctx->site, json_incref(*payload));
    if (!ev)
        return luaL_error(L, "publish_cloud_event: out of memory");
    /* The event leaves with its journal entry, or not at all. */
    err = cfm_replica_begin(ctx->replica);
    if (err == CFM_OK) {
        record(L, seq, what, json_pack("[s]", id));
        if ((err = cfm_publish_event(ctx->events, ev)) == CFM_OK)
            err = cfm_replica_commit(ctx->replica);
        else
            cfm_replica_rollback(ctx->replica);
    }
    json_decref(ev);
    if (err != CFM_OK)
        return luaL_error(L, "publish_cloud_event: %s", cfm_strerror(err));
    lua_pushstring(L, id);
    return 1;
}

/* render(template, vars) -> text */
static int l_render(lua_State *L)
{
    size_t len, out_len;
    const char *tmpl = luaL_checklstring(L, 1, &len);
    struct cfm_why why = {{0}};
    json_t *vars;
    char *out = NULL;
    enum cfm_err err;

    if (lua_isnoneornil(L, 2))
        vars = json_object();
    else
        vars = cfm_lua_to_json(L, 2, "vars", &why);
    if (!vars)
        return luaL_error(L, "render: %s", why.text);
    err = cfm_template_render(tmpl, len, vars, MAX_RENDER, &out, &out_len, &why);
    json_decref(vars);
    if (err != CFM_OK)
        return luaL_error(L, "render: %s", why.text);
    lua_pushlstring(L, out, out_len);
    free(out);
    return 1;
}

/* Pushes the JSON value in *slot (anchored on the stack below it, as
 * cfm_lua_json_slot made it) and removes the slot. */
static void push_slot(lua_State *L)
{
    json_t **slot = lua_touserdata(L, -1);

    cfm_lua_push_json(L, *slot);
    lua_remove(L, -2);
}

/* cfm.system([id]) -> the BusinessSystem object, or nil */
static int l_system(lua_State *L)
{
    struct cfm_api_ctx *ctx = ctx_of(L);
    const char *id = lua_isnoneornil(L, 1) ? cfm_run_system(run_of(L)) : check_id(L, 1, "system");
    struct cfm_obj *obj = NULL;
    char what[CFM_MAX_ID + 16];
    json_t **slot;
    uint64_t seq;
    int n;

    snprintf(what, sizeof what, "cfm.system %s", id);
    if ((n = cfm_engine_call_replay(L, what, &seq)) >= 0)
        return n;
    slot = cfm_lua_json_slot(L);
    if (cfm_store_get(ctx->st, id, CFM_KIND_BUSINESS_SYSTEM, id, &obj) == CFM_OK && !obj->deleted)
        *slot = cfm_obj_to_json(obj);
    cfm_obj_free(obj);
    record(L, seq, what, json_pack("[O?]", *slot));
    if (!*slot) {
        lua_pushnil(L);
        return 1;
    }
    push_slot(L);
    return 1;
}

struct collect {
    json_t *filter;  /* body fields that must be equal */
    json_t *out;
};

static bool collect_obj(void *arg, const struct cfm_obj *obj)
{
    struct collect *c = arg;
    const char *key;
    json_t *want;

    json_object_foreach(c->filter, key, want)
        if (!json_equal(json_object_get(obj->body, key), want))
            return true;
    json_array_append_new(c->out, cfm_obj_to_json(obj));
    return true;
}

/* cfm.objects(kind [, filter]) -> list of objects of the run's system (or
 * filter.system), in id order; other filter fields must equal body fields. */
static int l_objects(lua_State *L)
{
    struct cfm_api_ctx *ctx = ctx_of(L);
    const char *kname = luaL_checkstring(L, 1);
    struct cfm_store_filter f = {.include_deleted = false};
    struct cfm_why why = {{0}};
    struct collect c = {0};

    lua_settop(L, 2); /* the slots pushed below must not pose as the filter */
    json_t **filter, **out, *sys;
    enum cfm_kind kind;
    char system[CFM_MAX_ID + 1], what[512];
    uint64_t seq;
    int n;

    if (cfm_kind_parse(kname, &kind, &why) != CFM_OK)
        return luaL_error(L, "cfm.objects: %s", why.text);
    snprintf(system, sizeof system, "%s", cfm_run_system(run_of(L)));
    filter = cfm_lua_json_slot(L);
    out = cfm_lua_json_slot(L);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        *filter = cfm_lua_to_json(L, 2, "filter", &why);
        if (!*filter || !json_is_object(*filter))
            return luaL_error(L, "cfm.objects: %s", why.text[0] ? why.text : "bad filter");
        sys = json_object_get(*filter, "system");
        if (sys) {
            if (!cfm_id_valid(json_string_value(sys)))
                return luaL_error(L, "cfm.objects: filter.system is not a system ID");
            snprintf(system, sizeof system, "%s", json_string_value(sys));
            json_object_del(*filter, "system");
        }
    } else {
        *filter = json_object();
    }
    f.system = system;
    f.kind = (int)kind;
    if (!*filter)
        return luaL_error(L, "cfm.objects: out of memory");
    {
        char *ftext = json_dumps(*filter, JSON_COMPACT | JSON_SORT_KEYS);
        snprintf(what, sizeof what, "cfm.objects %s %s %.300s", system, kname,
                 ftext ? ftext : "");
        free(ftext);
    }
    if ((n = cfm_engine_call_replay(L, what, &seq)) >= 0)
        return n;
    *out = json_array();
    c.filter = *filter;
    c.out = *out;
    if (!c.out || cfm_store_each(ctx->st, &f, collect_obj, &c) != CFM_OK)
        return luaL_error(L, "cfm.objects: store error");
    record(L, seq, what, json_pack("[O]", *out));
    cfm_lua_push_json(L, *out);
    return 1;
}

/* Builds an object from the Lua table at idx: {kind, id, system?, body?}. */
static struct cfm_obj *obj_from_lua(lua_State *L, int idx, const char *call, bool need_body)
{
    struct cfm_why why = {{0}};
    enum cfm_kind kind;
    const char *kname, *id, *system;
    json_t *body = NULL;
    struct cfm_obj *obj;

    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "kind");
    lua_getfield(L, idx, "id");
    lua_getfield(L, idx, "system");
    kname = lua_tostring(L, -3);
    id = lua_tostring(L, -2);
    system = lua_isnil(L, -1) ? cfm_run_system(run_of(L)) : lua_tostring(L, -1);
    if (!kname || cfm_kind_parse(kname, &kind, &why) != CFM_OK)
        luaL_error(L, "%s: %s", call, kname ? why.text : "the object needs a kind");
    if (!id || cfm_id_check(id, "object id", &why) != CFM_OK ||
        !system || cfm_id_check(system, "system", &why) != CFM_OK)
        luaL_error(L, "%s: %s", call, why.text[0] ? why.text : "the object needs an id");
    if (need_body) {
        lua_getfield(L, idx, "body");
        if (!lua_istable(L, -1))
            luaL_error(L, "%s: the object needs a body table", call);
        body = cfm_lua_to_json(L, -1, "body", &why);
        lua_pop(L, 1);
        if (!body)
            luaL_error(L, "%s: %s", call, why.text);
        if (!json_is_object(body)) {
            json_decref(body);
            luaL_error(L, "%s: body must be a table of fields", call);
        }
        if (cfm_obj_validate_body(kind, body, &why) != CFM_OK) {
            json_decref(body);
            luaL_error(L, "%s: %s %s: body.%s", call, kname, id, why.text);
        }
    }
    obj = cfm_obj_new(kind, system, id, body);
    lua_pop(L, 3);
    if (!obj)
        luaL_error(L, "%s: out of memory", call);
    return obj;
}

/* cfm.save / cfm.delete of the object table at 1, in one transaction with
 * its journal entry. Pushes what the call returns: the saved object, or
 * (delete) whether it existed. */
static int write_journaled(lua_State *L, const char *call, bool deleting)
{
    struct cfm_api_ctx *ctx = ctx_of(L);
    struct cfm_why why = {{0}};
    struct cfm_obj *obj, *cur = NULL;
    char what[2 * CFM_MAX_ID + 48];
    json_t **slot;
    bool existed = true;
    enum cfm_err err;
    uint64_t seq;
    int n;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "kind");
    lua_getfield(L, 1, "id");
    snprintf(what, sizeof what, "%s %.64s %.64s", call,
             lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?",
             lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "?");
    lua_settop(L, 1);
    if ((n = cfm_engine_call_replay(L, what, &seq)) >= 0)
        return n;
    slot = cfm_lua_json_slot(L);
    obj = obj_from_lua(L, 1, call, !deleting); /* raises on a bad object */
    obj->deleted = deleting;
    if (deleting) {
        existed = cfm_store_get(ctx->st, obj->system, obj->kind, obj->id, &cur) == CFM_OK &&
                  !cur->deleted;
        cfm_obj_free(cur);
    }
    err = cfm_replica_begin(ctx->replica);
    if (err == CFM_OK && existed)
        err = cfm_replica_write(ctx->replica, &obj, 1, &why);
    if (err == CFM_OK) {
        *slot = deleting ? json_boolean(existed) : cfm_obj_to_json(obj);
        record(L, seq, what, json_pack("[O]", *slot));
        err = cfm_replica_commit(ctx->replica);
    } else {
        cfm_replica_rollback(ctx->replica);
    }
    cfm_obj_free(obj);
    if (err != CFM_OK)
        return luaL_error(L, "%s: %s", call, why.text[0] ? why.text : cfm_strerror(err));
    push_slot(L);
    return 1;
}

/* cfm.save(obj) -> the saved object (with its new version) */
static int l_save(lua_State *L)
{
    return write_journaled(L, "cfm.save", false);
}

/* cfm.delete(obj) -> true when it existed */
static int l_delete(lua_State *L)
{
    return write_journaled(L, "cfm.delete", true);
}

static int readonly_newindex(lua_State *L)
{
    return luaL_error(L, "attempt to change a read-only library table (field '%s')",
                      lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

/* cfm.now_ms() -> milliseconds since the epoch (wall clock), journaled */
static int l_now_ms(lua_State *L)
{
    int64_t now;
    uint64_t seq;
    int n;

    if ((n = cfm_engine_call_replay(L, "cfm.now_ms", &seq)) >= 0)
        return n;
    now = cfm_time_ms();
    record(L, seq, "cfm.now_ms", json_pack("[I]", (json_int_t)now));
    lua_pushinteger(L, (lua_Integer)now);
    return 1;
}

void cfm_api_open(struct cfm_api_ctx *ctx, lua_State *L)
{
    static const luaL_Reg top[] = {
        {"publish_cloud_event", l_publish_cloud_event},
        {"render", l_render},
        {NULL, NULL},
    };
    static const luaL_Reg cfm[] = {
        {"system", l_system},
        {"objects", l_objects},
        {"save", l_save},
        {"delete", l_delete},
        {"now_ms", l_now_ms},
        {NULL, NULL},
    };

    luaL_setfuncs(L, top, 0);
    cfm_vmapi_open(ctx, L);
    luaL_newlib(L, cfm);
    lua_pushstring(L, ctx->site);
    lua_setfield(L, -2, "site");
    lua_pushstring(L, ctx->bin_dir ? ctx->bin_dir : "");
    lua_setfield(L, -2, "bin_dir");
    lua_pushlightuserdata(L, CFM_LUA_NULL);
    lua_setfield(L, -2, "null");
    /* Read-only like the other libraries: a run cannot change cfm.site for others. */
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
    lua_setfield(L, -2, "cfm");
}

void cfm_api_record_run(struct cfm_api_ctx *ctx, struct cfm_run *run)
{
    char topic[CFM_MAX_TOPIC + 1], started[CFM_TIME_LEN] = "", ended[CFM_TIME_LEN] = "";
    json_t *ev = json_loads(cfm_run_event(run), 0, NULL); /* the engine keeps it as text */
    struct cfm_why why = {{0}};
    struct cfm_obj *obj;
    json_t *body;
    uint64_t sum;
    char *text;

    cfm_time_format(cfm_run_started_ms(run), started);
    if (cfm_run_ended_ms(run))
        cfm_time_format(cfm_run_ended_ms(run), ended);
    body = json_pack("{s:s, s:s, s:s, s:s*, s:O*, s:s, s:s*, s:s*, s:s*, s:o}", "procedure",
                     cfm_run_script(run), "state", cfm_run_state_name(cfm_run_state(run)),
                     "site", ctx->site, "event_type",
                     json_string_value(json_object_get(ev, "type")), "event", ev, "started",
                     started, "ended", ended[0] ? ended : NULL, "waiting_on",
                     cfm_run_waiting_on(run)[0] ? cfm_run_waiting_on(run) : NULL, "error",
                     cfm_run_error(run)[0] ? cfm_run_error(run) : NULL, "log",
                     cfm_run_log_json(run));
    json_decref(ev);
    if (!body) {
        cfm_error("api", "cannot build the record of run %s", cfm_run_id(run));
        return;
    }
    if (cfm_run_traceback(run)[0])
        json_object_set_new(body, "traceback", json_string(cfm_run_traceback(run)));
    if (cfm_run_result(run))
        json_object_set(body, "result", (json_t *)cfm_run_result(run));
    json_object_set_new(body, "duration_ms",
                        json_integer(cfm_run_ended_ms(run)
                                         ? cfm_run_ended_ms(run) - cfm_run_started_ms(run)
                                         : 0));
    text = json_dumps(body, JSON_COMPACT);
    /* A record like the last one written is not written again: a run that
     * waits for the same thing over and over (event hops) would rewrite and
     * replicate the same record every RECORD_WAIT_MS. */
    sum = text ? cfm_fnv1a64(text, strlen(text)) | 1 : 0;
    if (sum && sum == cfm_run_record_sum(run)) {
        cfm_debug("api", "run %s: its record is unchanged; not written again", cfm_run_id(run));
        free(text);
        json_decref(body);
        return;
    }
    obj = cfm_obj_new(CFM_KIND_PROCEDURE_RUN, cfm_run_system(run), cfm_run_id(run), body);
    if (!obj || cfm_replica_write(ctx->replica, &obj, 1, &why) != CFM_OK) {
        cfm_error("api", "cannot record run %s: %s", cfm_run_id(run), why.text);
        sum = 0;
    }
    if (text && cfm_topic_build(topic, sizeof topic, CFM_TOPIC_RUN, cfm_run_system(run),
                                cfm_run_id(run), NULL, NULL) == CFM_OK)
        cfm_replica_publish(ctx->replica, topic, text, strlen(text), true);
    cfm_run_set_record_sum(run, sum);
    free(text);
    cfm_obj_free(obj);
}
