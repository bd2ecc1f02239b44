/*
 * engine_wait.c - the calls of a run that wait, and how the wait ends:
 * sleep, wait_cloud_event (and the events that end it), async/wait over a
 * run's tasks, and calls the host completes later (cloud and agent calls).
 * Each records on its fiber what it waits for and yields from C; the end
 * of the wait pushes the results and makes the fiber ready (engine.c
 * resumes it from the loop).
 */
#include "engine_int.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "luajson.h"
#include "util.h"

/* --- waiting functions of the base library ---------------------------- */

static struct cfm_fiber *need_fiber(lua_State *L)
{
    struct cfm_fiber *f = cfm_engine__fiber_of(L);

    if (!f)
        luaL_error(L, "not inside a procedure run");
    return f;
}

static void on_wtimer(struct cfm_tnode *t)
{
    struct cfm_fiber *f = (struct cfm_fiber *)((char *)t - offsetof(struct cfm_fiber, timer));

    if (f->wait == CFM_WAIT_EVENT) {
        json_t *res = json_pack("[n, s]", "timeout");
        cfm_engine__unlink_waiter(f);
        cfm_engine__journal_result(f, res, NULL);
        json_decref(res);
        lua_pushnil(f->co);
        lua_pushliteral(f->co, "timeout");
        f->call_nres = 2;
        cfm_engine__make_ready(f, 2);
    } else {
        json_t *res = json_array();
        cfm_engine__journal_result(f, res, NULL);
        json_decref(res);
        f->call_nres = 0;
        cfm_engine__make_ready(f, 0);
    }
}

/* Continuation of every call that suspends a fiber (sleep,
 * wait_cloud_event, host calls): returns the results handed over, or
 * raises the call's error. */
static int call_done(lua_State *L, int status, lua_KContext ctx)
{
    struct cfm_fiber *f = need_fiber(L);

    (void)status;
    (void)ctx;
    cfm_engine__end_call(f);
    if (f->call_error) {
        lua_pushstring(L, f->call_error);
        free(f->call_error);
        f->call_error = NULL;
        return lua_error(L);
    }
    return f->call_nres;
}

/* Milliseconds left of a wait: from the journal's deadline when the wait
 * was pending when the manager stopped, else timeout_s from now (and the
 * deadline is journaled). -1: no timeout. */
static int64_t wait_left(struct cfm_fiber *f, const struct cfm_jentry *pending, double timeout_s)
{
    int64_t now = cfm_time_ms(), deadline;

    if (pending && pending->deadline_ms > 0) {
        deadline = pending->deadline_ms;
    } else {
        if (timeout_s < 0)
            return -1;
        deadline = now + (int64_t)(timeout_s * 1000.0);
        cfm_engine__journal_pending(f, deadline);
    }
    return deadline > now ? deadline - now : 0;
}

static void arm_timer(struct cfm_fiber *f, int64_t ms)
{
    /* ms is counted from now: from the loop's cached time it would end early. */
    uv_update_time(f->run->e->loop);
    /* Out of memory: no timeout rather than a crash; the run's deadline still holds. */
    cfm_engine__timer_start(f->run->e, &f->timer, ms <= 0 ? 0 : (uint64_t)ms, on_wtimer);
}

int cfm_engine__l_sleep(lua_State *L)
{
    struct cfm_fiber *f = need_fiber(L);
    double s = luaL_checknumber(L, 1);
    struct cfm_jentry *je;
    char what[64];

    luaL_argcheck(L, s >= 0 && s <= 86400 * 7, 1, "seconds must be from 0 to 604800");
    snprintf(what, sizeof what, "sleep %s", lua_tostring(L, 1));
    je = cfm_engine__begin_call(f, what);
    f->wait = CFM_WAIT_SLEEP;
    cfm_engine__set_waiting_on(f->run, "sleep %s s", lua_tostring(L, 1));
    if (!f->replay)
        arm_timer(f, wait_left(f, je, s));
    return lua_yieldk(L, 0, 0, call_done);
}

