/*
 * store_agree.c - cfm-bench-agree: waits until the stores of some sites hold
 * exactly the objects of one system that a reference site holds, and says
 * when each got there. It is how the benchmarks see "applied": an object is
 * applied at a site when the site's manager has committed it to its SQLite
 * store, so the tool reads the stores themselves, read-only.
 *
 * Why not ask the managers: `cfmctl objects list` of 10,000 objects makes
 * the manager serialize ~2 MB of JSON on its only thread while it is still
 * applying, so polling it slows down the very thing being timed. A WAL
 * reader never blocks the manager's writes (docs/store.md), and one cheap
 * query per poll (count and sum of versions of the system's rows) costs
 * about a millisecond.
 *
 * "Agree" is exact: each store must list the same (kind, id, version,
 * origin) as the reference, tombstones included; the cheap query only
 * decides when the exact comparison is worth making. The reference is read
 * once, at start: the caller starts the tool after the reference site has
 * finished writing. Times are wall-clock (CLOCK_REALTIME) seconds since
 * --since (bash's $EPOCHREALTIME when the timed step began), so they can
 * start before this process did.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DBS 8
#define MAX_ROWS 1000000
#define MAX_KEY 160          /* "<kind>/<id>/<origin>": kinds are short, IDs at most 64 */
#define BUSY_TIMEOUT_MS 1000

#define SQL_SUMMARY "SELECT count(*), total(version) FROM objects WHERE system = ?1"
#define SQL_ROWS                                                                      \
    "SELECT kind, id, version, origin FROM objects WHERE system = ?1 ORDER BY kind, id"

static const char usage[] =
    "usage: cfm-bench-agree --system ID --ref DB [--since EPOCH-SECONDS] [--timeout SECONDS]\n"
    "                       [--poll-ms MS] DB...\n";

struct row {
    char key[MAX_KEY];   /* kind/id/origin */
    int64_t version;
};

struct snapshot {
    struct row *rows;
    size_t n;
    double total;        /* sum of versions */
};

struct site {
    const char *path;
    sqlite3 *db;
    sqlite3_stmt *summary;
    bool agreed;
    double at;           /* seconds since --since */
    int64_t last_count;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("cfm-bench-agree: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static double wall_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double parse_double(const char *text, const char *what, double min, double max)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max))
        die("%s: '%s' is not a number from %g to %g", what, text, min, max);
    return v;
}

/* Opens path read-only; the caller closes the connection (dies on failure). */
static sqlite3 *open_db(const char *path)
{
    sqlite3 *db = NULL;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        die("%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    return db;
}

/* Returns a new statement bound to system (borrowed: it must outlive the
 * statement); the caller finalizes it. */
static sqlite3_stmt *prepare(sqlite3 *db, const char *path, const char *sql, const char *system)
{
    sqlite3_stmt *s = NULL;

    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_bind_text(s, 1, system, -1, SQLITE_STATIC) != SQLITE_OK)
        die("%s: %s", path, sqlite3_errmsg(db));
    return s;
}

/* Reads every (kind, id, version, origin) of system, in key order, into
 * out->rows (new; the caller frees it). On a busy or locked store returns
 * false and leaves *out empty: the caller tries again. */
static bool read_rows(sqlite3 *db, const char *path, const char *system, struct snapshot *out)
{
    sqlite3_stmt *s = prepare(db, path, SQL_ROWS, system);
    size_t cap = 0;
    int rc;

    memset(out, 0, sizeof *out);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct row *r;
        int n;

        if (out->n == cap) {
            cap = cap ? cap * 2 : 1024;
            if (cap > MAX_ROWS)
                die("%s: more than %d objects in the system", path, MAX_ROWS);
            out->rows = realloc(out->rows, cap * sizeof *out->rows);
            if (!out->rows)
                die("out of memory");
        }
        r = &out->rows[out->n++];
        n = snprintf(r->key, sizeof r->key, "%s/%s/%s", (const char *)sqlite3_column_text(s, 0),
                     (const char *)sqlite3_column_text(s, 1),
                     (const char *)sqlite3_column_text(s, 3));
        if (n < 0 || (size_t)n >= sizeof r->key)
            die("%s: a key longer than %d bytes", path, MAX_KEY - 1);
        r->version = sqlite3_column_int64(s, 2);
        out->total += (double)r->version;
    }
    sqlite3_finalize(s);
    if (rc == SQLITE_DONE)
        return true;
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
        die("%s: %s", path, sqlite3_errmsg(db));
    free(out->rows);
    memset(out, 0, sizeof *out);
    return false;
}

