/*
 * store.h - the manager's SQLite store: model objects, the Lamport clock,
 * the outbox of messages not yet acknowledged by the broker, the sites seen
 * and the event IDs already handled.
 *
 * The only module that talks to sqlite3. One connection, used from the loop
 * thread only; WAL, synchronous=NORMAL; every statement prepared once and
 * reused with bound parameters. Writes that must happen together are
 * wrapped by the caller in cfm_store_begin()/cfm_store_commit().
 */
#ifndef CFM_STORE_H
#define CFM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "obj.h"

struct cfm_store;

/* Opens (creating if needed) the database at path, sets WAL and
 * synchronous=NORMAL, and migrates the schema to the current version
 * (PRAGMA user_version). A database from a newer cfm is refused. On success
 * *out is a new store freed with cfm_store_close(). On failure why carries
 * sqlite's message. */
enum cfm_err cfm_store_open(const char *path, struct cfm_store **out, struct cfm_why *why);

/* Finalizes every statement and closes the database; NULL is allowed. */
void cfm_store_close(struct cfm_store *st);

/* The schema version this build writes. */
int cfm_store_schema_version(void);

/* Transactions: BEGIN IMMEDIATE / COMMIT / ROLLBACK. They nest: inner
 * levels are savepoints, so a caller can make one transaction of several
 * writes that each begin and commit their own, and a rollback at an inner
 * level undoes that level's writes alone (the outer level goes on and can
 * commit what it did). rollback is NULL-safe and harmless outside
 * a transaction. */
enum cfm_err cfm_store_begin(struct cfm_store *st);
enum cfm_err cfm_store_commit(struct cfm_store *st);
void cfm_store_rollback(struct cfm_store *st);

/* True inside a transaction (a commit now would not be the outermost). */
bool cfm_store_in_txn(const struct cfm_store *st);

/* --- model objects ---------------------------------------------------- */

/* Loads one object (tombstones included). *out is new; caller frees it.
 * CFM_ENOTFOUND when absent. */
enum cfm_err cfm_store_get(struct cfm_store *st, const char *system, enum cfm_kind kind,
                           const char *id, struct cfm_obj **out);

/* Inserts or replaces the object with the same (system, kind, id).
 * obj is borrowed. No version check: the caller decides who wins. */
enum cfm_err cfm_store_put(struct cfm_store *st, const struct cfm_obj *obj);

/* A count that changes whenever an object of kind may have changed (a put,
 * or a transaction that did not commit): what was read of that kind is
 * current while it stays the same. For caches of parsed objects. */
uint64_t cfm_store_kind_writes(const struct cfm_store *st, enum cfm_kind kind);

/* Which objects cfm_store_each visits. NULL/negative fields mean "any". */
struct cfm_store_filter {
    const char *system;     /* NULL: every system */
    int kind;               /* an enum cfm_kind, or -1 for every kind */
    bool include_deleted;   /* visit tombstones too */
};

/* Called for each object; obj is borrowed and valid only during the call.
 * Return false to stop early. */
typedef bool (*cfm_store_obj_fn)(void *arg, const struct cfm_obj *obj);

/* Visits objects matching f in (system, kind, id) order. A row whose body
 * does not parse is skipped with a logged warning, never passed on. */
enum cfm_err cfm_store_each(struct cfm_store *st, const struct cfm_store_filter *f,
                            cfm_store_obj_fn fn, void *arg);

/* Where a scan of one kind stands: the last (system, id) it visited;
 * zeroed, before the first. */
struct cfm_store_cursor {
    char system[CFM_MAX_ID + 1];
    char id[CFM_MAX_ID + 1];
};

/* Visits at most max live objects of kind (every system), those after cur
 * in (system, id) order, and moves cur past each row read (one that does
 * not parse too: it is skipped with a logged warning). *visited gets how
 * many rows were read; fewer than max when the scan reached the end. A
 * kind scanned a batch at a time, each batch a range of the (kind, system)
 * index. */
enum cfm_err cfm_store_each_after(struct cfm_store *st, enum cfm_kind kind,
                                  struct cfm_store_cursor *cur, size_t max, cfm_store_obj_fn fn,
                                  void *arg, size_t *visited);

/* The replication key of one object: what anti-entropy digests compare. */
struct cfm_store_version {
    enum cfm_kind kind;
    const char *id;          /* valid only during the callback */
    uint64_t version;
    const char *origin;      /* valid only during the callback */
    bool deleted;
};

typedef bool (*cfm_store_version_fn)(void *arg, const struct cfm_store_version *v);

/* Visits the (kind, id, version, origin, deleted) of every object of system,
 * tombstones included, in (kind name, id) order, without parsing bodies.
 * Return false from fn to stop. */
enum cfm_err cfm_store_versions(struct cfm_store *st, const char *system,
                                cfm_store_version_fn fn, void *arg);

/* --- Lamport clock ---------------------------------------------------- */

/* Reads the persisted clock (0 in a new store). */
enum cfm_err cfm_store_clock_get(struct cfm_store *st, uint64_t *out);

/* Persists the clock; call it inside the transaction of the write it orders. */
enum cfm_err cfm_store_clock_set(struct cfm_store *st, uint64_t value);

