/*
 * test_store.c - the SQLite store against a real database file in a fresh
 * temporary directory per test (no mocked SQLite). Damage and newer schemas
 * are made with the sqlite3 API directly, as a crash or a newer cfm would
 * leave them; a crash is a child process that exits without closing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bounds.h"
#include "store.h"

struct fx {
    char dir[PATH_MAX];
    char db[PATH_MAX];
    struct cfm_store *st;
};

static int setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    struct fx *fx = calloc(1, sizeof *fx);
    struct cfm_why why = {""};

    assert_non_null(fx);
    if (!tmp || !*tmp)
        tmp = "/tmp";
    assert_true(snprintf(fx->dir, sizeof fx->dir, "%s/cfm-store-XXXXXX", tmp) <
                (int)sizeof fx->dir);
    assert_non_null(mkdtemp(fx->dir));
    assert_true(snprintf(fx->db, sizeof fx->db, "%s/cfm.db", fx->dir) < (int)sizeof fx->db);
    assert_int_equal(cfm_store_open(fx->db, &fx->st, &why), CFM_OK);
    *state = fx;
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    cfm_store_close(fx->st);
    nftw(fx->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* Closes and opens the store again, as a restart does. */
static void reopen(struct fx *fx)
{
    struct cfm_why why = {""};

    cfm_store_close(fx->st);
    fx->st = NULL;
    assert_int_equal(cfm_store_open(fx->db, &fx->st, &why), CFM_OK);
}

/* Runs one SQL text on the database file with the sqlite3 API directly. */
static void raw_exec(const struct fx *fx, const char *sql)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static struct cfm_obj *mk(enum cfm_kind kind, const char *system, const char *id,
                          uint64_t version, bool deleted, const char *body)
{
    struct cfm_obj *obj = cfm_obj_new(kind, system, id, json_loads(body, 0, NULL));

    assert_non_null(obj);
    obj->version = version;
    obj->deleted = deleted;
    snprintf(obj->origin, sizeof obj->origin, "site-a");
    snprintf(obj->updated, sizeof obj->updated, "2026-11-22T10:00:00.000Z");
    return obj;
}

static void put(struct cfm_store *st, enum cfm_kind kind, const char *system, const char *id,
                bool deleted)
{
    struct cfm_obj *obj = mk(kind, system, id, 1, deleted, "{}");

    assert_int_equal(cfm_store_put(st, obj), CFM_OK);
    cfm_obj_free(obj);
}

/* Collects "system/kind/id" of the visited objects, joined by spaces. */
struct seen {
    char text[1024];
    int left;               /* stop after this many; -1: never */
};

static bool on_obj(void *arg, const struct cfm_obj *obj)
{
    struct seen *seen = arg;
    size_t n = strlen(seen->text);

    snprintf(seen->text + n, sizeof seen->text - n, "%s%s/%s/%s", n ? " " : "", obj->system,
             cfm_kind_name(obj->kind), obj->id);
    return seen->left < 0 || --seen->left > 0;
}

static const char *each(struct cfm_store *st, const char *system, int kind, bool deleted,
                        int stop_after, struct seen *seen)
{
    struct cfm_store_filter f = {system, kind, deleted};

    memset(seen, 0, sizeof *seen);
    seen->left = stop_after;
    assert_int_equal(cfm_store_each(st, &f, on_obj, seen), CFM_OK);
    return seen->text;
}

/* --- open and schema ---------------------------------------------------- */

static void test_open_creates_schema(void **state)
{
    struct fx *fx = *state;
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    const char *sql = "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_master"
                      " WHERE name NOT LIKE 'sqlite_%' ORDER BY name)";

    assert_true(cfm_store_schema_version() >= 1);
    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), cfm_store_schema_version());
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0),
                        "journal meta objects objects_kind_system outbox runs seen_events sites");
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_reopen_keeps_data(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *got = NULL;

    put(fx->st, CFM_KIND_VM_CLASS, "shop", "small", false);
    reopen(fx);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "small", &got), CFM_OK);
    assert_string_equal(got->id, "small");
    cfm_obj_free(got);
}

static void test_newer_schema_refused(void **state)
{
    struct fx *fx = *state;
    struct cfm_store *st = NULL;
    struct cfm_why why = {""};
    char sql[64], want[CFM_WHY_MAX];
    int v = cfm_store_schema_version();

    cfm_store_close(fx->st);
    fx->st = NULL;
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v + 1);
    raw_exec(fx, sql);
    assert_int_equal(cfm_store_open(fx->db, &st, &why), CFM_ESTORE);
    assert_null(st);
    assert_true(snprintf(want, sizeof want,
                         "database %s has schema version %d; this cfm understands up to %d",
                         fx->db, v + 1, v) < (int)sizeof want);
    assert_string_equal(why.text, want);
}

static void test_open_missing_dir_fails(void **state)
{
    struct fx *fx = *state;
    struct cfm_store *st = NULL;
    struct cfm_why why = {""};
    char path[PATH_MAX + 32];

    snprintf(path, sizeof path, "%s/no/such/dir/cfm.db", fx->dir);
    assert_int_equal(cfm_store_open(path, &st, &why), CFM_ESTORE);
    assert_null(st);
    assert_non_null(strstr(why.text, path));
    assert_int_equal(cfm_store_open("", &st, &why), CFM_EINVAL);
    cfm_store_close(NULL);
}

/* --- objects ------------------------------------------------------------ */

