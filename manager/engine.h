/*
 * engine.h - procedure runs: sandboxed Lua 5.4 coroutines on the loop.
 *
 * One lua_State per manager; each run is a coroutine with its own global
 * table (falling back to a shared, read-only allow-list of libraries), a
 * memory limit, an instruction budget per resume and a deadline. API calls
 * that wait yield the coroutine; the engine resumes it from the loop when
 * the awaited thing happens. The engine knows nothing of VMs, models or
 * MQTT: the host (manager) installs the cloud/model API (api.c) and is told
 * of every state change.
 */
#ifndef CFM_ENGINE_H
#define CFM_ENGINE_H

#include <jansson.h>
#include <lua.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bounds.h"
#include "err.h"

struct cfm_engine;
struct cfm_run;

enum cfm_run_state {
    CFM_RUN_RUNNING,
    CFM_RUN_WAITING,
    CFM_RUN_SUCCEEDED,
    CFM_RUN_FAILED,
    CFM_RUN_CANCELLED,
};

/* "running", "waiting", "succeeded", "failed", "cancelled". */
const char *cfm_run_state_name(enum cfm_run_state s);

struct cfm_engine_opts {
    const char *procedures_dir;   /* scripts and lib/; NULL: runs fail at start */
    size_t run_memory_limit;      /* bytes per run; 0 = 64 MiB */
    unsigned long instr_budget;   /* VM instructions per resume; 0 = 50 million */
    double deadline_s;            /* default per run; 0 = 3600 */
};

/* One API call of a run in its journal (docs/procedures.md, Durability).
 * Calls are numbered 1, 2, ... in the order the run makes them; a run
 * replayed from its event makes them in the same order, and the journal
 * answers each one it holds instead of doing it again. */
struct cfm_journal_entry {
    uint64_t seq;
    const char *what;        /* the call, e.g. "run_vm small"; compared on replay */
    int64_t at;              /* results handed over later: the run's resumes before;
                                -1: answered at once (or a wait still pending) */
    uint64_t ord;            /* results handed over later: their order; else 0 */
    int64_t deadline_ms;     /* a pending wait: when it times out; else 0 */
    const json_t *result;    /* JSON array of the results; NULL when pending or failed */
    const char *error;       /* the error the call raised, or NULL */
};

struct cfm_engine_host {
    void *arg;
    /* A new run started (not called for a run restored from its journal). */
    void (*on_start)(void *arg, struct cfm_run *run);
    /* A run started, began waiting on something new, or ended. */
    void (*on_state)(void *arg, struct cfm_run *run);
    /* Persists a journal entry of run, inside whatever transaction the
     * caller of the engine holds. */
    void (*journal)(void *arg, struct cfm_run *run, const struct cfm_journal_entry *entry);
    /* Adds the host's API (api.c) to the sandbox's global table, which is
     * at the top of L's stack. */
    void (*open_api)(void *arg, lua_State *L);
    /* Brackets the resumes of one loop turn (begin true before them, false
     * after): the host may hold one transaction across them, so what they
     * journal and publish commits once. May be NULL. */
    void (*batch)(void *arg, bool begin);
};

/* Creates the engine and its Lua state. opts and host are copied. */
enum cfm_err cfm_engine_new(uv_loop_t *loop, const struct cfm_engine_opts *opts,
                            const struct cfm_engine_host *host, struct cfm_engine **out,
                            struct cfm_why *why);

/* Cancels every run (without notifying the host) and closes the engine;
 * memory is released once libuv has closed the handles. NULL is allowed. */
void cfm_engine_close(struct cfm_engine *e);

/* Compiles a procedure's text as the engine would (text only), without
 * running it. why gets "name:LINE: message" on a syntax error. */
enum cfm_err cfm_engine_check_text(const char *name, const char *text, size_t len,
                                   struct cfm_why *why);

/* The procedures directory, or NULL when the site has none. */
const char *cfm_engine_procedures_dir(const struct cfm_engine *e);

/* Compiles procedures_dir/script. CFM_ENOTFOUND when missing. */
enum cfm_err cfm_engine_check_script(struct cfm_engine *e, const char *script,
                                     struct cfm_why *why);

struct cfm_run_spec {
    const char *id;        /* run id (an ID) */
    const char *system;
    const char *script;    /* file name in procedures_dir */
    const json_t *event;   /* borrowed: the triggering event, the global `event` */
    double deadline_s;     /* 0: the engine's default */
};

/* Starts a run; it begins executing on a later loop turn. CFM_EINVAL when a
 * run with that id is active, CFM_ENOTFOUND/CFM_EINVAL when the script is
 * missing or does not compile (why says which, with file:line). */
enum cfm_err cfm_engine_start(struct cfm_engine *e, const struct cfm_run_spec *spec,
                              struct cfm_run **out, struct cfm_why *why);

/* What a run restored after a restart carries over (cfm_engine_restore). */
struct cfm_run_restore {
    int64_t started_ms;
    int64_t deadline_ms;
    const char *hash;        /* SHA-256 of the script when the run began */
    const struct cfm_journal_entry *entries; /* in seq order; copied */
    size_t n;
    const char *corrupt;     /* non-NULL: the journal could not be read; the run fails so */
    bool force;              /* replay even if the procedure changed since */
};

/* Restores a run that had not finished: it runs again from its event, the
 * journal answering every call it recorded, and goes on live where the
 * journal ends. If the script (or a module it requires) changed since the
 * run began, the run fails as resumable (cfm_run_resumable) unless force. */