/* --- outbox: messages committed with the state they describe ---------- */

struct cfm_outmsg {
    int64_t seq;            /* assigned by the store, increasing */
    const char *topic;
    const void *payload;
    size_t len;
    int qos;
    bool retain;
    uint32_t expiry_s;      /* MQTT 5 message expiry interval; 0 = none */
};

/* Appends msg (borrowed; its seq is ignored) and writes the new seq to
 * *seq_out (may be NULL). */
enum cfm_err cfm_store_outbox_add(struct cfm_store *st, const struct cfm_outmsg *msg,
                                  int64_t *seq_out);

/* Removes the message with seq (acknowledged). Removing an absent seq is OK. */
enum cfm_err cfm_store_outbox_remove(struct cfm_store *st, int64_t seq);

/* Visits every queued message in seq order; msg is valid only during the
 * call; return false to stop. */
typedef bool (*cfm_store_outbox_fn)(void *arg, const struct cfm_outmsg *msg);
enum cfm_err cfm_store_outbox_each(struct cfm_store *st, cfm_store_outbox_fn fn, void *arg);

/* Number of queued messages. */
enum cfm_err cfm_store_outbox_count(struct cfm_store *st, int64_t *out);

/* --- sites seen on the bus ------------------------------------------- */

struct cfm_site_rec {
    const char *site;
    const char *state;      /* "online" | "offline" */
    const char *last_seen;  /* RFC 3339: last time it was seen online */
    const char *status;     /* the last status payload (JSON text) */
};

/* Inserts or replaces the record of rec->site (borrowed). */
enum cfm_err cfm_store_site_put(struct cfm_store *st, const struct cfm_site_rec *rec);

/* Loads one site; strings in *out are valid only during fn. */
typedef bool (*cfm_store_site_fn)(void *arg, const struct cfm_site_rec *rec);

/* Visits every site in name order. */
enum cfm_err cfm_store_site_each(struct cfm_store *st, cfm_store_site_fn fn, void *arg);

/* --- events already handled (effectively-once delivery) -------------- */

/* Records event id as handled. *already is set true (and nothing changes)
 * when the id was recorded before. */
enum cfm_err cfm_store_event_mark(struct cfm_store *st, const char *id, const char *system,
                                  const char *type, bool *already);

/* Forgets the handled events recorded before `before` (RFC 3339, as
 * cfm_time_format writes it) among the oldest `max` records, and sets
 * *deleted to how many went. Records are kept in the order they were made,
 * so a caller repeats while *deleted == max. The dedup window this leaves:
 * an event that comes again after its record is gone is handled again. */
enum cfm_err cfm_store_events_trim(struct cfm_store *st, const char *before, int max,
                                   int *deleted);

/* --- procedure runs not finished here, and their journal (store_runs.c) --
 *
 * A run's row is written when it starts and deleted (with its journal)
 * when it ends; what is left at start-up are the runs to replay. */

struct cfm_run_rec {
    const char *id;
    const char *system;
    const char *script;
    const char *hash;        /* SHA-256 (hex) of the script when the run began */
    const char *event;       /* the triggering event, JSON text */
    int64_t started_ms;
    int64_t deadline_ms;     /* the run fails at this time (ms since the epoch) */
    const char *state;       /* "active", or "changed": its procedure changed */
    const char *note;        /* why it is not active, or "" */
};

enum cfm_err cfm_store_run_put(struct cfm_store *st, const struct cfm_run_rec *rec);
enum cfm_err cfm_store_run_set_state(struct cfm_store *st, const char *id, const char *state,
                                     const char *note);
/* Deletes the run's row and its journal. Deleting an absent run is OK. */
enum cfm_err cfm_store_run_delete(struct cfm_store *st, const char *id);

/* Visits every run row (strings valid only during fn) in start order;
 * return false to stop. */
typedef bool (*cfm_store_run_fn)(void *arg, const struct cfm_run_rec *rec);
enum cfm_err cfm_store_run_each(struct cfm_store *st, cfm_store_run_fn fn, void *arg);

/* Calls fn with the row of run id; CFM_ENOTFOUND when there is none. */
enum cfm_err cfm_store_run_get(struct cfm_store *st, const char *id, cfm_store_run_fn fn,
                               void *arg);

/* One journal row: API call seq of a run, and what it returned. */
struct cfm_journal_row {
    const char *run;
    int64_t seq;
    const char *what;        /* the call, e.g. "run_vm small" */
    int64_t at;              /* resumes of the run before its result was handed over; -1: at once */
    int64_t ord;             /* the order in which results were handed over; 0: at once */
    int64_t deadline_ms;     /* a wait still pending: when it times out; else 0 */
    const char *result;      /* JSON array of the results; NULL while pending or on error */
    const char *error;       /* the error raised, or NULL */
};

/* Inserts or replaces the row (run, seq). */
enum cfm_err cfm_store_journal_put(struct cfm_store *st, const struct cfm_journal_row *row);

/* Visits the journal of run in seq order (strings valid only during fn). */
typedef bool (*cfm_store_journal_fn)(void *arg, const struct cfm_journal_row *row);
enum cfm_err cfm_store_journal_each(struct cfm_store *st, const char *run,
                                    cfm_store_journal_fn fn, void *arg);

#endif