static void test_put_get_round_trip(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *obj = mk(CFM_KIND_VM_CLASS, "shop", "small", 7, false,
                             "{\"image\":\"debian\",\"cpu\":2,\"memory\":{\"mb\":512}}");
    struct cfm_obj *got = NULL;

    snprintf(obj->origin, sizeof obj->origin, "site-b");
    snprintf(obj->updated, sizeof obj->updated, "2026-11-23T01:02:03.004Z");
    assert_int_equal(cfm_store_put(fx->st, obj), CFM_OK);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "small", &got), CFM_OK);
    assert_int_equal(got->kind, CFM_KIND_VM_CLASS);
    assert_string_equal(got->system, "shop");
    assert_string_equal(got->id, "small");
    assert_int_equal(got->version, 7);
    assert_string_equal(got->origin, "site-b");
    assert_string_equal(got->updated, "2026-11-23T01:02:03.004Z");
    assert_false(got->deleted);
    assert_true(json_equal(got->body, obj->body));
    cfm_obj_free(got);

    /* A tombstone keeps its flag. */
    obj->deleted = true;
    json_object_clear(obj->body);
    assert_int_equal(cfm_store_put(fx->st, obj), CFM_OK);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "small", &got), CFM_OK);
    assert_true(got->deleted);
    assert_int_equal(json_object_size(got->body), 0);
    cfm_obj_free(got);
    cfm_obj_free(obj);
}

static void test_body_stored_compact_sorted(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *obj = mk(CFM_KIND_SITE, "shop", "a", 1, false, "{ \"z\": 1, \"a\": [1, 2] }");
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;

    assert_int_equal(cfm_store_put(fx->st, obj), CFM_OK);
    cfm_obj_free(obj);
    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT kind, body FROM objects", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "Site");
    assert_string_equal((const char *)sqlite3_column_text(s, 1), "{\"a\":[1,2],\"z\":1}");
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_get_missing(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *got = (struct cfm_obj *)&got;

    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "none", &got),
                     CFM_ENOTFOUND);
    assert_null(got);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "small", false);
    /* Same id, other kind or system: still absent. */
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VOLUME, "small", &got),
                     CFM_ENOTFOUND);
    assert_int_equal(cfm_store_get(fx->st, "blog", CFM_KIND_VM_CLASS, "small", &got),
                     CFM_ENOTFOUND);
}

static void test_put_replaces(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *obj = mk(CFM_KIND_VM_CLASS, "shop", "small", 1, false, "{\"cpu\":1}");
    struct cfm_obj *got = NULL;
    struct seen seen;

    assert_int_equal(cfm_store_put(fx->st, obj), CFM_OK);
    obj->version = 2;
    json_object_set_new(obj->body, "cpu", json_integer(4));
    assert_int_equal(cfm_store_put(fx->st, obj), CFM_OK);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "small", &got), CFM_OK);
    assert_int_equal(got->version, 2);
    assert_int_equal(json_integer_value(json_object_get(got->body, "cpu")), 4);
    assert_string_equal(each(fx->st, NULL, -1, true, -1, &seen), "shop/VMClass/small");
    cfm_obj_free(got);
    cfm_obj_free(obj);
}

static void test_bad_arguments(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *obj = mk(CFM_KIND_VM_CLASS, "shop", "small", 1, false, "{}");
    struct cfm_obj *got = NULL;
    struct cfm_store_filter f = {NULL, CFM_KIND__COUNT, false};
    struct seen seen = {"", -1};

    assert_int_equal(cfm_store_put(fx->st, NULL), CFM_EINVAL);
    obj->version = CFM_MAX_VERSION;
    assert_int_equal(cfm_store_put(fx->st, obj), CFM_EINVAL);
    obj->version = 1;
    obj->kind = CFM_KIND__COUNT;
    assert_int_equal(cfm_store_put(fx->st, obj), CFM_EINVAL);
    obj->kind = CFM_KIND_VM_CLASS;
    snprintf(obj->id, sizeof obj->id, "bad/id");
    assert_int_equal(cfm_store_put(fx->st, obj), CFM_EINVAL);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "bad/id", &got),
                     CFM_EINVAL);
    assert_int_equal(cfm_store_get(fx->st, NULL, CFM_KIND_VM_CLASS, "x", &got), CFM_EINVAL);
    assert_int_equal(cfm_store_each(fx->st, &f, on_obj, &seen), CFM_EINVAL);
    assert_int_equal(cfm_store_each(fx->st, NULL, NULL, &seen), CFM_EINVAL);
    cfm_obj_free(obj);
}

/* Two systems x two kinds, plus one tombstone in each system. */
static void put_fleet(struct cfm_store *st)
{
    put(st, CFM_KIND_VOLUME, "shop", "data", false);
    put(st, CFM_KIND_VM_CLASS, "shop", "small", false);
    put(st, CFM_KIND_VM_CLASS, "shop", "big", false);
    put(st, CFM_KIND_VM_CLASS, "shop", "gone", true);
    put(st, CFM_KIND_VM_CLASS, "blog", "tiny", false);
    put(st, CFM_KIND_VOLUME, "blog", "logs", false);
    put(st, CFM_KIND_VOLUME, "blog", "old", true);
}

