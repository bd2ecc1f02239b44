/*
 * ctlsrv.c - the manager's side of cfmctl. Each operation validates its
 * arguments, reads or writes through the store and the replica, and returns
 * a result object; every failure becomes {"ok": false, "error": ...} naming
 * what was wrong. Nothing here can be reached except through a request on
 * this site's ctl topic.
 */
#include "ctlsrv.h"

#include <stdarg.h>
#include <string.h>

#include "health.h"
#include "id.h"
#include "journal.h"
#include "kind.h"
#include "bounds.h"
#include "log.h"
#include "sysdesc.h"

static json_t *fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *fail(const char *fmt, ...)
{
    char text[CFM_WHY_MAX + 128];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return json_pack("{s:b, s:s}", "ok", 0, "error", text);
}

static json_t *ok(json_t *result)
{
    if (!result)
        return fail("out of memory");
    return json_pack("{s:b, s:o}", "ok", 1, "result", result);
}

/* Reads an optional string argument that must be an ID. */
static bool id_arg(json_t *args, const char *key, const char **out, json_t **err)
{
    json_t *v = json_object_get(args, key);
    struct cfm_why why;

    *out = NULL;
    if (!v)
        return true;
    if (!json_is_string(v)) {
        *err = fail("argument '%s' must be a string", key);
        return false;
    }
    if (cfm_id_check(json_string_value(v), key, &why) != CFM_OK) {
        *err = fail("%s", why.text);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

static bool append_obj(void *arg, const struct cfm_obj *obj)
{
    json_array_append_new(arg, cfm_obj_to_json(obj));
    return true;
}

static json_t *op_ping(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    (void)args;
    return ok(json_pack("{s:s, s:I}", "site", ctx->site, "pending",
                        (json_int_t)cfm_replica_pending(ctx->replica)));
}

/* Every procedure the system binds must exist and compile here, so an
 * authoring error shows at load time, not when the event arrives. A site
 * without a procedures directory cannot check (and cannot run them). */
static enum cfm_err check_procedures(const struct cfm_ctl_ctx *ctx, const struct cfm_obj *sys,
                                     struct cfm_why *why)
{
    json_t *procs = json_object_get(sys->body, "procedures"), *binding;
    const char *type;

    if (!json_object_size(procs))
        return CFM_OK;
    if (!ctx->engine || !cfm_engine_procedures_dir(ctx->engine)) {
        cfm_warn("ctl", "system %s binds procedures, but site %s has no procedures directory "
                 "(--procedures DIR): it cannot check or run them", sys->id, ctx->site);
        return CFM_OK;
    }
    json_object_foreach(procs, type, binding) {
        const char *script = json_string_value(json_object_get(binding, "script"));
        struct cfm_why inner = {{0}};
        enum cfm_err err = cfm_engine_check_script(ctx->engine, script, &inner);
        if (err != CFM_OK)
            return cfm_why_set(why, CFM_EINVAL, "procedures.%s: %s", type, inner.text);
    }
    return CFM_OK;
}

static json_t *op_system_load(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *file = json_string_value(json_object_get(args, "file"));
    json_t *text = json_object_get(args, "text");
    struct cfm_sysdesc *desc = NULL;
    struct cfm_load_result res;
    struct cfm_why why = {{0}};
    json_t *reply;

    if (!file)
        file = "system description";
    if (!json_is_string(text))
        return fail("argument 'text' (the file's content) must be a string");
    if (cfm_sysdesc_parse(json_string_value(text), json_string_length(text), &desc, &why) !=
        CFM_OK)
        return fail("%s: %s", file, why.text);
    if (check_procedures(ctx, desc->objs[0], &why) != CFM_OK) {
        cfm_sysdesc_free(desc);
        return fail("%s: %s", file, why.text);
    }
    if (cfm_replica_load(ctx->replica, desc, &res, &why) != CFM_OK)
        reply = fail("%s: %s", file, why.text);
    else {
        cfm_info("ctl", "loaded system %s from %s: %zu created, %zu updated, %zu deleted, "
                 "%zu unchanged", desc->id, file, res.created, res.updated, res.deleted,
                 res.unchanged);
        reply = ok(json_pack("{s:s, s:I, s:I, s:I, s:I}", "system", desc->id, "created",
                             (json_int_t)res.created, "updated", (json_int_t)res.updated,
                             "deleted", (json_int_t)res.deleted, "unchanged",
                             (json_int_t)res.unchanged));
    }
    cfm_sysdesc_free(desc);
    return reply;
}

static json_t *list_objects(const struct cfm_ctl_ctx *ctx, const char *system, int kind,
                            bool deleted)
{
    struct cfm_store_filter f = {.system = system, .kind = kind, .include_deleted = deleted};
    json_t *arr = json_array();

    if (!arr || cfm_store_each(ctx->st, &f, append_obj, arr) != CFM_OK) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* True when the system object names site among its sites. */
static bool lists_site(json_t *sys, const char *site)
{
    json_t *v;
    size_t i;

    json_array_foreach(json_object_get(json_object_get(sys, "body"), "sites"), i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), site) == 0)
            return true;
    return false;
}

/* Every system this site holds; "member": false marks a detached copy (the
 * system no longer, or never, listed this site: it receives no changes). */
static json_t *op_system_list(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    json_t *arr = list_objects(ctx, NULL, CFM_KIND_BUSINESS_SYSTEM, false);
    json_t *sys;
    size_t i;

    (void)args;
    if (!arr)
        return fail("store error");
    json_array_foreach(arr, i, sys)
        json_object_set_new(sys, "member", json_boolean(lists_site(sys, ctx->site)));
    return ok(arr);
}

static json_t *op_system_show(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *id;
    json_t *err = NULL, *objs;
    struct cfm_obj *sys = NULL;
    json_t *reply;

    if (!id_arg(args, "id", &id, &err))
        return err;
    if (!id)
        return fail("argument 'id' (the system) is required");
    if (cfm_store_get(ctx->st, id, CFM_KIND_BUSINESS_SYSTEM, id, &sys) != CFM_OK ||
        sys->deleted) {
        cfm_obj_free(sys);
        return fail("no system '%s' at site %s", id, ctx->site);
    }
    objs = list_objects(ctx, id, -1, false);
    reply = objs ? ok(json_pack("{s:o, s:o}", "system", cfm_obj_to_json(sys), "objects", objs))
                 : fail("store error");
    cfm_obj_free(sys);
    return reply;
}

static json_t *op_objects_list(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *system, *kind_name = json_string_value(json_object_get(args, "kind"));
    json_t *err = NULL, *arr;
    enum cfm_kind kind;
    struct cfm_why why;

    if (!id_arg(args, "system", &system, &err))
        return err;
    if (kind_name && cfm_kind_parse(kind_name, &kind, &why) != CFM_OK)
        return fail("%s", why.text);
    arr = list_objects(ctx, system, kind_name ? (int)kind : -1,
                       json_is_true(json_object_get(args, "deleted")));
    return arr ? ok(arr) : fail("store error");
}

static json_t *op_sites_list(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    json_t *arr = cfm_health_sites(ctx->st);

    (void)args;
    return arr ? ok(arr) : fail("store error");
}

static json_t *op_procedure_check(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *file = json_string_value(json_object_get(args, "file"));
    json_t *text = json_object_get(args, "text");
    struct cfm_why why = {{0}};

    (void)ctx;
    if (!file || !json_is_string(text))
        return fail("arguments 'file' and 'text' (strings) are required");
    if (cfm_engine_check_text(file, json_string_value(text), json_string_length(text), &why) !=
        CFM_OK)
        return fail("%s", why.text);
    return ok(json_pack("{s:s, s:b}", "file", file, "ok", 1));
}

/* A run's record as listed: the ProcedureRun object flattened. */
static json_t *run_summary(const struct cfm_obj *obj, bool full)
{
    json_t *out = full ? json_deep_copy(obj->body) : json_object(), *v_event;
    static const char *const keys[] = {"procedure", "state", "site", "event_type",
                                       "started", "ended", "waiting_on", "error",
                                       "duration_ms"};

    if (!out)
        return NULL;
    for (size_t i = 0; !full && i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(obj->body, keys[i]);
        if (v)
            json_object_set(out, keys[i], v);
    }
    json_object_set_new(out, "id", json_string(obj->id));
    json_object_set_new(out, "system", json_string(obj->system));
    json_object_set_new(out, "version", json_integer((json_int_t)obj->version));
    v_event = json_object_get(json_object_get(obj->body, "event"), "id");
    if (json_is_string(v_event))
        json_object_set(out, "event_id", v_event);
    return out;
}

struct runs_ctx {
    const char *want_id;
    json_t *out;
    bool full;
};

static bool add_run(void *arg, const struct cfm_obj *obj)
{
    struct runs_ctx *c = arg;

    if (c->want_id && strcmp(obj->id, c->want_id) != 0)
        return true;
    json_array_append_new(c->out, run_summary(obj, c->full));
    return !c->want_id;
}

static json_t *op_runs_list(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *system;
    json_t *err = NULL;
    struct runs_ctx c = {.out = json_array()};
    struct cfm_store_filter f = {.kind = CFM_KIND_PROCEDURE_RUN};

    if (!id_arg(args, "system", &system, &err)) {
        json_decref(c.out);
        return err;
    }
    f.system = system;
    if (!c.out || cfm_store_each(ctx->st, &f, add_run, &c) != CFM_OK) {
        json_decref(c.out);
        return fail("store error");
    }
    return ok(c.out);
}

static json_t *op_runs_show(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *id;
    json_t *err = NULL, *run;
    struct runs_ctx c = {.out = json_array(), .full = true};
    struct cfm_store_filter f = {.kind = CFM_KIND_PROCEDURE_RUN};

    if (!id_arg(args, "id", &id, &err) || !id) {
        json_decref(c.out);
        return err ? err : fail("argument 'id' (the run) is required");
    }
    c.want_id = id;
    if (!c.out || cfm_store_each(ctx->st, &f, add_run, &c) != CFM_OK) {
        json_decref(c.out);
        return fail("store error");
    }
    run = json_incref(json_array_get(c.out, 0));
    json_decref(c.out);
    if (!run)
        return fail("no run '%s' is known at site %s", id, ctx->site);
    return ok(run);
}

static json_t *op_runs_cancel(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *id;
    json_t *err = NULL;

    if (!id_arg(args, "id", &id, &err) || !id)
        return err ? err : fail("argument 'id' (the run) is required");
    if (!ctx->engine || cfm_engine_cancel(ctx->engine, id, "cancelled by an operator") != CFM_OK)
        return fail("run %s is not active at site %s", id, ctx->site);
    return ok(json_pack("{s:s, s:s}", "id", id, "state", "cancelled"));
}

/* Replays a run kept because its procedure changed (force: against the new
 * text). */
static json_t *op_runs_resume(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    struct cfm_why why = {{0}};
    json_t *err = NULL, *force = json_object_get(args, "force");
    const char *id;

    if (!id_arg(args, "id", &id, &err) || !id)
        return err ? err : fail("argument 'id' (the run) is required");
    if (force && !json_is_boolean(force))
        return fail("argument 'force' must be true or false");
    if (!ctx->engine)
        return fail("site %s runs no procedures", ctx->site);
    if (cfm_journal_resume(ctx->st, ctx->engine, id, json_is_true(force), &why) != CFM_OK)
        return fail("%s", why.text);
    return ok(json_pack("{s:s, s:s}", "id", id, "state", "running"));
}

/* A standby asks this site, the witness of a system's DR policy, whether
 * the primary is gone as seen from here too (manager/policy.c). */
static json_t *op_witness_vote(const struct cfm_ctl_ctx *ctx, json_t *args)
{
    const char *primary, *candidate;
    json_t *err = NULL, *after = json_object_get(args, "after_offline_s");
    int64_t offline;
    char reason[256];
    bool agree;

    if (!id_arg(args, "primary", &primary, &err) || !id_arg(args, "candidate", &candidate, &err))
        return err;
    if (!primary || !candidate || !json_is_integer(after) || json_integer_value(after) < 1)
        return fail("arguments 'primary', 'candidate' and 'after_offline_s' are required");
    offline = cfm_health_offline_ms(ctx->st, primary);
    agree = offline >= json_integer_value(after) * 1000;
    if (offline < 0)
        snprintf(reason, sizeof reason, "%s is online (or unknown) as seen from %s", primary,
                 ctx->site);
    else
        snprintf(reason, sizeof reason, "%s has been offline for %.1f s as seen from %s%s",
                 primary, (double)offline / 1000.0, ctx->site,
                 agree ? "" : ", not long enough");
    cfm_info("ctl", "witness vote for %s taking over from %s: %s (%s)", candidate, primary,
             agree ? "agree" : "disagree", reason);
    return ok(json_pack("{s:b, s:s, s:s}", "agree", agree, "reason", reason, "witness",
                        ctx->site));
}

static const struct {
    const char *name;
    json_t *(*fn)(const struct cfm_ctl_ctx *ctx, json_t *args);
} ops[] = {
    {"ping", op_ping},
    {"system.load", op_system_load},
    {"system.list", op_system_list},
    {"system.show", op_system_show},
    {"objects.list", op_objects_list},
    {"sites.list", op_sites_list},
    {"procedure.check", op_procedure_check},
    {"runs.list", op_runs_list},
    {"runs.show", op_runs_show},
    {"runs.cancel", op_runs_cancel},
    {"runs.resume", op_runs_resume},
    {"witness.vote", op_witness_vote},
};

json_t *cfm_ctlsrv_handle(const struct cfm_ctl_ctx *ctx, const void *payload, size_t len)
{
    json_error_t jerr;
    json_t *req, *args, *reply = NULL, *empty = NULL;
    const char *op;

    if (len > CFM_MAX_PAYLOAD)
        return fail("request is %zu bytes; the limit is %u", len, CFM_MAX_PAYLOAD);
    if (len == 0) /* jansson would say "wrong arguments" of the NULL payload */
        return fail("request is empty; expected {\"op\": string, \"args\": object}");
    req = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!req)
        return fail("request is not JSON: line %d, column %d: %s", jerr.line, jerr.column,
                    jerr.text);
    op = json_string_value(json_object_get(req, "op"));
    args = json_object_get(req, "args");
    if (!json_is_object(req) || !op)
        reply = fail("request needs {\"op\": string, \"args\": object}");
    else if (args && !json_is_object(args))
        reply = fail("'args' must be an object");
    if (!args)
        args = empty = json_object();
    for (size_t i = 0; !reply && i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(op, ops[i].name) == 0)
            reply = ops[i].fn(ctx, args);
    if (!reply)
        reply = fail("unknown op '%.64s' (known: ping, system.load, system.list, system.show, "
                     "objects.list, sites.list, procedure.check, runs.list, runs.show, runs.cancel, runs.resume, "
                     "witness.vote)",
                     op);
    json_decref(empty);
    json_decref(req);
    return reply;
}
