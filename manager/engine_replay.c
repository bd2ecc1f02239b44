/*
 * engine_replay.c - the journal of a run's API calls, and replaying a run
 * from it after a restart (docs/procedures.md, Durability).
 *
 * Every API call of a run gets the next sequence number. A call answered
 * at once (a model read or write, publish_cloud_event, the clocks) is
 * journaled with its results when it returns. A call answered later (cloud
 * and agent calls, sleep, wait_cloud_event) is journaled when its result is
 * handed to the waiting fiber, together with `at`, the number of resumes of
 * the run so far, and `ord`, the order of such hand-overs.
 *
 * A restored run executes its script again from its event. The journal
 * answers each call it holds: at once for the first kind; for the second,
 * the fiber is suspended and pump() hands the recorded result over in
 * (at, ord) order, once the run has resumed `at` times. The fibers of a run
 * therefore interleave as they did the first time, so even fibers sharing
 * tables take the same path. A call the journal does not hold runs live
 * (with the same idempotency key: the driver and the agent answer a repeated
 * key with their first answer). A call whose description differs from the
 * journal's means the procedure took another path: the run fails rather
 * than act on answers meant for other calls.
 */
#include "engine_int.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "failpoint.h"
#include "log.h"
#include "luajson.h"

bool cfm_engine__replaying(const struct cfm_run *r)
{
    return r->replay && r->seq < r->replay->last_seq;
}

struct cfm_jentry *cfm_engine__journal_find(struct cfm_run *r, uint64_t seq)
{
    struct cfm_replay *rp = r->replay;
    size_t lo = 0, hi;

