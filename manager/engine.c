/*
 * engine.c - runs, their coroutines ("fibers": the main one and async
 * tasks), and the waits that suspend them.
 *
 * A fiber that calls a waiting function (sleep, wait_cloud_event, wait)
 * records what it waits for and yields from C. When that happens (a timer,
 * an event, a task's end) the engine pushes the results on the fiber's
 * stack and puts it on the ready queue; an idle handle drains the queue on
 * the loop, so a fiber is never resumed from inside another one's call.
 * Resuming charges memory to the run (see sandbox.c) and arms a count hook
 * with the instruction budget; once the budget is blown the hook fires on
 * every instruction, so even a pcall-wrapped endless loop dies.
 *
 * The calls that wait (sleep, wait_cloud_event, async/wait, host calls)
 * are in engine_wait.c; runs waiting on events are indexed there by
 * "<system>/<type>", so an event touches only the runs waiting for its type.
 */
#include "engine_int.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "luajson.h"
#include "util.h"

#define DEFAULT_MEMORY ((size_t)64 << 20)
#define DEFAULT_BUDGET 50000000UL
#define DEFAULT_DEADLINE_S 3600.0
#define RESUMES_PER_TURN 2000
#define RECENT_MS 600000 /* events kept for late waiters: 10 minutes */


static const char *const state_names[] = {"running", "waiting", "succeeded", "failed",
                                          "cancelled"};

const char *cfm_run_state_name(enum cfm_run_state s)
{
    return (unsigned)s < sizeof state_names / sizeof state_names[0] ? state_names[s] : "?";
}

static void on_idle(uv_idle_t *h);
static void finish_run(struct cfm_run *r, enum cfm_run_state state, const char *error,
                       const char *traceback);

/* --- small helpers ---------------------------------------------------- */

unsigned cfm_engine__hash(const char *key)
{
    unsigned h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % CFM_WAIT_BUCKETS;
}

void cfm_engine__set_waiting_on(struct cfm_run *r, const char *fmt, ...)
{
    char text[CFM_WAITING_ON_MAX + 1];
    va_list ap;

    free(r->waiting_on);
    r->waiting_on = NULL;
    if (!fmt)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    r->waiting_on = strdup(text); /* NULL when out of memory: shown as "" */
}

/* Most runs are never handed an event but the one that started them: the
 * set of the others is created at the first. */
void cfm_engine__consume(struct cfm_run *r, const char *id)
{
    if (!id || (r->event_id && strcmp(id, r->event_id) == 0))
        return;
    if (!r->consumed)
        r->consumed = json_object();
    json_object_set_new(r->consumed, id, json_true());
}

bool cfm_engine__consumed(const struct cfm_run *r, const char *id)
{
    return id && ((r->event_id && strcmp(id, r->event_id) == 0) ||
                  (r->consumed && json_object_get(r->consumed, id)));
}

static void notify(struct cfm_run *r)
{
    if (r->e->host.on_state && !r->e->closing)
        r->e->host.on_state(r->e->host.arg, r);
}

void cfm_engine__make_ready(struct cfm_fiber *f, int nargs)
{
    struct cfm_engine *e = f->run->e;

    f->wait = CFM_WAIT_NONE;
    f->queued = true;
    f->ready_nargs = nargs;
    f->next_ready = NULL;
    if (e->ready_tail)
        e->ready_tail->next_ready = f;
    else
        e->ready_head = f;
    e->ready_tail = f;
    if (!e->idle_on) {
        uv_idle_start(&e->idle, on_idle);
        e->idle_on = true;
    }
}

void cfm_engine__drop_timer(struct cfm_fiber *f)
{
    cfm_engine__timer_stop(f->run->e, &f->timer);
}

void cfm_engine__unlink_waiter(struct cfm_fiber *f)
{
    struct cfm_engine *e = f->run->e;
    struct cfm_fiber **p = &e->waiters[f->wbucket];

    for (; f->linked && *p; p = &(*p)->next_waiter) {
        if (*p == f) {
            *p = f->next_waiter;
            break;
        }
    }
    f->linked = false;
    f->next_waiter = NULL;
    cfm_engine__free_ewait(f->ewait);
    f->ewait = NULL;
}

