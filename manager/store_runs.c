/*
 * store_runs.c - the store's tables of procedure runs not yet finished at
 * this site and the journal of their API calls (see docs/procedures.md,
 * Durability). Statements are prepared with the others (store_int.h).
 */
#include "store_int.h"

#include <string.h>

#include "bounds.h"
#include "id.h"

#define MAX_WHAT 512

static bool rec_ok(const struct cfm_run_rec *r)
{
    return r && cfm_id_valid(r->id) && cfm_id_valid(r->system) &&
           cfm_store__bounded(r->script, 255) && cfm_store__bounded(r->hash, 64) &&
           cfm_store__bounded(r->event, CFM_MAX_PAYLOAD) && cfm_store__bounded(r->state, 16) &&
           cfm_store__bounded(r->note, CFM_WHY_MAX);
}

enum cfm_err cfm_store_run_put(struct cfm_store *st, const struct cfm_run_rec *rec)
{
    if (!st || !rec_ok(rec))
        return CFM_EINVAL;
    return cfm_store__run(st, STMT_RUN_PUT, "tttttiitt", rec->id, rec->system, rec->script,
                          rec->hash, rec->event, rec->started_ms, rec->deadline_ms, rec->state,
                          rec->note);
}

enum cfm_err cfm_store_run_set_state(struct cfm_store *st, const char *id, const char *state,
                                     const char *note)
{
    if (!st || !cfm_id_valid(id) || !cfm_store__bounded(state, 16) ||
        !cfm_store__bounded(note, CFM_WHY_MAX))
        return CFM_EINVAL;
    return cfm_store__run(st, STMT_RUN_STATE, "ttt", id, state, note);
}

enum cfm_err cfm_store_run_delete(struct cfm_store *st, const char *id)
{
    enum cfm_err err;

    if (!st || !cfm_id_valid(id))
        return CFM_EINVAL;
    if ((err = cfm_store_begin(st)) != CFM_OK)
        return err;
    if ((err = cfm_store__run(st, STMT_JOURNAL_DELETE, "t", id)) != CFM_OK ||
        (err = cfm_store__run(st, STMT_RUN_DELETE, "t", id)) != CFM_OK) {
        cfm_store_rollback(st);
        return err;
    }
    return cfm_store_commit(st);
}

/* Steps a RUN_COLS query, calling fn for each row. */
static enum cfm_err each_run(struct cfm_store *st, enum stmt_id which, sqlite3_stmt *s,
                             cfm_store_run_fn fn, void *arg, bool *found)
{
    enum cfm_err err = CFM_OK;
    int rc;

    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct cfm_run_rec rec = {
            .id = (const char *)sqlite3_column_text(s, 0),
            .system = (const char *)sqlite3_column_text(s, 1),
            .script = (const char *)sqlite3_column_text(s, 2),
            .hash = (const char *)sqlite3_column_text(s, 3),
            .event = (const char *)sqlite3_column_text(s, 4),
            .started_ms = sqlite3_column_int64(s, 5),
            .deadline_ms = sqlite3_column_int64(s, 6),
            .state = (const char *)sqlite3_column_text(s, 7),
            .note = (const char *)sqlite3_column_text(s, 8),
        };

        if (!rec.id || !rec.system || !rec.script || !rec.hash || !rec.event || !rec.state ||
            !rec.note) {
            err = CFM_ENOMEM; /* NOT NULL columns: sqlite ran out */
            break;
        }
        if (found)
            *found = true;
        if (!fn(arg, &rec))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, which);
    cfm_store__release(s);
    return err;
}

enum cfm_err cfm_store_run_each(struct cfm_store *st, cfm_store_run_fn fn, void *arg)
{
    sqlite3_stmt *s;

    if (!st || !fn)
        return CFM_EINVAL;
    if (!(s = cfm_store__query(st, STMT_RUN_EACH, "")))
        return CFM_ESTORE;
    return each_run(st, STMT_RUN_EACH, s, fn, arg, NULL);
}

enum cfm_err cfm_store_run_get(struct cfm_store *st, const char *id, cfm_store_run_fn fn,
                               void *arg)
{
    bool found = false;
    sqlite3_stmt *s;
    enum cfm_err err;

    if (!st || !fn || !cfm_id_valid(id))
        return CFM_EINVAL;
    if (!(s = cfm_store__query(st, STMT_RUN_GET, "t", id)))
        return CFM_ESTORE;
    err = each_run(st, STMT_RUN_GET, s, fn, arg, &found);
    return err == CFM_OK && !found ? CFM_ENOTFOUND : err;
}

enum cfm_err cfm_store_journal_put(struct cfm_store *st, const struct cfm_journal_row *row)
{
    if (!st || !row || !cfm_id_valid(row->run) || row->seq <= 0 ||
        !cfm_store__bounded(row->what, MAX_WHAT) || (row->error && !cfm_store__bounded(row->error, 65536)))
        return CFM_EINVAL;
    return cfm_store__run(st, STMT_JOURNAL_PUT, "titiiitt", row->run, row->seq, row->what,
                          row->at, row->ord, row->deadline_ms, row->result, row->error);
}

enum cfm_err cfm_store_journal_each(struct cfm_store *st, const char *run,
                                    cfm_store_journal_fn fn, void *arg)
{
    enum cfm_err err = CFM_OK;
    sqlite3_stmt *s;
    int rc;

    if (!st || !fn || !cfm_id_valid(run))
        return CFM_EINVAL;
    if (!(s = cfm_store__query(st, STMT_JOURNAL_EACH, "t", run)))
        return CFM_ESTORE;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct cfm_journal_row row = {
            .run = (const char *)sqlite3_column_text(s, 0),
            .seq = sqlite3_column_int64(s, 1),
            .what = (const char *)sqlite3_column_text(s, 2),
            .at = sqlite3_column_int64(s, 3),
            .ord = sqlite3_column_int64(s, 4),
            .deadline_ms = sqlite3_column_int64(s, 5),
            .result = (const char *)sqlite3_column_text(s, 6),
            .error = (const char *)sqlite3_column_text(s, 7),
        };

        if (!row.run || !row.what) {
            err = CFM_ENOMEM;
            break;
        }
        if (!fn(arg, &row))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cfm_store__fail(st, STMT_JOURNAL_EACH);
    cfm_store__release(s);
    return err;
}
