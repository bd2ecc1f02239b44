/*
 * journal.c - durable procedure runs, the manager's side (journal.h).
 *
 * The store holds a row per run not finished here (written when it starts,
 * in the transaction that marks its event handled) and the journal of its
 * API calls (written by the engine, each entry in the transaction of the
 * model changes its call made). At start every active row is read back and
 * handed to the engine, which replays the run from its event.
 */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

void cfm_journal_on_start(struct cfm_store *st, struct cfm_run *run)
{
    struct cfm_run_rec rec = {
        .id = cfm_run_id(run),
        .system = cfm_run_system(run),
        .script = cfm_run_script(run),
        .hash = cfm_run_hash(run),
        .event = cfm_run_event(run),
        .started_ms = cfm_run_started_ms(run),
        .deadline_ms = cfm_run_deadline_ms(run),
        .state = "active",
        .note = "",
    };

    if (cfm_store_run_put(st, &rec) != CFM_OK)
        cfm_error("journal", "cannot record run %s: it will not survive a restart",
                  cfm_run_id(run));
}

void cfm_journal_put(struct cfm_store *st, struct cfm_run *run,
                     const struct cfm_journal_entry *e)
{
    char *result = e->result ? json_dumps(e->result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    struct cfm_journal_row row = {
        .run = cfm_run_id(run),
        .seq = (int64_t)e->seq,
        .what = e->what,
        .at = e->at,
        .ord = (int64_t)e->ord,
        .deadline_ms = e->deadline_ms,
        .result = result,
        .error = e->error,
    };

    if (e->result && !result)
        cfm_error("journal", "run %s: cannot encode the result of call %llu", cfm_run_id(run),
                  (unsigned long long)e->seq);
    else if (cfm_store_journal_put(st, &row) != CFM_OK)
        cfm_error("journal", "run %s: cannot journal call %llu (%s)", cfm_run_id(run),
                  (unsigned long long)e->seq, e->what);
    free(result);
}

void cfm_journal_on_end(struct cfm_store *st, struct cfm_run *run)
{
    enum cfm_err err;

    if (cfm_run_resumable(run))
        err = cfm_store_run_set_state(st, cfm_run_id(run), "changed", cfm_run_error(run));
    else
        err = cfm_store_run_delete(st, cfm_run_id(run));
    if (err != CFM_OK)
        cfm_error("journal", "cannot update the row of run %s", cfm_run_id(run));
}

/* --- restoring ---------------------------------------------------------- */

/* A run row read back, with its journal. */
struct loaded {
    char id[CFM_MAX_ID + 1], system[CFM_MAX_ID + 1], script[256], hash[65], state[17];
    json_t *event;
    int64_t started_ms, deadline_ms;
    struct cfm_journal_entry *e;
    size_t n, cap;
    char corrupt[CFM_WHY_MAX];
};

static bool copy_rec(void *arg, const struct cfm_run_rec *rec)
{
    struct loaded *l = arg;
    json_error_t jerr;

    snprintf(l->id, sizeof l->id, "%s", rec->id);
    snprintf(l->system, sizeof l->system, "%s", rec->system);
    snprintf(l->script, sizeof l->script, "%s", rec->script);
    snprintf(l->hash, sizeof l->hash, "%s", rec->hash);
    snprintf(l->state, sizeof l->state, "%s", rec->state);
    l->started_ms = rec->started_ms;
    l->deadline_ms = rec->deadline_ms;
    l->event = json_loads(rec->event, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(l->event)) {
        json_decref(l->event);
        l->event = json_object();
        snprintf(l->corrupt, sizeof l->corrupt,
                 "the stored event of run %s is not a JSON object: %s", rec->id, jerr.text);
    }
    return false;
}

static bool corrupt(struct loaded *l, int64_t seq, const char *why)
{
    snprintf(l->corrupt, sizeof l->corrupt,
             "the journal of run %s is corrupt at call %lld: %s; the run cannot be replayed",
             l->id, (long long)seq, why);
    return false;
}

static bool add_row(void *arg, const struct cfm_journal_row *row)
{
    struct loaded *l = arg;
    struct cfm_journal_entry *e;
    json_t *result = NULL;
    json_error_t jerr;

    if (row->seq <= 0 || (l->n && (uint64_t)row->seq <= l->e[l->n - 1].seq))
        return corrupt(l, row->seq, "the call number is out of order");
    if (!row->what[0])
        return corrupt(l, row->seq, "the call has no name");
    if (row->at < -1 || row->ord < 0 || (row->at >= 0 && row->ord == 0) || row->deadline_ms < 0)
        return corrupt(l, row->seq, "its position (at, ord) is impossible");
    if (row->at >= 0 && !row->result && !row->error)
        return corrupt(l, row->seq, "a result handed over has neither a value nor an error");
    if (row->result) {
        result = json_loads(row->result, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!json_is_array(result)) {
            char why[CFM_WHY_MAX / 2];
            json_decref(result);
            snprintf(why, sizeof why, "its result is not a JSON array (%s)",
                     jerr.text[0] ? jerr.text : "another JSON value");
            return corrupt(l, row->seq, why);
        }
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct cfm_journal_entry *p = realloc(l->e, cap * sizeof *p);
        if (!p) {
            json_decref(result);
            return corrupt(l, row->seq, "out of memory reading it");
        }
        l->e = p;
        l->cap = cap;
    }
    e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    e->seq = (uint64_t)row->seq;
    e->what = strdup(row->what);
    e->at = row->at;
    e->ord = (uint64_t)row->ord;
    e->deadline_ms = row->deadline_ms;
    e->result = result;
    e->error = row->error ? strdup(row->error) : NULL;
    return true;
}

static void free_loaded(struct loaded *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free((char *)l->e[i].what);
        free((char *)l->e[i].error);
        json_decref((json_t *)l->e[i].result);
    }
    free(l->e);
    json_decref(l->event);
}

