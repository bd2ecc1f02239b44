/*
 * vmapi.c - the cloud and agent calls of the procedure API: run_vm,
 * terminate_vm, attach_volume, associate_address, run_agent_command,
 * put_file, http_get. Each suspends the calling run (cfm_engine_suspend), drives the
 * site's driver or the VM's agent asynchronously, keeps the model objects
 * (VMInstance, BusinessSystemElementInstance) up to date so every site sees
 * them, and completes the call from the loop.
 *
 * Every call with an effect gets the idempotency key "<run-id>.<seq>" (the
 * run's call sequence number): the driver returns the same VM for the same
 * key and the agent the same answer for the same request id, so a call
 * repeated after a restart is not done twice.
 */
#include "vmapi.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "failpoint.h"
#include "id.h"
#include "kind.h"
#include "log.h"
#include "luajson.h"
#include "obj.h"
#include "util.h"

#define DEFAULT_BOOT_TIMEOUT_S 120.0
#define DEFAULT_CMD_TIMEOUT_S 60.0
#define ANSWER_GRACE_S 15.0
#define DEFAULT_HTTP_TIMEOUT_S 2.0
#define MAX_HTTP_TIMEOUT_S 60.0 /* the agent's limit (60000 ms) */
#define MAX_HTTP_BODY 65536     /* the agent's limit */
#define MAX_HTTP_RETRY_S 600.0  /* the agent's limit (600000 ms) */

/* One call in flight. */
struct op {
    struct cfm_api_ctx *ctx;
    struct cfm_call *call;
    char system[CFM_MAX_ID + 1];
    char key[CFM_MAX_ID + 1];
    char what[64];                  /* "run_vm", ... for messages */
    char element[CFM_MAX_ID + 1];   /* run_vm: the element it serves, or "" */
    char vm_class[CFM_MAX_ID + 1];
    double timeout_s;
    struct cfm_vm_info vm;
    json_t *answer;                 /* agent answer to hand back */
};

/* Suspends the calling run in call `what` (its journal entry's name). A
 * NULL op means the journal answers the call (or it already failed): the
 * caller just yields. Otherwise the op carries the call and its
 * idempotency key "<run-id>.<seq>". */
static struct op *begin_op(lua_State *L, struct cfm_api_ctx *ctx, const char *name,
                           const char *what, struct cfm_call **callp)
{
    struct cfm_run *r = cfm_engine_run_of(L);
    struct cfm_call *call;
    struct op *op;
    uint64_t seq;

    if (!r)
        luaL_error(L, "%s: not inside a procedure run", name);
    if (!ctx->driver && strcmp(name, "run_agent_command") && strcmp(name, "put_file") &&
        strcmp(name, "http_get"))
        luaL_error(L, "%s: site %s has no cloud driver", name, ctx->site);
    if (!(call = cfm_engine_suspend(L, what, &seq)))
        luaL_error(L, "%s: out of memory", name);
    *callp = call;
    if (cfm_call_replayed(call))
        return NULL;
    if (!(op = calloc(1, sizeof *op))) {
        cfm_engine_fail(call, "out of memory");
        return NULL;
    }
    op->ctx = ctx;
    op->call = call;
    snprintf(op->system, sizeof op->system, "%s", cfm_run_system(r));
    snprintf(op->what, sizeof op->what, "%s", name);
    snprintf(op->key, sizeof op->key, "%.40s.%llu", cfm_run_id(r), (unsigned long long)seq);
    return op;
}

static void free_op(struct op *op)
{
    json_decref(op->answer);
    free(op);
}

/* The call's request left for the driver or the agent. */
static void sent(struct op *op)
{
    cfm_failpoint(op->what, "sent");
}

/* Ends op's call with an error (journaled with the model changes made
 * since begin, in the transaction the caller opened). */
static void fail_op(struct op *op, const char *fmt, const char *detail)
{
    char msg[CFM_WHY_MAX + 64];

    snprintf(msg, sizeof msg, fmt, op->what, detail ? detail : "");
    cfm_engine_fail(op->call, msg);
    free_op(op);
}