int cfm_engine__l_log(lua_State *L)
{
    struct cfm_run *r = need_fiber(L)->run;
    const char *level = luaL_checkstring(L, 1);
    int n = lua_gettop(L);

    if (strcmp(level, "debug") && strcmp(level, "info") && strcmp(level, "warn") &&
        strcmp(level, "error"))
        return luaL_argerror(L, 1, "level must be debug, info, warn or error");
    /* log(level, fmt, ...) formats like string.format. */
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "format");
    for (int i = 2; i <= n; i++)
        lua_pushvalue(L, i);
    lua_call(L, n - 1, 1);
    cfm_run_log(r, level, lua_tostring(L, -1));
    return 0;
}

/* --- what a wait_cloud_event waits for ----------------------------------
 *
 * The key "<system>/<type>" and the fields of its match, in one allocation:
 * a waiting run keeps it as long as it waits, and a jansson object of one
 * field costs ~330 bytes in four allocations. Scalars are kept as values,
 * objects and arrays as jansson trees. */

struct cfm_mfield {
    const char *name;
    union {
        const char *s;           /* JSON_STRING, of len bytes */
        json_t *tree;            /* JSON_OBJECT, JSON_ARRAY */
    } u;
    union {
        size_t len;
        double num;              /* JSON_INTEGER, JSON_REAL: the value */
    } v;
    json_type type;
};

struct cfm_ewait {
    const char *key;
    size_t n;
    struct cfm_mfield field[];   /* then the strings */
};

/* A new wait for key with match (borrowed; NULL: any event); NULL when out of memory. */
static struct cfm_ewait *new_ewait(const char *key, const json_t *match)
{
    size_t n = json_object_size(match), size, klen = strlen(key) + 1;
    struct cfm_ewait *w;
    const char *name;
    json_t *v;
    char *t;

    size = sizeof *w + n * sizeof w->field[0] + klen;
    json_object_foreach((json_t *)match, name, v)
        size += strlen(name) + 1 + (json_is_string(v) ? json_string_length(v) + 1 : 0);
    if (!(w = malloc(size)))
        return NULL;
    t = (char *)&w->field[n];
    w->key = memcpy(t, key, klen);
    t += klen;
    w->n = 0;
    json_object_foreach((json_t *)match, name, v) {
        struct cfm_mfield *m = &w->field[w->n++];
        size_t nlen = strlen(name) + 1;
        m->name = memcpy(t, name, nlen);
        t += nlen;
        m->type = json_typeof(v);
        if (json_is_string(v)) {
            m->v.len = json_string_length(v);
            m->u.s = memcpy(t, json_string_value(v), m->v.len + 1);
            t += m->v.len + 1;
        } else if (json_is_number(v)) {
            m->v.num = json_number_value(v);
        } else if (json_is_object(v) || json_is_array(v)) {
            m->u.tree = json_incref(v);
        }
    }
    return w;
}

void cfm_engine__free_ewait(struct cfm_ewait *w)
{
    for (size_t i = 0; w && i < w->n; i++)
        if (w->field[i].type == JSON_OBJECT || w->field[i].type == JSON_ARRAY)
            json_decref(w->field[i].u.tree);
    free(w);
}

/* True when every field of w's match equals the same field of the event's
 * payload (numbers compared by value, other values as json_equal does). */
static bool matches(const struct cfm_ewait *w, const json_t *event)
{
    const json_t *payload = json_object_get(event, "payload");

    for (size_t i = 0; i < w->n; i++) {
        const struct cfm_mfield *m = &w->field[i];
        json_t *have = json_object_get(payload, m->name);
        if (!have)
            return false;
        switch (m->type) {
        case JSON_INTEGER:
        case JSON_REAL:
            if (!json_is_number(have) || json_number_value(have) != m->v.num)
                return false;
            break;
        case JSON_STRING:
            if (!json_is_string(have) || json_string_length(have) != m->v.len ||
                memcmp(json_string_value(have), m->u.s, m->v.len) != 0)
                return false;
            break;
        case JSON_OBJECT:
        case JSON_ARRAY:
            if (!json_equal(m->u.tree, have))
                return false;
            break;
        default: /* true, false, null */
            if (json_typeof(have) != m->type)
                return false;
            break;
        }
    }
    return true;
}

