/*
 * manager_int.h - what the files of the manager share; not for other
 * modules (they see manager.h only).
 *
 *   manager.c        start and stop, signals, and the bus's callbacks: every
 *                    message is routed from on_message to the module owning it
 *   membership.c     the systems this site belongs to: the parsed
 *                    BusinessSystem cache and the subscriptions of members
 *   manager_runs.c   runs: the ones events start, and the engine's hooks that
 *                    record and journal them
 *   run_history.c    ended runs' records deleted after cfg.run_history_s
 *
 * Everything runs on the manager's loop thread; nothing here locks.
 */
#ifndef CFM_MANAGER_INT_H
#define CFM_MANAGER_INT_H

#include <limits.h>
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "api.h"
#include "bounds.h"
#include "bus.h"
#include "config.h"
#include "driver.h"
#include "engine.h"
#include "obj.h"
#include "publish.h"
#include "topic.h"

/* Systems kept parsed: every event names its system, and reading and
 * parsing its body again for each cost a tenth of an event hop. */
#define SYSTEM_CACHE 16

struct cfm_manager {
    uv_loop_t *loop;
    struct cfm_config cfg;
    int argc;
    char **argv;
    struct cfm_store *store;
    struct cfm_bus *bus;
    struct cfm_replica *replica;
    struct cfm_sync *sync;
    struct cfm_engine *engine;
    struct cfm_policy *policy;
    struct cfm_api_ctx api;
    struct cfm_publisher events; /* what api, policy and vmapi publish events through */
    /* Events this site published during a turn of run resumes, handled
     * here at the end of the turn, in its transaction (a run may not be
     * started from inside another run's call). */
    json_t *looped;
    bool in_turn;
    char bin_dir[PATH_MAX + 16];
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stop_timer;
    /* Runs that began waiting: their record is written once they have
     * waited RECORD_WAIT_MS (most waits of a busy run are shorter). */
    uv_timer_t record_timer;
    /* Acknowledged outbox rows not taken by a transaction within ACK_MS. */
    uv_timer_t ack_timer;
    char (*waiting)[CFM_MAX_ID + 1];
    size_t nwaiting, capwaiting;
    /* Parsed BusinessSystem objects (cfm_manager__system_of). */
    struct cfm_obj *systems[SYSTEM_CACHE];
    size_t nsystems, next_evict;
    uint64_t systems_writes;
    uv_timer_t trim_timer;
    /* Forgets handled events older than cfg.event_dedup_s (seen_events). */
    uv_timer_t dedup_timer;
    /* Deletes the records of runs ended over cfg.run_history_s ago
     * (run_history.c), scanning from the cursor. */
    uv_timer_t history_timer;
    struct cfm_store_cursor history_cursor;
    size_t backlog_peak;         /* most unacknowledged publishes since the last trim */
    int stop_mid;
    bool stopping;
    bool reading;   /* the bus is reading a wake-up's messages (on_read) */
    bool read_batch; /* ... and holds a transaction for the objects and events among them */
    bool read_turn;  /* ... and the turns of the runs they made due (flush_read) */
    char will[256];
    char status_topic[CFM_MAX_TOPIC + 1];
};

/* ---- membership.c ---- */

/* Frees the parsed systems (the cache is empty after). */
void cfm_manager__forget_systems(struct cfm_manager *m);
/* The BusinessSystem id as stored (tombstone included), or NULL; borrowed. */
const struct cfm_obj *cfm_manager__system_of(struct cfm_manager *m, const char *id);
/* Whether sys (borrowed) is live and names site among its "sites". */
bool cfm_manager__is_member(const struct cfm_obj *sys, const char *site);
/* The replica's callback (arg: the manager): (un)subscribes a system joined or left. */
void cfm_manager__on_system(void *arg, const struct cfm_obj *sys);
/* cfm_store_each's callback at start: cfm_manager__on_system for each system. */
bool cfm_manager__subscribe_member(void *arg, const struct cfm_obj *sys);
/* Whether this site is a member of system, as subscribed: no store read. */
bool cfm_manager__member_of(struct cfm_manager *m, const char *system);
/* cfm_store_each's callback: announces our digest of each member system. */
bool cfm_manager__announce_member(void *arg, const struct cfm_obj *sys);

/* ---- manager_runs.c ---- */

/* An event (msg borrowed): recorded, its bound run started, its waiters resumed. */
void cfm_manager__handle_event(struct cfm_manager *m, const struct cfm_topic *t,
                               const struct cfm_bus_msg *msg);
/* The publisher's loopback (arg: the manager): an event this site published
 * (borrowed), handled as one from the broker would be; inside the
 * transaction that published it, at once or at the end of the turn. */
void cfm_manager__loopback(void *arg, const json_t *ev);
/* Starts forgetting the ids of events handled longer than cfg.event_dedup_s
 * ago: every min(event_dedup_s, DEDUP_TICK_S), from a tick after the start
 * (dedup_timer). */
void cfm_manager__start_forgetting(struct cfm_manager *m);
/* Starts deleting the records of runs this site ran that ended over
 * cfg.run_history_s ago (history_timer). */
void cfm_manager__start_run_history(struct cfm_manager *m);
/* Engine hook (arg: &m->api): a new run's journal begins. */
void cfm_manager__on_run_start(void *arg, struct cfm_run *run);
/* Engine hook (arg: &m->api): records the run now or, waiting, a little later. */
void cfm_manager__on_run_state(void *arg, struct cfm_run *run);
/* Engine hook (arg: &m->api): stores a journal entry (borrowed) of run. */
void cfm_manager__on_journal(void *arg, struct cfm_run *run,
                             const struct cfm_journal_entry *entry);
/* Engine hook (arg: &m->api): installs the procedure API into L. */
void cfm_manager__open_api(void *arg, lua_State *L);
/* Engine hook (arg: &m->api): a loop turn of resumes begins or ends (one transaction). */
void cfm_manager__on_batch(void *arg, bool begin);
/* The driver's callback (arg: the manager): a VM changed state (borrowed). */
void cfm_manager__on_driver_event(void *arg, const struct cfm_vm_info *vm);
/* The failpoints' question (arg: the store): is a transaction open? */
bool cfm_manager__store_in_txn(void *arg);

#endif
