/*
 * modes.c - what each mode of cfm-svc answers, once conn.c has a whole
 * request: web (a greeting, /health, /kv passed on to the db), lb (every
 * request to the next backend, round-robin, from a file it re-reads when it
 * changes) and db (values in files of one directory).
 *
 * The lb's backends file is the one ConfigTemplate lb-conf renders: lines
 * "server NAME IP:PORT", blank lines and # comments ignored. It is checked
 * on every request and once a second, by its identity (device, inode,
 * size, mtime), so an atomic rewrite by the agent is seen at once. A
 * missing file means no backends.
 *
 * The db writes a value to a temporary file, fsyncs it, renames it over
 * the key and fsyncs the directory: after a crash a key holds its old or
 * its new value, never half of one. Those fsyncs run on the loop; for a
 * demo database that is the honest price of durability.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "svc.h"

#define TMP_PREFIX ".tmp."
#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
#define MAX_LINE 512

static bool path_is(const struct cfm_svc_req *r, const char *path)
{
    size_t n = strlen(path);

    return r->path_len == n && memcmp(r->target, path, n) == 0;
}

static bool method_is(const struct cfm_svc_req *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

/* "/kv/KEY": 1 with key filled, 0 for another path, -1 for a bad key.
 * Keys are [A-Za-z0-9_.-]{1,64} and do not start with '.', so "." and
 * ".." never name a key and temporary files never clash with one. */
static int kv_key(const struct cfm_svc_req *r, char key[CFM_SVC_MAX_NAME + 1])
{
    size_t n;

    if (r->path_len < 4 || memcmp(r->target, "/kv/", 4) != 0)
        return 0;
    n = r->path_len - 4;
    if (n < 1 || n > CFM_SVC_MAX_NAME || r->target[4] == '.')
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!strchr(NAME_CHARS, r->target[4 + i]))
            return -1;
    memcpy(key, r->target + 4, n);
    key[n] = '\0';
    return 1;
}

/* A stored file name that is a key (not a temporary file). */
static bool valid_key(const char *name)
{
    size_t n = strlen(name);

    return n >= 1 && n <= CFM_SVC_MAX_NAME && name[0] != '.' && strspn(name, NAME_CHARS) == n;
}

static void bad_key(const struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    cfm_svc_respondf(svc, c, 400, "a key is [A-Za-z0-9_.-]{1,64}, not starting with '.'\n");
}

static void not_allowed(const struct cfm_svc *svc, struct cfm_svc_conn *c, const char *allow)
{
    cfm_svc_respondf(svc, c, 405, "%s %.*s: only %s\n", c->req.method, (int)c->req.path_len,
                     c->req.target, allow);
}

/* A health check may name the instance it means: GET /health?instance=NAME
 * (the procedures' checks do). An address is handed out again as soon as
 * its VM is gone, while that VM's service may still be shutting down, and
 * sites can share addresses: without the name, whatever answers at the
 * address would pass for the service just started. Answers 421 and returns
 * true when NAME is not this service's --name. */
static bool not_this_instance(const struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    const char *q = c->req.target + c->req.path_len, *v, *end;
    size_t n;

    for (q = *q == '?' ? q + 1 : NULL; q && *q; q = *end ? end + 1 : NULL) {
        end = q + strcspn(q, "&");
        if ((size_t)(end - q) < 9 || memcmp(q, "instance=", 9) != 0)
            continue;
        v = q + 9;
        n = (size_t)(end - v);
        if (n == strlen(svc->name) && memcmp(v, svc->name, n) == 0)
            return false;
        cfm_svc_respondf(svc, c, 421, "this is %s, not %.*s\n", svc->name,
                         (int)(n > CFM_SVC_MAX_NAME ? CFM_SVC_MAX_NAME : n), v);
        return true;
    }
    return false;
}

/* ---- lb ---------------------------------------------------------------- */

