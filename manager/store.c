/*
 * store.c - the manager's SQLite store: model objects, the Lamport clock,
 * the outbox, the sites seen and the event IDs already handled.
 *
 * The only file that includes sqlite3.h. One connection per store, used from
 * the loop thread only (opened NOMUTEX), in WAL mode with synchronous=NORMAL
 * (see docs/store.md for why). The schema is versioned with PRAGMA
 * user_version and grown by the append-only `migrations` array below.
 *
 * The one thing a reader must know: every statement is prepared once, at
 * open, into st->stmt[], and every use ends with cfm_store__release() (reset and clear
 * bindings), so no statement stays busy between calls and values only ever
 * reach SQL as bound parameters. Text is bound SQLITE_STATIC: the caller's
 * strings outlive the step because cfm_store__release() runs before we return.
 * sqlite codes never leave this file: they become CFM_ESTORE with the
 * sqlite message in the log.
 */
#include "store_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "id.h"
#include "log.h"
#include "util.h"

#define BUSY_TIMEOUT_MS 5000

/* Step i takes user_version i to i + 1. Append only: a released step never
 * changes, or stores created by it would differ from new ones. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE objects("
    "  system TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,"
    "  version INTEGER NOT NULL, origin TEXT NOT NULL, updated TEXT NOT NULL,"
    "  deleted INTEGER NOT NULL, body TEXT NOT NULL,"
    "  PRIMARY KEY(system, kind, id)) WITHOUT ROWID;"
    "CREATE INDEX objects_kind_system ON objects(kind, system);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE outbox("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
    "  payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
    "  expiry INTEGER NOT NULL);"
    "CREATE TABLE sites("
    "  site TEXT PRIMARY KEY, state TEXT NOT NULL, last_seen TEXT NOT NULL,"
    "  status TEXT NOT NULL);"
    "CREATE TABLE seen_events("
    "  id TEXT PRIMARY KEY, system TEXT NOT NULL, type TEXT NOT NULL,"
    "  received TEXT NOT NULL);",
    /* 1 -> 2: procedure runs not yet finished here, and their journal */
    "CREATE TABLE runs("
    "  id TEXT PRIMARY KEY, system TEXT NOT NULL, script TEXT NOT NULL,"
    "  hash TEXT NOT NULL, event TEXT NOT NULL, started_ms INTEGER NOT NULL,"
    "  deadline_ms INTEGER NOT NULL, state TEXT NOT NULL, note TEXT NOT NULL)"
    "  WITHOUT ROWID;"
    "CREATE TABLE journal("
    "  run TEXT NOT NULL, seq INTEGER NOT NULL, what TEXT NOT NULL,"
    "  at INTEGER NOT NULL, ord INTEGER NOT NULL, deadline_ms INTEGER NOT NULL,"
    "  result TEXT, error TEXT,"
    "  PRIMARY KEY(run, seq)) WITHOUT ROWID;",
    /* 2 -> 3: the outbox's seq without AUTOINCREMENT, which updated
     * sqlite_sequence (one more B-tree write and WAL frame) on every
     * insert: a new seq is still above every row present (docs/store.md). */
    "CREATE TABLE outbox_new("
    "  seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
    "  payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
    "  expiry INTEGER NOT NULL);"
    "INSERT INTO outbox_new SELECT seq, topic, payload, qos, retain, expiry FROM outbox;"
    "DROP TABLE outbox;"
    "ALTER TABLE outbox_new RENAME TO outbox;"
    "DELETE FROM sqlite_sequence WHERE name = 'outbox';",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

const char *const cfm_store__sql[STMT__COUNT] = {
#define X(name, sql) sql,
    STMTS(X)
#undef X
};

/* --- helpers ------------------------------------------------------------ */

/* True when s is non-NULL and at most max bytes long. */
bool cfm_store__bounded(const char *s, size_t max)
{
    return s && strnlen(s, max + 1) <= max;
}

/* Makes s ready for its next use. The reset's return code repeats the error
 * of the last step, which the caller has already handled, so it is dropped. */