static void test_each_filters(void **state)
{
    struct fx *fx = *state;
    struct seen seen;

    put_fleet(fx->st);
    assert_string_equal(each(fx->st, NULL, -1, false, -1, &seen),
                        "blog/VMClass/tiny blog/Volume/logs shop/VMClass/big "
                        "shop/VMClass/small shop/Volume/data");
    assert_string_equal(each(fx->st, NULL, -1, true, -1, &seen),
                        "blog/VMClass/tiny blog/Volume/logs blog/Volume/old shop/VMClass/big "
                        "shop/VMClass/gone shop/VMClass/small shop/Volume/data");
    assert_string_equal(each(fx->st, "shop", -1, false, -1, &seen),
                        "shop/VMClass/big shop/VMClass/small shop/Volume/data");
    assert_string_equal(each(fx->st, "shop", -1, true, -1, &seen),
                        "shop/VMClass/big shop/VMClass/gone shop/VMClass/small shop/Volume/data");
    assert_string_equal(each(fx->st, NULL, CFM_KIND_VM_CLASS, false, -1, &seen),
                        "blog/VMClass/tiny shop/VMClass/big shop/VMClass/small");
    assert_string_equal(each(fx->st, NULL, CFM_KIND_VOLUME, true, -1, &seen),
                        "blog/Volume/logs blog/Volume/old shop/Volume/data");
    assert_string_equal(each(fx->st, "blog", CFM_KIND_VOLUME, false, -1, &seen),
                        "blog/Volume/logs");
    assert_string_equal(each(fx->st, "blog", CFM_KIND_VOLUME, true, -1, &seen),
                        "blog/Volume/logs blog/Volume/old");
    assert_string_equal(each(fx->st, "none", -1, true, -1, &seen), "");
    assert_string_equal(each(fx->st, "shop", CFM_KIND_SITE, true, -1, &seen), "");

    /* No filter: every live object. */
    memset(&seen, 0, sizeof seen);
    seen.left = -1;
    assert_int_equal(cfm_store_each(fx->st, NULL, on_obj, &seen), CFM_OK);
    assert_string_equal(seen.text, "blog/VMClass/tiny blog/Volume/logs shop/VMClass/big "
                                   "shop/VMClass/small shop/Volume/data");
}

static void test_each_early_stop(void **state)
{
    struct fx *fx = *state;
    struct seen seen;

    put_fleet(fx->st);
    assert_string_equal(each(fx->st, NULL, -1, false, 2, &seen),
                        "blog/VMClass/tiny blog/Volume/logs");
    assert_string_equal(each(fx->st, "shop", CFM_KIND_VM_CLASS, true, 1, &seen),
                        "shop/VMClass/big");
    /* The statement was released: the next walk starts from the top. */
    assert_string_equal(each(fx->st, "shop", CFM_KIND_VM_CLASS, true, -1, &seen),
                        "shop/VMClass/big shop/VMClass/gone shop/VMClass/small");
}

/* One batch of cfm_store_each_after: the ids seen, and how many rows read. */
static const char *batch(struct cfm_store *st, enum cfm_kind kind, struct cfm_store_cursor *cur,
                         size_t max, struct seen *seen, size_t *visited)
{
    memset(seen, 0, sizeof *seen);
    seen->left = -1;
    assert_int_equal(cfm_store_each_after(st, kind, cur, max, on_obj, seen, visited), CFM_OK);
    return seen->text;
}

static void test_each_after_batches(void **state)
{
    struct fx *fx = *state;
    struct cfm_store_cursor cur;
    struct seen seen;
    size_t visited;

    put_fleet(fx->st);
    put(fx->st, CFM_KIND_VM_CLASS, "ads", "a1", false);
    memset(&cur, 0, sizeof cur);
    /* Every system, one kind, live only, in (system, id) order, two at a time. */
    assert_string_equal(batch(fx->st, CFM_KIND_VM_CLASS, &cur, 2, &seen, &visited),
                        "ads/VMClass/a1 blog/VMClass/tiny");
    assert_int_equal(visited, 2);
    assert_string_equal(cur.system, "blog");
    assert_string_equal(cur.id, "tiny");
    assert_string_equal(batch(fx->st, CFM_KIND_VM_CLASS, &cur, 2, &seen, &visited),
                        "shop/VMClass/big shop/VMClass/small");
    assert_int_equal(visited, 2);
    /* The end: fewer rows than asked, the cursor where it was. */
    assert_string_equal(batch(fx->st, CFM_KIND_VM_CLASS, &cur, 2, &seen, &visited), "");
    assert_int_equal(visited, 0);
    assert_string_equal(cur.id, "small");
    /* A scan from the start again sees what was written meanwhile. */
    put(fx->st, CFM_KIND_VM_CLASS, "blog", "added", false);
    memset(&cur, 0, sizeof cur);
    assert_string_equal(batch(fx->st, CFM_KIND_VM_CLASS, &cur, 10, &seen, &visited),
                        "ads/VMClass/a1 blog/VMClass/added blog/VMClass/tiny shop/VMClass/big "
                        "shop/VMClass/small");
    assert_int_equal(visited, 5);
    assert_int_equal(cfm_store_each_after(fx->st, CFM_KIND_VM_CLASS, &cur, 0, on_obj, &seen,
                                          &visited),
                     CFM_EINVAL);
}

static void test_tombstones_hidden(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *got = NULL;
    struct seen seen;

    put(fx->st, CFM_KIND_VM_INSTANCE, "shop", "vm1", true);
    assert_string_equal(each(fx->st, "shop", CFM_KIND_VM_INSTANCE, false, -1, &seen), "");
    assert_string_equal(each(fx->st, "shop", CFM_KIND_VM_INSTANCE, true, -1, &seen),
                        "shop/VMInstance/vm1");
    /* get returns tombstones. */
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_INSTANCE, "vm1", &got), CFM_OK);
    assert_true(got->deleted);
    cfm_obj_free(got);
}

