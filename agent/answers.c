/*
 * answers.c - the agent's memory of what it answered, so that a request
 * delivered twice (QoS 1 may), or sent again by a manager that restarted,
 * is run once.
 *
 * Each answer is a file <dir>/<id>.json holding the exact text published,
 * written atomically (files.c), so it survives the agent; an index in
 * memory lists them oldest first (by file time at start-up) and keeps the
 * text of the newest ones up to CFM_AGENT_ANSWERS_MEM bytes, the others
 * being read back from disk when asked for. The newest
 * CFM_AGENT_ANSWERS_KEPT answers are kept, within CFM_AGENT_ANSWERS_DISK
 * bytes; older files are removed as new ones come.
 *
 * A command in flight has a mark <dir>/<id>.running. A mark found at
 * start-up means the agent died while that command ran: the command may
 * have had its effect, so it is answered "outcome unknown" rather than run
 * a second time.
 */
#include "answers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bounds.h"
#include "files.h"
#include "id.h"
#include "log.h"
#include "text.h"

#define ANSWER_EXT ".json"
#define RUNNING_EXT ".running"

struct entry {
    char id[CFM_MAX_ID + 1];
    size_t size;
    char *text;      /* NULL when only on disk */
    bool on_disk;
    bool forgettable; /* kept in memory only, by choice: its request may be made again */
    int64_t mtime_ns; /* for the order at start-up */
};

struct cfm_agent_answers {
    char dir[PATH_MAX];
    size_t keep;
    struct entry *e; /* oldest first */
    size_t n, cap;
    size_t mem, disk;
};

static bool file_of(const struct cfm_agent_answers *a, const char *id, const char *ext,
                    char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s%s", a->dir, id, ext);

    return n >= 0 && (size_t)n < size;
}

static void drop_text(struct cfm_agent_answers *a, struct entry *e)
{
    if (!e->text)
        return;
    a->mem -= e->size;
    free(e->text);
    e->text = NULL;
}

static void remove_at(struct cfm_agent_answers *a, size_t i, bool unlink_file)
{
    char path[PATH_MAX];

    if (unlink_file && a->e[i].on_disk && file_of(a, a->e[i].id, ANSWER_EXT, path, sizeof path) &&
        unlink(path) != 0 && errno != ENOENT)
        cfm_warn("answers", "cannot remove %s: %s", path, strerror(errno));
    if (a->e[i].on_disk)
        a->disk -= a->e[i].size;
    drop_text(a, &a->e[i]);
    memmove(&a->e[i], &a->e[i + 1], (a->n - i - 1) * sizeof *a->e);
    a->n--;
}

/* Forgets the oldest answers over the bounds; the newest always stays. */
static void evict(struct cfm_agent_answers *a)
{
    while (a->n > 1 && (a->n > a->keep || a->disk > CFM_AGENT_ANSWERS_DISK))
        remove_at(a, 0, true);
    for (size_t i = 0; a->mem > CFM_AGENT_ANSWERS_MEM && i + 1 < a->n;) {
        if (a->e[i].forgettable) {
            remove_at(a, i, false);
            continue;
        }
        if (a->e[i].on_disk)
            drop_text(a, &a->e[i]);
        i++;
    }
}

static struct entry *find(struct cfm_agent_answers *a, const char *id)
{
    for (size_t i = a->n; i-- > 0;) /* the newest are asked for most */
        if (strcmp(a->e[i].id, id) == 0)
            return &a->e[i];
    return NULL;
}

static struct entry *append(struct cfm_agent_answers *a, const char *id)
{
    struct entry *e;

    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        struct entry *grown = realloc(a->e, cap * sizeof *grown);
        if (!grown)
            return NULL;
        a->e = grown;
        a->cap = cap;
    }
    e = &a->e[a->n++];
    memset(e, 0, sizeof *e);
    memcpy(e->id, id, strlen(id) + 1);
    return e;
}

static int by_time(const void *l, const void *r)
{
    const struct entry *a = l, *b = r;

    if (a->mtime_ns != b->mtime_ns)
        return a->mtime_ns < b->mtime_ns ? -1 : 1;
    return strcmp(a->id, b->id);
}