void cfm_store__release(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Logs the failed statement with sqlite's message (read before the reset,
 * which may overwrite it), releases the statement, returns CFM_ESTORE. */
enum cfm_err cfm_store__fail(struct cfm_store *st, enum stmt_id which)
{
    cfm_error("store", "%s: %s", cfm_store__sql[which], sqlite3_errmsg(st->db));
    cfm_store__release(st->stmt[which]);
    return CFM_ESTORE;
}

/* Binds parameters 1, 2, ... of s from types: 't' a const char * (NULL binds
 * SQL NULL), 'i' an int64_t, 'b' a const void * then a size_t (an empty blob,
 * never SQL NULL, when the size is 0). Values are bound SQLITE_STATIC: they
 * must live until cfm_store__release(s). Returns an sqlite code. */
static int vbind(sqlite3_stmt *s, const char *types, va_list ap)
{
    int rc = SQLITE_OK;

    for (int i = 0; rc == SQLITE_OK && types[i]; i++) {
        if (types[i] == 't') {
            rc = sqlite3_bind_text(s, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
        } else if (types[i] == 'i') {
            rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
        } else {
            const void *p = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);

            rc = sqlite3_bind_blob64(s, i + 1, n ? p : "", n, SQLITE_STATIC);
        }
    }
    return rc;
}

/* Binds the cached statement `which` for stepping through its rows; the
 * caller releases it. NULL (logged) when binding fails, or when the
 * statement is still running: a callback of an iteration calling the same
 * iteration again, whose reset would pull the rows from under the outer loop. */
sqlite3_stmt *cfm_store__query(struct cfm_store *st, enum stmt_id which, const char *types, ...)
{
    sqlite3_stmt *s = st->stmt[which];
    va_list ap;
    int rc;

    if (sqlite3_stmt_busy(s)) {
        cfm_error("store", "%s: called again from its own callback", cfm_store__sql[which]);
        return NULL;
    }
    va_start(ap, types);
    rc = vbind(s, types, ap);
    va_end(ap);
    if (rc != SQLITE_OK) {
        cfm_store__fail(st, which);
        return NULL;
    }
    return s;
}

/* Binds and runs the cached statement `which`, which yields no row. */
enum cfm_err cfm_store__run(struct cfm_store *st, enum stmt_id which, const char *types, ...)
{
    sqlite3_stmt *s = st->stmt[which];
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = vbind(s, types, ap);
    va_end(ap);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc != SQLITE_DONE)
        return cfm_store__fail(st, which);
    cfm_store__release(s);
    return CFM_OK;
}

/* Logs why a stored object row is skipped; returns CFM_EINVAL, the code
 * row_to_obj() uses for "damaged, skip it". */
static enum cfm_err damaged(const char *system, const char *kind, const char *id,
                            const char *reason)
{
    cfm_warn("store", "skipping damaged object %s/%s/%s: %s", system, kind, id, reason);
    return CFM_EINVAL;
}

/* Builds an object from the current row of an OBJ_COLS statement. On CFM_OK
 * *out is new (the caller frees it). CFM_EINVAL means the row is damaged and
 * was logged; the caller skips it. */
static enum cfm_err row_to_obj(sqlite3_stmt *s, struct cfm_obj **out)
{
    const char *system = (const char *)sqlite3_column_text(s, 0);
    const char *kname = (const char *)sqlite3_column_text(s, 1);
    const char *id = (const char *)sqlite3_column_text(s, 2);
    int vtype = sqlite3_column_type(s, 3);      /* before any conversion */
    sqlite3_int64 version = sqlite3_column_int64(s, 3);
    const char *origin = (const char *)sqlite3_column_text(s, 4);
    const char *updated = (const char *)sqlite3_column_text(s, 5);
    const char *text = (const char *)sqlite3_column_text(s, 7);
    struct cfm_why why = {""};
    enum cfm_kind kind;
    struct cfm_obj *obj;
    json_t *body;