/* The VM a call is about: a VMInstance table (its "id") or an id string. */
static const char *vm_arg(lua_State *L, int idx, const char *what)
{
    const char *id = NULL;

    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_getfield(L, idx, "id");
        id = lua_tostring(L, -1);
        lua_pop(L, 1); /* the string stays referenced by the table */
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        id = lua_tostring(L, idx);
    }
    if (!cfm_id_valid(id))
        luaL_error(L, "%s: argument %d must be a VM (a table with its id, or the id)", what,
                   idx);
    return id;
}

/* --- model records ------------------------------------------------------ */

static json_t *vm_body(struct cfm_api_ctx *ctx, const struct cfm_vm_info *vm, const char *state,
                       const char *element)
{
    json_t *vols = json_array();
    json_t *body;

    for (int i = 0; i < vm->nvolumes; i++)
        json_array_append_new(vols, json_string(vm->volumes[i]));
    body = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:o}", "vm_class", vm->vm_class, "site",
                     ctx->site, "state", state, "private_ip", vm->private_ip, "cpu", vm->cpu,
                     "memory_mb", vm->memory_mb, "key", vm->key, "volumes", vols);
    if (body && vm->public_ip[0]) {
        json_object_set_new(body, "public_ip", json_string(vm->public_ip));
        json_object_set_new(body, "address", json_string(vm->address_id));
    }
    if (body && element && element[0])
        json_object_set_new(body, "element", json_string(element));
    return body;
}

/* Writes the VMInstance of vm in state (element kept from the stored
 * record when not given). Returns the body written (new reference). */
static json_t *record_vm(struct cfm_api_ctx *ctx, const struct cfm_vm_info *vm,
                         const char *state, const char *element)
{
    struct cfm_obj *cur = NULL, *obj;
    struct cfm_why why = {{0}};
    json_t *body;

    const char *created = NULL;
    char now[CFM_TIME_LEN];

    if (cfm_store_get(ctx->st, vm->system, CFM_KIND_VM_INSTANCE, vm->id, &cur) == CFM_OK) {
        if (!element || !element[0])
            element = json_string_value(json_object_get(cur->body, "element"));
        created = json_string_value(json_object_get(cur->body, "created"));
    }
    body = vm_body(ctx, vm, state, element);
    if (body) {
        cfm_time_now(now);
        json_object_set_new(body, "created", json_string(created ? created : now));
    }
    cfm_obj_free(cur);
    if (!body)
        return NULL;
    obj = cfm_obj_new(CFM_KIND_VM_INSTANCE, vm->system, vm->id, json_incref(body));
    if (!obj || cfm_replica_write(ctx->replica, &obj, 1, &why) != CFM_OK)
        cfm_error("vmapi", "cannot record VM %s: %s", vm->id, why.text);
    cfm_obj_free(obj);
    return body;
}

static void record_instance(struct cfm_api_ctx *ctx, const struct cfm_vm_info *vm,
                            const char *element, const char *state)
{
    struct cfm_why why = {{0}};
    char id[CFM_MAX_ID + 1];
    struct cfm_obj *obj;

    snprintf(id, sizeof id, "%.30s.%.32s", element, vm->id);
    obj = cfm_obj_new(CFM_KIND_ELEMENT_INSTANCE, vm->system, id,
                      json_pack("{s:s, s:s, s:s, s:s}", "element", element, "vm", vm->id, "site",
                                ctx->site, "state", state));
    if (!obj || cfm_replica_write(ctx->replica, &obj, 1, &why) != CFM_OK)
        cfm_error("vmapi", "cannot record instance %s: %s", id, why.text);
    cfm_obj_free(obj);
}

/* Completes op's call with {id = vm id, <VMInstance body>}. */
static void complete_with_vm(struct op *op, json_t *body)
{
    json_object_set_new(body, "id", json_string(op->vm.id));
    cfm_engine_complete(op->call, body);
    json_decref(body);
    free_op(op);
}

/* --- run_vm ---------------------------------------------------------- */

