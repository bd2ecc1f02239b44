/*
 * run_history.c - forgetting ended runs. Every run leaves its record (a
 * ProcedureRun object, replicated to every site of its system, and a
 * retained copy on its run topic on every broker); without this they
 * would stay for good, in every store and in every broker's memory.
 *
 * The site that ran a run deletes its record cfg.run_history_s (30 days
 * unless configured) after the run ended: a tombstone, replicated as any
 * delete, and an empty retained message on the run topic, which clears
 * the brokers' copies. Only ended runs (succeeded, failed, cancelled)
 * that this site's engine does not hold are deleted; a run still waiting,
 * however old, keeps its record. Records of runs that another site ran
 * are that site's to delete.
 *
 * The scan reads the ProcedureRun records HISTORY_BATCH at a time in
 * (system, id) order from where the last batch stopped (a cursor in
 * memory), at most HISTORY_BUDGET_MS of the loop at a time; after the last
 * batch it starts over a tick later: a tenth of run_history_s, from 1 s to
 * an hour (a record is deleted at most that late; a scan parses every
 * record, which is not worth doing every minute). A batch's
 * deletions are one transaction, made after the batch is read.
 */
#include "manager_int.h"

#include <stdlib.h>
#include <string.h>

#include "kind.h"
#include "log.h"
#include "topic.h"
#include "util.h"

#define HISTORY_TICK_MAX_S 3600
#define HISTORY_BATCH 50
#define HISTORY_BUDGET_MS 10

struct old_runs {
    const struct cfm_manager *m;
    int64_t before_ms;
    struct {
        char system[CFM_MAX_ID + 1];
        char id[CFM_MAX_ID + 1];
    } runs[HISTORY_BATCH];
    size_t n;
};

static int64_t history_keep_s(const struct cfm_manager *m)
{
    return m->cfg.run_history_s > 0 ? m->cfg.run_history_s : CFM_RUN_HISTORY_DEFAULT_S;
}

static uint64_t history_tick_ms(const struct cfm_manager *m)
{
    int64_t tick_s = history_keep_s(m) / 10;
    return (uint64_t)(tick_s < 1 ? 1 : tick_s > HISTORY_TICK_MAX_S ? HISTORY_TICK_MAX_S : tick_s) *
           1000;
}

static bool ended_state(const char *state)
{
    return state && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                     strcmp(state, "cancelled") == 0);
}

/* Collects the records this site may delete now. */
static bool collect_old(void *arg, const struct cfm_obj *obj)
{
    struct old_runs *o = arg;
    const char *site = json_string_value(json_object_get(obj->body, "site"));
    const char *ended = json_string_value(json_object_get(obj->body, "ended"));
    struct cfm_run *run;
    int64_t ended_ms;

    if (!site || strcmp(site, o->m->cfg.site) != 0 ||
        !ended_state(json_string_value(json_object_get(obj->body, "state"))) || !ended ||
        cfm_time_parse(ended, &ended_ms) != CFM_OK || ended_ms >= o->before_ms)
        return true;
    run = o->m->engine ? cfm_engine_find(o->m->engine, obj->id) : NULL;
    if (run && cfm_run_state(run) < CFM_RUN_SUCCEEDED)
        return true; /* running here again (cfmctl runs resume): not over */
    snprintf(o->runs[o->n].system, sizeof o->runs[o->n].system, "%s", obj->system);
    snprintf(o->runs[o->n].id, sizeof o->runs[o->n].id, "%s", obj->id);
    o->n++;
    return true;
}

/* Deletes the collected records: their tombstones in one write (the
 * replica gives them their versions), and their run topics cleared. */
static void forget_runs(struct cfm_manager *m, const struct old_runs *o)
{
    struct cfm_obj *tombs[HISTORY_BATCH] = {0};
    char topic[CFM_MAX_TOPIC + 1];
    struct cfm_why why = {{0}};
    size_t n = 0;

    while (n < o->n &&
           (tombs[n] = cfm_obj_new(CFM_KIND_PROCEDURE_RUN, o->runs[n].system, o->runs[n].id,
                                   NULL)))
        tombs[n++]->deleted = true;
    if (n < o->n)
        cfm_error("runs", "out of memory deleting the records of ended runs");
    else if (cfm_replica_write(m->replica, tombs, n, &why) != CFM_OK)
        cfm_error("runs", "cannot delete the records of %zu ended run(s): %s", n, why.text);
    else
        for (size_t i = 0; i < n; i++)
            if (cfm_topic_build(topic, sizeof topic, CFM_TOPIC_RUN, o->runs[i].system,
                                o->runs[i].id, NULL, NULL) == CFM_OK)
                cfm_replica_publish(m->replica, topic, "", 0, true);
    for (size_t i = 0; i < n; i++)
        cfm_obj_free(tombs[i]);
}

static void on_history_timer(uv_timer_t *t)
{
    struct cfm_manager *m = t->data;
    int64_t start = cfm_time_ms();
    uint64_t next_ms = history_tick_ms(m);
    struct old_runs *o = calloc(1, sizeof *o);
    size_t visited = HISTORY_BATCH, total = 0;

    if (!o) {
        cfm_error("runs", "out of memory forgetting ended runs; trying again later");
        uv_timer_start(&m->history_timer, on_history_timer, next_ms, 0);
        return;
    }
    o->m = m;
    o->before_ms = start - history_keep_s(m) * 1000;
    while (visited == HISTORY_BATCH) {
        if (cfm_time_ms() - start >= HISTORY_BUDGET_MS) {
            next_ms = 1; /* more to read: after what else is waiting */
            break;
        }
        o->n = 0;
        if (cfm_store_each_after(m->store, CFM_KIND_PROCEDURE_RUN, &m->history_cursor,
                                 HISTORY_BATCH, collect_old, o, &visited) != CFM_OK) {
            cfm_error("runs", "cannot read the records of ended runs");
            break;
        }
        if (o->n > 0) {
            cfm_replica_begin(m->replica);
            forget_runs(m, o);
            if (cfm_replica_commit(m->replica) != CFM_OK)
                break;
            total += o->n;
        }
    }
    if (visited < HISTORY_BATCH) /* the end: the next scan starts over */
        memset(&m->history_cursor, 0, sizeof m->history_cursor);
    if (total > 0)
        cfm_info("runs", "deleted the records of %zu run(s) that ended over %lld s ago", total,
                 (long long)history_keep_s(m));
    free(o);
    uv_timer_start(&m->history_timer, on_history_timer, next_ms, 0);
}

void cfm_manager__start_run_history(struct cfm_manager *m)
{
    /* The first scan a tick after the start, not in it: nothing is urgent. */
    uv_timer_start(&m->history_timer, on_history_timer, history_tick_ms(m), 0);
}
