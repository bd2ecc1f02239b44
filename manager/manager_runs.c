/*
 * manager_runs.c - the manager's side of runs: the run an event starts (the
 * system's rules bind it to this site) and the hooks through which the
 * engine has its runs recorded, journaled and given the procedure API.
 *
 * The one thing to know: a run's record is written in the transaction of
 * the change it records, except when it begins waiting, where it is
 * deferred by RECORD_WAIT_MS (defer_record) so that a run hopping between
 * events many times a second is not rewritten and replicated each time.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "engine.h"
#include "event.h"
#include "failpoint.h"
#include "journal.h"
#include "log.h"
#include "manager_int.h"
#include "replica.h"
#include "rules.h"
#include "store.h"
#include "util.h"
#include "vmapi.h"

/* Starts the run this site owes an event, if any. */
static void start_bound_run(struct cfm_manager *m, const struct cfm_obj *sys, const json_t *ev)
{
    struct cfm_rule_match match;
    struct cfm_run_spec spec;
    struct cfm_why why = {{0}};
    struct cfm_run *run;
    struct cfm_obj *done = NULL;
    const char *type = json_string_value(json_object_get(ev, "type"));

    if (!cfm_rules_match(m->store, sys, ev, m->cfg.site, &match)) {
        cfm_debug("rules", "%s on %s: %s", type, sys->id, match.reason);
        return;
    }
    /* A run of this event that already ended here (e.g. before a restart). */
    if (cfm_store_get(m->store, sys->id, CFM_KIND_PROCEDURE_RUN, match.run_id, &done) == CFM_OK) {
        cfm_obj_free(done);
        cfm_info("rules", "%s on %s: run %s exists already", type, sys->id, match.run_id);
        return;
    }
    memset(&spec, 0, sizeof spec);
    spec.id = match.run_id;
    spec.system = sys->id;
    spec.script = match.script;
    spec.event = ev;
    spec.deadline_s = match.timeout_s;
    cfm_info("rules", "%s on %s: %s; starting %s", type, sys->id, match.reason, match.run_id);
    if (cfm_engine_start(m->engine, &spec, &run, &why) != CFM_OK)
        cfm_error("rules", "cannot start %s for %s on %s: %s", match.script, type, sys->id,
                  why.text);
}

/* Event ev (complete) of system sys: marked handled, its bound run started
 * and its waiters given it, in one transaction (the caller's, if open): a
 * crash leaves all or nothing. An event this site published itself (own)
 * is not marked: it cannot come back (its subscription is "no local"), and
 * it is handled in the transaction that publishes it, which a replayed
 * run does not do again; its log line is the publisher's (debug here). */
static void take_event(struct cfm_manager *m, const struct cfm_obj *sys, const char *type,
                       const json_t *ev, bool own)
{
    const char *id = json_string_value(json_object_get(ev, "id"));
    bool already = false;

    cfm_replica_begin(m->replica);
    if (!own && cfm_store_event_mark(m->store, id, sys->id, type, &already) != CFM_OK) {
        cfm_replica_rollback(m->replica);
        cfm_error("event", "cannot record event %s", id);
        return;
    }
    if (already) {
        cfm_replica_commit(m->replica);
        cfm_debug("event", "duplicate event %s (%s on %s) dropped", id, type, sys->id);
        return;
    }
    if (own)
        cfm_debug("event", "event %s on %s (id %s) published here", type, sys->id, id);
    else
        cfm_info("event", "event %s on %s (id %s, from %s)", type, sys->id, id,
                 json_string_value(json_object_get(ev, "origin")));
    start_bound_run(m, sys, ev);
    cfm_engine_on_event(m->engine, sys->id, type, ev);
    if (!own)
        cfm_failpoint("event", "done"); /* handed to its runs, not yet committed */
    if (cfm_replica_commit(m->replica) != CFM_OK)
        cfm_error("event", "cannot commit the handling of event %s", id);
}

void cfm_manager__handle_event(struct cfm_manager *m, const struct cfm_topic *t,
                               const struct cfm_bus_msg *msg)
{
    struct cfm_why why = {{0}};
    const struct cfm_obj *sys = cfm_manager__system_of(m, t->system);
    json_t *ev = NULL;

    if (!sys || !cfm_manager__is_member(sys, m->cfg.site))
        return;
    if (cfm_event_parse(msg->payload, msg->len, t->system, t->name, m->cfg.site, &ev, &why) !=
        CFM_OK) {
        cfm_warn("event", "dropped event %s on %s: %s", t->name, t->system, why.text);
        return;
    }
    take_event(m, sys, t->name, ev, false);
    json_decref(ev);
}