static void agent_online(struct op *op, enum cfm_err err, const char *why)
{
    json_t *body;

    if (err != CFM_OK) {
        json_decref(record_vm(op->ctx, &op->vm, "failed", op->element));
        fail_op(op, "%s: %s", why);
        return;
    }
    body = record_vm(op->ctx, &op->vm, "running", op->element);
    if (op->element[0])
        record_instance(op->ctx, &op->vm, op->element, "running");
    if (!body) {
        fail_op(op, "%s: %s", "cannot record the VM");
        return;
    }
    complete_with_vm(op, body);
}

/* The model changes a call's result brings and its journal entry are one
 * transaction. */
static void on_agent_online(void *arg, enum cfm_err err, const json_t *status, const char *why)
{
    struct op *op = arg;
    struct cfm_replica *rep = op->ctx->replica;

    (void)status;
    cfm_replica_begin(rep);
    agent_online(op, err, why);
    cfm_replica_commit(rep);
}

static void on_vm_started(void *arg, enum cfm_err err, const struct cfm_vm_info *vm,
                          const char *why)
{
    struct op *op = arg;

    if (err != CFM_OK) {
        fail_op(op, "%s: %s", why);
        return;
    }
    sent(op);
    op->vm = *vm;
    json_decref(record_vm(op->ctx, vm, "starting", op->element));
    if (cfm_agentc_wait_online(op->ctx->agentc, vm->id, op->timeout_s, on_agent_online, op) !=
        CFM_OK)
        fail_op(op, "%s: %s", "cannot wait for the agent");
}

/* Reads an integer field of the VM class body, preferring the override
 * for this site (body.sites[site]). */
static json_t *class_field(const json_t *body, const char *site, const char *field)
{
    json_t *over = json_object_get(json_object_get(json_object_get(body, "sites"), site), field);
    return over ? over : json_object_get(body, field);
}

/* run_vm(vm_class, opts) -> VM */
static int l_run_vm(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);
    const char *cls = luaL_checkstring(L, 1);
    char element[CFM_MAX_ID + 1] = "", what[96];
    double timeout = DEFAULT_BOOT_TIMEOUT_S;
    struct cfm_obj *vc = NULL;
    struct cfm_vm_spec spec;
    struct cfm_call *call;
    struct op *op;
    enum cfm_err err;

    if (!cfm_id_valid(cls))
        return luaL_error(L, "run_vm: '%s' is not a VM class id", cls);
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "element");
        if (lua_isstring(L, -1) && cfm_id_valid(lua_tostring(L, -1)))
            snprintf(element, sizeof element, "%s", lua_tostring(L, -1));
        lua_getfield(L, 2, "timeout");
        if (lua_isnumber(L, -1) && lua_tonumber(L, -1) > 0)
            timeout = lua_tonumber(L, -1);
        lua_pop(L, 2);
    }
    snprintf(what, sizeof what, "run_vm %s", cls);
    if (!(op = begin_op(L, ctx, "run_vm", what, &call)))
        return cfm_engine_yield_call(L, call);
    op->timeout_s = timeout;
    snprintf(op->element, sizeof op->element, "%s", element);
    snprintf(op->vm_class, sizeof op->vm_class, "%s", cls);
    if (cfm_store_get(ctx->st, op->system, CFM_KIND_VM_CLASS, cls, &vc) != CFM_OK || vc->deleted) {
        char msg[CFM_MAX_ID * 2 + 64];
        snprintf(msg, sizeof msg, "system %s has no VMClass '%s'", op->system, cls);
        cfm_obj_free(vc);
        fail_op(op, "%s: %s", msg);
        return cfm_engine_yield_call(L, call);
    }
    memset(&spec, 0, sizeof spec);
    spec.key = op->key;
    spec.system = op->system;
    spec.vm_class = op->vm_class;
    spec.image = json_string_value(class_field(vc->body, ctx->site, "image"));
    spec.cpu = (int)json_integer_value(class_field(vc->body, ctx->site, "cpu"));
    spec.memory_mb = (int)json_integer_value(class_field(vc->body, ctx->site, "memory_mb"));
    err = ctx->driver_ops->run(ctx->driver, &spec, on_vm_started, op);
    cfm_obj_free(vc);
    if (err != CFM_OK)
        fail_op(op, "%s: the driver refused: %s", cfm_strerror(err));
    return cfm_engine_yield_call(L, call);
}