/* --- the index of waiters ----------------------------------------------
 *
 * A waiter whose match has a string or integer field is chained in the
 * bucket of (system/type, that field, its value); others in the bucket of
 * system/type. An event visits the bucket of its system/type and, for each
 * string or integer field of its payload, the bucket of (system/type,
 * field, value): with 10,000 runs waiting for one type, each for its own
 * token, an event looks at a handful of them, not all. Every waiter visited
 * is still checked in full, so the index only narrows the search. */

static unsigned hash_more(unsigned h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (h ^ 0x1fu) * 16777619u;
}

/* The text a match value is indexed by: strings as they are, numbers with
 * an integral value in decimal. False when v is not indexable. */
static bool index_text(const json_t *v, char *out, size_t len)
{
    double d;

    if (json_is_string(v) && json_string_length(v) < len) {
        memcpy(out, json_string_value(v), json_string_length(v) + 1);
        return strlen(out) == json_string_length(v); /* no NUL inside */
    }
    if (json_is_integer(v)) {
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
        return true;
    }
    d = json_number_value(v);
    if (json_is_real(v) && d == (double)(long long)d && d > -9e15 && d < 9e15) {
        snprintf(out, len, "%lld", (long long)d);
        return true;
    }
    return false;
}

static unsigned field_hash(const char *key, const char *field, const char *text)
{
    return hash_more(hash_more(hash_more(2166136261u, key), field), text);
}

/* The hash a waiter for key with match is indexed by: that of its first
 * indexable match field (*by_field set), else that of key alone. */
static unsigned waiter_hash(const char *key, const json_t *match, bool *by_field)
{
    char text[256];
    const char *field;
    json_t *v;

    *by_field = true;
    json_object_foreach((json_t *)match, field, v)
        if (index_text(v, text, sizeof text))
            return field_hash(key, field, text);
    *by_field = false;
    return cfm_engine__hash(key);
}

/* Chains f (waiting for f->ewait, made from match) in its bucket. */
static void link_waiter(struct cfm_engine *e, struct cfm_fiber *f, const json_t *match)
{
    bool by_field;

    f->wbucket = waiter_hash(f->ewait->key, match, &by_field) % CFM_WAIT_BUCKETS;
    f->next_waiter = e->waiters[f->wbucket];
    e->waiters[f->wbucket] = f;
    f->linked = true;
}

/* Hands event to waiting fiber f (made ready with the event as its result). */
static void deliver(struct cfm_fiber *f, const json_t *event)
{
    const char *id = json_string_value(json_object_get(event, "id"));
    struct cfm_engine *e = f->run->e;
    struct cfm_acct *prev = e->cur;
    json_t *res = json_pack("[O]", event);

    cfm_engine__journal_result(f, res, NULL);
    json_decref(res);
    cfm_engine__consume(f->run, id);
    cfm_engine__drop_timer(f);
    e->cur = f->run->acct;
    cfm_lua_push_json(f->co, event);
    e->cur = prev;
    f->call_nres = 1;
    cfm_engine__make_ready(f, 1);
}

/* False when recent event ev cannot be one a wait hashed want (by a
 * match field's value when by_field) is after. */
static bool recent_may_match(const struct cfm_recent *ev, unsigned want, bool by_field)
{
    if (!by_field)
        return ev->key_hash == want;
    if (ev->nfields > CFM_RECENT_FIELDS)
        return true;
    for (unsigned i = 0; i < ev->nfields; i++)
        if (ev->field_hash[i] == want)
            return true;
    return false;
}

static bool consumed(const struct cfm_run *r, const json_t *event)
{
    return cfm_engine__consumed(r, json_string_value(json_object_get(event, "id")));
}