/* Calls cfm_store_each on the same filter from inside its own callback. */
static bool on_obj_reenter(void *arg, const struct cfm_obj *obj)
{
    struct cfm_store *st = arg;
    struct cfm_store_filter f = {NULL, -1, false};
    struct seen seen = {"", -1};
    struct cfm_obj *got = NULL;

    assert_int_equal(cfm_store_each(st, &f, on_obj, &seen), CFM_ESTORE);
    /* Other statements stay usable. */
    assert_int_equal(cfm_store_get(st, obj->system, obj->kind, obj->id, &got), CFM_OK);
    cfm_obj_free(got);
    return true;
}

static void test_each_reentry_refused(void **state)
{
    struct fx *fx = *state;

    put(fx->st, CFM_KIND_VM_CLASS, "shop", "small", false);
    assert_int_equal(cfm_store_each(fx->st, NULL, on_obj_reenter, fx->st), CFM_OK);
}

static void test_damaged_rows_skipped(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *got = (struct cfm_obj *)&got;
    struct seen seen;

    put(fx->st, CFM_KIND_VM_CLASS, "shop", "a", false);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "b", false);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "c", false);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "d", false);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "e", false);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "f", false);
    raw_exec(fx, "UPDATE objects SET body = '{not json' WHERE id = 'b';"
                 "UPDATE objects SET body = '[1,2]' WHERE id = 'c';"
                 "UPDATE objects SET version = 'x' WHERE id = 'd';"
                 "UPDATE objects SET id = 'bad/id' WHERE id = 'e';"
                 "INSERT INTO objects VALUES ('shop', 'Bogus', 'z', 1, 'site-a', '', 0, '{}');");
    assert_string_equal(each(fx->st, NULL, -1, true, -1, &seen),
                        "shop/VMClass/a shop/VMClass/f");
    assert_string_equal(each(fx->st, "shop", CFM_KIND_VM_CLASS, false, -1, &seen),
                        "shop/VMClass/a shop/VMClass/f");
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "b", &got), CFM_ENOTFOUND);
    assert_null(got);
    /* A newer copy replaces the damaged row. */
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "b", false);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "b", &got), CFM_OK);
    cfm_obj_free(got);
}

/* --- clock and transactions --------------------------------------------- */

static void test_clock_persists(void **state)
{
    struct fx *fx = *state;
    uint64_t clock = 99;

    assert_int_equal(cfm_store_clock_get(fx->st, &clock), CFM_OK);
    assert_int_equal(clock, 0);
    assert_int_equal(cfm_store_clock_set(fx->st, 41), CFM_OK);
    assert_int_equal(cfm_store_clock_set(fx->st, CFM_MAX_VERSION - 1), CFM_OK);
    assert_int_equal(cfm_store_clock_set(fx->st, CFM_MAX_VERSION), CFM_EINVAL);
    reopen(fx);
    assert_int_equal(cfm_store_clock_get(fx->st, &clock), CFM_OK);
    assert_int_equal(clock, CFM_MAX_VERSION - 1);
    raw_exec(fx, "UPDATE meta SET value = '-1' WHERE key = 'clock'");
    assert_int_equal(cfm_store_clock_get(fx->st, &clock), CFM_ESTORE);
}

static void test_rollback_undoes_put(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *got = NULL;
    uint64_t clock = 0;

    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "small", false);
    assert_int_equal(cfm_store_clock_set(fx->st, 5), CFM_OK);
    cfm_store_rollback(fx->st);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "small", &got),
                     CFM_ENOTFOUND);
    assert_int_equal(cfm_store_clock_get(fx->st, &clock), CFM_OK);
    assert_int_equal(clock, 0);
    /* Harmless outside a transaction and on NULL. */
    cfm_store_rollback(fx->st);
    cfm_store_rollback(NULL);
}

static void test_commit_keeps_put(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *got = NULL;

    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    /* Nested: only the outermost commit reaches sqlite. */
    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "small", false);
    assert_int_equal(cfm_store_commit(fx->st), CFM_OK);
    assert_true(cfm_store_in_txn(fx->st));
    assert_int_equal(cfm_store_commit(fx->st), CFM_OK);
    assert_false(cfm_store_in_txn(fx->st));
    assert_int_equal(cfm_store_commit(fx->st), CFM_EINVAL); /* nothing open */
    reopen(fx);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "small", &got), CFM_OK);
    cfm_obj_free(got);
}

static void test_inner_rollback_undoes_inner_only(void **state)
{
    struct fx *fx = *state;
    struct cfm_obj *got = NULL;

    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "outer", false);
    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "inner", false);
    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "innermost", false);
    assert_int_equal(cfm_store_commit(fx->st), CFM_OK);
    /* Rolling the middle level back takes what it committed inside along. */
    cfm_store_rollback(fx->st);
    assert_true(cfm_store_in_txn(fx->st));
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "inner", &got),
                     CFM_ENOTFOUND);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "innermost", &got),
                     CFM_ENOTFOUND);
    /* The outer level goes on: a new inner level, then its commit. */
    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    put(fx->st, CFM_KIND_VM_CLASS, "shop", "second", false);
    assert_int_equal(cfm_store_commit(fx->st), CFM_OK);
    assert_int_equal(cfm_store_commit(fx->st), CFM_OK);
    assert_false(cfm_store_in_txn(fx->st));
    reopen(fx);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "outer", &got), CFM_OK);
    cfm_obj_free(got);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "second", &got), CFM_OK);
    cfm_obj_free(got);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "inner", &got),
                     CFM_ENOTFOUND);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_CLASS, "innermost", &got),
                     CFM_ENOTFOUND);
}