/* The id of a file name "<id><ext>" into id, if it is one. */
static bool id_of(const char *name, const char *ext, char id[CFM_MAX_ID + 1])
{
    size_t n = strlen(name), el = strlen(ext);

    if (n <= el || n - el > CFM_MAX_ID || strcmp(name + n - el, ext) != 0)
        return false;
    memcpy(id, name, n - el);
    id[n - el] = '\0';
    return cfm_id_valid(id);
}

static enum cfm_err mkdirs(const char *dir, struct cfm_why *why)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);

    if (n >= sizeof path)
        return cfm_why_set(why, CFM_EINVAL, "'%s' is too long", dir);
    memcpy(path, dir, n + 1);
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return cfm_why_set(why, CFM_EIO, "cannot create '%s': %s", path, strerror(errno));
        if (!(*p = c))
            return CFM_OK;
    }
}

/* Reads the directory into the index; running marks go to *marks. */
static enum cfm_err scan(struct cfm_agent_answers *a, char (**marks)[CFM_MAX_ID + 1],
                         size_t *nmarks, struct cfm_why *why)
{
    char id[CFM_MAX_ID + 1], path[PATH_MAX];
    DIR *d = opendir(a->dir);
    struct dirent *de;
    struct stat st;

    if (!d)
        return cfm_why_set(why, CFM_EIO, "cannot read '%s': %s", a->dir, strerror(errno));
    while ((de = readdir(d))) {
        int n = snprintf(path, sizeof path, "%s/%s", a->dir, de->d_name);
        if (n < 0 || (size_t)n >= sizeof path)
            continue;
        if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp-")) {
            unlink(path); /* a write a crash cut short */
        } else if (id_of(de->d_name, ANSWER_EXT, id) && stat(path, &st) == 0) {
            struct entry *e = append(a, id);
            if (!e)
                break;
            e->size = (size_t)st.st_size;
            e->on_disk = true;
            e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            a->disk += e->size;
        } else if (id_of(de->d_name, RUNNING_EXT, id)) {
            char(*grown)[CFM_MAX_ID + 1] = realloc(*marks, (*nmarks + 1) * sizeof **marks);
            if (!grown)
                break;
            *marks = grown;
            memcpy((*marks)[(*nmarks)++], id, sizeof id);
        }
    }
    closedir(d);
    if (de)
        return cfm_why_set(why, CFM_ENOMEM, "out of memory reading '%s'", a->dir);
    if (a->n > 1)
        qsort(a->e, a->n, sizeof *a->e, by_time);
    return CFM_OK;
}

enum cfm_err cfm_agent_answers_open(const char *dir, size_t keep,
                                    struct cfm_agent_answers **out, struct cfm_why *why)
{
    char (*marks)[CFM_MAX_ID + 1] = NULL;
    struct cfm_agent_answers *a;
    size_t nmarks = 0, len;
    enum cfm_err err;
    char *text;