    *out = NULL;
    /* The columns are NOT NULL, so a NULL here is sqlite out of memory. */
    if (!system || !kname || !id || !origin || !updated || !text)
        return CFM_ENOMEM;
    if (cfm_kind_parse(kname, &kind, &why) != CFM_OK)
        return damaged(system, kname, id, why.text);
    if (!cfm_id_valid(system) || !cfm_id_valid(id))
        return damaged(system, kname, id, "invalid system or object id");
    if (vtype != SQLITE_INTEGER || version < 0 || (uint64_t)version >= CFM_MAX_VERSION)
        return damaged(system, kname, id, "version is not an integer in range");
    if (!cfm_store__bounded(origin, CFM_MAX_ID) || !cfm_store__bounded(updated, CFM_TIME_LEN - 1))
        return damaged(system, kname, id, "origin or updated too long");
    if ((size_t)sqlite3_column_bytes(s, 7) > CFM_MAX_BODY)
        return damaged(system, kname, id, "body larger than CFM_MAX_BODY");
    body = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        return damaged(system, kname, id, "body is not a JSON object");
    }
    obj = cfm_obj_new(kind, system, id, body);      /* takes body */
    if (!obj)
        return CFM_ENOMEM;                          /* the IDs were checked above */
    obj->version = (uint64_t)version;
    memcpy(obj->origin, origin, strlen(origin) + 1);
    memcpy(obj->updated, updated, strlen(updated) + 1);
    obj->deleted = sqlite3_column_int64(s, 6) != 0;
    *out = obj;
    return CFM_OK;
}

/* --- open, migrate, close ----------------------------------------------- */