/* --- terminate, volumes, addresses ------------------------------------ */

struct vmref {
    const char *id;
    json_t *out;
};

/* Marks the element instances running on the VM as terminated. */
static bool end_instances(void *arg, const struct cfm_obj *obj)
{
    struct vmref *ref = arg;
    const char *vm = json_string_value(json_object_get(obj->body, "vm"));

    if (vm && strcmp(vm, ref->id) == 0)
        json_array_append_new(ref->out, json_string(obj->id));
    return true;
}

static void vm_changed(struct op *op, enum cfm_err err, const struct cfm_vm_info *vm,
                       const char *why)
{
    json_t *body;

    if (err != CFM_OK) {
        fail_op(op, "%s: %s", why);
        return;
    }
    op->vm = *vm;
    body = record_vm(op->ctx, vm, cfm_vm_state_name(vm->state), NULL);
    if (vm->state == CFM_VM_TERMINATED) {
        struct cfm_store_filter f = {.system = vm->system, .kind = CFM_KIND_ELEMENT_INSTANCE};
        struct vmref ref = {.id = vm->id, .out = json_array()};
        size_t i;
        json_t *id;
        cfm_store_each(op->ctx->st, &f, end_instances, &ref);
        json_array_foreach(ref.out, i, id) {
            struct cfm_obj *obj = cfm_obj_new(CFM_KIND_ELEMENT_INSTANCE, vm->system,
                                              json_string_value(id), NULL);
            struct cfm_why w = {{0}};
            if (obj) {
                obj->deleted = true;
                cfm_replica_write(op->ctx->replica, &obj, 1, &w);
            }
            cfm_obj_free(obj);
        }
        json_decref(ref.out);
    }
    if (!body) {
        fail_op(op, "%s: %s", "cannot record the VM");
        return;
    }
    complete_with_vm(op, body);
}

static void on_vm_changed(void *arg, enum cfm_err err, const struct cfm_vm_info *vm,
                          const char *why)
{
    struct op *op = arg;
    struct cfm_replica *rep = op->ctx->replica;

    cfm_replica_begin(rep);
    vm_changed(op, err, vm, why);
    cfm_replica_commit(rep);
}

static int l_terminate_vm(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);
    const char *vm = vm_arg(L, 1, "terminate_vm");
    struct cfm_call *call;
    char what[96];
    struct op *op;
    enum cfm_err err;

    snprintf(what, sizeof what, "terminate_vm %s", vm);
    if (!(op = begin_op(L, ctx, "terminate_vm", what, &call)))
        return cfm_engine_yield_call(L, call);
    err = ctx->driver_ops->terminate(ctx->driver, vm, op->key, on_vm_changed, op);
    if (err != CFM_OK)
        fail_op(op, "%s: %s", err == CFM_ENOTFOUND ? "no such VM at this site"
                                                    : cfm_strerror(err));
    else
        cfm_failpoint("terminate_vm", "sent");
    return cfm_engine_yield_call(L, call);
}

static const char *id_or_table(lua_State *L, int idx, const char *what)
{
    const char *id = NULL;

    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_getfield(L, idx, "id");
        id = lua_tostring(L, -1);
        lua_pop(L, 1);
    } else {
        id = lua_tostring(L, idx);
    }
    if (!cfm_id_valid(id))
        luaL_error(L, "%s: argument %d must be an object or its id", what, idx);
    return id;
}

static int l_attach_volume(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);
    const char *vm = vm_arg(L, 1, "attach_volume");
    const char *vol = id_or_table(L, 2, "attach_volume");
    struct cfm_call *call;
    char what[160];
    struct op *op;
    enum cfm_err err;

    snprintf(what, sizeof what, "attach_volume %s to %s", vol, vm);
    if (!(op = begin_op(L, ctx, "attach_volume", what, &call)))
        return cfm_engine_yield_call(L, call);
    err = ctx->driver_ops->attach_volume(ctx->driver, vm, vol, op->key, on_vm_changed, op);
    if (err != CFM_OK)
        fail_op(op, "%s: %s", cfm_strerror(err));
    else
        cfm_failpoint("attach_volume", "sent");
    return cfm_engine_yield_call(L, call);
}

