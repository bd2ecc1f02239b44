/*
 * store_int.h - what the files of the store (store.c: objects, clock,
 * outbox, sites, events; store_runs.c: procedure runs and their journal)
 * share. Not for other modules: sqlite3 stays inside the store.
 */
#ifndef CFM_STORE_INT_H
#define CFM_STORE_INT_H

#include <sqlite3.h>
#include <stdbool.h>

#include "store.h"

/* The object columns, in the order row_to_obj() reads them. */
#define OBJ_COLS "system, kind, id, version, origin, updated, deleted, body"
#define RUN_COLS "id, system, script, hash, event, started_ms, deadline_ms, state, note"
#define JOURNAL_COLS "run, seq, what, at, ord, deadline_ms, result, error"
#define OBJ_EACH(where) \
    "SELECT " OBJ_COLS " FROM objects WHERE " where "(?3 OR deleted = 0)" \
    " ORDER BY system, kind, id"

/* Every statement of the store. The four OBJ_EACH_* variants must stay in
 * this order: cfm_store_each picks one by adding 1 for a system and 2 for a
 * kind, so each variant can use the primary key or the (kind, system) index. */
#define STMTS(X)                                                                 \
    X(BEGIN, "BEGIN IMMEDIATE")                                                  \
    X(COMMIT, "COMMIT")                                                          \
    X(ROLLBACK, "ROLLBACK")                                                      \
    X(SAVEPOINT, "SAVEPOINT cfm_nested")                                         \
    X(RELEASE, "RELEASE cfm_nested")                                             \
    X(ROLLBACK_TO, "ROLLBACK TO cfm_nested")                                     \
    X(OBJ_GET, "SELECT " OBJ_COLS " FROM objects"                                \
               " WHERE system = ?1 AND kind = ?2 AND id = ?3")                   \
    X(OBJ_PUT, "INSERT OR REPLACE INTO objects(" OBJ_COLS ")"                    \
               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")                       \
    X(OBJ_EACH_ALL, OBJ_EACH(""))                                                \
    X(OBJ_EACH_SYS, OBJ_EACH("system = ?1 AND "))                                \
    X(OBJ_EACH_KIND, OBJ_EACH("kind = ?2 AND "))                                 \
    X(OBJ_EACH_SYS_KIND, OBJ_EACH("system = ?1 AND kind = ?2 AND "))             \
    X(OBJ_KIND_AFTER, "SELECT " OBJ_COLS " FROM objects WHERE kind = ?1"        \
                      " AND deleted = 0 AND (system, id) > (?2, ?3)"              \
                      " ORDER BY system, id LIMIT ?4")                            \
    X(OBJ_VERSIONS, "SELECT kind, id, version, origin, deleted FROM objects"      \
                    " WHERE system = ?1 ORDER BY kind, id")                      \
    X(CLOCK_GET, "SELECT value FROM meta WHERE key = 'clock'")                   \
    X(CLOCK_SET, "INSERT OR REPLACE INTO meta(key, value) VALUES ('clock', ?1)") \
    X(OUT_ADD, "INSERT INTO outbox(topic, payload, qos, retain, expiry)"         \
               " VALUES (?1, ?2, ?3, ?4, ?5)")                                   \
    X(OUT_REMOVE, "DELETE FROM outbox WHERE seq = ?1")                           \
    X(OUT_EACH, "SELECT seq, topic, payload, qos, retain, expiry FROM outbox"    \
                " ORDER BY seq")                                                 \
    X(OUT_COUNT, "SELECT count(*) FROM outbox")                                  \
    X(SITE_PUT, "INSERT OR REPLACE INTO sites(site, state, last_seen, status)"   \
                " VALUES (?1, ?2, ?3, ?4)")                                      \
    X(SITE_EACH, "SELECT site, state, last_seen, status FROM sites"              \
                 " ORDER BY site")                                               \
    X(EVENT_MARK, "INSERT OR IGNORE INTO seen_events(id, system, type, received)" \
                  " VALUES (?1, ?2, ?3, ?4)")                                    \
    X(EVENT_TRIM, "DELETE FROM seen_events WHERE rowid IN (SELECT rowid FROM"    \
                  " seen_events ORDER BY rowid LIMIT ?2) AND received < ?1")     \
    X(RUN_PUT, "INSERT OR REPLACE INTO runs(" RUN_COLS ")"                       \
               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")                   \
    X(RUN_STATE, "UPDATE runs SET state = ?2, note = ?3 WHERE id = ?1")          \
    X(RUN_DELETE, "DELETE FROM runs WHERE id = ?1")                              \
    X(RUN_EACH, "SELECT " RUN_COLS " FROM runs ORDER BY started_ms, id")         \
    X(RUN_GET, "SELECT " RUN_COLS " FROM runs WHERE id = ?1")                    \
    X(JOURNAL_PUT, "INSERT OR REPLACE INTO journal(" JOURNAL_COLS ")"            \
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")                   \
    X(JOURNAL_EACH, "SELECT " JOURNAL_COLS " FROM journal WHERE run = ?1"        \
                    " ORDER BY seq")                                             \
    X(JOURNAL_DELETE, "DELETE FROM journal WHERE run = ?1")

enum stmt_id {
#define X(name, sql) STMT_##name,
    STMTS(X)
#undef X
    STMT__COUNT
};

struct cfm_store {
    sqlite3 *db;                        /* owned */
    sqlite3_stmt *stmt[STMT__COUNT];    /* owned; all prepared at open */
    int depth;                          /* cfm_store_begin() nesting */
    bool doomed;                        /* a savepoint could not be made */
    uint64_t writes[CFM_KIND__COUNT];   /* see cfm_store_kind_writes() */
};

/* The SQL of each statement, by stmt_id. */
extern const char *const cfm_store__sql[STMT__COUNT];

/* True when s is non-NULL and at most max bytes long. */
bool cfm_store__bounded(const char *s, size_t max);

/* Makes s ready for its next use (reset and clear bindings). */
void cfm_store__release(sqlite3_stmt *s);

/* Logs the failed statement with sqlite's message, releases it, returns
 * CFM_ESTORE. */
enum cfm_err cfm_store__fail(struct cfm_store *st, enum stmt_id which);

/* Binds parameters 1, 2, ... of statement `which` from types: 't' a const
 * char * (NULL binds SQL NULL), 'i' an int64_t, 'b' a const void * then a
 * size_t. Values are bound SQLITE_STATIC. query() returns the statement for
 * stepping through its rows (the caller releases it), or NULL (logged);
 * run() steps a statement that yields no row. */
sqlite3_stmt *cfm_store__query(struct cfm_store *st, enum stmt_id which, const char *types, ...);
enum cfm_err cfm_store__run(struct cfm_store *st, enum stmt_id which, const char *types, ...);

/* The name of the store's VFS (store_vfs.c: a transaction's WAL frames in
 * one write), registered on first use; NULL when it could not be (sqlite's
 * default VFS is used then). */
const char *cfm_store__vfs(void);

#endif