/* Reads PRAGMA user_version into *out; returns an sqlite code. */
static int read_version(sqlite3 *db, int *out)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);

    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        *out = sqlite3_column_int(s, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Brings the schema to SCHEMA_VERSION, one step per transaction. The version
 * is read again inside each transaction, so two processes opening one new
 * database cannot both run the same step. */
static enum cfm_err migrate(sqlite3 *db, const char *path, struct cfm_why *why)
{
    enum cfm_err err = CFM_OK;
    char bump[48];
    int version = 0;

    for (;;) {
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
            read_version(db, &version) != SQLITE_OK) {
            err = cfm_why_set(why, CFM_ESTORE, "reading the schema version of %s: %s", path,
                              sqlite3_errmsg(db));
            goto out;
        }
        if (version > SCHEMA_VERSION) {
            err = cfm_why_set(why, CFM_ESTORE,
                              "database %s has schema version %d; this cfm understands up to %d",
                              path, version, SCHEMA_VERSION);
            goto out;
        }
        if (version == SCHEMA_VERSION)
            goto out;
        /* PRAGMA takes no bound parameters; the number is ours, not input. */
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", version + 1);
        if (sqlite3_exec(db, migrations[version], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, bump, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            err = cfm_why_set(why, CFM_ESTORE, "migrating %s to schema version %d: %s", path,
                              version + 1, sqlite3_errmsg(db));
            goto out;
        }
        cfm_info("store", "%s: schema version %d", path, version + 1);
    }
out:
    /* Ends the read-only transaction of the last round, or undoes a failed
     * step; a failure here leaves nothing to undo, so it is not reported. */
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

/* Copies the first column of the first row into arg (a char[16]). */
static int on_pragma_row(void *arg, int ncols, char **vals, char **names)
{
    (void)names;
    snprintf(arg, 16, "%s", ncols > 0 && vals[0] ? vals[0] : "");
    return 0;
}

/* The WAL is copied back into the file (a checkpoint, with its fdatasync:
 * 0.5 to 7 ms on a shared disk) inside the commit that takes it past this
 * many pages. sqlite's default, 1,000, put a checkpoint into one event hop
 * in ~150 at each manager: most of the hops' 99th percentile. At 4,000
 * (a WAL of up to 16 MiB) one hop in ~600 pays it. A checkpoint in a
 * thread of its own (a second connection) was tried: under a steady stream
 * of commits the WAL never found the moment to start over and grew without
 * bound (docs/performance.md). */
#define CHECKPOINT_PAGES 4000

/* Sets the connection's pragmas (see docs/store.md for why these). */
static enum cfm_err configure(sqlite3 *db, const char *path, struct cfm_why *why)
{
    char mode[16] = "";

    if (sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode=WAL", on_pragma_row, mode, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", NULL, NULL,
                     NULL) != SQLITE_OK ||
        sqlite3_wal_autocheckpoint(db, CHECKPOINT_PAGES) != SQLITE_OK)
        return cfm_why_set(why, CFM_ESTORE, "configuring %s: %s", path, sqlite3_errmsg(db));
    /* An in-memory database answers "memory": still usable, but say so. */
    if (strcmp(mode, "wal") != 0)
        cfm_warn("store", "%s: journal mode is %s, not wal", path, mode);
    return CFM_OK;
}

enum cfm_err cfm_store_open(const char *path, struct cfm_store **out, struct cfm_why *why)
{
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    enum cfm_err err;
    struct cfm_store *st = NULL;
    int rc;

    if (!out)
        return cfm_why_set(why, CFM_EINVAL, "no place for the store");
    *out = NULL;
    if (!path || !*path)
        return cfm_why_set(why, CFM_EINVAL, "store path is empty");
    st = calloc(1, sizeof *st);
    if (!st)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory opening %s", path);
    rc = sqlite3_open_v2(path, &st->db, flags, cfm_store__vfs());
    if (rc != SQLITE_OK) {
        err = cfm_why_set(why, CFM_ESTORE, "cannot open %s: %s", path,
                          st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        goto out;
    }
    err = configure(st->db, path, why);
    if (err == CFM_OK)
        err = migrate(st->db, path, why);
    for (int i = 0; err == CFM_OK && i < STMT__COUNT; i++) {
        if (sqlite3_prepare_v3(st->db, cfm_store__sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                               NULL) != SQLITE_OK)
            err = cfm_why_set(why, CFM_ESTORE, "preparing \"%s\" on %s: %s", cfm_store__sql[i], path,
                              sqlite3_errmsg(st->db));
    }
    if (err != CFM_OK)
        goto out;
    *out = st;
    st = NULL;
out:
    cfm_store_close(st);
    return err;
}

void cfm_store_close(struct cfm_store *st)
{
    if (!st)
        return;
    for (int i = 0; i < STMT__COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    if (sqlite3_close(st->db) != SQLITE_OK) {
        /* Only a statement we did not finalize can cause this; let sqlite
         * close the connection once it is gone rather than leak it. */
        cfm_error("store", "closing the database: %s", sqlite3_errmsg(st->db));
        sqlite3_close_v2(st->db);
    }
    free(st);
}

int cfm_store_schema_version(void)
{
    return SCHEMA_VERSION;
}

/* --- transactions ------------------------------------------------------- */

/* What was read inside a transaction that rolls back may be gone. */
static void forget_reads(struct cfm_store *st)
{
    for (int k = 0; k < CFM_KIND__COUNT; k++)
        st->writes[k]++;
}

uint64_t cfm_store_kind_writes(const struct cfm_store *st, enum cfm_kind kind)
{
    return st && (unsigned)kind < CFM_KIND__COUNT ? st->writes[kind] : 0;
}

/* The outermost level is BEGIN IMMEDIATE ... COMMIT; each inner level a
 * savepoint (all named alike: sqlite releases and rolls back to the most
 * recent of a name), so an inner rollback undoes that level alone and the
 * outer one goes on. A savepoint that cannot be made dooms the transaction:
 * every later level fails and the outermost commit rolls back. */
enum cfm_err cfm_store_begin(struct cfm_store *st)
{
    enum cfm_err err;

    if (!st)
        return CFM_EINVAL;
    if (st->depth > 0) {
        st->depth++;
        if (!st->doomed && cfm_store__run(st, STMT_SAVEPOINT, "") != CFM_OK)
            st->doomed = true;
        return st->doomed ? CFM_ESTORE : CFM_OK;
    }
    err = cfm_store__run(st, STMT_BEGIN, "");
    if (err == CFM_OK) {
        st->depth = 1;
        st->doomed = false;
    }
    return err;
}

enum cfm_err cfm_store_commit(struct cfm_store *st)
{
    enum cfm_err err;

    if (!st || st->depth == 0)
        return CFM_EINVAL;
    if (--st->depth > 0) {
        if (!st->doomed && cfm_store__run(st, STMT_RELEASE, "") != CFM_OK)
            st->doomed = true;
        return st->doomed ? CFM_ESTORE : CFM_OK;
    }
    if (st->doomed) {
        st->doomed = false;
        forget_reads(st);
        cfm_store__run(st, STMT_ROLLBACK, "");
        return CFM_ESTORE;
    }
    err = cfm_store__run(st, STMT_COMMIT, "");
    if (err != CFM_OK) {
        forget_reads(st);
        if (!sqlite3_get_autocommit(st->db))
            cfm_store__run(st, STMT_ROLLBACK, "");
    }
    return err;
}

void cfm_store_rollback(struct cfm_store *st)
{
    if (!st)
        return;
    forget_reads(st);
    if (st->depth > 1) {
        st->depth--;
        /* ROLLBACK TO leaves the savepoint open: release it too. */
        if (!st->doomed && (cfm_store__run(st, STMT_ROLLBACK_TO, "") != CFM_OK ||
                            cfm_store__run(st, STMT_RELEASE, "") != CFM_OK))
            st->doomed = true;
        return;
    }
    st->depth = 0;
    st->doomed = false;
    /* A failure is logged by cfm_store__run(); a void function can do no
     * more, and sqlite rolls an open transaction back when the connection
     * closes. */
    if (!sqlite3_get_autocommit(st->db))
        cfm_store__run(st, STMT_ROLLBACK, "");
}

bool cfm_store_in_txn(const struct cfm_store *st)
{
    return st && st->depth > 0;
}

/* --- model objects ------------------------------------------------------ */

enum cfm_err cfm_store_get(struct cfm_store *st, const char *system, enum cfm_kind kind,
                           const char *id, struct cfm_obj **out)
{
    enum cfm_err err;
    sqlite3_stmt *s;
    int rc;

    if (!out)
        return CFM_EINVAL;
    *out = NULL;
    if (!st || !cfm_id_valid(system) || !cfm_id_valid(id) || (unsigned)kind >= CFM_KIND__COUNT)
        return CFM_EINVAL;
    s = cfm_store__query(st, STMT_OBJ_GET, "ttt", system, cfm_kind_name(kind), id);
    if (!s)
        return CFM_ESTORE;
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, STMT_OBJ_GET);
    /* A damaged row reads as absent, as in cfm_store_each, so a newer
     * replica copy can replace it instead of wedging every later write. */
    err = rc == SQLITE_DONE ? CFM_ENOTFOUND : row_to_obj(s, out);
    cfm_store__release(s);
    return err == CFM_EINVAL ? CFM_ENOTFOUND : err;
}

enum cfm_err cfm_store_put(struct cfm_store *st, const struct cfm_obj *obj)
{
    enum cfm_err err;
    char *body;

    if (!st || !obj || (unsigned)obj->kind >= CFM_KIND__COUNT || !json_is_object(obj->body) ||
        !cfm_id_valid(obj->system) || !cfm_id_valid(obj->id) ||
        !cfm_store__bounded(obj->origin, CFM_MAX_ID) || !cfm_store__bounded(obj->updated, CFM_TIME_LEN - 1) ||
        obj->version >= CFM_MAX_VERSION)
        return CFM_EINVAL;
    body = json_dumps(obj->body, JSON_COMPACT | JSON_SORT_KEYS);
    if (!body)
        return CFM_ENOMEM;
    st->writes[obj->kind]++;
    if (strlen(body) > CFM_MAX_BODY)
        err = CFM_ETOOBIG;
    else
        err = cfm_store__run(st, STMT_OBJ_PUT, "tttittit", obj->system, cfm_kind_name(obj->kind), obj->id,
                  (int64_t)obj->version, obj->origin, obj->updated, (int64_t)obj->deleted, body);
    free(body);
    return err;
}

/* Steps s (statement which, objects in OBJ_COLS order), calling fn with
 * each object until it returns false; a row that does not parse is skipped
 * (row_to_obj logs it). With cur, cur moves past every row read and
 * *visited counts them. Releases s. */
static enum cfm_err visit_rows(struct cfm_store *st, sqlite3_stmt *s, enum stmt_id which,
                               cfm_store_obj_fn fn, void *arg, struct cfm_store_cursor *cur,
                               size_t *visited)
{
    enum cfm_err err = CFM_OK;
    int rc;

    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct cfm_obj *obj;
        bool more;

        if (cur) {
            const unsigned char *sys = sqlite3_column_text(s, 0), *id = sqlite3_column_text(s, 2);
            ++*visited;
            snprintf(cur->system, sizeof cur->system, "%s", sys ? (const char *)sys : "");
            snprintf(cur->id, sizeof cur->id, "%s", id ? (const char *)id : "");
        }
        err = row_to_obj(s, &obj);
        if (err == CFM_EINVAL) {        /* damaged: logged, skipped */
            err = CFM_OK;
            continue;
        }
        if (err != CFM_OK)
            break;
        more = fn(arg, obj);
        cfm_obj_free(obj);
        if (!more)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, which);
    cfm_store__release(s);
    return err;
}

enum cfm_err cfm_store_each(struct cfm_store *st, const struct cfm_store_filter *f,
                            cfm_store_obj_fn fn, void *arg)
{
    static const struct cfm_store_filter all = {NULL, -1, false};
    const char *kname = NULL;
    enum stmt_id which;
    sqlite3_stmt *s;

    if (!f)
        f = &all;
    if (!st || !fn || f->kind < -1 || f->kind >= CFM_KIND__COUNT ||
        (f->system && !cfm_id_valid(f->system)))
        return CFM_EINVAL;
    if (f->kind >= 0)
        kname = cfm_kind_name((enum cfm_kind)f->kind);
    which = STMT_OBJ_EACH_ALL + (f->system ? 1 : 0) + (kname ? 2 : 0);
    /* The variants number their parameters alike, so all three are bound;
     * an absent filter field is bound NULL and unused. */
    s = cfm_store__query(st, which, "tti", f->system, kname, (int64_t)f->include_deleted);
    if (!s)
        return CFM_ESTORE;
    return visit_rows(st, s, which, fn, arg, NULL, NULL);
}

enum cfm_err cfm_store_each_after(struct cfm_store *st, enum cfm_kind kind,
                                  struct cfm_store_cursor *cur, size_t max, cfm_store_obj_fn fn,
                                  void *arg, size_t *visited)
{
    struct cfm_store_cursor from;
    sqlite3_stmt *s;

    *visited = 0;
    if (!st || !fn || !cur || (int)kind < 0 || kind >= CFM_KIND__COUNT || max == 0 ||
        max > INT64_MAX)
        return CFM_EINVAL;
    /* Bound as it was (SQLITE_STATIC: read while stepping), not as cur moves. */
    from = *cur;
    s = cfm_store__query(st, STMT_OBJ_KIND_AFTER, "ttti", cfm_kind_name(kind), from.system,
                         from.id, (int64_t)max);
    if (!s)
        return CFM_ESTORE;
    return visit_rows(st, s, STMT_OBJ_KIND_AFTER, fn, arg, cur, visited);
}

enum cfm_err cfm_store_versions(struct cfm_store *st, const char *system,
                                cfm_store_version_fn fn, void *arg)
{
    struct cfm_store_version v;
    sqlite3_stmt *s;
    int rc;

    if (!st || !fn || !cfm_id_valid(system))
        return CFM_EINVAL;
    s = cfm_store__query(st, STMT_OBJ_VERSIONS, "t", system);
    if (!s)
        return CFM_ESTORE;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *kname = (const char *)sqlite3_column_text(s, 0);
        int64_t version = sqlite3_column_int64(s, 2);

        if (!kname || cfm_kind_parse(kname, &v.kind, NULL) != CFM_OK || version < 0)
            continue; /* damaged rows are reported by cfm_store_each */
        v.id = (const char *)sqlite3_column_text(s, 1);
        v.version = (uint64_t)version;
        v.origin = (const char *)sqlite3_column_text(s, 3);
        v.deleted = sqlite3_column_int(s, 4) != 0;
        if (!v.id || !v.origin)
            continue;
        if (!fn(arg, &v))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, STMT_OBJ_VERSIONS);
    cfm_store__release(s);
    return CFM_OK;
}