/* Ends whatever f waits for, without waking it. */
static void cancel_wait(struct cfm_fiber *f)
{
    cfm_engine__drop_timer(f);
    if (f->wait == CFM_WAIT_EVENT)
        cfm_engine__unlink_waiter(f);
    free(f->wait_ids);
    f->wait_ids = NULL;
    f->nwait = 0;
    f->wait = CFM_WAIT_NONE;
}

struct cfm_fiber *cfm_engine__find_fiber(struct cfm_run *r, int id)
{
    for (struct cfm_fiber *f = r->fibers; f; f = f->next)
        if (f->id == id)
            return f;
    return NULL;
}

/* --- creating runs and fibers ------------------------------------------ */

/* The shared record of script at hash (a new reference); NULL when out of memory. */
static struct cfm_proc *get_proc(struct cfm_engine *e, const char *script, const char *hash)
{
    struct cfm_proc *p;
    size_t len = strlen(script) + 1;

    for (p = e->procs; p; p = p->next) {
        if (strcmp(p->name, script) == 0 && strcmp(p->hash, hash) == 0) {
            p->refs++;
            return p;
        }
    }
    if (!(p = malloc(sizeof *p + len)))
        return NULL;
    p->refs = 1;
    snprintf(p->hash, sizeof p->hash, "%s", hash);
    memcpy(p->name, script, len);
    p->next = e->procs;
    e->procs = p;
    return p;
}

static void put_proc(struct cfm_engine *e, struct cfm_proc *p)
{
    if (!p || --p->refs > 0)
        return;
    for (struct cfm_proc **q = &e->procs; *q; q = &(*q)->next) {
        if (*q == p) {
            *q = p->next;
            break;
        }
    }
    free(p);
}

/* Creates a fiber of r whose function and arguments (nargs) are on top of
 * L's stack; they are moved to the new coroutine, which is made ready. */
struct cfm_fiber *cfm_engine__new_fiber(struct cfm_run *r, lua_State *L, int nargs, int id)
{
    struct cfm_fiber *f = calloc(1, sizeof *f);

    if (!f)
        return NULL;
    f->run = r;
    f->id = id;
    f->results_ref = LUA_NOREF;
    f->co = lua_newthread(L);
    f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *(struct cfm_fiber **)lua_getextraspace(f->co) = f;
    lua_xmove(L, f->co, nargs + 1);
    f->next = r->fibers;
    r->fibers = f;
    cfm_engine__make_ready(f, nargs);
    return f;
}


static void free_fiber(struct cfm_engine *e, struct cfm_fiber *f)
{
    if (f->call && f->call->replayed)
        free(f->call); /* the journal's: nobody else completes it */
    else if (f->call)
        f->call->f = NULL; /* the host frees it when it completes */
    free(f->call_error);
    free(f->call_what);
    cancel_wait(f);
    luaL_unref(e->L, LUA_REGISTRYINDEX, f->ref);
    luaL_unref(e->L, LUA_REGISTRYINDEX, f->results_ref);
    free(f);
}

static void on_deadline(struct cfm_tnode *t)
{
    struct cfm_run *r = (struct cfm_run *)((char *)t - offsetof(struct cfm_run, deadline));
    char msg[96];

    snprintf(msg, sizeof msg, "deadline of %.0f s exceeded",
             (double)(cfm_time_ms() - r->started_ms) / 1000.0);
    finish_run(r, CFM_RUN_FAILED, msg, "");
}

static void seed_rng(struct cfm_run *r)
{
    uint64_t h = cfm_fnv1a64(r->id, strlen(r->id));

    r->rng[0] = h | 1;
    r->rng[1] = (h * 0x9e3779b97f4a7c15ull) ^ 0xda3e39cb94b95bdbull;
}