/* This site's copy of an event it published (see publish.h). */
static void take_looped(struct cfm_manager *m, const json_t *ev)
{
    const char *system = json_string_value(json_object_get(ev, "system"));
    const struct cfm_obj *sys = system ? cfm_manager__system_of(m, system) : NULL;

    if (sys && cfm_manager__is_member(sys, m->cfg.site))
        take_event(m, sys, json_string_value(json_object_get(ev, "type")), ev, true);
}

void cfm_manager__loopback(void *arg, const json_t *ev)
{
    struct cfm_manager *m = arg;

    if (!m->in_turn) {
        take_looped(m, ev);
        return;
    }
    /* A run is inside its call: the event waits for the end of the turn. */
    if (json_array_append(m->looped, (json_t *)ev) != 0) {
        cfm_error("event", "out of memory keeping this site's copy of event %s; handling it now",
                  json_string_value(json_object_get(ev, "id")));
        take_looped(m, ev);
    }
}

/* The ids of handled events are what drops a redelivered event; they are
 * kept for cfg.event_dedup_s (7 days unless configured), then forgotten,
 * or seen_events would grow by every event for good. Forgetting runs in
 * batches of DEDUP_BATCH records, each its own transaction, for at most
 * DEDUP_BUDGET_MS at a time; what is left goes on right after. */
#define DEDUP_TICK_S 60
#define DEDUP_BATCH 1000
#define DEDUP_BUDGET_MS 10

/* The window and how often to trim within it (a zeroed config: the default). */
static int64_t dedup_keep_s(const struct cfm_manager *m)
{
    return m->cfg.event_dedup_s > 0 ? m->cfg.event_dedup_s : CFM_EVENT_DEDUP_DEFAULT_S;
}

static uint64_t dedup_tick_ms(const struct cfm_manager *m)
{
    int64_t keep_s = dedup_keep_s(m);
    return (uint64_t)(keep_s < DEDUP_TICK_S ? keep_s : DEDUP_TICK_S) * 1000;
}

static void on_dedup_timer(uv_timer_t *t)
{
    struct cfm_manager *m = t->data;
    int64_t start = cfm_time_ms();
    uint64_t next_ms = dedup_tick_ms(m);
    char before[CFM_TIME_LEN];
    int deleted = DEDUP_BATCH, total = 0;

    cfm_time_format(start - dedup_keep_s(m) * 1000, before);
    while (deleted == DEDUP_BATCH) {
        if (cfm_time_ms() - start >= DEDUP_BUDGET_MS) {
            next_ms = 1; /* more to forget: after what else is waiting */
            break;
        }
        cfm_replica_begin(m->replica);
        if (cfm_store_events_trim(m->store, before, DEDUP_BATCH, &deleted) != CFM_OK) {
            cfm_replica_rollback(m->replica);
            cfm_error("event", "cannot forget the events handled before %s", before);
            break;
        }
        if (cfm_replica_commit(m->replica) != CFM_OK)
            break;
        total += deleted;
    }
    if (total > 0)
        cfm_debug("event", "forgot %d handled event(s) received before %s", total, before);
    uv_timer_start(&m->dedup_timer, on_dedup_timer, next_ms, 0);
}

void cfm_manager__start_forgetting(struct cfm_manager *m)
{
    /* The first trim a tick after the start, not in it: nothing is urgent. */
    uv_timer_start(&m->dedup_timer, on_dedup_timer, dedup_tick_ms(m), 0);
}

#define RECORD_WAIT_MS 100

/* Writes the records of the runs still waiting since they were queued. */
static void on_record_timer(uv_timer_t *t)
{
    struct cfm_manager *m = t->data;

    cfm_replica_begin(m->replica);
    for (size_t i = 0; i < m->nwaiting; i++) {
        struct cfm_run *run = m->engine ? cfm_engine_find(m->engine, m->waiting[i]) : NULL;
        if (!run)
            continue;
        cfm_run_set_marked(run, false);
        if (cfm_run_state(run) == CFM_RUN_WAITING)
            cfm_api_record_run(&m->api, run);
    }
    cfm_replica_commit(m->replica);
    m->nwaiting = 0;
}