/* --- Lamport clock ------------------------------------------------------ */

/* Parses the stored clock text: decimal digits only, below CFM_MAX_VERSION. */
static bool parse_clock(const char *text, uint64_t *out)
{
    unsigned long long v;
    char *end;

    if (!text || *text < '0' || *text > '9')
        return false;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (*end || errno || v >= CFM_MAX_VERSION)
        return false;
    *out = v;
    return true;
}

enum cfm_err cfm_store_clock_get(struct cfm_store *st, uint64_t *out)
{
    enum cfm_err err = CFM_OK;
    sqlite3_stmt *s;
    const char *text;
    int rc;

    if (!st || !out)
        return CFM_EINVAL;
    *out = 0;
    s = cfm_store__query(st, STMT_CLOCK_GET, "");
    if (!s)
        return CFM_ESTORE;
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, STMT_CLOCK_GET);
    text = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : "0";
    if (!parse_clock(text, out)) {
        cfm_error("store", "the stored clock \"%s\" is not a valid time", text ? text : "");
        err = CFM_ESTORE;
    }
    cfm_store__release(s);
    return err;
}

enum cfm_err cfm_store_clock_set(struct cfm_store *st, uint64_t value)
{
    char text[24];

    /* The clock becomes object versions, which stay below CFM_MAX_VERSION. */
    if (!st || value >= CFM_MAX_VERSION)
        return CFM_EINVAL;
    snprintf(text, sizeof text, "%" PRIu64, value);
    return cfm_store__run(st, STMT_CLOCK_SET, "t", text);
}