static int cmp_delivery(const void *a, const void *b)
{
    const struct cfm_jentry *x = *(const struct cfm_jentry *const *)a;
    const struct cfm_jentry *y = *(const struct cfm_jentry *const *)b;

    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->ord < y->ord ? -1 : x->ord > y->ord;
}

/* Copies the journal of a restored run; NULL when out of memory. */
static struct cfm_replay *new_replay(const struct cfm_run_restore *rs)
{
    struct cfm_replay *rp = calloc(1, sizeof *rp);

    if (!rp || (rs->n && (!(rp->e = calloc(rs->n, sizeof *rp->e)) ||
                          !(rp->q = calloc(rs->n, sizeof *rp->q))))) {
        cfm_engine__replay_free(rp);
        return NULL;
    }
    rp->force = rs->force;
    for (size_t i = 0; i < rs->n; i++) {
        const struct cfm_journal_entry *in = &rs->entries[i];
        struct cfm_jentry *je = &rp->e[rp->n++];
        je->seq = in->seq;
        je->what = strdup(in->what ? in->what : "");
        je->at = in->at;
        je->ord = in->ord;
        je->deadline_ms = in->deadline_ms;
        je->result = in->result ? json_deep_copy(in->result) : NULL;
        je->error = in->error ? strdup(in->error) : NULL;
        if (!je->what || (in->result && !je->result) || (in->error && !je->error)) {
            cfm_engine__replay_free(rp);
            return NULL;
        }
        if (je->seq > rp->last_seq)
            rp->last_seq = je->seq;
        if (je->at >= 0)
            rp->q[rp->nq++] = je;
    }
    if (rp->nq > 1)
        qsort(rp->q, rp->nq, sizeof *rp->q, cmp_delivery);
    return rp;
}

/* Creates and starts a run: a new one (rs NULL) or one restored from its
 * journal. A restored run whose journal is corrupt, or whose procedure
 * changed (without force), is created and failed at once. */
static enum cfm_err start_run(struct cfm_engine *e, const struct cfm_run_spec *spec,
                              const struct cfm_run_restore *rs, struct cfm_run **out,
                              struct cfm_why *why)
{
    lua_State *L = e->L;
    struct cfm_run *r;
    double deadline = spec->deadline_s > 0 ? spec->deadline_s : e->opts.deadline_s;
    const char *evid = json_string_value(json_object_get(spec->event, "id"));
    size_t lid = strlen(spec->id) + 1, lsys = strlen(spec->system) + 1,
           levid = evid ? strlen(evid) + 1 : 0, lev = json_dumpb(spec->event, NULL, 0, JSON_COMPACT);
    char *t, hash[65];
    const char *refuse = NULL;
    char refusal[CFM_WHY_MAX + 160];
    int top = lua_gettop(L);
    int64_t now = cfm_time_ms();
    enum cfm_err err;