int cfm_engine__l_wait_cloud_event(lua_State *L)
{
    struct cfm_fiber *f = need_fiber(L);
    struct cfm_engine *e = f->run->e;
    const char *system = luaL_checkstring(L, 1);
    const char *type = luaL_checkstring(L, 2);
    double timeout = -1;
    struct cfm_why why = {{0}};
    struct cfm_jentry *je;
    json_t *match = NULL;
    char what[2 * CFM_MAX_ID + 24], key[2 * CFM_MAX_ID + 2];
    int64_t left;
    unsigned want;
    bool by_field;

    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
            timeout = luaL_checknumber(L, -1);
            luaL_argcheck(L, timeout >= 0, 3, "timeout must be >= 0");
        }
        lua_pop(L, 1);
        if (lua_getfield(L, 3, "match") != LUA_TNIL)
            luaL_checktype(L, -1, LUA_TTABLE);
        lua_pop(L, 1);
    }
    if (strlen(system) > CFM_MAX_ID || strlen(type) > CFM_MAX_ID)
        return luaL_error(L, "wait_cloud_event: system or type longer than %d", CFM_MAX_ID);
    snprintf(what, sizeof what, "wait_cloud_event %s/%s", system, type);
    je = cfm_engine__begin_call(f, what);
    snprintf(key, sizeof key, "%s/%s", system, type);
    f->wait = CFM_WAIT_EVENT;
    cfm_engine__set_waiting_on(f->run, "event %s/%s", system, type);
    if (f->replay)
        return lua_yieldk(L, 0, 0, call_done); /* the journal has the event */
    if (!lua_isnoneornil(L, 3) && lua_getfield(L, 3, "match") != LUA_TNIL) {
        match = cfm_lua_to_json(L, -1, "match", &why);
        if (!match || !json_is_object(match)) {
            json_decref(match);
            f->wait = CFM_WAIT_NONE;
            return luaL_error(L, "wait_cloud_event: %s",
                              why.text[0] ? why.text : "match must be a table of fields");
        }
    }
    if (!(f->ewait = new_ewait(key, match))) {
        json_decref(match);
        f->wait = CFM_WAIT_NONE;
        return luaL_error(L, "wait_cloud_event: out of memory");
    }
    /* An event that arrived since the run started and before this wait:
     * the hashes rule out most recent events without touching them. */
    want = waiter_hash(key, match, &by_field);
    for (unsigned i = 0; i < CFM_RECENT_EVENTS; i++) {
        struct cfm_recent *ev = &e->recent[i];
        if (!ev->event || !recent_may_match(ev, want, by_field))
            continue;
        if (ev->ms >= f->run->started_ms && strcmp(ev->key, key) == 0 &&
            matches(f->ewait, ev->event) && !consumed(f->run, ev->event)) {
            json_decref(match);
            cfm_engine__free_ewait(f->ewait);
            f->ewait = NULL;
            cfm_engine__set_waiting_on(f->run, NULL);
            deliver(f, ev->event); /* queued with the event; resumed next turn */
            return lua_yieldk(L, 0, 0, call_done);
        }
    }
    left = wait_left(f, je, timeout);
    link_waiter(e, f, match);
    json_decref(match);
    if (left >= 0)
        arm_timer(f, left);
    return lua_yieldk(L, 0, 0, call_done);
}

/* Delivers event to the waiters for key chained in bucket b that it matches. */
static void offer(struct cfm_engine *e, unsigned b, const char *key, const json_t *event)
{
    struct cfm_fiber **p;

    for (p = &e->waiters[b]; *p;) {
        struct cfm_fiber *f = *p;
        if (strcmp(f->ewait->key, key) != 0 || consumed(f->run, event) ||
            !matches(f->ewait, event)) {
            p = &f->next_waiter;
            continue;
        }
        *p = f->next_waiter;
        f->next_waiter = NULL;
        f->linked = false;
        cfm_engine__free_ewait(f->ewait);
        f->ewait = NULL;
        deliver(f, event);
    }
}

