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

struct cfm_engine_host {
    void *arg;
    /* A run started, began waiting on something new, or ended. */
    void (*on_state)(void *arg, struct cfm_run *run);
    /* Adds the host's API (api.c) to the sandbox's global table, which is
     * at the top of L's stack. */
    void (*open_api)(void *arg, lua_State *L);
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

/* The active run with id, or NULL. */
struct cfm_run *cfm_engine_find(struct cfm_engine *e, const char *id);

/* Cancels an active run: it ends as cancelled (the host is told). */
enum cfm_err cfm_engine_cancel(struct cfm_engine *e, const char *id, const char *reason);

/* Active (running or waiting) runs. */
size_t cfm_engine_active(const struct cfm_engine *e);

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
const json_t *cfm_run_event(const struct cfm_run *r);
const json_t *cfm_run_result(const struct cfm_run *r);    /* NULL unless succeeded */
int64_t cfm_run_started_ms(const struct cfm_run *r);
int64_t cfm_run_ended_ms(const struct cfm_run *r);        /* 0 while active */
/* Returns a new JSON array of the run's last log lines {"time","level","text"}. */
json_t *cfm_run_log_json(const struct cfm_run *r);

/* --- for API functions (api.c), called from Lua C functions ---------- */

/* The run whose coroutine is executing L; NULL outside a run. */
struct cfm_run *cfm_engine_run_of(lua_State *L);

/* Appends a line to the run's log (and the manager's log). */
void cfm_run_log(struct cfm_run *r, const char *level, const char *text);

/* The engine's site-independent context pointer for API functions. */
void *cfm_engine_host_arg(lua_State *L);

/* --- calls completed later by the host (cloud and agent calls) -------- */

/* A suspended API call of a run, completed by the host from the loop. */
struct cfm_call;

/* From an API C function: suspends the calling fiber (the run shows
 * waiting_on) and returns the call the host completes later; the function
 * must then `return cfm_engine_yield_call(L, call);`. NULL (after raising
 * nothing) only when out of memory: raise an error then. */
struct cfm_call *cfm_engine_suspend(lua_State *L, const char *waiting_on);
int cfm_engine_yield_call(lua_State *L, struct cfm_call *call);

/* Resumes the call's fiber with the values push() leaves on co (it returns
 * how many); if the run ended meanwhile, only frees the call. */
void cfm_engine_complete(struct cfm_call *call, int (*push)(lua_State *co, void *arg),
                         void *arg);

/* Resumes the call's fiber by raising message as a Lua error in it. */
void cfm_engine_fail(struct cfm_call *call, const char *message);

/* The run of a call, or NULL when the run has ended (cancelled, failed). */
struct cfm_run *cfm_call_run(const struct cfm_call *call);

/* The next sequence number of an API call with effects in run r (1, 2, ...):
 * with the run id it makes the idempotency key "<run-id>.<seq>". */
uint64_t cfm_run_next_seq(struct cfm_run *r);

#define CFM_RUN_LOG_LINES 100

#endif
