/*
 * files.c - the VM's disk: every path a request names is taken relative to
 * one root directory and must stay inside it.
 *
 * Confinement is decided on resolved paths, not on text: a path is split
 * into components ("." and empty ones dropped, ".." refused), and every
 * directory it goes through is resolved with realpath and checked to lie
 * below the root, before anything is created in it. So a symbolic link
 * inside the disk that points outside it cannot be used to write or read
 * there, and mkdir never runs outside the root. The last component of a
 * file to write is not followed: the atomic rename replaces a symbolic link
 * there instead of writing through it.
 *
 * This guards requests, not a hostile VM: commands run by exec act as the
 * agent's user and can change the disk between a check and a use.
 */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define TMP_NAME_KEPT 200 /* bytes of the file name kept in its temporary name */
#define READ_MIN 4096     /* first buffer of a read when fstat says less */

char *cfm_agent_files_shown(char *buf, size_t size, const char *p, size_t len)
{
    return cfm_quote(buf, size, p, len, CFM_AGENT_PATH_SHOWN);
}

bool cfm_agent_files_inside(const char *root, const char *p)
{
    size_t rl = strlen(root);

    if (strcmp(root, "/") == 0)
        return p[0] == '/';
    return strncmp(p, root, rl) == 0 && (p[rl] == '\0' || p[rl] == '/');
}

/* dir + "/" + name into out, without doubling the slash of "/". */
static bool join(char *out, size_t size, const char *dir, const char *name, size_t namelen)
{
    int n = snprintf(out, size, "%s/%.*s", strcmp(dir, "/") == 0 ? "" : dir, (int)namelen, name);

    return n >= 0 && (size_t)n < size;
}

/* Splits path into rel ("a/b/c"), refusing NULs and "..". */
static enum cfm_err normalize(const char *path, size_t len, const char *shown, char *rel,
                              size_t size, size_t *ncomp, struct cfm_why *why)
{
    size_t i = 0, o = 0;

    *ncomp = 0;
    if (memchr(path, '\0', len))
        return cfm_why_set(why, CFM_EINVAL, "path '%s' contains a NUL byte", shown);
    if (len >= size)
        return cfm_why_set(why, CFM_EINVAL, "path '%s' is longer than %zu bytes", shown,
                           size - 1);
    while (i < len) {
        size_t start = i, n;
        while (i < len && path[i] != '/')
            i++;
        n = i - start;
        i++; /* past the '/' */
        if (n == 0 || (n == 1 && path[start] == '.'))
            continue;
        if (n == 2 && path[start] == '.' && path[start + 1] == '.')
            return cfm_why_set(why, CFM_EINVAL,
                               "path '%s' escapes the VM's disk ('..' is not allowed)", shown);
        if (n > NAME_MAX)
            return cfm_why_set(why, CFM_EINVAL, "path '%s' has a name longer than %d bytes",
                               shown, NAME_MAX);
        if (o)
            rel[o++] = '/';
        memcpy(rel + o, path + start, n);
        o += n;
        (*ncomp)++;
    }
    rel[o] = '\0';
    return CFM_OK;
}

/* Resolves p (which exists) and checks it is inside root; out gets the
 * resolved path. */
static enum cfm_err confine(const char *root, const char *p, const char *shown, char *out,
                            struct cfm_why *why)
{
    if (!realpath(p, out)) {
        if (errno == ENOENT)
            return cfm_why_set(why, CFM_ENOTFOUND, "path '%s' does not exist", shown);
        return cfm_why_set(why, CFM_EIO, "path '%s' cannot be resolved: %s", shown,
                           strerror(errno));
    }
    if (!cfm_agent_files_inside(root, out))
        return cfm_why_set(why, CFM_EINVAL, "path '%s' escapes the VM's disk", shown);
    return CFM_OK;
}

/* Creates (if missing) and confines each directory above the last component
 * of rel; dir gets the resolved parent. */
static enum cfm_err make_parents(const char *root, char *rel, const char *shown, char *dir,
                                 struct cfm_why *why)
{
    char cur[PATH_MAX];
    struct stat st;
    char *slash;
    enum cfm_err err;

    snprintf(dir, PATH_MAX, "%s", root);
    for (char *c = rel; (slash = strchr(c, '/')); c = slash + 1) {
        if (!join(cur, sizeof cur, dir, c, (size_t)(slash - c)))
            return cfm_why_set(why, CFM_EINVAL, "path '%s' is too long", shown);
        if (lstat(cur, &st) != 0) {
            if (errno != ENOENT)
                return cfm_why_set(why, CFM_EIO, "path '%s': %s", shown, strerror(errno));
            /* cur's parent (dir) is resolved and inside: so is what we create. */
            if (mkdir(cur, 0755) != 0 && errno != EEXIST)
                return cfm_why_set(why, CFM_EIO, "path '%s': cannot create '%.*s': %s", shown,
                                   (int)(slash - rel), rel, strerror(errno));
        }
        if ((err = confine(root, cur, shown, dir, why)) != CFM_OK)
            return err;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return cfm_why_set(why, CFM_EINVAL, "path '%s': '%.*s' is not a directory", shown,
                               (int)(slash - rel), rel);
    }
    return CFM_OK;
}

enum cfm_err cfm_agent_files_resolve(const char *root, const char *path, size_t len,
                                     enum cfm_agent_files_use use, char *out, size_t outlen,
                                     struct cfm_why *why)
{
    char shown[4 * CFM_AGENT_PATH_SHOWN + 8];
    char rel[PATH_MAX], full[PATH_MAX], dir[PATH_MAX], real[PATH_MAX];
    const char *last;
    size_t ncomp;
    struct stat st;
    enum cfm_err err;