/* Clears the address from the record of any other VM that held it. */
static bool clear_moved_address(void *arg, const struct cfm_obj *obj)
{
    struct op *op = arg;
    const char *addr = json_string_value(json_object_get(obj->body, "address"));

    if (addr && strcmp(addr, op->vm.address_id) == 0 && strcmp(obj->id, op->vm.id) != 0) {
        struct cfm_obj *copy = cfm_obj_dup(obj);
        struct cfm_why why = {{0}};
        if (copy) {
            json_object_del(copy->body, "address");
            json_object_del(copy->body, "public_ip");
            cfm_replica_write(op->ctx->replica, &copy, 1, &why);
        }
        cfm_obj_free(copy);
    }
    return true;
}

static void on_address(void *arg, enum cfm_err err, const struct cfm_vm_info *vm,
                       const char *why)
{
    struct op *op = arg;
    struct cfm_replica *rep = op->ctx->replica;
    struct cfm_store_filter f = {.kind = CFM_KIND_VM_INSTANCE};

    cfm_replica_begin(rep);
    if (err == CFM_OK) {
        op->vm = *vm;
        f.system = vm->system;
        cfm_store_each(op->ctx->st, &f, clear_moved_address, op);
    }
    vm_changed(op, err, vm, why);
    cfm_replica_commit(rep);
}

static int l_associate_address(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);
    const char *vm = vm_arg(L, 1, "associate_address");
    const char *addr = id_or_table(L, 2, "associate_address");
    struct cfm_call *call;
    char what[160];
    struct op *op;
    enum cfm_err err;

    snprintf(what, sizeof what, "associate_address %s to %s", addr, vm);
    if (!(op = begin_op(L, ctx, "associate_address", what, &call)))
        return cfm_engine_yield_call(L, call);
    err = ctx->driver_ops->associate_address(ctx->driver, vm, addr, op->key, on_address, op);
    if (err != CFM_OK)
        fail_op(op, "%s: %s", cfm_strerror(err));
    else
        cfm_failpoint("associate_address", "sent");
    return cfm_engine_yield_call(L, call);
}

/* --- agent calls --------------------------------------------------------- */

static void on_agent_answer(void *arg, enum cfm_err err, const json_t *answer, const char *why)
{
    struct op *op = arg;
    json_t *copy;

    if (err != CFM_OK) {
        fail_op(op, "%s: %s", why);
        return;
    }
    if (!json_is_true(json_object_get(answer, "ok"))) {
        const char *e = json_string_value(json_object_get(answer, "error"));
        fail_op(op, "%s: the agent says: %s", e ? e : "(no reason given)");
        return;
    }
    copy = json_deep_copy(answer);
    json_object_del(copy, "ok");
    json_object_del(copy, "id");
    cfm_engine_complete(op->call, copy);
    json_decref(copy);
    free_op(op);
}

/* Sends req (stolen) to vm's agent for the calling run, in call `what`. */
static int agent_call(lua_State *L, struct cfm_api_ctx *ctx, const char *name, const char *vm,
                      json_t *req, double timeout)
{
    struct cfm_call *call;
    char what[CFM_MAX_ID + 256];
    struct op *op;
    enum cfm_err err;
    const char *path = json_string_value(json_object_get(req, "path"));

    if (!path)
        path = json_string_value(json_object_get(req, "url"));
    if (path)
        snprintf(what, sizeof what, "%s %.200s on %s", name, path, vm);
    else
        snprintf(what, sizeof what, "%s on %s", name, vm);
    if (!(op = begin_op(L, ctx, name, what, &call))) {
        json_decref(req);
        return cfm_engine_yield_call(L, call);
    }
    err = cfm_agentc_request(op->ctx->agentc, vm, op->key, req, timeout, on_agent_answer, op);
    if (err != CFM_OK)
        fail_op(op, "%s: cannot send the request: %s", cfm_strerror(err));
    else
        sent(op);
    return cfm_engine_yield_call(L, call);
}