static void test_kind_writes_change_on_put_and_rollback(void **state)
{
    struct fx *fx = *state;
    uint64_t sys0 = cfm_store_kind_writes(fx->st, CFM_KIND_BUSINESS_SYSTEM);
    uint64_t cls0 = cfm_store_kind_writes(fx->st, CFM_KIND_VM_CLASS), cls1;

    put(fx->st, CFM_KIND_VM_CLASS, "shop", "small", false);
    cls1 = cfm_store_kind_writes(fx->st, CFM_KIND_VM_CLASS);
    assert_true(cls1 != cls0);
    /* Another kind's cache stays valid. */
    assert_true(cfm_store_kind_writes(fx->st, CFM_KIND_BUSINESS_SYSTEM) == sys0);
    /* A rollback may undo anything read inside: every kind changes. */
    assert_int_equal(cfm_store_begin(fx->st), CFM_OK);
    cfm_store_rollback(fx->st);
    assert_true(cfm_store_kind_writes(fx->st, CFM_KIND_BUSINESS_SYSTEM) != sys0);
    assert_true(cfm_store_kind_writes(fx->st, CFM_KIND_VM_CLASS) != cls1);
}

/* --- runs and their journal ------------------------------------------- */

struct runs_seen {
    char text[512];
};

static bool on_run(void *arg, const struct cfm_run_rec *rec)
{
    struct runs_seen *rs = arg;
    size_t n = strlen(rs->text);

    snprintf(rs->text + n, sizeof rs->text - n, "%s%s:%s:%s:%lld:%s", n ? " " : "", rec->id,
             rec->script, rec->state, (long long)rec->deadline_ms, rec->note);
    return true;
}

static bool on_row(void *arg, const struct cfm_journal_row *row)
{
    struct runs_seen *rs = arg;
    size_t n = strlen(rs->text);

    snprintf(rs->text + n, sizeof rs->text - n, "%s%lld:%s:%lld:%lld:%s:%s", n ? " " : "",
             (long long)row->seq, row->what, (long long)row->at, (long long)row->ord,
             row->result ? row->result : "-", row->error ? row->error : "-");
    return true;
}

static void test_runs_and_journal(void **state)
{
    struct fx *fx = *state;
    struct cfm_run_rec rec = {.id = "run-1", .system = "shop", .script = "dr.lua",
                              .hash = "abc", .event = "{}", .started_ms = 10,
                              .deadline_ms = 99, .state = "active", .note = ""};
    struct cfm_journal_row r2 = {.run = "run-1", .seq = 2, .what = "run_vm small", .at = 3,
                                 .ord = 1, .result = "[{\"id\":\"vm-1\"}]"};
    struct cfm_journal_row r1 = {.run = "run-1", .seq = 1, .what = "cfm.now_ms", .at = -1,
                                 .result = "[5]"};
    struct cfm_journal_row other = {.run = "run-2", .seq = 1, .what = "sleep 1", .at = -1,
                                    .deadline_ms = 7};
    struct runs_seen seen = {""};

    assert_int_equal(cfm_store_run_put(fx->st, &rec), CFM_OK);
    rec.id = "run-2";
    rec.started_ms = 20;
    assert_int_equal(cfm_store_run_put(fx->st, &rec), CFM_OK);
    assert_int_equal(cfm_store_journal_put(fx->st, &r2), CFM_OK);
    assert_int_equal(cfm_store_journal_put(fx->st, &r1), CFM_OK);
    assert_int_equal(cfm_store_journal_put(fx->st, &other), CFM_OK);
    reopen(fx);
    assert_int_equal(cfm_store_run_each(fx->st, on_run, &seen), CFM_OK);
    assert_string_equal(seen.text, "run-1:dr.lua:active:99: run-2:dr.lua:active:99:");
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cfm_store_journal_each(fx->st, "run-1", on_row, &seen), CFM_OK);
    assert_string_equal(seen.text,
                        "1:cfm.now_ms:-1:0:[5]:- 2:run_vm small:3:1:[{\"id\":\"vm-1\"}]:-");
    /* A wait's pending row is replaced by its result. */
    other.at = 4;
    other.ord = 2;
    other.deadline_ms = 0;
    other.result = "[]";
    assert_int_equal(cfm_store_journal_put(fx->st, &other), CFM_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cfm_store_journal_each(fx->st, "run-2", on_row, &seen), CFM_OK);
    assert_string_equal(seen.text, "1:sleep 1:4:2:[]:-");
    /* State changes; delete takes the journal along. */
    assert_int_equal(cfm_store_run_set_state(fx->st, "run-2", "changed", "dr.lua changed"),
                     CFM_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cfm_store_run_get(fx->st, "run-2", on_run, &seen), CFM_OK);
    assert_string_equal(seen.text, "run-2:dr.lua:changed:99:dr.lua changed");
    assert_int_equal(cfm_store_run_delete(fx->st, "run-1"), CFM_OK);
    assert_int_equal(cfm_store_run_get(fx->st, "run-1", on_run, &seen), CFM_ENOTFOUND);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cfm_store_journal_each(fx->st, "run-1", on_row, &seen), CFM_OK);
    assert_string_equal(seen.text, "");
    /* Bad input is refused, not stored. */
    rec.id = "a/b";
    assert_int_equal(cfm_store_run_put(fx->st, &rec), CFM_EINVAL);
    r1.seq = 0;
    assert_int_equal(cfm_store_journal_put(fx->st, &r1), CFM_EINVAL);
}