static enum cfm_err restore(struct cfm_store *st, struct cfm_engine *e, struct loaded *l,
                            bool force, struct cfm_why *why)
{
    struct cfm_run_spec spec = {.id = l->id, .system = l->system, .script = l->script,
                                .event = l->event};
    struct cfm_run_restore rs = {.started_ms = l->started_ms, .deadline_ms = l->deadline_ms,
                                 .hash = l->hash, .force = force};
    struct cfm_run *run;
    enum cfm_err err;

    if (!l->corrupt[0] && cfm_store_journal_each(st, l->id, add_row, l) != CFM_OK &&
        !l->corrupt[0])
        snprintf(l->corrupt, sizeof l->corrupt, "the journal of run %s cannot be read", l->id);
    rs.entries = l->e;
    rs.n = l->n;
    rs.corrupt = l->corrupt[0] ? l->corrupt : NULL;
    if (rs.corrupt)
        cfm_error("journal", "%s", rs.corrupt);
    err = cfm_engine_restore(e, &spec, &rs, &run, why);
    if (err != CFM_OK)
        cfm_error("journal", "cannot restore run %s: %s", l->id, why->text);
    return err;
}

struct restore_all {
    struct loaded *list;
    size_t n, cap;
};

static bool collect_active(void *arg, const struct cfm_run_rec *rec)
{
    struct restore_all *ra = arg;

    if (strcmp(rec->state, "active") != 0)
        return true;
    if (ra->n == ra->cap) {
        size_t cap = ra->cap ? 2 * ra->cap : 16;
        struct loaded *p = realloc(ra->list, cap * sizeof *p);
        if (!p)
            return false;
        ra->list = p;
        ra->cap = cap;
    }
    memset(&ra->list[ra->n], 0, sizeof ra->list[ra->n]);
    copy_rec(&ra->list[ra->n++], rec);
    return true;
}

size_t cfm_journal_restore_all(struct cfm_store *st, struct cfm_engine *e)
{
    struct restore_all ra = {0};
    size_t restored = 0;

    /* Rows first, journals after: one statement of the store at a time. */
    cfm_store_run_each(st, collect_active, &ra);
    for (size_t i = 0; i < ra.n; i++) {
        struct cfm_why why = {{0}};
        if (restore(st, e, &ra.list[i], false, &why) == CFM_OK)
            restored++;
        free_loaded(&ra.list[i]);
    }
    free(ra.list);
    if (ra.n)
        cfm_info("journal", "%zu unfinished run(s) restored from the journal", restored);
    return restored;
}

enum cfm_err cfm_journal_resume(struct cfm_store *st, struct cfm_engine *e, const char *id,
                                bool force, struct cfm_why *why)
{
    struct loaded l;
    enum cfm_err err;

    memset(&l, 0, sizeof l);
    if (cfm_engine_find(e, id))
        return cfm_why_set(why, CFM_EINVAL, "run %s is active already", id);
    err = cfm_store_run_get(st, id, copy_rec, &l);
    if (err == CFM_ENOTFOUND)
        return cfm_why_set(why, CFM_ENOTFOUND,
                           "run %s has no journal here: only a run stopped because its "
                           "procedure changed can be resumed",
                           id);
    if (err != CFM_OK)
        return cfm_why_set(why, err, "cannot read run %s", id);
    if (strcmp(l.state, "changed") == 0 && !force) {
        free_loaded(&l);
        return cfm_why_set(why, CFM_EINVAL,
                           "the procedure of run %s changed since it began; pass --force to "
                           "replay it against the new text",
                           id);
    }
    if ((err = cfm_store_run_set_state(st, id, "active", "")) == CFM_OK)
        err = restore(st, e, &l, force, why);
    free_loaded(&l);
    return err;
}