void cfm_engine_on_event(struct cfm_engine *e, const char *system, const char *type,
                         const json_t *event)
{
    char key[2 * CFM_MAX_ID + 2], text[256];
    struct cfm_recent *slot;
    const char *field;
    json_t *v;

    snprintf(key, sizeof key, "%s/%s", system, type);
    slot = &e->recent[e->recent_next++ % CFM_RECENT_EVENTS];
    json_decref(slot->event);
    snprintf(slot->key, sizeof slot->key, "%s", key);
    /* A reference, not a copy: an event is never changed once made
     * (models/event.c builds it; everyone after reads or serialises it). */
    slot->event = json_incref((json_t *)event);
    slot->ms = cfm_time_ms();
    slot->key_hash = cfm_engine__hash(key);
    slot->nfields = 0;
    offer(e, slot->key_hash, key, event);
    json_object_foreach(json_object_get(event, "payload"), field, v) {
        unsigned h;
        if (!index_text(v, text, sizeof text))
            continue;
        h = field_hash(key, field, text);
        if (slot->nfields < CFM_RECENT_FIELDS)
            slot->field_hash[slot->nfields] = h;
        slot->nfields++;
        offer(e, h % CFM_WAIT_BUCKETS, key, event);
    }
    /* Forget events older than RECENT_MS lazily: a slot is reused in turn. */
}

/* async(fn, ...) -> task */
int cfm_engine__l_async(lua_State *L)
{
    struct cfm_fiber *f = need_fiber(L);
    struct cfm_run *r = f->run;
    int n = lua_gettop(L);
    int id = ++r->next_task_id;

    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (!cfm_engine__new_fiber(r, L, n - 1, id))
        return luaL_error(L, "async: out of memory");
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, id);
    lua_setfield(L, -2, "task");
    return 1;
}

static int task_id(lua_State *L, int idx)
{
    int id;

    if (lua_type(L, idx) != LUA_TTABLE || lua_getfield(L, idx, "task") != LUA_TNUMBER)
        return luaL_argerror(L, idx, "a task returned by async() expected");
    id = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return id;
}

/* Pushes the results of finished task t, or raises its error. With all,
 * every result; otherwise the first. Returns the number pushed. */
static int push_results(lua_State *L, struct cfm_fiber *t, bool all)
{
    int n;

    lua_rawgeti(L, LUA_REGISTRYINDEX, t->results_ref);
    if (t->failed)
        return luaL_error(L, "task %d failed: %s", t->id, lua_tostring(L, -1));
    lua_getfield(L, -1, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (!all)
        n = n > 0 ? 1 : 0;
    luaL_checkstack(L, n + 1, "too many results");
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
    if (!all && n == 0) {
        lua_pushnil(L);
        n = 1;
    }
    return n;
}

/* True when the value at idx is a list of tasks rather than one task. */
static bool is_task_list(lua_State *L, int idx)
{
    bool list;

    if (lua_type(L, idx) != LUA_TTABLE)
        return false;
    list = lua_getfield(L, idx, "task") == LUA_TNIL;
    lua_pop(L, 1);
    return list;
}

/* Continuation of wait(): every task is done; collect their results. */
static int wait_done(lua_State *L, int status, lua_KContext ctx)
{
    struct cfm_fiber *f = need_fiber(L);
    int nargs = (int)ctx, total = 0;

    (void)status;
    lua_settop(L, nargs);
    if (nargs == 1 && is_task_list(L, 1)) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, 1);
        lua_createtable(L, (int)len, 0);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, 1, i);
            push_results(L, cfm_engine__find_fiber(f->run, task_id(L, -1)), false);
            lua_rawseti(L, -3, i);
            lua_pop(L, 1);
        }
        return 1;
    }
    if (nargs == 1)
        return push_results(L, cfm_engine__find_fiber(f->run, task_id(L, 1)), true);
    for (int i = 1; i <= nargs; i++)
        total += push_results(L, cfm_engine__find_fiber(f->run, task_id(L, i)), false);
    return total;
}

/* The id of the i-th task (1-based) given to wait(): an element of the
 * list at 1, or argument i. Raises when it is not a task. */