/* Parses the backends file into list; bad lines are logged and skipped. */
static size_t parse_backends(const struct cfm_svc *svc, char *text, struct cfm_svc_backend *list)
{
    size_t n = 0, lineno = 0;
    char *next;

    for (char *line = text; line && *line; line = next) {
        char *words[4], *wsave = NULL;
        size_t nw = 0;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        line[strcspn(line, "#")] = '\0';
        for (char *w = strtok_r(line, " \t\r", &wsave); w && nw < 4;
             w = strtok_r(NULL, " \t\r", &wsave))
            words[nw++] = w;
        if (nw == 0)
            continue;
        if (n == CFM_SVC_MAX_BACKENDS) {
            cfm_svc_log(svc, "%s: more than %d backends; the rest are ignored", svc->backends_path,
                        CFM_SVC_MAX_BACKENDS);
            break;
        }
        if (nw != 3 || strcmp(words[0], "server") != 0 || strlen(words[1]) > CFM_SVC_MAX_NAME ||
            strspn(words[1], NAME_CHARS) != strlen(words[1]) ||
            !cfm_svc_parse_addr(words[2], &list[n].addr)) {
            cfm_svc_log(svc, "%s:%zu: expected 'server NAME IP:PORT'; line skipped",
                        svc->backends_path, lineno);
            continue;
        }
        memcpy(list[n].name, words[1], strlen(words[1]) + 1);
        n++;
    }
    return n;
}

static void set_backends(struct cfm_svc *svc, const struct cfm_svc_backend *list, size_t n)
{
    char names[512] = "";
    size_t len = 0;

    memcpy(svc->backends, list, n * sizeof *list);
    svc->nbackends = n;
    for (size_t i = 0; i < n && len < sizeof names; i++) {
        int w = snprintf(names + len, sizeof names - len, " %s", list[i].name);

        if (w < 0)
            break;
        len += (size_t)w; /* past the end when cut: the loop stops */
    }
    cfm_svc_log(svc, "%zu backends from %s:%s", n, svc->backends_path, names);
}

void cfm_svc_lb_refresh(struct cfm_svc *svc, bool force)
{
    struct cfm_svc_backend list[CFM_SVC_MAX_BACKENDS];
    int64_t now = cfm_svc_now_ms();
    struct stat st;
    char *text = NULL;
    ssize_t got = 0;
    int fd = -1;

    if (!force && now < svc->backends_checked_ms + 1000)
        return;
    svc->backends_checked_ms = now;
    if (stat(svc->backends_path, &st) != 0) {
        if (!svc->backends_known || !svc->backends_missing)
            cfm_svc_log(svc, "%s: %s; no backends", svc->backends_path, strerror(errno));
        svc->backends_known = svc->backends_missing = true;
        svc->nbackends = 0;
        return;
    }
    if (svc->backends_known && !svc->backends_missing && st.st_dev == svc->backends_dev &&
        st.st_ino == svc->backends_ino && st.st_size == svc->backends_size &&
        st.st_mtim.tv_sec == svc->backends_mtime.tv_sec &&
        st.st_mtim.tv_nsec == svc->backends_mtime.tv_nsec)
        return;
    svc->backends_known = true;
    svc->backends_missing = false;
    svc->backends_dev = st.st_dev;
    svc->backends_ino = st.st_ino;
    svc->backends_size = st.st_size;
    svc->backends_mtime = st.st_mtim;
    if (st.st_size > (off_t)CFM_SVC_MAX_BACKENDS_FILE) {
        cfm_svc_log(svc, "%s: over %u bytes; backends unchanged", svc->backends_path,
                    CFM_SVC_MAX_BACKENDS_FILE);
        return;
    }
    text = malloc(CFM_SVC_MAX_BACKENDS_FILE + 1);
    fd = open(svc->backends_path, O_RDONLY | O_CLOEXEC);
    if (!text || fd < 0) {
        cfm_svc_log(svc, "%s: %s; backends unchanged", svc->backends_path,
                    text ? strerror(errno) : "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, text + got, CFM_SVC_MAX_BACKENDS_FILE - (size_t)got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cfm_svc_log(svc, "%s: %s; backends unchanged", svc->backends_path, strerror(errno));
            goto out;
        }
        if (n == 0 || (got += n) == (ssize_t)CFM_SVC_MAX_BACKENDS_FILE)
            break;
    }
    text[got] = '\0';
    set_backends(svc, list, parse_backends(svc, text, list));
out:
    if (fd >= 0)
        close(fd);
    free(text);
}