/* --- outbox ------------------------------------------------------------- */

enum cfm_err cfm_store_outbox_add(struct cfm_store *st, const struct cfm_outmsg *msg,
                                  int64_t *seq_out)
{
    enum cfm_err err;

    if (!st || !msg || !cfm_store__bounded(msg->topic, CFM_MAX_TOPIC) || !*msg->topic ||
        (msg->len && !msg->payload) || msg->qos < 0 || msg->qos > 2)
        return CFM_EINVAL;
    if (msg->len > CFM_MAX_PAYLOAD)
        return CFM_ETOOBIG;
    err = cfm_store__run(st, STMT_OUT_ADD, "tbiii", msg->topic, msg->payload, msg->len, (int64_t)msg->qos,
              (int64_t)msg->retain, (int64_t)msg->expiry_s);
    /* seq is the rowid: AUTOINCREMENT never hands out a seq again. */
    if (err == CFM_OK && seq_out)
        *seq_out = sqlite3_last_insert_rowid(st->db);
    return err;
}

enum cfm_err cfm_store_outbox_remove(struct cfm_store *st, int64_t seq)
{
    return st ? cfm_store__run(st, STMT_OUT_REMOVE, "i", seq) : CFM_EINVAL;
}

enum cfm_err cfm_store_outbox_each(struct cfm_store *st, cfm_store_outbox_fn fn, void *arg)
{
    enum cfm_err err = CFM_OK;
    sqlite3_stmt *s;
    int rc;