    *out = NULL;
    if (e->closing)
        return cfm_why_set(why, CFM_EINVAL, "the engine is stopping");
    if (cfm_engine_find(e, spec->id))
        return cfm_why_set(why, CFM_EINVAL, "run %s is already active", spec->id);
    if (lev == 0)
        return cfm_why_set(why, CFM_EINVAL, "the event of run %s cannot be encoded", spec->id);
    /* The run keeps the event as text: the host reads it to record the run,
     * the procedure has its own copy as a Lua table (the global `event`). */
    r = calloc(1, sizeof *r + lid + lsys + lev + 1 + levid);
    if (!r || !(r->acct = calloc(1, sizeof *r->acct))) {
        free(r);
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    r->e = e;
    r->acct->limit = e->opts.run_memory_limit;
    t = r->text;
    r->id = memcpy(t, spec->id, lid);
    r->system = memcpy(t += lid, spec->system, lsys);
    r->event = t += lsys;
    json_dumpb(spec->event, t, lev, JSON_COMPACT);
    t[lev] = '\0';
    r->event_id = evid ? memcpy(t += lev + 1, evid, levid) : NULL;
    r->env_ref = r->modules_ref = LUA_NOREF;
    r->started_ms = rs ? rs->started_ms : now;
    r->deadline_ms = rs ? rs->deadline_ms : now + (int64_t)(deadline * 1000.0);
    seed_rng(r);

    e->cur = r->acct;
    err = cfm_engine__load_script(e, L, spec->script, hash, why);
    if (err == CFM_OK && !(r->proc = get_proc(e, spec->script, hash)))
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
    if (err == CFM_OK && rs) {
        if (rs->corrupt) {
            refuse = rs->corrupt;
        } else if (!(r->replay = new_replay(rs))) {
            err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        } else if (strcmp(rs->hash, hash) != 0 && !rs->force) {
            snprintf(refusal, sizeof refusal,
                     "procedure %s changed since the run began (sha256 %.12s then, %.12s now): "
                     "not replayed against different code; `cfmctl runs resume %s --force` "
                     "replays it against the new text",
                     spec->script, rs->hash, hash, r->id);
            refuse = refusal;
            r->resumable = true;
        }
        if (rs->force && strcmp(rs->hash, hash) != 0)
            cfm_warn("engine", "run %s: %s changed since the run began; replaying against the "
                     "new text as the operator forced", r->id, spec->script);
    }
    if (err == CFM_OK && !refuse) {
        lua_createtable(L, 0, 2); /* the run's globals: _G, event, and what it defines */
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->env_mt_ref);
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "_G");
        cfm_lua_push_json(L, spec->event);
        lua_setfield(L, -2, "event");
        lua_pushvalue(L, -1);
        r->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        if (!cfm_engine__new_fiber(r, L, 1, 0))
            err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    e->cur = &e->global;
    if (err != CFM_OK) {
        lua_settop(L, top);
        luaL_unref(L, LUA_REGISTRYINDEX, r->env_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, r->modules_ref);
        cfm_engine__replay_free(r->replay);
        put_proc(e, r->proc);
        r->acct->dead = true;
        cfm_engine__acct_release(r->acct);
        free(r);
        return err;
    }
    lua_settop(L, top);
    if (!cfm_engine__timer_start(e, &r->deadline,
                                 r->deadline_ms > now ? (uint64_t)(r->deadline_ms - now) : 0,
                                 on_deadline))
        cfm_error("engine", "run %s: out of memory arming its deadline", spec->id);
    r->state = CFM_RUN_RUNNING;
    r->next = e->runs;
    if (e->runs)
        e->runs->prev = r;
    e->runs = r;
    r->next_by_id = e->by_id[cfm_engine__hash(r->id) % CFM_RUN_BUCKETS];
    e->by_id[cfm_engine__hash(r->id) % CFM_RUN_BUCKETS] = r;
    e->active++;
    if (rs)
        cfm_info("engine", "run %s restored: %s on %s, %zu journaled call(s) to replay", r->id,
                 spec->script, r->system, rs->n);
    else
        cfm_info("engine", "run %s started: %s on %s", r->id, spec->script, r->system);
    if (!rs && e->host.on_start)
        e->host.on_start(e->host.arg, r);
    notify(r);
    *out = r;
    if (refuse)
        finish_run(r, CFM_RUN_FAILED, refuse, "");
    return CFM_OK;
}

enum cfm_err cfm_engine_start(struct cfm_engine *e, const struct cfm_run_spec *spec,
                              struct cfm_run **out, struct cfm_why *why)
{
    return start_run(e, spec, NULL, out, why);
}

enum cfm_err cfm_engine_restore(struct cfm_engine *e, const struct cfm_run_spec *spec,
                                const struct cfm_run_restore *rs, struct cfm_run **out,
                                struct cfm_why *why)
{
    return start_run(e, spec, rs, out, why);
}

/* --- ending runs ------------------------------------------------------- */

static void free_run(struct cfm_run *r)
{
    for (unsigned i = 0; r->log && i < CFM_RUN_LOG_LINES; i++)
        free(r->log[i].text);
    free(r->log);
    free(r->waiting_on);
    put_proc(r->e, r->proc);
    json_decref(r->result);
    json_decref(r->consumed);
    cfm_engine__replay_free(r->replay);
    free(r->diverged);
    free(r->error);
    free(r->traceback);
    free(r);
}