static bool same(const struct snapshot *a, const struct snapshot *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->rows[i].version != b->rows[i].version || strcmp(a->rows[i].key, b->rows[i].key))
            return false;
    return true;
}

/* One look at a site: the cheap summary first, the exact rows when it matches. */
static bool agrees(struct site *s, const char *system, const struct snapshot *ref)
{
    struct snapshot mine;
    int64_t count;
    double total;
    bool equal;
    int rc = sqlite3_step(s->summary);

    if (rc != SQLITE_ROW) {
        sqlite3_reset(s->summary);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
            return false;
        die("%s: %s", s->path, sqlite3_errmsg(s->db));
    }
    count = sqlite3_column_int64(s->summary, 0);
    total = sqlite3_column_double(s->summary, 1);
    sqlite3_reset(s->summary);
    s->last_count = count;
    if ((size_t)count != ref->n || total != ref->total)
        return false;
    if (!read_rows(s->db, s->path, system, &mine))
        return false;
    equal = same(&mine, ref);
    free(mine.rows);
    return equal;
}

int main(int argc, char **argv)
{
    struct site sites[MAX_DBS];
    const char *system = NULL, *ref_path = NULL;
    double since = 0, timeout_s = 60, poll_ms = 20, deadline, last = 0;
    struct timespec slice;
    struct snapshot ref;
    sqlite3 *ref_db;
    int n = 0, i;
    bool all;

    memset(sites, 0, sizeof sites);
    for (i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (opt[0] != '-') {
            if (n == MAX_DBS)
                die("at most %d stores", MAX_DBS);
            sites[n++].path = opt;
            continue;
        }
        if (!val)
            die("%s needs a value\n%s", opt, usage);
        i++;
        if (strcmp(opt, "--system") == 0)
            system = val;
        else if (strcmp(opt, "--ref") == 0)
            ref_path = val;
        else if (strcmp(opt, "--since") == 0)
            since = parse_double(val, opt, 0, 1e11);
        else if (strcmp(opt, "--timeout") == 0)
            timeout_s = parse_double(val, opt, 0.001, 3600);
        else if (strcmp(opt, "--poll-ms") == 0)
            poll_ms = parse_double(val, opt, 1, 10000);
        else
            die("unknown option %s\n%s", opt, usage);
    }
    if (!system || !ref_path || n == 0)
        die("needs --system, --ref and at least one store\n%s", usage);
    if (since == 0)
        since = wall_s();
    deadline = wall_s() + timeout_s;

    ref_db = open_db(ref_path);
    while (!read_rows(ref_db, ref_path, system, &ref))
        if (wall_s() >= deadline)
            die("%s: busy for %g s", ref_path, timeout_s);
    sqlite3_close(ref_db);
    if (ref.n == 0)
        die("%s holds no object of system %s", ref_path, system);
    for (i = 0; i < n; i++) {
        sites[i].db = open_db(sites[i].path);
        sites[i].summary = prepare(sites[i].db, sites[i].path, SQL_SUMMARY, system);
    }

    slice.tv_sec = (time_t)(poll_ms / 1000);
    slice.tv_nsec = (long)((poll_ms - (double)slice.tv_sec * 1000) * 1e6);
    for (;;) {
        all = true;
        for (i = 0; i < n; i++) {
            if (!sites[i].agreed && agrees(&sites[i], system, &ref)) {
                sites[i].agreed = true;
                sites[i].at = wall_s() - since;
            }
            all = all && sites[i].agreed;
        }
        if (all || wall_s() >= deadline)
            break;
        nanosleep(&slice, NULL);
    }
    if (!all) {
        for (i = 0; i < n; i++)
            fprintf(stderr, "cfm-bench-agree: %s: %s (%lld of %zu objects)\n", sites[i].path,
                    sites[i].agreed ? "agrees" : "differs", (long long)sites[i].last_count,
                    ref.n);
        die("the stores did not agree with %s within %g s", ref_path, timeout_s);
    }
    printf("agree: objects=%zu", ref.n);
    for (i = 0; i < n; i++) {
        printf(" db%d=%.3f", i + 1, sites[i].at);
        if (sites[i].at > last)
            last = sites[i].at;
    }
    printf(" seconds=%.3f\n", last);
    for (i = 0; i < n; i++) {
        sqlite3_finalize(sites[i].summary);
        sqlite3_close(sites[i].db);
    }
    free(ref.rows);
    return 0;
}