    if (!st || !fn)
        return CFM_EINVAL;
    s = cfm_store__query(st, STMT_OUT_EACH, "");
    if (!s)
        return CFM_ESTORE;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        sqlite3_int64 expiry = sqlite3_column_int64(s, 5);
        struct cfm_outmsg msg = {
            .seq = sqlite3_column_int64(s, 0),
            .topic = (const char *)sqlite3_column_text(s, 1),
            .payload = sqlite3_column_blob(s, 2),   /* blob before bytes, as sqlite says */
            .len = (size_t)sqlite3_column_bytes(s, 2),
            .qos = sqlite3_column_int(s, 3),
            .retain = sqlite3_column_int(s, 4) != 0,
            .expiry_s = expiry < 0 || expiry > UINT32_MAX ? 0 : (uint32_t)expiry,
        };

        /* NOT NULL columns read NULL only when sqlite ran out of memory;
         * an empty blob reads NULL with length 0. */
        if (!msg.topic || (!msg.payload && msg.len)) {
            err = CFM_ENOMEM;
            break;
        }
        if (!msg.payload)
            msg.payload = "";
        if (!fn(arg, &msg))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, STMT_OUT_EACH);
    cfm_store__release(s);
    return err;
}

enum cfm_err cfm_store_outbox_count(struct cfm_store *st, int64_t *out)
{
    sqlite3_stmt *s;