static void finish_run(struct cfm_run *r, enum cfm_run_state state, const char *error,
                       const char *traceback)
{
    struct cfm_engine *e = r->e;
    struct cfm_run **p;
    struct cfm_fiber *f, *next;

    if (r->state >= CFM_RUN_SUCCEEDED)
        return;
    /* Out of the ready queue (walked only when a fiber of r is on it: a run
     * usually ends from its own resume, with nothing queued) and the active
     * list. */
    for (f = r->fibers; f && !f->queued; f = f->next)
        ;
    if (f) {
        for (struct cfm_fiber **q = &e->ready_head; *q;) {
            if ((*q)->run == r)
                *q = (*q)->next_ready;
            else
                q = &(*q)->next_ready;
        }
        e->ready_tail = NULL;
        for (f = e->ready_head; f; f = f->next_ready)
            e->ready_tail = f;
    }
    if (r->prev)
        r->prev->next = r->next;
    else
        e->runs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    for (p = &e->by_id[cfm_engine__hash(r->id) % CFM_RUN_BUCKETS]; *p; p = &(*p)->next_by_id) {
        if (*p == r) {
            *p = r->next_by_id;
            break;
        }
    }
    e->active--;
    r->state = state;
    r->ended_ms = cfm_time_ms();
    cfm_engine__set_waiting_on(r, NULL);
    r->error = strdup(error ? error : "");
    r->traceback = strdup(traceback ? traceback : "");
    if (state == CFM_RUN_SUCCEEDED)
        cfm_info("engine", "run %s succeeded (%lld ms)", r->id,
                 (long long)(r->ended_ms - r->started_ms));
    else
        cfm_warn("engine", "run %s %s: %s", r->id, cfm_run_state_name(state), r->error);
    notify(r);

    for (f = r->fibers; f; f = next) {
        next = f->next;
        free_fiber(e, f);
    }
    r->fibers = NULL;
    luaL_unref(e->L, LUA_REGISTRYINDEX, r->env_ref);
    luaL_unref(e->L, LUA_REGISTRYINDEX, r->modules_ref);
    r->acct->dead = true;
    cfm_engine__acct_release(r->acct);
    r->acct = NULL;
    cfm_engine__timer_stop(e, &r->deadline);
    /* Freed from on_idle: the caller (a resume, a timer) may still look at r. */
    r->next = e->ended;
    e->ended = r;
    if (!e->idle_on) {
        uv_idle_start(&e->idle, on_idle);
        e->idle_on = true;
    }
}

static void free_ended(struct cfm_engine *e)
{
    while (e->ended) {
        struct cfm_run *r = e->ended;
        e->ended = r->next;
        free_run(r);
    }
}

enum cfm_err cfm_engine_cancel(struct cfm_engine *e, const char *id, const char *reason)
{
    struct cfm_run *r = cfm_engine_find(e, id);

    if (!r)
        return CFM_ENOTFOUND;
    finish_run(r, CFM_RUN_CANCELLED, reason ? reason : "cancelled", "");
    return CFM_OK;
}

/* --- resuming ---------------------------------------------------------- */

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct cfm_fiber *f = cfm_engine__fiber_of(L);

    (void)ar;
    if (f && !f->budget_blown) {
        f->budget_blown = true;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1); /* pcall cannot outlast this */
    }
    /* Level 0, the function looping: luaL_error's level 1 would name its
     * caller, which is C (resume, pcall) for a main chunk or a pcall'ed loop.
     * lua_pushfstring knows %d but not %lu: the budget fits an int (checked
     * at start). */
    luaL_where(L, 0);
    lua_pushfstring(L, "instruction budget of %d per resume exceeded (an endless loop?)",
                    f ? (int)f->run->e->opts.instr_budget : 0);
    lua_concat(L, 2);
    lua_error(L);
}

/* Stores what a finished fiber returned (or its error) and wakes the
 * fibers of the run waiting for it. */