    if (!rp || seq > rp->last_seq)
        return NULL;
    hi = rp->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rp->e[mid].seq == seq)
            return &rp->e[mid];
        if (rp->e[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int cfm_engine__diverge(lua_State *L, struct cfm_run *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!r->diverged)
        r->diverged = strdup(msg);
    return luaL_error(L, "%s", msg);
}

static void caught_up(struct cfm_run *r)
{
    if (r->replay && !r->replay->caught_up && r->seq > r->replay->last_seq) {
        r->replay->caught_up = true;
        cfm_info("engine", "run %s: replayed %llu call(s) from the journal; going on live", r->id,
                 (unsigned long long)r->replay->last_seq);
    }
}

/* Journals one entry through the host, with the failpoints around it. */
static void write_entry(struct cfm_run *r, const struct cfm_journal_entry *je)
{
    struct cfm_engine *e = r->e;

    if (je->result || je->error)
        cfm_failpoint(je->what, "done");
    if (e->host.journal && !e->closing)
        e->host.journal(e->host.arg, r, je);
    if (je->result || je->error)
        cfm_failpoint(je->what, "journaled");
}

int cfm_engine__push_results(lua_State *co, const json_t *arr)
{
    size_t i, n = json_array_size(arr);
    json_t *v;

    luaL_checkstack(co, (int)n + 1, "too many results");
    json_array_foreach(arr, i, v) {
        if (json_is_null(v))
            lua_pushnil(co);
        else
            cfm_lua_push_json(co, v);
    }
    return (int)n;
}

/* --- calls answered at once -------------------------------------------- */

int cfm_engine_call_replay(lua_State *L, const char *what, uint64_t *seq)
{
    struct cfm_fiber *f = cfm_engine__fiber_of(L);
    struct cfm_run *r = f ? f->run : NULL;
    struct cfm_jentry *je;

    if (!r)
        return luaL_error(L, "%s: not inside a procedure run", what);
    if (r->diverged)
        return luaL_error(L, "%s", r->diverged);
    *seq = ++r->seq;
    je = cfm_engine__journal_find(r, *seq);
    if (!je) {
        caught_up(r);
        return -1;
    }
    if (je->at >= 0 || (!je->result && !je->error) || strcmp(je->what, what) != 0)
        return cfm_engine__diverge(L, r,
                                   "replay diverged at call %llu: the journal has '%s', the "
                                   "procedure now calls '%s'",
                                   (unsigned long long)*seq, je->what, what);
    if (je->error)
        return luaL_error(L, "%s", je->error);
    return cfm_engine__push_results(L, je->result);
}

void cfm_engine_call_record(lua_State *L, uint64_t seq, const char *what, const json_t *results,
                            const char *error)
{
    struct cfm_fiber *f = cfm_engine__fiber_of(L);
    struct cfm_journal_entry je = {.seq = seq, .what = what, .at = -1, .result = results,
                                   .error = error};

    if (f)
        write_entry(f->run, &je);
}

/* --- calls answered later ---------------------------------------------- */

struct cfm_jentry *cfm_engine__begin_call(struct cfm_fiber *f, const char *what)
{
    struct cfm_run *r = f->run;
    lua_State *L = f->co;
    struct cfm_jentry *je;
    uint64_t seq;

    if (r->diverged)
        luaL_error(L, "%s", r->diverged);
    seq = ++r->seq;
    je = cfm_engine__journal_find(r, seq);
    if (!je)
        caught_up(r);
    else if ((je->at < 0 && (je->result || je->error)) || strcmp(je->what, what) != 0)
        cfm_engine__diverge(L, r,
                            "replay diverged at call %llu: the journal has '%s', the procedure "
                            "now calls '%s'",
                            (unsigned long long)seq, je->what, what);
    free(f->call_what);
    f->call_what = strdup(what);
    f->call_seq = seq;
    /* A pending wait (no result yet) goes on live with what is left of it. */
    f->replay = je && (je->result || je->error) ? je : NULL;
    return je;
}

void cfm_engine__end_call(struct cfm_fiber *f)
{
    free(f->call_what);
    f->call_what = NULL;
    f->replay = NULL;
}

void cfm_engine__journal_result(struct cfm_fiber *f, const json_t *result, const char *error)
{
    struct cfm_run *r = f->run;
    struct cfm_journal_entry je = {
        .seq = f->call_seq,
        .what = f->call_what ? f->call_what : "?",
        .at = (int64_t)r->resumes,
        .ord = ++r->ord,
        .result = error ? NULL : result,
        .error = error,
    };

    write_entry(r, &je);
}

void cfm_engine__journal_pending(struct cfm_fiber *f, int64_t deadline_ms)
{
    struct cfm_journal_entry je = {
        .seq = f->call_seq,
        .what = f->call_what ? f->call_what : "?",
        .at = -1,
        .deadline_ms = deadline_ms,
    };

    write_entry(f->run, &je);
    cfm_failpoint(je.what, "sent");
}

/* Hands entry je's recorded result to fiber f, suspended in that call. */
static void hand_over(struct cfm_fiber *f, struct cfm_jentry *je)
{
    struct cfm_run *r = f->run;
    struct cfm_engine *e = r->e;
    struct cfm_acct *prev = e->cur;
    int n = 0;

    if (f->call && f->call->replayed) {
        free(f->call);
        f->call = NULL;
    }
    if (je->ord > r->ord)
        r->ord = je->ord;
    f->replay = NULL;
    free(f->call_error);
    f->call_error = NULL;
    if (je->error) {
        f->call_error = strdup(je->error);
    } else {
        json_t *first = json_array_get(je->result, 0);
        const char *id = json_string_value(json_object_get(first, "id"));
        /* An event handed to a wait: this run has seen it. */
        if (f->wait == CFM_WAIT_EVENT)
            cfm_engine__consume(r, id);
        e->cur = r->acct;
        n = cfm_engine__push_results(f->co, je->result);
        e->cur = prev;
    }
    cfm_engine__drop_timer(f);
    if (f->wait == CFM_WAIT_EVENT)
        cfm_engine__unlink_waiter(f);
    f->call_nres = n;
    cfm_engine__make_ready(f, n);
}

static bool has_queued(const struct cfm_run *r)
{
    for (const struct cfm_fiber *f = r->fibers; f; f = f->next)
        if (f->queued)
            return true;
    return false;
}

void cfm_engine__pump(struct cfm_run *r)
{
    struct cfm_replay *rp = r->replay;

    while (rp && rp->qnext < rp->nq && r->state < CFM_RUN_SUCCEEDED) {
        struct cfm_jentry *je = rp->q[rp->qnext];
        struct cfm_fiber *f;

        for (f = r->fibers; f && f->replay != je; f = f->next)
            ;
        if (!f)
            return; /* its call is not made yet */
        if ((int64_t)r->resumes < je->at && has_queued(r))
            return; /* handed over after later resumes the first time */
        rp->qnext++;
        hand_over(f, je);
    }
}

void cfm_engine__replay_free(struct cfm_replay *rp)
{
    if (!rp)
        return;
    for (size_t i = 0; i < rp->n; i++) {
        free(rp->e[i].what);
        free(rp->e[i].error);
        json_decref(rp->e[i].result);
    }
    free(rp->e);
    free(rp->q);
    free(rp);
}