    cfm_agent_files_shown(shown, sizeof shown, path, len);
    if ((err = normalize(path, len, shown, rel, sizeof rel, &ncomp, why)) != CFM_OK)
        return err;
    if (ncomp == 0 && use != CFM_AGENT_FILES_DIR)
        return cfm_why_set(why, CFM_EINVAL, "path '%s' names no file", shown);
    if (use == CFM_AGENT_FILES_WRITE) {
        if ((err = make_parents(root, rel, shown, dir, why)) != CFM_OK)
            return err;
        last = strrchr(rel, '/');
        last = last ? last + 1 : rel;
        if (!join(real, sizeof real, dir, last, strlen(last)))
            return cfm_why_set(why, CFM_EINVAL, "path '%s' is too long", shown);
    } else {
        if (!join(full, sizeof full, root, rel, strlen(rel)))
            return cfm_why_set(why, CFM_EINVAL, "path '%s' is too long", shown);
        if ((err = confine(root, ncomp ? full : root, shown, real, why)) != CFM_OK)
            return err;
        if (use == CFM_AGENT_FILES_DIR && (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)))
            return cfm_why_set(why, CFM_EINVAL, "path '%s' is not a directory", shown);
    }
    if (strlen(real) >= outlen)
        return cfm_why_set(why, CFM_EINVAL, "path '%s' is too long", shown);
    memcpy(out, real, strlen(real) + 1);
    return CFM_OK;
}

static enum cfm_err write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return CFM_EIO;
        p += n;
        len -= (size_t)n;
    }
    return CFM_OK;
}

enum cfm_err cfm_agent_files_write(const char *path, const void *data, size_t len,
                                   unsigned mode, const char *shown, struct cfm_why *why)
{
    enum cfm_err err = CFM_EIO;
    char dir[PATH_MAX], tmp[PATH_MAX], uuid[CFM_UUID_LEN];
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    int fd = -1, dfd = -1, n;
    bool created = false;

    if (!slash || !*name)
        return cfm_why_set(why, CFM_EINVAL, "path '%s' names no file", shown);
    snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (cfm_uuid(uuid) != CFM_OK)
        return cfm_why_set(why, CFM_EIO, "path '%s': no randomness for a temporary name", shown);
    n = snprintf(tmp, sizeof tmp, "%s/.%.*s.tmp-%s", strcmp(dir, "/") == 0 ? "" : dir,
                 TMP_NAME_KEPT, name, uuid);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return cfm_why_set(why, CFM_EINVAL, "path '%s' is too long", shown);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        cfm_why_set(why, CFM_EIO, "path '%s': cannot create a temporary file: %s", shown,
                    strerror(errno));
        goto out;
    }
    created = true;
    if (write_all(fd, data, len) != CFM_OK || fchmod(fd, (mode_t)mode) != 0 || fsync(fd) != 0) {
        cfm_why_set(why, CFM_EIO, "path '%s': cannot write: %s", shown, strerror(errno));
        goto out;
    }
    n = close(fd);
    fd = -1;
    if (n != 0) {
        cfm_why_set(why, CFM_EIO, "path '%s': cannot write: %s", shown, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        cfm_why_set(why, CFM_EIO, "path '%s': cannot replace it: %s", shown, strerror(errno));
        goto out;
    }
    created = false;
    /* The rename is durable once the directory is on disk too. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        cfm_why_set(why, CFM_EIO, "path '%s': cannot sync its directory: %s", shown,
                    strerror(errno));
        goto out;
    }
    err = CFM_OK;
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    if (created)
        unlink(tmp);
    return err;
}

enum cfm_err cfm_agent_files_read(const char *path, size_t max, char **data, size_t *len,
                                  unsigned *mode, const char *shown, struct cfm_why *why)
{
    enum cfm_err err = CFM_EIO;
    struct stat st;
    char *buf = NULL;
    size_t got = 0, cap;
    int fd;

    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO must not stall the agent's loop. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return cfm_why_set(why, errno == ENOENT ? CFM_ENOTFOUND : CFM_EIO,
                           "path '%s' cannot be opened: %s", shown, strerror(errno));
    if (fstat(fd, &st) != 0) {
        cfm_why_set(why, CFM_EIO, "path '%s': %s", shown, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        err = cfm_why_set(why, CFM_EINVAL, "path '%s' is not a regular file", shown);
        goto out;
    }
    if ((uintmax_t)st.st_size > max) {
        err = cfm_why_set(why, CFM_ETOOBIG, "path '%s' is %jd bytes, over the %zu-byte limit",
                          shown, (intmax_t)st.st_size, max);
        goto out;
    }
    /* Sized from fstat, grown when the file is longer than it said (files
     * under /proc say 0): read one byte past max to see it is over. */
    cap = (size_t)st.st_size + 1 > READ_MIN ? (size_t)st.st_size + 1 : READ_MIN;
    if (!(buf = malloc(cap + 1))) {
        err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n;
        if (got == cap) { /* only while got <= max, so cap < max + 1 */
            char *grown;
            cap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            if (!(grown = realloc(buf, cap + 1))) {
                err = cfm_why_set(why, CFM_ENOMEM, "out of memory");
                goto out;
            }
            buf = grown;
        }
        n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cfm_why_set(why, CFM_EIO, "path '%s' cannot be read: %s", shown, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got > max) {
            err = cfm_why_set(why, CFM_ETOOBIG, "path '%s' is over the %zu-byte limit", shown,
                              max);
            goto out;
        }
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    *mode = (unsigned)(st.st_mode & 07777);
    buf = NULL;
    err = CFM_OK;
out:
    free(buf);
    close(fd);
    return err;
}