static void fiber_done(struct cfm_fiber *f, bool failed, const char *error)
{
    struct cfm_run *r = f->run;
    lua_State *L = r->e->L;

    f->done = true;
    f->failed = failed;
    if (failed) {
        lua_pushstring(L, error);
    } else {
        int n = lua_gettop(f->co);
        lua_createtable(L, n, 1);
        for (int i = 1; i <= n; i++) {
            lua_pushvalue(f->co, i);
            lua_xmove(f->co, L, 1);
            lua_rawseti(L, -2, i);
        }
        lua_pushinteger(L, n);
        lua_setfield(L, -2, "n");
    }
    f->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (struct cfm_fiber *w = r->fibers; w; w = w->next) {
        bool all = w->wait == CFM_WAIT_TASKS;
        for (int i = 0; all && i < w->nwait; i++) {
            struct cfm_fiber *t = cfm_engine__find_fiber(r, w->wait_ids[i]);
            all = !t || t->done;
        }
        if (all) {
            free(w->wait_ids);
            w->wait_ids = NULL;
            w->nwait = 0;
            cfm_engine__make_ready(w, 0); /* l_wait's continuation collects the results */
        }
    }
}

static void resume_fiber(struct cfm_fiber *f)
{
    struct cfm_run *r = f->run;
    struct cfm_engine *e = r->e;
    int nres = 0, status;

    r->resumes++;
    e->cur = r->acct;
    f->budget_blown = false;
    lua_sethook(f->co, budget_hook, LUA_MASKCOUNT, (int)e->opts.instr_budget);
    if (r->state == CFM_RUN_WAITING) {
        r->state = CFM_RUN_RUNNING;
        cfm_engine__set_waiting_on(r, NULL);
    }
    status = lua_resume(f->co, e->L, f->ready_nargs, &nres);
    e->cur = &e->global;

    if (status == LUA_YIELD) {
        lua_pop(f->co, nres);
        if (f->wait == CFM_WAIT_NONE && !f->queued) {
            finish_run(r, CFM_RUN_FAILED, "a procedure may not yield by itself", "");
            return;
        }
        /* The run waits when none of its fibers is ready. */
        for (struct cfm_fiber *g = r->fibers; g; g = g->next)
            if (!g->done && (g->wait == CFM_WAIT_NONE || g->queued))
                return;
        if (r->state != CFM_RUN_WAITING) {
            r->state = CFM_RUN_WAITING;
            notify(r);
        }
        return;
    }
    if (status == LUA_OK) {
        fiber_done(f, false, NULL);
        if (f->id == 0) {
            struct cfm_why why = {{0}};
            if (nres > 0 && !lua_isnil(f->co, 1))
                r->result = cfm_lua_to_json(f->co, 1, "result", &why);
            finish_run(r, CFM_RUN_SUCCEEDED, NULL, NULL);
        }
        return;
    }
    /* An error: the coroutine is dead but its stack is kept for the traceback. */
    {
        const char *msg = lua_tostring(f->co, -1);
        char fallback[64];

        if (status == LUA_ERRMEM)
            msg = "not enough memory (the run's memory limit was reached)";
        else if (!msg) {
            snprintf(fallback, sizeof fallback, "(error object is a %s value)",
                     luaL_typename(f->co, -1));
            msg = fallback;
        }
        luaL_traceback(e->L, f->co, msg, 0);
        if (f->id == 0) {
            finish_run(r, CFM_RUN_FAILED, msg, lua_tostring(e->L, -1));
            lua_pop(e->L, 1);
        } else {
            char *tb = strdup(lua_tostring(e->L, -1));
            lua_pop(e->L, 1);
            fiber_done(f, true, tb ? tb : msg);
            free(tb);
        }
    }
}

/* Resumes f; then a diverged replay fails the run, and the journal hands
 * over the results due now. */
static void resume(struct cfm_fiber *f)
{
    struct cfm_run *r = f->run;

    resume_fiber(f);
    if (r->state >= CFM_RUN_SUCCEEDED)
        return;
    if (r->diverged) {
        finish_run(r, CFM_RUN_FAILED, r->diverged, "");
        return;
    }
    cfm_engine__pump(r);
}