enum cfm_err cfm_engine_restore(struct cfm_engine *e, const struct cfm_run_spec *spec,
                                const struct cfm_run_restore *rs, struct cfm_run **out,
                                struct cfm_why *why);

/* The active run with id, or NULL. */
struct cfm_run *cfm_engine_find(struct cfm_engine *e, const char *id);

/* Cancels an active run: it ends as cancelled (the host is told). */
enum cfm_err cfm_engine_cancel(struct cfm_engine *e, const char *id, const char *reason);

/* Active (running or waiting) runs. */
size_t cfm_engine_active(const struct cfm_engine *e);

/* Runs the resumes that are due (up to the engine's per-turn limit; the
 * rest in the loop's next turns), now rather than in the loop's idle
 * phase: the host calls it with the transaction of what made them due
 * still open, so both commit as one. True when any ran. */
bool cfm_engine_run_ready(struct cfm_engine *e);

/* Offers an event (borrowed) to every run waiting in wait_cloud_event for
 * (system, type) whose match it satisfies; also keeps it briefly for runs
 * that start waiting just after it arrived. */
void cfm_engine_on_event(struct cfm_engine *e, const char *system, const char *type,
                         const json_t *event);

/* --- a run, as the host sees it (valid during on_state) --------------- */
const char *cfm_run_id(const struct cfm_run *r);
const char *cfm_run_system(const struct cfm_run *r);
const char *cfm_run_script(const struct cfm_run *r);
enum cfm_run_state cfm_run_state(const struct cfm_run *r);
const char *cfm_run_waiting_on(const struct cfm_run *r);  /* "" unless waiting */
const char *cfm_run_error(const struct cfm_run *r);       /* "" unless failed/cancelled */
const char *cfm_run_traceback(const struct cfm_run *r);   /* "" unless failed */
const char *cfm_run_event(const struct cfm_run *r);       /* compact JSON text */
const json_t *cfm_run_result(const struct cfm_run *r);    /* NULL unless succeeded */
int64_t cfm_run_started_ms(const struct cfm_run *r);
int64_t cfm_run_ended_ms(const struct cfm_run *r);        /* 0 while active */
int64_t cfm_run_deadline_ms(const struct cfm_run *r);
const char *cfm_run_hash(const struct cfm_run *r);        /* SHA-256 hex of its script */
/* It failed only because its procedure changed since it began: the
 * operator may replay it against the new text (cfmctl runs resume --force). */
bool cfm_run_resumable(const struct cfm_run *r);
/* It is being replayed from its journal and has not caught up yet. */
bool cfm_run_replaying(const struct cfm_run *r);
/* A flag of the host's own (false at start). */
bool cfm_run_marked(const struct cfm_run *r);
void cfm_run_set_marked(struct cfm_run *r, bool on);
/* The host's digest of the run's record as last written (0: none yet). */
uint64_t cfm_run_record_sum(const struct cfm_run *r);
void cfm_run_set_record_sum(struct cfm_run *r, uint64_t sum);
/* Returns a new JSON array of the run's last log lines {"time","level","text"}. */
json_t *cfm_run_log_json(const struct cfm_run *r);

/* --- for API functions (api.c), called from Lua C functions ---------- */

/* The run whose coroutine is executing L; NULL outside a run. */
struct cfm_run *cfm_engine_run_of(lua_State *L);

/* Appends a line to the run's log (and the manager's log). */
void cfm_run_log(struct cfm_run *r, const char *level, const char *text);

/* The engine's site-independent context pointer for API functions. */
void *cfm_engine_host_arg(lua_State *L);

/* --- journaled API calls ------------------------------------------------ */

/* An API call answered at once (model reads and writes, publish, clocks).
 * Returns the number of results it pushed when the journal answers the
 * call (a replay: return that from the C function, doing nothing else), or
 * -1 when the call runs live: do it, then cfm_engine_call_record() its
 * results with *seq. Raises when the replay diverged. */
int cfm_engine_call_replay(lua_State *L, const char *what, uint64_t *seq);

/* Journals the results (a JSON array, borrowed) or the error of call seq.
 * The caller holds the transaction of the call's model changes, if any. */
void cfm_engine_call_record(lua_State *L, uint64_t seq, const char *what, const json_t *results,
                            const char *error);

/* --- calls completed later by the host (cloud and agent calls) -------- */

/* A suspended API call of a run, completed by the host from the loop. */
struct cfm_call;

/* From an API C function: suspends the calling fiber (the run shows
 * waiting_on = what) and returns the call; *seq is its number (the
 * idempotency key is "<run-id>.<seq>"). When cfm_call_replayed(call), the
 * journal answers it: do nothing more than `return cfm_engine_yield_call(L,
 * call);`. Otherwise do the call, then yield the same way, and complete it
 * later. Raises on a diverged replay; NULL when out of memory. */
struct cfm_call *cfm_engine_suspend(lua_State *L, const char *what, uint64_t *seq);
bool cfm_call_replayed(const struct cfm_call *call);
int cfm_engine_yield_call(lua_State *L, struct cfm_call *call);

/* Journals result (borrowed; the call's one result, or NULL for none) and
 * resumes the call's fiber with it; if the run ended meanwhile, only frees
 * the call. The caller holds the transaction of the call's model changes. */
void cfm_engine_complete(struct cfm_call *call, const json_t *result);

/* Journals message and resumes the call's fiber by raising it. */
void cfm_engine_fail(struct cfm_call *call, const char *message);

/* The run of a call, or NULL when the run has ended (cancelled, failed). */
struct cfm_run *cfm_call_run(const struct cfm_call *call);

#define CFM_RUN_LOG_LINES 100

#endif