/* run_agent_command(vm, cmd, opts) -> {code, stdout, stderr, timed_out, ...} */
static int l_run_agent_command(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);
    const char *vm = vm_arg(L, 1, "run_agent_command");
    double timeout = DEFAULT_CMD_TIMEOUT_S;
    struct cfm_why why = {{0}};
    json_t **slot;

    lua_settop(L, 3); /* the slot below must not pose as opts */
    slot = cfm_lua_json_slot(L);

    if (lua_type(L, 2) == LUA_TSTRING) {
        *slot = json_pack("{s:s, s:s}", "op", "exec", "shell", lua_tostring(L, 2));
    } else if (lua_type(L, 2) == LUA_TTABLE) {
        json_t *argv = cfm_lua_to_json(L, 2, "cmd", &why);
        if (!json_is_array(argv)) {
            json_decref(argv);
            return luaL_error(L, "run_agent_command: cmd must be a string or a list of strings");
        }
        *slot = json_pack("{s:s, s:o}", "op", "exec", "argv", argv);
    } else {
        return luaL_error(L, "run_agent_command: cmd must be a string or a list of strings");
    }
    if (!*slot)
        return luaL_error(L, "run_agent_command: out of memory");
    if (lua_istable(L, 3)) {
        static const char *const keys[] = {"cwd",        "env",    "stdin", "timeout_s",
                                           "max_output", "detach", "log"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            json_t *v;
            if (lua_getfield(L, 3, keys[i]) == LUA_TNIL) {
                lua_pop(L, 1);
                continue;
            }
            v = cfm_lua_to_json(L, -1, keys[i], &why);
            lua_pop(L, 1);
            if (!v)
                return luaL_error(L, "run_agent_command: %s", why.text);
            json_object_set_new(*slot, keys[i], v);
        }
        lua_getfield(L, 3, "timeout");
        if (lua_isnumber(L, -1)) {
            timeout = lua_tonumber(L, -1);
            json_object_set_new(*slot, "timeout_s", json_integer((json_int_t)timeout));
        }
        lua_pop(L, 1);
    }
    return agent_call(L, ctx, "run_agent_command", vm, json_incref(*slot),
                      timeout + ANSWER_GRACE_S);
}

/* put_file(vm, path, content, opts) -> {path, size} */
static int l_put_file(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);
    const char *vm = vm_arg(L, 1, "put_file");
    const char *path = luaL_checkstring(L, 2);
    size_t len;
    const char *content = luaL_checklstring(L, 3, &len);
    json_t **slot;

    lua_settop(L, 4); /* the slot below must not pose as opts */
    slot = cfm_lua_json_slot(L);

    *slot = json_pack("{s:s, s:s, s:s%}", "op", "put_file", "path", path, "content", content, len);
    if (!*slot)
        return luaL_error(L, "put_file: content must be UTF-8 text");
    if (lua_istable(L, 4) && lua_getfield(L, 4, "mode") == LUA_TSTRING)
        json_object_set_new(*slot, "mode", json_string(lua_tostring(L, -1)));
    return agent_call(L, ctx, "put_file", vm, json_incref(*slot), DEFAULT_CMD_TIMEOUT_S);
}

/* http_get's opts[field] (opts at index 3), when given: a number of
 * seconds from min to max, else a Lua error naming it. */
static void opt_seconds(lua_State *L, const char *field, double min, double max, double *out)
{
    char low[32];
    int isnum = 0;
    double v;

    if (lua_getfield(L, 3, field) != LUA_TNIL) {
        v = lua_tonumberx(L, -1, &isnum);
        snprintf(low, sizeof low, "%g", min); /* luaL_error knows no %g */
        if (!isnum || !(v >= min && v <= max))
            luaL_error(L, "http_get: opts.%s must be a number of seconds from %s to %d", field,
                       low, (int)max);
        *out = v;
    }
    lua_pop(L, 1);
}