static void on_idle(uv_idle_t *h)
{
    cfm_engine_run_ready(h->data);
}

bool cfm_engine_run_ready(struct cfm_engine *e)
{
    bool batch = e->host.batch && !e->closing, ran = e->ready_head != NULL;

    if (ran && batch)
        e->host.batch(e->host.arg, true);
    for (int i = 0; i < RESUMES_PER_TURN && e->ready_head; i++) {
        struct cfm_fiber *f = e->ready_head;
        e->ready_head = f->next_ready;
        if (!e->ready_head)
            e->ready_tail = NULL;
        f->next_ready = NULL;
        f->queued = false;
        resume(f);
    }
    if (ran && batch)
        e->host.batch(e->host.arg, false);
    free_ended(e);
    if (!e->ready_head) {
        uv_idle_stop(&e->idle);
        e->idle_on = false;
    }
    return ran;
}

/* --- the engine -------------------------------------------------------- */

enum cfm_err cfm_engine_new(uv_loop_t *loop, const struct cfm_engine_opts *opts,
                            const struct cfm_engine_host *host, struct cfm_engine **out,
                            struct cfm_why *why)
{
    struct cfm_engine *e = calloc(1, sizeof *e);

    *out = NULL;
    if (!e)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    e->loop = loop;
    e->opts = *opts;
    e->host = *host;
    if (!e->opts.run_memory_limit)
        e->opts.run_memory_limit = DEFAULT_MEMORY;
    if (!e->opts.instr_budget || e->opts.instr_budget > INT32_MAX)
        e->opts.instr_budget = DEFAULT_BUDGET;
    if (e->opts.deadline_s <= 0)
        e->opts.deadline_s = DEFAULT_DEADLINE_S;
    if (opts->procedures_dir)
        snprintf(e->procedures_dir, sizeof e->procedures_dir, "%s", opts->procedures_dir);
    e->opts.procedures_dir = e->procedures_dir;
    e->L = cfm_engine__new_state(e);
    if (!e->L) {
        free(e);
        return cfm_why_set(why, CFM_ENOMEM, "cannot create the Lua state");
    }
    *(struct cfm_fiber **)lua_getextraspace(e->L) = NULL;
    lua_pushlightuserdata(e->L, e);
    lua_setfield(e->L, LUA_REGISTRYINDEX, "cfm.engine");
    cfm_engine__open_base(e);
    uv_idle_init(loop, &e->idle);
    e->idle.data = e;
    uv_timer_init(loop, &e->timer);
    e->timer.data = e;
    e->open_handles = 2;
    *out = e;
    return CFM_OK;
}

static void on_engine_closed(uv_handle_t *h)
{
    struct cfm_engine *e = h->data;

    if (--e->open_handles > 0)
        return;
    free_ended(e);
    free(e->heap);
    for (unsigned i = 0; i < CFM_RECENT_EVENTS; i++)
        json_decref(e->recent[i].event);
    lua_close(e->L);
    free(e);
}

void cfm_engine_close(struct cfm_engine *e)
{
    if (!e)
        return;
    e->closing = true;
    while (e->runs)
        finish_run(e->runs, CFM_RUN_CANCELLED, "the manager is stopping", "");
    uv_idle_stop(&e->idle);
    uv_close((uv_handle_t *)&e->idle, on_engine_closed);
    uv_close((uv_handle_t *)&e->timer, on_engine_closed);
}

enum cfm_err cfm_engine_check_script(struct cfm_engine *e, const char *script,
                                     struct cfm_why *why)
{
    int top = lua_gettop(e->L);
    char hash[65];
    enum cfm_err err = cfm_engine__load_script(e, e->L, script, hash, why);

    lua_settop(e->L, top);
    return err;
}

const char *cfm_engine_procedures_dir(const struct cfm_engine *e)
{
    return e->procedures_dir[0] ? e->procedures_dir : NULL;
}

