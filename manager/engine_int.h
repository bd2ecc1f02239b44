/*
 * engine_int.h - what engine.c (runs, fibers, waits) and sandbox.c (the Lua
 * state, allocator and base library) share. Not for other modules.
 */
#ifndef CFM_ENGINE_INT_H
#define CFM_ENGINE_INT_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine.h"

/* Memory accounting of one run (or of the engine itself). Freed when the
 * run has ended and the last of its allocations is gone. */
struct cfm_acct {
    size_t used;
    size_t limit;   /* 0: unlimited */
    bool dead;      /* the run ended */
};

enum cfm_wait {
    CFM_WAIT_NONE,    /* running or ready */
    CFM_WAIT_SLEEP,
    CFM_WAIT_EVENT,
    CFM_WAIT_TASKS,
    CFM_WAIT_CALL,    /* a host call (cloud, agent) in flight */
};

/* A timer of the engine (engine_timer.c), inside the run or fiber it times. */
struct cfm_ewait;

struct cfm_tnode {
    uint64_t due;                /* the loop's time (uv_now) when it fires */
    uint64_t seq;                /* the order it was started in */
    size_t slot;                 /* 1 + its index in the engine's heap; 0: not armed */
    void (*cb)(struct cfm_tnode *t);
};

/* A coroutine of a run: the main one (id 0) or an async task. */
struct cfm_fiber {
    struct cfm_run *run;
    lua_State *co;
    int ref;                     /* registry reference keeping co alive */
    int id;
    int results_ref;             /* table {n=, ...} of results, or the error text */
    enum cfm_wait wait;
    bool done;
    bool failed;
    bool budget_blown;
    bool queued;                 /* on the ready queue */
    bool linked;                 /* WAIT_EVENT: chained in engine's waiters */
    unsigned wbucket;            /* its chain in engine's waiters */
    struct cfm_tnode timer;      /* sleep or wait timeout */
    /* WAIT_EVENT */
    struct cfm_ewait *ewait;     /* what it waits for; NULL while the journal answers */
    struct cfm_fiber *next_waiter;
    /* WAIT_TASKS */
    int *wait_ids;
    int nwait;
    /* the call it is suspended in (host call, sleep, wait_cloud_event) */
    int call_nres;
    struct cfm_call *call;
    uint64_t call_seq;
    char *call_what;             /* for the journal */
    struct cfm_jentry *replay;   /* the journal answers the call: delivered by pump */
    char *call_error;
    /* ready queue */
    struct cfm_fiber *next_ready;
    int ready_nargs;
    struct cfm_fiber *next;      /* the run's list */
};

struct cfm_logline {
    int64_t ms;
    char level[8];
    char *text;
};

/* One journal entry of a run being replayed (engine.h: cfm_journal_entry). */
struct cfm_jentry {
    uint64_t seq;
    char *what;
    int64_t at;
    uint64_t ord;
    int64_t deadline_ms;
    json_t *result;              /* array, or NULL */
    char *error;
};

/* What the journal says of a restored run (engine_replay.c). */
struct cfm_replay {
    struct cfm_jentry *e;        /* by seq */
    size_t n;
    struct cfm_jentry **q;       /* results handed over later, by (at, ord) */
    size_t nq, qnext;
    uint64_t last_seq;
    bool force;                  /* the operator accepted a changed procedure */
    bool caught_up;
};

/* A procedure as runs of it began: its file name and the SHA-256 of its
 * text, shared by those runs (engine.c). */
struct cfm_proc {
    struct cfm_proc *next;
    unsigned refs;
    char hash[65];
    char name[];
};

struct cfm_run {
    struct cfm_engine *e;
    /* Strings fixed at start, in text[] (allocated with the run, exact size). */
    const char *id;
    const char *system;
    const char *event;           /* the triggering event, compact JSON */
    const char *event_id;        /* its "id", or NULL */
    struct cfm_proc *proc;       /* its script and hash */
    enum cfm_run_state state;
    int env_ref;                 /* the run's global table */
    int modules_ref;             /* modules loaded by require; LUA_NOREF until the first */
    int next_task_id;
    char *waiting_on;            /* NULL unless it waits on something */
    char *error;
    char *traceback;
    json_t *result;
    struct cfm_acct *acct;
    struct cfm_fiber *fibers;
    struct cfm_tnode deadline;
    int64_t started_ms, ended_ms;
    int64_t deadline_ms;
    struct cfm_logline *log;     /* CFM_RUN_LOG_LINES, allocated at the first line */
    unsigned log_next, log_count;
    uint64_t rng[2];             /* math.random: deterministic per run */
    json_t *consumed;            /* ids of events returned to it; NULL until the first */
    uint64_t seq;                /* journaled API calls so far */
    uint64_t resumes;            /* resumes of its fibers so far */
    uint64_t ord;                /* results handed over later, so far */
    struct cfm_replay *replay;   /* restored from the journal; NULL for a new run */
    char *diverged;              /* why the replay cannot go on: the run fails */
    bool resumable;              /* failed because its procedure changed */
    bool host_mark;              /* the host's own flag (cfm_run_set_marked) */
    uint64_t record_sum;         /* the host's digest of the record it wrote last */
    struct cfm_run *next, *prev; /* engine's list of active runs, then of ended ones */
    struct cfm_run *next_by_id;  /* chain of its bucket in engine's index */
    char text[];                 /* id, system, event, event id */
};

#define CFM_RECENT_FIELDS 8 /* payload fields a recent event is indexed by */