static void lb_list(const struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    const size_t line_max = CFM_SVC_MAX_NAME + CFM_SVC_MAX_ADDR + 16;
    char *body = malloc(CFM_SVC_MAX_BACKENDS * line_max);
    size_t len = 0;

    if (!body) {
        cfm_svc_respondf(svc, c, 500, "out of memory\n");
        return;
    }
    for (size_t i = 0; i < svc->nbackends; i++) {
        int n = snprintf(body + len, line_max, "server %s %s\n", svc->backends[i].name,
                         svc->backends[i].addr.text);

        if (n < 0 || (size_t)n >= line_max) { /* cannot be: names and addresses are bounded */
            cfm_svc_respondf(svc, c, 500, "backend %zu does not fit\n", i);
            free(body);
            return;
        }
        len += (size_t)n;
    }
    cfm_svc_respond(svc, c, 200, "text/plain; charset=utf-8", body, len);
    free(body);
}

/* ---- db ---------------------------------------------------------------- */

static void db_get(const struct cfm_svc *svc, struct cfm_svc_conn *c, const char *key)
{
    int fd = openat(svc->data_fd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat st;
    char *body = NULL;
    size_t got = 0;

    if (fd < 0) {
        if (errno == ENOENT)
            cfm_svc_respondf(svc, c, 404, "no key %s\n", key);
        else
            cfm_svc_respondf(svc, c, 500, "cannot open %s: %s\n", key, strerror(errno));
        return;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)CFM_SVC_MAX_BODY) {
        cfm_svc_respondf(svc, c, 500, "%s is not a value of at most %u bytes\n", key,
                         CFM_SVC_MAX_BODY);
        goto out;
    }
    body = malloc((size_t)st.st_size + 1);
    if (!body) {
        cfm_svc_respondf(svc, c, 500, "out of memory\n");
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, body + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cfm_svc_respondf(svc, c, 500, "cannot read %s: %s\n", key, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    cfm_svc_respond(svc, c, 200, "application/octet-stream", body, got);
out:
    free(body);
    close(fd);
}

static bool write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* Stores value under key atomically (temp + fsync + rename); on failure
 * errno says why and *step which step failed. */
static bool store_value(const struct cfm_svc *svc, const char *key, const char *value, size_t len,
                        const char **step)
{
    static unsigned counter;
    char tmp[64];
    int fd, e;

    *step = "name";
    e = snprintf(tmp, sizeof tmp, TMP_PREFIX "%ld.%u", (long)getpid(), counter++);
    if (e < 0 || (size_t)e >= sizeof tmp)
        return false;
    *step = "create";
    fd = openat(svc->data_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return false;
    *step = "write";
    if (!write_all(fd, value, len))
        goto fail;
    *step = "fsync";
    if (fsync(fd) != 0)
        goto fail;
    *step = "close";
    e = close(fd);
    fd = -1;
    if (e != 0)
        goto fail;
    *step = "rename";
    if (renameat(svc->data_fd, tmp, svc->data_fd, key) != 0)
        goto fail;
    if (fsync(svc->data_fd) != 0) /* the value is there; only its durability is in doubt */
        cfm_svc_log(svc, "fsync of %s after storing %s: %s", svc->data_path, key, strerror(errno));
    return true;
fail:
    e = errno;
    if (fd >= 0)
        close(fd);
    unlinkat(svc->data_fd, tmp, 0);
    errno = e;
    return false;
}

bool cfm_svc_db_store(struct cfm_svc *svc, const char *key, const char *value, size_t len)
{
    const char *step;

    if (!store_value(svc, key, value, len, &step)) {
        cfm_svc_log(svc, "cannot store %s: %s: %s", key, step, strerror(errno));
        return false;
    }
    return true;
}

static void db_put(const struct cfm_svc *svc, struct cfm_svc_conn *c, const char *key)
{
    struct stat st;
    bool existed = fstatat(svc->data_fd, key, &st, AT_SYMLINK_NOFOLLOW) == 0;
    const char *step;

    if (!store_value(svc, key, c->req.body, c->req.body_len, &step)) {
        cfm_svc_respondf(svc, c, 500, "cannot store %s: %s: %s\n", key, step, strerror(errno));
        return;
    }
    if (svc->has_replica && !cfm_svc_replicate((struct cfm_svc *)svc, key, c->req.body,
                                               c->req.body_len))
        cfm_svc_log(svc, "%s stored here but not at the replica %s", key, svc->replica.text);
    cfm_svc_respondf(svc, c, existed ? 200 : 201, "%s %s (%zu bytes)\n",
                     existed ? "replaced" : "created", key, c->req.body_len);
}

/* GET /keys: every key, one per line (what a new replica copies). */
static void db_keys(const struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    struct cfm_svc_buf out = {0};
    struct dirent *d;
    int fd = dup(svc->data_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;

    if (!dir) {
        if (fd >= 0)
            close(fd);
        cfm_svc_respondf(svc, c, 500, "cannot list %s: %s\n", svc->data_path, strerror(errno));
        return;
    }
    rewinddir(dir);
    while ((d = readdir(dir))) {
        if (d->d_name[0] == '.' || !valid_key(d->d_name))
            continue;
        if (!cfm_svc_buf_addf(&out, CFM_SVC_MAX_BODY, "%s\n", d->d_name))
            break;
    }
    closedir(dir);
    cfm_svc_respond(svc, c, 200, "text/plain", out.data ? out.data : "", out.len);
    free(out.data);
}

/* Makes DIR and its missing parents, like mkdir -p. */
static bool make_dirs(const char *dir)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);

    if (n == 0 || n >= sizeof path)
        return false;
    memcpy(path, dir, n + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return false;
        *p = '/';
    }
    return mkdir(path, 0755) == 0 || errno == EEXIST;
}

/* Temporary files a crash left behind are removed at start. */
static void remove_leftovers(const struct cfm_svc *svc)
{
    int fd = dup(svc->data_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *e;

    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((e = readdir(d)))
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0 &&
            unlinkat(svc->data_fd, e->d_name, 0) == 0)
            cfm_svc_log(svc, "removed %s/%s, left by an interrupted write", svc->data_path,
                        e->d_name);
    closedir(d);
}

/* ---- the modes --------------------------------------------------------- */

bool cfm_svc_start_mode(struct cfm_svc *svc)
{
    if (svc->mode == CFM_SVC_LB) {
        cfm_svc_lb_refresh(svc, true);
        return true;
    }
    if (svc->mode != CFM_SVC_DB)
        return true;
    if (!make_dirs(svc->data_path) ||
        (svc->data_fd = open(svc->data_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        cfm_svc_log(svc, "--data %s: %s", svc->data_path, strerror(errno));
        return false;
    }
    remove_leftovers(svc);
    /* A new primary or replica starts from another db's data, before it
     * answers anything. */
    if (svc->has_sync && !cfm_svc_sync_from(svc, &svc->sync_from))
        return false;
    return true;
}

void cfm_svc_stop_mode(struct cfm_svc *svc)
{
    if (svc->data_fd >= 0)
        close(svc->data_fd);
    svc->data_fd = -1;
}

bool cfm_svc_pick_upstream(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    const struct cfm_svc_backend *b;

    if (svc->mode == CFM_SVC_WEB) {
        if (!svc->has_db || c->up_tries > 0)
            return false;
        c->up_addr = svc->db;
        memcpy(c->backend, "db", 3);
        return true;
    }
    if (c->up_tries >= svc->nbackends)
        return false;
    if (c->up_tries == 0)
        c->up_first = svc->rr++;
    b = &svc->backends[(c->up_first + c->up_tries) % svc->nbackends];
    c->up_addr = b->addr;
    memcpy(c->backend, b->name, sizeof c->backend);
    return true;
}

void cfm_svc_no_upstream(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    if (svc->mode == CFM_SVC_WEB) {
        cfm_svc_respondf(svc, c, 502, "database unreachable: %s\n", c->up_why);
        return;
    }
    c->backend[0] = '\0';
    if (c->up_tries == 0)
        cfm_svc_respondf(svc, c, 503, "no backends: %s lists none\n", svc->backends_path);
    else
        cfm_svc_respondf(svc, c, 503, "no backend answered (%zu tried); last: %s\n", c->up_tries,
                         c->up_why);
}

static void handle_web(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    const struct cfm_svc_req *r = &c->req;
    char key[CFM_SVC_MAX_NAME + 1];
    int kv = kv_key(r, key);

    if (path_is(r, "/") || path_is(r, "/health")) {
        if (!method_is(r, "GET"))
            not_allowed(svc, c, "GET");
        else if (path_is(r, "/"))
            cfm_svc_respondf(svc, c, 200, "hello from %s\n", svc->name);
        else if (!not_this_instance(svc, c))
            cfm_svc_respondf(svc, c, 200, "ok\n");
    } else if (kv < 0) {
        bad_key(svc, c);
    } else if (kv > 0 && !method_is(r, "GET") && !method_is(r, "PUT")) {
        not_allowed(svc, c, "GET and PUT");
    } else if (kv > 0 && !svc->has_db) {
        cfm_svc_respondf(svc, c, 404, "web %s has no database (no --db)\n", svc->name);
    } else if (kv > 0) {
        cfm_svc_proxy(svc, c, false);
    } else {
        cfm_svc_respondf(svc, c, 404, "no such page\n");
    }
}

static void handle_db(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    const struct cfm_svc_req *r = &c->req;
    char key[CFM_SVC_MAX_NAME + 1];
    int kv = kv_key(r, key);

    if (path_is(r, "/health")) {
        if (!method_is(r, "GET"))
            not_allowed(svc, c, "GET");
        else if (!not_this_instance(svc, c))
            cfm_svc_respondf(svc, c, 200, "ok\n");
    } else if (path_is(r, "/keys") && method_is(r, "GET")) {
        db_keys(svc, c);
    } else if (kv < 0) {
        bad_key(svc, c);
    } else if (kv > 0 && method_is(r, "GET")) {
        db_get(svc, c, key);
    } else if (kv > 0 && method_is(r, "PUT")) {
        db_put(svc, c, key);
    } else if (kv > 0) {
        not_allowed(svc, c, "GET and PUT");
    } else {
        cfm_svc_respondf(svc, c, 404, "no such page\n");
    }
}

void cfm_svc_handle(struct cfm_svc *svc, struct cfm_svc_conn *c)
{
    switch (svc->mode) {
    case CFM_SVC_WEB: handle_web(svc, c); break;
    case CFM_SVC_DB: handle_db(svc, c); break;
    case CFM_SVC_LB:
        cfm_svc_lb_refresh(svc, true);
        if (path_is(&c->req, "/lb/backends")) {
            if (!method_is(&c->req, "GET"))
                not_allowed(svc, c, "GET");
            else if (!not_this_instance(svc, c))
                lb_list(svc, c);
            return;
        }
        cfm_svc_proxy(svc, c, true);
        break;
    }
}