struct cfm_run *cfm_engine_find(struct cfm_engine *e, const char *id)
{
    for (struct cfm_run *r = e->by_id[cfm_engine__hash(id) % CFM_RUN_BUCKETS]; r; r = r->next_by_id)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

size_t cfm_engine_active(const struct cfm_engine *e)
{
    return e->active;
}

struct cfm_run *cfm_engine_run_of(lua_State *L)
{
    struct cfm_fiber *f = cfm_engine__fiber_of(L);
    return f ? f->run : NULL;
}

void *cfm_engine_host_arg(lua_State *L)
{
    struct cfm_engine *e;

    lua_getfield(L, LUA_REGISTRYINDEX, "cfm.engine");
    e = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return e ? e->host.arg : NULL;
}

void cfm_run_log(struct cfm_run *r, const char *level, const char *text)
{
    enum cfm_log_level lv = CFM_LOG_INFO;
    struct cfm_logline *l;

    cfm_log_parse_level(level, &lv);
    /* A replay logs again what the first execution logged. */
    cfm_log(cfm_engine__replaying(r) ? CFM_LOG_DEBUG : lv, "run", "%s: %s", r->id, text);
    /* Most runs never log: the ring is allocated at the first line. */
    if (!r->log && !(r->log = calloc(CFM_RUN_LOG_LINES, sizeof *r->log)))
        return;
    l = &r->log[r->log_next];
    free(l->text);
    l->text = strdup(text);
    l->ms = cfm_time_ms();
    snprintf(l->level, sizeof l->level, "%s", level);
    r->log_next = (r->log_next + 1) % CFM_RUN_LOG_LINES;
    if (r->log_count < CFM_RUN_LOG_LINES)
        r->log_count++;
}

json_t *cfm_run_log_json(const struct cfm_run *r)
{
    json_t *arr = json_array();
    unsigned start = (r->log_next + CFM_RUN_LOG_LINES - r->log_count) % CFM_RUN_LOG_LINES;

    for (unsigned i = 0; arr && i < r->log_count; i++) {
        const struct cfm_logline *l = &r->log[(start + i) % CFM_RUN_LOG_LINES];
        char when[CFM_TIME_LEN];
        cfm_time_format(l->ms, when);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "time", when, "level", l->level,
                                             "text", l->text ? l->text : ""));
    }
    return arr;
}

const char *cfm_run_id(const struct cfm_run *r) { return r->id; }
const char *cfm_run_system(const struct cfm_run *r) { return r->system; }
const char *cfm_run_script(const struct cfm_run *r) { return r->proc->name; }
enum cfm_run_state cfm_run_state(const struct cfm_run *r) { return r->state; }
const char *cfm_run_waiting_on(const struct cfm_run *r) { return r->waiting_on ? r->waiting_on : ""; }
const char *cfm_run_error(const struct cfm_run *r) { return r->error ? r->error : ""; }
const char *cfm_run_traceback(const struct cfm_run *r) { return r->traceback ? r->traceback : ""; }
const char *cfm_run_event(const struct cfm_run *r) { return r->event; }
const json_t *cfm_run_result(const struct cfm_run *r) { return r->result; }
int64_t cfm_run_started_ms(const struct cfm_run *r) { return r->started_ms; }
int64_t cfm_run_ended_ms(const struct cfm_run *r) { return r->ended_ms; }
int64_t cfm_run_deadline_ms(const struct cfm_run *r) { return r->deadline_ms; }
const char *cfm_run_hash(const struct cfm_run *r) { return r->proc->hash; }
bool cfm_run_resumable(const struct cfm_run *r) { return r->resumable; }
bool cfm_run_replaying(const struct cfm_run *r) { return cfm_engine__replaying(r); }
bool cfm_run_marked(const struct cfm_run *r) { return r->host_mark; }
void cfm_run_set_marked(struct cfm_run *r, bool on) { r->host_mark = on; }
uint64_t cfm_run_record_sum(const struct cfm_run *r) { return r->record_sum; }
void cfm_run_set_record_sum(struct cfm_run *r, uint64_t sum) { r->record_sum = sum; }