/* --- outbox ------------------------------------------------------------- */

struct box {
    int n;
    int stop_after;         /* -1: never */
    int64_t seq[8];
    char topic[8][64];
    unsigned char payload[8][16];
    size_t len[8];
    int qos[8];
    bool retain[8];
    uint32_t expiry[8];
};

static bool on_msg(void *arg, const struct cfm_outmsg *msg)
{
    struct box *box = arg;
    int i = box->n++;

    assert_true(i < 8);
    assert_non_null(msg->payload);
    assert_true(msg->len <= sizeof box->payload[i]);
    box->seq[i] = msg->seq;
    snprintf(box->topic[i], sizeof box->topic[i], "%s", msg->topic);
    memcpy(box->payload[i], msg->payload, msg->len);
    box->len[i] = msg->len;
    box->qos[i] = msg->qos;
    box->retain[i] = msg->retain;
    box->expiry[i] = msg->expiry_s;
    return box->stop_after < 0 || box->n < box->stop_after;
}

static void outbox_read(struct cfm_store *st, int stop_after, struct box *box)
{
    memset(box, 0, sizeof *box);
    box->stop_after = stop_after;
    assert_int_equal(cfm_store_outbox_each(st, on_msg, box), CFM_OK);
}

static void test_outbox_order_remove_count(void **state)
{
    struct fx *fx = *state;
    struct cfm_outmsg msg = {0, "cfm/v1/a", "one", 3, 1, true, 60};
    int64_t seq[3], count = -1;
    struct box box;

    assert_int_equal(cfm_store_outbox_count(fx->st, &count), CFM_OK);
    assert_int_equal(count, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cfm_store_outbox_add(fx->st, &msg, &seq[i]), CFM_OK);
    assert_true(seq[0] < seq[1] && seq[1] < seq[2]);
    assert_int_equal(cfm_store_outbox_count(fx->st, &count), CFM_OK);
    assert_int_equal(count, 3);

    outbox_read(fx->st, -1, &box);
    assert_int_equal(box.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(box.seq[i], seq[i]);
        assert_string_equal(box.topic[i], "cfm/v1/a");
        assert_int_equal(box.len[i], 3);
        assert_memory_equal(box.payload[i], "one", 3);
        assert_int_equal(box.qos[i], 1);
        assert_true(box.retain[i]);
        assert_int_equal(box.expiry[i], 60);
    }
    outbox_read(fx->st, 1, &box);
    assert_int_equal(box.n, 1);

    assert_int_equal(cfm_store_outbox_remove(fx->st, seq[1]), CFM_OK);
    assert_int_equal(cfm_store_outbox_remove(fx->st, seq[1]), CFM_OK);
    assert_int_equal(cfm_store_outbox_remove(fx->st, 12345), CFM_OK);
    outbox_read(fx->st, -1, &box);
    assert_int_equal(box.n, 2);
    assert_int_equal(box.seq[0], seq[0]);
    assert_int_equal(box.seq[1], seq[2]);

    /* A new seq is above every row present (the newest removed is free
     * again: nothing refers to a removed row), and no sqlite_sequence
     * bookkeeping rides on the insert. */
    assert_int_equal(cfm_store_outbox_add(fx->st, &msg, &seq[1]), CFM_OK);
    assert_true(seq[1] > seq[2]);
    assert_int_equal(cfm_store_outbox_remove(fx->st, seq[1]), CFM_OK);
    assert_int_equal(cfm_store_outbox_add(fx->st, &msg, &seq[1]), CFM_OK);
    assert_true(seq[1] > seq[2] && seq[1] > seq[0]);
    assert_int_equal(cfm_store_outbox_count(fx->st, &count), CFM_OK);
    assert_int_equal(count, 3);

    msg.qos = 3;
    assert_int_equal(cfm_store_outbox_add(fx->st, &msg, NULL), CFM_EINVAL);
    msg.qos = 0;
    msg.len = CFM_MAX_PAYLOAD + 1;
    assert_int_equal(cfm_store_outbox_add(fx->st, &msg, NULL), CFM_ETOOBIG);
}

/* A store of schema version 2 (outbox seq AUTOINCREMENT) opened by this
 * cfm: its outbox rows are kept, in order and whole, and the table no
 * longer uses sqlite_sequence. */