    *out = NULL;
    if (strlen(dir) >= sizeof a->dir)
        return cfm_why_set(why, CFM_EINVAL, "'%s' is too long", dir);
    if ((err = mkdirs(dir, why)) != CFM_OK)
        return err;
    if (!(a = calloc(1, sizeof *a)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    memcpy(a->dir, dir, strlen(dir) + 1);
    a->keep = keep ? keep : 1;
    if ((err = scan(a, &marks, &nmarks, why)) != CFM_OK)
        goto out;
    evict(a);
    for (size_t i = 0; i < nmarks; i++) {
        char path[PATH_MAX];
        if (find(a, marks[i])) { /* answered before the stop: only the mark was left */
            if (file_of(a, marks[i], RUNNING_EXT, path, sizeof path))
                unlink(path);
            continue;
        }
        cfm_warn("answers", "request %s was running when the agent stopped; answering that its "
                            "outcome is unknown", marks[i]);
        text = cfm_agent_answer_text(marks[i], NULL, CFM_AGENT_INTERRUPTED, &len);
        err = text ? cfm_agent_answers_put(a, marks[i], text, len, true, why) : CFM_ENOMEM;
        free(text);
        if (err != CFM_OK) {
            cfm_why_prefix(why, err, "request %s", marks[i]);
            goto out;
        }
    }
    cfm_info("answers", "%zu answers kept in %s", a->n, a->dir);
    *out = a;
    a = NULL;
out:
    free(marks);
    cfm_agent_answers_free(a);
    return err;
}

void cfm_agent_answers_free(struct cfm_agent_answers *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->e[i].text);
    free(a->e);
    free(a);
}

enum cfm_err cfm_agent_answers_get(struct cfm_agent_answers *a, const char *id, char **text,
                                   size_t *len)
{
    struct cfm_why why = {{0}};
    struct entry *e = find(a, id);
    char path[PATH_MAX];
    unsigned mode;

    *text = NULL;
    *len = 0;
    if (!e)
        return CFM_ENOTFOUND;
    if (e->text) {
        if (!(*text = malloc(e->size + 1)))
            return CFM_ENOMEM;
        memcpy(*text, e->text, e->size);
        (*text)[e->size] = '\0';
        *len = e->size;
        return CFM_OK;
    }
    if (!file_of(a, id, ANSWER_EXT, path, sizeof path))
        return CFM_EINVAL;
    if (cfm_agent_files_read(path, CFM_AGENT_MAX_ANSWER, text, len, &mode, id, &why) != CFM_OK) {
        cfm_error("answers", "the answer to %s cannot be read back: %s", id, why.text);
        return CFM_EIO;
    }
    return CFM_OK;
}

enum cfm_err cfm_agent_answers_put(struct cfm_agent_answers *a, const char *id,
                                   const char *text, size_t len, bool durable,
                                   struct cfm_why *why)
{
    char path[PATH_MAX], mark[PATH_MAX];
    enum cfm_err err;
    struct entry *e;

    if (!file_of(a, id, ANSWER_EXT, path, sizeof path) ||
        !file_of(a, id, RUNNING_EXT, mark, sizeof mark))
        return cfm_why_set(why, CFM_EINVAL, "answer file name too long");
    if ((e = find(a, id)))
        remove_at(a, (size_t)(e - a->e), false); /* replaced below */
    err = durable ? cfm_agent_files_write(path, text, len, 0600, id, why) : CFM_OK;
    if (durable && err == CFM_OK && unlink(mark) != 0 && errno != ENOENT)
        cfm_warn("answers", "cannot remove %s: %s", mark, strerror(errno));
    if (!(e = append(a, id)))
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    e->size = len;
    e->on_disk = durable && err == CFM_OK;
    e->forgettable = !durable;
    if (e->on_disk)
        a->disk += len;
    if ((e->text = malloc(len + 1))) {
        memcpy(e->text, text, len);
        e->text[len] = '\0';
        a->mem += len;
    } else if (!e->on_disk) {
        a->n--;
        return cfm_why_set(why, CFM_ENOMEM, "out of memory");
    }
    evict(a);
    return err;
}

enum cfm_err cfm_agent_answers_mark_running(struct cfm_agent_answers *a, const char *id,
                                            struct cfm_why *why)
{
    char mark[PATH_MAX];
    int fd;

    if (!file_of(a, id, RUNNING_EXT, mark, sizeof mark))
        return cfm_why_set(why, CFM_EINVAL, "mark file name too long");
    /* Not synced: it must survive the agent dying, which the page cache
     * does; surviving the machine dying is what the answer's fsync is for. */
    fd = open(mark, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return cfm_why_set(why, CFM_EIO, "cannot create %s: %s", mark, strerror(errno));
    close(fd);
    return CFM_OK;
}

char *cfm_agent_answer_text(const char *id, const json_t *result, const char *error,
                            size_t *len)
{
    json_t *ans = json_pack("{s:s, s:b}", "id", id, "ok", result != NULL);
    char *text = NULL;

    if (!ans)
        return NULL;
    if (result ? json_object_update(ans, (json_t *)result) != 0
               : json_object_set_new(ans, "error", cfm_agent_text_json(error, strlen(error))) != 0)
        goto out;
    if ((text = json_dumps(ans, JSON_COMPACT)))
        *len = strlen(text);
out:
    json_decref(ans);
    return text;
}