/* Queues the record of a run that began waiting; false when it must be
 * written now (out of memory). */
static bool defer_record(struct cfm_manager *m, struct cfm_run *run)
{
    if (cfm_run_marked(run))
        return true;
    if (m->nwaiting == m->capwaiting) {
        size_t cap = m->capwaiting ? 2 * m->capwaiting : 64;
        void *p = realloc(m->waiting, cap * sizeof *m->waiting);
        if (!p)
            return false;
        m->waiting = p;
        m->capwaiting = cap;
    }
    snprintf(m->waiting[m->nwaiting++], CFM_MAX_ID + 1, "%s", cfm_run_id(run));
    cfm_run_set_marked(run, true);
    if (!uv_is_active((uv_handle_t *)&m->record_timer))
        uv_timer_start(&m->record_timer, on_record_timer, RECORD_WAIT_MS, 0);
    return true;
}

/* The run's record, and when it ended the end of its journal, in one
 * transaction. A run that began waiting is recorded once it has waited a
 * little: a run that waits and resumes many times a second (event hops)
 * does not rewrite and replicate its record each time. */
void cfm_manager__on_run_state(void *arg, struct cfm_run *run)
{
    struct cfm_api_ctx *ctx = arg;
    struct cfm_manager *m = (struct cfm_manager *)((char *)ctx - offsetof(struct cfm_manager, api));

    if (cfm_run_state(run) == CFM_RUN_WAITING && defer_record(m, run))
        return;
    cfm_replica_begin(ctx->replica);
    cfm_api_record_run(ctx, run);
    if (cfm_run_state(run) >= CFM_RUN_SUCCEEDED)
        cfm_journal_on_end(ctx->st, run);
    cfm_replica_commit(ctx->replica);
}

bool cfm_manager__store_in_txn(void *arg)
{
    return cfm_store_in_txn(arg);
}

void cfm_manager__on_run_start(void *arg, struct cfm_run *run)
{
    struct cfm_api_ctx *ctx = arg;
    cfm_journal_on_start(ctx->st, run);
}

void cfm_manager__on_journal(void *arg, struct cfm_run *run,
                             const struct cfm_journal_entry *entry)
{
    struct cfm_api_ctx *ctx = arg;
    cfm_journal_put(ctx->st, run, entry);
}

/* The resumes of one loop turn share one transaction: a hop's journal
 * entries, its published events (and their handling here: the loopback
 * queue, emptied before the commit) and the pending entry of its next wait
 * commit once. Turns an event from the bus made due are taken inside the
 * transaction of the read that brought it (flush_read, manager.c), which
 * this one then nests in. Each call still has a level of its own (a savepoint), so a
 * call that fails undoes its own writes only. When the turn cannot commit
 * (the disk is full or failing), the runs went on believing calls that are
 * now undone: the manager stops at once, as if it had crashed, and the
 * next start replays those runs from the journal they committed. */
void cfm_manager__on_batch(void *arg, bool begin)
{
    struct cfm_api_ctx *ctx = arg;
    struct cfm_manager *m = (struct cfm_manager *)((char *)ctx - offsetof(struct cfm_manager, api));

    if (begin) {
        if (cfm_replica_begin(ctx->replica) != CFM_OK)
            cfm_error("engine", "cannot begin the transaction of a turn of resumes");
        m->in_turn = true;
        return;
    }
    m->in_turn = false;
    for (size_t i = 0; i < json_array_size(m->looped); i++)
        take_looped(m, json_array_get(m->looped, i));
    json_array_clear(m->looped);
    if (cfm_replica_commit(ctx->replica) != CFM_OK) {
        cfm_error("engine", "cannot commit a turn of run resumes (see the store's error "
                            "above); stopping: the runs resume from their journals at the "
                            "next start");
        fflush(stderr);
        _exit(3);
    }
}

void cfm_manager__open_api(void *arg, lua_State *L)
{
    cfm_api_open(arg, L);
}

void cfm_manager__on_driver_event(void *arg, const struct cfm_vm_info *vm)
{
    struct cfm_manager *m = arg;
    cfm_vmapi_on_driver_event(&m->api, vm);
}