/* http_get(vm, url, opts) -> {status, body | body_b64, body_truncated, error, duration_ms}:
 * a GET made by the VM's agent itself (no process on the VM), the health
 * check of the standard procedures. opts: timeout (seconds, default 2),
 * max_body (bytes kept, default the agent's 4096), retry_for (seconds the
 * agent keeps asking until the answer is 2xx/3xx, default 0). */
static int l_http_get(lua_State *L)
{
    struct cfm_api_ctx *ctx = cfm_engine_host_arg(L);
    const char *vm = vm_arg(L, 1, "http_get");
    const char *url = luaL_checkstring(L, 2);
    double timeout = DEFAULT_HTTP_TIMEOUT_S, retry_for = 0;
    lua_Integer max_body = -1;
    json_t **slot;

    lua_settop(L, 3); /* the slot below must not pose as opts */
    if (lua_istable(L, 3)) {
        opt_seconds(L, "timeout", 0.001, MAX_HTTP_TIMEOUT_S, &timeout);
        opt_seconds(L, "retry_for", 0, MAX_HTTP_RETRY_S, &retry_for);
        if (lua_getfield(L, 3, "max_body") != LUA_TNIL) {
            int isint = 0;
            max_body = lua_tointegerx(L, -1, &isint);
            if (!isint || max_body < 0 || max_body > MAX_HTTP_BODY)
                return luaL_error(L, "http_get: opts.max_body must be an integer from 0 to %d",
                                  MAX_HTTP_BODY);
        }
        lua_pop(L, 1);
    } else if (!lua_isnil(L, 3)) {
        return luaL_error(L, "http_get: opts must be a table");
    }
    slot = cfm_lua_json_slot(L);
    *slot = json_pack("{s:s, s:s, s:I}", "op", "http_get", "url", url, "timeout_ms",
                      (json_int_t)(timeout * 1000.0 + 0.5));
    if (!*slot)
        return luaL_error(L, "http_get: url must be UTF-8 text");
    if (max_body >= 0)
        json_object_set_new(*slot, "max_body", json_integer((json_int_t)max_body));
    if (retry_for > 0)
        json_object_set_new(*slot, "retry_for_ms",
                            json_integer((json_int_t)(retry_for * 1000.0 + 0.5)));
    /* The last try may start just before retry_for is over and take its
     * whole timeout. */
    return agent_call(L, ctx, "http_get", vm, json_incref(*slot),
                      retry_for + timeout + ANSWER_GRACE_S);
}

void cfm_vmapi_open(struct cfm_api_ctx *ctx, lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"run_vm", l_run_vm},
        {"terminate_vm", l_terminate_vm},
        {"attach_volume", l_attach_volume},
        {"associate_address", l_associate_address},
        {"run_agent_command", l_run_agent_command},
        {"put_file", l_put_file},
        {"http_get", l_http_get},
        {NULL, NULL},
    };

    (void)ctx;
    luaL_setfuncs(L, fns, 0);
}

void cfm_vmapi_on_driver_event(struct cfm_api_ctx *ctx, const struct cfm_vm_info *vm)
{
    struct cfm_obj *cur = NULL;
    const char *element = NULL;
    json_t *ev, *payload;

    cfm_warn("vmapi", "VM %s of %s is %s", vm->id, vm->system, cfm_vm_state_name(vm->state));
    if (cfm_store_get(ctx->st, vm->system, CFM_KIND_VM_INSTANCE, vm->id, &cur) == CFM_OK)
        element = json_string_value(json_object_get(cur->body, "element"));
    json_decref(record_vm(ctx, vm, cfm_vm_state_name(vm->state), element));
    if (vm->state == CFM_VM_FAILED) {
        payload = json_pack("{s:s, s:s, s:s}", "vm", vm->id, "site", ctx->site, "vm_class",
                            vm->vm_class);
        if (payload && element)
            json_object_set_new(payload, "element", json_string(element));
        ev = cfm_event_new(vm->system, "vm_failed", ctx->site, payload);
        if (!ev || cfm_publish_event(ctx->events, ev) != CFM_OK)
            cfm_error("vmapi", "cannot publish vm_failed for VM %s of %s", vm->id, vm->system);
        json_decref(ev);
    }
    cfm_obj_free(cur);
}