struct cfm_recent {
    char key[2 * CFM_MAX_ID + 2];
    json_t *event;
    int64_t ms;
    /* What a wait compares before looking at the event: the hash of key
     * and those of (key, field, value) of its first indexable payload
     * fields (as the waiter index); nfields > CFM_RECENT_FIELDS: more
     * fields than kept, any wait looks at the event itself. */
    unsigned key_hash;
    unsigned nfields;
    unsigned field_hash[CFM_RECENT_FIELDS];
};

#define CFM_WAITING_ON_MAX 159
#define CFM_RECENT_EVENTS 256
#define CFM_WAIT_BUCKETS 4096
#define CFM_RUN_BUCKETS 4096

struct cfm_engine {
    uv_loop_t *loop;
    lua_State *L;
    struct cfm_engine_opts opts;
    char procedures_dir[4096];
    struct cfm_engine_host host;
    struct cfm_acct global;      /* allocations outside any run */
    struct cfm_acct *cur;        /* charged by the allocator now */
    size_t total;                /* every byte of the Lua state */
    size_t total_limit;
    int env_mt_ref;              /* metatable of run globals: __index = base */
    int base_ref;                /* the shared, read-only base library */
    struct cfm_run *runs;
    struct cfm_run *by_id[CFM_RUN_BUCKETS]; /* active runs by id */
    size_t active;
    struct cfm_fiber *ready_head, *ready_tail;
    uv_idle_t idle;
    bool idle_on;
    struct cfm_run *ended;       /* ended runs, freed when the loop gets back to on_idle */
    struct cfm_proc *procs;      /* procedures of the runs not freed yet */
    uv_timer_t timer;            /* the earliest of heap (engine_timer.c) */
    struct cfm_tnode **heap;     /* armed timers, a binary heap by (due, seq) */
    size_t nheap, capheap;
    uint64_t tseq, armed_due;
    bool armed, in_timers;
    int open_handles;            /* closed with the engine: idle, timer */
    struct cfm_fiber *waiters[CFM_WAIT_BUCKETS];
    struct cfm_recent recent[CFM_RECENT_EVENTS];
    unsigned recent_next;
    bool closing;
};

/* A call in flight (engine.h). */
struct cfm_call {
    struct cfm_fiber *f; /* NULL once the run has ended */
    bool replayed;       /* answered from the journal: the engine owns it */
};

/* engine.c: shared with engine_wait.c */
unsigned cfm_engine__hash(const char *key);
/* Sets what r waits on (printf-like; at most CFM_WAITING_ON_MAX bytes); NULL fmt clears it. */
void cfm_engine__set_waiting_on(struct cfm_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The event with id was returned to r (or must never be). */
void cfm_engine__consume(struct cfm_run *r, const char *id);
bool cfm_engine__consumed(const struct cfm_run *r, const char *id);
void cfm_engine__make_ready(struct cfm_fiber *f, int nargs);
void cfm_engine__drop_timer(struct cfm_fiber *f);
void cfm_engine__unlink_waiter(struct cfm_fiber *f);
/* engine_wait.c */
void cfm_engine__free_ewait(struct cfm_ewait *w);
struct cfm_fiber *cfm_engine__find_fiber(struct cfm_run *r, int id);
struct cfm_fiber *cfm_engine__new_fiber(struct cfm_run *r, lua_State *L, int nargs, int id);

/* engine_timer.c: t fires cb ms from the loop's time (restarted if armed);
 * false when out of memory (it does not fire then). */
bool cfm_engine__timer_start(struct cfm_engine *e, struct cfm_tnode *t, uint64_t ms,
                             void (*cb)(struct cfm_tnode *t));
void cfm_engine__timer_stop(struct cfm_engine *e, struct cfm_tnode *t);

/* engine_replay.c: the journal */
struct cfm_jentry *cfm_engine__journal_find(struct cfm_run *r, uint64_t seq);
struct cfm_jentry *cfm_engine__begin_call(struct cfm_fiber *f, const char *what);
void cfm_engine__journal_result(struct cfm_fiber *f, const json_t *result, const char *error);
void cfm_engine__journal_pending(struct cfm_fiber *f, int64_t deadline_ms);
void cfm_engine__pump(struct cfm_run *r);
int cfm_engine__push_results(lua_State *co, const json_t *arr);
void cfm_engine__replay_free(struct cfm_replay *rp);
int cfm_engine__diverge(lua_State *L, struct cfm_run *r, const char *fmt, ...);
bool cfm_engine__replaying(const struct cfm_run *r);
void cfm_engine__end_call(struct cfm_fiber *f);

/* sandbox.c */
lua_State *cfm_engine__new_state(struct cfm_engine *e);
void cfm_engine__open_base(struct cfm_engine *e);
/* hash (char[65]) gets the SHA-256 of the script's text. */
int cfm_engine__load_script(struct cfm_engine *e, lua_State *L, const char *script,
                            char *hash, struct cfm_why *why);
void cfm_engine__acct_release(struct cfm_acct *a);
struct cfm_fiber *cfm_engine__fiber_of(lua_State *L);

/* engine.c, for the base library in sandbox.c */
int cfm_engine__l_async(lua_State *L);
int cfm_engine__l_wait(lua_State *L);
int cfm_engine__l_sleep(lua_State *L);
int cfm_engine__l_wait_cloud_event(lua_State *L);
int cfm_engine__l_log(lua_State *L);

#endif