static void test_outbox_migrates_from_version_2(void **state)
{
    struct fx *fx = *state;
    struct cfm_outmsg msg = {0, "cfm/v1/b", "two", 3, 1, false, 0};
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t seq = 0;
    struct box box;

    cfm_store_close(fx->st);
    fx->st = NULL;
    raw_exec(fx, "DROP TABLE outbox;"
                 "CREATE TABLE outbox("
                 "  seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
                 "  payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
                 "  expiry INTEGER NOT NULL);"
                 "INSERT INTO outbox(seq, topic, payload, qos, retain, expiry) VALUES"
                 "  (7, 'cfm/v1/a', x'00016f6e65', 1, 1, 60), (9, 'cfm/v1/c', x'', 0, 0, 0);"
                 "PRAGMA user_version = 2");
    reopen(fx);
    outbox_read(fx->st, -1, &box);
    assert_int_equal(box.n, 2);
    assert_int_equal(box.seq[0], 7);
    assert_string_equal(box.topic[0], "cfm/v1/a");
    assert_int_equal(box.len[0], 5);
    assert_memory_equal(box.payload[0], "\0\1one", 5);
    assert_int_equal(box.qos[0], 1);
    assert_true(box.retain[0]);
    assert_int_equal(box.expiry[0], 60);
    assert_int_equal(box.seq[1], 9);
    assert_int_equal(box.len[1], 0);
    assert_int_equal(cfm_store_outbox_add(fx->st, &msg, &seq), CFM_OK);
    assert_int_equal(seq, 10);

    assert_int_equal(sqlite3_open(fx->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT (SELECT sql FROM sqlite_master WHERE name = 'outbox')"
                                        " LIKE '%AUTOINCREMENT%', (SELECT count(*) FROM"
                                        " sqlite_sequence WHERE name = 'outbox')",
                                        -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 0);
    assert_int_equal(sqlite3_column_int(s, 1), 0);
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_outbox_binary_survives_reopen(void **state)
{
    struct fx *fx = *state;
    static const unsigned char bin[] = {0x00, 'a', 0x00, 0xff, 0x80, 0x00};
    struct cfm_outmsg msg = {0, "cfm/v1/bin", bin, sizeof bin, 2, false, 0};
    struct cfm_outmsg empty = {0, "cfm/v1/empty", NULL, 0, 0, false, UINT32_MAX};
    struct box box;

    assert_int_equal(cfm_store_outbox_add(fx->st, &msg, NULL), CFM_OK);
    assert_int_equal(cfm_store_outbox_add(fx->st, &empty, NULL), CFM_OK);
    reopen(fx);
    outbox_read(fx->st, -1, &box);
    assert_int_equal(box.n, 2);
    assert_int_equal(box.len[0], sizeof bin);
    assert_memory_equal(box.payload[0], bin, sizeof bin);
    assert_int_equal(box.qos[0], 2);
    assert_false(box.retain[0]);
    assert_int_equal(box.len[1], 0);
    assert_string_equal(box.topic[1], "cfm/v1/empty");
    assert_int_equal(box.expiry[1], UINT32_MAX);
}

/* A child commits a message and a put, then dies without closing. */
static void test_outbox_survives_crash(void **state)
{
    struct fx *fx = *state;
    struct cfm_outmsg msg = {0, "cfm/v1/crash", "x", 1, 1, true, 0};
    struct cfm_obj *got = NULL;
    int64_t count = 0;
    int status = 0;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct cfm_store *st = NULL;
        struct cfm_obj *obj;
        bool ok;

        if (cfm_store_open(fx->db, &st, NULL) != CFM_OK)
            _exit(2);
        obj = cfm_obj_new(CFM_KIND_VM_INSTANCE, "shop", "vm1", NULL);
        ok = obj && cfm_store_begin(st) == CFM_OK && cfm_store_put(st, obj) == CFM_OK &&
             cfm_store_outbox_add(st, &msg, NULL) == CFM_OK && cfm_store_commit(st) == CFM_OK;
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    reopen(fx);
    assert_int_equal(cfm_store_outbox_count(fx->st, &count), CFM_OK);
    assert_int_equal(count, 1);
    assert_int_equal(cfm_store_get(fx->st, "shop", CFM_KIND_VM_INSTANCE, "vm1", &got), CFM_OK);
    cfm_obj_free(got);
}

/* --- the WAL's writes (store_vfs.c) ------------------------------------- */

/* Rows of system "big" as sqlite's own VFS reads them, in another
 * connection while the store is open; integrity checked. */
static long raw_count_big(const struct fx *fx)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long n = -1;

    assert_int_equal(sqlite3_open_v2(fx->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM objects WHERE system = 'big'",
                                        -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    n = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return n;
}

/* Puts n objects of ~1 KiB in system "big" (ids from first on), one transaction. */
static bool put_big(struct cfm_store *st, int first, int n)
{
    char id[32], body[1100];
    bool ok = cfm_store_begin(st) == CFM_OK;

    snprintf(body, sizeof body, "{\"pad\": \"%01000d\"}", 7);
    for (int i = first; ok && i < first + n; i++) {
        struct cfm_obj *obj;
        snprintf(id, sizeof id, "vm-%05d", i);
        obj = cfm_obj_new(CFM_KIND_VM_INSTANCE, "big", id, json_loads(body, 0, NULL));
        ok = obj && cfm_store_put(st, obj) == CFM_OK;
        cfm_obj_free(obj);
    }
    return ok && cfm_store_commit(st) == CFM_OK;
}

/* A transaction's frames are written together: one of ~2 MiB (past the
 * VFS's batch and the unix VFS's largest write) and then one of a single
 * page are both in the WAL file for another connection the moment they
 * commit, and both survive a crash. */
static void test_wal_commits_reach_other_connections(void **state)
{
    struct fx *fx = *state;
    int status = 0;
    pid_t pid;

    assert_true(put_big(fx->st, 0, 2000));
    assert_int_equal(raw_count_big(fx), 2000);
    assert_true(put_big(fx->st, 2000, 1));
    assert_int_equal(raw_count_big(fx), 2001);

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct cfm_store *st = NULL;
        if (cfm_store_open(fx->db, &st, NULL) != CFM_OK)
            _exit(2);
        _exit(put_big(st, 3000, 1500) && put_big(st, 5000, 1) ? 0 : 1); /* no close */
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(raw_count_big(fx), 3502);
    reopen(fx);
    assert_int_equal(raw_count_big(fx), 3502);
}

/* --- sites and events --------------------------------------------------- */

static bool on_site(void *arg, const struct cfm_site_rec *rec)
{
    char *out = arg;
    size_t n = strlen(out);

    snprintf(out + n, 256 - n, "%s%s=%s@%s%s", n ? " " : "", rec->site, rec->state,
             rec->last_seen, rec->status);
    return true;
}

static void test_sites_put_each(void **state)
{
    struct fx *fx = *state;
    struct cfm_site_rec b = {"site-b", "online", "2026-11-22T10:00:00.000Z", "{}"};
    struct cfm_site_rec a = {"site-a", "online", "2026-11-22T10:00:00.000Z", "{\"cpu\":4}"};
    char out[256] = "";

    assert_int_equal(cfm_store_site_put(fx->st, &b), CFM_OK);
    assert_int_equal(cfm_store_site_put(fx->st, &a), CFM_OK);
    a.state = "offline";
    a.last_seen = "2026-11-22T11:00:00.000Z";
    assert_int_equal(cfm_store_site_put(fx->st, &a), CFM_OK);
    assert_int_equal(cfm_store_site_each(fx->st, on_site, out), CFM_OK);
    assert_string_equal(out, "site-a=offline@2026-11-22T11:00:00.000Z{\"cpu\":4} "
                             "site-b=online@2026-11-22T10:00:00.000Z{}");
    a.site = NULL;
    assert_int_equal(cfm_store_site_put(fx->st, &a), CFM_EINVAL);
}

static void test_event_mark(void **state)
{
    struct fx *fx = *state;
    bool already = true;

    assert_int_equal(cfm_store_event_mark(fx->st, "ev-1", "shop", "dr", &already), CFM_OK);
    assert_false(already);
    assert_int_equal(cfm_store_event_mark(fx->st, "ev-1", "shop", "dr", &already), CFM_OK);
    assert_true(already);
    reopen(fx);
    assert_int_equal(cfm_store_event_mark(fx->st, "ev-1", "shop", "dr", &already), CFM_OK);
    assert_true(already);
    assert_int_equal(cfm_store_event_mark(fx->st, "ev-2", "shop", "dr", &already), CFM_OK);
    assert_false(already);
    assert_int_equal(cfm_store_event_mark(fx->st, NULL, "shop", "dr", &already), CFM_EINVAL);
}

/* Marks ids "ev-<i>" for i in [from, to), each received at `at`. */
static void mark_at(const struct fx *fx, int from, int to, const char *at)
{
    char sql[256];

    for (int i = from; i < to; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO seen_events(id, system, type, received) VALUES ('ev-%d', 'shop', "
                 "'dr', '%s')", i, at);
        raw_exec(fx, sql);
    }
}

/* Old records go, the oldest first and at most max at a time; newer ones
 * stay; a forgotten id is new again. */
static void test_events_trim(void **state)
{
    struct fx *fx = *state;
    bool already = true;
    int deleted = -1;

    mark_at(fx, 0, 5, "2026-01-01T00:00:00.000Z");
    mark_at(fx, 5, 7, "2026-06-01T00:00:00.000Z");
    assert_int_equal(cfm_store_events_trim(fx->st, "2026-03-01T00:00:00.000Z", 3, &deleted),
                     CFM_OK);
    assert_int_equal(deleted, 3);
    assert_int_equal(cfm_store_events_trim(fx->st, "2026-03-01T00:00:00.000Z", 3, &deleted),
                     CFM_OK);
    assert_int_equal(deleted, 2); /* fewer than max: caught up */
    assert_int_equal(cfm_store_events_trim(fx->st, "2026-03-01T00:00:00.000Z", 3, &deleted),
                     CFM_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(cfm_store_event_mark(fx->st, "ev-0", "shop", "dr", &already), CFM_OK);
    assert_false(already); /* forgotten */
    assert_int_equal(cfm_store_event_mark(fx->st, "ev-6", "shop", "dr", &already), CFM_OK);
    assert_true(already); /* newer than the cut: kept */
    assert_int_equal(cfm_store_events_trim(fx->st, "2026-03-01T00:00:00.000Z", 0, &deleted),
                     CFM_EINVAL);
    assert_int_equal(cfm_store_events_trim(fx->st, NULL, 3, &deleted), CFM_EINVAL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_creates_schema),
        T(test_reopen_keeps_data),
        T(test_newer_schema_refused),
        T(test_open_missing_dir_fails),
        T(test_put_get_round_trip),
        T(test_body_stored_compact_sorted),
        T(test_get_missing),
        T(test_put_replaces),
        T(test_bad_arguments),
        T(test_each_filters),
        T(test_each_early_stop),
        T(test_each_after_batches),
        T(test_tombstones_hidden),
        T(test_each_reentry_refused),
        T(test_damaged_rows_skipped),
        T(test_clock_persists),
        T(test_rollback_undoes_put),
        T(test_commit_keeps_put),
        T(test_inner_rollback_undoes_inner_only),
        T(test_kind_writes_change_on_put_and_rollback),
        T(test_runs_and_journal),
        T(test_outbox_order_remove_count),
        T(test_outbox_migrates_from_version_2),
        T(test_outbox_binary_survives_reopen),
        T(test_outbox_survives_crash),
        T(test_wal_commits_reach_other_connections),
        T(test_sites_put_each),
        T(test_event_mark),
        T(test_events_trim),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