static int nth_task(lua_State *L, bool list, int i)
{
    int id;

    if (!list)
        return task_id(L, i);
    lua_rawgeti(L, 1, i);
    id = task_id(L, -1);
    lua_pop(L, 1);
    return id;
}

/* wait(t) -> every result of t; wait(t1, t2, ...) -> the first result of
 * each; wait({t1, t2, ...}) -> a list of first results. A failed task's
 * error is raised (with its traceback) once all have finished. */
int cfm_engine__l_wait(lua_State *L)
{
    struct cfm_fiber *f = need_fiber(L);
    int nargs = lua_gettop(L), *ids, nids;
    bool pending = false, list;

    if (nargs == 0)
        return luaL_error(L, "wait: no task given");
    list = nargs == 1 && is_task_list(L, 1);
    nids = list ? (int)lua_rawlen(L, 1) : nargs;
    /* Check every task before allocating: a Lua error here must not leak ids. */
    for (int i = 1; i <= nids; i++) {
        int id = nth_task(L, list, i);
        struct cfm_fiber *t = cfm_engine__find_fiber(f->run, id);
        if (!t || t->id == 0)
            return luaL_error(L, "wait: task %d is not a task of this run", id);
        pending = pending || !t->done;
    }
    if (!pending)
        return wait_done(L, LUA_OK, (lua_KContext)nargs);
    ids = calloc((size_t)nids, sizeof *ids);
    if (!ids)
        return luaL_error(L, "wait: out of memory");
    for (int i = 1; i <= nids; i++)
        ids[i - 1] = nth_task(L, list, i); /* checked above: cannot raise */
    f->wait = CFM_WAIT_TASKS;
    f->wait_ids = ids;
    f->nwait = nids;
    cfm_engine__set_waiting_on(f->run, "%d task(s)", nids);
    return lua_yieldk(L, 0, (lua_KContext)nargs, wait_done);
}

/* --- calls completed by the host ---------------------------------------- */

struct cfm_call *cfm_engine_suspend(lua_State *L, const char *what, uint64_t *seq)
{
    struct cfm_fiber *f = need_fiber(L);
    struct cfm_call *c;

    cfm_engine__begin_call(f, what);
    *seq = f->call_seq;
    if (!(c = calloc(1, sizeof *c)))
        return NULL;
    c->f = f;
    c->replayed = f->replay != NULL;
    f->call = c;
    f->wait = CFM_WAIT_CALL;
    free(f->call_error);
    f->call_error = NULL;
    f->call_nres = 0;
    cfm_engine__set_waiting_on(f->run, "%s", what);
    return c;
}

bool cfm_call_replayed(const struct cfm_call *call)
{
    return call && call->replayed;
}

int cfm_engine_yield_call(lua_State *L, struct cfm_call *call)
{
    (void)call;
    return lua_yieldk(L, 0, 0, call_done);
}

struct cfm_run *cfm_call_run(const struct cfm_call *call)
{
    return call && call->f ? call->f->run : NULL;
}

void cfm_engine_complete(struct cfm_call *call, const json_t *result)
{
    struct cfm_fiber *f = call ? call->f : NULL;
    struct cfm_acct *prev;
    json_t *res;
    int n;

    free(call);
    if (!f)
        return;
    f->call = NULL;
    res = json_array();
    if (result)
        json_array_append(res, (json_t *)result);
    cfm_engine__journal_result(f, res, NULL);
    prev = f->run->e->cur;
    f->run->e->cur = f->run->acct;
    n = cfm_engine__push_results(f->co, res);
    f->run->e->cur = prev;
    json_decref(res);
    f->call_nres = n;
    cfm_engine__make_ready(f, n);
}

void cfm_engine_fail(struct cfm_call *call, const char *message)
{
    struct cfm_fiber *f = call ? call->f : NULL;

    free(call);
    if (!f)
        return;
    f->call = NULL;
    message = message ? message : "failed";
    cfm_engine__journal_result(f, NULL, message);
    free(f->call_error);
    f->call_error = strdup(message);
    f->call_nres = 0;
    cfm_engine__make_ready(f, 0);
}