    if (!st || !out)
        return CFM_EINVAL;
    s = cfm_store__query(st, STMT_OUT_COUNT, "");
    if (!s)
        return CFM_ESTORE;
    if (sqlite3_step(s) != SQLITE_ROW)
        return cfm_store__fail(st, STMT_OUT_COUNT);
    *out = sqlite3_column_int64(s, 0);
    cfm_store__release(s);
    return CFM_OK;
}

/* --- sites -------------------------------------------------------------- */

enum cfm_err cfm_store_site_put(struct cfm_store *st, const struct cfm_site_rec *rec)
{
    if (!st || !rec || !cfm_id_valid(rec->site) || !cfm_store__bounded(rec->state, CFM_MAX_ID) ||
        !cfm_store__bounded(rec->last_seen, CFM_TIME_LEN - 1) || !rec->status)
        return CFM_EINVAL;
    if (!cfm_store__bounded(rec->status, CFM_MAX_PAYLOAD))
        return CFM_ETOOBIG;
    return cfm_store__run(st, STMT_SITE_PUT, "tttt", rec->site, rec->state, rec->last_seen, rec->status);
}

enum cfm_err cfm_store_site_each(struct cfm_store *st, cfm_store_site_fn fn, void *arg)
{
    enum cfm_err err = CFM_OK;
    sqlite3_stmt *s;
    int rc;

    if (!st || !fn)
        return CFM_EINVAL;
    s = cfm_store__query(st, STMT_SITE_EACH, "");
    if (!s)
        return CFM_ESTORE;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct cfm_site_rec rec = {
            .site = (const char *)sqlite3_column_text(s, 0),
            .state = (const char *)sqlite3_column_text(s, 1),
            .last_seen = (const char *)sqlite3_column_text(s, 2),
            .status = (const char *)sqlite3_column_text(s, 3),
        };

        if (!rec.site || !rec.state || !rec.last_seen || !rec.status) {
            err = CFM_ENOMEM;           /* NOT NULL columns: sqlite ran out */
            break;
        }
        if (!fn(arg, &rec))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, STMT_SITE_EACH);
    cfm_store__release(s);
    return err;
}

/* --- events already handled --------------------------------------------- */

enum cfm_err cfm_store_event_mark(struct cfm_store *st, const char *id, const char *system,
                                  const char *type, bool *already)
{
    char now[CFM_TIME_LEN];
    enum cfm_err err;

    if (!st || !already || !cfm_id_valid(id) || !cfm_id_valid(system) ||
        !cfm_store__bounded(type, CFM_MAX_ID))
        return CFM_EINVAL;
    cfm_time_now(now);
    err = cfm_store__run(st, STMT_EVENT_MARK, "tttt", id, system, type, now);
    /* INSERT OR IGNORE changed nothing: the id was there before. */
    if (err == CFM_OK)
        *already = sqlite3_changes(st->db) == 0;
    return err;
}

enum cfm_err cfm_store_events_trim(struct cfm_store *st, const char *before, int max,
                                   int *deleted)
{
    enum cfm_err err;

    if (!st || !deleted || !cfm_store__bounded(before, CFM_TIME_LEN) || max <= 0)
        return CFM_EINVAL;
    err = cfm_store__run(st, STMT_EVENT_TRIM, "ti", before, (int64_t)max);
    *deleted = err == CFM_OK ? sqlite3_changes(st->db) : 0;
    return err;
}
